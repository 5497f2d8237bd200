//! The device traits agents program against, and the readings they return.
//!
//! # Sync, not async
//! Every trait method is a plain blocking call. The real devices are blocking
//! syscalls underneath (an `ioctl` on `/dev/i2c-1` for the IMU, `read(2)` on a
//! tty for the GPS, sysfs writes for PWM) and take well under a millisecond,
//! or a bounded UART timeout at worst. Async traits would only hide a
//! `spawn_blocking` inside every call, tie every backend to tokio, and make
//! `dyn Imu` awkward. Agents that live on tokio run their device loop with
//! `tokio::task::spawn_blocking` (or a dedicated thread) and pass readings on
//! through a bounded channel. Every implementation bounds how long a call can
//! block (UART read timeout, socket timeouts in the sim client).
//!
//! Every trait requires `Send` so a device can move into that thread.
//!
//! # Timestamps
//! Every reading carries a [`Timestamp`] from its *source's* monotonic clock:
//! world time for the simulator, time since the driver was opened for real
//! hardware. Stamps are comparable within one source only; the EKF uses their
//! differences, never their absolute values.

use std::fmt;

use nalgebra::{UnitQuaternion, Vector3};
use serde::{Deserialize, Serialize};

use crate::error::Error;
use crate::geo::Twist;

/// A monotonic instant, nanoseconds since the source's own epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize)]
pub struct Timestamp {
    /// Nanoseconds since the source's epoch.
    pub nanos: u64,
}

impl Timestamp {
    /// From seconds; negative or NaN clamps to zero.
    pub fn from_secs_f64(secs: f64) -> Self {
        let nanos = (secs.max(0.0) * 1e9).round();
        // `as` saturates for values beyond u64, which is ~584 years of uptime.
        Self { nanos: nanos as u64 }
    }

    /// As seconds.
    pub fn as_secs_f64(&self) -> f64 {
        self.nanos as f64 * 1e-9
    }

    /// Seconds from `earlier` to `self`; negative if `earlier` is later.
    pub fn secs_since(&self, earlier: Timestamp) -> f64 {
        (self.nanos as f64 - earlier.nanos as f64) * 1e-9
    }
}

/// Which device a message or error is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum DeviceKind {
    /// Inertial measurement unit.
    Imu,
    /// GNSS receiver.
    Gps,
    /// Range sensor or 2-D lidar.
    Range,
    /// Wheel encoders.
    Odometry,
    /// Differential drivetrain.
    Drive,
    /// Emergency-stop input.
    EStop,
    /// Status LED.
    Led,
}

impl DeviceKind {
    /// The sensors, in a fixed order (status reports list faults in this order).
    pub const SENSORS: [DeviceKind; 4] = [
        DeviceKind::Imu,
        DeviceKind::Gps,
        DeviceKind::Range,
        DeviceKind::Odometry,
    ];

    /// Lowercase name, as used in logs and the CLI.
    pub fn as_str(&self) -> &'static str {
        match self {
            DeviceKind::Imu => "imu",
            DeviceKind::Gps => "gps",
            DeviceKind::Range => "range",
            DeviceKind::Odometry => "odometry",
            DeviceKind::Drive => "drive",
            DeviceKind::EStop => "estop",
            DeviceKind::Led => "led",
        }
    }
}

impl fmt::Display for DeviceKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for DeviceKind {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self, Error> {
        [
            DeviceKind::Imu,
            DeviceKind::Gps,
            DeviceKind::Range,
            DeviceKind::Odometry,
            DeviceKind::Drive,
            DeviceKind::EStop,
            DeviceKind::Led,
        ]
        .into_iter()
        .find(|d| d.as_str() == s)
        .ok_or_else(|| Error::InvalidConfig {
            reason: format!("unknown device {s:?}"),
        })
    }
}

/// A device's own view of whether it works.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Health {
    /// Working normally.
    Ok,
    /// Working, but readings are missing or suspect.
    Degraded {
        /// What was observed.
        reason: String,
    },
    /// Not working; do not rely on it.
    Failed {
        /// What was observed.
        reason: String,
    },
}

