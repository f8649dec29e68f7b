//! pg-backup-api mode end to end: pgreplica against `pgreplica-apiserver` (the test server that
//! honours pg-backup-api 2.2's contract) whose worker runs a real `barman recover` that pushes
//! the backup over the lab's sshd into the standby's data directory; then real PostgreSQL
//! starts the standby and it streams. The real server's failure modes are the server's fault
//! switches: a worker that cannot be started (the operation exists, the POST answers HTML 500,
//! nothing is ever restored), a worker that dies, a DONE without a restore, refused and
//! garbled replies.
//!
//! The server binary is built by `cargo test --workspace` (and `cargo xtask test`); run alone,
//! `cargo build -p pgreplica-apiserver` first — the tests fail loudly when it is missing.

mod common;

use common::api::{self, api_conf, ApiServer};
use common::{debian_lab, spawn, Bench};
use lab::api_server::ApiJob;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command};
use std::sync::mpsc::{channel, Receiver};
use std::time::{Duration, Instant};

/// A running pgreplica whose stderr is read line by line as it comes.
struct Watched {
    child: Child,
    lines: Receiver<String>,
    seen: Vec<String>,
}

impl Watched {
    fn new(mut child: Child) -> Watched {
        let stderr = child.stderr.take().expect("piped stderr");
        let (sender, lines) = channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                eprintln!("| {line}");
                if sender.send(line).is_err() {
                    break;
                }
            }
        });
        Watched {
            child,
            lines,
            seen: Vec::new(),
        }
    }

    /// Waits for a line containing `needle`.
    fn wait_line(&mut self, needle: &str, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        if self.seen.iter().any(|l| l.contains(needle)) {
            return;
        }
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    let found = line.contains(needle);
                    self.seen.push(line);
                    if found {
                        return;
                    }
                }
                Err(_) => break,
            }
        }
        panic!(
            "pgreplica never logged {needle:?}; it logged:\n{}",
            self.seen.join("\n")
        );
    }

    /// SIGKILLs pgreplica's process group.
    fn kill(mut self) {
        let pid = i32::try_from(self.child.id()).unwrap();
        // SAFETY: a signal to the process group we created for this child.
        unsafe { libc::kill(-pid, libc::SIGKILL) };
        let _ = self.child.wait();
    }

    /// Waits for the end; returns the exit code and all of stderr.
    fn finish(mut self) -> (Option<i32>, String) {
        let status = self.child.wait().expect("wait pgreplica");
        self.seen.extend(self.lines.iter());
        (status.code(), self.seen.join("\n"))
    }
}

fn owned_by_postgres(path: &Path) {
    use std::os::unix::fs::MetadataExt;
    let uid = std::fs::metadata(path).unwrap().uid();
    let postgres = Command::new("id")
        .args(["-u", "postgres"])
        .output()
        .unwrap();
    assert_eq!(
        uid.to_string(),
        String::from_utf8_lossy(&postgres.stdout).trim(),
        "{} is not owned by postgres",
        path.display()
    );
}

#[test]
fn clone_through_the_api_gives_a_streaming_standby() {
    let bench = Bench::start(debian_lab());
    // /status first answers an HTML 500; the first POST gets the API's duplicate-id 500.
    let server = api::start(&bench, &["--fault", "html500:1", "--fault", "post500:1"]);
    let data_dir = bench.lab.new_dir("standby");
    let conf = api_conf(&bench, &server.host(), &data_dir, "");
    let args = bench.start_args(&conf, &[]);
    let output = bench.run(&args.iter().map(String::as_str).collect::<Vec<_>>());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(0), "{stderr}");
    assert!(stderr.contains("INFO: Retrying..."), "{stderr}");
    assert!(stderr.contains("no operation was created"), "{stderr}");
    assert!(
        stderr.contains("NOTICE: standby clone (from pg-backup-api) complete"),
        "{stderr}"
    );
    assert_eq!(server.job_files().len(), 1, "{:?}", server.job_files());
    let status = bench.status(&data_dir);
    assert_eq!(status["phase"], "done");
    let operation = &status["backup_api"];
    assert_eq!(
        format!("{}.json", operation["operation_id"].as_str().unwrap()),
        server.job_files()[0]
    );
    owned_by_postgres(&data_dir.join("PG_VERSION"));
    assert!(data_dir.join("standby.signal").exists());
    let standby = bench.start_streaming_standby(&data_dir);
    bench.assert_replicates(&standby);
}

