//! Heartbeat messages, sent with `RaftNode::send_app` (postcard-encoded).

use serde::Deserialize;
use serde::Serialize;

use crate::error::Error;

/// Agent → leader, every `heartbeat_interval_ms`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Heartbeat {
    /// The sending node.
    pub node_id: u64,
    /// Increments per heartbeat (for logs).
    pub seq: u64,
}

/// Leader → agent: the heartbeat was recorded, and a quorum confirmed this
/// node's leadership after it arrived.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeartbeatAck {
    /// The leader's term.
    pub term: u64,
    /// The leader's applied index after confirming: the agent may count the
    /// lease only once it has applied this far itself, so it never acts on a
    /// task the cluster has already moved.
    pub applied_index: u64,
}

pub(crate) fn encode<T: Serialize>(msg: &T) -> Vec<u8> {
    // Encoding a plain struct into a Vec cannot fail.
    postcard::to_stdvec(msg).unwrap_or_default()
}

pub(crate) fn decode<'a, T: Deserialize<'a>>(bytes: &'a [u8]) -> Result<T, Error> {
    postcard::from_bytes(bytes).map_err(|e| Error::Protocol { reason: e.to_string() })
}
