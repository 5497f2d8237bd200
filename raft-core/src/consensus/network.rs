//! The client side of the node-to-node transport.
//!
//! One [`Connection`] is a persistent stream carrying many requests at once:
//! a writer task batches queued frames into few syscalls, a reader task
//! matches responses to waiting callers by id. A [`PeerClient`] owns one
//! connection to one peer, re-dials with exponential backoff and jitter when
//! it breaks, and never reuses a connection that failed (a peer that
//! restarted gets a fresh one).

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::AtomicBool;
use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::sync::Mutex;
use std::time::Duration;

use futures::StreamExt;
use openraft::errors::NetworkError;
use openraft::errors::RPCError;
use openraft::errors::ReplicationClosed;
use openraft::errors::StreamingError;
use openraft::errors::Unreachable;
use openraft::network::v2::RaftNetworkV2;
use openraft::network::RPCOption;
use openraft::network::RaftNetworkFactory;
use openraft::raft::SnapshotResponse;
use openraft::raft::StreamAppendResult;
use openraft::raft::TransferLeaderResponse;
use openraft::OptionalSend;
use rand::Rng;
use tokio::io::AsyncWriteExt;
use tokio::sync::mpsc;
use tokio::sync::oneshot;
use tokio::time::Instant;

use super::protocol::client_handshake;
use super::protocol::HandshakeError;
use super::protocol::Request;
use super::protocol::RequestFrame;
use super::protocol::Response;
use super::protocol::ResponseFrame;
use super::protocol::PROTOCOL_VERSION;
use super::AppendEntriesRequest;
use super::AppendEntriesResponse;
use super::Member;
use super::NodeId;
use super::Snapshot;
use super::SnapshotData;
use super::TransferLeaderRequest;
use super::TypeConfig;
use super::Vote;
use super::VoteRequest;
use super::VoteResponse;
use crate::frame;
use crate::transport::Dialer;
use crate::transport::PeerStream;

/// Requests queued for one connection's writer. Bounded so a peer that stops
/// reading pushes back on the caller instead of growing memory.
const OUTBOX_CAPACITY: usize = 256;
/// Read buffer of one connection (either side).
pub(crate) const READ_BUFFER_BYTES: usize = 16 << 10;
/// Appends in flight on one pipelined stream: enough to cover a LAN round
/// trip at full rate, small enough to bound memory per follower.
const PIPELINE_DEPTH: usize = 32;
/// Snapshot chunk size: small enough for an SD-card Pi's memory, large
/// enough that per-frame overhead is negligible.
pub(crate) const SNAPSHOT_CHUNK_BYTES: usize = 1 << 20;

/// Why a call to a peer failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum CallError {
    /// Could not connect, or backing off after a failure.
    #[error("peer {target} unreachable: {reason}")]
    Unreachable { target: NodeId, reason: String },
    /// Connected, but the call failed mid-way (outcome unknown).
    #[error("peer {target}: {reason}")]
    Network { target: NodeId, reason: String },
    /// No response within the deadline (outcome unknown).
    #[error("peer {target} did not answer within {after:?}")]
    Timeout { target: NodeId, after: Duration },
}

type Pending = Arc<Mutex<HashMap<u64, oneshot::Sender<Response>>>>;

