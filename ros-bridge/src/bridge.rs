//! The DDS side: node `/cairn` (by default) with the six `rcl_interfaces`
//! parameter services and a `/parameter_events` publisher.

use std::future::Future;
use std::sync::Arc;

use cairn_hal::action::ActionHandler;
use cairn_state::Param;
use cairn_state::ParamValue;
use futures::StreamExt;
use ros2_client::parameters::raw;
use ros2_client::qos::Durability;
use ros2_client::qos::History;
use ros2_client::rcl_interfaces as rcl;
use ros2_client::Context;
use ros2_client::ContextOptions;
use ros2_client::Message;
use ros2_client::MessageTypeName;
use ros2_client::Name;
use ros2_client::Node;
use ros2_client::NodeName;
use ros2_client::NodeOptions;
use ros2_client::Publisher;
use ros2_client::QosProfile;
use ros2_client::Server;
use ros2_client::ServiceMapping;
use ros2_client::ServiceTypeName;
use tokio::task::JoinHandle;

use crate::action::ActionBinding;
use crate::convert;
use crate::error::Error;
use crate::lifecycle::LifecycleBinding;
use crate::mirror;
use crate::mirror::Direction;
use crate::mirror::TelemetryMirror;
use crate::msgs;
use crate::node::CairnNode;
use crate::node::SetParamError;
use crate::state;
use crate::submit;

/// Names in one request that are answered; the rest are dropped with a
/// warning. A ROS 2 request is one DDS sample of at most a few MB, but a
/// rover has tens of parameters: the bound keeps one malformed or hostile
/// request from costing more than a bounded amount of work.
pub const MAX_NAMES_PER_REQUEST: usize = 1024;

/// Requests kept per service while one is being answered (a `set` awaits a
/// replicated write): enough for a few tools at once, bounded so a flood
/// does not grow memory.
const SERVICE_QUEUE_DEPTH: usize = 16;

/// Where the ROS 2 node lives.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RosOptions {
    /// DDS domain (`ROS_DOMAIN_ID` of the ROS 2 nodes it talks to).
    pub domain_id: u16,
    /// ROS 2 namespace, e.g. `/` (giving `/cairn`) or `/pi1`.
    pub namespace: String,
    /// Base name of the node, e.g. `cairn`.
    pub node_name: String,
    /// Task kinds run as ROS 2 actions on this node.
    pub actions: Vec<ActionBinding>,
    /// Task kinds that keep a ROS 2 lifecycle node active on this node.
    pub lifecycle: Vec<LifecycleBinding>,
    /// Serve `<node>/submit_task` and `<node>/cancel_task` (see
    /// [`crate::submit`]).
    pub submit: bool,
    /// Telemetry topics mirrored to or from ROS 2 (see [`crate::mirror`]).
    pub telemetry: Vec<TelemetryMirror>,
}

impl Default for RosOptions {
    fn default() -> Self {
        Self {
            domain_id: 0,
            namespace: "/".to_owned(),
            node_name: "cairn".to_owned(),
            actions: Vec::new(),
            lifecycle: Vec::new(),
            submit: true,
            telemetry: Vec::new(),
        }
    }
}

/// A running ROS 2 node serving a cairn node's parameters. Dropping it
/// stops the services and the event publisher and leaves the DDS domain.
pub struct RosBridge {
    fully_qualified_name: String,
    tasks: Vec<JoinHandle<()>>,
    /// The handlers of the bound task kinds, until taken.
    action_handlers: Vec<(String, Arc<dyn ActionHandler>)>,
    // Last: the tasks that use its entities are aborted first. Shared with
    // the action handlers (they wait on it for servers to be discovered).
    _node: Arc<Node>,
}

