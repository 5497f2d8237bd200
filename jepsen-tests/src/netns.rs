//! `--net netns`: every node in a network namespace of its own, partitions
//! as nftables drop rules inside those namespaces (root only).
//!
//! Layout of one cluster (run id `R` = this process's pid and a counter,
//! in hex):
//!
//! ```text
//!  host ns: bridge cjRb, 10.231.K.254/24 ── the proxies listen here, the
//!     │                                      client and checker dial nodes
//!     ├── veth cjRh1 ══ cjRn1 in netns cairn-j-R-n1: 10.231.K.1 (node 1)
//!     ├── veth cjRh2 ══ cjRn2 in netns cairn-j-R-n2: 10.231.K.2 (node 2)
//!     └── …
//! ```
//!
//! Peer traffic still goes through the per-link proxies (now on the
//! bridge address), so `delay` and `flaky` keep working — they stay
//! proxy-only: this kernel has no `netem`. A cut link `i → j` becomes two
//! rules in node `i`'s namespace: drop TCP *to* the proxy port of `i → j`
//! (output) and *from* it (input). The kernel drops the packets: no
//! RST, no FIN, TCP retransmits into the void until the node's own
//! timeouts give up, exactly as with a pulled cable; healing deletes the
//! rules and the same connections may carry on. Clients reach each node's
//! API on its 10.231.K.i address, never cut (as with the proxies).
//!
//! Every namespace and the bridge are deleted when the cluster is dropped
//! (also on a panic's unwind), by [`cleanup_active`] (the binary's ctrl-c
//! handler), and by [`cleanup_leftovers`] at the start of the next run for
//! any whose owning process is gone.

use std::collections::BTreeMap;
use std::io::Write;
use std::process::Command;
use std::process::Stdio;
use std::sync::atomic::AtomicU32;
use std::sync::atomic::Ordering;
use std::sync::Mutex;

use crate::error::Error;

/// Prefix of every namespace this module creates.
pub const NS_PREFIX: &str = "cairn-j-";
/// Prefix of every link (bridge, veth) it creates: interface names are at
/// most 15 bytes, too short for [`NS_PREFIX`].
const LINK_PREFIX: &str = "cj";
/// First two octets of the node subnets (`10.231.K.0/24`).
const SUBNET: &str = "10.231";

/// Clusters alive in this process: run id → namespaces, for the ctrl-c
/// handler.
static ACTIVE: Mutex<BTreeMap<String, Vec<String>>> = Mutex::new(BTreeMap::new());
static NEXT_RUN: AtomicU32 = AtomicU32::new(0);

