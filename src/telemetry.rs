//! Best-effort telemetry: named topics of JSON messages published on any
//! node and delivered to subscribers on every node, outside Raft.
//!
//! Telemetry is what the rover *observes* many times a second (pose, world
//! view, CPU load): only the latest value matters, losing one is harmless,
//! and writing it through the Raft log would fsync every sample on every
//! Pi's SD card and fill the Wi-Fi with replication. So it is never logged,
//! never fsynced and never retried; what is *decided* (plan, tasks, modes)
//! stays replicated. See docs/ARCHITECTURE.md ("Replicated state and
//! telemetry").
//!
//! # Layout
//! - this file: [`Telemetry`], the hub one daemon owns (cheap to clone):
//!   topics, per-topic rate limits, the latest value of each topic and
//!   source, subscribers with bounded drop-oldest queues.
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
pub mod schema;
mod stats;

use std::collections::BTreeMap;
use std::collections::BTreeSet;
use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::atomic::AtomicBool;
use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::Weak;
use std::task::Context;
use std::task::Poll;
use std::time::Duration;

use futures::task::AtomicWaker;
use serde::Deserialize;
use serde::Serialize;
use tokio::time::Instant;

pub(crate) use forward::start_forwarder;
pub(crate) use forward::TaskGuard;
pub(crate) use stats::start_node_stats;

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

/// Check a topic name: 1 to [`MAX_TOPIC_BYTES`] bytes of dot-separated,
/// non-empty segments of `a-z`, `0-9`, `_` and `-`.
pub fn validate_topic(topic: &str) -> Result<(), TelemetryError> {
    let err = |reason| TelemetryError::InvalidTopic {
        topic: topic.chars().take(MAX_TOPIC_BYTES + 8).collect(),
        reason,
    };
    if topic.is_empty() {
        return Err(err("is empty"));
    }
    if topic.len() > MAX_TOPIC_BYTES {
        return Err(err("is longer than 128 bytes"));
    }
    if topic == "topics" {
        // `GET /v1/telemetry/topics` is the listing.
        return Err(err("is reserved"));
    }
    for segment in topic.split('.') {
        if segment.is_empty() {
            return Err(err("has an empty segment (leading, trailing or double dot)"));
        }
        if !segment
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
        {
            return Err(err("may contain only a-z, 0-9, '_', '-' and '.'"));
        }
    }
    Ok(())
}

/// Which topics a subscriber wants: exact names and name prefixes. Empty
/// means every topic.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TopicFilter {
    topics: BTreeSet<String>,
    prefixes: BTreeSet<String>,
}

impl TopicFilter {
    /// Every topic.
    pub fn all() -> Self {
        Self::default()
    }

    /// Exact topics and prefixes (e.g. `rover.` matches `rover.pose`),
    /// validated; at most [`MAX_FILTER_ENTRIES`] in all.
    pub fn new<T, P>(topics: T, prefixes: P) -> Result<Self, TelemetryError>
    where
        T: IntoIterator,
        T::Item: Into<String>,
        P: IntoIterator,
        P::Item: Into<String>,
    {
        let topics: BTreeSet<String> = topics.into_iter().map(Into::into).collect();
        let prefixes: BTreeSet<String> = prefixes.into_iter().map(Into::into).collect();
        if topics.len() + prefixes.len() > MAX_FILTER_ENTRIES {
            return Err(TelemetryError::InvalidFilter {
                reason: format!("more than {MAX_FILTER_ENTRIES} topics and prefixes"),
            });
        }
        for t in &topics {
            validate_topic(t)?;
        }
        for p in &prefixes {
            let bad = p.is_empty()
                || p.len() > MAX_TOPIC_BYTES
                || !p
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"_-.".contains(&b));
            if bad {
                return Err(TelemetryError::InvalidFilter {
                    reason: format!("prefix {p:?} must be 1 to 128 bytes of a-z, 0-9, '_', '-' and '.'"),
                });
            }
        }
        Ok(Self { topics, prefixes })
    }

    /// Whether `topic` passes.
    pub fn matches(&self, topic: &str) -> bool {
        (self.topics.is_empty() && self.prefixes.is_empty())
            || self.topics.contains(topic)
            || self.prefixes.iter().any(|p| topic.starts_with(p.as_str()))
    }
}