/// A live multiplexed connection.
pub(crate) struct Connection {
    outbox: mpsc::Sender<RequestFrame>,
    pending: Pending,
    next_id: AtomicU64,
    closed: Arc<AtomicBool>,
    /// Response frames read so far: a call that times out with this
    /// unchanged heard nothing at all over its whole deadline.
    received: Arc<AtomicU64>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Drop for Connection {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

impl Connection {
    fn start(stream: Box<dyn PeerStream>, target: NodeId, max_frame_bytes: usize) -> Self {
        let (rd, mut wr) = tokio::io::split(stream);
        // Buffered: a frame is a length and a body, two reads unbuffered;
        // buffered, a burst of frames costs one or two `recv`s.
        let mut rd = tokio::io::BufReader::with_capacity(READ_BUFFER_BYTES, rd);
        let (outbox, mut rx) = mpsc::channel::<RequestFrame>(OUTBOX_CAPACITY);
        let pending: Pending = Arc::default();
        let closed = Arc::new(AtomicBool::new(false));

        let w_closed = closed.clone();
        let w_pending = pending.clone();
        let writer = tokio::spawn(async move {
            let mut buf = Vec::with_capacity(64 << 10);
            while let Some(first) = rx.recv().await {
                buf.clear();
                let mut next = Some(first);
                // Coalesce whatever else is queued into one write.
                while let Some(req) = next {
                    if let Err(e) = frame::encode_frame(&req, &mut buf, max_frame_bytes) {
                        tracing::warn!(peer = target, error = %e, "dropping unencodable request");
                        // Fail the caller now instead of at its timeout.
                        crate::sync::lock(&w_pending).remove(&req.id);
                    }
                    next = if buf.len() < (1 << 20) {
                        rx.try_recv().ok()
                    } else {
                        None
                    };
                }
                if let Err(e) = wr.write_all(&buf).await {
                    tracing::debug!(peer = target, error = %e, "peer connection write failed");
                    break;
                }
            }
            w_closed.store(true, Ordering::Release);
        });

        let r_pending = pending.clone();
        let r_closed = closed.clone();
        let received = Arc::new(AtomicU64::new(0));
        let r_received = received.clone();
        let reader = tokio::spawn(async move {
            let mut buf = Vec::new();
            loop {
                match frame::read_frame::<ResponseFrame, _>(&mut rd, &mut buf, max_frame_bytes).await {
                    Ok(resp) => {
                        r_received.fetch_add(1, Ordering::Relaxed);
                        let waiter = crate::sync::lock(&r_pending).remove(&resp.id);
                        if let Some(tx) = waiter {
                            let _ = tx.send(resp.body);
                        }
                    }
                    Err(e) => {
                        tracing::debug!(peer = target, error = %e, "peer connection read ended");
                        break;
                    }
                }
            }
            r_closed.store(true, Ordering::Release);
            // Dropping the senders wakes every waiter with an error.
            crate::sync::lock(&r_pending).clear();
        });

        Self {
            outbox,
            pending,
            next_id: AtomicU64::new(1),
            closed,
            received,
            tasks: vec![writer, reader],
        }
    }

    fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire) || self.outbox.is_closed()
    }

    /// Response frames read on this connection so far.
    pub(crate) fn frames_received(&self) -> u64 {
        self.received.load(Ordering::Relaxed)
    }

    /// Retire a connection that timed out without hearing anything since
    /// `heard` (its [`Connection::frames_received`] when the call was sent),
    /// so the next call re-dials. Returns whether it did.
    ///
    /// A silent connection is black-holed: its peer vanished without a
    /// reset, or a partition dropped its segments. TCP would keep
    /// retransmitting with exponential backoff (minutes, before it gives
    /// up), and every call on it would time out although a fresh connection
    /// works the moment the link heals (found by the simulation tier,
    /// docs/CHAOS.md F7). A slow but live peer answers something within an
    /// RPC deadline, so it keeps its connection.
    pub(crate) fn retire_if_silent(&self, heard: u64) -> bool {
        if self.frames_received() != heard {
            return false;
        }
        self.closed.store(true, Ordering::Release);
        true
    }

    /// Queue a request; the receiver resolves with its response, or errors
    /// if the connection dies first.
    async fn send(&self, body: Request) -> Result<oneshot::Receiver<Response>, String> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        crate::sync::lock(&self.pending).insert(id, tx);
        if self.outbox.send(RequestFrame { id, body }).await.is_err() {
            crate::sync::lock(&self.pending).remove(&id);
            return Err("connection closed".into());
        }
        Ok(rx)
    }
}

/// Settings shared by all clients of one node.
#[derive(Clone)]
pub(crate) struct NetConfig {
    pub(crate) self_id: NodeId,
    pub(crate) dialer: Arc<dyn Dialer>,
    pub(crate) max_frame_bytes: usize,
    pub(crate) connect_timeout: Duration,
    pub(crate) backoff_min: Duration,
    pub(crate) backoff_max: Duration,
    /// Lower bound of every RPC deadline. openraft derives deadlines from
    /// the heartbeat interval (100 ms), which a Wi-Fi link with a 100 ms
    /// one-way delay can never meet (jepsen F3): nothing would commit.
    pub(crate) rpc_timeout_min: Duration,
}

/// One peer, one connection, re-dialled with backoff.
pub(crate) struct PeerClient {
    target: NodeId,
    addr: String,
    cfg: NetConfig,
    conn: Option<Arc<Connection>>,
    failures: u32,
    retry_at: Option<Instant>,
}

