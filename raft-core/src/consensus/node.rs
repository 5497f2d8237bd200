//! A running Raft node: start-up, writes with leader forwarding, reads,
//! membership, status.
//!
//! # Layout
//! - [`core`]: the state the node's tasks share (`Core`) and the
//!   [`RaftNode`] handle; it imports none of the files below, and the peer
//!   server and the watch stream take `Core` from it.
//! - `startup`: start-up (stores, openraft's configuration, the peer
//!   server, the metrics task) and shutdown.
//! - `write`: the write path, with the state machine's check before a
//!   proposal is appended.
//! - `forward`: running a request on the leader, wherever it moves (one
//!   retry policy, one deadline), and serving what other nodes forward.
//! - `read`: linearizable and stale reads, subscriptions, watches.
//! - `admin`: bootstrap, membership changes, leadership transfer.
//! - `membership`: the membership changes that wait for the truth (a
//!   learner caught up, a promotion that can vote).
//! - `join`: a new node joining a running cluster over the peer
//!   transport.
//! - `app`: application messages between nodes over the transport.
//! - `status`: [`Status`] and the Prometheus gauges.
//! - `health`: quorum contact and fault tolerance, from Raft's metrics.
//! - `inspect`: backup, state hash, stored log records.

mod admin;
mod app;
pub(crate) mod core;
mod forward;
mod health;
mod inspect;
mod join;
mod membership;
mod read;
mod startup;
mod status;
mod write;

pub use self::core::AppHandler;
pub use self::core::RaftNode;
pub use crate::consensus::sm_store::StateHash;
pub use inspect::LogRecord;
pub use membership::MemberProgress;
pub use membership::Promotion;
pub use read::Consistency;
pub use status::MemberStatus;
pub use status::Role;
pub use status::Status;
pub(crate) use write::decode_applied;
pub use write::WriteOutcome;
