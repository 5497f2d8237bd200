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

mod follow;

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

/// Everything a finished CLI run said, for assertion messages.
fn said(out: &std::process::Output) -> String {
    format!(
        "exit {:?}\nstdout:\n{}\nstderr:\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// The CLI with these endpoints and arguments, outside any cluster.
fn cli_alone(endpoints: &str, args: &[&str]) -> std::process::Output {
    let home = tempfile::TempDir::new().expect("temp home");
    std::process::Command::new(crate::harness::cairn_bin())
        .arg("--endpoints")
        .arg(endpoints)
        .args(args)
        .env("RUST_LOG", "error")
        .env("HOME", home.path())
        .env_remove("XDG_CONFIG_HOME")
        .env_remove("CAIRN_TOKEN")
        .env_remove("CAIRN_ENDPOINTS")
        .env_remove("CAIRN_CA_CERT")
        .output()
        .expect("run cairn cli")
}

/// A frozen endpoint (SIGSTOP: its kernel still completes the TCP
/// handshake, then nothing answers) is skipped after the dial timeout
/// (2 s by default), not after the whole request timeout: it used to cost
/// 10 s per call, so a read listing it first took over 10 s.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t104_a_frozen_first_endpoint_is_skipped_within_the_dial_timeout() {
    let c = ProcCluster::start(3).await;
    let leader = c.wait_leader(Duration::from_secs(15)).await;
    let frozen = (1..=3).find(|i| *i != leader).unwrap();
    let mut eps = vec![c.api_addr(frozen).to_string()];
    eps.extend((1..=3).filter(|i| *i != frozen).map(|i| c.api_addr(i).to_string()));
    c.pause(frozen);
    let started = std::time::Instant::now();
    let out = c.cli_command(&eps.join(",")).args(["param", "list"]).output().unwrap();
    let took = started.elapsed();
    c.resume(frozen);
    tracing::info!(?took, "param list with a frozen first endpoint");
    eprintln!("t104: param list with a frozen first endpoint took {took:?}");
    assert!(out.status.success(), "{}", said(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("drive.max_speed_mps"),
        "{}",
        said(&out)
    );
    assert!(
        took < Duration::from_secs(6),
        "took {took:?} past a frozen endpoint: {}",
        said(&out)
    );
}

/// Exit codes tell the failures apart (documented in `cairn --help`):
/// 3 unavailable, 4 refused by the cluster, 5 timeout / outcome unknown.
/// Every runtime error used to exit 1.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t105_exit_codes_tell_failures_apart() {
    let help = cli_alone("127.0.0.1:1", &["--help"]);
    let help_text = String::from_utf8_lossy(&help.stdout);
    assert!(help.status.success(), "{}", said(&help));
    for line in ["3  unavailable", "4  refused by the cluster", "5  timeout"] {
        assert!(help_text.contains(line), "no {line:?} in --help: {help_text}");
    }

    tracing::info!("no endpoint reachable: 3");
    let out = cli_alone("127.0.0.1:1", &["param", "list"]);
    assert_eq!(out.status.code(), Some(3), "{}", said(&out));
    let out = cli_alone("127.0.0.1:1", &["status"]);
    assert_eq!(out.status.code(), Some(3), "{}", said(&out));

    tracing::info!("usage: 2 (clap)");
    let out = cli_alone("127.0.0.1:1", &["param", "frobnicate"]);
    assert_eq!(out.status.code(), Some(2), "{}", said(&out));

    let c = ProcCluster::start(3).await;
    let leader = c.wait_leader(Duration::from_secs(15)).await;
    tracing::info!("refused by the cluster (400, 404): 4, nothing changed");
    let out = c.cli(&["param", "set", "drive.max_speed_mps", "99"]);
    assert_eq!(out.status.code(), Some(4), "{}", said(&out));
    tracing::info!("a value that is not of the parameter's kind: 1, as when the CLI parsed it itself");
    let out = c.cli(&["param", "set", "drive.max_speed_mps", "fast"]);
    assert_eq!(out.status.code(), Some(1), "{}", said(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("error: \"fast\" is not a number: invalid float literal"),
        "{}",
        said(&out)
    );
    let out = c.cli(&["member", "remove", "99"]);
    assert_eq!(out.status.code(), Some(4), "{}", said(&out));

    tracing::info!("both followers frozen: a write through the leader cannot commit: 5");
    let followers: Vec<u64> = (1..=3).filter(|i| *i != leader).collect();
    for f in &followers {
        c.pause(*f);
    }
    let out = c
        .cli_command(c.api_addr(leader))
        .args([
            "--command-timeout-ms",
            "1500",
            "param",
            "declare",
            "t105.x",
            "bool",
            "true",
        ])
        .output()
        .unwrap();
    let read = c
        .cli_command(c.api_addr(leader))
        .args(["--command-timeout-ms", "1500", "param", "list"])
        .output()
        .unwrap();
    for f in &followers {
        c.resume(*f);
    }
    assert_eq!(out.status.code(), Some(5), "{}", said(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("outcome is unknown"),
        "{}",
        said(&out)
    );
    tracing::info!("a read that cannot complete on a reachable leader is not \"no endpoint reachable\"");
    assert!(!read.status.success(), "{}", said(&read));
    assert!(
        !String::from_utf8_lossy(&read.stderr).contains("no endpoint reachable"),
        "{}",
        said(&read)
    );
}

/// A plain HTTP server that answers every request with an HTML 404 (as a
/// web server on a wrong port would), for at most `max` connections.
async fn html_server(max: usize) -> (String, tokio::task::JoinHandle<()>) {
    use tokio::io::AsyncReadExt as _;
    use tokio::io::AsyncWriteExt as _;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let task = tokio::spawn(async move {
        for _ in 0..max {
            let Ok((mut sock, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                let _ = tokio::time::timeout(Duration::from_secs(2), sock.read(&mut buf)).await;
                let body = "<html><head><title>404 Not Found</title></head><body><h1>Not Found</h1></body></html>";
                let resp = format!(
                    "HTTP/1.1 404 Not Found\r\nContent-Type: text/html\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = sock.write_all(resp.as_bytes()).await;
                let _ = sock.shutdown().await;
            });
        }
    });
    (addr, task)
}

/// Errors name their root cause once: no address or OS error repeated, no
/// HTML from a server that is not cairn (which no longer stops fail-over),
/// and before `cluster init` the nodes say so instead of "no node running".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t106_errors_name_their_cause_once() {
    tracing::info!("nothing listens: the address and the OS error once each, one line");
    let out = cli_alone("127.0.0.1:1", &["param", "list"]);
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    assert_eq!(err.matches("127.0.0.1:1").count(), 1, "{}", said(&out));
    assert!(err.matches("os error 111").count() <= 1, "{}", said(&out));
    assert!(err.contains("Connection refused"), "{}", said(&out));
    assert_eq!(err.trim().lines().count(), 1, "{}", said(&out));

    tracing::info!("some other HTTP server first: fail-over goes on, and no HTML is printed");
    let (html, server) = html_server(50).await;
    let out = cli_alone(&html, &["param", "list"]);
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    assert_eq!(out.status.code(), Some(3), "{}", said(&out));
    assert!(err.contains("not as a cairn node"), "{}", said(&out));
    assert!(!err.contains("<html") && !err.contains("<h1"), "{}", said(&out));
    assert_eq!(err.matches(&html).count(), 1, "{}", said(&out));

    let c = ProcCluster::start(3).await;
    c.wait_leader(Duration::from_secs(15)).await;
    let out = c.cli_with_endpoints(&html, &["param", "list"]);
    assert!(out.status.success(), "{}", said(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("drive.max_speed_mps"),
        "{}",
        said(&out)
    );
    server.abort();

    tracing::info!("a refusal names the endpoint once");
    let out = c.cli(&["cluster", "init", "--member", &c.member_arg(1)]);
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(err.contains("already part of an initialized cluster"), "{}", said(&out));
    assert_eq!(err.matches(c.api_addr(1)).count(), 1, "{}", said(&out));
    drop(c);

    tracing::info!("before cluster init: the nodes run, and say they are part of no cluster");
    let c = ProcCluster::start_uninit(3).await;
    let all: Vec<&str> = (1..=3).map(|i| c.api_addr(i)).collect();
    let out = c.cli_command(&all.join(",")).args(["param", "list"]).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    assert_eq!(out.status.code(), Some(3), "{}", said(&out));
    assert!(!err.contains("is a node running"), "{}", said(&out));
    assert!(err.contains("cairn cluster init"), "{}", said(&out));
}

/// stdout as JSON, or a failure showing everything the command said.
fn json_out(out: &std::process::Output) -> Value {
    assert!(out.status.success(), "{}", said(out));
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {}", said(out)))
}

/// `cairn sim run` on a free port, killed when dropped.
struct Sim {
    addr: String,
    out: std::path::PathBuf,
    child: std::process::Child,
}

impl Sim {
    async fn start(dir: &std::path::Path, json: bool) -> Self {
        let addr = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().to_string()
        };
        let out = dir.join("sim.out");
        let mut cmd = std::process::Command::new(crate::harness::cairn_bin());
        if json {
            cmd.args(["-o", "json"]);
        }
        let child = cmd
            .args(["sim", "run", "--sim-addr", &addr, "--status-interval-ms", "0"])
            .env("RUST_LOG", "error")
            .stdout(std::fs::File::create(&out).unwrap())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn cairn sim run");
        let sim = Self { addr, out, child };
        let deadline = std::time::Instant::now() + Duration::from_secs(15);
        while !sim.cli(&["sim", "status"]).status.success() {
            assert!(std::time::Instant::now() < deadline, "cairn sim run never answered");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        sim
    }

    fn cli(&self, args: &[&str]) -> std::process::Output {
        let mut all: Vec<&str> = args.to_vec();
        all.extend(["--sim-addr", &self.addr]);
        cli_alone("127.0.0.1:1", &all)
    }

    fn stdout(&self) -> String {
        std::fs::read_to_string(&self.out).unwrap_or_default()
    }
}

impl Drop for Sim {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `-o json` is honoured by every command: `cluster init`, `member *`,
/// `restore` and `sim *` printed their human lines regardless.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t107_every_command_prints_json_with_o_json() {
    let mut c = ProcCluster::start_uninit(3).await;
    let all: Vec<String> = (1..=3).map(|i| c.api_addr(i).to_string()).collect();
    let members: Vec<String> = (1..=3).map(|i| c.member_arg(i)).collect();
    let mut args = vec!["-o", "json", "cluster", "init", "--wait"];
    for m in &members {
        args.extend(["--member", m.as_str()]);
    }
    let v = json_out(&c.cli_command(&all.join(",")).args(&args).output().unwrap());
    assert_eq!(v["voters"], serde_json::json!([1, 2, 3]), "{v}");
    assert!(v["leader"].as_u64().is_some(), "{v}");

    let v = json_out(&c.cli(&["-o", "json", "member", "list"]));
    assert_eq!(v.as_array().map(Vec::len), Some(3), "{v}");

    tracing::info!("member add / promote / transfer-leader / remove");
    c.add_stopped(4, vec![]);
    c.restart(4).await;
    let (raft4, api4) = (c.raft_addr(4).to_string(), c.api_addr(4).to_string());
    let v = json_out(&c.cli(&[
        "-o",
        "json",
        "member",
        "add",
        "4",
        "--raft-addr",
        &raft4,
        "--api-addr",
        &api4,
    ]));
    assert_eq!(v["caught_up"], true, "{v}");
    let v = json_out(&c.cli(&["-o", "json", "member", "promote", "4"]));
    assert_eq!(v["voter"], true, "{v}");
    let leader = c.wait_leader(Duration::from_secs(15)).await;
    let to = (1..=3).find(|i| *i != leader).unwrap();
    let v = json_out(&c.cli(&["-o", "json", "member", "transfer-leader", &to.to_string()]));
    assert_eq!(v["leader"].as_u64(), Some(to), "{v}");
    let v = json_out(&c.cli(&["-o", "json", "member", "remove", "4"]));
    assert_eq!(v["removed"], true, "{v}");

    tracing::info!("backup, then restore it offline");
    let file = c.dir().join("t107.backup");
    let file = file.to_str().unwrap();
    let out = c.cli(&["backup", file]);
    assert!(out.status.success(), "{}", said(&out));
    let restored = c.dir().join("restored");
    let v = json_out(&c.cli(&[
        "-o",
        "json",
        "restore",
        file,
        "--id",
        "9",
        "--data-dir",
        restored.to_str().unwrap(),
        "--raft-addr",
        "127.0.0.1:1",
        "--api-addr",
        "127.0.0.1:2",
    ]));
    assert_eq!(v["node_id"], 9, "{v}");
    assert!(v["index"].as_u64().is_some(), "{v}");

    tracing::info!("sim run / status / fault / estop");
    let sim = Sim::start(c.dir(), true).await;
    let v = json_out(&sim.cli(&["-o", "json", "sim", "status"]));
    assert!(v.is_object(), "{v}");
    let v = json_out(&sim.cli(&["-o", "json", "sim", "fault", "lidar", "dropout:0.5"]));
    assert_eq!(v, serde_json::json!({"device": "lidar", "fault": "dropout:0.5"}));
    let v = json_out(&sim.cli(&["-o", "json", "sim", "estop", "on"]));
    assert_eq!(v["engaged"], true, "{v}");
    let first = sim.stdout().lines().next().unwrap_or_default().to_string();
    let v: Value = serde_json::from_str(&first).unwrap_or_else(|e| panic!("sim run's first line {first:?}: {e}"));
    assert!(v["listening"].as_str().is_some(), "{v}");
}

/// Human output in the words people type: `sim fault` said `range:
/// Failed` for `lidar failed` and `Dropout { probability: 0.5 }`; policy
/// mode `gps-only` came back as `gpsonly`; a sensor report's time was
/// `1796572828374` ms.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t108_human_output_uses_the_users_words_and_readable_times() {
    let c = ProcCluster::start(1).await;
    c.wait_leader(Duration::from_secs(10)).await;
    let sim = Sim::start(c.dir(), false).await;
    let out = sim.cli(&["sim", "fault", "lidar", "dropout:0.5"]);
    assert!(out.status.success(), "{}", said(&out));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "lidar: dropout:0.5",
        "{}",
        said(&out)
    );
    let out = sim.cli(&["sim", "fault", "lidar", "failed"]);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "lidar: failed",
        "{}",
        said(&out)
    );

    let out = c.cli(&["policy", "set", "imu", "degraded", "gps-only", "0.5"]);
    assert!(out.status.success(), "{}", said(&out));
    let out = c.cli(&["policy", "list"]);
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(text.contains("gps-only") && !text.contains("gpsonly"), "{}", said(&out));

    let out = c.cli(&["sensor", "report", "imu", "degraded"]);
    assert!(out.status.success(), "{}", said(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("gps-only"),
        "{}",
        said(&out)
    );
    let out = c.cli(&["sensor", "list"]);
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let row = text
        .lines()
        .find(|l| l.starts_with("imu"))
        .unwrap_or_else(|| panic!("no imu row: {}", said(&out)));
    // e.g. `imu     degraded  2026-12-07T12:57:38Z (0s ago)`
    let year = row.split_whitespace().nth(2).unwrap_or_default();
    assert!(
        year.len() == 20 && year.ends_with('Z') && year.as_bytes()[10] == b'T',
        "not RFC 3339: {row}"
    );
    assert!(row.contains("s ago)"), "no age: {row}");
    assert!(text.contains("gps-only"), "{}", said(&out));
}

/// `cluster init --wait` returns once a leader is known and names it (it
/// returned before any leader existed); `transfer-leader` confirms the new
/// leader, or says it did not lead in time (it only said "requested").
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t109_init_waits_for_a_leader_and_transfer_confirms_it() {
    let c = ProcCluster::start_uninit(3).await;
    let all: Vec<String> = (1..=3).map(|i| c.api_addr(i).to_string()).collect();
    let members: Vec<String> = (1..=3).map(|i| c.member_arg(i)).collect();
    let mut args = vec!["cluster", "init", "--wait"];
    for m in &members {
        args.extend(["--member", m.as_str()]);
    }
    let out = c.cli_command(&all.join(",")).args(&args).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(out.status.success(), "{}", said(&out));
    let leader: u64 = text
        .split("node ")
        .nth(1)
        .and_then(|t| t.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no leader named: {}", said(&out)));
    assert!(text.contains("leads (term"), "{}", said(&out));
    let s = c.status(1).await;
    assert!(
        s["leader"].as_u64().is_some(),
        "a leader was named, yet node 1 knows none: {s}"
    );

    let to = (1..=3).find(|i| *i != leader).unwrap();
    let out = c.cli(&["member", "transfer-leader", &to.to_string()]);
    assert!(out.status.success(), "{}", said(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains(&format!("node {to} now leads")),
        "{}",
        said(&out)
    );
    assert_eq!(c.wait_leader(Duration::from_secs(10)).await, to);

    tracing::info!("to a frozen voter: not in time, said so, exit 5");
    let frozen = (1..=3).find(|i| *i != to).unwrap();
    c.pause(frozen);
    let out = c
        .cli_command(c.api_addr(to))
        .args([
            "--command-timeout-ms",
            "2000",
            "member",
            "transfer-leader",
            &frozen.to_string(),
        ])
        .output()
        .unwrap();
    c.resume(frozen);
    assert_eq!(out.status.code(), Some(5), "{}", said(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("did not lead within"),
        "{}",
        said(&out)
    );
}
