//! Upper bounds on everything a command can make the state hold.
//!
//! The state is replicated to every Pi, snapshotted whole and sent over the
//! rover's LAN, so its size must be bounded by construction rather than by the
//! good behaviour of clients: a command that would cross a limit is refused
//! with [`crate::CommandError::LimitReached`] or
//! [`crate::CommandError::TooLong`]. The numbers are an order of magnitude above
//! what one rover mission needs (the benchmark's 10k tasks, 100 nodes and 1k
//! parameters fit) while keeping a full snapshot in the low megabytes.

/// Tasks held at once, terminal ones included until forgotten.
pub const MAX_TASKS: usize = 100_000;
/// Registered nodes. A rover carries a handful of Pis; 256 leaves room for
/// simulation clusters.
pub const MAX_NODES: usize = 256;
/// Declared parameters.
pub const MAX_PARAMS: usize = 4_096;
/// Goals in the mission plan.
pub const MAX_GOALS: usize = 1_024;
/// Vertices of one search-area boundary.
pub const MAX_AREA_VERTICES: usize = 64;
/// Sensors with a health report.
pub const MAX_SENSORS: usize = 128;
/// Degradation policies.
pub const MAX_POLICIES: usize = 256;
/// Capabilities per node or per task.
pub const MAX_CAPABILITIES: usize = 32;
/// Addresses per node (e.g. one per interface).
pub const MAX_ADDRESSES: usize = 8;
/// Choices of one enum parameter.
pub const MAX_ENUM_CHOICES: usize = 64;
/// Names: task kinds, capabilities, parameters, sensors, items, frames.
pub const MAX_NAME_LEN: usize = 128;
/// Free text: descriptions, failure reasons, abort reasons, feedback notes,
/// addresses.
pub const MAX_TEXT_LEN: usize = 1_024;
/// A string parameter's value (its declared `max_len` may not exceed this).
pub const MAX_PARAM_STRING_LEN: usize = 4_096;
/// Recent parameter change events kept in the state. The watch in raft-core
/// streams every change as it is applied, so this ring only serves late
/// readers (`cairn param history`); unbounded, it would grow every snapshot
/// with every `SetParam` for the life of the cluster.
pub const PARAM_EVENTS_KEPT: usize = 256;

// --- bounds on floats ---
//
// Every float a command carries is finite and inside one of these bounds,
// so no later arithmetic on it (a distance, a sum, a squared error in a
// handler) can overflow to infinity or lose all precision. The bounds are
// orders of magnitude above anything a rover does, and are checked by the
// stateless validation every command goes through (`validate.rs`).

/// Largest absolute coordinate of a position, metres (1,000 km from the
/// frame's origin): every `x`, `y` and `z` of a pose or a search-area vertex
/// is within `±MAX_COORDINATE_M`. A rover mission spans kilometres.
pub const MAX_COORDINATE_M: f64 = 1.0e6;
/// Largest distance, metres: position tolerances, sweep spacings and the
/// distance remaining a handler reports are within `0..=MAX_DISTANCE_M`.
/// Above the diagonal of the coordinate box (2·√3·10⁶ ≈ 3.5·10⁶ m), so any
/// distance between two valid positions fits.
pub const MAX_DISTANCE_M: f64 = 1.0e7;
/// Largest absolute heading, radians: one full turn either way, so headings
/// in `(-π, π]` and in `[0, 2π)` both fit. Heading tolerances are within
/// `0..=MAX_HEADING_RAD`.
pub const MAX_HEADING_RAD: f64 = std::f64::consts::TAU;