impl RosBridge {
    /// Join DDS domain `options.domain_id` as ROS 2 node
    /// `options.namespace`/`options.node_name`, serve `list_parameters`,
    /// `get_parameters`, `get_parameter_types`, `describe_parameters`,
    /// `set_parameters` and `set_parameters_atomically` from `cairn`, and
    /// publish every parameter change it applies on `/parameter_events`.
    /// Must be called within a tokio runtime.
    pub fn start<C: CairnNode>(options: &RosOptions, cairn: Arc<C>) -> Result<Self, Error> {
        let node_name = NodeName::new(&options.namespace, &options.node_name).map_err(|e| Error::InvalidName {
            name: format!("{}/{}", options.namespace, options.node_name),
            reason: format!("{e:?}"),
        })?;
        // `Context::new()` would ignore ROS_DOMAIN_ID: the domain is explicit.
        let context = Context::with_options(ContextOptions::new().domain_id(options.domain_id))
            .map_err(|e| create("dds participant", e))?;
        // The node's own parameter store and services stay off: these
        // services are answered below, from the replicated parameters.
        let node_options = NodeOptions::new().enable_rosout(false).start_parameter_services(false);
        let mut node = context
            .new_node(node_name, node_options)
            .map_err(|e| create("node", e))?;
        let fqn = node.fully_qualified_name();
        let service_qos = QosProfile::publisher_default().history(History::KeepLast {
            depth: SERVICE_QUEUE_DEPTH,
        });
        let mut tasks = Vec::new();

        let server = service::<rcl::ListParametersRequest, rcl::ListParametersResponse>(
            &mut node,
            &fqn,
            "list_parameters",
            "ListParameters",
            &service_qos,
        )?;
        tasks.push(serve(server, cairn.clone(), |cairn, req| async move {
            let params = cairn.params();
            let prefixes: Vec<String> = req.prefixes.into_iter().take(MAX_NAMES_PER_REQUEST).collect();
            rcl::ListParametersResponse {
                result: convert::list(params.iter().map(|p| p.name.as_str()), &prefixes, req.depth),
            }
        }));

        let server = service::<rcl::GetParametersRequest, rcl::GetParametersResponse>(
            &mut node,
            &fqn,
            "get_parameters",
            "GetParameters",
            &service_qos,
        )?;
        tasks.push(serve(server, cairn.clone(), |cairn, req| async move {
            let params = cairn.params();
            let values = bounded(req.names)
                .map(|name| match find(&params, &name) {
                    Some(p) => convert::to_ros(&p.value),
                    None => convert::not_set(),
                })
                .collect();
            rcl::GetParametersResponse { values }
        }));

        let server = service::<rcl::GetParameterTypesRequest, rcl::GetParameterTypesResponse>(
            &mut node,
            &fqn,
            "get_parameter_types",
            "GetParameterTypes",
            &service_qos,
        )?;
        tasks.push(serve(server, cairn.clone(), |cairn, req| async move {
            let params = cairn.params();
            let values = bounded(req.names)
                .map(|name| match find(&params, &name) {
                    Some(p) => convert::to_ros(&p.value).ptype,
                    None => raw::ParameterType::NOT_SET,
                })
                .collect();
            rcl::GetParameterTypesResponse { values }
        }));

        let server = service::<rcl::DescribeParametersRequest, rcl::DescribeParametersResponse>(
            &mut node,
            &fqn,
            "describe_parameters",
            "DescribeParameters",
            &service_qos,
        )?;
        tasks.push(serve(server, cairn.clone(), |cairn, req| async move {
            let params = cairn.params();
            let values = bounded(req.names)
                .map(|name| match find(&params, &name) {
                    Some(p) => convert::descriptor(p),
                    None => convert::unknown_descriptor(&name),
                })
                .collect();
            rcl::DescribeParametersResponse { values }
        }));

        let server = service::<rcl::SetParametersRequest, rcl::SetParametersResponse>(
            &mut node,
            &fqn,
            "set_parameters",
            "SetParameters",
            &service_qos,
        )?;
        tasks.push(serve(server, cairn.clone(), |cairn, req| async move {
            let mut results = Vec::new();
            // In order, each its own replicated write, as ROS 2 defines
            // SetParameters (not atomic: an earlier one may have succeeded).
            for parameter in req.parameter.into_iter().take(MAX_NAMES_PER_REQUEST) {
                results.push(set_one(cairn.as_ref(), parameter).await);
            }
            rcl::SetParametersResponse { results }
        }));

        let server = service::<rcl::SetParametersRequest, rcl::SetParametersAtomicallyResponse>(
            &mut node,
            &fqn,
            "set_parameters_atomically",
            "SetParametersAtomically",
            &service_qos,
        )?;
        tasks.push(serve(server, cairn.clone(), |cairn, req| async move {
            let mut parameters = req.parameter;
            let result = match (parameters.pop(), parameters.is_empty()) {
                (Some(parameter), true) => set_one(cairn.as_ref(), parameter).await,
                (None, _) => ok(),
                // No cairn command sets several parameters in one entry.
                (Some(_), false) => refused("cairn sets one parameter per atomic request".to_owned()),
            };
            rcl::SetParametersAtomicallyResponse { result }
        }));

        let events = node
            .create_publisher::<raw::ParameterEvent>(&context.get_parameter_events_topic(), None)
            .map_err(|e| create("/parameter_events publisher", e))?;
        let mut changes = cairn.param_changes();
        let event_node = fqn.clone();
        tasks.push(tokio::spawn(async move {
            // Ends with the node's change stream (the node stopped) or when
            // the bridge is dropped (aborted).
            while let Some(change) = changes.next().await {
                if let Err(e) = events.async_publish(convert::event(&change, &event_node)).await {
                    tracing::warn!(name = %change.name, error = ?e, "could not publish a parameter event");
                }
            }
        }));

        tasks.push(state_topics(&mut node, &fqn, cairn.clone())?);

        if options.submit {
            let server = service::<rcl::SetParametersRequest, rcl::SetParametersAtomicallyResponse>(
                &mut node,
                &fqn,
                "submit_task",
                "SetParametersAtomically",
                &service_qos,
            )?;
            tasks.push(serve(server, cairn.clone(), |cairn, req| async move {
                let result = match submit::parse_submit(req.parameter) {
                    Err(reason) => {
                        tracing::info!(%reason, "task submit from ros 2 refused");
                        refused(reason)
                    }
                    Ok(request) => {
                        let kind = request.kind.clone();
                        match cairn.submit_task(request).await {
                            Ok(task_id) => {
                                tracing::info!(task = task_id, %kind, "task submitted from ros 2");
                                raw::SetParametersResult {
                                    successful: true,
                                    reason: submit::created(task_id),
                                }
                            }
                            Err(e) => {
                                tracing::info!(%kind, error = %e, "task submit from ros 2 refused");
                                refused(e.to_string())
                            }
                        }
                    }
                };
                rcl::SetParametersAtomicallyResponse { result }
            }));
            let server = service::<rcl::SetParametersRequest, rcl::SetParametersAtomicallyResponse>(
                &mut node,
                &fqn,
                "cancel_task",
                "SetParametersAtomically",
                &service_qos,
            )?;
            tasks.push(serve(server, cairn.clone(), |cairn, req| async move {
                let result = match submit::parse_cancel(req.parameter) {
                    Err(reason) => refused(reason),
                    Ok(task_id) => match cairn.cancel_task(task_id).await {
                        Ok(()) => {
                            tracing::info!(task = task_id, "task cancel from ros 2");
                            ok()
                        }
                        Err(e) => {
                            tracing::info!(task = task_id, error = %e, "task cancel from ros 2 refused");
                            refused(e.to_string())
                        }
                    },
                };
                rcl::SetParametersAtomicallyResponse { result }
            }));
        }

        mirror::check(&options.telemetry).map_err(|reason| Error::Create {
            what: "telemetry mirror",
            reason,
        })?;
        tasks.extend(mirrors(&mut node, &options.telemetry, cairn.clone())?);

        let mut action_handlers = Vec::new();
        let mut give_node = Vec::new();
        for binding in &options.actions {
            let kind = binding.kind.clone();
            let (handler, set_node) = crate::action::handler(&mut node, binding.clone())?;
            tracing::info!(kind = %kind, action = %binding.action_name, r#type = %binding.action_type, "task kind bound to a ros 2 action");
            action_handlers.push((kind, handler));
            give_node.push(set_node);
        }
        for binding in &options.lifecycle {
            let kind = binding.kind.clone();
            let (handler, set_node) = crate::lifecycle::handler(&mut node, binding.clone())?;
            tracing::info!(kind = %kind, lifecycle_node = %binding.node, "task kind bound to a ros 2 lifecycle node");
            action_handlers.push((kind, handler));
            give_node.push(set_node);
        }

        // Discovery and the ROS 2 graph (`ros2 node list`).
        let spinner = node.spinner().map_err(|e| create("node spinner", e))?;
        tasks.push(tokio::spawn(async move {
            if let Err(e) = spinner.spin().await {
                tracing::warn!(error = ?e, "ros 2 node spinner stopped");
            }
        }));
        let node = Arc::new(node);
        for set_node in give_node {
            set_node(node.clone());
        }
        tracing::info!(node = %fqn, domain_id = options.domain_id, "ros 2 parameter services up");
        Ok(Self {
            fully_qualified_name: fqn,
            tasks,
            action_handlers,
            _node: node,
        })
    }

    /// The handlers of the task kinds bound to ROS 2 actions
    /// ([`RosOptions::actions`]), to register with the node's agent; empty
    /// once taken.
    pub fn take_action_handlers(&mut self) -> Vec<(String, Arc<dyn ActionHandler>)> {
        std::mem::take(&mut self.action_handlers)
    }

    /// The node's fully qualified name, e.g. `/cairn`.
    pub fn fully_qualified_name(&self) -> &str {
        &self.fully_qualified_name
    }
}

impl Drop for RosBridge {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// Latched: reliable, transient-local, the last value kept for late joiners.
fn latched() -> QosProfile {
    QosProfile::publisher_default()
        .durability(Durability::TransientLocal)
        .history(History::KeepLast { depth: 1 })
}

fn publisher<M: serde::Serialize>(
    node: &mut Node,
    fqn: &str,
    name: &str,
    package: &str,
    type_name: &str,
) -> Result<Publisher<M>, Error> {
    let topic_name = Name::new(fqn, name).map_err(|e| Error::InvalidName {
        name: format!("{fqn}/{name}"),
        reason: format!("{e:?}"),
    })?;
    let qos = latched();
    let topic = node
        .create_topic(&topic_name, MessageTypeName::new(package, type_name), &qos)
        .map_err(|e| create("state topic", e))?;
    node.create_publisher(&topic, Some(qos))
        .map_err(|e| create("state publisher", e))
}

/// Publish `value` on `publisher` if it differs from `last` (or nothing was
/// published yet).
async fn publish_changed<M: serde::Serialize + PartialEq + Clone + std::fmt::Debug>(
    publisher: &Publisher<M>,
    last: &mut Option<M>,
    value: M,
    topic: &str,
) {
    if last.as_ref() == Some(&value) {
        return;
    }
    match publisher.async_publish(value.clone()).await {
        Ok(()) => *last = Some(value),
        Err(e) => tracing::warn!(topic, error = ?e, "could not publish a ros 2 state topic"),
    }
}

/// The state topics (see [`crate::state`]), published as they change.
fn state_topics<C: CairnNode>(node: &mut Node, fqn: &str, cairn: Arc<C>) -> Result<JoinHandle<()>, Error> {
    let mode = publisher::<msgs::StdString>(node, fqn, "mode", "std_msgs", "String")?;
    let speed = publisher::<msgs::Float64>(node, fqn, "max_speed", "std_msgs", "Float64")?;
    let plan = publisher::<msgs::Path>(node, fqn, "plan", "nav_msgs", "Path")?;
    let cluster = publisher::<msgs::DiagnosticStatus>(node, fqn, "cluster", "diagnostic_msgs", "DiagnosticStatus")?;
    let board = publisher::<msgs::StdString>(node, fqn, "tasks", "std_msgs", "String")?;
    Ok(tokio::spawn(async move {
        let (mut last_mode, mut last_speed, mut last_plan, mut last_cluster, mut last_board) =
            (None, None, None, None, None);
        let mut tick = tokio::time::interval(state::STATE_PERIOD);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let Some(s) = cairn.state() else { continue };
            publish_changed(&mode, &mut last_mode, msgs::StdString { data: s.mode }, "mode").await;
            publish_changed(
                &speed,
                &mut last_speed,
                msgs::Float64 { data: s.max_speed_mps },
                "max_speed",
            )
            .await;
            publish_changed(&plan, &mut last_plan, state::path(&s.plan), "plan").await;
            publish_changed(
                &cluster,
                &mut last_cluster,
                state::cluster_status(&s.cluster),
                "cluster",
            )
            .await;
            publish_changed(
                &board,
                &mut last_board,
                msgs::StdString {
                    data: s.task_board_json,
                },
                "tasks",
            )
            .await;
        }
    }))
}

/// Mirrored topics are best effort, as cairn telemetry is: volatile,
/// the latest [`mirror::MIRROR_DEPTH`] kept.
fn mirror_qos() -> QosProfile {
    QosProfile::publisher_default()
        .durability(Durability::Volatile)
        .history(History::KeepLast {
            depth: mirror::MIRROR_DEPTH,
        })
}

fn mirror_topic(node: &mut Node, ros_topic: &str) -> Result<ros2_client::dds::rustdds::Topic, Error> {
    let name = Name::parse(ros_topic).map_err(|e| Error::InvalidName {
        name: ros_topic.to_owned(),
        reason: format!("{e:?}"),
    })?;
    node.create_topic(&name, MessageTypeName::new("std_msgs", "String"), &mirror_qos())
        .map_err(|e| create("telemetry mirror topic", e))
}

/// The telemetry mirrors (see [`crate::mirror`]): one task for every
/// cairn → ROS 2 mirror together, one per ROS 2 → cairn mirror.
fn mirrors<C: CairnNode>(
    node: &mut Node,
    mirrors: &[TelemetryMirror],
    cairn: Arc<C>,
) -> Result<Vec<JoinHandle<()>>, Error> {
    let mut tasks = Vec::new();
    let mut to_ros = Vec::new();
    for m in mirrors {
        let topic = mirror_topic(node, &m.ros_topic)?;
        match m.direction {
            Direction::ToRos => {
                let publisher = node
                    .create_publisher::<msgs::StdString>(&topic, Some(mirror_qos()))
                    .map_err(|e| create("telemetry mirror publisher", e))?;
                to_ros.push((m.topic.clone(), publisher));
            }
            Direction::FromRos => {
                let subscription = node
                    .create_subscription::<msgs::StdString>(&topic, Some(mirror_qos()))
                    .map_err(|e| create("telemetry mirror subscription", e))?;
                let (cairn, cairn_topic, ros_topic) = (cairn.clone(), m.topic.clone(), m.ros_topic.clone());
                tasks.push(tokio::spawn(async move {
                    let mut refusals: u64 = 0;
                    loop {
                        match subscription.async_take().await {
                            Ok((msg, _)) => {
                                if let Err(reason) = cairn.publish_telemetry(&cairn_topic, &msg.data) {
                                    // The first refusal at warn, the rest at
                                    // debug: a 10 Hz publisher of bad JSON
                                    // must not fill the log.
                                    refusals += 1;
                                    if refusals == 1 {
                                        tracing::warn!(topic = %cairn_topic, ros_topic = %ros_topic, %reason, "ros 2 message not published as cairn telemetry (further refusals at debug)");
                                    } else {
                                        tracing::debug!(topic = %cairn_topic, %reason, refusals, "ros 2 message not published as cairn telemetry");
                                    }
                                }
                            }
                            Err(e) => tracing::warn!(ros_topic = %ros_topic, error = ?e, "unreadable ros 2 message on a mirrored topic"),
                        }
                    }
                }));
            }
        }
        tracing::info!(topic = %m.topic, ros_topic = %m.ros_topic, direction = %m.direction, "telemetry mirrored");
    }
    if !to_ros.is_empty() {
        let mut stream = cairn.telemetry(to_ros.iter().map(|(t, _)| t.clone()).collect());
        tasks.push(tokio::spawn(async move {
            while let Some((topic, json)) = stream.next().await {
                let Some((_, publisher)) = to_ros.iter().find(|(t, _)| *t == topic) else {
                    continue;
                };
                if let Err(e) = publisher.async_publish(msgs::StdString { data: json }).await {
                    tracing::debug!(%topic, error = ?e, "could not publish mirrored telemetry");
                }
            }
        }));
    }
    Ok(tasks)
}

fn create(what: &'static str, e: impl std::fmt::Debug) -> Error {
    Error::Create {
        what,
        reason: format!("{e:?}"),
    }
}

fn find<'a>(params: &'a [Param], name: &str) -> Option<&'a Param> {
    params.iter().find(|p| p.name == name)
}

