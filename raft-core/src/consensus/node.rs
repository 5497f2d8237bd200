//! A running Raft node: start-up, writes with leader forwarding, reads,
//! membership, status.

use std::collections::BTreeMap;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use cairn_state::Admission;
use cairn_state::ApplyCtx;
use cairn_state::ClientTag;
use cairn_state::Speaker;
use cairn_state::StateMachine;
use openraft::errors::ClientWriteError;
use openraft::errors::InitializeError;
use openraft::errors::LinearizableReadError;
use openraft::errors::RaftError;
use openraft::type_config::async_runtime::WatchReceiver;
use openraft::ChangeMembers;
use openraft::ReadPolicy;
use openraft::ServerState;
use openraft::SnapshotPolicy;
use tokio::sync::broadcast;
use tokio::sync::watch;

use super::network::CallError;
use super::network::NetConfig;
use super::network::NetworkFactory;
use super::network::PeerClient;
use super::protocol::AdminRequest;
use super::protocol::ForwardError;
use super::protocol::Request;
use super::protocol::Response;
use super::sm_store::ChangeEvent;
use super::sm_store::Shared;
pub use super::sm_store::StateHash;
use super::sm_store::StateMachineStore;
use super::watch::Watch;
use super::Applied;
use super::Member;
use super::NodeId;
use super::Proposal;
use super::Raft;
use super::RaftMetrics;
use crate::config::RaftNodeConfig;
use crate::config::WalSync;
use crate::error::Error;
use crate::metrics::NodeMetrics;
use crate::retry::RetryPolicy;
use crate::transport::Acceptor;
use crate::transport::Dialer;
use crate::transport::Listener;
use crate::transport::PeerIdentity;
use crate::transport::PlainAcceptor;
use crate::transport::TcpDialer;
use crate::transport::TcpPeerListener;

mod health;
mod membership;

pub(crate) use health::LeaderContact;
pub use membership::MemberProgress;
pub use membership::Promotion;

/// How long [`RaftNode::start`] waits for the Raft core's first metrics
/// report (it comes within milliseconds of the core starting).
const FIRST_METRICS_WITHIN: Duration = Duration::from_secs(5);

/// Handles application messages other nodes send with
/// [`RaftNode::send_app`] (e.g. heartbeats to the coordinator). Gets the
/// sender's id and the payload; its answer goes back to the sender.
pub type AppHandler =
    Arc<dyn Fn(NodeId, Vec<u8>) -> futures::future::BoxFuture<'static, Result<Vec<u8>, String>> + Send + Sync>;

/// Which component an application message is for. Several components share
/// the one application-message path of the transport; each registers its
/// own handler on its own channel, so none can take over another's
/// messages. A closed enum rather than a number, so two components cannot
/// pick the same channel by accident.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum AppChannel {
    /// What [`RaftNode::set_app_handler`] and [`RaftNode::send_app`] use:
    /// the agents' heartbeats to the coordinator.
    Default,
    /// Best-effort telemetry fanned out between nodes (the facade's hub).
    Telemetry,
}

/// The variant name of a command, for a log line and an error (its
/// `Debug` form without the fields, which may be large or hostile).
fn command_name<C: std::fmt::Debug>(command: &C) -> String {
    let text = format!("{command:?}");
    text.split(|c: char| !(c.is_alphanumeric() || c == '_'))
        .next()
        .unwrap_or_default()
        .chars()
        .take(64)
        .collect()
}

/// How many times a write chases a moving leader before giving up.
const FORWARD_ATTEMPTS: u32 = 5;

/// How a read is served.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Consistency {
    /// Linearizable: the leader confirms it still leads (read-index, one
    /// heartbeat round) and this node waits until it has applied at least
    /// that index. Sees every write acknowledged before the read started.
    #[default]
    Linearizable,
    /// Whatever this node has applied: no network round trip, may be stale
    /// by the replication lag (or more, if the node is partitioned).
    Stale,
}

/// A committed write.
#[derive(Clone, Debug, PartialEq)]
pub struct WriteOutcome<R> {
    /// Log index the write was committed at.
    pub index: u64,
    /// What the state machine returned.
    pub response: R,
}

/// One log entry as a node stores it (see [`RaftNode::log_records`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogRecord {
    /// Log index.
    pub index: u64,
    /// Term of the leader that created the entry.
    pub term: u64,
    /// That leader's node id. openraft's leader ids are `(term, node id)`
    /// (`leader_id_adv`): two leaders may lead one term in turn, so an
    /// entry is identified by index, term *and* leader.
    pub leader: u64,
    /// The entry's payload (blank, membership or proposal), postcard-encoded:
    /// two entries are the same entry exactly when these bytes are equal.
    pub payload: Vec<u8>,
}

/// Raft role of a node.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Leads the cluster.
    Leader,
    /// Votes and replicates.
    Follower,
    /// Campaigning.
    Candidate,
    /// Replicates, does not vote.
    Learner,
    /// Stopped.
    Shutdown,
}

/// One member as this node sees it.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct MemberStatus {
    /// Node id.
    pub id: NodeId,
    /// Addresses.
    pub member: Member,
    /// Voter (true) or learner.
    pub voter: bool,
    /// Highest log index known replicated to it (leader only).
    pub matched_index: Option<u64>,
    /// Entries it is behind the leader's last log index (leader only).
    pub lag: Option<u64>,
    /// Milliseconds since it last acknowledged the leader (leader only;
    /// 0 for the leader itself, `None` if it never has in this term).
    #[serde(default)]
    pub last_ack_ms: Option<u64>,
}

/// A node's view of the cluster, like `etcdctl endpoint status`.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Status {
    /// This node.
    pub id: NodeId,
    /// Its role.
    pub role: Role,
    /// Current term.
    pub term: u64,
    /// Leader, if known.
    pub leader: Option<NodeId>,
    /// Last log index.
    pub last_log_index: Option<u64>,
    /// Highest committed index.
    pub committed_index: Option<u64>,
    /// Highest applied index.
    pub applied_index: Option<u64>,
    /// Index of the latest snapshot.
    pub snapshot_index: Option<u64>,
    /// Log purged up to here.
    pub purged_index: Option<u64>,
    /// Members, voters first.
    pub members: Vec<MemberStatus>,
    /// Whether this node is in touch with a leader that has a quorum: on
    /// the leader, a majority of voters (of each voter set, while a joint
    /// membership is in force) acknowledged it within the last election
    /// timeout; elsewhere, it accepted an append or heartbeat from the
    /// leader of its current term within the last election timeout. What
    /// `/readyz` reports.
    #[serde(default)]
    pub quorum: bool,
    /// On the leader, milliseconds since a majority of voters last
    /// acknowledged it; elsewhere, since this node last heard from a
    /// leader. `None` if never (since this process started).
    #[serde(default)]
    pub leader_contact_ms: Option<u64>,
    /// On the leader: how many more voters may fail with writes still
    /// committing (voters that acknowledged it within the last election
    /// timeout, itself included, beyond a majority; 0 without a quorum).
    /// `None` on other nodes.
    #[serde(default)]
    pub fault_tolerance: Option<u64>,
    /// A membership change is under way: the latest membership this node
    /// knows is not committed yet, or is joint (the old and the new voter
    /// sets both in force until the change completes). `voter` of the
    /// members is then not final.
    #[serde(default)]
    pub membership_changing: bool,
}

/// Forwarding connections to other nodes, shared by concurrent callers.
struct ForwardPool {
    net: NetConfig,
    peers: tokio::sync::Mutex<HashMap<NodeId, PeerClient>>,
}

impl ForwardPool {
    async fn call(&self, target: NodeId, addr: &str, req: Request, timeout: Duration) -> Result<Response, CallError> {
        // One client per peer; `call` clones the connection out so concurrent
        // forwarded requests share it (pipelined) rather than queue on a lock.
        let conn = {
            let mut peers = self.peers.lock().await;
            let client = peers
                .entry(target)
                .or_insert_with(|| PeerClient::new(target, addr.to_string(), self.net.clone()));
            client.retarget(addr);
            client.shared_connection().await?
        };
        let res = PeerClient::call_on(&conn, target, req, timeout).await;
        if matches!(res, Err(CallError::Network { .. })) {
            if let Some(c) = self.peers.lock().await.get_mut(&target) {
                c.mark_failed(&conn);
            }
        }
        res
    }
}

