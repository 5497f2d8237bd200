//! The `cairn` binary: run a node, bootstrap a cluster, manage members,
//! and read/write the mission — in the style of etcdctl and consul.
//!
//! Nouns and verbs: `node run|list|get|update|remove|drain|undrain`, `cluster init`, `member
//! add|promote|remove|list|transfer-leader`, `status`, `param
//! declare|set|get|list`, `task submit|list|get|cancel`, `mission
//! show|load|append|skip|complete|abort`, `sensor list|report`, `policy
//! list|set|remove`, `watch`, `certs init|issue`, `openapi`, `backup`,
//! `restore`, `recover --force-new-cluster`, `sim run|status|fault|estop`.
//! Every command
//! prints a table for people and JSON with `-o json`.
//!
//! Endpoints come from `--endpoints`, else `CAIRN_ENDPOINTS`, else the
//! client config file (`--client-config`, `CAIRN_CLIENT_CONFIG`, or
//! `~/.config/cairn/client.toml`), else `127.0.0.1:8001`; the same goes for
//! the token and the CA certificate.

mod cli;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use cairn::api::AddMemberRequest;
use cairn::api::DeclareParamRequest;
use cairn::api::InitRequest;
use cairn::client::Client;
use cairn::client::ClientOptions;
use cairn::client::Timeouts;
use cairn::config::NodeConfig;
use cairn::daemon::Daemon;
use cairn::raft::Member;
use cairn::raft::MemberStatus;
use cairn::raft::Status;
use clap::Parser;
use clap::Subcommand;
use clap::ValueEnum;
use reqwest::Method;

#[derive(Parser)]
#[command(
    name = "cairn",
    version,
    about = "Raft-replicated mission coordinator for a rover's computers",
    after_help = cli::EXIT_CODES_HELP
)]
struct Cli {
    /// Admin API endpoints to talk to, tried in order (comma-separated)
    /// [default: from the client config, else 127.0.0.1:8001].
    #[arg(long, global = true, env = "CAIRN_ENDPOINTS", value_delimiter = ',')]
    endpoints: Option<Vec<String>>,
    /// Bearer token for mutating requests (and reads, if the nodes require it).
    #[arg(long, global = true, env = "CAIRN_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// CA certificate to trust; endpoints without a scheme then use https.
    #[arg(long, global = true, env = "CAIRN_CA_CERT")]
    ca_cert: Option<PathBuf>,
    /// Client config file (TOML: endpoints, token or token_file, ca_cert).
    #[arg(long, global = true, env = "CAIRN_CLIENT_CONFIG")]
    client_config: Option<PathBuf>,
    /// Output format.
    #[arg(short = 'o', long, global = true, value_enum, default_value_t = Output::Table)]
    output: Output,
    /// How long an endpoint may take to connect and answer as a cairn node
    /// (ms); a dead, frozen or foreign endpoint is skipped after this.
    #[arg(long, global = true, env = "CAIRN_DIAL_TIMEOUT_MS", default_value_t = 2_000)]
    dial_timeout_ms: u64,
    /// How long one request may take once its endpoint answered (ms).
    /// `--timeout-ms` is its old name (deprecated, still accepted).
    #[arg(
        long,
        global = true,
        alias = "timeout-ms",
        env = "CAIRN_COMMAND_TIMEOUT_MS",
        default_value_t = 5_000
    )]
    command_timeout_ms: u64,
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Output {
    Table,
    Json,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run a node.
    Node {
        #[command(subcommand)]
        cmd: NodeCmd,
    },
    /// Cluster bootstrap.
    Cluster {
        #[command(subcommand)]
        cmd: ClusterCmd,
    },
    /// Membership: add, promote, remove, list, transfer leadership.
    Member {
        #[command(subcommand)]
        cmd: MemberCmd,
    },
    /// Status of every endpoint (leader, term, indexes, members with lag)
    /// and of the cluster: exit 0 with a leader that has a quorum ("can
    /// lose N more"), 2 if nodes answered but there is none, 3 if no
    /// endpoint answered.
    Status,
    /// Parameters.
    Param {
        #[command(subcommand)]
        cmd: ParamCmd,
    },
    /// Tasks: submit, list, get, cancel.
    Task {
        #[command(subcommand)]
        cmd: cli::TaskCmd,
    },
    /// The mission plan: show, load, append, skip, complete, abort.
    Mission {
        #[command(subcommand)]
        cmd: cli::MissionCmd,
    },
    /// Sensor health and the effective mode.
    Sensor {
        #[command(subcommand)]
        cmd: cli::SensorCmd,
    },
    /// Degradation policies.
    Policy {
        #[command(subcommand)]
        cmd: cli::PolicyCmd,
    },
    /// Stream applied changes (resumes across endpoints without gaps).
    Watch(cli::WatchArgs),
    /// Certificates: a cluster CA and node certificates for mutual TLS.
    Certs {
        #[command(subcommand)]
        cmd: cli::CertsCmd,
    },
    /// Print the admin API's OpenAPI document.
    Openapi,
    /// Save a consistent copy of the cluster's state to FILE (any node
    /// serves it after a linearizable read: every acknowledged write is in).
    Backup(cli::ops::BackupArgs),
    /// Offline: seed a new, empty data dir from a backup; a node started on
    /// it is a one-node cluster with that state, which others then join.
    Restore(cli::ops::RestoreArgs),
    /// Offline, after losing quorum for good: make a stopped survivor the
    /// only voter of a new cluster, keeping everything it has.
    Recover(cli::ops::RecoverArgs),
    /// Checks of the cluster's health beyond status.
    Check {
        #[command(subcommand)]
        cmd: CheckCmd,
    },
    /// The simulated rover world: run it, read it, inject faults.
    Sim {
        #[command(subcommand)]
        cmd: cli::sim::SimCmd,
    },
}

