//! `clone status --json`: one document for the clones of a state directory, in the versioned
//! schema of docs/json.md (`docs/result.schema.json`, `$defs/status`) — RFC 3339 times,
//! snake_case values, one history, the progress figures, and never the record's stored form
//! (whose shapes follow pgreplica's internal types).
//!
//! Rendering only: the views come from the store (`StateDir::read_status`), the spellings of
//! modes, phases and errors from [`crate::app::result`], shared with the other `--json` results.

use crate::app::result::{error_value, mode_name, phase_name, SCHEMA_VERSION};
use crate::status::{rfc3339, Shown};
use crate::store::StatusView;
use serde_json::{json, Value};
use states::{
    BackupFacts, BackupFormat, BackupKind, ChainMember, CloneRecord, Compression, FailureKind,
    Phase, SourceParams, Verification,
};
use std::io::{self, Write};

/// Writes the clones as one document: `{"schema_version": 1, "clones": [...]}`.
pub fn write(shown: &[Shown], out: &mut dyn Write) -> io::Result<()> {
    let clones: Vec<Value> = shown
        .iter()
        .map(|shown| match shown {
            Shown::Clone(view) => clone_value(view),
            Shown::Damaged { id, error } => json!({
                "clone_id": id.as_str(),
                "damaged": true,
                "error": error_value(error),
            }),
        })
        .collect();
    let document = json!({ "schema_version": SCHEMA_VERSION, "clones": clones });
    serde_json::to_writer_pretty(&mut *out, &document)?;
    writeln!(out)
}

/// One readable clone.
fn clone_value(view: &StatusView) -> Value {
    let record = &view.record;
    let mut request = serde_json::to_value(record.request()).unwrap_or(Value::Null);
    // The request's one enumeration, spelt as everywhere else in the document.
    request["mode"] = json!(mode_name(record.request().mode));
    json!({
        "clone_id": record.id().as_str(),
        "damaged": false,
        "data_dir": record.request().data_dir,
        "mode": mode_name(record.request().mode),
        "phase": phase_name(record.phase()),
        "done": record.phase() == Phase::Done,
        "running": view.running,
        "pid": view.pid,
        "created_at": rfc3339(record.created_at()),
        "updated_at": view.updated_at.map(rfc3339),
        "backup_id": record.facts().backup.as_ref().map(|b| b.backup_id.clone()),
        "attempts": record.attempts(),
        "last_error": record.last_error().map(|e| json!({
            "message": e.message,
            "hint": e.hint,
            "exit_code": e.exit_code,
            "retryable": e.kind == FailureKind::Retryable,
        })),
        "in_flight": record.in_flight().map(|step| json!({
            "step": step.json_name(),
            "started_at": record.in_flight_since().map(rfc3339),
        })),
        "progress": progress(view),
        "request": request,
        "facts": facts(record),
        "backup_api": backup_api(record),
        "history": record.history().iter().map(|t| json!({
            "step": t.step.json_name(),
            "started_at": rfc3339(t.started_at),
            "ended_at": rfc3339(t.ended_at),
            "duration_ms": t.ended_at.saturating_sub(t.started_at),
            "outcome": t.outcome.json_name(),
            "message": t.message,
        })).collect::<Vec<_>>(),
    })
}

/// The progress figures: the running step's (with its rate and ETA) while a process runs the
/// clone, else the stored file list's of the copy (`step`, rate and ETA null); null when
/// neither says anything.
fn progress(view: &StatusView) -> Value {
    if let Some(live) = &view.live {
        return json!({
            "step": live.step.json_name(),
            "bytes_done": live.bytes_done,
            "bytes_total": live.bytes_total,
            "files_done": live.files_done,
            "files_total": live.files_total,
            "rate_bytes_per_sec": live.rate_bytes_per_sec,
            "eta_secs": live.eta_secs,
        });
    }
    match view.files {
        Some(files) => json!({
            "step": null,
            "bytes_done": files.bytes_done,
            "bytes_total": files.bytes_total,
            "files_done": files.files_done,
            "files_total": files.files_total,
            "rate_bytes_per_sec": null,
            "eta_secs": null,
        }),
        None => Value::Null,
    }
}

/// What the finished steps established; each null until its step succeeded.
fn facts(record: &CloneRecord) -> Value {
    let facts = record.facts();
    json!({
        "backup": facts.backup.as_ref().map(backup),
        "params": facts.params.as_ref().map_or(Value::Null, params),
        "transfer": plain(facts.transfer.as_ref()),
        "staging": plain(facts.staging.as_ref()),
        "unpacked": plain(facts.unpacked.as_ref()),
        "combined": plain(facts.combined.as_ref()),
        "verification": facts.verification.as_ref().map(verification),
        "replication_conf": plain(facts.replication_conf.as_ref()),
    })
}

