//! Rust types for the ROS 2 actions cairn tasks can be bound to, laid out
//! field for field as the ROS 2 IDL defines them, so their CDR encoding
//! (what ros2-client puts on the wire) is the one rclpy and rclcpp read.
//!
//! - `test_msgs/action/Fibonacci`: the ROS 2 test action (goal `order`,
//!   result and feedback `sequence`).
//! - `nav2_msgs/action/NavigateToPose`, as Nav2 defines it since Jazzy
//!   (Kilted included): goal `pose` and `behavior_tree`, result
//!   `error_code` and `error_msg`, feedback `current_pose`, times,
//!   recoveries and `distance_remaining`. Humble's result (`std_msgs/Empty`)
//!   has another layout and is not supported.
//!
//! The tests pin the byte layout against bytes produced by rclpy's
//! `serialize_message` (Kilted wheels) where a wheel exists, and against
//! hand-computed CDR otherwise.

use serde::Deserialize;
use serde::Serialize;

/// `builtin_interfaces/Time`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Time {
    /// Seconds since the Unix epoch.
    pub sec: i32,
    /// Nanoseconds, 0..1e9.
    pub nanosec: u32,
}

/// `builtin_interfaces/Duration`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Duration {
    /// Seconds.
    pub sec: i32,
    /// Nanoseconds, 0..1e9.
    pub nanosec: u32,
}

impl Duration {
    /// As milliseconds, negative durations as 0.
    pub fn as_millis(&self) -> u64 {
        let sec = u64::try_from(self.sec).unwrap_or(0);
        sec.saturating_mul(1000)
            .saturating_add(u64::from(self.nanosec / 1_000_000))
    }
}

/// `std_msgs/Header`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Header {
    /// Time stamp.
    pub stamp: Time,
    /// Frame the data is in, e.g. `map`.
    pub frame_id: String,
}

/// `geometry_msgs/Point`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Point {
    /// Metres.
    pub x: f64,
    /// Metres.
    pub y: f64,
    /// Metres.
    pub z: f64,
}

/// `geometry_msgs/Quaternion`.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Quaternion {
    /// x.
    pub x: f64,
    /// y.
    pub y: f64,
    /// z.
    pub z: f64,
    /// w.
    pub w: f64,
}

impl Default for Quaternion {
    /// The identity rotation (ROS 2's default is all zeros, which is not a
    /// rotation; cairn never sends that).
    fn default() -> Self {
        Self {
            x: 0.0,
            y: 0.0,
            z: 0.0,
            w: 1.0,
        }
    }
}

impl Quaternion {
    /// A rotation of `yaw` radians about z.
    pub fn from_yaw(yaw: f64) -> Self {
        let half = yaw / 2.0;
        Self {
            x: 0.0,
            y: 0.0,
            z: half.sin(),
            w: half.cos(),
        }
    }
}

/// `geometry_msgs/Pose`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Pose {
    /// Position.
    pub position: Point,
    /// Orientation.
    pub orientation: Quaternion,
}

/// `geometry_msgs/PoseStamped`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct PoseStamped {
    /// Frame and time.
    pub header: Header,
    /// The pose.
    pub pose: Pose,
}

/// `test_msgs/action/Fibonacci` goal.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FibonacciGoal {
    /// How many numbers after the first.
    pub order: i32,
}

/// `test_msgs/action/Fibonacci` result and feedback (both `int32[] sequence`).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct FibonacciSequence {
    /// The sequence so far (feedback) or in full (result).
    pub sequence: Vec<i32>,
}

/// `nav2_msgs/action/NavigateToPose` goal.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct NavigateToPoseGoal {
    /// Where to go.
    pub pose: PoseStamped,
    /// Behaviour tree file; empty for the navigator's default.
    pub behavior_tree: String,
}

/// `nav2_msgs/action/NavigateToPose` result (Jazzy and later).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct NavigateToPoseResult {
    /// 0 (`NONE`) on success; 9000.. for Nav2's errors.
    pub error_code: u16,
    /// What went wrong, if anything.
    pub error_msg: String,
}

/// `nav2_msgs/action/NavigateToPose` feedback.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct NavigateToPoseFeedback {
    /// Where the robot is.
    pub current_pose: PoseStamped,
    /// Time navigating so far.
    pub navigation_time: Duration,
    /// Expected time left.
    pub estimated_time_remaining: Duration,
    /// Recoveries so far.
    pub number_of_recoveries: i16,
    /// Metres left.
    pub distance_remaining: f32,
}

/// `std_msgs/String`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct StdString {
    /// The text.
    pub data: String,
}

/// `std_msgs/Float64`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Float64 {
    /// The value.
    pub data: f64,
}

