//! The pure transition function.
//!
//! Every handler first runs its `check_*` twin, which tests everything that
//! could refuse the command reading the state only, and then mutates;
//! nothing after the first mutation can fail. So a refused command leaves
//! the state exactly as it was without paying for a clone, and [`check`]
//! (the checks alone) refuses exactly what [`apply`] refuses. The property
//! tests check both: snapshots before and after every refusal, and `check`
//! against `apply` on every generated command.
//!
//! No float arithmetic happens here (only comparisons): `f64` operations are
//! deterministic in IEEE 754, but keeping them out of `apply` means replicas on
//! an aarch64 Pi and an x86 laptop cannot disagree even through a library
//! function that rounds differently.

use crate::command::Command;
use crate::command::Response;
use crate::error::CommandError;
use crate::error::Limit;
use crate::health::DegradationPolicy;
use crate::health::SensorHealth;
use crate::health::SensorReport;
use crate::ids::Epoch;
use crate::ids::GoalId;
use crate::ids::NodeId;
use crate::ids::TaskId;
use crate::limits;
use crate::machine::ApplyCtx;
use crate::mission::Mission;
use crate::node::Liveness;
use crate::node::Node;
use crate::node::NodeSpec;
use crate::param::Param;
use crate::param::ParamChange;
use crate::param::ParamKind;
use crate::param::ParamValue;
use crate::plan::Goal;
use crate::plan::GoalSpec;
use crate::plan::GoalStatus;
use crate::plan::PlanStatus;
use crate::task::Feedback;
use crate::task::Lease;
use crate::task::Resource;
use crate::task::Resources;
use crate::task::Task;
use crate::task::TaskAction;
use crate::task::TaskOutcome;
use crate::task::TaskSpec;
use crate::task::TaskState;
use crate::validate;

/// Would [`apply`] refuse `command`? The validation half of `apply` alone,
/// read only: every handler of `apply` runs exactly this check first and
/// then mutates without failing, so the two cannot disagree. The leader
/// calls it (through [`crate::StateMachine::check`]) before proposing, so a
/// command the state refuses is answered without touching the log.
pub fn check(mission: &Mission, command: &Command, ctx: &ApplyCtx) -> Result<(), CommandError> {
    match command {
        Command::ReplacePlan {
            expected_version,
            name,
            frame_id,
            goals,
        } => mission.check_replace_plan(*expected_version, name, frame_id, goals),
        Command::AppendGoals {
            expected_version,
            goals,
        } => mission.check_append_goals(*expected_version, goals),
        Command::SkipGoal {
            expected_version,
            goal_id,
        }
        | Command::CompleteGoal {
            expected_version,
            goal_id,
        } => mission.check_finish_goal(*expected_version, *goal_id),
        Command::AbortPlan {
            expected_version,
            reason,
        } => mission.check_abort_plan(*expected_version, reason),
        Command::RegisterNode(spec) => mission.check_register_node(spec),
        Command::DeregisterNode { node_id } => mission.check_deregister_node(*node_id),
        Command::SetLiveness { node_id, .. } => mission.check_set_liveness(*node_id),
        Command::CreateTask(spec) => mission.check_create_task(spec),
        Command::AssignTask { task_id, node_id } => mission.check_assign_task(*task_id, *node_id, ctx),
        Command::ReassignTask { task_id, node_id } => mission.check_reassign_task(*task_id, *node_id),
        Command::UnassignTask { task_id } => mission.check_unassign_task(*task_id),
        Command::StartTask { task_id, epoch } => mission.check_start_task(*task_id, *epoch),
        Command::ReportProgress {
            task_id,
            epoch,
            percent,
            feedback,
        } => mission.check_report_progress(*task_id, *epoch, *percent, feedback.as_ref()),
        Command::FinishTask {
            task_id,
            epoch,
            outcome,
        } => mission.check_finish_task(*task_id, *epoch, outcome),
        Command::CancelTask { task_id } => mission.check_cancel_task(*task_id),
        Command::ForgetTask { task_id } => mission.check_forget_task(*task_id),
        Command::DeclareParam {
            name,
            description,
            kind,
            value,
        } => mission.check_declare_param(name, description, kind, value),
        Command::SetParam { name, value } => mission.check_set_param(name, value),
        Command::ReportSensorHealth { sensor, .. } => mission.check_report_sensor(sensor),
        Command::SetPolicy(policy) => mission.check_set_policy(policy),
        Command::RemovePolicy { sensor, health } => mission.check_remove_policy(sensor, *health).map(|_| ()),
    }
}