/// A fact whose stored form is already plain data (a struct of numbers, strings and lists, no
/// enumeration), shown as it is; null when absent.
fn plain<T: serde::Serialize>(fact: Option<&T>) -> Value {
    fact.and_then(|f| serde_json::to_value(f).ok())
        .unwrap_or(Value::Null)
}

/// FetchParams' facts as stored, with the source's version also as PostgreSQL prints it
/// (`server_version`, beside the stored `server_version_num`).
fn params(params: &SourceParams) -> Value {
    let mut value = plain(Some(params));
    value["server_version"] = json!(crate::progress::pg_version(params.server_version_num));
    value
}

/// VerifyBackup's facts, the backup's kind spelt out; the backup's version both as PostgreSQL
/// prints it (`server_version`, "15.18") and as its number (`server_version_num`, 150018).
/// `pg_version` is the number again, under the name schema version 1 gave it first.
fn backup(backup: &BackupFacts) -> Value {
    let (compression, encrypted, chain) = match &backup.kind {
        BackupKind::Plain => (None, false, Vec::new()),
        BackupKind::Tar {
            compression,
            encrypted,
        } => (Some(*compression), *encrypted, Vec::new()),
        BackupKind::Incremental { chain } => (None, false, chain.iter().map(member).collect()),
    };
    let kind = match &backup.kind {
        BackupKind::Plain => "plain",
        BackupKind::Tar { .. } => "tar",
        BackupKind::Incremental { .. } => "incremental",
    };
    json!({
        "backup_id": backup.backup_id,
        "backup_name": backup.backup_name,
        "server": backup.server,
        "server_version": crate::progress::pg_version(backup.pg_version),
        "server_version_num": backup.pg_version,
        "pg_version": backup.pg_version,
        "size_bytes": backup.size_bytes,
        "cluster_bytes": backup.cluster_bytes,
        "timeline": backup.timeline,
        "begin_wal": backup.begin_wal,
        "end_wal": backup.end_wal,
        "system_id": backup.system_id,
        "tablespaces": backup.tablespaces.iter().map(|t| json!({
            "name": t.name, "oid": t.oid, "location": t.location,
        })).collect::<Vec<_>>(),
        "backup_dir": backup.backup_dir,
        "has_manifest": backup.has_manifest,
        "kind": kind,
        "compression": compression.map(Compression::label),
        "encrypted": encrypted,
        "chain": chain,
    })
}

/// One member of an incremental chain.
fn member(member: &ChainMember) -> Value {
    let (format, compression, encrypted) = match member.format {
        BackupFormat::Plain => ("plain", None, false),
        BackupFormat::Tar {
            compression,
            encrypted,
        } => ("tar", Some(compression.label()), encrypted),
    };
    json!({
        "backup_id": member.backup_id,
        "format": format,
        "compression": compression,
        "encrypted": encrypted,
        "size_bytes": member.size_bytes,
    })
}

/// VerifyCopy's result: `{"method": "manifest" | "checked" | "skipped", …}`.
fn verification(verification: &Verification) -> Value {
    let manifest = |files: &u64, during_copy: u64, at_end: u64| {
        json!({
            "method": "manifest", "files": files,
            "checked_during_copy": during_copy, "checked_at_end": at_end,
            "pg_major": null, "system_identifier": null, "bytes": null, "reason": null,
        })
    };
    match verification {
        // pg_verifybackup read every file at the end.
        Verification::Verified { files } => manifest(files, 0, *files),
        Verification::VerifiedDuringCopy {
            files,
            during_copy,
            at_end,
        } => manifest(files, *during_copy, *at_end),
        Verification::Checked {
            pg_major,
            system_identifier,
            bytes,
        } => json!({
            "method": "checked", "files": null,
            "checked_during_copy": null, "checked_at_end": null,
            "pg_major": pg_major, "system_identifier": system_identifier, "bytes": bytes,
            "reason": null,
        }),
        Verification::Skipped { reason } => json!({
            "method": "skipped", "files": null,
            "checked_during_copy": null, "checked_at_end": null,
            "pg_major": null, "system_identifier": null, "bytes": null, "reason": reason,
        }),
    }
}

/// pg-backup-api mode: the operation the clone owns, those it abandoned, the operator's word
/// pending; null in the other modes.
fn backup_api(record: &CloneRecord) -> Value {
    if record.request().mode != states::Mode::BackupApi {
        return Value::Null;
    }
    let operation = record.api_operation();
    json!({
        "operation_id": operation.and_then(|o| o.operation_id.clone()),
        "attempt_started_at": operation.map(|o| rfc3339(o.attempt_started_at)),
        "abandoned": record.api_abandoned(),
        "operator_choice": record.api_choice().map(ToString::to_string),
    })
}
