//! The `cairn` command line: its clap definitions and dispatch. Each topic
//! has a file of its own, with its subcommands and what they do.
//!
//! # Layout
//! - `cluster`, `member`, `status`: bootstrap, membership, health.
//! - `node`: running a node, and the node registry.
//! - `param`, `task`, `mission`, `sensor`, `policy`, `watch`: the
//!   replicated state.
//! - `topic`: the best-effort telemetry.
//! - `ops`: backup, restore, recover, drain, consistency check.
//! - `certs`, `sim`: certificates; the simulated world.
//! - `settings`, `out`, `exit`: where to connect, how to print, which exit
//!   code. `completion` (here): shell completions from these definitions.

pub mod certs;
pub mod cluster;
pub mod exit;
pub mod member;
pub mod mission;
pub mod node;
pub mod ops;
pub mod out;
pub mod param;
pub mod policy;
pub mod sensor;
pub mod settings;
pub mod sim;
pub mod status;
pub mod task;
pub mod topic;
pub mod watch;

use std::path::PathBuf;
use std::time::Duration;

use cairn::client::Client;
use cairn::client::ClientOptions;
use cairn::client::Timeouts;
use clap::CommandFactory;
use clap::Parser;
use clap::Subcommand;
use clap::ValueEnum;

/// No request body.
pub(crate) const NONE: Option<&()> = None;

