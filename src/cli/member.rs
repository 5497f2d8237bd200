//! `cairn member add|promote|remove|list|transfer-leader`.

use std::time::Duration;

use cairn::api::AddMemberRequest;
use cairn::client::Client;
use cairn::raft::MemberStatus;
use cairn::raft::Status;
use clap::Subcommand;
use reqwest::Method;

use super::cluster::wait_for_leader;
use super::exit::Failed;
use super::NONE;

#[derive(Subcommand)]
pub enum MemberCmd {
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
    json: bool,
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
                return Err(Failed::like(&e, format!("adding node {id} failed: {e}; {now}")).into());
            }
            Err(e) => return Err(e.into()),
        };
        if json && (wait.is_none() || progress.caught_up) {
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

async fn member_promote(client: &Client, json: bool, id: u64, force: bool) -> anyhow::Result<()> {
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
                Ok(Membership::Changing) => return Err(Failed::unknown(format!(
                    "the outcome of promoting node {id} is unknown: {e}; a membership change is still under way (the new voter set needs a majority of its voters to answer); `cairn status` shows when it is done"
                )).into()),
                Err(read) => return Err(Failed::unknown(format!(
                    "the outcome of promoting node {id} is unknown: {e}; the membership could not be read ({read:#}): check `cairn member list`"
                )).into()),
            }
        }
        Err(e @ cairn::client::ClientError::Api { status: 409, .. }) if e.to_string().contains("not ready to vote") => {
            return Err(Failed::like(
                &e,
                format!("{e}; `cairn member promote {id} --force` promotes it anyway"),
            )
            .into());
        }
        Err(e) => return Err(e.into()),
    }
    Ok(())
}

pub async fn run(client: &Client, json: bool, cmd: MemberCmd) -> anyhow::Result<()> {
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
            member_add(&client, json, id, raft_addr, api_addr, wait).await?;
        }
        MemberCmd::Promote { id, force } => {
            let client = client.leader_first().await;
            member_promote(&client, json, id, force).await?;
        }
        MemberCmd::Remove { id } => {
            let r = client
                .call::<_, serde_json::Value>(Method::DELETE, &format!("/v1/members/{id}"), NONE)
                .await?;
            if json {
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
                Failed::unknown(format!(
                    "leadership transfer to node {to} was requested, but node {to} did not lead within {waited} ms; it may still take over: check `cairn status`"
                ))
            })?;
            if json {
                println!("{}", serde_json::json!({ "to": to, "leader": leader, "term": term }));
            } else {
                println!("node {leader} now leads (term {term})");
            }
        }
        MemberCmd::List => {
            let members: Vec<MemberStatus> = client.call(Method::GET, "/v1/members", NONE).await?.unwrap_or_default();
            if json {
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