/// The state one node's tasks share.
pub(crate) struct Core<S: StateMachine> {
    pub(crate) id: NodeId,
    pub(crate) raft: Raft<S>,
    pub(crate) shared: Arc<Shared<S>>,
    /// Read side of the log, for watches replaying history.
    pub(crate) log: super::log_store::LogStore,
    pub(crate) metrics: NodeMetrics,
    pub(crate) data_dir: PathBuf,
    pub(crate) max_frame_bytes: usize,
    /// Connection cap and timeouts of the peer port.
    pub(crate) peer: crate::config::PeerLimits,
    /// `snapshots.max_incoming_bytes`: what incoming snapshot transfers
    /// may stage on disk, all connections together.
    pub(crate) snapshot_staging: Arc<super::staging::StagingBudget>,
    /// `log.max_entry_bytes`: the largest encoded command a proposal may carry.
    max_entry_bytes: usize,
    write_timeout: Duration,
    election_timeout_max: Duration,
    forward: ForwardPool,
    /// The wall clock proposals are stamped with.
    clock: crate::clock::WallClock,
    last_stamp_ms: AtomicU64,
    app_handlers: std::sync::RwLock<HashMap<AppChannel, AppHandler>>,
    /// When this node last accepted an append from a leader (the
    /// transport stamps it): a follower's half of [`Status::quorum`].
    pub(crate) leader_contact: Arc<LeaderContact>,
}

fn forward_err(leader: Option<(NodeId, Member)>) -> ForwardError {
    ForwardError::NotLeader { leader }
}

/// What the leader's check decided about a proposal before proposing it
/// (see [`Core::refuse_before_log`]).
enum PreCheck {
    /// Propose it: the state machine accepts it in this state, or the log
    /// must decide (a retry of a tagged write, a refusal that depends on
    /// the state for a tagged write, a fenced write of another term).
    Propose,
    /// Refused whatever the state (or not understood): answer with this.
    Refuse(Applied),
    /// Refused by this node's applied state, which may be stale: refuse
    /// only once a read barrier shows it is fresh.
    RefuseIfFresh(Applied),
}

impl<S: StateMachine> Core<S> {
    /// Leader's timestamp for a proposal: wall clock, but never going back
    /// while this node leads (NTP steps must not reorder deadlines).
    fn stamp(&self) -> u64 {
        let now = self.clock.now_ms();
        let prev = self.last_stamp_ms.fetch_max(now, Ordering::AcqRel);
        prev.max(now)
    }

    /// Propose on this node; fails with `NotLeader` if it does not lead.
    async fn propose_local(&self, mut proposal: Proposal) -> Result<(u64, Applied), ForwardError> {
        use tracing::Instrument;
        // Debug level: at the default `info` filter this is one disabled
        // span (no allocation); the request id is then not copied either.
        let span = tracing::debug_span!(
            "raft.client_write",
            request_id = tracing::field::Empty,
            index = tracing::field::Empty,
            outcome = tracing::field::Empty,
        );
        if !span.is_disabled() {
            if let Some(id) = crate::trace::current_request_id() {
                span.record("request_id", id.as_str());
                proposal.request_id = Some(id.into());
            }
        }
        let res = self.propose_local_inner(proposal).instrument(span.clone()).await;
        if !span.is_disabled() {
            match &res {
                Ok((index, _)) => {
                    span.record("index", index);
                    span.record("outcome", "applied");
                }
                Err(e) => {
                    span.record("outcome", e.outcome());
                }
            }
        }
        res
    }

