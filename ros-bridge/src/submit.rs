//! Submitting from ROS 2: `<node>/submit_task` and `<node>/cancel_task`
//! (`/cairn/submit_task`, `/cairn/cancel_task` by default), so a ROS 2
//! operator tool can create and cancel cairn tasks, and follow them on the
//! latched task board (`<node>/tasks`, see [`crate::state`]).
//!
//! # Why services of a standard type, not an action of our own
//! A `cairn_msgs/action/SubmitTask` action (goal: kind and spec; feedback:
//! state and progress; result: outcome) would be the natural interface,
//! but rclpy and rclcpp load a message type only from a built interface
//! package (generated C type support): every team would have to build and
//! ship a cairn interface package before `ros2 action send_goal` works,
//! and no standard action type carries a task kind (the standard ones are
//! `test_msgs` Fibonacci and NestedMessage, without a string field). So
//! both services use `rcl_interfaces/srv/SetParametersAtomically`, which
//! every ROS 2 installation has (it is how parameters are set): the
//! request is a list of named, typed values, the answer is `successful`
//! and a `reason`. From a shell:
//!
//! ```text
//! ros2 service call /cairn/submit_task rcl_interfaces/srv/SetParametersAtomically \
//!   "{parameters: [{name: kind, value: {type: 4, string_value: navigate}}]}"
//! ```
//!
//! # Mapping
//! `submit_task`'s values, by name ([`parse_submit`]):
//! - `kind` (string, required): the task kind;
//! - `priority` (integer 0..=255, default 0);
//! - `required_capabilities` (string array, default none);
//! - `max_attempts` (integer 1.., default cairn's retry policy);
//! - `goal` (integer ≥ 0, default none): the plan goal it serves.
//!
//! Any other name, a wrong type or a value out of range is refused before
//! anything is written. The answer: `successful=true` and `reason` =
//! `task_id=<id>` once the task is committed and applied, or
//! `successful=false` with the reason (the bridge's, the state machine's,
//! or why the write could not be replicated).
//!
//! `cancel_task` takes one value, `task_id` (integer); it answers once the
//! cancel is committed (a running task ends when its holder acknowledges
//! it, its ROS 2 goal cancelled through the bound action server).
//!
//! Both are replicated writes through cairn's ordinary write path: served
//! on every node, forwarded to the leader, refused without a quorum.

use ros2_client::parameters::raw;
use ros2_client::ParameterValue as RosValue;

use crate::node::TaskRequest;

/// Longest list of values one request may carry: a submit has five
/// names; the bound keeps a hostile request's cost small.
pub const MAX_VALUES: usize = 16;

/// Most capabilities one submit may require (the state machine checks
/// each name; this bounds the work before it).
pub const MAX_CAPABILITIES: usize = 32;

/// The task a `submit_task` request asks for, or why it is refused.
pub fn parse_submit(values: Vec<raw::Parameter>) -> Result<TaskRequest, String> {
    if values.len() > MAX_VALUES {
        return Err(format!("{} values; at most {MAX_VALUES}", values.len()));
    }
    let mut kind = None;
    let mut request = TaskRequest::default();
    for p in values {
        let name = p.name;
        let value = RosValue::from(p.value);
        match (name.as_str(), value) {
            ("kind", RosValue::String(s)) => kind = Some(s),
            ("priority", RosValue::Integer(i)) => {
                request.priority = u8::try_from(i).map_err(|_| format!("priority {i} is not in 0..=255"))?;
            }
            ("required_capabilities", RosValue::StringArray(caps)) => {
                if caps.len() > MAX_CAPABILITIES {
                    return Err(format!(
                        "{} required_capabilities; at most {MAX_CAPABILITIES}",
                        caps.len()
                    ));
                }
                request.required_capabilities = caps;
            }
            ("max_attempts", RosValue::Integer(i)) => {
                let n = u32::try_from(i)
                    .ok()
                    .filter(|n| *n >= 1)
                    .ok_or_else(|| format!("max_attempts {i} is not in 1..={}", u32::MAX))?;
                request.max_attempts = Some(n);
            }
            ("goal", RosValue::Integer(i)) => {
                request.goal = Some(u64::try_from(i).map_err(|_| format!("goal {i} is negative"))?);
            }
            (n @ ("kind" | "priority" | "required_capabilities" | "max_attempts" | "goal"), v) => {
                return Err(format!("{n}: {} is the wrong type ({})", describe(&v), expected(n)));
            }
            (other, _) => {
                return Err(format!(
                "unknown value {other:?} (submit_task takes kind, priority, required_capabilities, max_attempts, goal)"
            ))
            }
        }
    }
    request.kind = kind.ok_or_else(|| "kind (a string) is required".to_owned())?;
    Ok(request)
}

