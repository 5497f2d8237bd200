//! cairn speaks ROS 2: a ROS 2 node (by default `/cairn`) that serves the
//! standard `rcl_interfaces` parameter services and `/parameter_events`,
//! backed by cairn's typed, bounded, replicated parameters.
//!
//! # Layout
//! - [`node`]: the seam, [`CairnNode`]: the little this crate needs from a
//!   cairn node (read the parameters, set one through the replicated write
//!   path, follow accepted changes). The `cairn` facade implements it with
//!   its Raft node; tests implement it with a map.
//! - [`convert`]: pure mappings between cairn's parameters and
//!   `rcl_interfaces` messages (values, descriptors, list, events).
//! - [`bridge`]: [`RosBridge`], the DDS side (ros2-client on RustDDS, pure
//!   Rust): the six parameter services and the event publisher, and the
//!   action clients of the bound task kinds.
//! - [`action`]: tasks as ROS 2 actions: a task kind bound to an action
//!   server ([`ActionBinding`]) runs through a `cairn-hal` action handler
//!   that sends the goal, maps feedback and result, and cancels the goal on
//!   a cairn cancel or a lost permit.
//! - [`lifecycle`]: lifecycle on takeover: a task kind that keeps a ROS 2
//!   lifecycle node active on the node holding the task, and deactivates
//!   it when the task is cancelled or the permit is lost.
//! - [`state`]: the state topics (mode, speed limit, plan, cluster, task
//!   board), latched for late subscribers.
//! - [`submit`]: submitting from ROS 2: `<node>/submit_task` and
//!   `<node>/cancel_task`, replicated writes from any node (why services
//!   of a standard type: see there).
//! - [`mirror`]: cairn telemetry topics mirrored to or from ROS 2 topics.
//! - [`msgs`]: the Rust types of the supported actions
//!   (`test_msgs/action/Fibonacci`, `nav2_msgs/action/NavigateToPose`).
//! - [`error`]: the crate's [`Error`].
//!
//! # Key decision
//! The bridge keeps no parameter store of its own. ros2-client can serve
//! parameters from a local store with synchronous validate/set callbacks, but
//! a cairn parameter is set by a replicated write that may be refused by the
//! state machine (wrong type, out of bounds) or fail for want of a quorum;
//! so the services are served here, each `set_parameters` awaits the write
//! and answers `successful=false` with the state machine's reason on a
//! refusal, and `/parameter_events` is fed from the applied changes, so a
//! change from any source (HTTP, CLI, another node's ROS side) appears there.
//!
//! This crate depends on `cairn-state` (the domain types), `cairn-hal` (the
//! action handler seam) and on nothing
//! that does I/O in cairn: no Raft, no RocksDB, no facade (which depends on
//! it). It needs no ROS installation to build or run.

#![deny(missing_docs)]

pub mod action;
pub mod bridge;
pub mod convert;
pub mod error;
pub mod lifecycle;
pub mod mirror;
pub mod msgs;
pub mod node;
pub mod state;
pub mod submit;

pub use action::ActionBinding;
pub use action::ActionType;
pub use bridge::RosBridge;
pub use bridge::RosOptions;
pub use error::Error;
pub use lifecycle::LifecycleBinding;
pub use mirror::Direction;
pub use mirror::TelemetryMirror;
pub use node::CairnNode;
pub use node::SetParamError;
pub use node::TaskRequest;
pub use state::ClusterState;
pub use state::PlanPoses;
pub use state::RoverState;
