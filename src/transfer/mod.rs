//! The copy methods behind the Transfer step: rsync from the Barman catalogue, pg-backup-api,
//! pg_basebackup. [`run`] makes sure the replication slot holds WAL, then runs the method the
//! machine chose with the inputs it handed over.
//!
//! **Invariant:** the copy engines import no step module; what they share with the steps
//! (directory layout, slots, the Barman client) lives in modules of its own.

pub mod backup_api;
pub mod barman_rsync;
pub mod basebackup;
pub mod checksums;
pub mod combine;
pub mod decrypt;
pub mod guardian;
pub(crate) mod layout;
pub mod rsync;
pub mod staging;
pub mod stream;
pub mod streams;
pub mod unpack;
pub(crate) mod verifier;

use crate::diskspace::{self, Need};
use crate::error::{Error, Result};
use crate::runner::StepContext;
use states::{BackupFacts, CloneRequest, TransferInput, TransferMethod, TransferSummary};
use std::path::{Path, PathBuf};

/// Runs the Transfer step.
pub async fn run(ctx: &mut StepContext<'_>, input: TransferInput) -> Result<TransferSummary> {
    // Before the first byte, room for the whole copy (Barman mode counts per file, inside).
    let whole = match &input.method {
        TransferMethod::BarmanRsync { .. } => None,
        TransferMethod::BackupApi { expected_bytes, .. } => Some((*expected_bytes, None)),
        TransferMethod::BaseBackup { params, dirs, .. } => {
            Some((params.installation_size, Some(dirs)))
        }
    };
    if let Some((bytes, dirs)) = whole {
        let request = ctx.request();
        let waldir = dirs.and_then(|d| d.waldir.as_deref()).map(Path::new);
        let room = diskspace::check(&whole_copy_needs(
            Path::new(&request.data_dir),
            waldir,
            bytes,
        ))?;
        crate::info!("free disk: {room}");
    }
    // The slot exists before the copy starts, so the upstream keeps every WAL segment written
    // while the copy runs, however long that takes; ensure_slot reuses it on a resumed attempt.
    if let Some(upstream) = &input.slot_upstream {
        crate::slots::ensure_slot(ctx.request(), upstream).await?;
    }
    let data_dir = PathBuf::from(&ctx.request().data_dir);
    let copied = match input.method {
        TransferMethod::BarmanRsync {
            barman,
            backup,
            dirs,
        } => barman_rsync::run(ctx, &barman, &backup, &dirs).await,
        TransferMethod::BackupApi {
            target,
            expected_bytes,
        } => backup_api::run(ctx, &target, expected_bytes).await,
        TransferMethod::BaseBackup {
            params,
            dirs,
            restarts,
        } => basebackup::run(ctx, &params, &dirs, restarts).await,
    };
    copied.map_err(|e| out_of_space(e, &data_dir))
}

/// What a copy of `bytes` made whole by its tool (pg_basebackup, a pg-backup-api restore)
/// needs: the bytes, less what the data directory already holds (an earlier attempt's copy is
/// removed or overwritten first), and one WAL segment where WAL goes.
pub fn whole_copy_needs(data_dir: &Path, waldir: Option<&Path>, bytes: u64) -> Vec<Need> {
    let present = bytes_under(data_dir);
    vec![
        Need {
            dir: data_dir.to_path_buf(),
            bytes: bytes.saturating_sub(present),
        },
        Need {
            dir: waldir.unwrap_or(data_dir).to_path_buf(),
            bytes: barman_rsync::WAL_SEGMENT_NEED,
        },
    ]
}

/// What a staged clone (tar, incremental, encrypted) needs before StageBackup's first byte: in
/// the staging directory, what its staged files take at their fullest
/// ([`BackupFacts::staging_bytes`]) less the `already_staged` bytes a resumed StageBackup
/// holds; in the data directory, what the backup restores to
/// ([`BackupFacts::restored_bytes`]); one WAL segment where WAL goes. Where they share a file
/// system, [`diskspace::check`] adds them up.
pub fn staged_copy_needs(
    backup: &BackupFacts,
    data_dir: &Path,
    waldir: Option<&Path>,
    staging_dir: &Path,
    already_staged: u64,
) -> Vec<Need> {
    vec![
        Need {
            dir: staging_dir.to_path_buf(),
            bytes: backup.staging_bytes().saturating_sub(already_staged),
        },
        Need {
            dir: data_dir.to_path_buf(),
            bytes: backup.restored_bytes(),
        },
        Need {
            dir: waldir.unwrap_or(data_dir).to_path_buf(),
            bytes: barman_rsync::WAL_SEGMENT_NEED,
        },
    ]
}

