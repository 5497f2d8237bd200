//! Sensor health and degradation policies, as data.
//!
//! Sensors report `Ok | Degraded | Failed`; a policy maps one exact
//! `(sensor, health)` pair to a [`Mode`] and a speed factor. The effective
//! mode is the most severe mode of all matching policies, the effective speed
//! factor the smallest; both are derived on query, never stored, so they can
//! never disagree with the reports and policies they come from.

use std::fmt;

use serde::Deserialize;
use serde::Serialize;

/// Health of one sensor as last reported.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum SensorHealth {
    /// Working.
    Ok,
    /// Working with reduced quality.
    Degraded,
    /// Not usable.
    Failed,
}

impl fmt::Display for SensorHealth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            SensorHealth::Ok => "ok",
            SensorHealth::Degraded => "degraded",
            SensorHealth::Failed => "failed",
        })
    }
}

/// How the rover operates, ordered from least to most severe; combining
/// policies takes the most severe.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum Mode {
    /// Everything nominal.
    Normal,
    /// Full localisation, reduced speed.
    Reduced,
    /// Localise from GPS alone (no IMU fusion).
    GpsOnly,
    /// Do not drive.
    Stop,
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Mode::Normal => "normal",
            Mode::Reduced => "reduced",
            Mode::GpsOnly => "gps-only",
            Mode::Stop => "stop",
        })
    }
}

/// `sensor` at `health` ⇒ `mode`, speed × `speed_factor`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct DegradationPolicy {
    /// Sensor name, e.g. `imu`.
    pub sensor: String,
    /// The health that triggers it (`Degraded` or `Failed`; an `Ok` policy
    /// is refused as meaningless).
    pub health: SensorHealth,
    /// Mode while it applies.
    pub mode: Mode,
    /// Multiplies the base top speed, in `0.0..=1.0`.
    pub speed_factor: f64,
}

/// A sensor's latest report.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SensorReport {
    /// Reported health.
    pub health: SensorHealth,
    /// Leader timestamp of the report.
    pub reported_at_ms: u64,
}

/// A policy currently in force, named in [`Effective::causes`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Cause {
    /// The sensor.
    pub sensor: String,
    /// Its health.
    pub health: SensorHealth,
    /// The mode the policy asks for.
    pub mode: Mode,
}

/// The derived operating mode and limits.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Effective {
    /// Most severe mode of the policies in force.
    pub mode: Mode,
    /// Smallest speed factor of the policies in force (1.0 if none; 0.0 in
    /// `Stop`).
    pub speed_factor: f64,
    /// The base top speed times `speed_factor`, m/s.
    pub max_speed_mps: f64,
    /// Policies in force, by sensor name.
    pub causes: Vec<Cause>,
}

/// The policies a fresh cluster ships with, from the rover guide: a failed
/// IMU leaves GPS-only localisation at half speed; a failed lidar means the
/// rover cannot see obstacles, so it stops.
pub fn default_policies() -> Vec<DegradationPolicy> {
    vec![
        DegradationPolicy {
            sensor: "imu".to_owned(),
            health: SensorHealth::Failed,
            mode: Mode::GpsOnly,
            speed_factor: 0.5,
        },
        DegradationPolicy {
            sensor: "lidar".to_owned(),
            health: SensorHealth::Failed,
            mode: Mode::Stop,
            speed_factor: 0.0,
        },
    ]
}
