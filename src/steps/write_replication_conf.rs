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

/// Connects to the upstream named by a recorded (password-less) conninfo.
async fn connect_upstream(request: &CloneRequest, upstream_conninfo: &str) -> Result<SourceNode> {
    let upstream = Conninfo::parse(upstream_conninfo).map_err(|e| {
        Error::new(
            ErrorKind::Internal,
            format!("recorded upstream conninfo is invalid: {e}"),
        )
    })?;
    let target = upstream_target(&upstream)?;
    SourceNode::connect(&target, request.replication.passfile.as_deref()).await
}

/// The error for a slot another standby streams from.
fn active_slot(name: &str) -> Error {
    Error::new(
        ErrorKind::DbQuery,
        format!("replication slot \"{name}\" on the upstream node is active"),
    )
    .hint("another standby streams from it: check node_id in repmgr.conf, or stop that standby and drop the slot")
}

/// Checks, changing nothing, that `repmgr_slot_<node_id>` can be created or reused on the
/// upstream: node_id is set and the slot is not active. Returns the slot's name and state.
/// FetchParams and `--dry-run` call it, so a clone never copies gigabytes only to find the
/// slot taken.
pub async fn check_slot(
    request: &CloneRequest,
    upstream_conninfo: &str,
) -> Result<(String, SlotState)> {
    let name = slot_name(request)?;
    let node = connect_upstream(request, upstream_conninfo).await?;
    match node.slot_state(&name).await? {
        SlotState::Active => Err(active_slot(&name)),
        state => Ok((name, state)),
    }
}

/// Creates `repmgr_slot_<node_id>` on the upstream, or reuses it when inactive. An active slot
/// belongs to a running standby: taking it over would break that standby. Idempotent: the
/// Transfer step calls it before copying (so WAL written during the copy is kept) and
/// WriteReplicationConf again (for `--replication-conf-only`, and to find it still there).
pub async fn ensure_slot(request: &CloneRequest, upstream_conninfo: &str) -> Result<String> {
    let name = slot_name(request)?;
    let node = connect_upstream(request, upstream_conninfo).await?;
    match node.slot_state(&name).await? {
        SlotState::Missing => {
            node.create_slot(&name).await?;
            crate::info!("replication slot \"{name}\" created on the upstream node");
        }
        SlotState::Inactive => {
            crate::info!("reusing inactive replication slot \"{name}\" on the upstream node");
        }
        SlotState::Active => return Err(active_slot(&name)),
    }
    Ok(name)
}

/// Drops the slot an abandoned clone created (`clone start --force` over an unfinished clone),
/// so that it stops holding WAL on the upstream. An active slot is left alone. Returns whether
/// a slot was dropped.
pub async fn drop_abandoned_slot(request: &CloneRequest, upstream_conninfo: &str) -> Result<bool> {
    let name = slot_name(request)?;
    let node = connect_upstream(request, upstream_conninfo).await?;
    match node.slot_state(&name).await? {
        SlotState::Missing => Ok(false),
        SlotState::Active => {
            crate::warning!(
                "replication slot \"{name}\" is active on the upstream node: not dropped"
            );
            Ok(false)
        }
        SlotState::Inactive => {
            node.drop_slot(&name).await?;
            Ok(node.slot_state(&name).await? == SlotState::Missing)
        }
    }
}
