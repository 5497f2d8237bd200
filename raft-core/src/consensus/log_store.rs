//! The Raft log and Raft metadata on RocksDB.
//!
//! Column families: `log` (big-endian index → postcard entry), `meta` (vote,
//! committed, last purged). The state machine's column family is `sm`, owned
//! by [`super::sm_store`]; all three live in one DB so one WAL orders them.
//!
//! Durability: an append is written as one `WriteBatch` (readable at once,
//! as openraft requires when `append` returns) and its `IOFlushed` callback
//! is handed to a dedicated sync thread. That thread drains every callback
//! that is waiting, issues a single `flush_wal(sync = true)` for all of them
//! (group commit), and only then fires the callbacks. A callback never fires
//! before the WAL that holds its entries is on disk. ([`WalSync::Inline`],
//! for the simulation tier, instead writes each batch with `sync` and fires
//! its callback when that write returns.)
//!
//! [`WalSync::SimulatedDisk`] (simulation only, see [`SimDiskQueue`])
//! models a disk that loses unflushed writes at a power cut: every write
//! waits in an in-memory queue for the disk's flush delay (tokio time) and
//! only then goes to RocksDB, synced, in order. Appended entries are read
//! from memory until then.

use std::fmt::Debug;
use std::io;
use std::ops::Bound;
use std::ops::RangeBounds;
use std::sync::mpsc;
use std::sync::Arc;
use std::time::Instant;

use openraft::storage::IOFlushed;
use openraft::storage::LogState;
use openraft::storage::RaftLogStorage;
use openraft::OptionalSend;
use openraft::RaftLogReader;
use rocksdb::WriteBatch;
use rocksdb::WriteOptions;
use rocksdb::DB;
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::Entry;
use super::LogId;
use super::TypeConfig;
use super::Vote;
use crate::config::WalSync;
use crate::metrics::StorageMetrics;
use crate::storage::blocking;
use crate::storage::CF_LOG;
use crate::storage::CF_META;

mod rows;
mod sim_disk;
mod tail;

pub(crate) use rows::decode;
pub(crate) use rows::encode;
pub(crate) use rows::index_key;
pub(crate) use rows::read_range;
use rows::read_range_limited;
use rows::within_budget;
use sim_disk::SimDiskQueue;
use sim_disk::Written;
use sim_disk::SYNC_QUEUE_BOUND;
use tail::TailCache;

pub(crate) const KEY_VOTE: &[u8] = b"vote";
pub(crate) const KEY_COMMITTED: &[u8] = b"committed";
pub(crate) const KEY_LAST_PURGED: &[u8] = b"last_purged";

/// RocksDB-backed [`RaftLogStorage`].
#[derive(Clone)]
pub(crate) struct LogStore {
    db: Arc<DB>,
    /// The group-commit thread's queue, each append's callback with its
    /// `raft.append` span (closed once the fsync is done; `Span::none()`
    /// when the span is disabled); `None` in [`WalSync::Inline`] and
    /// [`WalSync::SimulatedDisk`] modes.
    sync_tx: Option<mpsc::SyncSender<(IOFlushed<TypeConfig>, tracing::Span)>>,
    /// [`WalSync::SimulatedDisk`] only.
    sim_disk: Option<Arc<SimDiskQueue>>,
    tail: Arc<std::sync::Mutex<TailCache>>,
    /// Request ids of this node's own proposals, for the apply span.
    pub(crate) in_flight: Arc<crate::trace::InFlight>,
    /// The most bytes of entries one replication batch reads
    /// (`log.max_append_bytes`; see [`RaftLogReader::limited_get_log_entries`]).
    pub(crate) max_append_bytes: usize,
}

impl LogStore {
    pub(crate) fn new(db: Arc<DB>, metrics: StorageMetrics, wal_sync: WalSync) -> io::Result<Self> {
        let mut sim_disk = None;
        let sync_tx = match wal_sync {
            WalSync::Inline => None,
            WalSync::SimulatedDisk(disk) => {
                sim_disk = Some(SimDiskQueue::start(&db, disk));
                None
            }
            WalSync::GroupCommit => {
                let (sync_tx, sync_rx) = mpsc::sync_channel(SYNC_QUEUE_BOUND);
                // The sync thread holds the DB weakly: when the store (and the state
                // machine) are dropped the DB closes at once, so a node can be
                // reopened in the same process right after shutdown.
                let sync_db = Arc::downgrade(&db);
                std::thread::Builder::new()
                    .name("cairn-wal-sync".into())
                    .spawn(move || sync_loop(sync_db, sync_rx, metrics))?;
                Some(sync_tx)
            }
        };
        Ok(Self {
            db,
            sync_tx,
            sim_disk,
            tail: Arc::default(),
            in_flight: Arc::default(),
            max_append_bytes: crate::config::LogLimits::default().max_append_bytes,
        })
    }

