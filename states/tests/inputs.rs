//! The plans' knowledge, exhaustively: every step of every plan, for every kind of backup,
//! begins with exactly the inputs its earlier steps established; the run's retry budget;
//! pg_basebackup's restart count; the slot an abandoned clone may hold; the staged kinds'
//! staging directory, space and unpack checkpoints.

use states::*;

const BACKUP_VERSION: u32 = 150_018;
const SOURCE_VERSION: u32 = 150_010;
const UPSTREAM: &str = "host=primary port=5432 user=repmgr dbname=repmgr";
const SYSTEM_ID: &str = "7441234567890123456";
const OPERATION: &str = "20261125T062411";

fn request(mode: Mode, slots: bool) -> CloneRequest {
    let mut request = CloneRequest {
        mode,
        data_dir: "/srv/standby".into(),
        backup_selector: "latest".into(),
        jobs: 2,
        ..CloneRequest::default()
    };
    request.replication.use_replication_slots = slots;
    match mode {
        Mode::BarmanRsync => {
            request.barman = Some(BarmanTarget {
                host: "barman@backup".into(),
                server: "pg".into(),
                config: None,
            });
        }
        Mode::BackupApi => {
            request.backup_api = Some(ApiTarget {
                host: "backup:7480".into(),
                node_name: "pg".into(),
                remote_ssh_command: "ssh postgres@standby".into(),
                backup_id: "latest".into(),
                ..ApiTarget::default()
            });
        }
        Mode::BaseBackup | Mode::ReplicationConfOnly => {}
    }
    request
}

fn member(id: &str, format: BackupFormat, size_bytes: u64) -> ChainMember {
    ChainMember {
        backup_id: id.into(),
        backup_dir: format!("/var/lib/barman/pg/base/{id}"),
        data_subdir: "data".into(),
        format,
        size_bytes,
        tablespaces: Vec::new(),
    }
}

const GZIP: BackupFormat = BackupFormat::Tar {
    compression: Compression::Gzip,
    encrypted: false,
};

/// Plain, a tar backup, an encrypted one, a plain chain and a chain with a tar member.
fn kinds() -> Vec<BackupKind> {
    vec![
        BackupKind::Plain,
        BackupKind::Tar {
            compression: Compression::Lz4,
            encrypted: false,
        },
        BackupKind::Tar {
            compression: Compression::Gzip,
            encrypted: true,
        },
        BackupKind::Incremental {
            chain: vec![
                member("20261125T000000", BackupFormat::Plain, 100),
                member("20261125T061436", BackupFormat::Plain, 10),
            ],
        },
        BackupKind::Incremental {
            chain: vec![
                member("20261125T000000", GZIP, 100),
                member("20261125T061436", BackupFormat::Plain, 10),
            ],
        },
    ]
}

/// The backup VerifyBackup establishes: pg-backup-api knows neither version nor size (0).
fn backup_of_kind(mode: Mode, has_manifest: bool, kind: &BackupKind) -> BackupFacts {
    let known = mode == Mode::BarmanRsync;
    BackupFacts {
        kind: kind.clone(),
        backup_id: "20261125T061436".into(),
        pg_version: if known { BACKUP_VERSION } else { 0 },
        size_bytes: if known { 3 << 30 } else { 0 },
        has_manifest,
        tablespaces: vec![Tablespace {
            name: "ts".into(),
            oid: 16_400,
            location: "/srv/ts".into(),
        }],
        ..BackupFacts::default()
    }
}

/// The plain backup VerifyBackup establishes.
fn backup(mode: Mode, has_manifest: bool) -> BackupFacts {
    backup_of_kind(mode, has_manifest, &BackupKind::Plain)
}

fn params() -> SourceParams {
    SourceParams {
        server_version_num: SOURCE_VERSION,
        system_identifier: SYSTEM_ID.into(),
        installation_size: 2 << 30,
        upstream_conninfo: UPSTREAM.into(),
        ..SourceParams::default()
    }
}

