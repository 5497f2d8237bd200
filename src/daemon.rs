//! `cairn node run`: one Raft node plus its admin API.

use std::sync::Arc;

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
}

impl Daemon {
    /// Start the Raft node and serve the admin API.
    pub async fn start(config: NodeConfig) -> Result<Self, Error> {
        let node = Arc::new(RaftNode::<Mission>::start(config.raft()).await?);
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
        let app = crate::api::router(node.clone());
        let api = tokio::spawn(async move {
            if let Err(e) = axum::serve(listener, app).await {
                tracing::error!(error = %e, "admin api stopped");
            }
        });
        tracing::info!(id = config.id, api = %api_addr, raft = %node.raft_addr(), "cairn node running");
        Ok(Self { node, api_addr, api })
    }

    /// The Raft node.
    pub fn node(&self) -> &Arc<RaftNode<Mission>> {
        &self.node
    }

    /// The admin API address.
    pub fn api_addr(&self) -> &str {
        &self.api_addr
    }

    /// Stop serving and shut Raft down.
    pub async fn shutdown(self) -> Result<(), Error> {
        self.api.abort();
        match Arc::try_unwrap(self.node) {
            Ok(node) => node.shutdown().await.map_err(Error::from),
            Err(_) => Ok(()),
        }
    }
}
