//! cairn-jepsen: a fault-injection suite of real `cairn` processes with
//! nemeses (partitions, kill -9, pause, membership change, disk faults), an
//! operation history and a linearizability checker.
//!
//! Nothing is implemented here yet; see the jepsen-tests issue.
