//! Lists of runs: the checked-in regression seeds (replayed first), the
//! short CI profile and the long profile for a person to run.

use std::path::Path;
use std::time::Duration;

use crate::cluster::Launcher;
use crate::error::Error;
use crate::nemesis::parse_kinds;
use crate::nemesis::NemesisKind;
use crate::run::RunConfig;
use crate::run::RunReport;
use crate::run::Verdict;

/// One run of a profile.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RunSpec {
    /// Seed.
    pub seed: u64,
    /// Cluster size.
    pub nodes: u64,
    /// Load duration.
    pub duration: Duration,
    /// Fault families.
    pub nemeses: Vec<NemesisKind>,
    /// Why this run is here.
    pub note: String,
}

impl RunSpec {
    /// A [`RunConfig`] for this spec, with the suite's defaults otherwise.
    pub fn config(&self, launcher: &Launcher) -> RunConfig {
        RunConfig::new(
            self.seed,
            self.nodes,
            self.duration,
            self.nemeses.clone(),
            launcher.clone(),
        )
    }
}

/// Parse the regression list: one run per line,
/// `SEED NODES DURATION_S NEMESES  # why`, `#` comments and blank lines
/// ignored.
pub fn parse_runs(text: &str, path: &Path) -> Result<Vec<RunSpec>, Error> {
    let mut out = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let (line, note) = match raw.split_once('#') {
            Some((l, n)) => (l.trim(), n.trim().to_string()),
            None => (raw.trim(), String::new()),
        };
        if line.is_empty() {
            continue;
        }
        let bad = |reason: String| Error::Parse {
            path: path.to_path_buf(),
            line: i + 1,
            reason,
        };
        let f: Vec<&str> = line.split_whitespace().collect();
        let [seed, nodes, secs, kinds] = f[..] else {
            return Err(bad(format!("expected `SEED NODES DURATION_S NEMESES`, got {line:?}")));
        };
        out.push(RunSpec {
            seed: seed.parse().map_err(|e| bad(format!("seed {seed:?}: {e}")))?,
            nodes: nodes.parse().map_err(|e| bad(format!("nodes {nodes:?}: {e}")))?,
            duration: Duration::from_secs(secs.parse().map_err(|e| bad(format!("duration {secs:?}: {e}")))?),
            nemeses: parse_kinds(kinds).map_err(|e| bad(e.to_string()))?,
            note,
        });
    }
    Ok(out)
}

/// The checked-in regression list, `jepsen-tests/regressions.txt`.
pub fn regressions() -> Result<Vec<RunSpec>, Error> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("regressions.txt");
    let text = std::fs::read_to_string(&path).map_err(Error::io(format!("read {}", path.display())))?;
    parse_runs(&text, &path)
}

/// The CI profile: every fault family covered, a 5-node run among them,
/// about 15 s of load each (≈ 2–3 minutes in all on 2 cores), and one
/// log-hygiene run (a follower frozen through large and refused writes,
/// issue 17; ~19 s; on a build without the fix its replicas never
/// converge).
pub fn short() -> Vec<RunSpec> {
    use NemesisKind::*;
    let run = |seed, nodes, kinds: &[NemesisKind], note: &str| RunSpec {
        seed,
        nodes,
        duration: Duration::from_secs(15),
        nemeses: kinds.to_vec(),
        note: note.into(),
    };
    vec![
        run(101, 3, &[Partition, Delay], "partitions and slow links"),
        run(102, 3, &[Kill, Pause], "kill -9 and SIGSTOP, the leader above all"),
        run(103, 5, &[Partition, Kill, Flaky], "a 5-node cluster under mixed faults"),
        run(
            104,
            3,
            &[Member, Replace, Pause, Flaky],
            "membership changes under load, a member replaced by a wiped one",
        ),
        run(
            105,
            3,
            &[Freeze],
            "log hygiene: a follower frozen through large and refused writes",
        ),
    ]
}

/// The disk faults CI runs (root and FUSE; see [`crate::faultfs`]): the
/// leader cut and restarted at once while its disk is the slow one
/// (issue 25), every node cut at once, SD-card disks with stalls on a
/// follower, the leader or all nodes, and failing fsyncs (issue 20).
pub fn power_ci() -> Vec<RunSpec> {
    vec![
        RunSpec {
            seed: 201,
            nodes: 3,
            duration: Duration::from_secs(12),
            nemeses: vec![NemesisKind::PowerLeader],
            note: "power cuts of the leader, its disk the slow one, restarted at once".into(),
        },
        RunSpec {
            seed: 202,
            nodes: 3,
            duration: Duration::from_secs(8),
            nemeses: vec![NemesisKind::PowerAll],
            note: "power cuts of every node at once".into(),
        },
        RunSpec {
            // Seed 204's three faults: the leader's disk, a follower's and
            // every disk, each from a 2 s stall (checked by a test below).
            seed: 204,
            nodes: 3,
            duration: Duration::from_secs(14),
            nemeses: vec![NemesisKind::SlowDisk],
            note: "SD-card disks with 2 s stalls: a follower's, the leader's, every node's".into(),
        },
        RunSpec {
            // A random node's disk (here a follower's), then the leader's.
            seed: 204,
            nodes: 3,
            duration: Duration::from_secs(12),
            nemeses: vec![NemesisKind::DiskEio],
            note: "failing fsyncs, then a power cut and a mended disk".into(),
        },
    ]
}

