//! The daemon's configuration file (`cairn node run --config FILE`).

use std::path::Path;
use std::path::PathBuf;

use cairn_raft::LogLimits;
use cairn_raft::PeerLimits;
use cairn_raft::RaftNodeConfig;
use cairn_raft::RaftTimings;
use cairn_raft::SnapshotSettings;
use serde::Deserialize;
use serde::Serialize;

use crate::error::Error;

/// Everything `cairn node run` needs. Every field has a laptop-friendly
/// default except the node id.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeConfig {
    /// Unique, stable node id (1 or more).
    pub id: u64,
    /// Transport listen address.
    #[serde(default = "default_raft_addr")]
    pub raft_addr: String,
    /// Admin API listen address.
    #[serde(default = "default_api_addr")]
    pub api_addr: String,
    /// Data directory (RocksDB).
    #[serde(default = "default_data_dir")]
    pub data_dir: PathBuf,
    /// Raft timings (see docs/DECISIONS.md, "Raft timings for a rover LAN", for the defaults' reasons).
    #[serde(default)]
    pub timings: RaftTimings,
    /// Snapshot policy.
    #[serde(default)]
    pub snapshots: SnapshotSettings,
    /// Byte bounds of log entries and replication batches (`[log]`:
    /// `max_entry_bytes`, `max_append_bytes`; see `cairn_raft::config` for
    /// the defaults and why). The admin API's body limit is
    /// `max_entry_bytes`.
    #[serde(default)]
    pub log: LogLimits,
    /// The peer port's connection cap and timeouts (`[peer]`:
    /// `max_connections`, `handshake_timeout_ms`, `frame_timeout_ms`,
    /// `idle_timeout_ms`; see `cairn_raft::config` for the defaults and why).
    #[serde(default)]
    pub peer: PeerLimits,
    /// Dial peer `id` at this address instead of its advertised one (chaos
    /// tests put a proxy on each link this way). Empty in production.
    #[serde(default, deserialize_with = "node_id_keys")]
    pub peer_dial_overrides: std::collections::BTreeMap<u64, String>,
    /// Mutual TLS between nodes (`[tls]`: `ca_cert`, `cert`, `key`, made by
    /// `cairn certs`). Absent = plaintext, which is for a bench only: anyone
    /// on the network could join the Raft group.
    #[serde(default)]
    pub tls: Option<crate::tls::TlsPaths>,
    /// Admin API security (`[api]`: `token`/`token_file`,
    /// `read_requires_token`, `tls`). Default: no token, plain HTTP (bench only).
    #[serde(default)]
    pub api: crate::api::ApiSettings,
    /// What this node can do, offered to the scheduler (e.g.
    /// `["camera", "drive"]`). Default: none (the node runs only tasks that
    /// require no capability).
    #[serde(default)]
    pub capabilities: std::collections::BTreeSet<String>,
    /// CPU that tasks may use on this node, thousandths of a core. Default
    /// 3000: three of a Pi 4's four cores, one left for Raft and the OS.
    #[serde(default = "default_cpu_millicores")]
    pub cpu_millicores: u64,
    /// Memory that tasks may use on this node, MiB. Default 1024: a quarter
    /// of a 4 GB Pi, the rest for the OS, RocksDB's caches and the daemon.
    #[serde(default = "default_memory_mib")]
    pub memory_mib: u64,
    /// Coordinator and agent timings (`[agent]`; see `cairn_agents::config`
    /// for the defaults and why).
    #[serde(default)]
    pub agent: cairn_agents::AgentConfig,
    /// Best-effort telemetry topics (`[telemetry]`: rate limits, queue
    /// sizes, payload limit, `node.stats` interval; see
    /// [`crate::telemetry::TelemetrySettings`] for the defaults and why).
    #[serde(default)]
    pub telemetry: crate::telemetry::TelemetrySettings,
    /// The rover this node drives (`[rover]`: `sim`, `perceive`,
    /// `navigate`). Default: none (the node coordinates but runs no rover
    /// handlers).
    #[serde(default)]
    pub rover: RoverSettings,
    /// Span export (`[tracing]`: `otlp_endpoint`, `otlp_filter`; see
    /// [`crate::otel::TracingSettings`]). Default: no export.
    #[serde(default)]
    pub tracing: crate::otel::TracingSettings,
    /// ROS 2 (`[ros]`: `enabled`, `domain_id`, `namespace`, `node_name`;
    /// see [`crate::ros::RosSettings`]). Default: off.
    #[serde(default)]
    pub ros: crate::ros::RosSettings,
}

