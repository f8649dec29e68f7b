//! The checkpoint store in one process: round trips, the file table at scale, damaged sled
//! files, discarding, status of an idle clone. tests/store_kill.rs covers other processes.

use pgreplica::error::ErrorKind;
use pgreplica::store::{FileCounts, StateDir, StatusSnapshot};
use states::{
    ApiTarget, ArchiveProgress, BackupFacts, BackupFormat, BackupKind, BarmanTarget, ChainMember,
    CloneId, CloneRecord, CloneRequest, CombineSummary, Compression, EntryKind, FailureKind,
    ManifestEntry, Mode, Next, Outcome, Phase, PreparedDirs, SourceParams, Step, StepFailure,
    StepResult, Tablespace, TransferSummary, UnpackSummary, Verification, WrittenConf,
};
use states::{RetryBudget, RetryPolicy};
use std::path::Path;

fn state() -> (tempfile::TempDir, StateDir) {
    let tmp = tempfile::tempdir().expect("temporary directory");
    let state = StateDir::open(&tmp.path().join("state")).expect("state directory opens");
    (tmp, state)
}

fn result_for(step: Step) -> StepResult {
    match step {
        Step::VerifyBackup => StepResult::VerifyBackup(BackupFacts {
            backup_id: "20261125T061436".to_string(),
            backup_name: Some("nightly".to_string()),
            server: "pg".to_string(),
            pg_version: 150_018,
            size_bytes: 3 << 30,
            timeline: 2,
            begin_wal: "000000020000000000000009".to_string(),
            end_wal: "00000002000000000000000A".to_string(),
            system_id: Some("7300000000000000001".to_string()),
            tablespaces: vec![Tablespace {
                name: "fast".to_string(),
                oid: 16_390,
                location: "/srv/fast".to_string(),
            }],
            backup_dir: "/var/lib/barman/pg/base/20261125T061436".to_string(),
            wals_directory: "/var/lib/barman/pg/wals".to_string(),
            data_subdir: "data".to_string(),
            has_manifest: true,
            // Every serialised type of the staged kinds makes the round trip.
            kind: BackupKind::Incremental {
                chain: vec![
                    ChainMember {
                        backup_id: "20261124T061436".to_string(),
                        backup_dir: "/var/lib/barman/pg/base/20261124T061436".to_string(),
                        data_subdir: "data".to_string(),
                        format: BackupFormat::Tar {
                            compression: Compression::Zstd,
                            encrypted: true,
                        },
                        size_bytes: 1 << 30,
                        tablespaces: Vec::new(),
                    },
                    ChainMember {
                        backup_id: "20261125T061436".to_string(),
                        format: BackupFormat::Plain,
                        ..ChainMember::default()
                    },
                ],
            },
            cluster_bytes: Some(4 << 30),
        }),
        Step::FetchParams => StepResult::FetchParams(SourceParams {
            server_version_num: 150_018,
            system_identifier: "7300000000000000001".to_string(),
            installation_size: 3 << 30,
            upstream_node_id: Some(1),
            upstream_conninfo: "host=node1 user=repmgr application_name=node2".to_string(),
            warnings: vec!["wal_keep_size is 0".to_string()],
        }),
        Step::PrepareDirs => StepResult::PrepareDirs(PreparedDirs::default()),
        Step::Transfer => StepResult::Transfer(TransferSummary {
            files: 1_234,
            bytes_total: 3 << 30,
            bytes_sent: 1 << 30,
            files_reused: 800,
            bytes_kept: 40 << 20,
            duration_ms: 61_000,
            restarts: 0,
            checkpoint_ms: 12,
        }),
        Step::StageBackup => StepResult::StageBackup(TransferSummary {
            files: 3,
            ..TransferSummary::default()
        }),
        Step::UnpackBackup => StepResult::UnpackBackup(UnpackSummary {
            archives: 1,
            entries: 1_234,
            ..UnpackSummary::default()
        }),
        Step::CombineChain => StepResult::CombineChain(CombineSummary {
            members: 2,
            program: "/usr/lib/postgresql/18/bin/pg_combinebackup".to_string(),
            method: "--link".to_string(),
            duration_ms: 9_000,
        }),
        Step::VerifyCopy => StepResult::VerifyCopy(Verification::Verified { files: 1_234 }),
        Step::WriteReplicationConf => StepResult::WriteReplicationConf(WrittenConf {
            files: vec!["/srv/pg/main/postgresql.auto.conf".to_string()],
            slot: Some("repmgr_slot_2".to_string()),
        }),
    }
}

