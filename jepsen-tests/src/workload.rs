//! The load: sequential clients (a fixed number per node, each talking to
//! its own node only, as Jepsen's clients do) reading and writing registers.
//!
//! Registers are `Int` parameters `jepsen.r0..` declared once at the start
//! with value 0. A write is `PUT /v1/params/{key}` of a value no other write
//! uses; a read is a linearizable `GET /v1/params/{key}`.
//!
//! # How an answer becomes an outcome
//! | answer | outcome | why |
//! |---|---|---|
//! | 2xx | ok | |
//! | connection refused | fail | the request never left |
//! | 400, 404, 409 | fail | refused before or by the state machine, unchanged state |
//! | 503 (`not_leader`, `unavailable`) | fail | cairn's contract: retry elsewhere, nothing applied (the CLI's client fails over on it) |
//! | 504 (`timeout`) | info | cairn says the outcome is unknown |
//! | 500, other statuses, reset or timeout after sending | info | we cannot know |
//!
//! If cairn breaks the 503 contract, a read will observe a "failed" write
//! and the checker reports `failed_write_observed`.
//!
//! # Log hygiene (issue 17)
//! Two more kinds of write, off unless asked for (`--large-fraction`,
//! `--refused-fraction`, or the `freeze` nemesis, which turns both on):
//! - **large**: `PUT /v1/mission/plan` with a plan of search areas that
//!   encodes to just under `log.max_entry_bytes` (1 MiB by default): the
//!   largest entries the log accepts, so replication batches are full of
//!   them. Each must be acknowledged or fail cleanly; a 413 is an anomaly
//!   (the write is within the limit).
//! - **refused**: `POST /v1/tasks` with a 1,000,000-character kind, which
//!   the state machine refuses (400). The leader refuses it before the log;
//!   a 2xx is an anomaly. Before the fix each one put 1 MB in the log and
//!   ~25 of them jammed a follower for good.

use std::time::Duration;

use rand::rngs::StdRng;
use rand::Rng;
use rand::SeedableRng;
use serde_json::json;
use serde_json::Value;
use tokio::time::Instant;

use crate::cluster::Cluster;
use crate::error::Error;
use crate::history::Op;
use crate::history::OpKind;
use crate::history::Outcome;
use crate::history::Recorder;

/// Every register's declared value.
pub const INITIAL_VALUE: i64 = 0;
/// Values are `client slot × this + sequence`: unique while a client does
/// fewer operations than this.
const VALUES_PER_CLIENT: i64 = 1_000_000_000;
/// Process ids of the final reads start here (above any client's).
pub const FINAL_READ_PROCESS: u32 = 1_000_000;

/// Shape of the load.
#[derive(Clone, Debug)]
pub struct WorkloadSpec {
    /// Number of registers.
    pub keys: usize,
    /// Clients per node.
    pub clients_per_node: usize,
    /// Most operations per second per client.
    pub rate_per_client: f64,
    /// Client-side deadline of one request. Longer than the nodes'
    /// `write_timeout_ms`, so cairn usually decides (504) before we give up.
    pub request_timeout: Duration,
    /// Most operations per client (a bound beside the run's duration).
    pub max_ops_per_client: u64,
    /// Fraction of reads.
    pub read_fraction: f64,
    /// Record a 503 as `info` instead of `fail`: for runs that must not
    /// trip over the known 503-after-send bug (docs/CHAOS.md, "Findings").
    pub lenient_503: bool,
    /// Fraction of writes that are **inserts** instead: a new parameter
    /// `jepsen.i.<value>` declared with a value no other write uses. Each
    /// acknowledged insert must be in every final state (a register only
    /// shows its last write; an insert set shows every one). 0: none (and
    /// the client's random choices are those of runs before inserts).
    pub insert_fraction: f64,
    /// Fraction of writes that are **large**: a mission plan encoding to
    /// just under the default entry limit (see the module docs). 0: none
    /// (and the random choices are those of runs before it).
    pub large_fraction: f64,
    /// Fraction of writes that are **refused**: a task the state machine
    /// refuses (a 1,000,000-character kind). 0: none.
    pub refused_fraction: f64,
}

