//! Errors of cairn-agents.

use cairn_raft::RetryClass;

/// What went wrong in the coordinator or an agent.
///
/// Recoverable: [`Error::Raft`] when the raft error is retryable,
/// [`Error::CircuitOpen`] and [`Error::RetriesExhausted`] of those (the
/// caller tries again on its next tick); after an unknown outcome only a
/// tagged write may be retried ([`Error::retry_class`]). [`Error::Config`] is refused at start. A refusal
/// by the state machine ([`Error::Command`]) is an answer, not a fault: e.g.
/// a stale epoch means this node was deposed and must stop.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A configuration value is unusable.
    #[error("invalid agent config {field}: {reason}")]
    Config {
        /// The offending field.
        field: &'static str,
        /// Why.
        reason: String,
    },
    /// The Raft layer failed.
    #[error(transparent)]
    Raft(#[from] cairn_raft::Error),
    /// The state machine refused the command.
    #[error(transparent)]
    Command(#[from] cairn_state::CommandError),
    /// The circuit breaker is open: the call was not attempted.
    #[error("circuit open for {what}: not calling for another {retry_in_ms} ms")]
    CircuitOpen {
        /// What is protected.
        what: &'static str,
        /// Until the breaker lets a probe through.
        retry_in_ms: u64,
    },
    /// Every attempt failed.
    #[error("{what} failed after {attempts} attempts: {last}")]
    RetriesExhausted {
        /// What was attempted.
        what: &'static str,
        /// How many times.
        attempts: u32,
        /// The last error.
        last: Box<Error>,
    },
    /// A heartbeat or its answer did not decode.
    #[error("bad heartbeat message: {reason}")]
    Protocol {
        /// Decoder message.
        reason: String,
    },
}

impl Error {
    /// Whether trying again (later, or elsewhere) is safe for any request:
    /// not after an unknown outcome (see [`Error::retry_class`]).
    pub fn is_retryable(&self) -> bool {
        self.retry_class() == RetryClass::Safe
    }

    /// How the one retry policy ([`cairn_raft::retry`]) treats this error.
    pub fn retry_class(&self) -> RetryClass {
        match self {
            Error::Raft(e) => e.retry_class(),
            // Not attempted.
            Error::CircuitOpen { .. } => RetryClass::Safe,
            // The caller tries again on its next tick, as for its last error.
            Error::RetriesExhausted { last, .. } => last.retry_class(),
            Error::Protocol { .. } => RetryClass::Safe,
            Error::Config { .. } | Error::Command(_) => RetryClass::Permanent,
        }
    }
}
