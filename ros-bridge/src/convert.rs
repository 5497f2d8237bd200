//! Pure mappings between cairn's parameters and the `rcl_interfaces`
//! messages. No I/O: unit-tested here, used by [`crate::bridge`].

use cairn_state::Param;
use cairn_state::ParamChange;
use cairn_state::ParamKind;
use cairn_state::ParamValue;
use ros2_client::builtin_interfaces::Time;
use ros2_client::parameters::raw;
use ros2_client::rcl_interfaces::ListParametersResult;
use ros2_client::ParameterValue as RosValue;

/// `rcl_interfaces/srv/ListParameters`' "no depth limit".
pub const DEPTH_RECURSIVE: u64 = 0;

/// ROS 2's separator of parameter namespaces; cairn's dotted names
/// (`drive.max_speed_mps`) use it already.
const SEPARATOR: char = '.';

/// A cairn value as ROS 2 sees it: an enum's choice is a string.
pub fn to_ros(value: &ParamValue) -> raw::ParameterValue {
    let v = match value {
        ParamValue::Bool(b) => RosValue::Boolean(*b),
        ParamValue::Int(i) => RosValue::Integer(*i),
        ParamValue::Float(f) => RosValue::Double(*f),
        ParamValue::String(s) | ParamValue::Enum(s) => RosValue::String(s.clone()),
    };
    v.into()
}

/// The ROS 2 value for a parameter of `kind` (`None`: not declared, so the
/// state machine will refuse it with its own reason). A string for an enum
/// parameter is its choice, and an integer for a float parameter is that
/// float (`ros2 param set p 1` sends an integer). Other mismatches are
/// passed on for the state machine to refuse; values cairn has no type for
/// are refused here.
pub fn from_ros(kind: Option<&ParamKind>, value: raw::ParameterValue) -> Result<ParamValue, String> {
    match (kind, RosValue::from(value)) {
        (_, RosValue::NotSet) => Err("cairn parameters cannot be undeclared".to_owned()),
        (_, RosValue::Boolean(b)) => Ok(ParamValue::Bool(b)),
        (Some(ParamKind::Float { .. }), RosValue::Integer(i)) => Ok(ParamValue::Float(i as f64)),
        (_, RosValue::Integer(i)) => Ok(ParamValue::Int(i)),
        (_, RosValue::Double(f)) => Ok(ParamValue::Float(f)),
        (Some(ParamKind::Enum { .. }), RosValue::String(s)) => Ok(ParamValue::Enum(s)),
        (_, RosValue::String(s)) => Ok(ParamValue::String(s)),
        (_, other) => Err(format!(
            "cairn parameters are bool, int, float, string or enum; not {:?}",
            other.to_parameter_type()
        )),
    }
}

/// The `rcl_interfaces/msg/ParameterDescriptor` of a declared parameter:
/// type, description, bounds (numeric ranges where ROS 2 has a field for
/// them, `additional_constraints` in words for all).
pub fn descriptor(param: &Param) -> raw::ParameterDescriptor {
    let (integer_range, floating_point_range) = match &param.kind {
        ParamKind::Int { min, max } => (
            vec![raw::IntegerRange {
                from_value: *min,
                to_value: *max,
                step: 0,
            }],
            vec![],
        ),
        ParamKind::Float { min, max } => (
            vec![],
            vec![raw::FloatingPointRange {
                from_value: *min,
                to_value: *max,
                step: 0.0,
            }],
        ),
        _ => (vec![], vec![]),
    };
    raw::ParameterDescriptor {
        name: param.name.clone(),
        r#type: to_ros(&param.value).ptype,
        description: param.description.clone(),
        additional_constraints: param.kind.to_string(),
        read_only: false,
        dynamic_typing: false,
        floating_point_range,
        integer_range,
    }
}

/// The descriptor ROS 2 nodes answer for an undeclared name.
pub fn unknown_descriptor(name: &str) -> raw::ParameterDescriptor {
    raw::ParameterDescriptor {
        name: name.to_owned(),
        r#type: raw::ParameterType::NOT_SET,
        description: String::new(),
        additional_constraints: String::new(),
        read_only: false,
        dynamic_typing: false,
        floating_point_range: vec![],
        integer_range: vec![],
    }
}

/// A value of type `NOT_SET`: what `get_parameters` answers for an
/// undeclared name, as rclcpp and rclpy do.
pub fn not_set() -> raw::ParameterValue {
    RosValue::NotSet.into()
}

/// `rcl_interfaces/srv/ListParameters`, as rclpy answers it: the names under
/// any of `prefixes` (all if none) with fewer than `depth` separators below
/// the prefix (any number for [`DEPTH_RECURSIVE`]), and the namespaces of
/// the names listed.
pub fn list<'a>(names: impl IntoIterator<Item = &'a str>, prefixes: &[String], depth: u64) -> ListParametersResult {
    let mut result = ListParametersResult {
        names: Vec::new(),
        prefixes: Vec::new(),
    };
    for name in names {
        let below = if prefixes.is_empty() {
            Some(name)
        } else {
            prefixes.iter().find_map(|p| match name.strip_prefix(p.as_str()) {
                Some("") => Some(""),
                Some(rest) => rest.strip_prefix(SEPARATOR),
                None => None,
            })
        };
        let Some(below) = below else { continue };
        let separators = u64::try_from(below.matches(SEPARATOR).count()).unwrap_or(u64::MAX);
        if depth != DEPTH_RECURSIVE && separators >= depth {
            continue;
        }
        result.names.push(name.to_owned());
        if let Some((namespace, _)) = name.rsplit_once(SEPARATOR) {
            if !result.prefixes.iter().any(|p| p == namespace) {
                result.prefixes.push(namespace.to_owned());
            }
        }
    }
    result
}

