//! Middleware: request ids and tracing, client tags, authentication.

use std::time::Instant;

use axum::extract::FromRequestParts;
use axum::extract::Request;
use axum::extract::State;
use axum::http::request::Parts;
use axum::http::HeaderValue;
use axum::http::Method;
use axum::middleware::Next;
use axum::response::IntoResponse;
use axum::response::Response;
use tracing::Instrument;

use super::state::Api;
use super::state::REQUEST_ID_HEADER;
use super::ClientAddr;
use crate::error::Error;
use crate::wire::CLIENT_ID_HEADER;
use crate::wire::CLIENT_SEQ_HEADER;

/// A request id a client may choose: short and printable, so it is safe in
/// logs and headers.
pub(super) fn sane_request_id(v: &HeaderValue) -> Option<String> {
    let s = v.to_str().ok()?;
    let ok = !s.is_empty() && s.len() <= 64 && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(&b));
    ok.then(|| s.to_string())
}

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

pub(super) async fn client_tag(req: Request, next: Next) -> Response {
    match parse_client_tag(req.headers()) {
        Ok(tag) => CLIENT_TAG.scope(tag, next.run(req)).await,
        Err(e) => e.into_response(),
    }
}

pub(super) async fn trace_request(State(api): State<Api>, req: Request, next: Next) -> Response {
    let id = req
        .headers()
        .get(REQUEST_ID_HEADER)
        .and_then(sane_request_id)
        .unwrap_or_else(|| api.new_request_id());
    let span = tracing::info_span!("api", request_id = %id, method = %req.method(), path = %req.uri().path());
    let started = Instant::now();
    let mutating = is_mutating(req.method());
    let method = req.method().clone();
    // The route template (`/v1/tasks/{id}`), never the raw path: a label
    // per task id would grow the registry without bound.
    let route = req
        .extensions()
        .get::<axum::extract::MatchedPath>()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| super::metrics::UNMATCHED_ROUTE.to_string());
    let mut resp = cairn_raft::trace::with_request_id(id.clone(), next.run(req))
        .instrument(span.clone())
        .await;
    let took = started.elapsed();
    api.http_metrics.observe(&route, &method, resp.status(), took);
    let status = resp.status().as_u16();
    let latency_ms = took.as_millis() as u64;
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

pub(super) async fn authenticate(State(api): State<Api>, mut req: Request, next: Next) -> Response {
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
    pub(super) addr: Option<std::net::IpAddr>,
    pub(super) authenticated: bool,
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
