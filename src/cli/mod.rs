//! CLI commands beyond node/cluster/member/status/param: tasks, mission,
//! sensors, policies, watch, certificates; and the client settings.

pub mod ops;

use std::path::Path;
use std::path::PathBuf;

use anyhow::Context;
use cairn::api::AppendGoalsRequest;
use cairn::api::ReplacePlanRequest;
use cairn::api::SubmitTaskRequest;
use cairn::client::Client;
use clap::Args;
use clap::Subcommand;
use reqwest::Method;
use serde::Deserialize;
use serde_json::json;
use serde_json::Value;

pub mod sim;

const NONE: Option<&()> = None;

// ---------------------------------------------------------------------------
// Exit codes

/// `cairn --help`'s list of exit codes (also in docs/API.md, "CLI").
pub const EXIT_CODES_HELP: &str = "\
Exit codes:
  0  success
  1  failure not listed below (bad file, unexpected answer, ...)
  2  usage error; `status`: nodes answered but none leads with a quorum;
     `check consistency`: replicas diverged
  3  unavailable: no endpoint reachable, or none could serve the request
     (no leader, no quorum, cluster not initialised)
  4  refused by the cluster (a 4xx answer: invalid input, not found,
     conflict, unauthorised); nothing changed
  5  timeout: no answer in time, or a write's outcome is unknown";

/// Exit code 3: unavailable.
pub const EXIT_UNAVAILABLE: u8 = 3;
/// Exit code 4: refused by the cluster.
pub const EXIT_REFUSED: u8 = 4;
/// Exit code 5: timeout, outcome unknown.
pub const EXIT_UNKNOWN: u8 = 5;

/// A failure the CLI itself words, with its exit code.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct Failed {
    /// The exit code.
    pub code: u8,
    /// What to print.
    pub message: String,
}

impl Failed {
    /// Exit 3.
    pub fn unavailable(message: impl Into<String>) -> Self {
        Self {
            code: EXIT_UNAVAILABLE,
            message: message.into(),
        }
    }

    /// Exit 5.
    pub fn unknown(message: impl Into<String>) -> Self {
        Self {
            code: EXIT_UNKNOWN,
            message: message.into(),
        }
    }

    /// With the exit code `e` has.
    pub fn like(e: &cairn::client::ClientError, message: impl Into<String>) -> Self {
        Self {
            code: client_exit_code(e),
            message: message.into(),
        }
    }
}

/// The exit code of a failed call.
pub fn client_exit_code(e: &cairn::client::ClientError) -> u8 {
    use cairn::client::ClientError as E;
    use cairn::client::Unanswered;
    match e {
        E::Unreachable {
            why: Unanswered::Down | Unanswered::Unavailable,
            ..
        } => EXIT_UNAVAILABLE,
        E::Unreachable {
            why: Unanswered::Unknown,
            ..
        } => EXIT_UNKNOWN,
        E::Api { status: 503, .. } => EXIT_UNAVAILABLE,
        E::Api { status: 504, .. } => EXIT_UNKNOWN,
        E::Api { status: 400..=499, .. } => EXIT_REFUSED,
        _ => 1,
    }
}

/// The exit code of a failed command: the first typed cause in its chain.
pub fn exit_code(e: &anyhow::Error) -> u8 {
    for cause in e.chain() {
        if let Some(f) = cause.downcast_ref::<Failed>() {
            return f.code;
        }
        if let Some(c) = cause.downcast_ref::<cairn::client::ClientError>() {
            return client_exit_code(c);
        }
    }
    1
}

// ---------------------------------------------------------------------------
// Client settings: flag > env (both via clap) > client config file > default

/// The client config file (TOML).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ClientFile {
    endpoints: Option<Vec<String>>,
    token: Option<String>,
    token_file: Option<PathBuf>,
    ca_cert: Option<PathBuf>,
}

/// Where the CLI talks to, and how.
pub struct ClientSettings {
    pub endpoints: Vec<String>,
    pub token: Option<String>,
    pub ca_cert: Option<PathBuf>,
}

