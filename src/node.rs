//! Embedding cairn: [`Node::builder`] starts a node inside your program.
//!
//! A [`Node`] is what `cairn node run` runs — a Raft replica of the mission
//! state, the coordinator (active while the node leads), the node's agent
//! with the action handlers you register, and the HTTP admin API — behind a
//! typed handle: submit tasks, follow applied changes, read and set
//! parameters, read the mission, manage membership, and shut down
//! gracefully.
//!
//! ```no_run
//! use std::sync::Arc;
//!
//! use cairn::action::{ActionContext, ActionFuture, ActionHandler, ActionOutcome};
//! use cairn::{Node, TaskSpec};
//!
//! struct Blink;
//!
//! impl ActionHandler for Blink {
//!     fn run(&self, ctx: ActionContext) -> ActionFuture {
//!         Box::pin(async move {
//!             if ctx.may_actuate() {
//!                 // ... drive the LED ...
//!             }
//!             ActionOutcome::Succeeded
//!         })
//!     }
//! }
//!
//! # async fn example() -> Result<(), cairn::Error> {
//! let node = Node::builder()
//!     .id(1)
//!     .raft_addr("127.0.0.1:7001")
//!     .api_addr("127.0.0.1:8001")
//!     .data_dir("/var/lib/cairn")
//!     .capability("led")
//!     .handler("blink", Arc::new(Blink))
//!     .start()
//!     .await?;
//! node.initialize([(node.id(), node.member())]).await?;
//! let mut spec = TaskSpec::new("blink");
//! spec.required_capabilities.insert("led".into());
//! let task = node.submit_task(spec).await?;
//! println!("submitted task {task}");
//! node.shutdown().await?;
//! # Ok(())
//! # }
//! ```

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use cairn_agents::action::ActionHandler;
use cairn_raft::Change;
use cairn_raft::Consistency;
use cairn_raft::Member;
use cairn_raft::RaftNode;
use cairn_raft::Status;
use cairn_raft::Watch;
use cairn_state::ClientTag;
use cairn_state::Command;
use cairn_state::Effective;
use cairn_state::Mission;
use cairn_state::Param;
use cairn_state::ParamKind;
use cairn_state::ParamValue;
use cairn_state::Plan;
use cairn_state::Response;
use cairn_state::Task;
use cairn_state::TaskId;
use cairn_state::TaskSpec;
use futures::Stream;

use crate::config::NodeConfig;
use crate::daemon::Daemon;
use crate::error::Error;

/// How long [`Node::join`] waits for this node to catch up.
const JOIN_CATCH_UP_WAIT: Duration = Duration::from_secs(20);

/// Builds and starts a [`Node`]; see [`Node::builder`].
///
/// Everything defaults as in [`NodeConfig::new`], except the two listen
/// addresses, which default to `127.0.0.1:0` (a free port each, as suits
/// several nodes in one process; read them back with [`Node::raft_addr`]
/// and [`Node::api_addr`]). A real deployment sets fixed addresses: peers
/// find each other by them.
#[must_use = "a builder does nothing until `.start()`"]
pub struct NodeBuilder {
    config: NodeConfig,
    handlers: Vec<(String, Arc<dyn ActionHandler>)>,
}

impl NodeBuilder {
    fn new() -> Self {
        let mut config = NodeConfig::new(0);
        config.raft_addr = "127.0.0.1:0".into();
        config.api_addr = "127.0.0.1:0".into();
        Self {
            config,
            handlers: Vec::new(),
        }
    }

    /// Use this whole configuration (e.g. read with
    /// [`NodeConfig::from_file`]); later builder calls change it further.
    pub fn config(mut self, config: NodeConfig) -> Self {
        self.config = config;
        self
    }

    /// The node's id: unique in the cluster, stable across restarts, never
    /// reused for another machine. Required.
    pub fn id(mut self, id: u64) -> Self {
        self.config.id = id;
        self
    }

    /// Address the node-to-node transport listens on and peers dial.
    pub fn raft_addr(mut self, addr: impl Into<String>) -> Self {
        self.config.raft_addr = addr.into();
        self
    }

    /// Address the HTTP admin API listens on.
    pub fn api_addr(mut self, addr: impl Into<String>) -> Self {
        self.config.api_addr = addr.into();
        self
    }

