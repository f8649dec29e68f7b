//! UnpackBackup: unpacks the staged tar files, archive by archive and entry by entry, into the
//! data directory and the tablespace targets (a single tar backup) or into staging (the tar
//! members of a chain, for CombineChain).
//!
//! Each archive's progress (the offset in its uncompressed stream up to which every entry is
//! written and synced) is checkpointed on the record at least every second, so a resume does
//! not unpack a terabyte again: it skips what was checkpointed and rewrites the entry that was
//! in flight. An archive completely unpacked is checkpointed as done, then its staged file is
//! removed, freeing staging space as early as possible. `global/pg_control` is put in place
//! only when its archive is complete, so a half-unpacked directory can never be started.

use crate::error::{Error, ErrorKind, Result};
use crate::runner::StepContext;
use crate::transfer::layout::{empty_dir, finish_layout, remove_tree};
use crate::transfer::staging::Staging;
use crate::transfer::unpack::{self, Archive};
use states::{
    ArchiveProgress, BackupFormat, ChainMember, CloneRequest, UnpackInput, UnpackStart,
    UnpackSummary, UnpackTarget,
};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;
use tokio::sync::mpsc;

/// Runs the step.
pub async fn run(ctx: &mut StepContext<'_>, input: &UnpackInput) -> Result<UnpackSummary> {
    let staging = Staging::new(&input.staging_dir);
    let started = Instant::now();
    let mut summary = UnpackSummary::default();
    let archives = archives(&staging, input)?;
    let nothing_yet = archives.iter().all(|(m, a)| {
        ctx.record.unpack_start(&m.backup_id, &file_name(a)) == UnpackStart::Beginning
    });
    if nothing_yet && input.target == UnpackTarget::DataDir && input.dirs.reused_existing {
        clear_reused(input)?;
    }
    ctx.progress
        .set_totals(input.backup.restored_bytes(), archives.len() as u64, 0, 0);
    let mut bytes = 0;
    for (member, archive) in &archives {
        let name = file_name(archive);
        summary.archives += 1;
        let start = match ctx.record.unpack_start(&member.backup_id, &name) {
            UnpackStart::Done => {
                crate::debug!(
                    "\"{}\" was unpacked by an earlier run",
                    archive.file.display()
                );
                finish_archive(archive)?;
                ctx.progress.add_file();
                continue;
            }
            UnpackStart::Beginning => ArchiveProgress::default(),
            UnpackStart::Resume(progress) => {
                crate::notice!(
                    "resuming \"{}\" after its first {} entries",
                    archive.file.display(),
                    progress.entries
                );
                summary.entries_reused += progress.entries;
                progress
            }
        };
        crate::info!(
            "unpacking \"{}\" into \"{}\"",
            archive.file.display(),
            archive.dest.display()
        );
        let stats = unpack_one(ctx, member, archive, start, bytes)
            .await
            .map_err(|e| stage_anew(e, ctx.request()))?;
        summary.entries += stats.entries;
        summary.bytes_written += stats.bytes;
        bytes += stats.bytes;
        ctx.progress.set_bytes_done(bytes, 0);
        ctx.progress.add_file();
        finish_archive(archive)?;
    }
    if input.target == UnpackTarget::DataDir {
        let data_dir = Path::new(&input.dirs.data_dir);
        let member = &input.backup.members()[0];
        place_manifest(&staging.data(member), data_dir)?;
        finish_layout(data_dir, input.backup.pg_version, &input.dirs)?;
        // Everything staged is unpacked: staging is no longer needed.
        remove_tree(staging.root())?;
        crate::notice!(
            "backup {} unpacked into \"{}\"",
            input.backup.backup_id,
            data_dir.display()
        );
    }
    summary.duration_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
    Ok(summary)
}

