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
mod drain;
mod metrics;
mod resources;
pub mod serve;
pub mod streams;
mod telemetry;
mod watch;

use std::path::PathBuf;
use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use axum::extract::FromRequest;
use axum::extract::FromRequestParts;
use axum::extract::Request;
use axum::extract::State;
use axum::http::request::Parts;
use axum::http::HeaderValue;
use axum::http::Method;
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::IntoResponse;
use axum::response::Response;
use axum::routing::delete;
use axum::routing::get;
use axum::routing::post;
use axum::routing::put;
use axum::Json;
use axum::Router;
use cairn_raft::RaftNode;
use cairn_state::Mission;
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde::Serialize;
use tracing::Instrument;
use utoipa::OpenApi;

pub use resources::AddMemberRequest;
pub use resources::AppendGoalsRequest;
pub use resources::DeclareParamRequest;
pub use resources::InitRequest;
pub use resources::ReplacePlanRequest;
pub use resources::StateHashView;
pub use resources::SubmitTaskRequest;
pub use resources::TaskView;
pub use resources::UpdateNodeRequest;
pub use serve::ClientAddr;
pub use serve::HttpLimits;
pub use streams::StreamLimits;
pub use telemetry::PublishResult;

use crate::error::Error;

/// Largest request body accepted by default: the default
/// `log.max_entry_bytes`. The router takes the node's own
/// [`RaftNode::max_entry_bytes`], so a body the API parses can become a log
/// entry (a command encodes smaller than its JSON but for long arrays of
/// short floats, which the state machine bounds).
pub const MAX_BODY_BYTES: usize = 1 << 20;

/// The body limit in force, for [`JsonBody`]'s error (a request extension
/// the router adds).
#[derive(Clone, Copy)]
struct BodyLimit(usize);

/// Header carrying the request id, both ways.
pub const REQUEST_ID_HEADER: &str = "x-request-id";

/// Header carrying the applied index a read reflected.
pub const APPLIED_INDEX_HEADER: &str = "x-cairn-applied-index";

/// Admin API security settings and limits (`[api]` in the node config).
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ApiSettings {
    /// Bearer token required on mutating requests. None (and no
    /// `token_file`) means no authentication: for a bench only.
    pub token: Option<String>,
    /// Read the token from this file instead (surrounding whitespace is
    /// trimmed), so it need not sit in the config.
    pub token_file: Option<PathBuf>,
    /// Require the token on reads too (status, tasks, metrics, watch…).
    pub read_requires_token: bool,
    /// Serve HTTPS with the node's `[tls]` certificate.
    pub tls: bool,
    /// Extra origins (`http://host:port`) whose pages may call this API
    /// from a browser, besides the members' own API addresses: for when
    /// operators reach the nodes by a name the members list does not use.
    pub cors_allowed_origins: Vec<String>,
    /// Time a connection has to send a complete request head, ms (default
    /// 10 000): a slowloris client holds a connection at most this long.
    pub header_read_timeout_ms: u64,
    /// Connections the API serves at once (default 256); more are closed
    /// at once.
    pub max_connections: usize,
    /// Streams of each kind (`/v1/watch`, `/v1/telemetry`) one node serves
    /// at once (default 64).
    pub max_streams: usize,
    /// Of `max_streams`, how many only clients with the API token may take
    /// (default 16; none when the node has no token).
    pub stream_slots_reserved_for_token: usize,
    /// Streams of each kind one client address may hold without the token
    /// (default 8).
    pub max_streams_per_client: usize,
}

impl Default for ApiSettings {
    fn default() -> Self {
        Self {
            token: None,
            token_file: None,
            read_requires_token: false,
            tls: false,
            cors_allowed_origins: Vec::new(),
            // 10 s: a request head is a few hundred bytes; a client on the
            // rover's Wi-Fi sends it in milliseconds.
            header_read_timeout_ms: 10_000,
            // 256: a few operators' pages (two streams and a poll each), the
            // CLI and agents, with room; each costs a task and buffers.
            max_connections: 256,
            max_streams: streams::DEFAULT_LIMITS.max,
            stream_slots_reserved_for_token: streams::DEFAULT_LIMITS.reserved_for_token,
            max_streams_per_client: streams::DEFAULT_LIMITS.per_client,
        }
    }
}

