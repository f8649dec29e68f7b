//! The lifecycle decisions, exhaustively: what `clone start` does with every record it can find
//! (every mode × every kind of backup × every place a clone can stand × with and without
//! `--force`), what a resume re-checks, the rewind of a clone whose directories were replaced
//! (the staged kinds' steps and checkpoints included), and which recorded values differ from
//! the current ones (every field alone, secrets never shown).

mod common;

use common::{kinds, request};
use states::*;

fn prepared() -> PreparedDirs {
    PreparedDirs {
        data_dir: "/srv/standby".into(),
        identities: vec![DirIdentity {
            path: "/srv/standby".into(),
            dev: 2049,
            ino: 77,
            born: Some(1_795_000_000_000_000_000),
        }],
        ..PreparedDirs::default()
    }
}

fn result_for(step: Step, kind: &BackupKind) -> StepResult {
    match step {
        Step::VerifyBackup => StepResult::VerifyBackup(BackupFacts {
            backup_id: "20261125T061436".into(),
            pg_version: 150_018,
            kind: kind.clone(),
            ..BackupFacts::default()
        }),
        Step::FetchParams => StepResult::FetchParams(SourceParams {
            server_version_num: 150_018,
            ..SourceParams::default()
        }),
        Step::PrepareDirs => StepResult::PrepareDirs(prepared()),
        Step::Transfer => StepResult::Transfer(TransferSummary::default()),
        Step::StageBackup => StepResult::StageBackup(TransferSummary::default()),
        Step::UnpackBackup => StepResult::UnpackBackup(UnpackSummary::default()),
        Step::CombineChain => StepResult::CombineChain(CombineSummary::default()),
        Step::VerifyCopy => StepResult::VerifyCopy(Verification::Verified { files: 3 }),
        Step::WriteReplicationConf => StepResult::WriteReplicationConf(WrittenConf::default()),
    }
}

/// Where a clone can stand: at a step with its attempts so far, or done.
#[derive(Clone, Copy, Debug)]
enum Stand {
    /// The step is current and has never been attempted.
    Fresh(Step),
    /// The step is current and failed once.
    Failed(Step),
    /// The step is in flight: the run that began it died (not recovered yet).
    InFlight(Step),
    /// Every step succeeded.
    Done,
}

/// Every mode with every kind of backup: only Barman mode's plan depends on the kind.
fn modes_and_kinds() -> impl Iterator<Item = (Mode, BackupKind)> {
    Mode::ALL
        .into_iter()
        .flat_map(|mode| kinds().into_iter().map(move |kind| (mode, kind)))
}

fn stands(mode: Mode, kind: &BackupKind) -> Vec<Stand> {
    let mut out = Vec::new();
    for &step in mode.plan_for(kind) {
        out.extend([
            Stand::Fresh(step),
            Stand::Failed(step),
            Stand::InFlight(step),
        ]);
    }
    out.push(Stand::Done);
    out
}

fn budget() -> RetryBudget {
    RetryBudget::new(RetryPolicy::STEP)
}

/// Finishes `step` successfully as its real step would: in pg-backup-api mode, a Transfer that
/// succeeds has recorded the operation it followed (VerifyCopy reads it).
fn succeed(rec: &mut CloneRecord, step: Step, kind: &BackupKind, now: Millis) {
    if step == Step::Transfer && rec.request().mode == Mode::BackupApi {
        rec.api_attempt_begun(now, &[]);
        rec.api_operation_created(now, "20261125T062405");
    }
    rec.finish(
        Outcome::Succeeded(result_for(step, kind)),
        now,
        &mut budget(),
    )
    .unwrap();
}

