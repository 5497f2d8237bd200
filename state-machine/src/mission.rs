//! [`Mission`]: the whole replicated state, its read-only queries and its
//! invariants.

use std::collections::BTreeMap;
use std::collections::BTreeSet;
use std::collections::VecDeque;

use serde::Deserialize;
use serde::Serialize;

use crate::command::Command;
use crate::command::Response;
use crate::error::CommandError;
use crate::health::default_policies;
use crate::health::Cause;
use crate::health::DegradationPolicy;
use crate::health::Effective;
use crate::health::Mode;
use crate::health::SensorHealth;
use crate::health::SensorReport;
use crate::ids::Epoch;
use crate::ids::NodeId;
use crate::ids::TaskId;
use crate::limits;
use crate::machine::ApplyCtx;
use crate::machine::Refusal;
use crate::machine::SnapshotError;
use crate::machine::Speaker;
use crate::machine::StateMachine;
use crate::node::Liveness;
use crate::node::Node;
use crate::param::Param;
use crate::param::ParamChange;
use crate::param::ParamKind;
use crate::param::ParamValue;
use crate::param::MAX_SPEED_PARAM;
use crate::plan::GoalStatus;
use crate::plan::Plan;
use crate::plan::PlanStatus;
use crate::task::Resources;
use crate::task::Task;
use crate::task::TaskFilter;
use crate::task::TaskState;

/// The replicated mission state: plan, tasks, nodes, parameters, sensor
/// health and degradation policies.
///
/// Every collection is a `BTreeMap` (or a sorted `Vec`), never a `HashMap`:
/// iteration order, and so serialisation, is the same on every replica.
/// Fields are private: the only way to change a `Mission` is
/// [`StateMachine::apply`] (or [`crate::apply()`]), which keeps the
/// invariants listed in [`Mission::check_invariants`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Mission {
    pub(crate) plan: Plan,
    pub(crate) next_goal_id: u64,
    pub(crate) tasks: BTreeMap<TaskId, Task>,
    pub(crate) next_task_id: u64,
    /// One counter for every lease of every task, so epochs are unique
    /// cluster-wide and a deposed holder can never present a current one.
    pub(crate) next_epoch: u64,
    pub(crate) nodes: BTreeMap<NodeId, Node>,
    pub(crate) params: BTreeMap<String, Param>,
    pub(crate) params_version: u64,
    pub(crate) param_changes: VecDeque<ParamChange>,
    pub(crate) sensors: BTreeMap<String, SensorReport>,
    /// Sorted by `(sensor, health)`, no duplicates: a `Vec` rather than a map
    /// with a tuple key so the state still serialises to JSON.
    pub(crate) policies: Vec<DegradationPolicy>,
}

impl Default for Mission {
    /// A fresh cluster: no plan, no tasks, no nodes, the built-in top-speed
    /// parameter and the rover guide's degradation policies.
    fn default() -> Self {
        let mut params = BTreeMap::new();
        params.insert(
            MAX_SPEED_PARAM.to_owned(),
            Param {
                name: MAX_SPEED_PARAM.to_owned(),
                description: "top speed before degradation policies scale it, m/s".to_owned(),
                kind: ParamKind::Float { min: 0.0, max: 10.0 },
                value: ParamValue::Float(1.0),
                version: 0,
            },
        );
        Mission {
            plan: Plan::default(),
            next_goal_id: 1,
            tasks: BTreeMap::new(),
            next_task_id: 1,
            next_epoch: 1,
            nodes: BTreeMap::new(),
            params,
            params_version: 0,
            param_changes: VecDeque::new(),
            sensors: BTreeMap::new(),
            policies: default_policies(),
        }
    }
}

impl StateMachine for Mission {
    type Command = Command;
    type Response = Result<Response, CommandError>;

    fn apply(&mut self, command: &Command, ctx: &ApplyCtx) -> Self::Response {
        let response = crate::apply::apply(self, command, ctx);
        // Debug and test builds check every invariant after every apply,
        // not only when a snapshot is decoded: a transition that breaks
        // one is caught at the command that did it. O(state) per apply,
        // so not in release builds.
        #[cfg(debug_assertions)]
        if let Err(broken) = self.check_invariants() {
            panic!(
                "invariant broken after applying {command:?} at index {}: {broken}",
                ctx.index
            );
        }
        response
    }

