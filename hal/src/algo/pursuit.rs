//! Pure-pursuit waypoint following.
//!
//! The follower steers towards a point `lookahead_m` further along the
//! current path segment (from the last waypoint reached to the next one) with
//! curvature `κ = 2·y / d²` (the arc through the rover and that point), and
//! slows on approach to the final waypoint. If the target is far off to the
//! side or behind, it turns in place first, since a differential drive can.
//!
//! The speed limit is an argument of every step, not config, because it comes
//! from the replicated degradation mode and can change between steps.

use nalgebra::{Point2, Vector2};
use serde::{Deserialize, Serialize};

use crate::error::Error;
use crate::geo::{Pose2, Twist};

/// Tuning.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PursuitConfig {
    /// Look-ahead distance along the path, m.
    pub lookahead_m: f64,
    /// A waypoint counts as reached within this distance, m.
    pub goal_tolerance_m: f64,
    /// Top speed, m/s (the per-step limit can only lower it).
    pub speed_mps_max: f64,
    /// Top turn rate, rad/s.
    pub angular_rps_max: f64,
    /// Start slowing this far from the final waypoint, m.
    pub slowdown_m: f64,
    /// Turn in place when the target's bearing exceeds this, rad.
    pub turn_in_place_rad: f64,
}

impl Default for PursuitConfig {
    fn default() -> Self {
        Self {
            lookahead_m: 1.5,
            goal_tolerance_m: 0.5,
            speed_mps_max: 1.0,
            angular_rps_max: 1.0,
            slowdown_m: 2.0,
            turn_in_place_rad: 1.2,
        }
    }
}

/// What the follower wants this step.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub enum PursuitStep {
    /// Drive with this velocity.
    Drive {
        /// The velocity to command.
        twist: Twist,
        /// Index of the waypoint being approached.
        waypoint_index: usize,
        /// Path length left: to the next waypoint and through the rest, m.
        distance_m_remaining: f64,
    },
    /// Every waypoint has been reached; stop.
    Arrived,
}

/// A pure-pursuit follower over a fixed list of waypoints.
#[derive(Debug, Clone)]
pub struct PurePursuit {
    config: PursuitConfig,
    waypoints: Vec<Point2<f64>>,
    next: usize,
    segment_start: Point2<f64>,
}

impl PurePursuit {
    /// A follower that starts from `start` (the rover's position) and visits
    /// `waypoints` in order.
    pub fn new(config: PursuitConfig, start: Point2<f64>, waypoints: Vec<Point2<f64>>) -> Result<Self, Error> {
        let positive = [
            ("lookahead_m", config.lookahead_m),
            ("goal_tolerance_m", config.goal_tolerance_m),
            ("speed_mps_max", config.speed_mps_max),
            ("angular_rps_max", config.angular_rps_max),
            ("slowdown_m", config.slowdown_m),
            ("turn_in_place_rad", config.turn_in_place_rad),
        ];
        for (name, v) in positive {
            if !(v.is_finite() && v > 0.0) {
                return Err(Error::InvalidConfig {
                    reason: format!("pursuit {name} must be finite and positive, got {v}"),
                });
            }
        }
        let all_finite = waypoints
            .iter()
            .chain([&start])
            .all(|p| p.x.is_finite() && p.y.is_finite());
        if !all_finite {
            return Err(Error::InvalidConfig {
                reason: "waypoints must be finite".to_string(),
            });
        }
        Ok(Self {
            config,
            waypoints,
            next: 0,
            segment_start: start,
        })
    }

    /// Index of the waypoint being approached; `None` once all are reached.
    pub fn next_waypoint(&self) -> Option<usize> {
        (self.next < self.waypoints.len()).then_some(self.next)
    }

    /// How many waypoints the follower visits in all.
    pub fn waypoint_count(&self) -> usize {
        self.waypoints.len()
    }

    /// Path length left from `pose`, m.
    pub fn distance_m_remaining(&self, pose: &Pose2) -> f64 {
        let Some(next) = self.waypoints.get(self.next) else {
            return 0.0;
        };
        let rest: f64 = self.waypoints[self.next..]
            .windows(2)
            .map(|w| (w[1] - w[0]).norm())
            .sum();
        pose.distance_to(next) + rest
    }