fn record_at(mode: Mode, kind: &BackupKind, stand: Stand) -> CloneRecord {
    let mut rec = CloneRecord::new(CloneId::for_data_dir("/srv/standby"), request(mode), 1);
    let target = match stand {
        Stand::Fresh(step) | Stand::Failed(step) | Stand::InFlight(step) => Phase::At(step),
        Stand::Done => Phase::Done,
    };
    let mut now = 10;
    while rec.phase() != target {
        let step = rec.begin(now).unwrap().step;
        now += 1;
        succeed(&mut rec, step, kind, now);
    }
    match stand {
        Stand::Failed(_) => {
            rec.begin(now).unwrap();
            let failure = StepFailure {
                kind: FailureKind::Fatal,
                message: "no backup \"x\"".into(),
                hint: None,
                exit_code: 19,
            };
            rec.finish(Outcome::Failed(failure), now + 1, &mut budget())
                .unwrap();
        }
        Stand::InFlight(_) => {
            rec.begin(now).unwrap();
        }
        Stand::Fresh(_) | Stand::Done => {}
    }
    rec
}

/// Whether a clone of `mode` and `kind` standing there has begun writing into the data
/// directory or staging what goes there: an attempt at Transfer or StageBackup (the copying
/// steps) or a later step of its plan, finished or not.
fn wrote(mode: Mode, kind: &BackupKind, stand: Stand) -> bool {
    let writes = |step: &Step| {
        matches!(
            step,
            Step::Transfer
                | Step::StageBackup
                | Step::UnpackBackup
                | Step::CombineChain
                | Step::VerifyCopy
                | Step::WriteReplicationConf
        )
    };
    let plan = mode.plan_for(kind);
    match stand {
        Stand::Done => true,
        Stand::Fresh(step) => plan.iter().take_while(|s| **s != step).any(writes),
        Stand::Failed(step) | Stand::InFlight(step) => {
            plan.iter().take_while(|s| **s != step).any(writes) || writes(&step)
        }
    }
}

#[test]
fn a_directory_is_the_same_only_with_its_device_inode_and_birth() {
    let prepared = prepared().identities[0].clone();
    assert!(prepared.same_directory(&prepared));
    let other = |edit: fn(&mut DirIdentity)| {
        let mut now = prepared.clone();
        edit(&mut now);
        prepared.same_directory(&now)
    };
    assert!(!other(|d| d.dev += 1));
    assert!(!other(|d| d.ino += 1));
    // Removed and created again with the inode number reused: its birth tells.
    assert!(!other(|d| d.born = Some(1)));
    // A file system without birth times: device and inode decide.
    assert!(other(|d| d.born = None));
}

#[test]
fn start_decides_for_every_record_in_every_mode_with_and_without_force() {
    assert_eq!(
        StartDecision::of(Existing::None, false),
        StartDecision::Create
    );
    assert_eq!(
        StartDecision::of(Existing::None, true),
        StartDecision::Create
    );
    assert_eq!(
        StartDecision::of(Existing::Damaged, false),
        StartDecision::Refuse(Refusal::Damaged)
    );
    assert_eq!(
        StartDecision::of(Existing::Damaged, true),
        StartDecision::Replace(Replaced::Damaged)
    );
    let mut combinations = 0;
    for (mode, kind) in modes_and_kinds() {
        for stand in stands(mode, &kind) {
            let rec = record_at(mode, &kind, stand);
            assert_eq!(
                rec.began_writing(),
                wrote(mode, &kind, stand),
                "{mode:?} {kind:?} {stand:?}"
            );
            for force in [false, true] {
                let expected = match stand {
                    Stand::Done => StartDecision::Replace(Replaced::Finished),
                    _ if !wrote(mode, &kind, stand) => {
                        StartDecision::Replace(Replaced::NeverCopied)
                    }
                    _ if force => StartDecision::Replace(Replaced::Forced),
                    _ => StartDecision::Refuse(Refusal::Unfinished),
                };
                assert_eq!(
                    StartDecision::of(Existing::Record(&rec), force),
                    expected,
                    "{mode:?} {kind:?} {stand:?} force={force}"
                );
                combinations += 1;
            }
        }
    }
    // Barman mode's steps per kind: plain 6, four tars 7 each, a plain chain 7, a chain with
    // tar members 8; the other modes' plans (6, 5, 2) for each of the 7 kinds. Each step × 3
    // stands, each plan + 1 done, × 2.
    let barman = 6 + 4 * 7 + 7 + 8;
    let others = 7 * (6 + 5 + 2);
    assert_eq!(combinations, ((barman + others) * 3 + 4 * 7) * 2);
}

