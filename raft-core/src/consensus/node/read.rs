//! Reads: linearizable (a read index from the leader, then waiting to
//! apply it) or stale, and the streams of applied changes.

use std::sync::Arc;
use std::time::Duration;

use cairn_state::StateMachine;
use openraft::errors::LinearizableReadError;
use openraft::errors::RaftError;
use openraft::ReadPolicy;
use tokio::sync::broadcast;

use super::core::forward_err;
use super::core::Core;
use super::core::RaftNode;
use crate::consensus::protocol::ForwardError;
use crate::consensus::protocol::Request;
use crate::consensus::protocol::Response;
use crate::consensus::sm_store::ChangeEvent;
use crate::consensus::watch::Watch;
use crate::error::Error;

/// How a read is served.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Consistency {
    /// Linearizable: the leader confirms it still leads (read-index, one
    /// heartbeat round) and this node waits until it has applied at least
    /// that index. Sees every write acknowledged before the read started.
    #[default]
    Linearizable,
    /// Whatever this node has applied: no network round trip, may be stale
    /// by the replication lag (or more, if the node is partitioned).
    Stale,
}

impl<S: StateMachine> Core<S> {
    pub(super) async fn read_index_local(&self) -> Result<u64, ForwardError> {
        match self.raft.ensure_linearizable(ReadPolicy::ReadIndex).await {
            Ok(read) => Ok(read.index()),
            Err(RaftError::APIError(LinearizableReadError::ForwardToLeader(f))) => {
                Err(forward_err(f.leader_id.zip(f.leader_node)))
            }
            Err(RaftError::APIError(LinearizableReadError::QuorumNotEnough(q))) => Err(ForwardError::Unavailable {
                leader: self.id,
                message: q.to_string(),
            }),
            Err(e) => Err(ForwardError::Failed { message: e.to_string() }),
        }
    }
}

impl<S: StateMachine> RaftNode<S> {
    /// Read the state machine with the given consistency.
    pub async fn read<R>(&self, consistency: Consistency, f: impl FnOnce(&S) -> R) -> Result<R, Error> {
        if consistency == Consistency::Linearizable {
            let core = &self.core;
            let index = core
                // A read index changes nothing: idempotent.
                .on_leader(
                    None,
                    true,
                    || core.read_index_local(),
                    || Request::ReadIndex,
                    Response::into_read_index,
                )
                .await?;
            self.wait_applied(index, core.write_timeout).await?;
        }
        Ok(f(&self.core.shared.read().machine))
    }

    /// Wait until this node has applied `index`.
    pub async fn wait_applied(&self, index: u64, timeout: Duration) -> Result<(), Error> {
        self.core
            .raft
            .wait(Some(timeout))
            .applied_index_at_least(Some(index), "wait applied")
            .await
            .map(|_| ())
            .map_err(|_| Error::Timeout {
                what: "catching up to the read index",
                after_ms: timeout.as_millis() as u64,
            })
    }

    /// Like [`RaftNode::read`], also returning the applied index the state
    /// reflected, so a client can watch for changes from the next one.
    pub async fn read_indexed<R>(&self, consistency: Consistency, f: impl FnOnce(&S) -> R) -> Result<(u64, R), Error> {
        self.read(consistency, |_| ()).await?;
        let replica = self.core.shared.read();
        let index = replica.last_applied.map(|l| l.index).unwrap_or(0);
        Ok((index, f(&replica.machine)))
    }

    /// Read the locally applied state without any consistency check.
    pub fn local_state<R>(&self, f: impl FnOnce(&S) -> R) -> R {
        f(&self.core.shared.read().machine)
    }

    /// Applied commands, as they apply on this node. A receiver that falls
    /// behind by the channel capacity gets `Lagged` and should re-read.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<ChangeEvent<S>>> {
        self.core.shared.events.subscribe()
    }

    /// Applied changes from log index `from` on: history from the log, then
    /// live, without gaps or duplicates (see [`Watch`]). Fails with
    /// [`Error::Compacted`] if `from` is already compacted into a snapshot.
    pub fn watch(&self, from: u64) -> Result<Watch<S>, Error> {
        Watch::new(self.core.clone(), from)
    }
}
