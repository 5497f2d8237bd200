//! The local agent runtime every node runs.
//!
//! - **Registration**: registers the node (capabilities, budget) and
//!   re-registers it if the cluster forgot it or declared it `Down` while it
//!   was in fact alive. On start, once its state has caught up with the
//!   leader's, it also rewrites an existing entry whose addresses,
//!   capabilities or budget differ from its spec: a node's config, changed
//!   and restarted, reaches the registry. After that first match it leaves
//!   the entry alone, so an operator's `cairn node update` holds until the
//!   node next starts. Attempts back off (0.5 s plus full jitter growing to
//!   30 s) and wait until this node has applied the last successful one: a
//!   node that lags, or cannot apply at all, does not add a registration to
//!   the log on every reconcile (issue 17).
//! - **Heartbeats and the lease**: every `heartbeat_interval_ms` it sends a
//!   heartbeat to the leader; the leader answers only after a quorum confirmed
//!   its leadership, with its applied index. Once this node has applied that
//!   far, it may actuate until `send time + lease_ms`. No answer, no renewal:
//!   a node cut off from the majority loses its permit within `lease_ms`.
//! - **Tasks**: it watches the replicated state (change stream plus a
//!   periodic re-read) for tasks leased to this node, starts each as an action
//!   on the handler registered for its kind, forwards cancel requests, reports
//!   progress and the result with the task's epoch, and drops a handler whose
//!   task moved away or whose permit lapsed (after `stop_grace_ms`). A
//!   report the state machine refuses for what it says (a non-finite or
//!   out-of-bounds value) rather than for who sends it (a stale epoch) fails
//!   the task with the refusal as its reason, instead of restarting the
//!   handler.
//! - **Limits, plan, parameters**: running handlers get the effective mode and
//!   speed limit, the plan and every parameter change, in order, as they apply.

use std::collections::BTreeMap;
use std::collections::BTreeSet;
use std::sync::atomic::AtomicBool;
use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::sync::Mutex;
use std::time::Duration;

use cairn_hal::action::ActionContext;
use cairn_hal::action::ActionFeedback;
use cairn_hal::action::ActionGoal;
use cairn_hal::action::ActionHandler;
use cairn_hal::action::ActionOutcome;
use cairn_hal::action::ClusterReport;
use cairn_hal::action::Limits;
use cairn_hal::action::ParamUpdate;
use cairn_hal::action::ParamVal;
use cairn_hal::action::Permit;
use cairn_hal::action::PlanView;
use cairn_raft::sync::lock;
use cairn_raft::sync::AbortOnDrop;
use cairn_raft::RaftNode;
use cairn_state::Command;
use cairn_state::CommandError;
use cairn_state::Epoch;
use cairn_state::Lease;
use cairn_state::Liveness;
use cairn_state::Mission;
use cairn_state::NodeId;
use cairn_state::NodeSpec;
use cairn_state::Response;
use cairn_state::RetryPolicy;
use cairn_state::TaskFilter;
use cairn_state::TaskId;
use cairn_state::TaskOutcome;
use cairn_state::TaskState;
use rand::rngs::StdRng;
use rand::Rng;
use rand::SeedableRng;
use serde::Serialize;
use tokio::sync::broadcast;
use tokio::sync::mpsc;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::config::AgentConfig;
use crate::convert;
use crate::error::Error;
use crate::protocol;
use crate::protocol::Heartbeat;
use crate::protocol::HeartbeatAck;
use crate::resilience::Backoff;
use crate::resilience::CircuitBreaker;
use crate::resilience::Retry;

/// Parameter changes a handler may fall behind by before it gets `Lagged`;
/// the same as the state machine's change ring, past which a re-read is
/// needed anyway.
const PARAM_CHANNEL_CAPACITY: usize = cairn_state::limits::PARAM_EVENTS_KEPT;
/// Cluster reports one handler may queue; health changes are rare and a
/// dropped one is re-sent on the next change.
const REPORT_QUEUE: usize = 32;
/// Writes of one call: 5 attempts with 50 ms..1 s jittered backoff, all
/// within 5 s (one default `write_timeout_ms`, which each attempt shares:
/// the loops do not multiply), so a caller never outlives the leader's
/// patience with it by much.
const WRITE_RETRY: Retry = Retry {
    max_attempts: 5,
    deadline: Duration::from_secs(5),
    backoff: Backoff {
        base_ms: 50,
        max_ms: 1000,
    },
};
/// A result is worth more patience: about a minute (what 20 rounds of
/// `WRITE_RETRY` used to take); past that the coordinator's stall
/// detection takes the task back.
const FINISH_RETRY: Retry = Retry {
    max_attempts: 100,
    deadline: Duration::from_secs(60),
    ..WRITE_RETRY
};
/// Re-read the whole state this often even without change events (covers a
/// lagged event stream and time-based conditions).
const RECONCILE_EVERY: Duration = Duration::from_millis(250);
/// After the state machine refused this node's registration (e.g. the new
/// spec drops a capability a task it holds needs), wait this long before
/// trying again rather than every reconcile pass.
const REGISTRY_RETRY: Duration = Duration::from_secs(5);
/// Registration attempts, while this node's own state does not show it
/// registered, are at least this far apart...
const REGISTER_SPACING: Duration = Duration::from_millis(500);
/// ...plus a full-jitter backoff growing to 30 s: bounded, so a node the
/// cluster really forgot registers again within ~31 s, while one whose
/// writes keep failing (no quorum, a jammed follower) adds a registration
/// to the log at most every few seconds instead of every reconcile (~4 a
/// second, issue 17).
const REGISTER_BACKOFF: Backoff = Backoff {
    base_ms: 500,
    max_ms: 30_000,
};

