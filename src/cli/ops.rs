//! Operations commands: `cairn backup`, `cairn restore`, `cairn recover`,
//! `cairn node drain|undrain`.
//!
//! `backup` and `drain` talk to a running cluster; `restore` and `recover` work
//! offline on a stopped node's data dir (RocksDB's lock refuses a running
//! one). See docs/OPERATIONS.md for the procedures around them.

use std::io::Write;
use std::path::Path;
use std::path::PathBuf;

use anyhow::Context;
use cairn::client::Client;
use cairn::config::NodeConfig;
use cairn::drain::DrainResult;
use cairn::raft::Backup;
use cairn::raft::Member;
use cairn::state::Mission;
use clap::Args;
use clap::Subcommand;

#[derive(Subcommand)]
pub enum CheckCmd {
    /// Compare every member's replicated state at one applied index (like
    /// `etcdctl endpoint hashkv`). Exits 0 if all are equal, 2 naming the
    /// diverged member(s) if not, 1 if a member could not be compared.
    Consistency {
        /// Rounds to try for one index every member answers at.
        #[arg(long, default_value_t = 6)]
        attempts: u32,
        /// Per round, how long a member may take to reach that index (ms).
        #[arg(long, default_value_t = 2000)]
        wait_ms: u64,
    },
}

/// `cairn backup FILE`.
#[derive(Args)]
pub struct BackupArgs {
    /// Where to write the backup (written to FILE.tmp, synced, then renamed).
    pub file: PathBuf,
}

/// Identity and addresses of the node a data dir is for: from `--config`,
/// overridden by flags.
#[derive(Args)]
pub struct NodeTarget {
    /// The node's TOML config (id, addresses, data dir); flags override it.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// The node's id.
    #[arg(long)]
    pub id: Option<u64>,
    /// Its data directory.
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Its transport address, as peers will dial it.
    #[arg(long)]
    pub raft_addr: Option<String>,
    /// Its admin API address.
    #[arg(long)]
    pub api_addr: Option<String>,
}

/// `cairn restore FILE ...`.
#[derive(Args)]
pub struct RestoreArgs {
    /// A file written by `cairn backup`.
    pub file: PathBuf,
    #[command(flatten)]
    pub node: NodeTarget,
}

/// `cairn recover --force-new-cluster ...`.
#[derive(Args)]
pub struct RecoverArgs {
    /// Make this stopped node the only voter of a new cluster, keeping its
    /// whole log (required: this discards the old membership for good).
    #[arg(long, required = true)]
    pub force_new_cluster: bool,
    #[command(flatten)]
    pub node: NodeTarget,
}

struct Resolved {
    id: u64,
    data_dir: PathBuf,
    member: Option<Member>,
}

impl NodeTarget {
    /// Flags over the config file; addresses are required only if
    /// `need_addresses`.
    fn resolve(&self, need_addresses: bool) -> anyhow::Result<Resolved> {
        let file = match &self.config {
            Some(path) => Some(NodeConfig::from_file_with_id(path, self.id)?),
            None => None,
        };
        let id = self
            .id
            .or(file.as_ref().map(|c| c.id))
            .context("--id (or --config) is required")?;
        let data_dir = self
            .data_dir
            .clone()
            .or(file.as_ref().map(|c| c.data_dir.clone()))
            .context("--data-dir (or --config) is required")?;
        let raft_addr = self.raft_addr.clone().or(file.as_ref().map(|c| c.raft_addr.clone()));
        let api_addr = self.api_addr.clone().or(file.as_ref().map(|c| c.api_addr.clone()));
        let member = match (raft_addr, api_addr) {
            (Some(raft_addr), Some(api_addr)) => Some(Member { raft_addr, api_addr }),
            (None, None) if !need_addresses => None,
            _ => anyhow::bail!("give both --raft-addr and --api-addr (or --config): the new membership records them"),
        };
        Ok(Resolved { id, data_dir, member })
    }
}

