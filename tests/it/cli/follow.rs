//! The CLI's "follow things" (issue 22): shell completions, `task follow`,
//! `watch` with old and new values, `param describe|dump|load`, and
//! `topic list|echo|hz`.

use std::io::BufRead as _;
use std::os::unix::process::ExitStatusExt as _;
use std::process::Command;
use std::process::Stdio;
use std::time::Duration;
use std::time::Instant;

use serde_json::json;
use serde_json::Value;

use super::cli_alone;
use super::json_out;
use super::said;
use super::Sim;
use crate::harness::Options;
use crate::harness::ProcCluster;

/// A CLI process whose stdout is read line by line as it prints.
struct Lines {
    child: std::process::Child,
    rx: std::sync::mpsc::Receiver<String>,
    seen: Vec<String>,
}

impl Lines {
    fn spawn(mut cmd: Command) -> Self {
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn cairn");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Self {
            child,
            rx,
            seen: Vec::new(),
        }
    }

    /// The first new line that `pred` accepts, within `limit`.
    fn wait_for(&mut self, limit: Duration, pred: impl Fn(&str) -> bool) -> Option<String> {
        let deadline = Instant::now() + limit;
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            match self.rx.recv_timeout(left) {
                Ok(line) => {
                    self.seen.push(line.clone());
                    if pred(&line) {
                        return Some(line);
                    }
                }
                Err(std::sync::mpsc::RecvTimeoutError::Timeout) => return None,
                Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
                    std::thread::sleep(Duration::from_millis(50));
                    return None;
                }
            }
        }
        None
    }

    /// Waits for the process to end (killed after `limit`): its exit code,
    /// every line it printed, its stderr.
    fn finish(mut self, limit: Duration) -> (Option<i32>, Vec<String>, String) {
        let deadline = Instant::now() + limit;
        let status = loop {
            if let Some(s) = self.child.try_wait().expect("poll cairn") {
                break Some(s);
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                break None;
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        // What was printed before the end.
        let until = Instant::now() + Duration::from_secs(2);
        while let Ok(line) = self.rx.recv_timeout(until.saturating_duration_since(Instant::now())) {
            self.seen.push(line);
        }
        let mut stderr = String::new();
        if let Some(mut e) = self.child.stderr.take() {
            use std::io::Read as _;
            let _ = e.read_to_string(&mut stderr);
        }
        (status.and_then(|s| s.code()), self.seen, stderr)
    }
}

/// `cairn completion SHELL` prints a completion script generated from the
/// real command line; bash accepts it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t111_completion_scripts_for_bash_zsh_fish() {
    let out = cli_alone("127.0.0.1:1", &["completion", "bash"]);
    assert!(out.status.success(), "{}", said(&out));
    let script = String::from_utf8_lossy(&out.stdout).to_string();
    for word in ["task", "param", "watch", "--endpoints"] {
        assert!(
            script.contains(word),
            "no {word:?} in the bash completion: {}",
            said(&out)
        );
    }
    let dir = tempfile::TempDir::new().unwrap();
    let file = dir.path().join("cairn.bash");
    std::fs::write(&file, &script).unwrap();
    let check = Command::new("bash").arg("-n").arg(&file).output().unwrap();
    assert!(check.status.success(), "bash -n refuses the script: {}", said(&check));

    for shell in ["zsh", "fish"] {
        let out = cli_alone("127.0.0.1:1", &["completion", shell]);
        assert!(out.status.success(), "{}", said(&out));
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            text.contains("cairn") && text.contains("param"),
            "{shell}: {}",
            said(&out)
        );
    }
    let v = json_out(&cli_alone("127.0.0.1:1", &["-o", "json", "completion", "bash"]));
    assert_eq!(v["shell"], "bash", "{v}");
    assert_eq!(v["script"].as_str(), Some(script.as_str()));
    let out = cli_alone("127.0.0.1:1", &["completion", "tcsh"]);
    assert_eq!(out.status.code(), Some(2), "{}", said(&out));
}

