//! cairn-agents: the coordinator that runs on the Raft leader, and the agent
//! every node runs.
//!
//! # Layout
//! - [`coordinator`]: [`Coordinator`], started on every node; it acts only
//!   while its node leads, judging liveness from heartbeats, taking tasks
//!   back from dead or stalled holders and placing pending tasks, every
//!   decision fenced to the term it leads in.
//! - [`agent`]: [`Agent`], the local runtime: registration, heartbeats and
//!   the actuation lease, running assigned tasks as actions
//!   ([`cairn_hal::action::ActionHandler`]), progress and results with the
//!   task's epoch, parameter and degradation updates to running handlers.
//! - [`detector`]: the leader-local [`FailureDetector`].
//! - [`scheduler`]: placement policies ([`LeastLoaded`], [`BinPack`]) behind
//!   the [`PlacementPolicy`] trait, and the pure scheduling pass.
//! - [`resilience`]: retry with exponential backoff and full jitter, and a
//!   circuit breaker, for every call that crosses the network.
//! - [`config`]: [`AgentConfig`] and the rover-LAN defaults, in one table.
//! - `protocol`, `convert` (private): heartbeat messages; conversions between
//!   replicated types and the plain types handlers see.
//! - [`Error`]: the crate's one error type.
//!
//! # Key decisions
//! - **Fencing twice.** The coordinator's decisions are fenced by Raft term
//!   (`write_fenced`): a deposed coordinator's proposal never applies under a
//!   newer leader. An agent's actions are fenced by the task's epoch (the
//!   state machine refuses stale reports) *and* by a lease it renews through
//!   the cluster: the leader answers a heartbeat only after a quorum confirmed
//!   its leadership, and the lease runs from when the heartbeat was sent, so a
//!   node cut off from the majority stops actuating within `lease_ms`, which
//!   is shorter than the `down_after_ms` the coordinator waits before giving
//!   its tasks to anyone else (see [`config`]).
//! - **Heartbeats stay leader-local.** Only verdicts are replicated.
//! - **The action trait lives in `cairn-hal`**, in plain types, so rover
//!   handlers written against the device traits implement it without the
//!   hardware crate depending on any cluster crate.
//! - **Randomness outside the state machine.** Retry jitter is drawn here
//!   (seedable) and passed in `FinishTask`.
#![deny(missing_docs)]

pub mod agent;
pub mod config;
mod convert;
pub mod coordinator;
pub mod detector;
mod error;
mod protocol;
pub mod resilience;
pub mod scheduler;

/// The action-handler seam (re-exported from `cairn-hal`), so embedders
/// can write handlers without naming the hardware crate.
pub use cairn_hal::action;

pub use agent::ActuationEvent;
pub use agent::ActuationObserver;
pub use agent::Agent;
pub use agent::AgentBuilder;
pub use agent::AgentStatus;
pub use config::AgentConfig;
pub use config::PolicyName;
pub use coordinator::Coordinator;
pub use coordinator::CoordinatorStatus;
pub use coordinator::NodeVerdict;
pub use detector::FailureDetector;
pub use error::Error;
pub use resilience::Backoff;
pub use resilience::BreakerState;
pub use resilience::CircuitBreaker;
pub use resilience::Retry;
pub use scheduler::BinPack;
pub use scheduler::LeastLoaded;
pub use scheduler::PlacementPolicy;
