//! O(n) invariants over a history. Unlike the linearizability search they
//! always conclude, and each names the promise that broke.

use std::collections::BTreeMap;
use std::collections::BTreeSet;
use std::collections::HashMap;

use serde::Deserialize;
use serde::Serialize;

use super::linear::Violation;
use super::CheckInput;
use crate::history::Op;
use crate::history::OpKind;
use crate::history::Outcome;

/// Which promise broke.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AnomalyKind {
    /// No legal order of a register's operations exists.
    NotLinearizable,
    /// A final read (after healing) does not reflect an acknowledged write
    /// that certainly came after the value it returned.
    LostWrite,
    /// A read returned the value of a write that was reported failed.
    FailedWriteObserved,
    /// A read returned a value nobody wrote.
    PhantomRead,
    /// One write was applied more than once (its value carries two versions).
    DuplicateApply,
    /// One parameter version carries two different values.
    VersionReused,
    /// Two nodes claimed leadership of the same term.
    TwoLeadersInTerm,
    /// A node's term went down.
    TermWentBack,
    /// No final read of a register succeeded after healing.
    NoFinalRead,
    /// Replicas disagree on a register once they applied the same index.
    Diverged,
    /// A deposed task holder actuated after its successor began.
    TwoHolders,
    /// One lease epoch was seen for two (task, node) leases.
    EpochShared,
    /// A task's lease epoch went down between reads ordered in real time.
    EpochWentBack,
    /// A final state leases a task to a node it marks `Down`.
    TaskOnDownNode,
    /// A task never finished after healing.
    TaskStuck,
    /// An acknowledged task submission is missing from a final state.
    LostTask,
    /// A final state holds more unacknowledged tasks than were submitted.
    PhantomTask,
    /// Replicas disagree on the tasks once they applied the same index.
    TasksDiverged,
    /// Replicas at the same applied index hash their whole state
    /// differently.
    StateHashDiverged,
    /// A command the state machine must refuse was acknowledged.
    RefusedCommandAccepted,
    /// A write under the entry limit was refused as too large (413).
    EntryUnderLimitRefused,
    /// A membership command claimed what was not true of a member that is
    /// not running (caught up, promoted), or changed the voters while
    /// reporting a refusal (the ghost nemesis).
    DishonestMembership,
    /// A node's vote went back: it read from disk at start, or stored, a
    /// vote older than one it had stored before (a vote lost to a power
    /// cut; with it the node could vote twice in one term).
    VoteWentBack,
}

/// One finding.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Anomaly {
    /// Which promise broke.
    pub kind: AnomalyKind,
    /// The register involved, if one is.
    pub key: Option<String>,
    /// History indexes of the operations involved.
    pub ops: Vec<usize>,
    /// What was seen, for a person.
    pub message: String,
}

/// One operation as a line of a report.
pub fn describe(op: &Op) -> String {
    let value = op.value.map(|v| v.to_string()).unwrap_or_else(|| "-".into());
    let version = op.version.map(|v| format!(" v{v}")).unwrap_or_default();
    let err = op.error.as_deref().map(|e| format!(" ({e})")).unwrap_or_default();
    let fin = if op.final_read { " [final]" } else { "" };
    format!(
        "#{} p{} n{} {:?} {}={}{} {:?} [{:.3}s..{:.3}s]{}{}",
        op.index,
        op.process,
        op.node,
        op.kind,
        op.key,
        value,
        version,
        op.outcome,
        op.invoke_ns as f64 / 1e9,
        op.complete_ns as f64 / 1e9,
        err,
        fin
    )
}