fn bounded(names: Vec<String>) -> impl Iterator<Item = String> {
    if names.len() > MAX_NAMES_PER_REQUEST {
        tracing::warn!(
            names = names.len(),
            max = MAX_NAMES_PER_REQUEST,
            "parameter request truncated"
        );
    }
    names.into_iter().take(MAX_NAMES_PER_REQUEST)
}

fn ok() -> raw::SetParametersResult {
    raw::SetParametersResult {
        successful: true,
        reason: String::new(),
    }
}

fn refused(reason: String) -> raw::SetParametersResult {
    raw::SetParametersResult {
        successful: false,
        reason,
    }
}

/// One parameter of a set request, as a replicated write.
async fn set_one<C: CairnNode>(cairn: &C, parameter: raw::Parameter) -> raw::SetParametersResult {
    let kind = cairn
        .params()
        .into_iter()
        .find(|p| p.name == parameter.name)
        .map(|p| p.kind);
    let value: ParamValue = match convert::from_ros(kind.as_ref(), parameter.value) {
        Ok(v) => v,
        Err(reason) => return refused(reason),
    };
    match cairn.set_param(parameter.name.clone(), value).await {
        Ok(version) => {
            tracing::info!(name = %parameter.name, version, "parameter set from ros 2");
            ok()
        }
        Err(e @ SetParamError::Refused { .. }) | Err(e @ SetParamError::Unavailable { .. }) => {
            tracing::info!(name = %parameter.name, error = %e, "parameter set from ros 2 refused");
            refused(e.to_string())
        }
    }
}

