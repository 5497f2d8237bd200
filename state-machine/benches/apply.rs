//! Apply throughput and snapshot cost.
//!
//! - `apply/mixed`: a stream of 10k commands in the proportions of a busy
//!   mission (task lifecycle with progress reports, parameter sets, sensor
//!   reports) applied to a state that already holds 100 nodes, 1k parameters
//!   and 1k live tasks. Target: well over 500k commands/s on one core.
//! - `snapshot/encode` and `snapshot/restore` for 10k tasks, 100 nodes and 1k
//!   parameters. Target: < 50 ms each.
//!
//! Run: `cargo bench -p cairn-state --bench apply` (add `-- --quick` for a
//! short run).

use std::hint::black_box;

use cairn_state::ApplyCtx;
use cairn_state::Command;
use cairn_state::Epoch;
use cairn_state::Feedback;
use cairn_state::Mission;
use cairn_state::NodeId;
use cairn_state::NodeSpec;
use cairn_state::ParamKind;
use cairn_state::ParamValue;
use cairn_state::Resources;
use cairn_state::Response;
use cairn_state::RetryPolicy;
use cairn_state::SensorHealth;
use cairn_state::StateMachine;
use cairn_state::TaskId;
use cairn_state::TaskOutcome;
use cairn_state::TaskSpec;
use criterion::criterion_group;
use criterion::criterion_main;
use criterion::BatchSize;
use criterion::Criterion;
use criterion::Throughput;

const NODES: u64 = 100;
const PARAMS: usize = 1_000;

struct Driver {
    mission: Mission,
    index: u64,
}

impl Driver {
    fn apply(&mut self, command: &Command) -> Response {
        self.index += 1;
        let ctx = ApplyCtx {
            index: self.index,
            term: 1,
            timestamp_ms: 1_700_000_000_000 + self.index,
        };
        match self.mission.apply(command, &ctx) {
            Ok(response) => response,
            Err(e) => panic!("bench setup command {command:?} refused: {e}"),
        }
    }
}

fn spec(i: u64) -> TaskSpec {
    TaskSpec {
        kind: "navigate".to_owned(),
        required_capabilities: [["drive", "camera", "lidar"][(i % 3) as usize].to_owned()]
            .into_iter()
            .collect(),
        resources: Resources {
            cpu_millicores: 10,
            memory_mib: 8,
        },
        priority: (i % 8) as u8,
        deadline_ms: Some(1_700_000_100_000),
        retry: RetryPolicy::default(),
        goal: None,
    }
}

/// 100 nodes and 1k parameters.
fn base() -> Driver {
    let mut d = Driver {
        mission: Mission::default(),
        index: 0,
    };
    for id in 1..=NODES {
        d.apply(&Command::RegisterNode(NodeSpec {
            id: NodeId(id),
            addresses: vec![format!("10.0.{}.{}:7400", id / 256, id % 256)],
            capabilities: ["drive", "camera", "lidar", "gpu"]
                .iter()
                .map(|c| (*c).to_owned())
                .collect(),
            budget: Resources {
                cpu_millicores: 100_000,
                memory_mib: 100_000,
            },
        }));
    }
    for i in 0..PARAMS {
        d.apply(&Command::DeclareParam {
            name: format!("agent.p{i:04}"),
            description: "a benchmark parameter".to_owned(),
            kind: ParamKind::Int { min: 0, max: 1_000_000 },
            value: ParamValue::Int(0),
        });
    }
    d
}

fn create_and_assign(d: &mut Driver, i: u64) -> (TaskId, Epoch) {
    let task_id = match d.apply(&Command::CreateTask(spec(i))) {
        Response::TaskCreated { task_id } => task_id,
        other => panic!("create answered {other:?}"),
    };
    let node_id = NodeId(1 + i % NODES);
    match d.apply(&Command::AssignTask { task_id, node_id }) {
        Response::TaskAssigned { epoch, .. } => (task_id, epoch),
        other => panic!("assign answered {other:?}"),
    }
}