/// `task submit --follow` prints the task as it changes until it ends,
/// then exits 0 for a success; `-o json` is one object per line.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t112_submit_follow_prints_progress_until_the_task_succeeds() {
    let dir = tempfile::TempDir::new().unwrap();
    let sim = Sim::start(dir.path(), false).await;
    let c = ProcCluster::start_with(
        3,
        Options {
            extra_args: vec!["--sim".into(), sim.addr.clone()],
            ..Options::default()
        },
    )
    .await;
    c.wait_leader(Duration::from_secs(15)).await;
    tracing::info!("a plan with one waypoint close by, and the perception task");
    let goal = json!({"kind": {"Waypoint": {"pose": {"position": [4.0, 0.0, 0.0], "heading_rad": 0.0}}},
                      "tolerance": {"position_m": 0.5, "heading_rad": null}});
    let body = json!({"name": "t112", "frame_id": "map", "goals": [goal]}).to_string();
    let (code, _, text) = c
        .send(1, reqwest::Method::PUT, "/v1/mission/plan", Some(&body), &[])
        .await;
    assert_eq!(code, 200, "{text}");
    c.post(
        1,
        "/v1/tasks",
        &json!({"kind": "perceive", "required_capabilities": ["sensors"]}),
    )
    .await
    .unwrap();

    tracing::info!("submit navigate and follow it to the end");
    let all: Vec<&str> = (1..=3).map(|i| c.api_addr(i)).collect();
    let mut cmd = c.cli_command(&all.join(","));
    cmd.args([
        "-o",
        "json",
        "task",
        "submit",
        "navigate",
        "--capability",
        "drive",
        "--follow",
    ]);
    let follow = Lines::spawn(cmd);
    let (code, lines, stderr) = tokio::task::spawn_blocking(move || follow.finish(Duration::from_secs(150)))
        .await
        .unwrap();
    let shown = format!("exit {code:?}\nstdout:\n{}\nstderr:\n{stderr}", lines.join("\n"));
    assert_eq!(code, Some(0), "{shown}");
    let objects: Vec<Value> = lines
        .iter()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not one JSON object per line ({e}): {shown}")))
        .collect();
    let id = objects[0]["response"]["TaskCreated"]["task_id"]
        .as_u64()
        .unwrap_or_else(|| panic!("the first line is not the submit's answer: {shown}"));
    let states: Vec<&str> = objects[1..].iter().filter_map(|o| o["state"].as_str()).collect();
    assert_eq!(states.last(), Some(&"Succeeded"), "{shown}");
    assert!(states.contains(&"Running"), "never seen running: {shown}");
    assert!(objects[1..].iter().all(|o| o["id"] == id), "{shown}");

    tracing::info!("a finished task: one line, exit 0 at once");
    let out = c.cli(&["task", "follow", &id.to_string()]);
    assert!(out.status.success(), "{}", said(&out));
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(text.contains(&format!("task {id}: succeeded")), "{}", said(&out));
    drop(sim);
}

