//! Issue 18, part 2: the peer port's resources are bounded. A connection
//! costs only the bytes it actually sent, not the length it announced;
//! connections beyond `peer.max_connections` are closed; a silent or
//! stalled connection is closed after `peer.idle_timeout_ms` /
//! `peer.frame_timeout_ms`.
//!
//! The peers here speak the wire format by hand (a length-prefixed
//! postcard `Hello`), as an intruder or a buggy node would.

use std::time::Duration;

use tokio::io::AsyncReadExt;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use crate::harness::Options;
use crate::harness::ProcCluster;

/// The cairn hello of node `from`, framed: a 4-byte big-endian length, then
/// postcard of `{ magic: b"cairn-rp", version: 2, from }` (the version and
/// the id as varints; both under 128 here). The version is the peer
/// protocol's (`PROTOCOL_VERSION` in raft-core's `consensus/protocol.rs`).
fn hello(from: u8) -> Vec<u8> {
    let mut body = b"cairn-rp".to_vec();
    body.extend([2u8, from]);
    let mut frame = (body.len() as u32).to_be_bytes().to_vec();
    frame.extend(body);
    frame
}

/// Connect to node `id`'s peer port and say hello; `None` if the node
/// closed the connection instead of answering (e.g. over its limit).
async fn greeted(c: &ProcCluster, id: u64, from: u8) -> Option<TcpStream> {
    let mut s = TcpStream::connect(c.raft_addr(id)).await.ok()?;
    s.write_all(&hello(from)).await.ok()?;
    let mut len = [0u8; 4];
    match tokio::time::timeout(Duration::from_secs(10), s.read_exact(&mut len)).await {
        Ok(Ok(_)) => {}
        _ => return None,
    }
    let mut reply = vec![0u8; u32::from_be_bytes(len).min(4096) as usize];
    s.read_exact(&mut reply).await.ok()?;
    Some(s)
}

/// VmRSS of a process, in MiB.
fn rss_mib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map(|kb| kb / 1024)
        .unwrap_or(0)
}

/// A config file with `[peer]` settings, for `--config`.
fn peer_config(dir: &std::path::Path, peer: &str) -> String {
    let path = dir.join("peer.toml");
    std::fs::write(&path, format!("[peer]\n{peer}\n")).unwrap();
    path.display().to_string()
}

/// 200 connections that each announce a 16 MiB frame and send 16 bytes of
/// it leave the node under 100 MB of RSS, and it keeps serving.
///
/// Without the fix the node allocated and zeroed each announced frame up
/// front, with no connection limit: the first batch of 20 took it past
/// 300 MB (the test stops at the first batch over the bound, so it never
/// costs the machine the 3.2 GB the 200 would).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t73_peer_connections_announcing_huge_frames_cost_only_what_they_send() {
    let c = ProcCluster::start_with(1, Options::default()).await;
    let leader = c.wait_leader(Duration::from_secs(15)).await;
    let pid = c.pid(leader);
    let before = rss_mib(pid);
    tracing::info!(
        before_mib = before,
        "200 connections, each announcing a 16 MiB frame, in batches of 20"
    );
    let mut held = Vec::new();
    let mut refused = 0;
    for batch in 0..10 {
        for _ in 0..20 {
            let Some(mut s) = greeted(&c, leader, 9).await else {
                refused += 1;
                continue;
            };
            let mut frame = (16u32 << 20).to_be_bytes().to_vec();
            frame.extend([0xabu8; 16]);
            if s.write_all(&frame).await.is_ok() {
                held.push(s);
            }
        }
        // Let the node read what was sent (bounded: RSS is the measure).
        tokio::time::sleep(Duration::from_millis(300)).await;
        let rss = rss_mib(pid);
        tracing::info!(
            batch,
            connections = (batch + 1) * 20,
            refused,
            rss_mib = rss,
            "after a batch"
        );
        assert!(
            rss < 100,
            "after {} connections announcing 16 MiB frames the node's RSS is {rss} MiB (was {before} MiB)",
            (batch + 1) * 20
        );
    }
    tracing::info!(held = held.len(), refused, "the node still serves: a write commits");
    let declare = serde_json::json!({"name": "peer.ok", "kind": {"Int": {"min": 0, "max": 10}}, "value": {"Int": 3}});
    c.post(leader, "/v1/params", &declare)
        .await
        .expect("a write under the flood");
    let limit = c
        .log(leader)
        .lines()
        .any(|l| l.contains("peer connection limit reached"));
    assert!(
        limit,
        "200 held connections are over the default limit of 64, and the node says so:\n{}",
        c.log(leader)
    );
    drop(held);
}

/// A peer connection that says hello and then nothing is closed after
/// `peer.idle_timeout_ms`; one that starts a frame and stalls, after
/// `peer.frame_timeout_ms`. Both are logged and counted.
///
/// Without the fix nothing after the handshake had a deadline: the reads
/// below waited their whole 20 s bound and failed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t74_a_silent_or_stalled_peer_connection_is_closed() {
    let dir = tempfile::TempDir::new().unwrap();
    let config = peer_config(dir.path(), "idle_timeout_ms = 1500\nframe_timeout_ms = 1000");
    let c = ProcCluster::start_with(
        1,
        Options {
            extra_args: vec!["--config".into(), config],
            ..Options::default()
        },
    )
    .await;
    let leader = c.wait_leader(Duration::from_secs(15)).await;

    async fn closed_within(s: &mut TcpStream, bound: Duration) -> bool {
        let mut buf = [0u8; 64];
        // Bounded: a closed connection reads 0 (or fails) at once.
        for _ in 0..100 {
            match tokio::time::timeout(bound, s.read(&mut buf)).await {
                Ok(Ok(0)) | Ok(Err(_)) => return true,
                Ok(Ok(_)) => continue,
                Err(_) => return false,
            }
        }
        false
    }

    tracing::info!("a connection says hello, then nothing");
    let mut idle = greeted(&c, leader, 9).await.expect("hello answered");
    assert!(
        closed_within(&mut idle, Duration::from_secs(20)).await,
        "an idle peer connection was still open after 20 s (idle_timeout_ms = 1500)"
    );

    tracing::info!("a connection starts a 100-byte frame and stalls after 10");
    let mut stalled = greeted(&c, leader, 9).await.expect("hello answered");
    let mut frame = 100u32.to_be_bytes().to_vec();
    frame.extend([0u8; 10]);
    stalled.write_all(&frame).await.unwrap();
    assert!(
        closed_within(&mut stalled, Duration::from_secs(20)).await,
        "a stalled peer frame was still open after 20 s (frame_timeout_ms = 1000)"
    );

    tracing::info!("both are logged and counted");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let text = loop {
        let (_, _, text) = c.send(leader, reqwest::Method::GET, "/metrics", None, &[]).await;
        if (text.contains("cairn_peer_refused_total{reason=\"idle_timeout\"} 1")
            && text.contains("cairn_peer_refused_total{reason=\"frame_timeout\"} 1"))
            || tokio::time::Instant::now() > deadline
        {
            break text;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(
        text.contains("cairn_peer_refused_total{reason=\"idle_timeout\"} 1")
            && text.contains("cairn_peer_refused_total{reason=\"frame_timeout\"} 1"),
        "{}",
        text.lines()
            .filter(|l| l.contains("peer_refused"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    assert!(
        c.log(leader).contains("closing peer connection: timed out"),
        "{}",
        c.log(leader)
    );
}
