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

use std::process::ExitCode;

use clap::Parser;

#[tokio::main]
async fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    cli::printing_dies_on_broken_pipe(&cli.command);
    // `node run` sets up its subscriber once its config is read: the span
    // export is configured there.
    if !cli.command.runs_a_node() {
        cli::node::init_logging();
    }
    match cli::run(cli).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(cli::exit::process_exit_code(&e))
        }
    }
}
