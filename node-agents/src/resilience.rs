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

use cairn_raft::RetryPolicy;

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

/// Bounded retries of one operation, on cairn-raft's one retry policy
/// ([`cairn_raft::retry`]): one deadline and a number of attempts bound
/// the loop, and an attempt whose outcome is unknown (a write that timed
/// out after it was sent) is retried only by [`Retry::run_tagged`], whose
/// caller puts the same client tag on every attempt.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Retry {
    /// Attempts in all, the first included.
    pub max_attempts: u32,
    /// Time for all attempts and the waits between them.
    pub deadline: Duration,
    /// Delay between attempts (the policy's equal jitter within its caps).
    pub backoff: Backoff,
}

impl Retry {
    fn policy(&self) -> RetryPolicy {
        RetryPolicy {
            max_attempts: self.max_attempts,
            deadline: self.deadline,
            backoff_min: Duration::from_millis(self.backoff.base_ms),
            backoff_max: Duration::from_millis(self.backoff.max_ms),
        }
    }

    /// Runs `op` until it succeeds, fails with an error that is not safe to
    /// retry, or the attempts or the deadline are spent. `op` gets the
    /// loop's deadline (pass it on to an inner loop, so the two share it).
    /// For requests without a client tag: an unknown outcome ends the loop.
    pub async fn run<T, F, Fut>(&self, what: &'static str, rng: &mut impl Rng, op: F) -> Result<T, Error>
    where
        F: FnMut(Instant) -> Fut,
        Fut: Future<Output = Result<T, Error>>,
    {
        self.run_as(what, false, rng, op).await
    }

    /// [`Retry::run`] for a request that carries the same client tag on
    /// every attempt: an unknown outcome is retried too (the tag makes the
    /// retry return the first outcome instead of applying twice).
    pub async fn run_tagged<T, F, Fut>(&self, what: &'static str, rng: &mut impl Rng, op: F) -> Result<T, Error>
    where
        F: FnMut(Instant) -> Fut,
        Fut: Future<Output = Result<T, Error>>,
    {
        self.run_as(what, true, rng, op).await
    }

    async fn run_as<T, F, Fut>(
        &self,
        what: &'static str,
        tagged: bool,
        rng: &mut impl Rng,
        mut op: F,
    ) -> Result<T, Error>
    where
        F: FnMut(Instant) -> Fut,
        Fut: Future<Output = Result<T, Error>>,
    {
        let policy = self.policy();
        let mut tries = policy.start_seeded(Instant::now() + policy.deadline, rng.random());
        loop {
            let e = match op(tries.deadline()).await {
                Ok(v) => return Ok(v),
                Err(e) => e,
            };
            let class = e.retry_class();
            if !class.may_retry(tagged) {
                return Err(e);
            }
            if !tries.retry(class, tagged).await {
                return Err(Error::RetriesExhausted {
                    what,
                    attempts: tries.made(),
                    last: Box::new(e),
                });
            }
            tracing::debug!(what, attempt = tries.made(), error = %e, "retrying");
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
            deadline: Duration::from_secs(60),
            backoff: Backoff {
                base_ms: 100,
                max_ms: 1000,
            },
        };
        let mut rng = StdRng::seed_from_u64(1);
        let mut calls = 0;
        let out = retry
            .run("flaky", &mut rng, |_| {
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
            .run("fatal", &mut rng, |_| {
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
            .run("down", &mut rng, |_| async {
                Err::<(), _>(Error::Raft(cairn_raft::Error::NoLeader))
            })
            .await
            .unwrap_err();
        assert!(matches!(err, Error::RetriesExhausted { attempts: 4, .. }), "{err}");
        assert!(
            started.elapsed() <= Duration::from_millis(100 + 200 + 400),
            "bounded total delay"
        );

        // One deadline bounds the loop whatever the attempts left.
        let short = Retry {
            max_attempts: 1000,
            deadline: Duration::from_millis(500),
            ..retry
        };
        let started = Instant::now();
        let err = short
            .run("down", &mut rng, |_| async {
                Err::<(), _>(Error::Raft(cairn_raft::Error::NoLeader))
            })
            .await
            .unwrap_err();
        assert!(matches!(err, Error::RetriesExhausted { .. }), "{err}");
        assert!(
            started.elapsed() <= Duration::from_millis(500),
            "{:?}",
            started.elapsed()
        );
    }

    /// Issue 18: an agent path retried an untagged write after `Timeout`,
    /// whose outcome is unknown (it may have been applied).
    #[tokio::test(start_paused = true)]
    async fn an_unknown_outcome_is_retried_only_under_a_tag() {
        let retry = Retry {
            max_attempts: 5,
            deadline: Duration::from_secs(60),
            backoff: Backoff {
                base_ms: 50,
                max_ms: 1000,
            },
        };
        let mut rng = StdRng::seed_from_u64(3);
        let mut calls = 0;
        let err = retry
            .run("untagged write", &mut rng, |_| {
                calls += 1;
                async {
                    Err::<(), _>(Error::Raft(cairn_raft::Error::Indeterminate {
                        reason: "connection lost after sending".into(),
                    }))
                }
            })
            .await
            .unwrap_err();
        assert_eq!(calls, 1, "an untagged write with an unknown outcome was retried: {err}");
        let mut calls = 0;
        let err = retry
            .run("untagged write", &mut rng, |_| {
                calls += 1;
                async {
                    Err::<(), _>(Error::Raft(cairn_raft::Error::Timeout {
                        what: "request",
                        after_ms: 5000,
                    }))
                }
            })
            .await
            .unwrap_err();
        assert_eq!(calls, 1, "an untagged write that timed out was retried: {err}");

        let mut calls = 0;
        let out = retry
            .run_tagged("tagged write", &mut rng, |_| {
                calls += 1;
                let n = calls;
                async move {
                    if n == 1 {
                        Err(Error::Raft(cairn_raft::Error::Timeout {
                            what: "request",
                            after_ms: 5000,
                        }))
                    } else {
                        Ok(n)
                    }
                }
            })
            .await
            .unwrap();
        assert_eq!(out, 2, "a tagged write is retried after an unknown outcome");
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
