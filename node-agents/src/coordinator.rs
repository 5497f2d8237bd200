//! The coordinator: runs only while this node leads, judges liveness from
//! heartbeats, and proposes every decision fenced to the term it leads in.
//!
//! [`Coordinator::start`] installs the heartbeat handler on the Raft node and
//! spawns a supervisor that polls the node's role every tick. When the node
//! becomes leader in term `t` a fresh [`FailureDetector`] starts counting and
//! every proposal goes through `write_fenced(t, …)`: proposed only while this
//! node leads `t`, applied only if committed in `t`. The moment the node stops
//! leading, its writes fail and the supervisor drops the run; a deposed
//! coordinator's in-flight decision can never take effect under a newer
//! leader.
//!
//! Each pass, in order: liveness verdicts (`SetLiveness`, which releases a
//! `Down` node's tasks to `Pending`; the coordinator's own node is never
//! judged, it is running), stalled tasks (`UnassignTask`, then held
//! back for one lease so the old holder has stopped before anyone else starts),
//! and placement of pending tasks (`AssignTask`, see [`crate::scheduler`]).
//!
//! # Why a released task can be held back
//! An agent counts its lease from when it *sent* a heartbeat this leader
//! then confirmed, and only after applying the index the acknowledgement
//! names. A task released by a decision that index already includes is
//! gone from the agent's view before it renews. But a heartbeat can race
//! the decision: it arrives after a pass read the detector (node silent
//! for `down_after_ms`, judged `Down`) and is acknowledged before the
//! `SetLiveness` applies, so its acknowledgement predates the release and
//! the agent renews its lease on tasks about to go elsewhere (chaos seed
//! 101 saw node 2 actuate 1.88 s after node 3 began). Every acknowledged
//! heartbeat is in the detector before its acknowledgement is built, so,
//! read after the decision applied, `last_heard + lease_ms` bounds every
//! lease the released node can still hold: its tasks wait until then
//! (normally already past, since `down_after_ms` > `lease_ms`).

use std::collections::BTreeMap;
use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::Mutex;
use std::time::Duration;

use cairn_raft::sync::lock;
use cairn_raft::Consistency;
use cairn_raft::RaftNode;
use cairn_state::Command;
use cairn_state::Epoch;
use cairn_state::Liveness;
use cairn_state::Mission;
use cairn_state::NodeId;
use cairn_state::TaskFilter;
use cairn_state::TaskId;
use serde::Serialize;
use tokio::time::Instant;

use crate::config::AgentConfig;
use crate::detector::FailureDetector;
use crate::error::Error;
use crate::protocol;
use crate::protocol::Heartbeat;
use crate::protocol::HeartbeatAck;
use crate::scheduler;
use crate::scheduler::Exclusions;
use crate::scheduler::PlacementPolicy;

/// One node as the coordinator sees it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct NodeVerdict {
    /// The node.
    pub node_id: NodeId,
    /// Liveness in the replicated state.
    pub replicated: Liveness,
    /// The detector's verdict (`None` while still in the takeover grace).
    pub verdict: Option<Liveness>,
    /// Time since its last heartbeat (or since takeover).
    pub silence_ms: u64,
}

/// What the coordinator on this node is doing; for the admin API.
///
/// The reason a task stays pending is kept here, not in the replicated state
/// (the state machine has no field for it, and it is a fact about this
/// coordinator's last pass, not about the mission).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct CoordinatorStatus {
    /// The term this node coordinates in, `None` if it does not lead.
    pub leading_term: Option<u64>,
    /// Whether the takeover grace is over (liveness is being judged).
    pub judging: bool,
    /// The placement policy.
    pub policy: String,
    /// Liveness of every registered node.
    pub nodes: Vec<NodeVerdict>,
    /// Pending tasks that fit nowhere, with the reason.
    pub unplaceable: BTreeMap<TaskId, String>,
    /// Tasks held back after being taken from a stalled holder or released
    /// from a node judged `Down`, until that holder's lease has run out.
    pub held_back: Vec<TaskId>,
    /// Scheduling passes completed in this term.
    pub passes: u64,
    /// Decisions applied in this term.
    pub decisions: u64,
    /// Decisions the state machine refused in this term (a placement the
    /// state machine rejects is a scheduler bug; expected to stay 0).
    pub refused: u64,
}

