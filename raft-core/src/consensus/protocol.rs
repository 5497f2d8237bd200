//! Messages of the node-to-node transport.
//!
//! A connection opens with a handshake: the dialer sends a [`Hello`] with
//! the protocol version it speaks, the server answers [`HelloReply`] and
//! closes the connection if the versions differ, so two releases that
//! cannot understand each other fail at connect time with an error naming
//! both versions, instead of with undecodable frames later.
//!
//! After it, every frame a dialer sends is a [`RequestFrame`]; the server
//! answers each with a [`ResponseFrame`] carrying the same id. Ids let one
//! connection carry many requests in flight (pipelining); the server
//! answers Raft protocol messages of one connection in order.

use serde::Deserialize;
use serde::Serialize;

use super::AppendEntriesRequest;
use super::AppendEntriesResponse;
use super::Applied;
use super::Member;
use super::NodeId;
use super::Proposal;
use super::SnapshotMeta;
use super::TransferLeaderRequest;
use super::Vote;
use super::VoteRequest;
use super::VoteResponse;

/// Version of the peer protocol: the frames, [`Request`], [`Response`] and
/// the openraft messages inside them. Bump it on any change of their
/// encoding (postcard is positional: a new variant or field is a change).
///
/// v2: [`ForwardError`] carries structured variants (`EntryTooLarge`,
/// `Forbidden`, `Membership`; `Unavailable` names its node) instead of
/// prefixed text in `Failed`.
pub(crate) const PROTOCOL_VERSION: u32 = 2;

/// First bytes of every [`Hello`], so a foreign program (or an old cairn
/// without the handshake) is told apart from a cairn of another version.
pub(crate) const HELLO_MAGIC: [u8; 8] = *b"cairn-rp";

/// The dialer's first frame.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct Hello {
    pub(crate) magic: [u8; 8],
    pub(crate) version: u32,
    /// The dialing node, for the server's logs.
    pub(crate) from: NodeId,
}

/// The server's answer to a [`Hello`].
#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum HelloReply {
    /// Same version: requests may follow.
    Accepted { version: u32 },
    /// The connection is closed after this.
    Refused { version: u32, reason: String },
}

/// A request with its id.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct RequestFrame {
    pub(crate) id: u64,
    pub(crate) body: Request,
}

/// A response with the id of the request it answers.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct ResponseFrame {
    pub(crate) id: u64,
    pub(crate) body: Response,
}

/// Membership operations a follower forwards to the leader.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) enum AdminRequest {
    AddLearner { id: NodeId, member: Member },
    Promote { id: NodeId },
    Remove { id: NodeId },
    TransferLeader { to: NodeId },
}

/// Which component an application message is for. Several components share
/// the one application-message path of the transport; each registers its
/// own handler on its own channel, so none can take over another's
/// messages. A closed enum rather than a number, so two components cannot
/// pick the same channel by accident.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum AppChannel {
    /// What [`RaftNode::set_app_handler`] and [`RaftNode::send_app`] use:
    /// the agents' heartbeats to the coordinator.
    Default,
    /// Best-effort telemetry fanned out between nodes (the facade's hub).
    Telemetry,
}

#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum Request {
    Append(AppendEntriesRequest<super::TypeConfig>),
    Vote(VoteRequest<super::TypeConfig>),
    PreVote(VoteRequest<super::TypeConfig>),
    TransferLeader(TransferLeaderRequest<super::TypeConfig>),
    /// One chunk of a snapshot; `done` on the last.
    SnapshotChunk {
        vote: Vote,
        meta: SnapshotMeta,
        offset: u64,
        data: Vec<u8>,
        done: bool,
    },
    /// A client write forwarded by a follower.
    ClientWrite(Proposal),
    /// A follower asks the leader for a linearizable read index.
    ReadIndex,
    Admin(AdminRequest),
    /// An application message (e.g. a heartbeat to the coordinator),
    /// handled by the handler the application registered.
    App {
        from: NodeId,
        /// Which registered handler it is for.
        channel: AppChannel,
        payload: Vec<u8>,
    },
    /// A forwarded request with the request id of the API call that caused
    /// it, so the leader's logs can be correlated with the follower's.
    Traced {
        request_id: String,
        inner: Box<Request>,
    },
}

impl Response {
    /// The outcome of a `ClientWrite`, if this answers one.
    pub(crate) fn into_client_write(self) -> Option<Result<(u64, Applied), ForwardError>> {
        match self {
            Response::ClientWrite(r) => Some(r),
            _ => None,
        }
    }