// ---------------------------------------------------------------------------
// Pure parts: the bounded queue, the token bucket, the rate meter

/// A FIFO of at most `capacity` items that drops its oldest to make room.
#[derive(Debug)]
pub(crate) struct DropOldest<T> {
    items: VecDeque<T>,
    capacity: usize,
    dropped: u64,
}

impl<T> DropOldest<T> {
    pub(crate) fn new(capacity: usize) -> Self {
        assert!(capacity > 0, "a queue needs room for one item");
        Self {
            items: VecDeque::with_capacity(capacity.min(64)),
            capacity,
            dropped: 0,
        }
    }

    /// Append; returns the item dropped to make room, if any.
    pub(crate) fn push(&mut self, item: T) -> Option<T> {
        let evicted = if self.items.len() == self.capacity {
            self.dropped += 1;
            self.items.pop_front()
        } else {
            None
        };
        self.items.push_back(item);
        debug_assert!(self.items.len() <= self.capacity);
        evicted
    }

    pub(crate) fn pop(&mut self) -> Option<T> {
        self.items.pop_front()
    }

    /// Take up to `n` items from the front.
    pub(crate) fn drain_up_to(&mut self, n: usize) -> Vec<T> {
        let n = n.min(self.items.len());
        self.items.drain(..n).collect()
    }

    pub(crate) fn len(&self) -> usize {
        self.items.len()
    }

    pub(crate) fn dropped(&self) -> u64 {
        self.dropped
    }
}

/// Token bucket: `rate_hz` tokens a second, at most `burst` saved up.
#[derive(Debug)]
pub(crate) struct TokenBucket {
    rate_hz: f64,
    burst: f64,
    tokens: f64,
    last: Instant,
}

impl TokenBucket {
    pub(crate) fn new(rate_hz: u32, burst: u32, now: Instant) -> Self {
        Self {
            rate_hz: f64::from(rate_hz),
            burst: f64::from(burst.max(1)),
            tokens: f64::from(burst.max(1)),
            last: now,
        }
    }

    /// Take a token if there is one.
    pub(crate) fn try_take(&mut self, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.rate_hz).min(self.burst);
        self.last = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// Observed message rate of one source: counts per window of at least a
/// second; the last full window's rate is reported until the next closes.
#[derive(Debug)]
pub(crate) struct RateMeter {
    window_start: Instant,
    count: u32,
    last_rate_hz: f64,
}

const RATE_WINDOW: Duration = Duration::from_secs(1);

impl RateMeter {
    pub(crate) fn new(now: Instant) -> Self {
        Self {
            window_start: now,
            count: 0,
            last_rate_hz: 0.0,
        }
    }

    pub(crate) fn record(&mut self, now: Instant) {
        self.roll(now);
        self.count = self.count.saturating_add(1);
    }

    fn roll(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.window_start);
        if elapsed >= RATE_WINDOW {
            self.last_rate_hz = f64::from(self.count) / elapsed.as_secs_f64();
            self.count = 0;
            self.window_start = now;
        }
    }

    /// Messages per second, over the last full window (or the current one,
    /// once it is longer than a window: a source that went quiet drops to 0).
    pub(crate) fn rate_hz(&self, now: Instant) -> f64 {
        let elapsed = now.saturating_duration_since(self.window_start);
        if elapsed >= RATE_WINDOW {
            f64::from(self.count) / elapsed.as_secs_f64()
        } else {
            self.last_rate_hz
        }
    }
}

// ---------------------------------------------------------------------------
// The hub

/// Most subscribers one node serves at once (each holds a queue).
pub const MAX_SUBSCRIBERS: usize = 64;

/// The telemetry hub of one node. Cloning is cheap (one `Arc`); every clone
/// is the same hub.
#[derive(Clone)]
pub struct Telemetry {
    hub: Arc<Hub>,
}

impl std::fmt::Debug for Telemetry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Telemetry").field("node_id", &self.hub.node_id).finish()
    }
}

struct Hub {
    node_id: u64,
    /// Tells this run of the daemon from earlier ones, so receivers reset
    /// their duplicate check when a publisher restarts (its `seq` restarts).
    incarnation: u64,
    settings: TelemetrySettings,
    state: Mutex<HubState>,
    next_subscriber: AtomicU64,
}

