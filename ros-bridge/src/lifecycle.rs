//! Lifecycle on takeover: a task kind that manages a ROS 2 lifecycle node
//! (`rclcpp_lifecycle` / `rclpy.lifecycle`) instead of sending a goal.
//!
//! The node that holds a task of the kind brings its lifecycle node to
//! *active* (`configure` if unconfigured, then `activate`) and keeps it
//! there while it holds the task; when the task is cancelled or the node
//! loses the task's permit, it `deactivate`s it and `cleanup`s it at once.
//! The lifecycle node's name is usually relative, so each Pi manages its own
//! copy: after a kill -9 of the Pi holding the task, the next holder
//! activates its copy within the reassignment bound — what a rover team
//! otherwise does by hand with `ros2 lifecycle set` on failover.
//!
//! The task never succeeds on its own: it holds a role (for example "the
//! Pi whose `navigation_node` is active") until it is cancelled. Progress is
//! 50 % with the note `<node> active`, re-reported every few seconds so the
//! coordinator does not take it back as stalled.

use std::sync::Arc;
use std::time::Duration;

use cairn_hal::action::ActionContext;
use cairn_hal::action::ActionFeedback;
use cairn_hal::action::ActionFuture;
use cairn_hal::action::ActionHandler;
use cairn_hal::action::ActionOutcome;
use cairn_hal::action::FeedbackDetail;
use cairn_hal::action::StopSignal;
use ros2_client::Client;
use ros2_client::Name;
use ros2_client::Node;
use ros2_client::QosProfile;
use ros2_client::ServiceMapping;
use ros2_client::ServiceTypeName;
use serde::Deserialize;
use serde::Serialize;

use crate::action::clip;
use crate::action::stopped;
use crate::action::KEEPALIVE;
use crate::error::Error;

/// How long one transition may take to be answered on release (the
/// runtime drops the handler soon after a lost permit).
const RELEASE_TIMEOUT: Duration = Duration::from_millis(1000);

/// `lifecycle_msgs/msg/Transition` ids.
pub mod transition {
    /// unconfigured → inactive.
    pub const CONFIGURE: u8 = 1;
    /// inactive → unconfigured.
    pub const CLEANUP: u8 = 2;
    /// inactive → active.
    pub const ACTIVATE: u8 = 3;
    /// active → inactive.
    pub const DEACTIVATE: u8 = 4;
}

/// `lifecycle_msgs/msg/State` primary state ids.
pub mod primary {
    /// Unconfigured.
    pub const UNCONFIGURED: u8 = 1;
    /// Inactive.
    pub const INACTIVE: u8 = 2;
    /// Active.
    pub const ACTIVE: u8 = 3;
}

/// `lifecycle_msgs/msg/Transition`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Transition {
    /// See [`transition`].
    pub id: u8,
    /// Optional name; empty is fine when `id` is set.
    pub label: String,
}

/// `lifecycle_msgs/srv/ChangeState` request.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ChangeStateRequest {
    /// The transition.
    pub transition: Transition,
}

/// `lifecycle_msgs/srv/ChangeState` response.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ChangeStateResponse {
    /// Whether the transition happened.
    pub success: bool,
}

/// `lifecycle_msgs/srv/GetState` request (an empty request carries one
/// placeholder byte in ROS 2's IDL).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct GetStateRequest {
    /// Always 0.
    pub structure_needs_at_least_one_member: u8,
}

/// `lifecycle_msgs/msg/State`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct State {
    /// See [`primary`].
    pub id: u8,
    /// E.g. `active`.
    pub label: String,
}

/// `lifecycle_msgs/srv/GetState` response.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct GetStateResponse {
    /// Where the node is.
    pub current_state: State,
}

impl ros2_client::Message for ChangeStateRequest {}
impl ros2_client::Message for ChangeStateResponse {}
impl ros2_client::Message for GetStateRequest {}
impl ros2_client::Message for GetStateResponse {}

/// One task kind bound to one lifecycle node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LifecycleBinding {
    /// The cairn task kind, e.g. `nav-stack`.
    pub kind: String,
    /// The lifecycle node: absolute (`/navigation_node`) or relative to the
    /// bridge node's namespace (`navigation_node` → `/pi1/navigation_node`).
    pub node: String,
    /// How long to wait for the node's services to be discovered and each
    /// transition to be answered.
    pub timeout: Duration,
}

