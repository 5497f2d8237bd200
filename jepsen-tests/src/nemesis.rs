//! Faults, and a seeded schedule of them.
//!
//! A run enables some [`NemesisKind`]s; [`schedule`] turns the seed into a
//! list of [`Step`]s (which fault, when, for how long), fixed before the run
//! starts so a seed always replays the same plan. Targets that depend on
//! the cluster's state ("the leader") are resolved when the step starts and
//! recorded in the nemesis events. One fault is active at a time; each is
//! healed before the next starts, and everything is healed at the end.

use std::collections::BTreeSet;
use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::Rng;
use rand::SeedableRng;
use serde::Deserialize;
use serde::Serialize;
use serde_json::json;
use tokio::time::Instant;

use crate::cluster::Cluster;
use crate::cluster::ProcState;
use crate::error::Error;
use crate::history::Recorder;
use crate::proxy::LinkFaults;

mod aimed;
pub use aimed::AIMED_LOGS_KEPT;
pub use aimed::AIMED_SNAPSHOT_EVERY;

/// A family of faults a run may enable.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NemesisKind {
    /// Network partitions: isolate the leader, majority/minority split,
    /// bridge, ring.
    Partition,
    /// `kill -9` of the leader, a random node, or all nodes; then restart.
    Kill,
    /// `SIGSTOP` of the leader or a random node; then `SIGCONT`.
    Pause,
    /// Latency with jitter on every peer link.
    Delay,
    /// Connections on peer links killed at random.
    Flaky,
    /// Remove a voter under load, then add it back as a learner and promote it.
    Member,
    /// Replace a member with a wiped one: remove a voter, `kill -9` it,
    /// delete its data dir; when healing, start it empty, add it as a
    /// learner and promote it. Not in `all` (so the checked-in seeds keep
    /// their schedules); name it.
    Replace,
    /// Fill a node's disk (its own small tmpfs) to the last byte, and in a
    /// third of the faults also restart it on the full disk; root only,
    /// skipped with a recorded reason otherwise. Not in `all`.
    Disk,
    /// Restart the leader or a random node with its wall clock jumped
    /// (±1 min or ±1 h); back to the true clock when healing. Not in `all`.
    Clock,
    /// Power cuts: `kill -9` and drop the unsynced data of the leader
    /// (60 %), a random node (25 %) or all nodes (15 %), restarting at once
    /// or after up to 500 ms. Every data dir is on a fault filesystem
    /// (root, FUSE), the leader's with the slower fsyncs. Not in `all`.
    Power,
    /// Power cuts of the leader only, restarted at once (issue 25).
    PowerLeader,
    /// Power cuts of every node at once, restarted at once.
    PowerAll,
    /// `SIGSTOP` one follower for a long hold (8–15 s) while the load runs
    /// a burst of large and refused writes, then `SIGCONT`: it must catch
    /// up (issue 17: a follower frozen through ~25 refused 1 MB writes never
    /// did). Turns on the log-hygiene load ([`crate::run::RunConfig`]).
    /// Not in `all`.
    Freeze,
    /// Membership changes for a node that is not running (issue 17): add a
    /// learner at an address nothing listens on, then try to promote it.
    /// The add must answer "not caught up", the promotion be refused and
    /// the voters stay the same; anything else fails the run. The ghost is
    /// removed when healing. Not in `all`.
    Ghost,
    /// Slow disks (issue 20): the SD-card fsync model (p50 5 ms, p99 80 ms,
    /// capped at 500 ms) on one follower's disk (half the faults), the
    /// leader's (3 in 10) or every disk (2 in 10), half the time with a 2 s
    /// stall of the device at the start; back to the base speed when
    /// healing. Nothing is cut: every acknowledged write must stay, reads
    /// and writes go on. Root and FUSE, like the power nemeses. Not in
    /// `all`.
    SlowDisk,
    /// Failing disks (issue 20): every fsync of the leader's (or a random
    /// node's) disk fails with `EIO`. When healing the node is power-cut
    /// (after a failed fsync its page cache cannot be trusted, the
    /// "fsyncgate" lesson: only what reached the disk counts), its disk
    /// mended and the node restarted. Root and FUSE. Not in `all`.
    DiskEio,
    /// Power cuts aimed at the moments a crash is most likely to expose a
    /// missing fsync or a wrong order of writes (issue 20): while a node
    /// saves a snapshot (behind which its log is then purged), while the
    /// leader changes membership, and while a deposed leader truncates its
    /// uncommitted suffix. The target's fsyncs are slowed to widen each
    /// window, and snapshots are taken every
    /// [`AIMED_SNAPSHOT_EVERY`] entries. Root and FUSE. Not in `all`.
    PowerAimed,
}

impl NemesisKind {
    /// Every kind, as the command line knows them.
    pub const KNOWN: [NemesisKind; 17] = [
        NemesisKind::PowerAimed,
        NemesisKind::SlowDisk,
        NemesisKind::DiskEio,
        NemesisKind::Freeze,
        NemesisKind::Power,
        NemesisKind::PowerLeader,
        NemesisKind::PowerAll,
        NemesisKind::Clock,
        NemesisKind::Disk,
        NemesisKind::Partition,
        NemesisKind::Kill,
        NemesisKind::Pause,
        NemesisKind::Delay,
        NemesisKind::Flaky,
        NemesisKind::Member,
        NemesisKind::Replace,
        NemesisKind::Ghost,
    ];

    /// The kinds `all` enables (every kind but [`NemesisKind::Replace`],
    /// which came later: adding it would change every recorded schedule).
    pub const ALL: [NemesisKind; 6] = [
        NemesisKind::Partition,
        NemesisKind::Kill,
        NemesisKind::Pause,
        NemesisKind::Delay,
        NemesisKind::Flaky,
        NemesisKind::Member,
    ];

    /// Its name on the command line.
    pub fn name(self) -> &'static str {
        match self {
            NemesisKind::Partition => "partition",
            NemesisKind::Kill => "kill",
            NemesisKind::Pause => "pause",
            NemesisKind::Delay => "delay",
            NemesisKind::Flaky => "flaky",
            NemesisKind::Member => "member",
            NemesisKind::Replace => "replace",
            NemesisKind::Disk => "disk",
            NemesisKind::Clock => "clock",
            NemesisKind::Power => "power",
            NemesisKind::PowerLeader => "power-leader",
            NemesisKind::PowerAll => "power-all",
            NemesisKind::Freeze => "freeze",
            NemesisKind::Ghost => "ghost",
            NemesisKind::SlowDisk => "slow-disk",
            NemesisKind::DiskEio => "disk-eio",
            NemesisKind::PowerAimed => "power-aimed",
        }
    }

    /// Whether it needs every data dir on a fault filesystem.
    pub fn needs_faultfs(self) -> bool {
        self.is_power() || matches!(self, NemesisKind::SlowDisk | NemesisKind::DiskEio)
    }

    /// Whether it cuts power (a run of it without a cut proves nothing).
    pub fn is_power(self) -> bool {
        matches!(
            self,
            NemesisKind::Power | NemesisKind::PowerLeader | NemesisKind::PowerAll | NemesisKind::PowerAimed
        )
    }
}

