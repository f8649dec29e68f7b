//! Directories pgreplica must never harm, against the real lab (issue 9, items 1–4 and 7–9): the
//! source node's own running data directory and any directory nested in a running cluster are
//! refused in every mode, with or without --force; two runs never write one data directory,
//! however they spell it or wherever they keep their state; the state directory never lies
//! inside a directory it clones into; a resume re-checks what PrepareDirs checked; state files
//! are never opened through links and a shared state directory is refused; a NUL byte never
//! reaches the standby's configuration; the final HINT is a command that works when pasted.
//!
//! One lab for all of them (each item is a function, run in turn): CI stays lean.

mod common;

use common::{
    assert_hints_name_only_accepted_options, debian_lab, kill_group, recorded_clones, spawn,
    stderr_of, stderr_text, wait_for_progress, wait_until_stopped, Bench,
};
use lab::clone_check;
use states::CloneId;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Child, Output};
use std::time::{Duration, Instant};

#[test]
fn directories_are_never_harmed() {
    let bench = Bench::start(debian_lab());
    item_1_the_source_and_running_clusters_are_never_written(&bench);
    item_2_two_runs_never_write_one_data_directory(&bench);
    item_3_the_state_directory_never_lies_inside_a_target(&bench);
    item_4_a_resume_rechecks_what_prepare_dirs_checked(&bench);
    item_7_state_files_are_private_and_never_followed(&bench);
    item_8_a_nul_byte_never_reaches_the_standby_configuration(&bench);
    item_9_the_final_hint_works_when_pasted(&bench);
}

fn run(bench: &Bench, args: &[String]) -> Output {
    bench.run(&args.iter().map(String::as_str).collect::<Vec<_>>())
}

fn strings(words: &[&str]) -> Vec<String> {
    words.iter().map(|w| w.to_string()).collect()
}

/// `mkdir DIR` as postgres.
fn mkdir_as_postgres(bench: &Bench, dir: &Path) {
    let made = bench
        .lab
        .command_as_postgres("mkdir")
        .arg("-p")
        .arg(dir)
        .status()
        .unwrap();
    assert!(made.success(), "mkdir {}", dir.display());
}

/// The ERROR line of a failed run, and its HINT lines.
fn error_and_hints(stderr: &str) -> (String, Vec<String>) {
    let error = stderr
        .lines()
        .rev()
        .find(|l| l.starts_with("ERROR: "))
        .unwrap_or_else(|| panic!("no ERROR line in:\n{stderr}"))
        .to_string();
    let hints = stderr
        .lines()
        .filter(|l| l.starts_with("HINT: "))
        .map(String::from)
        .collect();
    (error, hints)
}

