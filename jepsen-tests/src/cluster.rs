//! A cluster of real `cairn` processes on loopback, each in its own temp
//! data dir, each dialling its peers through a [`LinkProxy`] per directed
//! link. Processes are killed with `SIGKILL`, paused with `SIGSTOP` and
//! resumed with `SIGCONT`, and restarted on their data dir.

use std::collections::BTreeMap;
use std::path::Path;
use std::path::PathBuf;
use std::process::Child;
use std::process::Command;
use std::process::Stdio;
use std::time::Duration;

use serde_json::json;
use serde_json::Value;
use tempfile::TempDir;

use crate::error::Error;
use crate::proxy::LinkFaults;
use crate::proxy::LinkProxy;

/// How long a node may take to answer `/healthz` after spawning: RocksDB
/// opens in well under a second; the rest is slack for a loaded CI machine.
const HEALTHY_WITHIN: Duration = Duration::from_secs(30);
/// Deadline of one status probe: a node that cannot answer its own status
/// in this long is paused or dead, which is itself what we want to record.
const STATUS_TIMEOUT: Duration = Duration::from_millis(500);
/// Deadline of one admin call (init, membership): membership changes wait
/// for a learner to catch up, which takes a few round trips.
const ADMIN_TIMEOUT: Duration = Duration::from_secs(10);

/// Where the `cairn` binary is: `$CAIRN_BIN`, else the workspace's
/// `target/debug/cairn` (honouring `$CARGO_TARGET_DIR`).
pub fn cairn_binary_path() -> PathBuf {
    if let Some(p) = std::env::var_os("CAIRN_BIN") {
        return PathBuf::from(p);
    }
    let root = workspace_root();
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target"));
    target.join("debug").join("cairn")
}

/// The workspace root (this crate's parent directory).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
}

/// Build the `cairn` binary with cargo (a no-op when it is up to date), so
/// a run never tests a stale binary; skipped when `$CAIRN_BIN` is set.
pub fn build_cairn() -> Result<PathBuf, Error> {
    let path = cairn_binary_path();
    if std::env::var_os("CAIRN_BIN").is_none() {
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        tracing::info!("building cairn (cargo build -p cairn --bin cairn)");
        let out = Command::new(cargo)
            .args(["build", "-p", "cairn", "--bin", "cairn"])
            .current_dir(workspace_root())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .output()
            .map_err(Error::io("run cargo build"))?;
        if !out.status.success() {
            let stderr = String::from_utf8_lossy(&out.stderr);
            let tail: Vec<&str> = stderr.lines().rev().take(30).collect();
            return Err(Error::Build {
                reason: tail.into_iter().rev().collect::<Vec<_>>().join("\n"),
            });
        }
    }
    if !path.exists() {
        return Err(Error::BinaryMissing { path });
    }
    Ok(path)
}

/// Node ports come from below the kernel's ephemeral range (32768+ on
/// Linux): the proxies' listeners and every outgoing connection take
/// ephemeral ports, and one of them landing on a killed node's port would
/// stop that node from restarting.
const NODE_PORTS: std::ops::Range<u16> = 20_000..32_000;

/// A port in [`NODE_PORTS`] that is free now (bounded tries: the range is
/// mostly empty, so a few hundred misses mean something is badly wrong).
fn free_port(rng: &mut rand::rngs::StdRng) -> Result<u16, Error> {
    use rand::Rng;
    for _ in 0..500 {
        let port = rng.random_range(NODE_PORTS);
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return Ok(port);
        }
    }
    Err(Error::Setup {
        reason: format!("no free port in {NODE_PORTS:?} after 500 tries"),
    })
}

/// What state a node process is in, as far as the nemesis knows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProcState {
    /// Running.
    Up,
    /// Stopped with `SIGSTOP`.
    Paused,
    /// Killed (or never started).
    Down,
}

/// One node process.
pub struct NodeProc {
    /// Node id.
    pub id: u64,
    /// Its transport address (what membership advertises).
    pub raft_addr: String,
    /// Its admin API address.
    pub api_addr: String,
    data_dir: PathBuf,
    config: PathBuf,
    log: PathBuf,
    child: Option<Child>,
    state: ProcState,
    /// `CAIRN_CLOCK_OFFSET_MS` of its next start (0: the true clock).
    clock_offset_ms: i64,
    /// Bumped on every (re)start.
    pub incarnation: u32,
}

/// How node processes are started.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Launcher {
    /// The shipped binary: `cairn node run --config nN.toml`.
    Cairn(PathBuf),
    /// `cairn-jepsen node --config nN.json` (this crate's binary at this
    /// path): the same `cairn::daemon::Daemon`, configured from JSON,
    /// because the TOML config cannot express `peer_dial_overrides` yet.
    Embedded(PathBuf),
}

impl Launcher {
    fn binary(&self) -> &Path {
        match self {
            Launcher::Cairn(p) | Launcher::Embedded(p) => p,
        }
    }
}