/// A record that went through every step, with a crash and a retryable failure on the way.
fn full_record(id: &CloneId) -> CloneRecord {
    let request = CloneRequest {
        mode: Mode::BarmanRsync,
        data_dir: "/srv/pg/main".to_string(),
        node_id: Some(2),
        node_name: Some("node2".to_string()),
        backup_selector: "latest".to_string(),
        jobs: 4,
        tablespace_mapping: vec![("/srv/fast".to_string(), "/srv/fast2".to_string())],
        barman: Some(BarmanTarget {
            host: "barman@backup".to_string(),
            server: "pg".to_string(),
            config: None,
        }),
        ..CloneRequest::default()
    };
    let mut record = CloneRecord::new(id.clone(), request, 1_000);
    let mut budget = RetryBudget::new(RetryPolicy::STEP);
    let mut now = 1_000;
    let mut tick = || {
        now += 7;
        now
    };
    record.begin(tick()).unwrap();
    assert_eq!(record.recover_crash(tick()), Some(Step::VerifyBackup));
    record.begin(tick()).unwrap();
    let failure = StepFailure {
        kind: FailureKind::Retryable,
        message: "ssh: connection reset".to_string(),
        hint: Some("check the network".to_string()),
        exit_code: 12,
    };
    assert_eq!(
        record
            .finish(Outcome::Failed(failure), tick(), &mut budget)
            .unwrap(),
        Next::Retry {
            step: Step::VerifyBackup,
            delay_ms: RetryPolicy::STEP.first_delay_ms
        }
    );
    record.api_attempt_begun(55, &[]);
    record.api_operation_created(56, "20261125T061500");
    record.archive_unpacked(
        "20261124T061436",
        "base.tar.zst.gpg",
        ArchiveProgress {
            offset: 1 << 20,
            entries: 40,
            done: false,
        },
    );
    record.chain_combined_now();
    while let Next::Run(step) = record.next() {
        record.begin(tick()).unwrap();
        record
            .finish(Outcome::Succeeded(result_for(step)), tick(), &mut budget)
            .unwrap();
    }
    assert_eq!(record.phase(), Phase::Done);
    record
}

#[test]
fn the_operators_word_and_abandoned_operations_round_trip() {
    use states::api::{ListedOperation, OperatorChoice};
    let (_tmp, state) = state();
    let id = CloneId::for_data_dir("/srv/pg/api");
    let request = CloneRequest {
        mode: Mode::BackupApi,
        data_dir: "/srv/pg/api".to_string(),
        backup_api: Some(ApiTarget {
            host: "https://backup:7443".to_string(),
            credentials_file: Some("/etc/repmgr.conf".to_string()),
            node_name: "pg".to_string(),
            start_timeout_secs: 300,
            ..ApiTarget::default()
        }),
        ..CloneRequest::default()
    };
    let mut record = CloneRecord::new(id.clone(), request, 1_000);
    let listed = [ListedOperation {
        id: "20261125T061400".to_string(),
        kind: "recovery".to_string(),
    }];
    record.api_attempt_begun(1_001, &listed);
    record.api_operation_created(1_002, "20261125T061500");
    record.api_operator_choice(OperatorChoice::PostNew).unwrap();
    record.api_attempt_begun(1_003, &listed);
    record
        .api_operator_choice(OperatorChoice::Adopt("20261125T061600".to_string()))
        .unwrap();
    assert_eq!(record.api_abandoned(), ["20261125T061500"]);
    let store = state.open_clone(&id).unwrap();
    store.save(&record).unwrap();
    let loaded = store.load().unwrap().unwrap();
    assert_eq!(loaded, record);
    assert_eq!(
        loaded.api_choice(),
        Some(&OperatorChoice::Adopt("20261125T061600".to_string()))
    );
    assert_eq!(loaded.api_operation().unwrap().recoveries_before, 1);
}

