//! The pure parts of the hub: the bounded queue, the token bucket and the
//! rate meter (every hub structure is behind `cairn_raft::sync::lock`).

use std::collections::VecDeque;
use std::time::Duration;

use tokio::time::Instant;

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
