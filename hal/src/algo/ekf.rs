//! Extended Kalman filter for planar localisation.
//!
//! State `[x_m, y_m, heading_rad, linear_mps, angular_rps]` with a
//! constant-velocity unicycle model. Measurements:
//! - wheel odometry: `(linear_mps, angular_rps)`;
//! - IMU gyro: yaw rate (the MPU-6050 has no magnetometer, so its absolute yaw
//!   drifts and is deliberately not used);
//! - GPS: local `(x, y)` from latitude/longitude through a [`GeoOrigin`], with
//!   a standard deviation of `gps_uere_m × HDOP`.
//!
//! In [`EkfMode::GpsOnly`] (the degradation for a failed IMU) odometry and
//! gyro updates are ignored and heading, speed and turn rate are inferred from
//! successive GPS positions through the motion model; the rover should then
//! drive slower, because heading lags a turn by a few fixes.
//!
//! The filter reads no clock: the caller passes the time step to
//! [`Ekf::predict`], normally the difference of reading timestamps.

use nalgebra::{SMatrix, SVector};
use serde::{Deserialize, Serialize};

use crate::device::GpsFix;
use crate::error::Error;
use crate::geo::{wrap_angle, GeoOrigin, Pose2, Twist};

type State = SVector<f64, 5>;
type Cov = SMatrix<f64, 5, 5>;

const X: usize = 0;
const Y: usize = 1;
const TH: usize = 2;
const V: usize = 3;
const W: usize = 4;

/// Longest single prediction step, seconds. Longer gaps are split so the
/// linearisation stays valid through a turn.
const PREDICT_STEP_S_MAX: f64 = 0.1;
/// At most this many sub-steps per predict call (100 s of dead reckoning);
/// beyond that the estimate is meaningless anyway and we stop spending CPU.
const PREDICT_SUBSTEPS_MAX: usize = 1_000;

/// Which measurements the filter uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum EkfMode {
    /// GPS, odometry and gyro.
    Full,
    /// GPS only (IMU failed, or odometry untrusted).
    GpsOnly,
}

/// Noise model. Defaults suit the simulated rover and hobby-grade parts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EkfConfig {
    /// How fast the speed may change unpredictably, m/s² (process noise).
    pub accel_mps2_std: f64,
    /// How fast the turn rate may change unpredictably, rad/s² (process noise).
    pub yaw_accel_rps2_std: f64,
    /// As `accel_mps2_std`, in [`EkfMode::GpsOnly`]. Lower: with speed no
    /// longer measured, the filter must lean on the motion model to average
    /// GPS noise into a heading.
    pub gps_only_accel_mps2_std: f64,
    /// As `yaw_accel_rps2_std`, in [`EkfMode::GpsOnly`] (lower, as above).
    pub gps_only_yaw_accel_rps2_std: f64,
    /// Position process noise (model error, wheel slip), m/√s.
    pub position_m_std: f64,
    /// GPS user-equivalent range error: σ per axis = this × HDOP, metres.
    pub gps_uere_m: f64,
    /// Odometry speed noise, m/s.
    pub odom_mps_std: f64,
    /// Odometry turn-rate noise, rad/s.
    pub odom_rps_std: f64,
    /// Gyro yaw-rate noise, rad/s.
    pub gyro_rps_std: f64,
    /// Initial position uncertainty, m.
    pub initial_position_m_std: f64,
    /// Initial heading uncertainty, rad.
    pub initial_heading_rad_std: f64,
}

impl Default for EkfConfig {
    fn default() -> Self {
        Self {
            accel_mps2_std: 0.5,
            yaw_accel_rps2_std: 0.5,
            gps_only_accel_mps2_std: 0.05,
            gps_only_yaw_accel_rps2_std: 0.02,
            position_m_std: 0.05,
            gps_uere_m: 0.6,
            odom_mps_std: 0.05,
            odom_rps_std: 0.1,
            gyro_rps_std: 0.02,
            initial_position_m_std: 5.0,
            initial_heading_rad_std: 1.0,
        }
    }
}

