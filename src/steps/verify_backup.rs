//! VerifyBackup: resolve the requested backup to a concrete id, check it can be restored, pin it.
//!
//! Once this step is checkpointed the id never changes: `clone resume` restores the backup that
//! was verified even if a newer one appeared meanwhile.

use crate::error::{Error, Result};
use crate::progress::human_bytes;
use crate::runner::StepContext;
use states::{BackupFacts, CloneRequest, Mode};
use std::time::Duration;

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
        Mode::BackupApi => verify_with_api(request, None).await,
        Mode::BaseBackup | Mode::ReplicationConfOnly => Err(Error::new(
            crate::error::ErrorKind::Internal,
            "VerifyBackup is not part of this mode's plan",
        )),
    }
}

/// pg-backup-api mode: the API answers and knows the server. Whether the backup exists cannot
/// be checked without starting a restore (the API has no endpoint for it): the POST answers 404
/// if it does not, before anything is written. The facts hold what is known: the backup id as
/// configured (a shortcut stays a shortcut: Barman resolves it), no manifest, size and version
/// unknown (0).
///
/// Each call keeps retrying transient failures for `retry_for` when given, else for the
/// client's default (generous: a clone waits out an API restart; a dry run should not).
pub async fn verify_with_api(
    request: &CloneRequest,
    retry_for: Option<Duration>,
) -> Result<BackupFacts> {
    let target = crate::transfer::backup_api::api_target(request)?;
    let mut api = crate::backup_api::BackupApi::from_target(target)?;
    if let Some(retry_for) = retry_for {
        api = api.with_retry_for(retry_for);
    }
    crate::info!(
        "connecting to pg-backup-api at {} to verify backup for \"{}\"",
        api.base(),
        api.server()
    );
    api.check_status().await?;
    let operations = api.list_operations().await?;
    crate::info!(
        "pg-backup-api knows Barman server \"{}\" ({} operation(s) so far)",
        api.server(),
        operations.len()
    );
    crate::notice!(
        "pg-backup-api cannot tell whether backup \"{}\" exists without starting the restore; a missing backup is reported when the restore is requested",
        target.backup_id
    );
    Ok(BackupFacts {
        backup_id: target.backup_id.clone(),
        server: target.node_name.clone(),
        data_subdir: "data".to_string(),
        has_manifest: false,
        ..BackupFacts::default()
    })
}