/// Applies one command to `mission`.
///
/// On `Err` the mission is unchanged. Time comes only from `ctx`.
pub fn apply(mission: &mut Mission, command: &Command, ctx: &ApplyCtx) -> Result<Response, CommandError> {
    match command {
        Command::ReplacePlan {
            expected_version,
            name,
            frame_id,
            goals,
        } => mission.replace_plan(*expected_version, name, frame_id, goals),
        Command::AppendGoals {
            expected_version,
            goals,
        } => mission.append_goals(*expected_version, goals),
        Command::SkipGoal {
            expected_version,
            goal_id,
        } => mission.finish_goal(*expected_version, *goal_id, GoalStatus::Skipped),
        Command::CompleteGoal {
            expected_version,
            goal_id,
        } => mission.finish_goal(*expected_version, *goal_id, GoalStatus::Reached),
        Command::AbortPlan {
            expected_version,
            reason,
        } => mission.abort_plan(*expected_version, reason),
        Command::RegisterNode(spec) => mission.register_node(spec, ctx),
        Command::DeregisterNode { node_id } => mission.deregister_node(*node_id),
        Command::SetLiveness { node_id, liveness } => mission.set_liveness(*node_id, *liveness, ctx),
        Command::CreateTask(spec) => mission.create_task(spec, ctx),
        Command::AssignTask { task_id, node_id } => mission.assign_task(*task_id, *node_id, ctx),
        Command::ReassignTask { task_id, node_id } => mission.reassign_task(*task_id, *node_id, ctx),
        Command::UnassignTask { task_id } => mission.unassign_task(*task_id, ctx),
        Command::StartTask { task_id, epoch } => mission.start_task(*task_id, *epoch, ctx),
        Command::ReportProgress {
            task_id,
            epoch,
            percent,
            feedback,
        } => mission.report_progress(*task_id, *epoch, *percent, feedback.as_ref(), ctx),
        Command::FinishTask {
            task_id,
            epoch,
            outcome,
        } => mission.finish_task(*task_id, *epoch, outcome, ctx),
        Command::CancelTask { task_id } => mission.cancel_task(*task_id, ctx),
        Command::ForgetTask { task_id } => mission.forget_task(*task_id),
        Command::DeclareParam {
            name,
            description,
            kind,
            value,
        } => mission.declare_param(name, description, kind, value, ctx),
        Command::SetParam { name, value } => mission.set_param(name, value, ctx),
        Command::ReportSensorHealth { sensor, health } => mission.report_sensor(sensor, *health, ctx),
        Command::SetPolicy(policy) => mission.set_policy(policy),
        Command::RemovePolicy { sensor, health } => mission.remove_policy(sensor, *health),
    }
}

// --- mission plan ---
impl Mission {
    fn check_plan_version(&self, expected: Option<u64>) -> Result<(), CommandError> {
        match expected {
            Some(expected) if expected != self.plan.version => Err(CommandError::PlanVersionMismatch {
                expected,
                actual: self.plan.version,
            }),
            _ => Ok(()),
        }
    }

    /// Turns specs into goals with fresh ids. Only called after validation.
    fn push_goals(&mut self, specs: &[GoalSpec]) -> Vec<GoalId> {
        let mut added = Vec::with_capacity(specs.len());
        for spec in specs {
            let id = GoalId(self.next_goal_id);
            self.next_goal_id += 1;
            self.plan.goals.push(Goal {
                id,
                kind: spec.kind.clone(),
                tolerance: spec.tolerance,
                status: GoalStatus::Pending,
            });
            added.push(id);
        }
        added
    }

    fn check_replace_plan(
        &self,
        expected_version: Option<u64>,
        name: &str,
        frame_id: &str,
        goals: &[GoalSpec],
    ) -> Result<(), CommandError> {
        self.check_plan_version(expected_version)?;
        validate::name("name", name)?;
        validate::name("frame_id", frame_id)?;
        validate::goals(goals)
    }

    fn replace_plan(
        &mut self,
        expected_version: Option<u64>,
        name: &str,
        frame_id: &str,
        goals: &[GoalSpec],
    ) -> Result<Response, CommandError> {
        self.check_replace_plan(expected_version, name, frame_id, goals)?;

        self.plan.name = name.to_owned();
        self.plan.frame_id = frame_id.to_owned();
        self.plan.goals.clear();
        let added_goals = self.push_goals(goals);
        self.plan.status = PlanStatus::Active;
        self.plan.version += 1;
        Ok(Response::PlanChanged {
            version: self.plan.version,
            added_goals,
        })
    }

    fn check_append_goals(&self, expected_version: Option<u64>, goals: &[GoalSpec]) -> Result<(), CommandError> {
        self.check_plan_version(expected_version)?;
        if !matches!(self.plan.status, PlanStatus::Active | PlanStatus::Completed) {
            return Err(CommandError::PlanNotActive {
                status: self.plan.status.clone(),
            });
        }
        validate::goals(goals)?;
        if self.plan.goals.len() + goals.len() > limits::MAX_GOALS {
            return Err(CommandError::LimitReached {
                what: Limit::Goals,
                max: limits::MAX_GOALS,
            });
        }
        Ok(())
    }

