//! Records that must never lock the operator in, against the real lab (issue 9, items 10–16):
//! a start stopped by a wrong setting before copying anything is replaced by the corrected
//! start, and its resume names what changed and how to take it; every command a HINT prints
//! works when pasted (state directory included) and no HINT names an option its command
//! refuses; a finished clone's record survives a start that fails its checks; `clone list`,
//! `clone forget` and damaged records shown as damaged; `clone ensure` for automation; node_id
//! required in a repmgr.conf; `--dry-run` predicting the unfinished-clone refusal.
//!
//! One lab for all of them (each item is a function, run in turn).

mod common;

use common::{
    assert_hints_name_only_accepted_options, debian_lab, kill_group, recorded_clones, spawn,
    stderr_of, stderr_text, tree_digest, wait_for_copy, wait_for_progress, wait_until_stopped,
    Bench,
};
use lab::clone_check;
use states::CloneId;
use std::path::{Path, PathBuf};
use std::process::Output;

#[test]
fn records_never_lock_the_operator_in() {
    let bench = Bench::start(debian_lab());
    let finished = item_10_a_failed_start_is_replaced_by_the_corrected_one(&bench);
    let other = item_11_every_hint_command_works_when_pasted(&bench);
    item_12_a_finished_record_survives_a_start_that_fails_its_checks(&bench, &finished);
    item_13_list_forget_and_damaged_records(&bench, &finished, &other);
    item_14_ensure_is_one_command_to_run_again_and_again(&bench);
    item_15_node_id_is_required_in_a_repmgr_conf(&bench);
    item_16_the_dry_run_predicts_the_unfinished_clone_refusal(&bench);
}

fn run(bench: &Bench, args: &[String]) -> Output {
    bench.run(&args.iter().map(String::as_str).collect::<Vec<_>>())
}

fn id_of(dir: &Path) -> CloneId {
    CloneId::for_data_dir(&dir.display().to_string())
}

/// Rewrites `from` into `to` in the repmgr.conf at `conf`.
fn edit_conf(bench: &Bench, conf: &Path, from: &str, to: &str) {
    let text = std::fs::read_to_string(conf).unwrap();
    assert!(text.contains(from), "{text}");
    bench
        .lab
        .write_file_as_postgres(conf, &text.replace(from, to))
        .unwrap();
}

/// Runs `command` (a HINT's pasted command line) through a shell as postgres, without the
/// lab's PGREPLICA_STATE_DIR: what the command needs, it must say itself.
fn paste(bench: &Bench, command: &str) -> Output {
    let output = bench
        .lab
        .command_as_postgres("sh")
        .env_remove("PGREPLICA_STATE_DIR")
        .arg("-c")
        .arg(command)
        .output()
        .unwrap();
    eprintln!("$ {command}\n{}", stderr_text(&output));
    output
}

/// The command quoted in `hint` after `marker`.
fn quoted_after<'a>(hint: &'a str, marker: &str) -> &'a str {
    let rest = &hint[hint
        .find(marker)
        .unwrap_or_else(|| panic!("{marker} in {hint}"))
        + marker.len()..];
    rest.trim_start_matches('"').trim_end_matches('"')
}

