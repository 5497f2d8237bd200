//! What a node prints on stderr: plain text (the default) or one JSON
//! object per line (`--log-format json`, `CAIRN_LOG_FORMAT=json` or
//! `[tracing] log_format = "json"`), and a limit on repeated warnings about
//! one peer.
//!
//! # Why a limit on peer warnings
//! While a peer is down, openraft warns about it on every heartbeat and
//! every replication retry: some 30–40 lines a second on the leader, which
//! bury everything else in the journal. The warnings come from openraft
//! (vendor/, not ours to change), so the limit sits where the lines are
//! printed: [`PeerWarnLimiter`], a per-layer filter on the stderr layer,
//! lets one warning per call site and peer through every
//! [`PEER_WARN_INTERVAL`] and counts the rest; a background thread then
//! says how many were suppressed (one `warn` per call site and peer).
//! Span export (OTLP) is not filtered by it.
//!
//! The library installs nothing: the binary builds its subscriber from
//! [`stderr_layer`] (house rule: only the binary installs a subscriber).

use std::collections::HashMap;
use std::str::FromStr;
use std::sync::Arc;
use std::sync::Mutex;
use std::time::Duration;
use std::time::Instant;

use tracing::callsite::Identifier;
use tracing::field::Field;
use tracing::field::Visit;
use tracing::Event;
use tracing::Level;
use tracing::Metadata;
use tracing::Subscriber;
use tracing_subscriber::layer::Context;
use tracing_subscriber::layer::Filter;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::Layer;

/// The environment variable naming the log format (`plain` or `json`).
pub const LOG_FORMAT_ENV: &str = "CAIRN_LOG_FORMAT";

/// At most one warning per call site and peer in this interval; the rest
/// are counted and reported once per interval. Five seconds: a dead peer
/// still shows up at once and stays visible, at 1/150th of the volume.
pub const PEER_WARN_INTERVAL: Duration = Duration::from_secs(5);

/// Call sites × peers the limiter remembers. Bounded so a flood of
/// distinct call sites cannot grow it without end; past it, warnings pass
/// unlimited (better too many lines than lost ones).
const MAX_TRACKED: usize = 4096;

/// The target of the limiter's own "suppressed" lines (never limited).
const SUMMARY_TARGET: &str = "cairn::logging";

/// How log lines are written.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable text (ANSI colour only on a terminal).
    #[default]
    Plain,
    /// One JSON object per line: `timestamp`, `level`, `target`,
    /// `message`, the event's fields, and the current span.
    Json,
}

/// A log format name that is neither `plain` nor `json`.
#[derive(Debug, thiserror::Error)]
#[error("unknown log format {given:?}: expected plain or json")]
pub struct UnknownLogFormat {
    /// What was given.
    pub given: String,
}

impl FromStr for LogFormat {
    type Err = UnknownLogFormat;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "plain" | "text" => Ok(Self::Plain),
            "json" => Ok(Self::Json),
            _ => Err(UnknownLogFormat { given: s.to_string() }),
        }
    }
}

impl LogFormat {
    /// The format `CAIRN_LOG_FORMAT` names, if it is set and not empty.
    pub fn from_env() -> Result<Option<Self>, UnknownLogFormat> {
        match std::env::var(LOG_FORMAT_ENV) {
            Ok(v) if !v.trim().is_empty() => v.parse().map(Some),
            _ => Ok(None),
        }
    }
}

/// The stderr layer in `format`, with `ansi` colour (plain only) and the
/// peer-warning limit. Starts the limiter's reporting thread: call once.
pub fn stderr_layer<S>(format: LogFormat, ansi: bool) -> Box<dyn Layer<S> + Send + Sync>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    let limiter = PeerWarnLimiter::new(PEER_WARN_INTERVAL);
    limiter.start_reporting();
    match format {
        LogFormat::Plain => tracing_subscriber::fmt::layer()
            .with_writer(std::io::stderr)
            .with_ansi(ansi)
            .with_filter(limiter)
            .boxed(),
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .json()
            // `message` and the event's fields at the top level, next to
            // `level` and `target` (what log shippers expect).
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .with_writer(std::io::stderr)
            .with_filter(limiter)
            .boxed(),
    }
}

/// What the limiter remembers of one call site and peer.
struct Slot {
    /// When a warning last went through.
    passed_at: Instant,
    /// Warnings held back since the last report.
    suppressed: u64,
    target: &'static str,
}

/// Lets through at most one warning per call site and peer every
/// interval (see the module docs). Cheap clones share the counts.
#[derive(Clone)]
pub struct PeerWarnLimiter {
    interval: Duration,
    slots: Arc<Mutex<HashMap<(Identifier, u64), Slot>>>,
}

impl PeerWarnLimiter {
    /// A limiter with this interval.
    pub fn new(interval: Duration) -> Self {
        Self {
            interval,
            slots: Arc::default(),
        }
    }

