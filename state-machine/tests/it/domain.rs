//! Plan, parameters and sensor health.

use cairn_state::limits::PARAM_EVENTS_KEPT;
use cairn_state::Command;
use cairn_state::CommandError;
use cairn_state::DegradationPolicy;
use cairn_state::GoalId;
use cairn_state::GoalKind;
use cairn_state::GoalSpec;
use cairn_state::GoalStatus;
use cairn_state::Mode;
use cairn_state::ParamKind;
use cairn_state::ParamType;
use cairn_state::ParamValue;
use cairn_state::PlanStatus;
use cairn_state::Pose;
use cairn_state::Response;
use cairn_state::SensorHealth;
use cairn_state::Tolerance;
use cairn_state::MAX_SPEED_PARAM;
use nalgebra::Point2;

use crate::Rig;

fn waypoint(x: f64, y: f64) -> GoalSpec {
    GoalSpec {
        kind: GoalKind::Waypoint {
            pose: Pose::new(x, y, 0.0, 0.0),
        },
        tolerance: Tolerance {
            position_m: 0.5,
            heading_rad: Some(0.2),
        },
    }
}

fn plan_changed(r: Response) -> (u64, Vec<GoalId>) {
    match r {
        Response::PlanChanged { version, added_goals } => (version, added_goals),
        other => panic!("plan command answered {other:?}"),
    }
}

#[test]
fn t430_plan_replace_append_skip_complete_bump_the_version() {
    let mut rig = Rig::new();
    assert_eq!(rig.mission.plan().status, PlanStatus::Empty);
    let e = rig.err(Command::AppendGoals {
        expected_version: None,
        goals: vec![waypoint(1.0, 1.0)],
    });
    assert_eq!(
        e,
        CommandError::PlanNotActive {
            status: PlanStatus::Empty
        }
    );

    let goals = vec![
        waypoint(10.0, 0.0),
        GoalSpec {
            kind: GoalKind::SearchArea {
                boundary: vec![Point2::new(0.0, 0.0), Point2::new(5.0, 0.0), Point2::new(5.0, 5.0)],
                spacing_m: 1.0,
            },
            tolerance: Tolerance {
                position_m: 1.0,
                heading_rad: None,
            },
        },
        GoalSpec {
            kind: GoalKind::ScienceSample {
                pose: Pose::new(3.0, 4.0, 0.1, 1.57),
                instrument: "drill".to_owned(),
            },
            tolerance: Tolerance {
                position_m: 0.1,
                heading_rad: None,
            },
        },
    ];
    let (v1, ids) = plan_changed(rig.ok(Command::ReplacePlan {
        expected_version: Some(0),
        name: "sol-42".to_owned(),
        frame_id: "map".to_owned(),
        goals,
    }));
    assert_eq!((v1, ids.len()), (1, 3), "ids {ids:?}");
    assert_eq!(rig.mission.plan().current_goal().map(|g| g.id), Some(ids[0]));

    let (v2, more) = plan_changed(rig.ok(Command::AppendGoals {
        expected_version: Some(1),
        goals: vec![GoalSpec {
            kind: GoalKind::Deliver {
                pose: Pose::new(0.0, 0.0, 0.0, 3.1),
                item: "tube-1".to_owned(),
            },
            tolerance: Tolerance {
                position_m: 0.2,
                heading_rad: None,
            },
        }],
    }));
    assert_eq!(v2, 2);
    let e = rig.err(Command::SkipGoal {
        expected_version: Some(1),
        goal_id: ids[0],
    });
    assert_eq!(e, CommandError::PlanVersionMismatch { expected: 1, actual: 2 });

    rig.ok(Command::CompleteGoal {
        expected_version: Some(2),
        goal_id: ids[0],
    });
    rig.ok(Command::SkipGoal {
        expected_version: None,
        goal_id: ids[1],
    });
    let e = rig.err(Command::SkipGoal {
        expected_version: None,
        goal_id: ids[1],
    });
    assert_eq!(
        e,
        CommandError::GoalNotPending {
            goal_id: ids[1],
            status: GoalStatus::Skipped
        }
    );
    rig.ok(Command::CompleteGoal {
        expected_version: None,
        goal_id: ids[2],
    });
    rig.ok(Command::CompleteGoal {
        expected_version: None,
        goal_id: more[0],
    });
    let plan = rig.mission.plan();
    assert_eq!(
        (plan.status.clone(), plan.version),
        (PlanStatus::Completed, 6),
        "saw {plan:?}"
    );

    let e = rig.err(Command::AbortPlan {
        expected_version: None,
        reason: "dust storm".to_owned(),
    });
    assert!(matches!(e, CommandError::PlanNotActive { .. }), "saw {e:?}");
    rig.ok(Command::AppendGoals {
        expected_version: None,
        goals: vec![waypoint(2.0, 2.0)],
    });
    rig.ok(Command::AbortPlan {
        expected_version: None,
        reason: "dust storm".to_owned(),
    });
    assert_eq!(
        rig.mission.plan().status,
        PlanStatus::Aborted {
            reason: "dust storm".to_owned()
        }
    );

    // Goal ids are never reused across replacements.
    let (_, fresh) = plan_changed(rig.ok(Command::ReplacePlan {
        expected_version: None,
        name: "sol-43".to_owned(),
        frame_id: "map".to_owned(),
        goals: vec![waypoint(0.0, 0.0)],
    }));
    assert!(fresh[0] > more[0], "fresh id {} after {}", fresh[0], more[0]);
    let e = rig.err(Command::SkipGoal {
        expected_version: None,
        goal_id: ids[0],
    });
    assert!(matches!(e, CommandError::GoalNotFound { .. }), "saw {e:?}");
}

