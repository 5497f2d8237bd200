//! The world process's server, and the two clients that talk to it.
//!
//! Several nodes may drive the same simulated rover (control moves between
//! them on failover), so the [`World`] lives in one process, the way Gazebo
//! serves ROS nodes, and nodes connect to it over loopback TCP:
//!
//! - [`WorldServer`] owns the world, steps it at a fixed rate on a
//!   `tokio::time::interval`, fences drive commands on their epoch, stops the
//!   rover when no accepted command has arrived for the watchdog period, and
//!   answers the [`protocol`](crate::sim::protocol) requests.
//! - [`SimHal`] is the node side: blocking device handles ([`SimImu`],
//!   [`SimDrive`], …) implementing the [`crate::device`] traits, so agents
//!   cannot tell it from real hardware.
//! - [`WorldClient`] is an async client for tools and tests: status, fault
//!   injection, e-stop.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;
use tokio::time::{Instant, MissedTickBehavior};
use tracing::{debug, info, warn};

use crate::device::{
    fingerprint, Device, DeviceKind, Drive, EStop, EStopReading, Gps, GpsFix, Health, HealthTracker, Imu, ImuReading,
    Odometry, OdometryReading, RangeScanner, Scan, StatusLed, VelocityCommand,
};
use crate::error::{Error, RemoteError};
use crate::sim::model::{Fault, World, WorldStatus};
use crate::sim::protocol::{
    decode_body, read_frame, read_frame_blocking, write_frame, write_frame_blocking, Request, Response,
    PROTOCOL_VERSION,
};

/// Locks a mutex, taking the data even if another thread panicked while
/// holding it: the world's state is plain data and stays usable.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// How the world server runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerConfig {
    /// World step period, ms (default 20 ms = 50 Hz: well above the agents'
    /// 10–20 Hz control rate, so commands take effect within one agent cycle).
    pub tick_ms: u64,
    /// Stop the rover if no command has been accepted for this long, ms
    /// (default 500 ms: several missed control cycles, but under half a metre
    /// of travel at 1 m/s).
    pub watchdog_ms: u64,
    /// Concurrent connections served; more are refused (default 32: a few
    /// per node for a handful of nodes plus tools).
    pub connections_max: usize,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            tick_ms: 20,
            watchdog_ms: 500,
            connections_max: 32,
        }
    }
}

impl ServerConfig {
    /// Checks the values once.
    pub fn validate(&self) -> Result<(), Error> {
        if self.tick_ms == 0 || self.tick_ms > 1_000 {
            return Err(Error::InvalidConfig {
                reason: format!("tick_ms must be in 1..=1000, got {}", self.tick_ms),
            });
        }
        if self.watchdog_ms < self.tick_ms {
            return Err(Error::InvalidConfig {
                reason: format!(
                    "watchdog_ms ({}) must be at least tick_ms ({})",
                    self.watchdog_ms, self.tick_ms
                ),
            });
        }
        if self.connections_max == 0 {
            return Err(Error::InvalidConfig {
                reason: "connections_max must be positive".to_string(),
            });
        }
        Ok(())
    }
}

/// The world plus what the server adds around it: the watchdog's memory.
/// Time comes in as an argument, so the watchdog can be tested without sockets
/// or a clock.
pub struct WorldService {
    world: World,
    watchdog: Duration,
    last_accepted_at: Option<Instant>,
}

impl WorldService {
    /// Wraps a world.
    pub fn new(world: World, watchdog: Duration) -> Self {
        Self {
            world,
            watchdog,
            last_accepted_at: None,
        }
    }

    /// The world, for inspection.
    pub fn world(&self) -> &World {
        &self.world
    }

    /// Steps the world by `dt` and applies the watchdog as of `now`.
    pub fn tick(&mut self, now: Instant, dt: Duration) {
        self.world.step(dt.as_secs_f64());
        let starved = self
            .last_accepted_at
            .is_none_or(|t| now.saturating_duration_since(t) > self.watchdog);
        if starved && self.world.is_moving() {
            self.world.watchdog_halt();
            warn!(
                watchdog_ms = self.watchdog.as_millis() as u64,
                "no drive command accepted in time; watchdog stopped the rover"
            );
        }
    }

