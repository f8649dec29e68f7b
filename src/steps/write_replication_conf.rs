//! WriteReplicationConf: create (or reuse) the replication slot on the upstream, then write
//! primary_conninfo, primary_slot_name, restore_command and friends where this PostgreSQL
//! version reads them.
//!
//! Idempotent: the slot is reused when it exists and is inactive (our own, from the crashed
//! attempt), and the configuration writer replaces keys instead of appending duplicates.

use crate::conninfo::Conninfo;
use crate::error::{Error, ErrorKind, Result};
use crate::replication_conf;
use crate::runner::StepContext;
use crate::source::{password_for, SlotState, SourceNode, Target};
use states::{CloneRequest, SourceConn, WrittenConf};
use std::path::Path;

/// Runs the step.
pub async fn run(ctx: &mut StepContext<'_>) -> Result<WrittenConf> {
    let request = &ctx.record.request;
    let params = super::source_params(ctx)?;
    let upstream = Conninfo::parse(&params.upstream_conninfo).map_err(|e| {
        Error::new(
            ErrorKind::Internal,
            format!("recorded upstream conninfo is invalid: {e}"),
        )
    })?;
    let slot = match request.replication.use_replication_slots {
        true => Some(ensure_slot(request, &upstream).await?),
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
    let node_name = request
        .node_name
        .clone()
        .unwrap_or_else(|| "pgreplica".to_string());
    let primary_conninfo = replication_conf::primary_conninfo(
        &upstream,
        &node_name,
        request.replication.replication_user.as_deref(),
        request.replication.passfile.as_deref(),
        password.as_deref(),
    );
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

/// The slot repmgr would use for this node.
pub fn slot_name(request: &CloneRequest) -> Result<String> {
    let node_id = request.node_id.ok_or_else(|| {
        Error::new(
            ErrorKind::Config,
            "use_replication_slots is set but node_id is not",
        )
        .hint("set node_id in repmgr.conf")
    })?;
    Ok(format!("repmgr_slot_{node_id}"))
}

fn upstream_target(upstream: &Conninfo) -> Result<Target> {
    Target::resolve(&SourceConn {
        host: upstream.get("host").map(str::to_string),
        port: upstream.get("port").and_then(|p| p.parse().ok()),
        user: upstream.get("user").map(str::to_string),
        dbname: upstream.get("dbname").map(str::to_string),
    })
}

/// Creates `repmgr_slot_<node_id>` on the upstream, or reuses it when inactive. An active slot
/// belongs to a running standby: taking it over would break that standby.
async fn ensure_slot(request: &CloneRequest, upstream: &Conninfo) -> Result<String> {
    let name = slot_name(request)?;
    let target = upstream_target(upstream)?;
    let node = SourceNode::connect(&target, request.replication.passfile.as_deref()).await?;
    match node.slot_state(&name).await? {
        SlotState::Missing => {
            node.create_slot(&name).await?;
            crate::info!("replication slot \"{name}\" created on the upstream node");
        }
        SlotState::Inactive => {
            crate::info!("reusing inactive replication slot \"{name}\" on the upstream node");
        }
        SlotState::Active => {
            return Err(Error::new(
                ErrorKind::DbQuery,
                format!("replication slot \"{name}\" on the upstream node is active"),
            )
            .hint("another standby streams from it: check node_id in repmgr.conf"));
        }
    }
    Ok(name)
}
