//! The ROS 2 side of a node (feature `ros`): [`RaftParams`], this crate's
//! implementation of [`cairn_ros::CairnNode`], and the bridge's start-up.

use std::sync::Arc;
use std::time::Duration;

use cairn_raft::RaftNode;
use cairn_ros::CairnNode;
use cairn_ros::SetParamError;
use cairn_ros::TaskRequest;
use cairn_state::Command;
use cairn_state::GoalKind;
use cairn_state::Mission;
use cairn_state::Param;
use cairn_state::ParamChange;
use cairn_state::ParamValue;
use cairn_state::Response;
use cairn_state::Task;
use cairn_state::TaskFilter;
use cairn_state::TaskId;
use cairn_state::TaskSpec;
use futures::stream::BoxStream;
use futures::StreamExt;

use super::RosSettings;
use crate::error::Error;
use crate::telemetry::Telemetry;
use crate::telemetry::TopicFilter;

/// Pause before following the log again after the watch failed (this
/// node fell so far behind that its log was compacted, or it stops):
/// long enough not to spin, short next to a human's patience.
const REWATCH_DELAY_MS: u64 = 500;

/// [`CairnNode`] on a Raft node: reads are local, sets, task submits
/// and cancels are replicated writes (forwarded to the leader), changes
/// come from the watch of applied entries; telemetry from and to this
/// node's hub.
pub struct RaftParams {
    node: Arc<RaftNode<Mission>>,
    telemetry: Option<Telemetry>,
}

impl RaftParams {
    /// The parameters and tasks of `node`, without telemetry.
    pub fn new(node: Arc<RaftNode<Mission>>) -> Self {
        Self { node, telemetry: None }
    }

    /// With `telemetry`, the hub mirrored topics come from and go to.
    pub fn with_telemetry(mut self, telemetry: Telemetry) -> Self {
        self.telemetry = Some(telemetry);
        self
    }

    /// One replicated write; the state machine's refusal or the Raft
    /// layer's error as a [`SetParamError`].
    async fn write(&self, command: Command) -> Result<(u64, Response), SetParamError> {
        let out = self
            .node
            .write(command)
            .await
            .map_err(|e| SetParamError::Unavailable { reason: e.to_string() })?;
        match out.response {
            Ok(response) => Ok((out.index, response)),
            Err(refusal) => Err(SetParamError::Refused {
                reason: refusal.to_string(),
            }),
        }
    }
}

/// The task spec of a ROS 2 submit: cairn's defaults but for what the
/// request gave.
pub(super) fn task_spec(request: TaskRequest) -> TaskSpec {
    let mut spec = TaskSpec::new(request.kind);
    spec.priority = request.priority;
    spec.required_capabilities = request.required_capabilities.into_iter().collect();
    if let Some(n) = request.max_attempts {
        spec.retry.max_attempts = n;
    }
    spec.goal = request.goal.map(cairn_state::GoalId);
    spec
}

impl CairnNode for RaftParams {
    fn params(&self) -> Vec<Param> {
        self.node.local_state(|m| m.params().cloned().collect())
    }

    async fn set_param(&self, name: String, value: ParamValue) -> Result<u64, SetParamError> {
        let out = self
            .node
            .write(Command::SetParam { name, value })
            .await
            .map_err(|e| SetParamError::Unavailable { reason: e.to_string() })?;
        match out.response {
            Ok(Response::ParamChanged { version, .. }) => Ok(version),
            Ok(other) => Err(SetParamError::Unavailable {
                reason: format!("SetParam at index {} answered {other:?}", out.index),
            }),
            Err(refusal) => Err(SetParamError::Refused {
                reason: refusal.to_string(),
            }),
        }
    }

    fn state(&self) -> Option<cairn_ros::RoverState> {
        let status = self.node.status();
        let (mode, max_speed_mps, plan, task_board_json) = self.node.local_state(|m| {
            let effective = m.effective();
            let plan = m.plan();
            let poses = plan
                .goals
                .iter()
                .filter_map(|g| match &g.kind {
                    GoalKind::Waypoint { pose }
                    | GoalKind::PickUp { pose, .. }
                    | GoalKind::Deliver { pose, .. }
                    | GoalKind::ScienceSample { pose, .. } => {
                        Some([pose.position.x, pose.position.y, pose.position.z, pose.heading_rad])
                    }
                    GoalKind::SearchArea { .. } => None,
                })
                .collect();
            (
                effective.mode.to_string(),
                effective.max_speed_mps,
                cairn_ros::PlanPoses {
                    frame_id: plan.frame_id.clone(),
                    poses,
                },
                task_board(m),
            )
        });
        Some(cairn_ros::RoverState {
            mode,
            max_speed_mps,
            plan,
            cluster: cairn_ros::ClusterState {
                node_id: status.id,
                leader: status.leader,
                term: status.term,
                voters: status.members.iter().filter(|m| m.voter).map(|m| m.id).collect(),
                learners: status.members.iter().filter(|m| !m.voter).map(|m| m.id).collect(),
                quorum: status.quorum,
                fault_tolerance: status.fault_tolerance,
            },
            task_board_json,
        })
    }

