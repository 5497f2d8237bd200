//! The seam between the bridge and a cairn node.

use std::future::Future;

use cairn_state::Param;
use cairn_state::ParamChange;
use cairn_state::ParamValue;
use futures::stream::BoxStream;

use crate::state::RoverState;

/// Why a parameter was not set.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum SetParamError {
    /// The state machine refused the value (undeclared, wrong type, out of
    /// bounds); nothing changed.
    #[error("{reason}")]
    Refused {
        /// The state machine's reason, for the operator.
        reason: String,
    },
    /// The write could not be replicated (no leader, no quorum, shutting
    /// down) or its outcome is unknown.
    #[error("not replicated: {reason}")]
    Unavailable {
        /// What the Raft layer said.
        reason: String,
    },
}

/// What the ROS 2 bridge needs from a cairn node. Small on purpose: the
/// facade implements it with its Raft node, tests with a map, and the
/// bridge never sees Raft, RocksDB or HTTP.
pub trait CairnNode: Send + Sync + 'static {
    /// Every declared parameter as this node has applied it (a local read:
    /// it may lag the leader by the replication delay, and answers without
    /// a quorum, as a ROS 2 `get_parameters` is expected to).
    fn params(&self) -> Vec<Param>;

    /// Set a declared parameter through the replicated write path; `Ok`
    /// with the global parameter version once committed and applied.
    fn set_param(&self, name: String, value: ParamValue) -> impl Future<Output = Result<u64, SetParamError>> + Send;

    /// Accepted declarations and changes applied from now on, from any
    /// source, in the order of the log. The stream ends only when the node
    /// stops.
    fn param_changes(&self) -> BoxStream<'static, ParamChange>;

    /// The rover state the state topics publish, as this node has applied
    /// it (a local read). `None`: publish nothing (the default, for nodes
    /// that only serve parameters).
    fn state(&self) -> Option<RoverState> {
        None
    }
}
