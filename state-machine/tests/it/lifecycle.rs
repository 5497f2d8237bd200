//! Task lifecycle edges, fencing and placement.

use cairn_state::Command;
use cairn_state::CommandError;
use cairn_state::Epoch;
use cairn_state::Feedback;
use cairn_state::Liveness;
use cairn_state::NodeSpec;
use cairn_state::Resource;
use cairn_state::Resources;
use cairn_state::Response;
use cairn_state::TaskAction;
use cairn_state::TaskFilter;
use cairn_state::TaskOutcome;
use cairn_state::TaskState;

use crate::Rig;

fn failed(reason: &str, retry_jitter_ms: u64) -> TaskOutcome {
    TaskOutcome::Failed {
        reason: reason.to_owned(),
        retry_jitter_ms,
    }
}

#[test]
fn t410_happy_path_pending_to_succeeded() {
    let mut rig = Rig::new();
    let n = rig.node(1, &["drive", "camera"], 2_000, 1_024);
    let t = rig.task(&["drive"], 500, 256);
    assert_eq!(rig.mission.task(t).map(|t| t.state), Some(TaskState::Pending));

    let epoch = rig.assign(t, n);
    let node = rig.mission.node(n).expect("node registered");
    assert_eq!(
        node.load,
        Resources {
            cpu_millicores: 500,
            memory_mib: 256
        },
        "load after assign"
    );
    assert_eq!(node.assigned_tasks().collect::<Vec<_>>(), vec![t]);

    rig.ok(Command::StartTask { task_id: t, epoch });
    rig.ok(Command::ReportProgress {
        task_id: t,
        epoch,
        percent: 40,
        feedback: Some(Feedback::DistanceRemaining { distance_m: 12.5 }),
    });
    let task = rig.mission.task(t).expect("task exists");
    assert_eq!(
        (task.state, task.progress_percent),
        (TaskState::Running, 40),
        "saw {task:?}"
    );

    let r = rig.ok(Command::FinishTask {
        task_id: t,
        epoch,
        outcome: TaskOutcome::Succeeded,
    });
    assert_eq!(
        r,
        Response::TaskChanged {
            task_id: t,
            state: TaskState::Succeeded
        }
    );
    let node = rig.mission.node(n).expect("node registered");
    assert_eq!(node.load, Resources::default(), "load after success: {node:?}");
    assert_eq!(rig.mission.task(t).and_then(|t| t.lease), None);
}

#[test]
fn t411_completing_a_cancelled_task_is_refused() {
    let mut rig = Rig::new();
    let n = rig.node(1, &["drive"], 1_000, 1_000);

    // Pending: cancelled at once.
    let pending = rig.task(&[], 1, 1);
    let r = rig.ok(Command::CancelTask { task_id: pending });
    assert_eq!(
        r,
        Response::TaskChanged {
            task_id: pending,
            state: TaskState::Cancelled
        }
    );
    let e = rig.err(Command::FinishTask {
        task_id: pending,
        epoch: Epoch(1),
        outcome: TaskOutcome::Succeeded,
    });
    assert_eq!(
        e,
        CommandError::IllegalTransition {
            task_id: pending,
            action: TaskAction::Succeed,
            state: TaskState::Cancelled
        }
    );

    // Running: cancel is a request, the assignee acknowledges, then nothing more.
    let t = rig.task(&["drive"], 1, 1);
    let epoch = rig.assign(t, n);
    rig.ok(Command::StartTask { task_id: t, epoch });
    rig.ok(Command::CancelTask { task_id: t });
    let task = rig.mission.task(t).expect("task exists");
    assert!(
        task.cancel_requested && task.state == TaskState::Running,
        "saw {task:?}"
    );
    rig.ok(Command::FinishTask {
        task_id: t,
        epoch,
        outcome: TaskOutcome::Cancelled,
    });
    for outcome in [TaskOutcome::Succeeded, failed("late", 0), TaskOutcome::Cancelled] {
        let e = rig.err(Command::FinishTask {
            task_id: t,
            epoch,
            outcome,
        });
        assert!(
            matches!(
                e,
                CommandError::IllegalTransition {
                    state: TaskState::Cancelled,
                    ..
                }
            ),
            "saw {e:?}"
        );
    }
    let e = rig.err(Command::CancelTask { task_id: t });
    assert!(
        matches!(
            e,
            CommandError::IllegalTransition {
                action: TaskAction::Cancel,
                ..
            }
        ),
        "saw {e:?}"
    );
}

