//! Integration tests for cairn-hal: one binary, a module per area, tests
//! named by priority (t510 first).

mod ekf;
mod faults;
mod harness;
mod rover;
mod world_server;
