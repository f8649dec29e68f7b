//! The checkpoint store across real processes: a child driving a clone with the real runner is
//! SIGKILLed at random moments and resumed; a second run is refused by the lock; `clone status`
//! reads a running clone quickly.
//!
//! Children are this test binary re-executed (`--exact <test> --nocapture -q`) with
//! `PGREPLICA_STORE_CHILD` naming their role. The drive child runs `runner::run` with a scripted
//! executor that reports, from inside each step, the checkpoint the runner saved before calling
//! it, so whatever the parent read before the kill must be in the store afterwards. The kill
//! delays are drawn from a seeded generator (`PGREPLICA_TEST_SEED`, printed), so a failing
//! sequence can be replayed.

use pgreplica::error::{ErrorKind, Result};
use pgreplica::progress::Progress;
use pgreplica::runner::{self, Executor, StepContext, StopSignal};
use pgreplica::store::{CloneStore, FileCounts, FileTable, LiveProgress, StateDir, StatusSnapshot};
use rand::{Rng, SeedableRng};
use states::{
    BackupFacts, BarmanTarget, CloneId, CloneRecord, CloneRequest, EntryKind, ManifestEntry, Mode,
    Next, Outcome, OutcomeKind, Phase, PreparedDirs, RetryBudget, RetryPolicy, SourceParams, Step,
    StepResult, Task, TransferSummary, Verification, WrittenConf,
};
use std::io::{BufRead, BufReader, Read};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

const ROLE_ENV: &str = "PGREPLICA_STORE_CHILD";
const STATE_ENV: &str = "PGREPLICA_STORE_STATE";
const CLONE_ENV: &str = "PGREPLICA_STORE_CLONE";
/// Seeds the kill delays; a default keeps runs comparable.
const SEED_ENV: &str = "PGREPLICA_TEST_SEED";

/// Entries in the drive child's file list.
const FILES: usize = 1_500;
/// The drive child flushes its done marks every this many files.
const FLUSH_EVERY: usize = 25;
/// Kills that must land inside a running child.
const KILLS: usize = 50;

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_millis() as u64
}

fn request() -> CloneRequest {
    CloneRequest {
        mode: Mode::BarmanRsync,
        data_dir: "/srv/pg/main".to_string(),
        backup_selector: "latest".to_string(),
        jobs: 2,
        barman: Some(BarmanTarget {
            host: "barman@backup".to_string(),
            server: "pg".to_string(),
            config: None,
        }),
        ..CloneRequest::default()
    }
}

fn result_for(step: Step) -> StepResult {
    match step {
        Step::VerifyBackup => StepResult::VerifyBackup(BackupFacts {
            backup_id: "20261125T061436".to_string(),
            ..BackupFacts::default()
        }),
        Step::FetchParams => StepResult::FetchParams(SourceParams::default()),
        Step::PrepareDirs => StepResult::PrepareDirs(PreparedDirs::default()),
        Step::Transfer => StepResult::Transfer(TransferSummary {
            files: FILES as u64,
            ..TransferSummary::default()
        }),
        Step::StageBackup => StepResult::StageBackup(TransferSummary::default()),
        Step::UnpackBackup => StepResult::UnpackBackup(states::UnpackSummary::default()),
        Step::CombineChain => StepResult::CombineChain(states::CombineSummary::default()),
        Step::VerifyCopy => StepResult::VerifyCopy(Verification::Skipped {
            reason: "test".to_string(),
        }),
        Step::WriteReplicationConf => StepResult::WriteReplicationConf(WrittenConf::default()),
    }
}

fn manifest() -> Vec<ManifestEntry> {
    (0..FILES)
        .map(|i| ManifestEntry {
            root: 0,
            path: format!("base/5/{i:05}"),
            kind: EntryKind::File,
            size: 8_192,
            mtime: 1_700_000_000,
            done: false,
        })
        .collect()
}

/// A number that every save of the runner raises by exactly one: `begin` sets the in-flight
/// step, `finish` and `recover_crash` clear it and add a history entry.
fn progress(record: &CloneRecord) -> usize {
    2 * record.history().len() + usize::from(record.in_flight().is_some())
}

