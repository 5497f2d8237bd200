//! Conversions between the replicated types (`cairn-state`) and the plain
//! types action handlers see (`cairn_hal::action`).

use std::collections::BTreeMap;

use cairn_hal::action::ActionFeedback;
use cairn_hal::action::ClusterReport;
use cairn_hal::action::FeedbackDetail;
use cairn_hal::action::Limits;
use cairn_hal::action::OperatingMode;
use cairn_hal::action::ParamVal;
use cairn_hal::action::PlanTarget;
use cairn_hal::action::PlanView;
use cairn_hal::action::SensorState;
use cairn_hal::Pose2;
use cairn_state::Command;
use cairn_state::Effective;
use cairn_state::Feedback;
use cairn_state::GoalId;
use cairn_state::GoalKind;
use cairn_state::GoalStatus;
use cairn_state::Mission;
use cairn_state::Mode;
use cairn_state::ParamValue;
use cairn_state::Pose;
use cairn_state::SensorHealth;

pub(crate) fn limits(e: &Effective) -> Limits {
    Limits {
        mode: match e.mode {
            Mode::Normal => OperatingMode::Normal,
            Mode::Reduced => OperatingMode::Reduced,
            Mode::GpsOnly => OperatingMode::GpsOnly,
            Mode::Stop => OperatingMode::Stop,
        },
        max_speed_mps: e.max_speed_mps,
    }
}

pub(crate) fn param(v: &ParamValue) -> ParamVal {
    match v {
        ParamValue::Bool(b) => ParamVal::Bool(*b),
        ParamValue::Int(i) => ParamVal::Int(*i),
        ParamValue::Float(f) => ParamVal::Float(*f),
        ParamValue::String(s) => ParamVal::String(s.clone()),
        ParamValue::Enum(s) => ParamVal::Enum(s.clone()),
    }
}

pub(crate) fn params(m: &Mission) -> (u64, BTreeMap<String, ParamVal>) {
    (
        m.params_version(),
        m.params().map(|p| (p.name.clone(), param(&p.value))).collect(),
    )
}

fn pose2(p: &Pose) -> Pose2 {
    Pose2::new(p.position.x, p.position.y, p.heading_rad)
}

pub(crate) fn plan(m: &Mission) -> PlanView {
    let plan = m.plan();
    PlanView {
        version: plan.version,
        targets: plan
            .goals
            .iter()
            .map(|g| {
                let (kind, pose) = match &g.kind {
                    GoalKind::Waypoint { pose } => ("waypoint", Some(pose2(pose))),
                    GoalKind::SearchArea { .. } => ("search-area", None),
                    GoalKind::PickUp { pose, .. } => ("pick-up", Some(pose2(pose))),
                    GoalKind::Deliver { pose, .. } => ("deliver", Some(pose2(pose))),
                    GoalKind::ScienceSample { pose, .. } => ("science-sample", Some(pose2(pose))),
                };
                PlanTarget {
                    goal_id: g.id.0,
                    kind: kind.to_owned(),
                    pose,
                    tolerance_m: g.tolerance.position_m,
                    pending: g.status == GoalStatus::Pending,
                }
            })
            .collect(),
    }
}

pub(crate) fn feedback(f: &ActionFeedback) -> (u8, Option<Feedback>) {
    let detail = f.detail.as_ref().map(|d| match d {
        FeedbackDetail::DistanceRemaining(m) => Feedback::DistanceRemaining { distance_m: *m },
        FeedbackDetail::Eta(ms) => Feedback::Eta { remaining_ms: *ms },
        FeedbackDetail::Pose(p) => Feedback::Pose(Pose::new(p.x_m, p.y_m, 0.0, normalised(p.heading_rad))),
        FeedbackDetail::Samples { collected, target } => Feedback::Samples {
            collected: *collected,
            target: *target,
        },
        FeedbackDetail::Note(s) => Feedback::Note(s.clone()),
    });
    (f.percent.min(100), detail)
}

/// A heading in `[-π, π]`: a handler may integrate its yaw past a full turn;
/// the state machine takes headings within one turn
/// ([`cairn_state::limits::MAX_HEADING_RAD`]). A non-finite one is left for
/// the state machine to refuse.
fn normalised(heading_rad: f64) -> f64 {
    use std::f64::consts::PI;
    use std::f64::consts::TAU;
    if !heading_rad.is_finite() {
        return heading_rad;
    }
    let h = heading_rad.rem_euclid(TAU);
    if h > PI {
        h - TAU
    } else {
        h
    }
}

pub(crate) fn report(r: &ClusterReport) -> Command {
    match r {
        ClusterReport::SensorHealth { sensor, health } => Command::ReportSensorHealth {
            sensor: sensor.clone(),
            health: match health {
                SensorState::Ok => SensorHealth::Ok,
                SensorState::Degraded => SensorHealth::Degraded,
                SensorState::Failed => SensorHealth::Failed,
            },
        },
        ClusterReport::GoalReached { goal_id } => Command::CompleteGoal {
            expected_version: None,
            goal_id: GoalId(*goal_id),
        },
    }
}

#[cfg(test)]
mod tests {
    use std::f64::consts::PI;

    use super::*;

    #[test]
    fn headings_are_brought_within_one_turn() {
        for (given, want) in [(0.0, 0.0), (PI / 2.0, PI / 2.0), (7.0 * PI, PI), (-5.5 * PI, 0.5 * PI)] {
            let got = normalised(given);
            assert!((got - want).abs() < 1e-9, "{given} gave {got}, not {want}");
        }
        assert!(normalised(f64::NAN).is_nan(), "left for the state machine to refuse");
    }
}
