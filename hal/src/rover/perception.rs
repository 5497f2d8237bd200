//! The perception handler: localisation, obstacles, sensor health.

use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tokio::time::{Instant, MissedTickBehavior};

use crate::action::{
    ActionContext, ActionFeedback, ActionFuture, ActionHandler, ActionOutcome, ClusterReport, FeedbackDetail,
    OperatingMode, SensorState,
};
use crate::algo::ekf::EkfMode;
use crate::error::Error;
use crate::rover::localiser::{Localiser, LocaliserConfig};
use crate::rover::{blocking, open_devices, sensor_name, sensor_state, RoverHardware, RoverSample};

/// Tuning of the [`PerceptionHandler`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PerceptionConfig {
    /// Loop rate, Hz.
    pub rate_hz: f64,
    /// Localisation tuning.
    pub localiser: LocaliserConfig,
    /// A sensor's new health is reported once it has held for this many
    /// cycles in a row (3 at 10 Hz: a single dropout does not flap the
    /// cluster's mode; a failure still reaches it within a second).
    pub debounce_cycles: u32,
    /// How often the pose goes into the task's feedback (replicated), ms.
    pub feedback_interval_ms: u64,
}

impl Default for PerceptionConfig {
    fn default() -> Self {
        Self {
            rate_hz: 10.0,
            localiser: LocaliserConfig::default(),
            debounce_cycles: 3,
            feedback_interval_ms: 2_000,
        }
    }
}

/// Localises the rover and reports sensor health (task kind
/// [`crate::rover::PERCEIVE`]). Runs until cancelled.
pub struct PerceptionHandler {
    hardware: Arc<dyn RoverHardware>,
    config: PerceptionConfig,
    samples: watch::Sender<Option<RoverSample>>,
}

impl PerceptionHandler {
    /// A handler over `hardware`.
    pub fn new(hardware: Arc<dyn RoverHardware>, config: PerceptionConfig) -> Result<Self, Error> {
        if !(config.rate_hz.is_finite() && (1.0..=100.0).contains(&config.rate_hz)) || config.debounce_cycles == 0 {
            return Err(Error::InvalidConfig {
                reason: format!(
                    "perception needs rate_hz in 1..=100 and debounce_cycles > 0, got {} Hz, {}",
                    config.rate_hz, config.debounce_cycles
                ),
            });
        }
        Ok(Self {
            hardware,
            config,
            samples: watch::channel(None).0,
        })
    }

    /// The pose and health at the loop rate (for telemetry).
    pub fn samples(&self) -> watch::Receiver<Option<RoverSample>> {
        self.samples.subscribe()
    }
}

impl ActionHandler for PerceptionHandler {
    fn run(&self, ctx: ActionContext) -> ActionFuture {
        Box::pin(run(
            Arc::clone(&self.hardware),
            self.config.clone(),
            self.samples.clone(),
            ctx,
        ))
    }
}

/// Debounces one sensor's health before it is reported.
#[derive(Debug, Clone, Default)]
struct Debounce {
    reported: Option<SensorState>,
    candidate: Option<(SensorState, u32)>,
    /// Decided but not yet taken by the report queue.
    unsent: Option<SensorState>,
}

impl Debounce {
    /// Feeds one observation; returns the state to report, if it changed.
    fn observe(&mut self, now: SensorState, cycles: u32) -> Option<SensorState> {
        if self.reported == Some(now) {
            self.candidate = None;
            return None;
        }
        let seen = match self.candidate {
            Some((s, n)) if s == now => n + 1,
            _ => 1,
        };
        self.candidate = Some((now, seen));
        if seen >= cycles {
            self.reported = Some(now);
            self.candidate = None;
            return Some(now);
        }
        None
    }
}