#[derive(Parser)]
#[command(
    name = "cairn",
    version,
    about = "Raft-replicated mission coordinator for a rover's computers",
    after_help = exit::EXIT_CODES_HELP
)]
pub struct Cli {
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
    pub command: Cmd,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Output {
    Table,
    Json,
}

#[derive(Subcommand)]
pub enum Cmd {
    /// Run a node.
    Node {
        #[command(subcommand)]
        cmd: node::NodeCmd,
    },
    /// Cluster bootstrap.
    Cluster {
        #[command(subcommand)]
        cmd: cluster::ClusterCmd,
    },
    /// Membership: add, promote, remove, list, transfer leadership.
    Member {
        #[command(subcommand)]
        cmd: member::MemberCmd,
    },
    /// Status of every endpoint (leader, term, indexes, members with lag)
    /// and of the cluster: exit 0 with a leader that has a quorum ("can
    /// lose N more"), 2 if nodes answered but there is none, 3 if no
    /// endpoint answered.
    Status,
    /// Parameters: declare, set, get, list, describe, dump, load.
    Param {
        #[command(subcommand)]
        cmd: param::ParamCmd,
    },
    /// Tasks: submit, list, get, cancel, follow.
    Task {
        #[command(subcommand)]
        cmd: task::TaskCmd,
    },
    /// The mission plan: show, load, append, skip, complete, abort.
    Mission {
        #[command(subcommand)]
        cmd: mission::MissionCmd,
    },
    /// Sensor health and the effective mode.
    Sensor {
        #[command(subcommand)]
        cmd: sensor::SensorCmd,
    },
    /// Degradation policies.
    Policy {
        #[command(subcommand)]
        cmd: policy::PolicyCmd,
    },
    /// Stream applied changes, each as the key it changed and its old and
    /// new value (resumes across endpoints without gaps).
    Watch(watch::WatchArgs),
    /// Telemetry topics: list them, echo one, measure its rate.
    Topic {
        #[command(subcommand)]
        cmd: topic::TopicCmd,
    },
    /// Print a shell completion script: `cairn completion bash >
    /// /etc/bash_completion.d/cairn`, `cairn completion zsh >
    /// "${fpath[1]}/_cairn"`, `cairn completion fish >
    /// ~/.config/fish/completions/cairn.fish`.
    Completion {
        /// bash, zsh or fish (also elvish, powershell).
        shell: clap_complete::Shell,
    },
    /// Certificates: a cluster CA and node certificates for mutual TLS.
    Certs {
        #[command(subcommand)]
        cmd: certs::CertsCmd,
    },
    /// Print the admin API's OpenAPI document.
    Openapi,
    /// Save a consistent copy of the cluster's state to FILE (any node
    /// serves it after a linearizable read: every acknowledged write is in).
    Backup(ops::BackupArgs),
    /// Offline: seed a new, empty data dir from a backup; a node started on
    /// it is a one-node cluster with that state, which others then join.
    Restore(ops::RestoreArgs),
    /// Offline, after losing quorum for good: make a stopped survivor the
    /// only voter of a new cluster, keeping everything it has.
    Recover(ops::RecoverArgs),
    /// Checks of the cluster's health beyond status.
    Check {
        #[command(subcommand)]
        cmd: ops::CheckCmd,
    },
    /// The simulated rover world: run it, read it, inject faults.
    Sim {
        #[command(subcommand)]
        cmd: sim::SimCmd,
    },
}

impl Cmd {
    /// `node run` sets up its own subscriber (with the span export) once
    /// its config is read.
    pub fn runs_a_node(&self) -> bool {
        matches!(
            self,
            Cmd::Node {
                cmd: node::NodeCmd::Run { .. }
            }
        )
    }
}

/// A command that prints and ends should die quietly of SIGPIPE when its
/// reader goes away (`cairn watch | head`: exit 141 in a shell, as `cat`
/// and `etcdctl` do), not panic in `println!` (exit 101). Rust ignores
/// SIGPIPE by default so that a server gets EPIPE on a closed socket
/// instead of dying; the servers (`node run`, `sim run`) keep that.
pub fn printing_dies_on_broken_pipe(cmd: &Cmd) {
    let server = matches!(
        cmd,
        Cmd::Node {
            cmd: node::NodeCmd::Run { .. }
        } | Cmd::Sim {
            cmd: sim::SimCmd::Run { .. }
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

/// Runs the command line's command.
pub async fn run(cli: Cli) -> anyhow::Result<()> {
    // Needs no endpoint, and no client config that parses.
    if let Cmd::Completion { shell } = cli.command {
        return completion(shell, cli.output == Output::Json);
    }
    let settings = settings::ClientSettings::resolve(
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
    let json = cli.output == Output::Json;
    match cli.command {
        Cmd::Node { cmd } => node::run(&client, json, cmd).await?,
        Cmd::Cluster { cmd } => cluster::run(&client, json, cmd).await?,
        Cmd::Member { cmd } => member::run(&client, json, cmd).await?,
        Cmd::Status => status::run(&client, json).await?,
        Cmd::Param { cmd } => param::run(&client, json, cmd).await?,
        Cmd::Task { cmd } => task::run(&client, json, cmd).await?,
        Cmd::Mission { cmd } => mission::run(&client, json, cmd).await?,
        Cmd::Sensor { cmd } => sensor::run(&client, json, cmd).await?,
        Cmd::Policy { cmd } => policy::run(&client, json, cmd).await?,
        Cmd::Watch(args) => watch::run(&client, json, args).await?,
        Cmd::Topic { cmd } => topic::run(&client, json, cmd).await?,
        Cmd::Completion { shell } => completion(shell, json)?,
        Cmd::Certs { cmd } => certs::run(json, cmd)?,
        Cmd::Openapi => println!("{}", cairn::api::openapi_json_string()),
        Cmd::Backup(args) => ops::backup(&client, json, args).await?,
        Cmd::Restore(args) => ops::restore(json, args).await?,
        Cmd::Recover(args) => ops::recover(json, args).await?,
        Cmd::Sim { cmd } => sim::sim(json, cmd).await?,
        Cmd::Check {
            cmd: ops::CheckCmd::Consistency { attempts, wait_ms },
        } => {
            let opts = cairn::check::CheckOptions {
                attempts,
                wait: Duration::from_millis(wait_ms),
            };
            ops::check_consistency(&client, json, &opts).await?
        }
    }
    Ok(())
}

/// `cairn completion SHELL`: the script clap_complete generates from [`Cli`];
/// with `-o json`, `{"shell": …, "script": …}`.
fn completion(shell: clap_complete::Shell, json: bool) -> anyhow::Result<()> {
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut Cli::command(), "cairn", &mut script);
    if json {
        let script = String::from_utf8(script)?;
        return out::print_json(&serde_json::json!({"shell": shell.to_string(), "script": script}));
    }
    use std::io::Write;
    std::io::stdout().write_all(&script)?;
    Ok(())
}