#[test]
fn t431_plan_inputs_are_validated() {
    let mut rig = Rig::new();
    let replace = |goals: Vec<GoalSpec>| Command::ReplacePlan {
        expected_version: None,
        name: "p".to_owned(),
        frame_id: "map".to_owned(),
        goals,
    };
    assert!(matches!(rig.err(replace(vec![])), CommandError::Empty { .. }));
    assert!(matches!(
        rig.err(replace(vec![waypoint(f64::NAN, 0.0)])),
        CommandError::NotFinite { .. }
    ));
    let mut negative = waypoint(0.0, 0.0);
    negative.tolerance.position_m = -1.0;
    assert!(matches!(rig.err(replace(vec![negative])), CommandError::Invalid { .. }));
    let triangle_less = GoalSpec {
        kind: GoalKind::SearchArea {
            boundary: vec![Point2::new(0.0, 0.0)],
            spacing_m: 1.0,
        },
        tolerance: Tolerance {
            position_m: 1.0,
            heading_rad: None,
        },
    };
    assert!(matches!(
        rig.err(replace(vec![triangle_less])),
        CommandError::Invalid { .. }
    ));
    let e = rig.err(Command::ReplacePlan {
        expected_version: None,
        name: "p".to_owned(),
        frame_id: String::new(),
        goals: vec![waypoint(0.0, 0.0)],
    });
    assert_eq!(
        e,
        CommandError::Empty {
            field: "frame_id".to_owned()
        }
    );

    let pose = Pose::new(1.0, 2.0, 0.0, std::f64::consts::FRAC_PI_2);
    let moved = pose.isometry() * nalgebra::Point3::new(1.0, 0.0, 0.0);
    assert!(
        (moved - nalgebra::Point3::new(1.0, 3.0, 0.0)).norm() < 1e-9,
        "heading pi/2 maps x to y: {moved}"
    );
}

