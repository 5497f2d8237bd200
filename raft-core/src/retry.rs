//! The one retry policy of the write path.
//!
//! Every loop that retries a request to the cluster (a follower chasing the
//! leader, the native client, the facade's and the agents' writes) runs on
//! a [`RetryPolicy`], so they all obey the same rules:
//!
//! - **Classification.** A failure is [`RetryClass::Safe`] (the request was
//!   definitely not applied: no leader, not sent, refused before the log),
//!   [`RetryClass::Unknown`] (it may have been applied: a timeout after it
//!   was sent, a connection lost after sending it, a leader change after it
//!   was appended) or [`RetryClass::Permanent`] (an answer; retrying gets the
//!   same one). See [`crate::Error::retry_class`].
//! - **Invariant.** An unknown outcome is retried only when the request
//!   carries a client tag ([`cairn_state::ClientTag`]): the state machine's
//!   session table then makes the retry return the first outcome instead of
//!   applying twice. An untagged request whose outcome is unknown is given
//!   back to the caller, who must read before deciding.
//! - **Bounds.** One deadline and a number of attempts bound every loop;
//!   an inner loop given an outer deadline ([`RetryPolicy::start_by`])
//!   never outlives it, so nested loops do not multiply.
//! - **Backoff.** Exponential with "equal jitter": attempt `n` waits a
//!   random time in `[c/2, c]` where `c = min(max, min · 2ⁿ)`. Half the wait
//!   is kept so an election has time to finish; the other half spreads
//!   clients that failed together.

use std::time::Duration;

use rand::rngs::SmallRng;
use rand::Rng;
use rand::SeedableRng;
use tokio::time::Instant;

/// Whether a failed request may be tried again.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RetryClass {
    /// Definitely not applied: trying again (later, or on another node) is
    /// safe whatever the request.
    Safe,
    /// May or may not have been applied: only a tagged request may be
    /// retried.
    Unknown,
    /// An answer (or a fault a retry cannot fix): never retried.
    Permanent,
}

impl RetryClass {
    /// Whether a request of this class may be retried; `tagged` says
    /// whether it carries a client tag (or is otherwise idempotent, such as
    /// a read).
    pub fn may_retry(self, tagged: bool) -> bool {
        match self {
            RetryClass::Safe => true,
            RetryClass::Unknown => tagged,
            RetryClass::Permanent => false,
        }
    }
}

/// How one retry loop is bounded and paced.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts in all, the first included (at least one is made).
    pub max_attempts: u32,
    /// Time for all attempts and the waits between them.
    pub deadline: Duration,
    /// Cap of the first wait.
    pub backoff_min: Duration,
    /// Cap of every wait.
    pub backoff_max: Duration,
}

impl RetryPolicy {
    /// Start a loop now; it ends after [`RetryPolicy::deadline`].
    pub fn start(&self) -> Attempts {
        self.start_by(Instant::now() + self.deadline)
    }

    /// Start a loop inside an outer one: it ends at this policy's deadline
    /// or at `outer`, whichever is first.
    pub fn start_by(&self, outer: Instant) -> Attempts {
        self.start_seeded(outer, rand::random())
    }

    /// [`RetryPolicy::start_by`] with a fixed jitter seed (tests).
    pub fn start_seeded(&self, outer: Instant, seed: u64) -> Attempts {
        let own = Instant::now() + self.deadline;
        Attempts {
            policy: *self,
            deadline: own.min(outer),
            made: 1,
            rng: SmallRng::seed_from_u64(seed),
        }
    }

    /// The wait before attempt `made + 1`, given `made` attempts so far.
    fn backoff(&self, made: u32, rng: &mut SmallRng) -> Duration {
        let factor = 1u32.checked_shl(made.saturating_sub(1)).unwrap_or(u32::MAX);
        let ceiling = self.backoff_min.saturating_mul(factor).min(self.backoff_max);
        let ms = ceiling.as_millis() as u64;
        Duration::from_millis(rng.random_range(ms / 2..=ms))
    }
}

/// One running retry loop (see [`RetryPolicy::start`]): the first attempt
/// is counted as made when it starts.
#[derive(Debug)]
pub struct Attempts {
    policy: RetryPolicy,
    deadline: Instant,
    made: u32,
    rng: SmallRng,
}