/// How node-to-node traffic is carried and cut.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NetMode {
    /// Loopback; every fault in the per-link userspace proxies.
    #[default]
    Proxy,
    /// A network namespace per node (root): partitions are nftables drop
    /// rules in the namespaces; delay and flaky stay in the proxies. Falls
    /// back to [`NetMode::Proxy`], with the reason recorded, when not root
    /// or `ip netns`/`nft` are missing.
    Netns,
}

impl NetMode {
    /// Its name on the command line.
    pub fn name(self) -> &'static str {
        match self {
            NetMode::Proxy => "proxy",
            NetMode::Netns => "netns",
        }
    }
}

impl std::str::FromStr for NetMode {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self, Error> {
        match s.trim() {
            "proxy" => Ok(NetMode::Proxy),
            "netns" => Ok(NetMode::Netns),
            other => Err(Error::Invalid {
                field: "net",
                reason: format!("{other:?} is not proxy or netns"),
            }),
        }
    }
}

/// Settings of a cluster.
#[derive(Clone, Debug)]
pub struct ClusterSpec {
    /// Number of nodes (ids 1..=n).
    pub nodes: u64,
    /// How nodes are started.
    pub launcher: Launcher,
    /// `RUST_LOG` of the nodes.
    pub log_filter: String,
    /// Seed for the proxies' random faults.
    pub seed: u64,
    /// The nodes' `timings.write_timeout_ms`.
    pub write_timeout_ms: u64,
    /// Put each node's data dir on its own tmpfs of this many MiB, so the
    /// `disk` nemesis can fill it (needs root for `mount`; see
    /// [`small_disks_possible`]).
    pub disk_mib: Option<u64>,
    /// How peer traffic is carried and cut.
    pub net: NetMode,
    /// `[snapshots]` of every node: a snapshot every this many entries,
    /// and this many kept behind it (`None`: the daemon's defaults).
    pub snapshots: Option<(u64, u64)>,
    /// Put each node's data dir on a fault filesystem of its own (the
    /// `power` nemesis; root, /dev/fuse and fusermount3, else skipped with
    /// the reason in [`Cluster::faultfs_note`]).
    pub faultfs: Option<FaultFsSpec>,
}

/// How the nodes' fault filesystems are run.
#[derive(Clone, Debug)]
pub struct FaultFsSpec {
    /// A `cairn-jepsen` binary (it has the `faultfs` subcommand).
    pub binary: PathBuf,
    /// Every disk's fsync delay at the start (`none`, `sd-card`, `0..1ms`).
    pub delay: String,
}

/// One node's fault filesystem process.
struct FsProc {
    child: Child,
    control: PathBuf,
    mount: PathBuf,
}

/// How long a faultfs gets to mount and answer its control socket.
const FAULTFS_WITHIN: Duration = Duration::from_secs(10);
/// Deadline of one faultfs control request (a cut rewrites a few files).
const FAULTFS_REQUEST: Duration = Duration::from_secs(5);

/// Whether this process may mount a tmpfs (runs as root): the `disk`
/// nemesis needs it and is skipped, with a recorded reason, otherwise.
pub fn small_disks_possible() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .map(|l| l.split_whitespace().nth(1) == Some("0"))
        })
        .unwrap_or(false)
}

fn mount_tmpfs(at: &Path, mib: u64) -> Result<(), Error> {
    std::fs::create_dir_all(at).map_err(Error::io(format!("create {}", at.display())))?;
    let out = Command::new("mount")
        .args(["-t", "tmpfs", "-o", &format!("size={mib}m"), "tmpfs"])
        .arg(at)
        .output()
        .map_err(Error::io("run mount"))?;
    if !out.status.success() {
        return Err(Error::Setup {
            reason: format!(
                "mount tmpfs at {}: {}",
                at.display(),
                String::from_utf8_lossy(&out.stderr).trim()
            ),
        });
    }
    Ok(())
}

/// A running cluster. Dropping it kills every process.
pub struct Cluster {
    spec: ClusterSpec,
    dir: TempDir,
    nodes: BTreeMap<u64, NodeProc>,
    links: BTreeMap<(u64, u64), LinkProxy>,
    http: reqwest::Client,
    incarnations: Incarnations,
    generations: Incarnations,
    /// Namespaces and bridge in netns mode (dropped after the processes).
    netns: Option<crate::netns::NetnsNet>,
    /// How the network was set up, and why netns mode was skipped if it was.
    net_note: String,
    /// Each node's fault filesystem (empty without one).
    faultfs: BTreeMap<u64, FsProc>,
    /// Why the fault filesystems were not mounted, if they were asked for
    /// and are not.
    faultfs_note: Option<String>,
}

/// Each node's current incarnation, shared with observers (the status
/// sampler) that run beside the nemesis.
pub type Incarnations = std::sync::Arc<std::sync::Mutex<BTreeMap<u64, u32>>>;

