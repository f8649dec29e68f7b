//! Transfer in Barman mode: the backup's file list checkpointed in the store, parallel rsync
//! streams over ssh, each file marked done the moment rsync reports it complete. StageBackup
//! copies a staged kind's files into its staging directory with the same checkpointed copy
//! ([`stored_list`], [`tidy`], [`copy_checkpointed`]).
//!
//! Resume rules (the heart of crash safety):
//! * the file list is fetched once and stored; a resume reuses it, so the transfer finishes the
//!   backup it started even if the catalogue changed;
//! * before copying, [`rsync::cleanup_partial`] tidies what a killed rsync leaves (temp files,
//!   files whose size or mtime differ from the list): the first bytes of a big file that was in
//!   flight are kept and completed with `--append-verify` (its checksum checked, so kept bytes
//!   are never trusted blindly); everything else half-written is removed;
//! * the store is the fast path, not the only truth: a file marked done that is missing from
//!   the target or differs from the list (size, mtime) — a directory deleted or replaced after a
//!   kill, a file removed by hand, a staged file UnpackBackup removed once unpacked — loses its
//!   mark and is sent again;
//! * only entries not marked done are planned, so the bytes sent again are bounded by the files
//!   that were in flight, less what of them had arrived;
//! * before the first byte, each target's file system must have room for what is still to
//!   come; a disk that fills up anyway is an operating-system error (exit 13) naming the
//!   device, and `clone resume` finishes once space is freed;
//! * done marks are flushed at least every second (and at the end), so at most one second of
//!   completed files is re-sent after a kill.

use super::guardian::thread_refused;
use super::layout::finish_layout;
use super::rsync::{self, RsyncEvent, RsyncJob, RsyncStats, TreeSource};
use super::stream::{Engine, StreamSource, MANIFEST};
use super::streams::plan_streams;
use super::verifier::{Check, Landing, Verdict, Verifier};
use crate::barman::{data_dir, tablespace_dir, Barman};
use crate::datadir::wal_dir_name;
use crate::diskspace::{self, Need};
use crate::error::{ErrorKind, Result};
use crate::runner::StepContext;
use states::{
    BackupFacts, BarmanTarget, CloneRequest, EntryKind, ManifestEntry, PreparedDirs,
    TablespaceTarget, TransferSummary,
};
use std::collections::BTreeSet;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Done marks are committed to disk at least this often.
const FLUSH_EVERY: Duration = Duration::from_secs(1);

/// rsync's `--timeout` (seconds without any data moving before rsync gives up): with ssh's
/// keep-alives ([`crate::barman::ssh::DEFAULTS`]) a dead Barman host or network is noticed
/// within about a minute. `PGREPLICA_RSYNC_TIMEOUT` overrides it (0: no limit).
pub const RSYNC_IO_TIMEOUT_S: u64 = 60;

/// The environment variable that overrides [`RSYNC_IO_TIMEOUT_S`].
pub const RSYNC_TIMEOUT_ENV: &str = "PGREPLICA_RSYNC_TIMEOUT";

/// `--timeout=N` for rsync, from [`RSYNC_TIMEOUT_ENV`] or the default; none for 0.
fn io_timeout_arg() -> Result<Option<String>> {
    timeout_arg(std::env::var(RSYNC_TIMEOUT_ENV).ok())
}

/// `--timeout=N` for `setting` (the variable's value, if set).
fn timeout_arg(setting: Option<String>) -> Result<Option<String>> {
    let seconds = match setting {
        Some(text) if !text.is_empty() => text.trim().parse::<u64>().map_err(|_| {
            crate::error::Error::new(
                crate::error::ErrorKind::Config,
                format!("{RSYNC_TIMEOUT_ENV} is not a number of seconds: \"{text}\""),
            )
            .hint(format!(
                "set {RSYNC_TIMEOUT_ENV} to whole seconds (0: rsync waits forever), or unset it"
            ))
        })?,
        _ => RSYNC_IO_TIMEOUT_S,
    };
    Ok((seconds > 0).then(|| format!("--timeout={seconds}")))
}

/// The environment variable that makes rsync compress in transit: `zstd`, `lz4` or `zlib`
/// (rsync's `--compress --compress-choice=…`); unset, empty or `none` for no compression. For a
/// slow link, where the CPU it costs buys back more network time than it takes; on a LAN it
/// only costs (docs/operations.md, docs/benchmarks.md).
pub const RSYNC_COMPRESS_ENV: &str = "PGREPLICA_RSYNC_COMPRESS";

