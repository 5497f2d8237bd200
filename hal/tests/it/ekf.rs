//! EKF against the simulated world with seeded noise.
//!
//! The world's default noise (GPS 0.5 m per axis, gyro 0.01 rad/s, wheel
//! 0.02 m/s) is fused at 50 Hz (gyro, odometry) and 5 Hz (GPS). Each
//! tolerance is about 1.5× the worst error seen over seeds 0..30 when it was
//! set (full mode, line: 0.33 m / 0.029 rad; turn: 0.30 m / 0.037 rad;
//! gps-only: 0.70 m / 0.27 rad), so a fixed seed is not hiding a lucky draw.

use cairn_hal::algo::{Ekf, EkfConfig, EkfMode};
use cairn_hal::geo::wrap_angle;
use cairn_hal::sim::{World, WorldConfig};
use cairn_hal::{Pose2, VelocityCommand};

use crate::harness::world;

const DT_S: f64 = 0.02;
const GPS_EVERY: usize = 10;

struct Run {
    position_m_err_max: f64,
    heading_rad_err_max: f64,
    final_position_m_std: f64,
}

/// Drives `world` at (v, ω) for `secs`, filtering as it goes; returns the
/// worst error over the last `settle_secs` seconds.
fn run(world: &mut World, ekf: &mut Ekf, v: f64, w: f64, secs: f64, settle_secs: f64) -> Run {
    let cmd = VelocityCommand {
        epoch: 1,
        linear_mps: v,
        angular_rps: w,
    };
    world.command(&cmd).unwrap_or_else(|e| panic!("{e}"));
    let origin = world.config().origin;
    let steps = (secs / DT_S).round() as usize;
    let settle_from = steps - (settle_secs / DT_S).round() as usize;
    let mut out = Run {
        position_m_err_max: 0.0,
        heading_rad_err_max: 0.0,
        final_position_m_std: f64::NAN,
    };
    for i in 0..steps {
        world.step(DT_S);
        ekf.predict(DT_S);
        let imu = world.read_imu().unwrap_or_else(|e| panic!("{e}"));
        ekf.update_gyro(imu.angular_rate_rps.z)
            .unwrap_or_else(|e| panic!("{e}"));
        let odom = world.read_odometry().unwrap_or_else(|e| panic!("{e}"));
        ekf.update_odometry(&odom.twist).unwrap_or_else(|e| panic!("{e}"));
        if i % GPS_EVERY == 0 {
            let fix = world.read_gps().unwrap_or_else(|e| panic!("{e}"));
            ekf.update_gps(&fix, &origin).unwrap_or_else(|e| panic!("{e}"));
        }
        if i >= settle_from {
            let (truth, est) = (world.pose(), ekf.pose());
            let pos_err = (truth.position() - est.position()).norm();
            let head_err = wrap_angle(truth.heading_rad - est.heading_rad).abs();
            out.position_m_err_max = out.position_m_err_max.max(pos_err);
            out.heading_rad_err_max = out.heading_rad_err_max.max(head_err);
        }
    }
    out.final_position_m_std = ekf.position_m_std();
    out
}

fn noisy(seed: u64) -> World {
    world(WorldConfig {
        seed,
        ..WorldConfig::default()
    })
}

/// Started 3.6 m and 0.4 rad off, the filter must converge within 20 s
/// and then stay within 0.5 m and 0.05 rad for the last 10 s.
#[test]
fn t510_ekf_converges_on_a_straight_line() {
    tracing::info!("a wrong initial guess, a straight drive at 1 m/s");
    let mut w = noisy(7);
    let mut ekf =
        Ekf::new(EkfConfig::default(), Pose2::new(3.0, -2.0, 0.4), EkfMode::Full).unwrap_or_else(|e| panic!("{e}"));
    let r = run(&mut w, &mut ekf, 1.0, 0.0, 30.0, 10.0);
    assert!(
        r.position_m_err_max < 0.5 && r.heading_rad_err_max < 0.05,
        "position error {:.3} m, heading error {:.4} rad, reported std {:.3} m",
        r.position_m_err_max,
        r.heading_rad_err_max,
        r.final_position_m_std
    );
}

/// A circle of radius 3.3 m (1 m/s, 0.3 rad/s), two laps: within 0.5 m and
/// 0.08 rad over the last lap.
#[test]
fn t511_ekf_converges_on_a_constant_rate_turn() {
    tracing::info!("a constant-rate turn, two laps");
    let mut w = noisy(11);
    let mut ekf =
        Ekf::new(EkfConfig::default(), Pose2::new(1.0, 1.0, -0.3), EkfMode::Full).unwrap_or_else(|e| panic!("{e}"));
    let lap_s = std::f64::consts::TAU / 0.3;
    let r = run(&mut w, &mut ekf, 1.0, 0.3, 2.0 * lap_s, lap_s);
    assert!(
        r.position_m_err_max < 0.5 && r.heading_rad_err_max < 0.08,
        "position error {:.3} m, heading error {:.4} rad",
        r.position_m_err_max,
        r.heading_rad_err_max
    );
}

/// GPS only (IMU failed): heading must be recovered from motion alone, from
/// 0.2 m of travel between fixes carrying 0.5 m of noise, hence much looser:
/// within 1 m and 0.35 rad over the last 10 s of 40 s.
#[test]
fn t512_ekf_gps_only_recovers_heading_from_motion() {
    tracing::info!("gps-only: odometry and gyro offered but ignored");
    let mut w = noisy(3);
    let mut ekf =
        Ekf::new(EkfConfig::default(), Pose2::new(0.0, 0.0, 0.5), EkfMode::GpsOnly).unwrap_or_else(|e| panic!("{e}"));
    let r = run(&mut w, &mut ekf, 1.0, 0.0, 40.0, 10.0);
    assert!(
        r.position_m_err_max < 1.0 && r.heading_rad_err_max < 0.35,
        "position error {:.3} m, heading error {:.4} rad",
        r.position_m_err_max,
        r.heading_rad_err_max
    );
    assert_eq!(
        ekf.update_gyro(1.0).ok(),
        Some(false),
        "gps-only mode must ignore the gyro"
    );
}

/// Same seed, same estimate: the whole pipeline is deterministic.
#[test]
fn t513_ekf_run_is_reproducible() {
    let go = || {
        let mut w = noisy(5);
        let mut ekf = Ekf::new(EkfConfig::default(), Pose2::default(), EkfMode::Full).unwrap_or_else(|e| panic!("{e}"));
        run(&mut w, &mut ekf, 0.8, 0.1, 5.0, 1.0);
        ekf.pose()
    };
    assert_eq!(go(), go());
}
