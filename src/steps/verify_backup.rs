//! VerifyBackup: resolve the requested backup to a concrete id, check it can be restored, pin it.
//!
//! Once this step is checkpointed the id never changes: `clone resume` restores the backup that
//! was verified even if a newer one appeared meanwhile.

use crate::error::{Error, Result};
use crate::progress::human_bytes;
use crate::runner::StepContext;
use states::{BackupFacts, Mode};

/// Runs the step for the clone's mode.
pub async fn run(ctx: &mut StepContext<'_>) -> Result<BackupFacts> {
    let request = &ctx.record.request;
    match request.mode {
        Mode::BarmanRsync => {
            let barman = super::barman_of(request)?;
            crate::info!(
                "connecting to Barman server to verify backup for \"{}\"",
                barman.server
            );
            let facts = barman.resolve_backup(&request.backup_selector).await?;
            crate::notice!(
                "using backup {} of server \"{}\" ({}, PostgreSQL {})",
                facts.backup_id,
                facts.server,
                human_bytes(facts.size_bytes),
                facts.pg_version
            );
            Ok(facts)
        }
        Mode::BackupApi => Err(Error::not_implemented("pg-backup-api mode")),
        Mode::BaseBackup | Mode::ReplicationConfOnly => Err(Error::new(
            crate::error::ErrorKind::Internal,
            "VerifyBackup is not part of this mode's plan",
        )),
    }
}
