//! What the admin API puts on the wire that both its server (`api`) and
//! its client (`client`) read: the error body and the at-most-once headers.
//! A leaf: it imports nothing of this crate, so neither side imports the
//! other for these.

use serde::Deserialize;
use serde::Serialize;

/// The JSON body of every error response.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ErrorBody {
    /// Machine-readable kind, e.g. `bad_request`, `not_found`, `unauthorized`.
    pub code: String,
    /// Human-readable message, lowercase, one line.
    pub message: String,
    /// The request field at fault, when there is one (`body`, `value`,
    /// `kind.Int.min`, `id`, `consistency`, `authorization`…).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub field: Option<String>,
    /// Whether the same request may succeed if retried.
    pub retryable: bool,
}

/// Client id of an at-most-once write (with [`CLIENT_SEQ_HEADER`]).
pub const CLIENT_ID_HEADER: &str = "x-cairn-client-id";
/// Sequence number of an at-most-once write: one more for each new write of
/// the client, the same when retrying after a timeout or an "outcome
/// unknown" answer — the retry then returns the first write's response
/// instead of applying twice (its `index` is where the retry itself was
/// logged).
pub const CLIENT_SEQ_HEADER: &str = "x-cairn-client-seq";