#[test]
fn t412_progress_from_a_stale_epoch_is_refused() {
    let mut rig = Rig::new();
    let a = rig.node(1, &["drive"], 1_000, 1_000);
    let b = rig.node(2, &["drive"], 1_000, 1_000);
    let t = rig.task(&["drive"], 100, 100);
    let old = rig.assign(t, a);
    rig.ok(Command::StartTask { task_id: t, epoch: old });

    let new = match rig.ok(Command::ReassignTask { task_id: t, node_id: b }) {
        Response::TaskAssigned { epoch, .. } => epoch,
        other => panic!("reassign answered {other:?}"),
    };
    assert!(new > old, "epochs must increase: old {old}, new {new}");

    let e = rig.err(Command::ReportProgress {
        task_id: t,
        epoch: old,
        percent: 50,
        feedback: None,
    });
    assert_eq!(
        e,
        CommandError::StaleEpoch {
            task_id: t,
            presented: old,
            current: Some(new)
        }
    );
    let e = rig.err(Command::FinishTask {
        task_id: t,
        epoch: old,
        outcome: TaskOutcome::Succeeded,
    });
    assert!(matches!(e, CommandError::StaleEpoch { .. }), "saw {e:?}");
    // A made-up future epoch is no better.
    let e = rig.err(Command::StartTask {
        task_id: t,
        epoch: Epoch(new.0 + 100),
    });
    assert!(matches!(e, CommandError::StaleEpoch { .. }), "saw {e:?}");

    // The reassigned task starts over as Assigned on b.
    let task = rig.mission.task(t).expect("task exists");
    assert_eq!(
        (task.state, task.lease.map(|l| l.node_id)),
        (TaskState::Assigned, Some(b)),
        "saw {task:?}"
    );
    assert_eq!(rig.mission.node(a).map(|n| n.load), Some(Resources::default()));
    rig.ok(Command::StartTask { task_id: t, epoch: new });
}

#[test]
fn t413_epochs_are_unique_across_tasks() {
    let mut rig = Rig::new();
    let n = rig.node(1, &[], 10_000, 10_000);
    let mut seen = Vec::new();
    for _ in 0..5 {
        let t = rig.task(&[], 1, 1);
        seen.push(rig.assign(t, n));
    }
    let mut sorted = seen.clone();
    sorted.dedup();
    assert_eq!(sorted.len(), seen.len(), "epochs {seen:?}");
    assert!(seen.windows(2).all(|w| w[0] < w[1]), "epochs {seen:?}");
    assert_eq!(rig.mission.next_epoch(), Epoch(seen[4].0 + 1));
}

#[test]
fn t414_assigning_to_a_down_node_is_refused() {
    let mut rig = Rig::new();
    let n = rig.node(1, &["drive"], 1_000, 1_000);
    let t = rig.task(&["drive"], 1, 1);
    rig.ok(Command::SetLiveness {
        node_id: n,
        liveness: Liveness::Down,
    });
    assert_eq!(
        rig.err(Command::AssignTask { task_id: t, node_id: n }),
        CommandError::NodeDown { node_id: n }
    );

    // Suspect nodes keep working: the coordinator decides whether to use them.
    rig.ok(Command::SetLiveness {
        node_id: n,
        liveness: Liveness::Suspect,
    });
    rig.assign(t, n);

    let ghost = cairn_state::NodeId(99);
    let t2 = rig.task(&[], 1, 1);
    assert_eq!(
        rig.err(Command::AssignTask {
            task_id: t2,
            node_id: ghost
        }),
        CommandError::NodeNotFound { node_id: ghost }
    );
}