    /// Whether a warning from `meta` about `peer` goes through now.
    pub fn admit(&self, meta: &'static Metadata<'static>, peer: u64, now: Instant) -> bool {
        let mut slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
        let key = (meta.callsite(), peer);
        if let Some(slot) = slots.get_mut(&key) {
            if now.saturating_duration_since(slot.passed_at) < self.interval {
                slot.suppressed += 1;
                return false;
            }
            slot.passed_at = now;
            return true;
        }
        if slots.len() < MAX_TRACKED {
            slots.insert(
                key,
                Slot {
                    passed_at: now,
                    suppressed: 0,
                    target: meta.target(),
                },
            );
        }
        true
    }

    /// The counts held back since the last call, as (target, peer,
    /// suppressed), and forget slots quiet for two intervals.
    pub fn take_suppressed(&self, now: Instant) -> Vec<(&'static str, u64, u64)> {
        let mut slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
        let mut out = Vec::new();
        for ((_, peer), slot) in slots.iter_mut() {
            if slot.suppressed > 0 {
                out.push((slot.target, *peer, slot.suppressed));
                slot.suppressed = 0;
            }
        }
        let forget_after = self.interval * 2;
        slots.retain(|_, s| s.suppressed > 0 || now.saturating_duration_since(s.passed_at) < forget_after);
        out.sort_unstable();
        out
    }

    /// A thread that reports the suppressed counts every interval. A
    /// thread, not a task: logging must work outside a runtime too.
    fn start_reporting(&self) {
        let me = self.clone();
        let spawned = std::thread::Builder::new()
            .name("log-limit".into())
            .spawn(move || loop {
                std::thread::sleep(me.interval);
                for (source, peer, n) in me.take_suppressed(Instant::now()) {
                    tracing::warn!(
                        target: SUMMARY_TARGET,
                        peer,
                        source,
                        suppressed = n,
                        "{n} similar warnings about peer {peer} suppressed in the last {} s",
                        me.interval.as_secs()
                    );
                }
            });
        if let Err(e) = spawned {
            tracing::warn!(error = %e, "cannot start the log limiter's thread: suppressed warnings go uncounted");
        }
    }
}

impl<S> Filter<S> for PeerWarnLimiter {
    fn enabled(&self, _meta: &Metadata<'_>, _cx: &Context<'_, S>) -> bool {
        true
    }

    fn event_enabled(&self, event: &Event<'_>, _cx: &Context<'_, S>) -> bool {
        let meta = event.metadata();
        if *meta.level() != Level::WARN || meta.target() == SUMMARY_TARGET {
            return true;
        }
        let mut peer = PeerOf::default();
        event.record(&mut peer);
        match peer.peer {
            Some(p) => self.admit(meta, p, Instant::now()),
            None => true,
        }
    }
}

/// Finds the peer an event is about: a `peer` field, else `target=N` or
/// `peer N` in its message (openraft's wording).
#[derive(Default)]
struct PeerOf {
    peer: Option<u64>,
}

impl PeerOf {
    fn set(&mut self, p: Option<u64>) {
        if self.peer.is_none() {
            self.peer = p;
        }
    }
}

impl Visit for PeerOf {
    fn record_u64(&mut self, field: &Field, value: u64) {
        if field.name() == "peer" {
            self.peer = Some(value);
        }
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        if field.name() == "peer" {
            self.peer = u64::try_from(value).ok();
        }
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        match field.name() {
            "peer" => self.set(value.trim().parse().ok()),
            "message" => self.set(peer_in_message(value)),
            _ => {}
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        match field.name() {
            "peer" => self.set(format!("{value:?}").trim_matches('"').parse().ok()),
            "message" => self.set(peer_in_message(&format!("{value:?}"))),
            _ => {}
        }
    }
}

/// The peer id after `target=`, `peer=` or `peer ` in `msg`, if any.
pub fn peer_in_message(msg: &str) -> Option<u64> {
    ["target=", "peer=", "peer "].iter().find_map(|pat| {
        msg.match_indices(pat).find_map(|(i, _)| {
            let rest = &msg[i + pat.len()..];
            let digits: &str = &rest[..rest.find(|c: char| !c.is_ascii_digit()).unwrap_or(rest.len())];
            digits.parse().ok()
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_peer_in_openraft_wording() {
        assert_eq!(
            peer_in_message("HeartbeatWorker(id=1, target=3) failed to send a heartbeat"),
            Some(3)
        );
        assert_eq!(
            peer_in_message("update progress error: Unreachable node: CallError: peer 12 unreachable"),
            Some(12)
        );
        assert_eq!(peer_in_message("peer connection closed"), None);
    }

    #[test]
    fn log_format_parses() {
        assert_eq!("JSON".parse::<LogFormat>().ok(), Some(LogFormat::Json));
        assert_eq!("plain".parse::<LogFormat>().ok(), Some(LogFormat::Plain));
        assert!("xml".parse::<LogFormat>().is_err());
    }
}
