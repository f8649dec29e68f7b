//! The rsync engine: copies a Barman backup tree with parallel rsync streams and reports each
//! file the moment it is complete at its final name, so the caller can checkpoint per file.
//!
//! It owns the rsync processes and nothing else: the caller (the Transfer step) owns the store,
//! decides what is done and passes a [`StreamPlan`]; this module never reads or writes the store
//! and never decides to retry.
//!
//! Facts it relies on (reference/rsync.md):
//! * an `--out-format` containing `%b` is printed only after the file was received and renamed
//!   into place, so a [`RsyncEvent::FileDone`] is never sent for a half-copied file;
//! * rsync skips a file whose size and mtime already match, silently; after an rsync exits 0,
//!   each listed entry it did not name is checked on disk (size and mtime) and then reported;
//! * a killed receiver leaves `.<name>.XXXXXX` temp files holding the first bytes of the file:
//!   [`cleanup_partial`] keeps the longest one of a big file under the file's final name and
//!   removes the rest, and the next run completes it with `--append-verify`, which sends only the
//!   missing tail and then checks the whole file's checksum (re-sending it on a mismatch), so a
//!   resume goes on from the middle of a file without trusting the kept bytes;
//! * rsync's forked children (generator, receiver, ssh) do not die with their parent, and when
//!   they see it gone they delete their temp file and may still rename finished files. So each
//!   rsync runs under a guardian process (see [`spawn_guarded`]) that SIGKILLs rsync's whole
//!   process group when pgreplica dies, even by SIGKILL, or when a stream must stop, and exits
//!   only once every process of that rsync is reaped.
//!
//! Progress comes from `--info=progress2` on rsync's stdout (bytes sent so far by that rsync),
//! summed per stream; it is reported as [`RsyncEvent::Progress`].

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::{self, Read};
use std::os::unix::fs::MetadataExt;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use states::{EntryKind, ManifestEntry};
use tokio::sync::mpsc;

use crate::child_output;
use crate::error::{Error, ErrorKind, Result};
use crate::transfer::guardian::{spawn_guarded, wait_no_reap};
use crate::transfer::streams::StreamPlan;

/// Starts each of our `--out-format` lines, so they cannot be mistaken for rsync's own output.
const MARKER: &str = "pgreplica-done ";

/// Files at least this big keep what an interrupted copy wrote; smaller ones are sent again
/// whole, which costs less than the checksum pass of `--append-verify`.
pub const RESUME_PARTIAL_MIN_BYTES: u64 = 1 << 20;

/// One tree to copy: a source rsync can read and the local directory it goes to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TreeSource {
    /// The manifest root this tree holds: a tablespace OID.
    pub root: u32,
    /// rsync source of the tree, e.g. `barman@backup:/var/lib/barman/pg/base/ID/16385/`.
    pub source: String,
    /// Local directory the tree is copied into.
    pub dest: PathBuf,
}

/// Everything one copy needs: where from, where to, how to reach the host, what to copy.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RsyncJob {
    /// rsync source of the data directory (root 0): `barman@host:/var/lib/barman/pg/base/ID/data/`
    /// or a local path. A trailing `/` is added when missing.
    pub source: String,
    /// Remote shell for rsync's `-e`, already quoted for rsync's own splitting
    /// (e.g. `ssh -o BatchMode=yes -c aes128-gcm@openssh.com`); `None` for rsync's default.
    pub rsh: Option<String>,
    /// The local data directory (root 0).
    pub dest: PathBuf,
    /// The other roots of the manifest (tablespaces), each with its own source and target.
    pub tablespaces: Vec<TreeSource>,
    /// Further rsync options placed before the paths (e.g. `--bwlimit=…` from `rsync_options`).
    pub extra_args: Vec<String>,
    /// The backup's manifest; [`StreamPlan`] indices point into it.
    pub entries: Vec<ManifestEntry>,
    /// Entries whose target already holds the first bytes of the file, kept by
    /// [`cleanup_partial`]: rsync completes them with `--append-verify`.
    pub partials: BTreeSet<usize>,
}

impl RsyncJob {
    /// Source and target directory of `root`, if the job knows that root.
    fn tree(&self, root: u32) -> Option<(&str, &Path)> {
        if root == 0 {
            return Some((&self.source, &self.dest));
        }
        self.tablespaces
            .iter()
            .find(|t| t.root == root)
            .map(|t| (t.source.as_str(), t.dest.as_path()))
    }

