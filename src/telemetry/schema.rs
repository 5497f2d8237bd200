//! Payload schemas of the topics cairn itself publishes and the dashboard
//! draws (`rover.pose`, `rover.perception`, `sim.world`, `node.stats`).
//!
//! Telemetry is data from any node and any token holder, and an operator's
//! page draws it: a number field that holds a string (or an object) is
//! refused at publish, and when forwarded from another node, so what
//! subscribers get has the shape the producers in `rover.rs` and
//! `stats.rs` send. Fields not named here pass unchecked (producers may add
//! fields); other topics are free-form JSON.

use serde_json::Value;

use super::TelemetryError;

/// Longest string in a checked field (a mode or sensor name, a reason).
const MAX_STRING_BYTES: usize = 256;
/// Most obstacles a `sim.world` may list (the world model's own bound is
/// lower; see `cairn_hal::sim`).
const MAX_OBSTACLES: usize = 1024;
/// Most sensors a `rover.perception` may list.
const MAX_SENSORS: usize = 64;

#[derive(Clone, Copy)]
enum Kind {
    /// A finite JSON number.
    Num,
    /// A finite number or null.
    NumOrNull,
    /// A boolean.
    Bool,
    /// A string of at most [`MAX_STRING_BYTES`] or null.
    StrOrNull,
}

