//! Tasks: work the coordinator hands to one node at a time.
//!
//! Lifecycle, after ROS 2 actions:
//!
//! ```text
//! Pending ──assign──▶ Assigned ──start──▶ Running ──▶ Succeeded
//!    ▲                   │  │                │  ├──▶ Failed (no attempts left)
//!    │                   │  └──fail──────────┤  └──▶ Cancelled (cancel acknowledged)
//!    └── fail with attempts left, unassign, node marked down ──┘
//! ```
//!
//! A cancel request does not end a task that is assigned: it sets
//! [`Task::cancel_requested`], and the assignee acknowledges it by finishing
//! with [`TaskOutcome::Cancelled`] (it may still succeed or fail if the work
//! ended first). A pending task is cancelled at once, since nobody runs it.

use std::collections::BTreeSet;
use std::fmt;

use serde::Deserialize;
use serde::Serialize;

use crate::ids::Epoch;
use crate::ids::GoalId;
use crate::ids::NodeId;
use crate::ids::TaskId;
use crate::plan::Pose;

/// Where a task is in its lifecycle.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum TaskState {
    /// Waiting for an assignee (possibly backing off after a failure).
    Pending,
    /// Leased to a node, not yet started.
    Assigned,
    /// The assignee is executing it.
    Running,
    /// Finished successfully.
    Succeeded,
    /// Failed with no attempts left (or failed after a cancel request).
    Failed,
    /// Cancelled before it finished.
    Cancelled,
}

impl TaskState {
    /// Every state, for filters and tests.
    pub const ALL: [TaskState; 6] = [
        TaskState::Pending,
        TaskState::Assigned,
        TaskState::Running,
        TaskState::Succeeded,
        TaskState::Failed,
        TaskState::Cancelled,
    ];

    /// No transition leaves this state.
    pub fn is_terminal(self) -> bool {
        matches!(self, TaskState::Succeeded | TaskState::Failed | TaskState::Cancelled)
    }

    /// A task in this state has exactly one assignee holding a lease.
    pub fn holds_lease(self) -> bool {
        matches!(self, TaskState::Assigned | TaskState::Running)
    }
}

impl fmt::Display for TaskState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TaskState::Pending => "pending",
            TaskState::Assigned => "assigned",
            TaskState::Running => "running",
            TaskState::Succeeded => "succeeded",
            TaskState::Failed => "failed",
            TaskState::Cancelled => "cancelled",
        })
    }
}

/// What a command tried to do to a task, named in
/// [`crate::CommandError::IllegalTransition`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum TaskAction {
    /// `AssignTask`.
    Assign,
    /// `ReassignTask`.
    Reassign,
    /// `UnassignTask`.
    Unassign,
    /// `StartTask`.
    Start,
    /// `ReportProgress`.
    Progress,
    /// `FinishTask` with `Succeeded`.
    Succeed,
    /// `FinishTask` with `Failed`.
    Fail,
    /// `FinishTask` with `Cancelled`.
    AcknowledgeCancel,
    /// `CancelTask`.
    Cancel,
    /// `ForgetTask`.
    Forget,
}

impl fmt::Display for TaskAction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TaskAction::Assign => "assign",
            TaskAction::Reassign => "reassign",
            TaskAction::Unassign => "unassign",
            TaskAction::Start => "start",
            TaskAction::Progress => "report progress on",
            TaskAction::Succeed => "succeed",
            TaskAction::Fail => "fail",
            TaskAction::AcknowledgeCancel => "acknowledge cancel of",
            TaskAction::Cancel => "cancel",
            TaskAction::Forget => "forget",
        })
    }
}

/// CPU and memory, as a task requires them or a node offers them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Resources {
    /// Thousandths of a CPU core.
    pub cpu_millicores: u64,
    /// Mebibytes of memory.
    pub memory_mib: u64,
}

impl Resources {
    /// Component-wise sum, `None` on overflow.
    pub fn checked_add(self, other: Resources) -> Option<Resources> {
        Some(Resources {
            cpu_millicores: self.cpu_millicores.checked_add(other.cpu_millicores)?,
            memory_mib: self.memory_mib.checked_add(other.memory_mib)?,
        })
    }

    /// Component-wise difference, `None` if `other` exceeds `self` anywhere.
    pub fn checked_sub(self, other: Resources) -> Option<Resources> {
        Some(Resources {
            cpu_millicores: self.cpu_millicores.checked_sub(other.cpu_millicores)?,
            memory_mib: self.memory_mib.checked_sub(other.memory_mib)?,
        })
    }

    /// Every component of `self` is at most the same component of `budget`.
    pub fn fits_within(self, budget: Resources) -> bool {
        self.cpu_millicores <= budget.cpu_millicores && self.memory_mib <= budget.memory_mib
    }
}

/// Which resource a budget check failed on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Resource {
    /// `cpu_millicores`.
    Cpu,
    /// `memory_mib`.
    Memory,
}

impl fmt::Display for Resource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Resource::Cpu => "cpu (millicores)",
            Resource::Memory => "memory (MiB)",
        })
    }
}

/// How often and how soon a failed task is tried again.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RetryPolicy {
    /// Attempts in all, the first included; at least 1.
    pub max_attempts: u32,
    /// Delay before the second attempt; doubles for each later one.
    pub backoff_ms_base: u64,
    /// Cap on the doubled delay (jitter comes on top, capped the same).
    pub backoff_ms_max: u64,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 3,
            backoff_ms_base: 1_000,
            backoff_ms_max: 60_000,
        }
    }
}

