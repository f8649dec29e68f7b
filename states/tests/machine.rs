//! Exhaustive tests of the clone machine: every mode × every kind of backup × every step of its
//! plan × every outcome.

mod common;

use common::{kinds, request};
use states::*;

/// A new record of `mode`. In pg-backup-api mode its operation is recorded up front, as the
/// Transfer step records it before succeeding (VerifyCopy names it; `tests/api.rs` drives the
/// protocol itself).
fn record(mode: Mode) -> CloneRecord {
    let mut record = CloneRecord::new(CloneId::for_data_dir("/srv/standby"), request(mode), 1_000);
    if mode == Mode::BackupApi {
        record.api_attempt_begun(1_000, &[]);
        record.api_operation_created(1_000, "20261125T062411");
    }
    record
}

fn budget() -> RetryBudget {
    RetryBudget::new(RetryPolicy::STEP)
}

fn result_for(step: Step) -> StepResult {
    result_of_kind(step, &BackupKind::Plain)
}

fn result_of_kind(step: Step, kind: &BackupKind) -> StepResult {
    match step {
        Step::VerifyBackup => StepResult::VerifyBackup(BackupFacts {
            backup_id: "20261125T061436".into(),
            kind: kind.clone(),
            ..BackupFacts::default()
        }),
        Step::FetchParams => StepResult::FetchParams(SourceParams::default()),
        Step::PrepareDirs => StepResult::PrepareDirs(PreparedDirs::default()),
        Step::Transfer => StepResult::Transfer(TransferSummary::default()),
        Step::StageBackup => StepResult::StageBackup(TransferSummary::default()),
        Step::UnpackBackup => StepResult::UnpackBackup(UnpackSummary::default()),
        Step::CombineChain => StepResult::CombineChain(CombineSummary::default()),
        Step::VerifyCopy => StepResult::VerifyCopy(Verification::Skipped {
            reason: "no manifest".into(),
        }),
        Step::WriteReplicationConf => StepResult::WriteReplicationConf(WrittenConf::default()),
    }
}

fn failure(kind: FailureKind) -> StepFailure {
    StepFailure {
        kind,
        message: "rsync exited with code 12".into(),
        hint: None,
        exit_code: 2,
    }
}

/// Drives `record` through successes, VerifyBackup recording `kind`, until `step` is current.
fn advance_with(record: &mut CloneRecord, step: Step, now: &mut Millis, kind: &BackupKind) {
    while record.phase() != Phase::At(step) {
        let Phase::At(current) = record.phase() else {
            panic!("plan ended before {step}");
        };
        record.begin(*now).unwrap();
        *now += 10;
        record
            .finish(
                Outcome::Succeeded(result_of_kind(current, kind)),
                *now,
                &mut budget(),
            )
            .unwrap();
    }
}

#[derive(Clone, Copy, Debug)]
enum Input {
    Success,
    Retryable,
    Fatal,
    Interrupted,
    Crash,
}

const INPUTS: [Input; 5] = [
    Input::Success,
    Input::Retryable,
    Input::Fatal,
    Input::Interrupted,
    Input::Crash,
];

