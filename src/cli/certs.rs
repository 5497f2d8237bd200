//! `cairn certs init|issue`: the cluster CA and node certificates.

use std::path::PathBuf;

use clap::Subcommand;
use serde_json::json;

use super::out::print_json;

#[derive(Subcommand)]
pub enum CertsCmd {
    /// Create the cluster CA (DIR/ca.pem, DIR/ca.key). Keep ca.key safe.
    Init {
        /// Where to write.
        #[arg(long, default_value = "certs")]
        dir: PathBuf,
        /// Validity in days.
        #[arg(long, default_value_t = 3650)]
        days: u32,
    },
    /// Issue node ID's certificate (DIR/node-ID.pem, DIR/node-ID.key).
    Issue {
        /// Node id.
        id: u64,
        /// Where the CA is and the certificate goes.
        #[arg(long, default_value = "certs")]
        dir: PathBuf,
        /// Another DNS name or IP address the node is reached at (repeat),
        /// e.g. its LAN address for HTTPS on the admin API.
        #[arg(long = "san")]
        sans: Vec<String>,
        /// Validity in days.
        #[arg(long, default_value_t = 730)]
        days: u32,
    },
}

/// Runs `cmd`.
pub fn run(out_json: bool, cmd: CertsCmd) -> anyhow::Result<()> {
    match cmd {
        CertsCmd::Init { dir, days } => {
            let ca = cairn::tls::init_ca(&dir, days)?;
            if out_json {
                return print_json(&json!({ "ca_cert": ca, "ca_key": dir.join(cairn::tls::CA_KEY) }));
            }
            println!(
                "cluster CA written to {} (key {}: keep it off the rover)",
                ca.display(),
                dir.join(cairn::tls::CA_KEY).display()
            );
        }
        CertsCmd::Issue { id, dir, sans, days } => {
            let issued = cairn::tls::issue_node_cert(&dir, id, &sans, i64::from(days))?;
            if out_json {
                return print_json(&json!({ "cert": issued.cert, "key": issued.key, "names": issued.names }));
            }
            println!(
                "node {id}: {} and {} (names: {}); run it with --tls-dir {}",
                issued.cert.display(),
                issued.key.display(),
                issued.names.join(", "),
                dir.display()
            );
        }
    }
    Ok(())
}