/// Which rover handlers a node runs, and on what hardware.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoverSettings {
    /// Address of the simulated world (`cairn sim run`), e.g.
    /// `127.0.0.1:7700`. Absent (and no `[rover.rpi]`): no rover hardware,
    /// no rover handlers.
    #[serde(default)]
    pub sim: Option<String>,
    /// Real hardware on a Raspberry Pi (`[rover.rpi]`: pins, buses, ports;
    /// every key has a default, so an empty section means the default
    /// wiring). Needs a binary built with `--features rpi`.
    #[cfg(feature = "rpi")]
    #[serde(default)]
    pub rpi: Option<cairn_hal::rover::RpiRoverConfig>,
    /// Without the `rpi` feature the section is accepted and refused at
    /// start, with a message saying how to build for a Pi.
    #[cfg(not(feature = "rpi"))]
    #[serde(default)]
    pub rpi: Option<toml::Table>,
    /// Run `perceive` tasks (localisation, sensor health); offers the
    /// `sensors` capability. Default true.
    #[serde(default = "yes")]
    pub perceive: bool,
    /// Run `navigate` tasks (drive the plan); offers the `drive`
    /// capability. Default true.
    #[serde(default = "yes")]
    pub navigate: bool,
}

fn yes() -> bool {
    true
}

impl Default for RoverSettings {
    fn default() -> Self {
        Self {
            sim: None,
            rpi: None,
            perceive: true,
            navigate: true,
        }
    }
}

fn default_raft_addr() -> String {
    "127.0.0.1:7001".into()
}
fn default_api_addr() -> String {
    "127.0.0.1:8001".into()
}
fn default_data_dir() -> PathBuf {
    "cairn-data".into()
}
fn default_cpu_millicores() -> u64 {
    3000
}
fn default_memory_mib() -> u64 {
    1024
}

impl NodeConfig {
    /// Defaults for everything but the id (the laptop setup: plaintext, no token).
    pub fn new(id: u64) -> Self {
        Self {
            id,
            raft_addr: default_raft_addr(),
            api_addr: default_api_addr(),
            data_dir: default_data_dir(),
            timings: RaftTimings::default(),
            snapshots: SnapshotSettings::default(),
            log: LogLimits::default(),
            peer: PeerLimits::default(),
            peer_dial_overrides: Default::default(),
            tls: None,
            api: crate::api::ApiSettings::default(),
            capabilities: Default::default(),
            cpu_millicores: default_cpu_millicores(),
            memory_mib: default_memory_mib(),
            agent: cairn_agents::AgentConfig::default(),
            telemetry: crate::telemetry::TelemetrySettings::default(),
            rover: RoverSettings::default(),
            tracing: crate::otel::TracingSettings::default(),
            ros: crate::ros::RosSettings::default(),
        }
    }

    /// How this node registers with the cluster's node registry.
    pub fn node_spec(&self) -> cairn_state::NodeSpec {
        cairn_state::NodeSpec {
            id: cairn_state::NodeId(self.id),
            addresses: vec![self.raft_addr.clone()],
            capabilities: self.capabilities.clone(),
            budget: cairn_state::Resources {
                cpu_millicores: self.cpu_millicores,
                memory_mib: self.memory_mib,
            },
        }
    }

    /// Read a TOML file.
    pub fn from_file(path: &Path) -> Result<Self, Error> {
        Self::from_file_with_id(path, None)
    }

    /// Read a TOML file; `id` (the `--id` flag) overrides the file's `id`
    /// and lets one file without an `id` serve every node.
    pub fn from_file_with_id(path: &Path, id: Option<u64>) -> Result<Self, Error> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::Config {
            reason: format!("cannot read {}: {e}", path.display()),
        })?;
        let config = Self::parse(&text, id).map_err(|e| Error::Config {
            reason: format!("{}: {e}", path.display()),
        })?;
        config.validate().map_err(|reason| Error::Config {
            reason: format!("{}: {reason}", path.display()),
        })?;
        Ok(config)
    }

    /// Refuse what parses but could not run, naming the key, so a bad
    /// file stops `cairn node run` before anything starts: today the
    /// `[ros]` bindings and mirrors (an unsupported action type, a kind
    /// bound twice, a mirror that would loop).
    pub fn validate(&self) -> Result<(), String> {
        self.ros.validate()
    }

    fn parse(text: &str, id: Option<u64>) -> Result<Self, toml::de::Error> {
        let mut table: toml::Table = toml::from_str(text)?;
        if let Some(id) = id {
            // An id beyond i64 cannot be a TOML integer; let serde refuse it.
            let value = i64::try_from(id).map_or_else(|_| toml::Value::String(id.to_string()), toml::Value::Integer);
            table.insert("id".into(), value);
        }
        table.try_into()
    }

    /// The Raft part.
    pub fn raft(&self) -> RaftNodeConfig {
        let mut c = RaftNodeConfig::new(self.id, self.raft_addr.clone(), self.data_dir.clone());
        c.api_addr = self.api_addr.clone();
        c.timings = self.timings.clone();
        c.snapshots = self.snapshots.clone();
        c.log = self.log.clone();
        c.peer = self.peer.clone();
        c.peer_dial_overrides = self.peer_dial_overrides.clone();
        // The one place the process environment reaches the clock:
        // test-only, for the chaos suite's clock jumps (docs/CHAOS.md).
        c.clock = cairn_raft::WallClock::from_test_env();
        c
    }
}

