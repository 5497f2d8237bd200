//! `cairn-jepsen`: run fault-injection runs against real `cairn` processes,
//! or re-check a recorded history.
//!
//! ```text
//! cairn-jepsen run --seed 7 --nodes 3 --duration 20s --nemesis kill,partition,pause
//! cairn-jepsen run --seed 100 --runs 20 --nemesis all        # seeds 100..119
//! cairn-jepsen profile short | long | regressions | power | power-ci | disk | aimed | freeze
//! cairn-jepsen check target/jepsen/seed7-n3-…/
//! cairn-jepsen node --config n1.json     # what each node process runs
//! cairn-jepsen sim --seeds 20            # simulation tier: regressions, then 20 fresh seeds
//! cairn-jepsen sim --seed 42 --nodes 5   # replay one simulation seed
//! cairn-jepsen sim --scenario power-cut --seeds 20 --first-seed 1 --no-regressions  # issue 25
//! ```
//! Exit status: 0 when every run passed, 1 otherwise.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use cairn_jepsen::checker::CheckInput;
use cairn_jepsen::cluster;
use cairn_jepsen::cluster::Launcher;
use cairn_jepsen::history::read_jsonl;
use cairn_jepsen::nemesis::parse_kinds;
use cairn_jepsen::profile;
use cairn_jepsen::profile::RunSpec;
use cairn_jepsen::run::RunConfig;
use cairn_jepsen::run::SlowDisk;
use clap::Parser;
use clap::Subcommand;

#[derive(Parser)]
#[command(name = "cairn-jepsen", about = "Fault-injection runs against real cairn processes")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum LauncherArg {
    /// This binary's `node` subcommand (the cairn daemon, JSON config).
    Embedded,
    /// The shipped `cairn node run` (TOML config).
    Cairn,
}

#[derive(clap::Args, Clone)]
struct Common {
    /// How node processes are started.
    #[arg(long, value_enum, default_value_t = LauncherArg::Embedded)]
    launcher: LauncherArg,
    /// With `--launcher cairn`: the cairn binary (default: $CAIRN_BIN, else
    /// target/debug/cairn, built first).
    #[arg(long)]
    cairn_bin: Option<PathBuf>,
    /// With `--launcher cairn`: do not run `cargo build --bin cairn` first.
    #[arg(long)]
    no_build: bool,
    /// Where results go (a directory per run).
    #[arg(long)]
    results: Option<PathBuf>,
    /// Copy node logs into the results even when a run passes.
    #[arg(long)]
    keep_logs: bool,
    /// Registers.
    #[arg(long, default_value_t = 3)]
    keys: usize,
    /// Operations per second per client (2 clients per node).
    #[arg(long, default_value_t = 10.0)]
    rate: f64,
    /// Minimum ok operations per second for a conclusive run.
    #[arg(long, default_value_t = 2.0)]
    min_rate: f64,
    /// Record a write answered 503 as indeterminate, not failed (see
    /// docs/CHAOS.md; also set by $CAIRN_JEPSEN_LENIENT_503).
    #[arg(long)]
    lenient_503: bool,
    /// How peer traffic is carried and cut: `proxy` (loopback, userspace
    /// proxies) or `netns` (root: a network namespace per node, partitions
    /// as nftables drop rules; falls back to proxy, with the reason in the
    /// report, when not root or `ip netns`/`nft` are missing).
    #[arg(long, default_value = "proxy")]
    net: cairn_jepsen::cluster::NetMode,
    /// Power nemeses: every disk's fsync delay (none, sd-card, 0..1ms, …).
    #[arg(long, default_value = "0..1ms")]
    disk: String,
    /// Power nemeses: the slow disk's fsync delay.
    #[arg(long, default_value = "15..60ms")]
    slow_disk_delay: String,
    /// Power nemeses: which disk is slow: leader (followed as it moves),
    /// none, or a node id.
    #[arg(long, default_value = "leader")]
    slow_disk: String,
    /// Clients in all, spread over the nodes (power runs: 8), instead of
    /// 2 per node.
    #[arg(long)]
    clients: Option<usize>,
    /// Fraction of writes that are inserts (power runs: 0.3; else 0).
    #[arg(long)]
    inserts: Option<f64>,
    /// Fraction of writes that are plans just under the entry limit
    /// (`freeze` runs: 0.1; else 0; docs/CHAOS.md, "Log hygiene").
    #[arg(long)]
    large_fraction: Option<f64>,
    /// Fraction of writes that are tasks the state machine refuses, a
    /// 1,000,000-character kind (`freeze` runs: 0.1; else 0).
    #[arg(long)]
    refused_fraction: Option<f64>,
}

