//! The seam between the bridge and a cairn node.

use std::future::Future;

use cairn_state::Param;
use cairn_state::ParamChange;
use cairn_state::ParamValue;
use futures::stream::BoxStream;

use crate::state::RoverState;

/// Why a replicated write (a parameter set, a task submitted or
/// cancelled) was not made.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum SetParamError {
    /// The state machine refused the write (for a parameter: undeclared,
    /// wrong type, out of bounds; for a task: an invalid spec, no such
    /// task); nothing changed.
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

/// A task submitted from ROS 2 (`/cairn/submit_task`): the part of a cairn
/// task spec a ROS 2 operator tool can give; the rest takes cairn's
/// defaults.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TaskRequest {
    /// The task kind, e.g. `navigate`.
    pub kind: String,
    /// Higher runs first.
    pub priority: u8,
    /// Capabilities the assignee must have.
    pub required_capabilities: Vec<String>,
    /// Attempts before the task fails; `None`: cairn's default.
    pub max_attempts: Option<u32>,
    /// The plan goal the task serves, if any.
    pub goal: Option<u64>,
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

    /// Create a task through the replicated write path (forwarded to the
    /// leader); `Ok` with its id once committed and applied. The default
    /// refuses: a node that cannot write tasks.
    fn submit_task(&self, request: TaskRequest) -> impl Future<Output = Result<u64, SetParamError>> + Send {
        let _ = request;
        async {
            Err(SetParamError::Unavailable {
                reason: "this node does not take tasks from ros 2".to_owned(),
            })
        }
    }

    /// Cancel a task through the replicated write path; `Ok` once the
    /// cancel is committed and applied (a running task ends when its
    /// holder acknowledges it). The default refuses.
    fn cancel_task(&self, task_id: u64) -> impl Future<Output = Result<(), SetParamError>> + Send {
        let _ = task_id;
        async {
            Err(SetParamError::Unavailable {
                reason: "this node does not take tasks from ros 2".to_owned(),
            })
        }
    }

    /// The messages of the telemetry topics `topics` this node receives
    /// from now on (from any member), each as its topic and its JSON text;
    /// best effort, as cairn telemetry is. The default: none.
    fn telemetry(&self, topics: Vec<String>) -> BoxStream<'static, (String, String)> {
        let _ = topics;
        Box::pin(futures::stream::empty())
    }

    /// Publish `json` (a JSON document) on cairn telemetry topic `topic`;
    /// `Err` with the reason if the hub refused it (not JSON, rate limit,
    /// too large). The default refuses.
    fn publish_telemetry(&self, topic: &str, json: &str) -> Result<(), String> {
        let _ = (topic, json);
        Err("this node has no telemetry hub".to_owned())
    }
}