/// Which log-hygiene write an [`HygieneOp`] was.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HygieneKind {
    /// A plan just under the entry limit, expected to be accepted.
    Large,
    /// A task the state machine refuses, expected 400.
    Refused,
}

/// One log-hygiene write and its answer.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct HygieneOp {
    /// Which kind.
    pub kind: HygieneKind,
    /// The node it was sent to.
    pub node: u64,
    /// The HTTP status, if one came.
    pub status: Option<u16>,
    /// What the answer means (as for register writes).
    pub outcome: Outcome,
    /// The error, if any.
    pub error: Option<String>,
}

/// Every log-hygiene write of a run, shared by the clients.
#[derive(Clone, Default)]
pub struct HygieneLog(std::sync::Arc<std::sync::Mutex<Vec<HygieneOp>>>);

impl HygieneLog {
    fn push(&self, op: HygieneOp) {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).push(op);
    }

    /// A copy of every such write so far.
    pub fn ops(&self) -> Vec<HygieneOp> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

/// Length of the refused task kind: the request.
pub const REFUSED_KIND_LEN: usize = 1_000_000;

/// The body of a large write and its command's encoded size: a plan of
/// search areas (64 integer vertices each, short in JSON) with as many
/// goals as fit in 99 % of the default `log.max_entry_bytes`, computed
/// from the state machine's own types and encoding (so it stays under the
/// limit if they change). Built once.
pub fn large_plan() -> &'static (Value, usize) {
    static PLAN: std::sync::OnceLock<(Value, usize)> = std::sync::OnceLock::new();
    PLAN.get_or_init(|| {
        let limit = cairn_raft::LogLimits::default().max_entry_bytes;
        let boundary: Vec<Value> = (0..16)
            .map(|i| json!([i, 0]))
            .chain((0..16).map(|i| json!([16, i])))
            .chain((0..16).map(|i| json!([16 - i, 16])))
            .chain((0..16).map(|i| json!([0, 16 - i])))
            .collect();
        let goal = json!({
            "kind": {"SearchArea": {"boundary": boundary, "spacing_m": 1}},
            "tolerance": {"position_m": 0.5, "heading_rad": null},
        });
        let encoded = |goals: usize| -> usize {
            let goals: Vec<cairn_state::GoalSpec> =
                serde_json::from_value(Value::Array(vec![goal.clone(); goals])).unwrap_or_default();
            let command = cairn_state::Command::ReplacePlan {
                expected_version: None,
                name: "jepsen-large".into(),
                frame_id: "map".into(),
                goals,
            };
            postcard::to_stdvec(&command).map_or(usize::MAX, |b| b.len())
        };
        let (one, two) = (encoded(1), encoded(2));
        let per_goal = two.saturating_sub(one).max(1);
        let fit = (limit / 100 * 99).saturating_sub(one) / per_goal + 1;
        let goals = fit.min(cairn_state::limits::MAX_GOALS);
        let body = json!({
            "name": "jepsen-large",
            "frame_id": "map",
            "goals": vec![goal.clone(); goals],
        });
        (body, encoded(goals))
    })
}

/// An insert: a parameter declared once, never changed.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct InsertOp {
    /// Process (as for register ops).
    pub process: u32,
    /// The node it was sent to.
    pub node: u64,
    /// The parameter's name, `jepsen.i.<value>`.
    pub name: String,
    /// Its value.
    pub value: i64,
    /// What the answer said.
    pub outcome: Outcome,
    /// Since the run started.
    pub invoke_ns: u64,
    /// Since the run started.
    pub complete_ns: u64,
    /// The error, if any.
    pub error: Option<String>,
}

/// Every insert of a run, shared by the clients.
#[derive(Clone, Default)]
pub struct InsertLog(std::sync::Arc<std::sync::Mutex<Vec<InsertOp>>>);

