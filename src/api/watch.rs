//! `GET /v1/watch`: Server-Sent Events of applied changes.
//!
//! Each event is `event: change`, `id: <log index>`, `data: <JSON change>`.
//! A client resumes after a disconnect with `?from=<last id + 1>` (or the
//! standard `Last-Event-ID` header) on any node and gets every later change
//! exactly once. History that the node compacted into a snapshot is a 410
//! (`code: compacted`): re-read the state, then watch from its
//! `x-cairn-applied-index` + 1. Errors after the stream started arrive as
//! one `event: error` with the usual error body, then the stream ends.

use std::convert::Infallible;
use std::time::Duration;

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::sse::Event;
use axum::response::sse::KeepAlive;
use axum::response::sse::Sse;
use axum::response::IntoResponse;
use axum::response::Response;
use cairn_raft::Change;
use cairn_raft::Watch;
use cairn_state::Mission;
use serde::Deserialize;
use serde::Serialize;
use utoipa::IntoParams;

use super::extract::ApiQuery;
use super::state::Api;
use crate::error::Error;

/// Query of `GET /v1/watch`.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct WatchQuery {
    /// First log index to deliver. Default: the next change after now
    /// (or `Last-Event-ID` + 1 when that header is sent).
    pub from: Option<u64>,
}

/// One change as the stream sends it.
#[derive(Debug, Serialize, Deserialize)]
pub struct ChangeJson {
    /// Log index (also the SSE event id).
    pub index: u64,
    /// Leader term that appended it.
    pub term: u64,
    /// Leader timestamp, ms since the Unix epoch.
    pub timestamp_ms: u64,
    /// The command.
    pub command: cairn_state::Command,
    /// `{"Ok": …}` or `{"Err": …}` when this node applied it while the
    /// stream was live; `null` for changes replayed from the log.
    pub response: Option<Result<cairn_state::Response, cairn_state::CommandError>>,
}

impl From<Change<Mission>> for ChangeJson {
    fn from(c: Change<Mission>) -> Self {
        Self {
            index: c.index,
            term: c.term,
            timestamp_ms: c.timestamp_ms,
            command: c.command,
            response: c.response,
        }
    }
}

fn change_event(c: Change<Mission>) -> Event {
    let id = c.index.to_string();
    let json = ChangeJson::from(c);
    match Event::default().event("change").id(id).json_data(&json) {
        Ok(e) => e,
        Err(e) => error_event(&Error::Encode { reason: e.to_string() }),
    }
}

fn error_event(e: &Error) -> Event {
    Event::default()
        .event("error")
        .json_data(e.body())
        .unwrap_or_else(|_| Event::default().event("error").data(e.to_string()))
}

struct Stream {
    watch: Option<Watch<Mission>>,
    _permit: super::streams::StreamPermit,
}

#[utoipa::path(get, path = "/v1/watch", tag = "watch", params(WatchQuery),
    responses(
        (status = 200, content_type = "text/event-stream", description = "`event: change` with `id: <index>` and the change as JSON data"),
        (status = 410, body = crate::error::ErrorBody, description = "`from` is compacted into a snapshot; re-read the state"),
        (status = 429, body = crate::error::ErrorBody, description = "this client address already holds its share of anonymous watch streams (`api.max_streams_per_client`)"),
        (status = 503, body = crate::error::ErrorBody, description = "the node's watch stream slots open to this client are taken (some are kept for token holders)")))]
pub(super) async fn watch(
    State(api): State<Api>,
    client: super::middleware::StreamClient,
    headers: HeaderMap,
    ApiQuery(q): ApiQuery<WatchQuery>,
) -> Response {
    let last_event = headers.get("last-event-id").and_then(|v| v.to_str().ok()).map(|v| {
        v.trim()
            .parse::<u64>()
            .map_err(|_| Error::bad("last-event-id", format!("{v:?} is not a log index")))
    });
    let from = match (q.from, last_event) {
        (Some(from), _) => from,
        (None, Some(Ok(last))) => last.saturating_add(1),
        (None, Some(Err(e))) => return e.into_response(),
        (None, None) => api.node.status().applied_index.unwrap_or(0) + 1,
    };
    let permit = match api.watch_slots.acquire(client.addr, client.authenticated) {
        Ok(p) => p,
        Err(e) => return e.into_response(),
    };
    let watch = match api.node.watch(from) {
        Ok(w) => w,
        Err(e) => return Error::from(e).into_response(),
    };
    tracing::debug!(from, "watch stream opened");
    let state = Stream {
        watch: Some(watch),
        _permit: permit,
    };
    let stream = futures::stream::unfold(state, |mut st| async move {
        let mut watch = st.watch.take()?;
        let event = match watch.next().await {
            Ok(change) => {
                st.watch = Some(watch);
                change_event(change)
            }
            Err(e) => {
                tracing::info!(error = %e, next = watch.next_index(), "watch stream ended");
                error_event(&Error::from(e))
            }
        };
        Some((Ok::<_, Infallible>(event), st))
    });
    Sse::new(stream)
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
        .into_response()
}
