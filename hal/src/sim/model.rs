//! The world model: one rover on a plane with circular obstacles.
//!
//! Pure and deterministic: time advances only through [`World::step`], noise
//! comes from a ChaCha8 stream seeded by [`WorldConfig::seed`], and nothing
//! here reads a clock or touches a socket. The same config and the same call
//! sequence give the same readings, bit for bit.

use nalgebra::{Isometry2, Point2, UnitQuaternion, Vector2, Vector3};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::StandardNormal;
use serde::{Deserialize, Serialize};

use crate::device::{
    DeviceKind, EStopReading, EpochFence, FixQuality, GpsFix, ImuReading, OdometryReading, Scan, Timestamp,
    VelocityCommand,
};
use crate::error::Error;
use crate::geo::{Circle, GeoOrigin, Pose2, Twist};

/// Standard gravity, m/s².
pub const GRAVITY_MPS2: f64 = 9.806_65;

/// At most this many obstacles: the status reply lists them all and must fit
/// in one frame (256 × 24 bytes ≈ 6 KiB).
pub const OBSTACLES_MAX: usize = 256;

/// At most this many lidar beams: one scan must fit in one frame
/// (1440 × 8 bytes ≈ 11 KiB) and ray casting is beams × obstacles per read.
pub const LIDAR_BEAMS_MAX: u16 = 1440;

/// Sensor noise, one standard deviation each. Defaults are typical of the
/// hobby-grade parts a URC rover carries.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NoiseConfig {
    /// Gyro noise, rad/s.
    pub gyro_rps_std: f64,
    /// Accelerometer noise, m/s².
    pub accel_mps2_std: f64,
    /// Noise on the yaw part of the IMU orientation, rad.
    pub imu_yaw_rad_std: f64,
    /// GPS horizontal noise per axis, m.
    pub gps_m_std: f64,
    /// GPS altitude noise, m.
    pub gps_alt_m_std: f64,
    /// The HDOP the simulated receiver reports.
    pub gps_hdop: f64,
    /// Wheel-speed noise per wheel, m/s.
    pub wheel_mps_std: f64,
    /// Range noise per beam, m.
    pub range_m_std: f64,
}

impl Default for NoiseConfig {
    fn default() -> Self {
        Self {
            gyro_rps_std: 0.01,
            accel_mps2_std: 0.05,
            imu_yaw_rad_std: 0.02,
            gps_m_std: 0.5,
            gps_alt_m_std: 1.0,
            gps_hdop: 0.9,
            wheel_mps_std: 0.02,
            range_m_std: 0.02,
        }
    }
}

/// The simulated 2-D lidar.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LidarConfig {
    /// Beams per sweep (1 makes a single-beam range finder).
    pub beams: u16,
    /// Total field of view, radians, centred straight ahead.
    pub fov_rad: f64,
    /// Maximum range, metres.
    pub range_m_max: f64,
}

impl Default for LidarConfig {
    fn default() -> Self {
        Self {
            beams: 181,
            fov_rad: std::f64::consts::PI,
            range_m_max: 12.0,
        }
    }
}

/// Everything that defines a world.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WorldConfig {
    /// Seed of the noise stream.
    pub seed: u64,
    /// Distance between the wheels, metres.
    pub track_width_m: f64,
    /// Top speed of one wheel, m/s; commands are scaled down to it.
    pub wheel_speed_mps_max: f64,
    /// Radius of the rover's footprint for collisions, metres.
    pub rover_radius_m: f64,
    /// Where the local frame sits on Earth.
    pub origin: GeoOrigin,
    /// Where the rover starts.
    pub start: Pose2,
    /// Static obstacles.
    pub obstacles: Vec<Circle>,
    /// Sensor noise.
    pub noise: NoiseConfig,
    /// The lidar.
    pub lidar: LidarConfig,
}

impl Default for WorldConfig {
    fn default() -> Self {
        Self {
            seed: 0,
            track_width_m: 0.6,
            wheel_speed_mps_max: 2.0,
            rover_radius_m: 0.4,
            origin: GeoOrigin::default(),
            start: Pose2::default(),
            obstacles: Vec::new(),
            noise: NoiseConfig::default(),
            lidar: LidarConfig::default(),
        }
    }
}

