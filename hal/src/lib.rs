//! cairn-hal: the rover's hardware as the agents see it.
//!
//! Small device traits (IMU, GPS, range/lidar, wheel odometry, differential
//! drive, e-stop, status LED), a simulated rover world that nodes share over
//! loopback TCP, the pure localisation and control algorithms that run on top,
//! and an rppal backend for real Raspberry Pi hardware.
//!
//! # Layout
//! - [`action`]: the action-handler trait (goal → feedback → result, cancel,
//!   fenced permit, live limits) that cluster runtimes drive and rover
//!   handlers implement.
//! - [`device`]: the traits, reading types, [`Health`], drive fencing
//!   ([`EpochFence`]) and [`HealthTracker`].
//! - [`geo`]: poses, twists, circles, and the GPS ↔ local-metres projection.
//! - [`sim`]: the world model, its wire protocol, the world server, and the
//!   sim HAL that connects to it.
//! - [`algo`]: EKF localisation, pure pursuit, obstacle detection.
//! - `rpi` (feature `rpi`): GPIO e-stop and LED, MPU-6050 IMU on I2C, NMEA GPS
//!   on a UART, PWM + direction-pin motor driver.
//! - [`Error`]: the crate's one error type.
//!
//! # Key decisions
//! - **Blocking traits.** Real device I/O is blocking syscalls; see
//!   [`device`] for why the traits are sync and how async agents use them.
//! - **The drivetrain fences.** Every velocity command carries the control
//!   lease's epoch, and the drivetrain (simulated or real) refuses epochs older
//!   than the newest it has obeyed, so a deposed controller cannot move the
//!   wheels. The lease itself is the cluster's business; this crate only
//!   compares numbers.
//! - **One world, many nodes.** The simulated drivetrain lives in a world
//!   process so control can fail over between nodes and still drive the same
//!   rover, as it would on the real one.
//! - **Determinism.** The world model and the algorithms read no clock and
//!   take randomness only from a seeded ChaCha8 stream.
//!
//! This crate depends on no other cairn crate.
#![deny(missing_docs)]

pub mod action;
pub mod algo;
pub mod device;
mod error;
pub mod geo;
pub mod rover;
#[cfg(feature = "rpi")]
pub mod rpi;
pub mod sim;

pub use device::{
    Device, DeviceKind, Drive, EStop, EStopReading, EpochFence, FixQuality, Gps, GpsFix, Health, HealthTracker, Imu,
    ImuReading, Odometry, OdometryReading, RangeScanner, Scan, StatusLed, Timestamp, VelocityCommand,
};
pub use error::{Error, RemoteError};
pub use geo::{Circle, GeoOrigin, Pose2, Twist};
