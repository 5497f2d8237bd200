//! The listener side of the node-to-node transport.
//!
//! Raft protocol messages of one connection are handled in arrival order
//! (appends must not be reordered); forwarded client requests run
//! concurrently. A frame that is oversized or does not decode closes that
//! connection with a logged error; the node keeps serving everyone else.
//!
//! Every connection is bound to one sender before it is served: the node
//! ids its certificate proves (mTLS), or in plaintext mode the hello's id
//! (unauthenticated, see [`PeerIdentity::Claimed`]). A request that names its sender (vote,
//! pre-vote, append, snapshot chunk, leader transfer, application message)
//! must come over a connection that can speak for that node; otherwise it is
//! answered with an error, logged with both ids, counted, and the connection
//! is closed. A forwarded client write is admitted only if the state
//! machine's [`cairn_state::StateMachine::speaker`] says the sender may say
//! it (a node speaks only for itself; cluster decisions come only from the
//! leader's own coordinator); otherwise it is refused with
//! [`super::protocol::ForwardError::Forbidden`], logged and counted. Read-index requests and
//! membership changes name no node: any member may forward them.
//!
//! Resources: at most `peer.max_connections` connections are served at
//! once (more are closed on arrival); the handshake, each frame and the
//! silence between frames have deadlines (`peer.*_timeout_ms`); frames are
//! read incrementally ([`crate::frame`]).

use std::sync::Arc;

use cairn_state::StateMachine;
use tokio::io::AsyncWriteExt;
use tokio::sync::mpsc;
use tokio::sync::watch;

use openraft::vote::RaftLeaderId;

use super::node::core::Core;
use super::protocol::server_handshake;
use super::protocol::HandshakeError;
use super::protocol::Request;
use super::protocol::RequestFrame;
use super::protocol::Response;
use super::protocol::ResponseFrame;
use super::protocol::PROTOCOL_VERSION;
use super::staging::Staged;
use super::staging::StagingError;
use super::Snapshot;
use super::SnapshotMeta;
use super::Vote;
use crate::frame;
use crate::frame::FrameError;
use crate::transport::Listener;
use crate::transport::PeerIdentity;
use crate::transport::PeerStream;

/// Responses queued for one connection's writer; bounded for back-pressure.
const RESPONSE_QUEUE: usize = 256;
/// Appends of one connection handed to Raft ahead of their answers (the
/// leader keeps at most 32 in flight per follower).
const APPEND_PIPELINE_DEPTH: usize = 64;

/// Accept peers until `shutdown` flips.
///
/// Each accepted connection's handshake (TLS when configured) runs on the
/// connection's own task before it is served, within
/// `peer.handshake_timeout_ms`; at most `peer.max_connections` run at once.
pub(crate) async fn serve<S: StateMachine>(
    mut listener: Box<dyn Listener>,
    core: Arc<Core<S>>,
    mut shutdown: watch::Receiver<bool>,
) {
    let slots = Arc::new(tokio::sync::Semaphore::new(core.peer.max_connections));
    // Warn once per episode of a full table, not once per refused
    // connection: a flood must not become a flood of log lines.
    let mut full = false;
    loop {
        tokio::select! {
            _ = shutdown.changed() => break,
            accepted = listener.accept() => match accepted {
                Ok((handshake, peer)) => {
                    let Ok(slot) = slots.clone().try_acquire_owned() else {
                        core.metrics.peer_refused("connection_limit");
                        if !full {
                            tracing::warn!(
                                peer = %peer,
                                max_connections = core.peer.max_connections,
                                "peer connection limit reached: closing new peer connections until one ends (peer.max_connections)"
                            );
                        } else {
                            tracing::debug!(peer = %peer, "closing peer connection: connection limit");
                        }
                        full = true;
                        drop(handshake);
                        continue;
                    };
                    full = false;
                    let core = core.clone();
                    let shutdown = shutdown.clone();
                    tokio::spawn(async move {
                        let _slot = slot;
                        let within = core.peer_handshake_timeout();
                        match tokio::time::timeout(within, handshake).await {
                            Ok(Ok(accepted)) => {
                                serve_stream(accepted.stream, accepted.identity, core, peer.to_string(), shutdown)
                                    .await
                            }
                            Ok(Err(e)) => tracing::warn!(peer = %peer, error = %e, "refused peer connection"),
                            Err(_) => {
                                core.metrics.peer_refused("handshake_timeout");
                                tracing::warn!(peer = %peer, within_ms = within.as_millis() as u64, "closing peer connection: no transport handshake in time (peer.handshake_timeout_ms)");
                            }
                        }
                    });
                }
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                }
            }
        }
    }
}