#[test]
fn killed_while_polling_with_the_api_restarted_resume_reattaches_to_the_one_operation() {
    let bench = Bench::start(lab::LabOptions {
        barman: lab::BarmanFlavor::PyPI,
        ..lab::LabOptions::default()
    });
    // The gate holds the worker before `barman recover` while the test kills and restarts.
    let gate = bench.lab.dir().join("worker-gate");
    std::fs::write(&gate, "held by the test\n").unwrap();
    let gate_arg = gate.display().to_string();
    let mut server = api::start(&bench, &["--gate", &gate_arg]);
    let data_dir = bench.lab.new_dir("standby");
    let conf = api_conf(&bench, &server.host(), &data_dir, "");
    let mut start = Watched::new(spawn(&bench, &bench.start_args(&conf, &[])));
    start.wait_line(
        "waiting for pg-backup-api operation",
        Duration::from_secs(120),
    );
    start.kill();
    server.kill();
    assert_eq!(server.job_files().len(), 1);

    // The API is down: resume retries (connection refused) until it is back, then gets HTML
    // 500s and malformed replies, all retried.
    let dir_arg = data_dir.display().to_string();
    let mut resume = Watched::new(spawn(
        &bench,
        &["clone", "resume", &dir_arg].map(String::from),
    ));
    resume.wait_line("Connection refused", Duration::from_secs(60));
    resume.wait_line("INFO: Retrying...", Duration::from_secs(10));
    api::respawn(
        &mut server,
        &[
            "--gate",
            &gate_arg,
            "--fault",
            "html500:2",
            "--fault",
            "malformed:2",
        ],
    );
    resume.wait_line("malformed reply", Duration::from_secs(60));
    std::fs::remove_file(&gate).unwrap();
    let (code, stderr) = resume.finish();
    assert_eq!(code, Some(0), "{stderr}");
    assert!(
        stderr.contains("re-attaching to pg-backup-api operation"),
        "{stderr}"
    );
    assert!(stderr.contains("HTTP 500"), "{stderr}");
    assert_eq!(server.job_files().len(), 1, "{:?}", server.job_files());
    let status = bench.status(&data_dir);
    assert_eq!(status["phase"], "done");
    let standby = bench.start_streaming_standby(&data_dir);
    bench.assert_replicates(&standby);
}

#[test]
fn a_crash_between_post_and_recording_the_id_is_resumed_without_a_second_post() {
    let bench = Bench::start(debian_lab());
    let server = api::start(&bench, &[]);
    let data_dir = bench.lab.new_dir("standby");
    let conf = api_conf(&bench, &server.host(), &data_dir, "");
    let args = bench.start_args(&conf, &[]);
    let output = bench
        .command(&args.iter().map(String::as_str).collect::<Vec<_>>())
        .env("PGREPLICA_TEST_CRASH_AFTER_POST", "1")
        .output()
        .expect("run pgreplica");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "{stderr}");
    assert!(
        stderr.contains("PGREPLICA_TEST_CRASH_AFTER_POST=1: aborting"),
        "{stderr}"
    );
    let status = bench.status(&data_dir);
    let operation = &status["backup_api"];
    assert!(operation["operation_id"].is_null(), "{operation}");
    assert!(operation["attempt_started_at"].is_string(), "{operation}");
    assert_eq!(server.job_files().len(), 1);

    let dir_arg = data_dir.display().to_string();
    let output = bench.run(&["clone", "resume", &dir_arg]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(0), "{stderr}");
    assert!(
        stderr.contains("is the one recovery created on server \"pg\" since this clone's request"),
        "{stderr}"
    );
    assert_eq!(server.job_files().len(), 1, "{:?}", server.job_files());
    let status = bench.status(&data_dir);
    assert_eq!(status["phase"], "done");
    assert_eq!(
        format!(
            "{}.json",
            status["backup_api"]["operation_id"].as_str().unwrap()
        ),
        server.job_files()[0]
    );
    assert!(data_dir.join("global/pg_control").is_file());
}