    /// Every root the job covers, tablespaces first and the data directory last.
    fn roots(&self) -> Vec<u32> {
        let mut roots: Vec<u32> = self.tablespaces.iter().map(|t| t.root).collect();
        roots.push(0);
        roots
    }
}

/// What the engine tells its caller while it runs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RsyncEvent {
    /// The entry is complete at its final name in the target: checkpoint it as done.
    /// Sent exactly once per planned entry.
    FileDone {
        /// Index of the entry in [`RsyncJob::entries`].
        index: usize,
        /// The entry's root (0 = data directory, else tablespace OID).
        root: u32,
        /// The entry's path relative to its root, as in the manifest.
        path: String,
        /// Bytes rsync sent for it (`%b`, protocol overhead included); 0 when rsync found the
        /// file already complete and skipped it.
        bytes_sent: u64,
        /// The entry's size in the manifest.
        size: u64,
    },
    /// Bytes a stream has sent so far in this phase (from `--info=progress2`). The final
    /// pg_control copy is stream number `streams.len()`.
    Progress {
        /// Stream number, an index into [`StreamPlan::streams`].
        stream: usize,
        /// Bytes sent by that stream so far.
        bytes: u64,
    },
}

/// What a finished copy did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RsyncStats {
    /// Entries reported done.
    pub files: u64,
    /// Sum of `bytes_sent` over those entries.
    pub bytes_sent: u64,
    /// Wall time of the whole copy, pg_control included.
    pub duration: Duration,
}

/// Copies the planned entries with one rsync per stream, then `global/pg_control` (and the
/// directories' times, which the parallel streams disturb) in a final rsync, and calls
/// `on_event` as files complete.
///
/// Any exit code but 0 is an [`ErrorKind::Rsync`] error naming the code's meaning, with rsync's
/// stderr tail as DETAIL; it is retryable for connection failures (10, 12, 30, 35, 255), a
/// signal (20) and a killed rsync. When one stream fails the others are killed, and all are
/// reaped before this returns. Dropping the future kills every rsync process group and waits
/// for them (blocking the dropping thread for the few milliseconds that takes).
pub async fn run_streams(
    job: &RsyncJob,
    plan: &StreamPlan,
    mut on_event: impl FnMut(RsyncEvent),
) -> Result<RsyncStats> {
    let started = Instant::now();
    let mut stats = RsyncStats::default();
    if plan.is_empty() {
        return Ok(stats);
    }
    if let Some(&i) = plan
        .streams
        .iter()
        .flatten()
        .chain(&plan.last)
        .find(|&&i| i >= job.entries.len())
    {
        return Err(bad_index(i, job));
    }
    let scratch = ScratchDir::create()?;
    let mut streams = Vec::with_capacity(plan.streams.len());
    for (n, indices) in plan.streams.iter().enumerate() {
        let mut by_root: BTreeMap<u32, Vec<usize>> = BTreeMap::new();
        for &i in indices {
            by_root.entry(job.entries[i].root).or_default().push(i);
        }
        let mut invocations = Vec::new();
        for (root, send) in by_root {
            invocations.extend(invocations_of(job, n, root, &send, |_| true, &scratch)?);
        }
        streams.push(invocations);
    }
    let mut reported = vec![false; job.entries.len()];
    run_phase(
        streams,
        &job.entries,
        &mut reported,
        &mut stats,
        &mut on_event,
    )
    .await?;

    // The final rsync: pg_control, plus every directory again (reported by the streams already)
    // so that their times are the backup's and not those left by the streams writing into them.
    let final_stream = plan.streams.len();
    let mut last = Vec::new();
    for root in job.roots() {
        let mut send: Vec<usize> = (0..job.entries.len())
            .filter(|&i| job.entries[i].root == root && job.entries[i].kind == EntryKind::Dir)
            .collect();
        if let Some(i) = plan.last.filter(|&i| job.entries[i].root == root) {
            send.push(i);
        }
        if !send.is_empty() {
            let report = |i: usize| Some(i) == plan.last;
            last.extend(invocations_of(
                job,
                final_stream,
                root,
                &send,
                report,
                &scratch,
            )?);
        }
    }
    run_phase(
        vec![last],
        &job.entries,
        &mut reported,
        &mut stats,
        &mut on_event,
    )
    .await?;
    stats.duration = started.elapsed();
    Ok(stats)
}

