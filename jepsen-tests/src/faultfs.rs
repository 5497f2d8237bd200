//! A fault filesystem: a FUSE passthrough over a backing directory that
//! remembers what was written but not yet fsynced, so that on command
//! (**cut**) it can drop all of it, as a power cut drops a disk's page
//! cache. It also delays fsyncs (a slow SD card, "the leader's slower
//! disk") and can fail them with `EIO`.
//!
//! `cairn-jepsen faultfs --backing DIR --mount DIR --control SOCKET
//! [--fsync-delay SPEC]` mounts one; the `power` nemesis gives every node's
//! data dir its own (docs/CHAOS.md, "Power cuts").
//!
//! # The model
//! Writes go to the backing file at once (reads are plain passthrough), and
//! an **undo record** per file keeps what a cut must restore: the file's
//! size at its last sync and the pre-image of every 4 KiB page below that
//! size overwritten since. An append (the WAL, new SSTs) costs no copy at
//! all: the cut truncates it back. `fsync`/`fdatasync` of a file, once its
//! (possibly delayed) completion is answered, makes durable what had been
//! written when the call began: the record is dropped, or, when the file
//! only grew past that point meanwhile, kept for the tail written during
//! the sync. Writes that overlapped the file below that point during the
//! sync are counted durable too (an over-approximation: a disk may persist
//! unsynced data at any time, so this never invents a loss).
//!
//! Metadata: a file **created** since the last sync of it or of its
//! directory is deleted by a cut (created, written, never synced: gone);
//! `mkdir`, `rename`, `unlink`, `rmdir` are durable at once (ext4's journal
//! usually commits them within seconds; we do not model losing them).
//! `fallocate(KEEP_SIZE)` (RocksDB's WAL preallocation) changes no content.
//!
//! A cut also **powers the disk off**: until `on`, every write, create,
//! fsync or metadata change fails with `EIO`, so nothing the killed
//! process still had in flight lands after the cut. Fsyncs whose delay was
//! running at the cut complete with `EIO` and make nothing durable.
//!
//! Every open is `direct_io` and attributes/entries have a TTL of 0, so the
//! kernel caches no file data or sizes that a cut would make stale.
//!
//! # Control protocol
//! One line per request on the Unix socket, one line back (`ok …` or
//! `error …`): `ping`, `cut` (drop unsynced data, power off; answers what
//! was dropped), `on`, `delay SPEC`, `stall MS` (every fsync begun in the
//! next MS ms ends no earlier), `eio PER_MILLE`, `stats`.

use std::collections::BTreeMap;
use std::collections::BinaryHeap;
use std::collections::HashMap;
use std::ffi::OsStr;
use std::fs::File;
use std::fs::OpenOptions;
use std::io::BufRead;
use std::io::BufReader;
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::os::unix::fs::MetadataExt;
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::io::AsRawFd;
use std::path::Path;
use std::path::PathBuf;
use std::sync::mpsc;
use std::sync::Arc;
use std::sync::Mutex;
use std::time::Duration;
use std::time::Instant;
use std::time::SystemTime;

use fuser::FileAttr;
use fuser::FileType;
use fuser::Filesystem;
use fuser::MountOption;
use fuser::ReplyAttr;
use fuser::ReplyCreate;
use fuser::ReplyData;
use fuser::ReplyDirectory;
use fuser::ReplyEmpty;
use fuser::ReplyEntry;
use fuser::ReplyOpen;
use fuser::ReplyStatfs;
use fuser::ReplyWrite;
use fuser::Request;
use fuser::TimeOrNow;
use rand::rngs::StdRng;
use rand::Rng;
use rand::SeedableRng;

use crate::error::Error;

const PAGE: u64 = 4096;
/// Attributes and entries are never cached by the kernel: a cut changes
/// files behind its back.
const TTL: Duration = Duration::ZERO;

/// How long fsyncs take.
#[derive(Clone, Debug, PartialEq)]
pub enum DelaySpec {
    /// At once.
    None,
    /// Uniform in `[lo, hi]` ms (`15..60ms`; `5ms` is `5..5ms`).
    Range {
        /// Shortest, ms.
        lo_ms: f64,
        /// Longest, ms.
        hi_ms: f64,
    },
    /// A cheap SD card: log-normal with p50 5 ms and p99 80 ms (capped at
    /// 500 ms), and with probability 1/500 per fsync a 2 s stall of the
    /// whole device (every fsync begun during it ends no earlier).
    SdCard,
}

impl DelaySpec {
    /// Parse `none`, `sd-card`, `15..60ms`, `20ms`.
    pub fn parse(s: &str) -> Result<Self, Error> {
        let s = s.trim();
        let bad = || Error::Invalid {
            field: "fsync-delay",
            reason: format!("{s:?}: expected none, sd-card, LO..HIms or Nms"),
        };
        match s {
            "none" | "0" | "0ms" => return Ok(DelaySpec::None),
            "sd-card" | "sdcard" => return Ok(DelaySpec::SdCard),
            _ => {}
        }
        let body = s.strip_suffix("ms").ok_or_else(bad)?;
        let (lo, hi) = match body.split_once("..") {
            Some((a, b)) => (a, b),
            None => (body, body),
        };
        let lo: f64 = lo.trim().parse().map_err(|_| bad())?;
        let hi: f64 = hi.trim().parse().map_err(|_| bad())?;
        if !(0.0..=60_000.0).contains(&lo) || hi < lo || hi > 60_000.0 {
            return Err(bad());
        }
        Ok(DelaySpec::Range { lo_ms: lo, hi_ms: hi })
    }

    /// Its name, as [`DelaySpec::parse`] reads it.
    pub fn name(&self) -> String {
        match self {
            DelaySpec::None => "none".into(),
            DelaySpec::SdCard => "sd-card".into(),
            DelaySpec::Range { lo_ms, hi_ms } => format!("{lo_ms}..{hi_ms}ms"),
        }
    }
}

/// The delay model of one disk: the spec, its RNG, and a device stall in
/// progress.
struct Delays {
    spec: DelaySpec,
    rng: StdRng,
    stall_until: Option<Instant>,
}

