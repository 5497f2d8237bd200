//! O(n log n) invariants of the task runtime, over the task history, the
//! nodes' actuation journals and the final state read from every node:
//!
//! - **one holder at a time**: for each task, every actuation under an
//!   older epoch precedes every actuation under a newer one, and one epoch
//!   is never actuated by two nodes (a deposed holder that keeps acting
//!   while its successor acts is the bug fencing exists to prevent);
//! - **epochs only grow**: a linearizable read of a task that began after
//!   another read of it completed never shows a lower lease epoch, and one
//!   epoch never names two (task, node) leases;
//! - **no task left on a `Down` node, none stuck**: in the final state no
//!   task is leased to a node marked `Down`, and after the drain every task
//!   is finished (a task whose holder died was reassigned and ran, or
//!   ended);
//! - **no acknowledged submission lost**, and no task nobody submitted;
//! - **replicas agree** on every task once they applied the same index.

use std::collections::BTreeMap;
use std::collections::HashMap;

use serde::Deserialize;
use serde::Serialize;

use super::Anomaly;
use super::AnomalyKind;
use crate::history::Outcome;
use crate::tasks::Actuation;
use crate::tasks::TaskOp;
use crate::tasks::TaskOpKind;
use crate::tasks::TaskView;

/// Everything the task checkers look at (written as `tasks.json`).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct TaskCheckInput {
    /// The task clients' operations.
    pub ops: Vec<TaskOp>,
    /// Every node's actuation journal, concatenated.
    pub actuations: Vec<Actuation>,
    /// Tasks still unfinished when the drain after healing gave up.
    pub undrained: Vec<TaskView>,
    /// Each node's tasks, read locally once every node applied the same
    /// index (empty if they never did; reported by the register checks).
    pub final_tasks: BTreeMap<u64, Vec<TaskView>>,
    /// Each node's view of every node's liveness, read with `final_tasks`.
    pub final_liveness: BTreeMap<u64, BTreeMap<u64, String>>,
}

fn anomaly(kind: AnomalyKind, task: Option<u64>, ops: Vec<usize>, message: String) -> Anomaly {
    Anomaly {
        kind,
        key: task.map(|t| format!("task {t}")),
        ops,
        message,
    }
}

/// Every task check.
pub fn check_tasks(input: &TaskCheckInput) -> Vec<Anomaly> {
    let mut out = Vec::new();
    out.extend(one_holder_at_a_time(&input.actuations));
    out.extend(epochs_only_grow(&input.ops, &input.actuations));
    out.extend(nothing_left_behind(input));
    out.extend(no_submission_lost(input));
    out.extend(replicas_agree(input));
    out
}

/// (a) For each task, the actuations of each epoch form a span; the spans,
/// in epoch order, must not overlap, and one epoch has one node.
pub fn one_holder_at_a_time(actuations: &[Actuation]) -> Vec<Anomaly> {
    // task → epoch → (node, first, last)
    let mut spans: BTreeMap<u64, BTreeMap<u64, (u64, u64, u64)>> = BTreeMap::new();
    let mut out = Vec::new();
    for a in actuations {
        let e = spans
            .entry(a.task)
            .or_default()
            .entry(a.epoch)
            .or_insert((a.node, a.t_ns, a.t_ns));
        if e.0 != a.node {
            out.push(anomaly(
                AnomalyKind::EpochShared,
                Some(a.task),
                vec![],
                format!(
                    "task {} epoch {} was actuated by node {} and by node {}",
                    a.task, a.epoch, e.0, a.node
                ),
            ));
        }
        e.1 = e.1.min(a.t_ns);
        e.2 = e.2.max(a.t_ns);
    }
    for (task, epochs) in &spans {
        // The latest actuation of any older epoch, and who made it.
        let mut older: Option<(u64, u64, u64)> = None; // (epoch, node, last)
        for (&epoch, &(node, first, last)) in epochs {
            if let Some((oe, on, olast)) = older {
                if olast >= first {
                    out.push(anomaly(
                        AnomalyKind::TwoHolders,
                        Some(*task),
                        vec![],
                        format!(
                            "task {task}: node {on} still actuated under epoch {oe} {:.3} ms after node {node} began under newer epoch {epoch}",
                            (olast - first) as f64 / 1e6
                        ),
                    ));
                }
            }
            if older.is_none_or(|(_, _, l)| last > l) {
                older = Some((epoch, node, last));
            }
        }
    }
    out
}

