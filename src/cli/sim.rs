//! `cairn sim`: the simulated rover world (run it, read it, break it).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use cairn::hal::sim::Fault;
use cairn::hal::sim::ServerConfig;
use cairn::hal::sim::World;
use cairn::hal::sim::WorldClient;
use cairn::hal::sim::WorldConfig;
use cairn::hal::sim::WorldServer;
use cairn::hal::sim::WorldStatus;
use cairn::hal::DeviceKind;
use clap::Args;
use clap::Subcommand;

/// Where the world listens (or is reached).
#[derive(Args, Clone)]
pub struct WorldAddr {
    /// The world's address.
    #[arg(long = "sim-addr", env = "CAIRN_SIM", default_value = "127.0.0.1:7700")]
    pub addr: SocketAddr,
}

#[derive(Subcommand)]
pub enum SimCmd {
    /// Run the world in the foreground until Ctrl-C, printing a status line
    /// every interval.
    Run {
        #[command(flatten)]
        at: WorldAddr,
        /// World description (JSON: seed, start pose, obstacles, noise, lidar;
        /// see examples/missions/rover-world.json). Default: an open field.
        #[arg(long)]
        world: Option<PathBuf>,
        /// Noise seed (overrides the file's).
        #[arg(long)]
        seed: Option<u64>,
        /// Status line period in ms (0: none).
        #[arg(long, default_value_t = 1000)]
        status_interval_ms: u64,
        /// Stop the rover if no command was accepted for this long, ms.
        #[arg(long, default_value_t = 500)]
        watchdog_ms: u64,
    },
    /// The world's state: true pose, velocity, drivetrain fence and epochs,
    /// faults.
    Status {
        #[command(flatten)]
        at: WorldAddr,
    },
    /// Inject a sensor fault: DEVICE is imu | gps | lidar | odometry; FAULT is
    /// none | failed | stuck | dropout:P | noise:FACTOR:SECONDS.
    Fault {
        #[command(flatten)]
        at: WorldAddr,
        /// The sensor.
        device: String,
        /// The fault.
        fault: String,
    },
    /// Press (on) or release (off) the e-stop.
    Estop {
        #[command(flatten)]
        at: WorldAddr,
        /// on | off.
        state: String,
    },
}

pub async fn sim(json: bool, cmd: SimCmd) -> anyhow::Result<()> {
    match cmd {
        SimCmd::Run {
            at,
            world,
            seed,
            status_interval_ms,
            watchdog_ms,
        } => run(at.addr, world, seed, status_interval_ms, watchdog_ms, json).await,
        SimCmd::Status { at } => {
            let s = connect(at.addr).await?.status().await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&s)?);
            } else {
                println!("{}", status_line(&s));
                for e in &s.epochs {
                    println!(
                        "  epoch {:>4}: {:>6} commands, t={:.1}s..{:.1}s",
                        e.epoch,
                        e.accepted,
                        e.first.as_secs_f64(),
                        e.last.as_secs_f64()
                    );
                }
            }
            Ok(())
        }
        SimCmd::Fault { at, device, fault } => {
            // The name the user typed (`lidar`), not the HAL's (`range`).
            let word = device.to_ascii_lowercase();
            let kind = if word == "lidar" { "range" } else { word.as_str() };
            let kind: DeviceKind = kind
                .parse()
                .map_err(|_| anyhow::anyhow!("unknown device {device:?}: expected imu | gps | lidar | odometry"))?;
            let fault = parse_fault(&fault)?;
            connect(at.addr).await?.inject_fault(kind, fault).await?;
            if json {
                println!("{}", serde_json::json!({ "device": word, "fault": fault_name(&fault) }));
            } else {
                println!("{word}: {}", fault_name(&fault));
            }
            Ok(())
        }
        SimCmd::Estop { at, state } => {
            let engaged = match state.as_str() {
                "on" => true,
                "off" => false,
                other => anyhow::bail!("e-stop state {other:?}: expected on | off"),
            };
            connect(at.addr).await?.set_estop(engaged).await?;
            let state = if engaged { "engaged" } else { "released" };
            if json {
                println!("{}", serde_json::json!({ "estop": state, "engaged": engaged }));
            } else {
                println!("e-stop {state}");
            }
            Ok(())
        }
    }
}