#[derive(Subcommand)]
enum Cmd {
    /// One run (or `--runs N` runs with consecutive seeds).
    Run {
        /// Seed of the schedule, the targets and the load.
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Number of runs, seeds seed, seed+1, ...
        #[arg(long, default_value_t = 1)]
        runs: u64,
        /// Cluster size.
        #[arg(long, default_value_t = 3)]
        nodes: u64,
        /// Load duration: 20s, 500ms, 2m.
        #[arg(long, default_value = "20s", value_parser = parse_duration)]
        duration: Duration,
        /// Fault families: partition,kill,pause,delay,flaky,member | all | none.
        #[arg(long, default_value = "partition,kill,pause")]
        nemesis: String,
        #[command(flatten)]
        common: Common,
    },
    /// A named list of runs: regressions, short (CI), long (`--runs`,
    /// default 100), power (`--runs` leader power-cut runs of 10 s),
    /// power-ci (CI's disk runs: power cuts, slow disks, failing fsyncs),
    /// disk (`--runs` runs of 12 s mixing power cuts, slow disks and
    /// failing fsyncs), aimed (`--runs` runs of 14 s of power cuts aimed
    /// at snapshots, membership changes and log truncations), freeze
    /// (`--runs` log-hygiene runs of 25 s: a follower frozen through large
    /// and refused writes).
    Profile {
        /// regressions | short | long | power | power-ci | disk | aimed | freeze
        name: String,
        /// Runs of the long profile.
        #[arg(long, default_value_t = 100)]
        runs: usize,
        /// First seed of the long profile.
        #[arg(long, default_value_t = 1000)]
        first_seed: u64,
        #[command(flatten)]
        common: Common,
    },
    /// Re-check a run's results directory (history.jsonl, status.jsonl).
    Check {
        /// The run's results directory.
        dir: PathBuf,
    },
    /// Run one cairn node from a JSON `NodeConfig` until killed (what the
    /// embedded launcher spawns).
    Node {
        /// The JSON config file.
        #[arg(long)]
        config: PathBuf,
    },
    /// The deterministic simulation tier: the Raft node itself under
    /// turmoil, many seeds (docs/CHAOS.md, "Simulation tier").
    Sim(SimArgs),
    /// Mount a fault filesystem (root, /dev/fuse, fusermount3): a
    /// passthrough over `--backing` at `--mount` that keeps unsynced data
    /// apart so a `cut` on the control socket drops it (a power cut), and
    /// delays fsyncs. Runs until killed (docs/CHAOS.md, "Power cuts").
    Faultfs {
        /// The directory whose files it serves.
        #[arg(long)]
        backing: PathBuf,
        /// Where to mount it.
        #[arg(long)]
        mount: PathBuf,
        /// The control socket (`ping`, `cut`, `on`, `delay SPEC`, `stall MS`, `eio N`, `stats`).
        #[arg(long)]
        control: PathBuf,
        /// How long an fsync takes: none, sd-card, 15..60ms, 5ms.
        #[arg(long, default_value = "none")]
        fsync_delay: String,
        /// Fail this many fsyncs per thousand with EIO.
        #[arg(long, default_value_t = 0)]
        fsync_eio: u32,
        /// Open files through the page cache (mmap works, `cut` is
        /// refused): for benchmarks, e.g. etcd's bbolt, never power cuts.
        #[arg(long)]
        page_cache: bool,
    },
}