    /// fsync the WAL now (at shutdown; appends are synced by the sync thread).
    pub(crate) async fn sync_wal(&self) -> io::Result<()> {
        if let Some(q) = &self.sim_disk {
            // A clean shutdown waits until everything queued is written.
            return q.queue_synced(WriteBatch::default(), None).await;
        }
        let db = self.db.clone();
        blocking(move || db.flush_wal(true).map_err(io::Error::other)).await
    }

    fn tail(&self) -> std::sync::MutexGuard<'_, TailCache> {
        crate::sync::lock(&self.tail)
    }

    fn cf(&self, name: &str) -> io::Result<&rocksdb::ColumnFamily> {
        self.db
            .cf_handle(name)
            .ok_or_else(|| io::Error::other(format!("column family {name} missing")))
    }

    async fn get_meta<T: DeserializeOwned + Send + 'static>(&self, key: &'static [u8]) -> io::Result<Option<T>> {
        let db = self.db.clone();
        blocking(move || {
            let cf = db
                .cf_handle(CF_META)
                .ok_or_else(|| io::Error::other("column family meta missing"))?;
            match db.get_cf(cf, key).map_err(io::Error::other)? {
                None => Ok(None),
                Some(bytes) => decode(&bytes).map(Some),
            }
        })
        .await
    }

    async fn put_meta<T: Serialize>(&self, key: &'static [u8], value: &T, sync: bool) -> io::Result<()> {
        let bytes = encode(value)?;
        if let Some(q) = &self.sim_disk {
            let mut batch = WriteBatch::default();
            batch.put_cf(self.cf(CF_META)?, key, bytes);
            return if sync {
                q.queue_synced(batch, None).await
            } else {
                q.queue(batch, Vec::new(), None, Written::Unsynced).await
            };
        }
        let db = self.db.clone();
        blocking(move || {
            let cf = db
                .cf_handle(CF_META)
                .ok_or_else(|| io::Error::other("column family meta missing"))?;
            let mut opts = WriteOptions::default();
            opts.set_sync(sync);
            db.put_cf_opt(cf, key, bytes, &opts).map_err(io::Error::other)
        })
        .await
    }
}

/// The group-commit loop: one fsync for every callback that queued up while
/// the previous fsync ran.
fn sync_loop(
    db: std::sync::Weak<DB>,
    rx: mpsc::Receiver<(IOFlushed<TypeConfig>, tracing::Span)>,
    metrics: StorageMetrics,
) {
    // Bound one group so a burst cannot delay the first callback forever.
    const MAX_GROUP: usize = 1024;
    let mut group = Vec::with_capacity(64);
    while let Ok(first) = rx.recv() {
        group.push(first);
        while group.len() < MAX_GROUP {
            match rx.try_recv() {
                Ok(cb) => group.push(cb),
                Err(_) => break,
            }
        }
        let started = Instant::now();
        let res = match db.upgrade() {
            Some(db) => db.flush_wal(true).map_err(|e| e.to_string()),
            None => Err("database closed before fsync".to_string()),
        };
        let took = started.elapsed();
        metrics.observe_fsync(took, group.len());
        for (_, span) in &group {
            if !span.is_disabled() {
                span.record("fsync_us", took.as_micros() as u64);
                span.record("fsync_group", group.len());
            }
        }
        match res {
            Ok(()) => group.drain(..).for_each(|(cb, _)| cb.io_completed(Ok(()))),
            Err(msg) => {
                // An fsync failure leaves the page cache in an unknown state
                // (the "fsyncgate" lesson): report it to openraft, which
                // stops the node rather than acknowledging unsynced entries.
                tracing::error!(error = %msg, "wal fsync failed");
                group
                    .drain(..)
                    .for_each(|(cb, _)| cb.io_completed(Err(io::Error::other(msg.clone()))));
            }
        }
    }
    tracing::debug!("wal sync thread exits: log store dropped");
}

