//! pg-backup-api mode end to end: pgreplica against `pgreplica-apiserver` (the test server that
//! honours pg-backup-api 2.2's contract) whose worker runs a real `barman recover` that pushes
//! the backup over the lab's sshd into the standby's data directory; then real PostgreSQL
//! starts the standby and it streams.
//!
//! The server binary is built by `cargo test --workspace` (and `cargo xtask test`); run alone,
//! `cargo build -p pgreplica-apiserver` first — the tests fail loudly when it is missing.

mod common;

use common::api::{self, api_conf};
use common::{debian_lab, spawn, Bench};
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
    assert_eq!(status["phase"], "Done");
    let operation = &status["record"]["api_operation"];
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
    assert_eq!(status["phase"], "Done");
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
    let operation = &status["record"]["api_operation"];
    assert!(operation["operation_id"].is_null(), "{operation}");
    assert!(operation["attempt_started_at"].as_u64().unwrap() > 0);
    assert_eq!(server.job_files().len(), 1);

    let dir_arg = data_dir.display().to_string();
    let output = bench.run(&["clone", "resume", &dir_arg]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(0), "{stderr}");
    assert!(
        stderr.contains("the only recovery created on server \"pg\""),
        "{stderr}"
    );
    assert_eq!(server.job_files().len(), 1, "{:?}", server.job_files());
    let status = bench.status(&data_dir);
    assert_eq!(status["phase"], "Done");
    assert_eq!(
        format!(
            "{}.json",
            status["record"]["api_operation"]["operation_id"]
                .as_str()
                .unwrap()
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

    // A worker that died: IN_PROGRESS forever, nothing arrives, the stall timeout ends it.
    server.kill();
    api::respawn(&mut server, &["--worker-dies"]);
    let data_dir = bench.lab.new_dir("stalled");
    let conf = api_conf(
        &bench,
        &server.host(),
        &data_dir,
        "pg_backupapi_stall_timeout=3",
    );
    let args = bench.start_args(&conf, &[]);
    let output = bench.run(&args.iter().map(String::as_str).collect::<Vec<_>>());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(28), "{stderr}");
    // The configured stall timeout is the one applied.
    assert!(
        stderr.contains("is still IN_PROGRESS but nothing arrived") && stderr.contains("for 3 s"),
        "{stderr}"
    );
    assert_eq!(server.job_files().len(), 2);
}