/// (b) Reads ordered in real time never see a task's epoch go down; an
/// epoch is one (task, node) lease, whoever reports it.
pub fn epochs_only_grow(ops: &[TaskOp], actuations: &[Actuation]) -> Vec<Anomaly> {
    let mut out = Vec::new();
    let mut owner: HashMap<u64, (u64, u64)> = HashMap::new();
    let mut claim = |epoch: u64, task: u64, node: u64, what: String, out: &mut Vec<Anomaly>| {
        let prev = *owner.entry(epoch).or_insert((task, node));
        if prev != (task, node) {
            out.push(anomaly(
                AnomalyKind::EpochShared,
                Some(task),
                vec![],
                format!(
                    "epoch {epoch} names task {} on node {} and task {task} on node {node} ({what})",
                    prev.0, prev.1
                ),
            ));
        }
    };
    let mut reads: BTreeMap<u64, Vec<&TaskOp>> = BTreeMap::new();
    for op in ops {
        if let (TaskOpKind::Get, Outcome::Ok, Some(t)) = (op.kind, op.outcome, &op.observed) {
            if let (Some(e), Some(n)) = (t.epoch, t.lease_node) {
                claim(e, t.id, n, format!("read #{}", op.index), &mut out);
            }
            reads.entry(t.id).or_default().push(op);
        }
    }
    for a in actuations {
        claim(a.epoch, a.task, a.node, "actuation journal".into(), &mut out);
    }
    for (task, mut rs) in reads {
        // Sweep in invocation order, admitting reads that completed before
        // each invocation: the highest epoch among them is a floor.
        let mut by_complete = rs.clone();
        by_complete.sort_by_key(|o| o.complete_ns);
        rs.sort_by_key(|o| o.invoke_ns);
        let mut done = 0;
        let mut floor: Option<(u64, usize)> = None;
        for r in rs {
            while done < by_complete.len() && by_complete[done].complete_ns < r.invoke_ns {
                let c = by_complete[done];
                if let Some(e) = c.observed.as_ref().and_then(|t| t.epoch) {
                    if floor.is_none_or(|(f, _)| e > f) {
                        floor = Some((e, c.index));
                    }
                }
                done += 1;
            }
            if let (Some((f, fi)), Some(e)) = (floor, r.observed.as_ref().and_then(|t| t.epoch)) {
                if e < f {
                    out.push(anomaly(
                        AnomalyKind::EpochWentBack,
                        Some(task),
                        vec![fi, r.index],
                        format!(
                            "task {task}: read #{} saw epoch {e} after read #{fi} had returned epoch {f}",
                            r.index
                        ),
                    ));
                }
            }
        }
    }
    out
}

/// (c) No task on a `Down` node in the final state; nothing unfinished
/// after the drain.
pub fn nothing_left_behind(input: &TaskCheckInput) -> Vec<Anomaly> {
    let mut out = Vec::new();
    for (node, tasks) in &input.final_tasks {
        let Some(live) = input.final_liveness.get(node) else {
            continue;
        };
        for t in tasks {
            if let Some(holder) = t.lease_node {
                if live.get(&holder).map(String::as_str) == Some("Down") {
                    out.push(anomaly(
                        AnomalyKind::TaskOnDownNode,
                        Some(t.id),
                        vec![],
                        format!(
                            "node {node}'s final state leases task {} (state {}, epoch {:?}) to node {holder}, which it marks Down",
                            t.id, t.state, t.epoch
                        ),
                    ));
                }
            }
        }
    }
    for t in &input.undrained {
        out.push(anomaly(
            AnomalyKind::TaskStuck,
            Some(t.id),
            vec![],
            format!(
                "task {} still {} after healing and the drain (holder {:?}, epoch {:?}, attempts {}, progress {}%)",
                t.id, t.state, t.lease_node, t.epoch, t.attempts, t.progress_percent
            ),
        ));
    }
    out
}

