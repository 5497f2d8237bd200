//! The API's resources: cluster, members, nodes, mission, tasks,
//! parameters, sensors and policies.

use std::collections::BTreeMap;
use std::collections::BTreeSet;
use std::time::Duration;

use axum::extract::Path;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::response::Response;
use axum::Json;
use cairn_agents::scheduler::Placeability;
use cairn_raft::Consistency;
use cairn_raft::Member;
use cairn_state::Command;
use cairn_state::DegradationPolicy;
use cairn_state::GoalId;
use cairn_state::GoalSpec;
use cairn_state::Mission;
use cairn_state::NodeId;
use cairn_state::ParamKind;
use cairn_state::ParamValue;
use cairn_state::Resources;
use cairn_state::RetryPolicy;
use cairn_state::SensorHealth;
use cairn_state::TaskFilter;
use cairn_state::TaskId;
use cairn_state::TaskSpec;
use cairn_state::TaskState;
use serde::Deserialize;
use serde::Serialize;
use utoipa::IntoParams;
use utoipa::ToSchema;

use super::indexed;
use super::path_id;
use super::Api;
use super::ApiQuery;
use super::JsonBody;
use crate::error::Error;
use crate::error::ErrorBody;

/// Default and largest page of `GET /v1/tasks`: a page is serialised under
/// the state's read lock, so it must stay small enough not to stall apply.
const TASK_PAGE_DEFAULT: usize = 1000;
const TASK_PAGE_MAX: usize = 10_000;

/// How a read is served.
#[derive(Clone, Copy, Debug, Default, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum ConsistencyParam {
    /// Read-index through the leader: sees every acknowledged write.
    #[default]
    Linearizable,
    /// This node's applied state: fast, may be behind.
    Stale,
}

impl From<ConsistencyParam> for Consistency {
    fn from(c: ConsistencyParam) -> Self {
        match c {
            ConsistencyParam::Linearizable => Consistency::Linearizable,
            ConsistencyParam::Stale => Consistency::Stale,
        }
    }
}

/// Query of every read.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ReadParams {
    /// `linearizable` (default) or `stale`.
    #[param(value_type = Option<String>)]
    pub consistency: Option<ConsistencyParam>,
}

impl ReadParams {
    fn consistency(&self) -> Consistency {
        self.consistency.unwrap_or_default().into()
    }
}

/// Run a read and answer with its JSON and applied index.
async fn read_json(
    api: &Api,
    consistency: Consistency,
    f: impl FnOnce(&Mission) -> Result<serde_json::Value, Error>,
) -> Result<Response, Error> {
    let (index, v) = api.node.read_indexed(consistency, f).await?;
    Ok(indexed(index, v?))
}

fn to_json<T: Serialize + ?Sized>(v: &T) -> Result<serde_json::Value, Error> {
    serde_json::to_value(v).map_err(|e| Error::Encode { reason: e.to_string() })
}

/// What a write returns.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct WriteResult {
    /// Log index the write was committed at.
    pub index: u64,
    /// What the state machine answered, e.g. `{"TaskCreated": {"task_id": 3}}`.
    pub response: cairn_state::Response,
}

/// Apply a command; a state-machine refusal becomes a 4xx naming the field.
async fn execute(api: &Api, cmd: Command) -> Result<Json<WriteResult>, Error> {
    let out = match super::current_client_tag() {
        Some(tag) => api.node.write_tagged(tag, cmd).await?,
        None => api.node.write(cmd).await?,
    };
    let response = out.response?;
    Ok(Json(WriteResult {
        index: out.index,
        response,
    }))
}

// ---------------------------------------------------------------------------
// Cluster

/// Ready: this node is in touch with a leader that has a quorum (see
/// [`cairn_raft::Status::quorum`]): the leader heard from a majority of
/// voters, or this node heard from the leader, within the last election
/// timeout. A node cut off from the majority turns 503 within about an
/// election timeout; `/healthz` answers as long as the process serves.
#[utoipa::path(get, path = "/readyz", tag = "cluster",
    responses((status = 200, description = "in touch with a leader that has a quorum"),
        (status = 503, description = "no leader, no recent contact with it, or (on the leader) no quorum of recent acknowledgements")))]
