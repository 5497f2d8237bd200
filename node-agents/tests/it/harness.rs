//! In-process clusters over real loopback sockets, with agents, coordinators
//! and a recorded history of what every handler did.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::Mutex;
use std::time::Duration;

use cairn_agents::ActuationEvent;
use cairn_agents::Agent;
use cairn_agents::AgentConfig;
use cairn_agents::Coordinator;
use cairn_hal::action::ActionContext;
use cairn_hal::action::ActionFeedback;
use cairn_hal::action::ActionFuture;
use cairn_hal::action::ActionHandler;
use cairn_hal::action::ActionOutcome;
use cairn_hal::action::FeedbackDetail;
use cairn_hal::action::Limits;
use cairn_hal::action::ParamUpdate;
use cairn_hal::action::ParamVal;
use cairn_raft::LinkControl;
use cairn_raft::Member;
use cairn_raft::RaftNode;
use cairn_raft::RaftNodeConfig;
use cairn_raft::Role;
use cairn_raft::TcpDialer;
use cairn_state::Command;
use cairn_state::CommandError;
use cairn_state::Epoch;
use cairn_state::Mission;
use cairn_state::NodeId;
use cairn_state::NodeSpec;
use cairn_state::Resources;
use cairn_state::Response;
use cairn_state::RetryPolicy;
use cairn_state::TaskId;
use cairn_state::TaskSpec;
use cairn_state::TaskState;
use tempfile::TempDir;
use tokio::time::Instant;

/// One thing that happened, with when. Some fields are only read through
/// `Debug` when a check fails.
#[allow(dead_code)]
#[derive(Clone, Debug)]
pub enum Event {
    /// A node's belief that it may actuate a task changed.
    Permit(ActuationEvent),
    /// A handler published feedback.
    Feedback {
        node: u64,
        task: u64,
        epoch: u64,
        percent: u8,
        at: Instant,
    },
    /// A handler moved an actuator (only while `may_actuate`).
    Actuated {
        node: u64,
        task: u64,
        epoch: u64,
        at: Instant,
    },
    /// A handler ended.
    Ended {
        node: u64,
        task: u64,
        epoch: u64,
        outcome: ActionOutcome,
    },
    /// A handler saw new limits.
    Limits { node: u64, task: u64, limits: Limits },
    /// A handler got a parameter change; `values` is what its
    /// `param_values` held then: (version, this parameter's value, count).
    Param {
        node: u64,
        task: u64,
        update: ParamUpdate,
        values: (u64, Option<ParamVal>, usize),
    },
    /// The node was killed (every belief it held ends here).
    Killed { node: u64, at: Instant },
    /// A [`BadReport`] handler started.
    Started { node: u64, task: u64, epoch: u64 },
}

/// A node's belief in one task: node, epoch, from, until (`None`: still).
type Interval = (u64, u64, Instant, Option<Instant>);

/// The recorded history, shared by every node of a test.
#[derive(Clone, Default)]
pub struct History(Arc<Mutex<Vec<Event>>>);

impl History {
    pub fn push(&self, e: Event) {
        self.0.lock().unwrap().push(e);
    }

    pub fn events(&self) -> Vec<Event> {
        self.0.lock().unwrap().clone()
    }

    /// First feedback on `task` from `node`, if any.
    pub fn first_feedback(&self, task: TaskId, node: u64) -> Option<(Instant, u64)> {
        self.events().into_iter().find_map(|e| match e {
            Event::Feedback {
                node: n,
                task: t,
                at,
                epoch,
                ..
            } if n == node && t == task.0 => Some((at, epoch)),
            _ => None,
        })
    }

    /// When `node` stopped believing it may actuate `task`, if it did.
    pub fn revoked_at(&self, task: TaskId, node: u64) -> Option<Instant> {
        self.events().into_iter().find_map(|e| match e {
            Event::Permit(p) if p.task_id == task && p.node_id.0 == node && !p.may_actuate => Some(p.at),
            _ => None,
        })
    }