impl WorldConfig {
    /// Checks every value once, so the model can trust them afterwards.
    pub fn validate(&self) -> Result<(), Error> {
        let bad = |reason: String| Err(Error::InvalidConfig { reason });
        let positive = [
            ("track_width_m", self.track_width_m),
            ("wheel_speed_mps_max", self.wheel_speed_mps_max),
            ("lidar.range_m_max", self.lidar.range_m_max),
        ];
        for (name, v) in positive {
            if !(v.is_finite() && v > 0.0) {
                return bad(format!("{name} must be finite and positive, got {v}"));
            }
        }
        let n = &self.noise;
        let non_negative = [
            ("rover_radius_m", self.rover_radius_m),
            ("lidar.fov_rad", self.lidar.fov_rad),
            ("noise.gyro_rps_std", n.gyro_rps_std),
            ("noise.accel_mps2_std", n.accel_mps2_std),
            ("noise.imu_yaw_rad_std", n.imu_yaw_rad_std),
            ("noise.gps_m_std", n.gps_m_std),
            ("noise.gps_alt_m_std", n.gps_alt_m_std),
            ("noise.gps_hdop", n.gps_hdop),
            ("noise.wheel_mps_std", n.wheel_mps_std),
            ("noise.range_m_std", n.range_m_std),
        ];
        for (name, v) in non_negative {
            if !(v.is_finite() && v >= 0.0) {
                return bad(format!("{name} must be finite and non-negative, got {v}"));
            }
        }
        if self.lidar.beams == 0 || self.lidar.beams > LIDAR_BEAMS_MAX {
            return bad(format!(
                "lidar.beams must be in 1..={LIDAR_BEAMS_MAX}, got {}",
                self.lidar.beams
            ));
        }
        if self.obstacles.len() > OBSTACLES_MAX {
            return bad(format!(
                "at most {OBSTACLES_MAX} obstacles, got {}",
                self.obstacles.len()
            ));
        }
        for (i, c) in self.obstacles.iter().enumerate() {
            if !(c.x_m.is_finite() && c.y_m.is_finite() && c.radius_m.is_finite() && c.radius_m > 0.0) {
                return bad(format!("obstacle {i} is not a finite circle with positive radius"));
            }
        }
        let s = &self.start;
        if !(s.x_m.is_finite() && s.y_m.is_finite() && s.heading_rad.is_finite()) {
            return bad("start pose must be finite".to_string());
        }
        Ok(())
    }
}

/// A sensor fault to inject.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub enum Fault {
    /// Healthy.
    None,
    /// Each read is missing with this probability (0..=1).
    Dropout {
        /// Probability a read produces nothing.
        probability: f64,
    },
    /// Every read returns the value of the first read after injection (with a
    /// fresh timestamp, as a real driver stamps what it reads).
    Stuck,
    /// Noise multiplied by `factor` for `duration_s` of world time, then healthy.
    NoiseBurst {
        /// Noise multiplier.
        factor: f64,
        /// How long, seconds (remaining time, in a status report).
        duration_s: f64,
    },
    /// Every read fails.
    Failed,
}

impl Fault {
    fn validate(&self, device: DeviceKind) -> Result<(), Error> {
        let bad = |reason: String| Err(Error::InvalidFault { device, reason });
        match *self {
            Fault::Dropout { probability } if !(0.0..=1.0).contains(&probability) => {
                bad(format!("dropout probability must be in 0..=1, got {probability}"))
            }
            Fault::NoiseBurst { factor, duration_s }
                if !(factor.is_finite() && factor >= 0.0 && duration_s.is_finite() && duration_s > 0.0) =>
            {
                bad(format!(
                    "noise burst needs a finite factor >= 0 and duration > 0, got {factor} for {duration_s} s"
                ))
            }
            _ => Ok(()),
        }
    }
}

/// Per-sensor fault and what it needs to remember.
#[derive(Debug, Clone)]
struct FaultSlot {
    fault: Fault,
    /// World time when a noise burst ends.
    burst_until_s: f64,
}