fn dirs() -> PreparedDirs {
    PreparedDirs {
        data_dir: "/srv/standby".into(),
        ..PreparedDirs::default()
    }
}

fn result_for(mode: Mode, step: Step, has_manifest: bool) -> StepResult {
    result_of_kind(mode, step, has_manifest, &BackupKind::Plain)
}

fn result_of_kind(mode: Mode, step: Step, has_manifest: bool, kind: &BackupKind) -> StepResult {
    match step {
        Step::VerifyBackup => StepResult::VerifyBackup(backup_of_kind(mode, has_manifest, kind)),
        Step::FetchParams => StepResult::FetchParams(params()),
        Step::PrepareDirs => StepResult::PrepareDirs(dirs()),
        Step::Transfer => StepResult::Transfer(TransferSummary::default()),
        Step::StageBackup => StepResult::StageBackup(TransferSummary::default()),
        Step::UnpackBackup => StepResult::UnpackBackup(UnpackSummary::default()),
        Step::CombineChain => StepResult::CombineChain(CombineSummary::default()),
        Step::VerifyCopy => StepResult::VerifyCopy(Verification::Verified { files: 3 }),
        Step::WriteReplicationConf => StepResult::WriteReplicationConf(WrittenConf::default()),
    }
}

/// The staging directory of the tests' clone: beside `/srv/standby`.
fn staging() -> String {
    format!(
        "/srv/pgreplica-staging-{}",
        CloneId::for_data_dir("/srv/standby")
    )
}

/// What each step must be handed in `mode`, given what the earlier steps established.
fn expected_input(
    mode: Mode,
    step: Step,
    slots: bool,
    has_manifest: bool,
    kind: &BackupKind,
) -> StepInput {
    let request = request(mode, slots);
    let verified = mode.plan().contains(&Step::VerifyBackup);
    let backup = |mode, has_manifest| backup_of_kind(mode, has_manifest, kind);
    match step {
        Step::VerifyBackup => StepInput::VerifyBackup(match mode {
            Mode::BarmanRsync => BackupServer::Barman(request.barman.unwrap()),
            _ => BackupServer::Api(request.backup_api.unwrap()),
        }),
        Step::FetchParams => StepInput::FetchParams {
            backup: verified.then(|| backup(mode, has_manifest)),
        },
        Step::PrepareDirs => StepInput::PrepareDirs {
            pg_version: if mode == Mode::BarmanRsync {
                BACKUP_VERSION
            } else {
                SOURCE_VERSION
            },
            tablespaces: if verified {
                backup(mode, has_manifest).tablespaces
            } else {
                Vec::new()
            },
        },
        Step::Transfer => StepInput::Transfer(TransferInput {
            slot_upstream: slots.then(|| UPSTREAM.to_string()),
            method: match mode {
                Mode::BarmanRsync => TransferMethod::BarmanRsync {
                    barman: request.barman.unwrap(),
                    backup: backup(mode, has_manifest),
                    dirs: dirs(),
                },
                Mode::BackupApi => TransferMethod::BackupApi {
                    target: request.backup_api.unwrap(),
                    // The backup's size is unknown to the API: the source's stands in.
                    expected_bytes: 2 << 30,
                },
                Mode::BaseBackup => TransferMethod::BaseBackup {
                    params: params(),
                    dirs: dirs(),
                    restarts: 0,
                },
                Mode::ReplicationConfOnly => unreachable!("no Transfer in this plan"),
            },
        }),
        Step::StageBackup => StepInput::StageBackup(StageInput {
            slot_upstream: slots.then(|| UPSTREAM.to_string()),
            barman: request.barman.unwrap(),
            backup: backup(mode, has_manifest),
            dirs: dirs(),
            staging_dir: staging(),
        }),
        Step::UnpackBackup => StepInput::UnpackBackup(UnpackInput {
            backup: backup(mode, has_manifest),
            dirs: dirs(),
            staging_dir: staging(),
            target: if kind.is_chain() {
                UnpackTarget::Staging
            } else {
                UnpackTarget::DataDir
            },
        }),
        Step::CombineChain => StepInput::CombineChain(CombineInput {
            backup: backup(mode, has_manifest),
            dirs: dirs(),
            staging_dir: staging(),
            pg_version: BACKUP_VERSION,
        }),
        Step::VerifyCopy => StepInput::VerifyCopy {
            manifest: if mode == Mode::BarmanRsync {
                ManifestExpectation::Known(has_manifest)
            } else {
                ManifestExpectation::FromCopy
            },
            // The backup's version where the catalogue says it (Barman mode).
            pg_version: if mode == Mode::BarmanRsync {
                BACKUP_VERSION
            } else {
                SOURCE_VERSION
            },
            // The API says only DONE: the restore is checked against the source node.
            api_restore: (mode == Mode::BackupApi).then(|| ExpectedRestore {
                operation_id: OPERATION.into(),
                system_identifier: SYSTEM_ID.into(),
                pg_major: SOURCE_VERSION / 10_000,
                known_bytes: 2 << 30,
            }),
        },
        Step::WriteReplicationConf => StepInput::WriteReplicationConf { params: params() },
    }
}

