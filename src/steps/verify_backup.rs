//! VerifyBackup: resolve the requested backup to a concrete id, check it can be restored, pin it.
//!
//! Once this step is checkpointed the id never changes: `clone resume` restores the backup that
//! was verified even if a newer one appeared meanwhile.

use crate::barman::Barman;
use crate::error::Result;
use crate::progress::human_bytes;
use crate::runner::StepContext;
use states::{BackupFacts, BackupServer};

/// Runs the step against the mode's backup server.
pub async fn run(ctx: &mut StepContext<'_>, server: &BackupServer) -> Result<BackupFacts> {
    let request = ctx.request();
    match server {
        BackupServer::Barman(target) => {
            let barman = Barman::from_target(target, &request.ssh_options);
            crate::info!(
                "connecting to Barman server to verify backup for \"{}\"",
                barman.server
            );
            let facts = barman.resolve_backup(&request.backup_selector).await?;
            if let Some(warning) = crate::preflight::check_wal_source(&facts, &barman, request)? {
                crate::warning!("{warning}");
            }
            crate::notice!(
                "using backup {} of server \"{}\" ({}, {}, PostgreSQL {})",
                facts.backup_id,
                facts.server,
                facts.kind.label(),
                human_bytes(facts.size_bytes),
                crate::progress::pg_version(facts.pg_version)
            );
            Ok(facts)
        }
        BackupServer::Api(target) => crate::preflight::verify_with_api(target, None).await,
    }
}
