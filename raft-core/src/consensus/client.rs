//! A native client: writes and read indexes over the node-to-node transport.
//!
//! The HTTP admin API is the interface for operators and scripts; this is
//! the one for programs that write a lot (and for the benchmarks). It
//! speaks the peer protocol's `ClientWrite`/`ReadIndex` requests — the same
//! ones a follower forwards to its leader — postcard-framed and pipelined
//! over one connection per node, and it goes to the leader directly: the
//! first answer from a follower names the leader, and the client sticks to
//! it until it stops leading. No HTTP, no JSON, no forwarding hop.
//!
//! Who may use it: whoever may connect to the peer port. With mutual TLS
//! (production) that is a holder of a certificate from the cluster CA
//! (pass a TLS [`Dialer`]); in plaintext mode, anyone who can reach the
//! port — the same exposure the port has for Raft traffic itself.

use std::collections::HashMap;
use std::marker::PhantomData;
use std::sync::atomic::AtomicUsize;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use cairn_state::ClientTag;
use cairn_state::StateMachine;

use super::network::CallError;
use super::network::NetConfig;
use super::network::PeerClient;
use super::node::decode_applied;
use super::node::WriteOutcome;
use super::protocol::AdminRequest;
use super::protocol::ForwardError;
use super::protocol::Request;
use super::protocol::Response;
use super::Proposal;
use crate::config::RaftTimings;
use crate::error::Error;
use crate::frame::DEFAULT_MAX_FRAME_BYTES;
use crate::retry::RetryPolicy;
use crate::transport::Dialer;
use crate::transport::TcpDialer;

/// The id a client gives in its handshake: no node has it (ids start at 1).
const CLIENT_ID: u64 = 0;

/// Attempts of one call, hops to a named leader included: a round or two
/// through a handful of endpoints and a few elections. Bounds the
/// ping-pong of two nodes naming each other as leader, which a deadline
/// alone would let spin for its whole length.
const CALL_ATTEMPTS: u32 = 16;

/// A client of a cluster's peer port, for the state machine `S`.
///
/// Cheap to share (`Arc`) between tasks: concurrent calls are pipelined on
/// one connection per node.
pub struct NativeClient<S: StateMachine> {
    endpoints: Vec<String>,
    net: NetConfig,
    timeout: Duration,
    retry_pause: Duration,
    election_pause: Duration,
    peers: tokio::sync::Mutex<HashMap<String, PeerClient>>,
    /// The leader's peer address, once a node named it.
    leader: std::sync::Mutex<Option<String>>,
    next: AtomicUsize,
    _state: PhantomData<fn() -> S>,
}

impl<S: StateMachine> NativeClient<S> {
    /// A plaintext client of the nodes whose peer addresses are `endpoints`.
    pub fn new(endpoints: Vec<String>) -> Result<Self, Error> {
        Self::with_dialer(endpoints, Arc::new(TcpDialer))
    }

    /// A client that connects through `dialer` (e.g. mutual TLS).
    pub fn with_dialer(endpoints: Vec<String>, dialer: Arc<dyn Dialer>) -> Result<Self, Error> {
        let t = RaftTimings::default();
        Self::with_net(
            endpoints,
            NetConfig {
                self_id: CLIENT_ID,
                dialer,
                max_frame_bytes: DEFAULT_MAX_FRAME_BYTES,
                connect_timeout: Duration::from_millis(t.connect_timeout_ms),
                backoff_min: Duration::from_millis(t.reconnect_backoff_ms_min),
                backoff_max: Duration::from_millis(t.reconnect_backoff_ms_max),
                rpc_timeout_min: Duration::from_millis(t.election_timeout_ms_min),
            },
        )
    }

    /// A client on a node's own transport settings (its id in the
    /// handshake, its dialer and certificate): how a node joins a cluster.
    pub(crate) fn with_net(endpoints: Vec<String>, net: NetConfig) -> Result<Self, Error> {
        if endpoints.is_empty() {
            return Err(Error::Config {
                field: "endpoints",
                reason: "at least one node's peer address is needed".into(),
            });
        }
        let t = RaftTimings::default();
        Ok(Self {
            net,
            endpoints,
            timeout: Duration::from_millis(t.write_timeout_ms),
            // A heartbeat: an election is over in a few of them, and a
            // dead node costs a round through the endpoints at this pace.
            retry_pause: Duration::from_millis(t.heartbeat_interval_ms),
            election_pause: Duration::from_millis(t.election_timeout_ms_max),
            peers: tokio::sync::Mutex::new(HashMap::new()),
            leader: std::sync::Mutex::new(None),
            next: AtomicUsize::new(0),
            _state: PhantomData,
        })
    }

