//! How the handlers read (at a consistency, answering with the applied
//! index) and write (a command, answering with its index and response).

use axum::response::Response;
use axum::Json;
use cairn_raft::Consistency;
use cairn_state::Command;
use cairn_state::Mission;
use serde::Deserialize;
use serde::Serialize;
use utoipa::IntoParams;
use utoipa::ToSchema;

use super::state::indexed;
use super::state::Api;
use crate::error::Error;

/// How a read is served.
#[derive(Clone, Copy, Debug, Default, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum ConsistencyParam {
    /// Read-index through the leader: sees every acknowledged write.
    #[default]
    Linearizable,
    /// This node's applied state: fast, may be behind.
    Stale,
}

impl From<ConsistencyParam> for Consistency {
    fn from(c: ConsistencyParam) -> Self {
        match c {
            ConsistencyParam::Linearizable => Consistency::Linearizable,
            ConsistencyParam::Stale => Consistency::Stale,
        }
    }
}

/// Query of every read.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ReadParams {
    /// `linearizable` (default) or `stale`.
    #[param(value_type = Option<String>)]
    pub consistency: Option<ConsistencyParam>,
}

impl ReadParams {
    pub(super) fn consistency(&self) -> Consistency {
        self.consistency.unwrap_or_default().into()
    }
}

/// Run a read and answer with its JSON and applied index.
pub(super) async fn read_json(
    api: &Api,
    consistency: Consistency,
    f: impl FnOnce(&Mission) -> Result<serde_json::Value, Error>,
) -> Result<Response, Error> {
    let (index, v) = api.node.read_indexed(consistency, f).await?;
    Ok(indexed(index, v?))
}

pub(super) fn to_json<T: Serialize + ?Sized>(v: &T) -> Result<serde_json::Value, Error> {
    serde_json::to_value(v).map_err(|e| Error::Encode { reason: e.to_string() })
}

/// What a write returns.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct WriteResult {
    /// Log index the write was committed at.
    pub index: u64,
    /// What the state machine answered, e.g. `{"TaskCreated": {"task_id": 3}}`.
    pub response: cairn_state::Response,
}

/// Apply a command; a state-machine refusal becomes a 4xx naming the field.
pub(super) async fn execute(api: &Api, cmd: Command) -> Result<Json<WriteResult>, Error> {
    let out = match super::middleware::current_client_tag() {
        Some(tag) => api.node.write_tagged(tag, cmd).await?,
        None => api.node.write(cmd).await?,
    };
    let response = out.response?;
    Ok(Json(WriteResult {
        index: out.index,
        response,
    }))
}
