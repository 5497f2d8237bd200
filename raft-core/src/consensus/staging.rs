//! Incoming snapshot chunks, staged on disk as they arrive, under one byte
//! budget for the whole node (`snapshots.max_incoming_bytes`).
//!
//! Each peer connection stages at most one snapshot at a time (a new one
//! at offset 0 replaces it), but a node serves up to `peer.max_connections`
//! connections: without a node-wide budget a buggy or compromised peer
//! could stream chunks without end, on every connection at once, until the
//! SD card is full. A chunk that would take the node's staged bytes over
//! the budget is refused before it is written, and the transfer it belongs
//! to is dropped (its file removed); the node keeps serving everything
//! else. A [`Staged`] gives its bytes back and removes its file when it is
//! dropped, however the transfer ends.

use std::path::Path;
use std::path::PathBuf;
use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use tokio::io::AsyncReadExt;
use tokio::io::AsyncWriteExt;

/// Why a chunk was not staged.
#[derive(Debug, thiserror::Error)]
pub(crate) enum StagingError {
    /// The chunk would take the node's staged snapshot bytes over the budget.
    #[error(
        "snapshot transfer refused: staging {wanted} more bytes would hold {total} bytes of incoming snapshots, over snapshots.max_incoming_bytes = {max}"
    )]
    OverBudget {
        /// Bytes of the refused chunk.
        wanted: u64,
        /// What the node would then hold.
        total: u64,
        /// The budget.
        max: u64,
    },
    /// The staging file could not be created, written or read back.
    #[error("snapshot staging file {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
}

/// The node-wide budget of staged snapshot bytes.
#[derive(Debug)]
pub(crate) struct StagingBudget {
    used: AtomicU64,
    max: u64,
}

impl StagingBudget {
    /// A budget of `max` bytes.
    pub(crate) fn new(max: u64) -> Arc<Self> {
        Arc::new(Self {
            used: AtomicU64::new(0),
            max,
        })
    }

    /// Bytes staged now, on every connection.
    #[cfg(test)]
    pub(crate) fn used(&self) -> u64 {
        self.used.load(Ordering::Acquire)
    }

    fn reserve(&self, bytes: u64) -> Result<(), StagingError> {
        self.used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                used.checked_add(bytes).filter(|total| *total <= self.max)
            })
            .map(|_| ())
            .map_err(|used| StagingError::OverBudget {
                wanted: bytes,
                total: used.saturating_add(bytes),
                max: self.max,
            })
    }

    fn release(&self, bytes: u64) {
        // Never below zero: only what was reserved is released.
        let _ = self.used.fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
            Some(used.saturating_sub(bytes))
        });
    }
}

/// One snapshot being received: its file and the bytes it holds.
pub(crate) struct Staged {
    path: PathBuf,
    file: tokio::fs::File,
    received: u64,
    budget: Arc<StagingBudget>,
}

impl Staged {
    /// A new, empty staging file in `dir` (created if absent).
    pub(crate) async fn begin(dir: &Path, budget: Arc<StagingBudget>) -> Result<Self, StagingError> {
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |source| StagingError::Io { path, source }
        };
        tokio::fs::create_dir_all(dir).await.map_err(io(dir))?;
        let path = dir.join(format!("{}.part", rand::random::<u64>()));
        let file = tokio::fs::File::create(&path).await.map_err(io(&path))?;
        Ok(Self {
            path,
            file,
            received: 0,
            budget,
        })
    }

    /// Bytes received so far (the next chunk's expected offset).
    pub(crate) fn received(&self) -> u64 {
        self.received
    }

    /// Append a chunk, if the node's budget allows it.
    pub(crate) async fn append(&mut self, data: &[u8]) -> Result<(), StagingError> {
        let len = data.len() as u64;
        self.budget.reserve(len)?;
        // Counted as received once reserved: a failed write is released
        // with the rest when the transfer is dropped.
        self.received += len;
        self.file.write_all(data).await.map_err(|source| StagingError::Io {
            path: self.path.clone(),
            source,
        })
    }

    /// The whole snapshot; the file is removed and its bytes released.
    pub(crate) async fn finish(mut self) -> Result<Vec<u8>, StagingError> {
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |source| StagingError::Io { path, source }
        };
        self.file.flush().await.map_err(io(&self.path))?;
        let mut file = tokio::fs::File::open(&self.path).await.map_err(io(&self.path))?;
        let mut bytes = Vec::with_capacity(self.received as usize);
        file.read_to_end(&mut bytes).await.map_err(io(&self.path))?;
        Ok(bytes)
    }
}

