//! The HTTP admin API (axum, JSON).
//!
//! Reads are linearizable unless `?consistency=stale` (served from this
//! node's applied state, possibly behind). Writes to any node are forwarded
//! to the leader by the Raft layer.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::extract::rejection::JsonRejection;
use axum::extract::FromRequest;
use axum::extract::Path;
use axum::extract::Query;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::routing::post;
use axum::Json;
use axum::Router;
use cairn_raft::Consistency;
use cairn_raft::Member;
use cairn_raft::RaftNode;
use cairn_state::Command;
use cairn_state::Mission;
use cairn_state::ParamKind;
use cairn_state::ParamValue;
use cairn_state::TaskId;
use serde::Deserialize;
use serde::Serialize;

use crate::error::Error;

/// Largest request body accepted (a mission plan with many goals fits).
const MAX_BODY_BYTES: usize = 1 << 20;

/// Shared state of the API handlers.
pub type AppState = Arc<RaftNode<Mission>>;

/// JSON extractor whose rejections use our error body (naming the problem).
pub struct JsonBody<T>(pub T);

impl<S, T> FromRequest<S> for JsonBody<T>
where
    Json<T>: FromRequest<S, Rejection = JsonRejection>,
    S: Send + Sync,
{
    type Rejection = Error;

    async fn from_request(req: axum::extract::Request, state: &S) -> Result<Self, Self::Rejection> {
        match Json::<T>::from_request(req, state).await {
            Ok(Json(v)) => Ok(JsonBody(v)),
            Err(rejection) if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE => Err(Error::BodyTooLarge {
                limit_bytes: MAX_BODY_BYTES,
            }),
            Err(rejection) => Err(Error::BadRequest {
                field: "body".into(),
                reason: rejection.body_text(),
            }),
        }
    }
}

#[derive(Debug, Default, Deserialize)]
struct ReadQuery {
    #[serde(default)]
    consistency: Option<String>,
}

impl ReadQuery {
    fn consistency(&self) -> Result<Consistency, Error> {
        match self.consistency.as_deref() {
            None | Some("linearizable") => Ok(Consistency::Linearizable),
            Some("stale") => Ok(Consistency::Stale),
            Some(other) => Err(Error::BadRequest {
                field: "consistency".into(),
                reason: format!("{other:?} is not one of \"linearizable\", \"stale\""),
            }),
        }
    }
}

/// Build the router.
pub fn router(node: AppState) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/v1/status", get(status))
        .route("/v1/cluster/init", post(init))
        .route("/v1/members", get(members).post(add_member))
        .route("/v1/members/{id}/promote", post(promote))
        .route("/v1/members/{id}", axum::routing::delete(remove_member))
        .route("/v1/leader/transfer", post(transfer_leader))
        .route("/v1/params", get(list_params).post(declare_param))
        .route("/v1/params/{name}", get(get_param).put(set_param))
        .route("/v1/tasks", get(list_tasks).post(submit_task))
        .route("/v1/tasks/{id}", get(get_task))
        .route("/v1/tasks/{id}/cancel", post(cancel_task))
        .route("/v1/mission", get(get_mission))
        .layer(axum::extract::DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(node)
}

async fn readyz(State(node): State<AppState>) -> impl IntoResponse {
    let st = node.status();
    if st.leader.is_some() && !st.members.is_empty() {
        (StatusCode::OK, "ready")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "no known leader")
    }
}

