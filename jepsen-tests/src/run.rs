//! One run, Jepsen's schedule: start a fresh cluster, declare the
//! registers, run the load with faults for the run's duration, heal
//! everything, wait for a leader, take final reads, let replicas converge,
//! then check the history and write it all to a results directory.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;
use serde::Serialize;
use serde_json::Value;
use tokio::sync::watch;
use tokio::time::Instant;

use crate::checker::CheckInput;
use crate::checker::CheckReport;
use crate::cluster::Cluster;
use crate::cluster::ClusterSpec;
use crate::cluster::Launcher;
use crate::error::Error;
use crate::history::write_jsonl;
use crate::history::NemesisEvent;
use crate::history::Op;
use crate::history::OpKind;
use crate::history::Outcome;
use crate::history::Recorder;
use crate::history::StatusSample;
use crate::nemesis::schedule;
use crate::nemesis::Nemesis;
use crate::nemesis::NemesisKind;
use crate::nemesis::Step;
use crate::workload;
use crate::workload::WorkloadSpec;

/// How often the sampler asks every node for its status: often enough to
/// see most leaders of short terms (an election takes ~1 s), rarely enough
/// to stay out of the load's way.
const SAMPLE_EVERY: Duration = Duration::from_millis(250);
/// Task operations per second per node: a few tasks in flight per node
/// (one runs ~3 s), far below what the coordinator schedules.
const TASK_OPS_PER_SEC: f64 = 2.0;
/// How long the healed cluster gets to finish every task: a task whose
/// holder died waits `down_after_ms` (3 s) to be released, retries back off
/// ≤ 1 s, and one run takes ~3 s; a few rounds of that on a loaded machine.
const DRAIN_WITHIN: Duration = Duration::from_secs(30);
/// Size of each node's tmpfs under the `disk` nemesis: room for RocksDB's
/// WAL (capped at 64 MiB), memtables and SSTs of a run, yet only RAM when
/// the filler takes it all.
const DISK_MIB: u64 = 128;
/// How long replicas get to apply the same index once healed: catching up
/// a few thousand entries on loopback takes well under a second.
const CONVERGE_WITHIN: Duration = Duration::from_secs(15);

/// Everything a run needs.
#[derive(Clone, Debug)]
pub struct RunConfig {
    /// Drives the fault schedule, the fault targets and the load.
    pub seed: u64,
    /// Cluster size.
    pub nodes: u64,
    /// How long the load (and the faults) last.
    pub duration: Duration,
    /// No faults for this long at the start.
    pub warmup: Duration,
    /// Enabled fault families.
    pub nemeses: Vec<NemesisKind>,
    /// The load.
    pub workload: WorkloadSpec,
    /// How nodes are started.
    pub launcher: Launcher,
    /// Parent of this run's results directory.
    pub results_dir: PathBuf,
    /// Below this many successful client operations per second over the
    /// load's duration, the run proves too little: inconclusive.
    pub min_ok_ops_per_sec: f64,
    /// Linearizability search budget per register: steps.
    pub checker_max_steps: u64,
    /// Linearizability search budget per register: seconds.
    pub checker_secs: f64,
    /// How long the healed cluster gets to agree on a leader.
    pub recovery_timeout: Duration,
    /// `RUST_LOG` of the nodes.
    pub log_filter: String,
    /// The nodes' write timeout (their 504 deadline).
    pub write_timeout_ms: u64,
    /// Copy node logs into the results even when the run passes.
    pub keep_logs: bool,
    /// How peer traffic is carried and cut (`--net`).
    pub net: crate::cluster::NetMode,
    /// Clients in all, spread over the nodes round-robin, instead of
    /// `workload.clients_per_node` each (the power runs: 8 writers).
    pub clients_total: Option<usize>,
    /// Disk speeds on the fault filesystems (power nemeses only).
    pub disks: DiskSpeeds,
}

/// Which node's disk is slow.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SlowDisk {
    /// Whichever node leads, followed as leadership moves (polled every
    /// 100 ms): the issue-25 setup, commits resting on the followers' disks.
    Leader,
    /// One fixed node.
    Node(u64),
    /// None: every disk at the base speed.
    None,
}

/// Fsync delays of the nodes' fault filesystems.
#[derive(Clone, Debug)]
pub struct DiskSpeeds {
    /// Every disk's delay (`0..1ms`, `sd-card`, …; see
    /// [`crate::faultfs::DelaySpec`]).
    pub base: String,
    /// The slow disk's delay.
    pub slow: String,
    /// Which disk is slow.
    pub slow_disk: SlowDisk,
}

impl Default for DiskSpeeds {
    fn default() -> Self {
        Self {
            base: "0..1ms".into(),
            slow: "15..60ms".into(),
            slow_disk: SlowDisk::Leader,
        }
    }
}

