//! One perception cycle: read every sensor once, fuse, detect obstacles.

use serde::{Deserialize, Serialize};

use crate::algo::ekf::{Ekf, EkfConfig, EkfMode};
use crate::algo::obstacle::{nearest_in_corridor, Obstacle};
use crate::device::{DeviceKind, Health, Scan};
use crate::error::Error;
use crate::geo::{GeoOrigin, Pose2, Twist};
use crate::rover::SensorSuite;

/// Tuning of the [`Localiser`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LocaliserConfig {
    /// The filter's noise model.
    pub ekf: EkfConfig,
    /// Half the width of the corridor checked for obstacles, m: the
    /// simulated rover's 0.4 m radius plus a 0.2 m margin.
    pub corridor_half_width_m: f64,
    /// A scan older than this no longer counts as seeing, s (five cycles of a
    /// 10 Hz loop: the same run of misses that marks the lidar failed).
    pub scan_max_age_s: f64,
}

impl Default for LocaliserConfig {
    fn default() -> Self {
        Self {
            ekf: EkfConfig::default(),
            corridor_half_width_m: 0.6,
            scan_max_age_s: 0.5,
        }
    }
}

/// What one cycle produced.
#[derive(Debug, Clone, PartialEq)]
pub struct Perception {
    /// The fused pose; `None` until the first GPS fix.
    pub pose: Option<Pose2>,
    /// The fused body velocity.
    pub twist: Twist,
    /// One-sigma position uncertainty, m (infinite before the first fix).
    pub position_m_std: f64,
    /// The nearest lidar return in the corridor ahead, from a scan no older
    /// than `scan_max_age_s`.
    pub obstacle_ahead: Option<Obstacle>,
    /// Whether a recent enough scan exists at all: without one the rover is
    /// blind ahead.
    pub sees_ahead: bool,
    /// The e-stop is pressed, or could not be read (a switch we cannot read
    /// is not one we can trust).
    pub estop: bool,
    /// The filter mode used.
    pub ekf_mode: EkfMode,
    /// Every sensor's health, in [`DeviceKind::SENSORS`] order.
    pub health: Vec<(DeviceKind, Health)>,
}

/// Reads the sensors and keeps the EKF. Owns blocking devices: run
/// [`Localiser::cycle`] off the async threads.
pub struct Localiser {
    sensors: SensorSuite,
    origin: GeoOrigin,
    config: LocaliserConfig,
    ekf: Option<Ekf>,
    last_scan: Option<(Scan, f64)>,
    elapsed_s: f64,
}

impl Localiser {
    /// A localiser over `sensors`, in the frame at `origin`.
    pub fn new(sensors: SensorSuite, origin: GeoOrigin, config: LocaliserConfig) -> Result<Self, Error> {
        config.ekf.validate()?;
        if !(config.corridor_half_width_m.is_finite() && config.corridor_half_width_m > 0.0) {
            return Err(Error::InvalidConfig {
                reason: format!(
                    "corridor_half_width_m must be finite and positive, got {}",
                    config.corridor_half_width_m
                ),
            });
        }
        Ok(Self {
            sensors,
            origin,
            config,
            ekf: None,
            last_scan: None,
            elapsed_s: 0.0,
        })
    }

    /// Reads every sensor once, advances the filter by `dt_s`, and fuses
    /// what arrived. `want` is the mode the cluster asks for; the IMU's own
    /// failure forces [`EkfMode::GpsOnly`] without waiting for the cluster.
    pub fn cycle(&mut self, dt_s: f64, want: EkfMode) -> Perception {
        if dt_s.is_finite() && dt_s > 0.0 {
            self.elapsed_s += dt_s;
        }
        let imu = self.sensors.imu.read();
        let odometry = self.sensors.odometry.read();
        let gps = self.sensors.gps.read();
        let scan = self.sensors.range.scan();
        let estop = self.sensors.estop.read().map(|r| r.engaged).unwrap_or(true);
        let health = vec![
            (DeviceKind::Imu, self.sensors.imu.health()),
            (DeviceKind::Gps, self.sensors.gps.health()),
            (DeviceKind::Range, self.sensors.range.health()),
            (DeviceKind::Odometry, self.sensors.odometry.health()),
        ];
        let imu_failed = health[0].1.is_failed();
        let mode = if imu_failed { EkfMode::GpsOnly } else { want };

        match &mut self.ekf {
            None => {
                // Start at the first fix, facing where the IMU says (0 if
                // it cannot: the filter learns heading from motion).
                if let Ok(fix) = &gps {
                    if fix.quality.has_position() {
                        let (x, y) = self.origin.to_local(fix.lat_deg, fix.lon_deg);
                        let heading = match &imu {
                            Ok(r) if !imu_failed => r.orientation.euler_angles().2,
                            _ => 0.0,
                        };
                        match Ekf::new(self.config.ekf.clone(), Pose2::new(x, y, heading), mode) {
                            Ok(ekf) => self.ekf = Some(ekf),
                            Err(e) => tracing::warn!(error = %e, "cannot start the filter"),
                        }
                    }
                }
            }
            Some(ekf) => {
                ekf.set_mode(mode);
                ekf.predict(dt_s);
                let mut fused = Ok(());
                if let Ok(r) = &odometry {
                    fused = fused.and(ekf.update_odometry(&r.twist).map(drop));
                }
                if let Ok(r) = &imu {
                    fused = fused.and(ekf.update_gyro(r.angular_rate_rps.z).map(drop));
                }
                if let Ok(fix) = &gps {
                    fused = fused.and(ekf.update_gps(fix, &self.origin).map(drop));
                }
                if let Err(e) = fused {
                    // A numerically broken filter is worse than none: start
                    // over at the next fix.
                    tracing::warn!(error = %e, "filter diverged; restarting at the next fix");
                    self.ekf = None;
                }
            }
        }

        if let Ok(scan) = scan {
            self.last_scan = Some((scan, self.elapsed_s));
        }
        let fresh = self
            .last_scan
            .as_ref()
            .filter(|(_, at)| self.elapsed_s - at <= self.config.scan_max_age_s);
        let obstacle_ahead = fresh.and_then(|(s, _)| nearest_in_corridor(s, self.config.corridor_half_width_m));
        Perception {
            pose: self.ekf.as_ref().map(Ekf::pose),
            twist: self.ekf.as_ref().map(Ekf::twist).unwrap_or(Twist::ZERO),
            position_m_std: self.ekf.as_ref().map(Ekf::position_m_std).unwrap_or(f64::INFINITY),
            obstacle_ahead,
            sees_ahead: fresh.is_some() && !health[2].1.is_failed(),
            estop,
            ekf_mode: mode,
            health,
        }
    }
}
