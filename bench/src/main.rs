//! cairn-bench: drives cairn and etcd with the same closed-loop workload.
//!
//! N clients, each sequential (send, wait, send), spread over the cluster's
//! endpoints, writing 256-byte values (by default) over a fixed key space
//! with a configurable read share. Reports throughput and latency
//! percentiles from HDR histograms, for humans and as one JSON line.
//!
//! `failover` measures leader kill → first committed write, over trials.

mod report;

use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use std::time::Instant;

use anyhow::bail;
use anyhow::Context;
use cairn_raft::NativeClient;
use cairn_state::Command;
use cairn_state::CommandError;
use cairn_state::Mission;
use cairn_state::ParamKind;
use cairn_state::ParamValue;
use clap::Parser;
use clap::Subcommand;
use clap::ValueEnum;
use hdrhistogram::Histogram;
use rand::Rng;
use rand::SeedableRng;
use serde::Serialize;

#[derive(Parser)]
#[command(name = "cairn-bench", about = "Closed-loop load generator for cairn and etcd")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Throughput and latency under N closed-loop clients.
    Load(LoadArgs),
    /// Leader kill → first committed write, repeated.
    Failover(FailoverArgs),
    /// Summarise a results file as markdown and plot latency vs clients.
    Report {
        /// JSON-lines results written by `load` and `failover`.
        #[arg(long)]
        results: PathBuf,
        /// Where the plot goes.
        #[arg(long)]
        out_dir: PathBuf,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
enum Target {
    /// cairn over its HTTP admin API.
    Cairn,
    /// cairn over its native client (the peer transport; writes only).
    #[value(name = "cairn-native")]
    #[serde(rename = "cairn-native")]
    CairnNative,
    /// etcd over its native gRPC API.
    Etcd,
}

#[derive(Parser, Clone)]
struct LoadArgs {
    /// System under test.
    #[arg(long, value_enum)]
    target: Target,
    /// Endpoints (cairn: admin API host:port; cairn-native: peer (raft)
    /// host:port; etcd: client URLs), comma-separated.
    #[arg(long, value_delimiter = ',', required = true)]
    endpoints: Vec<String>,
    /// Concurrent closed-loop clients.
    #[arg(long, default_value_t = 1)]
    clients: usize,
    /// How long to run, in seconds.
    #[arg(long, default_value_t = 10.0)]
    duration_s: f64,
    /// Stop after this many operations in total (whichever comes first).
    #[arg(long)]
    ops: Option<u64>,
    /// Number of distinct keys.
    #[arg(long, default_value_t = 1000)]
    keys: u64,
    /// Bytes per written value.
    #[arg(long, default_value_t = 256)]
    value_bytes: usize,
    /// Percent of operations that are (linearizable) reads.
    #[arg(long, default_value_t = 0)]
    read_percent: u8,
    /// A label copied into the JSON result.
    #[arg(long, default_value = "")]
    label: String,
    /// Seed of the key/op choice.
    #[arg(long, default_value_t = 1)]
    seed: u64,
}

#[derive(Parser)]
struct FailoverArgs {
    /// System under test.
    #[arg(long, value_enum)]
    target: Target,
    /// Endpoints, comma-separated, in node order (node i = endpoint i).
    #[arg(long, value_delimiter = ',', required = true)]
    endpoints: Vec<String>,
    /// File per node with its pid: `<pid-dir>/<i>.pid` (1-based).
    #[arg(long)]
    pid_dir: PathBuf,
    /// Command that restarts node `{}` (1-based) and writes its new pid file.
    #[arg(long)]
    restart_cmd: String,
    /// Trials.
    #[arg(long, default_value_t = 20)]
    trials: usize,
    /// A label copied into the JSON result.
    #[arg(long, default_value = "")]
    label: String,
    /// Restart the killed leader at once (a brown-out or watchdog reset:
    /// the node is back before anyone elected a successor) and time the
    /// next committed write through any node, the restarted one included.
    #[arg(long)]
    restart_at_once: bool,
}

/// One client's connection to the system under test.
enum Conn {
    Cairn { http: reqwest::Client, base: String },
    Native(Box<NativeClient<Mission>>),
    Etcd(Box<etcd_client::Client>),
}

fn key_name(target: Target, key: u64) -> String {
    match target {
        Target::Cairn | Target::CairnNative => format!("bench.k{key:06}"),
        Target::Etcd => format!("/bench/k{key:06}"),
    }
}

async fn connect(target: Target, endpoint: &str) -> anyhow::Result<Conn> {
    Ok(match target {
        Target::Cairn => Conn::Cairn {
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(10))
                .pool_max_idle_per_host(4)
                .build()?,
            base: if endpoint.starts_with("http") {
                endpoint.to_string()
            } else {
                format!("http://{endpoint}")
            },
        },
        // One connection per client, as for etcd; it finds the leader.
        Target::CairnNative => Conn::Native(Box::new(NativeClient::new(vec![endpoint.to_string()])?)),
        Target::Etcd => Conn::Etcd(Box::new(
            etcd_client::Client::connect([endpoint], None)
                .await
                .with_context(|| format!("connect etcd {endpoint}"))?,
        )),
    })
}

