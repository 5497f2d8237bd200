//! `cairn status`: every endpoint's view and the cluster's health.

use cairn::client::Client;
use cairn::raft::Status;
use reqwest::Method;

use super::exit::Failed;
use super::exit::Unhealthy;
use super::out::opt;
use super::out::strip_scheme;

/// Runs `cairn status`.
pub async fn run(client: &Client, json: bool) -> anyhow::Result<()> {
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
    if json {
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
        return Err(Failed::unavailable("no endpoint answered; is a node running? try --endpoints").into());
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