#[test]
fn t415_over_budget_is_refused_per_resource() {
    let mut rig = Rig::new();
    let n = rig.node(1, &[], 1_000, 512);
    let t1 = rig.task(&[], 600, 100);
    rig.assign(t1, n);

    let t2 = rig.task(&[], 500, 100);
    let e = rig.err(Command::AssignTask {
        task_id: t2,
        node_id: n,
    });
    assert_eq!(
        e,
        CommandError::OverBudget {
            node_id: n,
            task_id: t2,
            resource: Resource::Cpu,
            required: 500,
            available: 400
        }
    );
    let t3 = rig.task(&[], 100, 500);
    let e = rig.err(Command::AssignTask {
        task_id: t3,
        node_id: n,
    });
    assert!(
        matches!(
            e,
            CommandError::OverBudget {
                resource: Resource::Memory,
                available: 412,
                ..
            }
        ),
        "saw {e:?}"
    );

    // Exactly full is fine.
    let t4 = rig.task(&[], 400, 412);
    rig.assign(t4, n);
    let node = rig.mission.node(n).expect("node");
    assert_eq!(node.free(), Resources::default(), "saw {node:?}");

    // Re-leasing a task on its own node counts its own use as free.
    rig.ok(Command::ReassignTask {
        task_id: t4,
        node_id: n,
    });
}

#[test]
fn t416_missing_capability_is_refused() {
    let mut rig = Rig::new();
    let n = rig.node(1, &["drive", "camera"], 1_000, 1_000);
    let t = rig.task(&["camera", "gpu"], 1, 1);
    let e = rig.err(Command::AssignTask { task_id: t, node_id: n });
    assert_eq!(
        e,
        CommandError::MissingCapability {
            node_id: n,
            task_id: t,
            capability: "gpu".to_owned()
        }
    );
}

#[test]
fn t417_double_assignment_is_refused() {
    let mut rig = Rig::new();
    let a = rig.node(1, &[], 1_000, 1_000);
    let b = rig.node(2, &[], 1_000, 1_000);
    let t = rig.task(&[], 1, 1);
    rig.assign(t, a);
    assert_eq!(
        rig.err(Command::AssignTask { task_id: t, node_id: b }),
        CommandError::AlreadyAssigned { task_id: t, node_id: a }
    );
    assert_eq!(
        rig.err(Command::AssignTask { task_id: t, node_id: a }),
        CommandError::AlreadyAssigned { task_id: t, node_id: a }
    );
    assert_eq!(
        rig.mission
            .tasks(&TaskFilter {
                state: None,
                node_id: Some(b)
            })
            .len(),
        0
    );
}

