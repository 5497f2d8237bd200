//! The `node.stats` topic: every daemon publishes its machine's load every
//! `node_stats_interval_ms`, read from `/proc` and the first thermal zone.
//!
//! `{"cpu_percent": f64, "process_cpu_percent": f64, "rss_mib": f64,
//! "temperature_c": f64|null, "load1": f64, "uptime_s": f64, "version": str}`:
//! CPU busy share of the whole machine since the previous sample; this
//! daemon's own CPU use over the same interval, in top's convention (100 %
//! is one core busy); this daemon's resident memory, the SoC temperature
//! (null where the machine has no thermal zone, e.g. most containers), the
//! 1-minute load average, seconds since this daemon's stats publisher
//! started (the daemon's uptime) and the build it runs (`version+commit`).
//! A value that cannot be read (not Linux) is null too.

use std::time::Duration;

use serde_json::json;

use super::hub::Telemetry;
use super::NODE_STATS_TOPIC;
use cairn_raft::sync::AbortOnDrop;

const PROC_STAT: &str = "/proc/stat";
const PROC_SELF_STATUS: &str = "/proc/self/status";
const PROC_SELF_STAT: &str = "/proc/self/stat";
const PROC_LOADAVG: &str = "/proc/loadavg";
const THERMAL_ZONE0: &str = "/sys/class/thermal/thermal_zone0/temp";

/// CPU time counters from the `cpu` line of `/proc/stat`: (busy, total) jiffies.
pub(crate) fn parse_cpu_times(stat: &str) -> Option<(u64, u64)> {
    let line = stat.lines().find(|l| l.starts_with("cpu "))?;
    let fields: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .take(8) // user nice system idle iowait irq softirq steal (guest is inside user)
        .map(|f| f.parse().ok())
        .collect::<Option<_>>()?;
    if fields.len() < 4 {
        return None;
    }
    let total: u64 = fields.iter().sum();
    let idle = fields[3] + fields.get(4).copied().unwrap_or(0);
    Some((total.saturating_sub(idle), total))
}

/// Busy share between two samples, percent.
pub(crate) fn cpu_percent(prev: (u64, u64), now: (u64, u64)) -> Option<f64> {
    let total = now.1.checked_sub(prev.1)?;
    let busy = now.0.checked_sub(prev.0)?;
    (total > 0).then(|| (busy as f64 * 100.0 / total as f64).clamp(0.0, 100.0))
}

/// This process's CPU time, `utime + stime` of `/proc/self/stat`, in clock
/// ticks (the unit of `/proc/stat`'s counters).
pub(crate) fn parse_process_ticks(stat: &str) -> Option<u64> {
    // The command name (field 2) is in parentheses and may hold spaces or
    // parentheses itself: count fields from the last ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace();
    // After ')': state is field 3, so utime (14) and stime (15) are the
    // 12th and 13th.
    let utime: u64 = fields.nth(11)?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime + stime)
}

/// This process's CPU use between two samples, percent of one core: its
/// ticks over the machine's total ticks per core.
pub(crate) fn process_cpu_percent(prev: (u64, (u64, u64)), now: (u64, (u64, u64)), cores: usize) -> Option<f64> {
    let total = (now.1).1.checked_sub((prev.1).1)?;
    let mine = now.0.checked_sub(prev.0)?;
    (total > 0 && cores > 0).then(|| mine as f64 * 100.0 * cores as f64 / total as f64)
}

/// `VmRSS` of `/proc/self/status`, MiB.
pub(crate) fn parse_rss_mib(status: &str) -> Option<f64> {
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}

/// First field of `/proc/loadavg`.
pub(crate) fn parse_load1(loadavg: &str) -> Option<f64> {
    loadavg.split_whitespace().next()?.parse().ok()
}

/// A thermal zone's `temp` (millidegrees Celsius), °C.
pub(crate) fn parse_temperature_c(temp: &str) -> Option<f64> {
    let milli: f64 = temp.trim().parse().ok()?;
    Some(milli / 1000.0)
}

async fn read(path: &str) -> Option<String> {
    tokio::fs::read_to_string(path).await.ok()
}

fn round2(v: f64) -> f64 {
    (v * 100.0).round() / 100.0
}

