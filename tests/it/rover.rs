//! The simulated rover driven by a real 3-node cluster: a world server in
//! the test process, nodes as `cairn node run --sim ADDR` processes.

use std::time::Duration;

use cairn::hal::sim::Fault;
use cairn::hal::sim::ServerConfig;
use cairn::hal::sim::World;
use cairn::hal::sim::WorldClient;
use cairn::hal::sim::WorldConfig;
use cairn::hal::sim::WorldServer;
use cairn::hal::sim::WorldStatus;
use cairn::hal::DeviceKind;
use serde_json::json;
use serde_json::Value;
use tokio::time::Instant;

use crate::harness::Options;
use crate::harness::ProcCluster;

const MISSION_LIMIT: Duration = Duration::from_secs(150);

struct Sim {
    addr: std::net::SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl Drop for Sim {
    fn drop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
    }
}

async fn world() -> Sim {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/missions/rover-world.json");
    let config: WorldConfig = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let server = WorldServer::bind("127.0.0.1:0", World::new(config).unwrap(), ServerConfig::default())
        .await
        .unwrap();
    let addr = server.local_addr().unwrap();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(server.run(async {
        let _ = rx.await;
    }));
    Sim { addr, stop: Some(tx) }
}

async fn cluster(sim: &Sim) -> ProcCluster {
    let c = ProcCluster::start_with(
        3,
        Options {
            extra_args: vec!["--sim".into(), sim.addr.to_string()],
            ..Options::default()
        },
    )
    .await;
    c.wait_leader(Duration::from_secs(10)).await;
    c
}

fn waypoint(x: f64, y: f64) -> Value {
    json!({"kind": {"Waypoint": {"pose": {"position": [x, y, 0.0], "heading_rad": 0.0}}},
           "tolerance": {"position_m": 0.5, "heading_rad": null}})
}

/// Loads a plan and submits perceive + navigate; returns navigate's id.
async fn start_mission(c: &ProcCluster, points: &[(f64, f64)]) -> u64 {
    let goals: Vec<Value> = points.iter().map(|(x, y)| waypoint(*x, *y)).collect();
    let (code, _, body) = c
        .send(
            1,
            reqwest::Method::PUT,
            "/v1/mission/plan",
            Some(&json!({"name": "test traverse", "frame_id": "map", "goals": goals}).to_string()),
            &[],
        )
        .await;
    assert_eq!(code, 200, "{body}");
    c.post(
        1,
        "/v1/tasks",
        &json!({"kind": "perceive", "required_capabilities": ["sensors"]}),
    )
    .await
    .unwrap();
    let r = c
        .post(
            1,
            "/v1/tasks",
            &json!({"kind": "navigate", "required_capabilities": ["drive"]}),
        )
        .await
        .unwrap();
    task_id(&r)
}

fn task_id(write: &Value) -> u64 {
    let r = &write["response"];
    r["TaskCreated"]["task_id"]
        .as_u64()
        .or_else(|| r["TaskCreated"].as_u64())
        .unwrap_or_else(|| panic!("no task id in {write}"))
}

/// Any live node's view of the task.
async fn task(c: &ProcCluster, live: &[u64], id: u64) -> Value {
    for n in live {
        if let Ok(t) = c.get(*n, &format!("/v1/tasks/{id}")).await {
            return t;
        }
    }
    Value::Null
}

async fn mission(c: &ProcCluster, live: &[u64]) -> Value {
    for n in live {
        if let Ok(m) = c.get(*n, "/v1/mission").await {
            return m;
        }
    }
    Value::Null
}

fn goals_reached(m: &Value) -> usize {
    m["plan"]["goals"]
        .as_array()
        .map(|g| g.iter().filter(|g| g["status"] == "Reached").count())
        .unwrap_or(0)
}

