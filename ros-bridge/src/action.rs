//! Tasks as ROS 2 actions: a cairn task kind bound to a ROS 2 action server.
//!
//! The node that holds a task's assignment runs it through the
//! [`ActionHandler`] this module builds for the task's kind: it sends the
//! goal to the bound action server, maps the server's feedback to the task's
//! progress and its result to the task's outcome, and sends `cancel_goal`
//! the moment the task is cancelled in cairn **or its permit is lost**
//! (lease lapsed, epoch superseded): fenced actuation carried into ROS.
//!
//! # The goal
//! A cairn task carries no free-form payload (its spec is kind,
//! capabilities, resources, priority, deadline, retries and the plan goal it
//! serves), so the goal is built, when it is sent, from replicated state
//! every node holds the same — which is also what lets the next holder send
//! the same goal after a takeover:
//! - `test_msgs/action/Fibonacci`: `order` = the integer parameter
//!   `<params>.order`.
//! - `nav2_msgs/action/NavigateToPose`: `pose` = the pose of the plan goal
//!   the task serves (x, y, heading → position and a yaw quaternion) in the
//!   binding's `frame_id`, stamp zero (Nav2: the latest transform);
//!   `behavior_tree` = the string parameter `<params>.behavior_tree` if
//!   declared, else empty (the navigator's default).
//!
//! What does not map (parameter undeclared or of the wrong type, no plan
//! goal, a plan goal without a pose) fails the attempt with a reason that
//! names the missing piece; the task is retried per its policy.
//!
//! # Goal ids and fencing across holders
//! The goal id is not random: it carries the task id and the epoch
//! ([`goal_uuid`]). A holder at epoch `e` cancels every goal of its task with
//! an epoch up to `e` (other than its own) that the server's status topic
//! shows as accepted or executing — before it sends its own goal and
//! whenever the status changes while it runs. After a kill -9 of the node
//! that drove a goal, the next holder thus cancels the orphaned goal on a
//! shared action server; with one action server per node, the orphan lives
//! on the dead node's side and is cut by that node's own stop (lifecycle,
//! drivetrain epoch fence), not by this.
//!
//! # Concurrency
//! ros2-client's service clients match one outstanding call at a time, so a
//! node runs one goal at a time per binding; a second task of the same kind
//! on the same node waits (honouring its own cancel and permit).

use std::collections::BTreeMap;
use std::collections::BTreeSet;
use std::fmt;
use std::str::FromStr;
use std::sync::atomic::AtomicU8;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use cairn_hal::action::ActionContext;
use cairn_hal::action::ActionFeedback;
use cairn_hal::action::ActionFuture;
use cairn_hal::action::ActionGoal;
use cairn_hal::action::ActionHandler;
use cairn_hal::action::ActionOutcome;
use cairn_hal::action::FeedbackDetail;
use cairn_hal::action::ParamVal;
use cairn_hal::action::PlanView;
use cairn_hal::action::StopSignal;
use futures::FutureExt;
use futures::StreamExt;
use ros2_client::action::ActionClient;
use ros2_client::action::ActionClientQosPolicies;
use ros2_client::action::GoalStatusEnum;
use ros2_client::action::SendGoalRequest;
use ros2_client::action_msgs::GoalStatusArray;
use ros2_client::builtin_interfaces;
use ros2_client::qos::Durability;
use ros2_client::qos::History;
use ros2_client::unique_identifier_msgs::UUID;
use ros2_client::ActionTypeName;
use ros2_client::Message;
use ros2_client::Name;
use ros2_client::Node;
use ros2_client::QosProfile;
use ros2_client::ServiceMapping;

use crate::error::Error;
use crate::msgs;

/// Longest note put in a task's feedback (the state machine bounds text).
const MAX_NOTE_LEN: usize = 120;

/// How long a `cancel_goal` may take to be answered before the handler
/// returns anyway (the runtime drops it soon after a lost permit).
const CANCEL_TIMEOUT: Duration = Duration::from_millis(1000);

/// Progress is re-reported this often while the server sends no feedback,
/// well inside the coordinator's stall timeout (15 s by default).
pub(crate) const KEEPALIVE: Duration = Duration::from_secs(4);

/// The ROS 2 action types a task kind can be bound to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ActionType {
    /// `test_msgs/action/Fibonacci`.
    Fibonacci,
    /// `nav2_msgs/action/NavigateToPose` (Jazzy and later layout).
    NavigateToPose,
}