/// What the fault gate decided for one read.
enum Gate {
    /// Generate a fresh reading with noise scaled by this factor.
    Fresh(f64),
    /// Return the frozen reading (or freeze the next fresh one).
    Stuck,
}

/// A snapshot of the world for status queries.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WorldStatus {
    /// World time.
    pub time: Timestamp,
    /// True pose.
    pub pose: Pose2,
    /// True body velocity.
    pub velocity: Twist,
    /// The obstacles.
    pub obstacles: Vec<Circle>,
    /// The drivetrain's fencing state: current epoch, accepted and rejected counts.
    pub fence: EpochFence,
    /// Which epochs drove the rover and when, oldest first (the last
    /// [`EPOCH_LOG_MAX`]): the record that shows no stale controller moved
    /// the wheels after a takeover.
    pub epochs: Vec<EpochUse>,
    /// Where the local frame sits on Earth (nodes need it to turn GPS fixes
    /// into local metres).
    pub origin: GeoOrigin,
    /// Times the watchdog stopped the rover for lack of commands.
    pub watchdog_stops: u64,
    /// Times the rover ran into an obstacle (it stops there).
    pub collisions: u64,
    /// E-stop state.
    pub estop_engaged: bool,
    /// Status LED state.
    pub led_on: bool,
    /// The fault on each sensor, in [`DeviceKind::SENSORS`] order.
    pub faults: Vec<(DeviceKind, Fault)>,
}

/// How many epochs [`WorldStatus::epochs`] remembers.
pub const EPOCH_LOG_MAX: usize = 32;

/// The commands one fencing epoch got through to the wheels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct EpochUse {
    /// The epoch.
    pub epoch: u64,
    /// Commands accepted under it.
    pub accepted: u64,
    /// World time of its first accepted command.
    pub first: Timestamp,
    /// World time of its last accepted command.
    pub last: Timestamp,
}

/// The simulated world.
pub struct World {
    config: WorldConfig,
    rng: ChaCha8Rng,
    time_s: f64,
    pose: Pose2,
    /// The commanded (clamped) velocity the wheels follow.
    command: Twist,
    velocity: Twist,
    /// Body-frame (forward, lateral) acceleration over the last step, m/s².
    accel_body_mps2: Vector2<f64>,
    wheel_left_m: f64,
    wheel_right_m: f64,
    fence: EpochFence,
    epochs: std::collections::VecDeque<EpochUse>,
    estop_engaged: bool,
    led_on: bool,
    in_contact: bool,
    collisions: u64,
    watchdog_stops: u64,
    faults: [FaultSlot; 4],
    stuck_imu: Option<ImuReading>,
    stuck_gps: Option<GpsFix>,
    stuck_scan: Option<Scan>,
    stuck_odometry: Option<OdometryReading>,
}

fn sensor_index(device: DeviceKind) -> Option<usize> {
    DeviceKind::SENSORS.iter().position(|d| *d == device)
}

impl World {
    /// A world in its initial state.
    pub fn new(config: WorldConfig) -> Result<Self, Error> {
        config.validate()?;
        let slot = FaultSlot {
            fault: Fault::None,
            burst_until_s: 0.0,
        };
        Ok(Self {
            rng: ChaCha8Rng::seed_from_u64(config.seed),
            time_s: 0.0,
            pose: config.start,
            command: Twist::ZERO,
            velocity: Twist::ZERO,
            accel_body_mps2: Vector2::zeros(),
            wheel_left_m: 0.0,
            wheel_right_m: 0.0,
            fence: EpochFence::default(),
            epochs: std::collections::VecDeque::new(),
            estop_engaged: false,
            led_on: false,
            in_contact: false,
            collisions: 0,
            watchdog_stops: 0,
            faults: [slot.clone(), slot.clone(), slot.clone(), slot],
            stuck_imu: None,
            stuck_gps: None,
            stuck_scan: None,
            stuck_odometry: None,
            config,
        })
    }

    /// The config the world was built from.
    pub fn config(&self) -> &WorldConfig {
        &self.config
    }

