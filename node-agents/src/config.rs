//! Timing and policy of the coordinator and the agents, with rover-LAN
//! defaults.
//!
//! | setting | default | why |
//! |---|---|---|
//! | `heartbeat_interval_ms` | 200 | 7 heartbeats per `Suspect` timeout: a few lost Wi-Fi frames never make a node suspect |
//! | `suspect_after_ms` | 1500 | the node keeps its tasks; the operator sees it wobble |
//! | `down_after_ms` | 3000 | the node is declared dead and its tasks move; twice the suspect time so one hiccup (an SD-card stall, a Wi-Fi roam) does not cost a task its progress |
//! | `lease_ms` | 2000 | an agent may actuate for this long after *sending* a heartbeat the leader confirmed through a quorum. Long enough to ride through a leader failover (≈ 1 s) without stopping every running task; at most two thirds of `down_after_ms`, so a cut-off holder has stopped ≥ 1 s before anyone else can be given its task |
//! | `heartbeat_timeout_ms` | 500 | one heartbeat round trip including the leader's read-index confirmation; a slower answer is worthless for the lease anyway |
//! | `coordinator_tick_ms` | 100 | how often the coordinator judges liveness and schedules; small against the timeouts above |
//! | `stall_after_ms` | 15000 | a running task with no progress report for this long is taken back and rescheduled; handlers report every few seconds at least |
//! | `progress_interval_ms` | 200 | the most often one task's progress is written to the log |
//! | `stop_grace_ms` | 200 | how long a handler may take to return after its permit is revoked before it is dropped |
//! | `policy` | `least-loaded` | spreads work so a node's death costs the fewest tasks; `bin-pack` keeps nodes free for big tasks |

use serde::Deserialize;
use serde::Serialize;

use crate::error::Error;

/// Which placement policy the coordinator uses.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PolicyName {
    /// [`crate::scheduler::LeastLoaded`].
    #[default]
    LeastLoaded,
    /// [`crate::scheduler::BinPack`].
    BinPack,
}

/// Coordinator and agent settings; see the module table for the defaults.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AgentConfig {
    /// Period of an agent's heartbeats to the leader.
    pub heartbeat_interval_ms: u64,
    /// Silence after which the coordinator marks a node `Suspect`.
    pub suspect_after_ms: u64,
    /// Silence after which the coordinator marks a node `Down`.
    pub down_after_ms: u64,
    /// How long a confirmed heartbeat lets an agent actuate.
    pub lease_ms: u64,
    /// Deadline of one heartbeat round trip.
    pub heartbeat_timeout_ms: u64,
    /// Period of the coordinator's judge-and-schedule pass.
    pub coordinator_tick_ms: u64,
    /// Silence on a running task after which it is rescheduled.
    pub stall_after_ms: u64,
    /// Minimum time between two progress writes of one task.
    pub progress_interval_ms: u64,
    /// Time a handler gets to return after losing its permit.
    pub stop_grace_ms: u64,
    /// Placement policy.
    pub policy: PolicyName,
    /// Seed of the agent's RNG (retry jitter); `None` seeds from the node id
    /// and the clock. Tests set it.
    pub rng_seed: Option<u64>,
}

impl Default for AgentConfig {
    fn default() -> Self {
        Self {
            heartbeat_interval_ms: 200,
            suspect_after_ms: 1500,
            down_after_ms: 3000,
            lease_ms: 2000,
            heartbeat_timeout_ms: 500,
            coordinator_tick_ms: 100,
            stall_after_ms: 15_000,
            progress_interval_ms: 200,
            stop_grace_ms: 200,
            policy: PolicyName::LeastLoaded,
            rng_seed: None,
        }
    }
}

impl AgentConfig {
    /// Checks the relations that keep fencing safe and detection sane.
    pub fn validate(&self) -> Result<(), Error> {
        let bad = |field, reason: String| Err(Error::Config { field, reason });
        if self.heartbeat_interval_ms == 0 || self.coordinator_tick_ms == 0 {
            return bad("heartbeat_interval_ms", "intervals must be at least 1 ms".into());
        }
        if self.suspect_after_ms < 2 * self.heartbeat_interval_ms {
            return bad(
                "suspect_after_ms",
                format!(
                    "{} ms is less than two heartbeats ({} ms each)",
                    self.suspect_after_ms, self.heartbeat_interval_ms
                ),
            );
        }
        if self.down_after_ms <= self.suspect_after_ms {
            return bad("down_after_ms", "must be greater than suspect_after_ms".into());
        }
        if self.lease_ms <= self.heartbeat_interval_ms + self.heartbeat_timeout_ms {
            return bad(
                "lease_ms",
                "must exceed one heartbeat interval plus its timeout, or every late answer stops the actuators".into(),
            );
        }
        // The safety argument: a holder's lease runs from the moment it sent
        // its last confirmed heartbeat, and nobody else gets its task before
        // `down_after_ms` of silence after that. The third left over absorbs
        // timer lateness on a loaded Pi and clock-rate differences.
        if self.lease_ms.saturating_mul(3) > self.down_after_ms.saturating_mul(2) {
            return bad(
                "lease_ms",
                format!(
                    "{} ms is more than two thirds of down_after_ms ({} ms): a cut-off node could still be actuating when its task moves",
                    self.lease_ms, self.down_after_ms
                ),
            );
        }
        if self.stall_after_ms <= self.down_after_ms {
            return bad("stall_after_ms", "must be greater than down_after_ms".into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_a_long_lease_is_refused() {
        AgentConfig::default().validate().unwrap();
        let long = AgentConfig {
            lease_ms: 2100,
            ..AgentConfig::default()
        };
        let err = long.validate().unwrap_err().to_string();
        assert!(err.contains("two thirds"), "{err}");
    }
}
