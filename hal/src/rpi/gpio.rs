//! E-stop input and status LED on GPIO.

use rppal::gpio::{Gpio, InputPin, Level, OutputPin};

use crate::device::{Device, DeviceKind, EStop, EStopReading, Health, HealthTracker, StatusLed};
use crate::error::Error;

/// An e-stop switch on a GPIO input with the internal pull-up enabled.
///
/// Wire a *normally-closed* switch between the pin and ground: the pin reads
/// low while the switch is closed (run) and high when it is pressed — or when
/// the wire is cut, so a broken e-stop circuit stops the rover.
/// `engaged_when_high = false` supports the opposite wiring.
pub struct RpiEStop {
    pin: Option<InputPin>,
    engaged_when_high: bool,
    health: HealthTracker,
    reason: String,
}

impl RpiEStop {
    /// Opens BCM pin `bcm_pin`. Never fails: an unusable pin gives a device
    /// whose health is Failed and whose reads fail.
    pub fn open(bcm_pin: u8, engaged_when_high: bool) -> Self {
        match Gpio::new().and_then(|gpio| gpio.get(bcm_pin)) {
            Ok(pin) => Self {
                pin: Some(pin.into_input_pullup()),
                engaged_when_high,
                health: HealthTracker::default(),
                reason: String::new(),
            },
            Err(e) => {
                let reason = format!("gpio {bcm_pin} unavailable: {e}");
                tracing::warn!(%reason, "e-stop input absent");
                Self {
                    pin: None,
                    engaged_when_high,
                    health: HealthTracker::failed_at_open(reason.clone()),
                    reason,
                }
            }
        }
    }
}

impl Device for RpiEStop {
    fn kind(&self) -> DeviceKind {
        DeviceKind::EStop
    }
    fn health(&self) -> Health {
        self.health.health()
    }
}

impl EStop for RpiEStop {
    fn read(&mut self) -> Result<EStopReading, Error> {
        let Some(pin) = &self.pin else {
            return Err(Error::DeviceFailed {
                device: DeviceKind::EStop,
                reason: self.reason.clone(),
            });
        };
        let high = pin.read() == Level::High;
        self.health.record_ok(None);
        Ok(EStopReading {
            stamp: super::now(),
            engaged: high == self.engaged_when_high,
        })
    }
}

/// A status LED on a GPIO output (active high).
pub struct RpiStatusLed {
    pin: Option<OutputPin>,
    health: HealthTracker,
    reason: String,
}

impl RpiStatusLed {
    /// Opens BCM pin `bcm_pin`, LED off. Never fails (see [`RpiEStop::open`]).
    pub fn open(bcm_pin: u8) -> Self {
        match Gpio::new().and_then(|gpio| gpio.get(bcm_pin)) {
            Ok(pin) => Self {
                pin: Some(pin.into_output_low()),
                health: HealthTracker::default(),
                reason: String::new(),
            },
            Err(e) => {
                let reason = format!("gpio {bcm_pin} unavailable: {e}");
                Self {
                    pin: None,
                    health: HealthTracker::failed_at_open(reason.clone()),
                    reason,
                }
            }
        }
    }
}

impl Device for RpiStatusLed {
    fn kind(&self) -> DeviceKind {
        DeviceKind::Led
    }
    fn health(&self) -> Health {
        self.health.health()
    }
}

impl StatusLed for RpiStatusLed {
    fn set(&mut self, on: bool) -> Result<(), Error> {
        let Some(pin) = &mut self.pin else {
            return Err(Error::DeviceFailed {
                device: DeviceKind::Led,
                reason: self.reason.clone(),
            });
        };
        if on {
            pin.set_high();
        } else {
            pin.set_low();
        }
        self.health.record_ok(None);
        Ok(())
    }
}