#[derive(clap::Args, Clone)]
struct SimArgs {
    /// What the simulations do: `faults` (partitions, holds, crashes),
    /// `power-cut` (issue 25: the slow-disk leader loses power, a crash
    /// drops its unflushed writes) or `slow-follower` (issue 20: one
    /// follower's disk an SD card with 2 s stalls; no leader change, reads
    /// keep completing). Applies to `--seed` and the fresh
    /// seeds; the regression list names each seed's own.
    #[arg(long, default_value = "faults", value_parser = cairn_jepsen::sim::Scenario::parse)]
    scenario: cairn_jepsen::sim::Scenario,
    /// Replay this one seed (nothing else runs).
    #[arg(long)]
    seed: Option<u64>,
    /// Cluster size for `--seed` (fresh seeds alternate 3 and 5).
    #[arg(long, default_value_t = 3)]
    nodes: u64,
    /// Fresh seeds to run after the regression list.
    #[arg(long, default_value_t = 10)]
    seeds: u64,
    /// First fresh seed (default: the clock, printed).
    #[arg(long)]
    first_seed: Option<u64>,
    /// Simulated ms of writes under faults (default: the scenario's,
    /// 15000 for `faults`, 10000 for `power-cut`).
    #[arg(long)]
    fault_ms: Option<u64>,
    /// Simulated ms after healing before convergence is required (default:
    /// the scenario's, 3000 for `faults`, 2000 for `power-cut`).
    #[arg(long)]
    heal_ms: Option<u64>,
    /// Skip the checked-in regression list (jepsen-tests/sim-regressions.txt).
    #[arg(long)]
    no_regressions: bool,
}

/// The simulation tier. Runs outside any tokio runtime: turmoil builds one
/// per simulated host.
fn sim(args: &SimArgs) -> anyhow::Result<bool> {
    use cairn_jepsen::sim;
    let with_timing = |mut s: sim::SimSpec| {
        s.fault_ms = args.fault_ms.unwrap_or(s.fault_ms);
        s.heal_ms = args.heal_ms.unwrap_or(s.heal_ms);
        s
    };
    let specs: Vec<sim::SimSpec> = match args.seed {
        Some(seed) => vec![with_timing(sim::SimSpec::of(args.scenario, seed, args.nodes))],
        None => {
            let mut specs = Vec::new();
            if !args.no_regressions {
                specs = sim::parse_regressions(sim::REGRESSIONS)
                    .map_err(|e| anyhow::anyhow!("sim-regressions.txt: {e}"))?;
            }
            let first = args.first_seed.unwrap_or_else(sim::clock_seed);
            println!("fresh seeds from {first}");
            let fresh = match args.scenario {
                sim::Scenario::Faults => sim::fresh(first, args.seeds),
                sim::Scenario::PowerCut => sim::fresh_power_cuts(first, args.seeds),
                sim::Scenario::SlowFollower => sim::fresh_slow_followers(first, args.seeds),
            };
            specs.extend(fresh.into_iter().map(with_timing));
            specs
        }
    };
    let started = std::time::Instant::now();
    let reports = sim::run_all(&specs, |r| println!("{}", r.details()));
    let sim_s: f64 = reports.iter().map(|r| r.sim_ms as f64 / 1000.0).sum();
    let wall = started.elapsed().as_secs_f64();
    println!(
        "{} seeds in {wall:.1} s ({:.2} seeds/s, {sim_s:.0} s simulated)",
        reports.len(),
        reports.len() as f64 / wall.max(0.001)
    );
    println!("{}", sim::closing_line(&reports));
    Ok(reports.iter().all(|r| r.passed()))
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (num, unit) = s
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .map(|i| s.split_at(i))
        .unwrap_or((s, "s"));
    let n: f64 = num
        .parse()
        .map_err(|_| format!("{s:?}: expected e.g. 20s, 500ms, 2m"))?;
    let secs = match unit {
        "ms" => n / 1000.0,
        "s" => n,
        "m" => n * 60.0,
        _ => return Err(format!("{s:?}: unit must be ms, s or m")),
    };
    Ok(Duration::from_secs_f64(secs))
}

fn launcher(common: &Common) -> anyhow::Result<Launcher> {
    if common.launcher == LauncherArg::Embedded {
        let me = std::env::current_exe().context("locating this binary")?;
        return Ok(Launcher::Embedded(me));
    }
    if let Some(p) = &common.cairn_bin {
        return Ok(Launcher::Cairn(p.clone()));
    }
    if common.no_build {
        return Ok(Launcher::Cairn(cluster::cairn_binary_path()));
    }
    Ok(Launcher::Cairn(cluster::build_cairn()?))
}

