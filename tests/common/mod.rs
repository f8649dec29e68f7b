//! Shared helpers of the integration tests: run the built pgreplica as `postgres` against a lab,
//! read `clone status --json`, compare data directories; [`api`] runs the pg-backup-api test
//! server. The watching, killing and digesting itself is `lab::clone_check`, shared with
//! `cargo xtask chaos`; here it panics with the reason.

#![allow(dead_code)] // each test binary uses its own subset

pub mod api;

use lab::clone_check::{self, TreeDigest};
use lab::{Lab, LabOptions, Standby};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output};
use std::time::{Duration, Instant};

/// A lab plus the pgreplica binary installed where `postgres` can run it.
pub struct Bench {
    /// The lab.
    pub lab: Lab,
    /// pgreplica, executable by postgres.
    pub binary: PathBuf,
}

impl Bench {
    /// Stands up a lab (failing loudly with the reason when prerequisites are missing).
    pub fn start(options: LabOptions) -> Bench {
        let lab = match Lab::start(options) {
            Ok(lab) => lab,
            Err(e) => panic!("cannot stand up the lab: {e}"),
        };
        let binary = lab.install_binary(Path::new(env!("CARGO_BIN_EXE_pgreplica")));
        Bench { lab, binary }
    }

    /// Writes a repmgr.conf for node 2 cloning into `data_dir`, plus `extra` lines.
    pub fn repmgr_conf(&self, name: &str, data_dir: &Path, extra: &str) -> PathBuf {
        let path = self.lab.dir().join(format!("{name}.conf"));
        let text = format!(
            "{}{extra}\n",
            self.lab
                .repmgr_conf(2, name, data_dir, self.lab.primary_port())
        );
        self.lab
            .write_file_as_postgres(&path, &text)
            .expect("write repmgr.conf");
        path
    }

    /// Creates the directory `dir` as postgres, mode 0700, as a data directory would be.
    pub fn mkdir_as_postgres(&self, dir: &Path) {
        let made = self
            .lab
            .command_as_postgres("mkdir")
            .args(["-m", "0700"])
            .arg(dir)
            .status()
            .expect("run mkdir as postgres");
        assert!(made.success(), "mkdir {} as postgres", dir.display());
    }

    /// `pgreplica ARGS` as postgres, with the lab's state directory.
    pub fn command(&self, args: &[&str]) -> Command {
        clone_check::pgreplica(&self.lab, &self.binary, args)
    }

    /// Runs `pgreplica ARGS` to completion.
    pub fn run(&self, args: &[&str]) -> Output {
        self.run_with_env(args, &[])
    }

