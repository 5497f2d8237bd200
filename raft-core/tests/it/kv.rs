//! A tiny key/value state machine, for raft-core's tests only.

use std::collections::BTreeMap;

use cairn_state::ApplyCtx;
use cairn_state::Refusal;
use cairn_state::SnapshotError;
use cairn_state::StateMachine;
use serde::Deserialize;
use serde::Serialize;

/// Keys longer than this are refused whatever the state (a "shape" check).
pub const MAX_KEY_LEN: usize = 64;

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Kv {
    pub map: BTreeMap<String, String>,
    /// Number of commands applied (to observe at-most-once).
    pub applied: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum KvCmd {
    Set {
        key: String,
        value: String,
    },
    /// Set `key` to `value` only if it holds `expected` now: refused by the
    /// state otherwise (a refusal another state could accept).
    Cas {
        key: String,
        expected: Option<String>,
        value: String,
    },
}

const VERSION: u32 = 1;

impl Kv {
    /// The checks `apply` makes before it mutates, shared with `check`.
    fn refusal(&self, command: &KvCmd) -> Result<(), Refusal<Result<Option<String>, String>>> {
        let key = match command {
            KvCmd::Set { key, .. } | KvCmd::Cas { key, .. } => key,
        };
        if key.len() > MAX_KEY_LEN {
            return Err(Refusal::InEveryState(Err(format!(
                "key of {} bytes, the limit is {MAX_KEY_LEN}",
                key.len()
            ))));
        }
        if let KvCmd::Cas { key, expected, .. } = command {
            let current = self.map.get(key);
            if current != expected.as_ref() {
                return Err(Refusal::InThisState(Err(format!(
                    "{key} is {current:?}, not {expected:?}"
                ))));
            }
        }
        Ok(())
    }
}

impl StateMachine for Kv {
    type Command = KvCmd;
    /// The previous value, or why the command was refused.
    type Response = Result<Option<String>, String>;

    fn apply(&mut self, command: &KvCmd, _ctx: &ApplyCtx) -> Self::Response {
        self.applied += 1;
        if let Err(refusal) = self.refusal(command) {
            return refusal.into_response();
        }
        match command {
            KvCmd::Set { key, value } | KvCmd::Cas { key, value, .. } => {
                Ok(self.map.insert(key.clone(), value.clone()))
            }
        }
    }

    fn check(&self, command: &KvCmd, _ctx: &ApplyCtx) -> Result<(), Refusal<Self::Response>> {
        self.refusal(command)
    }

    fn snapshot(&self) -> Vec<u8> {
        postcard::to_stdvec(&(VERSION, self)).unwrap_or_default()
    }

    fn restore(bytes: &[u8]) -> Result<Self, SnapshotError> {
        let (version, kv): (u32, Kv) =
            postcard::from_bytes(bytes).map_err(|e| SnapshotError::Corrupt { reason: e.to_string() })?;
        if version != VERSION {
            return Err(SnapshotError::UnsupportedVersion {
                found: version,
                supported: VERSION,
            });
        }
        Ok(kv)
    }
}

pub fn set(key: impl Into<String>, value: impl Into<String>) -> KvCmd {
    KvCmd::Set {
        key: key.into(),
        value: value.into(),
    }
}

pub fn cas(key: impl Into<String>, expected: Option<&str>, value: impl Into<String>) -> KvCmd {
    KvCmd::Cas {
        key: key.into(),
        expected: expected.map(str::to_owned),
        value: value.into(),
    }
}
