//! Log hygiene (issue 17): a write within the entry limit is never refused
//! for its size, and a command the state machine refuses is never
//! acknowledged. Whether refused writes stayed out of the log, and whether
//! a follower frozen through a burst of large entries caught up, the run
//! sees as replicas converging (or not) after healing.

use super::Anomaly;
use super::AnomalyKind;
use crate::history::Outcome;
use crate::workload::HygieneKind;
use crate::workload::HygieneOp;
use crate::workload::WorkloadSpec;

/// The summary line, the anomalies, and why the run proves too little
/// (each makes it inconclusive): a kind of write the load asked for that
/// never got the answer it exists to test.
pub fn check(ops: &[HygieneOp], spec: &WorkloadSpec) -> (String, Vec<Anomaly>, Vec<String>) {
    let of = |kind| ops.iter().filter(move |o: &&HygieneOp| o.kind == kind);
    let mut anomalies = Vec::new();
    for op in of(HygieneKind::Refused).filter(|o| o.outcome == Outcome::Ok) {
        anomalies.push(Anomaly {
            kind: AnomalyKind::RefusedCommandAccepted,
            key: None,
            ops: Vec::new(),
            message: format!(
                "node {} acknowledged a task with a {}-character kind (status {:?})",
                op.node,
                crate::workload::REFUSED_KIND_LEN,
                op.status
            ),
        });
    }
    for op in of(HygieneKind::Large).filter(|o| o.status == Some(413)) {
        anomalies.push(Anomaly {
            kind: AnomalyKind::EntryUnderLimitRefused,
            key: None,
            ops: Vec::new(),
            message: format!(
                "node {} refused a {}-byte plan, under the entry limit, as too large: {}",
                op.node,
                crate::workload::large_plan().1,
                op.error.as_deref().unwrap_or("")
            ),
        });
    }
    let large = of(HygieneKind::Large).count();
    let large_ok = of(HygieneKind::Large).filter(|o| o.outcome == Outcome::Ok).count();
    let large_info = of(HygieneKind::Large).filter(|o| o.outcome == Outcome::Info).count();
    let refused = of(HygieneKind::Refused).count();
    let refused_400 = of(HygieneKind::Refused).filter(|o| o.status == Some(400)).count();
    let mut unproven = Vec::new();
    if spec.large_fraction > 0.0 && large_ok == 0 {
        unproven.push(format!("no large write was acknowledged ({large} sent)"));
    }
    if spec.refused_fraction > 0.0 && refused_400 == 0 {
        unproven.push(format!("no refused write was answered 400 ({refused} sent)"));
    }
    let summary = if ops.is_empty() {
        String::new()
    } else {
        format!(
            "large ({} bytes each): {large_ok} acknowledged of {large} ({large_info} indeterminate); refused: {refused_400} answered 400 of {refused}",
            crate::workload::large_plan().1
        )
    };
    (summary, anomalies, unproven)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn op(kind: HygieneKind, status: u16) -> HygieneOp {
        HygieneOp {
            kind,
            node: 1,
            status: Some(status),
            outcome: if status < 300 { Outcome::Ok } else { Outcome::Fail },
            error: None,
        }
    }

    #[test]
    fn an_accepted_refusal_and_a_refused_large_write_are_anomalies() {
        let mut spec = crate::run::RunConfig::new(
            1,
            3,
            std::time::Duration::from_secs(1),
            vec![],
            crate::cluster::Launcher::Cairn(Default::default()),
        )
        .workload;
        spec.large_fraction = 0.1;
        spec.refused_fraction = 0.1;
        let good = [op(HygieneKind::Large, 200), op(HygieneKind::Refused, 400)];
        let (summary, anomalies, unproven) = check(&good, &spec);
        assert!(
            anomalies.is_empty() && unproven.is_empty(),
            "{anomalies:?} {unproven:?}"
        );
        assert!(summary.contains("1 acknowledged of 1"), "{summary}");
        let bad = [op(HygieneKind::Large, 413), op(HygieneKind::Refused, 200)];
        let (_, anomalies, unproven) = check(&bad, &spec);
        let kinds: Vec<AnomalyKind> = anomalies.iter().map(|a| a.kind).collect();
        assert_eq!(
            kinds,
            vec![AnomalyKind::RefusedCommandAccepted, AnomalyKind::EntryUnderLimitRefused]
        );
        assert_eq!(unproven.len(), 2, "{unproven:?}");
    }
}
