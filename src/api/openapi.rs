//! The OpenAPI document, generated from the handlers' annotations.

use axum::response::IntoResponse;
use axum::response::Response;
use utoipa::OpenApi;

use super::backup;
use super::cluster;
use super::drain;
use super::health;
use super::metrics;
use super::mission;
use super::nodes;
use super::params;
use super::tasks;
use super::telemetry;
use super::watch;

/// The OpenAPI document of this API.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "cairn admin API",
        description = "Cluster, mission, tasks, parameters, health, a watch stream and best-effort telemetry topics of a cairn cluster. \
Reads are linearizable unless `?consistency=stale`. Mutating requests need `Authorization: Bearer <token>` when the node has a token.",
    ),
    paths(
        cluster::readyz, cluster::version, metrics::metrics, cluster::status, cluster::state_hash, cluster::init,
        cluster::members, cluster::add_member, cluster::promote, cluster::remove_member,
        cluster::transfer_leader, backup::backup, nodes::list_nodes, nodes::get_node,
        nodes::update_node, nodes::remove_node, drain::drain, drain::undrain,
        mission::get_mission, mission::replace_plan, mission::append_goals,
        mission::skip_goal, mission::complete_goal, mission::abort_plan,
        tasks::list_tasks, tasks::submit_task, tasks::get_task, tasks::cancel_task,
        params::list_params, params::declare_param, params::get_param, params::set_param,
        health::list_sensors, health::report_sensor,
        health::list_policies, health::set_policy, health::remove_policy,
        watch::watch,
        telemetry::stream, telemetry::publish, telemetry::topics,
    ),
    components(schemas(
        crate::error::ErrorBody, crate::telemetry::TelemetryMessage, crate::telemetry::TelemetryOverview,
        crate::telemetry::TopicInfo, crate::telemetry::SourceInfo, crate::telemetry::PeerInfo,
        telemetry::PublishResult,
    )),
    modifiers(&BearerAuth, &ErrorResponses),
)]
pub struct ApiDoc;

/// Paths anyone may call, token or not (see `middleware::authenticate`).
const PUBLIC_PATHS: [&str; 4] = ["/healthz", "/readyz", "/version", "/openapi.json"];

/// Error responses from [`crate::error::ERROR_CODES`]: every error status
/// an operation declares gets the [`crate::error::ErrorBody`] schema and
/// the list of codes that status carries; every operation declares 500
/// (`internal`), and every non-public one 401 (`unauthorized`: a node
/// with `read_requires_token` wants the token on reads too). The body's
/// `code` is an enum of the table's codes.
struct ErrorResponses;

impl ErrorResponses {
    fn describe(status: u16, declared: &str) -> String {
        let codes: Vec<String> = crate::error::ERROR_CODES
            .iter()
            .filter(|c| c.status == status)
            .map(|c| format!("`{}`", c.code))
            .collect();
        let what = if declared.is_empty() {
            crate::error::ErrorCode::for_status(status).meaning.to_string()
        } else {
            declared.to_string()
        };
        format!("{what} (code: {})", codes.join(", "))
    }
}

impl utoipa::Modify for ErrorResponses {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::schema::Schema;
        use utoipa::openapi::Content;
        use utoipa::openapi::Ref;
        use utoipa::openapi::RefOr;
        use utoipa::openapi::ResponseBuilder;
        let error_body = || Content::new(Some(Ref::from_schema_name("ErrorBody")));
        for (path, item) in openapi.paths.paths.iter_mut() {
            let public = PUBLIC_PATHS.contains(&path.as_str());
            let ops = [
                &mut item.get,
                &mut item.put,
                &mut item.post,
                &mut item.delete,
                &mut item.patch,
            ];
            for op in ops.into_iter().flatten() {
                let responses = &mut op.responses.responses;
                for (status, response) in responses.iter_mut() {
                    let Ok(status) = status.parse::<u16>() else { continue };
                    if status < 400 {
                        continue;
                    }
                    if let RefOr::T(r) = response {
                        r.description = Self::describe(status, &r.description);
                        r.content.clear();
                        r.content.insert("application/json".into(), error_body());
                    }
                }
                let mut add = |status: u16| {
                    responses.entry(status.to_string()).or_insert_with(|| {
                        RefOr::T(
                            ResponseBuilder::new()
                                .description(Self::describe(status, ""))
                                .content("application/json", error_body())
                                .build(),
                        )
                    });
                };
                if !public {
                    add(401);
                }
                add(500);
            }
        }
        let codes: Vec<serde_json::Value> = crate::error::ERROR_CODES
            .iter()
            .map(|c| serde_json::Value::from(c.code))
            .collect();
        let body = openapi.components.as_mut().and_then(|c| c.schemas.get_mut("ErrorBody"));
        if let Some(RefOr::T(Schema::Object(body))) = body {
            if let Some(RefOr::T(Schema::Object(code))) = body.properties.get_mut("code") {
                code.enum_values = Some(codes);
            }
        }
    }
}

struct BearerAuth;

impl utoipa::Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::HttpAuthScheme;
        use utoipa::openapi::security::HttpBuilder;
        use utoipa::openapi::security::SecurityScheme;
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

/// The OpenAPI document as pretty JSON (`cairn openapi`, `/openapi.json`).
pub fn openapi_json_string() -> String {
    ApiDoc::openapi()
        .to_pretty_json()
        .unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}"))
}

pub(super) async fn openapi_json() -> Response {
    (
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        openapi_json_string(),
    )
        .into_response()
}
