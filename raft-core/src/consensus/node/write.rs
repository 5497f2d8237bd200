//! The write path: a command proposed on the leader (with the state
//! machine's check before anything is appended), and the embedding
//! program's `write` calls that get it there.

use cairn_state::Admission;
use cairn_state::ApplyCtx;
use cairn_state::ClientTag;
use cairn_state::StateMachine;
use openraft::errors::ClientWriteError;
use openraft::errors::RaftError;
use openraft::type_config::async_runtime::WatchReceiver;

use super::core::forward_err;
use super::core::Core;
use super::core::RaftNode;
use crate::consensus::protocol::ForwardError;
use crate::consensus::protocol::Request;
use crate::consensus::protocol::Response;
use crate::consensus::Applied;
use crate::consensus::Proposal;
use crate::error::Error;

/// A committed write.
#[derive(Clone, Debug, PartialEq)]
pub struct WriteOutcome<R> {
    /// Log index the write was committed at.
    pub index: u64,
    /// What the state machine returned.
    pub response: R,
}

/// What the leader's check decided about a proposal before proposing it
/// (see [`Core::refuse_before_log`]).
enum PreCheck {
    /// Propose it: the state machine accepts it in this state, or the log
    /// must decide (a retry of a tagged write, a refusal that depends on
    /// the state for a tagged write, a fenced write of another term).
    Propose,
    /// Refused whatever the state (or not understood): answer with this.
    Refuse(Applied),
    /// Refused by this node's applied state, which may be stale: refuse
    /// only once a read barrier shows it is fresh.
    RefuseIfFresh(Applied),
}

impl<S: StateMachine> Core<S> {
    /// Propose on this node; fails with `NotLeader` if it does not lead.
    pub(super) async fn propose_local(&self, mut proposal: Proposal) -> Result<(u64, Applied), ForwardError> {
        use tracing::Instrument;
        // Debug level: at the default `info` filter this is one disabled
        // span (no allocation); the request id is then not copied either.
        let span = tracing::debug_span!(
            "raft.client_write",
            request_id = tracing::field::Empty,
            index = tracing::field::Empty,
            outcome = tracing::field::Empty,
        );
        if !span.is_disabled() {
            if let Some(id) = crate::trace::current_request_id() {
                span.record("request_id", id.as_str());
                proposal.request_id = Some(id.into());
            }
        }
        let res = self.propose_local_inner(proposal).instrument(span.clone()).await;
        if !span.is_disabled() {
            match &res {
                Ok((index, _)) => {
                    span.record("index", index);
                    span.record("outcome", "applied");
                }
                Err(e) => {
                    span.record("outcome", e.outcome());
                }
            }
        }
        res
    }

