//! Errors of the cairn facade, and their one mapping to HTTP.
//!
//! | status | when |
//! |---|---|
//! | 400 `bad_request` | malformed JSON, a wrong type, a bad path or query parameter, a value the state machine calls invalid or out of bounds — `field` names it |
//! | 401 `unauthorized` | a mutating request (or, if configured, any request) without the right bearer token |
//! | 404 `not_found` | an unknown task, node, goal, parameter, policy or member |
//! | 409 `conflict` / `rejected` / `node_up` / `node_busy` / `node_down` / … | the request is well-formed but the current state refuses it (illegal task transition, plan version mismatch, already initialised, removing a node that is up or holds tasks, updating a node that is down) |
//! | 410 `compacted` | a watch asked for history that is compacted into a snapshot |
//! | 413 `body_too_large` / `payload_too_large` / `entry_too_large` | the body exceeds the limit (`log.max_entry_bytes`; a telemetry payload: the telemetry limit), or the command's encoding exceeds `log.max_entry_bytes` |
//! | 429 `rate_limited` | a telemetry topic is over its rate limit; the message was dropped; `retryable: true` |
//! | 503 `unavailable` / `not_leader` | no leader right now; `retryable: true` |
//! | 504 `timeout` | the outcome of a write is unknown; `retryable: true` |
//!
//! Every error response has the same JSON body, [`ErrorBody`], and nothing
//! in the state changes when one is returned (a write the state machine
//! refuses is answered by the leader's check without touching the log, or,
//! a tagged write refused for a reason the state may change, is in the log
//! but leaves the state untouched).

use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::Json;
use cairn_state::CommandError;