impl PeerClient {
    pub(crate) fn new(target: NodeId, addr: String, cfg: NetConfig) -> Self {
        Self {
            target,
            addr,
            cfg,
            conn: None,
            failures: 0,
            retry_at: None,
        }
    }

    fn ttl(&self, option: &RPCOption) -> Duration {
        option.hard_ttl().max(self.cfg.rpc_timeout_min)
    }

    fn unreachable(&self, reason: impl ToString) -> CallError {
        CallError::Unreachable {
            target: self.target,
            reason: reason.to_string(),
        }
    }

    fn note_failure(&mut self) {
        self.conn = None;
        self.failures = self.failures.saturating_add(1);
        // Exponential backoff with full jitter (AWS architecture blog):
        // spreads reconnect storms after a peer restarts.
        let exp = self.cfg.backoff_min.saturating_mul(1u32 << self.failures.min(10));
        let cap = exp.min(self.cfg.backoff_max);
        let jittered = cap.mul_f64(rand::rng().random_range(0.5..=1.0));
        self.retry_at = Some(Instant::now() + jittered);
    }

    async fn connection(&mut self) -> Result<Arc<Connection>, CallError> {
        if self.target == self.cfg.self_id {
            // A node never dials itself: that would be a bug in membership
            // handling, and would deadlock some paths.
            return Err(self.unreachable("refusing to dial self"));
        }
        if let Some(c) = &self.conn {
            if !c.is_closed() {
                return Ok(c.clone());
            }
            tracing::debug!(peer = self.target, "dropping dead connection");
            self.note_failure();
        }
        if let Some(at) = self.retry_at {
            let now = Instant::now();
            if now < at {
                // Wait out (a bounded slice of) the backoff here, so a caller
                // that retries at once cannot spin: at most ~10 calls/s.
                tokio::time::sleep((at - now).min(Duration::from_millis(100))).await;
                if Instant::now() < at {
                    return Err(self.unreachable("backing off after a failed connection"));
                }
            }
        }
        let dial = self.cfg.dialer.dial(self.target, &self.addr);
        let self_id = self.cfg.self_id;
        // Connect and handshake within one connect timeout.
        let connect = async move {
            let mut stream = dial.await.map_err(|e| HandshakeError::Io(e.to_string()))?;
            client_handshake(&mut stream, self_id, PROTOCOL_VERSION).await?;
            Ok::<_, HandshakeError>(stream)
        };
        match tokio::time::timeout(self.cfg.connect_timeout, connect).await {
            Ok(Err(HandshakeError::Incompatible(reason))) => {
                self.note_failure();
                // An operator problem (mixed releases): say it loudly.
                tracing::error!(peer = self.target, addr = %self.addr, %reason, "peer refused: incompatible protocol");
                Err(self.unreachable(format!("incompatible peer at {}: {reason}", self.addr)))
            }
            Ok(Ok(stream)) => {
                let c = Arc::new(Connection::start(stream, self.target, self.cfg.max_frame_bytes));
                self.conn = Some(c.clone());
                self.failures = 0;
                self.retry_at = None;
                tracing::debug!(peer = self.target, addr = %self.addr, "connected");
                Ok(c)
            }
            Ok(Err(e)) => {
                self.note_failure();
                Err(self.unreachable(format!("connect {}: {e}", self.addr)))
            }
            Err(_) => {
                self.note_failure();
                Err(self.unreachable(format!("connect {} timed out", self.addr)))
            }
        }
    }

    /// Point the client at a new address (a member re-added elsewhere).
    pub(crate) fn retarget(&mut self, addr: &str) {
        if self.addr != addr {
            self.addr = addr.to_string();
            self.conn = None;
            self.retry_at = None;
        }
    }

    /// The live connection, dialling if needed, for callers that share it.
    pub(crate) async fn shared_connection(&mut self) -> Result<Arc<Connection>, CallError> {
        self.connection().await
    }

    /// Forget `conn` if it is still the current one (it failed).
    pub(crate) fn mark_failed(&mut self, conn: &Arc<Connection>) {
        if self.conn.as_ref().is_some_and(|c| Arc::ptr_eq(c, conn)) {
            self.note_failure();
        }
    }