/// A change in whether a node believes it may actuate a task; for tests and
/// audits (the history checker looks for two nodes believing it at once).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ActuationEvent {
    /// The node.
    pub node_id: NodeId,
    /// The task.
    pub task_id: TaskId,
    /// The epoch it holds.
    pub epoch: Epoch,
    /// Whether it may actuate from `at` on.
    pub may_actuate: bool,
    /// When the belief changed.
    pub at: Instant,
}

/// Receives [`ActuationEvent`]s as they happen.
pub type ActuationObserver = Arc<dyn Fn(ActuationEvent) + Send + Sync>;

/// What the agent is doing; for the admin API.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct AgentStatus {
    /// This node.
    pub node_id: NodeId,
    /// Whether the replicated state knows this node and it is not `Down`.
    pub registered: bool,
    /// Whether the lease is valid now.
    pub lease_valid: bool,
    /// Tasks with a running handler, and their epochs.
    pub running: Vec<(TaskId, Epoch)>,
    /// Heartbeats the leader confirmed.
    pub heartbeats_confirmed: u64,
    /// Reports the cluster refused for a stale epoch.
    pub stale_reports: u64,
    /// Why the state machine last refused this node's registration, if it
    /// did and no registration succeeded since.
    pub registry_error: Option<String>,
}

/// Builds an [`Agent`].
pub struct AgentBuilder {
    node: Arc<RaftNode<Mission>>,
    spec: NodeSpec,
    config: AgentConfig,
    handlers: BTreeMap<String, Arc<dyn ActionHandler>>,
    observer: Option<ActuationObserver>,
}

impl AgentBuilder {
    /// Runs tasks of `kind` with `handler`.
    pub fn handler(mut self, kind: impl Into<String>, handler: Arc<dyn ActionHandler>) -> Self {
        self.handlers.insert(kind.into(), handler);
        self
    }

    /// Reports every actuation-permit change to `observer`.
    pub fn observer(mut self, observer: ActuationObserver) -> Self {
        self.observer = Some(observer);
        self
    }

    /// Starts the agent's loops.
    pub fn start(self) -> Result<Agent, Error> {
        self.config.validate()?;
        if self.spec.id.0 != self.node.id() {
            return Err(Error::Config {
                field: "spec.id",
                reason: format!(
                    "the node spec is for node {}, the raft node is {}",
                    self.spec.id,
                    self.node.id()
                ),
            });
        }
        let seed = self.config.rng_seed.unwrap_or_else(|| {
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(0);
            nanos ^ self.spec.id.0.rotate_left(32)
        });
        let (params_now, limits_now, plan_now) = self
            .node
            .local_state(|m| (convert::params(m), convert::limits(&m.effective()), convert::plan(m)));
        let hb_recovery = Duration::from_millis(self.config.heartbeat_interval_ms);
        let shared = Arc::new(Shared {
            node_id: self.spec.id,
            node: self.node,
            spec: self.spec,
            handlers: self.handlers,
            observer: self.observer,
            lease: watch::channel(Permit::Revoked).0,
            limits: watch::channel(limits_now).0,
            plan: watch::channel(plan_now).0,
            params: broadcast::channel(PARAM_CHANNEL_CAPACITY).0,
            param_version: AtomicU64::new(params_now.0),
            param_values: watch::channel(params_now).0,
            runners: Mutex::new(BTreeMap::new()),
            finished: Mutex::new(BTreeSet::new()),
            rng: Mutex::new(StdRng::seed_from_u64(seed)),
            // 5 failed writes in a row: the leader is gone or unreachable;
            // wait a second before trying again rather than queueing more.
            breaker: Mutex::new(CircuitBreaker::new(5, Duration::from_secs(1))),
            // A dead leader is probed once per heartbeat interval.
            hb_breaker: Mutex::new(CircuitBreaker::new(3, hb_recovery)),
            registering: AtomicBool::new(false),
            synced: AtomicBool::new(false),
            registry_refused: Mutex::new(None),
            registration: Mutex::new(Registration::default()),
            heartbeats_confirmed: AtomicU64::new(0),
            stale_reports: AtomicU64::new(0),
            lanes: WriteLanes::new(),
            config: self.config,
        });
        tracing::info!(node = %shared.node_id, handlers = ?shared.handlers.keys().collect::<Vec<_>>(), "agent starts");
        let tasks = vec![
            tokio::spawn(heartbeat_loop(shared.clone())),
            tokio::spawn(lease_watchdog(shared.clone())),
            tokio::spawn(reconcile_loop(shared.clone())),
        ];
        Ok(Agent { shared, tasks })
    }
}

/// A node's running agent. Dropping it stops every loop and handler at once.
pub struct Agent {
    shared: Arc<Shared>,
    tasks: Vec<JoinHandle<()>>,
}

impl Agent {
    /// An agent for `node`, registering it as `spec`.
    pub fn builder(node: Arc<RaftNode<Mission>>, spec: NodeSpec, config: AgentConfig) -> AgentBuilder {
        AgentBuilder {
            node,
            spec,
            config,
            handlers: BTreeMap::new(),
            observer: None,
        }
    }

    /// What the agent is doing.
    pub fn status(&self) -> AgentStatus {
        let s = &self.shared;
        let registered = s
            .node
            .local_state(|m| m.node(s.node_id).is_some_and(|n| n.liveness != Liveness::Down));
        AgentStatus {
            node_id: s.node_id,
            registered,
            lease_valid: s.lease.borrow().allows(Instant::now()),
            running: lock(&s.runners).iter().map(|(t, r)| (*t, r.epoch)).collect(),
            heartbeats_confirmed: s.heartbeats_confirmed.load(Ordering::Relaxed),
            stale_reports: s.stale_reports.load(Ordering::Relaxed),
            registry_error: lock(&s.registry_refused).as_ref().map(|(_, e)| e.clone()),
        }
    }

