//! The state a node's tasks share ([`Core`]) and the handle the
//! embedding program holds ([`RaftNode`]), with what every other part of
//! the node needs: the leader's clock stamp, the member list, the
//! forwarding connections.
//!
//! This file imports none of the node's other parts, nor the peer server
//! or the watch stream, which take [`Core`] from here: the node's parts
//! depend on it, never the other way round.

use std::collections::BTreeMap;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use cairn_state::StateMachine;
use openraft::type_config::async_runtime::WatchReceiver;
use tokio::sync::watch;

use super::health::LeaderContact;
use crate::consensus::network::CallError;
use crate::consensus::network::NetConfig;
use crate::consensus::network::PeerClient;
use crate::consensus::protocol::AppChannel;
use crate::consensus::protocol::ForwardError;
use crate::consensus::protocol::Request;
use crate::consensus::protocol::Response;
use crate::consensus::sm_store::Shared;
use crate::consensus::Member;
use crate::consensus::NodeId;
use crate::consensus::Raft;
use crate::metrics::NodeMetrics;

/// Handles application messages other nodes send with
/// [`RaftNode::send_app`] (e.g. heartbeats to the coordinator). Gets the
/// sender's id and the payload; its answer goes back to the sender.
pub type AppHandler =
    Arc<dyn Fn(NodeId, Vec<u8>) -> futures::future::BoxFuture<'static, Result<Vec<u8>, String>> + Send + Sync>;

/// Forwarding connections to other nodes, shared by concurrent callers.
pub(super) struct ForwardPool {
    pub(super) net: NetConfig,
    pub(super) peers: tokio::sync::Mutex<HashMap<NodeId, PeerClient>>,
}

impl ForwardPool {
    pub(super) async fn call(
        &self,
        target: NodeId,
        addr: &str,
        req: Request,
        timeout: Duration,
    ) -> Result<Response, CallError> {
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
    pub(crate) log: crate::consensus::log_store::LogStore,
    pub(crate) metrics: NodeMetrics,
    pub(crate) data_dir: PathBuf,
    pub(crate) max_frame_bytes: usize,
    /// Connection cap and timeouts of the peer port.
    pub(crate) peer: crate::config::PeerLimits,
    /// `snapshots.max_incoming_bytes`: what incoming snapshot transfers
    /// may stage on disk, all connections together.
    pub(crate) snapshot_staging: Arc<crate::consensus::staging::StagingBudget>,
    /// `log.max_entry_bytes`: the largest encoded command a proposal may carry.
    pub(super) max_entry_bytes: usize,
    pub(super) write_timeout: Duration,
    pub(super) election_timeout_max: Duration,
    pub(super) forward: ForwardPool,
    /// The wall clock proposals are stamped with.
    pub(super) clock: crate::clock::WallClock,
    pub(super) last_stamp_ms: AtomicU64,
    pub(super) app_handlers: std::sync::RwLock<HashMap<AppChannel, AppHandler>>,
    /// When this node last accepted an append from a leader (the
    /// transport stamps it): a follower's half of [`Status::quorum`].
    pub(crate) leader_contact: Arc<LeaderContact>,
}

pub(super) fn forward_err(leader: Option<(NodeId, Member)>) -> ForwardError {
    ForwardError::NotLeader { leader }
}

impl<S: StateMachine> Core<S> {
    /// Leader's timestamp for a proposal: wall clock, but never going back
    /// while this node leads (NTP steps must not reorder deadlines).
    pub(super) fn stamp(&self) -> u64 {
        let now = self.clock.now_ms();
        let prev = self.last_stamp_ms.fetch_max(now, Ordering::AcqRel);
        prev.max(now)
    }

    /// The leader, if this node knows one and it is another node.
    pub(super) fn other_leader(&self) -> Option<(NodeId, Member)> {
        let metrics = self.raft.metrics();
        let m = metrics.borrow_watched();
        let leader = m.current_leader.filter(|l| *l != self.id)?;
        let member = m.membership_config.nodes().find(|(id, _)| **id == leader)?.1.clone();
        Some((leader, member))
    }

    pub(super) fn members(&self) -> BTreeMap<NodeId, Member> {
        let m = self.raft.metrics().borrow_watched().membership_config.clone();
        m.nodes().map(|(id, n)| (*id, n.clone())).collect()
    }

    /// `peer.handshake_timeout_ms`.
    pub(crate) fn peer_handshake_timeout(&self) -> Duration {
        Duration::from_millis(self.peer.handshake_timeout_ms)
    }
}

/// A running Raft node replicating the state machine `S`.
pub struct RaftNode<S: StateMachine> {
    pub(super) core: Arc<Core<S>>,
    pub(super) raft_addr: String,
    pub(super) shutdown: watch::Sender<bool>,
    pub(super) tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl<S: StateMachine> RaftNode<S> {
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

    /// This node's wall clock now, ms since the Unix epoch: what it stamps
    /// proposals with when it leads ([`RaftNodeConfig::clock`]).
    pub fn wall_clock_ms(&self) -> u64 {
        self.core.clock.now_ms()
    }
}
