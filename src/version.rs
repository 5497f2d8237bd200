//! Which build a node runs: `GET /version`, the `cairn_build_info` metric
//! and `cairn status`.

use serde::Deserialize;
use serde::Serialize;
use utoipa::ToSchema;

/// This crate's version (`Cargo.toml`).
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// The git commit the binary was built from (12 hex digits), from
/// `build.rs`: `CAIRN_BUILD_COMMIT` if set at build time, else `git
/// rev-parse`, else "unknown".
pub const COMMIT: &str = env!("CAIRN_COMMIT");

/// What `GET /version` answers.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct BuildInfo {
    /// The release, e.g. "0.1.0".
    pub version: String,
    /// The git commit, or "unknown".
    pub commit: String,
}

impl BuildInfo {
    /// This binary's.
    pub fn current() -> Self {
        BuildInfo {
            version: VERSION.to_string(),
            commit: COMMIT.to_string(),
        }
    }
}