/// The compressions rsync 3.2 and later accept in `--compress-choice` that pgreplica offers.
const COMPRESSIONS: [&str; 3] = ["zstd", "lz4", "zlib"];

/// rsync's compression arguments for `setting` (the value of [`RSYNC_COMPRESS_ENV`], if set).
fn compress_args(setting: Option<String>) -> Result<Vec<String>> {
    match setting.as_deref().map(str::trim) {
        None | Some("") | Some("none") => Ok(Vec::new()),
        Some(choice) if COMPRESSIONS.contains(&choice) => Ok(vec![
            "--compress".to_string(),
            format!("--compress-choice={choice}"),
        ]),
        Some(other) => Err(crate::error::Error::new(
            crate::error::ErrorKind::Config,
            format!("{RSYNC_COMPRESS_ENV} is not a compression rsync offers: \"{other}\""),
        )
        .hint(format!(
            "set {RSYNC_COMPRESS_ENV} to zstd, lz4, zlib or none, or unset it"
        ))),
    }
}

/// Runs the transfer of the pinned `backup` from `target` into the prepared `dirs`.
pub async fn run(
    ctx: &mut StepContext<'_>,
    target: &BarmanTarget,
    backup: &BackupFacts,
    dirs: &PreparedDirs,
) -> Result<TransferSummary> {
    let request = ctx.request().clone();
    let barman = Barman::from_target(target, &request.ssh_options);
    let job = RsyncJob {
        source: format!("{}:{}/", barman.host, data_dir(backup)),
        rsh: Some(barman.rsync_rsh()),
        dest: PathBuf::from(&dirs.data_dir),
        tablespaces: dirs
            .tablespaces
            .iter()
            .map(|t| TreeSource {
                root: t.oid,
                source: format!("{}:{}/", barman.host, tablespace_dir(backup, t.oid)),
                dest: PathBuf::from(&t.path),
            })
            .collect(),
        extra_args: rsync_args(&request)?,
        entries: Vec::new(),
        partials: BTreeSet::new(),
    };
    let copy = Copy {
        what: format!("backup {}", backup.backup_id),
        source: "Barman",
        remove_extraneous: dirs.reused_existing.then_some(backup.pg_version),
        targets: std::iter::once(dirs.data_dir.as_str())
            .chain(dirs.waldir.as_deref())
            .chain(dirs.tablespaces.iter().map(|t| t.path.as_str()))
            .map(PathBuf::from)
            .collect(),
        decrypted_roots: Vec::new(),
        check: true,
    };
    let list = list_backup(&barman, backup, &request);
    let entries = stored_list(ctx, &copy, &job, list).await?;
    let mut job = RsyncJob { entries, ..job };
    let bytes_kept = tidy(&mut job, &copy)?;
    // Before the first byte: room for what is still to come, on every target's file system.
    let needs = space_needs(
        &job.entries,
        &job.dest,
        dirs.waldir.as_deref().map(Path::new),
        &dirs.tablespaces,
    );
    let room = diskspace::check(&needs)?;
    crate::info!("free disk: {room}");
    barman.open_shared_connection().await?;
    // rsync's delta wins where the target already holds the backup's files (`--force` into a
    // used directory); elsewhere the engine the operator chose.
    let engine = match Engine::from_env()? {
        Engine::Stream if !dirs.reused_existing => Engine::Stream,
        _ => Engine::Rsync,
    };
    let source = StreamSource {
        barman: barman.clone(),
        remote_dirs: std::iter::once((0, data_dir(backup)))
            .chain(
                dirs.tablespaces
                    .iter()
                    .map(|t| (t.oid, tablespace_dir(backup, t.oid))),
            )
            .collect(),
        bwlimit_kbps: request.bwlimit_kbps,
    };
    let (job, summary) =
        copy_checkpointed(ctx, job, &copy, bytes_kept, Some(&source), engine).await?;
    finish_layout(Path::new(&dirs.data_dir), backup.pg_version, dirs)?;
    crate::debug!(
        "transfer of {} entries into \"{}\" complete (jobs {})",
        job.entries.len(),
        dirs.data_dir,
        request.jobs
    );
    Ok(summary)
}

