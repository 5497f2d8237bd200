//! The one error type of this crate.
//!
//! Variants fall in three groups, and callers treat them differently:
//! - *device* errors ([`Error::NoReading`], [`Error::DeviceFailed`],
//!   [`Error::EStopEngaged`]): the hardware (or the simulated hardware) did
//!   not deliver; retry next cycle and let the health report decide when to
//!   degrade;
//! - *refusals* ([`Error::StaleEpoch`], [`Error::InvalidCommand`],
//!   [`Error::InvalidConfig`], [`Error::InvalidFault`]): the request itself was
//!   wrong and retrying it unchanged will fail again;
//! - *link* errors ([`Error::Io`], [`Error::FrameTooLarge`], [`Error::Decode`],
//!   [`Error::ConnectionClosed`], [`Error::Timeout`],
//!   [`Error::UnexpectedResponse`]): the connection to the sim world broke;
//!   reconnecting may help.
//!
//! [`RemoteError`] is the serialisable subset that crosses the sim world's
//! socket; the client turns it back into an [`Error`].

use serde::{Deserialize, Serialize};

use crate::device::DeviceKind;

/// Everything that can go wrong in cairn-hal.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The device produced no reading this time (a dropout); the next read may succeed.
    #[error("{device} produced no reading")]
    NoReading {
        /// Which device.
        device: DeviceKind,
    },
    /// The device is not working (absent, unplugged, or failed).
    #[error("{device} failed: {reason}")]
    DeviceFailed {
        /// Which device.
        device: DeviceKind,
        /// What is known about why.
        reason: String,
    },
    /// A drive command carried an epoch older than one the drivetrain has already obeyed.
    #[error("stale drive command: epoch {epoch} is older than current epoch {current}")]
    StaleEpoch {
        /// The epoch the command carried.
        epoch: u64,
        /// The highest epoch the drivetrain has accepted.
        current: u64,
    },
    /// The e-stop is engaged, so the drivetrain will not move.
    #[error("e-stop engaged")]
    EStopEngaged,
    /// A command had values that cannot be obeyed (NaN, infinite).
    #[error("invalid command: {reason}")]
    InvalidCommand {
        /// What is wrong with it.
        reason: String,
    },
    /// A configuration failed validation.
    #[error("invalid config: {reason}")]
    InvalidConfig {
        /// What is wrong with it.
        reason: String,
    },
    /// A fault cannot be injected as asked (for example into an actuator).
    #[error("invalid fault for {device}: {reason}")]
    InvalidFault {
        /// The device named in the request.
        device: DeviceKind,
        /// What is wrong with it.
        reason: String,
    },
    /// A linear-algebra step had no solution (singular innovation covariance).
    #[error("estimator update skipped: {reason}")]
    Numerical {
        /// Which step failed.
        reason: String,
    },
    /// Reading or writing a socket failed.
    #[error("i/o error on {context}: {source}")]
    Io {
        /// What we were doing.
        context: &'static str,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// A frame announced or needed more bytes than the protocol allows.
    #[error("frame of {len} bytes exceeds the maximum of {max} bytes")]
    FrameTooLarge {
        /// The announced or encoded length.
        len: usize,
        /// [`crate::sim::protocol::FRAME_BYTES_MAX`].
        max: usize,
    },
    /// A frame did not decode (or a message did not encode).
    #[error("malformed frame: {source}")]
    Decode {
        /// The postcard error.
        #[source]
        source: postcard::Error,
    },
    /// The peer closed the connection.
    #[error("connection to the sim world closed")]
    ConnectionClosed,
    /// The peer did not answer in time.
    #[error("timed out after {ms} ms waiting for {context}")]
    Timeout {
        /// What we were waiting for.
        context: &'static str,
        /// How long we waited.
        ms: u64,
    },
    /// The peer answered with a message that does not fit the request.
    #[error("unexpected response to {request}")]
    UnexpectedResponse {
        /// The request's name.
        request: &'static str,
    },
}

impl Error {
    /// True for errors where the same call may succeed later unchanged
    /// (dropouts, broken links, timeouts); false for refusals and failures.
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            Error::NoReading { .. } | Error::Io { .. } | Error::ConnectionClosed | Error::Timeout { .. }
        )
    }
}

/// The errors the sim world reports back over its socket.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum RemoteError {
    /// See [`Error::NoReading`].
    NoReading {
        /// Which device.
        device: DeviceKind,
    },
    /// See [`Error::DeviceFailed`].
    DeviceFailed {
        /// Which device.
        device: DeviceKind,
        /// Why.
        reason: String,
    },
    /// See [`Error::StaleEpoch`].
    StaleEpoch {
        /// The epoch the command carried.
        epoch: u64,
        /// The highest epoch accepted so far.
        current: u64,
    },
    /// See [`Error::EStopEngaged`].
    EStopEngaged,
    /// See [`Error::InvalidCommand`].
    InvalidCommand {
        /// What is wrong.
        reason: String,
    },
    /// See [`Error::InvalidFault`].
    InvalidFault {
        /// The device named.
        device: DeviceKind,
        /// What is wrong.
        reason: String,
    },
}

impl From<RemoteError> for Error {
    fn from(e: RemoteError) -> Self {
        match e {
            RemoteError::NoReading { device } => Error::NoReading { device },
            RemoteError::DeviceFailed { device, reason } => Error::DeviceFailed { device, reason },
            RemoteError::StaleEpoch { epoch, current } => Error::StaleEpoch { epoch, current },
            RemoteError::EStopEngaged => Error::EStopEngaged,
            RemoteError::InvalidCommand { reason } => Error::InvalidCommand { reason },
            RemoteError::InvalidFault { device, reason } => Error::InvalidFault { device, reason },
        }
    }
}

impl RemoteError {
    /// The wire form of a world-side error. Link errors never happen inside the
    /// world model, so they map to a generic device failure rather than being lost.
    pub fn from_error(e: &Error, device: DeviceKind) -> Self {
        match e {
            Error::NoReading { device } => RemoteError::NoReading { device: *device },
            Error::DeviceFailed { device, reason } => RemoteError::DeviceFailed {
                device: *device,
                reason: reason.clone(),
            },
            Error::StaleEpoch { epoch, current } => RemoteError::StaleEpoch {
                epoch: *epoch,
                current: *current,
            },
            Error::EStopEngaged => RemoteError::EStopEngaged,
            Error::InvalidCommand { reason } => RemoteError::InvalidCommand { reason: reason.clone() },
            Error::InvalidFault { device, reason } => RemoteError::InvalidFault {
                device: *device,
                reason: reason.clone(),
            },
            other => RemoteError::DeviceFailed {
                device,
                reason: other.to_string(),
            },
        }
    }
}