/// `runs` runs of `secs` s (3 nodes, seeds from `first_seed`) of power
/// cuts aimed at the moments a crash is likeliest to expose a missing
/// fsync: a snapshot being saved (its log purged behind it next), a
/// membership change, a deposed leader truncating its log (issue 20).
pub fn aimed(runs: usize, first_seed: u64, secs: u64) -> Vec<RunSpec> {
    (0..runs as u64)
        .map(|i| RunSpec {
            seed: first_seed + i,
            nodes: 3,
            duration: Duration::from_secs(secs),
            nemeses: vec![NemesisKind::PowerAimed],
            note: "aimed profile: power cuts in snapshots, membership changes, truncations".into(),
        })
        .collect()
}

/// `runs` runs of `secs` s (3 nodes, seeds from `first_seed`) mixing the
/// three disk families of issue 20: power cuts (the leader, a random node,
/// every node; at once or after up to 500 ms), SD-card slow disks with
/// stalls, and failing fsyncs.
pub fn disk(runs: usize, first_seed: u64, secs: u64) -> Vec<RunSpec> {
    (0..runs as u64)
        .map(|i| RunSpec {
            seed: first_seed + i,
            nodes: 3,
            duration: Duration::from_secs(secs),
            nemeses: DISK_FAMILIES.to_vec(),
            note: "disk profile: power cuts, slow disks, failing fsyncs".into(),
        })
        .collect()
}

/// The disk fault families together (issue 20).
const DISK_FAMILIES: [NemesisKind; 4] = [
    NemesisKind::Power,
    NemesisKind::PowerAll,
    NemesisKind::SlowDisk,
    NemesisKind::DiskEio,
];

/// The log-hygiene runs (issue 17): a follower frozen (`SIGSTOP`) through
/// a burst of writes just under the entry limit and writes the state
/// machine refuses; it must catch up once resumed. Runs of 25 s (about
/// 30 s each on 2 cores; CI runs one of 15 s in [`short`]).
pub fn freeze(runs: usize, first_seed: u64) -> Vec<RunSpec> {
    (0..runs as u64)
        .map(|i| RunSpec {
            seed: first_seed + i,
            nodes: 3,
            duration: Duration::from_secs(25),
            nemeses: vec![NemesisKind::Freeze],
            note: "log hygiene: a follower frozen through large and refused writes".into(),
        })
        .collect()
}

/// `runs` leader power-cut runs of `secs` s (3 nodes, seeds from
/// `first_seed`): the issue-25 scenario, for counting.
pub fn power(runs: usize, first_seed: u64, secs: u64) -> Vec<RunSpec> {
    (0..runs as u64)
        .map(|i| RunSpec {
            seed: first_seed + i,
            nodes: 3,
            duration: Duration::from_secs(secs),
            nemeses: vec![NemesisKind::PowerLeader],
            note: "power profile: leader power cuts, slow leader disk, immediate restart".into(),
        })
        .collect()
}

/// The long profile: `runs` runs of 30 s, all fault families, sizes 3 and 5
/// alternating, seeds from `first_seed`. Where a fault filesystem can be
/// mounted (root, FUSE), every third run is a disk run instead (3 nodes):
/// the three disk families of issue 20 mixed, power cuts of the leader, a
/// random node or every node, SD-card slow disks with stalls, failing
/// fsyncs (see [`disk`]).
pub fn long(runs: usize, first_seed: u64) -> Vec<RunSpec> {
    let power = crate::faultfs::unavailable().is_none();
    (0..runs as u64)
        .map(|i| {
            if power && i % 3 == 2 {
                return RunSpec {
                    seed: first_seed + i,
                    nodes: 3,
                    duration: Duration::from_secs(30),
                    nemeses: DISK_FAMILIES.to_vec(),
                    note: "long profile: power cuts, slow disks, failing fsyncs".into(),
                };
            }
            RunSpec {
                seed: first_seed + i,
                nodes: if i % 2 == 0 { 3 } else { 5 },
                duration: Duration::from_secs(30),
                nemeses: NemesisKind::ALL.to_vec(),
                note: "long profile".into(),
            }
        })
        .collect()
}

/// The outcome of a list of runs.
#[derive(Debug, Default)]
pub struct ProfileOutcome {
    /// Every report, in order.
    pub reports: Vec<RunReport>,
    /// Runs that could not be carried out at all.
    pub errors: Vec<(RunSpec, String)>,
}