impl Delays {
    /// When an fsync begun `now` completes.
    fn due(&mut self, now: Instant) -> Instant {
        let ms = match &self.spec {
            DelaySpec::None => 0.0,
            DelaySpec::Range { lo_ms, hi_ms } => {
                if hi_ms > lo_ms {
                    self.rng.random_range(*lo_ms..=*hi_ms)
                } else {
                    *lo_ms
                }
            }
            DelaySpec::SdCard => {
                if self.rng.random_range(0..500) == 0 {
                    self.stall_until = Some(now + Duration::from_secs(2));
                }
                // Box–Muller: a standard normal; sigma = ln(80/5) / z(0.99).
                let u1: f64 = self.rng.random_range(f64::EPSILON..1.0);
                let u2: f64 = self.rng.random_range(0.0..1.0);
                let z = (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos();
                (5.0 * (z * (16f64.ln() / 2.326)).exp()).min(500.0)
            }
        };
        let due = now + Duration::from_secs_f64(ms / 1000.0);
        match self.stall_until {
            Some(s) if s > due => s,
            _ => due,
        }
    }
}

/// A sync of one file in progress: what it will make durable.
struct InFlight {
    id: u64,
    /// The file's size when the sync began.
    size_at_start: u64,
    /// The lowest offset written or truncated to since it began.
    low: u64,
}

/// What a cut must restore in one file.
#[derive(Default)]
struct Dirty {
    /// Size at the last sync.
    orig_size: u64,
    /// Pre-images of pages (index → bytes below `orig_size`) overwritten
    /// since the last sync.
    saved: BTreeMap<u64, Vec<u8>>,
    /// Created since the last sync of it or its directory: a cut deletes it.
    created: bool,
    syncs: Vec<InFlight>,
}

impl Dirty {
    fn unsynced_bytes(&self, size: u64) -> u64 {
        size.saturating_sub(self.orig_size) + self.saved.values().map(|p| p.len() as u64).sum::<u64>()
    }
}

struct Inode {
    /// Relative to the backing dir ("" for the root).
    path: PathBuf,
}

struct State {
    backing: PathBuf,
    inodes: HashMap<u64, Inode>,
    by_backing: HashMap<(u64, u64), u64>,
    next_ino: u64,
    handles: HashMap<u64, (u64, Arc<File>)>,
    next_fh: u64,
    dirty: HashMap<u64, Dirty>,
    /// Bumped by every cut: syncs begun before it make nothing durable.
    epoch: u64,
    powered: bool,
    /// Files opened through the kernel's page cache (mmap works; a cut
    /// would leave stale pages, so it is refused): the benchmark's mode.
    page_cache: bool,
    next_sync: u64,
    eio_per_mille: u32,
    stats: Stats,
}

/// Counters, for `stats` and the tests.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct Stats {
    /// Writes served.
    pub writes: u64,
    /// Fsyncs (file and directory) answered ok.
    pub fsyncs: u64,
    /// Fsyncs failed with EIO (injected, or by a cut).
    pub fsyncs_failed: u64,
    /// Cuts.
    pub cuts: u64,
    /// Files deleted by cuts (created, never synced).
    pub files_dropped: u64,
    /// Files rolled back by cuts.
    pub files_rolled_back: u64,
    /// Bytes of unsynced data dropped by cuts.
    pub bytes_dropped: u64,
    /// Total fsync delay imposed, ms.
    pub delay_ms_total: u64,
}

fn errno(e: &std::io::Error) -> i32 {
    e.raw_os_error().unwrap_or(libc::EIO)
}

fn kind_of(m: &std::fs::Metadata) -> FileType {
    let ft = m.file_type();
    if ft.is_dir() {
        FileType::Directory
    } else if ft.is_symlink() {
        FileType::Symlink
    } else {
        FileType::RegularFile
    }
}

fn attr(ino: u64, m: &std::fs::Metadata) -> FileAttr {
    let t = |s: i64, ns: i64| {
        if s >= 0 {
            SystemTime::UNIX_EPOCH + Duration::new(s as u64, ns as u32)
        } else {
            SystemTime::UNIX_EPOCH
        }
    };
    FileAttr {
        ino,
        size: m.size(),
        blocks: m.blocks(),
        atime: t(m.atime(), m.atime_nsec()),
        mtime: t(m.mtime(), m.mtime_nsec()),
        ctime: t(m.ctime(), m.ctime_nsec()),
        crtime: t(m.ctime(), m.ctime_nsec()),
        kind: kind_of(m),
        perm: (m.mode() & 0o7777) as u16,
        nlink: m.nlink() as u32,
        uid: m.uid(),
        gid: m.gid(),
        rdev: m.rdev() as u32,
        blksize: m.blksize() as u32,
        flags: 0,
    }
}

impl State {
    fn full(&self, rel: &Path) -> PathBuf {
        if rel.as_os_str().is_empty() {
            self.backing.clone()
        } else {
            self.backing.join(rel)
        }
    }

    fn path_of(&self, ino: u64) -> Option<PathBuf> {
        self.inodes.get(&ino).map(|i| i.path.clone())
    }

    fn child(&self, parent: u64, name: &OsStr) -> Option<PathBuf> {
        self.inodes.get(&parent).map(|i| i.path.join(name))
    }

    /// The FUSE inode of the backing file at `rel`, assigned on first sight.
    fn ino_for(&mut self, rel: &Path, m: &std::fs::Metadata) -> u64 {
        let key = (m.dev(), m.ino());
        let ino = match self.by_backing.get(&key) {
            Some(i) => *i,
            None => {
                let i = self.next_ino;
                self.next_ino += 1;
                self.by_backing.insert(key, i);
                i
            }
        };
        self.inodes.insert(
            ino,
            Inode {
                path: rel.to_path_buf(),
            },
        );
        ino
    }

    fn file_for(&self, ino: u64, fh: Option<u64>) -> Option<Arc<File>> {
        if let Some((_, f)) = fh.and_then(|fh| self.handles.get(&fh)) {
            return Some(f.clone());
        }
        self.handles.values().find(|(i, _)| *i == ino).map(|(_, f)| f.clone())
    }

    /// Before bytes `[from, to)` of `ino` change: start its undo record
    /// (size `size` now) and save the pre-image of every page below the
    /// last synced size not saved yet.
    fn before_change(&mut self, ino: u64, f: &File, size: u64, from: u64, to: u64) -> std::io::Result<()> {
        let d = self.dirty.entry(ino).or_insert_with(|| Dirty {
            orig_size: size,
            ..Default::default()
        });
        for s in &mut d.syncs {
            s.low = s.low.min(from);
        }
        let end = to.min(d.orig_size);
        if from >= end {
            return Ok(());
        }
        for page in from / PAGE..end.div_ceil(PAGE) {
            if d.saved.contains_key(&page) {
                continue;
            }
            let start = page * PAGE;
            let len = (d.orig_size - start).min(PAGE) as usize;
            let mut buf = vec![0u8; len];
            let mut got = 0;
            while got < len {
                match f.read_at(&mut buf[got..], start + got as u64)? {
                    0 => break,
                    n => got += n,
                }
            }
            buf.truncate(got);
            d.saved.insert(page, buf);
        }
        Ok(())
    }

    /// Drop every unsynced change; returns (files deleted, files rolled
    /// back, bytes dropped).
    /// What an open answers: `direct_io`, unless in page-cache mode.
    fn open_flags(&self) -> u32 {
        if self.page_cache {
            0
        } else {
            fuser::consts::FOPEN_DIRECT_IO
        }
    }