impl Drop for Staged {
    fn drop(&mut self) {
        self.budget.release(self.received);
        // Best effort, and cheap: the file is at most the budget, and an
        // unlink does not wait for its data.
        if let Err(e) = std::fs::remove_file(&self.path) {
            if e.kind() != std::io::ErrorKind::NotFound {
                tracing::warn!(path = %self.path.display(), error = %e, "could not remove a snapshot staging file");
            }
        }
    }
}

/// Where snapshot chunks from the leader are staged (`*.part`) until the
/// last one arrives (see `server.rs`); cleared at start-up by [`clean_snapshot_staging`].
pub(crate) const SNAPSHOT_STAGING_DIR: &str = "snapshot-incoming";

/// Remove the staging files a crash mid-transfer left behind: a transfer
/// never resumes across a restart (the leader starts again from offset 0),
/// so any `*.part` at start is garbage, and without this each crash during
/// a transfer would leave up to a snapshot's size on the SD card for good.
/// Best effort: a file that cannot be removed is logged, not fatal.
pub(crate) fn clean_snapshot_staging(data_dir: &std::path::Path) {
    let dir = data_dir.join(SNAPSHOT_STAGING_DIR);
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return; // absent: nothing staged
    };
    let (mut removed, mut bytes) = (0u64, 0u64);
    for entry in entries.flatten() {
        let path = entry.path();
        if path.extension().is_some_and(|e| e == "part") {
            let len = entry.metadata().map(|m| m.len()).unwrap_or(0);
            match std::fs::remove_file(&path) {
                Ok(()) => {
                    removed += 1;
                    bytes += len;
                }
                Err(e) => {
                    tracing::warn!(path = %path.display(), error = %e, "could not remove a stale snapshot staging file")
                }
            }
        }
    }
    if removed > 0 {
        tracing::info!(files = removed, bytes, dir = %dir.display(), "removed snapshot staging files left by an interrupted transfer");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(dir: &Path) -> usize {
        std::fs::read_dir(dir)
            .map(|d| {
                d.flatten()
                    .filter(|e| e.path().extension().is_some_and(|x| x == "part"))
                    .count()
            })
            .unwrap_or(0)
    }

    /// Issue 18: chunks were written without any bound, one transfer per
    /// connection, so a peer streaming without end filled the disk. The
    /// budget is node-wide, a refused chunk is never written, and a
    /// transfer's bytes come back when it ends.
    #[tokio::test]
    async fn staging_is_bounded_node_wide_and_released_when_a_transfer_ends() {
        let dir = tempfile::tempdir().unwrap();
        let budget = StagingBudget::new(10_000);
        let mut a = Staged::begin(dir.path(), budget.clone()).await.unwrap();
        let mut b = Staged::begin(dir.path(), budget.clone()).await.unwrap();
        a.append(&[1u8; 6_000]).await.unwrap();
        b.append(&[2u8; 4_000]).await.unwrap();
        assert_eq!(budget.used(), 10_000);
        // Full: neither connection may stage one more byte.
        let refused = a.append(&[3u8; 1]).await.unwrap_err();
        assert!(
            matches!(
                refused,
                StagingError::OverBudget {
                    wanted: 1,
                    total: 10_001,
                    max: 10_000
                }
            ),
            "{refused}"
        );
        assert!(
            refused.to_string().contains("snapshots.max_incoming_bytes"),
            "{refused}"
        );
        assert!(b.append(&[3u8; 1]).await.is_err());
        assert_eq!(a.received(), 6_000, "a refused chunk is not counted");
        a.file.flush().await.unwrap();
        assert_eq!(
            std::fs::metadata(&a.path).unwrap().len(),
            6_000,
            "a refused chunk is not written"
        );
        // A transfer dropped midway gives its bytes back and leaves no file.
        drop(a);
        assert_eq!(budget.used(), 4_000);
        assert_eq!(parts(dir.path()), 1);
        // A finished one returns exactly what was staged, then likewise.
        b.append(&[4u8; 6_000]).await.unwrap();
        let bytes = b.finish().await.unwrap();
        assert_eq!(bytes.len(), 10_000);
        assert!(bytes[..4_000].iter().all(|&x| x == 2) && bytes[4_000..].iter().all(|&x| x == 4));
        assert_eq!(budget.used(), 0);
        assert_eq!(parts(dir.path()), 0);
    }
}
