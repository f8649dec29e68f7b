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
    Phase, Verification,
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
        "params": plain(facts.params.as_ref()),
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

/// VerifyBackup's facts, the backup's kind spelt out.
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
    match verification {
        Verification::Verified { files } => json!({
            "method": "manifest", "files": files,
            "pg_major": null, "system_identifier": null, "bytes": null, "reason": null,
        }),
        Verification::Checked {
            pg_major,
            system_identifier,
            bytes,
        } => json!({
            "method": "checked", "files": null,
            "pg_major": pg_major, "system_identifier": system_identifier, "bytes": bytes,
            "reason": null,
        }),
        Verification::Skipped { reason } => json!({
            "method": "skipped", "files": null,
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::Error;
    use crate::error::ErrorKind;
    use crate::store::{FileCounts, LiveProgress};
    use states::api::OperatorChoice;
    use states::{
        ApiOperation, CloneId, CloneRequest, Facts, Mode, OutcomeKind, Step, StepFailure,
        Tablespace, TransferSummary, Transition,
    };

    /// Validates `document` against docs/result.schema.json's `$defs/status`.
    fn schema_error(document: &Value) -> Option<String> {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/docs/result.schema.json");
        let schema: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
        let mut schemas = boon::Schemas::new();
        let mut compiler = boon::Compiler::new();
        compiler
            .add_resource("file:///result.schema.json", schema)
            .unwrap();
        let index = compiler
            .compile("file:///result.schema.json#/$defs/status", &mut schemas)
            .unwrap_or_else(|e| panic!("the schema does not compile: {e:#}"));
        schemas
            .validate(document, index)
            .err()
            .map(|e| format!("{e:#}"))
    }

    /// A pg-backup-api record with every part the document shows set: facts of each kind, an
    /// operation, abandoned ones, the operator's word, a step in flight, a failure, a history.
    /// Built through the stored form, as `clone status` reads it from sled.
    fn synthetic_record() -> CloneRecord {
        let request = CloneRequest {
            mode: Mode::BackupApi,
            data_dir: "/var/lib/postgresql/15/main".to_string(),
            tablespace_mapping: vec![("/a".to_string(), "/b".to_string())],
            ..CloneRequest::default()
        };
        let id = CloneId::for_data_dir(&request.data_dir);
        let mut stored =
            serde_json::to_value(CloneRecord::new(id, request, 1_795_000_000_250)).unwrap();
        let member = |backup_id: &str, format| ChainMember {
            backup_id: backup_id.to_string(),
            backup_dir: format!("/barman/pg/base/{backup_id}"),
            data_subdir: "data".to_string(),
            format,
            size_bytes: 100,
            tablespaces: Vec::new(),
        };
        let facts = Facts {
            backup: Some(BackupFacts {
                backup_id: "20261130T100000".to_string(),
                tablespaces: vec![Tablespace {
                    name: "tbs".to_string(),
                    oid: 16_385,
                    location: "/tbs".to_string(),
                }],
                kind: BackupKind::Incremental {
                    chain: vec![
                        member("20261129T100000", BackupFormat::Plain),
                        member(
                            "20261130T100000",
                            BackupFormat::Tar {
                                compression: Compression::Zstd,
                                encrypted: true,
                            },
                        ),
                    ],
                },
                ..BackupFacts::default()
            }),
            transfer: Some(TransferSummary {
                files: 3,
                bytes_total: 300,
                ..TransferSummary::default()
            }),
            verification: Some(Verification::Checked {
                pg_major: 15,
                system_identifier: "7312345678901234567".to_string(),
                bytes: 300,
            }),
            ..Facts::default()
        };
        stored["facts"] = serde_json::to_value(facts).unwrap();
        stored["phase"] = serde_json::to_value(Phase::At(Step::Transfer)).unwrap();
        stored["in_flight"] = json!({"step": Step::Transfer, "started_at": 1_795_000_009_000u64});
        stored["attempts"] = json!(2);
        stored["last_error"] = serde_json::to_value(StepFailure {
            kind: FailureKind::Retryable,
            message: "rsync failed".to_string(),
            hint: Some("resume it".to_string()),
            exit_code: 2,
        })
        .unwrap();
        stored["history"] = serde_json::to_value(
            [OutcomeKind::Succeeded, OutcomeKind::FailedRetryable].map(|outcome| Transition {
                step: Step::Transfer,
                started_at: 1_795_000_001_000,
                ended_at: 1_795_000_003_500,
                outcome,
                message: None,
            }),
        )
        .unwrap();
        stored["api_operation"] = serde_json::to_value(ApiOperation {
            attempt_started_at: 1_795_000_002_000,
            operation_id: Some("20261130T100500".to_string()),
            ..ApiOperation::default()
        })
        .unwrap();
        stored["api_choice"] = serde_json::to_value(OperatorChoice::PostNew).unwrap();
        stored["api_abandoned"] = json!(["20261130T100100"]);
        serde_json::from_value(stored).expect("the stored form of a record")
    }

    fn document(shown: &[Shown]) -> Value {
        let mut out = Vec::new();
        write(shown, &mut out).unwrap();
        serde_json::from_slice(&out).unwrap()
    }

    #[test]
    fn a_synthetic_record_of_every_part_follows_the_schema() {
        let running = StatusView {
            record: synthetic_record(),
            running: true,
            pid: Some(4242),
            updated_at: Some(1_795_000_010_125),
            live: Some(LiveProgress {
                step: Step::Transfer,
                bytes_done: 10,
                bytes_total: 300,
                files_done: 1,
                files_total: 3,
                rate_bytes_per_sec: 5,
                eta_secs: Some(58),
            }),
            files: None,
        };
        let stopped = StatusView {
            running: false,
            pid: None,
            updated_at: None,
            live: None,
            files: Some(FileCounts {
                files_done: 1,
                bytes_done: 10,
                files_total: 3,
                bytes_total: 300,
            }),
            ..running.clone()
        };
        let damaged = Shown::Damaged {
            id: CloneId::for_data_dir("/srv/broken"),
            error: Error::new(ErrorKind::Store, "the record cannot be read").hint("forget it"),
        };
        let doc = document(&[Shown::Clone(running), Shown::Clone(stopped), damaged]);
        if let Some(e) = schema_error(&doc) {
            panic!("{doc:#}\ndoes not follow $defs/status: {e}");
        }
        let clone = &doc["clones"][0];
        assert_eq!(doc["schema_version"], 1);
        assert_eq!(clone["phase"], "transfer");
        assert_eq!(clone["mode"], "backup_api");
        assert_eq!(clone["request"]["mode"], "backup_api");
        assert_eq!(clone["created_at"], "2026-11-18T11:06:40.250Z");
        assert_eq!(clone["in_flight"]["step"], "transfer");
        assert_eq!(clone["history"][1]["outcome"], "failed_retryable");
        assert_eq!(clone["history"][1]["duration_ms"], 2500);
        assert_eq!(clone["progress"]["step"], "transfer");
        assert_eq!(clone["progress"]["eta_secs"], 58);
        assert_eq!(clone["facts"]["verification"]["method"], "checked");
        assert_eq!(clone["facts"]["backup"]["kind"], "incremental");
        assert_eq!(clone["facts"]["backup"]["chain"][1]["compression"], "zstd");
        assert_eq!(clone["backup_api"]["operator_choice"], "new");
        assert_eq!(clone["last_error"]["retryable"], true);
        assert_eq!(doc["clones"][1]["progress"]["step"], Value::Null);
        assert_eq!(doc["clones"][1]["progress"]["files_total"], 3);
        assert_eq!(doc["clones"][2]["damaged"], true);
        // One history, and no stored form: Rust's enum shapes appear nowhere.
        let text = doc.to_string();
        for shape in [
            "\"At\"",
            "Transfer",
            "FailedRetryable",
            "Incremental",
            "Checked",
            "\"record\":",
        ] {
            assert!(!text.contains(shape), "{shape} in {doc:#}");
        }
        // The schema holds: the shapes of the stored form are refused.
        for (key, wrong) in [
            ("phase", json!({"At": "Transfer"})),
            ("created_at", json!(1_795_000_000_250u64)),
            ("record", json!({})),
        ] {
            let mut bad = doc.clone();
            bad["clones"][0][key] = wrong;
            assert!(schema_error(&bad).is_some(), "{key}");
        }
    }
}