/// What [`cleanup_partial`] did to the targets.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Cleanup {
    /// Files removed: rsync temp files and partial data that is not worth keeping.
    pub removed: Vec<PathBuf>,
    /// Interrupted copies kept under their final name, to be completed: entry index and the
    /// bytes already there. Set them as [`RsyncJob::partials`].
    pub kept: Vec<(usize, u64)>,
}

/// Tidies what an interrupted copy left in the targets, before a resume.
///
/// For each not-done manifest file, the candidates are rsync's temp files next to it
/// (`.<name>.XXXXXX`, six letters or digits) and a file at its final name whose size or mtime
/// differs from the manifest (partial data, as a stop or an `--append-verify` run leaves it). For
/// a file of at least [`RESUME_PARTIAL_MIN_BYTES`], the longest candidate shorter than the
/// backup's file is kept under the final name and reported in [`Cleanup::kept`]; every other
/// candidate is removed. A not-done file that matches the manifest is kept as it is: rsync
/// renames a file into place only when complete, and the next run reports it. Temp files next
/// to done files are removed.
///
/// Only directories that hold manifest files are read; nothing else is touched.
pub fn cleanup_partial(job: &RsyncJob) -> Result<Cleanup> {
    let mut cleanup = Cleanup::default();
    for root in job.roots() {
        let Some((_, dest)) = job.tree(root) else {
            continue;
        };
        let mut files_by_dir: HashMap<&str, Vec<(usize, &str)>> = HashMap::new();
        for (index, entry) in job.entries.iter().enumerate() {
            if entry.root == root && entry.kind == EntryKind::File {
                let (dir, name) = entry.path.rsplit_once('/').unwrap_or(("", &entry.path));
                files_by_dir.entry(dir).or_default().push((index, name));
            }
        }
        for (dir, files) in files_by_dir {
            let dir_path = dest.join(dir);
            let mut temps_by_entry: HashMap<usize, Vec<(PathBuf, u64)>> = HashMap::new();
            let listing = match std::fs::read_dir(&dir_path) {
                Ok(listing) => listing,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(fs_error("read", &dir_path, &e)),
            };
            for item in listing {
                let item = item.map_err(|e| fs_error("read", &dir_path, &e))?;
                let name = item.file_name();
                let Some(name) = name.to_str() else { continue };
                let Some(&(index, _)) = files.iter().find(|(_, n)| is_temp_of(name, n)) else {
                    continue;
                };
                let path = item.path();
                if let Ok(meta) = std::fs::symlink_metadata(&path) {
                    if meta.is_file() {
                        temps_by_entry
                            .entry(index)
                            .or_default()
                            .push((path, meta.len()));
                    }
                }
            }
            for (index, _) in files {
                let entry = &job.entries[index];
                let target = dest.join(&entry.path);
                let mut candidates = temps_by_entry.remove(&index).unwrap_or_default();
                if !entry.done {
                    match std::fs::symlink_metadata(&target) {
                        Ok(meta) if meta.is_file() && !matches_manifest(&meta, entry) => {
                            candidates.push((target.clone(), meta.len()));
                        }
                        Ok(_) => {}
                        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                        Err(e) => return Err(fs_error("inspect", &target, &e)),
                    }
                }
                let worth_keeping = |len: u64| {
                    !entry.done
                        && entry.size >= RESUME_PARTIAL_MIN_BYTES
                        && len > 0
                        && len < entry.size
                };
                let keep = candidates
                    .iter()
                    .filter(|(_, len)| worth_keeping(*len))
                    .max_by_key(|(_, len)| *len)
                    .cloned();
                for (path, _) in &candidates {
                    if keep.as_ref().is_none_or(|(kept, _)| kept != path) {
                        remove(path)?;
                        cleanup.removed.push(path.clone());
                    }
                }
                if let Some((path, len)) = keep {
                    if path != target {
                        std::fs::rename(&path, &target)
                            .map_err(|e| fs_error("rename", &path, &e))?;
                    }
                    cleanup.kept.push((index, len));
                }
            }
        }
    }
    cleanup.removed.sort();
    cleanup.kept.sort_unstable();
    Ok(cleanup)
}

/// Whether `candidate` is an rsync temp file for `name`: `.` + name + `.` + six alphanumerics.
fn is_temp_of(candidate: &str, name: &str) -> bool {
    let Some(rest) = candidate.strip_prefix('.') else {
        return false;
    };
    let Some(suffix) = rest.strip_prefix(name) else {
        return false;
    };
    let Some(random) = suffix.strip_prefix('.') else {
        return false;
    };
    random.len() == 6 && random.bytes().all(|b| b.is_ascii_alphanumeric())
}