    /// Checks from the history that no two nodes ever believed at the same
    /// instant that they may actuate the same task, and that every actuation
    /// happened under a permit. Returns the per-task intervals on success.
    pub fn check_exclusive_actuation(&self) -> Result<usize, String> {
        let events = self.events();
        let mut open: BTreeMap<(u64, u64, u64), Instant> = BTreeMap::new();
        let mut intervals: BTreeMap<u64, Vec<Interval>> = BTreeMap::new();
        for e in &events {
            match e {
                Event::Permit(p) => {
                    let key = (p.task_id.0, p.node_id.0, p.epoch.0);
                    if p.may_actuate {
                        open.insert(key, p.at);
                    } else if let Some(start) = open.remove(&key) {
                        intervals
                            .entry(key.0)
                            .or_default()
                            .push((key.1, key.2, start, Some(p.at)));
                    }
                }
                Event::Killed { node, at } => {
                    let keys: Vec<_> = open.keys().filter(|k| k.1 == *node).copied().collect();
                    for key in keys {
                        let start = open.remove(&key).unwrap();
                        intervals
                            .entry(key.0)
                            .or_default()
                            .push((key.1, key.2, start, Some(*at)));
                    }
                }
                _ => {}
            }
        }
        for (key, start) in open {
            intervals.entry(key.0).or_default().push((key.1, key.2, start, None));
        }
        let mut count = 0;
        for (task, list) in &intervals {
            count += list.len();
            for (i, a) in list.iter().enumerate() {
                for b in &list[i + 1..] {
                    if a.0 == b.0 {
                        continue;
                    }
                    let a_end = a.3.unwrap_or(Instant::now() + Duration::from_secs(3600));
                    let b_end = b.3.unwrap_or(Instant::now() + Duration::from_secs(3600));
                    if a.2 < b_end && b.2 < a_end {
                        return Err(format!(
                            "task {task}: node {} (epoch {}) and node {} (epoch {}) both believed they may actuate: {a:?} / {b:?}",
                            a.0, a.1, b.0, b.1
                        ));
                    }
                }
            }
        }
        for e in &events {
            if let Event::Actuated { node, task, epoch, at } = e {
                let covered = intervals.get(task).is_some_and(|l| {
                    l.iter()
                        .any(|(n, ep, s, end)| n == node && ep == epoch && s <= at && end.is_none_or(|end| *at <= end))
                });
                if !covered {
                    return Err(format!(
                        "node {node} actuated task {task} (epoch {epoch}) without a permit"
                    ));
                }
            }
        }
        Ok(count)
    }
}

/// A test action: `ticks` steps of 100 ms, each one actuation and one
/// feedback; resumes from the reported progress; honours cancel.
pub struct Work {
    pub node: u64,
    pub ticks: u32,
    pub history: History,
}

impl ActionHandler for Work {
    fn run(&self, mut ctx: ActionContext) -> ActionFuture {
        let (node, ticks, history) = (self.node, self.ticks, self.history.clone());
        Box::pin(async move {
            let task = ctx.goal.task_id;
            let epoch = ctx.goal.epoch;
            let start = u32::from(ctx.goal.progress_percent) * ticks / 100;
            let mut limits = ctx.limits.clone();
            limits.mark_changed();
            let stop = ctx.stop_signal();
            let outcome = 'run: {
                for i in start..ticks {
                    let step = tokio::time::sleep(Duration::from_millis(100));
                    tokio::pin!(step);
                    loop {
                        tokio::select! {
                            _ = &mut step => break,
                            _ = stop.wait() => {
                                break 'run if ctx.is_cancelled() {
                                    ActionOutcome::Cancelled
                                } else {
                                    ActionOutcome::Failed { reason: "permit lost".into() }
                                };
                            }
                            Ok(()) = limits.changed() => {
                                let l = *limits.borrow_and_update();
                                history.push(Event::Limits { node, task, limits: l });
                            }
                            Ok(update) = ctx.params.recv() => {
                                let values = {
                                    let v = ctx.param_values.borrow();
                                    (v.0, v.1.get(&update.name).cloned(), v.1.len())
                                };
                                history.push(Event::Param { node, task, update, values });
                            }
                        }
                    }
                    if ctx.may_actuate() {
                        history.push(Event::Actuated {
                            node,
                            task,
                            epoch,
                            at: Instant::now(),
                        });
                    }
                    let percent = ((i + 1) * 100 / ticks).min(100) as u8;
                    ctx.feedback(ActionFeedback { percent, detail: None });
                    history.push(Event::Feedback {
                        node,
                        task,
                        epoch,
                        percent,
                        at: Instant::now(),
                    });
                }
                ActionOutcome::Succeeded
            };
            history.push(Event::Ended {
                node,
                task,
                epoch,
                outcome: outcome.clone(),
            });
            outcome
        })
    }
}

/// A broken test action (kind `bad-report`): reports a distance remaining
/// of infinity, which the state machine refuses, then works on forever.
pub struct BadReport {
    pub node: u64,
    pub history: History,
}

impl ActionHandler for BadReport {
    fn run(&self, ctx: ActionContext) -> ActionFuture {
        let (node, history) = (self.node, self.history.clone());
        Box::pin(async move {
            let (task, epoch) = (ctx.goal.task_id, ctx.goal.epoch);
            history.push(Event::Started { node, task, epoch });
            ctx.feedback(ActionFeedback {
                percent: 0,
                detail: Some(FeedbackDetail::DistanceRemaining(f64::INFINITY)),
            });
            ctx.stopped().await;
            ActionOutcome::Failed {
                reason: "stopped".into(),
            }
        })
    }
}

