//! The `[ros]` settings and, with the `ros` feature, the ROS 2 side of a
//! node: [`cairn_ros::RosBridge`] fed by this node's Raft node through
//! [`RaftParams`], this crate's implementation of [`cairn_ros::CairnNode`].

use serde::Deserialize;
use serde::Serialize;

/// `[ros]`: whether this node runs a ROS 2 node, and where. Off by default.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RosSettings {
    /// Run the ROS 2 node (standard parameter services and
    /// `/parameter_events`). Default false. Needs a binary built with the
    /// `ros` feature (on by default).
    #[serde(default)]
    pub enabled: bool,
    /// DDS domain: the `ROS_DOMAIN_ID` of the ROS 2 nodes to talk to.
    /// Default 0, ROS 2's default.
    #[serde(default)]
    pub domain_id: u16,
    /// ROS 2 namespace of the node. Default `/`, so the node is `/cairn`;
    /// give each Pi its own (`/pi1`, …) when several run ROS 2 in one
    /// domain, so a tool can address one of them.
    #[serde(default = "default_namespace")]
    pub namespace: String,
    /// Base name of the node. Default `cairn`.
    #[serde(default = "default_node_name")]
    pub node_name: String,
}

fn default_namespace() -> String {
    "/".into()
}

fn default_node_name() -> String {
    "cairn".into()
}

impl Default for RosSettings {
    fn default() -> Self {
        Self {
            enabled: false,
            domain_id: 0,
            namespace: default_namespace(),
            node_name: default_node_name(),
        }
    }
}

#[cfg(feature = "ros")]
pub use enabled::start;
#[cfg(feature = "ros")]
pub use enabled::RaftParams;

/// The running ROS 2 node, dropped to stop it.
#[cfg(feature = "ros")]
pub type RosHandle = cairn_ros::RosBridge;
/// Nothing runs without the `ros` feature.
#[cfg(not(feature = "ros"))]
pub type RosHandle = ();

/// Without the `ros` feature, `[ros] enabled = true` is refused at start.
#[cfg(not(feature = "ros"))]
pub fn start(
    settings: &RosSettings,
    _node: std::sync::Arc<cairn_raft::RaftNode<cairn_state::Mission>>,
) -> Result<Option<RosHandle>, crate::error::Error> {
    if settings.enabled {
        return Err(crate::error::Error::Config {
            reason: "[ros] enabled = true needs a binary built with the `ros` feature (on by default)".into(),
        });
    }
    Ok(None)
}

#[cfg(feature = "ros")]
mod enabled {
    use std::sync::Arc;
    use std::time::Duration;

    use cairn_raft::RaftNode;
    use cairn_ros::CairnNode;
    use cairn_ros::SetParamError;
    use cairn_state::Command;
    use cairn_state::Mission;
    use cairn_state::Param;
    use cairn_state::ParamChange;
    use cairn_state::ParamValue;
    use cairn_state::Response;
    use futures::stream::BoxStream;
    use futures::StreamExt;

    use super::RosSettings;
    use crate::error::Error;

    /// Pause before following the log again after the watch failed (this
    /// node fell so far behind that its log was compacted, or it stops):
    /// long enough not to spin, short next to a human's patience.
    const REWATCH_DELAY_MS: u64 = 500;

    /// [`CairnNode`] on a Raft node: reads are local, sets are replicated
    /// writes (forwarded to the leader), changes come from the watch of
    /// applied entries.
    pub struct RaftParams {
        node: Arc<RaftNode<Mission>>,
    }

    impl RaftParams {
        /// The parameters of `node`.
        pub fn new(node: Arc<RaftNode<Mission>>) -> Self {
            Self { node }
        }
    }

    impl CairnNode for RaftParams {
        fn params(&self) -> Vec<Param> {
            self.node.local_state(|m| m.params().cloned().collect())
        }

        async fn set_param(&self, name: String, value: ParamValue) -> Result<u64, SetParamError> {
            let out = self
                .node
                .write(Command::SetParam { name, value })
                .await
                .map_err(|e| SetParamError::Unavailable { reason: e.to_string() })?;
            match out.response {
                Ok(Response::ParamChanged { version, .. }) => Ok(version),
                Ok(other) => Err(SetParamError::Unavailable {
                    reason: format!("SetParam at index {} answered {other:?}", out.index),
                }),
                Err(refusal) => Err(SetParamError::Refused {
                    reason: refusal.to_string(),
                }),
            }
        }

        fn param_changes(&self) -> BoxStream<'static, ParamChange> {
            let node = self.node.clone();
            let from = node.status().applied_index.unwrap_or(0) + 1;
            let watch = node.watch(from).ok();
            // Per applied entry: the parameter change it made, if any.
            futures::stream::unfold((node, watch), |(node, mut watch)| async move {
                loop {
                    let Some(w) = watch.as_mut() else {
                        tokio::time::sleep(Duration::from_millis(REWATCH_DELAY_MS)).await;
                        let from = node.status().applied_index.unwrap_or(0) + 1;
                        watch = node.watch(from).ok();
                        continue;
                    };
                    match w.next().await {
                        Ok(change) => {
                            let Some(Ok(Response::ParamChanged { version, .. })) = change.response else {
                                continue;
                            };
                            let found = node.local_state(|m| m.param_changes().find(|c| c.version == version).cloned());
                            if let Some(found) = found {
                                return Some((Some(found), (node, watch)));
                            }
                        }
                        Err(e) => {
                            tracing::warn!(error = %e, "parameter watch for ros 2 failed; following again from now");
                            watch = None;
                        }
                    }
                }
            })
            .filter_map(futures::future::ready)
            .boxed()
        }
    }

    /// Start the ROS 2 node if `[ros] enabled`.
    pub fn start(settings: &RosSettings, node: Arc<RaftNode<Mission>>) -> Result<Option<cairn_ros::RosBridge>, Error> {
        if !settings.enabled {
            return Ok(None);
        }
        let options = cairn_ros::RosOptions {
            domain_id: settings.domain_id,
            namespace: settings.namespace.clone(),
            node_name: settings.node_name.clone(),
        };
        let bridge = cairn_ros::RosBridge::start(&options, Arc::new(RaftParams::new(node)))
            .map_err(|e| Error::Config { reason: e.to_string() })?;
        Ok(Some(bridge))
    }
}
