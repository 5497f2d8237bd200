//! `cairn node run|list|get|update|remove|drain|undrain`: running a node
//! (its logging, span export, systemd readiness) and the node registry.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use cairn::client::Client;
use cairn::config::NodeConfig;
use cairn::daemon::Daemon;
use clap::Subcommand;
use reqwest::Method;
use serde_json::Value;

use cairn::state::Node as RegisteredNode;

use super::out::name_of;
use super::out::print_json;
use super::out::stale_q;
use super::out::table;
use super::out::typed;
use super::out::write_result;
use super::NONE;

#[derive(Subcommand)]
pub enum NodeCmd {
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
        /// Log lines on stderr: `plain` or `json` (one object per line);
        /// overrides `[tracing] log_format`.
        #[arg(long, env = cairn::logging::LOG_FORMAT_ENV)]
        log_format: Option<cairn::logging::LogFormat>,
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

/// Runs `cmd`.
pub async fn run(client: &Client, json: bool, cmd: NodeCmd) -> anyhow::Result<()> {
    match cmd {
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
            log_format,
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
            if let Some(f) = log_format {
                cfg.tracing.log_format = f;
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
        NodeCmd::List { stale } => node_list(client, json, stale).await?,
        NodeCmd::Get { id, stale } => node_get(client, id, stale).await?,
        NodeCmd::Update {
            id,
            capabilities,
            no_capabilities,
            cpu_millicores,
            memory_mib,
        } => {
            let capabilities =
                (no_capabilities || !capabilities.is_empty()).then(|| capabilities.into_iter().collect());
            let req = cairn::api::UpdateNodeRequest {
                capabilities,
                cpu_millicores,
                memory_mib,
            };
            node_update(client, json, id, &req).await?
        }
        NodeCmd::Remove { id } => node_remove(client, json, id).await?,
        NodeCmd::Drain { id } => super::ops::drain(client, json, id, true).await?,
        NodeCmd::Undrain { id } => super::ops::drain(client, json, id, false).await?,
    }
    Ok(())
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

/// Logs to stderr, filtered by `RUST_LOG`, in the format
/// `CAIRN_LOG_FORMAT` names (plain if unset or unknown).
pub fn init_logging() {
    init_logging_as(cairn::logging::LogFormat::from_env().ok().flatten().unwrap_or_default());
}

/// Logs to stderr in `format`, filtered by `RUST_LOG`.
fn init_logging_as(format: cairn::logging::LogFormat) {
    use tracing_subscriber::layer::SubscriberExt as _;
    use tracing_subscriber::util::SubscriberInitExt as _;
    use tracing_subscriber::Layer as _;
    tracing_subscriber::registry()
        .with(cairn::logging::stderr_layer(format, log_colour()).with_filter(log_filter()))
        .init();
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
                .with(cairn::logging::stderr_layer(cfg.tracing.log_format, log_colour()).with_filter(log_filter()))
                .with(otel.with_filter(export_filter))
                .init();
            tracing::info!(endpoint = %url, filter = %cfg.tracing.otlp_filter, "exporting spans over OTLP/HTTP");
            return Ok(Some(guard));
        }
        init_logging_as(cfg.tracing.log_format);
        Ok(None)
    }
    #[cfg(not(feature = "otel"))]
    {
        init_logging_as(cfg.tracing.log_format);
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

async fn node_list(client: &Client, out_json: bool, stale: bool) -> anyhow::Result<()> {
    let r: Value = client
        .call(Method::GET, &format!("/v1/nodes{}", stale_q(stale)), NONE)
        .await?
        .unwrap_or_default();
    if out_json {
        return print_json(&r);
    }
    let nodes: Vec<RegisteredNode> = typed(r, "a list of nodes")?;
    let rows: Vec<Vec<String>> = nodes
        .iter()
        .map(|n| {
            let caps: Vec<&str> = n.capabilities.iter().map(String::as_str).collect();
            vec![
                n.id.to_string(),
                name_of(&n.liveness),
                format!("{}/{}", n.load.cpu_millicores, n.budget.cpu_millicores),
                format!("{}/{}", n.load.memory_mib, n.budget.memory_mib),
                caps.join(","),
            ]
        })
        .collect();
    table(
        &[
            "ID",
            "LIVENESS",
            "CPU (m) USED/BUDGET",
            "MEM (MiB) USED/BUDGET",
            "CAPABILITIES",
        ],
        &rows,
    );
    Ok(())
}

async fn node_get(client: &Client, id: u64, stale: bool) -> anyhow::Result<()> {
    let r: Value = client
        .call(Method::GET, &format!("/v1/nodes/{id}{}", stale_q(stale)), NONE)
        .await?
        .unwrap_or_default();
    print_json(&r)
}

async fn node_update(
    client: &Client,
    out_json: bool,
    id: u64,
    req: &cairn::api::UpdateNodeRequest,
) -> anyhow::Result<()> {
    // Another node's entry is changed on the leader (or on that node):
    // docs/API.md, "Trust model: the peer channel".
    let r: Option<Value> = client
        .leader_first()
        .await
        .call(Method::PATCH, &format!("/v1/nodes/{id}"), Some(req))
        .await?;
    if out_json {
        return print_json(&r.unwrap_or_default());
    }
    let index = write_result(r)?.index;
    let n: RegisteredNode = typed(
        client
            .call(Method::GET, &format!("/v1/nodes/{id}"), NONE)
            .await?
            .unwrap_or_default(),
        "a node",
    )?;
    let caps: Vec<&str> = n.capabilities.iter().map(String::as_str).collect();
    println!(
        "node {id} updated (committed at index {index}): capabilities [{}], budget {} millicores and {} MiB",
        caps.join(", "),
        n.budget.cpu_millicores,
        n.budget.memory_mib
    );
    Ok(())
}

async fn node_remove(client: &Client, out_json: bool, id: u64) -> anyhow::Result<()> {
    let r: Option<Value> = client.call(Method::DELETE, &format!("/v1/nodes/{id}"), NONE).await?;
    if out_json {
        return print_json(&r.unwrap_or_default());
    }
    println!(
        "node {id} removed from the registry (committed at index {})",
        write_result(r)?.index
    );
    Ok(())
}
