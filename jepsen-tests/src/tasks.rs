//! The task load: concurrent clients submitting, reading and cancelling
//! tasks over the admin API (`POST /v1/tasks`, `GET /v1/tasks/{id}`,
//! `POST /v1/tasks/{id}/cancel`), and the action handler the nodes run them
//! with, which journals every moment it believes it may actuate.
//!
//! # Why a journal
//! The replicated task record holds one lease at a time by construction, so
//! "two holders" can only show up where the holders act: on the nodes. The
//! handler ([`JepsenWork`]) appends one [`Actuation`] per step in which
//! `ActionContext::may_actuate()` was true, stamped with the wall clock
//! taken *before* the check (a `SIGSTOP` between stamp and check makes the
//! check fail, never back-dates a claim). All nodes run on this machine,
//! so their wall clocks are one clock; the checker in
//! [`crate::checker::tasks`] then asks whether two epochs of one task ever
//! actuated interleaved.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::Mutex;
use std::time::Duration;

use cairn::hal::action::ActionContext;
use cairn::hal::action::ActionFeedback;
use cairn::hal::action::ActionFuture;
use cairn::hal::action::ActionHandler;
use cairn::hal::action::ActionOutcome;
use rand::rngs::StdRng;
use rand::Rng;
use rand::SeedableRng;
use serde::Deserialize;
use serde::Serialize;
use serde_json::json;
use serde_json::Value;
use tokio::time::Instant;

use crate::cluster::Cluster;
use crate::history::Outcome;
use crate::history::Recorder;
use crate::workload::error_outcome;
use crate::workload::error_text;
use crate::workload::send;

/// The task kind the suite submits and [`JepsenWork`] runs.
pub const TASK_KIND: &str = "jepsen.work";
/// Steps of one run of [`JepsenWork`]; with [`STEP`] a task takes ~3 s,
/// long enough that most faults catch some task running, short enough to
/// drain after healing.
const STEPS: u8 = 20;
/// One step of [`JepsenWork`].
const STEP: Duration = Duration::from_millis(150);
/// Process ids of task clients start here (apart from register clients').
pub const TASK_PROCESS_BASE: u32 = 500_000;
/// Most tasks one run submits (a bound beside its duration).
const MAX_TASKS: usize = 400;

/// Wall-clock nanoseconds since the Unix epoch: one clock for every process
/// of a run, all on this machine.
pub fn wall_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

/// One step in which a node's handler held a valid permit for a task.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Actuation {
    /// The node whose handler it was.
    pub node: u64,
    /// The task.
    pub task: u64,
    /// The epoch of the handler's assignment.
    pub epoch: u64,
    /// Wall clock (ns since the Unix epoch), taken just before the check.
    pub t_ns: u64,
}

/// The test action handler: [`STEPS`] steps of [`STEP`], journalling each
/// step whose permit was valid, reporting progress, honouring cancel and a
/// lost permit at once.
pub struct JepsenWork {
    node: u64,
    journal: Arc<Mutex<std::fs::File>>,
}

impl JepsenWork {
    /// A handler for node `node` appending to `journal`.
    pub fn open(node: u64, journal: &Path) -> std::io::Result<Self> {
        let file = std::fs::OpenOptions::new().create(true).append(true).open(journal)?;
        Ok(Self {
            node,
            journal: Arc::new(Mutex::new(file)),
        })
    }
}

impl ActionHandler for JepsenWork {
    fn run(&self, ctx: ActionContext) -> ActionFuture {
        let node = self.node;
        let journal = self.journal.clone();
        Box::pin(async move {
            let (task, epoch) = (ctx.goal.task_id, ctx.goal.epoch);
            for step in 0..STEPS {
                let t_ns = wall_ns();
                if !ctx.may_actuate() {
                    return stopped(&ctx);
                }
                let line = serde_json::to_string(&Actuation {
                    node,
                    task,
                    epoch,
                    t_ns,
                })
                .unwrap_or_default();
                {
                    // A write() reaches the page cache before the next step:
                    // kill -9 cannot lose a journalled claim.
                    let mut f = journal.lock().unwrap_or_else(|p| p.into_inner());
                    if writeln!(f, "{line}").is_err() {
                        return ActionOutcome::Failed {
                            reason: "cannot write the actuation journal".into(),
                        };
                    }
                }
                ctx.feedback(ActionFeedback {
                    percent: (u32::from(step + 1) * 100 / u32::from(STEPS)) as u8,
                    detail: None,
                });
                tokio::select! {
                    _ = tokio::time::sleep(STEP) => {}
                    _ = ctx.stopped() => return stopped(&ctx),
                }
            }
            ActionOutcome::Succeeded
        })
    }
}

fn stopped(ctx: &ActionContext) -> ActionOutcome {
    if ctx.is_cancelled() {
        ActionOutcome::Cancelled
    } else {
        ActionOutcome::Failed {
            reason: "permit lost".into(),
        }
    }
}

