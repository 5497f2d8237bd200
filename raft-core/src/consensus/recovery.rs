//! Offline operations on a stopped node's data dir: seeding a new one-node
//! cluster from a backup ([`restore_backup`]), and turning the survivor of a
//! lost quorum into a one-node cluster that keeps everything it had
//! ([`force_new_cluster`]).
//!
//! # How membership is rewritten
//!
//! openraft takes a node's membership from the last membership entry in its
//! log, or, when the log holds none after the state machine's applied
//! index, from the membership stored with the applied state (our snapshot).
//! Rewriting a membership entry in place would change a log entry that
//! others may hold, and appending one by hand needs a term no leader used.
//! Both operations here therefore write the same thing, which openraft
//! already knows how to start from — the state a follower has right after
//! installing a snapshot and purging its log:
//!
//! - a snapshot at log id `L` whose state is the state to keep and whose
//!   membership is `{this node}` (a voter, with its addresses), recorded at `L`;
//! - an empty log with `last_purged = L`, and `committed = L`;
//! - a vote for this node in a term at least `L`'s (not committed).
//!
//! On start the node restores the snapshot, sees itself as the only voter,
//! elects itself after one election timeout (in the next term) and appends
//! from `L + 1`. Others join it as learners and are promoted; a learner
//! receives the snapshot, then the log.
//!
//! # What force-new-cluster keeps and loses
//!
//! The survivor's snapshot is replayed with **every** entry in its log,
//! including those after the commit index it knew: they become committed in
//! the new cluster. Raft never told a client that an appended entry failed
//! (a write that did not commit is reported "outcome unknown"), so applying
//! it contradicts no answer, and keeping it saves every acknowledged write
//! the survivor holds. What is lost is what never reached the survivor:
//! writes committed by a majority of the *other* nodes (e.g. the two that
//! died) while the survivor lagged or was partitioned away. Those were
//! acknowledged to their clients and are gone with the dead nodes' disks;
//! no tool can bring them back without those disks.
//!
//! The old nodes must never start again with their old data: two of them
//! are still a majority of the old configuration and could elect a leader
//! of their own. Wipe their data dirs before they rejoin (as new nodes).

use std::collections::BTreeMap;
use std::collections::BTreeSet;
use std::path::Path;

use cairn_state::StateMachine;
use openraft::vote::leader_id_adv::LeaderId;
use rocksdb::WriteBatch;
use rocksdb::WriteOptions;
use rocksdb::DB;

use super::log_store::decode;
use super::log_store::encode;
use super::log_store::index_key;
use super::log_store::read_range;
use super::log_store::KEY_COMMITTED;
use super::log_store::KEY_LAST_PURGED;
use super::log_store::KEY_VOTE;
use super::sm_store::load_snapshot_sync;
use super::sm_store::Replica;
use super::sm_store::StoredSnapshot;
use super::sm_store::KEY_SNAPSHOT;
use super::term_of;
use super::LogId;
use super::Member;
use super::NodeId;
use super::StoredMembership;
use super::Vote;
use crate::backup::Backup;
use crate::error::Error;
use crate::storage::open_db;
use crate::storage::CF_LOG;
use crate::storage::CF_META;
use crate::storage::CF_SM;

/// Log entries replayed per read: bounds memory while replaying a long log.
const REPLAY_BATCH: u64 = 1024;

/// What [`restore_backup`] wrote.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RestoreReport {
    /// The node the data dir now belongs to.
    pub node_id: NodeId,
    /// Log index the restored state is at; the new cluster appends after it.
    pub index: u64,
    /// Term recorded with it.
    pub term: u64,
}

/// What [`force_new_cluster`] found and wrote.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecoveryReport {
    /// The node, now the only voter.
    pub node_id: NodeId,
    /// Its addresses, as recorded in the new membership.
    pub member: Member,
    /// Voters of the configuration it had before (its last membership
    /// entry, committed or not).
    pub previous_voters: BTreeSet<NodeId>,
    /// Index of the snapshot it had, if any.
    pub snapshot_index: Option<u64>,
    /// The commit index it knew (`None` if it never learned one).
    pub committed_index: Option<u64>,
    /// Its last log index: everything up to here is kept.
    pub last_index: u64,
    /// Entries after the known commit index that were kept; the new cluster
    /// commits them (see the module docs).
    pub kept_beyond_commit: u64,
}

fn recovery(reason: impl Into<String>) -> Error {
    Error::Recovery { reason: reason.into() }
}

fn storage(what: &str) -> impl Fn(std::io::Error) -> Error + '_ {
    move |source| Error::Storage {
        what: what.to_string(),
        source,
    }
}

fn open_existing(data_dir: &Path) -> Result<std::sync::Arc<DB>, Error> {
    open_db(data_dir).map_err(|e| match e {
        Error::Storage { what, source } if source.to_string().contains("lock") => recovery(format!(
            "{what}: {source} — is the node still running? Stop it first (this works only on a stopped node)"
        )),
        other => other,
    })
}