    async fn propose_local_inner(&self, mut proposal: Proposal) -> Result<(u64, Applied), ForwardError> {
        // Checked again here (the forwarding node checked with its own
        // limit): native clients and nodes configured differently.
        if proposal.command.len() > self.max_entry_bytes {
            return Err(ForwardError::EntryTooLarge {
                bytes: proposal.command.len() as u64,
                limit: self.max_entry_bytes as u64,
            });
        }
        proposal.proposed_at_ms = self.stamp();
        let started = std::time::Instant::now();
        if let Some(refused) = self.refuse_before_log(&proposal).await? {
            self.metrics.refused_before_log.inc();
            return Ok(refused);
        }
        let fut = self.raft.client_write(proposal);
        let res = match tokio::time::timeout(self.write_timeout, fut).await {
            Err(_) => {
                return Err(ForwardError::Indeterminate {
                    message: format!("write did not commit within {:?}", self.write_timeout),
                })
            }
            Ok(r) => r,
        };
        match res {
            Ok(resp) => {
                self.metrics.proposal_seconds.observe(started.elapsed().as_secs_f64());
                Ok((resp.log_id.index, resp.data))
            }
            Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f))) => {
                Err(forward_err(f.leader_id.zip(f.leader_node)))
            }
            // Appended, then the leader changed: it may still commit.
            Err(RaftError::APIError(ClientWriteError::LogEntryDiscarded(_))) => Err(ForwardError::Indeterminate {
                message: "the leader changed before the write committed; it may or may not apply".into(),
            }),
            Err(e) => Err(ForwardError::Failed { message: e.to_string() }),
        }
    }

    /// The state machine's check of `proposal` against this node's applied
    /// state, under the replica's read lock, and the applied index it
    /// reflects. Never blocks: the read lock is held for one `check`.
    fn pre_check(&self, proposal: &Proposal) -> (u64, PreCheck) {
        let term = self.raft.metrics().borrow_watched().current_term;
        let replica = self.shared.read();
        let applied = replica.last_applied.map(|l| l.index).unwrap_or(0);
        if proposal.fence_term.is_some_and(|t| t != term) {
            // The log fences it (`Applied::Fenced`), as before.
            return (applied, PreCheck::Propose);
        }
        if let Some(tag) = &proposal.tag {
            // A retry of a write already applied, or a late replay: the
            // session table in the log answers it, as before.
            if !matches!(replica.sessions.admit(tag), Admission::Apply) {
                return (applied, PreCheck::Propose);
            }
        }
        let command = match postcard::from_bytes::<S::Command>(&proposal.command) {
            Ok(command) => command,
            // Not understood here; a node of another version might, so a
            // tagged write is left to the log (which records the outcome).
            Err(e) if proposal.tag.is_none() => {
                return (
                    applied,
                    PreCheck::Refuse(Applied::Undecodable { reason: e.to_string() }),
                )
            }
            Err(_) => return (applied, PreCheck::Propose),
        };
        let ctx = ApplyCtx {
            index: applied + 1,
            term,
            timestamp_ms: proposal.proposed_at_ms,
        };
        let Err(refusal) = replica.machine.check(&command, &ctx) else {
            return (applied, PreCheck::Propose);
        };
        let Ok(bytes) = postcard::to_stdvec(refusal.response()) else {
            return (applied, PreCheck::Propose);
        };
        let verdict = if refusal.in_every_state() {
            PreCheck::Refuse(Applied::Response(bytes))
        } else if proposal.tag.is_some() {
            // A retryable write refused by this state: a retry of it may
            // still be in flight to the log, or arrive after the state
            // changed, and must find the outcome recorded in the session
            // table; so the log decides (docs/DECISIONS.md, "Refused
            // writes and log hygiene").
            PreCheck::Propose
        } else {
            PreCheck::RefuseIfFresh(Applied::Response(bytes))
        };
        (applied, verdict)
    }

    /// `Some((index, refusal))` if the state machine refuses `proposal`: it
    /// is answered without being appended, exactly as an applied refusal
    /// would be (the index is the applied index of the state that refused
    /// it). A refusal that depends on the state is given only after a read
    /// barrier: this node confirms it still leads (a quorum round) and
    /// applies up to the read index, then checks again. So the state checked
    /// holds every write acknowledged before the request arrived, and the
    /// refusal is linearizable even on a new leader that has not yet
    /// applied its predecessors' entries, or a deposed one. The barrier
    /// costs a heartbeat round, on refusals only. If it fails, the node
    /// does not lead (answered `NotLeader`, so the write is forwarded) or
    /// has no quorum (`Unavailable`): nothing was proposed either way.
    async fn refuse_before_log(&self, proposal: &Proposal) -> Result<Option<(u64, Applied)>, ForwardError> {
        if !self.raft.is_leader() {
            // Only the leader's state is current; a follower proposes, is
            // told who leads, and the write goes there.
            return Ok(None);
        }
        match self.pre_check(proposal) {
            (_, PreCheck::Propose) => Ok(None),
            (index, PreCheck::Refuse(refusal)) => Ok(Some((index, refusal))),
            // Boxed: the barrier's futures are deep, and refusals are rare;
            // inline they made every write future deeper than callers'
            // layout computation allows (node-agents hit the query limit).
            (_, PreCheck::RefuseIfFresh(_)) => Box::pin(self.confirm_refusal(proposal)).await,
        }
    }

    /// The read barrier and second check of [`Core::refuse_before_log`].
    async fn confirm_refusal(&self, proposal: &Proposal) -> Result<Option<(u64, Applied)>, ForwardError> {
        let deadline = tokio::time::Instant::now() + self.write_timeout;
        let unconfirmed = || {
            ForwardError::Unavailable {
            leader: self.id,
            message: format!(
                "the state machine refused the write, but this node could not confirm its state is current within {:?}; nothing was written",
                self.write_timeout
            ),
        }
        };
        let read = tokio::time::timeout_at(deadline, self.read_index_local())
            .await
            .map_err(|_| unconfirmed())??;
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        self.raft
            .wait(Some(left))
            .applied_index_at_least(Some(read), "pre-check read index")
            .await
            .map_err(|_| unconfirmed())?;
        Ok(match self.pre_check(proposal) {
            (index, PreCheck::Refuse(refusal) | PreCheck::RefuseIfFresh(refusal)) => Some((index, refusal)),
            (_, PreCheck::Propose) => None,
        })
    }
}

