//! Length-prefixed postcard frames: the wire format of the node-to-node
//! transport.
//!
//! A frame is a 4-byte big-endian length followed by that many bytes of
//! postcard. The length is checked against a maximum *before* anything is
//! allocated, and the body is read incrementally: the buffer grows only as
//! bytes arrive (at most twice what was received), so a header announcing
//! 16 MiB followed by silence costs nothing (issue 18: 40 such connections
//! used to cost 650 MB, the announced length allocated and zeroed up
//! front). A frame that does not decode closes its connection.

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
    /// Nothing, or not a whole frame, arrived in time.
    #[error("{phase}: no progress within {after_ms} ms")]
    TimedOut {
        /// `idle` (no frame started) or `frame` (a frame started but did
        /// not complete).
        phase: &'static str,
        /// The deadline.
        after_ms: u64,
    },
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
    // Not `resize(len)`: the announced length is the peer's word. `take`
    // ends at `len`, and `read_to_end` grows `buf` as data comes in.
    let got = (&mut *reader).take(len as u64).read_to_end(buf).await?;
    if got < len {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            format!("connection closed {got} bytes into a frame of {len}"),
        )
        .into());
    }
    // `take` bounds the read: never more than announced, which is within
    // the cap.
    debug_assert!(
        buf.len() == len && len <= max_frame_bytes,
        "frame of {} bytes, announced {len}",
        buf.len()
    );
    Ok(postcard::from_bytes(buf)?)
}

/// [`read_frame`] with the peer port's deadlines: the frame's first byte
/// must arrive within `idle` and the whole frame within `frame` of it.
/// A reader that buffers (`AsyncBufRead`) is needed to wait for the first
/// byte without consuming it.
pub async fn read_frame_timed<T, R>(
    reader: &mut R,
    buf: &mut Vec<u8>,
    max_frame_bytes: usize,
    idle: std::time::Duration,
    frame: std::time::Duration,
) -> Result<T, FrameError>
where
    T: DeserializeOwned,
    R: tokio::io::AsyncBufRead + Unpin,
{
    use tokio::io::AsyncBufReadExt;
    let ms = |d: std::time::Duration| d.as_millis() as u64;
    match tokio::time::timeout(idle, reader.fill_buf()).await {
        Err(_) => {
            return Err(FrameError::TimedOut {
                phase: "idle",
                after_ms: ms(idle),
            })
        }
        Ok(Ok([])) => return Err(FrameError::Closed),
        Ok(Ok(_)) => {}
        Ok(Err(e)) => return Err(e.into()),
    }
    match tokio::time::timeout(frame, read_frame(reader, buf, max_frame_bytes)).await {
        Ok(r) => r,
        Err(_) => Err(FrameError::TimedOut {
            phase: "frame",
            after_ms: ms(frame),
        }),
    }
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
    // The length prefix is a u32: a cap beyond it would wrap the prefix
    // (config validation keeps `max_frame_bytes` far below).
    debug_assert!(u32::try_from(body.len()).is_ok(), "frame of {} bytes", body.len());
    let start = out.len();
    out.extend_from_slice(&(body.len() as u32).to_be_bytes());
    out.extend_from_slice(&body);
    debug_assert_eq!(out.len() - start, 4 + body.len());
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
    async fn an_announced_length_is_not_allocated_before_the_bytes_arrive() {
        let (mut a, b) = tokio::io::duplex(1 << 16);
        let mut b = tokio::io::BufReader::new(b);
        a.write_all(&(16u32 << 20).to_be_bytes()).await.unwrap();
        a.write_all(&[7u8; 100]).await.unwrap();
        drop(a);
        let mut buf = Vec::new();
        let err = read_frame::<u64, _>(&mut b, &mut buf, 32 << 20).await.unwrap_err();
        assert!(matches!(err, FrameError::Io(_)), "got {err:?}");
        // Before: `resize` to the announced 16 MiB. Now: what arrived, at
        // most doubled by the vector's growth.
        assert!(buf.capacity() < 64 << 10, "capacity {} for 100 bytes", buf.capacity());
    }

    #[tokio::test(start_paused = true)]
    async fn a_silent_or_stalled_peer_times_out() {
        let (mut a, b) = tokio::io::duplex(1 << 16);
        let mut b = tokio::io::BufReader::new(b);
        let mut buf = Vec::new();
        let idle = std::time::Duration::from_secs(10);
        let frame = std::time::Duration::from_secs(3);
        let err = read_frame_timed::<u64, _>(&mut b, &mut buf, 1024, idle, frame)
            .await
            .unwrap_err();
        assert!(matches!(err, FrameError::TimedOut { phase: "idle", .. }), "got {err:?}");
        // A header, then nothing: the frame deadline.
        a.write_all(&8u32.to_be_bytes()).await.unwrap();
        let err = read_frame_timed::<u64, _>(&mut b, &mut buf, 1024, idle, frame)
            .await
            .unwrap_err();
        assert!(
            matches!(err, FrameError::TimedOut { phase: "frame", .. }),
            "got {err:?}"
        );
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
