//! The daemon's configuration file (`cairn node run --config FILE`).

use std::path::Path;
use std::path::PathBuf;

use cairn_raft::RaftNodeConfig;
use cairn_raft::RaftTimings;
use cairn_raft::SnapshotSettings;
use serde::Deserialize;
use serde::Serialize;

use crate::error::Error;

/// Everything `cairn node run` needs. Every field has a laptop-friendly
/// default except the node id.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeConfig {
    /// Unique, stable node id (1 or more).
    pub id: u64,
    /// Transport listen address.
    #[serde(default = "default_raft_addr")]
    pub raft_addr: String,
    /// Admin API listen address.
    #[serde(default = "default_api_addr")]
    pub api_addr: String,
    /// Data directory (RocksDB).
    #[serde(default = "default_data_dir")]
    pub data_dir: PathBuf,
    /// Raft timings (see docs/ARCHITECTURE.md for the defaults' reasons).
    #[serde(default)]
    pub timings: RaftTimings,
    /// Snapshot policy.
    #[serde(default)]
    pub snapshots: SnapshotSettings,
    /// Dial peer `id` at this address instead of its advertised one (chaos
    /// tests put a proxy on each link this way). Empty in production.
    #[serde(default)]
    pub peer_dial_overrides: std::collections::BTreeMap<u64, String>,
}

fn default_raft_addr() -> String {
    "127.0.0.1:7001".into()
}
fn default_api_addr() -> String {
    "127.0.0.1:8001".into()
}
fn default_data_dir() -> PathBuf {
    "cairn-data".into()
}

impl NodeConfig {
    /// Read a TOML file.
    pub fn from_file(path: &Path) -> Result<Self, Error> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::Config {
            reason: format!("cannot read {}: {e}", path.display()),
        })?;
        toml::from_str(&text).map_err(|e| Error::Config {
            reason: format!("{}: {e}", path.display()),
        })
    }

    /// The Raft part.
    pub fn raft(&self) -> RaftNodeConfig {
        let mut c = RaftNodeConfig::new(self.id, self.raft_addr.clone(), self.data_dir.clone());
        c.api_addr = self.api_addr.clone();
        c.timings = self.timings.clone();
        c.snapshots = self.snapshots.clone();
        c.peer_dial_overrides = self.peer_dial_overrides.clone();
        c
    }
}
