//! Slots of the long-lived streams (`GET /v1/watch`, `GET /v1/telemetry`).
//!
//! Each stream holds a subscription for as long as the client keeps the
//! connection, so one node serves a bounded number of each kind
//! (`api.max_streams`). Without more, anyone who reaches the port could
//! take them all and lock the operators' dashboards out of live data. So:
//!
//! - a client that presents the API token may take any free slot;
//! - anonymous clients share all but `api.stream_slots_reserved_for_token`
//!   of them (when the node has a token; without one nobody is
//!   authenticated and every slot is shared);
//! - one anonymous client address holds at most
//!   `api.max_streams_per_client` streams of a kind.
//!
//! A refused stream is a 503 (node full) or 429 (this client's share),
//! both `retryable`.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::Mutex;

use cairn_raft::sync::lock;

use crate::error::Error;

/// The stream limits of one kind of stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StreamLimits {
    /// Streams of this kind at once, everyone together.
    pub max: usize,
    /// Of those, how many only token holders may take.
    pub reserved_for_token: usize,
    /// Anonymous streams of this kind from one client address.
    pub per_client: usize,
}

/// The defaults: 64 streams of a kind (each holds a subscription and a
/// queue; 64 is far more than a rover's operators open), 16 of them kept
/// for token holders, 8 per anonymous address (a few dashboard tabs).
pub const DEFAULT_LIMITS: StreamLimits = StreamLimits {
    max: 64,
    reserved_for_token: 16,
    per_client: 8,
};

#[derive(Default)]
struct Counts {
    total: usize,
    anonymous: usize,
    by_client: HashMap<Option<IpAddr>, usize>,
}

/// The slots of one kind of stream on one node (cheap to clone).
#[derive(Clone)]
pub(crate) struct StreamSlots {
    kind: &'static str,
    limits: StreamLimits,
    /// Whether the node has a token (otherwise no slot is reserved).
    auth_enabled: bool,
    counts: Arc<Mutex<Counts>>,
}

/// A held slot; dropping it frees the slot.
pub(crate) struct StreamPermit {
    counts: Arc<Mutex<Counts>>,
    /// `Some(client)` for an anonymous stream.
    anonymous: Option<Option<IpAddr>>,
}

impl Drop for StreamPermit {
    fn drop(&mut self) {
        let mut c = lock(&self.counts);
        c.total = c.total.saturating_sub(1);
        if let Some(client) = self.anonymous {
            c.anonymous = c.anonymous.saturating_sub(1);
            if let Some(n) = c.by_client.get_mut(&client) {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    c.by_client.remove(&client);
                }
            }
        }
    }
}

impl StreamSlots {
    pub(crate) fn new(kind: &'static str, limits: StreamLimits, auth_enabled: bool) -> Self {
        Self {
            kind,
            limits,
            auth_enabled,
            counts: Arc::default(),
        }
    }

    /// Take a slot for a client at `client` (None: address unknown, e.g. an
    /// embedder's own server), authenticated or not.
    pub(crate) fn acquire(&self, client: Option<IpAddr>, authenticated: bool) -> Result<StreamPermit, Error> {
        let l = self.limits;
        let mut c = lock(&self.counts);
        if c.total >= l.max {
            return Err(Error::TooManyStreams {
                node_wide: true,
                reason: format!(
                    "this node already serves {} {} streams; try another node",
                    l.max, self.kind
                ),
            });
        }
        if authenticated {
            c.total += 1;
            return Ok(StreamPermit {
                counts: self.counts.clone(),
                anonymous: None,
            });
        }
        let reserved = if self.auth_enabled { l.reserved_for_token } else { 0 };
        let shared = l.max.saturating_sub(reserved);
        if c.anonymous >= shared {
            return Err(Error::TooManyStreams {
                node_wide: true,
                reason: format!(
                    "the {shared} {} stream slots open to clients without the API token are taken \
                     ({reserved} are kept for token holders); try another node or give the token",
                    self.kind
                ),
            });
        }
        let mine = c.by_client.get(&client).copied().unwrap_or(0);
        if mine >= l.per_client {
            return Err(Error::TooManyStreams {
                node_wide: false,
                reason: format!(
                    "this client already holds {mine} {} streams, the most one address may hold without the API token",
                    self.kind
                ),
            });
        }
        c.total += 1;
        c.anonymous += 1;
        *c.by_client.entry(client).or_insert(0) += 1;
        Ok(StreamPermit {
            counts: self.counts.clone(),
            anonymous: Some(client),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn anonymous_clients_leave_the_reserved_slots_and_each_other_room() {
        let limits = StreamLimits {
            max: 6,
            reserved_for_token: 2,
            per_client: 3,
        };
        let slots = StreamSlots::new("watch", limits, true);
        let a: Option<IpAddr> = Some([10, 0, 0, 1].into());
        let b: Option<IpAddr> = Some([10, 0, 0, 2].into());
        let mut held: Vec<_> = (0..3).map(|_| slots.acquire(a, false).unwrap()).collect();
        assert!(
            matches!(
                slots.acquire(a, false),
                Err(Error::TooManyStreams { node_wide: false, .. })
            ),
            "a's share is 3"
        );
        held.push(slots.acquire(b, false).unwrap());
        assert!(
            matches!(
                slots.acquire(b, false),
                Err(Error::TooManyStreams { node_wide: true, .. })
            ),
            "4 of 6 are open to anonymous clients"
        );
        held.push(slots.acquire(b, true).unwrap());
        held.push(slots.acquire(a, true).unwrap());
        assert!(slots.acquire(a, true).is_err(), "6 in all");
        held.truncate(1);
        assert!(slots.acquire(b, false).is_ok(), "dropped permits free their slots");

        let open = StreamSlots::new("watch", limits, false);
        let held: Vec<_> = (0..3).map(|_| open.acquire(a, false).unwrap()).collect();
        let more: Vec<_> = (0..3).map(|_| open.acquire(b, false).unwrap()).collect();
        assert_eq!(held.len() + more.len(), 6, "no token: nothing is reserved");
    }
}
