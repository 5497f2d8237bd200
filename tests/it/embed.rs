//! The embedding facade (`cairn::Node`), in process.

use std::time::Duration;

use cairn::Command;
use cairn::Node;
use cairn::ParamKind;
use cairn::ParamValue;
use cairn::Role;
use futures::StreamExt;

async fn three_nodes(dir: &std::path::Path) -> Vec<Node> {
    let mut nodes = Vec::new();
    for id in 1..=3u64 {
        let node = Node::builder()
            .id(id)
            .data_dir(dir.join(format!("n{id}")))
            .start()
            .await
            .unwrap_or_else(|e| panic!("start node {id}: {e}"));
        nodes.push(node);
    }
    let members: Vec<_> = nodes.iter().map(|n| (n.id(), n.member())).collect();
    nodes[0].initialize(members).await.expect("initialize");
    nodes
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t186_embedded_nodes_replicate_watch_and_hand_over_leadership() {
    let dir = tempfile::tempdir().unwrap();
    let mut nodes = three_nodes(dir.path()).await;
    nodes[0].wait_for_leader(Duration::from_secs(15)).await.unwrap();

    tracing::info!("a fourth node joins through node 2's peer port (no API address, no token) and becomes a voter");
    let fourth = Node::builder()
        .id(4)
        .data_dir(dir.path().join("n4"))
        .start()
        .await
        .expect("start node 4");
    fourth
        .join(vec![nodes[1].raft_addr().to_string()], true)
        .await
        .expect("join");
    // The promotion committed on a quorum that need not include node 4:
    // wait (bounded) until node 4 has it too.
    let voters = |n: &Node| -> Vec<u64> { n.status().members.iter().filter(|m| m.voter).map(|m| m.id).collect() };
    for _ in 0..50 {
        if voters(&fourth).len() == 4 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(voters(&fourth), vec![1, 2, 3, 4], "{:?}", fourth.status());
    nodes.push(fourth);
    nodes[0].wait_for_leader(Duration::from_secs(15)).await.unwrap();

    tracing::info!("a write through one node is read linearizably on another and seen by the watch");
    let mut stream = Box::pin(nodes[2].watch_stream(nodes[2].applied_index() + 1).unwrap());
    nodes[1]
        .params()
        .declare(
            "arm.grip_force_n",
            "grip",
            ParamKind::Float { min: 0.0, max: 40.0 },
            ParamValue::Float(5.0),
        )
        .await
        .unwrap();
    let version = nodes[0]
        .params()
        .set("arm.grip_force_n", ParamValue::Float(7.5))
        .await
        .unwrap();
    let read = nodes[2].params().get("arm.grip_force_n").await.unwrap();
    assert_eq!(
        read.map(|p| (p.value, p.version)),
        Some((ParamValue::Float(7.5), version))
    );
    let mut seen = Vec::new();
    // Bounded: the two writes above, plus whatever the agents write meanwhile
    // (registration, heartbeats are not in the log), within 200 changes.
    for _ in 0..200 {
        let change = tokio::time::timeout(Duration::from_secs(10), stream.next())
            .await
            .expect("a change within 10 s")
            .expect("the stream does not end")
            .expect("no watch error");
        if let Command::SetParam { value, .. } | Command::DeclareParam { value, .. } = &change.command {
            seen.push(value.clone());
        }
        if seen.len() == 2 {
            break;
        }
    }
    assert_eq!(seen, vec![ParamValue::Float(5.0), ParamValue::Float(7.5)]);

    tracing::info!("the leader steps down to the most up-to-date voter");
    // Asked of whoever leads when it is asked: on a loaded machine an
    // election may have moved leadership since it was last read, and
    // `step_down` on a node that no longer leads is `None`.
    let mut handed = None;
    for _ in 0..5 {
        let leader = nodes[0].wait_for_leader(Duration::from_secs(15)).await.unwrap();
        let idx = nodes.iter().position(|n| n.id() == leader).unwrap();
        if let Some(new_leader) = nodes[idx].raft().step_down().await.expect("step down") {
            handed = Some((leader, new_leader));
            break;
        }
    }
    let (leader, new_leader) = handed.expect("two other voters are up, so one takes over");
    assert_ne!(new_leader, leader);
    let other = nodes.iter().find(|n| n.id() == new_leader).unwrap();
    other.raft().wait_for_leader(Duration::from_secs(5)).await.unwrap();
    assert_eq!(other.status().leader, Some(new_leader), "{:?}", other.status());

    tracing::info!("a graceful shutdown of the new leader hands over again, and the other three commit writes");
    let idx = nodes.iter().position(|n| n.id() == new_leader).unwrap();
    let stopping = nodes.remove(idx);
    assert_eq!(stopping.status().role, Role::Leader);
    stopping.shutdown().await.expect("graceful shutdown");
    for n in &nodes {
        n.params()
            .set("arm.grip_force_n", ParamValue::Float(n.id() as f64))
            .await
            .unwrap_or_else(|e| panic!("write through node {} after the shutdown: {e}", n.id()));
    }
    for n in nodes {
        n.shutdown().await.unwrap();
    }
}

/// An action that holds its task until it is stopped, so the task keeps
/// showing the node it is leased to.
struct Hold;

impl cairn::ActionHandler for Hold {
    fn run(&self, ctx: cairn::ActionContext) -> cairn::ActionFuture {
        Box::pin(async move {
            // Bounded: a test never runs this long.
            tokio::select! {
                _ = ctx.stopped() => cairn::ActionOutcome::Cancelled,
                _ = tokio::time::sleep(Duration::from_secs(120)) => cairn::ActionOutcome::Succeeded,
            }
        })
    }
}

/// `Node::drain` is a library operation (it used to live only in the HTTP
/// handler): a program embedding cairn drains a node, and the coordinator
/// places no new task on it; `Node::undrain` lifts the mark.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t187_embedded_drain_keeps_new_tasks_off_the_node() {
    let dir = tempfile::tempdir().unwrap();
    let mut nodes = Vec::new();
    for id in 1..=3u64 {
        let node = Node::builder()
            .id(id)
            .data_dir(dir.path().join(format!("n{id}")))
            .capability("hold")
            .handler("hold", std::sync::Arc::new(Hold))
            .start()
            .await
            .unwrap_or_else(|e| panic!("start node {id}: {e}"));
        nodes.push(node);
    }
    let members: Vec<_> = nodes.iter().map(|n| (n.id(), n.member())).collect();
    nodes[0].initialize(members).await.expect("initialize");
    nodes[0].wait_for_leader(Duration::from_secs(15)).await.unwrap();

    tracing::info!("node 1 drains node 2 through the library");
    let drained = nodes[0].drain(2).await.expect("drain node 2");
    assert!(drained.draining && drained.node_id == 2, "{drained:?}");
    assert_ne!(
        drained.leader,
        Some(2),
        "leadership stays on a drained node: {drained:?}"
    );
    let unknown = nodes[0].drain(99).await;
    assert!(
        matches!(unknown, Err(cairn::Error::NotFound { .. })),
        "draining an unknown node: {unknown:?}"
    );

    tracing::info!("new tasks go to nodes 1 and 3 only");
    let mut ids = Vec::new();
    for _ in 0..6 {
        let mut spec = cairn::TaskSpec::new("hold");
        spec.required_capabilities.insert("hold".into());
        ids.push(nodes[2].submit_task(spec).await.expect("submit"));
    }
    let mut holders = Vec::new();
    // Bounded: every task is leased within 30 s (its agent heartbeats and
    // the coordinator places it on its next pass).
    for _ in 0..300 {
        holders.clear();
        for id in &ids {
            let task = nodes[0].task(*id).await.expect("read task").expect("the task exists");
            holders.push(task.lease.map(|l| l.node_id.0));
        }
        if holders.iter().all(Option::is_some) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(holders.iter().all(Option::is_some), "tasks not all leased: {holders:?}");
    assert!(
        !holders.contains(&Some(2)),
        "a task went to drained node 2: {holders:?}"
    );

    tracing::info!("undrain lifts the mark");
    let undrained = nodes[1].undrain(2).await.expect("undrain node 2");
    assert!(!undrained.draining, "{undrained:?}");
    let mark = nodes[2].params().get("cluster.drain.node.2").await.unwrap();
    assert_eq!(mark.map(|p| p.value), Some(ParamValue::Bool(false)));
    for n in nodes {
        n.shutdown().await.unwrap();
    }
}