#[test]
fn t420_node_down_releases_its_tasks_and_fences_them_off() {
    let mut rig = Rig::new();
    let a = rig.node(1, &["drive"], 1_000, 1_000);
    let b = rig.node(2, &["drive"], 1_000, 1_000);
    let running = rig.task(&["drive"], 100, 100);
    let cancelling = rig.task(&["drive"], 100, 100);
    let e_run = rig.assign(running, a);
    rig.ok(Command::StartTask {
        task_id: running,
        epoch: e_run,
    });
    let e_cancel = rig.assign(cancelling, a);
    rig.ok(Command::CancelTask { task_id: cancelling });

    let r = rig.ok(Command::SetLiveness {
        node_id: a,
        liveness: Liveness::Down,
    });
    assert_eq!(
        r,
        Response::LivenessChanged {
            node_id: a,
            liveness: Liveness::Down,
            released: vec![running],
            cancelled: vec![cancelling]
        }
    );
    assert_eq!(rig.mission.node(a).map(|n| n.load), Some(Resources::default()));
    assert_eq!(
        rig.mission.task(cancelling).map(|t| t.state),
        Some(TaskState::Cancelled)
    );

    // The deposed node cannot act any more.
    let e = rig.err(Command::ReportProgress {
        task_id: running,
        epoch: e_run,
        percent: 90,
        feedback: None,
    });
    assert_eq!(
        e,
        CommandError::StaleEpoch {
            task_id: running,
            presented: e_run,
            current: None
        }
    );
    let e = rig.err(Command::FinishTask {
        task_id: cancelling,
        epoch: e_cancel,
        outcome: TaskOutcome::Cancelled,
    });
    assert!(matches!(e, CommandError::IllegalTransition { .. }), "saw {e:?}");

    // Back to Pending, not counted as a failure, and a new, larger epoch on b.
    let task = rig.mission.task(running).expect("task");
    assert_eq!(
        (task.state, task.attempts, task.progress_percent),
        (TaskState::Pending, 0, 0),
        "saw {task:?}"
    );
    let e_new = rig.assign(running, b);
    assert!(e_new > e_cancel, "new epoch {e_new} must exceed {e_cancel}");

    // A node that comes back re-registers and is Up again.
    rig.node(1, &["drive"], 1_000, 1_000);
    assert_eq!(rig.mission.node(a).map(|n| n.liveness), Some(Liveness::Up));
}

#[test]
fn t421_failed_task_retries_with_deterministic_backoff() {
    let mut rig = Rig::new();
    let n = rig.node(1, &[], 1_000, 1_000);
    let t = rig.task(&[], 1, 1); // max 3 attempts, base 1 s, max 10 s

    let epoch = rig.assign(t, n);
    let t0 = rig.now_ms;
    let r = rig.ok(Command::FinishTask {
        task_id: t,
        epoch,
        outcome: failed("wheel slip", 0),
    });
    assert_eq!(
        r,
        Response::TaskRetrying {
            task_id: t,
            attempts: 1,
            not_before_ms: t0 + 1_000
        }
    );

    // Too early.
    rig.now_ms += 999;
    let e = rig.err(Command::AssignTask { task_id: t, node_id: n });
    assert_eq!(
        e,
        CommandError::BackingOff {
            task_id: t,
            not_before_ms: t0 + 1_000,
            now_ms: t0 + 999
        }
    );
    assert!(rig.mission.schedulable_tasks(rig.now_ms).is_empty());
    rig.now_ms += 1;
    assert_eq!(rig.mission.schedulable_tasks(rig.now_ms).len(), 1);

    // Second failure: doubled backoff plus the coordinator's jitter.
    let epoch = rig.assign(t, n);
    rig.ok(Command::StartTask { task_id: t, epoch });
    let t1 = rig.now_ms;
    let r = rig.ok(Command::FinishTask {
        task_id: t,
        epoch,
        outcome: failed("wheel slip", 250),
    });
    assert_eq!(
        r,
        Response::TaskRetrying {
            task_id: t,
            attempts: 2,
            not_before_ms: t1 + 2_000 + 250
        }
    );

    // Third failure: attempts exhausted.
    rig.now_ms += 10_000;
    let epoch = rig.assign(t, n);
    let r = rig.ok(Command::FinishTask {
        task_id: t,
        epoch,
        outcome: failed("wheel slip", 0),
    });
    assert_eq!(
        r,
        Response::TaskChanged {
            task_id: t,
            state: TaskState::Failed
        }
    );
    let task = rig.mission.task(t).expect("task");
    assert_eq!(
        (task.attempts, task.last_error.as_deref()),
        (3, Some("wheel slip")),
        "saw {task:?}"
    );
    let e = rig.err(Command::AssignTask { task_id: t, node_id: n });
    assert!(
        matches!(
            e,
            CommandError::IllegalTransition {
                state: TaskState::Failed,
                ..
            }
        ),
        "saw {e:?}"
    );
}

