//! The standby's replication slot on the upstream node, repmgr's way: `repmgr_slot_<node_id>`,
//! created before the copy so the upstream keeps the WAL written meanwhile, reused when
//! inactive (our own, from a crashed attempt), never taken from a standby that streams from it.
//!
//! FetchParams and `--dry-run` check it ([`check_slot`], read-only), Transfer and
//! WriteReplicationConf create or reuse it ([`ensure_slot`]), `clone start --force` drops the
//! one an abandoned clone made ([`drop_abandoned_slot`]). Whether a clone uses a slot, and
//! whether an abandoned one may hold one, is the machine's call; this module only talks to the
//! upstream. It also says which upstream that is, and which one the standby streams from
//! ([`streaming_upstream`]: `--upstream-conninfo` may name another address for the same node).

use crate::conninfo::Conninfo;
use crate::error::{Error, ErrorKind, Result};
use crate::source::{SlotState, SourceNode, Target};
use states::{CloneRequest, SourceConn};

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

/// The connection target of a parsed upstream conninfo, every keyword of it honoured (TLS
/// included) as for the source node.
pub fn upstream_target(upstream: &Conninfo) -> Result<Target> {
    Target::resolve(&SourceConn {
        dbname: Some(upstream.render()),
        ..SourceConn::default()
    })
}

/// The upstream conninfo FetchParams recorded (rendered by pgreplica itself, so a parse
/// failure is a bug).
pub fn recorded_upstream(upstream_conninfo: &str) -> Result<Conninfo> {
    Conninfo::parse(upstream_conninfo)
        .map_err(|e| Error::bug(format!("recorded upstream conninfo is invalid: {e}")))
}

/// The upstream the standby streams from, as primary_conninfo will name it: the recorded
/// `--upstream-conninfo` over the source node's settings when one was given (repmgr's
/// precedence: over the `--upstream-node-id` node's record too), else the upstream FetchParams
/// recorded. The slot is never made through it: [`ensure_slot`] takes the recorded upstream.
pub fn streaming_upstream(request: &CloneRequest, upstream_conninfo: &str) -> Result<Conninfo> {
    match &request.upstream_conninfo {
        Some(given) => {
            let source = Conninfo::parse(&Target::resolve(&request.source)?.conninfo())
                .map_err(|e| Error::bug(format!("the source's conninfo is invalid: {e}")))?;
            let given = Conninfo::parse(given)
                .map_err(|e| Error::bug(format!("recorded --upstream-conninfo is invalid: {e}")))?;
            Ok(crate::replication_conf::given_upstream(&source, &given))
        }
        None => recorded_upstream(upstream_conninfo),
    }
}

/// Connects to the upstream named by a recorded (password-less) conninfo.
async fn connect_upstream(request: &CloneRequest, upstream_conninfo: &str) -> Result<SourceNode> {
    let target = upstream_target(&recorded_upstream(upstream_conninfo)?)?;
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

#[cfg(test)]
mod tests {
    use super::*;

    /// As in repmgr, `--upstream-conninfo` wins over the upstream FetchParams recorded (the
    /// `--upstream-node-id` node's registered conninfo here) for primary_conninfo; without it,
    /// the recorded upstream is the one.
    #[test]
    fn the_given_upstream_conninfo_wins_over_the_recorded_upstream() {
        let recorded = "host=node1 port=5432 user=repmgr dbname=repmgr";
        let mut request = CloneRequest {
            source: SourceConn {
                host: Some("127.0.0.1".to_string()),
                port: Some(5433),
                user: Some("barman".to_string()),
                dbname: Some("postgres".to_string()),
            },
            upstream_node_id: Some(1),
            ..CloneRequest::default()
        };
        assert_eq!(
            streaming_upstream(&request, recorded).unwrap().render(),
            recorded
        );
        request.upstream_conninfo = Some("host=vip.example user=repl".to_string());
        let upstream = streaming_upstream(&request, recorded).unwrap().render();
        assert_eq!(
            upstream,
            "port=5433 user=repl dbname=postgres host=vip.example"
        );
    }
}