impl std::fmt::Debug for ApiSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiSettings")
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("token_file", &self.token_file)
            .field("read_requires_token", &self.read_requires_token)
            .field("tls", &self.tls)
            .field("cors_allowed_origins", &self.cors_allowed_origins)
            .field("header_read_timeout_ms", &self.header_read_timeout_ms)
            .field("max_connections", &self.max_connections)
            .field("max_streams", &self.max_streams)
            .field("stream_slots_reserved_for_token", &self.stream_slots_reserved_for_token)
            .field("max_streams_per_client", &self.max_streams_per_client)
            .finish()
    }
}

impl ApiSettings {
    /// The configured token, from `token` or `token_file` (trimmed; both
    /// set is an error).
    pub fn resolve_token(&self) -> Result<Option<String>, Error> {
        match (&self.token, &self.token_file) {
            (Some(_), Some(_)) => Err(Error::Config {
                reason: "api.token and api.token_file are both set; use one".into(),
            }),
            (Some(t), None) => Ok(Some(t.trim().to_string())),
            (None, Some(path)) => std::fs::read_to_string(path)
                .map(|t| Some(t.trim().to_string()))
                .map_err(|e| Error::Config {
                    reason: format!("api.token_file {}: {e}", path.display()),
                }),
            (None, None) => Ok(None),
        }
    }

    /// The HTTP server's limits, checked.
    pub fn http_limits(&self) -> Result<HttpLimits, Error> {
        if self.header_read_timeout_ms == 0 || self.max_connections == 0 {
            return Err(Error::Config {
                reason: "api.header_read_timeout_ms and api.max_connections must be at least 1".into(),
            });
        }
        Ok(HttpLimits {
            header_read_timeout: std::time::Duration::from_millis(self.header_read_timeout_ms),
            max_connections: self.max_connections,
        })
    }

    /// The stream limits, checked.
    pub fn stream_limits(&self) -> Result<StreamLimits, Error> {
        if self.max_streams == 0 || self.max_streams_per_client == 0 {
            return Err(Error::Config {
                reason: "api.max_streams and api.max_streams_per_client must be at least 1".into(),
            });
        }
        if self.stream_slots_reserved_for_token >= self.max_streams {
            return Err(Error::Config {
                reason: format!(
                    "api.stream_slots_reserved_for_token ({}) must be less than api.max_streams ({})",
                    self.stream_slots_reserved_for_token, self.max_streams
                ),
            });
        }
        Ok(StreamLimits {
            max: self.max_streams,
            reserved_for_token: self.stream_slots_reserved_for_token,
            per_client: self.max_streams_per_client,
        })
    }
}

/// Checked authentication settings.
#[derive(Clone, Default)]
pub struct ApiAuth {
    token: Option<Arc<[u8]>>,
    read_requires_token: bool,
}

impl ApiAuth {
    /// No authentication at all.
    pub fn open() -> Self {
        Self::default()
    }

    /// Resolve the settings (reads `token_file`).
    pub fn from_settings(s: &ApiSettings) -> Result<Self, Error> {
        let token = s.resolve_token()?;
        if token.as_deref() == Some("") {
            return Err(Error::Config {
                reason: "api token is empty".into(),
            });
        }
        if s.read_requires_token && token.is_none() {
            return Err(Error::Config {
                reason: "api.read_requires_token needs api.token or api.token_file".into(),
            });
        }
        Ok(Self {
            token: token.map(|t| Arc::from(t.into_bytes())),
            read_requires_token: s.read_requires_token,
        })
    }

    /// Whether a token is required for anything.
    pub fn is_enabled(&self) -> bool {
        self.token.is_some()
    }
}

/// Shared state of the API handlers.
#[derive(Clone)]
pub struct Api {
    node: Arc<RaftNode<Mission>>,
    auth: ApiAuth,
    started_ms: u64,
    next_request: Arc<AtomicU64>,
    watch_slots: streams::StreamSlots,
    telemetry_slots: streams::StreamSlots,
    telemetry: crate::telemetry::Telemetry,
    cors_origins: Arc<[String]>,
}

impl Api {
    /// The API over `node` with `auth`, and a telemetry hub of its own
    /// (local only: the daemon passes its forwarding hub with
    /// [`Api::with_telemetry`]).
    pub fn new(node: Arc<RaftNode<Mission>>, auth: ApiAuth) -> Self {
        let started_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        let telemetry = crate::telemetry::Telemetry::with_defaults(node.id());
        let defaults = streams::DEFAULT_LIMITS;
        let enabled = auth.is_enabled();
        Self {
            node,
            auth,
            started_ms,
            next_request: Arc::new(AtomicU64::new(1)),
            watch_slots: streams::StreamSlots::new("watch", defaults, enabled),
            telemetry_slots: streams::StreamSlots::new("telemetry", defaults, enabled),
            telemetry,
            cors_origins: Arc::from(Vec::new()),
        }
    }