/// The runner's saves between two reports of the drive child: a report comes from inside a
/// step, after `begin` was saved; before it, the previous step's `finish` (or a crash's
/// recovery) was saved too.
const SAVES_BETWEEN_REPORTS: usize = 2;

fn checkpoint_line(record: &CloneRecord) -> String {
    format!(
        "CKPT {} {:?} {:?}",
        progress(record),
        record.phase(),
        record.in_flight()
    )
}

// ---------------------------------------------------------------------------------------------
// Children

/// Runs the child role named in the environment, if any; returns whether this process is a
/// child (the calling test then returns at once).
fn run_as_child() -> bool {
    let Ok(role) = std::env::var(ROLE_ENV) else {
        return false;
    };
    let state = StateDir::open(Path::new(&std::env::var(STATE_ENV).unwrap())).unwrap();
    let id = CloneId::parse(&std::env::var(CLONE_ENV).unwrap()).unwrap();
    let store = state.open_clone(&id).unwrap_or_else(|err| {
        println!("LOCKED {}", err.message);
        std::process::exit(3)
    });
    match role.as_str() {
        "drive" => drive(&store),
        "hold" => hold(&store),
        other => panic!("unknown child role {other}"),
    }
    true
}

/// The steps of the drive child: each reports the checkpoint the runner saved before calling
/// it, Transfer marks the file list done as the real one does.
struct Scripted;

impl Executor for Scripted {
    async fn execute(&self, task: Task, ctx: &mut StepContext<'_>) -> Result<StepResult> {
        println!("{}", checkpoint_line(ctx.record));
        if task.step == Step::Transfer {
            transfer(&ctx.store.files());
        }
        Ok(result_for(task.step))
    }
}

/// A stop that is never requested: the drive child is only ever killed.
struct NeverStop;

impl StopSignal for NeverStop {
    async fn requested(&mut self) {
        std::future::pending::<()>().await
    }
}

/// Drives the clone to Done with the real runner.
fn drive(store: &CloneStore) {
    let mut record = store
        .load()
        .unwrap()
        .expect("the parent created the record");
    println!("READY");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime
        .block_on(runner::run(
            store,
            &mut record,
            &Scripted,
            &Progress::new(),
            RetryPolicy::STEP,
            &mut NeverStop,
        ))
        .unwrap();
    println!("{}", checkpoint_line(&record));
    println!("DONE");
}

/// The "work" of the Transfer step: mark every file done, in list order, flushing regularly.
fn transfer(files: &FileTable<'_>) {
    let mut entries = files.entries().unwrap();
    if entries.is_empty() {
        files.replace(&manifest()).unwrap();
        entries = files.entries().unwrap();
    }
    for (index, entry) in entries.iter().enumerate() {
        if !entry.done {
            assert!(files.mark_done(entry.root, &entry.path).unwrap());
        }
        if (index + 1) % FLUSH_EVERY == 0 || index + 1 == entries.len() {
            files.flush().unwrap();
            println!("FILES {}", index + 1);
        }
    }
}

/// Begins the current step, publishes a snapshot, and holds the clone until stdin closes.
fn hold(store: &CloneStore) {
    let mut record = store
        .load()
        .unwrap()
        .expect("the parent created the record");
    record.recover_crash(now());
    let step = record.begin(now()).unwrap().step;
    store.save(&record).unwrap();
    store
        .publish(&StatusSnapshot {
            record,
            pid: std::process::id(),
            updated_at: now(),
            live: Some(LiveProgress {
                step,
                bytes_done: 1 << 20,
                bytes_total: 1 << 30,
                files_done: 3,
                files_total: 900,
                rate_bytes_per_sec: 50 << 20,
                eta_secs: Some(20),
            }),
        })
        .unwrap();
    println!("READY");
    let mut rest = Vec::new();
    std::io::stdin().read_to_end(&mut rest).unwrap();
}

// ---------------------------------------------------------------------------------------------
// The parent side

