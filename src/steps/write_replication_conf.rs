//! WriteReplicationConf: create (or reuse) the replication slot on the upstream, then write
//! primary_conninfo (for the recorded upstream, or `--upstream-conninfo`'s),
//! primary_slot_name, restore_command and friends where this PostgreSQL version reads them.
//!
//! Idempotent: the slot is reused when it exists and is inactive (our own, from the crashed
//! attempt), and the configuration writer replaces keys instead of appending duplicates.

use crate::error::Result;
use crate::replication_conf;
use crate::runner::StepContext;
use crate::slots::{ensure_slot, streaming_upstream, upstream_target};
use crate::source::password_for;
use states::{SourceParams, WrittenConf};
use std::path::Path;

/// Runs the step with FetchParams' `params`.
pub async fn run(ctx: &mut StepContext<'_>, params: &SourceParams) -> Result<WrittenConf> {
    let request = ctx.request();
    let upstream = streaming_upstream(request, &params.upstream_conninfo)?;
    // The slot goes where pgreplica connects (the source node, or the --upstream-node-id
    // node's record), as repmgr makes it, whatever address the standby streams through.
    let slot = match request.replication.use_replication_slots {
        true => Some(ensure_slot(request, &params.upstream_conninfo).await?),
        false => None,
    };
    let password = if request.replication.use_primary_conninfo_password {
        password_for(
            &upstream_target(&upstream)?,
            request.replication.passfile.as_deref(),
        )
    } else {
        None
    };
    let primary_conninfo =
        replication_conf::primary_conninfo_for(request, &upstream, password.as_deref());
    let settings = replication_conf::settings(
        params.server_version_num,
        &primary_conninfo,
        request.replication.recovery_min_apply_delay.as_deref(),
        slot.as_deref(),
        request.replication.restore_command.as_deref(),
        request.replication.archive_cleanup_command.as_deref(),
    );
    let files = replication_conf::write(
        Path::new(&request.data_dir),
        params.server_version_num,
        &settings,
    )?;
    for file in &files {
        crate::info!("wrote \"{}\"", file.display());
    }
    Ok(WrittenConf {
        files: files.iter().map(|f| f.display().to_string()).collect(),
        slot,
    })
}