/// `{id}` as the only voter, recorded at `at`.
fn single_voter(id: NodeId, member: Member, at: LogId) -> Result<StoredMembership, Error> {
    let membership = openraft::Membership::new(vec![BTreeSet::from([id])], BTreeMap::from([(id, member)]))
        .map_err(|e| recovery(format!("cannot build the one-node membership: {e}")))?;
    Ok(StoredMembership::new(Some(at), membership))
}

/// Write `replica` as the snapshot, empty the log behind it and set the
/// Raft metadata to match (see the module docs), in one synced batch.
fn write_seed<S: StateMachine>(db: &DB, replica: &Replica<S>, vote: Vote) -> Result<(), Error> {
    let Some(last) = replica.last_applied else {
        return Err(recovery("nothing to write: the state has no log position"));
    };
    let (meta, data) = replica.to_snapshot().map_err(storage("encode the snapshot"))?;
    let stored = encode(&StoredSnapshot {
        meta,
        data: data.to_vec(),
    })
    .map_err(storage("encode the snapshot"))?;
    let cf = |name: &str| {
        db.cf_handle(name)
            .ok_or_else(|| recovery(format!("column family {name} missing")))
    };
    let (cf_log, cf_meta, cf_sm) = (cf(CF_LOG)?, cf(CF_META)?, cf(CF_SM)?);
    let mut batch = WriteBatch::default();
    batch.put_cf(cf_sm, KEY_SNAPSHOT, stored);
    batch.delete_range_cf(cf_log, index_key(0), index_key(u64::MAX));
    batch.delete_cf(cf_log, index_key(u64::MAX));
    batch.put_cf(cf_meta, KEY_LAST_PURGED, encode(&last).map_err(storage("encode"))?);
    batch.put_cf(cf_meta, KEY_COMMITTED, encode(&Some(last)).map_err(storage("encode"))?);
    batch.put_cf(cf_meta, KEY_VOTE, encode(&vote).map_err(storage("encode"))?);
    let mut opts = WriteOptions::default();
    opts.set_sync(true);
    db.write_opt(batch, &opts)
        .map_err(|e| storage("write the seeded state")(std::io::Error::other(e)))
}

/// Seed the empty data dir `data_dir` with `backup`, so that a node started
/// on it as node `id`, reachable at `member`, is a one-node cluster holding
/// the backed-up state; other nodes then join it. Refuses a data dir that
/// already holds anything, and a backup whose state does not decode.
pub fn restore_backup<S: StateMachine>(
    data_dir: &Path,
    id: NodeId,
    member: Member,
    backup: &Backup,
) -> Result<RestoreReport, Error> {
    if id == 0 {
        return Err(recovery("node id 0 is reserved; use 1 or more"));
    }
    let machine = S::restore(&backup.state).map_err(|e| Error::Backup {
        reason: format!("the backed-up state does not load: {e}"),
    })?;
    let occupied = std::fs::read_dir(data_dir)
        .map(|mut entries| entries.next().is_some())
        .unwrap_or(false);
    if occupied {
        return Err(recovery(format!(
            "{} is not empty; restore only into a new, empty data dir",
            data_dir.display()
        )));
    }
    // Index 0 is where a cluster's first membership entry goes; a backup of
    // a cluster that never applied anything is restored at 1.
    let index = backup.index.max(1);
    let term = backup.term.max(1);
    let at = LogId::new(LeaderId { term, node_id: id }, index);
    let replica = Replica {
        machine,
        sessions: Default::default(),
        last_applied: Some(at),
        membership: single_voter(id, member, at)?,
    };
    let db = open_db(data_dir)?;
    write_seed(&db, &replica, Vote::new(term, id))?;
    tracing::info!(id, index, term, dir = %data_dir.display(), "restored a backup into a new one-node cluster");
    Ok(RestoreReport {
        node_id: id,
        index,
        term,
    })
}

