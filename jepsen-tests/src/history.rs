//! What happened during a run, as data: client operations, status samples
//! taken from the nodes, and nemesis events. Each is written as JSON lines
//! so a failed run can be re-checked (`cairn-jepsen check`) and read by eye.

use std::io::BufRead;
use std::io::Write;
use std::path::Path;
use std::sync::Arc;
use std::sync::Mutex;
use std::time::Instant;

use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde::Serialize;

use crate::error::Error;

/// What an operation does to its register.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OpKind {
    /// A linearizable read.
    Read,
    /// A write of a unique value.
    Write,
}

/// How an operation ended, in Jepsen's terms.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    /// It took effect (a write) or returned a value (a read).
    Ok,
    /// It certainly did not take effect.
    Fail,
    /// Unknown: it may take effect at any time after its invocation, or never.
    Info,
}

/// One client operation, from invocation to completion.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Op {
    /// Position in the history; the operation's id.
    pub index: usize,
    /// The client (a sequential process) that ran it.
    pub process: u32,
    /// The node the client sent it to.
    pub node: u64,
    /// Read or write.
    pub kind: OpKind,
    /// The register (parameter name).
    pub key: String,
    /// Written value, or the value a successful read returned.
    pub value: Option<i64>,
    /// The parameter version the node reported (write: the version it
    /// created; read: the version of the value read).
    pub version: Option<u64>,
    /// Nanoseconds since the run started, when the client sent it.
    pub invoke_ns: u64,
    /// When the client got its answer or gave up.
    pub complete_ns: u64,
    /// How it ended.
    pub outcome: Outcome,
    /// The error (HTTP status and code, or transport error), if any.
    pub error: Option<String>,
    /// One of the reads taken after healing everything.
    #[serde(default)]
    pub final_read: bool,
}

/// One node's answer to `GET /v1/status`, as sampled during a run.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusSample {
    /// Nanoseconds since the run started.
    pub t_ns: u64,
    /// The node asked.
    pub node: u64,
    /// Which incarnation of the node process (bumped on each restart).
    pub incarnation: u32,
    /// Which life of the node's data dir (bumped when it is wiped): Raft
    /// state such as the term is durable within one, not across.
    #[serde(default)]
    pub data_generation: u32,
    /// Its Raft role (`leader`, `follower`, ...).
    pub role: String,
    /// Its current term.
    pub term: u64,
    /// The leader it knows of.
    pub leader: Option<u64>,
    /// Its committed index.
    pub committed_index: Option<u64>,
    /// Its applied index.
    pub applied_index: Option<u64>,
}

/// A fault starting or ending.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NemesisEvent {
    /// Nanoseconds since the run started.
    pub t_ns: u64,
    /// `start`, `heal` or `error`.
    pub phase: String,
    /// What was done, with the nodes it targeted.
    pub what: String,
}

/// A clock for the run plus the growing history, shared by all tasks.
#[derive(Clone)]
pub struct Recorder {
    start: Instant,
    ops: Arc<Mutex<Vec<Op>>>,
    samples: Arc<Mutex<Vec<StatusSample>>>,
    events: Arc<Mutex<Vec<NemesisEvent>>>,
}

impl Default for Recorder {
    fn default() -> Self {
        Self::new()
    }
}

impl Recorder {
    /// A recorder whose clock starts now.
    pub fn new() -> Self {
        Self {
            start: Instant::now(),
            ops: Arc::default(),
            samples: Arc::default(),
            events: Arc::default(),
        }
    }

    /// Monotonic nanoseconds since the run started.
    pub fn now_ns(&self) -> u64 {
        self.start.elapsed().as_nanos() as u64
    }

    /// Append a completed operation; its `index` is assigned here.
    pub fn op(&self, mut op: Op) {
        let mut ops = self.ops.lock().unwrap_or_else(|p| p.into_inner());
        op.index = ops.len();
        ops.push(op);
    }

    /// Append a status sample.
    pub fn sample(&self, s: StatusSample) {
        self.samples.lock().unwrap_or_else(|p| p.into_inner()).push(s);
    }

    /// Append a nemesis event (and log it).
    pub fn event(&self, phase: &str, what: impl Into<String>) {
        let what = what.into();
        tracing::info!(phase, %what, "nemesis");
        let e = NemesisEvent {
            t_ns: self.now_ns(),
            phase: phase.into(),
            what,
        };
        self.events.lock().unwrap_or_else(|p| p.into_inner()).push(e);
    }

    /// How many nemesis events of `phase` were recorded so far.
    pub fn events_in_phase(&self, phase: &str) -> usize {
        self.events
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .filter(|e| e.phase == phase)
            .count()
    }

    /// Everything recorded so far.
    pub fn snapshot(&self) -> (Vec<Op>, Vec<StatusSample>, Vec<NemesisEvent>) {
        (
            self.ops.lock().unwrap_or_else(|p| p.into_inner()).clone(),
            self.samples.lock().unwrap_or_else(|p| p.into_inner()).clone(),
            self.events.lock().unwrap_or_else(|p| p.into_inner()).clone(),
        )
    }
}

/// Write `items` as JSON lines.
pub fn write_jsonl<T: Serialize>(path: &Path, items: &[T]) -> Result<(), Error> {
    let file = std::fs::File::create(path).map_err(Error::io(format!("create {}", path.display())))?;
    let mut w = std::io::BufWriter::new(file);
    for item in items {
        let line = serde_json::to_string(item).map_err(|e| Error::Io {
            what: format!("encode a line of {}", path.display()),
            source: e.into(),
        })?;
        writeln!(w, "{line}").map_err(Error::io(format!("write {}", path.display())))?;
    }
    w.flush().map_err(Error::io(format!("write {}", path.display())))
}

/// Read JSON lines written by [`write_jsonl`]; blank lines are skipped.
pub fn read_jsonl<T: DeserializeOwned>(path: &Path) -> Result<Vec<T>, Error> {
    let file = std::fs::File::open(path).map_err(Error::io(format!("open {}", path.display())))?;
    let mut out = Vec::new();
    for (i, line) in std::io::BufReader::new(file).lines().enumerate() {
        let line = line.map_err(Error::io(format!("read {}", path.display())))?;
        if line.trim().is_empty() {
            continue;
        }
        out.push(serde_json::from_str(&line).map_err(|e| Error::Parse {
            path: path.to_path_buf(),
            line: i + 1,
            reason: e.to_string(),
        })?);
    }
    Ok(out)
}