    /// Directory of the node's RocksDB (log, Raft metadata, snapshots).
    pub fn data_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.config.data_dir = dir.into();
        self
    }

    /// Offer a capability to the scheduler (e.g. `robotic-arm`); tasks that
    /// require it are placed only on nodes offering it.
    pub fn capability(mut self, capability: impl Into<String>) -> Self {
        self.config.capabilities.insert(capability.into());
        self
    }

    /// CPU (thousandths of a core) and memory (MiB) tasks may use on this
    /// node.
    pub fn budget(mut self, cpu_millicores: u64, memory_mib: u64) -> Self {
        self.config.cpu_millicores = cpu_millicores;
        self.config.memory_mib = memory_mib;
        self
    }

    /// Require this bearer token on mutating admin-API requests.
    pub fn api_token(mut self, token: impl Into<String>) -> Self {
        self.config.api.token = Some(token.into());
        self.config.api.token_file = None;
        self
    }

    /// Run tasks of `kind` on this node with `handler`.
    pub fn handler(mut self, kind: impl Into<String>, handler: Arc<dyn ActionHandler>) -> Self {
        self.handlers.push((kind.into(), handler));
        self
    }

    /// Open the data dir, start Raft, the coordinator, the agent and the
    /// admin API. A node with an empty data dir is not part of any cluster
    /// yet: call [`Node::initialize`] on one node of a new cluster, or
    /// [`Node::join`] to join a running one.
    pub async fn start(self) -> Result<Node, Error> {
        if self.config.id == 0 {
            return Err(Error::Config {
                reason: "the node id is required (1 or more): call .id(...)".into(),
            });
        }
        let daemon = Daemon::start_with_handlers(self.config.clone(), self.handlers).await?;
        let member = Member {
            raft_addr: daemon.node().raft_addr().to_string(),
            api_addr: daemon.api_addr().to_string(),
        };
        let mut config = self.config;
        config.raft_addr = member.raft_addr.clone();
        config.api_addr = member.api_addr.clone();
        Ok(Node {
            daemon,
            member,
            config,
            client_id: rand::random(),
            next_seq: AtomicU64::new(0),
        })
    }
}

/// The mission as [`Node::mission`] reads it: the plan and the operating
/// mode the sensor health and policies lead to.
#[derive(Clone, Debug, PartialEq)]
pub struct MissionView {
    /// The plan, its goals and their status.
    pub plan: Plan,
    /// The effective mode and speed limit.
    pub effective: Effective,
}

/// A running cairn node inside this program; see the [module docs](self).
///
/// Dropping it stops everything at once (like a crash, as far as the
/// cluster can tell); [`Node::shutdown`] stops gracefully.
pub struct Node {
    daemon: Daemon,
    member: Member,
    config: NodeConfig,
    /// Client tag of this handle's writes, so a retried write applies once.
    client_id: u64,
    next_seq: AtomicU64,
}

impl Node {
    /// A builder; see [`NodeBuilder`].
    pub fn builder() -> NodeBuilder {
        NodeBuilder::new()
    }

    /// This node's id.
    pub fn id(&self) -> u64 {
        self.config.id
    }

    /// How peers and clients reach this node (the bound addresses).
    pub fn member(&self) -> Member {
        self.member.clone()
    }

    /// The transport address peers dial.
    pub fn raft_addr(&self) -> &str {
        &self.member.raft_addr
    }

    /// The admin API address.
    pub fn api_addr(&self) -> &str {
        &self.member.api_addr
    }

    /// The configuration the node runs with (addresses as bound).
    pub fn config(&self) -> &NodeConfig {
        &self.config
    }

    /// The Raft node underneath, for what this handle does not wrap.
    pub fn raft(&self) -> &Arc<RaftNode<Mission>> {
        self.daemon.node()
    }

    /// Bootstrap a new cluster whose voters are `members` (this node among
    /// them), as `cairn cluster init` does. Call it on one node only, once;
    /// refused, changing nothing, if this node already belongs to a cluster.
    pub async fn initialize(&self, members: impl IntoIterator<Item = (u64, Member)>) -> Result<(), Error> {
        let members: BTreeMap<u64, Member> = members.into_iter().collect();
        Ok(self.raft().initialize(members).await?)
    }

    /// Join a running cluster through the peer transport of any of its
    /// members (`peers`: their raft addresses, `host:port`, tried in
    /// order): this node is added as a learner, the call waits until it
    /// has applied everything the cluster had committed, and then, if
    /// `voter`, it is promoted. It connects as it will as a member, with
    /// its own certificate under mutual TLS, so the cluster knows who
    /// joins, and no admin API address or API token is needed. Safe to run
    /// again after a failure: a learner already added is kept, a voter
    /// stays one.
    pub async fn join(&self, peers: Vec<String>, voter: bool) -> Result<(), Error> {
        Ok(self
            .raft()
            .join(peers, self.member.clone(), voter, JOIN_CATCH_UP_WAIT)
            .await?)
    }