    /// Stops everything at once, without reporting anything (a crash, as far
    /// as the cluster can tell).
    pub fn abort(&self) {
        for t in &self.tasks {
            t.abort();
        }
        let runners = std::mem::take(&mut *lock(&self.shared.runners));
        for r in runners.values() {
            r.task.abort();
        }
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        self.abort();
    }
}

struct RunnerHandle {
    epoch: Epoch,
    cancel: watch::Sender<bool>,
    lost: watch::Sender<bool>,
    task: JoinHandle<()>,
}

struct Shared {
    node: Arc<RaftNode<Mission>>,
    node_id: NodeId,
    spec: NodeSpec,
    config: AgentConfig,
    handlers: BTreeMap<String, Arc<dyn ActionHandler>>,
    observer: Option<ActuationObserver>,
    /// The node-wide lease; per-task permits derive from it.
    lease: watch::Sender<Permit>,
    limits: watch::Sender<Limits>,
    plan: watch::Sender<PlanView>,
    params: broadcast::Sender<ParamUpdate>,
    param_version: AtomicU64,
    param_values: watch::Sender<(u64, BTreeMap<String, ParamVal>)>,
    runners: Mutex<BTreeMap<TaskId, RunnerHandle>>,
    /// Assignments whose handler ended here: never started again. Bounded by
    /// the tasks leased to this node (pruned every reconcile).
    finished: Mutex<BTreeSet<(TaskId, Epoch)>>,
    rng: Mutex<StdRng>,
    breaker: Mutex<CircuitBreaker>,
    hb_breaker: Mutex<CircuitBreaker>,
    registering: AtomicBool,
    /// The registry entry matched `spec` (or was written from it) in this
    /// run; from then on only a missing or wrongly-down entry is rewritten.
    synced: AtomicBool,
    /// The last refused registration: not before when to try again, and why.
    registry_refused: Mutex<Option<(Instant, String)>>,
    registration: Mutex<Registration>,
    heartbeats_confirmed: AtomicU64,
    stale_reports: AtomicU64,
    /// The client sessions this agent's writes are tagged with (see
    /// [`WriteLanes`]).
    lanes: WriteLanes,
}

/// Client sessions for the agent's writes. A write whose outcome is
/// unknown (a timeout after it was proposed) may be retried only under the
/// same client tag, which makes the retry return the first outcome instead
/// of applying twice (docs/API.md, "Retries"). A session takes one
/// write at a time (a newer sequence number retires the older), and the
/// agent writes from several tasks at once, so it holds a few sessions
/// ("lanes"), each behind a lock held for one write and its retries.
/// Bounded: `WRITE_LANES` sessions per agent run in the replicated session
/// table, not one per write.
struct WriteLanes {
    lanes: Vec<tokio::sync::Mutex<Lane>>,
}

/// One client session: its random id and the last sequence number used.
struct Lane {
    client_id: u64,
    seq: u64,
}

/// Writes of one agent in flight at once before one waits for a lane: a
/// node runs a handful of tasks, each with at most a report and a finish
/// in flight, plus registration.
const WRITE_LANES: usize = 8;

impl WriteLanes {
    fn new() -> Self {
        // Random ids, not seeded: a restarted agent must not reuse the
        // previous run's sessions, whose sequence numbers are ahead of its.
        let lanes = (0..WRITE_LANES)
            .map(|_| {
                tokio::sync::Mutex::new(Lane {
                    client_id: rand::random(),
                    seq: 0,
                })
            })
            .collect();
        Self { lanes }
    }

    /// A free lane, or (all busy) the one `hint` picks, once it frees up.
    async fn take(&self, hint: u64) -> tokio::sync::MutexGuard<'_, Lane> {
        for lane in &self.lanes {
            if let Ok(guard) = lane.try_lock() {
                return guard;
            }
        }
        let i = usize::try_from(hint % WRITE_LANES as u64).unwrap_or(0);
        self.lanes[i].lock().await
    }
}

/// Where this node's registration attempts stand (see `Shared::register`).
#[derive(Debug, Default)]
struct Registration {
    /// Attempts since the node last showed as registered in its own state.
    attempts: u32,
    /// No attempt before this.
    not_before: Option<Instant>,
    /// The log index the last successful registration got: this node's
    /// own state cannot show it before applying that far, so a node that
    /// lags (or is jammed) does not register again meanwhile.
    applied_at: u64,
}

/// A task leased to this node, as the local state shows it.
#[derive(Clone, Debug)]
struct MyTask {
    id: TaskId,
    epoch: Epoch,
    state: TaskState,
    cancel_requested: bool,
    kind: String,
    attempts: u32,
    priority: u8,
    goal: Option<u64>,
    progress: u8,
    retry: RetryPolicy,
}

impl Shared {
    fn seed(&self) -> u64 {
        lock(&self.rng).random()
    }

    fn observe(&self, task_id: TaskId, epoch: Epoch, may_actuate: bool) {
        tracing::debug!(node = %self.node_id, task = %task_id, %epoch, may_actuate, "actuation permit");
        if let Some(f) = &self.observer {
            f(ActuationEvent {
                node_id: self.node_id,
                task_id,
                epoch,
                may_actuate,
                at: Instant::now(),
            });
        }
    }

    /// Whether the local state still leases `task_id` to this node under `epoch`.
    fn still_ours(&self, task_id: TaskId, epoch: Epoch) -> bool {
        let me = Lease {
            node_id: self.node_id,
            epoch,
        };
        self.node
            .local_state(|m| m.task(task_id).and_then(|t| t.lease) == Some(me))
    }

