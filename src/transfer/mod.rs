//! The copy methods behind the Transfer step: rsync from the Barman catalogue, pg-backup-api,
//! pg_basebackup. [`run`] picks the clone's.

pub mod backup_api;
pub mod barman_rsync;
pub mod rsync;
pub mod streams;

use crate::error::{Error, ErrorKind, Result};
use crate::runner::StepContext;
use states::{Mode, TransferSummary};

/// Runs the Transfer step of the clone's mode.
pub async fn run(ctx: &mut StepContext<'_>) -> Result<TransferSummary> {
    match ctx.record.request.mode {
        Mode::BarmanRsync => barman_rsync::run(ctx).await,
        Mode::BackupApi => backup_api::run(ctx).await,
        Mode::BaseBackup => Err(Error::not_implemented(
            "pg_basebackup mode (--without-barman)",
        )),
        Mode::ReplicationConfOnly => Err(Error::new(
            ErrorKind::Internal,
            "Transfer is not part of the replication-conf-only plan",
        )),
    }
}