#[derive(Subcommand)]
enum NodeCmd {
    /// Run a node in the foreground until Ctrl-C or SIGTERM (then it hands
    /// leadership over and stops gracefully).
    Run {
        /// Node id (unique, stable, 1 or more).
        #[arg(long)]
        id: Option<u64>,
        /// Transport listen address.
        #[arg(long)]
        raft_addr: Option<String>,
        /// Admin API listen address.
        #[arg(long)]
        api_addr: Option<String>,
        /// Data directory.
        #[arg(long)]
        data_dir: Option<PathBuf>,
        /// TOML config file; flags override it.
        #[arg(long)]
        config: Option<PathBuf>,
        /// Use mutual TLS between nodes with DIR/ca.pem, DIR/node-ID.pem
        /// and DIR/node-ID.key (from `cairn certs`).
        #[arg(long)]
        tls_dir: Option<PathBuf>,
        /// Require this bearer token on mutating API requests.
        #[arg(long, env = "CAIRN_API_TOKEN", hide_env_values = true)]
        api_token: Option<String>,
        /// Require the token on reads too.
        #[arg(long)]
        read_requires_token: bool,
        /// Serve the admin API over HTTPS with the node certificate.
        #[arg(long)]
        api_tls: bool,
        /// Drive the simulated rover whose world listens here (`cairn sim
        /// run`): runs perceive and navigate tasks.
        #[arg(long)]
        sim: Option<String>,
    },
    /// List registered nodes: capabilities, liveness, load.
    List {
        /// Read this node's state without a linearizable check.
        #[arg(long)]
        stale: bool,
    },
    /// Show one registered node.
    Get {
        /// Node id.
        id: u64,
        /// Read this node's state without a linearizable check.
        #[arg(long)]
        stale: bool,
    },
    /// Change a registered node's capabilities or budget in the registry.
    /// Holds until the node next starts: its agent then registers what its
    /// config says (change the config too to keep it).
    Update {
        /// Node id.
        id: u64,
        /// Its capabilities, all of them (repeat); replaces the set.
        #[arg(long = "capability", value_name = "NAME")]
        capabilities: Vec<String>,
        /// Take every capability away.
        #[arg(long, conflicts_with = "capabilities")]
        no_capabilities: bool,
        /// Its cpu budget, millicores.
        #[arg(long)]
        cpu_millicores: Option<u64>,
        /// Its memory budget, MiB.
        #[arg(long)]
        memory_mib: Option<u64>,
    },
    /// Remove a node from the registry: one that is stopped (suspect or
    /// down) and holds no task; refused (non-zero exit) otherwise.
    Remove {
        /// Node id.
        id: u64,
    },
    /// Before restarting or upgrading a node: no new tasks for it, and
    /// leadership moves off it.
    Drain {
        /// Node id.
        id: u64,
    },
    /// Let a drained node take new tasks again.
    Undrain {
        /// Node id.
        id: u64,
    },
}

#[derive(Subcommand)]
enum CheckCmd {
    /// Compare every member's replicated state at one applied index (like
    /// `etcdctl endpoint hashkv`). Exits 0 if all are equal, 2 naming the
    /// diverged member(s) if not, 1 if a member could not be compared.
    Consistency {
        /// Rounds to try for one index every member answers at.
        #[arg(long, default_value_t = 6)]
        attempts: u32,
        /// Per round, how long a member may take to reach that index (ms).
        #[arg(long, default_value_t = 2000)]
        wait_ms: u64,
    },
}

#[derive(Subcommand)]
enum ClusterCmd {
    /// Bootstrap a new cluster on the first endpoint with these voters.
    Init {
        /// A voter: ID=RAFT_ADDR,API_ADDR (repeat for each).
        #[arg(long = "member", required = true)]
        members: Vec<String>,
        /// Return only once a leader is elected (within --command-timeout-ms;
        /// exit 5 if none is by then).
        #[arg(long)]
        wait: bool,
    },
}

#[derive(Subcommand)]
enum MemberCmd {
    /// Add a node as a learner (it replicates but does not vote) and wait
    /// until it caught up: connected to the leader and holding everything
    /// committed when it was added. Start the node first. Exits 1 if it
    /// did not catch up in time (it then stays a learner).
    Add {
        /// Its id.
        id: u64,
        /// Its transport address.
        #[arg(long)]
        raft_addr: String,
        /// Its admin API address.
        #[arg(long)]
        api_addr: String,
        /// Return once it is added, without waiting for it to catch up.
        #[arg(long)]
        no_wait: bool,
        /// How long to wait for it to catch up, in milliseconds.
        #[arg(long, env = "CAIRN_WAIT_TIMEOUT_MS", default_value_t = 60_000)]
        wait_timeout_ms: u64,
    },
    /// Make a learner a voter. Refused (exit 1, nothing changed) if the
    /// leader has not heard from it within an election timeout or it does
    /// not hold the leader's committed index.
    Promote {
        /// Its id.
        id: u64,
        /// Promote it even if it is unreachable or lagging (with a warning:
        /// until it catches up the cluster tolerates one failure fewer).
        #[arg(long)]
        force: bool,
    },
    /// Remove a member.
    Remove {
        /// Its id.
        id: u64,
    },
    /// List members.
    List,
    /// Hand leadership to another voter, and wait (within
    /// --command-timeout-ms) until it leads; exit 5 if it does not by then.
    TransferLeader {
        /// The voter to lead.
        to: u64,
    },
}

#[derive(Subcommand)]
enum ParamCmd {
    /// Declare a parameter: KIND is bool | int:MIN:MAX | float:MIN:MAX | string | enum:A|B|C.
    Declare {
        /// Name.
        name: String,
        /// Kind and bounds.
        kind: String,
        /// Initial value.
        value: String,
        /// Description.
        #[arg(long, default_value = "")]
        description: String,
    },
    /// Set a parameter.
    Set {
        /// Name.
        name: String,
        /// Value (parsed by the declared type).
        value: String,
    },
    /// Show a parameter.
    Get {
        /// Name.
        name: String,
        /// Read this node's state without a linearizable check.
        #[arg(long)]
        stale: bool,
    },
    /// List parameters.
    List {
        /// Read this node's state without a linearizable check.
        #[arg(long)]
        stale: bool,
    },
}

