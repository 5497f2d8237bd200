//! The sim world's wire protocol.
//!
//! A connection carries request/response pairs, strictly alternating: the
//! client writes one [`Request`] frame and reads one [`Response`] frame. A
//! frame is a 4-byte big-endian length followed by that many bytes of
//! postcard. A frame longer than [`FRAME_BYTES_MAX`], or one that does not
//! decode, makes the server close that connection (and only that one).
//!
//! Postcard is not self-describing, so both ends must be built from the same
//! source; [`PROTOCOL_VERSION`] is returned by [`Request::Hello`] so a client
//! can tell.

use serde::{de::DeserializeOwned, Deserialize, Serialize};

use crate::device::{DeviceKind, EStopReading, GpsFix, ImuReading, OdometryReading, Scan, VelocityCommand};
use crate::error::{Error, RemoteError};
use crate::sim::model::{Fault, WorldStatus};

/// Bumped on any change to [`Request`] or [`Response`].
pub const PROTOCOL_VERSION: u32 = 2;

/// The largest frame either side sends or accepts, bytes. The largest
/// legitimate message is a status with [`crate::sim::OBSTACLES_MAX`]
/// obstacles or a scan with [`crate::sim::LIDAR_BEAMS_MAX`] beams, both
/// under 16 KiB; 64 KiB leaves room without letting a bad length prefix
/// make the server allocate much.
pub const FRAME_BYTES_MAX: usize = 64 * 1024;

/// What a client asks of the world.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Request {
    /// Returns [`Response::Hello`].
    Hello,
    /// Reads the IMU.
    ReadImu,
    /// Reads the GPS.
    ReadGps,
    /// Sweeps the lidar.
    ReadScan,
    /// Reads the wheel encoders.
    ReadOdometry,
    /// Reads the e-stop.
    ReadEStop,
    /// Offers a fenced drive command.
    Drive(VelocityCommand),
    /// Sets the status LED.
    SetLed {
        /// On or off.
        on: bool,
    },
    /// Returns [`Response::Status`].
    Status,
    /// Injects a fault into a sensor ([`Fault::None`] clears it).
    InjectFault {
        /// Which sensor.
        device: DeviceKind,
        /// What fault.
        fault: Fault,
    },
    /// Presses or releases the e-stop.
    SetEStop {
        /// Pressed?
        engaged: bool,
    },
}

impl Request {
    /// The request's name, for errors and logs.
    pub fn name(&self) -> &'static str {
        match self {
            Request::Hello => "hello",
            Request::ReadImu => "read_imu",
            Request::ReadGps => "read_gps",
            Request::ReadScan => "read_scan",
            Request::ReadOdometry => "read_odometry",
            Request::ReadEStop => "read_estop",
            Request::Drive(_) => "drive",
            Request::SetLed { .. } => "set_led",
            Request::Status => "status",
            Request::InjectFault { .. } => "inject_fault",
            Request::SetEStop { .. } => "set_estop",
        }
    }
}

/// What the world answers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Response {
    /// Answer to [`Request::Hello`].
    Hello {
        /// The server's [`PROTOCOL_VERSION`].
        version: u32,
    },
    /// An IMU reading.
    Imu(ImuReading),
    /// A GPS fix.
    Gps(GpsFix),
    /// A lidar sweep.
    Scan(Scan),
    /// An odometry reading.
    Odometry(OdometryReading),
    /// An e-stop reading.
    EStop(EStopReading),
    /// The request was carried out (drive, LED, fault, e-stop).
    Done,
    /// A world snapshot.
    Status(WorldStatus),
    /// The request was refused or the device did not deliver.
    Error(RemoteError),
}

/// Encodes `msg` as one frame (length prefix included).
pub fn encode_frame<T: Serialize>(msg: &T) -> Result<Vec<u8>, Error> {
    // Four placeholder bytes for the length, filled in once it is known.
    let mut buf = postcard::to_extend(msg, vec![0u8; 4]).map_err(|source| Error::Decode { source })?;
    let len = buf.len() - 4;
    if len > FRAME_BYTES_MAX {
        return Err(Error::FrameTooLarge {
            len,
            max: FRAME_BYTES_MAX,
        });
    }
    // Checked just above: len <= FRAME_BYTES_MAX < u32::MAX.
    buf[..4].copy_from_slice(&(len as u32).to_be_bytes());
    Ok(buf)
}

