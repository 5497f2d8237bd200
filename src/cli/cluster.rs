//! `cairn cluster init`, and waiting for a leader.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::Context;
use cairn::api::InitRequest;
use cairn::client::Client;
use cairn::raft::Member;
use cairn::raft::Status;
use clap::Subcommand;
use reqwest::Method;

use super::exit::Failed;

#[derive(Subcommand)]
pub enum ClusterCmd {
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

/// Runs `cmd`.
pub async fn run(client: &Client, json: bool, cmd: ClusterCmd) -> anyhow::Result<()> {
    match cmd {
        ClusterCmd::Init { members, wait } => {
            let mut map = BTreeMap::new();
            for m in &members {
                let (id, member) = parse_member(m)?;
                if map.insert(id, member).is_some() {
                    anyhow::bail!("member {id} is listed twice");
                }
            }
            let ep = first_endpoint(client)?;
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
                let (leader, term) = wait_for_leader(client, None)
                    .await
                    .map_err(|waited| {
                        Failed::unknown(format!(
                            "cluster initialised with {} voter(s) via {ep}, but no leader was elected within {waited} ms; `cairn status` shows when one is",
                            voters.len()
                        ))
                    })?;
                Some((leader, term))
            } else {
                None
            };
            if json {
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
    }
    Ok(())
}

/// Polls `GET /v1/status` (first answering endpoint) until it names a
/// leader (`Some(to)`: that one), within the client's command timeout.
/// `Ok((leader, term))`, or `Err(ms waited)`.
pub(crate) async fn wait_for_leader(client: &Client, to: Option<u64>) -> Result<(u64, u64), u128> {
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