fn service<Req, Resp>(
    node: &mut Node,
    fqn: &str,
    name: &str,
    type_name: &str,
    qos: &QosProfile,
) -> Result<Server<Req, Resp>, Error>
where
    Req: Message + Clone + 'static,
    Resp: Message + 'static,
{
    let service_name = Name::new(fqn, name).map_err(|e| Error::InvalidName {
        name: format!("{fqn}/{name}"),
        reason: format!("{e:?}"),
    })?;
    node.create_server(
        // What rclcpp and rclpy use with Fast DDS and Cyclone DDS.
        ServiceMapping::Enhanced,
        &service_name,
        &ServiceTypeName::new("rcl_interfaces", type_name),
        qos.clone(),
        qos.clone(),
    )
    .map_err(|e| create("parameter service", e))
}

/// Answer `server`'s requests one at a time with `handler`, until the
/// bridge is dropped (the task is aborted).
fn serve<Req, Resp, C, F, Fut>(server: Server<Req, Resp>, cairn: Arc<C>, handler: F) -> JoinHandle<()>
where
    Req: Message + Clone + Send + Sync + 'static,
    Resp: Message + Send + Sync + 'static,
    Server<Req, Resp>: Send + Sync,
    C: CairnNode,
    F: Fn(Arc<C>, Req) -> Fut + Send + 'static,
    Fut: Future<Output = Resp> + Send,
{
    tokio::spawn(async move {
        let requests = server.receive_request_stream();
        futures::pin_mut!(requests);
        while let Some(request) = requests.next().await {
            match request {
                Ok((id, req)) => {
                    let response = handler(cairn.clone(), req).await;
                    if let Err(e) = server.async_send_response(id, response).await {
                        tracing::warn!(error = ?e, "could not send a parameter service response");
                    }
                }
                Err(e) => tracing::warn!(error = ?e, "unreadable parameter service request"),
            }
        }
    })
}