impl Attempts {
    /// When the loop must have ended.
    pub fn deadline(&self) -> Instant {
        self.deadline
    }

    /// Time left until [`Attempts::deadline`] (zero once past it).
    pub fn remaining(&self) -> Duration {
        self.deadline.saturating_duration_since(Instant::now())
    }

    /// Attempts made so far, the current one included.
    pub fn made(&self) -> u32 {
        self.made
    }

    /// After a failed attempt of class `class`: whether to make another.
    /// If so, waits the backoff first (never past the deadline) and counts
    /// the new attempt. `false` when the class forbids it (see
    /// [`RetryClass::may_retry`]), the attempts are spent, or no time is
    /// left for one.
    pub async fn retry(&mut self, class: RetryClass, tagged: bool) -> bool {
        if !self.admit(class, tagged) {
            return false;
        }
        let wait = self.policy.backoff(self.made, &mut self.rng);
        tokio::time::sleep_until(self.deadline.min(Instant::now() + wait)).await;
        self.count()
    }

    /// As [`Attempts::retry`] without the wait: for an attempt that goes
    /// straight somewhere else (a leader just named). Still counted and
    /// bounded, so two nodes naming each other cannot loop for ever.
    pub fn retry_now(&mut self, class: RetryClass, tagged: bool) -> bool {
        self.admit(class, tagged) && self.count()
    }

    fn admit(&self, class: RetryClass, tagged: bool) -> bool {
        class.may_retry(tagged) && self.made < self.policy.max_attempts && !self.remaining().is_zero()
    }

    fn count(&mut self) -> bool {
        if self.remaining().is_zero() {
            return false;
        }
        self.made += 1;
        debug_assert!(self.made <= self.policy.max_attempts);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const POLICY: RetryPolicy = RetryPolicy {
        max_attempts: 4,
        deadline: Duration::from_secs(10),
        backoff_min: Duration::from_millis(100),
        backoff_max: Duration::from_millis(300),
    };

    #[test]
    fn unknown_outcomes_are_retried_only_when_tagged() {
        assert!(RetryClass::Safe.may_retry(false));
        assert!(!RetryClass::Unknown.may_retry(false));
        assert!(RetryClass::Unknown.may_retry(true));
        assert!(!RetryClass::Permanent.may_retry(true));
    }

    #[tokio::test(start_paused = true)]
    async fn attempts_are_bounded_by_count_and_backoff_grows_with_jitter() {
        let start = Instant::now();
        let mut tries = POLICY.start_seeded(start + Duration::from_secs(60), 7);
        let mut waits = Vec::new();
        let mut at = start;
        while tries.retry(RetryClass::Safe, false).await {
            waits.push(Instant::now() - at);
            at = Instant::now();
        }
        assert_eq!(tries.made(), 4, "waits {waits:?}");
        let ceilings = [100, 200, 300];
        for (wait, ceiling) in waits.iter().zip(ceilings) {
            let ms = wait.as_millis() as u64;
            assert!(
                (ceiling / 2..=ceiling).contains(&ms),
                "waited {ms} ms, ceiling {ceiling}"
            );
        }
    }

    #[tokio::test(start_paused = true)]
    async fn an_inner_loop_ends_at_the_outer_deadline_and_hops_are_counted() {
        let start = Instant::now();
        let outer = start + Duration::from_millis(150);
        let mut tries = POLICY.start_seeded(outer, 1);
        assert_eq!(tries.deadline(), outer);
        while tries.retry(RetryClass::Safe, false).await {}
        assert!(Instant::now() <= outer, "ran past the outer deadline");

        // No pause, but still bounded: the ping-pong of two nodes naming
        // each other as leader stops at `max_attempts`.
        let mut tries = POLICY.start();
        let mut hops = 0;
        while tries.retry_now(RetryClass::Safe, false) {
            hops += 1;
        }
        assert_eq!(hops, 3);
        assert!(!POLICY.start().retry_now(RetryClass::Unknown, false));
        assert!(POLICY.start().retry_now(RetryClass::Unknown, true));
    }
}