impl Health {
    /// True for [`Health::Ok`].
    pub fn is_ok(&self) -> bool {
        matches!(self, Health::Ok)
    }

    /// True for [`Health::Failed`].
    pub fn is_failed(&self) -> bool {
        matches!(self, Health::Failed { .. })
    }
}

/// Something with a health report. Every device trait extends this.
pub trait Device: Send {
    /// Which kind of device this is.
    fn kind(&self) -> DeviceKind;
    /// The current health, from what the driver has observed (read failures,
    /// identical readings, a device that could not be opened). Never blocks.
    fn health(&self) -> Health;
}

/// One IMU sample.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ImuReading {
    /// When it was taken.
    pub stamp: Timestamp,
    /// Body → local frame rotation. Without a magnetometer the yaw part drifts.
    pub orientation: UnitQuaternion<f64>,
    /// Body-frame angular rate, rad/s.
    pub angular_rate_rps: Vector3<f64>,
    /// Body-frame specific force, m/s² (reads +9.81 on z at rest).
    pub accel_mps2: Vector3<f64>,
}

/// GNSS fix quality, as in the NMEA GGA sentence.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum FixQuality {
    /// No position.
    NoFix,
    /// Standalone GNSS.
    Gps,
    /// Differential GNSS.
    DGps,
    /// RTK with fixed integers (centimetres).
    Rtk,
    /// RTK with float ambiguities (decimetres).
    FloatRtk,
    /// Dead reckoning.
    Estimated,
}

impl FixQuality {
    /// True if the fix carries a usable position.
    pub fn has_position(&self) -> bool {
        !matches!(self, FixQuality::NoFix)
    }
}

/// One GNSS fix.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GpsFix {
    /// When it was received.
    pub stamp: Timestamp,
    /// Degrees north.
    pub lat_deg: f64,
    /// Degrees east.
    pub lon_deg: f64,
    /// Metres above mean sea level.
    pub alt_m: f64,
    /// Fix quality.
    pub quality: FixQuality,
    /// Horizontal dilution of precision (unitless; ~1 is good, >5 is poor).
    pub hdop: f64,
    /// Satellites used.
    pub satellites: u8,
}

/// One sweep of a planar range sensor (a single-beam range finder is a scan
/// with one beam).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Scan {
    /// When the sweep was taken.
    pub stamp: Timestamp,
    /// Bearing of the first beam in the body frame, radians (0 = straight ahead).
    pub angle_rad_min: f64,
    /// Angle between beams, radians.
    pub angle_rad_increment: f64,
    /// The sensor's maximum range, metres.
    pub range_m_max: f64,
    /// One range per beam, metres; `f64::INFINITY` where nothing was hit within
    /// `range_m_max`.
    pub ranges_m: Vec<f64>,
}

impl Scan {
    /// Body-frame bearing of beam `i`, radians.
    pub fn bearing_rad(&self, i: usize) -> f64 {
        self.angle_rad_min + self.angle_rad_increment * i as f64
    }
}

/// One wheel-odometry sample.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OdometryReading {
    /// When it was taken.
    pub stamp: Timestamp,
    /// Cumulative left-wheel travel since start, metres.
    pub left_m: f64,
    /// Cumulative right-wheel travel since start, metres.
    pub right_m: f64,
    /// Body velocity the wheel speeds imply.
    pub twist: Twist,
}

/// A drive command, fenced by the control task's lease epoch.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct VelocityCommand {
    /// The fencing epoch of the control lease this command is sent under. The
    /// drivetrain obeys it only if it is at least the highest epoch it has seen.
    pub epoch: u64,
    /// Forward speed, m/s.
    pub linear_mps: f64,
    /// Yaw rate, rad/s.
    pub angular_rps: f64,
}

impl VelocityCommand {
    /// A stop under `epoch`.
    pub fn stop(epoch: u64) -> Self {
        Self {
            epoch,
            linear_mps: 0.0,
            angular_rps: 0.0,
        }
    }

    /// A command from a twist.
    pub fn from_twist(epoch: u64, twist: Twist) -> Self {
        Self {
            epoch,
            linear_mps: twist.linear_mps,
            angular_rps: twist.angular_rps,
        }
    }