    async fn submit_task(&self, request: TaskRequest) -> Result<u64, SetParamError> {
        match self.write(Command::CreateTask(task_spec(request))).await? {
            (_, Response::TaskCreated { task_id }) => Ok(task_id.0),
            (index, other) => Err(SetParamError::Unavailable {
                reason: format!("CreateTask at index {index} answered {other:?}"),
            }),
        }
    }

    async fn cancel_task(&self, task_id: u64) -> Result<(), SetParamError> {
        self.write(Command::CancelTask {
            task_id: TaskId(task_id),
        })
        .await
        .map(|_| ())
    }

    fn telemetry(&self, topics: Vec<String>) -> BoxStream<'static, (String, String)> {
        let Some(hub) = &self.telemetry else {
            return futures::stream::empty().boxed();
        };
        let subscription = match TopicFilter::new(topics, Vec::<String>::new()).and_then(|f| hub.subscribe(f)) {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "telemetry mirror to ros 2 could not subscribe");
                return futures::stream::empty().boxed();
            }
        };
        futures::stream::unfold(subscription, |mut s| async move {
            let msg = s.recv().await?;
            Some((msg, s))
        })
        .filter_map(|msg| {
            futures::future::ready(match serde_json::to_string(&*msg) {
                Ok(json) => Some((msg.topic.clone(), json)),
                Err(e) => {
                    tracing::debug!(topic = %msg.topic, error = %e, "telemetry message not serializable");
                    None
                }
            })
        })
        .boxed()
    }

    fn publish_telemetry(&self, topic: &str, json: &str) -> Result<(), String> {
        let hub = self.telemetry.as_ref().ok_or("this node has no telemetry hub")?;
        let payload: serde_json::Value = serde_json::from_str(json).map_err(|e| format!("not JSON: {e}"))?;
        hub.publish(topic, payload).map_err(|e| e.to_string())
    }

    fn param_changes(&self) -> BoxStream<'static, ParamChange> {
        let node = self.node.clone();
        let from = node.status().applied_index.unwrap_or(0) + 1;
        let watch = node.watch(from).ok();
        // Per applied entry: the parameter change it made, if any.
        futures::stream::unfold((node, watch), |(node, mut watch)| async move {
            loop {
                let Some(w) = watch.as_mut() else {
                    tokio::time::sleep(Duration::from_millis(REWATCH_DELAY_MS)).await;
                    let from = node.status().applied_index.unwrap_or(0) + 1;
                    watch = node.watch(from).ok();
                    continue;
                };
                match w.next().await {
                    Ok(change) => {
                        let Some(Ok(Response::ParamChanged { version, .. })) = change.response else {
                            continue;
                        };
                        let found = node.local_state(|m| m.param_changes().find(|c| c.version == version).cloned());
                        if let Some(found) = found {
                            return Some((Some(found), (node, watch)));
                        }
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "parameter watch for ros 2 failed; following again from now");
                        watch = None;
                    }
                }
            }
        })
        .filter_map(futures::future::ready)
        .boxed()
    }
}

/// The task board as JSON: unfinished tasks first (by id), then the
/// latest finished ones, at most [`cairn_ros::state::MAX_BOARD_TASKS`].
pub(super) fn task_board(m: &Mission) -> String {
    let tasks = m.tasks(&TaskFilter::default());
    let (mut open, mut done): (Vec<&Task>, Vec<&Task>) = tasks.into_iter().partition(|t| !t.state.is_terminal());
    done.reverse();
    open.extend(done);
    let board: Vec<serde_json::Value> = open
        .into_iter()
        .take(cairn_ros::state::MAX_BOARD_TASKS)
        .map(|t| {
            serde_json::json!({
                "id": t.id.0,
                "kind": t.spec.kind,
                "state": t.state.to_string(),
                "node": t.lease.map(|l| l.node_id.0),
                "epoch": t.lease.map(|l| l.epoch.0),
                "progress": t.progress_percent,
            })
        })
        .collect();
    serde_json::Value::Array(board).to_string()
}