impl EkfConfig {
    /// Every standard deviation must be finite and positive.
    pub fn validate(&self) -> Result<(), Error> {
        let all = [
            ("accel_mps2_std", self.accel_mps2_std),
            ("yaw_accel_rps2_std", self.yaw_accel_rps2_std),
            ("gps_only_accel_mps2_std", self.gps_only_accel_mps2_std),
            ("gps_only_yaw_accel_rps2_std", self.gps_only_yaw_accel_rps2_std),
            ("position_m_std", self.position_m_std),
            ("gps_uere_m", self.gps_uere_m),
            ("odom_mps_std", self.odom_mps_std),
            ("odom_rps_std", self.odom_rps_std),
            ("gyro_rps_std", self.gyro_rps_std),
            ("initial_position_m_std", self.initial_position_m_std),
            ("initial_heading_rad_std", self.initial_heading_rad_std),
        ];
        for (name, v) in all {
            if !(v.is_finite() && v > 0.0) {
                return Err(Error::InvalidConfig {
                    reason: format!("ekf {name} must be finite and positive, got {v}"),
                });
            }
        }
        Ok(())
    }
}

/// The filter.
#[derive(Debug, Clone)]
pub struct Ekf {
    config: EkfConfig,
    mode: EkfMode,
    x: State,
    p: Cov,
}

impl Ekf {
    /// A filter starting at `initial` (at rest) with the configured initial uncertainty.
    pub fn new(config: EkfConfig, initial: Pose2, mode: EkfMode) -> Result<Self, Error> {
        config.validate()?;
        let x = State::from([initial.x_m, initial.y_m, initial.heading_rad, 0.0, 0.0]);
        let pos = config.initial_position_m_std.powi(2);
        let p = Cov::from_diagonal(&SVector::<f64, 5>::from([
            pos,
            pos,
            config.initial_heading_rad_std.powi(2),
            1.0,
            0.25,
        ]));
        Ok(Self { config, mode, x, p })
    }

    /// The current mode.
    pub fn mode(&self) -> EkfMode {
        self.mode
    }

    /// Switches mode (the estimate carries over).
    pub fn set_mode(&mut self, mode: EkfMode) {
        self.mode = mode;
    }

    /// The estimated pose.
    pub fn pose(&self) -> Pose2 {
        Pose2::new(self.x[X], self.x[Y], self.x[TH])
    }

    /// The estimated body velocity.
    pub fn twist(&self) -> Twist {
        Twist {
            linear_mps: self.x[V],
            angular_rps: self.x[W],
        }
    }

    /// Standard deviation of the position estimate (the larger axis), metres.
    pub fn position_m_std(&self) -> f64 {
        self.p[(X, X)].max(self.p[(Y, Y)]).sqrt()
    }

    /// Standard deviation of the heading estimate, radians.
    pub fn heading_rad_std(&self) -> f64 {
        self.p[(TH, TH)].sqrt()
    }

    /// The full state covariance.
    pub fn covariance(&self) -> &SMatrix<f64, 5, 5> {
        &self.p
    }

    /// Propagates the estimate by `dt_s` seconds. Non-positive or non-finite
    /// steps are ignored (out-of-order readings must not run time backwards).
    pub fn predict(&mut self, dt_s: f64) {
        if !(dt_s.is_finite() && dt_s > 0.0) {
            return;
        }
        let steps = ((dt_s / PREDICT_STEP_S_MAX).ceil() as usize).clamp(1, PREDICT_SUBSTEPS_MAX);
        let h = dt_s / steps as f64;
        for _ in 0..steps {
            self.predict_step(h);
        }
    }

    fn predict_step(&mut self, dt: f64) {
        let (th, v, w) = (self.x[TH], self.x[V], self.x[W]);
        // Midpoint heading: second-order accurate along an arc, which keeps
        // constant-rate turns from spiralling outwards between GPS fixes.
        let th_mid = th + w * dt / 2.0;
        let (s, c) = th_mid.sin_cos();
        self.x[X] += v * c * dt;
        self.x[Y] += v * s * dt;
        self.x[TH] = wrap_angle(th + w * dt);

        let mut f = Cov::identity();
        f[(X, TH)] = -v * s * dt;
        f[(X, V)] = c * dt;
        f[(X, W)] = -v * s * dt * dt / 2.0;
        f[(Y, TH)] = v * c * dt;
        f[(Y, V)] = s * dt;
        f[(Y, W)] = v * c * dt * dt / 2.0;
        f[(TH, W)] = dt;

        let cfg = &self.config;
        let (accel, yaw_accel) = match self.mode {
            EkfMode::Full => (cfg.accel_mps2_std, cfg.yaw_accel_rps2_std),
            EkfMode::GpsOnly => (cfg.gps_only_accel_mps2_std, cfg.gps_only_yaw_accel_rps2_std),
        };
        let q = Cov::from_diagonal(&SVector::<f64, 5>::from([
            cfg.position_m_std.powi(2) * dt,
            cfg.position_m_std.powi(2) * dt,
            1e-6 * dt,
            accel.powi(2) * dt,
            yaw_accel.powi(2) * dt,
        ]));
        self.p = f * self.p * f.transpose() + q;
    }

