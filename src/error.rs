//! Errors of the cairn facade, and their one mapping to HTTP.
//!
//! [`ERROR_CODES`] is the one table of the API's error codes: each `code`
//! of an [`ErrorBody`], its HTTP status and what it means.
//! [`Error::classify`] answers only with codes from it (a code has one
//! status, taken from the table), and docs/API.md's error table and the
//! error responses of docs/openapi.json are generated from it (tests in
//! `api::tests` fail when the committed docs differ).
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

/// One error code of the API: the `code` of an [`ErrorBody`], the HTTP
/// status it always comes with, and when it is answered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ErrorCode {
    /// The machine-readable code.
    pub code: &'static str,
    /// Its HTTP status.
    pub status: u16,
    /// When it is answered (markdown, one line).
    pub meaning: &'static str,
}

impl ErrorCode {
    /// Its status as an [`http::StatusCode`](StatusCode).
    pub fn http_status(&self) -> StatusCode {
        StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
    }

    /// The code of this table that `code` names.
    pub fn named(code: &str) -> Option<&'static ErrorCode> {
        ERROR_CODES.iter().find(|c| c.code == code)
    }

    /// The first code of the table with `status` (for a response some
    /// layer made without a code, e.g. a text 503 from `/readyz`).
    pub fn for_status(status: u16) -> &'static ErrorCode {
        ERROR_CODES
            .iter()
            .find(|c| c.status == status)
            .unwrap_or(if status < 500 {
                &code::BAD_REQUEST
            } else {
                &code::INTERNAL
            })
    }
}

/// The error codes, one constant each (see [`ERROR_CODES`]).
pub mod code {
    use super::ErrorCode;

    macro_rules! codes {
        ($($name:ident = $code:literal, $status:literal, $meaning:literal;)*) => {
            $(
                #[doc = $meaning]
                pub const $name: ErrorCode = ErrorCode { code: $code, status: $status, meaning: $meaning };
            )*
            /// Every code, by status.
            pub const ALL: &[ErrorCode] = &[$($name),*];
        };
    }