fn matches_manifest(meta: &std::fs::Metadata, entry: &ManifestEntry) -> bool {
    meta.len() == entry.size && meta.mtime() == entry.mtime
}

fn remove(path: &Path) -> Result<()> {
    std::fs::remove_file(path).map_err(|e| fs_error("remove", path, &e))
}

fn fs_error(verb: &str, path: &Path, e: &io::Error) -> Error {
    Error::new(
        ErrorKind::System,
        format!("could not {verb} \"{}\": {e}", path.display()),
    )
    .hint("check that the target directory belongs to the user running pgreplica")
}

fn bad_index(i: usize, job: &RsyncJob) -> Error {
    Error::new(
        ErrorKind::Internal,
        format!(
            "the transfer plan names entry {i} but the manifest has {} entries",
            job.entries.len()
        ),
    )
}

/// One rsync run: a list of entries of one root.
struct Invocation {
    stream: usize,
    root: u32,
    source: String,
    dest: PathBuf,
    list_file: PathBuf,
    stderr_file: PathBuf,
    items: Vec<Item>,
    rsh: Option<String>,
    extra_args: Vec<String>,
    /// Completes kept partial files with `--append-verify`. rsync prints a file's line when it
    /// was written even if the checksum then failed and it will be sent again, so in this mode
    /// the lines count bytes only and files are reported once rsync has exited 0.
    append: bool,
}

/// A listed entry, with what the stream thread needs to recognise and check it.
struct Item {
    index: usize,
    path: String,
    kind: EntryKind,
    size: u64,
    mtime: i64,
    /// Whether completing it is reported (the final rsync lists directories only to fix times).
    report: bool,
}

/// The rsync runs for `send` (entries of `root`): one completing kept partial files first, when
/// there are any, then one for the rest.
fn invocations_of(
    job: &RsyncJob,
    stream: usize,
    root: u32,
    send: &[usize],
    report: impl Fn(usize) -> bool,
    scratch: &ScratchDir,
) -> Result<Vec<Invocation>> {
    let (append, whole): (Vec<usize>, Vec<usize>) =
        send.iter().partition(|i| job.partials.contains(i));
    let mut invocations = Vec::new();
    for (send, append) in [(append, true), (whole, false)] {
        if !send.is_empty() {
            invocations.push(invocation(
                job, stream, root, &send, &report, append, scratch,
            )?);
        }
    }
    Ok(invocations)
}

fn invocation(
    job: &RsyncJob,
    stream: usize,
    root: u32,
    send: &[usize],
    report: impl Fn(usize) -> bool,
    append: bool,
    scratch: &ScratchDir,
) -> Result<Invocation> {
    let (source, dest) = job.tree(root).ok_or_else(|| {
        Error::new(
            ErrorKind::Internal,
            format!(
                "the manifest has entries under root {root} but the transfer has no source for it"
            ),
        )
    })?;
    let mut source = source.to_string();
    if !source.ends_with('/') {
        source.push('/');
    }
    let items: Vec<Item> = send
        .iter()
        .map(|&i| {
            let e = &job.entries[i];
            Item {
                index: i,
                path: e.path.clone(),
                kind: e.kind,
                size: e.size,
                mtime: e.mtime,
                report: report(i),
            }
        })
        .collect();
    let mut list = Vec::new();
    for item in &items {
        list.extend_from_slice(item.path.as_bytes());
        list.push(0);
    }
    let mode = if append { "append" } else { "whole" };
    let stem = format!("stream-{stream}-root-{root}-{mode}");
    let list_file = scratch.path.join(format!("{stem}.list"));
    std::fs::write(&list_file, list).map_err(|e| fs_error("write", &list_file, &e))?;
    Ok(Invocation {
        stream,
        root,
        source,
        dest: dest.to_path_buf(),
        list_file,
        stderr_file: scratch.path.join(format!("{stem}.stderr")),
        items,
        rsh: job.rsh.clone(),
        extra_args: job.extra_args.clone(),
        append,
    })
}

