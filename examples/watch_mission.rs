//! Follow the mission as it changes: plan and task events from the watch
//! stream of applied changes, printed one per line.
//!
//! Two ways to run it:
//!
//! ```sh
//! # start a 3-node cluster in this process (loopback, temporary dirs), play
//! # a short mission on it — a three-waypoint plan, one survey task per
//! # waypoint, run by node 2's handler — and watch it from node 1
//! cargo run --example watch_mission
//!
//! # or watch a running cluster through its admin API (server-sent events)
//! cargo run --example watch_mission -- --endpoints 127.0.0.1:8001,127.0.0.1:8002
//! ```
//!
//! Bounded either way: it stops after `--events N` plan/task events
//! (default 100) or `--seconds T` (default 20). On its own cluster it exits
//! 0 once the whole mission was seen (every task finished, every goal
//! reached, the plan completed) and non-zero if that did not happen in time.
//! Connected to a cluster, it exits 0 when a bound is reached and non-zero
//! if the cluster cannot be watched.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use anyhow::bail;
use anyhow::Context;
use cairn::action::ActionContext;
use cairn::action::ActionFeedback;
use cairn::action::ActionFuture;
use cairn::action::ActionHandler;
use cairn::action::ActionOutcome;
use cairn::client::Client;
use cairn::state::GoalKind;
use cairn::state::Pose;
use cairn::state::Tolerance;
use cairn::Command;
use cairn::GoalSpec;
use cairn::Node;
use cairn::Response;
use cairn::TaskSpec;
use cairn::TaskState;
use futures::StreamExt;

struct Args {
    endpoints: Option<Vec<String>>,
    max_events: usize,
    max_time: Duration,
}

fn parse_args() -> anyhow::Result<Args> {
    let mut args = Args {
        endpoints: std::env::var("CAIRN_ENDPOINTS")
            .ok()
            .filter(|e| !e.is_empty())
            .map(|e| e.split(',').map(str::to_string).collect()),
        max_events: 100,
        max_time: Duration::from_secs(20),
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it.next().with_context(|| format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--endpoints" => args.endpoints = Some(value.split(',').map(str::to_string).collect()),
            "--events" => args.max_events = value.parse().context("--events: a number")?,
            "--seconds" => args.max_time = Duration::from_secs(value.parse().context("--seconds: a number")?),
            other => bail!("unknown argument {other:?} (expected --endpoints, --events, --seconds)"),
        }
    }
    Ok(args)
}

/// One line for a plan or task change; `None` for everything else.
fn describe(command: &Command) -> Option<String> {
    Some(match command {
        Command::ReplacePlan { name, goals, .. } => format!("plan    replaced: {name:?} with {} goal(s)", goals.len()),
        Command::AppendGoals { goals, .. } => format!("plan    {} goal(s) appended", goals.len()),
        Command::SkipGoal { goal_id, .. } => format!("plan    goal {} skipped", goal_id.0),
        Command::CompleteGoal { goal_id, .. } => format!("plan    goal {} reached", goal_id.0),
        Command::AbortPlan { reason, .. } => format!("plan    aborted: {reason}"),
        Command::CreateTask(spec) => format!("task    created: {} (goal {:?})", spec.kind, spec.goal.map(|g| g.0)),
        Command::AssignTask { task_id, node_id } => format!("task {task_id} assigned to node {node_id}"),
        Command::ReassignTask { task_id, node_id } => format!("task {task_id} reassigned to node {node_id}"),
        Command::UnassignTask { task_id } => format!("task {task_id} taken back"),
        Command::StartTask { task_id, .. } => format!("task {task_id} started"),
        Command::ReportProgress { task_id, percent, .. } => format!("task {task_id} progress {percent}%"),
        Command::FinishTask { task_id, outcome, .. } => format!("task {task_id} finished: {outcome:?}"),
        Command::CancelTask { task_id } => format!("task {task_id} cancel requested"),
        Command::ForgetTask { task_id } => format!("task {task_id} forgotten"),
        _ => return None,
    })
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn,openraft=error".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let args = parse_args()?;
    match args.endpoints.clone() {
        Some(endpoints) => watch_remote(endpoints, &args).await,
        None => watch_own_cluster(&args).await,
    }
}

/// Watch a running cluster over `GET /v1/watch`.
async fn watch_remote(endpoints: Vec<String>, args: &Args) -> anyhow::Result<()> {
    println!(
        "watching {} for {:?} or {} events",
        endpoints.join(","),
        args.max_time,
        args.max_events
    );
    let client = Client::with_options(
        endpoints,
        Duration::from_secs(5),
        cairn::client::ClientOptions {
            token: std::env::var("CAIRN_TOKEN").ok(),
            ca_cert: std::env::var_os("CAIRN_CA_CERT").map(Into::into),
        },
    )?;
    // Fail at once if no endpoint answers, rather than retry until the bound.
    client
        .call::<(), serde_json::Value>(reqwest::Method::GET, "/v1/status", None)
        .await
        .context("no endpoint answers")?;
    let mut printed = 0usize;
    let watch = client.watch(None, |event| {
        if event.event != "change" {
            eprintln!("{}: {}", event.event, event.data);
            return false;
        }
        let command = serde_json::from_str::<serde_json::Value>(&event.data)
            .ok()
            .and_then(|v| serde_json::from_value::<Command>(v["command"].clone()).ok());
        if let Some(line) = command.as_ref().and_then(describe) {
            println!("[{}] {line}", event.id.as_deref().unwrap_or("?"));
            printed += 1;
        }
        printed < args.max_events
    });
    match tokio::time::timeout(args.max_time, watch).await {
        Ok(Err(e)) => Err(e).context("watching the cluster"),
        Ok(Ok(())) | Err(_) => {
            println!("{printed} plan/task event(s)");
            Ok(())
        }
    }
}

