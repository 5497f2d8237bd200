//! cairn-agents integration tests: in-process Raft nodes over real loopback
//! sockets, each with a coordinator and an agent running test actions.
//!
//! Waits are bounded and generous (a loaded 2-core machine); the safety
//! properties are checked from the recorded history, not from timings.
//! `CAIRN_BENCH=1` also runs `t395_bench_failover`, which prints p50/p99.

mod harness;

use std::collections::BTreeMap;
use std::collections::BTreeSet;
use std::time::Duration;

use cairn_agents::AgentConfig;
use cairn_hal::action::ActionOutcome;
use cairn_hal::action::OperatingMode;
use cairn_hal::action::ParamVal;
use cairn_state::Command;
use cairn_state::CommandError;
use cairn_state::Liveness;
use cairn_state::NodeId;
use cairn_state::ParamKind;
use cairn_state::ParamValue;
use cairn_state::Resources;
use cairn_state::Response;
use cairn_state::SensorHealth;
use cairn_state::TaskOutcome;
use cairn_state::TaskState;
use harness::percentile;
use harness::Cluster;
use harness::Event;
use tokio::time::Instant;

const BUDGET: Resources = Resources {
    cpu_millicores: 1000,
    memory_mib: 1024,
};
const SMALL: Resources = Resources {
    cpu_millicores: 100,
    memory_mib: 64,
};

/// Camera only on the nodes that do not lead at start, so the task under
/// test runs on a follower and killing it does not also kill the leader.
fn camera_on_followers(id: u64, leader: u64) -> Vec<&'static str> {
    if id == leader {
        vec!["drive"]
    } else {
        vec!["drive", "camera"]
    }
}

