//! Joining a running cluster over the peer transport: the new node speaks
//! the same protocol, on the same port and with the same certificate, as
//! it will as a member, so it needs no admin API address and no API token.

use std::time::Duration;

use cairn_state::StateMachine;

use super::core::RaftNode;
use crate::consensus::client::NativeClient;
use crate::consensus::protocol::AdminRequest;
use crate::consensus::Member;
use crate::error::Error;

impl<S: StateMachine> RaftNode<S> {
    /// Join the running cluster one of whose members listens on each of
    /// `peers` (peer transport addresses, tried in order; the leader is
    /// found from the first answer) as `member`, this node's own
    /// addresses: it is added as a learner, then this call waits (at most
    /// `catch_up`) until this node has applied everything the cluster had
    /// committed, then, if `voter`, it is promoted.
    ///
    /// Connections use this node's own transport (its certificate, under
    /// mutual TLS), so the cluster checks who is joining. Each step is
    /// idempotent, so a join that failed half-way can be run again: a
    /// learner already added with these addresses is kept, a voter stays
    /// one. Fails with [`Error::Membership`] if this node did not catch up
    /// in time (it then stays a learner, which does not vote), or with the
    /// error of the step that failed.
    pub async fn join(&self, peers: Vec<String>, member: Member, voter: bool, catch_up: Duration) -> Result<(), Error> {
        let core = &self.core;
        let client = NativeClient::<S>::with_net(peers, core.forward.net.clone())?.timeout(core.write_timeout);
        client.admin(AdminRequest::AddLearner { id: core.id, member }).await?;
        tracing::info!(id = core.id, "added to the cluster as a learner");
        // Everything committed by now: once applied here, this node holds
        // what a voter must.
        let target = client.read_index().await?;
        if self.wait_applied(target, catch_up).await.is_err() {
            return Err(Error::Membership {
                reason: format!(
                    "node {} was added as a learner but had not applied index {target} within {catch_up:?} (it has {}); it stays a learner",
                    core.id,
                    self.status().applied_index.unwrap_or(0)
                ),
            });
        }
        if voter {
            client.admin(AdminRequest::Promote { id: core.id }).await?;
            tracing::info!(id = core.id, "promoted to voter");
        }
        Ok(())
    }
}
