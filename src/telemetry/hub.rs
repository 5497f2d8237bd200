//! The hub one daemon owns: topics, per-topic rate limits, the latest
//! value of each topic and source, subscribers with bounded drop-oldest
//! queues.

use std::collections::BTreeMap;
use std::collections::BTreeSet;
use std::pin::Pin;
use std::sync::atomic::AtomicBool;
use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::Weak;
use std::task::Context;
use std::task::Poll;

use futures::task::AtomicWaker;
use serde::Deserialize;
use serde::Serialize;
use tokio::time::Instant;

use super::queue::DropOldest;
use super::queue::RateMeter;
use super::queue::TokenBucket;
use super::schema;
use super::topic::validate_topic;
use super::topic::TopicFilter;
use super::TelemetryError;
use super::TelemetryMessage;
use super::TelemetrySettings;
use cairn_raft::sync::lock;
use cairn_raft::WallClock;

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
        let incarnation = WallClock::SYSTEM.now_ms() ^ (u64::from(std::process::id()) << 48);
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
        let wall_time_ms = WallClock::SYSTEM.now_ms();
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
