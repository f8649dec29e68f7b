//! What the kills of a round promise the clone's final record will show ([`Ledger`]): the
//! crashes and interruptions its history must count, the restarts of its Transfer, and how many
//! bytes the last transfer may still send.

use std::collections::BTreeSet;

use serde_json::Value;

/// What the round's stops promise the final record will show.
#[derive(Default)]
pub(super) struct Ledger {
    /// The step attempts stops left in flight (SIGKILL inside a step): each is one "Crashed" in
    /// the history once resumed, however often it is killed before a run records it.
    pub(super) in_flight: BTreeSet<String>,
    /// SIGTERMs that stopped pgreplica with exit 40: each is an "Interrupted".
    pub(super) interrupted: u32,
    /// Bytes the transfer had done at the last stop before it succeeded.
    pub(super) done_before_transfer_succeeded: u64,
    /// The Transfer attempts among [`Ledger::in_flight`]: each is a restart in pg_basebackup
    /// mode.
    pub(super) transfer_stops: BTreeSet<String>,
    /// SIGTERMs that interrupted a Transfer: each is a restart too.
    pub(super) transfer_interrupted: u32,
}

impl Ledger {
    /// Notes a stop: `stopped` is the clone's status once its lock is free; `interrupted` when
    /// pgreplica exited 40.
    pub(super) fn note_stop(&mut self, steps: &[&str], stopped: &Value, interrupted: bool) {
        // Killed between a step's outcome and the next begin, nothing was in flight: the
        // resume has no crash to record.
        let in_flight = &stopped["record"]["in_flight"];
        if !in_flight.is_null() {
            self.in_flight.insert(in_flight.to_string());
            if in_flight["step"] == "Transfer" {
                self.transfer_stops.insert(in_flight.to_string());
            }
        }
        if interrupted {
            let last = stopped["history"]
                .as_array()
                .and_then(|h| h.last())
                .cloned()
                .unwrap_or_default();
            if last["step"] == "Transfer" && last["outcome"] == "Interrupted" {
                self.transfer_interrupted += 1;
            }
        }
        let transfer = steps.iter().position(|s| *s == "Transfer").unwrap_or(0);
        let before_or_in_transfer = steps[..=transfer].iter().any(|s| stopped["phase"] == *s);
        if before_or_in_transfer {
            self.done_before_transfer_succeeded =
                stopped["files"]["bytes_done"].as_u64().unwrap_or(0);
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::chaos::BARMAN_STEPS;

    /// A `clone status --json` entry of a stopped clone.
    fn stopped(phase: &str, in_flight: Value, bytes_done: u64, history: Value) -> Value {
        json!({
            "phase": phase,
            "running": false,
            "files": {"bytes_done": bytes_done, "bytes_total": 1000},
            "history": history,
            "record": {"in_flight": in_flight},
        })
    }

    #[test]
    fn each_attempt_left_in_flight_counts_once_and_transfer_attempts_are_restarts() {
        let mut ledger = Ledger::default();
        let transfer = json!({"step": "Transfer", "started_at": 5});
        // The same attempt killed twice (the resume was killed before it recorded the crash).
        for bytes_done in [100, 300] {
            let status = stopped("Transfer", transfer.clone(), bytes_done, json!([]));
            ledger.note_stop(&BARMAN_STEPS, &status, false);
        }
        let verify = json!({"step": "VerifyCopy", "started_at": 9});
        ledger.note_stop(
            &BARMAN_STEPS,
            &stopped("VerifyCopy", verify, 1000, json!([])),
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
            {"step": "PrepareDirs", "outcome": "Succeeded"},
            {"step": "Transfer", "outcome": "Interrupted"},
        ]);
        ledger.note_stop(
            &BARMAN_STEPS,
            &stopped("Transfer", Value::Null, 40, history),
            true,
        );
        assert_eq!(ledger.transfer_interrupted, 1);
        assert!(ledger.in_flight.is_empty());
        assert_eq!(ledger.done_before_transfer_succeeded, 40);
        // An interruption elsewhere is no restart of the Transfer.
        let history = json!([{"step": "VerifyCopy", "outcome": "Interrupted"}]);
        ledger.note_stop(
            &BARMAN_STEPS,
            &stopped("VerifyCopy", Value::Null, 1000, history),
            true,
        );
        assert_eq!(ledger.transfer_interrupted, 1);
        assert_eq!(ledger.done_before_transfer_succeeded, 40);
    }
}
