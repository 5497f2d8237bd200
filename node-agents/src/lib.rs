//! cairn-agents: the coordinator (runs only on the Raft leader: failure
//! detection, scheduling, reassignment) and the local agents every node runs
//! (registration, heartbeats, executing assigned tasks as actions).
//!
//! Nothing is implemented here yet; see issue "Coordinator and node agents".