impl ProfileOutcome {
    /// Runs that passed.
    pub fn passed(&self) -> usize {
        self.reports.iter().filter(|r| r.verdict == Verdict::Pass).count()
    }

    /// Runs that did not pass (fail, inconclusive, or error).
    pub fn not_passed(&self) -> usize {
        self.reports.len() - self.passed() + self.errors.len()
    }

    /// The closing line, e.g. `jepsen: 5 passed, 1 failed`.
    pub fn closing_line(&self) -> String {
        let failed = self.reports.iter().filter(|r| r.verdict == Verdict::Fail).count();
        let inconclusive = self
            .reports
            .iter()
            .filter(|r| r.verdict == Verdict::Inconclusive)
            .count();
        format!(
            "jepsen: {} passed, {} failed, {} inconclusive, {} errors",
            self.passed(),
            failed,
            inconclusive,
            self.errors.len()
        )
    }
}

/// Run `specs` one after the other (the machine is small and a run uses it
/// all), applying `tweak` to each config.
pub async fn run_all(specs: &[RunSpec], launcher: &Launcher, tweak: impl Fn(&mut RunConfig)) -> ProfileOutcome {
    let mut out = ProfileOutcome::default();
    for spec in specs {
        let mut cfg = spec.config(launcher);
        tweak(&mut cfg);
        tracing::info!(seed = spec.seed, nodes = spec.nodes, note = %spec.note, "run");
        match crate::run::run(&cfg).await {
            Ok(report) => {
                println!("{}\n", report.summary());
                out.reports.push(report);
            }
            Err(e) => {
                println!("seed {}: could not run: {e}\n", spec.seed);
                out.errors.push((spec.clone(), e.to_string()));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nemesis::Disks;
    use crate::nemesis::Fault;

    #[test]
    fn the_checked_in_regression_list_parses() {
        let runs = regressions().unwrap();
        assert!(!runs.is_empty(), "regressions.txt lists no run");
    }

    #[test]
    fn malformed_lines_are_rejected_with_their_line_number() {
        let p = Path::new("r.txt");
        let ok = parse_runs("# c\n\n7 3 20 kill,pause  # why\n", p).unwrap();
        assert_eq!(ok[0].seed, 7);
        assert_eq!(ok[0].note, "why");
        let e = parse_runs("7 3 20\n", p).unwrap_err().to_string();
        assert!(e.starts_with("r.txt:1:"), "{e}");
        let e = parse_runs("\n7 3 20 kil\n", p).unwrap_err().to_string();
        assert!(e.starts_with("r.txt:2:") && e.contains("kil"), "{e}");
    }

    #[test]
    fn the_short_profile_covers_every_fault_family_and_both_sizes() {
        let s = short();
        for k in NemesisKind::ALL {
            assert!(s.iter().any(|r| r.nemeses.contains(&k)), "{k} is never exercised in CI");
        }
        assert!(s.iter().any(|r| r.nodes == 5));
    }

    #[test]
    fn ci_and_the_long_profile_cover_every_disk_family() {
        let ci = power_ci();
        for k in [NemesisKind::PowerAll, NemesisKind::SlowDisk, NemesisKind::DiskEio] {
            assert!(ci.iter().any(|r| r.nemeses.contains(&k)), "{k} is never run in CI");
        }
        // The slow-disk run slows a follower's disk, the leader's and every
        // disk, each from a stall; the failing-disk run fails the leader's.
        let slow = ci.iter().find(|r| r.nemeses == [NemesisKind::SlowDisk]).unwrap();
        let steps = crate::nemesis::schedule(
            slow.seed,
            slow.nodes,
            &slow.nemeses,
            Duration::from_secs(2),
            slow.duration,
        );
        for whose in [Disks::Follower, Disks::Leader, Disks::All] {
            assert!(
                steps
                    .iter()
                    .any(|s| s.fault == Fault::SlowDisk { whose, stall_ms: 2000 }),
                "{whose:?}: {steps:?}"
            );
        }
        let eio = ci.iter().find(|r| r.nemeses == [NemesisKind::DiskEio]).unwrap();
        let steps = crate::nemesis::schedule(eio.seed, eio.nodes, &eio.nemeses, Duration::from_secs(2), eio.duration);
        assert!(
            steps.iter().any(|s| s.fault == Fault::DiskEio { leader: true }),
            "{steps:?}"
        );
        if crate::faultfs::unavailable().is_none() {
            let long = long(100, 1000);
            for k in [NemesisKind::Power, NemesisKind::SlowDisk, NemesisKind::DiskEio] {
                assert!(
                    long.iter().any(|r| r.nemeses.contains(&k)),
                    "{k} is not in the long profile"
                );
            }
        }
    }
}
