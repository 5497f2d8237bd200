//! Telemetry mirroring: a cairn telemetry topic (e.g. `rover.pose`)
//! published on a ROS 2 topic, or a ROS 2 topic published into cairn
//! telemetry, as `std_msgs/String` carrying the JSON.
//!
//! # Why `std_msgs/String` with JSON
//! cairn telemetry payloads are JSON documents of any shape (the
//! well-known topics have schemas, a team's own topics do not); a typed
//! mapping per topic (`rover.pose` → `geometry_msgs/PoseStamped`) would
//! cover only the well-known ones and lose the rest. The JSON text keeps
//! every field, `ros2 topic echo` shows it, and a ROS 2 node parses it
//! with one `json.loads`.
//!
//! To ROS 2, each message is the cairn telemetry message as JSON:
//! `{"topic", "node_id", "seq", "wall_time_ms", "payload"}` (the source
//! node matters: every node may publish `rover.pose`). From ROS 2, the
//! string must be one JSON document; it becomes the payload, published by
//! this node (and forwarded to the other members as any telemetry is).
//! Best effort both ways, as cairn telemetry is: volatile, keep-last.

use std::fmt;
use std::str::FromStr;

/// Which way a mirror copies.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    /// cairn telemetry → ROS 2 topic.
    ToRos,
    /// ROS 2 topic → cairn telemetry.
    FromRos,
}

impl fmt::Display for Direction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Direction::ToRos => "to_ros",
            Direction::FromRos => "from_ros",
        })
    }
}

impl FromStr for Direction {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "to_ros" => Ok(Direction::ToRos),
            "from_ros" => Ok(Direction::FromRos),
            other => Err(format!("direction {other:?} is neither \"to_ros\" nor \"from_ros\"")),
        }
    }
}

/// One mirrored topic.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TelemetryMirror {
    /// The cairn telemetry topic, e.g. `rover.pose`.
    pub topic: String,
    /// The ROS 2 topic: absolute, or relative to the bridge node's
    /// namespace.
    pub ros_topic: String,
    /// Which way.
    pub direction: Direction,
}

impl TelemetryMirror {
    /// The default ROS 2 topic of cairn topic `topic`: `telemetry/` and
    /// the topic with its dots as underscores (ROS 2 names have no dots),
    /// relative to the node's namespace: `rover.pose` →
    /// `telemetry/rover_pose` (`/pi1/telemetry/rover_pose`).
    pub fn default_ros_topic(topic: &str) -> String {
        format!("telemetry/{}", topic.replace(['.', '-'], "_"))
    }
}

/// Messages queued per mirrored ROS 2 topic: the latest few are what a
/// telemetry reader wants; older ones are dropped, as cairn drops them.
pub const MIRROR_DEPTH: usize = 10;

/// Most mirrors one node runs (each a DDS reader or writer and a task).
pub const MAX_MIRRORS: usize = 64;

/// Refuse mirrors that would loop or collide: at most [`MAX_MIRRORS`], a
/// cairn topic mirrored at most once each way, a ROS 2 topic used once,
/// and no topic mirrored both ways (a message would come back as a new
/// one, forever).
pub fn check(mirrors: &[TelemetryMirror]) -> Result<(), String> {
    if mirrors.len() > MAX_MIRRORS {
        return Err(format!("{} mirrors; at most {MAX_MIRRORS}", mirrors.len()));
    }
    for (i, m) in mirrors.iter().enumerate() {
        if m.topic.is_empty() || m.ros_topic.is_empty() {
            return Err("a mirror needs a topic and a ros_topic".to_owned());
        }
        for other in &mirrors[..i] {
            if other.topic == m.topic && other.direction == m.direction {
                return Err(format!("topic {:?} is mirrored {} twice", m.topic, m.direction));
            }
            if other.topic == m.topic {
                return Err(format!(
                    "topic {:?} is mirrored both ways: its messages would come back forever",
                    m.topic
                ));
            }
            if other.ros_topic == m.ros_topic {
                return Err(format!("ros_topic {:?} is used by two mirrors", m.ros_topic));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(topic: &str, ros_topic: &str, direction: Direction) -> TelemetryMirror {
        TelemetryMirror {
            topic: topic.into(),
            ros_topic: ros_topic.into(),
            direction,
        }
    }

    #[test]
    fn default_ros_topics_have_no_dots() {
        assert_eq!(TelemetryMirror::default_ros_topic("rover.pose"), "telemetry/rover_pose");
        assert_eq!(
            TelemetryMirror::default_ros_topic("arm.joint-states"),
            "telemetry/arm_joint_states"
        );
        assert_eq!("to_ros".parse(), Ok(Direction::ToRos));
        assert_eq!("from_ros".parse(), Ok(Direction::FromRos));
        assert!("both".parse::<Direction>().unwrap_err().contains("\"both\""));
    }

    #[test]
    fn loops_and_collisions_are_refused() {
        assert!(check(&[
            m("rover.pose", "a", Direction::ToRos),
            m("arm.cmd", "b", Direction::FromRos)
        ])
        .is_ok());
        let e = check(&[
            m("rover.pose", "a", Direction::ToRos),
            m("rover.pose", "b", Direction::FromRos),
        ])
        .unwrap_err();
        assert!(e.contains("both ways"), "{e}");
        let e = check(&[
            m("rover.pose", "a", Direction::ToRos),
            m("rover.pose", "b", Direction::ToRos),
        ])
        .unwrap_err();
        assert!(e.contains("twice"), "{e}");
        let e = check(&[m("x", "a", Direction::ToRos), m("y", "a", Direction::FromRos)]).unwrap_err();
        assert!(e.contains("used by two"), "{e}");
        assert!(check(&[m("", "a", Direction::ToRos)]).is_err());
    }
}
