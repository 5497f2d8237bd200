//! Raft safety, checked on what the simulated nodes report while they run.
//!
//! Fed with samples (each node's role, term, log and newly applied writes,
//! taken inside the simulation every few simulated milliseconds) and with
//! the client's acknowledgements; every check is incremental, so the
//! harness can run it after every batch of steps and stop at the first
//! violation.
//!
//! - **Election safety**: the leaders of each term, over the whole run.
//!   With `one_leader_per_term` (standard Raft, openraft's `leader_id_std`)
//!   two nodes leading one term is a violation. cairn keeps openraft's
//!   default `leader_id_adv`, where a leader id is `(term, node id)` and a
//!   later candidate may legitimately win the same term, so the harness
//!   counts such terms instead (as the process tier does, docs/CHAOS.md)
//!   and relies on the next check for what election safety protects.
//! - **Leader completeness**: a node seen leading term `T` holds, at its
//!   index, every acknowledged entry that committed in an earlier term
//!   (unless that index is already compacted into its snapshot). Which term
//!   an entry committed in is not observable; the harness bounds it from
//!   above by the highest term any node held when the write was
//!   acknowledged ([`Ack::max_term`]), so the check never accuses a leader
//!   elected before the commit.
//! - **Log matching**: an entry is identified by (index, term, leader); two
//!   observations of the same entry, on any nodes at any times, carry the
//!   same payload, and two logs that share an entry agree on every entry
//!   below it.
//! - **Committed entries never change**: applied writes never disagree
//!   between nodes (or within one node across restarts) at an index, and an
//!   acknowledged write is the one applied at its index.
//! - **Committed entries never lost**: at the end, after healing, every
//!   node has applied every acknowledged write at its index.
//! - **Whole state** ([`Checker::final_states`], every run): at the end,
//!   once every replica has applied the same index, each one's own
//!   applied ledger (read from the node, not pieced together from what was
//!   seen applied) holds every acknowledged write at its index, no two
//!   ledgers hold different writes at one index, and their state hashes
//!   ([`cairn_raft::RaftNode::state_hash`]: ledger, sessions, membership)
//!   are equal. During the run, every state hash a replica reports is
//!   compared with every other reported at the same applied index, on any
//!   node at any time ([`Checker::state_hash`]). A linearizable history of
//!   the clients alone would not see a replica that silently holds other
//!   writes than the one that answered.

use std::collections::BTreeMap;
use std::collections::BTreeSet;
use std::fmt;

use cairn_raft::LogRecord;

/// Which safety property a violation breaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum ViolationKind {
    /// Two nodes led one term (only with `one_leader_per_term`).
    TwoLeadersInTerm,
    /// A leader lacks an acknowledged entry of an earlier term.
    LeaderMissingCommitted,
    /// One entry seen with two payloads, or two logs sharing an entry but
    /// not the entries below it.
    LogMismatch,
    /// Two different writes applied at one index.
    AppliedDiverged,
    /// An acknowledged write is not (or not at its index) in a node's
    /// applied state at the end.
    AckedWriteLost,
    /// Two replicas (or one, at two times) at one applied index with
    /// different state hashes.
    StateDiverged,
}

/// A replica's whole applied state at the end of a run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FinalState {
    /// Its applied index.
    pub applied_index: u64,
    /// Its state hash at that index ([`cairn_raft::StateHash::sha256`]).
    pub sha256: String,
    /// Its ledger: log index → (value, term).
    pub ledger: BTreeMap<u64, (u64, u64)>,
}

/// One safety violation, with what was seen.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Violation {
    /// The property.
    pub kind: ViolationKind,
    /// Simulated time of the observation, ms.
    pub at_ms: u64,
    /// What was seen.
    pub message: String,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?} at {} ms: {}", self.kind, self.at_ms, self.message)
    }
}

/// A write the client saw acknowledged.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ack {
    /// The unique value written.
    pub value: u64,
    /// Log index it committed at.
    pub index: u64,
    /// Term of its entry.
    pub term: u64,
    /// The highest term any node held when the write was acknowledged. The
    /// write committed in that term or an earlier one, so every leader of a
    /// later term must hold it. The entry's own term is not enough: a
    /// leader of term 1 may append it, lose leadership before it commits,
    /// and commit it as the leader of term 3, while a node elected in term
    /// 2 (before that commit) legitimately never had it (docs/CHAOS.md F9).
    pub max_term: u64,
}