/// What stderr shows: `RUST_LOG`, else this.
const DEFAULT_LOG_FILTER: &str = "info,openraft=warn";

fn log_filter() -> tracing_subscriber::EnvFilter {
    tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| DEFAULT_LOG_FILTER.into())
}

/// Colour (ANSI escapes) only on a terminal, and never with `NO_COLOR`
/// set (no-color.org): a log file or journald gets plain text.
fn log_colour() -> bool {
    use std::io::IsTerminal as _;
    std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty()) && std::io::stderr().is_terminal()
}

/// Logs to stderr, filtered by `RUST_LOG`.
fn init_logging() {
    tracing_subscriber::fmt()
        .with_env_filter(log_filter())
        .with_writer(std::io::stderr)
        .with_ansi(log_colour())
        .init();
}

/// A command that prints and ends should die quietly of SIGPIPE when its
/// reader goes away (`cairn watch | head`: exit 141 in a shell, as `cat`
/// and `etcdctl` do), not panic in `println!` (exit 101). Rust ignores
/// SIGPIPE by default so that a server gets EPIPE on a closed socket
/// instead of dying; the servers (`node run`, `sim run`) keep that.
fn printing_dies_on_broken_pipe(cmd: &Cmd) {
    let server = matches!(
        cmd,
        Cmd::Node {
            cmd: NodeCmd::Run { .. }
        } | Cmd::Sim {
            cmd: cli::sim::SimCmd::Run { .. }
        }
    );
    if !server {
        // SAFETY: `signal` with SIG_DFL installs no handler code; it only
        // restores the kernel's default action for SIGPIPE.
        unsafe {
            libc::signal(libc::SIGPIPE, libc::SIG_DFL);
        }
    }
}

/// Spans still to be flushed to the OTLP collector at exit.
#[cfg(feature = "otel")]
type Export = Option<cairn::otel::OtelGuard>;
#[cfg(not(feature = "otel"))]
type Export = Option<std::convert::Infallible>;

/// The daemon's subscriber: logs to stderr as [`init_logging`], plus, when
/// `[tracing]` or the environment names an OTLP endpoint and the binary has
/// the `otel` feature, the span export (with its own filter).
fn init_node_tracing(cfg: &NodeConfig) -> anyhow::Result<Export> {
    let url = cfg.tracing.traces_url();
    #[cfg(feature = "otel")]
    {
        use tracing_subscriber::layer::SubscriberExt as _;
        use tracing_subscriber::util::SubscriberInitExt as _;
        use tracing_subscriber::Layer as _;
        if let Some(url) = url {
            let export_filter = tracing_subscriber::EnvFilter::try_new(&cfg.tracing.otlp_filter)
                .with_context(|| format!("[tracing] otlp_filter {:?}", cfg.tracing.otlp_filter))?;
            let (otel, guard) = cairn::otel::layer(&url, cfg.id)?;
            tracing_subscriber::registry()
                .with(
                    tracing_subscriber::fmt::layer()
                        .with_writer(std::io::stderr)
                        .with_ansi(log_colour())
                        .with_filter(log_filter()),
                )
                .with(otel.with_filter(export_filter))
                .init();
            tracing::info!(endpoint = %url, filter = %cfg.tracing.otlp_filter, "exporting spans over OTLP/HTTP");
            return Ok(Some(guard));
        }
        init_logging();
        Ok(None)
    }
    #[cfg(not(feature = "otel"))]
    {
        init_logging();
        if let Some(url) = url {
            tracing::warn!(
                endpoint = %url,
                "an OTLP endpoint is configured but this binary was built without the `otel` feature: \
                 no spans are exported (build with `cargo build --release --features otel`)"
            );
        }
        Ok(None)
    }
}

/// Flush the spans still batched.
#[cfg(feature = "otel")]
fn finish_export(export: Export) {
    if let Some(guard) = export {
        guard.shutdown();
    }
}

