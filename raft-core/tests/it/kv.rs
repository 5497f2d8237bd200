//! A tiny key/value state machine, for raft-core's tests only.

use std::collections::BTreeMap;

use cairn_state::ApplyCtx;
use cairn_state::SnapshotError;
use cairn_state::StateMachine;
use serde::Deserialize;
use serde::Serialize;

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Kv {
    pub map: BTreeMap<String, String>,
    /// Number of commands applied (to observe at-most-once).
    pub applied: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum KvCmd {
    Set { key: String, value: String },
}

const VERSION: u32 = 1;

impl StateMachine for Kv {
    type Command = KvCmd;
    /// The previous value, or why the command was refused.
    type Response = Result<Option<String>, String>;

    fn apply(&mut self, command: &KvCmd, _ctx: &ApplyCtx) -> Self::Response {
        self.applied += 1;
        match command {
            KvCmd::Set { key, value } => Ok(self.map.insert(key.clone(), value.clone())),
        }
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
