//! The node registry: which Pis exist, what they can do, and how loaded they are.

use std::collections::BTreeSet;
use std::fmt;

use serde::Deserialize;
use serde::Serialize;

use crate::ids::NodeId;
use crate::ids::TaskId;
use crate::task::Resources;

/// Liveness as the coordinator last decided it.
///
/// Heartbeats themselves are leader-local and not replicated (one log entry
/// per heartbeat per node would dwarf the real writes); only the
/// coordinator's verdict is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum Liveness {
    /// Heartbeating.
    Up,
    /// Missed heartbeats; keeps its tasks for now.
    Suspect,
    /// Declared dead: it holds no task and gets none.
    Down,
}

impl fmt::Display for Liveness {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Liveness::Up => "up",
            Liveness::Suspect => "suspect",
            Liveness::Down => "down",
        })
    }
}

/// What a node says about itself when it registers.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct NodeSpec {
    /// Its Raft node id.
    pub id: NodeId,
    /// Where to reach it, e.g. `10.0.0.11:7400`.
    pub addresses: Vec<String>,
    /// What it can do, e.g. `camera`, `drive`, `lidar`, `gpu`.
    pub capabilities: BTreeSet<String>,
    /// What tasks may use on it at once.
    pub budget: Resources,
}

/// A registered node.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Node {
    /// Its Raft node id.
    pub id: NodeId,
    /// Where to reach it.
    pub addresses: Vec<String>,
    /// What it can do.
    pub capabilities: BTreeSet<String>,
    /// What tasks may use on it at once.
    pub budget: Resources,
    /// As the coordinator last decided.
    pub liveness: Liveness,
    /// Sum of the resources of the tasks leased to it. Derived: kept up to
    /// date by `apply`, recomputed and checked on restore.
    pub load: Resources,
    /// Tasks leased to it. Derived index, not serialised: rebuilt from the
    /// tasks on restore.
    #[serde(skip)]
    pub(crate) tasks: BTreeSet<TaskId>,
    /// Leader timestamp of its latest registration.
    pub registered_at_ms: u64,
    /// Leader timestamp of its latest liveness change.
    pub liveness_changed_at_ms: u64,
}

impl Node {
    /// Tasks leased to this node, in id order.
    pub fn assigned_tasks(&self) -> impl Iterator<Item = TaskId> + '_ {
        self.tasks.iter().copied()
    }

    /// Resources not yet used by its tasks.
    pub fn free(&self) -> Resources {
        // `load <= budget` is an invariant; saturate rather than panic if a
        // bug ever broke it, the invariant check reports it.
        Resources {
            cpu_millicores: self.budget.cpu_millicores.saturating_sub(self.load.cpu_millicores),
            memory_mib: self.budget.memory_mib.saturating_sub(self.load.memory_mib),
        }
    }
}