impl Cluster {
    /// Start `spec.nodes` processes with proxies on every directed link,
    /// and bootstrap them as one cluster of voters.
    pub async fn start(spec: ClusterSpec) -> Result<Self, Error> {
        if !spec.launcher.binary().exists() {
            return Err(Error::BinaryMissing {
                path: spec.launcher.binary().to_path_buf(),
            });
        }
        let dir = tempfile::Builder::new()
            .prefix("cairn-jepsen-")
            .tempdir()
            .map_err(Error::io("create the run's temp dir"))?;
        let http = reqwest::Client::builder()
            .pool_max_idle_per_host(0)
            .build()
            .map_err(|e| Error::Setup { reason: e.to_string() })?;
        // Ports are picked at random (not from the seed: two runs side by
        // side must not collide) and must differ within the cluster.
        let mut rng = <rand::rngs::StdRng as rand::SeedableRng>::from_os_rng();
        let mut taken = std::collections::BTreeSet::new();
        let mut port = || -> Result<u16, Error> {
            // Bounded: 2 ports per node, each retried until unique.
            for _ in 0..100 {
                let p = free_port(&mut rng)?;
                if taken.insert(p) {
                    return Ok(p);
                }
            }
            Err(Error::Setup {
                reason: "could not pick distinct node ports".into(),
            })
        };
        let (netns, net_note) = match spec.net {
            NetMode::Proxy => (None, "proxy: loopback, faults in the per-link proxies".to_string()),
            NetMode::Netns => match crate::netns::unavailable() {
                Some(reason) => {
                    tracing::warn!(%reason, "netns mode skipped; partitions go through the proxies");
                    (
                        None,
                        format!("proxy (netns requested but skipped: {reason}; partitions through the proxies)"),
                    )
                }
                None => {
                    let ids: Vec<u64> = (1..=spec.nodes).collect();
                    let net = crate::netns::NetnsNet::create(&ids)?;
                    let note = format!(
                        "netns: node i at {}.i in namespace {}{}-ni; partitions are nftables drops in the namespaces, delay/flaky in the proxies",
                        net.subnet_prefix(),
                        crate::netns::NS_PREFIX,
                        net.run(),
                    );
                    (Some(net), note)
                }
            },
        };
        let host = |id: u64| netns.as_ref().map_or("127.0.0.1".to_string(), |n| n.node_ip(id));
        let mut nodes = BTreeMap::new();
        for id in 1..=spec.nodes {
            nodes.insert(
                id,
                NodeProc {
                    id,
                    raft_addr: format!("{}:{}", host(id), port()?),
                    api_addr: format!("{}:{}", host(id), port()?),
                    data_dir: match spec.disk_mib {
                        Some(_) => dir.path().join(format!("n{id}.disk")).join("data"),
                        None => dir.path().join(format!("n{id}")),
                    },
                    // (moved onto its faultfs below, when mounted)
                    config: dir.path().join(match spec.launcher {
                        Launcher::Cairn(_) => format!("n{id}.toml"),
                        Launcher::Embedded(_) => format!("n{id}.json"),
                    }),
                    log: dir.path().join(format!("n{id}.log")),
                    child: None,
                    state: ProcState::Down,
                    clock_offset_ms: 0,
                    incarnation: 0,
                },
            );
        }
        if let Some(mib) = spec.disk_mib {
            for p in nodes.values() {
                if let Some(disk) = p.data_dir.parent() {
                    mount_tmpfs(disk, mib)?;
                }
            }
        }
        let mut faultfs = BTreeMap::new();
        let mut faultfs_note = None;
        if let Some(fs) = &spec.faultfs {
            match crate::faultfs::unavailable() {
                Some(reason) => faultfs_note = Some(reason),
                None => {
                    for (id, p) in nodes.iter_mut() {
                        match start_faultfs(dir.path(), *id, fs).await {
                            Ok(proc_) => {
                                p.data_dir = proc_.mount.join("data");
                                faultfs.insert(*id, proc_);
                            }
                            Err(e) => {
                                faultfs_note = Some(format!("mounting node {id}'s faultfs failed: {e}"));
                                break;
                            }
                        }
                    }
                    if faultfs_note.is_some() {
                        // All or nothing: unmount what did mount.
                        for (id, f) in std::mem::take(&mut faultfs) {
                            stop_faultfs(f);
                            if let Some(p) = nodes.get_mut(&id) {
                                p.data_dir = dir.path().join(format!("n{id}"));
                            }
                        }
                    }
                }
            }
        }
        let mut links = BTreeMap::new();
        for from in 1..=spec.nodes {
            for to in 1..=spec.nodes {
                if from != to {
                    let seed = spec.seed ^ (from << 32) ^ (to << 16);
                    let ip = netns.as_ref().map_or("127.0.0.1".to_string(), |n| n.host_ip());
                    links.insert(
                        (from, to),
                        LinkProxy::start_on(&ip, nodes[&to].raft_addr.clone(), seed).await?,
                    );
                }
            }
        }
        let mut c = Self {
            spec,
            dir,
            nodes,
            links,
            http,
            incarnations: Incarnations::default(),
            generations: Incarnations::default(),
            netns,
            net_note,
            faultfs,
            faultfs_note,
        };
        for id in c.ids() {
            c.write_config(id)?;
            c.spawn(id)?;
        }
        for id in c.ids() {
            c.wait_healthy(id).await?;
        }
        let members: BTreeMap<String, Value> = c
            .nodes
            .values()
            .map(|p| {
                (
                    p.id.to_string(),
                    json!({"raft_addr": p.raft_addr, "api_addr": p.api_addr}),
                )
            })
            .collect();
        c.admin(
            1,
            reqwest::Method::POST,
            "/v1/cluster/init",
            Some(json!({ "members": members })),
        )
        .await
        .map_err(|reason| Error::Setup {
            reason: format!("cluster init: {reason}"),
        })?;
        Ok(c)
    }