/// Held while this process has a clone lock open, and while it spawns a child.
///
/// A child forked by another test thread inherits every open file until its `exec` closes
/// them (O_CLOEXEC), flocks included; under load that window is long enough for a drive child
/// to find the clone "held" by a sibling that is merely being born. Real pgreplica runs one
/// clone per process, so this is a property of running tests in parallel threads.
fn no_fork() -> std::sync::MutexGuard<'static, ()> {
    static FORKS: std::sync::Mutex<()> = std::sync::Mutex::new(());
    FORKS
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// A running child and the lines it has printed so far.
struct Running {
    child: Child,
    lines: mpsc::Receiver<String>,
    seen: Vec<String>,
}

impl Running {
    fn spawn(test: &str, role: &str, state: &Path, id: &CloneId) -> Running {
        let forking = no_fork();
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args(["--exact", test, "--nocapture", "--test-threads=1", "-q"])
            .env(ROLE_ENV, role)
            .env(STATE_ENV, state)
            .env(CLONE_ENV, id.as_str())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("the test binary re-executes itself");
        drop(forking);
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Running {
            child,
            lines,
            seen: Vec::new(),
        }
    }

    /// Waits for the child's READY line (it has the store open).
    fn ready(&mut self) {
        loop {
            let line = self
                .lines
                .recv_timeout(Duration::from_secs(30))
                .unwrap_or_else(|e| panic!("child never got ready ({e}); it said {:?}", self.seen));
            self.seen.push(line.clone());
            if line == "READY" {
                return;
            }
            assert!(!line.starts_with("LOCKED"), "child could not open: {line}");
        }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGKILLs the child (if still running), reaps it and returns whether the kill landed,
    /// with everything it printed.
    fn kill(mut self) -> (bool, Vec<String>) {
        // SAFETY: kill(2) on our own child, which is not reaped yet, so the pid is still ours.
        unsafe { libc::kill(self.child.id() as libc::pid_t, libc::SIGKILL) };
        let status = self.child.wait().unwrap();
        self.seen.extend(self.lines.iter());
        let killed = status.signal() == Some(libc::SIGKILL);
        assert!(killed || status.success(), "child failed: {status:?}");
        (killed, self.seen)
    }

    /// Waits for the child to exit on its own.
    fn finish(mut self) -> Vec<String> {
        drop(self.child.stdin.take());
        let status = self.child.wait().unwrap();
        assert!(status.success(), "child failed: {status:?}");
        self.seen.extend(self.lines.iter());
        self.seen
    }
}

/// What the parent knows of one clone between children.
struct Expect {
    /// Progress of the record as last verified.
    progress: usize,
    /// Crashes the parent found (in-flight steps at reopening).
    crashes: usize,
    /// Progress of the in-flight checkpoint last counted as a crash: a child killed before
    /// its `recover_crash` was saved leaves the same crash for the next reopening to find.
    crash_counted_at: Option<usize>,
}

/// Reopens the store after a child and checks that every checkpoint it reported survived.
fn verify(state: &StateDir, id: &CloneId, lines: &[String], expect: &mut Expect) -> CloneRecord {
    let _locked = no_fork();
    let store = state.open_clone(id).expect("the dead child's lock is free");
    let record = store
        .load()
        .expect("the record loads after SIGKILL")
        .expect("the record exists");
    let found = progress(&record);
    let last = lines.iter().rev().find(|l| l.starts_with("CKPT "));
    let reported = last.map_or(expect.progress, |l| {
        l.split(' ').nth(1).unwrap().parse::<usize>().unwrap()
    });
    assert!(
        (reported..=reported + SAVES_BETWEEN_REPORTS).contains(&found),
        "store is at checkpoint {found}, the child reported {reported}: {lines:?}"
    );
    if let (Some(line), true) = (last, found == reported) {
        assert_eq!(
            line,
            &checkpoint_line(&record),
            "the reported checkpoint differs"
        );
    }
    expect.progress = found;

    let flushed = lines
        .iter()
        .filter_map(|l| l.strip_prefix("FILES "))
        .map(|n| n.parse::<usize>().unwrap())
        .max()
        .unwrap_or(0);
    let entries = store.files().entries().unwrap();
    let done = entries.iter().take_while(|e| e.done).count();
    assert!(done >= flushed, "{done} files done, {flushed} were flushed");
    assert!(
        entries[done..].iter().all(|e| !e.done),
        "done marks are not a prefix of the list"
    );
    if record.is_step_done(Step::Transfer) {
        assert_eq!(done, FILES, "Transfer succeeded with files left");
    }
    // The counts `clone status` reads are the summary written in the same batch as each
    // mark: whatever the kill left, they agree with the entries.
    // (Every entry of the drive child's list is a file of 8 KiB; before Transfer stored the
    // list, there is none.)
    let (files_done, files_total) = (done as u64, entries.len() as u64);
    assert_eq!(
        store.files().counts().unwrap(),
        FileCounts {
            files_done,
            bytes_done: files_done * 8_192,
            files_total,
            bytes_total: files_total * 8_192,
        },
        "the summary disagrees with the entries after SIGKILL"
    );

    // What the next child's recover_crash will do, checked here on a copy.
    let mut recovered = record.clone();
    let crashed = recovered.recover_crash(now());
    assert_eq!(crashed, record.in_flight());
    if let Some(step) = crashed {
        let last = recovered.history().last().unwrap();
        assert_eq!((last.step, last.outcome), (step, OutcomeKind::Crashed));
        if expect.crash_counted_at != Some(found) {
            expect.crashes += 1;
            expect.crash_counted_at = Some(found);
        }
    }
    record
}

fn new_clone(state: &StateDir, id: &CloneId) -> Expect {
    let _locked = no_fork();
    let store = state.open_clone(id).unwrap();
    store
        .save(&CloneRecord::new(id.clone(), request(), now()))
        .unwrap();
    Expect {
        progress: 0,
        crashes: 0,
        crash_counted_at: None,
    }
}

fn check_done(record: &CloneRecord, expect: &Expect) {
    assert_eq!(record.phase(), Phase::Done);
    for step in record.plan() {
        let successes = record
            .history()
            .iter()
            .filter(|t| t.step == *step && t.outcome == OutcomeKind::Succeeded)
            .count();
        assert_eq!(successes, 1, "{step} succeeded {successes} times");
    }
    let crashes = record
        .history()
        .iter()
        .filter(|t| t.outcome == OutcomeKind::Crashed)
        .count();
    assert_eq!(
        crashes, expect.crashes,
        "every crash is in the history once"
    );
    assert_eq!(
        record.history().len(),
        record.plan().len() + crashes,
        "nothing but successes and crashes happened"
    );
}

#[test]
fn sigkilled_child_resumes_at_the_right_step_and_loses_no_checkpoint() {
    const TEST: &str = "sigkilled_child_resumes_at_the_right_step_and_loses_no_checkpoint";
    if run_as_child() {
        return;
    }
    let (_tmp, state_path, state) = scratch_state();
    let started = Instant::now();
    let seed = std::env::var(SEED_ENV)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20_261_130_u64);
    eprintln!("kill delays seeded with {SEED_ENV}={seed}");
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut kills = 0;
    let mut landed_in = std::collections::BTreeMap::<String, usize>::new();
    let mut clones = 0;
    // Clones follow one another until enough kills have landed; the last one is then run to
    // completion without a kill.
    while kills < KILLS {
        let id = CloneId::parse(&format!("killed-{clones}")).unwrap();
        clones += 1;
        let mut expect = new_clone(&state, &id);
        loop {
            let mut child = Running::spawn(TEST, "drive", &state_path, &id);
            child.ready();
            std::thread::sleep(Duration::from_millis(rng.gen_range(0..=30)));
            let (killed, lines) = child.kill();
            let record = verify(&state, &id, &lines, &mut expect);
            if killed {
                kills += 1;
                let at = format!("{:?}/{:?}", record.phase(), record.in_flight());
                *landed_in.entry(at).or_default() += 1;
            } else {
                assert!(lines.iter().any(|l| l == "DONE"), "{lines:?}");
                check_done(&record, &expect);
                break;
            }
            if kills >= KILLS {
                let lines = Running::spawn(TEST, "drive", &state_path, &id).finish();
                assert!(lines.iter().any(|l| l == "DONE"), "{lines:?}");
                let record = verify(&state, &id, &lines, &mut expect);
                check_done(&record, &expect);
                break;
            }
        }
    }
    assert!(kills >= KILLS);
    assert!(
        landed_in.keys().any(|k| k.contains("Transfer")),
        "no kill landed in Transfer: {landed_in:?}"
    );
    eprintln!(
        "{kills} kills over {clones} clones in {:?}: {landed_in:?}",
        started.elapsed()
    );
}