    /// World time.
    pub fn time(&self) -> Timestamp {
        Timestamp::from_secs_f64(self.time_s)
    }

    /// True pose.
    pub fn pose(&self) -> Pose2 {
        self.pose
    }

    /// True body velocity.
    pub fn velocity(&self) -> Twist {
        self.velocity
    }

    /// The drivetrain's fencing state.
    pub fn fence(&self) -> &EpochFence {
        &self.fence
    }

    /// Offers a drive command: validated, fenced on its epoch, refused while
    /// the e-stop is engaged, then clamped to the wheels' top speed
    /// (scaling both wheels together so the path's curvature is kept).
    pub fn command(&mut self, cmd: &VelocityCommand) -> Result<(), Error> {
        cmd.validate()?;
        self.fence.admit(cmd.epoch)?;
        if self.estop_engaged {
            return Err(Error::EStopEngaged);
        }
        self.note_epoch(cmd.epoch);
        let half_track = self.config.track_width_m / 2.0;
        let left = cmd.linear_mps - cmd.angular_rps * half_track;
        let right = cmd.linear_mps + cmd.angular_rps * half_track;
        let fastest = left.abs().max(right.abs());
        let scale = if fastest > self.config.wheel_speed_mps_max {
            self.config.wheel_speed_mps_max / fastest
        } else {
            1.0
        };
        self.command = Twist {
            linear_mps: cmd.linear_mps * scale,
            angular_rps: cmd.angular_rps * scale,
        };
        Ok(())
    }

    fn note_epoch(&mut self, epoch: u64) {
        let now = self.time();
        match self.epochs.back_mut() {
            Some(last) if last.epoch == epoch => {
                last.accepted += 1;
                last.last = now;
            }
            _ => {
                if self.epochs.len() == EPOCH_LOG_MAX {
                    self.epochs.pop_front();
                }
                self.epochs.push_back(EpochUse {
                    epoch,
                    accepted: 1,
                    first: now,
                    last: now,
                });
            }
        }
    }

    /// Stops the wheels because no valid command arrived in time. Not fenced:
    /// the watchdog is the drivetrain's own safety, not a controller.
    pub fn watchdog_halt(&mut self) {
        if self.command != Twist::ZERO {
            self.watchdog_stops += 1;
        }
        self.command = Twist::ZERO;
    }

    /// True if the wheels are commanded to move.
    pub fn is_moving(&self) -> bool {
        self.command != Twist::ZERO
    }

    /// Presses or releases the e-stop. Pressing it stops the wheels at once,
    /// as cutting motor power would.
    pub fn set_estop(&mut self, engaged: bool) {
        self.estop_engaged = engaged;
        if engaged {
            self.command = Twist::ZERO;
        }
    }

    /// Sets the status LED.
    pub fn set_led(&mut self, on: bool) {
        self.led_on = on;
    }

