//! cairn: a Raft-replicated mission coordinator for the computers on a robot.
//!
//! This facade crate holds everything that knows about HTTP, JSON and the
//! command line: the `cairn` daemon, its admin API and the CLI's client.
//!
//! # Layout
//! - [`config`]: the daemon's TOML configuration.
//! - [`daemon`]: a Raft node plus its admin API.
//! - [`api`]: the axum router.
//! - [`client`]: an admin-API client with endpoint fail-over.
//! - [`rover`]: the perception and control handlers a node runs from its
//!   `[rover]` settings, on the simulated world or real hardware.
//! - [`error`]: errors and their single mapping to HTTP statuses.
//! - [`tls`]: the cluster CA, node certificates, mTLS between nodes, HTTPS.
//! - [`telemetry`]: best-effort pub/sub topics outside Raft (pose, world
//!   view, node load), fanned out to every node.
//! - `dashboard`: the operator page every node serves at `/`.
#![deny(missing_docs)]

pub mod api;
pub mod client;
pub mod config;
pub mod daemon;
mod dashboard;
pub mod error;
pub mod rover;
pub mod telemetry;
pub mod tls;

pub use cairn_hal as hal;
pub use cairn_raft as raft;
pub use cairn_state as state;