/// The absurd plan of issue 17 (a waypoint at `[1e300, -1e300, 0]`,
/// tolerance 1e300) and every other float a plan carries past its bound
/// are refused naming the field, as the JSON body spells it; the bounds
/// themselves are accepted.
#[test]
fn t432_plan_floats_are_bounded_and_the_field_is_named() {
    use cairn_state::limits::MAX_COORDINATE_M;
    use cairn_state::limits::MAX_DISTANCE_M;
    use cairn_state::limits::MAX_HEADING_RAD;
    let mut rig = Rig::new();
    let replace = |goals: Vec<GoalSpec>| Command::ReplacePlan {
        expected_version: None,
        name: "p".to_owned(),
        frame_id: "map".to_owned(),
        goals,
    };
    let at = |x: f64, y: f64, heading: f64, tolerance_m: f64, tolerance_rad: Option<f64>| GoalSpec {
        kind: GoalKind::Waypoint {
            pose: Pose::new(x, y, 0.0, heading),
        },
        tolerance: Tolerance {
            position_m: tolerance_m,
            heading_rad: tolerance_rad,
        },
    };
    let area = |vertex: f64, spacing_m: f64| GoalSpec {
        kind: GoalKind::SearchArea {
            boundary: vec![Point2::new(0.0, 0.0), Point2::new(vertex, 0.0), Point2::new(0.0, 1.0)],
            spacing_m,
        },
        tolerance: Tolerance {
            position_m: 1.0,
            heading_rad: None,
        },
    };
    let invalid_field = |e: CommandError| match e {
        CommandError::Invalid { field, reason } => (field, reason),
        other => panic!("expected Invalid, saw {other:?}"),
    };

    let (field, reason) = invalid_field(rig.err(replace(vec![at(1e300, -1e300, 0.0, 1e300, None)])));
    assert_eq!(field, "goals[0].tolerance.position_m", "{reason}");
    assert!(reason.contains("1e300"), "the value is shown short: {reason}");
    let (field, reason) = invalid_field(rig.err(replace(vec![
        at(0.0, 0.0, 0.0, 1.0, None),
        at(1e300, -1e300, 0.0, 1.0, None),
    ])));
    assert_eq!(field, "goals[1].kind.Waypoint.pose.position");
    assert!(reason.contains("x = 1e300 m") && reason.contains("1e6"), "{reason}");
    let cases = [
        (
            at(0.0, -MAX_COORDINATE_M * 1.5, 0.0, 1.0, None),
            "goals[0].kind.Waypoint.pose.position",
        ),
        (at(0.0, 0.0, 7.0, 1.0, None), "goals[0].kind.Waypoint.pose.heading_rad"),
        (at(0.0, 0.0, -7.0, 1.0, None), "goals[0].kind.Waypoint.pose.heading_rad"),
        (at(0.0, 0.0, 0.0, -1.0, None), "goals[0].tolerance.position_m"),
        (at(0.0, 0.0, 0.0, 1.0, Some(-0.1)), "goals[0].tolerance.heading_rad"),
        (at(0.0, 0.0, 0.0, 1.0, Some(7.0)), "goals[0].tolerance.heading_rad"),
        (area(2e6, 1.0), "goals[0].kind.SearchArea.boundary[1]"),
        (area(1.0, 2e7), "goals[0].kind.SearchArea.spacing_m"),
        (area(1.0, 0.0), "goals[0].kind.SearchArea.spacing_m"),
    ];
    for (goal, want) in cases {
        let (field, reason) = invalid_field(rig.err(replace(vec![goal.clone()])));
        assert_eq!(field, want, "{goal:?}: {reason}");
    }
    let e = rig.err(replace(vec![at(f64::INFINITY, 0.0, 0.0, 1.0, None)]));
    assert_eq!(
        e,
        CommandError::NotFinite {
            field: "goals[0].kind.Waypoint.pose.position".to_owned()
        }
    );

    // The bounds themselves are in.
    rig.ok(replace(vec![
        at(
            MAX_COORDINATE_M,
            -MAX_COORDINATE_M,
            MAX_HEADING_RAD,
            MAX_DISTANCE_M,
            Some(MAX_HEADING_RAD),
        ),
        at(0.0, 0.0, -MAX_HEADING_RAD, 0.0, Some(0.0)),
        area(MAX_COORDINATE_M, MAX_DISTANCE_M),
    ]));
}

