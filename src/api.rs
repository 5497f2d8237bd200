//! The HTTP admin API (axum, JSON); its OpenAPI description is generated from
//! this code (utoipa) and served at `/openapi.json`. docs/API.md is the
//! narrative guide.
//!
//! # Consistency of reads (as in rqlite)
//! - default, `?consistency=linearizable`: the node asks the leader to confirm
//!   it still leads (read-index, one heartbeat round) and waits until it has
//!   applied at least that index. The answer reflects every write
//!   acknowledged before the request started, whichever node serves it.
//! - `?consistency=stale`: this node's applied state, no network round trip.
//!   Fast and available without a quorum, but may miss recent writes (by the
//!   replication lag, or much more on a partitioned node).
//!
//! Every read answers with `x-cairn-applied-index`: the applied index the
//! state reflected, from which `GET /v1/watch?from=<index+1>` continues.
//!
//! Writes to any node are forwarded to the leader by the Raft layer.
//!
//! # Security
//! Mutating requests need `Authorization: Bearer <token>` when a token is
//! configured (compared in constant time); reads too if
//! `read_requires_token`, and `GET /v1/backup` always. `/healthz`, `/readyz`, `/version`, `/openapi.json` and the
//! dashboard's static page (`/`, `/ui/…`) are always public. Without a
//! token the API is open: a bench setup only.
//!
//! # CORS
//! The dashboard page one node serves reads the other members' APIs when
//! its own node dies, so the API answers cross-origin requests from pages
//! served by a current member (origin `http(s)://<member api_addr>`) and
//! from `api.cors_allowed_origins`, and from nobody else: GET and POST
//! (POST for the page's cancel button; it still needs the token), with the
//! `Authorization`, `Content-Type` and `Last-Event-ID` headers.
//!
//! # Tracing
//! Every request gets an id (the client's `x-request-id` if it sent a sane
//! one), returned in the `x-request-id` response header, recorded on the
//! request's span, and carried to the leader with a forwarded write.

mod backup;
mod cluster;
mod drain;
mod extract;
mod health;
mod metrics;
mod middleware;
mod mission;
mod nodes;
mod openapi;
mod params;
mod rw;
pub mod serve;
mod state;
pub mod streams;
mod tasks;
mod telemetry;
#[cfg(test)]
mod tests;
mod watch;

use std::sync::Arc;

use axum::http::HeaderValue;
use axum::http::Method;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::response::Response;
use axum::routing::delete;
use axum::routing::get;
use axum::routing::post;
use axum::routing::put;
use axum::Router;
use cairn_raft::RaftNode;
use cairn_state::Mission;

pub use crate::wire::CLIENT_ID_HEADER;
pub use crate::wire::CLIENT_SEQ_HEADER;
pub use cluster::AddMemberRequest;
pub use cluster::InitRequest;
pub use cluster::StateHashView;
pub use extract::ApiQuery;
pub use extract::JsonBody;
pub use health::SensorsView;
pub use middleware::Authenticated;
pub use mission::AppendGoalsRequest;
pub use mission::MissionView;
pub use mission::ReplacePlanRequest;
pub use nodes::UpdateNodeRequest;
pub use openapi::openapi_json_string;
pub use openapi::ApiDoc;
pub use params::parse_param_value;
pub use params::DeclareParamRequest;
pub use params::SetParamRequest;
pub use rw::WriteResult;
pub use serve::ClientAddr;
pub use serve::HttpLimits;
pub use state::Api;
pub use state::ApiAuth;
pub use state::ApiSettings;
pub use state::APPLIED_INDEX_HEADER;
pub use state::MAX_BODY_BYTES;
pub use state::REQUEST_ID_HEADER;
pub use streams::StreamLimits;
pub use tasks::SubmitTaskRequest;
pub use tasks::TaskView;
pub use telemetry::PublishResult;
pub use watch::ChangeJson;

use crate::error::Error;
use state::BodyLimit;

/// The router with no authentication (tests, embedding on a bench).
pub fn router(node: Arc<RaftNode<Mission>>) -> Router {
    router_with(Api::new(node, ApiAuth::open()))
}