/// rsync's options from the request and the environment, for every stream: `--bwlimit`,
/// `--timeout` unless [`RSYNC_TIMEOUT_ENV`] is 0, and the compression [`RSYNC_COMPRESS_ENV`]
/// names.
pub(crate) fn rsync_args(request: &CloneRequest) -> Result<Vec<String>> {
    Ok(request
        .bwlimit_kbps
        .map(|k| format!("--bwlimit={k}"))
        .into_iter()
        .chain(io_timeout_arg()?)
        .chain(compress_args(std::env::var(RSYNC_COMPRESS_ENV).ok())?)
        .collect())
}

/// What a checkpointed copy is about, for its messages and its tidying.
pub(crate) struct Copy {
    /// What is copied, for messages: `backup 20261125T061436`.
    pub(crate) what: String,
    /// Where from, for messages: `Barman`.
    pub(crate) source: &'static str,
    /// With `--force` into a used data directory: remove what the list lacks, keeping the
    /// links pgreplica makes for a server of this version.
    pub(crate) remove_extraneous: Option<u32>,
    /// The directories the copy writes into (the WAL directory included), for naming the one
    /// whose file system filled up.
    pub(crate) targets: Vec<PathBuf>,
    /// Roots of the list whose `*.gpg` files arrive decrypted, under their name without the
    /// `.gpg` and at a size the list does not know (StageBackup's encrypted trees).
    pub(crate) decrypted_roots: Vec<u32>,
    /// Whether the copy fills the data directory whose `backup_manifest` VerifyCopy checks
    /// (Transfer, not StageBackup): each file is then checked against the manifest as it is
    /// copied, and the check recorded beside its done mark.
    pub(crate) check: bool,
}

/// The clone's file list: the stored one, or, on the first attempt, the one `list` fetches,
/// stored before anything is copied, so a resume finishes the copy it started. On a resume,
/// the done marks that `job`'s target directories no longer bear out are taken back
/// ([`rederive_done`]).
pub(crate) async fn stored_list(
    ctx: &StepContext<'_>,
    copy: &Copy,
    job: &RsyncJob,
    list: impl std::future::Future<Output = Result<Vec<ManifestEntry>>>,
) -> Result<Vec<ManifestEntry>> {
    let files = ctx.store.files();
    let mut entries = files.entries()?;
    if entries.is_empty() {
        entries = list.await?;
        files.replace(&entries)?;
        // "Files" are regular files, as everywhere pgreplica counts them (not directories).
        let (bytes, files) = totals(&entries, |_| true);
        crate::info!(
            "{} holds {files} files, {}",
            copy.what,
            crate::progress::human_bytes(bytes)
        );
    } else {
        let gone = rederive_done(&mut entries, job, &copy.decrypted_roots);
        for entry in &gone {
            files.unmark(entry.root, &entry.path)?;
        }
        if !gone.is_empty() {
            files.flush()?;
            crate::notice!(
                "{} file(s) recorded as copied are missing from the target or differ from the backup: they are copied again",
                gone.len()
            );
        }
    }
    Ok(entries)
}

/// Tidies what a killed rsync left in `job`'s targets ([`rsync::cleanup_partial`]) and, with
/// `--force`, what the list lacks; marks the partial copies kept for `--append-verify`.
/// Returns the bytes kept.
pub(crate) fn tidy(job: &mut RsyncJob, copy: &Copy) -> Result<u64> {
    // Partial copies first: a kept one moves to its file's final name, which the removal of
    // what the backup lacks then leaves alone.
    let cleanup = rsync::cleanup_partial(job)?;
    if !cleanup.removed.is_empty() {
        crate::notice!(
            "removed {} partial file(s) left by an interrupted transfer",
            cleanup.removed.len()
        );
        for path in &cleanup.removed {
            crate::debug!("removed \"{}\"", path.display());
        }
    }
    let bytes_kept = cleanup.kept.iter().map(|&(_, bytes)| bytes).sum();
    if !cleanup.kept.is_empty() {
        crate::notice!(
            "continuing {} partially copied file(s) where they stopped ({} already there)",
            cleanup.kept.len(),
            crate::progress::human_bytes(bytes_kept)
        );
        for &(index, bytes) in &cleanup.kept {
            crate::debug!("kept {bytes} bytes of \"{}\"", job.entries[index].path);
        }
    }
    job.partials = cleanup.kept.iter().map(|&(index, _)| index).collect();
    if let Some(pg_version) = copy.remove_extraneous {
        let extraneous = remove_extraneous(job, pg_version)?;
        if extraneous > 0 {
            crate::notice!(
                "removed {extraneous} file(s) and directories that are not in {}",
                copy.what
            );
        }
    }
    Ok(bytes_kept)
}

