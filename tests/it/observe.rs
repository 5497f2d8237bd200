//! What an operator sees of a running node: its log lines (JSON on
//! request, a dead peer's warnings rate-limited) and its metrics.

use std::time::Duration;

use reqwest::Method;
use serde_json::json;
use serde_json::Value;

use super::harness::Options;
use super::harness::ProcCluster;

/// Every non-empty line of `log` is a JSON object with string `level`,
/// `target`, `message` and `timestamp`; the lines.
fn json_lines(log: &str) -> Vec<Value> {
    let lines: Vec<&str> = log.lines().filter(|l| !l.trim().is_empty()).collect();
    assert!(lines.len() >= 3, "too few log lines: {log}");
    lines
        .iter()
        .map(|line| {
            let v: Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
            for key in ["level", "target", "message", "timestamp"] {
                assert!(v[key].is_string(), "no string {key:?} in: {line}");
            }
            v
        })
        .collect()
}

/// `CAIRN_LOG_FORMAT=json` (no flag): the same JSON lines.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t135_json_logs_from_the_environment() {
    let dir = tempfile::TempDir::new().unwrap();
    let port = |_| {
        std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port()
    };
    let (raft, api) = (port(0), port(1));
    let log = dir.path().join("n1.log");
    let mut child = std::process::Command::new(super::harness::cairn_bin())
        .args(["node", "run", "--id", "1"])
        .args([
            "--raft-addr",
            &format!("127.0.0.1:{raft}"),
            "--api-addr",
            &format!("127.0.0.1:{api}"),
        ])
        .arg("--data-dir")
        .arg(dir.path().join("n1"))
        .env("CAIRN_LOG_FORMAT", "json")
        .env("RUST_LOG", "info")
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .expect("spawn cairn");
    let mut healthy = false;
    for _ in 0..200 {
        if reqwest::get(format!("http://127.0.0.1:{api}/healthz"))
            .await
            .is_ok_and(|r| r.status().is_success())
        {
            healthy = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let _ = child.kill();
    let _ = child.wait();
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(healthy, "the node never served: {text}");
    let lines = json_lines(&text);
    assert!(
        lines.iter().any(|v| v["message"] == "raft node started"),
        "no startup line: {text}"
    );
}

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
    let lines = json_lines(&log);
    assert!(
        lines.iter().any(|v| v["message"] == "raft node started"),
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

/// The value of the series of `name` whose labels include all of
/// `labels` (`key="value"` pairs), summed if several match.
fn series(metrics: &str, name: &str, labels: &[&str]) -> Option<f64> {
    let mut found = None;
    for line in metrics.lines().filter(|l| !l.starts_with('#')) {
        let (head, value) = match line.rsplit_once(' ') {
            Some(x) => x,
            None => continue,
        };
        let (metric, rest) = match head.split_once('{') {
            Some((m, r)) => (m, r),
            None => (head, ""),
        };
        if metric != name || !labels.iter().all(|l| rest.contains(l)) {
            continue;
        }
        if let Ok(v) = value.parse::<f64>() {
            found = Some(found.unwrap_or(0.0) + v);
        }
    }
    found
}

async fn scrape(c: &ProcCluster) -> String {
    let (status, _, body) = c.send(1, Method::GET, "/metrics", None, &[]).await;
    assert_eq!(status, 200, "{body}");
    body
}

/// `/metrics` counts requests by route template (never the raw path),
/// method and status class, with latency histograms; snapshots built and
/// their size; telemetry messages dropped. None of these existed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t133_metrics_count_requests_snapshots_and_telemetry_drops() {
    let dir = tempfile::TempDir::new().unwrap();
    let config = dir.path().join("node.toml");
    std::fs::write(&config, "[snapshots]\nsnapshot_every_entries = 20\n").unwrap();
    let opts = Options {
        extra_args: vec!["--config".into(), config.display().to_string()],
        ..Options::default()
    };
    let c = ProcCluster::start_with(1, opts).await;
    c.wait_leader(Duration::from_secs(10)).await;

    tracing::info!("requests: two unknown tasks, three status reads, an unknown route");
    for id in [1, 2] {
        let (status, _, _) = c.send(1, Method::GET, &format!("/v1/tasks/{id}"), None, &[]).await;
        assert_eq!(status, 404);
    }
    for _ in 0..3 {
        c.get(1, "/v1/status").await.expect("status");
    }
    let (status, _, _) = c.send(1, Method::GET, "/v1/no/such/route", None, &[]).await;
    assert_eq!(status, 404);
    let m = scrape(&c).await;
    let tasks_404 = series(
        &m,
        "cairn_http_requests_total",
        &["route=\"/v1/tasks/{id}\"", "method=\"GET\"", "status=\"4xx\""],
    );
    assert_eq!(tasks_404, Some(2.0), "GET /v1/tasks/{{id}} 4xx:\n{m}");
    assert!(!m.contains("/v1/tasks/1\""), "a raw path became a label:\n{m}");
    let status_ok = series(
        &m,
        "cairn_http_request_duration_seconds_count",
        &["route=\"/v1/status\"", "method=\"GET\"", "status=\"2xx\""],
    );
    assert!(
        status_ok.unwrap_or(0.0) >= 3.0,
        "/v1/status latency count {status_ok:?}:\n{m}"
    );
    let unmatched = series(&m, "cairn_http_requests_total", &["route=\"unmatched\""]);
    assert_eq!(unmatched, Some(1.0), "unmatched routes:\n{m}");

    tracing::info!("the scrape itself is counted by the next one");
    let m2 = scrape(&c).await;
    let scrapes = series(&m2, "cairn_http_requests_total", &["route=\"/metrics\""]);
    assert!(scrapes.unwrap_or(0.0) >= 1.0, "/metrics requests {scrapes:?}:\n{m2}");

    tracing::info!("30 writes: past snapshot_every_entries = 20, a snapshot is built");
    for i in 0..30 {
        c.post(
            1,
            "/v1/params",
            &json!({"name": format!("k{i}"), "kind": {"Int": {"min": 0, "max": 99}}, "value": {"Int": i}}),
        )
        .await
        .expect("declare");
    }
    let mut m = String::new();
    for _ in 0..50 {
        m = scrape(&c).await;
        if series(&m, "cairn_snapshots_built_total", &[]).unwrap_or(0.0) >= 1.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let built = series(&m, "cairn_snapshots_built_total", &[]);
    assert!(built.unwrap_or(0.0) >= 1.0, "snapshots built {built:?}:\n{m}");
    let bytes = series(&m, "cairn_snapshot_last_bytes", &[]);
    assert!(bytes.unwrap_or(0.0) > 0.0, "last snapshot bytes {bytes:?}:\n{m}");
    assert_eq!(series(&m, "cairn_snapshots_installed_total", &[]), Some(0.0), "{m}");
    assert!(series(&m, "cairn_snapshot_last_build_seconds", &[]).is_some(), "{m}");

    tracing::info!("a telemetry flood over the topic's rate limit: drops counted");
    let before = series(&m, "cairn_telemetry_dropped_total", &["reason=\"rate_limited\""]);
    assert_eq!(before, Some(0.0), "{m}");
    let mut refused = 0u32;
    for i in 0..200 {
        let body = json!({"i": i}).to_string();
        let (status, _, _) = c
            .send(1, Method::POST, "/v1/telemetry/test.flood", Some(&body), &[])
            .await;
        if status == 429 {
            refused += 1;
        }
    }
    assert!(refused > 0, "200 publishes at once were never rate limited");
    let m = scrape(&c).await;
    let dropped = series(&m, "cairn_telemetry_dropped_total", &["reason=\"rate_limited\""]);
    assert!(
        dropped.unwrap_or(0.0) >= f64::from(refused),
        "{refused} refused, dropped {dropped:?}:\n{m}"
    );
    let published_429 = series(
        &m,
        "cairn_http_requests_total",
        &["route=\"/v1/telemetry/{topic}\"", "method=\"POST\"", "status=\"4xx\""],
    );
    assert_eq!(published_429, Some(f64::from(refused)), "{m}");
}

/// Every error status has a JSON body whose `code` is one the OpenAPI
/// document lists (one table, `ERROR_CODES`), `/readyz`'s 503 included
/// (it was text); every operation of the document describes its error
/// responses (12 described none), and `/v1/status` and `/v1/members`
/// have typed schemas (they were a bare `object`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t134_every_error_is_json_with_a_documented_code() {
    let c = ProcCluster::start_uninit(1).await;
    let doc = c.get(1, "/openapi.json").await.expect("openapi.json");
    let codes: Vec<String> = doc["components"]["schemas"]["ErrorBody"]["properties"]["code"]["enum"]
        .as_array()
        .map(|a| a.iter().filter_map(|c| c.as_str().map(String::from)).collect())
        .unwrap_or_default();
    assert!(
        codes.iter().any(|c| c == "not_found"),
        "ErrorBody.code lists no codes: {}",
        doc["components"]["schemas"]["ErrorBody"]
    );

    tracing::info!("errors of every kind a client meets on a node with no cluster yet");
    let cases: [(Method, &str, Option<&str>, u16); 6] = [
        (Method::GET, "/readyz", None, 503),
        (Method::GET, "/v1/no/such/route", None, 404),
        (Method::PUT, "/v1/status", None, 405),
        (Method::GET, "/v1/tasks/not-a-number", None, 400),
        (Method::POST, "/v1/params", Some("{not json"), 400),
        (Method::GET, "/v1/members/1", None, 405),
    ];
    for (method, path, body, want) in cases {
        let (status, headers, text) = c.send(1, method.clone(), path, body, &[]).await;
        assert_eq!(status, want, "{method} {path}: {text}");
        let ct = headers.get("content-type").and_then(|v| v.to_str().ok()).unwrap_or("");
        assert!(
            ct.starts_with("application/json"),
            "{method} {path}: content-type {ct:?}: {text}"
        );
        let v: Value =
            serde_json::from_str(&text).unwrap_or_else(|e| panic!("{method} {path}: not JSON ({e}): {text}"));
        let code = v["code"].as_str().unwrap_or_default();
        assert!(
            codes.iter().any(|c| c == code),
            "{method} {path}: code {code:?} is not in {codes:?}"
        );
        assert!(
            v["message"].is_string() && v["retryable"].is_boolean(),
            "{method} {path}: {v}"
        );
    }

    tracing::info!("the document: error responses everywhere, typed status and members");
    let mut bare = Vec::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            let has_errors = op["responses"]
                .as_object()
                .is_some_and(|r| r.keys().any(|s| s.starts_with('4') || s.starts_with('5')));
            if !has_errors {
                bare.push(format!("{method} {path}"));
            }
        }
    }
    assert!(bare.is_empty(), "operations that describe no error response: {bare:?}");
    let ok_schema =
        |path: &str| doc["paths"][path]["get"]["responses"]["200"]["content"]["application/json"]["schema"].clone();
    assert_eq!(
        ok_schema("/v1/status")["$ref"],
        "#/components/schemas/StatusView",
        "{}",
        ok_schema("/v1/status")
    );
    assert_eq!(
        ok_schema("/v1/members")["items"]["$ref"],
        "#/components/schemas/MemberStatusView",
        "{}",
        ok_schema("/v1/members")
    );
}