    /// Send one request on `conn` and wait for its response.
    pub(crate) async fn call_on(
        conn: &Connection,
        target: NodeId,
        body: Request,
        timeout: Duration,
    ) -> Result<Response, CallError> {
        // Not queued on the connection: definitely not delivered.
        let heard = conn.frames_received();
        let rx = conn
            .send(body)
            .await
            .map_err(|reason| CallError::Unreachable { target, reason })?;
        let res = tokio::time::timeout(timeout, rx).await;
        if res.is_err() && conn.retire_if_silent(heard) {
            tracing::debug!(peer = target, "retiring a connection that was silent for {timeout:?}");
        }
        match res {
            Ok(Ok(Response::Error(message))) => Err(CallError::Network {
                target,
                reason: message,
            }),
            Ok(Ok(resp)) => Ok(resp),
            Ok(Err(_)) => Err(CallError::Network {
                target,
                reason: "connection lost before the response".into(),
            }),
            Err(_) => Err(CallError::Timeout { target, after: timeout }),
        }
    }

    /// Send one request and wait for its response.
    pub(crate) async fn call(&mut self, body: Request, timeout: Duration) -> Result<Response, CallError> {
        let conn = self.connection().await?;
        let res = Self::call_on(&conn, self.target, body, timeout).await;
        // Any transport-level failure (including a peer that answers "I am
        // stopping") retires the connection; the next call re-dials.
        if matches!(&res, Err(CallError::Network { .. })) {
            self.mark_failed(&conn);
        }
        res
    }
}

fn rpc_err(e: CallError) -> RPCError<TypeConfig> {
    match e {
        CallError::Unreachable { .. } => RPCError::Unreachable(Unreachable::new(&e)),
        _ => RPCError::Network(NetworkError::new(&e)),
    }
}

fn unexpected(what: &str, got: &Response) -> RPCError<TypeConfig> {
    RPCError::Network(NetworkError::from_string(format!(
        "expected {what} response, got {got:?}"
    )))
}

/// Creates the per-peer clients openraft asks for.
#[derive(Clone)]
pub(crate) struct NetworkFactory {
    pub(crate) cfg: NetConfig,
}

impl RaftNetworkFactory<TypeConfig> for NetworkFactory {
    type Network = PeerClient;

    async fn new_client(&mut self, target: NodeId, node: &Member) -> PeerClient {
        PeerClient::new(target, node.raft_addr.clone(), self.cfg.clone())
    }
}

impl RaftNetworkV2<TypeConfig> for PeerClient {
    type SnapshotData = SnapshotData;

    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<TypeConfig>, RPCError<TypeConfig>> {
        match self
            .call(Request::Append(rpc), self.ttl(&option))
            .await
            .map_err(rpc_err)?
        {
            Response::Append(r) => Ok(r),
            other => Err(unexpected("append", &other)),
        }
    }