fn item_10_a_failed_start_is_replaced_by_the_corrected_one(bench: &Bench) -> PathBuf {
    let data_dir = bench.lab.new_dir("item10");
    let conf = bench.repmgr_conf("item10", &data_dir, "");
    let server = format!("barman_server='{}'", bench.lab.barman_server());
    edit_conf(bench, &conf, &server, "barman_server='nosuch'");
    let output = run(bench, &bench.start_args(&conf, &[]));
    let stderr = stderr_text(&output);
    assert_eq!(output.status.code(), Some(19), "{stderr}");
    assert_hints_name_only_accepted_options(&stderr);
    let failed = bench.status(&data_dir);
    assert_eq!(failed["phase"], "verify_backup");

    // The operator corrects repmgr.conf and resumes: every changed value is named, with the way
    // to take it; the resume itself finishes what was recorded (and fails again).
    edit_conf(bench, &conf, "barman_server='nosuch'", &server);
    let output = bench.run(&["clone", "resume", &data_dir.display().to_string()]);
    let stderr = stderr_text(&output);
    assert_eq!(output.status.code(), Some(19), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "WARNING: barman_server: the clone recorded \"nosuch\", now \"{}\"",
            bench.lab.barman_server()
        )),
        "{stderr}"
    );
    assert_hints_name_only_accepted_options(&stderr);
    assert!(
        stderr
            .lines()
            .filter(|l| l.starts_with("HINT: "))
            .all(|l| !l.contains("--force")),
        "{stderr}"
    );
    let hint = stderr
        .lines()
        .find(|l| l.contains("to take the new ones, start it again"))
        .unwrap_or_else(|| panic!("no way out named: {stderr}"));
    let start = quoted_after(hint, "replaces it): ");
    assert!(
        start.contains(&format!(
            "--state-dir {} clone start -f {} -h 127.0.0.1 -p {} -U barman -d postgres -D {}",
            bench.lab.state_dir().display(),
            conf.display(),
            bench.lab.primary_port(),
            data_dir.display()
        )),
        "{start}"
    );
    // The printed start, pasted: it replaces the failed record and clones.
    let output = paste(bench, start);
    let stderr = stderr_text(&output);
    assert!(output.status.success(), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "NOTICE: replacing clone {}, which stopped at step VerifyBackup before copying anything: ",
            id_of(&data_dir)
        )),
        "{stderr}"
    );
    let done = bench.status(&data_dir);
    assert_eq!(done["phase"], "done");
    assert_eq!(done["history"][0]["step"], "verify_backup");
    assert_eq!(done["history"][0]["outcome"], "succeeded");

    // A wrong --backup-id and a wrong -p: the same way out, plain clone start corrected.
    let data_dir_2 = bench.lab.new_dir("item10-more");
    let conf_2 = bench.repmgr_conf("item10-more", &data_dir_2, "");
    let mut wrong_port = bench.start_args(&conf_2, &[]);
    let port = wrong_port.iter().position(|a| a == "-p").unwrap() + 1;
    // Nothing listens on a port lab::free_port hands out.
    wrong_port[port] = lab::free_port().to_string();
    for (wrong, code) in [
        (
            bench.start_args(&conf_2, &["--backup-id", "20000101T000000"]),
            19,
        ),
        (wrong_port, 6),
    ] {
        let output = run(bench, &wrong);
        assert_eq!(output.status.code(), Some(code), "{}", stderr_text(&output));
        assert_hints_name_only_accepted_options(&stderr_text(&output));
    }
    let output = run(bench, &bench.start_args(&conf_2, &[]));
    let stderr = stderr_text(&output);
    assert!(output.status.success(), "{stderr}");
    // The wrong -p never replaced the first failed record (its own checks failed first), so
    // the corrected start replaces that one.
    assert!(
        stderr.contains("which stopped at step VerifyBackup before copying anything: no backup \"20000101T000000\""),
        "{stderr}"
    );
    data_dir
}

fn item_11_every_hint_command_works_when_pasted(bench: &Bench) -> PathBuf {
    let state = bench.lab.new_dir("state-item11");
    let data_dir = bench.lab.new_dir("item11");
    let conf = bench.repmgr_conf("item11", &data_dir, "");
    let mut args = vec!["--state-dir".to_string(), state.display().to_string()];
    args.extend(bench.start_args(&conf, &["--bwlimit", "2000"]));
    let mut command = bench.command(&args.iter().map(String::as_str).collect::<Vec<_>>());
    let mut child = clone_check::spawn_in_group(&mut command).unwrap();
    let status = [
        "--state-dir",
        &state.display().to_string(),
        "clone",
        "status",
        "--json",
        &data_dir.display().to_string(),
    ];
    wait_for_copy(bench, &status, &mut child);
    assert!(clone_check::terminate_pgreplica(&child));
    let ended = child.wait().unwrap();
    let stderr = stderr_of(&mut child);
    assert_eq!(ended.code(), Some(40), "{stderr}");
    assert_hints_name_only_accepted_options(&stderr);
    let hint = stderr
        .lines()
        .find(|l| l.starts_with("HINT: continue it with \""))
        .unwrap_or_else(|| panic!("{stderr}"));
    let resume = quoted_after(hint, "continue it with ");
    assert_eq!(
        resume,
        format!(
            "{} --state-dir {} clone resume {}",
            bench.binary.display(),
            state.display(),
            id_of(&data_dir)
        )
    );
    // Pasted as printed, without the environment that chose the state directory: it finishes.
    let output = paste(bench, resume);
    assert!(output.status.success(), "{}", stderr_text(&output));
    data_dir
}