    /// Answers one request as of `now`.
    pub fn handle(&mut self, req: Request, now: Instant) -> Response {
        let w = &mut self.world;
        let outcome = match req {
            Request::Hello => Ok(Response::Hello {
                version: PROTOCOL_VERSION,
            }),
            Request::ReadImu => w.read_imu().map(Response::Imu).map_err(|e| (e, DeviceKind::Imu)),
            Request::ReadGps => w.read_gps().map(Response::Gps).map_err(|e| (e, DeviceKind::Gps)),
            Request::ReadScan => w.scan().map(Response::Scan).map_err(|e| (e, DeviceKind::Range)),
            Request::ReadOdometry => w
                .read_odometry()
                .map(Response::Odometry)
                .map_err(|e| (e, DeviceKind::Odometry)),
            Request::ReadEStop => Ok(Response::EStop(w.read_estop())),
            Request::Drive(cmd) => match w.command(&cmd) {
                Ok(()) => {
                    self.last_accepted_at = Some(now);
                    Ok(Response::Done)
                }
                Err(e) => Err((e, DeviceKind::Drive)),
            },
            Request::SetLed { on } => {
                w.set_led(on);
                Ok(Response::Done)
            }
            Request::Status => Ok(Response::Status(w.status())),
            Request::InjectFault { device, fault } => w
                .inject_fault(device, fault)
                .map(|()| Response::Done)
                .map_err(|e| (e, device)),
            Request::SetEStop { engaged } => {
                w.set_estop(engaged);
                info!(engaged, "e-stop set");
                Ok(Response::Done)
            }
        };
        outcome.unwrap_or_else(|(e, device)| Response::Error(RemoteError::from_error(&e, device)))
    }
}

/// The world process's server.
pub struct WorldServer {
    listener: TcpListener,
    service: Arc<Mutex<WorldService>>,
    config: ServerConfig,
}

impl WorldServer {
    /// Binds `addr` (use `127.0.0.1:0` for an ephemeral port) and takes
    /// ownership of `world`.
    pub async fn bind(addr: impl tokio::net::ToSocketAddrs, world: World, config: ServerConfig) -> Result<Self, Error> {
        config.validate()?;
        let listener = TcpListener::bind(addr).await.map_err(|source| Error::Io {
            context: "binding the world server",
            source,
        })?;
        let service = WorldService::new(world, Duration::from_millis(config.watchdog_ms));
        Ok(Self {
            listener,
            service: Arc::new(Mutex::new(service)),
            config,
        })
    }

    /// The address actually bound.
    pub fn local_addr(&self) -> Result<SocketAddr, Error> {
        self.listener.local_addr().map_err(|source| Error::Io {
            context: "reading the bound address",
            source,
        })
    }

    /// A status snapshot, read in-process (for a `cairn sim` that prints its
    /// own status lines without a socket round trip).
    pub fn status_reader(&self) -> impl Fn() -> WorldStatus + Send + Sync + 'static {
        let service = Arc::clone(&self.service);
        move || lock(&service).world().status()
    }

    /// Serves until `shutdown` completes: ticks the world, accepts
    /// connections, and answers requests. Returns when `shutdown` resolves;
    /// open connections are dropped then.
    pub async fn run(self, shutdown: impl Future<Output = ()>) -> Result<(), Error> {
        let tick = Duration::from_millis(self.config.tick_ms);
        let mut ticker = tokio::time::interval(tick);
        // Delay, not Burst: after a stall we do not want a flurry of steps
        // racing the watchdog; the world simply runs a little behind wall time.
        ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let permits = Arc::new(Semaphore::new(self.config.connections_max));
        let mut connections = JoinSet::new();
        let addr = self.local_addr()?;
        info!(%addr, tick_ms = self.config.tick_ms, watchdog_ms = self.config.watchdog_ms, "world server running");
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                _ = &mut shutdown => break,
                _ = ticker.tick() => {
                    lock(&self.service).tick(Instant::now(), tick);
                }
                accepted = self.listener.accept() => match accepted {
                    Ok((stream, peer)) => match Arc::clone(&permits).try_acquire_owned() {
                        Ok(permit) => {
                            let service = Arc::clone(&self.service);
                            connections.spawn(serve_connection(stream, peer, service, permit));
                        }
                        Err(_) => {
                            warn!(%peer, max = self.config.connections_max, "too many connections; refusing");
                        }
                    },
                    Err(e) => {
                        // Usually out of file descriptors: keep serving the
                        // connections we have, and do not spin on accept.
                        warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                },
                Some(_) = connections.join_next(), if !connections.is_empty() => {}
            }
        }
        connections.abort_all();
        info!("world server stopped");
        Ok(())
    }
}