    async fn propose_local_inner(&self, mut proposal: Proposal) -> Result<(u64, Applied), ForwardError> {
        // Checked again here (the forwarding node checked with its own
        // limit): native clients and nodes configured differently.
        if proposal.command.len() > self.max_entry_bytes {
            return Err(ForwardError::EntryTooLarge {
                bytes: proposal.command.len() as u64,
                limit: self.max_entry_bytes as u64,
            });
        }
        proposal.proposed_at_ms = self.stamp();
        let started = std::time::Instant::now();
        if let Some(refused) = self.refuse_before_log(&proposal).await? {
            self.metrics.refused_before_log.inc();
            return Ok(refused);
        }
        let fut = self.raft.client_write(proposal);
        let res = match tokio::time::timeout(self.write_timeout, fut).await {
            Err(_) => {
                return Err(ForwardError::Indeterminate {
                    message: format!("write did not commit within {:?}", self.write_timeout),
                })
            }
            Ok(r) => r,
        };
        match res {
            Ok(resp) => {
                self.metrics.proposal_seconds.observe(started.elapsed().as_secs_f64());
                Ok((resp.log_id.index, resp.data))
            }
            Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f))) => {
                Err(forward_err(f.leader_id.zip(f.leader_node)))
            }
            // Appended, then the leader changed: it may still commit.
            Err(RaftError::APIError(ClientWriteError::LogEntryDiscarded(_))) => Err(ForwardError::Indeterminate {
                message: "the leader changed before the write committed; it may or may not apply".into(),
            }),
            Err(e) => Err(ForwardError::Failed { message: e.to_string() }),
        }
    }

    /// The state machine's check of `proposal` against this node's applied
    /// state, under the replica's read lock, and the applied index it
    /// reflects. Never blocks: the read lock is held for one `check`.
    fn pre_check(&self, proposal: &Proposal) -> (u64, PreCheck) {
        let term = self.raft.metrics().borrow_watched().current_term;
        let replica = self.shared.read();
        let applied = replica.last_applied.map(|l| l.index).unwrap_or(0);
        if proposal.fence_term.is_some_and(|t| t != term) {
            // The log fences it (`Applied::Fenced`), as before.
            return (applied, PreCheck::Propose);
        }
        if let Some(tag) = &proposal.tag {
            // A retry of a write already applied, or a late replay: the
            // session table in the log answers it, as before.
            if !matches!(replica.sessions.admit(tag), Admission::Apply) {
                return (applied, PreCheck::Propose);
            }
        }
        let command = match postcard::from_bytes::<S::Command>(&proposal.command) {
            Ok(command) => command,
            // Not understood here; a node of another version might, so a
            // tagged write is left to the log (which records the outcome).
            Err(e) if proposal.tag.is_none() => {
                return (
                    applied,
                    PreCheck::Refuse(Applied::Undecodable { reason: e.to_string() }),
                )
            }
            Err(_) => return (applied, PreCheck::Propose),
        };
        let ctx = ApplyCtx {
            index: applied + 1,
            term,
            timestamp_ms: proposal.proposed_at_ms,
        };
        let Err(refusal) = replica.machine.check(&command, &ctx) else {
            return (applied, PreCheck::Propose);
        };
        let Ok(bytes) = postcard::to_stdvec(refusal.response()) else {
            return (applied, PreCheck::Propose);
        };
        let verdict = if refusal.in_every_state() {
            PreCheck::Refuse(Applied::Response(bytes))
        } else if proposal.tag.is_some() {
            // A retryable write refused by this state: a retry of it may
            // still be in flight to the log, or arrive after the state
            // changed, and must find the outcome recorded in the session
            // table; so the log decides (docs/ARCHITECTURE.md, "Refused
            // writes").
            PreCheck::Propose
        } else {
            PreCheck::RefuseIfFresh(Applied::Response(bytes))
        };
        (applied, verdict)
    }

    /// `Some((index, refusal))` if the state machine refuses `proposal`: it
    /// is answered without being appended, exactly as an applied refusal
    /// would be (the index is the applied index of the state that refused
    /// it). A refusal that depends on the state is given only after a read
    /// barrier: this node confirms it still leads (a quorum round) and
    /// applies up to the read index, then checks again. So the state checked
    /// holds every write acknowledged before the request arrived, and the
    /// refusal is linearizable even on a new leader that has not yet
    /// applied its predecessors' entries, or a deposed one. The barrier
    /// costs a heartbeat round, on refusals only. If it fails, the node
    /// does not lead (answered `NotLeader`, so the write is forwarded) or
    /// has no quorum (`Unavailable`): nothing was proposed either way.
    async fn refuse_before_log(&self, proposal: &Proposal) -> Result<Option<(u64, Applied)>, ForwardError> {
        if !self.raft.is_leader() {
            // Only the leader's state is current; a follower proposes, is
            // told who leads, and the write goes there.
            return Ok(None);
        }
        match self.pre_check(proposal) {
            (_, PreCheck::Propose) => Ok(None),
            (index, PreCheck::Refuse(refusal)) => Ok(Some((index, refusal))),
            // Boxed: the barrier's futures are deep, and refusals are rare;
            // inline they made every write future deeper than callers'
            // layout computation allows (node-agents hit the query limit).
            (_, PreCheck::RefuseIfFresh(_)) => Box::pin(self.confirm_refusal(proposal)).await,
        }
    }

    /// The read barrier and second check of [`Core::refuse_before_log`].
    async fn confirm_refusal(&self, proposal: &Proposal) -> Result<Option<(u64, Applied)>, ForwardError> {
        let deadline = tokio::time::Instant::now() + self.write_timeout;
        let unconfirmed = || {
            ForwardError::Unavailable {
            leader: self.id,
            message: format!(
                "the state machine refused the write, but this node could not confirm its state is current within {:?}; nothing was written",
                self.write_timeout
            ),
        }
        };
        let read = tokio::time::timeout_at(deadline, self.read_index_local())
            .await
            .map_err(|_| unconfirmed())??;
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        self.raft
            .wait(Some(left))
            .applied_index_at_least(Some(read), "pre-check read index")
            .await
            .map_err(|_| unconfirmed())?;
        Ok(match self.pre_check(proposal) {
            (index, PreCheck::Refuse(refusal) | PreCheck::RefuseIfFresh(refusal)) => Some((index, refusal)),
            (_, PreCheck::Propose) => None,
        })
    }

    async fn read_index_local(&self) -> Result<u64, ForwardError> {
        match self.raft.ensure_linearizable(ReadPolicy::ReadIndex).await {
            Ok(read) => Ok(read.index()),
            Err(RaftError::APIError(LinearizableReadError::ForwardToLeader(f))) => {
                Err(forward_err(f.leader_id.zip(f.leader_node)))
            }
            Err(RaftError::APIError(LinearizableReadError::QuorumNotEnough(q))) => Err(ForwardError::Unavailable {
                leader: self.id,
                message: q.to_string(),
            }),
            Err(e) => Err(ForwardError::Failed { message: e.to_string() }),
        }
    }

    /// The leader, if this node knows one and it is another node.
    fn other_leader(&self) -> Option<(NodeId, Member)> {
        let metrics = self.raft.metrics();
        let m = metrics.borrow_watched();
        let leader = m.current_leader.filter(|l| *l != self.id)?;
        let member = m.membership_config.nodes().find(|(id, _)| **id == leader)?.1.clone();
        Some((leader, member))
    }

    fn members(&self) -> BTreeMap<NodeId, Member> {
        let m = self.raft.metrics().borrow_watched().membership_config.clone();
        m.nodes().map(|(id, n)| (*id, n.clone())).collect()
    }

    async fn admin_local(&self, req: AdminRequest) -> Result<(), ForwardError> {
        let map = |e: RaftError<super::TypeConfig, ClientWriteError<super::TypeConfig>>| match e {
            RaftError::APIError(ClientWriteError::ForwardToLeader(f)) => forward_err(f.leader_id.zip(f.leader_node)),
            RaftError::APIError(ClientWriteError::ChangeMembershipError(e)) => {
                ForwardError::Membership { reason: e.to_string() }
            }
            other => ForwardError::Failed {
                message: other.to_string(),
            },
        };
        if !self.raft.is_leader() {
            let m = self.raft.metrics().borrow_watched().clone();
            let leader = m
                .current_leader
                .and_then(|l| self.members().get(&l).cloned().map(|n| (l, n)));
            return Err(forward_err(leader));
        }
        match req {
            AdminRequest::AddLearner { id, member } => {
                // Not openraft's "blocking" add: it waits only while the
                // learner is more than `replication_lag_threshold` (5000)
                // entries behind, so it returns at once for a node that is
                // not even running. `add_learner_and_wait` waits honestly.
                self.raft.add_learner(id, member, false).await.map_err(map)?;
            }
            AdminRequest::Promote { id } => {
                if !self.members().contains_key(&id) {
                    return Err(ForwardError::Membership {
                        reason: format!("node {id} is not a member; add it as a learner first"),
                    });
                }
                self.raft
                    .change_membership(ChangeMembers::AddVoterIds([id].into()), false)
                    .await
                    .map_err(map)?;
            }
            AdminRequest::Remove { id } => {
                let m = self.raft.metrics().borrow_watched().membership_config.clone();
                let is_voter = m.voter_ids().any(|v| v == id);
                if !m.nodes().any(|(n, _)| *n == id) {
                    return Err(ForwardError::Membership {
                        reason: format!("node {id} is not a member of the cluster"),
                    });
                }
                if id == self.id {
                    // A leader must not remove itself (openraft's membership
                    // handling assumes the leader stays; jepsen F5): hand
                    // leadership to the most up-to-date other voter first,
                    // and let the caller forward the removal to it.
                    return Err(self.step_down_for_removal(&m).await);
                }
                if is_voter {
                    self.raft
                        .change_membership(ChangeMembers::RemoveVoters([id].into()), false)
                        .await
                        .map_err(map)?;
                }
                self.raft
                    .change_membership(ChangeMembers::RemoveNodes([id].into()), false)
                    .await
                    .map_err(map)?;
            }
            AdminRequest::TransferLeader { to } => {
                let m = self.raft.metrics().borrow_watched().membership_config.clone();
                if !m.voter_ids().any(|v| v == to) {
                    return Err(ForwardError::Membership {
                        reason: format!("node {to} is not a voter; only voters can lead"),
                    });
                }
                self.raft
                    .trigger()
                    .transfer_leader(to)
                    .await
                    .map_err(|e| ForwardError::Failed { message: e.to_string() })?;
            }
        }
        Ok(())
    }

    /// The other voter with the highest matched index (ties: the highest
    /// id) among those that acknowledged a heartbeat within the last
    /// election timeout: the one a transfer of leadership should go to.
    /// A voter that is down would never take over, so it is not chosen.
    fn best_successor(&self, m: &super::StoredMembership) -> Option<NodeId> {
        use openraft::Instant as _;
        let metrics = self.raft.metrics().borrow_watched().clone();
        let matched = |v: &NodeId| {
            metrics
                .replication
                .as_ref()
                .and_then(|r| r.get(v).cloned().flatten())
                .map(|l| l.index)
        };
        let alive = |v: &NodeId| {
            metrics
                .heartbeat
                .as_ref()
                .and_then(|h| h.get(v).cloned().flatten())
                .is_some_and(|acked| acked.elapsed() < self.election_timeout_max)
        };
        m.voter_ids()
            .filter(|v| *v != self.id && alive(v))
            .max_by_key(|v| (matched(v), *v))
    }

    /// Transfer leadership to `target` and wait, bounded, until it moved.
    /// Returns the new leader as this node sees it.
    async fn hand_over(&self, target: NodeId) -> Result<Option<(NodeId, Member)>, ForwardError> {
        self.raft
            .trigger()
            .transfer_leader(target)
            .await
            .map_err(|e| ForwardError::Failed { message: e.to_string() })?;
        // Bounded: a transfer completes within one election round.
        let wait = self.election_timeout_max * 4;
        let moved = self
            .raft
            .wait(Some(wait))
            .metrics(|m| m.current_leader.is_some_and(|l| l != self.id), "leadership moved")
            .await;
        match moved {
            Ok(m) => Ok(m
                .current_leader
                .and_then(|l| self.members().get(&l).cloned().map(|n| (l, n)))),
            Err(_) => Err(ForwardError::Unavailable {
                leader: self.id,
                message: format!("leadership did not move to node {target} within {wait:?}"),
            }),
        }
    }

    /// Transfer leadership away (to the voter with the highest matched
    /// index) and wait, bounded, until it moved.
    async fn step_down_for_removal(&self, m: &super::StoredMembership) -> ForwardError {
        let Some(target) = self.best_successor(m) else {
            return ForwardError::Membership {
                reason: format!("node {} is the only voter that is up; it cannot be removed", self.id),
            };
        };
        tracing::info!(
            to = target,
            "leader asked to remove itself: transferring leadership first"
        );
        match self.hand_over(target).await {
            Ok(leader) => forward_err(leader),
            Err(e) => e,
        }
    }

    /// `peer.handshake_timeout_ms`.
    pub(crate) fn peer_handshake_timeout(&self) -> Duration {
        Duration::from_millis(self.peer.handshake_timeout_ms)
    }

    /// May the node behind `sender` forward `proposal`? The state machine
    /// says whom the command speaks for ([`StateMachine::speaker`]); a node
    /// speaks only for itself, and cluster decisions come only from the
    /// leader's own coordinator (which proposes locally, never through
    /// here). `Err` is the refusal to send back; it is logged and counted
    /// here. Judged on any node, leader or not: the speaker of a command is
    /// fixed once known (a task's holder at an epoch never changes), so a
    /// stale replica can only be unsure (then the log decides), never wrong.
    fn authorize_forwarded(&self, sender: &PeerIdentity, proposal: &Proposal) -> Result<(), ForwardError> {
        let Ok(command) = postcard::from_bytes::<S::Command>(&proposal.command) else {
            // Not understood here: the pre-check refuses it (untagged) or
            // the log records it as undecodable; it can speak for no one.
            return Ok(());
        };
        let speaker = self.shared.read().machine.speaker(&command);
        let (reason, why) = match speaker {
            Speaker::Anyone => return Ok(()),
            Speaker::Node(node) if sender.may_speak_for(node) => return Ok(()),
            Speaker::Node(node) => (
                "speaks_for_another_node",
                format!("it speaks for node {node}, and a node may speak only for itself"),
            ),
            Speaker::Leader => (
                "leader_only",
                "it is a cluster decision, which only the leader's own coordinator proposes".to_owned(),
            ),
        };
        self.metrics.peer_refused(reason);
        let what = command_name(&command);
        tracing::warn!(
            sender = %sender,
            command = %what,
            reason,
            "refused a forwarded write: {why}"
        );
        Err(ForwardError::Forbidden {
            reason: format!("{what} from {sender} refused: {why}"),
        })
    }

    /// Serve a request another node forwarded to us (we should lead), over a
    /// connection proven to be `sender`.
    pub(crate) async fn handle_forwarded(&self, req: Request, sender: &PeerIdentity) -> Response {
        use tracing::Instrument;
        let (request_id, req) = match req {
            Request::Traced { request_id, inner } => (Some(request_id), *inner),
            other => (None, other),
        };
        let span = match &request_id {
            Some(id) => tracing::info_span!("forwarded", request_id = %id),
            None => tracing::Span::none(),
        };
        let scope_id = request_id.clone();
        let serve = async move {
            match req {
                Request::ClientWrite(p) => {
                    if let Err(refused) = self.authorize_forwarded(sender, &p) {
                        return Response::ClientWrite(Err(refused));
                    }
                    let res = self.propose_local(p).await;
                    if request_id.is_some() {
                        match &res {
                            Ok((index, _)) => tracing::debug!(index, "forwarded write committed"),
                            Err(e) => tracing::debug!(error = ?e, "forwarded write failed"),
                        }
                    }
                    Response::ClientWrite(res)
                }
                Request::ReadIndex => Response::ReadIndex(self.read_index_local().await),
                Request::Admin(a) => Response::Admin(self.admin_local(a).await),
                Request::App { from, channel, payload } => Response::App(self.handle_app(from, channel, payload).await),
                other => Response::Error(format!("not a forwardable request: {other:?}")),
            }
        }
        .instrument(span);
        // The id is also this task's request id here, so the leader's
        // `raft.client_write` span and the apply span carry it.
        match scope_id {
            Some(id) => crate::trace::with_request_id(id, serve).await,
            None => serve.await,
        }
    }

    async fn handle_app(&self, from: NodeId, channel: AppChannel, payload: Vec<u8>) -> Result<Vec<u8>, String> {
        let handler = self
            .app_handlers
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(&channel)
            .cloned();
        match handler {
            Some(h) => h(from, payload).await,
            None => Err(format!("node {} has no application handler for {channel:?}", self.id)),
        }
    }

    /// Run `local` here, or forward `request` to the leader, following the
    /// leader as it moves, on the one retry policy ([`crate::retry`]):
    /// bounded attempts, all within one deadline (the write timeout, or
    /// `outer` if sooner) that retries, forwards and the waits for an
    /// election share, so a caller never waits much longer than
    /// `write_timeout_ms` (jepsen F4: a 3 s timeout gave waits over 4 s).
    /// An attempt whose outcome is unknown is retried only if the request
    /// is `idempotent` (a tagged write, a read).
    async fn on_leader<T, F, Fut>(
        &self,
        outer: Option<tokio::time::Instant>,
        idempotent: bool,
        local: F,
        request: impl Fn() -> Request,
        unpack: impl Fn(Response) -> Option<Result<T, ForwardError>>,
    ) -> Result<T, Error>
    where
        F: Fn() -> Fut,
        Fut: std::future::Future<Output = Result<T, ForwardError>>,
    {
        let policy = RetryPolicy {
            max_attempts: FORWARD_ATTEMPTS,
            deadline: self.write_timeout,
            // Give an election time to finish before the next attempt.
            backoff_min: self.election_timeout_max / 2,
            backoff_max: self.election_timeout_max * 2,
        };
        let mut tries = match outer {
            Some(outer) => policy.start_by(outer),
            None => policy.start(),
        };
        loop {
            let remaining = tries.remaining();
            let err = if remaining.is_zero() {
                // Nothing of this attempt was sent (`retry` admits none
                // past the deadline; only `outer` can be already past).
                Error::NoLeader
            } else {
                match self.leader_attempt(remaining, &local, &request, &unpack).await {
                    Ok(v) => return Ok(v),
                    Err(Failure::Judge(e)) => e,
                    Err(Failure::Final(e)) => return Err(e),
                }
            };
            if !tries.retry(err.retry_class(), idempotent).await {
                return Err(err);
            }
        }
    }

    /// One attempt of [`Core::on_leader`].
    async fn leader_attempt<T, F, Fut>(
        &self,
        remaining: Duration,
        local: &F,
        request: &impl Fn() -> Request,
        unpack: &impl Fn(Response) -> Option<Result<T, ForwardError>>,
    ) -> Result<T, Failure>
    where
        F: Fn() -> Fut,
        Fut: std::future::Future<Output = Result<T, ForwardError>>,
    {
        // A follower that knows the leader forwards at once, instead of
        // first asking its own Raft core (a round trip through the core
        // task per write, only to hear "forward to the leader").
        let here = match self.other_leader() {
            Some(leader) => Err(ForwardError::NotLeader { leader: Some(leader) }),
            // Here it may have been proposed: out of time, the outcome
            // is unknown.
            None => tokio::time::timeout(remaining, local())
                .await
                .map_err(|_| self.timed_out("request"))?,
        };
        let (leader, member) = match here {
            Ok(v) => return Ok(v),
            Err(ForwardError::NotLeader {
                leader: Some((leader, member)),
            }) => (leader, member),
            Err(e) => return Err(Failure::Judge(e.into())),
        };
        self.metrics.forwarded_writes.inc();
        let req = match crate::trace::current_request_id() {
            Some(request_id) => Request::Traced {
                request_id,
                inner: Box::new(request()),
            },
            None => request(),
        };
        let res = self.forward.call(leader, &member.raft_addr, req, remaining).await;
        let err = match res {
            Ok(resp) => match unpack(resp) {
                Some(Ok(v)) => return Ok(v),
                Some(Err(e)) => e.into(),
                None => {
                    return Err(Failure::Final(Error::Unavailable {
                        leader,
                        reason: "unexpected response".into(),
                    }))
                }
            },
            // Definitely not delivered: safe to retry.
            Err(e @ CallError::Unreachable { .. }) => Error::Unavailable {
                leader,
                reason: e.to_string(),
            },
            // Maybe delivered: only the caller can decide.
            Err(CallError::Timeout { .. }) => return Err(self.timed_out("forwarded request")),
            // Sent, then the connection broke: it may have been applied, so
            // only a tagged write is retried (jepsen F1).
            Err(e @ CallError::Network { .. }) => Error::Indeterminate {
                reason: format!("forwarded to leader {leader}, then {e}"),
            },
        };
        Err(Failure::Judge(err))
    }

    /// Out of time with the request possibly sent: the whole deadline is
    /// spent (the attempt had all that remained), so nothing is retried.
    fn timed_out(&self, what: &'static str) -> Failure {
        Failure::Final(Error::Timeout {
            what,
            after_ms: self.write_timeout.as_millis() as u64,
        })
    }
}

