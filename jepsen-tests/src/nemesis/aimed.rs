//! Power cuts aimed at a moment (the `power-aimed` nemesis; issue 20):
//! while a node saves a snapshot, while the leader changes membership,
//! while a deposed leader truncates its log. A random cut rarely lands in
//! these windows, and they are where a missing fsync or a wrong order of
//! writes would lose or resurrect data.
//!
//! Each aim slows the target's fsyncs to [`WIDEN`] for the fault, so the
//! window lasts at least ~100 ms, and watches the target's log for the
//! line that opens it ("building snapshot", "truncate log"; raft-core logs
//! both at info). A cut that missed its moment is still made, recorded as
//! missed, and the step counts as not injected for its family: a run where
//! every aim of a family missed is inconclusive.

use std::time::Duration;

use rand::Rng;
use serde_json::json;
use tokio::time::Instant;

use super::Nemesis;
use crate::cluster::Cluster;
use crate::error::Error;

/// Snapshot every this many entries in a `power-aimed` run (the default,
/// 10,000, is never reached in a run of seconds).
pub const AIMED_SNAPSHOT_EVERY: u64 = 20;
/// Entries kept behind a snapshot in a `power-aimed` run: the rest is
/// purged right after each snapshot.
pub const AIMED_LOGS_KEPT: u64 = 10;
/// The target's fsync delay while an aim is open.
const WIDEN: &str = "100..250ms";
/// How long an aim waits for its moment.
const AIM_WITHIN: Duration = Duration::from_secs(5);
/// How often the target's log is read while waiting.
const POLL: Duration = Duration::from_millis(5);

impl Nemesis {
    /// Cut a node (or every node) while it saves a snapshot.
    pub(super) async fn power_in_snapshot(&mut self, cluster: &mut Cluster, all: bool) -> Result<(), Error> {
        const FAMILY: &str = "power-in-snapshot";
        if !self.need_faultfs(cluster, "power cut in a snapshot") {
            return Ok(());
        }
        let Some(t) = self.random_up(cluster) else {
            return Ok(());
        };
        if !self.widen(cluster, t).await {
            return Ok(());
        }
        let at = cluster.log_len(t);
        let seen = wait_for_line(cluster, t, at, "building snapshot").await;
        let why = if seen {
            // Inside the slowed save: its synced write takes ≥ 100 ms.
            tokio::time::sleep(Duration::from_millis(self.rng.random_range(0..=60))).await;
            if cluster.log_since(t, at).contains("built snapshot") {
                format!(" just after node {t} saved a snapshot (its log purge next)")
            } else {
                format!(" while node {t} saved a snapshot")
            }
        } else {
            self.miss(format!("no snapshot began on node {t} within {AIM_WITHIN:?}"));
            " (aim missed: no snapshot began)".to_string()
        };
        let (targets, what) = if all {
            (cluster.ids(), "all nodes".to_string())
        } else {
            (vec![t], format!("node {t}"))
        };
        let injected = self.cut_and_restart(cluster, &targets, &what, 0, &why, Some(t)).await?;
        self.count_aim(FAMILY, injected, seen);
        Ok(())
    }

    /// Cut the leader (or every node) while it removes a voter: the
    /// removal is asked, and the cut made 0–120 ms later, while the joint
    /// and final configurations are being written. The voter is added
    /// back when healing.
    pub(super) async fn power_in_membership(&mut self, cluster: &mut Cluster, all: bool) -> Result<(), Error> {
        const FAMILY: &str = "power-in-membership";
        if !self.need_faultfs(cluster, "power cut in a membership change") {
            return Ok(());
        }
        let Some(l) = cluster.leader().await else { return Ok(()) };
        let Some(voters) = cluster.voters(l).await else {
            return Ok(());
        };
        // Never below 3 voters: a 2-voter cluster cannot lose anyone.
        let others: Vec<u64> = voters.iter().copied().filter(|v| *v != l).collect();
        if voters.len() < 3 || others.is_empty() {
            return Ok(());
        }
        let target = others[self.rng.random_range(0..others.len())];
        if !self.widen(cluster, l).await {
            return Ok(());
        }
        let url = format!("http://{}/v1/members/{target}", cluster.node(l).api_addr);
        let ask = tokio::spawn(cluster.http().delete(url).timeout(Duration::from_secs(5)).send());
        let after = self.rng.random_range(0..=120);
        tokio::time::sleep(Duration::from_millis(after)).await;
        // Whatever happens, the removal may have been committed.
        self.active.removed = Some(target);
        let hit = !ask.is_finished();
        let why = if hit {
            format!(" {after} ms after asking it to remove voter {target}, the removal unanswered")
        } else {
            self.miss(format!("the removal of voter {target} was answered within {after} ms"));
            format!(" (aim missed: the removal of voter {target} had been answered)")
        };
        let (targets, what) = if all {
            (cluster.ids(), "all nodes".to_string())
        } else {
            (vec![l], format!("leader {l}"))
        };
        let injected = self.cut_and_restart(cluster, &targets, &what, 0, &why, Some(l)).await?;
        let answer = match ask.await {
            Ok(Ok(r)) => format!("answered {}", r.status()),
            Ok(Err(e)) => format!("no answer ({e})"),
            Err(e) => format!("no answer ({e})"),
        };
        self.rec.event(
            "info",
            format!("removal of voter {target} through leader {l}: {answer}"),
        );
        self.count_aim(FAMILY, injected, hit);
        Ok(())
    }

