//! What the kills of a round promise the clone's final record will show ([`Ledger`]): the
//! crashes and interruptions its history must count, the restarts of its Transfer, how many
//! bytes the last transfer may still send, and the pg-backup-api operations it must show
//! abandoned.

use std::collections::BTreeSet;

use serde_json::Value;
use states::{OutcomeKind, Phase, Step};

use crate::status;

/// What the round's stops promise the final record will show.
#[derive(Default)]
pub(super) struct Ledger {
    /// The step attempts stops left in flight (SIGKILL inside a step): each is one "Crashed" in
    /// the history once resumed, however often it is killed before a run records it.
    pub(super) in_flight: BTreeSet<String>,
    /// SIGTERMs that stopped pgreplica inside a step with exit 40: each is an "Interrupted".
    pub(super) interrupted: u32,
    /// Bytes the transfer had done at the last stop before it succeeded.
    pub(super) done_before_transfer_succeeded: u64,
    /// The Transfer attempts among [`Ledger::in_flight`]: each is a restart in pg_basebackup
    /// mode.
    pub(super) transfer_stops: BTreeSet<String>,
    /// SIGTERMs that interrupted a Transfer: each is a restart too.
    pub(super) transfer_interrupted: u32,
    /// pg-backup-api operations created while the API could not start workers, replaced with
    /// `--api-operation new`: the record must show them abandoned, and the API may hold no
    /// other operation into the directory but the one the record follows.
    pub(super) abandoned: Vec<String>,
}

impl Ledger {
    /// Notes a stop: `stopped` is the clone's status once its lock is free; `interrupted` when
    /// pgreplica exited 40; `copy` is the plan's copying step (Transfer, or StageBackup).
    pub(super) fn note_stop(
        &mut self,
        steps: &[Step],
        copy: Step,
        stopped: &Value,
        interrupted: bool,
    ) {
        // Killed between a step's outcome and the next begin, nothing was in flight: the
        // resume has no crash to record.
        let in_flight = &stopped["in_flight"];
        if !in_flight.is_null() {
            self.in_flight.insert(in_flight.to_string());
            if status::is_step(&in_flight["step"], copy) {
                self.transfer_stops.insert(in_flight.to_string());
            }
        }
        if interrupted {
            let last = status::history(stopped).last().unwrap_or(&Value::Null);
            // Stopped inside a step, the step records its interruption; stopped while waiting
            // to retry a failed attempt (only a fault fails one), no attempt was running: the
            // failure is the record's last word.
            let waiting_to_retry =
                status::is_outcome(&last["outcome"], OutcomeKind::FailedRetryable);
            self.interrupted += u32::from(!waiting_to_retry);
            if status::is_step(&last["step"], copy)
                && status::is_outcome(&last["outcome"], OutcomeKind::Interrupted)
            {
                self.transfer_interrupted += 1;
            }
        }
        let transfer = steps.iter().position(|s| *s == copy).unwrap_or(0);
        let before_or_in_transfer = steps[..=transfer]
            .iter()
            .any(|s| status::phase(stopped) == Some(Phase::At(*s)));
        if before_or_in_transfer {
            self.done_before_transfer_succeeded = status::progress(stopped, None)["bytes_done"]
                .as_u64()
                .unwrap_or(0);
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    /// The plan of a Barman-mode clone.
    fn barman_steps() -> &'static [Step] {
        states::Mode::BarmanRsync.plan()
    }

    /// A `clone status --json` entry of a clone stopped at `phase`, spelt as pgreplica writes
    /// it (steps and phase by their snake_case names).
    fn stopped(phase: Step, in_flight: Value, bytes_done: u64, history: Value) -> Value {
        json!({
            "phase": phase.json_name(),
            "running": false,
            "progress": {"step": null, "bytes_done": bytes_done, "bytes_total": 1000},
            "history": history,
            "in_flight": in_flight,
        })
    }

    #[test]
    fn each_attempt_left_in_flight_counts_once_and_transfer_attempts_are_restarts() {
        let mut ledger = Ledger::default();
        let transfer = json!({"step": Step::Transfer.json_name(), "started_at": 5});
        // The same attempt killed twice (the resume was killed before it recorded the crash).
        for bytes_done in [100, 300] {
            let status = stopped(Step::Transfer, transfer.clone(), bytes_done, json!([]));
            ledger.note_stop(barman_steps(), Step::Transfer, &status, false);
        }
        let verify = json!({"step": Step::VerifyCopy.json_name(), "started_at": 9});
        ledger.note_stop(
            barman_steps(),
            Step::Transfer,
            &stopped(Step::VerifyCopy, verify, 1000, json!([])),
            false,
        );
        assert_eq!(ledger.in_flight.len(), 2);
        assert_eq!(ledger.transfer_stops.len(), 1);
        // Past Transfer the bytes done no longer move the mark.
        assert_eq!(ledger.done_before_transfer_succeeded, 300);
        assert_eq!(ledger.transfer_interrupted, 0);
    }

    #[test]
    fn a_sigterm_inside_transfer_is_a_restart_and_a_stop_between_steps_no_crash() {
        let mut ledger = Ledger::default();
        let history = json!([
            {"step": Step::PrepareDirs.json_name(), "outcome": OutcomeKind::Succeeded.json_name()},
            {"step": Step::Transfer.json_name(), "outcome": OutcomeKind::Interrupted.json_name()},
        ]);
        ledger.note_stop(
            barman_steps(),
            Step::Transfer,
            &stopped(Step::Transfer, Value::Null, 40, history),
            true,
        );
        assert_eq!(ledger.transfer_interrupted, 1);
        assert!(ledger.in_flight.is_empty());
        assert_eq!(ledger.done_before_transfer_succeeded, 40);
        // An interruption elsewhere is no restart of the Transfer.
        let history = json!([{"step": Step::VerifyCopy.json_name(), "outcome": OutcomeKind::Interrupted.json_name()}]);
        ledger.note_stop(
            barman_steps(),
            Step::Transfer,
            &stopped(Step::VerifyCopy, Value::Null, 1000, history),
            true,
        );
        assert_eq!(ledger.transfer_interrupted, 1);
        assert_eq!(ledger.done_before_transfer_succeeded, 40);
        assert_eq!(ledger.interrupted, 2);
        // Stopped while waiting to retry a failed attempt: nothing was interrupted.
        let history = json!([{"step": Step::WriteReplicationConf.json_name(), "outcome": OutcomeKind::FailedRetryable.json_name()}]);
        ledger.note_stop(
            barman_steps(),
            Step::Transfer,
            &stopped(Step::WriteReplicationConf, Value::Null, 1000, history),
            true,
        );
        assert_eq!(ledger.interrupted, 2);
    }
}
