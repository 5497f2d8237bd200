//! Node configuration with rover-LAN defaults.
//!
//! | setting | default | why |
//! |---|---|---|
//! | `heartbeat_interval_ms` | 50 | 5+ heartbeats per election timeout: a few lost Wi-Fi frames never trigger an election; 3 nodes × 2 peers × 20/s is nothing on a LAN |
//! | `election_timeout_ms_min` | 250 | a follower starts an election only after the leader lease (`election_timeout_ms_max`) *and* this have passed without a heartbeat, ≥ 600 ms: three times a Pi SD card's p99 fsync stall (~100–200 ms, during which a follower's heartbeats queue behind its append), so a slow disk is not mistaken for a dead leader |
//! | `election_timeout_ms_max` | 350 | openraft's leader lease equals this, so a voter refuses the first (pre-)vote of a follower that timed out early; failover is lease + timeout + a vote and a commit ≈ 0.7–0.8 s (measured: `docs/BENCHMARKS.md`), under the rover's one-second budget. The 100 ms window keeps split votes rare on a LAN (RTT ≪ 1 ms) |
//! | `connect_timeout_ms` | 300 | a LAN connect takes < 5 ms; longer means the peer is gone |
//! | `reconnect_backoff_ms_min`/`max` | 50 / 2000 | exponential with jitter between these |
//! | `write_timeout_ms` | 5000 | a write that cannot commit for 5 s reports "outcome unknown" instead of hanging |
//! | `snapshot_every_entries` | 10000 | a snapshot of a mission state is small (< 1 MiB); this bounds replay on restart to seconds |
//! | `logs_kept_after_snapshot` | 1000 | lets a briefly lagging follower catch up from the log, not a snapshot |
//! | `snapshots.max_incoming_bytes` | 1 GiB | incoming snapshot chunks are staged on disk (`snapshot-incoming/*.part`) until the last arrives; this bounds them, all peer connections together, so a peer streaming without end cannot fill the SD card. A mission snapshot is well under 1 MiB in practice, and installing one reads it into memory, so a legitimate snapshot near 1 GiB would fail on a Pi anyway. A chunk past it is refused, its transfer dropped, logged and counted (`cairn_peer_refused_total{reason="snapshot_over_budget"}`) |
//! | `log.max_entry_bytes` | 1 MiB | the largest encoded command one log entry may carry (the entry adds at most [`ENTRY_HEADER_MAX_BYTES`]); a larger write is refused before it is proposed ([`crate::Error::EntryTooLarge`]). The admin API's body limit is the same number: a command encodes smaller than its JSON (postcard has no field names or quotes) except for long arrays of short floats, so an API write is refused for its size as a body (413 `body_too_large`) before it could be as an entry. 16 times under `max_frame_bytes`, so an entry always fits a replication frame |
//! | `log.max_append_bytes` | 2 MiB | the most bytes of entries one AppendEntries carries (at least one entry, whatever its size): openraft bounds a batch by count only (`max_payload_entries`, 300), and 300 large entries would not fit a frame, so the follower could never catch up. 2 MiB is two maximum entries or thousands of ordinary ones, sent in ~0.2 s on the rover's 100 Mbit/s LAN (well inside one RPC deadline); with 32 batches in flight per follower it bounds a catching-up follower's queue to 64 MiB |
//! | `peer.max_connections` | 64 | peer connections served at once (handshaking ones included); a cluster needs a few per peer, so 64 serves a dozen nodes with room, while a flood of held connections costs at most 64 × (read buffer + the frame being received) instead of memory without bound. A connection over the cap is closed at once, logged and counted (`cairn_peer_refused_total{reason="connection_limit"}`) |
//! | `peer.handshake_timeout_ms` | 5000 | TLS and the cairn hello must complete within this: a LAN handshake takes milliseconds, and a silent connection would hold a slot |
//! | `peer.frame_timeout_ms` | 30000 | once a frame's first byte arrives, the whole frame must arrive within this: the largest frame (16 MiB) takes ~1.3 s on the rover's 100 Mbit/s LAN, so only a stalled or trickling sender hits it |
//! | `peer.idle_timeout_ms` | 600000 | a connection that sends no frame for this long is closed: a live peer sends heartbeats many times a second, and a dialer re-dials on its next request; 10 minutes so an idle operator cluster does not churn connections |

use std::path::PathBuf;

use serde::Deserialize;
use serde::Serialize;

use crate::error::Error;
use crate::frame::DEFAULT_MAX_FRAME_BYTES;

/// The most bytes a log entry adds around its encoded command: its log id
/// (term, leader, index), the payload tag and the proposal's client tag,
/// timestamp and fence term, all postcard varints (78 bytes at most; a unit
/// test checks the bound against an encoded worst case).
pub const ENTRY_HEADER_MAX_BYTES: usize = 128;