impl Invocation {
    fn command(&self) -> Command {
        let mut cmd = Command::new("rsync");
        // -lpt and no -r: exactly the listed entries (directories without their contents), no
        // owner or group (pgreplica runs as the PostgreSQL user, not root).
        // A target file is absent or to be replaced, so no delta pass; a kept partial is completed
        // by sending its tail, then its checksum is compared with the source's.
        let mode = if self.append {
            "--append-verify"
        } else {
            "--whole-file"
        };
        cmd.args(["--links", "--perms", "--times", mode])
            .args(["--no-inc-recursive", "--from0", "--no-human-readable"])
            .arg(format!("--files-from={}", self.list_file.display()))
            .arg(format!("--out-format={MARKER}%b %l %n"))
            .arg("--info=progress2")
            .args(&self.extra_args);
        if let Some(rsh) = &self.rsh {
            cmd.arg("-e").arg(rsh);
        }
        let mut dest = self.dest.clone().into_os_string();
        dest.push("/");
        cmd.arg("--").arg(&self.source).arg(dest);
        // Names are then escaped the same way whatever the operator's locale.
        cmd.env("LC_ALL", "C");
        cmd
    }
}

/// Messages from stream threads to [`run_phase`].
enum Msg {
    Done { index: usize, bytes_sent: u64 },
    Progress { stream: usize, bytes: u64 },
    Failed(Error),
}

/// Runs one thread per stream and forwards their events until every thread has finished.
async fn run_phase(
    streams: Vec<Vec<Invocation>>,
    entries: &[ManifestEntry],
    reported: &mut [bool],
    stats: &mut RsyncStats,
    on_event: &mut impl FnMut(RsyncEvent),
) -> Result<()> {
    let guardians = Arc::new(Guardians::default());
    let (tx, mut rx) = mpsc::unbounded_channel();
    let mut guard = PhaseGuard {
        guardians: guardians.clone(),
        threads: Vec::new(),
    };
    for invocations in streams {
        let (tx, guardians) = (tx.clone(), guardians.clone());
        // A thread of our own per stream, not a tokio worker: PR_SET_PDEATHSIG fires when the
        // *thread* that forked the child exits, and this one lives until its children are reaped.
        let thread = std::thread::Builder::new()
            .name("pgreplica-rsync".into())
            .spawn(move || run_stream(invocations, &guardians, &tx))
            .map_err(|e| {
                Error::new(
                    ErrorKind::System,
                    format!("could not start a thread for rsync: {e}"),
                )
            });
        match thread {
            Ok(handle) => guard.threads.push(handle),
            Err(e) => {
                drop(guard);
                return Err(e);
            }
        }
    }
    drop(tx);
    let mut failure = None;
    while let Some(msg) = rx.recv().await {
        match msg {
            Msg::Done { index, bytes_sent } => {
                if std::mem::replace(&mut reported[index], true) {
                    continue;
                }
                let entry = &entries[index];
                stats.files += 1;
                stats.bytes_sent += bytes_sent;
                on_event(RsyncEvent::FileDone {
                    index,
                    root: entry.root,
                    path: entry.path.clone(),
                    bytes_sent,
                    size: entry.size,
                });
            }
            Msg::Progress { stream, bytes } => on_event(RsyncEvent::Progress { stream, bytes }),
            Msg::Failed(error) => {
                // The first failure is the cause; the others are the streams stopped for it.
                if failure.is_none() {
                    guardians.stop_all();
                    failure = Some(error);
                }
            }
        }
    }
    guard.join();
    failure.map_or(Ok(()), Err)
}

/// Stops and reaps a phase's rsyncs when the phase future is dropped.
struct PhaseGuard {
    guardians: Arc<Guardians>,
    threads: Vec<JoinHandle<()>>,
}

impl PhaseGuard {
    fn join(&mut self) {
        for thread in self.threads.drain(..) {
            // A panicking stream thread has already reaped or abandoned its child; its error is
            // the channel closing early, which the phase reports as a missing file.
            let _ = thread.join();
        }
    }
}

impl Drop for PhaseGuard {
    fn drop(&mut self) {
        if !self.threads.is_empty() {
            self.guardians.stop_all();
            self.join();
        }
    }
}

/// The guardians of the running rsyncs, so a failure or a drop can stop them all.
#[derive(Default)]
struct Guardians {
    inner: Mutex<GuardiansInner>,
}

#[derive(Default)]
struct GuardiansInner {
    /// Set by [`Guardians::stop_all`]: no new rsync may start.
    stopping: bool,
    /// Pids of guardians not yet reaped, so a signal can never reach a recycled pid.
    live: Vec<libc::pid_t>,
}

