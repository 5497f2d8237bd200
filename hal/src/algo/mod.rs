//! Pure algorithms the perception and control agents run: no I/O, no clock,
//! no randomness, so they are tested against closed forms.
//!
//! - [`ekf`]: localisation fusing GPS, wheel odometry and gyro, with a
//!   GPS-only mode for a failed IMU.
//! - [`pursuit`]: pure-pursuit waypoint following under a speed limit.
//! - [`obstacle`]: nearest obstacle in a forward cone or corridor.

pub mod ekf;
pub mod obstacle;
pub mod pursuit;

pub use ekf::{Ekf, EkfConfig, EkfMode};
pub use obstacle::{is_blocked, nearest_in_cone, nearest_in_corridor, Obstacle};
pub use pursuit::{PurePursuit, PursuitConfig, PursuitStep};