/// The HINT of a staged clone's space refusal ([`diskspace::check`] of
/// [`staged_copy_needs`]): the staged files' place is configurable. For a clone that exists
/// (`request`, refused in StageBackup) the ways on are pasteable: continue once space is
/// freed, or start again with the staging directory elsewhere; the dry run names the setting.
pub fn staging_space_hint(error: Error, request: Option<&CloneRequest>) -> Error {
    const ELSEWHERE: &str =
        "set pgreplica_staging_dir in repmgr.conf to a directory on a larger file system";
    let hint = match request {
        Some(request) => format!(
            "free some space there, then continue with \"{}\"; or {ELSEWHERE} and start the clone again: {}",
            crate::paste::resume(),
            crate::request::start_command(request, request.config_file.as_deref(), true)
        ),
        None => format!("free some space there, or {ELSEWHERE}"),
    };
    error.hint(hint)
}

/// Bytes of the regular files under `dir` (links not followed); 0 when it does not exist.
fn bytes_under(dir: &Path) -> u64 {
    let Ok(listing) = std::fs::read_dir(dir) else {
        return 0;
    };
    listing
        .flatten()
        .map(|entry| match entry.file_type() {
            Ok(t) if t.is_dir() => bytes_under(&entry.path()),
            Ok(t) if t.is_file() => entry.metadata().map_or(0, |m| m.len()),
            _ => 0,
        })
        .sum()
}

/// A copy tool that ran out of space (ENOSPC in its words) is the operating system's refusal
/// (exit 13) naming the device, not a failure of the tool; resuming after space is freed
/// finishes the clone.
fn out_of_space(error: Error, data_dir: &Path) -> Error {
    let said_so = [Some(&error.message), error.detail.as_ref()]
        .into_iter()
        .flatten()
        .any(|text| text.contains("No space left on device"));
    if said_so && error.kind != crate::error::ErrorKind::System {
        return diskspace::full(
            data_dir,
            error.detail.clone().or(Some(error.full_message())),
        );
    }
    error
}

#[cfg(test)]
mod tests {
    use super::*;
    use states::{BackupKind, Compression};

    fn tar_backup(size_bytes: u64, cluster_bytes: u64) -> BackupFacts {
        BackupFacts {
            backup_id: "20261125T061436".into(),
            size_bytes,
            cluster_bytes: Some(cluster_bytes),
            kind: BackupKind::Tar {
                compression: Compression::Gzip,
                encrypted: false,
            },
            ..BackupFacts::default()
        }
    }

    #[test]
    fn a_staged_clone_needs_staging_and_restore_added_up_on_one_file_system() {
        let root = tempfile::tempdir().unwrap();
        let data = root.path().join("data");
        let staging = root.path().join("pgreplica-staging-x");
        let needs = |backup: &BackupFacts, already| {
            staged_copy_needs(backup, &data, None, &staging, already)
        };
        let wal = barman_rsync::WAL_SEGMENT_NEED;
        let found = diskspace::check(&needs(&tar_backup(10, 30), 0)).unwrap();
        let needed = crate::progress::human_bytes(10 + 30 + wal);
        assert!(found.contains(&format!("{needed} needed on ")), "{found}");
        let free = diskspace::free_bytes(root.path()).unwrap();
        let error = diskspace::check(&needs(&tar_backup(free, free), 0))
            .map_err(|e| staging_space_hint(e, None))
            .unwrap_err();
        assert_eq!(error.exit_code(), 13);
        assert!(
            error.message.starts_with("not enough free disk for"),
            "{}",
            error.message
        );
        assert!(error
            .hint
            .as_deref()
            .unwrap_or("")
            .contains("pgreplica_staging_dir"));
        // What a resumed StageBackup already holds is not needed twice.
        diskspace::check(&needs(&tar_backup(free, 1), free)).unwrap();
    }
}
