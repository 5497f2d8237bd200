//! Start-up and shutdown: open the stores, configure openraft, start the
//! peer server and the metrics task; stop them.

use std::collections::HashMap;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Duration;

use cairn_state::StateMachine;
use openraft::type_config::async_runtime::WatchReceiver;
use openraft::SnapshotPolicy;
use tokio::sync::watch;

use super::core::Core;
use super::core::ForwardPool;
use super::core::RaftNode;
use super::health::LeaderContact;
use super::status::track_metrics;
use crate::config::RaftNodeConfig;
use crate::config::WalSync;
use crate::consensus::network::NetConfig;
use crate::consensus::network::NetworkFactory;
use crate::consensus::sm_store::StateMachineStore;
use crate::error::Error;
use crate::metrics::NodeMetrics;
use crate::transport::Acceptor;
use crate::transport::Dialer;
use crate::transport::Listener;
use crate::transport::PlainAcceptor;
use crate::transport::TcpDialer;
use crate::transport::TcpPeerListener;

/// How long [`RaftNode::start`] waits for the Raft core's first metrics
/// report (it comes within milliseconds of the core starting).
const FIRST_METRICS_WITHIN: Duration = Duration::from_secs(5);

impl<S: StateMachine> RaftNode<S> {
    /// Open the data dir, listen for peers and start Raft over TCP.
    pub async fn start(config: RaftNodeConfig) -> Result<Self, Error> {
        Self::start_with_dialer(config, Arc::new(TcpDialer)).await
    }

    /// Like [`RaftNode::start`], with a custom [`Dialer`] between this node
    /// and its peers (fault injection, proxies, simulated networks).
    pub async fn start_with_dialer(config: RaftNodeConfig, dialer: Arc<dyn Dialer>) -> Result<Self, Error> {
        Self::start_with_transport(config, dialer, Arc::new(PlainAcceptor)).await
    }

    /// Like [`RaftNode::start_with_dialer`], with an [`Acceptor`] that wraps
    /// every accepted peer connection (mutual TLS in the `cairn` daemon).
    pub async fn start_with_transport(
        config: RaftNodeConfig,
        dialer: Arc<dyn Dialer>,
        acceptor: Arc<dyn Acceptor>,
    ) -> Result<Self, Error> {
        config.validate()?;
        let listener = tokio::net::TcpListener::bind(&config.listen_addr)
            .await
            .map_err(|source| Error::Bind {
                addr: config.listen_addr.clone(),
                source,
            })?;
        let bound = listener
            .local_addr()
            .map_err(|source| Error::Bind {
                addr: config.listen_addr.clone(),
                source,
            })?
            .to_string();
        let raft_addr = config.advertise_addr.clone().unwrap_or(bound);
        let listener = Box::new(TcpPeerListener::new(listener, acceptor));
        Self::start_with_listener(config, raft_addr, listener, dialer, WalSync::GroupCommit).await
    }

