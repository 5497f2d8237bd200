//! `cairn watch`: applied changes as they happen, each as what it changed
//! (`param/drive.max_speed_mps  1.0 -> 1.2`).
//!
//! A change on the stream carries the command and (when applied live) the
//! state machine's answer, not the value it replaced. The CLI keeps the
//! last value it saw of every key: read from one node when the watch starts
//! "from now on" (the stream then starts right after the index that state
//! is at, so nothing falls between them or is counted twice), else learnt
//! from the stream itself (`--from`: a key's first change shows `?` as its
//! old value).

use std::collections::HashMap;

use cairn::api::ChangeJson;
use cairn::api::SensorsView;
use cairn::api::TaskView;
use cairn::client::Client;
use cairn::state::Command;
use cairn::state::Param;
use cairn::state::Response;
use cairn::state::TaskOutcome;
use clap::Args;
use reqwest::Method;
use serde_json::Value;

use super::out::name_of;
use super::out::variant_of;
use super::param::show_value;
use super::NONE;

#[derive(Args)]
pub struct WatchArgs {
    /// First log index to show (default: changes from now on).
    #[arg(long)]
    from: Option<u64>,
    /// Exit after this many changes.
    #[arg(long)]
    count: Option<u64>,
}

/// The index a stream "from now on" starts at: one past what the node
/// has applied (read before the state the CLI shows, so a change between
/// the two is streamed, never lost). `None` when no endpoint says: then
/// the stream's own "now".
pub(crate) async fn now_index(client: &Client) -> Option<u64> {
    let s: Option<cairn_raft::Status> = client.call(Method::GET, "/v1/status", NONE).await.ok()?;
    s?.applied_index.map(|a| a + 1)
}

/// What one change did: the key it changed and that key's value after it.
/// `None` for a change that names no single key (a policy removal, say),
/// or whose new value is not known (a replayed task creation: its id is in
/// the answer, which replays lack).
pub(crate) fn key_and_value(c: &ChangeJson) -> Option<(String, String)> {
    let ok = match &c.response {
        Some(Ok(r)) => Some(r),
        _ => None,
    };
    let task_state = |id: cairn::state::TaskId, fallback: &str| -> (String, String) {
        let now = match ok {
            Some(Response::TaskChanged { state, .. }) => name_of(state),
            Some(Response::TaskRetrying { .. }) => "pending (retrying)".into(),
            _ => fallback.to_string(),
        };
        (format!("task/{id}"), now)
    };
    Some(match &c.command {
        Command::DeclareParam { name, value, .. } | Command::SetParam { name, value } => {
            (format!("param/{name}"), show_value(value))
        }
        Command::ReportSensorHealth { sensor, health } => (format!("sensor/{sensor}"), name_of(health)),
        Command::SetLiveness { node_id, liveness, .. } => (format!("node/{node_id}"), name_of(liveness)),
        Command::RegisterNode(spec) => (format!("node/{}", spec.id), "registered".into()),
        Command::DeregisterNode { node_id, .. } => (format!("node/{node_id}"), "deregistered".into()),
        Command::CreateTask(spec) => match ok {
            Some(Response::TaskCreated { task_id }) => (format!("task/{task_id}"), format!("pending ({})", spec.kind)),
            _ => return None,
        },
        Command::AssignTask { task_id, node_id } | Command::ReassignTask { task_id, node_id } => {
            (format!("task/{task_id}"), format!("assigned (node {node_id})"))
        }
        Command::UnassignTask { task_id } => (format!("task/{task_id}"), "pending".into()),
        Command::StartTask { task_id, .. } => (format!("task/{task_id}"), "running".into()),
        Command::ReportProgress { task_id, percent, .. } => (format!("task/{task_id}"), format!("running {percent}%")),
        Command::FinishTask { task_id, outcome, .. } => task_state(
            *task_id,
            match outcome {
                TaskOutcome::Succeeded => "succeeded",
                _ => "failed",
            },
        ),
        Command::CancelTask { task_id } => task_state(*task_id, "cancel requested"),
        Command::ForgetTask { task_id } => (format!("task/{task_id}"), "forgotten".into()),
        Command::SetPolicy(p) => (
            format!("policy/{}/{}", p.sensor, name_of(&p.health)),
            format!("{} x{}", name_of(&p.mode), p.speed_factor),
        ),
        Command::RemovePolicy { sensor, health } => (format!("policy/{sensor}/{}", name_of(health)), "removed".into()),
        _ => match ok {
            Some(Response::PlanChanged { version, .. }) => ("mission/plan".into(), format!("version {version}")),
            _ => return None,
        },
    })
}

/// A task's value as [`key_and_value`] words it.
fn task_value(t: &TaskView) -> String {
    match t.task.state {
        cairn::state::TaskState::Running => format!("running {}%", t.task.progress_percent),
        cairn::state::TaskState::Assigned => {
            format!(
                "assigned (node {})",
                super::out::or_dash(t.task.lease.map(|l| l.node_id))
            )
        }
        s => name_of(&s),
    }
}

