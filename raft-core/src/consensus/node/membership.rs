//! Membership changes that tell the truth about the new member: adding a
//! learner waits until it has caught up, promoting one checks it can vote,
//! and a change whose outcome is in doubt is re-read before it is reported.
//!
//! Both run on the leader only, which is the one node that sees every
//! member's replication progress and acknowledgements; elsewhere they fail
//! with [`Error::NotLeader`] before changing anything (the admin API
//! answers 503 and its clients retry on the leader).

use std::collections::BTreeSet;
use std::time::Duration;

use cairn_state::StateMachine;
use openraft::errors::ClientWriteError;
use openraft::errors::RaftError;
use openraft::type_config::async_runtime::WatchReceiver;
use openraft::ChangeMembers;
use openraft::ServerState;

use super::core::RaftNode;
use super::health::ack_age;
use crate::consensus::Member;
use crate::consensus::NodeId;
use crate::consensus::RaftMetrics;
use crate::error::Error;

/// How often a wait for a learner re-reads the leader's view of it.
const PROGRESS_POLL: Duration = Duration::from_millis(50);

/// A member as the leader sees it, against an index it must hold.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct MemberProgress {
    /// The member.
    pub id: NodeId,
    /// Whether it votes.
    pub voter: bool,
    /// Highest log index the leader knows it holds (`None`: nothing yet).
    pub matched_index: Option<u64>,
    /// The index it must hold to count as caught up: for an add, the entry
    /// that added it (so at least everything committed when it was added);
    /// for a promotion, the leader's committed index at the check.
    pub target_index: u64,
    /// Milliseconds since it last acknowledged the leader; `None` if it
    /// never has in this leader's term (not running, unreachable, or
    /// refusing the connection).
    pub last_ack_ms: Option<u64>,
    /// It acknowledged the leader within the last election timeout.
    pub reachable: bool,
    /// Reachable, and holds at least `target_index`.
    pub caught_up: bool,
}

impl MemberProgress {
    /// Where it stands, for a person: why it is not caught up, or that it is.
    pub fn describe(&self) -> String {
        let held = match self.matched_index {
            Some(i) => format!("holds the log up to index {i}, needs {}", self.target_index),
            None => format!("holds no entry yet, needs index {}", self.target_index),
        };
        match (self.reachable, self.last_ack_ms) {
            (true, _) if self.caught_up => format!("connected and caught up ({held})"),
            (true, _) => format!("connected, catching up ({held})"),
            (false, None) => format!("no connection: it has never answered the leader ({held})"),
            (false, Some(ms)) => format!("no connection: it last answered the leader {ms} ms ago ({held})"),
        }
    }
}

/// What [`RaftNode::promote_checked`] did.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Promotion {
    /// It already was a voter: nothing changed.
    pub already_voter: bool,
    /// The member as checked before the change (with `force`, it may not
    /// have been caught up: `caught_up` says so).
    pub progress: MemberProgress,
}

/// `id` as the leader whose metrics these are sees it; `None` if it is
/// not a member.
fn progress_of(m: &RaftMetrics, id: NodeId, target_index: u64, window: Duration) -> Option<MemberProgress> {
    m.membership_config.membership().get_node(&id)?;
    let voter = m.membership_config.voter_ids().any(|v| v == id);
    let matched_index = if id == m.id {
        m.last_log_index
    } else {
        m.replication
            .as_ref()
            .and_then(|r| r.get(&id).cloned().flatten())
            .map(|l| l.index)
    };
    let ack = ack_age(m, id);
    let reachable = ack.is_some_and(|a| a < window);
    Some(MemberProgress {
        id,
        voter,
        matched_index,
        target_index,
        last_ack_ms: ack.map(|a| a.as_millis() as u64),
        reachable,
        caught_up: reachable && matched_index.is_some_and(|i| i >= target_index),
    })
}

/// Whether `id` votes in the committed, settled (not joint) membership.
fn settled_voter(m: &RaftMetrics, id: NodeId) -> bool {
    let committed = &m.committed_membership_config;
    committed.log_id() == m.membership_config.log_id()
        && committed.get_joint_config().len() == 1
        && committed.voter_ids().any(|v| v == id)
}