#[test]
fn every_step_of_every_plan_begins_with_what_the_steps_before_it_established() {
    let mut checked = 0;
    for mode in Mode::ALL {
        // Only Barman mode records a kind other than plain.
        let kinds = match mode {
            Mode::BarmanRsync => kinds(),
            _ => vec![BackupKind::Plain],
        };
        for kind in &kinds {
            for slots in [false, true] {
                for has_manifest in [false, true] {
                    let mut rec = CloneRecord::new(
                        CloneId::for_data_dir("/srv/standby"),
                        request(mode, slots),
                        1,
                    );
                    let mut budget = RetryBudget::new(RetryPolicy::STEP);
                    for (now, &step) in (2..).step_by(2).zip(mode.plan_for(kind)) {
                        let task = rec.begin(now).unwrap_or_else(|e| {
                            panic!("{mode:?} {kind:?} slots={slots}: {step} cannot begin: {e}")
                        });
                        assert_eq!(task.step, step);
                        assert_eq!(
                            task.input,
                            expected_input(mode, step, slots, has_manifest, kind),
                            "{mode:?} {kind:?} slots={slots} manifest={has_manifest}: {step}"
                        );
                        transfer_records_its_operation(&mut rec, step);
                        rec.finish(
                            Outcome::Succeeded(result_of_kind(mode, step, has_manifest, kind)),
                            now + 1,
                            &mut budget,
                        )
                        .unwrap();
                        checked += 1;
                    }
                    assert_eq!(rec.phase(), Phase::Done);
                }
            }
        }
    }
    // Barman: plain 6, two tars 7 each, a plain chain 7, a chain with tar 8.
    assert_eq!(checked, (6 + 7 + 7 + 7 + 8 + 6 + 5 + 2) * 4);
}

#[test]
fn a_step_the_kind_does_not_call_for_cannot_begin() {
    // A plain backup's record driven to CombineChain by a broken driver: the machine refuses.
    let mut rec = CloneRecord::new(
        CloneId::for_data_dir("/srv/standby"),
        request(Mode::BarmanRsync, false),
        1,
    );
    let tar = BackupKind::Tar {
        compression: Compression::Zstd,
        encrypted: false,
    };
    let mut budget = RetryBudget::new(RetryPolicy::STEP);
    while rec.phase() != Phase::At(Step::UnpackBackup) {
        let task = rec.begin(2).unwrap();
        rec.finish(
            Outcome::Succeeded(result_of_kind(Mode::BarmanRsync, task.step, true, &tar)),
            3,
            &mut budget,
        )
        .unwrap();
    }
    assert!(!rec.plan().contains(&Step::CombineChain));
    let task = rec.begin(4).unwrap();
    assert!(matches!(
        task.input,
        StepInput::UnpackBackup(UnpackInput {
            target: UnpackTarget::DataDir,
            ..
        })
    ));
}