async fn connect(addr: SocketAddr) -> anyhow::Result<WorldClient> {
    WorldClient::connect(addr)
        .await
        .with_context(|| format!("connecting to the world at {addr} (is `cairn sim run` running?)"))
}

fn parse_fault(s: &str) -> anyhow::Result<Fault> {
    let parts: Vec<&str> = s.split(':').collect();
    let num = |v: &str, what: &str| -> anyhow::Result<f64> {
        v.parse::<f64>()
            .with_context(|| format!("fault {s:?}: {what} {v:?} is not a number"))
    };
    Ok(match parts.as_slice() {
        ["none"] => Fault::None,
        ["failed"] => Fault::Failed,
        ["stuck"] => Fault::Stuck,
        ["dropout", p] => Fault::Dropout {
            probability: num(p, "probability")?,
        },
        ["noise", f, d] => Fault::NoiseBurst {
            factor: num(f, "factor")?,
            duration_s: num(d, "duration")?,
        },
        _ => anyhow::bail!("fault {s:?}: expected none | failed | stuck | dropout:P | noise:FACTOR:SECONDS"),
    })
}

async fn run(
    addr: SocketAddr,
    world: Option<PathBuf>,
    seed: Option<u64>,
    status_interval_ms: u64,
    watchdog_ms: u64,
    json: bool,
) -> anyhow::Result<()> {
    let mut config = match &world {
        Some(path) => {
            let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
            serde_json::from_str::<WorldConfig>(&text).with_context(|| format!("parsing {}", path.display()))?
        }
        None => WorldConfig::default(),
    };
    if let Some(seed) = seed {
        config.seed = seed;
    }
    let world = World::new(config).context("world description")?;
    let server = WorldServer::bind(
        addr,
        world,
        ServerConfig {
            watchdog_ms,
            ..ServerConfig::default()
        },
    )
    .await
    .with_context(|| format!("binding the world to {addr}"))?;
    let status = server.status_reader();
    let listening = server.local_addr()?;
    if json {
        // One JSON object per line (NDJSON), then the status lines.
        println!("{}", serde_json::json!({ "listening": listening.to_string() }));
    } else {
        println!("world listening on {listening}");
    }
    if status_interval_ms > 0 {
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(status_interval_ms));
            loop {
                tick.tick().await;
                let s = status();
                if json {
                    match serde_json::to_string(&s) {
                        Ok(line) => println!("{line}"),
                        Err(e) => tracing::warn!(error = %e, "status not printable"),
                    }
                } else {
                    println!("{}", status_line(&s));
                }
            }
        });
    }
    server
        .run(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await?;
    Ok(())
}

/// One human line: time, true pose, speed, who drives, what is broken.
pub fn status_line(s: &WorldStatus) -> String {
    let faults: Vec<String> = s
        .faults
        .iter()
        .filter(|(_, f)| *f != Fault::None)
        .map(|(d, f)| format!("{}={}", cairn::hal::rover::sensor_name(*d), fault_name(f)))
        .collect();
    format!(
        "t={:6.1}s  pose=({:6.2}, {:6.2}) {:4.0}°  v={:4.2} m/s  epoch={} (accepted {}, rejected stale {})  collisions={}{}{}",
        s.time.as_secs_f64(),
        s.pose.x_m,
        s.pose.y_m,
        s.pose.heading_rad.to_degrees(),
        s.velocity.linear_mps,
        s.fence.current,
        s.fence.accepted,
        s.fence.rejected,
        s.collisions,
        if s.estop_engaged { "  E-STOP" } else { "" },
        if faults.is_empty() {
            String::new()
        } else {
            format!("  faults: {}", faults.join(" "))
        }
    )
}

fn fault_name(f: &Fault) -> String {
    match f {
        Fault::None => "none".into(),
        Fault::Failed => "failed".into(),
        Fault::Stuck => "stuck".into(),
        Fault::Dropout { probability } => format!("dropout:{probability}"),
        Fault::NoiseBurst { factor, duration_s } => format!("noise:{factor}:{duration_s:.1}"),
    }
}
