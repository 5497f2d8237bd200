//! Shared set-up: worlds, a running world server, bounded polling.

use std::net::SocketAddr;
use std::time::Duration;

use cairn_hal::sim::{NoiseConfig, ServerConfig, World, WorldClient, WorldConfig, WorldServer, WorldStatus};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// A world with no sensor noise, for closed-form checks.
pub fn quiet_config() -> WorldConfig {
    WorldConfig {
        noise: NoiseConfig {
            gyro_rps_std: 0.0,
            accel_mps2_std: 0.0,
            imu_yaw_rad_std: 0.0,
            gps_m_std: 0.0,
            gps_alt_m_std: 0.0,
            gps_hdop: 1.0,
            wheel_mps_std: 0.0,
            range_m_std: 0.0,
        },
        ..WorldConfig::default()
    }
}

pub fn world(config: WorldConfig) -> World {
    World::new(config).unwrap_or_else(|e| panic!("world config refused: {e}"))
}

/// A world server on an ephemeral loopback port, stopped on drop.
pub struct RunningWorld {
    pub addr: SocketAddr,
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl RunningWorld {
    pub async fn start(config: WorldConfig, server: ServerConfig) -> Self {
        let server = WorldServer::bind("127.0.0.1:0", world(config), server)
            .await
            .unwrap_or_else(|e| panic!("bind failed: {e}"));
        let addr = server.local_addr().unwrap_or_else(|e| panic!("{e}"));
        let (tx, rx) = oneshot::channel();
        let task = tokio::spawn(async move {
            let shutdown = async {
                let _ = rx.await;
            };
            if let Err(e) = server.run(shutdown).await {
                panic!("world server failed: {e}");
            }
        });
        Self {
            addr,
            shutdown: Some(tx),
            task: Some(task),
        }
    }

    pub async fn client(&self) -> WorldClient {
        WorldClient::connect(self.addr)
            .await
            .unwrap_or_else(|e| panic!("connect failed: {e}"))
    }

    pub async fn stop(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = tokio::time::timeout(Duration::from_secs(5), task).await;
        }
    }
}

impl Drop for RunningWorld {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

/// Polls the world's status every 10 ms until `done` holds, for at most
/// `limit`; panics with the last status seen if it never does.
pub async fn wait_for(
    client: &mut WorldClient,
    limit: Duration,
    what: &str,
    done: impl Fn(&WorldStatus) -> bool,
) -> WorldStatus {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        let status = client.status().await.unwrap_or_else(|e| panic!("status failed: {e}"));
        if done(&status) {
            return status;
        }
        if tokio::time::Instant::now() >= deadline {
            panic!("timed out after {limit:?} waiting for {what}; last status: {status:#?}");
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