/// A leased task as a pass sees it: id, epoch, holder, `updated_at_ms`.
type LeasedTask = (TaskId, Epoch, NodeId, u64);

struct Run {
    term: u64,
    detector: FailureDetector,
    /// Per leased task: the epoch and `updated_at_ms` last seen, and when.
    progress: BTreeMap<TaskId, (Epoch, u64, Instant)>,
    /// Tasks not to schedule before the instant.
    held_back: BTreeMap<TaskId, Instant>,
    status: CoordinatorStatus,
}

struct Shared {
    node: Arc<RaftNode<Mission>>,
    config: AgentConfig,
    policy: Box<dyn PlacementPolicy>,
    run: Mutex<Option<Run>>,
}

impl Run {
    /// After a `SetLiveness{node, Down}` applied (which released `tasks`):
    /// hold them back until every lease `node`'s agent may still hold has
    /// run out (see the module docs). `None` if nothing needs holding.
    fn hold_back_released(&mut self, node: NodeId, tasks: &[TaskId], lease: Duration, now: Instant) -> Option<Instant> {
        let until = self.detector.last_heard(node)? + lease;
        if until <= now || tasks.is_empty() {
            return None;
        }
        for task in tasks {
            let at = self.held_back.entry(*task).or_insert(until);
            *at = (*at).max(until);
        }
        Some(until)
    }

    /// What placement must skip at `now`: the `quiet` nodes and the tasks
    /// still held back (forgetting those whose time is up).
    fn exclusions(&mut self, quiet: BTreeSet<NodeId>, now: Instant) -> Exclusions {
        self.held_back.retain(|_, until| *until > now);
        self.status.held_back = self.held_back.keys().copied().collect();
        Exclusions {
            tasks: self.held_back.keys().copied().collect(),
            nodes: quiet,
        }
    }
}

impl Shared {
    fn new_run(&self, term: u64, now: Instant) -> Run {
        Run {
            term,
            detector: FailureDetector::new(
                Duration::from_millis(self.config.suspect_after_ms),
                Duration::from_millis(self.config.down_after_ms),
                now,
            ),
            progress: BTreeMap::new(),
            held_back: BTreeMap::new(),
            status: CoordinatorStatus {
                leading_term: Some(term),
                policy: self.policy.name().to_owned(),
                ..Default::default()
            },
        }
    }

    /// Records a heartbeat for the run of `term`, starting it if the
    /// supervisor has not yet (a later start only lengthens the grace).
    fn record_heartbeat(&self, term: u64, node: NodeId, now: Instant) {
        let mut run = lock(&self.run);
        if run.as_ref().is_none_or(|r| r.term != term) {
            *run = Some(self.new_run(term, now));
        }
        if let Some(r) = run.as_mut() {
            r.detector.heartbeat(node, now);
        }
    }