/// Nothing to flush without the `otel` feature.
#[cfg(not(feature = "otel"))]
fn finish_export(export: Export) {
    if let Some(never) = export {
        match never {}
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    printing_dies_on_broken_pipe(&cli.command);
    // `node run` sets up its subscriber once its config is read: the span
    // export is configured there.
    if !matches!(
        cli.command,
        Cmd::Node {
            cmd: NodeCmd::Run { .. }
        }
    ) {
        init_logging();
    }
    match run(cli).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            if e.downcast_ref::<cli::ops::Diverged>().is_some() || e.downcast_ref::<Unhealthy>().is_some() {
                ExitCode::from(2)
            } else {
                ExitCode::from(cli::exit_code(&e))
            }
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let settings = cli::ClientSettings::resolve(
        cli.endpoints.clone(),
        cli.token.clone(),
        cli.ca_cert.clone(),
        cli.client_config.clone(),
    )?;
    let client = Client::with_timeouts(
        settings.endpoints.clone(),
        Timeouts {
            dial: Duration::from_millis(cli.dial_timeout_ms),
            command: Duration::from_millis(cli.command_timeout_ms),
        },
        ClientOptions {
            token: settings.token.clone(),
            ca_cert: settings.ca_cert.clone(),
        },
    )?;
    match cli.command {
        Cmd::Node {
            cmd:
                NodeCmd::Run {
                    id,
                    raft_addr,
                    api_addr,
                    data_dir,
                    config,
                    tls_dir,
                    api_token,
                    read_requires_token,
                    api_tls,
                    sim,
                },
        } => {
            let mut cfg = match &config {
                Some(path) => NodeConfig::from_file_with_id(path, id)?,
                None => NodeConfig::new(id.context("--id is required without --config")?),
            };
            if let Some(id) = id {
                cfg.id = id;
            }
            if let Some(a) = raft_addr {
                cfg.raft_addr = a;
            }
            if let Some(a) = api_addr {
                cfg.api_addr = a;
            }
            if let Some(d) = data_dir {
                cfg.data_dir = d;
            }
            if let Some(dir) = tls_dir {
                cfg.tls = Some(cairn::tls::TlsPaths::in_dir(&dir, cfg.id));
            }
            if let Some(t) = api_token {
                cfg.api.token = Some(t);
                cfg.api.token_file = None;
            }
            cfg.api.read_requires_token |= read_requires_token;
            cfg.api.tls |= api_tls;
            if let Some(addr) = sim {
                cfg.rover.sim = Some(addr);
            }
            let export = init_node_tracing(&cfg)?;
            let daemon = Daemon::start(cfg.clone())
                .await
                .with_context(|| format!("starting node {}", cfg.id))?;
            let watchdog = systemd_ready(&daemon);
            shutdown_signal().await.context("waiting for a shutdown signal")?;
            tracing::info!("shutting down");
            let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Stopping]);
            if let Some(w) = watchdog {
                w.abort();
            }
            let stopped = daemon.shutdown().await;
            // Blocks until the last batch is sent (bounded by the exporter's
            // timeout): off the runtime's worker threads.
            let _ = tokio::task::spawn_blocking(move || finish_export(export)).await;
            stopped?;
        }
        Cmd::Cluster {
            cmd: ClusterCmd::Init { members, wait },
        } => {
            let mut map = BTreeMap::new();
            for m in &members {
                let (id, member) = parse_member(m)?;
                if map.insert(id, member).is_some() {
                    anyhow::bail!("member {id} is listed twice");
                }
            }
            let ep = first_endpoint(&client)?;
            // The error names the endpoint already.
            client
                .call_one::<_, serde_json::Value>(
                    &ep,
                    Method::POST,
                    "/v1/cluster/init",
                    Some(&InitRequest { members: map.clone() }),
                )
                .await?;
            let voters: Vec<u64> = map.keys().copied().collect();
            let leader = if wait {
                let (leader, term) = wait_for_leader(&client, None)
                    .await
                    .map_err(|waited| {
                        cli::Failed::unknown(format!(
                            "cluster initialised with {} voter(s) via {ep}, but no leader was elected within {waited} ms; `cairn status` shows when one is",
                            voters.len()
                        ))
                    })?;
                Some((leader, term))
            } else {
                None
            };
            if cli.output == Output::Json {
                println!(
                    "{}",
                    serde_json::json!({
                        "endpoint": ep, "voters": voters,
                        "leader": leader.map(|(l, _)| l), "term": leader.map(|(_, t)| t),
                    })
                );
            } else {
                match leader {
                    Some((l, term)) => println!(
                        "cluster initialised with {} voter(s) via {ep}; node {l} leads (term {term})",
                        voters.len()
                    ),
                    None => println!("cluster initialised with {} voter(s) via {ep}", voters.len()),
                }
            }
        }
        Cmd::Node {
            cmd: NodeCmd::List { stale },
        } => cli::node_list(&client, cli.output == Output::Json, stale).await?,
        Cmd::Node {
            cmd: NodeCmd::Get { id, stale },
        } => cli::node_get(&client, id, stale).await?,
        Cmd::Node {
            cmd:
                NodeCmd::Update {
                    id,
                    capabilities,
                    no_capabilities,
                    cpu_millicores,
                    memory_mib,
                },
        } => {
            let capabilities =
                (no_capabilities || !capabilities.is_empty()).then(|| capabilities.into_iter().collect());
            let req = cairn::api::UpdateNodeRequest {
                capabilities,
                cpu_millicores,
                memory_mib,
            };
            cli::node_update(&client, cli.output == Output::Json, id, &req).await?
        }
        Cmd::Node {
            cmd: NodeCmd::Remove { id },
        } => cli::node_remove(&client, cli.output == Output::Json, id).await?,
        Cmd::Node {
            cmd: NodeCmd::Drain { id },
        } => cli::ops::drain(&client, cli.output == Output::Json, id, true).await?,
        Cmd::Node {
            cmd: NodeCmd::Undrain { id },
        } => cli::ops::drain(&client, cli.output == Output::Json, id, false).await?,
        Cmd::Member { cmd } => member(&client, cli.output, cmd).await?,
        Cmd::Status => status(&client, cli.output).await?,
        Cmd::Param { cmd } => param(&client, cli.output, cmd).await?,
        Cmd::Task { cmd } => cli::task(&client, cli.output == Output::Json, cmd).await?,
        Cmd::Mission { cmd } => cli::mission(&client, cli.output == Output::Json, cmd).await?,
        Cmd::Sensor { cmd } => cli::sensor(&client, cli.output == Output::Json, cmd).await?,
        Cmd::Policy { cmd } => cli::policy(&client, cli.output == Output::Json, cmd).await?,
        Cmd::Watch(args) => cli::watch(&client, cli.output == Output::Json, args).await?,
        Cmd::Certs { cmd } => cli::certs(cli.output == Output::Json, cmd)?,
        Cmd::Openapi => println!("{}", cairn::api::openapi_json_string()),
        Cmd::Backup(args) => cli::ops::backup(&client, cli.output == Output::Json, args).await?,
        Cmd::Restore(args) => cli::ops::restore(cli.output == Output::Json, args).await?,
        Cmd::Recover(args) => cli::ops::recover(cli.output == Output::Json, args).await?,
        Cmd::Sim { cmd } => cli::sim::sim(cli.output == Output::Json, cmd).await?,
        Cmd::Check {
            cmd: CheckCmd::Consistency { attempts, wait_ms },
        } => {
            let opts = cairn::check::CheckOptions {
                attempts,
                wait: Duration::from_millis(wait_ms),
            };
            cli::ops::check_consistency(&client, cli.output == Output::Json, &opts).await?
        }
    }
    Ok(())
}