pub(super) async fn readyz(State(api): State<Api>) -> impl IntoResponse {
    let st = api.node.status();
    if st.quorum && !st.members.is_empty() {
        return (StatusCode::OK, "ready".to_string());
    }
    let since = |ms: Option<u64>| match ms {
        Some(ms) => format!("{ms} ms ago"),
        None => "never".to_string(),
    };
    let why = match (st.role, st.leader) {
        _ if st.members.is_empty() => "not a member of a cluster".to_string(),
        (cairn_raft::Role::Leader, _) => format!(
            "leader without a quorum: a majority of voters last acknowledged it {}",
            since(st.leader_contact_ms)
        ),
        (_, None) => "no known leader".to_string(),
        (_, Some(l)) => format!(
            "no contact with leader {l}: last heard from it {}",
            since(st.leader_contact_ms)
        ),
    };
    (StatusCode::SERVICE_UNAVAILABLE, why)
}

/// This node's view: role, term, leader, log/commit/apply indexes, members
/// with their replication lag (known on the leader).
#[utoipa::path(get, path = "/v1/status", tag = "cluster",
    responses((status = 200, body = Object, description = "this node's view of the cluster")))]
pub(super) async fn status(State(api): State<Api>) -> Json<cairn_raft::Status> {
    Json(api.node.status())
}

/// A digest of a node's applied replicated state.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct StateHashView {
    /// Log index of the last applied entry the hash reflects.
    pub applied_index: u64,
    /// Its term.
    pub applied_term: u64,
    /// SHA-256 (lowercase hex) of the encoded replicated state: the state
    /// machine, client sessions, membership and last applied log id, as a
    /// snapshot would hold them.
    pub sha256: String,
    /// Length of the encoded state in bytes.
    pub bytes: usize,
}

/// Query of `GET /v1/state/hash`.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct StateHashParams {
    /// `linearizable` (default) or `stale`; ignored with `at`.
    #[param(value_type = Option<String>)]
    pub consistency: Option<ConsistencyParam>,
    /// Hash the state exactly at this applied index: answered at once if
    /// the node is there, else after it applies that index (waiting up to
    /// `wait_ms`); 409 `hash_passed` if it already applied past it.
    pub at: Option<u64>,
    /// With `at`: how long to wait for the node to reach the index, in ms
    /// (default 2000, at most 30000).
    pub wait_ms: Option<u64>,
}

/// Longest `wait_ms` of `GET /v1/state/hash?at=`.
const STATE_HASH_WAIT_MAX_MS: u64 = 30_000;

/// A hash of this node's applied replicated state and the index it
/// reflects: replicas at the same `applied_index` must have the same hash
/// (`cairn check consistency` and the chaos suite compare them).
/// `?consistency=stale` hashes the local state as it is; the default first
/// runs a linearizable read barrier; `?at=N` hashes it exactly at applied
/// index N (see [`StateHashParams`]).
#[utoipa::path(get, path = "/v1/state/hash", tag = "cluster", params(StateHashParams),
    responses((status = 200, body = StateHashView, description = "applied index, term and SHA-256 of the replicated state"),
        (status = 400, body = ErrorBody, description = "wait_ms above 30000"),
        (status = 409, body = ErrorBody, description = "at: this node already applied past that index"),
        (status = 503, body = ErrorBody, description = "linearizable: no leader to confirm the read"),
        (status = 504, body = ErrorBody, description = "at: the index was not applied within wait_ms")))]
pub(super) async fn state_hash(
    State(api): State<Api>,
    ApiQuery(q): ApiQuery<StateHashParams>,
) -> Result<Response, Error> {
    let h = match q.at {
        Some(at) => {
            let wait_ms = q.wait_ms.unwrap_or(2000);
            if wait_ms > STATE_HASH_WAIT_MAX_MS {
                return Err(Error::bad("wait_ms", format!("at most {STATE_HASH_WAIT_MAX_MS}")));
            }
            api.node.state_hash_at(at, Duration::from_millis(wait_ms)).await?
        }
        None => {
            if q.wait_ms.is_some() {
                return Err(Error::bad("wait_ms", "only meaningful with `at`"));
            }
            let consistency: Consistency = q.consistency.unwrap_or_default().into();
            api.node.read(consistency, |_| ()).await?;
            api.node.state_hash()?
        }
    };
    let view = StateHashView {
        applied_index: h.applied_index,
        applied_term: h.applied_term,
        sha256: h.sha256,
        bytes: h.bytes,
    };
    Ok(indexed(h.applied_index, to_json(&view)?))
}