/// The checkpointed copy of Transfer and StageBackup: the entries of `job` not done yet (its
/// list, from [`stored_list`], tidied by [`tidy`], which kept `bytes_kept`) copied by parallel
/// rsync streams — or, with [`Engine::Stream`], the streaming engine's tar streams from
/// `source` — each marked done in the store as the engine reports it. With rsync, the files a
/// killed copy left in part are first completed from their tails from `source`, when the copy
/// is checked against backup_manifest ([`tail_first`]). Returns the job and the summary.
pub(crate) async fn copy_checkpointed(
    ctx: &mut StepContext<'_>,
    job: RsyncJob,
    copy: &Copy,
    bytes_kept: u64,
    source: Option<&StreamSource>,
    engine: Engine,
) -> Result<(RsyncJob, TransferSummary)> {
    let stream = source.filter(|_| engine == Engine::Stream);
    let jobs = ctx.request().jobs;
    let files = ctx.store.files();
    let (bytes_total, files_total) = totals(&job.entries, |_| true);
    let (bytes_done, files_done) = totals(&job.entries, |e| e.done);
    if files_done > 0 {
        crate::notice!("resuming the transfer: {files_done} of {files_total} files already copied");
    }
    let tails = match source {
        Some(source) if stream.is_none() => tail_first(&job, copy).map(|t| (source, t)),
        _ => None,
    };
    let plan = match &tails {
        // rsync leaves what the tails complete.
        Some((_, tails)) => {
            let mut rest = job.entries.clone();
            for &i in tails {
                rest[i].done = true;
            }
            plan_streams(&rest, jobs)
        }
        None => plan_streams(&job.entries, jobs),
    };
    crate::notice!(
        "retrieving {} from {} ({} {} stream(s))...",
        copy.what,
        copy.source,
        plan.streams.len().max(1),
        if stream.is_some() { "tar" } else { "rsync" }
    );
    // The bar starts after the last log line of the step's preamble, so it is drawn once.
    ctx.progress
        .set_totals(bytes_total, files_total, bytes_done, files_done);
    let started = Instant::now();
    let mut last_flush = Instant::now();
    let mut flush_error = None;
    let progress = ctx.progress;
    // Bytes each stream has counted, from rsync's own counters (the bar moves inside big files
    // too), and of those the kept partial data read back: the position counts it, the rate not.
    // One slot per stream, one for rsync's final phase, one for the tails.
    let tail_slot = plan.streams.len() + 1;
    let mut stream_bytes = vec![(0_u64, 0_u64); tail_slot + 1];
    // rsync's files are checked as they complete, on a thread of their own; the streaming
    // engine checks them as they arrive.
    let verifier = match (copy.check, stream) {
        (true, None) => Some(Verifier::start().map_err(|e| thread_refused("a verifier", e))?),
        _ => None,
    };
    let manifest = job
        .entries
        .iter()
        .position(|e| e.root == 0 && e.path == MANIFEST);
    if let (Some(verifier), Some(i)) = (&verifier, manifest) {
        if job.entries[i].done {
            verifier.manifest(Landing {
                file: job.dest.join(MANIFEST),
                size: job.entries[i].size,
                mtime: job.entries[i].mtime,
            });
        }
    }
    // The wall time the copy spends in the store (marks, checks, flushes): the checkpoints'
    // own cost.
    let mut checkpoint = Duration::ZERO;
    let mut checked = Checked::default();
    let mut on_event = |event| match event {
        RsyncEvent::FileDone {
            index,
            root,
            path,
            checked: on_its_way,
            ..
        } => {
            let entry = &job.entries[index];
            let marked = timed(&mut checkpoint, || {
                // The mark first: a new mark takes any earlier check back.
                let marked = files.mark_done(root, &path);
                if on_its_way && copy.check {
                    files.mark_checked(root, &path);
                }
                marked
            });
            if let Err(e) = marked {
                flush_error.get_or_insert(e);
            }
            checked.files += u64::from(on_its_way && copy.check);
            if let Some(verifier) = verifier.as_ref().filter(|_| !on_its_way) {
                let landing = |e: &ManifestEntry| {
                    job_root(&job, e.root).map(|r| Landing {
                        file: r.join(&e.path),
                        size: e.size,
                        mtime: e.mtime,
                    })
                };
                if entry.kind == EntryKind::File {
                    if let Some(landing) = landing(entry) {
                        verifier.submit(Check {
                            index,
                            root,
                            path,
                            landing,
                        });
                    }
                }
                if let Some(landing) = manifest
                    .filter(|&m| m == index)
                    .and_then(|m| landing(&job.entries[m]))
                {
                    verifier.manifest(landing);
                }
                let verdicts = verifier.ready();
                timed(&mut checkpoint, || checked.record(&files, &job, verdicts));
            }
            // Files are regular files, as in the totals: directories and links are not counted.
            if entry.kind == EntryKind::File {
                progress.add_file();
            }
            if last_flush.elapsed() >= FLUSH_EVERY {
                if let Err(e) = timed(&mut checkpoint, || files.flush()) {
                    flush_error.get_or_insert(e);
                }
                last_flush = Instant::now();
            }
        }
        RsyncEvent::Progress {
            stream,
            bytes,
            present,
        } => {
            if let Some(slot) = stream_bytes.get_mut(stream) {
                *slot = (bytes, present);
            }
            let (counted, read_back) = stream_bytes
                .iter()
                .fold((0, 0), |(b, p), &(bytes, present)| (b + bytes, p + present));
            progress.set_bytes_done(bytes_done + counted, read_back);
        }
    };
    let stats = match (stream, tails) {
        (Some(source), _) => super::stream::run_streams(source, &job, &plan, on_event).await,
        (None, Some((source, tails))) => {
            // The tails report their bytes in their own slot.
            let tailed = super::stream::continue_partials(source, &job, tails, |event| {
                on_event(match event {
                    RsyncEvent::Progress { bytes, present, .. } => RsyncEvent::Progress {
                        stream: tail_slot,
                        bytes,
                        present,
                    },
                    done => done,
                })
            })
            .await;
            match tailed {
                Ok(tailed) => rsync::run_streams(&job, &plan, &mut on_event)
                    .await
                    .map(|rest| RsyncStats {
                        files: tailed.files + rest.files,
                        bytes_sent: tailed.bytes_sent + rest.bytes_sent,
                        duration: tailed.duration + rest.duration,
                    }),
                Err(e) => Err(e),
            }
        }
        (None, None) => rsync::run_streams(&job, &plan, on_event).await,
    };
    // The checks still queued finish before the outcome: a copy that succeeded waits for them.
    if let Some(verifier) = verifier {
        let rest = if stats.is_ok() {
            verifier.finish()
        } else {
            Vec::new()
        };
        timed(&mut checkpoint, || checked.record(&files, &job, rest));
    }
    // Whatever happened, what was reported done is committed before the step's outcome.
    timed(&mut checkpoint, || files.flush())?;
    let stats = stats.map_err(|e| disk_full(e, &copy.targets))?;
    if let Some(e) = flush_error.or(checked.failure) {
        return Err(e);
    }
    if copy.check {
        crate::info!(
            "{} file(s) checked against backup_manifest as they were copied",
            checked.files
        );
    }
    let summary = TransferSummary {
        files: files_total,
        bytes_total,
        bytes_sent: stats.bytes_sent,
        files_reused: files_done,
        bytes_kept,
        duration_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
        restarts: 0,
        checkpoint_ms: u64::try_from(checkpoint.as_millis()).unwrap_or(u64::MAX),
    };
    Ok((job, summary))
}