    fn cut(&mut self) -> (u64, u64, u64) {
        let (mut deleted, mut rolled, mut bytes) = (0, 0, 0);
        let dirty = std::mem::take(&mut self.dirty);
        for (ino, d) in dirty {
            let Some(rel) = self.path_of(ino) else { continue };
            let path = self.full(&rel);
            let size = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
            if d.created {
                bytes += size;
                if std::fs::remove_file(&path).is_ok() {
                    deleted += 1;
                }
                continue;
            }
            bytes += d.unsynced_bytes(size);
            let Ok(f) = OpenOptions::new().write(true).open(&path) else {
                continue;
            };
            for (page, pre) in &d.saved {
                let _ = f.write_all_at(pre, page * PAGE);
            }
            let _ = f.set_len(d.orig_size);
            rolled += 1;
        }
        self.epoch += 1;
        self.powered = false;
        self.stats.cuts += 1;
        self.stats.files_dropped += deleted;
        self.stats.files_rolled_back += rolled;
        self.stats.bytes_dropped += bytes;
        (deleted, rolled, bytes)
    }

    /// A sync of `ino` begun now: remember what it covers.
    fn begin_sync(&mut self, ino: u64, size: u64) -> u64 {
        let id = self.next_sync;
        self.next_sync += 1;
        if let Some(d) = self.dirty.get_mut(&ino) {
            d.syncs.push(InFlight {
                id,
                size_at_start: size,
                low: u64::MAX,
            });
        }
        id
    }

    /// Sync `id` of `ino` completed: what was written when it began is
    /// durable (and whatever overlapped that since, see the module docs).
    fn end_sync(&mut self, ino: u64, id: u64, size_now: u64) {
        let Some(d) = self.dirty.get_mut(&ino) else { return };
        let Some(pos) = d.syncs.iter().position(|s| s.id == id) else {
            return;
        };
        let s = d.syncs.remove(pos);
        if s.low >= s.size_at_start && size_now > s.size_at_start {
            // Only appended past the synced point meanwhile: that tail
            // stays unsynced.
            d.orig_size = s.size_at_start;
            d.saved.clear();
            d.created = false;
            for o in &mut d.syncs {
                o.low = o.low.max(s.size_at_start);
            }
        } else if d.syncs.is_empty() {
            self.dirty.remove(&ino);
        } else {
            d.orig_size = size_now;
            d.saved.clear();
            d.created = false;
        }
    }
}

/// A job for the timer thread: answer an fsync when it is due.
struct SyncJob {
    due: Instant,
    started: Instant,
    ino: Option<u64>,
    id: u64,
    epoch: u64,
    reply: ReplyEmpty,
}

impl PartialEq for SyncJob {
    fn eq(&self, o: &Self) -> bool {
        self.due == o.due
    }
}
impl Eq for SyncJob {}
impl PartialOrd for SyncJob {
    fn partial_cmp(&self, o: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for SyncJob {
    fn cmp(&self, o: &Self) -> std::cmp::Ordering {
        o.due.cmp(&self.due)
    }
}

/// The shared core: the filesystem state, the delay model and the timer.
pub struct Core {
    state: Mutex<State>,
    delays: Mutex<Delays>,
    jobs: Mutex<Option<mpsc::Sender<SyncJob>>>,
}

impl Core {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Open files through the page cache from now on (see [`serve`]).
    pub fn set_page_cache(&self) {
        self.lock().page_cache = true;
    }

    /// Drop every unsynced change and power off (module docs).
    pub fn cut(&self) -> String {
        if self.lock().page_cache {
            return "error no cut in page-cache mode: the kernel's cached pages would outlive it".into();
        }
        let (deleted, rolled, bytes) = self.lock().cut();
        format!("ok cut: {deleted} files deleted, {rolled} rolled back, {bytes} bytes dropped")
    }

    /// Power on after a cut.
    pub fn on(&self) {
        self.lock().powered = true;
    }

    /// Change the fsync delay.
    pub fn set_delay(&self, spec: DelaySpec) {
        let mut d = self.delays.lock().unwrap_or_else(|e| e.into_inner());
        d.spec = spec;
        d.stall_until = None;
    }

    /// Stall the whole device for `ms` from now: every fsync begun until
    /// then ends no earlier (the `sd-card` model's 2 s stall, on demand).
    pub fn stall(&self, ms: u64) {
        let mut d = self.delays.lock().unwrap_or_else(|e| e.into_inner());
        d.stall_until = Some(Instant::now() + Duration::from_millis(ms));
    }

    /// Fail this many fsyncs per thousand with EIO.
    pub fn set_eio(&self, per_mille: u32) {
        self.lock().eio_per_mille = per_mille.min(1000);
    }

    /// The counters.
    pub fn stats(&self) -> Stats {
        self.lock().stats.clone()
    }

    /// One control request, one answer line.
    pub fn control(&self, line: &str) -> String {
        let mut words = line.split_whitespace();
        match (words.next(), words.next()) {
            (Some("ping"), None) => "ok".into(),
            (Some("cut"), None) => self.cut(),
            (Some("on"), None) => {
                self.on();
                "ok on".into()
            }
            (Some("delay"), Some(spec)) => match DelaySpec::parse(spec) {
                Ok(s) => {
                    let name = s.name();
                    self.set_delay(s);
                    format!("ok delay {name}")
                }
                Err(e) => format!("error {e}"),
            },
            (Some("eio"), Some(n)) => match n.parse() {
                Ok(n) => {
                    self.set_eio(n);
                    format!("ok eio {n}/1000")
                }
                Err(_) => "error eio wants a number per thousand".into(),
            },
            (Some("stall"), Some(ms)) => match ms.parse::<u64>() {
                Ok(ms) if ms <= 60_000 => {
                    self.stall(ms);
                    format!("ok stall {ms}ms")
                }
                _ => "error stall wants a duration in ms, at most 60000".into(),
            },
            (Some("stats"), None) => format!("ok {}", serde_json::to_string(&self.stats()).unwrap_or_default()),
            _ => format!("error unknown request {line:?}"),
        }
    }

    /// Complete (or fail) a sync whose time has come.
    fn finish(&self, job: SyncJob) {
        let started = job.started;
        let mut st = self.lock();
        if st.epoch != job.epoch || !st.powered {
            st.stats.fsyncs_failed += 1;
            drop(st);
            job.reply.error(libc::EIO);
            return;
        }
        if let Some(ino) = job.ino {
            let size = st
                .path_of(ino)
                .and_then(|p| std::fs::metadata(st.full(&p)).ok())
                .map_or(0, |m| m.len());
            st.end_sync(ino, job.id, size);
        }
        st.stats.fsyncs += 1;
        st.stats.delay_ms_total += started.elapsed().as_millis() as u64;
        drop(st);
        job.reply.ok();
    }

    fn timer(self: Arc<Self>, rx: mpsc::Receiver<SyncJob>) {
        let mut heap: BinaryHeap<SyncJob> = BinaryHeap::new();
        loop {
            let now = Instant::now();
            while heap.peek().is_some_and(|j| j.due <= now) {
                if let Some(job) = heap.pop() {
                    self.finish(job);
                }
            }
            let got = match heap.peek() {
                Some(j) => rx.recv_timeout(j.due.saturating_duration_since(now)),
                None => rx.recv().map_err(|_| mpsc::RecvTimeoutError::Disconnected),
            };
            match got {
                Ok(job) => heap.push(job),
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    // Unmounting: answer what is left.
                    for job in heap.drain() {
                        self.finish(job);
                    }
                    return;
                }
            }
        }
    }
}

/// The FUSE side.
pub struct FaultFs {
    core: Arc<Core>,
}

impl FaultFs {
    fn sync(&self, ino: Option<u64>, reply: ReplyEmpty) {
        let now = Instant::now();
        let mut st = self.core.lock();
        if !st.powered {
            st.stats.fsyncs_failed += 1;
            drop(st);
            return reply.error(libc::EIO);
        }
        let eio = st.eio_per_mille;
        if eio > 0
            && self
                .core
                .delays
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .rng
                .random_range(0..1000)
                < eio
        {
            st.stats.fsyncs_failed += 1;
            drop(st);
            return reply.error(libc::EIO);
        }
        let id = match ino {
            Some(ino) => {
                let size = st
                    .path_of(ino)
                    .and_then(|p| std::fs::metadata(st.full(&p)).ok())
                    .map_or(0, |m| m.len());
                st.begin_sync(ino, size)
            }
            None => 0,
        };
        let epoch = st.epoch;
        drop(st);
        let due = self.core.delays.lock().unwrap_or_else(|e| e.into_inner()).due(now);
        let job = SyncJob {
            due,
            started: now,
            ino,
            id,
            epoch,
            reply,
        };
        if due <= now {
            return self.core.finish(job);
        }
        let tx = self.core.jobs.lock().unwrap_or_else(|e| e.into_inner()).clone();
        match tx {
            Some(tx) => {
                if let Err(mpsc::SendError(job)) = tx.send(job) {
                    self.core.finish(job);
                }
            }
            None => self.core.finish(job),
        }
    }