    fn check(&self, command: &Command, ctx: &ApplyCtx) -> Result<(), Refusal<Self::Response>> {
        crate::apply::check(self, command, ctx).map_err(|e| {
            if e.refused_in_every_state() {
                Refusal::InEveryState(Err(e))
            } else {
                Refusal::InThisState(Err(e))
            }
        })
    }

    fn speaker(&self, command: &Command) -> Speaker {
        match command {
            Command::RegisterNode(spec) => Speaker::Node(spec.id.0),
            Command::SetLiveness { node_id, .. } => Speaker::Node(node_id.0),
            Command::AssignTask { .. } | Command::ReassignTask { .. } | Command::UnassignTask { .. } => Speaker::Leader,
            Command::StartTask { task_id, epoch }
            | Command::ReportProgress { task_id, epoch, .. }
            | Command::FinishTask { task_id, epoch, .. } => {
                // Epochs are never reused, so the holder of `epoch` is
                // fixed once leased: a stale replica can only not know it.
                match self.task(*task_id).and_then(|t| t.lease) {
                    Some(lease) if lease.epoch == *epoch => Speaker::Node(lease.node_id.0),
                    _ => Speaker::Anyone,
                }
            }
            // Operator writes (the admin API's token authorised them) and
            // reports about the rover rather than about a node.
            Command::ReplacePlan { .. }
            | Command::AppendGoals { .. }
            | Command::SkipGoal { .. }
            | Command::CompleteGoal { .. }
            | Command::AbortPlan { .. }
            | Command::DeregisterNode { .. }
            | Command::CreateTask(_)
            | Command::CancelTask { .. }
            | Command::ForgetTask { .. }
            | Command::DeclareParam { .. }
            | Command::SetParam { .. }
            | Command::ReportSensorHealth { .. }
            | Command::SetPolicy(_)
            | Command::RemovePolicy { .. } => Speaker::Anyone,
        }
    }

    fn snapshot(&self) -> Vec<u8> {
        crate::snapshot::encode(self)
    }

    fn restore(bytes: &[u8]) -> Result<Self, SnapshotError> {
        crate::snapshot::decode(bytes)
    }
}

/// Read-only queries, for the admin API, the coordinator and agents.
impl Mission {
    /// The mission plan.
    pub fn plan(&self) -> &Plan {
        &self.plan
    }

    /// A task by id.
    pub fn task(&self, task_id: TaskId) -> Option<&Task> {
        self.tasks.get(&task_id)
    }

    /// Tasks passing `filter`, in id order.
    pub fn tasks(&self, filter: &TaskFilter) -> Vec<&Task> {
        match filter.node_id {
            // Use the per-node index rather than scanning every task.
            Some(node_id) => self
                .nodes
                .get(&node_id)
                .into_iter()
                .flat_map(|n| n.tasks.iter())
                .filter_map(|id| self.tasks.get(id))
                .filter(|t| filter.matches(t))
                .collect(),
            None => self.tasks.values().filter(|t| filter.matches(t)).collect(),
        }
    }

    /// Number of tasks held (terminal ones included until forgotten).
    pub fn task_count(&self) -> usize {
        self.tasks.len()
    }

    /// Pending tasks whose backoff has elapsed at `now_ms`, highest priority
    /// first, then oldest first: the coordinator's scheduling queue.
    pub fn schedulable_tasks(&self, now_ms: u64) -> Vec<&Task> {
        let mut ready: Vec<&Task> = self
            .tasks
            .values()
            .filter(|t| t.state == TaskState::Pending && t.not_before_ms <= now_ms)
            .collect();
        ready.sort_by(|a, b| b.spec.priority.cmp(&a.spec.priority).then(a.id.cmp(&b.id)));
        ready
    }

    /// A node by id.
    pub fn node(&self, node_id: NodeId) -> Option<&Node> {
        self.nodes.get(&node_id)
    }