    codes! {
        BAD_REQUEST = "bad_request", 400, "malformed JSON (`field: body`), a wrong type (`field` is the JSON path, e.g. `kind.Int.min`), a bad path or query parameter (`id`, `state`, `consistency`), missing `content-type: application/json`, a value out of bounds (`value`; a plan's floats: the JSON path, see [Bounds on numbers](#bounds-on-numbers)), a bad telemetry topic or payload";
        UNAUTHORIZED = "unauthorized", 401, "missing or wrong bearer token (`field: authorization`; a `WWW-Authenticate: Bearer` header); nothing changed";
        FORBIDDEN = "forbidden", 403, "the leader refused a write this node forwarded because it speaks for another node, or is the coordinator's to make (see [Trust model: the peer channel](#trust-model-the-peer-channel)); nothing changed";
        NOT_FOUND = "not_found", 404, "unknown task, node, goal, parameter, policy or route (`field` names the path parameter; `path` for an unknown route)";
        UNKNOWN_MEMBER = "unknown_member", 404, "`DELETE /v1/members/{id}` or `POST /v1/members/{id}/promote` of a node that is not a member (`field: id`)";
        METHOD_NOT_ALLOWED = "method_not_allowed", 405, "a known path with a method it does not serve; the `Allow` header lists the ones it does";
        CONFLICT = "conflict", 409, "well-formed, but the state refuses it: an illegal task transition, a plan version mismatch (`field: expected_version`), a parameter declared twice (`field: name`)";
        REJECTED = "rejected", 409, "the write was not applied: a stale retry, an undecodable command, or a write fenced to a leader term that ended before it committed";
        ALREADY_INITIALIZED = "already_initialized", 409, "`POST /v1/cluster/init` on a node that is already part of a cluster";
        MEMBERSHIP = "membership", 409, "a membership change the current membership does not allow (e.g. another change is in progress, removing the last voter)";
        LIMIT_REACHED = "limit_reached", 409, "a bound of the state (tasks, parameters, policies, goals) or of telemetry topics is reached (`field: topic`)";
        NODE_UP = "node_up", 409, "`DELETE /v1/nodes/{id}` of a node that is up: its agent would register it again (`field: id`)";
        NODE_BUSY = "node_busy", 409, "`DELETE /v1/nodes/{id}` of a node that still holds tasks (`field: id`)";
        NODE_DOWN = "node_down", 409, "`PATCH /v1/nodes/{id}` of a node that is down (`field: id`)";
        HASH_PASSED = "hash_passed", 409, "`GET /v1/state/hash?at=N`: this node already applied past N; ask at a later index (`field: at`)";
        COMPACTED = "compacted", 410, "`GET /v1/watch?from=` names history compacted into a snapshot (`field: from`)";
        BODY_TOO_LARGE = "body_too_large", 413, "the request body is over `log.max_entry_bytes` (1 MiB by default; `field: body`)";
        PAYLOAD_TOO_LARGE = "payload_too_large", 413, "a telemetry payload over its limit (`field: body`)";
        ENTRY_TOO_LARGE = "entry_too_large", 413, "a command whose encoding is over `log.max_entry_bytes` (`field: body`)";
        RATE_LIMITED = "rate_limited", 429, "a telemetry topic is over its rate limit; the message was dropped (`field: topic`); `retryable: true`";
        TOO_MANY_STREAMS = "too_many_streams", 429, "this client holds its share of the node's watch or telemetry streams already; `retryable: true`";
        INTERNAL = "internal", 500, "a bug or an unexpected answer from another node; the message says what";
        CONFIG = "config", 500, "the node's configuration is invalid (a start-up error; an API answer with it is a bug)";
        TLS = "tls", 500, "certificates or TLS set-up failed (a start-up error)";
        BIND = "bind", 500, "the node cannot listen on an address (a start-up error)";
        UPSTREAM = "upstream", 502, "a call this node made to another node's admin API failed";
        UNAVAILABLE = "unavailable", 503, "no leader right now, no quorum (`/readyz`), or the node's stream slots are all taken; `retryable: true` (the CLI tries the next endpoint)";
        NOT_LEADER = "not_leader", 503, "adding or promoting a member, or changing another node's entry (`PATCH /v1/nodes/{id}`), on a node that does not lead; `retryable: true`";
        BUSY = "busy", 503, "too many callers already wait for a state hash; `retryable: true`";
        TIMEOUT = "timeout", 504, "a write's outcome is unknown (`retryable: false`: retry a write only with the same client tag); `GET /v1/state/hash?at=N` did not reach N within `wait_ms` (`field: at`, `retryable: true`)";
        OUTCOME_UNKNOWN = "outcome_unknown", 504, "it may or may not have happened (the connection to the leader broke after sending, the leader changed before it committed, a promotion started but has not completed); `retryable: false`: retry a write only with the same client tag, re-read the membership after a membership change";
    }
}

/// Every error code of the API, by status: the one source of docs/API.md's
/// error table and of docs/openapi.json's error responses.
pub const ERROR_CODES: &[ErrorCode] = code::ALL;

/// The markdown table of [`ERROR_CODES`] (docs/API.md, "Errors").
pub fn error_codes_markdown() -> String {
    let mut out = String::from("| status | code | when |\n|---|---|---|\n");
    for c in ERROR_CODES {
        out.push_str(&format!("| {} | `{}` | {} |\n", c.status, c.code, c.meaning));
    }
    out
}

/// Code and field of a state-machine refusal.
fn command_code(e: &CommandError) -> (&'static ErrorCode, Option<String>) {
    use code::*;
    use CommandError as C;
    let field = |f: &str| Some(f.to_string());
    match e {
        C::TaskNotFound { .. } => (&NOT_FOUND, field("task_id")),
        C::NodeNotFound { .. } => (&NOT_FOUND, field("node_id")),
        C::GoalNotFound { .. } => (&NOT_FOUND, field("goal_id")),
        C::ParamNotDeclared { .. } => (&NOT_FOUND, field("name")),
        C::PolicyNotFound { .. } => (&NOT_FOUND, field("sensor")),
        C::ParamTypeMismatch { .. } | C::ParamOutOfBounds { .. } => (&BAD_REQUEST, field("value")),
        C::ProgressOutOfRange { .. } => (&BAD_REQUEST, field("percent")),
        C::NotFinite { field: f }
        | C::Empty { field: f }
        | C::TooLong { field: f, .. }
        | C::Invalid { field: f, .. } => (&BAD_REQUEST, Some(f.clone())),
        C::LimitReached { .. } => (&LIMIT_REACHED, None),
        C::PlanVersionMismatch { .. } => (&CONFLICT, field("expected_version")),
        C::ParamAlreadyDeclared { .. } => (&CONFLICT, field("name")),
        C::NodeBusy { .. } => (&NODE_BUSY, field("id")),
        C::NodeDown { .. } => (&NODE_DOWN, field("id")),
        _ => (&CONFLICT, None),
    }
}