    /// Node ids.
    pub fn ids(&self) -> Vec<u64> {
        self.nodes.keys().copied().collect()
    }

    /// A node.
    pub fn node(&self, id: u64) -> &NodeProc {
        &self.nodes[&id]
    }

    /// Its process state.
    pub fn state(&self, id: u64) -> ProcState {
        self.nodes[&id].state
    }

    /// The run's temp dir (data dirs, configs, logs).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Each node's incarnation, kept up to date as nodes restart.
    pub fn incarnations(&self) -> Incarnations {
        self.incarnations.clone()
    }

    /// Each node's data generation (bumped by [`Cluster::wipe`]), in the
    /// same shape as [`Cluster::incarnations`].
    pub fn generations(&self) -> Incarnations {
        self.generations.clone()
    }

    /// The HTTP client used for admin calls.
    pub fn http(&self) -> &reqwest::Client {
        &self.http
    }

    fn write_config(&self, id: u64) -> Result<(), Error> {
        let p = &self.nodes[&id];
        let overrides: BTreeMap<String, String> = self
            .links
            .iter()
            .filter(|((from, _), _)| *from == id)
            .map(|((_, to), link)| (to.to_string(), link.addr().to_string()))
            .collect();
        let text = match &self.spec.launcher {
            Launcher::Cairn(_) => {
                let mut toml = format!(
                    "id = {id}\nraft_addr = \"{}\"\napi_addr = \"{}\"\ndata_dir = \"{}\"\n\n[timings]\nwrite_timeout_ms = {}\n\n[peer_dial_overrides]\n",
                    p.raft_addr,
                    p.api_addr,
                    p.data_dir.display(),
                    self.spec.write_timeout_ms
                );
                for (to, addr) in &overrides {
                    toml.push_str(&format!("\"{to}\" = \"{addr}\"\n"));
                }
                if let Some((every, kept)) = self.spec.snapshots {
                    toml.push_str(&format!(
                        "\n[snapshots]\nsnapshot_every_entries = {every}\nlogs_kept_after_snapshot = {kept}\n"
                    ));
                }
                toml
            }
            Launcher::Embedded(_) => {
                let mut config = json!({
                    "id": id,
                    "raft_addr": p.raft_addr,
                    "api_addr": p.api_addr,
                    "data_dir": p.data_dir,
                    "timings": {"write_timeout_ms": self.spec.write_timeout_ms},
                    "peer_dial_overrides": overrides,
                });
                if let Some((every, kept)) = self.spec.snapshots {
                    config["snapshots"] = json!({"snapshot_every_entries": every, "logs_kept_after_snapshot": kept});
                }
                config.to_string()
            }
        };
        std::fs::write(&p.config, text).map_err(Error::io(format!("write {}", p.config.display())))
    }