    /// Every registered node, in id order.
    pub fn nodes(&self) -> impl Iterator<Item = &Node> + '_ {
        self.nodes.values()
    }

    /// A parameter by name.
    pub fn param(&self, name: &str) -> Option<&Param> {
        self.params.get(name)
    }

    /// Every parameter, in name order.
    pub fn params(&self) -> impl Iterator<Item = &Param> + '_ {
        self.params.values()
    }

    /// Version of the parameter set: bumped by every declaration and change.
    pub fn params_version(&self) -> u64 {
        self.params_version
    }

    /// Recent parameter changes, oldest first (at most
    /// [`limits::PARAM_EVENTS_KEPT`]).
    pub fn param_changes(&self) -> impl Iterator<Item = &ParamChange> + '_ {
        self.param_changes.iter()
    }

    /// Recent parameter changes after `version`, oldest first. If the ring
    /// has dropped some of them the first returned version is above
    /// `version + 1`; the caller should then re-read all parameters.
    pub fn param_changes_since(&self, version: u64) -> impl Iterator<Item = &ParamChange> + '_ {
        self.param_changes.iter().filter(move |c| c.version > version)
    }

    /// Every sensor that has reported, in name order.
    pub fn sensors(&self) -> impl Iterator<Item = (&str, &SensorReport)> + '_ {
        self.sensors.iter().map(|(name, report)| (name.as_str(), report))
    }

    /// A sensor's latest report.
    pub fn sensor(&self, name: &str) -> Option<&SensorReport> {
        self.sensors.get(name)
    }

    /// Degradation policies, sorted by `(sensor, health)`.
    pub fn policies(&self) -> &[DegradationPolicy] {
        &self.policies
    }

    /// The base top speed, m/s, from [`MAX_SPEED_PARAM`].
    pub fn base_max_speed_mps(&self) -> f64 {
        // The parameter is built in and cannot be removed or retyped; if a
        // hand-made snapshot lacks it anyway, 0 is the safe answer: don't drive.
        self.params
            .get(MAX_SPEED_PARAM)
            .and_then(|p| p.value.as_f64())
            .unwrap_or(0.0)
    }

    /// The effective mode and speed limit derived from sensor health and
    /// policies.
    pub fn effective(&self) -> Effective {
        let mut mode = Mode::Normal;
        let mut speed_factor = 1.0_f64;
        let mut causes = Vec::new();
        for (sensor, report) in &self.sensors {
            if report.health == SensorHealth::Ok {
                continue;
            }
            if let Some(policy) = self.policy(sensor, report.health) {
                mode = mode.max(policy.mode);
                speed_factor = speed_factor.min(policy.speed_factor);
                causes.push(Cause {
                    sensor: sensor.clone(),
                    health: report.health,
                    mode: policy.mode,
                });
            }
        }
        if mode == Mode::Stop {
            speed_factor = 0.0;
        }
        Effective {
            mode,
            speed_factor,
            max_speed_mps: self.base_max_speed_mps() * speed_factor,
            causes,
        }
    }

    /// The policy for `(sensor, health)`, if any.
    pub fn policy(&self, sensor: &str, health: SensorHealth) -> Option<&DegradationPolicy> {
        self.policy_index(sensor, health).ok().map(|i| &self.policies[i])
    }

    pub(crate) fn policy_index(&self, sensor: &str, health: SensorHealth) -> Result<usize, usize> {
        self.policies
            .binary_search_by(|p| (p.sensor.as_str(), p.health).cmp(&(sensor, health)))
    }

    /// The epoch the next assignment will get; every lease held is below it.
    pub fn next_epoch(&self) -> Epoch {
        Epoch(self.next_epoch)
    }
}