/// A linearizability violation, told with the operations themselves.
pub fn explain_violation(ops: &[Op], initial: i64, v: &Violation) -> String {
    let by_index: HashMap<usize, &Op> = ops.iter().map(|o| (o.index, o)).collect();
    let show = |i: &usize| {
        by_index
            .get(i)
            .map(|o| describe(o))
            .unwrap_or_else(|| format!("#{i} ?"))
    };
    let mut s = format!(
        "no linearization exists (initial value {initial}); longest linearizable prefix: {} ops, leaving the register at {}\n",
        v.longest_prefix.len(),
        v.state_after_prefix
    );
    let tail = v.longest_prefix.len().saturating_sub(6);
    s.push_str("  last ops of that prefix:\n");
    for i in &v.longest_prefix[tail..] {
        s.push_str(&format!("    {}\n", show(i)));
    }
    s.push_str("  none of these can come next (the first could not be placed before it completed):\n");
    for i in &v.stuck {
        s.push_str(&format!("    {}\n", show(i)));
    }
    s
}

/// Every O(n) check.
pub fn check_all(input: &CheckInput) -> Vec<Anomaly> {
    let mut out = Vec::new();
    out.extend(reads_of_unknown_or_failed_writes(&input.ops, input.initial));
    out.extend(lost_writes(&input.ops, input.initial));
    out.extend(versions(&input.ops));
    out.extend(leaders(input));
    out.extend(convergence(input));
    out.extend(state_hashes(input));
    out
}

fn writes_by_value(ops: &[Op]) -> HashMap<(&str, i64), &Op> {
    ops.iter()
        .filter(|o| o.kind == OpKind::Write)
        .filter_map(|o| o.value.map(|v| ((o.key.as_str(), v), o)))
        .collect()
}

fn ok_reads(ops: &[Op]) -> impl Iterator<Item = &Op> {
    ops.iter()
        .filter(|o| o.kind == OpKind::Read && o.outcome == Outcome::Ok)
}

/// A read must return the initial value or a value some write that did
/// not fail wrote.
fn reads_of_unknown_or_failed_writes(ops: &[Op], initial: i64) -> Vec<Anomaly> {
    let writes = writes_by_value(ops);
    let mut out = Vec::new();
    let mut reported = BTreeSet::new();
    for r in ok_reads(ops) {
        let Some(v) = r.value else { continue };
        if v == initial || !reported.insert((r.key.clone(), v)) {
            continue;
        }
        match writes.get(&(r.key.as_str(), v)) {
            None => out.push(Anomaly {
                kind: AnomalyKind::PhantomRead,
                key: Some(r.key.clone()),
                ops: vec![r.index],
                message: format!("read returned {v}, which no client wrote: {}", describe(r)),
            }),
            Some(w) if w.outcome == Outcome::Fail => out.push(Anomaly {
                kind: AnomalyKind::FailedWriteObserved,
                key: Some(r.key.clone()),
                ops: vec![w.index, r.index],
                message: format!(
                    "a write reported as failed took effect:\n    {}\n    {}",
                    describe(w),
                    describe(r)
                ),
            }),
            Some(_) => {}
        }
    }
    out
}

