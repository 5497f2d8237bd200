//! Placement: which node gets which pending task.
//!
//! [`plan`] walks the schedulable tasks in priority order (highest first,
//! then oldest), keeps the nodes that are `Up`, have every required
//! capability and enough free cpu and memory (counting what this pass already
//! placed), and lets a [`PlacementPolicy`] pick among them. A task that fits
//! nowhere stays `Pending` and gets a reason the operator can read. Pure: the
//! same state gives the same plan on every node, so a new coordinator carries
//! on exactly where the old one stopped.
//!
//! A node is **draining** (`cairn node drain ID`) while the boolean
//! parameter [`drain_param`]`(ID)` is true: it keeps the tasks it has but
//! gets no new ones. The mark is a replicated parameter rather than a field
//! of the registry so that it needs no new command or snapshot format —
//! draining is what one does *during* a rolling upgrade, while old and new
//! releases run side by side, and an old node would not decode a new
//! command (it would apply as a no-op there and the states would diverge).

use std::collections::BTreeMap;
use std::collections::BTreeSet;

use cairn_state::Liveness;
use cairn_state::Mission;
use cairn_state::NodeId;
use cairn_state::Resources;
use cairn_state::Task;
use cairn_state::TaskId;
use cairn_state::TaskSpec;
use cairn_state::TaskState;

use crate::config::PolicyName;

/// A node that could take a task, as the policy sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Candidate {
    /// The node.
    pub id: NodeId,
    /// Its budget.
    pub budget: Resources,
    /// What its tasks use now (including this pass's placements).
    pub load: Resources,
    /// How many tasks it holds (including this pass's placements).
    pub tasks: usize,
}

impl Candidate {
    /// Utilisation in permille after adding `extra`: the larger of the cpu
    /// and memory fractions. Integer arithmetic so every node ranks alike.
    pub fn utilisation_permille(&self, extra: Resources) -> u64 {
        // An empty budget is full as soon as anything is used.
        let frac = |used: u64, budget: u64| {
            used.saturating_mul(1000)
                .checked_div(budget)
                .unwrap_or(if used == 0 { 0 } else { 1000 })
        };
        let cpu = frac(
            self.load.cpu_millicores.saturating_add(extra.cpu_millicores),
            self.budget.cpu_millicores,
        );
        let mem = frac(
            self.load.memory_mib.saturating_add(extra.memory_mib),
            self.budget.memory_mib,
        );
        cpu.max(mem)
    }
}

/// Picks one node among those that can take a task.
///
/// `fits` holds only nodes that are up, have every required capability and
/// enough free budget, sorted by node id. Implementations must be
/// deterministic (break ties on the node id), because a newly elected
/// coordinator must make the same choices.
pub trait PlacementPolicy: Send + Sync + 'static {
    /// Name for logs and status.
    fn name(&self) -> &'static str;
    /// The chosen node, `None` to leave the task pending.
    fn choose(&self, task: &TaskSpec, fits: &[Candidate]) -> Option<NodeId>;
}

/// The rover guide's least-loaded balancer: lowest utilisation after
/// placement, then fewest tasks, then lowest id. Spreads work, so one dead
/// node costs as few tasks as possible.
#[derive(Clone, Copy, Debug, Default)]
pub struct LeastLoaded;

impl PlacementPolicy for LeastLoaded {
    fn name(&self) -> &'static str {
        "least-loaded"
    }

    fn choose(&self, task: &TaskSpec, fits: &[Candidate]) -> Option<NodeId> {
        fits.iter()
            .min_by_key(|c| (c.utilisation_permille(task.resources), c.tasks, c.id))
            .map(|c| c.id)
    }
}

/// Best fit: the node that will be fullest after placement, then lowest id.
/// Keeps other nodes empty for big tasks (and for powering down).
#[derive(Clone, Copy, Debug, Default)]
pub struct BinPack;

impl PlacementPolicy for BinPack {
    fn name(&self) -> &'static str {
        "bin-pack"
    }

    fn choose(&self, task: &TaskSpec, fits: &[Candidate]) -> Option<NodeId> {
        fits.iter()
            .min_by_key(|c| (std::cmp::Reverse(c.utilisation_permille(task.resources)), c.id))
            .map(|c| c.id)
    }
}

/// The policy a config names.
pub fn policy_for(name: PolicyName) -> Box<dyn PlacementPolicy> {
    match name {
        PolicyName::LeastLoaded => Box::new(LeastLoaded),
        PolicyName::BinPack => Box::new(BinPack),
    }
}