/// Ctrl-C (SIGINT) or SIGTERM (what systemd and `kill` send): both stop
/// the node gracefully (leadership handed over first).
async fn shutdown_signal() -> std::io::Result<()> {
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        tokio::select! {
            r = tokio::signal::ctrl_c() => r,
            _ = term.recv() => Ok(()),
        }
    }
    #[cfg(not(unix))]
    {
        tokio::signal::ctrl_c().await
    }
}

/// Tells systemd the node serves (a no-op unless started by a `Type=notify`
/// unit), and, when the unit sets `WatchdogSec`, feeds the watchdog at half
/// its period for as long as the runtime runs and the Raft core has not
/// stopped: a wedged runtime or a core stopped by a storage error gets the
/// node restarted by systemd instead of sitting there answering /healthz.
fn systemd_ready(daemon: &Daemon) -> Option<tokio::task::JoinHandle<()>> {
    if let Err(e) = sd_notify::notify(false, &[sd_notify::NotifyState::Ready]) {
        tracing::debug!(error = %e, "systemd readiness not sent");
    }
    let mut usec = 0;
    if !sd_notify::watchdog_enabled(false, &mut usec) || usec == 0 {
        return None;
    }
    let node = daemon.node().clone();
    let every = Duration::from_micros(usec / 2);
    tracing::info!(period_ms = every.as_millis() as u64, "feeding the systemd watchdog");
    Some(tokio::spawn(async move {
        loop {
            tokio::time::sleep(every).await;
            if node.status().role == cairn::raft::Role::Shutdown {
                tracing::error!("raft core stopped; no longer feeding the systemd watchdog");
                return;
            }
            let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Watchdog]);
        }
    }))
}

/// Polls `GET /v1/status` (first answering endpoint) until it names a
/// leader (`Some(to)`: that one), within the client's command timeout.
/// `Ok((leader, term))`, or `Err(ms waited)`.
async fn wait_for_leader(client: &Client, to: Option<u64>) -> Result<(u64, u64), u128> {
    const POLL: Duration = Duration::from_millis(100);
    let budget = client.timeouts().command;
    let started = tokio::time::Instant::now();
    // Bounded by time and by count.
    for _ in 0..(budget.as_millis() / POLL.as_millis() + 1) {
        if let Ok(Some(s)) = client.call::<(), Status>(Method::GET, "/v1/status", None).await {
            match (s.leader, to) {
                (Some(l), None) => return Ok((l, s.term)),
                (Some(l), Some(t)) if l == t => return Ok((l, s.term)),
                _ => {}
            }
        }
        if started.elapsed() + POLL > budget {
            break;
        }
        tokio::time::sleep(POLL).await;
    }
    Err(started.elapsed().as_millis())
}

fn first_endpoint(client: &Client) -> anyhow::Result<String> {
    client
        .endpoints()
        .first()
        .cloned()
        .context("no endpoint given; use --endpoints")
}

fn parse_member(s: &str) -> anyhow::Result<(u64, Member)> {
    let (id, addrs) = s
        .split_once('=')
        .with_context(|| format!("member {s:?}: expected ID=RAFT_ADDR,API_ADDR"))?;
    let id: u64 = id
        .parse()
        .with_context(|| format!("member {s:?}: id {id:?} is not a number"))?;
    let (raft_addr, api_addr) = addrs
        .split_once(',')
        .with_context(|| format!("member {s:?}: expected ID=RAFT_ADDR,API_ADDR"))?;
    Ok((
        id,
        Member {
            raft_addr: raft_addr.into(),
            api_addr: api_addr.into(),
        },
    ))
}

const NONE: Option<&()> = None;

/// `cairn status`: nodes answered, but none leads with a quorum. The
/// process exits 2 (1 is "no endpoint answered").
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct Unhealthy(String);

/// How long one `POST /v1/members` may wait for the learner: the CLI
/// reports progress between calls.
const ADD_POLL_MS: u64 = 2_000;

/// Whether a failed call may still have taken effect (the answer was lost,
/// timed out, or said "outcome unknown"); a 4xx refusal changed nothing.
fn ambiguous(e: &cairn::client::ClientError) -> bool {
    !matches!(
        e,
        cairn::client::ClientError::Api { status: 400..=499, .. } | cairn::client::ClientError::Setup { .. }
    )
}

/// Node `id` in the membership as the first answering endpoint (the
/// leader, with a leader-first client) sees it now.
#[derive(Debug, PartialEq, Eq)]
enum Membership {
    /// Not a member.
    Absent,
    /// A learner, and no change is under way.
    Learner,
    /// A voter, and no change is under way.
    Voter,
    /// A membership change is under way (not committed, or joint): the
    /// outcome is not known yet.
    Changing,
}

async fn membership_of(client: &Client, id: u64) -> anyhow::Result<Membership> {
    let Some(s) = client.call::<(), Status>(Method::GET, "/v1/status", None).await? else {
        anyhow::bail!("empty status");
    };
    Ok(match s.members.iter().find(|m| m.id == id) {
        _ if s.membership_changing => Membership::Changing,
        None => Membership::Absent,
        Some(m) if m.voter => Membership::Voter,
        Some(_) => Membership::Learner,
    })
}