/// Each successful final read returns the value of write `w` (or the
/// initial value). An acknowledged write invoked after `w` was acknowledged
/// must have overwritten it: if the final read still shows `w`, that later
/// write was lost.
fn lost_writes(ops: &[Op], initial: i64) -> Vec<Anomaly> {
    let writes = writes_by_value(ops);
    let mut out = Vec::new();
    let keys: BTreeSet<&str> = ops.iter().map(|o| o.key.as_str()).collect();
    for key in keys {
        let finals: Vec<&Op> = ok_reads(ops).filter(|o| o.final_read && o.key == key).collect();
        if finals.is_empty() {
            out.push(Anomaly {
                kind: AnomalyKind::NoFinalRead,
                key: Some(key.to_string()),
                ops: vec![],
                message: format!("no final read of {key} succeeded after healing: the cluster did not recover"),
            });
            continue;
        }
        for r in finals {
            let Some(v) = r.value else { continue };
            // The acknowledgement time of the write the final read reflects;
            // an indeterminate write may have applied arbitrarily late.
            // `None`: the initial value, which every acknowledged write overwrote.
            let after_ns = if v == initial {
                None
            } else {
                match writes.get(&(key, v)) {
                    Some(w) if w.outcome == Outcome::Ok => Some(w.complete_ns),
                    _ => continue,
                }
            };
            let lost: Vec<&Op> = ops
                .iter()
                .filter(|w| w.key == key && w.kind == OpKind::Write && w.outcome == Outcome::Ok)
                .filter(|w| after_ns.is_none_or(|t| w.invoke_ns > t) && w.value != Some(v))
                .collect();
            if let Some(last) = lost.last() {
                out.push(Anomaly {
                    kind: AnomalyKind::LostWrite,
                    key: Some(key.to_string()),
                    ops: vec![last.index, r.index],
                    message: format!(
                        "{} acknowledged write(s) of {key} came after the value the final read returned; the last:\n    {}\n    {}",
                        lost.len(),
                        describe(last),
                        describe(r)
                    ),
                });
                break;
            }
        }
    }
    out
}

/// Parameter versions are global and bumped once per applied change: one
/// version names one (key, value), and a value (written once, by one op)
/// has one version. Two versions for a value mean a write applied twice.
fn versions(ops: &[Op]) -> Vec<Anomaly> {
    let mut by_version: BTreeMap<u64, BTreeMap<(String, i64), usize>> = BTreeMap::new();
    let mut by_value: BTreeMap<(String, i64), BTreeMap<u64, usize>> = BTreeMap::new();
    for o in ops.iter().filter(|o| o.outcome == Outcome::Ok) {
        let (Some(v), Some(ver)) = (o.value, o.version) else {
            continue;
        };
        by_version
            .entry(ver)
            .or_default()
            .entry((o.key.clone(), v))
            .or_insert(o.index);
        by_value
            .entry((o.key.clone(), v))
            .or_default()
            .entry(ver)
            .or_insert(o.index);
    }
    let show = |i: &usize| ops.iter().find(|o| o.index == *i).map(describe).unwrap_or_default();
    let mut out = Vec::new();
    for ((key, v), vers) in &by_value {
        if vers.len() > 1 {
            out.push(Anomaly {
                kind: AnomalyKind::DuplicateApply,
                key: Some(key.clone()),
                ops: vers.values().copied().collect(),
                message: format!(
                    "value {v} of {key}, written by one operation, was seen at versions {:?}: the write was applied more than once\n{}",
                    vers.keys().collect::<Vec<_>>(),
                    vers.values().map(|i| format!("    {}", show(i))).collect::<Vec<_>>().join("\n")
                ),
            });
        }
    }
    for (ver, vals) in &by_version {
        if vals.len() > 1 {
            out.push(Anomaly {
                kind: AnomalyKind::VersionReused,
                key: None,
                ops: vals.values().copied().collect(),
                message: format!(
                    "parameter version {ver} names different changes {:?}\n{}",
                    vals.keys().collect::<Vec<_>>(),
                    vals.values()
                        .map(|i| format!("    {}", show(i)))
                        .collect::<Vec<_>>()
                        .join("\n")
                ),
            });
        }
    }
    out
}

/// The leaders seen in each term: nodes claiming leadership, and leaders
/// named by followers.
pub fn leaders_per_term(samples: &[crate::history::StatusSample]) -> BTreeMap<u64, BTreeSet<u64>> {
    let mut out: BTreeMap<u64, BTreeSet<u64>> = BTreeMap::new();
    for s in samples {
        let leader = if s.role == "leader" { Some(s.node) } else { s.leader };
        if let Some(l) = leader {
            out.entry(s.term).or_default().insert(l);
        }
    }
    out
}