impl Guardians {
    fn lock(&self) -> std::sync::MutexGuard<'_, GuardiansInner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Asks every guardian to SIGKILL its rsync's group; each exits once its group is reaped.
    fn stop_all(&self) {
        let mut inner = self.lock();
        inner.stopping = true;
        for &pid in &inner.live {
            // SAFETY: kill has no memory effects; pid is a child we have not reaped.
            unsafe {
                libc::kill(pid, libc::SIGTERM);
            }
        }
    }
}

/// A stream thread: its invocations one after the other, stopping at the first failure.
fn run_stream(
    invocations: Vec<Invocation>,
    guardians: &Guardians,
    tx: &mpsc::UnboundedSender<Msg>,
) {
    let sent_before = AtomicU64::new(0);
    for invocation in invocations {
        if let Err(error) = run_invocation(&invocation, guardians, tx, &sent_before) {
            let _ = tx.send(Msg::Failed(error));
            return;
        }
    }
}

fn run_invocation(
    inv: &Invocation,
    guardians: &Guardians,
    tx: &mpsc::UnboundedSender<Msg>,
    sent_before: &AtomicU64,
) -> Result<()> {
    let mut stderr = std::fs::File::options()
        .create(true)
        .truncate(true)
        .read(true)
        .write(true)
        .open(&inv.stderr_file)
        .map_err(|e| fs_error("create", &inv.stderr_file, &e))?;
    let mut cmd = inv.command();
    cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(
        stderr
            .try_clone()
            .map_err(|e| fs_error("open", &inv.stderr_file, &e))?,
    );
    crate::debug!("running {cmd:?}");
    let mut child = {
        let mut live = guardians.lock();
        if live.stopping {
            return Err(stopped(inv));
        }
        let child = spawn_guarded(&mut cmd).map_err(|e| {
            Error::new(ErrorKind::Rsync, format!("could not run rsync: {e}"))
                .hint("install rsync on this host (it must also be installed on the Barman host)")
        })?;
        live.live.push(child.id() as libc::pid_t);
        child
    };
    let pid = child.id() as libc::pid_t;

    let mut by_path: HashMap<&str, (usize, bool)> = HashMap::new();
    for (n, item) in inv.items.iter().enumerate() {
        by_path.insert(item.path.trim_end_matches('/'), (n, false));
    }
    // Bytes sent per item in append mode, reported after rsync has exited 0.
    let mut appended = vec![0_u64; inv.items.len()];
    let base = sent_before.load(Ordering::Relaxed);
    let mut last_progress = 0u64;
    let mut mismatch = None;
    if let Some(mut stdout) = child.stdout.take() {
        let mut pending = Vec::new();
        let mut buf = [0u8; 8192];
        loop {
            let n = match stdout.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                // The pipe broke: the exit status below says why.
                Err(_) => break,
            };
            for &b in &buf[..n] {
                if b != b'\n' && b != b'\r' {
                    pending.push(b);
                    continue;
                }
                match parse_line(&pending) {
                    Line::Done {
                        bytes_sent,
                        length,
                        name,
                    } => {
                        let key = if name.is_empty() { "." } else { name.as_str() };
                        if let Some((n, seen)) = by_path.get_mut(key) {
                            let item = &inv.items[*n];
                            if item.kind == EntryKind::File && length != item.size {
                                mismatch.get_or_insert((item.path.clone(), length, item.size));
                            } else if inv.append {
                                appended[*n] += bytes_sent;
                            } else if item.report && !*seen {
                                *seen = true;
                                let _ = tx.send(Msg::Done {
                                    index: item.index,
                                    bytes_sent,
                                });
                            }
                        }
                    }
                    Line::Progress(bytes) => {
                        last_progress = bytes;
                        let _ = tx.send(Msg::Progress {
                            stream: inv.stream,
                            bytes: base + bytes,
                        });
                    }
                    Line::Other => {}
                }
                pending.clear();
            }
        }
    }
    sent_before.store(base + last_progress, Ordering::Relaxed);

    // Wait without reaping, forget the group, then reap: a kill can never reach a recycled id.
    wait_no_reap(pid);
    guardians.lock().live.retain(|&p| p != pid);
    let status = child
        .wait()
        .map_err(|e| Error::new(ErrorKind::Internal, format!("could not reap rsync: {e}")))?;
    if !status.success() {
        return Err(exit_error(
            inv,
            status,
            &child_output::file_detail(&mut stderr),
        ));
    }
    if let Some((path, copied, expected)) = mismatch {
        return Err(Error::new(
            ErrorKind::Rsync,
            format!("rsync copied \"{path}\" with {copied} bytes but the manifest says {expected}"),
        )
        .detail(format!("source: {}", inv.source))
        .hint("the backup changed after its file list was taken; start the clone again"));
    }
    // rsync exited 0, so every listed entry is in place; the ones it did not name were already
    // complete and skipped, and appended ones were held back. Check them on disk before
    // reporting them.
    for (n, seen) in by_path.values() {
        let item = &inv.items[*n];
        if *seen || !item.report {
            continue;
        }
        let path = inv.dest.join(&item.path);
        let ok = std::fs::symlink_metadata(&path).is_ok_and(|meta| match item.kind {
            EntryKind::File => {
                meta.is_file() && meta.len() == item.size && meta.mtime() == item.mtime
            }
            EntryKind::Dir => meta.is_dir(),
            EntryKind::Symlink => meta.file_type().is_symlink(),
        });
        if !ok {
            return Err(Error::new(
                ErrorKind::Rsync,
                format!(
                    "rsync exited successfully but \"{}\" is missing or differs from the backup",
                    path.display()
                ),
            )
            .detail(format!("source: {}", inv.source))
            .hint("run the clone again; if this repeats, report it with the rsync version"));
        }
        let _ = tx.send(Msg::Done {
            index: item.index,
            bytes_sent: appended[*n],
        });
    }
    Ok(())
}

