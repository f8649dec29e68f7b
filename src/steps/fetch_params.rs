//! FetchParams: the source node's version, identity, size, replication settings and upstream
//! record; whether the replication slot can be used; whether `restore_command` works;
//! and, with `--replication-conf-only`, whether the data directory restored by other means is a
//! copy of the source's cluster and is not running. Read-only everywhere.

use crate::error::Result;
use crate::preflight::{check_restore_command, check_restored, inspect_source};
use crate::runner::StepContext;
use crate::slots::check_slot;
use crate::source::SlotState;
use states::{BackupFacts, Mode, SourceParams};

/// Runs the step; `backup` is VerifyBackup's, in the modes that verify one.
pub async fn run(ctx: &mut StepContext<'_>, backup: Option<&BackupFacts>) -> Result<SourceParams> {
    let request = ctx.request();
    let mut params = SourceParams::default();
    let (node_params, warnings) = inspect_source(request, backup).await?;
    params.server_version_num = node_params.server_version_num;
    params.system_identifier = node_params.system_identifier;
    params.installation_size = node_params.installation_size;
    params.upstream_node_id = node_params.upstream_node_id;
    params.upstream_conninfo = node_params.upstream_conninfo;
    for warning in &warnings {
        crate::warning!("{warning}");
    }
    params.warnings = warnings;
    if request.replication.use_replication_slots {
        let (name, state) = check_slot(request, &params.upstream_conninfo).await?;
        crate::info!(
            "replication slot \"{name}\" on the upstream node: {}",
            match state {
                SlotState::Missing => "will be created",
                _ => "exists and is inactive, will be reused",
            }
        );
    }
    if let Some(command) = &request.replication.restore_command {
        // Before anything is copied: a standby that cannot fetch WAL may never become
        // consistent, and the copy would be wasted.
        let checked = check_restore_command(command).await?;
        crate::info!("restore_command: {checked}");
    }
    if request.mode == Mode::ReplicationConfOnly {
        check_restored(request, &params).await?;
    }
    Ok(params)
}