#[test]
fn the_staging_directory_is_per_clone_beside_the_data_directory_or_where_configured() {
    let rec = CloneRecord::new(
        CloneId::for_data_dir("/srv/standby"),
        request(Mode::BarmanRsync, false),
        1,
    );
    assert_eq!(rec.request().staging_dir(), staging());
    let mut configured = request(Mode::BarmanRsync, false);
    configured.staging_parent = Some("/big/disk/".into());
    assert_eq!(
        configured.staging_dir(),
        format!(
            "/big/disk/pgreplica-staging-{}",
            CloneId::for_data_dir("/srv/standby")
        )
    );
    // Never inside the data directory, even for a data directory at the root.
    let mut top = request(Mode::BarmanRsync, false);
    top.data_dir = "/pgdata".into();
    assert!(
        !top.staging_dir().starts_with("/pgdata/"),
        "{}",
        top.staging_dir()
    );
    assert!(top.staging_dir().starts_with("/pgreplica-staging-"));
}

#[test]
fn staging_space_covers_the_staged_files_and_what_a_chain_unpacks_into_staging() {
    let mut facts = backup_of_kind(Mode::BarmanRsync, true, &BackupKind::Plain);
    facts.size_bytes = 40;
    facts.cluster_bytes = Some(400);
    assert_eq!(facts.staging_bytes(), 0, "a plain backup is not staged");
    assert_eq!(facts.restored_bytes(), 400);
    facts.kind = BackupKind::Tar {
        compression: Compression::Gzip,
        encrypted: false,
    };
    // A single tar backup unpacks into the data directory: staging holds the tar files.
    assert_eq!(facts.staging_bytes(), 40);
    facts.kind = BackupKind::Incremental {
        chain: vec![
            member("20261125T000000", BackupFormat::Plain, 100),
            member("20261125T061436", BackupFormat::Plain, 10),
        ],
    };
    assert_eq!(facts.staging_bytes(), 110);
    // A tar full backup of 100 bytes unpacks to the cluster's 400; a tar increment of 10 at
    // the same ratio to 40.
    facts.kind = BackupKind::Incremental {
        chain: vec![
            member("20261125T000000", GZIP, 100),
            member("20261125T010000", BackupFormat::Plain, 20),
            member("20261125T061436", GZIP, 10),
        ],
    };
    assert_eq!(facts.staging_bytes(), 130 + 400 + 40);
    // Without cluster_size the backup's size stands in for the restored size.
    facts.cluster_bytes = None;
    assert_eq!(facts.restored_bytes(), 40);
}

#[test]
fn unpack_checkpoints_only_move_forward_and_done_is_final() {
    let mut rec = at(Mode::BarmanRsync, Step::Transfer);
    let id = "20261125T061436";
    assert_eq!(rec.unpack_start(id, "base.tar.gz"), UnpackStart::Beginning);
    let at = |offset, entries| ArchiveProgress {
        offset,
        entries,
        done: false,
    };
    rec.archive_unpacked(id, "base.tar.gz", at(10_240, 7));
    assert_eq!(
        rec.unpack_start(id, "base.tar.gz"),
        UnpackStart::Resume(at(10_240, 7))
    );
    // A late, older report never moves the resume point back.
    rec.archive_unpacked(id, "base.tar.gz", at(512, 1));
    assert_eq!(
        rec.unpack_start(id, "base.tar.gz"),
        UnpackStart::Resume(at(10_240, 7))
    );
    // Archives are told apart by backup and file.
    assert_eq!(rec.unpack_start(id, "16400.tar.gz"), UnpackStart::Beginning);
    assert_eq!(
        rec.unpack_start("20261125T000000", "base.tar.gz"),
        UnpackStart::Beginning
    );
    rec.archive_unpacked(
        id,
        "base.tar.gz",
        ArchiveProgress {
            done: true,
            ..at(20_480, 9)
        },
    );
    assert_eq!(rec.unpack_start(id, "base.tar.gz"), UnpackStart::Done);
    rec.archive_unpacked(id, "base.tar.gz", at(30_000, 12));
    assert_eq!(rec.unpack_start(id, "base.tar.gz"), UnpackStart::Done);
    // pg_combinebackup's completion is remembered the same way.
    assert!(!rec.chain_combined());
    rec.chain_combined_now();
    assert!(rec.chain_combined());
}