    /// Fuses wheel odometry. Returns `Ok(false)` if the mode ignores it.
    pub fn update_odometry(&mut self, twist: &Twist) -> Result<bool, Error> {
        if self.mode == EkfMode::GpsOnly {
            return Ok(false);
        }
        let z = SVector::<f64, 2>::new(twist.linear_mps, twist.angular_rps);
        let mut h = SMatrix::<f64, 2, 5>::zeros();
        h[(0, V)] = 1.0;
        h[(1, W)] = 1.0;
        let innovation = z - h * self.x;
        let r = SMatrix::<f64, 2, 2>::from_diagonal(&SVector::<f64, 2>::new(
            self.config.odom_mps_std.powi(2),
            self.config.odom_rps_std.powi(2),
        ));
        self.correct(innovation, h, r)?;
        Ok(true)
    }

    /// Fuses a gyro yaw rate. Returns `Ok(false)` if the mode ignores it.
    pub fn update_gyro(&mut self, yaw_rate_rps: f64) -> Result<bool, Error> {
        if self.mode == EkfMode::GpsOnly {
            return Ok(false);
        }
        let mut h = SMatrix::<f64, 1, 5>::zeros();
        h[(0, W)] = 1.0;
        let innovation = SVector::<f64, 1>::new(yaw_rate_rps - self.x[W]);
        let r = SMatrix::<f64, 1, 1>::new(self.config.gyro_rps_std.powi(2));
        self.correct(innovation, h, r)?;
        Ok(true)
    }

    /// Fuses a position in the local frame with `sigma_m` per axis.
    pub fn update_position(&mut self, x_m: f64, y_m: f64, sigma_m: f64) -> Result<(), Error> {
        if !(x_m.is_finite() && y_m.is_finite() && sigma_m.is_finite() && sigma_m > 0.0) {
            return Err(Error::InvalidCommand {
                reason: format!("position update needs finite values, got ({x_m}, {y_m}) ± {sigma_m}"),
            });
        }
        let mut h = SMatrix::<f64, 2, 5>::zeros();
        h[(0, X)] = 1.0;
        h[(1, Y)] = 1.0;
        let innovation = SVector::<f64, 2>::new(x_m - self.x[X], y_m - self.x[Y]);
        let r = SMatrix::<f64, 2, 2>::identity() * sigma_m.powi(2);
        self.correct(innovation, h, r)
    }

    /// Fuses a GPS fix. Returns `Ok(false)` for a fix without a position.
    pub fn update_gps(&mut self, fix: &GpsFix, origin: &GeoOrigin) -> Result<bool, Error> {
        if !fix.quality.has_position() {
            return Ok(false);
        }
        let (x_m, y_m) = origin.to_local(fix.lat_deg, fix.lon_deg);
        // An HDOP below 0.5 is not physical for a hobby receiver; do not let a
        // bogus value make the filter over-trust a fix.
        let sigma_m = self.config.gps_uere_m * fix.hdop.max(0.5);
        self.update_position(x_m, y_m, sigma_m)?;
        Ok(true)
    }

    /// The Kalman correction, in Joseph form so the covariance stays symmetric
    /// positive-definite despite rounding.
    fn correct<const M: usize>(
        &mut self,
        innovation: SVector<f64, M>,
        h: SMatrix<f64, M, 5>,
        r: SMatrix<f64, M, M>,
    ) -> Result<(), Error> {
        let s = h * self.p * h.transpose() + r;
        let chol = s.cholesky().ok_or_else(|| Error::Numerical {
            reason: "innovation covariance is not positive-definite".to_string(),
        })?;
        // K = P Hᵀ S⁻¹, computed as (S⁻¹ H P)ᵀ since P and S are symmetric.
        let k: SMatrix<f64, 5, M> = chol.solve(&(h * self.p)).transpose();
        self.x += k * innovation;
        self.x[TH] = wrap_angle(self.x[TH]);
        let i_kh = Cov::identity() - k * h;
        self.p = i_kh * self.p * i_kh.transpose() + k * r * k.transpose();
        Ok(())
    }
}