    fn append_goals(&mut self, expected_version: Option<u64>, goals: &[GoalSpec]) -> Result<Response, CommandError> {
        self.check_append_goals(expected_version, goals)?;

        let added_goals = self.push_goals(goals);
        self.plan.status = PlanStatus::Active;
        self.plan.version += 1;
        Ok(Response::PlanChanged {
            version: self.plan.version,
            added_goals,
        })
    }

    fn check_finish_goal(&self, expected_version: Option<u64>, goal_id: GoalId) -> Result<(), CommandError> {
        self.check_plan_version(expected_version)?;
        if self.plan.status != PlanStatus::Active {
            return Err(CommandError::PlanNotActive {
                status: self.plan.status.clone(),
            });
        }
        let plan_version = self.plan.version;
        let Some(goal) = self.plan.goals.iter().find(|g| g.id == goal_id) else {
            return Err(CommandError::GoalNotFound { goal_id, plan_version });
        };
        if goal.status != GoalStatus::Pending {
            return Err(CommandError::GoalNotPending {
                goal_id,
                status: goal.status,
            });
        }
        Ok(())
    }

    fn finish_goal(
        &mut self,
        expected_version: Option<u64>,
        goal_id: GoalId,
        status: GoalStatus,
    ) -> Result<Response, CommandError> {
        debug_assert!(status != GoalStatus::Pending);
        self.check_finish_goal(expected_version, goal_id)?;

        match self.plan.goals.iter_mut().find(|g| g.id == goal_id) {
            Some(goal) => goal.status = status,
            None => unreachable!("goal {goal_id} vanished between validation and mutation"),
        }
        if self.plan.goals.iter().all(|g| g.status != GoalStatus::Pending) {
            self.plan.status = PlanStatus::Completed;
        }
        self.plan.version += 1;
        Ok(Response::PlanChanged {
            version: self.plan.version,
            added_goals: Vec::new(),
        })
    }

    fn check_abort_plan(&self, expected_version: Option<u64>, reason: &str) -> Result<(), CommandError> {
        self.check_plan_version(expected_version)?;
        if self.plan.status != PlanStatus::Active {
            return Err(CommandError::PlanNotActive {
                status: self.plan.status.clone(),
            });
        }
        validate::text("reason", reason)
    }

    fn abort_plan(&mut self, expected_version: Option<u64>, reason: &str) -> Result<Response, CommandError> {
        self.check_abort_plan(expected_version, reason)?;

        self.plan.status = PlanStatus::Aborted {
            reason: reason.to_owned(),
        };
        self.plan.version += 1;
        Ok(Response::PlanChanged {
            version: self.plan.version,
            added_goals: Vec::new(),
        })
    }
}

// --- node registry ---
impl Mission {
    fn check_register_node(&self, spec: &NodeSpec) -> Result<(), CommandError> {
        validate::node_spec(spec)?;
        match self.nodes.get(&spec.id) {
            Some(node) => {
                // Re-registration must not break the placement of the tasks it holds.
                budget_covers(node.id, spec.budget, node.load)?;
                for task_id in &node.tasks {
                    let Some(task) = self.tasks.get(task_id) else { continue };
                    if let Some(capability) = task
                        .spec
                        .required_capabilities
                        .iter()
                        .find(|c| !spec.capabilities.contains(*c))
                    {
                        return Err(CommandError::CapabilityInUse {
                            node_id: node.id,
                            capability: capability.clone(),
                            task_id: *task_id,
                        });
                    }
                }
            }
            None if self.nodes.len() >= limits::MAX_NODES => {
                return Err(CommandError::LimitReached {
                    what: Limit::Nodes,
                    max: limits::MAX_NODES,
                });
            }
            None => {}
        }
        Ok(())
    }

    fn register_node(&mut self, spec: &NodeSpec, ctx: &ApplyCtx) -> Result<Response, CommandError> {
        self.check_register_node(spec)?;

        let node = self.nodes.entry(spec.id).or_insert_with(|| Node {
            id: spec.id,
            addresses: Vec::new(),
            capabilities: Default::default(),
            budget: Resources::default(),
            liveness: Liveness::Down,
            load: Resources::default(),
            tasks: Default::default(),
            registered_at_ms: ctx.timestamp_ms,
            liveness_changed_at_ms: ctx.timestamp_ms,
        });
        node.addresses.clone_from(&spec.addresses);
        node.capabilities.clone_from(&spec.capabilities);
        node.budget = spec.budget;
        node.registered_at_ms = ctx.timestamp_ms;
        if node.liveness != Liveness::Up {
            node.liveness = Liveness::Up;
            node.liveness_changed_at_ms = ctx.timestamp_ms;
        }
        Ok(Response::NodeRegistered { node_id: spec.id })
    }