impl Conn {
    async fn write(&mut self, target: Target, key: u64, value: &str) -> anyhow::Result<()> {
        let name = key_name(target, key);
        match self {
            Conn::Cairn { http, base } => {
                let r = http
                    .put(format!("{base}/v1/params/{name}"))
                    .json(&serde_json::json!({ "value": { "String": value } }))
                    .send()
                    .await?;
                if !r.status().is_success() {
                    bail!("{}: {}", r.status(), r.text().await.unwrap_or_default());
                }
            }
            Conn::Native(c) => {
                let value = ParamValue::String(value.to_string());
                c.write(&Command::SetParam { name, value }).await?.response?;
            }
            Conn::Etcd(c) => {
                c.put(name, value, None).await?;
            }
        }
        Ok(())
    }

    async fn read(&mut self, target: Target, key: u64) -> anyhow::Result<()> {
        let name = key_name(target, key);
        match self {
            Conn::Cairn { http, base } => {
                let r = http.get(format!("{base}/v1/params/{name}")).send().await?;
                if !r.status().is_success() {
                    bail!("{}: {}", r.status(), r.text().await.unwrap_or_default());
                }
                r.bytes().await?;
            }
            Conn::Native(_) => bail!("cairn-native measures writes only; read through --target cairn"),
            Conn::Etcd(c) => {
                c.get(name, None).await?;
            }
        }
        Ok(())
    }

    /// Make every key exist (cairn parameters are declared before set).
    async fn setup(&mut self, target: Target, keys: u64, value_bytes: usize) -> anyhow::Result<()> {
        let value = "v".repeat(value_bytes);
        for key in 0..keys {
            match self {
                Conn::Cairn { http, base } => {
                    let r = http
                        .post(format!("{base}/v1/params"))
                        .json(&serde_json::json!({
                            "name": key_name(target, key),
                            "description": "benchmark register",
                            "kind": { "String": { "max_len": value_bytes.max(16) } },
                            "value": { "String": value },
                        }))
                        .send()
                        .await?;
                    // 409: declared by an earlier run; fine.
                    if !r.status().is_success() && r.status().as_u16() != 409 {
                        bail!("declare {key}: {}: {}", r.status(), r.text().await.unwrap_or_default());
                    }
                }
                Conn::Native(c) => {
                    let declare = Command::DeclareParam {
                        name: key_name(target, key),
                        description: "benchmark register".into(),
                        kind: ParamKind::String {
                            max_len: u32::try_from(value_bytes.max(16))?,
                        },
                        value: ParamValue::String(value.clone()),
                    };
                    match c.write(&declare).await?.response {
                        // Declared by an earlier run; fine.
                        Ok(_) | Err(CommandError::ParamAlreadyDeclared { .. }) => {}
                        Err(e) => bail!("declare {key}: {e}"),
                    }
                }
                Conn::Etcd(_) => self.write(target, key, &value).await?,
            }
        }
        Ok(())
    }
}

#[derive(Serialize)]
struct LoadResult {
    label: String,
    target: Target,
    clients: usize,
    read_percent: u8,
    value_bytes: usize,
    elapsed_s: f64,
    ops: u64,
    errors: u64,
    ops_per_s: f64,
    write_ops: u64,
    write_p50_ms: f64,
    write_p99_ms: f64,
    write_p999_ms: f64,
    read_ops: u64,
    read_p50_ms: f64,
    read_p99_ms: f64,
    read_p999_ms: f64,
}

fn new_hist() -> Histogram<u64> {
    // 1 µs .. 60 s, 3 significant digits.
    Histogram::new_with_bounds(1, 60_000_000, 3).expect("static histogram bounds are valid")
}

fn ms(h: &Histogram<u64>, q: f64) -> f64 {
    if h.is_empty() {
        0.0
    } else {
        h.value_at_quantile(q) as f64 / 1000.0
    }
}