/// `task follow` survives the death of the node it streams from (the
/// watch resumes on the next endpoint), and a cancelled task ends it with
/// exit 2; a task that does not exist is exit 4.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t113_follow_survives_failover_and_a_cancel_exits_2() {
    let mut c = ProcCluster::start(3).await;
    let leader = c.wait_leader(Duration::from_secs(15)).await;
    let out = c.cli(&[
        "-o",
        "json",
        "task",
        "submit",
        "t113",
        "--capability",
        "t113-nobody-has-it",
    ]);
    let v = json_out(&out);
    let id = v["response"]["TaskCreated"]["task_id"]
        .as_u64()
        .unwrap_or_else(|| panic!("no task id: {v}"));

    tracing::info!("follow, streaming from the leader first");
    let mut eps = vec![c.api_addr(leader).to_string()];
    eps.extend((1..=3).filter(|i| *i != leader).map(|i| c.api_addr(i).to_string()));
    let mut cmd = c.cli_command(&eps.join(","));
    cmd.args(["task", "follow", &id.to_string()]);
    let mut follow = Lines::spawn(cmd);
    let first = follow.wait_for(Duration::from_secs(20), |l| l.contains(&format!("task {id}: pending")));
    assert!(first.is_some(), "no pending line: {:?}", follow.seen);

    tracing::info!("kill -9 the node it streams from, then cancel through the others");
    c.kill(leader);
    let others: Vec<String> = (1..=3)
        .filter(|i| *i != leader)
        .map(|i| c.api_addr(i).to_string())
        .collect();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let out = c
            .cli_command(&others.join(","))
            .args(["task", "cancel", &id.to_string()])
            .output()
            .unwrap();
        if out.status.success() {
            break;
        }
        assert!(Instant::now() < deadline, "cancel never went through: {}", said(&out));
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let (code, lines, stderr) = tokio::task::spawn_blocking(move || follow.finish(Duration::from_secs(30)))
        .await
        .unwrap();
    let shown = format!("exit {code:?}\nstdout:\n{}\nstderr:\n{stderr}", lines.join("\n"));
    assert!(
        lines.iter().any(|l| l.contains(&format!("task {id}: cancelled"))),
        "{shown}"
    );
    assert_eq!(code, Some(2), "{shown}");
    assert!(stderr.contains("cancelled"), "{shown}");

    tracing::info!("no such task: refused, exit 4");
    let out = c
        .cli_command(&others.join(","))
        .args(["task", "follow", "999999"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(4), "{}", said(&out));
}

/// `cairn watch` prints the key each change changed with its old and new
/// value (it printed only the command's name); `-o json` adds `key`, `old`
/// and `new` to the change.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t114_watch_prints_key_old_and_new_value() {
    let c = ProcCluster::start(3).await;
    c.wait_leader(Duration::from_secs(15)).await;
    let out = c.cli(&["param", "declare", "t114.speed", "float:0:100", "1.0"]);
    assert!(out.status.success(), "{}", said(&out));
    let mut table = Lines::spawn({
        let mut cmd = c.cli_command(c.api_addr(1));
        cmd.args(["watch"]);
        cmd
    });
    let mut json = Lines::spawn({
        let mut cmd = c.cli_command(c.api_addr(2));
        cmd.args(["-o", "json", "watch"]);
        cmd
    });
    tracing::info!("set the value up by one until both watches have printed it");
    let (mut table_line, mut json_line) = (None, None);
    for k in 2..40 {
        let out = c.cli(&["param", "set", "t114.speed", &k.to_string()]);
        assert!(out.status.success(), "{}", said(&out));
        let wait = Duration::from_millis(400);
        if table_line.is_none() {
            table_line = table.wait_for(wait, |l| l.contains("param/t114.speed"));
        }
        if json_line.is_none() {
            json_line = json.wait_for(wait, |l| l.contains("\"param/t114.speed\""));
        }
        if table_line.is_some() && json_line.is_some() {
            break;
        }
    }
    let table_line =
        table_line.unwrap_or_else(|| panic!("no param/t114.speed line in `cairn watch`: {:?}", table.seen));
    let change = table_line
        .split("param/t114.speed")
        .nth(1)
        .unwrap_or_default()
        .trim()
        .to_string();
    let (old, new) = change
        .split_once(" -> ")
        .unwrap_or_else(|| panic!("no `old -> new` in {table_line:?}"));
    let (old, new): (f64, f64) = (
        old.parse()
            .unwrap_or_else(|_| panic!("old value {old:?} in {table_line:?}")),
        new.parse()
            .unwrap_or_else(|_| panic!("new value {new:?} in {table_line:?}")),
    );
    assert_eq!(new, old + 1.0, "{table_line}");
    assert!(table_line.contains("SetParam"), "{table_line}");

    let json_line =
        json_line.unwrap_or_else(|| panic!("no param/t114.speed object in `-o json watch`: {:?}", json.seen));
    let v: Value = serde_json::from_str(&json_line).unwrap_or_else(|e| panic!("{e}: {json_line}"));
    let num = |s: &Value| s.as_str().and_then(|s| s.parse::<f64>().ok());
    let (old, new) = (num(&v["old"]), num(&v["new"]));
    assert!(old.is_some() && new == old.map(|o| o + 1.0), "{v}");
    assert!(
        v["command"]["SetParam"].is_object() && v["index"].as_u64().is_some(),
        "{v}"
    );
    let _ = table.finish(Duration::ZERO);
    let _ = json.finish(Duration::ZERO);
}