    /// One write through the breaker, retried with backoff.
    async fn write(&self, what: &'static str, command: Command) -> Result<Response, Error> {
        self.write_indexed(what, command).await.map(|(_, response)| response)
    }

    /// [`Shared::write`], also returning the log index the write got.
    async fn write_indexed(&self, what: &'static str, command: Command) -> Result<(u64, Response), Error> {
        self.write_retried(what, command, WRITE_RETRY).await
    }

    /// One write on `retry`, through the breaker. Every attempt carries the
    /// same client tag (one write, however many attempts), so a retry
    /// after an unknown outcome (a timeout) applies at most once; each
    /// attempt's own leader-chasing shares the loop's deadline. Stops at a
    /// refusal by the state machine ([`Error::Command`]).
    async fn write_retried(
        &self,
        what: &'static str,
        command: Command,
        retry: Retry,
    ) -> Result<(u64, Response), Error> {
        let seed = self.seed();
        let mut rng = StdRng::seed_from_u64(seed);
        let mut lane = self.lanes.take(seed).await;
        lane.seq += 1;
        let tag = cairn_state::ClientTag {
            client_id: lane.client_id,
            seq: lane.seq,
        };
        retry
            .run_tagged(what, &mut rng, |deadline| {
                let command = command.clone();
                async move {
                    let now = Instant::now();
                    let acquired = lock(&self.breaker).try_acquire(now);
                    if let Err(wait) = acquired {
                        return Err(Error::CircuitOpen {
                            what,
                            retry_in_ms: wait.as_millis() as u64,
                        });
                    }
                    let res = self.node.write_tagged_by(tag, command, deadline).await;
                    let mut breaker = lock(&self.breaker);
                    match res {
                        Ok(out) => {
                            breaker.on_success();
                            let index = out.index;
                            out.response.map(|r| (index, r)).map_err(Error::Command)
                        }
                        Err(e) => {
                            // No leader, not reached, or no answer in time:
                            // the leader path failed.
                            if e.retry_class() != cairn_raft::RetryClass::Permanent {
                                breaker.on_failure(Instant::now());
                            } else {
                                breaker.on_success();
                            }
                            Err(Error::Raft(e))
                        }
                    }
                }
            })
            .await
    }

    fn my_tasks(&self, m: &Mission) -> Vec<MyTask> {
        let filter = TaskFilter {
            state: None,
            node_id: Some(self.node_id),
        };
        m.tasks(&filter)
            .into_iter()
            .filter_map(|t| {
                let lease = t.lease?;
                Some(MyTask {
                    id: t.id,
                    epoch: lease.epoch,
                    state: t.state,
                    cancel_requested: t.cancel_requested,
                    kind: t.spec.kind.clone(),
                    attempts: t.attempts,
                    priority: t.spec.priority,
                    goal: t.spec.goal.map(|g| g.0),
                    progress: t.progress_percent,
                    retry: t.spec.retry,
                })
            })
            .collect()
    }