/// The transitions that bring a node in primary state `state` to active,
/// or why it cannot get there.
pub fn to_active(state: &State) -> Result<Vec<u8>, String> {
    match state.id {
        primary::UNCONFIGURED => Ok(vec![transition::CONFIGURE, transition::ACTIVATE]),
        primary::INACTIVE => Ok(vec![transition::ACTIVATE]),
        primary::ACTIVE => Ok(vec![]),
        _ => Err(format!(
            "it is {:?} (state {}), not a state to activate from",
            state.label, state.id
        )),
    }
}

/// Make the service clients of `binding` on `node`.
pub(crate) fn handler(node: &mut Node, binding: LifecycleBinding) -> Result<crate::action::Handler, Error> {
    let qos = QosProfile::publisher_default().history(ros2_client::qos::History::KeepLast { depth: 10 });
    // `<node>/change_state`, `<node>/get_state`: absolute if the node's
    // name is, else under the bridge node's namespace.
    let service = |name: &str| -> Result<Name, Error> {
        let full = format!("{}/{name}", binding.node.trim_end_matches('/'));
        Name::parse(&full).map_err(|e| Error::InvalidName {
            name: full.clone(),
            reason: format!("{e:?}"),
        })
    };
    let change_name = service("change_state")?;
    let get_name = service("get_state")?;
    let create = |e| Error::Create {
        what: "lifecycle client",
        reason: format!("{e:?}"),
    };
    let change = node
        .create_client::<ChangeStateRequest, ChangeStateResponse>(
            ServiceMapping::Enhanced,
            &change_name,
            &ServiceTypeName::new("lifecycle_msgs", "ChangeState"),
            qos.clone(),
            qos.clone(),
        )
        .map_err(create)?;
    let get = node
        .create_client::<GetStateRequest, GetStateResponse>(
            ServiceMapping::Enhanced,
            &get_name,
            &ServiceTypeName::new("lifecycle_msgs", "GetState"),
            qos.clone(),
            qos,
        )
        .map_err(create)?;
    let node_slot = Arc::new(std::sync::OnceLock::new());
    let inner = Arc::new(Inner {
        binding,
        change,
        get,
        node: node_slot.clone(),
        busy: tokio::sync::Mutex::new(()),
    });
    let set_node: Box<dyn FnOnce(Arc<Node>) + Send> = Box::new(move |n| {
        let _ = node_slot.set(n);
    });
    Ok((Arc::new(LifecycleHandler(inner)), set_node))
}

struct Inner {
    binding: LifecycleBinding,
    change: Client<ChangeStateRequest, ChangeStateResponse>,
    get: Client<GetStateRequest, GetStateResponse>,
    node: Arc<std::sync::OnceLock<Arc<Node>>>,
    /// One task at a time through these clients.
    busy: tokio::sync::Mutex<()>,
}

struct LifecycleHandler(Arc<Inner>);

impl ActionHandler for LifecycleHandler {
    fn run(&self, ctx: ActionContext) -> ActionFuture {
        let inner = self.0.clone();
        Box::pin(async move { inner.run(ctx).await })
    }
}

impl Inner {
    async fn run(&self, ctx: ActionContext) -> ActionOutcome {
        let stop = ctx.stop_signal();
        let name = self.binding.node.clone();
        let _busy = tokio::select! {
            guard = self.busy.lock() => guard,
            _ = stop.wait() => return stopped(&ctx),
        };
        let timeout = self.binding.timeout;
        tokio::select! {
            found = tokio::time::timeout(timeout, self.discovered()) => if found.is_err() {
                return ActionOutcome::Failed {
                    reason: format!("ros 2 lifecycle node {name}: services not found within {timeout:?}"),
                };
            },
            _ = stop.wait() => return stopped(&ctx),
        }
        if let Err(reason) = self.activate(&stop).await {
            if !stop.may_actuate() {
                self.release(&ctx).await;
                return stopped(&ctx);
            }
            tracing::warn!(task = ctx.goal.task_id, %reason, "lifecycle node not activated");
            // Leave it as inactive as it can be: another holder may take over.
            self.release(&ctx).await;
            return ActionOutcome::Failed {
                reason: clip(format!("ros 2 lifecycle node {name}: {reason}")),
            };
        }
        tracing::info!(task = ctx.goal.task_id, epoch = ctx.goal.epoch, node = %name, "ros 2 lifecycle node active");
        let active = ActionFeedback {
            percent: 50,
            detail: Some(FeedbackDetail::Note(clip(format!("{name} active")))),
        };
        ctx.feedback(active.clone());
        let mut keepalive = tokio::time::interval_at(tokio::time::Instant::now() + KEEPALIVE, KEEPALIVE);
        loop {
            tokio::select! {
                _ = keepalive.tick() => ctx.feedback(active.clone()),
                _ = stop.wait() => break,
            }
        }
        self.release(&ctx).await;
        stopped(&ctx)
    }