    fn entry_reply(&self, rel: PathBuf, reply: ReplyEntry) {
        let mut st = self.core.lock();
        match std::fs::symlink_metadata(st.full(&rel)) {
            Ok(m) => {
                let ino = st.ino_for(&rel, &m);
                reply.entry(&TTL, &attr(ino, &m), 0);
            }
            Err(e) => reply.error(errno(&e)),
        }
    }
}

impl Filesystem for FaultFs {
    fn lookup(&mut self, _req: &Request<'_>, parent: u64, name: &OsStr, reply: ReplyEntry) {
        let Some(rel) = self.core.lock().child(parent, name) else {
            return reply.error(libc::ENOENT);
        };
        self.entry_reply(rel, reply);
    }

    fn getattr(&mut self, _req: &Request<'_>, ino: u64, fh: Option<u64>, reply: ReplyAttr) {
        let st = self.core.lock();
        let m = match fh.and_then(|fh| st.handles.get(&fh)) {
            Some((_, f)) => f.metadata(),
            None => match st.path_of(ino) {
                Some(p) => std::fs::symlink_metadata(st.full(&p)),
                None => return reply.error(libc::ENOENT),
            },
        };
        match m {
            Ok(m) => reply.attr(&TTL, &attr(ino, &m)),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn setattr(
        &mut self,
        _req: &Request<'_>,
        ino: u64,
        mode: Option<u32>,
        _uid: Option<u32>,
        _gid: Option<u32>,
        size: Option<u64>,
        _atime: Option<TimeOrNow>,
        _mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        fh: Option<u64>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<u32>,
        reply: ReplyAttr,
    ) {
        let mut st = self.core.lock();
        let Some(rel) = st.path_of(ino) else {
            return reply.error(libc::ENOENT);
        };
        let path = st.full(&rel);
        if (size.is_some() || mode.is_some()) && !st.powered {
            return reply.error(libc::EIO);
        }
        if let Some(mode) = mode {
            if let Err(e) = std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode & 0o7777)) {
                return reply.error(errno(&e));
            }
        }
        if let Some(new) = size {
            let f = match st.file_for(ino, fh) {
                Some(f) => f,
                None => match OpenOptions::new().read(true).write(true).open(&path) {
                    Ok(f) => Arc::new(f),
                    Err(e) => return reply.error(errno(&e)),
                },
            };
            let cur = f.metadata().map(|m| m.len()).unwrap_or(0);
            if new != cur {
                if let Err(e) = st.before_change(ino, &f, cur, new.min(cur), cur.max(new)) {
                    return reply.error(errno(&e));
                }
                if let Err(e) = f.set_len(new) {
                    return reply.error(errno(&e));
                }
            }
        }
        // Through an open handle if there is one: the file may be unlinked.
        let m = match st.file_for(ino, fh) {
            Some(f) => f.metadata(),
            None => std::fs::symlink_metadata(&path),
        };
        match m {
            Ok(m) => reply.attr(&TTL, &attr(ino, &m)),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn mkdir(&mut self, _req: &Request<'_>, parent: u64, name: &OsStr, mode: u32, umask: u32, reply: ReplyEntry) {
        let (rel, full, powered) = {
            let st = self.core.lock();
            let Some(rel) = st.child(parent, name) else {
                return reply.error(libc::ENOENT);
            };
            let full = st.full(&rel);
            (rel, full, st.powered)
        };
        if !powered {
            return reply.error(libc::EIO);
        }
        if let Err(e) = std::fs::create_dir(&full) {
            return reply.error(errno(&e));
        }
        let _ = std::fs::set_permissions(&full, std::fs::Permissions::from_mode(mode & !umask & 0o7777));
        self.entry_reply(rel, reply);
    }

    fn unlink(&mut self, _req: &Request<'_>, parent: u64, name: &OsStr, reply: ReplyEmpty) {
        let mut st = self.core.lock();
        let Some(rel) = st.child(parent, name) else {
            return reply.error(libc::ENOENT);
        };
        if !st.powered {
            return reply.error(libc::EIO);
        }
        let full = st.full(&rel);
        let meta = std::fs::symlink_metadata(&full);
        match std::fs::remove_file(&full) {
            Ok(()) => {
                if let Ok(m) = meta {
                    if m.nlink() <= 1 {
                        if let Some(ino) = st.by_backing.remove(&(m.dev(), m.ino())) {
                            st.dirty.remove(&ino);
                        }
                    }
                }
                reply.ok()
            }
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn rmdir(&mut self, _req: &Request<'_>, parent: u64, name: &OsStr, reply: ReplyEmpty) {
        let mut st = self.core.lock();
        let Some(rel) = st.child(parent, name) else {
            return reply.error(libc::ENOENT);
        };
        if !st.powered {
            return reply.error(libc::EIO);
        }
        let full = st.full(&rel);
        let meta = std::fs::symlink_metadata(&full);
        match std::fs::remove_dir(&full) {
            Ok(()) => {
                if let Ok(m) = meta {
                    st.by_backing.remove(&(m.dev(), m.ino()));
                }
                reply.ok()
            }
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn rename(
        &mut self,
        _req: &Request<'_>,
        parent: u64,
        name: &OsStr,
        newparent: u64,
        newname: &OsStr,
        flags: u32,
        reply: ReplyEmpty,
    ) {
        let mut st = self.core.lock();
        let (Some(from), Some(to)) = (st.child(parent, name), st.child(newparent, newname)) else {
            return reply.error(libc::ENOENT);
        };
        if !st.powered {
            return reply.error(libc::EIO);
        }
        if flags != 0 {
            // RENAME_NOREPLACE / RENAME_EXCHANGE: RocksDB uses neither.
            return reply.error(libc::EINVAL);
        }
        let (ffull, tfull) = (st.full(&from), st.full(&to));
        let replaced = std::fs::symlink_metadata(&tfull).ok();
        if let Err(e) = std::fs::rename(&ffull, &tfull) {
            return reply.error(errno(&e));
        }
        if let Some(m) = replaced {
            if m.nlink() <= 1 && !m.is_dir() {
                if let Some(ino) = st.by_backing.remove(&(m.dev(), m.ino())) {
                    st.dirty.remove(&ino);
                }
            }
        }
        // Re-point the moved inode and, for a directory, everything below it.
        for node in st.inodes.values_mut() {
            if node.path == from {
                node.path = to.clone();
            } else if let Ok(rest) = node.path.strip_prefix(&from) {
                node.path = to.join(rest);
            }
        }
        reply.ok()
    }

    fn open(&mut self, _req: &Request<'_>, ino: u64, flags: i32, reply: ReplyOpen) {
        let mut st = self.core.lock();
        let Some(rel) = st.path_of(ino) else {
            return reply.error(libc::ENOENT);
        };
        let acc = flags & libc::O_ACCMODE;
        if acc != libc::O_RDONLY && !st.powered {
            return reply.error(libc::EIO);
        }
        let full = st.full(&rel);
        let f = match OpenOptions::new()
            .read(true)
            .write(acc != libc::O_RDONLY)
            .custom_flags(
                flags
                    & !(libc::O_TRUNC
                        | libc::O_APPEND
                        | libc::O_CREAT
                        | libc::O_EXCL
                        | libc::O_ACCMODE
                        | libc::O_DIRECT),
            )
            .open(&full)
        {
            Ok(f) => f,
            // A file opened write-only whose mode forbids reading.
            Err(_) if acc != libc::O_RDONLY => match OpenOptions::new().write(true).open(&full) {
                Ok(f) => f,
                Err(e) => return reply.error(errno(&e)),
            },
            Err(e) => return reply.error(errno(&e)),
        };
        if flags & libc::O_TRUNC != 0 && acc != libc::O_RDONLY {
            let cur = f.metadata().map(|m| m.len()).unwrap_or(0);
            if cur > 0 {
                if let Err(e) = st.before_change(ino, &f, cur, 0, cur) {
                    return reply.error(errno(&e));
                }
                if let Err(e) = f.set_len(0) {
                    return reply.error(errno(&e));
                }
            }
        }
        let fh = st.next_fh;
        st.next_fh += 1;
        st.handles.insert(fh, (ino, Arc::new(f)));
        reply.opened(fh, st.open_flags());
    }

    fn create(
        &mut self,
        _req: &Request<'_>,
        parent: u64,
        name: &OsStr,
        mode: u32,
        umask: u32,
        flags: i32,
        reply: ReplyCreate,
    ) {
        let mut st = self.core.lock();
        let Some(rel) = st.child(parent, name) else {
            return reply.error(libc::ENOENT);
        };
        if !st.powered {
            return reply.error(libc::EIO);
        }
        let full = st.full(&rel);
        let existed = std::fs::symlink_metadata(&full).is_ok();
        if existed && flags & libc::O_EXCL != 0 {
            return reply.error(libc::EEXIST);
        }
        let f = match OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(mode & !umask & 0o7777)
            .open(&full)
        {
            Ok(f) => f,
            Err(e) => return reply.error(errno(&e)),
        };
        let m = match f.metadata() {
            Ok(m) => m,
            Err(e) => return reply.error(errno(&e)),
        };
        let ino = st.ino_for(&rel, &m);
        if !existed {
            st.dirty.insert(
                ino,
                Dirty {
                    created: true,
                    ..Default::default()
                },
            );
        } else if flags & libc::O_TRUNC != 0 && m.len() > 0 {
            if let Err(e) = st.before_change(ino, &f, m.len(), 0, m.len()) {
                return reply.error(errno(&e));
            }
            let _ = f.set_len(0);
        }
        let m = f.metadata().unwrap_or(m);
        let fh = st.next_fh;
        st.next_fh += 1;
        st.handles.insert(fh, (ino, Arc::new(f)));
        reply.created(&TTL, &attr(ino, &m), 0, fh, st.open_flags());
    }

    fn read(
        &mut self,
        _req: &Request<'_>,
        _ino: u64,
        fh: u64,
        offset: i64,
        size: u32,
        _flags: i32,
        _lock_owner: Option<u64>,
        reply: ReplyData,
    ) {
        let Some(f) = self.core.lock().handles.get(&fh).map(|(_, f)| f.clone()) else {
            return reply.error(libc::EBADF);
        };
        let mut buf = vec![0u8; size as usize];
        let mut got = 0;
        while got < buf.len() {
            match f.read_at(&mut buf[got..], offset as u64 + got as u64) {
                Ok(0) => break,
                Ok(n) => got += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return reply.error(errno(&e)),
            }
        }
        reply.data(&buf[..got]);
    }

    fn write(
        &mut self,
        _req: &Request<'_>,
        ino: u64,
        fh: u64,
        offset: i64,
        data: &[u8],
        _write_flags: u32,
        _flags: i32,
        _lock_owner: Option<u64>,
        reply: ReplyWrite,
    ) {
        let mut st = self.core.lock();
        if !st.powered {
            return reply.error(libc::EIO);
        }
        let Some(f) = st.handles.get(&fh).map(|(_, f)| f.clone()) else {
            return reply.error(libc::EBADF);
        };
        let offset = offset as u64;
        let cur = f.metadata().map(|m| m.len()).unwrap_or(0);
        if let Err(e) = st.before_change(ino, &f, cur, offset, offset + data.len() as u64) {
            return reply.error(errno(&e));
        }
        match f.write_all_at(data, offset) {
            Ok(()) => {
                st.stats.writes += 1;
                reply.written(data.len() as u32)
            }
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn flush(&mut self, _req: &Request<'_>, _ino: u64, _fh: u64, _lock_owner: u64, reply: ReplyEmpty) {
        reply.ok();
    }

    fn release(
        &mut self,
        _req: &Request<'_>,
        _ino: u64,
        fh: u64,
        _flags: i32,
        _lock_owner: Option<u64>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        self.core.lock().handles.remove(&fh);
        reply.ok();
    }

    fn fsync(&mut self, _req: &Request<'_>, ino: u64, _fh: u64, _datasync: bool, reply: ReplyEmpty) {
        self.sync(Some(ino), reply);
    }

    fn opendir(&mut self, _req: &Request<'_>, ino: u64, _flags: i32, reply: ReplyOpen) {
        if self.core.lock().path_of(ino).is_none() {
            return reply.error(libc::ENOENT);
        }
        reply.opened(0, 0);
    }

    fn readdir(&mut self, _req: &Request<'_>, ino: u64, _fh: u64, offset: i64, mut reply: ReplyDirectory) {
        let mut st = self.core.lock();
        let Some(rel) = st.path_of(ino) else {
            return reply.error(libc::ENOENT);
        };
        let rd = match std::fs::read_dir(st.full(&rel)) {
            Ok(rd) => rd,
            Err(e) => return reply.error(errno(&e)),
        };
        let mut entries: Vec<(u64, FileType, std::ffi::OsString)> = vec![
            (ino, FileType::Directory, ".".into()),
            (ino, FileType::Directory, "..".into()),
        ];
        let mut names: Vec<std::ffi::OsString> = rd.filter_map(|e| e.ok().map(|e| e.file_name())).collect();
        names.sort();
        for name in names {
            let child = rel.join(&name);
            if let Ok(m) = std::fs::symlink_metadata(st.full(&child)) {
                let cino = st.ino_for(&child, &m);
                entries.push((cino, kind_of(&m), name));
            }
        }
        for (i, (cino, kind, name)) in entries.into_iter().enumerate().skip(offset.max(0) as usize) {
            if reply.add(cino, (i + 1) as i64, kind, name) {
                break;
            }
        }
        reply.ok();
    }

    fn fsyncdir(&mut self, _req: &Request<'_>, ino: u64, _fh: u64, _datasync: bool, reply: ReplyEmpty) {
        // Entries of this directory become durable: files created in it
        // survive a cut from now on (their unsynced data does not).
        {
            let mut st = self.core.lock();
            if st.powered {
                if let Some(dir) = st.path_of(ino) {
                    let in_dir: Vec<u64> = st
                        .dirty
                        .keys()
                        .copied()
                        .filter(|i| st.inodes.get(i).is_some_and(|n| n.path.parent() == Some(dir.as_path())))
                        .collect();
                    for i in in_dir {
                        if let Some(d) = st.dirty.get_mut(&i) {
                            d.created = false;
                        }
                    }
                }
            }
        }
        self.sync(None, reply);
    }

    fn statfs(&mut self, _req: &Request<'_>, _ino: u64, reply: ReplyStatfs) {
        let backing = self.core.lock().backing.clone();
        let Ok(c) = std::ffi::CString::new(backing.as_os_str().as_encoded_bytes()) else {
            return reply.error(libc::EINVAL);
        };
        // SAFETY: `c` is a valid NUL-terminated path; `s` is a plain
        // C struct that statvfs fills.
        let mut s: libc::statvfs = unsafe { std::mem::zeroed() };
        if unsafe { libc::statvfs(c.as_ptr(), &mut s) } != 0 {
            return reply.error(errno(&std::io::Error::last_os_error()));
        }
        reply.statfs(
            s.f_blocks,
            s.f_bfree,
            s.f_bavail,
            s.f_files,
            s.f_ffree,
            s.f_bsize as u32,
            s.f_namemax as u32,
            s.f_frsize as u32,
        );
    }

    fn access(&mut self, _req: &Request<'_>, ino: u64, _mask: i32, reply: ReplyEmpty) {
        if self.core.lock().path_of(ino).is_none() {
            return reply.error(libc::ENOENT);
        }
        reply.ok();
    }

    fn fallocate(
        &mut self,
        _req: &Request<'_>,
        ino: u64,
        fh: u64,
        offset: i64,
        length: i64,
        mode: i32,
        reply: ReplyEmpty,
    ) {
        let mut st = self.core.lock();
        if !st.powered {
            return reply.error(libc::EIO);
        }
        let Some(f) = st.handles.get(&fh).map(|(_, f)| f.clone()) else {
            return reply.error(libc::EBADF);
        };
        match mode {
            libc::FALLOC_FL_KEEP_SIZE => {}
            0 => {
                let cur = f.metadata().map(|m| m.len()).unwrap_or(0);
                let end = (offset + length) as u64;
                if end > cur {
                    if let Err(e) = st.before_change(ino, &f, cur, cur, end) {
                        return reply.error(errno(&e));
                    }
                }
            }
            _ => return reply.error(libc::EOPNOTSUPP),
        }
        // SAFETY: a valid open fd owned by `f`, plain integer arguments.
        let r = unsafe { libc::fallocate(f.as_raw_fd(), mode, offset, length) };
        if r != 0 {
            return reply.error(errno(&std::io::Error::last_os_error()));
        }
        reply.ok();
    }
}

/// Whether a fault filesystem can be mounted here; `Some(reason)` if not.
pub fn unavailable() -> Option<String> {
    if !crate::cluster::small_disks_possible() {
        return Some("not root".into());
    }
    if !Path::new("/dev/fuse").exists() {
        return Some("no /dev/fuse".into());
    }
    let found = std::env::var_os("PATH").is_some_and(|p| {
        std::env::split_paths(&p).any(|d| d.join("fusermount3").exists() || d.join("fusermount").exists())
    });
    if !found {
        return Some("no fusermount3 (Debian package fuse3; scripts/setup installs it)".into());
    }
    None
}

/// A mounted fault filesystem (unmounted when dropped).
pub struct Mounted {
    core: Arc<Core>,
    session: Option<fuser::BackgroundSession>,
    mount: PathBuf,
}

impl Mounted {
    /// Mount `backing` at `mount` with fsyncs delayed by `delay`.
    pub fn mount(backing: &Path, mount: &Path, delay: DelaySpec, seed: u64) -> Result<Self, Error> {
        std::fs::create_dir_all(backing).map_err(Error::io(format!("create {}", backing.display())))?;
        std::fs::create_dir_all(mount).map_err(Error::io(format!("create {}", mount.display())))?;
        let backing = backing
            .canonicalize()
            .map_err(Error::io(format!("resolve {}", backing.display())))?;
        let mut inodes = HashMap::new();
        inodes.insert(fuser::FUSE_ROOT_ID, Inode { path: PathBuf::new() });
        let mut by_backing = HashMap::new();
        if let Ok(m) = std::fs::metadata(&backing) {
            by_backing.insert((m.dev(), m.ino()), fuser::FUSE_ROOT_ID);
        }
        let (tx, rx) = mpsc::channel();
        let core = Arc::new(Core {
            state: Mutex::new(State {
                backing,
                inodes,
                by_backing,
                next_ino: 2,
                handles: HashMap::new(),
                next_fh: 1,
                dirty: HashMap::new(),
                epoch: 0,
                powered: true,
                page_cache: false,
                next_sync: 1,
                eio_per_mille: 0,
                stats: Stats::default(),
            }),
            delays: Mutex::new(Delays {
                spec: delay,
                rng: StdRng::seed_from_u64(seed),
                stall_until: None,
            }),
            jobs: Mutex::new(Some(tx)),
        });
        let timer_core = core.clone();
        std::thread::Builder::new()
            .name("faultfs-timer".into())
            .spawn(move || timer_core.timer(rx))
            .map_err(Error::io("spawn the fsync timer"))?;
        let fs = FaultFs { core: core.clone() };
        let options = [
            MountOption::FSName("cairn-faultfs".into()),
            MountOption::AutoUnmount,
            MountOption::AllowRoot,
        ];
        let session = fuser::spawn_mount2(fs, mount, &options).map_err(|e| Error::Setup {
            reason: format!("mounting faultfs at {}: {e}", mount.display()),
        })?;
        Ok(Self {
            core,
            session: Some(session),
            mount: mount.to_path_buf(),
        })
    }

    /// The shared core (cut, delay, stats).
    pub fn core(&self) -> Arc<Core> {
        self.core.clone()
    }
}

impl Drop for Mounted {
    fn drop(&mut self) {
        self.core.jobs.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(s) = self.session.take() {
            drop(s);
        }
        let _ = std::process::Command::new("fusermount3")
            .arg("-uz")
            .arg(&self.mount)
            .stderr(std::process::Stdio::null())
            .status();
    }
}

/// Serve control requests for `core` on a Unix socket at `path`, one
/// thread per connection; returns only when the listener fails.
pub fn serve_control(core: Arc<Core>, path: &Path) -> Result<(), Error> {
    let _ = std::fs::remove_file(path);
    let listener =
        std::os::unix::net::UnixListener::bind(path).map_err(Error::io(format!("bind {}", path.display())))?;
    for conn in listener.incoming() {
        let Ok(conn) = conn else { continue };
        let core = core.clone();
        std::thread::spawn(move || {
            let Ok(mut w) = conn.try_clone() else { return };
            for line in BufReader::new(conn).lines() {
                let Ok(line) = line else { return };
                let answer = core.control(&line);
                if writeln!(w, "{answer}").is_err() {
                    return;
                }
            }
        });
    }
    Ok(())
}

/// Send one control request to a faultfs at `socket` and return its
/// answer line; an answer not starting with `ok` is an error.
pub async fn request(socket: &Path, line: &str, timeout: Duration) -> Result<String, String> {
    use tokio::io::AsyncBufReadExt;
    use tokio::io::AsyncWriteExt;
    let work = async {
        let mut s = tokio::net::UnixStream::connect(socket)
            .await
            .map_err(|e| format!("connect {}: {e}", socket.display()))?;
        s.write_all(format!("{line}\n").as_bytes())
            .await
            .map_err(|e| format!("send {line:?}: {e}"))?;
        let mut answer = String::new();
        tokio::io::BufReader::new(s)
            .read_line(&mut answer)
            .await
            .map_err(|e| format!("read the answer to {line:?}: {e}"))?;
        let answer = answer.trim().to_string();
        if answer.starts_with("ok") {
            Ok(answer)
        } else if answer.is_empty() {
            Err(format!("no answer to {line:?}"))
        } else {
            Err(answer)
        }
    };
    tokio::time::timeout(timeout, work)
        .await
        .map_err(|_| format!("{line:?} not answered within {timeout:?}"))?
}

/// `cairn-jepsen faultfs`: mount, then serve the control socket forever.
///
/// `page_cache`: open files through the kernel's page cache instead of
/// `direct_io`, so they can be `mmap`ed (etcd's bbolt needs that; FUSE
/// refuses `mmap` of a `direct_io` file with `ENODEV`). Fsync delays and
/// `EIO` work as usual; `cut` is refused (cached pages would outlive it).
/// For the benchmark (`scripts/bench` with `BENCH_DISK`), never for power
/// cuts.
pub fn serve(
    backing: &Path,
    mount: &Path,
    control: &Path,
    delay: DelaySpec,
    eio_per_mille: u32,
    page_cache: bool,
) -> Result<(), Error> {
    let seed = std::process::id() as u64 ^ 0x6661_756c_7466_7321;
    let m = Mounted::mount(backing, mount, delay, seed)?;
    m.core().set_eio(eio_per_mille);
    if page_cache {
        m.core().set_page_cache();
    }
    tracing::info!(mount = %mount.display(), backing = %backing.display(), "faultfs mounted");
    serve_control(m.core(), control)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delay_specs_parse() {
        assert_eq!(DelaySpec::parse("none").unwrap(), DelaySpec::None);
        assert_eq!(DelaySpec::parse("sd-card").unwrap(), DelaySpec::SdCard);
        assert_eq!(
            DelaySpec::parse("15..60ms").unwrap(),
            DelaySpec::Range {
                lo_ms: 15.0,
                hi_ms: 60.0
            }
        );
        assert_eq!(
            DelaySpec::parse("5ms").unwrap(),
            DelaySpec::Range { lo_ms: 5.0, hi_ms: 5.0 }
        );
        assert!(DelaySpec::parse("60..15ms").is_err());
        assert!(DelaySpec::parse("fast").is_err());
    }

    #[test]
    fn the_sd_card_model_has_its_median_and_tail() {
        let mut d = Delays {
            spec: DelaySpec::SdCard,
            rng: StdRng::seed_from_u64(1),
            stall_until: None,
        };
        let now = Instant::now();
        let mut ms: Vec<f64> = (0..20_000)
            .map(|_| {
                d.stall_until = None;
                d.due(now).duration_since(now).as_secs_f64() * 1000.0
            })
            .collect();
        ms.sort_by(f64::total_cmp);
        let (p50, p99) = (ms[10_000], ms[19_800]);
        assert!((4.0..6.5).contains(&p50), "p50 {p50}");
        assert!((55.0..110.0).contains(&p99), "p99 {p99}");
        assert!(ms.iter().any(|m| *m >= 1999.0), "no 2 s stall in 20k fsyncs");
    }

    fn fsync_dir(dir: &Path) {
        File::open(dir).and_then(|f| f.sync_all()).expect("fsync the directory");
    }

    /// Mount a faultfs (root, /dev/fuse, fusermount3; skipped otherwise):
    /// unsynced data, files and truncations are gone after a cut, synced
    /// ones survive, a power-off refuses writes, fsync delays are observed,
    /// and the control socket answers.
    #[test]
    fn a_cut_drops_exactly_the_unsynced_data() {
        if let Some(reason) = unavailable() {
            println!("faultfs test skipped: {reason}");
            return;
        }
        let tmp = tempfile::tempdir().unwrap();
        let (backing, mnt) = (tmp.path().join("backing"), tmp.path().join("mnt"));
        let m = Mounted::mount(&backing, &mnt, DelaySpec::None, 7).expect("mount");
        let core = m.core();
        let ctl = tmp.path().join("ctl.sock");
        let ctl2 = ctl.clone();
        let ctl_core = core.clone();
        std::thread::spawn(move || serve_control(ctl_core, &ctl2));
        let sub = mnt.join("db");
        std::fs::create_dir(&sub).unwrap();
        // Synced: written, fsynced, directory fsynced.
        let mut synced = File::create(sub.join("synced")).unwrap();
        synced.write_all(&[1u8; 10_000]).unwrap();
        synced.sync_all().unwrap();
        fsync_dir(&sub);
        // Then appended to and overwritten in part, never synced again.
        synced.write_all(&[2u8; 5000]).unwrap();
        synced.write_all_at(&[3u8; 100], 4090).unwrap();
        // Created, directory fsynced, data never synced: stays, empty.
        let mut listed = File::create(sub.join("listed")).unwrap();
        fsync_dir(&sub);
        listed.write_all(b"data").unwrap();
        // Created (after the directory's last sync) and written, never synced.
        std::fs::write(sub.join("unsynced"), b"gone after the cut").unwrap();
        // Synced, then truncated without a sync.
        let mut trunc = File::create(sub.join("trunc")).unwrap();
        trunc.write_all(&[4u8; 9000]).unwrap();
        trunc.sync_data().unwrap();
        trunc.set_len(100).unwrap();
        // Renamed after its sync (RocksDB's CURRENT): durable at once.
        let mut tmpf = File::create(sub.join("CURRENT.tmp")).unwrap();
        tmpf.write_all(b"MANIFEST-000001\n").unwrap();
        tmpf.sync_all().unwrap();
        std::fs::rename(sub.join("CURRENT.tmp"), sub.join("CURRENT")).unwrap();
        assert_eq!(std::fs::metadata(sub.join("synced")).unwrap().len(), 15_000);

        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let ask = |line: &str| rt.block_on(request(&ctl, line, Duration::from_secs(5)));
        // The control thread may not be listening yet.
        let mut pong = Err(String::new());
        for _ in 0..50 {
            pong = ask("ping");
            if pong.is_ok() {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        assert_eq!(pong.as_deref(), Ok("ok"));
        let cut = ask("cut").expect("cut acknowledged");
        assert!(cut.starts_with("ok cut: 1 files deleted"), "{cut}");
        // Powered off: writes fail until `on`.
        assert!(synced.write_all(b"x").is_err(), "a write after the cut succeeded");
        assert_eq!(ask("on").as_deref(), Ok("ok on"));
        drop((synced, listed, trunc, tmpf));

        let s = std::fs::read(sub.join("synced")).unwrap();
        assert_eq!(s, vec![1u8; 10_000], "the synced file is not as synced");
        assert!(!sub.join("unsynced").exists(), "an unsynced new file survived the cut");
        assert_eq!(
            std::fs::read(sub.join("listed")).unwrap(),
            b"",
            "unsynced data survived"
        );
        assert_eq!(std::fs::read(sub.join("trunc")).unwrap(), vec![4u8; 9000]);
        assert_eq!(std::fs::read(sub.join("CURRENT")).unwrap(), b"MANIFEST-000001\n");
        assert!(!sub.join("CURRENT.tmp").exists());

        // An fsync delay is observed, and can be changed at run time.
        assert_eq!(ask("delay 150ms").as_deref(), Ok("ok delay 150..150ms"));
        let mut f = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(sub.join("slow"))
            .unwrap();
        f.write_all(b"slow").unwrap();
        let t = Instant::now();
        f.sync_data().unwrap();
        let took = t.elapsed();
        assert!(
            took >= Duration::from_millis(140),
            "fsync took {took:?} with a 150 ms delay"
        );
        // A delayed fsync holds up neither reads of its file nor writes to
        // another (writes to the same file wait: the kernel holds the
        // file's inode lock across a FUSE fsync, see docs/CHAOS.md).
        let f2 = Arc::new(f);
        let f3 = f2.clone();
        let other = File::create(sub.join("other")).unwrap();
        let syncing = std::thread::spawn(move || f3.sync_data());
        std::thread::sleep(Duration::from_millis(20));
        let t = Instant::now();
        other.write_all_at(b"more", 0).unwrap();
        let mut buf = [0u8; 4];
        f2.read_exact_at(&mut buf, 0).unwrap();
        assert_eq!(&buf, b"slow");
        assert!(t.elapsed() < Duration::from_millis(100), "I/O waited for an fsync");
        syncing.join().unwrap().unwrap();
        assert_eq!(ask("delay none").as_deref(), Ok("ok delay none"));
        // A stall on demand holds every fsync begun during it to its end.
        assert_eq!(ask("stall 200").as_deref(), Ok("ok stall 200ms"));
        let t = Instant::now();
        f2.sync_data().unwrap();
        let took = t.elapsed();
        assert!(
            took >= Duration::from_millis(150),
            "fsync took {took:?} in a 200 ms stall"
        );
        assert!(ask("stall 1h").is_err(), "a malformed stall was taken");
        // EIO on fsync, when asked for.
        assert_eq!(ask("eio 1000").as_deref(), Ok("ok eio 1000/1000"));
        assert!(f2.sync_data().is_err(), "fsync did not fail with eio 1000");
        assert_eq!(ask("eio 0").as_deref(), Ok("ok eio 0/1000"));
        let stats = core.stats();
        assert!(
            stats.cuts == 1 && stats.fsyncs >= 7 && stats.fsyncs_failed >= 1,
            "{stats:?}"
        );
        // Page-cache mode (the benchmark's): a cut is refused, nothing dropped.
        core.set_page_cache();
        let refused = ask("cut").expect_err("a cut was taken in page-cache mode");
        assert!(refused.contains("page-cache"), "{refused}");
        assert_eq!(core.stats().cuts, 1, "the refused cut counted");
        drop(f2);
        drop(m);
    }
}
