//! A request id that follows a client request across nodes.
//!
//! The facade runs each API request inside [`with_request_id`]; when the
//! request has to be forwarded to the leader, the id travels with it and the
//! leader handles it inside a `forwarded` span carrying the same
//! `request_id`, so one grep finds the request in both nodes' logs.
//!
//! On the leader, the write then runs in a `raft.client_write` span (request
//! id, log index, outcome); the log store's `raft.append` span covers a
//! batch from the write to the fsync, and the state machine's `raft.apply`
//! span names the batch's index range and, for this node's own proposals,
//! their request ids (`InFlight`). All three are at `debug` level.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::atomic::AtomicUsize;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::MutexGuard;

tokio::task_local! {
    static REQUEST_ID: String;
}

/// Run `f` with `request_id` as the current request id.
pub async fn with_request_id<F: Future>(request_id: String, f: F) -> F::Output {
    REQUEST_ID.scope(request_id, f).await
}

/// The request id of the request being served on this task, if any.
pub fn current_request_id() -> Option<String> {
    REQUEST_ID.try_with(Clone::clone).ok()
}

/// Request ids of this node's own proposals by log index, from the append
/// until the apply, so the leader's `raft.apply` span can name the requests
/// of its batch. Only in memory: the log entry format carries no request id
/// (a follower's apply span names the index range only).
///
/// Filled only while the `raft.client_write` span is enabled (debug level),
/// so at the default `info` filter it stays empty and [`InFlight::take_upto`]
/// costs one atomic load.
#[derive(Default)]
pub(crate) struct InFlight {
    /// `ids.len()`, readable without the lock.
    len: AtomicUsize,
    ids: Mutex<BTreeMap<u64, Arc<str>>>,
}

/// Bound on [`InFlight`]: about the entries a leader has between append and
/// apply under heavy load (openraft batches well below this). Past it new ids
/// are dropped: the apply span then lacks them, nothing else changes.
const IN_FLIGHT_MAX: usize = 4096;

impl InFlight {
    fn ids(&self) -> MutexGuard<'_, BTreeMap<u64, Arc<str>>> {
        crate::sync::lock(&self.ids)
    }

    fn set_len(&self, len: usize) {
        self.len.store(len, Ordering::Relaxed);
    }

    fn is_empty(&self) -> bool {
        self.len.load(Ordering::Relaxed) == 0
    }

    /// Remember that the entry at `index` carries `request_id`.
    pub(crate) fn insert(&self, index: u64, request_id: Arc<str>) {
        let mut ids = self.ids();
        if ids.len() < IN_FLIGHT_MAX {
            ids.insert(index, request_id);
        }
        self.set_len(ids.len());
    }

    /// Forget entries at `from` and after (the log was truncated there: a
    /// new leader's entries will take those indexes).
    pub(crate) fn truncate_from(&self, from: u64) {
        if self.is_empty() {
            return;
        }
        let mut ids = self.ids();
        ids.split_off(&from);
        self.set_len(ids.len());
    }

    /// Remove and return the request ids of entries up to `last` (applied
    /// now; older ones were never applied here, e.g. purged, and go too).
    pub(crate) fn take_upto(&self, last: u64) -> Vec<Arc<str>> {
        if self.is_empty() {
            return Vec::new();
        }
        let mut ids = self.ids();
        let rest = ids.split_off(&last.saturating_add(1));
        let taken = std::mem::replace(&mut *ids, rest);
        self.set_len(ids.len());
        taken.into_values().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn in_flight_is_emptied_by_apply_and_truncate_and_bounded() {
        let f = InFlight::default();
        f.insert(5, "a".into());
        f.insert(6, "b".into());
        f.insert(9, "c".into());
        assert_eq!(f.take_upto(6), vec!["a".into(), "b".into()] as Vec<Arc<str>>);
        f.truncate_from(9);
        assert!(
            f.is_empty(),
            "a truncated entry's id must not name the next leader's entry"
        );
        assert!(f.take_upto(100).is_empty());
        for i in 0..(IN_FLIGHT_MAX as u64 + 10) {
            f.insert(i, "x".into());
        }
        assert_eq!(f.take_upto(u64::MAX).len(), IN_FLIGHT_MAX);
        assert!(f.is_empty());
    }
}
