//! The runner driven in memory: a scripted executor stands in for the steps, a channel for
//! SIGINT/SIGTERM, and a real store in a temporary directory records every checkpoint. Each test
//! reloads the record from the store, so what it checks is what a `clone resume` would find.

use pgreplica::error::{Error, ErrorKind, Result};
use pgreplica::progress::Progress;
use pgreplica::runner::{self, Executor, StepContext, StopSignal};
use pgreplica::store::{CloneStore, StateDir};
use states::*;
use std::collections::VecDeque;
use std::sync::Mutex;
use tokio::sync::mpsc;

/// What the scripted executor does when it is asked to run a step.
#[derive(Clone, Copy, Debug)]
enum Act {
    Succeed,
    FailRetryable,
    FailFatal,
    /// Requests a stop, then never finishes (the runner must drop the step).
    StopInside,
    /// Reports that it runs, then never finishes (the test drops the whole run: a crash).
    HangInside,
}

/// Steps as a script: each call pops the next act and checks that the step is the one the
/// script expects, so a runner that reorders or skips steps fails the test.
struct Script {
    acts: Mutex<VecDeque<(Step, Act)>>,
    ran: Mutex<Vec<Step>>,
    stop: mpsc::UnboundedSender<()>,
    inside: mpsc::UnboundedSender<Step>,
}

impl Script {
    fn new(
        acts: impl IntoIterator<Item = (Step, Act)>,
    ) -> (Script, Stop, mpsc::UnboundedReceiver<Step>) {
        let (stop, requests) = mpsc::unbounded_channel();
        let (inside, steps) = mpsc::unbounded_channel();
        let script = Script {
            acts: Mutex::new(acts.into_iter().collect()),
            ran: Mutex::new(Vec::new()),
            stop,
            inside,
        };
        (script, Stop(requests), steps)
    }

    fn ran(&self) -> Vec<Step> {
        self.ran.lock().unwrap().clone()
    }

    fn finished(&self) -> bool {
        self.acts.lock().unwrap().is_empty()
    }
}

impl Executor for Script {
    async fn execute(&self, task: Task, ctx: &mut StepContext<'_>) -> Result<StepResult> {
        // The runner checkpoints `begin` before it runs a step: the store already knows.
        let saved = ctx.store.load().unwrap().unwrap();
        assert_eq!(saved.in_flight(), Some(task.step), "begin saved first");
        let (expected, act) = self
            .acts
            .lock()
            .unwrap()
            .pop_front()
            .unwrap_or_else(|| panic!("{} ran past the script", task.step));
        assert_eq!(task.step, expected, "the runner ran steps out of order");
        self.ran.lock().unwrap().push(task.step);
        match act {
            Act::Succeed => Ok(result_for(task.step)),
            Act::FailRetryable => {
                Err(Error::new(ErrorKind::Ssh, "ssh: connection reset").retryable())
            }
            Act::FailFatal => {
                Err(Error::new(ErrorKind::Barman, "no such backup").hint("check --backup-id"))
            }
            Act::StopInside => {
                self.stop.send(()).unwrap();
                std::future::pending().await
            }
            Act::HangInside => {
                self.inside.send(task.step).unwrap();
                std::future::pending().await
            }
        }
    }
}

/// The test's SIGINT/SIGTERM.
struct Stop(mpsc::UnboundedReceiver<()>);

impl StopSignal for Stop {
    async fn requested(&mut self) {
        if self.0.recv().await.is_none() {
            std::future::pending::<()>().await;
        }
    }
}

fn request() -> CloneRequest {
    CloneRequest {
        mode: Mode::BarmanRsync,
        data_dir: "/srv/standby".into(),
        backup_selector: "latest".into(),
        jobs: 1,
        barman: Some(BarmanTarget {
            host: "barman@backup".into(),
            server: "pg".into(),
            config: None,
        }),
        ..CloneRequest::default()
    }
}

fn result_for(step: Step) -> StepResult {
    match step {
        Step::VerifyBackup => StepResult::VerifyBackup(BackupFacts {
            backup_id: "20261125T061436".into(),
            pg_version: 150_018,
            ..BackupFacts::default()
        }),
        Step::FetchParams => StepResult::FetchParams(SourceParams {
            server_version_num: 150_018,
            ..SourceParams::default()
        }),
        Step::PrepareDirs => StepResult::PrepareDirs(PreparedDirs::default()),
        Step::Transfer => StepResult::Transfer(TransferSummary::default()),
        Step::StageBackup => StepResult::StageBackup(TransferSummary::default()),
        Step::UnpackBackup => StepResult::UnpackBackup(states::UnpackSummary::default()),
        Step::CombineChain => StepResult::CombineChain(states::CombineSummary::default()),
        Step::VerifyCopy => StepResult::VerifyCopy(Verification::Verified { files: 1 }),
        Step::WriteReplicationConf => StepResult::WriteReplicationConf(WrittenConf::default()),
    }
}