pub struct TestNode {
    pub raft: Option<Arc<RaftNode<Mission>>>,
    pub agent: Option<Agent>,
    pub coordinator: Option<Coordinator>,
    pub links: LinkControl,
    pub listen_addr: String,
}

pub struct Cluster {
    _dir: TempDir,
    pub nodes: BTreeMap<u64, TestNode>,
    pub history: History,
}

pub fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "warn,it=info,cairn_agents=info".into()),
        )
        .with_test_writer()
        .try_init();
}

pub const KINDS: [(&str, u32); 3] = [("short", 10), ("long", 40), ("endless", 100_000)];

impl Cluster {
    /// Starts `n` nodes; node `id` gets capabilities `caps(id, leader)`
    /// (the leader is elected before the agents start).
    pub async fn start(n: u64, caps: impl Fn(u64, u64) -> Vec<&'static str>, budget: Resources) -> Self {
        Self::start_with(n, caps, budget, AgentConfig::default()).await
    }

    pub async fn start_with(
        n: u64,
        caps: impl Fn(u64, u64) -> Vec<&'static str>,
        budget: Resources,
        config: AgentConfig,
    ) -> Self {
        init_tracing();
        let dir = TempDir::new().unwrap();
        let history = History::default();
        let mut nodes = BTreeMap::new();
        for id in 1..=n {
            let mut c = RaftNodeConfig::new(id, "127.0.0.1:0", dir.path().join(format!("n{id}")));
            c.api_addr = format!("api-{id}");
            let links = LinkControl::new(Arc::new(TcpDialer));
            let raft = RaftNode::<Mission>::start_with_dialer(c, Arc::new(links.clone()))
                .await
                .unwrap();
            let listen_addr = raft.raft_addr().to_string();
            nodes.insert(
                id,
                TestNode {
                    raft: Some(Arc::new(raft)),
                    agent: None,
                    coordinator: None,
                    links,
                    listen_addr,
                },
            );
        }
        let members: BTreeMap<u64, Member> = nodes
            .iter()
            .map(|(id, n)| {
                (
                    *id,
                    Member {
                        raft_addr: n.listen_addr.clone(),
                        api_addr: format!("api-{id}"),
                    },
                )
            })
            .collect();
        let mut cluster = Self {
            _dir: dir,
            nodes,
            history,
        };
        cluster.raft(1).initialize(members).await.unwrap();
        let leader = cluster.leader(Duration::from_secs(10)).await;
        for id in 1..=n {
            let raft = cluster.raft(id).clone();
            let coordinator = Coordinator::start(raft.clone(), config.clone()).unwrap();
            let spec = NodeSpec {
                id: NodeId(id),
                addresses: vec![cluster.nodes[&id].listen_addr.clone()],
                capabilities: caps(id, leader).into_iter().map(str::to_owned).collect(),
                budget,
            };
            let mut cfg = config.clone();
            cfg.rng_seed = Some(id);
            let history = cluster.history.clone();
            let mut builder =
                Agent::builder(raft, spec, cfg).observer(Arc::new(move |e| history.push(Event::Permit(e))));
            builder = builder.handler(
                "bad-report",
                Arc::new(BadReport {
                    node: id,
                    history: cluster.history.clone(),
                }),
            );
            for (kind, ticks) in KINDS {
                builder = builder.handler(
                    kind,
                    Arc::new(Work {
                        node: id,
                        ticks,
                        history: cluster.history.clone(),
                    }),
                );
            }
            let agent = builder.start().unwrap();
            let n = cluster.nodes.get_mut(&id).unwrap();
            n.coordinator = Some(coordinator);
            n.agent = Some(agent);
        }
        let ids: Vec<u64> = cluster.nodes.keys().copied().collect();
        cluster
            .wait(Duration::from_secs(20), "every node registered and up", |m| {
                ids.iter().all(|id| {
                    m.node(NodeId(*id))
                        .is_some_and(|n| n.liveness == cairn_state::Liveness::Up)
                })
            })
            .await;
        cluster
    }

    pub fn raft(&self, id: u64) -> &Arc<RaftNode<Mission>> {
        self.nodes[&id].raft.as_ref().expect("node is running")
    }

    pub fn alive(&self) -> Vec<u64> {
        self.nodes
            .iter()
            .filter(|(_, n)| n.raft.is_some())
            .map(|(id, _)| *id)
            .collect()
    }