impl RunConfig {
    /// A run with the suite's default load and budgets.
    pub fn new(seed: u64, nodes: u64, duration: Duration, nemeses: Vec<NemesisKind>, launcher: Launcher) -> Self {
        Self {
            seed,
            nodes,
            duration,
            warmup: Duration::from_secs(2),
            nemeses,
            workload: WorkloadSpec {
                keys: 3,
                clients_per_node: 2,
                rate_per_client: 10.0,
                request_timeout: Duration::from_secs(4),
                max_ops_per_client: 100_000,
                read_fraction: 0.5,
                lenient_503: std::env::var_os("CAIRN_JEPSEN_LENIENT_503").is_some(),
                insert_fraction: 0.0,
                large_fraction: 0.0,
                refused_fraction: 0.0,
            },
            launcher,
            results_dir: crate::cluster::workspace_root().join("target").join("jepsen"),
            min_ok_ops_per_sec: 2.0,
            checker_max_steps: 20_000_000,
            checker_secs: 30.0,
            recovery_timeout: Duration::from_secs(30),
            log_filter: "info,openraft=warn".into(),
            write_timeout_ms: 3000,
            keep_logs: false,
            net: crate::cluster::NetMode::Proxy,
            clients_total: None,
            disks: DiskSpeeds::default(),
        }
        .with_power_defaults()
        .with_freeze_defaults()
    }

    /// Runs with the `freeze` nemesis get the log-hygiene load (issue 17):
    /// twice the clients (4 per node, a burst at twice the usual rate), a
    /// tenth of the writes plans just under the entry limit and a tenth
    /// tasks the state machine refuses, so the frozen follower falls behind
    /// by tens of megabytes of large entries and then has to catch up.
    fn with_freeze_defaults(mut self) -> Self {
        if self.nemeses.contains(&NemesisKind::Freeze) {
            self.clients_total = Some(self.nodes as usize * 4);
            self.workload.large_fraction = 0.1;
            self.workload.refused_fraction = 0.1;
        }
        self
    }

    /// Power runs get the issue-25 load: 8 writers over all nodes, 20 ops/s
    /// each, a quarter reads, and 30 % of writes as inserts (every
    /// acknowledged one must survive). Other runs keep their load as it was.
    fn with_power_defaults(mut self) -> Self {
        if self.nemeses.iter().any(|k| k.needs_faultfs()) {
            self.clients_total = Some(8);
            self.workload.rate_per_client = 20.0;
            self.workload.read_fraction = 0.25;
            self.workload.insert_fraction = 0.3;
        }
        self
    }

    /// The command that replays this run.
    pub fn reproduce(&self) -> String {
        let kinds: Vec<&str> = self.nemeses.iter().map(|k| k.name()).collect();
        format!(
            "cargo run --bin cairn-jepsen -- run --seed {} --nodes {} --duration {}s --nemesis {}",
            self.seed,
            self.nodes,
            self.duration.as_secs(),
            if kinds.is_empty() {
                "none".to_string()
            } else {
                kinds.join(",")
            }
        ) + if self.workload.lenient_503 {
            " --lenient-503"
        } else {
            ""
        } + &if self.workload.large_fraction > 0.0 || self.workload.refused_fraction > 0.0 {
            format!(
                " --large-fraction {} --refused-fraction {}",
                self.workload.large_fraction, self.workload.refused_fraction
            )
        } else {
            String::new()
        } + if self.net == crate::cluster::NetMode::Netns {
            " --net netns"
        } else {
            ""
        } + &if self.nemeses.iter().any(|k| k.needs_faultfs()) {
            format!(
                " --disk {} --slow-disk-delay {} --slow-disk {}",
                self.disks.base,
                self.disks.slow,
                match self.disks.slow_disk {
                    SlowDisk::Leader => "leader".to_string(),
                    SlowDisk::None => "none".to_string(),
                    SlowDisk::Node(n) => n.to_string(),
                }
            )
        } else {
            String::new()
        }
    }
}

/// How a run ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    /// No anomaly, enough load, every checker concluded.
    Pass,
    /// An anomaly (or the cluster did not recover).
    Fail,
    /// Too little load, or a checker ran out of budget.
    Inconclusive,
}

/// Operation counts.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct OpCounts {
    /// Client operations (final reads excluded).
    pub total: usize,
    /// Of which ok.
    pub ok: usize,
    /// Of which failed.
    pub fail: usize,
    /// Of which indeterminate.
    pub info: usize,
    /// Successful reads.
    pub reads_ok: usize,
    /// Successful writes.
    pub writes_ok: usize,
    /// Indeterminate writes.
    pub writes_info: usize,
    /// Final reads that succeeded.
    pub final_reads_ok: usize,
}

/// What a run did and found.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RunReport {
    /// The seed.
    pub seed: u64,
    /// Cluster size.
    pub nodes: u64,
    /// Load duration in seconds.
    pub duration_s: f64,
    /// Enabled fault families.
    pub nemeses: Vec<NemesisKind>,
    /// The planned faults.
    pub schedule: Vec<Step>,
    /// What the nemesis actually did.
    pub events: Vec<NemesisEvent>,
    /// Operation counts.
    pub ops: OpCounts,
    /// Successful operations per second over the whole load.
    pub ok_ops_per_sec: f64,
    /// ... while a fault was active.
    pub ok_ops_per_sec_faulted: f64,
    /// ... while none was.
    pub ok_ops_per_sec_calm: f64,
    /// How the network was set up (`--net`), and why netns mode was
    /// skipped if it was.
    #[serde(default)]
    pub net: String,
    /// The leader agreed on after healing, if any.
    pub leader_after_heal: Option<u64>,
    /// Inserts (acknowledged / in all) and what their check found, if the
    /// load had any.
    #[serde(default)]
    pub inserts: String,
    /// What the task load did (empty without the embedded launcher).
    #[serde(default)]
    pub tasks: String,
    /// The log-hygiene writes (large and refused) and what they got, if
    /// the load had any.
    #[serde(default)]
    pub hygiene: String,
    /// The votes the nodes logged (stored, read back at start) and whether
    /// any went back ([`crate::checker::votes`]).
    #[serde(default)]
    pub votes: String,
    /// What the disk nemeses did: slow-follower faults under which
    /// leadership moved (empty without a disk nemesis).
    #[serde(default)]
    pub disks: String,
    /// Each node's state hash once all applied the same index (empty if
    /// they never did).
    #[serde(default)]
    pub state_hashes: BTreeMap<u64, crate::checker::StateHash>,
    /// The checkers' findings.
    pub checks: CheckReport,
    /// The verdict.
    pub verdict: Verdict,
    /// Why it is not a pass.
    pub reasons: Vec<String>,
    /// Where the history and logs are.
    pub results: PathBuf,
    /// How to replay it.
    pub reproduce: String,
}

