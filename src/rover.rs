//! The rover handlers a daemon runs, from its `[rover]` settings.

use std::net::SocketAddr;
use std::net::ToSocketAddrs;
use std::sync::Arc;
use std::time::Duration;

use cairn_agents::action::ActionHandler;
use cairn_hal::rover::ControlConfig;
use cairn_hal::rover::ControlHandler;
use cairn_hal::rover::PerceptionConfig;
use cairn_hal::rover::PerceptionHandler;
use cairn_hal::rover::RoverHardware;
use cairn_hal::rover::RoverSample;
use cairn_hal::rover::SimRover;
use cairn_hal::sim::WorldClient;
use cairn_raft::RaftNode;
use cairn_state::Mission;
use tokio::sync::watch;

use crate::config::RoverSettings;
use crate::error::Error;
use crate::telemetry::Telemetry;
use cairn_raft::sync::AbortOnDrop;

pub use cairn_hal::rover::DRIVE_CAPABILITY;
pub use cairn_hal::rover::NAVIGATE;
pub use cairn_hal::rover::PERCEIVE;
pub use cairn_hal::rover::SENSORS_CAPABILITY;

/// The handlers, the capabilities they need the node to offer, and their
/// live samples (pose and health at the loop rate, for telemetry).
pub struct RoverHandlers {
    /// `(task kind, handler)`.
    pub handlers: Vec<(String, Arc<dyn ActionHandler>)>,
    /// Capabilities to offer the scheduler.
    pub capabilities: Vec<String>,
    /// The control handler's samples, if it runs here.
    pub control_samples: Option<watch::Receiver<Option<RoverSample>>>,
    /// The perception handler's samples, if it runs here.
    pub perception_samples: Option<watch::Receiver<Option<RoverSample>>>,
    /// The simulated world, if that is the hardware.
    pub sim: Option<SocketAddr>,
}

/// Builds the handlers `settings` ask for; none without hardware.
pub fn handlers(settings: &RoverSettings) -> Result<RoverHandlers, Error> {
    let mut out = RoverHandlers {
        handlers: Vec::new(),
        capabilities: Vec::new(),
        control_samples: None,
        perception_samples: None,
        sim: None,
    };
    let bad = |e: cairn_hal::Error| Error::Config {
        reason: format!("rover: {e}"),
    };
    let (hardware, describe): (Arc<dyn RoverHardware>, String) = match (&settings.sim, &settings.rpi) {
        (None, None) => return Ok(out),
        (Some(_), Some(_)) => {
            return Err(Error::Config {
                reason: "rover: set either sim or [rover.rpi], not both".into(),
            })
        }
        (Some(addr), None) => {
            let at = resolve(addr)?;
            out.sim = Some(at);
            (Arc::new(SimRover::new(at)), format!("simulated world at {addr}"))
        }
        #[cfg(feature = "rpi")]
        (None, Some(rpi)) => (
            Arc::new(cairn_hal::rover::RpiRover::open(rpi.clone()).map_err(bad)?),
            "raspberry pi hardware".to_string(),
        ),
        #[cfg(not(feature = "rpi"))]
        (None, Some(_)) => {
            return Err(Error::Config {
                reason: "rover: [rover.rpi] needs a cairn built with `--features rpi`".into(),
            })
        }
    };
    if settings.perceive {
        let h = PerceptionHandler::new(Arc::clone(&hardware), PerceptionConfig::default()).map_err(bad)?;
        out.perception_samples = Some(h.samples());
        out.handlers.push((PERCEIVE.to_string(), Arc::new(h)));
        out.capabilities.push(SENSORS_CAPABILITY.to_string());
    }
    if settings.navigate {
        let h = ControlHandler::new(hardware, ControlConfig::default()).map_err(bad)?;
        out.control_samples = Some(h.samples());
        out.handlers.push((NAVIGATE.to_string(), Arc::new(h)));
        out.capabilities.push(DRIVE_CAPABILITY.to_string());
    }
    tracing::info!(hardware = %describe, kinds = ?out.handlers.iter().map(|h| &h.0).collect::<Vec<_>>(), "rover handlers running");
    Ok(out)
}

fn resolve(addr: &str) -> Result<SocketAddr, Error> {
    addr.to_socket_addrs()
        .ok()
        .and_then(|mut a| a.next())
        .ok_or_else(|| Error::Config {
            reason: format!("rover.sim: {addr:?} is not a host:port address"),
        })
}