    /// Advances the world by `dt_s` seconds. The wheels follow the command
    /// instantly (no motor dynamics), and the pose is integrated exactly along
    /// the constant-curvature arc, so straight lines and circles have closed
    /// forms to test against. A step that would overlap an obstacle is not
    /// taken: the rover stops at the contact point and a collision is counted.
    pub fn step(&mut self, dt_s: f64) {
        debug_assert!(dt_s.is_finite() && dt_s >= 0.0, "dt_s = {dt_s}");
        if !(dt_s.is_finite() && dt_s > 0.0) {
            return;
        }
        let Twist {
            linear_mps: v,
            angular_rps: w,
        } = self.command;
        let turn_rad = w * dt_s;
        // Body-frame displacement along the arc; the straight case is the
        // limit of the arc as w → 0, taken explicitly to avoid 0/0.
        let (dx, dy) = if w.abs() < 1e-12 {
            (v * dt_s, 0.0)
        } else {
            (v / w * turn_rad.sin(), v / w * (1.0 - turn_rad.cos()))
        };
        let delta = Isometry2::new(Vector2::new(dx, dy), turn_rad);
        let next = Pose2::from_isometry(&(self.pose.to_isometry() * delta));

        let blocked = self
            .config
            .obstacles
            .iter()
            .any(|c| c.overlaps(&next.position(), self.config.rover_radius_m));
        let previous = self.velocity;
        if blocked {
            if !self.in_contact {
                self.collisions += 1;
                tracing::warn!(x_m = self.pose.x_m, y_m = self.pose.y_m, "rover hit an obstacle");
            }
            self.in_contact = true;
            self.command = Twist::ZERO;
            self.velocity = Twist::ZERO;
        } else {
            self.in_contact = false;
            self.pose = next;
            self.velocity = self.command;
            let half_track = self.config.track_width_m / 2.0;
            self.wheel_left_m += (v - w * half_track) * dt_s;
            self.wheel_right_m += (v + w * half_track) * dt_s;
        }
        self.accel_body_mps2 = Vector2::new(
            (self.velocity.linear_mps - previous.linear_mps) / dt_s,
            self.velocity.linear_mps * self.velocity.angular_rps,
        );
        self.time_s += dt_s;
        for slot in &mut self.faults {
            if matches!(slot.fault, Fault::NoiseBurst { .. }) && self.time_s >= slot.burst_until_s {
                slot.fault = Fault::None;
            }
        }
    }

    /// Injects `fault` into a sensor (replacing any earlier one); `Fault::None` clears it.
    pub fn inject_fault(&mut self, device: DeviceKind, fault: Fault) -> Result<(), Error> {
        let idx = sensor_index(device).ok_or_else(|| Error::InvalidFault {
            device,
            reason: "faults can be injected into sensors only".to_string(),
        })?;
        fault.validate(device)?;
        let burst_until_s = match fault {
            Fault::NoiseBurst { duration_s, .. } => self.time_s + duration_s,
            _ => 0.0,
        };
        self.faults[idx] = FaultSlot { fault, burst_until_s };
        match device {
            DeviceKind::Imu => self.stuck_imu = None,
            DeviceKind::Gps => self.stuck_gps = None,
            DeviceKind::Range => self.stuck_scan = None,
            _ => self.stuck_odometry = None,
        }
        tracing::info!(%device, ?fault, "fault injected");
        Ok(())
    }

    /// The fault on each sensor; a noise burst reports its remaining time.
    pub fn faults(&self) -> Vec<(DeviceKind, Fault)> {
        DeviceKind::SENSORS
            .iter()
            .zip(&self.faults)
            .map(|(d, slot)| {
                let fault = match slot.fault {
                    Fault::NoiseBurst { factor, .. } => Fault::NoiseBurst {
                        factor,
                        duration_s: (slot.burst_until_s - self.time_s).max(0.0),
                    },
                    f => f,
                };
                (*d, fault)
            })
            .collect()
    }

    /// A status snapshot.
    pub fn status(&self) -> WorldStatus {
        WorldStatus {
            time: self.time(),
            pose: self.pose,
            velocity: self.velocity,
            obstacles: self.config.obstacles.clone(),
            fence: self.fence.clone(),
            epochs: self.epochs.iter().copied().collect(),
            origin: self.config.origin,
            watchdog_stops: self.watchdog_stops,
            collisions: self.collisions,
            estop_engaged: self.estop_engaged,
            led_on: self.led_on,
            faults: self.faults(),
        }
    }

    fn gauss(&mut self, std: f64) -> f64 {
        let z: f64 = self.rng.sample(StandardNormal);
        z * std
    }

    fn gate(&mut self, device: DeviceKind) -> Result<Gate, Error> {
        let Some(idx) = sensor_index(device) else {
            return Ok(Gate::Fresh(1.0));
        };
        match self.faults[idx].fault {
            Fault::None => Ok(Gate::Fresh(1.0)),
            Fault::Failed => Err(Error::DeviceFailed {
                device,
                reason: "injected total failure".to_string(),
            }),
            Fault::Dropout { probability } => {
                if self.rng.random_bool(probability) {
                    Err(Error::NoReading { device })
                } else {
                    Ok(Gate::Fresh(1.0))
                }
            }
            Fault::Stuck => Ok(Gate::Stuck),
            Fault::NoiseBurst { factor, .. } => Ok(Gate::Fresh(factor)),
        }
    }

