//! Application messages: best-effort, unreplicated messages between
//! nodes over the Raft transport, one handler per [`AppChannel`].

use std::time::Duration;

use cairn_state::StateMachine;

use super::core::AppHandler;
use super::core::Core;
use super::core::RaftNode;
use crate::consensus::network::CallError;
use crate::consensus::protocol::AppChannel;
use crate::consensus::protocol::Request;
use crate::consensus::protocol::Response;
use crate::consensus::NodeId;
use crate::error::Error;

impl<S: StateMachine> Core<S> {
    pub(super) async fn handle_app(
        &self,
        from: NodeId,
        channel: AppChannel,
        payload: Vec<u8>,
    ) -> Result<Vec<u8>, String> {
        let handler = self
            .app_handlers
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(&channel)
            .cloned();
        match handler {
            Some(h) => h(from, payload).await,
            None => Err(format!("node {} has no application handler for {channel:?}", self.id)),
        }
    }
}

impl<S: StateMachine> RaftNode<S> {
    /// Register the handler for application messages sent to this node on
    /// the [`AppChannel::Default`] channel.
    pub fn set_app_handler(&self, handler: AppHandler) {
        self.set_app_handler_on(AppChannel::Default, handler);
    }

    /// Register the handler for application messages on `channel`
    /// (replacing the channel's previous handler, if any).
    pub fn set_app_handler_on(&self, channel: AppChannel, handler: AppHandler) {
        self.core
            .app_handlers
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(channel, handler);
    }

    /// Send an application message to member `target` over the Raft
    /// transport on the [`AppChannel::Default`] channel and wait for its
    /// handler's answer. Best effort: not replicated, not retried.
    pub async fn send_app(&self, target: NodeId, payload: Vec<u8>, timeout: Duration) -> Result<Vec<u8>, Error> {
        self.send_app_on(AppChannel::Default, target, payload, timeout).await
    }

    /// [`RaftNode::send_app`] on `channel`.
    pub async fn send_app_on(
        &self,
        channel: AppChannel,
        target: NodeId,
        payload: Vec<u8>,
        timeout: Duration,
    ) -> Result<Vec<u8>, Error> {
        if target == self.core.id {
            return self
                .core
                .handle_app(target, channel, payload)
                .await
                .map_err(|reason| Error::Unavailable { leader: target, reason });
        }
        let Some(member) = self.core.members().get(&target).cloned() else {
            return Err(Error::UnknownMember { node_id: target });
        };
        let req = Request::App {
            from: self.core.id,
            channel,
            payload,
        };
        match self.core.forward.call(target, &member.raft_addr, req, timeout).await {
            Ok(Response::App(Ok(bytes))) => Ok(bytes),
            Ok(Response::App(Err(reason))) => Err(Error::Unavailable { leader: target, reason }),
            Ok(other) => Err(Error::Unavailable {
                leader: target,
                reason: format!("unexpected response {other:?}"),
            }),
            Err(CallError::Timeout { .. }) => Err(Error::Timeout {
                what: "application message",
                after_ms: timeout.as_millis() as u64,
            }),
            Err(e) => Err(Error::Unavailable {
                leader: target,
                reason: e.to_string(),
            }),
        }
    }
}