impl ClientSettings {
    pub fn resolve(
        endpoints: Option<Vec<String>>,
        token: Option<String>,
        ca_cert: Option<PathBuf>,
        file: Option<PathBuf>,
    ) -> anyhow::Result<Self> {
        let default_file = std::env::var_os("XDG_CONFIG_HOME")
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config")))
            .map(|d| d.join("cairn").join("client.toml"));
        let file = match file {
            Some(path) => Some(read_client_file(&path)?),
            None => match default_file.filter(|p| p.exists()) {
                Some(path) => Some(read_client_file(&path)?),
                None => None,
            },
        }
        .unwrap_or_default();
        let file_token = match (&file.token, &file.token_file) {
            (Some(t), _) => Some(t.clone()),
            (None, Some(p)) => Some(
                std::fs::read_to_string(p)
                    .with_context(|| format!("reading token_file {}", p.display()))?
                    .trim()
                    .to_string(),
            ),
            (None, None) => None,
        };
        let endpoints = endpoints
            .filter(|e| !e.is_empty())
            .or(file.endpoints)
            .unwrap_or_else(|| vec!["127.0.0.1:8001".into()]);
        Ok(Self {
            endpoints,
            token: token.or(file_token),
            ca_cert: ca_cert.or(file.ca_cert),
        })
    }
}

fn read_client_file(path: &Path) -> anyhow::Result<ClientFile> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading client config {}", path.display()))?;
    toml::from_str(&text).with_context(|| format!("client config {}", path.display()))
}

// ---------------------------------------------------------------------------
// Output helpers

fn print_json(v: &impl serde::Serialize) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(v)?);
    Ok(())
}

