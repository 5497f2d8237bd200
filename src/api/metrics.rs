//! `GET /metrics`: the node's Prometheus registry plus gauges computed at
//! scrape time from its status and applied state (so they cost nothing
//! between scrapes and can never drift from the state).

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use cairn_state::Liveness;
use cairn_state::TaskFilter;
use cairn_state::TaskState;
use prometheus::HistogramOpts;
use prometheus::HistogramVec;
use prometheus::IntCounterVec;
use prometheus::IntGaugeVec;
use prometheus::Opts;

use super::state::Api;

/// Requests served, by route template, method and status class. Its own
/// registry (an [`Api`] per router; tests build several per node), gathered
/// with the node's at scrape time.
pub(crate) struct HttpMetrics {
    registry: prometheus::Registry,
    requests: IntCounterVec,
    seconds: HistogramVec,
}

/// The label of a request that matched no route: one series for every
/// unknown path, never the path itself (a client could mint series).
pub(crate) const UNMATCHED_ROUTE: &str = "unmatched";

impl HttpMetrics {
    pub(crate) fn new() -> Self {
        let registry = prometheus::Registry::new();
        let labels = ["route", "method", "status"];
        let requests = IntCounterVec::new(
            Opts::new(
                "cairn_http_requests_total",
                "API requests served, by route template (e.g. /v1/tasks/{id}), method and status class (2xx..5xx)",
            ),
            &labels,
        )
        .expect("static counter options are valid");
        // 100 µs .. ~13 s: a stale read on a Pi up to a write that waits out an election.
        let buckets = prometheus::exponential_buckets(0.000_1, 2.0, 18).unwrap_or_default();
        let seconds = HistogramVec::new(
            HistogramOpts::new(
                "cairn_http_request_duration_seconds",
                "Time from request to response headers (a stream: until it starts), by route template, method and status class",
            )
            .buckets(buckets),
            &labels,
        )
        .expect("static histogram options are valid");
        registry
            .register(Box::new(requests.clone()))
            .expect("metric names are unique in a fresh registry");
        registry
            .register(Box::new(seconds.clone()))
            .expect("metric names are unique in a fresh registry");
        Self {
            registry,
            requests,
            seconds,
        }
    }

    /// Count one request. `route` is a route template or [`UNMATCHED_ROUTE`];
    /// methods outside the usual few count as `other` (bounded labels).
    pub(crate) fn observe(
        &self,
        route: &str,
        method: &axum::http::Method,
        status: StatusCode,
        took: std::time::Duration,
    ) {
        use axum::http::Method as M;
        let method = match *method {
            M::GET => "GET",
            M::POST => "POST",
            M::PUT => "PUT",
            M::PATCH => "PATCH",
            M::DELETE => "DELETE",
            M::HEAD => "HEAD",
            M::OPTIONS => "OPTIONS",
            _ => "other",
        };
        let class = match status.as_u16() {
            100..=199 => "1xx",
            200..=299 => "2xx",
            300..=399 => "3xx",
            400..=499 => "4xx",
            _ => "5xx",
        };
        let labels = [route, method, class];
        self.requests.with_label_values(&labels).inc();
        self.seconds.with_label_values(&labels).observe(took.as_secs_f64());
    }
}

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
    telemetry_drops(&registry, &api.telemetry.overview())?;
    Ok(registry.gather())
}

/// Telemetry messages lost, by reason, summed over topics and peer links
/// from the hub's own counters (`GET /v1/telemetry/topics` has them per
/// topic and peer). A topic evicted from the hub takes its counts along,
/// so the sum can go down; Prometheus's `rate()` treats that as a reset.
fn telemetry_drops(
    registry: &prometheus::Registry,
    overview: &crate::telemetry::TelemetryOverview,
) -> Result<(), prometheus::Error> {
    let dropped = IntCounterVec::new(
        Opts::new(
            "cairn_telemetry_dropped_total",
            "Telemetry messages this node lost: rate_limited (a publish over its topic's rate), \
             subscriber_queue_full (oldest dropped for a slow subscriber), peer_queue_full (oldest dropped \
             for a slow or absent peer), peer_send_failed (a send to a peer failed or timed out)",
        ),
        &["reason"],
    )?;
    registry.register(Box::new(dropped.clone()))?;
    let sum = |f: fn(&crate::telemetry::TopicInfo) -> u64| overview.topics.iter().map(f).sum::<u64>();
    let counts = [
        ("rate_limited", sum(|t| t.rate_limited)),
        ("subscriber_queue_full", sum(|t| t.subscriber_dropped)),
        ("peer_queue_full", overview.peers.iter().map(|p| p.dropped).sum()),
        ("peer_send_failed", overview.peers.iter().map(|p| p.failed).sum()),
    ];
    for (reason, n) in counts {
        dropped.with_label_values(&[reason]).inc_by(n);
    }
    Ok(())
}

#[utoipa::path(get, path = "/metrics", tag = "cluster",
    responses((status = 200, content_type = "text/plain", description = "Prometheus text format")))]
pub(super) async fn metrics(State(api): State<Api>) -> impl IntoResponse {
    let mut families = api.node.metrics().registry().gather();
    families.extend(api.http_metrics.registry.gather());
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