    /// Brings runners, watches and registration in line with the local state.
    fn reconcile(self: &Arc<Self>) {
        let last_param = self.param_version.load(Ordering::Acquire);
        // Rebuild the plan view and the parameter map only when their
        // versions moved: reconcile runs on every applied command, and
        // copying every parameter per write dominated the CPU profile of a
        // node with 1,000 parameters under write load.
        let have_params_version = self.param_values.borrow().0;
        let have_plan_version = self.plan.borrow().version;
        let (mine, entry, limits, plan, changes, full_params, params_version) = self.node.local_state(|m| {
            let changes: Vec<ParamUpdate> = m
                .param_changes_since(last_param)
                .map(|c| ParamUpdate {
                    version: c.version,
                    name: c.name.clone(),
                    value: convert::param(&c.new),
                })
                .collect();
            let now = m.params_version();
            // The map is patched from the changes when they bring it to
            // `now` without a gap; copied whole only when they don't (the
            // ring of recent changes dropped some): under a write load of
            // parameters, copying every parameter per applied command
            // dominated the leader's CPU profile.
            let patchable = last_param == have_params_version && covers(&changes, have_params_version, now);
            (
                self.my_tasks(m),
                m.node(self.node_id).map(|n| {
                    let same = n.addresses == self.spec.addresses
                        && n.capabilities == self.spec.capabilities
                        && n.budget == self.spec.budget;
                    (n.liveness, same)
                }),
                convert::limits(&m.effective()),
                (m.plan().version != have_plan_version).then(|| convert::plan(m)),
                changes,
                (now != have_params_version && !patchable).then(|| convert::params(m)),
                now,
            )
        });

        // Limits, plan and parameters for running handlers.
        self.limits.send_if_modified(|l| {
            let changed = *l != limits;
            if changed {
                tracing::info!(node = %self.node_id, mode = %limits.mode, max_speed_mps = limits.max_speed_mps, "effective limits changed");
                *l = limits;
            }
            changed
        });
        if let Some(plan) = plan {
            self.plan.send_if_modified(|p| {
                let changed = *p != plan;
                if changed {
                    *p = plan;
                }
                changed
            });
        }
        match full_params {
            Some(values) => {
                self.param_values.send_if_modified(|v| {
                    let changed = v.0 != values.0;
                    if changed {
                        *v = values;
                    }
                    changed
                });
            }
            None if params_version != have_params_version => self.param_values.send_modify(|v| {
                for c in &changes {
                    v.1.insert(c.name.clone(), c.value.clone());
                }
                v.0 = params_version;
            }),
            None => {}
        }
        if let Some(last) = changes.last() {
            self.param_version.store(last.version, Ordering::Release);
            for change in changes {
                // No receivers is fine: nothing runs.
                let _ = self.params.send(change);
            }
        }

        // Registration. A valid lease means this node has applied what the
        // leader had when it confirmed the lease, so the entry it compares
        // with its spec is not an old one from before a restart.
        let lease_valid = self.lease.borrow().allows(Instant::now());
        let needs_registration = match entry {
            None => true,
            // Declared dead while alive: only once the leader hears us again.
            Some((Liveness::Down, _)) => lease_valid,
            // Up or suspect: on start, make the entry say what the spec says.
            Some((_, same)) if lease_valid && !self.synced.load(Ordering::Acquire) => {
                if same {
                    self.synced.store(true, Ordering::Release);
                }
                !same
            }
            Some(_) => false,
        };
        if needs_registration {
            self.register();
        } else if matches!(entry, Some((Liveness::Up | Liveness::Suspect, _))) {
            *lock(&self.registration) = Registration::default();
        }

        // Tasks.
        let current: BTreeMap<TaskId, &MyTask> = mine.iter().map(|t| (t.id, t)).collect();
        let mut runners = lock(&self.runners);
        runners.retain(|_, r| !r.task.is_finished());
        for (id, r) in runners.iter() {
            match current.get(id) {
                Some(t) if t.epoch == r.epoch => {
                    if t.cancel_requested {
                        r.cancel.send_if_modified(|c| !std::mem::replace(c, true));
                    }
                }
                _ => {
                    r.lost.send_if_modified(|l| !std::mem::replace(l, true));
                }
            }
        }
        let mut finished = lock(&self.finished);
        finished.retain(|(t, e)| current.get(t).is_some_and(|m| m.epoch == *e));
        for task in &mine {
            if finished.contains(&(task.id, task.epoch)) {
                continue;
            }
            if runners.get(&task.id).is_some_and(|r| r.epoch == task.epoch) {
                continue;
            }
            let (cancel, cancel_rx) = watch::channel(task.cancel_requested);
            let (lost, lost_rx) = watch::channel(false);
            let shared = self.clone();
            let t = task.clone();
            let handle = match self.handlers.get(&task.kind).cloned() {
                Some(handler) => tokio::spawn(run_task(shared, t, handler, cancel_rx, lost_rx)),
                None => {
                    finished.insert((task.id, task.epoch));
                    tokio::spawn(async move {
                        let reason = format!("node {} has no handler for task kind {:?}", shared.node_id, t.kind);
                        tracing::warn!(task = %t.id, %reason, "refusing task");
                        let outcome = TaskOutcome::Failed {
                            reason,
                            retry_jitter_ms: shared.jitter_ms(&t),
                        };
                        let _ = shared.finish(&t, outcome).await;
                    })
                }
            };
            if let Some(old) = runners.insert(
                task.id,
                RunnerHandle {
                    epoch: task.epoch,
                    cancel,
                    lost,
                    task: handle,
                },
            ) {
                // An older assignment of the same task: it was told it lost.
                old.lost.send_replace(true);
            }
        }
    }

    /// Registers this node in the background, unless an attempt runs, the
    /// backoff since the last one has not passed, or this node has not yet
    /// applied the last successful one (its state is behind, not wrong).
    fn register(self: &Arc<Self>) {
        let refused_until = lock(&self.registry_refused).as_ref().map(|(retry_at, _)| *retry_at);
        if refused_until.is_some_and(|at| Instant::now() < at) {
            return;
        }
        {
            let reg = lock(&self.registration);
            if reg.not_before.is_some_and(|at| Instant::now() < at) {
                return;
            }
            if reg.applied_at > self.node.status().applied_index.unwrap_or(0) {
                return;
            }
        }
        if self.registering.swap(true, Ordering::AcqRel) {
            return;
        }
        let shared = self.clone();
        tokio::spawn(async move {
            tracing::info!(node = %shared.node_id, capabilities = ?shared.spec.capabilities, budget = ?shared.spec.budget, "registering node");
            let res = shared
                .write_indexed("register node", Command::RegisterNode(shared.spec.clone()))
                .await;
            let mut rng = StdRng::seed_from_u64(shared.seed());
            let mut reg = lock(&shared.registration);
            match res {
                Ok((index, _)) => {
                    shared.synced.store(true, Ordering::Release);
                    *lock(&shared.registry_refused) = None;
                    tracing::info!(node = %shared.node_id, index, "node registered");
                    reg.applied_at = index;
                }
                Err(Error::Command(e)) => {
                    tracing::warn!(node = %shared.node_id, error = %e, retry_in_s = REGISTRY_RETRY.as_secs(), "the cluster refused this node's registration");
                    *lock(&shared.registry_refused) = Some((Instant::now() + REGISTRY_RETRY, e.to_string()));
                }
                Err(e) => tracing::warn!(node = %shared.node_id, error = %e, "registration failed; will retry"),
            }
            let wait = REGISTER_SPACING + REGISTER_BACKOFF.delay(reg.attempts, &mut rng);
            reg.attempts = reg.attempts.saturating_add(1);
            reg.not_before = Some(Instant::now() + wait);
            drop(reg);
            shared.registering.store(false, Ordering::Release);
        });
    }

    fn jitter_ms(&self, t: &MyTask) -> u64 {
        let ceiling = t.retry.backoff_ms(t.attempts.saturating_add(1));
        lock(&self.rng).random_range(0..=ceiling)
    }

