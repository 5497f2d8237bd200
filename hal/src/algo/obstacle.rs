//! Obstacle detection from a range scan.

use serde::{Deserialize, Serialize};

use crate::device::Scan;

/// The nearest return found.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Obstacle {
    /// Distance from the sensor, m.
    pub range_m: f64,
    /// Bearing in the body frame, rad (0 = ahead, positive = left).
    pub bearing_rad: f64,
}

/// Valid returns only: finite, non-negative, within the sensor's range.
fn returns(scan: &Scan) -> impl Iterator<Item = Obstacle> + '_ {
    scan.ranges_m
        .iter()
        .enumerate()
        .filter(|(_, r)| r.is_finite() && **r >= 0.0 && **r <= scan.range_m_max)
        .map(|(i, &r)| Obstacle {
            range_m: r,
            bearing_rad: scan.bearing_rad(i),
        })
}

/// The nearest return within `half_angle_rad` of straight ahead.
pub fn nearest_in_cone(scan: &Scan, half_angle_rad: f64) -> Option<Obstacle> {
    returns(scan)
        .filter(|o| o.bearing_rad.abs() <= half_angle_rad)
        .min_by(|a, b| a.range_m.total_cmp(&b.range_m))
}

/// The nearest return inside the corridor the rover would sweep driving
/// straight on: ahead of it and within `half_width_m` of its centre line.
/// Better than a cone for a wide rover, whose corners a narrow cone misses
/// up close.
pub fn nearest_in_corridor(scan: &Scan, half_width_m: f64) -> Option<Obstacle> {
    returns(scan)
        .filter(|o| {
            let (s, c) = o.bearing_rad.sin_cos();
            o.range_m * c > 0.0 && (o.range_m * s).abs() <= half_width_m
        })
        .min_by(|a, b| a.range_m.total_cmp(&b.range_m))
}

/// Should the rover stop? True if something is closer than `stop_m` in the
/// forward cone.
pub fn is_blocked(scan: &Scan, half_angle_rad: f64, stop_m: f64) -> bool {
    nearest_in_cone(scan, half_angle_rad).is_some_and(|o| o.range_m < stop_m)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::device::Timestamp;

    fn scan(ranges_m: Vec<f64>) -> Scan {
        // Five beams at -90°, -45°, 0°, 45°, 90°.
        Scan {
            stamp: Timestamp::default(),
            angle_rad_min: -std::f64::consts::FRAC_PI_2,
            angle_rad_increment: std::f64::consts::FRAC_PI_4,
            range_m_max: 10.0,
            ranges_m,
        }
    }

    #[test]
    fn cone_ignores_returns_outside_it() {
        let s = scan(vec![0.5, 3.0, 4.0, f64::INFINITY, f64::NAN]);
        let o = nearest_in_cone(&s, 0.5).unwrap_or_else(|| panic!("should see the beam ahead"));
        assert_eq!(o.range_m, 4.0);
        let o = nearest_in_cone(&s, 1.0).unwrap_or_else(|| panic!("should see the 45° beam"));
        assert_eq!(o.range_m, 3.0);
        assert!(is_blocked(&s, 1.0, 3.5));
        assert!(!is_blocked(&s, 0.5, 3.5));
        assert_eq!(nearest_in_cone(&scan(vec![f64::INFINITY; 5]), 2.0), None);
    }

    #[test]
    fn corridor_uses_lateral_offset() {
        // 45° at 1 m is 0.71 m to the side: outside a 0.4 m half-width.
        let s = scan(vec![f64::INFINITY, 1.0, 6.0, f64::INFINITY, f64::INFINITY]);
        let o = nearest_in_corridor(&s, 0.4).unwrap_or_else(|| panic!("should see ahead"));
        assert_eq!(o.range_m, 6.0);
        let o = nearest_in_corridor(&s, 0.8).unwrap_or_else(|| panic!("should see side"));
        assert_eq!(o.range_m, 1.0);
    }
}