/// The entries the rsync engine leaves to [`continue_partials`](super::stream::continue_partials):
/// the kept partial files, and backup_manifest before them when it is not copied yet, since
/// each file's tail is checked with the manifest's checksum over the whole file. None when
/// nothing was kept, or the copy is not checked against a backup_manifest in the list (a
/// staged archive, a backup without one): rsync's `--append-verify` completes those.
fn tail_first(job: &RsyncJob, copy: &Copy) -> Option<Vec<usize>> {
    let manifest = job
        .entries
        .iter()
        .position(|e| e.root == 0 && e.path == MANIFEST)?;
    if !copy.check || job.partials.is_empty() {
        return None;
    }
    let manifest = (!job.entries[manifest].done).then_some(manifest);
    Some(
        manifest
            .into_iter()
            .chain(job.partials.iter().copied())
            .collect(),
    )
}

/// Runs `op`, adding the wall time it took to `total`.
fn timed<T>(total: &mut Duration, op: impl FnOnce() -> T) -> T {
    let started = Instant::now();
    let result = op();
    *total += started.elapsed();
    result
}

/// The checks of a copy so far: how many files matched, the first that did not.
#[derive(Default)]
struct Checked {
    files: u64,
    failure: Option<crate::error::Error>,
}

impl Checked {
    /// Records the verifier's `verdicts` on `job`'s entries: a match beside the done mark; a
    /// mismatch takes the mark back and removes the file, so a resume sends it again (and
    /// finds it damaged again, as the streaming engine would), and fails the copy.
    fn record(
        &mut self,
        files: &crate::store::FileTable<'_>,
        job: &RsyncJob,
        verdicts: Vec<Verdict>,
    ) {
        for verdict in verdicts {
            match verdict {
                Verdict::Matched { index } => {
                    let entry = &job.entries[index];
                    files.mark_checked(entry.root, &entry.path);
                    self.files += 1;
                }
                Verdict::Mismatch { index, expected } => {
                    let entry = &job.entries[index];
                    if let Err(e) = files.unmark(entry.root, &entry.path) {
                        self.failure.get_or_insert(e);
                    }
                    if let Some(file) = job_root(job, entry.root).map(|r| r.join(&entry.path)) {
                        let _ = std::fs::remove_file(file);
                    }
                    self.failure
                        .get_or_insert_with(|| super::checksums::mismatch(&entry.path, &expected));
                }
            }
        }
    }
}