/// A state directory in a temporary directory (removed when the first value is dropped).
fn scratch_state() -> (tempfile::TempDir, PathBuf, StateDir) {
    let tmp = tempfile::tempdir().unwrap();
    let state_path = tmp.path().join("state");
    let state = StateDir::open(&state_path).unwrap();
    (tmp, state_path, state)
}

#[test]
fn a_second_run_is_refused_until_the_holder_dies() {
    const TEST: &str = "a_second_run_is_refused_until_the_holder_dies";
    if run_as_child() {
        return;
    }
    let (_tmp, state_path, state) = scratch_state();
    let id = CloneId::for_data_dir("/srv/pg/main");
    new_clone(&state, &id);

    let mut holder = Running::spawn(TEST, "hold", &state_path, &id);
    holder.ready();
    let err = state.open_clone(&id).unwrap_err();
    assert_eq!(err.kind, ErrorKind::Store);
    assert_eq!(
        err.message,
        format!(
            "clone {id} is being run by another pgreplica process (pid {})",
            holder.pid()
        )
    );
    assert!(err.hint.unwrap().contains("clone status"));
    // Discarding is refused too: --force must not pull a clone from under its runner.
    assert_eq!(state.discard_clone(&id).unwrap_err().kind, ErrorKind::Store);

    let (killed, _) = holder.kill();
    assert!(killed);
    let _locked = no_fork();
    let store = state.open_clone(&id).expect("flock died with the holder");
    let record = store.load().unwrap().unwrap();
    assert_eq!(record.in_flight(), Some(Step::VerifyBackup));
}

