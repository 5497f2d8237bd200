//! Actions: the seam between the cluster's task runtime and the code that
//! does the work (perception, control, science).
//!
//! An action is a long-running task in the style of a ROS 2 action: it gets a
//! **goal**, publishes **feedback** while it works, ends with a **result**,
//! and honours **cancel** requests. On top of ROS's shape it is **fenced**:
//! it may move actuators only while its [`Permit`] is valid (the node holds
//! the task's current epoch and a lease it renews through the cluster), and
//! it learns the rover's effective [`Limits`] (degradation mode and speed
//! limit) the moment they change.
//!
//! The trait lives here, in the hardware crate, rather than beside the
//! runtime in `cairn-agents`: handlers built on the device traits implement
//! it without this crate depending on any cluster crate. The types mirror the
//! replicated ones (`cairn-state`'s mode, feedback, parameter values) in
//! plain form; `cairn-agents` converts between the two.
//!
//! # Contract for handlers
//! - Check [`ActionContext::may_actuate`] right before every actuator command,
//!   and send drive commands under [`ActionGoal::epoch`] so the drivetrain's
//!   [`crate::EpochFence`] refuses them once a newer holder exists.
//! - Wake on [`ActionContext::stopped`] (cancel or lost permit) and stop the
//!   actuators at once; the runtime drops a handler that has not returned
//!   within a short grace after its permit is lost.
//! - Publish feedback at least every few seconds while working: a task whose
//!   progress stops is treated as stalled and moved to another node.

use std::collections::BTreeMap;
use std::fmt;
use std::future::Future;
use std::pin::Pin;

use serde::{Deserialize, Serialize};
use tokio::sync::{broadcast, mpsc, watch};
use tokio::time::Instant;

use crate::geo::Pose2;

/// What the handler is asked to do.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ActionGoal {
    /// The task's id in the cluster.
    pub task_id: u64,
    /// The fencing epoch of this assignment. Send actuator commands under it.
    pub epoch: u64,
    /// The task kind, e.g. `navigate`; the runtime dispatches on it.
    pub kind: String,
    /// Failed attempts before this one.
    pub attempt: u32,
    /// Priority (higher runs first).
    pub priority: u8,
    /// The plan goal this task serves, if any (see [`ActionContext::plan`]).
    pub plan_goal_id: Option<u64>,
    /// Progress last reported for this assignment: non-zero when the handler
    /// is restarted on the same node after a lease lapse, so it can resume.
    pub progress_percent: u8,
}

/// How the rover must operate, as derived from sensor health and policies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum OperatingMode {
    /// Everything nominal.
    Normal,
    /// Full localisation, reduced speed.
    Reduced,
    /// Localise from GPS alone (no IMU fusion).
    GpsOnly,
    /// Do not drive.
    Stop,
}

impl fmt::Display for OperatingMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            OperatingMode::Normal => "normal",
            OperatingMode::Reduced => "reduced",
            OperatingMode::GpsOnly => "gps-only",
            OperatingMode::Stop => "stop",
        })
    }
}

/// The effective operating limits running handlers must respect.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Limits {
    /// The effective mode.
    pub mode: OperatingMode,
    /// Top speed now, m/s (0 in [`OperatingMode::Stop`]).
    pub max_speed_mps: f64,
}

impl Default for Limits {
    /// Until the runtime says otherwise: do not drive.
    fn default() -> Self {
        Self {
            mode: OperatingMode::Stop,
            max_speed_mps: 0.0,
        }
    }
}

/// A parameter value, as handlers see it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum ParamVal {
    /// A boolean.
    Bool(bool),
    /// An integer.
    Int(i64),
    /// A finite float.
    Float(f64),
    /// A string.
    String(String),
    /// One of an enum's choices.
    Enum(String),
}

/// One accepted parameter change, delivered in version order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ParamUpdate {
    /// Global parameter version after the change (strictly increasing).
    pub version: u64,
    /// Dotted name.
    pub name: String,
    /// The new value (validated by the state machine).
    pub value: ParamVal,
}

/// One goal of the mission plan, as handlers see it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PlanTarget {
    /// The plan goal's id.
    pub goal_id: u64,
    /// What kind of goal (`waypoint`, `search-area`, `pick-up`, `deliver`,
    /// `science-sample`).
    pub kind: String,
    /// Where, if the goal has one pose.
    pub pose: Option<Pose2>,
    /// How close counts as reached, metres.
    pub tolerance_m: f64,
    /// Not yet reached or skipped.
    pub pending: bool,
}

/// The mission plan, as handlers see it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PlanView {
    /// Plan version (bumped by every plan change).
    pub version: u64,
    /// Goals in execution order.
    pub targets: Vec<PlanTarget>,
}

