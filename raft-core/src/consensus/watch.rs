//! A resumable stream of applied changes: history read back from the log,
//! then the live broadcast, stitched so that no index is delivered twice and
//! none is skipped.
//!
//! How the stitch stays gap-free: the watch subscribes to the live broadcast
//! *before* it reads the applied index `A` under the replica lock. `apply`
//! bumps the applied index under the write lock and broadcasts only after
//! releasing it, so every change above `A` reaches the subscription; changes
//! up to `A` are read from the log. Live events at or below the last
//! delivered index are duplicates and dropped.
//!
//! When the log no longer holds what is needed (purged behind a snapshot, or
//! a follower that caught up by installing one) the watch fails with
//! [`Error::Compacted`]: the client re-reads the state and watches on from
//! the index that state reflects. A subscriber that lags behind the
//! broadcast is not an error: it goes back to reading the log.

use std::collections::BTreeMap;
use std::collections::VecDeque;
use std::sync::Arc;

use cairn_state::StateMachine;
use openraft::type_config::async_runtime::WatchReceiver;
use openraft::EntryPayload;
use openraft::RaftLogReader;
use tokio::sync::broadcast;

use super::node::core::Core;
use super::sm_store::ChangeEvent;
use super::term_of;
use crate::error::Error;

/// Log entries read per batch while replaying history: bounds the memory of
/// one watcher (entries are small; 256 of them stay well under a megabyte).
const REPLAY_BATCH: u64 = 256;

/// Client sessions remembered to drop deduplicated retries from replayed
/// history; bounded because the number of clients is not.
const REPLAY_SESSIONS: usize = 4096;

/// One applied change, as a watch delivers it.
#[derive(Clone, Debug)]
pub struct Change<S: StateMachine> {
    /// Log index of the command; strictly increasing along a watch.
    pub index: u64,
    /// Term of the leader that appended it.
    pub term: u64,
    /// The leader's timestamp on the proposal (ms since the Unix epoch).
    pub timestamp_ms: u64,
    /// The command.
    pub command: S::Command,
    /// What applying it returned. `None` for changes replayed from the log:
    /// the log holds commands, not responses.
    pub response: Option<S::Response>,
}

impl<S: StateMachine> From<&ChangeEvent<S>> for Change<S> {
    fn from(e: &ChangeEvent<S>) -> Self {
        Self {
            index: e.index,
            term: e.term,
            timestamp_ms: e.timestamp_ms,
            command: e.command.clone(),
            response: Some(e.response.clone()),
        }
    }
}

/// A stream of applied changes from a given index; see the module docs.
pub struct Watch<S: StateMachine> {
    core: Arc<Core<S>>,
    /// Next index that may be delivered.
    next: u64,
    /// Highest index already scanned in the log.
    scanned_to: u64,
    /// Indexes up to here come from the log, above it from `rx`.
    replay_to: u64,
    pending: VecDeque<Change<S>>,
    /// Highest sequence seen per client while replaying.
    replay_seqs: BTreeMap<u64, u64>,
    rx: broadcast::Receiver<Arc<ChangeEvent<S>>>,
}

impl<S: StateMachine> Watch<S> {
    pub(crate) fn new(core: Arc<Core<S>>, from: u64) -> Result<Self, Error> {
        let rx = core.shared.events.subscribe();
        let applied = applied_index(&core);
        let from = from.max(1);
        let first = first_available(&core);
        if from < first && from <= applied {
            return Err(Error::Compacted {
                requested: from,
                first_available: first,
            });
        }
        Ok(Self {
            core,
            next: from,
            scanned_to: from - 1,
            replay_to: applied,
            pending: VecDeque::new(),
            replay_seqs: BTreeMap::new(),
            rx,
        })
    }

    /// The index to resume from after the last delivered change.
    pub fn next_index(&self) -> u64 {
        self.next
    }