/// What went wrong in the daemon or an API call.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Bad configuration.
    #[error("config: {reason}")]
    Config {
        /// Why.
        reason: String,
    },
    /// Certificates or TLS setup.
    #[error("tls: {reason}")]
    Tls {
        /// Why.
        reason: String,
    },
    /// The Raft layer failed.
    #[error(transparent)]
    Raft(#[from] cairn_raft::Error),
    /// The state machine refused a command.
    #[error("{0}")]
    Command(#[from] CommandError),
    /// The request is malformed.
    #[error("invalid {field}: {reason}")]
    BadRequest {
        /// The field at fault.
        field: String,
        /// Why.
        reason: String,
    },
    /// The request body exceeds the limit.
    #[error("request body exceeds the {limit_bytes} byte limit")]
    BodyTooLarge {
        /// The limit.
        limit_bytes: usize,
    },
    /// A resource does not exist.
    #[error("{what} not found")]
    NotFound {
        /// What was looked for.
        what: String,
        /// The request field that named it.
        field: String,
    },
    /// The path exists but not with this method.
    #[error("{method} is not served on this path; the Allow header lists the methods that are")]
    MethodNotAllowed {
        /// The method the request used.
        method: String,
    },
    /// Missing or wrong bearer token.
    #[error("{reason}")]
    Unauthorized {
        /// Why (never echoes the token).
        reason: String,
    },
    /// A stream (watch, telemetry) was refused: the node's slots, or this
    /// client's share of them, are taken (see `api::streams`).
    #[error("{reason}")]
    TooManyStreams {
        /// The node is full (503) rather than this client over its share (429).
        node_wide: bool,
        /// Why.
        reason: String,
    },
    /// Telemetry refused a publish or a subscription.
    #[error(transparent)]
    Telemetry(#[from] crate::telemetry::TelemetryError),
    /// A value could not be encoded as JSON (a bug, not bad input).
    #[error("cannot encode the response: {reason}")]
    Encode {
        /// Why.
        reason: String,
    },
    /// A call to another node's admin API failed (e.g. [`crate::Node::join`]).
    #[error("admin api call failed: {0}")]
    Client(#[from] crate::client::ClientError),
    /// The cluster answered something this build does not expect (e.g. a
    /// node on a newer version answered a command differently).
    #[error("unexpected answer: {reason}")]
    Unexpected {
        /// What was expected and what came.
        reason: String,
    },
    /// A node that is up cannot be removed from the registry: its agent
    /// would register it again at once.
    #[error("node {node_id} is up: its agent would register it again; stop it first (it can be removed once it is suspect or down)")]
    NodeUp {
        /// The node.
        node_id: u64,
    },
    /// The admin API could not listen.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// Address.
        addr: String,
        /// Cause.
        source: std::io::Error,
    },
}

pub use crate::wire::ErrorBody;

/// Status, code and field of a state-machine refusal.
fn command_status(e: &CommandError) -> (StatusCode, &'static str, Option<String>) {
    use CommandError as C;
    let field = |f: &str| Some(f.to_string());
    match e {
        C::TaskNotFound { .. } => (StatusCode::NOT_FOUND, "not_found", field("task_id")),
        C::NodeNotFound { .. } => (StatusCode::NOT_FOUND, "not_found", field("node_id")),
        C::GoalNotFound { .. } => (StatusCode::NOT_FOUND, "not_found", field("goal_id")),
        C::ParamNotDeclared { .. } => (StatusCode::NOT_FOUND, "not_found", field("name")),
        C::PolicyNotFound { .. } => (StatusCode::NOT_FOUND, "not_found", field("sensor")),
        C::ParamTypeMismatch { .. } | C::ParamOutOfBounds { .. } => {
            (StatusCode::BAD_REQUEST, "bad_request", field("value"))
        }
        C::ProgressOutOfRange { .. } => (StatusCode::BAD_REQUEST, "bad_request", field("percent")),
        C::NotFinite { field: f }
        | C::Empty { field: f }
        | C::TooLong { field: f, .. }
        | C::Invalid { field: f, .. } => (StatusCode::BAD_REQUEST, "bad_request", Some(f.clone())),
        C::LimitReached { .. } => (StatusCode::CONFLICT, "limit_reached", None),
        C::PlanVersionMismatch { .. } => (StatusCode::CONFLICT, "conflict", field("expected_version")),
        C::ParamAlreadyDeclared { .. } => (StatusCode::CONFLICT, "conflict", field("name")),
        C::NodeBusy { .. } => (StatusCode::CONFLICT, "node_busy", field("id")),
        C::NodeDown { .. } => (StatusCode::CONFLICT, "node_down", field("id")),
        _ => (StatusCode::CONFLICT, "conflict", None),
    }
}

impl Error {
    /// HTTP status, machine-readable code and the field at fault.
    pub fn classify(&self) -> (StatusCode, &'static str, Option<String>) {
        use cairn_raft::Error as R;
        match self {
            Error::Config { .. } => (StatusCode::INTERNAL_SERVER_ERROR, "config", None),
            Error::Tls { .. } => (StatusCode::INTERNAL_SERVER_ERROR, "tls", None),
            Error::Encode { .. } => (StatusCode::INTERNAL_SERVER_ERROR, "internal", None),
            Error::BadRequest { field, .. } => (StatusCode::BAD_REQUEST, "bad_request", Some(field.clone())),
            Error::NotFound { field, .. } => (StatusCode::NOT_FOUND, "not_found", Some(field.clone())),
            Error::MethodNotAllowed { .. } => (StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed", None),
            Error::TooManyStreams { node_wide: true, .. } => (StatusCode::SERVICE_UNAVAILABLE, "unavailable", None),
            Error::TooManyStreams { node_wide: false, .. } => (StatusCode::TOO_MANY_REQUESTS, "too_many_streams", None),
            Error::Unauthorized { .. } => (StatusCode::UNAUTHORIZED, "unauthorized", Some("authorization".into())),
            Error::BodyTooLarge { .. } => (StatusCode::PAYLOAD_TOO_LARGE, "body_too_large", Some("body".into())),
            Error::Command(e) => command_status(e),
            Error::Bind { .. } => (StatusCode::INTERNAL_SERVER_ERROR, "bind", None),
            Error::NodeUp { .. } => (StatusCode::CONFLICT, "node_up", Some("id".into())),
            Error::Client(_) => (StatusCode::BAD_GATEWAY, "upstream", None),
            Error::Unexpected { .. } => (StatusCode::INTERNAL_SERVER_ERROR, "internal", None),
            Error::Telemetry(e) => {
                use crate::telemetry::TelemetryError as T;
                match e {
                    T::InvalidTopic { .. } => (StatusCode::BAD_REQUEST, "bad_request", Some("topic".into())),
                    T::InvalidFilter { .. } => (StatusCode::BAD_REQUEST, "bad_request", Some("topic".into())),
                    T::PayloadTooLarge { .. } => {
                        (StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large", Some("body".into()))
                    }
                    T::InvalidPayload { field, .. } => {
                        let field = if field == "payload" {
                            field.clone()
                        } else {
                            format!("payload.{field}")
                        };
                        (StatusCode::BAD_REQUEST, "bad_request", Some(field))
                    }
                    T::RateLimited { .. } => (StatusCode::TOO_MANY_REQUESTS, "rate_limited", Some("topic".into())),
                    T::TooManyTopics { .. } => (StatusCode::CONFLICT, "limit_reached", Some("topic".into())),
                    T::TooManySubscribers { .. } => (StatusCode::SERVICE_UNAVAILABLE, "unavailable", None),
                    T::Config { key, .. } => (StatusCode::INTERNAL_SERVER_ERROR, "config", Some((*key).to_string())),
                }
            }
            Error::Raft(e) => match e {
                R::AlreadyInitialized { .. } => (StatusCode::CONFLICT, "already_initialized", None),
                R::UnknownMember { .. } => (StatusCode::NOT_FOUND, "unknown_member", Some("id".into())),
                R::Membership { .. } => (StatusCode::CONFLICT, "membership", None),
                R::Rejected { .. } | R::Fenced { .. } => (StatusCode::CONFLICT, "rejected", None),
                R::Forbidden { .. } => (StatusCode::FORBIDDEN, "forbidden", None),
                R::NotLeader { .. } => (StatusCode::SERVICE_UNAVAILABLE, "not_leader", None),
                R::NoLeader | R::Unavailable { .. } | R::Unreachable { .. } => {
                    (StatusCode::SERVICE_UNAVAILABLE, "unavailable", None)
                }
                R::Timeout { .. } => (StatusCode::GATEWAY_TIMEOUT, "timeout", None),
                R::Indeterminate { .. } => (StatusCode::GATEWAY_TIMEOUT, "outcome_unknown", None),
                R::Compacted { .. } => (StatusCode::GONE, "compacted", Some("from".into())),
                R::HashPassed { .. } => (StatusCode::CONFLICT, "hash_passed", Some("at".into())),
                R::Busy { .. } => (StatusCode::SERVICE_UNAVAILABLE, "busy", None),
                R::HashNotReached { .. } => (StatusCode::GATEWAY_TIMEOUT, "timeout", Some("at".into())),
                R::Config { field, .. } => (StatusCode::BAD_REQUEST, "config", Some((*field).to_string())),
                R::EntryTooLarge { .. } => (StatusCode::PAYLOAD_TOO_LARGE, "entry_too_large", Some("body".into())),
                _ => (StatusCode::INTERNAL_SERVER_ERROR, "internal", None),
            },
        }
    }

    /// The JSON body of this error.
    pub fn body(&self) -> ErrorBody {
        let (_, code, field) = self.classify();
        ErrorBody {
            code: code.into(),
            message: self.to_string(),
            field,
            retryable: match self {
                Error::Raft(e) => e.is_retryable(),
                Error::TooManyStreams { .. } => true,
                Error::Telemetry(e) => matches!(
                    e,
                    crate::telemetry::TelemetryError::RateLimited { .. }
                        | crate::telemetry::TelemetryError::TooManySubscribers { .. }
                ),
                _ => false,
            },
        }
    }

    /// A `NotFound` for `what`, named by request field `field`.
    pub fn not_found(what: impl Into<String>, field: impl Into<String>) -> Self {
        Error::NotFound {
            what: what.into(),
            field: field.into(),
        }
    }

    /// A `BadRequest` naming `field`.
    pub fn bad(field: impl Into<String>, reason: impl Into<String>) -> Self {
        Error::BadRequest {
            field: field.into(),
            reason: reason.into(),
        }
    }
}

impl IntoResponse for Error {
    fn into_response(self) -> axum::response::Response {
        let (status, _, _) = self.classify();
        if status.is_server_error() {
            tracing::warn!(status = status.as_u16(), error = %self, "request failed");
        } else {
            tracing::debug!(status = status.as_u16(), error = %self, "request refused");
        }
        let mut resp = (status, Json(self.body())).into_response();
        if status == StatusCode::UNAUTHORIZED {
            resp.headers_mut().insert(
                axum::http::header::WWW_AUTHENTICATE,
                axum::http::HeaderValue::from_static("Bearer"),
            );
        }
        resp
    }
}