    /// Reports the result, patiently: a lost result costs a re-run.
    async fn finish(&self, t: &MyTask, outcome: TaskOutcome) -> Result<(), Error> {
        let command = Command::FinishTask {
            task_id: t.id,
            epoch: t.epoch,
            outcome,
        };
        // One tag for every attempt: an attempt that ended in a timeout may
        // have applied, and the next must find that out, not finish twice.
        match self.write_retried("finish task", command, FINISH_RETRY).await {
            Ok(_) => Ok(()),
            Err(Error::Command(e)) => {
                self.note_refusal(t.id, &e);
                Err(Error::Command(e))
            }
            Err(e) => {
                tracing::warn!(task = %t.id, epoch = %t.epoch, error = %e, "could not report the result");
                Err(e)
            }
        }
    }

    fn note_refusal(&self, task_id: TaskId, e: &CommandError) {
        if matches!(e, CommandError::StaleEpoch { .. }) {
            self.stale_reports.fetch_add(1, Ordering::Relaxed);
        }
        if lease_lost(e) {
            tracing::warn!(node = %self.node_id, task = %task_id, error = %e, "report refused; this node no longer holds the task");
        } else {
            tracing::warn!(node = %self.node_id, task = %task_id, error = %e, "report refused as invalid");
        }
    }
}

async fn heartbeat_loop(shared: Arc<Shared>) {
    let cfg = &shared.config;
    let timeout = Duration::from_millis(cfg.heartbeat_timeout_ms);
    let lease = Duration::from_millis(cfg.lease_ms);
    let mut tick = tokio::time::interval(Duration::from_millis(cfg.heartbeat_interval_ms));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut seq = 0u64;
    loop {
        tick.tick().await;
        seq += 1;
        let Some((leader, _)) = shared.node.leader() else {
            continue;
        };
        let sent = Instant::now();
        let acquired = lock(&shared.hb_breaker).try_acquire(sent);
        if acquired.is_err() {
            continue;
        }
        let msg = protocol::encode(&Heartbeat {
            node_id: shared.node_id.0,
            seq,
        });
        let answer = tokio::time::timeout(timeout, shared.node.send_app(leader, msg, timeout)).await;
        let ack = match answer {
            Ok(Ok(bytes)) => protocol::decode::<HeartbeatAck>(&bytes),
            Ok(Err(e)) => Err(Error::Raft(e)),
            Err(_) => Err(Error::Raft(cairn_raft::Error::Timeout {
                what: "heartbeat",
                after_ms: cfg.heartbeat_timeout_ms,
            })),
        };
        let ack = match ack {
            Ok(ack) => ack,
            Err(e) => {
                lock(&shared.hb_breaker).on_failure(Instant::now());
                tracing::debug!(node = %shared.node_id, leader, error = %e, "heartbeat not confirmed");
                continue;
            }
        };
        lock(&shared.hb_breaker).on_success();
        // Count the lease only once this node has applied what the leader
        // had: otherwise it could act on a task the cluster already moved.
        let left = (sent + timeout).saturating_duration_since(Instant::now());
        if shared
            .node
            .wait_applied(ack.applied_index, left.max(Duration::from_millis(1)))
            .await
            .is_err()
        {
            continue;
        }
        shared.heartbeats_confirmed.fetch_add(1, Ordering::Relaxed);
        let until = sent + lease;
        shared.lease.send_if_modified(|p| {
            let renew = match *p {
                Permit::Valid { until: old } => until > old,
                Permit::Revoked => until > Instant::now(),
            };
            if renew {
                if *p == Permit::Revoked {
                    tracing::info!(node = %shared.node_id, term = ack.term, "lease acquired");
                }
                *p = Permit::Valid { until };
            }
            renew
        });
    }
}

/// Turns an expired lease into `Revoked` the moment it runs out.
async fn lease_watchdog(shared: Arc<Shared>) {
    let mut rx = shared.lease.subscribe();
    loop {
        let permit = *rx.borrow_and_update();
        match permit {
            Permit::Valid { until } => {
                tokio::select! {
                    _ = tokio::time::sleep_until(until) => {
                        let expired = shared.lease.send_if_modified(|p| {
                            let expired = matches!(*p, Permit::Valid { until } if until <= Instant::now());
                            if expired {
                                *p = Permit::Revoked;
                            }
                            expired
                        });
                        if expired {
                            tracing::warn!(node = %shared.node_id, "lease expired: stopping actuators");
                        }
                    }
                    r = rx.changed() => if r.is_err() { return },
                }
            }
            Permit::Revoked => {
                if rx.changed().await.is_err() {
                    return;
                }
            }
        }
    }
}

async fn reconcile_loop(shared: Arc<Shared>) {
    let mut events = shared.node.subscribe();
    let mut tick = tokio::time::interval(RECONCILE_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            ev = events.recv() => match ev {
                Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {
                    // Coalesce a burst into one pass.
                    while let Ok(_) | Err(broadcast::error::TryRecvError::Lagged(_)) = events.try_recv() {}
                }
                Err(broadcast::error::RecvError::Closed) => return,
            },
            _ = tick.tick() => {}
        }
        shared.reconcile();
    }
}

/// Aborts a runner's children when the runner ends or is aborted.
struct Children(Vec<JoinHandle<()>>);

impl Drop for Children {
    fn drop(&mut self) {
        for c in &self.0 {
            c.abort();
        }
    }
}

