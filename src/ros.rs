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
mod enabled;

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