fn item_12_a_finished_record_survives_a_start_that_fails_its_checks(
    bench: &Bench,
    finished: &Path,
) {
    let before = bench.status(finished);
    assert_eq!(before["phase"], "done");
    let conf = bench.lab.dir().join("item10.conf");
    let output = run(bench, &bench.start_args(&conf, &[]));
    let stderr = stderr_text(&output);
    assert_eq!(output.status.code(), Some(13), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "ERROR: directory \"{}\" exists but is not empty",
            finished.display()
        )),
        "{stderr}"
    );
    assert!(
        stderr.contains("HINT: empty it, or run clone start with -F/--force"),
        "{stderr}"
    );
    // The finished record is as it was: no failed record took its place (a stopped clone's
    // status shows its record and nothing else).
    let after = bench.status(finished);
    assert_eq!(after, before);
    // A start that passes its checks replaces it.
    let output = run(bench, &bench.start_args(&conf, &["--force"]));
    let stderr = stderr_text(&output);
    assert!(output.status.success(), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "NOTICE: replacing the finished clone {}",
            id_of(finished)
        )),
        "{stderr}"
    );
    let replaced = bench.status(finished);
    assert_ne!(replaced["created_at"], before["created_at"]);
}

fn item_13_list_forget_and_damaged_records(bench: &Bench, finished: &Path, other: &Path) {
    // A damaged record beside readable ones.
    let broken_dir = bench.lab.new_dir("item13-broken");
    let conf = bench.repmgr_conf("item13-broken", &broken_dir, "");
    let output = run(
        bench,
        &bench.start_args(&conf, &["--replication-conf-only"]),
    );
    assert_eq!(output.status.code(), Some(13), "{}", stderr_text(&output));
    let broken = id_of(&broken_dir);
    let clone_dir = bench.lab.state_dir().join("clones").join(broken.as_str());
    bench
        .lab
        .write_file_as_postgres(&clone_dir.join("checkpoint.json"), "{not json")
        .unwrap();

    let output = bench.run(&["clone", "status"]);
    assert!(output.status.success(), "{}", stderr_text(&output));
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(
        text.contains(&format!("Clone {broken}  DAMAGED\n")),
        "{text}"
    );
    assert!(
        text.contains(&format!(
            "Clone {}  \"{}\"",
            id_of(finished),
            finished.display()
        )),
        "{text}"
    );
    let output = bench.run(&["clone", "status", "--json"]);
    assert!(output.status.success(), "{}", stderr_text(&output));
    let value: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    let clones = value["clones"].as_array().unwrap();
    let damaged: Vec<&serde_json::Value> = clones.iter().filter(|c| c["damaged"] == true).collect();
    assert_eq!(damaged.len(), 1, "{value}");
    assert_eq!(damaged[0]["clone_id"], broken.as_str());
    assert!(damaged[0]["error"]["message"]
        .as_str()
        .unwrap()
        .contains("checkpoint marker"));
    assert!(clones
        .iter()
        .any(|c| c["clone_id"] == id_of(finished).as_str() && c["phase"] == "done"));
    // Asked for by name, the damaged one is shown and the exit code says it.
    let output = bench.run(&["clone", "status", broken.as_str()]);
    assert_eq!(output.status.code(), Some(41), "{}", stderr_text(&output));
    assert!(String::from_utf8_lossy(&output.stdout).contains("DAMAGED"));

    // One line per clone.
    let output = bench.run(&["clone", "list"]);
    assert!(output.status.success(), "{}", stderr_text(&output));
    let list = String::from_utf8_lossy(&output.stdout).into_owned();
    let ids = recorded_clones(&bench.lab.state_dir());
    assert_eq!(list.lines().count(), ids.len(), "{list}");
    let line_of = |id: &CloneId| {
        list.lines()
            .find(|l| l.starts_with(id.as_str()))
            .unwrap_or_else(|| panic!("{id} not listed: {list}"))
            .to_string()
    };
    assert!(line_of(&broken).contains("DAMAGED"));
    let done_line = line_of(&id_of(finished));
    assert!(
        done_line.contains("Done") && done_line.contains("complete"),
        "{done_line}"
    );
    assert!(done_line.ends_with(&finished.display().to_string()));

    // Forget: the record goes, the data directory stays as it is.
    let digest = tree_digest(other);
    let other_state = bench.lab.dir().join("data/state-item11");
    let output = bench.run(&[
        "--state-dir",
        &other_state.display().to_string(),
        "clone",
        "forget",
        &other.display().to_string(),
    ]);
    assert!(output.status.success(), "{}", stderr_text(&output));
    assert!(
        stderr_text(&output).contains("the data directory is untouched"),
        "{}",
        stderr_text(&output)
    );
    assert!(!recorded_clones(&other_state).contains(&id_of(other).to_string()));
    assert_eq!(tree_digest(other), digest);
    let output = bench.run(&["clone", "forget", broken.as_str()]);
    assert!(output.status.success(), "{}", stderr_text(&output));
    assert!(!recorded_clones(&bench.lab.state_dir()).contains(&broken.to_string()));
    let output = bench.run(&["clone", "forget", broken.as_str()]);
    assert_eq!(output.status.code(), Some(42), "{}", stderr_text(&output));

    // A running clone is never forgotten.
    let running_dir = bench.lab.new_dir("item13-running");
    let conf = bench.repmgr_conf("item13-running", &running_dir, "");
    let mut child = spawn(bench, &bench.start_args(&conf, &["--bwlimit", "2000"]));
    wait_for_progress(bench, &running_dir, &mut child, 0.1);
    let output = bench.run(&["clone", "forget", &running_dir.display().to_string()]);
    let stderr = stderr_text(&output);
    assert_eq!(output.status.code(), Some(41), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "clone {} is being run by another pgreplica process (pid ",
            id_of(&running_dir)
        )),
        "{stderr}"
    );
    assert!(child.try_wait().unwrap().is_none(), "the clone was stopped");
    kill_group(&mut child);
    wait_until_stopped(bench, &running_dir);
    let output = bench.run(&["clone", "forget", &running_dir.display().to_string()]);
    assert!(output.status.success(), "{}", stderr_text(&output));
}

