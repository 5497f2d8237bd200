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
        let child = Command::new(env!("CARGO_BIN_EXE_cairn"))
            .args(["node", "run", "--id", &id.to_string()])
            .args(["--raft-addr", &self.raft_addr, "--api-addr", &self.api_addr])
            .arg("--data-dir")
            .arg(&self.data_dir)
            .env("RUST_LOG", "info,openraft=warn")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn cairn");
        self.child = Some(child);
    }
}

impl ProcCluster {
    pub async fn start(n: u64) -> Self {
        init_tracing();
        let dir = TempDir::new().unwrap();
        let mut procs = BTreeMap::new();
        for id in 1..=n {
            let mut p = Proc {
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
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(10))
                .build()
                .unwrap(),
        };
        for id in 1..=n {
            c.wait_healthy(id).await;
        }
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

    fn url(&self, id: u64, path: &str) -> String {
        format!("http://{}{}", self.procs[&id].api_addr, path)
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
            .http
            .post(self.url(id, path))
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

    pub async fn raw_post(&self, id: u64, path: &str, body: &str) -> (u16, String) {
        let r = self
            .http
            .post(self.url(id, path))
            .header("content-type", "application/json")
            .body(body.to_string())
            .send()
            .await
            .unwrap();
        (r.status().as_u16(), r.text().await.unwrap_or_default())
    }

    pub async fn get(&self, id: u64, path: &str) -> Result<Value, String> {
        let r = self
            .http
            .get(self.url(id, path))
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

    pub async fn restart(&mut self, id: u64) {
        self.procs.get_mut(&id).unwrap().spawn(id);
        self.wait_healthy(id).await;
    }

    pub fn cli_with_endpoints(&self, first: &str, args: &[&str]) -> Output {
        let mut eps = vec![first.to_string()];
        eps.extend(self.procs.values().map(|p| p.api_addr.clone()));
        Command::new(env!("CARGO_BIN_EXE_cairn"))
            .arg("--endpoints")
            .arg(eps.join(","))
            .args(args)
            .env("RUST_LOG", "error")
            .output()
            .expect("run cairn cli")
    }

    pub fn cli(&self, args: &[&str]) -> Output {
        let first = self.procs[&1].api_addr.clone();
        Command::new(env!("CARGO_BIN_EXE_cairn"))
            .arg("--endpoints")
            .arg(first)
            .args(args)
            .env("RUST_LOG", "error")
            .output()
            .expect("run cairn cli")
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
