//! Linearizability of one register: the Wing–Gong–Lowe search as porcupine
//! implements it (Lowe's memoisation of `(linearized set, state)` pairs),
//! specialised to a read/write register.
//!
//! The history becomes a list of call and return entries sorted by time.
//! The search walks it, trying to linearize each pending call whose
//! operation is legal in the current state; reaching a return entry whose
//! call is not linearized yet means the choices so far were wrong, so it
//! backtracks. A `(set of linearized ops, state)` pair already explored is
//! never explored again, which is what makes the search practical.
//!
//! An indeterminate operation has no return entry (its return is at
//! infinity): it may be linearized anywhere after its call, and, for a
//! write nobody observed, "at the very end" is the same as "never".

use std::collections::HashSet;
use std::time::Instant;

use crate::history::OpKind;

/// One operation on the register, as the search sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RegOp {
    /// The operation's index in the run's history (for reports).
    pub id: usize,
    /// Read or write.
    pub kind: OpKind,
    /// Value written, or value the read returned.
    pub value: i64,
    /// Invocation time.
    pub call_ns: u64,
    /// Completion time; `None` for an indeterminate write.
    pub ret_ns: Option<u64>,
}

/// How much work the search may do before answering "unknown".
#[derive(Clone, Copy, Debug)]
pub struct Budget {
    /// Most search steps (each one linearizes, skips or backtracks once).
    pub max_steps: u64,
    /// Wall-clock limit.
    pub deadline: Option<Instant>,
}

impl Budget {
    /// A budget of `max_steps` and `secs` seconds from now.
    pub fn new(max_steps: u64, secs: f64) -> Self {
        Self {
            max_steps,
            deadline: Some(Instant::now() + std::time::Duration::from_secs_f64(secs)),
        }
    }
}

/// The search's answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Linearizability {
    /// A legal order exists.
    Linearizable,
    /// None exists.
    Violation(Violation),
    /// The budget ran out first.
    Unknown {
        /// Steps taken when it gave up.
        steps: u64,
    },
}

/// What the search saw when it gave up on a history.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Violation {
    /// History ids of the longest prefix it could linearize, in order.
    pub longest_prefix: Vec<usize>,
    /// The register's value after that prefix.
    pub state_after_prefix: i64,
    /// History ids of the operations that could come next, the one whose
    /// completion could not be honoured first.
    pub stuck: Vec<usize>,
}

const NIL: usize = usize::MAX;

#[derive(Clone, Copy)]
struct Entry {
    op: usize,
    call: bool,
    time: u64,
}

fn step(state: i64, op: &RegOp) -> Option<i64> {
    match op.kind {
        OpKind::Write => Some(op.value),
        OpKind::Read => (state == op.value).then_some(state),
    }
}

/// Check that `ops` on a register starting at `init` are linearizable.
pub fn check_register(init: i64, ops: &[RegOp], budget: Budget) -> Linearizability {
    let n = ops.len();
    if n == 0 {
        return Linearizability::Linearizable;
    }
    let mut entries: Vec<Entry> = Vec::with_capacity(2 * n);
    for (i, op) in ops.iter().enumerate() {
        let ret = op.ret_ns.unwrap_or(u64::MAX);
        assert!(ret >= op.call_ns, "op {} returns before it is called", op.id);
        entries.push(Entry {
            op: i,
            call: true,
            time: op.call_ns,
        });
        entries.push(Entry {
            op: i,
            call: false,
            time: ret,
        });
    }
    // At equal times calls sort first: such operations count as concurrent,
    // the permissive reading of a clock tie.
    entries.sort_by_key(|e| (e.time, !e.call, e.op));

    // A doubly linked list over positions 1..=m with the head at 0.
    let m = entries.len();
    let mut next: Vec<usize> = (0..=m).map(|k| if k < m { k + 1 } else { NIL }).collect();
    let mut prev: Vec<usize> = (0..=m).map(|k| if k > 0 { k - 1 } else { NIL }).collect();
    let mut ret_pos = vec![0usize; n];
    for (k, e) in entries.iter().enumerate() {
        if !e.call {
            ret_pos[e.op] = k + 1;
        }
    }
    let entry = |k: usize| entries[k - 1];

    let mut linearized = vec![0u64; n.div_ceil(64)];
    let mut cache: HashSet<(Vec<u64>, i64)> = HashSet::new();
    let mut stack: Vec<(usize, i64)> = Vec::new();
    let mut best: Vec<usize> = Vec::new();
    let mut state = init;
    let mut cur = next[0];
    let mut steps: u64 = 0;
    while next[0] != NIL {
        steps += 1;
        // The deadline is read every 1024 steps: a clock read per step
        // would dominate the search.
        if steps > budget.max_steps || (steps % 1024 == 0 && budget.deadline.is_some_and(|d| Instant::now() > d)) {
            return Linearizability::Unknown { steps };
        }
        let e = entry(cur);
        if e.call {
            if let Some(new_state) = step(state, &ops[e.op]) {
                linearized[e.op / 64] |= 1 << (e.op % 64);
                if cache.insert((linearized.clone(), new_state)) {
                    stack.push((cur, state));
                    state = new_state;
                    lift(&mut next, &mut prev, cur, ret_pos[e.op]);
                    if stack.len() > best.len() {
                        best = stack.iter().map(|(k, _)| entry(*k).op).collect();
                    }
                    cur = next[0];
                    continue;
                }
                linearized[e.op / 64] &= !(1 << (e.op % 64));
            }
            cur = next[cur];
        } else {
            // A completed operation not linearized yet: undo the last choice.
            let Some((k, s)) = stack.pop() else {
                return Linearizability::Violation(violation(init, ops, &best));
            };
            let op = entry(k).op;
            linearized[op / 64] &= !(1 << (op % 64));
            state = s;
            unlift(&mut next, &mut prev, k, ret_pos[op]);
            cur = next[k];
        }
    }
    Linearizability::Linearizable
}

