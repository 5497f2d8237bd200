//! Tasks: submit, list, get, cancel.

use std::collections::BTreeSet;

use axum::extract::Path;
use axum::extract::State;
use axum::response::Response;
use axum::Json;
use cairn_agents::scheduler::Placeability;
use cairn_raft::Consistency;
use cairn_state::Command;
use cairn_state::GoalId;
use cairn_state::Mission;
use cairn_state::NodeId;
use cairn_state::Resources;
use cairn_state::RetryPolicy;
use cairn_state::TaskFilter;
use cairn_state::TaskId;
use cairn_state::TaskSpec;
use cairn_state::TaskState;
use serde::Deserialize;
use serde::Serialize;
use utoipa::IntoParams;
use utoipa::ToSchema;

use super::extract::ApiQuery;
use super::extract::JsonBody;
use super::rw::execute;
use super::rw::read_json;
use super::rw::to_json;
use super::rw::ConsistencyParam;
use super::rw::ReadParams;
use super::rw::WriteResult;
use super::state::path_id;
use super::state::Api;
use crate::error::Error;
use crate::error::ErrorBody;

/// Default and largest page of `GET /v1/tasks`: a page is serialised under
/// the state's read lock, so it must stay small enough not to stall apply.
const TASK_PAGE_DEFAULT: usize = 1000;
const TASK_PAGE_MAX: usize = 10_000;

/// Body of `POST /v1/tasks`; only `kind` is required.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SubmitTaskRequest {
    /// What to do, e.g. `navigate`; agents dispatch on it.
    pub kind: String,
    /// Capabilities the assignee must have.
    #[serde(default)]
    pub required_capabilities: BTreeSet<String>,
    /// CPU millicores and MiB the task uses while leased:
    /// `{"cpu_millicores": 500, "memory_mib": 64}`.
    #[serde(default)]
    pub resources: Resources,
    /// Higher runs first (0–255).
    #[serde(default)]
    pub priority: u8,
    /// Advisory deadline, ms since the Unix epoch.
    #[serde(default)]
    pub deadline_ms: Option<u64>,
    /// `{"max_attempts": 3, "backoff_ms_base": 1000, "backoff_ms_max": 60000}`.
    #[serde(default)]
    pub retry: RetryPolicy,
    /// The plan goal it serves.
    #[serde(default)]
    pub goal: Option<u64>,
}

impl From<SubmitTaskRequest> for TaskSpec {
    fn from(r: SubmitTaskRequest) -> Self {
        TaskSpec {
            kind: r.kind,
            required_capabilities: r.required_capabilities,
            resources: r.resources,
            priority: r.priority,
            deadline_ms: r.deadline_ms,
            retry: r.retry,
            goal: r.goal.map(GoalId),
        }
    }
}

#[utoipa::path(post, path = "/v1/tasks", tag = "tasks", request_body = SubmitTaskRequest,
    responses((status = 200, body = WriteResult, description = "created; `response.TaskCreated.task_id` is its id"), (status = 400, body = ErrorBody)),
    security(("bearer" = [])))]
pub(super) async fn submit_task(
    State(api): State<Api>,
    JsonBody(req): JsonBody<SubmitTaskRequest>,
) -> Result<Json<WriteResult>, Error> {
    execute(&api, Command::CreateTask(req.into())).await
}

/// A task as `GET /v1/tasks` and `GET /v1/tasks/{id}` show it: the
/// replicated task, and why it is pending if no node can take it.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct TaskView {
    /// The replicated task.
    #[serde(flatten)]
    pub task: cairn_state::Task,
    /// Why no node can take this pending task now (no up node has a
    /// capability it needs, or none has the cpu or memory free), judged on
    /// the serving node's state; absent when some node can.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unplaceable: Option<String>,
}

impl TaskView {
    /// The view of `task` in `m`.
    pub(super) fn of(m: &Mission, task: &cairn_state::Task) -> Self {
        Self::with(&Placeability::new(m), task)
    }

