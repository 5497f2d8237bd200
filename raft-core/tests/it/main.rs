//! raft-core integration tests: real nodes on loopback in one process.

mod honesty;
mod kv;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use cairn_raft::AppChannel;
use cairn_raft::Consistency;
use cairn_raft::Error;
use cairn_raft::LinkControl;
use cairn_raft::Member;
use cairn_raft::NativeClient;
use cairn_raft::RaftNode;
use cairn_raft::RaftNodeConfig;
use cairn_raft::Role;
use cairn_raft::TcpDialer;
use cairn_state::ClientTag;
use futures::StreamExt;
use kv::cas;
use kv::set;
use kv::Kv;
use tempfile::TempDir;

struct TestNode {
    node: Option<RaftNode<Kv>>,
    links: LinkControl,
    config: RaftNodeConfig,
}

struct Cluster {
    _dir: TempDir,
    nodes: BTreeMap<u64, TestNode>,
}

fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn,it=info".into()),
        )
        .with_test_writer()
        .try_init();
}

fn config(dir: &TempDir, id: u64) -> RaftNodeConfig {
    let mut c = RaftNodeConfig::new(id, "127.0.0.1:0", dir.path().join(format!("n{id}")));
    c.api_addr = format!("api-{id}");
    c
}

impl Cluster {
    async fn start(n: u64, tweak: impl Fn(&mut RaftNodeConfig)) -> Self {
        init_tracing();
        let dir = TempDir::new().unwrap();
        let mut nodes = BTreeMap::new();
        for id in 1..=n {
            let mut c = config(&dir, id);
            tweak(&mut c);
            let links = LinkControl::new(Arc::new(TcpDialer));
            let node = RaftNode::<Kv>::start_with_dialer(c.clone(), Arc::new(links.clone()))
                .await
                .unwrap();
            // Pin the real port so a restart reuses the address peers know.
            c.listen_addr = node.raft_addr().to_string();
            nodes.insert(
                id,
                TestNode {
                    node: Some(node),
                    links,
                    config: c,
                },
            );
        }
        let cluster = Self { _dir: dir, nodes };
        let members = cluster.members();
        cluster.node(1).initialize(members).await.unwrap();
        cluster.leader(Duration::from_secs(10)).await;
        cluster
    }

    fn members(&self) -> BTreeMap<u64, Member> {
        self.nodes
            .iter()
            .map(|(id, n)| {
                (
                    *id,
                    Member {
                        raft_addr: n.config.listen_addr.clone(),
                        api_addr: n.config.api_addr.clone(),
                    },
                )
            })
            .collect()
    }

    fn node(&self, id: u64) -> &RaftNode<Kv> {
        self.nodes[&id].node.as_ref().expect("node is running")
    }