fn write_synced(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    let mut f = std::fs::File::create(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
    f.write_all(bytes)
        .and_then(|()| f.sync_all())
        .with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("renaming {} to {}", tmp.display(), path.display()))?;
    // The rename is durable only once the directory is: without this, a
    // power cut right after "backup written" can leave the old name (or
    // none) on disk.
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .with_context(|| format!("syncing directory {}", dir.display()))?;
    Ok(())
}

fn time_text(ms: u64) -> String {
    super::out::when(ms)
}

pub async fn backup(client: &Client, out_json: bool, args: BackupArgs) -> anyhow::Result<()> {
    let bytes = client.get_bytes("/v1/backup").await?;
    // Check what came before keeping it: a backup that does not load is
    // worse than none.
    let backup = Backup::decode(&bytes).context("the node sent an unusable backup")?;
    <Mission as cairn::state::StateMachine>::restore(&backup.state).context("the backed-up state does not load")?;
    write_synced(&args.file, &bytes)?;
    if out_json {
        println!(
            "{}",
            serde_json::json!({
                "file": args.file, "bytes": bytes.len(), "index": backup.index, "term": backup.term,
                "taken_by": backup.taken_by, "taken_at_ms": backup.taken_at_ms,
            })
        );
    } else {
        println!(
            "backup of index {} (term {}) from node {} at {} written to {} ({} bytes)",
            backup.index,
            backup.term,
            backup.taken_by,
            time_text(backup.taken_at_ms),
            args.file.display(),
            bytes.len()
        );
    }
    Ok(())
}

pub async fn restore(out_json: bool, args: RestoreArgs) -> anyhow::Result<()> {
    let target = args.node.resolve(true)?;
    let bytes = std::fs::read(&args.file).with_context(|| format!("reading {}", args.file.display()))?;
    let backup = Backup::decode(&bytes)?;
    let member = target.member.clone().context("addresses are required")?;
    let dir = target.data_dir.clone();
    let id = target.id;
    let b = backup.clone();
    let m = member.clone();
    let report = tokio::task::spawn_blocking(move || cairn::raft::restore_backup::<Mission>(&dir, id, m, &b))
        .await
        .context("restore task")??;
    if out_json {
        println!(
            "{}",
            serde_json::json!({
                "node_id": report.node_id, "index": report.index, "term": report.term,
                "data_dir": target.data_dir, "member": member,
                "taken_by": backup.taken_by, "taken_at_ms": backup.taken_at_ms,
            })
        );
        return Ok(());
    }
    println!(
        "restored the backup of index {} (taken by node {} at {}) into {} as node {}, the only voter of a new cluster",
        report.index,
        backup.taken_by,
        time_text(backup.taken_at_ms),
        target.data_dir.display(),
        report.node_id
    );
    println!(
        "next: start it with `cairn node run --id {id} --raft-addr {} --api-addr {} --data-dir {}`,\n      then add the other nodes (empty data dirs) with `cairn member add ID --raft-addr .. --api-addr ..` and `cairn member promote ID`",
        member.raft_addr,
        member.api_addr,
        target.data_dir.display()
    );
    Ok(())
}