/// At most one leader per term (only with `one_leader_per_term`), and no
/// node's term ever decreases, restarts included (the vote is durable),
/// unless its data dir was wiped in between.
fn leaders(input: &CheckInput) -> Vec<Anomaly> {
    let mut out = Vec::new();
    if input.one_leader_per_term {
        for (term, leaders) in leaders_per_term(&input.samples) {
            if leaders.len() > 1 {
                out.push(Anomaly {
                    kind: AnomalyKind::TwoLeadersInTerm,
                    key: None,
                    ops: vec![],
                    message: format!("term {term} has leaders {leaders:?} (status samples)"),
                });
            }
        }
    }
    // Keyed by data generation too: a wiped node starts over at term 0,
    // legitimately (it rejoins as a new member).
    let mut last: BTreeMap<(u64, u32), (u64, u64)> = BTreeMap::new();
    let mut samples: Vec<_> = input.samples.iter().collect();
    samples.sort_by_key(|s| s.t_ns);
    for s in samples {
        if let Some(&(term, t)) = last.get(&(s.node, s.data_generation)) {
            if s.term < term {
                out.push(Anomaly {
                    kind: AnomalyKind::TermWentBack,
                    key: None,
                    ops: vec![],
                    message: format!(
                        "node {} was in term {term} at {:.3}s and in term {} at {:.3}s (incarnation {})",
                        s.node,
                        t as f64 / 1e9,
                        s.term,
                        s.t_ns as f64 / 1e9,
                        s.incarnation
                    ),
                });
            }
        }
        let e = last.entry((s.node, s.data_generation)).or_insert((s.term, s.t_ns));
        if s.term >= e.0 {
            *e = (s.term, s.t_ns);
        }
    }
    out
}

/// Once every node applied the same index, their registers agree.
fn convergence(input: &CheckInput) -> Vec<Anomaly> {
    let mut out = Vec::new();
    let keys: BTreeSet<&String> = input.converged.values().flat_map(|m| m.keys()).collect();
    for key in keys {
        let values: BTreeMap<u64, Option<i64>> = input
            .converged
            .iter()
            .map(|(n, m)| (*n, m.get(key).copied().flatten()))
            .collect();
        let distinct: BTreeSet<Option<i64>> = values.values().copied().collect();
        if distinct.len() > 1 {
            out.push(Anomaly {
                kind: AnomalyKind::Diverged,
                key: Some(key.clone()),
                ops: vec![],
                message: format!("replicas at the same applied index disagree on {key}: {values:?}"),
            });
        }
    }
    out
}