impl fmt::Display for NemesisKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for NemesisKind {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self, Error> {
        NemesisKind::KNOWN
            .into_iter()
            .find(|k| k.name() == s.trim())
            .ok_or_else(|| Error::Invalid {
                field: "nemesis",
                reason: format!(
                    "{s:?} is not one of {}",
                    NemesisKind::KNOWN.map(|k| k.name()).join(", ")
                ),
            })
    }
}

/// Parse `kill,partition,pause` (or `all`, or `none`).
pub fn parse_kinds(s: &str) -> Result<Vec<NemesisKind>, Error> {
    match s.trim() {
        "all" => Ok(NemesisKind::ALL.to_vec()),
        "none" | "" => Ok(Vec::new()),
        s => {
            let set: BTreeSet<NemesisKind> = s.split(',').map(str::parse).collect::<Result<_, _>>()?;
            Ok(set.into_iter().collect())
        }
    }
}

/// One concrete fault.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Fault {
    /// The leader alone on one side.
    IsolateLeader,
    /// A random minority on one side, the majority on the other.
    SplitRandom,
    /// Two halves that only talk through one bridge node.
    Bridge,
    /// Each node talks only to its two neighbours on a ring (5+ nodes).
    Ring,
    /// `kill -9` the leader.
    KillLeader,
    /// `kill -9` a random node.
    KillRandom,
    /// `kill -9` every node.
    KillAll,
    /// `SIGSTOP` the leader.
    PauseLeader,
    /// `SIGSTOP` a random node.
    PauseRandom,
    /// Delay every peer link.
    Delay {
        /// One-way latency.
        delay_ms: u64,
        /// Extra random latency.
        jitter_ms: u64,
    },
    /// Kill connections at random on every peer link.
    Flaky {
        /// Chance per forwarded chunk, in thousandths.
        drop_per_mille: u32,
    },
    /// Remove a random voter, re-add it when healing.
    RemoveVoter,
    /// Remove a random voter, kill it and wipe its data dir; start it
    /// empty and re-add it when healing.
    ReplaceWiped,
    /// Fill the leader's disk to `ENOSPC`.
    FillDiskLeader,
    /// Fill a random node's disk to `ENOSPC`.
    FillDiskRandom,
    /// Fill the leader's (or a random node's) disk, then `kill -9` it and
    /// restart it on the full disk, as a rover rebooting with a full SD
    /// card: RocksDB must create files to open.
    FillDiskRestart,
    /// Restart the leader (or a random node) with its clock shifted.
    ClockJump {
        /// The shift, ms (negative: back in time).
        offset_ms: i64,
    },
    /// Restart every node with its clock shifted (a fleet whose time
    /// source was wrong, fixed at once by healing).
    ClockJumpAll {
        /// The shift, ms (negative: back in time).
        offset_ms: i64,
    },
    /// Power cut of the leader: `kill -9`, its unsynced data dropped,
    /// restarted after `restart_ms`.
    PowerLeader {
        /// Time off, ms (0: at once).
        restart_ms: u64,
    },
    /// Power cut of a random node.
    PowerRandom {
        /// Time off, ms.
        restart_ms: u64,
    },
    /// Power cut of every node at once.
    PowerAll {
        /// Time off, ms.
        restart_ms: u64,
    },
    /// `SIGSTOP` a follower for the step's (long) hold.
    FreezeFollower,
    /// Add [`GHOST_ID`] (not running) as a learner and try to promote it;
    /// remove it when healing.
    GhostMember,
    /// The SD-card fsync model on some disks, from a device stall of
    /// `stall_ms` (0: none); the base speed again when healing.
    SlowDisk {
        /// Whose disks.
        whose: Disks,
        /// A device stall at the start, ms.
        stall_ms: u64,
    },
    /// Every fsync of one disk fails with `EIO`; healing power-cuts the
    /// node, mends the disk and restarts it.
    DiskEio {
        /// The leader's disk (else a random node's).
        leader: bool,
    },
    /// Power cut of a node (or of every node) while it saves a snapshot.
    PowerInSnapshot {
        /// Every node at that moment, not only the one saving.
        all: bool,
    },
    /// Power cut of the leader (or of every node) just after it was asked
    /// to remove a voter; the voter is added back when healing.
    PowerInMembership {
        /// Every node, not only the leader.
        all: bool,
    },
    /// Power cut of a deposed leader while it truncates the suffix it
    /// appended alone.
    PowerInTruncation,
}

/// Whose disks a disk fault slows.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Disks {
    /// The leader's.
    Leader,
    /// One follower's: a quorum without it remains.
    Follower,
    /// Every node's.
    All,
}

impl fmt::Display for Disks {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Disks::Leader => "the leader",
            Disks::Follower => "a follower",
            Disks::All => "every node",
        })
    }
}

/// The slow-disk nemesis's fsync model (see [`crate::faultfs::DelaySpec`]).
pub const SLOW_DISK_SPEC: &str = "sd-card";
/// The device stall the slow-disk nemesis begins half its faults with.
const SLOW_DISK_STALL_MS: u64 = 2000;

impl Fault {
    /// The family a fault belongs to, for "was any of it injected".
    pub fn family(self) -> &'static str {
        match self {
            Fault::IsolateLeader | Fault::SplitRandom | Fault::Bridge | Fault::Ring => "partition",
            Fault::KillLeader | Fault::KillRandom | Fault::KillAll => "kill",
            Fault::PauseLeader | Fault::PauseRandom => "pause",
            Fault::Delay { .. } => "delay",
            Fault::Flaky { .. } => "flaky",
            Fault::RemoveVoter => "member",
            Fault::ReplaceWiped => "replace",
            Fault::FillDiskLeader | Fault::FillDiskRandom | Fault::FillDiskRestart => "disk",
            Fault::ClockJump { .. } | Fault::ClockJumpAll { .. } => "clock",
            Fault::PowerLeader { .. } | Fault::PowerRandom { .. } | Fault::PowerAll { .. } => "power",
            Fault::FreezeFollower => "freeze",
            Fault::GhostMember => "ghost",
            Fault::SlowDisk { .. } => "slow-disk",
            Fault::DiskEio { .. } => "disk-eio",
            Fault::PowerInSnapshot { .. } => "power-in-snapshot",
            Fault::PowerInMembership { .. } => "power-in-membership",
            Fault::PowerInTruncation => "power-in-truncation",
        }
    }
}

/// The id the ghost nemesis adds: no real node has it.
pub const GHOST_ID: u64 = 99;
/// Where the ghost "listens": the discard port, which nothing serves here.
const GHOST_ADDR: &str = "127.0.0.1:9";

/// A fault in the schedule.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Step {
    /// When it starts, counted from the start of the load.
    pub at_ms: u64,
    /// How long it lasts before it is healed.
    pub hold_ms: u64,
    /// What it is.
    pub fault: Fault,
}

/// How long a node restarted on a full disk is watched: RocksDB opens (or
/// fails to) in well under a second; slack for a loaded machine.
const DISK_RESTART_WATCH: Duration = Duration::from_secs(10);

/// How many lines of a node log report a full disk, and the first one
/// (trimmed to 300 characters).
fn enospc_lines(log: &str) -> (usize, String) {
    let hits: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("No space left") || l.contains("os error 28") || l.contains("ENOSPC"))
        .collect();
    let first = hits.first().map_or(String::new(), |l| l.chars().take(300).collect());
    (hits.len(), first)
}

/// Most faults in one run: one every ~2.5 s for 10 minutes. A run longer
/// than that has a quiet tail rather than an unbounded schedule.
const MAX_STEPS: usize = 240;

