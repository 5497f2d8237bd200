//! Length-prefixed postcard frames: the wire format of the node-to-node
//! transport.
//!
//! A frame is a 4-byte big-endian length followed by that many bytes of
//! postcard. The length is checked against a maximum *before* anything is
//! allocated, so a garbage or hostile length cannot make a node allocate
//! gigabytes; a frame that does not decode closes its connection.

use std::io;

use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::io::AsyncRead;
use tokio::io::AsyncReadExt;
use tokio::io::AsyncWrite;
use tokio::io::AsyncWriteExt;

/// Default upper bound of one frame. An append carries at most
/// `log.max_append_bytes` of entries (2 MiB by default) plus a bounded
/// header: the log store cuts each replication batch by bytes, because
/// openraft's `max_payload_entries` counts entries only and 300 large ones
/// would not fit (issue 17). Snapshots travel in 1 MiB chunks; a forwarded
/// write carries one command of at most `log.max_entry_bytes`.
pub const DEFAULT_MAX_FRAME_BYTES: usize = 16 << 20;

/// Why a frame could not be read.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    /// The peer closed the connection cleanly between frames.
    #[error("connection closed")]
    Closed,
    /// The length prefix exceeds the limit.
    #[error("frame of {len} bytes exceeds the {max} byte limit")]
    TooLarge {
        /// Announced length.
        len: usize,
        /// Configured limit.
        max: usize,
    },
    /// The payload is not a valid message.
    #[error("malformed frame: {0}")]
    Malformed(#[from] postcard::Error),
    /// The socket failed.
    #[error("i/o: {0}")]
    Io(#[from] io::Error),
}

/// Read one frame and decode it.
pub async fn read_frame<T, R>(reader: &mut R, buf: &mut Vec<u8>, max_frame_bytes: usize) -> Result<T, FrameError>
where
    T: DeserializeOwned,
    R: AsyncRead + Unpin,
{
    let mut len = [0u8; 4];
    match reader.read_exact(&mut len).await {
        Ok(_) => {}
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Err(FrameError::Closed),
        Err(e) => return Err(e.into()),
    }
    let len = u32::from_be_bytes(len) as usize;
    if len > max_frame_bytes {
        return Err(FrameError::TooLarge {
            len,
            max: max_frame_bytes,
        });
    }
    buf.clear();
    buf.resize(len, 0);
    reader.read_exact(buf).await?;
    Ok(postcard::from_bytes(buf)?)
}

/// Encode `msg` as one frame into `out` (appending), for a writer that
/// batches several frames into one syscall.
pub fn encode_frame<T: Serialize>(msg: &T, out: &mut Vec<u8>, max_frame_bytes: usize) -> Result<(), FrameError> {
    // Encode separately so a failure leaves frames already in `out` intact.
    let body = postcard::to_stdvec(msg)?;
    if body.len() > max_frame_bytes {
        return Err(FrameError::TooLarge {
            len: body.len(),
            max: max_frame_bytes,
        });
    }
    out.extend_from_slice(&(body.len() as u32).to_be_bytes());
    out.extend_from_slice(&body);
    Ok(())
}

/// Encode and write one frame.
pub async fn write_frame<T, W>(writer: &mut W, msg: &T, max_frame_bytes: usize) -> Result<(), FrameError>
where
    T: Serialize,
    W: AsyncWrite + Unpin,
{
    let mut out = Vec::new();
    encode_frame(msg, &mut out, max_frame_bytes)?;
    writer.write_all(&out).await?;
    writer.flush().await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn round_trip_and_limits() {
        let (mut a, mut b) = tokio::io::duplex(1 << 16);
        write_frame(&mut a, &("hello".to_string(), 7u64), 1024).await.unwrap();
        let mut buf = Vec::new();
        let got: (String, u64) = read_frame(&mut b, &mut buf, 1024).await.unwrap();
        assert_eq!(got, ("hello".to_string(), 7));

        // A length prefix beyond the limit is refused before allocating.
        a.write_all(&u32::MAX.to_be_bytes()).await.unwrap();
        let err = read_frame::<u64, _>(&mut b, &mut buf, 1024).await.unwrap_err();
        assert!(matches!(err, FrameError::TooLarge { .. }), "got {err:?}");
    }

    #[tokio::test]
    async fn garbage_payload_is_malformed() {
        let (mut a, mut b) = tokio::io::duplex(1 << 16);
        a.write_all(&3u32.to_be_bytes()).await.unwrap();
        a.write_all(&[0xff, 0xff, 0xff]).await.unwrap();
        let mut buf = Vec::new();
        let err = read_frame::<(String, u64), _>(&mut b, &mut buf, 1024)
            .await
            .unwrap_err();
        assert!(matches!(err, FrameError::Malformed(_)), "got {err:?}");
    }
}