/// Bytes the WAL location needs before the standby can start: one segment of the default size,
/// for the WAL it fetches first.
pub const WAL_SEGMENT_NEED: u64 = 16 << 20;

/// What the copy of `entries` still needs on each target: for every file not done, its size
/// less what is already at its name (a kept partial copy, or a file of a reused directory);
/// files below `pg_wal/` go to the WAL directory when there is one, which also needs room for
/// [`WAL_SEGMENT_NEED`].
pub fn space_needs(
    entries: &[ManifestEntry],
    data_dir: &Path,
    waldir: Option<&Path>,
    tablespaces: &[TablespaceTarget],
) -> Vec<Need> {
    let wal_location = waldir.map_or_else(|| data_dir.to_path_buf(), Path::to_path_buf);
    let mut needs = vec![
        Need {
            dir: data_dir.to_path_buf(),
            bytes: 0,
        },
        Need {
            dir: wal_location.clone(),
            bytes: WAL_SEGMENT_NEED,
        },
    ];
    needs.extend(tablespaces.iter().map(|t| Need {
        dir: PathBuf::from(&t.path),
        bytes: 0,
    }));
    for entry in entries
        .iter()
        .filter(|e| e.kind == EntryKind::File && !e.done)
    {
        let Some(root) = root_dir(entry.root, data_dir, tablespaces) else {
            continue;
        };
        let target = root.join(&entry.path);
        let present = std::fs::symlink_metadata(&target)
            .ok()
            .filter(|m| m.is_file())
            .map_or(0, |m| m.len());
        let bytes = entry.size.saturating_sub(present);
        let in_wal = entry.root == 0 && entry.path.starts_with("pg_wal/") && waldir.is_some();
        let dir = if in_wal { wal_location.clone() } else { root };
        if let Some(need) = needs.iter_mut().find(|n| n.dir == dir) {
            need.bytes += bytes;
        }
    }
    needs
}

/// The target directory of a file list root: the data directory, or a tablespace's target.
fn root_dir(root: u32, data_dir: &Path, tablespaces: &[TablespaceTarget]) -> Option<PathBuf> {
    if root == 0 {
        return Some(data_dir.to_path_buf());
    }
    tablespaces
        .iter()
        .find(|t| t.oid == root)
        .map(|t| PathBuf::from(&t.path))
}

