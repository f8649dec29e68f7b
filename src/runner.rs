//! Drives a clone record through its plan: begin a step, checkpoint, run it, record its outcome,
//! checkpoint, go on.
//!
//! The order is the crash-safety argument. `begin` is saved (and flushed) **before** the step
//! runs, so a run killed inside a step is found at the next load as a crash in that step; the
//! outcome is saved before the next step begins, so a step checkpointed done never runs again.
//! Steps are idempotent, so re-running the crashed one converges.
//!
//! A stop request (SIGINT or SIGTERM in the binary, a test's channel in tests: see
//! [`StopSignal`]) is honoured at a safe point: the step's future is dropped (which kills its
//! child processes), the attempt is recorded as interrupted, and the run returns the
//! "interrupted, resumable" error.
//!
//! The runner decides nothing: the `states` machine says which step runs next, with which
//! inputs, whether a failed step is tried again in this run and after how long
//! ([`states::RetryBudget`]). The runner only waits, runs and saves.

use crate::error::{Error, ErrorKind, Result};
use crate::progress::Progress;
use crate::store::{CloneStore, StatusSnapshot};
use states::{
    CloneRecord, CloneRequest, FailureKind, Next, Outcome, RetryBudget, RetryPolicy, Step,
    StepFailure, StepResult, Task,
};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::signal::unix::{signal, Signal, SignalKind};

/// How often the status snapshot is refreshed while a step runs.
const PUBLISH_EVERY: Duration = Duration::from_millis(500);

/// What a step can reach while it runs.
pub struct StepContext<'a> {
    /// The clone (steps may record progress on it and call [`StepContext::checkpoint`]).
    pub record: &'a mut CloneRecord,
    /// The clone's store (file lists, checkpoints).
    pub store: &'a CloneStore,
    /// Live counters for the operator.
    pub progress: &'a Progress,
}

impl StepContext<'_> {
    /// What the operator asked for, as recorded at `clone start`.
    pub fn request(&self) -> &CloneRequest {
        self.record.request()
    }

    /// Saves the record now, for facts that must survive a crash inside the step (the
    /// pg-backup-api operation id).
    pub fn checkpoint(&self) -> Result<()> {
        self.store.save(self.record)
    }
}