#[derive(Default)]
struct HubState {
    topics: BTreeMap<String, Topic>,
    subscribers: BTreeMap<u64, Arc<SubscriberShared>>,
    peers: BTreeMap<u64, Arc<PeerQueue>>,
    /// Received messages refused (bad topic, foreign origin, no room).
    received_refused: u64,
}

struct Topic {
    bucket: TokenBucket,
    rate_hz: u32,
    /// Last `seq` this node published on it.
    seq: u64,
    sources: BTreeMap<u64, Source>,
    published: u64,
    received: u64,
    rate_limited: u64,
    subscriber_dropped: u64,
    forward_dropped: u64,
}

struct Source {
    latest: Arc<TelemetryMessage>,
    incarnation: u64,
    meter: RateMeter,
}

struct SubscriberShared {
    filter: TopicFilter,
    queue: Mutex<DropOldest<Arc<TelemetryMessage>>>,
    waker: AtomicWaker,
    closed: AtomicBool,
}

/// Messages waiting to go to one peer.
pub(crate) struct PeerQueue {
    pub(crate) queue: Mutex<DropOldest<Arc<TelemetryMessage>>>,
    pub(crate) ready: tokio::sync::Notify,
    pub(crate) sent: AtomicU64,
    pub(crate) failed: AtomicU64,
}

/// What `GET /v1/telemetry/topics` shows of one topic.
#[derive(Clone, Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct TopicInfo {
    /// Topic name.
    pub topic: String,
    /// Rate limit of publishes on this node, Hz.
    pub rate_limit_hz: u32,
    /// Messages this node published on it.
    pub published: u64,
    /// Messages received from other nodes.
    pub received: u64,
    /// This node's publishes dropped by the rate limit.
    pub rate_limited: u64,
    /// Messages dropped from full subscriber queues on this node.
    pub subscriber_dropped: u64,
    /// This node's messages dropped from full peer queues.
    pub forward_dropped: u64,
    /// Latest message of each publishing node.
    pub sources: Vec<SourceInfo>,
}

/// The latest message of one publishing node on one topic.
#[derive(Clone, Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct SourceInfo {
    /// The publishing node.
    pub node_id: u64,
    /// Its latest `seq`.
    pub seq: u64,
    /// Its latest wall time, ms since the Unix epoch.
    pub wall_time_ms: u64,
    /// Observed message rate, Hz.
    pub rate_hz: f64,
}

/// What `GET /v1/telemetry/topics` shows of one peer link.
#[derive(Clone, Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct PeerInfo {
    /// The peer.
    pub node_id: u64,
    /// Messages waiting to be sent.
    pub queued: usize,
    /// Messages delivered.
    pub sent: u64,
    /// Messages dropped from the full queue.
    pub dropped: u64,
    /// Messages lost to failed or timed-out sends.
    pub failed: u64,
}

/// The whole listing.
#[derive(Clone, Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct TelemetryOverview {
    /// This node.
    pub node_id: u64,
    /// Topics in name order.
    pub topics: Vec<TopicInfo>,
    /// Links to the other members.
    pub peers: Vec<PeerInfo>,
    /// Messages from peers refused (bad topic, wrong origin, no room).
    pub received_refused: u64,
}

fn wall_clock_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // Nothing under these locks can leave the data half-changed.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl HubState {
    /// Put `msg` into every matching subscriber's queue, counting what full
    /// queues drop against the dropped message's topic.
    fn fan_out(&mut self, msg: &Arc<TelemetryMessage>) {
        let mut dropped: Vec<Arc<TelemetryMessage>> = Vec::new();
        for sub in self.subscribers.values() {
            if sub.filter.matches(&msg.topic) {
                if let Some(old) = lock(&sub.queue).push(msg.clone()) {
                    dropped.push(old);
                }
                sub.waker.wake();
            }
        }
        for old in dropped {
            if let Some(t) = self.topics.get_mut(&old.topic) {
                t.subscriber_dropped += 1;
            }
        }
    }
}

impl Telemetry {
    /// A hub for node `node_id`. Publishing only reaches other nodes once
    /// the daemon starts the forwarder; a hub alone is local.
    pub fn new(node_id: u64, settings: TelemetrySettings) -> Result<Self, TelemetryError> {
        settings.validate()?;
        Ok(Self::build(node_id, settings))
    }