fn pick(kind: NemesisKind, nodes: u64, rng: &mut StdRng) -> Fault {
    match kind {
        NemesisKind::Partition => {
            let mut choices = vec![Fault::IsolateLeader, Fault::SplitRandom, Fault::Bridge];
            if nodes >= 5 {
                choices.push(Fault::Ring);
            }
            choices[rng.random_range(0..choices.len())]
        }
        NemesisKind::Kill => match rng.random_range(0..10) {
            0..=4 => Fault::KillLeader,
            5..=7 => Fault::KillRandom,
            _ => Fault::KillAll,
        },
        NemesisKind::Pause => {
            if rng.random_bool(0.7) {
                Fault::PauseLeader
            } else {
                Fault::PauseRandom
            }
        }
        NemesisKind::Delay => Fault::Delay {
            delay_ms: rng.random_range(50..=300),
            jitter_ms: rng.random_range(0..=100),
        },
        NemesisKind::Flaky => Fault::Flaky {
            drop_per_mille: rng.random_range(5..=50),
        },
        NemesisKind::Member => Fault::RemoveVoter,
        NemesisKind::Replace => Fault::ReplaceWiped,
        NemesisKind::Clock => {
            let offset_ms = [3_600_000, -3_600_000, 60_000, -60_000][rng.random_range(0..4)];
            if rng.random_bool(0.5) {
                Fault::ClockJumpAll { offset_ms }
            } else {
                Fault::ClockJump { offset_ms }
            }
        }
        NemesisKind::Power => {
            // At once half the time, else up to 500 ms off.
            let restart_ms = if rng.random_bool(0.5) {
                0
            } else {
                rng.random_range(1..=500)
            };
            match rng.random_range(0..20) {
                0..=11 => Fault::PowerLeader { restart_ms },
                12..=16 => Fault::PowerRandom { restart_ms },
                _ => Fault::PowerAll { restart_ms },
            }
        }
        NemesisKind::PowerLeader => Fault::PowerLeader { restart_ms: 0 },
        NemesisKind::PowerAll => Fault::PowerAll { restart_ms: 0 },
        NemesisKind::Freeze => Fault::FreezeFollower,
        NemesisKind::Ghost => Fault::GhostMember,
        NemesisKind::SlowDisk => Fault::SlowDisk {
            whose: match rng.random_range(0..10) {
                0..=4 => Disks::Follower,
                5..=7 => Disks::Leader,
                _ => Disks::All,
            },
            stall_ms: if rng.random_bool(0.5) { SLOW_DISK_STALL_MS } else { 0 },
        },
        NemesisKind::DiskEio => Fault::DiskEio {
            leader: rng.random_bool(0.6),
        },
        NemesisKind::PowerAimed => match rng.random_range(0..10) {
            0..=3 => Fault::PowerInSnapshot {
                all: rng.random_bool(0.3),
            },
            4..=6 => Fault::PowerInMembership {
                all: rng.random_bool(0.3),
            },
            _ => Fault::PowerInTruncation,
        },
        NemesisKind::Disk => match rng.random_range(0..3) {
            0 => Fault::FillDiskLeader,
            1 => Fault::FillDiskRandom,
            _ => Fault::FillDiskRestart,
        },
    }
}

/// The faults of a run: after `warmup`, a fault held 1–3.5 s, then a quiet
/// gap of 0.8–2 s, and so on until 1 s before `duration` ends.
pub fn schedule(seed: u64, nodes: u64, kinds: &[NemesisKind], warmup: Duration, duration: Duration) -> Vec<Step> {
    let mut rng = StdRng::seed_from_u64(seed ^ 0x6e65_6d65_7369_7321);
    let mut out = Vec::new();
    if kinds.is_empty() {
        return out;
    }
    let end = duration.as_millis() as u64;
    let mut t = warmup.as_millis() as u64;
    while out.len() < MAX_STEPS {
        let hold = rng.random_range(1000..=3500);
        if t + hold + 1000 > end {
            break;
        }
        let kind = kinds[rng.random_range(0..kinds.len())];
        let fault = pick(kind, nodes, &mut rng);
        // A freeze holds long, through a burst; drawn only for a freeze, so
        // schedules without one are unchanged.
        let hold = if fault == Fault::FreezeFollower {
            rng.random_range(8000..=15000).min(end.saturating_sub(t + 1000))
        } else {
            hold
        };
        out.push(Step {
            at_ms: t,
            hold_ms: hold,
            fault,
        });
        t += hold + rng.random_range(800..=2000);
    }
    out
}

fn fmt_set(ids: &[u64]) -> String {
    let v: Vec<String> = ids.iter().map(u64::to_string).collect();
    format!("{{{}}}", v.join(","))
}

/// What must be undone when a step heals.
#[derive(Default)]
struct Active {
    removed: Option<u64>,
    /// The ghost nemesis added [`GHOST_ID`].
    ghost: bool,
    /// A node whose disk is full, and its log's length when it filled.
    full_disk: Option<(u64, u64)>,
    clock_jumped: Vec<u64>,
    /// Disks the slow-disk nemesis slowed, and the leader when it did (a
    /// slow follower alone must not move leadership).
    slow_disks: Vec<u64>,
    slow_follower_leader: Option<u64>,
    /// A node whose fsyncs fail, and its log's length when they began.
    eio: Option<(u64, u64)>,
}

/// How a node took a disk fault, as seen when the fault heals.
enum Took {
    /// Its process exited (fail-stop).
    Exited,
    /// It answers its status: `role …, applied …`.
    Answering(String),
    /// It runs but its status fails (its Raft core stopped).
    CoreStopped,
}

impl Took {
    async fn of(cluster: &mut Cluster, id: u64) -> Self {
        if cluster.exited(id) {
            return Took::Exited;
        }
        match cluster.status(id).await {
            Some(s) => Took::Answering(format!(
                "role {}, applied {}",
                s["role"].as_str().unwrap_or("?"),
                s["applied_index"]
            )),
            None => Took::CoreStopped,
        }
    }
}

/// Carries out a schedule against a cluster.
pub struct Nemesis {
    rng: StdRng,
    rec: Recorder,
    active: Active,
    not_injected: Vec<String>,
    power_cuts: usize,
    /// Per fault family: steps scheduled, steps injected, and why the last
    /// one that was not injected was not.
    families: std::collections::BTreeMap<&'static str, (usize, usize, String)>,
    membership_lies: Vec<String>,
    ghosts: usize,
    /// Slow-follower faults during which the leader changed.
    slow_follower_leader_changes: usize,
    /// Why the current aimed power cut missed its moment (it still cut):
    /// the step counts as not injected for its family.
    missed: Option<String>,
    /// Per aimed family: cuts made, and cuts that hit their moment.
    aimed: std::collections::BTreeMap<&'static str, (usize, usize)>,
}

impl Nemesis {
    /// A nemesis recording into `rec`, resolving random targets from `seed`.
    pub fn new(seed: u64, rec: Recorder) -> Self {
        Self {
            rng: StdRng::seed_from_u64(seed ^ 0x7461_7267_6574_7321),
            rec,
            active: Active::default(),
            not_injected: Vec::new(),
            power_cuts: 0,
            families: std::collections::BTreeMap::new(),
            membership_lies: Vec::new(),
            ghosts: 0,
            slow_follower_leader_changes: 0,
            missed: None,
            aimed: std::collections::BTreeMap::new(),
        }
    }