#[test]
fn status_of_a_running_clone_comes_from_its_snapshot_with_its_step() {
    const TEST: &str = "status_of_a_running_clone_comes_from_its_snapshot_with_its_step";
    if run_as_child() {
        return;
    }
    let (_tmp, state_path, state) = scratch_state();
    let id = CloneId::for_data_dir("/srv/pg/main");
    {
        let _locked = no_fork();
        // Put the clone at Transfer so that the step shown is not simply the first one.
        let store = state.open_clone(&id).unwrap();
        let mut record = CloneRecord::new(id.clone(), request(), now());
        let mut budget = RetryBudget::new(RetryPolicy::STEP);
        while record.next() != Next::Run(Step::Transfer) {
            let step = record.begin(now()).unwrap().step;
            record
                .finish(Outcome::Succeeded(result_for(step)), now(), &mut budget)
                .unwrap();
        }
        store.save(&record).unwrap();
    }

    let mut holder = Running::spawn(TEST, "hold", &state_path, &id);
    holder.ready();
    // How fast status answers is the bench's business (`cargo xtask bench`), not a test's.
    for _ in 0..20 {
        let view = state.read_status(&id).unwrap();
        assert!(view.running);
        assert_eq!(view.pid, Some(holder.pid()));
        assert_eq!(view.record.phase(), Phase::At(Step::Transfer));
        assert_eq!(view.record.in_flight(), Some(Step::Transfer));
        assert_eq!(view.live.unwrap().step, Step::Transfer);
    }

    // Once the runner is gone, status reads sled, which knows the step was in flight.
    let (killed, _) = holder.kill();
    assert!(killed);
    let _locked = no_fork();
    let view = state.read_status(&id).unwrap();
    assert!(!view.running);
    assert_eq!(view.record.in_flight(), Some(Step::Transfer));
}