/// Runs one assignment: wait for the permit, start, run the handler, report.
async fn run_task(
    shared: Arc<Shared>,
    t: MyTask,
    handler: Arc<dyn ActionHandler>,
    cancel_rx: watch::Receiver<bool>,
    mut lost_rx: watch::Receiver<bool>,
) {
    let mut lease_rx = shared.lease.subscribe();
    // 1. Only start under a valid lease, on a state at least as new as the
    //    leader's when it confirmed the lease.
    loop {
        if *lost_rx.borrow() {
            return;
        }
        if lease_rx.borrow_and_update().allows(Instant::now()) && shared.still_ours(t.id, t.epoch) {
            break;
        }
        tokio::select! {
            r = lease_rx.changed() => if r.is_err() { return },
            r = lost_rx.changed() => if r.is_err() { return },
        }
    }
    // 2. Start (a restart after a lease lapse finds it running already).
    if t.state == TaskState::Assigned {
        match shared
            .write(
                "start task",
                Command::StartTask {
                    task_id: t.id,
                    epoch: t.epoch,
                },
            )
            .await
        {
            Ok(_) => {}
            Err(Error::Command(CommandError::IllegalTransition {
                state: TaskState::Running,
                ..
            })) => {}
            Err(Error::Command(e)) => {
                shared.note_refusal(t.id, &e);
                return;
            }
            Err(e) => {
                tracing::warn!(task = %t.id, error = %e, "could not start task; will retry");
                return;
            }
        }
    }
    tracing::info!(node = %shared.node_id, task = %t.id, epoch = %t.epoch, kind = %t.kind, "running task");

    // 3. Run the handler.
    let (permit_tx, permit_rx) = watch::channel(Permit::Revoked);
    let (feedback_tx, feedback_rx) = watch::channel::<Option<ActionFeedback>>(None);
    let (reports_tx, reports_rx) = mpsc::channel(REPORT_QUEUE);
    let (verdict_tx, mut verdict_rx) = watch::channel(Verdict::Accepted);
    let goal = ActionGoal {
        task_id: t.id.0,
        epoch: t.epoch.0,
        kind: t.kind.clone(),
        attempt: t.attempts,
        priority: t.priority,
        plan_goal_id: t.goal,
        progress_percent: t.progress,
    };
    let ctx = ActionContext::new(
        goal,
        cancel_rx.clone(),
        permit_rx,
        shared.limits.subscribe(),
        shared.plan.subscribe(),
        shared.params.subscribe(),
        shared.param_values.subscribe(),
        feedback_tx,
        reports_tx,
    );
    // Grant the permit before the handler's first poll.
    let mut permit = Permit::Revoked;
    let update_permit = |lost: bool, permit: &mut Permit| {
        let lease = *shared.lease.borrow();
        let next = match lease {
            Permit::Valid { until } if !lost && until > Instant::now() && shared.still_ours(t.id, t.epoch) => {
                Permit::Valid { until }
            }
            _ => Permit::Revoked,
        };
        let was = *permit != Permit::Revoked;
        let is = next != Permit::Revoked;
        if was != is {
            shared.observe(t.id, t.epoch, is);
        }
        *permit = next;
        permit_tx.send_replace(next);
    };
    update_permit(false, &mut permit);
    // Owned by this runner: if the runner is dropped (the agent aborted,
    // the node shutting down), the handler goes with it instead of running
    // on detached, still believing its last permit, until the lease lapses.
    let mut handler_task = AbortOnDrop::spawn(handler.run(ctx));
    let reporter = tokio::spawn(report_loop(
        shared.clone(),
        t.clone(),
        feedback_rx,
        reports_rx,
        verdict_tx,
    ));
    let _children = Children(vec![reporter]);
    let grace = Duration::from_millis(shared.config.stop_grace_ms);
    let mut stop_by: Option<Instant> = None;
    let mut lost = false;
    // Why the cluster refused a report of this handler, if it did: the
    // handler is stopped and the task fails with this reason.
    let mut rejected: Option<String> = None;
    let outcome = loop {
        if permit == Permit::Revoked && stop_by.is_none() {
            stop_by = Some(Instant::now() + grace);
        }
        let expiry = match permit {
            Permit::Valid { until } => Some(until),
            Permit::Revoked => None,
        };
        tokio::select! {
            res = &mut handler_task => break res.unwrap_or_else(|e| ActionOutcome::Failed {
                reason: format!("handler crashed: {e}"),
            }),
            r = lease_rx.changed() => {
                if r.is_err() { return; }
                update_permit(lost || rejected.is_some(), &mut permit);
            }
            _ = sleep_until_opt(expiry) => update_permit(lost || rejected.is_some(), &mut permit),
            r = lost_rx.changed(), if !lost => {
                lost = lost || r.is_err() || *lost_rx.borrow();
                update_permit(lost || rejected.is_some(), &mut permit);
            }
            r = verdict_rx.changed(), if !lost && rejected.is_none() => {
                // The reporter ends after a refusal, so read the value
                // before treating a closed channel as a lost task.
                match verdict_rx.borrow_and_update().clone() {
                    Verdict::Invalid(reason) => {
                        tracing::warn!(node = %shared.node_id, task = %t.id, epoch = %t.epoch, %reason, "stopping the handler: the cluster refused its report");
                        // Actuators stop now; the handler gets the grace to return.
                        rejected = Some(reason);
                    }
                    Verdict::Lost => lost = true,
                    Verdict::Accepted => lost = r.is_err(),
                }
                update_permit(lost || rejected.is_some(), &mut permit);
            }
            _ = sleep_until_opt(stop_by) => {
                handler_task.abort();
                if permit != Permit::Revoked {
                    update_permit(true, &mut permit);
                }
                if let Some(reason) = &rejected {
                    break ActionOutcome::Failed { reason: reason.clone() };
                }
                tracing::warn!(node = %shared.node_id, task = %t.id, epoch = %t.epoch, lost, "handler dropped: permit lost");
                return;
            }
        }
    };
    let held = permit != Permit::Revoked;
    if held {
        update_permit(true, &mut permit);
    }
    drop(_children);

    // 4. Report the result, if this node may still speak for the task.
    let refused = rejected.is_some();
    let outcome = match (outcome, rejected) {
        // The cluster refused what the handler reported: the task fails
        // with that reason, whatever the handler's own outcome.
        (_, Some(reason)) => TaskOutcome::Failed {
            reason,
            retry_jitter_ms: shared.jitter_ms(&t),
        },
        (ActionOutcome::Succeeded, None) => TaskOutcome::Succeeded,
        (ActionOutcome::Cancelled, None) if *cancel_rx.borrow() => TaskOutcome::Cancelled,
        (ActionOutcome::Cancelled, None) => TaskOutcome::Failed {
            reason: "handler stopped without a cancel request".to_owned(),
            retry_jitter_ms: shared.jitter_ms(&t),
        },
        (ActionOutcome::Failed { reason }, None) => TaskOutcome::Failed {
            reason: clip(reason),
            retry_jitter_ms: shared.jitter_ms(&t),
        },
    };
    // A handler that ended because its permit lapsed has not failed the
    // task: leave it for the restart (or the next holder). A cancel can be
    // acknowledged either way, and so can a refused report (this agent
    // revoked the permit itself; the task is still this node's).
    if lost || !(held || refused || outcome == TaskOutcome::Cancelled) {
        tracing::info!(task = %t.id, epoch = %t.epoch, ?outcome, "handler ended without a permit; result not reported");
        return;
    }
    lock(&shared.finished).insert((t.id, t.epoch));
    tracing::info!(node = %shared.node_id, task = %t.id, epoch = %t.epoch, ?outcome, "task ended");
    let _ = shared.finish(&t, outcome).await;
}

