//! Inserts: every acknowledged write must be in the final state.
//!
//! A register's final value shows only its last write, so a lost write
//! that a later one overwrote leaves no trace there. Inserts do: each is a
//! parameter declared once with a value nobody else writes, so every one
//! acknowledged must be in every final state, under its name, with its
//! value; none reported failed may be there; and nothing the clients did
//! not insert may appear.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde::Serialize;

use super::Anomaly;
use super::AnomalyKind;
use crate::history::Outcome;
use crate::workload::InsertOp;

/// What the insert checker needs (written to `inserts.json`).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct InsertCheckInput {
    /// Every insert.
    pub ops: Vec<InsertOp>,
    /// After healing, per node: the inserts a linearizable list showed
    /// (through the leader).
    pub final_lists: BTreeMap<u64, BTreeMap<String, i64>>,
    /// Once replicas applied the same index, per node: the inserts in its
    /// own applied state (empty if they never converged).
    pub converged: BTreeMap<u64, BTreeMap<String, i64>>,
}

/// How many lost names a message lists.
const SHOW: usize = 5;

/// Every insert rule, over the linearizable final lists and the converged
/// per-node states.
pub fn check_inserts(input: &InsertCheckInput) -> Vec<Anomaly> {
    let mut out = Vec::new();
    if input.ops.is_empty() {
        return out;
    }
    if input.final_lists.is_empty() {
        out.push(Anomaly {
            kind: AnomalyKind::NoFinalRead,
            key: Some("inserts".into()),
            ops: vec![],
            message: "no linearizable list of the inserts succeeded after healing".into(),
        });
    }
    let by_name: BTreeMap<&str, &InsertOp> = input.ops.iter().map(|o| (o.name.as_str(), o)).collect();
    let acked: Vec<&InsertOp> = input.ops.iter().filter(|o| o.outcome == Outcome::Ok).collect();
    let sources = input
        .final_lists
        .iter()
        .map(|(n, m)| (format!("node {n}'s linearizable final list"), m))
        .chain(
            input
                .converged
                .iter()
                .map(|(n, m)| (format!("node {n}'s own applied state"), m)),
        );
    for (what, state) in sources {
        let lost: Vec<&&InsertOp> = acked.iter().filter(|o| state.get(&o.name) != Some(&o.value)).collect();
        if !lost.is_empty() {
            let first: Vec<String> = lost
                .iter()
                .take(SHOW)
                .map(|o| {
                    format!(
                        "{} (acknowledged by n{} at {:.3}s)",
                        o.name,
                        o.node,
                        o.complete_ns as f64 / 1e9
                    )
                })
                .collect();
            out.push(Anomaly {
                kind: AnomalyKind::LostWrite,
                key: Some("inserts".into()),
                ops: vec![],
                message: format!(
                    "{} of {} acknowledged inserts missing from {what}: {}{}",
                    lost.len(),
                    acked.len(),
                    first.join(", "),
                    if lost.len() > SHOW { ", …" } else { "" }
                ),
            });
        }
        for (name, value) in state {
            match by_name.get(name.as_str()) {
                None => out.push(Anomaly {
                    kind: AnomalyKind::PhantomRead,
                    key: Some(name.clone()),
                    ops: vec![],
                    message: format!("{what} holds {name} = {value}, which no client inserted"),
                }),
                Some(o) if o.outcome == Outcome::Fail => out.push(Anomaly {
                    kind: AnomalyKind::FailedWriteObserved,
                    key: Some(name.clone()),
                    ops: vec![],
                    message: format!(
                        "{what} holds {name}, whose insert was reported failed ({})",
                        o.error.as_deref().unwrap_or("?")
                    ),
                }),
                Some(_) => {}
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn op(name: &str, value: i64, outcome: Outcome) -> InsertOp {
        InsertOp {
            process: 0,
            node: 1,
            name: name.into(),
            value,
            outcome,
            invoke_ns: 0,
            complete_ns: 1,
            error: None,
        }
    }

    #[test]
    fn an_acknowledged_insert_missing_from_any_final_state_is_a_lost_write() {
        let ops = vec![
            op("jepsen.i.1", 1, Outcome::Ok),
            op("jepsen.i.2", 2, Outcome::Ok),
            op("jepsen.i.3", 3, Outcome::Info),
        ];
        let all: BTreeMap<String, i64> = [("jepsen.i.1".into(), 1), ("jepsen.i.2".into(), 2)].into();
        let mut input = InsertCheckInput {
            ops,
            final_lists: [(1, all.clone()), (2, all.clone())].into(),
            converged: [(1, all.clone()), (2, all.clone())].into(),
        };
        assert!(check_inserts(&input).is_empty(), "{:?}", check_inserts(&input));
        // A replica that lost one (the leader restored a shorter log).
        input.converged.get_mut(&2).unwrap().remove("jepsen.i.2");
        let found = check_inserts(&input);
        assert_eq!(found.len(), 1, "{found:?}");
        assert_eq!(found[0].kind, AnomalyKind::LostWrite);
        assert!(found[0].message.contains("jepsen.i.2") && found[0].message.contains("node 2"));
    }

    #[test]
    fn failed_and_unknown_inserts_that_appear_are_caught() {
        let ops = vec![op("jepsen.i.1", 1, Outcome::Fail)];
        let state: BTreeMap<String, i64> = [("jepsen.i.1".into(), 1), ("jepsen.i.9".into(), 9)].into();
        let input = InsertCheckInput {
            ops,
            final_lists: [(1, state)].into(),
            converged: BTreeMap::new(),
        };
        let kinds: Vec<AnomalyKind> = check_inserts(&input).iter().map(|a| a.kind).collect();
        assert!(kinds.contains(&AnomalyKind::FailedWriteObserved), "{kinds:?}");
        assert!(kinds.contains(&AnomalyKind::PhantomRead), "{kinds:?}");
    }
}