struct Incoming {
    vote: Vote,
    meta: SnapshotMeta,
    staged: Staged,
}

/// Serve one peer connection until it closes or misbehaves.
///
/// The connection is closed when the node shuts down, so peers reconnect to
/// whatever serves the address next instead of talking to a stopped node.
pub(crate) async fn serve_stream<S: StateMachine>(
    mut stream: Box<dyn PeerStream>,
    identity: PeerIdentity,
    core: Arc<Core<S>>,
    peer: String,
    mut shutdown: watch::Receiver<bool>,
) {
    let within = core.peer_handshake_timeout();
    let hello = tokio::time::timeout(within, server_handshake(&mut stream, PROTOCOL_VERSION)).await;
    let identity = match hello {
        Ok(Ok(from)) => {
            let bound = identity.bind(from);
            tracing::debug!(peer = %peer, from, identity = %bound, "peer connected");
            bound
        }
        Ok(Err(HandshakeError::Incompatible(reason))) => {
            tracing::error!(peer = %peer, %reason, "refused peer: incompatible protocol");
            return;
        }
        Ok(Err(e @ HandshakeError::BadFrame(_))) => {
            core.metrics.rejected_frames.inc();
            tracing::warn!(peer = %peer, error = %e, "closing peer connection: bad frame");
            return;
        }
        Ok(Err(e)) => {
            tracing::debug!(peer = %peer, error = %e, "peer connection ended before the handshake");
            return;
        }
        Err(_) => {
            core.metrics.peer_refused("handshake_timeout");
            tracing::warn!(peer = %peer, within_ms = within.as_millis() as u64, "closing peer connection: no hello in time (peer.handshake_timeout_ms)");
            return;
        }
    };
    let idle = std::time::Duration::from_millis(core.peer.idle_timeout_ms);
    let frame_within = std::time::Duration::from_millis(core.peer.frame_timeout_ms);
    let (rd, mut wr) = tokio::io::split(stream);
    let mut rd = tokio::io::BufReader::with_capacity(super::network::READ_BUFFER_BYTES, rd);
    let (tx, mut rx) = mpsc::channel::<ResponseFrame>(RESPONSE_QUEUE);
    let max = core.max_frame_bytes;
    let writer = tokio::spawn(async move {
        let mut buf = Vec::with_capacity(16 << 10);
        while let Some(first) = rx.recv().await {
            buf.clear();
            let mut next = Some(first);
            while let Some(resp) = next {
                if let Err(e) = frame::encode_frame(&resp, &mut buf, max) {
                    tracing::warn!(error = %e, "dropping unencodable response");
                }
                next = if buf.len() < (1 << 20) {
                    rx.try_recv().ok()
                } else {
                    None
                };
            }
            if wr.write_all(&buf).await.is_err() {
                break;
            }
        }
    });

    let mut buf = Vec::new();
    let mut incoming: Option<Incoming> = None;
    let mut appends: Option<AppendPipe> = None;
    loop {
        let read = tokio::select! {
            _ = shutdown.changed() => break,
            r = frame::read_frame_timed::<RequestFrame, _>(&mut rd, &mut buf, max, idle, frame_within) => r,
        };
        let req = match read {
            Ok(r) => r,
            Err(FrameError::Closed) => break,
            Err(e @ FrameError::TimedOut { phase, .. }) => {
                core.metrics.peer_refused(if phase == "idle" {
                    "idle_timeout"
                } else {
                    "frame_timeout"
                });
                tracing::info!(peer = %peer, identity = %identity, error = %e, "closing peer connection: timed out (peer.idle_timeout_ms / peer.frame_timeout_ms)");
                break;
            }
            Err(e @ (FrameError::TooLarge { .. } | FrameError::Malformed(_))) => {
                core.metrics.rejected_frames.inc();
                tracing::warn!(peer = %peer, error = %e, "closing peer connection: bad frame");
                break;
            }
            Err(e) => {
                tracing::debug!(peer = %peer, error = %e, "peer connection ended");
                break;
            }
        };
        let id = req.id;
        if let Some((claimed, kind)) = claimed_sender(&req.body) {
            if !identity.may_speak_for(claimed) {
                core.metrics.refused_impersonations.inc();
                core.metrics.peer_refused("impersonation");
                let proven = match &identity {
                    PeerIdentity::Nodes(_) => "the connection's certificate is",
                    _ => "the connection is",
                };
                tracing::warn!(
                    peer = %peer,
                    claimed_node = claimed,
                    certificate = %identity,
                    request = kind,
                    "refused peer request: it claims to come from node {claimed} but {proven} {identity}; closing the connection"
                );
                let body = Response::Error(format!(
                    "refused: {kind} claims to come from node {claimed} but {proven} {identity}"
                ));
                let _ = tx.send(ResponseFrame { id, body }).await;
                break;
            }
        }
        if let Request::Append(rpc) = req.body {
            // Pipelined: the next append is handed to Raft while the last
            // one is still being fsynced, so a follower's fsyncs group
            // across appends (one per group-commit round, not one per RPC).
            let rpc = match appends.as_ref() {
                Some(pipe) => pipe.submit(id, rpc).await,
                None => Err(rpc),
            };
            if let Err(rpc) = rpc {
                // No pipe yet, or it ended after an error: a fresh one.
                let pipe = AppendPipe::start(&core, tx.clone());
                if pipe.submit(id, rpc).await.is_err() {
                    let _ = tx
                        .send(ResponseFrame {
                            id,
                            body: Response::Error("raft core stopped".into()),
                        })
                        .await;
                }
                appends = Some(pipe);
            }
            continue;
        }
        // Any other Raft message waits until the appends before it on this
        // connection are answered: the order the leader sent them in holds.
        if let Some(pipe) = &appends {
            pipe.drained().await;
        }
        let body = match req.body {
            // Handled (pipelined) above.
            Request::Append(_) => continue,
            Request::Vote(rpc) => match core.raft.vote(rpc).await {
                Ok(r) => Response::Vote(r),
                Err(e) => Response::Error(e.to_string()),
            },
            Request::PreVote(rpc) => match core.raft.pre_vote(rpc).await {
                Ok(r) => Response::Vote(r),
                Err(e) => Response::Error(e.to_string()),
            },
            Request::TransferLeader(rpc) => match core.raft.handle_transfer_leader(rpc).await {
                Ok(r) => Response::TransferLeader(r),
                Err(e) => Response::Error(e.to_string()),
            },
            Request::SnapshotChunk {
                vote,
                meta,
                offset,
                data,
                done,
            } => match receive_chunk(&core, &mut incoming, vote, meta, offset, data, done).await {
                Ok(r) => Response::Snapshot(r),
                Err(e) => {
                    tracing::warn!(peer = %peer, error = %e, "snapshot chunk refused");
                    Response::Error(e)
                }
            },
            forwarded => {
                let core = core.clone();
                let tx = tx.clone();
                let identity = identity.clone();
                tokio::spawn(async move {
                    let body = core.handle_forwarded(forwarded, &identity).await;
                    let _ = tx.send(ResponseFrame { id, body }).await;
                });
                continue;
            }
        };
        if tx.send(ResponseFrame { id, body }).await.is_err() {
            break;
        }
    }
    // An unfinished transfer's file goes with it (`Staged` removes it).
    drop(incoming);
    // The append pipe's task holds a sender of the writer's queue: end it
    // first, or the writer (and this task, and the node's storage it keeps
    // open through `core`) would wait for each other for ever.
    drop(appends);
    drop(tx);
    let _ = writer.await;
}