/// The `[[ros.actions]]` bindings, checked: a supported type, a kind
/// bound once, a timeout above zero.
pub fn bindings(settings: &RosSettings) -> Result<Vec<cairn_ros::ActionBinding>, String> {
    let mut out: Vec<cairn_ros::ActionBinding> = Vec::new();
    for a in &settings.actions {
        let at = |what: String| format!("[[ros.actions]] kind {:?}: {what}", a.kind);
        if a.kind.is_empty() {
            return Err("[[ros.actions]]: kind is empty".to_owned());
        }
        if out.iter().any(|b| b.kind == a.kind) {
            return Err(at("bound twice".to_owned()));
        }
        let action_type = a
            .action_type
            .parse::<cairn_ros::ActionType>()
            .map_err(|e| at(format!("type: {e}")))?;
        if a.server_timeout_ms == 0 {
            return Err(at("server_timeout_ms must be above 0".to_owned()));
        }
        let mut b = cairn_ros::ActionBinding::new(a.kind.clone(), action_type, a.name.clone());
        if let Some(p) = &a.params {
            b.params = p.clone();
        }
        b.frame_id = a.frame_id.clone();
        b.server_timeout = Duration::from_millis(a.server_timeout_ms);
        out.push(b);
    }
    Ok(out)
}

/// The `[[ros.lifecycle]]` bindings, checked: a kind bound once (here
/// and in `[[ros.actions]]`), a timeout above zero.
pub fn lifecycle_bindings(settings: &RosSettings) -> Result<Vec<cairn_ros::LifecycleBinding>, String> {
    let mut out: Vec<cairn_ros::LifecycleBinding> = Vec::new();
    for l in &settings.lifecycle {
        let at = |what: &str| format!("[[ros.lifecycle]] kind {:?}: {what}", l.kind);
        if l.kind.is_empty() {
            return Err("[[ros.lifecycle]]: kind is empty".to_owned());
        }
        if out.iter().any(|b| b.kind == l.kind) || settings.actions.iter().any(|a| a.kind == l.kind) {
            return Err(at("bound twice"));
        }
        if l.timeout_ms == 0 {
            return Err(at("timeout_ms must be above 0"));
        }
        out.push(cairn_ros::LifecycleBinding {
            kind: l.kind.clone(),
            node: l.node.clone(),
            timeout: Duration::from_millis(l.timeout_ms),
        });
    }
    Ok(out)
}

/// The `[[ros.telemetry]]` mirrors, checked: a known direction, a
/// valid cairn topic, no loop (see `cairn_ros::mirror::check`).
pub fn mirrors(settings: &RosSettings) -> Result<Vec<cairn_ros::TelemetryMirror>, String> {
    let mut out = Vec::new();
    for t in &settings.telemetry {
        let at = |what: String| format!("[[ros.telemetry]] topic {:?}: {what}", t.topic);
        crate::telemetry::validate_topic(&t.topic).map_err(|e| at(format!("topic: {e}")))?;
        let direction = t
            .direction
            .parse::<cairn_ros::Direction>()
            .map_err(|e| at(format!("direction: {e}")))?;
        out.push(cairn_ros::TelemetryMirror {
            topic: t.topic.clone(),
            ros_topic: t
                .ros_topic
                .clone()
                .unwrap_or_else(|| cairn_ros::TelemetryMirror::default_ros_topic(&t.topic)),
            direction,
        });
    }
    cairn_ros::mirror::check(&out).map_err(|e| format!("[[ros.telemetry]]: {e}"))?;
    Ok(out)
}

/// The handlers of the task kinds bound to ROS 2 actions, to register
/// with this node's agent (none if the ROS 2 node does not run).
pub fn action_handlers(
    ros: &mut Option<cairn_ros::RosBridge>,
) -> Vec<(String, Arc<dyn cairn_agents::action::ActionHandler>)> {
    ros.as_mut().map(|r| r.take_action_handlers()).unwrap_or_default()
}

/// Start the ROS 2 node if `[ros] enabled`.
pub fn start(
    settings: &RosSettings,
    node: Arc<RaftNode<Mission>>,
    telemetry: Telemetry,
) -> Result<Option<cairn_ros::RosBridge>, Error> {
    if !settings.enabled {
        if !settings.actions.is_empty() || !settings.lifecycle.is_empty() || !settings.telemetry.is_empty() {
            return Err(Error::Config {
                reason: "[[ros.actions]], [[ros.lifecycle]] and [[ros.telemetry]] need [ros] enabled = true".into(),
            });
        }
        return Ok(None);
    }
    let options = cairn_ros::RosOptions {
        domain_id: settings.domain_id,
        namespace: settings.namespace.clone(),
        node_name: settings.node_name.clone(),
        actions: bindings(settings).map_err(|reason| Error::Config { reason })?,
        lifecycle: lifecycle_bindings(settings).map_err(|reason| Error::Config { reason })?,
        submit: settings.submit,
        telemetry: mirrors(settings).map_err(|reason| Error::Config { reason })?,
    };
    let cairn = RaftParams::new(node).with_telemetry(telemetry);
    let bridge =
        cairn_ros::RosBridge::start(&options, Arc::new(cairn)).map_err(|e| Error::Config { reason: e.to_string() })?;
    Ok(Some(bridge))
}
