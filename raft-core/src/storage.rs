//! Opening the node's RocksDB and running its calls off the async runtime.

use std::io;
use std::path::Path;
use std::sync::Arc;

use rocksdb::ColumnFamilyDescriptor;
use rocksdb::DBCompressionType;
use rocksdb::Options;
use rocksdb::DB;

use crate::error::Error;

/// Raft log entries, keyed by big-endian index.
pub(crate) const CF_LOG: &str = "log";
/// Raft metadata: vote, committed, last purged.
pub(crate) const CF_META: &str = "meta";
/// The state machine's latest snapshot and its applied index/membership.
pub(crate) const CF_SM: &str = "sm";

/// Open (or create) the node's database with its column families.
///
/// Tuned for a Raft log on an SD card: no compression (entries are small
/// and already compact postcard), a modest memtable and block cache so a Pi
/// with 1 GiB of RAM is not crowded, and few background threads.
pub(crate) fn open_db(dir: &Path) -> Result<Arc<DB>, Error> {
    std::fs::create_dir_all(dir).map_err(|source| Error::DataDir {
        path: dir.display().to_string(),
        source,
    })?;
    let mut opts = Options::default();
    opts.create_if_missing(true);
    opts.create_missing_column_families(true);
    opts.set_compression_type(DBCompressionType::None);
    opts.set_max_background_jobs(2);
    opts.set_keep_log_file_num(2);
    opts.set_max_total_wal_size(64 << 20);
    opts.set_write_buffer_size(8 << 20);

    let cf = |name: &str| {
        let mut o = Options::default();
        o.set_compression_type(DBCompressionType::None);
        o.set_write_buffer_size(8 << 20);
        ColumnFamilyDescriptor::new(name, o)
    };
    let db = DB::open_cf_descriptors(&opts, dir, [cf(CF_LOG), cf(CF_META), cf(CF_SM)]).map_err(|e| Error::Storage {
        what: format!("open rocksdb at {}", dir.display()),
        source: io::Error::other(e),
    })?;
    Ok(Arc::new(db))
}

/// Run a blocking RocksDB call on tokio's blocking pool, so that an fsync or
/// a compaction stall never parks a runtime worker.
pub(crate) async fn blocking<T, F>(f: F) -> io::Result<T>
where
    F: FnOnce() -> io::Result<T> + Send + 'static,
    T: Send + 'static,
{
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| io::Error::other(format!("storage task failed: {e}")))?
}
