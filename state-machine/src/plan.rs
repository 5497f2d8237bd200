//! The mission plan: a named, versioned, ordered list of goals.

use std::fmt;

use nalgebra::Isometry3;
use nalgebra::Point2;
use nalgebra::Point3;
use nalgebra::Translation3;
use nalgebra::UnitQuaternion;
use nalgebra::Vector3;
use serde::Deserialize;
use serde::Serialize;

use crate::ids::GoalId;

/// A position and a heading in the plan's frame.
///
/// Heading is yaw about the frame's z axis, in radians, stored as given: the
/// state machine does no float arithmetic on it (transcendental functions may
/// round differently on an aarch64 Pi and an x86 laptop, and replicas must
/// agree bit for bit).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Pose {
    /// Metres in the plan's frame, `[x, y, z]`.
    #[cfg_attr(feature = "openapi", schema(value_type = [f64; 3]))]
    pub position: Point3<f64>,
    /// Yaw in radians, counter-clockwise from the frame's x axis.
    pub heading_rad: f64,
}

impl Pose {
    /// A pose at `(x, y, z)` metres facing `heading_rad`.
    pub fn new(x_m: f64, y_m: f64, z_m: f64, heading_rad: f64) -> Pose {
        Pose {
            position: Point3::new(x_m, y_m, z_m),
            heading_rad,
        }
    }

    /// The pose as a rigid transform, for consumers outside the state machine.
    pub fn isometry(&self) -> Isometry3<f64> {
        Isometry3::from_parts(
            Translation3::from(self.position.coords),
            UnitQuaternion::from_axis_angle(&Vector3::z_axis(), self.heading_rad),
        )
    }
}

/// How close counts as reaching a goal.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Tolerance {
    /// Allowed distance from the goal position, metres, ≥ 0.
    pub position_m: f64,
    /// Allowed heading error, radians, ≥ 0; `None` if heading does not matter.
    pub heading_rad: Option<f64>,
}

/// What a goal asks the rover to do.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum GoalKind {
    /// Drive to a pose.
    Waypoint {
        /// Target pose.
        pose: Pose,
    },
    /// Sweep a polygon (e.g. looking for a cache).
    SearchArea {
        /// Polygon vertices in the plan's frame (`[x, y]` metres), 3 or more.
        #[cfg_attr(feature = "openapi", schema(value_type = Vec<[f64; 2]>))]
        boundary: Vec<Point2<f64>>,
        /// Distance between sweep lines, metres, > 0.
        spacing_m: f64,
    },
    /// Pick an item up at a pose.
    PickUp {
        /// Where.
        pose: Pose,
        /// What, e.g. `sample-tube-3`.
        item: String,
    },
    /// Put an item down at a pose.
    Deliver {
        /// Where.
        pose: Pose,
        /// What.
        item: String,
    },
    /// Take a science sample at a pose.
    ScienceSample {
        /// Where.
        pose: Pose,
        /// With which instrument, e.g. `drill`, `spectrometer`.
        instrument: String,
    },
}

/// A goal as a client submits it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct GoalSpec {
    /// What to do.
    pub kind: GoalKind,
    /// How close is close enough.
    pub tolerance: Tolerance,
}

/// Progress of one goal.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum GoalStatus {
    /// Still to do.
    Pending,
    /// Done.
    Reached,
    /// Skipped by the operator.
    Skipped,
}

impl fmt::Display for GoalStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            GoalStatus::Pending => "pending",
            GoalStatus::Reached => "reached",
            GoalStatus::Skipped => "skipped",
        })
    }
}

/// A goal in the plan.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Goal {
    /// Its id, unique for the life of the cluster.
    pub id: GoalId,
    /// What to do.
    pub kind: GoalKind,
    /// How close is close enough.
    pub tolerance: Tolerance,
    /// Done, skipped or still to do.
    pub status: GoalStatus,
}

/// Where the plan as a whole stands.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum PlanStatus {
    /// No plan was ever set.
    Empty,
    /// Goals remain.
    Active,
    /// Every goal is reached or skipped.
    Completed,
    /// Stopped by the operator.
    Aborted {
        /// Why.
        reason: String,
    },
}

impl fmt::Display for PlanStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PlanStatus::Empty => f.write_str("empty"),
            PlanStatus::Active => f.write_str("active"),
            PlanStatus::Completed => f.write_str("completed"),
            PlanStatus::Aborted { reason } => write!(f, "aborted ({reason})"),
        }
    }
}

/// The mission plan.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Plan {
    /// Human name, e.g. `sol-42-traverse`.
    pub name: String,
    /// Frame every pose is expressed in (a ROS-style frame id, e.g. `map`).
    pub frame_id: String,
    /// Bumped by every accepted plan command; starts at 0 (no plan).
    pub version: u64,
    /// Where the plan stands.
    pub status: PlanStatus,
    /// Goals in execution order.
    pub goals: Vec<Goal>,
}

impl Default for Plan {
    fn default() -> Self {
        Plan {
            name: String::new(),
            frame_id: String::new(),
            version: 0,
            status: PlanStatus::Empty,
            goals: Vec::new(),
        }
    }
}

impl Plan {
    /// The first goal still to do, if any.
    pub fn current_goal(&self) -> Option<&Goal> {
        self.goals.iter().find(|g| g.status == GoalStatus::Pending)
    }

    /// A goal by id.
    pub fn goal(&self, goal_id: GoalId) -> Option<&Goal> {
        self.goals.iter().find(|g| g.id == goal_id)
    }
}