#[test]
fn every_state_and_outcome_reaches_the_right_next_state_in_every_plan() {
    let mut combinations = 0;
    for (mode, kind) in Mode::ALL
        .into_iter()
        .flat_map(|mode| kinds().into_iter().map(move |kind| (mode, kind)))
    {
        let plan = mode.plan_for(&kind);
        for (index, &step) in plan.iter().enumerate() {
            for input in INPUTS {
                let mut now = 1_000;
                let mut rec = record(mode);
                advance_with(&mut rec, step, &mut now, &kind);
                if index > 0 {
                    // The kind is known once VerifyBackup succeeded.
                    assert_eq!(rec.plan(), plan, "{mode:?} {kind:?}");
                }
                let history_before = rec.history().len();
                assert_eq!(rec.begin(now).unwrap().step, step);
                assert_eq!(rec.in_flight(), Some(step));
                let started = now;
                now += 5;
                let expected_after_success = plan
                    .get(index + 1)
                    .map_or(Phase::Done, |next| Phase::At(*next));
                match input {
                    Input::Success => {
                        let next = rec
                            .finish(
                                Outcome::Succeeded(result_of_kind(step, &kind)),
                                now,
                                &mut budget(),
                            )
                            .unwrap();
                        assert_eq!(rec.phase(), expected_after_success, "{mode:?} {step}");
                        assert_eq!(
                            next,
                            match expected_after_success {
                                Phase::At(s) => Next::Run(s),
                                Phase::Done => Next::Done,
                            }
                        );
                        assert_eq!(rec.attempts(), 0);
                        assert!(rec.is_step_done(step));
                    }
                    Input::Retryable | Input::Fatal => {
                        let kind = match input {
                            Input::Retryable => FailureKind::Retryable,
                            _ => FailureKind::Fatal,
                        };
                        let next = rec
                            .finish(Outcome::Failed(failure(kind)), now, &mut budget())
                            .unwrap();
                        assert_eq!(rec.phase(), Phase::At(step));
                        assert_eq!(
                            next,
                            match kind {
                                FailureKind::Retryable => Next::Retry {
                                    step,
                                    delay_ms: RetryPolicy::STEP.first_delay_ms
                                },
                                FailureKind::Fatal => Next::Stop,
                            }
                        );
                        assert_eq!(rec.attempts(), 1);
                        assert_eq!(rec.last_error().unwrap().kind, kind);
                        assert!(!rec.is_step_done(step));
                    }
                    Input::Interrupted => {
                        assert_eq!(
                            rec.finish(Outcome::Interrupted, now, &mut budget())
                                .unwrap(),
                            Next::Stop
                        );
                        assert_eq!(rec.phase(), Phase::At(step));
                    }
                    Input::Crash => {
                        // The process died: the record as checkpointed after `begin` is all that
                        // survives. Reloading finds the step in flight.
                        let mut reloaded = rec.clone();
                        assert_eq!(
                            reloaded.begin(now),
                            Err(MachineError::CrashNotRecovered(step))
                        );
                        assert_eq!(reloaded.recover_crash(now), Some(step));
                        assert_eq!(reloaded.recover_crash(now), None);
                        assert_eq!(reloaded.phase(), Phase::At(step));
                        assert_eq!(reloaded.next(), Next::Run(step));
                        rec = reloaded;
                    }
                }
                let last = rec.history().last().unwrap();
                assert_eq!(rec.history().len(), history_before + 1);
                assert_eq!(last.step, step);
                assert_eq!(last.started_at, started);
                assert_eq!(last.ended_at, now);
                assert_eq!(
                    last.outcome,
                    match input {
                        Input::Success => OutcomeKind::Succeeded,
                        Input::Retryable => OutcomeKind::FailedRetryable,
                        Input::Fatal => OutcomeKind::FailedFatal,
                        Input::Interrupted => OutcomeKind::Interrupted,
                        Input::Crash => OutcomeKind::Crashed,
                    }
                );
                assert_eq!(rec.in_flight(), None);
                // Every earlier step stays done whatever happened to this one.
                for earlier in &plan[..index] {
                    assert!(rec.is_step_done(*earlier), "{mode:?}: {earlier} undone");
                }
                combinations += 1;
            }
        }
    }
    // Per kind: plain, 4 tars, a plain chain, a chain with tar members. Only Barman mode's
    // plan depends on the kind.
    let barman = 6 + 4 * 7 + 7 + 8;
    let others = 7 * (6 + 5 + 2);
    assert_eq!(combinations, (barman + others) * INPUTS.len());
}

