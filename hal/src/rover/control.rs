//! The control handler: pure pursuit over the replicated plan, fenced.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use nalgebra::Point2;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tokio::time::{Instant, MissedTickBehavior};

use crate::action::{
    ActionContext, ActionFeedback, ActionFuture, ActionHandler, ActionOutcome, ClusterReport, FeedbackDetail, Limits,
    OperatingMode, PlanView,
};
use crate::algo::ekf::EkfMode;
use crate::algo::pursuit::{PurePursuit, PursuitConfig, PursuitStep};
use crate::device::{Drive, VelocityCommand};
use crate::error::Error;
use crate::geo::Twist;
use crate::rover::localiser::{Localiser, LocaliserConfig, Perception};
use crate::rover::{blocking, open_devices, sensor_name, sensor_state, RoverHardware, RoverSample};

/// In GPS-only mode a turn is an arc at this share of the speed limit...
const GPS_ONLY_ARC_SPEED_SHARE: f64 = 0.5;
/// ...and this radius, m: tight enough to come about within a few metres,
/// wide enough that GPS (±0.5 m) sees the motion that reveals heading.
const GPS_ONLY_ARC_RADIUS_M: f64 = 1.5;

/// Tuning of the [`ControlHandler`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ControlConfig {
    /// Control loop rate, Hz (10: the world steps at 50 Hz and its watchdog
    /// waits 500 ms, so five missed cycles in a row stop the wheels).
    pub rate_hz: f64,
    /// Pure-pursuit tuning. Its top speed is the drivetrain's; the effective
    /// limit from the cluster lowers it every cycle.
    pub pursuit: PursuitConfig,
    /// Localisation tuning.
    pub localiser: LocaliserConfig,
    /// Hold still while something in the corridor ahead is closer than
    /// this, m (turning in place is still allowed, to look away).
    pub stop_distance_m: f64,
    /// How often progress goes into the task's feedback (replicated), ms.
    pub feedback_interval_ms: u64,
    /// After the last goal, how long to wait for the plan to show every
    /// reached goal as done before finishing anyway, ms.
    pub confirm_timeout_ms: u64,
    /// Drive commands failing in a row (link down, not refusals) before the
    /// attempt is given up as failed.
    pub drive_failures_max: u32,
}

impl Default for ControlConfig {
    fn default() -> Self {
        Self {
            rate_hz: 10.0,
            pursuit: PursuitConfig {
                speed_mps_max: 2.0,
                ..PursuitConfig::default()
            },
            localiser: LocaliserConfig::default(),
            stop_distance_m: 1.0,
            feedback_interval_ms: 1_000,
            confirm_timeout_ms: 5_000,
            drive_failures_max: 20,
        }
    }
}

impl ControlConfig {
    fn validate(&self) -> Result<(), Error> {
        let ok = self.rate_hz.is_finite()
            && (1.0..=100.0).contains(&self.rate_hz)
            && self.stop_distance_m.is_finite()
            && self.stop_distance_m >= 0.0
            && self.drive_failures_max > 0;
        if !ok {
            return Err(Error::InvalidConfig {
                reason: format!(
                    "control needs rate_hz in 1..=100, a finite stop_distance_m >= 0 and drive_failures_max > 0, got {} Hz, {} m, {}",
                    self.rate_hz, self.stop_distance_m, self.drive_failures_max
                ),
            });
        }
        // Construct once to validate the pursuit tuning.
        PurePursuit::new(self.pursuit.clone(), Point2::origin(), Vec::new()).map(drop)
    }
}

/// Follows the mission plan (task kind [`crate::rover::NAVIGATE`]).
///
/// A task with a plan goal drives to that goal; one without drives through
/// every pending goal that has a pose, in plan order, reporting each as
/// reached. Progress is the share of those goals done; the feedback detail
/// is the path length left.
pub struct ControlHandler {
    hardware: Arc<dyn RoverHardware>,
    config: ControlConfig,
    samples: watch::Sender<Option<RoverSample>>,
}