impl ActionType {
    /// Every supported type, by its ROS 2 name.
    pub const ALL: [ActionType; 2] = [ActionType::Fibonacci, ActionType::NavigateToPose];

    /// `package/action/Type`.
    pub fn ros_name(self) -> &'static str {
        match self {
            ActionType::Fibonacci => "test_msgs/action/Fibonacci",
            ActionType::NavigateToPose => "nav2_msgs/action/NavigateToPose",
        }
    }

    fn type_name(self) -> ActionTypeName {
        match self {
            ActionType::Fibonacci => ActionTypeName::new("test_msgs", "Fibonacci"),
            ActionType::NavigateToPose => ActionTypeName::new("nav2_msgs", "NavigateToPose"),
        }
    }
}

impl fmt::Display for ActionType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.ros_name())
    }
}

impl FromStr for ActionType {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        ActionType::ALL.into_iter().find(|t| t.ros_name() == s).ok_or_else(|| {
            let known: Vec<&str> = ActionType::ALL.iter().map(|t| t.ros_name()).collect();
            format!("unsupported ros 2 action type {s:?} (supported: {})", known.join(", "))
        })
    }
}

/// One task kind bound to one ROS 2 action server.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ActionBinding {
    /// The cairn task kind, e.g. `fibonacci` or `navigate`.
    pub kind: String,
    /// The action's type.
    pub action_type: ActionType,
    /// The action's name: absolute (`/navigate_to_pose`) or relative to the
    /// bridge node's namespace (`navigate_to_pose` → `/pi1/navigate_to_pose`).
    pub action_name: String,
    /// Prefix of the replicated parameters goal fields come from:
    /// `<params>.order`, `<params>.behavior_tree`.
    pub params: String,
    /// `header.frame_id` of poses sent (NavigateToPose).
    pub frame_id: String,
    /// How long to wait for the action server to be discovered and to
    /// answer a goal before the attempt fails.
    pub server_timeout: Duration,
}

impl ActionBinding {
    /// A binding of `kind` to `action_type` at `action_name`, goal fields
    /// from parameters `<kind>.*`, frame `map`, a 10 s server timeout.
    pub fn new(kind: impl Into<String>, action_type: ActionType, action_name: impl Into<String>) -> Self {
        let kind = kind.into();
        Self {
            params: kind.clone(),
            kind,
            action_type,
            action_name: action_name.into(),
            frame_id: "map".to_owned(),
            server_timeout: Duration::from_secs(10),
        }
    }
}

// ---------------------------------------------------------------------------
// Pure mappings.
// ---------------------------------------------------------------------------

/// First two bytes of every goal id cairn sends.
const GOAL_ID_MAGIC: [u8; 2] = [0xCA, 0x1E];

/// A goal id cairn made: which task, under which epoch, which start on the
/// node (a handler restarted under the same epoch sends a new goal id).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CairnGoalId {
    /// The task (low 48 bits).
    pub task_id: u64,
    /// The assignment's epoch (low 56 bits).
    pub epoch: u64,
    /// Per-node start counter.
    pub nonce: u8,
}

/// The 16-byte goal id of `id`: magic `CA 1E`, the nonce, the task id's low
/// 48 bits and the epoch's low 56 bits, big endian.
pub fn goal_uuid(id: CairnGoalId) -> [u8; 16] {
    let mut b = [0u8; 16];
    b[..2].copy_from_slice(&GOAL_ID_MAGIC);
    b[2] = id.nonce;
    b[3..9].copy_from_slice(&id.task_id.to_be_bytes()[2..]);
    b[9..].copy_from_slice(&id.epoch.to_be_bytes()[1..]);
    b
}

/// The task, epoch and nonce of a goal id cairn made; `None` for others'.
pub fn parse_goal_uuid(b: &[u8; 16]) -> Option<CairnGoalId> {
    if b[..2] != GOAL_ID_MAGIC {
        return None;
    }
    let mut task = [0u8; 8];
    task[2..].copy_from_slice(&b[3..9]);
    let mut epoch = [0u8; 8];
    epoch[1..].copy_from_slice(&b[9..]);
    Some(CairnGoalId {
        task_id: u64::from_be_bytes(task),
        epoch: u64::from_be_bytes(epoch),
        nonce: b[2],
    })
}