    /// A heartbeat from node `from` (as the transport proved it: the
    /// certificate's node id, or in plaintext mode the hello's). A node
    /// heartbeats only for itself: one whose body names another node is
    /// refused and counted, so no node can keep a dead one "Up".
    async fn on_heartbeat(self: Arc<Self>, from: u64, payload: Vec<u8>) -> Result<Vec<u8>, String> {
        let hb: Heartbeat = protocol::decode(&payload).map_err(|e| e.to_string())?;
        if hb.node_id != from {
            self.node.metrics().peer_refused("heartbeat_for_another_node");
            tracing::warn!(
                from,
                claimed_node = hb.node_id,
                "refused a heartbeat: node {from} sent one for node {}; a node heartbeats only for itself",
                hb.node_id
            );
            return Err(format!(
                "refused: a heartbeat for node {} from node {from}; a node heartbeats only for itself",
                hb.node_id
            ));
        }
        let received = Instant::now();
        let Some(term) = self.node.leading_term() else {
            return Err("not the leader".to_owned());
        };
        // Confirm through a quorum that this node still leads *after* the
        // heartbeat arrived: only then may the agent count a lease from the
        // moment it sent it (a leader cut off from the majority must not
        // keep an agent's lease alive).
        let timeout = Duration::from_millis(self.config.heartbeat_timeout_ms);
        match tokio::time::timeout(timeout, self.node.read(Consistency::Linearizable, |_| ())).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(format!("leadership not confirmed: {e}")),
            Err(_) => return Err("leadership not confirmed in time".to_owned()),
        }
        if self.node.leading_term() != Some(term) {
            return Err("leadership changed while confirming".to_owned());
        }
        self.record_heartbeat(term, NodeId(hb.node_id), received);
        let applied_index = self.node.status().applied_index.unwrap_or(0);
        Ok(protocol::encode(&HeartbeatAck { term, applied_index }))
    }

    /// Proposes one decision fenced to `term`. `Ok(false)` if the state
    /// machine refused it.
    async fn decide(&self, term: u64, command: Command) -> Result<bool, Error> {
        let what = format!("{command:?}");
        match self.node.write_fenced(term, command).await?.response {
            Ok(response) => {
                tracing::debug!(term, decision = %what, ?response, "coordinator decision applied");
                self.count(|s| s.decisions += 1);
                Ok(true)
            }
            Err(e) => {
                self.count(|s| s.refused += 1);
                tracing::warn!(term, decision = %what, error = %e, "coordinator decision refused");
                Ok(false)
            }
        }
    }

    fn count(&self, f: impl FnOnce(&mut CoordinatorStatus)) {
        if let Some(r) = lock(&self.run).as_mut() {
            f(&mut r.status);
        }
    }

    /// One judge-and-schedule pass in `term`.
    async fn pass(&self, term: u64) -> Result<(), Error> {
        let now = Instant::now();
        let cfg = &self.config;
        // What the replicated state says, read once.
        let (nodes, leased): (Vec<(NodeId, Liveness)>, Vec<LeasedTask>) = self.node.local_state(|m| {
            let nodes = m.nodes().map(|n| (n.id, n.liveness)).collect();
            let leased = m
                .tasks(&TaskFilter::default())
                .into_iter()
                .filter_map(|t| t.lease.map(|l| (t.id, l.epoch, l.node_id, t.updated_at_ms)))
                .collect();
            (nodes, leased)
        });

        // 1. Liveness verdicts.
        let mut changes = Vec::new();
        let mut quiet = BTreeSet::new();
        {
            let mut guard = lock(&self.run);
            let run = guard.get_or_insert_with(|| self.new_run(term, now));
            // This node is running this pass: its own liveness is not in
            // doubt, whether or not its agent's heartbeats get confirmed.
            // Without a quorum they do not, and the leader judged its own
            // node Down, a decision that committed if the quorum came back
            // under the same leader (issue 17); the writes fail anyway.
            run.detector.heartbeat(NodeId(self.node.id()), now);
            let mut views = Vec::with_capacity(nodes.len());
            for (id, replicated) in &nodes {
                let verdict = run.detector.verdict(*id, now);
                if verdict.is_some_and(|v| v != *replicated) {
                    changes.push((*id, verdict.unwrap_or(Liveness::Up)));
                }
                if verdict != Some(Liveness::Up) {
                    quiet.insert(*id);
                }
                views.push(NodeVerdict {
                    node_id: *id,
                    replicated: *replicated,
                    verdict,
                    silence_ms: run.detector.silence(*id, now).as_millis() as u64,
                });
            }
            run.status.nodes = views;
            run.status.judging = run.detector.judging(now);
        }
        let lease = Duration::from_millis(cfg.lease_ms);
        for (node_id, liveness) in changes {
            tracing::info!(term, node = %node_id, %liveness, "coordinator changes liveness");
            let applied = self.decide(term, Command::SetLiveness { node_id, liveness }).await?;
            if applied && liveness == Liveness::Down {
                let released: Vec<TaskId> = leased.iter().filter(|l| l.2 == node_id).map(|l| l.0).collect();
                let now = Instant::now();
                let held = lock(&self.run)
                    .as_mut()
                    .filter(|r| r.term == term)
                    .and_then(|r| r.hold_back_released(node_id, &released, lease, now));
                if let Some(until) = held {
                    tracing::info!(
                        term,
                        node = %node_id,
                        tasks = ?released,
                        hold_ms = until.saturating_duration_since(now).as_millis() as u64,
                        "holding released tasks back: a heartbeat from the node arrived while it was being judged down"
                    );
                }
            }
        }

        // 2. Stalled tasks.
        let stall_after = Duration::from_millis(cfg.stall_after_ms);
        let mut stalled = Vec::new();
        {
            let mut guard = lock(&self.run);
            let run = guard.get_or_insert_with(|| self.new_run(term, now));
            let judging = run.detector.judging(now);
            let live: BTreeSet<TaskId> = leased.iter().map(|l| l.0).collect();
            run.progress.retain(|t, _| live.contains(t));
            for (task, epoch, holder, updated) in &leased {
                let seen = run.progress.entry(*task).or_insert((*epoch, *updated, now));
                if seen.0 != *epoch || seen.1 != *updated {
                    *seen = (*epoch, *updated, now);
                }
                if judging && now.duration_since(seen.2) >= stall_after {
                    stalled.push((*task, *holder));
                }
            }
        }
        for (task_id, holder) in stalled {
            tracing::warn!(term, task = %task_id, node = %holder, "task stalled; taking it back");
            if self.decide(term, Command::UnassignTask { task_id }).await? {
                let until = Instant::now() + Duration::from_millis(cfg.lease_ms);
                if let Some(r) = lock(&self.run).as_mut() {
                    r.held_back.insert(task_id, until);
                    r.progress.remove(&task_id);
                }
            }
        }

        // 3. Placement.
        let skip = {
            let mut guard = lock(&self.run);
            let run = guard.get_or_insert_with(|| self.new_run(term, now));
            run.exclusions(quiet, now)
        };
        // The clock the leader stamps proposals with (shifted in clock-jump
        // tests): back-offs are decided against those stamps.
        let now_ms = self.node.wall_clock_ms();
        let schedule = self
            .node
            .local_state(|m| scheduler::plan(m, now_ms, self.policy.as_ref(), &skip));
        for (task_id, node_id) in &schedule.assignments {
            tracing::info!(term, task = %task_id, node = %node_id, "coordinator assigns task");
            self.decide(
                term,
                Command::AssignTask {
                    task_id: *task_id,
                    node_id: *node_id,
                },
            )
            .await?;
        }
        self.count(|s| {
            s.unplaceable = schedule.unplaceable;
            s.passes += 1;
        });
        Ok(())
    }
}