/// Checks a frame's length prefix before anything is allocated for it.
pub fn frame_len(prefix: [u8; 4]) -> Result<usize, Error> {
    let len = u32::from_be_bytes(prefix) as usize;
    if len > FRAME_BYTES_MAX {
        return Err(Error::FrameTooLarge {
            len,
            max: FRAME_BYTES_MAX,
        });
    }
    Ok(len)
}

/// Decodes a frame body (without its length prefix).
pub fn decode_body<T: DeserializeOwned>(body: &[u8]) -> Result<T, Error> {
    postcard::from_bytes(body).map_err(|source| Error::Decode { source })
}

/// Reads one frame body from an async stream; `Ok(None)` on a clean end of
/// stream between frames.
pub async fn read_frame<R>(reader: &mut R) -> Result<Option<Vec<u8>>, Error>
where
    R: tokio::io::AsyncRead + Unpin,
{
    use tokio::io::AsyncReadExt;
    let mut prefix = [0u8; 4];
    match reader.read_exact(&mut prefix).await {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(source) => {
            return Err(Error::Io {
                context: "reading a frame length",
                source,
            })
        }
    }
    let len = frame_len(prefix)?;
    let mut body = vec![0u8; len];
    reader.read_exact(&mut body).await.map_err(|source| {
        if source.kind() == std::io::ErrorKind::UnexpectedEof {
            Error::ConnectionClosed
        } else {
            Error::Io {
                context: "reading a frame body",
                source,
            }
        }
    })?;
    Ok(Some(body))
}

/// Writes one message as a frame to an async stream.
pub async fn write_frame<W, T>(writer: &mut W, msg: &T) -> Result<(), Error>
where
    W: tokio::io::AsyncWrite + Unpin,
    T: Serialize,
{
    use tokio::io::AsyncWriteExt;
    let frame = encode_frame(msg)?;
    writer.write_all(&frame).await.map_err(|source| Error::Io {
        context: "writing a frame",
        source,
    })?;
    writer.flush().await.map_err(|source| Error::Io {
        context: "flushing a frame",
        source,
    })
}

/// Reads one frame body from a blocking stream (the sync sim client).
pub fn read_frame_blocking<R: std::io::Read>(reader: &mut R) -> Result<Vec<u8>, Error> {
    let mut prefix = [0u8; 4];
    reader
        .read_exact(&mut prefix)
        .map_err(io_blocking("reading a frame length"))?;
    let len = frame_len(prefix)?;
    let mut body = vec![0u8; len];
    reader
        .read_exact(&mut body)
        .map_err(io_blocking("reading a frame body"))?;
    Ok(body)
}

/// Writes one message as a frame to a blocking stream.
pub fn write_frame_blocking<W: std::io::Write, T: Serialize>(writer: &mut W, msg: &T) -> Result<(), Error> {
    let frame = encode_frame(msg)?;
    writer.write_all(&frame).map_err(io_blocking("writing a frame"))?;
    writer.flush().map_err(io_blocking("flushing a frame"))
}

/// Maps a blocking socket error, turning timeouts and EOF into their own variants.
fn io_blocking(context: &'static str) -> impl Fn(std::io::Error) -> Error {
    move |source| match source.kind() {
        std::io::ErrorKind::UnexpectedEof => Error::ConnectionClosed,
        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut => Error::Timeout { context, ms: 0 },
        _ => Error::Io { context, source },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frame_round_trip() {
        let req = Request::Drive(VelocityCommand {
            epoch: 7,
            linear_mps: 0.5,
            angular_rps: -0.1,
        });
        let frame = encode_frame(&req).unwrap_or_else(|e| panic!("{e}"));
        let len = frame_len([frame[0], frame[1], frame[2], frame[3]]).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(len, frame.len() - 4);
        let back: Request = decode_body(&frame[4..]).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(back, req);
    }

    #[test]
    fn oversized_prefix_is_refused() {
        let prefix = ((FRAME_BYTES_MAX + 1) as u32).to_be_bytes();
        assert!(matches!(frame_len(prefix), Err(Error::FrameTooLarge { .. })));
    }
}