/// Print rows as a left-aligned table with a header.
fn table(headers: &[&str], rows: &[Vec<String>]) {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.len()).collect();
    for r in rows {
        for (w, c) in widths.iter_mut().zip(r) {
            *w = (*w).max(c.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let s: Vec<String> = cells.iter().zip(&widths).map(|(c, w)| format!("{c:<w$}")).collect();
        println!("{}", s.join("  ").trim_end());
    };
    line(headers.to_vec());
    for r in rows {
        line(r.iter().map(String::as_str).collect());
    }
}

fn s(v: &Value) -> String {
    match v {
        Value::Null => "-".into(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// An externally tagged enum (`{"Variant": {...}}` or `"Variant"`) by name.
fn variant(v: &Value) -> String {
    match v {
        Value::Object(m) => m.keys().next().cloned().unwrap_or_default(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// A Rust variant name as people write it: `GpsOnly` is `gps-only`
/// (as `cairn policy set` takes it), `Failed` is `failed`.
pub(crate) fn kebab(name: &str) -> String {
    let mut out = String::with_capacity(name.len() + 2);
    for (i, ch) in name.chars().enumerate() {
        if ch.is_uppercase() {
            if i > 0 {
                out.push('-');
            }
            out.extend(ch.to_lowercase());
        } else {
            out.push(ch);
        }
    }
    out
}

/// A time in ms since the Unix epoch as RFC 3339 (UTC, whole seconds) and
/// how long ago it was: `2026-12-07T12:57:38Z (12s ago)`.
pub(crate) fn when(ms: u64) -> String {
    let Ok(t) = time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000) else {
        return format!("{ms} ms since the epoch");
    };
    let stamp = format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    );
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(ms);
    let age = if now_ms >= ms {
        format!("{} ago", span((now_ms - ms) / 1000))
    } else {
        format!("in {}", span((ms - now_ms) / 1000))
    };
    format!("{stamp} ({age})")
}

/// Seconds as the two largest units: `12s`, `5m 3s`, `2h 10m`, `3d 4h`.
fn span(secs: u64) -> String {
    let (d, h, m, s) = (secs / 86_400, secs / 3600 % 24, secs / 60 % 60, secs % 60);
    if d > 0 {
        format!("{d}d {h}h")
    } else if h > 0 {
        format!("{h}h {m}m")
    } else if m > 0 {
        format!("{m}m {s}s")
    } else {
        format!("{s}s")
    }
}

fn stale_q(stale: bool) -> &'static str {
    if stale {
        "?consistency=stale"
    } else {
        ""
    }
}

/// A write's answer: `index` and the state machine's response.
pub(crate) fn print_write(out_json: bool, what: &str, r: Option<Value>) -> anyhow::Result<()> {
    let r = r.unwrap_or_default();
    if out_json {
        return print_json(&r);
    }
    println!("{what}: committed at index {}", s(&r["index"]));
    Ok(())
}

// ---------------------------------------------------------------------------
// Nodes

pub async fn node_list(client: &Client, out_json: bool, stale: bool) -> anyhow::Result<()> {
    let r: Value = client
        .call(Method::GET, &format!("/v1/nodes{}", stale_q(stale)), NONE)
        .await?
        .unwrap_or_default();
    if out_json {
        return print_json(&r);
    }
    let rows: Vec<Vec<String>> = r
        .as_array()
        .into_iter()
        .flatten()
        .map(|n| {
            let caps: Vec<String> = n["capabilities"].as_array().into_iter().flatten().map(s).collect();
            vec![
                s(&n["id"]),
                kebab(&s(&n["liveness"])),
                format!(
                    "{}/{}",
                    s(&n["load"]["cpu_millicores"]),
                    s(&n["budget"]["cpu_millicores"])
                ),
                format!("{}/{}", s(&n["load"]["memory_mib"]), s(&n["budget"]["memory_mib"])),
                caps.join(","),
            ]
        })
        .collect();
    table(
        &[
            "ID",
            "LIVENESS",
            "CPU (m) USED/BUDGET",
            "MEM (MiB) USED/BUDGET",
            "CAPABILITIES",
        ],
        &rows,
    );
    Ok(())
}

pub async fn node_get(client: &Client, id: u64, stale: bool) -> anyhow::Result<()> {
    let r: Value = client
        .call(Method::GET, &format!("/v1/nodes/{id}{}", stale_q(stale)), NONE)
        .await?
        .unwrap_or_default();
    print_json(&r)
}

pub async fn node_update(
    client: &Client,
    out_json: bool,
    id: u64,
    req: &cairn::api::UpdateNodeRequest,
) -> anyhow::Result<()> {
    // Another node's entry is changed on the leader (or on that node):
    // docs/API.md, "Trust model: the peer channel".
    let r: Option<Value> = client
        .leader_first()
        .await
        .call(Method::PATCH, &format!("/v1/nodes/{id}"), Some(req))
        .await?;
    if out_json {
        return print_json(&r.unwrap_or_default());
    }
    let n: Value = client
        .call(Method::GET, &format!("/v1/nodes/{id}"), NONE)
        .await?
        .unwrap_or_default();
    let caps: Vec<String> = n["capabilities"].as_array().into_iter().flatten().map(s).collect();
    println!(
        "node {id} updated (committed at index {}): capabilities [{}], budget {} millicores and {} MiB",
        s(&r.unwrap_or_default()["index"]),
        caps.join(", "),
        s(&n["budget"]["cpu_millicores"]),
        s(&n["budget"]["memory_mib"])
    );
    Ok(())
}

pub async fn node_remove(client: &Client, out_json: bool, id: u64) -> anyhow::Result<()> {
    let r: Option<Value> = client.call(Method::DELETE, &format!("/v1/nodes/{id}"), NONE).await?;
    if out_json {
        return print_json(&r.unwrap_or_default());
    }
    println!(
        "node {id} removed from the registry (committed at index {})",
        s(&r.unwrap_or_default()["index"])
    );
    Ok(())
}

// ---------------------------------------------------------------------------
// Tasks

#[derive(Subcommand)]
pub enum TaskCmd {
    /// Submit a task of KIND (or a full JSON spec with --file).
    Submit {
        /// What to do, e.g. `navigate`.
        kind: Option<String>,
        /// A capability the assignee needs (repeat).
        #[arg(long = "capability")]
        capabilities: Vec<String>,
        /// CPU it uses, millicores.
        #[arg(long, default_value_t = 0)]
        cpu_millicores: u64,
        /// Memory it uses, MiB.
        #[arg(long, default_value_t = 0)]
        memory_mib: u64,
        /// Higher runs first.
        #[arg(long, default_value_t = 0)]
        priority: u8,
        /// Advisory deadline, ms since the Unix epoch.
        #[arg(long)]
        deadline_ms: Option<u64>,
        /// Attempts in all (with retry backoff between them).
        #[arg(long)]
        max_attempts: Option<u32>,
        /// The plan goal it serves.
        #[arg(long)]
        goal: Option<u64>,
        /// A JSON task spec (the POST /v1/tasks body) instead of flags.
        #[arg(long, conflicts_with = "kind")]
        file: Option<PathBuf>,
    },
    /// List tasks.
    List {
        /// Only tasks in this state (pending, assigned, running, succeeded, failed, cancelled).
        #[arg(long)]
        state: Option<String>,
        /// Only tasks leased to this node.
        #[arg(long)]
        node: Option<u64>,
        /// At most this many.
        #[arg(long)]
        limit: Option<usize>,
        /// Read this node's state without a linearizable check.
        #[arg(long)]
        stale: bool,
    },
    /// Show one task.
    Get {
        /// Task id.
        id: u64,
        /// Read this node's state without a linearizable check.
        #[arg(long)]
        stale: bool,
    },
    /// Cancel a task (at once if pending, by request if running).
    Cancel {
        /// Task id.
        id: u64,
    },
}

/// A task's `WHY` in `task list`: why a pending one fits no node, why a
/// failed one failed (its last error), else nothing.
fn why(t: &Value) -> String {
    let text = match t["state"].as_str() {
        Some("Pending") => t["unplaceable"].as_str().or_else(|| t["last_error"].as_str()),
        Some("Failed") => t["last_error"].as_str(),
        _ => None,
    };
    text.unwrap_or_default().to_string()
}

pub async fn task(client: &Client, out_json: bool, cmd: TaskCmd) -> anyhow::Result<()> {
    match cmd {
        TaskCmd::Submit {
            kind,
            capabilities,
            cpu_millicores,
            memory_mib,
            priority,
            deadline_ms,
            max_attempts,
            goal,
            file,
        } => {
            let body: Value = match file {
                Some(path) => {
                    let text = std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
                    let spec: SubmitTaskRequest = serde_json::from_str(&text)
                        .with_context(|| format!("{} is not a task spec", path.display()))?;
                    serde_json::to_value(spec)?
                }
                None => {
                    let kind = kind.context("give a task KIND or --file")?;
                    let mut b = json!({
                        "kind": kind,
                        "required_capabilities": capabilities,
                        "resources": {"cpu_millicores": cpu_millicores, "memory_mib": memory_mib},
                        "priority": priority,
                        "deadline_ms": deadline_ms,
                        "goal": goal,
                    });
                    if let Some(n) = max_attempts {
                        let d = cairn::state::RetryPolicy::default();
                        b["retry"] = json!({"max_attempts": n, "backoff_ms_base": d.backoff_ms_base, "backoff_ms_max": d.backoff_ms_max});
                    }
                    b
                }
            };
            let r: Value = client
                .call(Method::POST, "/v1/tasks", Some(&body))
                .await?
                .unwrap_or_default();
            if out_json {
                return print_json(&r);
            }
            println!(
                "task {} submitted (committed at index {})",
                s(&r["response"]["TaskCreated"]["task_id"]),
                s(&r["index"])
            );
        }
        TaskCmd::List {
            state,
            node,
            limit,
            stale,
        } => {
            let mut q = Vec::new();
            if let Some(st) = state {
                q.push(format!("state={st}"));
            }
            if let Some(n) = node {
                q.push(format!("node={n}"));
            }
            if let Some(l) = limit {
                q.push(format!("limit={l}"));
            }
            if stale {
                q.push("consistency=stale".into());
            }
            let path = if q.is_empty() {
                "/v1/tasks".to_string()
            } else {
                format!("/v1/tasks?{}", q.join("&"))
            };
            let r: Value = client.call(Method::GET, &path, NONE).await?.unwrap_or_default();
            if out_json {
                return print_json(&r);
            }
            let rows: Vec<Vec<String>> = r
                .as_array()
                .into_iter()
                .flatten()
                .map(|t| {
                    vec![
                        s(&t["id"]),
                        s(&t["spec"]["kind"]),
                        kebab(&s(&t["state"])),
                        s(&t["lease"]["node_id"]),
                        format!("{}%", s(&t["progress_percent"])),
                        s(&t["spec"]["priority"]),
                        s(&t["attempts"]),
                        if t["cancel_requested"] == Value::Bool(true) {
                            "yes".into()
                        } else {
                            "".into()
                        },
                        why(t),
                    ]
                })
                .collect();
            table(
                &[
                    "ID",
                    "KIND",
                    "STATE",
                    "NODE",
                    "PROGRESS",
                    "PRIO",
                    "FAILED",
                    "CANCEL REQ",
                    "WHY",
                ],
                &rows,
            );
        }
        TaskCmd::Get { id, stale } => {
            let r: Value = client
                .call(Method::GET, &format!("/v1/tasks/{id}{}", stale_q(stale)), NONE)
                .await?
                .unwrap_or_default();
            if out_json {
                return print_json(&r);
            }
            table(
                &["FIELD", "VALUE"],
                &[
                    vec!["id".into(), s(&r["id"])],
                    vec!["kind".into(), s(&r["spec"]["kind"])],
                    vec!["state".into(), kebab(&s(&r["state"]))],
                    vec!["node".into(), s(&r["lease"]["node_id"])],
                    vec!["epoch".into(), s(&r["lease"]["epoch"])],
                    vec!["progress".into(), format!("{}%", s(&r["progress_percent"]))],
                    vec!["feedback".into(), s(&r["feedback"])],
                    vec!["failed attempts".into(), s(&r["attempts"])],
                    vec!["last error".into(), s(&r["last_error"])],
                    vec!["unplaceable".into(), s(&r["unplaceable"])],
                    vec!["cancel requested".into(), s(&r["cancel_requested"])],
                    vec!["capabilities".into(), s(&r["spec"]["required_capabilities"])],
                    vec!["resources".into(), s(&r["spec"]["resources"])],
                ],
            );
        }
        TaskCmd::Cancel { id } => {
            let r: Option<Value> = client
                .call(Method::POST, &format!("/v1/tasks/{id}/cancel"), NONE)
                .await?;
            if out_json {
                return print_json(&r.unwrap_or_default());
            }
            let r = r.unwrap_or_default();
            println!(
                "task {id}: {} (committed at index {})",
                kebab(&s(&r["response"]["TaskChanged"]["state"])),
                s(&r["index"])
            );
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// Mission

#[derive(Subcommand)]
pub enum MissionCmd {
    /// Show the plan, its goals and the effective mode.
    Show {
        /// Read this node's state without a linearizable check.
        #[arg(long)]
        stale: bool,
    },
    /// Replace the plan with FILE (JSON or TOML: name, frame_id, goals).
    Load {
        /// The plan file.
        file: PathBuf,
        /// Refuse unless the plan is still at this version.
        #[arg(long)]
        expected_version: Option<u64>,
    },
    /// Append the goals of FILE to the plan.
    Append {
        /// A file with `goals` (a plan file works).
        file: PathBuf,
        /// Refuse unless the plan is still at this version.
        #[arg(long)]
        expected_version: Option<u64>,
    },
    /// Mark a pending goal skipped.
    Skip {
        /// Goal id.
        goal: u64,
    },
    /// Mark a pending goal reached.
    Complete {
        /// Goal id.
        goal: u64,
    },
    /// Stop the active plan.
    Abort {
        /// Why.
        #[arg(long, default_value = "aborted by the operator")]
        reason: String,
        /// Refuse unless the plan is still at this version.
        #[arg(long)]
        expected_version: Option<u64>,
    },
}

fn read_plan_file(path: &Path) -> anyhow::Result<Value> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    if path.extension().is_some_and(|e| e == "toml") {
        let v: toml::Value = toml::from_str(&text).with_context(|| format!("{} is not TOML", path.display()))?;
        Ok(serde_json::to_value(v)?)
    } else {
        serde_json::from_str(&text).with_context(|| format!("{} is not JSON", path.display()))
    }
}

pub async fn mission(client: &Client, out_json: bool, cmd: MissionCmd) -> anyhow::Result<()> {
    match cmd {
        MissionCmd::Show { stale } => {
            let r: Value = client
                .call(Method::GET, &format!("/v1/mission{}", stale_q(stale)), NONE)
                .await?
                .unwrap_or_default();
            if out_json {
                return print_json(&r);
            }
            let p = &r["plan"];
            let status = kebab(&variant(&p["status"]));
            println!(
                "plan {:?} (version {}, frame {}): {status}",
                s(&p["name"]),
                s(&p["version"]),
                s(&p["frame_id"])
            );
            let e = &r["effective"];
            println!(
                "effective mode: {} (speed factor {}, max {} m/s)",
                kebab(&variant(&e["mode"])),
                s(&e["speed_factor"]),
                s(&e["max_speed_mps"])
            );
            let rows: Vec<Vec<String>> = p["goals"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|g| {
                    vec![
                        s(&g["id"]),
                        variant(&g["kind"]),
                        kebab(&s(&g["status"])),
                        s(&g["tolerance"]["position_m"]),
                    ]
                })
                .collect();
            if !rows.is_empty() {
                println!();
                table(&["GOAL", "KIND", "STATUS", "TOLERANCE (m)"], &rows);
            }
        }
        MissionCmd::Load { file, expected_version } => {
            let v = read_plan_file(&file)?;
            let mut req: ReplacePlanRequest = serde_json::from_value(v)
                .with_context(|| format!("{} is not a plan (name, frame_id, goals)", file.display()))?;
            if expected_version.is_some() {
                req.expected_version = expected_version;
            }
            let r: Option<Value> = client.call(Method::PUT, "/v1/mission/plan", Some(&req)).await?;
            if out_json {
                return print_json(&r.unwrap_or_default());
            }
            let r = r.unwrap_or_default();
            println!(
                "plan {:?} loaded: version {}, {} goal(s) (committed at index {})",
                req.name,
                s(&r["response"]["PlanChanged"]["version"]),
                req.goals.len(),
                s(&r["index"])
            );
        }
        MissionCmd::Append { file, expected_version } => {
            let v = read_plan_file(&file)?;
            let goals = v.get("goals").cloned().context("the file has no `goals`")?;
            let req: AppendGoalsRequest =
                serde_json::from_value(json!({ "expected_version": expected_version, "goals": goals }))
                    .with_context(|| format!("{}: goals do not parse", file.display()))?;
            let r: Option<Value> = client.call(Method::POST, "/v1/mission/goals", Some(&req)).await?;
            print_write(out_json, &format!("{} goal(s) appended", req.goals.len()), r)?;
        }
        MissionCmd::Skip { goal } => {
            let r: Option<Value> = client
                .call(
                    Method::POST,
                    &format!("/v1/mission/goals/{goal}/skip"),
                    Some(&json!({})),
                )
                .await?;
            print_write(out_json, &format!("goal {goal} skipped"), r)?;
        }
        MissionCmd::Complete { goal } => {
            let r: Option<Value> = client
                .call(
                    Method::POST,
                    &format!("/v1/mission/goals/{goal}/complete"),
                    Some(&json!({})),
                )
                .await?;
            print_write(out_json, &format!("goal {goal} reached"), r)?;
        }
        MissionCmd::Abort {
            reason,
            expected_version,
        } => {
            let body = json!({ "reason": reason, "expected_version": expected_version });
            let r: Option<Value> = client.call(Method::POST, "/v1/mission/abort", Some(&body)).await?;
            print_write(out_json, "plan aborted", r)?;
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// Sensors and policies

#[derive(Subcommand)]
pub enum SensorCmd {
    /// Sensor health reports and the effective mode.
    List {
        /// Read this node's state without a linearizable check.
        #[arg(long)]
        stale: bool,
    },
    /// Record a sensor's health (ok, degraded, failed).
    Report {
        /// Sensor name, e.g. `imu`.
        sensor: String,
        /// ok | degraded | failed.
        health: String,
    },
}

fn health_name(h: &str) -> anyhow::Result<&'static str> {
    Ok(match h.to_ascii_lowercase().as_str() {
        "ok" => "Ok",
        "degraded" => "Degraded",
        "failed" => "Failed",
        _ => anyhow::bail!("health {h:?}: expected ok, degraded or failed"),
    })
}

pub async fn sensor(client: &Client, out_json: bool, cmd: SensorCmd) -> anyhow::Result<()> {
    match cmd {
        SensorCmd::List { stale } => {
            let r: Value = client
                .call(Method::GET, &format!("/v1/sensors{}", stale_q(stale)), NONE)
                .await?
                .unwrap_or_default();
            if out_json {
                return print_json(&r);
            }
            let rows: Vec<Vec<String>> = r["sensors"]
                .as_object()
                .into_iter()
                .flatten()
                .map(|(name, rep)| {
                    vec![
                        name.clone(),
                        kebab(&s(&rep["health"])),
                        rep["reported_at_ms"].as_u64().map(when).unwrap_or_else(|| "-".into()),
                    ]
                })
                .collect();
            table(&["SENSOR", "HEALTH", "REPORTED"], &rows);
            let e = &r["effective"];
            println!(
                "\neffective mode: {} (speed factor {}, max {} m/s)",
                kebab(&variant(&e["mode"])),
                s(&e["speed_factor"]),
                s(&e["max_speed_mps"])
            );
        }
        SensorCmd::Report { sensor, health } => {
            let body = json!({ "health": health_name(&health)? });
            let r: Option<Value> = client
                .call(Method::PUT, &format!("/v1/sensors/{sensor}"), Some(&body))
                .await?;
            if out_json {
                return print_json(&r.unwrap_or_default());
            }
            let r = r.unwrap_or_default();
            let e = &r["response"]["HealthChanged"]["effective"];
            println!(
                "{sensor} is {}; effective mode now {} (max {} m/s)",
                kebab(health_name(&health)?),
                kebab(&variant(&e["mode"])),
                s(&e["max_speed_mps"])
            );
        }
    }
    Ok(())
}

#[derive(Subcommand)]
pub enum PolicyCmd {
    /// List degradation policies.
    List {
        /// Read this node's state without a linearizable check.
        #[arg(long)]
        stale: bool,
    },
    /// Add or replace the policy for SENSOR at HEALTH.
    Set {
        /// Sensor name.
        sensor: String,
        /// degraded | failed.
        health: String,
        /// normal | reduced | gps-only | stop.
        mode: String,
        /// Speed factor in 0.0..=1.0.
        speed_factor: f64,
    },
    /// Remove the policy for SENSOR at HEALTH.
    Remove {
        /// Sensor name.
        sensor: String,
        /// degraded | failed.
        health: String,
    },
}

pub async fn policy(client: &Client, out_json: bool, cmd: PolicyCmd) -> anyhow::Result<()> {
    match cmd {
        PolicyCmd::List { stale } => {
            let r: Value = client
                .call(Method::GET, &format!("/v1/policies{}", stale_q(stale)), NONE)
                .await?
                .unwrap_or_default();
            if out_json {
                return print_json(&r);
            }
            let rows: Vec<Vec<String>> = r
                .as_array()
                .into_iter()
                .flatten()
                .map(|p| {
                    vec![
                        s(&p["sensor"]),
                        kebab(&s(&p["health"])),
                        kebab(&s(&p["mode"])),
                        s(&p["speed_factor"]),
                    ]
                })
                .collect();
            table(&["SENSOR", "HEALTH", "MODE", "SPEED FACTOR"], &rows);
        }
        PolicyCmd::Set {
            sensor,
            health,
            mode,
            speed_factor,
        } => {
            let mode = match mode.to_ascii_lowercase().as_str() {
                "normal" => "Normal",
                "reduced" => "Reduced",
                "gps-only" | "gpsonly" => "GpsOnly",
                "stop" => "Stop",
                _ => anyhow::bail!("mode {mode:?}: expected normal, reduced, gps-only or stop"),
            };
            let body = json!({ "sensor": sensor, "health": health_name(&health)?, "mode": mode, "speed_factor": speed_factor });
            let r: Option<Value> = client.call(Method::PUT, "/v1/policies", Some(&body)).await?;
            print_write(out_json, &format!("policy for {sensor} at {health} set"), r)?;
        }
        PolicyCmd::Remove { sensor, health } => {
            let r: Option<Value> = client
                .call(Method::DELETE, &format!("/v1/policies/{sensor}/{health}"), NONE)
                .await?;
            print_write(out_json, &format!("policy for {sensor} at {health} removed"), r)?;
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// Watch

#[derive(Args)]
pub struct WatchArgs {
    /// First log index to show (default: changes from now on).
    #[arg(long)]
    from: Option<u64>,
    /// Exit after this many changes.
    #[arg(long)]
    count: Option<u64>,
}

pub async fn watch(client: &Client, out_json: bool, args: WatchArgs) -> anyhow::Result<()> {
    use std::io::Write;
    let mut seen = 0u64;
    if args.count == Some(0) {
        return Ok(());
    }
    if !out_json {
        println!("{:<8} {:<6} {:<22} RESULT", "INDEX", "TERM", "COMMAND");
    }
    client
        .watch(args.from, |ev| {
            if out_json {
                // One JSON object per line (NDJSON), for scripts.
                println!("{}", ev.data);
            } else {
                let v: Value = serde_json::from_str(&ev.data).unwrap_or_default();
                let result = match &v["response"] {
                    Value::Null => "(replayed)".to_string(),
                    r if r.get("Err").is_some() => format!("refused: {}", variant(&r["Err"])),
                    r => variant(&r["Ok"]),
                };
                println!(
                    "{:<8} {:<6} {:<22} {result}",
                    s(&v["index"]),
                    s(&v["term"]),
                    variant(&v["command"])
                );
            }
            let _ = std::io::stdout().flush();
            seen += 1;
            args.count.is_none_or(|c| seen < c)
        })
        .await?;
    Ok(())
}

// ---------------------------------------------------------------------------
// Certificates

#[derive(Subcommand)]
pub enum CertsCmd {
    /// Create the cluster CA (DIR/ca.pem, DIR/ca.key). Keep ca.key safe.
    Init {
        /// Where to write.
        #[arg(long, default_value = "certs")]
        dir: PathBuf,
        /// Validity in days.
        #[arg(long, default_value_t = 3650)]
        days: u32,
    },
    /// Issue node ID's certificate (DIR/node-ID.pem, DIR/node-ID.key).
    Issue {
        /// Node id.
        id: u64,
        /// Where the CA is and the certificate goes.
        #[arg(long, default_value = "certs")]
        dir: PathBuf,
        /// Another DNS name or IP address the node is reached at (repeat),
        /// e.g. its LAN address for HTTPS on the admin API.
        #[arg(long = "san")]
        sans: Vec<String>,
        /// Validity in days.
        #[arg(long, default_value_t = 730)]
        days: u32,
    },
}

pub fn certs(out_json: bool, cmd: CertsCmd) -> anyhow::Result<()> {
    match cmd {
        CertsCmd::Init { dir, days } => {
            let ca = cairn::tls::init_ca(&dir, days)?;
            if out_json {
                return print_json(&json!({ "ca_cert": ca, "ca_key": dir.join(cairn::tls::CA_KEY) }));
            }
            println!(
                "cluster CA written to {} (key {}: keep it off the rover)",
                ca.display(),
                dir.join(cairn::tls::CA_KEY).display()
            );
        }
        CertsCmd::Issue { id, dir, sans, days } => {
            let issued = cairn::tls::issue_node_cert(&dir, id, &sans, i64::from(days))?;
            if out_json {
                return print_json(&json!({ "cert": issued.cert, "key": issued.key, "names": issued.names }));
            }
            println!(
                "node {id}: {} and {} (names: {}); run it with --tls-dir {}",
                issued.cert.display(),
                issued.key.display(),
                issued.names.join(", "),
                dir.display()
            );
        }
    }
    Ok(())
}