/// How one attempt of [`Core::on_leader`] failed.
enum Failure {
    /// The retry policy decides whether to try again.
    Judge(Error),
    /// Given back to the caller at once.
    Final(Error),
}

/// A running Raft node replicating the state machine `S`.
pub struct RaftNode<S: StateMachine> {
    core: Arc<Core<S>>,
    raft_addr: String,
    shutdown: watch::Sender<bool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl<S: StateMachine> RaftNode<S> {
    /// Open the data dir, listen for peers and start Raft over TCP.
    pub async fn start(config: RaftNodeConfig) -> Result<Self, Error> {
        Self::start_with_dialer(config, Arc::new(TcpDialer)).await
    }

    /// Like [`RaftNode::start`], with a custom [`Dialer`] between this node
    /// and its peers (fault injection, proxies, simulated networks).
    pub async fn start_with_dialer(config: RaftNodeConfig, dialer: Arc<dyn Dialer>) -> Result<Self, Error> {
        Self::start_with_transport(config, dialer, Arc::new(PlainAcceptor)).await
    }

    /// Like [`RaftNode::start_with_dialer`], with an [`Acceptor`] that wraps
    /// every accepted peer connection (mutual TLS in the `cairn` daemon).
    pub async fn start_with_transport(
        config: RaftNodeConfig,
        dialer: Arc<dyn Dialer>,
        acceptor: Arc<dyn Acceptor>,
    ) -> Result<Self, Error> {
        config.validate()?;
        let listener = tokio::net::TcpListener::bind(&config.listen_addr)
            .await
            .map_err(|source| Error::Bind {
                addr: config.listen_addr.clone(),
                source,
            })?;
        let bound = listener
            .local_addr()
            .map_err(|source| Error::Bind {
                addr: config.listen_addr.clone(),
                source,
            })?
            .to_string();
        let raft_addr = config.advertise_addr.clone().unwrap_or(bound);
        let listener = Box::new(TcpPeerListener::new(listener, acceptor));
        Self::start_with_listener(config, raft_addr, listener, dialer, WalSync::GroupCommit).await
    }

    /// Start on a transport of the caller's making: peers connect through
    /// `listener` and are dialled through `dialer`, `raft_addr` is the
    /// address this node reports, and `wal_sync` says how appends are made
    /// durable. `config.listen_addr` is not used. This is how the
    /// simulation tier runs the real node on a simulated network
    /// (docs/CHAOS.md, "Simulation tier").
    pub async fn start_with_listener(
        config: RaftNodeConfig,
        raft_addr: String,
        listener: Box<dyn Listener>,
        dialer: Arc<dyn Dialer>,
        wal_sync: WalSync,
    ) -> Result<Self, Error> {
        config.validate()?;
        clean_snapshot_staging(&config.data_dir);
        let t = &config.timings;
        let metrics = NodeMetrics::new();
        let db = crate::storage::open_db(&config.data_dir)?;
        let mut log_store =
            super::log_store::LogStore::new(db.clone(), metrics.storage.clone(), wal_sync).map_err(|source| {
                Error::Storage {
                    what: "start wal sync thread".into(),
                    source,
                }
            })?;
        log_store.max_append_bytes = config.log.max_append_bytes;
        let mut sm = StateMachineStore::<S>::open(db)
            .await
            .map_err(|source| Error::Storage {
                what: "restore state machine".into(),
                source,
            })?;
        sm.in_flight = log_store.in_flight.clone();
        let shared = sm.shared.clone();

        let raft_config = openraft::Config {
            cluster_name: "cairn".into(),
            heartbeat_interval: t.heartbeat_interval_ms,
            election_timeout_min: t.election_timeout_ms_min,
            election_timeout_max: t.election_timeout_ms_max,
            install_snapshot_timeout: t.install_snapshot_timeout_ms,
            snapshot_policy: SnapshotPolicy::LogsSinceLast(config.snapshots.snapshot_every_entries),
            max_in_snapshot_log_to_keep: config.snapshots.logs_kept_after_snapshot,
            enable_pre_vote: Some(true),
            // Replicate an entry as soon as it is written locally, in parallel
            // with the local fsync: a commit then costs one fsync, not two in a row.
            broadcast_submitted_on_append: Some(true),
            // Leadership after a restart only through an election (Raft
            // §5.4), never openraft's default "leader restore". A commit may
            // rest on the followers' disks alone (above, and because any
            // majority commits), so a leader that loses power can come back
            // with a shorter log; restored in its old term it would append
            // new entries under log ids the followers hold for others, and
            // acknowledged writes would be lost with the replicas split for
            // good (issue 25; docs/ARCHITECTURE.md, "Departures from
            // textbook Raft"). An election costs the restart about one
            // election timeout.
            enable_leader_restore: Some(false),
            ..Default::default()
        };
        let raft_config = Arc::new(raft_config.validate().map_err(|e| Error::Config {
            field: "timings",
            reason: e.to_string(),
        })?);
        let dialer: Arc<dyn Dialer> = if config.peer_dial_overrides.is_empty() {
            dialer
        } else {
            Arc::new(crate::transport::OverrideDialer::new(
                dialer,
                config.peer_dial_overrides.clone(),
            ))
        };
        let net = NetConfig {
            self_id: config.id,
            dialer,
            max_frame_bytes: config.max_frame_bytes,
            connect_timeout: Duration::from_millis(t.connect_timeout_ms),
            backoff_min: Duration::from_millis(t.reconnect_backoff_ms_min),
            backoff_max: Duration::from_millis(t.reconnect_backoff_ms_max),
            // As long as a follower stays loyal without hearing from the
            // leader (the lease, then an election timeout): a slow link
            // (100-250 ms one way on bad Wi-Fi) slows commits down instead
            // of failing every RPC (jepsen F3).
            rpc_timeout_min: Duration::from_millis(t.election_timeout_ms_min + t.election_timeout_ms_max),
        };
        let log_reader = log_store.clone();
        let raft = openraft::Raft::new(
            config.id,
            raft_config,
            NetworkFactory { cfg: net.clone() },
            log_store,
            sm,
        )
        .await
        .map_err(|e| Error::Fatal { reason: e.to_string() })?;
        // Until the Raft core's first report its metrics are openraft's
        // initial ones (term 0, learner, no log), whatever is on disk: a
        // status read then would show a restarted node's term going back.
        // The core reports as soon as it runs; bounded in case it never does
        // (it then failed, and its metrics say so).
        let mut first_report = raft.metrics();
        if tokio::time::timeout(FIRST_METRICS_WITHIN, first_report.changed())
            .await
            .is_err()
        {
            tracing::warn!(
                within_ms = FIRST_METRICS_WITHIN.as_millis() as u64,
                "the raft core has not reported its state yet; status may read as a fresh node"
            );
        }

        let core = Arc::new(Core {
            id: config.id,
            raft,
            shared,
            log: log_reader,
            metrics,
            data_dir: config.data_dir.clone(),
            max_frame_bytes: config.max_frame_bytes,
            peer: config.peer.clone(),
            snapshot_staging: super::staging::StagingBudget::new(config.snapshots.max_incoming_bytes),
            max_entry_bytes: config.log.max_entry_bytes,
            write_timeout: Duration::from_millis(t.write_timeout_ms),
            election_timeout_max: Duration::from_millis(t.election_timeout_ms_max),
            forward: ForwardPool {
                net,
                peers: tokio::sync::Mutex::new(HashMap::new()),
            },
            clock: config.clock,
            last_stamp_ms: AtomicU64::new(0),
            app_handlers: std::sync::RwLock::new(HashMap::new()),
            leader_contact: Arc::new(LeaderContact::new()),
        });
        let (shutdown, shutdown_rx) = watch::channel(false);
        let server = tokio::spawn(super::server::serve(listener, core.clone(), shutdown_rx.clone()));
        let gauges = tokio::spawn(track_metrics(core.clone(), shutdown_rx));
        tracing::info!(id = config.id, raft_addr = %raft_addr, "raft node started");
        Ok(Self {
            core,
            raft_addr,
            shutdown,
            tasks: vec![server, gauges],
        })
    }

    /// This node's id.
    pub fn id(&self) -> NodeId {
        self.core.id
    }

    /// The address peers dial (the bound one if the config used port 0).
    pub fn raft_addr(&self) -> &str {
        &self.raft_addr
    }

    /// Prometheus metrics of this node.
    pub fn metrics(&self) -> &NodeMetrics {
        &self.core.metrics
    }

    /// `log.max_entry_bytes`: the largest encoded command this node
    /// proposes or forwards (the admin API's body limit follows it).
    pub fn max_entry_bytes(&self) -> usize {
        self.core.max_entry_bytes
    }

    /// The write's encoded command, or [`Error::EntryTooLarge`]: checked on
    /// the node the client called, before anything is forwarded.
    fn encode_command(&self, command: &S::Command) -> Result<Vec<u8>, Error> {
        let bytes = postcard::to_stdvec(command)?;
        if bytes.len() > self.core.max_entry_bytes {
            return Err(Error::EntryTooLarge {
                bytes: bytes.len(),
                limit: self.core.max_entry_bytes,
            });
        }
        Ok(bytes)
    }

    /// Bootstrap a new cluster with `members` (which must include this
    /// node). Refused, changing nothing, if this node already has state.
    pub async fn initialize(&self, members: BTreeMap<NodeId, Member>) -> Result<(), Error> {
        if !members.contains_key(&self.core.id) {
            return Err(Error::Membership {
                reason: format!("the member list must include this node ({})", self.core.id),
            });
        }
        match self.core.raft.initialize(members).await {
            Ok(()) => Ok(()),
            Err(RaftError::APIError(InitializeError::NotAllowed(_))) => {
                Err(Error::AlreadyInitialized { node_id: self.core.id })
            }
            Err(e) => Err(Error::Membership { reason: e.to_string() }),
        }
    }

    /// Whether this node has ever been part of a cluster.
    pub async fn is_initialized(&self) -> Result<bool, Error> {
        self.core
            .raft
            .is_initialized()
            .await
            .map_err(|e| Error::Fatal { reason: e.to_string() })
    }

    /// Replicate a command (forwarded to the leader if needed). Untagged:
    /// after a timeout the caller cannot know whether it applied; use
    /// [`RaftNode::write_tagged`] when retries must be safe.
    pub async fn write(&self, command: S::Command) -> Result<WriteOutcome<S::Response>, Error> {
        self.propose(None, command, None).await
    }

    /// Replicate a command at most once per `tag`: retrying with the same tag
    /// returns the first outcome instead of applying again.
    /// Within the write timeout, a tagged write is also retried after an
    /// attempt whose outcome is unknown (see [`crate::retry`]).
    pub async fn write_tagged(&self, tag: ClientTag, command: S::Command) -> Result<WriteOutcome<S::Response>, Error> {
        self.propose(Some(tag), command, None).await
    }

    /// [`RaftNode::write_tagged`] inside a caller's own retry loop: it
    /// ends by `deadline` (or the write timeout, if sooner), so the two
    /// loops share one deadline instead of multiplying.
    pub async fn write_tagged_by(
        &self,
        tag: ClientTag,
        command: S::Command,
        deadline: tokio::time::Instant,
    ) -> Result<WriteOutcome<S::Response>, Error> {
        self.propose(Some(tag), command, Some(deadline)).await
    }

    async fn propose(
        &self,
        tag: Option<ClientTag>,
        command: S::Command,
        outer: Option<tokio::time::Instant>,
    ) -> Result<WriteOutcome<S::Response>, Error> {
        let proposal = Proposal {
            tag,
            proposed_at_ms: 0,
            fence_term: None,
            command: self.encode_command(&command)?,
            request_id: None,
        };
        let core = &self.core;
        let (index, applied) = core
            .on_leader(
                outer,
                tag.is_some(),
                || core.propose_local(proposal.clone()),
                || Request::ClientWrite(proposal.clone()),
                Response::into_client_write,
            )
            .await?;
        decode_applied(index, applied)
    }

    /// Propose `command` on this node only if it leads in `term`, and apply
    /// it only if it commits in that same term. Never forwarded: this is how
    /// the coordinator makes decisions that a newer leader must not inherit.
    pub async fn write_fenced(&self, term: u64, command: S::Command) -> Result<WriteOutcome<S::Response>, Error> {
        let proposal = Proposal {
            tag: None,
            proposed_at_ms: 0,
            fence_term: Some(term),
            command: self.encode_command(&command)?,
            request_id: None,
        };
        match self.core.propose_local(proposal).await {
            Ok((index, applied)) => decode_applied(index, applied),
            // Never forwarded: "not the leader" even if none is known.
            Err(ForwardError::NotLeader { leader }) => Err(Error::NotLeader {
                leader: leader.map(|(id, _)| id),
            }),
            Err(e) => Err(e.into()),
        }
    }

    /// Register the handler for application messages sent to this node on
    /// the [`AppChannel::Default`] channel.
    pub fn set_app_handler(&self, handler: AppHandler) {
        self.set_app_handler_on(AppChannel::Default, handler);
    }

    /// Register the handler for application messages on `channel`
    /// (replacing the channel's previous handler, if any).
    pub fn set_app_handler_on(&self, channel: AppChannel, handler: AppHandler) {
        self.core
            .app_handlers
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(channel, handler);
    }

    /// Send an application message to member `target` over the Raft
    /// transport on the [`AppChannel::Default`] channel and wait for its
    /// handler's answer. Best effort: not replicated, not retried.
    pub async fn send_app(&self, target: NodeId, payload: Vec<u8>, timeout: Duration) -> Result<Vec<u8>, Error> {
        self.send_app_on(AppChannel::Default, target, payload, timeout).await
    }

    /// [`RaftNode::send_app`] on `channel`.
    pub async fn send_app_on(
        &self,
        channel: AppChannel,
        target: NodeId,
        payload: Vec<u8>,
        timeout: Duration,
    ) -> Result<Vec<u8>, Error> {
        if target == self.core.id {
            return self
                .core
                .handle_app(target, channel, payload)
                .await
                .map_err(|reason| Error::Unavailable { leader: target, reason });
        }
        let Some(member) = self.core.members().get(&target).cloned() else {
            return Err(Error::UnknownMember { node_id: target });
        };
        let req = Request::App {
            from: self.core.id,
            channel,
            payload,
        };
        match self.core.forward.call(target, &member.raft_addr, req, timeout).await {
            Ok(Response::App(Ok(bytes))) => Ok(bytes),
            Ok(Response::App(Err(reason))) => Err(Error::Unavailable { leader: target, reason }),
            Ok(other) => Err(Error::Unavailable {
                leader: target,
                reason: format!("unexpected response {other:?}"),
            }),
            Err(CallError::Timeout { .. }) => Err(Error::Timeout {
                what: "application message",
                after_ms: timeout.as_millis() as u64,
            }),
            Err(e) => Err(Error::Unavailable {
                leader: target,
                reason: e.to_string(),
            }),
        }
    }

    /// This node's wall clock now, ms since the Unix epoch: what it stamps
    /// proposals with when it leads ([`RaftNodeConfig::clock`]).
    pub fn wall_clock_ms(&self) -> u64 {
        self.core.clock.now_ms()
    }

    /// The current leader's id and term as this node knows them.
    pub fn leader(&self) -> Option<(NodeId, u64)> {
        let st = self.status();
        st.leader.map(|l| (l, st.term))
    }

    /// Whether this node leads, and in which term.
    pub fn leading_term(&self) -> Option<u64> {
        let st = self.status();
        (st.role == Role::Leader).then_some(st.term)
    }
}

pub(crate) fn decode_applied<R: serde::de::DeserializeOwned>(
    index: u64,
    applied: Applied,
) -> Result<WriteOutcome<R>, Error> {
    match applied {
        Applied::Response(bytes) => Ok(WriteOutcome {
            index,
            response: postcard::from_bytes(&bytes)?,
        }),
        Applied::Fenced { expected, actual } => Err(Error::Fenced { expected, actual }),
        Applied::StaleRetry { last_seq } => Err(Error::Rejected {
            reason: format!("retry of an old write (client is already at sequence {last_seq})"),
        }),
        Applied::Undecodable { reason } => Err(Error::Rejected {
            reason: format!("command not understood by the state machine: {reason}"),
        }),
    }
}

impl<S: StateMachine> RaftNode<S> {
    /// Read the state machine with the given consistency.
    pub async fn read<R>(&self, consistency: Consistency, f: impl FnOnce(&S) -> R) -> Result<R, Error> {
        if consistency == Consistency::Linearizable {
            let core = &self.core;
            let index = core
                // A read index changes nothing: idempotent.
                .on_leader(
                    None,
                    true,
                    || core.read_index_local(),
                    || Request::ReadIndex,
                    Response::into_read_index,
                )
                .await?;
            self.wait_applied(index, core.write_timeout).await?;
        }
        Ok(f(&self.core.shared.read().machine))
    }