    /// Add node `id` as a learner (through the leader). Returns once the
    /// change is committed, without waiting for the learner (which may not
    /// be running): `self.raft().add_learner_and_wait(…)` on the leader, or
    /// `POST /v1/members`, waits for it to catch up.
    pub async fn add_learner(&self, id: u64, member: Member) -> Result<(), Error> {
        Ok(self.raft().add_learner(id, member).await?)
    }

    /// Make learner `id` a voter, without checking it is running or
    /// caught up (`self.raft().promote_checked(…)` on the leader, or
    /// `POST /v1/members/{id}/promote`, checks).
    pub async fn promote(&self, id: u64) -> Result<(), Error> {
        Ok(self.raft().promote(id).await?)
    }

    /// Remove member `id` (a leader asked to remove itself hands leadership
    /// over first).
    pub async fn remove(&self, id: u64) -> Result<(), Error> {
        Ok(self.raft().remove(id).await?)
    }

    /// Hand leadership to voter `to`.
    pub async fn transfer_leader(&self, to: u64) -> Result<(), Error> {
        Ok(self.raft().transfer_leader(to).await?)
    }

    /// Drain node `id` (this one or another), as `cairn node drain` does
    /// before a restart or an upgrade: the coordinator places no new task
    /// on it (its running tasks go on), and if it leads, leadership moves
    /// to another voter. [`Error::NotFound`] if `id` is neither a member
    /// nor a registered node; unavailable if leadership did not move off
    /// it in time (the mark is set by then). Idempotent.
    pub async fn drain(&self, id: u64) -> Result<crate::drain::DrainResult, Error> {
        crate::drain::set_draining(self.raft(), id, true).await
    }

    /// Let drained node `id` take new tasks again (`cairn node undrain`).
    pub async fn undrain(&self, id: u64) -> Result<crate::drain::DrainResult, Error> {
        crate::drain::set_draining(self.raft(), id, false).await
    }

    /// Wait until a leader is known and return its id.
    pub async fn wait_for_leader(&self, timeout: Duration) -> Result<u64, Error> {
        Ok(self.raft().wait_for_leader(timeout).await?)
    }

    /// This node's view of the cluster: role, term, indexes, members.
    pub fn status(&self) -> Status {
        self.raft().status()
    }

    /// The highest log index this node has applied (0 before the first).
    /// [`Node::watch`] from one more than this follows only new changes.
    pub fn applied_index(&self) -> u64 {
        self.raft().status().applied_index.unwrap_or(0)
    }

    /// What this node's agent is doing (lease, running tasks).
    pub fn agent_status(&self) -> cairn_agents::AgentStatus {
        self.daemon.agent_status()
    }

    /// Replicate `command` (through the leader) and return the index it
    /// committed at with the state machine's answer. A refusal by the state
    /// machine is [`Error::Command`] and changed nothing. The write is
    /// tagged, so Raft's one retry loop ([`cairn_raft::retry`]) retries it
    /// within the write timeout when no leader is known or the outcome is
    /// unknown, and it applies at most once; no second loop here (attempts
    /// would multiply).
    pub async fn execute(&self, command: Command) -> Result<(u64, Response), Error> {
        let tag = ClientTag {
            client_id: self.client_id,
            seq: self.next_seq.fetch_add(1, Ordering::Relaxed) + 1,
        };
        let out = self.raft().write_tagged(tag, command).await?;
        Ok((out.index, out.response?))
    }

    /// Read the replicated state with `consistency` (linearizable: sees
    /// every write acknowledged before the read started).
    pub async fn read<R>(&self, consistency: Consistency, f: impl FnOnce(&Mission) -> R) -> Result<R, Error> {
        Ok(self.raft().read(consistency, f).await?)
    }

    /// Submit a task; the coordinator places it on a node with the required
    /// capabilities, whose agent runs it with the handler for its kind.
    pub async fn submit_task(&self, spec: TaskSpec) -> Result<TaskId, Error> {
        match self.execute(Command::CreateTask(spec)).await? {
            (_, Response::TaskCreated { task_id }) => Ok(task_id),
            (index, other) => Err(Error::Unexpected {
                reason: format!("CreateTask at index {index} answered {other:?}"),
            }),
        }
    }

    /// Ask for a task to be cancelled (at once if pending; its runner
    /// acknowledges otherwise).
    pub async fn cancel_task(&self, task_id: TaskId) -> Result<(), Error> {
        self.execute(Command::CancelTask { task_id }).await.map(|_| ())
    }

    /// A task, read linearizably; `None` if there is no such task.
    pub async fn task(&self, task_id: TaskId) -> Result<Option<Task>, Error> {
        self.read(Consistency::Linearizable, |m| m.task(task_id).cloned()).await
    }

