//! Retry with exponential backoff and full jitter, and a circuit breaker, for
//! every call an agent makes across the network.
//!
//! Small and local rather than a crate: both must run on `tokio::time` (so
//! paused-clock tests drive them) and take their randomness from an injected,
//! seedable RNG, and the breaker is consulted from synchronous code as well;
//! the crates we looked at (`backon`, `failsafe`) own their timers or their
//! RNG.

use std::future::Future;
use std::time::Duration;

use rand::Rng;
use tokio::time::Instant;

use crate::error::Error;

/// Exponential backoff with full jitter (AWS architecture blog, "Exponential
/// Backoff And Jitter"): attempt `n` (0-based) waits a uniformly random time
/// in `0..=min(max, base · 2ⁿ)`, so many clients retrying at once spread out
/// instead of colliding again.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Backoff {
    /// Cap of the first delay.
    pub base_ms: u64,
    /// Cap of every delay.
    pub max_ms: u64,
}

impl Backoff {
    /// The cap for attempt `attempt` (0-based): `min(max, base · 2^attempt)`.
    pub fn ceiling_ms(&self, attempt: u32) -> u64 {
        let factor = 1u64.checked_shl(attempt).unwrap_or(u64::MAX);
        self.base_ms.saturating_mul(factor).min(self.max_ms)
    }

    /// A jittered delay for attempt `attempt`.
    pub fn delay(&self, attempt: u32, rng: &mut impl Rng) -> Duration {
        Duration::from_millis(rng.random_range(0..=self.ceiling_ms(attempt)))
    }
}

/// Bounded retries of one operation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Retry {
    /// Attempts in all, the first included.
    pub max_attempts: u32,
    /// Delay between attempts.
    pub backoff: Backoff,
}

impl Retry {
    /// Runs `op` until it succeeds, fails with an error that is not
    /// retryable, or `max_attempts` are spent.
    pub async fn run<T, F, Fut>(&self, what: &'static str, rng: &mut impl Rng, mut op: F) -> Result<T, Error>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, Error>>,
    {
        let mut attempt = 0;
        loop {
            match op().await {
                Ok(v) => return Ok(v),
                Err(e) if !e.is_retryable() => return Err(e),
                Err(e) => {
                    attempt += 1;
                    if attempt >= self.max_attempts {
                        return Err(Error::RetriesExhausted {
                            what,
                            attempts: attempt,
                            last: Box::new(e),
                        });
                    }
                    let delay = self.backoff.delay(attempt - 1, rng);
                    tracing::debug!(what, attempt, delay_ms = delay.as_millis() as u64, error = %e, "retrying");
                    tokio::time::sleep(delay).await;
                }
            }
        }
    }
}

/// Where a [`CircuitBreaker`] stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum BreakerState {
    /// Calls go through; failures are counted.
    Closed,
    /// Calls are refused until the recovery timeout passes.
    Open,
    /// One probe call is let through; its outcome closes or reopens.
    HalfOpen,
}

/// The circuit breaker from the rover guide: after `failure_threshold`
/// consecutive failures it opens and refuses calls for `recovery_timeout`,
/// then lets one probe through (half-open); a success closes it, a failure
/// opens it again. Keeps a dead leader from being hammered and callers from
/// waiting on timeouts that are sure to expire.
#[derive(Clone, Debug)]
pub struct CircuitBreaker {
    failure_threshold: u32,
    recovery_timeout: Duration,
    failures: u32,
    state: BreakerState,
    opened_at: Option<Instant>,
    probe_in_flight: bool,
}

impl CircuitBreaker {
    /// A closed breaker.
    pub fn new(failure_threshold: u32, recovery_timeout: Duration) -> Self {
        Self {
            failure_threshold: failure_threshold.max(1),
            recovery_timeout,
            failures: 0,
            state: BreakerState::Closed,
            opened_at: None,
            probe_in_flight: false,
        }
    }

    /// The state at `now` (an open breaker whose timeout passed reads as
    /// half-open).
    pub fn state(&self, now: Instant) -> BreakerState {
        match (self.state, self.opened_at) {
            (BreakerState::Open, Some(at)) if now.duration_since(at) >= self.recovery_timeout => BreakerState::HalfOpen,
            (state, _) => state,
        }
    }

    /// Asks to make a call at `now`: `Ok` to go ahead (then report the
    /// outcome with [`CircuitBreaker::on_success`] or
    /// [`CircuitBreaker::on_failure`]), `Err(wait)` if refused.
    pub fn try_acquire(&mut self, now: Instant) -> Result<(), Duration> {
        match self.state(now) {
            BreakerState::Closed => Ok(()),
            BreakerState::Open => {
                let since = self.opened_at.map(|at| now.duration_since(at)).unwrap_or_default();
                Err(self.recovery_timeout.saturating_sub(since))
            }
            BreakerState::HalfOpen if self.probe_in_flight => Err(self.recovery_timeout),
            BreakerState::HalfOpen => {
                self.state = BreakerState::HalfOpen;
                self.probe_in_flight = true;
                Ok(())
            }
        }
    }