#[test]
fn t440_params_declare_set_and_refuse_bad_values() {
    let mut rig = Rig::new();
    let declare = |name: &str, kind: ParamKind, value: ParamValue| Command::DeclareParam {
        name: name.to_owned(),
        description: "test".to_owned(),
        kind,
        value,
    };
    rig.ok(declare("nav.replan", ParamKind::Bool, ParamValue::Bool(true)));
    rig.ok(declare(
        "cam.fps",
        ParamKind::Int { min: 1, max: 60 },
        ParamValue::Int(30),
    ));
    rig.ok(declare(
        "nav.gain",
        ParamKind::Float { min: 0.0, max: 2.0 },
        ParamValue::Float(1.0),
    ));
    rig.ok(declare(
        "log.tag",
        ParamKind::String { max_len: 8 },
        ParamValue::String("rover".to_owned()),
    ));
    let modes = ParamKind::Enum {
        choices: vec!["manual".to_owned(), "auto".to_owned()],
    };
    rig.ok(declare("drive.mode", modes, ParamValue::Enum("auto".to_owned())));
    assert_eq!(rig.mission.params_version(), 5);

    let e = rig.err(declare("cam.fps", ParamKind::Bool, ParamValue::Bool(true)));
    assert_eq!(
        e,
        CommandError::ParamAlreadyDeclared {
            name: "cam.fps".to_owned()
        }
    );
    let e = rig.err(declare("bad", ParamKind::Int { min: 5, max: 1 }, ParamValue::Int(3)));
    assert!(matches!(e, CommandError::Invalid { .. }), "saw {e:?}");
    let e = rig.err(declare("bad", ParamKind::Int { min: 0, max: 1 }, ParamValue::Int(3)));
    assert!(matches!(e, CommandError::ParamOutOfBounds { .. }), "saw {e:?}");

    let set = |name: &str, value: ParamValue| Command::SetParam {
        name: name.to_owned(),
        value,
    };
    let r = rig.ok(set("cam.fps", ParamValue::Int(15)));
    assert_eq!(
        r,
        Response::ParamChanged {
            name: "cam.fps".to_owned(),
            version: 6
        }
    );
    assert_eq!(
        rig.err(set("cam.fps", ParamValue::Float(15.0))),
        CommandError::ParamTypeMismatch {
            name: "cam.fps".to_owned(),
            expected: ParamType::Int,
            found: ParamType::Float
        }
    );
    assert!(matches!(
        rig.err(set("cam.fps", ParamValue::Int(61))),
        CommandError::ParamOutOfBounds { .. }
    ));
    assert!(matches!(
        rig.err(set("nav.gain", ParamValue::Float(f64::NAN))),
        CommandError::NotFinite { .. }
    ));
    assert!(matches!(
        rig.err(set("nav.gain", ParamValue::Float(2.5))),
        CommandError::ParamOutOfBounds { .. }
    ));
    assert!(matches!(
        rig.err(set("log.tag", ParamValue::String("too-long-a-tag".to_owned()))),
        CommandError::ParamOutOfBounds { .. }
    ));
    assert!(matches!(
        rig.err(set("drive.mode", ParamValue::Enum("warp".to_owned()))),
        CommandError::ParamOutOfBounds { .. }
    ));
    assert_eq!(
        rig.err(set("nope", ParamValue::Bool(true))),
        CommandError::ParamNotDeclared {
            name: "nope".to_owned()
        }
    );

    let last = rig.mission.param_changes().last().cloned().expect("a change event");
    assert_eq!(
        (last.version, last.name.as_str(), last.old, last.new),
        (6, "cam.fps", Some(ParamValue::Int(30)), ParamValue::Int(15)),
    );
    assert_eq!(rig.mission.param("cam.fps").map(|p| p.version), Some(6));
    assert_eq!(rig.mission.param_changes_since(5).count(), 1);
}