/// `nav_msgs/Path`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Path {
    /// Frame and time.
    pub header: Header,
    /// The poses, in order.
    pub poses: Vec<PoseStamped>,
}

/// `diagnostic_msgs/KeyValue`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct KeyValue {
    /// Key.
    pub key: String,
    /// Value.
    pub value: String,
}

/// `diagnostic_msgs/DiagnosticStatus`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct DiagnosticStatus {
    /// `OK` 0, `WARN` 1, `ERROR` 2, `STALE` 3.
    pub level: u8,
    /// What is diagnosed.
    pub name: String,
    /// In words.
    pub message: String,
    /// Which hardware.
    pub hardware_id: String,
    /// Details.
    pub values: Vec<KeyValue>,
}

macro_rules! message {
    ($($t:ty),*) => { $(impl ros2_client::Message for $t {})* };
}
message!(
    FibonacciGoal,
    FibonacciSequence,
    NavigateToPoseGoal,
    NavigateToPoseResult,
    NavigateToPoseFeedback,
    StdString,
    Float64,
    Path,
    KeyValue,
    DiagnosticStatus
);

#[cfg(test)]
mod tests {
    use super::*;
    use byteorder::LittleEndian;
    use ros2_client::action::SendGoalRequest;
    use ros2_client::unique_identifier_msgs::UUID;

    fn cdr<T: Serialize>(value: &T) -> Vec<u8> {
        cdr_encoding::to_vec::<T, LittleEndian>(value).expect("serializable")
    }

    fn back<T: for<'de> Deserialize<'de>>(bytes: &[u8]) -> T {
        cdr_encoding::from_bytes::<T, LittleEndian>(bytes).expect("decodable").0
    }

    fn hex(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex"))
            .collect()
    }

    /// rclpy's `serialize_message` output starts with the 4-byte CDR
    /// encapsulation header (`00 01 00 00`, little endian) that RustDDS adds
    /// itself; the body follows.
    fn rclpy_body(s: &str) -> Vec<u8> {
        let all = hex(s);
        assert_eq!(&all[..4], &[0, 1, 0, 0]);
        all[4..].to_vec()
    }

    #[test]
    fn fibonacci_send_goal_request_matches_rclpy() {
        // rclpy: Fibonacci.Impl.SendGoalService.Request(goal_id.uuid=0..16, goal.order=5)
        let want = rclpy_body("00010000000102030405060708090a0b0c0d0e0f05000000");
        let uuid = UUID {
            uuid: uuid::Uuid::from_bytes(core::array::from_fn(|i| i as u8)),
        };
        let req = SendGoalRequest {
            goal_id: uuid,
            goal: FibonacciGoal { order: 5 },
        };
        assert_eq!(cdr(&req), want);
        let got: SendGoalRequest<FibonacciGoal> = back(&want);
        assert_eq!(got.goal, FibonacciGoal { order: 5 });
        assert_eq!(got.goal_id, uuid);
    }

    #[test]
    fn fibonacci_feedback_matches_rclpy() {
        // rclpy: Fibonacci.Feedback(sequence=[0, 1, 1])
        let want = rclpy_body("0001000003000000000000000100000001000000");
        let fb = FibonacciSequence {
            sequence: vec![0, 1, 1],
        };
        assert_eq!(cdr(&fb), want);
        assert_eq!(back::<FibonacciSequence>(&want), fb);
    }

    fn pose_stamped() -> PoseStamped {
        PoseStamped {
            header: Header {
                stamp: Time { sec: 1, nanosec: 2 },
                frame_id: "map".into(),
            },
            pose: Pose {
                position: Point {
                    x: 1.5,
                    y: -2.0,
                    z: 0.0,
                },
                orientation: Quaternion {
                    x: 0.0,
                    y: 0.0,
                    z: 0.5,
                    w: 0.75,
                },
            },
        }
    }

    // rclpy: PoseStamped(stamp 1 s 2 ns, frame "map", x 1.5, y -2, qz 0.5, qw 0.75)
    const POSE_STAMPED_RCLPY: &str = "000100000100000002000000040000006d617000000000000000f83f00000000000000c0000000000000000000000000000000000000000000000000000000000000e03f000000000000e83f";

    #[test]
    fn pose_stamped_matches_rclpy() {
        let want = rclpy_body(POSE_STAMPED_RCLPY);
        assert_eq!(want.len(), 72, "header 16 bytes, then 7 aligned f64");
        assert_eq!(cdr(&pose_stamped()), want);
        assert_eq!(back::<PoseStamped>(&want), pose_stamped());
    }

