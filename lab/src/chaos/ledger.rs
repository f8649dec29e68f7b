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