/// Publishes what the handlers see as telemetry (never replicated):
/// `rover.pose` from control at up to 10 Hz, `rover.perception` (pose and
/// sensor health) at up to 2 Hz, and, from the Raft leader only, the
/// simulated world's view as `sim.world` at 2 Hz (so one node, not all,
/// sends it).
pub(crate) fn start_publishers(
    telemetry: &Telemetry,
    rover: &RoverHandlers,
    node: Arc<RaftNode<Mission>>,
) -> Vec<AbortOnDrop> {
    let mut tasks = Vec::new();
    if let Some(rx) = &rover.control_samples {
        tasks.push(AbortOnDrop::spawn(publish_samples(
            telemetry.clone(),
            rx.clone(),
            "rover.pose",
            Duration::from_millis(100),
            pose_json,
        )));
    }
    if let Some(rx) = &rover.perception_samples {
        tasks.push(AbortOnDrop::spawn(publish_samples(
            telemetry.clone(),
            rx.clone(),
            "rover.perception",
            Duration::from_millis(500),
            perception_json,
        )));
    }
    if let Some(addr) = rover.sim {
        tasks.push(AbortOnDrop::spawn(publish_world(telemetry.clone(), node, addr)));
    }
    tasks
}

async fn publish_samples(
    telemetry: Telemetry,
    mut rx: watch::Receiver<Option<RoverSample>>,
    topic: &'static str,
    every: Duration,
    render: fn(&RoverSample) -> Option<serde_json::Value>,
) {
    while rx.changed().await.is_ok() {
        let payload = rx.borrow_and_update().as_ref().and_then(render);
        if let Some(payload) = payload {
            if let Err(e) = telemetry.publish(topic, payload) {
                tracing::debug!(topic, error = %e, "telemetry not published");
            }
        }
        tokio::time::sleep(every).await;
    }
}

fn pose_json(s: &RoverSample) -> Option<serde_json::Value> {
    let p = s.pose?;
    Some(serde_json::json!({
        "x_m": p.x_m, "y_m": p.y_m, "heading_rad": p.heading_rad, "speed_mps": s.speed_mps,
        "mode": s.mode.to_string(), "task_id": s.task_id, "epoch": s.epoch,
        "holding": s.holding, "distance_m_remaining": s.distance_m_remaining,
    }))
}

fn perception_json(s: &RoverSample) -> Option<serde_json::Value> {
    let sensors: serde_json::Map<String, serde_json::Value> = s
        .sensors
        .iter()
        .map(|(name, state)| (name.clone(), serde_json::json!(format!("{state:?}").to_lowercase())))
        .collect();
    Some(serde_json::json!({
        "pose": s.pose.map(|p| serde_json::json!({"x_m": p.x_m, "y_m": p.y_m, "heading_rad": p.heading_rad})),
        "speed_mps": s.speed_mps, "task_id": s.task_id, "sensors": sensors,
    }))
}

async fn publish_world(telemetry: Telemetry, node: Arc<RaftNode<Mission>>, addr: SocketAddr) {
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut client: Option<WorldClient> = None;
    tracing::debug!(world = %addr, "publishing the world view while leading");
    loop {
        tick.tick().await;
        if node.leading_term().is_none() {
            client = None;
            continue;
        }
        let c = match &mut client {
            Some(c) => c,
            None => match WorldClient::connect(addr).await {
                Ok(c) => client.insert(c),
                Err(e) => {
                    tracing::debug!(world = %addr, error = %e, "world not reachable for telemetry");
                    continue;
                }
            },
        };
        match c.status().await {
            Ok(s) => {
                let payload = serde_json::json!({
                    "pose": {"x_m": s.pose.x_m, "y_m": s.pose.y_m, "heading_rad": s.pose.heading_rad},
                    "speed_mps": s.velocity.linear_mps,
                    "obstacles": s.obstacles.iter().map(|o| serde_json::json!({"x_m": o.x_m, "y_m": o.y_m, "radius_m": o.radius_m})).collect::<Vec<_>>(),
                    "fence": {"current": s.fence.current, "accepted": s.fence.accepted, "rejected": s.fence.rejected},
                    "collisions": s.collisions,
                    "estop": s.estop_engaged,
                });
                if let Err(e) = telemetry.publish("sim.world", payload) {
                    tracing::debug!(error = %e, "sim.world not published");
                }
            }
            Err(e) => {
                tracing::debug!(world = %addr, error = %e, "world status failed");
                client = None;
            }
        }
    }
}
