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
use super::protocol::ForwardError;
use super::protocol::Request;
use super::protocol::Response;
use super::Proposal;
use crate::config::RaftTimings;
use crate::error::Error;
use crate::frame::DEFAULT_MAX_FRAME_BYTES;
use crate::transport::Dialer;
use crate::transport::TcpDialer;

/// The id a client gives in its handshake: no node has it (ids start at 1).
const CLIENT_ID: u64 = 0;

/// A client of a cluster's peer port, for the state machine `S`.
///
/// Cheap to share (`Arc`) between tasks: concurrent calls are pipelined on
/// one connection per node.
pub struct NativeClient<S: StateMachine> {
    endpoints: Vec<String>,
    net: NetConfig,
    timeout: Duration,
    retry_pause: Duration,
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
        if endpoints.is_empty() {
            return Err(Error::Config {
                field: "endpoints",
                reason: "at least one node's peer address is needed".into(),
            });
        }
        let t = RaftTimings::default();
        Ok(Self {
            net: NetConfig {
                self_id: CLIENT_ID,
                dialer,
                max_frame_bytes: DEFAULT_MAX_FRAME_BYTES,
                connect_timeout: Duration::from_millis(t.connect_timeout_ms),
                backoff_min: Duration::from_millis(t.reconnect_backoff_ms_min),
                backoff_max: Duration::from_millis(t.reconnect_backoff_ms_max),
                rpc_timeout_min: Duration::from_millis(t.election_timeout_ms_min),
            },
            endpoints,
            timeout: Duration::from_millis(t.write_timeout_ms),
            // A heartbeat: an election is over in a few of them, and a
            // dead node costs a round through the endpoints at this pace.
            retry_pause: Duration::from_millis(t.heartbeat_interval_ms),
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
        self.call(|| Request::ReadIndex, Response::into_read_index).await
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
            .call(|| Request::ClientWrite(proposal.clone()), Response::into_client_write)
            .await?;
        decode_applied(index, applied)
    }

    /// The address to try next: the leader if one is known, else the next
    /// endpoint in turn.
    fn target(&self) -> String {
        if let Some(l) = self.leader.lock().unwrap_or_else(|p| p.into_inner()).clone() {
            return l;
        }
        let i = self.next.fetch_add(1, Ordering::Relaxed);
        self.endpoints[i % self.endpoints.len()].clone()
    }

    fn set_leader(&self, addr: Option<String>) {
        *self.leader.lock().unwrap_or_else(|p| p.into_inner()) = addr;
    }

    async fn call<T>(
        &self,
        request: impl Fn() -> Request,
        unpack: impl Fn(Response) -> Option<Result<T, ForwardError>>,
    ) -> Result<T, Error> {
        let mut last = Error::NoLeader;
        let deadline = tokio::time::Instant::now() + self.timeout;
        let mut first = true;
        loop {
            if !first {
                if tokio::time::Instant::now() >= deadline {
                    return Err(last);
                }
                // Not hammering a cluster that is electing, or nodes that
                // are down; a leader just named is tried at once.
                tokio::time::sleep(self.retry_pause).await;
            }
            first = false;
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
                    last = unreachable(&addr, e);
                    continue;
                }
            };
            let res = PeerClient::call_on(&conn, u64::MAX, request(), self.timeout).await;
            let resp = match res {
                Ok(r) => r,
                Err(CallError::Unreachable { reason, .. }) => {
                    self.set_leader(None);
                    last = Error::Unreachable { addr, reason };
                    continue;
                }
                Err(CallError::Timeout { after, .. }) => {
                    return Err(Error::Timeout {
                        what: "native client call",
                        after_ms: after.as_millis() as u64,
                    })
                }
                // Sent, then the connection broke: it may have been applied.
                Err(CallError::Network { reason, .. }) => {
                    if let Some(p) = self.peers.lock().await.get_mut(&addr) {
                        p.mark_failed(&conn);
                    }
                    self.set_leader(None);
                    return Err(Error::Indeterminate {
                        reason: format!("sent to {addr}, then {reason}"),
                    });
                }
            };
            match unpack(resp) {
                Some(Ok(v)) => return Ok(v),
                Some(Err(ForwardError::NotLeader {
                    leader: Some((_, member)),
                })) => {
                    // Straight to the leader it named (one hop, no pause).
                    self.set_leader(Some(member.raft_addr));
                    first = true;
                    continue;
                }
                Some(Err(ForwardError::NotLeader { leader: None })) => {
                    self.set_leader(None);
                    last = Error::NoLeader;
                }
                Some(Err(ForwardError::Unavailable { message })) => {
                    last = Error::Unreachable { addr, reason: message };
                }
                Some(Err(ForwardError::Indeterminate { message })) => {
                    return Err(Error::Indeterminate { reason: message })
                }
                Some(Err(ForwardError::Failed { message })) => {
                    return Err(super::node::classify(message, self.timeout))
                }
                None => {
                    return Err(Error::Unreachable {
                        addr,
                        reason: "unexpected response (not a cairn node of this version?)".into(),
                    })
                }
            }
        }
    }
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
