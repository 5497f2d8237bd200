//! The `[ros]` settings and, with the `ros` feature, the ROS 2 side of a
//! node: [`cairn_ros::RosBridge`] fed by this node's Raft node through
//! [`RaftParams`], this crate's implementation of [`cairn_ros::CairnNode`].

use serde::Deserialize;
use serde::Serialize;

/// `[ros]`: whether this node runs a ROS 2 node, and where. Off by default.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RosSettings {
    /// Run the ROS 2 node (standard parameter services and
    /// `/parameter_events`). Default false. Needs a binary built with the
    /// `ros` feature (on by default).
    #[serde(default)]
    pub enabled: bool,
    /// DDS domain: the `ROS_DOMAIN_ID` of the ROS 2 nodes to talk to.
    /// Default 0, ROS 2's default.
    #[serde(default)]
    pub domain_id: u16,
    /// ROS 2 namespace of the node. Default `/`, so the node is `/cairn`;
    /// give each Pi its own (`/pi1`, …) when several run ROS 2 in one
    /// domain, so a tool can address one of them.
    #[serde(default = "default_namespace")]
    pub namespace: String,
    /// Base name of the node. Default `cairn`.
    #[serde(default = "default_node_name")]
    pub node_name: String,
    /// `[[ros.actions]]`: task kinds this node runs as ROS 2 actions.
    #[serde(default)]
    pub actions: Vec<RosActionSettings>,
    /// `[[ros.lifecycle]]`: task kinds that keep a ROS 2 lifecycle node
    /// active on the node holding the task.
    #[serde(default)]
    pub lifecycle: Vec<RosLifecycleSettings>,
    /// Serve `<node>/submit_task` and `<node>/cancel_task`, so a ROS 2
    /// tool can create and cancel cairn tasks (replicated writes, from any
    /// node). Default true.
    #[serde(default = "default_true")]
    pub submit: bool,
    /// `[[ros.telemetry]]`: cairn telemetry topics mirrored to or from
    /// ROS 2 topics.
    #[serde(default)]
    pub telemetry: Vec<RosTelemetrySettings>,
}

/// `[[ros.telemetry]]`: one cairn telemetry topic mirrored to a ROS 2 topic
/// (`to_ros`) or a ROS 2 topic published into cairn telemetry (`from_ros`),
/// as `std_msgs/String` carrying JSON (see `cairn_ros::mirror`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RosTelemetrySettings {
    /// The cairn telemetry topic, e.g. `rover.pose`.
    pub topic: String,
    /// The ROS 2 topic: absolute, or relative to `namespace`. Default
    /// `telemetry/<topic, dots as underscores>` (`rover.pose` →
    /// `/pi1/telemetry/rover_pose`).
    #[serde(default)]
    pub ros_topic: Option<String>,
    /// `to_ros` (cairn → ROS 2, the default) or `from_ros`.
    #[serde(default = "default_direction")]
    pub direction: String,
}

fn default_direction() -> String {
    "to_ros".into()
}

fn default_true() -> bool {
    true
}

/// `[[ros.lifecycle]]`: one task kind bound to a ROS 2 lifecycle node. The
/// node holding a task of `kind` configures and activates the lifecycle
/// node, keeps it active while it holds the task, and deactivates and
/// cleans it up on a cairn cancel or when it loses the task's permit (see
/// `cairn_ros::lifecycle`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RosLifecycleSettings {
    /// The cairn task kind, e.g. `nav-stack`.
    pub kind: String,
    /// The lifecycle node: relative to `namespace` (`navigation_node` →
    /// `/pi1/navigation_node`, each Pi its own copy) or absolute.
    pub node: String,
    /// How long to wait for its services and for each transition. Default
    /// 5000.
    #[serde(default = "default_lifecycle_timeout_ms")]
    pub timeout_ms: u64,
}

fn default_lifecycle_timeout_ms() -> u64 {
    5_000
}

/// `[[ros.actions]]`: one task kind bound to a ROS 2 action server. The node
/// that holds a task of `kind` sends the goal to the server, reports its
/// feedback as the task's progress and its result as the task's outcome,
/// and cancels the goal on a cairn cancel or when it loses the task's
/// permit (see `cairn_ros::action`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RosActionSettings {
    /// The cairn task kind, e.g. `navigate`.
    pub kind: String,
    /// The action type: `nav2_msgs/action/NavigateToPose` or
    /// `test_msgs/action/Fibonacci`.
    #[serde(rename = "type")]
    pub action_type: String,
    /// The action's name: absolute (`/navigate_to_pose`) or relative to
    /// `namespace` (`navigate_to_pose` → `/pi1/navigate_to_pose`).
    pub name: String,
    /// Prefix of the replicated parameters the goal fields come from
    /// (`<params>.order` for Fibonacci, `<params>.behavior_tree` for
    /// NavigateToPose). Default: the kind.
    #[serde(default)]
    pub params: Option<String>,
    /// `header.frame_id` of the poses sent. Default `map`.
    #[serde(default = "default_frame_id")]
    pub frame_id: String,
    /// How long to wait for the server to be discovered and to answer a
    /// goal before the attempt fails. Default 10000.
    #[serde(default = "default_server_timeout_ms")]
    pub server_timeout_ms: u64,
}