#[test]
fn barman_plans_follow_the_backups_kind() {
    use Step::*;
    let begin = [VerifyBackup, FetchParams, PrepareDirs];
    let end = [VerifyCopy, WriteReplicationConf];
    let with = |middle: &[Step]| [&begin[..], middle, &end[..]].concat();
    for kind in kinds() {
        let expected = match &kind {
            BackupKind::Plain => with(&[Transfer]),
            BackupKind::Tar { .. } => with(&[StageBackup, UnpackBackup]),
            BackupKind::Incremental { chain } if kind.has_tar() => {
                assert!(chain.len() > 1);
                with(&[StageBackup, UnpackBackup, CombineChain])
            }
            BackupKind::Incremental { .. } => with(&[StageBackup, CombineChain]),
        };
        assert_eq!(Mode::BarmanRsync.plan_for(&kind), expected, "{kind:?}");
        // pg-backup-api delegates every kind to `barman restore`.
        assert_eq!(Mode::BackupApi.plan_for(&kind), Mode::BackupApi.plan());
    }
    // Before VerifyBackup the plan is the plain one, whose first steps every plan shares.
    let rec = record(Mode::BarmanRsync);
    assert_eq!(rec.plan(), Mode::BarmanRsync.plan());
}

#[test]
fn plans_are_ordered_subsets_of_the_machine_that_end_in_a_configured_standby() {
    for mode in Mode::ALL {
        let plan = mode.plan();
        // In machine order, no step twice.
        let positions: Vec<usize> = plan
            .iter()
            .map(|s| Step::ALL.iter().position(|a| a == s).unwrap())
            .collect();
        assert!(positions.windows(2).all(|w| w[0] < w[1]), "{mode:?}");
        assert_eq!(plan.last(), Some(&Step::WriteReplicationConf), "{mode:?}");
        assert_eq!(record(mode).phase(), Phase::At(plan[0]), "{mode:?}");
        // A mode that copies verifies what it copied; only a mode with a backup server
        // verifies the backup first.
        let copies = mode != Mode::ReplicationConfOnly;
        assert_eq!(plan.contains(&Step::Transfer), copies, "{mode:?}");
        for kind in kinds() {
            let plan = mode.plan_for(&kind);
            let positions: Vec<usize> = plan
                .iter()
                .map(|s| Step::ALL.iter().position(|a| a == s).unwrap())
                .collect();
            assert!(positions.windows(2).all(|w| w[0] < w[1]), "{mode:?}");
            assert_eq!(plan.last(), Some(&Step::WriteReplicationConf));
            // Exactly one way of copying, then the check of the copy.
            let copying = [Step::Transfer, Step::StageBackup]
                .iter()
                .filter(|s| plan.contains(s))
                .count();
            assert_eq!(copying, usize::from(copies), "{mode:?} {kind:?}");
            assert_eq!(plan.contains(&Step::VerifyCopy), copies, "{mode:?}");
            // A plan begins like the plain plan up to its copy: the kind, learnt by
            // VerifyBackup, never changes a step already done.
            assert_eq!(plan[..3.min(plan.len())], mode.plan()[..3.min(plan.len())]);
        }
        assert_eq!(plan.contains(&Step::PrepareDirs), copies, "{mode:?}");
        assert_eq!(plan.contains(&Step::VerifyCopy), copies, "{mode:?}");
        let has_server = matches!(mode, Mode::BarmanRsync | Mode::BackupApi);
        assert_eq!(plan.contains(&Step::VerifyBackup), has_server, "{mode:?}");
        // Every mode reads the source node before it prepares or writes anything.
        assert!(plan.contains(&Step::FetchParams), "{mode:?}");
    }
}

