//! Differential drive on two hardware-PWM channels plus two direction pins.
//!
//! Duty cycle is proportional to wheel speed (open loop: `|v| / v_max`), the
//! direction pin gives the sign. This matches H-bridge boards with a PWM and
//! a DIR input per motor (TB6612FNG with IN2 tied inverted, Cytron MDD10A).
//!
//! Like the simulated drivetrain, it fences commands on their epoch and has a
//! watchdog: a background thread stops the motors if no command has been
//! accepted for `watchdog_ms`, so a controller that dies mid-command does not
//! leave the rover driving.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rppal::gpio::{Gpio, OutputPin};
use rppal::pwm::{Channel, Polarity, Pwm};

use crate::device::{Device, DeviceKind, Drive, EpochFence, Health, HealthTracker, VelocityCommand};
use crate::error::Error;

/// Wiring and limits.
#[derive(Debug, Clone)]
pub struct MotorConfig {
    /// PWM channel of the left motor (Pwm0 is GPIO 12/18 on the header).
    pub left_pwm: Channel,
    /// PWM channel of the right motor (Pwm1 is GPIO 13/19).
    pub right_pwm: Channel,
    /// BCM pin of the left direction input.
    pub left_dir_pin: u8,
    /// BCM pin of the right direction input.
    pub right_dir_pin: u8,
    /// Flip the left motor (wired or mounted mirrored).
    pub left_inverted: bool,
    /// Flip the right motor.
    pub right_inverted: bool,
    /// PWM frequency, Hz (20 kHz: above hearing, within what H-bridges take).
    pub pwm_hz: f64,
    /// Distance between the wheels, m.
    pub track_width_m: f64,
    /// Wheel speed at 100 % duty, m/s.
    pub wheel_speed_mps_max: f64,
    /// Stop if no command is accepted for this long, ms.
    pub watchdog_ms: u64,
}

impl Default for MotorConfig {
    fn default() -> Self {
        Self {
            left_pwm: Channel::Pwm0,
            right_pwm: Channel::Pwm1,
            left_dir_pin: 5,
            right_dir_pin: 6,
            left_inverted: false,
            right_inverted: true,
            pwm_hz: 20_000.0,
            track_width_m: 0.6,
            wheel_speed_mps_max: 2.0,
            watchdog_ms: 500,
        }
    }
}

/// Signed duty cycles (-1..=1) for the left and right wheels. Both are scaled
/// together when one would exceed 1, so the path's curvature is kept.
pub fn wheel_duties(cmd: &VelocityCommand, track_width_m: f64, wheel_speed_mps_max: f64) -> (f64, f64) {
    let half = track_width_m / 2.0;
    let left = (cmd.linear_mps - cmd.angular_rps * half) / wheel_speed_mps_max;
    let right = (cmd.linear_mps + cmd.angular_rps * half) / wheel_speed_mps_max;
    let fastest = left.abs().max(right.abs());
    if fastest > 1.0 {
        (left / fastest, right / fastest)
    } else {
        (left, right)
    }
}

struct Hw {
    left: Pwm,
    right: Pwm,
    left_dir: OutputPin,
    right_dir: OutputPin,
}

impl Hw {
    fn open(c: &MotorConfig) -> Result<Self, String> {
        let pwm = |ch: Channel| {
            Pwm::with_frequency(ch, c.pwm_hz, 0.0, Polarity::Normal, true)
                .map_err(|e| format!("pwm channel {ch} unavailable: {e}"))
        };
        let gpio = Gpio::new().map_err(|e| format!("gpio unavailable: {e}"))?;
        let pin = |p: u8| {
            gpio.get(p)
                .map(|p| p.into_output_low())
                .map_err(|e| format!("gpio {p} unavailable: {e}"))
        };
        Ok(Self {
            left: pwm(c.left_pwm)?,
            right: pwm(c.right_pwm)?,
            left_dir: pin(c.left_dir_pin)?,
            right_dir: pin(c.right_dir_pin)?,
        })
    }

    fn apply(&mut self, left: f64, right: f64, c: &MotorConfig) -> Result<(), String> {
        let set = |pwm: &Pwm, dir: &mut OutputPin, duty: f64, inverted: bool| {
            if (duty < 0.0) != inverted {
                dir.set_high();
            } else {
                dir.set_low();
            }
            pwm.set_duty_cycle(duty.abs().min(1.0))
                .map_err(|e| format!("setting duty cycle: {e}"))
        };
        set(&self.left, &mut self.left_dir, left, c.left_inverted)?;
        set(&self.right, &mut self.right_dir, right, c.right_inverted)
    }
}

struct Shared {
    hw: Option<Hw>,
    last_accepted: Option<Instant>,
    moving: bool,
}

