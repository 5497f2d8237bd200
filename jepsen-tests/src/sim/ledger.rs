//! The simulation's state machine: a ledger of which value was applied at
//! which log index, in which term.
//!
//! Deliberately trivial, so every check is exact: an acknowledged write
//! `(index, value)` must be in every replica's ledger at that index, and two
//! replicas' ledgers must never disagree at an index. Snapshots carry the
//! whole ledger, so a node restored from a snapshot is checked as fully as
//! one that replayed its log.

use std::collections::BTreeMap;

use cairn_state::ApplyCtx;
use cairn_state::SnapshotError;
use cairn_state::StateMachine;
use serde::Deserialize;
use serde::Serialize;

const VERSION: u32 = 1;

/// Log index → (value, term) of every applied write.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ledger {
    /// Applied writes by log index.
    pub entries: BTreeMap<u64, (u64, u64)>,
}

/// Append this (unique) value.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Append(pub u64);

/// Where a write was applied.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Applied {
    /// Log index.
    pub index: u64,
    /// Term of the entry.
    pub term: u64,
}

impl StateMachine for Ledger {
    type Command = Append;
    type Response = Applied;

    fn apply(&mut self, command: &Append, ctx: &ApplyCtx) -> Applied {
        self.entries.insert(ctx.index, (command.0, ctx.term));
        Applied {
            index: ctx.index,
            term: ctx.term,
        }
    }

    fn snapshot(&self) -> Vec<u8> {
        // A map of integers always encodes; an empty snapshot would be a bug.
        postcard::to_stdvec(&(VERSION, self)).expect("a ledger of integers encodes")
    }

    fn restore(bytes: &[u8]) -> Result<Self, SnapshotError> {
        let (version, ledger): (u32, Ledger) =
            postcard::from_bytes(bytes).map_err(|e| SnapshotError::Corrupt { reason: e.to_string() })?;
        if version != VERSION {
            return Err(SnapshotError::UnsupportedVersion {
                found: version,
                supported: VERSION,
            });
        }
        Ok(ledger)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snapshot_round_trips() {
        let mut l = Ledger::default();
        let ctx = ApplyCtx {
            index: 7,
            term: 3,
            timestamp_ms: 0,
        };
        assert_eq!(l.apply(&Append(42), &ctx), Applied { index: 7, term: 3 });
        let back = Ledger::restore(&l.snapshot()).expect("restore");
        assert_eq!(back, l);
        assert!(Ledger::restore(b"junk").is_err());
    }
}