/// Parameters, tasks and sensors as node `ep` has them applied (stale
/// reads: one node's state at one index). `None` if a read fails.
async fn read_state(client: &Client, ep: &str) -> Option<HashMap<String, String>> {
    let mut known = HashMap::new();
    let params: Vec<Param> = client
        .call_one(ep, Method::GET, "/v1/params?consistency=stale", NONE)
        .await
        .ok()??;
    for p in params {
        known.insert(format!("param/{}", p.name), show_value(&p.value));
    }
    let tasks: Vec<TaskView> = client
        .call_one(ep, Method::GET, "/v1/tasks?consistency=stale", NONE)
        .await
        .ok()??;
    for t in tasks {
        known.insert(format!("task/{}", t.task.id), task_value(&t));
    }
    let s: SensorsView = client
        .call_one(ep, Method::GET, "/v1/sensors?consistency=stale", NONE)
        .await
        .ok()??;
    for (name, r) in s.sensors {
        known.insert(format!("sensor/{name}"), name_of(&r.health));
    }
    Some(known)
}

/// The applied index of node `ep`.
async fn applied_at(client: &Client, ep: &str) -> Option<u64> {
    let s: Option<cairn_raft::Status> = client.call_one(ep, Method::GET, "/v1/status", NONE).await.ok()?;
    s?.applied_index
}

/// The values the watch starts from, and the index to stream from so that
/// every printed change's old value is right: one node's state read while
/// its applied index stood still (the same before and after the reads),
/// then the stream from the next index. If no node holds still for it, the
/// stream starts "now" with nothing known (old values `?` until seen).
async fn seed(client: &Client) -> (Option<u64>, HashMap<String, String>) {
    // A few tries per endpoint: three small reads rarely straddle a change.
    const TRIES: usize = 5;
    for ep in client.endpoints() {
        for _ in 0..TRIES {
            let Some(before) = applied_at(client, ep).await else {
                break;
            };
            let Some(known) = read_state(client, ep).await else {
                break;
            };
            if applied_at(client, ep).await == Some(before) {
                return (Some(before + 1), known);
            }
        }
    }
    (now_index(client).await, HashMap::new())
}

/// Runs `cairn watch`.
pub async fn run(client: &Client, out_json: bool, args: WatchArgs) -> anyhow::Result<()> {
    use std::io::Write;
    let mut seen = 0u64;
    if args.count == Some(0) {
        return Ok(());
    }
    let (from, mut known) = match args.from {
        Some(from) => (Some(from), HashMap::new()),
        None => seed(client).await,
    };
    if !out_json {
        println!("{:<8} {:<18} {:<32} CHANGE", "INDEX", "COMMAND", "KEY");
    }
    client
        .watch(from, |ev| {
            let change = serde_json::from_str::<ChangeJson>(&ev.data).ok();
            let refused = change.as_ref().and_then(|c| match &c.response {
                Some(Err(e)) => Some(variant_of(e)),
                _ => None,
            });
            // A refused command changed nothing: no new value.
            let kv = change.as_ref().filter(|_| refused.is_none()).and_then(key_and_value);
            let old = kv.as_ref().and_then(|(k, _)| known.get(k).cloned());
            if out_json {
                // One JSON object per line (NDJSON), for scripts: the change
                // as the node sent it, with `key`, `old` and `new` added.
                let mut v: Value = serde_json::from_str(&ev.data).unwrap_or(Value::Null);
                if let (Value::Object(m), Some((k, new))) = (&mut v, &kv) {
                    m.insert("key".into(), Value::from(k.clone()));
                    m.insert("old".into(), old.clone().map(Value::from).unwrap_or(Value::Null));
                    m.insert("new".into(), Value::from(new.clone()));
                }
                println!("{v}");
            } else {
                let line = match &change {
                    Some(c) => {
                        let (key, what) = match (&kv, &refused) {
                            (_, Some(why)) => ("-".to_string(), format!("refused: {why}")),
                            (Some((k, new)), None) => {
                                (k.clone(), format!("{} -> {new}", old.as_deref().unwrap_or("?")))
                            }
                            (None, None) => ("-".to_string(), "-".to_string()),
                        };
                        format!("{:<8} {:<18} {key:<32} {what}", c.index, variant_of(&c.command))
                    }
                    // Not a change (a newer node's?): as little as is known.
                    None => format!("{:<8} {:<18} {:<32} -", "-", "null", "-"),
                };
                println!("{line}");
            }
            if let Some((k, new)) = kv {
                known.insert(k, new);
            }
            let _ = std::io::stdout().flush();
            seen += 1;
            args.count.is_none_or(|c| seen < c)
        })
        .await?;
    Ok(())
}
