//! cairn: a Raft-replicated mission coordinator for the computers on a robot.
//!
//! This facade crate holds everything that knows about HTTP, JSON and the
//! command line: the `cairn` daemon, its admin API and the CLI's client —
//! and [`Node`], the handle a program uses to run a cairn node inside
//! itself (see [`node`]). An embedder needs only this crate: the types of
//! the mission state, of action handlers and of the Raft layer that the
//! node's API uses are re-exported here.
//!
//! # Layout
//! - [`node`]: [`Node::builder`], the embedding facade.
//! - [`config`]: the daemon's TOML configuration.
//! - [`daemon`]: a Raft node plus its admin API.
//! - [`drain`]: keeping new tasks off a node, leadership moved away.
//! - [`api`]: the axum router.
//! - [`client`]: an admin-API client with endpoint fail-over.
//! - [`rover`]: the perception and control handlers a node runs from its
//!   `[rover]` settings, on the simulated world or real hardware.
//! - [`error`]: errors and their single mapping to HTTP statuses.
//! - [`wire`]: the error body and headers both the API and its client read.
//! - [`tls`]: the cluster CA, node certificates, mTLS between nodes, HTTPS.
//! - [`otel`]: the `[tracing]` settings and, with the `otel` feature, the
//!   OpenTelemetry (OTLP/HTTP) export of the write path's spans.
//! - [`telemetry`]: best-effort pub/sub topics outside Raft (pose, world
//!   view, node load), fanned out to every node.
//! - [`ros`]: the `[ros]` settings and, with the `ros` feature (default),
//!   the ROS 2 node `/cairn` serving the replicated parameters (cairn-ros).
//! - `dashboard`: the operator page every node serves at `/`.
#![deny(missing_docs)]

pub mod api;
pub mod check;
pub mod client;
pub mod config;
pub mod daemon;
mod dashboard;
pub mod drain;
pub mod error;
pub mod logging;
pub mod node;
pub mod otel;
pub mod ros;
pub mod rover;
pub mod telemetry;
pub mod tls;
pub mod version;
pub mod wire;

pub use cairn_hal as hal;

/// Action handlers: the seam between a node's agent and the code that does
/// the work (goal → feedback → result, cancel, actuation permit).
pub use cairn_agents::action;
pub use cairn_agents::action::ActionContext;
pub use cairn_agents::action::ActionFeedback;
pub use cairn_agents::action::ActionFuture;
pub use cairn_agents::action::ActionGoal;
pub use cairn_agents::action::ActionHandler;
pub use cairn_agents::action::ActionOutcome;
pub use cairn_agents::action::FeedbackDetail;
pub use cairn_agents::AgentConfig;
pub use cairn_raft::Change;
pub use cairn_raft::Consistency;
pub use cairn_raft::Member;
pub use cairn_raft::MemberStatus;
pub use cairn_raft::NativeClient;
pub use cairn_raft::Role;
pub use cairn_raft::Status;
pub use cairn_raft::Watch;
pub use cairn_state::Command;
pub use cairn_state::CommandError;
pub use cairn_state::Effective;
pub use cairn_state::Feedback;
pub use cairn_state::GoalSpec;
pub use cairn_state::Mission;
pub use cairn_state::Param;
pub use cairn_state::ParamKind;
pub use cairn_state::ParamValue;
pub use cairn_state::Plan;
pub use cairn_state::Resources;
pub use cairn_state::Response;
pub use cairn_state::RetryPolicy;

/// A native client of a cairn cluster (peer transport, straight to the
/// leader): for programs that write a lot. See docs/DECISIONS.md,
/// "Native client".
pub type MissionClient = NativeClient<Mission>;
pub use cairn_state::Task;
pub use cairn_state::TaskId;
pub use cairn_state::TaskOutcome;
pub use cairn_state::TaskSpec;
pub use cairn_state::TaskState;
pub use config::NodeConfig;
pub use error::Error;
pub use node::MissionView;
pub use node::Node;
pub use node::NodeBuilder;
pub use node::Params;

pub use cairn_raft as raft;
pub use cairn_state as state;