    #[test]
    fn navigate_to_pose_goal_layout() {
        // PoseStamped as rclpy lays it out, then `string behavior_tree`:
        // u32 length including the NUL, the bytes, the NUL.
        let mut want = rclpy_body(POSE_STAMPED_RCLPY);
        want.extend_from_slice(&[8, 0, 0, 0]);
        want.extend_from_slice(b"nav.xml\0");
        let goal = NavigateToPoseGoal {
            pose: pose_stamped(),
            behavior_tree: "nav.xml".into(),
        };
        assert_eq!(cdr(&goal), want);
        assert_eq!(back::<NavigateToPoseGoal>(&want), goal);

        // In a SendGoal request the goal follows the 16-byte goal id; the
        // f64s stay 8-aligned from the start of the body (16 + 16 = 32).
        let req = SendGoalRequest {
            goal_id: UUID {
                uuid: uuid::Uuid::nil(),
            },
            goal: goal.clone(),
        };
        let bytes = cdr(&req);
        assert_eq!(&bytes[..16], &[0u8; 16]);
        assert_eq!(&bytes[16..], &want[..]);
    }

    #[test]
    fn navigate_to_pose_result_layout() {
        // uint16 error_code, 2 bytes of padding, then the string.
        let result = NavigateToPoseResult {
            error_code: 9002,
            error_msg: "tf".into(),
        };
        let want = [0x2a, 0x23, 0, 0, 3, 0, 0, 0, b't', b'f', 0];
        assert_eq!(cdr(&result), want);
        assert_eq!(back::<NavigateToPoseResult>(&want), result);
    }

    #[test]
    fn navigate_to_pose_feedback_layout() {
        let fb = NavigateToPoseFeedback {
            current_pose: pose_stamped(),
            navigation_time: Duration { sec: 3, nanosec: 4 },
            estimated_time_remaining: Duration { sec: 5, nanosec: 6 },
            number_of_recoveries: 7,
            distance_remaining: 2.5,
        };
        let mut want = rclpy_body(POSE_STAMPED_RCLPY);
        for v in [3u32, 4, 5, 6] {
            want.extend_from_slice(&v.to_le_bytes());
        }
        // int16, 2 bytes of padding, float32.
        want.extend_from_slice(&[7, 0, 0, 0]);
        want.extend_from_slice(&2.5f32.to_le_bytes());
        assert_eq!(cdr(&fb), want);
        assert_eq!(back::<NavigateToPoseFeedback>(&want), fb);
        assert_eq!(fb.estimated_time_remaining.as_millis(), 5000);
    }

    #[test]
    fn state_message_layouts() {
        assert_eq!(cdr(&StdString { data: "stop".into() }), b"\x05\0\0\0stop\0");
        assert_eq!(cdr(&Float64 { data: 1.5 }), 1.5f64.to_le_bytes());
        // nav_msgs/Path: header, then a u32 count and the PoseStamped (each
        // 8-aligned from the start of the body).
        let path = Path {
            header: Header {
                stamp: Time::default(),
                frame_id: "m".into(),
            },
            poses: vec![pose_stamped()],
        };
        // Stamp (8), frame_id "m" (length 2, "m", NUL, 2 of padding), count.
        let mut want = vec![0u8; 8];
        want.extend_from_slice(&[2, 0, 0, 0, b'm', 0, 0, 0]);
        want.extend_from_slice(&[1, 0, 0, 0]);
        let pose = rclpy_body(POSE_STAMPED_RCLPY);
        // The pose's header (16 bytes) starts at 20; its f64s then need 8
        // alignment: 20 + 16 = 36 -> 4 bytes of padding.
        want.extend_from_slice(&pose[..16]);
        want.extend_from_slice(&[0; 4]);
        want.extend_from_slice(&pose[16..]);
        assert_eq!(cdr(&path), want);
        assert_eq!(back::<Path>(&want), path);
        // diagnostic_msgs/DiagnosticStatus: a byte, padding, strings, a
        // sequence of key/value string pairs.
        let status = DiagnosticStatus {
            level: 1,
            name: "n".into(),
            message: "".into(),
            hardware_id: "".into(),
            values: vec![KeyValue {
                key: "k".into(),
                value: "v".into(),
            }],
        };
        let want = [
            1, 0, 0, 0, 2, 0, 0, 0, b'n', 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 2, 0, 0,
            0, b'k', 0, 0, 0, 2, 0, 0, 0, b'v', 0,
        ];
        assert_eq!(cdr(&status), want);
        assert_eq!(back::<DiagnosticStatus>(&want), status);
    }

    #[test]
    fn yaw_quaternion() {
        let q = Quaternion::from_yaw(std::f64::consts::PI);
        assert!((q.z - 1.0).abs() < 1e-12 && q.w.abs() < 1e-12);
        assert_eq!(Quaternion::from_yaw(0.0), Quaternion::default());
    }
}
