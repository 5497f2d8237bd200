//! Exit codes: which failure gives which code, and the CLI's own worded
//! failures.

/// `cairn --help`'s list of exit codes (also in docs/API.md, "CLI").
pub const EXIT_CODES_HELP: &str = "\
Exit codes:
  0  success
  1  failure not listed below (bad file, unexpected answer, ...)
  2  usage error; `status`: nodes answered but none leads with a quorum;
     `check consistency`: replicas diverged; `task follow` (and `task
     submit --follow`): the task failed or was cancelled
  3  unavailable: no endpoint reachable, or none could serve the request
     (no leader, no quorum, cluster not initialised)
  4  refused by the cluster (a 4xx answer: invalid input, not found,
     conflict, unauthorised); nothing changed
  5  timeout: no answer in time, or a write's outcome is unknown";

/// Exit code 3: unavailable.
pub const EXIT_UNAVAILABLE: u8 = 3;
/// Exit code 4: refused by the cluster.
pub const EXIT_REFUSED: u8 = 4;
/// Exit code 5: timeout, outcome unknown.
pub const EXIT_UNKNOWN: u8 = 5;

/// A failure the CLI itself words, with its exit code.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct Failed {
    /// The exit code.
    pub code: u8,
    /// What to print.
    pub message: String,
}

impl Failed {
    /// Exit 3.
    pub fn unavailable(message: impl Into<String>) -> Self {
        Self {
            code: EXIT_UNAVAILABLE,
            message: message.into(),
        }
    }

    /// Exit 5.
    pub fn unknown(message: impl Into<String>) -> Self {
        Self {
            code: EXIT_UNKNOWN,
            message: message.into(),
        }
    }

    /// With the exit code `e` has.
    pub fn like(e: &cairn::client::ClientError, message: impl Into<String>) -> Self {
        Self {
            code: client_exit_code(e),
            message: message.into(),
        }
    }
}

/// The exit code of a failed call.
pub fn client_exit_code(e: &cairn::client::ClientError) -> u8 {
    use cairn::client::ClientError as E;
    use cairn::client::Unanswered;
    match e {
        E::Unreachable {
            why: Unanswered::Down | Unanswered::Unavailable,
            ..
        } => EXIT_UNAVAILABLE,
        E::Unreachable {
            why: Unanswered::Unknown,
            ..
        } => EXIT_UNKNOWN,
        E::Api { status: 503, .. } => EXIT_UNAVAILABLE,
        E::Api { status: 504, .. } => EXIT_UNKNOWN,
        E::Api { status: 400..=499, .. } => EXIT_REFUSED,
        _ => 1,
    }
}

/// The exit code of a failed command: the first typed cause in its chain.
pub fn exit_code(e: &anyhow::Error) -> u8 {
    for cause in e.chain() {
        if let Some(f) = cause.downcast_ref::<Failed>() {
            return f.code;
        }
        if let Some(c) = cause.downcast_ref::<cairn::client::ClientError>() {
            return client_exit_code(c);
        }
    }
    1
}

/// `cairn status`: nodes answered, but none leads with a quorum. The
/// process exits 2 (1 is "no endpoint answered").
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Unhealthy(pub String);

/// The process's exit code for a failed command: 2 for diverged replicas
/// or an unhealthy cluster, else by [`exit_code`].
pub fn process_exit_code(e: &anyhow::Error) -> u8 {
    if e.downcast_ref::<super::ops::Diverged>().is_some() || e.downcast_ref::<Unhealthy>().is_some() {
        2
    } else {
        exit_code(e)
    }
}
