//! Checks a run's history. Two families:
//!
//! - [`linear`]: linearizability of each register (exponential in the worst
//!   case, bounded by a [`linear::Budget`]; "unknown" past it).
//! - [`domain`]: O(n) invariants that always conclude and name the broken
//!   promise directly: no acknowledged write lost, no failed write observed,
//!   no write applied twice, one leader per term, terms never go back,
//!   replicas converge after healing.
//!
//! A history is checked per key (linearizability is compositional), after
//! [`prepare`] has turned it into what the search needs.

pub mod domain;
pub mod hygiene;
pub mod inserts;
pub mod linear;
pub mod tasks;
pub mod votes;

use std::collections::BTreeMap;
use std::collections::BTreeSet;
use std::collections::HashMap;

use serde::Deserialize;
use serde::Serialize;

use crate::history::Op;
use crate::history::OpKind;
use crate::history::Outcome;
use crate::history::StatusSample;
pub use domain::Anomaly;
pub use domain::AnomalyKind;
use linear::Budget;
use linear::Linearizability;
use linear::RegOp;

/// Everything the checkers look at.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct CheckInput {
    /// The value every register was declared with.
    pub initial: i64,
    /// Client operations, final reads included.
    pub ops: Vec<Op>,
    /// Status samples from the nodes.
    pub samples: Vec<StatusSample>,
    /// Treat two leaders in one term as an anomaly. Off for cairn today:
    /// its openraft type config keeps openraft's default
    /// `leader_id_adv::LeaderId = (term, node_id)`, under which a later
    /// candidate may legitimately win the same term; leaders per term are
    /// then only counted. Turn on for `leader_id_std` (standard Raft).
    #[serde(default)]
    pub one_leader_per_term: bool,
    /// After healing: each node's locally applied value of each register
    /// (stale reads once all nodes applied the same index); empty if the
    /// cluster never converged (reported separately).
    pub converged: BTreeMap<u64, BTreeMap<String, Option<i64>>>,
    /// After healing: each node's hash of its whole replicated state
    /// (`GET /v1/state/hash?consistency=stale`), taken once all nodes
    /// applied the same index; empty if they never did.
    #[serde(default)]
    pub state_hashes: BTreeMap<u64, StateHash>,
}

/// One node's `GET /v1/state/hash` answer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StateHash {
    /// The applied index the hash reflects.
    pub applied_index: u64,
    /// SHA-256 of the encoded replicated state, hex.
    pub sha256: String,
}

/// The verdict on one register.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyVerdict {
    /// Operations the search considered (after [`prepare`]).
    pub ops_checked: usize,
    /// `linearizable`, `violation` or `unknown`.
    pub verdict: String,
    /// For a violation, what the search saw; for unknown, how far it got.
    pub detail: Option<String>,
}

/// All checkers' findings.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct CheckReport {
    /// Linearizability per register.
    pub keys: BTreeMap<String, KeyVerdict>,
    /// Every anomaly found, linearizability violations included.
    pub anomalies: Vec<Anomaly>,
    /// Registers whose search ran out of budget.
    pub unknown: Vec<String>,
    /// Terms in which more than one node led, with the leaders (an anomaly
    /// only under `one_leader_per_term`).
    pub terms_with_several_leaders: BTreeMap<u64, Vec<u64>>,
}

impl CheckReport {
    /// No anomaly and no unknown.
    pub fn is_clean(&self) -> bool {
        self.anomalies.is_empty() && self.unknown.is_empty()
    }
}

/// The operations on `key` as the linearizability search needs them:
///
/// - failed operations and indeterminate reads are dropped (they constrain
///   nothing; a *read* of a failed write's value is caught by [`domain`]);
/// - an indeterminate write nobody read is dropped: "never happened" is
///   always one of its legal outcomes and is equivalent to any other when
///   no read depends on it;
/// - an indeterminate write somebody read must precede the first read that
///   returned its value, so that read's completion bounds it. This keeps
///   every operation's window finite, which is what keeps the search from
///   exploring all subsets of pending writes.
pub fn prepare(ops: &[Op], key: &str) -> Vec<RegOp> {
    let mut first_seen: HashMap<i64, u64> = HashMap::new();
    for op in ops {
        if op.key == key && op.kind == OpKind::Read && op.outcome == Outcome::Ok {
            if let Some(v) = op.value {
                let e = first_seen.entry(v).or_insert(u64::MAX);
                *e = (*e).min(op.complete_ns);
            }
        }
    }
    let mut out = Vec::new();
    for op in ops.iter().filter(|o| o.key == key) {
        let Some(value) = op.value else { continue };
        let ret_ns = match (op.kind, op.outcome) {
            (_, Outcome::Fail) | (OpKind::Read, Outcome::Info) => continue,
            (_, Outcome::Ok) => op.complete_ns,
            (OpKind::Write, Outcome::Info) => match first_seen.get(&value) {
                // Read before it was even sent: leave the window at the call
                // so the search reports it (a read of the future).
                Some(&seen) => seen.max(op.invoke_ns),
                None => continue,
            },
        };
        out.push(RegOp {
            id: op.index,
            kind: op.kind,
            value,
            call_ns: op.invoke_ns,
            ret_ns: Some(ret_ns),
        });
    }
    out
}