/// (d) Every acknowledged submission is in every node's final state; every
/// task there was submitted (acknowledged or indeterminate).
pub fn no_submission_lost(input: &TaskCheckInput) -> Vec<Anomaly> {
    let mut out = Vec::new();
    let acked: BTreeMap<u64, usize> = input
        .ops
        .iter()
        .filter(|o| o.kind == TaskOpKind::Submit && o.outcome == Outcome::Ok)
        .filter_map(|o| Some((o.task_id?, o.index)))
        .collect();
    let unknown = input
        .ops
        .iter()
        .filter(|o| o.kind == TaskOpKind::Submit && o.outcome == Outcome::Info)
        .count();
    for (node, tasks) in &input.final_tasks {
        let ids: BTreeMap<u64, &TaskView> = tasks.iter().map(|t| (t.id, t)).collect();
        for (id, op) in &acked {
            if !ids.contains_key(id) {
                out.push(anomaly(
                    AnomalyKind::LostTask,
                    Some(*id),
                    vec![*op],
                    format!("submission #{op} was acknowledged as task {id}, which node {node}'s final state lacks"),
                ));
            }
        }
        let unasked = ids.keys().filter(|id| !acked.contains_key(id)).count();
        if unasked > unknown {
            out.push(anomaly(
                AnomalyKind::PhantomTask,
                None,
                vec![],
                format!(
                    "node {node} holds {unasked} tasks no acknowledged submission created, but only {unknown} submissions were indeterminate"
                ),
            ));
        }
    }
    out
}