    /// Also answer cross-origin requests from these origins (checked with
    /// [`check_cors_origins`]), besides the members' API addresses.
    pub fn with_cors_origins(mut self, origins: Vec<String>) -> Self {
        self.cors_origins = Arc::from(origins);
        self
    }

    /// Bound the watch and telemetry streams by `limits` (default: from
    /// [`ApiSettings::default`]).
    pub fn with_stream_limits(mut self, limits: StreamLimits) -> Self {
        let enabled = self.auth.is_enabled();
        self.watch_slots = streams::StreamSlots::new("watch", limits, enabled);
        self.telemetry_slots = streams::StreamSlots::new("telemetry", limits, enabled);
        self
    }

    /// Serve `telemetry` at `/v1/telemetry`.
    pub fn with_telemetry(mut self, telemetry: crate::telemetry::Telemetry) -> Self {
        self.telemetry = telemetry;
        self
    }

    fn new_request_id(&self) -> String {
        let n = self.next_request.fetch_add(1, Ordering::Relaxed);
        format!("n{}-{:x}-{n}", self.node.id(), self.started_ms)
    }
}

/// The router with no authentication (tests, embedding on a bench).
pub fn router(node: Arc<RaftNode<Mission>>) -> Router {
    router_with(Api::new(node, ApiAuth::open()))
}

/// The router.
pub fn router_with(api: Api) -> Router {
    use resources as r;
    let body_limit = api.node.max_entry_bytes();
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(r::readyz))
        .route("/metrics", get(metrics::metrics))
        .route("/openapi.json", get(openapi_json))
        .route("/v1/status", get(r::status))
        .route("/v1/state/hash", get(r::state_hash))
        .route("/v1/cluster/init", post(r::init))
        .route("/v1/members", get(r::members).post(r::add_member))
        .route("/v1/members/{id}/promote", post(r::promote))
        .route("/v1/members/{id}", delete(r::remove_member))
        .route("/v1/leader/transfer", post(r::transfer_leader))
        .route("/v1/backup", get(backup::backup))
        .route("/v1/nodes", get(r::list_nodes))
        .route(
            "/v1/nodes/{id}",
            get(r::get_node).patch(r::update_node).delete(r::remove_node),
        )
        .route("/v1/nodes/{id}/drain", post(drain::drain))
        .route("/v1/nodes/{id}/undrain", post(drain::undrain))
        .route("/v1/mission", get(r::get_mission))
        .route("/v1/mission/plan", put(r::replace_plan))
        .route("/v1/mission/goals", post(r::append_goals))
        .route("/v1/mission/goals/{id}/skip", post(r::skip_goal))
        .route("/v1/mission/goals/{id}/complete", post(r::complete_goal))
        .route("/v1/mission/abort", post(r::abort_plan))
        .route("/v1/tasks", get(r::list_tasks).post(r::submit_task))
        .route("/v1/tasks/{id}", get(r::get_task))
        .route("/v1/tasks/{id}/cancel", post(r::cancel_task))
        .route("/v1/params", get(r::list_params).post(r::declare_param))
        .route("/v1/params/{name}", get(r::get_param).put(r::set_param))
        .route("/v1/sensors", get(r::list_sensors))
        .route("/v1/sensors/{name}", put(r::report_sensor))
        .route("/v1/policies", get(r::list_policies).put(r::set_policy))
        .route("/v1/policies/{sensor}/{health}", delete(r::remove_policy))
        .route("/v1/watch", get(watch::watch))
        .route("/v1/telemetry", get(telemetry::stream))
        .route("/v1/telemetry/topics", get(telemetry::topics))
        .route("/v1/telemetry/{topic}", post(telemetry::publish))
        .merge(crate::dashboard::routes())
        .route("/version", get(version))
        .fallback(|| async { Error::not_found("route", "path") })
        .layer(axum::middleware::map_response(method_not_allowed_body))
        .layer(axum::extract::DefaultBodyLimit::max(body_limit))
        .layer(axum::Extension(BodyLimit(body_limit)))
        .layer(axum::middleware::from_fn(client_tag))
        .layer(axum::middleware::from_fn_with_state(api.clone(), authenticate))
        .layer(axum::middleware::from_fn_with_state(api.clone(), trace_request))
        // Outermost, so a preflight is answered before authentication.
        .layer(cors(&api))
        .with_state(api)
}