#[test]
fn full_record_round_trips_and_survives_reopening() {
    let (_tmp, state) = state();
    let id = CloneId::for_data_dir("/srv/pg/main");
    let record = full_record(&id);
    {
        let store = state.open_clone(&id).unwrap();
        assert_eq!(store.load().unwrap(), None, "a new clone has no record");
        store.save(&record).unwrap();
        assert_eq!(store.load().unwrap().as_ref(), Some(&record));
    }
    let store = state.open_clone(&id).unwrap();
    assert_eq!(store.load().unwrap(), Some(record));
    assert_eq!(state.clone_ids().unwrap(), vec![id]);
}

fn manifest(count: usize) -> Vec<ManifestEntry> {
    (0..count)
        .map(|i| ManifestEntry {
            // Two roots, listed out of order, to show entries() sorts by (root, path).
            root: if i % 10 == 0 { 16_390 } else { 0 },
            path: format!("base/{}/{}", i % 97, count - i),
            kind: if i % 50 == 0 {
                EntryKind::Dir
            } else {
                EntryKind::File
            },
            size: if i % 50 == 0 { 0 } else { 8_192 + i as u64 },
            mtime: 1_700_000_000 + i as i64,
            done: false,
        })
        .collect()
}

#[test]
fn file_table_of_100k_entries_round_trips_sorted_and_counts_done() {
    let (_tmp, state) = state();
    let id = CloneId::for_data_dir("/srv/pg/big");
    let list = manifest(100_000);
    let mut sorted = list.clone();
    sorted.sort_by(|a, b| (a.root, a.path.as_bytes()).cmp(&(b.root, b.path.as_bytes())));
    let marked: Vec<&ManifestEntry> = list.iter().step_by(3).collect();
    {
        let store = state.open_clone(&id).unwrap();
        let files = store.files();
        files.replace(&list).unwrap();
        assert_eq!(files.entries().unwrap(), sorted);
        for entry in &marked {
            assert!(files.mark_done(entry.root, &entry.path).unwrap());
        }
        assert!(!files.mark_done(7, "not/listed").unwrap());
        files.flush().unwrap();
    }
    let store = state.open_clone(&id).unwrap();
    let files = store.files();
    let entries = files.entries().unwrap();
    assert_eq!(entries.len(), 100_000);
    let done_files: Vec<&ManifestEntry> = marked
        .iter()
        .copied()
        .filter(|e| e.kind == EntryKind::File)
        .collect();
    let expected = (
        done_files.len() as u64,
        done_files.iter().map(|e| e.size).sum::<u64>(),
    );
    assert_eq!(files.done_counts().unwrap(), expected);
    assert_eq!(entries.iter().filter(|e| e.done).count(), marked.len());
    let counts = files.counts().unwrap();
    assert_eq!(counts.files_total, 98_000);

    // Replacing the list drops the old entries and their marks.
    files.replace(&manifest(10)).unwrap();
    assert_eq!(files.entries().unwrap().len(), 10);
    assert_eq!(files.done_counts().unwrap(), (0, 0));
}

/// The counts as the entries themselves tell them.
fn counted(entries: &[ManifestEntry]) -> FileCounts {
    let mut counts = FileCounts::default();
    for entry in entries.iter().filter(|e| e.kind == EntryKind::File) {
        counts.files_total += 1;
        counts.bytes_total += entry.size;
        if entry.done {
            counts.files_done += 1;
            counts.bytes_done += entry.size;
        }
    }
    counts
}

#[test]
fn file_counts_follow_every_change_of_the_list_and_survive_reopening() {
    let (_tmp, state) = state();
    let id = CloneId::for_data_dir("/srv/pg/counted");
    let mut list = manifest(200);
    // A duplicate (root, path): the later entry wins, in the entries and in the counts.
    let mut twin = list[1].clone();
    twin.size = 1_000_000;
    list.push(twin);
    {
        let store = state.open_clone(&id).unwrap();
        let files = store.files();
        files.replace(&list).unwrap();
        let entries = files.entries().unwrap();
        assert_eq!(entries.len(), 200);
        assert_eq!(files.counts().unwrap(), counted(&entries));
        assert_eq!(files.counts().unwrap().bytes_done, 0);
        for entry in list.iter().step_by(2) {
            assert!(files.mark_done(entry.root, &entry.path).unwrap());
            // Marking again changes nothing.
            assert!(files.mark_done(entry.root, &entry.path).unwrap());
        }
        for entry in list.iter().step_by(6) {
            assert!(files.unmark(entry.root, &entry.path).unwrap());
        }
        assert!(!files.unmark(7, "not/listed").unwrap());
        assert_eq!(files.counts().unwrap(), counted(&files.entries().unwrap()));
        files.flush().unwrap();
    }
    let store = state.open_clone(&id).unwrap();
    let files = store.files();
    let entries = files.entries().unwrap();
    let counts = files.counts().unwrap();
    assert_eq!(counts, counted(&entries));
    assert!(counts.files_done > 0 && counts.files_done < counts.files_total);
    assert_eq!(
        files.done_counts().unwrap(),
        (counts.files_done, counts.bytes_done)
    );
}

