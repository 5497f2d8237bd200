//! Telemetry topics end to end: real processes (cross-node delivery, order,
//! latest value on connect, rate limit, bad input, the token) and one
//! in-process daemon with small queues (drop-oldest, publishing from Rust).

use std::time::Duration;

use reqwest::Method;
use serde_json::json;
use serde_json::Value;

use crate::harness::Options;
use crate::harness::ProcCluster;

/// An open SSE stream and its unparsed tail.
pub struct Sse {
    resp: reqwest::Response,
    buf: String,
}

impl Sse {
    pub async fn open(http: &reqwest::Client, url: &str) -> Self {
        let resp = http
            .get(url)
            .timeout(Duration::from_secs(60))
            .send()
            .await
            .unwrap_or_else(|e| panic!("{url}: {e}"));
        assert_eq!(resp.status().as_u16(), 200, "{url}");
        assert_eq!(resp.headers()["content-type"], "text/event-stream", "{url}");
        Self {
            resp,
            buf: String::new(),
        }
    }

    /// The next event (name, JSON data), or None after `within`.
    pub async fn next(&mut self, within: Duration) -> Option<(String, Value)> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            while let Some(end) = self.buf.find("\n\n") {
                let block: String = self.buf.drain(..end + 2).collect();
                if let Some(ev) = cairn::client::parse_sse(&block) {
                    let data = serde_json::from_str(&ev.data).unwrap_or_else(|e| panic!("{e}: {}", ev.data));
                    return Some((ev.event, data));
                }
            }
            let chunk = tokio::time::timeout_at(deadline, self.resp.chunk()).await.ok()?;
            let chunk = chunk.unwrap_or_else(|e| panic!("stream failed: {e}"))?;
            self.buf.push_str(&String::from_utf8_lossy(&chunk));
        }
    }

    /// Telemetry messages until `pred` holds for one (inclusive), failing
    /// after `within` with what was seen.
    pub async fn until(&mut self, within: Duration, pred: impl Fn(&Value) -> bool) -> Vec<Value> {
        let deadline = tokio::time::Instant::now() + within;
        let mut seen = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let Some((event, data)) = self.next(left).await else {
                panic!("condition not met within {within:?}; saw {seen:?}");
            };
            if event != "telemetry" {
                continue;
            }
            let done = pred(&data);
            seen.push(data);
            if done {
                return seen;
            }
        }
    }
}

fn pose(i: u64) -> Value {
    json!({"x_m": i as f64 * 0.5, "y_m": 1.0, "heading_rad": 0.1, "speed_mps": 0.4, "mode": "normal", "task_id": null})
}

fn world(rejected: u64) -> Value {
    json!({
        "pose": {"x_m": 1.0, "y_m": 2.0, "heading_rad": 0.0},
        "obstacles": [{"x_m": 3.0, "y_m": 1.0, "radius_m": 0.4}],
        "fence": {"current": 3, "accepted": 40, "rejected": rejected},
        "collisions": 0,
        "estop": false
    })
}