/// Body of `POST /v1/cluster/init`.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct InitRequest {
    /// Voters of the new cluster by id: `{"1": {"raft_addr": "…", "api_addr": "…"}}`.
    #[schema(value_type = Object)]
    pub members: BTreeMap<u64, Member>,
}

#[utoipa::path(post, path = "/v1/cluster/init", tag = "cluster", request_body = InitRequest,
    responses((status = 201, description = "initialised"), (status = 409, body = ErrorBody, description = "already initialised; nothing changed")),
    security(("bearer" = [])))]
pub(super) async fn init(State(api): State<Api>, JsonBody(req): JsonBody<InitRequest>) -> Result<StatusCode, Error> {
    if req.members.is_empty() {
        return Err(Error::bad("members", "at least one member is required"));
    }
    if req.members.contains_key(&0) {
        return Err(Error::bad("members", "node id 0 is reserved"));
    }
    api.node.initialize(req.members).await?;
    Ok(StatusCode::CREATED)
}

#[utoipa::path(get, path = "/v1/members", tag = "cluster",
    responses((status = 200, body = Object, description = "members, voters first, with matched index and lag")))]
pub(super) async fn members(State(api): State<Api>) -> Json<Vec<cairn_raft::MemberStatus>> {
    Json(api.node.status().members)
}

/// Body of `POST /v1/members` (adds a learner).
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AddMemberRequest {
    /// New node's id.
    pub id: u64,
    /// Its transport address.
    pub raft_addr: String,
    /// Its admin API address.
    pub api_addr: String,
    /// How long to wait for it to catch up, in ms (default 5000, at most
    /// 60000; 0 adds it without waiting).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wait_ms: Option<u64>,
}

/// Default `wait_ms` of `POST /v1/members`.
const ADD_WAIT_DEFAULT_MS: u64 = 5_000;
/// Largest `wait_ms` of `POST /v1/members`.
const ADD_WAIT_MAX_MS: u64 = 60_000;

/// Add a learner, on the leader (another node answers 503 `not_leader`,
/// changing nothing), and wait up to `wait_ms` until it caught up: it
/// acknowledged the leader within an election timeout and holds the entry
/// that added it. The body is the learner's progress either way; the
/// status says which: 201 caught up, 202 added but not caught up (it
/// stays a learner, which does not vote; call again to wait more — a
/// learner with the same addresses is not added twice).
#[utoipa::path(post, path = "/v1/members", tag = "cluster", request_body = AddMemberRequest,
    responses((status = 201, body = Object, description = "added as a learner and caught up: its progress"),
        (status = 202, body = Object, description = "added as a learner (or already one) but not caught up within wait_ms: its progress"),
        (status = 409, body = ErrorBody, description = "already a voter, or a learner with other addresses; nothing changed"),
        (status = 503, body = ErrorBody, description = "this node does not lead; nothing changed")),
    security(("bearer" = [])))]
pub(super) async fn add_member(
    State(api): State<Api>,
    JsonBody(req): JsonBody<AddMemberRequest>,
) -> Result<Response, Error> {
    if req.id == 0 {
        return Err(Error::bad("id", "node id 0 is reserved"));
    }
    for (field, addr) in [("raft_addr", &req.raft_addr), ("api_addr", &req.api_addr)] {
        if addr.parse::<std::net::SocketAddr>().is_err() && !addr.contains(':') {
            return Err(Error::bad(field, format!("{addr:?} is not HOST:PORT")));
        }
    }
    let wait_ms = req.wait_ms.unwrap_or(ADD_WAIT_DEFAULT_MS);
    if wait_ms > ADD_WAIT_MAX_MS {
        return Err(Error::bad("wait_ms", format!("at most {ADD_WAIT_MAX_MS}")));
    }
    let member = Member {
        raft_addr: req.raft_addr,
        api_addr: req.api_addr,
    };
    let progress = api
        .node
        .add_learner_and_wait(req.id, member, Duration::from_millis(wait_ms))
        .await?;
    let status = if progress.caught_up {
        StatusCode::CREATED
    } else {
        StatusCode::ACCEPTED
    };
    Ok((status, Json(to_json(&progress)?)).into_response())
}

/// Query of `POST /v1/members/{id}/promote`.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct PromoteParams {
    /// Promote even a learner that is unreachable or lagging.
    pub force: Option<bool>,
}