/// The most bytes an AppendEntries frame adds around its entries: the
/// request id, the vote, the previous and committed log ids and the entry
/// count (about 100 bytes at most; a unit test checks the bound).
pub const APPEND_HEADER_MAX_BYTES: usize = 256;

/// Byte bounds of the log and of replication; see the module table for the
/// defaults' reasons.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogLimits {
    /// The largest encoded command one log entry may carry.
    pub max_entry_bytes: usize,
    /// The most bytes of entries one AppendEntries request carries (a
    /// batch always carries at least one entry).
    pub max_append_bytes: usize,
}

impl Default for LogLimits {
    fn default() -> Self {
        Self {
            max_entry_bytes: 1 << 20,
            max_append_bytes: 2 << 20,
        }
    }
}

/// Bounds of the peer port's connections; see the module table for the
/// defaults' reasons.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PeerLimits {
    /// Peer connections served at once; more are closed on arrival.
    pub max_connections: usize,
    /// TLS handshake plus the cairn hello, per connection.
    pub handshake_timeout_ms: u64,
    /// From a frame's first byte to its last.
    pub frame_timeout_ms: u64,
    /// Between frames: a connection silent this long is closed.
    pub idle_timeout_ms: u64,
}

impl Default for PeerLimits {
    fn default() -> Self {
        Self {
            max_connections: 64,
            handshake_timeout_ms: 5_000,
            frame_timeout_ms: 30_000,
            idle_timeout_ms: 600_000,
        }
    }
}

/// Raft timings; see the module table for the defaults' reasons.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RaftTimings {
    /// Leader heartbeat period.
    pub heartbeat_interval_ms: u64,
    /// Lower bound of the randomised election timeout.
    pub election_timeout_ms_min: u64,
    /// Upper bound of the randomised election timeout.
    pub election_timeout_ms_max: u64,
    /// Deadline for opening a peer connection.
    pub connect_timeout_ms: u64,
    /// First reconnect delay after a failure.
    pub reconnect_backoff_ms_min: u64,
    /// Cap of the reconnect delay.
    pub reconnect_backoff_ms_max: u64,
    /// How long a client write may wait to commit.
    pub write_timeout_ms: u64,
    /// Deadline for one snapshot chunk.
    pub install_snapshot_timeout_ms: u64,
}

impl Default for RaftTimings {
    fn default() -> Self {
        Self {
            heartbeat_interval_ms: 50,
            election_timeout_ms_min: 250,
            election_timeout_ms_max: 350,
            connect_timeout_ms: 300,
            reconnect_backoff_ms_min: 50,
            reconnect_backoff_ms_max: 2000,
            write_timeout_ms: 5000,
            install_snapshot_timeout_ms: 10_000,
        }
    }
}

/// When snapshots are taken and how much log is kept behind them.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SnapshotSettings {
    /// Build a snapshot after this many entries since the last one.
    pub snapshot_every_entries: u64,
    /// Entries kept in the log behind a snapshot.
    pub logs_kept_after_snapshot: u64,
    /// The most bytes of incoming snapshots this node stages on disk at
    /// once, over all peer connections; a chunk past it is refused and its
    /// transfer dropped.
    pub max_incoming_bytes: u64,
}

impl Default for SnapshotSettings {
    fn default() -> Self {
        Self {
            snapshot_every_entries: 10_000,
            logs_kept_after_snapshot: 1000,
            max_incoming_bytes: 1 << 30,
        }
    }
}

/// How the log store makes appends durable before acknowledging them.
///
/// Not a setting of [`RaftNodeConfig`]: the daemon always group-commits;
/// [`WalSync::Inline`] and [`WalSync::SimulatedDisk`] exist for the
/// deterministic simulation (docs/CHAOS.md, "Simulation tier").
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum WalSync {
    /// A dedicated thread fsyncs the WAL once for every append waiting
    /// (group commit) and then reports them durable. The production mode.
    #[default]
    GroupCommit,
    /// Each append is written with `sync` in its own blocking call and
    /// reported durable when that call returns. Slower (one fsync per
    /// append), but all storage work runs on the runtime's blocking pool: a
    /// simulated clock (turmoil, tokio's paused time) does not advance while
    /// it runs, whereas a wait on a thread of our own would let simulated
    /// time race ahead of the disk.
    Inline,
    /// Simulation only: a disk that loses, at a power cut, everything not
    /// yet flushed. An append is readable at once (from memory) but reaches
    /// RocksDB, and is reported durable, only after the disk's flush delay
    /// in *tokio* time (simulated under turmoil); every other write (vote,
    /// committed index, truncation, purge) queues behind it in order, as in
    /// one WAL, and a synced one (vote, truncation) returns only once it is
    /// written. Whatever is still queued when the host's runtime is dropped
    /// (a simulated crash) never reaches the store: that is the power cut.
    /// See [`SimulatedDisk`].
    SimulatedDisk(SimulatedDisk),
}