/// Takes back the done marks `job`'s target directories no longer bear out: a done file that
/// is missing or whose size or mtime differs from the list, a done directory that is gone; a
/// done file of `decrypted_roots` whose clear copy is missing. Returns the entries unmarked
/// (already set not done in `entries`).
fn rederive_done(
    entries: &mut [ManifestEntry],
    job: &RsyncJob,
    decrypted_roots: &[u32],
) -> Vec<ManifestEntry> {
    let mut gone = Vec::new();
    for entry in entries.iter_mut().filter(|e| e.done) {
        let Some(root) = job_root(job, entry.root) else {
            continue;
        };
        let decrypted = (decrypted_roots.contains(&entry.root))
            .then(|| entry.path.strip_suffix(".gpg"))
            .flatten();
        let holds = match decrypted {
            // Decrypted on its way: its clear size is not in the list.
            Some(clear) => root.join(clear).is_file(),
            None => {
                let found = std::fs::symlink_metadata(root.join(&entry.path));
                match (entry.kind, &found) {
                    (EntryKind::File, Ok(meta)) => {
                        meta.is_file() && meta.len() == entry.size && meta.mtime() == entry.mtime
                    }
                    (EntryKind::Dir, Ok(meta)) => meta.is_dir(),
                    (EntryKind::Symlink, Ok(meta)) => meta.file_type().is_symlink(),
                    (_, Err(_)) => false,
                }
            }
        };
        if !holds {
            entry.done = false;
            gone.push(entry.clone());
        }
    }
    gone
}

/// Where the entries of list root `root` go: `job`'s destination for 0, else its tree's.
fn job_root(job: &RsyncJob, root: u32) -> Option<&Path> {
    if root == 0 {
        return Some(&job.dest);
    }
    job.tablespaces
        .iter()
        .find(|t| t.root == root)
        .map(|t| t.dest.as_path())
}

/// rsync's failure when one of `targets` ran out of space, as the operating-system error
/// (exit 13) naming the device; any other failure unchanged.
fn disk_full(error: crate::error::Error, targets: &[PathBuf]) -> crate::error::Error {
    if error.kind != ErrorKind::Rsync {
        return error;
    }
    let said_so = [Some(&error.message), error.detail.as_ref()]
        .into_iter()
        .flatten()
        .any(|text| text.contains("No space left on device"));
    // The fullest target is the one that ran out.
    let fullest = targets
        .iter()
        .filter_map(|t| diskspace::free_bytes(t).ok().map(|f| (f, t)))
        .min_by_key(|(free, _)| *free);
    match fullest {
        Some((free, dir)) if said_so || free < 64 * 1024 => {
            diskspace::full(dir, error.detail.clone())
        }
        _ => error,
    }
}

/// The backup's file list: the data directory and each tablespace.
pub async fn list_backup(
    barman: &Barman,
    backup: &BackupFacts,
    request: &CloneRequest,
) -> Result<Vec<ManifestEntry>> {
    crate::info!("listing the files of backup {}", backup.backup_id);
    let mut entries = barman.list_files(backup, 0, &data_dir(backup)).await?;
    if request.waldir.is_some() {
        // pg_wal is a link to the WAL directory: an rsync'd directory would replace it.
        let wal = wal_dir_name(backup.pg_version);
        entries.retain(|e| !(e.root == 0 && e.path == wal));
    }
    for tablespace in &backup.tablespaces {
        let dir = tablespace_dir(backup, tablespace.oid);
        entries.extend(barman.list_files(backup, tablespace.oid, &dir).await?);
    }
    Ok(entries)
}