/// TOML table keys are always strings: accept `{ "2" = "127.0.0.1:9102" }`
/// and turn the keys into node ids, naming a key that is not one.
fn node_id_keys<'de, D>(de: D) -> Result<std::collections::BTreeMap<u64, String>, D::Error>
where
    D: serde::Deserializer<'de>,
{
    use serde::de::Error as _;
    let raw = std::collections::BTreeMap::<String, String>::deserialize(de)?;
    raw.into_iter()
        .map(|(k, v)| {
            k.parse::<u64>()
                .map(|id| (id, v))
                .map_err(|_| D::Error::custom(format!("peer_dial_overrides key {k:?} is not a node id")))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_file_without_an_id_serves_every_node_and_the_flag_wins() {
        let c = NodeConfig::parse("[timings]\nheartbeat_interval_ms = 50\n", Some(3)).unwrap();
        assert_eq!((c.id, c.timings.heartbeat_interval_ms), (3, 50));
        let c = NodeConfig::parse("id = 1\n", Some(2)).unwrap();
        assert_eq!(c.id, 2);
        let err = NodeConfig::parse("[timings]\n", None).unwrap_err().to_string();
        assert!(err.contains("missing field `id`"), "{err}");
    }

    #[cfg(feature = "ros")]
    #[test]
    fn an_unsupported_ros_action_type_is_refused_when_the_file_is_read() {
        let dir = std::env::temp_dir().join(format!("cairn-config-ros-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("node.toml");
        let bad = "id = 1\n[ros]\nenabled = true\n[[ros.actions]]\nkind = \"spin\"\ntype = \"nav2_msgs/action/Spin\"\nname = \"spin\"\n";
        std::fs::write(&path, bad).unwrap();
        let err = NodeConfig::from_file(&path).unwrap_err().to_string();
        std::fs::remove_dir_all(&dir).ok();
        // The key (table, kind, field) and the offending value, and what
        // is supported.
        assert!(
            err.contains(
                "[[ros.actions]] kind \"spin\": type: unsupported ros 2 action type \"nav2_msgs/action/Spin\""
            ),
            "{err}"
        );
        assert!(err.contains("test_msgs/action/Fibonacci"), "{err}");
        let mut c = NodeConfig::parse(bad, None).unwrap();
        assert!(c.validate().is_err());
        c.ros.actions[0].action_type = "test_msgs/action/Fibonacci".into();
        assert_eq!(c.validate(), Ok(()));
        // A mirror with a bad direction is refused the same way.
        let c = NodeConfig::parse(
            "id = 1\n[[ros.telemetry]]\ntopic = \"rover.pose\"\ndirection = \"both\"\n",
            None,
        )
        .unwrap();
        let err = c.validate().unwrap_err();
        assert!(
            err.contains("[[ros.telemetry]] topic \"rover.pose\": direction:"),
            "{err}"
        );
    }

    #[cfg(feature = "ros")]
    #[test]
    fn the_ros_example_config_reads_and_validates() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/ros/nav2.toml");
        let c = NodeConfig::from_file(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        assert!(c.ros.enabled && c.ros.submit);
        let mirrors = crate::ros::mirrors(&c.ros).unwrap();
        assert_eq!(mirrors.len(), 2, "{mirrors:?}");
    }

    #[test]
    fn peer_dial_overrides_parse_from_toml() {
        let c: NodeConfig = toml::from_str("id = 1\n[peer_dial_overrides]\n\"2\" = \"127.0.0.1:9102\"\n").unwrap();
        assert_eq!(
            c.peer_dial_overrides.get(&2).map(String::as_str),
            Some("127.0.0.1:9102")
        );
        let err = toml::from_str::<NodeConfig>("id = 1\n[peer_dial_overrides]\nx = \"a\"\n").unwrap_err();
        assert!(err.to_string().contains("\"x\" is not a node id"), "{err}");
    }

    #[test]
    fn ros_settings_parse_from_toml_and_default_to_off_as_cairn() {
        let c: NodeConfig = toml::from_str("id = 1\n").unwrap();
        assert!(!c.ros.enabled);
        assert_eq!((c.ros.namespace.as_str(), c.ros.node_name.as_str()), ("/", "cairn"));
        let c: NodeConfig =
            toml::from_str("id = 1\n[ros]\nenabled = true\ndomain_id = 42\nnamespace = \"/pi1\"\n").unwrap();
        assert!(c.ros.enabled);
        assert_eq!((c.ros.domain_id, c.ros.namespace.as_str()), (42, "/pi1"));
        assert!(toml::from_str::<NodeConfig>("id = 1\n[ros]\ndomain = 1\n").is_err());
    }

    #[test]
    fn telemetry_settings_parse_from_toml() {
        let c: NodeConfig =
            toml::from_str("id = 1\n[telemetry]\nrate_hz = 5\n[telemetry.topic_rate_hz]\n\"sim.world\" = 2\n").unwrap();
        assert_eq!(c.telemetry.rate_hz, 5);
        assert_eq!(c.telemetry.topic_rate_hz.get("sim.world"), Some(&2));
        assert_eq!(c.telemetry.subscriber_queue, 256, "unset keys keep their defaults");
        assert!(toml::from_str::<NodeConfig>("id = 1\n[telemetry]\nrate = 5\n").is_err());
    }
}
