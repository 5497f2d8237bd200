//! The state-machine adapter: turns committed log entries into calls of the
//! domain's pure [`StateMachine::apply`], deduplicates tagged client writes,
//! and keeps snapshots in RocksDB.
//!
//! The domain state lives in memory. It is persisted as a snapshot (built in
//! the background every N entries, and on install); on restart the latest
//! snapshot is restored and openraft re-applies the committed log after it.

use std::collections::BTreeMap;
use std::io;
use std::sync::atomic::AtomicBool;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::RwLock;
use std::sync::RwLockReadGuard;

use cairn_state::Admission;
use cairn_state::ApplyCtx;
use cairn_state::Sessions;
use cairn_state::StateMachine;
use futures::Stream;
use futures::TryStreamExt;
use openraft::storage::EntryResponder;
use openraft::storage::RaftStateMachine;
use openraft::EntryPayload;
use openraft::OptionalSend;
use openraft::RaftSnapshotBuilder;
use rocksdb::WriteOptions;
use rocksdb::DB;
use serde::Deserialize;
use serde::Serialize;
use tokio::sync::broadcast;
use tokio::sync::oneshot;

use super::log_store::decode;
use super::log_store::encode;
use super::term_of;
use super::Applied;
use super::LogId;
use super::Snapshot;
use super::SnapshotData;
use super::SnapshotMeta;
use super::StoredMembership;
use super::TypeConfig;
use crate::storage::blocking;
use crate::storage::CF_SM;

pub(crate) const KEY_SNAPSHOT: &[u8] = b"snapshot";
/// Version of [`SnapshotEnvelope`]'s layout; bump on any change.
pub(crate) const ENVELOPE_VERSION: u32 = 1;
/// Bound on the change-event channel: a subscriber that falls this far behind
/// is told it lagged (and resynchronises) instead of holding memory.
const EVENT_CHANNEL_CAPACITY: usize = 4096;

/// One applied command, as the watch stream delivers it.
#[derive(Clone, Debug)]
pub struct ChangeEvent<S: StateMachine> {
    /// Log index of the command.
    pub index: u64,
    /// Term of the leader that appended it.
    pub term: u64,
    /// The leader's timestamp on the proposal (ms since the Unix epoch).
    pub timestamp_ms: u64,
    /// The command.
    pub command: S::Command,
    /// What applying it returned.
    pub response: S::Response,
}

/// A digest of a node's applied replicated state (see
/// [`crate::RaftNode::state_hash`]). Two replicas that applied the same log
/// prefix have equal digests; equal `applied_index` with unequal `sha256`
/// means they diverged.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct StateHash {
    /// Log index of the last applied entry (0: nothing applied).
    pub applied_index: u64,
    /// Its term.
    pub applied_term: u64,
    /// SHA-256 of the encoded state, lowercase hex.
    pub sha256: String,
    /// Length of the encoded state in bytes.
    pub bytes: usize,
}

/// The replicated state plus what Raft needs to resume from it.
pub(crate) struct Replica<S: StateMachine> {
    pub(crate) machine: S,
    pub(crate) sessions: Sessions<Applied>,
    pub(crate) last_applied: Option<LogId>,
    pub(crate) membership: StoredMembership,
}

impl<S: StateMachine> Default for Replica<S> {
    fn default() -> Self {
        Self {
            machine: S::default(),
            sessions: Sessions::default(),
            last_applied: None,
            membership: StoredMembership::default(),
        }
    }
}

#[derive(Serialize, Deserialize)]
struct SnapshotEnvelope {
    version: u32,
    last_applied: Option<LogId>,
    membership: StoredMembership,
    sessions: Sessions<Applied>,
    machine: Vec<u8>,
}

#[derive(Serialize, Deserialize)]
pub(crate) struct StoredSnapshot {
    pub(crate) meta: SnapshotMeta,
    pub(crate) data: Vec<u8>,
}