/// The `rcl_interfaces/msg/ParameterEvent` for one applied change of node
/// `node` (fully qualified, e.g. `/cairn`): a declaration is a new
/// parameter, a set a changed one; stamped with the leader's timestamp of
/// the entry that made it.
pub fn event(change: &ParamChange, node: &str) -> raw::ParameterEvent {
    let parameter = raw::Parameter {
        name: change.name.clone(),
        value: to_ros(&change.new),
    };
    let millis = i64::try_from(change.timestamp_ms).unwrap_or(i64::MAX);
    let (new_parameters, changed_parameters) = match change.old {
        None => (vec![parameter], vec![]),
        Some(_) => (vec![], vec![parameter]),
    };
    raw::ParameterEvent {
        stamp: Time::from_nanos(millis.saturating_mul(1_000_000)),
        node: node.to_owned(),
        new_parameters,
        changed_parameters,
        deleted_parameters: vec![],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn float_param() -> Param {
        Param {
            name: "drive.max_speed_mps".to_owned(),
            description: "top speed".to_owned(),
            kind: ParamKind::Float { min: 0.0, max: 2.0 },
            value: ParamValue::Float(1.0),
            version: 3,
        }
    }

    #[test]
    fn values_round_trip_through_ros_types() {
        let enum_kind = ParamKind::Enum {
            choices: vec!["gps".to_owned(), "vio".to_owned()],
        };
        let cases = [
            (ParamKind::Bool, ParamValue::Bool(true)),
            (ParamKind::Int { min: -5, max: 5 }, ParamValue::Int(-3)),
            (ParamKind::Float { min: 0.0, max: 2.0 }, ParamValue::Float(0.25)),
            (ParamKind::String { max_len: 8 }, ParamValue::String("abc".to_owned())),
            (enum_kind, ParamValue::Enum("vio".to_owned())),
        ];
        for (kind, value) in cases {
            let ros = to_ros(&value);
            assert_eq!(from_ros(Some(&kind), ros), Ok(value.clone()), "{kind}: {value}");
        }
    }

    #[test]
    fn ros_types_map_to_cairn_types() {
        let float = ParamKind::Float { min: 0.0, max: 2.0 };
        assert_eq!(to_ros(&ParamValue::Float(0.5)).ptype, raw::ParameterType::DOUBLE);
        assert_eq!(
            to_ros(&ParamValue::Enum("a".to_owned())).ptype,
            raw::ParameterType::STRING
        );
        // `ros2 param set p 1` on a float parameter sends an integer.
        assert_eq!(
            from_ros(Some(&float), RosValue::Integer(1).into()),
            Ok(ParamValue::Float(1.0))
        );
        // Undeclared: passed on as is, for the state machine to refuse.
        assert_eq!(
            from_ros(None, RosValue::String("x".to_owned()).into()),
            Ok(ParamValue::String("x".to_owned()))
        );
        assert!(from_ros(Some(&float), not_set()).is_err(), "deletion is refused");
        assert!(
            from_ros(Some(&float), RosValue::DoubleArray(vec![1.0]).into()).is_err(),
            "arrays have no cairn type"
        );
    }

    #[test]
    fn descriptors_carry_type_description_and_bounds() {
        let d = descriptor(&float_param());
        assert_eq!(d.name, "drive.max_speed_mps");
        assert_eq!(d.r#type, raw::ParameterType::DOUBLE);
        assert_eq!(d.description, "top speed");
        assert_eq!(d.additional_constraints, "float in 0..=2");
        assert_eq!(d.floating_point_range.len(), 1);
        assert_eq!(d.floating_point_range[0].to_value, 2.0);
        assert!(d.integer_range.is_empty());
        assert_eq!(unknown_descriptor("x").r#type, raw::ParameterType::NOT_SET);
    }

    #[test]
    fn list_filters_by_prefix_and_depth_like_rclpy() {
        let names = ["arm.grip.force_n", "drive.max_speed_mps", "drive.mode", "top"];
        let all = list(names, &[], DEPTH_RECURSIVE);
        assert_eq!(all.names, names);
        assert_eq!(all.prefixes, ["arm.grip", "drive"]);
        let drive = list(names, &["drive".to_owned()], DEPTH_RECURSIVE);
        assert_eq!(drive.names, ["drive.max_speed_mps", "drive.mode"]);
        let shallow = list(names, &[], 1);
        assert_eq!(shallow.names, ["top"]);
        let arm = list(names, &["arm".to_owned()], 1);
        assert!(arm.names.is_empty(), "{:?}", arm.names);
        let arm = list(names, &["arm".to_owned()], 2);
        assert_eq!(arm.names, ["arm.grip.force_n"]);
        // A prefix matches whole namespace segments only.
        assert!(list(names, &["dri".to_owned()], DEPTH_RECURSIVE).names.is_empty());
    }

    #[test]
    fn events_report_declarations_as_new_and_sets_as_changed() {
        let mut change = ParamChange {
            version: 4,
            name: "drive.max_speed_mps".to_owned(),
            old: None,
            new: ParamValue::Float(1.5),
            index: 12,
            timestamp_ms: 1_700_000_000_123,
        };
        let e = event(&change, "/cairn");
        assert_eq!(e.node, "/cairn");
        assert_eq!(e.new_parameters.len(), 1);
        assert!(e.changed_parameters.is_empty());
        assert_eq!(e.stamp.to_nanos(), 1_700_000_000_123_000_000);
        change.old = Some(ParamValue::Float(1.0));
        let e = event(&change, "/cairn");
        assert!(e.new_parameters.is_empty());
        assert_eq!(e.changed_parameters[0].name, "drive.max_speed_mps");
        assert_eq!(e.changed_parameters[0].value.double_value, 1.5);
    }
}