/// Which build this node runs (version and git commit): public, like
/// `/healthz`, so a rolling upgrade can see each node's.
#[utoipa::path(get, path = "/version", tag = "cluster",
    responses((status = 200, body = crate::version::BuildInfo, description = "this node's build")))]
async fn version() -> Json<crate::version::BuildInfo> {
    Json(crate::version::BuildInfo::current())
}

/// axum answers a known path with a wrong method with an empty 405 (its
/// method router adds the `Allow` header around this layer); every error
/// of this API has a JSON body (docs/API.md). A 405 that already has a
/// body is left alone.
async fn method_not_allowed_body(method: Method, resp: Response) -> Response {
    if resp.status() != StatusCode::METHOD_NOT_ALLOWED || resp.headers().contains_key(axum::http::header::CONTENT_TYPE)
    {
        return resp;
    }
    let (parts, _) = resp.into_parts();
    let mut out = Error::MethodNotAllowed {
        method: method.to_string(),
    }
    .into_response();
    // Whatever headers it had (an `Allow` set this far in), but the body's own content type and length.
    for (name, value) in &parts.headers {
        if !out.headers().contains_key(name) {
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

/// The OpenAPI document of this API.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "cairn admin API",
        description = "Cluster, mission, tasks, parameters, health, a watch stream and best-effort telemetry topics of a cairn cluster. \
Reads are linearizable unless `?consistency=stale`. Mutating requests need `Authorization: Bearer <token>` when the node has a token.",
    ),
    paths(
        resources::readyz, version, metrics::metrics, resources::status, resources::state_hash, resources::init,
        resources::members, resources::add_member, resources::promote, resources::remove_member,
        resources::transfer_leader, backup::backup, resources::list_nodes, resources::get_node,
        resources::update_node, resources::remove_node, drain::drain, drain::undrain,
        resources::get_mission, resources::replace_plan, resources::append_goals,
        resources::skip_goal, resources::complete_goal, resources::abort_plan,
        resources::list_tasks, resources::submit_task, resources::get_task, resources::cancel_task,
        resources::list_params, resources::declare_param, resources::get_param, resources::set_param,
        resources::list_sensors, resources::report_sensor,
        resources::list_policies, resources::set_policy, resources::remove_policy,
        watch::watch,
        telemetry::stream, telemetry::publish, telemetry::topics,
    ),
    components(schemas(
        crate::error::ErrorBody, crate::telemetry::TelemetryMessage, crate::telemetry::TelemetryOverview,
        crate::telemetry::TopicInfo, crate::telemetry::SourceInfo, crate::telemetry::PeerInfo,
        telemetry::PublishResult,
    )),
    modifiers(&BearerAuth),
)]
pub struct ApiDoc;

struct BearerAuth;

impl utoipa::Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::HttpAuthScheme;
        use utoipa::openapi::security::HttpBuilder;
        use utoipa::openapi::security::SecurityScheme;
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

/// The OpenAPI document as pretty JSON (`cairn openapi`, `/openapi.json`).
pub fn openapi_json_string() -> String {
    ApiDoc::openapi()
        .to_pretty_json()
        .unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}"))
}

async fn openapi_json() -> Response {
    (
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        openapi_json_string(),
    )
        .into_response()
}

// ---------------------------------------------------------------------------
// Middleware

/// A request id a client may choose: short and printable, so it is safe in
/// logs and headers.
fn sane_request_id(v: &HeaderValue) -> Option<String> {
    let s = v.to_str().ok()?;
    let ok = !s.is_empty() && s.len() <= 64 && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(&b));
    ok.then(|| s.to_string())
}

/// Client id of an at-most-once write (with [`CLIENT_SEQ_HEADER`]).
pub const CLIENT_ID_HEADER: &str = "x-cairn-client-id";
/// Sequence number of an at-most-once write: one more for each new write of
/// the client, the same when retrying after a timeout or an "outcome
/// unknown" answer — the retry then returns the first write's response
/// instead of applying twice (its `index` is where the retry itself was
/// logged).
pub const CLIENT_SEQ_HEADER: &str = "x-cairn-client-seq";