#[tracing::instrument(skip_all, fields(%peer))]
async fn serve_connection(
    mut stream: TcpStream,
    peer: SocketAddr,
    service: Arc<Mutex<WorldService>>,
    _permit: OwnedSemaphorePermit,
) {
    // Requests are tiny and latency-bound; Nagle would hold them back.
    let _ = stream.set_nodelay(true);
    debug!("connection opened");
    loop {
        let body = match read_frame(&mut stream).await {
            Ok(Some(body)) => body,
            Ok(None) => {
                debug!("connection closed by peer");
                return;
            }
            Err(e) => {
                warn!(error = %e, "bad frame; closing connection");
                return;
            }
        };
        let req: Request = match decode_body(&body) {
            Ok(req) => req,
            Err(e) => {
                warn!(error = %e, "undecodable request; closing connection");
                return;
            }
        };
        let resp = lock(&service).handle(req, Instant::now());
        if let Err(e) = write_frame(&mut stream, &resp).await {
            debug!(error = %e, "could not answer; closing connection");
            return;
        }
    }
}

/// Default time a client waits for the world to answer. Loopback answers in
/// well under a millisecond; a second means the world is gone or wedged.
pub const CLIENT_TIMEOUT_MS: u64 = 1_000;

fn expect_done(resp: Response, request: &'static str) -> Result<(), Error> {
    match resp {
        Response::Done => Ok(()),
        Response::Error(e) => Err(e.into()),
        _ => Err(Error::UnexpectedResponse { request }),
    }
}

/// An async client of the world, for tools, tests, and `cairn sim` commands.
pub struct WorldClient {
    stream: TcpStream,
    timeout: Duration,
    /// Set after a timeout or I/O error: the stream may hold a late answer,
    /// so it can no longer be trusted to pair requests with responses.
    broken: bool,
}

impl WorldClient {
    /// Connects to a world server.
    pub async fn connect(addr: impl tokio::net::ToSocketAddrs) -> Result<Self, Error> {
        let timeout = Duration::from_millis(CLIENT_TIMEOUT_MS);
        let stream = tokio::time::timeout(timeout, TcpStream::connect(addr))
            .await
            .map_err(|_| Error::Timeout {
                context: "connecting to the world",
                ms: CLIENT_TIMEOUT_MS,
            })?
            .map_err(|source| Error::Io {
                context: "connecting to the world",
                source,
            })?;
        let _ = stream.set_nodelay(true);
        Ok(Self {
            stream,
            timeout,
            broken: false,
        })
    }

    /// Sends one request and waits (bounded) for its response.
    pub async fn request(&mut self, req: &Request) -> Result<Response, Error> {
        if self.broken {
            return Err(Error::ConnectionClosed);
        }
        let exchange = async {
            write_frame(&mut self.stream, req).await?;
            match read_frame(&mut self.stream).await? {
                Some(body) => decode_body::<Response>(&body),
                None => Err(Error::ConnectionClosed),
            }
        };
        let outcome = match tokio::time::timeout(self.timeout, exchange).await {
            Ok(outcome) => outcome,
            Err(_) => Err(Error::Timeout {
                context: "a world response",
                ms: self.timeout.as_millis() as u64,
            }),
        };
        if outcome.is_err() {
            self.broken = true;
        }
        outcome
    }

    /// The server's protocol version.
    pub async fn hello(&mut self) -> Result<u32, Error> {
        match self.request(&Request::Hello).await? {
            Response::Hello { version } => Ok(version),
            _ => Err(Error::UnexpectedResponse { request: "hello" }),
        }
    }

    /// A world snapshot.
    pub async fn status(&mut self) -> Result<WorldStatus, Error> {
        match self.request(&Request::Status).await? {
            Response::Status(s) => Ok(s),
            Response::Error(e) => Err(e.into()),
            _ => Err(Error::UnexpectedResponse { request: "status" }),
        }
    }