/// Make a learner a voter, on the leader (another node answers 503
/// `not_leader`, changing nothing). Unless `force`, the learner must be
/// caught up (acknowledging the leader within an election timeout and
/// holding its committed index), else 409 and nothing changes. The answer
/// is the membership's final state: 200 once it is committed (even if the
/// change reported an error on the way), 409 if it did not happen, 504
/// `outcome_unknown` if it is still under way.
#[utoipa::path(post, path = "/v1/members/{id}/promote", tag = "cluster",
    params(("id" = u64, Path, description = "learner id"), PromoteParams),
    responses((status = 200, body = Object, description = "now a voter (or already one): `already_voter` and the learner's progress at the check"),
        (status = 404, body = ErrorBody, description = "not a member"),
        (status = 409, body = ErrorBody, description = "not ready to vote (unreachable or lagging) or another change in progress; nothing changed"),
        (status = 503, body = ErrorBody, description = "this node does not lead; nothing changed"),
        (status = 504, body = ErrorBody, description = "the promotion started but has not completed")),
    security(("bearer" = [])))]
pub(super) async fn promote(
    State(api): State<Api>,
    Path(id): Path<String>,
    ApiQuery(q): ApiQuery<PromoteParams>,
) -> Result<Json<serde_json::Value>, Error> {
    let id = path_id(&id, "id")?;
    let promotion = api.node.promote_checked(id, q.force.unwrap_or(false)).await?;
    Ok(Json(to_json(&promotion)?))
}

#[utoipa::path(delete, path = "/v1/members/{id}", tag = "cluster", params(("id" = u64, Path, description = "member id")),
    responses((status = 200, description = "removed"), (status = 404, body = ErrorBody)), security(("bearer" = [])))]
pub(super) async fn remove_member(State(api): State<Api>, Path(id): Path<String>) -> Result<StatusCode, Error> {
    let id = path_id(&id, "id")?;
    api.node.remove(id).await?;
    Ok(StatusCode::OK)
}

/// Body of `POST /v1/leader/transfer`.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TransferRequest {
    /// The voter to lead.
    pub to: u64,
}

#[utoipa::path(post, path = "/v1/leader/transfer", tag = "cluster", request_body = TransferRequest,
    responses((status = 200, description = "transfer requested")), security(("bearer" = [])))]
pub(super) async fn transfer_leader(
    State(api): State<Api>,
    JsonBody(req): JsonBody<TransferRequest>,
) -> Result<StatusCode, Error> {
    api.node.transfer_leader(req.to).await?;
    Ok(StatusCode::OK)
}

// ---------------------------------------------------------------------------
// Nodes (the replicated registry: capabilities, budgets, liveness, load)

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

// ---------------------------------------------------------------------------
// Mission plan

#[utoipa::path(get, path = "/v1/mission", tag = "mission", params(ReadParams),
    responses((status = 200, body = MissionView, description = "the plan and the effective mode")))]
pub(super) async fn get_mission(State(api): State<Api>, ApiQuery(q): ApiQuery<ReadParams>) -> Result<Response, Error> {
    read_json(&api, q.consistency(), |m| {
        to_json(&MissionView {
            plan: m.plan().clone(),
            effective: m.effective(),
        })
    })
    .await
}

/// Body of `GET /v1/mission`.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct MissionView {
    /// The replicated plan.
    pub plan: cairn_state::Plan,
    /// The mode and speed factor the sensor health and policies give now.
    pub effective: cairn_state::Effective,
}

/// Body of `PUT /v1/mission/plan`.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReplacePlanRequest {
    /// Refuse (409) unless the plan is still at this version.
    #[serde(default)]
    pub expected_version: Option<u64>,
    /// Plan name.
    pub name: String,
    /// Frame of every pose, e.g. `map`.
    pub frame_id: String,
    /// Goals in order, e.g. `{"kind": {"Waypoint": {"pose": {"position": [1, 2, 0], "heading_rad": 0}}}, "tolerance": {"position_m": 0.5, "heading_rad": null}}`.
    pub goals: Vec<GoalSpec>,
}

#[utoipa::path(put, path = "/v1/mission/plan", tag = "mission", request_body = ReplacePlanRequest,
    responses((status = 200, body = WriteResult), (status = 400, body = ErrorBody), (status = 409, body = ErrorBody)),
    security(("bearer" = [])))]
