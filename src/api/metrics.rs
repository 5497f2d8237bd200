//! `GET /metrics`: the node's Prometheus registry plus gauges computed at
//! scrape time from its status and applied state (so they cost nothing
//! between scrapes and can never drift from the state).

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use cairn_state::Liveness;
use cairn_state::TaskFilter;
use cairn_state::TaskState;
use prometheus::IntGaugeVec;
use prometheus::Opts;

use super::state::Api;

fn gauge_vec(
    registry: &prometheus::Registry,
    name: &str,
    help: &str,
    label: &str,
) -> Result<IntGaugeVec, prometheus::Error> {
    let g = IntGaugeVec::new(Opts::new(name, help), &[label])?;
    registry.register(Box::new(g.clone()))?;
    Ok(g)
}

fn scrape_time_families(api: &Api) -> Result<Vec<prometheus::proto::MetricFamily>, prometheus::Error> {
    let registry = prometheus::Registry::new();
    let lag = gauge_vec(
        &registry,
        "cairn_raft_replication_lag_entries",
        "Entries each member is behind the leader's last log index (reported by the leader only)",
        "peer",
    )?;
    let matched = gauge_vec(
        &registry,
        "cairn_raft_matched_index",
        "Highest log index known replicated to each member (reported by the leader only)",
        "peer",
    )?;
    let tasks = gauge_vec(
        &registry,
        "cairn_tasks",
        "Tasks by state in this node's applied state",
        "state",
    )?;
    let nodes = gauge_vec(
        &registry,
        "cairn_nodes",
        "Registered nodes by liveness in this node's applied state",
        "liveness",
    )?;
    // The standard process_* families (CPU seconds, resident and virtual
    // memory, open fds, start time), read from /proc at scrape time.
    registry.register(Box::new(prometheus::process_collector::ProcessCollector::for_self()))?;
    let build = prometheus::IntGaugeVec::new(
        prometheus::Opts::new(
            "cairn_build_info",
            "Always 1; the labels say which build this node runs (as GET /version)",
        ),
        &["version", "commit"],
    )?;
    registry.register(Box::new(build.clone()))?;
    build
        .with_label_values(&[crate::version::VERSION, crate::version::COMMIT])
        .set(1);
    let status = api.node.status();
    let quorum = prometheus::IntGauge::new(
        "cairn_raft_quorum",
        "1 while this node is in touch with a leader that has a quorum (what /readyz reports), else 0",
    )?;
    registry.register(Box::new(quorum.clone()))?;
    quorum.set(i64::from(status.quorum));
    if let Some(n) = status.fault_tolerance {
        let tolerance = prometheus::IntGauge::new(
            "cairn_raft_fault_tolerance",
            "Voters that may still fail with writes committing (reported by the leader only)",
        )?;
        registry.register(Box::new(tolerance.clone()))?;
        tolerance.set(n as i64);
    }
    for m in status.members {
        if let (Some(l), Some(i)) = (m.lag, m.matched_index) {
            lag.with_label_values(&[&m.id.to_string()]).set(l as i64);
            matched.with_label_values(&[&m.id.to_string()]).set(i as i64);
        }
    }
    let (by_state, by_liveness) = api.node.local_state(|m| {
        let mut s = [0i64; TaskState::ALL.len()];
        for t in m.tasks(&TaskFilter::default()) {
            if let Some(i) = TaskState::ALL.iter().position(|x| *x == t.state) {
                s[i] += 1;
            }
        }
        let mut l = [0i64; 3];
        for n in m.nodes() {
            l[match n.liveness {
                Liveness::Up => 0,
                Liveness::Suspect => 1,
                Liveness::Down => 2,
            }] += 1;
        }
        (s, l)
    });
    for (state, n) in TaskState::ALL.iter().zip(by_state) {
        tasks.with_label_values(&[&state.to_string()]).set(n);
    }
    for (liveness, n) in [Liveness::Up, Liveness::Suspect, Liveness::Down]
        .iter()
        .zip(by_liveness)
    {
        nodes.with_label_values(&[&liveness.to_string()]).set(n);
    }
    Ok(registry.gather())
}

#[utoipa::path(get, path = "/metrics", tag = "cluster",
    responses((status = 200, content_type = "text/plain", description = "Prometheus text format")))]
pub(super) async fn metrics(State(api): State<Api>) -> impl IntoResponse {
    let mut families = api.node.metrics().registry().gather();
    match scrape_time_families(&api) {
        Ok(extra) => families.extend(extra),
        Err(e) => tracing::warn!(error = %e, "scrape-time metrics failed"),
    }
    let mut out = String::new();
    match prometheus::TextEncoder::new().encode_utf8(&families, &mut out) {
        Ok(()) => (
            StatusCode::OK,
            [(axum::http::header::CONTENT_TYPE, prometheus::TEXT_FORMAT)],
            out,
        ),
        Err(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            [(axum::http::header::CONTENT_TYPE, "text/plain")],
            e.to_string(),
        ),
    }
}