async fn sleep_until_opt(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// What the cluster made of a handler's progress reports so far.
#[derive(Clone, Debug, PartialEq)]
enum Verdict {
    /// Every report was accepted (or not yet answered).
    Accepted,
    /// A report was refused because this node no longer holds the task
    /// (stale epoch, finished or forgotten task): stop, report nothing.
    Lost,
    /// A report was refused for what it says (e.g. a non-finite distance):
    /// the handler is broken for this task; fail the task with the reason.
    Invalid(String),
}

/// Whether a refusal of an assignee's command means the sender no longer
/// holds the task, rather than that the command itself is wrong.
fn lease_lost(e: &CommandError) -> bool {
    matches!(
        e,
        CommandError::StaleEpoch { .. }
            | CommandError::TaskNotFound { .. }
            | CommandError::IllegalTransition { .. }
            | CommandError::CancelNotRequested { .. }
    )
}

/// Writes a running task's progress (at most every `progress_interval_ms`)
/// and its handler's cluster reports; tells a lost task (stale epoch) from
/// an invalid report through `verdict`.
async fn report_loop(
    shared: Arc<Shared>,
    t: MyTask,
    mut feedback: watch::Receiver<Option<ActionFeedback>>,
    mut reports: mpsc::Receiver<ClusterReport>,
    verdict: watch::Sender<Verdict>,
) {
    let interval = Duration::from_millis(shared.config.progress_interval_ms);
    loop {
        tokio::select! {
            r = feedback.changed() => {
                if r.is_err() { return; }
                let Some(fb) = feedback.borrow_and_update().clone() else { continue };
                let (percent, detail) = convert::feedback(&fb);
                let command = Command::ReportProgress { task_id: t.id, epoch: t.epoch, percent, feedback: detail };
                match shared.write("report progress", command).await {
                    Ok(_) => {}
                    Err(Error::Command(e)) if lease_lost(&e) => {
                        shared.note_refusal(t.id, &e);
                        verdict.send_replace(Verdict::Lost);
                        return;
                    }
                    Err(Error::Command(e)) => {
                        verdict.send_replace(Verdict::Invalid(clip(format!("progress report refused: {e}"))));
                        return;
                    }
                    Err(e) => tracing::debug!(task = %t.id, error = %e, "progress not reported"),
                }
                tokio::time::sleep(interval).await;
            }
            Some(report) = reports.recv() => {
                if let Err(e) = shared.write("cluster report", convert::report(&report)).await {
                    tracing::warn!(task = %t.id, ?report, error = %e, "cluster report failed");
                }
            }
        }
    }
}

/// `reason` cut to what the state machine takes as a failure reason (at a
/// character boundary), so a long message cannot get the result refused.
fn clip(mut reason: String) -> String {
    let max = cairn_state::limits::MAX_TEXT_LEN;
    if reason.len() > max {
        let mut end = max - '…'.len_utf8();
        while !reason.is_char_boundary(end) {
            end -= 1;
        }
        reason.truncate(end);
        reason.push('…');
    }
    reason
}

/// Whether `changes` (oldest first, one per version) take the parameters
/// from version `have` to `now` with none missing.
fn covers(changes: &[ParamUpdate], have: u64, now: u64) -> bool {
    changes.first().is_some_and(|c| c.version == have + 1) && changes.last().is_some_and(|c| c.version == now)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_reasons_are_clipped_at_a_char_boundary() {
        let max = cairn_state::limits::MAX_TEXT_LEN;
        assert_eq!(clip("short".into()), "short");
        let long = "é".repeat(max);
        let got = clip(long);
        assert!(got.len() <= max && got.ends_with('…'), "{} bytes", got.len());
    }

    #[test]
    fn only_fencing_refusals_mean_the_task_is_lost() {
        let task_id = TaskId(1);
        assert!(lease_lost(&CommandError::StaleEpoch {
            task_id,
            presented: Epoch(1),
            current: Some(Epoch(2)),
        }));
        assert!(lease_lost(&CommandError::TaskNotFound { task_id }));
        assert!(!lease_lost(&CommandError::NotFinite {
            field: "feedback.distance_m".into()
        }));
        assert!(!lease_lost(&CommandError::Invalid {
            field: "feedback.pose.position".into(),
            reason: "x = 1e300 m is outside ±1e6 m".into(),
        }));
    }
}