    fn check_deregister_node(&self, node_id: NodeId) -> Result<(), CommandError> {
        let node = self.nodes.get(&node_id).ok_or(CommandError::NodeNotFound { node_id })?;
        if !node.tasks.is_empty() {
            return Err(CommandError::NodeBusy {
                node_id,
                tasks: node.tasks.len(),
            });
        }
        Ok(())
    }

    fn deregister_node(&mut self, node_id: NodeId) -> Result<Response, CommandError> {
        self.check_deregister_node(node_id)?;

        self.nodes.remove(&node_id);
        Ok(Response::NodeDeregistered { node_id })
    }

    fn check_set_liveness(&self, node_id: NodeId) -> Result<(), CommandError> {
        self.nodes
            .get(&node_id)
            .map(|_| ())
            .ok_or(CommandError::NodeNotFound { node_id })
    }

    fn set_liveness(&mut self, node_id: NodeId, liveness: Liveness, ctx: &ApplyCtx) -> Result<Response, CommandError> {
        self.check_set_liveness(node_id)?;

        let node = self.node_mut(node_id);
        if node.liveness != liveness {
            node.liveness = liveness;
            node.liveness_changed_at_ms = ctx.timestamp_ms;
        }
        let mut released = Vec::new();
        let mut cancelled = Vec::new();
        if liveness == Liveness::Down {
            let held: Vec<TaskId> = node.tasks.iter().copied().collect();
            for task_id in held {
                match self.release(task_id, ctx) {
                    TaskState::Cancelled => cancelled.push(task_id),
                    _ => released.push(task_id),
                }
            }
        }
        Ok(Response::LivenessChanged {
            node_id,
            liveness,
            released,
            cancelled,
        })
    }
}

// --- tasks ---
impl Mission {
    fn task_ref(&self, task_id: TaskId) -> Result<&Task, CommandError> {
        self.tasks.get(&task_id).ok_or(CommandError::TaskNotFound { task_id })
    }

    /// Looks a task up for an already validated mutation.
    fn task_mut(&mut self, task_id: TaskId) -> &mut Task {
        match self.tasks.get_mut(&task_id) {
            Some(task) => task,
            None => unreachable!("task {task_id} vanished between validation and mutation"),
        }
    }

    fn node_mut(&mut self, node_id: NodeId) -> &mut Node {
        match self.nodes.get_mut(&node_id) {
            Some(node) => node,
            None => unreachable!("node {node_id} vanished between validation and mutation"),
        }
    }

    /// Checks the presented epoch against the task's lease: the fencing check
    /// every assignee command goes through first.
    fn fence(&self, task_id: TaskId, epoch: Epoch, action: TaskAction) -> Result<(&Task, Lease), CommandError> {
        let task = self.task_ref(task_id)?;
        match task.lease {
            Some(lease) if lease.epoch == epoch => Ok((task, lease)),
            // A finished task: say so rather than "stale", the sender's
            // epoch may well have been the last one.
            None if task.state.is_terminal() => Err(CommandError::IllegalTransition {
                task_id,
                action,
                state: task.state,
            }),
            current => Err(CommandError::StaleEpoch {
                task_id,
                presented: epoch,
                current: current.map(|l| l.epoch),
            }),
        }
    }

    /// Checks that `task` may be placed on `node_id`, counting `freed` as
    /// available too (the task's own use when re-leasing on the same node).
    fn check_placement(&self, task: &Task, node_id: NodeId, freed: Resources) -> Result<(), CommandError> {
        let node = self.nodes.get(&node_id).ok_or(CommandError::NodeNotFound { node_id })?;
        if node.liveness == Liveness::Down {
            return Err(CommandError::NodeDown { node_id });
        }
        if let Some(capability) = task
            .spec
            .required_capabilities
            .iter()
            .find(|c| !node.capabilities.contains(*c))
        {
            return Err(CommandError::MissingCapability {
                node_id,
                task_id: task.id,
                capability: capability.clone(),
            });
        }
        let free = node.free();
        let available = Resources {
            cpu_millicores: free.cpu_millicores.saturating_add(freed.cpu_millicores),
            memory_mib: free.memory_mib.saturating_add(freed.memory_mib),
        };
        let need = task.spec.resources;
        let over = |resource, required, available| CommandError::OverBudget {
            node_id,
            task_id: task.id,
            resource,
            required,
            available,
        };
        if need.cpu_millicores > available.cpu_millicores {
            return Err(over(Resource::Cpu, need.cpu_millicores, available.cpu_millicores));
        }
        if need.memory_mib > available.memory_mib {
            return Err(over(Resource::Memory, need.memory_mib, available.memory_mib));
        }
        Ok(())
    }

