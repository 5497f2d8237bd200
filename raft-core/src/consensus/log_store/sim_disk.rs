//! The power-loss model of [`WalSync::SimulatedDisk`] (simulation only):
//! every write of the log store waits in a queue for the disk's flush
//! delay before it reaches RocksDB, so a crash loses what a power cut
//! would.

use std::io;
use std::sync::Arc;

use openraft::storage::IOFlushed;
use rocksdb::WriteBatch;
use rocksdb::WriteOptions;
use rocksdb::DB;

use crate::config::SimulatedDisk;
#[cfg(doc)]
use crate::config::WalSync;
use crate::consensus::Entry;
use crate::consensus::LogId;
use crate::consensus::TypeConfig;
use crate::storage::blocking;

/// Callbacks waiting for the next fsync. Bounded so a stalled disk applies
/// back-pressure to appends instead of growing memory: openraft keeps at most
/// a few appends in flight, so 4096 is never reached in normal operation.
pub(super) const SYNC_QUEUE_BOUND: usize = 4096;

/// What a write queued on the simulated disk reports when it is written.
pub(super) enum Written {
    /// An append: openraft's callback.
    Flushed(IOFlushed<TypeConfig>),
    /// A synced write whose caller waits (vote, truncation, barrier).
    Synced(tokio::sync::oneshot::Sender<io::Result<()>>),
    /// A write nobody waits for (committed index, purge): it becomes
    /// durable in its turn, or is lost with the rest at a crash.
    Unsynced,
}

/// One write queued on the simulated disk.
struct QueuedWrite {
    /// When the disk has it on the platter (never before the previous one).
    due: tokio::time::Instant,
    batch: WriteBatch,
    /// The log ids of the entries it appends (to drop them from
    /// [`SimDiskQueue::pending`] once written) or, for a truncation, the
    /// first index it removes.
    appends: Vec<LogId>,
    truncates_from: Option<u64>,
    written: Written,
}

/// The power-loss model of [`WalSync::SimulatedDisk`], simulation only.
///
/// Every write of the log store (appends, vote, committed index,
/// truncation, purge) is queued here in the order it was made, with a due
/// time `flush delay` after it (never before the write ahead of it: one
/// WAL, one order). A task on the node's runtime writes each to RocksDB,
/// synced, when it is due, and only then reports it: an append's
/// `IOFlushed` callback fires, a synced write's caller returns. Until then
/// an appended entry is served to readers from [`Self::pending`] (never
/// evicted, unlike the bounded tail cache), so it is readable as soon as
/// `append` returns, as openraft requires. A crash in the simulation drops
/// the host's runtime, and with it this queue and the task: what was not
/// yet written never reaches the store, exactly what a power cut does to
/// writes not yet fsynced. Production code paths (`GroupCommit`) do not
/// use any of this.
///
/// One deviation from a real shared WAL: the state machine store persists
/// snapshots with its own synced write, which on real RocksDB would also
/// make every earlier log write durable; here it does not, so a snapshot
/// may be ahead of the durable log after a crash (openraft handles that at
/// startup by purging up to the snapshot).
pub(super) struct SimDiskQueue {
    pub(super) disk: SimulatedDisk,
    /// The queue's sender and the due time of the last write queued; one
    /// lock so due times and queue order agree.
    tx: tokio::sync::Mutex<(tokio::time::Instant, tokio::sync::mpsc::Sender<QueuedWrite>)>,
    /// Entries appended but not yet written to RocksDB, by index.
    pending: std::sync::Mutex<std::collections::BTreeMap<u64, Entry>>,
}

impl SimDiskQueue {
    pub(super) fn start(db: &Arc<DB>, disk: SimulatedDisk) -> Arc<Self> {
        let (tx, rx) = tokio::sync::mpsc::channel(SYNC_QUEUE_BOUND);
        // A new boot: nothing is pending, the store holds what survived.
        disk.set_appended_index(disk.durable_index());
        let queue = Arc::new(Self {
            disk,
            tx: tokio::sync::Mutex::new((tokio::time::Instant::now(), tx)),
            pending: std::sync::Mutex::default(),
        });
        // Weak references: when the store is dropped the DB closes at once
        // (and a crash drops this task with the runtime anyway).
        tokio::spawn(sim_disk_loop(Arc::downgrade(db), Arc::downgrade(&queue), rx));
        queue
    }

    pub(super) fn pending(&self) -> std::sync::MutexGuard<'_, std::collections::BTreeMap<u64, Entry>> {
        crate::sync::lock(&self.pending)
    }

    /// Queue `batch`; it is written `flush delay` from now, after every
    /// write queued before it.
    pub(super) async fn queue(
        &self,
        batch: WriteBatch,
        appends: Vec<LogId>,
        truncates_from: Option<u64>,
        written: Written,
    ) -> io::Result<()> {
        let mut tx = self.tx.lock().await;
        let due = (tokio::time::Instant::now() + self.disk.flush_delay()).max(tx.0);
        tx.0 = due;
        let write = QueuedWrite {
            due,
            batch,
            appends,
            truncates_from,
            written,
        };
        tx.1.send(write)
            .await
            .map_err(|_| io::Error::other("simulated disk task has stopped"))
    }

    /// Queue a synced write and wait until it is written.
    pub(super) async fn queue_synced(&self, batch: WriteBatch, truncates_from: Option<u64>) -> io::Result<()> {
        let (done_tx, done_rx) = tokio::sync::oneshot::channel();
        self.queue(batch, Vec::new(), truncates_from, Written::Synced(done_tx))
            .await?;
        done_rx
            .await
            .map_err(|_| io::Error::other("simulated disk task has stopped"))?
    }
}

/// The simulated disk: writes each queued write when it is due.
async fn sim_disk_loop(
    db: std::sync::Weak<DB>,
    queue: std::sync::Weak<SimDiskQueue>,
    mut rx: tokio::sync::mpsc::Receiver<QueuedWrite>,
) {
    while let Some(write) = rx.recv().await {
        tokio::time::sleep_until(write.due).await;
        let Some(db) = db.upgrade() else { break };
        let QueuedWrite {
            batch,
            appends,
            truncates_from,
            written,
            ..
        } = write;
        let res = blocking(move || {
            let mut opts = WriteOptions::default();
            opts.set_sync(true);
            db.write_opt(batch, &opts).map_err(io::Error::other)
        })
        .await;
        if let (Ok(()), Some(queue)) = (&res, queue.upgrade()) {
            let mut pending = queue.pending();
            for id in &appends {
                // Only this very entry: a truncation may have replaced it.
                if pending.get(&id.index).is_some_and(|e| e.log_id == *id) {
                    pending.remove(&id.index);
                }
            }
            drop(pending);
            if let Some(last) = appends.last() {
                queue.disk.set_durable_index(last.index);
            }
            if let Some(from) = truncates_from {
                let durable = queue.disk.durable_index();
                queue.disk.set_durable_index(durable.min(from.saturating_sub(1)));
            }
        }
        match written {
            Written::Flushed(cb) => cb.io_completed(res),
            Written::Synced(tx) => {
                let _ = tx.send(res);
            }
            Written::Unsynced => {
                if let Err(e) = res {
                    tracing::error!(error = %e, "simulated disk: write failed");
                }
            }
        }
    }
}