    /// The mission plan and effective mode, read linearizably.
    pub async fn mission(&self) -> Result<MissionView, Error> {
        self.read(Consistency::Linearizable, |m| MissionView {
            plan: m.plan().clone(),
            effective: m.effective(),
        })
        .await
    }

    /// The replicated parameters: get, list, set, declare.
    pub fn params(&self) -> Params<'_> {
        Params { node: self }
    }

    /// Applied changes from log index `from` on, in order, without gaps or
    /// duplicates: history from the log, then live. Fails with a
    /// `Compacted` error if `from` is older than this node's log.
    ///
    /// ```no_run
    /// # async fn example(node: &cairn::Node) -> Result<(), cairn::Error> {
    /// let mut watch = node.watch(node.applied_index() + 1)?;
    /// for _ in 0..10 {
    ///     let change = watch.next().await?;
    ///     println!("{}: {:?}", change.index, change.command);
    /// }
    /// # Ok(())
    /// # }
    /// ```
    pub fn watch(&self, from: u64) -> Result<Watch<Mission>, Error> {
        Ok(self.raft().watch(from)?)
    }

    /// [`Node::watch`] as a [`Stream`]; it ends after yielding its first
    /// error.
    pub fn watch_stream(
        &self,
        from: u64,
    ) -> Result<impl Stream<Item = Result<Change<Mission>, Error>> + Send + 'static, Error> {
        let watch = self.watch(from)?;
        Ok(futures::stream::unfold(Some(watch), |state| async move {
            let mut watch = state?;
            match watch.next().await {
                Ok(change) => Some((Ok(change), Some(watch))),
                Err(e) => Some((Err(Error::from(e)), None)),
            }
        }))
    }

    /// Stop gracefully: if this node leads, hand leadership to the most
    /// up-to-date other voter first (bounded), then stop the agent — running
    /// handlers see [`ActionContext::stopped`](crate::action::ActionContext::stopped)
    /// and must stop their actuators — and the coordinator, stop serving the
    /// API, and stop Raft with a final WAL sync. The data dir keeps
    /// everything; starting a node on it again rejoins the cluster. Drop
    /// any clone of [`Node::raft`]'s `Arc` first: Raft is stopped cleanly
    /// only once this handle holds the last reference.
    pub async fn shutdown(self) -> Result<(), Error> {
        self.daemon.shutdown().await
    }
}

/// The replicated parameters, through [`Node::params`].
///
/// ```no_run
/// # async fn example(node: &cairn::Node) -> Result<(), cairn::Error> {
/// use cairn::{ParamKind, ParamValue};
///
/// node.params()
///     .declare("arm.grip_force_n", "grip force", ParamKind::Float { min: 0.0, max: 40.0 }, ParamValue::Float(10.0))
///     .await?;
/// node.params().set("arm.grip_force_n", ParamValue::Float(12.5)).await?;
/// let p = node.params().get("arm.grip_force_n").await?;
/// assert_eq!(p.map(|p| p.value), Some(ParamValue::Float(12.5)));
/// # Ok(())
/// # }
/// ```
pub struct Params<'a> {
    node: &'a Node,
}

impl Params<'_> {
    /// One parameter, read linearizably; `None` if it is not declared.
    pub async fn get(&self, name: &str) -> Result<Option<Param>, Error> {
        self.node
            .read(Consistency::Linearizable, |m| m.param(name).cloned())
            .await
    }

    /// Every parameter, by name, read linearizably.
    pub async fn list(&self) -> Result<Vec<Param>, Error> {
        self.node
            .read(Consistency::Linearizable, |m| m.params().cloned().collect())
            .await
    }

    /// Set a declared parameter; returns the global parameter version after
    /// the change. A value of the wrong type or out of bounds is refused.
    pub async fn set(&self, name: impl Into<String>, value: ParamValue) -> Result<u64, Error> {
        let command = Command::SetParam {
            name: name.into(),
            value,
        };
        param_version(self.node.execute(command).await?)
    }

    /// Declare a parameter with its type, bounds and initial value; returns
    /// the global parameter version after the change.
    pub async fn declare(
        &self,
        name: impl Into<String>,
        description: impl Into<String>,
        kind: ParamKind,
        value: ParamValue,
    ) -> Result<u64, Error> {
        let command = Command::DeclareParam {
            name: name.into(),
            description: description.into(),
            kind,
            value,
        };
        param_version(self.node.execute(command).await?)
    }
}

fn param_version((index, response): (u64, Response)) -> Result<u64, Error> {
    match response {
        Response::ParamChanged { version, .. } => Ok(version),
        other => Err(Error::Unexpected {
            reason: format!("a parameter command at index {index} answered {other:?}"),
        }),
    }
}