/// The simulation's handle on one host's disk ([`WalSync::SimulatedDisk`]):
/// its flush delay, which the harness may change at any time (e.g. make the
/// current leader's disk the slow one), and watermarks of what the log
/// store appended and what it made durable. The harness keeps the handle
/// across a crash and gives the same one to the restarted node; at the
/// crash, `appended_index - durable_index` is what the power cut dropped.
#[derive(Clone, Debug, Default)]
pub struct SimulatedDisk {
    inner: std::sync::Arc<SimulatedDiskState>,
}

#[derive(Debug, Default)]
struct SimulatedDiskState {
    flush_delay_us: std::sync::atomic::AtomicU64,
    appended_index: std::sync::atomic::AtomicU64,
    durable_index: std::sync::atomic::AtomicU64,
}

impl PartialEq for SimulatedDisk {
    /// The same disk (handle identity), not equal settings.
    fn eq(&self, other: &Self) -> bool {
        std::sync::Arc::ptr_eq(&self.inner, &other.inner)
    }
}

impl Eq for SimulatedDisk {}

impl SimulatedDisk {
    /// A disk whose writes become durable `flush_delay` after they are made.
    pub fn new(flush_delay: std::time::Duration) -> Self {
        let disk = Self::default();
        disk.set_flush_delay(flush_delay);
        disk
    }

    /// Change the flush delay; writes already queued keep their time, and
    /// no write ever becomes durable before one queued ahead of it.
    pub fn set_flush_delay(&self, flush_delay: std::time::Duration) {
        let us = u64::try_from(flush_delay.as_micros()).unwrap_or(u64::MAX);
        self.inner
            .flush_delay_us
            .store(us, std::sync::atomic::Ordering::Relaxed);
    }

    /// The current flush delay.
    pub fn flush_delay(&self) -> std::time::Duration {
        std::time::Duration::from_micros(self.inner.flush_delay_us.load(std::sync::atomic::Ordering::Relaxed))
    }

    /// Index of the last entry appended (readable, maybe not durable);
    /// 0 before any.
    pub fn appended_index(&self) -> u64 {
        self.inner.appended_index.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Index of the last entry appended that is durable (written to the
    /// store); a crash now keeps the log up to here.
    pub fn durable_index(&self) -> u64 {
        self.inner.durable_index.load(std::sync::atomic::Ordering::Relaxed)
    }

    pub(crate) fn set_appended_index(&self, index: u64) {
        self.inner
            .appended_index
            .store(index, std::sync::atomic::Ordering::Relaxed);
    }

    pub(crate) fn set_durable_index(&self, index: u64) {
        self.inner
            .durable_index
            .store(index, std::sync::atomic::Ordering::Relaxed);
    }
}

/// Everything a Raft node needs to start.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RaftNodeConfig {
    /// This node's id: unique in the cluster, never reused for another node.
    pub id: u64,
    /// Address the transport listens on (`0` port picks a free one).
    pub listen_addr: String,
    /// Address peers dial; defaults to the bound listen address.
    #[serde(default)]
    pub advertise_addr: Option<String>,
    /// Address of this node's admin API, recorded in membership so clients
    /// can be pointed at the leader.
    #[serde(default)]
    pub api_addr: String,
    /// Directory of the RocksDB database and incoming snapshots.
    pub data_dir: PathBuf,
    /// Raft timings.
    #[serde(default)]
    pub timings: RaftTimings,
    /// Snapshot policy.
    #[serde(default)]
    pub snapshots: SnapshotSettings,
    /// Dial these peers at these addresses instead of their advertised ones
    /// (e.g. through a fault-injecting proxy). Empty in production.
    #[serde(default)]
    pub peer_dial_overrides: std::collections::BTreeMap<u64, String>,
    /// Largest frame accepted from a peer.
    #[serde(default = "default_max_frame_bytes")]
    pub max_frame_bytes: usize,
    /// Byte bounds of log entries and replication batches.
    #[serde(default)]
    pub log: LogLimits,
    /// Connection cap and timeouts of the peer port.
    #[serde(default)]
    pub peer: PeerLimits,
    /// The wall clock this node stamps proposals with (the system clock;
    /// tests shift it). Not a setting of the file.
    #[serde(skip)]
    pub clock: crate::clock::WallClock,
}

fn default_max_frame_bytes() -> usize {
    DEFAULT_MAX_FRAME_BYTES
}

impl RaftNodeConfig {
    /// A config with defaults for everything but identity and placement.
    pub fn new(id: u64, listen_addr: impl Into<String>, data_dir: impl Into<PathBuf>) -> Self {
        Self {
            id,
            listen_addr: listen_addr.into(),
            advertise_addr: None,
            api_addr: String::new(),
            data_dir: data_dir.into(),
            timings: RaftTimings::default(),
            snapshots: SnapshotSettings::default(),
            peer_dial_overrides: Default::default(),
            max_frame_bytes: DEFAULT_MAX_FRAME_BYTES,
            log: LogLimits::default(),
            peer: PeerLimits::default(),
            clock: crate::clock::WallClock::SYSTEM,
        }
    }

