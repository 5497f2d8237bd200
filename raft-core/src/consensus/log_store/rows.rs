//! The log's rows in RocksDB: big-endian index keys, postcard values, and
//! range reads (whole, or cut to a byte budget for replication).

use std::io;

use rocksdb::DB;
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::consensus::Entry;
use crate::storage::CF_LOG;

pub(crate) fn encode<T: Serialize + ?Sized>(value: &T) -> io::Result<Vec<u8>> {
    postcard::to_stdvec(value).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
}

pub(crate) fn decode<T: DeserializeOwned>(bytes: &[u8]) -> io::Result<T> {
    postcard::from_bytes(bytes).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
}

pub(crate) fn index_key(index: u64) -> [u8; 8] {
    index.to_be_bytes()
}

fn key_index(key: &[u8]) -> io::Result<u64> {
    let bytes: [u8; 8] = key
        .try_into()
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "log key is not 8 bytes"))?;
    Ok(u64::from_be_bytes(bytes))
}

pub(crate) fn read_range(db: &DB, start: u64, end_exclusive: Option<u64>) -> io::Result<Vec<Entry>> {
    let cf = db
        .cf_handle(CF_LOG)
        .ok_or_else(|| io::Error::other("column family log missing"))?;
    let from = index_key(start);
    let mut out = Vec::new();
    for item in db.iterator_cf(cf, rocksdb::IteratorMode::From(&from, rocksdb::Direction::Forward)) {
        let (key, value) = item.map_err(io::Error::other)?;
        let index = key_index(&key)?;
        if end_exclusive.is_some_and(|end| index >= end) {
            break;
        }
        let entry: Entry = decode(&value)?;
        debug_assert_eq!(entry.log_id.index, index, "log key and entry index disagree");
        out.push(entry);
    }
    Ok(out)
}

/// The longest run of `sized` entries (entry, encoded size) that starts at
/// index `start`, has no gap and holds at most `max_bytes` — but at least
/// one entry, so replication always makes progress: an entry above the
/// budget is sent alone (one within `log.max_entry_bytes` always fits a
/// frame; only an entry written before that limit existed could not).
pub(super) fn within_budget(
    start: u64,
    sized: impl IntoIterator<Item = (Entry, usize)>,
    max_bytes: usize,
) -> Vec<Entry> {
    let mut out = Vec::new();
    let mut bytes = 0usize;
    for (next, (entry, size)) in (start..).zip(sized) {
        if entry.log_id.index != next {
            break;
        }
        if !out.is_empty() && bytes.saturating_add(size) > max_bytes {
            break;
        }
        if out.is_empty() && size > max_bytes {
            tracing::warn!(
                index = next,
                bytes = size,
                max_append_bytes = max_bytes,
                "a log entry is larger than one replication batch may be; sending it alone"
            );
        }
        bytes = bytes.saturating_add(size);
        out.push(entry);
    }
    out
}

/// Like [`read_range`] over `[start, end)`, cut to at most `max_bytes` of
/// encoded entries (at least one), with each entry's encoded size. Stops
/// reading RocksDB at the budget, so a lagging follower's batch never
/// decodes (or holds in memory) more than one batch of entries.
pub(crate) fn read_range_limited(db: &DB, start: u64, end: u64, max_bytes: usize) -> io::Result<Vec<(Entry, usize)>> {
    let cf = db
        .cf_handle(CF_LOG)
        .ok_or_else(|| io::Error::other("column family log missing"))?;
    let from = index_key(start);
    let mut out = Vec::new();
    let mut bytes = 0usize;
    for item in db.iterator_cf(cf, rocksdb::IteratorMode::From(&from, rocksdb::Direction::Forward)) {
        let (key, value) = item.map_err(io::Error::other)?;
        let index = key_index(&key)?;
        if index >= end || (!out.is_empty() && bytes.saturating_add(value.len()) > max_bytes) {
            break;
        }
        let entry: Entry = decode(&value)?;
        debug_assert_eq!(entry.log_id.index, index, "log key and entry index disagree");
        bytes = bytes.saturating_add(value.len());
        out.push((entry, value.len()));
    }
    Ok(out)
}