/// Why namespaces cannot be used here, if they cannot: not root, no `ip
/// netns`, no `nft`.
pub fn unavailable() -> Option<String> {
    if !crate::cluster::small_disks_possible() {
        return Some("not root".into());
    }
    let works = |cmd: &str, args: &[&str]| {
        Command::new(cmd)
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    if !works("ip", &["netns", "list"]) {
        return Some("`ip netns` is unavailable (iproute2)".into());
    }
    if !works("nft", &["--version"]) {
        return Some("`nft` is unavailable (apt-get install nftables)".into());
    }
    None
}

fn run_cmd(args: &[&str]) -> Result<String, Error> {
    let out = Command::new(args[0])
        .args(&args[1..])
        .stdin(Stdio::null())
        .output()
        .map_err(Error::io(format!("run {}", args.join(" "))))?;
    if !out.status.success() {
        return Err(Error::Setup {
            reason: format!(
                "`{}` failed: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr).trim()
            ),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Kill whatever still runs in namespace `ns`, then delete it.
fn delete_ns(ns: &str) {
    if let Ok(pids) = run_cmd(&["ip", "netns", "pids", ns]) {
        for pid in pids.split_whitespace() {
            let _ = Command::new("kill").args(["-9", pid]).status();
        }
    }
    let _ = run_cmd(&["ip", "netns", "del", ns]);
}

/// Delete run `run`'s bridge and the host ends of its veths. A deleted
/// namespace frees its veths only once nothing refers to it any more, and
/// a killed node's sockets still retransmitting into a cut link do for
/// minutes; deleting the host end deletes the pair at once.
fn delete_links(run: &str) {
    let Ok(links) = run_cmd(&["ip", "-o", "link", "show"]) else {
        return;
    };
    let ours = format!("{LINK_PREFIX}{run}");
    for name in links.lines().filter_map(link_name) {
        if name.starts_with(&ours) {
            let _ = run_cmd(&["ip", "link", "del", name]);
        }
    }
}

/// The interface name of a line of `ip -o link show`:
/// `7: cj0012ab01b: <BROADCAST,…` or `9: cj0012ab01h1@if8: <…`.
fn link_name(line: &str) -> Option<&str> {
    line.split(": ").nth(1).and_then(|n| n.split('@').next())
}

/// The owning pid encoded in a run id (`{pid:06x}{counter:02x}`).
fn owner(run: &str) -> Option<u32> {
    u32::from_str_radix(run.get(..6)?, 16).ok()
}

fn alive(pid: u32) -> bool {
    std::path::Path::new(&format!("/proc/{pid}")).exists()
}

/// Delete namespaces and links of earlier runs whose process is gone (a
/// `kill -9` of the suite, a crash). Quiet when there are none.
pub fn cleanup_leftovers() {
    let Ok(list) = run_cmd(&["ip", "netns", "list"]) else {
        return;
    };
    for name in list.lines().filter_map(|l| l.split_whitespace().next()) {
        let Some(run) = name.strip_prefix(NS_PREFIX) else {
            continue;
        };
        if owner(run).is_some_and(|p| !alive(p)) {
            tracing::warn!(ns = name, "deleting a namespace left over by an earlier run");
            delete_ns(name);
        }
    }
    let Ok(links) = run_cmd(&["ip", "-o", "link", "show"]) else {
        return;
    };
    for name in links.lines().filter_map(link_name) {
        let Some(run) = name.strip_prefix(LINK_PREFIX) else {
            continue;
        };
        if run.len() >= 9 && owner(run).is_some_and(|p| !alive(p)) {
            tracing::warn!(link = name, "deleting a link left over by an earlier run");
            let _ = run_cmd(&["ip", "link", "del", name]);
        }
    }
}

/// Delete every namespace of every cluster alive in this process (the
/// ctrl-c handler calls this before exiting).
pub fn cleanup_active() {
    let active = std::mem::take(&mut *ACTIVE.lock().unwrap_or_else(|e| e.into_inner()));
    for (run, namespaces) in active {
        for ns in namespaces {
            delete_ns(&ns);
        }
        delete_links(&run);
    }
}

/// The namespaces and bridge of one cluster; dropping it deletes them.
#[derive(Debug)]
pub struct NetnsNet {
    run: String,
    k: u8,
    namespaces: BTreeMap<u64, String>,
}

impl NetnsNet {
    /// Create the bridge and one namespace per node id (ids ≤ 253).
    pub fn create(ids: &[u64]) -> Result<Self, Error> {
        cleanup_leftovers();
        if ids.iter().any(|id| *id == 0 || *id > 253) {
            return Err(Error::Setup {
                reason: "netns mode supports node ids 1..=253".into(),
            });
        }
        let counter = NEXT_RUN.fetch_add(1, Ordering::Relaxed);
        let pid = std::process::id();
        let run = format!("{:06x}{:02x}", pid & 0xff_ffff, counter & 0xff);
        // A /24 nobody on this host uses (bounded: 250 candidates).
        let addrs = run_cmd(&["ip", "-o", "addr", "show"])?;
        let start = (pid + counter) % 250;
        let k = (0..250)
            .map(|i| ((start + i) % 250 + 1) as u8)
            .find(|k| !addrs.contains(&format!("{SUBNET}.{k}.")))
            .ok_or_else(|| Error::Setup {
                reason: format!("no free {SUBNET}.K.0/24 subnet"),
            })?;
        let mut net = Self {
            run,
            k,
            namespaces: BTreeMap::new(),
        };
        ACTIVE
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(net.run.clone(), Vec::new());
        // On any error below, dropping `net` removes what was made.
        let bridge = net.bridge();
        run_cmd(&["ip", "link", "add", &bridge, "type", "bridge"])?;
        run_cmd(&["ip", "addr", "add", &format!("{}/24", net.host_ip()), "dev", &bridge])?;
        run_cmd(&["ip", "link", "set", &bridge, "up"])?;
        for id in ids {
            let ns = format!("{NS_PREFIX}{}-n{id}", net.run);
            run_cmd(&["ip", "netns", "add", &ns])?;
            net.namespaces.insert(*id, ns.clone());
            ACTIVE
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .entry(net.run.clone())
                .or_default()
                .push(ns.clone());
            let host_end = format!("{LINK_PREFIX}{}h{id}", net.run);
            let ns_end = format!("{LINK_PREFIX}{}n{id}", net.run);
            run_cmd(&["ip", "link", "add", &host_end, "type", "veth", "peer", "name", &ns_end])?;
            run_cmd(&["ip", "link", "set", &ns_end, "netns", &ns])?;
            run_cmd(&["ip", "link", "set", &host_end, "master", &bridge, "up"])?;
            run_cmd(&[
                "ip",
                "-n",
                &ns,
                "addr",
                "add",
                &format!("{}/24", net.node_ip(*id)),
                "dev",
                &ns_end,
            ])?;
            run_cmd(&["ip", "-n", &ns, "link", "set", &ns_end, "up"])?;
            run_cmd(&["ip", "-n", &ns, "link", "set", "lo", "up"])?;
        }
        tracing::info!(run = %net.run, subnet = %format!("{SUBNET}.{}.0/24", net.k), "network namespaces ready");
        Ok(net)
    }

    fn bridge(&self) -> String {
        format!("{LINK_PREFIX}{}b", self.run)
    }

    /// The host's address on the bridge (where the proxies listen).
    pub fn host_ip(&self) -> String {
        format!("{SUBNET}.{}.254", self.k)
    }

    /// This cluster's run id (in its namespace and link names).
    pub fn run(&self) -> &str {
        &self.run
    }

    /// The first three octets of the node subnet, e.g. `10.231.17`.
    pub fn subnet_prefix(&self) -> String {
        format!("{SUBNET}.{}", self.k)
    }

    /// Node `id`'s address inside its namespace.
    pub fn node_ip(&self, id: u64) -> String {
        format!("{SUBNET}.{}.{id}", self.k)
    }

    /// Node `id`'s namespace.
    pub fn ns(&self, id: u64) -> Option<&str> {
        self.namespaces.get(&id).map(String::as_str)
    }

    /// Every namespace, by node id.
    pub fn namespaces(&self) -> &BTreeMap<u64, String> {
        &self.namespaces
    }

    /// Replace node `id`'s drop rules: TCP to and from the host's
    /// `ports` (the proxies of its cut links) is dropped; empty: nothing.
    pub fn set_cuts(&self, id: u64, ports: &[u16]) -> Result<(), Error> {
        let Some(ns) = self.ns(id) else { return Ok(()) };
        let mut script = String::from("flush ruleset\n");
        if !ports.is_empty() {
            let set = ports.iter().map(u16::to_string).collect::<Vec<_>>().join(", ");
            let host = self.host_ip();
            script.push_str(&format!(
                "table inet cairnj {{\n  chain out {{ type filter hook output priority 0; policy accept; ip daddr {host} tcp dport {{ {set} }} drop; }}\n  chain in {{ type filter hook input priority 0; policy accept; ip saddr {host} tcp sport {{ {set} }} drop; }}\n}}\n"
            ));
        }
        let mut child = Command::new("ip")
            .args(["netns", "exec", ns, "nft", "-f", "-"])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(Error::io(format!("run nft in {ns}")))?;
        if let Some(mut stdin) = child.stdin.take() {
            stdin
                .write_all(script.as_bytes())
                .map_err(Error::io(format!("write nft rules for {ns}")))?;
        }
        let out = child
            .wait_with_output()
            .map_err(Error::io(format!("run nft in {ns}")))?;
        if !out.status.success() {
            return Err(Error::Setup {
                reason: format!("nft in {ns}: {}", String::from_utf8_lossy(&out.stderr).trim()),
            });
        }
        Ok(())
    }

    /// The drop rules in node `id`'s namespace, as `nft list ruleset`
    /// prints them.
    pub fn rules(&self, id: u64) -> Result<String, Error> {
        let ns = self.ns(id).unwrap_or("");
        run_cmd(&["ip", "netns", "exec", ns, "nft", "list", "ruleset"])
    }
}

impl Drop for NetnsNet {
    fn drop(&mut self) {
        for ns in self.namespaces.values() {
            delete_ns(ns);
        }
        delete_links(&self.run);
        ACTIVE.lock().unwrap_or_else(|e| e.into_inner()).remove(&self.run);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_ids_name_their_owner() {
        assert_eq!(owner("00123a07"), Some(0x123a));
        assert_eq!(owner("zz"), None);
        assert!(alive(std::process::id()));
        assert_eq!(
            link_name("29: cj007da300h1@if28: <BROADCAST,MULTICAST,UP> mtu 1500"),
            Some("cj007da300h1")
        );
        assert_eq!(link_name("5: cj007da300b: <BROADCAST> mtu 1500"), Some("cj007da300b"));
    }
}