#[test]
fn t422_failure_after_a_cancel_request_is_final() {
    let mut rig = Rig::new();
    let n = rig.node(1, &[], 1_000, 1_000);
    let t = rig.task(&[], 1, 1);
    let epoch = rig.assign(t, n);
    rig.ok(Command::CancelTask { task_id: t });
    let r = rig.ok(Command::FinishTask {
        task_id: t,
        epoch,
        outcome: failed("aborted", 0),
    });
    assert_eq!(
        r,
        Response::TaskChanged {
            task_id: t,
            state: TaskState::Failed
        }
    );
}

#[test]
fn t423_illegal_transitions_of_a_leased_task() {
    let mut rig = Rig::new();
    let n = rig.node(1, &[], 1_000, 1_000);
    let t = rig.task(&[], 1, 1);
    let epoch = rig.assign(t, n);

    // Succeeding before starting.
    let e = rig.err(Command::FinishTask {
        task_id: t,
        epoch,
        outcome: TaskOutcome::Succeeded,
    });
    assert!(
        matches!(
            e,
            CommandError::IllegalTransition {
                state: TaskState::Assigned,
                ..
            }
        ),
        "saw {e:?}"
    );
    // Progress before starting.
    let e = rig.err(Command::ReportProgress {
        task_id: t,
        epoch,
        percent: 1,
        feedback: None,
    });
    assert!(
        matches!(
            e,
            CommandError::IllegalTransition {
                action: TaskAction::Progress,
                ..
            }
        ),
        "saw {e:?}"
    );
    // Acknowledging a cancel nobody asked for.
    assert_eq!(
        rig.err(Command::FinishTask {
            task_id: t,
            epoch,
            outcome: TaskOutcome::Cancelled
        }),
        CommandError::CancelNotRequested { task_id: t }
    );
    rig.ok(Command::StartTask { task_id: t, epoch });
    // Starting twice.
    let e = rig.err(Command::StartTask { task_id: t, epoch });
    assert!(
        matches!(
            e,
            CommandError::IllegalTransition {
                state: TaskState::Running,
                ..
            }
        ),
        "saw {e:?}"
    );
    // Progress above 100, or with a non-finite payload.
    assert_eq!(
        rig.err(Command::ReportProgress {
            task_id: t,
            epoch,
            percent: 101,
            feedback: None
        }),
        CommandError::ProgressOutOfRange {
            task_id: t,
            percent: 101
        }
    );
    let e = rig.err(Command::ReportProgress {
        task_id: t,
        epoch,
        percent: 1,
        feedback: Some(Feedback::DistanceRemaining { distance_m: f64::NAN }),
    });
    assert!(matches!(e, CommandError::NotFinite { .. }), "saw {e:?}");
    // Forgetting a live task.
    let e = rig.err(Command::ForgetTask { task_id: t });
    assert!(
        matches!(
            e,
            CommandError::IllegalTransition {
                action: TaskAction::Forget,
                ..
            }
        ),
        "saw {e:?}"
    );
    // Unknown task.
    let ghost = cairn_state::TaskId(999);
    assert_eq!(
        rig.err(Command::CancelTask { task_id: ghost }),
        CommandError::TaskNotFound { task_id: ghost }
    );
}

#[test]
fn t424_unassign_returns_to_pending_and_forget_drops_finished() {
    let mut rig = Rig::new();
    let n = rig.node(1, &[], 1_000, 1_000);
    let t = rig.task(&[], 10, 10);
    let epoch = rig.assign(t, n);
    let r = rig.ok(Command::UnassignTask { task_id: t });
    assert_eq!(
        r,
        Response::TaskChanged {
            task_id: t,
            state: TaskState::Pending
        }
    );
    let e = rig.err(Command::StartTask { task_id: t, epoch });
    assert!(matches!(e, CommandError::StaleEpoch { current: None, .. }), "saw {e:?}");
    let e = rig.err(Command::UnassignTask { task_id: t });
    assert!(
        matches!(
            e,
            CommandError::IllegalTransition {
                action: TaskAction::Unassign,
                ..
            }
        ),
        "saw {e:?}"
    );
    let e = rig.err(Command::ReassignTask { task_id: t, node_id: n });
    assert!(
        matches!(
            e,
            CommandError::IllegalTransition {
                action: TaskAction::Reassign,
                ..
            }
        ),
        "saw {e:?}"
    );

    rig.ok(Command::CancelTask { task_id: t });
    rig.ok(Command::ForgetTask { task_id: t });
    assert!(rig.mission.task(t).is_none());
    // Ids are never reused.
    let t2 = rig.task(&[], 1, 1);
    assert!(t2 > t, "new id {t2} after forgotten {t}");
}

