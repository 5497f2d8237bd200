//! `cairn check consistency`: do the replicas hold the same state?
//!
//! Like `etcdctl endpoint hashkv` and etcd's corruption check: every member
//! is asked for the hash of its replicated state at **one** applied index
//! (`GET /v1/state/hash?at=N`, taken right after the node applies entry N,
//! before anything later changes the state), and the hashes are compared.
//! Replicas that applied the same log have equal hashes; a member whose
//! hash differs from the others' at the same index has diverged.
//!
//! Picking N on a cluster that keeps writing: first every member's current
//! hash (`?consistency=stale`); if they all sit at one index, that is the
//! comparison. Otherwise N is the highest applied index seen, plus a margin
//! that grows on each attempt, so that members still behind reach it and
//! the ones ahead of it are not yet past it. A member that is already past
//! N (`hash_passed`) or does not reach it in time sends the check round
//! again, a bounded number of times.

use std::collections::BTreeMap;
use std::time::Duration;

use reqwest::Method;
use serde::Deserialize;
use serde::Serialize;

use crate::api::StateHashView;
use crate::client::Client;
use crate::client::ClientError;

/// How hard `check_consistency` tries.
#[derive(Clone, Debug)]
pub struct CheckOptions {
    /// Rounds before giving up on finding one index all members answer at.
    pub attempts: u32,
    /// How long a member may take to reach the chosen index, per round.
    pub wait: Duration,
}

impl Default for CheckOptions {
    fn default() -> Self {
        Self {
            attempts: 6,
            wait: Duration::from_secs(2),
        }
    }
}

/// One member's answer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberHash {
    /// Node id.
    pub id: u64,
    /// Its admin API endpoint.
    pub endpoint: String,
    /// The SHA-256 of its state at the compared index; `None` if it did not
    /// answer there (see `error`).
    pub sha256: Option<String>,
    /// Why it has no hash at the compared index.
    pub error: Option<String>,
}

/// What the check found.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConsistencyReport {
    /// The applied index every hash was taken at.
    pub index: u64,
    /// Every member, by id.
    pub members: Vec<MemberHash>,
    /// The hash most members agree on (a strict majority), if any.
    pub majority: Option<String>,
    /// Members whose hash differs from the majority's (or, without a
    /// majority, every member that answered): the diverged replicas.
    pub diverged: Vec<u64>,
    /// Members that gave no hash at `index` (down, too slow, or past it).
    pub unanswered: Vec<u64>,
}

impl ConsistencyReport {
    /// Every member answered and all hashes are equal.
    pub fn consistent(&self) -> bool {
        self.diverged.is_empty() && self.unanswered.is_empty()
    }

    fn from_answers(index: u64, answers: Vec<(u64, String, Result<String, String>)>) -> Self {
        let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
        for (_, _, a) in &answers {
            if let Ok(h) = a {
                *counts.entry(h.as_str()).or_default() += 1;
            }
        }
        let majority = counts
            .iter()
            .find(|(_, n)| **n * 2 > answers.len())
            .map(|(h, _)| h.to_string());
        let diverged = answers
            .iter()
            .filter_map(|(id, _, a)| match (a, &majority) {
                (Ok(h), Some(m)) if h != m => Some(*id),
                // No majority among several answers: nobody can be trusted.
                (Ok(_), None) if counts.len() > 1 => Some(*id),
                _ => None,
            })
            .collect();
        let unanswered = answers
            .iter()
            .filter(|(_, _, a)| a.is_err())
            .map(|(id, _, _)| *id)
            .collect();
        let members = answers
            .into_iter()
            .map(|(id, endpoint, a)| {
                let (sha256, error) = match a {
                    Ok(h) => (Some(h), None),
                    Err(e) => (None, Some(e)),
                };
                MemberHash {
                    id,
                    endpoint,
                    sha256,
                    error,
                }
            })
            .collect();
        Self {
            index,
            members,
            majority,
            diverged,
            unanswered,
        }
    }
}

