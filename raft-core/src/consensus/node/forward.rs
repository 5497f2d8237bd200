//! Forwarding: a request made on any node runs on the leader, following
//! it as it moves within one deadline ([`Core::on_leader`]), and the
//! leader's side that serves what other nodes forward, after checking
//! whom each forwarded command speaks for.

use std::time::Duration;

use cairn_state::Speaker;
use cairn_state::StateMachine;

use super::core::Core;
use crate::consensus::network::CallError;
use crate::consensus::protocol::ForwardError;
use crate::consensus::protocol::Request;
use crate::consensus::protocol::Response;
use crate::consensus::Proposal;
use crate::error::Error;
use crate::retry::RetryPolicy;
use crate::transport::PeerIdentity;

/// How many times a write chases a moving leader before giving up.
const FORWARD_ATTEMPTS: u32 = 5;

/// The variant name of a command, for a log line and an error (its
/// `Debug` form without the fields, which may be large or hostile).
fn command_name<C: std::fmt::Debug>(command: &C) -> String {
    let text = format!("{command:?}");
    text.split(|c: char| !(c.is_alphanumeric() || c == '_'))
        .next()
        .unwrap_or_default()
        .chars()
        .take(64)
        .collect()
}

impl<S: StateMachine> Core<S> {
    /// May the node behind `sender` forward `proposal`? The state machine
    /// says whom the command speaks for ([`StateMachine::speaker`]); a node
    /// speaks only for itself, and cluster decisions come only from the
    /// leader's own coordinator (which proposes locally, never through
    /// here). `Err` is the refusal to send back; it is logged and counted
    /// here. Judged on any node, leader or not: the speaker of a command is
    /// fixed once known (a task's holder at an epoch never changes), so a
    /// stale replica can only be unsure (then the log decides), never wrong.
    fn authorize_forwarded(&self, sender: &PeerIdentity, proposal: &Proposal) -> Result<(), ForwardError> {
        let Ok(command) = postcard::from_bytes::<S::Command>(&proposal.command) else {
            // Not understood here: the pre-check refuses it (untagged) or
            // the log records it as undecodable; it can speak for no one.
            return Ok(());
        };
        let speaker = self.shared.read().machine.speaker(&command);
        let (reason, why) = match speaker {
            Speaker::Anyone => return Ok(()),
            Speaker::Node(node) if sender.may_speak_for(node) => return Ok(()),
            Speaker::Node(node) => (
                "speaks_for_another_node",
                format!("it speaks for node {node}, and a node may speak only for itself"),
            ),
            Speaker::Leader => (
                "leader_only",
                "it is a cluster decision, which only the leader's own coordinator proposes".to_owned(),
            ),
        };
        self.metrics.peer_refused(reason);
        let what = command_name(&command);
        tracing::warn!(
            sender = %sender,
            command = %what,
            reason,
            "refused a forwarded write: {why}"
        );
        Err(ForwardError::Forbidden {
            reason: format!("{what} from {sender} refused: {why}"),
        })
    }

    /// Serve a request another node forwarded to us (we should lead), over a
    /// connection proven to be `sender`.
    pub(crate) async fn handle_forwarded(&self, req: Request, sender: &PeerIdentity) -> Response {
        use tracing::Instrument;
        let (request_id, req) = match req {
            Request::Traced { request_id, inner } => (Some(request_id), *inner),
            other => (None, other),
        };
        let span = match &request_id {
            Some(id) => tracing::info_span!("forwarded", request_id = %id),
            None => tracing::Span::none(),
        };
        let scope_id = request_id.clone();
        let serve = async move {
            match req {
                Request::ClientWrite(p) => {
                    if let Err(refused) = self.authorize_forwarded(sender, &p) {
                        return Response::ClientWrite(Err(refused));
                    }
                    let res = self.propose_local(p).await;
                    if request_id.is_some() {
                        match &res {
                            Ok((index, _)) => tracing::debug!(index, "forwarded write committed"),
                            Err(e) => tracing::debug!(error = ?e, "forwarded write failed"),
                        }
                    }
                    Response::ClientWrite(res)
                }
                Request::ReadIndex => Response::ReadIndex(self.read_index_local().await),
                Request::Admin(a) => Response::Admin(self.admin_local(a).await),
                Request::App { from, channel, payload } => Response::App(self.handle_app(from, channel, payload).await),
                other => Response::Error(format!("not a forwardable request: {other:?}")),
            }
        }
        .instrument(span);
        // The id is also this task's request id here, so the leader's
        // `raft.client_write` span and the apply span carry it.
        match scope_id {
            Some(id) => crate::trace::with_request_id(id, serve).await,
            None => serve.await,
        }
    }

