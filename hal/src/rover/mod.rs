//! The rover's own action handlers: perception and control.
//!
//! Both are [`ActionHandler`](crate::action::ActionHandler)s, registered with
//! a node's agent runtime by task kind, and both are written against the
//! device traits only, so the same code drives the simulated rover and a real
//! one:
//!
//! - [`PerceptionHandler`] (task kind [`PERCEIVE`]): localisation (the EKF
//!   fusing IMU, GPS and wheel odometry), obstacle detection from the lidar,
//!   and the health of every sensor. Health *changes* go into the cluster
//!   (replicated: they drive the degradation policies every node obeys); the
//!   pose goes into the task's feedback every few seconds (replicated, so an
//!   operator and a new coordinator see roughly where the rover is) and, at
//!   the full loop rate, only to this node's [`RoverSample`] channel for
//!   telemetry. Replicating a 10 Hz pose through the log would put 10 fsyncs
//!   a second on every Pi's SD card for data that is stale in 100 ms.
//! - [`ControlHandler`] (task kind [`NAVIGATE`]): follows the replicated
//!   plan's pending goals with pure pursuit, under the effective mode and
//!   speed limit, and stops on cancel, lost permit, e-stop, a failed lidar,
//!   an obstacle ahead or `Stop` mode. Drive commands carry the task's epoch,
//!   so once the task moves to another node the drivetrain refuses the old
//!   holder.
//!
//! Control runs its own [`Localiser`] rather than reading perception's over
//! the network: a control loop cannot wait on a Raft round trip for its
//! pose, and on the rover both run where the sensors are. Perception is the
//! one that *reports*; control only acts on what it reads.
//!
//! Device I/O is blocking (see [`crate::device`]); each handler runs its
//! device work for a cycle on tokio's blocking pool and keeps its decisions
//! on the async side.

mod control;
mod localiser;
mod perception;
#[cfg(feature = "rpi")]
mod rpi;

use std::net::SocketAddr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

pub use control::{ControlConfig, ControlHandler};
pub use localiser::{Localiser, LocaliserConfig, Perception};
pub use perception::{PerceptionConfig, PerceptionHandler};
#[cfg(feature = "rpi")]
pub use rpi::{RpiRover, RpiRoverConfig};

use crate::action::{OperatingMode, SensorState};
use crate::device::{DeviceKind, Drive, EStop, Gps, Health, Imu, Odometry, RangeScanner};
use crate::error::Error;
use crate::geo::{GeoOrigin, Pose2};
use crate::sim::SimHal;

/// Task kind [`PerceptionHandler`] serves.
pub const PERCEIVE: &str = "perceive";
/// Task kind [`ControlHandler`] serves.
pub const NAVIGATE: &str = "navigate";
/// Capability a node offers when it can read the rover's sensors.
pub const SENSORS_CAPABILITY: &str = "sensors";
/// Capability a node offers when it can command the drivetrain.
pub const DRIVE_CAPABILITY: &str = "drive";

/// The sensors one handler run reads.
pub struct SensorSuite {
    /// The IMU.
    pub imu: Box<dyn Imu>,
    /// The GNSS receiver.
    pub gps: Box<dyn Gps>,
    /// The wheel encoders.
    pub odometry: Box<dyn Odometry>,
    /// The lidar.
    pub range: Box<dyn RangeScanner>,
    /// The e-stop input.
    pub estop: Box<dyn EStop>,
}

/// Where the handlers get their devices: the simulated rover ([`SimRover`])
/// or real hardware. Every call may block (it opens devices); handlers call
/// it from the blocking pool.
pub trait RoverHardware: Send + Sync + 'static {
    /// Opens the sensors.
    fn sensors(&self) -> Result<SensorSuite, Error>;
    /// Opens the drivetrain.
    fn drive(&self) -> Result<Box<dyn Drive>, Error>;
    /// The local frame's origin, for turning GPS fixes into metres.
    fn origin(&self) -> Result<GeoOrigin, Error>;
}

/// The simulated rover: every device is a [`SimHal`] handle on the world
/// process at `addr` (`cairn sim run`).
#[derive(Debug, Clone)]
pub struct SimRover {
    addr: SocketAddr,
    timeout: Duration,
}

impl SimRover {
    /// The world at `addr`, with the default client timeout.
    pub fn new(addr: SocketAddr) -> Self {
        Self {
            addr,
            timeout: Duration::from_millis(crate::sim::CLIENT_TIMEOUT_MS),
        }
    }

    /// The world's address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    fn hal(&self) -> Result<SimHal, Error> {
        SimHal::connect_with_timeout(self.addr, self.timeout)
    }
}

impl RoverHardware for SimRover {
    fn sensors(&self) -> Result<SensorSuite, Error> {
        let hal = self.hal()?;
        Ok(SensorSuite {
            imu: Box::new(hal.imu()),
            gps: Box::new(hal.gps()),
            odometry: Box::new(hal.odometry()),
            range: Box::new(hal.range()),
            estop: Box::new(hal.estop()),
        })
    }

    fn drive(&self) -> Result<Box<dyn Drive>, Error> {
        Ok(Box::new(self.hal()?.drive()))
    }

    fn origin(&self) -> Result<GeoOrigin, Error> {
        Ok(self.hal()?.status()?.origin)
    }
}

/// The name a sensor's health is replicated under; degradation policies
/// match on it (`imu`, `gps`, `lidar`, `odometry`).
pub fn sensor_name(kind: DeviceKind) -> &'static str {
    match kind {
        DeviceKind::Range => "lidar",
        other => other.as_str(),
    }
}

/// A device's health as the cluster records it.
pub fn sensor_state(health: &Health) -> SensorState {
    match health {
        Health::Ok => SensorState::Ok,
        Health::Degraded { .. } => SensorState::Degraded,
        Health::Failed { .. } => SensorState::Failed,
    }
}

/// What a running rover handler last saw and did, at its loop rate, for
/// this node's telemetry (never replicated).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RoverSample {
    /// The task the handler runs.
    pub task_id: u64,
    /// Its epoch.
    pub epoch: u64,
    /// Estimated pose, once localised.
    pub pose: Option<Pose2>,
    /// Estimated forward speed, m/s.
    pub speed_mps: f64,
    /// The mode the handler operates in.
    pub mode: OperatingMode,
    /// Why the rover is held still, if it is.
    pub holding: Option<String>,
    /// Path left, m (control only).
    pub distance_m_remaining: Option<f64>,
    /// Sensor health, by replicated name.
    pub sensors: Vec<(String, SensorState)>,
}

/// Opens a handler run's devices on the blocking pool; a failure becomes
/// the run's outcome (the cluster retries the task per its policy).
async fn open_devices<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, Error> + Send + 'static,
) -> Result<T, crate::action::ActionOutcome> {
    let failed = |reason: String| crate::action::ActionOutcome::Failed { reason };
    match tokio::task::spawn_blocking(f).await {
        Ok(Ok(devices)) => Ok(devices),
        Ok(Err(e)) => Err(failed(format!("cannot open the rover's devices: {e}"))),
        Err(e) => Err(failed(format!("device thread failed: {e}"))),
    }
}

/// Runs `f` on the blocking pool with `state` and hands the state back.
async fn blocking<S, T>(state: S, f: impl FnOnce(&mut S) -> T + Send + 'static) -> Result<(S, T), String>
where
    S: Send + 'static,
    T: Send + 'static,
{
    tokio::task::spawn_blocking(move || {
        let mut state = state;
        let out = f(&mut state);
        (state, out)
    })
    .await
    .map_err(|e| format!("device thread failed: {e}"))
}
