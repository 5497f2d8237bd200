//! cairn-state's one integration test binary.
//!
//! - `lifecycle`: every task lifecycle edge, legal and illegal, plus fencing
//!   and placement invariants.
//! - `domain`: plan, parameters, sensor health, node registry.
//! - `snapshot`: format version, corruption, round trips.
//! - `props`: property tests over random command sequences.
//!
//! Every test drives the state through [`Rig`], which applies commands with a
//! log index and clock it advances itself, and checks after every refusal
//! that the state is byte-for-byte unchanged.

mod domain;
mod lifecycle;
mod props;
mod snapshot;

use std::collections::BTreeSet;

use cairn_state::ApplyCtx;
use cairn_state::Command;
use cairn_state::CommandError;
use cairn_state::Epoch;
use cairn_state::Mission;
use cairn_state::NodeId;
use cairn_state::NodeSpec;
use cairn_state::Resources;
use cairn_state::Response;
use cairn_state::RetryPolicy;
use cairn_state::StateMachine;
use cairn_state::TaskId;
use cairn_state::TaskSpec;

/// A mission plus the log position and clock the tests control.
pub struct Rig {
    pub mission: Mission,
    pub index: u64,
    pub now_ms: u64,
}

impl Default for Rig {
    fn default() -> Self {
        Rig::new()
    }
}

impl Rig {
    pub fn new() -> Rig {
        Rig {
            mission: Mission::default(),
            index: 0,
            now_ms: 1_700_000_000_000,
        }
    }

    pub fn ctx(&mut self) -> ApplyCtx {
        self.index += 1;
        ApplyCtx {
            index: self.index,
            term: 1,
            timestamp_ms: self.now_ms,
        }
    }

    /// Applies a command that must be accepted.
    pub fn ok(&mut self, command: Command) -> Response {
        let ctx = self.ctx();
        match self.mission.apply(&command, &ctx) {
            Ok(response) => {
                if let Err(broken) = self.mission.check_invariants() {
                    panic!("after {command:?} -> {response:?}, invariant broken: {broken}");
                }
                response
            }
            Err(e) => panic!("{command:?} was refused: {e} ({e:?})"),
        }
    }

    /// Applies a command that must be refused, and checks the state did not
    /// change.
    pub fn err(&mut self, command: Command) -> CommandError {
        let before = self.mission.snapshot();
        let ctx = self.ctx();
        match self.mission.apply(&command, &ctx) {
            Ok(response) => panic!("{command:?} was accepted: {response:?}"),
            Err(e) => {
                let after = self.mission.snapshot();
                assert!(before == after, "{command:?} was refused ({e}) but changed the state");
                println!("refused as expected: {e}");
                e
            }
        }
    }

    pub fn node(&mut self, id: u64, caps: &[&str], cpu_millicores: u64, memory_mib: u64) -> NodeId {
        let node_id = NodeId(id);
        self.ok(Command::RegisterNode(NodeSpec {
            id: node_id,
            addresses: vec![format!("10.0.0.{id}:7400")],
            capabilities: caps.iter().map(|c| (*c).to_owned()).collect(),
            budget: Resources {
                cpu_millicores,
                memory_mib,
            },
        }));
        node_id
    }

    pub fn task(&mut self, caps: &[&str], cpu_millicores: u64, memory_mib: u64) -> TaskId {
        match self.ok(Command::CreateTask(spec(caps, cpu_millicores, memory_mib))) {
            Response::TaskCreated { task_id } => task_id,
            other => panic!("create answered {other:?}"),
        }
    }

    pub fn assign(&mut self, task_id: TaskId, node_id: NodeId) -> Epoch {
        match self.ok(Command::AssignTask { task_id, node_id }) {
            Response::TaskAssigned { epoch, .. } => epoch,
            other => panic!("assign answered {other:?}"),
        }
    }
}

pub fn spec(caps: &[&str], cpu_millicores: u64, memory_mib: u64) -> TaskSpec {
    TaskSpec {
        kind: "navigate".to_owned(),
        required_capabilities: caps.iter().map(|c| (*c).to_owned()).collect::<BTreeSet<_>>(),
        resources: Resources {
            cpu_millicores,
            memory_mib,
        },
        priority: 5,
        deadline_ms: None,
        retry: RetryPolicy {
            max_attempts: 3,
            backoff_ms_base: 1_000,
            backoff_ms_max: 10_000,
        },
        goal: None,
    }
}