/// The node a request says it comes from, and the request's kind (for the
/// log line); `None` for requests that name no sender.
fn claimed_sender(req: &Request) -> Option<(u64, &'static str)> {
    match req {
        Request::Append(rpc) => Some((*rpc.vote.leader_id().node_id(), "append")),
        Request::Vote(rpc) => Some((*rpc.vote.leader_id().node_id(), "vote")),
        Request::PreVote(rpc) => Some((*rpc.vote.leader_id().node_id(), "pre-vote")),
        Request::TransferLeader(rpc) => Some((*rpc.from_leader().leader_id().node_id(), "transfer-leader")),
        Request::SnapshotChunk { vote, .. } => Some((*vote.leader_id().node_id(), "snapshot chunk")),
        Request::App { from, .. } => Some((*from, "application message")),
        Request::Traced { inner, .. } => claimed_sender(inner),
        Request::ClientWrite(_) | Request::ReadIndex | Request::Admin(_) => None,
    }
}

/// Write a chunk to a temporary file; install the snapshot on the last one.
/// Chunks go to disk as they arrive, so a large snapshot is never held twice
/// in memory while it streams in.
async fn receive_chunk<S: StateMachine>(
    core: &Core<S>,
    incoming: &mut Option<Incoming>,
    vote: Vote,
    meta: SnapshotMeta,
    offset: u64,
    data: Vec<u8>,
    done: bool,
) -> Result<Option<Vote>, String> {
    if offset == 0 {
        // A new transfer replaces this connection's unfinished one.
        *incoming = None;
        let dir = core.data_dir.join(super::staging::SNAPSHOT_STAGING_DIR);
        let staged = Staged::begin(&dir, core.snapshot_staging.clone())
            .await
            .map_err(|e| e.to_string())?;
        *incoming = Some(Incoming {
            vote,
            meta: meta.clone(),
            staged,
        });
    }
    let Some(inc) = incoming.as_mut() else {
        return Err(format!("snapshot chunk at offset {offset} without a start"));
    };
    if inc.staged.received() != offset || inc.meta != meta || inc.vote != vote {
        let expected = inc.staged.received();
        *incoming = None;
        return Err(format!(
            "snapshot chunk out of order: expected offset {expected}, got {offset}"
        ));
    }
    if let Err(e) = inc.staged.append(&data).await {
        // Over the node's budget (or a write failed): the transfer ends
        // here and its bytes are released; the leader starts again later.
        *incoming = None;
        if matches!(e, StagingError::OverBudget { .. }) {
            core.metrics.peer_refused("snapshot_over_budget");
        }
        return Err(e.to_string());
    }
    if !done {
        return Ok(None);
    }
    let Some(inc) = incoming.take() else {
        return Err("snapshot state lost".into());
    };
    let bytes = inc.staged.finish().await.map_err(|e| e.to_string())?;
    let snapshot = Snapshot {
        meta: inc.meta,
        snapshot: bytes.into(),
    };
    let resp = core
        .raft
        .install_full_snapshot(inc.vote, snapshot)
        .await
        .map_err(|e| e.to_string())?;
    Ok(Some(resp.vote))
}