pub(super) async fn replace_plan(
    State(api): State<Api>,
    JsonBody(req): JsonBody<ReplacePlanRequest>,
) -> Result<Json<WriteResult>, Error> {
    execute(
        &api,
        Command::ReplacePlan {
            expected_version: req.expected_version,
            name: req.name,
            frame_id: req.frame_id,
            goals: req.goals,
        },
    )
    .await
}

/// Body of `POST /v1/mission/goals`.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AppendGoalsRequest {
    /// Refuse (409) unless the plan is still at this version.
    #[serde(default)]
    pub expected_version: Option<u64>,
    /// Goals to add at the end.
    pub goals: Vec<GoalSpec>,
}

#[utoipa::path(post, path = "/v1/mission/goals", tag = "mission", request_body = AppendGoalsRequest,
    responses((status = 200, body = WriteResult), (status = 400, body = ErrorBody), (status = 409, body = ErrorBody)),
    security(("bearer" = [])))]
pub(super) async fn append_goals(
    State(api): State<Api>,
    JsonBody(req): JsonBody<AppendGoalsRequest>,
) -> Result<Json<WriteResult>, Error> {
    execute(
        &api,
        Command::AppendGoals {
            expected_version: req.expected_version,
            goals: req.goals,
        },
    )
    .await
}

/// Optional body of goal and abort commands.
#[derive(Debug, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PlanVersionRequest {
    /// Refuse (409) unless the plan is still at this version.
    #[serde(default)]
    pub expected_version: Option<u64>,
    /// Why (abort only).
    #[serde(default)]
    pub reason: Option<String>,
}

#[utoipa::path(post, path = "/v1/mission/goals/{id}/skip", tag = "mission", params(("id" = u64, Path, description = "goal id")),
    request_body = PlanVersionRequest,
    responses((status = 200, body = WriteResult), (status = 404, body = ErrorBody)), security(("bearer" = [])))]
pub(super) async fn skip_goal(
    State(api): State<Api>,
    Path(id): Path<String>,
    JsonBody(req): JsonBody<PlanVersionRequest>,
) -> Result<Json<WriteResult>, Error> {
    let goal_id = GoalId(path_id(&id, "id")?);
    execute(
        &api,
        Command::SkipGoal {
            expected_version: req.expected_version,
            goal_id,
        },
    )
    .await
}

#[utoipa::path(post, path = "/v1/mission/goals/{id}/complete", tag = "mission", params(("id" = u64, Path, description = "goal id")),
    request_body = PlanVersionRequest,
    responses((status = 200, body = WriteResult), (status = 404, body = ErrorBody)), security(("bearer" = [])))]
pub(super) async fn complete_goal(
    State(api): State<Api>,
    Path(id): Path<String>,
    JsonBody(req): JsonBody<PlanVersionRequest>,
) -> Result<Json<WriteResult>, Error> {
    let goal_id = GoalId(path_id(&id, "id")?);
    execute(
        &api,
        Command::CompleteGoal {
            expected_version: req.expected_version,
            goal_id,
        },
    )
    .await
}

#[utoipa::path(post, path = "/v1/mission/abort", tag = "mission", request_body = PlanVersionRequest,
    responses((status = 200, body = WriteResult), (status = 409, body = ErrorBody, description = "no active plan")),
    security(("bearer" = [])))]
pub(super) async fn abort_plan(
    State(api): State<Api>,
    JsonBody(req): JsonBody<PlanVersionRequest>,
) -> Result<Json<WriteResult>, Error> {
    execute(
        &api,
        Command::AbortPlan {
            expected_version: req.expected_version,
            reason: req.reason.unwrap_or_else(|| "aborted by the operator".into()),
        },
    )
    .await
}

// ---------------------------------------------------------------------------
// Tasks

/// Body of `POST /v1/tasks`; only `kind` is required.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SubmitTaskRequest {
    /// What to do, e.g. `navigate`; agents dispatch on it.
    pub kind: String,
    /// Capabilities the assignee must have.
    #[serde(default)]
    pub required_capabilities: BTreeSet<String>,
    /// CPU millicores and MiB the task uses while leased:
    /// `{"cpu_millicores": 500, "memory_mib": 64}`.
    #[serde(default)]
    pub resources: Resources,
    /// Higher runs first (0–255).
    #[serde(default)]
    pub priority: u8,
    /// Advisory deadline, ms since the Unix epoch.
    #[serde(default)]
    pub deadline_ms: Option<u64>,
    /// `{"max_attempts": 3, "backoff_ms_base": 1000, "backoff_ms_max": 60000}`.
    #[serde(default)]
    pub retry: RetryPolicy,
    /// The plan goal it serves.
    #[serde(default)]
    pub goal: Option<u64>,
}