/// The task id a `cancel_task` request names, or why it is refused.
pub fn parse_cancel(values: Vec<raw::Parameter>) -> Result<u64, String> {
    let mut values = values.into_iter();
    match (values.next(), values.next()) {
        (Some(p), None) if p.name == "task_id" => match RosValue::from(p.value) {
            RosValue::Integer(i) => u64::try_from(i).map_err(|_| format!("task_id {i} is negative")),
            v => Err(format!("task_id: {} is the wrong type (an integer)", describe(&v))),
        },
        _ => Err("cancel_task takes one value, task_id (an integer)".to_owned()),
    }
}

/// The answer to a submit that created task `task_id`.
pub fn created(task_id: u64) -> String {
    format!("task_id={task_id}")
}

fn expected(name: &str) -> &'static str {
    match name {
        "kind" => "a string",
        "required_capabilities" => "a string array",
        _ => "an integer",
    }
}

fn describe(v: &RosValue) -> &'static str {
    match v {
        RosValue::NotSet => "not set",
        RosValue::Boolean(_) => "a bool",
        RosValue::Integer(_) => "an integer",
        RosValue::Double(_) => "a double",
        RosValue::String(_) => "a string",
        RosValue::ByteArray(_) => "a byte array",
        RosValue::BooleanArray(_) => "a bool array",
        RosValue::IntegerArray(_) => "an integer array",
        RosValue::DoubleArray(_) => "a double array",
        RosValue::StringArray(_) => "a string array",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(name: &str, value: RosValue) -> raw::Parameter {
        raw::Parameter {
            name: name.to_owned(),
            value: value.into(),
        }
    }

    #[test]
    fn a_submit_maps_its_named_values_to_a_task_request() {
        let r = parse_submit(vec![
            p("kind", RosValue::String("navigate".into())),
            p("priority", RosValue::Integer(7)),
            p(
                "required_capabilities",
                RosValue::StringArray(vec!["drive".into(), "camera".into()]),
            ),
            p("max_attempts", RosValue::Integer(2)),
            p("goal", RosValue::Integer(4)),
        ])
        .unwrap();
        assert_eq!(
            r,
            TaskRequest {
                kind: "navigate".into(),
                priority: 7,
                required_capabilities: vec!["drive".into(), "camera".into()],
                max_attempts: Some(2),
                goal: Some(4),
            }
        );
        let r = parse_submit(vec![p("kind", RosValue::String("fibonacci".into()))]).unwrap();
        assert_eq!(
            (r.priority, r.max_attempts, r.goal, r.required_capabilities.len()),
            (0, None, None, 0)
        );
        assert_eq!(created(17), "task_id=17");
    }

    #[test]
    fn a_bad_submit_is_refused_with_the_offending_name() {
        let refused = |values: Vec<raw::Parameter>| parse_submit(values).unwrap_err();
        assert!(refused(vec![]).contains("kind (a string) is required"));
        assert!(refused(vec![p("kind", RosValue::Integer(1))]).contains("kind: an integer is the wrong type"));
        let e = refused(vec![
            p("kind", RosValue::String("x".into())),
            p("priority", RosValue::Integer(300)),
        ]);
        assert!(e.contains("priority 300 is not in 0..=255"), "{e}");
        let e = refused(vec![
            p("kind", RosValue::String("x".into())),
            p("max_attempts", RosValue::Integer(0)),
        ]);
        assert!(e.contains("max_attempts 0"), "{e}");
        let e = refused(vec![
            p("kind", RosValue::String("x".into())),
            p("colour", RosValue::String("red".into())),
        ]);
        assert!(e.contains("unknown value \"colour\""), "{e}");
        let many = (0..=MAX_VALUES)
            .map(|_| p("kind", RosValue::String("x".into())))
            .collect();
        assert!(refused(many).contains("at most"));
    }

    #[test]
    fn a_cancel_names_one_task() {
        assert_eq!(parse_cancel(vec![p("task_id", RosValue::Integer(9))]), Ok(9));
        assert!(parse_cancel(vec![]).is_err());
        assert!(parse_cancel(vec![p("task_id", RosValue::Integer(-1))])
            .unwrap_err()
            .contains("negative"));
        assert!(parse_cancel(vec![p("task_id", RosValue::String("9".into()))])
            .unwrap_err()
            .contains("wrong type"));
        assert!(parse_cancel(vec![
            p("task_id", RosValue::Integer(1)),
            p("task_id", RosValue::Integer(2))
        ])
        .is_err());
    }
}
