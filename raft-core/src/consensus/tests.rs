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
mod kv;

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
async fn t10_openraft_storage_suite() {
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
async fn t20_vote_log_and_snapshot_survive_reopen() {
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
fn t11_request_id_is_not_in_the_encoded_proposal() {
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
