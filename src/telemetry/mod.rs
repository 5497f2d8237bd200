//! Best-effort telemetry: named topics of JSON messages published on any
//! node and delivered to subscribers on every node, outside Raft.
//!
//! Telemetry is what the rover *observes* many times a second (pose, world
//! view, CPU load): only the latest value matters, losing one is harmless,
//! and writing it through the Raft log would fsync every sample on every
//! Pi's SD card and fill the Wi-Fi with replication. So it is never logged,
//! never fsynced and never retried; what is *decided* (plan, tasks, modes)
//! stays replicated. See docs/DECISIONS.md ("Replicated state and
//! telemetry").
//!
//! # Layout
//! - this file: settings, errors, the message, and the layout.
//! - `hub`: [`Telemetry`], the hub one daemon owns (cheap to clone):
//!   topics, per-topic rate limits, the latest value of each topic and
//!   source, subscribers with bounded drop-oldest queues.
//! - `topic`: topic names and the filters subscribers give.
//! - `queue`: the pure parts: the bounded queue, the token bucket, the
//!   rate meter.
//! - `schema`: the payload checks of the well-known topics.
//! - `forward`: fan-out to the other members over the Raft transport's
//!   [`AppChannel::Telemetry`](cairn_raft::AppChannel) channel.
//! - `stats`: the `node.stats` topic every daemon publishes.
//!
//! # Guarantees
//! - Per topic and publishing node, a subscriber sees messages in `seq`
//!   order, each at most once; gaps are possible (rate limit, full queues,
//!   a peer that was unreachable). `seq` restarts at 1 when the publishing
//!   daemon restarts.
//! - A new subscriber first gets the latest message of every matching
//!   topic and source, then live ones.
//! - Publishing never blocks: a slow subscriber or an unreachable peer
//!   loses its oldest queued messages (counted), never the publisher's time.
//! - A message is forwarded once, by the node that published it, to every
//!   other member; a received message is only delivered locally, so loops
//!   cannot happen.

mod forward;
mod hub;
mod queue;
pub mod schema;
mod stats;
#[cfg(test)]
mod tests;
mod topic;

use std::collections::BTreeMap;

use serde::Deserialize;
use serde::Serialize;

pub(crate) use forward::start_forwarder;
pub(crate) use stats::start_node_stats;

pub use hub::PeerInfo;
pub use hub::SourceInfo;
pub use hub::Subscription;
pub use hub::Telemetry;
pub use hub::TelemetryOverview;
pub use hub::TopicInfo;
pub use hub::MAX_SUBSCRIBERS;
pub use topic::validate_topic;
pub use topic::TopicFilter;

/// Longest topic name, bytes.
pub const MAX_TOPIC_BYTES: usize = 128;

/// Most topics and prefixes one subscription may name.
pub const MAX_FILTER_ENTRIES: usize = 32;

/// The topic every daemon publishes its own load on.
pub const NODE_STATS_TOPIC: &str = "node.stats";

/// Telemetry settings (`[telemetry]` in the node config).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TelemetrySettings {
    /// Most messages per second this node publishes on one topic (token
    /// bucket refill rate). Default 20: twice the fastest producer (the
    /// 10 Hz pose), so a normal producer is never limited.
    pub rate_hz: u32,
    /// Messages a topic may publish at once above the rate (bucket size).
    /// Default 10: half a second's worth.
    pub burst: u32,
    /// Per-topic rate overrides, e.g. `{ "camera.thumbnail" = 1 }`.
    pub topic_rate_hz: BTreeMap<String, u32>,
    /// Messages queued for one subscriber before the oldest is dropped.
    /// Default 256: 10 s of the pose, or a few seconds of everything a
    /// rover publishes, for a subscriber on a slow link.
    pub subscriber_queue: usize,
    /// Messages queued for one peer before the oldest is dropped. Default
    /// 256, for the same reason.
    pub peer_queue: usize,
    /// Largest payload, bytes of JSON. Default 16384: a world view with
    /// a hundred obstacles fits in a fifth of it.
    pub max_payload_bytes: usize,
    /// Most topics one node keeps (each holds its latest values). Default 256.
    pub max_topics: usize,
    /// How long a batch to one peer may take before it is given up. Default
    /// 500: a LAN answers in a few ms; longer means the peer is gone.
    pub forward_timeout_ms: u64,
    /// How often this node publishes `node.stats`, ms; 0 turns it off.
    /// Default 2000.
    pub node_stats_interval_ms: u64,
}

impl Default for TelemetrySettings {
    fn default() -> Self {
        Self {
            rate_hz: 20,
            burst: 10,
            topic_rate_hz: BTreeMap::new(),
            subscriber_queue: 256,
            peer_queue: 256,
            max_payload_bytes: 16 * 1024,
            max_topics: 256,
            forward_timeout_ms: 500,
            node_stats_interval_ms: 2000,
        }
    }
}

