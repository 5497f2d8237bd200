//! Identifiers and the fencing epoch.
//!
//! Newtypes so a task id can never be passed where a node id is expected.
//! All are `u64` underneath and `#[serde(transparent)]`, so they cost nothing
//! on the wire and read as plain numbers in JSON.

use std::fmt;

use serde::Deserialize;
use serde::Serialize;

/// A task, numbered by the state machine in creation order (never reused).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(transparent)]
pub struct TaskId(pub u64);

/// A node of the cluster; the same number as its Raft node id.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(transparent)]
pub struct NodeId(pub u64);

/// A goal of the mission plan, numbered by the state machine (never reused,
/// even across plan replacements, so a stale reference cannot hit a new goal).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(transparent)]
pub struct GoalId(pub u64);

/// A fencing token for one assignment of one task.
///
/// Drawn from a single counter for the whole state, so an epoch is unique
/// across tasks and only ever increases: an assignee holding an older epoch
/// than the task's current lease has been deposed and is refused. Not to be
/// confused with a Raft term.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(transparent)]
pub struct Epoch(pub u64);

impl fmt::Display for TaskId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl fmt::Display for GoalId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl fmt::Display for Epoch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}