/// A pg-backup-api Transfer records its operation (`states::api`) before it succeeds.
fn transfer_records_its_operation(rec: &mut CloneRecord, step: Step) {
    if rec.request().mode == Mode::BackupApi && step == Step::Transfer {
        rec.api_attempt_begun(5, &[]);
        rec.api_operation_created(6, OPERATION);
    }
}

#[test]
fn an_api_restore_is_checked_against_the_backup_when_its_facts_are_known() {
    let mut rec = at(Mode::BackupApi, Step::Transfer);
    // Without the operation, VerifyCopy could not name what it checks: a plan bug.
    let mut budget = RetryBudget::new(RetryPolicy::STEP);
    rec.begin(10).unwrap();
    rec.finish(
        Outcome::Succeeded(result_for(Mode::BackupApi, Step::Transfer, false)),
        11,
        &mut budget,
    )
    .unwrap();
    assert_eq!(
        rec.begin(12),
        Err(MachineError::MissingInput(MissingInput {
            step: Step::VerifyCopy,
            what: "the pg-backup-api operation"
        }))
    );
    let expected = ExpectedRestore {
        operation_id: OPERATION.into(),
        system_identifier: SYSTEM_ID.into(),
        pg_major: 15,
        known_bytes: 2 << 30,
    };
    rec.api_operation_created(13, OPERATION);
    match rec.begin(14).unwrap().input {
        StepInput::VerifyCopy { api_restore, .. } => {
            assert_eq!(api_restore, Some(expected.clone()))
        }
        other => panic!("not VerifyCopy: {other:?}"),
    }
    // A backup whose system identifier and size are known is the reference.
    let mut request = request(Mode::BackupApi, false);
    request.mode = Mode::BackupApi;
    let mut rec = CloneRecord::new(CloneId::for_data_dir("/srv/standby"), request, 1);
    let known = BackupFacts {
        system_id: Some("7000000000000000001".into()),
        size_bytes: 5 << 30,
        ..backup(Mode::BackupApi, false)
    };
    for result in [
        StepResult::VerifyBackup(known),
        StepResult::FetchParams(params()),
        StepResult::PrepareDirs(dirs()),
        StepResult::Transfer(TransferSummary::default()),
    ] {
        let step = rec.begin(20).unwrap().step;
        transfer_records_its_operation(&mut rec, step);
        rec.finish(Outcome::Succeeded(result), 21, &mut budget)
            .unwrap();
    }
    match rec.begin(22).unwrap().input {
        StepInput::VerifyCopy { api_restore, .. } => assert_eq!(
            api_restore,
            Some(ExpectedRestore {
                system_identifier: "7000000000000000001".into(),
                known_bytes: 5 << 30,
                ..expected.clone()
            })
        ),
        other => panic!("not VerifyCopy: {other:?}"),
    }
    // A tenth of what is known suffices; nothing known, anything does.
    assert!(expected.size_suffices((2 << 30) / 10 + 1));
    assert!(!expected.size_suffices((2 << 30) / 10 - 1));
    assert!(!expected.size_suffices(0));
    let unknown = ExpectedRestore {
        known_bytes: 0,
        ..expected
    };
    assert!(unknown.size_suffices(0));
}

/// A Barman-mode record at `step`, every earlier step succeeded.
fn at(mode: Mode, step: Step) -> CloneRecord {
    let mut rec = CloneRecord::new(
        CloneId::for_data_dir("/srv/standby"),
        request(mode, true),
        1,
    );
    let mut budget = RetryBudget::new(RetryPolicy::STEP);
    while rec.phase() != Phase::At(step) {
        let task = rec.begin(2).unwrap();
        transfer_records_its_operation(&mut rec, task.step);
        rec.finish(
            Outcome::Succeeded(result_for(mode, task.step, true)),
            3,
            &mut budget,
        )
        .unwrap();
    }
    rec
}

