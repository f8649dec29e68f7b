//! The machine's values as `pgreplica clone status --json` spells them, read back into the
//! `states` types ([`Step`], [`Phase`], [`OutcomeKind`]): the one place in the lab (and in
//! xtask, which reads status through it) that knows those spellings, so that a change of the
//! JSON's values changes this module only.
//!
//! Today a history entry's `step` and `outcome`, `live.step`, the record's `in_flight.step` and
//! `facts.verification` are the types' serde form; `phase` is [`Step::name`], or `Done` once
//! the clone is finished.
//! It must not judge a status: it says what a value means, the caller decides what to expect.

use serde_json::Value;
use states::Verification;
/// The types this module reads status values into, for callers without the `states` crate.
pub use states::{OutcomeKind, Phase, Step};

/// What `phase` says once the clone is finished.
const DONE: &str = "Done";
/// How [`phase_name`] shows a status without a phase it can read.
const UNKNOWN: &str = "unknown";

/// The step a status value names (a history entry's `step`, `live.step`, `in_flight.step`);
/// None for anything else.
pub fn step(value: &Value) -> Option<Step> {
    serde_json::from_value(value.clone()).ok()
}

/// Whether `value` names `step`.
pub fn is_step(value: &Value, step: Step) -> bool {
    self::step(value) == Some(step)
}

/// How an attempt ended, from a history entry's `outcome`; None for anything else.
pub fn outcome(value: &Value) -> Option<OutcomeKind> {
    serde_json::from_value(value.clone()).ok()
}

/// Whether `value` (a history entry's `outcome`) is `outcome`.
pub fn is_outcome(value: &Value, outcome: OutcomeKind) -> bool {
    self::outcome(value) == Some(outcome)
}

/// Where the clone of `status` (one entry of `clone status --json`) stands: its `phase`. None
/// when the status shows no phase this module can read.
pub fn phase(status: &Value) -> Option<Phase> {
    let name = status["phase"].as_str()?;
    if name == DONE {
        return Some(Phase::Done);
    }
    Step::ALL
        .into_iter()
        .find(|step| step.name() == name)
        .map(Phase::At)
}

/// A phase as `clone status` names it: the step's name, `Done`, or `unknown` for None (a
/// status [`phase`] could not read).
pub fn phase_name(phase: Option<Phase>) -> &'static str {
    match phase {
        Some(Phase::At(step)) => step.name(),
        Some(Phase::Done) => DONE,
        None => UNKNOWN,
    }
}

/// How many files VerifyCopy checked against the backup manifest, from the record's
/// `facts.verification`; None when it skipped the check or has not run.
pub fn verified_files(status: &Value) -> Option<u64> {
    let verification = &status["record"]["facts"]["verification"];
    match serde_json::from_value(verification.clone()).ok()? {
        Verification::Verified { files } => Some(files),
        Verification::Checked { .. } | Verification::Skipped { .. } => None,
    }
}

/// How many regular files the clone's file list holds (`files.files_total`, shown for a clone
/// no process runs); None when the status shows no file list.
pub fn files_total(status: &Value) -> Option<u64> {
    status["files"]["files_total"].as_u64()
}

/// The entries of a status's `history`, oldest first (none when it has no history).
pub fn history(status: &Value) -> &[Value] {
    status["history"].as_array().map_or(&[], Vec::as_slice)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    const OUTCOMES: [OutcomeKind; 7] = [
        OutcomeKind::Succeeded,
        OutcomeKind::FailedRetryable,
        OutcomeKind::FailedFatal,
        OutcomeKind::Interrupted,
        OutcomeKind::Crashed,
        OutcomeKind::DirsReplaced,
        OutcomeKind::PaceChanged,
    ];

    #[test]
    fn steps_and_outcomes_read_back_as_pgreplica_writes_them() {
        for step in Step::ALL {
            // status.rs writes `"step": t.step` (serde), as it does `live` and `in_flight`.
            let written = serde_json::to_value(step).unwrap();
            assert_eq!(super::step(&written), Some(step));
            assert!(is_step(&written, step));
            let others = Step::ALL.into_iter().filter(|s| *s != step);
            assert!(others.into_iter().all(|other| !is_step(&written, other)));
        }
        for outcome in OUTCOMES {
            let written = serde_json::to_value(outcome).unwrap();
            assert_eq!(super::outcome(&written), Some(outcome));
            assert!(is_outcome(&written, outcome));
        }
        assert_eq!(serde_json::to_value(Step::Transfer).unwrap(), "Transfer");
        assert_eq!(
            serde_json::to_value(OutcomeKind::Crashed).unwrap(),
            "Crashed"
        );
        for nothing in [
            Value::Null,
            json!("Copy"),
            json!(3),
            json!({"step": "Transfer"}),
        ] {
            assert_eq!(super::step(&nothing), None, "{nothing}");
            assert_eq!(super::outcome(&nothing), None, "{nothing}");
        }
    }

    #[test]
    fn phases_read_back_by_step_name_or_done() {
        for step in Step::ALL {
            // status.rs writes `"phase": step.name()`.
            let status = json!({"phase": step.name()});
            assert_eq!(phase(&status), Some(Phase::At(step)));
            assert_eq!(phase_name(phase(&status)), step.name());
        }
        let done = json!({"phase": "Done"});
        assert_eq!(phase(&done), Some(Phase::Done));
        assert_eq!(phase_name(phase(&done)), "Done");
        for unreadable in [json!({}), json!({"phase": "Copying"}), json!({"phase": 1})] {
            assert_eq!(phase(&unreadable), None, "{unreadable}");
        }
        assert_eq!(phase_name(None), "unknown");
    }

    #[test]
    fn verified_files_only_when_verify_copy_checked_them() {
        let with = |verification: Verification| json!({"record": {"facts": {"verification": verification}}});
        assert_eq!(
            verified_files(&with(Verification::Verified { files: 1234 })),
            Some(1234)
        );
        let skipped = Verification::Skipped {
            reason: "no backup_manifest".to_string(),
        };
        assert_eq!(verified_files(&with(skipped)), None);
        assert_eq!(verified_files(&json!({"record": {"facts": {}}})), None);
    }

    #[test]
    fn history_is_the_entries_or_nothing() {
        let status = json!({"history": [{"step": "Transfer"}, {"step": "VerifyCopy"}]});
        assert_eq!(history(&status).len(), 2);
        assert!(is_step(&history(&status)[1]["step"], Step::VerifyCopy));
        assert!(history(&json!({})).is_empty());
    }
}