impl ControlHandler {
    /// A handler over `hardware`.
    pub fn new(hardware: Arc<dyn RoverHardware>, config: ControlConfig) -> Result<Self, Error> {
        config.validate()?;
        Ok(Self {
            hardware,
            config,
            samples: watch::channel(None).0,
        })
    }

    /// What the running controller sees and does, every cycle (for
    /// telemetry; `None` before the first run).
    pub fn samples(&self) -> watch::Receiver<Option<RoverSample>> {
        self.samples.subscribe()
    }
}

impl ActionHandler for ControlHandler {
    fn run(&self, ctx: ActionContext) -> ActionFuture {
        Box::pin(run(
            Arc::clone(&self.hardware),
            self.config.clone(),
            self.samples.clone(),
            ctx,
        ))
    }
}

/// The devices one run owns.
struct Rig {
    localiser: Localiser,
    drive: Box<dyn Drive>,
}

fn open(hardware: &dyn RoverHardware, config: &LocaliserConfig) -> Result<Rig, Error> {
    let origin = hardware.origin()?;
    let localiser = Localiser::new(hardware.sensors()?, origin, config.clone())?;
    Ok(Rig {
        localiser,
        drive: hardware.drive()?,
    })
}

/// A goal to drive to.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Target {
    goal_id: u64,
    at: Point2<f64>,
}

/// The pending goals with a pose this task drives to, in plan order,
/// leaving out those already reached but not yet shown as done.
fn targets(plan: &PlanView, only: Option<u64>, reached: &BTreeSet<u64>) -> Vec<Target> {
    plan.targets
        .iter()
        .filter(|t| t.pending && only.is_none_or(|g| g == t.goal_id) && !reached.contains(&t.goal_id))
        .filter_map(|t| {
            t.pose.map(|p| Target {
                goal_id: t.goal_id,
                at: p.position(),
            })
        })
        .collect()
}

/// What one cycle decided.
#[derive(Debug, Clone, PartialEq)]
struct Decision {
    twist: Twist,
    holding: Option<String>,
    /// Indexes (into the follower's targets) reached this cycle.
    reached: Vec<usize>,
    arrived: bool,
    distance_m_remaining: f64,
}

/// The pure part of a cycle: where to go and whether it is safe to.
fn decide(
    pursuit: Option<&mut PurePursuit>,
    p: &Perception,
    limits: &Limits,
    may_actuate: bool,
    stop_distance_m: f64,
) -> Decision {
    let mut d = Decision {
        twist: Twist::ZERO,
        holding: None,
        reached: Vec::new(),
        arrived: false,
        distance_m_remaining: 0.0,
    };
    let (Some(pursuit), Some(pose)) = (pursuit, p.pose) else {
        d.holding = Some("localising: waiting for a GPS fix".into());
        return d;
    };
    let before = pursuit.next_waypoint();
    let speed_limit = if limits.mode == OperatingMode::Stop {
        0.0
    } else {
        limits.max_speed_mps
    };
    let step = pursuit.step(&pose, speed_limit);
    let after = pursuit.next_waypoint();
    if let Some(first) = before {
        d.reached = (first..after.unwrap_or(pursuit.waypoint_count())).collect();
    }
    d.distance_m_remaining = pursuit.distance_m_remaining(&pose);
    let twist = match step {
        PursuitStep::Arrived => {
            d.arrived = true;
            return d;
        }
        PursuitStep::Drive { twist, .. } => twist,
    };
    let hold = if !may_actuate {
        Some("no permit: lease or epoch lost".to_string())
    } else if p.estop {
        Some("e-stop engaged".to_string())
    } else if limits.mode == OperatingMode::Stop || speed_limit <= 0.0 {
        Some(format!("mode {}: speed limit 0", limits.mode))
    } else if !p.sees_ahead {
        Some("lidar blind: no recent scan".to_string())
    } else {
        None
    };
    if hold.is_some() {
        d.holding = hold;
        return d;
    }
    // Without a gyro or odometry (GPS-only), heading is observable only from
    // the track the rover leaves: a turn in place leaves none, and the
    // filter's heading never converges. So turn on an arc instead.
    let twist = if p.ekf_mode == EkfMode::GpsOnly && twist.linear_mps == 0.0 && twist.angular_rps != 0.0 {
        let v = GPS_ONLY_ARC_SPEED_SHARE * speed_limit;
        Twist {
            linear_mps: v,
            angular_rps: twist.angular_rps.signum() * v / GPS_ONLY_ARC_RADIUS_M,
        }
    } else {
        twist
    };
    match p.obstacle_ahead {
        Some(o) if o.range_m < stop_distance_m && twist.linear_mps > 0.0 => {
            // Turning in place is allowed: it may face the rover away.
            d.twist = Twist {
                linear_mps: 0.0,
                angular_rps: twist.angular_rps,
            };
            d.holding = Some(format!("obstacle {:.1} m ahead", o.range_m));
        }
        _ => d.twist = twist,
    }
    d
}

