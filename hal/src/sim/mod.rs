//! The simulated rover.
//!
//! # Layout
//! - [`model`]: the [`World`]: differential-drive kinematics, noisy sensors,
//!   obstacles, fault injection. Pure; time advances only through
//!   [`World::step`].
//! - [`protocol`]: the request/response messages and length-prefixed postcard
//!   framing between nodes and the world process.
//! - [`world`]: [`WorldServer`] (the `cairn sim` process), [`SimHal`] (the
//!   node side, implementing the device traits) and [`WorldClient`] (async,
//!   for tools and tests).
//!
//! A node connects with `SimHal::connect(addr)` and then uses `hal.imu()`,
//! `hal.drive()`, … exactly like real hardware.

pub mod model;
pub mod protocol;
pub mod world;

pub use model::{
    EpochUse, Fault, LidarConfig, NoiseConfig, World, WorldConfig, WorldStatus, EPOCH_LOG_MAX, GRAVITY_MPS2,
    LIDAR_BEAMS_MAX, OBSTACLES_MAX,
};
pub use protocol::{Request, Response, FRAME_BYTES_MAX, PROTOCOL_VERSION};
pub use world::{
    ServerConfig, SimDrive, SimEStop, SimGps, SimHal, SimImu, SimLed, SimOdometry, SimRange, WorldClient, WorldServer,
    WorldService, CLIENT_TIMEOUT_MS,
};