    /// Wait until this node has applied `index`.
    pub async fn wait_applied(&self, index: u64, timeout: Duration) -> Result<(), Error> {
        self.core
            .raft
            .wait(Some(timeout))
            .applied_index_at_least(Some(index), "wait applied")
            .await
            .map(|_| ())
            .map_err(|_| Error::Timeout {
                what: "catching up to the read index",
                after_ms: timeout.as_millis() as u64,
            })
    }

    async fn admin(&self, req: AdminRequest) -> Result<(), Error> {
        let core = &self.core;
        // Membership changes carry no tag: not retried after an unknown
        // outcome.
        core.on_leader(
            None,
            false,
            || core.admin_local(req.clone()),
            || Request::Admin(req.clone()),
            |r| match r {
                Response::Admin(r) => Some(r),
                _ => None,
            },
        )
        .await
    }

    /// Add a non-voting member (forwarded to the leader). Returns once the
    /// entry that adds it is committed: it does not wait for the learner,
    /// which may not even be running; [`RaftNode::add_learner_and_wait`]
    /// (on the leader) does.
    pub async fn add_learner(&self, id: NodeId, member: Member) -> Result<(), Error> {
        self.admin(AdminRequest::AddLearner { id, member }).await
    }

    /// Make a learner a voter (forwarded to the leader), without checking
    /// that it is running or caught up; [`RaftNode::promote_checked`] (on
    /// the leader) checks.
    pub async fn promote(&self, id: NodeId) -> Result<(), Error> {
        self.admin(AdminRequest::Promote { id }).await
    }

