//! What pgreplica says about the clone records it finds, in the words of the machine's
//! decisions (`states::lifecycle`): the refusal of a start over an unfinished clone, the notice
//! of a record replaced, the recorded values a resume finds changed and how to take them. The
//! command handlers and `--dry-run` say the same things, so they are written once, here.
//!
//! Messages only: this module reads no file and decides nothing.

use states::{CloneRecord, CloneRequest, Difference, Phase, Replaced};

use crate::error::{Error, ErrorKind};

/// Where a clone stands, for messages: `step Transfer` or `done`.
pub fn describe_phase(record: &CloneRecord) -> String {
    match record.phase() {
        Phase::At(step) => format!("step {step}"),
        Phase::Done => "done".to_string(),
    }
}

/// The refusal of `clone start` over an unfinished clone that has begun writing (exit 42).
pub fn unfinished(record: &CloneRecord) -> Error {
    let id = record.id();
    Error::new(
        ErrorKind::CloneState,
        format!(
            "an unfinished clone of \"{}\" exists (clone {id}, at {}); it has begun copying",
            record.request().data_dir,
            describe_phase(record)
        ),
    )
    .hint(format!(
        "continue it with \"{}\", or run this clone start again with -F/--force to discard it \
         (the files already copied are kept and reused)",
        crate::paste::pgreplica(&["clone", "resume", id.as_str()])
    ))
}

/// The refusal of a command that needs a clone no process runs, while `pid` runs it (exit 41),
/// with the `hint` that fits the command.
pub fn running(id: &states::CloneId, pid: Option<u32>, hint: &str) -> Error {
    Error::new(
        ErrorKind::Store,
        format!(
            "clone {id} is being run by another pgreplica process (pid {})",
            pid.map_or_else(|| "unknown".to_string(), |p| p.to_string())
        ),
    )
    .hint(hint)
}

/// The refusal of `clone start` over a record that cannot be read (exit 41): the damage, with
/// the ways out.
pub fn damaged(error: Error, id: &states::CloneId) -> Error {
    let forget = crate::paste::pgreplica(&["clone", "forget", id.as_str()]);
    let hint = format!(
        "discard it with \"{forget}\", or run this clone start again with -F/--force: the data \
         directory is untouched"
    );
    Error {
        hint: Some(hint),
        ..error
    }
}

/// What replacing `record` means, for the NOTICE that announces it.
pub fn replacing(record: Option<&CloneRecord>, reason: Replaced) -> String {
    let Some(record) = record else {
        return "discarding the unreadable clone record (-F/--force given)".to_string();
    };
    let id = record.id();
    match reason {
        Replaced::Finished => format!("replacing the finished clone {id}"),
        Replaced::NeverCopied => {
            let why = record
                .last_error()
                .map(|e| format!(": {}", e.message))
                .unwrap_or_default();
            format!(
                "replacing clone {id}, which stopped at {} before copying anything{why}",
                describe_phase(record)
            )
        }
        Replaced::Forced => format!(
            "discarding the unfinished clone {id} (at {}; -F/--force given): the files it copied are kept and reused",
            describe_phase(record)
        ),
        Replaced::Damaged => format!("discarding the unreadable clone record {id}"),
    }
}

/// One WARNING line per recorded value that differs from today's (repmgr.conf as it is now, and
/// the command line when there is one), never showing a value that may hold a secret.
pub fn difference_lines(differences: &[Difference]) -> Vec<String> {
    differences
        .iter()
        .map(|d| match &d.values {
            Some((recorded, current)) => format!(
                "{}: the clone recorded {recorded}, now {current}",
                d.setting
            ),
            None => format!(
                "{}: the clone recorded another value than the one given now",
                d.setting
            ),
        })
        .collect()
}

/// How to take today's values instead of the recorded ones: start the clone again — plainly
/// when it has copied nothing yet (the start replaces it), else with `--force`.
pub fn how_to_take(record: &CloneRecord, current: &CloneRequest) -> String {
    let force = record.began_writing();
    let start = crate::request::start_command(current, current.config_file.as_deref(), force);
    if force {
        format!(
            "a clone resumes with the values recorded at its start; to take the new ones, start \
             it again with --force, which discards this record and keeps the files already \
             copied: {start}"
        )
    } else {
        format!(
            "a clone resumes with the values recorded at its start; to take the new ones, start \
             it again (it has copied nothing yet, so the new start replaces it): {start}"
        )
    }
}