    /// How long a call may take, retries included (default: the nodes'
    /// default `write_timeout_ms`); then its last error is returned.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Replicate `command`; returns once it is applied, with the log index
    /// and the state machine's response.
    pub async fn write(&self, command: &S::Command) -> Result<WriteOutcome<S::Response>, Error> {
        self.propose(None, command).await
    }

    /// Replicate `command` at most once per `tag` (see
    /// [`RaftNode::write_tagged`](crate::RaftNode::write_tagged)).
    pub async fn write_tagged(&self, tag: ClientTag, command: &S::Command) -> Result<WriteOutcome<S::Response>, Error> {
        self.propose(Some(tag), command).await
    }

    /// A linearizable read index: every write acknowledged before this call
    /// is at or below it.
    pub async fn read_index(&self) -> Result<u64, Error> {
        self.call(true, || Request::ReadIndex, Response::into_read_index).await
    }

    /// A membership change, run on the leader. Retried after an unknown
    /// outcome: adding the same learner again, or promoting a voter, changes
    /// nothing.
    pub(crate) async fn admin(&self, req: AdminRequest) -> Result<(), Error> {
        self.call(
            true,
            || Request::Admin(req.clone()),
            |r| match r {
                Response::Admin(r) => Some(r),
                _ => None,
            },
        )
        .await
    }

    async fn propose(&self, tag: Option<ClientTag>, command: &S::Command) -> Result<WriteOutcome<S::Response>, Error> {
        let proposal = Proposal {
            tag,
            // The leader stamps it.
            proposed_at_ms: 0,
            fence_term: None,
            command: postcard::to_stdvec(command)?,
            request_id: None,
        };
        let (index, applied) = self
            .call(
                tag.is_some(),
                || Request::ClientWrite(proposal.clone()),
                Response::into_client_write,
            )
            .await?;
        decode_applied(index, applied)
    }

    /// The address to try next: the leader if one is known, else the next
    /// endpoint in turn.
    fn target(&self) -> String {
        if let Some(l) = crate::sync::lock(&self.leader).clone() {
            return l;
        }
        let i = self.next.fetch_add(1, Ordering::Relaxed);
        self.endpoints[i % self.endpoints.len()].clone()
    }

    fn set_leader(&self, addr: Option<String>) {
        *crate::sync::lock(&self.leader) = addr;
    }

    /// One request on the one retry policy ([`crate::retry`]): bounded by
    /// the client's timeout and [`CALL_ATTEMPTS`]; a leader just named is
    /// tried at once (still counted); an unknown outcome is retried only if
    /// `idempotent` (a tagged write, a read index).
    async fn call<T>(
        &self,
        idempotent: bool,
        request: impl Fn() -> Request,
        unpack: impl Fn(Response) -> Option<Result<T, ForwardError>>,
    ) -> Result<T, Error> {
        let mut tries = RetryPolicy {
            max_attempts: CALL_ATTEMPTS,
            deadline: self.timeout,
            // Not hammering a cluster that is electing, or nodes that are
            // down: a heartbeat at first, an election at most.
            backoff_min: self.retry_pause,
            backoff_max: self.retry_pause.max(self.election_pause),
        }
        .start();
        loop {
            let (err, hop) = match self.attempt(tries.remaining(), &request, &unpack).await {
                Ok(v) => return Ok(v),
                Err(Failure::Final(e)) => return Err(e),
                Err(Failure::Judge(e)) => (e, false),
                Err(Failure::Hop(e)) => (e, true),
            };
            let again = if hop {
                // Straight to the leader it named (one hop, no pause).
                tries.retry_now(err.retry_class(), idempotent)
            } else {
                tries.retry(err.retry_class(), idempotent).await
            };
            if !again {
                return Err(err);
            }
        }
    }