    /// Remove a member (voter or learner).
    pub async fn remove(&self, id: NodeId) -> Result<(), Error> {
        let known = self.status().members.iter().any(|m| m.id == id);
        if !known {
            return Err(Error::UnknownMember { node_id: id });
        }
        self.admin(AdminRequest::Remove { id }).await
    }

    /// Hand leadership to voter `to` (for rolling restarts).
    pub async fn transfer_leader(&self, to: NodeId) -> Result<(), Error> {
        self.admin(AdminRequest::TransferLeader { to }).await
    }

    /// If this node leads, hand leadership to the most up-to-date other
    /// voter and wait until it moved (bounded: four election timeouts).
    /// Returns the new leader; `None` if this node did not lead or is the
    /// only voter that is up (nobody to hand over to). Used before a
    /// graceful shutdown, so the cluster does not wait an election timeout
    /// for a leader that is going away.
    pub async fn step_down(&self) -> Result<Option<NodeId>, Error> {
        let core = &self.core;
        if !core.raft.is_leader() {
            return Ok(None);
        }
        let m = core.raft.metrics().borrow_watched().membership_config.clone();
        let Some(target) = core.best_successor(&m) else {
            return Ok(None);
        };
        tracing::info!(to = target, "stepping down: transferring leadership");
        match core.hand_over(target).await {
            Ok(leader) => Ok(leader.map(|(id, _)| id)),
            Err(ForwardError::NotLeader { leader }) => Ok(leader.map(|(id, _)| id)),
            Err(e) => Err(e.into()),
        }
    }