/// One line per vote the node stored (after its synced write returned) or
/// read back at start: rare (elections only), and what the chaos suite
/// checks for a vote that went back across a power cut (docs/CHAOS.md,
/// "Votes never go back").
fn log_vote(vote: &Vote, what: &'static str) {
    tracing::info!(
        term = vote.leader_id().term,
        leader = vote.leader_id().node_id,
        committed = vote.is_committed(),
        "{what}"
    );
}
impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, io::Error> {
        let start = match range.start_bound() {
            Bound::Included(x) => *x,
            Bound::Excluded(x) => x.saturating_add(1),
            Bound::Unbounded => 0,
        };
        let end = match range.end_bound() {
            Bound::Included(x) => Some(x.saturating_add(1)),
            Bound::Excluded(x) => Some(*x),
            Bound::Unbounded => None,
        };
        if let Some(hit) = self.tail().read(start, end) {
            return Ok(hit);
        }
        // Simulated disk: what is not yet written is read from memory.
        // Taken before the RocksDB read, so an entry written (and dropped
        // from `pending`) meanwhile is found in one or the other.
        let pending: Vec<Entry> = match &self.sim_disk {
            Some(q) => q
                .pending()
                .range((Bound::Included(start), end.map_or(Bound::Unbounded, Bound::Excluded)))
                .map(|(_, e)| e.clone())
                .collect(),
            None => Vec::new(),
        };
        let db = self.db.clone();
        let stored = blocking(move || read_range(&db, start, end)).await?;
        if pending.is_empty() {
            return Ok(stored);
        }
        let mut merged: std::collections::BTreeMap<u64, Entry> =
            stored.into_iter().map(|e| (e.log_id.index, e)).collect();
        merged.extend(pending.into_iter().map(|e| (e.log_id.index, e)));
        Ok(merged.into_values().collect())
    }

    async fn read_vote(&mut self) -> Result<Option<Vote>, io::Error> {
        let vote: Option<Vote> = self.get_meta(KEY_VOTE).await?;
        if let Some(v) = &vote {
            log_vote(v, "vote read from disk");
        }
        Ok(vote)
    }

    /// What replication reads for one AppendEntries: the entries of
    /// `[start, end)` cut to at most `max_append_bytes` of encoded entries
    /// (at least one). openraft caps a batch by count only
    /// (`max_payload_entries`); without this cut, 300 large entries made a
    /// frame over the transport's limit, which was refused on every retry,
    /// and a follower that fell behind them never caught up (issue 17).
    /// The encoded size of an entry here is exactly what it adds to the
    /// frame (the transport encodes the same postcard), so a batch plus
    /// [`crate::config::APPEND_HEADER_MAX_BYTES`] fits `max_frame_bytes`
    /// (checked when the config is validated).
    async fn limited_get_log_entries(&mut self, start: u64, end: u64) -> Result<Vec<Entry>, io::Error> {
        let max_bytes = self.max_append_bytes;
        if let Some(hit) = self.tail().read_limited(start, end, max_bytes) {
            return Ok(hit);
        }
        // Simulated disk: what is not yet written is read from memory, as
        // in `try_get_log_entries` (taken before the RocksDB read).
        let pending: Vec<(Entry, usize)> = match &self.sim_disk {
            Some(q) => {
                let pending: Vec<Entry> = q.pending().range(start..end).map(|(_, e)| e.clone()).collect();
                pending
                    .into_iter()
                    .map(|e| encode(&e).map(|bytes| (e, bytes.len())))
                    .collect::<io::Result<_>>()?
            }
            None => Vec::new(),
        };
        let db = self.db.clone();
        let stored = blocking(move || read_range_limited(&db, start, end, max_bytes)).await?;
        if pending.is_empty() {
            return Ok(within_budget(start, stored, max_bytes));
        }
        let mut merged: std::collections::BTreeMap<u64, (Entry, usize)> = stored
            .into_iter()
            .map(|(e, size)| (e.log_id.index, (e, size)))
            .collect();
        merged.extend(pending.into_iter().map(|(e, size)| (e.log_id.index, (e, size))));
        Ok(within_budget(start, merged.into_values(), max_bytes))
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = Self;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, io::Error> {
        let last_purged_log_id: Option<LogId> = self.get_meta(KEY_LAST_PURGED).await?;
        let db = self.db.clone();
        let last = blocking(move || {
            let cf = db
                .cf_handle(CF_LOG)
                .ok_or_else(|| io::Error::other("column family log missing"))?;
            match db.iterator_cf(cf, rocksdb::IteratorMode::End).next() {
                None => Ok(None),
                Some(item) => {
                    let (_, value) = item.map_err(io::Error::other)?;
                    decode::<Entry>(&value).map(|e| Some(e.log_id))
                }
            }
        })
        .await?;
        Ok(LogState {
            last_log_id: last.or(last_purged_log_id),
            last_purged_log_id,
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote) -> Result<(), io::Error> {
        // A vote must be on disk before the node acts on it (Raft §5.2).
        self.put_meta(KEY_VOTE, vote, true).await?;
        log_vote(vote, "vote stored");
        Ok(())
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), io::Error> {
        // Not synced: losing it only means re-applying from the snapshot on
        // restart up to an older committed index, which is safe.
        self.put_meta(KEY_COMMITTED, &committed, false).await
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, io::Error> {
        Ok(self.get_meta::<Option<LogId>>(KEY_COMMITTED).await?.flatten())
    }

    async fn append<I>(&mut self, entries: I, callback: IOFlushed<TypeConfig>) -> Result<(), io::Error>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        // Debug level: disabled (and free) at the default `info` filter.
        // Not entered: it is open from here until the sync thread's fsync
        // of this batch, so its duration is the append's until durable.
        let span = tracing::debug_span!(
            "raft.append",
            entries = tracing::field::Empty,
            first = tracing::field::Empty,
            last = tracing::field::Empty,
            write_us = tracing::field::Empty,
            fsync_us = tracing::field::Empty,
            fsync_group = tracing::field::Empty,
        );
        let started = (!span.is_disabled()).then(Instant::now);
        let mut batch = WriteBatch::default();
        let mut appended = Vec::new();
        {
            let cf = self.cf(CF_LOG)?;
            for entry in entries {
                let bytes = encode(&entry)?;
                batch.put_cf(cf, index_key(entry.log_id.index), &bytes);
                // Only this node's own proposals carry an id, and only while
                // `raft.client_write` is enabled.
                if let openraft::EntryPayload::Normal(p) = &entry.payload {
                    if let Some(id) = &p.request_id {
                        self.in_flight.insert(entry.log_id.index, id.clone());
                    }
                }
                appended.push((entry, bytes.len()));
            }
        }
        // openraft appends a contiguous run of indexes; the tail cache, the
        // sync queue and `truncate_after` rely on it.
        debug_assert!(
            appended
                .windows(2)
                .all(|w| w[0].0.log_id.index + 1 == w[1].0.log_id.index),
            "appended a non-contiguous batch: {:?}",
            appended.iter().map(|(e, _)| e.log_id.index).collect::<Vec<_>>()
        );
        if !span.is_disabled() {
            span.record("entries", appended.len());
            if let (Some((first, _)), Some((last, _))) = (appended.first(), appended.last()) {
                span.record("first", first.log_id.index);
                span.record("last", last.log_id.index);
            }
        }
        if let Some(q) = &self.sim_disk {
            // Simulated disk: readable now (tail cache and `pending`),
            // written and reported durable when the disk gets to it.
            let ids: Vec<LogId> = appended.iter().map(|(e, _)| e.log_id).collect();
            {
                let mut pending = q.pending();
                for (entry, _) in &appended {
                    pending.insert(entry.log_id.index, entry.clone());
                }
            }
            if let Some(last) = ids.last() {
                q.disk.set_appended_index(last.index);
            }
            {
                let mut tail = self.tail();
                for (entry, size) in appended {
                    tail.insert(entry, size);
                }
            }
            drop(span);
            return q.queue(batch, ids, None, Written::Flushed(callback)).await;
        }
        if self.sync_tx.is_none() {
            // Inline mode (the simulation tier): synced in this call, on
            // the blocking pool, where simulated time stands still.
            let db = self.db.clone();
            blocking(move || {
                let mut opts = WriteOptions::default();
                opts.set_sync(true);
                db.write_opt(batch, &opts).map_err(io::Error::other)
            })
            .await?;
        } else {
            // One batch, not synced here: the sync thread fsyncs it
            // (grouped). Written inline — a memtable insert and a buffered
            // WAL write, a few microseconds — unless RocksDB would stall it
            // (memtable full, too many L0 files): then it goes to the
            // blocking pool like every other slow call, so a stall never
            // parks a runtime worker. A hop to the blocking pool per append
            // was two context switches per batch on every node.
            let mut fast = WriteOptions::default();
            fast.set_no_slowdown(true);
            match self.db.write_opt(batch, &fast) {
                Ok(()) => {}
                Err(e) if e.kind() == rocksdb::ErrorKind::Incomplete => {
                    // Nothing was written; rebuild the batch (it was consumed).
                    let mut batch = WriteBatch::default();
                    let cf = self.cf(CF_LOG)?;
                    for (entry, _) in &appended {
                        batch.put_cf(cf, index_key(entry.log_id.index), encode(entry)?);
                    }
                    let db = self.db.clone();
                    blocking(move || db.write(batch).map_err(io::Error::other)).await?;
                }
                Err(e) => return Err(io::Error::other(e)),
            }
        }
        if let Some(started) = started {
            span.record("write_us", started.elapsed().as_micros() as u64);
        }
        {
            let mut tail = self.tail();
            for (entry, size) in appended {
                tail.insert(entry, size);
            }
        }
        match &self.sync_tx {
            Some(tx) => tx
                .send((callback, span))
                .map_err(|_| io::Error::other("wal sync thread has stopped"))?,
            None => callback.io_completed(Ok(())),
        }
        Ok(())
    }

    async fn truncate_after(&mut self, last_log_id: Option<LogId>) -> Result<(), io::Error> {
        let from = last_log_id.map(|id| id.index + 1).unwrap_or(0);
        // Info: a truncation happens only when a deposed leader's
        // uncommitted suffix is overwritten, which is rare, and the chaos
        // suite aims power cuts at it (docs/CHAOS.md, "Aimed power cuts").
        tracing::info!(from, "truncate log");
        self.tail().truncate_from(from);
        self.in_flight.truncate_from(from);
        if let Some(q) = &self.sim_disk {
            drop(q.pending().split_off(&from));
            let appended = q.disk.appended_index();
            q.disk.set_appended_index(appended.min(from.saturating_sub(1)));
            let mut batch = WriteBatch::default();
            let cf = self.cf(CF_LOG)?;
            batch.delete_range_cf(cf, index_key(from), index_key(u64::MAX));
            batch.delete_cf(cf, index_key(u64::MAX));
            // Synced, as below: returns once the deletion is written.
            return q.queue_synced(batch, Some(from)).await;
        }
        let db = self.db.clone();
        blocking(move || {
            let cf = db
                .cf_handle(CF_LOG)
                .ok_or_else(|| io::Error::other("column family log missing"))?;
            // Synced: a truncated suffix must not reappear after a crash next
            // to newer entries appended at the same indexes.
            let mut opts = WriteOptions::default();
            opts.set_sync(true);
            let mut batch = WriteBatch::default();
            batch.delete_range_cf(cf, index_key(from), index_key(u64::MAX));
            // delete_range's end is exclusive: remove u64::MAX explicitly.
            batch.delete_cf(cf, index_key(u64::MAX));
            db.write_opt(batch, &opts).map_err(io::Error::other)
        })
        .await
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), io::Error> {
        tracing::debug!(upto = log_id.index, "purge log");
        self.tail().purge_upto(log_id.index);
        let meta = encode(&log_id)?;
        if let Some(q) = &self.sim_disk {
            {
                let mut pending = q.pending();
                let keep = pending.split_off(&(log_id.index + 1));
                *pending = keep;
            }
            let mut batch = WriteBatch::default();
            batch.put_cf(self.cf(CF_META)?, KEY_LAST_PURGED, meta);
            batch.delete_range_cf(self.cf(CF_LOG)?, index_key(0), index_key(log_id.index + 1));
            return q.queue(batch, Vec::new(), None, Written::Unsynced).await;
        }
        let db = self.db.clone();
        blocking(move || {
            let cf_log = db
                .cf_handle(CF_LOG)
                .ok_or_else(|| io::Error::other("column family log missing"))?;
            let cf_meta = db
                .cf_handle(CF_META)
                .ok_or_else(|| io::Error::other("column family meta missing"))?;
            // Record last-purged and delete in one batch: never a state where
            // entries are gone but the store does not know it.
            let mut batch = WriteBatch::default();
            batch.put_cf(cf_meta, KEY_LAST_PURGED, meta);
            batch.delete_range_cf(cf_log, index_key(0), index_key(log_id.index + 1));
            db.write(batch).map_err(io::Error::other)
        })
        .await
    }
}