impl<S: StateMachine> RaftNode<S> {
    /// The write's encoded command, or [`Error::EntryTooLarge`]: checked on
    /// the node the client called, before anything is forwarded.
    fn encode_command(&self, command: &S::Command) -> Result<Vec<u8>, Error> {
        let bytes = postcard::to_stdvec(command)?;
        if bytes.len() > self.core.max_entry_bytes {
            return Err(Error::EntryTooLarge {
                bytes: bytes.len(),
                limit: self.core.max_entry_bytes,
            });
        }
        Ok(bytes)
    }

    /// Replicate a command (forwarded to the leader if needed). Untagged:
    /// after a timeout the caller cannot know whether it applied; use
    /// [`RaftNode::write_tagged`] when retries must be safe.
    pub async fn write(&self, command: S::Command) -> Result<WriteOutcome<S::Response>, Error> {
        self.propose(None, command, None).await
    }

    /// Replicate a command at most once per `tag`: retrying with the same tag
    /// returns the first outcome instead of applying again.
    /// Within the write timeout, a tagged write is also retried after an
    /// attempt whose outcome is unknown (see [`crate::retry`]).
    pub async fn write_tagged(&self, tag: ClientTag, command: S::Command) -> Result<WriteOutcome<S::Response>, Error> {
        self.propose(Some(tag), command, None).await
    }

    /// [`RaftNode::write_tagged`] inside a caller's own retry loop: it
    /// ends by `deadline` (or the write timeout, if sooner), so the two
    /// loops share one deadline instead of multiplying.
    pub async fn write_tagged_by(
        &self,
        tag: ClientTag,
        command: S::Command,
        deadline: tokio::time::Instant,
    ) -> Result<WriteOutcome<S::Response>, Error> {
        self.propose(Some(tag), command, Some(deadline)).await
    }

    async fn propose(
        &self,
        tag: Option<ClientTag>,
        command: S::Command,
        outer: Option<tokio::time::Instant>,
    ) -> Result<WriteOutcome<S::Response>, Error> {
        let proposal = Proposal {
            tag,
            proposed_at_ms: 0,
            fence_term: None,
            command: self.encode_command(&command)?,
            request_id: None,
        };
        let core = &self.core;
        let (index, applied) = core
            .on_leader(
                outer,
                tag.is_some(),
                || core.propose_local(proposal.clone()),
                || Request::ClientWrite(proposal.clone()),
                Response::into_client_write,
            )
            .await?;
        decode_applied(index, applied)
    }

    /// Propose `command` on this node only if it leads in `term`, and apply
    /// it only if it commits in that same term. Never forwarded: this is how
    /// the coordinator makes decisions that a newer leader must not inherit.
    pub async fn write_fenced(&self, term: u64, command: S::Command) -> Result<WriteOutcome<S::Response>, Error> {
        let proposal = Proposal {
            tag: None,
            proposed_at_ms: 0,
            fence_term: Some(term),
            command: self.encode_command(&command)?,
            request_id: None,
        };
        match self.core.propose_local(proposal).await {
            Ok((index, applied)) => decode_applied(index, applied),
            // Never forwarded: "not the leader" even if none is known.
            Err(ForwardError::NotLeader { leader }) => Err(Error::NotLeader {
                leader: leader.map(|(id, _)| id),
            }),
            Err(e) => Err(e.into()),
        }
    }
}

pub(crate) fn decode_applied<R: serde::de::DeserializeOwned>(
    index: u64,
    applied: Applied,
) -> Result<WriteOutcome<R>, Error> {
    match applied {
        Applied::Response(bytes) => Ok(WriteOutcome {
            index,
            response: postcard::from_bytes(&bytes)?,
        }),
        Applied::Fenced { expected, actual } => Err(Error::Fenced { expected, actual }),
        Applied::StaleRetry { last_seq } => Err(Error::Rejected {
            reason: format!("retry of an old write (client is already at sequence {last_seq})"),
        }),
        Applied::Undecodable { reason } => Err(Error::Rejected {
            reason: format!("command not understood by the state machine: {reason}"),
        }),
    }
}