    /// The view of `task`, with placement judged by `p` (one for a page).
    fn with(p: &Placeability<'_>, task: &cairn_state::Task) -> Self {
        TaskView {
            unplaceable: p.why(task),
            task: task.clone(),
        }
    }
}

/// Query of `GET /v1/tasks`.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct TaskQuery {
    /// `linearizable` (default) or `stale`.
    #[param(value_type = Option<String>)]
    pub consistency: Option<ConsistencyParam>,
    /// Only tasks in this state: pending, assigned, running, succeeded, failed, cancelled.
    pub state: Option<String>,
    /// Only tasks leased to this node.
    pub node: Option<u64>,
    /// Only tasks with an id above this (pagination cursor).
    pub after: Option<u64>,
    /// At most this many (default 1000, at most 10000).
    pub limit: Option<usize>,
}

fn parse_state(s: &str) -> Result<TaskState, Error> {
    TaskState::ALL
        .into_iter()
        .find(|t| t.to_string().eq_ignore_ascii_case(s))
        .ok_or_else(|| {
            let all: Vec<String> = TaskState::ALL.iter().map(|t| t.to_string()).collect();
            Error::bad("state", format!("{s:?} is not one of {}", all.join(", ")))
        })
}

#[utoipa::path(get, path = "/v1/tasks", tag = "tasks", params(TaskQuery),
    responses((status = 200, body = Vec<TaskView>, description = "tasks in id order"), (status = 400, body = ErrorBody)))]
pub(super) async fn list_tasks(State(api): State<Api>, ApiQuery(q): ApiQuery<TaskQuery>) -> Result<Response, Error> {
    let filter = TaskFilter {
        state: q.state.as_deref().map(parse_state).transpose()?,
        node_id: q.node.map(NodeId),
    };
    let limit = q.limit.unwrap_or(TASK_PAGE_DEFAULT);
    if limit == 0 || limit > TASK_PAGE_MAX {
        return Err(Error::bad("limit", format!("must be in 1..={TASK_PAGE_MAX}")));
    }
    let after = q.after.unwrap_or(0);
    let consistency = q.consistency.unwrap_or_default().into();
    read_json(&api, consistency, |m| {
        let placeability = Placeability::new(m);
        let page: Vec<TaskView> = m
            .tasks(&filter)
            .into_iter()
            .filter(|t| t.id.0 > after)
            .take(limit)
            .map(|t| TaskView::with(&placeability, t))
            .collect();
        to_json(&page)
    })
    .await
}

#[utoipa::path(get, path = "/v1/tasks/{id}", tag = "tasks", params(("id" = u64, Path), ReadParams),
    responses((status = 200, body = TaskView), (status = 404, body = ErrorBody)))]
pub(super) async fn get_task(
    State(api): State<Api>,
    Path(id): Path<String>,
    ApiQuery(q): ApiQuery<ReadParams>,
) -> Result<Response, Error> {
    let id = path_id(&id, "id")?;
    read_json(&api, q.consistency(), |m| match m.task(TaskId(id)) {
        Some(t) => to_json(&TaskView::of(m, t)),
        None => Err(Error::not_found(format!("task {id}"), "id")),
    })
    .await
}

#[utoipa::path(post, path = "/v1/tasks/{id}/cancel", tag = "tasks", params(("id" = u64, Path)),
    responses((status = 200, body = WriteResult), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody, description = "already finished")),
    security(("bearer" = [])))]
pub(super) async fn cancel_task(State(api): State<Api>, Path(id): Path<String>) -> Result<Json<WriteResult>, Error> {
    let task_id = TaskId(path_id(&id, "id")?);
    // Checked first so an unknown id is a 404 naming `id` without a log entry.
    let known = api.node.local_state(|m| m.task(task_id).is_some());
    if !known {
        let known = api
            .node
            .read(Consistency::Linearizable, |m| m.task(task_id).is_some())
            .await?;
        if !known {
            return Err(Error::not_found(format!("task {}", task_id.0), "id"));
        }
    }
    execute(&api, Command::CancelTask { task_id }).await
}