tokio::task_local! {
    static CLIENT_TAG: Option<cairn_state::ClientTag>;
}

/// The client tag of the request being served, if it sent one.
pub(crate) fn current_client_tag() -> Option<cairn_state::ClientTag> {
    CLIENT_TAG.try_with(|t| *t).ok().flatten()
}

/// Reads the optional client-tag headers; both or neither.
fn parse_client_tag(headers: &axum::http::HeaderMap) -> Result<Option<cairn_state::ClientTag>, Error> {
    let header = |name: &str| -> Result<Option<u64>, Error> {
        match headers.get(name) {
            None => Ok(None),
            Some(v) => v
                .to_str()
                .ok()
                .and_then(|s| s.trim().parse::<u64>().ok())
                .map(Some)
                .ok_or_else(|| Error::bad(name, "must be an unsigned integer")),
        }
    };
    match (header(CLIENT_ID_HEADER)?, header(CLIENT_SEQ_HEADER)?) {
        (Some(client_id), Some(seq)) => Ok(Some(cairn_state::ClientTag { client_id, seq })),
        (None, None) => Ok(None),
        (id, _) => {
            let missing = if id.is_none() {
                CLIENT_ID_HEADER
            } else {
                CLIENT_SEQ_HEADER
            };
            Err(Error::bad(
                missing,
                format!("{CLIENT_ID_HEADER} and {CLIENT_SEQ_HEADER} go together"),
            ))
        }
    }
}

async fn client_tag(req: Request, next: Next) -> Response {
    match parse_client_tag(req.headers()) {
        Ok(tag) => CLIENT_TAG.scope(tag, next.run(req)).await,
        Err(e) => e.into_response(),
    }
}

async fn trace_request(State(api): State<Api>, req: Request, next: Next) -> Response {
    let id = req
        .headers()
        .get(REQUEST_ID_HEADER)
        .and_then(sane_request_id)
        .unwrap_or_else(|| api.new_request_id());
    let span = tracing::info_span!("api", request_id = %id, method = %req.method(), path = %req.uri().path());
    let started = Instant::now();
    let mutating = is_mutating(req.method());
    let mut resp = cairn_raft::trace::with_request_id(id.clone(), next.run(req))
        .instrument(span.clone())
        .await;
    let status = resp.status().as_u16();
    let latency_ms = started.elapsed().as_millis() as u64;
    span.in_scope(|| {
        if mutating {
            tracing::debug!(status, latency_ms, "served");
        } else {
            tracing::trace!(status, latency_ms, "served");
        }
    });
    if let Ok(v) = HeaderValue::from_str(&id) {
        resp.headers_mut().insert(REQUEST_ID_HEADER, v);
    }
    resp
}

fn is_mutating(m: &Method) -> bool {
    !matches!(*m, Method::GET | Method::HEAD | Method::OPTIONS)
}

/// Marks a request that presented the right API token (a request
/// extension the authentication layer adds); stream slots reserved for
/// token holders go only to these.
#[derive(Clone, Copy, Debug)]
pub struct Authenticated;

async fn authenticate(State(api): State<Api>, mut req: Request, next: Next) -> Response {
    let Some(token) = &api.auth.token else {
        return next.run(req).await;
    };
    let path = req.uri().path();
    let public =
        matches!(path, "/healthz" | "/readyz" | "/version" | "/openapi.json") || crate::dashboard::is_asset(path);
    // A backup is the whole mission: it needs the token even where reads do not.
    let sensitive = path == "/v1/backup";
    let needs = !public && (is_mutating(req.method()) || api.auth.read_requires_token || sensitive);
    let presented = req
        .headers()
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")))
        .map(str::trim);
    // ct_eq on slices of different lengths is false at once: that leaks
    // the token's length, not its content.
    let valid = presented.is_some_and(|p| {
        use subtle::ConstantTimeEq;
        bool::from(p.as_bytes().ct_eq(token))
    });
    if valid {
        req.extensions_mut().insert(Authenticated);
        return next.run(req).await;
    }
    if !needs {
        // A public request or an open read: a wrong token is no token.
        return next.run(req).await;
    }
    match presented {
        None => Error::Unauthorized {
            reason: "this request needs a bearer token (Authorization: Bearer <token>); nothing was changed".into(),
        }
        .into_response(),
        Some(_) => {
            tracing::info!(path = %req.uri().path(), "refused a request with a wrong bearer token");
            Error::Unauthorized {
                reason: "wrong bearer token; nothing was changed".into(),
            }
            .into_response()
        }
    }
}