fn default_frame_id() -> String {
    "map".into()
}

fn default_server_timeout_ms() -> u64 {
    10_000
}

fn default_namespace() -> String {
    "/".into()
}

fn default_node_name() -> String {
    "cairn".into()
}

impl Default for RosSettings {
    fn default() -> Self {
        Self {
            enabled: false,
            domain_id: 0,
            namespace: default_namespace(),
            node_name: default_node_name(),
            actions: Vec::new(),
            lifecycle: Vec::new(),
            submit: true,
            telemetry: Vec::new(),
        }
    }
}

impl RosSettings {
    /// Refuse what `[ros]` could not run, naming the key: an unsupported
    /// action type, a kind bound twice, a zero timeout, a mirror that
    /// would loop. Called when the config file is read, so `cairn node
    /// run` stops before anything starts (and any command reading the
    /// file says what is wrong), not only when the ROS 2 node starts.
    pub fn validate(&self) -> Result<(), String> {
        #[cfg(feature = "ros")]
        {
            enabled::bindings(self)?;
            enabled::lifecycle_bindings(self)?;
            enabled::mirrors(self)?;
        }
        Ok(())
    }
}

#[cfg(feature = "ros")]
pub use enabled::action_handlers;
#[cfg(feature = "ros")]
pub use enabled::bindings;
#[cfg(feature = "ros")]
pub use enabled::lifecycle_bindings;
#[cfg(feature = "ros")]
pub use enabled::mirrors;
#[cfg(feature = "ros")]
pub use enabled::start;
#[cfg(feature = "ros")]
pub use enabled::RaftParams;

/// The running ROS 2 node, dropped to stop it.
#[cfg(feature = "ros")]
pub type RosHandle = cairn_ros::RosBridge;
/// Nothing runs without the `ros` feature.
#[cfg(not(feature = "ros"))]
pub type RosHandle = ();

/// Without the `ros` feature, `[ros] enabled = true` is refused at start.
#[cfg(not(feature = "ros"))]
pub fn start(
    settings: &RosSettings,
    _node: std::sync::Arc<cairn_raft::RaftNode<cairn_state::Mission>>,
    _telemetry: crate::telemetry::Telemetry,
) -> Result<Option<RosHandle>, crate::error::Error> {
    if settings.enabled
        || !settings.actions.is_empty()
        || !settings.lifecycle.is_empty()
        || !settings.telemetry.is_empty()
    {
        return Err(crate::error::Error::Config {
            reason: "[ros] needs a binary built with the `ros` feature (on by default)".into(),
        });
    }
    Ok(None)
}

/// Without the `ros` feature no task kind runs as a ROS 2 action.
#[cfg(not(feature = "ros"))]
pub fn action_handlers(
    _ros: &mut Option<RosHandle>,
) -> Vec<(String, std::sync::Arc<dyn cairn_agents::action::ActionHandler>)> {
    Vec::new()
}

#[cfg(feature = "ros")]
mod enabled {
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
        let bridge = cairn_ros::RosBridge::start(&options, Arc::new(cairn))
            .map_err(|e| Error::Config { reason: e.to_string() })?;
        Ok(Some(bridge))
    }
}

#[cfg(all(test, feature = "ros"))]
mod tests {
    use super::*;

    fn parse(toml_text: &str) -> Result<RosSettings, String> {
        toml::from_str::<RosSettings>(toml_text).map_err(|e| e.to_string())
    }