    /// Offers a fenced drive command.
    pub async fn drive(&mut self, cmd: VelocityCommand) -> Result<(), Error> {
        let resp = self.request(&Request::Drive(cmd)).await?;
        expect_done(resp, "drive")
    }

    /// Injects a fault into a sensor ([`Fault::None`] clears it).
    pub async fn inject_fault(&mut self, device: DeviceKind, fault: Fault) -> Result<(), Error> {
        let resp = self.request(&Request::InjectFault { device, fault }).await?;
        expect_done(resp, "inject_fault")
    }

    /// Presses or releases the e-stop.
    pub async fn set_estop(&mut self, engaged: bool) -> Result<(), Error> {
        let resp = self.request(&Request::SetEStop { engaged }).await?;
        expect_done(resp, "set_estop")
    }
}

/// One blocking connection, re-opened on the next call after it breaks (so a
/// restarted world process is picked up without restarting the node).
struct Link {
    addr: SocketAddr,
    timeout: Duration,
    stream: Option<std::net::TcpStream>,
}

impl Link {
    fn open(addr: SocketAddr, timeout: Duration) -> Result<std::net::TcpStream, Error> {
        let io = |source| Error::Io {
            context: "connecting to the world",
            source,
        };
        let stream = std::net::TcpStream::connect_timeout(&addr, timeout).map_err(io)?;
        stream.set_read_timeout(Some(timeout)).map_err(io)?;
        stream.set_write_timeout(Some(timeout)).map_err(io)?;
        let _ = stream.set_nodelay(true);
        Ok(stream)
    }

    fn call(&mut self, req: &Request) -> Result<Response, Error> {
        let stream = match &mut self.stream {
            Some(s) => s,
            None => self.stream.insert(Self::open(self.addr, self.timeout)?),
        };
        let outcome = write_frame_blocking(stream, req)
            .and_then(|()| read_frame_blocking(stream))
            .and_then(|body| decode_body::<Response>(&body));
        match outcome {
            Ok(resp) => Ok(resp),
            Err(e) => {
                // The stream may hold half a frame or a late answer: drop it.
                self.stream = None;
                Err(match e {
                    Error::Timeout { context, .. } => Error::Timeout {
                        context,
                        ms: self.timeout.as_millis() as u64,
                    },
                    other => other,
                })
            }
        }
    }
}

/// The simulated HAL of one node: hands out device handles that all share one
/// blocking connection to the world server. Cheap to clone.
#[derive(Clone)]
pub struct SimHal {
    link: Arc<Mutex<Link>>,
}

impl SimHal {
    /// Connects to the world at `addr` and checks the protocol version, with
    /// the default timeout ([`CLIENT_TIMEOUT_MS`]).
    pub fn connect(addr: SocketAddr) -> Result<Self, Error> {
        Self::connect_with_timeout(addr, Duration::from_millis(CLIENT_TIMEOUT_MS))
    }

    /// As [`SimHal::connect`], with a timeout for connecting and for each answer.
    pub fn connect_with_timeout(addr: SocketAddr, timeout: Duration) -> Result<Self, Error> {
        let mut link = Link {
            addr,
            timeout,
            stream: Some(Link::open(addr, timeout)?),
        };
        match link.call(&Request::Hello)? {
            Response::Hello { version } if version == PROTOCOL_VERSION => {}
            Response::Hello { version } => {
                return Err(Error::InvalidConfig {
                    reason: format!("world speaks protocol {version}, this node speaks {PROTOCOL_VERSION}"),
                })
            }
            _ => return Err(Error::UnexpectedResponse { request: "hello" }),
        }
        Ok(Self {
            link: Arc::new(Mutex::new(link)),
        })
    }

    /// The world's status (blocking), e.g. for its origin.
    pub fn status(&self) -> Result<WorldStatus, Error> {
        match lock(&self.link).call(&Request::Status)? {
            Response::Status(s) => Ok(s),
            Response::Error(e) => Err(e.into()),
            _ => Err(Error::UnexpectedResponse { request: "status" }),
        }
    }

    fn handle(&self, kind: DeviceKind) -> SimDevice {
        SimDevice {
            kind,
            link: Arc::clone(&self.link),
            health: HealthTracker::default(),
        }
    }