    /// A hub with the default settings (which `settings_are_validated`
    /// checks are valid).
    pub fn with_defaults(node_id: u64) -> Self {
        Self::build(node_id, TelemetrySettings::default())
    }

    fn build(node_id: u64, settings: TelemetrySettings) -> Self {
        let incarnation = wall_clock_ms() ^ (u64::from(std::process::id()) << 48);
        Self {
            hub: Arc::new(Hub {
                node_id,
                incarnation,
                settings,
                state: Mutex::new(HubState::default()),
                next_subscriber: AtomicU64::new(1),
            }),
        }
    }

    /// The node this hub publishes as.
    pub fn node_id(&self) -> u64 {
        self.hub.node_id
    }

    /// The settings.
    pub fn settings(&self) -> &TelemetrySettings {
        &self.hub.settings
    }

    /// Publish `payload` on `topic`: delivered to this node's subscribers
    /// at once and queued for every other member. Never blocks. Refused
    /// with an error (and not delivered) when the topic name or size is
    /// wrong, or the topic is over its rate limit (counted).
    pub fn publish(&self, topic: &str, payload: serde_json::Value) -> Result<(), TelemetryError> {
        self.publish_seq(topic, payload).map(|_| ())
    }

    /// [`Telemetry::publish`], returning the message's `seq`.
    pub fn publish_seq(&self, topic: &str, payload: serde_json::Value) -> Result<u64, TelemetryError> {
        validate_topic(topic)?;
        let bytes = serde_json::to_vec(&payload).map(|v| v.len()).unwrap_or(usize::MAX);
        let limit_bytes = self.hub.settings.max_payload_bytes;
        if bytes > limit_bytes {
            return Err(TelemetryError::PayloadTooLarge { bytes, limit_bytes });
        }
        schema::check(topic, &payload)?;
        let now = Instant::now();
        let wall_time_ms = wall_clock_ms();
        let mut st = lock(&self.hub.state);
        let t = self.topic_entry(&mut st, topic, now)?;
        if !t.bucket.try_take(now) {
            t.rate_limited += 1;
            return Err(TelemetryError::RateLimited {
                topic: topic.to_owned(),
                rate_hz: t.rate_hz,
            });
        }
        t.seq += 1;
        t.published += 1;
        let msg = Arc::new(TelemetryMessage {
            topic: topic.to_owned(),
            node_id: self.hub.node_id,
            seq: t.seq,
            wall_time_ms,
            payload,
        });
        let seq = t.seq;
        remember(t, self.hub.incarnation, &msg, now);
        let mut forward_dropped = 0;
        for peer in st.peers.values() {
            if lock(&peer.queue).push(msg.clone()).is_some() {
                forward_dropped += 1;
            }
            peer.ready.notify_one();
        }
        if let Some(t) = st.topics.get_mut(topic) {
            t.forward_dropped += forward_dropped;
        }
        st.fan_out(&msg);
        Ok(seq)
    }