impl RunReport {
    /// A human summary: a few lines, then every anomaly in full.
    pub fn summary(&self) -> String {
        let o = &self.ops;
        let mut s = format!(
            "seed {} · {} nodes · {:.0}s · nemesis {} · {} faults\n  ops: {} (ok {}, fail {}, info {}; reads ok {}, writes ok {}, writes info {}), final reads ok {}\n  throughput (ok/s): overall {:.1}, during faults {:.1}, calm {:.1}\n  linearizability: {}\n  verdict: {:?}",
            self.seed,
            self.nodes,
            self.duration_s,
            self.nemeses.iter().map(|k| k.name()).collect::<Vec<_>>().join(","),
            self.events.iter().filter(|e| e.phase == "start").count(),
            o.total,
            o.ok,
            o.fail,
            o.info,
            o.reads_ok,
            o.writes_ok,
            o.writes_info,
            o.final_reads_ok,
            self.ok_ops_per_sec,
            self.ok_ops_per_sec_faulted,
            self.ok_ops_per_sec_calm,
            self.checks
                .keys
                .iter()
                .map(|(k, v)| format!("{k}: {} ({} ops)", v.verdict, v.ops_checked))
                .collect::<Vec<_>>()
                .join(", "),
            self.verdict,
        );
        if !self.net.is_empty() {
            s.push_str(&format!("\n  net: {}", self.net));
        }
        if !self.tasks.is_empty() {
            s.push_str(&format!("\n  tasks: {}", self.tasks));
        }
        if !self.inserts.is_empty() {
            s.push_str(&format!("\n  inserts: {}", self.inserts));
        }
        if !self.hygiene.is_empty() {
            s.push_str(&format!("\n  log hygiene: {}", self.hygiene));
        }
        if !self.votes.is_empty() {
            s.push_str(&format!("\n  votes: {}", self.votes));
        }
        if !self.disks.is_empty() {
            s.push_str(&format!("\n  disks: {}", self.disks));
        }
        s.push_str(&format!("\n  state hashes: {}", hash_summary(&self.state_hashes)));
        for r in &self.reasons {
            s.push_str(&format!("\n  - {r}"));
        }
        if !self.checks.terms_with_several_leaders.is_empty() {
            s.push_str(&format!(
                "\n  note: terms with several leaders (legal with openraft's leader_id_adv): {:?}",
                self.checks.terms_with_several_leaders
            ));
        }
        for a in &self.checks.anomalies {
            s.push_str(&format!("\n  ANOMALY {:?}: {}", a.kind, a.message));
        }
        s.push_str(&format!(
            "\n  results: {}\n  reproduce: {}",
            self.results.display(),
            self.reproduce
        ));
        s
    }
}

/// One line on the final state hashes: `equal on 3 nodes at index 812
/// (sha256 3f2a…)`, or which nodes hold which.
fn hash_summary(hashes: &BTreeMap<u64, crate::checker::StateHash>) -> String {
    let distinct: std::collections::BTreeSet<(u64, &str)> =
        hashes.values().map(|h| (h.applied_index, h.sha256.as_str())).collect();
    match distinct.iter().next() {
        None => "not taken (replicas never reached one applied index)".into(),
        Some((index, sha)) if distinct.len() == 1 => format!(
            "equal on {} nodes at index {index} (sha256 {}…)",
            hashes.len(),
            sha.get(..12).unwrap_or(sha)
        ),
        _ => format!(
            "DIFFER: {}",
            hashes
                .iter()
                .map(|(n, h)| format!("n{n}@{}={}", h.applied_index, h.sha256.get(..12).unwrap_or(&h.sha256)))
                .collect::<Vec<_>>()
                .join(" ")
        ),
    }
}

async fn sampler(
    nodes: Vec<(u64, String)>,
    incarnations: crate::cluster::Incarnations,
    generations: crate::cluster::Incarnations,
    rec: Recorder,
    mut stop: watch::Receiver<bool>,
) {
    let http = match reqwest::Client::builder().pool_max_idle_per_host(0).build() {
        Ok(h) => h,
        Err(_) => return,
    };
    loop {
        for (id, api) in &nodes {
            let r = http
                .get(format!("http://{api}/v1/status"))
                .timeout(Duration::from_millis(500))
                .send()
                .await;
            let Ok(r) = r else { continue };
            let Ok(v) = r.json::<Value>().await else { continue };
            let current = |m: &crate::cluster::Incarnations| {
                m.lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .get(id)
                    .copied()
                    .unwrap_or(0)
            };
            let (incarnation, data_generation) = (current(&incarnations), current(&generations));
            rec.sample(StatusSample {
                t_ns: rec.now_ns(),
                node: *id,
                incarnation,
                data_generation,
                role: v["role"].as_str().unwrap_or("?").to_string(),
                term: v["term"].as_u64().unwrap_or(0),
                leader: v["leader"].as_u64(),
                committed_index: v["committed_index"].as_u64(),
                applied_index: v["applied_index"].as_u64(),
            });
        }
        tokio::select! {
            _ = tokio::time::sleep(SAMPLE_EVERY) => {}
            _ = stop.changed() => return,
        }
    }
}