#[test]
fn missing_backup_failed_and_stalled_operations_exit_28() {
    let bench = Bench::start(debian_lab());
    let mut server = api::start(&bench, &[]);

    // A backup the catalogue does not hold: the POST's 404 names it; nothing is created.
    let data_dir = bench.lab.new_dir("no-backup");
    let conf = api_conf(
        &bench,
        &server.host(),
        &data_dir,
        "pg_backupapi_backup_id='20000101T000000'",
    );
    let args = bench.start_args(&conf, &[]);
    let output = bench.run(&args.iter().map(String::as_str).collect::<Vec<_>>());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(28), "{stderr}");
    assert!(
        stderr.contains("Backup '20000101T000000' does not exist"),
        "{stderr}"
    );
    assert!(
        stderr.contains("HINT: check pg_backupapi_backup_id"),
        "{stderr}"
    );
    assert!(server.job_files().is_empty());

    // Barman cannot reach the standby: the operation FAILS; the HINT names its output file.
    let data_dir = bench.lab.new_dir("failed");
    let conf = api_conf(&bench, &server.host(), &data_dir, "");
    let text = std::fs::read_to_string(&conf).unwrap().replace(
        &format!("-p {}", bench.lab.ssh_port()),
        &format!("-p {}", lab::free_port()),
    );
    bench.lab.write_file_as_postgres(&conf, &text).unwrap();
    let args = bench.start_args(&conf, &[]);
    let output = bench.run(&args.iter().map(String::as_str).collect::<Vec<_>>());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(28), "{stderr}");
    let jobs = server.job_files();
    assert_eq!(jobs.len(), 1, "{jobs:?}");
    let id = jobs[0].trim_end_matches(".json");
    assert!(
        stderr.contains(&format!("pg-backup-api operation {id} failed")),
        "{stderr}"
    );
    assert!(
        stderr.contains(&format!("<barman_home>/pg/output/{id}.json")),
        "{stderr}"
    );
    let output_file = bench.lab.barman_home().join(format!("pg/output/{id}.json"));
    let recorded: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(output_file).unwrap()).unwrap();
    assert_eq!(recorded["success"], false);

    // A worker that dies at once: IN_PROGRESS forever and nothing arrives in the empty data
    // directory — the start timeout ends it, as for a worker that never started.
    server.kill();
    api::respawn(&mut server, &["--worker-dies"]);
    let data_dir = bench.lab.new_dir("never-started");
    let conf = api_conf(
        &bench,
        &server.host(),
        &data_dir,
        "pg_backupapi_start_timeout=3\npg_backupapi_stall_timeout=1h",
    );
    let (code, stderr) = run_start(&bench, &conf, &[]);
    assert_eq!(code, Some(28), "{stderr}");
    let id = only_job_into(&server, &data_dir).id;
    assert_never_started(&bench, &stderr, &id, &data_dir, 3);
    assert_eq!(server.job_files().len(), 2);

    // A restore an earlier run saw begin (files in the directory), then nothing: the worker
    // started once, so the stall timeout applies, and the configured one.
    let data_dir = bench.lab.new_dir("stalled");
    let conf = api_conf(
        &bench,
        &server.host(),
        &data_dir,
        "pg_backupapi_start_timeout=1h\npg_backupapi_stall_timeout=3",
    );
    bench.mkdir_as_postgres(&data_dir);
    bench
        .lab
        .write_file_as_postgres(&data_dir.join("PG_VERSION"), "15\n")
        .unwrap();
    let (code, stderr) = run_start(&bench, &conf, &["--force"]);
    assert_eq!(code, Some(28), "{stderr}");
    let id = only_job_into(&server, &data_dir).id;
    assert!(
        stderr.contains(&format!(
            "ERROR: pg-backup-api operation {id} is still IN_PROGRESS but nothing arrived in \"{}\" for 3 s",
            data_dir.display()
        )),
        "{stderr}"
    );

    // An API that says DONE having restored nothing: VerifyCopy refuses it with the evidence,
    // and nothing was written into the directory.
    server.kill();
    api::respawn(&mut server, &["--done-without-restoring"]);
    let data_dir = bench.lab.new_dir("done-without-restoring");
    let conf = api_conf(&bench, &server.host(), &data_dir, "");
    let (code, stderr) = run_start(&bench, &conf, &[]);
    assert_eq!(code, Some(28), "{stderr}");
    let job = only_job_into(&server, &data_dir);
    assert_eq!(job.success, Some(true), "the API says DONE");
    assert!(
        stderr.contains(&format!(
            "ERROR: pg-backup-api operation {} reported DONE, but \"{}\" holds no PostgreSQL data directory (PG_VERSION: No such file or directory (os error 2))",
            job.id,
            data_dir.display()
        )),
        "{stderr}"
    );
    assert!(
        stderr.contains(&format!(
            "DETAIL: \"{}\" holds 0 files, 0 bytes",
            data_dir.display()
        )),
        "{stderr}"
    );
    assert!(
        stderr.contains(&format!(
            "HINT: read \"output\" in <barman_home>/pg/output/{}.json on the Barman host",
            job.id
        )),
        "{stderr}"
    );
    assert!(
        !stderr.contains("standby clone (from pg-backup-api) complete"),
        "{stderr}"
    );
    let written: Vec<_> = std::fs::read_dir(&data_dir).unwrap().collect();
    assert!(written.is_empty(), "{written:?}");
    let status = bench.status(&data_dir);
    assert_eq!(status["phase"], "verify_copy");
}