fn lock(m: &Mutex<Shared>) -> MutexGuard<'_, Shared> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The PWM drivetrain.
pub struct PwmDrive {
    config: MotorConfig,
    shared: Arc<Mutex<Shared>>,
    fence: EpochFence,
    health: HealthTracker,
    reason: String,
    stop: Arc<AtomicBool>,
    watchdog: Option<JoinHandle<()>>,
}

impl PwmDrive {
    /// Opens the PWM channels and direction pins, motors stopped. Never
    /// fails: missing hardware gives a Failed device that refuses commands.
    pub fn open(config: MotorConfig) -> Self {
        let (hw, health, reason) = match Hw::open(&config) {
            Ok(hw) => (Some(hw), HealthTracker::default(), String::new()),
            Err(reason) => {
                tracing::warn!(%reason, "motor driver absent");
                (None, HealthTracker::failed_at_open(reason.clone()), reason)
            }
        };
        let has_hw = hw.is_some();
        let shared = Arc::new(Mutex::new(Shared {
            hw,
            last_accepted: None,
            moving: false,
        }));
        let stop = Arc::new(AtomicBool::new(false));
        let watchdog = has_hw.then(|| {
            let shared = Arc::clone(&shared);
            let stop = Arc::clone(&stop);
            let config = config.clone();
            std::thread::spawn(move || watchdog_loop(&shared, &stop, &config))
        });
        Self {
            config,
            shared,
            fence: EpochFence::default(),
            health,
            reason,
            stop,
            watchdog,
        }
    }

    /// The fencing state (current epoch, accepted and rejected counts).
    pub fn fence(&self) -> &EpochFence {
        &self.fence
    }
}

fn watchdog_loop(shared: &Mutex<Shared>, stop: &AtomicBool, config: &MotorConfig) {
    let limit = Duration::from_millis(config.watchdog_ms);
    // Check at a tenth of the watchdog period: the rover overruns the
    // deadline by at most 10 %.
    let period = (limit / 10).max(Duration::from_millis(5));
    while !stop.load(Ordering::Relaxed) {
        std::thread::sleep(period);
        let mut s = lock(shared);
        let starved = s.last_accepted.is_none_or(|t| t.elapsed() > limit);
        if s.moving && starved {
            if let Some(hw) = &mut s.hw {
                if let Err(e) = hw.apply(0.0, 0.0, config) {
                    tracing::error!(error = %e, "watchdog could not stop the motors");
                }
            }
            s.moving = false;
            tracing::warn!(
                watchdog_ms = config.watchdog_ms,
                "no drive command accepted in time; watchdog stopped the motors"
            );
        }
    }
}

impl Drop for PwmDrive {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(hw) = &mut lock(&self.shared).hw {
            let _ = hw.apply(0.0, 0.0, &self.config);
        }
        if let Some(handle) = self.watchdog.take() {
            let _ = handle.join();
        }
        // rppal's Pwm also disables the channel when dropped (reset_on_drop).
    }
}

impl Device for PwmDrive {
    fn kind(&self) -> DeviceKind {
        DeviceKind::Drive
    }
    fn health(&self) -> Health {
        self.health.health()
    }
}

impl Drive for PwmDrive {
    fn command(&mut self, cmd: &VelocityCommand) -> Result<(), Error> {
        cmd.validate()?;
        let mut s = lock(&self.shared);
        let Some(hw) = &mut s.hw else {
            return Err(Error::DeviceFailed {
                device: DeviceKind::Drive,
                reason: self.reason.clone(),
            });
        };
        self.fence.admit(cmd.epoch)?;
        let (left, right) = wheel_duties(cmd, self.config.track_width_m, self.config.wheel_speed_mps_max);
        match hw.apply(left, right, &self.config) {
            Ok(()) => {
                s.last_accepted = Some(Instant::now());
                s.moving = left != 0.0 || right != 0.0;
                self.health.record_ok(None);
                Ok(())
            }
            Err(reason) => {
                let e = Error::DeviceFailed {
                    device: DeviceKind::Drive,
                    reason,
                };
                self.health.record_err(&e);
                Err(e)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn duties_scale_together() {
        let cmd = VelocityCommand {
            epoch: 1,
            linear_mps: 3.0,
            angular_rps: 2.0,
        };
        let (l, r) = wheel_duties(&cmd, 0.5, 2.0);
        assert!((r - 1.0).abs() < 1e-12, "{l} {r}");
        assert!((l - 2.5 / 3.5).abs() < 1e-12, "{l} {r}");
        let (l, r) = wheel_duties(&VelocityCommand::stop(1), 0.5, 2.0);
        assert_eq!((l, r), (0.0, 0.0));
    }

    #[test]
    fn absent_hardware_reports_failed_not_panic() {
        let mut d = PwmDrive::open(MotorConfig::default());
        assert!(d.health().is_failed(), "{:?}", d.health());
        assert!(matches!(
            d.command(&VelocityCommand::stop(1)),
            Err(Error::DeviceFailed { .. })
        ));
    }
}