/// Waits until `task` runs on some node and that node has published
/// feedback for it; returns the node and epoch.
async fn running_with_feedback(c: &Cluster, task: cairn_state::TaskId, not_on: Option<u64>) -> (u64, u64) {
    c.wait(Duration::from_secs(30), "task running elsewhere", |m| {
        m.task(task)
            .is_some_and(|t| t.state == TaskState::Running && t.lease.is_some_and(|l| Some(l.node_id.0) != not_on))
    })
    .await;
    let (_, lease) = c.task_state(task);
    let (node, epoch) = lease.expect("running task has a lease");
    c.wait_history(Duration::from_secs(30), "first feedback", |h| {
        h.first_feedback(task, node).filter(|(_, e)| *e == epoch.0)
    })
    .await;
    (node, epoch.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t310_killed_task_node_task_moves_and_completes() {
    let mut c = Cluster::start(3, camera_on_followers, BUDGET).await;
    let task = c.create("long", &["camera"], SMALL).await;
    let (victim, old_epoch) = running_with_feedback(&c, task, None).await;
    tracing::info!(victim, old_epoch, "task runs; kill its node");
    let killed_at = c.kill(victim).await;
    // A killed agent takes its handlers with it: nothing of the victim's
    // acts after the kill (a detached handler would, until its lease ran out).
    tokio::time::sleep(Duration::from_millis(700)).await;
    let late: Vec<Instant> = c
        .history
        .events()
        .iter()
        .filter_map(|e| match e {
            Event::Actuated { node, at, .. } if *node == victim && *at > killed_at => Some(*at),
            _ => None,
        })
        .collect();
    assert!(
        late.is_empty(),
        "node {victim} acted {} time(s) after it was killed",
        late.len()
    );

    tracing::info!("the coordinator declares it down and the task moves to the other camera node");
    let (heir, new_epoch) = running_with_feedback(&c, task, Some(victim)).await;
    assert_ne!(heir, victim);
    assert!(new_epoch > old_epoch, "new epoch {new_epoch} after {old_epoch}");
    let (first, _) = c.history.first_feedback(task, heir).unwrap();
    tracing::info!(
        heir,
        kill_to_first_feedback_ms = first.duration_since(killed_at).as_millis() as u64,
        "reassigned"
    );
    let dead = c.any().local_state(|m| m.node(NodeId(victim)).map(|n| n.liveness));
    assert_eq!(dead, Some(Liveness::Down));

    tracing::info!("it completes on the heir");
    c.wait(Duration::from_secs(30), "task succeeded", |m| {
        m.task(task).is_some_and(|t| t.state == TaskState::Succeeded)
    })
    .await;
    c.history.check_exclusive_actuation().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t320_killed_leader_new_coordinator_loses_and_duplicates_nothing() {
    let mut c = Cluster::start(3, |_, _| vec!["drive"], BUDGET).await;
    let leader = c.leader(Duration::from_secs(5)).await;
    let heavy = Resources {
        cpu_millicores: 400,
        memory_mib: 64,
    };
    let survivor = (1..=3).find(|i| *i != leader).unwrap();
    let mut events = c.raft(survivor).subscribe();
    let mut tasks = Vec::new();
    for _ in 0..4 {
        tasks.push(c.create("long", &["drive"], heavy).await);
    }
    c.wait(Duration::from_secs(30), "every task running", |m| {
        tasks
            .iter()
            .all(|t| m.task(*t).is_some_and(|t| t.state == TaskState::Running))
    })
    .await;
    tracing::info!(leader, "tasks run; kill the leader");
    c.kill(leader).await;
    let new_leader = c.leader(Duration::from_secs(15)).await;
    assert_ne!(new_leader, leader);
    tracing::info!(new_leader, "the new coordinator finishes the job");
    c.wait(Duration::from_secs(60), "every task succeeded", |m| {
        tasks
            .iter()
            .all(|t| m.task(*t).is_some_and(|t| t.state == TaskState::Succeeded))
    })
    .await;

    tracing::info!("each task succeeded exactly once, never on two nodes at once");
    let mut successes: BTreeMap<u64, usize> = BTreeMap::new();
    while let Ok(ev) = events.try_recv() {
        if let (
            Command::FinishTask {
                task_id,
                outcome: TaskOutcome::Succeeded,
                ..
            },
            Ok(_),
        ) = (&ev.command, &ev.response)
        {
            *successes.entry(task_id.0).or_default() += 1;
        }
    }
    for t in &tasks {
        let n = successes.get(&t.0).copied().unwrap_or(0);
        assert_eq!(n, 1, "task {t} succeeded {n} times: {successes:?}");
    }
    let intervals = c.history.check_exclusive_actuation().unwrap();
    assert!(intervals >= tasks.len(), "saw {intervals} permit intervals");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t330_partitioned_holder_stops_within_lease_and_its_reports_are_stale() {
    let config = AgentConfig::default();
    let c = Cluster::start_with(3, camera_on_followers, BUDGET, config.clone()).await;
    let task = c.create("long", &["camera"], SMALL).await;
    let (cut, old_epoch) = running_with_feedback(&c, task, None).await;
    tracing::info!(cut, old_epoch, "task runs; partition its node from the majority");
    let cut_at = Instant::now();
    c.isolate(cut, true);

    let revoked = c
        .wait_history(Duration::from_secs(10), "the cut-off node revokes its permit", |h| {
            h.revoked_at(task, cut)
        })
        .await;
    let took = revoked.duration_since(cut_at);
    tracing::info!(took_ms = took.as_millis() as u64, "cut-off node stopped acting");
    // The lease runs from the last confirmed heartbeat, sent before the cut:
    // the bound is the lease; the slack only absorbs a loaded test machine.
    assert!(
        took <= Duration::from_millis(config.lease_ms + 1500),
        "stopped {took:?} after the cut; lease is {} ms",
        config.lease_ms
    );

    tracing::info!("the majority moves the task to the other camera node");
    let others: Vec<u64> = c.alive().into_iter().filter(|i| *i != cut).collect();
    let (heir, new_epoch) = {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let lease = c.raft(others[0]).local_state(|m| {
                m.task(task)
                    .filter(|t| t.state == TaskState::Running)
                    .and_then(|t| t.lease)
                    .filter(|l| l.node_id.0 != cut)
            });
            if let Some(l) = lease {
                if c.history.first_feedback(task, l.node_id.0).is_some() {
                    break (l.node_id.0, l.epoch.0);
                }
            }
            assert!(Instant::now() < deadline, "task never moved");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    assert!(new_epoch > old_epoch);
    let heir_start = c
        .history
        .events()
        .into_iter()
        .find_map(|e| match e {
            Event::Permit(p) if p.node_id.0 == heir && p.task_id == task && p.may_actuate => Some(p.at),
            _ => None,
        })
        .unwrap();
    assert!(revoked < heir_start, "the old holder stopped before the heir started");

    tracing::info!("heal; a late report with the old epoch is rejected");
    c.isolate(cut, false);
    let late = c
        .raft(cut)
        .write(Command::ReportProgress {
            task_id: task,
            epoch: cairn_state::Epoch(old_epoch),
            percent: 99,
            feedback: None,
        })
        .await
        .expect("the healed node reaches the leader")
        .response;
    assert!(
        matches!(late, Err(CommandError::StaleEpoch { .. })),
        "late report: {late:?}"
    );
    c.wait(Duration::from_secs(30), "task succeeded on the heir", |m| {
        m.task(task).is_some_and(|t| t.state == TaskState::Succeeded)
    })
    .await;
    c.wait(Duration::from_secs(15), "the healed node is up again", |m| {
        m.node(NodeId(cut)).is_some_and(|n| n.liveness == Liveness::Up)
    })
    .await;
    c.history.check_exclusive_actuation().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t340_capabilities_and_budgets_are_respected() {
    let c = Cluster::start(
        3,
        |id, _| match id {
            1 => vec!["drive"],
            2 => vec!["drive", "lidar"],
            _ => vec!["camera"],
        },
        BUDGET,
    )
    .await;
    let caps: BTreeMap<u64, BTreeSet<&str>> = [
        (1, ["drive"].into()),
        (2, ["drive", "lidar"].into()),
        (3, ["camera"].into()),
    ]
    .into();
    let mut events = c.any().subscribe();
    let big = Resources {
        cpu_millicores: 400,
        memory_mib: 100,
    };
    let mut lidar = Vec::new();
    let mut drive = Vec::new();
    for _ in 0..3 {
        lidar.push(c.create("short", &["lidar"], big).await);
    }
    for _ in 0..4 {
        drive.push(c.create("short", &["drive"], big).await);
    }
    let gpu = c.create("short", &["gpu"], SMALL).await;

    tracing::info!("every lidar and drive task completes; none ever lands where it does not fit");
    let all: Vec<_> = lidar.iter().chain(&drive).copied().collect();
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut assignments = 0;
    loop {
        while let Ok(ev) = events.try_recv() {
            if let Ok(Response::TaskAssigned { task_id, node_id, .. }) = &ev.response {
                assignments += 1;
                let needs_lidar = lidar.contains(task_id);
                let node_caps = &caps[&node_id.0];
                assert!(
                    !needs_lidar || node_caps.contains("lidar"),
                    "lidar task {task_id} on node {node_id}"
                );
                assert!(
                    node_caps.contains("drive") || node_caps.contains("lidar"),
                    "task {task_id} on node {node_id}"
                );
            }
            c.any().local_state(|m| {
                for n in m.nodes() {
                    assert!(
                        n.load.fits_within(n.budget),
                        "node {} load {:?} over budget",
                        n.id,
                        n.load
                    );
                }
            });
        }
        let done = c.any().local_state(|m| {
            all.iter()
                .all(|t| m.task(*t).is_some_and(|t| t.state == TaskState::Succeeded))
        });
        if done {
            break;
        }
        assert!(Instant::now() < deadline, "tasks did not all complete");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(assignments >= all.len(), "{assignments} assignments");

    tracing::info!("the gpu task stays pending, with the reason visible on the coordinator");
    assert_eq!(c.task_state(gpu).0, TaskState::Pending);
    let leader = c.leader(Duration::from_secs(5)).await;
    let status = c.nodes[&leader].coordinator.as_ref().unwrap().status();
    let reason = status.unplaceable.get(&gpu).cloned().unwrap_or_default();
    assert!(reason.contains("gpu"), "reason {reason:?}; status {status:?}");
    assert_eq!(status.refused, 0, "the state machine refused a placement: {status:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t350_cancel_ends_a_running_task_cancelled() {
    let c = Cluster::start(3, |_, _| vec!["drive"], BUDGET).await;
    let task = c.create("endless", &["drive"], SMALL).await;
    let (node, epoch) = running_with_feedback(&c, task, None).await;
    tracing::info!(node, epoch, "cancel the running task");
    let r = c.write(Command::CancelTask { task_id: task }).await;
    assert!(r.is_ok(), "cancel: {r:?}");
    c.wait(Duration::from_secs(15), "task cancelled", |m| {
        m.task(task).is_some_and(|t| t.state == TaskState::Cancelled)
    })
    .await;
    let acked = c.history.events().into_iter().any(|e| {
        matches!(e, Event::Ended { node: n, task: t, outcome: ActionOutcome::Cancelled, .. } if n == node && t == task.0)
    });
    assert!(acked, "the handler acknowledged the cancel");
    c.history.check_exclusive_actuation().unwrap();
}

/// What a handler's parameter map held: (version, the value, count).
type MapSeen = (u64, Option<ParamVal>, usize);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t360_running_handlers_get_degradation_and_params_in_order() {
    let c = Cluster::start(3, |_, _| vec!["drive"], BUDGET).await;
    let task = c.create("endless", &["drive"], SMALL).await;
    let (node, _) = running_with_feedback(&c, task, None).await;

    tracing::info!("the imu fails: the running handler gets gps-only at half speed");
    c.write(Command::ReportSensorHealth {
        sensor: "imu".into(),
        health: SensorHealth::Failed,
    })
    .await
    .unwrap();
    c.wait_history(Duration::from_secs(10), "degraded limits delivered", |h| {
        h.events().into_iter().find(|e| {
            matches!(e, Event::Limits { node: n, limits, .. }
                if *n == node && limits.mode == OperatingMode::GpsOnly && (limits.max_speed_mps - 0.5).abs() < 1e-9)
        })
    })
    .await;

    tracing::info!("parameter changes arrive in version order");
    c.write(Command::DeclareParam {
        name: "nav.lookahead_m".into(),
        description: "pure pursuit lookahead".into(),
        kind: ParamKind::Int { min: 0, max: 100 },
        value: ParamValue::Int(0),
    })
    .await
    .unwrap();
    for v in 1..=5 {
        c.write(Command::SetParam {
            name: "nav.lookahead_m".into(),
            value: ParamValue::Int(v),
        })
        .await
        .unwrap();
    }
    let seen = c
        .wait_history(Duration::from_secs(10), "all parameter changes delivered", |h| {
            let seen: Vec<(u64, ParamVal, MapSeen)> = h
                .events()
                .into_iter()
                .filter_map(|e| match e {
                    Event::Param {
                        node: n,
                        update,
                        values,
                        ..
                    } if n == node && update.name == "nav.lookahead_m" => Some((update.version, update.value, values)),
                    _ => None,
                })
                .collect();
            (seen.len() >= 6).then_some(seen)
        })
        .await;
    let values: Vec<ParamVal> = seen.iter().map(|s| s.1.clone()).collect();
    assert_eq!(values, (0..=5).map(ParamVal::Int).collect::<Vec<_>>(), "{seen:?}");
    assert!(seen.windows(2).all(|w| w[0].0 < w[1].0), "versions increase: {seen:?}");
    // The handler's parameter map (patched change by change, not copied
    // whole) is never behind a change it was told about, and ends up equal
    // to the replicated parameters.
    for (version, _, (map_version, value, _)) in &seen {
        assert!(map_version >= version && value.is_some(), "{seen:?}");
    }
    let (params_version, params_count) = c.raft(node).local_state(|m| (m.params_version(), m.params().count()));
    let last = &seen[seen.len() - 1].2;
    assert_eq!(
        last,
        &(params_version, Some(ParamVal::Int(5)), params_count),
        "{seen:?}"
    );
    c.write(Command::CancelTask { task_id: task }).await.unwrap();
}

/// Issue 17: a handler whose progress report the state machine refuses for
/// what it says (an infinite distance) fails its task with the refusal as
/// the reason, once; before, the agent took the refusal for a lost task,
/// dropped the handler and started it again about five times a second,
/// forever, with the task stuck running.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t370_a_refused_report_fails_the_task_with_the_reason_once() {
    let c = Cluster::start(3, |_, _| vec!["drive"], BUDGET).await;
    let spec = cairn_state::TaskSpec {
        kind: "bad-report".into(),
        required_capabilities: ["drive".to_string()].into(),
        resources: SMALL,
        priority: 0,
        deadline_ms: None,
        retry: cairn_state::RetryPolicy {
            max_attempts: 1,
            ..Default::default()
        },
        goal: None,
    };
    let task = match c.write(Command::CreateTask(spec)).await {
        Ok(Response::TaskCreated { task_id }) => task_id,
        other => panic!("create task: {other:?}"),
    };
    c.wait(Duration::from_secs(10), "the task failed", |m| {
        m.task(task).is_some_and(|t| t.state == TaskState::Failed)
    })
    .await;
    let reason = c
        .any()
        .local_state(|m| m.task(task).and_then(|t| t.last_error.clone()))
        .unwrap_or_default();
    assert!(
        reason.contains("progress report refused") && reason.contains("feedback.distance_m"),
        "the refusal is the reason: {reason:?}"
    );
    // Give a restart loop time to show itself before counting starts.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let starts = c
        .history
        .events()
        .into_iter()
        .filter(|e| matches!(e, Event::Started { task: t, .. } if *t == task.0))
        .count();
    assert_eq!(starts, 1, "the handler was started {starts} times");
    c.history.check_exclusive_actuation().unwrap();
}

/// Faster liveness judgement for the tests below (valid: see
/// `AgentConfig::validate`).
fn quick_config() -> AgentConfig {
    AgentConfig {
        heartbeat_interval_ms: 100,
        heartbeat_timeout_ms: 300,
        suspect_after_ms: 600,
        down_after_ms: 1200,
        lease_ms: 700,
        ..AgentConfig::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t372_an_agent_whose_node_lags_does_not_flood_the_log_with_registrations() {
    // Issue 17, item 6: a follower that could not apply (it was jammed)
    // never saw its own registration, so its agent registered again on
    // every reconcile, ~4 times a second, each a log entry.
    let mut c = Cluster::start(3, |_, _| vec!["drive"], BUDGET).await;
    let leader = c.leader(Duration::from_secs(5)).await;
    let lagging = (1..=3).find(|i| *i != leader).unwrap();
    tracing::info!(lagging, "stop the follower's agent and deregister its node");
    c.nodes.get_mut(&lagging).unwrap().agent.take().unwrap().abort();
    c.write(Command::DeregisterNode {
        node_id: NodeId(lagging),
    })
    .await
    .unwrap();
    c.wait(Duration::from_secs(10), "the node deregistered everywhere", |m| {
        m.node(NodeId(lagging)).is_none()
    })
    .await;
    tracing::info!(
        leader,
        lagging,
        "the leader stops replicating to it; it can still forward writes"
    );
    c.nodes[&leader].links.set_blocked(lagging, true);
    let mut changes = c.raft(leader).subscribe();
    let spec = cairn_state::NodeSpec {
        id: NodeId(lagging),
        addresses: vec![c.nodes[&lagging].listen_addr.clone()],
        capabilities: Default::default(),
        budget: BUDGET,
    };
    let config = AgentConfig {
        rng_seed: Some(lagging),
        ..AgentConfig::default()
    };
    let agent = cairn_agents::Agent::builder(c.raft(lagging).clone(), spec, config)
        .start()
        .unwrap();
    let window = Duration::from_secs(4);
    tokio::time::sleep(window).await;
    let mut registrations = 0;
    while let Ok(change) = changes.try_recv() {
        if matches!(&change.command, Command::RegisterNode(s) if s.id == NodeId(lagging)) {
            registrations += 1;
        }
    }
    tracing::info!(registrations, "registrations applied by the leader in {window:?}");
    assert!(registrations >= 1, "the agent registered its node");
    assert!(
        registrations <= 2,
        "{registrations} registrations in {window:?}: the agent re-registers while its own node has not applied the first"
    );
    tracing::info!("replication resumes: the node sees itself registered and stops registering");
    c.nodes[&leader].links.set_blocked(lagging, false);
    c.wait(Duration::from_secs(20), "the node registered again everywhere", |m| {
        m.node(NodeId(lagging)).is_some_and(|n| n.liveness == Liveness::Up)
    })
    .await;
    agent.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t375_a_leader_without_a_quorum_does_not_judge_itself_down() {
    // Issue 17, item 6: without a quorum the leader's own agent could not
    // get its heartbeats confirmed, so the leader's coordinator judged its
    // own node Down and proposed that (committed if the quorum came back
    // under the same leader).
    let c = Cluster::start_with(3, |_, _| vec!["drive"], BUDGET, quick_config()).await;
    let leader = c.leader(Duration::from_secs(5)).await;
    let followers: Vec<u64> = (1..=3).filter(|i| *i != leader).collect();
    tracing::info!(leader, ?followers, "cut the leader from both followers: no quorum");
    for f in &followers {
        c.nodes[&leader].links.set_blocked(*f, true);
        c.nodes[f].links.set_blocked(leader, true);
    }
    let coordinator = c.nodes[&leader].coordinator.as_ref().unwrap();
    let deadline = Instant::now() + Duration::from_secs(3);
    let mut judged_followers_down = false;
    while Instant::now() < deadline {
        let status = coordinator.status();
        if status.leading_term.is_none() {
            break;
        }
        let verdict = |id: u64| {
            status
                .nodes
                .iter()
                .find(|n| n.node_id == NodeId(id))
                .and_then(|n| n.verdict)
        };
        assert_ne!(
            verdict(leader),
            Some(Liveness::Down),
            "the leader's coordinator judged its own node down: {status:?}"
        );
        judged_followers_down |= followers.iter().all(|f| verdict(*f) == Some(Liveness::Down));
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        judged_followers_down || coordinator.status().leading_term.is_none(),
        "the test saw the silent followers judged down (or the leader stepped down)"
    );
    for f in &followers {
        c.nodes[&leader].links.set_blocked(*f, false);
        c.nodes[f].links.set_blocked(leader, false);
    }
    c.wait(Duration::from_secs(20), "every node up again", |m| {
        (1..=3).all(|id| m.node(NodeId(id)).is_some_and(|n| n.liveness == Liveness::Up))
    })
    .await;
}

/// Failover measurements; `CAIRN_BENCH=1 [CAIRN_BENCH_TRIALS=20]`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t395_bench_failover() {
    if std::env::var("CAIRN_BENCH").is_err() {
        return;
    }
    let trials: usize = std::env::var("CAIRN_BENCH_TRIALS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20);
    let mut node_death = Vec::new();
    let mut leader_death = Vec::new();
    for trial in 0..trials {
        // Node death -> first feedback of the reassigned task.
        let mut c = Cluster::start(3, camera_on_followers, BUDGET).await;
        let task = c.create("long", &["camera"], SMALL).await;
        let (victim, _) = running_with_feedback(&c, task, None).await;
        let killed = c.kill(victim).await;
        let (heir, _) = running_with_feedback(&c, task, Some(victim)).await;
        let (first, _) = c.history.first_feedback(task, heir).unwrap();
        node_death.push(first.duration_since(killed));
        c.shutdown().await;

        // Leader death -> the new coordinator schedules again.
        let mut c = Cluster::start(3, |_, _| vec!["drive"], BUDGET).await;
        let leader = c.leader(Duration::from_secs(5)).await;
        let killed = c.kill(leader).await;
        let task = c.create("short", &["drive"], SMALL).await;
        c.wait(Duration::from_secs(20), "new coordinator assigns", |m| {
            m.task(task).is_some_and(|t| t.lease.is_some() || t.state.is_terminal())
        })
        .await;
        leader_death.push(killed.elapsed());
        c.shutdown().await;
        tracing::info!(
            trial,
            node_death_ms = node_death[trial].as_millis() as u64,
            leader_death_ms = leader_death[trial].as_millis() as u64,
            "trial"
        );
    }
    node_death.sort();
    leader_death.sort();
    let ms = |d: Duration| d.as_millis();
    println!(
        "node death -> reassigned task's first feedback over {trials} trials: p50 {} ms, p99 {} ms, max {} ms",
        ms(percentile(&node_death, 50.0)),
        ms(percentile(&node_death, 99.0)),
        ms(node_death[node_death.len() - 1])
    );
    println!(
        "leader death -> new coordinator assigns a new task over {trials} trials: p50 {} ms, p99 {} ms, max {} ms",
        ms(percentile(&leader_death, 50.0)),
        ms(percentile(&leader_death, 99.0)),
        ms(leader_death[leader_death.len() - 1])
    );
}

/// The agents' heartbeat as it travels (`cairn_agents::protocol` is
/// private): what a node that lies about its id would send.
#[derive(serde::Serialize)]
struct SpoofedHeartbeat {
    node_id: u64,
    seq: u64,
}

/// Issue 18: on the peer channel a node speaks only for itself. A follower
/// that forwards another node's liveness, registration or task reports, or
/// a cluster decision, is refused by the leader (typed error, counted); its
/// operator-style writes still commit. A heartbeat it sends for a dead node
/// is refused, so the dead node goes Down while the spoofing goes on.
///
/// Without the fix the forwarded `SetLiveness` committed (`Ok`) and the
/// spoofed heartbeat was acknowledged (`Ok`), keeping the node Up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t380_a_node_speaks_only_for_itself_on_the_peer_channel() {
    let mut c = Cluster::start(3, camera_on_followers, BUDGET).await;
    let leader = c.leader(Duration::from_secs(5)).await;
    let task = c.create("endless", &["camera"], SMALL).await;
    let (victim, epoch) = running_with_feedback(&c, task, None).await;
    let liar = (1..=3).find(|id| *id != leader && *id != victim).unwrap();
    tracing::info!(
        leader,
        liar,
        victim,
        "node {liar} forwards writes that speak for node {victim}"
    );
    let spec = cairn_state::NodeSpec {
        id: NodeId(victim),
        addresses: vec!["127.0.0.1:1".into()],
        capabilities: Default::default(),
        budget: SMALL,
    };
    let epoch = cairn_state::Epoch(epoch);
    let lies = [
        Command::SetLiveness {
            node_id: NodeId(victim),
            liveness: Liveness::Down,
        },
        Command::RegisterNode(spec),
        Command::ReportProgress {
            task_id: task,
            epoch,
            percent: 99,
            feedback: None,
        },
        Command::FinishTask {
            task_id: task,
            epoch,
            outcome: TaskOutcome::Succeeded,
        },
        Command::AssignTask {
            task_id: task,
            node_id: NodeId(liar),
        },
    ];
    for lie in lies {
        let what = format!("{lie:?}");
        let got = c.raft(liar).write(lie).await;
        match got {
            Err(cairn_raft::Error::Forbidden { reason }) => {
                assert!(reason.contains(&format!("node {liar}")), "{what}: {reason}");
            }
            other => panic!("node {liar}'s forwarded {what} was not refused: {other:?}"),
        }
    }
    let leader_node = c.raft(leader).clone();
    let refused = move |reason: &str| leader_node.metrics().peer_refused_count(reason);
    assert_eq!(refused("speaks_for_another_node"), 4, "the leader counts each refusal");
    assert_eq!(refused("leader_only"), 1);
    let (state, lease) = c.task_state(task);
    assert_eq!(
        (state, lease),
        (TaskState::Running, Some((victim, epoch))),
        "nothing of the lies took effect"
    );
    let up = c
        .raft(leader)
        .local_state(|m| m.node(NodeId(victim)).map(|n| n.liveness));
    assert_eq!(up, Some(Liveness::Up));

    tracing::info!("what a node may say: an operator-style write it forwards commits");
    let out = c
        .raft(liar)
        .write(Command::DeclareParam {
            name: "still.open".into(),
            description: String::new(),
            kind: ParamKind::Int { min: 0, max: 9 },
            value: ParamValue::Int(1),
        })
        .await
        .expect("an operator write through a follower");
    assert!(out.response.is_ok(), "{:?}", out.response);

    tracing::info!("node {victim} dies; node {liar} heartbeats for it, and is refused");
    c.kill(victim).await;
    let spoof = move |seq| postcard::to_stdvec(&SpoofedHeartbeat { node_id: victim, seq }).unwrap();
    let first = c.raft(liar).send_app(leader, spoof(1), Duration::from_secs(2)).await;
    assert!(
        matches!(&first, Err(e) if e.to_string().contains("heartbeats only for itself")),
        "a heartbeat for node {victim} from node {liar} was not refused: {first:?}"
    );
    let node = c.raft(liar).clone();
    // Bounded: 400 × 50 ms, well past the wait below.
    let spoofer = tokio::spawn(async move {
        for seq in 2..400 {
            let _ = node.send_app(leader, spoof(seq), Duration::from_secs(1)).await;
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    });
    c.wait(
        Duration::from_secs(15),
        "the dead node is judged down despite the spoofing",
        |m| m.node(NodeId(victim)).is_some_and(|n| n.liveness == Liveness::Down),
    )
    .await;
    spoofer.abort();
    assert!(refused("heartbeat_for_another_node") >= 1);
}
