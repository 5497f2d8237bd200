//! The wall clock a node stamps proposals with: the one clock seam.
//!
//! Leases and timeouts use monotonic time (`tokio::time`); only the
//! leader's proposal stamps (the state machine's `ApplyCtx::timestamp_ms`)
//! and the coordinator's back-off decisions read the wall clock, and both
//! read it through the node's [`WallClock`], set in
//! [`RaftNodeConfig::clock`](crate::RaftNodeConfig::clock). The system
//! clock by default; tests shift it to play a clock that jumped.

use std::time::SystemTime;
use std::time::UNIX_EPOCH;

/// The variable [`WallClock::from_test_env`] reads. **Test only**: the
/// chaos suite starts a node whose clock jumped with it (docs/CHAOS.md,
/// "Clock jumps").
pub const TEST_OFFSET_VAR: &str = "CAIRN_CLOCK_OFFSET_MS";

/// A wall clock: the system's, shifted by a fixed offset (zero but in
/// tests).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WallClock {
    offset_ms: i64,
}

impl WallClock {
    /// The system clock.
    pub const SYSTEM: WallClock = WallClock { offset_ms: 0 };

    /// The system clock shifted by `offset_ms` (signed). Test only.
    pub fn shifted(offset_ms: i64) -> Self {
        Self { offset_ms }
    }

    /// The system clock shifted by [`TEST_OFFSET_VAR`] if it is set to a
    /// number. **Test only**, and read only at the binary's edge (the
    /// facade's config), never inside a running node.
    pub fn from_test_env() -> Self {
        let offset_ms = std::env::var(TEST_OFFSET_VAR)
            .ok()
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0);
        Self { offset_ms }
    }

    /// The offset from the system clock, ms.
    pub fn offset_ms(&self) -> i64 {
        self.offset_ms
    }

    /// Now, in ms since the Unix epoch.
    pub fn now_ms(&self) -> u64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0)
            .saturating_add_signed(self.offset_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_shifted_clock_is_ahead_or_behind_by_its_offset() {
        let hour = 3_600_000;
        let system = WallClock::SYSTEM.now_ms();
        let ahead = WallClock::shifted(hour).now_ms();
        let behind = WallClock::shifted(-hour).now_ms();
        assert!(ahead >= system + hour as u64 && ahead < system + hour as u64 + 60_000);
        assert!(behind <= system - hour as u64 + 60_000 && behind + 60_000 > system - hour as u64);
    }
}