fn failure(kind: FailureKind) -> Outcome {
    Outcome::Failed(StepFailure {
        kind,
        message: "ssh: connection reset".into(),
        hint: None,
        exit_code: 12,
    })
}

#[test]
fn retryable_failures_are_retried_within_the_runs_budget_with_growing_delays() {
    let policy = RetryPolicy {
        first_delay_ms: 10,
        max_delay_ms: 25,
        ..RetryPolicy::STEP.with_attempts(4)
    };
    let mut rec = at(Mode::BarmanRsync, Step::Transfer);
    let mut budget = RetryBudget::new(policy);
    let mut delays = Vec::new();
    let next = loop {
        rec.begin(10).unwrap();
        match rec
            .finish(failure(FailureKind::Retryable), 11, &mut budget)
            .unwrap()
        {
            Next::Retry { step, delay_ms } => {
                assert_eq!(step, Step::Transfer);
                delays.push(delay_ms);
            }
            other => break other,
        }
    };
    assert_eq!(next, Next::Stop, "past the budget the run stops");
    assert_eq!(delays, [10, 20, 25], "doubling, bounded, 4 attempts in all");
    assert_eq!(rec.attempts(), 4);
    assert_eq!(rec.phase(), Phase::At(Step::Transfer), "still resumable");

    // A new run (clone resume) has a full budget again; a success resets it for the next step.
    let mut budget = RetryBudget::new(policy);
    rec.begin(20).unwrap();
    let next = rec
        .finish(failure(FailureKind::Retryable), 21, &mut budget)
        .unwrap();
    assert_eq!(
        next,
        Next::Retry {
            step: Step::Transfer,
            delay_ms: 10
        }
    );
    rec.begin(22).unwrap();
    rec.finish(
        Outcome::Succeeded(result_for(Mode::BarmanRsync, Step::Transfer, true)),
        23,
        &mut budget,
    )
    .unwrap();
    rec.begin(24).unwrap();
    assert_eq!(
        rec.finish(failure(FailureKind::Retryable), 25, &mut budget)
            .unwrap(),
        Next::Retry {
            step: Step::VerifyCopy,
            delay_ms: 10
        }
    );
}

#[test]
fn fatal_failures_and_interruptions_stop_whatever_the_budget() {
    for outcome in [failure(FailureKind::Fatal), Outcome::Interrupted] {
        let mut rec = at(Mode::BaseBackup, Step::Transfer);
        let mut budget = RetryBudget::new(RetryPolicy::STEP.with_attempts(100));
        rec.begin(5).unwrap();
        assert_eq!(
            rec.finish(outcome.clone(), 6, &mut budget).unwrap(),
            Next::Stop
        );
    }
}

#[test]
fn pg_basebackup_is_told_how_many_times_it_restarts() {
    let mut rec = at(Mode::BaseBackup, Step::Transfer);
    let mut budget = RetryBudget::new(RetryPolicy::STEP.with_attempts(100));
    let restarts = |task: Task| match task.input {
        StepInput::Transfer(TransferInput {
            method: TransferMethod::BaseBackup { restarts, .. },
            ..
        }) => restarts,
        other => panic!("not a pg_basebackup transfer: {other:?}"),
    };
    assert_eq!(restarts(rec.begin(10).unwrap()), 0);
    rec.finish(failure(FailureKind::Retryable), 11, &mut budget)
        .unwrap();
    assert_eq!(restarts(rec.begin(12).unwrap()), 1, "after a failure");
    rec.finish(Outcome::Interrupted, 13, &mut budget).unwrap();
    assert_eq!(restarts(rec.begin(14).unwrap()), 2, "after an interruption");
    // A crash: the next run finds the step in flight.
    assert_eq!(rec.recover_crash(15), Some(Step::Transfer));
    assert_eq!(restarts(rec.begin(16).unwrap()), 3, "after a crash");
}

