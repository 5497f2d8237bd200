//! Plane geometry the rover lives in: poses, velocities, obstacles, and the
//! local tangent plane that turns GPS latitude/longitude into metres.
//!
//! Frame convention (REP-103 style): x east, y north, heading counter-clockwise
//! from +x, in radians, wrapped to (-π, π].

use nalgebra::{Isometry2, Point2, Vector2};
use serde::{Deserialize, Serialize};

/// Mean Earth radius (IUGG), metres. A sphere is plenty for a rover that
/// stays within a few kilometres of its origin.
pub const EARTH_RADIUS_M: f64 = 6_371_008.8;

/// Wraps an angle to (-π, π].
pub fn wrap_angle(angle_rad: f64) -> f64 {
    let two_pi = std::f64::consts::TAU;
    let mut a = angle_rad % two_pi;
    if a <= -std::f64::consts::PI {
        a += two_pi;
    } else if a > std::f64::consts::PI {
        a -= two_pi;
    }
    a
}

/// A planar pose in the local frame.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
pub struct Pose2 {
    /// East, metres.
    pub x_m: f64,
    /// North, metres.
    pub y_m: f64,
    /// Counter-clockwise from east, radians in (-π, π].
    pub heading_rad: f64,
}

impl Pose2 {
    /// A pose; the heading is wrapped.
    pub fn new(x_m: f64, y_m: f64, heading_rad: f64) -> Self {
        Self {
            x_m,
            y_m,
            heading_rad: wrap_angle(heading_rad),
        }
    }

    /// As a nalgebra rigid transform (body frame → local frame).
    pub fn to_isometry(&self) -> Isometry2<f64> {
        Isometry2::new(Vector2::new(self.x_m, self.y_m), self.heading_rad)
    }

    /// From a nalgebra rigid transform.
    pub fn from_isometry(iso: &Isometry2<f64>) -> Self {
        Self::new(iso.translation.vector.x, iso.translation.vector.y, iso.rotation.angle())
    }

    /// The position as a point.
    pub fn position(&self) -> Point2<f64> {
        Point2::new(self.x_m, self.y_m)
    }

    /// Euclidean distance between the positions, metres.
    pub fn distance_to(&self, p: &Point2<f64>) -> f64 {
        (p - self.position()).norm()
    }
}

/// A body-frame velocity of a differential-drive rover.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
pub struct Twist {
    /// Forward speed, m/s.
    pub linear_mps: f64,
    /// Yaw rate, rad/s, counter-clockwise positive.
    pub angular_rps: f64,
}

impl Twist {
    /// Standing still.
    pub const ZERO: Twist = Twist {
        linear_mps: 0.0,
        angular_rps: 0.0,
    };
}

/// A static circular obstacle.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Circle {
    /// Centre east, metres.
    pub x_m: f64,
    /// Centre north, metres.
    pub y_m: f64,
    /// Radius, metres.
    pub radius_m: f64,
}

impl Circle {
    /// Distance along the ray from `origin` in direction `dir` (unit) to the
    /// circle's boundary, if the ray hits it ahead. A ray starting inside the
    /// circle hits at distance 0, because a sensor inside an obstacle is blind.
    pub fn ray_hit(&self, origin: &Point2<f64>, dir: &Vector2<f64>) -> Option<f64> {
        let oc = origin - Point2::new(self.x_m, self.y_m);
        let c = oc.norm_squared() - self.radius_m * self.radius_m;
        if c <= 0.0 {
            return Some(0.0);
        }
        let b = oc.dot(dir);
        let disc = b * b - c;
        if disc < 0.0 {
            return None;
        }
        let t = -b - disc.sqrt();
        (t >= 0.0).then_some(t)
    }

    /// True if a disc of `radius_m` at `p` overlaps this circle.
    pub fn overlaps(&self, p: &Point2<f64>, radius_m: f64) -> bool {
        (p - Point2::new(self.x_m, self.y_m)).norm() < self.radius_m + radius_m
    }
}

/// The geodetic origin of the local frame. Conversion is an equirectangular
/// projection about the origin: error grows with the square of the distance
/// and stays below a centimetre within ~2 km, which is the rover's world.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct GeoOrigin {
    /// Latitude, degrees north.
    pub lat_deg: f64,
    /// Longitude, degrees east.
    pub lon_deg: f64,
    /// Altitude above mean sea level, metres.
    pub alt_m: f64,
}

impl Default for GeoOrigin {
    /// The Mars Desert Research Station in Utah, where URC is held.
    fn default() -> Self {
        Self {
            lat_deg: 38.406_3,
            lon_deg: -110.791_9,
            alt_m: 1_350.0,
        }
    }
}

impl GeoOrigin {
    /// Local (east, north) metres of a latitude/longitude.
    pub fn to_local(&self, lat_deg: f64, lon_deg: f64) -> (f64, f64) {
        let lat0 = self.lat_deg.to_radians();
        let north_m = (lat_deg - self.lat_deg).to_radians() * EARTH_RADIUS_M;
        let east_m = (lon_deg - self.lon_deg).to_radians() * EARTH_RADIUS_M * lat0.cos();
        (east_m, north_m)
    }

    /// Latitude/longitude (degrees) of local (east, north) metres.
    pub fn to_geodetic(&self, east_m: f64, north_m: f64) -> (f64, f64) {
        let lat0 = self.lat_deg.to_radians();
        let lat_deg = self.lat_deg + (north_m / EARTH_RADIUS_M).to_degrees();
        let lon_deg = self.lon_deg + (east_m / (EARTH_RADIUS_M * lat0.cos())).to_degrees();
        (lat_deg, lon_deg)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wrap_angle_stays_in_range() {
        for k in -10..=10 {
            let a = wrap_angle(0.3 + k as f64 * std::f64::consts::TAU);
            assert!((a - 0.3).abs() < 1e-9, "k={k} a={a}");
        }
        assert!((wrap_angle(std::f64::consts::PI) - std::f64::consts::PI).abs() < 1e-12);
        assert!((wrap_angle(-std::f64::consts::PI) - std::f64::consts::PI).abs() < 1e-12);
    }

    #[test]
    fn geo_round_trip() {
        let o = GeoOrigin::default();
        let (lat, lon) = o.to_geodetic(123.4, -56.7);
        let (e, n) = o.to_local(lat, lon);
        assert!((e - 123.4).abs() < 1e-6 && (n + 56.7).abs() < 1e-6, "e={e} n={n}");
    }

    #[test]
    fn ray_hits_circle_ahead_only() {
        let c = Circle {
            x_m: 5.0,
            y_m: 0.0,
            radius_m: 1.0,
        };
        let o = Point2::origin();
        let hit = c.ray_hit(&o, &Vector2::x());
        assert!((hit.unwrap_or(f64::NAN) - 4.0).abs() < 1e-12);
        assert_eq!(c.ray_hit(&o, &-Vector2::x()), None);
        assert_eq!(c.ray_hit(&o, &Vector2::y()), None);
    }
}
