//! `cairn task submit|list|get|cancel`.

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
            let r = write_result(Some(r))?;
            let task = match r.response {
                Response::TaskCreated { task_id } => task_id.to_string(),
                _ => "-".into(),
            };
            println!("task {task} submitted (committed at index {})", r.index);
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
    }
    Ok(())
}