/// One connection's pipeline of AppendEntries into Raft (openraft's
/// `stream_append`): requests go to the Raft core in arrival order without
/// waiting for the previous one's fsync, responses come back in the same
/// order and are matched to request ids first in, first out.
///
/// openraft ends the stream at the first refused append (conflict, higher
/// vote); the requests queued behind it are then answered with an error
/// (the leader retries them, as after any failed RPC) and the next append
/// opens a new pipe.
struct AppendPipe {
    requests: mpsc::Sender<super::AppendEntriesRequest<super::TypeConfig>>,
    ids: mpsc::UnboundedSender<u64>,
    /// Appends submitted and not yet answered.
    outstanding: Arc<(std::sync::atomic::AtomicUsize, tokio::sync::Notify)>,
    task: crate::sync::AbortOnDrop,
}

impl AppendPipe {
    fn start<S: StateMachine>(core: &Arc<Core<S>>, responses: mpsc::Sender<ResponseFrame>) -> Self {
        use futures::StreamExt;
        use std::sync::atomic::Ordering;
        let (requests, requests_rx) = mpsc::channel(APPEND_PIPELINE_DEPTH);
        let (ids, mut ids_rx) = mpsc::unbounded_channel::<u64>();
        let outstanding = Arc::new((std::sync::atomic::AtomicUsize::new(0), tokio::sync::Notify::new()));
        let input = futures::stream::unfold(requests_rx, |mut rx| async move { rx.recv().await.map(|r| (r, rx)) });
        let output = core.raft.stream_append(input);
        let count = outstanding.clone();
        let contact = core.leader_contact.clone();
        let answered = move || {
            if count.0.fetch_sub(1, Ordering::AcqRel) == 1 {
                count.1.notify_waiters();
            }
        };
        let task = tokio::spawn(async move {
            let mut output = std::pin::pin!(output);
            while let Some(id) = ids_rx.recv().await {
                let (body, ended) = match output.next().await {
                    Some(Ok(r)) => {
                        let ended = r.is_err();
                        // Accepted (or a log conflict, which is the leader of
                        // this term talking too): the leader is in touch.
                        if !matches!(r, Err(openraft::raft::StreamAppendError::HigherVote(_))) {
                            contact.stamp();
                        }
                        (Response::Append(r.into()), ended)
                    }
                    Some(Err(fatal)) => (Response::Error(fatal.to_string()), true),
                    None => (Response::Error("append pipeline ended".into()), true),
                };
                let _ = responses.send(ResponseFrame { id, body }).await;
                answered();
                if ended {
                    break;
                }
            }
            // Whatever is queued behind the end is refused; later appends
            // find the pipe closed and open a new one.
            ids_rx.close();
            while let Some(id) = ids_rx.recv().await {
                let body =
                    Response::Error("append refused: an earlier append on this connection failed; resend".into());
                let _ = responses.send(ResponseFrame { id, body }).await;
                answered();
            }
        });
        Self {
            requests,
            ids,
            outstanding,
            task: crate::sync::AbortOnDrop::new(task),
        }
    }

    /// Queue an append; gives it back if this pipe has ended.
    async fn submit(
        &self,
        id: u64,
        rpc: super::AppendEntriesRequest<super::TypeConfig>,
    ) -> Result<(), super::AppendEntriesRequest<super::TypeConfig>> {
        use std::sync::atomic::Ordering;
        self.outstanding.0.fetch_add(1, Ordering::AcqRel);
        // The id first: the answering task pairs ids with results in order.
        if self.ids.send(id).is_err() {
            self.outstanding.0.fetch_sub(1, Ordering::AcqRel);
            return Err(rpc);
        }
        match self.requests.send(rpc).await {
            Ok(()) => Ok(()),
            // The id is queued and will be answered with an error.
            Err(mpsc::error::SendError(rpc)) => {
                drop(rpc);
                Ok(())
            }
        }
    }

    /// Wait until every append submitted so far is answered.
    async fn drained(&self) {
        use std::sync::atomic::Ordering;
        loop {
            let notified = self.outstanding.1.notified();
            if self.outstanding.0.load(Ordering::Acquire) == 0 || self.task.is_finished() {
                return;
            }
            notified.await;
        }
    }
}
