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
    modifiers(&BearerAuth),
)]
pub struct ApiDoc;

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