/// Delays of a millisecond: the retries are real, the waiting is not.
fn quick(max_attempts: u32) -> RetryPolicy {
    RetryPolicy {
        first_delay_ms: 1,
        max_delay_ms: 1,
        ..RetryPolicy::STEP.with_attempts(max_attempts)
    }
}

struct Lab {
    _tmp: tempfile::TempDir,
    store: CloneStore,
    record: CloneRecord,
}

fn lab() -> Lab {
    let tmp = tempfile::tempdir().unwrap();
    let state = StateDir::open(&tmp.path().join("state")).unwrap();
    let id = CloneId::for_data_dir("/srv/standby");
    let store = state.open_clone(&id).unwrap();
    let record = CloneRecord::new(id, request(), 1);
    store.save(&record).unwrap();
    Lab {
        _tmp: tmp,
        store,
        record,
    }
}

impl Lab {
    async fn run(&mut self, script: &Script, stop: &mut Stop, policy: RetryPolicy) -> Result<()> {
        runner::run(
            &self.store,
            &mut self.record,
            script,
            &Progress::new(),
            policy,
            stop,
        )
        .await
    }

    /// The record as the store holds it (what `clone resume` would load).
    fn saved(&self) -> CloneRecord {
        let saved = self.store.load().unwrap().unwrap();
        assert_eq!(saved, self.record, "the last transition was saved");
        saved
    }
}

fn plan() -> &'static [Step] {
    Mode::BarmanRsync.plan()
}

fn outcomes(record: &CloneRecord) -> Vec<(Step, OutcomeKind)> {
    record
        .history()
        .iter()
        .map(|t| (t.step, t.outcome))
        .collect()
}

#[tokio::test]
async fn a_clone_whose_steps_succeed_runs_its_plan_once_in_order_and_is_saved_done() {
    let mut lab = lab();
    let (script, mut stop, _) = Script::new(plan().iter().map(|&s| (s, Act::Succeed)));
    lab.run(&script, &mut stop, quick(3)).await.unwrap();
    assert_eq!(script.ran(), plan());
    let saved = lab.saved();
    assert_eq!(saved.phase(), Phase::Done);
    assert_eq!(
        outcomes(&saved),
        plan()
            .iter()
            .map(|&s| (s, OutcomeKind::Succeeded))
            .collect::<Vec<_>>()
    );
    assert_eq!(
        saved.facts().backup.as_ref().unwrap().backup_id,
        "20261125T061436"
    );
}

#[tokio::test]
async fn a_retryable_failure_within_the_budget_is_retried_and_the_clone_finishes() {
    let mut lab = lab();
    let mut acts = vec![
        (Step::VerifyBackup, Act::Succeed),
        (Step::FetchParams, Act::Succeed),
        (Step::PrepareDirs, Act::Succeed),
        (Step::Transfer, Act::FailRetryable),
        (Step::Transfer, Act::FailRetryable),
        (Step::Transfer, Act::Succeed),
    ];
    acts.extend(plan()[4..].iter().map(|&s| (s, Act::Succeed)));
    let (script, mut stop, _) = Script::new(acts);
    lab.run(&script, &mut stop, quick(3)).await.unwrap();
    assert!(script.finished());
    let saved = lab.saved();
    assert_eq!(saved.phase(), Phase::Done);
    let transfer: Vec<OutcomeKind> = saved
        .history()
        .iter()
        .filter(|t| t.step == Step::Transfer)
        .map(|t| t.outcome)
        .collect();
    assert_eq!(
        transfer,
        [
            OutcomeKind::FailedRetryable,
            OutcomeKind::FailedRetryable,
            OutcomeKind::Succeeded
        ]
    );
    assert_eq!(saved.last_error(), None, "a success clears the failure");
}

#[tokio::test]
async fn past_the_budget_the_run_stops_with_the_steps_error_and_stays_resumable() {
    let mut lab = lab();
    let (script, mut stop, _) = Script::new([
        (Step::VerifyBackup, Act::FailRetryable),
        (Step::VerifyBackup, Act::FailRetryable),
    ]);
    let error = lab.run(&script, &mut stop, quick(2)).await.unwrap_err();
    assert_eq!(error.kind, ErrorKind::Ssh);
    assert_eq!(error.message, "ssh: connection reset");
    assert!(script.finished(), "exactly two attempts");
    let saved = lab.saved();
    assert_eq!(saved.phase(), Phase::At(Step::VerifyBackup));
    assert_eq!(saved.in_flight(), None);
    assert_eq!(saved.attempts(), 2);
    assert_eq!(saved.last_error().unwrap().exit_code, 12);

    // `clone resume` starts a new run with a full budget and finishes.
    let (script, mut stop, _) = Script::new(plan().iter().map(|&s| (s, Act::Succeed)));
    lab.run(&script, &mut stop, quick(2)).await.unwrap();
    assert_eq!(lab.saved().phase(), Phase::Done);
}