    /// The IMU.
    pub fn imu(&self) -> SimImu {
        SimImu(self.handle(DeviceKind::Imu))
    }
    /// The GPS.
    pub fn gps(&self) -> SimGps {
        SimGps(self.handle(DeviceKind::Gps))
    }
    /// The lidar.
    pub fn range(&self) -> SimRange {
        SimRange(self.handle(DeviceKind::Range))
    }
    /// The wheel encoders.
    pub fn odometry(&self) -> SimOdometry {
        SimOdometry(self.handle(DeviceKind::Odometry))
    }
    /// The drivetrain.
    pub fn drive(&self) -> SimDrive {
        SimDrive(self.handle(DeviceKind::Drive))
    }
    /// The e-stop input.
    pub fn estop(&self) -> SimEStop {
        SimEStop(self.handle(DeviceKind::EStop))
    }
    /// The status LED.
    pub fn led(&self) -> SimLed {
        SimLed(self.handle(DeviceKind::Led))
    }
}

/// What every simulated device handle holds.
struct SimDevice {
    kind: DeviceKind,
    link: Arc<Mutex<Link>>,
    health: HealthTracker,
}

impl SimDevice {
    fn call(&mut self, req: &Request) -> Result<Response, Error> {
        let outcome = lock(&self.link).call(req);
        match outcome {
            Ok(Response::Error(e)) => Err(e.into()),
            other => other,
        }
    }

    /// A read: the response is unpacked by `pick`, and the outcome feeds the
    /// health tracker (stuck detection included).
    fn read<T: serde::Serialize>(
        &mut self,
        req: Request,
        pick: impl FnOnce(Response) -> Option<T>,
    ) -> Result<T, Error> {
        self.read_judged(req, pick, |_| true)
    }

    /// As [`SimDevice::read`]; `informative` says whether a reading carries
    /// enough to call a repeat of it stuck (a lidar sweep with no return in
    /// range reads the same every time in an open field, legitimately).
    fn read_judged<T: serde::Serialize>(
        &mut self,
        req: Request,
        pick: impl FnOnce(Response) -> Option<T>,
        informative: impl FnOnce(&T) -> bool,
    ) -> Result<T, Error> {
        let name = req.name();
        let outcome = self
            .call(&req)
            .and_then(|resp| pick(resp).ok_or(Error::UnexpectedResponse { request: name }));
        match &outcome {
            Ok(v) if !informative(v) => self.health.record_ok(None),
            Ok(v) => self.health.record_ok(fingerprint_without_stamp(v)),
            Err(e) => self.health.record_err(e),
        }
        outcome
    }

    /// An actuator call: refusals (stale epoch, e-stop, bad values) say
    /// nothing about the device's health; link failures do.
    fn act(&mut self, req: Request) -> Result<(), Error> {
        let name = req.name();
        let outcome = self.call(&req).and_then(|resp| expect_done(resp, name));
        match &outcome {
            Ok(()) => self.health.record_ok(None),
            Err(Error::StaleEpoch { .. } | Error::EStopEngaged | Error::InvalidCommand { .. }) => {
                self.health.record_ok(None)
            }
            Err(e) => self.health.record_err(e),
        }
        outcome
    }
}

/// Fingerprint of a reading without its timestamp, so a stuck value shows up
/// as identical even though every read is freshly stamped. Every reading
/// type's first field is its `stamp` (one `u64`, a varint in postcard), so
/// the fingerprint is the serialised reading after that varint.
fn fingerprint_without_stamp<T: serde::Serialize>(v: &T) -> Option<Vec<u8>> {
    let bytes = fingerprint(v)?;
    // The stamp is a u64 varint at the front: skip it (a varint ends at the
    // first byte without the high bit).
    let end = bytes.iter().position(|b| b & 0x80 == 0)? + 1;
    Some(bytes[end..].to_vec())
}

macro_rules! sim_device {
    ($name:ident, $doc:literal) => {
        #[doc = $doc]
        pub struct $name(SimDevice);

        impl Device for $name {
            fn kind(&self) -> DeviceKind {
                self.0.kind
            }
            fn health(&self) -> Health {
                self.0.health.health()
            }
        }
    };
}

