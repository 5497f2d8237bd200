//! `cairn node run`: one Raft node plus its admin API.

use std::sync::Arc;

use cairn_agents::action::ActionHandler;
use cairn_agents::Agent;
use cairn_agents::Coordinator;
use cairn_raft::RaftNode;
use cairn_state::Mission;
use tokio::net::TcpListener;

use crate::config::NodeConfig;
use crate::error::Error;

/// A running daemon.
pub struct Daemon {
    node: Arc<RaftNode<Mission>>,
    api_addr: String,
    api: tokio::task::JoinHandle<()>,
    coordinator: Coordinator,
    agent: Agent,
    telemetry: crate::telemetry::Telemetry,
    /// The telemetry forwarder and `node.stats` publisher (stop on drop).
    telemetry_tasks: Vec<cairn_raft::sync::AbortOnDrop>,
    /// The ROS 2 node, if `[ros] enabled` (stops on drop).
    ros: Option<crate::ros::RosHandle>,
}

impl Daemon {
    /// Start the Raft node, the coordinator supervisor and the node's agent
    /// (with no action handlers), and serve the admin API.
    pub async fn start(config: NodeConfig) -> Result<Self, Error> {
        Self::start_with_handlers(config, Vec::new()).await
    }

    /// [`Daemon::start`], with the action handlers this node runs tasks
    /// with, by task kind.
    pub async fn start_with_handlers(
        mut config: NodeConfig,
        mut handlers: Vec<(String, Arc<dyn ActionHandler>)>,
    ) -> Result<Self, Error> {
        let mut rover = crate::rover::handlers(&config.rover)?;
        config.capabilities.extend(std::mem::take(&mut rover.capabilities));
        handlers.extend(std::mem::take(&mut rover.handlers));
        let auth = crate::api::ApiAuth::from_settings(&config.api)?;
        let http_limits = config.api.http_limits()?;
        let stream_limits = config.api.stream_limits()?;
        crate::api::check_cors_origins(&config.api.cors_allowed_origins)?;
        let telemetry = crate::telemetry::Telemetry::new(config.id, config.telemetry.clone())
            .map_err(|e| Error::Config { reason: e.to_string() })?;
        let listener = TcpListener::bind(&config.api_addr)
            .await
            .map_err(|source| Error::Bind {
                addr: config.api_addr.clone(),
                source,
            })?;
        let api_addr = listener
            .local_addr()
            .map(|a| a.to_string())
            .unwrap_or_else(|_| config.api_addr.clone());
        // Bound before Raft starts so that membership records the address
        // clients can reach (a port-0 config gets a free port).
        let mut config = config;
        config.api_addr = api_addr.clone();
        let node = Arc::new(start_raft(&config).await?);
        let mut telemetry_tasks = vec![crate::telemetry::start_forwarder(node.clone(), telemetry.clone())];
        telemetry_tasks.extend(crate::telemetry::start_node_stats(telemetry.clone()));
        telemetry_tasks.extend(crate::rover::start_publishers(&telemetry, &rover, node.clone()));
        let app = crate::api::router_with(
            crate::api::Api::new(node.clone(), auth.clone())
                .with_telemetry(telemetry.clone())
                .with_stream_limits(stream_limits),
        );
        let api = match (&config.tls, config.api.tls) {
            (Some(paths), true) => {
                let tls = crate::tls::TlsApiListener::new(listener, crate::tls::api_server_config(paths)?).map_err(
                    |source| Error::Bind {
                        addr: config.api_addr.clone(),
                        source,
                    },
                )?;
                tokio::spawn(crate::api::serve::serve(tls, app, http_limits))
            }
            (None, true) => {
                return Err(Error::Config {
                    reason: "api.tls needs a [tls] section with the node's certificate".into(),
                })
            }
            (_, false) => tokio::spawn(crate::api::serve::serve(listener, app, http_limits)),
        };
        if config.tls.is_none() {
            tracing::warn!("peer transport is plaintext: any host on the network can join this cluster (bench only; see `cairn certs`)");
        }
        if !auth.is_enabled() {
            tracing::warn!(
                "admin api has no token: anyone who reaches it can change the mission (bench only; set api.token)"
            );
        }
        let coordinator = Coordinator::start(node.clone(), config.agent.clone()).map_err(agents_error)?;
        // Before the agent: the task kinds bound to ROS 2 actions are
        // handlers of this node's agent.
        let mut ros = crate::ros::start(&config.ros, node.clone(), telemetry.clone())?;
        handlers.extend(crate::ros::action_handlers(&mut ros));
        let mut spec = config.node_spec();
        // The bound transport address (the configured one may use port 0).
        spec.addresses = vec![node.raft_addr().to_string()];
        let mut agent = Agent::builder(node.clone(), spec, config.agent.clone());
        for (kind, handler) in handlers {
            agent = agent.handler(kind, handler);
        }
        let agent = agent.start().map_err(agents_error)?;
        tracing::info!(id = config.id, api = %api_addr, raft = %node.raft_addr(), "cairn node running");
        Ok(Self {
            node,
            api_addr,
            api,
            coordinator,
            agent,
            telemetry,
            telemetry_tasks,
            ros,
        })
    }