    /// Faults that could not be injected as scheduled (a faultfs that is
    /// missing, or a cut not acknowledged): each makes the run
    /// inconclusive.
    pub fn not_injected(&self) -> &[String] {
        &self.not_injected
    }

    /// Fault families that were scheduled but never injected, each with
    /// how many steps it had and why the last one was not injected: a run
    /// that enabled a fault and never carried it out proves nothing about
    /// it (inconclusive, never a pass).
    pub fn uninjected_families(&self) -> Vec<String> {
        self.families
            .iter()
            .filter(|(_, (_, injected, _))| *injected == 0)
            .map(|(family, (scheduled, _, why))| {
                format!("no {family} fault was injected ({scheduled} scheduled; last: {why})")
            })
            .collect()
    }

    /// What the ghost nemesis saw the cluster claim about a member that
    /// is not running and was not true (each fails the run).
    pub fn membership_lies(&self) -> &[String] {
        &self.membership_lies
    }

    /// Ghost members the ghost nemesis tried to add and promote.
    pub fn ghosts(&self) -> usize {
        self.ghosts
    }

    /// Slow-follower faults during which leadership moved (the leader
    /// before and after differ; issue 20's goal is none).
    pub fn slow_follower_leader_changes(&self) -> usize {
        self.slow_follower_leader_changes
    }