/// Nodes that applied the same index hold byte-identical replicated state:
/// their state hashes agree. Hashes are compared only within one applied
/// index (nodes apply at different moments; the run takes them once all
/// report the same index, so normally there is one group). Each group with
/// more than one hash is an anomaly naming which nodes hold which hash.
fn state_hashes(input: &CheckInput) -> Vec<Anomaly> {
    let mut by_index: BTreeMap<u64, BTreeMap<&str, Vec<u64>>> = BTreeMap::new();
    for (node, h) in &input.state_hashes {
        by_index
            .entry(h.applied_index)
            .or_default()
            .entry(h.sha256.as_str())
            .or_default()
            .push(*node);
    }
    by_index
        .into_iter()
        .filter(|(_, hashes)| hashes.len() > 1)
        .map(|(index, hashes)| {
            let groups: Vec<String> = hashes
                .iter()
                .map(|(h, nodes)| format!("nodes {nodes:?} sha256 {}", h.get(..16).unwrap_or(h)))
                .collect();
            Anomaly {
                kind: AnomalyKind::StateHashDiverged,
                key: None,
                ops: vec![],
                message: format!(
                    "replicas at applied index {index} hold different states: {}",
                    groups.join("; ")
                ),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checker::tests::op;
    use crate::history::StatusSample;
    use OpKind::*;

    fn kinds(input: &CheckInput) -> Vec<AnomalyKind> {
        check_all(input).into_iter().map(|a| a.kind).collect()
    }

    fn input(ops: Vec<Op>) -> CheckInput {
        CheckInput {
            ops,
            ..Default::default()
        }
    }

    fn final_read(index: usize, key: &str, v: i64, t: (u64, u64)) -> Op {
        let mut o = op(index, Read, key, v, t, Outcome::Ok);
        o.final_read = true;
        o
    }

    #[test]
    fn a_clean_history_has_no_anomaly() {
        let ops = vec![
            op(0, Write, "a", 1, (0, 1), Outcome::Ok),
            op(1, Write, "a", 2, (2, 3), Outcome::Info),
            final_read(2, "a", 2, (10, 11)),
        ];
        assert_eq!(kinds(&input(ops)), vec![]);
    }

    #[test]
    fn a_final_read_missing_a_later_acknowledged_write_is_a_lost_write() {
        let ops = vec![
            op(0, Write, "a", 1, (0, 1), Outcome::Ok),
            op(1, Write, "a", 2, (2, 3), Outcome::Ok),
            final_read(2, "a", 1, (10, 11)),
        ];
        let found = check_all(&input(ops));
        assert_eq!(found.len(), 1, "{found:#?}");
        assert_eq!(found[0].kind, AnomalyKind::LostWrite);
        assert_eq!(found[0].ops, vec![1, 2], "names the lost write and the final read");
    }

    #[test]
    fn a_final_read_of_the_initial_value_after_an_ack_is_a_lost_write() {
        let ops = vec![
            op(0, Write, "a", 1, (0, 1), Outcome::Ok),
            final_read(1, "a", 0, (10, 11)),
        ];
        assert_eq!(kinds(&input(ops)), vec![AnomalyKind::LostWrite]);
    }

    #[test]
    fn concurrent_acknowledged_writes_may_end_in_either_order() {
        let ops = vec![
            op(0, Write, "a", 1, (0, 5), Outcome::Ok),
            op(1, Write, "a", 2, (1, 4), Outcome::Ok),
            final_read(2, "a", 1, (10, 11)),
        ];
        assert_eq!(kinds(&input(ops)), vec![]);
    }

    #[test]
    fn no_final_read_is_reported() {
        let ops = vec![op(0, Write, "a", 1, (0, 1), Outcome::Ok)];
        assert_eq!(kinds(&input(ops)), vec![AnomalyKind::NoFinalRead]);
    }

    #[test]
    fn reading_a_failed_write_or_a_value_nobody_wrote_is_caught() {
        let ops = vec![
            op(0, Write, "a", 1, (0, 1), Outcome::Fail),
            op(1, Read, "a", 1, (2, 3), Outcome::Ok),
            op(2, Read, "a", 77, (2, 3), Outcome::Ok),
            final_read(3, "a", 0, (10, 11)),
        ];
        assert_eq!(
            kinds(&input(ops)),
            vec![AnomalyKind::FailedWriteObserved, AnomalyKind::PhantomRead]
        );
    }

    #[test]
    fn a_value_seen_at_two_versions_is_a_duplicate_apply() {
        let mut w = op(0, Write, "a", 1, (0, 1), Outcome::Ok);
        w.version = Some(10);
        let mut r1 = op(1, Read, "a", 1, (2, 3), Outcome::Ok);
        r1.version = Some(12);
        let mut f = final_read(2, "a", 1, (10, 11));
        f.version = Some(12);
        assert_eq!(kinds(&input(vec![w, r1, f])), vec![AnomalyKind::DuplicateApply]);
    }

    #[test]
    fn one_version_for_two_values_is_caught() {
        let mut w1 = op(0, Write, "a", 1, (0, 1), Outcome::Ok);
        w1.version = Some(10);
        let mut w2 = op(1, Write, "b", 2, (0, 1), Outcome::Ok);
        w2.version = Some(10);
        let fa = final_read(2, "a", 1, (10, 11));
        let fb = final_read(3, "b", 2, (10, 11));
        assert_eq!(kinds(&input(vec![w1, w2, fa, fb])), vec![AnomalyKind::VersionReused]);
    }

    fn sample(t: u64, node: u64, role: &str, term: u64, leader: Option<u64>) -> StatusSample {
        StatusSample {
            t_ns: t,
            node,
            incarnation: 0,
            data_generation: 0,
            role: role.into(),
            term,
            leader,
            committed_index: None,
            applied_index: None,
        }
    }

    #[test]
    fn two_leaders_in_one_term_and_a_term_going_back_are_caught() {
        let mut i = CheckInput {
            one_leader_per_term: true,
            samples: vec![
                sample(0, 1, "leader", 3, Some(1)),
                sample(1, 2, "follower", 3, Some(1)),
                sample(2, 3, "leader", 4, Some(3)),
                sample(3, 1, "follower", 4, Some(3)),
            ],
            ..Default::default()
        };
        assert_eq!(kinds(&i), vec![], "a clean leader change");
        i.samples.push(sample(4, 2, "leader", 4, Some(2)));
        i.samples.push(sample(5, 3, "follower", 2, Some(1)));
        let found = kinds(&i);
        assert!(found.contains(&AnomalyKind::TwoLeadersInTerm), "{found:?}");
        assert!(found.contains(&AnomalyKind::TermWentBack), "{found:?}");
        i.one_leader_per_term = false;
        assert_eq!(
            kinds(&i),
            vec![AnomalyKind::TermWentBack],
            "openraft's default leader ids allow two leaders per term"
        );
        // A wiped node starts over at term 0: not an anomaly; a plain
        // restart that forgets its term is.
        let mut w = CheckInput {
            samples: vec![sample(0, 1, "follower", 5, Some(2)), sample(2, 1, "follower", 0, None)],
            ..Default::default()
        };
        assert_eq!(kinds(&w), vec![AnomalyKind::TermWentBack], "a restart keeps its term");
        w.samples[1].data_generation = 1;
        assert_eq!(kinds(&w), vec![], "a wiped node starts over");
    }

    #[test]
    fn replicas_disagreeing_is_caught() {
        let m = |v: i64| BTreeMap::from([("a".to_string(), Some(v))]);
        let mut i = CheckInput {
            converged: BTreeMap::from([(1, m(5)), (2, m(5)), (3, m(5))]),
            ..Default::default()
        };
        assert_eq!(kinds(&i), vec![]);
        i.converged.insert(3, m(4));
        assert_eq!(kinds(&i), vec![AnomalyKind::Diverged]);
    }

    #[test]
    fn unequal_state_hashes_at_one_index_are_caught_and_name_the_nodes() {
        use crate::checker::StateHash;
        let h = |applied_index: u64, sha256: &str| StateHash {
            applied_index,
            sha256: sha256.into(),
        };
        let mut i = CheckInput {
            state_hashes: BTreeMap::from([(1, h(40, "aaaa")), (2, h(40, "aaaa")), (3, h(40, "aaaa"))]),
            ..Default::default()
        };
        assert_eq!(kinds(&i), vec![], "equal hashes at one index");
        i.state_hashes.insert(2, h(40, "bbbb"));
        let found = check_all(&i);
        assert_eq!(found.len(), 1, "{found:?}");
        assert_eq!(found[0].kind, AnomalyKind::StateHashDiverged);
        let msg = &found[0].message;
        assert!(
            msg.contains("index 40")
                && msg.contains("nodes [1, 3] sha256 aaaa")
                && msg.contains("nodes [2] sha256 bbbb"),
            "{msg}"
        );
        // Different indexes are not comparable: no anomaly, whatever the hashes.
        i.state_hashes.insert(2, h(41, "bbbb"));
        assert_eq!(kinds(&i), vec![], "hashes at different indexes");
    }
}