    /// Rejects NaN and infinite velocities, which no motor driver can obey.
    pub fn validate(&self) -> Result<(), Error> {
        if !self.linear_mps.is_finite() || !self.angular_rps.is_finite() {
            return Err(Error::InvalidCommand {
                reason: format!(
                    "velocities must be finite, got linear {} m/s angular {} rad/s",
                    self.linear_mps, self.angular_rps
                ),
            });
        }
        Ok(())
    }
}

/// One e-stop sample.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct EStopReading {
    /// When it was read.
    pub stamp: Timestamp,
    /// True if the e-stop is pressed (motion must stop).
    pub engaged: bool,
}

/// An inertial measurement unit.
pub trait Imu: Device {
    /// Reads one sample.
    fn read(&mut self) -> Result<ImuReading, Error>;
}

/// A GNSS receiver.
pub trait Gps: Device {
    /// Returns the latest fix.
    fn read(&mut self) -> Result<GpsFix, Error>;
}

/// A range sensor or 2-D lidar.
pub trait RangeScanner: Device {
    /// Returns one sweep.
    fn scan(&mut self) -> Result<Scan, Error>;
}

/// Wheel encoders.
pub trait Odometry: Device {
    /// Reads the encoders.
    fn read(&mut self) -> Result<OdometryReading, Error>;
}

/// A differential drivetrain.
pub trait Drive: Device {
    /// Asks for a body velocity. Refused with [`Error::StaleEpoch`] if
    /// `cmd.epoch` is below the highest epoch accepted so far, so a deposed
    /// controller cannot move the wheels. Speeds beyond the drivetrain's limits
    /// are clamped, not refused.
    fn command(&mut self, cmd: &VelocityCommand) -> Result<(), Error>;

    /// Stops under `epoch` (same fencing as [`Drive::command`]).
    fn stop(&mut self, epoch: u64) -> Result<(), Error> {
        self.command(&VelocityCommand::stop(epoch))
    }
}

/// An emergency-stop input.
///
/// If `read` fails, callers must treat the e-stop as engaged: a switch we
/// cannot read is not a switch we can trust.
pub trait EStop: Device {
    /// Reads the input.
    fn read(&mut self) -> Result<EStopReading, Error>;
}

/// A status LED.
pub trait StatusLed: Device {
    /// Turns it on or off.
    fn set(&mut self, on: bool) -> Result<(), Error>;
}

/// Fencing for a drivetrain: remembers the highest epoch obeyed and counts
/// what it let through and what it refused. Shared by the simulated and the
/// real drivetrain so both fence identically.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EpochFence {
    /// The highest epoch accepted so far (0 before any command).
    pub current: u64,
    /// Commands accepted.
    pub accepted: u64,
    /// Commands refused for a stale epoch.
    pub rejected: u64,
}

impl EpochFence {
    /// Admits `epoch` if it is not older than the current one (and raises the
    /// current epoch to it); otherwise counts and logs the rejection.
    pub fn admit(&mut self, epoch: u64) -> Result<(), Error> {
        if epoch < self.current {
            self.rejected += 1;
            tracing::warn!(epoch, current = self.current, "rejected stale drive command");
            return Err(Error::StaleEpoch {
                epoch,
                current: self.current,
            });
        }
        self.current = epoch;
        self.accepted += 1;
        Ok(())
    }
}

/// Turns a stream of read outcomes into a [`Health`]: a run of failures
/// degrades then fails the device, a run of bit-identical readings marks it
/// degraded (a stuck sensor), and one good reading restores it.
#[derive(Debug, Clone)]
pub struct HealthTracker {
    failures_in_row: u32,
    identical_in_row: u32,
    last_reading: Option<Vec<u8>>,
    last_error: Option<String>,
    opened_failed: Option<String>,
    /// Consecutive failures before the device is reported failed.
    pub failures_to_fail: u32,
    /// Consecutive identical readings before the device is reported stuck.
    pub identical_to_stuck: u32,
}

