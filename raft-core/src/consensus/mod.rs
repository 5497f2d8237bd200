//! Everything that touches openraft lives under this module.
//!
//! openraft 0.10 is pinned to an alpha (`=0.10.0-alpha.37`, see
//! docs/DECISIONS.md); its API still moves between releases. Keeping every
//! `use openraft::…` below this line means an upgrade is one deliberate change
//! here plus a re-run of the storage suite, and nothing outside raft-core ever
//! names an openraft type.
//!
//! # Layout
//! - [`node`]: a running node (`RaftNode`): start-up, writes with leader
//!   forwarding, reads, membership, status; one file per concern under
//!   `node/`.
//! - [`protocol`]: the messages of the node-to-node transport, its
//!   handshake and version, and the application channels (`AppChannel`).
//! - [`log_store`]: RocksDB log + raft metadata, group-committed fsyncs
//!   (`log_store/`: row encoding, the in-memory tail, the simulated disk).
//! - [`sm_store`]: the state-machine adapter: client sessions, apply, snapshots.
//! - [`network`]: the client side of the node-to-node transport.
//! - [`server`]: the listener that serves peers' RPCs.
//! - [`staging`]: incoming snapshot chunks on disk, under one node-wide
//!   byte budget.
//! - [`client`]: the native client (writes and read indexes over the peer
//!   transport, straight to the leader).
//! - [`watch`]: applied changes from an index, history then live.
//! - [`recovery`]: offline restore of a backup and force-new-cluster.

pub(crate) mod client;
pub(crate) mod log_store;
pub(crate) mod network;
pub(crate) mod node;
pub(crate) mod protocol;
pub(crate) mod recovery;
pub(crate) mod server;
pub(crate) mod sm_store;
pub(crate) mod staging;
pub(crate) mod watch;

use std::fmt;

use cairn_state::ClientTag;
use serde::Deserialize;
use serde::Serialize;

/// A Raft node's identity (stable across restarts, never reused).
pub type NodeId = u64;

/// How peers and clients reach a member.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    /// Address of the node-to-node transport.
    pub raft_addr: String,
    /// Address of the HTTP admin API (for clients that follow redirects).
    pub api_addr: String,
}

impl fmt::Display for Member {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "raft={} api={}", self.raft_addr, self.api_addr)
    }
}

/// One log entry's application payload: an encoded command and what
/// deduplication and determinism need.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Proposal {
    /// Client tag for at-most-once application; `None` for internal writes.
    pub tag: Option<ClientTag>,
    /// Leader's wall clock when it accepted the proposal (ms since epoch).
    pub proposed_at_ms: u64,
    /// Apply only if the entry's term is this one: a coordinator fences its
    /// decisions with the term it believes it leads, so a deposed leader's
    /// late proposal cannot take effect under a newer leader.
    #[serde(default)]
    pub fence_term: Option<u64>,
    /// The state machine's command, postcard-encoded. Kept opaque here so the
    /// log and transport are not generic over the domain.
    pub command: Vec<u8>,
    /// The client request's id, for the leader's `raft.append` and
    /// `raft.apply` spans. In memory only (`serde(skip)`): neither the log
    /// entry nor the forwarded request carries it, so the log format is
    /// unchanged (a forwarded write's id travels in `Request::Traced`).
    #[serde(skip)]
    pub(crate) request_id: Option<std::sync::Arc<str>>,
}

impl fmt::Display for Proposal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "proposal({} bytes, tag={:?})", self.command.len(), self.tag)
    }
}

/// The outcome of applying one proposal, postcard-encoded
/// `StateMachine::Response`, or the reason it was not applied.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Applied {
    /// The state machine's response.
    Response(Vec<u8>),
    /// A retry older than the client's last completed write.
    StaleRetry {
        /// The client's last applied sequence number.
        last_seq: u64,
    },
    /// The proposal was fenced to a term that is not the entry's term.
    Fenced {
        /// The term the proposer believed in.
        expected: u64,
        /// The term the entry was committed in.
        actual: u64,
    },
    /// The command bytes did not decode (e.g. a node on a newer version
    /// proposed a command this one does not know).
    Undecodable {
        /// Decoder message.
        reason: String,
    },
}

openraft::declare_raft_types!(
    /// cairn's openraft type configuration.
    pub TypeConfig:
        D = Proposal,
        R = Applied,
        NodeId = NodeId,
        Node = Member,
);

pub(crate) type Raft<S> = openraft::Raft<TypeConfig, sm_store::StateMachineStore<S>>;
pub(crate) type LogId = openraft::alias::LogIdOf<TypeConfig>;
pub(crate) type Entry = openraft::alias::EntryOf<TypeConfig>;
pub(crate) type Vote = openraft::alias::VoteOf<TypeConfig>;
pub(crate) type StoredMembership = openraft::alias::StoredMembershipOf<TypeConfig>;
pub(crate) type SnapshotMeta = openraft::alias::SnapshotMetaOf<TypeConfig>;
pub(crate) type Snapshot = openraft::alias::SnapshotOf<TypeConfig, SnapshotData>;
pub(crate) type RaftMetrics = openraft::RaftMetrics<TypeConfig>;

/// Snapshot bytes as they travel and install: cheap to clone, immutable.
pub(crate) type SnapshotData = bytes::Bytes;

pub(crate) use openraft::raft::AppendEntriesRequest;
pub(crate) use openraft::raft::AppendEntriesResponse;
pub(crate) use openraft::raft::TransferLeaderRequest;
pub(crate) use openraft::raft::VoteRequest;
pub(crate) use openraft::raft::VoteResponse;

/// The term of a log id (its leader's term).
pub(crate) fn term_of(log_id: &LogId) -> u64 {
    log_id.committed_leader_id().term
}

#[cfg(test)]
mod tests;