/// Goals on the server, as its status topic lists them, that the holder of
/// `mine` must cancel: goals of the same task under an epoch up to its own,
/// other than its own, still accepted or executing.
pub fn stale_goals(statuses: &[([u8; 16], GoalStatusEnum)], mine: CairnGoalId) -> Vec<[u8; 16]> {
    statuses
        .iter()
        .filter(|(_, s)| matches!(s, GoalStatusEnum::Accepted | GoalStatusEnum::Executing))
        .filter_map(|(bytes, _)| {
            let other = parse_goal_uuid(bytes)?;
            let stale = other.task_id == mine.task_id && other.epoch <= mine.epoch && other != mine;
            stale.then_some(*bytes)
        })
        .collect()
}

fn param<'a>(params: &'a BTreeMap<String, ParamVal>, name: &str) -> Option<&'a ParamVal> {
    params.get(name)
}

/// The Fibonacci goal of a task bound with `binding`.
pub fn fibonacci_goal(
    binding: &ActionBinding,
    params: &BTreeMap<String, ParamVal>,
) -> Result<msgs::FibonacciGoal, String> {
    let name = format!("{}.order", binding.params);
    let why = |what: String| {
        format!(
            "task kind {:?} is bound to {}: its goal field `order` comes from the parameter {name:?}, which {what}",
            binding.kind, binding.action_type
        )
    };
    match param(params, &name) {
        Some(ParamVal::Int(order)) => match i32::try_from(*order) {
            Ok(order) if order >= 0 => Ok(msgs::FibonacciGoal { order }),
            _ => Err(why(format!("is {order}, not in 0..={}", i32::MAX))),
        },
        Some(other) => Err(why(format!("is not an integer ({other:?})"))),
        None => Err(why("is not declared".to_owned())),
    }
}

/// The NavigateToPose goal of a task bound with `binding`.
pub fn navigate_goal(
    binding: &ActionBinding,
    goal: &ActionGoal,
    plan: &PlanView,
    params: &BTreeMap<String, ParamVal>,
) -> Result<msgs::NavigateToPoseGoal, String> {
    let head = format!("task kind {:?} is bound to {}", binding.kind, binding.action_type);
    let Some(goal_id) = goal.plan_goal_id else {
        return Err(format!(
            "{head}: its pose comes from the plan goal the task serves, and task {} serves none (submit it with a plan goal)",
            goal.task_id
        ));
    };
    let Some(target) = plan.targets.iter().find(|t| t.goal_id == goal_id) else {
        return Err(format!(
            "{head}: task {} serves plan goal {goal_id}, which the plan (version {}) does not have",
            goal.task_id, plan.version
        ));
    };
    let Some(pose) = target.pose else {
        return Err(format!(
            "{head}: plan goal {goal_id} ({}) has no single pose to navigate to",
            target.kind
        ));
    };
    let bt_name = format!("{}.behavior_tree", binding.params);
    let behavior_tree = match param(params, &bt_name) {
        None => String::new(),
        Some(ParamVal::String(s)) => s.clone(),
        Some(other) => {
            return Err(format!(
                "{head}: the parameter {bt_name:?} (goal field `behavior_tree`) is not a string ({other:?})"
            ))
        }
    };
    Ok(msgs::NavigateToPoseGoal {
        pose: msgs::PoseStamped {
            header: msgs::Header {
                stamp: msgs::Time::default(),
                frame_id: binding.frame_id.clone(),
            },
            pose: msgs::Pose {
                position: msgs::Point {
                    x: pose.x_m,
                    y: pose.y_m,
                    z: 0.0,
                },
                orientation: msgs::Quaternion::from_yaw(pose.heading_rad),
            },
        },
        behavior_tree,
    })
}

pub(crate) fn clip(mut s: String) -> String {
    if s.len() > MAX_NOTE_LEN {
        let mut end = MAX_NOTE_LEN;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
    }
    s
}

/// Progress of a Fibonacci goal of `order` from a feedback `sequence`: the
/// server appends one number per step up to `order + 1` numbers; 100 % is
/// left to the result.
pub fn fibonacci_progress(order: i32, feedback: &msgs::FibonacciSequence) -> ActionFeedback {
    let total = u64::try_from(order).unwrap_or(0) + 1;
    let done = feedback.sequence.len() as u64;
    let percent = (done.saturating_mul(100) / total).min(99) as u8;
    let last = feedback
        .sequence
        .last()
        .map(|n| format!(", last {n}"))
        .unwrap_or_default();
    ActionFeedback {
        percent,
        detail: Some(FeedbackDetail::Note(clip(format!(
            "fibonacci: {done} of {total} numbers{last}"
        )))),
    }
}