#[test]
fn a_resumed_record_never_reruns_a_checkpointed_step() {
    // Random walks of failures, crashes and successes: the sequence of steps that *succeed* is
    // exactly the plan, each once, in order, whatever the backup's kind.
    for (mode, kind) in Mode::ALL
        .into_iter()
        .flat_map(|mode| kinds().into_iter().map(move |kind| (mode, kind)))
    {
        for seed in 0..100_u64 {
            let mut rng = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let mut next_random = || {
                rng ^= rng << 13;
                rng ^= rng >> 7;
                rng ^= rng << 17;
                rng
            };
            let mut rec = record(mode);
            let mut now = 0;
            let mut succeeded = Vec::new();
            let mut guard = 0;
            while rec.phase() != Phase::Done {
                guard += 1;
                assert!(guard < 10_000);
                now += 1;
                rec.recover_crash(now);
                let step = rec.begin(now).unwrap().step;
                now += 1;
                let mut budget = budget();
                match next_random() % 5 {
                    0 => {
                        rec.finish(
                            Outcome::Failed(failure(FailureKind::Retryable)),
                            now,
                            &mut budget,
                        )
                        .unwrap();
                    }
                    1 => {
                        rec.finish(
                            Outcome::Failed(failure(FailureKind::Fatal)),
                            now,
                            &mut budget,
                        )
                        .unwrap();
                    }
                    2 => {
                        rec.finish(Outcome::Interrupted, now, &mut budget).unwrap();
                    }
                    3 => { /* crash: leave in flight, like a SIGKILL after the checkpoint */ }
                    _ => {
                        rec.finish(
                            Outcome::Succeeded(result_of_kind(step, &kind)),
                            now,
                            &mut budget,
                        )
                        .unwrap();
                        succeeded.push(step);
                    }
                }
            }
            assert_eq!(
                succeeded,
                mode.plan_for(&kind),
                "{mode:?} {kind:?} seed {seed}"
            );
            assert_eq!(rec.next(), Next::Done);
        }
    }
}

#[test]
fn misuse_is_an_error_not_a_panic() {
    let mut rec = record(Mode::ReplicationConfOnly);
    let b = &mut budget();
    assert_eq!(
        rec.finish(Outcome::Interrupted, 1, b),
        Err(MachineError::NotInFlight)
    );
    rec.begin(1).unwrap();
    assert_eq!(
        rec.finish(Outcome::Succeeded(result_for(Step::Transfer)), 2, b),
        Err(MachineError::WrongStep {
            expected: Step::FetchParams,
            got: Step::Transfer
        })
    );
    // The rejected result changed nothing.
    assert_eq!(rec.in_flight(), Some(Step::FetchParams));
    rec.finish(Outcome::Succeeded(result_for(Step::FetchParams)), 3, b)
        .unwrap();
    rec.begin(4).unwrap();
    rec.finish(
        Outcome::Succeeded(result_for(Step::WriteReplicationConf)),
        5,
        b,
    )
    .unwrap();
    assert_eq!(rec.begin(6), Err(MachineError::AlreadyDone));
    assert_eq!(
        rec.finish(Outcome::Interrupted, 6, b),
        Err(MachineError::AlreadyDone)
    );
}

#[test]
fn a_request_without_its_backup_server_cannot_begin_and_nothing_changes() {
    for (mode, what) in [
        (Mode::BarmanRsync, "barman_host"),
        (Mode::BackupApi, "pg_backupapi_host"),
    ] {
        let mut broken = request(mode);
        broken.barman = None;
        broken.backup_api = None;
        let mut rec = CloneRecord::new(CloneId::for_data_dir("/srv/standby"), broken, 1);
        assert_eq!(
            rec.begin(2),
            Err(MachineError::MissingInput(MissingInput {
                step: Step::VerifyBackup,
                what
            }))
        );
        assert_eq!(rec.in_flight(), None, "{mode:?}");
        assert_eq!(rec.attempts(), 0, "{mode:?}");
    }
}

#[test]
fn facts_are_recorded_for_the_step_that_produced_them() {
    let mut rec = record(Mode::BarmanRsync);
    rec.begin(1).unwrap();
    rec.finish(
        Outcome::Succeeded(result_for(Step::VerifyBackup)),
        2,
        &mut budget(),
    )
    .unwrap();
    assert_eq!(
        rec.facts().backup.as_ref().unwrap().backup_id,
        "20261125T061436"
    );
    assert!(rec.facts().params.is_none());
}
