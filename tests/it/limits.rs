//! What one client can do to a node's admin API: stream slots kept for
//! token holders, a header read timeout against slowloris, a connection
//! limit, telemetry schemas, and snapshot staging cleaned at start
//! (issue 18). In-process daemons, so each test sets the limits it needs.

use std::net::IpAddr;
use std::time::Duration;
use std::time::Instant;

use serde_json::json;
use serde_json::Value;
use tokio::io::AsyncReadExt;
use tokio::io::AsyncWriteExt;

const TOKEN: &str = "limits-test-token";

fn free_addr() -> String {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    format!("127.0.0.1:{port}")
}

/// A one-node cluster in this process, with a token, `tune` applied to its
/// config before it starts.
async fn one_node(dir: &std::path::Path, tune: impl FnOnce(&mut cairn::config::NodeConfig)) -> cairn::daemon::Daemon {
    let mut cfg = cairn::config::NodeConfig::new(1);
    cfg.raft_addr = free_addr();
    cfg.api_addr = free_addr();
    cfg.data_dir = dir.join("n1");
    cfg.api.token = Some(TOKEN.into());
    cfg.telemetry.node_stats_interval_ms = 0;
    tune(&mut cfg);
    let daemon = cairn::daemon::Daemon::start(cfg.clone()).await.unwrap();
    let r = reqwest::Client::new()
        .post(format!("http://{}/v1/cluster/init", daemon.api_addr()))
        .bearer_auth(TOKEN)
        .json(&json!({"members": {"1": {"raft_addr": cfg.raft_addr, "api_addr": daemon.api_addr()}}}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 201, "{:?}", r.text().await);
    daemon
}

/// A client whose connections come from `ip` (any 127/8 address is this
/// machine on Linux), with no pooling, so each stream is its own connection.
fn client_from(ip: IpAddr) -> reqwest::Client {
    reqwest::Client::builder()
        .local_address(ip)
        .pool_max_idle_per_host(0)
        .connect_timeout(Duration::from_secs(5))
        .build()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t161_anonymous_stream_flood_leaves_token_holders_a_stream() {
    let dir = tempfile::TempDir::new().unwrap();
    // The defaults: 64 streams of a kind, 16 kept for token holders, 8 per
    // anonymous address.
    let daemon = one_node(dir.path(), |_| {}).await;
    let base = format!("http://{}", daemon.api_addr());

    for path in ["/v1/watch", "/v1/telemetry"] {
        tracing::info!(
            path,
            "a flood: 12 addresses open anonymous streams until refused (at most 20 each)"
        );
        let mut held = Vec::new();
        let mut refused = std::collections::BTreeMap::<u16, usize>::new();
        for host in 2..14u8 {
            let http = client_from(IpAddr::from([127, 0, 0, host]));
            for _ in 0..20 {
                let r = http.get(format!("{base}{path}")).send().await.unwrap();
                if r.status().is_success() {
                    held.push(r);
                } else {
                    *refused.entry(r.status().as_u16()).or_default() += 1;
                    break;
                }
            }
        }
        tracing::info!(path, held = held.len(), ?refused, "flood done");
        assert!(
            held.len() <= 48,
            "{path}: anonymous clients took {} streams; 16 of 64 are for token holders",
            held.len()
        );
        assert!(!refused.is_empty(), "{path}: the flood was never refused");

        tracing::info!(
            path,
            "an operator with the token, from a flooding address, still gets a stream"
        );
        let http = client_from(IpAddr::from([127, 0, 0, 2]));
        let r = http
            .get(format!("{base}{path}"))
            .bearer_auth(TOKEN)
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        assert_eq!(
            status,
            200,
            "{path}: an authenticated stream was refused after the flood: {:?}",
            r.text().await
        );
        drop(r);
        tracing::info!(
            path,
            "and an anonymous client on a quiet address is refused with the reason"
        );
        let http = client_from(IpAddr::from([127, 0, 0, 99]));
        let r = http.get(format!("{base}{path}")).send().await.unwrap();
        assert_eq!(r.status().as_u16(), 503);
        let body: Value = r.json().await.unwrap();
        assert!(
            body["message"].as_str().unwrap_or("").contains("token"),
            "{path}: {body}"
        );
        drop(held);
    }
    daemon.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t162_slowloris_is_closed_and_connections_are_bounded() {
    let dir = tempfile::TempDir::new().unwrap();
    tracing::info!("a stale snapshot staging file from a crash is removed when the node starts");
    let staging = dir.path().join("n1").join("snapshot-incoming");
    std::fs::create_dir_all(&staging).unwrap();
    std::fs::write(staging.join("1234.part"), vec![7u8; 4096]).unwrap();
    let daemon = one_node(dir.path(), |cfg| {
        cfg.api.header_read_timeout_ms = 1_000;
        cfg.api.max_connections = 8;
    })
    .await;
    let leftover: Vec<_> = std::fs::read_dir(&staging)
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    assert!(leftover.is_empty(), "staging files survived the start: {leftover:?}");
    let addr = daemon.api_addr().to_string();

    tracing::info!("slowloris: a partial request head, then nothing; the server closes it");
    let mut loris = tokio::net::TcpStream::connect(&addr).await.unwrap();
    loris
        .write_all(b"GET /v1/status HTTP/1.1\r\nHost: cairn\r\nX-Slow: ")
        .await
        .unwrap();
    let started = Instant::now();
    let mut buf = [0u8; 512];
    // Bounded: 10 s, ten times the configured timeout.
    let closed = tokio::time::timeout(Duration::from_secs(10), loris.read(&mut buf)).await;
    match closed {
        Ok(Ok(_)) | Ok(Err(_)) => {}
        Err(_) => panic!("a slowloris connection was still open after 10 s (header_read_timeout_ms = 1000)"),
    }
    tracing::info!(after_ms = started.elapsed().as_millis() as u64, "slowloris closed");

    tracing::info!("8 idle connections fill the limit; a 9th is closed at once; a freed slot serves again");
    let mut idle = Vec::new();
    for _ in 0..8 {
        idle.push(tokio::net::TcpStream::connect(&addr).await.unwrap());
    }
    // The server counts a connection once it accepted it: give it a moment.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut ninth = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let _ = ninth.write_all(b"GET /healthz HTTP/1.1\r\nHost: cairn\r\n\r\n").await;
    let answer = tokio::time::timeout(Duration::from_millis(800), ninth.read(&mut buf)).await;
    assert!(
        matches!(answer, Ok(Ok(0)) | Ok(Err(_))),
        "a connection over the limit was served or left hanging: {answer:?}"
    );
    drop(idle);
    let http = reqwest::Client::new();
    let mut ok = false;
    for _ in 0..50 {
        if let Ok(r) = http.get(format!("http://{addr}/healthz")).send().await {
            if r.status().is_success() {
                ok = true;
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(ok, "the API did not serve again after the idle connections closed");
    daemon.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t163_telemetry_of_known_topics_is_schema_checked_at_publish() {
    let dir = tempfile::TempDir::new().unwrap();
    let daemon = one_node(dir.path(), |_| {}).await;
    let base = format!("http://{}", daemon.api_addr());
    let http = reqwest::Client::new();
    let publish = |topic: &str, body: Value| {
        http.post(format!("{base}/v1/telemetry/{topic}"))
            .bearer_auth(TOKEN)
            .json(&body)
            .send()
    };

    tracing::info!("markup where a number belongs: 400 naming the field, nothing stored");
    let hostile = json!({
        "pose": {"x_m": 1.0, "y_m": 2.0, "heading_rad": 0.0},
        "obstacles": [{"x_m": "<text id=\"INJECTED\">FAKE E-STOP</text>", "y_m": 1.0, "radius_m": 0.4}],
        "fence": {"current": 3, "accepted": 40, "rejected": 0}, "collisions": 0, "estop": false
    });
    let r = publish("sim.world", hostile).await.unwrap();
    assert_eq!(r.status().as_u16(), 400);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["field"], "payload.obstacles[0].x_m", "{body}");
    let r = publish("rover.pose", json!({"x_m": {"a": 1}, "y_m": 0.0, "heading_rad": 0.0}))
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 400);
    let r = publish("node.stats", json!({"cpu_percent": "<b>99</b>"}))
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 400);
    let topics: Value = http
        .get(format!("{base}/v1/telemetry/topics"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let text = topics.to_string();
    assert!(
        !text.contains("sim.world") && !text.contains("INJECTED"),
        "a refused payload was stored: {text}"
    );

    tracing::info!("the producers' shapes and free-form topics pass");
    let world = json!({
        "pose": {"x_m": 1.0, "y_m": 2.0, "heading_rad": 0.0}, "speed_mps": 0.3,
        "obstacles": [{"x_m": 3.0, "y_m": 1.0, "radius_m": 0.4}],
        "fence": {"current": 3, "accepted": 40, "rejected": 0}, "collisions": 0, "estop": false
    });
    assert_eq!(publish("sim.world", world).await.unwrap().status().as_u16(), 202);
    assert_eq!(
        publish("lab.note", json!({"text": "<b>free-form</b>"}))
            .await
            .unwrap()
            .status()
            .as_u16(),
        202
    );
    daemon.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t164_backup_syncs_the_directory_after_the_rename() {
    let ok = std::process::Command::new("strace")
        .args(["-f", "-o", "/dev/null", "true"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        eprintln!("t164 skipped: strace is missing or may not trace here");
        return;
    }
    let dir = tempfile::TempDir::new().unwrap();
    let daemon = one_node(dir.path(), |_| {}).await;
    let out_dir = dir.path().join("out");
    std::fs::create_dir_all(&out_dir).unwrap();
    let file = out_dir.join("sol.backup");
    let trace = dir.path().join("trace");

    tracing::info!("cairn backup under strace: rename FILE.tmp to FILE, then open and fsync FILE's directory");
    let addr = daemon.api_addr().to_string();
    let bin = crate::harness::cairn_bin();
    let out = tokio::task::spawn_blocking({
        let (file, trace) = (file.clone(), trace.clone());
        move || {
            std::process::Command::new("strace")
                .args([
                    "-f",
                    "-e",
                    "trace=openat,rename,renameat,renameat2,fsync,fdatasync",
                    "-o",
                ])
                .arg(&trace)
                .arg(bin)
                .args(["--endpoints", &addr, "backup"])
                .arg(&file)
                .env("CAIRN_TOKEN", TOKEN)
                .env("RUST_LOG", "error")
                .env_remove("CAIRN_ENDPOINTS")
                .output()
                .unwrap()
        }
    })
    .await
    .unwrap();
    assert!(out.status.success(), "backup: {}", String::from_utf8_lossy(&out.stderr));
    assert!(file.exists());
    let text = std::fs::read_to_string(&trace).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    let renamed = lines
        .iter()
        .position(|l| l.contains("rename") && l.contains(".tmp\""))
        .unwrap_or_else(|| panic!("no rename of the .tmp file in the trace:\n{text}"));
    let after = &lines[renamed + 1..];
    let quoted = format!("\"{}\"", out_dir.display());
    let fd = after.iter().find_map(|l| {
        (l.contains("openat(") && l.contains(&quoted))
            .then(|| l.rsplit("= ").next()?.trim().parse::<i64>().ok())
            .flatten()
    });
    let synced = fd.is_some_and(|fd| after.iter().any(|l| l.contains(&format!("fsync({fd})"))));
    assert!(
        synced,
        "the directory {quoted} was not opened and fsynced after the rename:\n{}",
        after.join("\n")
    );
    daemon.shutdown().await.unwrap();
}