/// The incremental checker.
#[derive(Debug, Default)]
pub struct Checker {
    one_leader_per_term: bool,
    leaders: BTreeMap<u64, BTreeSet<u64>>,
    /// (index, term, leader) → payload, across all nodes and times.
    entries: BTreeMap<(u64, u64, u64), Vec<u8>>,
    /// index → (value, term, first node seen applying it).
    applied: BTreeMap<u64, (u64, u64, u64)>,
    acks: Vec<Ack>,
    /// applied index → (state hash, first node seen with it).
    hashes: BTreeMap<u64, (String, u64)>,
    violations: Vec<Violation>,
}

/// Cap on recorded violations: the first few say what broke.
const MAX_VIOLATIONS: usize = 20;
/// ... and of one kind, so each kind that occurred is reported.
const MAX_VIOLATIONS_OF_A_KIND: usize = 5;

impl Checker {
    /// A checker; `one_leader_per_term` as in the module docs.
    pub fn new(one_leader_per_term: bool) -> Self {
        Self {
            one_leader_per_term,
            ..Self::default()
        }
    }

    fn violate(&mut self, kind: ViolationKind, at_ms: u64, message: String) {
        // A run goes on after a violation (to its whole-state check), so
        // the same observation repeats every sample: record it once, and
        // keep room for the other kinds.
        let repeated = self.violations.iter().any(|v| v.kind == kind && v.message == message);
        let of_kind = self.violations.iter().filter(|v| v.kind == kind).count();
        if !repeated && of_kind < MAX_VIOLATIONS_OF_A_KIND && self.violations.len() < MAX_VIOLATIONS {
            self.violations.push(Violation { kind, at_ms, message });
        }
    }

    /// Violations so far.
    pub fn violations(&self) -> &[Violation] {
        &self.violations
    }

    /// Terms in which more than one node was seen leading.
    pub fn multi_leader_terms(&self) -> BTreeMap<u64, BTreeSet<u64>> {
        self.leaders
            .iter()
            .filter(|(_, l)| l.len() > 1)
            .map(|(t, l)| (*t, l.clone()))
            .collect()
    }

    /// Number of terms that had a leader.
    pub fn terms_with_leader(&self) -> usize {
        self.leaders.len()
    }

    /// The client saw `ack` acknowledged; it must be the write applied there.
    pub fn acked(&mut self, at_ms: u64, ack: Ack) {
        if let Some(&(value, term, node)) = self.applied.get(&ack.index) {
            if value != ack.value || term != ack.term {
                self.violate(
                    ViolationKind::AppliedDiverged,
                    at_ms,
                    format!(
                        "write {} acknowledged at index {} (term {}) but node {node} applied value {value} (term {term}) there",
                        ack.value, ack.index, ack.term
                    ),
                );
            }
        }
        self.acks.push(ack);
    }

    /// `node` applied `value` at `index` in `term`.
    pub fn applied(&mut self, at_ms: u64, node: u64, index: u64, value: u64, term: u64) {
        match self.applied.get(&index) {
            None => {
                self.applied.insert(index, (value, term, node));
            }
            Some(&(v, t, first)) if v != value || t != term => self.violate(
                ViolationKind::AppliedDiverged,
                at_ms,
                format!(
                    "index {index}: node {first} applied value {v} (term {t}), node {node} applied value {value} (term {term})"
                ),
            ),
            Some(_) => {}
        }
    }

    /// A sample of `node`: its term, whether it leads, its log (entries at
    /// or below `purged` are compacted away).
    pub fn sample(&mut self, at_ms: u64, node: u64, term: u64, leading: bool, purged: Option<u64>, log: &[LogRecord]) {
        for r in log {
            match self.entries.get(&(r.index, r.term, r.leader)) {
                None => {
                    self.entries.insert((r.index, r.term, r.leader), r.payload.clone());
                }
                Some(p) if *p != r.payload => self.violate(
                    ViolationKind::LogMismatch,
                    at_ms,
                    format!(
                        "entry (index {}, term {}, leader {}) on node {node} differs from the same entry seen before",
                        r.index, r.term, r.leader
                    ),
                ),
                Some(_) => {}
            }
        }
        if !leading {
            return;
        }
        let leaders = self.leaders.entry(term).or_default();
        leaders.insert(node);
        if self.one_leader_per_term && leaders.len() > 1 {
            let l = leaders.clone();
            self.violate(
                ViolationKind::TwoLeadersInTerm,
                at_ms,
                format!("term {term} has leaders {l:?}"),
            );
        }
        let by_index: BTreeMap<u64, &LogRecord> = log.iter().map(|r| (r.index, r)).collect();
        let mut missing = Vec::new();
        for a in &self.acks {
            if a.max_term.max(a.term) >= term || purged.is_some_and(|p| a.index <= p) {
                continue;
            }
            match by_index.get(&a.index) {
                Some(r) if r.term == a.term => {}
                Some(r) => missing.push((
                    a.index,
                    format!(
                        "index {} holds term {} instead of acknowledged write {} (term {})",
                        a.index, r.term, a.value, a.term
                    ),
                )),
                None => missing.push((
                    a.index,
                    format!(
                        "index {} (acknowledged write {}, term {}) is not in its log",
                        a.index, a.value, a.term
                    ),
                )),
            }
        }
        if let Some(first) = missing.first() {
            // What was around it, for whoever debugs this: the leader's log
            // near the first missing index, and who applied what there.
            let idx = first.0;
            let near: Vec<String> = log
                .iter()
                .filter(|r| r.index + 3 >= idx && r.index <= idx + 3)
                .map(|r| format!("{}:t{}n{}", r.index, r.term, r.leader))
                .collect();
            let applied = self.applied.get(&idx);
            let msg = format!(
                "node {node} leads term {term} but {} ({} such entries); its log near there: [{}] (last index {:?}, compacted to {purged:?}); applied there (value, term, first node): {applied:?}",
                first.1,
                missing.len(),
                near.join(" "),
                log.last().map(|r| r.index)
            );
            self.violate(ViolationKind::LeaderMissingCommitted, at_ms, msg);
        }
    }

