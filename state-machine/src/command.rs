//! What clients propose ([`Command`]) and what they get back ([`Response`]).
//!
//! Commands carry no client id or sequence number: raft-core deduplicates
//! retries generically with its client-session table, so every domain
//! command here is applied at most once.

use serde::Deserialize;
use serde::Serialize;

use crate::health::DegradationPolicy;
use crate::health::Effective;
use crate::health::SensorHealth;
use crate::ids::Epoch;
use crate::ids::GoalId;
use crate::ids::NodeId;
use crate::ids::TaskId;
use crate::node::Liveness;
use crate::node::NodeSpec;
use crate::param::ParamKind;
use crate::param::ParamValue;
use crate::plan::GoalSpec;
use crate::task::TaskOutcome;
use crate::task::TaskSpec;
use crate::task::TaskState;

/// A proposal to change the mission state.
///
/// Plan commands take an optional `expected_version`: when set, the command
/// is refused unless the plan is still at that version, so two operators
/// editing the plan at once cannot silently overwrite each other.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Command {
    // --- mission plan ---
    /// Replace the whole plan with new goals (at least one); it becomes active.
    ReplacePlan {
        /// Refuse unless the plan is at this version.
        expected_version: Option<u64>,
        /// Plan name.
        name: String,
        /// Frame of every pose in the plan.
        frame_id: String,
        /// Goals in execution order.
        goals: Vec<GoalSpec>,
    },
    /// Add goals at the end of an active or completed plan (it becomes active).
    AppendGoals {
        /// Refuse unless the plan is at this version.
        expected_version: Option<u64>,
        /// Goals to add, in order.
        goals: Vec<GoalSpec>,
    },
    /// Mark a pending goal skipped.
    SkipGoal {
        /// Refuse unless the plan is at this version.
        expected_version: Option<u64>,
        /// The goal.
        goal_id: GoalId,
    },
    /// Mark a pending goal reached.
    CompleteGoal {
        /// Refuse unless the plan is at this version.
        expected_version: Option<u64>,
        /// The goal.
        goal_id: GoalId,
    },
    /// Stop an active plan.
    AbortPlan {
        /// Refuse unless the plan is at this version.
        expected_version: Option<u64>,
        /// Why, for the log and the operator.
        reason: String,
    },

    // --- node registry ---
    /// Register a node, or update its addresses, capabilities and budget; it
    /// is `Up` afterwards.
    RegisterNode(NodeSpec),
    /// Remove a node that holds no task.
    DeregisterNode {
        /// The node.
        node_id: NodeId,
    },
    /// Record the coordinator's verdict on a node. `Down` releases every
    /// task it holds: back to `Pending`, or `Cancelled` if a cancel was
    /// pending (nobody is left to acknowledge it).
    SetLiveness {
        /// The node.
        node_id: NodeId,
        /// The verdict.
        liveness: Liveness,
    },

    // --- tasks ---
    /// Create a pending task; the response carries its id.
    CreateTask(TaskSpec),
    /// Lease a pending task to a node under a fresh epoch.
    AssignTask {
        /// The task.
        task_id: TaskId,
        /// The node.
        node_id: NodeId,
    },
    /// Move an assigned or running task to another node (or re-lease it on the
    /// same one) under a fresh epoch; the old epoch is fenced off.
    ReassignTask {
        /// The task.
        task_id: TaskId,
        /// The new assignee.
        node_id: NodeId,
    },
    /// Take an assigned or running task back to `Pending` (coordinator only).
    UnassignTask {
        /// The task.
        task_id: TaskId,
    },
    /// The assignee starts executing.
    StartTask {
        /// The task.
        task_id: TaskId,
        /// The assignee's lease epoch.
        epoch: Epoch,
    },
    /// The assignee reports progress on a running task.
    ReportProgress {
        /// The task.
        task_id: TaskId,
        /// The assignee's lease epoch.
        epoch: Epoch,
        /// 0..=100.
        percent: u8,
        /// Latest typed feedback, if any.
        feedback: Option<crate::task::Feedback>,
    },
    /// The assignee ends its attempt.
    FinishTask {
        /// The task.
        task_id: TaskId,
        /// The assignee's lease epoch.
        epoch: Epoch,
        /// How it ended.
        outcome: TaskOutcome,
    },
    /// Cancel a task: at once if pending, by request if assigned or running.
    CancelTask {
        /// The task.
        task_id: TaskId,
    },
    /// Drop a finished task from the state (tasks are bounded; see
    /// [`crate::limits::MAX_TASKS`]).
    ForgetTask {
        /// The task.
        task_id: TaskId,
    },

    // --- parameters ---
    /// Declare a parameter with its type, bounds and initial value.
    DeclareParam {
        /// Dotted name.
        name: String,
        /// What it controls.
        description: String,
        /// Type and bounds.
        kind: ParamKind,
        /// Initial value.
        value: ParamValue,
    },
    /// Change a declared parameter.
    SetParam {
        /// Dotted name.
        name: String,
        /// New value.
        value: ParamValue,
    },

    // --- health ---
    /// Record a sensor's health.
    ReportSensorHealth {
        /// Sensor name, e.g. `imu`.
        sensor: String,
        /// Its health.
        health: SensorHealth,
    },
    /// Add or replace the policy for its `(sensor, health)`.
    SetPolicy(DegradationPolicy),
    /// Remove the policy for `(sensor, health)`.
    RemovePolicy {
        /// Sensor name.
        sensor: String,
        /// Health.
        health: SensorHealth,
    },
}

/// What an accepted command did.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum Response {
    /// A plan command was applied.
    PlanChanged {
        /// Plan version now.
        version: u64,
        /// Ids given to new goals (replace and append), in order.
        added_goals: Vec<GoalId>,
    },
    /// A node registered or re-registered.
    NodeRegistered {
        /// The node.
        node_id: NodeId,
    },
    /// A node was removed.
    NodeDeregistered {
        /// The node.
        node_id: NodeId,
    },
    /// A node's liveness was recorded.
    LivenessChanged {
        /// The node.
        node_id: NodeId,
        /// Its liveness now.
        liveness: Liveness,
        /// Tasks put back to `Pending` (to be reassigned).
        released: Vec<TaskId>,
        /// Tasks cancelled because their cancel could no longer be acknowledged.
        cancelled: Vec<TaskId>,
    },
    /// A task was created.
    TaskCreated {
        /// Its id.
        task_id: TaskId,
    },
    /// A task was leased (assign or reassign).
    TaskAssigned {
        /// The task.
        task_id: TaskId,
        /// The assignee.
        node_id: NodeId,
        /// The epoch the assignee must present.
        epoch: Epoch,
    },
    /// A task changed state or progress.
    TaskChanged {
        /// The task.
        task_id: TaskId,
        /// Its state now.
        state: TaskState,
    },
    /// A failed task went back to `Pending` for another attempt.
    TaskRetrying {
        /// The task.
        task_id: TaskId,
        /// Failed attempts so far.
        attempts: u32,
        /// Not to be assigned before this time.
        not_before_ms: u64,
    },
    /// A finished task was dropped.
    TaskForgotten {
        /// The task.
        task_id: TaskId,
    },
    /// A parameter was declared or set.
    ParamChanged {
        /// The parameter.
        name: String,
        /// Global parameter version now.
        version: u64,
    },
    /// A health report or policy change was applied.
    HealthChanged {
        /// The derived mode and limits now.
        effective: Effective,
    },
}