fn item_1_the_source_and_running_clusters_are_never_written(bench: &Bench) {
    let primary = bench.lab.primary_data_dir();
    let auto_conf = || std::fs::read_to_string(primary.join("postgresql.auto.conf")).unwrap();
    let before = auto_conf();
    // The command run on the primary's own host, -D naming the primary's data directory.
    let conf = bench.repmgr_conf("item1-own", &primary, "");
    for extra in [
        &["--replication-conf-only", "--force"][..],
        &["--replication-conf-only"],
        &["--force"],
        &["--without-barman", "--force"],
    ] {
        let output = run(bench, &bench.start_args(&conf, extra));
        let stderr = stderr_text(&output);
        assert_eq!(output.status.code(), Some(13), "{extra:?}: {stderr}");
        let (error, hints) = error_and_hints(&stderr);
        assert!(
            error.starts_with(&format!(
                "ERROR: \"{}\" is the data directory of the source node itself (PostgreSQL pid ",
                primary.display()
            )),
            "{extra:?}: {error}"
        );
        assert!(
            hints.iter().all(|h| !h.contains("force")),
            "{extra:?}: a HINT suggests --force: {hints:?}"
        );
    }
    // The dry run says so too, as the first problem of its report.
    let output = run(
        bench,
        &bench.start_args(&conf, &["--replication-conf-only", "--force", "--dry-run"]),
    );
    assert_eq!(output.status.code(), Some(13), "{}", stderr_text(&output));
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        stdout.contains("  PROBLEM  source node: ERROR 1 of "),
        "{stdout}"
    );
    let stderr = stderr_text(&output);
    assert!(stderr.contains("of the source node itself"), "{stderr}");
    // Nothing was written: no standby.signal, the configuration as it was, still a primary.
    assert!(!primary.join("standby.signal").exists());
    assert_eq!(auto_conf(), before);
    let in_recovery = bench
        .lab
        .psql(bench.lab.primary_port(), "SELECT pg_is_in_recovery()")
        .unwrap();
    assert_eq!(in_recovery, "f");

    // A data directory nested inside a running cluster's: refused in every mode, even forced.
    let nested = primary.join("standby");
    let conf = bench.repmgr_conf("item1-nested", &nested, "");
    for extra in [
        &[][..],
        &["--force"],
        &["--without-barman", "--force"],
        &["--replication-conf-only", "--force"],
    ] {
        let output = run(bench, &bench.start_args(&conf, extra));
        let stderr = stderr_text(&output);
        assert_eq!(output.status.code(), Some(13), "{extra:?}: {stderr}");
        let (error, hints) = error_and_hints(&stderr);
        assert!(
            error.contains(&format!(
                "\"{}\" lies inside the data directory \"{}\" of a running PostgreSQL (pid ",
                nested.display(),
                primary.display()
            )),
            "{extra:?}: {error}"
        );
        assert!(hints.iter().all(|h| !h.contains("force")), "{hints:?}");
        assert!(!nested.exists(), "{extra:?} created {}", nested.display());
    }
    assert!(!primary.join("standby.signal").exists());
    assert_eq!(auto_conf(), before);
}