/// Invariants, checked by the property tests after every command and by
/// [`StateMachine::restore`] on every snapshot.
impl Mission {
    /// Checks every invariant of the state, naming the first one broken.
    ///
    /// - a task holds a lease exactly when it is `Assigned` or `Running`; the
    ///   lease names a registered node that is not `Down` and has every
    ///   capability the task requires; lease epochs are unique and below
    ///   `next_epoch`;
    /// - a cancel request is only pending on a task that holds a lease;
    ///   progress ≤ 100; failed attempts ≤ the policy's maximum;
    /// - a node's `load` is the sum of its tasks' resources and fits its
    ///   budget; its task index lists exactly the tasks leased to it;
    /// - ids are below their counters; collections are within
    ///   [`crate::limits`];
    /// - the plan's status matches its goals; goal ids are unique;
    /// - every parameter's value is admitted by its kind; change events are
    ///   in version order and at most [`limits::PARAM_EVENTS_KEPT`];
    /// - policies are sorted, unique, not for `Ok`, with factors in 0..=1.
    pub fn check_invariants(&self) -> Result<(), String> {
        self.check_tasks_and_nodes()?;
        self.check_plan()?;
        self.check_params()?;
        self.check_health()
    }

    fn check_tasks_and_nodes(&self) -> Result<(), String> {
        if self.tasks.len() > limits::MAX_TASKS || self.nodes.len() > limits::MAX_NODES {
            return Err(format!(
                "{} tasks / {} nodes exceed the limits",
                self.tasks.len(),
                self.nodes.len()
            ));
        }
        let mut epochs = BTreeSet::new();
        let mut load: BTreeMap<NodeId, Resources> = BTreeMap::new();
        let mut index: BTreeMap<NodeId, BTreeSet<TaskId>> = BTreeMap::new();
        for (id, task) in &self.tasks {
            if *id != task.id || id.0 >= self.next_task_id || id.0 == 0 {
                return Err(format!(
                    "task key {id} / id {} / next id {}",
                    task.id, self.next_task_id
                ));
            }
            if task.state.holds_lease() != task.lease.is_some() {
                return Err(format!("task {id} is {} with lease {:?}", task.state, task.lease));
            }
            if task.cancel_requested && !task.state.holds_lease() {
                return Err(format!("task {id} is {} with a cancel request", task.state));
            }
            if task.progress_percent > 100 {
                return Err(format!("task {id} progress {}", task.progress_percent));
            }
            if task.attempts > task.spec.retry.max_attempts {
                return Err(format!(
                    "task {id} has {} attempts, max {}",
                    task.attempts, task.spec.retry.max_attempts
                ));
            }
            let Some(lease) = task.lease else { continue };
            if lease.epoch.0 == 0 || lease.epoch.0 >= self.next_epoch || !epochs.insert(lease.epoch) {
                return Err(format!(
                    "task {id} lease epoch {} (next {}) is zero, too high or shared",
                    lease.epoch, self.next_epoch
                ));
            }
            let Some(node) = self.nodes.get(&lease.node_id) else {
                return Err(format!("task {id} leased to unknown node {}", lease.node_id));
            };
            if node.liveness == Liveness::Down {
                return Err(format!("task {id} leased to down node {}", node.id));
            }
            if let Some(cap) = task
                .spec
                .required_capabilities
                .iter()
                .find(|c| !node.capabilities.contains(*c))
            {
                return Err(format!("task {id} on node {} which lacks {cap:?}", node.id));
            }
            let sum = load.entry(lease.node_id).or_default();
            *sum = sum
                .checked_add(task.spec.resources)
                .ok_or_else(|| format!("load of node {} overflows", lease.node_id))?;
            index.entry(lease.node_id).or_default().insert(*id);
        }
        let no_tasks = BTreeSet::new();
        for (id, node) in &self.nodes {
            if *id != node.id {
                return Err(format!("node key {id} holds node {}", node.id));
            }
            let expected = load.get(id).copied().unwrap_or_default();
            if node.load != expected {
                return Err(format!("node {id} load {:?}, its tasks sum to {expected:?}", node.load));
            }
            if !node.load.fits_within(node.budget) {
                return Err(format!("node {id} load {:?} over budget {:?}", node.load, node.budget));
            }
            if node.tasks != *index.get(id).unwrap_or(&no_tasks) {
                return Err(format!("node {id} task index {:?} is wrong", node.tasks));
            }
        }
        Ok(())
    }

