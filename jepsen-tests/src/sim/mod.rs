//! The deterministic simulation tier: the real cairn-raft node, several of
//! them in one process, on turmoil's simulated network and clock.
//!
//! Each simulated host runs [`RaftNode::start_with_listener`] with the
//! production openraft config (rover-LAN timings), RocksDB log and
//! state-machine stores, framed postcard transport and leader forwarding;
//! only the sockets ([`net`]), the state machine ([`ledger::Ledger`]) and the
//! WAL sync mode ([`WalSync::Inline`]) are the simulation's. A client on
//! every host writes unique values through that host's
//! [`RaftNode::write`] (forwarded to the leader when the host does not
//! lead), while a seeded nemesis partitions hosts, holds links, crashes and
//! restarts hosts, over links of seeded latency. Every few simulated
//! milliseconds each host reports its role, term, log and applied writes,
//! and [`check::Checker`] checks Raft safety on them; at the end the
//! network heals, the cluster must converge, and every acknowledged write
//! must be applied at its index on every node, and replicas at one applied
//! index must hold the same state (the same [`RaftNode::state_hash`]).
//!
//! # Scenarios
//! [`Scenario::Faults`] is the general one above. [`Scenario::PowerCut`]
//! (issue 25) runs every host on a [`SimulatedDisk`] that loses unflushed
//! writes at a crash, keeps the current leader's disk slow (15–60 ms per
//! flush) and the followers' fast, writes quickly through every host, and
//! repeatedly cuts the leader's power while followers hold entries it has
//! not flushed, restarting it at once or within 500 ms.
//! [`Scenario::SlowFollower`] (issue 20) gives one follower an SD card's
//! disk with 2 s stalls, the last with the other followers crashed, and
//! requires no leader change and linearizable reads that keep completing.
//!
//! # Determinism
//! A seed fixes the fault schedule, the client's targets, turmoil's network
//! (latencies, delivery order) and the order hosts run in each step.
//! Simulated time does not advance while storage runs (every RocksDB call
//! goes through the blocking pool, which pauses tokio's simulated clock).
//! Not fixed: openraft draws election timeouts from its runtime's
//! thread-local RNG, and RocksDB's own threads run in real time, so a
//! replay takes the same faults at the same simulated times but may elect
//! differently. A seed that fails once fails again often, not always
//! (docs/CHAOS.md, "Simulation tier").
//!
//! [`RaftNode::start_with_listener`]: cairn_raft::RaftNode::start_with_listener
//! [`RaftNode::write`]: cairn_raft::RaftNode::write
//! [`RaftNode::state_hash`]: cairn_raft::RaftNode::state_hash
//! [`SimulatedDisk`]: cairn_raft::SimulatedDisk
//! [`WalSync::Inline`]: cairn_raft::WalSync::Inline

pub mod check;
pub mod ledger;
pub mod net;

use std::collections::BTreeMap;
use std::collections::BTreeSet;
use std::collections::VecDeque;
use std::path::Path;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::Mutex;
use std::time::Duration;
use std::time::Instant;

use cairn_raft::LogRecord;
use cairn_raft::Member;
use cairn_raft::RaftNode;
use cairn_raft::RaftNodeConfig;
use cairn_raft::SimulatedDisk;
use cairn_raft::SnapshotSettings;
use cairn_raft::StateHash;
use cairn_raft::WalSync;
use rand::rngs::StdRng;
use rand::Rng;
use rand::SeedableRng;

use self::check::Ack;
use self::check::Checker;
use self::check::FinalState;
use self::check::Violation;
use self::ledger::Append;
use self::ledger::Ledger;
use self::net::SimDialer;
use self::net::SimListener;

/// The transport port of every simulated host.
const PORT: u16 = 9000;
/// A write is enqueued this often (simulated ms) during the fault phase.
const WRITE_EVERY_MS: u64 = 15;
/// ... and in the power-cut scenario: fast enough that a slow leader holds
/// a few unflushed entries at any moment (a 15–60 ms flush delay and a
/// write every 4 ms: about 4–15).
const POWER_CUT_WRITE_EVERY_MS: u64 = 4;
/// Each host reports a state hash every this many samples (500 ms): cheap,
/// and often enough for two replicas to be seen at one applied index.
const HASH_EVERY_SAMPLES: u64 = 50;
/// After convergence, how long (simulated) the replicas may take to report
/// their final states at one applied index.
const FINAL_STATE_MAX_MS: u64 = 5_000;
/// Hosts report (and the checker runs) this often, simulated ms.
const SAMPLE_EVERY_MS: u64 = 10;
/// Writes one host's client keeps in flight; bounds the tasks per host.
const MAX_IN_FLIGHT: usize = 8;
/// After healing, how long (simulated) the cluster may take to converge
/// before the seed fails as not converged.
const CONVERGE_MAX_MS: u64 = 30_000;
/// Snapshots small enough that a seed builds, sends and installs several.
const SNAPSHOTS: SnapshotSettings = SnapshotSettings {
    snapshot_every_entries: 64,
    logs_kept_after_snapshot: 16,
    max_incoming_bytes: 1 << 30,
};

/// What a simulation does to the cluster.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Scenario {
    /// Seeded partitions, held links, crashes and restarts (process
    /// crashes: every write survives, [`WalSync::Inline`]).
    #[default]
    Faults,
    /// Issue 25: power cuts of a leader whose disk is slower than its
    /// followers'. Every host runs on a [`SimulatedDisk`] (a crash drops
    /// whatever was not yet flushed); the leader's flush takes 15–60 ms
    /// (drawn per cut), the followers' 1 ms; clients write every 4 ms
    /// through all hosts; about every 1–2 s the leader loses power while
    /// it holds unflushed entries, and restarts at once (half the cuts) or
    /// after up to 500 ms. No other faults.
    PowerCut,
    /// Issue 20 item 3: one follower on a slow SD card. Every host runs on
    /// a [`SimulatedDisk`]; once a leader is elected, one of its followers
    /// gets flush delays drawn log-normal (p50 5 ms, p99 80 ms, capped at
    /// 500 ms, the process tier's `sd-card` model) and every 3-4 s a 2 s
    /// stall of its whole disk; the others flush in 1 ms. Clients write
    /// every 15 ms and read linearizably (read index) every 20 ms through
    /// every host. No other faults: the leader must never change, reads
    /// through the healthy hosts must keep completing, and writes must go
    /// on through the healthy quorum.
    SlowFollower,
}

impl Scenario {
    /// The name the CLI and the regression list use.
    pub fn name(self) -> &'static str {
        match self {
            Scenario::Faults => "faults",
            Scenario::PowerCut => "power-cut",
            Scenario::SlowFollower => "slow-follower",
        }
    }

    /// Parse [`Scenario::name`].
    pub fn parse(name: &str) -> Result<Self, String> {
        match name {
            "faults" => Ok(Scenario::Faults),
            "power-cut" => Ok(Scenario::PowerCut),
            "slow-follower" => Ok(Scenario::SlowFollower),
            other => Err(format!("unknown scenario `{other}` (faults, power-cut, slow-follower)")),
        }
    }
}