    /// Reads the IMU.
    pub fn read_imu(&mut self) -> Result<ImuReading, Error> {
        let gate = self.gate(DeviceKind::Imu)?;
        if let (Gate::Stuck, Some(r)) = (&gate, &self.stuck_imu) {
            return Ok(ImuReading {
                stamp: self.time(),
                ..r.clone()
            });
        }
        let k = if let Gate::Fresh(k) = gate { k } else { 1.0 };
        let n = self.config.noise.clone();
        let yaw = self.pose.heading_rad + self.gauss(n.imu_yaw_rad_std * k);
        let reading = ImuReading {
            stamp: self.time(),
            orientation: UnitQuaternion::from_euler_angles(0.0, 0.0, yaw),
            angular_rate_rps: Vector3::new(
                self.gauss(n.gyro_rps_std * k),
                self.gauss(n.gyro_rps_std * k),
                self.velocity.angular_rps + self.gauss(n.gyro_rps_std * k),
            ),
            accel_mps2: Vector3::new(
                self.accel_body_mps2.x + self.gauss(n.accel_mps2_std * k),
                self.accel_body_mps2.y + self.gauss(n.accel_mps2_std * k),
                GRAVITY_MPS2 + self.gauss(n.accel_mps2_std * k),
            ),
        };
        if matches!(gate, Gate::Stuck) {
            self.stuck_imu = Some(reading.clone());
        }
        Ok(reading)
    }

    /// Reads the GPS.
    pub fn read_gps(&mut self) -> Result<GpsFix, Error> {
        let gate = self.gate(DeviceKind::Gps)?;
        if let (Gate::Stuck, Some(r)) = (&gate, &self.stuck_gps) {
            return Ok(GpsFix {
                stamp: self.time(),
                ..r.clone()
            });
        }
        let k = if let Gate::Fresh(k) = gate { k } else { 1.0 };
        let n = self.config.noise.clone();
        let east_m = self.pose.x_m + self.gauss(n.gps_m_std * k);
        let north_m = self.pose.y_m + self.gauss(n.gps_m_std * k);
        let (lat_deg, lon_deg) = self.config.origin.to_geodetic(east_m, north_m);
        let fix = GpsFix {
            stamp: self.time(),
            lat_deg,
            lon_deg,
            alt_m: self.config.origin.alt_m + self.gauss(n.gps_alt_m_std * k),
            quality: FixQuality::Gps,
            hdop: n.gps_hdop,
            satellites: 9,
        };
        if matches!(gate, Gate::Stuck) {
            self.stuck_gps = Some(fix.clone());
        }
        Ok(fix)
    }

    /// Sweeps the lidar: each beam is cast against every obstacle and returns
    /// the nearest hit within range.
    pub fn scan(&mut self) -> Result<Scan, Error> {
        let gate = self.gate(DeviceKind::Range)?;
        if let (Gate::Stuck, Some(r)) = (&gate, &self.stuck_scan) {
            return Ok(Scan {
                stamp: self.time(),
                ..r.clone()
            });
        }
        let k = if let Gate::Fresh(k) = gate { k } else { 1.0 };
        let lidar = self.config.lidar.clone();
        let beams = usize::from(lidar.beams);
        let (angle_rad_min, angle_rad_increment) = if beams == 1 {
            (0.0, 0.0)
        } else {
            (-lidar.fov_rad / 2.0, lidar.fov_rad / (beams - 1) as f64)
        };
        let origin = self.pose.position();
        let mut ranges_m = Vec::with_capacity(beams);
        for i in 0..beams {
            let bearing = self.pose.heading_rad + angle_rad_min + angle_rad_increment * i as f64;
            let dir = Vector2::new(bearing.cos(), bearing.sin());
            let hit = nearest_hit(&self.config.obstacles, &origin, &dir);
            let range = match hit {
                Some(t) if t <= lidar.range_m_max => (t + self.gauss(self.config.noise.range_m_std * k)).max(0.0),
                _ => f64::INFINITY,
            };
            ranges_m.push(range);
        }
        let scan = Scan {
            stamp: self.time(),
            angle_rad_min,
            angle_rad_increment,
            range_m_max: lidar.range_m_max,
            ranges_m,
        };
        if matches!(gate, Gate::Stuck) {
            self.stuck_scan = Some(scan.clone());
        }
        Ok(scan)
    }

