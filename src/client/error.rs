//! What a [`Client`](super::Client) call can fail with, and how an answer
//! that is not a cairn answer is described.

use crate::wire::ErrorBody;

/// Why no endpoint gave an answer, the worst case over the endpoints
/// tried (ordered: a timeout beats "unavailable", which beats "down").
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Unanswered {
    /// Not reachable: nothing listens, it did not answer within the dial
    /// timeout, or it is not a cairn node.
    Down,
    /// Reachable, but it cannot serve this now (503: no leader, no quorum).
    Unavailable,
    /// The request was sent but no answer came in time, or the connection
    /// broke before one, or the node said "outcome unknown" (504): a write
    /// may or may not have been applied.
    Unknown,
}

/// The message of [`ClientError::Unreachable`].
fn unanswered_text(why: &Unanswered, tried: &str) -> String {
    match why {
        Unanswered::Down => format!("no endpoint reachable ({tried}); is a node running? try --endpoints"),
        Unanswered::Unavailable => format!("no endpoint could serve the request now ({tried})"),
        Unanswered::Unknown => {
            format!("no answer in time ({tried}); if this was a write, its outcome is unknown: read before retrying")
        }
    }
}

/// Why a client call failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// No endpoint answered (`why` says how it went).
    #[error("{}", unanswered_text(.why, .tried))]
    Unreachable {
        /// What was tried, with each failure.
        tried: String,
        /// The worst failure among them.
        why: Unanswered,
    },
    /// The node answered with an error.
    #[error("{endpoint}: {} ({})", body.message, body.code)]
    Api {
        /// Which node said it.
        endpoint: String,
        /// HTTP status.
        status: u16,
        /// The error body.
        body: ErrorBody,
    },
    /// The response did not parse.
    #[error("{endpoint}: unexpected response: {reason}")]
    Protocol {
        /// Which node.
        endpoint: String,
        /// Why.
        reason: String,
    },
    /// The client could not be set up (CA file, token).
    #[error("client setup: {reason}")]
    Setup {
        /// Why.
        reason: String,
    },
}

/// A response's content type, for saying what a non-cairn answer was.
pub(super) fn content_type(resp: &reqwest::Response) -> String {
    resp.headers()
        .get(reqwest::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| v.split(';').next().unwrap_or(v).trim().to_string())
        .unwrap_or_default()
}

/// What a non-cairn answer was, without its body (an HTML page says
/// nothing useful on a terminal).
pub(super) fn not_cairn(status: reqwest::StatusCode, content_type: &str) -> String {
    let what = if content_type.is_empty() {
        String::new()
    } else {
        format!(" ({content_type})")
    };
    format!("answered HTTP {status}{what}, not as a cairn node: is this a cairn admin API address?")
}

/// The innermost cause of a reqwest error, once: reqwest's own message
/// repeats the URL (the endpoint is named already) and some layers repeat
/// their cause in their own message.
pub fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut last = e.to_string();
    let mut cur = e.source();
    while let Some(s) = cur {
        last = s.to_string();
        cur = s.source();
    }
    last
}

/// A cairn error answer, or, if the body is not one, a protocol error
/// saying what came instead (not the body).
pub(super) fn api_error(endpoint: &str, status: reqwest::StatusCode, content_type: &str, text: String) -> ClientError {
    match serde_json::from_str::<ErrorBody>(&text) {
        Ok(body) => ClientError::Api {
            endpoint: endpoint.to_string(),
            status: status.as_u16(),
            body,
        },
        Err(_) => ClientError::Protocol {
            endpoint: endpoint.to_string(),
            reason: not_cairn(status, content_type),
        },
    }
}
