//! Errors of cairn-raft.

use std::io;

use crate::retry::RetryClass;

/// What went wrong in a Raft node operation.
///
/// Recoverable errors (retry, possibly elsewhere) are [`Error::NoLeader`],
/// [`Error::Unavailable`] and [`Error::Unreachable`]; after
/// [`Error::Timeout`] and [`Error::Indeterminate`] the outcome is unknown
/// and only a tagged request may be retried ([`Error::retry_class`]);
/// [`Error::Fatal`] and [`Error::Storage`] mean the node must stop.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A configuration value is unusable.
    #[error("invalid config {field}: {reason}")]
    Config {
        /// The offending field.
        field: &'static str,
        /// Why.
        reason: String,
    },
    /// The data directory cannot be used.
    #[error("data dir {path}: {source}")]
    DataDir {
        /// The path.
        path: String,
        /// The cause.
        source: io::Error,
    },
    /// RocksDB or the snapshot files failed.
    #[error("storage: {what}: {source}")]
    Storage {
        /// What was being done.
        what: String,
        /// The cause.
        source: io::Error,
    },
    /// The transport could not listen.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: String,
        /// The cause.
        source: io::Error,
    },
    /// `initialize` on a node that already has state.
    #[error("node {node_id} is already part of an initialized cluster; nothing was changed")]
    AlreadyInitialized {
        /// This node.
        node_id: u64,
    },
    /// No leader is known right now (election in progress or quorum lost).
    #[error("no leader is known (election in progress or quorum lost); retry shortly")]
    NoLeader,
    /// This node does not lead (for operations that are never forwarded).
    #[error("this node is not the leader (leader: {leader:?})")]
    NotLeader {
        /// The leader, if known.
        leader: Option<u64>,
    },
    /// A fenced write committed in another term than its proposer led in.
    #[error("write fenced to term {expected} committed in term {actual}; not applied")]
    Fenced {
        /// The proposer's term.
        expected: u64,
        /// The entry's term.
        actual: u64,
    },
    /// The leader could not be reached to forward a request.
    #[error("leader {leader} unreachable: {reason}")]
    Unavailable {
        /// The leader we tried.
        leader: u64,
        /// Why.
        reason: String,
    },
    /// A node could not be reached (a native client's call was not sent).
    #[error("node at {addr} unreachable: {reason}")]
    Unreachable {
        /// The node's peer address.
        addr: String,
        /// Why.
        reason: String,
    },
    /// The operation did not finish in time; a write may or may not have
    /// been applied (retry with the same client tag to find out safely).
    #[error("{what} did not complete within {after_ms} ms; its outcome is unknown")]
    Timeout {
        /// The operation.
        what: &'static str,
        /// The deadline.
        after_ms: u64,
    },
    /// The request may or may not have taken effect (the connection to the
    /// leader broke after sending it, or the leader changed before it
    /// committed). Retry only with the same client tag.
    #[error("outcome unknown: {reason}")]
    Indeterminate {
        /// What happened.
        reason: String,
    },
    /// The id is not a member of the cluster.
    #[error("node {node_id} is not a member of the cluster")]
    UnknownMember {
        /// The id asked for.
        node_id: u64,
    },
    /// A membership change was refused.
    #[error("membership change refused: {reason}")]
    Membership {
        /// Why.
        reason: String,
    },
    /// A write's encoded command is larger than the log accepts
    /// (`log.max_entry_bytes`); nothing was proposed.
    #[error("the command is {bytes} bytes encoded, over the {limit} byte limit of one log entry; nothing was written")]
    EntryTooLarge {
        /// The encoded command's size.
        bytes: usize,
        /// `log.max_entry_bytes` of the node that refused it.
        limit: usize,
    },
    /// The leader refused a forwarded write because the node that sent it
    /// may not say it (a node speaks only for itself; cluster decisions are
    /// the leader's coordinator's); nothing was written. Not retryable.
    #[error("refused by the leader: {reason}")]
    Forbidden {
        /// What was refused and why.
        reason: String,
    },
    /// The write was not applied (stale retry, undecodable command).
    #[error("write rejected: {reason}")]
    Rejected {
        /// Why.
        reason: String,
    },
    /// Raft stopped (storage failure or shutdown).
    #[error("raft node stopped: {reason}")]
    Fatal {
        /// Why.
        reason: String,
    },
    /// A watch asked for changes the log no longer holds (compacted into a
    /// snapshot); the client must re-read the state and watch from there.
    #[error(
        "changes from index {requested} are compacted into a snapshot (this node's log starts at {first_available}); re-read the state and watch from its index"
    )]
    Compacted {
        /// The first index asked for.
        requested: u64,
        /// The oldest index still in this node's log.
        first_available: u64,
    },
    /// A state hash was asked for at an index this node has already
    /// applied past (its state there is gone); ask at a later index.
    #[error("this node already applied index {applied}, past the requested {requested}; ask for a later index")]
    HashPassed {
        /// The index asked for.
        requested: u64,
        /// This node's applied index.
        applied: u64,
    },
    /// A state hash was asked for at an index this node did not apply
    /// within the wait (it lags, or nothing is being written).
    #[error("this node applied up to index {applied}, not the requested {requested}, within {after_ms} ms")]
    HashNotReached {
        /// The index asked for.
        requested: u64,
        /// This node's applied index when the wait ended.
        applied: u64,
        /// The wait.
        after_ms: u64,
    },
    /// Too many requests of one kind are waiting on this node; retry later.
    #[error("busy: {reason}")]
    Busy {
        /// What is full.
        reason: String,
    },
    /// A backup file is unusable (not one, damaged, or a newer format).
    #[error("backup: {reason}")]
    Backup {
        /// Why.
        reason: String,
    },
    /// An offline data-dir operation (restore, force-new-cluster) refused
    /// to run or failed; the data dir is unchanged unless it says so.
    #[error("recovery: {reason}")]
    Recovery {
        /// Why.
        reason: String,
    },
    /// A value could not be encoded or decoded.
    #[error("codec: {0}")]
    Codec(#[from] postcard::Error),
}

impl Error {
    /// Whether retrying (possibly on another node) is safe for any request:
    /// the request was definitely not applied. An unknown outcome
    /// ([`Error::Timeout`], [`Error::Indeterminate`]) is not: see
    /// [`Error::retry_class`] and [`crate::retry`].
    pub fn is_retryable(&self) -> bool {
        self.retry_class() == RetryClass::Safe
    }

    /// How the one retry policy ([`crate::retry`]) treats this error.
    pub fn retry_class(&self) -> RetryClass {
        match self {
            Error::NoLeader
            | Error::NotLeader { .. }
            | Error::Unavailable { .. }
            | Error::Unreachable { .. }
            | Error::HashNotReached { .. }
            | Error::Busy { .. } => RetryClass::Safe,
            Error::Timeout { .. } | Error::Indeterminate { .. } => RetryClass::Unknown,
            _ => RetryClass::Permanent,
        }
    }
}