/// One simulation: a seed and a cluster size.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SimSpec {
    /// What the simulation does.
    pub scenario: Scenario,
    /// Seeds the fault schedule, the client and turmoil.
    pub seed: u64,
    /// Number of Raft nodes (3 or 5 in CI).
    pub nodes: u64,
    /// Simulated ms of writes under faults.
    pub fault_ms: u64,
    /// Simulated ms after healing before convergence is required.
    pub heal_ms: u64,
}

impl SimSpec {
    /// The defaults CI uses: 15 s of faults, 3 s of healing.
    pub fn new(seed: u64, nodes: u64) -> Self {
        Self {
            scenario: Scenario::Faults,
            seed,
            nodes,
            fault_ms: 15_000,
            heal_ms: 3_000,
        }
    }

    /// The power-cut scenario's defaults: 3 nodes, 10 s of writes (about
    /// six power cuts of the leader), 2 s of quiet before convergence.
    pub fn power_cut(seed: u64) -> Self {
        Self {
            scenario: Scenario::PowerCut,
            seed,
            nodes: 3,
            fault_ms: 10_000,
            heal_ms: 2_000,
        }
    }

    /// The slow-follower scenario's defaults: 3 nodes, 12 s of load (about
    /// three 2 s stalls of the slow follower's disk), 2 s of quiet.
    pub fn slow_follower(seed: u64) -> Self {
        Self {
            scenario: Scenario::SlowFollower,
            seed,
            nodes: 3,
            fault_ms: 12_000,
            heal_ms: 2_000,
        }
    }

    /// The defaults of `scenario`.
    pub fn of(scenario: Scenario, seed: u64, nodes: u64) -> Self {
        match scenario {
            Scenario::Faults => Self::new(seed, nodes),
            Scenario::PowerCut => Self {
                nodes,
                ..Self::power_cut(seed)
            },
            Scenario::SlowFollower => Self {
                nodes,
                ..Self::slow_follower(seed)
            },
        }
    }

    /// The one-line command that replays this simulation.
    pub fn replay_command(&self) -> String {
        format!(
            "cargo run --bin cairn-jepsen -- sim --scenario {} --seed {} --nodes {} --fault-ms {} --heal-ms {}",
            self.scenario.name(),
            self.seed,
            self.nodes,
            self.fault_ms,
            self.heal_ms
        )
    }
}

/// What one simulation saw and concluded.
#[derive(Clone, Debug)]
pub struct SimReport {
    /// The simulation.
    pub spec: SimSpec,
    /// Safety violations (empty when safe).
    pub violations: Vec<Violation>,
    /// Set when the run could not finish: a host failed, or the cluster did
    /// not converge after healing.
    pub error: Option<String>,
    /// Writes submitted by the clients.
    pub writes: u64,
    /// Writes acknowledged.
    pub acked: usize,
    /// Faults injected (each partition, hold, crash, restart, heal).
    pub faults: usize,
    /// Host (re)starts, the first boot of each included.
    pub boots: u64,
    /// Terms that had a leader.
    pub terms: usize,
    /// Terms led by more than one node (legal under `leader_id_adv`).
    pub multi_leader_terms: usize,
    /// Highest applied index at the end.
    pub last_index: u64,
    /// Simulated time, ms.
    pub sim_ms: u64,
    /// Wall-clock time.
    pub wall: Duration,
    /// The last faults, for the report of a failing seed.
    pub recent_faults: Vec<String>,
    /// Power cuts of a host on a [`SimulatedDisk`], and the log entries
    /// they dropped (appended, not yet flushed).
    pub power_cuts: usize,
    /// See [`SimReport::power_cuts`].
    pub entries_dropped: u64,
    /// The final whole-state check: the applied index every replica
    /// reported its state at, and whether their state hashes agreed.
    pub final_state: Option<String>,
    /// The slow-follower scenario's figures ([`Scenario::SlowFollower`]).
    pub slow: Option<SlowFigures>,
}

/// What the slow-follower scenario measured.
#[derive(Clone, Debug, Default)]
pub struct SlowFigures {
    /// The follower on the slow disk.
    pub host: u64,
    /// Its 2 s disk stalls.
    pub stalls: usize,
    /// Times a node other than the first leader led a later term.
    pub leader_changes: usize,
    /// Linearizable reads through the healthy hosts: completed, failed.
    pub reads_ok: usize,
    /// See [`SlowFigures::reads_ok`].
    pub reads_failed: usize,
    /// Their latencies (simulated ms): p50, p99, max.
    pub read_ms: (u64, u64, u64),
    /// The longest stretch of the load phase without a completed read
    /// through a healthy host, ms.
    pub read_gap_ms: u64,
    /// Reads through the slow host itself (they wait for its own apply,
    /// hence its disk): completed, failed.
    pub slow_host_reads: (usize, usize),
    /// Writes acknowledged while the slow disk was stalled.
    pub acked_during_stalls: usize,
}

impl SlowFigures {
    /// What the scenario requires, or why it failed.
    fn verdict(&self) -> Result<(), String> {
        let mut bad = Vec::new();
        if self.leader_changes > 0 {
            bad.push(format!("{} leader changes", self.leader_changes));
        }
        if self.reads_failed > 0 {
            bad.push(format!("{} reads through healthy hosts failed", self.reads_failed));
        }
        if self.read_gap_ms > SLOW_MAX_READ_GAP_MS {
            bad.push(format!(
                "no read completed through a healthy host for {} ms (at most {SLOW_MAX_READ_GAP_MS})",
                self.read_gap_ms
            ));
        }
        if self.stalls > 0 && self.acked_during_stalls == 0 {
            bad.push("no write acknowledged during the stalls".into());
        }
        if bad.is_empty() {
            Ok(())
        } else {
            Err(format!("slow follower n{}: {}", self.host, bad.join(", ")))
        }
    }
}

impl SimReport {
    /// A report of `spec` with nothing run yet.
    fn empty(spec: &SimSpec) -> Self {
        Self {
            spec: spec.clone(),
            violations: Vec::new(),
            error: None,
            writes: 0,
            acked: 0,
            faults: 0,
            boots: 0,
            terms: 0,
            multi_leader_terms: 0,
            last_index: 0,
            sim_ms: 0,
            wall: Duration::ZERO,
            recent_faults: Vec::new(),
            power_cuts: 0,
            entries_dropped: 0,
            final_state: None,
            slow: None,
        }
    }

    /// Safe and finished.
    pub fn passed(&self) -> bool {
        self.violations.is_empty() && self.error.is_none()
    }