    /// Run `local` here, or forward `request` to the leader, following the
    /// leader as it moves, on the one retry policy ([`crate::retry`]):
    /// bounded attempts, all within one deadline (the write timeout, or
    /// `outer` if sooner) that retries, forwards and the waits for an
    /// election share, so a caller never waits much longer than
    /// `write_timeout_ms` (jepsen F4: a 3 s timeout gave waits over 4 s).
    /// An attempt whose outcome is unknown is retried only if the request
    /// is `idempotent` (a tagged write, a read).
    pub(super) async fn on_leader<T, F, Fut>(
        &self,
        outer: Option<tokio::time::Instant>,
        idempotent: bool,
        local: F,
        request: impl Fn() -> Request,
        unpack: impl Fn(Response) -> Option<Result<T, ForwardError>>,
    ) -> Result<T, Error>
    where
        F: Fn() -> Fut,
        Fut: std::future::Future<Output = Result<T, ForwardError>>,
    {
        let policy = RetryPolicy {
            max_attempts: FORWARD_ATTEMPTS,
            deadline: self.write_timeout,
            // Give an election time to finish before the next attempt.
            backoff_min: self.election_timeout_max / 2,
            backoff_max: self.election_timeout_max * 2,
        };
        let mut tries = match outer {
            Some(outer) => policy.start_by(outer),
            None => policy.start(),
        };
        loop {
            let remaining = tries.remaining();
            let err = if remaining.is_zero() {
                // Nothing of this attempt was sent (`retry` admits none
                // past the deadline; only `outer` can be already past).
                Error::NoLeader
            } else {
                match self.leader_attempt(remaining, &local, &request, &unpack).await {
                    Ok(v) => return Ok(v),
                    Err(Failure::Judge(e)) => e,
                    Err(Failure::Final(e)) => return Err(e),
                }
            };
            if !tries.retry(err.retry_class(), idempotent).await {
                return Err(err);
            }
        }
    }

    /// One attempt of [`Core::on_leader`].
    async fn leader_attempt<T, F, Fut>(
        &self,
        remaining: Duration,
        local: &F,
        request: &impl Fn() -> Request,
        unpack: &impl Fn(Response) -> Option<Result<T, ForwardError>>,
    ) -> Result<T, Failure>
    where
        F: Fn() -> Fut,
        Fut: std::future::Future<Output = Result<T, ForwardError>>,
    {
        // A follower that knows the leader forwards at once, instead of
        // first asking its own Raft core (a round trip through the core
        // task per write, only to hear "forward to the leader").
        let here = match self.other_leader() {
            Some(leader) => Err(ForwardError::NotLeader { leader: Some(leader) }),
            // Here it may have been proposed: out of time, the outcome
            // is unknown.
            None => tokio::time::timeout(remaining, local())
                .await
                .map_err(|_| self.timed_out("request"))?,
        };
        let (leader, member) = match here {
            Ok(v) => return Ok(v),
            Err(ForwardError::NotLeader {
                leader: Some((leader, member)),
            }) => (leader, member),
            Err(e) => return Err(Failure::Judge(e.into())),
        };
        self.metrics.forwarded_writes.inc();
        let req = match crate::trace::current_request_id() {
            Some(request_id) => Request::Traced {
                request_id,
                inner: Box::new(request()),
            },
            None => request(),
        };
        let res = self.forward.call(leader, &member.raft_addr, req, remaining).await;
        let err = match res {
            Ok(resp) => match unpack(resp) {
                Some(Ok(v)) => return Ok(v),
                Some(Err(e)) => e.into(),
                None => {
                    return Err(Failure::Final(Error::Unavailable {
                        leader,
                        reason: "unexpected response".into(),
                    }))
                }
            },
            // Definitely not delivered: safe to retry.
            Err(e @ CallError::Unreachable { .. }) => Error::Unavailable {
                leader,
                reason: e.to_string(),
            },
            // Maybe delivered: only the caller can decide.
            Err(CallError::Timeout { .. }) => return Err(self.timed_out("forwarded request")),
            // Sent, then the connection broke: it may have been applied, so
            // only a tagged write is retried (jepsen F1).
            Err(e @ CallError::Network { .. }) => Error::Indeterminate {
                reason: format!("forwarded to leader {leader}, then {e}"),
            },
        };
        Err(Failure::Judge(err))
    }

    /// Out of time with the request possibly sent: the whole deadline is
    /// spent (the attempt had all that remained), so nothing is retried.
    fn timed_out(&self, what: &'static str) -> Failure {
        Failure::Final(Error::Timeout {
            what,
            after_ms: self.write_timeout.as_millis() as u64,
        })
    }
}

/// How one attempt of [`Core::on_leader`] failed.
enum Failure {
    /// The retry policy decides whether to try again.
    Judge(Error),
    /// Given back to the caller at once.
    Final(Error),
}