impl<S: StateMachine> Replica<S> {
    pub(crate) fn to_snapshot(&self) -> io::Result<(SnapshotMeta, SnapshotData)> {
        let envelope = SnapshotEnvelope {
            version: ENVELOPE_VERSION,
            last_applied: self.last_applied,
            membership: self.membership.clone(),
            sessions: self.sessions.clone(),
            machine: self.machine.snapshot(),
        };
        let meta = SnapshotMeta {
            last_log_id: self.last_applied,
            last_membership: self.membership.clone(),
        };
        Ok((meta, encode(&envelope)?.into()))
    }

    /// SHA-256 of everything `apply` changes (the snapshot encoding: the
    /// machine's canonical bytes, sessions, membership, last applied id).
    pub(crate) fn state_hash(&self) -> io::Result<StateHash> {
        use sha2::Digest;
        let (_, data) = self.to_snapshot()?;
        let bytes: &[u8] = data.as_ref();
        let digest = sha2::Sha256::digest(bytes);
        Ok(StateHash {
            applied_index: self.last_applied.map(|l| l.index).unwrap_or(0),
            applied_term: self.last_applied.map(|l| term_of(&l)).unwrap_or(0),
            sha256: digest.iter().map(|b| format!("{b:02x}")).collect(),
            bytes: bytes.len(),
        })
    }

    pub(crate) fn from_snapshot(bytes: &[u8]) -> io::Result<Self> {
        let envelope: SnapshotEnvelope = decode(bytes)?;
        if envelope.version != ENVELOPE_VERSION {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "snapshot envelope version {} is not supported (this build reads {ENVELOPE_VERSION})",
                    envelope.version
                ),
            ));
        }
        let machine =
            S::restore(&envelope.machine).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))?;
        Ok(Self {
            machine,
            sessions: envelope.sessions,
            last_applied: envelope.last_applied,
            membership: envelope.membership,
        })
    }

    /// Apply one log entry of any kind and advance `last_applied`. Pure:
    /// the same entry gives the same result on every replica. Returns the
    /// proposal's outcome (`None` for blank and membership entries).
    pub(crate) fn apply_entry(&mut self, entry: &super::Entry) -> (Option<Applied>, Option<ChangeEvent<S>>) {
        let log_id = entry.log_id;
        debug_assert!(
            self.last_applied.as_ref().is_none_or(|a| a.index < log_id.index),
            "entries are applied in log order, once"
        );
        let out = match &entry.payload {
            EntryPayload::Blank => (None, None),
            EntryPayload::Membership(m) => {
                self.membership = StoredMembership::new(Some(log_id), m.clone());
                (None, None)
            }
            EntryPayload::Normal(proposal) => {
                let ctx = ApplyCtx {
                    index: log_id.index,
                    term: term_of(&log_id),
                    timestamp_ms: proposal.proposed_at_ms,
                };
                let (applied, event) = self.apply_proposal(proposal, &ctx);
                (Some(applied), event)
            }
        };
        self.last_applied = Some(log_id);
        out
    }

    /// Apply one normal entry. Pure: the same entry gives the same result on
    /// every replica.
    fn apply_proposal(&mut self, proposal: &super::Proposal, ctx: &ApplyCtx) -> (Applied, Option<ChangeEvent<S>>) {
        if let Some(expected) = proposal.fence_term {
            if expected != ctx.term {
                return (
                    Applied::Fenced {
                        expected,
                        actual: ctx.term,
                    },
                    None,
                );
            }
        }
        if let Some(tag) = &proposal.tag {
            match self.sessions.admit(tag) {
                Admission::Apply => {}
                Admission::Duplicate(first) => return (first.clone(), None),
                Admission::Stale { last_seq } => return (Applied::StaleRetry { last_seq }, None),
            }
        }
        let (applied, event) = match postcard::from_bytes::<S::Command>(&proposal.command) {
            Err(e) => (Applied::Undecodable { reason: e.to_string() }, None),
            Ok(command) => {
                let response = self.machine.apply(&command, ctx);
                match postcard::to_stdvec(&response) {
                    Ok(bytes) => (
                        Applied::Response(bytes),
                        Some(ChangeEvent {
                            index: ctx.index,
                            term: ctx.term,
                            timestamp_ms: ctx.timestamp_ms,
                            command,
                            response,
                        }),
                    ),
                    Err(e) => (Applied::Undecodable { reason: e.to_string() }, None),
                }
            }
        };
        if let Some(tag) = &proposal.tag {
            self.sessions.record(tag, applied.clone(), ctx.index);
        }
        (applied, event)
    }
}