    /// One line for logs and CI.
    pub fn summary(&self) -> String {
        let verdict = if self.passed() {
            "ok".to_string()
        } else if !self.violations.is_empty() {
            format!("UNSAFE ({} violations)", self.violations.len())
        } else {
            "ERROR".to_string()
        };
        let scenario = match self.spec.scenario {
            Scenario::Faults => String::new(),
            Scenario::PowerCut => format!(
                " power-cut ({} cuts dropped {} unflushed entries)",
                self.power_cuts, self.entries_dropped
            ),
            Scenario::SlowFollower => match &self.slow {
                Some(f) => format!(
                    " slow-follower (n{} slow, {} stalls of 2 s; {} leader changes; healthy-host reads {} ok, {} failed, p50/p99/max {}/{}/{} ms, longest gap {} ms; slow-host reads {} ok, {} failed; {} writes acked during stalls)",
                    f.host,
                    f.stalls,
                    f.leader_changes,
                    f.reads_ok,
                    f.reads_failed,
                    f.read_ms.0,
                    f.read_ms.1,
                    f.read_ms.2,
                    f.read_gap_ms,
                    f.slow_host_reads.0,
                    f.slow_host_reads.1,
                    f.acked_during_stalls
                ),
                None => " slow-follower (no leader to slow down)".into(),
            },
        };
        let state = match &self.final_state {
            Some(s) => format!(", {s}"),
            None => String::new(),
        };
        format!(
            "sim seed {} n{}{scenario}: {verdict}; {} of {} writes acked, last index {}, {} faults, {} boots, {} terms led ({} by two nodes){state}, {:.1} s simulated in {:.1} s",
            self.spec.seed,
            self.spec.nodes,
            self.acked,
            self.writes,
            self.last_index,
            self.faults,
            self.boots,
            self.terms,
            self.multi_leader_terms,
            self.sim_ms as f64 / 1000.0,
            self.wall.as_secs_f64()
        )
    }

    /// The summary, and for a failure what broke, the last faults and the
    /// command that replays it.
    pub fn details(&self) -> String {
        let mut out = self.summary();
        if let Some(e) = &self.error {
            out.push_str(&format!("\n  error: {e}"));
        }
        for v in &self.violations {
            out.push_str(&format!("\n  violation: {v}"));
        }
        if !self.passed() {
            for f in &self.recent_faults {
                out.push_str(&format!("\n  fault: {f}"));
            }
            out.push_str(&format!("\n  replay: {}", self.spec.replay_command()));
        }
        out
    }
}

/// What a host reports every [`SAMPLE_EVERY_MS`].
struct Sample {
    node: u64,
    boot: u64,
    at_ms: u64,
    term: u64,
    leading: bool,
    purged: Option<u64>,
    applied_index: u64,
    log: Vec<LogRecord>,
    /// Writes applied since this boot's previous sample: (index, value, term).
    applied: Vec<(u64, u64, u64)>,
    /// Every [`HASH_EVERY_SAMPLES`]th sample, and every sample once the
    /// driver asks for final states: the state hash.
    hash: Option<StateHash>,
    /// Once the driver asks ([`Shared::want_final`]): the whole applied
    /// ledger, read between two state hashes at the same applied index.
    final_state: Option<FinalState>,
}

/// State shared between the driver and the simulated hosts (one thread:
/// turmoil runs every host on the caller's thread).
#[derive(Default)]
struct Shared {
    /// Values each host's client is to write.
    queue: BTreeMap<u64, VecDeque<u64>>,
    acks: Vec<(u64, Ack)>,
    /// Writes each host's client has in flight (a crash cancels them).
    in_flight: BTreeMap<u64, usize>,
    samples: Vec<Sample>,
    boots: u64,
    /// The highest term any node has held (each host polls its own every
    /// simulated millisecond; see [`Ack::max_term`]).
    max_term: u64,
    /// Set by the driver after convergence: hosts report their whole state.
    want_final: bool,
    /// Set by the driver while hosts' readers are to read (the load phase
    /// of the slow-follower scenario).
    reading: bool,
    /// Linearizable reads completed or failed since the driver last took
    /// them.
    reads: Vec<ReadDone>,
}

/// One linearizable read through a host.
struct ReadDone {
    host: u64,
    /// Simulated ms when it completed.
    at_ms: u64,
    /// How long it took, simulated ms.
    took_ms: u64,
    ok: bool,
}

type SharedRef = Arc<Mutex<Shared>>;

/// A node's applied writes: log index → (value, term).
type LedgerView = BTreeMap<u64, (u64, u64)>;

fn lock(shared: &SharedRef) -> std::sync::MutexGuard<'_, Shared> {
    shared.lock().unwrap_or_else(|p| p.into_inner())
}

fn host_name(id: u64) -> String {
    format!("n{id}")
}

fn now_ms() -> u64 {
    turmoil::sim_elapsed().unwrap_or_default().as_millis() as u64
}

fn members(nodes: u64) -> BTreeMap<u64, Member> {
    (1..=nodes)
        .map(|id| {
            (
                id,
                Member {
                    raft_addr: format!("{}:{PORT}", host_name(id)),
                    api_addr: String::new(),
                },
            )
        })
        .collect()
}

/// One simulated host: the node, its client and its reporter. Runs until
/// the host is crashed (turmoil drops the whole runtime, node included).
async fn host(id: u64, nodes: u64, dir: PathBuf, wal_sync: WalSync, read: bool, shared: SharedRef) -> turmoil::Result {
    let listener = turmoil::net::TcpListener::bind(("0.0.0.0", PORT)).await?;
    let mut config = RaftNodeConfig::new(id, format!("0.0.0.0:{PORT}"), dir);
    config.snapshots = SNAPSHOTS;
    let node = RaftNode::<Ledger>::start_with_listener(
        config,
        format!("{}:{PORT}", host_name(id)),
        Box::new(SimListener(listener)),
        Arc::new(SimDialer),
        wal_sync,
    )
    .await?;
    let node = Arc::new(node);
    let boot = {
        let mut s = lock(&shared);
        s.boots += 1;
        s.in_flight.insert(id, 0);
        s.boots
    };
    if id == 1 && !node.is_initialized().await? {
        node.initialize(members(nodes)).await?;
    }
    tokio::spawn(client(id, node.clone(), shared.clone()));
    tokio::spawn(track_term(node.clone(), shared.clone()));
    if read {
        tokio::spawn(reader(id, node.clone(), shared.clone()));
    }

    let mut next_applied = 0;
    let mut sample_no: u64 = 0;
    loop {
        tokio::time::sleep(Duration::from_millis(SAMPLE_EVERY_MS)).await;
        sample_no += 1;
        // Status before and after the log read: the node may purge its log
        // or change role while the read waits on the blocking pool. It
        // counts as leading only if it led the same term at both ends (a
        // leader never truncates its own log), and everything up to the
        // later purge or snapshot index counts as compacted.
        let before = node.status();
        let from = before.purged_index.map_or(0, |p| p + 1);
        let log = match node.log_records(from, 1 << 20).await {
            Ok(log) => log,
            Err(e) => {
                tracing::warn!(node = id, error = %e, "log read failed");
                continue;
            }
        };
        let st = node.status();
        let leading =
            before.role == cairn_raft::Role::Leader && st.role == cairn_raft::Role::Leader && before.term == st.term;
        let compacted = st.purged_index.max(st.snapshot_index);
        let applied: Vec<(u64, u64, u64)> = node.local_state(|l| {
            l.entries
                .range(next_applied..)
                .map(|(i, (v, t))| (*i, *v, *t))
                .collect()
        });
        if let Some((i, _, _)) = applied.last() {
            next_applied = i + 1;
        }
        let want_final = lock(&shared).want_final;
        let hash = if want_final || sample_no % HASH_EVERY_SAMPLES == 0 {
            node.state_hash().ok()
        } else {
            None
        };
        let final_state = match &hash {
            Some(h) if want_final => {
                // The ledger between two hashes of one applied index is the
                // state that index hashed to.
                let ledger = node.local_state(|l| l.entries.clone());
                match node.state_hash() {
                    Ok(again) if again == *h => Some(FinalState {
                        applied_index: h.applied_index,
                        sha256: h.sha256.clone(),
                        ledger,
                    }),
                    _ => None,
                }
            }
            _ => None,
        };
        lock(&shared).samples.push(Sample {
            node: id,
            boot,
            at_ms: now_ms(),
            term: st.term,
            leading,
            purged: compacted,
            applied_index: st.applied_index.unwrap_or(0),
            log,
            applied,
            hash,
            final_state,
        });
    }
}

