//! Parameters: declare, set, read.

use axum::extract::Path;
use axum::extract::State;
use axum::response::Response;
use axum::Json;
use cairn_raft::Consistency;
use cairn_state::Command;
use cairn_state::ParamKind;
use cairn_state::ParamValue;
use serde::Deserialize;
use serde::Serialize;
use utoipa::ToSchema;

use super::extract::ApiQuery;
use super::extract::JsonBody;
use super::rw::execute;
use super::rw::read_json;
use super::rw::to_json;
use super::rw::ReadParams;
use super::rw::WriteResult;
use super::state::Api;
use crate::error::Error;
use crate::error::ErrorBody;

/// Body of `POST /v1/params`.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DeclareParamRequest {
    /// Dotted name.
    pub name: String,
    /// What it means.
    #[serde(default)]
    pub description: String,
    /// Type and bounds: `"Bool"`, `{"Int": {"min": 0, "max": 10}}`,
    /// `{"Float": {"min": 0.0, "max": 1.0}}`, `{"String": {"max_len": 64}}`,
    /// `{"Enum": {"choices": ["a", "b"]}}`.
    pub kind: ParamKind,
    /// Initial value: `{"Float": 0.5}`, `{"Int": 3}`, `{"Bool": true}`, `{"String": "x"}`, `{"Enum": "a"}`.
    pub value: ParamValue,
}

#[utoipa::path(post, path = "/v1/params", tag = "params", request_body = DeclareParamRequest,
    responses((status = 200, body = WriteResult), (status = 400, body = ErrorBody, description = "value out of bounds or of the wrong type"), (status = 409, body = ErrorBody, description = "already declared")),
    security(("bearer" = [])))]
pub(super) async fn declare_param(
    State(api): State<Api>,
    JsonBody(req): JsonBody<DeclareParamRequest>,
) -> Result<Json<WriteResult>, Error> {
    execute(
        &api,
        Command::DeclareParam {
            name: req.name,
            description: req.description,
            kind: req.kind,
            value: req.value,
        },
    )
    .await
}

/// Body of `PUT /v1/params/{name}`: the value typed as declared, or as
/// text the node parses by the declared kind (one of the two).
#[derive(Debug, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SetParamRequest {
    /// The new value, typed as declared: `{"Float": 1.2}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<ParamValue>,
    /// Or the new value as a person writes it, parsed by the declared
    /// kind: `"1.2"`, `"true"`, `"fast"` (what `cairn param set` sends).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
}

/// Parses `text` as a value of `kind`, as `cairn param declare` and `PUT
/// /v1/params/{name}` with `text` do: `true`/`false`, an integer, a number;
/// an enum choice or a string as it is (bounds and choices are the state
/// machine's to check).
pub fn parse_param_value(kind: &ParamKind, text: &str) -> Result<ParamValue, String> {
    Ok(match kind {
        ParamKind::Bool => ParamValue::Bool(text.parse().map_err(|e| format!("{text:?} is not true/false: {e}"))?),
        ParamKind::Int { .. } => ParamValue::Int(text.parse().map_err(|e| format!("{text:?} is not an integer: {e}"))?),
        ParamKind::Float { .. } => {
            ParamValue::Float(text.parse().map_err(|e| format!("{text:?} is not a number: {e}"))?)
        }
        ParamKind::Enum { .. } => ParamValue::Enum(text.into()),
        _ => ParamValue::String(text.into()),
    })
}

/// The kind `name` was declared with. A kind never changes (a parameter
/// cannot be declared twice, nor removed), so this node's own state
/// answers when it knows the parameter; only one it does not know yet
/// (declared moments ago) takes a linearizable read.
async fn declared_kind(api: &Api, name: &str) -> Result<ParamKind, Error> {
    for consistency in [Consistency::Stale, Consistency::Linearizable] {
        if let Some(kind) = api
            .node
            .read(consistency, |m| m.param(name).map(|p| p.kind.clone()))
            .await?
        {
            return Ok(kind);
        }
    }
    Err(Error::not_found(format!("parameter {name:?}"), "name"))
}

#[utoipa::path(put, path = "/v1/params/{name}", tag = "params", params(("name" = String, Path)), request_body = SetParamRequest,
    responses((status = 200, body = WriteResult), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)),
    security(("bearer" = [])))]
pub(super) async fn set_param(
    State(api): State<Api>,
    Path(name): Path<String>,
    JsonBody(req): JsonBody<SetParamRequest>,
) -> Result<Json<WriteResult>, Error> {
    let value = match (req.value, req.text) {
        (Some(value), None) => value,
        (None, Some(text)) => {
            let kind = declared_kind(&api, &name).await?;
            parse_param_value(&kind, &text).map_err(|reason| Error::bad("text", reason))?
        }
        (Some(_), Some(_)) => return Err(Error::bad("text", "give `value` or `text`, not both")),
        (None, None) => return Err(Error::bad("value", "missing field `value` (or `text`)")),
    };
    execute(&api, Command::SetParam { name, value }).await
}

#[utoipa::path(get, path = "/v1/params", tag = "params", params(ReadParams),
    responses((status = 200, body = Vec<cairn_state::Param>, description = "every parameter with kind, value and version")))]
pub(super) async fn list_params(State(api): State<Api>, ApiQuery(q): ApiQuery<ReadParams>) -> Result<Response, Error> {
    read_json(&api, q.consistency(), |m| to_json(&m.params().collect::<Vec<_>>())).await
}

#[utoipa::path(get, path = "/v1/params/{name}", tag = "params", params(("name" = String, Path), ReadParams),
    responses((status = 200, body = cairn_state::Param), (status = 404, body = ErrorBody)))]
pub(super) async fn get_param(
    State(api): State<Api>,
    Path(name): Path<String>,
    ApiQuery(q): ApiQuery<ReadParams>,
) -> Result<Response, Error> {
    read_json(&api, q.consistency(), |m| match m.param(&name) {
        Some(p) => to_json(p),
        None => Err(Error::not_found(format!("parameter {name:?}"), "name")),
    })
    .await
}