/// The daemon, as `cairn node run` starts it, from a JSON config.
async fn node(config: &std::path::Path) -> anyhow::Result<bool> {
    let text = std::fs::read_to_string(config).with_context(|| format!("reading {}", config.display()))?;
    let cfg: cairn::config::NodeConfig =
        serde_json::from_str(&text).with_context(|| format!("parsing {}", config.display()))?;
    // The suite's task kind, journalling every step it may actuate.
    let journal = cairn_jepsen::tasks::journal_for(config);
    let work = cairn_jepsen::tasks::JepsenWork::open(cfg.id, &journal)
        .with_context(|| format!("opening {}", journal.display()))?;
    let handlers: Vec<(String, std::sync::Arc<dyn cairn::hal::action::ActionHandler>)> =
        vec![(cairn_jepsen::tasks::TASK_KIND.to_string(), std::sync::Arc::new(work))];
    let daemon = cairn::daemon::Daemon::start_with_handlers(cfg.clone(), handlers)
        .await
        .with_context(|| format!("starting node {}", cfg.id))?;
    tokio::signal::ctrl_c().await.context("waiting for ctrl-c")?;
    tracing::info!("shutting down");
    daemon.shutdown().await?;
    Ok(true)
}

fn tweak(common: &Common) -> impl Fn(&mut RunConfig) + '_ {
    move |cfg| {
        if let Some(r) = &common.results {
            cfg.results_dir = r.clone();
        }
        cfg.keep_logs = common.keep_logs;
        cfg.workload.keys = common.keys;
        cfg.workload.rate_per_client = common.rate;
        cfg.min_ok_ops_per_sec = common.min_rate;
        cfg.workload.lenient_503 |= common.lenient_503;
        cfg.net = common.net;
        cfg.disks.base = common.disk.clone();
        cfg.disks.slow = common.slow_disk_delay.clone();
        cfg.disks.slow_disk = match common.slow_disk.as_str() {
            "leader" => SlowDisk::Leader,
            "none" => SlowDisk::None,
            n => n.parse().map(SlowDisk::Node).unwrap_or(SlowDisk::Leader),
        };
        if common.clients.is_some() {
            cfg.clients_total = common.clients;
        }
        if let Some(f) = common.inserts {
            cfg.workload.insert_fraction = f;
        }
        if let Some(f) = common.large_fraction {
            cfg.workload.large_fraction = f;
        }
        if let Some(f) = common.refused_fraction {
            cfg.workload.refused_fraction = f;
        }
    }
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info,openraft=warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let result = match &cli.cmd {
        Cmd::Sim(args) => sim(args),
        Cmd::Faultfs {
            backing,
            mount,
            control,
            fsync_delay,
            fsync_eio,
            page_cache,
        } => cairn_jepsen::faultfs::DelaySpec::parse(fsync_delay)
            .and_then(|d| cairn_jepsen::faultfs::serve(backing, mount, control, d, *fsync_eio, *page_cache))
            .map(|()| true)
            .map_err(anyhow::Error::from),
        _ => tokio::runtime::Runtime::new()
            .context("starting the tokio runtime")
            .and_then(|rt| rt.block_on(real_main(cli))),
    };
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}