/// What every node held once they all applied the same index.
#[derive(Default)]
struct Converged {
    registers: BTreeMap<u64, BTreeMap<String, Option<i64>>>,
    tasks: BTreeMap<u64, Vec<crate::tasks::TaskView>>,
    liveness: BTreeMap<u64, BTreeMap<u64, String>>,
    state_hashes: BTreeMap<u64, crate::checker::StateHash>,
    inserts: BTreeMap<u64, BTreeMap<String, i64>>,
}

/// Wait until every node reports the same applied index (polled every
/// 200 ms, at most [`CONVERGE_WITHIN`]), then read each one's registers,
/// tasks, node liveness and state hash locally; if a node's applied index
/// moved while it was read (or its hash is of another index), try again.
async fn converge(cluster: &Cluster, keys: usize, inserts: bool) -> (Converged, Option<String>) {
    let deadline = Instant::now() + CONVERGE_WITHIN;
    let mut last = Vec::new();
    while Instant::now() < deadline {
        let applied = applied_indexes(cluster).await;
        if applied.iter().all(Option::is_some) && applied.windows(2).all(|w| w[0] == w[1]) {
            let mut out = Converged::default();
            for id in cluster.ids() {
                if let Some(vals) = workload::local_values(cluster, id, keys).await {
                    out.registers.insert(id, vals.into_iter().collect());
                }
                if inserts {
                    if let Some(m) = workload::inserted(cluster, id, "stale").await {
                        out.inserts.insert(id, m);
                    }
                }
                if cluster.runs_tasks() {
                    if let Some(t) = crate::tasks::local_tasks(cluster, id).await {
                        out.tasks.insert(id, t);
                    }
                    if let Some(l) = crate::tasks::local_liveness(cluster, id).await {
                        out.liveness.insert(id, l);
                    }
                }
            }
            for id in cluster.ids() {
                if let Some(h) = cluster.state_hash(id).await {
                    out.state_hashes.insert(id, h);
                }
            }
            let hashes_at_index = out.state_hashes.len() == applied.len()
                && out.state_hashes.values().all(|h| Some(h.applied_index) == applied[0]);
            if hashes_at_index && applied_indexes(cluster).await == applied {
                return (out, None);
            }
        }
        last = applied;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    (
        Converged::default(),
        Some(format!(
            "replicas did not reach the same applied index within {CONVERGE_WITHIN:?}; last seen {last:?}"
        )),
    )
}

/// The operator's tool on the healed cluster, as a user would run it:
/// `cairn check consistency` (every member's state hash at one applied
/// index, docs/OPERATIONS.md). A diverged member is an anomaly; a check
/// that could not compare is only logged, since the converge step above
/// already reports a cluster that did not settle.
async fn consistency_check(cluster: &Cluster) -> Vec<crate::checker::Anomaly> {
    let endpoints = cluster
        .ids()
        .into_iter()
        .map(|id| format!("http://{}", cluster.node(id).api_addr))
        .collect();
    let client = cairn::client::Client::new(endpoints, Duration::from_secs(5));
    match cairn::check::check_consistency(&client, &cairn::check::CheckOptions::default()).await {
        Ok(report) if !report.diverged.is_empty() => vec![crate::checker::Anomaly {
            kind: crate::checker::AnomalyKind::StateHashDiverged,
            key: None,
            ops: Vec::new(),
            message: format!(
                "cairn check consistency: member(s) {:?} hold a different state than the majority at applied index {}",
                report.diverged, report.index
            ),
        }],
        Ok(report) => {
            tracing::info!(
                index = report.index,
                unanswered = ?report.unanswered,
                "cairn check consistency: no member diverged"
            );
            Vec::new()
        }
        Err(e) => {
            tracing::warn!(error = %e, "cairn check consistency could not run");
            Vec::new()
        }
    }
}

async fn applied_indexes(cluster: &Cluster) -> Vec<Option<u64>> {
    let mut applied = Vec::new();
    for id in cluster.ids() {
        applied.push(cluster.status(id).await.and_then(|s| s["applied_index"].as_u64()));
    }
    applied
}

fn count(ops: &[Op]) -> OpCounts {
    let mut c = OpCounts::default();
    for o in ops {
        if o.final_read {
            if o.outcome == Outcome::Ok {
                c.final_reads_ok += 1;
            }
            continue;
        }
        c.total += 1;
        match o.outcome {
            Outcome::Ok => c.ok += 1,
            Outcome::Fail => c.fail += 1,
            Outcome::Info => c.info += 1,
        }
        match (o.kind, o.outcome) {
            (OpKind::Read, Outcome::Ok) => c.reads_ok += 1,
            (OpKind::Write, Outcome::Ok) => c.writes_ok += 1,
            (OpKind::Write, Outcome::Info) => c.writes_info += 1,
            _ => {}
        }
    }
    c
}

/// One line on the task load: ops by kind and outcome, final states.
fn task_summary(t: &crate::checker::tasks::TaskCheckInput, torn_lines: usize) -> String {
    use crate::tasks::TaskOpKind;
    if t.ops.is_empty() {
        return String::new();
    }
    let n = |k: TaskOpKind, o: Outcome| t.ops.iter().filter(|x| x.kind == k && x.outcome == o).count();
    let mut finals: BTreeMap<&str, usize> = BTreeMap::new();
    if let Some(tasks) = t.final_tasks.values().next() {
        for task in tasks {
            *finals.entry(task.state.as_str()).or_default() += 1;
        }
    }
    let epochs: std::collections::BTreeSet<(u64, u64)> = t.actuations.iter().map(|a| (a.task, a.epoch)).collect();
    let tasks_run: std::collections::BTreeSet<u64> = t.actuations.iter().map(|a| a.task).collect();
    format!(
        "submit ok {}/info {}/fail {}, get ok {}, cancel ok {}; {} actuation steps, {} tasks run under {} leases ({} reassigned); final {:?}; {} undrained; {} torn journal lines",
        n(TaskOpKind::Submit, Outcome::Ok),
        n(TaskOpKind::Submit, Outcome::Info),
        n(TaskOpKind::Submit, Outcome::Fail),
        n(TaskOpKind::Get, Outcome::Ok),
        n(TaskOpKind::Cancel, Outcome::Ok),
        t.actuations.len(),
        tasks_run.len(),
        epochs.len(),
        epochs.len().saturating_sub(tasks_run.len()),
        finals,
        t.undrained.len(),
        torn_lines,
    )
}

/// Ok ops per second while faults were active, and while none was.
fn throughput(ops: &[Op], events: &[NemesisEvent], load: (u64, u64)) -> (f64, f64) {
    let mut spans = Vec::new();
    let mut open: Option<u64> = None;
    for e in events {
        match e.phase.as_str() {
            "start" if open.is_none() => open = Some(e.t_ns),
            "heal" => {
                if let Some(s) = open.take() {
                    spans.push((s, e.t_ns));
                }
            }
            _ => {}
        }
    }
    if let Some(s) = open {
        spans.push((s, load.1));
    }
    let faulted_ns: u64 = spans.iter().map(|(a, b)| b.saturating_sub(*a)).sum();
    let calm_ns = (load.1 - load.0).saturating_sub(faulted_ns);
    let in_fault = |t: u64| spans.iter().any(|(a, b)| *a <= t && t <= *b);
    let ok: Vec<u64> = ops
        .iter()
        .filter(|o| !o.final_read && o.outcome == Outcome::Ok)
        .map(|o| o.complete_ns)
        .collect();
    let faulted = ok.iter().filter(|t| in_fault(**t)).count() as f64;
    let calm = ok.len() as f64 - faulted;
    let rate = |n: f64, ns: u64| if ns == 0 { 0.0 } else { n / (ns as f64 / 1e9) };
    (rate(faulted, faulted_ns), rate(calm, calm_ns))
}

/// The binary that runs the fault filesystems: the embedded launcher's
/// (this crate's), else `$CAIRN_JEPSEN_BIN`, else this process if it is
/// `cairn-jepsen`, else the workspace's `target/debug/cairn-jepsen`.
fn faultfs_binary(launcher: &Launcher) -> PathBuf {
    if let Launcher::Embedded(p) = launcher {
        return p.clone();
    }
    if let Some(p) = std::env::var_os("CAIRN_JEPSEN_BIN") {
        return PathBuf::from(p);
    }
    match std::env::current_exe() {
        Ok(p) if p.file_name().is_some_and(|n| n == "cairn-jepsen") => p,
        _ => crate::cluster::workspace_root()
            .join("target")
            .join("debug")
            .join("cairn-jepsen"),
    }
}

/// Carry out one run and check it.
pub async fn run(cfg: &RunConfig) -> Result<RunReport, Error> {
    if cfg.nodes < 3 {
        return Err(Error::Invalid {
            field: "nodes",
            reason: format!("{} nodes cannot survive a fault; use 3 or more", cfg.nodes),
        });
    }
    let rec = Recorder::new();
    tracing::info!(seed = cfg.seed, nodes = cfg.nodes, "starting a fresh cluster");
    let mut cluster = Cluster::start(ClusterSpec {
        nodes: cfg.nodes,
        launcher: cfg.launcher.clone(),
        log_filter: cfg.log_filter.clone(),
        seed: cfg.seed,
        write_timeout_ms: cfg.write_timeout_ms,
        disk_mib: (cfg.nemeses.contains(&NemesisKind::Disk) && crate::cluster::small_disks_possible())
            .then_some(DISK_MIB),
        net: cfg.net,
        // Aimed power cuts need snapshots (and purges) within seconds.
        snapshots: cfg
            .nemeses
            .contains(&NemesisKind::PowerAimed)
            .then_some((crate::nemesis::AIMED_SNAPSHOT_EVERY, crate::nemesis::AIMED_LOGS_KEPT)),
        faultfs: cfg
            .nemeses
            .iter()
            .any(|k| k.needs_faultfs())
            .then(|| crate::cluster::FaultFsSpec {
                binary: faultfs_binary(&cfg.launcher),
                delay: cfg.disks.base.clone(),
            }),
    })
    .await?;
    if let Some(note) = cluster.faultfs_note() {
        rec.event("error", format!("fault filesystems not mounted: {note}"));
    }
    let Some(leader) = cluster.wait_agreed_leader(cfg.recovery_timeout).await else {
        return Err(Error::Setup {
            reason: format!(
                "no leader within {:?} of bootstrap; node 1's log:\n{}",
                cfg.recovery_timeout,
                cluster.log_tail(1, 30)
            ),
        });
    };
    tracing::info!(leader, keys = cfg.workload.keys, "declaring the registers");
    workload::declare(&cluster, cfg.workload.keys).await?;

    let (stop_tx, stop_rx) = watch::channel(false);
    let nodes: Vec<(u64, String)> = cluster
        .ids()
        .into_iter()
        .map(|id| (id, cluster.node(id).api_addr.clone()))
        .collect();
    let sampler = tokio::spawn(sampler(
        nodes.clone(),
        cluster.incarnations(),
        cluster.generations(),
        rec.clone(),
        stop_rx,
    ));

    let steps = schedule(cfg.seed, cfg.nodes, &cfg.nemeses, cfg.warmup, cfg.duration);
    tracing::info!(faults = steps.len(), duration = ?cfg.duration, "load and faults");
    let load_start = Instant::now();
    let load_start_ns = rec.now_ns();
    let load_end = load_start + cfg.duration;
    let mut clients = Vec::new();
    let cpn = cfg.workload.clients_per_node as u32;
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()
        .map_err(|e| Error::Setup { reason: e.to_string() })?;
    let inserts = workload::InsertLog::default();
    let hygiene = workload::HygieneLog::default();
    let placement: Vec<(u32, usize)> = match cfg.clients_total {
        Some(total) => (0..total as u32)
            .map(|slot| (slot, slot as usize % nodes.len()))
            .collect(),
        None => (0..nodes.len())
            .flat_map(|i| (0..cpn).map(move |c| (i as u32 * cpn + c, i)))
            .collect(),
    };
    let slots = placement.len() as u32;
    for (slot, i) in placement {
        let (id, api) = &nodes[i];
        clients.push(tokio::spawn(workload::client(
            slot,
            slots,
            *id,
            api.clone(),
            cfg.workload.clone(),
            rec.clone(),
            cfg.seed.wrapping_mul(1000).wrapping_add(u64::from(slot)),
            load_end,
            http.clone(),
            inserts.clone(),
            hygiene.clone(),
        )));
    }
    let task_log = crate::tasks::TaskLog::default();
    if cluster.runs_tasks() {
        for (id, api) in &nodes {
            clients.push(tokio::spawn(crate::tasks::client(
                *id as u32,
                *id,
                api.clone(),
                task_log.clone(),
                rec.clone(),
                cfg.seed.wrapping_mul(1000).wrapping_add(500 + id),
                TASK_OPS_PER_SEC,
                cfg.workload.request_timeout,
                load_end,
                http.clone(),
            )));
        }
    }
    let (disk_stop_tx, disk_stop_rx) = watch::channel(false);
    // The slow-disk and aimed power nemeses choose the slow disks
    // themselves: a disk that follows the leader would undo their choice
    // when leadership moves.
    let choosers: Vec<&str> = [NemesisKind::SlowDisk, NemesisKind::PowerAimed]
        .into_iter()
        .filter(|k| cfg.nemeses.contains(k))
        .map(NemesisKind::name)
        .collect();
    let follow_leader = choosers.is_empty();
    if cluster.has_faultfs() && !follow_leader {
        rec.event(
            "info",
            format!(
                "disk: every disk at {} but while the {} nemesis slows it",
                cfg.disks.base,
                choosers.join(" or ")
            ),
        );
    }
    let disk_follower = (cluster.has_faultfs() && follow_leader).then(|| {
        let disks: Vec<(u64, String, PathBuf)> = nodes
            .iter()
            .filter_map(|(id, api)| cluster.faultfs_socket(*id).map(|s| (*id, api.clone(), s)))
            .collect();
        tokio::spawn(crate::nemesis::slow_disk(
            disks,
            cfg.disks.clone(),
            rec.clone(),
            disk_stop_rx,
        ))
    });
    let mut nemesis = Nemesis::new(cfg.seed, rec.clone());
    nemesis.run(&mut cluster, &steps, load_start, load_end).await;
    tokio::time::sleep_until(load_end).await;
    let load_end_ns = rec.now_ns();

    tracing::info!("healing everything; clients finish their last operation");
    nemesis.heal(&mut cluster).await?;
    for c in clients {
        // A client's last request ends within its timeout; the join cannot hang.
        let _ = tokio::time::timeout(cfg.workload.request_timeout * 2, c).await;
    }

    tracing::info!("waiting for the healed cluster to agree on a leader");
    let leader_after_heal = cluster.wait_agreed_leader(cfg.recovery_timeout).await;
    let mut reasons = Vec::new();
    if leader_after_heal.is_none() {
        reasons.push(format!(
            "no agreed leader within {:?} after healing (liveness)",
            cfg.recovery_timeout
        ));
    }
    let _ = disk_stop_tx.send(true);
    if let Some(f) = disk_follower {
        let _ = f.await;
    }
    tracing::info!(?leader_after_heal, "final reads from every node");
    workload::final_reads(&cluster, &rec, cfg.workload.keys, cfg.workload.request_timeout).await;
    let insert_ops = inserts.ops();
    let final_lists = if insert_ops.is_empty() {
        BTreeMap::new()
    } else {
        workload::final_inserted(&cluster).await
    };
    let undrained = if cluster.runs_tasks() {
        tracing::info!("waiting for every task to finish");
        crate::tasks::drain(&cluster, DRAIN_WITHIN).await
    } else {
        Vec::new()
    };
    let (converged, not_converged) = converge(&cluster, cfg.workload.keys, !insert_ops.is_empty()).await;
    let insert_input = crate::checker::inserts::InsertCheckInput {
        ops: insert_ops,
        final_lists,
        converged: converged.inserts.clone(),
    };
    reasons.extend(not_converged);
    let journals: Vec<PathBuf> = cluster.ids().into_iter().map(|id| cluster.journal(id)).collect();
    let (actuations, torn_lines) = crate::tasks::read_journals(&journals);
    let task_input = crate::checker::tasks::TaskCheckInput {
        ops: task_log.ops(),
        actuations,
        undrained,
        final_tasks: converged.tasks,
        final_liveness: converged.liveness,
    };
    let _ = stop_tx.send(true);
    let _ = sampler.await;

    let (ops, samples, events) = rec.snapshot();
    tracing::info!(ops = ops.len(), samples = samples.len(), "checking the history");
    let input = CheckInput {
        initial: workload::INITIAL_VALUE,
        ops: ops.clone(),
        samples: samples.clone(),
        converged: converged.registers,
        state_hashes: converged.state_hashes.clone(),
        one_leader_per_term: false,
    };
    let budget = (cfg.checker_max_steps, cfg.checker_secs);
    let mut checks = tokio::task::spawn_blocking(move || crate::checker::check(&input, budget))
        .await
        .map_err(|e| Error::Setup {
            reason: format!("checker panicked: {e}"),
        })?;
    checks.anomalies.extend(crate::checker::tasks::check_tasks(&task_input));
    let task_summary = task_summary(&task_input, torn_lines);
    let insert_anomalies = crate::checker::inserts::check_inserts(&insert_input);
    let insert_summary = if insert_input.ops.is_empty() {
        String::new()
    } else {
        format!(
            "{} acknowledged of {} ({} indeterminate); checked in {} linearizable final lists and {} converged replicas: {}",
            insert_input.ops.iter().filter(|o| o.outcome == Outcome::Ok).count(),
            insert_input.ops.len(),
            insert_input.ops.iter().filter(|o| o.outcome == Outcome::Info).count(),
            insert_input.final_lists.len(),
            insert_input.converged.len(),
            if insert_anomalies.is_empty() {
                "none lost".to_string()
            } else {
                format!("{} anomalies", insert_anomalies.len())
            }
        )
    };
    checks.anomalies.extend(insert_anomalies);
    let hygiene_ops = hygiene.ops();
    let (hygiene_summary, hygiene_anomalies, hygiene_unproven) =
        crate::checker::hygiene::check(&hygiene_ops, &cfg.workload);
    checks.anomalies.extend(hygiene_anomalies);
    reasons.extend(hygiene_unproven.into_iter().map(|why| format!("inconclusive: {why}")));
    checks.anomalies.extend(consistency_check(&cluster).await);
    let mut vote_lines = 0;
    for id in cluster.ids() {
        let (found, lines) = crate::checker::votes::check(id, &cluster.log_since(id, 0));
        vote_lines += lines;
        checks.anomalies.extend(found);
    }
    let votes_summary = format!(
        "{vote_lines} vote lines on {} nodes (stored, or read back at start); {} went back",
        cluster.ids().len(),
        checks
            .anomalies
            .iter()
            .filter(|a| a.kind == crate::checker::AnomalyKind::VoteWentBack)
            .count()
    );
    let mut disks = Vec::new();
    if cfg.nemeses.contains(&NemesisKind::SlowDisk) {
        let slow_followers = events
            .iter()
            .filter(|e| e.phase == "start" && e.what.starts_with("slow disk on a follower"))
            .count();
        disks.push(format!(
            "{slow_followers} slow-follower faults, leadership moved under {}",
            nemesis.slow_follower_leader_changes()
        ));
    }
    if cfg.nemeses.contains(&NemesisKind::PowerAimed) {
        let aimed: Vec<String> = nemesis
            .aimed()
            .iter()
            .map(|(family, (cuts, hits))| format!("{family} {hits}/{cuts}"))
            .collect();
        disks.push(format!("aimed cuts that hit their moment: {}", aimed.join(", ")));
    }
    let disks_summary = disks.join("; ");
    checks
        .anomalies
        .extend(nemesis.membership_lies().iter().map(|lie| crate::checker::Anomaly {
            kind: crate::checker::AnomalyKind::DishonestMembership,
            key: None,
            ops: Vec::new(),
            message: lie.clone(),
        }));
    for why in nemesis.not_injected() {
        reasons.push(format!("inconclusive: {why}"));
    }
    for why in nemesis.uninjected_families() {
        reasons.push(format!("inconclusive: {why}"));
    }
    if cfg.nemeses.contains(&NemesisKind::Ghost) && nemesis.ghosts() == 0 {
        reasons.push("inconclusive: the ghost nemesis was asked for but never found a leader to try".into());
    }
    // Only when a cut was scheduled: a short run mixing disk faults may
    // draw none (the fault families' own check covers what was drawn).
    let cut_scheduled = steps.iter().any(|s| s.fault.family() == "power");
    if cut_scheduled && nemesis.power_cuts() == 0 && nemesis.not_injected().is_empty() {
        reasons.push("inconclusive: a power nemesis was asked for but no power cut happened".into());
    }

    let counts = count(&ops);
    let secs = cfg.duration.as_secs_f64();
    let ok_rate = counts.ok as f64 / secs.max(0.001);
    let (faulted, calm) = throughput(&ops, &events, (load_start_ns, load_end_ns));
    if ok_rate < cfg.min_ok_ops_per_sec {
        reasons.push(format!(
            "inconclusive: {ok_rate:.2} ok ops/s is below the minimum {:.2}",
            cfg.min_ok_ops_per_sec
        ));
    }
    for k in &checks.unknown {
        reasons.push(format!(
            "inconclusive: linearizability of {k} unknown (search budget exhausted)"
        ));
    }
    let liveness_failed = leader_after_heal.is_none() || reasons.iter().any(|r| r.starts_with("replicas did not"));
    let verdict = if !checks.anomalies.is_empty() || liveness_failed {
        Verdict::Fail
    } else if !reasons.is_empty() {
        Verdict::Inconclusive
    } else {
        Verdict::Pass
    };

    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or(0);
    let dir = cfg.results_dir.join(format!("seed{}-n{}-{stamp}", cfg.seed, cfg.nodes));
    std::fs::create_dir_all(&dir).map_err(Error::io(format!("create {}", dir.display())))?;
    write_jsonl(&dir.join("history.jsonl"), &ops)?;
    write_jsonl(&dir.join("status.jsonl"), &samples)?;
    write_jsonl(&dir.join("nemesis.jsonl"), &events)?;
    let tasks_json = serde_json::to_string(&task_input).map_err(|e| Error::Io {
        what: "encode tasks.json".into(),
        source: e.into(),
    })?;
    std::fs::write(dir.join("tasks.json"), tasks_json).map_err(Error::io("write tasks.json"))?;
    if !insert_input.ops.is_empty() {
        let json = serde_json::to_string(&insert_input).map_err(|e| Error::Io {
            what: "encode inserts.json".into(),
            source: e.into(),
        })?;
        std::fs::write(dir.join("inserts.json"), json).map_err(Error::io("write inserts.json"))?;
    }
    if verdict != Verdict::Pass || cfg.keep_logs {
        cluster.copy_logs(&dir)?;
    }
    let report = RunReport {
        seed: cfg.seed,
        nodes: cfg.nodes,
        duration_s: secs,
        nemeses: cfg.nemeses.clone(),
        schedule: steps,
        events,
        ops: counts,
        ok_ops_per_sec: ok_rate,
        ok_ops_per_sec_faulted: faulted,
        ok_ops_per_sec_calm: calm,
        leader_after_heal,
        inserts: insert_summary,
        net: match cluster.faultfs_note() {
            Some(n) => format!("{}; fault filesystems NOT mounted: {n}", cluster.net_note()),
            None if cluster.has_faultfs() && !follow_leader => format!(
                "{}; data dirs on fault filesystems (fsync {}, slowed by the slow-disk nemesis)",
                cluster.net_note(),
                cfg.disks.base,
            ),
            None if cluster.has_faultfs() => format!(
                "{}; data dirs on fault filesystems (fsync {}, slow disk {:?} {})",
                cluster.net_note(),
                cfg.disks.base,
                cfg.disks.slow_disk,
                cfg.disks.slow
            ),
            None => cluster.net_note().to_string(),
        },
        tasks: task_summary,
        hygiene: hygiene_summary,
        votes: votes_summary,
        disks: disks_summary,
        state_hashes: converged.state_hashes,
        checks,
        verdict,
        reasons,
        results: dir.clone(),
        reproduce: cfg.reproduce(),
    };
    let json = serde_json::to_string_pretty(&report).map_err(|e| Error::Io {
        what: "encode the report".into(),
        source: e.into(),
    })?;
    std::fs::write(dir.join("report.json"), json).map_err(Error::io("write report.json"))?;
    std::fs::write(dir.join("summary.txt"), report.summary()).map_err(Error::io("write summary.txt"))?;
    drop(cluster);
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checker::tests::op;

    #[test]
    fn throughput_splits_faulted_and_calm_time() {
        let ops: Vec<Op> = (0..10)
            .map(|i| {
                op(
                    i,
                    OpKind::Read,
                    "a",
                    0,
                    (i as u64 * 100, i as u64 * 100 + 50),
                    Outcome::Ok,
                )
            })
            .collect();
        let ev = |t: u64, phase: &str| NemesisEvent {
            t_ns: t,
            phase: phase.into(),
            what: String::new(),
        };
        // A fault from 0 to 500 ns: ops completing at 50..450 (5 of them).
        let (f, c) = throughput(&ops, &[ev(0, "start"), ev(500, "heal")], (0, 1000));
        assert!((f - 5.0 / 500e-9).abs() < 1.0, "{f}");
        assert!((c - 5.0 / 500e-9).abs() < 1.0, "{c}");
    }
}
