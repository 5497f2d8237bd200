//! `POST /v1/nodes/{id}/drain` and `/undrain`: keep new tasks off a node
//! (before restarting or upgrading it) and move leadership away from it.
//! The library operation is [`crate::drain`]; this is its HTTP face.

use axum::extract::Path;
use axum::extract::State;
use axum::Json;

use super::state::path_id;
use super::state::Api;
use crate::drain::set_draining;
use crate::drain::DrainResult;
use crate::error::Error;
use crate::error::ErrorBody;

#[utoipa::path(post, path = "/v1/nodes/{id}/drain", tag = "nodes", params(("id" = u64, Path, description = "node id")),
    responses((status = 200, body = DrainResult), (status = 404, body = ErrorBody), (status = 503, body = ErrorBody)),
    security(("bearer" = [])))]
pub(super) async fn drain(State(api): State<Api>, Path(id): Path<String>) -> Result<Json<DrainResult>, Error> {
    let id = path_id(&id, "id")?;
    Ok(Json(set_draining(&api.node, id, true).await?))
}

#[utoipa::path(post, path = "/v1/nodes/{id}/undrain", tag = "nodes", params(("id" = u64, Path, description = "node id")),
    responses((status = 200, body = DrainResult), (status = 404, body = ErrorBody), (status = 503, body = ErrorBody)),
    security(("bearer" = [])))]
pub(super) async fn undrain(State(api): State<Api>, Path(id): Path<String>) -> Result<Json<DrainResult>, Error> {
    let id = path_id(&id, "id")?;
    Ok(Json(set_draining(&api.node, id, false).await?))
}