/// Run every checker. `budget_per_key` bounds each register's search.
pub fn check(input: &CheckInput, budget_per_key: (u64, f64)) -> CheckReport {
    let mut report = CheckReport::default();
    let keys: BTreeSet<&str> = input.ops.iter().map(|o| o.key.as_str()).collect();
    for key in keys {
        let reg = prepare(&input.ops, key);
        let verdict = linear::check_register(input.initial, &reg, Budget::new(budget_per_key.0, budget_per_key.1));
        let kv = match verdict {
            Linearizability::Linearizable => KeyVerdict {
                ops_checked: reg.len(),
                verdict: "linearizable".into(),
                detail: None,
            },
            Linearizability::Unknown { steps } => {
                report.unknown.push(key.to_string());
                KeyVerdict {
                    ops_checked: reg.len(),
                    verdict: "unknown".into(),
                    detail: Some(format!("search budget exhausted after {steps} steps")),
                }
            }
            Linearizability::Violation(v) => {
                let detail = domain::explain_violation(&input.ops, input.initial, &v);
                report.anomalies.push(Anomaly {
                    kind: AnomalyKind::NotLinearizable,
                    key: Some(key.to_string()),
                    ops: v.stuck.clone(),
                    message: detail.clone(),
                });
                KeyVerdict {
                    ops_checked: reg.len(),
                    verdict: "violation".into(),
                    detail: Some(detail),
                }
            }
        };
        report.keys.insert(key.to_string(), kv);
    }
    report.anomalies.extend(domain::check_all(input));
    report.terms_with_several_leaders = domain::leaders_per_term(&input.samples)
        .into_iter()
        .filter(|(_, l)| l.len() > 1)
        .map(|(t, l)| (t, l.into_iter().collect()))
        .collect();
    report
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn op(index: usize, kind: OpKind, key: &str, value: i64, t: (u64, u64), outcome: Outcome) -> Op {
        Op {
            index,
            process: index as u32 % 4,
            node: 1,
            kind,
            key: key.into(),
            value: Some(value),
            version: None,
            invoke_ns: t.0,
            complete_ns: t.1,
            outcome,
            error: None,
            final_read: false,
        }
    }

    #[test]
    fn prepare_drops_what_constrains_nothing_and_bounds_observed_info_writes() {
        use OpKind::*;
        use Outcome::*;
        let ops = vec![
            op(0, Write, "a", 1, (0, 5), Fail),
            op(1, Write, "a", 2, (0, 50), Info),
            op(2, Write, "a", 3, (0, 50), Info),
            op(3, Read, "a", 3, (10, 20), Ok),
            op(4, Read, "a", 9, (10, 20), Info),
            op(5, Read, "b", 3, (10, 20), Ok),
        ];
        let reg = prepare(&ops, "a");
        let ids: Vec<usize> = reg.iter().map(|r| r.id).collect();
        assert_eq!(ids, vec![2, 3], "kept {reg:#?}");
        assert_eq!(reg[0].ret_ns, Some(20), "the info write is bounded by its first reader");
    }

    #[test]
    fn many_unobserved_indeterminate_writes_do_not_blow_up_the_search() {
        // 40 timed-out writes nobody read, then reads of the initial value:
        // without `prepare`, the search would try every subset of them.
        let mut ops: Vec<Op> = (0..40)
            .map(|i| {
                op(
                    i,
                    OpKind::Write,
                    "a",
                    1000 + i as i64,
                    (i as u64, i as u64 + 1),
                    Outcome::Info,
                )
            })
            .collect();
        for i in 0..50 {
            ops.push(op(
                40 + i,
                OpKind::Read,
                "a",
                0,
                (100 + 2 * i as u64, 101 + 2 * i as u64),
                Outcome::Ok,
            ));
        }
        let report = check(
            &CheckInput {
                ops,
                ..Default::default()
            },
            (1_000_000, 10.0),
        );
        assert_eq!(report.keys["a"].verdict, "linearizable", "{report:#?}");
        assert!(report.unknown.is_empty(), "{report:#?}");
    }

    #[test]
    fn check_reports_a_stale_read_with_the_ops_involved() {
        use OpKind::*;
        let ops = vec![
            op(0, Write, "a", 1, (0, 10), Outcome::Ok),
            op(1, Read, "a", 1, (11, 12), Outcome::Ok),
            op(2, Read, "a", 0, (13, 14), Outcome::Ok),
        ];
        let report = check(
            &CheckInput {
                ops,
                ..Default::default()
            },
            (1_000_000, 10.0),
        );
        assert_eq!(report.keys["a"].verdict, "violation", "{report:#?}");
        let a = &report.anomalies[0];
        assert_eq!(a.kind, AnomalyKind::NotLinearizable);
        assert!(
            a.message.contains("#2"),
            "the message names the stale read: {}",
            a.message
        );
    }
}
