//! A local 3-node cluster in one process, driving the simulated rover
//! through a 5-waypoint traverse.
//!
//! ```text
//! cargo run --example local_cluster
//! ```
//!
//! What it does: starts a simulated world on loopback, three daemons (Raft
//! node + admin API + coordinator + agent with the perception and control
//! handlers) connected to it, initialises the cluster, replicates the plan
//! from `examples/missions/traverse.json`, submits a `perceive` and a
//! `navigate` task, and prints a line a second until the rover has reached
//! every waypoint. Halfway, it shuts the node driving the rover down
//! (gracefully: it hands leadership over if it leads), and another node
//! takes over under a newer epoch. Exits non-zero if the mission does not
//! finish within two minutes. `RUST_LOG=info` shows what each node does.

use std::collections::BTreeMap;
use std::net::TcpListener;
use std::time::Duration;
use std::time::Instant;

use anyhow::Context;
use cairn::config::NodeConfig;
use cairn::daemon::Daemon;
use cairn::hal::sim::ServerConfig;
use cairn::hal::sim::World;
use cairn::hal::sim::WorldClient;
use cairn::hal::sim::WorldConfig;
use cairn::hal::sim::WorldServer;
use cairn::raft::Consistency;
use cairn::raft::Member;
use cairn::state::Command;
use cairn::state::GoalStatus;
use cairn::state::Mission;
use cairn::state::ParamValue;
use cairn::state::TaskSpec;
use cairn::state::TaskState;
use serde::Deserialize;

/// The plan file's shape (the admin API's `PUT /v1/mission/plan` body).
#[derive(Deserialize)]
struct PlanFile {
    name: String,
    frame_id: String,
    goals: Vec<cairn::state::GoalSpec>,
}

fn free_addr() -> anyhow::Result<String> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.to_string())
}

fn task(kind: &str, capability: &str) -> TaskSpec {
    TaskSpec {
        kind: kind.into(),
        required_capabilities: [capability.to_string()].into(),
        resources: Default::default(),
        priority: 5,
        deadline_ms: None,
        retry: Default::default(),
        goal: None,
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "warn,cairn::daemon=error,cairn_hal=error".into()),
        )
        .init();
    let examples = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/missions");
    let data = tempfile::tempdir()?;

    // 1. The simulated world (what `cairn sim run` serves).
    let world: WorldConfig = serde_json::from_str(&std::fs::read_to_string(format!("{examples}/rover-world.json"))?)?;
    let server = WorldServer::bind("127.0.0.1:0", World::new(world)?, ServerConfig::default()).await?;
    let world_addr = server.local_addr()?;
    tokio::spawn(server.run(std::future::pending()));
    println!("world on {world_addr}");

    // 2. Three daemons driving it.
    let mut daemons = BTreeMap::new();
    let mut members = BTreeMap::new();
    for id in 1..=3u64 {
        let mut config = NodeConfig::new(id);
        config.raft_addr = free_addr()?;
        config.api_addr = free_addr()?;
        config.data_dir = data.path().join(format!("n{id}"));
        config.rover.sim = Some(world_addr.to_string());
        let daemon = Daemon::start(config.clone())
            .await
            .with_context(|| format!("starting node {id}"))?;
        println!("node {id}: raft {}, api http://{}", config.raft_addr, daemon.api_addr());
        members.insert(
            id,
            Member {
                raft_addr: config.raft_addr.clone(),
                api_addr: daemon.api_addr().to_string(),
            },
        );
        daemons.insert(id, daemon);
    }
    daemons[&1].node().initialize(members).await?;

    // 3. The mission, through whichever node: followers forward to the leader.
    let plan: PlanFile = serde_json::from_str(&std::fs::read_to_string(format!("{examples}/traverse.json"))?)?;
    let goal_count = plan.goals.len();
    let node = daemons[&2].node().clone();
    let write = async |command: Command| -> anyhow::Result<()> {
        // Retry while the first leader is being elected (bounded).
        let mut last = None;
        for _ in 0..50 {
            match node.write(command.clone()).await {
                Ok(out) => return out.response.map(drop).map_err(|e| anyhow::anyhow!("{e}")),
                Err(e) => last = Some(e),
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Err(anyhow::anyhow!("no leader: {last:?}"))
    };
    write(Command::SetParam {
        name: "drive.max_speed_mps".into(),
        value: ParamValue::Float(2.0),
    })
    .await?;
    write(Command::ReplacePlan {
        expected_version: None,
        name: plan.name,
        frame_id: plan.frame_id,
        goals: plan.goals,
    })
    .await?;
    write(Command::CreateTask(task("perceive", "sensors"))).await?;
    write(Command::CreateTask(task("navigate", "drive"))).await?;

    // 4. Follow it; take the driving node down halfway.
    let mut world = WorldClient::connect(world_addr).await?;
    let started = Instant::now();
    let mut took_down = None;
    loop {
        anyhow::ensure!(
            started.elapsed() < Duration::from_secs(120),
            "the mission did not finish in 2 minutes"
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
        let live = daemons.values().next().context("no node left")?;
        let view = live.node().read(Consistency::Linearizable, summary).await;
        let Ok((reached, nav)) = view else {
            println!("  (between leaders)");
            continue;
        };
        let s = world.status().await?;
        let holder = match nav {
            Some((_, n, e)) if n != 0 => format!("on node {n} epoch {e}"),
            Some((state, ..)) => state.to_string(),
            None => "-".into(),
        };
        println!(
            "t={:5.1}s goals {reached}/{goal_count}  navigate {holder:<19} pose=({:5.1}, {:5.1}) v={:.2} m/s",
            s.time.as_secs_f64(),
            s.pose.x_m,
            s.pose.y_m,
            s.velocity.linear_mps
        );
        if let Some((TaskState::Succeeded, ..)) = nav {
            anyhow::ensure!(
                reached == goal_count,
                "navigate succeeded with {reached}/{goal_count} goals"
            );
            let epochs: Vec<u64> = s.epochs.iter().map(|e| e.epoch).collect();
            println!(
                "done: {reached}/{goal_count} waypoints, drivers by epoch {epochs:?}, stale commands refused {}, collisions {}",
                s.fence.rejected, s.collisions
            );
            anyhow::ensure!(s.collisions == 0, "the rover hit something");
            break;
        }
        if let (None, Some((TaskState::Running, holder, _))) = (took_down, nav) {
            if reached >= 2 && daemons.len() == 3 {
                println!("shutting down node {holder}, which drives the rover");
                let d = daemons.remove(&holder).context("holder is not ours")?;
                d.shutdown().await?;
                took_down = Some(holder);
            }
        }
    }
    for (_, d) in daemons {
        d.shutdown().await?;
    }
    Ok(())
}

/// Goals reached, and the navigate task's state, holder and epoch.
fn summary(m: &Mission) -> (usize, Option<(TaskState, u64, u64)>) {
    let reached = m
        .plan()
        .goals
        .iter()
        .filter(|g| g.status == GoalStatus::Reached)
        .count();
    let tasks = m.tasks(&Default::default());
    let nav = tasks.iter().rfind(|t| t.spec.kind == "navigate").map(|t| {
        let (node, epoch) = t.lease.map(|l| (l.node_id.0, l.epoch.0)).unwrap_or((0, 0));
        (t.state, node, epoch)
    });
    (reached, nav)
}
