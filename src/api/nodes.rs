//! The node registry: capabilities, budgets, liveness, load.

use std::collections::BTreeSet;

use axum::extract::Path;
use axum::extract::State;
use axum::response::Response;
use axum::Json;
use cairn_raft::Consistency;
use cairn_state::Command;
use cairn_state::NodeId;
use cairn_state::Resources;
use serde::Deserialize;
use serde::Serialize;
use utoipa::ToSchema;

use super::extract::ApiQuery;
use super::extract::JsonBody;
use super::rw::execute;
use super::rw::read_json;
use super::rw::to_json;
use super::rw::ReadParams;
use super::rw::WriteResult;
use super::state::path_id;
use super::state::Api;
use crate::error::Error;
use crate::error::ErrorBody;

#[utoipa::path(get, path = "/v1/nodes", tag = "nodes", params(ReadParams),
    responses((status = 200, body = Vec<cairn_state::Node>, description = "registered nodes with liveness and load")))]
pub(super) async fn list_nodes(State(api): State<Api>, ApiQuery(q): ApiQuery<ReadParams>) -> Result<Response, Error> {
    read_json(&api, q.consistency(), |m| to_json(&m.nodes().collect::<Vec<_>>())).await
}

#[utoipa::path(get, path = "/v1/nodes/{id}", tag = "nodes", params(("id" = u64, Path), ReadParams),
    responses((status = 200, body = cairn_state::Node), (status = 404, body = ErrorBody)))]
pub(super) async fn get_node(
    State(api): State<Api>,
    Path(id): Path<String>,
    ApiQuery(q): ApiQuery<ReadParams>,
) -> Result<Response, Error> {
    let id = path_id(&id, "id")?;
    read_json(&api, q.consistency(), |m| match m.node(NodeId(id)) {
        Some(n) => to_json(n),
        None => Err(Error::not_found(format!("node {id}"), "id")),
    })
    .await
}

/// Body of `PATCH /v1/nodes/{id}`: what to change in a node's registry
/// entry; fields left out keep their value.
#[derive(Debug, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateNodeRequest {
    /// The node's capabilities, all of them (replaces the set).
    #[serde(default)]
    pub capabilities: Option<BTreeSet<String>>,
    /// Its cpu budget, millicores.
    #[serde(default)]
    pub cpu_millicores: Option<u64>,
    /// Its memory budget, MiB.
    #[serde(default)]
    pub memory_mib: Option<u64>,
}

#[utoipa::path(patch, path = "/v1/nodes/{id}", tag = "nodes", params(("id" = u64, Path, description = "node id")),
    request_body = UpdateNodeRequest,
    responses((status = 200, body = WriteResult, description = "updated; `response.NodeRegistered`"),
        (status = 400, body = ErrorBody, description = "nothing to change, or an invalid capability"),
        (status = 404, body = ErrorBody),
        (status = 409, body = ErrorBody, description = "`node_down`: the node is down; `conflict`: the change would break a task it holds (a capability it needs, a budget below its load)")),
    security(("bearer" = [])))]
pub(super) async fn update_node(
    State(api): State<Api>,
    Path(id): Path<String>,
    JsonBody(req): JsonBody<UpdateNodeRequest>,
) -> Result<Json<WriteResult>, Error> {
    let id = path_id(&id, "id")?;
    if req.capabilities.is_none() && req.cpu_millicores.is_none() && req.memory_mib.is_none() {
        return Err(Error::bad(
            "body",
            "nothing to change: give capabilities, cpu_millicores or memory_mib",
        ));
    }
    let node = api
        .node
        .read(Consistency::Linearizable, |m| m.node(NodeId(id)).cloned())
        .await?
        .ok_or_else(|| Error::not_found(format!("node {id}"), "id"))?;
    // A registration marks the node up: refuse rather than claim a dead
    // node is alive. Its agent registers it from its config when it starts.
    if node.liveness == cairn_state::Liveness::Down {
        return Err(cairn_state::CommandError::NodeDown { node_id: node.id }.into());
    }
    // The same command the node's agent registers with, so a cluster that
    // still runs an older release understands it; the state machine
    // refuses a change that breaks the placement of a task the node holds.
    let spec = cairn_state::NodeSpec {
        id: node.id,
        addresses: node.addresses,
        capabilities: req.capabilities.unwrap_or(node.capabilities),
        budget: Resources {
            cpu_millicores: req.cpu_millicores.unwrap_or(node.budget.cpu_millicores),
            memory_mib: req.memory_mib.unwrap_or(node.budget.memory_mib),
        },
    };
    // Bad fields are a 400 wherever the request lands (the state machine's
    // own check, read only), before the question of who may forward it.
    let command = Command::RegisterNode(spec);
    if let Err(e) = api
        .node
        .local_state(|m| cairn_state::check(m, &command, &cairn_state::ApplyCtx::default()))
    {
        if e.refused_in_every_state() {
            return Err(e.into());
        }
    }
    // A registration speaks for the node: a follower forwards it as itself,
    // and the leader admits it only from that node (docs/API.md, "Trust
    // model: the peer channel"). So another node's entry is changed on that
    // node or on the leader; elsewhere 503 `not_leader` (the CLI asks the
    // leader first) instead of a forwarded write the leader would refuse.
    if id != api.node.id() && api.node.leading_term().is_none() {
        return Err(cairn_raft::Error::NotLeader {
            leader: api.node.leader().map(|(l, _)| l),
        }
        .into());
    }
    tracing::info!(node = id, command = ?command, "updating a node's registry entry");
    execute(&api, command).await
}

#[utoipa::path(delete, path = "/v1/nodes/{id}", tag = "nodes", params(("id" = u64, Path, description = "node id")),
    responses((status = 200, body = WriteResult, description = "removed; `response.NodeDeregistered`"),
        (status = 404, body = ErrorBody),
        (status = 409, body = ErrorBody, description = "`node_up`: the node is up (its agent would register it again); `node_busy`: it still holds tasks")),
    security(("bearer" = [])))]
pub(super) async fn remove_node(State(api): State<Api>, Path(id): Path<String>) -> Result<Json<WriteResult>, Error> {
    let id = path_id(&id, "id")?;
    let liveness = api
        .node
        .read(Consistency::Linearizable, |m| m.node(NodeId(id)).map(|n| n.liveness))
        .await?
        .ok_or_else(|| Error::not_found(format!("node {id}"), "id"))?;
    if liveness == cairn_state::Liveness::Up {
        return Err(Error::NodeUp { node_id: id });
    }
    // The state machine refuses while the node holds a task (`node_busy`).
    execute(&api, Command::DeregisterNode { node_id: NodeId(id) }).await
}