/// Typed detail of a feedback message.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum FeedbackDetail {
    /// Distance left to the goal, metres.
    DistanceRemaining(f64),
    /// Expected time left, milliseconds.
    Eta(u64),
    /// Where the rover believes it is.
    Pose(Pose2),
    /// Samples taken so far of a target.
    Samples {
        /// Taken.
        collected: u32,
        /// Planned.
        target: u32,
    },
    /// A short human-readable note.
    Note(String),
}

/// Progress of a running action. Only the latest is kept and reported.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ActionFeedback {
    /// 0..=100 (larger values are clamped to 100).
    pub percent: u8,
    /// Optional typed detail.
    pub detail: Option<FeedbackDetail>,
}

/// How an action ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ActionOutcome {
    /// The goal is done.
    Succeeded,
    /// The attempt failed; the cluster retries it per the task's policy.
    Failed {
        /// Why, for the operator.
        reason: String,
    },
    /// The handler stopped because it was asked to cancel.
    Cancelled,
}

/// Something a handler tells the cluster besides its own progress.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum ClusterReport {
    /// A sensor's health changed (replicated; drives degradation policies).
    SensorHealth {
        /// Sensor name, e.g. `imu`.
        sensor: String,
        /// Its health.
        health: SensorState,
    },
    /// A plan goal was reached.
    GoalReached {
        /// The plan goal.
        goal_id: u64,
    },
}

/// Sensor health as reported to the cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum SensorState {
    /// Working.
    Ok,
    /// Working with reduced quality.
    Degraded,
    /// Not usable.
    Failed,
}

/// Whether the handler may move actuators.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Permit {
    /// Yes, until `until` unless renewed (the runtime renews it while the
    /// cluster confirms the lease).
    Valid {
        /// When the lease runs out.
        until: Instant,
    },
    /// No: the lease or the epoch was lost. Stop actuators now.
    Revoked,
}

impl Permit {
    /// Whether actuating is allowed at `now`.
    pub fn allows(&self, now: Instant) -> bool {
        matches!(self, Permit::Valid { until } if now < *until)
    }
}

/// Everything a running handler gets besides its goal. Built by the runtime.
pub struct ActionContext {
    /// The goal.
    pub goal: ActionGoal,
    /// `true` once cancellation was requested.
    pub cancel: watch::Receiver<bool>,
    /// The actuation permit.
    pub permit: watch::Receiver<Permit>,
    /// Effective mode and speed limit; changes are delivered at once.
    pub limits: watch::Receiver<Limits>,
    /// The mission plan; changes are delivered at once.
    pub plan: watch::Receiver<PlanView>,
    /// Parameter changes in version order. On `Lagged` (more than the
    /// channel holds arrived while the handler was busy) re-read
    /// [`ActionContext::param_values`].
    pub params: broadcast::Receiver<ParamUpdate>,
    /// Every parameter's current value and the version they are at.
    pub param_values: watch::Receiver<(u64, BTreeMap<String, ParamVal>)>,
    feedback: watch::Sender<Option<ActionFeedback>>,
    reports: mpsc::Sender<ClusterReport>,
}

impl ActionContext {
    /// Assembles a context; the runtime keeps the other ends.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        goal: ActionGoal,
        cancel: watch::Receiver<bool>,
        permit: watch::Receiver<Permit>,
        limits: watch::Receiver<Limits>,
        plan: watch::Receiver<PlanView>,
        params: broadcast::Receiver<ParamUpdate>,
        param_values: watch::Receiver<(u64, BTreeMap<String, ParamVal>)>,
        feedback: watch::Sender<Option<ActionFeedback>>,
        reports: mpsc::Sender<ClusterReport>,
    ) -> Self {
        Self {
            goal,
            cancel,
            permit,
            limits,
            plan,
            params,
            param_values,
            feedback,
            reports,
        }
    }

    /// Whether the handler may command actuators right now: the permit is
    /// valid and no cancel is pending. Check it before every command.
    pub fn may_actuate(&self) -> bool {
        permits(&self.cancel, &self.permit)
    }

    /// Whether cancellation was requested.
    pub fn is_cancelled(&self) -> bool {
        *self.cancel.borrow()
    }

    /// The current limits.
    pub fn current_limits(&self) -> Limits {
        *self.limits.borrow()
    }

    /// Publishes progress (only the latest is kept; the runtime reports it
    /// to the cluster at a bounded rate).
    pub fn feedback(&self, feedback: ActionFeedback) {
        self.feedback.send_replace(Some(feedback));
    }

    /// Tells the cluster something. Bounded: if the runtime is behind, the
    /// report is dropped and `false` returned (health is re-reported on the
    /// next change anyway).
    pub fn report(&self, report: ClusterReport) -> bool {
        self.reports.try_send(report).is_ok()
    }

    /// Resolves when the handler must stop actuating: cancel requested or
    /// permit revoked (or expired). Cancel-safe; use it in `select!`.
    pub async fn stopped(&self) {
        self.stop_signal().wait().await
    }

    /// An owned [`StopSignal`], for a `select!` that also borrows the
    /// context's receivers mutably (e.g. `params.recv()`).
    pub fn stop_signal(&self) -> StopSignal {
        StopSignal {
            cancel: self.cancel.clone(),
            permit: self.permit.clone(),
        }
    }
}

