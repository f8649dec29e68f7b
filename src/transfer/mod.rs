//! The copy methods behind the Transfer step: rsync from the Barman catalogue, pg-backup-api,
//! pg_basebackup. [`run`] makes sure the replication slot holds WAL, then runs the method the
//! machine chose with the inputs it handed over.
//!
//! **Invariant:** the copy engines import no step module; what they share with the steps
//! (directory layout, slots, the Barman client) lives in modules of its own.

pub mod backup_api;
pub mod barman_rsync;
pub mod basebackup;
pub mod combine;
pub mod decrypt;
pub mod guardian;
pub(crate) mod layout;
pub mod rsync;
pub mod staging;
pub mod streams;
pub mod unpack;

use crate::error::Result;
use crate::runner::StepContext;
use states::{TransferInput, TransferMethod, TransferSummary};

/// Runs the Transfer step.
pub async fn run(ctx: &mut StepContext<'_>, input: TransferInput) -> Result<TransferSummary> {
    // The slot exists before the copy starts, so the upstream keeps every WAL segment written
    // while the copy runs, however long that takes; ensure_slot reuses it on a resumed attempt.
    if let Some(upstream) = &input.slot_upstream {
        crate::slots::ensure_slot(ctx.request(), upstream).await?;
    }
    match input.method {
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
    }
}