/// Progress of a NavigateToPose goal: the share of the largest distance
/// remaining seen so far (`initial`, updated) that has been covered.
pub fn navigate_progress(initial: &mut f32, feedback: &msgs::NavigateToPoseFeedback) -> ActionFeedback {
    let d = feedback.distance_remaining;
    if !d.is_finite() || d < 0.0 {
        return ActionFeedback {
            percent: 0,
            detail: None,
        };
    }
    if d > *initial {
        *initial = d;
    }
    let percent = if *initial > 0.0 {
        ((1.0 - d / *initial) * 100.0).clamp(0.0, 99.0) as u8
    } else {
        0
    };
    ActionFeedback {
        percent,
        detail: Some(FeedbackDetail::DistanceRemaining(f64::from(d))),
    }
}

// ---------------------------------------------------------------------------
// The DDS side.
// ---------------------------------------------------------------------------

/// One action type: its messages and the mappings above.
trait RosAction: Send + Sync + 'static {
    type Goal: Message + Clone + Send + Sync + 'static;
    type Result: Message + Clone + Send + Sync + fmt::Debug + 'static;
    type Feedback: Message + Send + Sync + 'static;
    /// Progress state per goal.
    type Tracker: Send;

    fn goal(binding: &ActionBinding, ctx: &ActionContext) -> Result<Self::Goal, String>;
    fn tracker(goal: &Self::Goal) -> Self::Tracker;
    fn progress(tracker: &mut Self::Tracker, feedback: &Self::Feedback) -> ActionFeedback;
    /// A succeeded goal's result: still a failure for cairn?
    fn failure(result: &Self::Result) -> Option<String>;
}

struct Fibonacci;

impl RosAction for Fibonacci {
    type Goal = msgs::FibonacciGoal;
    type Result = msgs::FibonacciSequence;
    type Feedback = msgs::FibonacciSequence;
    type Tracker = i32;

    fn goal(binding: &ActionBinding, ctx: &ActionContext) -> Result<Self::Goal, String> {
        fibonacci_goal(binding, &ctx.param_values.borrow().1)
    }
    fn tracker(goal: &Self::Goal) -> i32 {
        goal.order
    }
    fn progress(order: &mut i32, feedback: &Self::Feedback) -> ActionFeedback {
        fibonacci_progress(*order, feedback)
    }
    fn failure(_: &Self::Result) -> Option<String> {
        None
    }
}

struct NavigateToPose;

impl RosAction for NavigateToPose {
    type Goal = msgs::NavigateToPoseGoal;
    type Result = msgs::NavigateToPoseResult;
    type Feedback = msgs::NavigateToPoseFeedback;
    type Tracker = f32;

    fn goal(binding: &ActionBinding, ctx: &ActionContext) -> Result<Self::Goal, String> {
        navigate_goal(binding, &ctx.goal, &ctx.plan.borrow(), &ctx.param_values.borrow().1)
    }
    fn tracker(_: &Self::Goal) -> f32 {
        0.0
    }
    fn progress(initial: &mut f32, feedback: &Self::Feedback) -> ActionFeedback {
        navigate_progress(initial, feedback)
    }
    fn failure(result: &Self::Result) -> Option<String> {
        (result.error_code != 0).then(|| format!("nav2 error {}: {}", result.error_code, result.error_msg))
    }
}

/// The QoS rclpy and rclcpp use for actions: services and feedback
/// reliable and volatile, status reliable and transient-local (a late
/// client gets the current status).
fn client_qos() -> ActionClientQosPolicies {
    let service = QosProfile::publisher_default().history(History::KeepLast { depth: 10 });
    ActionClientQosPolicies {
        goal_service: service.clone(),
        result_service: service.clone(),
        cancel_service: service.clone(),
        feedback_subscription: service.clone(),
        status_subscription: service
            .durability(Durability::TransientLocal)
            .history(History::KeepLast { depth: 1 }),
    }
}

/// Make the action client of `binding` on `node`. The handler is usable
/// once the node spins.
pub(crate) fn handler(node: &mut Node, binding: ActionBinding) -> Result<Handler, Error> {
    match binding.action_type {
        ActionType::Fibonacci => typed::<Fibonacci>(node, binding),
        ActionType::NavigateToPose => typed::<NavigateToPose>(node, binding),
    }
}