    fn check_plan(&self) -> Result<(), String> {
        let plan = &self.plan;
        if plan.goals.len() > limits::MAX_GOALS {
            return Err(format!("{} goals", plan.goals.len()));
        }
        let mut ids = BTreeSet::new();
        for goal in &plan.goals {
            if goal.id.0 == 0 || goal.id.0 >= self.next_goal_id || !ids.insert(goal.id) {
                return Err(format!(
                    "goal id {} (next {}) zero, too high or repeated",
                    goal.id, self.next_goal_id
                ));
            }
        }
        let pending = plan.goals.iter().any(|g| g.status == GoalStatus::Pending);
        let ok = match plan.status {
            PlanStatus::Empty => plan.version == 0 && plan.goals.is_empty(),
            PlanStatus::Active => plan.version > 0 && pending,
            PlanStatus::Completed => plan.version > 0 && !pending && !plan.goals.is_empty(),
            PlanStatus::Aborted { .. } => plan.version > 0,
        };
        if !ok {
            return Err(format!(
                "plan is {} at version {} with {} goals ({} pending)",
                plan.status,
                plan.version,
                plan.goals.len(),
                if pending { "some" } else { "none" }
            ));
        }
        Ok(())
    }

    fn check_params(&self) -> Result<(), String> {
        if self.params.len() > limits::MAX_PARAMS {
            return Err(format!("{} parameters", self.params.len()));
        }
        for (name, param) in &self.params {
            if *name != param.name {
                return Err(format!("parameter key {name:?} holds {:?}", param.name));
            }
            if !param.kind.admits(&param.value) {
                return Err(format!("parameter {name:?} = {} is not a {}", param.value, param.kind));
            }
            if param.version > self.params_version {
                return Err(format!(
                    "parameter {name:?} version {} > {}",
                    param.version, self.params_version
                ));
            }
        }
        if self.param_changes.len() > limits::PARAM_EVENTS_KEPT {
            return Err(format!("{} change events kept", self.param_changes.len()));
        }
        let mut last = 0;
        for change in &self.param_changes {
            if change.version <= last || change.version > self.params_version {
                return Err(format!("change event version {} after {last}", change.version));
            }
            last = change.version;
        }
        Ok(())
    }

    fn check_health(&self) -> Result<(), String> {
        if self.sensors.len() > limits::MAX_SENSORS || self.policies.len() > limits::MAX_POLICIES {
            return Err(format!(
                "{} sensors / {} policies",
                self.sensors.len(),
                self.policies.len()
            ));
        }
        for pair in self.policies.windows(2) {
            if (pair[0].sensor.as_str(), pair[0].health) >= (pair[1].sensor.as_str(), pair[1].health) {
                return Err(format!("policies unsorted at {:?}/{}", pair[1].sensor, pair[1].health));
            }
        }
        for p in &self.policies {
            if p.health == SensorHealth::Ok || !(0.0..=1.0).contains(&p.speed_factor) {
                return Err(format!("policy {:?}/{} factor {}", p.sensor, p.health, p.speed_factor));
            }
        }
        Ok(())
    }

    /// Recomputes the derived per-node task index from the tasks (it is not
    /// serialised). Loads are serialised and checked against it afterwards.
    pub(crate) fn rebuild_index(&mut self) {
        for node in self.nodes.values_mut() {
            node.tasks.clear();
        }
        for task in self.tasks.values() {
            if let Some(lease) = task.lease {
                if let Some(node) = self.nodes.get_mut(&lease.node_id) {
                    node.tasks.insert(task.id);
                }
            }
        }
    }
}

#[cfg(test)]
mod invariant_tests {
    use super::*;

    /// A state that breaks an invariant is caught by the next apply (debug
    /// and test builds), whatever the command.
    #[test]
    #[cfg(debug_assertions)]
    #[should_panic(expected = "invariant broken after applying")]
    fn apply_checks_the_invariants_in_debug_builds() {
        let mut m = Mission::default();
        let ctx = ApplyCtx {
            index: 1,
            term: 1,
            timestamp_ms: 1_000,
        };
        let created = m.apply(&Command::CreateTask(crate::TaskSpec::new("blink")), &ctx);
        assert!(created.is_ok(), "{created:?}");
        // Corrupt it: the task's id is no longer below the counter.
        m.next_task_id = 1;
        let _ = m.apply(&Command::CancelTask { task_id: TaskId(999) }, &ctx);
    }
}