    #[test]
    fn action_bindings_parse_with_defaults_and_are_checked() {
        let s = parse(
            "enabled = true\n[[actions]]\nkind = \"navigate\"\ntype = \"nav2_msgs/action/NavigateToPose\"\nname = \"navigate_to_pose\"\n\
             [[actions]]\nkind = \"fib\"\ntype = \"test_msgs/action/Fibonacci\"\nname = \"/fibonacci\"\nparams = \"demo.fib\"\nserver_timeout_ms = 500\n",
        )
        .unwrap();
        let b = bindings(&s).unwrap();
        assert_eq!(b.len(), 2);
        assert_eq!(
            (b[0].kind.as_str(), b[0].params.as_str(), b[0].frame_id.as_str()),
            ("navigate", "navigate", "map")
        );
        assert_eq!(b[0].action_type, cairn_ros::ActionType::NavigateToPose);
        assert_eq!(b[0].server_timeout, std::time::Duration::from_secs(10));
        assert_eq!(
            (b[1].params.as_str(), b[1].action_name.as_str()),
            ("demo.fib", "/fibonacci")
        );
        assert_eq!(b[1].server_timeout, std::time::Duration::from_millis(500));

        let unknown = parse("[[actions]]\nkind = \"x\"\ntype = \"nav2_msgs/action/Spin\"\nname = \"spin\"\n").unwrap();
        assert!(bindings(&unknown)
            .unwrap_err()
            .contains("unsupported ros 2 action type"));
        let twice = parse(
            "[[actions]]\nkind = \"x\"\ntype = \"test_msgs/action/Fibonacci\"\nname = \"a\"\n\
             [[actions]]\nkind = \"x\"\ntype = \"test_msgs/action/Fibonacci\"\nname = \"b\"\n",
        )
        .unwrap();
        assert!(bindings(&twice).unwrap_err().contains("bound twice"));
        assert!(parse("[[actions]]\nkind = \"x\"\ntype = \"t\"\nname = \"a\"\nfoo = 1\n").is_err());
    }

    #[test]
    fn telemetry_mirrors_parse_with_default_ros_topics_and_are_checked() {
        let s = parse(
            "[[telemetry]]\ntopic = \"rover.pose\"\n\
             [[telemetry]]\ntopic = \"arm.cmd\"\nros_topic = \"/arm/cmd_json\"\ndirection = \"from_ros\"\n",
        )
        .unwrap();
        assert!(s.submit, "submit_task is served by default");
        let m = mirrors(&s).unwrap();
        assert_eq!(
            (m[0].ros_topic.as_str(), m[0].direction),
            ("telemetry/rover_pose", cairn_ros::Direction::ToRos)
        );
        assert_eq!(
            (m[1].ros_topic.as_str(), m[1].direction),
            ("/arm/cmd_json", cairn_ros::Direction::FromRos)
        );
        let looped =
            parse("[[telemetry]]\ntopic = \"a.b\"\n[[telemetry]]\ntopic = \"a.b\"\nros_topic = \"x\"\ndirection = \"from_ros\"\n")
                .unwrap();
        assert!(mirrors(&looped).unwrap_err().contains("both ways"));
        let bad_topic = parse("[[telemetry]]\ntopic = \"\"\n").unwrap();
        assert!(mirrors(&bad_topic).unwrap_err().contains("topic:"));
        assert!(s.validate().is_ok());
        assert!(looped.validate().is_err());
    }

    #[test]
    fn a_ros_submit_becomes_a_task_spec_with_cairn_defaults() {
        let spec = enabled::task_spec(cairn_ros::TaskRequest {
            kind: "navigate".into(),
            priority: 3,
            required_capabilities: vec!["drive".into()],
            max_attempts: Some(5),
            goal: Some(2),
        });
        assert_eq!(
            (spec.kind.as_str(), spec.priority, spec.retry.max_attempts),
            ("navigate", 3, 5)
        );
        assert!(spec.required_capabilities.contains("drive"));
        assert_eq!(spec.goal, Some(cairn_state::GoalId(2)));
        let default = enabled::task_spec(cairn_ros::TaskRequest {
            kind: "x".into(),
            ..Default::default()
        });
        assert_eq!(default.retry, cairn_state::TaskSpec::new("x").retry);
    }

    #[test]
    fn lifecycle_bindings_parse_and_kinds_are_bound_once() {
        let s = parse("[[lifecycle]]\nkind = \"nav-stack\"\nnode = \"navigation_node\"\n").unwrap();
        let b = lifecycle_bindings(&s).unwrap();
        assert_eq!(
            (b[0].kind.as_str(), b[0].node.as_str()),
            ("nav-stack", "navigation_node")
        );
        assert_eq!(b[0].timeout, std::time::Duration::from_secs(5));
        let both = parse(
            "[[actions]]\nkind = \"x\"\ntype = \"test_msgs/action/Fibonacci\"\nname = \"a\"\n\
             [[lifecycle]]\nkind = \"x\"\nnode = \"n\"\n",
        )
        .unwrap();
        assert!(lifecycle_bindings(&both).unwrap_err().contains("bound twice"));
    }
}