#[test]
fn discard_removes_the_clone_and_frees_it() {
    let (_tmp, state) = state();
    let id = CloneId::for_data_dir("/srv/pg/gone");
    let store = state.open_clone(&id).unwrap();
    store.save(&full_record(&id)).unwrap();
    let dir = store.dir().to_path_buf();
    store.discard().unwrap();
    assert!(!dir.exists());
    assert!(state.clone_ids().unwrap().is_empty());
    let store = state.open_clone(&id).unwrap();
    assert_eq!(store.load().unwrap(), None);
}

#[test]
fn status_of_an_idle_clone_comes_from_sled_and_of_a_missing_one_is_an_error() {
    let (_tmp, state) = state();
    let id = CloneId::for_data_dir("/srv/pg/idle");
    let missing = state.read_status(&id).unwrap_err();
    assert_eq!(missing.kind, ErrorKind::CloneState);
    let record = full_record(&id);
    {
        let store = state.open_clone(&id).unwrap();
        store.save(&record).unwrap();
        store.files().replace(&manifest(100)).unwrap();
        // A snapshot left behind by a run that ended is not what an idle clone shows.
        let mut stale = record.clone();
        stale.api_attempt_withdrawn();
        assert_ne!(stale, record);
        store
            .publish(&StatusSnapshot {
                record: stale,
                pid: 1,
                updated_at: 5,
                live: None,
            })
            .unwrap();
    }
    let view = state.read_status(&id).unwrap();
    assert!(!view.running);
    assert_eq!(view.pid, None);
    assert_eq!(view.record, record);
    assert_eq!(view.files.unwrap().files_total, 98);
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for item in std::fs::read_dir(from).unwrap() {
        let item = item.unwrap();
        let target = to.join(item.file_name());
        if item.file_type().unwrap().is_dir() {
            copy_dir(&item.path(), &target);
        } else {
            std::fs::copy(item.path(), target).unwrap();
        }
    }
}

fn sled_files(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for item in std::fs::read_dir(dir).unwrap() {
        let item = item.unwrap();
        if item.file_type().unwrap().is_dir() {
            sled_files(&item.path(), out);
        } else {
            out.push(item.path());
        }
    }
}

#[derive(Debug, Clone, Copy)]
enum Damage {
    Empty,
    Halve,
    ScribbleHead,
    ScribbleMiddle,
}

fn damage(file: &Path, how: Damage) {
    use std::io::{Seek, SeekFrom, Write};
    let len = std::fs::metadata(file).unwrap().len();
    let mut f = std::fs::OpenOptions::new().write(true).open(file).unwrap();
    match how {
        Damage::Empty => f.set_len(0).unwrap(),
        Damage::Halve => f.set_len(len / 2).unwrap(),
        Damage::ScribbleHead | Damage::ScribbleMiddle => {
            let at = if matches!(how, Damage::ScribbleHead) {
                0
            } else {
                len / 2
            };
            f.seek(SeekFrom::Start(at)).unwrap();
            let garbage: Vec<u8> = (0..4096u32).map(|i| (i * 7 + 13) as u8).collect();
            f.write_all(&garbage[..garbage.len().min(len.max(64) as usize)])
                .unwrap();
        }
    }
}