fn stopped(inv: &Invocation) -> Error {
    Error::new(
        ErrorKind::Rsync,
        format!(
            "rsync stream {} was stopped before copying root {}",
            inv.stream, inv.root
        ),
    )
    .retryable()
}

/// One line of rsync's stdout.
#[derive(Debug, PartialEq, Eq)]
enum Line {
    /// Our `--out-format` line: a file complete at its final name.
    Done {
        bytes_sent: u64,
        length: u64,
        name: String,
    },
    /// A `--info=progress2` line: bytes sent so far.
    Progress(u64),
    Other,
}

fn parse_line(raw: &[u8]) -> Line {
    if let Some(rest) = raw.strip_prefix(MARKER.as_bytes()) {
        let mut parts = rest.splitn(3, |&b| b == b' ');
        let number = |p: Option<&[u8]>| std::str::from_utf8(p?).ok()?.parse::<u64>().ok();
        if let (Some(bytes_sent), Some(length), Some(name)) =
            (number(parts.next()), number(parts.next()), parts.next())
        {
            let name = decode_name(name);
            let name = String::from_utf8_lossy(&name);
            return Line::Done {
                bytes_sent,
                length,
                name: name.trim_end_matches('/').to_string(),
            };
        }
        return Line::Other;
    }
    let text = String::from_utf8_lossy(raw);
    let first = text.split_whitespace().next().unwrap_or("");
    match first.parse::<u64>() {
        Ok(bytes) if text.contains('%') => Line::Progress(bytes),
        _ => Line::Other,
    }
}

/// Undoes rsync's `\#ooo` escapes (octal byte values) in a printed name.
fn decode_name(raw: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(raw.len());
    let mut i = 0;
    while i < raw.len() {
        if raw[i] == b'\\' && raw.get(i + 1) == Some(&b'#') {
            let digits = raw
                .get(i + 2..i + 5)
                .filter(|d| d.iter().all(|b| (b'0'..=b'7').contains(b)));
            if let Some(d) = digits {
                let value = d.iter().fold(0u32, |v, b| v * 8 + u32::from(b - b'0'));
                if let Ok(byte) = u8::try_from(value) {
                    out.push(byte);
                    i += 5;
                    continue;
                }
            }
        }
        out.push(raw[i]);
        i += 1;
    }
    out
}

/// What an rsync exit code means (rsync(1), EXIT VALUES; 255 comes from ssh).
pub fn exit_code_meaning(code: i32) -> &'static str {
    match code {
        1 => "syntax or usage error",
        2 => "protocol incompatibility",
        3 => "errors selecting input/output files, dirs",
        4 => "requested action not supported",
        5 => "error starting client-server protocol",
        10 => "error in socket I/O",
        11 => "error in file I/O",
        12 => "error in rsync protocol data stream, often ssh dying",
        13 => "errors with program diagnostics",
        14 => "error in IPC code",
        20 => "received SIGUSR1 or SIGINT",
        21 => "some error returned by waitpid()",
        22 => "error allocating core memory buffers",
        23 => "partial transfer due to error",
        24 => "partial transfer due to vanished source files",
        25 => "the --max-delete limit stopped deletions",
        30 => "timeout in data send/receive",
        35 => "timeout waiting for daemon connection",
        255 => "ssh failed to connect or died",
        _ => "unknown exit code",
    }
}