/// A bound kind's handler, and how to hand it the node once it spins.
pub(crate) type Handler = (Arc<dyn ActionHandler>, Box<dyn FnOnce(Arc<Node>) + Send>);

fn typed<A: RosAction>(node: &mut Node, binding: ActionBinding) -> Result<Handler, Error> {
    let name = Name::parse(&binding.action_name).map_err(|e| Error::InvalidName {
        name: binding.action_name.clone(),
        reason: format!("{e:?}"),
    })?;
    let client = node
        .create_action_client::<A::Goal, A::Result, A::Feedback>(
            ServiceMapping::Enhanced,
            &name,
            &binding.action_type.type_name(),
            client_qos(),
        )
        .map_err(|e| Error::Create {
            what: "action client",
            reason: format!("{e:?}"),
        })?;
    let node_slot = Arc::new(std::sync::OnceLock::new());
    let inner = Arc::new(Inner::<A> {
        binding,
        client,
        node: node_slot.clone(),
        busy: tokio::sync::Mutex::new(()),
        nonce: AtomicU8::new(0),
    });
    let set_node: Box<dyn FnOnce(Arc<Node>) + Send> = Box::new(move |n| {
        let _ = node_slot.set(n);
    });
    Ok((Arc::new(RosActionHandler(inner)), set_node))
}

struct Inner<A: RosAction> {
    binding: ActionBinding,
    client: ActionClient<A::Goal, A::Result, A::Feedback>,
    /// The node the client lives on (set once the node spins), for
    /// waiting until the server is discovered.
    node: Arc<std::sync::OnceLock<Arc<Node>>>,
    /// One goal at a time through this client.
    busy: tokio::sync::Mutex<()>,
    nonce: AtomicU8,
}

/// Runs the tasks of one bound kind through the ROS 2 action server.
struct RosActionHandler<A: RosAction>(Arc<Inner<A>>);

impl<A: RosAction> ActionHandler for RosActionHandler<A> {
    fn run(&self, ctx: ActionContext) -> ActionFuture {
        let inner = self.0.clone();
        Box::pin(async move { inner.run(ctx).await })
    }
}

/// How a handler that stopped for a cancel or a lost permit ends.
pub(crate) fn stopped(ctx: &ActionContext) -> ActionOutcome {
    if ctx.is_cancelled() {
        ActionOutcome::Cancelled
    } else {
        // Not reported: the agent ignores the outcome of a handler that
        // lost its permit.
        ActionOutcome::Failed {
            reason: "permit lost".to_owned(),
        }
    }
}

fn zero_time() -> builtin_interfaces::Time {
    builtin_interfaces::Time::ZERO
}

impl<A: RosAction> Inner<A> {
    async fn run(&self, ctx: ActionContext) -> ActionOutcome {
        let stop = ctx.stop_signal();
        let name = self.binding.action_name.as_str();
        let _busy = tokio::select! {
            guard = self.busy.lock() => guard,
            _ = stop.wait() => return stopped(&ctx),
        };
        let goal = match A::goal(&self.binding, &ctx) {
            Ok(goal) => goal,
            Err(reason) => {
                tracing::warn!(task = ctx.goal.task_id, %reason, "ros 2 goal refused");
                return ActionOutcome::Failed { reason };
            }
        };
        let timeout = self.binding.server_timeout;
        tokio::select! {
            found = tokio::time::timeout(timeout, self.server_discovered()) => if found.is_err() {
                return ActionOutcome::Failed {
                    reason: format!("ros 2 action server {name} ({}) not found within {timeout:?}", self.binding.action_type),
                };
            },
            _ = stop.wait() => return stopped(&ctx),
        }
        let mine = CairnGoalId {
            task_id: ctx.goal.task_id,
            epoch: ctx.goal.epoch,
            nonce: self.nonce.fetch_add(1, Ordering::Relaxed),
        };
        let goal_id = UUID {
            uuid: uuid::Uuid::from_bytes(goal_uuid(mine)),
        };
        // Older holders' goals of this task, as the server last reported.
        let mut cancelled = BTreeSet::new();
        let mut latest = None;
        while let Ok(Some(status)) = self.client.receive_status() {
            latest = Some(status);
        }
        if let Some(status) = latest {
            self.fence(&status, mine, &mut cancelled).await;
        }
        // Never start a goal without the permit.
        if !stop.may_actuate() {
            return stopped(&ctx);
        }
        let request = SendGoalRequest { goal_id, goal };
        let tracker_goal = request.goal.clone();
        let response = tokio::select! {
            r = tokio::time::timeout(timeout, self.client.goal_client().async_call_service(request)) => r,
            _ = stop.wait() => {
                // The goal may have been accepted meanwhile.
                self.cancel(goal_id, mine).await;
                return stopped(&ctx);
            }
        };
        match response {
            Err(_) => {
                return ActionOutcome::Failed {
                    reason: format!("ros 2 action server {name} did not answer the goal within {timeout:?}"),
                }
            }
            Ok(Err(e)) => {
                return ActionOutcome::Failed {
                    reason: format!("sending the goal to ros 2 action server {name}: {e:?}"),
                }
            }
            Ok(Ok(r)) if !r.accepted => {
                return ActionOutcome::Failed {
                    reason: format!("ros 2 action server {name} rejected the goal"),
                }
            }
            Ok(Ok(_)) => {}
        }
        tracing::info!(task = mine.task_id, epoch = mine.epoch, goal = ?goal_id, action = %name, "ros 2 goal accepted");
        self.follow(&ctx, &stop, goal_id, mine, tracker_goal, &mut cancelled)
            .await
    }