/// The base plus 1k live tasks, and a recorded stream of 10k commands
/// (resolved ids and epochs) that applies cleanly to it.
fn mixed_stream() -> (Mission, Vec<Command>) {
    let mut d = base();
    for i in 0..1_000 {
        create_and_assign(&mut d, i);
    }
    let start = d.mission.clone();
    let mut stream = Vec::with_capacity(10_000);
    let mut record = |d: &mut Driver, c: Command| {
        let r = d.apply(&c);
        stream.push(c);
        r
    };
    for i in 0..1_000u64 {
        // 10 commands per cycle: one task's whole life, a parameter change
        // and a sensor report.
        let task_id = match record(&mut d, Command::CreateTask(spec(i))) {
            Response::TaskCreated { task_id } => task_id,
            other => panic!("create answered {other:?}"),
        };
        let epoch = match record(
            &mut d,
            Command::AssignTask {
                task_id,
                node_id: NodeId(1 + i % NODES),
            },
        ) {
            Response::TaskAssigned { epoch, .. } => epoch,
            other => panic!("assign answered {other:?}"),
        };
        record(&mut d, Command::StartTask { task_id, epoch });
        for percent in [25, 50, 75] {
            record(
                &mut d,
                Command::ReportProgress {
                    task_id,
                    epoch,
                    percent,
                    feedback: Some(Feedback::DistanceRemaining {
                        distance_m: f64::from(100 - percent),
                    }),
                },
            );
        }
        record(
            &mut d,
            Command::FinishTask {
                task_id,
                epoch,
                outcome: TaskOutcome::Succeeded,
            },
        );
        record(&mut d, Command::ForgetTask { task_id });
        record(
            &mut d,
            Command::SetParam {
                name: format!("agent.p{:04}", i % PARAMS as u64),
                value: ParamValue::Int(i as i64),
            },
        );
        let health = if i % 2 == 0 {
            SensorHealth::Degraded
        } else {
            SensorHealth::Ok
        };
        record(
            &mut d,
            Command::ReportSensorHealth {
                sensor: "camera".to_owned(),
                health,
            },
        );
    }
    (start, stream)
}

/// 10k tasks across 100 nodes in every state, and 1k parameters.
fn big_state() -> Mission {
    let mut d = base();
    for i in 0..10_000u64 {
        let (task_id, epoch) = create_and_assign(&mut d, i);
        match i % 4 {
            0 => {}
            1 => {
                d.apply(&Command::StartTask { task_id, epoch });
                d.apply(&Command::ReportProgress {
                    task_id,
                    epoch,
                    percent: 30,
                    feedback: Some(Feedback::Eta { remaining_ms: 5_000 }),
                });
            }
            2 => {
                d.apply(&Command::StartTask { task_id, epoch });
                d.apply(&Command::FinishTask {
                    task_id,
                    epoch,
                    outcome: TaskOutcome::Succeeded,
                });
            }
            _ => {
                d.apply(&Command::FinishTask {
                    task_id,
                    epoch,
                    outcome: TaskOutcome::Failed {
                        reason: "wheel slip".to_owned(),
                        retry_jitter_ms: i % 100,
                    },
                });
            }
        }
    }
    d.mission
}

fn bench_apply(c: &mut Criterion) {
    let (start, stream) = mixed_stream();
    // The stream must apply cleanly, or the benchmark measures rejections.
    let mut check = start.clone();
    for (i, command) in stream.iter().enumerate() {
        let ctx = ApplyCtx {
            index: i as u64 + 1,
            term: 1,
            timestamp_ms: 1_700_000_000_000 + i as u64,
        };
        if let Err(e) = check.apply(command, &ctx) {
            panic!("stream command {i} {command:?} refused: {e}");
        }
    }
    let mut group = c.benchmark_group("apply");
    group.throughput(Throughput::Elements(stream.len() as u64));
    group.bench_function("mixed", |b| {
        b.iter_batched(
            || start.clone(),
            |mut mission| {
                for (i, command) in stream.iter().enumerate() {
                    let ctx = ApplyCtx {
                        index: i as u64 + 1,
                        term: 1,
                        timestamp_ms: 1_700_000_000_000 + i as u64,
                    };
                    let _ = black_box(mission.apply(command, &ctx));
                }
                mission
            },
            BatchSize::LargeInput,
        )
    });
    group.finish();
}

fn bench_snapshot(c: &mut Criterion) {
    let mission = big_state();
    let bytes = mission.snapshot();
    println!(
        "snapshot of {} tasks, {} nodes, {} parameters: {} bytes ({:.2} MiB)",
        mission.task_count(),
        mission.nodes().count(),
        mission.params().count(),
        bytes.len(),
        bytes.len() as f64 / (1024.0 * 1024.0)
    );
    let mut group = c.benchmark_group("snapshot");
    group.throughput(Throughput::Bytes(bytes.len() as u64));
    group.bench_function("encode", |b| b.iter(|| black_box(mission.snapshot())));
    group.bench_function("restore", |b| {
        b.iter(|| match Mission::restore(black_box(&bytes)) {
            Ok(m) => m,
            Err(e) => panic!("restore failed: {e}"),
        })
    });
    group.finish();
}

criterion_group!(benches, bench_apply, bench_snapshot);
criterion_main!(benches);