async fn metrics(State(node): State<AppState>) -> impl IntoResponse {
    let families = node.metrics().registry().gather();
    let mut out = String::new();
    match prometheus::TextEncoder::new().encode_utf8(&families, &mut out) {
        Ok(()) => (StatusCode::OK, out),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

async fn status(State(node): State<AppState>) -> Json<cairn_raft::Status> {
    Json(node.status())
}

/// Body of `POST /v1/cluster/init`.
#[derive(Debug, Serialize, Deserialize)]
pub struct InitRequest {
    /// Voters of the new cluster, by id.
    pub members: BTreeMap<u64, Member>,
}

async fn init(State(node): State<AppState>, JsonBody(req): JsonBody<InitRequest>) -> Result<StatusCode, Error> {
    if req.members.is_empty() {
        return Err(Error::BadRequest {
            field: "members".into(),
            reason: "at least one member is required".into(),
        });
    }
    node.initialize(req.members).await?;
    Ok(StatusCode::CREATED)
}

async fn members(State(node): State<AppState>) -> Json<Vec<cairn_raft::MemberStatus>> {
    Json(node.status().members)
}

/// Body of `POST /v1/members` (adds a learner).
#[derive(Debug, Serialize, Deserialize)]
pub struct AddMemberRequest {
    /// New node's id.
    pub id: u64,
    /// Its transport address.
    pub raft_addr: String,
    /// Its admin API address.
    pub api_addr: String,
}

async fn add_member(
    State(node): State<AppState>,
    JsonBody(req): JsonBody<AddMemberRequest>,
) -> Result<StatusCode, Error> {
    if req.id == 0 {
        return Err(Error::BadRequest {
            field: "id".into(),
            reason: "node id 0 is reserved".into(),
        });
    }
    node.add_learner(
        req.id,
        Member {
            raft_addr: req.raft_addr,
            api_addr: req.api_addr,
        },
    )
    .await?;
    Ok(StatusCode::CREATED)
}

async fn promote(State(node): State<AppState>, Path(id): Path<u64>) -> Result<StatusCode, Error> {
    node.promote(id).await?;
    Ok(StatusCode::OK)
}

async fn remove_member(State(node): State<AppState>, Path(id): Path<u64>) -> Result<StatusCode, Error> {
    node.remove(id).await?;
    Ok(StatusCode::OK)
}

#[derive(Debug, Deserialize)]
struct TransferRequest {
    to: u64,
}

async fn transfer_leader(
    State(node): State<AppState>,
    JsonBody(req): JsonBody<TransferRequest>,
) -> Result<StatusCode, Error> {
    node.transfer_leader(req.to).await?;
    Ok(StatusCode::OK)
}

/// Apply a command; a state-machine rejection becomes a 409 with its reason.
async fn execute(node: &RaftNode<Mission>, cmd: Command) -> Result<Json<serde_json::Value>, Error> {
    let out = node.write(cmd).await?;
    let response = out.response?;
    Ok(Json(serde_json::json!({ "index": out.index, "response": response })))
}

/// Body of `POST /v1/params`.
#[derive(Debug, Serialize, Deserialize)]
pub struct DeclareParamRequest {
    /// Name.
    pub name: String,
    /// What it means.
    #[serde(default)]
    pub description: String,
    /// Type and bounds.
    pub kind: ParamKind,
    /// Initial value.
    pub value: ParamValue,
}

async fn declare_param(
    State(node): State<AppState>,
    JsonBody(req): JsonBody<DeclareParamRequest>,
) -> Result<Json<serde_json::Value>, Error> {
    execute(
        &node,
        Command::DeclareParam {
            name: req.name,
            description: req.description,
            kind: req.kind,
            value: req.value,
        },
    )
    .await
}

#[derive(Debug, Deserialize)]
struct SetParamRequest {
    value: ParamValue,
}

async fn set_param(
    State(node): State<AppState>,
    Path(name): Path<String>,
    JsonBody(req): JsonBody<SetParamRequest>,
) -> Result<Json<serde_json::Value>, Error> {
    execute(&node, Command::SetParam { name, value: req.value }).await
}

async fn list_params(
    State(node): State<AppState>,
    Query(q): Query<ReadQuery>,
) -> Result<Json<serde_json::Value>, Error> {
    let v = node
        .read(q.consistency()?, |m| {
            serde_json::to_value(m.params().collect::<Vec<_>>())
        })
        .await?;
    v.map(Json).map_err(|e| Error::Config { reason: e.to_string() })
}

async fn get_param(
    State(node): State<AppState>,
    Path(name): Path<String>,
    Query(q): Query<ReadQuery>,
) -> Result<Json<serde_json::Value>, Error> {
    let v = node
        .read(q.consistency()?, |m| m.param(&name).map(serde_json::to_value))
        .await?;
    match v {
        Some(Ok(v)) => Ok(Json(v)),
        Some(Err(e)) => Err(Error::Config { reason: e.to_string() }),
        None => Err(Error::NotFound {
            what: format!("parameter {name:?}"),
        }),
    }
}

async fn submit_task(
    State(node): State<AppState>,
    JsonBody(spec): JsonBody<cairn_state::TaskSpec>,
) -> Result<Json<serde_json::Value>, Error> {
    execute(&node, Command::CreateTask(spec)).await
}

async fn list_tasks(
    State(node): State<AppState>,
    Query(q): Query<ReadQuery>,
) -> Result<Json<serde_json::Value>, Error> {
    let v = node
        .read(q.consistency()?, |m| {
            serde_json::to_value(m.tasks(&cairn_state::TaskFilter::default()))
        })
        .await?;
    v.map(Json).map_err(|e| Error::Config { reason: e.to_string() })
}

async fn get_task(
    State(node): State<AppState>,
    Path(id): Path<u64>,
    Query(q): Query<ReadQuery>,
) -> Result<Json<serde_json::Value>, Error> {
    let v = node
        .read(q.consistency()?, |m| m.task(TaskId(id)).map(serde_json::to_value))
        .await?;
    match v {
        Some(Ok(v)) => Ok(Json(v)),
        Some(Err(e)) => Err(Error::Config { reason: e.to_string() }),
        None => Err(Error::NotFound {
            what: format!("task {id}"),
        }),
    }
}

async fn cancel_task(State(node): State<AppState>, Path(id): Path<u64>) -> Result<Json<serde_json::Value>, Error> {
    execute(&node, Command::CancelTask { task_id: TaskId(id) }).await
}

async fn get_mission(
    State(node): State<AppState>,
    Query(q): Query<ReadQuery>,
) -> Result<Json<serde_json::Value>, Error> {
    let v = node
        .read(q.consistency()?, |m| {
            serde_json::to_value(serde_json::json!({
                "plan": m.plan(),
                "effective": m.effective(),
            }))
        })
        .await?;
    v.map(Json).map_err(|e| Error::Config { reason: e.to_string() })
}