    /// Until the goal's result, a cancel or the loss of the permit.
    async fn follow(
        &self,
        ctx: &ActionContext,
        stop: &StopSignal,
        goal_id: UUID,
        mine: CairnGoalId,
        goal: A::Goal,
        cancelled: &mut BTreeSet<[u8; 16]>,
    ) -> ActionOutcome {
        let name = self.binding.action_name.as_str();
        let mut tracker = A::tracker(&goal);
        // Until the server's first feedback, and again whenever it is quiet
        // for a while, tell the cluster the goal is alive (a task without
        // progress reports is taken back as stalled).
        let mut last = ActionFeedback {
            percent: 0,
            detail: Some(FeedbackDetail::Note(clip(format!("goal accepted by {name}")))),
        };
        ctx.feedback(last.clone());
        let mut keepalive = tokio::time::interval_at(tokio::time::Instant::now() + KEEPALIVE, KEEPALIVE);
        let result = self.client.async_request_result(goal_id).fuse();
        let feedback = self.client.feedback_stream(goal_id);
        let statuses = self.client.all_statuses_stream();
        futures::pin_mut!(result, feedback, statuses);
        loop {
            tokio::select! {
                r = &mut result => return match r {
                    Ok((GoalStatusEnum::Succeeded, result)) => match A::failure(&result) {
                        None => ActionOutcome::Succeeded,
                        Some(reason) => ActionOutcome::Failed { reason },
                    },
                    Ok((GoalStatusEnum::Canceled, _)) if ctx.is_cancelled() => ActionOutcome::Cancelled,
                    Ok((status, result)) => ActionOutcome::Failed {
                        reason: format!("ros 2 action server {name} ended the goal {status:?}: {result:?}"),
                    },
                    Err(e) => ActionOutcome::Failed {
                        reason: format!("ros 2 action server {name}: no result: {e:?}"),
                    },
                },
                Some(fb) = feedback.next() => match fb {
                    Ok(fb) => {
                        last = A::progress(&mut tracker, &fb);
                        ctx.feedback(last.clone());
                        keepalive.reset();
                    }
                    Err(e) => tracing::warn!(error = ?e, "unreadable ros 2 feedback"),
                },
                _ = keepalive.tick() => ctx.feedback(last.clone()),
                Some(Ok(status)) = statuses.next() => self.fence(&status, mine, cancelled).await,
                _ = stop.wait() => {
                    self.cancel(goal_id, mine).await;
                    return stopped(ctx);
                }
            }
        }
    }