    /// Reads the wheel encoders.
    pub fn read_odometry(&mut self) -> Result<OdometryReading, Error> {
        let gate = self.gate(DeviceKind::Odometry)?;
        if let (Gate::Stuck, Some(r)) = (&gate, &self.stuck_odometry) {
            return Ok(OdometryReading {
                stamp: self.time(),
                ..r.clone()
            });
        }
        let k = if let Gate::Fresh(k) = gate { k } else { 1.0 };
        let std = self.config.noise.wheel_mps_std * k;
        let half_track = self.config.track_width_m / 2.0;
        let Twist {
            linear_mps: v,
            angular_rps: w,
        } = self.velocity;
        let left = v - w * half_track + self.gauss(std);
        let right = v + w * half_track + self.gauss(std);
        let reading = OdometryReading {
            stamp: self.time(),
            left_m: self.wheel_left_m,
            right_m: self.wheel_right_m,
            twist: Twist {
                linear_mps: (left + right) / 2.0,
                angular_rps: (right - left) / self.config.track_width_m,
            },
        };
        if matches!(gate, Gate::Stuck) {
            self.stuck_odometry = Some(reading.clone());
        }
        Ok(reading)
    }

    /// Reads the e-stop.
    pub fn read_estop(&self) -> EStopReading {
        EStopReading {
            stamp: self.time(),
            engaged: self.estop_engaged,
        }
    }
}

