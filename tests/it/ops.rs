//! Operations with real processes: backup and restore, disaster recovery
//! from one survivor, and a wiped node rejoining.

use std::collections::BTreeSet;
use std::time::Duration;

use serde_json::json;
use serde_json::Value;

use crate::harness::ProcCluster;
use crate::out_text;

/// Parameters, a plan and pending tasks, written through node `via`; every
/// write is acknowledged before this returns.
async fn write_mission_data(c: &ProcCluster, via: u64, params: u64) {
    for i in 0..params {
        let body = json!({"name": format!("p{i}"), "kind": {"Int": {"min": 0, "max": 1_000_000}}, "value": {"Int": i}});
        c.post(via, "/v1/params", &body)
            .await
            .unwrap_or_else(|e| panic!("param {i}: {e}"));
    }
    let goal = |x: f64| json!({"kind": {"Waypoint": {"pose": {"position": [x, 0.0, 0.0], "heading_rad": 0.0}}}, "tolerance": {"position_m": 0.5, "heading_rad": null}});
    let (status, _, body) = c
        .send(
            via,
            reqwest::Method::PUT,
            "/v1/mission/plan",
            Some(&json!({"name": "sol-42", "frame_id": "map", "goals": [goal(1.0), goal(2.0)]}).to_string()),
            &[],
        )
        .await;
    assert_eq!(status, 200, "plan: {body}");
    // A capability no node has: the tasks stay pending, so nothing else
    // changes them while the test compares states.
    for kind in ["navigate", "capture-panorama"] {
        c.post(
            via,
            "/v1/tasks",
            &json!({"kind": kind, "required_capabilities": ["warp-drive"]}),
        )
        .await
        .unwrap_or_else(|e| panic!("task {kind}: {e}"));
    }
}

/// The replicated mission as an operator sees it (not the node registry,
/// which every node's agent keeps writing).
async fn mission_state(c: &ProcCluster, id: u64, stale: bool) -> Value {
    let q = if stale { "?consistency=stale" } else { "" };
    let mut all = serde_json::Map::new();
    for path in ["/v1/params", "/v1/mission", "/v1/tasks", "/v1/policies", "/v1/sensors"] {
        let mut got = c
            .get(id, &format!("{path}{q}"))
            .await
            .unwrap_or_else(|e| panic!("node {id} {path}: {e}"));
        crate::without_registry_views(&mut got);
        all.insert(path.into(), got);
    }
    Value::Object(all)
}

fn voters(status: &Value) -> BTreeSet<u64> {
    status["members"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|m| m["voter"] == true)
        .filter_map(|m| m["id"].as_u64())
        .collect()
}

fn cli_ok(out: std::process::Output) -> String {
    assert!(out.status.success(), "{}", out_text(&out));
    String::from_utf8_lossy(&out.stdout).to_string()
}