    /// Runs `pgreplica ARGS` to completion with the environment variables `env` set.
    pub fn run_with_env(&self, args: &[&str], env: &[(&str, &str)]) -> Output {
        let mut command = self.command(args);
        command.envs(env.iter().copied());
        let output = command.output().expect("run pgreplica");
        eprintln!(
            "$ {}pgreplica {}\n{}{}-> {:?}",
            env.iter()
                .map(|(k, v)| format!("{k}={v} "))
                .collect::<String>(),
            args.join(" "),
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr),
            output.status.code()
        );
        output
    }

    /// `clone start -f CONF -h 127.0.0.1 -p PORT -U barman -d postgres EXTRA…` as a command.
    pub fn start_args(&self, conf: &Path, extra: &[&str]) -> Vec<String> {
        let mut args = self.lab.clone_start_args(conf);
        args.extend(extra.iter().map(|s| s.to_string()));
        args
    }

    /// A pgreplica command as pgreplica prints it for pasting: the binary that runs and the
    /// lab's state directory, then `args`.
    pub fn pasted(&self, args: &[&str]) -> String {
        format!(
            "{} --state-dir {} {}",
            self.binary.display(),
            self.lab.state_dir().display(),
            args.join(" ")
        )
    }

    /// The clone's status as JSON (the first clone of `clone status --json CLONE`).
    pub fn status(&self, data_dir: &Path) -> Value {
        self.try_status(data_dir)
            .unwrap_or_else(|e| panic!("clone status failed: {e}"))
    }

    /// The clone's status as JSON, or what went wrong (`clone status`'s stderr).
    pub fn try_status(&self, data_dir: &Path) -> Result<Value, String> {
        clone_check::clone_status(&self.lab, &self.binary, data_dir)
    }

    /// Starts the cloned standby on a free port and waits until it streams.
    pub fn start_streaming_standby(&self, data_dir: &Path) -> Standby {
        let standby = self
            .lab
            .start_standby(data_dir, lab::free_port())
            .unwrap_or_else(|e| panic!("standby does not start: {e}"));
        standby
            .wait_streaming(Duration::from_secs(60))
            .unwrap_or_else(|e| panic!("standby does not stream: {e}"));
        standby
    }

    /// Asserts the standby is in recovery, streams, and receives a row inserted on the primary
    /// after the clone.
    pub fn assert_replicates(&self, standby: &Standby) {
        assert_eq!(
            standby.psql("SELECT pg_is_in_recovery()").unwrap().trim(),
            "t"
        );
        assert_eq!(
            standby
                .psql("SELECT status FROM pg_stat_wal_receiver")
                .unwrap()
                .trim(),
            "streaming"
        );
        let marker = format!("after-clone-{}", std::process::id());
        self.lab
            .psql(
                self.lab.primary_port(),
                &format!(
                    "CREATE TABLE IF NOT EXISTS clone_marker (note text); INSERT INTO clone_marker VALUES ('{marker}')"
                ),
            )
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let seen = standby
                .psql(&format!(
                    "SELECT count(*) FROM pg_tables WHERE tablename = 'clone_marker' AND EXISTS (SELECT 1 FROM clone_marker WHERE note = '{marker}')"
                ))
                .unwrap_or_default();
            if seen.trim() == "1" {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the row inserted on the primary never reached the standby"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// Clones `backup_id` without interruption (the default engine) into a directory of its own,
/// under node name `node2` like the clones of the tests, so that what pgreplica writes (the
/// replication settings) is the same: the directory a resumed clone must equal.
pub fn uninterrupted_clone(bench: &Bench, backup_id: &str) -> PathBuf {
    let reference = bench.lab.new_dir("reference");
    let conf = bench.repmgr_conf("node2-ref", &reference, "");
    let conf_text = std::fs::read_to_string(&conf)
        .unwrap()
        .replace("node_name='node2-ref'", "node_name='node2'");
    bench.lab.write_file_as_postgres(&conf, &conf_text).unwrap();
    let args = bench.start_args(&conf, &["--backup-id", backup_id]);
    let output = bench.run(&args.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(output.status.success());
    reference
}

/// Asserts that `data_dir` equals an uninterrupted clone of `backup_id` file for file, then starts
/// it as a standby and checks that a row inserted on the primary reaches it: what a resumed clone
/// must give.
pub fn assert_equals_an_uninterrupted_clone_and_streams(
    bench: &Bench,
    data_dir: &Path,
    backup_id: &str,
) {
    let reference = uninterrupted_clone(bench, backup_id);
    let differing = clone_check::differing_paths(&tree_digest(data_dir), &tree_digest(&reference));
    assert!(
        differing.is_empty(),
        "the directories differ in {differing:?}"
    );
    let standby = bench.start_streaming_standby(data_dir);
    bench.assert_replicates(&standby);
}

/// Spawns `pgreplica ARGS` as postgres with piped stderr, in its own process group.
pub fn spawn(bench: &Bench, args: &[String]) -> Child {
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    clone_check::spawn_in_group(&mut bench.command(&args)).expect("spawn pgreplica")
}

/// Polls `clone status --json` until the running clone has copied `fraction` of its bytes.
/// Returns the bytes done then; panics (with the clone's stderr) if it ends first.
pub fn wait_for_progress(
    bench: &Bench,
    data_dir: &Path,
    child: &mut std::process::Child,
    fraction: f64,
) -> u64 {
    wait_for_step_progress(bench, data_dir, child, "transfer", fraction)
}

/// Polls `clone status --json` until the running clone's `step` has done `fraction` of its
/// bytes. Returns the bytes done then; panics (with the clone's stderr) if it ends first.
pub fn wait_for_step_progress(
    bench: &Bench,
    data_dir: &Path,
    child: &mut std::process::Child,
    step: &str,
    fraction: f64,
) -> u64 {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            panic!(
                "pgreplica ended ({status}) before reaching {fraction}: {}",
                stderr_of(child)
            );
        }
        if let Ok(status) = bench.try_status(data_dir) {
            let live = &status["progress"];
            if live["step"] == step {
                let done = live["bytes_done"].as_u64().unwrap();
                let total = live["bytes_total"].as_u64().unwrap();
                if total > 0 && done as f64 >= fraction * total as f64 {
                    return done;
                }
            }
        }
        assert!(
            Instant::now() < deadline,
            "no progress to {fraction} in time"
        );
        std::thread::sleep(Duration::from_millis(30));
    }
}

/// Reads the running clone's log (its piped stderr) until a line contains `marker`, then
/// SIGKILLs its whole process group: a power cut at that moment. Returns the log read so far.
pub fn kill_at_line(child: &mut Child, marker: &str) -> String {
    use std::io::{BufRead, BufReader};
    let stderr = child.stderr.take().expect("piped stderr");
    let mut seen = String::new();
    for line in BufReader::new(stderr).lines() {
        let line = line.expect("pgreplica's log");
        seen.push_str(&line);
        seen.push('\n');
        if line.contains(marker) {
            kill_group(child);
            return seen;
        }
    }
    panic!("pgreplica ended before logging {marker:?}:\n{seen}");
}

/// A repmgr.conf cloning the lab fixture `fixture` into `data_dir` as node2, its tablespace
/// mapped to `<data_dir>.tbs`, plus `extra` lines.
pub fn fixture_conf(
    bench: &Bench,
    fixture: &lab::BackupFixture,
    name: &str,
    data_dir: &Path,
    extra: &str,
) -> PathBuf {
    let tablespace = fixture.tablespace.as_ref().expect("the lab's tablespace");
    bench.repmgr_conf(
        name,
        data_dir,
        &format!(
            "node_name='node2'\nbarman_server='{}'\ntablespace_mapping='{}={}'\n{extra}",
            fixture.server,
            tablespace.location.display(),
            data_dir.with_extension("tbs").display()
        ),
    )
}

/// Polls `pgreplica STATUS_ARGS` (a `clone status --json` with its own `--state-dir`) until the
/// running clone copies bytes (bounded); panics with its stderr if it ends first.
pub fn wait_for_copy(bench: &Bench, status_args: &[&str], child: &mut Child) {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        if let Some(ended) = child.try_wait().unwrap() {
            panic!(
                "pgreplica ended ({ended}) before copying: {}",
                stderr_of(child)
            );
        }
        let output = bench.command(status_args).output().unwrap();
        if let Ok(value) = serde_json::from_slice::<Value>(&output.stdout) {
            let live = &value["clones"][0]["progress"];
            if live["step"] == "transfer" && live["bytes_done"].as_u64().unwrap_or(0) > 0 {
                return;
            }
        }
        assert!(Instant::now() < deadline, "no copy in time");
        std::thread::sleep(Duration::from_millis(30));
    }
}