    /// Leases a validated task to a validated node under a fresh epoch.
    fn lease(&mut self, task_id: TaskId, node_id: NodeId, ctx: &ApplyCtx) -> Epoch {
        let epoch = Epoch(self.next_epoch);
        self.next_epoch += 1;
        let task = self.task_mut(task_id);
        task.lease = Some(Lease { node_id, epoch });
        task.state = TaskState::Assigned;
        task.progress_percent = 0;
        task.feedback = None;
        task.updated_at_ms = ctx.timestamp_ms;
        let resources = task.spec.resources;
        let node = self.node_mut(node_id);
        node.load = add(node.load, resources);
        node.tasks.insert(task_id);
        debug_assert!(node.load.fits_within(node.budget));
        epoch
    }

    /// Drops a task's lease and takes its resources off its node.
    fn drop_lease(&mut self, task_id: TaskId) {
        let task = self.task_mut(task_id);
        let Some(lease) = task.lease.take() else { return };
        let resources = task.spec.resources;
        let node = self.node_mut(lease.node_id);
        node.load = sub(node.load, resources);
        node.tasks.remove(&task_id);
    }

    /// Takes a leased task back from its node without counting a failure:
    /// to `Pending`, or to `Cancelled` if a cancel was pending (nobody is
    /// left to acknowledge it). Returns the new state.
    fn release(&mut self, task_id: TaskId, ctx: &ApplyCtx) -> TaskState {
        self.drop_lease(task_id);
        let task = self.task_mut(task_id);
        task.state = if task.cancel_requested {
            TaskState::Cancelled
        } else {
            TaskState::Pending
        };
        task.cancel_requested = false;
        task.progress_percent = 0;
        task.feedback = None;
        task.updated_at_ms = ctx.timestamp_ms;
        task.state
    }

    fn check_create_task(&self, spec: &TaskSpec) -> Result<(), CommandError> {
        validate::task_spec(spec)?;
        if self.tasks.len() >= limits::MAX_TASKS {
            return Err(CommandError::LimitReached {
                what: Limit::Tasks,
                max: limits::MAX_TASKS,
            });
        }
        Ok(())
    }

    fn create_task(&mut self, spec: &TaskSpec, ctx: &ApplyCtx) -> Result<Response, CommandError> {
        self.check_create_task(spec)?;

        let task_id = TaskId(self.next_task_id);
        self.next_task_id += 1;
        self.tasks.insert(
            task_id,
            Task {
                id: task_id,
                spec: spec.clone(),
                state: TaskState::Pending,
                lease: None,
                cancel_requested: false,
                progress_percent: 0,
                feedback: None,
                attempts: 0,
                not_before_ms: 0,
                last_error: None,
                created_at_ms: ctx.timestamp_ms,
                updated_at_ms: ctx.timestamp_ms,
            },
        );
        Ok(Response::TaskCreated { task_id })
    }

    fn check_assign_task(&self, task_id: TaskId, node_id: NodeId, ctx: &ApplyCtx) -> Result<(), CommandError> {
        let task = self.task_ref(task_id)?;
        match (task.state, task.lease) {
            (TaskState::Pending, _) => {}
            (_, Some(lease)) => {
                return Err(CommandError::AlreadyAssigned {
                    task_id,
                    node_id: lease.node_id,
                })
            }
            (state, None) => {
                return Err(CommandError::IllegalTransition {
                    task_id,
                    action: TaskAction::Assign,
                    state,
                })
            }
        }
        if task.not_before_ms > ctx.timestamp_ms {
            return Err(CommandError::BackingOff {
                task_id,
                not_before_ms: task.not_before_ms,
                now_ms: ctx.timestamp_ms,
            });
        }
        self.check_placement(task, node_id, Resources::default())
    }

    fn assign_task(&mut self, task_id: TaskId, node_id: NodeId, ctx: &ApplyCtx) -> Result<Response, CommandError> {
        self.check_assign_task(task_id, node_id, ctx)?;

        let epoch = self.lease(task_id, node_id, ctx);
        Ok(Response::TaskAssigned {
            task_id,
            node_id,
            epoch,
        })
    }

    fn check_reassign_task(&self, task_id: TaskId, node_id: NodeId) -> Result<(), CommandError> {
        let task = self.task_ref(task_id)?;
        let Some(old) = task.lease else {
            return Err(CommandError::IllegalTransition {
                task_id,
                action: TaskAction::Reassign,
                state: task.state,
            });
        };
        let freed = if old.node_id == node_id {
            task.spec.resources
        } else {
            Resources::default()
        };
        self.check_placement(task, node_id, freed)
    }

    fn reassign_task(&mut self, task_id: TaskId, node_id: NodeId, ctx: &ApplyCtx) -> Result<Response, CommandError> {
        self.check_reassign_task(task_id, node_id)?;

        self.drop_lease(task_id);
        let epoch = self.lease(task_id, node_id, ctx);
        Ok(Response::TaskAssigned {
            task_id,
            node_id,
            epoch,
        })
    }