async fn load(args: LoadArgs) -> anyhow::Result<()> {
    let target = args.target;
    let mut setup = connect(target, &args.endpoints[0]).await?;
    setup.setup(target, args.keys, args.value_bytes).await?;

    let stop = Arc::new(AtomicBool::new(false));
    let budget = Arc::new(std::sync::atomic::AtomicU64::new(args.ops.unwrap_or(u64::MAX)));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for client in 0..args.clients {
        let endpoint = args.endpoints[client % args.endpoints.len()].clone();
        let stop = stop.clone();
        let budget = budget.clone();
        let args = args.clone();
        tasks.push(tokio::spawn(async move {
            let mut conn = connect(target, &endpoint).await?;
            let mut rng = rand::rngs::StdRng::seed_from_u64(args.seed.wrapping_mul(1000).wrapping_add(client as u64));
            let (mut w, mut r, mut errors) = (new_hist(), new_hist(), 0u64);
            let mut seq = 0u64;
            while !stop.load(Ordering::Relaxed) {
                if budget
                    .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |b| b.checked_sub(1))
                    .is_err()
                {
                    break;
                }
                let key = rng.random_range(0..args.keys);
                let is_read = rng.random_range(0..100u8) < args.read_percent;
                let t0 = Instant::now();
                let res = if is_read {
                    conn.read(target, key).await
                } else {
                    seq += 1;
                    // Unique per write: client, sequence, padding to size.
                    let mut value = format!("c{client}-s{seq}-");
                    value.extend(std::iter::repeat_n('x', args.value_bytes.saturating_sub(value.len())));
                    conn.write(target, key, &value).await
                };
                let us = t0.elapsed().as_micros().max(1) as u64;
                match res {
                    Ok(()) if is_read => r.saturating_record(us),
                    Ok(()) => w.saturating_record(us),
                    Err(e) => {
                        errors += 1;
                        if errors <= 3 {
                            eprintln!("client {client}: {e:#}");
                        }
                    }
                }
            }
            anyhow::Ok((w, r, errors))
        }));
    }
    let deadline = Duration::from_secs_f64(args.duration_s);
    let watchdog = {
        let stop = stop.clone();
        tokio::spawn(async move {
            tokio::time::sleep(deadline).await;
            stop.store(true, Ordering::Relaxed);
        })
    };
    let (mut w, mut r, mut errors) = (new_hist(), new_hist(), 0);
    for t in tasks {
        let (tw, tr, te) = t.await??;
        w.add(&tw)?;
        r.add(&tr)?;
        errors += te;
    }
    watchdog.abort();
    let elapsed = started.elapsed().as_secs_f64();
    let ops = w.len() + r.len();
    let res = LoadResult {
        label: args.label,
        target,
        clients: args.clients,
        read_percent: args.read_percent,
        value_bytes: args.value_bytes,
        elapsed_s: elapsed,
        ops,
        errors,
        ops_per_s: ops as f64 / elapsed,
        write_ops: w.len(),
        write_p50_ms: ms(&w, 0.5),
        write_p99_ms: ms(&w, 0.99),
        write_p999_ms: ms(&w, 0.999),
        read_ops: r.len(),
        read_p50_ms: ms(&r, 0.5),
        read_p99_ms: ms(&r, 0.99),
        read_p999_ms: ms(&r, 0.999),
    };
    eprintln!(
        "{:<6} clients={:<3} reads={:>3}% ops/s={:>9.0} write p50/p99/p99.9={:.2}/{:.2}/{:.2} ms read p50/p99={:.2}/{:.2} ms errors={}",
        format!("{:?}", res.target).to_lowercase(),
        res.clients,
        res.read_percent,
        res.ops_per_s,
        res.write_p50_ms,
        res.write_p99_ms,
        res.write_p999_ms,
        res.read_p50_ms,
        res.read_p99_ms,
        res.errors
    );
    println!("{}", serde_json::to_string(&res)?);
    Ok(())
}

