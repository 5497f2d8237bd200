//! Why a command was refused.
//!
//! Every variant is a deterministic rejection: the same command against the
//! same state is refused the same way on every replica, the state is left
//! unchanged, and the error travels back to the client as the command's
//! response (so it is serde-serialisable). None is fatal to the node: a
//! broken internal invariant is an `assert!`, and an unreadable snapshot is a
//! [`crate::SnapshotError`]. The facade maps these to HTTP 4xx / CLI errors in
//! one place.

use serde::Deserialize;
use serde::Serialize;

use crate::health::SensorHealth;
use crate::ids::Epoch;
use crate::ids::GoalId;
use crate::ids::NodeId;
use crate::ids::TaskId;
use crate::param::ParamKind;
use crate::param::ParamType;
use crate::param::ParamValue;
use crate::plan::GoalStatus;
use crate::plan::PlanStatus;
use crate::task::Resource;
use crate::task::TaskAction;
use crate::task::TaskState;

/// Which bounded collection a command would have overflowed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Limit {
    /// [`crate::limits::MAX_TASKS`].
    Tasks,
    /// [`crate::limits::MAX_NODES`].
    Nodes,
    /// [`crate::limits::MAX_PARAMS`].
    Params,
    /// [`crate::limits::MAX_GOALS`].
    Goals,
    /// [`crate::limits::MAX_AREA_VERTICES`].
    AreaVertices,
    /// [`crate::limits::MAX_SENSORS`].
    Sensors,
    /// [`crate::limits::MAX_POLICIES`].
    Policies,
    /// [`crate::limits::MAX_CAPABILITIES`].
    Capabilities,
    /// [`crate::limits::MAX_ADDRESSES`].
    Addresses,
    /// [`crate::limits::MAX_ENUM_CHOICES`].
    EnumChoices,
}

impl std::fmt::Display for Limit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Limit::Tasks => "tasks",
            Limit::Nodes => "nodes",
            Limit::Params => "parameters",
            Limit::Goals => "plan goals",
            Limit::AreaVertices => "search-area vertices",
            Limit::Sensors => "sensors",
            Limit::Policies => "degradation policies",
            Limit::Capabilities => "capabilities",
            Limit::Addresses => "addresses",
            Limit::EnumChoices => "enum choices",
        })
    }
}

/// A command refused by the state machine; the state is unchanged.
#[derive(Clone, Debug, PartialEq, thiserror::Error, Serialize, Deserialize)]
pub enum CommandError {
    // --- lookups ---
    /// No task has this id (never created, or forgotten).
    #[error("task {task_id} not found")]
    TaskNotFound {
        /// The id asked for.
        task_id: TaskId,
    },
    /// No node has registered with this id.
    #[error("node {node_id} not found")]
    NodeNotFound {
        /// The id asked for.
        node_id: NodeId,
    },
    /// The current plan has no goal with this id.
    #[error("goal {goal_id} not found in plan version {plan_version}")]
    GoalNotFound {
        /// The id asked for.
        goal_id: GoalId,
        /// The plan version searched.
        plan_version: u64,
    },
    /// No parameter has this name.
    #[error("parameter {name:?} is not declared")]
    ParamNotDeclared {
        /// The name asked for.
        name: String,
    },
    /// No policy for this sensor and health.
    #[error("no degradation policy for sensor {sensor:?} at health {health}")]
    PolicyNotFound {
        /// Sensor name.
        sensor: String,
        /// Health.
        health: SensorHealth,
    },

    // --- task lifecycle and fencing ---
    /// The task's state does not allow this action.
    #[error("cannot {action} task {task_id}: it is {state}")]
    IllegalTransition {
        /// The task.
        task_id: TaskId,
        /// What was tried.
        action: TaskAction,
        /// The state it is in.
        state: TaskState,
    },
    /// The task is leased to a node already; unassign or reassign it instead.
    #[error("task {task_id} is already assigned to node {node_id}")]
    AlreadyAssigned {
        /// The task.
        task_id: TaskId,
        /// Its current assignee.
        node_id: NodeId,
    },
    /// The presented epoch is not the task's current lease: the sender was
    /// deposed (or never held it) and must stop acting on the task.
    #[error("stale epoch {presented} for task {task_id} (current lease epoch: {current:?})")]
    StaleEpoch {
        /// The task.
        task_id: TaskId,
        /// Epoch in the command.
        presented: Epoch,
        /// Epoch of the current lease, if the task has one.
        current: Option<Epoch>,
    },
    /// The assignee acknowledged a cancel nobody requested.
    #[error("task {task_id} has no cancel request to acknowledge")]
    CancelNotRequested {
        /// The task.
        task_id: TaskId,
    },
    /// The task failed recently and its retry backoff has not elapsed.
    #[error("task {task_id} is backing off until {not_before_ms} ms (now {now_ms} ms)")]
    BackingOff {
        /// The task.
        task_id: TaskId,
        /// When it may be assigned.
        not_before_ms: u64,
        /// The entry's timestamp.
        now_ms: u64,
    },
    /// Progress above 100 percent.
    #[error("progress {percent}% for task {task_id} is above 100")]
    ProgressOutOfRange {
        /// The task.
        task_id: TaskId,
        /// Reported value.
        percent: u8,
    },

