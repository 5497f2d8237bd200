//! `cairn mission show|load|append|skip|complete|abort`.

use std::path::Path;
use std::path::PathBuf;

use anyhow::Context;
use cairn::api::AppendGoalsRequest;
use cairn::api::ReplacePlanRequest;
use cairn::client::Client;
use clap::Subcommand;
use reqwest::Method;
use serde_json::json;
use serde_json::Value;

use cairn::api::MissionView;
use cairn::state::Response;

use super::out::float;
use super::out::name_of;
use super::out::print_json;
use super::out::print_write;
use super::out::stale_q;
use super::out::table;
use super::out::typed;
use super::out::variant_of;
use super::out::write_result;
use super::NONE;

#[derive(Subcommand)]
pub enum MissionCmd {
    /// Show the plan, its goals and the effective mode.
    Show {
        /// Read this node's state without a linearizable check.
        #[arg(long)]
        stale: bool,
    },
    /// Replace the plan with FILE (JSON or TOML: name, frame_id, goals).
    Load {
        /// The plan file.
        file: PathBuf,
        /// Refuse unless the plan is still at this version.
        #[arg(long)]
        expected_version: Option<u64>,
    },
    /// Append the goals of FILE to the plan.
    Append {
        /// A file with `goals` (a plan file works).
        file: PathBuf,
        /// Refuse unless the plan is still at this version.
        #[arg(long)]
        expected_version: Option<u64>,
    },
    /// Mark a pending goal skipped.
    Skip {
        /// Goal id.
        goal: u64,
    },
    /// Mark a pending goal reached.
    Complete {
        /// Goal id.
        goal: u64,
    },
    /// Stop the active plan.
    Abort {
        /// Why.
        #[arg(long, default_value = "aborted by the operator")]
        reason: String,
        /// Refuse unless the plan is still at this version.
        #[arg(long)]
        expected_version: Option<u64>,
    },
}

fn read_plan_file(path: &Path) -> anyhow::Result<Value> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    if path.extension().is_some_and(|e| e == "toml") {
        let v: toml::Value = toml::from_str(&text).with_context(|| format!("{} is not TOML", path.display()))?;
        Ok(serde_json::to_value(v)?)
    } else {
        serde_json::from_str(&text).with_context(|| format!("{} is not JSON", path.display()))
    }
}

/// Runs `cmd`.
pub async fn run(client: &Client, out_json: bool, cmd: MissionCmd) -> anyhow::Result<()> {
    match cmd {
        MissionCmd::Show { stale } => {
            let r: Value = client
                .call(Method::GET, &format!("/v1/mission{}", stale_q(stale)), NONE)
                .await?
                .unwrap_or_default();
            if out_json {
                return print_json(&r);
            }
            let MissionView { plan: p, effective: e } = typed(r, "the mission")?;
            println!(
                "plan {:?} (version {}, frame {}): {}",
                p.name,
                p.version,
                p.frame_id,
                name_of(&p.status)
            );
            println!(
                "effective mode: {} (speed factor {}, max {} m/s)",
                name_of(&e.mode),
                float(e.speed_factor),
                float(e.max_speed_mps)
            );
            let rows: Vec<Vec<String>> = p
                .goals
                .iter()
                .map(|g| {
                    vec![
                        g.id.to_string(),
                        variant_of(&g.kind),
                        name_of(&g.status),
                        float(g.tolerance.position_m),
                    ]
                })
                .collect();
            if !rows.is_empty() {
                println!();
                table(&["GOAL", "KIND", "STATUS", "TOLERANCE (m)"], &rows);
            }
        }
        MissionCmd::Load { file, expected_version } => {
            let v = read_plan_file(&file)?;
            let mut req: ReplacePlanRequest = serde_json::from_value(v)
                .with_context(|| format!("{} is not a plan (name, frame_id, goals)", file.display()))?;
            if expected_version.is_some() {
                req.expected_version = expected_version;
            }
            let r: Option<Value> = client.call(Method::PUT, "/v1/mission/plan", Some(&req)).await?;
            if out_json {
                return print_json(&r.unwrap_or_default());
            }
            let r = write_result(r)?;
            let version = match r.response {
                Response::PlanChanged { version, .. } => version.to_string(),
                _ => "-".into(),
            };
            println!(
                "plan {:?} loaded: version {version}, {} goal(s) (committed at index {})",
                req.name,
                req.goals.len(),
                r.index
            );
        }
        MissionCmd::Append { file, expected_version } => {
            let v = read_plan_file(&file)?;
            let goals = v.get("goals").cloned().context("the file has no `goals`")?;
            let req: AppendGoalsRequest =
                serde_json::from_value(json!({ "expected_version": expected_version, "goals": goals }))
                    .with_context(|| format!("{}: goals do not parse", file.display()))?;
            let r: Option<Value> = client.call(Method::POST, "/v1/mission/goals", Some(&req)).await?;
            print_write(out_json, &format!("{} goal(s) appended", req.goals.len()), r)?;
        }
        MissionCmd::Skip { goal } => {
            let r: Option<Value> = client
                .call(
                    Method::POST,
                    &format!("/v1/mission/goals/{goal}/skip"),
                    Some(&json!({})),
                )
                .await?;
            print_write(out_json, &format!("goal {goal} skipped"), r)?;
        }
        MissionCmd::Complete { goal } => {
            let r: Option<Value> = client
                .call(
                    Method::POST,
                    &format!("/v1/mission/goals/{goal}/complete"),
                    Some(&json!({})),
                )
                .await?;
            print_write(out_json, &format!("goal {goal} reached"), r)?;
        }
        MissionCmd::Abort {
            reason,
            expected_version,
        } => {
            let body = json!({ "reason": reason, "expected_version": expected_version });
            let r: Option<Value> = client.call(Method::POST, "/v1/mission/abort", Some(&body)).await?;
            print_write(out_json, "plan aborted", r)?;
        }
    }
    Ok(())
}