/// Surveys the spot its task's goal names: two feedbacks, then success.
struct Survey;

impl ActionHandler for Survey {
    fn run(&self, ctx: ActionContext) -> ActionFuture {
        Box::pin(async move {
            for percent in [50, 100] {
                tokio::select! {
                    _ = ctx.stopped() => return ActionOutcome::Cancelled,
                    _ = tokio::time::sleep(Duration::from_millis(250)) => {}
                }
                ctx.feedback(ActionFeedback { percent, detail: None });
            }
            ActionOutcome::Succeeded
        })
    }
}

async fn watch_own_cluster(args: &Args) -> anyhow::Result<()> {
    let dir = tempfile::tempdir().context("temporary directory")?;
    let mut nodes = Vec::new();
    for id in 1..=3u64 {
        let mut b = Node::builder().id(id).data_dir(dir.path().join(format!("node{id}")));
        if id == 2 {
            b = b.capability("camera").handler("survey", Arc::new(Survey));
        }
        nodes.push(b.start().await.with_context(|| format!("starting node {id}"))?);
    }
    let members: Vec<_> = nodes.iter().map(|n| (n.id(), n.member())).collect();
    nodes[0].initialize(members).await?;
    nodes[0].wait_for_leader(Duration::from_secs(10)).await?;
    println!(
        "3-node cluster up; watching node 1 for {:?} or {} events",
        args.max_time, args.max_events
    );

    let outcome = tokio::time::timeout(args.max_time, play_and_watch(&nodes, args.max_events)).await;
    for node in nodes {
        let _ = tokio::time::timeout(Duration::from_secs(5), node.shutdown()).await;
    }
    match outcome {
        Err(_) => bail!("the mission was not seen to completion within {:?}", args.max_time),
        Ok(result) => result,
    }
}

/// Play a mission on node 3 while printing node 1's watch stream, until
/// every task finished and every goal was reached (or `max_events`).
async fn play_and_watch(nodes: &[Node], max_events: usize) -> anyhow::Result<()> {
    let watcher = &nodes[0];
    let mut changes = Box::pin(watcher.watch_stream(watcher.applied_index() + 1)?);
    let operator = async {
        let goals = (0..3)
            .map(|i| GoalSpec {
                kind: GoalKind::Waypoint {
                    pose: Pose::new(10.0 * f64::from(i), 5.0, 0.0, 0.0),
                },
                tolerance: Tolerance {
                    position_m: 0.5,
                    heading_rad: None,
                },
            })
            .collect();
        let command = Command::ReplacePlan {
            expected_version: None,
            name: "sol-42 traverse".into(),
            frame_id: "map".into(),
            goals,
        };
        let (_, Response::PlanChanged { added_goals, .. }) = nodes[2].execute(command).await? else {
            bail!("ReplacePlan did not answer PlanChanged");
        };
        for goal in added_goals {
            let mut spec = TaskSpec::new("survey");
            spec.required_capabilities.insert("camera".into());
            spec.goal = Some(goal);
            let task = nodes[2].submit_task(spec).await?;
            // Bounded by the caller's timeout; tasks take about half a second.
            loop {
                match nodes[2].task(task).await?.map(|t| t.state) {
                    Some(TaskState::Succeeded) => break,
                    Some(s) if s.is_terminal() => bail!("task {task} ended {s}"),
                    _ => tokio::time::sleep(Duration::from_millis(100)).await,
                }
            }
            nodes[2]
                .execute(Command::CompleteGoal {
                    expected_version: None,
                    goal_id: goal,
                })
                .await?;
        }
        anyhow::Ok(())
    };
    let watch = async {
        let (mut printed, mut finished, mut reached) = (0usize, BTreeSet::new(), BTreeSet::new());
        while let Some(change) = changes.next().await {
            let change = change?;
            let Some(line) = describe(&change.command) else {
                continue;
            };
            println!("[{}] {line}", change.index);
            printed += 1;
            match &change.command {
                Command::FinishTask { task_id, .. } => {
                    finished.insert(*task_id);
                }
                Command::CompleteGoal { goal_id, .. } => {
                    reached.insert(*goal_id);
                }
                _ => {}
            }
            if (finished.len() == 3 && reached.len() == 3) || printed >= max_events {
                return anyhow::Ok(printed);
            }
        }
        bail!("the watch stream ended")
    };
    let (played, printed) = tokio::join!(operator, watch);
    played?;
    let printed = printed?;
    let mission = watcher.mission().await?;
    println!(
        "{printed} plan/task event(s); plan {:?} is {}",
        mission.plan.name, mission.plan.status
    );
    if mission.plan.status != cairn::state::PlanStatus::Completed {
        bail!("the plan is {}, not completed", mission.plan.status);
    }
    Ok(())
}
