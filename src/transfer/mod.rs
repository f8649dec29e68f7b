//! The copy methods behind the Transfer step: rsync from the Barman catalogue, pg-backup-api,
//! pg_basebackup. [`run`] makes sure the replication slot holds WAL, then runs the method the
//! machine chose with the inputs it handed over.
//!
//! **Invariant:** the copy engines import no step module; what they share with the steps
//! (directory layout, slots, the Barman client) lives in modules of its own.

pub mod backup_api;
pub mod barman_rsync;
pub mod basebackup;
pub mod guardian;
pub mod rsync;
pub mod streams;

use crate::diskspace::{self, Need};
use crate::error::{Error, Result};
use crate::runner::StepContext;
use states::{TransferInput, TransferMethod, TransferSummary};
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