    async fn discovered(&self) {
        let node = loop {
            match self.node.get() {
                Some(n) => break n.clone(),
                None => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        };
        self.get.wait_for_service(&node).await;
        self.change.wait_for_service(&node).await;
    }

    async fn state(&self) -> Result<State, String> {
        match tokio::time::timeout(
            self.binding.timeout,
            self.get.async_call_service(GetStateRequest::default()),
        )
        .await
        {
            Ok(Ok(r)) => Ok(r.current_state),
            Ok(Err(e)) => Err(format!("get_state failed: {e:?}")),
            Err(_) => Err(format!("get_state not answered within {:?}", self.binding.timeout)),
        }
    }

    async fn transition(&self, id: u8, timeout: Duration) -> Result<(), String> {
        let request = ChangeStateRequest {
            transition: Transition {
                id,
                label: String::new(),
            },
        };
        match tokio::time::timeout(timeout, self.change.async_call_service(request)).await {
            Ok(Ok(r)) if r.success => Ok(()),
            Ok(Ok(_)) => Err(format!("transition {id} refused")),
            Ok(Err(e)) => Err(format!("change_state {id} failed: {e:?}")),
            Err(_) => Err(format!("change_state {id} not answered within {timeout:?}")),
        }
    }

    /// To active, each transition only with the permit.
    async fn activate(&self, stop: &StopSignal) -> Result<(), String> {
        let state = self.state().await?;
        for id in to_active(&state)? {
            if !stop.may_actuate() {
                return Err("permit lost".to_owned());
            }
            self.transition(id, self.binding.timeout).await?;
        }
        Ok(())
    }

    /// Deactivate and clean up, each bounded; what the node is in decides
    /// which apply.
    async fn release(&self, ctx: &ActionContext) {
        let name = &self.binding.node;
        let state = match tokio::time::timeout(RELEASE_TIMEOUT, self.get.async_call_service(GetStateRequest::default()))
            .await
        {
            Ok(Ok(r)) => r.current_state,
            _ => State {
                id: primary::ACTIVE,
                label: "unknown".into(),
            },
        };
        let steps: &[u8] = match state.id {
            primary::ACTIVE => &[transition::DEACTIVATE, transition::CLEANUP],
            primary::INACTIVE => &[transition::CLEANUP],
            _ => &[],
        };
        for &id in steps {
            match self.transition(id, RELEASE_TIMEOUT).await {
                Ok(()) => {
                    tracing::info!(task = ctx.goal.task_id, node = %name, transition = id, "ros 2 lifecycle node released")
                }
                Err(e) => {
                    tracing::warn!(task = ctx.goal.task_id, node = %name, error = %e, "ros 2 lifecycle release failed");
                    return;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use byteorder::LittleEndian;

    #[test]
    fn transitions_to_active() {
        let s = |id| State {
            id,
            label: String::new(),
        };
        assert_eq!(to_active(&s(1)), Ok(vec![1, 3]));
        assert_eq!(to_active(&s(2)), Ok(vec![3]));
        assert_eq!(to_active(&s(3)), Ok(vec![]));
        assert!(to_active(&s(4)).unwrap_err().contains("not a state to activate from"));
    }

    #[test]
    fn lifecycle_message_layouts() {
        let req = ChangeStateRequest {
            transition: Transition {
                id: 3,
                label: "activate".into(),
            },
        };
        let bytes = cdr_encoding::to_vec::<_, LittleEndian>(&req).expect("cdr");
        // As rclpy's serialize_message lays it out (Kilted wheels).
        assert_eq!(bytes, b"\x03\0\0\0\x09\0\0\0activate\0");
        let bytes = cdr_encoding::to_vec::<_, LittleEndian>(&GetStateRequest::default()).expect("cdr");
        assert_eq!(bytes, [0]);
        // rclpy's serialize_message of GetState.Response (State 3 "active"),
        // without the encapsulation header: its padding is not zeroed (0x55).
        let resp: GetStateResponse = cdr_encoding::from_bytes::<_, LittleEndian>(b"\x03\x55\0\0\x07\0\0\0active\0")
            .expect("cdr")
            .0;
        assert_eq!(
            resp.current_state,
            State {
                id: 3,
                label: "active".into()
            }
        );
    }
}
