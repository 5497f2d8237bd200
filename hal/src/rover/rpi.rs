//! The rover handlers' hardware on a Raspberry Pi (feature `rpi`).

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use rppal::pwm::Channel;
use serde::{Deserialize, Serialize};

use crate::device::{
    Device, DeviceKind, Drive, EStop, EStopReading, Gps, GpsFix, Health, Imu, ImuReading, Odometry, OdometryReading,
    RangeScanner, Scan,
};
use crate::error::Error;
use crate::geo::GeoOrigin;
use crate::rover::{RoverHardware, SensorSuite};
use crate::rpi::{MotorConfig, Mpu6050, NmeaGps, PwmDrive, RpiEStop};

/// How the rover's parts are wired to the Pi. Defaults: MPU-6050 on I2C bus
/// 1 at 0x68, GPS on `/dev/serial0` at 9600 baud, e-stop on BCM 17 (pressed
/// = low, with the pull-up), motors on PWM0/PWM1 with direction pins 5/6.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RpiRoverConfig {
    /// I2C bus of the IMU.
    pub imu_i2c_bus: u8,
    /// I2C address of the IMU (0x68, or 0x69 with AD0 high).
    pub imu_i2c_address: u16,
    /// Serial port of the GPS.
    pub gps_port: String,
    /// Its baud rate.
    pub gps_baud: u32,
    /// BCM pin of the e-stop.
    pub estop_pin: u8,
    /// The e-stop reads high when pressed (default: pressed pulls it low).
    pub estop_engaged_when_high: bool,
    /// PWM channel (0 or 1) of the left motor.
    pub left_pwm_channel: u8,
    /// PWM channel (0 or 1) of the right motor.
    pub right_pwm_channel: u8,
    /// BCM pin of the left direction input.
    pub left_dir_pin: u8,
    /// BCM pin of the right direction input.
    pub right_dir_pin: u8,
    /// Flip the left motor.
    pub left_inverted: bool,
    /// Flip the right motor.
    pub right_inverted: bool,
    /// Distance between the wheels, m.
    pub track_width_m: f64,
    /// Wheel speed at full duty, m/s.
    pub wheel_speed_mps_max: f64,
    /// The site's local frame origin (the mission plan's frame).
    pub origin: GeoOrigin,
}

impl Default for RpiRoverConfig {
    fn default() -> Self {
        let m = MotorConfig::default();
        Self {
            imu_i2c_bus: 1,
            imu_i2c_address: 0x68,
            gps_port: "/dev/serial0".into(),
            gps_baud: 9600,
            estop_pin: 17,
            estop_engaged_when_high: false,
            left_pwm_channel: 0,
            right_pwm_channel: 1,
            left_dir_pin: m.left_dir_pin,
            right_dir_pin: m.right_dir_pin,
            left_inverted: m.left_inverted,
            right_inverted: m.right_inverted,
            track_width_m: m.track_width_m,
            wheel_speed_mps_max: m.wheel_speed_mps_max,
            origin: GeoOrigin::default(),
        }
    }
}

fn channel(n: u8, what: &str) -> Result<Channel, Error> {
    match n {
        0 => Ok(Channel::Pwm0),
        1 => Ok(Channel::Pwm1),
        other => Err(Error::InvalidConfig {
            reason: format!("{what} must be PWM channel 0 or 1, got {other}"),
        }),
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// One physical device shared by the handlers on this node (two readers of
/// one UART would each get half the sentences).
struct Shared<T>(Arc<Mutex<T>>);

impl<T: Device> Device for Shared<T> {
    fn kind(&self) -> DeviceKind {
        lock(&self.0).kind()
    }
    fn health(&self) -> Health {
        lock(&self.0).health()
    }
}

impl<T: Imu> Imu for Shared<T> {
    fn read(&mut self) -> Result<ImuReading, Error> {
        lock(&self.0).read()
    }
}

impl<T: Gps> Gps for Shared<T> {
    fn read(&mut self) -> Result<GpsFix, Error> {
        lock(&self.0).read()
    }
}

impl<T: EStop> EStop for Shared<T> {
    fn read(&mut self) -> Result<EStopReading, Error> {
        lock(&self.0).read()
    }
}

/// A part this rover has no driver for: always Failed, so the replicated
/// policies decide what that means (no lidar ⇒ `Stop`).
struct Absent {
    kind: DeviceKind,
    reason: &'static str,
}

impl Absent {
    fn fail<T>(&self) -> Result<T, Error> {
        Err(Error::DeviceFailed {
            device: self.kind,
            reason: self.reason.to_string(),
        })
    }
}

impl Device for Absent {
    fn kind(&self) -> DeviceKind {
        self.kind
    }
    fn health(&self) -> Health {
        Health::Failed {
            reason: self.reason.to_string(),
        }
    }
}

impl RangeScanner for Absent {
    fn scan(&mut self) -> Result<Scan, Error> {
        self.fail()
    }
}

impl Odometry for Absent {
    fn read(&mut self) -> Result<OdometryReading, Error> {
        self.fail()
    }
}

/// The Pi's parts: MPU-6050, NMEA GPS, GPIO e-stop, PWM motors. There is no
/// lidar or wheel-encoder driver yet: both report Failed, so under the
/// default policies the rover localises but does not drive until one is
/// added (or an operator changes the lidar policy, knowingly).
pub struct RpiRover {
    config: RpiRoverConfig,
    motor: MotorConfig,
    imu: Arc<Mutex<Mpu6050>>,
    gps: Arc<Mutex<NmeaGps>>,
    estop: Arc<Mutex<RpiEStop>>,
}

impl RpiRover {
    /// Opens the shared sensors (never fails on absent hardware: those
    /// devices report Failed) after checking the wiring config.
    pub fn open(config: RpiRoverConfig) -> Result<Self, Error> {
        let motor = MotorConfig {
            left_pwm: channel(config.left_pwm_channel, "left_pwm_channel")?,
            right_pwm: channel(config.right_pwm_channel, "right_pwm_channel")?,
            left_dir_pin: config.left_dir_pin,
            right_dir_pin: config.right_dir_pin,
            left_inverted: config.left_inverted,
            right_inverted: config.right_inverted,
            track_width_m: config.track_width_m,
            wheel_speed_mps_max: config.wheel_speed_mps_max,
            ..MotorConfig::default()
        };
        Ok(Self {
            imu: Arc::new(Mutex::new(Mpu6050::open(config.imu_i2c_bus, config.imu_i2c_address))),
            gps: Arc::new(Mutex::new(NmeaGps::open(&config.gps_port, config.gps_baud))),
            estop: Arc::new(Mutex::new(RpiEStop::open(
                config.estop_pin,
                config.estop_engaged_when_high,
            ))),
            motor,
            config,
        })
    }
}

impl RoverHardware for RpiRover {
    fn sensors(&self) -> Result<SensorSuite, Error> {
        Ok(SensorSuite {
            imu: Box::new(Shared(Arc::clone(&self.imu))),
            gps: Box::new(Shared(Arc::clone(&self.gps))),
            odometry: Box::new(Absent {
                kind: DeviceKind::Odometry,
                reason: "no wheel-encoder driver on this rover",
            }),
            range: Box::new(Absent {
                kind: DeviceKind::Range,
                reason: "no lidar driver on this rover",
            }),
            estop: Box::new(Shared(Arc::clone(&self.estop))),
        })
    }

    fn drive(&self) -> Result<Box<dyn Drive>, Error> {
        Ok(Box::new(PwmDrive::open(self.motor.clone())))
    }

    fn origin(&self) -> Result<GeoOrigin, Error> {
        Ok(self.config.origin)
    }
}