#[test]
fn t441_param_change_ring_is_bounded() {
    let mut rig = Rig::new();
    rig.ok(Command::DeclareParam {
        name: "n".to_owned(),
        description: String::new(),
        kind: ParamKind::Int { min: 0, max: 10_000 },
        value: ParamValue::Int(0),
    });
    for i in 1..=600 {
        rig.ok(Command::SetParam {
            name: "n".to_owned(),
            value: ParamValue::Int(i),
        });
    }
    let versions: Vec<u64> = rig.mission.param_changes().map(|c| c.version).collect();
    assert_eq!(versions.len(), PARAM_EVENTS_KEPT, "kept {} events", versions.len());
    assert_eq!(
        (versions[0], versions[versions.len() - 1]),
        (601 - PARAM_EVENTS_KEPT as u64 + 1, 601)
    );
}

#[test]
fn t450_default_degradation_policies() {
    let mut rig = Rig::new();
    let eff = rig.mission.effective();
    assert_eq!((eff.mode, eff.max_speed_mps), (Mode::Normal, 1.0), "saw {eff:?}");

    let report = |sensor: &str, health| Command::ReportSensorHealth {
        sensor: sensor.to_owned(),
        health,
    };
    rig.ok(report("imu", SensorHealth::Failed));
    let eff = rig.mission.effective();
    assert_eq!(
        (eff.mode, eff.speed_factor, eff.max_speed_mps),
        (Mode::GpsOnly, 0.5, 0.5),
        "saw {eff:?}"
    );

    rig.ok(Command::SetParam {
        name: MAX_SPEED_PARAM.to_owned(),
        value: ParamValue::Float(2.0),
    });
    assert_eq!(rig.mission.effective().max_speed_mps, 1.0);

    let r = rig.ok(report("lidar", SensorHealth::Failed));
    let Response::HealthChanged { effective } = r else {
        panic!("report answered {r:?}")
    };
    assert_eq!(
        (effective.mode, effective.max_speed_mps, effective.causes.len()),
        (Mode::Stop, 0.0, 2),
        "saw {effective:?}"
    );

    rig.ok(report("lidar", SensorHealth::Ok));
    rig.ok(report("imu", SensorHealth::Degraded)); // no default policy for a degraded IMU
    let eff = rig.mission.effective();
    assert_eq!((eff.mode, eff.max_speed_mps), (Mode::Normal, 2.0), "saw {eff:?}");
}

#[test]
fn t451_policies_are_data() {
    let mut rig = Rig::new();
    let cautious = DegradationPolicy {
        sensor: "camera".to_owned(),
        health: SensorHealth::Degraded,
        mode: Mode::Reduced,
        speed_factor: 0.3,
    };
    rig.ok(Command::SetPolicy(cautious.clone()));
    rig.ok(Command::ReportSensorHealth {
        sensor: "camera".to_owned(),
        health: SensorHealth::Degraded,
    });
    let eff = rig.mission.effective();
    assert_eq!((eff.mode, eff.speed_factor), (Mode::Reduced, 0.3), "saw {eff:?}");
    let sensors: Vec<&str> = rig.mission.policies().iter().map(|p| p.sensor.as_str()).collect();
    assert_eq!(sensors, ["camera", "imu", "lidar"], "policies stay sorted");

    let bad = DegradationPolicy {
        speed_factor: 1.5,
        ..cautious.clone()
    };
    assert!(matches!(rig.err(Command::SetPolicy(bad)), CommandError::Invalid { .. }));
    let bad = DegradationPolicy {
        speed_factor: f64::INFINITY,
        ..cautious.clone()
    };
    assert!(matches!(
        rig.err(Command::SetPolicy(bad)),
        CommandError::NotFinite { .. }
    ));
    let bad = DegradationPolicy {
        health: SensorHealth::Ok,
        ..cautious
    };
    assert!(matches!(rig.err(Command::SetPolicy(bad)), CommandError::Invalid { .. }));

    rig.ok(Command::RemovePolicy {
        sensor: "camera".to_owned(),
        health: SensorHealth::Degraded,
    });
    assert_eq!(rig.mission.effective().mode, Mode::Normal);
    let e = rig.err(Command::RemovePolicy {
        sensor: "camera".to_owned(),
        health: SensorHealth::Degraded,
    });
    assert!(matches!(e, CommandError::PolicyNotFound { .. }), "saw {e:?}");
}
