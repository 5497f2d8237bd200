//! Cluster handlers: readiness, status, state hash, bootstrap, membership,
//! leadership, build version.

use std::collections::BTreeMap;
use std::time::Duration;

use axum::extract::Path;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::response::Response;
use axum::Json;
use cairn_raft::Consistency;
use cairn_raft::Member;
use serde::Deserialize;
use serde::Serialize;
use utoipa::IntoParams;
use utoipa::ToSchema;

use super::extract::ApiQuery;
use super::extract::JsonBody;
use super::rw::to_json;
use super::rw::ConsistencyParam;
use super::state::indexed;
use super::state::path_id;
use super::state::Api;
use crate::error::Error;
use crate::error::ErrorBody;

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
    responses((status = 200, body = StatusView, description = "this node's view of the cluster")))]
pub(super) async fn status(State(api): State<Api>) -> Json<cairn_raft::Status> {
    Json(api.node.status())
}

// The JSON of `cairn_raft::Status` (raft-core knows nothing of OpenAPI):
// schema only, never built; `api::tests::domain_schemas_match_what_the_api_serialises`
// fails when the two drift apart.

/// `GET /v1/status`: one node's view of the cluster (as `etcdctl endpoint status`).
#[derive(Serialize, ToSchema)]
#[allow(dead_code)]
pub(super) struct StatusView {
    /// This node's id.
    id: u64,
    /// This node's Raft role.
    role: RoleView,
    /// Its current term.
    term: u64,
    /// The leader it knows of, if any.
    leader: Option<u64>,
    /// Index of its last log entry.
    last_log_index: Option<u64>,
    /// Highest index it knows committed.
    committed_index: Option<u64>,
    /// Highest index applied to its state machine.
    applied_index: Option<u64>,
    /// Last index its snapshot covers.
    snapshot_index: Option<u64>,
    /// Highest index purged from its log.
    purged_index: Option<u64>,
    /// Members, voters first.
    members: Vec<MemberStatusView>,
    /// In touch with a leader that has a quorum (what `/readyz` answers).
    quorum: bool,
    /// Milliseconds since it last heard from the leader (on the leader:
    /// since a majority of voters last acknowledged it).
    leader_contact_ms: Option<u64>,
    /// Voters that may still fail with writes committing (the leader only).
    fault_tolerance: Option<u64>,
    /// A membership change is in progress.
    membership_changing: bool,
}

/// A node's Raft role.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
#[allow(dead_code)]
pub(super) enum RoleView {
    /// Leads the cluster.
    Leader,
    /// Follows a leader.
    Follower,
    /// Standing for election.
    Candidate,
    /// A non-voting member.
    Learner,
    /// Stopping.
    Shutdown,
}

/// One member as `GET /v1/status` and `GET /v1/members` show it.
#[derive(Serialize, ToSchema)]
#[allow(dead_code)]
pub(super) struct MemberStatusView {
    /// Its node id.
    id: u64,
    /// Its addresses.
    member: MemberView,
    /// A voter (else a learner).
    voter: bool,
    /// Highest log index known replicated to it (the leader only).
    matched_index: Option<u64>,
    /// Entries it is behind the leader's last log index (the leader only).
    lag: Option<u64>,
    /// Milliseconds since it last acknowledged the leader (the leader only).
    last_ack_ms: Option<u64>,
}

/// A member's addresses.
#[derive(Serialize, ToSchema)]
#[allow(dead_code)]
pub(super) struct MemberView {
    /// Peer (Raft) transport address.
    raft_addr: String,
    /// Admin API address.
    api_addr: String,
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
    responses((status = 200, body = Vec<MemberStatusView>, description = "members, voters first, with matched index and lag")))]
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

/// Which build this node runs (version and git commit): public, like
/// `/healthz`, so a rolling upgrade can see each node's.
#[utoipa::path(get, path = "/version", tag = "cluster",
    responses((status = 200, body = crate::version::BuildInfo, description = "this node's build")))]
pub(super) async fn version() -> Json<crate::version::BuildInfo> {
    Json(crate::version::BuildInfo::current())
}