    /// Resolves once the server's goal, result and cancel services are
    /// matched (at once if they already are).
    async fn server_discovered(&self) {
        let node = loop {
            match self.node.get() {
                Some(n) => break n.clone(),
                None => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        };
        self.client.goal_client().wait_for_service(&node).await;
        self.client.result_client().wait_for_service(&node).await;
        self.client.cancel_client().wait_for_service(&node).await;
    }

    /// Cancel the stale goals of this task that `status` lists, once each.
    async fn fence(&self, status: &GoalStatusArray, mine: CairnGoalId, cancelled: &mut BTreeSet<[u8; 16]>) {
        let list: Vec<([u8; 16], GoalStatusEnum)> = status
            .status_list
            .iter()
            .map(|s| (*s.goal_info.goal_id.uuid.as_bytes(), s.status))
            .collect();
        for stale in stale_goals(&list, mine) {
            if cancelled.insert(stale) {
                let old = parse_goal_uuid(&stale);
                tracing::info!(
                    task = mine.task_id,
                    epoch = mine.epoch,
                    ?old,
                    "cancelling an older holder's ros 2 goal"
                );
                self.cancel(
                    UUID {
                        uuid: uuid::Uuid::from_bytes(stale),
                    },
                    mine,
                )
                .await;
            }
        }
    }

    /// `cancel_goal`, bounded by [`CANCEL_TIMEOUT`].
    async fn cancel(&self, goal_id: UUID, mine: CairnGoalId) {
        let call = self.client.async_cancel_goal(goal_id, zero_time());
        match tokio::time::timeout(CANCEL_TIMEOUT, call).await {
            Ok(Ok(r)) => {
                tracing::info!(task = mine.task_id, epoch = mine.epoch, goal = ?goal_id, code = ?r.return_code, "ros 2 cancel_goal answered")
            }
            Ok(Err(e)) => tracing::warn!(task = mine.task_id, goal = ?goal_id, error = ?e, "ros 2 cancel_goal failed"),
            Err(_) => {
                tracing::warn!(task = mine.task_id, goal = ?goal_id, "ros 2 cancel_goal not answered within {CANCEL_TIMEOUT:?}")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cairn_hal::action::PlanTarget;
    use cairn_hal::geo::Pose2;

    fn fib() -> ActionBinding {
        ActionBinding::new("fib", ActionType::Fibonacci, "/fibonacci")
    }

    #[test]
    fn action_types_parse_by_their_ros_names() {
        for t in ActionType::ALL {
            assert_eq!(t.ros_name().parse::<ActionType>(), Ok(t));
        }
        let e = "nav2_msgs/action/Spin".parse::<ActionType>().unwrap_err();
        assert!(
            e.contains("unsupported") && e.contains("test_msgs/action/Fibonacci"),
            "{e}"
        );
    }

    #[test]
    fn goal_ids_carry_task_epoch_and_nonce() {
        let id = CairnGoalId {
            task_id: 0x0102_0304_0506,
            epoch: 0x000a_0b0c_0d0e_0f10,
            nonce: 7,
        };
        let b = goal_uuid(id);
        assert_eq!(
            b,
            [0xCA, 0x1E, 7, 1, 2, 3, 4, 5, 6, 0x0a, 0x0b, 0x0c, 0x0d, 0x0e, 0x0f, 0x10]
        );
        assert_eq!(parse_goal_uuid(&b), Some(id));
        assert_eq!(
            parse_goal_uuid(&[0u8; 16]),
            None,
            "others' (random) goal ids are not ours"
        );
    }

    #[test]
    fn a_holder_cancels_older_goals_of_its_task_only() {
        let mine = CairnGoalId {
            task_id: 5,
            epoch: 9,
            nonce: 0,
        };
        let id = |task_id, epoch, nonce| goal_uuid(CairnGoalId { task_id, epoch, nonce });
        let list = vec![
            (id(5, 8, 3), GoalStatusEnum::Executing),  // older holder: cancel
            (id(5, 9, 1), GoalStatusEnum::Accepted),   // own earlier start: cancel
            (id(5, 9, 0), GoalStatusEnum::Executing),  // this goal: keep
            (id(5, 10, 0), GoalStatusEnum::Executing), // newer holder: not ours to cancel
            (id(6, 1, 0), GoalStatusEnum::Executing),  // another task
            (id(5, 7, 0), GoalStatusEnum::Succeeded),  // over already
            (id(5, 6, 0), GoalStatusEnum::Canceling),  // being cancelled
            ([7u8; 16], GoalStatusEnum::Executing),    // not cairn's
        ];
        assert_eq!(stale_goals(&list, mine), vec![id(5, 8, 3), id(5, 9, 1)]);
    }

    #[test]
    fn fibonacci_order_comes_from_its_parameter() {
        let mut params = BTreeMap::new();
        let e = fibonacci_goal(&fib(), &params).unwrap_err();
        assert!(e.contains("\"fib.order\"") && e.contains("not declared"), "{e}");
        params.insert("fib.order".into(), ParamVal::Float(3.0));
        assert!(fibonacci_goal(&fib(), &params).unwrap_err().contains("not an integer"));
        params.insert("fib.order".into(), ParamVal::Int(-1));
        assert!(fibonacci_goal(&fib(), &params).unwrap_err().contains("not in 0..="));
        params.insert("fib.order".into(), ParamVal::Int(i64::from(i32::MAX) + 1));
        assert!(fibonacci_goal(&fib(), &params).is_err());
        params.insert("fib.order".into(), ParamVal::Int(6));
        assert_eq!(fibonacci_goal(&fib(), &params), Ok(msgs::FibonacciGoal { order: 6 }));
    }

    fn goal(plan_goal_id: Option<u64>) -> ActionGoal {
        ActionGoal {
            task_id: 3,
            epoch: 4,
            kind: "navigate".into(),
            attempt: 0,
            priority: 0,
            plan_goal_id,
            progress_percent: 0,
        }
    }

    #[test]
    fn navigate_pose_comes_from_the_plan_goal() {
        let nav = ActionBinding {
            frame_id: "odom".into(),
            ..ActionBinding::new("navigate", ActionType::NavigateToPose, "navigate_to_pose")
        };
        let plan = PlanView {
            version: 2,
            targets: vec![
                PlanTarget {
                    goal_id: 1,
                    kind: "waypoint".into(),
                    pose: Some(Pose2 {
                        x_m: 3.0,
                        y_m: -1.0,
                        heading_rad: std::f64::consts::FRAC_PI_2,
                    }),
                    tolerance_m: 0.5,
                    pending: true,
                },
                PlanTarget {
                    goal_id: 2,
                    kind: "search-area".into(),
                    pose: None,
                    tolerance_m: 0.5,
                    pending: true,
                },
            ],
        };
        let mut params = BTreeMap::new();
        let e = navigate_goal(&nav, &goal(None), &plan, &params).unwrap_err();
        assert!(e.contains("serves none"), "{e}");
        let e = navigate_goal(&nav, &goal(Some(9)), &plan, &params).unwrap_err();
        assert!(e.contains("does not have"), "{e}");
        let e = navigate_goal(&nav, &goal(Some(2)), &plan, &params).unwrap_err();
        assert!(e.contains("no single pose"), "{e}");

        let g = navigate_goal(&nav, &goal(Some(1)), &plan, &params).expect("maps");
        assert_eq!(g.pose.header.frame_id, "odom");
        assert_eq!((g.pose.pose.position.x, g.pose.pose.position.y), (3.0, -1.0));
        assert!((g.pose.pose.orientation.z - std::f64::consts::FRAC_1_SQRT_2).abs() < 1e-12);
        assert_eq!(g.behavior_tree, "");

        params.insert("navigate.behavior_tree".into(), ParamVal::String("bt.xml".into()));
        assert_eq!(
            navigate_goal(&nav, &goal(Some(1)), &plan, &params)
                .expect("maps")
                .behavior_tree,
            "bt.xml"
        );
        params.insert("navigate.behavior_tree".into(), ParamVal::Int(1));
        assert!(navigate_goal(&nav, &goal(Some(1)), &plan, &params)
            .unwrap_err()
            .contains("not a string"));
    }

    #[test]
    fn feedback_maps_to_progress_below_100() {
        let fb = fibonacci_progress(
            4,
            &msgs::FibonacciSequence {
                sequence: vec![0, 1, 1],
            },
        );
        assert_eq!(fb.percent, 60);
        assert_eq!(
            fb.detail,
            Some(FeedbackDetail::Note("fibonacci: 3 of 5 numbers, last 1".into()))
        );
        let all = fibonacci_progress(4, &msgs::FibonacciSequence { sequence: vec![0; 9] });
        assert_eq!(all.percent, 99, "100 % is the result's");

        let mut initial = 0.0;
        let at = |d: f32| msgs::NavigateToPoseFeedback {
            distance_remaining: d,
            ..Default::default()
        };
        assert_eq!(navigate_progress(&mut initial, &at(10.0)).percent, 0);
        let fb = navigate_progress(&mut initial, &at(2.5));
        assert_eq!(fb.percent, 75);
        assert_eq!(fb.detail, Some(FeedbackDetail::DistanceRemaining(2.5)));
        assert_eq!(navigate_progress(&mut initial, &at(f32::NAN)).detail, None);
    }
}