/// The router.
pub fn router_with(api: Api) -> Router {
    let body_limit = api.node.max_entry_bytes();
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(cluster::readyz))
        .route("/metrics", get(metrics::metrics))
        .route("/openapi.json", get(openapi::openapi_json))
        .route("/v1/status", get(cluster::status))
        .route("/v1/state/hash", get(cluster::state_hash))
        .route("/v1/cluster/init", post(cluster::init))
        .route("/v1/members", get(cluster::members).post(cluster::add_member))
        .route("/v1/members/{id}/promote", post(cluster::promote))
        .route("/v1/members/{id}", delete(cluster::remove_member))
        .route("/v1/leader/transfer", post(cluster::transfer_leader))
        .route("/v1/backup", get(backup::backup))
        .route("/v1/nodes", get(nodes::list_nodes))
        .route(
            "/v1/nodes/{id}",
            get(nodes::get_node)
                .patch(nodes::update_node)
                .delete(nodes::remove_node),
        )
        .route("/v1/nodes/{id}/drain", post(drain::drain))
        .route("/v1/nodes/{id}/undrain", post(drain::undrain))
        .route("/v1/mission", get(mission::get_mission))
        .route("/v1/mission/plan", put(mission::replace_plan))
        .route("/v1/mission/goals", post(mission::append_goals))
        .route("/v1/mission/goals/{id}/skip", post(mission::skip_goal))
        .route("/v1/mission/goals/{id}/complete", post(mission::complete_goal))
        .route("/v1/mission/abort", post(mission::abort_plan))
        .route("/v1/tasks", get(tasks::list_tasks).post(tasks::submit_task))
        .route("/v1/tasks/{id}", get(tasks::get_task))
        .route("/v1/tasks/{id}/cancel", post(tasks::cancel_task))
        .route("/v1/params", get(params::list_params).post(params::declare_param))
        .route("/v1/params/{name}", get(params::get_param).put(params::set_param))
        .route("/v1/sensors", get(health::list_sensors))
        .route("/v1/sensors/{name}", put(health::report_sensor))
        .route("/v1/policies", get(health::list_policies).put(health::set_policy))
        .route("/v1/policies/{sensor}/{health}", delete(health::remove_policy))
        .route("/v1/watch", get(watch::watch))
        .route("/v1/telemetry", get(telemetry::stream))
        .route("/v1/telemetry/topics", get(telemetry::topics))
        .route("/v1/telemetry/{topic}", post(telemetry::publish))
        .merge(crate::dashboard::routes())
        .route("/version", get(cluster::version))
        .fallback(|| async { Error::not_found("route", "path") })
        .layer(axum::middleware::map_response(json_error_body))
        .layer(axum::extract::DefaultBodyLimit::max(body_limit))
        .layer(axum::Extension(BodyLimit(body_limit)))
        .layer(axum::middleware::from_fn(middleware::client_tag))
        .layer(axum::middleware::from_fn_with_state(
            api.clone(),
            middleware::authenticate,
        ))
        .layer(axum::middleware::from_fn_with_state(
            api.clone(),
            middleware::trace_request,
        ))
        // Outermost, so a preflight is answered before authentication.
        .layer(cors(&api))
        .with_state(api)
}

/// Every error of this API has a JSON body (docs/API.md, "Errors"):
/// responses that a handler or axum made without one get it here. axum
/// answers a known path with a wrong method with an empty 405 (its method
/// router adds the `Allow` header around this layer), a bad path segment
/// with a text 400, and `/readyz` says why it is not ready in text; the
/// code is then the table's first for the status
/// ([`crate::error::ErrorCode::for_status`]) and the message the text.
async fn json_error_body(method: Method, resp: Response) -> Response {
    use axum::http::header;
    let status = resp.status();
    let is_json = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if !(status.is_client_error() || status.is_server_error()) || is_json {
        return resp;
    }
    let (parts, body) = resp.into_parts();
    let mut out = if status == StatusCode::METHOD_NOT_ALLOWED {
        Error::MethodNotAllowed {
            method: method.to_string(),
        }
        .into_response()
    } else {
        // Bounded: these bodies are a line of text; a longer one is not read.
        let text = axum::body::to_bytes(body, 4096)
            .await
            .ok()
            .map(|b| String::from_utf8_lossy(&b).trim().to_string())
            .filter(|t| !t.is_empty())
            .unwrap_or_else(|| status.canonical_reason().unwrap_or("error").to_lowercase());
        let code = crate::error::ErrorCode::for_status(status.as_u16());
        let body = crate::error::ErrorBody {
            code: code.code.into(),
            message: text,
            field: None,
            retryable: matches!(status, StatusCode::SERVICE_UNAVAILABLE | StatusCode::TOO_MANY_REQUESTS),
        };
        (status, axum::Json(body)).into_response()
    };
    // Whatever headers it had (an `Allow` set this far in), but the body's
    // own content type and length.
    for (name, value) in &parts.headers {
        if name != header::CONTENT_LENGTH && !out.headers().contains_key(name) {
            out.headers_mut().insert(name.clone(), value.clone());
        }
    }
    out
}

/// Refuse `api.cors_allowed_origins` entries that are not `scheme://host[:port]`.
pub fn check_cors_origins(origins: &[String]) -> Result<(), Error> {
    for o in origins {
        let rest = o.strip_prefix("http://").or_else(|| o.strip_prefix("https://"));
        let ok = rest.is_some_and(|r| !r.is_empty() && !r.contains('/') && HeaderValue::from_str(o).is_ok());
        if !ok {
            return Err(Error::Config {
                reason: format!("api.cors_allowed_origins: {o:?} is not http(s)://host[:port]"),
            });
        }
    }
    Ok(())
}

/// Whether a page from `origin` may call this API: it was served by a
/// current member, or the operator listed it.
fn origin_allowed(origin: &str, members: &[cairn_raft::MemberStatus], extra: &[String]) -> bool {
    let Some(host) = origin
        .strip_prefix("http://")
        .or_else(|| origin.strip_prefix("https://"))
    else {
        return false;
    };
    members.iter().any(|m| m.member.api_addr == host) || extra.iter().any(|e| e == origin)
}

fn cors(api: &Api) -> tower_http::cors::CorsLayer {
    use axum::http::header;
    use tower_http::cors::AllowOrigin;
    let node = api.node.clone();
    let extra = api.cors_origins.clone();
    tower_http::cors::CorsLayer::new()
        .allow_origin(AllowOrigin::predicate(move |origin: &HeaderValue, _| {
            origin
                .to_str()
                .is_ok_and(|o| origin_allowed(o, &node.status().members, &extra))
        }))
        .allow_methods([Method::GET, Method::POST])
        .allow_headers([
            header::AUTHORIZATION,
            header::CONTENT_TYPE,
            header::HeaderName::from_static("last-event-id"),
        ])
        .expose_headers([
            header::HeaderName::from_static(APPLIED_INDEX_HEADER),
            header::HeaderName::from_static(REQUEST_ID_HEADER),
        ])
        .max_age(std::time::Duration::from_secs(600))
}
