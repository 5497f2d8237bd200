//! Starts real `cairn` processes with temp data dirs and free ports.

use std::collections::BTreeMap;
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::Child;
use std::process::Command;
use std::process::Output;
use std::process::Stdio;
use std::time::Duration;

use serde_json::Value;
use tempfile::TempDir;

pub struct Proc {
    extra_args: Vec<String>,
    raft_addr: String,
    api_addr: String,
    data_dir: PathBuf,
    log: PathBuf,
    child: Option<Child>,
}

pub struct ProcCluster {
    dir: TempDir,
    procs: BTreeMap<u64, Proc>,
    http: reqwest::Client,
    opts: Options,
}

/// How the nodes run: plaintext and open (the default), or with a token,
/// mutual TLS between nodes and HTTPS on the API.
#[derive(Clone, Default)]
pub struct Options {
    /// Bearer token the nodes require on writes.
    pub token: Option<String>,
    /// Token on reads too.
    pub read_requires_token: bool,
    /// mTLS between nodes and HTTPS on the API, with certs made by the CLI.
    pub tls: bool,
    /// More `cairn node run` flags for every node (e.g. `--sim ADDR`).
    pub extra_args: Vec<String>,
}

/// The binary under test: this build's, or `CAIRN_TEST_BIN` (to run the
/// tests against another build, e.g. to see a new test fail on the old one).
pub fn cairn_bin() -> &'static str {
    static BIN: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    BIN.get_or_init(|| std::env::var("CAIRN_TEST_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_cairn").to_string()))
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
        .with_test_writer()
        .try_init();
}

impl Proc {
    fn spawn(&mut self, id: u64) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        let child = Command::new(cairn_bin())
            .args(["node", "run", "--id", &id.to_string()])
            .args(["--raft-addr", &self.raft_addr, "--api-addr", &self.api_addr])
            .arg("--data-dir")
            .arg(&self.data_dir)
            .args(&self.extra_args)
            .env("RUST_LOG", "info,openraft=warn,cairn_raft::consensus::node=debug")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn cairn");
        self.child = Some(child);
    }
}

impl ProcCluster {
    pub async fn start(n: u64) -> Self {
        Self::start_with(n, Options::default()).await
    }

    pub async fn start_with(n: u64, opts: Options) -> Self {
        let c = Self::start_uninit_with(n, opts).await;
        let members: BTreeMap<String, Value> = c
            .procs
            .iter()
            .map(|(id, p)| {
                (
                    id.to_string(),
                    serde_json::json!({"raft_addr": p.raft_addr, "api_addr": p.api_addr}),
                )
            })
            .collect();
        c.post(1, "/v1/cluster/init", &serde_json::json!({ "members": members }))
            .await
            .expect("cluster init");
        c
    }

    /// `n` healthy processes that are part of no cluster yet (no `cluster init`).
    pub async fn start_uninit(n: u64) -> Self {
        Self::start_uninit_with(n, Options::default()).await
    }