    fn check_unassign_task(&self, task_id: TaskId) -> Result<(), CommandError> {
        let task = self.task_ref(task_id)?;
        if task.lease.is_none() {
            return Err(CommandError::IllegalTransition {
                task_id,
                action: TaskAction::Unassign,
                state: task.state,
            });
        }
        Ok(())
    }

    fn unassign_task(&mut self, task_id: TaskId, ctx: &ApplyCtx) -> Result<Response, CommandError> {
        self.check_unassign_task(task_id)?;

        let state = self.release(task_id, ctx);
        Ok(Response::TaskChanged { task_id, state })
    }

    fn check_start_task(&self, task_id: TaskId, epoch: Epoch) -> Result<(), CommandError> {
        let (task, _) = self.fence(task_id, epoch, TaskAction::Start)?;
        if task.state != TaskState::Assigned {
            return Err(CommandError::IllegalTransition {
                task_id,
                action: TaskAction::Start,
                state: task.state,
            });
        }
        Ok(())
    }

    fn start_task(&mut self, task_id: TaskId, epoch: Epoch, ctx: &ApplyCtx) -> Result<Response, CommandError> {
        self.check_start_task(task_id, epoch)?;

        let task = self.task_mut(task_id);
        task.state = TaskState::Running;
        task.updated_at_ms = ctx.timestamp_ms;
        Ok(Response::TaskChanged {
            task_id,
            state: TaskState::Running,
        })
    }

    fn check_report_progress(
        &self,
        task_id: TaskId,
        epoch: Epoch,
        percent: u8,
        feedback: Option<&Feedback>,
    ) -> Result<(), CommandError> {
        let (task, _) = self.fence(task_id, epoch, TaskAction::Progress)?;
        if task.state != TaskState::Running {
            return Err(CommandError::IllegalTransition {
                task_id,
                action: TaskAction::Progress,
                state: task.state,
            });
        }
        if percent > 100 {
            return Err(CommandError::ProgressOutOfRange { task_id, percent });
        }
        match feedback {
            Some(feedback) => validate::feedback(feedback),
            None => Ok(()),
        }
    }

    fn report_progress(
        &mut self,
        task_id: TaskId,
        epoch: Epoch,
        percent: u8,
        feedback: Option<&Feedback>,
        ctx: &ApplyCtx,
    ) -> Result<Response, CommandError> {
        self.check_report_progress(task_id, epoch, percent, feedback)?;

        let task = self.task_mut(task_id);
        task.progress_percent = percent;
        task.feedback = feedback.cloned();
        task.updated_at_ms = ctx.timestamp_ms;
        Ok(Response::TaskChanged {
            task_id,
            state: TaskState::Running,
        })
    }

    fn check_finish_task(&self, task_id: TaskId, epoch: Epoch, outcome: &TaskOutcome) -> Result<(), CommandError> {
        let action = match outcome {
            TaskOutcome::Succeeded => TaskAction::Succeed,
            TaskOutcome::Failed { .. } => TaskAction::Fail,
            TaskOutcome::Cancelled => TaskAction::AcknowledgeCancel,
        };
        let (task, _) = self.fence(task_id, epoch, action)?;
        match outcome {
            // Success needs a started task; failure and cancellation may
            // happen before the start (e.g. the agent cannot launch it).
            TaskOutcome::Succeeded if task.state != TaskState::Running => {
                return Err(CommandError::IllegalTransition {
                    task_id,
                    action,
                    state: task.state,
                });
            }
            TaskOutcome::Failed { reason, .. } => validate::text("reason", reason)?,
            TaskOutcome::Cancelled if !task.cancel_requested => {
                return Err(CommandError::CancelNotRequested { task_id });
            }
            _ => {}
        }
        Ok(())
    }

    fn finish_task(
        &mut self,
        task_id: TaskId,
        epoch: Epoch,
        outcome: &TaskOutcome,
        ctx: &ApplyCtx,
    ) -> Result<Response, CommandError> {
        self.check_finish_task(task_id, epoch, outcome)?;

        self.drop_lease(task_id);
        let task = self.task_mut(task_id);
        task.updated_at_ms = ctx.timestamp_ms;
        let cancel_requested = std::mem::take(&mut task.cancel_requested);
        let response = match outcome {
            TaskOutcome::Succeeded => {
                task.state = TaskState::Succeeded;
                task.progress_percent = 100;
                Response::TaskChanged {
                    task_id,
                    state: task.state,
                }
            }
            TaskOutcome::Cancelled => {
                task.state = TaskState::Cancelled;
                Response::TaskChanged {
                    task_id,
                    state: task.state,
                }
            }
            TaskOutcome::Failed {
                reason,
                retry_jitter_ms,
            } => {
                task.attempts += 1;
                task.last_error = Some(reason.clone());
                task.progress_percent = 0;
                task.feedback = None;
                // A failure after a cancel request ends the task: the
                // operator asked for it to stop, retrying would defy that.
                if cancel_requested || task.attempts >= task.spec.retry.max_attempts {
                    task.state = TaskState::Failed;
                    Response::TaskChanged {
                        task_id,
                        state: task.state,
                    }
                } else {
                    let retry = task.spec.retry;
                    let jitter_ms = (*retry_jitter_ms).min(retry.backoff_ms_max);
                    task.state = TaskState::Pending;
                    task.not_before_ms = ctx
                        .timestamp_ms
                        .saturating_add(retry.backoff_ms(task.attempts))
                        .saturating_add(jitter_ms);
                    Response::TaskRetrying {
                        task_id,
                        attempts: task.attempts,
                        not_before_ms: task.not_before_ms,
                    }
                }
            }
        };
        Ok(response)
    }