#[test]
fn t425_node_registry_protects_placed_tasks() {
    let mut rig = Rig::new();
    let n = rig.node(1, &["drive", "camera"], 1_000, 1_000);
    let t = rig.task(&["camera"], 600, 600);
    rig.assign(t, n);

    let shrink = NodeSpec {
        id: n,
        addresses: vec!["10.0.0.1:7400".to_owned()],
        capabilities: ["drive", "camera"].iter().map(|c| (*c).to_owned()).collect(),
        budget: Resources {
            cpu_millicores: 500,
            memory_mib: 1_000,
        },
    };
    let e = rig.err(Command::RegisterNode(shrink.clone()));
    assert!(
        matches!(
            e,
            CommandError::BudgetBelowLoad {
                resource: Resource::Cpu,
                ..
            }
        ),
        "saw {e:?}"
    );
    let drop_camera = NodeSpec {
        capabilities: ["drive"].iter().map(|c| (*c).to_owned()).collect(),
        budget: Resources {
            cpu_millicores: 1_000,
            memory_mib: 1_000,
        },
        ..shrink
    };
    let e = rig.err(Command::RegisterNode(drop_camera));
    assert_eq!(
        e,
        CommandError::CapabilityInUse {
            node_id: n,
            capability: "camera".to_owned(),
            task_id: t
        }
    );

    assert_eq!(
        rig.err(Command::DeregisterNode { node_id: n }),
        CommandError::NodeBusy { node_id: n, tasks: 1 }
    );
    rig.ok(Command::SetLiveness {
        node_id: n,
        liveness: Liveness::Down,
    });
    rig.ok(Command::DeregisterNode { node_id: n });
    assert!(rig.mission.node(n).is_none());
}

#[test]
fn t426_task_queries_filter_by_state_and_node() {
    let mut rig = Rig::new();
    let a = rig.node(1, &[], 1_000, 1_000);
    let b = rig.node(2, &[], 1_000, 1_000);
    let t1 = rig.task(&[], 1, 1);
    let t2 = rig.task(&[], 1, 1);
    let t3 = rig.task(&[], 1, 1);
    let e1 = rig.assign(t1, a);
    rig.assign(t2, b);
    rig.ok(Command::StartTask { task_id: t1, epoch: e1 });

    let ids = |f: TaskFilter, rig: &Rig| rig.mission.tasks(&f).iter().map(|t| t.id).collect::<Vec<_>>();
    assert_eq!(ids(TaskFilter::default(), &rig), vec![t1, t2, t3]);
    assert_eq!(
        ids(
            TaskFilter {
                state: Some(TaskState::Running),
                node_id: None
            },
            &rig
        ),
        vec![t1]
    );
    assert_eq!(
        ids(
            TaskFilter {
                state: None,
                node_id: Some(b)
            },
            &rig
        ),
        vec![t2]
    );
    assert_eq!(
        ids(
            TaskFilter {
                state: Some(TaskState::Running),
                node_id: Some(b)
            },
            &rig
        ),
        Vec::<cairn_state::TaskId>::new()
    );
    assert_eq!(
        rig.mission
            .schedulable_tasks(rig.now_ms)
            .iter()
            .map(|t| t.id)
            .collect::<Vec<_>>(),
        vec![t3]
    );
    assert_eq!(rig.mission.nodes().count(), 2);
}