    /// This node's telemetry hub (a cheap clone): publish with
    /// `daemon.telemetry().publish("rover.pose", json)`; the message reaches
    /// subscribers on every node.
    pub fn telemetry(&self) -> crate::telemetry::Telemetry {
        self.telemetry.clone()
    }

    /// What the coordinator on this node is doing (idle unless it leads).
    pub fn coordinator_status(&self) -> cairn_agents::CoordinatorStatus {
        self.coordinator.status()
    }

    /// What this node's agent is doing.
    pub fn agent_status(&self) -> cairn_agents::AgentStatus {
        self.agent.status()
    }

    /// The Raft node.
    pub fn node(&self) -> &Arc<RaftNode<Mission>> {
        &self.node
    }

    /// The admin API address.
    pub fn api_addr(&self) -> &str {
        &self.api_addr
    }

    /// Stop gracefully: hand leadership to the most up-to-date other voter
    /// if this node leads (bounded), stop the agent (its running handlers
    /// see [`cairn_agents::action::ActionContext::stopped`] and stop their
    /// actuators) and the coordinator, stop serving the API, then stop Raft
    /// and sync the WAL.
    pub async fn shutdown(self) -> Result<(), Error> {
        match self.node.step_down().await {
            Ok(Some(to)) => tracing::info!(to, "handed leadership over before shutting down"),
            Ok(None) => {}
            // Not fatal: the others elect a leader after an election timeout.
            Err(e) => tracing::warn!(error = %e, "could not hand leadership over; shutting down anyway"),
        }
        drop(self.ros);
        drop(self.telemetry_tasks);
        drop(self.agent);
        drop(self.coordinator);
        self.api.abort();
        // Aborted agent tasks let go of the node at their next poll: wait a
        // bounded moment (50 × 10 ms) for the last reference.
        let mut node = self.node;
        for _ in 0..50 {
            match Arc::try_unwrap(node) {
                Ok(node) => return node.shutdown().await.map_err(Error::from),
                Err(back) => node = back,
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        tracing::warn!("raft node still referenced after 500 ms; dropping it without a clean shutdown");
        Ok(())
    }
}

fn agents_error(e: cairn_agents::Error) -> Error {
    Error::Config { reason: e.to_string() }
}

/// Start Raft over plain TCP, or over mutual TLS when `[tls]` is configured.
async fn start_raft(config: &NodeConfig) -> Result<RaftNode<Mission>, Error> {
    let Some(paths) = &config.tls else {
        return Ok(RaftNode::<Mission>::start(config.raft()).await?);
    };
    let dialer = crate::tls::TlsDialer::new(crate::tls::peer_client_config(paths)?);
    let acceptor = crate::tls::TlsPeerAcceptor::new(crate::tls::peer_server_config(paths)?);
    tracing::info!(ca = %paths.ca_cert.display(), cert = %paths.cert.display(), "peer transport uses mutual tls");
    Ok(RaftNode::<Mission>::start_with_transport(config.raft(), Arc::new(dialer), Arc::new(acceptor)).await?)
}
