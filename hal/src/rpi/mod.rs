//! Real hardware on a Raspberry Pi, through rppal (feature `rpi`).
//!
//! # Parts
//! - [`gpio`]: e-stop input and status LED on BCM GPIO pins.
//! - [`mpu6050`]: the InvenSense **MPU-6050** 6-axis IMU on I2C (chosen because
//!   it is the cheapest, most common IMU on hobby rovers; it has no
//!   magnetometer, so its yaw is gyro-integrated and drifts — the EKF uses
//!   only its yaw rate).
//! - [`gps`]: any NMEA-0183 receiver on a UART (u-blox NEO-6M/M8N and
//!   friends), parsed with the `nmea` crate; GGA sentences carry the fix.
//! - [`motor`]: two hardware-PWM channels plus two direction pins, the
//!   interface of common H-bridge boards (TB6612FNG, Cytron MDD10A), with
//!   epoch fencing and its own watchdog thread.
//!
//! # Absent hardware
//! Every `open` returns a device, never an error or a panic: if the bus,
//! pin, or part is missing, the device reports [`crate::Health::Failed`] with
//! the reason and its reads fail with [`crate::Error::DeviceFailed`]. The
//! agents then degrade as the replicated policy says, which is the same path
//! a device failing mid-mission takes.
//!
//! rppal only touches `/dev` and `/sys` at run time, so this module compiles
//! on any Linux target, x86 CI included.

pub mod gpio;
pub mod gps;
pub mod motor;
pub mod mpu6050;

pub use gpio::{RpiEStop, RpiStatusLed};
pub use gps::NmeaGps;
pub use motor::{MotorConfig, PwmDrive};
pub use mpu6050::Mpu6050;

use std::sync::OnceLock;
use std::time::Instant;

use crate::device::Timestamp;

/// Time since this process first stamped a hardware reading, so stamps from
/// different real devices share one epoch and can be compared.
pub(crate) fn now() -> Timestamp {
    static START: OnceLock<Instant> = OnceLock::new();
    let start = START.get_or_init(Instant::now);
    let nanos = start.elapsed().as_nanos();
    Timestamp {
        nanos: u64::try_from(nanos).unwrap_or(u64::MAX),
    }
}
