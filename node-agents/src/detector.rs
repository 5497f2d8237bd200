//! The leader-local failure detector: heartbeats in, verdicts out.
//!
//! Pure bookkeeping over `tokio::time::Instant`s the caller passes in, so
//! tests drive it with a paused clock. Heartbeats are not replicated (a log
//! entry per heartbeat per node would dwarf the real writes); only the
//! coordinator's verdicts are, as `SetLiveness` commands.

use std::collections::BTreeMap;
use std::time::Duration;

use cairn_state::Liveness;
use cairn_state::NodeId;
use tokio::time::Instant;

/// Judges nodes by how long they have been silent.
#[derive(Clone, Debug)]
pub struct FailureDetector {
    suspect_after: Duration,
    down_after: Duration,
    started: Instant,
    last_heard: BTreeMap<NodeId, Instant>,
}

impl FailureDetector {
    /// A detector that starts counting at `now` (when this node became
    /// leader): a node it has not heard from yet is treated as last heard at
    /// `now`, and it gives no verdict but `Up` until a full `down_after` has
    /// passed, so a new leader never declares everyone dead on takeover.
    pub fn new(suspect_after: Duration, down_after: Duration, now: Instant) -> Self {
        debug_assert!(suspect_after < down_after);
        Self {
            suspect_after,
            down_after,
            started: now,
            last_heard: BTreeMap::new(),
        }
    }

    /// Records a heartbeat from `node` at `now`.
    pub fn heartbeat(&mut self, node: NodeId, now: Instant) {
        let at = self.last_heard.entry(node).or_insert(now);
        *at = (*at).max(now);
    }

    /// Whether the grace period after takeover is over at `now`.
    pub fn judging(&self, now: Instant) -> bool {
        now.duration_since(self.started) >= self.down_after
    }

    /// How long `node` has been silent at `now` (since takeover if never heard).
    pub fn silence(&self, node: NodeId, now: Instant) -> Duration {
        let last = self
            .last_heard
            .get(&node)
            .copied()
            .unwrap_or(self.started)
            .max(self.started);
        now.saturating_duration_since(last)
    }

    /// When `node`'s latest recorded heartbeat arrived, if it sent one
    /// since takeover.
    pub fn last_heard(&self, node: NodeId) -> Option<Instant> {
        self.last_heard.get(&node).copied()
    }

    /// Whether `node` has heartbeated since takeover.
    pub fn heard_from(&self, node: NodeId) -> bool {
        self.last_heard.contains_key(&node)
    }

    /// The verdict on `node` at `now`, or `None` while still in the grace
    /// period and not heard from (no opinion yet).
    pub fn verdict(&self, node: NodeId, now: Instant) -> Option<Liveness> {
        let silence = self.silence(node, now);
        if !self.judging(now) {
            // During grace only good news counts.
            return (self.heard_from(node) && silence < self.suspect_after).then_some(Liveness::Up);
        }
        Some(if silence >= self.down_after {
            Liveness::Down
        } else if silence >= self.suspect_after {
            Liveness::Suspect
        } else {
            Liveness::Up
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SUSPECT: Duration = Duration::from_millis(1500);
    const DOWN: Duration = Duration::from_millis(3000);

    async fn advance_ms(ms: u64) {
        tokio::time::advance(Duration::from_millis(ms)).await;
    }

    #[tokio::test(start_paused = true)]
    async fn silent_node_goes_up_suspect_down_and_back_up() {
        let a = NodeId(1);
        let mut d = FailureDetector::new(SUSPECT, DOWN, Instant::now());
        d.heartbeat(a, Instant::now());
        advance_ms(3000).await;
        d.heartbeat(a, Instant::now());
        assert_eq!(d.verdict(a, Instant::now()), Some(Liveness::Up));
        advance_ms(1499).await;
        assert_eq!(d.verdict(a, Instant::now()), Some(Liveness::Up));
        advance_ms(1).await;
        assert_eq!(d.verdict(a, Instant::now()), Some(Liveness::Suspect));
        advance_ms(1499).await;
        assert_eq!(d.verdict(a, Instant::now()), Some(Liveness::Suspect));
        advance_ms(1).await;
        assert_eq!(d.verdict(a, Instant::now()), Some(Liveness::Down));
        d.heartbeat(a, Instant::now());
        assert_eq!(
            d.verdict(a, Instant::now()),
            Some(Liveness::Up),
            "a heartbeat revives it"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn new_leader_waits_a_full_timeout_before_judging() {
        let (a, b) = (NodeId(1), NodeId(2));
        let mut d = FailureDetector::new(SUSPECT, DOWN, Instant::now());
        assert_eq!(d.verdict(a, Instant::now()), None, "no opinion at takeover");
        advance_ms(2000).await;
        d.heartbeat(b, Instant::now());
        assert_eq!(d.verdict(a, Instant::now()), None, "silent for 2 s, but still in grace");
        assert_eq!(d.verdict(b, Instant::now()), Some(Liveness::Up));
        advance_ms(999).await;
        assert!(!d.judging(Instant::now()));
        advance_ms(1).await;
        assert!(d.judging(Instant::now()));
        assert_eq!(
            d.verdict(a, Instant::now()),
            Some(Liveness::Down),
            "never heard in a full timeout since takeover"
        );
        assert_eq!(d.verdict(b, Instant::now()), Some(Liveness::Up));
    }

    #[tokio::test(start_paused = true)]
    async fn old_heartbeats_never_move_last_heard_back() {
        let a = NodeId(1);
        let mut d = FailureDetector::new(SUSPECT, DOWN, Instant::now());
        let early = Instant::now();
        advance_ms(3000).await;
        d.heartbeat(a, Instant::now());
        d.heartbeat(a, early);
        assert_eq!(d.silence(a, Instant::now()), Duration::ZERO);
    }
}