/// Every archive to unpack, member by member (oldest first), each member's tablespaces before
/// its data directory.
fn archives(staging: &Staging, input: &UnpackInput) -> Result<Vec<(ChainMember, Archive)>> {
    let mut archives = Vec::new();
    for member in input.backup.members() {
        let BackupFormat::Tar { compression, .. } = member.format else {
            continue;
        };
        let staged = |name: &str| {
            staging
                .data(&member)
                .join(format!("{name}.tar{}", compression.suffix()))
        };
        for tablespace in &member.tablespaces {
            let dest = match input.target {
                UnpackTarget::Staging => staging.unpacked_tablespace(&member, tablespace.oid),
                UnpackTarget::DataDir => input
                    .dirs
                    .tablespaces
                    .iter()
                    .find(|t| t.oid == tablespace.oid)
                    .map(|t| PathBuf::from(&t.path))
                    .ok_or_else(|| {
                        Error::bug(format!(
                            "tablespace {} has no prepared target",
                            tablespace.oid
                        ))
                    })?,
            };
            archives.push((
                member.clone(),
                Archive {
                    file: staged(&tablespace.oid.to_string()),
                    compression,
                    dest,
                    data_dir: None,
                },
            ));
        }
        let dest = match input.target {
            UnpackTarget::Staging => staging.unpacked(&member),
            UnpackTarget::DataDir => PathBuf::from(&input.dirs.data_dir),
        };
        archives.push((
            member.clone(),
            Archive {
                file: staged("base"),
                compression,
                dest,
                data_dir: Some(member.tablespaces.clone()),
            },
        ));
    }
    Ok(archives)
}

/// The archive's file name, as its progress is recorded.
fn file_name(archive: &Archive) -> String {
    archive
        .file
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// Runs the tar engine on a blocking thread, checkpointing the progress it reports (and
/// showing it, after the `bytes_before` this run unpacked from earlier archives, so that a big
/// archive moves the figures while it is unpacked). Dropping the future (a stop) raises the
/// engine's stop flag; it ends at its next entry or chunk.
async fn unpack_one(
    ctx: &mut StepContext<'_>,
    member: &ChainMember,
    archive: &Archive,
    start: ArchiveProgress,
    bytes_before: u64,
) -> Result<unpack::UnpackStats> {
    struct StopOnDrop(Arc<AtomicBool>);
    impl Drop for StopOnDrop {
        fn drop(&mut self) {
            self.0.store(true, Ordering::Relaxed);
        }
    }
    let stop = StopOnDrop(Arc::new(AtomicBool::new(false)));
    let (tx, mut rx) = mpsc::unbounded_channel();
    let engine = {
        let archive = archive.clone();
        let stop = stop.0.clone();
        tokio::task::spawn_blocking(move || {
            unpack::unpack(&archive, start, &stop, |progress| {
                let _ = tx.send(progress);
            })
        })
    };
    let name = file_name(archive);
    while let Some(progress) = rx.recv().await {
        ctx.record
            .archive_unpacked(&member.backup_id, &name, progress);
        ctx.checkpoint()?;
        // The tar stream's offset: file data plus headers, near enough for the figures.
        let unpacked = progress.offset.saturating_sub(start.offset);
        ctx.progress.set_bytes_done(bytes_before + unpacked, 0);
    }
    engine
        .await
        .map_err(|e| Error::bug(format!("the unpacking thread failed: {e}")))?
}

/// A damaged staged archive (the engine refuses it as a base backup error) can only be staged
/// anew: the HINT is the `clone start --force` that does it, with the options of the clone's
/// first start.
fn stage_anew(error: Error, request: &CloneRequest) -> Error {
    if error.kind != ErrorKind::BaseBackup {
        return error;
    }
    error.hint(format!(
        "the staged copy is damaged (a disk or a decryption problem): start the clone again to stage the backup anew: {}",
        crate::request::start_command(request, request.config_file.as_deref(), true)
    ))
}

/// After an archive is done (and checkpointed): `global/pg_control` takes its place, and the
/// staged file goes. Idempotent.
fn finish_archive(archive: &Archive) -> Result<()> {
    if archive.data_dir.is_some() {
        unpack::release_pg_control(&archive.dest)?;
    }
    match std::fs::remove_file(&archive.file) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(crate::durable::io_error("remove", &archive.file, e)),
    }
}