impl RetryPolicy {
    /// Delay after the `failures`-th failure (1-based): `base · 2^(failures-1)`,
    /// capped at `backoff_ms_max`. Integer arithmetic only, so every replica
    /// computes the same number.
    pub fn backoff_ms(&self, failures: u32) -> u64 {
        let doublings = failures.saturating_sub(1);
        let factor = 1u64.checked_shl(doublings).unwrap_or(u64::MAX);
        self.backoff_ms_base.saturating_mul(factor).min(self.backoff_ms_max)
    }
}

/// What a client asks for when it creates a task.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TaskSpec {
    /// What to do, e.g. `navigate`, `capture-panorama`; agents dispatch on it.
    pub kind: String,
    /// Capabilities the assignee must have, e.g. `camera`, `drive`, `gpu`.
    pub required_capabilities: BTreeSet<String>,
    /// What the task uses on its assignee while it holds the lease.
    pub resources: Resources,
    /// Higher runs first.
    pub priority: u8,
    /// Time (ms since the Unix epoch) by which it should be done; advisory,
    /// for the scheduler and the operator.
    pub deadline_ms: Option<u64>,
    /// Retries after failure.
    pub retry: RetryPolicy,
    /// The plan goal this task serves, if any. Informational: the plan may
    /// since have been replaced.
    pub goal: Option<GoalId>,
}

impl TaskSpec {
    /// A task of `kind` with no required capability or resource, priority
    /// 0, no deadline, no plan goal and the default [`RetryPolicy`]; set the
    /// public fields for more.
    pub fn new(kind: impl Into<String>) -> Self {
        Self {
            kind: kind.into(),
            required_capabilities: BTreeSet::new(),
            resources: Resources::default(),
            priority: 0,
            deadline_ms: None,
            retry: RetryPolicy::default(),
            goal: None,
        }
    }
}

/// The current holder of a task and the epoch that fences it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Lease {
    /// The assignee.
    pub node_id: NodeId,
    /// The fencing token the assignee must present.
    pub epoch: Epoch,
}

/// A small typed progress payload, kept only as the latest one.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum Feedback {
    /// Distance left to the goal.
    DistanceRemaining {
        /// Metres.
        distance_m: f64,
    },
    /// Time the assignee expects to need.
    Eta {
        /// Milliseconds from the report.
        remaining_ms: u64,
    },
    /// Where the rover believes it is.
    Pose(Pose),
    /// Samples taken so far.
    Samples {
        /// Taken.
        collected: u32,
        /// Planned.
        target: u32,
    },
    /// A short human-readable note.
    Note(String),
}

/// How the assignee ends a task.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum TaskOutcome {
    /// The work is done (allowed even with a cancel request pending: it
    /// finished first).
    Succeeded,
    /// The attempt failed; retried if the policy allows.
    Failed {
        /// Why, for the operator.
        reason: String,
        /// Added to the backoff so retries of many tasks spread out. Chosen by
        /// the coordinator (the state machine draws no random numbers);
        /// capped at the policy's `backoff_ms_max`.
        retry_jitter_ms: u64,
    },
    /// Acknowledges a cancel request.
    Cancelled,
}

/// A task as the replicated state holds it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Task {
    /// Its id.
    pub id: TaskId,
    /// What was asked for.
    pub spec: TaskSpec,
    /// Lifecycle state.
    pub state: TaskState,
    /// Holder and fencing epoch; `Some` exactly when `state` holds a lease.
    pub lease: Option<Lease>,
    /// A cancel was requested and the assignee has not acknowledged it yet.
    pub cancel_requested: bool,
    /// Last reported progress of the current attempt, 0..=100.
    pub progress_percent: u8,
    /// Last reported feedback of the current attempt.
    pub feedback: Option<Feedback>,
    /// Failed attempts so far. A node marked down does not count as a
    /// failure of the task.
    pub attempts: u32,
    /// Not to be assigned before this time (ms since the Unix epoch); set by
    /// the retry backoff.
    pub not_before_ms: u64,
    /// Reason given with the last failure.
    pub last_error: Option<String>,
    /// Leader timestamp of the `CreateTask` entry.
    pub created_at_ms: u64,
    /// Leader timestamp of the last entry that changed this task.
    pub updated_at_ms: u64,
}

/// Which tasks [`crate::Mission::tasks`] returns; `None` fields match all.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskFilter {
    /// Only tasks in this state.
    pub state: Option<TaskState>,
    /// Only tasks leased to this node.
    pub node_id: Option<NodeId>,
}

impl TaskFilter {
    /// Whether `task` passes.
    pub fn matches(&self, task: &Task) -> bool {
        self.state.is_none_or(|s| s == task.state)
            && self.node_id.is_none_or(|n| task.lease.is_some_and(|l| l.node_id == n))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_then_caps_and_never_overflows() {
        let policy = RetryPolicy {
            max_attempts: u32::MAX,
            backoff_ms_base: 1_000,
            backoff_ms_max: 60_000,
        };
        let got: Vec<u64> = [1, 2, 3, 6, 7, 64, 65, u32::MAX]
            .iter()
            .map(|&f| policy.backoff_ms(f))
            .collect();
        assert_eq!(
            got,
            [1_000, 2_000, 4_000, 32_000, 60_000, 60_000, 60_000, 60_000],
            "backoffs {got:?}"
        );
        let huge = RetryPolicy {
            max_attempts: 1,
            backoff_ms_base: u64::MAX,
            backoff_ms_max: u64::MAX,
        };
        assert_eq!(huge.backoff_ms(3), u64::MAX);
    }

    #[test]
    fn only_assigned_and_running_hold_a_lease() {
        let leased: Vec<TaskState> = TaskState::ALL.into_iter().filter(|s| s.holds_lease()).collect();
        assert_eq!(leased, [TaskState::Assigned, TaskState::Running]);
        assert!(TaskState::ALL.iter().all(|s| !(s.holds_lease() && s.is_terminal())));
    }
}
