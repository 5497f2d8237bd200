//! Shape checks on command inputs, independent of the current state.
//!
//! Run before any mutation; together with the state checks in `apply` they
//! make every handler validate-then-mutate.

use std::collections::BTreeSet;

use crate::error::CommandError;
use crate::error::Limit;
use crate::health::DegradationPolicy;
use crate::health::SensorHealth;
use crate::limits;
use crate::node::NodeSpec;
use crate::param::ParamKind;
use crate::plan::GoalKind;
use crate::plan::GoalSpec;
use crate::plan::Pose;
use crate::task::Feedback;
use crate::task::TaskSpec;

pub(crate) fn name(field: &str, value: &str) -> Result<(), CommandError> {
    if value.is_empty() {
        return Err(CommandError::Empty {
            field: field.to_owned(),
        });
    }
    max_len(field, value, limits::MAX_NAME_LEN)
}

pub(crate) fn text(field: &str, value: &str) -> Result<(), CommandError> {
    max_len(field, value, limits::MAX_TEXT_LEN)
}

fn max_len(field: &str, value: &str, max: usize) -> Result<(), CommandError> {
    if value.len() > max {
        return Err(CommandError::TooLong {
            field: field.to_owned(),
            len: value.len(),
            max,
        });
    }
    Ok(())
}

fn finite(field: &str, value: f64) -> Result<(), CommandError> {
    if value.is_finite() {
        Ok(())
    } else {
        Err(CommandError::NotFinite {
            field: field.to_owned(),
        })
    }
}

/// `value` is finite and in `min..=max`; `range` is how the reason shows
/// the bound (e.g. `0..=1e7 m`). The value is shown in scientific notation
/// (`1e300`, not three hundred digits).
fn within(field: &str, value: f64, min: f64, max: f64, range: &str) -> Result<(), CommandError> {
    finite(field, value)?;
    if value < min || value > max {
        return Err(CommandError::Invalid {
            field: field.to_owned(),
            reason: format!("{value:e} is outside {range}"),
        });
    }
    Ok(())
}

/// A distance: finite, in `0..=MAX_DISTANCE_M`.
fn distance(field: &str, value: f64) -> Result<(), CommandError> {
    let max = limits::MAX_DISTANCE_M;
    within(field, value, 0.0, max, &format!("0..={max:e} m"))
}

/// A coordinate: finite, within `±MAX_COORDINATE_M`; `axis` names it.
fn coordinate(field: &str, axis: &str, value: f64) -> Result<(), CommandError> {
    finite(field, value)?;
    let max = limits::MAX_COORDINATE_M;
    if value.abs() > max {
        return Err(CommandError::Invalid {
            field: field.to_owned(),
            reason: format!("{axis} = {value:e} m is outside ±{max:e} m"),
        });
    }
    Ok(())
}

/// A pose at `field`: its position under `field.position`, its heading
/// under `field.heading_rad`.
fn pose(field: &str, pose: &Pose) -> Result<(), CommandError> {
    let position = format!("{field}.position");
    for (axis, value) in ["x", "y", "z"].into_iter().zip(pose.position.iter()) {
        coordinate(&position, axis, *value)?;
    }
    let max = limits::MAX_HEADING_RAD;
    within(&format!("{field}.heading_rad"), pose.heading_rad, -max, max, "±2π rad")
}

pub(crate) fn capabilities(field: &str, caps: &BTreeSet<String>) -> Result<(), CommandError> {
    if caps.len() > limits::MAX_CAPABILITIES {
        return Err(CommandError::LimitReached {
            what: Limit::Capabilities,
            max: limits::MAX_CAPABILITIES,
        });
    }
    caps.iter().try_for_each(|c| name(field, c))
}

/// Goals as a client sends them; a field at fault is named as in the JSON
/// body, e.g. `goals[0].kind.Waypoint.pose.position`.
pub(crate) fn goals(goals: &[GoalSpec]) -> Result<(), CommandError> {
    if goals.is_empty() {
        return Err(CommandError::Empty {
            field: "goals".to_owned(),
        });
    }
    if goals.len() > limits::MAX_GOALS {
        return Err(CommandError::LimitReached {
            what: Limit::Goals,
            max: limits::MAX_GOALS,
        });
    }
    goals
        .iter()
        .enumerate()
        .try_for_each(|(i, g)| goal(&format!("goals[{i}]"), g))
}

