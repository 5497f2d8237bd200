//! Errors of the suite's machinery. A run that *finds* something is not an
//! error: it ends with a [`crate::run::Verdict`]. These are the cases where
//! the run could not be carried out at all.

use std::path::PathBuf;

/// Why a run (or a tool around it) could not be carried out.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The `cairn` binary is missing.
    #[error("cairn binary not found at {path} (build it with `cargo build --bin cairn`, or set CAIRN_BIN)")]
    BinaryMissing {
        /// Where it was looked for.
        path: PathBuf,
    },
    /// Building the `cairn` binary failed.
    #[error("building cairn failed: {reason}")]
    Build {
        /// Cargo's complaint.
        reason: String,
    },
    /// A file or socket operation failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The cause.
        source: std::io::Error,
    },
    /// A node process never answered its health check.
    #[error("node {node_id} never became healthy; its log ends with:\n{log_tail}")]
    NodeNeverHealthy {
        /// The node.
        node_id: u64,
        /// The last lines of its log.
        log_tail: String,
    },
    /// Setting the cluster up (bootstrap, declaring registers) failed.
    #[error("cluster setup failed: {reason}")]
    Setup {
        /// Why.
        reason: String,
    },
    /// A history or config file could not be parsed.
    #[error("{path}:{line}: {reason}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// Why.
        reason: String,
    },
    /// A value given on the command line or in a profile is unusable.
    #[error("invalid {field}: {reason}")]
    Invalid {
        /// The setting.
        field: &'static str,
        /// Why.
        reason: String,
    },
}

impl Error {
    /// An [`Error::Io`] with context.
    pub fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> Error {
        let what = what.into();
        move |source| Error::Io { what, source }
    }
}