    fn check_cancel_task(&self, task_id: TaskId) -> Result<(), CommandError> {
        let task = self.task_ref(task_id)?;
        if task.state.is_terminal() {
            return Err(CommandError::IllegalTransition {
                task_id,
                action: TaskAction::Cancel,
                state: task.state,
            });
        }
        Ok(())
    }

    fn cancel_task(&mut self, task_id: TaskId, ctx: &ApplyCtx) -> Result<Response, CommandError> {
        self.check_cancel_task(task_id)?;

        let task = self.task_mut(task_id);
        if task.state == TaskState::Pending {
            // Nobody runs it, so nobody needs to acknowledge.
            task.state = TaskState::Cancelled;
        } else {
            task.cancel_requested = true;
        }
        task.updated_at_ms = ctx.timestamp_ms;
        Ok(Response::TaskChanged {
            task_id,
            state: task.state,
        })
    }

    fn check_forget_task(&self, task_id: TaskId) -> Result<(), CommandError> {
        let task = self.task_ref(task_id)?;
        if !task.state.is_terminal() {
            return Err(CommandError::IllegalTransition {
                task_id,
                action: TaskAction::Forget,
                state: task.state,
            });
        }
        Ok(())
    }

    fn forget_task(&mut self, task_id: TaskId) -> Result<Response, CommandError> {
        self.check_forget_task(task_id)?;

        self.tasks.remove(&task_id);
        Ok(Response::TaskForgotten { task_id })
    }
}

// --- parameters ---
impl Mission {
    fn check_value(name: &str, kind: &ParamKind, value: &ParamValue) -> Result<(), CommandError> {
        let (expected, found) = (kind.param_type(), value.param_type());
        if expected != found {
            return Err(CommandError::ParamTypeMismatch {
                name: name.to_owned(),
                expected,
                found,
            });
        }
        if let ParamValue::Float(v) = value {
            if !v.is_finite() {
                return Err(CommandError::NotFinite {
                    field: format!("parameter {name:?}"),
                });
            }
        }
        if !kind.admits(value) {
            return Err(CommandError::ParamOutOfBounds {
                name: name.to_owned(),
                kind: kind.clone(),
                value: value.clone(),
            });
        }
        Ok(())
    }

    fn record_change(&mut self, name: &str, old: Option<ParamValue>, new: &ParamValue, ctx: &ApplyCtx) {
        if self.param_changes.len() >= limits::PARAM_EVENTS_KEPT {
            self.param_changes.pop_front();
        }
        self.param_changes.push_back(ParamChange {
            version: self.params_version,
            name: name.to_owned(),
            old,
            new: new.clone(),
            index: ctx.index,
            timestamp_ms: ctx.timestamp_ms,
        });
    }

    fn check_declare_param(
        &self,
        name: &str,
        description: &str,
        kind: &ParamKind,
        value: &ParamValue,
    ) -> Result<(), CommandError> {
        validate::name("name", name)?;
        validate::text("description", description)?;
        if self.params.contains_key(name) {
            return Err(CommandError::ParamAlreadyDeclared { name: name.to_owned() });
        }
        if self.params.len() >= limits::MAX_PARAMS {
            return Err(CommandError::LimitReached {
                what: Limit::Params,
                max: limits::MAX_PARAMS,
            });
        }
        validate::param_kind(kind)?;
        Self::check_value(name, kind, value)
    }

    fn declare_param(
        &mut self,
        name: &str,
        description: &str,
        kind: &ParamKind,
        value: &ParamValue,
        ctx: &ApplyCtx,
    ) -> Result<Response, CommandError> {
        self.check_declare_param(name, description, kind, value)?;

        self.params_version += 1;
        self.params.insert(
            name.to_owned(),
            Param {
                name: name.to_owned(),
                description: description.to_owned(),
                kind: kind.clone(),
                value: value.clone(),
                version: self.params_version,
            },
        );
        self.record_change(name, None, value, ctx);
        Ok(Response::ParamChanged {
            name: name.to_owned(),
            version: self.params_version,
        })
    }