/// One field: its name, its kind, and whether it must be present.
type Field = (&'static str, Kind, bool);

const POSE: &[Field] = &[
    ("x_m", Kind::Num, true),
    ("y_m", Kind::Num, true),
    ("heading_rad", Kind::Num, true),
];
const ROVER_POSE: &[Field] = &[
    ("x_m", Kind::Num, true),
    ("y_m", Kind::Num, true),
    ("heading_rad", Kind::Num, true),
    ("speed_mps", Kind::NumOrNull, false),
    ("mode", Kind::StrOrNull, false),
    ("task_id", Kind::NumOrNull, false),
    ("epoch", Kind::NumOrNull, false),
    ("holding", Kind::StrOrNull, false),
    ("distance_m_remaining", Kind::NumOrNull, false),
];
const OBSTACLE: &[Field] = &[
    ("x_m", Kind::Num, true),
    ("y_m", Kind::Num, true),
    ("radius_m", Kind::Num, true),
];
const FENCE: &[Field] = &[
    ("current", Kind::Num, true),
    ("accepted", Kind::Num, true),
    ("rejected", Kind::Num, true),
];
const SIM_WORLD: &[Field] = &[
    ("speed_mps", Kind::NumOrNull, false),
    ("collisions", Kind::Num, true),
    ("estop", Kind::Bool, true),
];
const NODE_STATS: &[Field] = &[
    ("cpu_percent", Kind::NumOrNull, false),
    ("process_cpu_percent", Kind::NumOrNull, false),
    ("rss_mib", Kind::NumOrNull, false),
    ("temperature_c", Kind::NumOrNull, false),
    ("load1", Kind::NumOrNull, false),
    ("uptime_s", Kind::NumOrNull, false),
    ("version", Kind::StrOrNull, false),
];
const PERCEPTION: &[Field] = &[
    ("speed_mps", Kind::NumOrNull, false),
    ("task_id", Kind::NumOrNull, false),
];

/// Whether `topic` has a checked schema.
pub fn is_known(topic: &str) -> bool {
    matches!(topic, "rover.pose" | "rover.perception" | "sim.world" | "node.stats")
}

/// Check `payload` against `topic`'s schema (nothing to check for a topic
/// without one).
pub fn check(topic: &str, payload: &Value) -> Result<(), TelemetryError> {
    let bad = |field: String, reason: String| TelemetryError::InvalidPayload {
        topic: topic.to_owned(),
        field,
        reason,
    };
    match topic {
        "rover.pose" => fields(payload, "", ROVER_POSE).map_err(|(f, r)| bad(f, r)),
        "node.stats" => fields(payload, "", NODE_STATS).map_err(|(f, r)| bad(f, r)),
        "rover.perception" => {
            fields(payload, "", PERCEPTION).map_err(|(f, r)| bad(f, r))?;
            match payload.get("pose") {
                None | Some(Value::Null) => {}
                Some(p) => fields(p, "pose.", POSE).map_err(|(f, r)| bad(f, r))?,
            }
            match payload.get("sensors") {
                None | Some(Value::Null) => Ok(()),
                Some(Value::Object(m)) if m.len() <= MAX_SENSORS => {
                    for (name, v) in m {
                        if name.len() > MAX_STRING_BYTES {
                            return Err(bad("sensors".into(), "a sensor name is too long".into()));
                        }
                        kind(v, Kind::StrOrNull).map_err(|r| bad(format!("sensors.{name}"), r))?;
                    }
                    Ok(())
                }
                Some(_) => Err(bad(
                    "sensors".into(),
                    format!("must be an object of at most {MAX_SENSORS} sensor states"),
                )),
            }
        }
        "sim.world" => {
            fields(payload, "", SIM_WORLD).map_err(|(f, r)| bad(f, r))?;
            let pose = payload
                .get("pose")
                .ok_or_else(|| bad("pose".into(), "is missing".into()))?;
            fields(pose, "pose.", POSE).map_err(|(f, r)| bad(f, r))?;
            let fence = payload
                .get("fence")
                .ok_or_else(|| bad("fence".into(), "is missing".into()))?;
            fields(fence, "fence.", FENCE).map_err(|(f, r)| bad(f, r))?;
            let Some(Value::Array(obstacles)) = payload.get("obstacles") else {
                return Err(bad("obstacles".into(), "must be an array".into()));
            };
            if obstacles.len() > MAX_OBSTACLES {
                return Err(bad("obstacles".into(), format!("more than {MAX_OBSTACLES}")));
            }
            for (i, o) in obstacles.iter().enumerate() {
                let prefix = format!("obstacles[{i}].");
                fields(o, &prefix, OBSTACLE).map_err(|(f, r)| bad(f, r))?;
                if o.get("radius_m").and_then(Value::as_f64).is_some_and(|r| r < 0.0) {
                    return Err(bad(format!("{prefix}radius_m"), "must not be negative".into()));
                }
            }
            Ok(())
        }
        _ => Ok(()),
    }
}

/// Check the named fields of object `v`; the error names the field (with
/// `prefix`) and says why.
fn fields(v: &Value, prefix: &str, spec: &[Field]) -> Result<(), (String, String)> {
    let Value::Object(map) = v else {
        let name = prefix.trim_end_matches('.');
        let name = if name.is_empty() { "payload" } else { name };
        return Err((name.to_owned(), "must be a JSON object".into()));
    };
    for &(name, k, required) in spec {
        match map.get(name) {
            None if required => return Err((format!("{prefix}{name}"), "is missing".into())),
            None => {}
            Some(value) => kind(value, k).map_err(|r| (format!("{prefix}{name}"), r))?,
        }
    }
    Ok(())
}

fn kind(v: &Value, k: Kind) -> Result<(), String> {
    let finite = |v: &Value| v.as_f64().is_some_and(f64::is_finite);
    let ok = match k {
        Kind::Num => finite(v),
        Kind::NumOrNull => v.is_null() || finite(v),
        Kind::Bool => v.is_boolean(),
        Kind::StrOrNull => v.is_null() || v.as_str().is_some_and(|s| s.len() <= MAX_STRING_BYTES),
    };
    if ok {
        return Ok(());
    }
    Err(match k {
        Kind::Num => "must be a finite number".into(),
        Kind::NumOrNull => "must be a finite number or null".into(),
        Kind::Bool => "must be true or false".into(),
        Kind::StrOrNull => format!("must be a string of at most {MAX_STRING_BYTES} bytes, or null"),
    })
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn field(topic: &str, v: Value) -> Option<String> {
        match check(topic, &v) {
            Ok(()) => None,
            Err(TelemetryError::InvalidPayload { field, .. }) => Some(field),
            Err(e) => panic!("unexpected {e}"),
        }
    }

    #[test]
    fn producers_payloads_pass_and_markup_in_number_fields_does_not() {
        let world = json!({
            "pose": {"x_m": 1.0, "y_m": 2.0, "heading_rad": 0.0}, "speed_mps": 0.2,
            "obstacles": [{"x_m": 3.0, "y_m": 1.0, "radius_m": 0.4}],
            "fence": {"current": 3, "accepted": 40, "rejected": 0}, "collisions": 0, "estop": false,
        });
        assert_eq!(field("sim.world", world.clone()), None);
        let mut hostile = world.clone();
        hostile["obstacles"][0]["x_m"] = json!("<text id=\"INJECTED\">FAKE E-STOP</text>");
        assert_eq!(field("sim.world", hostile).as_deref(), Some("obstacles[0].x_m"));
        let mut hostile = world.clone();
        hostile["pose"] = json!("<svg/>");
        assert_eq!(field("sim.world", hostile).as_deref(), Some("pose"));
        let mut hostile = world;
        hostile["obstacles"][0]["radius_m"] = json!(-1.0);
        assert_eq!(field("sim.world", hostile).as_deref(), Some("obstacles[0].radius_m"));

        let pose = json!({"x_m": 0.5, "y_m": 1.0, "heading_rad": 0.1, "speed_mps": 0.4, "mode": "normal",
            "task_id": null, "epoch": 2, "holding": null, "distance_m_remaining": 3.0});
        assert_eq!(field("rover.pose", pose), None);
        assert_eq!(
            field("rover.pose", json!({"x_m": "1", "y_m": 1.0, "heading_rad": 0.0})).as_deref(),
            Some("x_m")
        );
        assert_eq!(field("rover.pose", json!([1, 2])).as_deref(), Some("payload"));
        assert_eq!(
            field(
                "node.stats",
                json!({"cpu_percent": 3.5, "rss_mib": null, "temperature_c": null, "load1": 0.2})
            ),
            None
        );
        assert_eq!(
            field("node.stats", json!({"cpu_percent": "<b>"})).as_deref(),
            Some("cpu_percent")
        );
        assert_eq!(
            field(
                "rover.perception",
                json!({"pose": null, "speed_mps": 0.0, "sensors": {"imu": "ok"}})
            ),
            None
        );
        assert_eq!(field("anything.else", json!("<script>")), None);
        assert!(is_known("sim.world") && !is_known("sim.other"));
    }
}
