//! The newest log entries in memory ([`TailCache`]), so replication of
//! what was just appended needs neither RocksDB nor a decode.

use super::rows::within_budget;
use crate::consensus::Entry;

/// The newest entries, kept in memory so replication (which reads what was
/// just appended) needs neither RocksDB nor a blocking thread nor a decode.
/// Bounded in entries and bytes, because a follower that lags far behind
/// should read from RocksDB rather than pin memory on a 1 GiB Pi.
const TAIL_CACHE_ENTRIES_MAX: usize = 4096;
const TAIL_CACHE_BYTES_MAX: usize = 8 << 20;

/// Invariant: holds a contiguous *suffix* of the log (or nothing), so any
/// read starting at or after its first index is answered from it alone.
#[derive(Default)]
pub(super) struct TailCache {
    entries: std::collections::BTreeMap<u64, (Entry, usize)>,
    bytes: usize,
}

impl TailCache {
    pub(super) fn insert(&mut self, entry: Entry, size: usize) {
        let index = entry.log_id.index;
        if let Some(last) = self.entries.keys().next_back() {
            if *last + 1 != index {
                // Not contiguous (should not happen after truncate): restart
                // the suffix here rather than break the invariant.
                self.clear();
            }
        }
        self.bytes += size;
        self.entries.insert(index, (entry, size));
        while self.entries.len() > TAIL_CACHE_ENTRIES_MAX || self.bytes > TAIL_CACHE_BYTES_MAX {
            match self.entries.pop_first() {
                Some((_, (_, sz))) => self.bytes -= sz,
                None => break,
            }
        }
    }

    pub(super) fn truncate_from(&mut self, from: u64) {
        let tail = self.entries.split_off(&from);
        self.bytes -= tail.values().map(|(_, sz)| sz).sum::<usize>();
    }

    pub(super) fn purge_upto(&mut self, upto: u64) {
        let keep = self.entries.split_off(&(upto + 1));
        self.entries = keep;
        self.bytes = self.entries.values().map(|(_, sz)| sz).sum();
    }

    pub(super) fn clear(&mut self) {
        self.entries.clear();
        self.bytes = 0;
    }

    /// Entries of `[start, end)` if the cache covers the start, cut to at
    /// most `max_bytes` of encoded entries (at least one).
    pub(super) fn read_limited(&self, start: u64, end: u64, max_bytes: usize) -> Option<Vec<Entry>> {
        let first = *self.entries.keys().next()?;
        if start < first {
            return None;
        }
        if end <= start {
            return Some(Vec::new());
        }
        let sized = self.entries.range(start..end).map(|(_, (e, size))| (e.clone(), *size));
        Some(within_budget(start, sized, max_bytes))
    }

    /// Entries of `[start, end)` if the cache covers the start.
    pub(super) fn read(&self, start: u64, end: Option<u64>) -> Option<Vec<Entry>> {
        let first = *self.entries.keys().next()?;
        if start < first {
            return None;
        }
        let range = match end {
            Some(end) if end <= start => return Some(Vec::new()),
            Some(end) => self.entries.range(start..end),
            None => self.entries.range(start..),
        };
        Some(range.map(|(_, (e, _))| e.clone()).collect())
    }
}

#[cfg(test)]
mod tests {
    use openraft::entry::RaftEntry;

    use super::*;
    use crate::consensus::LogId;

    fn entry(index: u64) -> Entry {
        Entry::new_blank(LogId::new(
            openraft::vote::leader_id_adv::LeaderId { term: 1, node_id: 1 },
            index,
        ))
    }

    fn indexes(v: Option<Vec<Entry>>) -> Option<Vec<u64>> {
        v.map(|v| v.iter().map(|e| e.log_id.index).collect())
    }

    #[test]
    fn tail_cache_keeps_a_contiguous_suffix() {
        let mut c = TailCache::default();
        for i in 5..=9 {
            c.insert(entry(i), 10);
        }
        assert_eq!(indexes(c.read(6, Some(8))), Some(vec![6, 7]));
        assert_eq!(indexes(c.read(8, None)), Some(vec![8, 9]));
        assert_eq!(
            c.read(4, None).map(|v| v.len()),
            None,
            "before the cache: go to RocksDB"
        );

        c.truncate_from(8);
        assert_eq!(indexes(c.read(5, None)), Some(vec![5, 6, 7]));
        assert_eq!(c.bytes, 30);
        c.purge_upto(5);
        assert_eq!(indexes(c.read(6, None)), Some(vec![6, 7]));
        assert_eq!(c.read(5, None).map(|v| v.len()), None);

        // A gap would break the suffix invariant: the cache restarts.
        c.insert(entry(20), 10);
        assert_eq!(indexes(c.read(20, None)), Some(vec![20]));
        assert_eq!(c.read(7, None).map(|v| v.len()), None);
    }

    #[test]
    fn tail_cache_is_bounded() {
        let mut c = TailCache::default();
        for i in 1..=(TAIL_CACHE_ENTRIES_MAX as u64 + 10) {
            c.insert(entry(i), 1);
        }
        assert_eq!(c.entries.len(), TAIL_CACHE_ENTRIES_MAX);
        assert_eq!(c.read(1, None).map(|v| v.len()), None, "oldest entries were evicted");
    }
}