impl Error {
    /// HTTP status, machine-readable code and the field at fault.
    pub fn classify(&self) -> (StatusCode, &'static str, Option<String>) {
        let (code, field) = self.error_code();
        (code.http_status(), code.code, field)
    }

    /// The code of [`ERROR_CODES`] this error answers with, and the field at fault.
    pub fn error_code(&self) -> (&'static ErrorCode, Option<String>) {
        use cairn_raft::Error as R;
        use code::*;
        match self {
            Error::Config { .. } => (&CONFIG, None),
            Error::Tls { .. } => (&TLS, None),
            Error::Encode { .. } => (&INTERNAL, None),
            Error::BadRequest { field, .. } => (&BAD_REQUEST, Some(field.clone())),
            Error::NotFound { field, .. } => (&NOT_FOUND, Some(field.clone())),
            Error::MethodNotAllowed { .. } => (&METHOD_NOT_ALLOWED, None),
            Error::TooManyStreams { node_wide: true, .. } => (&UNAVAILABLE, None),
            Error::TooManyStreams { node_wide: false, .. } => (&TOO_MANY_STREAMS, None),
            Error::Unauthorized { .. } => (&UNAUTHORIZED, Some("authorization".into())),
            Error::BodyTooLarge { .. } => (&BODY_TOO_LARGE, Some("body".into())),
            Error::Command(e) => command_code(e),
            Error::Bind { .. } => (&BIND, None),
            Error::NodeUp { .. } => (&NODE_UP, Some("id".into())),
            Error::Client(_) => (&UPSTREAM, None),
            Error::Unexpected { .. } => (&INTERNAL, None),
            Error::Telemetry(e) => {
                use crate::telemetry::TelemetryError as T;
                match e {
                    T::InvalidTopic { .. } | T::InvalidFilter { .. } => (&BAD_REQUEST, Some("topic".into())),
                    T::PayloadTooLarge { .. } => (&PAYLOAD_TOO_LARGE, Some("body".into())),
                    T::InvalidPayload { field, .. } => {
                        let field = if field == "payload" {
                            field.clone()
                        } else {
                            format!("payload.{field}")
                        };
                        (&BAD_REQUEST, Some(field))
                    }
                    T::RateLimited { .. } => (&RATE_LIMITED, Some("topic".into())),
                    T::TooManyTopics { .. } => (&LIMIT_REACHED, Some("topic".into())),
                    T::TooManySubscribers { .. } => (&UNAVAILABLE, None),
                    T::Config { key, .. } => (&CONFIG, Some((*key).to_string())),
                }
            }
            Error::Raft(e) => match e {
                R::AlreadyInitialized { .. } => (&ALREADY_INITIALIZED, None),
                R::UnknownMember { .. } => (&UNKNOWN_MEMBER, Some("id".into())),
                R::Membership { .. } => (&MEMBERSHIP, None),
                R::Rejected { .. } | R::Fenced { .. } => (&REJECTED, None),
                R::Forbidden { .. } => (&FORBIDDEN, None),
                R::NotLeader { .. } => (&NOT_LEADER, None),
                R::NoLeader | R::Unavailable { .. } | R::Unreachable { .. } => (&UNAVAILABLE, None),
                R::Timeout { .. } => (&TIMEOUT, None),
                R::Indeterminate { .. } => (&OUTCOME_UNKNOWN, None),
                R::Compacted { .. } => (&COMPACTED, Some("from".into())),
                R::HashPassed { .. } => (&HASH_PASSED, Some("at".into())),
                R::Busy { .. } => (&BUSY, None),
                R::HashNotReached { .. } => (&TIMEOUT, Some("at".into())),
                // Only from start-up validation: a request cannot cause it.
                R::Config { field, .. } => (&CONFIG, Some((*field).to_string())),
                R::EntryTooLarge { .. } => (&ENTRY_TOO_LARGE, Some("body".into())),
                _ => (&INTERNAL, None),
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