/// State shared by the store, its snapshot builders and the node's readers.
pub(crate) struct Shared<S: StateMachine> {
    pub(crate) replica: RwLock<Replica<S>>,
    pub(crate) events: broadcast::Sender<Arc<ChangeEvent<S>>>,
    /// Callers waiting for the state hash at one applied index
    /// ([`crate::RaftNode::state_hash_at`]): answered by `apply` right after
    /// the entry at that index, before the next one changes the state.
    pub(crate) hash_waiters: HashWaiters,
}

/// What a hash waiter is told: the hash at its index, or the applied index
/// a snapshot install jumped to past it.
pub(crate) type HashAnswer = Result<StateHash, u64>;

/// Pending requests for the state hash at an index, bounded so a caller
/// cannot pin memory with far-future indexes.
#[derive(Default)]
pub(crate) struct HashWaiters {
    /// Fast path for `apply`: no lock taken while nobody waits.
    any: AtomicBool,
    waiting: Mutex<BTreeMap<u64, Vec<oneshot::Sender<HashAnswer>>>>,
}

/// At most this many callers wait for a hash at once.
pub(crate) const HASH_WAITERS_MAX: usize = 64;

impl HashWaiters {
    /// Register a wait for `index`; `None` when too many already wait.
    pub(crate) fn register(&self, index: u64) -> Option<oneshot::Receiver<HashAnswer>> {
        let mut w = crate::sync::lock(&self.waiting);
        // Drop the abandoned waits (their callers timed out) before counting.
        w.retain(|_, v| {
            v.retain(|tx| !tx.is_closed());
            !v.is_empty()
        });
        if w.values().map(Vec::len).sum::<usize>() >= HASH_WAITERS_MAX {
            return None;
        }
        let (tx, rx) = oneshot::channel();
        w.entry(index).or_default().push(tx);
        self.any.store(true, Ordering::Release);
        Some(rx)
    }

    /// Answer the waits at `index` with the replica as it is now (just after
    /// applying that index); cheap when nobody waits.
    fn answer<S: StateMachine>(&self, index: u64, replica: &Replica<S>) {
        if !self.any.load(Ordering::Acquire) {
            return;
        }
        let mut w = crate::sync::lock(&self.waiting);
        let Some(senders) = w.remove(&index) else {
            return;
        };
        self.any.store(!w.is_empty(), Ordering::Release);
        drop(w);
        let answer = replica.state_hash().map_err(|e| {
            tracing::warn!(index, error = %e, "state hash at an index could not be computed");
            index
        });
        for tx in senders {
            let _ = tx.send(answer.clone());
        }
    }

    /// A snapshot install moved the replica to `applied` at once: every
    /// wait at or below it can no longer be answered.
    fn passed(&self, applied: u64) {
        if !self.any.load(Ordering::Acquire) {
            return;
        }
        let mut w = crate::sync::lock(&self.waiting);
        let rest = w.split_off(&(applied + 1));
        let passed = std::mem::replace(&mut *w, rest);
        self.any.store(!w.is_empty(), Ordering::Release);
        drop(w);
        for tx in passed.into_values().flatten() {
            let _ = tx.send(Err(applied));
        }
    }
}

impl<S: StateMachine> Shared<S> {
    pub(crate) fn read(&self) -> RwLockReadGuard<'_, Replica<S>> {
        // A poisoned lock means a panic inside apply, which the state-machine
        // contract forbids; keep serving the last consistent state.
        self.replica.read().unwrap_or_else(|p| p.into_inner())
    }
}