async fn poll<T>(what: &str, limit: Duration, mut f: impl AsyncFnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {limit:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn status(client: &mut WorldClient) -> WorldStatus {
    client.status().await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t196_control_moves_to_another_node_after_kill9_and_the_rover_reaches_every_waypoint() {
    let sim = world().await;
    let mut client = WorldClient::connect(sim.addr).await.unwrap();
    let mut c = cluster(&sim).await;
    let route = [(10.0, 0.0), (10.0, 8.0), (2.0, 10.0), (-3.0, 5.0), (0.0, 0.0)];
    let nav = start_mission(&c, &route).await;
    let mut live = vec![1, 2, 3];

    // Mid-route: two goals reached.
    let (holder, old_epoch) = poll("two goals reached", MISSION_LIMIT, async || {
        let m = mission(&c, &live).await;
        let t = task(&c, &live, nav).await;
        (goals_reached(&m) >= 2 && t["state"] == "Running").then(|| {
            (
                t["lease"]["node_id"].as_u64().unwrap(),
                t["lease"]["epoch"].as_u64().unwrap(),
            )
        })
    })
    .await;
    c.kill(holder);
    live.retain(|n| *n != holder);
    let killed_at = status(&mut client).await;

    // Control resumes elsewhere, under a newer epoch, and finishes the route.
    let new_epoch = poll(
        "navigate running on another node",
        Duration::from_secs(30),
        async || {
            let t = task(&c, &live, nav).await;
            let node = t["lease"]["node_id"].as_u64()?;
            (t["state"] == "Running" && node != holder).then(|| t["lease"]["epoch"].as_u64().unwrap())
        },
    )
    .await;
    assert!(new_epoch > old_epoch, "{new_epoch} <= {old_epoch}");
    poll("navigate succeeded", MISSION_LIMIT, async || {
        let t = task(&c, &live, nav).await;
        assert_ne!(t["state"], "Failed", "{t}");
        (t["state"] == "Succeeded").then_some(())
    })
    .await;
    let m = mission(&c, &live).await;
    assert_eq!(goals_reached(&m), route.len(), "{m}");

    let s = status(&mut client).await;
    assert!(s.pose.x_m.hypot(s.pose.y_m) < 1.0, "ended at {:?}", s.pose);
    assert_eq!(s.collisions, 0);
    // The world's record: the dead holder's epoch drove only before the
    // new holder's first command, and nothing older drove after it.
    let first_new = s
        .epochs
        .iter()
        .find(|e| e.epoch == new_epoch)
        .unwrap_or_else(|| panic!("{:?}", s.epochs))
        .first;
    for e in s.epochs.iter().filter(|e| e.epoch < new_epoch) {
        assert!(
            e.last <= first_new,
            "epoch {} drove after the takeover: {:?}",
            e.epoch,
            s.epochs
        );
    }
    assert!(
        s.epochs
            .iter()
            .any(|e| e.epoch == old_epoch && e.last <= killed_at.time),
        "{:?}",
        s.epochs
    );
    assert_eq!(s.fence.current, new_epoch);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t197_sensor_failures_degrade_the_rover_through_the_cluster() {
    let sim = world().await;
    let mut client = WorldClient::connect(sim.addr).await.unwrap();
    let c = cluster(&sim).await;
    let nav = start_mission(&c, &[(40.0, -1.0)]).await;
    let live = [1, 2, 3];
    poll("cruising", MISSION_LIMIT, async || {
        (status(&mut client).await.velocity.linear_mps > 0.9).then_some(())
    })
    .await;

    // IMU fails: perception reports it, the policy says GPS-only at half
    // speed, control obeys.
    client.inject_fault(DeviceKind::Imu, Fault::Failed).await.unwrap();
    let effective = |m: &Value| m["effective"]["mode"].as_str().unwrap_or("").to_string();
    poll("gps-only mode", Duration::from_secs(10), async || {
        (effective(&mission(&c, &live).await) == "GpsOnly").then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let start = status(&mut client).await;
    let mut max = 0.0_f64;
    // Six seconds: long enough that the filter re-learning its heading from
    // GPS alone (a turn in place or two) cannot hide whether it drives on.
    for _ in 0..120 {
        max = max.max(status(&mut client).await.velocity.linear_mps);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let end = status(&mut client).await;
    let moved = (end.pose.x_m - start.pose.x_m).hypot(end.pose.y_m - start.pose.y_m);
    assert!(max <= 0.5 + 1e-9, "over half the 1.0 m/s limit in gps-only: {max}");
    if moved <= 0.6 {
        let logs: String = (1..=3)
            .map(|n| {
                c.log(n)
                    .lines()
                    .filter(|l| l.contains("cairn_hal"))
                    .collect::<Vec<_>>()
                    .join("\n")
            })
            .collect::<Vec<_>>()
            .join("\n---\n");
        panic!("should keep going on GPS alone: moved {moved:.2} m in 6 s, from {start:?} to {end:?}\n{logs}");
    }

    // Lidar fails: the rover stops within a bounded distance.
    let at = status(&mut client).await;
    client.inject_fault(DeviceKind::Range, Fault::Failed).await.unwrap();
    let stopped = poll("stopped", Duration::from_secs(5), async || {
        let s = status(&mut client).await;
        (s.velocity.linear_mps == 0.0).then_some(s)
    })
    .await;
    let travelled = (stopped.pose.x_m - at.pose.x_m).hypot(stopped.pose.y_m - at.pose.y_m);
    assert!(travelled < 1.0, "travelled {travelled:.2} m after the lidar failed");
    poll("stop mode", Duration::from_secs(10), async || {
        (effective(&mission(&c, &live).await) == "Stop").then_some(())
    })
    .await;
    let t = task(&c, &live, nav).await;
    assert_eq!(t["state"], "Running", "holding still is not failing: {t}");

    // Sensors back: normal mode, driving again.
    client.inject_fault(DeviceKind::Range, Fault::None).await.unwrap();
    client.inject_fault(DeviceKind::Imu, Fault::None).await.unwrap();
    poll("normal mode", Duration::from_secs(10), async || {
        (effective(&mission(&c, &live).await) == "Normal").then_some(())
    })
    .await;
    poll("driving again", Duration::from_secs(10), async || {
        (status(&mut client).await.velocity.linear_mps > 0.5).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t198_a_frozen_controller_wakes_up_deposed_and_is_kept_off_the_wheels() {
    let sim = world().await;
    let mut client = WorldClient::connect(sim.addr).await.unwrap();
    let c = cluster(&sim).await;
    let nav = start_mission(&c, &[(30.0, 0.0), (30.0, 6.0)]).await;
    let all = [1, 2, 3];
    let (holder, old_epoch) = poll("driving", MISSION_LIMIT, async || {
        let t = task(&c, &all, nav).await;
        let moving = status(&mut client).await.velocity.linear_mps > 0.5;
        (t["state"] == "Running" && moving).then(|| {
            (
                t["lease"]["node_id"].as_u64().unwrap(),
                t["lease"]["epoch"].as_u64().unwrap(),
            )
        })
    })
    .await;
    c.pause(holder);
    let live: Vec<u64> = all.iter().copied().filter(|n| *n != holder).collect();
    let new_epoch = poll(
        "navigate running on another node",
        Duration::from_secs(30),
        async || {
            let t = task(&c, &live, nav).await;
            let node = t["lease"]["node_id"].as_u64()?;
            (t["state"] == "Running" && node != holder).then(|| t["lease"]["epoch"].as_u64().unwrap())
        },
    )
    .await;
    poll("new controller driving", Duration::from_secs(10), async || {
        let s = status(&mut client).await;
        (s.fence.current == new_epoch && s.velocity.linear_mps > 0.3).then_some(())
    })
    .await;
    let before = status(&mut client).await;
    c.resume(holder);
    // The woken controller's lease has expired: it may try once, and the
    // drivetrain refuses it; it never drives again.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let after = status(&mut client).await;
    assert_eq!(after.fence.current, new_epoch);
    let old = after.epochs.iter().find(|e| e.epoch == old_epoch).copied().unwrap();
    let new_first = after.epochs.iter().find(|e| e.epoch == new_epoch).unwrap().first;
    assert!(old.last <= new_first, "{:?}", after.epochs);
    assert!(
        after.fence.rejected - before.fence.rejected <= 1,
        "the woken node kept trying: {:?} -> {:?}\n{}",
        before.fence,
        after.fence,
        c.log(holder)
    );
    let restarted = c
        .log(holder)
        .lines()
        .filter(|l| l.contains("running task") && l.contains("navigate"))
        .count();
    assert_eq!(
        restarted,
        1,
        "the woken node restarted its stale assignment:\n{}",
        c.log(holder)
    );
    poll("navigate succeeded", MISSION_LIMIT, async || {
        (task(&c, &all, nav).await["state"] == "Succeeded").then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t199_sim_cli_refuses_bad_faults_and_changes_nothing() {
    let sim = world().await;
    let addr = sim.addr.to_string();
    let cli = |args: &[&str]| {
        std::process::Command::new(crate::harness::cairn_bin())
            .args(["sim"])
            .args(args)
            .args(["--sim-addr", &addr])
            .output()
            .unwrap()
    };
    for (args, says) in [
        (vec!["fault", "wheel", "failed"], "unknown device"),
        (vec!["fault", "imu", "broken"], "expected none | failed"),
        (vec!["fault", "gps", "dropout:lots"], "is not a number"),
        (vec!["fault", "gps", "dropout:1.5"], "0..=1"),
        (vec!["estop", "maybe"], "expected on | off"),
    ] {
        let out = cli(&args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} succeeded");
        assert!(err.contains(says), "{args:?}: {err}");
    }
    let s = WorldClient::connect(sim.addr).await.unwrap().status().await.unwrap();
    assert!(s.faults.iter().all(|(_, f)| *f == Fault::None), "{:?}", s.faults);
    assert!(!s.estop_engaged);
    let out = cli(&["fault", "lidar", "failed"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let s = WorldClient::connect(sim.addr).await.unwrap().status().await.unwrap();
    assert!(s.faults.contains(&(DeviceKind::Range, Fault::Failed)), "{:?}", s.faults);
}