/// Who opens a stream: the client's address and whether it gave the token.
pub(crate) struct StreamClient {
    addr: Option<std::net::IpAddr>,
    authenticated: bool,
}

impl<S: Send + Sync> FromRequestParts<S> for StreamClient {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        Ok(Self {
            addr: parts.extensions.get::<ClientAddr>().map(|a| a.0.ip()),
            authenticated: parts.extensions.get::<Authenticated>().is_some(),
        })
    }
}

// ---------------------------------------------------------------------------
// Extractors whose rejections are our JSON error body, naming the field

/// The field a serde error is about: its path, or the missing/unknown field
/// a message names when the path is the top level.
fn error_field(path: &serde_path_to_error::Path, message: &str, top: &str) -> String {
    let path = path.to_string();
    let named = ["missing field `", "unknown field `"].iter().find_map(|prefix| {
        let rest = message.split(prefix).nth(1)?;
        rest.split('`').next().map(str::to_string)
    });
    match (path.as_str(), named) {
        (".", Some(name)) => name,
        (".", None) => top.to_string(),
        (p, Some(name)) if message.starts_with("missing field") => format!("{p}.{name}"),
        (p, _) => p.to_string(),
    }
}

/// JSON body extractor: 400 naming the offending field (`body` for syntax
/// errors), 413 over the body limit (`log.max_entry_bytes`).
pub struct JsonBody<T>(pub T);

impl<S, T> FromRequest<S> for JsonBody<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = Error;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let json_type = req
            .headers()
            .get(axum::http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("application/json") || v.contains("+json"));
        if !json_type {
            return Err(Error::bad("content-type", "expected application/json"));
        }
        let limit_bytes = req
            .extensions()
            .get::<BodyLimit>()
            .map_or(MAX_BODY_BYTES, |limit| limit.0);
        let bytes = match bytes::Bytes::from_request(req, state).await {
            Ok(b) => b,
            Err(r) if r.status() == StatusCode::PAYLOAD_TOO_LARGE => return Err(Error::BodyTooLarge { limit_bytes }),
            Err(r) => return Err(Error::bad("body", r.body_text())),
        };
        let mut de = serde_json::Deserializer::from_slice(&bytes);
        let value = serde_path_to_error::deserialize(&mut de).map_err(|e| {
            let msg = e.inner().to_string();
            let field = match e.inner().classify() {
                serde_json::error::Category::Data => error_field(e.path(), &msg, "body"),
                _ => "body".to_string(),
            };
            Error::bad(field, msg)
        })?;
        de.end().map_err(|e| Error::bad("body", e.to_string()))?;
        Ok(JsonBody(value))
    }
}

/// Query-string extractor: 400 naming the offending parameter.
pub struct ApiQuery<T>(pub T);

impl<S, T> FromRequestParts<S> for ApiQuery<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        let q = parts.uri.query().unwrap_or("");
        let de = serde_urlencoded::Deserializer::new(form_urlencoded::parse(q.as_bytes()));
        serde_path_to_error::deserialize(de).map(ApiQuery).map_err(|e| {
            let msg = e.inner().to_string();
            Error::bad(error_field(e.path(), &msg, "query"), msg)
        })
    }
}

/// Parse a numeric path segment, naming it on error.
fn path_id(raw: &str, field: &str) -> Result<u64, Error> {
    raw.parse()
        .map_err(|_| Error::bad(field, format!("{raw:?} is not a non-negative integer")))
}