fn item_14_ensure_is_one_command_to_run_again_and_again(bench: &Bench) {
    let data_dir = bench.lab.new_dir("item14");
    let conf = bench.repmgr_conf("item14", &data_dir, "");
    let ensure = |extra: &[&str]| {
        let mut args = bench.start_args(&conf, extra);
        args[1] = "ensure".into();
        args
    };
    // Nothing yet: it clones.
    let output = run(bench, &ensure(&[]));
    assert!(output.status.success(), "{}", stderr_text(&output));
    let done = bench.status(&data_dir);
    assert_eq!(done["phase"], "done");
    let digest = tree_digest(&data_dir);
    // Done, and the directory holds it: nothing to do, nothing written.
    let output = run(bench, &ensure(&[]));
    let stderr = stderr_text(&output);
    assert!(output.status.success(), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "NOTICE: clone {} of \"{}\" is complete and the directory still holds it: nothing to do",
            id_of(&data_dir),
            data_dir.display()
        )),
        "{stderr}"
    );
    assert_eq!(tree_digest(&data_dir), digest);
    assert_eq!(bench.status(&data_dir), done);
    // The directory no longer holds it: cloned again.
    std::fs::remove_dir_all(&data_dir).unwrap();
    let output = run(bench, &ensure(&[]));
    let stderr = stderr_text(&output);
    assert!(output.status.success(), "{stderr}");
    assert!(
        stderr.contains("no longer holds the finished clone"),
        "{stderr}"
    );
    assert!(clone_check::differing_paths(&tree_digest(&data_dir), &digest).is_empty());
    // Killed midway: the next ensure resumes it.
    let resumed = bench.lab.new_dir("item14-killed");
    let conf_killed = bench.repmgr_conf("item14-killed", &resumed, "");
    let mut args = bench.start_args(&conf_killed, &["--bwlimit", "2000"]);
    args[1] = "ensure".into();
    let mut child = spawn(bench, &args);
    wait_for_progress(bench, &resumed, &mut child, 0.3);
    kill_group(&mut child);
    wait_until_stopped(bench, &resumed);
    args.truncate(args.len() - 2);
    let output = run(bench, &args);
    let stderr = stderr_text(&output);
    assert!(output.status.success(), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "NOTICE: resuming the unfinished clone {}",
            id_of(&resumed)
        )),
        "{stderr}"
    );
    // It said which recorded value differs from what it was given (the dropped --bwlimit).
    assert!(
        stderr.contains("WARNING: --bwlimit: the clone recorded \"2000\", now (not set)"),
        "{stderr}"
    );
    assert_eq!(bench.status(&resumed)["phase"], "done");
}