/// One scheduling pass's decisions.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Schedule {
    /// Tasks to assign, in the order to propose them.
    pub assignments: Vec<(TaskId, NodeId)>,
    /// Tasks left pending, with the reason.
    pub unplaceable: BTreeMap<TaskId, String>,
}

/// Tasks and nodes a scheduling pass leaves alone.
#[derive(Clone, Debug, Default)]
pub struct Exclusions {
    /// Tasks held back, e.g. while a deposed holder's lease may still run.
    pub tasks: BTreeSet<TaskId>,
    /// Nodes that get no new work although the state says `Up`, e.g. not
    /// heard from since this coordinator took over.
    pub nodes: BTreeSet<NodeId>,
}

/// Prefix of the parameters that mark a node draining; see [`drain_param`].
pub const DRAIN_PARAM_PREFIX: &str = "cluster.drain.node.";

/// The boolean parameter that, when true, keeps new tasks off node `id`.
pub fn drain_param(id: NodeId) -> String {
    format!("{DRAIN_PARAM_PREFIX}{}", id.0)
}

/// Whether node `id` is draining (its drain parameter is declared and true).
pub fn is_draining(mission: &Mission, id: NodeId) -> bool {
    mission
        .param(&drain_param(id))
        .is_some_and(|p| p.value == cairn_state::ParamValue::Bool(true))
}

/// The nodes that may get new work: up, not excluded, not draining; with
/// their capabilities.
fn candidates<'m>(mission: &'m Mission, skip: &Exclusions) -> Vec<(Candidate, &'m BTreeSet<String>)> {
    mission
        .nodes()
        .filter(|n| n.liveness == Liveness::Up && !skip.nodes.contains(&n.id) && !is_draining(mission, n.id))
        .map(|n| {
            (
                Candidate {
                    id: n.id,
                    budget: n.budget,
                    load: n.load,
                    tasks: n.assigned_tasks().count(),
                },
                &n.capabilities,
            )
        })
        .collect()
}

/// The indexes (into `nodes`) of the nodes with every capability `spec`
/// requires, and those of them with room for it.
fn capable_and_fitting(spec: &TaskSpec, nodes: &[(Candidate, &BTreeSet<String>)]) -> (Vec<usize>, Vec<Candidate>) {
    let capable: Vec<usize> = (0..nodes.len())
        .filter(|&i| spec.required_capabilities.iter().all(|c| nodes[i].1.contains(c)))
        .collect();
    let fits: Vec<Candidate> = capable
        .iter()
        .map(|&i| &nodes[i].0)
        .filter(|c| {
            c.load
                .checked_add(spec.resources)
                .is_some_and(|after| after.fits_within(c.budget))
        })
        .cloned()
        .collect();
    (capable, fits)
}

/// Why pending tasks fit no node now, judged on one state: the way a
/// coordinator's pass judges them, but without the coordinator's local
/// exclusions (nodes not heard from since it took over, tasks held back)
/// and without the tasks the same pass places first; so any node can
/// answer it, e.g. for `cairn task get`. Built once for many tasks.
pub struct Placeability<'m> {
    nodes: Vec<(Candidate, &'m BTreeSet<String>)>,
}

impl<'m> Placeability<'m> {
    /// The nodes of `mission` that may get new work.
    pub fn new(mission: &'m Mission) -> Self {
        Placeability {
            nodes: candidates(mission, &Exclusions::default()),
        }
    }

    /// Why `task` fits no node, `None` if some node could take it (or it
    /// is not pending).
    pub fn why(&self, task: &Task) -> Option<String> {
        if task.state != TaskState::Pending {
            return None;
        }
        let (capable, fits) = capable_and_fitting(&task.spec, &self.nodes);
        fits.is_empty()
            .then(|| unplaceable_reason(&task.spec, &self.nodes, &capable, true))
    }
}

/// Why pending task `task` fits no node now; see [`Placeability`].
pub fn why_unplaceable(mission: &Mission, task: &Task) -> Option<String> {
    Placeability::new(mission).why(task)
}