/// Publish `node.stats` every `node_stats_interval_ms` (none if 0).
pub(crate) fn start_node_stats(telemetry: Telemetry) -> Option<AbortOnDrop> {
    let every = telemetry.settings().node_stats_interval_ms;
    if every == 0 {
        return None;
    }
    Some(AbortOnDrop::spawn(async move {
        let started = std::time::Instant::now();
        let cores = std::thread::available_parallelism().map_or(1, usize::from);
        let build = format!("{}+{}", crate::version::VERSION, crate::version::COMMIT);
        let mut prev = read(PROC_STAT).await.as_deref().and_then(parse_cpu_times);
        let mut prev_mine = read(PROC_SELF_STAT).await.as_deref().and_then(parse_process_ticks);
        let mut tick = tokio::time::interval(Duration::from_millis(every));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        loop {
            tick.tick().await;
            let now = read(PROC_STAT).await.as_deref().and_then(parse_cpu_times);
            let cpu = match (prev, now) {
                (Some(p), Some(n)) => cpu_percent(p, n),
                _ => None,
            };
            let mine = read(PROC_SELF_STAT).await.as_deref().and_then(parse_process_ticks);
            let process_cpu = match (prev_mine.zip(prev), mine.zip(now)) {
                (Some(p), Some(n)) => process_cpu_percent(p, n, cores),
                _ => None,
            };
            prev = now.or(prev);
            prev_mine = mine.or(prev_mine);
            let rss = read(PROC_SELF_STATUS).await.as_deref().and_then(parse_rss_mib);
            let load1 = read(PROC_LOADAVG).await.as_deref().and_then(parse_load1);
            let temperature = read(THERMAL_ZONE0).await.as_deref().and_then(parse_temperature_c);
            let payload = json!({
                "cpu_percent": cpu.map(round2),
                "process_cpu_percent": process_cpu.map(round2),
                "rss_mib": rss.map(round2),
                "temperature_c": temperature.map(round2),
                "load1": load1,
                "uptime_s": round2(started.elapsed().as_secs_f64()),
                "version": build,
            });
            if let Err(e) = telemetry.publish(NODE_STATS_TOPIC, payload) {
                tracing::debug!(error = %e, "node.stats not published");
            }
        }
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_files_parse() {
        let stat = "cpu  100 0 50 800 50 0 0 0 0 0\ncpu0 1 2 3 4\nintr 1\n";
        assert_eq!(parse_cpu_times(stat), Some((150, 1000)));
        assert_eq!(cpu_percent((150, 1000), (200, 1100)), Some(50.0));
        assert_eq!(cpu_percent((150, 1000), (150, 1000)), None, "no time passed");
        assert_eq!(parse_cpu_times("intr 1\n"), None);
        assert_eq!(parse_rss_mib("Name:\tcairn\nVmRSS:\t   20480 kB\n"), Some(20.0));
        assert_eq!(parse_rss_mib("Name:\tcairn\n"), None);
        assert_eq!(parse_load1("0.52 0.58 0.59 1/467 12345\n"), Some(0.52));
        assert_eq!(parse_temperature_c("48312\n"), Some(48.312));
        assert_eq!(parse_temperature_c("n/a"), None);
        // A command name with spaces and parentheses, as `/proc/self/stat` shows it.
        let me = "4242 (cairn (x) y) S 1 4242 4242 0 -1 4194560 100 0 0 0 70 30 0 0 20 0 9 0 5 1000 200";
        assert_eq!(parse_process_ticks(me), Some(100));
        assert_eq!(parse_process_ticks("garbage"), None);
        // 2 cores, 200 machine ticks (100 per core) of which this process took 50: half a core.
        assert_eq!(process_cpu_percent((100, (0, 1000)), (150, (0, 1200)), 2), Some(50.0));
        assert_eq!(process_cpu_percent((100, (0, 1000)), (150, (0, 1000)), 2), None);
    }

    #[cfg(target_os = "linux")]
    #[tokio::test]
    async fn this_machine_has_the_proc_files() {
        assert!(read(PROC_STAT).await.as_deref().and_then(parse_cpu_times).is_some());
        assert!(read(PROC_SELF_STATUS)
            .await
            .as_deref()
            .and_then(parse_rss_mib)
            .is_some());
        assert!(read(PROC_LOADAVG).await.as_deref().and_then(parse_load1).is_some());
        assert!(read(PROC_SELF_STAT)
            .await
            .as_deref()
            .and_then(parse_process_ticks)
            .is_some());
    }
}