    /// Wait until some leader is known, and return it.
    pub async fn wait_for_leader(&self, timeout: Duration) -> Result<NodeId, Error> {
        let m = self
            .core
            .raft
            .wait(Some(timeout))
            .metrics(|m| m.current_leader.is_some(), "a leader")
            .await
            .map_err(|_| Error::NoLeader)?;
        m.current_leader.ok_or(Error::NoLeader)
    }

    /// This node's view of the cluster.
    pub fn status(&self) -> Status {
        let m = self.core.raft.metrics().borrow_watched().clone();
        let health = health::health(&m, self.core.leader_contact.since(), self.core.election_timeout_max);
        status_from(&m, health)
    }

    /// Applied commands, as they apply on this node. A receiver that falls
    /// behind by the channel capacity gets `Lagged` and should re-read.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<ChangeEvent<S>>> {
        self.core.shared.events.subscribe()
    }

    /// A point-in-time copy of the state machine for a backup file, taken
    /// after a linearizable read barrier (so it reflects every write
    /// acknowledged before the call) and under the replica's read lock (so
    /// state, index and term agree).
    pub async fn backup(&self) -> Result<crate::backup::Backup, Error> {
        self.read(Consistency::Linearizable, |_| ()).await?;
        let members = self.core.members();
        let (last, state) = {
            let replica = self.core.shared.read();
            (replica.last_applied, replica.machine.snapshot())
        };
        // The true time, not the node's (possibly shifted) clock: a
        // backup's age is read by operators.
        let taken_at_ms = crate::clock::WallClock::SYSTEM.now_ms();
        Ok(crate::backup::Backup {
            index: last.map(|l| l.index).unwrap_or(0),
            term: last.map(|l| super::term_of(&l)).unwrap_or(0),
            taken_at_ms,
            taken_by: self.core.id,
            members,
            state,
        })
    }

    /// SHA-256 of this node's applied replicated state, and the index it
    /// reflects, taken under the replica's read lock (state and index
    /// agree). The bytes hashed are the snapshot envelope a snapshot of
    /// this node would hold: the state machine's own canonical encoding
    /// (postcard, `BTreeMap`s only), the client sessions, the membership
    /// and the last applied log id, so everything `apply` changes is
    /// covered. Local (no read barrier): callers wanting a linearizable
    /// view call [`RaftNode::read`] first.
    pub fn state_hash(&self) -> Result<StateHash, Error> {
        hash_of(&self.core.shared.read())
    }

    /// The state hash at exactly applied index `index`, for comparing
    /// replicas that are applying a moving log (`cairn check consistency`,
    /// like etcd's hash at a revision). Answered at once if this node's
    /// applied index is `index`; if it is below, this waits (up to `wait`)
    /// and the hash is taken right after applying `index`, before anything
    /// later changes the state. Errors: [`Error::HashPassed`] if this node
    /// already applied past `index`, [`Error::HashNotReached`] if it did not reach
    /// it within `wait`, [`Error::Busy`] if too many callers wait.
    pub async fn state_hash_at(&self, index: u64, wait: Duration) -> Result<StateHash, Error> {
        let shared = &self.core.shared;
        let rx = {
            // Registered under the replica's read lock: apply (which takes
            // the write lock) cannot pass `index` between the check and the
            // registration.
            let replica = shared.read();
            let applied = replica.last_applied.map(|l| l.index).unwrap_or(0);
            if applied == index {
                return hash_of(&replica);
            }
            if applied > index {
                return Err(Error::HashPassed {
                    requested: index,
                    applied,
                });
            }
            shared.hash_waiters.register(index).ok_or_else(|| Error::Busy {
                reason: format!(
                    "{} callers already wait for a state hash",
                    super::sm_store::HASH_WAITERS_MAX
                ),
            })?
        };
        match tokio::time::timeout(wait, rx).await {
            Ok(Ok(Ok(hash))) => Ok(hash),
            Ok(Ok(Err(applied))) => Err(Error::HashPassed {
                requested: index,
                applied,
            }),
            Ok(Err(_)) => Err(Error::Fatal {
                reason: "the state machine stopped while a state hash was awaited".into(),
            }),
            Err(_) => Err(Error::HashNotReached {
                requested: index,
                applied: shared.read().last_applied.map(|l| l.index).unwrap_or(0),
                after_ms: wait.as_millis() as u64,
            }),
        }
    }

