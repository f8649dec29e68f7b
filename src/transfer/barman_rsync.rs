//! Transfer in Barman mode: the backup's file list checkpointed in the store, parallel rsync
//! streams over ssh, each file marked done the moment rsync reports it complete.
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
//!   kill, a file removed by hand — loses its mark and is sent again;
//! * only entries not marked done are planned, so the bytes sent again are bounded by the files
//!   that were in flight, less what of them had arrived;
//! * before the first byte, each target's file system must have room for what is still to
//!   come; a disk that fills up anyway is an operating-system error (exit 13) naming the
//!   device, and `clone resume` finishes once space is freed;
//! * done marks are flushed at least every second (and at the end), so at most one second of
//!   completed files is re-sent after a kill.

use super::rsync::{self, RsyncEvent, RsyncJob, TreeSource};
use super::streams::plan_streams;
use crate::barman::{data_dir, tablespace_dir, Barman};
use crate::datadir::{create_empty_pgdata_dirs, wal_dir_name, write_tablespace_map};
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

/// Runs the transfer of the pinned `backup` from `target` into the prepared `dirs`.
pub async fn run(
    ctx: &mut StepContext<'_>,
    target: &BarmanTarget,
    backup: &BackupFacts,
    dirs: &PreparedDirs,
) -> Result<TransferSummary> {
    let request = ctx.request();
    let barman = Barman::from_target(target, &request.ssh_options);
    let files = ctx.store.files();
    let mut entries = files.entries()?;
    if entries.is_empty() {
        entries = list_backup(&barman, backup, request).await?;
        files.replace(&entries)?;
        crate::info!(
            "backup {} holds {} files, {}",
            backup.backup_id,
            entries.len(),
            crate::progress::human_bytes(entries.iter().map(|e| e.size).sum())
        );
    } else {
        let gone = rederive_done(&mut entries, dirs);
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
    let mut job = RsyncJob {
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
        extra_args: request
            .bwlimit_kbps
            .map(|k| format!("--bwlimit={k}"))
            .into_iter()
            .chain(io_timeout_arg()?)
            .collect(),
        entries,
        partials: BTreeSet::new(),
    };
    // Partial copies first: a kept one moves to its file's final name, which the removal of
    // what the backup lacks then leaves alone.
    let cleanup = rsync::cleanup_partial(&job)?;
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
    if dirs.reused_existing {
        let extraneous = remove_extraneous(&job, backup.pg_version)?;
        if extraneous > 0 {
            crate::notice!(
                "removed {extraneous} file(s) and directories that are not in backup {}",
                backup.backup_id
            );
        }
    }
    // Before the first byte: room for what is still to come, on every target's file system.
    let needs = space_needs(
        &job.entries,
        &job.dest,
        dirs.waldir.as_deref().map(Path::new),
        &dirs.tablespaces,
    );
    let room = diskspace::check(&needs)?;
    crate::info!("free disk: {room}");
    let (bytes_total, files_total) = totals(&job.entries, |_| true);
    let (bytes_done, files_done) = totals(&job.entries, |e| e.done);
    if files_done > 0 {
        crate::notice!("resuming the transfer: {files_done} of {files_total} files already copied");
    }
    let plan = plan_streams(&job.entries, request.jobs);
    crate::notice!(
        "retrieving backup {} from Barman ({} stream(s))...",
        backup.backup_id,
        plan.streams.len().max(1)
    );
    // The bar starts after the last log line of the step's preamble, so it is drawn once.
    ctx.progress
        .set_totals(bytes_total, files_total, bytes_done, files_done);
    let started = Instant::now();
    let mut last_flush = Instant::now();
    let mut flush_error = None;
    let progress = ctx.progress;
    // Bytes each stream has sent, from rsync's own counters: the bar moves inside big files too.
    let mut stream_bytes = vec![0_u64; plan.streams.len() + 1];
    let stats = rsync::run_streams(&job, &plan, |event| match event {
        RsyncEvent::FileDone { root, path, .. } => {
            if let Err(e) = files.mark_done(root, &path) {
                flush_error.get_or_insert(e);
            }
            progress.add_file();
            if last_flush.elapsed() >= FLUSH_EVERY {
                if let Err(e) = files.flush() {
                    flush_error.get_or_insert(e);
                }
                last_flush = Instant::now();
            }
        }
        RsyncEvent::Progress { stream, bytes } => {
            if let Some(slot) = stream_bytes.get_mut(stream) {
                *slot = bytes;
            }
            progress.set_bytes_done(bytes_done + stream_bytes.iter().sum::<u64>());
        }
    })
    .await;
    // Whatever happened, what was reported done is committed before the step's outcome.
    files.flush()?;
    let stats = stats.map_err(|e| disk_full(e, dirs))?;
    if let Some(e) = flush_error {
        return Err(e);
    }
    finish_layout(&job, backup, request, dirs)?;
    Ok(TransferSummary {
        files: files_total,
        bytes_total,
        bytes_sent: stats.bytes_sent,
        files_reused: files_done,
        bytes_kept,
        duration_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
        restarts: 0,
    })
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

/// Takes back the done marks the target no longer bears out: a done file that is missing or
/// whose size or mtime differs from the list, a done directory that is gone. Returns the
/// entries unmarked (already set not done in `entries`).
fn rederive_done(entries: &mut [ManifestEntry], dirs: &PreparedDirs) -> Vec<ManifestEntry> {
    let data_dir = Path::new(&dirs.data_dir);
    let mut gone = Vec::new();
    for entry in entries.iter_mut().filter(|e| e.done) {
        let Some(root) = root_dir(entry.root, data_dir, &dirs.tablespaces) else {
            continue;
        };
        let found = std::fs::symlink_metadata(root.join(&entry.path));
        let holds = match (entry.kind, &found) {
            (EntryKind::File, Ok(meta)) => {
                meta.is_file() && meta.len() == entry.size && meta.mtime() == entry.mtime
            }
            (EntryKind::Dir, Ok(meta)) => meta.is_dir(),
            (EntryKind::Symlink, Ok(meta)) => meta.file_type().is_symlink(),
            (_, Err(_)) => false,
        };
        if !holds {
            entry.done = false;
            gone.push(entry.clone());
        }
    }
    gone
}

/// rsync's failure when a target ran out of space, as the operating-system error (exit 13)
/// naming the device; any other failure unchanged.
fn disk_full(error: crate::error::Error, dirs: &PreparedDirs) -> crate::error::Error {
    if error.kind != ErrorKind::Rsync {
        return error;
    }
    let said_so = [Some(&error.message), error.detail.as_ref()]
        .into_iter()
        .flatten()
        .any(|text| text.contains("No space left on device"));
    let targets = std::iter::once(dirs.data_dir.as_str())
        .chain(dirs.waldir.as_deref())
        .chain(dirs.tablespaces.iter().map(|t| t.path.as_str()));
    // The fullest target is the one that ran out.
    let fullest = targets
        .filter_map(|t| diskspace::free_bytes(Path::new(t)).ok().map(|f| (f, t)))
        .min_by_key(|(free, _)| *free);
    match fullest {
        Some((free, dir)) if said_so || free < 64 * 1024 => {
            diskspace::full(Path::new(dir), error.detail.clone())
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

/// What a data directory needs beyond the backup's files: the empty directories PostgreSQL
/// expects, tablespace links and `tablespace_map`.
fn finish_layout(
    job: &RsyncJob,
    backup: &BackupFacts,
    request: &CloneRequest,
    dirs: &PreparedDirs,
) -> Result<()> {
    let data_dir = Path::new(&dirs.data_dir);
    create_empty_pgdata_dirs(data_dir, backup.pg_version)?;
    link_tablespaces(data_dir, dirs)?;
    if write_tablespace_map(data_dir, &dirs.tablespaces)?.is_some() {
        crate::info!("tablespace_map written");
    }
    crate::debug!(
        "transfer of {} entries into \"{}\" complete (jobs {})",
        job.entries.len(),
        data_dir.display(),
        request.jobs
    );
    Ok(())
}

/// `pg_tblspc/<oid>` → the tablespace's target, as pg_basebackup and `barman restore` leave
/// them, so that pg_verifybackup finds the tablespace files before the standby first starts.
fn link_tablespaces(data_dir: &Path, dirs: &PreparedDirs) -> Result<()> {
    for target in &dirs.tablespaces {
        let link = data_dir.join("pg_tblspc").join(target.oid.to_string());
        match std::fs::read_link(&link) {
            Ok(existing) if existing == Path::new(&target.path) => continue,
            Ok(_) => std::fs::remove_file(&link)
                .map_err(|e| crate::durable::io_error("replace link", &link, e))?,
            Err(_) => {}
        }
        std::os::unix::fs::symlink(&target.path, &link)
            .map_err(|e| crate::durable::io_error("create link", &link, e))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
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
