//! What a node reports about itself and the cluster: [`Status`] (like
//! `etcdctl endpoint status`), the leader it knows, and the Prometheus
//! gauges mirrored from Raft's metrics.

use std::sync::Arc;
use std::time::Duration;

use cairn_state::StateMachine;
use openraft::type_config::async_runtime::WatchReceiver;
use openraft::ServerState;
use tokio::sync::watch;

use super::core::Core;
use super::core::RaftNode;
use crate::consensus::Member;
use crate::consensus::NodeId;
use crate::consensus::RaftMetrics;
use crate::error::Error;

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

impl<S: StateMachine> RaftNode<S> {
    /// This node's view of the cluster.
    pub fn status(&self) -> Status {
        let m = self.core.raft.metrics().borrow_watched().clone();
        let health = super::health::health(&m, self.core.leader_contact.since(), self.core.election_timeout_max);
        status_from(&m, health)
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
}

fn status_from(m: &RaftMetrics, health: super::health::Health) -> Status {
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
                last_ack_ms: super::health::ack_age(m, *id).map(|a| a.as_millis() as u64),
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
pub(super) async fn track_metrics<S: StateMachine>(core: Arc<Core<S>>, mut shutdown: watch::Receiver<bool>) {
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