/// The backup's `backup_manifest`, staged beside its tar files, goes into the data directory
/// for VerifyCopy (Barman's own restore leaves it out), with the catalogue's mtime as a
/// Transfer's copy has it. Idempotent.
fn place_manifest(staged_data: &Path, data_dir: &Path) -> Result<()> {
    let staged = staged_data.join("backup_manifest");
    let (Ok(bytes), Ok(meta)) = (std::fs::read(&staged), std::fs::metadata(&staged)) else {
        return Ok(());
    };
    let target = data_dir.join("backup_manifest");
    crate::durable::write_atomic(&target, &bytes, 0o600)?;
    let io_error = |what, path: &Path, e| crate::durable::io_error(what, path, e);
    std::fs::File::open(&target)
        .and_then(|f| f.set_modified(meta.modified()?))
        .map_err(|e| io_error("set the time of", &target, e))?;
    std::fs::remove_file(&staged).map_err(|e| io_error("remove", &staged, e))
}

/// `--force` into a used directory: a tar backup replaces everything (nothing can be reused
/// from an archive), so the data directory (but the `pg_wal` link PrepareDirs made) and the
/// tablespace targets are emptied before the first entry.
fn clear_reused(input: &UnpackInput) -> Result<()> {
    let data_dir = Path::new(&input.dirs.data_dir);
    crate::datadir::check_postmaster(data_dir)?;
    let waldir = input.dirs.waldir.as_deref().map(Path::new);
    let mut removed = 0;
    for entry in
        std::fs::read_dir(data_dir).map_err(|e| crate::durable::io_error("read", data_dir, e))?
    {
        let path = entry
            .map_err(|e| crate::durable::io_error("read", data_dir, e))?
            .path();
        if waldir.is_some_and(|w| std::fs::read_link(&path).is_ok_and(|t| t == w)) {
            continue;
        }
        let meta = std::fs::symlink_metadata(&path)
            .map_err(|e| crate::durable::io_error("read", &path, e))?;
        if meta.is_dir() {
            std::fs::remove_dir_all(&path)
        } else {
            std::fs::remove_file(&path)
        }
        .map_err(|e| crate::durable::io_error("remove", &path, e))?;
        removed += 1;
    }
    for target in &input.dirs.tablespaces {
        removed += empty_dir(Path::new(&target.path))?;
    }
    if removed > 0 {
        crate::notice!(
            "-F/--force: removed {removed} existing entries before unpacking backup {}",
            input.backup.backup_id
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use states::Mode;

    #[test]
    fn a_damaged_staged_archive_hints_the_start_that_stages_it_anew() {
        let request = CloneRequest {
            mode: Mode::BarmanRsync,
            data_dir: "/srv/standby".into(),
            backup_selector: "20261125T061436".into(),
            // The default here, which the command leaves out.
            jobs: crate::request::default_jobs(),
            config_file: Some("/etc/repmgr.conf".into()),
            ..CloneRequest::default()
        };
        let damaged = Error::new(ErrorKind::BaseBackup, "cannot unpack \"base.tar.gz\": eof");
        let hint = stage_anew(damaged, &request).hint.unwrap_or_default();
        assert!(
            hint.ends_with(
                "stage the backup anew: pgreplica clone start -f /etc/repmgr.conf -D /srv/standby --backup-id 20261125T061436 --force"
            ),
            "{hint}"
        );
        // Any other failure keeps its own words.
        let stopped = Error::new(ErrorKind::Interrupted, "unpacking was stopped");
        assert_eq!(stage_anew(stopped, &request).hint, None);
    }
}