    async fn attempt<T>(
        &self,
        remaining: Duration,
        request: &impl Fn() -> Request,
        unpack: &impl Fn(Response) -> Option<Result<T, ForwardError>>,
    ) -> Result<T, Failure> {
        let addr = self.target();
        let conn = {
            let mut peers = self.peers.lock().await;
            let peer = peers
                .entry(addr.clone())
                .or_insert_with(|| PeerClient::new(u64::MAX, addr.clone(), self.net.clone()));
            peer.shared_connection().await
        };
        let conn = match conn {
            Ok(c) => c,
            Err(e) => {
                // Never sent: safe to try another node.
                self.set_leader(None);
                return Err(Failure::Judge(unreachable(&addr, e)));
            }
        };
        let res = PeerClient::call_on(&conn, u64::MAX, request(), remaining).await;
        let resp = match res {
            Ok(r) => r,
            Err(CallError::Unreachable { reason, .. }) => {
                self.set_leader(None);
                return Err(Failure::Judge(Error::Unreachable { addr, reason }));
            }
            // The attempt had all the time left: nothing to retry in.
            Err(CallError::Timeout { after, .. }) => {
                return Err(Failure::Final(Error::Timeout {
                    what: "native client call",
                    after_ms: after.as_millis() as u64,
                }))
            }
            // Sent, then the connection broke: it may have been applied.
            Err(CallError::Network { reason, .. }) => {
                if let Some(p) = self.peers.lock().await.get_mut(&addr) {
                    p.mark_failed(&conn);
                }
                self.set_leader(None);
                return Err(Failure::Judge(Error::Indeterminate {
                    reason: format!("sent to {addr}, then {reason}"),
                }));
            }
        };
        match unpack(resp) {
            Some(Ok(v)) => Ok(v),
            Some(Err(ForwardError::NotLeader {
                leader: Some((_, member)),
            })) => {
                // If the hop is refused (attempts or time spent), no node
                // was found leading.
                self.set_leader(Some(member.raft_addr));
                Err(Failure::Hop(Error::NoLeader))
            }
            Some(Err(e @ ForwardError::NotLeader { leader: None })) => {
                self.set_leader(None);
                Err(Failure::Judge(e.into()))
            }
            Some(Err(e)) => Err(Failure::Judge(e.into())),
            None => Err(Failure::Final(Error::Unreachable {
                addr,
                reason: "unexpected response (not a cairn node of this version?)".into(),
            })),
        }
    }
}

/// How one attempt of [`NativeClient::call`] failed.
enum Failure {
    /// The retry policy decides whether to try again.
    Judge(Error),
    /// A node named the leader: try it at once, if the policy allows.
    Hop(Error),
    /// Given back to the caller.
    Final(Error),
}

fn unreachable(addr: &str, e: CallError) -> Error {
    let reason = match e {
        CallError::Unreachable { reason, .. } | CallError::Network { reason, .. } => reason,
        CallError::Timeout { after, .. } => format!("no answer within {after:?}"),
    };
    Error::Unreachable {
        addr: addr.to_string(),
        reason,
    }
}

#[cfg(test)]
mod tests {
    //! The native client's retry loop against fake nodes on loopback: each
    //! answers the handshake, counts the requests it gets, and answers (or
    //! drops the connection) as told.

    use std::sync::atomic::AtomicUsize;
    use std::sync::atomic::Ordering;
    use std::sync::Arc;
    use std::time::Duration;

    use cairn_state::ClientTag;
    use tokio::net::TcpListener;

    use super::super::protocol::server_handshake;
    use super::super::protocol::ForwardError;
    use super::super::protocol::Request;
    use super::super::protocol::RequestFrame;
    use super::super::protocol::Response;
    use super::super::protocol::ResponseFrame;
    use super::super::protocol::PROTOCOL_VERSION;
    use super::super::Applied;
    use super::super::Member;
    use super::NativeClient;
    use crate::error::Error;
    use crate::frame::DEFAULT_MAX_FRAME_BYTES;

    use super::super::tests::kv;

    /// What a fake node does with the `n`th request (0-based) it gets:
    /// answer, or drop the connection (`None`).
    type Script = Arc<dyn Fn(usize, &Request) -> Option<Response> + Send + Sync>;