async fn member_add(
    client: &Client,
    out: Output,
    id: u64,
    raft_addr: String,
    api_addr: String,
    wait: Option<Duration>,
) -> anyhow::Result<()> {
    use cairn::raft::MemberProgress;
    let deadline = tokio::time::Instant::now() + wait.unwrap_or_default();
    loop {
        let remaining = deadline.saturating_duration_since(tokio::time::Instant::now());
        let body = AddMemberRequest {
            id,
            raft_addr: raft_addr.clone(),
            api_addr: api_addr.clone(),
            wait_ms: Some((remaining.as_millis() as u64).min(ADD_POLL_MS)),
        };
        let progress = match client
            .call::<_, MemberProgress>(Method::POST, "/v1/members", Some(&body))
            .await
        {
            Ok(Some(p)) => p,
            Ok(None) => anyhow::bail!("the leader answered without node {id}'s progress"),
            Err(e) if ambiguous(&e) => {
                let now = match membership_of(client, id).await {
                    Ok(Membership::Voter) => format!("the member list shows node {id} as a voter"),
                    Ok(Membership::Learner) => format!("node {id} was added: the member list shows it as a learner"),
                    Ok(Membership::Absent) => format!("node {id} was not added: the member list does not show it"),
                    Ok(Membership::Changing) => {
                        format!("whether node {id} was added is unknown: a membership change is under way; see `cairn member list`")
                    }
                    Err(read) => {
                        format!("whether node {id} was added is unknown (the member list could not be read: {read:#})")
                    }
                };
                // The request's own failure gives the exit code.
                return Err(cli::Failed::like(&e, format!("adding node {id} failed: {e}; {now}")).into());
            }
            Err(e) => return Err(e.into()),
        };
        if out == Output::Json && (wait.is_none() || progress.caught_up) {
            println!(
                "{}",
                serde_json::json!({ "id": id, "learner": true, "caught_up": progress.caught_up, "progress": progress })
            );
            return Ok(());
        }
        if wait.is_none() {
            println!(
                "node {id} added as a learner, not waiting for it to catch up ({})",
                progress.describe()
            );
            return Ok(());
        }
        if progress.caught_up {
            println!("node {id} added as a learner and caught up; promote it with `cairn member promote {id}`");
            return Ok(());
        }
        if remaining.is_zero() {
            anyhow::bail!(
                "node {id} was added as a learner but has not caught up within {} ms: {}. It stays a learner, which does not vote: check that it runs and that the leader reaches {raft_addr}, then run this command again to keep waiting, or remove it with `cairn member remove {id}`",
                wait.unwrap_or_default().as_millis(),
                progress.describe()
            );
        }
        eprintln!("waiting for node {id} to catch up: {}", progress.describe());
    }
}

async fn member_promote(client: &Client, out: Output, id: u64, force: bool) -> anyhow::Result<()> {
    let json = out == Output::Json;
    let voter_json = |already: bool, note: Option<String>| {
        println!(
            "{}",
            serde_json::json!({ "id": id, "voter": true, "already_voter": already, "note": note })
        );
    };
    let path = if force {
        format!("/v1/members/{id}/promote?force=true")
    } else {
        format!("/v1/members/{id}/promote")
    };
    match client
        .call::<_, cairn::raft::Promotion>(Method::POST, &path, NONE)
        .await
    {
        Ok(Some(p)) if p.already_voter && json => voter_json(true, None),
        Ok(Some(p)) if p.already_voter => println!("node {id} already is a voter; nothing changed"),
        Ok(Some(p)) => {
            if !p.progress.caught_up {
                eprintln!(
                    "warning: node {id} was promoted although it is not caught up ({}): until it is, the cluster tolerates one failure fewer",
                    p.progress.describe()
                );
            }
            if json {
                voter_json(false, None);
            } else {
                println!("node {id} is now a voter");
            }
        }
        Ok(None) => anyhow::bail!("the leader answered without the promotion's outcome"),
        Err(e) if ambiguous(&e) => {
            // The answer was lost or said "unknown": what does the cluster say?
            // Bounded: a change under way settles within an election or two.
            let mut now = membership_of(client, id).await;
            for _ in 0..10 {
                if matches!(now, Ok(Membership::Voter | Membership::Learner | Membership::Absent)) {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(300)).await;
                now = membership_of(client, id).await;
            }
            match now {
                Ok(Membership::Voter) if json => voter_json(
                    false,
                    Some(format!("the request reported \"{e}\", but the membership shows the promotion applied")),
                ),
                Ok(Membership::Voter) => {
                    println!("node {id} is now a voter (the request reported \"{e}\", but the membership shows the promotion applied)")
                }
                Ok(Membership::Learner) => {
                    anyhow::bail!("node {id} was not promoted: {e}; the membership shows it still a learner")
                }
                Ok(Membership::Absent) => anyhow::bail!("node {id} was not promoted: {e}; it is not a member"),
                Ok(Membership::Changing) => return Err(cli::Failed::unknown(format!(
                    "the outcome of promoting node {id} is unknown: {e}; a membership change is still under way (the new voter set needs a majority of its voters to answer); `cairn status` shows when it is done"
                )).into()),
                Err(read) => return Err(cli::Failed::unknown(format!(
                    "the outcome of promoting node {id} is unknown: {e}; the membership could not be read ({read:#}): check `cairn member list`"
                )).into()),
            }
        }
        Err(e @ cairn::client::ClientError::Api { status: 409, .. }) if e.to_string().contains("not ready to vote") => {
            return Err(cli::Failed::like(
                &e,
                format!("{e}; `cairn member promote {id} --force` promotes it anyway"),
            )
            .into());
        }
        Err(e) => return Err(e.into()),
    }
    Ok(())
}