/// With `--force`, the target held files of its own: remove every entry that the backup lacks
/// (as `barman restore`'s `--delete` does), so the result equals a clone into an empty
/// directory. Files the backup has are kept: rsync re-sends them only if they differ.
/// The WAL directory link and the tablespace links are pgreplica's own and stay.
fn remove_extraneous(job: &RsyncJob, pg_version: u32) -> Result<u64> {
    use std::collections::HashSet;
    let listed: HashSet<(u32, &str)> = job
        .entries
        .iter()
        .map(|e| (e.root, e.path.as_str()))
        .collect();
    let wal = wal_dir_name(pg_version);
    let mut roots = vec![(0_u32, job.dest.clone())];
    roots.extend(job.tablespaces.iter().map(|t| (t.root, t.dest.clone())));
    let mut removed = 0;
    for (root, dest) in roots {
        let mut pending = vec![dest.clone()];
        while let Some(dir) = pending.pop() {
            let Ok(listing) = std::fs::read_dir(&dir) else {
                continue;
            };
            for entry in listing.flatten() {
                let path = entry.path();
                let relative = path
                    .strip_prefix(&dest)
                    .expect("walked below dest")
                    .to_string_lossy()
                    .into_owned();
                let is_link = entry.file_type().is_ok_and(|t| t.is_symlink());
                let ours =
                    root == 0 && is_link && (relative == wal || relative.starts_with("pg_tblspc/"));
                if ours {
                    continue;
                }
                if listed.contains(&(root, relative.as_str())) {
                    if entry.file_type().is_ok_and(|t| t.is_dir()) {
                        pending.push(path);
                    }
                    continue;
                }
                let result = if entry.file_type().is_ok_and(|t| t.is_dir()) {
                    std::fs::remove_dir_all(&path)
                } else {
                    std::fs::remove_file(&path)
                };
                result.map_err(|e| crate::durable::io_error("remove", &path, e))?;
                crate::debug!("removed \"{}\" (not in the backup)", path.display());
                removed += 1;
            }
        }
    }
    Ok(removed)
}

fn totals(entries: &[ManifestEntry], select: impl Fn(&ManifestEntry) -> bool) -> (u64, u64) {
    entries
        .iter()
        .filter(|e| e.kind == EntryKind::File && select(e))
        .fold((0, 0), |(bytes, files), e| (bytes + e.size, files + 1))
}

#[cfg(test)]
mod tests {
    #[test]
    fn compression_in_transit_is_one_of_rsyncs_and_anything_else_is_refused() {
        let args = |v: Option<&str>| super::compress_args(v.map(String::from));
        for off in [None, Some(""), Some("none"), Some(" none ")] {
            assert!(args(off).unwrap().is_empty(), "{off:?}");
        }
        assert_eq!(
            args(Some("zstd")).unwrap(),
            ["--compress", "--compress-choice=zstd"]
        );
        assert_eq!(args(Some("lz4")).unwrap()[1], "--compress-choice=lz4");
        let err = args(Some("gzip")).unwrap_err();
        assert_eq!(err.exit_code(), 1);
        err.assert_says(
            "PGREPLICA_RSYNC_COMPRESS is not a compression rsync offers: \"gzip\"",
            "set PGREPLICA_RSYNC_COMPRESS to zstd, lz4, zlib or none, or unset it",
        );
    }

    /// The real rsync accepts every compression offered, and copies with it.
    #[test]
    fn the_real_rsync_copies_with_each_compression() {
        let dir = std::env::temp_dir().join(format!("pgreplica-compress-{}", std::process::id()));
        let (src, dst) = (dir.join("src"), dir.join("dst"));
        std::fs::create_dir_all(&src).unwrap();
        std::fs::write(src.join("f"), "x".repeat(100_000)).unwrap();
        for choice in super::COMPRESSIONS {
            let _ = std::fs::remove_dir_all(&dst);
            let status = std::process::Command::new("rsync")
                .arg("-a")
                .args(super::compress_args(Some(choice.to_string())).unwrap())
                .arg(format!("{}/", src.display()))
                .arg(format!("{}/", dst.display()))
                .status()
                .expect("rsync runs");
            assert!(status.success(), "{choice}: {status}");
            assert_eq!(std::fs::read(dst.join("f")).unwrap().len(), 100_000);
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn rsync_gives_up_on_a_silent_peer_unless_told_otherwise() {
        let arg = |v: Option<&str>| super::timeout_arg(v.map(String::from));
        assert_eq!(arg(None).unwrap().as_deref(), Some("--timeout=60"));
        assert_eq!(arg(Some("")).unwrap().as_deref(), Some("--timeout=60"));
        assert_eq!(arg(Some("300")).unwrap().as_deref(), Some("--timeout=300"));
        assert_eq!(arg(Some("0")).unwrap(), None);
        arg(Some("soon")).unwrap_err().assert_says(
            "PGREPLICA_RSYNC_TIMEOUT is not a number of seconds",
            "whole seconds",
        );
    }
}