/// The coordinator supervisor of one node. Dropping it stops it.
pub struct Coordinator {
    shared: Arc<Shared>,
    task: tokio::task::JoinHandle<()>,
}

impl Coordinator {
    /// Installs the heartbeat handler on `node` and starts the supervisor,
    /// which coordinates whenever `node` leads.
    pub fn start(node: Arc<RaftNode<Mission>>, config: AgentConfig) -> Result<Self, Error> {
        config.validate()?;
        let shared = Arc::new(Shared {
            policy: scheduler::policy_for(config.policy),
            node: node.clone(),
            config,
            run: Mutex::new(None),
        });
        let weak = Arc::downgrade(&shared);
        node.set_app_handler(Arc::new(move |from, payload| {
            let weak = weak.clone();
            Box::pin(async move {
                match weak.upgrade() {
                    Some(shared) => shared.on_heartbeat(from, payload).await,
                    None => Err("coordinator stopped".to_owned()),
                }
            })
        }));
        let task = tokio::spawn(supervise(shared.clone()));
        Ok(Self { shared, task })
    }

    /// What the coordinator is doing (empty when this node does not lead).
    pub fn status(&self) -> CoordinatorStatus {
        match lock(&self.shared.run).as_ref() {
            Some(run) => run.status.clone(),
            None => CoordinatorStatus {
                policy: self.shared.policy.name().to_owned(),
                ..Default::default()
            },
        }
    }

    /// Stops the supervisor at once (no handover: the next leader's
    /// coordinator starts from the replicated state).
    pub fn abort(&self) {
        self.task.abort();
    }
}

