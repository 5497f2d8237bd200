//! The mission plan and its goals.

use axum::extract::Path;
use axum::extract::State;
use axum::response::Response;
use axum::Json;
use cairn_state::Command;
use cairn_state::GoalId;
use cairn_state::GoalSpec;
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
use super::state::path_id;
use super::state::Api;
use crate::error::Error;
use crate::error::ErrorBody;

#[utoipa::path(get, path = "/v1/mission", tag = "mission", params(ReadParams),
    responses((status = 200, body = MissionView, description = "the plan and the effective mode")))]
pub(super) async fn get_mission(State(api): State<Api>, ApiQuery(q): ApiQuery<ReadParams>) -> Result<Response, Error> {
    read_json(&api, q.consistency(), |m| {
        to_json(&MissionView {
            plan: m.plan().clone(),
            effective: m.effective(),
        })
    })
    .await
}

/// Body of `GET /v1/mission`.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct MissionView {
    /// The replicated plan.
    pub plan: cairn_state::Plan,
    /// The mode and speed factor the sensor health and policies give now.
    pub effective: cairn_state::Effective,
}

/// Body of `PUT /v1/mission/plan`.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReplacePlanRequest {
    /// Refuse (409) unless the plan is still at this version.
    #[serde(default)]
    pub expected_version: Option<u64>,
    /// Plan name.
    pub name: String,
    /// Frame of every pose, e.g. `map`.
    pub frame_id: String,
    /// Goals in order, e.g. `{"kind": {"Waypoint": {"pose": {"position": [1, 2, 0], "heading_rad": 0}}}, "tolerance": {"position_m": 0.5, "heading_rad": null}}`.
    pub goals: Vec<GoalSpec>,
}

#[utoipa::path(put, path = "/v1/mission/plan", tag = "mission", request_body = ReplacePlanRequest,
    responses((status = 200, body = WriteResult), (status = 400, body = ErrorBody), (status = 409, body = ErrorBody)),
    security(("bearer" = [])))]
pub(super) async fn replace_plan(
    State(api): State<Api>,
    JsonBody(req): JsonBody<ReplacePlanRequest>,
) -> Result<Json<WriteResult>, Error> {
    execute(
        &api,
        Command::ReplacePlan {
            expected_version: req.expected_version,
            name: req.name,
            frame_id: req.frame_id,
            goals: req.goals,
        },
    )
    .await
}

/// Body of `POST /v1/mission/goals`.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AppendGoalsRequest {
    /// Refuse (409) unless the plan is still at this version.
    #[serde(default)]
    pub expected_version: Option<u64>,
    /// Goals to add at the end.
    pub goals: Vec<GoalSpec>,
}

#[utoipa::path(post, path = "/v1/mission/goals", tag = "mission", request_body = AppendGoalsRequest,
    responses((status = 200, body = WriteResult), (status = 400, body = ErrorBody), (status = 409, body = ErrorBody)),
    security(("bearer" = [])))]
pub(super) async fn append_goals(
    State(api): State<Api>,
    JsonBody(req): JsonBody<AppendGoalsRequest>,
) -> Result<Json<WriteResult>, Error> {
    execute(
        &api,
        Command::AppendGoals {
            expected_version: req.expected_version,
            goals: req.goals,
        },
    )
    .await
}

/// Optional body of goal and abort commands.
#[derive(Debug, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PlanVersionRequest {
    /// Refuse (409) unless the plan is still at this version.
    #[serde(default)]
    pub expected_version: Option<u64>,
    /// Why (abort only).
    #[serde(default)]
    pub reason: Option<String>,
}

#[utoipa::path(post, path = "/v1/mission/goals/{id}/skip", tag = "mission", params(("id" = u64, Path, description = "goal id")),
    request_body = PlanVersionRequest,
    responses((status = 200, body = WriteResult), (status = 404, body = ErrorBody)), security(("bearer" = [])))]
pub(super) async fn skip_goal(
    State(api): State<Api>,
    Path(id): Path<String>,
    JsonBody(req): JsonBody<PlanVersionRequest>,
) -> Result<Json<WriteResult>, Error> {
    let goal_id = GoalId(path_id(&id, "id")?);
    execute(
        &api,
        Command::SkipGoal {
            expected_version: req.expected_version,
            goal_id,
        },
    )
    .await
}

#[utoipa::path(post, path = "/v1/mission/goals/{id}/complete", tag = "mission", params(("id" = u64, Path, description = "goal id")),
    request_body = PlanVersionRequest,
    responses((status = 200, body = WriteResult), (status = 404, body = ErrorBody)), security(("bearer" = [])))]
pub(super) async fn complete_goal(
    State(api): State<Api>,
    Path(id): Path<String>,
    JsonBody(req): JsonBody<PlanVersionRequest>,
) -> Result<Json<WriteResult>, Error> {
    let goal_id = GoalId(path_id(&id, "id")?);
    execute(
        &api,
        Command::CompleteGoal {
            expected_version: req.expected_version,
            goal_id,
        },
    )
    .await
}

#[utoipa::path(post, path = "/v1/mission/abort", tag = "mission", request_body = PlanVersionRequest,
    responses((status = 200, body = WriteResult), (status = 409, body = ErrorBody, description = "no active plan")),
    security(("bearer" = [])))]
pub(super) async fn abort_plan(
    State(api): State<Api>,
    JsonBody(req): JsonBody<PlanVersionRequest>,
) -> Result<Json<WriteResult>, Error> {
    execute(
        &api,
        Command::AbortPlan {
            expected_version: req.expected_version,
            reason: req.reason.unwrap_or_else(|| "aborted by the operator".into()),
        },
    )
    .await
}
