//! InvenSense MPU-6050 on I2C.
//!
//! Configured for ±250 °/s and ±2 g (the most resolution; a rover turns and
//! jolts far less than that) with the 44 Hz digital low-pass filter.
//! Orientation comes from a complementary filter: roll and pitch from gravity
//! blended with the integrated gyro, yaw from the integrated gyro alone (no
//! magnetometer, so yaw drifts; consumers use the yaw *rate*).

use std::time::Instant;

use nalgebra::{UnitQuaternion, Vector3};
use rppal::i2c::I2c;

use crate::device::{fingerprint, Device, DeviceKind, Health, HealthTracker, Imu, ImuReading};
use crate::error::Error;
use crate::sim::GRAVITY_MPS2;

/// I2C address with AD0 low; 0x69 with AD0 high.
pub const ADDRESS_DEFAULT: u16 = 0x68;

const REG_SMPLRT_DIV: u8 = 0x19;
const REG_CONFIG: u8 = 0x1A;
const REG_GYRO_CONFIG: u8 = 0x1B;
const REG_ACCEL_CONFIG: u8 = 0x1C;
const REG_ACCEL_XOUT_H: u8 = 0x3B;
const REG_PWR_MGMT_1: u8 = 0x6B;
const REG_WHO_AM_I: u8 = 0x75;
/// WHO_AM_I reads 0x68 whatever AD0 is.
const WHO_AM_I: u8 = 0x68;

/// LSB per g at ±2 g.
const ACCEL_LSB_PER_G: f64 = 16_384.0;
/// LSB per °/s at ±250 °/s.
const GYRO_LSB_PER_DPS: f64 = 131.0;
/// Weight of the integrated gyro in the complementary filter: at ~50 Hz this
/// is a ~1 s time constant, long enough to ignore bumps, short enough to
/// follow a slope.
const GYRO_WEIGHT: f64 = 0.98;
/// Longer gaps between reads are not integrated (the rate is unknown in between).
const DT_S_MAX: f64 = 0.5;

/// Decodes the 14 bytes from ACCEL_XOUT_H: accelerometer (m/s²) and gyro
/// (rad/s), body frame; the temperature in the middle is skipped.
pub fn decode_sample(raw: &[u8; 14]) -> (Vector3<f64>, Vector3<f64>) {
    let word = |i: usize| f64::from(i16::from_be_bytes([raw[i], raw[i + 1]]));
    let accel = Vector3::new(word(0), word(2), word(4)) * (GRAVITY_MPS2 / ACCEL_LSB_PER_G);
    let gyro = Vector3::new(word(8), word(10), word(12)) * (1.0 / GYRO_LSB_PER_DPS).to_radians();
    (accel, gyro)
}

/// The MPU-6050.
pub struct Mpu6050 {
    i2c: Option<I2c>,
    reason: String,
    health: HealthTracker,
    roll_rad: f64,
    pitch_rad: f64,
    yaw_rad: f64,
    last_read: Option<Instant>,
}

impl Mpu6050 {
    /// Opens the part on I2C bus `bus` (1 on every Pi since the B+) at
    /// `address`, checks WHO_AM_I and configures it. Never fails: a missing
    /// bus or part gives a device whose health is Failed.
    pub fn open(bus: u8, address: u16) -> Self {
        match Self::init(bus, address) {
            Ok(i2c) => Self {
                i2c: Some(i2c),
                reason: String::new(),
                health: HealthTracker::default(),
                roll_rad: 0.0,
                pitch_rad: 0.0,
                yaw_rad: 0.0,
                last_read: None,
            },
            Err(reason) => {
                tracing::warn!(%reason, "mpu-6050 absent");
                Self {
                    i2c: None,
                    health: HealthTracker::failed_at_open(reason.clone()),
                    reason,
                    roll_rad: 0.0,
                    pitch_rad: 0.0,
                    yaw_rad: 0.0,
                    last_read: None,
                }
            }
        }
    }

