//! Cluster administration: bootstrap, membership changes and leadership
//! transfer, run on the leader (forwarded there from any node).

use std::collections::BTreeMap;

use cairn_state::StateMachine;
use openraft::errors::ClientWriteError;
use openraft::errors::InitializeError;
use openraft::errors::RaftError;
use openraft::type_config::async_runtime::WatchReceiver;
use openraft::ChangeMembers;

use super::core::forward_err;
use super::core::Core;
use super::core::RaftNode;
use crate::consensus::protocol::AdminRequest;
use crate::consensus::protocol::ForwardError;
use crate::consensus::protocol::Request;
use crate::consensus::protocol::Response;
use crate::consensus::Member;
use crate::consensus::NodeId;
use crate::error::Error;

impl<S: StateMachine> Core<S> {
    pub(super) async fn admin_local(&self, req: AdminRequest) -> Result<(), ForwardError> {
        let map = |e: RaftError<crate::consensus::TypeConfig, ClientWriteError<crate::consensus::TypeConfig>>| match e {
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
    fn best_successor(&self, m: &crate::consensus::StoredMembership) -> Option<NodeId> {
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
    async fn step_down_for_removal(&self, m: &crate::consensus::StoredMembership) -> ForwardError {
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
}

impl<S: StateMachine> RaftNode<S> {
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
}
