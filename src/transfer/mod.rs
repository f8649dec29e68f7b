//! The copy methods behind the Transfer step: rsync from the Barman catalogue, pg-backup-api,
//! pg_basebackup. [`run`] makes sure the replication slot holds WAL, then picks the clone's.

pub mod backup_api;
pub mod barman_rsync;
pub mod basebackup;
pub mod guardian;
pub mod rsync;
pub mod streams;

use crate::error::{Error, ErrorKind, Result};
use crate::runner::StepContext;
use states::{Mode, TransferSummary};

/// Runs the Transfer step of the clone's mode.
pub async fn run(ctx: &mut StepContext<'_>) -> Result<TransferSummary> {
    // The slot exists before the copy starts, so the upstream keeps every WAL segment written
    // while the copy runs, however long that takes; ensure_slot reuses it on a resumed attempt.
    if ctx.record.request.replication.use_replication_slots
        && ctx.record.request.mode != Mode::ReplicationConfOnly
    {
        let params = crate::steps::source_params(ctx)?;
        crate::steps::write_replication_conf::ensure_slot(
            &ctx.record.request,
            &params.upstream_conninfo,
        )
        .await?;
    }
    match ctx.record.request.mode {
        Mode::BarmanRsync => barman_rsync::run(ctx).await,
        Mode::BackupApi => backup_api::run(ctx).await,
        Mode::BaseBackup => basebackup::run(ctx).await,
        Mode::ReplicationConfOnly => Err(Error::new(
            ErrorKind::Internal,
            "Transfer is not part of the replication-conf-only plan",
        )),
    }
}