/// Whether running rsync again unchanged may succeed after it exited with `code`.
pub fn exit_code_is_retryable(code: i32) -> bool {
    matches!(code, 10 | 12 | 20 | 30 | 35 | 255)
}

fn exit_error(inv: &Invocation, status: ExitStatus, tail: &str) -> Error {
    let what = format!(
        "copying \"{}\" to \"{}\" (stream {})",
        inv.source,
        inv.dest.display(),
        inv.stream
    );
    let (message, retryable) = match (status.code(), status.signal()) {
        (Some(code), _) => (
            format!(
                "rsync failed with exit code {code} ({}) {what}",
                exit_code_meaning(code)
            ),
            exit_code_is_retryable(code),
        ),
        (None, Some(signal)) => (format!("rsync was killed by signal {signal} {what}"), true),
        (None, None) => (format!("rsync ended without an exit status {what}"), true),
    };
    let detail = if tail.is_empty() {
        "rsync printed nothing on stderr".to_string()
    } else {
        tail.to_string()
    };
    let error = Error::new(ErrorKind::Rsync, message).detail(detail);
    if retryable {
        error
            .hint("files already copied are kept; `pgreplica clone resume` re-sends only the rest")
            .retryable()
    } else {
        error.hint("fix the cause shown in DETAIL, then run `pgreplica clone resume`")
    }
}

/// A private directory for the `--files-from` lists and stderr captures, removed on drop.
struct ScratchDir {
    path: PathBuf,
}

impl ScratchDir {
    fn create() -> Result<ScratchDir> {
        use std::os::unix::fs::DirBuilderExt;
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let base = std::env::temp_dir();
        loop {
            let n = COUNTER.fetch_add(1, Ordering::Relaxed);
            let path = base.join(format!("pgreplica-rsync-{}-{n}", std::process::id()));
            match std::fs::DirBuilder::new().mode(0o700).create(&path) {
                Ok(()) => return Ok(ScratchDir { path }),
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(fs_error("create", &path, &e)),
            }
        }
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_done_lines_with_escaped_names() {
        let line = b"pgreplica-done 1234 1000 base/1/odd name \\#303\\#251t\\#303\\#251";
        assert_eq!(
            parse_line(line),
            Line::Done {
                bytes_sent: 1234,
                length: 1000,
                name: "base/1/odd name \u{e9}t\u{e9}".into()
            }
        );
        assert_eq!(
            parse_line(b"pgreplica-done 0 4096 base/"),
            Line::Done {
                bytes_sent: 0,
                length: 4096,
                name: "base".into()
            }
        );
        // A backslash that is not an escape stays.
        assert_eq!(decode_name(b"a\\#9x\\b"), b"a\\#9x\\b");
        assert_eq!(decode_name(b"\\#012"), b"\n");
    }

    #[test]
    fn parses_progress_lines_and_ignores_the_rest() {
        assert_eq!(
            parse_line(b"        4292611  21%    3.94MB/s    0:00:03"),
            Line::Progress(4_292_611)
        );
        assert_eq!(
            parse_line(b"  3 0%  0.00kB/s  0:00:00 (xfr#1, to-chk=2/3)"),
            Line::Progress(3)
        );
        assert_eq!(parse_line(b"sending incremental file list"), Line::Other);
        assert_eq!(parse_line(b"pgreplica-done x 1 a"), Line::Other);
        assert_eq!(parse_line(b""), Line::Other);
    }

    #[test]
    fn recognises_rsync_temp_names() {
        assert!(is_temp_of(".16384.aB3xY9", "16384"));
        assert!(is_temp_of(".odd name.abcdef", "odd name"));
        assert!(!is_temp_of(".16384.aB3xY", "16384"));
        assert!(!is_temp_of(".16384.aB3x-9", "16384"));
        assert!(!is_temp_of("16384.aB3xY9", "16384"));
        assert!(!is_temp_of(".16384_1.aB3xY9", "16384"));
    }

    #[test]
    fn exit_codes_are_classified() {
        for code in [10, 12, 20, 30, 35, 255] {
            assert!(exit_code_is_retryable(code), "{code}");
        }
        for code in [1, 2, 3, 11, 23, 24] {
            assert!(!exit_code_is_retryable(code), "{code}");
        }
        assert_eq!(exit_code_meaning(23), "partial transfer due to error");
    }
}