pub async fn recover(out_json: bool, args: RecoverArgs) -> anyhow::Result<()> {
    anyhow::ensure!(args.force_new_cluster, "only --force-new-cluster is supported");
    let target = args.node.resolve(false)?;
    let (dir, id, member) = (target.data_dir.clone(), target.id, target.member.clone());
    let report = tokio::task::spawn_blocking(move || cairn::raft::force_new_cluster::<Mission>(&dir, id, member))
        .await
        .context("recovery task")??;
    if out_json {
        println!(
            "{}",
            serde_json::json!({
                "node_id": report.node_id, "member": report.member, "previous_voters": report.previous_voters,
                "snapshot_index": report.snapshot_index, "committed_index": report.committed_index,
                "last_index": report.last_index, "kept_beyond_commit": report.kept_beyond_commit,
            })
        );
        return Ok(());
    }
    let others: Vec<String> = report
        .previous_voters
        .iter()
        .filter(|v| **v != report.node_id)
        .map(u64::to_string)
        .collect();
    println!(
        "node {} is now the only voter of a new cluster, with everything up to index {} (it knew index {} committed; {} later entr{} kept)",
        report.node_id,
        report.last_index,
        report
            .committed_index
            .map(|c| c.to_string())
            .unwrap_or_else(|| "none".into()),
        report.kept_beyond_commit,
        if report.kept_beyond_commit == 1 { "y" } else { "ies" }
    );
    if !others.is_empty() {
        println!(
            "WARNING: the old voters {} must never start again with their old data: wipe their data dirs first (they could elect a leader of their own)",
            others.join(", ")
        );
    }
    println!(
        "next: start node {} as before (raft {}, api {}), then add new or wiped nodes with `cairn member add` and `cairn member promote`",
        report.node_id, report.member.raft_addr, report.member.api_addr
    );
    Ok(())
}

pub async fn drain(client: &Client, out_json: bool, id: u64, draining: bool) -> anyhow::Result<()> {
    let verb = if draining { "drain" } else { "undrain" };
    let r: serde_json::Value = client
        .call(reqwest::Method::POST, &format!("/v1/nodes/{id}/{verb}"), None::<&()>)
        .await?
        .unwrap_or_default();
    if out_json {
        println!("{}", serde_json::to_string_pretty(&r)?);
        return Ok(());
    }
    if !draining {
        println!("node {id} takes new tasks again");
        return Ok(());
    }
    let r: DrainResult = super::out::typed(r, "a drain's result")?;
    match r.leader {
        Some(l) if l == id => {
            println!("node {id} takes no new tasks; it still leads: no other voter is up to take over")
        }
        Some(l) => println!("node {id} takes no new tasks; node {l} leads"),
        None => println!("node {id} takes no new tasks; no leader is known right now"),
    }
    Ok(())
}

/// `cairn check consistency` found replicas whose state differs at one
/// index: the process exits 2 (1 is "could not compare").
#[derive(Debug, thiserror::Error)]
#[error("replicas diverged at applied index {index}: member(s) {members:?} hold a different state; see docs/OPERATIONS.md, \"When replicas diverge\"")]
pub struct Diverged {
    /// The compared index.
    pub index: u64,
    /// The odd members.
    pub members: Vec<u64>,
}

/// `cairn check consistency`.
pub async fn check_consistency(
    client: &Client,
    out_json: bool,
    opts: &cairn::check::CheckOptions,
) -> anyhow::Result<()> {
    let report = cairn::check::check_consistency(client, opts).await?;
    if out_json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        println!("state hashes at applied index {}:", report.index);
        println!("{:<4} {:<28} {:<66} VERDICT", "ID", "ENDPOINT", "SHA-256");
        for m in &report.members {
            let verdict = if report.diverged.contains(&m.id) {
                "DIVERGED".to_string()
            } else if let Some(e) = &m.error {
                format!("not compared: {e}")
            } else {
                "ok".to_string()
            };
            println!(
                "{:<4} {:<28} {:<66} {verdict}",
                m.id,
                m.endpoint,
                m.sha256.as_deref().unwrap_or("-")
            );
        }
    }
    if !report.diverged.is_empty() {
        return Err(Diverged {
            index: report.index,
            members: report.diverged.clone(),
        }
        .into());
    }
    if !report.unanswered.is_empty() {
        anyhow::bail!(
            "member(s) {:?} could not be compared at index {} (see above); the others agree",
            report.unanswered,
            report.index
        );
    }
    if !out_json {
        println!("all {} members agree", report.members.len());
    }
    Ok(())
}
