//! The seam between the replicated domain and the consensus shell.
//!
//! raft-core is generic over [`StateMachine`]: it orders commands in the log,
//! hands each one to [`StateMachine::apply`] with an [`ApplyCtx`], and stores
//! [`StateMachine::snapshot`] bytes. The trait lives here, in the pure crate,
//! so that the domain implements it without depending on the shell.

use std::fmt::Debug;

use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde::Serialize;

/// Everything `apply` may know about "now": where the command sits in the log
/// and the time the leader proposed it. `apply` reads no clock of its own, so
/// every replica computes the same state from the same log.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApplyCtx {
    /// Raft log index of the entry being applied.
    pub index: u64,
    /// Raft term of the leader that appended the entry.
    pub term: u64,
    /// Wall-clock time (ms since the Unix epoch) the leader stamped on the
    /// proposal. Monotonic within one leader, not across leaders.
    pub timestamp_ms: u64,
}

/// Why a snapshot could not be read back.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SnapshotError {
    /// The snapshot was written by a format this build does not read.
    #[error("snapshot format version {found} is not supported (this build reads {supported})")]
    UnsupportedVersion {
        /// Version found in the snapshot header.
        found: u32,
        /// Version this build writes and reads.
        supported: u32,
    },
    /// The bytes do not decode.
    #[error("snapshot is corrupt: {reason}")]
    Corrupt {
        /// What the decoder said.
        reason: String,
    },
}

/// Why [`StateMachine::check`] refused a command: the response `apply`
/// would give, and whether the refusal can change with the state.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Refusal<R> {
    /// Refused in this state; another state may accept the same command
    /// (an unknown task, a stale epoch, a full collection).
    InThisState(R),
    /// Refused in every state: the command's own fields are invalid (a
    /// name too long, a NaN, an empty list), so no order of other commands
    /// before it could make `apply` accept it.
    InEveryState(R),
}

impl<R> Refusal<R> {
    /// The response `apply` would give.
    pub fn response(&self) -> &R {
        match self {
            Self::InThisState(r) | Self::InEveryState(r) => r,
        }
    }

    /// The response `apply` would give, by value.
    pub fn into_response(self) -> R {
        match self {
            Self::InThisState(r) | Self::InEveryState(r) => r,
        }
    }

    /// Whether no state accepts the command.
    pub fn in_every_state(&self) -> bool {
        matches!(self, Self::InEveryState(_))
    }
}

/// Who may propose a command through the peer channel: the answer of
/// [`StateMachine::speaker`].
///
/// The transport proves which node sent a forwarded write (the peer
/// certificate's node id, or in plaintext mode the handshake's id); the
/// leader admits a command that speaks for a node only from that node.
/// Commands proposed on the leader itself (its coordinator, its agent, its
/// admin API) are not bound: the leader writes the log.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Speaker {
    /// Any member may forward it (an operator's write through the admin
    /// API, which the API token authorised).
    Anyone,
    /// It speaks for this node: only that node may forward it (its
    /// heartbeat-driven registration, its task reports).
    Node(u64),
    /// A cluster decision: only the leader's own coordinator proposes it;
    /// never admitted from a peer.
    Leader,
}

/// A deterministic replicated state machine.
///
/// Contract: for the same sequence of `(command, ctx)` pairs, every instance
/// started from `Default` (or from the same snapshot) reaches an equal state
/// and produces byte-identical snapshots. `apply` does no I/O, reads no clock
/// and draws no random numbers; it never panics on a command a client can
/// send — a command that is invalid for the current state yields an error
/// *response* and leaves the state unchanged.
pub trait StateMachine: Default + Send + Sync + 'static {
    /// A proposal, as clients submit it and the log stores it.
    type Command: Serialize + DeserializeOwned + Clone + Debug + Send + Sync + 'static;
    /// The outcome of applying one command (including rejections).
    type Response: Serialize + DeserializeOwned + Clone + Debug + Send + Sync + 'static;

    /// Apply one committed command.
    fn apply(&mut self, command: &Self::Command, ctx: &ApplyCtx) -> Self::Response;

    /// Would [`StateMachine::apply`] refuse `command` in this state? Read
    /// only: the leader calls it before proposing, so a command the state
    /// machine would refuse is answered without being appended to the log.
    ///
    /// Contract, for the same state and `ctx`: `check` returns
    /// `Err(refusal)` exactly when `apply` refuses the command, with
    /// `refusal.response()` equal to `apply`'s response; and
    /// [`Refusal::InEveryState`] only when every state refuses it. `apply`
    /// still validates (the log stays the authority: the state may change
    /// between the check and the entry's turn). The default accepts
    /// everything, which is always allowed: the log then decides.
    fn check(&self, command: &Self::Command, ctx: &ApplyCtx) -> Result<(), Refusal<Self::Response>> {
        let _ = (command, ctx);
        Ok(())
    }

    /// Which node `command` speaks for, judged against this state (read
    /// only, pure; see [`Speaker`]). The leader calls it for every write a
    /// peer forwards and refuses the write if the sending node may not say
    /// it. The answer must not depend on state that can later change to
    /// another node: a task's holder at a given epoch never changes, so
    /// "the holder of the lease at this epoch" is a sound answer, and a
    /// command whose epoch is not the current lease's is [`Speaker::Anyone`]
    /// (apply refuses it as stale). The default admits everything.
    fn speaker(&self, command: &Self::Command) -> Speaker {
        let _ = command;
        Speaker::Anyone
    }

    /// Serialise the whole state, with a format version, for a snapshot.
    fn snapshot(&self) -> Vec<u8>;

    /// Rebuild a state from [`StateMachine::snapshot`] bytes.
    fn restore(bytes: &[u8]) -> Result<Self, SnapshotError>
    where
        Self: Sized;
}