impl From<SubmitTaskRequest> for TaskSpec {
    fn from(r: SubmitTaskRequest) -> Self {
        TaskSpec {
            kind: r.kind,
            required_capabilities: r.required_capabilities,
            resources: r.resources,
            priority: r.priority,
            deadline_ms: r.deadline_ms,
            retry: r.retry,
            goal: r.goal.map(GoalId),
        }
    }
}

#[utoipa::path(post, path = "/v1/tasks", tag = "tasks", request_body = SubmitTaskRequest,
    responses((status = 200, body = WriteResult, description = "created; `response.TaskCreated.task_id` is its id"), (status = 400, body = ErrorBody)),
    security(("bearer" = [])))]
pub(super) async fn submit_task(
    State(api): State<Api>,
    JsonBody(req): JsonBody<SubmitTaskRequest>,
) -> Result<Json<WriteResult>, Error> {
    execute(&api, Command::CreateTask(req.into())).await
}

/// A task as `GET /v1/tasks` and `GET /v1/tasks/{id}` show it: the
/// replicated task, and why it is pending if no node can take it.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct TaskView {
    /// The replicated task.
    #[serde(flatten)]
    pub task: cairn_state::Task,
    /// Why no node can take this pending task now (no up node has a
    /// capability it needs, or none has the cpu or memory free), judged on
    /// the serving node's state; absent when some node can.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unplaceable: Option<String>,
}

impl TaskView {
    /// The view of `task` in `m`.
    pub(super) fn of(m: &Mission, task: &cairn_state::Task) -> Self {
        Self::with(&Placeability::new(m), task)
    }

    /// The view of `task`, with placement judged by `p` (one for a page).
    fn with(p: &Placeability<'_>, task: &cairn_state::Task) -> Self {
        TaskView {
            unplaceable: p.why(task),
            task: task.clone(),
        }
    }
}

/// Query of `GET /v1/tasks`.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct TaskQuery {
    /// `linearizable` (default) or `stale`.
    #[param(value_type = Option<String>)]
    pub consistency: Option<ConsistencyParam>,
    /// Only tasks in this state: pending, assigned, running, succeeded, failed, cancelled.
    pub state: Option<String>,
    /// Only tasks leased to this node.
    pub node: Option<u64>,
    /// Only tasks with an id above this (pagination cursor).
    pub after: Option<u64>,
    /// At most this many (default 1000, at most 10000).
    pub limit: Option<usize>,
}

fn parse_state(s: &str) -> Result<TaskState, Error> {
    TaskState::ALL
        .into_iter()
        .find(|t| t.to_string().eq_ignore_ascii_case(s))
        .ok_or_else(|| {
            let all: Vec<String> = TaskState::ALL.iter().map(|t| t.to_string()).collect();
            Error::bad("state", format!("{s:?} is not one of {}", all.join(", ")))
        })
}

#[utoipa::path(get, path = "/v1/tasks", tag = "tasks", params(TaskQuery),
    responses((status = 200, body = Vec<TaskView>, description = "tasks in id order"), (status = 400, body = ErrorBody)))]
pub(super) async fn list_tasks(State(api): State<Api>, ApiQuery(q): ApiQuery<TaskQuery>) -> Result<Response, Error> {
    let filter = TaskFilter {
        state: q.state.as_deref().map(parse_state).transpose()?,
        node_id: q.node.map(NodeId),
    };
    let limit = q.limit.unwrap_or(TASK_PAGE_DEFAULT);
    if limit == 0 || limit > TASK_PAGE_MAX {
        return Err(Error::bad("limit", format!("must be in 1..={TASK_PAGE_MAX}")));
    }
    let after = q.after.unwrap_or(0);
    let consistency = q.consistency.unwrap_or_default().into();
    read_json(&api, consistency, |m| {
        let placeability = Placeability::new(m);
        let page: Vec<TaskView> = m
            .tasks(&filter)
            .into_iter()
            .filter(|t| t.id.0 > after)
            .take(limit)
            .map(|t| TaskView::with(&placeability, t))
            .collect();
        to_json(&page)
    })
    .await
}

