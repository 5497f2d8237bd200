//! Storage tests: openraft's conformance suite and reopen durability.

use openraft::storage::RaftLogStorage;
use openraft::storage::RaftStateMachine;
use openraft::testing::log::StoreBuilder;
use openraft::testing::log::Suite;
use openraft::RaftLogReader;
use openraft::StorageError;
use tempfile::TempDir;

use super::log_store::LogStore;
use super::sm_store::StateMachineStore;
use super::TypeConfig;
use crate::metrics::NodeMetrics;
use crate::storage::open_db;

#[path = "../../tests/it/kv.rs"]
#[allow(dead_code)]
pub(crate) mod kv;

async fn open(dir: &std::path::Path) -> (LogStore, StateMachineStore<kv::Kv>) {
    let db = open_db(dir).expect("open db");
    let log = LogStore::new(
        db.clone(),
        NodeMetrics::new().storage.clone(),
        crate::config::WalSync::GroupCommit,
    )
    .expect("log store");
    let sm = StateMachineStore::open(db).await.expect("sm store");
    (log, sm)
}

struct Builder;

impl StoreBuilder<TypeConfig, LogStore, StateMachineStore<kv::Kv>, TempDir> for Builder {
    async fn build(&self) -> Result<(TempDir, LogStore, StateMachineStore<kv::Kv>), StorageError<TypeConfig>> {
        let dir = TempDir::new().expect("temp dir");
        let (log, sm) = open(dir.path()).await;
        Ok((dir, log, sm))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t211_openraft_storage_suite() {
    Suite::test_all(Builder).await.expect("storage suite");
}

fn entry(term: u64, index: u64) -> super::Entry {
    use openraft::entry::RaftEntry;
    super::Entry::new_blank(openraft::alias::LogIdOf::<TypeConfig>::new(
        openraft::vote::leader_id_adv::LeaderId { term, node_id: 1 },
        index,
    ))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t221_vote_log_and_snapshot_survive_reopen() {
    let dir = TempDir::new().unwrap();
    let vote = super::Vote::new(3, 1);
    {
        let (mut log, mut sm) = open(dir.path()).await;
        log.save_vote(&vote).await.unwrap();
        use openraft::type_config::TypeConfigExt;
        let (tx, rx) = TypeConfig::oneshot();
        let cb = openraft::storage::IOFlushed::<TypeConfig>::signal(tx);
        log.append((1..=5).map(|i| entry(3, i)), cb).await.unwrap();
        rx.await.unwrap().expect("fsync ok");
        let mut builder = sm.get_snapshot_builder().await;
        use openraft::RaftSnapshotBuilder;
        builder.build_snapshot().await.unwrap();
    }
    // Dropped without any shutdown: as after a crash, only synced data counts.
    let (mut log, mut sm) = open(dir.path()).await;
    assert_eq!(log.read_vote().await.unwrap(), Some(vote));
    let entries = log.try_get_log_entries(1..=5).await.unwrap();
    let indexes: Vec<u64> = entries.iter().map(|e| e.log_id.index).collect();
    assert_eq!(indexes, vec![1, 2, 3, 4, 5], "log after reopen");
    let state = log.get_log_state().await.unwrap();
    assert_eq!(state.last_log_id.map(|l| l.index), Some(5));
    assert!(sm.get_current_snapshot().await.unwrap().is_some(), "snapshot survived");
}

/// The request id a leader keeps on its own proposals is in memory only: a
/// proposal encodes to the same bytes with or without it, so the log entry
/// format (and the forwarded request) did not change.
#[test]
fn t212_request_id_is_not_in_the_encoded_proposal() {
    let plain = super::Proposal {
        tag: None,
        proposed_at_ms: 7,
        fence_term: Some(3),
        command: vec![1, 2, 3],
        request_id: None,
    };
    let traced = super::Proposal {
        request_id: Some("req-42".into()),
        ..plain.clone()
    };
    let a = postcard::to_stdvec(&plain).expect("encode");
    let b = postcard::to_stdvec(&traced).expect("encode");
    assert_eq!(a, b, "the request id leaked into the encoded proposal");
    let back: super::Proposal = postcard::from_bytes(&b).expect("decode");
    assert_eq!(back, plain, "decodes as before, without the id");
}

fn log_id(term: u64, node_id: u64, index: u64) -> super::LogId {
    openraft::alias::LogIdOf::<TypeConfig>::new(openraft::vote::leader_id_adv::LeaderId { term, node_id }, index)
}

/// A normal entry carrying a command of `len` bytes, every header field at
/// its widest (all varints at 10 bytes).
fn big_entry(index: u64, len: usize) -> super::Entry {
    use openraft::entry::RaftEntry;
    super::Entry::new_normal(
        log_id(u64::MAX, u64::MAX, index),
        super::Proposal {
            tag: Some(cairn_state::ClientTag {
                client_id: u64::MAX,
                seq: u64::MAX,
            }),
            proposed_at_ms: u64::MAX,
            fence_term: Some(u64::MAX),
            command: vec![7; len],
            request_id: None,
        },
    )
}

/// The header bounds the config validation relies on (an entry fits an
/// append, an append fits a frame) are true of the real encodings.
#[test]
fn t231_entry_and_append_headers_stay_within_their_bounds() {
    use crate::config::APPEND_HEADER_MAX_BYTES;
    use crate::config::ENTRY_HEADER_MAX_BYTES;
    let len = 1 << 20;
    let entry = big_entry(u64::MAX, len);
    let entry_bytes = postcard::to_stdvec(&entry).unwrap().len();
    assert!(
        entry_bytes - len <= ENTRY_HEADER_MAX_BYTES,
        "an entry adds {} bytes to its command",
        entry_bytes - len
    );
    let entries = vec![big_entry(u64::MAX - 1, len), entry];
    let payload: usize = entries.iter().map(|e| postcard::to_stdvec(e).unwrap().len()).sum();
    let frame = super::protocol::RequestFrame {
        id: u64::MAX,
        body: super::protocol::Request::Append(super::AppendEntriesRequest {
            vote: super::Vote::new_committed(u64::MAX, u64::MAX),
            prev_log_id: Some(log_id(u64::MAX, u64::MAX, u64::MAX)),
            leader_commit: Some(log_id(u64::MAX, u64::MAX, u64::MAX)),
            entries,
        }),
    };
    let frame_bytes = postcard::to_stdvec(&frame).unwrap().len();
    assert!(
        frame_bytes - payload <= APPEND_HEADER_MAX_BYTES,
        "an append adds {} bytes to its entries",
        frame_bytes - payload
    );
}

/// Replication reads are cut by bytes, from the tail cache and from
/// RocksDB alike, and an entry over the budget still goes, alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t232_replication_reads_are_cut_by_bytes() {
    let dir = TempDir::new().unwrap();
    let entry_bytes = |e: &super::Entry| postcard::to_stdvec(e).unwrap().len();
    let entries: Vec<super::Entry> = (1..=10)
        .map(|i| big_entry(i, if i == 6 { 300_000 } else { 100_000 }))
        .collect();
    let one = entry_bytes(&entries[0]);
    {
        let (mut log, _sm) = open(dir.path()).await;
        log.max_append_bytes = 2 * one + 10;
        use openraft::type_config::TypeConfigExt;
        let (tx, rx) = TypeConfig::oneshot();
        log.append(entries.clone(), openraft::storage::IOFlushed::<TypeConfig>::signal(tx))
            .await
            .unwrap();
        rx.await.unwrap().expect("fsync ok");
        // From the tail cache.
        let got = log.limited_get_log_entries(1, 11).await.unwrap();
        assert_eq!(got.iter().map(|e| e.log_id.index).collect::<Vec<_>>(), vec![1, 2]);
        let got = log.limited_get_log_entries(6, 11).await.unwrap();
        assert_eq!(
            got.iter().map(|e| e.log_id.index).collect::<Vec<_>>(),
            vec![6],
            "an entry over the budget goes alone"
        );
    }
    // Reopened: nothing cached, read from RocksDB.
    let (mut log, _sm) = open(dir.path()).await;
    log.max_append_bytes = 2 * one + 10;
    let got = log.limited_get_log_entries(3, 11).await.unwrap();
    assert_eq!(got.iter().map(|e| e.log_id.index).collect::<Vec<_>>(), vec![3, 4]);
    let got = log.limited_get_log_entries(5, 6).await.unwrap();
    assert_eq!(got.iter().map(|e| e.log_id.index).collect::<Vec<_>>(), vec![5]);
    let got = log.limited_get_log_entries(6, 11).await.unwrap();
    assert_eq!(got.iter().map(|e| e.log_id.index).collect::<Vec<_>>(), vec![6]);
    log.max_append_bytes = usize::MAX;
    assert_eq!(log.limited_get_log_entries(1, 11).await.unwrap().len(), 10);
}