/// `clone start -f CONF … EXTRA` to its end: the exit code and stderr.
fn run_start(bench: &Bench, conf: &Path, extra: &[&str]) -> (Option<i32>, String) {
    let args = bench.start_args(conf, extra);
    let output = bench.run(&args.iter().map(String::as_str).collect::<Vec<_>>());
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// `clone resume DATA_DIR EXTRA…` to its end: the exit code and stderr.
fn run_resume(bench: &Bench, data_dir: &Path, extra: &[&str]) -> (Option<i32>, String) {
    let dir = data_dir.display().to_string();
    let mut args = vec!["clone", "resume", dir.as_str()];
    args.extend(extra);
    let output = bench.run(&args);
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// The server's operations into `data_dir`.
fn jobs_into(server: &ApiServer, data_dir: &Path) -> Vec<ApiJob> {
    let jobs = server.jobs().unwrap_or_else(|e| panic!("{e}"));
    jobs.into_iter()
        .filter(|j| Path::new(&j.destination) == data_dir)
        .collect()
}

/// The one operation into `data_dir`.
fn only_job_into(server: &ApiServer, data_dir: &Path) -> ApiJob {
    match jobs_into(server, data_dir).as_slice() {
        [one] => one.clone(),
        jobs => panic!(
            "{} operations into {}: {jobs:?}",
            jobs.len(),
            data_dir.display()
        ),
    }
}

/// The stop for an operation whose worker never started: the ERROR with the configured start
/// timeout (`secs`), a HINT naming the operation, the likely cause and both ways on.
fn assert_never_started(bench: &Bench, stderr: &str, id: &str, data_dir: &Path, secs: u32) {
    assert!(
        stderr.contains(&format!(
            "ERROR: pg-backup-api operation {id} is still IN_PROGRESS but nothing arrived in \"{}\" within {secs} s (pg_backupapi_start_timeout): its worker never started",
            data_dir.display()
        )),
        "{stderr}"
    );
    let clone = states::CloneId::for_data_dir(&data_dir.display().to_string());
    let resume = bench.pasted(&["clone", "resume", clone.as_str()]);
    let new = bench.pasted(&["clone", "resume", clone.as_str(), "--api-operation", "new"]);
    assert!(
        stderr.contains(&format!(
            "HINT: on the Barman host, check that the pg-backup-api program is on the PATH of the API service and read the service's log (the job file <barman_home>/pg/jobs/{id}.json names the operation's destination_directory); after fixing it, \"{resume}\" checks operation {id} again (a worker that was only slow has begun by then), and \"{new}\" posts a new recovery"
        )),
        "{stderr}"
    );
}

#[test]
fn a_worker_that_cannot_start_leaves_one_operation_until_the_operator_says_new() {
    let bench = Bench::start(debian_lab());
    // pg-backup-api 2.2 without `pg-backup-api` on its PATH: job file, HTML 500, no worker.
    let mut server = api::start(&bench, &["--spawn-fails"]);
    let data_dir = bench.lab.new_dir("spawn-fails");
    let conf = api_conf(
        &bench,
        &server.host(),
        &data_dir,
        "pg_backupapi_start_timeout=10",
    );

    // clone start: the 500 is an unknown outcome; the list shows the operation, which is
    // adopted, followed, and given up at the start timeout. Exactly one operation.
    let (code, stderr) = run_start(&bench, &conf, &[]);
    assert_eq!(code, Some(28), "{stderr}");
    assert!(
        stderr.contains("answered HTTP 500 Internal Server Error to the recovery request"),
        "{stderr}"
    );
    let id = only_job_into(&server, &data_dir).id;
    assert!(
        stderr.contains(&format!(
            "NOTICE: pg-backup-api operation {id} is the one recovery created on server \"pg\" since this clone's request"
        )),
        "{stderr}"
    );
    assert_never_started(&bench, &stderr, &id, &data_dir, 10);
    assert_eq!(server.job_files().len(), 1, "{:?}", server.job_files());

    // SIGKILL while a resume waits on it: still one; the next resume checks it again first.
    let dir_arg = data_dir.display().to_string();
    let mut resume = Watched::new(spawn(
        &bench,
        &["clone", "resume", &dir_arg].map(String::from),
    ));
    resume.wait_line(
        &format!("waiting for pg-backup-api operation {id}"),
        Duration::from_secs(60),
    );
    resume.kill();
    assert_eq!(server.job_files().len(), 1, "{:?}", server.job_files());
    let (code, stderr) = run_resume(&bench, &data_dir, &[]);
    assert_eq!(code, Some(28), "{stderr}");
    assert!(
        stderr.contains(&format!("re-attaching to pg-backup-api operation {id}")),
        "{stderr}"
    );
    assert_never_started(&bench, &stderr, &id, &data_dir, 10);
    assert_eq!(server.job_files().len(), 1, "{:?}", server.job_files());

    // A crash right after the POST's 500, before anything of it was recorded: the resume
    // finds the operation in the list instead of posting again.
    let lost_dir = bench.lab.new_dir("spawn-fails-lost");
    let lost_conf = api_conf(
        &bench,
        &server.host(),
        &lost_dir,
        "pg_backupapi_start_timeout=10",
    );
    let args = bench.start_args(&lost_conf, &[]);
    let output = bench
        .command(&args.iter().map(String::as_str).collect::<Vec<_>>())
        .env("PGREPLICA_TEST_CRASH_AFTER_POST", "1")
        .output()
        .expect("run pgreplica");
    assert!(!output.status.success());
    let lost = only_job_into(&server, &lost_dir).id;
    let (code, stderr) = run_resume(&bench, &lost_dir, &[]);
    assert_eq!(code, Some(28), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "NOTICE: pg-backup-api operation {lost} is the one recovery"
        )),
        "{stderr}"
    );
    assert_never_started(&bench, &stderr, &lost, &lost_dir, 10);
    assert_eq!(only_job_into(&server, &lost_dir).id, lost);

    // The API fixed: the operator's word, recorded by the resume, posts one more recovery; a
    // SIGKILL of that resume once the word is recorded loses nothing.
    server.kill();
    api::respawn(&mut server, &[]);
    let mut choosing = Watched::new(spawn(
        &bench,
        &["clone", "resume", &dir_arg, "--api-operation", "new"].map(String::from),
    ));
    choosing.wait_line(
        "NOTICE: recorded the operator's choice of pg-backup-api operation: new",
        Duration::from_secs(60),
    );
    choosing.kill();
    let (code, stderr) = run_resume(&bench, &data_dir, &[]);
    assert_eq!(code, Some(0), "{stderr}");
    let jobs = jobs_into(&server, &data_dir);
    assert_eq!(jobs.len(), 2, "{jobs:?}");
    let status = bench.status(&data_dir);
    let api = &status["backup_api"];
    assert_eq!(api["abandoned"], serde_json::json!([id]));
    assert_eq!(api["operator_choice"], serde_json::Value::Null);
    let new = api["operation_id"].as_str().unwrap();
    assert_ne!(new, id);
    assert!(
        jobs.iter().any(|j| j.id == new && j.success == Some(true)),
        "{jobs:?}"
    );
    assert!(
        jobs.iter().any(|j| j.id == id && j.success.is_none()),
        "{jobs:?}"
    );
    let text = bench.run(&["clone", "status", &dir_arg]);
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(
        text.contains(&format!(
            "  operation:  pg-backup-api {new} (abandoned: {id})"
        )),
        "{text}"
    );
    // Nothing is left to choose once the restore is done.
    let (code, stderr) = run_resume(&bench, &data_dir, &["--api-operation", "new"]);
    assert_eq!(code, Some(42), "{stderr}");
    assert!(
        stderr.contains("ERROR: --api-operation new cannot be used: clone"),
        "{stderr}"
    );
    let standby = bench.start_streaming_standby(&data_dir);
    bench.assert_replicates(&standby);
}