#[test]
fn an_abandoned_clone_may_hold_a_slot_once_it_reached_transfer_with_slots_on() {
    // Before Transfer nothing created a slot.
    let rec = at(Mode::BarmanRsync, Step::PrepareDirs);
    assert_eq!(rec.abandoned_slot_upstream(), None);
    // StageBackup creates it as Transfer does, for the staged kinds.
    let mut rec = CloneRecord::new(
        CloneId::for_data_dir("/srv/standby"),
        request(Mode::BarmanRsync, true),
        1,
    );
    let mut budget = RetryBudget::new(RetryPolicy::STEP);
    let tar = &kinds()[1];
    while rec.phase() != Phase::At(Step::StageBackup) {
        let task = rec.begin(2).unwrap();
        rec.finish(
            Outcome::Succeeded(result_of_kind(Mode::BarmanRsync, task.step, true, tar)),
            3,
            &mut budget,
        )
        .unwrap();
    }
    assert_eq!(rec.abandoned_slot_upstream(), None, "not begun yet");
    rec.begin(4).unwrap();
    rec.recover_crash(5);
    assert_eq!(rec.abandoned_slot_upstream(), Some(UPSTREAM));
    // An attempt at Transfer, even a crashed one, may have created it.
    let mut rec = at(Mode::BarmanRsync, Step::Transfer);
    assert_eq!(rec.abandoned_slot_upstream(), None, "not begun yet");
    rec.begin(9).unwrap();
    rec.recover_crash(10);
    assert_eq!(rec.abandoned_slot_upstream(), Some(UPSTREAM));
    // Conf-only clones create it in WriteReplicationConf.
    let mut rec = at(Mode::ReplicationConfOnly, Step::WriteReplicationConf);
    rec.begin(9).unwrap();
    rec.finish(
        failure(FailureKind::Fatal),
        10,
        &mut RetryBudget::new(RetryPolicy::STEP),
    )
    .unwrap();
    assert_eq!(rec.abandoned_slot_upstream(), Some(UPSTREAM));
    // Without slots, never.
    let mut rec = CloneRecord::new(
        CloneId::for_data_dir("/srv/standby"),
        request(Mode::BaseBackup, false),
        1,
    );
    let mut budget = RetryBudget::new(RetryPolicy::STEP);
    while rec.phase() != Phase::Done {
        let task = rec.begin(2).unwrap();
        rec.finish(
            Outcome::Succeeded(result_for(Mode::BaseBackup, task.step, false)),
            3,
            &mut budget,
        )
        .unwrap();
    }
    assert_eq!(rec.abandoned_slot_upstream(), None);
}

#[test]
fn an_encrypted_backups_wal_comes_through_barman_wal_restore_only() {
    let encrypted = &kinds()[2];
    assert!(encrypted.is_encrypted());
    assert_eq!(
        encrypted.wal_source(Some(
            "/usr/bin/barman-wal-restore -U barman backup pg %f %p"
        )),
        WalSource::Fine
    );
    assert_eq!(encrypted.wal_source(None), WalSource::StreamingOnly);
    assert_eq!(
        encrypted.wal_source(Some("cp /archive/%f %p")),
        WalSource::Unusable("cp".into())
    );
    // A chain with one encrypted member has an encrypted archive too.
    let chain = BackupKind::Incremental {
        chain: vec![
            member("20261125T000000", GZIP, 1),
            member(
                "20261125T061436",
                BackupFormat::Tar {
                    compression: Compression::Gzip,
                    encrypted: true,
                },
                1,
            ),
        ],
    };
    assert_eq!(
        chain.wal_source(Some("cp %f %p")),
        WalSource::Unusable("cp".into())
    );
    for plain in [&kinds()[0], &kinds()[1], &kinds()[3]] {
        assert_eq!(plain.wal_source(Some("cp %f %p")), WalSource::Fine);
        assert_eq!(plain.wal_source(None), WalSource::Fine);
    }
}