    /// The outcome of a `ReadIndex`, if this answers one.
    pub(crate) fn into_read_index(self) -> Option<Result<u64, ForwardError>> {
        match self {
            Response::ReadIndex(r) => Some(r),
            _ => None,
        }
    }
}

/// An error a peer reports about a forwarded request: each variant says
/// what it means, and [`From<ForwardError> for Error`](crate::Error) is
/// the one place that turns it into the caller's error.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) enum ForwardError {
    /// The receiver is not the leader (either); it may know who is.
    NotLeader { leader: Option<(NodeId, Member)> },
    /// The request may or may not have been applied (e.g. a write timed
    /// out, or its entry was discarded by a leader change after being
    /// appended): the caller must not assume either.
    Indeterminate { message: String },
    /// Definitely not done, and worth retrying (e.g. no quorum for a read);
    /// `leader` is the node that says so.
    Unavailable { leader: NodeId, message: String },
    /// Raft failed on the receiver (it is stopping, or its storage failed).
    Failed { message: String },
    /// The command is over the receiver's `log.max_entry_bytes`.
    EntryTooLarge { bytes: u64, limit: u64 },
    /// The sender may not say this (a node speaks only for itself).
    Forbidden { reason: String },
    /// A membership change was refused (not a member, not a voter, the
    /// last voter that is up).
    Membership { reason: String },
}

impl ForwardError {
    /// One word for a span's `outcome` field.
    pub(crate) fn outcome(&self) -> &'static str {
        match self {
            Self::NotLeader { .. } => "not_leader",
            Self::Indeterminate { .. } => "indeterminate",
            Self::Unavailable { .. } => "unavailable",
            Self::Failed { .. } => "failed",
            Self::EntryTooLarge { .. } => "entry_too_large",
            Self::Forbidden { .. } => "forbidden",
            Self::Membership { .. } => "membership",
        }
    }
}

impl From<ForwardError> for crate::Error {
    fn from(e: ForwardError) -> Self {
        use crate::Error;
        match e {
            ForwardError::NotLeader { leader: None } => Error::NoLeader,
            ForwardError::NotLeader { leader: Some((id, _)) } => Error::NotLeader { leader: Some(id) },
            ForwardError::Indeterminate { message } => Error::Indeterminate { reason: message },
            ForwardError::Unavailable { leader, message } => Error::Unavailable {
                leader,
                reason: message,
            },
            ForwardError::Failed { message } => Error::Fatal { reason: message },
            ForwardError::EntryTooLarge { bytes, limit } => Error::EntryTooLarge {
                bytes: usize::try_from(bytes).unwrap_or(usize::MAX),
                limit: usize::try_from(limit).unwrap_or(usize::MAX),
            },
            ForwardError::Forbidden { reason } => Error::Forbidden { reason },
            ForwardError::Membership { reason } => Error::Membership { reason },
        }
    }
}

#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum Response {
    Append(AppendEntriesResponse<super::TypeConfig>),
    Vote(VoteResponse<super::TypeConfig>),
    TransferLeader(openraft::raft::TransferLeaderResponse<super::TypeConfig>),
    /// Ack of a non-final chunk, or the result of installing the snapshot.
    Snapshot(Option<Vote>),
    ClientWrite(Result<(u64, Applied), ForwardError>),
    ReadIndex(Result<u64, ForwardError>),
    Admin(Result<(), ForwardError>),
    App(Result<Vec<u8>, String>),
    /// The server could not handle the request (e.g. it is shutting down).
    Error(String),
}

/// Why a connection's handshake failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum HandshakeError {
    /// The other side runs an incompatible protocol version (or is not
    /// cairn): an operator problem, not a network one.
    #[error("{0}")]
    Incompatible(String),
    /// The bytes did not arrive or did not decode.
    #[error("handshake failed: {0}")]
    Io(String),
    /// The first frame was oversized or garbage.
    #[error("handshake failed: {0}")]
    BadFrame(crate::frame::FrameError),
}