#[test]
fn a_clone_stopped_before_transfer_by_a_crash_or_a_failure_is_replaceable_and_after_is_not() {
    let plain = BackupKind::Plain;
    // The failed-start trap of a wrong barman_server: VerifyBackup failed, nothing copied.
    let rec = record_at(Mode::BarmanRsync, &plain, Stand::Failed(Step::VerifyBackup));
    assert!(!rec.began_writing());
    // PrepareDirs made the directories but wrote nothing into them.
    let rec = record_at(Mode::BaseBackup, &plain, Stand::Failed(Step::PrepareDirs));
    assert!(!rec.began_writing());
    // A SIGKILL inside Transfer leaves it in flight: it may have written.
    let rec = record_at(Mode::BarmanRsync, &plain, Stand::InFlight(Step::Transfer));
    assert!(rec.began_writing());
    let mut recovered = rec.clone();
    recovered.recover_crash(99);
    assert!(recovered.began_writing());
    // A staged kind copies in StageBackup: a kill there leaves staged files (and perhaps the
    // slot) that only this record knows of; a failure in PrepareDirs left none.
    let tar = BackupKind::Tar {
        compression: Compression::Gzip,
        encrypted: false,
    };
    let rec = record_at(Mode::BarmanRsync, &tar, Stand::Failed(Step::PrepareDirs));
    assert!(!rec.began_writing());
    let mut rec = record_at(Mode::BarmanRsync, &tar, Stand::InFlight(Step::StageBackup));
    assert!(rec.began_writing());
    rec.recover_crash(99);
    assert!(rec.began_writing());
    assert_eq!(
        StartDecision::of(Existing::Record(&rec), false),
        StartDecision::Refuse(Refusal::Unfinished)
    );
    // --replication-conf-only writes only in WriteReplicationConf.
    let rec = record_at(
        Mode::ReplicationConfOnly,
        &plain,
        Stand::Fresh(Step::WriteReplicationConf),
    );
    assert!(!rec.began_writing());
}

#[test]
fn resume_checks_what_prepare_dirs_checked_once_it_is_done() {
    let mut staged_steps = 0;
    for (mode, kind) in modes_and_kinds() {
        for stand in stands(mode, &kind) {
            let rec = record_at(mode, &kind, stand);
            let expected = match stand {
                Stand::Done => ResumeCheck::Nothing,
                Stand::Fresh(step) | Stand::Failed(step) | Stand::InFlight(step) => {
                    if mode.plan().contains(&Step::PrepareDirs) && step > Step::PrepareDirs {
                        // Transfer, or StageBackup, UnpackBackup and CombineChain for a staged
                        // kind, and every step after them.
                        staged_steps += usize::from(matches!(
                            step,
                            Step::StageBackup | Step::UnpackBackup | Step::CombineChain
                        ));
                        ResumeCheck::PreparedDirs(prepared())
                    } else if mode == Mode::ReplicationConfOnly && step > Step::FetchParams {
                        ResumeCheck::RestoredDir
                    } else {
                        ResumeCheck::Nothing
                    }
                }
            };
            assert_eq!(rec.resume_check(), expected, "{mode:?} {kind:?} {stand:?}");
        }
    }
    // Each staged kind's StageBackup, UnpackBackup (tars and the chain with tar members) and
    // CombineChain (the chains), in 3 stands each.
    assert_eq!(staged_steps, (4 * 2 + 2 + 3) * 3);
}