impl InsertLog {
    fn push(&self, op: InsertOp) {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).push(op);
    }

    /// A copy of every insert so far.
    pub fn ops(&self) -> Vec<InsertOp> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

/// Prefix of the inserts' parameter names.
pub const INSERT_PREFIX: &str = "jepsen.i.";

/// The name of register `i`.
pub fn key_name(i: usize) -> String {
    format!("jepsen.r{i}")
}

/// Declare every register with [`INITIAL_VALUE`], trying each node in turn
/// (bounded attempts: the cluster was just elected and may still settle).
pub async fn declare(cluster: &Cluster, keys: usize) -> Result<(), Error> {
    for i in 0..keys {
        let body = json!({
            "name": key_name(i),
            "description": "jepsen register",
            "kind": {"Int": {"min": 0, "max": 1i64 << 62}},
            "value": {"Int": INITIAL_VALUE},
        });
        let mut last = String::new();
        let mut done = false;
        // 20 attempts × 250 ms: longer than an election on a loaded machine.
        for attempt in 0..20 {
            let node = cluster.ids()[attempt % cluster.ids().len()];
            match cluster
                .admin(node, reqwest::Method::POST, "/v1/params", Some(body.clone()))
                .await
            {
                Ok(_) => {
                    done = true;
                    break;
                }
                // A retry of a declaration that did apply.
                Err(e) if e.contains("already") => {
                    done = true;
                    break;
                }
                Err(e) => last = e,
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        if !done {
            return Err(Error::Setup {
                reason: format!("declaring {}: {last}", key_name(i)),
            });
        }
    }
    Ok(())
}

/// What one request produced.
#[derive(Debug)]
pub(crate) struct Answer {
    pub(crate) outcome: Outcome,
    pub(crate) value: Option<i64>,
    version: Option<u64>,
    pub(crate) error: Option<String>,
}

fn transport_error(e: &reqwest::Error) -> Answer {
    let outcome = if e.is_connect() { Outcome::Fail } else { Outcome::Info };
    let what = if e.is_timeout() { "client timeout" } else { "transport" };
    Answer {
        outcome,
        value: None,
        version: None,
        error: Some(format!("{what}: {e}")),
    }
}

pub(crate) fn error_outcome(status: u16, lenient_503: bool) -> Outcome {
    match status {
        503 if lenient_503 => Outcome::Info,
        400 | 404 | 409 | 503 => Outcome::Fail,
        _ => Outcome::Info,
    }
}

pub(crate) fn error_text(status: u16, body: &str) -> String {
    let v: Value = serde_json::from_str(body).unwrap_or(Value::Null);
    match (v["code"].as_str(), v["message"].as_str()) {
        (Some(code), Some(msg)) => format!("{status} {code}: {msg}"),
        _ => format!("{status}: {}", body.chars().take(200).collect::<String>()),
    }
}

/// The first `version` field anywhere in a response.
fn find_version(v: &Value) -> Option<u64> {
    match v {
        Value::Object(m) => m
            .get("version")
            .and_then(Value::as_u64)
            .or_else(|| m.values().find_map(find_version)),
        Value::Array(a) => a.iter().find_map(find_version),
        _ => None,
    }
}

pub(crate) async fn send(req: reqwest::RequestBuilder, timeout: Duration) -> Result<(u16, String), Answer> {
    let resp = req.timeout(timeout).send().await.map_err(|e| transport_error(&e))?;
    let status = resp.status().as_u16();
    // A body cut off mid-way: the request was processed, its outcome unknown.
    let text = resp.text().await.map_err(|e| Answer {
        outcome: Outcome::Info,
        value: None,
        version: None,
        error: Some(format!("reading the response: {e}")),
    })?;
    Ok((status, text))
}

async fn write(
    http: &reqwest::Client,
    api: &str,
    key: &str,
    value: i64,
    timeout: Duration,
    lenient_503: bool,
) -> Answer {
    let req = http
        .put(format!("http://{api}/v1/params/{key}"))
        .json(&json!({"value": {"Int": value}}));
    match send(req, timeout).await {
        // The value must stay on the record whatever happened: an
        // indeterminate write that a later read observes has to be found.
        Err(a) => Answer {
            value: Some(value),
            ..a
        },
        Ok((status, text)) if (200..300).contains(&status) => {
            let v: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
            Answer {
                outcome: Outcome::Ok,
                value: Some(value),
                version: find_version(&v),
                error: None,
            }
        }
        Ok((status, text)) => Answer {
            outcome: error_outcome(status, lenient_503),
            value: Some(value),
            version: None,
            error: Some(error_text(status, &text)),
        },
    }
}

async fn insert(
    http: &reqwest::Client,
    api: &str,
    name: &str,
    value: i64,
    timeout: Duration,
    lenient_503: bool,
) -> Answer {
    let body = json!({
        "name": name,
        "description": "jepsen insert",
        "kind": {"Int": {"min": 0, "max": 1i64 << 62}},
        "value": {"Int": value},
    });
    let req = http.post(format!("http://{api}/v1/params")).json(&body);
    match send(req, timeout).await {
        Err(a) => a,
        Ok((status, _)) if (200..300).contains(&status) => Answer {
            outcome: Outcome::Ok,
            value: Some(value),
            version: None,
            error: None,
        },
        Ok((status, text)) => Answer {
            outcome: error_outcome(status, lenient_503),
            value: Some(value),
            version: None,
            error: Some(error_text(status, &text)),
        },
    }
}

/// A log-hygiene write: `Large` or `Refused` (see the module docs).
async fn hygiene(
    http: &reqwest::Client,
    api: &str,
    kind: HygieneKind,
    timeout: Duration,
    lenient_503: bool,
) -> HygieneOp {
    let req = match kind {
        HygieneKind::Large => http.put(format!("http://{api}/v1/mission/plan")).json(&large_plan().0),
        HygieneKind::Refused => http
            .post(format!("http://{api}/v1/tasks"))
            .json(&json!({"kind": "x".repeat(REFUSED_KIND_LEN)})),
    };
    match send(req, timeout).await {
        Err(a) => HygieneOp {
            kind,
            node: 0,
            status: None,
            outcome: a.outcome,
            error: a.error,
        },
        Ok((status, text)) => HygieneOp {
            kind,
            node: 0,
            status: Some(status),
            outcome: if (200..300).contains(&status) {
                Outcome::Ok
            } else {
                error_outcome(status, lenient_503)
            },
            error: (!(200..300).contains(&status)).then(|| error_text(status, &text)),
        },
    }
}

async fn read(http: &reqwest::Client, api: &str, key: &str, timeout: Duration) -> Answer {
    let req = http.get(format!("http://{api}/v1/params/{key}"));
    match send(req, timeout).await {
        Err(a) => a,
        Ok((status, text)) if (200..300).contains(&status) => {
            let v: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
            match v["value"]["Int"].as_i64() {
                Some(x) => Answer {
                    outcome: Outcome::Ok,
                    value: Some(x),
                    version: v["version"].as_u64(),
                    error: None,
                },
                None => Answer {
                    outcome: Outcome::Info,
                    value: None,
                    version: None,
                    error: Some(format!(
                        "unexpected read body: {}",
                        text.chars().take(200).collect::<String>()
                    )),
                },
            }
        }
        Ok((status, text)) => Answer {
            outcome: error_outcome(status, false),
            value: None,
            version: None,
            error: Some(error_text(status, &text)),
        },
    }
}

/// One client: a sequential process issuing operations against `node`
/// until `deadline` or `spec.max_ops_per_client`. After an indeterminate
/// operation it continues under a new process id, as Jepsen does: the old
/// process may still have that operation in flight.
#[allow(clippy::too_many_arguments)]
pub async fn client(
    slot: u32,
    slots: u32,
    node: u64,
    api: String,
    spec: WorkloadSpec,
    rec: Recorder,
    seed: u64,
    deadline: Instant,
    http: reqwest::Client,
    inserts: InsertLog,
    hygiene_log: HygieneLog,
) {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut process = slot;
    let interval = Duration::from_secs_f64(1.0 / spec.rate_per_client.max(0.001));
    let mut next_at = Instant::now();
    let mut seq: i64 = 0;
    for _ in 0..spec.max_ops_per_client {
        next_at = next_at.max(Instant::now());
        if next_at >= deadline {
            break;
        }
        tokio::time::sleep_until(next_at).await;
        next_at += interval;
        let key = key_name(rng.random_range(0..spec.keys.max(1)));
        let is_read = rng.random_bool(spec.read_fraction.clamp(0.0, 1.0));
        if !is_read && spec.insert_fraction > 0.0 && rng.random_bool(spec.insert_fraction.min(1.0)) {
            seq += 1;
            let value = (i64::from(slot) + 1) * VALUES_PER_CLIENT + seq;
            let name = format!("{INSERT_PREFIX}{value}");
            let invoke_ns = rec.now_ns();
            let a = insert(&http, &api, &name, value, spec.request_timeout, spec.lenient_503).await;
            let indeterminate = a.outcome == Outcome::Info;
            inserts.push(InsertOp {
                process,
                node,
                name,
                value,
                outcome: a.outcome,
                invoke_ns,
                complete_ns: rec.now_ns(),
                error: a.error,
            });
            if indeterminate {
                process += slots;
            }
            continue;
        }
        // Drawn only when asked for, so other runs replay as before.
        let hygiene_kind = if is_read {
            None
        } else if spec.large_fraction > 0.0 && rng.random_bool(spec.large_fraction.min(1.0)) {
            Some(HygieneKind::Large)
        } else if spec.refused_fraction > 0.0 && rng.random_bool(spec.refused_fraction.min(1.0)) {
            Some(HygieneKind::Refused)
        } else {
            None
        };
        if let Some(kind) = hygiene_kind {
            let op = hygiene(&http, &api, kind, spec.request_timeout, spec.lenient_503).await;
            hygiene_log.push(HygieneOp { node, ..op });
            continue;
        }
        let invoke_ns = rec.now_ns();
        let (kind, answer) = if is_read {
            (OpKind::Read, read(&http, &api, &key, spec.request_timeout).await)
        } else {
            seq += 1;
            let value = (i64::from(slot) + 1) * VALUES_PER_CLIENT + seq;
            (
                OpKind::Write,
                write(&http, &api, &key, value, spec.request_timeout, spec.lenient_503).await,
            )
        };
        let indeterminate = answer.outcome == Outcome::Info;
        rec.op(Op {
            index: 0,
            process,
            node,
            kind,
            key,
            value: answer.value,
            version: answer.version,
            invoke_ns,
            complete_ns: rec.now_ns(),
            outcome: answer.outcome,
            error: answer.error,
            final_read: false,
        });
        if indeterminate {
            process += slots;
        }
    }
}

/// After healing: a linearizable read of every register from every running
/// node, recorded as final reads. Each read is retried (bounded) until it
/// succeeds; the ones that never do leave the register without a final
/// read, which the checker reports.
pub async fn final_reads(cluster: &Cluster, rec: &Recorder, keys: usize, timeout: Duration) {
    for node in cluster.ids() {
        let api = cluster.node(node).api_addr.clone();
        for i in 0..keys {
            let key = key_name(i);
            // 10 tries, 500 ms apart: the cluster has already agreed on a
            // leader, so a read failing for 5 s more is a liveness bug.
            for _ in 0..10 {
                let invoke_ns = rec.now_ns();
                let a = read(cluster.http(), &api, &key, timeout).await;
                let ok = a.outcome == Outcome::Ok;
                rec.op(Op {
                    index: 0,
                    process: FINAL_READ_PROCESS + node as u32,
                    node,
                    kind: OpKind::Read,
                    key: key.clone(),
                    value: a.value,
                    version: a.version,
                    invoke_ns,
                    complete_ns: rec.now_ns(),
                    outcome: a.outcome,
                    error: a.error,
                    final_read: true,
                });
                if ok {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
    }
}

/// Every insert parameter (`jepsen.i.*`) and its value in one node's
/// state: `consistency` `linearizable` (through the leader) or `stale`
/// (the node's own applied state). `None` if the node did not answer.
pub async fn inserted(
    cluster: &Cluster,
    node: u64,
    consistency: &str,
) -> Option<std::collections::BTreeMap<String, i64>> {
    let api = cluster.node(node).api_addr.clone();
    let url = format!("http://{api}/v1/params?consistency={consistency}");
    let r = cluster
        .http()
        .get(url)
        .timeout(Duration::from_secs(4))
        .send()
        .await
        .ok()?;
    if !r.status().is_success() {
        return None;
    }
    let v: Value = r.json().await.ok()?;
    Some(
        v.as_array()?
            .iter()
            .filter_map(|p| {
                let name = p["name"].as_str()?;
                name.starts_with(INSERT_PREFIX)
                    .then(|| Some((name.to_string(), p["value"]["Int"].as_i64()?)))
                    .flatten()
            })
            .collect(),
    )
}

/// After healing: a linearizable list of the inserts from every node
/// (10 tries, 500 ms apart, as the final reads).
pub async fn final_inserted(
    cluster: &Cluster,
) -> std::collections::BTreeMap<u64, std::collections::BTreeMap<String, i64>> {
    let mut out = std::collections::BTreeMap::new();
    for node in cluster.ids() {
        for _ in 0..10 {
            if let Some(m) = inserted(cluster, node, "linearizable").await {
                out.insert(node, m);
                break;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
    out
}

/// Each node's locally applied value of every register (stale reads).
pub async fn local_values(cluster: &Cluster, node: u64, keys: usize) -> Option<Vec<(String, Option<i64>)>> {
    let api = cluster.node(node).api_addr.clone();
    let mut out = Vec::new();
    for i in 0..keys {
        let key = key_name(i);
        let url = format!("http://{api}/v1/params/{key}?consistency=stale");
        let r = cluster
            .http()
            .get(url)
            .timeout(Duration::from_secs(2))
            .send()
            .await
            .ok()?;
        let v: Value = r.json().await.ok()?;
        out.push((key, v["value"]["Int"].as_i64()));
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outcomes_follow_the_contract() {
        assert_eq!(error_outcome(503, false), Outcome::Fail);
        assert_eq!(error_outcome(503, true), Outcome::Info);
        assert_eq!(error_outcome(409, false), Outcome::Fail);
        assert_eq!(error_outcome(504, false), Outcome::Info);
        assert_eq!(error_outcome(500, false), Outcome::Info);
        assert_eq!(error_outcome(502, false), Outcome::Info);
    }

    #[test]
    fn the_large_plan_is_valid_and_just_under_the_entry_limit() {
        let (body, bytes) = large_plan();
        let limit = cairn_raft::LogLimits::default().max_entry_bytes;
        assert!(
            *bytes <= limit && *bytes > limit / 100 * 95,
            "{bytes} bytes for a limit of {limit}"
        );
        let goals: Vec<cairn_state::GoalSpec> = serde_json::from_value(body["goals"].clone()).unwrap();
        let command = cairn_state::Command::ReplacePlan {
            expected_version: None,
            name: "jepsen-large".into(),
            frame_id: "map".into(),
            goals,
        };
        assert_eq!(postcard::to_stdvec(&command).unwrap().len(), *bytes);
        let ctx = cairn_state::ApplyCtx::default();
        cairn_state::check(&cairn_state::Mission::default(), &command, &ctx).expect("the state machine accepts it");
        let json = serde_json::to_vec(body).unwrap().len();
        assert!(json < limit, "its JSON ({json} bytes) fits the API's body limit");
    }

    #[test]
    fn versions_are_found_wherever_the_response_puts_them() {
        let v = json!({"index": 9, "response": {"ParamChanged": {"name": "x", "version": 7}}});
        assert_eq!(find_version(&v), Some(7));
        assert_eq!(find_version(&json!({"index": 9})), None);
    }
}