    async fn leader(&self, timeout: Duration) -> u64 {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            for (id, n) in &self.nodes {
                if let Some(node) = &n.node {
                    if node.status().role == Role::Leader {
                        return *id;
                    }
                }
            }
            assert!(tokio::time::Instant::now() < deadline, "no leader within {timeout:?}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Shut node `id` down gracefully.
    async fn stop(&mut self, id: u64) {
        let t = self.nodes.get_mut(&id).unwrap();
        t.node.take().unwrap().shutdown().await.unwrap();
    }

    /// Start a stopped node `id` again from its data dir, on the same
    /// address and links. Returns it; [`Cluster::put_back`] puts it back.
    async fn start_again(&self, id: u64) -> RaftNode<Kv> {
        let t = &self.nodes[&id];
        RaftNode::<Kv>::start_with_dialer(t.config.clone(), Arc::new(t.links.clone()))
            .await
            .unwrap()
    }

    fn put_back(&mut self, id: u64, node: RaftNode<Kv>) {
        self.nodes.get_mut(&id).unwrap().node = Some(node);
    }

    fn isolate(&self, id: u64, cut: bool) {
        for (other, n) in &self.nodes {
            if *other != id {
                n.links.set_blocked(id, cut);
                self.nodes[&id].links.set_blocked(*other, cut);
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t210_bootstrap_replicate_through_follower() {
    let c = Cluster::start(3, |_| {}).await;
    let leader = c.leader(Duration::from_secs(5)).await;
    let follower = (1..=3).find(|i| *i != leader).unwrap();
    tracing::info!(
        leader,
        follower,
        "writes through a follower are forwarded to the leader"
    );
    for i in 0..100 {
        let out = c
            .node(follower)
            .write(set(format!("k{i}"), format!("v{i}")))
            .await
            .unwrap();
        assert_eq!(out.response, Ok(None));
    }
    tracing::info!("linearizable reads on every node see every write");
    for id in 1..=3 {
        let n = c
            .node(id)
            .read(Consistency::Linearizable, |kv| kv.map.len())
            .await
            .unwrap();
        assert_eq!(n, 100, "node {id} saw {n} keys");
    }
    let status = c.node(leader).status();
    assert_eq!(status.members.len(), 3);
    assert!(status.members.iter().all(|m| m.voter));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t220_initialize_twice_is_refused() {
    let c = Cluster::start(3, |_| {}).await;
    let before = c.node(1).status();
    let err = c.node(1).initialize(c.members()).await.unwrap_err();
    assert!(matches!(err, Error::AlreadyInitialized { node_id: 1 }), "got {err:?}");
    let err = c.node(2).initialize(c.members()).await.unwrap_err();
    assert!(matches!(err, Error::AlreadyInitialized { node_id: 2 }), "got {err:?}");
    assert_eq!(c.node(1).status().members, before.members, "membership unchanged");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t230_retried_write_applies_once() {
    let c = Cluster::start(3, |_| {}).await;
    let tag = ClientTag { client_id: 42, seq: 1 };
    let first = c.node(2).write_tagged(tag, set("a", "1")).await.unwrap();
    tracing::info!("the same tag again, through another node, returns the first outcome");
    let again = c.node(3).write_tagged(tag, set("a", "2")).await.unwrap();
    assert_eq!(again.response, first.response);
    let (applied, value) = c
        .node(1)
        .read(Consistency::Linearizable, |kv| (kv.applied, kv.map.get("a").cloned()))
        .await
        .unwrap();
    assert_eq!(applied, 1, "the retry must not apply");
    assert_eq!(value.as_deref(), Some("1"));
    let next = ClientTag { client_id: 42, seq: 2 };
    c.node(1).write_tagged(next, set("a", "3")).await.unwrap();
    let err = c.node(1).write_tagged(tag, set("a", "4")).await.unwrap_err();
    assert!(
        matches!(err, Error::Rejected { .. }),
        "an old retry is rejected, got {err:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t240_learner_after_purge_catches_up_by_snapshot() {
    let mut c = Cluster::start(3, |cfg| {
        cfg.snapshots.snapshot_every_entries = 50;
        cfg.snapshots.logs_kept_after_snapshot = 5;
    })
    .await;
    for i in 0..300 {
        c.node(1).write(set(format!("k{i}"), "x")).await.unwrap();
    }
    let leader = c.leader(Duration::from_secs(5)).await;
    let purged = c.node(leader).status().purged_index;
    tracing::info!(?purged, "the leader purged its log behind a snapshot");
    assert!(purged.unwrap_or(0) > 100, "log was not purged: {purged:?}");

    let dir = TempDir::new().unwrap();
    let cfg = config(&dir, 4);
    let learner = RaftNode::<Kv>::start(cfg.clone()).await.unwrap();
    let member = Member {
        raft_addr: learner.raft_addr().to_string(),
        api_addr: cfg.api_addr.clone(),
    };
    c.node(2).add_learner(4, member).await.unwrap();
    let applied = c.node(leader).status().applied_index.unwrap();
    learner.wait_applied(applied, Duration::from_secs(10)).await.unwrap();
    let st = learner.status();
    assert_eq!(st.role, Role::Learner);
    assert!(
        st.snapshot_index.is_some(),
        "learner did not install a snapshot: {st:?}"
    );
    let theirs = learner.local_state(|kv| kv.clone());
    let ours = c.node(leader).local_state(|kv| kv.clone());
    assert_eq!(theirs.map, ours.map, "learner state equals the leader's");
    tracing::info!("a state restored from a snapshot hashes like the one applied entry by entry");
    let mut hashes = (learner.state_hash().unwrap(), c.node(leader).state_hash().unwrap());
    // Bounded: the learner applies the leader's last (membership) entries
    // within a few heartbeats.
    for _ in 0..50 {
        if hashes.0.applied_index == hashes.1.applied_index {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        hashes = (learner.state_hash().unwrap(), c.node(leader).state_hash().unwrap());
    }
    assert_eq!(hashes.0.applied_index, hashes.1.applied_index, "{hashes:?}");
    assert_eq!(hashes.0, hashes.1, "equal index, equal state, equal hash");
    assert_eq!(hashes.0.sha256.len(), 64, "{hashes:?}");
    c.node(leader).write(set("k0", "changed")).await.unwrap();
    let after = c.node(leader).state_hash().unwrap();
    assert!(after.applied_index > hashes.1.applied_index, "{after:?}");
    assert_ne!(after.sha256, hashes.1.sha256, "a write changes the hash");
    c.nodes.remove(&4);
    learner.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t250_rejoining_node_does_not_depose_leader() {
    let c = Cluster::start(3, |_| {}).await;
    let leader = c.leader(Duration::from_secs(5)).await;
    c.node(leader).write(set("before", "1")).await.unwrap();
    let victim = (1..=3).find(|i| *i != leader).unwrap();
    let term = c.node(leader).status().term;
    tracing::info!(victim, "partition a follower for several election timeouts");
    c.isolate(victim, true);
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        c.node(victim).status().term,
        term,
        "pre-vote: an isolated node must not inflate its term"
    );
    c.isolate(victim, false);
    tracing::info!("heal: the leader keeps leading, the term does not move");
    c.node(leader).write(set("after", "1")).await.unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let st = c.node(leader).status();
    assert_eq!(st.role, Role::Leader, "leader was deposed: {st:?}");
    assert_eq!(st.term, term);
    c.node(victim)
        .wait_applied(st.applied_index.unwrap(), Duration::from_secs(5))
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t260_garbage_frame_closes_only_that_connection() {
    use tokio::io::AsyncReadExt;
    use tokio::io::AsyncWriteExt;
    let c = Cluster::start(3, |_| {}).await;
    let addr = c.node(2).raft_addr().to_string();
    for garbage in [
        &[0xffu8, 0xff, 0xff, 0xff, 1, 2, 3][..],
        &[0, 0, 0, 3, 0xff, 0xff, 0xff][..],
    ] {
        let mut s = tokio::net::TcpStream::connect(&addr).await.unwrap();
        s.write_all(garbage).await.unwrap();
        let mut buf = [0u8; 16];
        let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf))
            .await
            .expect("server closes the connection")
            .unwrap_or(0);
        assert_eq!(n, 0, "server should close, not answer");
    }
    let rejected = c.node(2).metrics().registry().gather();
    let count = rejected
        .iter()
        .find(|m| m.name() == "cairn_transport_rejected_frames_total")
        .map(|m| m.get_metric()[0].get_counter().get_value())
        .unwrap_or(0.0);
    assert_eq!(count, 2.0);
    tracing::info!("the node keeps serving the cluster");
    c.node(2).write(set("still", "alive")).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t270_removing_unknown_member_is_refused() {
    let c = Cluster::start(3, |_| {}).await;
    let err = c.node(1).remove(99).await.unwrap_err();
    assert!(matches!(err, Error::UnknownMember { node_id: 99 }), "got {err:?}");
    assert_eq!(c.node(1).status().members.len(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t280_leader_stops_new_leader_then_old_one_catches_up() {
    let mut c = Cluster::start(3, |_| {}).await;
    let old = c.leader(Duration::from_secs(5)).await;
    for i in 0..50 {
        c.node(old).write(set(format!("a{i}"), "1")).await.unwrap();
    }
    let term_before = c.node(old).status().term;
    tracing::info!(old, "stop the leader");
    c.stop(old).await;
    let started = std::time::Instant::now();
    let new = c.leader(Duration::from_secs(10)).await;
    tracing::info!(new, took_ms = started.elapsed().as_millis() as u64, "new leader");
    assert_ne!(new, old);
    let mut applied = 0;
    for i in 0..50 {
        applied = c.node(new).write(set(format!("b{i}"), "1")).await.unwrap().index;
    }
    tracing::info!("restart the old leader from its data dir");
    let node = c.start_again(old).await;
    // Right away: a status taken before the Raft core's first report used
    // to be openraft's initial one (term 0, learner), so a restarted node
    // seemed to go back in term (jepsen seed 58, `--nemesis disk`).
    let st = node.status();
    assert!(
        st.term >= term_before && st.last_log_index.is_some(),
        "right after a restart the status shows term {} (durable term {term_before}): {st:?}",
        st.term
    );
    node.wait_applied(applied, Duration::from_secs(10)).await.unwrap();
    assert_eq!(node.local_state(|kv| kv.map.len()), 100);
    c.put_back(old, node);
}

/// A leader that restarts (a power cut, a watchdog reset) leads again only
/// by winning an election in a newer term, never by resuming its old one:
/// its log may have lost a tail that the followers committed (issue 25).
/// With openraft's default leader restore the restarted node reported
/// itself leader in its old term within milliseconds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t282_a_restarted_leader_leads_again_only_through_an_election() {
    let mut c = Cluster::start(3, |_| {}).await;
    let old = c.leader(Duration::from_secs(5)).await;
    for i in 0..20 {
        c.node(old).write(set(format!("a{i}"), "1")).await.unwrap();
    }
    let term_before = c.node(old).status().term;
    tracing::info!(old, term_before, "stop the leader and restart it at once");
    c.stop(old).await;
    let node = c.start_again(old).await;
    c.put_back(old, node);
    // Watch every node for a while: nobody may lead in the old term after
    // the restart, and a leader of a newer term must appear.
    let deadline = std::time::Instant::now() + Duration::from_secs(3);
    let mut new_leader = None;
    while std::time::Instant::now() < deadline {
        for (id, n) in &c.nodes {
            let st = n.node.as_ref().unwrap().status();
            if st.role == Role::Leader {
                assert!(
                    st.term > term_before,
                    "node {id} leads in term {} after the old leader's restart (term before: {term_before}): {st:?}",
                    st.term
                );
                new_leader = Some(*id);
            }
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let leader = new_leader.expect("a leader of a newer term within 3 s");
    // The index of the write itself: `leader` may have lost leadership
    // since it was seen leading (the write is then forwarded), and a
    // follower's own applied index can still be short of it.
    let applied = c.node(leader).write(set("after", "1")).await.unwrap().index;
    for id in 1..=3 {
        c.node(id).wait_applied(applied, Duration::from_secs(5)).await.unwrap();
        assert_eq!(c.node(id).local_state(|kv| kv.map.len()), 21, "node {id}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t285_native_client_finds_the_leader_and_follows_it_when_it_stops() {
    let mut c = Cluster::start(3, |_| {}).await;
    assert!(matches!(NativeClient::<Kv>::new(vec![]), Err(Error::Config { .. })));
    let old = c.leader(Duration::from_secs(5)).await;
    let follower = (1..=3).find(|i| *i != old).unwrap();
    // A dead endpoint and a follower: the client must skip the first and
    // learn the leader from the follower's answer.
    let endpoints = vec!["127.0.0.1:1".to_string(), c.nodes[&follower].config.listen_addr.clone()];
    let client = NativeClient::<Kv>::new(endpoints).unwrap();
    let mut last = 0;
    for i in 0..50 {
        let out = client.write(&set(format!("k{i}"), format!("v{i}"))).await.unwrap();
        assert_eq!(out.response, Ok(None));
        assert!(out.index > last, "indexes increase: {} after {last}", out.index);
        last = out.index;
    }
    let out = client.write(&set("k0", "again")).await.unwrap();
    assert_eq!(
        out.response,
        Ok(Some("v0".to_owned())),
        "the state machine's response comes back"
    );
    let read = client.read_index().await.unwrap();
    assert!(
        read >= out.index,
        "read index {read} covers the acknowledged write {}",
        out.index
    );
    for id in 1..=3 {
        c.node(id)
            .wait_applied(out.index, Duration::from_secs(5))
            .await
            .unwrap();
        assert_eq!(c.node(id).local_state(|kv| kv.map.len()), 50, "node {id}");
    }

    tracing::info!(old, "stop the leader: the client moves to the new one");
    c.stop(old).await;
    let out = client.write(&set("after", "stop")).await.unwrap();
    let new = c.leader(Duration::from_secs(10)).await;
    assert_ne!(new, old);
    c.node(new)
        .wait_applied(out.index, Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!(
        c.node(new).local_state(|kv| kv.map.get("after").cloned()),
        Some("stop".into())
    );

    tracing::info!("nothing reachable: a clear error, not a hang");
    let lonely = NativeClient::<Kv>::new(vec!["127.0.0.1:1".into()])
        .unwrap()
        .timeout(Duration::from_secs(1));
    let err = lonely.write(&set("x", "y")).await.unwrap_err();
    assert!(
        matches!(&err, Error::Unreachable { addr, .. } if addr == "127.0.0.1:1"),
        "got {err:?}"
    );
    assert!(err.is_retryable());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t290_fenced_write_and_app_messages() {
    let c = Cluster::start(3, |_| {}).await;
    let leader = c.leader(Duration::from_secs(5)).await;
    let term = c.node(leader).leading_term().expect("leader knows its term");
    tracing::info!(leader, term, "a write fenced to the current term applies");
    c.node(leader).write_fenced(term, set("f", "1")).await.unwrap();
    tracing::info!("a write fenced to an old term is refused and changes nothing");
    let err = c.node(leader).write_fenced(term - 1, set("f", "2")).await.unwrap_err();
    assert!(matches!(err, Error::Fenced { .. }), "got {err:?}");
    let follower = (1..=3).find(|i| *i != leader).unwrap();
    let err = c.node(follower).write_fenced(term, set("f", "3")).await.unwrap_err();
    assert!(
        matches!(err, Error::NotLeader { leader: Some(l) } if l == leader),
        "got {err:?}"
    );
    let v = c
        .node(leader)
        .read(Consistency::Linearizable, |kv| kv.map["f"].clone())
        .await
        .unwrap();
    assert_eq!(v, "1");

    tracing::info!("application messages reach the target's handler");
    c.node(leader).set_app_handler(Arc::new(|from, payload| {
        Box::pin(async move {
            let mut out = format!("from {from}: ").into_bytes();
            out.extend(payload);
            Ok(out)
        })
    }));
    let answer = c
        .node(follower)
        .send_app(leader, b"hello".to_vec(), Duration::from_secs(2))
        .await
        .unwrap();
    assert_eq!(String::from_utf8(answer).unwrap(), format!("from {follower}: hello"));
    let err = c
        .node(leader)
        .send_app(follower, vec![], Duration::from_secs(2))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("no application handler"), "got {err}");

    tracing::info!("each channel reaches its own handler; the default one is untouched");
    c.node(leader).set_app_handler_on(
        AppChannel::Telemetry,
        Arc::new(|_from, payload| Box::pin(async move { Ok([b"telemetry: ".as_slice(), &payload].concat()) })),
    );
    let answer = c
        .node(follower)
        .send_app_on(AppChannel::Telemetry, leader, b"x".to_vec(), Duration::from_secs(2))
        .await
        .unwrap();
    assert_eq!(answer, b"telemetry: x");
    let answer = c
        .node(follower)
        .send_app(leader, b"y".to_vec(), Duration::from_secs(2))
        .await
        .unwrap();
    assert_eq!(String::from_utf8(answer).unwrap(), format!("from {follower}: y"));
    let err = c
        .node(leader)
        .send_app_on(AppChannel::Telemetry, follower, vec![], Duration::from_secs(2))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("Telemetry"), "got {err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t295_watch_replays_history_then_live_without_gaps() {
    let c = Cluster::start(3, |cfg| {
        cfg.snapshots.snapshot_every_entries = 100;
        cfg.snapshots.logs_kept_after_snapshot = 20;
    })
    .await;
    tracing::info!("30 writes before anyone watches");
    let mut indexes = Vec::new();
    for i in 0..30 {
        indexes.push(c.node(2).write(set(format!("k{i}"), "x")).await.unwrap().index);
    }

    tracing::info!("a follower's watch from the 11th write replays history, then sees live writes in order");
    let mut w = c.node(3).watch(indexes[10]).unwrap();
    let writer = async {
        let mut live = Vec::new();
        for i in 30..60 {
            live.push(c.node(1).write(set(format!("k{i}"), "y")).await.unwrap().index);
        }
        live
    };
    let reader = async {
        let mut got = Vec::new();
        while got.len() < 50 {
            let change = tokio::time::timeout(Duration::from_secs(10), w.next())
                .await
                .expect("a change within 10 s")
                .unwrap();
            got.push(change.index);
        }
        got
    };
    let (live, got) = tokio::join!(writer, reader);
    let expected: Vec<u64> = indexes[10..].iter().chain(live.iter()).copied().collect();
    assert_eq!(got, expected, "watch delivered every change once, in order");

    tracing::info!("resuming from the last delivered index + 1 continues exactly there");
    let resume = w.next_index();
    drop(w);
    let idx = c.node(1).write(set("after", "z")).await.unwrap().index;
    let mut w = c.node(2).watch(resume).unwrap();
    let change = tokio::time::timeout(Duration::from_secs(10), w.next())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(change.index, idx);

    tracing::info!("after enough writes to compact, watching from 1 is refused with a clear error");
    for i in 0..250 {
        c.node(1).write(set(format!("p{i}"), "x")).await.unwrap();
    }
    let leader = c.leader(Duration::from_secs(5)).await;
    let purged = c.node(leader).status().purged_index.unwrap_or(0);
    assert!(purged > 1, "log was not purged");
    match c.node(leader).watch(1) {
        Err(Error::Compacted {
            requested,
            first_available,
        }) => {
            assert_eq!(requested, 1);
            assert!(first_available > 1, "first available {first_available}");
        }
        Err(e) => panic!("expected compacted, got {e}"),
        Ok(_) => panic!("expected compacted, got a watch"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t275_removing_the_leader_hands_over_first() {
    let c = Cluster::start(3, |_| {}).await;
    let leader = c.leader(Duration::from_secs(5)).await;
    let other = (1..=3).find(|i| *i != leader).unwrap();
    tracing::info!(leader, "remove the leader itself, asked through a follower");
    c.node(other).remove(leader).await.unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let st = c.node(other).status();
        if st.leader.is_some_and(|l| l != leader) && st.members.iter().all(|m| m.id != leader) {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "leader {leader} still a member: {st:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tracing::info!("the remaining two voters keep committing");
    c.node(other).write(set("after-removal", "1")).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t276_a_write_without_a_quorum_gives_up_within_the_write_timeout() {
    // Jepsen F4: a follower's write retried the leader up to five times with
    // growing waits for an election (0.2 + 0.35 + ... s) on top of its write
    // timeout, so a caller waited seconds past `write_timeout_ms`.
    let timeout_ms = 600;
    let mut c = Cluster::start(3, |cfg| cfg.timings.write_timeout_ms = timeout_ms).await;
    let leader = c.leader(Duration::from_secs(5)).await;
    let survivor = (1..=3).find(|i| *i != leader).unwrap();
    for id in (1..=3).filter(|i| *i != survivor) {
        c.nodes
            .get_mut(&id)
            .unwrap()
            .node
            .take()
            .unwrap()
            .shutdown()
            .await
            .unwrap();
    }
    tracing::info!(survivor, "the other two nodes are stopped: no quorum");
    for attempt in 0..3 {
        let started = std::time::Instant::now();
        let res = c.node(survivor).write(set(format!("lost{attempt}"), "1")).await;
        let took = started.elapsed();
        let err = res.expect_err("nothing can commit without a quorum");
        // Nothing committed: no leader, or (proposed, then out of time) an
        // unknown outcome; never a permanent answer.
        assert!(
            err.retry_class() != cairn_raft::RetryClass::Permanent,
            "attempt {attempt}: {err}"
        );
        // The waits for elections alone added up to 2.6 s before the fix.
        assert!(
            took < Duration::from_millis(timeout_ms + 900),
            "attempt {attempt}: a write with a {timeout_ms} ms timeout took {took:?} ({err})"
        );
        tracing::info!(attempt, took_ms = took.as_millis() as u64, %err, "gave up in time");
    }
}

/// The leader's last log index (the log's length, as far as a client can see).
fn last_log_index(c: &Cluster, id: u64) -> u64 {
    c.node(id).status().last_log_index.unwrap_or(0)
}

/// The value of a counter in `id`'s metrics registry.
fn counter(c: &Cluster, id: u64, name: &str) -> u64 {
    c.node(id)
        .metrics()
        .registry()
        .gather()
        .iter()
        .find(|f| f.name() == name)
        .and_then(|f| f.get_metric().first())
        .map_or(0, |m| m.get_counter().get_value() as u64)
}

/// The longest value `key` may have for a `Set` to encode to exactly
/// `limit` bytes (a maximum-size accepted write).
fn max_value_len(key: &str, limit: usize) -> usize {
    let encoded = |len: usize| postcard::to_stdvec(&set(key, "v".repeat(len))).unwrap().len();
    let mut len = limit.saturating_sub(key.len() + 16);
    while encoded(len + 1) <= limit {
        len += 1;
    }
    assert_eq!(encoded(len), limit, "a value of {len} bytes encodes to the limit");
    len
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t286_refused_writes_append_nothing_to_the_log() {
    // Issue 17: a write the state machine refuses (a 1,000,000-character
    // task kind: 400) still appended its whole body to the log. ~25 of them
    // made a 25 MB append that no frame could carry, and a follower that
    // was paused through them never caught up.
    let c = Cluster::start(3, |_| {}).await;
    let leader = c.leader(Duration::from_secs(5)).await;
    let follower = (1..=3).find(|i| *i != leader).unwrap();
    c.node(leader).write(set("a", "1")).await.unwrap();
    let before = last_log_index(&c, leader);
    let applied_before = c.node(leader).local_state(|kv| kv.applied);
    let client = NativeClient::<Kv>::new(vec![c.nodes[&follower].config.listen_addr.clone()]).unwrap();

    tracing::info!("25 writes with a ~1 MB key, refused whatever the state, through a follower");
    let huge = "k".repeat(1_000_000);
    for i in 0..25u64 {
        let out = match i % 3 {
            0 => c.node(follower).write(set(huge.clone(), "x")).await.unwrap(),
            1 => c
                .node(follower)
                .write_tagged(ClientTag { client_id: 7, seq: i }, set(huge.clone(), "x"))
                .await
                .unwrap(),
            _ => client.write(&set(huge.clone(), "x")).await.unwrap(),
        };
        let refusal = out.response.expect_err("a key over the limit is refused");
        assert!(refusal.contains("limit is 64"), "{refusal}");
    }
    tracing::info!("refused by the state (compare-and-set on a stale value): refused after a read barrier");
    let out = c.node(follower).write(cas("a", Some("0"), "2")).await.unwrap();
    assert_eq!(out.response, Err("a is Some(\"1\"), not Some(\"0\")".to_owned()));
    let out = client.write(&cas("a", Some("0"), "2")).await.unwrap();
    assert!(out.response.is_err(), "{out:?}");
    assert_eq!(
        last_log_index(&c, leader),
        before,
        "refused writes appended nothing to the log"
    );
    assert_eq!(
        c.node(leader).local_state(|kv| kv.applied),
        applied_before,
        "nothing reached apply"
    );
    assert_eq!(counter(&c, leader, "cairn_writes_refused_before_log_total"), 27);

    tracing::info!("a tagged write the state refuses goes through the log: its retry finds the refusal recorded");
    let tag = ClientTag { client_id: 8, seq: 1 };
    let first = c
        .node(follower)
        .write_tagged(tag, cas("a", Some("0"), "3"))
        .await
        .unwrap();
    assert!(first.response.is_err(), "{first:?}");
    assert_eq!(last_log_index(&c, leader), before + 1);
    c.node(leader).write(set("a", "0")).await.unwrap();
    let retry = c
        .node(leader)
        .write_tagged(tag, cas("a", Some("0"), "3"))
        .await
        .unwrap();
    assert_eq!(
        retry.response, first.response,
        "the retry returns the first outcome even though the state now accepts it"
    );
    assert_eq!(c.node(leader).local_state(|kv| kv.map["a"].clone()), "0");

    tracing::info!("accepted writes still go through, through every path");
    let out = c.node(follower).write(cas("a", Some("0"), "4")).await.unwrap();
    assert_eq!(out.response, Ok(Some("0".to_owned())));
    let out = client.write(&set("b", "1")).await.unwrap();
    assert_eq!(out.response, Ok(None));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t287_an_entry_over_the_limit_is_refused_before_it_is_proposed() {
    let limit = 16 << 10;
    let c = Cluster::start(3, |cfg| cfg.log.max_entry_bytes = limit).await;
    let leader = c.leader(Duration::from_secs(5)).await;
    let follower = (1..=3).find(|i| *i != leader).unwrap();
    assert_eq!(c.node(leader).max_entry_bytes(), limit);
    let len = max_value_len("k", limit);
    tracing::info!(limit, len, "a write of exactly the limit is accepted");
    c.node(follower).write(set("k", "v".repeat(len))).await.unwrap();
    let before = last_log_index(&c, leader);
    tracing::info!("one byte more is refused on the node called, before forwarding");
    let err = c.node(follower).write(set("k", "v".repeat(len + 1))).await.unwrap_err();
    assert!(
        matches!(err, Error::EntryTooLarge { bytes, limit: l } if bytes == limit + 1 && l == limit),
        "got {err:?}"
    );
    assert!(!err.is_retryable());
    tracing::info!("and by the leader, for a native client (which does not know the limit)");
    let client = NativeClient::<Kv>::new(vec![c.nodes[&leader].config.listen_addr.clone()]).unwrap();
    let err = client.write(&set("k", "v".repeat(len + 1))).await.unwrap_err();
    assert!(
        matches!(err, Error::EntryTooLarge { bytes, limit: l } if bytes == limit + 1 && l == limit),
        "got {err:?}"
    );
    assert_eq!(last_log_index(&c, leader), before, "nothing was appended");
    tracing::info!("a config whose append batch cannot carry one entry is refused");
    let mut bad = c.nodes[&leader].config.clone();
    bad.log.max_append_bytes = limit;
    let err = bad.validate().unwrap_err();
    assert!(err.to_string().contains("log.max_append_bytes"), "{err}");
}

/// How many maximum-size writes [`t288_a_follower_frozen_through_a_burst_of_maximum_size_writes_catches_up`]
/// commits while the follower is frozen: 1,000 as the issue asks, or
/// `CAIRN_FROZEN_WRITES`.
fn frozen_writes() -> usize {
    std::env::var("CAIRN_FROZEN_WRITES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t288_a_follower_frozen_through_a_burst_of_maximum_size_writes_catches_up() {
    // Issue 17: openraft bounds an append by entry count only (300); 300
    // large entries made a frame over the transport limit, the leader
    // logged "frame of … bytes exceeds the … byte limit" on every retry and
    // the follower never caught up. The limits are scaled down (16 KiB
    // entries, 2 MiB frames: the same 1:128 ratio as 16 KiB to 2 MiB, and
    // 300 entries are 4.8 MB, over the frame) so 1,000 maximum-size writes
    // take seconds; the chaos suite's `large` workload runs the default
    // 1 MiB / 16 MiB sizes against real processes (docs/CHAOS.md).
    //
    // `CAIRN_FROZEN_FULL_SIZE=1` runs it at the shipped defaults instead
    // (1 MiB entries, 2 MiB batches, 16 MiB frames: ~1 GB per node), for
    // the catch-up time docs/CHAOS.md quotes.
    let full_size = std::env::var_os("CAIRN_FROZEN_FULL_SIZE").is_some();
    let entry = if full_size {
        cairn_raft::RaftNodeConfig::new(1, "127.0.0.1:0", "unused")
            .log
            .max_entry_bytes
    } else {
        16 << 10
    };
    let c = Cluster::start(3, |cfg| {
        if !full_size {
            cfg.max_frame_bytes = 2 << 20;
            cfg.log.max_entry_bytes = entry;
            cfg.log.max_append_bytes = 1 << 20;
        }
    })
    .await;
    let leader = c.leader(Duration::from_secs(5)).await;
    let frozen = (1..=3).find(|i| *i != leader).unwrap();
    let n = frozen_writes();
    let len = max_value_len("k0000", entry);
    tracing::info!(
        leader,
        frozen,
        n,
        entry,
        "freeze a follower, then commit {n} maximum-size writes"
    );
    c.isolate(frozen, true);
    let started = std::time::Instant::now();
    let leader_node = c.node(leader);
    let writes = futures::stream::iter(0..n)
        .map(|i| async move {
            // Not `{i:0>width$}`: a format width is at most u16::MAX.
            let digits = i.to_string();
            let value = "0".repeat(len.saturating_sub(digits.len())) + &digits;
            leader_node.write(set(format!("k{:04}", i % 10_000), value)).await
        })
        .buffer_unordered(8);
    let outcomes: Vec<_> = writes.collect().await;
    for o in &outcomes {
        let out = o.as_ref().expect("every write commits on the two live nodes");
        assert_eq!(out.response.as_ref().map(|_| ()), Ok(()));
    }
    let last = outcomes
        .iter()
        .filter_map(|o| o.as_ref().ok())
        .map(|o| o.index)
        .max()
        .unwrap();
    tracing::info!(took_ms = started.elapsed().as_millis() as u64, last, "burst committed");
    assert!(
        c.node(frozen).status().applied_index.unwrap_or(0) < last,
        "the frozen follower did not see the burst"
    );

    tracing::info!("resume the follower: it must catch up from the log");
    c.isolate(frozen, false);
    let resumed = std::time::Instant::now();
    let bound = Duration::from_secs(60);
    c.node(frozen)
        .wait_applied(last, bound)
        .await
        .unwrap_or_else(|e| panic!("the resumed follower did not catch up to {last} within {bound:?}: {e}"));
    let catch_up = resumed.elapsed();
    println!("t288: {n} writes of {entry} bytes; the resumed follower caught up in {catch_up:?}");
    tracing::info!(catch_up_ms = catch_up.as_millis() as u64, "caught up");
    assert_eq!(
        c.node(frozen).local_state(|kv| kv.map.len()),
        c.node(leader).local_state(|kv| kv.map.len())
    );
}