/// Runs one step. The real implementation is `steps::Steps`; the runner's tests script their
/// own.
#[allow(async_fn_in_trait)] // awaited in place by the runner, never spawned: no Send bound needed
pub trait Executor {
    /// Runs the task's step with its inputs to completion or failure. Must be idempotent: it
    /// may be re-run after a crash anywhere inside it.
    async fn execute(&self, task: Task, ctx: &mut StepContext<'_>) -> Result<StepResult>;
}

/// What asks a run to stop at its next safe point.
#[allow(async_fn_in_trait)] // awaited in place by the runner, never spawned
pub trait StopSignal {
    /// Completes when a stop is requested; may be awaited again for the next request.
    async fn requested(&mut self);
}

/// The clock, in the machine's unit.
pub fn now_millis() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

fn machine_bug(e: states::MachineError) -> Error {
    Error::bug(format!("clone machine misuse: {e}"))
}

/// SIGINT and SIGTERM: the binary's stop signal.
pub struct Signals {
    interrupt: Signal,
    terminate: Signal,
}

impl Signals {
    /// Installs the handlers; from now on SIGINT and SIGTERM no longer kill the process.
    pub fn install() -> Result<Signals> {
        let make = |kind| {
            signal(kind).map_err(|e| {
                Error::new(
                    ErrorKind::System,
                    format!("cannot install signal handler: {e}"),
                )
                .hint("run pgreplica from a shell or service manager that lets it handle SIGINT and SIGTERM")
            })
        };
        Ok(Signals {
            interrupt: make(SignalKind::interrupt())?,
            terminate: make(SignalKind::terminate())?,
        })
    }
}

impl StopSignal for Signals {
    async fn requested(&mut self) {
        tokio::select! {
            _ = self.interrupt.recv() => {}
            _ = self.terminate.recv() => {}
        }
    }
}

/// Drives `record` until it is done, fails, or is stopped. Every transition is saved in
/// `store` before the next thing happens; `policy` bounds the retries of a failed step within
/// this run.
pub async fn run(
    store: &CloneStore,
    record: &mut CloneRecord,
    executor: &impl Executor,
    progress: &Progress,
    policy: RetryPolicy,
    stop: &mut impl StopSignal,
) -> Result<()> {
    let mut budget = RetryBudget::new(policy);
    if let Some(step) = record.recover_crash(now_millis()) {
        crate::warning!("an earlier run stopped inside step {step}; running it again");
        store.save(record)?;
    }
    loop {
        if record.next() == Next::Done {
            publish(store, record, progress);
            return Ok(());
        }
        let task = record.begin(now_millis()).map_err(machine_bug)?;
        let step = task.step;
        store.save(record)?;
        crate::info!("step {step} (attempt {})", record.attempts());
        progress.begin_step(step);
        let shown = record.clone();
        publish(store, &shown, progress);
        let outcome = {
            let mut ctx = StepContext {
                record: &mut *record,
                store,
                progress,
            };
            let work = executor.execute(task, &mut ctx);
            tokio::pin!(work);
            let mut ticker = tokio::time::interval(PUBLISH_EVERY);
            loop {
                // Biased: a step that has finished is recorded as finished, even when a stop
                // arrived in the same instant.
                tokio::select! {
                    biased;
                    result = &mut work => break result.map_err(Some),
                    _ = stop.requested() => break Err(None),
                    _ = ticker.tick() => {
                        progress.tick();
                        publish(store, &shown, progress);
                    }
                }
            }
        };
        progress.end_step();
        let (outcome, error) = match outcome {
            Ok(result) => (Outcome::Succeeded(result), None),
            Err(Some(error)) => (Outcome::Failed(failure_of(&error)), Some(error)),
            Err(None) => (Outcome::Interrupted, None),
        };
        let next = record
            .finish(outcome, now_millis(), &mut budget)
            .map_err(machine_bug)?;
        store.save(record)?;
        publish(store, record, progress);
        match next {
            Next::Run(_) | Next::Done => {}
            Next::Retry { step, delay_ms } => {
                // Only the final failure is an ERROR; one that is retried is a WARNING.
                if let Some(error) = &error {
                    crate::log::emit(
                        crate::log::Level::Warning,
                        &error.full_message(),
                        error.detail.as_deref(),
                        None,
                    );
                }
                let delay = Duration::from_millis(delay_ms);
                crate::info!("Retrying step {step} in {} s...", delay.as_secs_f32());
                tokio::select! {
                    _ = tokio::time::sleep(delay) => {}
                    _ = stop.requested() => return Err(interrupted(record, step)),
                }
            }
            Next::Stop => {
                return Err(error.unwrap_or_else(|| interrupted(record, step)));
            }
        }
    }
}

fn interrupted(record: &CloneRecord, step: Step) -> Error {
    Error::new(
        ErrorKind::Interrupted,
        format!("clone {} interrupted during step {step}", record.id()),
    )
    .hint(format!(
        "continue it with \"{}\"",
        crate::paste::pgreplica(&["clone", "resume", record.id().as_str()])
    ))
}

/// The record of a failure, as the machine keeps it.
pub fn failure_of(error: &Error) -> StepFailure {
    StepFailure {
        kind: if error.retryable {
            FailureKind::Retryable
        } else {
            FailureKind::Fatal
        },
        message: error.full_message(),
        hint: error.hint.clone(),
        exit_code: error.exit_code(),
    }
}

/// Refreshes the status snapshot; a failure to do so is logged, never fatal, because the store
/// (not the snapshot) is the truth.
fn publish(store: &CloneStore, record: &CloneRecord, progress: &Progress) {
    let snapshot = StatusSnapshot {
        record: record.clone(),
        pid: std::process::id(),
        updated_at: now_millis(),
        live: progress.live(),
    };
    if let Err(e) = store.publish(&snapshot) {
        crate::debug!("cannot refresh the status snapshot: {}", e.message);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_keep_their_kind_and_exit_code() {
        let failure = failure_of(&Error::new(ErrorKind::Rsync, "rsync died").retryable());
        assert_eq!(failure.kind, FailureKind::Retryable);
        assert_eq!(failure.exit_code, 2);
        let failure = failure_of(&Error::new(ErrorKind::Barman, "no backup"));
        assert_eq!(failure.kind, FailureKind::Fatal);
        assert_eq!(failure.exit_code, 19);
    }
}
