//! The machine's values as `pgreplica clone status --json` spells them, read back into the
//! `states` types ([`Step`], [`Phase`], [`OutcomeKind`]): the one place in the lab (and in
//! xtask, which reads status through it) that knows those spellings, so that a change of the
//! JSON's values changes this module only.
//!
//! The document follows docs/json.md's versioned schema: a history entry's `step` and
//! `outcome`, `progress.step`, `in_flight.step` and `phase` are snake_case names
//! ([`Step::json_name`], [`OutcomeKind::json_name`], `done` once the clone is finished), and
//! `facts.verification` says its `method`.
//! It must not judge a status: it says what a value means, the caller decides what to expect.

use serde_json::Value;
/// The types this module reads status values into, for callers without the `states` crate.
pub use states::{OutcomeKind, Phase, Step};

/// What `phase` says once the clone is finished.
const DONE: &str = "done";
/// How [`phase_name`] shows a status without a phase it can read.
const UNKNOWN: &str = "unknown";

/// The step a status value names (a history entry's `step`, `progress.step`,
/// `in_flight.step`); None for anything else.
pub fn step(value: &Value) -> Option<Step> {
    let name = value.as_str()?;
    Step::ALL.into_iter().find(|step| step.json_name() == name)
}

/// Whether `value` names `step`.
pub fn is_step(value: &Value, step: Step) -> bool {
    self::step(value) == Some(step)
}

/// How an attempt ended, from a history entry's `outcome`; None for anything else.
pub fn outcome(value: &Value) -> Option<OutcomeKind> {
    let name = value.as_str()?;
    OutcomeKind::ALL
        .into_iter()
        .find(|outcome| outcome.json_name() == name)
}

/// Whether `value` (a history entry's `outcome`) is `outcome`.
pub fn is_outcome(value: &Value, outcome: OutcomeKind) -> bool {
    self::outcome(value) == Some(outcome)
}

/// Where the clone of `status` (one entry of `clone status --json`) stands: its `phase`. None
/// when the status shows no phase this module can read.
pub fn phase(status: &Value) -> Option<Phase> {
    if status["phase"] == DONE {
        return Some(Phase::Done);
    }
    step(&status["phase"]).map(Phase::At)
}

/// A phase as `clone status`'s text names it, for reports: the step's name, `Done`, or
/// `unknown` for None (a status [`phase`] could not read).
pub fn phase_name(phase: Option<Phase>) -> &'static str {
    match phase {
        Some(Phase::At(step)) => step.name(),
        Some(Phase::Done) => "Done",
        None => UNKNOWN,
    }
}

/// How many files VerifyCopy checked against the backup manifest, from
/// `facts.verification`; None when it checked otherwise, skipped the check or has not run.
pub fn verified_files(status: &Value) -> Option<u64> {
    let verification = &status["facts"]["verification"];
    match verification["method"].as_str()? {
        "manifest" => verification["files"].as_u64(),
        _ => None,
    }
}

/// The progress figures of `status` when they are those of `step` running now, or — `step`
/// None — those of the stored file list of a clone no process runs; Null otherwise.
pub fn progress(status: &Value, step: Option<Step>) -> &Value {
    let progress = &status["progress"];
    let shown = progress["step"].is_null() && !progress.is_null();
    match step {
        Some(step) if is_step(&progress["step"], step) => progress,
        None if shown => progress,
        _ => &Value::Null,
    }
}

/// How many regular files the clone's file list holds (shown for a clone no process runs);
/// None when the status shows no file list.
pub fn files_total(status: &Value) -> Option<u64> {
    progress(status, None)["files_total"].as_u64()
}

/// What step `name` (`backup`, `transfer`, `staging`, `verification`, …) established, from
/// `facts`; Null until that step succeeded.
pub fn fact<'a>(status: &'a Value, name: &str) -> &'a Value {
    &status["facts"][name]
}

/// pg-backup-api mode: the clone's operation (`operation_id`, `attempt_started_at`), those it
/// `abandoned` and the `operator_choice` pending; Null in the other modes.
pub fn backup_api(status: &Value) -> &Value {
    &status["backup_api"]
}

/// The entries of a status's `history`, oldest first (none when it has no history).
pub fn history(status: &Value) -> &[Value] {
    status["history"].as_array().map_or(&[], Vec::as_slice)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn steps_and_outcomes_read_back_as_pgreplica_writes_them() {
        for step in Step::ALL {
            // status_json.rs writes `"step": step.json_name()`.
            let written = json!(step.json_name());
            assert_eq!(super::step(&written), Some(step));
            assert!(is_step(&written, step));
            let others = Step::ALL.into_iter().filter(|s| *s != step);
            assert!(others.into_iter().all(|other| !is_step(&written, other)));
        }
        for outcome in OutcomeKind::ALL {
            let written = json!(outcome.json_name());
            assert_eq!(super::outcome(&written), Some(outcome));
            assert!(is_outcome(&written, outcome));
        }
        assert!(is_step(&json!("transfer"), Step::Transfer));
        assert!(is_outcome(&json!("crashed"), OutcomeKind::Crashed));
        for nothing in [
            Value::Null,
            json!("Transfer"),
            json!("Crashed"),
            json!(3),
            json!({"At": "Transfer"}),
        ] {
            assert_eq!(super::step(&nothing), None, "{nothing}");
            assert_eq!(super::outcome(&nothing), None, "{nothing}");
        }
    }

    #[test]
    fn phases_read_back_by_step_name_or_done() {
        for step in Step::ALL {
            let status = json!({"phase": step.json_name()});
            assert_eq!(phase(&status), Some(Phase::At(step)));
            assert_eq!(phase_name(phase(&status)), step.name());
        }
        let done = json!({"phase": "done"});
        assert_eq!(phase(&done), Some(Phase::Done));
        assert_eq!(phase_name(phase(&done)), "Done");
        for unreadable in [json!({}), json!({"phase": "Transfer"}), json!({"phase": 1})] {
            assert_eq!(phase(&unreadable), None, "{unreadable}");
        }
        assert_eq!(phase_name(None), "unknown");
    }

    #[test]
    fn verified_files_only_when_verify_copy_checked_them_against_the_manifest() {
        let with = |verification: Value| json!({"facts": {"verification": verification}});
        assert_eq!(
            verified_files(&with(json!({"method": "manifest", "files": 1234}))),
            Some(1234)
        );
        let skipped = json!({"method": "skipped", "files": null, "reason": "no backup_manifest"});
        assert_eq!(verified_files(&with(skipped)), None);
        assert_eq!(verified_files(&with(Value::Null)), None);
    }

    #[test]
    fn progress_is_the_running_steps_or_the_stored_file_lists() {
        let running = json!({"progress": {"step": "transfer", "files_total": 5}});
        assert_eq!(progress(&running, Some(Step::Transfer))["files_total"], 5);
        assert!(progress(&running, Some(Step::StageBackup)).is_null());
        assert!(progress(&running, None).is_null());
        assert_eq!(files_total(&running), None);
        let stopped = json!({"progress": {"step": null, "files_total": 7}});
        assert_eq!(files_total(&stopped), Some(7));
        assert!(progress(&stopped, Some(Step::Transfer)).is_null());
        assert!(progress(&json!({"progress": null}), None).is_null());
    }

    #[test]
    fn history_is_the_entries_or_nothing() {
        let status = json!({"history": [{"step": "transfer"}, {"step": "verify_copy"}]});
        assert_eq!(history(&status).len(), 2);
        assert!(is_step(&history(&status)[1]["step"], Step::VerifyCopy));
        assert!(history(&json!({})).is_empty());
    }
}