    /// One control step from `pose` under `speed_mps_limit` (from the
    /// degradation mode; 0 or NaN means stand still).
    pub fn step(&mut self, pose: &Pose2, speed_mps_limit: f64) -> PursuitStep {
        while let Some(wp) = self.waypoints.get(self.next) {
            if pose.distance_to(wp) > self.config.goal_tolerance_m {
                break;
            }
            self.segment_start = *wp;
            self.next += 1;
        }
        let Some(&goal) = self.waypoints.get(self.next) else {
            return PursuitStep::Arrived;
        };
        let distance_m_remaining = self.distance_m_remaining(pose);
        let limit = if speed_mps_limit.is_nan() {
            0.0
        } else {
            speed_mps_limit.max(0.0)
        };
        let speed_max = self.config.speed_mps_max.min(limit);
        if speed_max <= 0.0 {
            return PursuitStep::Drive {
                twist: Twist::ZERO,
                waypoint_index: self.next,
                distance_m_remaining,
            };
        }
        // Turn rate is limited in proportion to speed: a rover held to half
        // speed also turns at half rate, so the degraded mode is gentler overall.
        let angular_max = self.config.angular_rps_max * (speed_max / self.config.speed_mps_max);

        let target = self.lookahead_point(pose, goal);
        let to_target = target - pose.position();
        let (s, c) = pose.heading_rad.sin_cos();
        // Into the body frame: x ahead, y to the left.
        let body = Vector2::new(c * to_target.x + s * to_target.y, -s * to_target.x + c * to_target.y);
        let bearing = body.y.atan2(body.x);
        let twist = if bearing.abs() > self.config.turn_in_place_rad {
            Twist {
                linear_mps: 0.0,
                angular_rps: angular_max.copysign(bearing),
            }
        } else {
            let d2 = body.norm_squared().max(1e-9);
            let curvature = 2.0 * body.y / d2;
            // Slow towards the last waypoint, but never below a quarter of
            // the top speed so the rover does not creep to a halt short of it.
            let approach = (distance_m_remaining / self.config.slowdown_m).clamp(0.25, 1.0);
            let mut v = speed_max * approach;
            let mut w = v * curvature;
            if w.abs() > angular_max {
                w = angular_max.copysign(w);
                v = (angular_max / curvature.abs()).min(v);
            }
            Twist {
                linear_mps: v,
                angular_rps: w,
            }
        };
        PursuitStep::Drive {
            twist,
            waypoint_index: self.next,
            distance_m_remaining,
        }
    }

    /// The point `lookahead_m` beyond the rover's projection onto the current
    /// segment, or the segment's end if that is closer.
    fn lookahead_point(&self, pose: &Pose2, goal: Point2<f64>) -> Point2<f64> {
        let a = self.segment_start;
        let ab = goal - a;
        let len2 = ab.norm_squared();
        if len2 < 1e-12 {
            return goal;
        }
        let t = ((pose.position() - a).dot(&ab) / len2).clamp(0.0, 1.0);
        let foot = a + ab * t;
        let remaining = (goal - foot).norm();
        if remaining <= self.config.lookahead_m {
            goal
        } else {
            foot + ab * (self.config.lookahead_m / len2.sqrt())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::device::VelocityCommand;
    use crate::sim::{NoiseConfig, World, WorldConfig};

    #[test]
    fn respects_speed_limit_and_zero_means_stop() {
        let mut pp = PurePursuit::new(PursuitConfig::default(), Point2::origin(), vec![Point2::new(10.0, 0.0)])
            .unwrap_or_else(|e| panic!("{e}"));
        let pose = Pose2::default();
        match pp.step(&pose, 0.5) {
            PursuitStep::Drive { twist, .. } => assert!((twist.linear_mps - 0.5).abs() < 1e-9, "{twist:?}"),
            other => panic!("{other:?}"),
        }
        match pp.step(&pose, 0.0) {
            PursuitStep::Drive { twist, .. } => assert_eq!(twist, Twist::ZERO),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn turns_in_place_towards_a_target_behind() {
        let mut pp = PurePursuit::new(PursuitConfig::default(), Point2::origin(), vec![Point2::new(-5.0, 0.1)])
            .unwrap_or_else(|e| panic!("{e}"));
        match pp.step(&Pose2::default(), 1.0) {
            PursuitStep::Drive { twist, .. } => {
                assert_eq!(twist.linear_mps, 0.0);
                assert!(twist.angular_rps > 0.0, "{twist:?}");
            }
            other => panic!("{other:?}"),
        }
    }

    /// Closed loop on the noiseless world: reaches a square's four corners.
    #[test]
    fn drives_a_square_in_the_world() {
        let mut world = World::new(WorldConfig {
            noise: NoiseConfig {
                gyro_rps_std: 0.0,
                accel_mps2_std: 0.0,
                imu_yaw_rad_std: 0.0,
                gps_m_std: 0.0,
                gps_alt_m_std: 0.0,
                gps_hdop: 1.0,
                wheel_mps_std: 0.0,
                range_m_std: 0.0,
            },
            ..WorldConfig::default()
        })
        .unwrap_or_else(|e| panic!("{e}"));
        let corners = vec![
            Point2::new(5.0, 0.0),
            Point2::new(5.0, 5.0),
            Point2::new(0.0, 5.0),
            Point2::new(0.0, 0.0),
        ];
        let mut pp =
            PurePursuit::new(PursuitConfig::default(), Point2::origin(), corners).unwrap_or_else(|e| panic!("{e}"));
        let mut last_remaining = f64::INFINITY;
        for step in 0..3000 {
            match pp.step(&world.pose(), 1.0) {
                PursuitStep::Arrived => {
                    assert!(world.pose().distance_to(&Point2::origin()) <= 0.5);
                    return;
                }
                PursuitStep::Drive {
                    twist,
                    distance_m_remaining,
                    ..
                } => {
                    assert!(twist.linear_mps <= 1.0 + 1e-9);
                    assert!(
                        distance_m_remaining <= last_remaining + 0.05,
                        "step {step}: distance grew"
                    );
                    last_remaining = distance_m_remaining;
                    world
                        .command(&VelocityCommand::from_twist(1, twist))
                        .unwrap_or_else(|e| panic!("{e}"));
                }
            }
            world.step(0.05);
        }
        panic!(
            "did not arrive; at {:?}, next waypoint {:?}",
            world.pose(),
            pp.next_waypoint()
        );
    }
}
