//! Fault injection, each kind, on the world model.

use cairn_hal::sim::{Fault, World, WorldConfig};
use cairn_hal::{Circle, DeviceKind, Error, VelocityCommand};

use crate::harness::world;

fn moving_world() -> World {
    let mut w = world(WorldConfig {
        seed: 42,
        obstacles: vec![Circle {
            x_m: 6.0,
            y_m: 0.0,
            radius_m: 0.5,
        }],
        ..WorldConfig::default()
    });
    w.command(&VelocityCommand {
        epoch: 1,
        linear_mps: 0.5,
        angular_rps: 0.0,
    })
    .unwrap_or_else(|e| panic!("{e}"));
    w
}

fn inject(w: &mut World, device: DeviceKind, fault: Fault) {
    w.inject_fault(device, fault)
        .unwrap_or_else(|e| panic!("inject {fault:?} into {device}: {e}"));
}

#[test]
fn t520_dropout_misses_about_the_given_fraction() {
    tracing::info!("30% dropout on the imu");
    let mut w = moving_world();
    inject(&mut w, DeviceKind::Imu, Fault::Dropout { probability: 0.3 });
    let mut missed = 0;
    for _ in 0..2000 {
        w.step(0.01);
        match w.read_imu() {
            Ok(_) => {}
            Err(Error::NoReading {
                device: DeviceKind::Imu,
            }) => missed += 1,
            Err(e) => panic!("unexpected error {e}"),
        }
    }
    // Binomial(2000, 0.3): mean 600, sd 20.5; ±5 sd.
    assert!((500..=700).contains(&missed), "missed {missed} of 2000");
    tracing::info!("other sensors are unaffected");
    assert!(w.read_gps().is_ok() && w.read_odometry().is_ok());
}

#[test]
fn t521_stuck_value_freezes_the_reading_not_the_stamp() {
    let mut w = moving_world();
    inject(&mut w, DeviceKind::Gps, Fault::Stuck);
    let first = w.read_gps().unwrap_or_else(|e| panic!("{e}"));
    for _ in 0..20 {
        w.step(0.1);
        let fix = w.read_gps().unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            (fix.lat_deg, fix.lon_deg, fix.alt_m),
            (first.lat_deg, first.lon_deg, first.alt_m)
        );
        assert!(fix.stamp > first.stamp);
    }
    tracing::info!("clearing the fault brings the rover's real (moved) position back");
    inject(&mut w, DeviceKind::Gps, Fault::None);
    let fix = w.read_gps().unwrap_or_else(|e| panic!("{e}"));
    assert_ne!(fix.lon_deg, first.lon_deg);
}

#[test]
fn t522_noise_burst_inflates_noise_then_expires() {
    let mut w = world(WorldConfig {
        seed: 9,
        obstacles: vec![Circle {
            x_m: 5.0,
            y_m: 0.0,
            radius_m: 1.0,
        }],
        ..WorldConfig::default()
    });
    let ahead_spread = |w: &mut World| {
        let ranges: Vec<f64> = (0..200)
            .map(|_| {
                let s = w.scan().unwrap_or_else(|e| panic!("{e}"));
                s.ranges_m[s.ranges_m.len() / 2]
            })
            .collect();
        let mean = ranges.iter().sum::<f64>() / ranges.len() as f64;
        (ranges.iter().map(|r| (r - mean).powi(2)).sum::<f64>() / ranges.len() as f64).sqrt()
    };
    let calm = ahead_spread(&mut w);
    inject(
        &mut w,
        DeviceKind::Range,
        Fault::NoiseBurst {
            factor: 20.0,
            duration_s: 1.0,
        },
    );
    let burst = ahead_spread(&mut w);
    assert!(burst > 10.0 * calm, "calm sd {calm:.4} m, burst sd {burst:.4} m");
    w.step(0.5);
    let remaining = w.faults().into_iter().find(|(d, _)| *d == DeviceKind::Range);
    assert!(
        matches!(remaining, Some((_, Fault::NoiseBurst { duration_s, .. })) if (duration_s - 0.5).abs() < 1e-9),
        "{remaining:?}"
    );
    w.step(0.6);
    assert_eq!(w.status().faults[2], (DeviceKind::Range, Fault::None));
    let after = ahead_spread(&mut w);
    assert!(after < 3.0 * calm, "calm sd {calm:.4} m, after sd {after:.4} m");
}

#[test]
fn t523_total_failure_fails_every_read_until_cleared() {
    let mut w = moving_world();
    inject(&mut w, DeviceKind::Odometry, Fault::Failed);
    for _ in 0..10 {
        w.step(0.05);
        assert!(matches!(
            w.read_odometry(),
            Err(Error::DeviceFailed {
                device: DeviceKind::Odometry,
                ..
            })
        ));
    }
    inject(&mut w, DeviceKind::Odometry, Fault::None);
    assert!(w.read_odometry().is_ok());
}

#[test]
fn t524_invalid_faults_are_refused() {
    let mut w = moving_world();
    assert!(matches!(
        w.inject_fault(DeviceKind::Imu, Fault::Dropout { probability: 1.5 }),
        Err(Error::InvalidFault { .. })
    ));
    assert!(matches!(
        w.inject_fault(DeviceKind::Drive, Fault::Failed),
        Err(Error::InvalidFault { .. })
    ));
    assert!(matches!(
        w.inject_fault(
            DeviceKind::Gps,
            Fault::NoiseBurst {
                factor: 2.0,
                duration_s: 0.0
            }
        ),
        Err(Error::InvalidFault { .. })
    ));
}