/// The actuation journal of the node whose config file is `config`.
pub fn journal_for(config: &Path) -> PathBuf {
    config.with_extension("actuations.jsonl")
}

/// Read every node's actuation journal (lines that do not parse, e.g. one
/// cut by `kill -9` mid-write, are skipped and counted).
pub fn read_journals(paths: &[PathBuf]) -> (Vec<Actuation>, usize) {
    let mut out = Vec::new();
    let mut bad = 0;
    for p in paths {
        let Ok(text) = std::fs::read_to_string(p) else { continue };
        for line in text.lines().filter(|l| !l.trim().is_empty()) {
            match serde_json::from_str(line) {
                Ok(a) => out.push(a),
                Err(_) => bad += 1,
            }
        }
    }
    (out, bad)
}

/// What a client does to a task.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TaskOpKind {
    /// `POST /v1/tasks`.
    Submit,
    /// `GET /v1/tasks/{id}` (linearizable).
    Get,
    /// `POST /v1/tasks/{id}/cancel`.
    Cancel,
}

/// A task as the API showed it: the fields the checkers need.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskView {
    /// Task id.
    pub id: u64,
    /// `Pending`, `Assigned`, `Running`, `Succeeded`, `Failed`, `Cancelled`.
    pub state: String,
    /// Lease holder.
    pub lease_node: Option<u64>,
    /// Lease epoch.
    pub epoch: Option<u64>,
    /// Failed attempts.
    pub attempts: u64,
    /// Last progress.
    pub progress_percent: u64,
    /// A cancel is pending.
    pub cancel_requested: bool,
}

impl TaskView {
    /// Parse one task of the API; `None` if it is not one.
    pub fn parse(v: &Value) -> Option<Self> {
        Some(Self {
            id: v["id"].as_u64()?,
            state: v["state"].as_str()?.to_string(),
            lease_node: v["lease"]["node_id"].as_u64(),
            epoch: v["lease"]["epoch"].as_u64(),
            attempts: v["attempts"].as_u64().unwrap_or(0),
            progress_percent: v["progress_percent"].as_u64().unwrap_or(0),
            cancel_requested: v["cancel_requested"].as_bool().unwrap_or(false),
        })
    }

    /// Finished for good.
    pub fn is_terminal(&self) -> bool {
        matches!(self.state.as_str(), "Succeeded" | "Failed" | "Cancelled")
    }
}

/// One task operation, from invocation to completion.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskOp {
    /// Position in the task history.
    pub index: usize,
    /// The sequential client that ran it.
    pub process: u32,
    /// The node it was sent to.
    pub node: u64,
    /// What it did.
    pub kind: TaskOpKind,
    /// The task (for a submit: the id the node answered, if any).
    pub task_id: Option<u64>,
    /// Since the run started.
    pub invoke_ns: u64,
    /// Since the run started.
    pub complete_ns: u64,
    /// How it ended.
    pub outcome: Outcome,
    /// The error, if any.
    pub error: Option<String>,
    /// For an ok get: the task as read.
    pub observed: Option<TaskView>,
}

/// The growing task history, shared by the task clients.
#[derive(Clone, Default)]
pub struct TaskLog {
    ops: Arc<Mutex<Vec<TaskOp>>>,
    known: Arc<Mutex<Vec<u64>>>,
}

impl TaskLog {
    /// Append an op; its index is assigned here.
    pub fn push(&self, mut op: TaskOp) {
        let mut ops = self.ops.lock().unwrap_or_else(|p| p.into_inner());
        op.index = ops.len();
        if op.kind == TaskOpKind::Submit && op.outcome == Outcome::Ok {
            if let Some(id) = op.task_id {
                self.known.lock().unwrap_or_else(|p| p.into_inner()).push(id);
            }
        }
        ops.push(op);
    }