    /// Check the settings that would make a cluster misbehave.
    pub fn validate(&self) -> Result<(), Error> {
        let t = &self.timings;
        let bad = |field: &'static str, reason: String| Err(Error::Config { field, reason });
        if self.id == 0 {
            return bad("id", "node id 0 is reserved; use 1 or more".into());
        }
        if t.heartbeat_interval_ms == 0 {
            return bad("timings.heartbeat_interval_ms", "must be at least 1".into());
        }
        if t.election_timeout_ms_min < 3 * t.heartbeat_interval_ms {
            return bad(
                "timings.election_timeout_ms_min",
                format!(
                    "{} ms is less than 3 heartbeats ({} ms each); followers would start elections under a healthy leader",
                    t.election_timeout_ms_min, t.heartbeat_interval_ms
                ),
            );
        }
        if t.election_timeout_ms_max <= t.election_timeout_ms_min {
            return bad(
                "timings.election_timeout_ms_max",
                "must be greater than election_timeout_ms_min".into(),
            );
        }
        if self.snapshots.snapshot_every_entries == 0 {
            return bad("snapshots.snapshot_every_entries", "must be at least 1".into());
        }
        if self.snapshots.max_incoming_bytes < (1 << 20) {
            return bad(
                "snapshots.max_incoming_bytes",
                "must be at least 1 MiB (one snapshot chunk)".into(),
            );
        }
        if self.max_frame_bytes < (2 << 20) {
            return bad(
                "max_frame_bytes",
                "must be at least 2 MiB (a 1 MiB snapshot chunk plus headers)".into(),
            );
        }
        // A frame's length prefix is a u32 (`crate::frame`).
        if u32::try_from(self.max_frame_bytes).is_err() {
            return bad("max_frame_bytes", format!("must be at most {} (4 GiB)", u32::MAX));
        }
        let p = &self.peer;
        if p.max_connections == 0 || p.max_connections > 65_536 {
            return bad("peer.max_connections", "must be 1 to 65536".into());
        }
        for (field, ms) in [
            ("peer.handshake_timeout_ms", p.handshake_timeout_ms),
            ("peer.frame_timeout_ms", p.frame_timeout_ms),
            ("peer.idle_timeout_ms", p.idle_timeout_ms),
        ] {
            if ms == 0 {
                return bad(field, "must be at least 1".into());
            }
        }
        if p.idle_timeout_ms <= t.heartbeat_interval_ms {
            return bad(
                "peer.idle_timeout_ms",
                format!(
                    "{} ms does not exceed the heartbeat interval ({} ms): the leader's own connections would be closed",
                    p.idle_timeout_ms, t.heartbeat_interval_ms
                ),
            );
        }
        let l = &self.log;
        if l.max_entry_bytes == 0 {
            return bad("log.max_entry_bytes", "must be at least 1".into());
        }
        if l.max_entry_bytes.saturating_add(ENTRY_HEADER_MAX_BYTES) > l.max_append_bytes {
            return bad(
                "log.max_append_bytes",
                format!(
                    "{} bytes cannot carry one entry of log.max_entry_bytes ({}) plus its {ENTRY_HEADER_MAX_BYTES}-byte header",
                    l.max_append_bytes, l.max_entry_bytes
                ),
            );
        }
        if l.max_append_bytes.saturating_add(APPEND_HEADER_MAX_BYTES) > self.max_frame_bytes {
            return bad(
                "log.max_append_bytes",
                format!(
                    "{} bytes plus the {APPEND_HEADER_MAX_BYTES}-byte request header exceed max_frame_bytes ({}): an append would not fit a frame",
                    l.max_append_bytes, self.max_frame_bytes
                ),
            );
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_frame_cap_beyond_the_u32_length_prefix_is_refused() {
        let mut c = RaftNodeConfig::new(1, "127.0.0.1:0", "/tmp/x");
        c.validate().expect("defaults are valid");
        c.max_frame_bytes = u32::MAX as usize;
        c.validate().expect("the largest u32 is a valid cap");
        c.max_frame_bytes = u32::MAX as usize + 1;
        let err = c.validate().expect_err("the prefix cannot say it").to_string();
        assert!(err.contains("max_frame_bytes"), "{err}");
    }
}
