//! The rover handlers against a real world server, with the cluster played
//! by channels: the test grants the permit, sets the limits and marks goals
//! done the way the replicated plan would.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use cairn_hal::action::{
    ActionContext, ActionFeedback, ActionGoal, ActionHandler, ActionOutcome, ClusterReport, Limits, OperatingMode,
    Permit, PlanTarget, PlanView,
};
use cairn_hal::rover::{ControlConfig, ControlHandler, PerceptionConfig, PerceptionHandler, SimRover};
use cairn_hal::sim::{Fault, ServerConfig, WorldClient, WorldConfig};
use cairn_hal::{DeviceKind, Pose2};
use tokio::sync::{broadcast, mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::harness::{wait_for, RunningWorld};

/// A condition on the reports seen so far.
type ReportCheck = Box<dyn Fn(&[ClusterReport]) -> bool + Send>;

const LIMIT: Duration = Duration::from_secs(60);

/// The cluster side of one running action.
struct Run {
    limits: watch::Sender<Limits>,
    permit: watch::Sender<Permit>,
    cancel: watch::Sender<bool>,
    feedback: watch::Receiver<Option<ActionFeedback>>,
    /// Every report, in order.
    reports: Arc<std::sync::Mutex<Vec<ClusterReport>>>,
    outcome: JoinHandle<ActionOutcome>,
    _plan: Arc<watch::Sender<PlanView>>,
}

fn plan(points: &[(f64, f64)]) -> PlanView {
    PlanView {
        version: 1,
        targets: points
            .iter()
            .enumerate()
            .map(|(i, (x, y))| PlanTarget {
                goal_id: i as u64 + 1,
                kind: "waypoint".into(),
                pose: Some(Pose2::new(*x, *y, 0.0)),
                tolerance_m: 0.5,
                pending: true,
            })
            .collect(),
    }
}

fn normal(speed: f64) -> Limits {
    Limits {
        mode: OperatingMode::Normal,
        max_speed_mps: speed,
    }
}

/// Starts `handler` on task `task_id` under `epoch`; reported goals are
/// marked done in the plan, as the cluster would.
fn start(handler: Arc<dyn ActionHandler>, epoch: u64, view: PlanView, limits: Limits) -> Run {
    let (cancel_tx, cancel) = watch::channel(false);
    let (permit_tx, permit) = watch::channel(Permit::Valid {
        until: Instant::now() + Duration::from_secs(3600),
    });
    let (limits_tx, limits_rx) = watch::channel(limits);
    let plan_tx = Arc::new(watch::channel(view).0);
    let (_params_tx, params) = broadcast::channel(4);
    let (_values_tx, values) = watch::channel((0, BTreeMap::new()));
    let (feedback_tx, feedback) = watch::channel(None);
    let (reports_tx, mut reports_rx) = mpsc::channel(16);
    let goal = ActionGoal {
        task_id: 1,
        epoch,
        kind: "test".into(),
        attempt: 0,
        priority: 0,
        plan_goal_id: None,
        progress_percent: 0,
    };
    let ctx = ActionContext::new(
        goal,
        cancel,
        permit,
        limits_rx,
        plan_tx.subscribe(),
        params,
        values,
        feedback_tx,
        reports_tx,
    );
    let reports = Arc::new(std::sync::Mutex::new(Vec::new()));
    let (log, plan_w) = (Arc::clone(&reports), Arc::clone(&plan_tx));
    tokio::spawn(async move {
        while let Some(r) = reports_rx.recv().await {
            if let ClusterReport::GoalReached { goal_id } = &r {
                plan_w.send_modify(|p| {
                    p.version += 1;
                    for t in p.targets.iter_mut().filter(|t| t.goal_id == *goal_id) {
                        t.pending = false;
                    }
                });
            }
            log.lock().unwrap_or_else(|e| e.into_inner()).push(r);
        }
    });
    Run {
        limits: limits_tx,
        permit: permit_tx,
        cancel: cancel_tx,
        feedback,
        reports,
        outcome: tokio::spawn(handler.run(ctx)),
        _plan: plan_tx,
    }
}

fn control(world: &RunningWorld) -> Arc<dyn ActionHandler> {
    Arc::new(
        ControlHandler::new(Arc::new(SimRover::new(world.addr)), ControlConfig::default())
            .unwrap_or_else(|e| panic!("{e}")),
    )
}

async fn outcome(run: Run) -> ActionOutcome {
    match tokio::time::timeout(LIMIT, run.outcome).await {
        Ok(Ok(o)) => o,
        other => panic!("handler did not finish: {other:?}"),
    }
}

async fn world() -> (RunningWorld, WorldClient) {
    let w = RunningWorld::start(WorldConfig::default(), ServerConfig::default()).await;
    let c = w.client().await;
    (w, c)
}

/// Speeds seen over `window`, sampled every 50 ms.
async fn speeds(client: &mut WorldClient, window: Duration) -> Vec<f64> {
    let end = Instant::now() + window;
    let mut v = Vec::new();
    while Instant::now() < end {
        let s = client.status().await.unwrap_or_else(|e| panic!("{e}"));
        v.push(s.velocity.linear_mps);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t560_control_visits_every_waypoint_in_order_and_succeeds() {
    let (w, mut client) = world().await;
    let route = [(4.0, 0.0), (4.0, 4.0), (0.0, 4.0)];
    let run = start(control(&w), 3, plan(&route), normal(1.0));
    let reports = Arc::clone(&run.reports);
    let feedback = run.feedback.clone();
    assert_eq!(outcome(run).await, ActionOutcome::Succeeded);
    let reached: Vec<u64> = reports
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .iter()
        .filter_map(|r| match r {
            ClusterReport::GoalReached { goal_id } => Some(*goal_id),
            _ => None,
        })
        .collect();
    assert_eq!(reached, vec![1, 2, 3]);
    let s = client.status().await.unwrap_or_else(|e| panic!("{e}"));
    let (x, y) = (s.pose.x_m, s.pose.y_m);
    assert!(
        (x - 0.0).hypot(y - 4.0) < 1.0,
        "ended at ({x:.2}, {y:.2}), not near the last waypoint"
    );
    assert_eq!(s.collisions, 0);
    assert!(s.epochs.iter().all(|e| e.epoch == 3), "{:?}", s.epochs);
    assert_eq!(feedback.borrow().as_ref().map(|f| f.percent), Some(100));
    w.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t561_imu_failure_leaves_gps_only_at_half_speed_and_the_rover_goes_on() {
    let (w, mut client) = world().await;
    let run = start(control(&w), 1, plan(&[(40.0, 0.0)]), normal(1.0));
    wait_for(&mut client, LIMIT, "cruising", |s| s.velocity.linear_mps > 0.8).await;
    client
        .inject_fault(DeviceKind::Imu, Fault::Failed)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    // The cluster's answer to a failed IMU (the default policy).
    run.limits.send_replace(Limits {
        mode: OperatingMode::GpsOnly,
        max_speed_mps: 0.5,
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let start = client.status().await.unwrap_or_else(|e| panic!("{e}"));
    let v = speeds(&mut client, Duration::from_secs(3)).await;
    let end = client.status().await.unwrap_or_else(|e| panic!("{e}"));
    let max = v.iter().copied().fold(0.0, f64::max);
    let moved = (end.pose.x_m - start.pose.x_m).hypot(end.pose.y_m - start.pose.y_m);
    assert!(max <= 0.5 + 1e-9, "faster than half the 1.0 m/s limit: {max}");
    assert!(
        moved > 0.5,
        "should keep driving on GPS alone: moved {moved:.2} m in 3 s"
    );
    let _ = run.cancel.send(true);
    assert_eq!(outcome(run).await, ActionOutcome::Cancelled);
    wait_for(&mut client, LIMIT, "stopped after cancel", |s| {
        s.velocity.linear_mps == 0.0
    })
    .await;
    w.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t562_lidar_failure_stops_the_rover_within_a_metre() {
    let (w, mut client) = world().await;
    let run = start(control(&w), 1, plan(&[(40.0, 0.0)]), normal(1.0));
    let at = wait_for(&mut client, LIMIT, "cruising", |s| s.velocity.linear_mps > 0.9).await;
    client
        .inject_fault(DeviceKind::Range, Fault::Failed)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let stopped = wait_for(&mut client, Duration::from_secs(5), "stopped", |s| {
        s.velocity.linear_mps == 0.0
    })
    .await;
    let travelled = (stopped.pose.x_m - at.pose.x_m).hypot(stopped.pose.y_m - at.pose.y_m);
    // Blind for half a second (5 missed scans) at ≤ 1 m/s, plus one cycle.
    assert!(travelled < 1.0, "travelled {travelled:.2} m after the lidar failed");
    // It stays stopped while blind, and resumes when the lidar is back.
    let v = speeds(&mut client, Duration::from_millis(700)).await;
    assert!(v.iter().all(|s| *s == 0.0), "moved while blind: {v:?}");
    client
        .inject_fault(DeviceKind::Range, Fault::None)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    wait_for(&mut client, Duration::from_secs(5), "moving again", |s| {
        s.velocity.linear_mps > 0.5
    })
    .await;
    let _ = run.cancel.send(true);
    assert_eq!(outcome(run).await, ActionOutcome::Cancelled);
    w.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t563_a_deposed_controller_is_kept_off_the_wheels() {
    let (w, mut client) = world().await;
    let old = start(control(&w), 5, plan(&[(40.0, 0.0)]), normal(1.0));
    wait_for(&mut client, LIMIT, "old controller driving", |s| {
        s.velocity.linear_mps > 0.5
    })
    .await;
    // The task moves on: a newer holder drives under epoch 7 while the old
    // one still believes it holds the permit (a paused node waking up).
    let new = start(control(&w), 7, plan(&[(0.0, 10.0)]), normal(1.0));
    assert!(
        matches!(outcome(old).await, ActionOutcome::Failed { reason } if reason.contains("epoch 7")),
        "the old controller must give up once refused"
    );
    let s = wait_for(&mut client, LIMIT, "new controller driving", |s| s.fence.current == 7).await;
    assert!(s.fence.rejected >= 1, "{:?}", s.fence);
    let five = s.epochs.iter().find(|e| e.epoch == 5).copied();
    let seven = s.epochs.iter().find(|e| e.epoch == 7).copied();
    match (five, seven) {
        (Some(five), Some(seven)) => assert!(five.last <= seven.first, "{:?}", s.epochs),
        _ => panic!("both epochs should have driven: {:?}", s.epochs),
    }
    let _ = new.cancel.send(true);
    assert_eq!(outcome(new).await, ActionOutcome::Cancelled);
    w.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t564_control_holds_without_a_permit_and_on_e_stop() {
    let (w, mut client) = world().await;
    let run = start(control(&w), 1, plan(&[(40.0, 0.0)]), normal(1.0));
    wait_for(&mut client, LIMIT, "driving", |s| s.velocity.linear_mps > 0.5).await;
    run.permit.send_replace(Permit::Revoked);
    wait_for(&mut client, Duration::from_secs(2), "stopped on revoke", |s| {
        s.velocity.linear_mps == 0.0
    })
    .await;
    run.permit.send_replace(Permit::Valid {
        until: Instant::now() + Duration::from_secs(3600),
    });
    wait_for(&mut client, Duration::from_secs(5), "driving again", |s| {
        s.velocity.linear_mps > 0.5
    })
    .await;
    client.set_estop(true).await.unwrap_or_else(|e| panic!("{e}"));
    tokio::time::sleep(Duration::from_millis(500)).await;
    let v = speeds(&mut client, Duration::from_millis(500)).await;
    assert!(v.iter().all(|s| *s == 0.0), "moved under e-stop: {v:?}");
    client.set_estop(false).await.unwrap_or_else(|e| panic!("{e}"));
    wait_for(&mut client, Duration::from_secs(5), "released", |s| {
        s.velocity.linear_mps > 0.5
    })
    .await;
    let _ = run.cancel.send(true);
    assert_eq!(outcome(run).await, ActionOutcome::Cancelled);
    w.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t565_perception_reports_sensor_health_changes_debounced() {
    let (w, mut client) = world().await;
    let handler: Arc<dyn ActionHandler> = Arc::new(
        PerceptionHandler::new(Arc::new(SimRover::new(w.addr)), PerceptionConfig::default())
            .unwrap_or_else(|e| panic!("{e}")),
    );
    let run = start(handler, 2, PlanView::default(), normal(1.0));
    let health = |reports: &[ClusterReport], name: &str| {
        reports.iter().rev().find_map(|r| match r {
            ClusterReport::SensorHealth { sensor, health } if sensor == name => Some(*health),
            _ => None,
        })
    };
    let until = |what: &'static str, f: ReportCheck| {
        let reports = Arc::clone(&run.reports);
        async move {
            let deadline = Instant::now() + Duration::from_secs(10);
            loop {
                if f(&reports.lock().unwrap_or_else(|e| e.into_inner())) {
                    return;
                }
                assert!(Instant::now() < deadline, "timed out waiting for {what}");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    };
    use cairn_hal::action::SensorState::{Failed, Ok as Fine};
    until(
        "every sensor reported ok",
        Box::new(move |r| {
            ["imu", "gps", "lidar", "odometry"]
                .iter()
                .all(|n| health(r, n) == Some(Fine))
        }),
    )
    .await;
    client
        .inject_fault(DeviceKind::Range, Fault::Failed)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    until("lidar failed", Box::new(move |r| health(r, "lidar") == Some(Failed))).await;
    client
        .inject_fault(DeviceKind::Range, Fault::None)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    until("lidar ok again", Box::new(move |r| health(r, "lidar") == Some(Fine))).await;
    // One report per change, no flapping: a failing lidar is degraded for
    // its first four missed scans (longer than the debounce), then failed.
    let lidar: Vec<_> = run
        .reports
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .iter()
        .filter_map(|r| match r {
            ClusterReport::SensorHealth { sensor, health } if sensor == "lidar" => Some(*health),
            _ => None,
        })
        .collect();
    use cairn_hal::action::SensorState::Degraded;
    assert_eq!(lidar, vec![Fine, Degraded, Failed, Fine]);
    assert!(matches!(
        run.feedback.borrow().as_ref().and_then(|f| f.detail.clone()),
        Some(cairn_hal::action::FeedbackDetail::Pose(_))
    ));
    let _ = run.cancel.send(true);
    assert_eq!(outcome(run).await, ActionOutcome::Cancelled);
    w.stop().await;
}