/// Plans placements for the tasks schedulable at `now_ms`.
pub fn plan(mission: &Mission, now_ms: u64, policy: &dyn PlacementPolicy, skip: &Exclusions) -> Schedule {
    let mut nodes = candidates(mission, skip);
    let mut out = Schedule::default();
    for task in mission.schedulable_tasks(now_ms) {
        if skip.tasks.contains(&task.id) {
            continue;
        }
        let spec = &task.spec;
        let (capable, fits) = capable_and_fitting(spec, &nodes);
        let chosen = policy.choose(spec, &fits).filter(|id| fits.iter().any(|c| c.id == *id));
        match chosen {
            Some(node_id) => {
                if let Some((c, _)) = nodes.iter_mut().find(|(c, _)| c.id == node_id) {
                    c.load = c.load.checked_add(spec.resources).unwrap_or(c.load);
                    c.tasks += 1;
                }
                out.assignments.push((task.id, node_id));
            }
            None => {
                let reason = unplaceable_reason(spec, &nodes, &capable, fits.is_empty());
                out.unplaceable.insert(task.id, reason);
            }
        }
    }
    out
}

fn unplaceable_reason(
    spec: &TaskSpec,
    nodes: &[(Candidate, &BTreeSet<String>)],
    capable: &[usize],
    none_fit: bool,
) -> String {
    if nodes.is_empty() {
        return "no node is up".to_owned();
    }
    if capable.is_empty() {
        let missing: Vec<&str> = spec
            .required_capabilities
            .iter()
            .filter(|c| !nodes.iter().any(|(_, caps)| caps.contains(*c)))
            .map(String::as_str)
            .collect();
        return if missing.is_empty() {
            format!(
                "no up node has every capability of {:?}",
                spec.required_capabilities.iter().collect::<Vec<_>>()
            )
        } else {
            format!("no up node has capability {missing:?}")
        };
    }
    if none_fit {
        let best = capable
            .iter()
            .map(|&i| &nodes[i].0)
            .map(|c| (c.id, c.budget.checked_sub(c.load).unwrap_or_default()))
            .max_by_key(|(id, free)| (free.cpu_millicores.min(free.memory_mib), std::cmp::Reverse(*id)));
        let (id, free) = best.unwrap_or((NodeId(0), Resources::default()));
        return format!(
            "needs {} millicores and {} MiB; no capable up node has that free (node {id} has {} millicores and {} MiB)",
            spec.resources.cpu_millicores, spec.resources.memory_mib, free.cpu_millicores, free.memory_mib
        );
    }
    "the placement policy declined every capable node".to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use cairn_state::ApplyCtx;
    use cairn_state::Command;
    use cairn_state::NodeSpec;
    use cairn_state::RetryPolicy;
    use cairn_state::StateMachine;

    fn ctx() -> ApplyCtx {
        ApplyCtx {
            index: 1,
            term: 1,
            timestamp_ms: 1_000,
        }
    }

    fn node(m: &mut Mission, id: u64, caps: &[&str], cpu: u64, mem: u64) {
        m.apply(
            &Command::RegisterNode(NodeSpec {
                id: NodeId(id),
                addresses: vec![],
                capabilities: caps.iter().map(|c| c.to_string()).collect(),
                budget: Resources {
                    cpu_millicores: cpu,
                    memory_mib: mem,
                },
            }),
            &ctx(),
        )
        .unwrap();
    }

    fn task(m: &mut Mission, caps: &[&str], cpu: u64, mem: u64, priority: u8) -> TaskId {
        let r = m
            .apply(
                &Command::CreateTask(TaskSpec {
                    kind: "work".into(),
                    required_capabilities: caps.iter().map(|c| c.to_string()).collect(),
                    resources: Resources {
                        cpu_millicores: cpu,
                        memory_mib: mem,
                    },
                    priority,
                    deadline_ms: None,
                    retry: RetryPolicy::default(),
                    goal: None,
                }),
                &ctx(),
            )
            .unwrap();
        match r {
            cairn_state::Response::TaskCreated { task_id } => task_id,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn least_loaded_spreads_with_id_tie_breaks_and_respects_capabilities() {
        let mut m = Mission::default();
        node(&mut m, 3, &["drive"], 1000, 1000);
        node(&mut m, 1, &["drive"], 1000, 1000);
        node(&mut m, 2, &["drive", "lidar"], 1000, 1000);
        let t: Vec<TaskId> = (0..3).map(|_| task(&mut m, &["drive"], 100, 100, 0)).collect();
        let lidar = task(&mut m, &["lidar"], 100, 100, 0);
        let s = plan(&m, 1_000, &LeastLoaded, &Exclusions::default());
        assert_eq!(
            s.assignments,
            vec![
                (t[0], NodeId(1)),
                (t[1], NodeId(2)),
                (t[2], NodeId(3)),
                (lidar, NodeId(2))
            ],
            "ties go to the lowest id; the lidar task only fits node 2"
        );
        assert!(s.unplaceable.is_empty());
    }

    #[test]
    fn a_draining_node_gets_no_new_task_until_undrained() {
        let mut m = Mission::default();
        node(&mut m, 1, &["drive"], 1000, 1000);
        node(&mut m, 2, &["drive"], 1000, 1000);
        let declare = Command::DeclareParam {
            name: drain_param(NodeId(1)),
            description: "drain".into(),
            kind: cairn_state::ParamKind::Bool,
            value: cairn_state::ParamValue::Bool(true),
        };
        m.apply(&declare, &ctx()).unwrap();
        assert!(is_draining(&m, NodeId(1)) && !is_draining(&m, NodeId(2)));
        let t: Vec<TaskId> = (0..2).map(|_| task(&mut m, &["drive"], 100, 100, 0)).collect();
        let s = plan(&m, 1_000, &LeastLoaded, &Exclusions::default());
        assert_eq!(s.assignments, vec![(t[0], NodeId(2)), (t[1], NodeId(2))]);

        let only_one = task(&mut m, &[], 2000, 100, 9);
        let s = plan(&m, 1_000, &LeastLoaded, &Exclusions::default());
        assert!(
            s.unplaceable.contains_key(&only_one),
            "too big for node 2, and node 1 drains: {s:?}"
        );

        let undrain = Command::SetParam {
            name: drain_param(NodeId(1)),
            value: cairn_state::ParamValue::Bool(false),
        };
        m.apply(&undrain, &ctx()).unwrap();
        let s = plan(&m, 1_000, &LeastLoaded, &Exclusions::default());
        assert_eq!(s.assignments.first().map(|a| a.1), Some(NodeId(1)), "{s:?}");
    }

    #[test]
    fn bin_pack_fills_the_fullest_node_first() {
        let mut m = Mission::default();
        node(&mut m, 1, &[], 1000, 1000);
        node(&mut m, 2, &[], 1000, 1000);
        let t: Vec<TaskId> = (0..3).map(|_| task(&mut m, &[], 400, 100, 0)).collect();
        let s = plan(&m, 1_000, &BinPack, &Exclusions::default());
        assert_eq!(
            s.assignments,
            vec![(t[0], NodeId(1)), (t[1], NodeId(1)), (t[2], NodeId(2))]
        );
    }

    #[test]
    fn priority_first_budgets_counted_and_reasons_given() {
        let mut m = Mission::default();
        node(&mut m, 1, &["camera"], 1000, 512);
        let low = task(&mut m, &[], 600, 100, 1);
        let high = task(&mut m, &[], 600, 100, 9);
        let gpu = task(&mut m, &["gpu"], 1, 1, 5);
        let huge = task(&mut m, &[], 10, 4096, 0);
        let s = plan(&m, 1_000, &LeastLoaded, &Exclusions::default());
        assert_eq!(
            s.assignments,
            vec![(high, NodeId(1))],
            "the higher priority wins the cpu"
        );
        let reasons = &s.unplaceable;
        assert!(reasons[&low].contains("600 millicores"), "{reasons:?}");
        assert!(reasons[&gpu].contains("capability [\"gpu\"]"), "{reasons:?}");
        assert!(reasons[&huge].contains("4096 MiB"), "{reasons:?}");
        let why = |t: TaskId| m.task(t).and_then(|t| why_unplaceable(&m, t));
        assert_eq!(why(gpu), Some(reasons[&gpu].clone()), "any node tells the same reason");
        assert!(why(huge).is_some_and(|r| r.contains("4096 MiB")), "{:?}", why(huge));
        assert_eq!(why(low), None, "fits the idle node; only this pass gave its cpu away");

        m.apply(
            &Command::SetLiveness {
                node_id: NodeId(1),
                liveness: Liveness::Suspect,
            },
            &ctx(),
        )
        .unwrap();
        let s = plan(&m, 1_000, &LeastLoaded, &Exclusions::default());
        assert!(s.assignments.is_empty(), "no new work for a suspect node");
        assert_eq!(s.unplaceable[&high], "no node is up");
        let skip = Exclusions {
            tasks: [high].into(),
            nodes: BTreeSet::new(),
        };
        let s = plan(&m, 1_000, &LeastLoaded, &skip);
        assert!(!s.unplaceable.contains_key(&high), "skipped tasks are not judged");
    }
}