impl Default for HealthTracker {
    fn default() -> Self {
        Self {
            failures_in_row: 0,
            identical_in_row: 0,
            last_reading: None,
            last_error: None,
            opened_failed: None,
            // 5 at the agents' 10–20 Hz loop is a quarter to half a second:
            // long enough to ride out a dropout, short enough to degrade
            // before the rover has moved far on bad data.
            failures_to_fail: 5,
            // Real sensors always carry some noise, so 10 bit-identical
            // readings in a row do not happen by chance.
            identical_to_stuck: 10,
        }
    }
}

impl HealthTracker {
    /// A tracker for a device that could not even be opened: it stays Failed.
    pub fn failed_at_open(reason: impl Into<String>) -> Self {
        Self {
            opened_failed: Some(reason.into()),
            ..Self::default()
        }
    }

    /// Records a successful reading. `fingerprint` is any byte image of the
    /// value (used only to spot identical readings); pass `None` for devices
    /// whose value is legitimately constant (an e-stop, an LED).
    pub fn record_ok(&mut self, fingerprint: Option<Vec<u8>>) {
        self.failures_in_row = 0;
        self.last_error = None;
        match fingerprint {
            Some(fp) if self.last_reading.as_ref() == Some(&fp) => {
                self.identical_in_row = self.identical_in_row.saturating_add(1);
            }
            Some(fp) => {
                self.identical_in_row = 0;
                self.last_reading = Some(fp);
            }
            None => self.identical_in_row = 0,
        }
    }

    /// Records a failed read.
    pub fn record_err(&mut self, e: &Error) {
        self.failures_in_row = self.failures_in_row.saturating_add(1);
        self.last_error = Some(e.to_string());
    }

    /// The health these observations add up to.
    pub fn health(&self) -> Health {
        if let Some(reason) = &self.opened_failed {
            return Health::Failed { reason: reason.clone() };
        }
        let last = self.last_error.as_deref().unwrap_or("unknown error");
        if self.failures_in_row >= self.failures_to_fail {
            Health::Failed {
                reason: format!("{} reads failed in a row, last: {last}", self.failures_in_row),
            }
        } else if self.failures_in_row > 0 {
            Health::Degraded {
                reason: format!("{} reads failed in a row, last: {last}", self.failures_in_row),
            }
        } else if self.identical_in_row + 1 >= self.identical_to_stuck {
            Health::Degraded {
                reason: format!("value stuck: {} identical readings", self.identical_in_row + 1),
            }
        } else {
            Health::Ok
        }
    }
}

/// A byte image of a value for [`HealthTracker::record_ok`]; `None` if it
/// does not serialise (then stuck detection is simply skipped).
pub fn fingerprint<T: Serialize>(value: &T) -> Option<Vec<u8>> {
    postcard::to_stdvec(value).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fence_rejects_only_older_epochs() {
        let mut f = EpochFence::default();
        assert!(f.admit(3).is_ok());
        assert!(f.admit(3).is_ok());
        assert!(matches!(f.admit(2), Err(Error::StaleEpoch { epoch: 2, current: 3 })));
        assert!(f.admit(4).is_ok());
        assert_eq!((f.current, f.accepted, f.rejected), (4, 3, 1));
    }

    #[test]
    fn tracker_degrades_fails_and_recovers() {
        let mut t = HealthTracker::default();
        assert!(t.health().is_ok());
        let e = Error::NoReading {
            device: DeviceKind::Imu,
        };
        t.record_err(&e);
        assert!(matches!(t.health(), Health::Degraded { .. }));
        for _ in 0..4 {
            t.record_err(&e);
        }
        assert!(t.health().is_failed(), "{:?}", t.health());
        t.record_ok(Some(vec![1]));
        assert!(t.health().is_ok());
        for _ in 0..9 {
            t.record_ok(Some(vec![1]));
        }
        assert!(matches!(t.health(), Health::Degraded { reason } if reason.contains("stuck")));
    }

    #[test]
    fn timestamp_round_trip() {
        let t = Timestamp::from_secs_f64(1.25);
        assert_eq!(t.nanos, 1_250_000_000);
        assert!((t.as_secs_f64() - 1.25).abs() < 1e-12);
        assert_eq!(Timestamp::from_secs_f64(-1.0).nanos, 0);
    }
}
