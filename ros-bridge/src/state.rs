//! State topics: what a ROS 2 system needs to know of the rover's
//! replicated state, published by every node's bridge, latched
//! (reliable, transient-local, depth 1) so a node that joins late gets the
//! current value at once. Under the bridge node's name, e.g. `/cairn/mode`:
//!
//! | topic | type | what |
//! |---|---|---|
//! | `<node>/mode` | `std_msgs/String` | effective mode: `normal`, `reduced`, `gps-only`, `stop` |
//! | `<node>/max_speed` | `std_msgs/Float64` | effective speed limit, m/s (0 in `stop`) |
//! | `<node>/plan` | `nav_msgs/Path` | the poses of the plan's goals that have one, in order, in the plan's frame |
//! | `<node>/cluster` | `diagnostic_msgs/DiagnosticStatus` | leader, term, members, quorum, failures tolerated, as key/values; level OK, WARN (no leader known), ERROR (no quorum) |
//! | `<node>/tasks` | `std_msgs/String` (JSON) | the task board |
//!
//! The mode is an enumeration with no standard message; `std_msgs/String`
//! carries its name. The task board has no standard type at all, so it is
//! JSON in a `std_msgs/String` (an array of `{id, kind, state, node, epoch,
//! progress}`, unfinished tasks first, at most [`MAX_BOARD_TASKS`]).
//!
//! Each is published when it changes (checked every [`STATE_PERIOD`]), and
//! once at start. The values are this node's applied state: a follower's may
//! lag the leader's by the replication delay.

use std::time::Duration;

use crate::msgs;

/// How often the bridge reads the state for changes.
pub const STATE_PERIOD: Duration = Duration::from_millis(200);

/// Tasks on the board topic at most.
pub const MAX_BOARD_TASKS: usize = 200;

/// The rover's state as one node has applied it: what the topics carry.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RoverState {
    /// Effective mode's name (`normal`, `reduced`, `gps-only`, `stop`).
    pub mode: String,
    /// Effective speed limit, m/s.
    pub max_speed_mps: f64,
    /// The plan.
    pub plan: PlanPoses,
    /// Raft's view from this node.
    pub cluster: ClusterState,
    /// The task board, JSON.
    pub task_board_json: String,
}

/// The poses of a plan.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct PlanPoses {
    /// The plan's frame; empty for no plan (published as `map`).
    pub frame_id: String,
    /// `[x, y, z, yaw]` of each goal that has a single pose, in plan order.
    pub poses: Vec<[f64; 4]>,
}

/// The cluster as this node sees it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ClusterState {
    /// This node.
    pub node_id: u64,
    /// The leader it knows, if any.
    pub leader: Option<u64>,
    /// Raft term.
    pub term: u64,
    /// Voter ids.
    pub voters: Vec<u64>,
    /// Learner ids.
    pub learners: Vec<u64>,
    /// Whether a leader with a quorum is known (leader only knows for sure;
    /// a follower reports whether it hears from one).
    pub quorum: bool,
    /// Failures the cluster tolerates now, if known.
    pub fault_tolerance: Option<u64>,
}

/// `nav_msgs/Path` of a plan.
pub fn path(plan: &PlanPoses) -> msgs::Path {
    let frame_id = if plan.frame_id.is_empty() {
        "map".to_owned()
    } else {
        plan.frame_id.clone()
    };
    let header = msgs::Header {
        stamp: msgs::Time::default(),
        frame_id,
    };
    msgs::Path {
        poses: plan
            .poses
            .iter()
            .map(|[x, y, z, yaw]| msgs::PoseStamped {
                header: header.clone(),
                pose: msgs::Pose {
                    position: msgs::Point { x: *x, y: *y, z: *z },
                    orientation: msgs::Quaternion::from_yaw(*yaw),
                },
            })
            .collect(),
        header,
    }
}

fn ids(ids: &[u64]) -> String {
    ids.iter().map(u64::to_string).collect::<Vec<_>>().join(",")
}

/// `diagnostic_msgs/DiagnosticStatus` of the cluster.
pub fn cluster_status(c: &ClusterState) -> msgs::DiagnosticStatus {
    let (level, message) = match (c.leader, c.quorum) {
        (Some(l), true) => (0, format!("leader {l}, term {}", c.term)),
        (None, _) => (1, format!("no leader known, term {}", c.term)),
        (Some(l), false) => (2, format!("leader {l} without a quorum, term {}", c.term)),
    };
    let kv = |key: &str, value: String| msgs::KeyValue {
        key: key.to_owned(),
        value,
    };
    msgs::DiagnosticStatus {
        level,
        name: "cairn/cluster".to_owned(),
        message,
        hardware_id: format!("cairn-node-{}", c.node_id),
        values: vec![
            kv("node", c.node_id.to_string()),
            kv("leader", c.leader.map(|l| l.to_string()).unwrap_or_default()),
            kv("term", c.term.to_string()),
            kv("voters", ids(&c.voters)),
            kv("learners", ids(&c.learners)),
            kv("quorum", c.quorum.to_string()),
            kv("can_lose", c.fault_tolerance.map(|f| f.to_string()).unwrap_or_default()),
        ],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plan_poses_become_a_path_in_the_plan_frame() {
        let p = path(&PlanPoses {
            frame_id: "odom".into(),
            poses: vec![[1.0, 2.0, 0.5, 0.0], [3.0, 4.0, 0.0, std::f64::consts::PI]],
        });
        assert_eq!(p.header.frame_id, "odom");
        assert_eq!(p.poses.len(), 2);
        assert_eq!(p.poses[0].pose.position, msgs::Point { x: 1.0, y: 2.0, z: 0.5 });
        assert!((p.poses[1].pose.orientation.z - 1.0).abs() < 1e-12);
        assert_eq!(p.poses[1].header.frame_id, "odom");
        assert_eq!(path(&PlanPoses::default()).header.frame_id, "map");
    }

    #[test]
    fn cluster_status_levels_and_values() {
        let mut c = ClusterState {
            node_id: 2,
            leader: Some(1),
            term: 7,
            voters: vec![1, 2, 3],
            learners: vec![],
            quorum: true,
            fault_tolerance: Some(1),
        };
        let s = cluster_status(&c);
        assert_eq!((s.level, s.message.as_str()), (0, "leader 1, term 7"));
        let get = |s: &msgs::DiagnosticStatus, k: &str| s.values.iter().find(|v| v.key == k).map(|v| v.value.clone());
        assert_eq!(get(&s, "voters").as_deref(), Some("1,2,3"));
        assert_eq!(get(&s, "can_lose").as_deref(), Some("1"));
        c.quorum = false;
        assert_eq!(cluster_status(&c).level, 2);
        c.leader = None;
        assert_eq!(cluster_status(&c).level, 1);
        assert_eq!(get(&cluster_status(&c), "leader").as_deref(), Some(""));
    }
}