    /// Cut a deposed leader while it truncates its log: the leader is
    /// isolated while the load goes on (it appends what clients send it,
    /// which can never commit), the others elect a leader and commit, the
    /// partition heals, and the old leader is cut once it logs that it
    /// truncates its own suffix.
    pub(super) async fn power_in_truncation(&mut self, cluster: &mut Cluster) -> Result<(), Error> {
        const FAMILY: &str = "power-in-truncation";
        if !self.need_faultfs(cluster, "power cut in a log truncation") {
            return Ok(());
        }
        let Some(l) = cluster.leader().await else { return Ok(()) };
        if !self.widen(cluster, l).await {
            return Ok(());
        }
        cluster.partition(|a, b| (a == l) == (b == l))?;
        // A suffix of its own, whatever the load sends it: declarations
        // sent straight to it, which it appends and can never commit (not
        // awaited; their names are outside what the checkers read).
        let url = format!("http://{}/v1/params", cluster.node(l).api_addr);
        for i in 0..3 {
            let body = json!({
                "name": format!("aim.truncated.{l}.{}.{i}", self.rng.random::<u32>()),
                "description": "appended by an isolated leader, to be truncated",
                "kind": {"Int": {"min": 0, "max": 1}},
                "value": {"Int": 0},
            });
            let send = cluster
                .http()
                .post(&url)
                .json(&body)
                .timeout(Duration::from_secs(2))
                .send();
            tokio::spawn(send);
        }
        let rest: Vec<u64> = cluster.ids().into_iter().filter(|i| *i != l).collect();
        let deadline = Instant::now() + AIM_WITHIN;
        let mut successor = None;
        while successor.is_none() && Instant::now() < deadline {
            for r in &rest {
                if cluster.status(*r).await.is_some_and(|s| s["role"] == "leader") {
                    successor = Some(*r);
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        // Let the new leader commit while the old one appends alone.
        tokio::time::sleep(Duration::from_millis(300)).await;
        let at = cluster.log_len(l);
        cluster.heal().await?;
        let seen = successor.is_some() && wait_for_line(cluster, l, at, "truncate log").await;
        let why = if seen {
            tokio::time::sleep(Duration::from_millis(self.rng.random_range(0..=60))).await;
            format!(
                " while deposed leader {l} truncated its log (isolated, then node {} led)",
                successor.map_or("?".to_string(), |s| s.to_string())
            )
        } else {
            let reason = match successor {
                None => format!("no other node led within {AIM_WITHIN:?} of isolating leader {l}"),
                Some(_) => format!("deposed leader {l} truncated nothing within {AIM_WITHIN:?}"),
            };
            self.miss(reason);
            " (aim missed: no truncation)".to_string()
        };
        let injected = self
            .cut_and_restart(cluster, &[l], &format!("node {l}"), 0, &why, Some(l))
            .await?;
        self.count_aim(FAMILY, injected, seen);
        Ok(())
    }

    /// Slow node `id`'s fsyncs to [`WIDEN`]; `false` (recorded as not
    /// injected) if its fault filesystem did not take it.
    async fn widen(&mut self, cluster: &Cluster, id: u64) -> bool {
        match cluster.faultfs_request(id, &format!("delay {WIDEN}")).await {
            Ok(_) => true,
            Err(e) => {
                let why = format!("aimed power cut not injected: node {id}'s disk not slowed: {e}");
                self.rec.event("error", why.clone());
                self.not_injected.push(why);
                false
            }
        }
    }

    /// Node `id`'s fsyncs back to the run's base delay.
    pub(super) async fn unwiden(&mut self, cluster: &Cluster, id: u64) {
        let base = cluster.faultfs_base_delay().unwrap_or_else(|| "none".to_string());
        if let Err(e) = cluster.faultfs_request(id, &format!("delay {base}")).await {
            self.rec
                .event("error", format!("node {id}'s disk not back to {base}: {e}"));
        }
    }

    /// Record that the current aim missed its moment (the cut is still
    /// made; the step counts as not injected for its family).
    fn miss(&mut self, why: String) {
        self.rec.event("info", format!("aim missed: {why}"));
        self.missed = Some(why);
    }

    fn count_aim(&mut self, family: &'static str, injected: bool, hit: bool) {
        let e = self.aimed.entry(family).or_default();
        e.0 += usize::from(injected);
        e.1 += usize::from(injected && hit);
    }
}

/// Wait (bounded by [`AIM_WITHIN`]) until node `id`'s log, from byte `at`
/// on, has a line containing `needle`.
async fn wait_for_line(cluster: &Cluster, id: u64, at: u64, needle: &str) -> bool {
    let deadline = Instant::now() + AIM_WITHIN;
    while Instant::now() < deadline {
        if cluster.log_since(id, at).contains(needle) {
            return true;
        }
        tokio::time::sleep(POLL).await;
    }
    false
}
