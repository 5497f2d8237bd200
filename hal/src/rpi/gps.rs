//! NMEA-0183 GPS receiver on a UART.
//!
//! The receiver streams sentences; each [`Gps::read`]
//! drains what has arrived (bounded), parses GGA sentences with the `nmea`
//! crate, and returns the newest fix, or [`Error::NoReading`] if no new fix
//! came in since the last call (receivers send 1–10 fixes a second, agents
//! poll faster).

use std::time::Duration;

use rppal::uart::{Parity, Uart};

use crate::device::{fingerprint, Device, DeviceKind, FixQuality, Gps, GpsFix, Health, HealthTracker, Timestamp};
use crate::error::Error;

/// NMEA caps a sentence at 82 characters; a longer "line" is line noise or a
/// baud mismatch and is dropped rather than buffered without bound.
const LINE_BYTES_MAX: usize = 128;
/// Bytes drained per read: a second of 9600-baud traffic, so one call never
/// spins for long even if the receiver floods the port.
const DRAIN_BYTES_MAX: usize = 1_024;
/// How long one UART read waits for the first byte.
const READ_TIMEOUT: Duration = Duration::from_millis(50);

/// Splits a byte stream into NMEA lines.
#[derive(Debug, Default)]
pub struct NmeaLines {
    buf: Vec<u8>,
    overflowed: bool,
}

impl NmeaLines {
    /// Feeds bytes; returns the complete lines they finish (without CR/LF).
    pub fn push(&mut self, bytes: &[u8]) -> Vec<String> {
        let mut lines = Vec::new();
        for &b in bytes {
            match b {
                b'\n' => {
                    if !self.overflowed {
                        if let Ok(s) = std::str::from_utf8(&self.buf) {
                            lines.push(s.trim_end_matches('\r').to_string());
                        }
                    }
                    self.buf.clear();
                    self.overflowed = false;
                }
                _ if self.buf.len() >= LINE_BYTES_MAX => self.overflowed = true,
                _ => self.buf.push(b),
            }
        }
        lines
    }
}

fn quality(fix: nmea::sentences::FixType) -> FixQuality {
    use nmea::sentences::FixType as F;
    match fix {
        F::Invalid => FixQuality::NoFix,
        F::Gps => FixQuality::Gps,
        F::DGps | F::Pps => FixQuality::DGps,
        F::Rtk => FixQuality::Rtk,
        F::FloatRtk => FixQuality::FloatRtk,
        F::Estimated | F::Manual | F::Simulation => FixQuality::Estimated,
    }
}

/// Parses one NMEA line; `Some` only for a GGA sentence with a position.
/// Other sentences and garbled lines are `None` (noise on a serial line is
/// normal and not a device failure; the health tracker notices if *no* fix
/// arrives).
pub fn parse_gga(line: &str, stamp: Timestamp) -> Option<GpsFix> {
    match nmea::parse_str(line) {
        Ok(nmea::ParseResult::GGA(gga)) => {
            let quality = gga.fix_type.map(quality).unwrap_or(FixQuality::NoFix);
            Some(GpsFix {
                stamp,
                lat_deg: gga.latitude?,
                lon_deg: gga.longitude?,
                alt_m: f64::from(gga.altitude.unwrap_or(0.0)),
                quality,
                // No HDOP means we know nothing of the geometry: assume poor.
                hdop: gga.hdop.map(f64::from).unwrap_or(10.0),
                satellites: gga.fix_satellites.map(|n| n.min(255) as u8).unwrap_or(0),
            })
        }
        Ok(_) => None,
        Err(e) => {
            tracing::debug!(error = ?e, line, "unparsed nmea line");
            None
        }
    }
}

/// A GPS receiver on a UART.
pub struct NmeaGps {
    uart: Option<Uart>,
    reason: String,
    lines: NmeaLines,
    health: HealthTracker,
}

impl NmeaGps {
    /// Opens `path` (e.g. `/dev/serial0`) at `baud` 8N1 (most receivers ship
    /// at 9600). Never fails: a missing port gives a Failed device.
    pub fn open(path: &str, baud: u32) -> Self {
        let opened = Uart::with_path(path, baud, Parity::None, 8, 1).and_then(|mut uart| {
            uart.set_read_mode(0, READ_TIMEOUT)?;
            Ok(uart)
        });
        match opened {
            Ok(uart) => Self {
                uart: Some(uart),
                reason: String::new(),
                lines: NmeaLines::default(),
                health: HealthTracker::default(),
            },
            Err(e) => {
                let reason = format!("uart {path} unavailable: {e}");
                tracing::warn!(%reason, "gps absent");
                Self {
                    uart: None,
                    health: HealthTracker::failed_at_open(reason.clone()),
                    reason,
                    lines: NmeaLines::default(),
                }
            }
        }
    }