/// `param describe` shows kind, bounds and description; `param dump`
/// writes YAML that `param load` applies back, and a file with one bad
/// entry changes nothing and names the entry.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t115_param_describe_dump_and_load_round_trip() {
    let c = ProcCluster::start(3).await;
    c.wait_leader(Duration::from_secs(15)).await;
    for args in [
        vec!["t115.gain", "float:0:2", "1.5", "--description", "how hard to steer"],
        vec!["t115.mode", "enum:slow|fast", "slow"],
        vec!["t115.n", "int:0:10", "3"],
        vec!["t115.on", "bool", "true"],
        vec!["t115.name", "string", "hello world"],
    ] {
        let mut all = vec!["param", "declare"];
        all.extend(args);
        let out = c.cli(&all);
        assert!(out.status.success(), "{}", said(&out));
    }

    tracing::info!("describe");
    let out = c.cli(&["param", "describe", "t115.gain"]);
    assert!(out.status.success(), "{}", said(&out));
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    for want in ["float:0.0:2.0", "how hard to steer", "1.5", "version", "set by"] {
        assert!(text.contains(want), "no {want:?}: {}", said(&out));
    }
    let v = json_out(&c.cli(&["-o", "json", "param", "describe", "t115.gain"]));
    assert_eq!(v["kind"]["Float"]["max"], 2.0, "{v}");
    let out = c.cli(&["param", "describe", "t115.nope"]);
    assert_eq!(out.status.code(), Some(4), "{}", said(&out));

    tracing::info!("dump, change, load, dump again");
    let dump = |c: &ProcCluster| {
        let out = c.cli(&["param", "dump"]);
        assert!(out.status.success(), "{}", said(&out));
        String::from_utf8_lossy(&out.stdout).to_string()
    };
    let original = dump(&c);
    assert!(original.starts_with("params:"), "{original}");
    for line in [
        "t115.gain: 1.5",
        "t115.mode: slow",
        "t115.n: 3",
        "t115.on: true",
        "t115.name: hello world",
    ] {
        assert!(original.contains(line), "no {line:?} in the dump:\n{original}");
    }
    let file = c.dir().join("t115.yaml");
    std::fs::write(&file, &original).unwrap();
    for (name, value) in [
        ("t115.gain", "0.5"),
        ("t115.mode", "fast"),
        ("t115.n", "7"),
        ("t115.on", "false"),
    ] {
        let out = c.cli(&["param", "set", name, value]);
        assert!(out.status.success(), "{}", said(&out));
    }
    let changed = dump(&c);
    assert_ne!(changed, original);

    tracing::info!("a file with one entry out of bounds: nothing changes, the entry is named");
    let bad = c.dir().join("t115-bad.yaml");
    std::fs::write(&bad, original.replace("t115.n: 3", "t115.n: 11")).unwrap();
    let out = c.cli(&["param", "load", bad.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1), "{}", said(&out));
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(
        err.contains("t115.n") && err.contains("nothing was set"),
        "{}",
        said(&out)
    );
    assert_eq!(dump(&c), changed, "a bad file changed something");
    std::fs::write(&bad, format!("{original}  t115.nope: 1\n")).unwrap();
    let out = c.cli(&["param", "load", bad.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1), "{}", said(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("t115.nope"),
        "{}",
        said(&out)
    );

    let v = json_out(&c.cli(&["-o", "json", "param", "load", file.to_str().unwrap()]));
    assert_eq!(v["set"].as_array().map(Vec::len), Some(4), "{v}");
    assert_eq!(dump(&c), original, "dump, change, load, dump differs");
    let out = c.cli(&["param", "load", file.to_str().unwrap()]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("0 set"), "{}", said(&out));
}

