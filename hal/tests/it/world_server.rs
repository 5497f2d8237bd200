//! The world server over real loopback sockets. Waits are bounded polls
//! (see `harness::wait_for`); nothing asserts on how long something took
//! except lower bounds that cannot be violated by a slow machine.

use std::time::Duration;

use cairn_hal::sim::{Fault, ServerConfig, SimHal, FRAME_BYTES_MAX};
use cairn_hal::{
    Device, DeviceKind, Drive, EStop, Error, Gps, Health, Imu, Odometry, RangeScanner, StatusLed, VelocityCommand,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::harness::{quiet_config, wait_for, RunningWorld};

fn cmd(epoch: u64, linear_mps: f64) -> VelocityCommand {
    VelocityCommand {
        epoch,
        linear_mps,
        angular_rps: 0.0,
    }
}

/// Runs blocking sim-HAL code off the async runtime, bounded.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::time::timeout(Duration::from_secs(10), tokio::task::spawn_blocking(f))
        .await
        .unwrap_or_else(|_| panic!("blocking hal call did not finish in 10 s"))
        .unwrap_or_else(|e| panic!("blocking hal call panicked: {e}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t530_stale_epoch_rejected_and_counted_newer_accepted() {
    let world = RunningWorld::start(quiet_config(), ServerConfig::default()).await;
    let mut client = world.client().await;

    tracing::info!("controller at epoch 5 takes the wheels");
    client.drive(cmd(5, 0.5)).await.unwrap_or_else(|e| panic!("{e}"));

    tracing::info!("a deposed controller at epoch 4 is refused");
    match client.drive(cmd(4, 2.0)).await {
        Err(Error::StaleEpoch { epoch: 4, current: 5 }) => {}
        other => panic!("expected a stale-epoch refusal, got {other:?}"),
    }

    tracing::info!("the new controller at epoch 6 is obeyed, after which 5 is stale too");
    client.drive(cmd(6, 0.7)).await.unwrap_or_else(|e| panic!("{e}"));
    assert!(matches!(client.drive(cmd(5, 0.5)).await, Err(Error::StaleEpoch { .. })));

    tracing::info!("the same through the node-side sim hal");
    let addr = world.addr;
    let refused = blocking(move || {
        let hal = SimHal::connect(addr).unwrap_or_else(|e| panic!("{e}"));
        let mut drive = hal.drive();
        let refused = drive.command(&cmd(3, 1.0));
        (refused, drive.health())
    })
    .await;
    assert!(
        matches!(refused.0, Err(Error::StaleEpoch { epoch: 3, current: 6 })),
        "{:?}",
        refused.0
    );
    assert_eq!(refused.1, Health::Ok, "a refusal is not a device fault");

    let status = client.status().await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        (status.fence.current, status.fence.accepted, status.fence.rejected),
        (6, 2, 3),
        "{status:#?}"
    );
    tracing::info!("the accepted epoch-6 command is what the wheels do");
    client.drive(cmd(6, 0.7)).await.unwrap_or_else(|e| panic!("{e}"));
    // Either the rover runs at 0.7 m/s, or (on a badly stalled machine) the
    // watchdog already stopped it; it never runs at the stale 2.0 m/s.
    wait_for(&mut client, Duration::from_secs(5), "the epoch-6 speed", |s| {
        (s.velocity.linear_mps - 0.7).abs() < 1e-9 || s.watchdog_stops > 0
    })
    .await;
    world.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t531_watchdog_stops_the_rover() {
    let server = ServerConfig {
        tick_ms: 10,
        watchdog_ms: 200,
        connections_max: 8,
    };
    let world = RunningWorld::start(quiet_config(), server).await;
    let mut client = world.client().await;

    tracing::info!("one command, then silence");
    client.drive(cmd(1, 1.0)).await.unwrap_or_else(|e| panic!("{e}"));
    let last_command = tokio::time::Instant::now();
    wait_for(&mut client, Duration::from_secs(5), "the rover to move", |s| {
        s.velocity.linear_mps > 0.0 || s.watchdog_stops > 0
    })
    .await;

    tracing::info!("the watchdog must stop it, and not before its period");
    let status = wait_for(&mut client, Duration::from_secs(5), "the watchdog", |s| {
        s.watchdog_stops == 1 && s.velocity.linear_mps == 0.0
    })
    .await;
    assert!(last_command.elapsed() >= Duration::from_millis(200));
    assert!(status.pose.x_m > 0.0, "it moved before it stopped: {status:#?}");

    tracing::info!("a fresh command moves it again");
    client.drive(cmd(1, 1.0)).await.unwrap_or_else(|e| panic!("{e}"));
    wait_for(&mut client, Duration::from_secs(5), "the rover to move again", |s| {
        s.velocity.linear_mps > 0.0 || s.watchdog_stops > 1
    })
    .await;
    world.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t532_bad_frames_close_only_that_connection() {
    let world = RunningWorld::start(quiet_config(), ServerConfig::default()).await;
    let mut bystander = world.client().await;
    bystander.hello().await.unwrap_or_else(|e| panic!("{e}"));

    let closed = |mut s: tokio::net::TcpStream| async move {
        let mut buf = [0u8; 64];
        // The server must close: EOF (0) or a reset. A response would be a bug.
        match tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => {}
            Ok(Ok(n)) => panic!("server answered {n} bytes to a bad frame"),
            Err(_) => panic!("server kept the connection open for 5 s"),
        }
    };

    tracing::info!("an oversized length prefix");
    let mut s = tokio::net::TcpStream::connect(world.addr)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let prefix = u32::try_from(FRAME_BYTES_MAX + 1).unwrap_or(u32::MAX).to_be_bytes();
    s.write_all(&prefix).await.unwrap_or_else(|e| panic!("{e}"));
    closed(s).await;

    tracing::info!("a well-sized frame of garbage");
    let mut s = tokio::net::TcpStream::connect(world.addr)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let mut frame = 6u32.to_be_bytes().to_vec();
    frame.extend_from_slice(&[0xFF; 6]);
    s.write_all(&frame).await.unwrap_or_else(|e| panic!("{e}"));
    closed(s).await;

    tracing::info!("the server keeps serving old and new connections");
    bystander
        .status()
        .await
        .unwrap_or_else(|e| panic!("bystander lost: {e}"));
    let mut fresh = world.client().await;
    fresh.drive(cmd(1, 0.1)).await.unwrap_or_else(|e| panic!("{e}"));
    world.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t533_sim_hal_reads_every_device_and_tracks_health() {
    let mut config = quiet_config();
    config.obstacles = vec![cairn_hal::Circle {
        x_m: 4.0,
        y_m: 0.0,
        radius_m: 1.0,
    }];
    let world = RunningWorld::start(config, ServerConfig::default()).await;
    let mut client = world.client().await;
    let addr = world.addr;

    tracing::info!("every device answers through the sim hal");
    blocking(move || {
        let hal = SimHal::connect(addr).unwrap_or_else(|e| panic!("{e}"));
        let imu = hal.imu().read().unwrap_or_else(|e| panic!("imu: {e}"));
        assert!((imu.accel_mps2.z - cairn_hal::sim::GRAVITY_MPS2).abs() < 1e-9);
        let fix = hal.gps().read().unwrap_or_else(|e| panic!("gps: {e}"));
        assert!(fix.quality.has_position());
        let scan = hal.range().scan().unwrap_or_else(|e| panic!("range: {e}"));
        let ahead = scan.ranges_m[scan.ranges_m.len() / 2];
        assert!((ahead - 3.0).abs() < 1e-9, "range ahead {ahead}");
        hal.odometry().read().unwrap_or_else(|e| panic!("odometry: {e}"));
        assert!(!hal.estop().read().unwrap_or_else(|e| panic!("estop: {e}")).engaged);
        hal.led().set(true).unwrap_or_else(|e| panic!("led: {e}"));
    })
    .await;
    assert!(client.status().await.unwrap_or_else(|e| panic!("{e}")).led_on);

    tracing::info!("a failed imu turns the node's imu health Failed after a few reads");
    client
        .inject_fault(DeviceKind::Imu, Fault::Failed)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let health = blocking(move || {
        let hal = SimHal::connect(addr).unwrap_or_else(|e| panic!("{e}"));
        let mut imu = hal.imu();
        for _ in 0..5 {
            assert!(matches!(imu.read(), Err(Error::DeviceFailed { .. })));
        }
        imu.health()
    })
    .await;
    assert!(health.is_failed(), "{health:?}");

    tracing::info!("a stuck gps is reported Degraded by the node");
    client
        .inject_fault(DeviceKind::Gps, Fault::Stuck)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let health = blocking(move || {
        let hal = SimHal::connect(addr).unwrap_or_else(|e| panic!("{e}"));
        let mut gps = hal.gps();
        for _ in 0..12 {
            gps.read().unwrap_or_else(|e| panic!("gps: {e}"));
        }
        gps.health()
    })
    .await;
    assert!(
        matches!(&health, Health::Degraded { reason } if reason.contains("stuck")),
        "{health:?}"
    );

    tracing::info!("a stuck lidar is Degraded; an open field with no return in range is not stuck");
    client
        .inject_fault(DeviceKind::Range, Fault::Stuck)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let health = blocking(move || {
        let hal = SimHal::connect(addr).unwrap_or_else(|e| panic!("{e}"));
        let mut range = hal.range();
        for _ in 0..12 {
            range.scan().unwrap_or_else(|e| panic!("range: {e}"));
        }
        range.health()
    })
    .await;
    assert!(
        matches!(&health, Health::Degraded { reason } if reason.contains("stuck")),
        "{health:?}"
    );
    let open = RunningWorld::start(quiet_config(), ServerConfig::default()).await;
    let open_addr = open.addr;
    let health = blocking(move || {
        let hal = SimHal::connect(open_addr).unwrap_or_else(|e| panic!("{e}"));
        let mut range = hal.range();
        for _ in 0..12 {
            let scan = range.scan().unwrap_or_else(|e| panic!("range: {e}"));
            assert!(scan.ranges_m.iter().all(|r| r.is_infinite()));
        }
        range.health()
    })
    .await;
    assert_eq!(health, Health::Ok);
    open.stop().await;

    let status = client.status().await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(status.faults[0], (DeviceKind::Imu, Fault::Failed));
    assert_eq!(status.faults[1], (DeviceKind::Gps, Fault::Stuck));
    world.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t534_estop_stops_and_refuses_motion() {
    let world = RunningWorld::start(quiet_config(), ServerConfig::default()).await;
    let mut client = world.client().await;
    client.drive(cmd(1, 1.0)).await.unwrap_or_else(|e| panic!("{e}"));
    client.set_estop(true).await.unwrap_or_else(|e| panic!("{e}"));
    assert!(matches!(client.drive(cmd(1, 1.0)).await, Err(Error::EStopEngaged)));
    wait_for(&mut client, Duration::from_secs(5), "the rover to stop", |s| {
        s.estop_engaged && s.velocity.linear_mps == 0.0
    })
    .await;
    let addr = world.addr;
    let engaged = blocking(move || {
        let hal = SimHal::connect(addr).unwrap_or_else(|e| panic!("{e}"));
        hal.estop().read().map(|r| r.engaged)
    })
    .await;
    assert!(matches!(engaged, Ok(true)), "{engaged:?}");
    world.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t535_sim_hal_reports_a_missing_world() {
    tracing::info!("bind and drop a listener to get a port nobody serves");
    let addr = {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        l.local_addr().unwrap_or_else(|e| panic!("{e}"))
    };
    let outcome = blocking(move || SimHal::connect(addr).map(|_| ())).await;
    assert!(
        matches!(outcome, Err(Error::Io { .. } | Error::Timeout { .. })),
        "{outcome:?}"
    );
}
