//! Client sessions: at-most-once application of retried writes.
//!
//! A client tags each write with its id and a sequence number that increases
//! by one per write (Raft thesis §6.3). When a write times out, the client
//! retries it with the *same* tag; if the first attempt was committed after
//! all, the retry returns the recorded response instead of applying twice.
//! The table is part of the replicated state (it is in every snapshot), so a
//! new leader deduplicates exactly like the old one.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde::Serialize;

/// Identifies one write of one client.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClientTag {
    /// Chosen by the client, unique among clients (e.g. random at start-up).
    pub client_id: u64,
    /// Increases with every new write of this client; reused on retry.
    pub seq: u64,
}

/// What to do with a tagged write.
#[derive(Debug, PartialEq, Eq)]
pub enum Admission<'a, R> {
    /// Not seen before: apply it, then [`Sessions::record`] the response.
    Apply,
    /// Already applied: return this response, do not apply again.
    Duplicate(&'a R),
    /// Older than the last write this client completed, and its response is
    /// no longer kept: the client has moved on, so this is a late replay.
    Stale {
        /// The highest sequence recorded for the client.
        last_seq: u64,
    },
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct Session<R> {
    last_seq: u64,
    last_response: R,
    /// Log index of the last write, used to evict idle sessions
    /// deterministically (no clocks in the state machine).
    last_index: u64,
}

/// The replicated table of client sessions.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sessions<R> {
    sessions: BTreeMap<u64, Session<R>>,
    /// Bound on memory: a rover has a handful of clients, but a buggy one that
    /// picks a fresh id per request must not grow the snapshot without limit.
    max_sessions: usize,
}

impl<R: Clone> Default for Sessions<R> {
    fn default() -> Self {
        Self::with_capacity(Self::DEFAULT_MAX_SESSIONS)
    }
}

impl<R: Clone> Sessions<R> {
    /// Default bound on remembered clients.
    pub const DEFAULT_MAX_SESSIONS: usize = 4096;

    /// A table that remembers at most `max_sessions` clients.
    pub fn with_capacity(max_sessions: usize) -> Self {
        assert!(max_sessions > 0, "a session table must hold at least one client");
        Self {
            sessions: BTreeMap::new(),
            max_sessions,
        }
    }

    /// Decide whether a tagged write is new.
    pub fn admit(&self, tag: &ClientTag) -> Admission<'_, R> {
        match self.sessions.get(&tag.client_id) {
            None => Admission::Apply,
            Some(s) if tag.seq > s.last_seq => Admission::Apply,
            Some(s) if tag.seq == s.last_seq => Admission::Duplicate(&s.last_response),
            Some(s) => Admission::Stale { last_seq: s.last_seq },
        }
    }

    /// Remember the response of an applied write. When the table is full the
    /// session idle longest (smallest last log index) is evicted — the same
    /// choice on every replica, since it depends only on the log.
    pub fn record(&mut self, tag: &ClientTag, response: R, index: u64) {
        if !self.sessions.contains_key(&tag.client_id) && self.sessions.len() >= self.max_sessions {
            if let Some(oldest) = self
                .sessions
                .iter()
                .min_by_key(|(id, s)| (s.last_index, **id))
                .map(|(id, _)| *id)
            {
                self.sessions.remove(&oldest);
            }
        }
        self.sessions.insert(
            tag.client_id,
            Session {
                last_seq: tag.seq,
                last_response: response,
                last_index: index,
            },
        );
    }

    /// Number of remembered clients.
    pub fn len(&self) -> usize {
        self.sessions.len()
    }

    /// Whether no client is remembered.
    pub fn is_empty(&self) -> bool {
        self.sessions.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tag(client_id: u64, seq: u64) -> ClientTag {
        ClientTag { client_id, seq }
    }

    #[test]
    fn retry_returns_first_response() {
        let mut s = Sessions::<String>::default();
        assert_eq!(s.admit(&tag(1, 1)), Admission::Apply);
        s.record(&tag(1, 1), "first".into(), 10);
        assert_eq!(s.admit(&tag(1, 1)), Admission::Duplicate(&"first".to_string()));
        assert_eq!(s.admit(&tag(1, 2)), Admission::Apply);
        s.record(&tag(1, 2), "second".into(), 11);
        assert_eq!(s.admit(&tag(1, 1)), Admission::Stale { last_seq: 2 });
        assert_eq!(s.admit(&tag(2, 1)), Admission::Apply);
    }

    #[test]
    fn full_table_evicts_the_longest_idle_client() {
        let mut s = Sessions::<u8>::with_capacity(2);
        s.record(&tag(1, 1), 1, 5);
        s.record(&tag(2, 1), 2, 3);
        s.record(&tag(3, 1), 3, 9);
        assert_eq!(s.len(), 2);
        assert_eq!(s.admit(&tag(2, 1)), Admission::Apply, "client 2 was idle longest");
        assert_eq!(s.admit(&tag(1, 1)), Admission::Duplicate(&1));
    }
}