    fn drain(&mut self) -> Result<GpsFix, Error> {
        let Some(uart) = &mut self.uart else {
            return Err(Error::DeviceFailed {
                device: DeviceKind::Gps,
                reason: self.reason.clone(),
            });
        };
        let mut newest = None;
        let mut buf = [0u8; 256];
        let mut drained = 0;
        while drained < DRAIN_BYTES_MAX {
            let n = uart.read(&mut buf).map_err(|e| Error::DeviceFailed {
                device: DeviceKind::Gps,
                reason: format!("uart read: {e}"),
            })?;
            if n == 0 {
                break;
            }
            drained += n;
            let stamp = super::now();
            for line in self.lines.push(&buf[..n]) {
                if let Some(fix) = parse_gga(&line, stamp) {
                    newest = Some(fix);
                }
            }
        }
        newest.ok_or(Error::NoReading {
            device: DeviceKind::Gps,
        })
    }
}

impl Device for NmeaGps {
    fn kind(&self) -> DeviceKind {
        DeviceKind::Gps
    }
    fn health(&self) -> Health {
        self.health.health()
    }
}

impl Gps for NmeaGps {
    fn read(&mut self) -> Result<GpsFix, Error> {
        let outcome = self.drain();
        match &outcome {
            Ok(fix) => self
                .health
                .record_ok(fingerprint(&(fix.lat_deg, fix.lon_deg, fix.alt_m))),
            // Polling faster than the receiver's rate is normal; only a real
            // failure counts against health.
            Err(Error::NoReading { .. }) => {}
            Err(e) => self.health.record_err(e),
        }
        outcome
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Frames a sentence body with `$` and its XOR checksum.
    fn sentence(body: &str) -> String {
        let sum = body.bytes().fold(0u8, |acc, b| acc ^ b);
        format!("${body}*{sum:02X}")
    }

    #[test]
    fn parses_gga() {
        let gga = sentence("GPGGA,092750.000,5321.6802,N,00630.3372,W,1,8,1.03,61.7,M,55.2,M,,");
        let fix = parse_gga(&gga, Timestamp { nanos: 5 }).unwrap_or_else(|| panic!("gga should parse"));
        assert!((fix.lat_deg - 53.361_336_667).abs() < 1e-6, "{fix:?}");
        assert!((fix.lon_deg + 6.505_62).abs() < 1e-6, "{fix:?}");
        assert_eq!(fix.quality, FixQuality::Gps);
        assert_eq!(fix.satellites, 8);
        assert!((fix.hdop - 1.03).abs() < 1e-6 && (fix.alt_m - 61.7).abs() < 1e-4);
    }

    #[test]
    fn garbage_and_other_sentences_are_ignored() {
        assert_eq!(parse_gga(&sentence("GPGGA,garbage"), Timestamp::default()), None);
        assert_eq!(
            parse_gga("$GPGGA,092750.000,5321.6802,N*00", Timestamp::default()),
            None
        );
        assert_eq!(parse_gga(&sentence("GPRMC,1,2,3"), Timestamp::default()), None);
    }

    #[test]
    fn lines_split_and_overlong_lines_drop() {
        let mut l = NmeaLines::default();
        assert!(l.push(b"$GPGGA,1").is_empty());
        assert_eq!(
            l.push(b",2\r\n$X\r\n"),
            vec!["$GPGGA,1,2".to_string(), "$X".to_string()]
        );
        let long = vec![b'a'; LINE_BYTES_MAX + 10];
        assert!(l.push(&long).is_empty());
        assert_eq!(l.push(b"\n$OK\n"), vec!["$OK".to_string()]);
    }

    #[test]
    fn absent_port_reports_failed_not_panic() {
        let mut gps = NmeaGps::open("/dev/cairn-no-such-uart", 9600);
        assert!(gps.health().is_failed(), "{:?}", gps.health());
        assert!(matches!(gps.read(), Err(Error::DeviceFailed { .. })));
    }
}