/// SIGKILLs pgreplica's whole process group, as a power cut or the OOM killer would.
pub fn kill_group(child: &mut Child) {
    clone_check::kill_group(child).expect("kill pgreplica's process group");
}

/// The clone's status once no process holds it any more (within 20 s).
pub fn wait_until_stopped(bench: &Bench, data_dir: &Path) -> Value {
    clone_check::wait_until_stopped(&bench.lab, &bench.binary, data_dir, Duration::from_secs(20))
        .unwrap_or_else(|e| panic!("{e}"))
}

/// Polls `sql` on the primary until it answers `expected` (within 20 s), for what the server
/// notices asynchronously (a walsender exiting, a slot turning inactive).
pub fn wait_for_primary(bench: &Bench, sql: &str, expected: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let answer = bench.lab.psql(bench.lab.primary_port(), sql).unwrap();
        if answer.trim() == expected {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{sql} answers {answer:?}, not {expected:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Collects a child's stderr after it ended.
pub fn stderr_of(child: &mut Child) -> String {
    clone_check::stderr_of(child)
}

/// Content digest of every file of a data directory (see [`clone_check::tree_digest`]).
pub fn tree_digest(root: &Path) -> TreeDigest {
    clone_check::tree_digest(root).unwrap_or_else(|e| panic!("digest of {}: {e}", root.display()))
}

/// What a run printed on stderr.
pub fn stderr_text(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// Asserts that no HINT in `log` names an option outside the command it belongs to: every HINT
/// that mentions `--force` names `clone start` (the only command taking it), and every command
/// a HINT quotes as `pgreplica … clone resume …` takes no `--force`.
pub fn assert_hints_name_only_accepted_options(log: &str) {
    for hint in log.lines().filter(|l| l.starts_with("HINT: ")) {
        if hint.contains("--force") {
            assert!(
                hint.contains("clone start"),
                "a HINT names --force without clone start: {hint}"
            );
        }
        for quoted in hint.split('"').skip(1).step_by(2) {
            if quoted.contains(" clone resume") {
                assert!(
                    !quoted.contains("--force") && !quoted.contains(" -F"),
                    "{quoted}"
                );
            }
        }
    }
}

/// The clone directories a state directory holds (none when it does not exist).
pub fn recorded_clones(state_dir: &Path) -> Vec<String> {
    std::fs::read_dir(state_dir.join("clones"))
        .map(|listing| {
            listing
                .flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// The default lab for a Barman-mode test.
pub fn debian_lab() -> LabOptions {
    LabOptions::default()
}

/// Resolves `selector` of the lab's Barman server `server` both ways — the catalogue read
/// directly (which must be trusted here) and Barman's own commands — asserts the same facts,
/// and returns them.
pub fn assert_resolves_alike(bench: &Bench, server: &str, selector: &str) -> states::BackupFacts {
    let barman = pgreplica::barman::Barman::new(
        bench.lab.barman_ssh_host(),
        server,
        Some(bench.lab.barman_config().display().to_string()),
        bench.lab.ssh_args(),
    );
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let direct = rt
        .block_on(barman.resolve_backup_directly(selector))
        .unwrap_or_else(|e| panic!("{server} {selector}: {e:?}"))
        .unwrap_or_else(|why| panic!("{server} {selector}: not read directly: {why}"));
    let asked = rt
        .block_on(barman.resolve_backup_with_barman(selector))
        .unwrap_or_else(|e| panic!("{server} {selector} through Barman: {e:?}"));
    assert_eq!(direct, asked, "{server} {selector}");
    direct
}

/// The ssh control sockets (`ssh-*`) in the clone directories of the lab's state directory.
pub fn ssh_sockets(bench: &Bench) -> Vec<PathBuf> {
    use std::os::unix::fs::FileTypeExt;
    let clones = bench.lab.state_dir().join("clones");
    let mut sockets = Vec::new();
    for clone in std::fs::read_dir(&clones).into_iter().flatten().flatten() {
        for entry in std::fs::read_dir(clone.path())
            .into_iter()
            .flatten()
            .flatten()
        {
            let is_socket = entry.file_type().is_ok_and(|t| t.is_socket());
            if is_socket && entry.file_name().to_string_lossy().starts_with("ssh-") {
                sockets.push(entry.path());
            }
        }
    }
    sockets
}

/// The processes whose command line names `path` (an ssh master names its ControlPath).
pub fn processes_naming(path: &Path) -> Vec<i32> {
    let needle = path.to_string_lossy().into_owned();
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let pid: i32 = entry.file_name().to_str()?.parse().ok()?;
            let cmdline = std::fs::read(entry.path().join("cmdline")).ok()?;
            String::from_utf8_lossy(&cmdline)
                .contains(&needle)
                .then_some(pid)
        })
        .collect()
}

/// Asserts that the run whose log is `log` (the last one of a clone) ended with every file of
/// `data_dir`'s backup_manifest that has a checksum checked exactly once — during the copy or
/// by VerifyCopy at the end —, most of them during the copy.
pub fn assert_verified_once(log: &str, data_dir: &Path) {
    let line = log
        .lines()
        .rev()
        .find(|l| l.contains("backup successfully verified ("))
        .unwrap_or_else(|| panic!("VerifyCopy did not check the checksums left: {log}"));
    let numbers: Vec<u64> = line
        .split(|c: char| !c.is_ascii_digit())
        .filter_map(|n| n.parse().ok())
        .collect();
    let [.., during_copy, at_end] = numbers[..] else {
        panic!("no counts in {line}");
    };
    let manifest: Value =
        serde_json::from_slice(&std::fs::read(data_dir.join("backup_manifest")).unwrap()).unwrap();
    let with_checksum = manifest["Files"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| {
            f["Checksum-Algorithm"]
                .as_str()
                .is_some_and(|a| a != "NONE")
        })
        .count() as u64;
    assert_eq!(during_copy + at_end, with_checksum, "{line}");
    assert!(
        during_copy > at_end,
        "most files are checked during the copy: {line}"
    );
}
