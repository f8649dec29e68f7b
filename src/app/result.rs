//! The `--json` result of `clone start`, `clone ensure` and `clone resume` (a dry run's report
//! as data included): one JSON document on stdout when the command ends, in the versioned
//! schema of docs/json.md (`docs/result.schema.json`). The handlers note what they learn on a
//! [`Summary`] as they go; [`write`] renders it with the command's outcome.

use crate::error::{Error, ErrorKind, Result};
use serde_json::{json, Value};
use states::{CloneRecord, CloneRequest, Mode, Phase};
use std::io::Write;

/// The version of the result document's schema; bumped on any change a consumer could notice.
pub const SCHEMA_VERSION: u32 = 1;

/// What a command learnt on its way, for its result.
#[derive(Debug, Default)]
pub struct Summary {
    /// The clone's request, once built (or loaded, for a resume).
    request: Option<CloneRequest>,
    /// The clone's id, once known.
    clone_id: Option<String>,
    /// Where the clone stood when the command ended.
    phase: Option<Phase>,
    /// An outcome other than done, failed or interrupted: `nothing_to_do`, `would_resume`,
    /// `dry_run`.
    outcome: Option<&'static str>,
    /// The dry run's report, as data.
    dry_run: Option<Value>,
}

impl Summary {
    /// The request the command works on.
    pub fn request(&mut self, request: &CloneRequest) {
        self.clone_id = Some(states::CloneId::for_data_dir(&request.data_dir).to_string());
        self.request = Some(request.clone());
    }

    /// The record as the command leaves it.
    pub fn record(&mut self, record: &CloneRecord) {
        self.clone_id = Some(record.id().to_string());
        self.request = Some(record.request().clone());
        self.phase = Some(record.phase());
    }

    /// An outcome that is not the clone's end: `nothing_to_do` or `would_resume`.
    pub fn outcome(&mut self, outcome: &'static str) {
        self.outcome = Some(outcome);
    }

    /// The dry run's report, as data.
    pub fn dry_run(&mut self, report: Value) {
        self.outcome = Some("dry_run");
        self.dry_run = Some(report);
    }
}

/// A mode as the JSON documents name it.
pub fn mode_name(mode: Mode) -> &'static str {
    match mode {
        Mode::BarmanRsync => "barman_rsync",
        Mode::BackupApi => "backup_api",
        Mode::BaseBackup => "base_backup",
        Mode::ReplicationConfOnly => "replication_conf_only",
    }
}

/// A phase as the JSON documents name it: the step in snake_case, or `done`.
pub fn phase_name(phase: Phase) -> &'static str {
    match phase {
        Phase::Done => "done",
        Phase::At(step) => step.json_name(),
    }
}

/// An error as the JSON documents show it.
pub fn error_value(error: &Error) -> Value {
    json!({
        "message": error.full_message(),
        "detail": error.detail,
        "hint": error.hint,
        "exit_code": error.exit_code(),
    })
}

/// Writes the result of `command` (`start`, `ensure`, `resume`) that ended with `result`.
pub fn write(
    command: &'static str,
    summary: &Summary,
    result: &Result<()>,
    out: &mut dyn Write,
) -> std::io::Result<()> {
    let outcome = match result {
        Err(e) if e.kind == ErrorKind::Interrupted => "interrupted",
        Err(_) if summary.outcome != Some("dry_run") => "failed",
        _ => summary.outcome.unwrap_or("done"),
    };
    let request = summary.request.as_ref();
    let document = json!({
        "schema_version": SCHEMA_VERSION,
        "command": command,
        "outcome": outcome,
        "exit_code": result.as_ref().map_or_else(Error::exit_code, |()| 0),
        "error": result.as_ref().err().map(error_value),
        "finished_at": crate::status::rfc3339(crate::runner::now_millis()),
        "clone_id": summary.clone_id,
        "data_dir": request.map(|r| r.data_dir.clone()),
        "mode": request.map(|r| mode_name(r.mode)),
        "phase": summary.phase.map(phase_name),
        "dry_run": summary.dry_run,
    });
    serde_json::to_writer_pretty(&mut *out, &document)?;
    writeln!(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use states::{OutcomeKind, Step};

    #[test]
    fn every_step_and_outcome_has_a_distinct_snake_case_name() {
        assert_eq!(Step::VerifyBackup.json_name(), "verify_backup");
        assert_eq!(
            Step::WriteReplicationConf.json_name(),
            "write_replication_conf"
        );
        assert_eq!(OutcomeKind::FailedRetryable.json_name(), "failed_retryable");
        let steps = Step::ALL.map(|step| phase_name(Phase::At(step)));
        let outcomes = OutcomeKind::ALL.map(OutcomeKind::json_name);
        for names in [&steps[..], &outcomes[..]] {
            for (i, name) in names.iter().enumerate() {
                assert!(
                    name.chars().all(|c| c.is_ascii_lowercase() || c == '_'),
                    "{name}"
                );
                assert!(!names[..i].contains(name), "{name} twice");
            }
        }
        assert!(!steps.contains(&phase_name(Phase::Done)));
    }
}