fn goal(at: &str, goal: &GoalSpec) -> Result<(), CommandError> {
    distance(&format!("{at}.tolerance.position_m"), goal.tolerance.position_m)?;
    if let Some(heading_rad) = goal.tolerance.heading_rad {
        within(
            &format!("{at}.tolerance.heading_rad"),
            heading_rad,
            0.0,
            limits::MAX_HEADING_RAD,
            "0..=2π rad",
        )?;
    }
    match &goal.kind {
        GoalKind::Waypoint { pose: p } => pose(&format!("{at}.kind.Waypoint.pose"), p),
        GoalKind::SearchArea { boundary, spacing_m } => {
            let field = format!("{at}.kind.SearchArea.boundary");
            if boundary.len() < 3 {
                return Err(CommandError::Invalid {
                    field,
                    reason: format!("{} vertices, a polygon needs 3", boundary.len()),
                });
            }
            if boundary.len() > limits::MAX_AREA_VERTICES {
                return Err(CommandError::LimitReached {
                    what: Limit::AreaVertices,
                    max: limits::MAX_AREA_VERTICES,
                });
            }
            for (j, v) in boundary.iter().enumerate() {
                let vertex = format!("{field}[{j}]");
                coordinate(&vertex, "x", v.x)?;
                coordinate(&vertex, "y", v.y)?;
            }
            let spacing = format!("{at}.kind.SearchArea.spacing_m");
            distance(&spacing, *spacing_m)?;
            if *spacing_m == 0.0 {
                return Err(CommandError::Invalid {
                    field: spacing,
                    reason: "must be above 0".to_owned(),
                });
            }
            Ok(())
        }
        GoalKind::PickUp { pose: p, item } => {
            pose(&format!("{at}.kind.PickUp.pose"), p)?;
            name(&format!("{at}.kind.PickUp.item"), item)
        }
        GoalKind::Deliver { pose: p, item } => {
            pose(&format!("{at}.kind.Deliver.pose"), p)?;
            name(&format!("{at}.kind.Deliver.item"), item)
        }
        GoalKind::ScienceSample { pose: p, instrument } => {
            pose(&format!("{at}.kind.ScienceSample.pose"), p)?;
            name(&format!("{at}.kind.ScienceSample.instrument"), instrument)
        }
    }
}

pub(crate) fn task_spec(spec: &TaskSpec) -> Result<(), CommandError> {
    name("kind", &spec.kind)?;
    capabilities("required_capabilities", &spec.required_capabilities)?;
    let retry = &spec.retry;
    if retry.max_attempts == 0 {
        return Err(CommandError::Invalid {
            field: "retry.max_attempts".to_owned(),
            reason: "must be at least 1".to_owned(),
        });
    }
    if retry.backoff_ms_base > retry.backoff_ms_max {
        return Err(CommandError::Invalid {
            field: "retry.backoff_ms_base".to_owned(),
            reason: format!(
                "{} is above backoff_ms_max {}",
                retry.backoff_ms_base, retry.backoff_ms_max
            ),
        });
    }
    Ok(())
}

pub(crate) fn node_spec(spec: &NodeSpec) -> Result<(), CommandError> {
    if spec.addresses.len() > limits::MAX_ADDRESSES {
        return Err(CommandError::LimitReached {
            what: Limit::Addresses,
            max: limits::MAX_ADDRESSES,
        });
    }
    spec.addresses.iter().try_for_each(|a| {
        name("addresses", a)?;
        text("addresses", a)
    })?;
    capabilities("capabilities", &spec.capabilities)
}

pub(crate) fn feedback(feedback: &Feedback) -> Result<(), CommandError> {
    match feedback {
        Feedback::DistanceRemaining { distance_m } => distance("feedback.distance_m", *distance_m),
        Feedback::Eta { .. } | Feedback::Samples { .. } => Ok(()),
        Feedback::Pose(p) => pose("feedback.pose", p),
        Feedback::Note(note) => text("feedback.note", note),
    }
}

pub(crate) fn param_kind(kind: &ParamKind) -> Result<(), CommandError> {
    let invalid = |reason: String| {
        Err(CommandError::Invalid {
            field: "kind".to_owned(),
            reason,
        })
    };
    match kind {
        ParamKind::Bool => Ok(()),
        ParamKind::Int { min, max } if min > max => invalid(format!("min {min} is above max {max}")),
        ParamKind::Int { .. } => Ok(()),
        ParamKind::Float { min, max } => {
            if !min.is_finite() || !max.is_finite() {
                return Err(CommandError::NotFinite {
                    field: "kind.min/max".to_owned(),
                });
            }
            if min > max {
                return invalid(format!("min {min} is above max {max}"));
            }
            Ok(())
        }
        ParamKind::String { max_len } => {
            if usize::try_from(*max_len).map_or(true, |len| len > limits::MAX_PARAM_STRING_LEN) {
                return invalid(format!("max_len {max_len} is above {}", limits::MAX_PARAM_STRING_LEN));
            }
            Ok(())
        }
        ParamKind::Enum { choices } => {
            if choices.is_empty() {
                return Err(CommandError::Empty {
                    field: "kind.choices".to_owned(),
                });
            }
            if choices.len() > limits::MAX_ENUM_CHOICES {
                return Err(CommandError::LimitReached {
                    what: Limit::EnumChoices,
                    max: limits::MAX_ENUM_CHOICES,
                });
            }
            choices.iter().try_for_each(|c| name("kind.choices", c))?;
            let distinct: BTreeSet<&String> = choices.iter().collect();
            if distinct.len() != choices.len() {
                return invalid("choices repeat".to_owned());
            }
            Ok(())
        }
    }
}

pub(crate) fn policy(policy: &DegradationPolicy) -> Result<(), CommandError> {
    name("sensor", &policy.sensor)?;
    if policy.health == SensorHealth::Ok {
        return Err(CommandError::Invalid {
            field: "health".to_owned(),
            reason: "a policy must be for degraded or failed health".to_owned(),
        });
    }
    if !policy.speed_factor.is_finite() {
        return Err(CommandError::NotFinite {
            field: "speed_factor".to_owned(),
        });
    }
    if !(0.0..=1.0).contains(&policy.speed_factor) {
        return Err(CommandError::Invalid {
            field: "speed_factor".to_owned(),
            reason: format!("{} is outside 0..=1", policy.speed_factor),
        });
    }
    Ok(())
}
