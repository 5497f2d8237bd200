//! `GET /v1/backup`: a consistent, point-in-time copy of the state machine
//! as a backup file (`cairn backup FILE`; restored with `cairn restore`).
//!
//! Served by any node after a linearizable read barrier through the
//! leader, so the copy has every write acknowledged before the request and
//! nothing uncommitted. It always needs the bearer token when the node has
//! one (it is the whole mission), even if reads do not.

use axum::extract::State;
use axum::http::header;
use axum::http::HeaderValue;
use axum::response::IntoResponse;
use axum::response::Response;

use super::state::Api;
use super::state::APPLIED_INDEX_HEADER;
use crate::error::Error;
use crate::error::ErrorBody;

#[utoipa::path(get, path = "/v1/backup", tag = "cluster",
    responses(
        (status = 200, content_type = "application/octet-stream", description = "the backup file: magic `CAIRNBAK`, format version, CRC-32, then the state (see `cairn_raft::backup`)"),
        (status = 503, body = ErrorBody, description = "no leader to confirm the read")),
    security(("bearer" = [])))]
pub(super) async fn backup(State(api): State<Api>) -> Result<Response, Error> {
    let backup = api.node.backup().await?;
    let bytes = backup.encode()?;
    tracing::info!(index = backup.index, bytes = bytes.len(), "serving a backup");
    let mut resp = bytes.into_response();
    let headers = resp.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    headers.insert(APPLIED_INDEX_HEADER, HeaderValue::from(backup.index));
    if let Ok(v) = HeaderValue::from_str(&format!("attachment; filename=\"cairn-{}.backup\"", backup.index)) {
        headers.insert(header::CONTENT_DISPOSITION, v);
    }
    Ok(resp)
}
