//! Sensor health, the effective mode, degradation policies.

use std::collections::BTreeMap;

use axum::extract::Path;
use axum::extract::State;
use axum::response::Response;
use axum::Json;
use cairn_state::Command;
use cairn_state::DegradationPolicy;
use cairn_state::SensorHealth;
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

#[utoipa::path(get, path = "/v1/sensors", tag = "health", params(ReadParams),
    responses((status = 200, body = SensorsView, description = "every reported sensor and the effective mode")))]
pub(super) async fn list_sensors(State(api): State<Api>, ApiQuery(q): ApiQuery<ReadParams>) -> Result<Response, Error> {
    read_json(&api, q.consistency(), |m| {
        to_json(&SensorsView {
            sensors: m.sensors().map(|(name, r)| (name.to_string(), *r)).collect(),
            effective: m.effective(),
        })
    })
    .await
}

/// Body of `GET /v1/sensors`.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct SensorsView {
    /// The latest report of every sensor, by name.
    pub sensors: BTreeMap<String, cairn_state::SensorReport>,
    /// The mode and speed factor they give under the policies.
    pub effective: cairn_state::Effective,
}

/// Body of `PUT /v1/sensors/{name}`.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SensorReportRequest {
    /// `Ok`, `Degraded` or `Failed`.
    pub health: SensorHealth,
}

#[utoipa::path(put, path = "/v1/sensors/{name}", tag = "health", params(("name" = String, Path)), request_body = SensorReportRequest,
    responses((status = 200, body = WriteResult, description = "`response.HealthChanged.effective` is the mode now")),
    security(("bearer" = [])))]
pub(super) async fn report_sensor(
    State(api): State<Api>,
    Path(name): Path<String>,
    JsonBody(req): JsonBody<SensorReportRequest>,
) -> Result<Json<WriteResult>, Error> {
    execute(
        &api,
        Command::ReportSensorHealth {
            sensor: name,
            health: req.health,
        },
    )
    .await
}

#[utoipa::path(get, path = "/v1/policies", tag = "health", params(ReadParams),
    responses((status = 200, body = Vec<DegradationPolicy>, description = "degradation policies by (sensor, health)")))]
pub(super) async fn list_policies(
    State(api): State<Api>,
    ApiQuery(q): ApiQuery<ReadParams>,
) -> Result<Response, Error> {
    read_json(&api, q.consistency(), |m| to_json(m.policies())).await
}

#[utoipa::path(put, path = "/v1/policies", tag = "health",
    request_body(content = DegradationPolicy, description = "`{\"sensor\": \"imu\", \"health\": \"Failed\", \"mode\": \"GpsOnly\", \"speed_factor\": 0.5}`"),
    responses((status = 200, body = WriteResult), (status = 400, body = ErrorBody)), security(("bearer" = [])))]
pub(super) async fn set_policy(
    State(api): State<Api>,
    JsonBody(policy): JsonBody<DegradationPolicy>,
) -> Result<Json<WriteResult>, Error> {
    execute(&api, Command::SetPolicy(policy)).await
}

#[utoipa::path(delete, path = "/v1/policies/{sensor}/{health}", tag = "health",
    params(("sensor" = String, Path), ("health" = String, Path, description = "Ok, Degraded or Failed")),
    responses((status = 200, body = WriteResult), (status = 404, body = ErrorBody)), security(("bearer" = [])))]
pub(super) async fn remove_policy(
    State(api): State<Api>,
    Path((sensor, health)): Path<(String, String)>,
) -> Result<Json<WriteResult>, Error> {
    let health = match health.to_ascii_lowercase().as_str() {
        "ok" => SensorHealth::Ok,
        "degraded" => SensorHealth::Degraded,
        "failed" => SensorHealth::Failed,
        _ => {
            return Err(Error::bad(
                "health",
                format!("{health:?} is not one of ok, degraded, failed"),
            ))
        }
    };
    execute(&api, Command::RemovePolicy { sensor, health }).await
}
