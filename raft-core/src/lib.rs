//! cairn-raft: consensus and storage for cairn.
//!
//! A [`RaftNode`] replicates any [`cairn_state::StateMachine`] over openraft,
//! with the log, Raft metadata and snapshots in RocksDB and a binary
//! (postcard) transport over persistent, pipelined TCP connections.
//!
//! # Layout
//! - [`clock`]: the wall clock a node stamps proposals with ([`WallClock`]).
//! - [`config`]: [`RaftNodeConfig`] and the rover-LAN timing defaults.
//! - [`backup`]: the backup file format ([`Backup`]); [`restore_backup`]
//!   and [`force_new_cluster`] rewrite a stopped node's data dir.
//! - `consensus` (private): every use of openraft — type config, log store,
//!   state-machine adapter, transport client and server, the node itself.
//! - [`frame`]: the length-prefixed frame codec.
//! - [`transport`]: the [`Dialer`] and [`Listener`] seams where tests put
//!   faults, proxies or a simulated network.
//! - [`metrics`]: per-node Prometheus metrics (fsync latency among them).
//! - [`retry`]: the one retry policy of the write path ([`RetryPolicy`]):
//!   an unknown outcome is retried only under a client tag.
//! - [`sync`]: a poison-tolerant [`sync::lock`] and a task aborted on
//!   drop ([`sync::AbortOnDrop`]), shared by the crates above this one.
//! - [`trace`]: the request id carried to the leader on forwarded requests.
//!
//! Key decisions: openraft is confined to `consensus` so the pinned alpha
//! can be upgraded in one place; a write is acknowledged only after its
//! entry is fsynced on a quorum (fsyncs are group-committed); the domain
//! state machine stays pure and is driven through a trait it implements.
#![deny(missing_docs)]

pub mod backup;
pub mod clock;
pub mod config;
mod consensus;
pub mod error;
pub mod frame;
pub mod metrics;
pub mod retry;
mod storage;
pub mod sync;
pub mod trace;
pub mod transport;

pub use backup::Backup;
pub use clock::WallClock;
pub use config::LogLimits;
pub use config::PeerLimits;
pub use config::RaftNodeConfig;
pub use config::RaftTimings;
pub use config::SimulatedDisk;
pub use config::SnapshotSettings;
pub use config::WalSync;
pub use config::APPEND_HEADER_MAX_BYTES;
pub use config::ENTRY_HEADER_MAX_BYTES;
pub use consensus::client::NativeClient;
pub use consensus::node::AppHandler;
pub use consensus::node::Consistency;
pub use consensus::node::LogRecord;
pub use consensus::node::MemberProgress;
pub use consensus::node::MemberStatus;
pub use consensus::node::Promotion;
pub use consensus::node::RaftNode;
pub use consensus::node::Role;
pub use consensus::node::StateHash;
pub use consensus::node::Status;
pub use consensus::node::WriteOutcome;
pub use consensus::protocol::AppChannel;
pub use consensus::recovery::blank_log_entry;
pub use consensus::recovery::force_new_cluster;
pub use consensus::recovery::restore_backup;
pub use consensus::recovery::RecoveryReport;
pub use consensus::recovery::RestoreReport;
pub use consensus::sm_store::ChangeEvent;
pub use consensus::watch::Change;
pub use consensus::watch::Watch;
pub use consensus::Member;
pub use consensus::NodeId;
pub use error::Error;
pub use retry::RetryClass;
pub use retry::RetryPolicy;
pub use transport::Accepted;
pub use transport::Acceptor;
pub use transport::Dialer;
pub use transport::LinkControl;
pub use transport::Listener;
pub use transport::OverrideDialer;
pub use transport::PeerIdentity;
pub use transport::PlainAcceptor;
pub use transport::TcpDialer;
pub use transport::TcpPeerListener;