    fn topic_entry<'a>(
        &self,
        st: &'a mut HubState,
        topic: &str,
        now: Instant,
    ) -> Result<&'a mut Topic, TelemetryError> {
        let limit = self.hub.settings.max_topics;
        let known = st.topics.len();
        match st.topics.entry(topic.to_owned()) {
            std::collections::btree_map::Entry::Occupied(e) => Ok(e.into_mut()),
            std::collections::btree_map::Entry::Vacant(_) if known >= limit => {
                Err(TelemetryError::TooManyTopics { limit })
            }
            std::collections::btree_map::Entry::Vacant(e) => {
                let rate_hz = self.hub.settings.rate_for(topic);
                Ok(e.insert(Topic {
                    bucket: TokenBucket::new(rate_hz, self.hub.settings.burst, now),
                    rate_hz,
                    seq: 0,
                    sources: BTreeMap::new(),
                    published: 0,
                    received: 0,
                    rate_limited: 0,
                    subscriber_dropped: 0,
                    forward_dropped: 0,
                }))
            }
        }
    }

    /// Deliver messages node `from` forwarded (from its run `incarnation`)
    /// to this node's subscribers. Never forwards them again. Refuses (and
    /// counts) messages that claim another origin, have a bad topic or an
    /// oversized payload, and drops repeats of a `seq` already seen.
    pub(crate) fn deliver_remote(&self, from: u64, incarnation: u64, messages: Vec<TelemetryMessage>) {
        let now = Instant::now();
        let mut st = lock(&self.hub.state);
        for msg in messages {
            let size_ok = || {
                serde_json::to_vec(&msg.payload)
                    .map(|v| v.len() <= self.hub.settings.max_payload_bytes)
                    .unwrap_or(false)
            };
            if msg.node_id != from
                || msg.node_id == self.hub.node_id
                || validate_topic(&msg.topic).is_err()
                || !size_ok()
                || schema::check(&msg.topic, &msg.payload).is_err()
            {
                st.received_refused += 1;
                tracing::debug!(from, topic = %msg.topic.chars().take(64).collect::<String>(), "refused a forwarded telemetry message");
                continue;
            }
            let Ok(t) = self.topic_entry(&mut st, &msg.topic, now) else {
                st.received_refused += 1;
                continue;
            };
            if let Some(src) = t.sources.get(&from) {
                if src.incarnation == incarnation && msg.seq <= src.latest.seq {
                    // A late copy (e.g. a batch that timed out, then arrived).
                    continue;
                }
            }
            t.received += 1;
            let msg = Arc::new(msg);
            remember(t, incarnation, &msg, now);
            st.fan_out(&msg);
        }
    }

    /// Subscribe to the topics `filter` lets through: the latest message of
    /// every matching topic and source first (in topic, then node order),
    /// then live messages. The stream ends only if the hub is dropped.
    pub fn subscribe(&self, filter: TopicFilter) -> Result<Subscription, TelemetryError> {
        let mut st = lock(&self.hub.state);
        if st.subscribers.len() >= MAX_SUBSCRIBERS {
            return Err(TelemetryError::TooManySubscribers { limit: MAX_SUBSCRIBERS });
        }
        let mut queue = DropOldest::new(self.hub.settings.subscriber_queue);
        for (topic, t) in &st.topics {
            if filter.matches(topic) {
                for src in t.sources.values() {
                    queue.push(src.latest.clone());
                }
            }
        }
        let shared = Arc::new(SubscriberShared {
            filter,
            queue: Mutex::new(queue),
            waker: AtomicWaker::new(),
            closed: AtomicBool::new(false),
        });
        let id = self.hub.next_subscriber.fetch_add(1, Ordering::Relaxed);
        st.subscribers.insert(id, shared.clone());
        Ok(Subscription {
            id,
            shared,
            hub: Arc::downgrade(&self.hub),
        })
    }

    /// Topics, their latest messages and counters, and the peer links.
    pub fn overview(&self) -> TelemetryOverview {
        let now = Instant::now();
        let st = lock(&self.hub.state);
        let topics = st
            .topics
            .iter()
            .map(|(name, t)| TopicInfo {
                topic: name.clone(),
                rate_limit_hz: t.rate_hz,
                published: t.published,
                received: t.received,
                rate_limited: t.rate_limited,
                subscriber_dropped: t.subscriber_dropped,
                forward_dropped: t.forward_dropped,
                sources: t
                    .sources
                    .iter()
                    .map(|(node_id, s)| SourceInfo {
                        node_id: *node_id,
                        seq: s.latest.seq,
                        wall_time_ms: s.latest.wall_time_ms,
                        rate_hz: (s.meter.rate_hz(now) * 10.0).round() / 10.0,
                    })
                    .collect(),
            })
            .collect();
        let peers = st
            .peers
            .iter()
            .map(|(node_id, p)| {
                let q = lock(&p.queue);
                PeerInfo {
                    node_id: *node_id,
                    queued: q.len(),
                    sent: p.sent.load(Ordering::Relaxed),
                    dropped: q.dropped(),
                    failed: p.failed.load(Ordering::Relaxed),
                }
            })
            .collect();
        TelemetryOverview {
            node_id: self.hub.node_id,
            topics,
            peers,
            received_refused: st.received_refused,
        }
    }

    /// Make the peer set exactly `peers` (never this node): new peers get
    /// an empty queue, removed ones lose theirs. Returns the queues of the
    /// peers that are new.
    pub(crate) fn set_peers(&self, peers: &BTreeSet<u64>) -> Vec<(u64, Arc<PeerQueue>)> {
        let mut st = lock(&self.hub.state);
        st.peers.retain(|id, _| peers.contains(id));
        let mut added = Vec::new();
        for id in peers {
            if *id == self.hub.node_id || st.peers.contains_key(id) {
                continue;
            }
            let q = Arc::new(PeerQueue {
                queue: Mutex::new(DropOldest::new(self.hub.settings.peer_queue)),
                ready: tokio::sync::Notify::new(),
                sent: AtomicU64::new(0),
                failed: AtomicU64::new(0),
            });
            st.peers.insert(*id, q.clone());
            added.push((*id, q));
        }
        added
    }

    pub(crate) fn incarnation(&self) -> u64 {
        self.hub.incarnation
    }
}