/// openraft's [`RaftStateMachine`] over a domain [`StateMachine`].
pub(crate) struct StateMachineStore<S: StateMachine> {
    pub(crate) shared: Arc<Shared<S>>,
    db: Arc<DB>,
    /// Shared with the log store: request ids of this node's own proposals
    /// by index, named by the apply span and removed when applied.
    pub(crate) in_flight: Arc<crate::trace::InFlight>,
    /// Where snapshot builds and installs are counted (none in unit tests).
    pub(crate) metrics: Option<crate::metrics::SnapshotMetrics>,
}

impl<S: StateMachine> StateMachineStore<S> {
    /// Open the store, restoring the latest persisted snapshot if any.
    pub(crate) async fn open(db: Arc<DB>) -> io::Result<Self> {
        let stored = load_snapshot(db.clone()).await?;
        let replica = match stored {
            Some(s) => {
                let r = Replica::<S>::from_snapshot(&s.data)?;
                tracing::info!(last_applied = ?r.last_applied, "restored state machine from snapshot");
                r
            }
            None => Replica::default(),
        };
        let (events, _) = broadcast::channel(EVENT_CHANNEL_CAPACITY);
        Ok(Self {
            shared: Arc::new(Shared {
                replica: RwLock::new(replica),
                events,
                hash_waiters: HashWaiters::default(),
            }),
            db,
            in_flight: Arc::default(),
            metrics: None,
        })
    }
}

async fn load_snapshot(db: Arc<DB>) -> io::Result<Option<StoredSnapshot>> {
    blocking(move || load_snapshot_sync(&db)).await
}

/// The stored snapshot, read on the calling thread (offline tools).
pub(crate) fn load_snapshot_sync(db: &DB) -> io::Result<Option<StoredSnapshot>> {
    let cf = db
        .cf_handle(CF_SM)
        .ok_or_else(|| io::Error::other("column family sm missing"))?;
    match db.get_cf(cf, KEY_SNAPSHOT).map_err(io::Error::other)? {
        None => Ok(None),
        Some(bytes) => decode(&bytes).map(Some),
    }
}

async fn save_snapshot(db: Arc<DB>, meta: &SnapshotMeta, data: &SnapshotData) -> io::Result<()> {
    let bytes = encode(&StoredSnapshot {
        meta: meta.clone(),
        data: data.to_vec(),
    })?;
    blocking(move || {
        let cf = db
            .cf_handle(CF_SM)
            .ok_or_else(|| io::Error::other("column family sm missing"))?;
        let mut opts = WriteOptions::default();
        // Synced: the log is purged behind this snapshot right after.
        opts.set_sync(true);
        db.put_cf_opt(cf, KEY_SNAPSHOT, bytes, &opts).map_err(io::Error::other)
    })
    .await
}

/// Builds snapshots from a read lock on the shared replica.
pub(crate) struct SnapshotBuilder<S: StateMachine> {
    shared: Arc<Shared<S>>,
    db: Arc<DB>,
    metrics: Option<crate::metrics::SnapshotMetrics>,
}

impl<S: StateMachine> RaftSnapshotBuilder<TypeConfig> for SnapshotBuilder<S> {
    type SnapshotData = SnapshotData;

    async fn build_snapshot(&mut self) -> Result<Snapshot, io::Error> {
        let started = std::time::Instant::now();
        let (meta, data) = self.shared.read().to_snapshot()?;
        // Info, like "built snapshot": snapshots are rare (every
        // `snapshot_every_entries`), and the chaos suite aims power cuts
        // between these two lines (docs/CHAOS.md, "Aimed power cuts").
        tracing::info!(last_log_id = ?meta.last_log_id, bytes = data.len(), "building snapshot");
        save_snapshot(self.db.clone(), &meta, &data).await?;
        let took = started.elapsed();
        if let Some(m) = &self.metrics {
            m.observe_built(data.len(), took);
        }
        tracing::info!(
            last_log_id = ?meta.last_log_id,
            bytes = data.len(),
            took_ms = took.as_millis() as u64,
            "built snapshot"
        );
        Ok(Snapshot { meta, snapshot: data })
    }
}