fn seqs(msgs: &[Value], topic: &str, node: u64) -> Vec<u64> {
    msgs.iter()
        .filter(|m| m["topic"] == topic && m["node_id"] == node)
        .map(|m| m["seq"].as_u64().unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t56_telemetry_reaches_every_node_in_order_latest_first() {
    let token = "telemetry-token";
    let c = ProcCluster::start_with(
        3,
        Options {
            token: Some(token.into()),
            ..Options::default()
        },
    )
    .await;
    c.wait_leader(Duration::from_secs(15)).await;
    // Fan-out follows the membership, which each node refreshes every second.
    tokio::time::sleep(Duration::from_millis(1500)).await;

    tracing::info!("node 1 publishes 5 poses; a subscriber on node 2 connecting later gets the latest first");
    for i in 1..=5 {
        let (status, _, body) = c
            .send(
                1,
                Method::POST,
                "/v1/telemetry/rover.pose",
                Some(&pose(i).to_string()),
                &[],
            )
            .await;
        assert_eq!(status, 202, "{body}");
        let v: Value = serde_json::from_str(&body).unwrap();
        assert_eq!((v["seq"].as_u64(), v["node_id"].as_u64()), (Some(i), Some(1)), "{v}");
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut late = Sse::open(c.http(), &c.url(2, "/v1/telemetry?topic=rover.pose")).await;
    let (event, first) = late.next(Duration::from_secs(5)).await.expect("latest value");
    assert_eq!(event, "telemetry");
    assert_eq!(
        (first["node_id"].as_u64(), first["seq"].as_u64()),
        (Some(1), Some(5)),
        "{first}"
    );
    assert_eq!(first["payload"], pose(5));
    assert!(first["wall_time_ms"].as_u64().unwrap() > 1_600_000_000_000, "{first}");

    tracing::info!(
        "live: 15 poses from node 1 and worlds from node 3 reach subscribers on all three nodes, in order, once"
    );
    let mut subs = Vec::new();
    for id in 1..=3 {
        subs.push(Sse::open(c.http(), &c.url(id, "/v1/telemetry?topic=rover.pose&prefix=sim.")).await);
    }
    for i in 6..=20 {
        let (status, _, body) = c
            .send(
                1,
                Method::POST,
                "/v1/telemetry/rover.pose",
                Some(&pose(i).to_string()),
                &[],
            )
            .await;
        assert_eq!(status, 202, "{body}");
        if i % 5 == 0 {
            let (status, _, body) = c
                .send(
                    3,
                    Method::POST,
                    "/v1/telemetry/sim.world",
                    Some(&world(i).to_string()),
                    &[],
                )
                .await;
            assert_eq!(status, 202, "{body}");
        }
        // Under the 20 Hz limit: none of these is rate-limited.
        tokio::time::sleep(Duration::from_millis(60)).await;
    }
    for (id, sub) in (1..=3).zip(subs.iter_mut()) {
        let seen = sub
            .until(Duration::from_secs(10), |m| {
                m["topic"] == "rover.pose" && m["seq"] == 20
            })
            .await;
        let got = seqs(&seen, "rover.pose", 1);
        assert_eq!(got, (5..=20).collect::<Vec<_>>(), "node {id}: pose seqs");
        // sim.world may still be in flight; read to its last one.
        let mut seen = seen;
        if !seen.iter().any(|m| m["topic"] == "sim.world" && m["seq"] == 3) {
            seen.extend(
                sub.until(Duration::from_secs(10), |m| m["topic"] == "sim.world" && m["seq"] == 3)
                    .await,
            );
        }
        assert_eq!(seqs(&seen, "sim.world", 3), [1, 2, 3], "node {id}: world seqs");
        assert!(
            seen.iter().all(|m| m["topic"] != "node.stats"),
            "node {id}: the filter let another topic through"
        );
        tracing::info!(id, "no copy arrives later (nothing is forwarded twice)");
        let extra = sub.next(Duration::from_millis(700)).await;
        assert!(extra.is_none(), "node {id}: unexpected {extra:?}");
    }

    tracing::info!("every node publishes node.stats; node 2 sees all three");
    let mut stats = Sse::open(c.http(), &c.url(2, "/v1/telemetry?topic=node.stats")).await;
    let mut from = std::collections::BTreeSet::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while from.len() < 3 {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        let (_, m) = stats
            .next(left)
            .await
            .unwrap_or_else(|| panic!("node.stats only from {from:?}"));
        let p = &m["payload"];
        assert!(p["cpu_percent"].is_f64() || p["cpu_percent"].is_u64(), "{m}");
        assert!(p["rss_mib"].as_f64().is_some_and(|r| r > 1.0), "{m}");
        assert!(p["load1"].is_number(), "{m}");
        assert!(p.get("temperature_c").is_some(), "present, possibly null: {m}");
        from.insert(m["node_id"].as_u64().unwrap());
    }

    tracing::info!("the topic listing counts what was published and received");
    let o = c.get(2, "/v1/telemetry/topics").await.unwrap();
    let pose_info = o["topics"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["topic"] == "rover.pose")
        .cloned()
        .unwrap_or_else(|| panic!("{o}"));
    assert_eq!(pose_info["received"], 20, "{pose_info}");
    assert_eq!(pose_info["published"], 0, "{pose_info}");
    assert_eq!(pose_info["sources"][0]["seq"], 20, "{pose_info}");
    assert_eq!(pose_info["rate_limit_hz"], 20, "{pose_info}");
    let peers: Vec<u64> = o["peers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["node_id"].as_u64().unwrap())
        .collect();
    assert_eq!(peers, [1, 3], "{o}");
    let o1 = c.get(1, "/v1/telemetry/topics").await.unwrap();
    let p1 = o1["topics"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["topic"] == "rover.pose")
        .cloned()
        .unwrap();
    assert_eq!(
        (p1["published"].as_u64(), p1["rate_limited"].as_u64()),
        (Some(20), Some(0)),
        "{p1}"
    );

    tracing::info!("publishing needs the token: 401, nothing delivered");
    let r = reqwest::Client::new()
        .post(c.url(1, "/v1/telemetry/rover.pose"))
        .json(&pose(99))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 401);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["field"], "authorization", "{v}");
    let extra = subs[1].next(Duration::from_millis(500)).await;
    assert!(extra.is_none(), "an unauthorised publish was delivered: {extra:?}");

    tracing::info!("bad input: 4xx JSON naming the field");
    let big = json!({"blob": "x".repeat(20_000)}).to_string();
    let long_topic = format!("/v1/telemetry/{}", "a".repeat(129));
    // (method, path, body, status, field, code)
    type Case<'a> = (Method, &'a str, Option<&'a str>, u16, &'a str, &'a str);
    let cases: Vec<Case> = vec![
        (
            Method::POST,
            "/v1/telemetry/Rover.Pose",
            Some("{}"),
            400,
            "topic",
            "bad_request",
        ),
        (
            Method::POST,
            "/v1/telemetry/rover..pose",
            Some("{}"),
            400,
            "topic",
            "bad_request",
        ),
        (Method::POST, &long_topic, Some("{}"), 400, "topic", "bad_request"),
        (
            Method::POST,
            "/v1/telemetry/rover.pose",
            Some("{not json"),
            400,
            "body",
            "bad_request",
        ),
        (
            Method::POST,
            "/v1/telemetry/rover.pose",
            Some(&big),
            413,
            "body",
            "payload_too_large",
        ),
        (
            Method::GET,
            "/v1/telemetry?topic=Bad",
            None,
            400,
            "topic",
            "bad_request",
        ),
        (
            Method::GET,
            "/v1/telemetry?prefix=a%20b",
            None,
            400,
            "prefix",
            "bad_request",
        ),
        (
            Method::GET,
            "/v1/telemetry?colour=red",
            None,
            400,
            "colour",
            "bad_request",
        ),
    ];
    for (method, path, body, status, field, code) in cases {
        let (got, _, text) = c.send(1, method.clone(), path, body, &[]).await;
        assert_eq!(got, status, "{method} {path}: {text}");
        let v: Value = serde_json::from_str(&text).unwrap_or_else(|_| panic!("{path}: not JSON: {text}"));
        assert_eq!(
            (v["field"].as_str(), v["code"].as_str()),
            (Some(field), Some(code)),
            "{path}: {v}"
        );
    }

    tracing::info!("rate limit: a burst over 20 Hz is cut, each cut message answered 429 and counted");
    let mut statuses = Vec::new();
    let started = std::time::Instant::now();
    for i in 0..60 {
        let (status, _, text) = c
            .send(
                2,
                Method::POST,
                "/v1/telemetry/burst.test",
                Some(&json!({"i": i}).to_string()),
                &[],
            )
            .await;
        if status == 429 {
            let v: Value = serde_json::from_str(&text).unwrap();
            assert_eq!(
                (v["code"].as_str(), v["field"].as_str()),
                (Some("rate_limited"), Some("topic")),
                "{v}"
            );
            assert_eq!(v["retryable"], true, "{v}");
        }
        statuses.push(status);
    }
    let elapsed_s = started.elapsed().as_secs_f64();
    let accepted = statuses.iter().filter(|s| **s == 202).count() as u64;
    let limited = statuses.iter().filter(|s| **s == 429).count() as u64;
    assert_eq!(accepted + limited, 60, "{statuses:?}");
    // A bucket of 10 refilled at 20 Hz over the run.
    let most = 11 + (20.0 * elapsed_s).ceil() as u64;
    assert!(
        (10..=most).contains(&accepted) && limited > 0,
        "{accepted} accepted in {elapsed_s:.2} s: {statuses:?}"
    );
    let o = c.get(2, "/v1/telemetry/topics").await.unwrap();
    let b = o["topics"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["topic"] == "burst.test")
        .cloned()
        .unwrap();
    assert_eq!(
        (b["published"].as_u64(), b["rate_limited"].as_u64()),
        (Some(accepted), Some(limited)),
        "{b}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t57_telemetry_slow_subscriber_loses_oldest_in_process_daemon() {
    let dir = tempfile::TempDir::new().unwrap();
    let port = |_: u8| {
        std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port()
    };
    let mut cfg = cairn::config::NodeConfig::new(1);
    cfg.raft_addr = format!("127.0.0.1:{}", port(0));
    cfg.api_addr = format!("127.0.0.1:{}", port(1));
    cfg.data_dir = dir.path().join("n1");
    cfg.telemetry.subscriber_queue = 4;
    cfg.telemetry.rate_hz = 1000;
    cfg.telemetry.burst = 1000;
    cfg.telemetry.node_stats_interval_ms = 0;
    let daemon = cairn::daemon::Daemon::start(cfg.clone()).await.unwrap();
    let base = format!("http://{}", daemon.api_addr());
    let http = reqwest::Client::new();
    let r = http
        .post(format!("{base}/v1/cluster/init"))
        .json(&json!({"members": {"1": {"raft_addr": cfg.raft_addr, "api_addr": daemon.api_addr()}}}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 201);

    tracing::info!("a subscriber that does not read while 10 poses are published keeps the newest 4");
    let telemetry = daemon.telemetry();
    let mut slow = telemetry.subscribe(cairn::telemetry::TopicFilter::all()).unwrap();
    for i in 1..=10 {
        telemetry.publish("rover.pose", pose(i)).unwrap();
    }
    assert_eq!(slow.dropped(), 6);
    let mut got = Vec::new();
    while let Some(m) = slow.try_recv() {
        got.push(m.seq);
    }
    assert_eq!(got, [7, 8, 9, 10]);
    let o: Value = http
        .get(format!("{base}/v1/telemetry/topics"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(o["topics"][0]["subscriber_dropped"], 6, "{o}");

    tracing::info!("an SSE subscriber whose latest values overflow its queue is told how many it lost");
    for t in ["a.one", "a.two", "a.three", "a.four", "a.five"] {
        telemetry.publish(t, json!({"t": t})).unwrap();
    }
    let mut sse = Sse::open(&http, &format!("{base}/v1/telemetry?prefix=a.&topic=rover.pose")).await;
    let (event, data) = sse.next(Duration::from_secs(5)).await.unwrap();
    assert_eq!((event.as_str(), &data), ("dropped", &json!({"dropped": 2})));
    let mut topics = Vec::new();
    for _ in 0..4 {
        let (event, m) = sse.next(Duration::from_secs(5)).await.unwrap();
        assert_eq!(event, "telemetry");
        topics.push(m["topic"].as_str().unwrap().to_string());
    }
    // Latest values come in topic order; the queue kept the last four.
    assert_eq!(topics, ["a.one", "a.three", "a.two", "rover.pose"]);

    daemon.shutdown().await.unwrap();
}