/// Waits (bounded) until one of the two runs has ended; returns (ended, still running).
fn first_to_end(a: &mut Child, b: &mut Child) -> (usize, std::process::ExitStatus) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(status) = a.try_wait().unwrap() {
            return (0, status);
        }
        if let Some(status) = b.try_wait().unwrap() {
            return (1, status);
        }
        assert!(Instant::now() < deadline, "neither run ended");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn item_2_two_runs_never_write_one_data_directory(bench: &Bench) {
    let lab_state = bench.lab.state_dir();
    let other_state = bench.lab.new_dir("state-item2");
    let home = bench.lab.new_dir("home-item2");
    mkdir_as_postgres(bench, &home);
    let link = bench.lab.dir().join("data-link");
    std::os::unix::fs::symlink(bench.lab.dir().join("data"), &link).unwrap();
    for round in 0..5 {
        let name = format!("item2-{round}");
        let data_dir = bench.lab.new_dir(&name);
        let conf = bench.repmgr_conf(&name, &data_dir, "");
        // A: the lab's state directory. B: another state directory (flag, environment, HOME),
        // another spelling of the same directory, or --force.
        let a_args = bench.start_args(&conf, &["--bwlimit", "1000"]);
        let b_dir = match round {
            3 => link.join(data_dir.file_name().unwrap()),
            4 => data_dir.join("..").join(data_dir.file_name().unwrap()),
            _ => data_dir.clone(),
        };
        let mut b_args = bench.start_args(&conf, &["--bwlimit", "1000", "-D"]);
        b_args.push(b_dir.display().to_string());
        if round == 4 {
            b_args.push("--force".into());
        }
        // runuser resets HOME, so the HOME case goes through env(1) under it.
        let (b_state, mut b_command) = match round {
            1 => {
                let mut command =
                    bench.command(&b_args.iter().map(String::as_str).collect::<Vec<_>>());
                command.env("PGREPLICA_STATE_DIR", &other_state);
                (other_state.clone(), command)
            }
            2 => {
                let mut command = bench.lab.command_as_postgres("env");
                command
                    .args(["-u", "PGREPLICA_STATE_DIR", "-u", "XDG_STATE_HOME"])
                    .arg(format!("HOME={}", home.display()))
                    .arg(&bench.binary)
                    .args(&b_args);
                (home.join(".local/state/pgreplica"), command)
            }
            _ => {
                b_args.splice(
                    0..0,
                    strings(&["--state-dir", &other_state.display().to_string()]),
                );
                let command = bench.command(&b_args.iter().map(String::as_str).collect::<Vec<_>>());
                (other_state.clone(), command)
            }
        };
        // Both started within the same second: one after the other, at once.
        let started = Instant::now();
        let mut a = spawn(bench, &a_args);
        let mut b = clone_check::spawn_in_group(&mut b_command).unwrap();
        assert!(started.elapsed() < Duration::from_secs(1));
        let (ended, status) = first_to_end(&mut a, &mut b);
        // Each names its clone after the data directory as it spells it.
        let (a_id, b_id) = (
            CloneId::for_data_dir(&data_dir.display().to_string()),
            CloneId::for_data_dir(&crate_absolute(&b_dir)),
        );
        let (loser, winner, winner_state, winner_id, loser_state, loser_id) = if ended == 0 {
            (&mut a, &mut b, &b_state, &b_id, &lab_state, &a_id)
        } else {
            (&mut b, &mut a, &lab_state, &a_id, &b_state, &b_id)
        };
        let winner_pid = wait_for_pid(winner).expect("the running pgreplica");
        let stderr = stderr_of(loser);
        assert_eq!(status.code(), Some(41), "round {round}: {stderr}");
        assert!(
            stderr.contains(&format!(
                "is being written by another pgreplica run (pid {winner_pid}, state directory \"{}\", clone {winner_id})",
                winner_state.display(),
            )),
            "round {round}: {stderr}"
        );
        assert_hints_name_only_accepted_options(&stderr);
        // Never two writers: the winner still runs, the loser recorded nothing.
        assert!(
            winner.try_wait().unwrap().is_none(),
            "round {round}: the other run ended too"
        );
        assert!(
            !recorded_clones(loser_state).contains(&loser_id.to_string()),
            "round {round}: the refused run left a record"
        );
        kill_group(winner);
        let _ = std::fs::remove_dir_all(&data_dir);
    }
    std::fs::remove_file(&link).unwrap();

    // Two data directories, one WAL directory: locked too, whoever comes second is refused.
    let waldir = bench.lab.new_dir("item2-wal");
    let extra = format!("pg_basebackup_options='--waldir={}'", waldir.display());
    let (first, second) = (bench.lab.new_dir("item2-x"), bench.lab.new_dir("item2-y"));
    let conf_x = bench.repmgr_conf("item2-x", &first, &extra);
    let conf_y = bench.repmgr_conf("item2-y", &second, &extra);
    let mut x = spawn(bench, &bench.start_args(&conf_x, &["--bwlimit", "1000"]));
    let mut y = spawn(bench, &bench.start_args(&conf_y, &["--bwlimit", "1000"]));
    let (ended, status) = first_to_end(&mut x, &mut y);
    let (loser, winner) = if ended == 0 {
        (&mut x, &mut y)
    } else {
        (&mut y, &mut x)
    };
    let stderr = stderr_of(loser);
    assert_eq!(status.code(), Some(41), "{stderr}");
    let winner_pid = wait_for_pid(winner).expect("the running pgreplica");
    assert!(
        stderr.contains(&format!(
            "ERROR: the WAL directory \"{}\" is being written by another pgreplica run (pid {winner_pid}, ",
            waldir.display()
        )),
        "{stderr}"
    );
    assert!(winner.try_wait().unwrap().is_none());
    kill_group(winner);
}

/// `path` made absolute and normalised as pgreplica does it (`..` removed lexically).
fn crate_absolute(path: &Path) -> String {
    pgreplica::request::absolute(path)
        .unwrap()
        .display()
        .to_string()
}