#[test]
fn damaged_sled_files_are_store_errors_never_panics() {
    let (tmp, state) = state();
    let pristine = CloneId::parse("pristine").unwrap();
    let record = full_record(&pristine);
    let list = manifest(5_000);
    {
        let store = state.open_clone(&pristine).unwrap();
        store.save(&record).unwrap();
        store.files().replace(&list).unwrap();
    }
    let db = state.clone_dir(&pristine).join("db");
    let mut files = vec![state.clone_dir(&pristine).join("checkpoint.json")];
    sled_files(&db, &mut files);
    let mut outcomes = Vec::new();
    for (n, file) in files.iter().enumerate() {
        let clone_dir = state.clone_dir(&pristine);
        let relative = file.strip_prefix(&clone_dir).unwrap().to_path_buf();
        for how in [
            Damage::Empty,
            Damage::Halve,
            Damage::ScribbleHead,
            Damage::ScribbleMiddle,
        ] {
            let id = CloneId::parse(&format!("damaged-{n}-{how:?}")).unwrap();
            let target = state.clone_dir(&id);
            copy_dir(&state.clone_dir(&pristine), &target);
            damage(&target.join(&relative), how);
            let result = state.open_clone(&id).and_then(|store| {
                let loaded = store.load()?;
                let entries = store.files().entries()?;
                Ok((loaded, entries.len()))
            });
            let outcome = match result {
                Ok((Some(_), len)) if len == list.len() => "intact".to_string(),
                Ok((loaded, len)) => format!("LOST record={} entries={len}", loaded.is_some()),
                Err(err) => {
                    assert_eq!(err.kind, ErrorKind::Store, "{}", err.message);
                    assert!(err.message.contains(&id.to_string()), "{}", err.message);
                    assert!(err.hint.is_some(), "{}", err.message);
                    format!("error: {}", err.message)
                }
            };
            outcomes.push(format!("{} {how:?}: {outcome}", relative.display()));
        }
    }
    let lost: Vec<&String> = outcomes.iter().filter(|o| o.contains("LOST")).collect();
    assert!(lost.is_empty(), "silent loss:\n{}", outcomes.join("\n"));
    let errors = outcomes.iter().filter(|o| o.contains("error:")).count();
    assert!(
        errors >= outcomes.len() / 2,
        "most damage must be noticed:\n{}",
        outcomes.join("\n")
    );
    drop(tmp);
}

#[test]
fn a_clone_reopens_at_once_after_its_store_is_dropped() {
    // sled lets go of its own file lock a little after its handle is dropped; the store must
    // wait for that instead of failing the next open.
    let (_tmp, state) = state();
    let id = CloneId::for_data_dir("/srv/pg/again");
    let record = full_record(&id);
    for _ in 0..40 {
        let store = state.open_clone(&id).unwrap();
        store.save(&record).unwrap();
        drop(store);
        assert_eq!(state.read_status(&id).unwrap().record, record);
    }
}

/// A file's check against backup_manifest is kept beside its done mark, survives reopening,
/// counts only while the entry is done, and is taken back by any new mark (the file was
/// copied again) and by a new list.
#[test]
fn checks_follow_the_done_marks_they_were_made_for() {
    let (_tmp, state) = state();
    let id = CloneId::for_data_dir("/srv/pg/checked");
    let list = manifest(20);
    let (a, b, c) = (&list[1], &list[2], &list[3]);
    let key = |e: &ManifestEntry| (e.root, e.path.clone());
    {
        let store = state.open_clone(&id).unwrap();
        let files = store.files();
        files.replace(&list).unwrap();
        for entry in [a, b, c] {
            assert!(files.mark_done(entry.root, &entry.path).unwrap());
        }
        files.mark_checked(a.root, &a.path);
        files.mark_checked(b.root, &b.path);
        files.flush().unwrap();
        let mut checked = files.checked().unwrap();
        checked.sort();
        let mut expected = vec![key(a), key(b)];
        expected.sort();
        assert_eq!(checked, expected);
    }
    let store = state.open_clone(&id).unwrap();
    let files = store.files();
    assert_eq!(
        files.checked().unwrap().len(),
        2,
        "checks survive reopening"
    );
    // a is copied again (unmarked, then marked anew without a check); b is checked again.
    assert!(files.unmark(a.root, &a.path).unwrap());
    assert!(files.mark_done(a.root, &a.path).unwrap());
    assert!(files.mark_done(b.root, &b.path).unwrap());
    files.mark_checked(b.root, &b.path);
    // A check of an entry not done does not count.
    files.mark_checked(list[4].root, &list[4].path);
    files.flush().unwrap();
    assert_eq!(files.checked().unwrap(), vec![key(b)]);
    files.replace(&list).unwrap();
    assert!(
        files.checked().unwrap().is_empty(),
        "a new list has no checks"
    );
}