sim_device!(SimImu, "The simulated IMU.");
sim_device!(SimGps, "The simulated GPS.");
sim_device!(SimRange, "The simulated lidar.");
sim_device!(SimOdometry, "The simulated wheel encoders.");
sim_device!(SimDrive, "The simulated drivetrain.");
sim_device!(SimEStop, "The simulated e-stop input.");
sim_device!(SimLed, "The simulated status LED.");

impl Imu for SimImu {
    fn read(&mut self) -> Result<ImuReading, Error> {
        self.0.read(Request::ReadImu, |r| match r {
            Response::Imu(v) => Some(v),
            _ => None,
        })
    }
}

impl Gps for SimGps {
    fn read(&mut self) -> Result<GpsFix, Error> {
        self.0.read(Request::ReadGps, |r| match r {
            Response::Gps(v) => Some(v),
            _ => None,
        })
    }
}

impl RangeScanner for SimRange {
    fn scan(&mut self) -> Result<Scan, Error> {
        self.0.read_judged(
            Request::ReadScan,
            |r| match r {
                Response::Scan(v) => Some(v),
                _ => None,
            },
            |scan| scan.ranges_m.iter().any(|r| r.is_finite()),
        )
    }
}

impl Odometry for SimOdometry {
    fn read(&mut self) -> Result<OdometryReading, Error> {
        self.0.read(Request::ReadOdometry, |r| match r {
            Response::Odometry(v) => Some(v),
            _ => None,
        })
    }
}

impl EStop for SimEStop {
    fn read(&mut self) -> Result<EStopReading, Error> {
        let outcome = self.0.call(&Request::ReadEStop).and_then(|r| match r {
            Response::EStop(v) => Ok(v),
            _ => Err(Error::UnexpectedResponse { request: "read_estop" }),
        });
        // An e-stop legitimately reads the same value for hours: no stuck check.
        match &outcome {
            Ok(_) => self.0.health.record_ok(None),
            Err(e) => self.0.health.record_err(e),
        }
        outcome
    }
}

impl Drive for SimDrive {
    fn command(&mut self, cmd: &VelocityCommand) -> Result<(), Error> {
        cmd.validate()?;
        self.0.act(Request::Drive(*cmd))
    }
}

impl StatusLed for SimLed {
    fn set(&mut self, on: bool) -> Result<(), Error> {
        self.0.act(Request::SetLed { on })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sim::model::WorldConfig;

    fn service() -> WorldService {
        let world = World::new(WorldConfig::default()).unwrap_or_else(|e| panic!("{e}"));
        WorldService::new(world, Duration::from_millis(500))
    }

    fn drive(epoch: u64) -> Request {
        Request::Drive(VelocityCommand {
            epoch,
            linear_mps: 1.0,
            angular_rps: 0.0,
        })
    }

    #[tokio::test(start_paused = true)]
    async fn watchdog_halts_only_after_the_period() {
        let mut s = service();
        let tick = Duration::from_millis(20);
        let t0 = Instant::now();
        assert_eq!(s.handle(drive(1), t0), Response::Done);
        // 480 ms of ticks without a new command: still within the watchdog.
        for i in 1..=24 {
            s.tick(t0 + tick * i, tick);
        }
        assert!(s.world().is_moving(), "stopped early: {:?}", s.world().status());
        // A stale command does not feed the watchdog.
        let _ = s.handle(drive(2), t0 + tick * 24);
        let _ = s.handle(drive(1), t0 + tick * 25);
        for i in 25..=49 {
            s.tick(t0 + tick * i, tick);
        }
        assert!(
            s.world().is_moving(),
            "epoch 2 accepted at 480 ms must keep it going through 980 ms"
        );
        for i in 50..=80 {
            s.tick(t0 + tick * i, tick);
        }
        let st = s.world().status();
        assert!(!s.world().is_moving() && st.watchdog_stops == 1, "{st:?}");
        assert_eq!((st.fence.accepted, st.fence.rejected), (2, 1));
    }

    #[test]
    fn stamp_is_excluded_from_fingerprint() {
        let a = EStopReading {
            stamp: crate::device::Timestamp { nanos: 1 },
            engaged: true,
        };
        let b = EStopReading {
            stamp: crate::device::Timestamp { nanos: 1 << 40 },
            engaged: true,
        };
        assert_eq!(fingerprint_without_stamp(&a), fingerprint_without_stamp(&b));
    }
}