impl Drop for Coordinator {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn supervise(shared: Arc<Shared>) {
    let mut tick = tokio::time::interval(Duration::from_millis(shared.config.coordinator_tick_ms));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut leading: Option<u64> = None;
    loop {
        tick.tick().await;
        let term = shared.node.leading_term();
        if term != leading {
            if let Some(old) = leading {
                tracing::info!(term = old, "coordinator stops: no longer leading");
            }
            if let Some(t) = term {
                tracing::info!(term = t, "coordinator starts: this node leads");
                let mut run = lock(&shared.run);
                if run.as_ref().is_none_or(|r| r.term != t) {
                    *run = Some(shared.new_run(t, Instant::now()));
                }
            } else {
                *lock(&shared.run) = None;
            }
            leading = term;
        }
        let Some(term) = term else { continue };
        if let Err(e) = shared.pass(term).await {
            // Lost leadership or quorum mid-pass: the next tick re-checks.
            tracing::debug!(term, error = %e, "coordinator pass interrupted");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LEASE: Duration = Duration::from_millis(2000);

    fn run(now: Instant) -> Run {
        Run {
            term: 7,
            detector: FailureDetector::new(Duration::from_millis(1500), Duration::from_millis(3000), now),
            progress: BTreeMap::new(),
            held_back: BTreeMap::new(),
            status: CoordinatorStatus::default(),
        }
    }

    /// Chaos seed 101 (CI): node 2 was judged `Down` after 3 s of silence;
    /// its next heartbeat arrived after the verdict was read and was
    /// acknowledged before the `SetLiveness` applied, so its agent renewed
    /// the lease on its task, which the same pass gave to node 3 at once.
    /// The released task must wait until that heartbeat's lease is over.
    #[tokio::test(start_paused = true)]
    async fn a_heartbeat_racing_a_down_verdict_holds_the_released_task_back() {
        let node = NodeId(2);
        let task = TaskId(10);
        let mut r = run(Instant::now());
        r.detector.heartbeat(node, Instant::now());
        tokio::time::advance(Duration::from_millis(3100)).await;
        // The pass reads its verdict...
        assert_eq!(r.detector.verdict(node, Instant::now()), Some(Liveness::Down));
        // ... a heartbeat sent now arrives and is acknowledged (the agent
        // may act until sent + LEASE) ...
        let sent = Instant::now();
        tokio::time::advance(Duration::from_millis(3)).await;
        r.detector.heartbeat(node, Instant::now());
        // ... and then the decision applies.
        tokio::time::advance(Duration::from_millis(5)).await;
        let now = Instant::now();
        let until = r.hold_back_released(node, &[task], LEASE, now);
        assert!(until.is_some_and(|u| u > sent + LEASE), "held until {until:?}");
        assert!(r.exclusions(BTreeSet::new(), now).tasks.contains(&task));
        tokio::time::advance(LEASE - Duration::from_millis(10)).await;
        assert!(
            r.exclusions(BTreeSet::new(), Instant::now()).tasks.contains(&task),
            "placed before the racing heartbeat's lease ran out"
        );
        tokio::time::advance(Duration::from_millis(20)).await;
        assert!(r.exclusions(BTreeSet::new(), Instant::now()).tasks.is_empty());
    }

    /// The usual case: a node silent for `down_after` holds no lease any
    /// more, and its tasks move at once.
    #[tokio::test(start_paused = true)]
    async fn a_silent_node_s_tasks_are_not_held_back() {
        let node = NodeId(2);
        let mut r = run(Instant::now());
        r.detector.heartbeat(node, Instant::now());
        tokio::time::advance(Duration::from_millis(3100)).await;
        assert_eq!(r.detector.verdict(node, Instant::now()), Some(Liveness::Down));
        assert_eq!(r.hold_back_released(node, &[TaskId(1)], LEASE, Instant::now()), None);
        assert!(r.exclusions(BTreeSet::new(), Instant::now()).tasks.is_empty());
        // Never heard since takeover: the previous leader's leases ended
        // within the takeover grace.
        assert_eq!(
            r.hold_back_released(NodeId(3), &[TaskId(2)], LEASE, Instant::now()),
            None
        );
    }
}
