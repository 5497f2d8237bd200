//! Fan-out of this node's telemetry to the other members, over the Raft
//! transport's [`AppChannel::Telemetry`] channel (so over mutual TLS when
//! the cluster uses it, and to exactly the current members).
//!
//! One sender task per peer drains that peer's bounded drop-oldest queue in
//! batches and waits for each batch's answer (at most `forward_timeout_ms`)
//! before sending the next, so a peer sees one publisher's messages in
//! order; a dead or slow peer only loses its own oldest messages. The
//! receiver delivers a batch to its local subscribers and never forwards it.

use std::collections::BTreeMap;
use std::collections::BTreeSet;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use cairn_raft::AppChannel;
use cairn_raft::RaftNode;
use cairn_state::Mission;
use serde::Deserialize;
use serde::Serialize;

use super::hub::PeerQueue;
use super::hub::Telemetry;
use super::TelemetryMessage;
use cairn_raft::sync::lock;
use cairn_raft::sync::AbortOnDrop;

/// Most messages in one batch: bounds a frame to 64 × the payload limit
/// (1 MiB at the default 16 KiB), far under the transport's frame limit.
const BATCH_MAX: usize = 64;

/// How often the peer set is refreshed from the membership.
const MEMBERS_REFRESH: Duration = Duration::from_secs(1);

/// Pause after a failed send, so an unreachable peer costs no busy loop
/// (its queue keeps the newest messages meanwhile).
const RETRY_PAUSE: Duration = Duration::from_millis(250);

#[derive(Serialize)]
struct BatchOut<'a> {
    incarnation: u64,
    messages: Vec<&'a TelemetryMessage>,
}

#[derive(Deserialize)]
struct BatchIn {
    incarnation: u64,
    messages: Vec<TelemetryMessage>,
}

/// Install the receiving handler on `node` and start fanning `telemetry`'s
/// publishes out to the other members. Stops when the guard is dropped.
pub(crate) fn start_forwarder(node: Arc<RaftNode<Mission>>, telemetry: Telemetry) -> AbortOnDrop {
    let hub = telemetry.clone();
    let metrics = node.metrics().clone();
    node.set_app_handler_on(
        AppChannel::Telemetry,
        Arc::new(move |from, payload| {
            let hub = hub.clone();
            let metrics = metrics.clone();
            Box::pin(async move {
                let batch: BatchIn =
                    serde_json::from_slice(&payload).map_err(|e| format!("malformed telemetry batch: {e}"))?;
                // `from` is the sender the transport proved; each message
                // names its publisher, which must be that node (the hub
                // drops the others and counts them in `received_refused`).
                if let Some(other) = batch.messages.iter().find(|m| m.node_id != from) {
                    metrics.peer_refused("telemetry_for_another_node");
                    tracing::warn!(
                        from,
                        claimed_node = other.node_id,
                        "refused telemetry: node {from} forwarded messages published as node {}",
                        other.node_id
                    );
                }
                if batch.messages.len() > BATCH_MAX {
                    return Err(format!(
                        "telemetry batch of {} messages, over {BATCH_MAX}",
                        batch.messages.len()
                    ));
                }
                hub.deliver_remote(from, batch.incarnation, batch.messages);
                Ok(Vec::new())
            })
        }),
    );
    AbortOnDrop::spawn(supervise(node, telemetry))
}

/// Keep one sender task per current member other than this node.
async fn supervise(node: Arc<RaftNode<Mission>>, telemetry: Telemetry) {
    let me = node.id();
    let mut senders: BTreeMap<u64, AbortOnDrop> = BTreeMap::new();
    let mut tick = tokio::time::interval(MEMBERS_REFRESH);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let members: BTreeSet<u64> = node
            .status()
            .members
            .iter()
            .map(|m| m.id)
            .filter(|id| *id != me)
            .collect();
        senders.retain(|id, _| members.contains(id));
        for (peer, queue) in telemetry.set_peers(&members) {
            tracing::debug!(peer, "telemetry fan-out to a new member");
            let task = send_loop(node.clone(), telemetry.clone(), peer, queue);
            senders.insert(peer, AbortOnDrop::spawn(task));
        }
    }
}

async fn send_loop(node: Arc<RaftNode<Mission>>, telemetry: Telemetry, peer: u64, queue: Arc<PeerQueue>) {
    let timeout = Duration::from_millis(telemetry.settings().forward_timeout_ms);
    let incarnation = telemetry.incarnation();
    let mut failing = false;
    loop {
        let batch = lock(&queue.queue).drain_up_to(BATCH_MAX);
        if batch.is_empty() {
            queue.ready.notified().await;
            continue;
        }
        let n = batch.len() as u64;
        let out = BatchOut {
            incarnation,
            messages: batch.iter().map(|m| m.as_ref()).collect(),
        };
        let bytes = match serde_json::to_vec(&out) {
            Ok(b) => b,
            Err(e) => {
                // Values that came from JSON always encode; count it anyway.
                tracing::warn!(peer, error = %e, "cannot encode a telemetry batch");
                queue.failed.fetch_add(n, Ordering::Relaxed);
                continue;
            }
        };
        let sent = tokio::time::timeout(timeout, node.send_app_on(AppChannel::Telemetry, peer, bytes, timeout)).await;
        match sent {
            Ok(Ok(_)) => {
                queue.sent.fetch_add(n, Ordering::Relaxed);
                if failing {
                    tracing::info!(peer, "telemetry reaches the peer again");
                    failing = false;
                }
            }
            Ok(Err(e)) => {
                queue.failed.fetch_add(n, Ordering::Relaxed);
                if !failing {
                    tracing::info!(peer, error = %e, "telemetry cannot reach the peer; dropping its messages until it is back");
                    failing = true;
                }
                tokio::time::sleep(RETRY_PAUSE).await;
            }
            Err(_) => {
                queue.failed.fetch_add(n, Ordering::Relaxed);
                if !failing {
                    tracing::info!(
                        peer,
                        timeout_ms = timeout.as_millis() as u64,
                        "telemetry to the peer timed out"
                    );
                    failing = true;
                }
                tokio::time::sleep(RETRY_PAUSE).await;
            }
        }
    }
}
