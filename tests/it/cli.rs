//! Operator-facing details of the binary (issue 22): what the CLI does when
//! its reader goes away, what the logs and error bodies look like, and
//! whether a node says which build it runs.

use std::os::unix::process::ExitStatusExt as _;
use std::process::Stdio;
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::Value;

use crate::harness::Options;
use crate::harness::ProcCluster;

/// `cairn watch | head -1`: once the reader is gone the CLI ends by SIGPIPE
/// (exit 141 in a shell), as `cat` or `etcdctl` do. It used to panic in
/// `println!` ("failed printing to stdout: Broken pipe", exit 101).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t100_a_printing_command_whose_reader_is_gone_ends_quietly() {
    let c = ProcCluster::start(1).await;
    c.wait_leader(Duration::from_secs(10)).await;
    let mut watch = c
        .cli_command(c.api_addr(1))
        .args(["watch"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn cairn watch");
    // The reader goes away before anything is printed.
    drop(watch.stdout.take());
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = watch.try_wait().expect("poll cairn watch") {
            break status;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "cairn watch still runs 30 s after its reader closed, with changes to print"
        );
        // Something for it to print.
        let out = c.cli(&["param", "set", "drive.max_speed_mps", "1.2"]);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    let mut stderr = String::new();
    if let Some(mut e) = watch.stderr.take() {
        use std::io::Read as _;
        let _ = e.read_to_string(&mut stderr);
    }
    assert!(!stderr.contains("panicked"), "cairn watch panicked: {stderr}");
    assert_eq!(
        status.signal(),
        Some(libc_sigpipe()),
        "cairn watch should end by SIGPIPE, ended with {status:?}; stderr: {stderr}"
    );
}

/// SIGPIPE's number on Linux (the test crate does not link libc).
fn libc_sigpipe() -> i32 {
    13
}

/// Logs written to a file (or journald) carry no ANSI colour codes; they
/// used to, whatever stderr was.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t101_logs_to_a_file_have_no_colour_codes() {
    let c = ProcCluster::start(1).await;
    c.wait_leader(Duration::from_secs(10)).await;
    let log = c.log(1);
    assert!(log.contains("raft node started"), "no log yet: {log}");
    assert!(
        !log.contains('\u{1b}'),
        "the node's log file has ANSI escapes: {:?}",
        log.lines().next()
    );
}

/// A wrong method on a known path gets the JSON error body every other
/// error has (it was an empty 405), keeping the `Allow` header; an unknown
/// path a JSON 404.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t102_a_wrong_method_gets_a_json_error_body() {
    let c = ProcCluster::start(1).await;
    c.wait_leader(Duration::from_secs(10)).await;
    let r = c.http().put(c.url(1, "/v1/status")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::METHOD_NOT_ALLOWED);
    let allow = r
        .headers()
        .get("allow")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    assert!(allow.contains("GET"), "Allow: {allow:?}");
    let body: Value = r.json().await.expect("a JSON body on 405");
    assert_eq!(body["code"], "method_not_allowed", "{body}");
    assert!(body["message"].as_str().unwrap_or("").contains("PUT"), "{body}");
    assert_eq!(body["retryable"], false, "{body}");
    let r = c.http().get(c.url(1, "/v1/nope")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    let body: Value = r.json().await.expect("a JSON body on 404");
    assert_eq!(body["code"], "not_found", "{body}");
}

/// `GET /version` (public, like /healthz) and `cairn_build_info` say which
/// build a node runs: a rolling upgrade can tell old nodes from new ones.
/// There was no way to.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t103_a_node_says_which_build_it_runs() {
    let opts = Options {
        token: Some("t103-token".into()),
        read_requires_token: true,
        ..Options::default()
    };
    let c = ProcCluster::start_with(1, opts).await;
    c.wait_leader(Duration::from_secs(10)).await;
    // No token: /version is public.
    let r = c.http().get(c.url(1, "/version")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["version"], env!("CARGO_PKG_VERSION"), "{v}");
    // build.rs gives the test crate the same commit it gave the binary.
    let commit = env!("CAIRN_COMMIT");
    assert_eq!(v["commit"], commit, "{v}");
    if std::path::Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/.git")).exists() {
        assert!(
            commit.len() == 12 && commit.chars().all(|ch| ch.is_ascii_hexdigit()),
            "built in a git checkout, yet the commit is {commit:?}"
        );
    }
    let metrics = c
        .http()
        .get(c.url(1, "/metrics"))
        .bearer_auth("t103-token")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let line = format!(
        "cairn_build_info{{commit=\"{commit}\",version=\"{}\"}} 1",
        env!("CARGO_PKG_VERSION")
    );
    assert!(metrics.contains(&line), "no {line:?} in /metrics");
    for family in [
        "process_resident_memory_bytes",
        "process_cpu_seconds_total",
        "process_open_fds",
    ] {
        assert!(metrics.contains(family), "no {family} in /metrics");
    }
}