async fn run(
    hardware: Arc<dyn RoverHardware>,
    config: PerceptionConfig,
    samples: watch::Sender<Option<RoverSample>>,
    ctx: ActionContext,
) -> ActionOutcome {
    let task_id = ctx.goal.task_id;
    let epoch = ctx.goal.epoch;
    let loc_config = config.localiser.clone();
    let opened = open_devices(move || Localiser::new(hardware.sensors()?, hardware.origin()?, loc_config)).await;
    let mut localiser = match opened {
        Ok(l) => l,
        Err(failed) => return failed,
    };
    tracing::info!(task = task_id, epoch, "perception running");
    let mut ticker = tokio::time::interval(Duration::from_secs_f64(1.0 / config.rate_hz));
    ticker.set_missed_tick_behavior(MissedTickBehavior::Skip);
    let stop = ctx.stop_signal();
    let mut last = Instant::now();
    let mut last_feedback: Option<Instant> = None;
    let mut debounce: Vec<Debounce> = Vec::new();
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            _ = stop.wait() => {
                if ctx.is_cancelled() {
                    return ActionOutcome::Cancelled;
                }
                // Perception moves nothing, but without a permit this node
                // no longer speaks for the task: end; the runtime restarts it
                // if the lease comes back.
                return ActionOutcome::Failed { reason: "permit lost".into() };
            }
        }
        let now = Instant::now();
        let dt_s = now.duration_since(last).as_secs_f64();
        last = now;
        let limits = ctx.current_limits();
        let want = if limits.mode == OperatingMode::GpsOnly {
            EkfMode::GpsOnly
        } else {
            EkfMode::Full
        };
        let (back, p) = match blocking(localiser, move |l| l.cycle(dt_s, want)).await {
            Ok(v) => v,
            Err(reason) => return ActionOutcome::Failed { reason },
        };
        localiser = back;

        debounce.resize_with(p.health.len(), Debounce::default);
        for ((kind, health), d) in p.health.iter().zip(debounce.iter_mut()) {
            let state = sensor_state(health);
            if let Some(changed) = d.observe(state, config.debounce_cycles) {
                match health {
                    crate::device::Health::Ok => tracing::info!(sensor = sensor_name(*kind), "sensor ok"),
                    other => tracing::warn!(sensor = sensor_name(*kind), health = ?other, "sensor health changed"),
                }
                d.unsent = Some(changed);
            }
            if let Some(s) = d.unsent {
                let sent = ctx.report(ClusterReport::SensorHealth {
                    sensor: sensor_name(*kind).to_string(),
                    health: s,
                });
                if sent {
                    d.unsent = None;
                }
            }
        }

        samples.send_replace(Some(RoverSample {
            task_id,
            epoch,
            pose: p.pose,
            speed_mps: p.twist.linear_mps,
            mode: limits.mode,
            holding: None,
            distance_m_remaining: None,
            sensors: p
                .health
                .iter()
                .map(|(k, h)| (sensor_name(*k).to_string(), sensor_state(h)))
                .collect(),
        }));
        let due =
            last_feedback.is_none_or(|t| now.duration_since(t) >= Duration::from_millis(config.feedback_interval_ms));
        if due {
            if let Some(pose) = p.pose {
                ctx.feedback(ActionFeedback {
                    percent: 0,
                    detail: Some(FeedbackDetail::Pose(pose)),
                });
                last_feedback = Some(now);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn health_is_reported_once_it_holds_and_a_blip_is_not() {
        let mut d = Debounce::default();
        let (ok, degraded, failed) = (SensorState::Ok, SensorState::Degraded, SensorState::Failed);
        assert_eq!(d.observe(ok, 3), None);
        assert_eq!(d.observe(ok, 3), None);
        assert_eq!(d.observe(ok, 3), Some(ok), "the first state is reported too");
        assert_eq!(d.observe(degraded, 3), None);
        assert_eq!(d.observe(ok, 3), None, "a one-cycle blip is not a change");
        for _ in 0..2 {
            assert_eq!(d.observe(failed, 3), None);
        }
        assert_eq!(d.observe(failed, 3), Some(failed));
        assert_eq!(d.observe(failed, 3), None, "reported once");
    }
}