/// A JSON response with the applied index it reflects.
fn indexed<T: Serialize>(index: u64, body: T) -> Response {
    let mut resp = Json(body).into_response();
    resp.headers_mut()
        .insert(APPLIED_INDEX_HEADER, HeaderValue::from(index));
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn docs_api_md_covers_every_route_of_the_openapi_document() {
        let doc = ApiDoc::openapi();
        let md = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/API.md")).unwrap_or_default();
        let mut missing = Vec::new();
        for (path, item) in doc.paths.paths.iter() {
            let methods = [
                ("GET", item.get.is_some()),
                ("POST", item.post.is_some()),
                ("PUT", item.put.is_some()),
                ("DELETE", item.delete.is_some()),
                ("PATCH", item.patch.is_some()),
            ];
            for (m, present) in methods {
                if present && !md.contains(&format!("`{m} {path}`")) {
                    missing.push(format!("{m} {path}"));
                }
            }
        }
        assert!(missing.is_empty(), "docs/API.md does not mention: {missing:?}");
    }

    #[test]
    fn docs_openapi_json_is_the_generated_document() {
        let generated: serde_json::Value = serde_json::from_str(&openapi_json_string()).unwrap();
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/docs/openapi.json");
        let committed: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(path).unwrap_or_default()).unwrap_or_default();
        assert!(
            generated == committed,
            "docs/openapi.json is stale: run `cargo run --bin cairn -- openapi > docs/openapi.json`"
        );
    }

    /// Every object the API actually serialises has the keys its schema
    /// documents (all required ones, none undocumented), recursively through
    /// `$ref`s; so a renamed or added domain field cannot leave the schema behind.
    #[test]
    fn domain_schemas_match_what_the_api_serialises() {
        use serde_json::Value;
        let doc = serde_json::to_value(ApiDoc::openapi()).unwrap();
        let schemas = &doc["components"]["schemas"];
        fn check(v: &Value, schema: &Value, schemas: &Value, at: &str, seen: &mut Vec<String>) {
            if let Some(r) = schema["$ref"].as_str() {
                let name = r.trim_start_matches("#/components/schemas/");
                assert!(schemas[name].is_object(), "{at}: dangling $ref {r}");
                seen.push(name.to_string());
                return check(v, &schemas[name], schemas, at, seen);
            }
            if let Some(parts) = schema["allOf"].as_array() {
                // `#[serde(flatten)]`: the value has the keys of every part.
                let mut properties = serde_json::Map::new();
                let mut required = Vec::new();
                for part in parts {
                    let part = match part["$ref"].as_str() {
                        Some(r) => {
                            let name = r.trim_start_matches("#/components/schemas/");
                            seen.push(name.to_string());
                            &schemas[name]
                        }
                        None => part,
                    };
                    properties.extend(part["properties"].as_object().cloned().unwrap_or_default());
                    required.extend(part["required"].as_array().cloned().unwrap_or_default());
                }
                let merged = serde_json::json!({"properties": properties, "required": required});
                return check(v, &merged, schemas, at, seen);
            }
            if let Some(alts) = schema["oneOf"].as_array() {
                // An enum: the variant whose tag the value carries.
                let tag = match v {
                    Value::Object(o) => o.keys().next().cloned(),
                    Value::String(s) => Some(s.clone()),
                    _ => None,
                };
                let alt = alts.iter().find(|a| {
                    tag.as_ref().is_some_and(|t| {
                        a["properties"][t].is_object()
                            || a["enum"]
                                .as_array()
                                .is_some_and(|e| e.contains(&Value::String(t.clone())))
                    }) || a["type"] == "null" && v.is_null()
                });
                if let Some(alt) = alt {
                    check(v, alt, schemas, at, seen);
                } else if !alts.iter().any(|a| a["$ref"].is_string()) {
                    panic!("{at}: {v} matches no variant of {schema}");
                }
                return;
            }
            match v {
                Value::Object(o) if schema["properties"].is_object() => {
                    let props = schema["properties"].as_object().unwrap();
                    for (k, x) in o {
                        let p = props
                            .get(k)
                            .unwrap_or_else(|| panic!("{at}.{k} is not in the schema {schema}"));
                        check(x, p, schemas, &format!("{at}.{k}"), seen);
                    }
                    for req in schema["required"].as_array().into_iter().flatten() {
                        let req = req.as_str().unwrap_or_default();
                        assert!(o.contains_key(req), "{at}: required {req} missing from {v}");
                    }
                }
                Value::Array(items) if schema["items"].is_object() => {
                    for (i, x) in items.iter().enumerate() {
                        check(x, &schema["items"], schemas, &format!("{at}[{i}]"), seen);
                    }
                }
                _ => {}
            }
        }
        let mut mission = cairn_state::Mission::default();
        let ctx = |index| cairn_state::ApplyCtx {
            index,
            term: 1,
            timestamp_ms: 1_000,
        };
        let commands = [
            cairn_state::Command::ReplacePlan {
                expected_version: None,
                name: "traverse".into(),
                frame_id: "map".into(),
                goals: vec![cairn_state::GoalSpec {
                    kind: cairn_state::GoalKind::Waypoint {
                        pose: cairn_state::Pose::new(1.0, 2.0, 0.0, 0.0),
                    },
                    tolerance: cairn_state::Tolerance {
                        position_m: 0.5,
                        heading_rad: None,
                    },
                }],
            },
            cairn_state::Command::CreateTask(cairn_state::TaskSpec {
                kind: "navigate".into(),
                required_capabilities: ["drive".to_string()].into(),
                resources: Default::default(),
                priority: 1,
                deadline_ms: None,
                retry: Default::default(),
                goal: None,
            }),
            cairn_state::Command::ReportSensorHealth {
                sensor: "imu".into(),
                health: cairn_state::SensorHealth::Failed,
            },
        ];
        let mut responses = Vec::new();
        for (i, cmd) in commands.iter().enumerate() {
            let r = cairn_state::apply(&mut mission, cmd, &ctx(i as u64 + 1));
            responses.push(r.unwrap_or_else(|e| panic!("{cmd:?}: {e}")));
        }
        let mut seen = Vec::new();
        let body = |name: &str| serde_json::json!({ "$ref": format!("#/components/schemas/{name}") });
        for (i, r) in responses.iter().enumerate() {
            let v = serde_json::to_value(r).unwrap();
            check(&v, &body("Response"), schemas, &format!("response{i}"), &mut seen);
        }
        let mv = resources::MissionView {
            plan: mission.plan().clone(),
            effective: mission.effective(),
        };
        check(
            &serde_json::to_value(&mv).unwrap(),
            &body("MissionView"),
            schemas,
            "mission",
            &mut seen,
        );
        let tasks: Vec<_> = mission
            .tasks(&Default::default())
            .into_iter()
            .map(|t| resources::TaskView::of(&mission, t))
            .collect();
        assert!(
            tasks.iter().all(|t| t.unplaceable.is_some()),
            "no node is up: every task says why"
        );
        check(
            &serde_json::to_value(&tasks).unwrap(),
            &serde_json::json!({"items": body("TaskView")}),
            schemas,
            "tasks",
            &mut seen,
        );
        let policies = serde_json::to_value(mission.policies()).unwrap();
        check(
            &policies,
            &serde_json::json!({"items": body("DegradationPolicy")}),
            schemas,
            "policies",
            &mut seen,
        );
        for name in [
            "Plan",
            "Goal",
            "GoalKind",
            "Pose",
            "Effective",
            "Task",
            "TaskView",
            "TaskSpec",
            "TaskState",
            "DegradationPolicy",
        ] {
            assert!(
                seen.iter().any(|s| s == name),
                "{name} was never checked against a value; saw {seen:?}"
            );
        }
    }

    #[test]
    fn cors_allows_members_pages_and_listed_origins_only() {
        let member = |id: u64, api: &str| cairn_raft::MemberStatus {
            id,
            member: cairn_raft::Member {
                raft_addr: "127.0.0.1:1".into(),
                api_addr: api.into(),
            },
            voter: true,
            matched_index: None,
            lag: None,
            last_ack_ms: None,
        };
        let members = [member(1, "127.0.0.1:8001"), member(2, "10.0.0.2:8001")];
        let extra = ["http://rover.local:8001".to_string()];
        assert!(origin_allowed("http://127.0.0.1:8001", &members, &extra));
        assert!(origin_allowed("https://10.0.0.2:8001", &members, &extra));
        assert!(origin_allowed("http://rover.local:8001", &members, &extra));
        assert!(!origin_allowed("http://127.0.0.1:8002", &members, &extra));
        assert!(!origin_allowed("http://evil.example", &members, &extra));
        assert!(!origin_allowed("null", &members, &extra));
        assert!(check_cors_origins(&extra).is_ok());
        assert!(check_cors_origins(&["rover.local:8001".into()]).is_err());
        assert!(check_cors_origins(&["http://a/b".into()]).is_err());
    }

    #[test]
    fn request_ids_from_clients_are_checked() {
        assert_eq!(
            sane_request_id(&HeaderValue::from_static("abc-1.2_3")).as_deref(),
            Some("abc-1.2_3")
        );
        assert_eq!(sane_request_id(&HeaderValue::from_static("a b")), None);
        assert_eq!(sane_request_id(&HeaderValue::from_str(&"x".repeat(65)).unwrap()), None);
    }
}
