//! The node-level claims behind honest membership and health (issue 17):
//! what `add_learner_and_wait`, `promote_checked` and `Status::quorum` say
//! is true. Waits poll with generous deadlines.

use std::sync::Arc;
use std::time::Duration;

use cairn_raft::Error;
use cairn_raft::Member;
use cairn_raft::RaftNode;
use cairn_raft::Role;
use tempfile::TempDir;

use super::config;
use super::kv::Kv;
use super::Cluster;

fn voters(node: &RaftNode<Kv>) -> Vec<u64> {
    node.status().members.iter().filter(|m| m.voter).map(|m| m.id).collect()
}

/// A loopback address nothing listens on (until node 4 binds it).
fn unused_addr() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t277_a_learner_that_is_not_running_is_neither_caught_up_nor_promoted() {
    let c = Cluster::start(3, |_| {}).await;
    let leader = c.leader(Duration::from_secs(10)).await;
    let follower = (1..=3).find(|i| *i != leader).unwrap();
    let addr = unused_addr();
    let member = Member {
        raft_addr: addr.clone(),
        api_addr: "api-4".into(),
    };

    tracing::info!("on a follower: refused before anything changes");
    let err = c
        .node(follower)
        .add_learner_and_wait(4, member.clone(), Duration::from_secs(1))
        .await
        .unwrap_err();
    assert!(
        matches!(err, Error::NotLeader { leader: Some(l) } if l == leader),
        "{err:?}"
    );
    assert_eq!(c.node(leader).status().members.len(), 3);

    tracing::info!("on the leader: added, not caught up when the wait ends");
    let p = c
        .node(leader)
        .add_learner_and_wait(4, member.clone(), Duration::from_secs(1))
        .await
        .unwrap();
    assert!(!p.caught_up && !p.reachable && p.last_ack_ms.is_none(), "{p:?}");
    assert!(p.describe().contains("never answered the leader"), "{}", p.describe());
    assert_eq!(voters(c.node(leader)), vec![1, 2, 3]);

    tracing::info!("promoting it is refused, nothing changes");
    let err = c.node(leader).promote_checked(4, false).await.unwrap_err();
    assert!(
        matches!(&err, Error::Membership { reason } if reason.contains("not ready to vote")),
        "{err:?}"
    );
    assert_eq!(voters(c.node(leader)), vec![1, 2, 3]);
    let err = c.node(leader).promote_checked(9, false).await.unwrap_err();
    assert!(matches!(err, Error::UnknownMember { node_id: 9 }), "{err:?}");

    tracing::info!("once it runs: caught up, promoted, and a second promotion changes nothing");
    let dir = TempDir::new().unwrap();
    let mut cfg = config(&dir, 4);
    cfg.listen_addr = addr;
    let node4 = RaftNode::<Kv>::start_with_dialer(cfg, Arc::new(cairn_raft::TcpDialer))
        .await
        .unwrap();
    let p = c
        .node(leader)
        .add_learner_and_wait(4, member, Duration::from_secs(20))
        .await
        .unwrap();
    assert!(p.caught_up && p.reachable, "{p:?}");
    let done = c.node(leader).promote_checked(4, false).await.unwrap();
    assert!(!done.already_voter && done.progress.caught_up, "{done:?}");
    assert_eq!(voters(c.node(leader)), vec![1, 2, 3, 4]);
    let again = c.node(leader).promote_checked(4, false).await.unwrap();
    assert!(again.already_voter, "{again:?}");
    node4.shutdown().await.unwrap();
}

/// Poll `node`'s status until `check` holds (bounded: 10 s).
async fn status_becomes(c: &Cluster, id: u64, what: &str, check: impl Fn(&cairn_raft::Status) -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let st = c.node(id).status();
        if check(&st) {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "node {id}: never {what}: {st:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// [`Cluster::start_again`], retried while the stopped node's tasks still
/// hold its RocksDB lock (bounded: 10 s).
async fn start_again(c: &Cluster, id: u64) -> RaftNode<Kv> {
    let t = &c.nodes[&id];
    for _ in 0..100 {
        match RaftNode::<Kv>::start_with_dialer(t.config.clone(), Arc::new(t.links.clone())).await {
            Ok(node) => return node,
            Err(Error::Storage { what, .. }) if what.contains("open rocksdb") => {
                tokio::time::sleep(Duration::from_millis(100)).await
            }
            Err(e) => panic!("node {id} did not start again: {e}"),
        }
    }
    panic!("node {id}: its data dir stayed locked for 10 s after it stopped");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t278_status_quorum_follows_the_acknowledgements() {
    let mut c = Cluster::start(3, |_| {}).await;
    let leader = c.leader(Duration::from_secs(10)).await;
    let followers: Vec<u64> = (1..=3).filter(|i| *i != leader).collect();
    for id in 1..=3 {
        status_becomes(&c, id, "in touch with a quorum", |s| s.quorum).await;
    }
    status_becomes(&c, leader, "able to lose one", |s| s.fault_tolerance == Some(1)).await;
    assert_eq!(c.node(followers[0]).status().fault_tolerance, None);

    tracing::info!("both followers stop: the leader loses its quorum");
    for f in &followers {
        c.stop(*f).await;
    }
    status_becomes(&c, leader, "without a quorum", |s| {
        !s.quorum && s.role == Role::Leader && s.fault_tolerance == Some(0)
    })
    .await;

    tracing::info!("they come back: a quorum again");
    for f in &followers {
        let node = start_again(&c, *f).await;
        c.put_back(*f, node);
    }
    let leader = c.leader(Duration::from_secs(10)).await;
    for id in 1..=3 {
        status_becomes(&c, id, "in touch with a quorum", |s| s.quorum).await;
    }

    tracing::info!("one follower stops: still a quorum, none to spare");
    let down = (1..=3).find(|i| *i != leader).unwrap();
    c.stop(down).await;
    status_becomes(&c, leader, "able to lose none", |s| {
        s.quorum && s.fault_tolerance == Some(0)
    })
    .await;

    tracing::info!("the leader stops too: the follower left is not in touch with a quorum");
    let survivor = (1..=3).find(|i| *i != leader && *i != down).unwrap();
    c.stop(leader).await;
    status_becomes(&c, survivor, "out of touch", |s| !s.quorum).await;
}
