//! End-to-end tests: real `cairn` processes on loopback.

mod harness;

use std::collections::BTreeSet;
use std::time::Duration;

use harness::ProcCluster;
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t10_three_processes_survive_leader_kill9() {
    let mut c = ProcCluster::start(3).await;
    let leader = c.wait_leader(Duration::from_secs(15)).await;
    let via = (1..=3).find(|i| *i != leader).unwrap();
    tracing::info!(leader, via, "1,000 writes through a non-leader");
    let mut acked = BTreeSet::new();
    for i in 0..1000u64 {
        let body = json!({"name": format!("k{i}"), "kind": {"Int": {"min": 0, "max": 1_000_000}}, "value": {"Int": i}});
        c.post(via, "/v1/params", &body)
            .await
            .unwrap_or_else(|e| panic!("write {i} failed: {e}"));
        acked.insert(format!("k{i}"));
    }

    tracing::info!(leader, "kill -9 the leader");
    c.kill(leader);
    let new_leader = c.wait_leader(Duration::from_secs(15)).await;
    assert_ne!(new_leader, leader, "a new leader must be elected");
    let survivor = (1..=3).find(|i| *i != leader).unwrap();
    for i in 1000..1100u64 {
        let body = json!({"name": format!("k{i}"), "kind": {"Int": {"min": 0, "max": 1_000_000}}, "value": {"Int": i}});
        c.post(survivor, "/v1/params", &body)
            .await
            .unwrap_or_else(|e| panic!("write {i} after failover failed: {e}"));
        acked.insert(format!("k{i}"));
    }

    tracing::info!(leader, "restart the killed node from its data dir");
    c.restart(leader).await;
    let target = c.status(new_leader).await["applied_index"].as_u64().unwrap();
    c.wait_applied(leader, target, Duration::from_secs(20)).await;

    tracing::info!("every acknowledged write is on all three nodes");
    for id in 1..=3 {
        let params = c.get(id, "/v1/params?consistency=stale").await.unwrap();
        let names: BTreeSet<String> = params
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|p| p["name"].as_str().map(str::to_string))
            .collect();
        let missing: Vec<_> = acked.difference(&names).take(5).collect();
        assert!(
            missing.is_empty(),
            "node {id} is missing acknowledged writes, e.g. {missing:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t20_cli_errors_are_one_clear_line() {
    let c = ProcCluster::start(3).await;
    c.wait_leader(Duration::from_secs(15)).await;

    tracing::info!("cluster init twice is refused and changes nothing");
    let before = c.status(1).await["members"].clone();
    let out = c.cli(&["cluster", "init", "--member", &c.member_arg(1)]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("already part of an initialized cluster"),
        "stderr: {stderr}"
    );
    assert_eq!(c.status(1).await["members"], before);

    tracing::info!("removing an unknown member names it");
    let out = c.cli(&["member", "remove", "99"]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("node 99 is not a member"), "stderr: {stderr}");
    assert_eq!(stderr.trim().lines().count(), 1, "one line: {stderr}");

    tracing::info!("status shows every node");
    let out = c.cli(&["status"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("leader"), "stdout: {stdout}");
    assert_eq!(stdout.matches("follower").count(), 2, "stdout: {stdout}");

    tracing::info!("an unreachable endpoint fails over to the next");
    let out = c.cli_with_endpoints("127.0.0.1:1", &["param", "list"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t30_bad_input_changes_nothing() {
    let c = ProcCluster::start(3).await;
    c.wait_leader(Duration::from_secs(15)).await;
    let r = c.raw_post(1, "/v1/params", "{not json").await;
    assert_eq!(r.0, 400, "{}", r.1);
    assert!(r.1.contains("\"field\":\"body\""), "{}", r.1);
    let r = c.raw_post(1, "/v1/params", &"x".repeat(2 << 20)).await;
    assert_eq!(r.0, 413, "oversized body");
    let params = c.get(1, "/v1/params").await.unwrap();
    assert_eq!(
        params.as_array().map(|a| a.len()),
        Some(1),
        "only the built-in max speed: {params}"
    );
}
