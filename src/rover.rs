//! The rover handlers a daemon runs, from its `[rover]` settings.

use std::net::SocketAddr;
use std::net::ToSocketAddrs;
use std::sync::Arc;

use cairn_agents::action::ActionHandler;
use cairn_hal::rover::ControlConfig;
use cairn_hal::rover::ControlHandler;
use cairn_hal::rover::PerceptionConfig;
use cairn_hal::rover::PerceptionHandler;
use cairn_hal::rover::RoverHardware;
use cairn_hal::rover::RoverSample;
use cairn_hal::rover::SimRover;
use tokio::sync::watch;

use crate::config::RoverSettings;
use crate::error::Error;

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
    /// One per handler.
    pub samples: Vec<watch::Receiver<Option<RoverSample>>>,
}

/// Builds the handlers `settings` ask for; none without hardware.
pub fn handlers(settings: &RoverSettings) -> Result<RoverHandlers, Error> {
    let mut out = RoverHandlers {
        handlers: Vec::new(),
        capabilities: Vec::new(),
        samples: Vec::new(),
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
        (Some(addr), None) => (
            Arc::new(SimRover::new(resolve(addr)?)),
            format!("simulated world at {addr}"),
        ),
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
        out.samples.push(h.samples());
        out.handlers.push((PERCEIVE.to_string(), Arc::new(h)));
        out.capabilities.push(SENSORS_CAPABILITY.to_string());
    }
    if settings.navigate {
        let h = ControlHandler::new(hardware, ControlConfig::default()).map_err(bad)?;
        out.samples.push(h.samples());
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