    /// Aimed power cuts (the `power-aimed` nemesis), per moment: cuts
    /// made, and cuts that hit their moment.
    pub fn aimed(&self) -> &std::collections::BTreeMap<&'static str, (usize, usize)> {
        &self.aimed
    }

    /// Power cuts carried out (nodes cut, counted per node).
    pub fn power_cuts(&self) -> usize {
        self.power_cuts
    }

    /// Run `steps`, counted from `start`, stopping early at `stop`.
    pub async fn run(&mut self, cluster: &mut Cluster, steps: &[Step], start: Instant, stop: Instant) {
        for step in steps {
            let at = start + Duration::from_millis(step.at_ms);
            if at >= stop {
                break;
            }
            tokio::time::sleep_until(at).await;
            let starts = self.rec.events_in_phase("start");
            let failed = self.not_injected.len();
            let started = self.start(cluster, step.fault).await;
            let missed = self.missed.take();
            let why = match started {
                Err(e) => {
                    self.rec.event("error", format!("{:?}: {e}", step.fault));
                    Some(e.to_string())
                }
                Ok(()) if self.not_injected.len() > failed => self.not_injected.last().cloned(),
                Ok(()) if missed.is_some() => missed,
                // A step that found no target records no start.
                Ok(()) if self.rec.events_in_phase("start") == starts => Some("no target".to_string()),
                Ok(()) => None,
            };
            let family = self.families.entry(step.fault.family()).or_default();
            family.0 += 1;
            match why {
                None => family.1 += 1,
                Some(why) => family.2 = why,
            }
            tokio::time::sleep_until((at + Duration::from_millis(step.hold_ms)).min(stop)).await;
            if let Err(e) = self.heal(cluster).await {
                self.rec.event("error", format!("healing {:?}: {e}", step.fault));
            }
        }
    }

    /// Suffix of a partition event: how the cut was made, in netns mode.
    fn via(cluster: &Cluster) -> String {
        match cluster.cut_mechanism() {
            "proxy" => String::new(),
            m => format!(" ({m} drop rules)"),
        }
    }

    fn up(cluster: &Cluster) -> Vec<u64> {
        cluster
            .ids()
            .into_iter()
            .filter(|id| cluster.state(*id) == ProcState::Up)
            .collect()
    }

    /// A node that is up, drawn from the target RNG (`None`: none is).
    fn random_up(&mut self, cluster: &Cluster) -> Option<u64> {
        let up = Self::up(cluster);
        (!up.is_empty()).then(|| up[self.rng.random_range(0..up.len())])
    }

    async fn leader_or_random(&mut self, cluster: &Cluster) -> Option<u64> {
        match cluster.leader().await {
            Some(l) => Some(l),
            None => self.random_up(cluster),
        }
    }

    async fn start(&mut self, cluster: &mut Cluster, fault: Fault) -> Result<(), Error> {
        let mut ids = cluster.ids();
        ids.shuffle(&mut self.rng);
        let n = ids.len();
        // A ring of 3 or 4 is (nearly) fully connected: use a bridge instead.
        let fault = if fault == Fault::Ring && n < 5 {
            Fault::Bridge
        } else {
            fault
        };
        match fault {
            Fault::IsolateLeader => {
                let Some(l) = self.leader_or_random(cluster).await else {
                    return Ok(());
                };
                cluster.partition(|a, b| (a == l) == (b == l))?;
                let rest: Vec<u64> = cluster.ids().into_iter().filter(|i| *i != l).collect();
                self.rec.event(
                    "start",
                    format!("partition: leader {l} isolated | {}", fmt_set(&rest)) + &Self::via(cluster),
                );
            }
            Fault::SplitRandom => {
                let minority = self.rng.random_range(1..=(n - 1) / 2);
                let (small, big) = ids.split_at(minority);
                let (small, big) = (small.to_vec(), big.to_vec());
                cluster.partition(|a, b| small.contains(&a) == small.contains(&b))?;
                self.rec.event(
                    "start",
                    format!("partition: split {} | {}", fmt_set(&small), fmt_set(&big)) + &Self::via(cluster),
                );
            }
            Fault::Bridge => {
                let bridge = ids[0];
                let half = (n - 1) / 2;
                let left: Vec<u64> = ids[1..1 + half].to_vec();
                let right: Vec<u64> = ids[1 + half..].to_vec();
                cluster.partition(|a, b| a == bridge || b == bridge || left.contains(&a) == left.contains(&b))?;
                self.rec.event(
                    "start",
                    format!(
                        "partition: bridge {bridge} between {} and {}",
                        fmt_set(&left),
                        fmt_set(&right)
                    ) + &Self::via(cluster),
                );
            }
            Fault::Ring => {
                let pos = |x: u64| ids.iter().position(|i| *i == x).unwrap_or(0);
                let ring = ids.clone();
                cluster.partition(|a, b| {
                    let d = pos(a).abs_diff(pos(b));
                    d <= 1 || d == n - 1
                })?;
                self.rec.event(
                    "start",
                    format!("partition: ring {ring:?} (neighbours only)") + &Self::via(cluster),
                );
            }
            Fault::KillLeader | Fault::KillRandom => {
                let target = if fault == Fault::KillLeader {
                    self.leader_or_random(cluster).await
                } else {
                    self.random_up(cluster)
                };
                if let Some(t) = target {
                    cluster.kill(t);
                    let what = if fault == Fault::KillLeader { "leader" } else { "node" };
                    self.rec.event("start", format!("kill -9 {what} {t}"));
                }
            }
            Fault::KillAll => {
                for id in cluster.ids() {
                    cluster.kill(id);
                }
                self.rec.event("start", "kill -9 all nodes");
            }
            Fault::PauseLeader | Fault::PauseRandom => {
                let target = if fault == Fault::PauseLeader {
                    self.leader_or_random(cluster).await
                } else {
                    self.random_up(cluster)
                };
                if let Some(t) = target {
                    cluster.pause(t)?;
                    let what = if fault == Fault::PauseLeader { "leader" } else { "node" };
                    self.rec.event("start", format!("SIGSTOP {what} {t}"));
                }
            }
            Fault::FreezeFollower => {
                let leader = cluster.leader().await;
                let followers: Vec<u64> = Self::up(cluster).into_iter().filter(|i| Some(*i) != leader).collect();
                if leader.is_none() || followers.is_empty() {
                    return Ok(());
                }
                let t = followers[self.rng.random_range(0..followers.len())];
                cluster.pause(t)?;
                self.rec
                    .event("start", format!("SIGSTOP follower {t} (freeze, leader {leader:?})"));
            }
            Fault::Delay { delay_ms, jitter_ms } => {
                cluster.set_all_links(LinkFaults {
                    delay_ms,
                    jitter_ms,
                    ..Default::default()
                });
                self.rec.event(
                    "start",
                    format!("delay every peer link {delay_ms} ms + up to {jitter_ms} ms"),
                );
            }
            Fault::Flaky { drop_per_mille } => {
                cluster.set_all_links(LinkFaults {
                    drop_per_mille,
                    ..Default::default()
                });
                self.rec.event(
                    "start",
                    format!("flaky peer links: {drop_per_mille}/1000 chunks kill their connection"),
                );
            }
            Fault::ClockJump { offset_ms } => {
                let Some(target) = self.leader_or_random(cluster).await else {
                    return Ok(());
                };
                cluster.kill(target);
                cluster.set_clock_offset(target, offset_ms);
                self.active.clock_jumped = vec![target];
                cluster.restart(target).await?;
                self.rec.event(
                    "start",
                    format!("node {target} restarted with its wall clock shifted by {offset_ms} ms"),
                );
            }
            Fault::ClockJumpAll { offset_ms } => {
                let all = cluster.ids();
                for id in &all {
                    cluster.kill(*id);
                    cluster.set_clock_offset(*id, offset_ms);
                }
                self.active.clock_jumped = all.clone();
                for id in &all {
                    cluster.restart(*id).await?;
                }
                self.rec.event(
                    "start",
                    format!("every node restarted with its wall clock shifted by {offset_ms} ms"),
                );
            }
            Fault::PowerLeader { restart_ms } | Fault::PowerRandom { restart_ms } | Fault::PowerAll { restart_ms } => {
                if !self.need_faultfs(cluster, "power cut") {
                    return Ok(());
                }
                let (targets, what) = match fault {
                    Fault::PowerAll { .. } => (cluster.ids(), "all nodes".to_string()),
                    Fault::PowerLeader { .. } => match self.leader_or_random(cluster).await {
                        Some(l) => (vec![l], format!("leader {l}")),
                        None => return Ok(()),
                    },
                    _ => match self.random_up(cluster) {
                        Some(t) => (vec![t], format!("node {t}")),
                        None => return Ok(()),
                    },
                };
                self.cut_and_restart(cluster, &targets, &what, restart_ms, "", None)
                    .await?;
            }
            Fault::FillDiskLeader | Fault::FillDiskRandom | Fault::FillDiskRestart => {
                if !cluster.has_small_disk() {
                    self.rec.event(
                        "start",
                        "disk fault skipped: nodes have no small disk (mounting a tmpfs needs root)",
                    );
                    return Ok(());
                }
                let target = if matches!(fault, Fault::FillDiskLeader | Fault::FillDiskRestart) {
                    self.leader_or_random(cluster).await
                } else {
                    self.random_up(cluster)
                };
                let Some(target) = target else { return Ok(()) };
                let log_at = cluster.log_len(target);
                let (bytes, left) = cluster.fill_disk(target)?;
                self.active.full_disk = Some((target, log_at));
                let left = left.map_or("?".to_string(), |b| b.to_string());
                let filled = format!(
                    "disk of node {target} filled ({:.1} MiB filler, {left} bytes left, ENOSPC)",
                    bytes as f64 / (1u64 << 20) as f64
                );
                if fault != Fault::FillDiskRestart {
                    self.rec.event("start", filled);
                    return Ok(());
                }
                cluster.kill(target);
                let what = match cluster.start_watching(target, DISK_RESTART_WATCH).await {
                    Ok(None) => "came up on the full disk".to_string(),
                    Ok(Some(status)) => format!(
                        "exited ({status}) on the full disk: {}",
                        cluster
                            .log_tail(target, 3)
                            .lines()
                            .rev()
                            .find(|l| !l.trim().is_empty())
                            .unwrap_or("")
                            .trim()
                    ),
                    Err(_) => format!("neither up nor exited within {DISK_RESTART_WATCH:?} on the full disk"),
                };
                self.rec
                    .event("start", format!("{filled}; kill -9 and restart: {what}"));
            }
            Fault::GhostMember => self.ghost(cluster).await,
            Fault::SlowDisk { whose, stall_ms } => self.slow_disk(cluster, whose, stall_ms).await,
            Fault::DiskEio { leader } => self.disk_eio(cluster, leader).await,
            Fault::PowerInSnapshot { all } => self.power_in_snapshot(cluster, all).await?,
            Fault::PowerInMembership { all } => self.power_in_membership(cluster, all).await?,
            Fault::PowerInTruncation => self.power_in_truncation(cluster).await?,
            Fault::RemoveVoter | Fault::ReplaceWiped => {
                let Some(via) = self.leader_or_random(cluster).await else {
                    return Ok(());
                };
                let Some(voters) = cluster.voters(via).await else {
                    return Ok(());
                };
                // Never shrink below 3 voters: a 2-voter cluster cannot lose anyone.
                if voters.len() < 3 {
                    return Ok(());
                }
                let target = voters[self.rng.random_range(0..voters.len())];
                let asker = Self::up(cluster).into_iter().find(|i| *i != target).unwrap_or(via);
                let res = cluster
                    .admin(asker, reqwest::Method::DELETE, &format!("/v1/members/{target}"), None)
                    .await;
                // Whatever the answer, the removal may have happened: put it
                // back when healing (re-adding a member is harmless).
                self.active.removed = Some(target);
                match (res, fault) {
                    // Only a removal the cluster acknowledged may be followed
                    // by a wipe: wiping a voter's log is data loss Raft does
                    // not tolerate, and is not what this fault tests.
                    (Ok(_), Fault::ReplaceWiped) => {
                        cluster.kill(target);
                        cluster.wipe(target)?;
                        self.rec.event(
                            "start",
                            format!("remove voter {target} (via {asker}), kill -9 it, wipe its data dir"),
                        );
                    }
                    (Ok(_), _) => self.rec.event("start", format!("remove voter {target} (via {asker})")),
                    (Err(e), _) => self.rec.event(
                        "start",
                        format!("remove voter {target} (via {asker}) answered {e}; not wiped"),
                    ),
                }
            }
        }
        Ok(())
    }

    /// Undo whatever is active: links pass, nodes resume or restart, a
    /// removed voter is re-added.
    pub async fn heal(&mut self, cluster: &mut Cluster) -> Result<(), Error> {
        if let Some((id, log_at)) = self.active.full_disk.take() {
            self.heal_disk(cluster, id, log_at).await;
        }
        for id in std::mem::take(&mut self.active.clock_jumped) {
            if cluster.clock_offset(id) != 0 {
                cluster.kill(id);
                cluster.set_clock_offset(id, 0);
                self.rec
                    .event("heal", format!("node {id} restarting on the true clock"));
            }
        }
        self.heal_slow_disks(cluster).await;
        if let Some((id, log_at)) = self.active.eio.take() {
            self.heal_eio(cluster, id, log_at).await?;
        }
        cluster.heal().await?;
        if let Some(id) = self.active.removed.take() {
            self.readd(cluster, id).await;
        }
        if std::mem::take(&mut self.active.ghost) {
            self.remove_ghost(cluster).await;
        }
        self.rec.event("heal", "all links pass, all nodes running");
        Ok(())
    }

    /// Power-cut `targets` (`kill -9`, unsynced data dropped), record it
    /// as the step's start (with `why`, where the cut was aimed), mend
    /// node `mend`'s disk (slowed by an aim: the slow disk was there to
    /// widen a window, not to slow the reboot) while the power is off, and
    /// restart them after `restart_ms`. `false` if the cut was not
    /// injected (recorded; the run is then inconclusive).
    async fn cut_and_restart(
        &mut self,
        cluster: &mut Cluster,
        targets: &[u64],
        what: &str,
        restart_ms: u64,
        why: &str,
        mend: Option<u64>,
    ) -> Result<bool, Error> {
        let mut applied = Vec::new();
        for t in targets {
            let a = cluster.status(*t).await.and_then(|s| s["applied_index"].as_u64());
            applied.push(format!("n{t}@{}", a.map_or("?".into(), |a| a.to_string())));
        }
        let injected = match cluster.power_cut(targets).await {
            Ok(answers) => {
                self.power_cuts += targets.len();
                let dropped: Vec<String> = answers
                    .iter()
                    .map(|(id, a)| format!("n{id}: {}", a.trim_start_matches("ok cut: ")))
                    .collect();
                self.rec.event(
                    "start",
                    format!(
                        "power cut {what}{why} (applied {}; kill -9, unsynced data dropped: {}); restart after {restart_ms} ms",
                        applied.join(" "),
                        dropped.join("; ")
                    ),
                );
                true
            }
            Err(e) => {
                let why = format!("power cut of {what} not injected: {e}");
                self.rec.event("error", why.clone());
                self.not_injected.push(why);
                false
            }
        };
        if let Some(id) = mend {
            self.unwiden(cluster, id).await;
        }
        tokio::time::sleep(Duration::from_millis(restart_ms)).await;
        cluster.restart_all(targets).await?;
        self.rec.event("info", format!("power back: {what} restarted"));
        Ok(injected)
    }

    /// A disk fault needs the fault filesystems; without them the fault is
    /// recorded as not injected (the run is then inconclusive).
    fn need_faultfs(&mut self, cluster: &Cluster, what: &str) -> bool {
        if cluster.has_faultfs() {
            return true;
        }
        let why = format!(
            "{what} not injected: no fault filesystem ({})",
            cluster.faultfs_note().unwrap_or("not asked for")
        );
        self.rec.event("error", why.clone());
        self.not_injected.push(why);
        false
    }

    /// Give `whose` disks the SD-card model, from a device stall of
    /// `stall_ms`.
    async fn slow_disk(&mut self, cluster: &Cluster, whose: Disks, stall_ms: u64) {
        if !self.need_faultfs(cluster, "slow disk") {
            return;
        }
        let leader = cluster.leader().await;
        let targets: Vec<u64> = match whose {
            Disks::All => cluster.ids(),
            Disks::Leader => leader.into_iter().collect(),
            Disks::Follower => {
                let followers: Vec<u64> = Self::up(cluster).into_iter().filter(|i| Some(*i) != leader).collect();
                if leader.is_none() || followers.is_empty() {
                    Vec::new()
                } else {
                    vec![followers[self.rng.random_range(0..followers.len())]]
                }
            }
        };
        if targets.is_empty() {
            return;
        }
        let mut failed = Vec::new();
        for t in &targets {
            let mut asks = vec![format!("delay {SLOW_DISK_SPEC}")];
            if stall_ms > 0 {
                asks.push(format!("stall {stall_ms}"));
            }
            for ask in asks {
                if let Err(e) = cluster.faultfs_request(*t, &ask).await {
                    failed.push(format!("n{t} `{ask}`: {e}"));
                }
            }
        }
        self.active.slow_disks = targets.clone();
        if !failed.is_empty() {
            let why = format!("slow disk not injected: {}", failed.join("; "));
            self.rec.event("error", why.clone());
            self.not_injected.push(why);
            return;
        }
        if whose == Disks::Follower {
            self.active.slow_follower_leader = leader;
        }
        let stall = if stall_ms > 0 {
            format!(", from a {stall_ms} ms device stall")
        } else {
            String::new()
        };
        self.rec.event(
            "start",
            format!(
                "slow disk on {whose} {}: fsyncs now {SLOW_DISK_SPEC} (p50 5 ms, p99 80 ms){stall} (leader {})",
                fmt_set(&targets),
                leader.map_or("none".to_string(), |l| l.to_string())
            ),
        );
    }

    /// Every disk the slow-disk nemesis slowed back to the base speed, and
    /// whether leadership moved under a slow follower.
    async fn heal_slow_disks(&mut self, cluster: &Cluster) {
        let slowed = std::mem::take(&mut self.active.slow_disks);
        if slowed.is_empty() {
            return;
        }
        let base = cluster.faultfs_base_delay().unwrap_or_else(|| "none".to_string());
        let mut failed = Vec::new();
        for id in &slowed {
            if let Err(e) = cluster.faultfs_request(*id, &format!("delay {base}")).await {
                failed.push(format!("n{id}: {e}"));
            }
        }
        if !failed.is_empty() {
            self.rec
                .event("error", format!("disks not back to {base}: {}", failed.join("; ")));
        }
        if let Some(before) = self.active.slow_follower_leader.take() {
            let after = cluster.leader().await;
            if after != Some(before) {
                self.slow_follower_leader_changes += 1;
                self.rec.event(
                    "info",
                    format!(
                        "leadership moved from {before} to {} while follower {}'s disk was slow",
                        after.map_or("none".to_string(), |l| l.to_string()),
                        fmt_set(&slowed)
                    ),
                );
            }
        }
        self.rec
            .event("heal", format!("disks {} back to {base}", fmt_set(&slowed)));
    }

    /// Fail every fsync of the leader's (or a random node's) disk.
    async fn disk_eio(&mut self, cluster: &Cluster, leader: bool) {
        if !self.need_faultfs(cluster, "disk EIO") {
            return;
        }
        let target = if leader {
            self.leader_or_random(cluster).await
        } else {
            self.random_up(cluster)
        };
        let Some(t) = target else { return };
        if let Err(e) = cluster.faultfs_request(t, "eio 1000").await {
            let why = format!("disk EIO on node {t} not injected: {e}");
            self.rec.event("error", why.clone());
            self.not_injected.push(why);
            return;
        }
        self.active.eio = Some((t, cluster.log_len(t)));
        let what = if leader && cluster.leader().await == Some(t) {
            "leader"
        } else {
            "node"
        };
        self.rec
            .event("start", format!("disk EIO: every fsync of {what} {t}'s disk fails"));
    }

    /// Record how node `id` took its failing disk (fail-stop, its Raft core
    /// stopped, or carried on), then power-cut it, mend its disk and
    /// restart it: whatever its failed fsyncs did not make durable is gone.
    async fn heal_eio(&mut self, cluster: &mut Cluster, id: u64, log_at: u64) -> Result<(), Error> {
        let took = Took::of(cluster, id).await;
        let log = cluster.log_since(id, log_at);
        let eio_lines = log
            .lines()
            .filter(|l| l.contains("fsync failed") || l.contains("os error 5") || l.contains("Input/output error"))
            .count();
        let how = match took {
            Took::Exited => "had exited (fail-stop)".to_string(),
            Took::Answering(state) => format!("kept answering ({state})"),
            Took::CoreStopped => "was up but its status failed (Raft core stopped)".to_string(),
        };
        let cut = match cluster.power_cut(&[id]).await {
            Ok(answers) => answers
                .first()
                .map_or(String::new(), |(_, a)| a.trim_start_matches("ok cut: ").to_string()),
            Err(e) => {
                let why = format!("power cut after disk EIO on node {id} not injected: {e}");
                self.rec.event("error", why.clone());
                self.not_injected.push(why);
                String::new()
            }
        };
        if let Err(e) = cluster.faultfs_request(id, "eio 0").await {
            self.rec
                .event("error", format!("node {id}'s disk still fails fsyncs: {e}"));
        }
        cluster.restart_all(&[id]).await?;
        self.rec.event(
            "heal",
            format!(
                "disk of node {id} mended; node {id} {how}, {eio_lines} log lines on failed fsyncs; power-cut ({cut}) and restarted"
            ),
        );
        Ok(())
    }

    /// Free a full disk, and record how the node took it: did not start on
    /// it, crashed (the process exited), stopped its Raft core (it answers,
    /// but not its status: restarted here, as an operator would), or
    /// carried on; and what its log said about `ENOSPC` meanwhile.
    async fn heal_disk(&mut self, cluster: &mut Cluster, id: u64, log_at: u64) {
        let was_down = cluster.state(id) == ProcState::Down;
        let took = Took::of(cluster, id).await;
        cluster.free_disk(id);
        let enospc = enospc_lines(&cluster.log_since(id, log_at));
        let what = match took {
            _ if was_down => "was down (it did not start on the full disk); restarting it".to_string(),
            Took::Exited => "had exited (fail-stop); restarting it".to_string(),
            Took::Answering(state) => format!("kept running ({state})"),
            Took::CoreStopped => {
                cluster.kill(id);
                "was up but its status failed (Raft core stopped); restarting it".to_string()
            }
        };
        let enospc = match enospc {
            (0, _) => "; no ENOSPC in its log while full".to_string(),
            (n, first) => format!("; {n} ENOSPC log lines while full, first: {first}"),
        };
        self.rec
            .event("heal", format!("disk of node {id} freed; node {id} {what}{enospc}"));
    }

    /// Add the ghost (a member nothing runs) through the leader, then try to
    /// promote it, and check each answer against the truth: the add must
    /// say "not caught up" (202, `caught_up: false`), the promotion must be
    /// refused (409), and the voters must not change. Without a leader
    /// (another fault's election) nothing is tried.
    async fn ghost(&mut self, cluster: &Cluster) {
        let Some(leader) = cluster.leader().await else {
            self.rec.event("start", "ghost member: no leader, not tried");
            return;
        };
        let Some(before) = cluster.voters(leader).await else {
            return;
        };
        let body = json!({"id": GHOST_ID, "raft_addr": GHOST_ADDR, "api_addr": GHOST_ADDR, "wait_ms": 1000});
        let added = cluster
            .admin(leader, reqwest::Method::POST, "/v1/members", Some(body))
            .await;
        self.active.ghost = true;
        self.ghosts += 1;
        let mut lies = Vec::new();
        match &added {
            Ok(p) if p["caught_up"] == false => {}
            Ok(p) => lies.push(format!(
                "adding ghost node {GHOST_ID} (not running) answered success: {p}"
            )),
            // Leadership moved meanwhile: an honest refusal, nothing to check.
            Err(e) if e.starts_with("503") => {}
            Err(e) => lies.push(format!("adding ghost node {GHOST_ID} failed oddly: {e}")),
        }
        let promoted = cluster
            .admin(
                leader,
                reqwest::Method::POST,
                &format!("/v1/members/{GHOST_ID}/promote"),
                None,
            )
            .await;
        match &promoted {
            Err(e) if e.starts_with("409") || e.starts_with("503") || e.starts_with("404") => {}
            Err(e) => lies.push(format!("promoting ghost node {GHOST_ID} failed oddly: {e}")),
            Ok(v) => lies.push(format!("promoting ghost node {GHOST_ID} (not running) succeeded: {v}")),
        }
        let after = cluster.voters(leader).await;
        let set = |v: &[u64]| v.iter().copied().collect::<BTreeSet<u64>>();
        if after.as_ref().is_some_and(|a| set(a) != set(&before)) {
            lies.push(format!(
                "the voters changed from {} to {} around the promotion of a node that is not running",
                fmt_set(&before),
                fmt_set(after.as_deref().unwrap_or_default())
            ));
        }
        let what = format!(
            "ghost node {GHOST_ID} (not running) via leader {leader}: add answered {}, promote answered {}",
            match &added {
                Ok(p) => format!("caught_up={}", p["caught_up"]),
                Err(e) => e.chars().take(120).collect(),
            },
            match &promoted {
                Ok(_) => "success".to_string(),
                Err(e) => e.chars().take(160).collect(),
            }
        );
        self.rec.event("start", what);
        for lie in lies {
            self.rec.event("error", lie.clone());
            self.membership_lies.push(lie);
        }
    }

    /// Remove the ghost again; bounded retries (an election may be in
    /// progress right after a fault heals).
    async fn remove_ghost(&mut self, cluster: &Cluster) {
        let mut last = String::new();
        for _ in 0..10 {
            let Some(via) = cluster.leader().await else {
                tokio::time::sleep(Duration::from_millis(500)).await;
                continue;
            };
            match cluster
                .admin(via, reqwest::Method::DELETE, &format!("/v1/members/{GHOST_ID}"), None)
                .await
            {
                Ok(_) => {
                    self.rec.event("heal", format!("ghost node {GHOST_ID} removed"));
                    return;
                }
                Err(e) if e.starts_with("404") => return,
                Err(e) => last = e,
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        self.rec
            .event("error", format!("could not remove ghost node {GHOST_ID}: {last}"));
    }

    /// Add `id` back as a learner and promote it; bounded retries (an
    /// election may be in progress right after a fault heals).
    async fn readd(&mut self, cluster: &Cluster, id: u64) {
        let node = cluster.node(id);
        let body = json!({"id": id, "raft_addr": node.raft_addr, "api_addr": node.api_addr});
        let mut last = String::new();
        // 30 attempts, 500 ms apart: many elections' worth (after a power
        // cut of every node, all must restart and elect first).
        for _ in 0..30 {
            let Some(via) = cluster.leader().await.filter(|l| *l != id) else {
                last = format!("no node but {id} led");
                tokio::time::sleep(Duration::from_millis(500)).await;
                continue;
            };
            if cluster.voters(via).await.is_some_and(|v| v.contains(&id)) {
                self.rec.event("heal", format!("node {id} is a voter again"));
                return;
            }
            let added = cluster
                .admin(via, reqwest::Method::POST, "/v1/members", Some(body.clone()))
                .await;
            let promoted = match added {
                Ok(_) => {
                    cluster
                        .admin(via, reqwest::Method::POST, &format!("/v1/members/{id}/promote"), None)
                        .await
                }
                Err(e) => Err(e),
            };
            match promoted {
                Ok(_) => {
                    self.rec
                        .event("heal", format!("node {id} re-added and promoted (via {via})"));
                    return;
                }
                Err(e) => last = e,
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        self.rec.event("error", format!("could not re-add node {id}: {last}"));
    }
}

/// Keep one disk slow for the whole run: every 100 ms, find the leader
/// (the node that says it leads, highest term) and, when it changed, give
/// its faultfs the slow fsync delay and every other disk the base one (or
/// give a fixed node the slow one once). Changes are recorded as `info`
/// events; a faultfs that does not take its delay is an `error` event.
pub async fn slow_disk(
    disks: Vec<(u64, String, std::path::PathBuf)>,
    speeds: crate::run::DiskSpeeds,
    rec: Recorder,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    use crate::run::SlowDisk;
    let http = match reqwest::Client::builder().pool_max_idle_per_host(0).build() {
        Ok(h) => h,
        Err(_) => return,
    };
    let timeout = Duration::from_secs(2);
    let mut slow_now: Option<u64> = None;
    loop {
        let want = match &speeds.slow_disk {
            SlowDisk::None => None,
            SlowDisk::Node(n) => Some(*n),
            SlowDisk::Leader => {
                let mut best: Option<(u64, u64)> = None;
                for (id, api, _) in &disks {
                    let r = http
                        .get(format!("http://{api}/v1/status"))
                        .timeout(Duration::from_millis(300))
                        .send()
                        .await;
                    let Ok(r) = r else { continue };
                    let Ok(v) = r.json::<serde_json::Value>().await else {
                        continue;
                    };
                    if v["role"] == "leader" {
                        let term = v["term"].as_u64().unwrap_or(0);
                        if best.is_none_or(|(t, _)| term > t) {
                            best = Some((term, *id));
                        }
                    }
                }
                best.map(|(_, id)| id).or(slow_now)
            }
        };
        if want != slow_now {
            let mut failed = Vec::new();
            for (id, _, sock) in &disks {
                let spec = if Some(*id) == want { &speeds.slow } else { &speeds.base };
                if let Err(e) = crate::faultfs::request(sock, &format!("delay {spec}"), timeout).await {
                    failed.push(format!("n{id}: {e}"));
                }
            }
            if failed.is_empty() {
                if let Some(w) = want {
                    rec.event(
                        "info",
                        format!(
                            "disk: node {w}'s fsyncs now take {}, the others' {}",
                            speeds.slow, speeds.base
                        ),
                    );
                }
                slow_now = want;
            } else {
                rec.event("error", format!("disk speeds not set: {}", failed.join("; ")));
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(100)) => {}
            _ = stop.changed() => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_seed_always_gives_the_same_schedule_within_bounds() {
        let kinds = NemesisKind::ALL;
        let a = schedule(7, 5, &kinds, Duration::from_secs(2), Duration::from_secs(60));
        let b = schedule(7, 5, &kinds, Duration::from_secs(2), Duration::from_secs(60));
        assert_eq!(a, b);
        assert_ne!(
            a,
            schedule(8, 5, &kinds, Duration::from_secs(2), Duration::from_secs(60))
        );
        assert!(a.len() >= 10, "a 60 s run has many faults: {a:?}");
        for w in a.windows(2) {
            assert!(w[0].at_ms + w[0].hold_ms < w[1].at_ms, "faults overlap: {w:?}");
        }
        let last = a.last().unwrap();
        assert!(last.at_ms + last.hold_ms + 1000 <= 60_000, "{last:?} runs past the end");
        assert!(a.iter().all(|s| s.at_ms >= 2000), "a fault during warm-up: {a:?}");
    }

    #[test]
    fn only_enabled_kinds_are_scheduled() {
        let s = schedule(
            3,
            3,
            &[NemesisKind::Pause],
            Duration::from_secs(1),
            Duration::from_secs(30),
        );
        assert!(!s.is_empty());
        assert!(
            s.iter()
                .all(|s| matches!(s.fault, Fault::PauseLeader | Fault::PauseRandom)),
            "{s:?}"
        );
        assert!(schedule(3, 3, &[], Duration::from_secs(1), Duration::from_secs(30)).is_empty());
    }

    #[test]
    fn a_freeze_holds_long_and_leaves_other_schedules_alone() {
        let s = schedule(
            105,
            3,
            &[NemesisKind::Freeze],
            Duration::from_secs(2),
            Duration::from_secs(30),
        );
        assert!(!s.is_empty());
        for step in &s {
            assert_eq!(step.fault, Fault::FreezeFollower);
            assert!(
                step.hold_ms >= 8000 || step.at_ms + step.hold_ms + 1000 == 30_000,
                "{step:?}"
            );
            assert!(step.at_ms + step.hold_ms + 1000 <= 30_000, "{step:?}");
        }
        // A schedule without a freeze draws nothing more: seeds replay as before.
        let kinds = [NemesisKind::Pause, NemesisKind::Kill];
        let a = schedule(7, 3, &kinds, Duration::from_secs(2), Duration::from_secs(30));
        assert!(a.iter().all(|s| s.hold_ms <= 3500), "{a:?}");
    }

    #[test]
    fn disk_faults_include_restarts_on_a_full_disk() {
        let s = schedule(
            40,
            3,
            &[NemesisKind::Disk],
            Duration::from_secs(2),
            Duration::from_secs(120),
        );
        for f in [Fault::FillDiskLeader, Fault::FillDiskRandom, Fault::FillDiskRestart] {
            assert!(s.iter().any(|s| s.fault == f), "{f:?} never scheduled: {s:?}");
        }
    }

    #[test]
    fn slow_disks_cover_a_follower_the_leader_and_all_with_and_without_stalls() {
        let kinds = [NemesisKind::SlowDisk, NemesisKind::DiskEio];
        let s = schedule(203, 3, &kinds, Duration::from_secs(2), Duration::from_secs(300));
        for whose in [Disks::Follower, Disks::Leader, Disks::All] {
            for stall_ms in [0, SLOW_DISK_STALL_MS] {
                let f = Fault::SlowDisk { whose, stall_ms };
                assert!(s.iter().any(|s| s.fault == f), "{f:?} never scheduled");
            }
        }
        for leader in [true, false] {
            assert!(s.iter().any(|s| s.fault == Fault::DiskEio { leader }));
        }
        assert_eq!(parse_kinds("slow-disk,disk-eio").unwrap(), kinds.to_vec());
        assert!(kinds.iter().all(|k| k.needs_faultfs() && !k.is_power()));
    }

    #[test]
    fn kinds_parse_and_reject_typos() {
        assert_eq!(
            parse_kinds("kill,partition").unwrap(),
            vec![NemesisKind::Partition, NemesisKind::Kill]
        );
        assert_eq!(parse_kinds("all").unwrap().len(), 6);
        assert_eq!(parse_kinds("replace").unwrap(), vec![NemesisKind::Replace]);
        let e = parse_kinds("kill,partiton").unwrap_err().to_string();
        assert!(e.contains("partiton"), "{e}");
    }
}
