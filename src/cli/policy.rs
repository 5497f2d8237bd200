//! `cairn policy list|set|remove`: degradation policies.

use cairn::client::Client;
use clap::Subcommand;
use reqwest::Method;
use serde_json::json;
use serde_json::Value;

use super::sensor::health_name;

use cairn::state::DegradationPolicy;

use super::out::float;
use super::out::name_of;
use super::out::print_json;
use super::out::print_write;
use super::out::stale_q;
use super::out::table;
use super::out::typed;
use super::NONE;

#[derive(Subcommand)]
pub enum PolicyCmd {
    /// List degradation policies.
    List {
        /// Read this node's state without a linearizable check.
        #[arg(long)]
        stale: bool,
    },
    /// Add or replace the policy for SENSOR at HEALTH.
    Set {
        /// Sensor name.
        sensor: String,
        /// degraded | failed.
        health: String,
        /// normal | reduced | gps-only | stop.
        mode: String,
        /// Speed factor in 0.0..=1.0.
        speed_factor: f64,
    },
    /// Remove the policy for SENSOR at HEALTH.
    Remove {
        /// Sensor name.
        sensor: String,
        /// degraded | failed.
        health: String,
    },
}

/// Runs `cmd`.
pub async fn run(client: &Client, out_json: bool, cmd: PolicyCmd) -> anyhow::Result<()> {
    match cmd {
        PolicyCmd::List { stale } => {
            let r: Value = client
                .call(Method::GET, &format!("/v1/policies{}", stale_q(stale)), NONE)
                .await?
                .unwrap_or_default();
            if out_json {
                return print_json(&r);
            }
            let policies: Vec<DegradationPolicy> = typed(r, "a list of policies")?;
            let rows: Vec<Vec<String>> = policies
                .iter()
                .map(|p| {
                    vec![
                        p.sensor.clone(),
                        name_of(&p.health),
                        name_of(&p.mode),
                        float(p.speed_factor),
                    ]
                })
                .collect();
            table(&["SENSOR", "HEALTH", "MODE", "SPEED FACTOR"], &rows);
        }
        PolicyCmd::Set {
            sensor,
            health,
            mode,
            speed_factor,
        } => {
            let mode = match mode.to_ascii_lowercase().as_str() {
                "normal" => "Normal",
                "reduced" => "Reduced",
                "gps-only" | "gpsonly" => "GpsOnly",
                "stop" => "Stop",
                _ => anyhow::bail!("mode {mode:?}: expected normal, reduced, gps-only or stop"),
            };
            let body = json!({ "sensor": sensor, "health": health_name(&health)?, "mode": mode, "speed_factor": speed_factor });
            let r: Option<Value> = client.call(Method::PUT, "/v1/policies", Some(&body)).await?;
            print_write(out_json, &format!("policy for {sensor} at {health} set"), r)?;
        }
        PolicyCmd::Remove { sensor, health } => {
            let r: Option<Value> = client
                .call(Method::DELETE, &format!("/v1/policies/{sensor}/{health}"), NONE)
                .await?;
            print_write(out_json, &format!("policy for {sensor} at {health} removed"), r)?;
        }
    }
    Ok(())
}