    /// Log matching across the latest logs of all nodes: two logs that
    /// share an entry agree on every entry below it.
    pub fn logs_match(&mut self, at_ms: u64, logs: &BTreeMap<u64, Vec<LogRecord>>) {
        let ids: Vec<u64> = logs.keys().copied().collect();
        for (i, a) in ids.iter().enumerate() {
            for b in &ids[i + 1..] {
                let la: BTreeMap<u64, (u64, u64)> = logs[a].iter().map(|r| (r.index, (r.term, r.leader))).collect();
                let lb: BTreeMap<u64, (u64, u64)> = logs[b].iter().map(|r| (r.index, (r.term, r.leader))).collect();
                // The highest shared entry; everything below must match.
                let shared = la
                    .iter()
                    .rev()
                    .find(|(idx, id)| lb.get(idx) == Some(id))
                    .map(|(idx, _)| *idx);
                let Some(top) = shared else { continue };
                let bad = la
                    .range(..top)
                    .find(|(idx, id)| lb.get(idx).is_some_and(|other| other != *id));
                if let Some((idx, id)) = bad {
                    let other = lb.get(idx).copied();
                    self.violate(
                        ViolationKind::LogMismatch,
                        at_ms,
                        format!(
                            "nodes {a} and {b} share the entry at index {top} but differ at index {idx}: (term, leader) {id:?} vs {other:?}"
                        ),
                    );
                }
            }
        }
    }

    /// `node` reported state hash `sha256` at `applied_index`: every replica
    /// at that index, at any time, must report the same.
    pub fn state_hash(&mut self, at_ms: u64, node: u64, applied_index: u64, sha256: &str) {
        match self.hashes.get(&applied_index) {
            None => {
                self.hashes.insert(applied_index, (sha256.to_string(), node));
            }
            Some((h, first)) if h != sha256 => {
                let msg = format!(
                    "at applied index {applied_index}: node {first} had state hash {}, node {node} has {}",
                    h.get(..16).unwrap_or(h),
                    sha256.get(..16).unwrap_or(sha256)
                );
                self.violate(ViolationKind::StateDiverged, at_ms, msg);
            }
            Some(_) => {}
        }
    }

    /// The end of a run, on every replica's own final state: equal hashes at
    /// one applied index ([`Checker::state_hash`]), no two replicas holding
    /// different writes at one index, and every acknowledged write in every
    /// replica at its index ([`Checker::finish`]).
    pub fn final_states(&mut self, at_ms: u64, states: &BTreeMap<u64, FinalState>) {
        for (node, st) in states {
            self.state_hash(at_ms, *node, st.applied_index, &st.sha256);
        }
        let nodes: Vec<u64> = states.keys().copied().collect();
        for (i, a) in nodes.iter().enumerate() {
            for b in &nodes[i + 1..] {
                let (la, lb) = (&states[a].ledger, &states[b].ledger);
                let differ: Vec<u64> = la
                    .iter()
                    .filter(|(idx, w)| lb.get(idx).is_some_and(|other| other != *w))
                    .map(|(idx, _)| *idx)
                    .collect();
                if let Some(&first) = differ.first() {
                    let msg = format!(
                        "final state: nodes {a} and {b} hold different writes at {} indexes, first at index {first}: (value, term) {:?} vs {:?}",
                        differ.len(),
                        la[&first],
                        lb[&first]
                    );
                    self.violate(ViolationKind::AppliedDiverged, at_ms, msg);
                }
            }
        }
        let ledgers: BTreeMap<u64, BTreeMap<u64, (u64, u64)>> =
            states.iter().map(|(n, st)| (*n, st.ledger.clone())).collect();
        self.finish(at_ms, &ledgers);
    }