/// Turn the stopped node `id` whose data is in `data_dir` into a one-node
/// cluster that keeps its whole log (see the module docs for what that
/// keeps and loses). Its addresses are taken from its last membership
/// unless `member` is given. Refuses a data dir without node data, and one
/// a running node holds.
pub fn force_new_cluster<S: StateMachine>(
    data_dir: &Path,
    id: NodeId,
    member: Option<Member>,
) -> Result<RecoveryReport, Error> {
    if !data_dir.join("CURRENT").exists() {
        return Err(recovery(format!(
            "{} holds no node data (no RocksDB CURRENT file)",
            data_dir.display()
        )));
    }
    let db = open_existing(data_dir)?;
    let mut replica = match load_snapshot_sync(&db).map_err(storage("read the snapshot"))? {
        Some(s) => Replica::<S>::from_snapshot(&s.data).map_err(storage("load the snapshot"))?,
        None => Replica::default(),
    };
    let snapshot_index = replica.last_applied.map(|l| l.index);
    let meta = |key: &[u8]| -> Result<Option<Vec<u8>>, Error> {
        let cf = db
            .cf_handle(CF_META)
            .ok_or_else(|| recovery("column family meta missing"))?;
        db.get_cf(cf, key)
            .map_err(|e| storage("read raft metadata")(std::io::Error::other(e)))
    };
    let committed: Option<LogId> = match meta(KEY_COMMITTED)? {
        Some(b) => decode::<Option<LogId>>(&b).map_err(storage("decode the committed index"))?,
        None => None,
    };
    let vote: Option<Vote> = match meta(KEY_VOTE)? {
        Some(b) => Some(decode(&b).map_err(storage("decode the vote"))?),
        None => None,
    };

    // Replay every entry after the snapshot, in order, without a gap.
    // Bounded: each round consumes at least one entry of a finite log.
    let mut next = replica.last_applied.map(|l| l.index + 1).unwrap_or(0);
    loop {
        let batch = read_range(&db, next, Some(next.saturating_add(REPLAY_BATCH))).map_err(storage("read the log"))?;
        let Some(first) = batch.first() else { break };
        if first.log_id.index != next {
            return Err(recovery(format!(
                "the log continues at index {} but the state is at {}: entries are missing, nothing was changed",
                first.log_id.index,
                next.saturating_sub(1)
            )));
        }
        for entry in &batch {
            debug_assert_eq!(entry.log_id.index, next, "read_range returns contiguous keys");
            replica.apply_entry(entry);
            next = entry.log_id.index + 1;
        }
    }
    let Some(last) = replica.last_applied else {
        return Err(recovery(
            "this node has no state (no snapshot, empty log): nothing to recover; start it as a new node",
        ));
    };
    let previous = replica.membership.membership().clone();
    let previous_voters: BTreeSet<NodeId> = previous.voter_ids().collect();
    let member = match member {
        Some(m) => m,
        None => previous
            .nodes()
            .find(|(n, _)| **n == id)
            .map(|(_, m)| m.clone())
            .ok_or_else(|| {
                recovery(format!(
                    "node {id} is not in its last membership ({previous_voters:?}), so its addresses are unknown; give them"
                ))
            })?,
    };
    replica.membership = single_voter(id, member.clone(), last)?;
    let vote_term = vote.map(|v| v.leader_id.term).unwrap_or(0).max(term_of(&last));
    write_seed(&db, &replica, Vote::new(vote_term, id))?;
    // Whatever is in the snapshot was committed, whatever the (unsynced)
    // committed index says.
    let committed_index = committed.map(|c| c.index).max(snapshot_index);
    let kept_beyond_commit = match committed_index {
        Some(c) => last.index.saturating_sub(c),
        None => last.index + 1,
    };
    tracing::warn!(
        id,
        last_index = last.index,
        ?committed_index,
        kept_beyond_commit,
        ?previous_voters,
        "forced a new one-node cluster from this node's data"
    );
    Ok(RecoveryReport {
        node_id: id,
        member,
        previous_voters,
        snapshot_index,
        committed_index,
        last_index: last.index,
        kept_beyond_commit,
    })
}

/// Fault injection, for testing divergence detection (`cairn check
/// consistency`, the chaos suite's state-hash check) against a replica that
/// really diverged: on a **stopped** node's data dir, replace the payload of
/// the stored log entry at `index` by a blank one under the same log id.
/// When the node starts it re-applies its log from its snapshot, so the
/// command at `index` is missing from its state while the others applied
/// it; its log id still matches the leader's, so Raft never repairs it —
/// exactly what silent corruption or a lost-and-rewritten entry looks like.
///
/// Refuses an index that is not in the log (purged into a snapshot, or not
/// yet appended). Never use it on a node you care about.
#[doc(hidden)]
pub fn blank_log_entry(data_dir: &Path, index: u64) -> Result<(), Error> {
    let db = open_existing(data_dir)?;
    if let Some(snapshot) = load_snapshot_sync(&db).map_err(storage("reading the snapshot"))? {
        if snapshot.meta.last_log_id.is_some_and(|l| l.index >= index) {
            return Err(recovery(format!(
                "index {index} is covered by the snapshot at {:?}: re-applying would not read it",
                snapshot.meta.last_log_id
            )));
        }
    }
    let entry = read_range(&db, index, Some(index + 1))
        .map_err(storage("reading the log"))?
        .pop()
        .ok_or_else(|| recovery(format!("no log entry at index {index}")))?;
    let blank = <super::Entry as openraft::entry::RaftEntry>::new_blank(entry.log_id);
    let cf_log = db
        .cf_handle(CF_LOG)
        .ok_or_else(|| recovery("column family log missing"))?;
    let mut opts = WriteOptions::default();
    opts.set_sync(true);
    db.put_cf_opt(
        cf_log,
        index_key(index),
        encode(&blank).map_err(storage("encoding"))?,
        &opts,
    )
    .map_err(|e| storage("writing the log")(std::io::Error::other(e)))?;
    Ok(())
}
