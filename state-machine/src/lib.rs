//! cairn-state: the replicated mission state, pure and deterministic.
//!
//! # Layout
//! - [`machine`]: the [`StateMachine`] trait raft-core is generic over, and
//!   [`ApplyCtx`], the only way `apply` learns the time.
//! - [`mission`]: [`Mission`], the whole state and its `StateMachine` impl;
//!   read-only queries for the admin API and the coordinator; the invariants.
//! - [`apply()`](apply::apply): the transition function, validate-then-mutate so
//!   a refused command leaves the state untouched; [`check()`](apply::check)
//!   is its validation half alone, read only, for refusing a command before
//!   it reaches the log.
//! - [`command`]: [`Command`] (what clients propose) and [`Response`].
//! - [`error`]: [`CommandError`], every way a command is refused.
//! - [`plan`]: the versioned mission plan of goals with nalgebra poses.
//! - [`task`]: tasks, their lifecycle, leases, retries and feedback.
//! - [`node`]: the node registry, liveness and derived load.
//! - [`param`]: typed, bounded parameters and their change events.
//! - [`health`]: sensor health, degradation policies, the effective mode.
//! - [`ids`]: id newtypes and the fencing [`Epoch`].
//! - [`limits`]: the bound on every collection the state holds.
//! - [`snapshot`]: the versioned, checksummed snapshot format.
//! - [`session`]: the client-session table raft-core uses to apply a retried
//!   write at most once (kept outside [`Command`], generic over the response).
//!
//! Key decision: this crate does no I/O, reads no clock and uses no
//! randomness, so the same log yields the same state on every node, byte for
//! byte. Everything that needs time (retry backoff, timestamps) takes it from
//! [`ApplyCtx`]; everything random (retry jitter) comes in the command.
//! Collections are `BTreeMap`s so iteration and serialisation order never
//! depend on a hasher's seed.
//!
//! Fencing: each assignment takes a fresh [`Epoch`] from one counter for the
//! whole state; `StartTask`, `ReportProgress` and `FinishTask` must present
//! the task's current epoch, so a node that was declared down (or whose task
//! was reassigned) cannot act on the task any more.
#![deny(missing_docs)]

pub mod apply;
pub mod command;
pub mod error;
pub mod health;
pub mod ids;
pub mod limits;
pub mod machine;
pub mod mission;
pub mod node;
pub mod param;
pub mod plan;
pub mod session;
pub mod snapshot;
pub mod task;
mod validate;

pub use apply::apply;
pub use apply::check;
pub use command::Command;
pub use command::Response;
pub use error::CommandError;
pub use error::Limit;
pub use health::Cause;
pub use health::DegradationPolicy;
pub use health::Effective;
pub use health::Mode;
pub use health::SensorHealth;
pub use health::SensorReport;
pub use ids::Epoch;
pub use ids::GoalId;
pub use ids::NodeId;
pub use ids::TaskId;
pub use machine::ApplyCtx;
pub use machine::Refusal;
pub use machine::SnapshotError;
pub use machine::Speaker;
pub use machine::StateMachine;
pub use mission::Mission;
pub use node::Liveness;
pub use node::Node;
pub use node::NodeSpec;
pub use param::Param;
pub use param::ParamChange;
pub use param::ParamKind;
pub use param::ParamType;
pub use param::ParamValue;
pub use param::MAX_SPEED_PARAM;
pub use plan::Goal;
pub use plan::GoalKind;
pub use plan::GoalSpec;
pub use plan::GoalStatus;
pub use plan::Plan;
pub use plan::PlanStatus;
pub use plan::Pose;
pub use plan::Tolerance;
pub use session::Admission;
pub use session::ClientTag;
pub use session::Sessions;
pub use task::Feedback;
pub use task::Lease;
pub use task::Resource;
pub use task::Resources;
pub use task::RetryPolicy;
pub use task::Task;
pub use task::TaskAction;
pub use task::TaskFilter;
pub use task::TaskOutcome;
pub use task::TaskSpec;
pub use task::TaskState;