#[utoipa::path(get, path = "/v1/tasks/{id}", tag = "tasks", params(("id" = u64, Path), ReadParams),
    responses((status = 200, body = TaskView), (status = 404, body = ErrorBody)))]
pub(super) async fn get_task(
    State(api): State<Api>,
    Path(id): Path<String>,
    ApiQuery(q): ApiQuery<ReadParams>,
) -> Result<Response, Error> {
    let id = path_id(&id, "id")?;
    read_json(&api, q.consistency(), |m| match m.task(TaskId(id)) {
        Some(t) => to_json(&TaskView::of(m, t)),
        None => Err(Error::not_found(format!("task {id}"), "id")),
    })
    .await
}

#[utoipa::path(post, path = "/v1/tasks/{id}/cancel", tag = "tasks", params(("id" = u64, Path)),
    responses((status = 200, body = WriteResult), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody, description = "already finished")),
    security(("bearer" = [])))]
pub(super) async fn cancel_task(State(api): State<Api>, Path(id): Path<String>) -> Result<Json<WriteResult>, Error> {
    let task_id = TaskId(path_id(&id, "id")?);
    // Checked first so an unknown id is a 404 naming `id` without a log entry.
    let known = api.node.local_state(|m| m.task(task_id).is_some());
    if !known {
        let known = api
            .node
            .read(Consistency::Linearizable, |m| m.task(task_id).is_some())
            .await?;
        if !known {
            return Err(Error::not_found(format!("task {}", task_id.0), "id"));
        }
    }
    execute(&api, Command::CancelTask { task_id }).await
}

// ---------------------------------------------------------------------------
// Parameters

/// Body of `POST /v1/params`.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DeclareParamRequest {
    /// Dotted name.
    pub name: String,
    /// What it means.
    #[serde(default)]
    pub description: String,
    /// Type and bounds: `"Bool"`, `{"Int": {"min": 0, "max": 10}}`,
    /// `{"Float": {"min": 0.0, "max": 1.0}}`, `{"String": {"max_len": 64}}`,
    /// `{"Enum": {"choices": ["a", "b"]}}`.
    pub kind: ParamKind,
    /// Initial value: `{"Float": 0.5}`, `{"Int": 3}`, `{"Bool": true}`, `{"String": "x"}`, `{"Enum": "a"}`.
    pub value: ParamValue,
}

#[utoipa::path(post, path = "/v1/params", tag = "params", request_body = DeclareParamRequest,
    responses((status = 200, body = WriteResult), (status = 400, body = ErrorBody, description = "value out of bounds or of the wrong type"), (status = 409, body = ErrorBody, description = "already declared")),
    security(("bearer" = [])))]
pub(super) async fn declare_param(
    State(api): State<Api>,
    JsonBody(req): JsonBody<DeclareParamRequest>,
) -> Result<Json<WriteResult>, Error> {
    execute(
        &api,
        Command::DeclareParam {
            name: req.name,
            description: req.description,
            kind: req.kind,
            value: req.value,
        },
    )
    .await
}

/// Body of `PUT /v1/params/{name}`.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SetParamRequest {
    /// The new value, typed as declared: `{"Float": 1.2}`.
    pub value: ParamValue,
}

#[utoipa::path(put, path = "/v1/params/{name}", tag = "params", params(("name" = String, Path)), request_body = SetParamRequest,
    responses((status = 200, body = WriteResult), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)),
    security(("bearer" = [])))]
pub(super) async fn set_param(
    State(api): State<Api>,
    Path(name): Path<String>,
    JsonBody(req): JsonBody<SetParamRequest>,
) -> Result<Json<WriteResult>, Error> {
    execute(&api, Command::SetParam { name, value: req.value }).await
}

#[utoipa::path(get, path = "/v1/params", tag = "params", params(ReadParams),
    responses((status = 200, body = Vec<cairn_state::Param>, description = "every parameter with kind, value and version")))]
pub(super) async fn list_params(State(api): State<Api>, ApiQuery(q): ApiQuery<ReadParams>) -> Result<Response, Error> {
    read_json(&api, q.consistency(), |m| to_json(&m.params().collect::<Vec<_>>())).await
}

