//! Messages of the node-to-node transport.
//!
//! Every frame a dialer sends is a [`RequestFrame`]; the server answers each
//! with a [`ResponseFrame`] carrying the same id. Ids let one connection
//! carry many requests in flight (pipelining); the server answers Raft
//! protocol messages of one connection in order.

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
        channel: super::node::AppChannel,
        payload: Vec<u8>,
    },
    /// A forwarded request with the request id of the API call that caused
    /// it, so the leader's logs can be correlated with the follower's.
    Traced {
        request_id: String,
        inner: Box<Request>,
    },
}

/// An error a peer reports about a forwarded request.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) enum ForwardError {
    /// The receiver is not the leader (either); it may know who is.
    NotLeader { leader: Option<(NodeId, Member)> },
    /// The request may or may not have been applied (e.g. a write timed
    /// out, or its entry was discarded by a leader change after being
    /// appended): the caller must not assume either.
    Indeterminate { message: String },
    /// Definitely not done, and worth retrying (e.g. no quorum for a read).
    Unavailable { message: String },
    /// Anything else, as text (the receiver logged the details).
    Failed { message: String },
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