    /// The call succeeded: close.
    pub fn on_success(&mut self) {
        self.failures = 0;
        self.state = BreakerState::Closed;
        self.opened_at = None;
        self.probe_in_flight = false;
    }

    /// The call failed at `now`: count it; open at the threshold, or at once
    /// if it was the half-open probe.
    pub fn on_failure(&mut self, now: Instant) {
        self.failures = self.failures.saturating_add(1);
        let probe_failed = self.state == BreakerState::HalfOpen;
        self.probe_in_flight = false;
        if probe_failed || self.failures >= self.failure_threshold {
            if self.state != BreakerState::Open {
                tracing::debug!(failures = self.failures, "circuit breaker opens");
            }
            self.state = BreakerState::Open;
            self.opened_at = Some(now);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::StdRng;
    use rand::SeedableRng;

    #[test]
    fn backoff_ceiling_doubles_caps_and_jitter_stays_below_it() {
        let b = Backoff {
            base_ms: 50,
            max_ms: 1000,
        };
        let ceilings: Vec<u64> = (0..7).map(|a| b.ceiling_ms(a)).collect();
        assert_eq!(ceilings, [50, 100, 200, 400, 800, 1000, 1000]);
        assert_eq!(b.ceiling_ms(200), 1000, "no overflow");
        let mut rng = StdRng::seed_from_u64(7);
        let mut seen_low = false;
        for attempt in 0..10 {
            for _ in 0..50 {
                let d = b.delay(attempt, &mut rng).as_millis() as u64;
                assert!(d <= b.ceiling_ms(attempt), "attempt {attempt} delay {d}");
                seen_low |= d < b.ceiling_ms(attempt) / 2;
            }
        }
        assert!(seen_low, "full jitter reaches down to zero");
    }

    #[tokio::test(start_paused = true)]
    async fn retry_stops_at_success_at_a_fatal_error_and_at_the_bound() {
        let retry = Retry {
            max_attempts: 4,
            backoff: Backoff {
                base_ms: 100,
                max_ms: 1000,
            },
        };
        let mut rng = StdRng::seed_from_u64(1);
        let mut calls = 0;
        let out = retry
            .run("flaky", &mut rng, || {
                calls += 1;
                let n = calls;
                async move {
                    if n < 3 {
                        Err(Error::Raft(cairn_raft::Error::NoLeader))
                    } else {
                        Ok(n)
                    }
                }
            })
            .await
            .unwrap();
        assert_eq!(out, 3);

        let mut calls = 0;
        let err = retry
            .run("fatal", &mut rng, || {
                calls += 1;
                async {
                    Err::<(), _>(Error::Command(cairn_state::CommandError::NodeDown {
                        node_id: cairn_state::NodeId(1),
                    }))
                }
            })
            .await
            .unwrap_err();
        assert_eq!(calls, 1, "a refusal is not retried: {err}");

        let started = Instant::now();
        let err = retry
            .run("down", &mut rng, || async {
                Err::<(), _>(Error::Raft(cairn_raft::Error::NoLeader))
            })
            .await
            .unwrap_err();
        assert!(matches!(err, Error::RetriesExhausted { attempts: 4, .. }), "{err}");
        assert!(
            started.elapsed() <= Duration::from_millis(100 + 200 + 400),
            "bounded total delay"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn breaker_opens_half_opens_and_closes() {
        let mut b = CircuitBreaker::new(3, Duration::from_secs(1));
        let t0 = Instant::now();
        for _ in 0..2 {
            b.try_acquire(t0).unwrap();
            b.on_failure(t0);
        }
        assert_eq!(b.state(t0), BreakerState::Closed, "below the threshold");
        b.try_acquire(t0).unwrap();
        b.on_failure(t0);
        assert_eq!(b.state(t0), BreakerState::Open);
        let wait = b.try_acquire(t0 + Duration::from_millis(400)).unwrap_err();
        assert_eq!(wait, Duration::from_millis(600));

        tokio::time::advance(Duration::from_secs(1)).await;
        let t1 = Instant::now();
        assert_eq!(b.state(t1), BreakerState::HalfOpen);
        b.try_acquire(t1).unwrap();
        assert!(b.try_acquire(t1).is_err(), "one probe at a time");
        b.on_failure(t1);
        assert_eq!(b.state(t1), BreakerState::Open, "a failed probe reopens");

        let t2 = t1 + Duration::from_secs(1);
        b.try_acquire(t2).unwrap();
        b.on_success();
        assert_eq!(b.state(t2), BreakerState::Closed);
        b.try_acquire(t2).unwrap();
        b.on_failure(t2);
        assert_eq!(b.state(t2), BreakerState::Closed, "a success reset the count");
    }
}