/// Which node (1-based) leads now.
async fn find_leader(target: Target, endpoints: &[String]) -> Option<usize> {
    for (i, ep) in endpoints.iter().enumerate() {
        match target {
            // `failover` refuses this target before asking.
            Target::CairnNative => return None,
            Target::Cairn => {
                let url = format!("http://{ep}/v1/status");
                let Ok(r) = reqwest::Client::new()
                    .get(url)
                    .timeout(Duration::from_millis(300))
                    .send()
                    .await
                else {
                    continue;
                };
                let Ok(v) = r.json::<serde_json::Value>().await else {
                    continue;
                };
                if v["role"] == "leader" {
                    return Some(i + 1);
                }
            }
            Target::Etcd => {
                let Ok(Ok(mut c)) = tokio::time::timeout(
                    Duration::from_millis(300),
                    etcd_client::Client::connect([ep.as_str()], None),
                )
                .await
                else {
                    continue;
                };
                if let Ok(Ok(s)) = tokio::time::timeout(Duration::from_millis(300), c.status()).await {
                    if s.leader() == s.header().map(|h| h.member_id()).unwrap_or(0) {
                        return Some(i + 1);
                    }
                }
            }
        }
    }
    None
}

#[derive(Serialize)]
struct FailoverResult {
    label: String,
    target: Target,
    trials: usize,
    p50_ms: f64,
    p99_ms: f64,
    max_ms: f64,
    samples_ms: Vec<f64>,
}

async fn failover(args: FailoverArgs) -> anyhow::Result<()> {
    let target = args.target;
    if target == Target::CairnNative {
        bail!("failover is measured through the admin API: use --target cairn");
    }
    let mut conns = Vec::new();
    for ep in &args.endpoints {
        conns.push(connect(target, ep).await?);
    }
    conns[0].setup(target, 1, 16).await?;
    let mut samples = Vec::new();
    for trial in 0..args.trials {
        let leader = loop {
            if let Some(l) = find_leader(target, &args.endpoints).await {
                break l;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        // Make sure the cluster is healthy: a write commits first.
        conns[leader - 1].write(target, 0, "warm").await?;
        let pid_file = args.pid_dir.join(format!("{leader}.pid"));
        let pid: i32 = std::fs::read_to_string(&pid_file)
            .with_context(|| format!("read {}", pid_file.display()))?
            .trim()
            .parse()?;
        let killed = Instant::now();
        std::process::Command::new("kill")
            .args(["-9", &pid.to_string()])
            .status()?;
        let restart = || -> anyhow::Result<()> {
            let cmd = args.restart_cmd.replace("{}", &leader.to_string());
            let status = std::process::Command::new("bash").args(["-c", &cmd]).status()?;
            if !status.success() {
                bail!("restart command failed: {cmd}");
            }
            Ok(())
        };
        if args.restart_at_once {
            restart()?;
            conns[leader - 1] = connect(target, &args.endpoints[leader - 1]).await?;
        }
        // Light load on the survivors (and the restarted node, if it is
        // back) until a write commits again.
        let survivors: Vec<usize> = (1..=args.endpoints.len())
            .filter(|i| args.restart_at_once || *i != leader)
            .collect();
        let mut k = 0usize;
        let took = loop {
            let i = survivors[k % survivors.len()];
            k += 1;
            let attempt =
                tokio::time::timeout(Duration::from_millis(250), conns[i - 1].write(target, 0, "after")).await;
            if let Ok(Ok(())) = attempt {
                break killed.elapsed();
            }
            if killed.elapsed() > Duration::from_secs(30) {
                bail!("no write committed within 30 s of killing node {leader}");
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        };
        let took_ms = took.as_secs_f64() * 1000.0;
        eprintln!(
            "trial {trial}: killed node {leader}{}, write committed again after {took_ms:.0} ms",
            if args.restart_at_once {
                " and restarted it at once"
            } else {
                ""
            }
        );
        samples.push(took_ms);
        if !args.restart_at_once {
            restart()?;
            conns[leader - 1] = connect(target, &args.endpoints[leader - 1]).await?;
        }
        // Let the restarted node catch up before the next trial.
        tokio::time::sleep(Duration::from_millis(1500)).await;
    }
    let mut sorted = samples.clone();
    sorted.sort_by(f64::total_cmp);
    let q = |p: f64| sorted[((sorted.len() as f64 - 1.0) * p).round() as usize];
    let res = FailoverResult {
        label: args.label,
        target,
        trials: samples.len(),
        p50_ms: q(0.5),
        p99_ms: q(0.99),
        max_ms: q(1.0),
        samples_ms: samples,
    };
    eprintln!(
        "{:?} failover over {} trials: p50 {:.0} ms, p99 {:.0} ms, max {:.0} ms",
        res.target, res.trials, res.p50_ms, res.p99_ms, res.max_ms
    );
    println!("{}", serde_json::to_string(&res)?);
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    match Cli::parse().cmd {
        Cmd::Load(a) => load(a).await,
        Cmd::Failover(a) => failover(a).await,
        Cmd::Report { results, out_dir } => report::report(&results, &out_dir),
    }
}