/// Add `id` (already running, empty data dir) as a learner through `via`,
/// then promote it.
fn add_voter(c: &ProcCluster, via: u64, id: u64) {
    let ids = id.to_string();
    cli_ok(c.cli_at(
        via,
        &[],
        &[
            "member",
            "add",
            &ids,
            "--raft-addr",
            c.raft_addr(id),
            "--api-addr",
            c.api_addr(id),
        ],
    ));
    cli_ok(c.cli_at(via, &[], &["member", "promote", &ids]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t190_backup_restores_into_a_new_cluster_with_equal_data() {
    let mut c = ProcCluster::start(3).await;
    let leader = c.wait_leader(Duration::from_secs(15)).await;
    write_mission_data(&c, leader, 50).await;
    let follower = (1..=3).find(|i| *i != leader).unwrap();
    let before = mission_state(&c, leader, false).await;

    tracing::info!(
        follower,
        "back up through a follower (linearizable: it has every acknowledged write)"
    );
    let file = c.dir().join("sol42.backup");
    let out = cli_ok(c.cli_at(follower, &[], &["backup", file.to_str().unwrap()]));
    assert!(out.contains("written to"), "{out}");

    tracing::info!("a damaged backup is refused and leaves the data dir empty");
    let mut damaged = std::fs::read(&file).unwrap();
    let last = damaged.len() - 1;
    damaged[last] ^= 0x01;
    let damaged_file = c.dir().join("damaged.backup");
    std::fs::write(&damaged_file, damaged).unwrap();
    c.add_stopped(11, Vec::new());
    let target = c.data_dir(11).to_path_buf();
    let restore = |c: &ProcCluster, file: &std::path::Path| {
        c.cli_at(
            leader,
            &[],
            &[
                "restore",
                file.to_str().unwrap(),
                "--data-dir",
                target.to_str().unwrap(),
                "--id",
                "11",
                "--raft-addr",
                c.raft_addr(11),
                "--api-addr",
                c.api_addr(11),
            ],
        )
    };
    let out = restore(&c, &damaged_file);
    assert!(!out.status.success(), "{}", out_text(&out));
    assert!(out_text(&out).contains("checksum"), "{}", out_text(&out));
    assert!(!target.exists(), "a refused restore must not create the data dir");

    tracing::info!("the old cluster goes away; the backup seeds node 11 of a new one");
    for id in 1..=3 {
        c.kill(id);
    }
    let out = cli_ok(restore(&c, &file));
    assert!(out.contains("only voter of a new cluster"), "{out}");
    let out = restore(&c, &file);
    assert!(
        !out.status.success() && out_text(&out).contains("not empty"),
        "restoring twice into one data dir must be refused: {}",
        out_text(&out)
    );
    c.restart(11).await;
    assert_eq!(c.wait_leader(Duration::from_secs(15)).await, 11);
    let after = mission_state(&c, 11, false).await;
    assert_eq!(after, before, "the restored state differs from the backed-up one");

    tracing::info!("two fresh nodes join the restored cluster, and new writes commit on all three");
    for id in [12, 13] {
        c.add_stopped(id, Vec::new());
        c.restart(id).await;
        add_voter(&c, 11, id);
    }
    assert_eq!(c.wait_leader(Duration::from_secs(15)).await, 11);
    assert_eq!(voters(&c.status(11).await), BTreeSet::from([11, 12, 13]));
    c.post(
        12,
        "/v1/params",
        &json!({"name": "after.restore", "kind": "Bool", "value": {"Bool": true}}),
    )
    .await
    .expect("a write after the restore");
    let on13 = mission_state(&c, 13, false).await;
    assert_eq!(on13["/v1/tasks"], before["/v1/tasks"]);
    assert_eq!(on13["/v1/mission"], before["/v1/mission"]);
    let names: BTreeSet<&str> = on13["/v1/params"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|p| p["name"].as_str())
        .collect();
    assert!(
        names.contains("after.restore") && names.contains("p0") && names.contains("p49"),
        "{names:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t191_force_new_cluster_from_the_last_survivor() {
    let mut c = ProcCluster::start(3).await;
    let leader = c.wait_leader(Duration::from_secs(15)).await;
    let survivor = (1..=3).find(|i| *i != leader).unwrap();
    let lost: Vec<u64> = (1..=3).filter(|i| *i != survivor).collect();
    write_mission_data(&c, leader, 100).await;

    tracing::info!(survivor, "the survivor has applied every acknowledged write");
    let committed = c.status(leader).await["committed_index"].as_u64().unwrap();
    c.wait_applied(survivor, committed, Duration::from_secs(20)).await;
    let acked = mission_state(&c, leader, false).await;

    tracing::info!(?lost, "kill -9 two nodes for good: quorum is lost");
    for id in &lost {
        c.kill(*id);
    }
    let had = mission_state(&c, survivor, true).await;
    assert_eq!(had, acked);
    let (status, _, _) = c
        .send(
            survivor,
            reqwest::Method::POST,
            "/v1/params",
            Some(&json!({"name": "no.quorum", "kind": "Bool", "value": {"Bool": true}}).to_string()),
            &[],
        )
        .await;
    assert!(status >= 500, "a write without quorum must not succeed (got {status})");

    let dir = c.data_dir(survivor).to_str().unwrap().to_string();
    let sid = survivor.to_string();
    let recover = ["recover", "--force-new-cluster", "--data-dir", &dir, "--id", &sid];
    tracing::info!("recover refuses a running node");
    let out = c.cli_at(survivor, &[], &recover);
    assert!(
        !out.status.success() && out_text(&out).contains("still running"),
        "{}",
        out_text(&out)
    );

    tracing::info!("stop the survivor, force a new cluster, start it");
    c.kill(survivor);
    let out = cli_ok(c.cli_at(survivor, &[], &recover));
    assert!(out.contains("only voter of a new cluster"), "{out}");
    assert!(out.contains("must never start again"), "{out}");
    c.restart(survivor).await;
    assert_eq!(c.wait_leader(Duration::from_secs(15)).await, survivor);
    assert_eq!(voters(&c.status(survivor).await), BTreeSet::from([survivor]));
    let now = mission_state(&c, survivor, false).await;
    assert_eq!(now["/v1/params"], had["/v1/params"], "parameters lost in recovery");
    assert_eq!(now["/v1/mission"], had["/v1/mission"], "plan lost in recovery");
    assert_eq!(now["/v1/tasks"], had["/v1/tasks"], "tasks lost in recovery");

    tracing::info!("two fresh nodes join as learners, are promoted, and new writes commit");
    for id in [4, 5] {
        c.add_stopped(id, Vec::new());
        c.restart(id).await;
        add_voter(&c, survivor, id);
    }
    assert_eq!(c.wait_leader(Duration::from_secs(15)).await, survivor);
    assert_eq!(voters(&c.status(survivor).await), BTreeSet::from([survivor, 4, 5]));
    c.post(
        4,
        "/v1/params",
        &json!({"name": "after.recovery", "kind": "Bool", "value": {"Bool": true}}),
    )
    .await
    .expect("a write after the recovery");
    let on5 = mission_state(&c, 5, false).await;
    assert_eq!(on5["/v1/tasks"], had["/v1/tasks"]);
    let params = on5["/v1/params"].as_array().cloned().unwrap_or_default();
    for p in had["/v1/params"].as_array().into_iter().flatten() {
        assert!(params.contains(p), "node 5 lacks {p}");
    }
    assert!(params.iter().any(|p| p["name"] == "after.recovery"), "{params:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t192_wiped_node_is_removed_and_rejoins_fresh() {
    let mut c = ProcCluster::start(3).await;
    let leader = c.wait_leader(Duration::from_secs(15)).await;
    write_mission_data(&c, leader, 50).await;
    let victim = (1..=3).find(|i| *i != leader).unwrap();

    tracing::info!(victim, "the SD card dies: kill -9 and wipe the data dir");
    c.kill(victim);
    std::fs::remove_dir_all(c.data_dir(victim)).unwrap();

    tracing::info!("remove it from the membership first, then start it empty and add it back");
    let vid = victim.to_string();
    cli_ok(c.cli_at(leader, &[], &["member", "remove", &vid]));
    assert_eq!(voters(&c.status(leader).await).len(), 2);
    c.restart(victim).await;
    add_voter(&c, leader, victim);
    let leader = c.wait_leader(Duration::from_secs(15)).await;
    assert_eq!(voters(&c.status(leader).await), BTreeSet::from([1, 2, 3]));

    tracing::info!("it has everything, and the three commit new writes");
    c.post(
        victim,
        "/v1/params",
        &json!({"name": "after.rejoin", "kind": "Bool", "value": {"Bool": true}}),
    )
    .await
    .expect("a write through the rejoined node");
    let target = c.status(leader).await["committed_index"].as_u64().unwrap();
    c.wait_applied(victim, target, Duration::from_secs(20)).await;
    let on_victim = mission_state(&c, victim, true).await;
    let on_leader = mission_state(&c, leader, false).await;
    assert_eq!(on_victim, on_leader);
}

#[test]
fn t05_operations_doc_lists_every_config_option_with_its_default() {
    let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/OPERATIONS.md")).unwrap();
    let from = doc
        .find("Below is **every option")
        .expect("docs/OPERATIONS.md has the configuration reference");
    let block = doc[from..]
        .split("```toml\n")
        .nth(1)
        .and_then(|b| b.split("\n```").next())
        .expect("a toml block after it");
    let parsed: cairn::NodeConfig =
        toml::from_str(block).unwrap_or_else(|e| panic!("the documented config does not parse: {e}\n{block}"));
    assert_eq!(
        parsed,
        cairn::NodeConfig::new(1),
        "the documented values are not the defaults"
    );

    // Every option is named, also those whose default is unset (commented).
    fn keys(v: &Value, out: &mut Vec<String>) {
        if let Value::Object(m) = v {
            for (k, v) in m {
                out.push(k.clone());
                keys(v, out);
            }
        }
    }
    let mut all = Vec::new();
    keys(&serde_json::to_value(cairn::NodeConfig::new(1)).unwrap(), &mut all);
    all.extend(["ca_cert", "cert", "key"].map(String::from));
    let missing: Vec<&String> = all
        .iter()
        .filter(|k| {
            // `key = …`, a table `[key]`, or an array of tables `[[parent.key]]`.
            !block.contains(&format!("{k} ="))
                && !block.contains(&format!("[{k}]"))
                && !block.contains(&format!(".{k}]]"))
        })
        .collect();
    assert!(missing.is_empty(), "docs/OPERATIONS.md does not document {missing:?}");
}

/// What the background writer saw.
#[derive(Default)]
struct Load {
    acked: Vec<String>,
    failed: Vec<String>,
    retries: u64,
}

/// Declare `load.N` parameters one after another through every endpoint
/// (the client fails over), retrying each write until it is acknowledged:
/// an "already declared" answer to a retry means an earlier attempt
/// applied. A write that still fails after 60 attempts (about 12 s of
/// retrying) is a failure.
async fn write_load(
    endpoints: Vec<String>,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    acked: std::sync::Arc<std::sync::atomic::AtomicU64>,
) -> Load {
    use std::sync::atomic::Ordering;
    let client = cairn::client::Client::new(endpoints, Duration::from_secs(7));
    let mut load = Load::default();
    let mut i = 0u64;
    while !stop.load(Ordering::Relaxed) {
        let name = format!("load.{i}");
        i += 1;
        let body = json!({"name": name, "kind": "Bool", "value": {"Bool": true}});
        let mut outcome = Err(String::new());
        for attempt in 0..60 {
            match client
                .call::<_, Value>(reqwest::Method::POST, "/v1/params", Some(&body))
                .await
            {
                Ok(_) => outcome = Ok(()),
                Err(cairn::client::ClientError::Api {
                    status: 409, body: e, ..
                }) if attempt > 0 && e.message.contains("already declared") => outcome = Ok(()),
                Err(e @ cairn::client::ClientError::Unreachable { .. }) => {
                    load.retries += 1;
                    outcome = Err(e.to_string());
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    continue;
                }
                Err(e) => outcome = Err(e.to_string()),
            }
            break;
        }
        match outcome {
            Ok(()) => {
                load.acked.push(name);
                acked.fetch_add(1, Ordering::Relaxed);
            }
            Err(e) => load.failed.push(format!("{name}: {e}")),
        }
    }
    load
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t193_rolling_restart_under_load_fails_no_write() {
    use std::sync::atomic::AtomicBool;
    use std::sync::atomic::AtomicU64;
    use std::sync::atomic::Ordering;
    use std::sync::Arc;

    let mut c = ProcCluster::start(3).await;
    let leader = c.wait_leader(Duration::from_secs(15)).await;
    let endpoints: Vec<String> = (1..=3).map(|i| c.api_addr(i).to_string()).collect();
    let stop = Arc::new(AtomicBool::new(false));
    let acked = Arc::new(AtomicU64::new(0));
    let writer = tokio::spawn(write_load(endpoints, stop.clone(), acked.clone()));
    // Bounded waits for progress, not timed assertions: the writer must get
    // writes through after every step, however long a step takes.
    let progressed = |from: u64| {
        let acked = acked.clone();
        async move {
            for _ in 0..200 {
                if acked.load(Ordering::Relaxed) >= from + 5 {
                    return true;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            false
        }
    };
    assert!(progressed(0).await, "no write went through before the restarts");

    let order: Vec<u64> = (1..=3).filter(|i| *i != leader).chain([leader]).collect();
    for id in order {
        let other = (1..=3).find(|i| *i != id).unwrap();
        let ids = id.to_string();
        tracing::info!(id, "drain: no new tasks, leadership moves off it");
        let out = cli_ok(c.cli_at(other, &[], &["node", "drain", &ids]));
        assert!(out.contains("takes no new tasks") && out.contains("leads"), "{out}");
        assert!(!out.contains(&format!("node {id} leads")), "leadership stayed: {out}");

        tracing::info!(id, "stop it gracefully (SIGTERM), start it again");
        let exit = c.stop(id).await;
        assert!(
            exit.is_some_and(|s| s.success()),
            "node {id} did not exit cleanly on SIGTERM ({exit:?}); log:\n{}",
            c.log(id)
        );
        let before = acked.load(Ordering::Relaxed);
        c.restart(id).await;
        let target = c.status(other).await["committed_index"].as_u64().unwrap_or(0);
        c.wait_applied(id, target, Duration::from_secs(30)).await;
        cli_ok(c.cli_at(id, &[], &["node", "undrain", &ids]));
        assert!(progressed(before).await, "writes stalled after restarting node {id}");
    }

    stop.store(true, Ordering::Relaxed);
    let load = writer.await.expect("writer task");
    tracing::info!(acked = load.acked.len(), retries = load.retries, "load done");
    assert!(
        load.failed.is_empty(),
        "{} write(s) failed beyond retries, e.g. {:?}",
        load.failed.len(),
        load.failed.iter().take(3).collect::<Vec<_>>()
    );

    tracing::info!("every acknowledged write is on all three nodes");
    let leader = c.wait_leader(Duration::from_secs(15)).await;
    let target = c.status(leader).await["committed_index"].as_u64().unwrap();
    for id in 1..=3 {
        c.wait_applied(id, target, Duration::from_secs(20)).await;
        let params = c.get(id, "/v1/params?consistency=stale").await.unwrap();
        let names: BTreeSet<&str> = params
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|p| p["name"].as_str())
            .collect();
        let missing: Vec<&String> = load
            .acked
            .iter()
            .filter(|n| !names.contains(n.as_str()))
            .take(5)
            .collect();
        assert!(
            missing.is_empty(),
            "node {id} lacks acknowledged writes, e.g. {missing:?}"
        );
        let drained = params
            .as_array()
            .into_iter()
            .flatten()
            .filter(|p| p["name"].as_str().is_some_and(|n| n.starts_with("cluster.drain.node.")))
            .all(|p| p["value"] == json!({"Bool": false}));
        assert!(drained, "every node was undrained: {params}");
    }

    tracing::info!(
        leader,
        "SIGTERM on the leader, without a drain, hands leadership over first"
    );
    let exit = c.stop(leader).await;
    assert!(exit.is_some_and(|s| s.success()), "{exit:?}; log:\n{}", c.log(leader));
    assert!(
        c.log(leader).contains("handed leadership over before shutting down"),
        "log of node {leader}:\n{}",
        c.log(leader)
    );
    assert_ne!(c.wait_leader(Duration::from_secs(15)).await, leader);
}

#[test]
fn t06_systemd_hears_ready_and_the_watchdog_is_fed() {
    use std::os::unix::net::UnixDatagram;
    let dir = tempfile::TempDir::new().unwrap();
    let socket_path = dir.path().join("notify.sock");
    let socket = UnixDatagram::bind(&socket_path).unwrap();
    socket.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let port = |_| {
        std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .to_string()
    };
    let (raft, api) = (port(0), port(1));
    // systemd names the pid it watches; `exec` keeps the shell's.
    let mut child = std::process::Command::new("sh")
        .arg("-c")
        .arg(r#"WATCHDOG_PID=$$ exec "$0" node run --id 1 --raft-addr "$1" --api-addr "$2" --data-dir "$3""#)
        .arg(crate::harness::cairn_bin())
        .args([&raft, &api])
        .arg(dir.path().join("n1"))
        .env("NOTIFY_SOCKET", &socket_path)
        .env("WATCHDOG_USEC", "400000")
        .env("RUST_LOG", "warn")
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut seen = Vec::new();
    let mut buf = [0u8; 256];
    while !(seen.iter().any(|m: &String| m.contains("READY=1"))
        && seen.iter().filter(|m| m.contains("WATCHDOG=1")).count() >= 2)
    {
        match socket.recv(&mut buf) {
            Ok(n) => seen.push(String::from_utf8_lossy(&buf[..n]).into_owned()),
            Err(e) => {
                let _ = child.kill();
                panic!("systemd would have given up: {e}; heard {seen:?}");
            }
        }
    }
    let _ = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let status = child.wait().unwrap();
    assert!(status.success(), "SIGTERM is a clean stop: {status:?}");
    while let Ok(n) = socket.recv(&mut buf) {
        seen.push(String::from_utf8_lossy(&buf[..n]).into_owned());
        if seen.last().is_some_and(|m| m.contains("STOPPING=1")) {
            break;
        }
    }
    assert!(seen.iter().any(|m| m.contains("STOPPING=1")), "{seen:?}");
}

/// `cairn check consistency` agrees on a healthy cluster that keeps writing
/// (the agents' registry updates move the index all the time), and names a
/// deliberately diverged replica with exit code 2: node 3's copy of one
/// committed write is blanked in its log while it is stopped, so after a
/// restart its state lacks that write at every index from there on, and
/// Raft does not repair it (same log id).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t94_check_consistency_names_a_diverged_replica() {
    let mut c = ProcCluster::start(3).await;
    let leader = c.wait_leader(Duration::from_secs(10)).await;
    let mut index = 0;
    for i in 0..5 {
        let body = json!({"name": format!("cc{i}"), "kind": {"Int": {"min": 0, "max": 100}}, "value": {"Int": i}});
        let r = c.post(leader, "/v1/params", &body).await.expect("declare");
        index = r["index"].as_u64().expect("write answers its index");
    }
    let out = c.cli(&["check", "consistency"]);
    let text = out_text(&out);
    assert!(out.status.success(), "healthy cluster: {text}");
    assert!(text.contains("all 3 members agree"), "{text}");

    // Bad or impossible requests of the hash at an index: a clear error each.
    let get = |path: String| {
        let c = &c;
        async move { c.send(leader, reqwest::Method::GET, &path, None, &[]).await }
    };
    let (status, _, body) = get("/v1/state/hash?at=1&wait_ms=30001".into()).await;
    assert!(
        status == 400 && body.contains("\"field\":\"wait_ms\""),
        "{status} {body}"
    );
    let (status, _, body) = get("/v1/state/hash?wait_ms=10".into()).await;
    assert!(
        status == 400 && body.contains("only meaningful with `at`"),
        "{status} {body}"
    );
    let (status, _, body) = get("/v1/state/hash?at=1".into()).await;
    assert!(
        status == 409 && body.contains("\"code\":\"hash_passed\""),
        "{status} {body}"
    );
    let (status, _, body) = get(format!("/v1/state/hash?at={}&wait_ms=200", index + 1_000_000)).await;
    assert!(
        status == 504 && body.contains("not the requested") && !body.contains("outcome"),
        "{status} {body}"
    );

    let victim = (1..=3).find(|i| *i != leader).unwrap();
    c.stop(victim).await.expect("stops gracefully");
    cairn::raft::blank_log_entry(c.data_dir(victim), index).expect("blank the last declare in the victim's log");
    c.restart(victim).await;
    c.wait_applied(victim, index, Duration::from_secs(10)).await;

    let out = c.cli(&["check", "consistency"]);
    let text = out_text(&out);
    assert_eq!(out.status.code(), Some(2), "diverged replica: {text}");
    assert!(
        text.contains(&format!("member(s) [{victim}]")) && text.contains("DIVERGED"),
        "names node {victim}: {text}"
    );
    let out = c.cli(&["-o", "json", "check", "consistency"]);
    assert_eq!(out.status.code(), Some(2), "{}", out_text(&out));
    let report: Value = serde_json::from_slice(&out.stdout).expect("json report");
    assert_eq!(report["diverged"], json!([victim]), "{report}");
    let odd = report["members"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["id"] == victim)
        .unwrap();
    assert_ne!(odd["sha256"], report["majority"], "{report}");
}

/// The registry entry of node `id` (linearizable), `None` if it has none.
async fn registry_entry(c: &ProcCluster, via: u64, id: u64) -> Option<Value> {
    c.get(via, &format!("/v1/nodes/{id}")).await.ok()
}

/// Waits (bounded) until node `id`'s registry entry satisfies `cond`.
async fn wait_entry(c: &ProcCluster, via: u64, id: u64, what: &str, cond: impl Fn(Option<&Value>) -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let entry = registry_entry(c, via, id).await;
        if cond(entry.as_ref()) {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "node {id}'s registry entry never {what}: {entry:?}\nlog:\n{}",
            c.log(id)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn capabilities(entry: Option<&Value>) -> Vec<String> {
    entry
        .and_then(|e| e["capabilities"].as_array())
        .into_iter()
        .flatten()
        .filter_map(|c| c.as_str().map(str::to_string))
        .collect()
}

/// Issue 17: the registry follows a node's config across a restart
/// (OPERATIONS.md's "canary first"), `cairn node update` changes an entry,
/// and `cairn node remove` takes a stopped node out and refuses a live one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t195_registry_follows_config_and_nodes_update_and_remove() {
    let mut c = ProcCluster::start(3).await;
    c.wait_leader(Duration::from_secs(15)).await;
    wait_entry(&c, 1, 3, "appeared", |e| e.is_some_and(|e| e["liveness"] == "Up")).await;
    assert_eq!(
        capabilities(registry_entry(&c, 1, 3).await.as_ref()),
        Vec::<String>::new()
    );

    tracing::info!("node 3's config gets capabilities and a budget; restart it");
    let config = c.dir().join("n3.toml");
    std::fs::write(
        &config,
        "capabilities = [\"canary\", \"lidar\"]\ncpu_millicores = 1234\nmemory_mib = 321\n",
    )
    .unwrap();
    assert!(c.stop(3).await.is_some_and(|s| s.success()), "node 3 stops cleanly");
    c.set_extra_args(3, vec!["--config".into(), config.display().to_string()]);
    c.restart(3).await;
    wait_entry(&c, 1, 3, "took the new config", |e| {
        capabilities(e) == ["canary", "lidar"]
            && e.is_some_and(|e| e["budget"] == json!({"cpu_millicores": 1234, "memory_mib": 321}))
    })
    .await;

    tracing::info!("cairn node update changes the entry, and the running agent leaves it");
    let out = cli_ok(c.cli(&["node", "update", "3", "--capability", "lidar", "--memory-mib", "500"]));
    assert!(out.contains("node 3 updated") && out.contains("[lidar]"), "{out}");
    let entry = registry_entry(&c, 1, 3).await;
    assert_eq!(capabilities(entry.as_ref()), ["lidar"]);
    assert_eq!(
        entry.map(|e| e["budget"].clone()),
        Some(json!({"cpu_millicores": 1234, "memory_mib": 500}))
    );
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(
        capabilities(registry_entry(&c, 1, 3).await.as_ref()),
        ["lidar"],
        "the agent kept the update"
    );

    tracing::info!("a node that is up cannot be removed");
    let out = c.cli(&["node", "remove", "3"]);
    assert!(
        !out.status.success(),
        "removing a live node must fail: {}",
        out_text(&out)
    );
    assert!(out_text(&out).contains("node 3 is up"), "{}", out_text(&out));
    assert!(
        registry_entry(&c, 1, 3).await.is_some(),
        "a refused remove changes nothing"
    );

    tracing::info!("stopped and down, it can");
    c.stop(3).await;
    wait_entry(&c, 1, 3, "went down", |e| e.is_some_and(|e| e["liveness"] == "Down")).await;
    let out = cli_ok(c.cli(&["node", "remove", "3"]));
    assert!(out.contains("node 3 removed"), "{out}");
    assert_eq!(registry_entry(&c, 1, 3).await, None);
    let list = cli_ok(c.cli(&["-o", "json", "node", "list"]));
    let ids: Vec<u64> = serde_json::from_str::<Value>(&list)
        .unwrap()
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|n| n["id"].as_u64())
        .collect();
    assert_eq!(ids, [1, 2], "{list}");
    let out = c.cli(&["node", "update", "3", "--cpu-millicores", "1"]);
    assert!(
        !out.status.success() && out_text(&out).contains("not found"),
        "{}",
        out_text(&out)
    );
}