fn remember(t: &mut Topic, incarnation: u64, msg: &Arc<TelemetryMessage>, now: Instant) {
    let src = t.sources.entry(msg.node_id).or_insert_with(|| Source {
        latest: msg.clone(),
        incarnation,
        meter: RateMeter::new(now),
    });
    src.latest = msg.clone();
    src.incarnation = incarnation;
    src.meter.record(now);
}

impl Drop for Hub {
    fn drop(&mut self) {
        // Wake every subscriber so its stream ends.
        for sub in lock(&self.state).subscribers.values() {
            sub.closed.store(true, Ordering::Release);
            sub.waker.wake();
        }
    }
}

/// A subscription: a [`futures::Stream`] of messages. Dropping it
/// unsubscribes.
pub struct Subscription {
    id: u64,
    shared: Arc<SubscriberShared>,
    hub: Weak<Hub>,
}

impl Subscription {
    /// Messages this subscriber lost because its queue was full.
    pub fn dropped(&self) -> u64 {
        lock(&self.shared.queue).dropped()
    }

    /// The next message, waiting for one; `None` once the hub is gone.
    pub async fn recv(&mut self) -> Option<Arc<TelemetryMessage>> {
        futures::StreamExt::next(self).await
    }

    /// A message if one is queued, without waiting.
    pub fn try_recv(&mut self) -> Option<Arc<TelemetryMessage>> {
        lock(&self.shared.queue).pop()
    }
}