/// The pid of pgreplica under a freshly spawned runuser, once it is there (bounded); through
/// env(1), which execs pgreplica, the pid stays the same.
fn wait_for_pid(child: &Child) -> Option<u32> {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        if let Some(pid) = clone_check::pgreplica_pid(child) {
            return Some(pid);
        }
        if Instant::now() > deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

fn item_3_the_state_directory_never_lies_inside_a_target(bench: &Bench) {
    let data_dir = bench.lab.new_dir("item3");
    mkdir_as_postgres(bench, &data_dir);
    let conf = bench.repmgr_conf("item3", &data_dir, "");
    let inside = data_dir.join("state");
    for extra in [&[][..], &["--force"]] {
        let mut args = strings(&["--state-dir", &inside.display().to_string()]);
        args.extend(bench.start_args(&conf, extra));
        let output = run(bench, &args);
        let stderr = stderr_text(&output);
        assert_eq!(output.status.code(), Some(1), "{extra:?}: {stderr}");
        let (error, hints) = error_and_hints(&stderr);
        assert_eq!(
            error,
            format!(
                "ERROR: the state directory \"{}\" is inside the data directory \"{}\"",
                inside.display(),
                data_dir.display()
            )
        );
        assert!(hints.iter().any(|h| h.contains("--state-dir")), "{hints:?}");
        // Nothing was written: not even the state directory.
        assert_eq!(std::fs::read_dir(&data_dir).unwrap().count(), 0);
    }
    // The WAL directory and a tablespace target are directories it clones into too.
    let waldir = bench.lab.new_dir("item3-wal");
    let target = bench.lab.new_dir("item3-ts");
    for (extra_conf, state, what) in [
        (
            format!("pg_basebackup_options='--waldir={}'", waldir.display()),
            waldir.join("state"),
            format!("the WAL directory \"{}\"", waldir.display()),
        ),
        (
            format!("tablespace_mapping='/srv/elsewhere={}'", target.display()),
            target.join("pgreplica"),
            format!("the tablespace directory \"{}\"", target.display()),
        ),
    ] {
        let data_dir = bench.lab.new_dir("item3-data");
        let conf = bench.repmgr_conf("item3-more", &data_dir, &extra_conf);
        let mut args = strings(&["--state-dir", &state.display().to_string()]);
        args.extend(bench.start_args(&conf, &["--force"]));
        let output = run(bench, &args);
        let stderr = stderr_text(&output);
        assert_eq!(output.status.code(), Some(1), "{stderr}");
        assert!(
            stderr.contains(&format!(
                "ERROR: the state directory \"{}\" is inside {what}",
                state.display()
            )),
            "{stderr}"
        );
        assert!(!state.exists() && !data_dir.exists());
    }
    assert!(!waldir.exists() && !target.exists());
}

fn item_4_a_resume_rechecks_what_prepare_dirs_checked(bench: &Bench) {
    let data_dir = bench.lab.new_dir("item4");
    let conf = bench.repmgr_conf("item4", &data_dir, "");
    let mut child = spawn(bench, &bench.start_args(&conf, &["--bwlimit", "2000"]));
    wait_for_progress(bench, &data_dir, &mut child, 0.3);
    kill_group(&mut child);
    let killed = wait_until_stopped(bench, &data_dir);
    assert_eq!(killed["phase"], "transfer", "{killed}");
    // Meanwhile someone made the directory a cluster of its own, and started it.
    std::fs::remove_dir_all(&data_dir).unwrap();
    let initdb = bench
        .lab
        .command_as_postgres(Path::new(lab::PG_BIN).join("initdb"))
        .args(["-A", "trust", "-D"])
        .arg(&data_dir)
        .output()
        .unwrap();
    assert!(initdb.status.success(), "{}", stderr_text(&initdb));
    let running = bench
        .lab
        .start_standby(&data_dir, lab::free_port())
        .unwrap();
    let output = bench.run(&["clone", "resume", &data_dir.display().to_string()]);
    let stderr = stderr_text(&output);
    assert_eq!(output.status.code(), Some(13), "{stderr}");
    let (error, hints) = error_and_hints(&stderr);
    assert!(
        error.starts_with(&format!(
            "ERROR: PostgreSQL is running in data directory \"{}\" (pid ",
            data_dir.display()
        )),
        "{error}"
    );
    // The stop command names the running server's own pg_ctl, quoted for pasting.
    assert!(
        hints.iter().any(|h| h.contains(&format!(
            "{}/pg_ctl -D {} stop",
            lab::PG_BIN,
            data_dir.display()
        ))),
        "{hints:?}"
    );
    // Nothing was written into the running cluster, and no step ran.
    assert!(!data_dir.join("backup_label").exists());
    assert!(!data_dir.join("standby.signal").exists());
    let after = wait_until_stopped(bench, &data_dir);
    assert_eq!(after["history"], killed["history"]);
    running.stop().unwrap();
    let output = bench.run(&["clone", "forget", &data_dir.display().to_string()]);
    assert!(output.status.success(), "{}", stderr_text(&output));
}

fn item_7_state_files_are_private_and_never_followed(bench: &Bench) {
    // A state directory others may write, or that another user owns: refused, nothing created.
    let shared = bench.lab.new_dir("state-shared");
    mkdir_as_postgres(bench, &shared);
    std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o777)).unwrap();
    let output = bench.run(&[
        "--state-dir",
        &shared.display().to_string(),
        "clone",
        "status",
    ]);
    assert_eq!(output.status.code(), Some(41), "{}", stderr_text(&output));
    assert!(
        stderr_text(&output).starts_with(&format!(
            "ERROR: state directory {} is writable by other users (mode 0777)",
            shared.display()
        )),
        "{}",
        stderr_text(&output)
    );
    assert!(!shared.join("clones").exists());
    let rooted = bench.lab.new_dir("state-root");
    std::fs::create_dir(&rooted).unwrap();
    let output = bench.run(&[
        "--state-dir",
        &rooted.display().to_string(),
        "clone",
        "list",
    ]);
    assert_eq!(output.status.code(), Some(41), "{}", stderr_text(&output));
    assert!(
        stderr_text(&output).contains("belongs to uid 0, not to the user running pgreplica"),
        "{}",
        stderr_text(&output)
    );
    assert!(!rooted.join("clones").exists());

    // A clone record to attack: a conf-only clone of a directory that holds no cluster fails.
    let data_dir = bench.lab.new_dir("item7");
    mkdir_as_postgres(bench, &data_dir);
    let conf = bench.repmgr_conf("item7", &data_dir, "");
    let output = run(
        bench,
        &bench.start_args(&conf, &["--replication-conf-only"]),
    );
    assert_eq!(output.status.code(), Some(13), "{}", stderr_text(&output));
    let id = CloneId::for_data_dir(&data_dir.display().to_string());
    let clone_dir = bench.lab.state_dir().join("clones").join(id.as_str());
    let victim = bench.lab.dir().join("victim");
    bench
        .lab
        .write_file_as_postgres(&victim, "precious\n")
        .unwrap();

    // The lock file replaced by a link to a file the postgres user owns: never written.
    std::fs::remove_file(clone_dir.join("lock")).unwrap();
    std::os::unix::fs::symlink(&victim, clone_dir.join("lock")).unwrap();
    let output = bench.run(&["clone", "status", id.as_str()]);
    let stderr = stderr_text(&output);
    assert_eq!(output.status.code(), Some(41), "{stderr}");
    assert!(
        stderr.contains("it is a symbolic link, and pgreplica never follows one"),
        "{stderr}"
    );
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious\n");
    std::fs::remove_file(clone_dir.join("lock")).unwrap();

    // The snapshot's temporary file as a link: removed, never written through.
    std::os::unix::fs::symlink(&victim, clone_dir.join("status.json.tmp")).unwrap();
    let output = bench.run(&["clone", "resume", id.as_str()]);
    assert_eq!(output.status.code(), Some(13), "{}", stderr_text(&output));
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious\n");
    assert!(!clone_dir.join("status.json.tmp").exists());
    assert!(clone_dir.join("status.json").is_file());

    // The clone's directory writable by others: refused.
    std::fs::set_permissions(&clone_dir, std::fs::Permissions::from_mode(0o777)).unwrap();
    let output = bench.run(&["clone", "status", id.as_str()]);
    assert_eq!(output.status.code(), Some(41), "{}", stderr_text(&output));
    assert!(
        stderr_text(&output).contains(&format!(
            "clone directory {} is writable by other users",
            clone_dir.display()
        )),
        "{}",
        stderr_text(&output)
    );
    std::fs::set_permissions(&clone_dir, std::fs::Permissions::from_mode(0o700)).unwrap();
    let output = bench.run(&["clone", "forget", id.as_str()]);
    assert!(output.status.success(), "{}", stderr_text(&output));
}

