//! Prometheus metrics of one node.
//!
//! Each node has its own [`prometheus::Registry`] (several nodes can share a
//! process in tests and the `local_cluster` example); the facade serves it.

use std::time::Duration;

use prometheus::Gauge;
use prometheus::Histogram;
use prometheus::HistogramOpts;
use prometheus::IntCounter;
use prometheus::IntCounterVec;
use prometheus::IntGauge;
use prometheus::Registry;

/// Metrics the storage layer records.
#[derive(Clone)]
pub struct StorageMetrics {
    fsync_seconds: Histogram,
    fsync_group_entries: Histogram,
}

impl StorageMetrics {
    pub(crate) fn observe_fsync(&self, took: Duration, group: usize) {
        self.fsync_seconds.observe(took.as_secs_f64());
        self.fsync_group_entries.observe(group as f64);
    }
}

/// Metrics of the snapshots this node builds and installs.
#[derive(Clone)]
pub struct SnapshotMetrics {
    built: IntCounter,
    installed: IntCounter,
    last_bytes: IntGauge,
    last_build_seconds: Gauge,
    last_install_seconds: Gauge,
}

impl SnapshotMetrics {
    pub(crate) fn observe_built(&self, bytes: usize, took: Duration) {
        self.built.inc();
        self.last_bytes.set(bytes as i64);
        self.last_build_seconds.set(took.as_secs_f64());
    }

    pub(crate) fn observe_installed(&self, bytes: usize, took: Duration) {
        self.installed.inc();
        self.last_bytes.set(bytes as i64);
        self.last_install_seconds.set(took.as_secs_f64());
    }
}

/// All metrics of one node.
#[derive(Clone)]
pub struct NodeMetrics {
    registry: Registry,
    pub(crate) storage: StorageMetrics,
    pub(crate) snapshots: SnapshotMetrics,
    pub(crate) proposal_seconds: Histogram,
    pub(crate) leader_changes: IntCounter,
    pub(crate) term: IntGauge,
    pub(crate) commit_index: IntGauge,
    pub(crate) applied_index: IntGauge,
    pub(crate) is_leader: IntGauge,
    pub(crate) forwarded_writes: IntCounter,
    pub(crate) refused_before_log: IntCounter,
    pub(crate) rejected_frames: IntCounter,
    pub(crate) refused_impersonations: IntCounter,
    peer_refused: IntCounterVec,
}

fn latency_buckets() -> Vec<f64> {
    // 50 µs .. ~3 s: covers tmpfs, NVMe and SD-card stalls.
    prometheus::exponential_buckets(0.000_05, 2.0, 17).unwrap_or_default()
}

impl NodeMetrics {
    /// Create and register the metrics of one node.
    pub fn new() -> Self {
        let registry = Registry::new();
        let h = |name: &str, help: &str, buckets: Vec<f64>| {
            let h = Histogram::with_opts(HistogramOpts::new(name, help).buckets(buckets))
                .expect("static histogram options are valid");
            registry.register(Box::new(h.clone())).expect("metric names are unique");
            h
        };
        let c = |name: &str, help: &str| {
            let c = IntCounter::new(name, help).expect("static counter options are valid");
            registry.register(Box::new(c.clone())).expect("metric names are unique");
            c
        };
        let g = |name: &str, help: &str| {
            let g = IntGauge::new(name, help).expect("static gauge options are valid");
            registry.register(Box::new(g.clone())).expect("metric names are unique");
            g
        };
        let storage = StorageMetrics {
            fsync_seconds: h(
                "cairn_wal_fsync_seconds",
                "Latency of one WAL fsync (one group commit)",
                latency_buckets(),
            ),
            fsync_group_entries: h(
                "cairn_wal_fsync_group_appends",
                "Appends made durable by one fsync",
                prometheus::exponential_buckets(1.0, 2.0, 11).unwrap_or_default(),
            ),
        };
        let fg = |name: &str, help: &str| {
            let g = Gauge::new(name, help).expect("static gauge options are valid");
            registry.register(Box::new(g.clone())).expect("metric names are unique");
            g
        };
        let snapshots = SnapshotMetrics {
            built: c(
                "cairn_snapshots_built_total",
                "Snapshots this node built from its state machine (and persisted)",
            ),
            installed: c(
                "cairn_snapshots_installed_total",
                "Snapshots this node installed from the leader",
            ),
            last_bytes: g(
                "cairn_snapshot_last_bytes",
                "Size of the last snapshot this node built or installed",
            ),
            last_build_seconds: fg(
                "cairn_snapshot_last_build_seconds",
                "Time the last snapshot build took, encoding and the synced write",
            ),
            last_install_seconds: fg(
                "cairn_snapshot_last_install_seconds",
                "Time the last snapshot install took, decoding and the synced write",
            ),
        };
        Self {
            storage,
            snapshots,
            proposal_seconds: h(
                "cairn_proposal_seconds",
                "Time from proposal to applied response, on the node the client called",
                latency_buckets(),
            ),
            leader_changes: c("cairn_raft_leader_changes_total", "Leader changes seen by this node"),
            term: g("cairn_raft_term", "Current Raft term"),
            commit_index: g("cairn_raft_commit_index", "Highest committed log index"),
            applied_index: g("cairn_raft_applied_index", "Highest applied log index"),
            is_leader: g("cairn_raft_is_leader", "1 if this node is the leader"),
            forwarded_writes: c(
                "cairn_forwarded_writes_total",
                "Writes this node forwarded to the leader",
            ),
            refused_before_log: c(
                "cairn_writes_refused_before_log_total",
                "Writes the leader's state-machine check refused without appending them to the log",
            ),
            rejected_frames: c(
                "cairn_transport_rejected_frames_total",
                "Malformed or oversized frames that closed a peer connection",
            ),
            refused_impersonations: c(
                "cairn_transport_refused_impersonations_total",
                "Peer requests refused because they claimed a node id the connection's certificate does not name",
            ),
            peer_refused: {
                let v = IntCounterVec::new(
                    prometheus::Opts::new(
                        "cairn_peer_refused_total",
                        "Peer connections closed and peer messages refused, by reason (a node speaking for another, connection limit, timeouts)",
                    ),
                    &["reason"],
                )
                .expect("static counter options are valid");
                registry.register(Box::new(v.clone())).expect("metric names are unique");
                v
            },
            registry,
        }
    }

    /// Count one refusal on the peer channel. `reason` is one of a small
    /// fixed set (a label value per reason, never a peer's input):
    /// `impersonation`, `speaks_for_another_node`, `leader_only`,
    /// `heartbeat_for_another_node`, `telemetry_for_another_node`,
    /// `connection_limit`, `handshake_timeout`,
    /// `frame_timeout`, `idle_timeout`.
    pub fn peer_refused(&self, reason: &'static str) {
        self.peer_refused.with_label_values(&[reason]).inc();
    }

    /// How many refusals of `reason` were counted (for tests and status).
    pub fn peer_refused_count(&self, reason: &str) -> u64 {
        self.peer_refused
            .get_metric_with_label_values(&[reason])
            .map(|c| c.get())
            .unwrap_or(0)
    }

    /// The registry to serve at `/metrics`.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }
}

impl Default for NodeMetrics {
    fn default() -> Self {
        Self::new()
    }
}
