//! Errors of the cairn facade, and their one mapping to HTTP.

use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::Json;
use serde::Deserialize;
use serde::Serialize;

/// What went wrong in the daemon or an API call.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Bad configuration.
    #[error("config: {reason}")]
    Config {
        /// Why.
        reason: String,
    },
    /// The Raft layer failed.
    #[error(transparent)]
    Raft(#[from] cairn_raft::Error),
    /// The state machine refused a command.
    #[error("{0}")]
    Command(#[from] cairn_state::CommandError),
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

/// The JSON body of every error response.
#[derive(Debug, Serialize, Deserialize)]
pub struct ErrorBody {
    /// Machine-readable kind.
    pub code: String,
    /// Human-readable message.
    pub message: String,
    /// The request field at fault, when there is one.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub field: Option<String>,
    /// Whether the same request may succeed if retried.
    pub retryable: bool,
}

impl Error {
    fn status_and_code(&self) -> (StatusCode, &'static str) {
        use cairn_raft::Error as R;
        match self {
            Error::Config { .. } => (StatusCode::INTERNAL_SERVER_ERROR, "config"),
            Error::BadRequest { .. } => (StatusCode::BAD_REQUEST, "bad_request"),
            Error::NotFound { .. } => (StatusCode::NOT_FOUND, "not_found"),
            Error::BodyTooLarge { .. } => (StatusCode::PAYLOAD_TOO_LARGE, "body_too_large"),
            Error::Command(_) => (StatusCode::CONFLICT, "rejected"),
            Error::Bind { .. } => (StatusCode::INTERNAL_SERVER_ERROR, "bind"),
            Error::Raft(e) => match e {
                R::AlreadyInitialized { .. } => (StatusCode::CONFLICT, "already_initialized"),
                R::UnknownMember { .. } => (StatusCode::NOT_FOUND, "unknown_member"),
                R::Membership { .. } => (StatusCode::CONFLICT, "membership"),
                R::Rejected { .. } | R::Fenced { .. } => (StatusCode::CONFLICT, "rejected"),
                R::NotLeader { .. } => (StatusCode::SERVICE_UNAVAILABLE, "not_leader"),
                R::NoLeader | R::Unavailable { .. } => (StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
                R::Timeout { .. } => (StatusCode::GATEWAY_TIMEOUT, "timeout"),
                R::Config { .. } => (StatusCode::BAD_REQUEST, "config"),
                _ => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
            },
        }
    }
}

impl IntoResponse for Error {
    fn into_response(self) -> axum::response::Response {
        let (status, code) = self.status_and_code();
        let field = match &self {
            Error::BadRequest { field, .. } => Some(field.clone()),
            Error::BodyTooLarge { .. } => Some("body".to_string()),
            _ => None,
        };
        let retryable = matches!(&self, Error::Raft(e) if e.is_retryable());
        let body = ErrorBody {
            code: code.into(),
            message: self.to_string(),
            field,
            retryable,
        };
        (status, Json(body)).into_response()
    }
}