#[test]
fn replaced_directories_rewind_to_prepare_dirs_and_the_clone_finishes_from_there() {
    let archive = "base.tar.gz";
    let backup_id = "20261125T061436";
    let mut staged_rewinds = 0;
    for (mode, kind) in modes_and_kinds() {
        let plan = mode.plan_for(&kind);
        for stand in stands(mode, &kind) {
            let mut rec = record_at(mode, &kind, stand);
            // What the staged steps checkpoint inside themselves, where the clone stands past
            // or inside them: an archive's unpack progress and pg_combinebackup's completion.
            if let Stand::Fresh(step) | Stand::Failed(step) | Stand::InFlight(step) = stand {
                let inside = !matches!(stand, Stand::Fresh(_));
                let unpacking = step == Step::UnpackBackup && inside;
                if plan.contains(&Step::UnpackBackup) && (step > Step::UnpackBackup || unpacking) {
                    let done = step > Step::UnpackBackup;
                    let progress = ArchiveProgress {
                        offset: 10_240,
                        entries: 7,
                        done,
                    };
                    rec.archive_unpacked(backup_id, archive, progress);
                }
                let combining = step == Step::CombineChain && inside;
                if plan.contains(&Step::CombineChain) && (step > Step::CombineChain || combining) {
                    rec.chain_combined_now();
                }
            }
            rec.recover_crash(500);
            let before = rec.clone();
            let rewound = rec.dirs_replaced(600, "the data directory is another one".into());
            let can = match stand {
                Stand::Done => false,
                Stand::Fresh(step) | Stand::Failed(step) | Stand::InFlight(step) => {
                    mode.plan().contains(&Step::PrepareDirs) && step > Step::PrepareDirs
                }
            };
            assert_eq!(rewound, can, "{mode:?} {kind:?} {stand:?}");
            if !rewound {
                assert_eq!(rec, before, "{mode:?} {kind:?} {stand:?}: nothing changes");
                continue;
            }
            assert_eq!(rec.phase(), Phase::At(Step::PrepareDirs));
            assert_eq!(rec.attempts(), 0);
            assert_eq!(rec.last_error(), None);
            let facts = rec.facts();
            assert!(facts.dirs.is_none() && facts.transfer.is_none());
            assert!(facts.verification.is_none() && facts.replication_conf.is_none());
            // The staged steps' facts and checkpoints describe files in the replaced
            // directories, or staged files UnpackBackup removed: void, so they run again from
            // their beginning.
            assert!(facts.staging.is_none() && facts.unpacked.is_none());
            assert!(facts.combined.is_none());
            assert_eq!(rec.unpack_start(backup_id, archive), UnpackStart::Beginning);
            assert!(!rec.chain_combined(), "{mode:?} {kind:?} {stand:?}");
            if before.unpack_start(backup_id, archive) != UnpackStart::Beginning
                || before.chain_combined()
            {
                staged_rewinds += 1;
            }
            // What came before PrepareDirs stays: the kind, and so the plan.
            assert!(facts.params.is_some());
            assert_eq!(facts.backup, before.facts().backup);
            assert_eq!(rec.plan(), plan);
            let last = rec.history().last().unwrap();
            assert_eq!(last.outcome, OutcomeKind::DirsReplaced);
            assert_eq!(
                last.message.as_deref(),
                Some("the data directory is another one")
            );
            assert_eq!(Phase::At(last.step), before.phase());
            assert_eq!(last.outcome.label(), "directory replaced");
            // The writing steps were reached, so a start still needs --force.
            assert!(rec.began_writing());
            // From PrepareDirs on, the plan runs to its end again.
            let mut now = 700;
            let mut ran = Vec::new();
            while let Next::Run(step) = rec.next() {
                rec.begin(now).unwrap();
                now += 1;
                succeed(&mut rec, step, &kind, now);
                ran.push(step);
            }
            let from = plan.iter().position(|s| *s == Step::PrepareDirs).unwrap();
            assert_eq!(ran, plan[from..], "{mode:?} {kind:?} {stand:?}");
            let facts = rec.facts();
            assert_eq!(facts.staging.is_some(), plan.contains(&Step::StageBackup));
            assert_eq!(facts.unpacked.is_some(), plan.contains(&Step::UnpackBackup));
            assert_eq!(facts.combined.is_some(), plan.contains(&Step::CombineChain));
        }
    }
    // Tars: UnpackBackup (failed, in flight) and the two later steps (3 stands each); the
    // plain chain: CombineChain (failed, in flight) and the two later steps; the chain with
    // tar members: UnpackBackup's 2, CombineChain's 3 and the later steps' 6.
    assert_eq!(staged_rewinds, 4 * (2 + 6) + (2 + 6) + (2 + 3 + 6));
    // A step in flight must be recovered first.
    let mut rec = record_at(
        Mode::BarmanRsync,
        &BackupKind::Plain,
        Stand::InFlight(Step::VerifyCopy),
    );
    let before = rec.clone();
    assert!(!rec.dirs_replaced(1, "x".into()));
    assert_eq!(rec, before);
}