fn item_8_a_nul_byte_never_reaches_the_standby_configuration(bench: &Bench) {
    let data_dir = bench.lab.new_dir("item8");
    let conf = bench.repmgr_conf(
        "item8",
        &data_dir,
        "restore_command='barman-wal-restore pg %f\\000 %p'",
    );
    let line = std::fs::read_to_string(&conf)
        .unwrap()
        .lines()
        .position(|l| l.starts_with("restore_command"))
        .unwrap()
        + 1;
    for extra in [&[][..], &["--replication-conf-only", "--force"]] {
        let output = run(bench, &bench.start_args(&conf, extra));
        let stderr = stderr_text(&output);
        assert_eq!(output.status.code(), Some(1), "{stderr}");
        assert!(
            stderr.starts_with(&format!(
                "ERROR: {}:{line}: \"restore_command\" contains a NUL byte, which PostgreSQL cannot read back from the standby's configuration\n",
                conf.display()
            )),
            "{stderr}"
        );
        assert!(!data_dir.exists());
        let id = CloneId::for_data_dir(&data_dir.display().to_string());
        assert!(!recorded_clones(&bench.lab.state_dir()).contains(&id.to_string()));
    }
}

fn item_9_the_final_hint_works_when_pasted(bench: &Bench) {
    // Pasted unquoted, this path would run "touch pwned" in the shell's directory. ($(…) or a
    // double quote would be no test: pg_ctl itself passes -D to a shell in double quotes.)
    let shell_dir = bench.lab.dir().join("data");
    let pwned = shell_dir.join("pwned");
    let data_dir = shell_dir.join("odd dir 'q'; touch pwned");
    // repmgr.conf cannot hold the quote in data_directory; -D can.
    let conf = bench.repmgr_conf("item9", &bench.lab.new_dir("item9-unused"), "");
    let mut args = bench.start_args(&conf, &["-D"]);
    args.push(data_dir.display().to_string());
    let output = run(bench, &args);
    let stderr = stderr_text(&output);
    assert!(output.status.success(), "{stderr}");
    let pasted = stderr
        .lines()
        .find_map(|l| l.strip_prefix("HINT: for example: "))
        .unwrap_or_else(|| panic!("no pg_ctl HINT in {stderr}"));
    assert_eq!(
        pasted,
        format!(
            "{}/pg_ctl -D '{}' start",
            lab::PG_BIN,
            data_dir.display().to_string().replace('\'', "'\\''")
        )
    );
    // Pasted into a shell (with a free port and a log file added), it starts the standby and
    // runs nothing else.
    let port = lab::free_port();
    let log = bench.lab.log_dir().join("item9.log");
    let started = bench
        .lab
        .command_as_postgres("sh")
        .current_dir(&shell_dir)
        .arg("-c")
        .arg(format!("{pasted} -w -o '-p {port}' -l {}", log.display()))
        .output()
        .unwrap();
    assert!(started.status.success(), "{}", stderr_text(&started));
    assert!(!pwned.exists(), "the pasted command ran \"touch pwned\"");
    let in_recovery = bench.lab.psql(port, "SELECT pg_is_in_recovery()").unwrap();
    assert_eq!(in_recovery, "t");
    let stopped = bench
        .lab
        .command_as_postgres(Path::new(lab::PG_BIN).join("pg_ctl"))
        .args(["-w", "-m", "fast", "-D"])
        .arg(&data_dir)
        .arg("stop")
        .output()
        .unwrap();
    assert!(stopped.status.success(), "{}", stderr_text(&stopped));
}
