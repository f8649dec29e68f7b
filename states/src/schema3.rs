//! The record as schema 3 laid it out, frozen, and its migration to the current layout.
//!
//! bincode stores a struct's fields one after the other, without names, so a record written
//! before a field was added cannot be read by the current types: it is read by these frozen
//! copies and converted. Schema 4 added [`CloneRequest::upstream_conninfo`] and
//! [`TransferSummary::checkpoint_ms`] (in the Transfer and StageBackup facts); every other type
//! a record holds kept its layout, so the copies reuse them. These types must never change: a
//! later schema freezes its own copy beside them.

use crate::api::OperatorChoice;
use crate::kind::StagedProgress;
use crate::machine::{Mode, Phase, StepFailure};
use crate::record::{
    ApiOperation, ApiTarget, BackupFacts, BarmanTarget, CloneRecord, CloneRequest, CombineSummary,
    Facts, InFlight, Millis, PreparedDirs, ReplicationSettings, SourceConn, SourceParams,
    TransferSummary, Transition, UnpackSummary, Verification, WrittenConf,
};
use crate::CloneId;
use serde::Deserialize;

/// The first schema whose records this pgreplica still reads (and migrates).
pub const OLDEST_READABLE: u16 = 3;

/// `CloneRecord` of schema 3: the same fields, its request without `upstream_conninfo`.
#[derive(Clone, Debug, PartialEq, Deserialize)]
pub struct CloneRecordV3 {
    id: CloneId,
    request: CloneRequestV3,
    created_at: Millis,
    phase: Phase,
    in_flight: Option<InFlight>,
    attempts: u32,
    last_error: Option<StepFailure>,
    facts: FactsV3,
    history: Vec<Transition>,
    api_operation: Option<ApiOperation>,
    staged: StagedProgress,
    api_choice: Option<OperatorChoice>,
    api_abandoned: Vec<String>,
}

/// `CloneRequest` of schema 3: no `upstream_conninfo` after `upstream_node_id`.
#[derive(Clone, Debug, PartialEq, Deserialize)]
struct CloneRequestV3 {
    mode: Mode,
    data_dir: String,
    config_file: Option<String>,
    node_id: Option<i32>,
    node_name: Option<String>,
    source: SourceConn,
    upstream_node_id: Option<i32>,
    backup_selector: String,
    jobs: u32,
    force: bool,
    bwlimit_kbps: Option<u32>,
    waldir: Option<String>,
    tablespace_mapping: Vec<(String, String)>,
    barman: Option<BarmanTarget>,
    backup_api: Option<ApiTarget>,
    ssh_options: Vec<String>,
    pg_bindir: Option<String>,
    pg_basebackup_options: Vec<String>,
    staging_parent: Option<String>,
    replication: ReplicationSettings,
}

/// `Facts` of schema 3: its Transfer and StageBackup summaries without `checkpoint_ms`.
#[derive(Clone, Debug, PartialEq, Deserialize)]
struct FactsV3 {
    backup: Option<BackupFacts>,
    params: Option<SourceParams>,
    dirs: Option<PreparedDirs>,
    transfer: Option<TransferSummaryV3>,
    staging: Option<TransferSummaryV3>,
    unpacked: Option<UnpackSummary>,
    combined: Option<CombineSummary>,
    verification: Option<Verification>,
    replication_conf: Option<WrittenConf>,
}

/// `TransferSummary` of schema 3: no `checkpoint_ms` after `restarts`.
#[derive(Clone, Debug, PartialEq, Deserialize)]
struct TransferSummaryV3 {
    files: u64,
    bytes_total: u64,
    bytes_sent: u64,
    files_reused: u64,
    bytes_kept: u64,
    duration_ms: u64,
    restarts: u32,
}

impl From<TransferSummaryV3> for TransferSummary {
    /// A schema-3 copy did not measure its checkpoints: 0, as for a copy that keeps none.
    fn from(old: TransferSummaryV3) -> TransferSummary {
        TransferSummary {
            files: old.files,
            bytes_total: old.bytes_total,
            bytes_sent: old.bytes_sent,
            files_reused: old.files_reused,
            bytes_kept: old.bytes_kept,
            duration_ms: old.duration_ms,
            restarts: old.restarts,
            checkpoint_ms: 0,
        }
    }
}

impl From<FactsV3> for Facts {
    fn from(old: FactsV3) -> Facts {
        Facts {
            backup: old.backup,
            params: old.params,
            dirs: old.dirs,
            transfer: old.transfer.map(TransferSummary::from),
            staging: old.staging.map(TransferSummary::from),
            unpacked: old.unpacked,
            combined: old.combined,
            verification: old.verification,
            replication_conf: old.replication_conf,
        }
    }
}

impl From<CloneRecordV3> for CloneRecord {
    /// A schema-3 clone was started without `--upstream-conninfo`, which did not exist then:
    /// the new field is `None`, everything else is kept as it was.
    fn from(old: CloneRecordV3) -> CloneRecord {
        let r = old.request;
        CloneRecord {
            id: old.id,
            request: CloneRequest {
                mode: r.mode,
                data_dir: r.data_dir,
                config_file: r.config_file,
                node_id: r.node_id,
                node_name: r.node_name,
                source: r.source,
                upstream_node_id: r.upstream_node_id,
                upstream_conninfo: None,
                backup_selector: r.backup_selector,
                jobs: r.jobs,
                force: r.force,
                bwlimit_kbps: r.bwlimit_kbps,
                waldir: r.waldir,
                tablespace_mapping: r.tablespace_mapping,
                barman: r.barman,
                backup_api: r.backup_api,
                ssh_options: r.ssh_options,
                pg_bindir: r.pg_bindir,
                pg_basebackup_options: r.pg_basebackup_options,
                staging_parent: r.staging_parent,
                replication: r.replication,
            },
            created_at: old.created_at,
            phase: old.phase,
            in_flight: old.in_flight,
            attempts: old.attempts,
            last_error: old.last_error,
            facts: Facts::from(old.facts),
            history: old.history,
            api_operation: old.api_operation,
            staged: old.staged,
            api_choice: old.api_choice,
            api_abandoned: old.api_abandoned,
        }
    }
}