#[tokio::test]
async fn a_fatal_failure_stops_at_once_with_its_error_and_hint() {
    let mut lab = lab();
    let (script, mut stop, _) = Script::new([(Step::VerifyBackup, Act::FailFatal)]);
    let error = lab.run(&script, &mut stop, quick(5)).await.unwrap_err();
    assert_eq!(error.exit_code(), 19);
    assert!(script.finished(), "a fatal failure is not retried");
    let saved = lab.saved();
    assert_eq!(
        outcomes(&saved),
        [(Step::VerifyBackup, OutcomeKind::FailedFatal)]
    );
    let failure = saved.last_error().unwrap();
    assert_eq!(failure.kind, FailureKind::Fatal);
    assert_eq!(failure.hint.as_deref(), Some("check --backup-id"));
}

#[tokio::test]
async fn a_stop_inside_any_step_records_it_interrupted_and_the_resume_goes_on_from_there() {
    for (index, &stopped_in) in plan().iter().enumerate() {
        let mut lab = lab();
        let mut acts: Vec<(Step, Act)> =
            plan()[..index].iter().map(|&s| (s, Act::Succeed)).collect();
        acts.push((stopped_in, Act::StopInside));
        let (script, mut stop, _) = Script::new(acts);
        let error = lab.run(&script, &mut stop, quick(3)).await.unwrap_err();
        assert_eq!(error.kind, ErrorKind::Interrupted, "{stopped_in}");
        assert_eq!(error.exit_code(), 40);
        assert!(error.hint.unwrap().contains("pgreplica clone resume"));
        let saved = lab.saved();
        assert_eq!(saved.phase(), Phase::At(stopped_in));
        assert_eq!(saved.in_flight(), None, "an interruption is not a crash");
        assert_eq!(
            outcomes(&saved).last(),
            Some(&(stopped_in, OutcomeKind::Interrupted))
        );
        for done in &plan()[..index] {
            assert!(saved.is_step_done(*done));
        }

        let (script, mut stop, _) = Script::new(plan()[index..].iter().map(|&s| (s, Act::Succeed)));
        lab.run(&script, &mut stop, quick(3)).await.unwrap();
        assert_eq!(script.ran(), &plan()[index..], "resumed at {stopped_in}");
        assert_eq!(lab.saved().phase(), Phase::Done);
    }
}

#[tokio::test]
async fn a_stop_during_a_retry_delay_ends_the_run_without_another_attempt() {
    let mut lab = lab();
    let (script, mut stop, _) = Script::new([(Step::VerifyBackup, Act::FailRetryable)]);
    let long_delay = RetryPolicy {
        first_delay_ms: 3_600_000,
        max_delay_ms: 3_600_000,
        ..RetryPolicy::STEP.with_attempts(5)
    };
    // The stop is already requested when the delay begins: the runner must not wait it out.
    script.stop.send(()).unwrap();
    let error = lab.run(&script, &mut stop, long_delay).await.unwrap_err();
    assert_eq!(error.kind, ErrorKind::Interrupted);
    assert!(script.finished(), "no second attempt");
    let saved = lab.saved();
    assert_eq!(
        outcomes(&saved),
        [(Step::VerifyBackup, OutcomeKind::FailedRetryable)]
    );
    assert_eq!(saved.in_flight(), None);
}

#[tokio::test]
async fn a_crash_between_begin_and_finish_is_found_and_the_step_runs_again() {
    for (index, &crashed_in) in plan().iter().enumerate() {
        let mut lab = lab();
        let mut acts: Vec<(Step, Act)> =
            plan()[..index].iter().map(|&s| (s, Act::Succeed)).collect();
        acts.push((crashed_in, Act::HangInside));
        let (script, mut stop, mut inside) = Script::new(acts);
        // The process dies while the step runs: the run's future is dropped where it stands,
        // after `begin` was saved and before any outcome.
        tokio::select! {
            result = lab.run(&script, &mut stop, quick(3)) => panic!("the run ended: {result:?}"),
            step = inside.recv() => assert_eq!(step, Some(crashed_in)),
        }
        let loaded = lab.store.load().unwrap().unwrap();
        assert_eq!(loaded.in_flight(), Some(crashed_in), "begin was saved");
        lab.record = loaded;

        let (script, mut stop, _) = Script::new(plan()[index..].iter().map(|&s| (s, Act::Succeed)));
        lab.run(&script, &mut stop, quick(3)).await.unwrap();
        assert_eq!(script.ran(), &plan()[index..], "crashed in {crashed_in}");
        let saved = lab.saved();
        assert_eq!(saved.phase(), Phase::Done);
        let crashed: Vec<Step> = saved
            .history()
            .iter()
            .filter(|t| t.outcome == OutcomeKind::Crashed)
            .map(|t| t.step)
            .collect();
        assert_eq!(crashed, [crashed_in]);
        for step in plan() {
            let successes = saved
                .history()
                .iter()
                .filter(|t| t.step == *step && t.outcome == OutcomeKind::Succeeded)
                .count();
            assert_eq!(successes, 1, "{step} succeeded once");
        }
    }
}