async fn member(client: &Client, out: Output, cmd: MemberCmd) -> anyhow::Result<()> {
    match cmd {
        MemberCmd::Add {
            id,
            raft_addr,
            api_addr,
            no_wait,
            wait_timeout_ms,
        } => {
            // Only the leader adds and promotes (others answer 503).
            let client = client.leader_first().await;
            let wait = (!no_wait).then(|| Duration::from_millis(wait_timeout_ms));
            member_add(&client, out, id, raft_addr, api_addr, wait).await?;
        }
        MemberCmd::Promote { id, force } => {
            let client = client.leader_first().await;
            member_promote(&client, out, id, force).await?;
        }
        MemberCmd::Remove { id } => {
            let r = client
                .call::<_, serde_json::Value>(Method::DELETE, &format!("/v1/members/{id}"), NONE)
                .await?;
            if out == Output::Json {
                println!("{}", serde_json::json!({ "id": id, "removed": true, "response": r }));
            } else {
                println!("node {id} removed");
            }
        }
        MemberCmd::TransferLeader { to } => {
            client
                .call::<_, serde_json::Value>(
                    Method::POST,
                    "/v1/leader/transfer",
                    Some(&serde_json::json!({ "to": to })),
                )
                .await?;
            let (leader, term) = wait_for_leader(client, Some(to)).await.map_err(|waited| {
                cli::Failed::unknown(format!(
                    "leadership transfer to node {to} was requested, but node {to} did not lead within {waited} ms; it may still take over: check `cairn status`"
                ))
            })?;
            if out == Output::Json {
                println!("{}", serde_json::json!({ "to": to, "leader": leader, "term": term }));
            } else {
                println!("node {leader} now leads (term {term})");
            }
        }
        MemberCmd::List => {
            let members: Vec<MemberStatus> = client.call(Method::GET, "/v1/members", NONE).await?.unwrap_or_default();
            if out == Output::Json {
                println!("{}", serde_json::to_string_pretty(&members)?);
            } else {
                println!("{:<4} {:<8} {:<22} {:<22}", "ID", "ROLE", "RAFT ADDR", "API ADDR");
                for m in members {
                    let role = if m.voter { "voter" } else { "learner" };
                    println!(
                        "{:<4} {:<8} {:<22} {:<22}",
                        m.id, role, m.member.raft_addr, m.member.api_addr
                    );
                }
            }
        }
    }
    Ok(())
}

fn strip_scheme(ep: &str) -> &str {
    ep.trim_start_matches("http://").trim_start_matches("https://")
}

fn opt(v: Option<u64>) -> String {
    v.map(|v| v.to_string()).unwrap_or_else(|| "-".into())
}

