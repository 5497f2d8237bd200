//! Draining a node: keep new tasks off it (before restarting or upgrading
//! it) and move leadership away from it — [`crate::Node::drain`] and
//! `POST /v1/nodes/{id}/drain` (and `undrain`) both run this.
//!
//! The mark is the boolean parameter `cluster.drain.node.<id>` (see
//! `cairn_agents::scheduler` for why it is a parameter): replicated, so
//! every coordinator honours it, and made of commands every release knows.
//! Draining keeps the node's running tasks; they finish, or the coordinator
//! moves them once the node stops heartbeating.

use std::time::Duration;

use cairn_agents::scheduler::drain_param;
use cairn_raft::Consistency;
use cairn_raft::RaftNode;
use cairn_state::Command;
use cairn_state::CommandError;
use cairn_state::Mission;
use cairn_state::NodeId;
use cairn_state::ParamKind;
use cairn_state::ParamValue;
use serde::Deserialize;
use serde::Serialize;
use utoipa::ToSchema;

use crate::error::Error;

/// How long a drain waits for leadership to leave the node: a transfer
/// takes one election round (≈ 0.5 s); 40 × 100 ms leaves room for a slow
/// follower to catch up first.
const LEADER_MOVE_POLLS: u32 = 40;
const LEADER_MOVE_POLL: Duration = Duration::from_millis(100);

/// What a drain (or undrain) did: `Node::drain` or `POST /v1/nodes/{id}/drain`
/// (or `/undrain`).
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct DrainResult {
    /// The node.
    pub node_id: u64,
    /// Whether it is draining now.
    pub draining: bool,
    /// Log index of the write that changed the mark.
    pub index: u64,
    /// The leader afterwards, as the serving node sees it (the node itself
    /// only if no other voter is up to take over).
    pub leader: Option<u64>,
}

/// Mark node `id` draining (`draining`: no new tasks, and leadership moves
/// off it) or not. Not found if `id` is neither a member nor registered;
/// unavailable if leadership does not move off it in time.
pub async fn set_draining(node: &RaftNode<Mission>, id: u64, draining: bool) -> Result<DrainResult, Error> {
    let name = drain_param(NodeId(id));
    let member = node.status().members.iter().any(|m| m.id == id);
    let (registered, declared) = node
        .read(Consistency::Linearizable, |m| {
            (m.node(NodeId(id)).is_some(), m.param(&name).is_some())
        })
        .await?;
    if !member && !registered {
        return Err(Error::not_found(format!("node {id}"), "id"));
    }
    let index = write_mark(node, id, name, draining, declared).await?;
    let leader = if draining {
        move_leadership_off(node, id).await?
    } else {
        node.status().leader
    };
    tracing::info!(node = id, draining, ?leader, "drain mark changed");
    Ok(DrainResult {
        node_id: id,
        draining,
        index,
        leader,
    })
}

/// Declare the mark (first time) or set it. Both are idempotent in effect,
/// so a retried drain is harmless.
async fn write_mark(
    node: &RaftNode<Mission>,
    id: u64,
    name: String,
    value: bool,
    declared: bool,
) -> Result<u64, Error> {
    let set = Command::SetParam {
        name: name.clone(),
        value: ParamValue::Bool(value),
    };
    if !declared {
        let declare = Command::DeclareParam {
            name,
            description: format!("node {id} takes no new tasks while true (cairn node drain / undrain)"),
            kind: ParamKind::Bool,
            value: ParamValue::Bool(value),
        };
        let out = node.write(declare).await?;
        match out.response {
            Ok(_) => return Ok(out.index),
            // Declared meanwhile by a concurrent drain: set it instead.
            Err(CommandError::ParamAlreadyDeclared { .. }) => {}
            Err(e) => return Err(e.into()),
        }
    }
    let out = node.write(set).await?;
    out.response?;
    Ok(out.index)
}

/// If `id` leads, hand leadership to a voter that is up and wait (bounded)
/// until it moved. Returns the leader afterwards.
async fn move_leadership_off(node: &RaftNode<Mission>, id: u64) -> Result<Option<u64>, Error> {
    let st = node.status();
    if st.leader != Some(id) {
        return Ok(st.leader);
    }
    if node.id() == id {
        // This node leads: it knows which voters are up and caught up.
        let moved = node.step_down().await?;
        return Ok(moved.or(Some(id)));
    }
    // Another node leads and this one is up: take over if it votes.
    let me = node.id();
    let to = if st.members.iter().any(|m| m.id == me && m.voter) {
        me
    } else {
        match st.members.iter().find(|m| m.voter && m.id != id) {
            Some(m) => m.id,
            None => return Ok(Some(id)),
        }
    };
    node.transfer_leader(to).await?;
    for _ in 0..LEADER_MOVE_POLLS {
        let leader = node.status().leader;
        if leader.is_some_and(|l| l != id) {
            return Ok(leader);
        }
        tokio::time::sleep(LEADER_MOVE_POLL).await;
    }
    Err(Error::Raft(cairn_raft::Error::Unavailable {
        leader: id,
        reason: format!(
            "leadership did not move off node {id} within {:?}",
            LEADER_MOVE_POLL * LEADER_MOVE_POLLS
        ),
    }))
}