    /// The entries of this node's log from index `from` on (at most `max`),
    /// as stored: for checkers that compare logs across nodes (the
    /// simulation tier's log-matching check). Entries already purged into a
    /// snapshot are not returned.
    pub async fn log_records(&self, from: u64, max: usize) -> Result<Vec<LogRecord>, Error> {
        use openraft::RaftLogReader as _;
        let mut reader = self.core.log.clone();
        let end = from.saturating_add(max as u64);
        let entries = reader
            .try_get_log_entries(from..end)
            .await
            .map_err(|source| Error::Storage {
                what: "read log entries".into(),
                source,
            })?;
        entries
            .into_iter()
            .map(|e| {
                Ok(LogRecord {
                    index: e.log_id.index,
                    term: super::term_of(&e.log_id),
                    leader: e.log_id.committed_leader_id().node_id,
                    payload: postcard::to_stdvec(&e.payload)?,
                })
            })
            .collect()
    }

    /// Read the locally applied state without any consistency check.
    pub fn local_state<R>(&self, f: impl FnOnce(&S) -> R) -> R {
        f(&self.core.shared.read().machine)
    }

    /// Like [`RaftNode::read`], also returning the applied index the state
    /// reflected, so a client can watch for changes from the next one.
    pub async fn read_indexed<R>(&self, consistency: Consistency, f: impl FnOnce(&S) -> R) -> Result<(u64, R), Error> {
        self.read(consistency, |_| ()).await?;
        let replica = self.core.shared.read();
        let index = replica.last_applied.map(|l| l.index).unwrap_or(0);
        Ok((index, f(&replica.machine)))
    }

    /// Applied changes from log index `from` on: history from the log, then
    /// live, without gaps or duplicates (see [`Watch`]). Fails with
    /// [`Error::Compacted`] if `from` is already compacted into a snapshot.
    pub fn watch(&self, from: u64) -> Result<Watch<S>, Error> {
        Watch::new(self.core.clone(), from)
    }

    /// Stop Raft and the transport. Pending writes fail.
    pub async fn shutdown(mut self) -> Result<(), Error> {
        let _ = self.shutdown.send(true);
        let res = self.core.raft.shutdown().await;
        for t in self.tasks.drain(..) {
            t.abort();
        }
        // Everything acknowledged is synced already; this makes the rest
        // (the committed index, say) durable too, so a restart replays less.
        if let Err(e) = self.core.log.sync_wal().await {
            tracing::warn!(error = %e, "final wal sync at shutdown failed");
        }
        res.map_err(|e| Error::Fatal { reason: e.to_string() })
    }
}

impl<S: StateMachine> Drop for RaftNode<S> {
    fn drop(&mut self) {
        let _ = self.shutdown.send(true);
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// The replica's state hash, an encoding failure as a storage error.
fn hash_of<S: StateMachine>(replica: &super::sm_store::Replica<S>) -> Result<StateHash, Error> {
    replica.state_hash().map_err(|source| Error::Storage {
        what: "encoding the state for its hash".into(),
        source,
    })
}

fn status_from(m: &RaftMetrics, health: health::Health) -> Status {
    let role = match m.state {
        ServerState::Leader => Role::Leader,
        ServerState::Follower => Role::Follower,
        ServerState::Candidate => Role::Candidate,
        ServerState::Learner => Role::Learner,
        ServerState::Shutdown => Role::Shutdown,
    };
    let membership = m.membership_config.clone();
    let voters: std::collections::BTreeSet<NodeId> = membership.voter_ids().collect();
    let last = m.last_log_index.unwrap_or(0);
    let mut members: Vec<MemberStatus> = membership
        .nodes()
        .map(|(id, node)| {
            let matched = m
                .replication
                .as_ref()
                .and_then(|r| r.get(id))
                .map(|l| l.as_ref().map(|l| l.index).unwrap_or(0));
            let matched = if *id == m.id && role == Role::Leader {
                m.last_log_index
            } else {
                matched
            };
            MemberStatus {
                id: *id,
                member: node.clone(),
                voter: voters.contains(id),
                matched_index: matched,
                lag: matched.map(|x| last.saturating_sub(x)),
                last_ack_ms: health::ack_age(m, *id).map(|a| a.as_millis() as u64),
            }
        })
        .collect();
    members.sort_by_key(|s| (!s.voter, s.id));
    Status {
        id: m.id,
        role,
        term: m.current_term,
        leader: m.current_leader,
        last_log_index: m.last_log_index,
        committed_index: m.cluster_committed.as_ref().map(|l| l.index),
        applied_index: m.last_applied.as_ref().map(|l| l.index),
        snapshot_index: m.snapshot.as_ref().map(|l| l.index),
        purged_index: m.purged.as_ref().map(|l| l.index),
        members,
        quorum: health.quorum,
        leader_contact_ms: health.leader_contact.map(|d| d.as_millis() as u64),
        fault_tolerance: health.fault_tolerance,
        membership_changing: m.membership_config.log_id() != m.committed_membership_config.log_id()
            || m.membership_config.get_joint_config().len() > 1,
    }
}

/// Mirror Raft's metrics into Prometheus gauges as they change.
async fn track_metrics<S: StateMachine>(core: Arc<Core<S>>, mut shutdown: watch::Receiver<bool>) {
    let mut rx = core.raft.metrics();
    let mut last_leader = None;
    loop {
        {
            // Read the few fields in place: metrics change on every write,
            // and cloning the whole struct (membership maps, log id list)
            // each time showed up in profiles.
            let m = rx.borrow_and_update();
            let g = &core.metrics;
            g.term.set(m.current_term as i64);
            g.commit_index
                .set(m.cluster_committed.as_ref().map(|l| l.index as i64).unwrap_or(0));
            g.applied_index
                .set(m.last_applied.as_ref().map(|l| l.index as i64).unwrap_or(0));
            g.is_leader.set(i64::from(m.state == ServerState::Leader));
            if m.current_leader.is_some() && m.current_leader != last_leader {
                g.leader_changes.inc();
                last_leader = m.current_leader;
            }
        }
        tokio::select! {
            _ = shutdown.changed() => break,
            changed = rx.changed() => if changed.is_err() { break },
        }
    }
}

/// Where snapshot chunks from the leader are staged (`*.part`) until the
/// last one arrives (see `server.rs`).
pub(crate) const SNAPSHOT_STAGING_DIR: &str = "snapshot-incoming";

/// Remove the staging files a crash mid-transfer left behind: a transfer
/// never resumes across a restart (the leader starts again from offset 0),
/// so any `*.part` at start is garbage, and without this each crash during
/// a transfer would leave up to a snapshot's size on the SD card for good.
/// Best effort: a file that cannot be removed is logged, not fatal.
fn clean_snapshot_staging(data_dir: &std::path::Path) {
    let dir = data_dir.join(SNAPSHOT_STAGING_DIR);
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return; // absent: nothing staged
    };
    let (mut removed, mut bytes) = (0u64, 0u64);
    for entry in entries.flatten() {
        let path = entry.path();
        if path.extension().is_some_and(|e| e == "part") {
            let len = entry.metadata().map(|m| m.len()).unwrap_or(0);
            match std::fs::remove_file(&path) {
                Ok(()) => {
                    removed += 1;
                    bytes += len;
                }
                Err(e) => {
                    tracing::warn!(path = %path.display(), error = %e, "could not remove a stale snapshot staging file")
                }
            }
        }
    }
    if removed > 0 {
        tracing::info!(files = removed, bytes, dir = %dir.display(), "removed snapshot staging files left by an interrupted transfer");
    }
}