async fn real_main(cli: Cli) -> anyhow::Result<bool> {
    let (specs, common) = match cli.cmd {
        Cmd::Sim(_) | Cmd::Faultfs { .. } => anyhow::bail!("runs outside the tokio runtime (see main)"),
        Cmd::Check { dir } => return check(&dir),
        Cmd::Node { config } => return node(&config).await,
        Cmd::Run {
            seed,
            runs,
            nodes,
            duration,
            nemesis,
            common,
        } => {
            let nemeses = parse_kinds(&nemesis)?;
            let specs: Vec<RunSpec> = (0..runs)
                .map(|i| RunSpec {
                    seed: seed + i,
                    nodes,
                    duration,
                    nemeses: nemeses.clone(),
                    note: "command line".into(),
                })
                .collect();
            (specs, common)
        }
        Cmd::Profile {
            name,
            runs,
            first_seed,
            common,
        } => {
            let specs = match name.as_str() {
                "regressions" => profile::regressions()?,
                "short" => profile::short(),
                "long" => profile::long(runs, first_seed),
                "power" => profile::power(runs, first_seed, 10),
                "power-ci" => profile::power_ci(),
                "disk" => profile::disk(runs, first_seed, 12),
                "aimed" => profile::aimed(runs, first_seed, 14),
                "freeze" => profile::freeze(runs, first_seed),
                other => {
                    anyhow::bail!(
                        "unknown profile {other:?}; use regressions, short, long, power, power-ci, disk, aimed or freeze"
                    )
                }
            };
            (specs, common)
        }
    };
    for spec in [&common.disk, &common.slow_disk_delay] {
        cairn_jepsen::faultfs::DelaySpec::parse(spec)?;
    }
    if !matches!(common.slow_disk.as_str(), "leader" | "none") && common.slow_disk.parse::<u64>().is_err() {
        anyhow::bail!("--slow-disk {:?}: expected leader, none or a node id", common.slow_disk);
    }
    let launcher = launcher(&common)?;
    if common.net == cairn_jepsen::cluster::NetMode::Netns {
        // Ctrl-c: delete this process's namespaces (killing the nodes in
        // them) before exiting; a panic unwinds through the cluster's Drop.
        tokio::spawn(async {
            if tokio::signal::ctrl_c().await.is_ok() {
                eprintln!("interrupted: deleting this run's network namespaces");
                cairn_jepsen::netns::cleanup_active();
                std::process::exit(130);
            }
        });
    }
    let outcome = profile::run_all(&specs, &launcher, tweak(&common)).await;
    for (spec, e) in &outcome.errors {
        println!("seed {} ({} nodes): error: {e}", spec.seed, spec.nodes);
    }
    println!("{}", outcome.closing_line());
    Ok(outcome.not_passed() == 0)
}

fn check(dir: &std::path::Path) -> anyhow::Result<bool> {
    let ops = read_jsonl(&dir.join("history.jsonl")).context("reading the history")?;
    let samples = read_jsonl(&dir.join("status.jsonl")).unwrap_or_default();
    // The state hashes the run took once replicas converged (report.json;
    // absent from runs recorded before they existed).
    let state_hashes = std::fs::read_to_string(dir.join("report.json"))
        .ok()
        .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
        .and_then(|v| serde_json::from_value(v["state_hashes"].clone()).ok())
        .unwrap_or_default();
    let input = CheckInput {
        initial: cairn_jepsen::workload::INITIAL_VALUE,
        ops,
        samples,
        converged: Default::default(),
        state_hashes,
        one_leader_per_term: false,
    };
    let mut report = cairn_jepsen::checker::check(&input, (50_000_000, 120.0));
    // The task record, when the run had one (embedded launcher).
    let tasks = dir.join("tasks.json");
    if tasks.exists() {
        let text = std::fs::read_to_string(&tasks).with_context(|| format!("reading {}", tasks.display()))?;
        let input: cairn_jepsen::checker::tasks::TaskCheckInput =
            serde_json::from_str(&text).with_context(|| format!("parsing {}", tasks.display()))?;
        println!(
            "tasks: {} ops, {} actuation steps",
            input.ops.len(),
            input.actuations.len()
        );
        report
            .anomalies
            .extend(cairn_jepsen::checker::tasks::check_tasks(&input));
    }
    // The inserts, when the run had them (power runs).
    let inserts = dir.join("inserts.json");
    if inserts.exists() {
        let text = std::fs::read_to_string(&inserts).with_context(|| format!("reading {}", inserts.display()))?;
        let input: cairn_jepsen::checker::inserts::InsertCheckInput =
            serde_json::from_str(&text).with_context(|| format!("parsing {}", inserts.display()))?;
        println!("inserts: {} ops", input.ops.len());
        report
            .anomalies
            .extend(cairn_jepsen::checker::inserts::check_inserts(&input));
    }
    for (k, v) in &report.keys {
        println!("{k}: {} ({} ops)", v.verdict, v.ops_checked);
    }
    for a in &report.anomalies {
        println!("ANOMALY {:?}: {}", a.kind, a.message);
    }
    println!(
        "{} anomalies, {} unknown (register convergence is only checked live; state hashes from report.json)",
        report.anomalies.len(),
        report.unknown.len()
    );
    Ok(report.is_clean())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse() {
        assert_eq!(parse_duration("20s").unwrap(), Duration::from_secs(20));
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert_eq!(parse_duration("15").unwrap(), Duration::from_secs(15));
        assert!(parse_duration("5h").is_err());
    }
}
