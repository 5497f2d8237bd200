//! cairn-jepsen: a fault-injection suite that runs real `cairn` processes on
//! this machine, breaks them (partitions, delay, connection drops, `kill -9`,
//! `SIGSTOP`, membership changes) while concurrent clients read and write,
//! records every operation, and checks the history for anomalies.
//!
//! # Layout
//! - [`proxy`]: a userspace TCP proxy on every directed peer link; how
//!   partitions, delay and drops are injected without root or `netem`.
//! - [`cluster`]: starts, kills, pauses and restarts node processes with
//!   temp data dirs, each dialling its peers through the proxies. A node is
//!   `cairn node run` or, by default, this crate's `cairn-jepsen node` (the
//!   same `cairn::daemon::Daemon` from a JSON config: the TOML config cannot
//!   express `peer_dial_overrides` yet, docs/CHAOS.md finding F0).
//! - [`nemesis`]: the faults, and a seeded schedule of them.
//! - [`netns`]: `--net netns` (root): a network namespace per node, and
//!   partitions as nftables drop rules inside them.
//! - [`faultfs`]: a FUSE fault filesystem (root): unsynced data kept apart
//!   so a power cut can drop it, slow or failing fsyncs; the `power`
//!   nemeses put every node's data dir on one.
//! - [`workload`]: rate-limited sequential clients over registers (declared
//!   `Int` parameters), recording invoke/complete times and outcomes.
//! - [`tasks`]: clients over the task API, and the action handler the
//!   nodes run tasks with (it journals every step it may actuate).
//! - [`history`]: the recorded operations, status samples and nemesis events,
//!   as JSON lines.
//! - [`checker`]: a Wing–Gong–Lowe linearizability checker (porcupine's
//!   algorithm) per register, and O(n) domain checks (no acknowledged write
//!   lost, no write applied twice, one leader per term, replicas converge).
//! - [`run`]: one run from start to verdict; [`profile`]: lists of runs,
//!   including the checked-in regression seeds.
//! - [`sim`]: the deterministic simulation tier: the cairn-raft node itself
//!   (several in one process) on turmoil's simulated network and clock,
//!   with Raft safety checked as it runs.
//!
//! # Key decisions
//! - Faults go through a proxy we own rather than the kernel, so the suite
//!   runs unprivileged and in CI; the cost is that only node-to-node traffic
//!   is faulted (clients reach their node directly, like Jepsen's clients).
//! - An operation whose outcome the client cannot know (504, a reset after the
//!   request was sent, a client timeout) is recorded as `info` and may take
//!   effect at any later time or never, as in Jepsen. Only answers that by
//!   cairn's contract mean "not applied" are recorded as `fail` (see
//!   [`workload`]); if cairn breaks that contract the checker reports it.
//! - The checker is bounded: past its budget a key's verdict is `unknown`,
//!   which fails a run as inconclusive rather than hanging CI.
//! - Apart from the node launcher, the suite talks to cairn only over HTTP,
//!   like an operator, so it keeps working while the API's Rust types move.
#![deny(missing_docs)]

pub mod checker;
pub mod cluster;
pub mod error;
pub mod faultfs;
pub mod history;
pub mod nemesis;
pub mod netns;
pub mod profile;
pub mod proxy;
pub mod run;
pub mod sim;
pub mod tasks;
pub mod workload;

pub use error::Error;