/// Why the check could not compare anything.
#[derive(Debug, thiserror::Error)]
pub enum CheckError {
    /// No endpoint told us the membership.
    #[error("cannot read the membership")]
    Membership(#[source] ClientError),
    /// The membership has no members (cluster not initialised).
    #[error("the cluster has no members yet (run `cairn cluster init` first)")]
    NoMembers,
}

/// Compare the replicated state of every member at one applied index.
///
/// A member that is down is reported in [`ConsistencyReport::unanswered`],
/// not as an error: the others are still compared.
pub async fn check_consistency(client: &Client, opts: &CheckOptions) -> Result<ConsistencyReport, CheckError> {
    let status: crate::Status = client
        .call(Method::GET, "/v1/status", None::<&()>)
        .await
        .map_err(CheckError::Membership)?
        .ok_or_else(|| {
            CheckError::Membership(ClientError::Protocol {
                endpoint: "status".into(),
                reason: "empty response".into(),
            })
        })?;
    let scheme = match client.endpoints().first() {
        Some(ep) if ep.starts_with("https://") => "https",
        _ => "http",
    };
    let members: Vec<(u64, String)> = status
        .members
        .iter()
        .map(|m| (m.id, format!("{scheme}://{}", m.member.api_addr)))
        .collect();
    if members.is_empty() {
        return Err(CheckError::NoMembers);
    }

    let mut last = None;
    for attempt in 0..opts.attempts.max(1) {
        let now = hashes(client, &members, "?consistency=stale").await;
        let indexes: Vec<u64> = now
            .iter()
            .filter_map(|(_, _, a)| a.as_ref().ok())
            .map(|h| h.applied_index)
            .collect();
        let Some(&max) = indexes.iter().max() else {
            // Nobody answered: report that.
            let report = ConsistencyReport::from_answers(0, strip(now));
            last = Some(report);
            continue;
        };
        if indexes.len() == members.len() && indexes.iter().all(|i| *i == max) {
            return Ok(ConsistencyReport::from_answers(max, strip(now)));
        }
        // A moving (or lagging) cluster: one index ahead of everyone.
        let margin = if attempt == 0 { 0 } else { 1u64 << (2 * attempt.min(8)) };
        let at = max + margin;
        let q = format!("?at={at}&wait_ms={}", opts.wait.as_millis());
        let answers = hashes(client, &members, &q).await;
        let passed = answers
            .iter()
            .any(|(_, _, a)| matches!(a, Err(ClientError::Api { body, .. }) if body.code == "hash_passed"));
        let report = ConsistencyReport::from_answers(at, strip(answers));
        if !report.unanswered.is_empty() && passed {
            last = Some(report);
            continue;
        }
        if report.unanswered.len() < members.len() {
            return Ok(report);
        }
        last = Some(report);
    }
    Ok(last.unwrap_or_else(|| ConsistencyReport::from_answers(0, Vec::new())))
}

type Answer = (u64, String, Result<StateHashView, ClientError>);

async fn hashes(client: &Client, members: &[(u64, String)], query: &str) -> Vec<Answer> {
    let path = format!("/v1/state/hash{query}");
    let calls = members.iter().map(|(id, ep)| {
        let path = path.clone();
        async move {
            let r = client
                .call_one::<(), StateHashView>(ep, Method::GET, &path, None)
                .await
                .and_then(|v| {
                    v.ok_or_else(|| ClientError::Protocol {
                        endpoint: ep.clone(),
                        reason: "empty response".into(),
                    })
                });
            (*id, ep.clone(), r)
        }
    });
    futures::future::join_all(calls).await
}

/// Each member's hash, or why it has none, for the report.
fn strip(answers: Vec<Answer>) -> Vec<(u64, String, Result<String, String>)> {
    answers
        .into_iter()
        .map(|(id, ep, a)| {
            let a = a.map(|h| h.sha256).map_err(|e| match e {
                ClientError::Api { body, .. } => format!("{} ({})", body.message, body.code),
                ClientError::Unreachable { .. } => "unreachable".to_string(),
                other => other.to_string(),
            });
            (id, ep, a)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn a(id: u64, h: Result<&str, &str>) -> (u64, String, Result<String, String>) {
        (id, format!("http://n{id}"), h.map(String::from).map_err(String::from))
    }

    #[test]
    fn the_odd_member_is_named() {
        let r = ConsistencyReport::from_answers(7, vec![a(1, Ok("aa")), a(2, Ok("bb")), a(3, Ok("aa"))]);
        assert_eq!(r.majority.as_deref(), Some("aa"));
        assert_eq!(r.diverged, vec![2]);
        assert!(!r.consistent());
    }

    #[test]
    fn equal_hashes_are_consistent_and_a_silent_member_is_not() {
        let r = ConsistencyReport::from_answers(7, vec![a(1, Ok("aa")), a(2, Ok("aa")), a(3, Ok("aa"))]);
        assert!(r.consistent(), "{r:?}");
        let r = ConsistencyReport::from_answers(7, vec![a(1, Ok("aa")), a(2, Ok("aa")), a(3, Err("unreachable"))]);
        assert!(r.diverged.is_empty());
        assert_eq!(r.unanswered, vec![3]);
        assert!(!r.consistent(), "a member that did not answer is not known to agree");
    }

    #[test]
    fn without_a_majority_every_answer_is_suspect() {
        let r = ConsistencyReport::from_answers(7, vec![a(1, Ok("aa")), a(2, Ok("bb")), a(3, Err("unreachable"))]);
        assert_eq!(r.majority, None);
        assert_eq!(r.diverged, vec![1, 2]);
    }
}