async fn run(
    hardware: Arc<dyn RoverHardware>,
    config: ControlConfig,
    samples: watch::Sender<Option<RoverSample>>,
    mut ctx: ActionContext,
) -> ActionOutcome {
    let epoch = ctx.goal.epoch;
    let task_id = ctx.goal.task_id;
    let only = ctx.goal.plan_goal_id;
    let loc_config = config.localiser.clone();
    let mut rig = match open_devices(move || open(hardware.as_ref(), &loc_config)).await {
        Ok(rig) => rig,
        Err(failed) => return failed,
    };
    tracing::info!(task = task_id, epoch, "control running");

    let period = Duration::from_secs_f64(1.0 / config.rate_hz);
    let mut ticker = tokio::time::interval(period);
    ticker.set_missed_tick_behavior(MissedTickBehavior::Skip);
    let stop = ctx.stop_signal();
    let mut last = Instant::now();
    let mut plan_version = None;
    let mut goal_total = 0usize;
    let mut route: Vec<Target> = Vec::new();
    let mut pursuit: Option<PurePursuit> = None;
    // Reached and reported, not yet shown as done in the plan.
    let mut reached: BTreeSet<u64> = BTreeSet::new();
    let mut unsent: Vec<u64> = Vec::new();
    let mut arrived_at: Option<Instant> = None;
    let mut last_feedback: Option<Instant> = None;
    let mut was_permitted = true;
    let mut drive_failures = 0u32;
    let mut last_holding: Option<String> = None;
    let mut deposed = false;

    let outcome = loop {
        tokio::select! {
            _ = ticker.tick() => {}
            _ = stop.wait(), if was_permitted => {}
        }
        if ctx.is_cancelled() {
            break ActionOutcome::Cancelled;
        }
        let now = Instant::now();
        let dt_s = now.duration_since(last).as_secs_f64();
        last = now;

        // The plan: rebuild the route when it changes.
        let plan_changed = ctx.plan.has_changed().unwrap_or(false) || plan_version.is_none();
        if plan_changed {
            let plan = ctx.plan.borrow_and_update().clone();
            // Reached goals stop waiting for confirmation once the plan shows
            // them done, skipped, or gone (a replaced plan).
            let pending: BTreeSet<u64> = plan.targets.iter().filter(|t| t.pending).map(|t| t.goal_id).collect();
            reached.retain(|g| pending.contains(g));
            unsent.retain(|g| pending.contains(g));
            goal_total = plan
                .targets
                .iter()
                .filter(|t| t.pose.is_some() && only.is_none_or(|g| g == t.goal_id))
                .count();
            route = targets(&plan, only, &reached);
            pursuit = None;
            plan_version = Some(plan.version);
        }
        let limits = ctx.current_limits();
        let may_actuate = ctx.may_actuate();
        let want = if limits.mode == OperatingMode::GpsOnly {
            EkfMode::GpsOnly
        } else {
            EkfMode::Full
        };
        let (back, p) = match blocking(rig, move |r| r.localiser.cycle(dt_s, want)).await {
            Ok(v) => v,
            Err(reason) => return ActionOutcome::Failed { reason },
        };
        rig = back;
        if pursuit.is_none() && !route.is_empty() {
            if let Some(pose) = p.pose {
                match PurePursuit::new(
                    config.pursuit.clone(),
                    pose.position(),
                    route.iter().map(|t| t.at).collect(),
                ) {
                    Ok(f) => pursuit = Some(f),
                    Err(e) => return ActionOutcome::Failed { reason: e.to_string() },
                }
            }
        }
        let mut d = if route.is_empty() {
            Decision {
                twist: Twist::ZERO,
                holding: None,
                reached: Vec::new(),
                arrived: true,
                distance_m_remaining: 0.0,
            }
        } else {
            decide(pursuit.as_mut(), &p, &limits, may_actuate, config.stop_distance_m)
        };
        for i in std::mem::take(&mut d.reached) {
            if let Some(t) = route.get(i) {
                if reached.insert(t.goal_id) {
                    tracing::info!(task = task_id, goal = t.goal_id, "goal reached");
                    unsent.push(t.goal_id);
                }
            }
        }
        unsent.retain(|g| !ctx.report(ClusterReport::GoalReached { goal_id: *g }));

        // Drive: every cycle while permitted; one last stop when the permit goes.
        let send = may_actuate || was_permitted;
        was_permitted = may_actuate;
        if send {
            let twist = if may_actuate { d.twist } else { Twist::ZERO };
            let cmd = VelocityCommand::from_twist(epoch, twist);
            let (back, sent) = match blocking(rig, move |r| r.drive.command(&cmd)).await {
                Ok(v) => v,
                Err(reason) => return ActionOutcome::Failed { reason },
            };
            rig = back;
            match sent {
                Ok(()) => drive_failures = 0,
                Err(Error::StaleEpoch { current, .. }) => {
                    tracing::warn!(
                        task = task_id,
                        epoch,
                        current,
                        "drivetrain obeys a newer controller; stopping"
                    );
                    deposed = true;
                    break ActionOutcome::Failed {
                        reason: format!("drivetrain refused epoch {epoch}: epoch {current} holds it"),
                    };
                }
                Err(Error::EStopEngaged) => d.holding = Some("e-stop engaged".into()),
                Err(e) => {
                    drive_failures += 1;
                    tracing::warn!(task = task_id, error = %e, failures = drive_failures, "drive command failed");
                    if drive_failures >= config.drive_failures_max {
                        break ActionOutcome::Failed {
                            reason: format!("drivetrain unreachable: {e}"),
                        };
                    }
                }
            }
        }
        if d.holding != last_holding {
            match &d.holding {
                Some(why) => tracing::info!(task = task_id, epoch, why = %why, "holding"),
                None => tracing::info!(task = task_id, epoch, "driving"),
            }
            last_holding = d.holding.clone();
        }

        samples.send_replace(Some(RoverSample {
            task_id,
            epoch,
            pose: p.pose,
            speed_mps: p.twist.linear_mps,
            mode: if p.ekf_mode == EkfMode::GpsOnly && limits.mode == OperatingMode::Normal {
                OperatingMode::GpsOnly
            } else {
                limits.mode
            },
            holding: d.holding.clone(),
            distance_m_remaining: Some(d.distance_m_remaining),
            sensors: p
                .health
                .iter()
                .map(|(k, h)| (sensor_name(*k).to_string(), sensor_state(h)))
                .collect(),
        }));

        let done = goal_total.saturating_sub(route.len()) + reached.len();
        let feedback_due =
            last_feedback.is_none_or(|t| now.duration_since(t) >= Duration::from_millis(config.feedback_interval_ms));
        if feedback_due && !d.arrived {
            let percent = (100 * done.min(goal_total))
                .checked_div(goal_total)
                .map_or(0, |p| p.min(99) as u8);
            ctx.feedback(ActionFeedback {
                percent,
                detail: Some(FeedbackDetail::DistanceRemaining(d.distance_m_remaining)),
            });
            last_feedback = Some(now);
        }

        if d.arrived {
            // Every goal reached: finish once the plan shows them done (the
            // reports travel through the cluster), or after a bounded wait.
            let since = *arrived_at.get_or_insert(now);
            if reached.is_empty() && unsent.is_empty() {
                break ActionOutcome::Succeeded;
            }
            if now.duration_since(since) >= Duration::from_millis(config.confirm_timeout_ms) {
                tracing::warn!(task = task_id, unconfirmed = ?reached, "goals reached but not confirmed by the plan; finishing");
                break ActionOutcome::Succeeded;
            }
        }
    };
    // Leave the wheels stopped, unless a newer controller holds them.
    if !deposed {
        let _ = blocking(rig, move |r| r.drive.stop(epoch)).await;
    }
    if outcome == ActionOutcome::Succeeded {
        ctx.feedback(ActionFeedback {
            percent: 100,
            detail: Some(FeedbackDetail::DistanceRemaining(0.0)),
        });
    }
    tracing::info!(task = task_id, epoch, ?outcome, "control ended");
    outcome
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::action::PlanTarget;
    use crate::algo::obstacle::Obstacle;
    use crate::device::{DeviceKind, Health};
    use crate::geo::Pose2;

    fn perception(pose: Option<Pose2>) -> Perception {
        Perception {
            pose,
            twist: Twist::ZERO,
            position_m_std: 0.1,
            obstacle_ahead: None,
            sees_ahead: true,
            estop: false,
            ekf_mode: EkfMode::Full,
            health: vec![(DeviceKind::Imu, Health::Ok)],
        }
    }

    fn follower(points: &[(f64, f64)]) -> PurePursuit {
        PurePursuit::new(
            ControlConfig::default().pursuit,
            Point2::origin(),
            points.iter().map(|(x, y)| Point2::new(*x, *y)).collect(),
        )
        .unwrap_or_else(|e| panic!("{e}"))
    }

    const NORMAL: Limits = Limits {
        mode: OperatingMode::Normal,
        max_speed_mps: 1.0,
    };

    #[test]
    fn drives_within_the_limit_and_holds_for_every_stop_reason() {
        let mut f = follower(&[(10.0, 0.0)]);
        let p = perception(Some(Pose2::new(0.0, 0.0, 0.0)));
        let d = decide(Some(&mut f), &p, &NORMAL, true, 1.0);
        assert!(
            d.holding.is_none() && d.twist.linear_mps > 0.0 && d.twist.linear_mps <= 1.0,
            "{d:?}"
        );

        let half = Limits {
            mode: OperatingMode::GpsOnly,
            max_speed_mps: 0.5,
        };
        let d = decide(Some(&mut f), &p, &half, true, 1.0);
        assert!(d.twist.linear_mps > 0.0 && d.twist.linear_mps <= 0.5, "{d:?}");

        let stop = Limits {
            mode: OperatingMode::Stop,
            max_speed_mps: 0.0,
        };
        let cases: Vec<(Perception, Limits, bool, &str)> = vec![
            (p.clone(), NORMAL, false, "no permit"),
            (
                Perception {
                    estop: true,
                    ..p.clone()
                },
                NORMAL,
                true,
                "e-stop",
            ),
            (p.clone(), stop, true, "mode stop"),
            (
                Perception {
                    sees_ahead: false,
                    ..p.clone()
                },
                NORMAL,
                true,
                "lidar blind",
            ),
            (
                Perception {
                    obstacle_ahead: Some(Obstacle {
                        range_m: 0.8,
                        bearing_rad: 0.0,
                    }),
                    ..p.clone()
                },
                NORMAL,
                true,
                "obstacle",
            ),
            (perception(None), NORMAL, true, "localising"),
        ];
        for (p, limits, permit, why) in cases {
            let d = decide(Some(&mut f), &p, &limits, permit, 1.0);
            assert_eq!(d.twist.linear_mps, 0.0, "{why}: {d:?}");
            let holding = d.holding.unwrap_or_default();
            assert!(holding.contains(why), "{why}: {holding}");
        }
    }

    #[test]
    fn gps_only_turns_on_an_arc_never_in_place() {
        // A target behind the rover: pure pursuit turns in place...
        let mut f = follower(&[(-10.0, 0.0)]);
        let p = perception(Some(Pose2::new(0.0, 0.0, 0.0)));
        let d = decide(Some(&mut f), &p, &NORMAL, true, 1.0);
        assert!(d.twist.linear_mps == 0.0 && d.twist.angular_rps != 0.0, "{d:?}");
        // ...unless only GPS can tell where the rover faces.
        let gps_only = Perception {
            ekf_mode: EkfMode::GpsOnly,
            ..p
        };
        let half = Limits {
            mode: OperatingMode::GpsOnly,
            max_speed_mps: 0.5,
        };
        let d = decide(Some(&mut f), &gps_only, &half, true, 1.0);
        assert!(d.twist.linear_mps > 0.0 && d.twist.linear_mps <= 0.5, "{d:?}");
        assert!(d.twist.angular_rps != 0.0, "{d:?}");
    }

    #[test]
    fn reports_each_waypoint_once_and_arrives() {
        let mut f = follower(&[(1.0, 0.0), (2.0, 0.0)]);
        let d = decide(
            Some(&mut f),
            &perception(Some(Pose2::new(0.9, 0.0, 0.0))),
            &NORMAL,
            true,
            1.0,
        );
        assert_eq!(d.reached, vec![0]);
        assert!(!d.arrived);
        let d = decide(
            Some(&mut f),
            &perception(Some(Pose2::new(1.2, 0.0, 0.0))),
            &NORMAL,
            true,
            1.0,
        );
        assert!(d.reached.is_empty(), "{d:?}");
        let d = decide(
            Some(&mut f),
            &perception(Some(Pose2::new(2.0, 0.1, 0.0))),
            &NORMAL,
            true,
            1.0,
        );
        assert_eq!(d.reached, vec![1]);
        assert!(d.arrived && d.twist == Twist::ZERO);
    }

    #[test]
    fn targets_are_pending_goals_with_a_pose_not_yet_reached() {
        let t = |goal_id, pending, pose: Option<Pose2>| PlanTarget {
            goal_id,
            kind: "waypoint".into(),
            pose,
            tolerance_m: 0.5,
            pending,
        };
        let plan = PlanView {
            version: 3,
            targets: vec![
                t(1, false, Some(Pose2::new(1.0, 0.0, 0.0))),
                t(2, true, Some(Pose2::new(2.0, 0.0, 0.0))),
                t(3, true, None),
                t(4, true, Some(Pose2::new(4.0, 0.0, 0.0))),
                t(5, true, Some(Pose2::new(5.0, 0.0, 0.0))),
            ],
        };
        let ids = |v: Vec<Target>| v.iter().map(|t| t.goal_id).collect::<Vec<_>>();
        assert_eq!(ids(targets(&plan, None, &BTreeSet::new())), vec![2, 4, 5]);
        assert_eq!(ids(targets(&plan, None, &BTreeSet::from([4]))), vec![2, 5]);
        assert_eq!(ids(targets(&plan, Some(5), &BTreeSet::new())), vec![5]);
        assert_eq!(ids(targets(&plan, Some(1), &BTreeSet::new())), Vec::<u64>::new());
    }
}