    /// Serves `script` on `listener`; returns how many requests came.
    fn fake_node(listener: TcpListener, script: Script) -> Arc<AtomicUsize> {
        let seen = Arc::new(AtomicUsize::new(0));
        let count = seen.clone();
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                let (script, count) = (script.clone(), count.clone());
                tokio::spawn(async move {
                    if server_handshake(&mut stream, PROTOCOL_VERSION).await.is_err() {
                        return;
                    }
                    let mut buf = Vec::new();
                    while let Ok(req) =
                        crate::frame::read_frame::<RequestFrame, _>(&mut stream, &mut buf, DEFAULT_MAX_FRAME_BYTES)
                            .await
                    {
                        let n = count.fetch_add(1, Ordering::SeqCst);
                        let Some(body) = script(n, &req.body) else {
                            return;
                        };
                        let frame = ResponseFrame { id: req.id, body };
                        if crate::frame::write_frame(&mut stream, &frame, DEFAULT_MAX_FRAME_BYTES)
                            .await
                            .is_err()
                        {
                            return;
                        }
                    }
                });
            }
        });
        seen
    }

    async fn listener() -> (TcpListener, String) {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap().to_string();
        (l, addr)
    }

    fn not_leader(id: u64, raft_addr: &str) -> Response {
        Response::ClientWrite(Err(ForwardError::NotLeader {
            leader: Some((
                id,
                Member {
                    raft_addr: raft_addr.to_owned(),
                    api_addr: String::new(),
                },
            )),
        }))
    }

    fn set() -> kv::KvCmd {
        kv::KvCmd::Set {
            key: "k".into(),
            value: "v".into(),
        }
    }

    /// Two nodes that name each other as the leader: the client used to
    /// hop between them without pause or deadline check, for ever.
    #[tokio::test]
    async fn two_nodes_naming_each_other_as_leader_fail_within_the_deadline() {
        let (la, a) = listener().await;
        let (lb, b) = listener().await;
        let (to_b, to_a) = (b.clone(), a.clone());
        let seen_a = fake_node(la, Arc::new(move |_, _| Some(not_leader(2, &to_b))));
        let seen_b = fake_node(lb, Arc::new(move |_, _| Some(not_leader(1, &to_a))));
        let timeout = Duration::from_secs(2);
        let client = NativeClient::<kv::Kv>::new(vec![a]).unwrap().timeout(timeout);
        let started = tokio::time::Instant::now();
        let res = tokio::time::timeout(timeout * 3, client.write(&set())).await;
        let took = started.elapsed();
        let asked = seen_a.load(Ordering::SeqCst) + seen_b.load(Ordering::SeqCst);
        let err = res
            .unwrap_or_else(|_| panic!("still looping after {took:?} and {asked} requests"))
            .expect_err("no node leads");
        assert!(matches!(err, Error::NoLeader), "got {err:?}");
        assert!(took <= timeout + Duration::from_millis(500), "took {took:?}");
        assert!(asked <= super::CALL_ATTEMPTS as usize, "{asked} requests");
    }

    /// A write sent, then the connection lost: its outcome is unknown.
    /// Untagged, it is given back at once; tagged, it is retried (the tag
    /// makes the retry safe: raft-core's it test "tagged write retried on
    /// another node applies once" shows it applies once).
    #[tokio::test]
    async fn an_unknown_outcome_is_retried_only_for_a_tagged_write() {
        let ok = || {
            let response = postcard::to_stdvec(&Ok::<Option<String>, String>(None)).unwrap();
            Response::ClientWrite(Ok((7, Applied::Response(response))))
        };
        // The first request is dropped after it arrived; later ones answered.
        let script: Script = Arc::new(move |n, _| (n > 0).then(ok));

        let (l, addr) = listener().await;
        let seen = fake_node(l, script.clone());
        let client = NativeClient::<kv::Kv>::new(vec![addr])
            .unwrap()
            .timeout(Duration::from_secs(2));
        let err = client.write(&set()).await.expect_err("outcome unknown");
        assert!(matches!(err, Error::Indeterminate { .. }), "got {err:?}");
        assert_eq!(seen.load(Ordering::SeqCst), 1, "an untagged write was retried");

        let (l, addr) = listener().await;
        let seen = fake_node(l, script);
        let client = NativeClient::<kv::Kv>::new(vec![addr])
            .unwrap()
            .timeout(Duration::from_secs(2));
        let tag = ClientTag { client_id: 9, seq: 1 };
        let out = client.write_tagged(tag, &set()).await.expect("retried under its tag");
        assert_eq!(out.index, 7);
        assert_eq!(seen.load(Ordering::SeqCst), 2);
    }
}
