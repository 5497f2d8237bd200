//! `cairn sensor list|report`: sensor health and the effective mode.

use cairn::client::Client;
use clap::Subcommand;
use reqwest::Method;
use serde_json::json;
use serde_json::Value;

use cairn::api::SensorsView;
use cairn::state::Response;

use super::out::float;
use super::out::kebab;
use super::out::name_of;
use super::out::print_json;
use super::out::stale_q;
use super::out::table;
use super::out::typed;
use super::out::when;
use super::out::write_result;
use super::NONE;

#[derive(Subcommand)]
pub enum SensorCmd {
    /// Sensor health reports and the effective mode.
    List {
        /// Read this node's state without a linearizable check.
        #[arg(long)]
        stale: bool,
    },
    /// Record a sensor's health (ok, degraded, failed).
    Report {
        /// Sensor name, e.g. `imu`.
        sensor: String,
        /// ok | degraded | failed.
        health: String,
    },
}

pub(crate) fn health_name(h: &str) -> anyhow::Result<&'static str> {
    Ok(match h.to_ascii_lowercase().as_str() {
        "ok" => "Ok",
        "degraded" => "Degraded",
        "failed" => "Failed",
        _ => anyhow::bail!("health {h:?}: expected ok, degraded or failed"),
    })
}

/// Runs `cmd`.
pub async fn run(client: &Client, out_json: bool, cmd: SensorCmd) -> anyhow::Result<()> {
    match cmd {
        SensorCmd::List { stale } => {
            let r: Value = client
                .call(Method::GET, &format!("/v1/sensors{}", stale_q(stale)), NONE)
                .await?
                .unwrap_or_default();
            if out_json {
                return print_json(&r);
            }
            let SensorsView { sensors, effective: e } = typed(r, "the sensors")?;
            let rows: Vec<Vec<String>> = sensors
                .iter()
                .map(|(name, rep)| vec![name.clone(), name_of(&rep.health), when(rep.reported_at_ms)])
                .collect();
            table(&["SENSOR", "HEALTH", "REPORTED"], &rows);
            println!(
                "\neffective mode: {} (speed factor {}, max {} m/s)",
                name_of(&e.mode),
                float(e.speed_factor),
                float(e.max_speed_mps)
            );
        }
        SensorCmd::Report { sensor, health } => {
            let body = json!({ "health": health_name(&health)? });
            let r: Option<Value> = client
                .call(Method::PUT, &format!("/v1/sensors/{sensor}"), Some(&body))
                .await?;
            if out_json {
                return print_json(&r.unwrap_or_default());
            }
            let (mode, max_speed) = match write_result(r)?.response {
                Response::HealthChanged { effective } => (name_of(&effective.mode), float(effective.max_speed_mps)),
                _ => ("-".into(), "-".into()),
            };
            println!(
                "{sensor} is {}; effective mode now {mode} (max {max_speed} m/s)",
                kebab(health_name(&health)?)
            );
        }
    }
    Ok(())
}