    fn check_set_param(&self, name: &str, value: &ParamValue) -> Result<(), CommandError> {
        let param = self
            .params
            .get(name)
            .ok_or_else(|| CommandError::ParamNotDeclared { name: name.to_owned() })?;
        Self::check_value(name, &param.kind, value)
    }

    fn set_param(&mut self, name: &str, value: &ParamValue, ctx: &ApplyCtx) -> Result<Response, CommandError> {
        self.check_set_param(name, value)?;

        self.params_version += 1;
        let version = self.params_version;
        let old = match self.params.get_mut(name) {
            Some(param) => {
                param.version = version;
                std::mem::replace(&mut param.value, value.clone())
            }
            None => unreachable!("parameter {name:?} vanished between validation and mutation"),
        };
        self.record_change(name, Some(old), value, ctx);
        Ok(Response::ParamChanged {
            name: name.to_owned(),
            version,
        })
    }
}

// --- health ---
impl Mission {
    fn check_report_sensor(&self, sensor: &str) -> Result<(), CommandError> {
        validate::name("sensor", sensor)?;
        if !self.sensors.contains_key(sensor) && self.sensors.len() >= limits::MAX_SENSORS {
            return Err(CommandError::LimitReached {
                what: Limit::Sensors,
                max: limits::MAX_SENSORS,
            });
        }
        Ok(())
    }

    fn report_sensor(&mut self, sensor: &str, health: SensorHealth, ctx: &ApplyCtx) -> Result<Response, CommandError> {
        self.check_report_sensor(sensor)?;

        let report = SensorReport {
            health,
            reported_at_ms: ctx.timestamp_ms,
        };
        match self.sensors.get_mut(sensor) {
            Some(existing) => *existing = report,
            None => {
                self.sensors.insert(sensor.to_owned(), report);
            }
        }
        Ok(Response::HealthChanged {
            effective: self.effective(),
        })
    }

    fn check_set_policy(&self, policy: &DegradationPolicy) -> Result<(), CommandError> {
        validate::policy(policy)?;
        let at = self.policy_index(&policy.sensor, policy.health);
        if at.is_err() && self.policies.len() >= limits::MAX_POLICIES {
            return Err(CommandError::LimitReached {
                what: Limit::Policies,
                max: limits::MAX_POLICIES,
            });
        }
        Ok(())
    }

    fn set_policy(&mut self, policy: &DegradationPolicy) -> Result<Response, CommandError> {
        self.check_set_policy(policy)?;

        match self.policy_index(&policy.sensor, policy.health) {
            Ok(i) => self.policies[i] = policy.clone(),
            Err(i) => self.policies.insert(i, policy.clone()),
        }
        Ok(Response::HealthChanged {
            effective: self.effective(),
        })
    }

    /// The policy's position, or why it cannot be removed.
    fn check_remove_policy(&self, sensor: &str, health: SensorHealth) -> Result<usize, CommandError> {
        self.policy_index(sensor, health)
            .map_err(|_| CommandError::PolicyNotFound {
                sensor: sensor.to_owned(),
                health,
            })
    }

    fn remove_policy(&mut self, sensor: &str, health: SensorHealth) -> Result<Response, CommandError> {
        let i = self.check_remove_policy(sensor, health)?;

        self.policies.remove(i);
        Ok(Response::HealthChanged {
            effective: self.effective(),
        })
    }
}

fn budget_covers(node_id: NodeId, budget: Resources, load: Resources) -> Result<(), CommandError> {
    if budget.cpu_millicores < load.cpu_millicores {
        return Err(CommandError::BudgetBelowLoad {
            node_id,
            resource: Resource::Cpu,
            budget: budget.cpu_millicores,
            load: load.cpu_millicores,
        });
    }
    if budget.memory_mib < load.memory_mib {
        return Err(CommandError::BudgetBelowLoad {
            node_id,
            resource: Resource::Memory,
            budget: budget.memory_mib,
            load: load.memory_mib,
        });
    }
    Ok(())
}

/// Load plus a task's use; cannot overflow because the sum was checked to fit
/// the node's budget.
fn add(load: Resources, task: Resources) -> Resources {
    Resources {
        cpu_millicores: load.cpu_millicores.saturating_add(task.cpu_millicores),
        memory_mib: load.memory_mib.saturating_add(task.memory_mib),
    }
}

/// Load minus a task's use; cannot underflow because the load includes it.
fn sub(load: Resources, task: Resources) -> Resources {
    debug_assert!(task.fits_within(load), "load {load:?} does not include task {task:?}");
    Resources {
        cpu_millicores: load.cpu_millicores.saturating_sub(task.cpu_millicores),
        memory_mib: load.memory_mib.saturating_sub(task.memory_mib),
    }
}