async fn status(client: &Client, out: Output) -> anyhow::Result<()> {
    // Ask every endpoint, like `etcdctl endpoint status`; also every member
    // the first answering node knows of.
    let mut endpoints: Vec<String> = client.endpoints().to_vec();
    let mut rows: Vec<(String, Result<Status, String>)> = Vec::new();
    let mut i = 0;
    while i < endpoints.len() {
        let ep = endpoints[i].clone();
        i += 1;
        let r = client
            .call_one::<(), Status>(&ep, Method::GET, "/v1/status", None)
            .await;
        let r = match r {
            Ok(Some(s)) => {
                for m in &s.members {
                    let scheme = if ep.starts_with("https://") { "https" } else { "http" };
                    let url = format!("{scheme}://{}", m.member.api_addr);
                    if !endpoints.contains(&url) {
                        endpoints.push(url);
                    }
                }
                Ok(s)
            }
            Ok(None) => Err("empty response".to_string()),
            Err(cairn::client::ClientError::Unreachable { tried, .. }) => {
                let why = tried.strip_prefix(&format!("{ep}: ")).unwrap_or(&tried);
                Err(format!("unreachable: {why}"))
            }
            Err(cairn::client::ClientError::Api { body, .. }) => Err(format!("{} ({})", body.message, body.code)),
            Err(e) => Err(e.to_string()),
        };
        rows.push((ep, r));
    }
    let health = cluster_health(&rows);
    if out == Output::Json {
        let v: Vec<serde_json::Value> = rows
            .iter()
            .map(|(ep, r)| match r {
                Ok(s) => serde_json::json!({ "endpoint": ep, "status": s }),
                Err(e) => serde_json::json!({ "endpoint": ep, "error": e }),
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        print_status_table(&rows);
        if let Ok(line) = &health {
            println!("\n{line}");
        }
    }
    if rows.iter().all(|(_, r)| r.is_err()) {
        return Err(cli::Failed::unavailable("no endpoint answered; is a node running? try --endpoints").into());
    }
    health.map(|_| ()).map_err(|line| Unhealthy(line).into())
}

/// The cluster's health from the nodes' answers: `Ok` with a leader that
/// has a quorum ("can lose N more"), else `Err` saying why not.
fn cluster_health(rows: &[(String, Result<Status, String>)]) -> Result<String, String> {
    use cairn::raft::Role;
    let answered: Vec<&Status> = rows.iter().filter_map(|(_, r)| r.as_ref().ok()).collect();
    // The newest term's leader, if several nodes think they lead.
    let leader = answered
        .iter()
        .filter(|s| s.role == Role::Leader)
        .max_by_key(|s| s.term);
    let voters = |s: &Status| s.members.iter().filter(|m| m.voter).count();
    match leader {
        Some(l) if l.quorum => {
            let n = l.fault_tolerance.unwrap_or(0);
            Ok(format!(
                "cluster: leader {} (term {}) has a quorum of its {} voters: can lose {n} more",
                l.id,
                l.term,
                voters(l)
            ))
        }
        Some(l) => Err(format!(
            "cluster has no quorum: leader {} (term {}) has not heard from a majority of its {} voters within an election timeout (last: {}); writes cannot commit",
            l.id,
            l.term,
            voters(l),
            l.leader_contact_ms
                .map(|ms| format!("{ms} ms ago"))
                .unwrap_or_else(|| "never".into())
        )),
        None => {
            let knows = answered.iter().filter_map(|s| s.leader.map(|l| (s.id, l))).next();
            Err(match knows {
                Some((node, l)) => format!(
                    "cluster has no leader with a quorum: node {node} names node {l} as leader, but the leader did not answer and no answering node is in touch with it"
                ),
                None => format!(
                    "cluster has no leader: none of the {} answering node(s) knows one (an election in progress, or a majority of voters down)",
                    answered.len()
                ),
            })
        }
    }
}

fn print_status_table(rows: &[(String, Result<Status, String>)]) {
    println!(
        "{:<24} {:>3} {:<9} {:>6} {:>7} {:>9} {:>9} {:>9} {:<6}",
        "ENDPOINT", "ID", "ROLE", "TERM", "LEADER", "LAST LOG", "COMMIT", "APPLIED", "QUORUM"
    );
    let mut leader_view: Option<&Status> = None;
    for (ep, r) in rows {
        match r {
            Ok(s) => {
                println!(
                    "{:<24} {:>3} {:<9} {:>6} {:>7} {:>9} {:>9} {:>9} {:<6}",
                    strip_scheme(ep),
                    s.id,
                    format!("{:?}", s.role).to_lowercase(),
                    s.term,
                    opt(s.leader),
                    opt(s.last_log_index),
                    opt(s.committed_index),
                    opt(s.applied_index),
                    if s.quorum { "yes" } else { "no" }
                );
                if s.leader == Some(s.id) && leader_view.is_none_or(|l| l.term < s.term) {
                    leader_view = Some(s);
                }
            }
            Err(e) => println!("{:<24} {e}", strip_scheme(ep)),
        }
    }
    if let Some(l) = leader_view {
        println!("\nreplication (from leader {}):", l.id);
        for m in &l.members {
            println!(
                "  node {:<3} {:<8} matched {:>9}  lag {:>6}  last ack {:>8}",
                m.id,
                if m.voter { "voter" } else { "learner" },
                opt(m.matched_index),
                opt(m.lag),
                m.last_ack_ms
                    .map(|ms| format!("{ms} ms"))
                    .unwrap_or_else(|| "never".into())
            );
        }
    }
}

fn parse_kind(kind: &str) -> anyhow::Result<cairn::state::ParamKind> {
    use cairn::state::ParamKind;
    let parts: Vec<&str> = kind.split(':').collect();
    let num = |s: &str| -> anyhow::Result<f64> { s.parse().with_context(|| format!("bound {s:?} is not a number")) };
    Ok(match parts.as_slice() {
        ["bool"] => ParamKind::Bool,
        ["int", min, max] => ParamKind::Int {
            min: min
                .parse()
                .with_context(|| format!("bound {min:?} is not an integer"))?,
            max: max
                .parse()
                .with_context(|| format!("bound {max:?} is not an integer"))?,
        },
        ["float", min, max] => ParamKind::Float {
            min: num(min)?,
            max: num(max)?,
        },
        ["string"] => ParamKind::String { max_len: 256 },
        ["enum", choices] => ParamKind::Enum {
            choices: choices.split('|').map(str::to_string).collect(),
        },
        _ => anyhow::bail!("kind {kind:?}: expected bool | int:MIN:MAX | float:MIN:MAX | string | enum:A|B"),
    })
}

fn parse_value(kind: &cairn::state::ParamKind, raw: &str) -> anyhow::Result<cairn::state::ParamValue> {
    use cairn::state::ParamKind as K;
    use cairn::state::ParamValue as V;
    Ok(match kind {
        K::Bool => V::Bool(raw.parse().with_context(|| format!("{raw:?} is not true/false"))?),
        K::Int { .. } => V::Int(raw.parse().with_context(|| format!("{raw:?} is not an integer"))?),
        K::Float { .. } => V::Float(raw.parse().with_context(|| format!("{raw:?} is not a number"))?),
        K::Enum { .. } => V::Enum(raw.into()),
        _ => V::String(raw.into()),
    })
}

async fn param(client: &Client, out: Output, cmd: ParamCmd) -> anyhow::Result<()> {
    match cmd {
        ParamCmd::Declare {
            name,
            kind,
            value,
            description,
        } => {
            let kind = parse_kind(&kind)?;
            let value = parse_value(&kind, &value)?;
            let body = DeclareParamRequest {
                name: name.clone(),
                description,
                kind,
                value,
            };
            let r: Option<serde_json::Value> = client.call(Method::POST, "/v1/params", Some(&body)).await?;
            cli::print_write(out == Output::Json, &name, r)?;
        }
        ParamCmd::Set { name, value } => {
            let current: Option<serde_json::Value> =
                client.call(Method::GET, &format!("/v1/params/{name}"), NONE).await?;
            let kind: cairn::state::ParamKind = serde_json::from_value(
                current
                    .as_ref()
                    .and_then(|p| p.get("kind").cloned())
                    .context("the node returned a parameter without a kind")?,
            )?;
            let value = parse_value(&kind, &value)?;
            let r: Option<serde_json::Value> = client
                .call(
                    Method::PUT,
                    &format!("/v1/params/{name}"),
                    Some(&serde_json::json!({ "value": value })),
                )
                .await?;
            cli::print_write(out == Output::Json, &name, r)?;
        }
        ParamCmd::Get { name, stale } => {
            let q = if stale { "?consistency=stale" } else { "" };
            let r: Option<serde_json::Value> = client.call(Method::GET, &format!("/v1/params/{name}{q}"), NONE).await?;
            let r = r.unwrap_or_default();
            if out == Output::Json {
                println!("{}", serde_json::to_string_pretty(&r)?);
            } else {
                println!("{name} = {}", show_value(r.get("value")));
            }
        }
        ParamCmd::List { stale } => {
            let q = if stale { "?consistency=stale" } else { "" };
            let r: Option<serde_json::Value> = client.call(Method::GET, &format!("/v1/params{q}"), NONE).await?;
            let r = r.unwrap_or_default();
            if out == Output::Json {
                println!("{}", serde_json::to_string_pretty(&r)?);
            } else {
                for p in r.as_array().into_iter().flatten() {
                    println!(
                        "{:<28} {}",
                        p.get("name").and_then(|n| n.as_str()).unwrap_or("?"),
                        show_value(p.get("value"))
                    );
                }
            }
        }
    }
    Ok(())
}

/// A parameter value as a person writes it: `1.5`, `true`, `"text"`.
fn show_value(v: Option<&serde_json::Value>) -> String {
    match v {
        Some(serde_json::Value::Object(m)) if m.len() == 1 => {
            m.values().next().map(|v| v.to_string()).unwrap_or_default()
        }
        Some(v) => v.to_string(),
        None => "-".into(),
    }
}
