//! The `otel` feature: spans of a write reach an OTLP/HTTP collector.
//!
//! The collector is a tiny axum route on loopback that keeps every body.
//! OTLP/HTTP bodies are protobuf, where strings are their raw UTF-8 bytes,
//! so byte searches find span names, attribute keys and values.

use std::sync::Arc;
use std::sync::Mutex;
use std::time::Duration;

use reqwest::Method;

use crate::harness::Options;
use crate::harness::ProcCluster;

type Bodies = Arc<Mutex<Vec<Vec<u8>>>>;

/// An OTLP/HTTP traces receiver on 127.0.0.1; returns its base URL.
async fn collector(bodies: Bodies) -> String {
    let app = axum::Router::new().route(
        "/v1/traces",
        axum::routing::post(move |body: axum::body::Bytes| {
            let bodies = bodies.clone();
            async move {
                bodies.lock().unwrap().push(body.to_vec());
                // An empty ExportTraceServiceResponse: full success.
                ([("content-type", "application/x-protobuf")], Vec::<u8>::new())
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    format!("http://{addr}")
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

/// The `request_ids` attribute (a protobuf KeyValue: the key's bytes, then
/// a few bytes of tags and lengths, then the value's) names `id`.
fn names_in_request_ids(body: &[u8], id: &[u8]) -> bool {
    let key = b"request_ids";
    body.windows(key.len()).enumerate().any(|(at, w)| {
        w == key && {
            let after = &body[at + key.len()..];
            contains(&after[..after.len().min(8 + id.len())], id)
        }
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t45_otel_exports_the_write_path_spans_with_the_request_id() {
    let bodies: Bodies = Arc::default();
    let endpoint = collector(bodies.clone()).await;
    let dir = tempfile::TempDir::new().unwrap();
    let config = dir.path().join("node.toml");
    std::fs::write(&config, format!("id = 1\n[tracing]\notlp_endpoint = \"{endpoint}\"\n")).unwrap();
    let mut c = ProcCluster::start_with(
        3,
        Options {
            extra_args: vec!["--config".into(), config.display().to_string()],
            ..Default::default()
        },
    )
    .await;
    let leader = c.wait_leader(Duration::from_secs(15)).await;
    let follower = (1..=3).find(|i| *i != leader).unwrap();

    tracing::info!(follower, leader, "a write through a follower, with a known request id");
    let request_id = "t45-otel-7f3a";
    let (status, headers, body) = c
        .send(
            follower,
            Method::POST,
            "/v1/params",
            Some(r#"{"name": "otel.probe", "kind": "Bool", "value": {"Bool": true}}"#),
            &[("x-request-id", request_id)],
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(headers["x-request-id"], request_id);

    tracing::info!("stop the leader gracefully: it flushes its last batch of spans on the way out");
    assert!(c.stop(leader).await.is_some(), "the leader did not stop on SIGTERM");
    for id in (1..=3).filter(|i| *i != leader) {
        c.stop(id).await;
    }

    tracing::info!("the collector got the request id and the raft spans (bounded wait)");
    let id = request_id.as_bytes();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let (with_id, client_write, apply_with_id, append, resource) = {
            let b = bodies.lock().unwrap();
            (
                b.iter().any(|x| contains(x, id)),
                // The leader's client write runs with the forwarded id.
                b.iter().any(|x| contains(x, b"raft.client_write") && contains(x, id)),
                // Its apply span names the request among the batch's ids.
                b.iter()
                    .any(|x| contains(x, b"raft.apply") && names_in_request_ids(x, id)),
                b.iter()
                    .any(|x| contains(x, b"raft.append") && contains(x, b"fsync_us")),
                b.iter()
                    .any(|x| contains(x, b"service.name") && contains(x, b"cairn.node_id")),
            )
        };
        if with_id && client_write && apply_with_id && append && resource {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "exported spans incomplete: request id {with_id}, raft.client_write with it {client_write}, \
             raft.apply naming it {apply_with_id}, raft.append with fsync_us {append}, resource {resource}; \
             {} bodies received; leader log:\n{}",
            bodies.lock().unwrap().len(),
            c.log(leader)
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