    // --- placement ---
    /// The node is marked down and may hold no task.
    #[error("node {node_id} is down")]
    NodeDown {
        /// The node.
        node_id: NodeId,
    },
    /// The node lacks a capability the task requires.
    #[error("node {node_id} lacks capability {capability:?} required by task {task_id}")]
    MissingCapability {
        /// The node.
        node_id: NodeId,
        /// The task.
        task_id: TaskId,
        /// The first missing capability.
        capability: String,
    },
    /// The task does not fit in what the node has left.
    #[error("task {task_id} needs {required} {resource} but node {node_id} has {available} free")]
    OverBudget {
        /// The node.
        node_id: NodeId,
        /// The task.
        task_id: TaskId,
        /// The resource that does not fit.
        resource: Resource,
        /// What the task needs.
        required: u64,
        /// What the node has left.
        available: u64,
    },
    /// A node still holding tasks cannot deregister: drain it and let them
    /// finish, or let it go down (its tasks are released then).
    #[error("node {node_id} still holds {tasks} task(s): drain it and wait until they finish or move, or stop it (its tasks move once it is down)")]
    NodeBusy {
        /// The node.
        node_id: NodeId,
        /// How many tasks it holds.
        tasks: usize,
    },
    /// A re-registration shrinks the budget below what its tasks use.
    #[error("node {node_id}'s new {resource} budget {budget} is below its load {load}")]
    BudgetBelowLoad {
        /// The node.
        node_id: NodeId,
        /// Which resource.
        resource: Resource,
        /// The new budget.
        budget: u64,
        /// The current load.
        load: u64,
    },
    /// A re-registration drops a capability one of its tasks needs.
    #[error("node {node_id} cannot drop capability {capability:?}: task {task_id} needs it")]
    CapabilityInUse {
        /// The node.
        node_id: NodeId,
        /// The capability.
        capability: String,
        /// A task that needs it.
        task_id: TaskId,
    },

    // --- plan ---
    /// Optimistic concurrency: the plan changed since the client read it.
    #[error("plan is at version {actual}, the command expected {expected}")]
    PlanVersionMismatch {
        /// Version in the command.
        expected: u64,
        /// Current version.
        actual: u64,
    },
    /// The plan's status does not allow this command.
    #[error("plan is {status}")]
    PlanNotActive {
        /// Current status.
        status: PlanStatus,
    },
    /// The goal is already reached or skipped.
    #[error("goal {goal_id} is {status} already")]
    GoalNotPending {
        /// The goal.
        goal_id: GoalId,
        /// Its status.
        status: GoalStatus,
    },

    // --- parameters ---
    /// A parameter with this name exists.
    #[error("parameter {name:?} is already declared")]
    ParamAlreadyDeclared {
        /// The name.
        name: String,
    },
    /// The value has another type than the parameter.
    #[error("parameter {name:?} is {expected}, got a {found} value")]
    ParamTypeMismatch {
        /// The parameter.
        name: String,
        /// Its type.
        expected: ParamType,
        /// The value's type.
        found: ParamType,
    },
    /// The value is outside the parameter's bounds.
    #[error("parameter {name:?} is {kind}, got {value}")]
    ParamOutOfBounds {
        /// The parameter.
        name: String,
        /// Its type and bounds.
        kind: ParamKind,
        /// The refused value.
        value: ParamValue,
    },

    // --- input shape ---
    /// A float that must be finite is NaN or infinite.
    #[error("{field} must be a finite number")]
    NotFinite {
        /// Which field.
        field: String,
    },
    /// A required text is empty.
    #[error("{field} must not be empty")]
    Empty {
        /// Which field.
        field: String,
    },
    /// A text is longer than allowed.
    #[error("{field} is {len} bytes long, the limit is {max}")]
    TooLong {
        /// Which field.
        field: String,
        /// Its length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// A value is outside what the field allows.
    #[error("{field} is invalid: {reason}")]
    Invalid {
        /// Which field.
        field: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A bounded collection is full.
    #[error("the limit of {max} {what} is reached")]
    LimitReached {
        /// Which collection.
        what: Limit,
        /// Its limit.
        max: usize,
    },
}

impl CommandError {
    /// Whether every state refuses the command this error refused: the
    /// refusal comes from the command's own fields (the shape checks of
    /// `validate.rs`, a percentage above 100, a list longer than its
    /// per-command bound), never from what the state holds.
    ///
    /// It holds because each handler of `apply` runs its shape checks on
    /// every path that could otherwise accept, so in any other state either
    /// an earlier check refuses or the same shape check does (the property
    /// tests check it against other states). The leader relies on it to
    /// refuse a tagged (retryable) write without logging it: no retry of
    /// it can ever apply. A variant is listed only if *every* place that
    /// produces it checks the command alone: [`Limit::Goals`] is not
    /// (a plan can be full), so a refusal for it goes through the log.
    pub fn refused_in_every_state(&self) -> bool {
        match self {
            Self::NotFinite { .. }
            | Self::Empty { .. }
            | Self::TooLong { .. }
            | Self::Invalid { .. }
            | Self::ProgressOutOfRange { .. } => true,
            Self::LimitReached { what, .. } => matches!(
                what,
                Limit::AreaVertices | Limit::Capabilities | Limit::Addresses | Limit::EnumChoices
            ),
            _ => false,
        }
    }
}