/// One change to a pg-backup-api target.
type EditApi = fn(&mut ApiTarget);

fn changed(edit: impl Fn(&mut CloneRequest)) -> Vec<Difference> {
    let recorded = request(Mode::BarmanRsync);
    let mut current = recorded.clone();
    edit(&mut current);
    recorded.differences(&current)
}

fn shown(setting: &'static str, recorded: &str, current: &str) -> Vec<Difference> {
    vec![Difference {
        setting,
        values: Some((recorded.to_string(), current.to_string())),
    }]
}

fn hidden(setting: &'static str) -> Vec<Difference> {
    vec![Difference {
        setting,
        values: None,
    }]
}

#[test]
fn every_recorded_value_that_differs_is_named_once_and_secrets_are_never_shown() {
    for mode in Mode::ALL {
        assert!(request(mode).differences(&request(mode)).is_empty());
    }
    // What is not compared: the clone's name, --force, where the configuration was read.
    assert!(changed(|r| {
        r.data_dir = "/elsewhere".into();
        r.force = true;
        r.config_file = Some("/etc/other.conf".into());
    })
    .is_empty());
    let secret = "password=hunter2";
    let cases: Vec<(Vec<Difference>, Vec<Difference>)> = vec![
        (
            changed(|r| {
                r.mode = Mode::BaseBackup;
                r.barman = None;
            }),
            vec![
                Difference {
                    setting: "mode",
                    values: Some(("Barman (rsync)".into(), "pg_basebackup".into())),
                },
                Difference {
                    setting: "barman_host",
                    values: Some(("\"barman@backup\"".into(), "(not set)".into())),
                },
                Difference {
                    setting: "barman_server",
                    values: Some(("\"pg\"".into(), "(not set)".into())),
                },
            ],
        ),
        (
            changed(|r| r.node_id = Some(3)),
            shown("node_id", "(not set)", "\"3\""),
        ),
        (
            changed(|r| r.upstream_conninfo = Some("host=vip".into())),
            shown("--upstream-conninfo", "(not set)", "\"host=vip\""),
        ),
        (
            changed(|r| r.node_name = Some("n2".into())),
            shown("node_name", "(not set)", "\"n2\""),
        ),
        (
            changed(|r| r.source.host = Some("h".into())),
            shown("-h/--host", "(not set)", "\"h\""),
        ),
        (
            changed(|r| r.source.port = Some(5433)),
            shown("-p/--port", "(not set)", "\"5433\""),
        ),
        (
            changed(|r| r.source.user = Some("repmgr".into())),
            shown("-U/--username", "(not set)", "\"repmgr\""),
        ),
        (
            changed(|r| r.source.dbname = Some(secret.into())),
            hidden("-d/--dbname"),
        ),
        (
            changed(|r| r.upstream_node_id = Some(1)),
            shown("--upstream-node-id", "(not set)", "\"1\""),
        ),
        (
            changed(|r| r.backup_selector = "oldest".into()),
            shown("--backup-id", "\"latest\"", "\"oldest\""),
        ),
        (changed(|r| r.jobs = 4), shown("--jobs", "2", "4")),
        (
            changed(|r| r.bwlimit_kbps = Some(100)),
            shown("--bwlimit", "(not set)", "\"100\""),
        ),
        (
            changed(|r| r.waldir = Some("/wal".into())),
            shown("--waldir (pg_basebackup_options)", "(not set)", "\"/wal\""),
        ),
        (
            changed(|r| r.tablespace_mapping = vec![("/a".into(), "/b".into())]),
            shown("tablespace_mapping", "(not set)", "\"/a=/b\""),
        ),
        (
            changed(|r| r.barman.as_mut().unwrap().host = "barman@other".into()),
            shown("barman_host", "\"barman@backup\"", "\"barman@other\""),
        ),
        (
            changed(|r| r.barman.as_mut().unwrap().server = "pgx".into()),
            shown("barman_server", "\"pg\"", "\"pgx\""),
        ),
        (
            changed(|r| r.barman.as_mut().unwrap().config = Some("/etc/b.conf".into())),
            shown("barman_config", "(not set)", "\"/etc/b.conf\""),
        ),
        (
            changed(|r| r.ssh_options = vec!["-o".into(), secret.into()]),
            hidden("ssh_options"),
        ),
        (
            changed(|r| r.pg_bindir = Some("/usr/bin".into())),
            shown("pg_bindir", "(not set)", "\"/usr/bin\""),
        ),
        (
            changed(|r| r.staging_parent = Some("/big".into())),
            shown("pgreplica_staging_dir", "(not set)", "\"/big\""),
        ),
        (
            changed(|r| r.pg_basebackup_options = vec![secret.into()]),
            hidden("pg_basebackup_options"),
        ),
        (
            changed(|r| r.replication.replication_user = Some("repl".into())),
            shown("replication_user", "(not set)", "\"repl\""),
        ),
        (
            changed(|r| r.replication.use_replication_slots = true),
            shown("use_replication_slots", "off", "on"),
        ),
        (
            changed(|r| r.replication.restore_command = Some(secret.into())),
            hidden("restore_command"),
        ),
        (
            changed(|r| r.replication.archive_cleanup_command = Some(secret.into())),
            hidden("archive_cleanup_command"),
        ),
        (
            changed(|r| r.replication.recovery_min_apply_delay = Some("5min".into())),
            shown("recovery_min_apply_delay", "(not set)", "\"5min\""),
        ),
        (
            changed(|r| r.replication.use_primary_conninfo_password = true),
            shown("use_primary_conninfo_password", "off", "on"),
        ),
        (
            changed(|r| r.replication.passfile = Some("/p".into())),
            shown("passfile", "(not set)", "\"/p\""),
        ),
    ];
    for (got, expected) in &cases {
        assert_eq!(got, expected);
        for difference in got {
            if let Some((was, now)) = &difference.values {
                assert!(!was.contains("hunter2") && !now.contains("hunter2"));
            }
        }
    }
    // pg-backup-api's keys, against an API request.
    let recorded = request(Mode::BackupApi);
    let api_cases: [(EditApi, Vec<Difference>); 9] = [
        (
            |a| a.host = "other:7480".into(),
            shown("pg_backupapi_host", "\"backup:7480\"", "\"other:7480\""),
        ),
        (
            |a| a.node_name = "pgx".into(),
            shown("pg_backupapi_node_name", "\"pg\"", "\"pgx\""),
        ),
        (
            |a| a.backup_id = "oldest".into(),
            shown("pg_backupapi_backup_id", "\"latest\"", "\"oldest\""),
        ),
        (
            |a| a.remote_ssh_command = "ssh -i /secret x".into(),
            hidden("pg_backupapi_remote_ssh_command"),
        ),
        (
            |a| a.ca_file = Some("/ca".into()),
            shown("pg_backupapi_ca_file", "(not set)", "\"/ca\""),
        ),
        (
            |a| a.cert_file = Some("/c".into()),
            shown("pg_backupapi_cert_file", "(not set)", "\"/c\""),
        ),
        (
            |a| a.key_file = Some("/k".into()),
            shown("pg_backupapi_key_file", "(not set)", "\"/k\""),
        ),
        (
            |a| a.stall_timeout_secs = 60,
            shown("pg_backupapi_stall_timeout", "\"0 s\"", "\"60 s\""),
        ),
        (
            |a| a.poll_interval_ms = 3000,
            shown("pg_backupapi_poll_interval", "\"0 ms\"", "\"3000 ms\""),
        ),
    ];
    for (edit, expected) in api_cases {
        let mut current = recorded.clone();
        edit(current.backup_api.as_mut().unwrap());
        assert_eq!(recorded.differences(&current), expected);
    }
    // Several at once are all named, each once.
    let several = changed(|r| {
        r.barman.as_mut().unwrap().server = "pgx".into();
        r.jobs = 8;
        r.replication.restore_command = Some("x".into());
    });
    let names: Vec<&str> = several.iter().map(|d| d.setting).collect();
    assert_eq!(names, ["--jobs", "barman_server", "restore_command"]);
}