fn committed_index(m: &RaftMetrics) -> u64 {
    m.cluster_committed.as_ref().map(|l| l.index).unwrap_or(0)
}

impl<S: StateMachine> RaftNode<S> {
    fn leader_metrics(&self) -> Result<RaftMetrics, Error> {
        let m = self.core.raft.metrics().borrow_watched().clone();
        if m.state != ServerState::Leader {
            return Err(Error::NotLeader {
                leader: m.current_leader.filter(|l| *l != m.id),
            });
        }
        Ok(m)
    }

    /// Member `id` as this leader sees it, against `target_index`. Fails
    /// with [`Error::NotLeader`] on any other node, and with
    /// [`Error::UnknownMember`] if `id` is not a member.
    pub fn member_progress(&self, id: NodeId, target_index: u64) -> Result<MemberProgress, Error> {
        let m = self.leader_metrics()?;
        progress_of(&m, id, target_index, self.core.election_timeout_max).ok_or(Error::UnknownMember { node_id: id })
    }

    /// Add `id` as a learner and wait, up to `wait`, until it has caught
    /// up: it acknowledged the leader within the last election timeout and
    /// holds the entry that added it (so everything committed before).
    ///
    /// On the leader only; elsewhere [`Error::NotLeader`], nothing changed.
    /// A node that already is a learner with these addresses is not added
    /// again: the call waits for it to hold the leader's committed index.
    /// Refused, nothing changed, for a voter or for a learner with other
    /// addresses (remove it first).
    ///
    /// Returns its progress once it caught up, or when `wait` ran out: then
    /// `caught_up` is false and it stays a learner (which does not vote).
    /// If this node loses leadership while waiting the learner stays added
    /// and the call fails with [`Error::Indeterminate`] saying so.
    pub async fn add_learner_and_wait(
        &self,
        id: NodeId,
        member: Member,
        wait: Duration,
    ) -> Result<MemberProgress, Error> {
        let core = &self.core;
        let m = self.leader_metrics()?;
        let known = m.membership_config.membership().get_node(&id).cloned();
        let target = match known {
            Some(_) if m.membership_config.voter_ids().any(|v| v == id) => {
                return Err(Error::Membership {
                    reason: format!("node {id} is already a voter; nothing changed"),
                })
            }
            Some(known) if known == member => committed_index(&m),
            Some(known) => {
                return Err(Error::Membership {
                    reason: format!(
                        "node {id} is already a learner at raft address {} and api address {}; nothing changed (remove it first to change its addresses)",
                        known.raft_addr, known.api_addr
                    ),
                })
            }
            None => match tokio::time::timeout(core.write_timeout, core.raft.add_learner(id, member, false)).await {
                Ok(Ok(resp)) => resp.log_id.index,
                Ok(Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f)))) => {
                    return Err(Error::NotLeader { leader: f.leader_id })
                }
                Ok(Err(e)) => {
                    return Err(Error::Membership {
                        reason: format!("node {id} was not added: {e}"),
                    })
                }
                Err(_) => {
                    return Err(Error::Indeterminate {
                        reason: format!(
                            "adding node {id} as a learner did not commit within {:?}; the member list shows whether it was added",
                            core.write_timeout
                        ),
                    })
                }
            },
        };
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let m = core.raft.metrics().borrow_watched().clone();
            if m.state != ServerState::Leader {
                return Err(Error::Indeterminate {
                    reason: format!(
                        "node {id} was added as a learner (it stays one), then node {} lost leadership before it caught up; ask the new leader",
                        core.id
                    ),
                });
            }
            let Some(p) = progress_of(&m, id, target, core.election_timeout_max) else {
                return Err(Error::Membership {
                    reason: format!("node {id} was removed while waiting for it to catch up"),
                });
            };
            let now = tokio::time::Instant::now();
            if p.caught_up || now >= deadline {
                return Ok(p);
            }
            tokio::time::sleep(PROGRESS_POLL.min(deadline - now)).await;
        }
    }

    /// Make learner `id` a voter, on the leader only (elsewhere
    /// [`Error::NotLeader`], nothing changed).
    ///
    /// Unless `force`, it must be caught up first: acknowledging the
    /// leader within an election timeout and holding the leader's committed
    /// index (a live learner gets two election timeouts to get there).
    /// Otherwise it is refused with [`Error::Membership`], nothing changed:
    /// a voter that cannot vote leaves the cluster one failure closer to
    /// losing its quorum.
    ///
    /// The answer is the membership's final state: `Ok` once the membership
    /// making it a voter is committed (`already_voter` if it was one). If
    /// the change failed or timed out, the membership is re-read: a change
    /// that nevertheless completed is `Ok`, one that did not start is
    /// [`Error::Membership`], and one still under way is
    /// [`Error::Indeterminate`].
    pub async fn promote_checked(&self, id: NodeId, force: bool) -> Result<Promotion, Error> {
        let core = &self.core;
        let window = core.election_timeout_max;
        let m = self.leader_metrics()?;
        let target = committed_index(&m);
        let Some(mut progress) = progress_of(&m, id, target, window) else {
            return Err(Error::UnknownMember { node_id: id });
        };
        if settled_voter(&m, id) {
            return Ok(Promotion {
                already_voter: true,
                progress,
            });
        }
        if m.membership_config.log_id() != m.committed_membership_config.log_id() {
            return Err(Error::Membership {
                reason: format!(
                    "another membership change is in progress (log index {}); nothing changed: retry once it completes",
                    m.membership_config.log_id().as_ref().map(|l| l.index).unwrap_or(0)
                ),
            });
        }
        let deadline = tokio::time::Instant::now() + window * 2;
        while !progress.caught_up && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(PROGRESS_POLL).await;
            let m = self.leader_metrics()?;
            progress = progress_of(&m, id, target, window).ok_or(Error::UnknownMember { node_id: id })?;
        }
        if !progress.caught_up {
            if !force {
                return Err(Error::Membership {
                    reason: format!(
                        "node {id} is not ready to vote: {}; nothing changed (force to promote it anyway)",
                        progress.describe()
                    ),
                });
            }
            tracing::warn!(id, state = %progress.describe(), "promoting a learner that is not caught up (forced)");
        }
        // On a task of its own: openraft's change is two steps (joint, then
        // uniform) in one future, and a caller that gives up (a timeout, an
        // HTTP client hanging up) must not stop it between the two and
        // leave the joint membership behind.
        let raft = core.raft.clone();
        let change = tokio::spawn(async move {
            raft.change_membership(ChangeMembers::AddVoterIds(BTreeSet::from([id])), false)
                .await
                .map(|_| ())
                .map_err(|e| e.to_string())
        });
        let failure = match tokio::time::timeout(core.write_timeout, change).await {
            Ok(Ok(Ok(()))) => {
                return Ok(Promotion {
                    already_voter: false,
                    progress,
                })
            }
            Ok(Ok(Err(e))) => e,
            Ok(Err(e)) => format!("the membership change task failed: {e}"),
            Err(_) => format!("it did not commit within {:?}", core.write_timeout),
        };
        self.promotion_outcome(id, progress, failure).await
    }

    /// After a promotion failed or timed out: what the membership says now,
    /// after giving a change under way an election timeout to settle.
    async fn promotion_outcome(
        &self,
        id: NodeId,
        progress: MemberProgress,
        failure: String,
    ) -> Result<Promotion, Error> {
        let core = &self.core;
        let deadline = tokio::time::Instant::now() + core.election_timeout_max;
        loop {
            let m = core.raft.metrics().borrow_watched().clone();
            if settled_voter(&m, id) {
                tracing::info!(id, %failure, "the promotion reported an error but is committed");
                return Ok(Promotion {
                    already_voter: false,
                    progress,
                });
            }
            let started = m.membership_config.get_joint_config().iter().any(|c| c.contains(&id));
            if !started {
                return Err(Error::Membership {
                    reason: format!("node {id} was not promoted: {failure}; nothing changed"),
                });
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(Error::Indeterminate {
                    reason: format!(
                        "the promotion of node {id} started (membership log index {}) but has not completed: {failure}; the member list shows the outcome",
                        m.membership_config.log_id().as_ref().map(|l| l.index).unwrap_or(0)
                    ),
                });
            }
            tokio::time::sleep(PROGRESS_POLL).await;
        }
    }
}