#[utoipa::path(get, path = "/v1/params/{name}", tag = "params", params(("name" = String, Path), ReadParams),
    responses((status = 200, body = cairn_state::Param), (status = 404, body = ErrorBody)))]
pub(super) async fn get_param(
    State(api): State<Api>,
    Path(name): Path<String>,
    ApiQuery(q): ApiQuery<ReadParams>,
) -> Result<Response, Error> {
    read_json(&api, q.consistency(), |m| match m.param(&name) {
        Some(p) => to_json(p),
        None => Err(Error::not_found(format!("parameter {name:?}"), "name")),
    })
    .await
}

// ---------------------------------------------------------------------------
// Sensor health, effective mode, degradation policies

#[utoipa::path(get, path = "/v1/sensors", tag = "health", params(ReadParams),
    responses((status = 200, body = SensorsView, description = "every reported sensor and the effective mode")))]
pub(super) async fn list_sensors(State(api): State<Api>, ApiQuery(q): ApiQuery<ReadParams>) -> Result<Response, Error> {
    read_json(&api, q.consistency(), |m| {
        to_json(&SensorsView {
            sensors: m.sensors().map(|(name, r)| (name.to_string(), *r)).collect(),
            effective: m.effective(),
        })
    })
    .await
}

/// Body of `GET /v1/sensors`.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct SensorsView {
    /// The latest report of every sensor, by name.
    pub sensors: BTreeMap<String, cairn_state::SensorReport>,
    /// The mode and speed factor they give under the policies.
    pub effective: cairn_state::Effective,
}

/// Body of `PUT /v1/sensors/{name}`.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SensorReportRequest {
    /// `Ok`, `Degraded` or `Failed`.
    pub health: SensorHealth,
}

#[utoipa::path(put, path = "/v1/sensors/{name}", tag = "health", params(("name" = String, Path)), request_body = SensorReportRequest,
    responses((status = 200, body = WriteResult, description = "`response.HealthChanged.effective` is the mode now")),
    security(("bearer" = [])))]
pub(super) async fn report_sensor(
    State(api): State<Api>,
    Path(name): Path<String>,
    JsonBody(req): JsonBody<SensorReportRequest>,
) -> Result<Json<WriteResult>, Error> {
    execute(
        &api,
        Command::ReportSensorHealth {
            sensor: name,
            health: req.health,
        },
    )
    .await
}

#[utoipa::path(get, path = "/v1/policies", tag = "health", params(ReadParams),
    responses((status = 200, body = Vec<DegradationPolicy>, description = "degradation policies by (sensor, health)")))]
pub(super) async fn list_policies(
    State(api): State<Api>,
    ApiQuery(q): ApiQuery<ReadParams>,
) -> Result<Response, Error> {
    read_json(&api, q.consistency(), |m| to_json(m.policies())).await
}

#[utoipa::path(put, path = "/v1/policies", tag = "health",
    request_body(content = DegradationPolicy, description = "`{\"sensor\": \"imu\", \"health\": \"Failed\", \"mode\": \"GpsOnly\", \"speed_factor\": 0.5}`"),
    responses((status = 200, body = WriteResult), (status = 400, body = ErrorBody)), security(("bearer" = [])))]
pub(super) async fn set_policy(
    State(api): State<Api>,
    JsonBody(policy): JsonBody<DegradationPolicy>,
) -> Result<Json<WriteResult>, Error> {
    execute(&api, Command::SetPolicy(policy)).await
}

#[utoipa::path(delete, path = "/v1/policies/{sensor}/{health}", tag = "health",
    params(("sensor" = String, Path), ("health" = String, Path, description = "Ok, Degraded or Failed")),
    responses((status = 200, body = WriteResult), (status = 404, body = ErrorBody)), security(("bearer" = [])))]
pub(super) async fn remove_policy(
    State(api): State<Api>,
    Path((sensor, health)): Path<(String, String)>,
) -> Result<Json<WriteResult>, Error> {
    let health = match health.to_ascii_lowercase().as_str() {
        "ok" => SensorHealth::Ok,
        "degraded" => SensorHealth::Degraded,
        "failed" => SensorHealth::Failed,
        _ => {
            return Err(Error::bad(
                "health",
                format!("{health:?} is not one of ok, degraded, failed"),
            ))
        }
    };
    execute(&api, Command::RemovePolicy { sensor, health }).await
}