    /// The end of a run: every node's applied ledger must hold every
    /// acknowledged write at its index.
    pub fn finish(&mut self, at_ms: u64, ledgers: &BTreeMap<u64, BTreeMap<u64, (u64, u64)>>) {
        for (node, ledger) in ledgers {
            let lost: Vec<&Ack> = self
                .acks
                .iter()
                .filter(|a| ledger.get(&a.index) != Some(&(a.value, a.term)))
                .collect();
            if let Some(first) = lost.first() {
                let found = ledger.get(&first.index);
                let msg = format!(
                    "node {node} lacks {} acknowledged writes; first: value {} at index {} (term {}), found {found:?}",
                    lost.len(),
                    first.value,
                    first.index,
                    first.term
                );
                self.violate(ViolationKind::AckedWriteLost, at_ms, msg);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(index: u64, term: u64, leader: u64, payload: u8) -> LogRecord {
        LogRecord {
            index,
            term,
            leader,
            payload: vec![payload],
        }
    }

    fn kinds(c: &Checker) -> Vec<ViolationKind> {
        c.violations().iter().map(|v| v.kind).collect()
    }

    #[test]
    fn a_healthy_history_passes() {
        let mut c = Checker::new(true);
        let log = vec![rec(1, 1, 1, 0), rec(2, 1, 1, 1), rec(3, 2, 2, 2)];
        c.sample(0, 1, 1, true, None, &log[..2]);
        c.applied(1, 1, 2, 10, 1);
        c.acked(
            1,
            Ack {
                value: 10,
                index: 2,
                term: 1,
                max_term: 1,
            },
        );
        c.sample(5, 2, 2, true, None, &log);
        c.sample(5, 1, 2, false, None, &log);
        c.logs_match(5, &BTreeMap::from([(1, log.clone()), (2, log.clone())]));
        c.applied(6, 2, 2, 10, 1);
        let ledger = BTreeMap::from([(2, (10, 1))]);
        c.finish(9, &BTreeMap::from([(1, ledger.clone()), (2, ledger)]));
        assert!(c.violations().is_empty(), "{:?}", c.violations());
    }

    #[test]
    fn two_leaders_in_one_term_fail_in_strict_mode_and_are_counted_otherwise() {
        for strict in [true, false] {
            let mut c = Checker::new(strict);
            c.sample(0, 1, 3, true, None, &[]);
            c.sample(1, 2, 3, true, None, &[]);
            assert_eq!(c.multi_leader_terms().len(), 1);
            let expected = if strict {
                vec![ViolationKind::TwoLeadersInTerm]
            } else {
                vec![]
            };
            assert_eq!(kinds(&c), expected, "strict = {strict}");
        }
    }

    #[test]
    fn a_lost_acknowledged_write_fails() {
        let mut c = Checker::new(false);
        c.acked(
            0,
            Ack {
                value: 7,
                index: 4,
                term: 1,
                max_term: 1,
            },
        );
        // Node 2 applied something else at index 4 and nothing of value 7.
        c.finish(
            10,
            &BTreeMap::from([(1, BTreeMap::from([(4, (7, 1))])), (2, BTreeMap::from([(4, (8, 2))]))]),
        );
        assert_eq!(kinds(&c), vec![ViolationKind::AckedWriteLost]);
        assert!(c.violations()[0].message.contains("node 2"), "{}", c.violations()[0]);
    }

    fn final_state(applied_index: u64, sha256: &str, ledger: &[(u64, u64, u64)]) -> FinalState {
        FinalState {
            applied_index,
            sha256: sha256.into(),
            ledger: ledger.iter().map(|&(i, v, t)| (i, (v, t))).collect(),
        }
    }

    #[test]
    fn replicas_at_one_index_with_different_state_hashes_fail() {
        let mut c = Checker::new(false);
        c.state_hash(0, 1, 5, "aaaa");
        c.state_hash(1, 2, 6, "bbbb");
        c.state_hash(2, 3, 5, "aaaa");
        assert!(c.violations().is_empty(), "{:?}", c.violations());
        c.state_hash(3, 2, 5, "cccc");
        assert_eq!(kinds(&c), vec![ViolationKind::StateDiverged]);
        // Seen again on the next sample: reported once.
        c.state_hash(4, 2, 5, "cccc");
        assert_eq!(kinds(&c), vec![ViolationKind::StateDiverged]);
    }

    #[test]
    fn the_final_whole_state_check() {
        let ack = Ack {
            value: 7,
            index: 4,
            term: 1,
            max_term: 1,
        };
        // Equal states holding the acknowledged write: pass.
        let mut c = Checker::new(false);
        c.acked(0, ack);
        let good = final_state(5, "aaaa", &[(4, 7, 1)]);
        c.final_states(
            9,
            &BTreeMap::from([(1, good.clone()), (2, good.clone()), (3, good.clone())]),
        );
        assert!(c.violations().is_empty(), "{:?}", c.violations());

        // Issue 25's end state: the restarted leader re-used index 4 for
        // another write; its followers kept the acknowledged one. Each
        // follower differs from it (twice AppliedDiverged, StateDiverged).
        let mut c = Checker::new(false);
        c.acked(0, ack);
        let lost = final_state(5, "bbbb", &[(4, 8, 1)]);
        c.final_states(9, &BTreeMap::from([(1, lost), (2, good.clone()), (3, good)]));
        let mut k = kinds(&c);
        k.sort();
        assert_eq!(
            k,
            vec![
                ViolationKind::AppliedDiverged,
                ViolationKind::AppliedDiverged,
                ViolationKind::AckedWriteLost,
                ViolationKind::StateDiverged,
                ViolationKind::StateDiverged
            ],
            "{:?}",
            c.violations()
        );
    }

    #[test]
    fn diverging_applied_writes_fail() {
        let mut c = Checker::new(false);
        c.applied(0, 1, 5, 100, 2);
        c.applied(1, 2, 5, 101, 3);
        assert_eq!(kinds(&c), vec![ViolationKind::AppliedDiverged]);
    }

    #[test]
    fn divergent_logs_fail() {
        // Same entry (index 2, term 1, leader 1) with two payloads.
        let mut c = Checker::new(false);
        c.sample(0, 1, 1, false, None, &[rec(1, 1, 1, 0), rec(2, 1, 1, 1)]);
        c.sample(1, 2, 1, false, None, &[rec(1, 1, 1, 0), rec(2, 1, 1, 9)]);
        assert_eq!(kinds(&c), vec![ViolationKind::LogMismatch]);

        // Shared entry at index 3 but different entries below it.
        let mut c = Checker::new(false);
        let a = vec![rec(1, 1, 1, 0), rec(2, 1, 1, 1), rec(3, 3, 3, 3)];
        let b = vec![rec(1, 1, 1, 0), rec(2, 2, 2, 2), rec(3, 3, 3, 3)];
        c.logs_match(2, &BTreeMap::from([(1, a), (2, b)]));
        assert_eq!(kinds(&c), vec![ViolationKind::LogMismatch]);
    }

    /// A checker that saw write 1 acknowledged at index 3, in an entry of
    /// term 2, while the highest term any node held was `max_term`.
    fn acked_at_3(max_term: u64) -> Checker {
        let mut c = Checker::new(false);
        c.acked(
            0,
            Ack {
                value: 1,
                index: 3,
                term: 2,
                max_term,
            },
        );
        c
    }

    #[test]
    fn a_leader_without_an_acknowledged_entry_fails() {
        let mut c = acked_at_3(2);
        // Leads term 4 with a log that stops at index 2.
        c.sample(1, 3, 4, true, None, &[rec(1, 1, 1, 0), rec(2, 2, 1, 1)]);
        assert_eq!(kinds(&c), vec![ViolationKind::LeaderMissingCommitted]);
        // Compacted into its snapshot: fine.
        let mut c = acked_at_3(2);
        c.sample(1, 3, 4, true, Some(3), &[]);
        assert!(c.violations().is_empty());
    }

    #[test]
    fn a_leader_elected_before_the_commit_may_lack_the_entry() {
        // F9's history: the entry of term 2 was appended by the leader of
        // term 2, which was cut off, and committed only once it led term 5.
        // A node elected in term 4 meanwhile never had it: legal.
        let stale = [rec(1, 1, 1, 0), rec(2, 2, 1, 1), rec(3, 4, 3, 9)];
        let mut c = acked_at_3(5);
        c.sample(1, 3, 4, true, None, &stale);
        assert!(c.violations().is_empty(), "{:?}", c.violations());
        // A leader of a term after every term seen at the acknowledgement
        // was elected after the commit: it must hold the entry.
        c.sample(2, 3, 6, true, None, &stale);
        assert_eq!(kinds(&c), vec![ViolationKind::LeaderMissingCommitted]);
    }
}
