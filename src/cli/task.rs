//! `cairn task submit|list|get|cancel|follow`.

use std::path::PathBuf;

use anyhow::Context;
use cairn::api::SubmitTaskRequest;
use cairn::client::Client;
use clap::Subcommand;
use reqwest::Method;
use serde_json::json;
use serde_json::Value;

use cairn::api::TaskView;
use cairn::state::Response;
use cairn::state::TaskState;

use super::out::json_text;
use super::out::name_of;
use super::out::or_dash;
use super::out::print_json;
use super::out::stale_q;
use super::out::table;
use super::out::typed;
use super::out::write_result;
use super::NONE;

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
        /// Then follow it as `task follow` does (exit 0 if it succeeds, 2 if
        /// it fails or is cancelled).
        #[arg(long)]
        follow: bool,
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
    /// Print a task's state, progress and feedback as they change, until it
    /// ends: exit 0 if it succeeded, 2 if it failed or was cancelled. Follows
    /// the watch stream (resumed on the next endpoint if its node fails);
    /// with `-o json`, one JSON object (the task) per line.
    Follow {
        /// Task id.
        id: u64,
    },
}

/// Exit code of `task follow` for a task that failed or was cancelled (2,
/// as `status` for an unhealthy cluster: the command worked, the answer is
/// "no").
pub const EXIT_TASK_UNSUCCESSFUL: u8 = 2;

/// Whether change `c` may have changed task `id`: a command naming it, or
/// one that moves tasks of a node (liveness, deregistration).
fn touches(c: &cairn::api::ChangeJson, id: u64) -> bool {
    use cairn::state::Command as C;
    match &c.command {
        C::AssignTask { task_id, .. }
        | C::ReassignTask { task_id, .. }
        | C::UnassignTask { task_id }
        | C::StartTask { task_id, .. }
        | C::ReportProgress { task_id, .. }
        | C::FinishTask { task_id, .. }
        | C::CancelTask { task_id }
        | C::ForgetTask { task_id } => task_id.0 == id,
        C::SetLiveness { .. } | C::DeregisterNode { .. } => true,
        _ => false,
    }
}

/// One line of `task follow`: state, node, progress, feedback, error.
fn follow_line(t: &TaskView) -> String {
    let mut line = format!("task {}: {}", t.task.id, name_of(&t.task.state));
    if let Some(l) = t.task.lease {
        line.push_str(&format!(" on node {} (epoch {})", l.node_id, l.epoch));
    }
    line.push_str(&format!(" {}%", t.task.progress_percent));
    if let Some(f) = &t.task.feedback {
        line.push_str(&format!(" feedback {}", json_text(f)));
    }
    if t.task.cancel_requested && !t.task.state.is_terminal() {
        line.push_str(" cancel requested");
    }
    if let Some(e) = &t.task.last_error {
        line.push_str(&format!(" last error: {e}"));
    }
    if let Some(u) = &t.unplaceable {
        line.push_str(&format!(" (unplaceable: {u})"));
    }
    line
}

/// Task `id`, read linearizably from any endpoint; while the cluster
/// elects a new leader (no endpoint can serve the read) it is tried again,
/// for a bounded time, so following survives a leader's failure. Not the
/// first read (`patient` false): wrong endpoints fail at once.
async fn read_through_failover(client: &Client, id: u64, patient: bool) -> anyhow::Result<Value> {
    // 60 tries 500 ms apart: half a minute, several elections' worth.
    const TRIES: u32 = 60;
    let path = format!("/v1/tasks/{id}");
    let mut tries = 0;
    loop {
        match client.call(Method::GET, &path, NONE).await {
            Ok(r) => return Ok(r.unwrap_or_default()),
            Err(e)
                if patient
                    && tries + 1 < TRIES
                    && super::exit::client_exit_code(&e) == super::exit::EXIT_UNAVAILABLE =>
            {
                tracing::debug!(error = %e, "no endpoint can serve the read yet; again");
                tries += 1;
                tokio::time::sleep(std::time::Duration::from_millis(500)).await;
            }
            Err(e) => return Err(e.into()),
        }
    }
}

