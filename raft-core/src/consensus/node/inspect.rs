//! Point-in-time views of the replica for operators and checkers: a
//! backup, the state hash (at an index), the stored log entries.

use std::time::Duration;

use cairn_state::StateMachine;

use super::core::RaftNode;
use super::read::Consistency;
use crate::consensus::sm_store::StateHash;
use crate::error::Error;

/// One log entry as a node stores it (see [`RaftNode::log_records`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogRecord {
    /// Log index.
    pub index: u64,
    /// Term of the leader that created the entry.
    pub term: u64,
    /// That leader's node id. openraft's leader ids are `(term, node id)`
    /// (`leader_id_adv`): two leaders may lead one term in turn, so an
    /// entry is identified by index, term *and* leader.
    pub leader: u64,
    /// The entry's payload (blank, membership or proposal), postcard-encoded:
    /// two entries are the same entry exactly when these bytes are equal.
    pub payload: Vec<u8>,
}

impl<S: StateMachine> RaftNode<S> {
    /// A point-in-time copy of the state machine for a backup file, taken
    /// after a linearizable read barrier (so it reflects every write
    /// acknowledged before the call) and under the replica's read lock (so
    /// state, index and term agree).
    pub async fn backup(&self) -> Result<crate::backup::Backup, Error> {
        self.read(Consistency::Linearizable, |_| ()).await?;
        let members = self.core.members();
        let (last, state) = {
            let replica = self.core.shared.read();
            (replica.last_applied, replica.machine.snapshot())
        };
        // The true time, not the node's (possibly shifted) clock: a
        // backup's age is read by operators.
        let taken_at_ms = crate::clock::WallClock::SYSTEM.now_ms();
        Ok(crate::backup::Backup {
            index: last.map(|l| l.index).unwrap_or(0),
            term: last.map(|l| crate::consensus::term_of(&l)).unwrap_or(0),
            taken_at_ms,
            taken_by: self.core.id,
            members,
            state,
        })
    }

    /// SHA-256 of this node's applied replicated state, and the index it
    /// reflects, taken under the replica's read lock (state and index
    /// agree). The bytes hashed are the snapshot envelope a snapshot of
    /// this node would hold: the state machine's own canonical encoding
    /// (postcard, `BTreeMap`s only), the client sessions, the membership
    /// and the last applied log id, so everything `apply` changes is
    /// covered. Local (no read barrier): callers wanting a linearizable
    /// view call [`RaftNode::read`] first.
    pub fn state_hash(&self) -> Result<StateHash, Error> {
        hash_of(&self.core.shared.read())
    }

    /// The state hash at exactly applied index `index`, for comparing
    /// replicas that are applying a moving log (`cairn check consistency`,
    /// like etcd's hash at a revision). Answered at once if this node's
    /// applied index is `index`; if it is below, this waits (up to `wait`)
    /// and the hash is taken right after applying `index`, before anything
    /// later changes the state. Errors: [`Error::HashPassed`] if this node
    /// already applied past `index`, [`Error::HashNotReached`] if it did not reach
    /// it within `wait`, [`Error::Busy`] if too many callers wait.
    pub async fn state_hash_at(&self, index: u64, wait: Duration) -> Result<StateHash, Error> {
        let shared = &self.core.shared;
        let rx = {
            // Registered under the replica's read lock: apply (which takes
            // the write lock) cannot pass `index` between the check and the
            // registration.
            let replica = shared.read();
            let applied = replica.last_applied.map(|l| l.index).unwrap_or(0);
            if applied == index {
                return hash_of(&replica);
            }
            if applied > index {
                return Err(Error::HashPassed {
                    requested: index,
                    applied,
                });
            }
            shared.hash_waiters.register(index).ok_or_else(|| Error::Busy {
                reason: format!(
                    "{} callers already wait for a state hash",
                    crate::consensus::sm_store::HASH_WAITERS_MAX
                ),
            })?
        };
        match tokio::time::timeout(wait, rx).await {
            Ok(Ok(Ok(hash))) => Ok(hash),
            Ok(Ok(Err(applied))) => Err(Error::HashPassed {
                requested: index,
                applied,
            }),
            Ok(Err(_)) => Err(Error::Fatal {
                reason: "the state machine stopped while a state hash was awaited".into(),
            }),
            Err(_) => Err(Error::HashNotReached {
                requested: index,
                applied: shared.read().last_applied.map(|l| l.index).unwrap_or(0),
                after_ms: wait.as_millis() as u64,
            }),
        }
    }

    /// The entries of this node's log from index `from` on (at most `max`),
    /// as stored: for checkers that compare logs across nodes (the
    /// simulation tier's log-matching check). Entries already purged into a
    /// snapshot are not returned.
    pub async fn log_records(&self, from: u64, max: usize) -> Result<Vec<LogRecord>, Error> {
        use openraft::RaftLogReader as _;
        let mut reader = self.core.log.clone();
        let end = from.saturating_add(max as u64);
        let entries = reader
            .try_get_log_entries(from..end)
            .await
            .map_err(|source| Error::Storage {
                what: "read log entries".into(),
                source,
            })?;
        entries
            .into_iter()
            .map(|e| {
                Ok(LogRecord {
                    index: e.log_id.index,
                    term: crate::consensus::term_of(&e.log_id),
                    leader: e.log_id.committed_leader_id().node_id,
                    payload: postcard::to_stdvec(&e.payload)?,
                })
            })
            .collect()
    }
}

/// The replica's state hash, an encoding failure as a storage error.
fn hash_of<S: StateMachine>(replica: &crate::consensus::sm_store::Replica<S>) -> Result<StateHash, Error> {
    replica.state_hash().map_err(|source| Error::Storage {
        what: "encoding the state for its hash".into(),
        source,
    })
}