impl TelemetrySettings {
    /// Refuse settings that would misbehave, naming the key.
    pub fn validate(&self) -> Result<(), TelemetryError> {
        let bad = |key: &'static str, reason: String| Err(TelemetryError::Config { key, reason });
        if !(1..=1000).contains(&self.rate_hz) {
            return bad("telemetry.rate_hz", format!("{} is not in 1..=1000", self.rate_hz));
        }
        if !(1..=1000).contains(&self.burst) {
            return bad("telemetry.burst", format!("{} is not in 1..=1000", self.burst));
        }
        for (topic, rate) in &self.topic_rate_hz {
            validate_topic(topic).map_err(|e| TelemetryError::Config {
                key: "telemetry.topic_rate_hz",
                reason: e.to_string(),
            })?;
            if !(1..=1000).contains(rate) {
                return bad("telemetry.topic_rate_hz", format!("{topic}: {rate} is not in 1..=1000"));
            }
        }
        for (key, v) in [
            ("telemetry.subscriber_queue", self.subscriber_queue),
            ("telemetry.peer_queue", self.peer_queue),
        ] {
            if !(1..=65_536).contains(&v) {
                return bad(key, format!("{v} is not in 1..=65536"));
            }
        }
        if !(64..=1 << 20).contains(&self.max_payload_bytes) {
            return bad(
                "telemetry.max_payload_bytes",
                format!("{} is not in 64..=1048576", self.max_payload_bytes),
            );
        }
        if !(1..=4096).contains(&self.max_topics) {
            return bad(
                "telemetry.max_topics",
                format!("{} is not in 1..=4096", self.max_topics),
            );
        }
        if !(10..=10_000).contains(&self.forward_timeout_ms) {
            return bad(
                "telemetry.forward_timeout_ms",
                format!("{} is not in 10..=10000", self.forward_timeout_ms),
            );
        }
        if self.node_stats_interval_ms != 0 && self.node_stats_interval_ms < 100 {
            return bad(
                "telemetry.node_stats_interval_ms",
                format!("{} is under 100 (0 turns it off)", self.node_stats_interval_ms),
            );
        }
        Ok(())
    }

    fn rate_for(&self, topic: &str) -> u32 {
        self.topic_rate_hz.get(topic).copied().unwrap_or(self.rate_hz)
    }
}

/// What can go wrong publishing or subscribing.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TelemetryError {
    /// The topic name is not a valid dotted name.
    #[error("invalid topic {topic:?}: {reason}")]
    InvalidTopic {
        /// The name (cut to [`MAX_TOPIC_BYTES`] + a few bytes).
        topic: String,
        /// Why.
        reason: &'static str,
    },
    /// The payload's JSON is over the limit.
    #[error("payload is {bytes} bytes of json, over the {limit_bytes} byte limit")]
    PayloadTooLarge {
        /// Its size.
        bytes: usize,
        /// The limit.
        limit_bytes: usize,
    },
    /// The topic published faster than its rate limit: this message was
    /// dropped (and counted).
    #[error("topic {topic:?} is over its rate limit of {rate_hz} Hz; message dropped")]
    RateLimited {
        /// The topic.
        topic: String,
        /// Its limit.
        rate_hz: u32,
    },
    /// The payload of a topic with a schema ([`schema`]) has the wrong
    /// shape, e.g. a string where a number belongs.
    #[error("payload of {topic:?} refused: {field} {reason}")]
    InvalidPayload {
        /// The topic.
        topic: String,
        /// The offending field (`obstacles[0].x_m`; `payload` for the whole).
        field: String,
        /// Why.
        reason: String,
    },
    /// The node already keeps the most topics it may.
    #[error("this node already has {limit} topics")]
    TooManyTopics {
        /// The limit.
        limit: usize,
    },
    /// The node already serves the most subscribers it may.
    #[error("this node already serves {limit} telemetry subscribers; try another node")]
    TooManySubscribers {
        /// The limit.
        limit: usize,
    },
    /// A subscription filter is malformed.
    #[error("invalid filter: {reason}")]
    InvalidFilter {
        /// Why.
        reason: String,
    },
    /// Bad `[telemetry]` settings.
    #[error("{key}: {reason}")]
    Config {
        /// The config key.
        key: &'static str,
        /// Why.
        reason: String,
    },
}

/// One telemetry message, as subscribers (and the SSE stream) see it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct TelemetryMessage {
    /// Dotted topic name, e.g. `rover.pose`.
    pub topic: String,
    /// The node that published it.
    pub node_id: u64,
    /// Per topic and publishing node, from 1; restarts with the daemon.
    pub seq: u64,
    /// The publisher's wall clock, ms since the Unix epoch. For display
    /// only: clocks of different nodes disagree.
    pub wall_time_ms: u64,
    /// The JSON payload.
    #[schema(value_type = Object)]
    pub payload: serde_json::Value,
}