    fn spawn(&mut self, id: u64) -> Result<(), Error> {
        let filter = self.spec.log_filter.clone();
        let launcher = self.spec.launcher.clone();
        let p = self.nodes.get_mut(&id).expect("known node");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&p.log)
            .map_err(Error::io(format!("open {}", p.log.display())))?;
        let mut cmd = match self.netns.as_ref().and_then(|n| n.ns(id)) {
            // `ip netns exec` execs the binary: the child's pid is the node's.
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns]).arg(launcher.binary());
                c
            }
            None => Command::new(launcher.binary()),
        };
        match launcher {
            Launcher::Cairn(_) => cmd.args(["node", "run", "--config"]),
            Launcher::Embedded(_) => cmd.args(["node", "--config"]),
        };
        let child = cmd
            .arg(&p.config)
            .env("RUST_LOG", filter)
            .env("CAIRN_CLOCK_OFFSET_MS", p.clock_offset_ms.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .map_err(Error::io(format!("spawn node {id}")))?;
        p.child = Some(child);
        p.state = ProcState::Up;
        p.incarnation += 1;
        self.incarnations
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id, p.incarnation);
        Ok(())
    }

    async fn wait_healthy(&self, id: u64) -> Result<(), Error> {
        let url = format!("http://{}/healthz", self.nodes[&id].api_addr);
        // Polled every 50 ms: start-up is quick, and the loop is bounded by
        // HEALTHY_WITHIN.
        let deadline = tokio::time::Instant::now() + HEALTHY_WITHIN;
        while tokio::time::Instant::now() < deadline {
            if let Ok(r) = self.http.get(&url).timeout(STATUS_TIMEOUT).send().await {
                if r.status().is_success() {
                    return Ok(());
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Err(Error::NodeNeverHealthy {
            node_id: id,
            log_tail: self.log_tail(id, 30),
        })
    }

    /// The last `lines` lines of a node's log.
    pub fn log_tail(&self, id: u64, lines: usize) -> String {
        let text = std::fs::read_to_string(&self.nodes[&id].log).unwrap_or_default();
        let tail: Vec<&str> = text.lines().rev().take(lines).collect();
        tail.into_iter().rev().collect::<Vec<_>>().join("\n")
    }

    /// The length of node `id`'s log so far (every incarnation appends).
    pub fn log_len(&self, id: u64) -> u64 {
        std::fs::metadata(&self.nodes[&id].log).map_or(0, |m| m.len())
    }

    /// Node `id`'s log from byte `offset` on (lossy UTF-8).
    pub fn log_since(&self, id: u64, offset: u64) -> String {
        use std::io::Read as _;
        use std::io::Seek as _;
        // Read from the offset on only: the aimed power cuts poll this
        // every few ms.
        let mut bytes = Vec::new();
        if let Ok(mut f) = std::fs::File::open(&self.nodes[&id].log) {
            if f.seek(std::io::SeekFrom::Start(offset)).is_ok() {
                let _ = f.read_to_end(&mut bytes);
            }
        }
        String::from_utf8_lossy(&bytes).into_owned()
    }

    /// Where node `id`'s test action handler journals its actuations (see
    /// [`crate::tasks`]); only the embedded launcher runs that handler.
    pub fn journal(&self, id: u64) -> PathBuf {
        crate::tasks::journal_for(&self.nodes[&id].config)
    }

    /// Whether nodes run the suite's task handler (the embedded launcher).
    pub fn runs_tasks(&self) -> bool {
        matches!(self.spec.launcher, Launcher::Embedded(_))
    }

    /// Copy every node's log into `dir`.
    pub fn copy_logs(&self, dir: &Path) -> Result<(), Error> {
        for p in self.nodes.values() {
            let to = dir.join(format!("n{}.log", p.id));
            std::fs::copy(&p.log, &to).map_err(Error::io(format!("copy {}", p.log.display())))?;
        }
        Ok(())
    }

    /// `kill -9`.
    pub fn kill(&mut self, id: u64) {
        let p = self.nodes.get_mut(&id).expect("known node");
        if let Some(mut child) = p.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        p.state = ProcState::Down;
    }

    /// Set the wall-clock offset node `id` gets on its next (re)start
    /// (`CAIRN_CLOCK_OFFSET_MS`, a test-only hook in raft-core).
    pub fn set_clock_offset(&mut self, id: u64, offset_ms: i64) {
        if let Some(p) = self.nodes.get_mut(&id) {
            p.clock_offset_ms = offset_ms;
        }
    }

    /// Node `id`'s current clock offset.
    pub fn clock_offset(&self, id: u64) -> i64 {
        self.nodes.get(&id).map_or(0, |p| p.clock_offset_ms)
    }

    /// Whether every node's data dir is on a fault filesystem.
    pub fn has_faultfs(&self) -> bool {
        !self.faultfs.is_empty()
    }

    /// Why the fault filesystems asked for are not there (`None`: they
    /// are, or were not asked for).
    pub fn faultfs_note(&self) -> Option<&str> {
        self.faultfs_note.as_deref()
    }

    /// The fsync delay every fault filesystem started with (`None`: none
    /// were asked for).
    pub fn faultfs_base_delay(&self) -> Option<String> {
        self.spec.faultfs.as_ref().map(|f| f.delay.clone())
    }

    /// One control request to node `id`'s faultfs (`cut`, `on`, `delay
    /// SPEC`, ...); `Err` unless it answered `ok …`.
    pub async fn faultfs_request(&self, id: u64, line: &str) -> Result<String, String> {
        let f = self
            .faultfs
            .get(&id)
            .ok_or_else(|| format!("node {id} has no faultfs"))?;
        crate::faultfs::request(&f.control, line, FAULTFS_REQUEST).await
    }

    /// Node `id`'s faultfs control socket, if it has one.
    pub fn faultfs_socket(&self, id: u64) -> Option<PathBuf> {
        self.faultfs.get(&id).map(|f| f.control.clone())
    }

    /// A power cut of `ids`: `SIGKILL` each, then drop each one's unsynced
    /// data (`cut`, which also refuses any write still in flight), reap the
    /// processes, and power the disks on again. The nodes stay down. Returns
    /// each disk's answer to the cut; `Err` names the first cut that was
    /// not acknowledged (the fault did not happen as intended).
    pub async fn power_cut(&mut self, ids: &[u64]) -> Result<Vec<(u64, String)>, String> {
        for id in ids {
            if let Some(p) = self.nodes.get_mut(id) {
                if let Some(child) = p.child.as_mut() {
                    let _ = child.kill();
                }
            }
        }
        let mut answers = Vec::new();
        let mut failed = None;
        for id in ids {
            match self.faultfs_request(*id, "cut").await {
                Ok(a) => answers.push((*id, a)),
                Err(e) => {
                    failed.get_or_insert(format!("node {id}: cut not acknowledged: {e}"));
                }
            }
        }
        for id in ids {
            // A process blocked in a delayed fsync exits when it is
            // answered (EIO, after the cut): bounded by the longest stall.
            let p = self.nodes.get_mut(id).expect("known node");
            if let Some(mut child) = p.child.take() {
                let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
                while !matches!(child.try_wait(), Ok(Some(_))) && tokio::time::Instant::now() < deadline {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                let _ = child.kill();
                let _ = child.wait();
            }
            p.state = ProcState::Down;
        }
        for id in ids {
            if let Err(e) = self.faultfs_request(*id, "on").await {
                failed.get_or_insert(format!("node {id}: power-on not acknowledged: {e}"));
            }
        }
        match failed {
            Some(e) => Err(e),
            None => Ok(answers),
        }
    }

    /// Restart killed nodes together: spawn them all, then wait for each.
    pub async fn restart_all(&mut self, ids: &[u64]) -> Result<(), Error> {
        let mut spawned = Vec::new();
        for id in ids {
            if self.nodes[id].state == ProcState::Down {
                self.spawn(*id)?;
                spawned.push(*id);
            }
        }
        for id in spawned {
            self.wait_healthy(id).await?;
        }
        Ok(())
    }

    /// Whether node `id`'s data dir is on a small disk of its own.
    pub fn has_small_disk(&self) -> bool {
        self.spec.disk_mib.is_some()
    }

    /// Fill node `id`'s small disk with a filler file until not one byte
    /// is left: 1 MiB writes until `ENOSPC`, then 4 KiB ones (tmpfs hands
    /// out pages, so when a 4 KiB write fails the disk is full). Bounded by
    /// the disk's size. Returns the bytes written and the bytes still
    /// available afterwards (`df`; 0 when it worked).
    pub fn fill_disk(&self, id: u64) -> Result<(u64, Option<u64>), Error> {
        use std::io::Write;
        let Some(mib) = self.spec.disk_mib else {
            return Ok((0, None));
        };
        let path = self.filler(id);
        let mut f = std::fs::File::create(&path).map_err(Error::io(format!("create {}", path.display())))?;
        let mut written = 0u64;
        for size in [1usize << 20, 4096] {
            let chunk = vec![0u8; size];
            // At most the whole disk in chunks of this size.
            for _ in 0..=(mib << 20) / size as u64 {
                match f.write(&chunk) {
                    Ok(n) if n == size => written += n as u64,
                    Ok(n) => {
                        written += n as u64;
                        break;
                    }
                    Err(_) => break,
                }
            }
        }
        let _ = f.flush();
        Ok((written, self.disk_available(id)))
    }

    /// Bytes available on node `id`'s small disk (`df`), if known.
    pub fn disk_available(&self, id: u64) -> Option<u64> {
        let out = Command::new("df")
            .args(["-B1", "--output=avail"])
            .arg(self.filler(id).parent()?)
            .output()
            .ok()?;
        String::from_utf8_lossy(&out.stdout).lines().nth(1)?.trim().parse().ok()
    }

    /// Start a killed node on its data dir and watch it for at most
    /// `within`: `Ok(None)` once it answers `/healthz`, `Ok(Some(status))`
    /// if it exits first (e.g. RocksDB cannot open a full disk), `Err` if
    /// it did neither (it is left running; healing kills it if need be).
    pub async fn start_watching(
        &mut self,
        id: u64,
        within: Duration,
    ) -> Result<Option<std::process::ExitStatus>, Error> {
        if self.nodes[&id].state != ProcState::Down {
            return Ok(None);
        }
        self.spawn(id)?;
        let url = format!("http://{}/healthz", self.nodes[&id].api_addr);
        let deadline = tokio::time::Instant::now() + within;
        while tokio::time::Instant::now() < deadline {
            let p = self.nodes.get_mut(&id).expect("known node");
            if let Some(Ok(Some(status))) = p.child.as_mut().map(|c| c.try_wait()) {
                p.child = None;
                p.state = ProcState::Down;
                return Ok(Some(status));
            }
            if let Ok(r) = self.http.get(&url).timeout(STATUS_TIMEOUT).send().await {
                if r.status().is_success() {
                    return Ok(None);
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Err(Error::NodeNeverHealthy {
            node_id: id,
            log_tail: self.log_tail(id, 5),
        })
    }

    /// Delete node `id`'s filler file (nothing if there is none).
    pub fn free_disk(&self, id: u64) {
        let _ = std::fs::remove_file(self.filler(id));
    }

    fn filler(&self, id: u64) -> PathBuf {
        let data = &self.nodes[&id].data_dir;
        data.parent().unwrap_or(data).join("filler")
    }

    /// Whether node `id`'s process has exited on its own (a crash).
    pub fn exited(&mut self, id: u64) -> bool {
        let Some(p) = self.nodes.get_mut(&id) else { return false };
        match p.child.as_mut().map(|c| c.try_wait()) {
            Some(Ok(Some(_))) => {
                p.child = None;
                p.state = ProcState::Down;
                true
            }
            _ => false,
        }
    }

    /// Delete a killed node's data dir: it restarts empty, as a replaced
    /// Pi would. Refused while the process runs.
    pub fn wipe(&mut self, id: u64) -> Result<(), Error> {
        let p = &self.nodes[&id];
        if p.state != ProcState::Down {
            return Err(Error::Setup {
                reason: format!("refusing to wipe node {id}: it is running"),
            });
        }
        match std::fs::remove_dir_all(&p.data_dir) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                return Err(Error::Io {
                    what: format!("wipe {}", p.data_dir.display()),
                    source: e,
                })
            }
        }
        *self
            .generations
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(id)
            .or_insert(0) += 1;
        Ok(())
    }

    /// Restart a killed node on its data dir and wait until it answers.
    pub async fn restart(&mut self, id: u64) -> Result<(), Error> {
        if self.nodes[&id].state != ProcState::Down {
            return Ok(());
        }
        self.spawn(id)?;
        self.wait_healthy(id).await
    }

    fn signal(&self, id: u64, sig: &str) -> Result<(), Error> {
        let Some(child) = &self.nodes[&id].child else {
            return Ok(());
        };
        let status = Command::new("kill")
            .args([sig, &child.id().to_string()])
            .status()
            .map_err(Error::io(format!("kill {sig} node {id}")))?;
        if !status.success() {
            return Err(Error::Io {
                what: format!("kill {sig} node {id}"),
                source: std::io::Error::other(format!("kill exited with {status}")),
            });
        }
        Ok(())
    }

    /// `SIGSTOP`: the process freezes with its sockets open.
    pub fn pause(&mut self, id: u64) -> Result<(), Error> {
        if self.nodes[&id].state == ProcState::Up {
            self.signal(id, "-STOP")?;
            self.nodes.get_mut(&id).expect("known node").state = ProcState::Paused;
        }
        Ok(())
    }

    /// `SIGCONT`.
    pub fn resume(&mut self, id: u64) -> Result<(), Error> {
        if self.nodes[&id].state == ProcState::Paused {
            self.signal(id, "-CONT")?;
            self.nodes.get_mut(&id).expect("known node").state = ProcState::Up;
        }
        Ok(())
    }

    /// Set the faults of the link `from → to`.
    pub fn set_link(&self, from: u64, to: u64, faults: LinkFaults) {
        if let Some(l) = self.links.get(&(from, to)) {
            l.set(faults);
        }
    }

    /// Set the faults of every link.
    pub fn set_all_links(&self, faults: LinkFaults) {
        for l in self.links.values() {
            l.set(faults);
        }
    }

    /// Cut every link between nodes that `connected` says cannot talk; the
    /// other links pass. In netns mode the cut is made by nftables drop
    /// rules in each dialling node's namespace; otherwise by the proxies.
    pub fn partition(&self, connected: impl Fn(u64, u64) -> bool) -> Result<(), Error> {
        let cut = |from: u64, to: u64| !(connected(from, to) && connected(to, from));
        let Some(net) = &self.netns else {
            for ((from, to), l) in &self.links {
                l.set(LinkFaults {
                    cut: cut(*from, *to),
                    ..Default::default()
                });
            }
            return Ok(());
        };
        self.set_all_links(LinkFaults::default());
        for id in self.ids() {
            let ports: Vec<u16> = self
                .links
                .iter()
                .filter(|((from, to), _)| *from == id && cut(*from, *to))
                .map(|(_, l)| l.addr().port())
                .collect();
            net.set_cuts(id, &ports)?;
        }
        Ok(())
    }

    /// How a partition is made: `proxy` or `nftables`.
    pub fn cut_mechanism(&self) -> &'static str {
        if self.netns.is_some() {
            "nftables"
        } else {
            "proxy"
        }
    }

    /// How the network is set up (and why netns mode was skipped, if it was).
    pub fn net_note(&self) -> &str {
        &self.net_note
    }

    /// The nftables rules in node `id`'s namespace (netns mode only).
    pub fn nft_rules(&self, id: u64) -> Option<Result<String, Error>> {
        self.netns.as_ref().map(|n| n.rules(id))
    }

    /// Undo every fault: links pass, paused nodes resume, killed nodes
    /// restart.
    pub async fn heal(&mut self) -> Result<(), Error> {
        self.set_all_links(LinkFaults::default());
        if let Some(net) = &self.netns {
            for id in self.ids() {
                net.set_cuts(id, &[])?;
            }
        }
        for id in self.ids() {
            self.resume(id)?;
        }
        for id in self.ids() {
            self.restart(id).await?;
        }
        Ok(())
    }

    /// `GET /v1/status` of one node, if it answers quickly.
    pub async fn status(&self, id: u64) -> Option<Value> {
        if self.nodes[&id].state != ProcState::Up {
            return None;
        }
        let url = format!("http://{}/v1/status", self.nodes[&id].api_addr);
        let r = self.http.get(url).timeout(STATUS_TIMEOUT).send().await.ok()?;
        if !r.status().is_success() {
            return None;
        }
        r.json().await.ok()
    }

    /// `GET /v1/state/hash?consistency=stale` of one node: its applied
    /// index and the hash of its replicated state there.
    pub async fn state_hash(&self, id: u64) -> Option<crate::checker::StateHash> {
        if self.nodes[&id].state != ProcState::Up {
            return None;
        }
        let url = format!("http://{}/v1/state/hash?consistency=stale", self.nodes[&id].api_addr);
        let r = self.http.get(url).timeout(ADMIN_TIMEOUT).send().await.ok()?;
        if !r.status().is_success() {
            return None;
        }
        let v: Value = r.json().await.ok()?;
        Some(crate::checker::StateHash {
            applied_index: v["applied_index"].as_u64()?,
            sha256: v["sha256"].as_str()?.to_string(),
        })
    }

    /// The leader a running node names, preferring the highest term.
    pub async fn leader(&self) -> Option<u64> {
        let mut best: Option<(u64, u64)> = None;
        for id in self.ids() {
            if let Some(s) = self.status(id).await {
                if s["role"] == "leader" {
                    let term = s["term"].as_u64().unwrap_or(0);
                    if best.is_none_or(|(t, _)| term > t) {
                        best = Some((term, id));
                    }
                }
            }
        }
        best.map(|(_, id)| id)
    }

    /// Wait until every running node names the same leader, which itself
    /// says it leads; polled every 100 ms for at most `within`.
    pub async fn wait_agreed_leader(&self, within: Duration) -> Option<u64> {
        let deadline = tokio::time::Instant::now() + within;
        while tokio::time::Instant::now() < deadline {
            let mut named = Vec::new();
            let mut leaders = Vec::new();
            for id in self.ids() {
                if self.nodes[&id].state != ProcState::Up {
                    continue;
                }
                match self.status(id).await {
                    Some(s) => {
                        named.push(s["leader"].as_u64());
                        if s["role"] == "leader" {
                            leaders.push(id);
                        }
                    }
                    None => named.push(None),
                }
            }
            if let [l] = leaders[..] {
                if named.iter().all(|n| *n == Some(l)) {
                    return Some(l);
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        None
    }

    /// An admin call to one node; `Err` carries the status and body.
    pub async fn admin(
        &self,
        id: u64,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<Value, String> {
        let url = format!("http://{}{}", self.nodes[&id].api_addr, path);
        let mut req = self.http.request(method, url).timeout(ADMIN_TIMEOUT);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let r = req.send().await.map_err(|e| e.to_string())?;
        let status = r.status();
        let text = r.text().await.map_err(|e| e.to_string())?;
        if !status.is_success() {
            return Err(format!("{status}: {text}"));
        }
        Ok(serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    /// Voter ids, as node `via` sees membership.
    pub async fn voters(&self, via: u64) -> Option<Vec<u64>> {
        let s = self.status(via).await?;
        Some(
            s["members"]
                .as_array()?
                .iter()
                .filter(|m| m["voter"] == true)
                .filter_map(|m| m["id"].as_u64())
                .collect(),
        )
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for p in self.nodes.values_mut() {
            if let Some(mut child) = p.child.take() {
                // SIGKILL ends a stopped process too.
                let _ = child.kill();
                let _ = child.wait();
            }
            if self.spec.disk_mib.is_some() {
                if let Some(disk) = p.data_dir.parent() {
                    let _ = Command::new("umount").arg(disk).status();
                }
            }
        }
        for (_, f) in std::mem::take(&mut self.faultfs) {
            stop_faultfs(f);
        }
    }
}

/// Start node `id`'s fault filesystem (`cairn-jepsen faultfs`) over
/// `nN.backing` at `nN.fs`, and wait until its control socket answers
/// (it binds the socket only once mounted).
async fn start_faultfs(dir: &Path, id: u64, spec: &FaultFsSpec) -> Result<FsProc, String> {
    let backing = dir.join(format!("n{id}.backing"));
    let mount = dir.join(format!("n{id}.fs"));
    let control = dir.join(format!("n{id}.faultfs.sock"));
    let log_path = dir.join(format!("n{id}.faultfs.log"));
    let log = std::fs::File::create(&log_path).map_err(|e| format!("create {}: {e}", log_path.display()))?;
    let mut child = Command::new(&spec.binary)
        .arg("faultfs")
        .arg("--backing")
        .arg(&backing)
        .arg("--mount")
        .arg(&mount)
        .arg("--control")
        .arg(&control)
        .args(["--fsync-delay", &spec.delay])
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .map_err(|e| format!("spawn {}: {e}", spec.binary.display()))?;
    let deadline = tokio::time::Instant::now() + FAULTFS_WITHIN;
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            let log = std::fs::read_to_string(&log_path).unwrap_or_default();
            return Err(format!("faultfs exited ({status}): {}", log.trim()));
        }
        if control.exists() && crate::faultfs::request(&control, "ping", FAULTFS_REQUEST).await.is_ok() {
            return Ok(FsProc { child, control, mount });
        }
        if tokio::time::Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Err(format!("faultfs did not answer within {FAULTFS_WITHIN:?}"));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Stop a fault filesystem and make sure its mount is gone.
fn stop_faultfs(mut f: FsProc) {
    let _ = f.child.kill();
    let _ = f.child.wait();
    let _ = Command::new("fusermount3")
        .arg("-uz")
        .arg(&f.mount)
        .stderr(Stdio::null())
        .status();
}
