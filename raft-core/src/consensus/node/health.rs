//! Whether a node is in touch with a leader that has a quorum: what
//! `/readyz` and `cairn status` report (docs/API.md, "Health").
//!
//! A leader judges from the acknowledgements its followers send (openraft's
//! per-follower heartbeat metrics); a follower or learner from when it last
//! accepted an append (entries or a heartbeat) from the leader of its term,
//! which the transport stamps in [`LeaderContact`].

use std::collections::BTreeSet;
use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering;
use std::time::Duration;
use std::time::Instant;

use openraft::ServerState;

use super::super::NodeId;
use super::super::RaftMetrics;

/// When this node last accepted an append from a leader. One atomic,
/// stamped by the transport on every accepted append or heartbeat.
pub(crate) struct LeaderContact {
    epoch: Instant,
    /// Milliseconds since `epoch`, plus one; 0 = never.
    last: AtomicU64,
}

impl LeaderContact {
    pub(crate) fn new() -> Self {
        Self {
            epoch: Instant::now(),
            last: AtomicU64::new(0),
        }
    }

    /// An append from the leader was accepted just now.
    pub(crate) fn stamp(&self) {
        let ms = self.epoch.elapsed().as_millis() as u64;
        self.last.store(ms.saturating_add(1), Ordering::Relaxed);
    }

    /// How long ago the last accepted append was; `None` if never.
    pub(crate) fn since(&self) -> Option<Duration> {
        match self.last.load(Ordering::Relaxed) {
            0 => None,
            at => {
                let now = self.epoch.elapsed().as_millis() as u64;
                Some(Duration::from_millis(now.saturating_sub(at - 1)))
            }
        }
    }
}

/// How long ago member `id` acknowledged this leader; `None` if it never
/// did in this term, or this node does not lead. The leader itself: zero.
pub(crate) fn ack_age(m: &RaftMetrics, id: NodeId) -> Option<Duration> {
    use openraft::Instant as _;
    if id == m.id {
        return (m.state == ServerState::Leader).then_some(Duration::ZERO);
    }
    m.heartbeat
        .as_ref()
        .and_then(|h| h.get(&id).cloned().flatten())
        .map(|acked| acked.elapsed())
}

/// A node's health as [`super::Status`] reports it.
pub(crate) struct Health {
    /// In touch with a leader that has a quorum.
    pub(crate) quorum: bool,
    /// Since the leader last heard from a quorum (leader) or this node last
    /// heard from the leader (others).
    pub(crate) leader_contact: Option<Duration>,
    /// Leader only: voters that may still fail with writes committing.
    pub(crate) fault_tolerance: Option<u64>,
}

/// Judge health from the metrics, the follower-side contact stamp and the
/// election timeout (an acknowledgement or append older than that no
/// longer counts).
pub(crate) fn health(m: &RaftMetrics, contact: Option<Duration>, election_timeout: Duration) -> Health {
    match m.state {
        ServerState::Leader => {
            // Per voter set (two while a joint membership is in force): the
            // age of the acknowledgement that completes a majority, and how
            // many acknowledging voters there are beyond a majority.
            let mut oldest_quorum_ack = Duration::ZERO;
            let mut tolerance = u64::MAX;
            let mut quorum = true;
            for config in m.membership_config.get_joint_config() {
                let (age, spare) = quorum_of(m, config, election_timeout);
                match age {
                    Some(age) => oldest_quorum_ack = oldest_quorum_ack.max(age),
                    None => quorum = false,
                }
                tolerance = tolerance.min(spare);
            }
            let leader_contact = quorum.then_some(oldest_quorum_ack);
            let quorum = quorum && oldest_quorum_ack < election_timeout;
            Health {
                quorum,
                leader_contact,
                fault_tolerance: Some(if quorum { tolerance } else { 0 }),
            }
        }
        ServerState::Follower | ServerState::Learner => {
            let knows_leader = m.current_leader.is_some_and(|l| l != m.id);
            Health {
                quorum: knows_leader && contact.is_some_and(|c| c < election_timeout),
                leader_contact: contact,
                fault_tolerance: None,
            }
        }
        ServerState::Candidate | ServerState::Shutdown => Health {
            quorum: false,
            leader_contact: contact,
            fault_tolerance: None,
        },
    }
}

/// For one voter set, on the leader: the age of the majority-completing
/// acknowledgement (`None` if fewer than a majority ever acknowledged),
/// and how many voters acknowledged within `window` beyond a majority.
fn quorum_of(m: &RaftMetrics, voters: &BTreeSet<NodeId>, window: Duration) -> (Option<Duration>, u64) {
    let majority = voters.len() / 2 + 1;
    let mut ages: Vec<Duration> = voters.iter().filter_map(|v| ack_age(m, *v)).collect();
    ages.sort();
    let age = ages.get(majority - 1).copied();
    let live = ages.iter().filter(|a| **a < window).count();
    (age, live.saturating_sub(majority) as u64)
}