/// Keep [`Shared::max_term`] at or above this node's term. Polled every
/// simulated millisecond: a leader needs at least a round trip (2 ms at
/// the least latency) between winning its term and committing anything in
/// it, so the term is recorded before any write commits in it.
async fn track_term(node: Arc<RaftNode<Ledger>>, shared: SharedRef) {
    loop {
        let term = node.status().term;
        {
            let mut s = lock(&shared);
            s.max_term = s.max_term.max(term);
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

/// The host's client: writes the values the driver queued for it, through
/// this host's node (forwarded to the leader if need be), a few at a time.
async fn client(id: u64, node: Arc<RaftNode<Ledger>>, shared: SharedRef) {
    let in_flight = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    loop {
        tokio::time::sleep(Duration::from_millis(2)).await;
        let free = MAX_IN_FLIGHT.saturating_sub(in_flight.load(std::sync::atomic::Ordering::Relaxed));
        let values: Vec<u64> = {
            let mut s = lock(&shared);
            let q = s.queue.entry(id).or_default();
            let n = free.min(q.len());
            let values: Vec<u64> = q.drain(..n).collect();
            *s.in_flight.entry(id).or_default() += values.len();
            values
        };
        for value in values {
            in_flight.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let (node, shared, in_flight) = (node.clone(), shared.clone(), in_flight.clone());
            tokio::spawn(async move {
                let res = node.write(Append(value)).await;
                let mut s = lock(&shared);
                let n = s.in_flight.entry(id).or_default();
                *n = n.saturating_sub(1);
                in_flight.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
                match res {
                    Ok(out) => {
                        debug_assert_eq!(out.index, out.response.index);
                        let max_term = s.max_term;
                        s.acks.push((
                            now_ms(),
                            Ack {
                                value,
                                index: out.index,
                                term: out.response.term,
                                max_term,
                            },
                        ));
                    }
                    Err(e) => tracing::debug!(node = id, value, error = %e, "write not acknowledged"),
                }
            });
        }
    }
}

/// The host's reader (slow-follower scenario): while the driver says so, a
/// linearizable read (read index, forwarded to the leader when this host
/// does not lead) every [`READ_EVERY_MS`], one at a time; each bounded by
/// the node's own write timeout.
async fn reader(id: u64, node: Arc<RaftNode<Ledger>>, shared: SharedRef) {
    loop {
        tokio::time::sleep(Duration::from_millis(READ_EVERY_MS)).await;
        if !lock(&shared).reading {
            continue;
        }
        let started = now_ms();
        let res = node
            .read(cairn_raft::Consistency::Linearizable, |l| l.entries.len())
            .await;
        if let Err(e) = &res {
            tracing::debug!(node = id, error = %e, "linearizable read failed");
        }
        let at_ms = now_ms();
        lock(&shared).reads.push(ReadDone {
            host: id,
            at_ms,
            took_ms: at_ms - started,
            ok: res.is_ok(),
        });
    }
}

/// The faults in force, so healing can undo them all.
#[derive(Default)]
struct Faults {
    crashed: BTreeSet<u64>,
    cut: BTreeSet<(u64, u64)>,
    held: BTreeSet<(u64, u64)>,
    log: VecDeque<String>,
    count: usize,
}

impl Faults {
    fn note(&mut self, at_ms: u64, what: String) {
        tracing::debug!(at_ms, "{what}");
        self.count += 1;
        if self.log.len() == 12 {
            self.log.pop_front();
        }
        self.log.push_back(format!("{at_ms} ms: {what}"));
    }
}

fn pair(a: u64, b: u64) -> (u64, u64) {
    (a.min(b), a.max(b))
}

/// Apply one seeded fault. A new partition replaces the previous one (so
/// the cluster is not left cut into pieces for most of a run), and half of
/// the node-targeted faults go to the current `leader`.
fn inject(
    sim: &mut turmoil::Sim<'_>,
    rng: &mut StdRng,
    nodes: u64,
    leader: Option<u64>,
    f: &mut Faults,
    shared: &SharedRef,
    at_ms: u64,
) {
    let pick = |rng: &mut StdRng| match leader {
        Some(l) if rng.random_bool(0.5) => l,
        _ => rng.random_range(1..=nodes),
    };
    match rng.random_range(0..100) {
        // Isolate one node.
        0..=19 => {
            repair_cuts(sim, f);
            let a = pick(rng);
            for b in (1..=nodes).filter(|b| *b != a) {
                sim.partition(host_name(a), host_name(b));
                f.cut.insert(pair(a, b));
            }
            f.note(at_ms, format!("isolate n{a}"));
        }
        // Split into two sides.
        20..=34 => {
            repair_cuts(sim, f);
            let side: BTreeSet<u64> = (1..=nodes).filter(|_| rng.random_bool(0.5)).collect();
            for a in &side {
                for b in (1..=nodes).filter(|b| !side.contains(b)) {
                    sim.partition(host_name(*a), host_name(b));
                    f.cut.insert(pair(*a, b));
                }
            }
            f.note(at_ms, format!("split {side:?} from the rest"));
        }
        // Hold one link: its messages wait until released.
        35..=47 => {
            let a = pick(rng);
            let b = rng.random_range(1..=nodes);
            if a != b && !f.cut.contains(&pair(a, b)) && !f.held.contains(&pair(a, b)) {
                sim.hold(host_name(a), host_name(b));
                f.held.insert(pair(a, b));
                f.note(at_ms, format!("hold n{a}<->n{b}"));
            }
        }
        // Release the held links.
        48..=54 => {
            for (a, b) in std::mem::take(&mut f.held) {
                sim.release(host_name(a), host_name(b));
                f.note(at_ms, format!("release n{a}<->n{b}"));
            }
        }
        // Crash a node (a minority at most are down at once).
        55..=66 => {
            let a = pick(rng);
            if !f.crashed.contains(&a) && (f.crashed.len() as u64 + 1) * 2 < nodes + 1 {
                sim.crash(host_name(a));
                f.crashed.insert(a);
                forget_writes(shared, a);
                f.note(at_ms, format!("crash n{a}"));
            }
        }
        // Restart a crashed node.
        67..=79 => {
            if let Some(&a) = f.crashed.iter().nth(rng.random_range(0..f.crashed.len().max(1))) {
                sim.bounce(host_name(a));
                f.crashed.remove(&a);
                f.note(at_ms, format!("restart n{a}"));
            }
        }
        // Bounce a running node (crash and restart at once).
        80..=86 => {
            let a = pick(rng);
            if !f.crashed.contains(&a) {
                sim.bounce(host_name(a));
                forget_writes(shared, a);
                f.note(at_ms, format!("bounce n{a}"));
            }
        }
        // Repair every cut link.
        _ => {
            repair_cuts(sim, f);
            f.note(at_ms, "repair all cut links".into());
        }
    }
}

/// The power-cut scenario's schedule ([`Scenario::PowerCut`]).
struct PowerCuts {
    /// From when on the next cut may happen.
    next_cut_ms: u64,
    /// The current leader's flush delay until the next cut, ms.
    slow_ms: u64,
    /// A host without power, and when it comes back.
    down: Option<(u64, u64)>,
    cuts: usize,
    dropped: u64,
}

/// Followers' flush delay in the power-cut scenario: a fast disk.
const FAST_FLUSH_MS: u64 = 1;

/// Slow-follower scenario: a read through every host this often.
const READ_EVERY_MS: u64 = 20;
/// ... and the longest the load phase may go without a read completing
/// through a healthy host (the leader lease is 350 ms; a read waits at
/// most that long for a quorum).
const SLOW_MAX_READ_GAP_MS: u64 = 500;
/// How long one stall of the slow disk lasts.
const STALL_MS: u64 = 2_000;

/// The slow-follower scenario's disk model ([`Scenario::SlowFollower`]).
struct SlowDisk {
    /// The follower chosen, and the leader and term when it was chosen.
    host: Option<(u64, u64, u64)>,
    /// The stall in progress ends at this simulated ms.
    stall_until: u64,
    next_stall_ms: u64,
    stalls: usize,
    /// The healthy followers crashed for the last stall (so the quorum
    /// needs the slow follower), and when they come back.
    partners_down: Option<(Vec<u64>, u64)>,
    /// Writes acknowledged during stalls.
    acked_during_stalls: usize,
}

impl SlowDisk {
    fn new() -> Self {
        Self {
            host: None,
            stall_until: 0,
            next_stall_ms: 0,
            stalls: 0,
            partners_down: None,
            acked_during_stalls: 0,
        }
    }

    fn stalled(&self, ms: u64) -> bool {
        ms < self.stall_until
    }

    /// One simulated ms of the load phase: pick the slow follower once a
    /// leader is known, then set its flush delay for the writes queued in
    /// this ms (an SD card's, or what is left of a stall: every write
    /// queued during a stall completes no earlier than its end). The
    /// third stall is taken with the other followers crashed: a quorum
    /// then needs the slow follower, so reads must confirm leadership
    /// through its heartbeats (writes wait for its disk; that is not
    /// checked). They restart 500 ms after the stall.
    #[allow(clippy::too_many_arguments)]
    fn step(
        &mut self,
        sim: &mut turmoil::Sim<'_>,
        rng: &mut StdRng,
        disks: &[SimulatedDisk],
        leader: Option<(u64, u64)>,
        f: &mut Faults,
        shared: &SharedRef,
        ms: u64,
    ) {
        let Some((slow, _, _)) = self.host else {
            if let Some((l, term)) = leader {
                if ms >= 500 {
                    let slow = (1..=disks.len() as u64).find(|n| *n != l).unwrap_or(l);
                    self.host = Some((slow, l, term));
                    self.next_stall_ms = ms + rng.random_range(1_000..2_000);
                    f.note(
                        ms,
                        format!("n{slow}'s disk is now an SD card (leader n{l}, term {term})"),
                    );
                }
            }
            return;
        };
        if let Some((down, back_at)) = &self.partners_down {
            if ms >= *back_at {
                for n in down {
                    sim.bounce(host_name(*n));
                    f.crashed.remove(n);
                    f.note(ms, format!("restart n{n}"));
                }
                self.partners_down = None;
            }
        }
        if ms >= self.next_stall_ms {
            self.stall_until = ms + STALL_MS;
            self.stalls += 1;
            self.next_stall_ms = self.stall_until + rng.random_range(1_000..1_500);
            f.note(ms, format!("n{slow}'s disk stalls for {STALL_MS} ms"));
            if self.stalls == 3 {
                let l = leader.map(|(l, _)| l);
                let down: Vec<u64> = (1..=disks.len() as u64)
                    .filter(|n| *n != slow && Some(*n) != l)
                    .collect();
                for n in &down {
                    sim.crash(host_name(*n));
                    f.crashed.insert(*n);
                    forget_writes(shared, *n);
                    f.note(ms, format!("crash n{n}: a quorum now needs the stalled n{slow}"));
                }
                self.partners_down = Some((down, self.stall_until + 500));
            }
        }
        let delay = if self.stalled(ms) {
            Duration::from_millis(self.stall_until - ms)
        } else {
            Duration::from_secs_f64(sd_card_ms(rng) / 1000.0)
        };
        disks[(slow - 1) as usize].set_flush_delay(delay);
    }
}

/// A cheap SD card's flush delay, ms: log-normal with p50 5 ms and p99
/// 80 ms, capped at 500 ms (the process tier's `sd-card` model, without
/// its random stalls: the scenario schedules those).
fn sd_card_ms(rng: &mut StdRng) -> f64 {
    // Box–Muller: a standard normal; sigma = ln(80/5) / z(0.99).
    let u1: f64 = rng.random_range(f64::EPSILON..1.0);
    let u2: f64 = rng.random_range(0.0..1.0);
    let z = (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos();
    (5.0 * (z * (16f64.ln() / 2.326)).exp()).min(500.0)
}

/// Percentile `p` (0-100) of sorted `v`; 0 when empty.
fn percentile(v: &[u64], p: usize) -> u64 {
    if v.is_empty() {
        return 0;
    }
    let i = (v.len() * p).div_ceil(100).saturating_sub(1).min(v.len() - 1);
    v[i]
}

impl PowerCuts {
    fn new(rng: &mut StdRng) -> Self {
        Self {
            next_cut_ms: rng.random_range(1_000..2_000),
            slow_ms: rng.random_range(15..=60),
            down: None,
            cuts: 0,
            dropped: 0,
        }
    }

    /// One simulated ms of the fault phase: keep the leader's disk the slow
    /// one, bring a cut host back, or cut the leader's power once it holds
    /// entries it has not flushed (what its followers may already have
    /// committed).
    #[allow(clippy::too_many_arguments)]
    fn step(
        &mut self,
        sim: &mut turmoil::Sim<'_>,
        rng: &mut StdRng,
        disks: &[SimulatedDisk],
        leader: Option<(u64, u64)>,
        f: &mut Faults,
        shared: &SharedRef,
        ms: u64,
    ) {
        for (i, disk) in disks.iter().enumerate() {
            let slow = leader.is_some_and(|(l, _)| l == i as u64 + 1);
            disk.set_flush_delay(Duration::from_millis(if slow { self.slow_ms } else { FAST_FLUSH_MS }));
        }
        if let Some((host, back_at)) = self.down {
            if ms >= back_at {
                sim.bounce(host_name(host));
                f.crashed.remove(&host);
                f.note(ms, format!("power back on n{host}"));
                self.down = None;
                self.next_cut_ms = ms + rng.random_range(1_000..2_000);
            }
            return;
        }
        let Some((l, term)) = leader else { return };
        let disk = &disks[(l - 1) as usize];
        let (appended, durable) = (disk.appended_index(), disk.durable_index());
        if ms < self.next_cut_ms || appended <= durable {
            return;
        }
        self.cuts += 1;
        self.dropped += appended - durable;
        // Half the cuts restart at once, the others within half a second:
        // either way before the followers' election timeout has passed
        // (the lease and 250-350 ms) in most of them.
        let down_ms = if rng.random_bool(0.5) {
            0
        } else {
            rng.random_range(1..=500)
        };
        f.note(
            ms,
            format!(
                "power cut n{l} (leader of term {term}, flush delay {} ms): log appended to {appended}, durable to {durable}; back in {down_ms} ms",
                self.slow_ms
            ),
        );
        forget_writes(shared, l);
        if down_ms == 0 {
            sim.bounce(host_name(l));
            self.next_cut_ms = ms + rng.random_range(1_000..2_000);
        } else {
            sim.crash(host_name(l));
            f.crashed.insert(l);
            self.down = Some((l, ms + down_ms));
        }
        self.slow_ms = rng.random_range(15..=60);
    }
}

/// The slow-follower scenario's figures from the reads of the load phase
/// (`from`..`until` simulated ms).
fn slow_figures(
    host: u64,
    slow: &SlowDisk,
    leader_changes: usize,
    reads: &[ReadDone],
    from: u64,
    until: u64,
) -> SlowFigures {
    let healthy: Vec<&ReadDone> = reads.iter().filter(|r| r.host != host).collect();
    let mut took: Vec<u64> = healthy.iter().filter(|r| r.ok).map(|r| r.took_ms).collect();
    took.sort_unstable();
    let mut done: Vec<u64> = healthy
        .iter()
        .filter(|r| r.ok && r.at_ms <= until)
        .map(|r| r.at_ms)
        .collect();
    done.sort_unstable();
    let mut gap = 0;
    let mut last = from;
    for at in done.iter().copied().chain(std::iter::once(until)) {
        gap = gap.max(at.saturating_sub(last));
        last = last.max(at);
    }
    let at_slow = reads.iter().filter(|r| r.host == host);
    SlowFigures {
        host,
        stalls: slow.stalls,
        leader_changes,
        reads_ok: took.len(),
        reads_failed: healthy.iter().filter(|r| !r.ok).count(),
        read_ms: (
            percentile(&took, 50),
            percentile(&took, 99),
            took.last().copied().unwrap_or(0),
        ),
        read_gap_ms: gap,
        slow_host_reads: (
            at_slow.clone().filter(|r| r.ok).count(),
            at_slow.filter(|r| !r.ok).count(),
        ),
        acked_during_stalls: slow.acked_during_stalls,
    }
}

fn repair_cuts(sim: &mut turmoil::Sim<'_>, f: &mut Faults) {
    for (a, b) in std::mem::take(&mut f.cut) {
        sim.repair(host_name(a), host_name(b));
    }
}

fn ledgers_len(ledgers: &BTreeMap<u64, LedgerView>) -> BTreeMap<u64, usize> {
    ledgers.iter().map(|(n, l)| (*n, l.len())).collect()
}

/// A crash cancels the host's client: its queued writes are never sent and
/// its writes in flight never answered (they may or may not commit).
fn forget_writes(shared: &SharedRef, host: u64) {
    let mut s = lock(shared);
    s.queue.remove(&host);
    s.in_flight.insert(host, 0);
}

fn repair_links(sim: &mut turmoil::Sim<'_>, f: &mut Faults) {
    repair_cuts(sim, f);
    for (a, b) in std::mem::take(&mut f.held) {
        sim.release(host_name(a), host_name(b));
    }
}

fn data_root() -> PathBuf {
    // tmpfs where there is one: an fsync there is cheap and the simulated
    // crash is a process crash (what was written survives) either way.
    let shm = Path::new("/dev/shm");
    if shm.is_dir() {
        shm.to_path_buf()
    } else {
        std::env::temp_dir()
    }
}

/// Run one simulation to its verdict. A panic inside turmoil (e.g. its
/// "server socket buffer full") becomes the seed's error instead of ending
/// the whole list.
pub fn run(spec: &SimSpec) -> SimReport {
    let started = Instant::now();
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| run_inner(spec))) {
        Ok(report) => report,
        Err(panic) => {
            let what = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "unknown panic".into());
            SimReport {
                error: Some(format!("the simulation panicked: {what}")),
                wall: started.elapsed(),
                ..SimReport::empty(spec)
            }
        }
    }
}

fn run_inner(spec: &SimSpec) -> SimReport {
    let started = Instant::now();
    let mut report = SimReport::empty(spec);
    let dirs: Vec<tempfile::TempDir> = match (1..=spec.nodes)
        .map(|_| tempfile::Builder::new().prefix("cairn-sim-").tempdir_in(data_root()))
        .collect()
    {
        Ok(d) => d,
        Err(e) => {
            report.error = Some(format!("cannot create data dirs: {e}"));
            return report;
        }
    };
    let shared = SharedRef::default();
    let mut rng = StdRng::seed_from_u64(spec.seed);
    let (max_latency_ms, write_every_ms) = match spec.scenario {
        Scenario::Faults => ([2, 10, 30, 80][rng.random_range(0..4)], WRITE_EVERY_MS),
        // A LAN: the leader's slow disk, not the network, is the point.
        Scenario::PowerCut => ([2, 5, 10][rng.random_range(0..3)], POWER_CUT_WRITE_EVERY_MS),
        Scenario::SlowFollower => ([2, 5, 10][rng.random_range(0..3)], WRITE_EVERY_MS),
    };
    // Owned here, so they outlive each host's crashes.
    let disks: Vec<SimulatedDisk> = (1..=spec.nodes)
        .map(|_| SimulatedDisk::new(Duration::from_millis(FAST_FLUSH_MS)))
        .collect();
    let mut sim = turmoil::Builder::new()
        .rng_seed(spec.seed)
        .enable_random_order()
        .tick_duration(Duration::from_millis(1))
        .simulation_duration(Duration::from_secs(24 * 3600))
        .min_message_latency(Duration::from_millis(1))
        .max_message_latency(Duration::from_millis(max_latency_ms))
        // Also the accept backlog: turmoil panics when it overflows, and a
        // restarted host is dialled by every peer's clients at once.
        .tcp_capacity(4096)
        .build();
    for id in 1..=spec.nodes {
        let dir = dirs[(id - 1) as usize].path().to_path_buf();
        let shared = shared.clone();
        let nodes = spec.nodes;
        let wal_sync = match spec.scenario {
            Scenario::Faults => WalSync::Inline,
            Scenario::PowerCut | Scenario::SlowFollower => WalSync::SimulatedDisk(disks[(id - 1) as usize].clone()),
        };
        let read = spec.scenario == Scenario::SlowFollower;
        sim.host(host_name(id), move || {
            host(id, nodes, dir.clone(), wal_sync.clone(), read, shared.clone())
        });
    }
    // Drawn only in its scenario: the faults scenario's seeds keep their
    // schedules.
    let mut power = (spec.scenario == Scenario::PowerCut).then(|| PowerCuts::new(&mut rng));
    let mut slow = (spec.scenario == Scenario::SlowFollower).then(SlowDisk::new);
    // Slow-follower scenario: every read, when reading began, the stalls,
    // and every (leader, term) seen after the slow follower was chosen.
    let mut reads: Vec<ReadDone> = Vec::new();
    let mut reading_from: Option<u64> = None;
    let mut stall_spans: Vec<(u64, u64)> = Vec::new();
    let mut leaders_seen: BTreeSet<(u64, u64)> = BTreeSet::new();

    let mut checker = Checker::new(false);
    let mut faults = Faults::default();
    // Per node: the boot that reported it, and what that boot applied.
    let mut ledgers: BTreeMap<u64, (u64, LedgerView)> = BTreeMap::new();
    let mut applied_index: BTreeMap<u64, u64> = BTreeMap::new();
    let mut logs: BTreeMap<u64, Vec<LogRecord>> = BTreeMap::new();
    let mut next_value = 1u64;
    let mut next_fault_ms = rng.random_range(1_000..2_000);
    let heal_at = spec.fault_ms;
    let converge_from = spec.fault_ms + spec.heal_ms;
    let end = converge_from + CONVERGE_MAX_MS;
    let mut converged = false;
    // Set once converged: when the replicas were asked for their states,
    // and the latest each reported.
    let mut converged_at: Option<u64> = None;
    let mut finals: BTreeMap<u64, FinalState> = BTreeMap::new();
    let mut max_acked = 0;
    // The latest leader seen (targeted by half the node faults).
    let mut leader: Option<u64> = None;
    let mut leader_term = 0;
    let mut last_idle = false;
    let mut ms = 0;
    while ms < end {
        if let Err(e) = sim.step() {
            report.error = Some(format!("a host failed at {ms} ms: {e}"));
            break;
        }
        ms += 1;
        if ms < heal_at {
            if ms % write_every_ms == 0 {
                let running: Vec<u64> = (1..=spec.nodes).filter(|n| !faults.crashed.contains(n)).collect();
                let target = running[rng.random_range(0..running.len())];
                lock(&shared).queue.entry(target).or_default().push_back(next_value);
                next_value += 1;
            }
            match spec.scenario {
                Scenario::Faults => {
                    if ms >= next_fault_ms {
                        inject(&mut sim, &mut rng, spec.nodes, leader, &mut faults, &shared, ms);
                        next_fault_ms = ms + rng.random_range(200..1_500);
                    }
                }
                Scenario::PowerCut => {
                    if let Some(power) = &mut power {
                        let led = leader.map(|l| (l, leader_term));
                        power.step(&mut sim, &mut rng, &disks, led, &mut faults, &shared, ms);
                    }
                }
                Scenario::SlowFollower => {
                    if let Some(slow) = &mut slow {
                        let led = leader.map(|l| (l, leader_term));
                        let stalls = slow.stalls;
                        slow.step(&mut sim, &mut rng, &disks, led, &mut faults, &shared, ms);
                        if slow.stalls > stalls {
                            stall_spans.push((ms, slow.stall_until));
                        }
                        if reading_from.is_none() && slow.host.is_some() {
                            reading_from = Some(ms);
                            lock(&shared).reading = true;
                        }
                    }
                }
            }
        } else if ms == heal_at {
            repair_links(&mut sim, &mut faults);
            for a in std::mem::take(&mut faults.crashed) {
                sim.bounce(host_name(a));
            }
            faults.note(ms, "heal: repair all links, restart crashed nodes".into());
            lock(&shared).reading = false;
        }
        if ms % SAMPLE_EVERY_MS != 0 {
            continue;
        }
        let (samples, acks, idle) = {
            let mut s = lock(&shared);
            let idle = s.in_flight.values().all(|n| *n == 0) && s.queue.values().all(VecDeque::is_empty);
            reads.append(&mut s.reads);
            (std::mem::take(&mut s.samples), std::mem::take(&mut s.acks), idle)
        };
        for (at, ack) in acks {
            if let Some(slow) = &mut slow {
                if stall_spans.iter().any(|(a, b)| (*a..*b).contains(&at)) {
                    slow.acked_during_stalls += 1;
                }
            }
            report.acked += 1;
            max_acked = max_acked.max(ack.index);
            checker.acked(at, ack);
        }
        for s in samples {
            tracing::trace!(
                at_ms = s.at_ms,
                node = s.node,
                term = s.term,
                leading = s.leading,
                applied = s.applied_index,
                "sample"
            );
            checker.sample(s.at_ms, s.node, s.term, s.leading, s.purged, &s.log);
            let ledger = ledgers.entry(s.node).or_default();
            if ledger.0 != s.boot {
                // A new boot reports its whole state again, from scratch.
                *ledger = (s.boot, BTreeMap::new());
            }
            for (index, value, term) in s.applied {
                checker.applied(s.at_ms, s.node, index, value, term);
                ledger.1.insert(index, (value, term));
            }
            applied_index.insert(s.node, s.applied_index);
            if let Some(h) = &s.hash {
                checker.state_hash(s.at_ms, s.node, h.applied_index, &h.sha256);
            }
            if let Some(f) = s.final_state {
                finals.insert(s.node, f);
            }
            if s.leading && s.term >= leader_term {
                leader = Some(s.node);
                leader_term = s.term;
            }
            if let Some(SlowDisk {
                host: Some((_, l, t)), ..
            }) = &slow
            {
                if s.leading && (s.node, s.term) != (*l, *t) && leaders_seen.insert((s.node, s.term)) {
                    faults.note(s.at_ms, format!("leader change: n{} leads term {}", s.node, s.term));
                }
            }
            logs.insert(s.node, s.log);
        }
        checker.logs_match(ms, &logs);
        // No stop at the first violation: the run goes on to its final
        // whole-state check, which says what the violation cost (writes
        // lost, replicas diverged).
        if let Some(asked_at) = converged_at {
            // One applied index on every replica: the whole-state check.
            let indexes: BTreeSet<u64> = finals.values().map(|f| f.applied_index).collect();
            if finals.len() as u64 == spec.nodes && indexes.len() == 1 {
                checker.final_states(ms, &finals);
                let hashes: BTreeSet<&str> = finals.values().map(|f| f.sha256.as_str()).collect();
                report.final_state = Some(format!(
                    "final state at index {}: {}",
                    indexes.first().copied().unwrap_or(0),
                    if hashes.len() == 1 {
                        "hashes equal".to_string()
                    } else {
                        format!("{} different hashes", hashes.len())
                    }
                ));
                converged = true;
                break;
            }
            if ms >= asked_at + FINAL_STATE_MAX_MS {
                let at: BTreeMap<u64, u64> = finals.iter().map(|(n, f)| (*n, f.applied_index)).collect();
                report.error = Some(format!(
                    "the replicas did not report their states at one applied index within {FINAL_STATE_MAX_MS} ms of converging: {at:?}"
                ));
                break;
            }
            continue;
        }
        if ms >= converge_from && idle && applied_index.len() as u64 == spec.nodes {
            // Converged: every node applied every acknowledged write and as
            // much as any other node, and no write is still in flight.
            let target = max_acked.max(
                ledgers
                    .values()
                    .flat_map(|(_, l)| l.keys().next_back().copied())
                    .max()
                    .unwrap_or(0),
            );
            let sizes: BTreeSet<usize> = ledgers.values().map(|(_, l)| l.len()).collect();
            if applied_index.values().all(|i| *i >= target) && sizes.len() == 1 {
                converged_at = Some(ms);
                lock(&shared).want_final = true;
            }
        }
        last_idle = idle;
    }
    let final_ledgers: BTreeMap<u64, LedgerView> = ledgers.into_iter().map(|(n, (_, l))| (n, l)).collect();
    if converged {
        // Checked on the replicas' own final states (`final_states`).
    } else if report.error.is_none() && checker.violations().is_empty() {
        let sizes: BTreeMap<u64, usize> = ledgers_len(&final_ledgers);
        report.error = Some(format!(
            "the cluster did not converge within {CONVERGE_MAX_MS} ms of healing: applied indexes {applied_index:?}, ledger sizes {sizes:?}, highest acknowledged index {max_acked}, clients idle: {last_idle}"
        ));
    }
    report.violations = checker.violations().to_vec();
    report.writes = next_value - 1;
    report.faults = faults.count;
    report.boots = lock(&shared).boots;
    report.terms = checker.terms_with_leader();
    report.multi_leader_terms = checker.multi_leader_terms().len();
    report.last_index = applied_index.values().copied().max().unwrap_or(0);
    report.sim_ms = ms;
    report.recent_faults = faults.log.into_iter().collect();
    if let Some(power) = &power {
        report.power_cuts = power.cuts;
        report.entries_dropped = power.dropped;
    }
    if let Some(slow) = &slow {
        if let (Some((host, _, _)), Some(from)) = (slow.host, reading_from) {
            let figures = slow_figures(host, slow, leaders_seen.len(), &reads, from, heal_at);
            if let Err(e) = figures.verdict() {
                if report.error.is_none() {
                    report.error = Some(e);
                }
            }
            report.slow = Some(figures);
        } else if report.error.is_none() {
            report.error = Some("slow follower: no leader was elected to slow a follower of".into());
        }
    }
    // Stop every host (and close its RocksDB) before the data dirs go.
    drop(sim);
    drop(dirs);
    report.wall = started.elapsed();
    report
}

/// Fresh seeds `first..first + count`, alternating 3 and 5 nodes.
pub fn fresh(first: u64, count: u64) -> Vec<SimSpec> {
    (0..count)
        .map(|i| SimSpec::new(first + i, if i % 2 == 0 { 3 } else { 5 }))
        .collect()
}

/// Fresh seeds `first..first + count` of the slow-follower scenario (3
/// nodes).
pub fn fresh_slow_followers(first: u64, count: u64) -> Vec<SimSpec> {
    (0..count).map(|i| SimSpec::slow_follower(first + i)).collect()
}

/// Fresh seeds `first..first + count` of the power-cut scenario (3 nodes).
pub fn fresh_power_cuts(first: u64, count: u64) -> Vec<SimSpec> {
    (0..count).map(|i| SimSpec::power_cut(first + i)).collect()
}

/// A first seed that differs from run to run (printed, so it can be
/// replayed): the wall clock in ms.
pub fn clock_seed() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(1)
}