    fn init(bus: u8, address: u16) -> Result<I2c, String> {
        let mut i2c = I2c::with_bus(bus).map_err(|e| format!("i2c bus {bus} unavailable: {e}"))?;
        i2c.set_slave_address(address)
            .map_err(|e| format!("i2c address {address:#04x} rejected: {e}"))?;
        let who = i2c
            .smbus_read_byte(REG_WHO_AM_I)
            .map_err(|e| format!("no mpu-6050 answering at {address:#04x}: {e}"))?;
        if who != WHO_AM_I {
            return Err(format!(
                "device at {address:#04x} is not an mpu-6050 (who_am_i {who:#04x})"
            ));
        }
        let setup = [
            // Wake up, clocked from the X gyro's PLL (more stable than the internal oscillator).
            (REG_PWR_MGMT_1, 0x01),
            // 44 Hz low-pass: cuts motor vibration, keeps the rover's motion.
            (REG_CONFIG, 0x03),
            // 1 kHz / (1 + 9) = 100 Hz sample rate.
            (REG_SMPLRT_DIV, 9),
            (REG_GYRO_CONFIG, 0x00),
            (REG_ACCEL_CONFIG, 0x00),
        ];
        for (reg, value) in setup {
            i2c.smbus_write_byte(reg, value)
                .map_err(|e| format!("configuring register {reg:#04x}: {e}"))?;
        }
        Ok(i2c)
    }

    fn sample(&mut self) -> Result<ImuReading, Error> {
        let Some(i2c) = &self.i2c else {
            return Err(Error::DeviceFailed {
                device: DeviceKind::Imu,
                reason: self.reason.clone(),
            });
        };
        let mut raw = [0u8; 14];
        i2c.write_read(&[REG_ACCEL_XOUT_H], &mut raw)
            .map_err(|e| Error::DeviceFailed {
                device: DeviceKind::Imu,
                reason: format!("i2c read: {e}"),
            })?;
        let (accel, gyro) = decode_sample(&raw);
        let now = Instant::now();
        let dt = self
            .last_read
            .map(|t| now.duration_since(t).as_secs_f64())
            .filter(|dt| *dt <= DT_S_MAX)
            .unwrap_or(0.0);
        self.last_read = Some(now);
        let roll_acc = accel.y.atan2(accel.z);
        let pitch_acc = (-accel.x).atan2(accel.y.hypot(accel.z));
        self.roll_rad = GYRO_WEIGHT * (self.roll_rad + gyro.x * dt) + (1.0 - GYRO_WEIGHT) * roll_acc;
        self.pitch_rad = GYRO_WEIGHT * (self.pitch_rad + gyro.y * dt) + (1.0 - GYRO_WEIGHT) * pitch_acc;
        self.yaw_rad = crate::geo::wrap_angle(self.yaw_rad + gyro.z * dt);
        Ok(ImuReading {
            stamp: super::now(),
            orientation: UnitQuaternion::from_euler_angles(self.roll_rad, self.pitch_rad, self.yaw_rad),
            angular_rate_rps: gyro,
            accel_mps2: accel,
        })
    }
}

impl Device for Mpu6050 {
    fn kind(&self) -> DeviceKind {
        DeviceKind::Imu
    }
    fn health(&self) -> Health {
        self.health.health()
    }
}

impl Imu for Mpu6050 {
    fn read(&mut self) -> Result<ImuReading, Error> {
        let outcome = self.sample();
        match &outcome {
            // Raw sensor values, not the filtered orientation: a frozen bus
            // returns identical raw bytes while the filter output still moves.
            Ok(r) => self.health.record_ok(fingerprint(&(r.angular_rate_rps, r.accel_mps2))),
            Err(e) => self.health.record_err(e),
        }
        outcome
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_one_g_and_a_yaw_rate() {
        let mut raw = [0u8; 14];
        raw[4..6].copy_from_slice(&16_384i16.to_be_bytes());
        raw[12..14].copy_from_slice(&(-131i16 * 90).to_be_bytes());
        let (accel, gyro) = decode_sample(&raw);
        assert!((accel.z - GRAVITY_MPS2).abs() < 1e-9, "{accel:?}");
        assert!((gyro.z + std::f64::consts::FRAC_PI_2).abs() < 1e-9, "{gyro:?}");
    }

    #[test]
    fn absent_bus_reports_failed_not_panic() {
        // Bus 250 does not exist on any machine.
        let mut imu = Mpu6050::open(250, ADDRESS_DEFAULT);
        assert!(imu.health().is_failed(), "{:?}", imu.health());
        assert!(matches!(imu.read(), Err(Error::DeviceFailed { .. })));
    }
}