/// (e) Replicas read at the same applied index hold the same tasks.
pub fn replicas_agree(input: &TaskCheckInput) -> Vec<Anomaly> {
    let mut out = Vec::new();
    let mut it = input.final_tasks.iter();
    let Some((first, reference)) = it.next() else {
        return out;
    };
    for (node, tasks) in it {
        if tasks != reference {
            // Compare by id, so one missing task does not shift the rest.
            let a: BTreeMap<u64, &TaskView> = reference.iter().map(|t| (t.id, t)).collect();
            let b: BTreeMap<u64, &TaskView> = tasks.iter().map(|t| (t.id, t)).collect();
            let diff = a
                .keys()
                .chain(b.keys())
                .find(|id| a.get(id) != b.get(id))
                .map(|id| format!("task {id}: {:?} vs {:?}", a.get(id), b.get(id)))
                .unwrap_or_default();
            out.push(anomaly(
                AnomalyKind::TasksDiverged,
                None,
                vec![],
                format!("nodes {first} and {node} hold different tasks at the same applied index: {diff}"),
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn act(node: u64, task: u64, epoch: u64, t_ns: u64) -> Actuation {
        Actuation {
            node,
            task,
            epoch,
            t_ns,
        }
    }

    fn view(id: u64, state: &str, lease: Option<(u64, u64)>) -> TaskView {
        TaskView {
            id,
            state: state.into(),
            lease_node: lease.map(|l| l.0),
            epoch: lease.map(|l| l.1),
            attempts: 0,
            progress_percent: 0,
            cancel_requested: false,
        }
    }

    fn top(
        index: usize,
        kind: TaskOpKind,
        task: u64,
        t: (u64, u64),
        outcome: Outcome,
        seen: Option<TaskView>,
    ) -> TaskOp {
        TaskOp {
            index,
            process: 0,
            node: 1,
            kind,
            task_id: Some(task),
            invoke_ns: t.0,
            complete_ns: t.1,
            outcome,
            error: None,
            observed: seen,
        }
    }

    fn kinds(a: &[Anomaly]) -> Vec<AnomalyKind> {
        a.iter().map(|a| a.kind).collect()
    }

    #[test]
    fn a_clean_task_history_has_no_anomaly() {
        let input = TaskCheckInput {
            ops: vec![
                top(0, TaskOpKind::Submit, 1, (0, 5), Outcome::Ok, None),
                top(
                    1,
                    TaskOpKind::Get,
                    1,
                    (10, 12),
                    Outcome::Ok,
                    Some(view(1, "Running", Some((1, 3)))),
                ),
                top(
                    2,
                    TaskOpKind::Get,
                    1,
                    (20, 22),
                    Outcome::Ok,
                    Some(view(1, "Running", Some((2, 4)))),
                ),
            ],
            // Node 1 held epoch 3, was cut off, stopped; node 2 took over.
            actuations: vec![act(1, 1, 3, 10), act(1, 1, 3, 20), act(2, 1, 4, 30), act(2, 1, 4, 40)],
            undrained: vec![],
            final_tasks: BTreeMap::from([
                (1, vec![view(1, "Succeeded", None)]),
                (2, vec![view(1, "Succeeded", None)]),
            ]),
            final_liveness: BTreeMap::from([(1, BTreeMap::from([(1, "Down".into()), (2, "Up".into())]))]),
        };
        assert!(check_tasks(&input).is_empty(), "{:#?}", check_tasks(&input));
    }

    #[test]
    fn a_deposed_holder_acting_after_its_successor_is_two_holders() {
        let bad = vec![act(1, 1, 3, 10), act(2, 1, 4, 30), act(1, 1, 3, 35)];
        assert_eq!(kinds(&one_holder_at_a_time(&bad)), vec![AnomalyKind::TwoHolders]);
        let shared = vec![act(1, 1, 3, 10), act(2, 1, 3, 30)];
        assert_eq!(kinds(&one_holder_at_a_time(&shared)), vec![AnomalyKind::EpochShared]);
    }

    #[test]
    fn an_epoch_going_back_or_naming_two_leases_is_caught() {
        let ops = vec![
            top(
                0,
                TaskOpKind::Get,
                1,
                (0, 5),
                Outcome::Ok,
                Some(view(1, "Running", Some((2, 9)))),
            ),
            top(
                1,
                TaskOpKind::Get,
                1,
                (10, 12),
                Outcome::Ok,
                Some(view(1, "Running", Some((1, 4)))),
            ),
            // Concurrent with #0: either order is fine.
            top(
                2,
                TaskOpKind::Get,
                1,
                (1, 6),
                Outcome::Ok,
                Some(view(1, "Running", Some((1, 4)))),
            ),
        ];
        let a = epochs_only_grow(&ops, &[]);
        assert_eq!(kinds(&a), vec![AnomalyKind::EpochWentBack], "{a:#?}");
        assert_eq!(a[0].ops, vec![0, 1]);
        let two = vec![top(
            0,
            TaskOpKind::Get,
            1,
            (0, 5),
            Outcome::Ok,
            Some(view(1, "Running", Some((2, 9)))),
        )];
        let a = epochs_only_grow(&two, &[act(3, 1, 9, 1)]);
        assert_eq!(kinds(&a), vec![AnomalyKind::EpochShared], "{a:#?}");
    }

    #[test]
    fn a_task_left_on_a_down_node_or_stuck_is_caught() {
        let input = TaskCheckInput {
            undrained: vec![view(2, "Assigned", Some((1, 5)))],
            final_tasks: BTreeMap::from([(2, vec![view(2, "Assigned", Some((1, 5)))])]),
            final_liveness: BTreeMap::from([(2, BTreeMap::from([(1, "Down".into())]))]),
            ..Default::default()
        };
        assert_eq!(
            kinds(&nothing_left_behind(&input)),
            vec![AnomalyKind::TaskOnDownNode, AnomalyKind::TaskStuck]
        );
    }

    #[test]
    fn a_lost_or_phantom_task_and_diverged_replicas_are_caught() {
        let input = TaskCheckInput {
            ops: vec![
                top(0, TaskOpKind::Submit, 1, (0, 5), Outcome::Ok, None),
                top(1, TaskOpKind::Submit, 2, (0, 5), Outcome::Ok, None),
            ],
            final_tasks: BTreeMap::from([
                (1, vec![view(1, "Succeeded", None), view(3, "Succeeded", None)]),
                (2, vec![view(1, "Failed", None), view(3, "Succeeded", None)]),
            ]),
            ..Default::default()
        };
        let k = kinds(&check_tasks(&input));
        assert!(k.contains(&AnomalyKind::LostTask), "{k:?}");
        assert!(k.contains(&AnomalyKind::PhantomTask), "{k:?}");
        assert!(k.contains(&AnomalyKind::TasksDiverged), "{k:?}");
    }
}