    async fn start_uninit_with(n: u64, opts: Options) -> Self {
        init_tracing();
        let dir = TempDir::new().unwrap();
        let certs = dir.path().join("certs");
        // No idle pooling: a connection the server closed (after a 413, say)
        // must not be reused by the next request.
        let mut http = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .pool_max_idle_per_host(0);
        if opts.tls {
            let out = Command::new(cairn_bin())
                .args(["certs", "init", "--dir"])
                .arg(&certs)
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "certs init: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            for id in 1..=n {
                let out = Command::new(cairn_bin())
                    .args(["certs", "issue", &id.to_string(), "--dir"])
                    .arg(&certs)
                    .output()
                    .unwrap();
                assert!(
                    out.status.success(),
                    "certs issue: {}",
                    String::from_utf8_lossy(&out.stderr)
                );
            }
            let ca = std::fs::read(certs.join("ca.pem")).unwrap();
            http = http
                .add_root_certificate(reqwest::Certificate::from_pem(&ca).unwrap())
                .tls_built_in_root_certs(false);
        }
        let mut extra_args = Vec::new();
        if opts.tls {
            extra_args.extend(["--tls-dir".to_string(), certs.display().to_string(), "--api-tls".into()]);
        }
        if let Some(t) = &opts.token {
            extra_args.extend(["--api-token".to_string(), t.clone()]);
        }
        if opts.read_requires_token {
            extra_args.push("--read-requires-token".into());
        }
        extra_args.extend(opts.extra_args.iter().cloned());
        let mut procs = BTreeMap::new();
        for id in 1..=n {
            let mut p = Proc {
                extra_args: extra_args.clone(),
                raft_addr: format!("127.0.0.1:{}", free_port()),
                api_addr: format!("127.0.0.1:{}", free_port()),
                data_dir: dir.path().join(format!("n{id}")),
                log: dir.path().join(format!("n{id}.log")),
                child: None,
            };
            p.spawn(id);
            procs.insert(id, p);
        }
        let c = Self {
            dir,
            procs,
            http: http.build().unwrap(),
            opts,
        };
        for id in 1..=n {
            c.wait_healthy(id).await;
        }
        c
    }

    pub fn url(&self, id: u64, path: &str) -> String {
        let scheme = if self.opts.tls { "https" } else { "http" };
        format!("{scheme}://{}{}", self.procs[&id].api_addr, path)
    }

    pub fn dir(&self) -> &std::path::Path {
        self.dir.path()
    }

    pub fn http(&self) -> &reqwest::Client {
        &self.http
    }

    fn authed(&self, req: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        match &self.opts.token {
            Some(t) => req.bearer_auth(t),
            None => req,
        }
    }

    /// Any request, with the cluster's token; returns status, headers, body.
    pub async fn send(
        &self,
        id: u64,
        method: reqwest::Method,
        path: &str,
        body: Option<&str>,
        headers: &[(&str, &str)],
    ) -> (u16, reqwest::header::HeaderMap, String) {
        // A server may answer 413 and close while an oversized body is still
        // being written; the client then sometimes sees the reset instead of
        // the answer. Retry that case a few times (bounded).
        let mut last = None;
        for _ in 0..5 {
            let mut req = self.authed(self.http.request(method.clone(), self.url(id, path)));
            if let Some(b) = body {
                req = req.header("content-type", "application/json").body(b.to_string());
            }
            for (k, v) in headers {
                req = req.header(*k, *v);
            }
            match req.send().await {
                Ok(r) => {
                    let status = r.status().as_u16();
                    let headers = r.headers().clone();
                    return (status, headers, r.text().await.unwrap_or_default());
                }
                Err(e) if body.is_some_and(|b| b.len() > (1 << 20)) => last = Some(e),
                Err(e) => panic!("{path}: {e}"),
            }
        }
        panic!("{path}: oversized body never got an answer: {last:?}")
    }

    pub fn member_arg(&self, id: u64) -> String {
        let p = &self.procs[&id];
        format!("{id}={},{}", p.raft_addr, p.api_addr)
    }

    async fn wait_healthy(&self, id: u64) {
        for _ in 0..200 {
            if let Ok(r) = self.http.get(self.url(id, "/healthz")).send().await {
                if r.status().is_success() {
                    return;
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("node {id} never became healthy; log:\n{}", self.log(id));
    }

    pub fn log(&self, id: u64) -> String {
        std::fs::read_to_string(&self.procs[&id].log).unwrap_or_default()
    }

    pub async fn post(&self, id: u64, path: &str, body: &Value) -> Result<Value, String> {
        let r = self
            .authed(self.http.post(self.url(id, path)))
            .json(body)
            .send()
            .await
            .map_err(|e| e.to_string())?;
        let status = r.status();
        let text = r.text().await.map_err(|e| e.to_string())?;
        if !status.is_success() {
            return Err(format!("{status}: {text}"));
        }
        Ok(serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    pub async fn get(&self, id: u64, path: &str) -> Result<Value, String> {
        let r = self
            .authed(self.http.get(self.url(id, path)))
            .send()
            .await
            .map_err(|e| e.to_string())?;
        let status = r.status();
        let text = r.text().await.map_err(|e| e.to_string())?;
        if !status.is_success() {
            return Err(format!("{status}: {text}"));
        }
        serde_json::from_str(&text).map_err(|e| e.to_string())
    }

    pub async fn status(&self, id: u64) -> Value {
        self.get(id, "/v1/status").await.unwrap_or(Value::Null)
    }

    /// The leader that every live node agrees on.
    pub async fn wait_leader(&self, timeout: Duration) -> u64 {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let mut seen = Vec::new();
            for (id, p) in &self.procs {
                if p.child.is_some() {
                    let s = self.status(*id).await;
                    seen.push((*id, s["leader"].as_u64(), s["role"].as_str().map(str::to_string)));
                }
            }
            let leaders: Vec<u64> = seen
                .iter()
                .filter(|(_, _, r)| r.as_deref() == Some("leader"))
                .map(|(id, _, _)| *id)
                .collect();
            if let [l] = leaders[..] {
                if seen.iter().all(|(_, known, _)| *known == Some(l)) {
                    return l;
                }
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "no agreed leader within {timeout:?}; saw {seen:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub async fn wait_applied(&self, id: u64, index: u64, timeout: Duration) {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let s = self.status(id).await;
            if s["applied_index"].as_u64().unwrap_or(0) >= index {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "node {id} did not apply {index} within {timeout:?}: {s}\nlog:\n{}",
                self.log(id)
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// `kill -9`.
    pub fn kill(&mut self, id: u64) {
        if let Some(mut child) = self.procs.get_mut(&id).and_then(|p| p.child.take()) {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Stop gracefully with SIGTERM (as systemd does) and wait for the
    /// exit, bounded: `kill -9` after 20 s. Returns the exit status, or
    /// `None` if it had to be killed (or was not running).
    pub async fn stop(&mut self, id: u64) -> Option<std::process::ExitStatus> {
        let mut child = self.procs.get_mut(&id).and_then(|p| p.child.take())?;
        let _ = Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
        for _ in 0..200 {
            if let Ok(Some(status)) = child.try_wait() {
                return Some(status);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let _ = child.kill();
        let _ = child.wait();
        None
    }

    /// The process id of node `id` (running).
    pub fn pid(&self, id: u64) -> u32 {
        self.procs[&id].child.as_ref().expect("running").id()
    }

    /// `SIGSTOP` (`resume` = `SIGCONT`): a frozen process, not a dead one.
    pub fn pause(&self, id: u64) {
        self.signal(id, "-STOP");
    }

    pub fn resume(&self, id: u64) {
        self.signal(id, "-CONT");
    }

    fn signal(&self, id: u64, sig: &str) {
        let pid = self.procs[&id].child.as_ref().expect("running").id();
        let ok = Command::new("kill").arg(sig).arg(pid.to_string()).status().unwrap();
        assert!(ok.success(), "kill {sig} {pid}");
    }

    pub async fn restart(&mut self, id: u64) {
        self.procs.get_mut(&id).unwrap().spawn(id);
        self.wait_healthy(id).await;
    }

    /// The CLI with this cluster's token and CA (if any) in the environment.
    pub fn cli_command(&self, endpoints: &str) -> Command {
        let mut cmd = Command::new(cairn_bin());
        cmd.arg("--endpoints").arg(endpoints).env("RUST_LOG", "error");
        cmd.env_remove("CAIRN_TOKEN")
            .env_remove("CAIRN_ENDPOINTS")
            .env_remove("CAIRN_CA_CERT");
        // Never pick up a developer's own client config.
        cmd.env("HOME", self.dir.path()).env_remove("XDG_CONFIG_HOME");
        if let Some(t) = &self.opts.token {
            cmd.env("CAIRN_TOKEN", t);
        }
        if self.opts.tls {
            cmd.env("CAIRN_CA_CERT", self.dir.path().join("certs").join("ca.pem"));
        }
        cmd
    }

    pub fn cli_with_endpoints(&self, first: &str, args: &[&str]) -> Output {
        let mut eps = vec![first.to_string()];
        eps.extend(self.procs.values().map(|p| p.api_addr.clone()));
        self.cli_command(&eps.join(","))
            .args(args)
            .output()
            .expect("run cairn cli")
    }

    pub fn cli(&self, args: &[&str]) -> Output {
        let first = self.procs[&1].api_addr.clone();
        self.cli_command(&first).args(args).output().expect("run cairn cli")
    }

    /// The CLI against node `id`, with extra environment (e.g. no token).
    pub fn cli_at(&self, id: u64, env: &[(&str, &str)], args: &[&str]) -> Output {
        let mut cmd = self.cli_command(&self.procs[&id].api_addr);
        for (k, v) in env {
            cmd.env(k, v);
        }
        cmd.args(args).output().expect("run cairn cli")
    }

    pub fn raft_addr(&self, id: u64) -> &str {
        &self.procs[&id].raft_addr
    }

    pub fn api_addr(&self, id: u64) -> &str {
        &self.procs[&id].api_addr
    }

    /// Start one more process (not a member) with its own args.
    pub async fn spawn_extra(&mut self, id: u64, extra_args: Vec<String>) {
        self.add_stopped(id, extra_args);
        if let Some(p) = self.procs.get_mut(&id) {
            p.spawn(id);
        }
    }

    /// Register one more process with free ports and its own data dir,
    /// without starting it (prepare its data dir, then `restart` it).
    pub fn add_stopped(&mut self, id: u64, extra_args: Vec<String>) {
        let p = Proc {
            extra_args,
            raft_addr: format!("127.0.0.1:{}", free_port()),
            api_addr: format!("127.0.0.1:{}", free_port()),
            data_dir: self.dir.path().join(format!("n{id}")),
            log: self.dir.path().join(format!("n{id}.log")),
            child: None,
        };
        self.procs.insert(id, p);
    }

    /// Replace node `id`'s extra `cairn node run` flags (e.g. `--config`)
    /// for its next start.
    pub fn set_extra_args(&mut self, id: u64, extra_args: Vec<String>) {
        if let Some(p) = self.procs.get_mut(&id) {
            p.extra_args = extra_args;
        }
    }

    /// Node `id`'s data dir.
    pub fn data_dir(&self, id: u64) -> &std::path::Path {
        &self.procs[&id].data_dir
    }
}

impl Drop for ProcCluster {
    fn drop(&mut self) {
        let ids: Vec<u64> = self.procs.keys().copied().collect();
        for id in ids {
            self.kill(id);
        }
        let _ = &self.dir;
    }
}