    /// Some live node (the lowest id).
    pub fn any(&self) -> &Arc<RaftNode<Mission>> {
        self.raft(self.alive()[0])
    }

    pub async fn leader(&self, timeout: Duration) -> u64 {
        let deadline = Instant::now() + timeout;
        loop {
            for (id, n) in &self.nodes {
                if let Some(r) = &n.raft {
                    if r.status().role == Role::Leader {
                        return *id;
                    }
                }
            }
            assert!(Instant::now() < deadline, "no leader within {timeout:?}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Waits until `cond` holds on every live node's applied state.
    pub async fn wait(&self, timeout: Duration, what: &str, cond: impl Fn(&Mission) -> bool) {
        let deadline = Instant::now() + timeout;
        loop {
            let ok = self.alive().iter().all(|id| self.raft(*id).local_state(&cond));
            if ok {
                return;
            }
            if Instant::now() >= deadline {
                let tasks = self.any().local_state(|m| {
                    m.tasks(&Default::default())
                        .into_iter()
                        .map(|t| format!("{}:{}@{:?}", t.id, t.state, t.lease))
                        .collect::<Vec<_>>()
                });
                let nodes = self.any().local_state(|m| {
                    m.nodes()
                        .map(|n| format!("{}:{}", n.id, n.liveness))
                        .collect::<Vec<_>>()
                });
                panic!("timed out after {timeout:?} waiting for {what}; tasks {tasks:?}, nodes {nodes:?}");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Waits for a condition on the history.
    pub async fn wait_history<T>(&self, timeout: Duration, what: &str, f: impl Fn(&History) -> Option<T>) -> T {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(v) = f(&self.history) {
                return v;
            }
            assert!(
                Instant::now() < deadline,
                "timed out after {timeout:?} waiting for {what}"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Writes through a live node and unwraps the state machine's answer,
    /// retrying (bounded, 10 s) while a leader change is under way.
    pub async fn write(&self, cmd: Command) -> Result<Response, CommandError> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match self.any().write(cmd.clone()).await {
                Ok(out) => return out.response,
                Err(e) if e.is_retryable() && Instant::now() < deadline => {
                    tracing::info!(error = %e, "write failed during a leader change; retrying");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Err(e) => panic!("write did not commit: {e}"),
            }
        }
    }

    /// Stops every node (for loops that start many clusters in one runtime).
    pub async fn shutdown(mut self) {
        for id in self.alive() {
            self.kill(id).await;
        }
    }

    pub async fn create(&self, kind: &str, caps: &[&str], resources: Resources) -> TaskId {
        let spec = TaskSpec {
            kind: kind.into(),
            required_capabilities: caps.iter().map(|c| c.to_string()).collect(),
            resources,
            priority: 0,
            deadline_ms: None,
            retry: RetryPolicy::default(),
            goal: None,
        };
        match self.write(Command::CreateTask(spec)).await {
            Ok(Response::TaskCreated { task_id }) => task_id,
            other => panic!("create task: {other:?}"),
        }
    }

    pub fn task_state(&self, id: TaskId) -> (TaskState, Option<(u64, Epoch)>) {
        self.any().local_state(|m| {
            let t = m.task(id).expect("task exists");
            (t.state, t.lease.map(|l| (l.node_id.0, l.epoch)))
        })
    }

    /// Cuts (or restores) every link between `id` and the others.
    pub fn isolate(&self, id: u64, cut: bool) {
        for (other, n) in &self.nodes {
            if *other != id {
                n.links.set_blocked(id, cut);
                self.nodes[&id].links.set_blocked(*other, cut);
            }
        }
    }

    /// Kills node `id` abruptly: links cut, agent and coordinator aborted,
    /// Raft stopped without any handover.
    pub async fn kill(&mut self, id: u64) -> Instant {
        self.isolate(id, true);
        let at = Instant::now();
        let n = self.nodes.get_mut(&id).unwrap();
        if let Some(a) = n.agent.take() {
            a.abort();
        }
        if let Some(c) = n.coordinator.take() {
            c.abort();
        }
        self.history.push(Event::Killed { node: id, at });
        let mut raft = n.raft.take().unwrap();
        // Aborted tasks release their handles at their next poll; bounded wait.
        for _ in 0..100 {
            match Arc::try_unwrap(raft) {
                Ok(node) => {
                    let _ = tokio::time::timeout(Duration::from_secs(5), node.shutdown()).await;
                    return at;
                }
                Err(back) => raft = back,
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        tracing::warn!(id, "raft node still referenced; dropping our handle");
        at
    }
}

/// Percentile of sorted samples.
pub fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((p / 100.0) * (sorted.len() as f64 - 1.0)).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}