    /// Start on a transport of the caller's making: peers connect through
    /// `listener` and are dialled through `dialer`, `raft_addr` is the
    /// address this node reports, and `wal_sync` says how appends are made
    /// durable. `config.listen_addr` is not used. This is how the
    /// simulation tier runs the real node on a simulated network
    /// (docs/CHAOS.md, "Simulation tier").
    pub async fn start_with_listener(
        config: RaftNodeConfig,
        raft_addr: String,
        listener: Box<dyn Listener>,
        dialer: Arc<dyn Dialer>,
        wal_sync: WalSync,
    ) -> Result<Self, Error> {
        config.validate()?;
        crate::consensus::staging::clean_snapshot_staging(&config.data_dir);
        let t = &config.timings;
        let metrics = NodeMetrics::new();
        let db = crate::storage::open_db(&config.data_dir)?;
        let mut log_store = crate::consensus::log_store::LogStore::new(db.clone(), metrics.storage.clone(), wal_sync)
            .map_err(|source| Error::Storage {
            what: "start wal sync thread".into(),
            source,
        })?;
        log_store.max_append_bytes = config.log.max_append_bytes;
        let mut sm = StateMachineStore::<S>::open(db)
            .await
            .map_err(|source| Error::Storage {
                what: "restore state machine".into(),
                source,
            })?;
        sm.in_flight = log_store.in_flight.clone();
        sm.metrics = Some(metrics.snapshots.clone());
        let shared = sm.shared.clone();

        let raft_config = openraft::Config {
            cluster_name: "cairn".into(),
            heartbeat_interval: t.heartbeat_interval_ms,
            election_timeout_min: t.election_timeout_ms_min,
            election_timeout_max: t.election_timeout_ms_max,
            install_snapshot_timeout: t.install_snapshot_timeout_ms,
            snapshot_policy: SnapshotPolicy::LogsSinceLast(config.snapshots.snapshot_every_entries),
            max_in_snapshot_log_to_keep: config.snapshots.logs_kept_after_snapshot,
            enable_pre_vote: Some(true),
            // Replicate an entry as soon as it is written locally, in parallel
            // with the local fsync: a commit then costs one fsync, not two in a row.
            broadcast_submitted_on_append: Some(true),
            // Leadership after a restart only through an election (Raft
            // §5.4), never openraft's default "leader restore". A commit may
            // rest on the followers' disks alone (above, and because any
            // majority commits), so a leader that loses power can come back
            // with a shorter log; restored in its old term it would append
            // new entries under log ids the followers hold for others, and
            // acknowledged writes would be lost with the replicas split for
            // good (issue 25; docs/DECISIONS.md, "Departures from
            // textbook Raft"). An election costs the restart about one
            // election timeout.
            enable_leader_restore: Some(false),
            ..Default::default()
        };
        let raft_config = Arc::new(raft_config.validate().map_err(|e| Error::Config {
            field: "timings",
            reason: e.to_string(),
        })?);
        let dialer: Arc<dyn Dialer> = if config.peer_dial_overrides.is_empty() {
            dialer
        } else {
            Arc::new(crate::transport::OverrideDialer::new(
                dialer,
                config.peer_dial_overrides.clone(),
            ))
        };
        let net = NetConfig {
            self_id: config.id,
            dialer,
            max_frame_bytes: config.max_frame_bytes,
            connect_timeout: Duration::from_millis(t.connect_timeout_ms),
            backoff_min: Duration::from_millis(t.reconnect_backoff_ms_min),
            backoff_max: Duration::from_millis(t.reconnect_backoff_ms_max),
            // As long as a follower stays loyal without hearing from the
            // leader (the lease, then an election timeout): a slow link
            // (100-250 ms one way on bad Wi-Fi) slows commits down instead
            // of failing every RPC (jepsen F3).
            rpc_timeout_min: Duration::from_millis(t.election_timeout_ms_min + t.election_timeout_ms_max),
        };
        let log_reader = log_store.clone();
        let raft = openraft::Raft::new(
            config.id,
            raft_config,
            NetworkFactory { cfg: net.clone() },
            log_store,
            sm,
        )
        .await
        .map_err(|e| Error::Fatal { reason: e.to_string() })?;
        // Until the Raft core's first report its metrics are openraft's
        // initial ones (term 0, learner, no log), whatever is on disk: a
        // status read then would show a restarted node's term going back.
        // The core reports as soon as it runs; bounded in case it never does
        // (it then failed, and its metrics say so).
        let mut first_report = raft.metrics();
        if tokio::time::timeout(FIRST_METRICS_WITHIN, first_report.changed())
            .await
            .is_err()
        {
            tracing::warn!(
                within_ms = FIRST_METRICS_WITHIN.as_millis() as u64,
                "the raft core has not reported its state yet; status may read as a fresh node"
            );
        }

        let core = Arc::new(Core {
            id: config.id,
            raft,
            shared,
            log: log_reader,
            metrics,
            data_dir: config.data_dir.clone(),
            max_frame_bytes: config.max_frame_bytes,
            peer: config.peer.clone(),
            snapshot_staging: crate::consensus::staging::StagingBudget::new(config.snapshots.max_incoming_bytes),
            max_entry_bytes: config.log.max_entry_bytes,
            write_timeout: Duration::from_millis(t.write_timeout_ms),
            election_timeout_max: Duration::from_millis(t.election_timeout_ms_max),
            forward: ForwardPool {
                net,
                peers: tokio::sync::Mutex::new(HashMap::new()),
            },
            clock: config.clock,
            last_stamp_ms: AtomicU64::new(0),
            app_handlers: std::sync::RwLock::new(HashMap::new()),
            leader_contact: Arc::new(LeaderContact::new()),
        });
        let (shutdown, shutdown_rx) = watch::channel(false);
        let server = tokio::spawn(crate::consensus::server::serve(
            listener,
            core.clone(),
            shutdown_rx.clone(),
        ));
        let gauges = tokio::spawn(track_metrics(core.clone(), shutdown_rx));
        tracing::info!(id = config.id, raft_addr = %raft_addr, "raft node started");
        Ok(Self {
            core,
            raft_addr,
            shutdown,
            tasks: vec![server, gauges],
        })
    }

    /// Stop Raft and the transport. Pending writes fail.
    pub async fn shutdown(mut self) -> Result<(), Error> {
        let _ = self.shutdown.send(true);
        let res = self.core.raft.shutdown().await;
        for t in self.tasks.drain(..) {
            t.abort();
        }
        // Everything acknowledged is synced already; this makes the rest
        // (the committed index, say) durable too, so a restart replays less.
        if let Err(e) = self.core.log.sync_wal().await {
            tracing::warn!(error = %e, "final wal sync at shutdown failed");
        }
        res.map_err(|e| Error::Fatal { reason: e.to_string() })
    }
}

impl<S: StateMachine> Drop for RaftNode<S> {
    fn drop(&mut self) {
        let _ = self.shutdown.send(true);
        for t in &self.tasks {
            t.abort();
        }
    }
}