/// `topic list` shows a published topic; `topic echo --count N` prints N
/// of its messages and ends; `topic hz` prints the rate per window; `topic
/// echo` whose reader is gone ends by SIGPIPE.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t116_topic_list_echo_and_hz() {
    let c = std::sync::Arc::new(ProcCluster::start(3).await);
    c.wait_leader(Duration::from_secs(15)).await;
    tracing::info!("publish t116.test at about 5 Hz on node 1");
    let publisher = {
        let c = std::sync::Arc::clone(&c);
        tokio::spawn(async move {
            for i in 0..600u64 {
                let _ = c.post(1, "/v1/telemetry/t116.test", &json!({"i": i})).await;
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        })
    };
    tokio::time::sleep(Duration::from_secs(1)).await;

    let run = |args: Vec<&'static str>, endpoint: u64| {
        let mut cmd = c.cli_command(c.api_addr(endpoint));
        cmd.args(args);
        let lines = Lines::spawn(cmd);
        tokio::task::spawn_blocking(move || lines.finish(Duration::from_secs(30)))
    };
    let (code, lines, stderr) = run(vec!["-o", "json", "topic", "echo", "t116.test", "--count", "3"], 2)
        .await
        .unwrap();
    assert_eq!(code, Some(0), "{lines:?} {stderr}");
    assert_eq!(lines.len(), 3, "{lines:?}");
    let seqs: Vec<u64> = lines
        .iter()
        .map(|l| {
            let v: Value = serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}"));
            assert_eq!(v["topic"], "t116.test", "{v}");
            v["seq"].as_u64().unwrap_or_default()
        })
        .collect();
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "{seqs:?}");

    let (code, lines, stderr) = run(vec!["topic", "echo", "t116.test", "--count", "2"], 3)
        .await
        .unwrap();
    assert_eq!(code, Some(0), "{lines:?} {stderr}");
    assert!(
        lines.iter().all(|l| l.starts_with("t116.test node 1 seq ")),
        "{lines:?}"
    );

    let (code, lines, stderr) = run(
        vec![
            "-o",
            "json",
            "topic",
            "hz",
            "t116.test",
            "--window",
            "2",
            "--count",
            "2",
        ],
        2,
    )
    .await
    .unwrap();
    assert_eq!(code, Some(0), "{lines:?} {stderr}");
    assert_eq!(lines.len(), 2, "{lines:?}");
    let last: Value = serde_json::from_str(&lines[1]).unwrap();
    let rate = last["rate_hz"].as_f64().unwrap_or_default();
    assert!((2.0..=8.0).contains(&rate), "about 5 Hz expected: {lines:?}");

    let out = c.cli(&["topic", "list"]);
    assert!(out.status.success(), "{}", said(&out));
    let row = String::from_utf8_lossy(&out.stdout)
        .lines()
        .find(|l| l.starts_with("t116.test"))
        .map(str::to_string)
        .unwrap_or_else(|| panic!("no t116.test row: {}", said(&out)));
    assert!(row.contains("ago)"), "{row}");
    let v = json_out(&c.cli(&["-o", "json", "topic", "list"]));
    assert!(
        v["topics"]
            .as_array()
            .is_some_and(|t| t.iter().any(|t| t["topic"] == "t116.test")),
        "{v}"
    );

    tracing::info!("the reader goes away: SIGPIPE, no panic");
    let mut echo = c
        .cli_command(c.api_addr(1))
        .args(["topic", "echo", "t116.test"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    drop(echo.stdout.take());
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(s) = echo.try_wait().unwrap() {
            break s;
        }
        assert!(Instant::now() < deadline, "topic echo still runs with its reader gone");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(status.signal(), Some(13), "{status:?}");
    publisher.abort();
}
