//! Drives a clone record through its plan: begin a step, checkpoint, run it, record its outcome,
//! checkpoint, go on.
//!
//! The order is the crash-safety argument. `begin` is saved (and flushed) **before** the step
//! runs, so a run killed inside a step is found at the next load as a crash in that step; the
//! outcome is saved before the next step begins, so a step checkpointed done never runs again.
//! Steps are idempotent, so re-running the crashed one converges.
//!
//! SIGINT and SIGTERM are safe points: the step's future is dropped (which kills its child
//! processes), the attempt is recorded as interrupted, and the process exits with the
//! "interrupted, resumable" code. The runner decides nothing itself: the `states` machine says
//! what comes next; the runner only adds the in-run retry delays of a [`RetryPolicy`].

use crate::error::{Error, ErrorKind, Result};
use crate::progress::Progress;
use crate::store::{CloneStore, StatusSnapshot};
use states::{CloneRecord, FailureKind, Next, Outcome, Step, StepFailure, StepResult};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::signal::unix::{signal, Signal, SignalKind};

/// How often the status snapshot is refreshed while a step runs.
const PUBLISH_EVERY: Duration = Duration::from_millis(500);

/// In-run retries of retryable failures. Across runs, `clone resume` retries any failure.
#[derive(Clone, Debug)]
pub struct RetryPolicy {
    /// Attempts at one step within one run, the first included.
    pub max_attempts: u32,
    /// Delay before the first retry; doubles each time.
    pub initial_delay: Duration,
    /// Upper bound of the delay.
    pub max_delay: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 3,
            initial_delay: Duration::from_secs(2),
            max_delay: Duration::from_secs(30),
        }
    }
}

impl RetryPolicy {
    /// Delay before retry number `retry` (1-based).
    pub fn delay(&self, retry: u32) -> Duration {
        let factor = 2_u32.saturating_pow(retry.saturating_sub(1));
        self.initial_delay
            .saturating_mul(factor)
            .min(self.max_delay)
    }
}

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
    /// Saves the record now, for facts that must survive a crash inside the step (the
    /// pg-backup-api operation id).
    pub fn checkpoint(&self) -> Result<()> {
        self.store.save(self.record)
    }
}

/// Runs one step. The real implementation is `steps::Steps`; tests substitute their own.
#[allow(async_fn_in_trait)] // awaited in place by the runner, never spawned: no Send bound needed
pub trait Executor {
    /// Runs `step` to completion or failure. Must be idempotent: it may be re-run after a crash
    /// anywhere inside it.
    async fn execute(&self, step: Step, ctx: &mut StepContext<'_>) -> Result<StepResult>;
}

/// The clock, in the machine's unit.
pub fn now_millis() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

fn machine_bug(e: states::MachineError) -> Error {
    Error::new(ErrorKind::Internal, format!("clone machine misuse: {e}"))
}

/// SIGINT and SIGTERM, as one future.
struct Signals {
    interrupt: Signal,
    terminate: Signal,
}

impl Signals {
    fn install() -> Result<Signals> {
        let make = |kind| {
            signal(kind).map_err(|e| {
                Error::new(
                    ErrorKind::System,
                    format!("cannot install signal handler: {e}"),
                )
            })
        };
        Ok(Signals {
            interrupt: make(SignalKind::interrupt())?,
            terminate: make(SignalKind::terminate())?,
        })
    }

    async fn recv(&mut self) {
        tokio::select! {
            _ = self.interrupt.recv() => {}
            _ = self.terminate.recv() => {}
        }
    }
}

/// Drives `record` until it is done, fails, or is interrupted. Every transition is saved in
/// `store` before the next thing happens.
pub async fn run(
    store: &CloneStore,
    record: &mut CloneRecord,
    executor: &impl Executor,
    progress: &Progress,
    policy: &RetryPolicy,
) -> Result<()> {
    let mut signals = Signals::install()?;
    let mut attempts_this_run = 0;
    if let Some(step) = record.recover_crash(now_millis()) {
        crate::warning!("an earlier run stopped inside step {step}; running it again");
        store.save(record)?;
    }
    loop {
        let step = match record.next() {
            Next::Done => {
                publish(store, record, progress);
                return Ok(());
            }
            _ => record.begin(now_millis()).map_err(machine_bug)?,
        };
        store.save(record)?;
        attempts_this_run += 1;
        crate::info!("step {step} (attempt {})", record.attempts);
        progress.begin_step(step);
        let shown = record.clone();
        publish(store, &shown, progress);
        let outcome = {
            let mut ctx = StepContext {
                record: &mut *record,
                store,
                progress,
            };
            let work = executor.execute(step, &mut ctx);
            tokio::pin!(work);
            let mut ticker = tokio::time::interval(PUBLISH_EVERY);
            loop {
                tokio::select! {
                    result = &mut work => break result.map_err(Some),
                    _ = signals.recv() => break Err(None),
                    _ = ticker.tick() => publish(store, &shown, progress),
                }
            }
        };
        progress.end_step();
        let (outcome, error) = match outcome {
            Ok(result) => (Outcome::Succeeded(result), None),
            Err(Some(error)) => (Outcome::Failed(failure_of(&error)), Some(error)),
            Err(None) => (Outcome::Interrupted, None),
        };
        let next = record.finish(outcome, now_millis()).map_err(machine_bug)?;
        store.save(record)?;
        publish(store, record, progress);
        match next {
            Next::Run(_) | Next::Done => attempts_this_run = 0,
            Next::Retry(step) => {
                let error = error.expect("a retry follows a failure");
                if attempts_this_run >= policy.max_attempts {
                    return Err(error);
                }
                let delay = policy.delay(attempts_this_run);
                crate::log::error(&error);
                crate::info!("Retrying step {step} in {} s...", delay.as_secs_f32());
                tokio::select! {
                    _ = tokio::time::sleep(delay) => {}
                    _ = signals.recv() => return Err(interrupted(record, step)),
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
        format!("clone {} interrupted during step {step}", record.id),
    )
    .hint(format!(
        "continue it with \"pgreplica clone resume {}\"",
        record.id
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
        message: error.message.clone(),
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
    fn retry_delays_grow_and_are_bounded() {
        let policy = RetryPolicy::default();
        assert_eq!(policy.delay(1), Duration::from_secs(2));
        assert_eq!(policy.delay(2), Duration::from_secs(4));
        assert_eq!(policy.delay(10), Duration::from_secs(30));
    }

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
