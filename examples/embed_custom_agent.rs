//! Another rover's program embedding cairn: a 3-node cluster in one process
//! (loopback, temporary data dirs), where node 3 has a robotic arm.
//!
//! Node 3 offers the `robotic-arm` capability and runs `arm-pick` tasks with
//! its own action handler, which publishes feedback as it works. The program
//! submits one `arm-pick` task through node 1, follows the applied changes
//! on node 1's watch stream — the assignment, each feedback, the result —
//! and exits 0 once the task succeeded (non-zero on failure or after 25 s).
//!
//! ```sh
//! cargo run --example embed_custom_agent
//! ```

use std::sync::Arc;
use std::time::Duration;

use anyhow::bail;
use anyhow::Context;
use cairn::action::ActionContext;
use cairn::action::ActionFeedback;
use cairn::action::ActionFuture;
use cairn::action::ActionHandler;
use cairn::action::ActionOutcome;
use cairn::action::FeedbackDetail;
use cairn::action::ParamVal;
use cairn::Command;
use cairn::Node;
use cairn::ParamKind;
use cairn::ParamValue;
use cairn::TaskOutcome;
use cairn::TaskSpec;
use cairn::TaskState;

/// The whole run must finish well inside CI's 30 s.
const DEADLINE: Duration = Duration::from_secs(25);

/// The arm: five motions, one feedback each.
struct ArmPick;

impl ActionHandler for ArmPick {
    fn run(&self, ctx: ActionContext) -> ActionFuture {
        Box::pin(async move {
            let grip = match ctx.param_values.borrow().1.get("arm.grip_force_n") {
                Some(ParamVal::Float(f)) => *f,
                _ => 10.0,
            };
            let steps = ["reach", "align gripper", "grasp", "lift", "retract"];
            for (i, step) in steps.iter().enumerate() {
                // Stop at once on cancel or a lost permit (contract of the
                // action trait); otherwise "move" for 300 ms.
                tokio::select! {
                    _ = ctx.stopped() => return ActionOutcome::Cancelled,
                    _ = tokio::time::sleep(Duration::from_millis(300)) => {}
                }
                if !ctx.may_actuate() {
                    return ActionOutcome::Cancelled;
                }
                ctx.feedback(ActionFeedback {
                    percent: ((i + 1) * 100 / steps.len()) as u8,
                    detail: Some(FeedbackDetail::Note(format!("{step} (grip {grip:.1} N)"))),
                });
            }
            ActionOutcome::Succeeded
        })
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn,openraft=error".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let started = tokio::time::Instant::now();
    let dir = tempfile::tempdir().context("temporary directory")?;

    println!("starting 3 nodes on loopback");
    let mut nodes = Vec::new();
    for id in 1..=3u64 {
        let mut b = Node::builder().id(id).data_dir(dir.path().join(format!("node{id}")));
        if id == 3 {
            b = b.capability("robotic-arm").handler("arm-pick", Arc::new(ArmPick));
        }
        nodes.push(b.start().await.with_context(|| format!("starting node {id}"))?);
    }
    let members: Vec<_> = nodes.iter().map(|n| (n.id(), n.member())).collect();
    nodes[0].initialize(members).await.context("initializing the cluster")?;
    let leader = nodes[0].wait_for_leader(Duration::from_secs(10)).await?;
    println!("cluster up, leader is node {leader}");

    let result = tokio::time::timeout(DEADLINE, pick(&nodes[0])).await;
    for node in nodes {
        let id = node.id();
        if let Err(e) = tokio::time::timeout(Duration::from_secs(5), node.shutdown()).await {
            eprintln!("node {id} did not shut down in time: {e}");
        }
    }
    match result {
        Err(_) => bail!("the task did not finish within {DEADLINE:?}"),
        Ok(Err(e)) => Err(e),
        Ok(Ok(())) => {
            println!("done in {:.1} s", started.elapsed().as_secs_f64());
            Ok(())
        }
    }
}

/// Submit an `arm-pick` task through `node` and follow it to its end.
async fn pick(node: &Node) -> anyhow::Result<()> {
    node.params()
        .declare(
            "arm.grip_force_n",
            "grip force of the arm",
            ParamKind::Float { min: 0.0, max: 40.0 },
            ParamValue::Float(12.5),
        )
        .await
        .context("declaring arm.grip_force_n")?;

    // Watch first, so nothing between the submit and the watch is missed.
    let mut watch = node.watch(node.applied_index() + 1)?;
    let mut spec = TaskSpec::new("arm-pick");
    spec.required_capabilities.insert("robotic-arm".into());
    let task = node.submit_task(spec).await.context("submitting the task")?;
    println!("submitted task {task} (arm-pick, needs robotic-arm)");

    let mut feedbacks = 0;
    let mut assignee = None;
    // Bounded by the caller's deadline; each change is one applied entry.
    loop {
        let change = watch.next().await?;
        let accepted = change.response.as_ref().is_none_or(|r| r.is_ok());
        match &change.command {
            Command::AssignTask { task_id, node_id } | Command::ReassignTask { task_id, node_id }
                if *task_id == task && accepted =>
            {
                println!("[{}] task {task} assigned to node {node_id}", change.index);
                assignee = Some(*node_id);
            }
            Command::StartTask { task_id, .. } if *task_id == task && accepted => {
                println!("[{}] task {task} started", change.index);
            }
            Command::ReportProgress {
                task_id,
                percent,
                feedback,
                ..
            } if *task_id == task && accepted => {
                feedbacks += 1;
                let note = match feedback {
                    Some(cairn::Feedback::Note(n)) => n.clone(),
                    Some(other) => format!("{other:?}"),
                    None => String::new(),
                };
                println!("[{}] feedback {percent:>3}% {note}", change.index);
            }
            Command::FinishTask { task_id, outcome, .. } if *task_id == task && accepted => {
                println!("[{}] result: {outcome:?}", change.index);
                if *outcome != TaskOutcome::Succeeded {
                    bail!("the arm failed: {outcome:?}");
                }
                break;
            }
            _ => {}
        }
    }
    let t = node.task(task).await?.context("the task disappeared")?;
    if t.state != TaskState::Succeeded {
        bail!("task {task} ended {:?}", t.state);
    }
    if feedbacks == 0 {
        bail!("no feedback was published");
    }
    if assignee != Some(cairn::state::NodeId(3)) {
        bail!("task {task} ran on {assignee:?}, but only node 3 has the arm");
    }
    println!("task {task} {} with {feedbacks} feedback(s)", t.state);
    Ok(())
}