/// Run `specs` one after the other, handing each report to `each`.
pub fn run_all(specs: &[SimSpec], mut each: impl FnMut(&SimReport)) -> Vec<SimReport> {
    specs
        .iter()
        .map(|spec| {
            let report = run(spec);
            each(&report);
            report
        })
        .collect()
}

/// The closing line CI prints: `sim: N seeds passed, M failed`.
pub fn closing_line(reports: &[SimReport]) -> String {
    let passed = reports.iter().filter(|r| r.passed()).count();
    format!("sim: {passed} seeds passed, {} failed", reports.len() - passed)
}

/// One line of the regression list: `SEED NODES [SCENARIO]   # why`
/// (the scenario's name, [`Scenario::name`]; `faults` when left out).
pub fn parse_regressions(text: &str) -> Result<Vec<SimSpec>, String> {
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        let fields: Vec<&str> = line.split_whitespace().collect();
        let parse = |i: usize| -> Result<u64, String> {
            fields
                .get(i)
                .ok_or_else(|| format!("line {}: expected `SEED NODES`", n + 1))?
                .parse::<u64>()
                .map_err(|e| format!("line {}: {e}", n + 1))
        };
        let (seed, nodes) = (parse(0)?, parse(1)?);
        let scenario = match fields.get(2) {
            None => Scenario::Faults,
            Some(name) => Scenario::parse(name).map_err(|e| format!("line {}: {e}", n + 1))?,
        };
        if fields.len() > 3 {
            return Err(format!(
                "line {}: expected `SEED NODES [SCENARIO]`, got `{line}`",
                n + 1
            ));
        }
        out.push(SimSpec::of(scenario, seed, nodes));
    }
    Ok(out)
}

/// The checked-in regression list (`jepsen-tests/sim-regressions.txt`).
pub const REGRESSIONS: &str = include_str!("../../sim-regressions.txt");

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_checked_in_regression_list_parses() {
        let specs = parse_regressions(REGRESSIONS).expect("sim-regressions.txt parses");
        assert!(specs.iter().all(|s| s.nodes >= 1));
        assert_eq!(
            parse_regressions("# c\n7 3  # why\n\n9 5\n").expect("parses"),
            vec![SimSpec::new(7, 3), SimSpec::new(9, 5)]
        );
        assert_eq!(
            parse_regressions("4 3 power-cut # issue 25\n").expect("parses"),
            vec![SimSpec::power_cut(4)]
        );
        assert_eq!(
            parse_regressions("1 3 slow-follower # issue 20\n").expect("parses"),
            vec![SimSpec::slow_follower(1)]
        );
        assert!(parse_regressions("7\n").is_err());
        assert!(parse_regressions("7 3 x\n").is_err());
        assert!(parse_regressions("7 3 power-cut x\n").is_err());
    }
}