/// `cairn task follow ID`: the task now, then again after every applied
/// change that may touch it, printed when it differs, until it ends.
///
/// The changes come from the watch stream (no polling); on one, the task is
/// read again (linearizable, any endpoint), so what is printed is the
/// cluster's state, not a guess from the command. Changes arriving while a
/// read is under way are folded into the next read: a fast series of
/// progress reports may print as fewer lines, the end state never lost.
async fn follow(client: &Client, out_json: bool, id: u64) -> anyhow::Result<()> {
    use std::io::Write;
    let from = super::watch::now_index(client).await;
    let (tx, mut rx) = tokio::sync::watch::channel(0u64);
    let stream = client.watch(from, move |ev| {
        if let Ok(c) = serde_json::from_str::<cairn::api::ChangeJson>(&ev.data) {
            if touches(&c, id) {
                tx.send_replace(c.index);
            }
        }
        // Ends once `follow` stops listening.
        !tx.is_closed()
    });
    tokio::pin!(stream);
    let mut last: Option<Value> = None;
    // The first read is due at once; the next after a touching change.
    let mut due = true;
    loop {
        if due {
            let r = read_through_failover(client, id, last.is_some()).await?;
            let t: TaskView = typed(r.clone(), "a task")?;
            if last.as_ref() != Some(&r) {
                if out_json {
                    println!("{}", serde_json::to_string(&r)?);
                } else {
                    println!("{}", follow_line(&t));
                }
                let _ = std::io::stdout().flush();
                last = Some(r);
            }
            match t.task.state {
                TaskState::Succeeded => return Ok(()),
                TaskState::Failed | TaskState::Cancelled => {
                    return Err(super::exit::Failed {
                        code: EXIT_TASK_UNSUCCESSFUL,
                        message: format!(
                            "task {id} {}{}",
                            name_of(&t.task.state),
                            t.task.last_error.as_ref().map(|e| format!(": {e}")).unwrap_or_default()
                        ),
                    }
                    .into());
                }
                _ => {}
            }
        }
        tokio::select! {
            // The stream first: its error says why it ended.
            biased;
            r = &mut stream => {
                r?;
                anyhow::bail!("the watch stream ended before task {id} did");
            }
            changed = rx.changed() => {
                changed.context("the watch stream ended")?;
                due = true;
            }
        }
    }
}

/// A task's `WHY` in `task list`: why a pending one fits no node, why a
/// failed one failed (its last error), else nothing.
fn why(t: &TaskView) -> String {
    let text = match t.task.state {
        TaskState::Pending => t.unplaceable.as_ref().or(t.task.last_error.as_ref()),
        TaskState::Failed => t.task.last_error.as_ref(),
        _ => None,
    };
    text.cloned().unwrap_or_default()
}

/// Runs `cmd`.
pub async fn run(client: &Client, out_json: bool, cmd: TaskCmd) -> anyhow::Result<()> {
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
            follow: then_follow,
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
            let written = write_result(Some(r.clone()))?;
            let task_id = match written.response {
                Response::TaskCreated { task_id } => Some(task_id),
                _ => None,
            };
            if out_json {
                if then_follow {
                    // One JSON object per line, as `task follow` prints.
                    println!("{}", serde_json::to_string(&r)?);
                } else {
                    print_json(&r)?;
                }
            } else {
                println!(
                    "task {} submitted (committed at index {})",
                    or_dash(task_id),
                    written.index
                );
            }
            if then_follow {
                let id = task_id.context("the node's answer names no task id to follow")?;
                return follow(client, out_json, id.0).await;
            }
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
            let tasks: Vec<TaskView> = typed(r, "a list of tasks")?;
            let rows: Vec<Vec<String>> = tasks
                .iter()
                .map(|t| {
                    vec![
                        t.task.id.to_string(),
                        t.task.spec.kind.clone(),
                        name_of(&t.task.state),
                        or_dash(t.task.lease.map(|l| l.node_id)),
                        format!("{}%", t.task.progress_percent),
                        t.task.spec.priority.to_string(),
                        t.task.attempts.to_string(),
                        if t.task.cancel_requested {
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
            let TaskView { task: t, unplaceable } = typed(r, "a task")?;
            table(
                &["FIELD", "VALUE"],
                &[
                    vec!["id".into(), t.id.to_string()],
                    vec!["kind".into(), t.spec.kind.clone()],
                    vec!["state".into(), name_of(&t.state)],
                    vec!["node".into(), or_dash(t.lease.map(|l| l.node_id))],
                    vec!["epoch".into(), or_dash(t.lease.map(|l| l.epoch))],
                    vec!["progress".into(), format!("{}%", t.progress_percent)],
                    vec!["feedback".into(), json_text(&t.feedback)],
                    vec!["failed attempts".into(), t.attempts.to_string()],
                    vec!["last error".into(), or_dash(t.last_error)],
                    vec!["unplaceable".into(), or_dash(unplaceable)],
                    vec!["cancel requested".into(), t.cancel_requested.to_string()],
                    vec!["capabilities".into(), json_text(&t.spec.required_capabilities)],
                    vec!["resources".into(), json_text(&t.spec.resources)],
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
            let r = write_result(r)?;
            let state = match r.response {
                Response::TaskChanged { state, .. } => name_of(&state),
                _ => "-".into(),
            };
            println!("task {id}: {state} (committed at index {})", r.index);
        }
        TaskCmd::Follow { id } => follow(client, out_json, id).await?,
    }
    Ok(())
}