/// Tells a handler when to stop actuating; see [`ActionContext::stop_signal`].
#[derive(Clone, Debug)]
pub struct StopSignal {
    cancel: watch::Receiver<bool>,
    permit: watch::Receiver<Permit>,
}

impl StopSignal {
    /// Whether actuators may be commanded right now.
    pub fn may_actuate(&self) -> bool {
        permits(&self.cancel, &self.permit)
    }

    /// Resolves once cancel is requested or the permit is revoked or
    /// expires. Cancel-safe.
    pub async fn wait(&self) {
        let mut cancel = self.cancel.clone();
        let mut permit_rx = self.permit.clone();
        loop {
            if *cancel.borrow_and_update() {
                return;
            }
            let permit = *permit_rx.borrow_and_update();
            let until = match permit {
                Permit::Revoked => return,
                Permit::Valid { until } => until,
            };
            tokio::select! {
                _ = tokio::time::sleep_until(until) => {
                    if !permit_rx.borrow().allows(Instant::now()) {
                        return;
                    }
                }
                r = cancel.changed() => if r.is_err() { return },
                r = permit_rx.changed() => if r.is_err() { return },
            }
        }
    }
}

/// No cancel, a permit valid now, and a runtime still there to revoke it:
/// once the runtime's side of the permit is gone (the agent aborted), the
/// last value seen can no longer be trusted.
fn permits(cancel: &watch::Receiver<bool>, permit: &watch::Receiver<Permit>) -> bool {
    !*cancel.borrow() && permit.has_changed().is_ok() && permit.borrow().allows(Instant::now())
}

/// A boxed future, as [`ActionHandler::run`] returns it.
pub type ActionFuture = Pin<Box<dyn Future<Output = ActionOutcome> + Send + 'static>>;

/// Runs one kind of action. Registered with the node's agent runtime by the
/// embedding program; one instance serves every task of its kinds.
pub trait ActionHandler: Send + Sync + 'static {
    /// Executes one goal to its end. The future is dropped if the node loses
    /// the task (lease lost, reassigned); handlers stop actuators on
    /// [`ActionContext::stopped`] before that.
    fn run(&self, ctx: ActionContext) -> ActionFuture;
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test(start_paused = true)]
    async fn stopped_fires_when_the_permit_expires_or_cancel_arrives() {
        let (_cancel_tx, cancel) = watch::channel(false);
        let until = Instant::now() + Duration::from_millis(500);
        let (permit_tx, permit) = watch::channel(Permit::Valid { until });
        let (_l, limits) = watch::channel(Limits::default());
        let (_p, plan) = watch::channel(PlanView::default());
        let (ptx, params) = broadcast::channel(4);
        let (_v, values) = watch::channel((0, BTreeMap::new()));
        let (fb, _fb_rx) = watch::channel(None);
        let (rep, _rep_rx) = mpsc::channel(1);
        let goal = ActionGoal {
            task_id: 1,
            epoch: 7,
            kind: "k".into(),
            attempt: 0,
            priority: 0,
            plan_goal_id: None,
            progress_percent: 0,
        };
        let ctx = ActionContext::new(goal, cancel, permit, limits, plan, params, values, fb, rep);
        drop(ptx);
        assert!(ctx.may_actuate());
        let start = Instant::now();
        ctx.stopped().await;
        assert_eq!(start.elapsed(), Duration::from_millis(500), "stops exactly at expiry");
        assert!(!ctx.may_actuate());

        permit_tx.send_replace(Permit::Valid {
            until: Instant::now() + Duration::from_secs(10),
        });
        assert!(ctx.may_actuate());
        permit_tx.send_replace(Permit::Revoked);
        ctx.stopped().await;
        assert!(!ctx.may_actuate());

        // The runtime going away revokes too, whatever was last granted.
        permit_tx.send_replace(Permit::Valid {
            until: Instant::now() + Duration::from_secs(10),
        });
        assert!(ctx.may_actuate() && ctx.stop_signal().may_actuate());
        drop(permit_tx);
        assert!(!ctx.may_actuate() && !ctx.stop_signal().may_actuate());
        ctx.stopped().await;
    }
}