/// The dialer's side: send our [`Hello`], wait for the answer.
pub(crate) async fn client_handshake<S>(stream: &mut S, from: NodeId, version: u32) -> Result<(), HandshakeError>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let hello = Hello {
        magic: HELLO_MAGIC,
        version,
        from,
    };
    crate::frame::write_frame(stream, &hello, HANDSHAKE_FRAME_MAX)
        .await
        .map_err(|e| HandshakeError::Io(e.to_string()))?;
    let mut buf = Vec::new();
    let reply: HelloReply = crate::frame::read_frame(stream, &mut buf, HANDSHAKE_FRAME_MAX)
        .await
        .map_err(|e| {
            HandshakeError::Io(format!(
                "no handshake answer (a cairn older than the handshake, or not cairn?): {e}"
            ))
        })?;
    match reply {
        HelloReply::Accepted { version: theirs } if theirs == version => Ok(()),
        HelloReply::Accepted { version: theirs } => Err(HandshakeError::Incompatible(format!(
            "the peer speaks cairn peer protocol v{theirs}, this node v{version}: run the same cairn release on every node"
        ))),
        HelloReply::Refused { reason, .. } => Err(HandshakeError::Incompatible(format!("refused by the peer: {reason}"))),
    }
}

/// The server's side: read the [`Hello`], answer, and return the dialer's
/// id if it speaks `version`. On a mismatch the dialer is told why before
/// the error is returned (and the caller closes the connection).
pub(crate) async fn server_handshake<S>(stream: &mut S, version: u32) -> Result<NodeId, HandshakeError>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let mut buf = Vec::new();
    let hello: Hello = crate::frame::read_frame(stream, &mut buf, HANDSHAKE_FRAME_MAX)
        .await
        .map_err(|e| match e {
            e @ (crate::frame::FrameError::TooLarge { .. } | crate::frame::FrameError::Malformed(_)) => {
                HandshakeError::BadFrame(e)
            }
            other => HandshakeError::Io(other.to_string()),
        })?;
    if hello.magic != HELLO_MAGIC {
        return Err(HandshakeError::Incompatible(
            "the peer did not open with a cairn hello (not cairn, or a cairn older than the handshake)".into(),
        ));
    }
    if hello.version != version {
        let reason = format!(
            "node {} speaks cairn peer protocol v{}, this node v{version}: run the same cairn release on every node",
            hello.from, hello.version
        );
        let refused = HelloReply::Refused {
            version,
            reason: reason.clone(),
        };
        // Best effort: the dialer learns why; the connection closes anyway.
        let _ = crate::frame::write_frame(stream, &refused, HANDSHAKE_FRAME_MAX).await;
        return Err(HandshakeError::Incompatible(reason));
    }
    crate::frame::write_frame(stream, &HelloReply::Accepted { version }, HANDSHAKE_FRAME_MAX)
        .await
        .map_err(|e| HandshakeError::Io(e.to_string()))?;
    Ok(hello.from)
}

/// Largest handshake frame: a hello is a few dozen bytes; a refusal carries
/// one sentence.
const HANDSHAKE_FRAME_MAX: usize = 4096;

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn same_version_is_accepted_and_another_is_refused_with_both_versions() {
        let (mut a, mut b) = tokio::io::duplex(1 << 16);
        let (c, s) = tokio::join!(
            client_handshake(&mut a, 7, PROTOCOL_VERSION),
            server_handshake(&mut b, PROTOCOL_VERSION)
        );
        c.unwrap();
        assert_eq!(s.unwrap(), 7);

        let (mut a, mut b) = tokio::io::duplex(1 << 16);
        let (c, s) = tokio::join!(
            client_handshake(&mut a, 7, PROTOCOL_VERSION + 1),
            server_handshake(&mut b, PROTOCOL_VERSION)
        );
        let server_says = s.unwrap_err().to_string();
        let client_says = c.unwrap_err().to_string();
        for text in [&server_says, &client_says] {
            assert!(
                text.contains(&format!("v{}", PROTOCOL_VERSION + 1)) && text.contains(&format!("v{PROTOCOL_VERSION}")),
                "{text}"
            );
        }
        assert!(server_says.contains("node 7"), "{server_says}");

        // Not cairn at all: refused without an answer.
        let (mut a, mut b) = tokio::io::duplex(1 << 16);
        let foreign = ("GET / HTTP/1.1".to_string(), 1u32, 2u32);
        let (_, s) = tokio::join!(
            crate::frame::write_frame(&mut a, &foreign, 1024),
            server_handshake(&mut b, PROTOCOL_VERSION)
        );
        let err = s.unwrap_err();
        assert!(
            matches!(err, HandshakeError::Incompatible(_) | HandshakeError::BadFrame(_)),
            "{err}"
        );
    }
}