#[test]
fn a_resume_changes_jobs_and_bwlimit_at_any_stand_but_done_or_in_flight_and_records_it() {
    for (mode, kind) in modes_and_kinds() {
        for stand in stands(mode, &kind) {
            let mut rec = record_at(mode, &kind, stand);
            let before = rec.clone();
            let changed = rec.change_pace(500, Some(4), Some(2000));
            match stand {
                Stand::Done | Stand::InFlight(_) => {
                    assert_eq!(changed, None, "{mode:?} {stand:?}");
                    assert_eq!(rec, before, "{mode:?} {stand:?}");
                    continue;
                }
                Stand::Fresh(_) | Stand::Failed(_) => {}
            }
            let recorded_limit = before
                .request()
                .bwlimit_kbps
                .map_or("none".to_string(), |k| k.to_string());
            assert_eq!(
                changed.as_deref(),
                Some(
                    format!(
                        "--jobs {} → 4, --bwlimit {recorded_limit} → 2000",
                        before.request().jobs
                    )
                    .as_str()
                ),
                "{mode:?} {stand:?}"
            );
            assert_eq!(
                (rec.request().jobs, rec.request().bwlimit_kbps),
                (4, Some(2000))
            );
            // Nothing else moves: where the clone stands, its attempts, its error, its facts.
            assert_eq!(rec.phase(), before.phase());
            assert_eq!(rec.attempts(), before.attempts());
            assert_eq!(rec.last_error(), before.last_error());
            assert_eq!(rec.facts(), before.facts());
            let last = rec.history().last().unwrap();
            assert_eq!(rec.history().len(), before.history().len() + 1);
            assert_eq!(
                (
                    Phase::At(last.step),
                    last.outcome,
                    last.started_at,
                    last.ended_at
                ),
                (rec.phase(), OutcomeKind::PaceChanged, 500, 500)
            );
            assert_eq!(last.message, changed);
            // The same values again change nothing and record nothing.
            let again = rec.clone();
            assert_eq!(rec.change_pace(600, Some(4), Some(2000)), None);
            assert_eq!(rec.change_pace(600, None, None), None);
            assert_eq!(rec, again);
            // --bwlimit 0 lifts the limit; --jobs alone leaves the limit as it is.
            assert_eq!(
                rec.change_pace(700, None, Some(0)).as_deref(),
                Some("--bwlimit 2000 → none")
            );
            assert_eq!(rec.request().bwlimit_kbps, None);
            assert_eq!(
                rec.change_pace(800, Some(1), None).as_deref(),
                Some("--jobs 4 → 1")
            );
            assert_eq!((rec.request().jobs, rec.request().bwlimit_kbps), (1, None));
        }
    }
}

#[test]
fn the_jobs_default_is_one_stream_per_core_between_1_and_4() {
    for (cores, jobs) in [
        (0, 1),
        (1, 1),
        (2, 2),
        (3, 3),
        (4, 4),
        (5, 4),
        (64, 4),
        (usize::MAX, 4),
    ] {
        assert_eq!(CloneRequest::default_jobs(cores), jobs, "{cores} cores");
    }
    assert_eq!(DEFAULT_JOBS_MAX, 4);
}