    /// Everything recorded.
    pub fn ops(&self) -> Vec<TaskOp> {
        self.ops.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn pick_known(&self, rng: &mut StdRng) -> Option<u64> {
        let known = self.known.lock().unwrap_or_else(|p| p.into_inner());
        if known.is_empty() {
            None
        } else {
            Some(known[rng.random_range(0..known.len())])
        }
    }

    fn submitted(&self) -> usize {
        self.ops
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .filter(|o| o.kind == TaskOpKind::Submit)
            .count()
    }
}

/// One task client: a sequential process against `api` until `deadline`.
/// 40 % submits, 45 % reads of a known task, 15 % cancels (`rate` ops/s).
#[allow(clippy::too_many_arguments)]
pub async fn client(
    slot: u32,
    node: u64,
    api: String,
    log: TaskLog,
    rec: Recorder,
    seed: u64,
    rate: f64,
    timeout: Duration,
    deadline: Instant,
    http: reqwest::Client,
) {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut process = TASK_PROCESS_BASE + slot;
    let interval = Duration::from_secs_f64(1.0 / rate.max(0.001));
    let mut next_at = Instant::now();
    // Bounded by the deadline; this bound only guards a broken clock.
    for _ in 0..100_000u32 {
        next_at = next_at.max(Instant::now());
        if next_at >= deadline {
            break;
        }
        tokio::time::sleep_until(next_at).await;
        next_at += interval;
        let r: f64 = rng.random();
        let known = log.pick_known(&mut rng);
        let (kind, task_id) = match known {
            Some(id) if (0.4..0.85).contains(&r) => (TaskOpKind::Get, Some(id)),
            Some(id) if r >= 0.85 => (TaskOpKind::Cancel, Some(id)),
            _ if log.submitted() >= MAX_TASKS => continue,
            _ => (TaskOpKind::Submit, None),
        };
        let invoke_ns = rec.now_ns();
        let req = match (kind, task_id) {
            (TaskOpKind::Get, Some(id)) => http.get(format!("http://{api}/v1/tasks/{id}")),
            (TaskOpKind::Cancel, Some(id)) => http.post(format!("http://{api}/v1/tasks/{id}/cancel")),
            _ => http.post(format!("http://{api}/v1/tasks")).json(&json!({
                "kind": TASK_KIND,
                "retry": {"max_attempts": 3, "backoff_ms_base": 200, "backoff_ms_max": 1000},
            })),
        };
        let mut op = TaskOp {
            index: 0,
            process,
            node,
            kind,
            task_id,
            invoke_ns,
            complete_ns: 0,
            outcome: Outcome::Info,
            error: None,
            observed: None,
        };
        match send(req, timeout).await {
            Err(a) => {
                op.outcome = a.outcome;
                op.error = a.error;
            }
            Ok((status, text)) if (200..300).contains(&status) => {
                let v: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
                match kind {
                    TaskOpKind::Submit => match v["response"]["TaskCreated"]["task_id"].as_u64() {
                        Some(id) => {
                            op.outcome = Outcome::Ok;
                            op.task_id = Some(id);
                        }
                        None => op.error = Some(format!("unexpected submit body: {}", clip(&text))),
                    },
                    TaskOpKind::Get => match TaskView::parse(&v) {
                        Some(t) => {
                            op.outcome = Outcome::Ok;
                            op.observed = Some(t);
                        }
                        None => op.error = Some(format!("unexpected task body: {}", clip(&text))),
                    },
                    TaskOpKind::Cancel => op.outcome = Outcome::Ok,
                }
            }
            Ok((status, text)) => {
                op.outcome = error_outcome(status, false);
                op.error = Some(error_text(status, &text));
            }
        }
        op.complete_ns = rec.now_ns();
        let indeterminate = op.outcome == Outcome::Info;
        log.push(op);
        if indeterminate {
            process += 1000;
        }
    }
}

fn clip(s: &str) -> String {
    s.chars().take(200).collect()
}

/// One node's JSON answer to `GET path` (3 s timeout); `None` on any failure.
async fn local_json(cluster: &Cluster, node: u64, path: &str) -> Option<Value> {
    let api = &cluster.node(node).api_addr;
    let r = cluster
        .http()
        .get(format!("http://{api}{path}"))
        .timeout(Duration::from_secs(3))
        .send()
        .await
        .ok()?;
    r.json().await.ok()
}

/// Every task of one node, read locally (`consistency=stale`); `None` if
/// the node did not answer or answered something else.
pub async fn local_tasks(cluster: &Cluster, node: u64) -> Option<Vec<TaskView>> {
    let v = local_json(cluster, node, "/v1/tasks?consistency=stale&limit=10000").await?;
    v.as_array()?.iter().map(TaskView::parse).collect()
}

/// Every node's liveness as one node's state says (`consistency=stale`).
pub async fn local_liveness(cluster: &Cluster, node: u64) -> Option<BTreeMap<u64, String>> {
    let v = local_json(cluster, node, "/v1/nodes?consistency=stale").await?;
    v.as_array()?
        .iter()
        .map(|n| Some((n["id"].as_u64()?, n["liveness"].as_str()?.to_string())))
        .collect()
}

/// After healing: wait (polling every 500 ms, at most `within`) until the
/// leader's linearizable view has every task finished. Returns the tasks
/// still unfinished at the end (empty when drained).
pub async fn drain(cluster: &Cluster, within: Duration) -> Vec<TaskView> {
    let deadline = Instant::now() + within;
    let mut left = Vec::new();
    while Instant::now() < deadline {
        if let Some(leader) = cluster.leader().await {
            let api = cluster.node(leader).api_addr.clone();
            let r = cluster
                .http()
                .get(format!("http://{api}/v1/tasks?limit=10000"))
                .timeout(Duration::from_secs(3))
                .send()
                .await;
            if let Ok(r) = r {
                if let Ok(v) = r.json::<Value>().await {
                    if let Some(all) = v
                        .as_array()
                        .and_then(|a| a.iter().map(TaskView::parse).collect::<Option<Vec<_>>>())
                    {
                        left = all.into_iter().filter(|t| !t.is_terminal()).collect();
                        if left.is_empty() {
                            return left;
                        }
                    }
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    left
}
