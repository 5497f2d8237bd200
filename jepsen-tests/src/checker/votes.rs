//! Votes never go back (issue 20).
//!
//! A Raft node must never grant a vote it could not have granted before a
//! crash: its vote is on disk before it answers (§5.2), so across any
//! power cut the vote it reads back at start is at least the last one it
//! stored. A vote lost to a cut lets the node vote again, for someone
//! else, in a term where it already voted: two leaders can then be
//! elected by overlapping "majorities".
//!
//! cairn runs openraft's advanced leader ids (a leader id is `(term,
//! node)`, totally ordered), where a node may grant `(T, 3)` after `(T, 2)`
//! legally: "one vote per term" is not the rule there, "votes only go up"
//! is. So the check is: every vote a node stores or reads back at start is
//! no older than every vote it stored before, ordered by `(term, node,
//! committed)` as openraft orders them.
//!
//! The evidence is the nodes' own logs: raft-core logs `vote stored`
//! after the synced write of a vote returned, and `vote read from disk`
//! when it loads one at start (both at `info`, with `term=`, `leader=`,
//! `committed=`). Every incarnation of a node appends to one log, so a
//! node's lines are its whole life in order. A line lost in a kill is a
//! vote not seen, never one invented: the check can miss, never lie.

use crate::checker::Anomaly;
use crate::checker::AnomalyKind;

/// One vote as the log shows it, ordered as openraft orders votes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct LoggedVote {
    /// Its term.
    pub term: u64,
    /// The node it is for.
    pub leader: u64,
    /// Whether a quorum granted it.
    pub committed: bool,
}

impl std::fmt::Display for LoggedVote {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "term {} for node {}{}",
            self.term,
            self.leader,
            if self.committed { " (committed)" } else { "" }
        )
    }
}

/// What a vote line says: stored, or read back at start.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VoteEvent {
    /// `vote stored`.
    Stored(LoggedVote),
    /// `vote read from disk`.
    Read(LoggedVote),
}

/// `line` without ANSI colour sequences (`ESC [ … m`): the embedded
/// launcher's nodes log in colour.
fn plain(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            // Skip to the end of the sequence (a letter), bounded by the line.
            for d in chars.by_ref() {
                if d.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// The vote lines of one node's log, in order.
pub fn parse(log: &str) -> Vec<VoteEvent> {
    log.lines()
        .filter(|line| line.contains("vote stored") || line.contains("vote read from disk"))
        .map(plain)
        .filter_map(|line| {
            let stored = line.contains("vote stored");
            if !stored && !line.contains("vote read from disk") {
                return None;
            }
            let field = |name: &str| {
                line.split_whitespace()
                    .find_map(|w| w.strip_prefix(name).and_then(|v| v.strip_prefix('=')))
            };
            let vote = LoggedVote {
                term: field("term")?.parse().ok()?,
                leader: field("leader")?.parse().ok()?,
                committed: field("committed")?.parse().ok()?,
            };
            Some(if stored {
                VoteEvent::Stored(vote)
            } else {
                VoteEvent::Read(vote)
            })
        })
        .collect()
}

/// Anomalies in node `node`'s vote lines, and how many lines there were.
pub fn check(node: u64, log: &str) -> (Vec<Anomaly>, usize) {
    let events = parse(log);
    let mut highest: Option<LoggedVote> = None;
    let mut out = Vec::new();
    for e in &events {
        let (vote, what) = match e {
            VoteEvent::Stored(v) => (*v, "stored"),
            VoteEvent::Read(v) => (*v, "read back at start"),
        };
        if let Some(h) = highest.filter(|h| vote < *h) {
            out.push(Anomaly {
                kind: AnomalyKind::VoteWentBack,
                key: None,
                ops: Vec::new(),
                message: format!(
                    "node {node}'s vote went back: {what} {vote} after it had stored {h} (a stored vote was lost)"
                ),
            });
        }
        if let VoteEvent::Stored(v) = e {
            highest = highest.max(Some(*v));
        }
    }
    (out, events.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    const STORED_5_2: &str =
        "2026-12-07T20:01:02.123Z  INFO cairn_raft::consensus::log_store: vote stored term=5 leader=2 committed=false";

    #[test]
    fn vote_lines_parse_and_other_lines_are_ignored() {
        let log = format!(
            "{STORED_5_2}\nINFO something else term=9\nINFO cairn_raft::consensus::log_store: vote read from disk term=5 leader=2 committed=true\n"
        );
        let v = |committed| LoggedVote {
            term: 5,
            leader: 2,
            committed,
        };
        assert_eq!(parse(&log), vec![VoteEvent::Stored(v(false)), VoteEvent::Read(v(true))]);
    }

    #[test]
    fn coloured_lines_parse() {
        let line = "\u{1b}[2m2026-12-07T20:15:55.133308Z\u{1b}[0m \u{1b}[32m INFO\u{1b}[0m \u{1b}[2mcairn_raft::consensus::log_store\u{1b}[0m\u{1b}[2m:\u{1b}[0m vote stored \u{1b}[3mterm\u{1b}[0m\u{1b}[2m=\u{1b}[0m1 \u{1b}[3mleader\u{1b}[0m\u{1b}[2m=\u{1b}[0m1 \u{1b}[3mcommitted\u{1b}[0m\u{1b}[2m=\u{1b}[0mtrue";
        assert_eq!(
            parse(line),
            vec![VoteEvent::Stored(LoggedVote {
                term: 1,
                leader: 1,
                committed: true
            })]
        );
    }

    #[test]
    fn votes_that_only_go_up_pass_even_two_in_one_term() {
        // (5, 2) then (5, 3): legal with advanced leader ids.
        let log = format!(
            "{STORED_5_2}\nvote stored term=5 leader=3 committed=false\nvote read from disk term=5 leader=3 committed=false\nvote stored term=6 leader=1 committed=true\n"
        );
        let (found, lines) = check(1, &log);
        assert!(found.is_empty(), "{found:?}");
        assert_eq!(lines, 4);
    }

    #[test]
    fn a_vote_lost_to_a_power_cut_is_found() {
        // Stored (6, 1), then the node restarts and reads (5, 2) back.
        let log = format!(
            "{STORED_5_2}\nvote stored term=6 leader=1 committed=false\nvote read from disk term=5 leader=2 committed=false\nvote stored term=6 leader=3 committed=false\n"
        );
        let (found, _) = check(1, &log);
        assert_eq!(found.len(), 1, "{found:?}");
        assert_eq!(found[0].kind, AnomalyKind::VoteWentBack);
        assert!(
            found[0].message.contains("read back at start term 5 for node 2"),
            "{}",
            found[0].message
        );
        // A stored vote below an earlier one is found too.
        let (found, _) = check(
            2,
            "vote stored term=7 leader=2 committed=true\nvote stored term=7 leader=2 committed=false\n",
        );
        assert_eq!(found.len(), 1, "{found:?}");
    }
}
