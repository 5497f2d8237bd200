//! What an operator sees of a running node: its log lines (JSON on
//! request, a dead peer's warnings rate-limited) and its metrics.

use std::time::Duration;

use reqwest::Method;
use serde_json::json;
use serde_json::Value;

use super::harness::Options;
use super::harness::ProcCluster;

/// `--log-format json`: every line the node writes on stderr is one JSON
/// object with `level`, `target` and `message` (log shippers read it as
/// is). There was no JSON format.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t131_json_logs_one_object_per_line() {
    let opts = Options {
        extra_args: vec!["--log-format".into(), "json".into()],
        ..Options::default()
    };
    let c = ProcCluster::start_with(1, opts).await;
    c.wait_leader(Duration::from_secs(10)).await;
    tracing::info!("a write and a refused request, so there is more than the startup to log");
    c.post(
        1,
        "/v1/params",
        &json!({"name": "p", "kind": {"Int": {"min": 0, "max": 9}}, "value": {"Int": 1}}),
    )
    .await
    .expect("declare a parameter");
    let _ = c.send(1, Method::GET, "/v1/tasks/404", None, &[]).await;
    let log = c.log(1);
    let lines: Vec<&str> = log.lines().filter(|l| !l.trim().is_empty()).collect();
    assert!(lines.len() >= 3, "too few log lines: {log}");
    for line in &lines {
        let v: Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        for key in ["level", "target", "message", "timestamp"] {
            assert!(v[key].is_string(), "no string {key:?} in: {line}");
        }
    }
    assert!(
        lines.iter().any(|l| l.contains("raft node started")),
        "no startup line: {log}"
    );
}

/// A follower killed with -9: the leader's warnings about it (openraft
/// warns on every heartbeat and replication retry, some 30 a second) come
/// at most once per call site every 5 s, and a line says how many were
/// suppressed. It was ~150 lines in 5 s.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t132_a_dead_peer_warns_a_handful_of_times_not_forty_a_second() {
    let mut c = ProcCluster::start(3).await;
    let leader = c.wait_leader(Duration::from_secs(15)).await;
    let dead = (1..=3).find(|i| *i != leader).unwrap();
    tracing::info!(leader, dead, "kill -9 a follower; watch the leader's log for 7 s");
    let before = c.log(leader).len();
    c.kill(dead);
    tokio::time::sleep(Duration::from_secs(7)).await;
    let log = c.log(leader);
    let after = &log[before..];
    let about_dead: Vec<&str> = after
        .lines()
        .filter(|l| l.contains("WARN"))
        .filter(|l| {
            [
                format!("target={dead})"),
                format!("peer {dead} "),
                format!("peer={dead} "),
            ]
            .iter()
            .any(|p| l.contains(p.as_str()))
        })
        .collect();
    tracing::info!(lines = about_dead.len(), "warnings about the dead peer");
    assert!(
        !about_dead.is_empty(),
        "no warning at all about dead peer {dead}:\n{after}"
    );
    assert!(
        about_dead.len() <= 20,
        "{} warning lines about dead peer {dead} in 7 s (want a handful):\n{}",
        about_dead.len(),
        about_dead.join("\n")
    );
    assert!(
        about_dead.iter().any(|l| l.contains("suppressed")),
        "no line says how many warnings were suppressed:\n{}",
        about_dead.join("\n")
    );
}
