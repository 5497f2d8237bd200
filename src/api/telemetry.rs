//! `/v1/telemetry`: best-effort telemetry topics (see [`crate::telemetry`]).
//!
//! - `GET /v1/telemetry?topic=rover.pose&prefix=sim.`: Server-Sent Events,
//!   `event: telemetry` with a [`TelemetryMessage`] as data; the latest
//!   message of every matching topic and node first, then live ones. When
//!   this subscriber's queue overflowed, an `event: dropped` with
//!   `{"dropped": <total so far>}` comes before the next message.
//! - `POST /v1/telemetry/{topic}`: publish the JSON body (needs the write
//!   token); 202 with the message's `seq`, 429 over the topic's rate limit.
//! - `GET /v1/telemetry/topics`: topics, latest `seq` per node, observed
//!   rates and every drop counter, and the links to the peers.

use std::convert::Infallible;
use std::time::Duration;

use axum::extract::Path;
use axum::extract::RawQuery;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::sse::Event;
use axum::response::sse::KeepAlive;
use axum::response::sse::Sse;
use axum::response::IntoResponse;
use axum::response::Response;
use axum::Json;
use serde::Deserialize;
use serde::Serialize;
use utoipa::ToSchema;

use super::extract::JsonBody;
use super::state::Api;
use crate::error::Error;
use crate::telemetry::TelemetryMessage;
use crate::telemetry::TelemetryOverview;
use crate::telemetry::TopicFilter;

/// What `POST /v1/telemetry/{topic}` answers.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct PublishResult {
    /// The topic.
    pub topic: String,
    /// The node that published it (this one).
    pub node_id: u64,
    /// The message's sequence number on this topic and node.
    pub seq: u64,
}

/// The subscription filter from `?topic=…&prefix=…` (both repeatable).
fn parse_filter(query: Option<&str>) -> Result<TopicFilter, Error> {
    let (mut topics, mut prefixes) = (Vec::new(), Vec::new());
    for (key, value) in form_urlencoded::parse(query.unwrap_or("").as_bytes()) {
        match key.as_ref() {
            "topic" => {
                crate::telemetry::validate_topic(&value).map_err(|e| Error::bad("topic", e.to_string()))?;
                topics.push(value.into_owned());
            }
            "prefix" => prefixes.push(value.into_owned()),
            other => {
                let name: String = other.chars().take(64).collect();
                return Err(Error::bad(name, "unknown query parameter; expected topic or prefix"));
            }
        }
    }
    let field = if prefixes.is_empty() { "topic" } else { "prefix" };
    TopicFilter::new(topics, prefixes).map_err(|e| Error::bad(field, e.to_string()))
}

fn message_event(msg: &TelemetryMessage) -> Event {
    Event::default()
        .event("telemetry")
        .json_data(msg)
        .unwrap_or_else(|e| Event::default().event("error").data(e.to_string()))
}

#[utoipa::path(get, path = "/v1/telemetry", tag = "telemetry",
    params(
        ("topic" = Option<Vec<String>>, Query, description = "an exact topic; repeatable"),
        ("prefix" = Option<Vec<String>>, Query, description = "a topic prefix, e.g. `rover.`; repeatable. No topic and no prefix: every topic"),
    ),
    responses(
        (status = 200, content_type = "text/event-stream", description = "`event: telemetry` with a TelemetryMessage as data (latest values first, then live); `event: dropped` with `{\"dropped\": n}` after this subscriber's queue overflowed"),
        (status = 400, body = crate::error::ErrorBody, description = "bad topic or prefix, or an unknown parameter"),
        (status = 429, body = crate::error::ErrorBody, description = "this client address already holds its share of anonymous telemetry streams (`api.max_streams_per_client`)"),
        (status = 503, body = crate::error::ErrorBody, description = "the node's telemetry stream slots open to this client are taken (some are kept for token holders)")))]
pub(super) async fn stream(
    State(api): State<Api>,
    client: super::middleware::StreamClient,
    RawQuery(query): RawQuery,
) -> Result<Response, Error> {
    let filter = parse_filter(query.as_deref())?;
    let permit = api.telemetry_slots.acquire(client.addr, client.authenticated)?;
    let subscription = api.telemetry.subscribe(filter)?;
    tracing::debug!("telemetry stream opened");
    // The permit lives as long as the stream (it rides in the unfold state).
    let events = futures::stream::unfold((subscription, 0u64, permit), |(mut sub, reported, permit)| async move {
        let msg = sub.recv().await?;
        let dropped = sub.dropped();
        let mut out = Vec::with_capacity(2);
        if dropped > reported {
            let notice = Event::default()
                .event("dropped")
                .data(serde_json::json!({ "dropped": dropped }).to_string());
            out.push(Ok::<_, Infallible>(notice));
        }
        out.push(Ok(message_event(&msg)));
        Some((futures::stream::iter(out), (sub, dropped, permit)))
    });
    Ok(Sse::new(futures::StreamExt::flatten(events))
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
        .into_response())
}

#[utoipa::path(post, path = "/v1/telemetry/{topic}", tag = "telemetry",
    params(("topic" = String, Path, description = "dotted name: segments of a-z, 0-9, '_', '-'; at most 128 bytes")),
    request_body(content = Object, description = "any JSON value, at most `telemetry.max_payload_bytes` (16 KiB by default)"),
    responses(
        (status = 202, body = PublishResult, description = "delivered here and queued for the other nodes (best effort)"),
        (status = 400, body = crate::error::ErrorBody, description = "bad topic name or body, or a payload of `rover.pose`, `rover.perception`, `sim.world` or `node.stats` that does not fit its schema (e.g. a string where a number belongs; `field` names it)"),
        (status = 413, body = crate::error::ErrorBody, description = "payload over the limit"),
        (status = 429, body = crate::error::ErrorBody, description = "the topic is over its rate limit; the message was dropped")),
    security(("bearer" = [])))]
pub(super) async fn publish(
    State(api): State<Api>,
    Path(topic): Path<String>,
    JsonBody(payload): JsonBody<serde_json::Value>,
) -> Result<Response, Error> {
    // The payloads of the topics cairn draws are checked by the hub
    // (`telemetry::schema`): a 400 naming the field, nothing stored or
    // forwarded.
    let seq = api.telemetry.publish_seq(&topic, payload)?;
    let body = PublishResult {
        topic,
        node_id: api.telemetry.node_id(),
        seq,
    };
    Ok((StatusCode::ACCEPTED, Json(body)).into_response())
}

#[utoipa::path(get, path = "/v1/telemetry/topics", tag = "telemetry",
    responses((status = 200, body = TelemetryOverview, description = "topics with the latest seq and observed rate per node, rate limits and drop counters; peer links")))]
pub(super) async fn topics(State(api): State<Api>) -> Json<TelemetryOverview> {
    Json(api.telemetry.overview())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_parse_from_the_query() {
        let f = parse_filter(Some("topic=rover.pose&prefix=sim.")).unwrap();
        assert!(f.matches("rover.pose") && f.matches("sim.world") && !f.matches("node.stats"));
        assert!(parse_filter(None).unwrap().matches("anything"));
        let field = |q: &str| parse_filter(Some(q)).unwrap_err().body().field;
        assert_eq!(field("topic=Bad").as_deref(), Some("topic"));
        assert_eq!(field("prefix=a%20b").as_deref(), Some("prefix"));
        assert_eq!(field("colour=red").as_deref(), Some("colour"));
    }
}