impl<S: StateMachine> RaftStateMachine<TypeConfig> for StateMachineStore<S> {
    type SnapshotData = SnapshotData;
    type SnapshotBuilder = SnapshotBuilder<S>;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, StoredMembership), io::Error> {
        let r = self.shared.read();
        Ok((r.last_applied, r.membership.clone()))
    }

    async fn apply<Strm>(&mut self, entries: Strm) -> Result<(), io::Error>
    where
        Strm: Stream<Item = Result<EntryResponder<TypeConfig>, io::Error>> + Unpin + OptionalSend,
    {
        // Collect first: the replica lock is a std lock and must not be held
        // across an await.
        let batch: Vec<EntryResponder<TypeConfig>> = entries.try_collect().await?;
        let first = batch.first().map(|(e, _)| e.log_id.index);
        let last = batch.last().map(|(e, _)| e.log_id.index);
        // Always drained (one atomic load when empty), so it stays bounded
        // whether or not the span below is enabled.
        let request_ids = last.map(|l| self.in_flight.take_upto(l)).unwrap_or_default();
        // Debug level: disabled (and free) at the default `info` filter.
        // Followers' batches name the index range only: the log entry does
        // not carry request ids (docs/DECISIONS.md, "Tracing").
        let span = tracing::debug_span!(
            "raft.apply",
            first,
            last,
            entries = batch.len(),
            request_ids = tracing::field::Empty,
        );
        if !request_ids.is_empty() && !span.is_disabled() {
            span.record("request_ids", request_ids.join(",").as_str());
        }
        // No await below: the guard is held by this thread only.
        let _entered = span.enter();
        let mut replies = Vec::with_capacity(batch.len());
        let mut events = Vec::new();
        {
            let mut r = self.shared.replica.write().unwrap_or_else(|p| p.into_inner());
            for (entry, responder) in batch {
                let (applied, event) = r.apply_entry(&entry);
                self.shared.hash_waiters.answer(entry.log_id.index, &r);
                events.extend(event);
                if let Some(responder) = responder {
                    replies.push((responder, applied.unwrap_or(Applied::Response(Vec::new()))));
                }
            }
        }
        for (responder, applied) in replies {
            responder.send(applied);
        }
        for event in events {
            // No subscriber is fine: events are a convenience, the state is
            // the truth.
            let _ = self.shared.events.send(Arc::new(event));
        }
        Ok(())
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        SnapshotBuilder {
            shared: self.shared.clone(),
            db: self.db.clone(),
            metrics: self.metrics.clone(),
        }
    }

    async fn install_snapshot(&mut self, meta: &SnapshotMeta, snapshot: SnapshotData) -> Result<(), io::Error> {
        let started = std::time::Instant::now();
        let replica = Replica::<S>::from_snapshot(&snapshot)?;
        if replica.last_applied != meta.last_log_id {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "snapshot meta says last log id {:?} but its content is at {:?}",
                    meta.last_log_id, replica.last_applied
                ),
            ));
        }
        save_snapshot(self.db.clone(), meta, &snapshot).await?;
        let applied = replica.last_applied.map(|l| l.index).unwrap_or(0);
        *self.shared.replica.write().unwrap_or_else(|p| p.into_inner()) = replica;
        self.shared.hash_waiters.passed(applied);
        if let Some(m) = &self.metrics {
            m.observe_installed(snapshot.len(), started.elapsed());
        }
        tracing::info!(last_log_id = ?meta.last_log_id, bytes = snapshot.len(), "installed snapshot");
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot>, io::Error> {
        Ok(load_snapshot(self.db.clone()).await?.map(|s| Snapshot {
            meta: s.meta,
            snapshot: s.data.into(),
        }))
    }
}