fn lift(next: &mut [usize], prev: &mut [usize], call: usize, ret: usize) {
    next[prev[call]] = next[call];
    prev[next[call]] = prev[call];
    next[prev[ret]] = next[ret];
    if next[ret] != NIL {
        prev[next[ret]] = prev[ret];
    }
}

fn unlift(next: &mut [usize], prev: &mut [usize], call: usize, ret: usize) {
    if next[ret] != NIL {
        prev[next[ret]] = ret;
    }
    next[prev[ret]] = ret;
    prev[next[call]] = call;
    next[prev[call]] = call;
}

fn violation(init: i64, ops: &[RegOp], best: &[usize]) -> Violation {
    let mut state = init;
    for &i in best {
        state = step(state, &ops[i]).unwrap_or(state);
    }
    let done: HashSet<usize> = best.iter().copied().collect();
    let mut rest: Vec<usize> = (0..ops.len()).filter(|i| !done.contains(i)).collect();
    rest.sort_by_key(|&i| (ops[i].ret_ns.unwrap_or(u64::MAX), ops[i].call_ns));
    // The first to complete is the one whose return could not be honoured;
    // the others worth showing were invoked before it completed.
    let stuck: Vec<usize> = match rest.first() {
        Some(&first) => {
            let limit = ops[first].ret_ns.unwrap_or(u64::MAX);
            rest.iter()
                .copied()
                .filter(|&i| ops[i].call_ns <= limit)
                .take(8)
                .map(|i| ops[i].id)
                .collect()
        }
        None => Vec::new(),
    };
    Violation {
        longest_prefix: best.iter().map(|&i| ops[i].id).collect(),
        state_after_prefix: state,
        stuck,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn w(id: usize, v: i64, call: u64, ret: Option<u64>) -> RegOp {
        RegOp {
            id,
            kind: OpKind::Write,
            value: v,
            call_ns: call,
            ret_ns: ret,
        }
    }

    fn r(id: usize, v: i64, call: u64, ret: u64) -> RegOp {
        RegOp {
            id,
            kind: OpKind::Read,
            value: v,
            call_ns: call,
            ret_ns: Some(ret),
        }
    }

    fn check(ops: &[RegOp]) -> Linearizability {
        check_register(0, ops, Budget::new(10_000_000, 10.0))
    }

    fn assert_lin(ops: &[RegOp]) {
        let got = check(ops);
        assert_eq!(got, Linearizability::Linearizable, "history {ops:#?}");
    }

    fn assert_not_lin(ops: &[RegOp]) -> Violation {
        match check(ops) {
            Linearizability::Violation(v) => v,
            other => panic!("expected a violation, got {other:?} for {ops:#?}"),
        }
    }

    #[test]
    fn empty_and_sequential_histories_are_linearizable() {
        assert_lin(&[]);
        assert_lin(&[
            r(0, 0, 0, 1),
            w(1, 5, 2, Some(3)),
            r(2, 5, 4, 5),
            w(3, 7, 6, Some(7)),
            r(4, 7, 8, 9),
        ]);
    }

    #[test]
    fn a_read_concurrent_with_a_write_may_see_either_value() {
        assert_lin(&[w(0, 1, 0, Some(10)), r(1, 0, 1, 2), r(2, 1, 3, 4)]);
        assert_lin(&[w(0, 1, 0, Some(10)), r(1, 1, 1, 2)]);
    }

    #[test]
    fn a_stale_read_after_an_acknowledged_write_is_caught() {
        // w(1) completes at 3; a read starting at 4 still sees 0.
        let v = assert_not_lin(&[w(0, 1, 0, Some(3)), r(1, 0, 4, 5)]);
        assert_eq!(
            v.stuck.first(),
            Some(&1),
            "the stale read is the one that cannot be placed: {v:?}"
        );
    }

    #[test]
    fn reading_values_going_back_in_time_is_caught() {
        // Two writes in sequence; a reader sees the new value, then the old.
        assert_not_lin(&[w(0, 1, 0, Some(1)), w(1, 2, 2, Some(20)), r(2, 2, 3, 4), r(3, 1, 5, 6)]);
    }

    #[test]
    fn a_read_of_a_value_never_written_is_caught() {
        assert_not_lin(&[w(0, 1, 0, Some(1)), r(1, 9, 2, 3)]);
    }

    #[test]
    fn a_lost_acknowledged_write_is_caught_by_the_final_read() {
        // w(2) was acknowledged after w(1); the final read returns 1.
        assert_not_lin(&[w(0, 1, 0, Some(1)), w(1, 2, 2, Some(3)), r(2, 1, 100, 101)]);
    }

    #[test]
    fn an_indeterminate_write_may_apply_late_or_never() {
        // Never: reads see 0 throughout.
        assert_lin(&[w(0, 1, 0, None), r(1, 0, 5, 6), r(2, 0, 7, 8)]);
        // Late: long after the client gave up, it shows up.
        assert_lin(&[w(0, 1, 0, None), r(1, 0, 5, 6), r(2, 1, 70, 80)]);
        // But once seen, it cannot un-happen.
        assert_not_lin(&[w(0, 1, 0, None), r(1, 1, 5, 6), r(2, 0, 70, 80)]);
        // And it cannot apply before it was sent.
        assert_not_lin(&[r(0, 1, 0, 1), w(1, 1, 5, None)]);
    }

    #[test]
    fn concurrent_writes_may_take_effect_in_either_order() {
        assert_lin(&[w(0, 1, 0, Some(10)), w(1, 2, 0, Some(10)), r(2, 1, 11, 12)]);
        assert_lin(&[w(0, 1, 0, Some(10)), w(1, 2, 0, Some(10)), r(2, 2, 11, 12)]);
        // Two readers disagreeing on the order, both after both writes.
        assert_not_lin(&[
            w(0, 1, 0, Some(10)),
            w(1, 2, 0, Some(10)),
            r(2, 2, 11, 12),
            r(3, 1, 13, 14),
        ]);
    }

    #[test]
    fn the_violation_reports_the_longest_prefix() {
        let v = assert_not_lin(&[w(0, 1, 0, Some(1)), r(1, 1, 2, 3), w(2, 2, 4, Some(5)), r(3, 1, 6, 7)]);
        assert_eq!(v.longest_prefix, vec![0, 1, 2], "{v:?}");
        assert_eq!(v.state_after_prefix, 2);
        assert_eq!(v.stuck, vec![3]);
    }

    #[test]
    fn eight_way_concurrency_over_a_long_history_stays_tractable() {
        // Rounds of 8 overlapping writes, each round followed by 8 overlapping
        // reads that agree on the last value: the memo keeps this linear-ish.
        let mut ops = Vec::new();
        let mut t = 0;
        for round in 0..150i64 {
            for c in 0..8i64 {
                ops.push(w(ops.len(), round * 8 + c + 1, t + c as u64, Some(t + 20 + c as u64)));
            }
            for c in 0..8u64 {
                ops.push(r(ops.len(), round * 8 + 8, t + 30 + c, t + 40 + c));
            }
            t += 50;
        }
        let got = check_register(0, &ops, Budget::new(5_000_000, 20.0));
        assert_eq!(got, Linearizability::Linearizable);
    }

    #[test]
    fn an_exhausted_budget_answers_unknown() {
        let ops = [w(0, 1, 0, Some(10)), w(1, 2, 0, Some(10)), r(2, 2, 11, 12)];
        let got = check_register(0, &ops, Budget::new(1, 10.0));
        assert!(matches!(got, Linearizability::Unknown { .. }), "{got:?}");
    }
}