    fn stream_append<'s, St>(
        &'s mut self,
        input: St,
        option: RPCOption,
    ) -> openraft::base::BoxFuture<
        's,
        Result<
            openraft::base::BoxStream<'s, Result<StreamAppendResult<TypeConfig>, RPCError<TypeConfig>>>,
            RPCError<TypeConfig>,
        >,
    >
    where
        St: futures::Stream<Item = AppendEntriesRequest<TypeConfig>> + OptionalSend + Unpin + 'static,
    {
        Box::pin(async move {
            let conn = self.connection().await.map_err(rpc_err)?;
            let target = self.target;
            let ttl = self.ttl(&option);
            // Pipelining: a feeder task sends each request as soon as openraft
            // produces it; the output stream awaits responses in order.
            let (inflight_tx, inflight_rx) = mpsc::channel(PIPELINE_DEPTH);
            let feeder_conn = conn.clone();
            let feeder = tokio::spawn(async move {
                let mut input = input;
                while let Some(req) = input.next().await {
                    let prev = req.prev_log_id;
                    let last = req.entries.last().map(|e| e.log_id).or(prev);
                    let heard = feeder_conn.frames_received();
                    let sent = feeder_conn.send(Request::Append(req)).await;
                    let stop = sent.is_err();
                    if inflight_tx.send((prev, last, heard, sent)).await.is_err() || stop {
                        break;
                    }
                }
            });
            let out = futures::stream::unfold(
                (inflight_rx, Some(crate::sync::AbortOnDrop::new(feeder)), false, conn),
                move |(mut rx, feeder, done, conn)| async move {
                    if done {
                        return None;
                    }
                    let (prev, last, heard, sent) = rx.recv().await?;
                    let result = match sent {
                        Err(reason) => Err(rpc_err(CallError::Network { target, reason })),
                        Ok(resp_rx) => match tokio::time::timeout(ttl, resp_rx).await {
                            Err(_) => {
                                if conn.retire_if_silent(heard) {
                                    tracing::debug!(peer = target, "retiring a connection that was silent for {ttl:?}");
                                }
                                Err(rpc_err(CallError::Timeout { target, after: ttl }))
                            }
                            Ok(Err(_)) => Err(rpc_err(CallError::Network {
                                target,
                                reason: "connection lost before the response".into(),
                            })),
                            Ok(Ok(Response::Append(resp))) => Ok(resp),
                            Ok(Ok(other)) => Err(unexpected("append", &other)),
                        },
                    };
                    match result {
                        Err(e) => Some((Err(e), (rx, feeder, true, conn))),
                        Ok(resp) => {
                            let partial_mismatch = matches!(
                                &resp,
                                AppendEntriesResponse::PartialSuccess(p) if *p != last
                            );
                            let r = resp.into_stream_result(prev, last);
                            let stop = r.is_err() || partial_mismatch;
                            Some((Ok(r), (rx, feeder, stop, conn)))
                        }
                    }
                },
            );
            let out: openraft::base::BoxStream<'s, _> = Box::pin(out);
            Ok(out)
        })
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<VoteResponse<TypeConfig>, RPCError<TypeConfig>> {
        match self
            .call(Request::Vote(rpc), self.ttl(&option))
            .await
            .map_err(rpc_err)?
        {
            Response::Vote(r) => Ok(r),
            other => Err(unexpected("vote", &other)),
        }
    }

    /// A real pre-vote: the peer answers from its own log and leader lease,
    /// so a node that was partitioned away cannot win one and so never bumps
    /// its term to depose a healthy leader when it comes back.
    async fn pre_vote(
        &mut self,
        rpc: VoteRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<VoteResponse<TypeConfig>, RPCError<TypeConfig>> {
        match self
            .call(Request::PreVote(rpc), self.ttl(&option))
            .await
            .map_err(rpc_err)?
        {
            Response::Vote(r) => Ok(r),
            other => Err(unexpected("pre-vote", &other)),
        }
    }

    async fn full_snapshot(
        &mut self,
        vote: Vote,
        snapshot: Snapshot,
        cancel: impl Future<Output = ReplicationClosed> + OptionalSend + 'static,
        option: RPCOption,
    ) -> Result<SnapshotResponse<TypeConfig>, StreamingError<TypeConfig>> {
        let send = async {
            let data = snapshot.snapshot;
            let total = data.len();
            let mut offset = 0usize;
            loop {
                let end = (offset + SNAPSHOT_CHUNK_BYTES).min(total);
                let done = end == total;
                let req = Request::SnapshotChunk {
                    vote,
                    meta: snapshot.meta.clone(),
                    offset: offset as u64,
                    data: data[offset..end].to_vec(),
                    done,
                };
                let resp = self.call(req, self.ttl(&option)).await.map_err(|e| match e {
                    CallError::Unreachable { .. } => StreamingError::Unreachable(Unreachable::new(&e)),
                    _ => StreamingError::Network(NetworkError::new(&e)),
                })?;
                match resp {
                    Response::Snapshot(Some(vote)) if done => return Ok(SnapshotResponse::new(vote)),
                    Response::Snapshot(_) if !done => {}
                    other => {
                        return Err(StreamingError::Network(NetworkError::from_string(format!(
                            "unexpected snapshot response {other:?}"
                        ))))
                    }
                }
                offset = end;
            }
        };
        tokio::select! {
            closed = cancel => Err(StreamingError::Closed(closed)),
            r = send => r,
        }
    }

    async fn transfer_leader(
        &mut self,
        req: TransferLeaderRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<TransferLeaderResponse<TypeConfig>, RPCError<TypeConfig>> {
        match self
            .call(Request::TransferLeader(req), self.ttl(&option))
            .await
            .map_err(rpc_err)?
        {
            Response::TransferLeader(r) => Ok(r),
            other => Err(unexpected("transfer-leader", &other)),
        }
    }
}