/// Distance to the nearest obstacle along a ray, if any.
fn nearest_hit(obstacles: &[Circle], origin: &Point2<f64>, dir: &Vector2<f64>) -> Option<f64> {
    obstacles
        .iter()
        .filter_map(|c| c.ray_hit(origin, dir))
        .min_by(|a, b| a.total_cmp(b))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::f64::consts::PI;

    fn quiet_world() -> World {
        let config = WorldConfig {
            noise: NoiseConfig {
                gyro_rps_std: 0.0,
                accel_mps2_std: 0.0,
                imu_yaw_rad_std: 0.0,
                gps_m_std: 0.0,
                gps_alt_m_std: 0.0,
                gps_hdop: 1.0,
                wheel_mps_std: 0.0,
                range_m_std: 0.0,
            },
            ..WorldConfig::default()
        };
        World::new(config).unwrap_or_else(|e| panic!("default config is valid: {e}"))
    }

    fn drive(w: &mut World, linear_mps: f64, angular_rps: f64) {
        let cmd = VelocityCommand {
            epoch: 1,
            linear_mps,
            angular_rps,
        };
        w.command(&cmd).unwrap_or_else(|e| panic!("command refused: {e}"));
    }

    /// Straight line: after t seconds at v along heading θ the rover is at
    /// v·t·(cos θ, sin θ). Tolerance 1e-9 m: the integration is exact, so
    /// only float rounding over 1000 steps remains.
    #[test]
    fn straight_line_matches_closed_form() {
        let mut w = World::new(WorldConfig {
            start: Pose2::new(1.0, 2.0, PI / 6.0),
            ..quiet_world().config().clone()
        })
        .unwrap_or_else(|e| panic!("{e}"));
        drive(&mut w, 1.5, 0.0);
        for _ in 0..1000 {
            w.step(0.01);
        }
        let p = w.pose();
        let (ex, ey) = (1.0 + 15.0 * (PI / 6.0).cos(), 2.0 + 15.0 * (PI / 6.0).sin());
        assert!(
            (p.x_m - ex).abs() < 1e-9 && (p.y_m - ey).abs() < 1e-9,
            "pose {p:?}, expected ({ex}, {ey})"
        );
        assert!((p.heading_rad - PI / 6.0).abs() < 1e-12);
        let o = w.read_odometry().unwrap_or_else(|e| panic!("{e}"));
        assert!(
            (o.left_m - 15.0).abs() < 1e-9 && (o.right_m - 15.0).abs() < 1e-9,
            "{o:?}"
        );
    }

    /// Constant-rate turn: a circle of radius v/ω, back at the start after
    /// 2π/ω seconds; at the half-way point the rover is 2r across. Tolerance
    /// 1e-6 m (exact arcs; step count times rounding).
    #[test]
    fn constant_turn_closes_the_circle() {
        let mut w = quiet_world();
        let (v, omega) = (1.0, 0.5);
        drive(&mut w, v, omega);
        let period_s = 2.0 * PI / omega;
        let steps = 1000;
        let dt = period_s / steps as f64;
        for i in 0..steps {
            w.step(dt);
            if i + 1 == steps / 2 {
                let p = w.pose();
                let r = v / omega;
                assert!(
                    p.x_m.abs() < 1e-6 && (p.y_m - 2.0 * r).abs() < 1e-6,
                    "half way at {p:?}"
                );
                assert!((p.heading_rad.abs() - PI).abs() < 1e-6, "half way heading {p:?}");
            }
        }
        let p = w.pose();
        assert!(
            p.x_m.abs() < 1e-6 && p.y_m.abs() < 1e-6 && p.heading_rad.abs() < 1e-6,
            "end at {p:?}"
        );
    }

    #[test]
    fn commands_are_clamped_keeping_curvature() {
        let mut w = quiet_world();
        drive(&mut w, 10.0, 1.0);
        w.step(0.1);
        let v = w.velocity();
        assert!((v.linear_mps / v.angular_rps - 10.0).abs() < 1e-9, "{v:?}");
        let fastest = v.linear_mps + v.angular_rps * 0.3;
        assert!((fastest - 2.0).abs() < 1e-9, "{v:?}");
    }

    #[test]
    fn lidar_sees_obstacle_ahead() {
        let mut cfg = quiet_world().config().clone();
        cfg.obstacles = vec![Circle {
            x_m: 5.0,
            y_m: 0.0,
            radius_m: 1.0,
        }];
        let mut w = World::new(cfg).unwrap_or_else(|e| panic!("{e}"));
        let scan = w.scan().unwrap_or_else(|e| panic!("{e}"));
        let mid = scan.ranges_m.len() / 2;
        assert!(scan.bearing_rad(mid).abs() < 1e-12);
        assert!((scan.ranges_m[mid] - 4.0).abs() < 1e-9, "{:?}", scan.ranges_m[mid]);
        assert!(scan.ranges_m[0].is_infinite());
    }

    #[test]
    fn collision_stops_the_rover() {
        let mut cfg = quiet_world().config().clone();
        cfg.obstacles = vec![Circle {
            x_m: 3.0,
            y_m: 0.0,
            radius_m: 0.5,
        }];
        let mut w = World::new(cfg).unwrap_or_else(|e| panic!("{e}"));
        drive(&mut w, 1.0, 0.0);
        for _ in 0..100 {
            w.step(0.05);
        }
        assert_eq!(w.status().collisions, 1);
        assert!(w.pose().x_m < 3.0 - 0.9 + 1e-9 && w.pose().x_m > 2.0, "{:?}", w.pose());
        assert!(!w.is_moving());
    }

    #[test]
    fn same_seed_same_noise() {
        let mut a = World::new(WorldConfig::default()).unwrap_or_else(|e| panic!("{e}"));
        let mut b = World::new(WorldConfig::default()).unwrap_or_else(|e| panic!("{e}"));
        for _ in 0..10 {
            assert_eq!(a.read_gps().ok(), b.read_gps().ok());
            assert_eq!(a.read_imu().ok(), b.read_imu().ok());
        }
    }

    #[test]
    fn invalid_config_is_refused() {
        let cfg = WorldConfig {
            track_width_m: 0.0,
            ..WorldConfig::default()
        };
        assert!(matches!(World::new(cfg), Err(Error::InvalidConfig { .. })));
    }
}