fn item_15_node_id_is_required_in_a_repmgr_conf(bench: &Bench) {
    let data_dir = bench.lab.new_dir("item15");
    let conf = bench.repmgr_conf("item15", &data_dir, "");
    edit_conf(bench, &conf, "node_id=2\n", "");
    let output = run(bench, &bench.start_args(&conf, &[]));
    let stderr = stderr_text(&output);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.starts_with(&format!(
            "ERROR: {}: \"node_id\": required parameter was not found\n",
            conf.display()
        )),
        "{stderr}"
    );
    assert!(!data_dir.exists());
    assert!(!recorded_clones(&bench.lab.state_dir()).contains(&id_of(&data_dir).to_string()));
    // From the command line alone (no repmgr.conf anywhere), nothing asks for it.
    let mut args = vec!["clone".to_string(), "start".to_string()];
    args.extend(bench.lab.source_args());
    args.extend(
        [
            "-D",
            &data_dir.display().to_string(),
            "--without-barman",
            "--dry-run",
        ]
        .map(String::from),
    );
    let output = run(bench, &args);
    assert!(output.status.success(), "{}", stderr_text(&output));
    assert!(!data_dir.exists());
}

fn item_16_the_dry_run_predicts_the_unfinished_clone_refusal(bench: &Bench) {
    let data_dir = bench.lab.new_dir("item16");
    let conf = bench.repmgr_conf("item16", &data_dir, "");
    let mut child = spawn(bench, &bench.start_args(&conf, &["--bwlimit", "2000"]));
    wait_for_progress(bench, &data_dir, &mut child, 0.3);
    kill_group(&mut child);
    let before = wait_until_stopped(bench, &data_dir);
    let digest = tree_digest(&data_dir);
    let output = run(bench, &bench.start_args(&conf, &["--dry-run"]));
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert_eq!(
        output.status.code(),
        Some(42),
        "{stdout}{}",
        stderr_text(&output)
    );
    let first_problem = stdout
        .lines()
        .find(|l| l.starts_with("  PROBLEM  "))
        .unwrap_or_else(|| panic!("{stdout}"));
    assert!(
        first_problem.starts_with("  PROBLEM  clone record: ERROR 1 of "),
        "{stdout}"
    );
    let dry_stderr = stderr_text(&output);
    assert!(
        dry_stderr.contains(&format!(
            "\nERROR: an unfinished clone of \"{}\" exists (clone {}, at step Transfer)",
            data_dir.display(),
            id_of(&data_dir)
        )),
        "{dry_stderr}"
    );
    // The real run meets exactly that.
    let output = run(bench, &bench.start_args(&conf, &[]));
    let stderr = stderr_text(&output);
    assert_eq!(output.status.code(), Some(42), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "ERROR: an unfinished clone of \"{}\" exists (clone {}, at step Transfer)",
            data_dir.display(),
            id_of(&data_dir)
        )),
        "{stderr}"
    );
    assert_hints_name_only_accepted_options(&stderr);
    // With --force, the dry run foresees the discard and passes.
    let output = run(bench, &bench.start_args(&conf, &["--dry-run", "--force"]));
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(output.status.success(), "{stdout}{}", stderr_text(&output));
    assert!(
        stdout.contains("  ok       clone record: discarding the unfinished clone"),
        "{stdout}"
    );
    // Nothing changed: the record and the directory are as the kill left them.
    assert_eq!(wait_until_stopped(bench, &data_dir), before);
    assert_eq!(tree_digest(&data_dir), digest);
}