    /// The next change; waits for one if none is pending.
    pub async fn next(&mut self) -> Result<Change<S>, Error> {
        loop {
            if let Some(c) = self.pending.pop_front() {
                debug_assert!(c.index >= self.next, "changes are delivered in index order");
                self.next = c.index + 1;
                return Ok(c);
            }
            // The tail of a replayed batch after its last change holds none.
            self.next = self.next.max(self.scanned_to + 1);
            if self.next <= self.replay_to {
                let to = self.replay_to.min(self.next.saturating_add(REPLAY_BATCH - 1));
                let changes = self.replay(self.next, to).await?;
                self.scanned_to = to;
                self.pending.extend(changes);
                continue;
            }
            match self.rx.recv().await {
                Ok(ev) => {
                    if ev.index < self.next {
                        continue;
                    }
                    if ev.index > self.next {
                        // The entries in between produced no change (blank,
                        // membership, fenced, deduplicated) unless a snapshot
                        // install skipped them: then they are gone from the log.
                        self.read_log(self.next, ev.index - 1).await?;
                    }
                    self.next = ev.index + 1;
                    return Ok(Change::from(&*ev));
                }
                Err(broadcast::error::RecvError::Lagged(missed)) => {
                    tracing::debug!(missed, next = self.next, "watch lagged; replaying from the log");
                    self.rx = self.core.shared.events.subscribe();
                    self.replay_to = applied_index(&self.core);
                }
                Err(broadcast::error::RecvError::Closed) => {
                    return Err(Error::Fatal {
                        reason: "the node stopped applying changes".into(),
                    })
                }
            }
        }
    }

    /// Entries `from..=to`, all of them, or [`Error::Compacted`].
    async fn read_log(&self, from: u64, to: u64) -> Result<Vec<super::Entry>, Error> {
        let mut reader = self.core.log.clone();
        let entries = reader
            .try_get_log_entries(from..=to)
            .await
            .map_err(|source| Error::Storage {
                what: format!("read log entries {from}..={to} for a watch"),
                source,
            })?;
        let complete = entries.len() as u64 == to - from + 1 && entries.first().is_some_and(|e| e.log_id.index == from);
        if !complete {
            return Err(Error::Compacted {
                requested: from,
                first_available: first_available(&self.core),
            });
        }
        Ok(entries)
    }

    /// The changes among entries `from..=to`, decoded as `apply` would see
    /// them: fenced proposals, undecodable commands and retries the session
    /// table would deduplicate are left out.
    async fn replay(&mut self, from: u64, to: u64) -> Result<Vec<Change<S>>, Error> {
        let entries = self.read_log(from, to).await?;
        let mut out = Vec::new();
        for entry in entries {
            let EntryPayload::Normal(proposal) = &entry.payload else {
                continue;
            };
            let term = term_of(&entry.log_id);
            if proposal.fence_term.is_some_and(|t| t != term) {
                continue;
            }
            if let Some(tag) = &proposal.tag {
                if self
                    .replay_seqs
                    .get(&tag.client_id)
                    .is_some_and(|seen| tag.seq <= *seen)
                {
                    continue;
                }
                if self.replay_seqs.len() >= REPLAY_SESSIONS {
                    self.replay_seqs.clear();
                }
                self.replay_seqs.insert(tag.client_id, tag.seq);
            }
            let Ok(command) = postcard::from_bytes::<S::Command>(&proposal.command) else {
                continue;
            };
            out.push(Change {
                index: entry.log_id.index,
                term,
                timestamp_ms: proposal.proposed_at_ms,
                command,
                response: None,
            });
        }
        Ok(out)
    }
}

fn applied_index<S: StateMachine>(core: &Core<S>) -> u64 {
    core.shared.read().last_applied.map(|l| l.index).unwrap_or(0)
}

fn first_available<S: StateMachine>(core: &Core<S>) -> u64 {
    let m = core.raft.metrics();
    let purged = m.borrow_watched().purged.as_ref().map(|l| l.index);
    purged.map(|p| p + 1).unwrap_or(1)
}