impl futures::Stream for Subscription {
    type Item = Arc<TelemetryMessage>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        // Register first, then look: a push between the two still wakes us.
        self.shared.waker.register(cx.waker());
        if let Some(msg) = lock(&self.shared.queue).pop() {
            return Poll::Ready(Some(msg));
        }
        if self.shared.closed.load(Ordering::Acquire) || self.hub.strong_count() == 0 {
            return Poll::Ready(None);
        }
        Poll::Pending
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        if let Some(hub) = self.hub.upgrade() {
            lock(&hub.state).subscribers.remove(&self.id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn hub(settings: TelemetrySettings) -> Telemetry {
        Telemetry::new(1, settings).unwrap()
    }

    fn fast() -> TelemetrySettings {
        TelemetrySettings {
            rate_hz: 1000,
            burst: 1000,
            ..TelemetrySettings::default()
        }
    }

    #[test]
    fn drop_oldest_keeps_the_newest_and_counts() {
        let mut q = DropOldest::new(3);
        for i in 1..=5 {
            q.push(i);
        }
        assert_eq!(q.dropped(), 2);
        assert_eq!(q.drain_up_to(10), vec![3, 4, 5]);
        assert_eq!(q.pop(), None);
        assert_eq!(q.push(6), None);
        assert_eq!(q.len(), 1);
    }

    #[test]
    fn token_bucket_allows_the_burst_then_the_rate() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(10, 3, t0);
        let first: Vec<bool> = (0..5).map(|_| b.try_take(t0)).collect();
        assert_eq!(first, [true, true, true, false, false]);
        // 10 Hz: one token per 100 ms.
        assert!(!b.try_take(t0 + Duration::from_millis(50)));
        assert!(b.try_take(t0 + Duration::from_millis(105)));
        assert!(!b.try_take(t0 + Duration::from_millis(110)));
        // A long pause saves up at most the burst.
        let later = t0 + Duration::from_secs(60);
        let taken = (0..10).filter(|_| b.try_take(later)).count();
        assert_eq!(taken, 3);
    }

    #[test]
    fn rate_meter_reports_the_last_window_and_decays_when_quiet() {
        let t0 = Instant::now();
        let mut m = RateMeter::new(t0);
        for i in 0..10 {
            m.record(t0 + Duration::from_millis(100 * i));
        }
        m.record(t0 + Duration::from_millis(1000));
        let r = m.rate_hz(t0 + Duration::from_millis(1100));
        assert!((r - 10.0).abs() < 0.01, "{r}");
        let quiet = m.rate_hz(t0 + Duration::from_secs(10));
        assert!(quiet < 0.2, "{quiet}");
    }

    #[test]
    fn topic_names_are_checked() {
        for ok in ["rover.pose", "a", "node.stats", "sim.world-2", "x_y.z9"] {
            assert!(validate_topic(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            ".a",
            "a.",
            "a..b",
            "Rover.pose",
            "a b",
            "a/b",
            "topics",
            &"a".repeat(129),
        ] {
            assert!(validate_topic(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn filters_match_exact_topics_and_prefixes() {
        let f = TopicFilter::new(["sim.world"], ["lab."]).unwrap();
        assert!(f.matches("sim.world") && f.matches("lab.pose"));
        assert!(!f.matches("sim.worlds") && !f.matches("node.stats"));
        assert!(TopicFilter::all().matches("anything"));
        assert!(TopicFilter::new(["Bad"], Vec::<String>::new()).is_err());
        assert!(TopicFilter::new(Vec::<String>::new(), ["a b"]).is_err());
        let many: Vec<String> = (0..33).map(|i| format!("t{i}")).collect();
        assert!(TopicFilter::new(many, Vec::<String>::new()).is_err());
    }

    #[tokio::test]
    async fn subscriber_gets_latest_first_then_live_in_order() {
        let t = hub(fast());
        t.publish("lab.pose", json!({"x_m": 1})).unwrap();
        t.publish("lab.pose", json!({"x_m": 2})).unwrap();
        t.publish("node.stats", json!({"load1": 0.5})).unwrap();
        let mut sub = t
            .subscribe(TopicFilter::new(["lab.pose"], Vec::<String>::new()).unwrap())
            .unwrap();
        let first = sub.recv().await.unwrap();
        assert_eq!((first.seq, first.payload["x_m"].as_i64()), (2, Some(2)));
        assert!(sub.try_recv().is_none(), "only the latest value, only matching topics");
        for x in 3..=5 {
            t.publish("lab.pose", json!({"x_m": x})).unwrap();
        }
        let seqs: Vec<u64> = [sub.recv().await, sub.recv().await, sub.recv().await]
            .into_iter()
            .map(|m| m.unwrap().seq)
            .collect();
        assert_eq!(seqs, [3, 4, 5]);
        assert_eq!(first.node_id, 1);
    }

    #[test]
    fn a_slow_subscriber_loses_its_oldest_messages_and_counts_them() {
        let t = hub(TelemetrySettings {
            subscriber_queue: 4,
            ..fast()
        });
        let mut sub = t.subscribe(TopicFilter::all()).unwrap();
        for i in 1..=10 {
            t.publish("lab.pose", json!(i)).unwrap();
        }
        assert_eq!(sub.dropped(), 6);
        let got: Vec<u64> = std::iter::from_fn(|| sub.try_recv()).map(|m| m.seq).collect();
        assert_eq!(got, [7, 8, 9, 10]);
        let o = t.overview();
        assert_eq!(o.topics[0].subscriber_dropped, 6);
        assert_eq!(o.topics[0].published, 10);
    }

    #[test]
    fn publishes_over_the_rate_are_dropped_and_counted() {
        let t = hub(TelemetrySettings {
            rate_hz: 5,
            burst: 2,
            topic_rate_hz: [("lab.world".to_owned(), 1)].into(),
            ..TelemetrySettings::default()
        });
        let results: Vec<bool> = (0..6).map(|i| t.publish("lab.pose", json!(i)).is_ok()).collect();
        assert_eq!(results, [true, true, false, false, false, false]);
        let err = t.publish("lab.pose", json!(0)).unwrap_err();
        assert!(matches!(err, TelemetryError::RateLimited { rate_hz: 5, .. }), "{err}");
        let o = t.overview();
        let pose = o.topics.iter().find(|x| x.topic == "lab.pose").unwrap();
        assert_eq!((pose.published, pose.rate_limited, pose.rate_limit_hz), (2, 5, 5));
        t.publish("lab.world", json!({})).unwrap();
        let o = t.overview();
        assert_eq!(
            o.topics.iter().find(|x| x.topic == "lab.world").unwrap().rate_limit_hz,
            1
        );
    }

    #[test]
    fn oversized_payloads_and_too_many_topics_are_refused() {
        let t = hub(TelemetrySettings {
            max_payload_bytes: 64,
            max_topics: 2,
            ..fast()
        });
        let err = t.publish("a", json!("x".repeat(100))).unwrap_err();
        assert!(
            matches!(err, TelemetryError::PayloadTooLarge { limit_bytes: 64, .. }),
            "{err}"
        );
        t.publish("a", json!(1)).unwrap();
        t.publish("b", json!(1)).unwrap();
        assert_eq!(
            t.publish("c", json!(1)).unwrap_err(),
            TelemetryError::TooManyTopics { limit: 2 }
        );
        assert!(t.overview().topics.iter().all(|x| x.topic != "c"));
    }

    #[test]
    fn remote_messages_are_delivered_once_and_never_forwarded() {
        let t = hub(fast());
        let peer_queues = t.set_peers(&[2, 3].into());
        assert_eq!(peer_queues.len(), 2);
        let mut sub = t.subscribe(TopicFilter::all()).unwrap();
        let m = |node_id, seq| TelemetryMessage {
            topic: "lab.pose".into(),
            node_id,
            seq,
            wall_time_ms: 0,
            payload: json!(seq),
        };
        t.deliver_remote(2, 7, vec![m(2, 1), m(2, 2), m(2, 2), m(2, 1), m(3, 9), m(1, 4)]);
        let got: Vec<(u64, u64)> = std::iter::from_fn(|| sub.try_recv())
            .map(|m| (m.node_id, m.seq))
            .collect();
        assert_eq!(got, [(2, 1), (2, 2)], "repeats and foreign origins are dropped");
        assert_eq!(t.overview().received_refused, 2);
        for (_, q) in &peer_queues {
            assert_eq!(lock(&q.queue).len(), 0, "a received message is not forwarded");
        }
        tracing::info!("a restarted publisher (new incarnation) starts again at seq 1");
        t.deliver_remote(2, 8, vec![m(2, 1)]);
        assert_eq!(sub.try_recv().map(|m| m.seq), Some(1));
        tracing::info!("local publishes go to every peer queue");
        t.publish("lab.pose", json!(1)).unwrap();
        for (_, q) in &peer_queues {
            assert_eq!(lock(&q.queue).len(), 1);
        }
    }

    #[test]
    fn latest_value_is_kept_per_source() {
        let t = hub(fast());
        t.publish("node.stats", json!({"n": 1})).unwrap();
        let remote = TelemetryMessage {
            topic: "node.stats".into(),
            node_id: 2,
            seq: 5,
            wall_time_ms: 0,
            payload: json!({"n": 2}),
        };
        t.deliver_remote(2, 1, vec![remote]);
        let mut sub = t.subscribe(TopicFilter::all()).unwrap();
        let got: Vec<u64> = std::iter::from_fn(|| sub.try_recv()).map(|m| m.node_id).collect();
        assert_eq!(got, [1, 2]);
    }

    #[test]
    fn subscribers_are_bounded_and_removed_on_drop() {
        let t = hub(fast());
        let subs: Vec<_> = (0..MAX_SUBSCRIBERS)
            .map(|_| t.subscribe(TopicFilter::all()).unwrap())
            .collect();
        assert!(matches!(
            t.subscribe(TopicFilter::all()),
            Err(TelemetryError::TooManySubscribers { .. })
        ));
        drop(subs);
        assert!(t.subscribe(TopicFilter::all()).is_ok());
    }

    #[test]
    fn settings_are_validated() {
        assert!(TelemetrySettings::default().validate().is_ok());
        let bad = TelemetrySettings {
            rate_hz: 0,
            ..TelemetrySettings::default()
        };
        assert!(matches!(
            bad.validate(),
            Err(TelemetryError::Config {
                key: "telemetry.rate_hz",
                ..
            })
        ));
        let bad = TelemetrySettings {
            topic_rate_hz: [("Bad Topic".to_owned(), 3)].into(),
            ..TelemetrySettings::default()
        };
        assert!(bad.validate().is_err());
    }
}
