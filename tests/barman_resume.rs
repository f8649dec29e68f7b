//! Crash safety in Barman mode, with real processes: pgreplica is SIGKILLed during Transfer at
//! several points (one of them mid-file), a newer backup appears meanwhile, and `clone resume`
//! finishes with a data directory identical to an uninterrupted clone's, having re-sent only the
//! files that were in flight (less what of them had arrived, for big files). The dead socket of
//! the first run's shared ssh connection does not stop the resume, and the run that finishes
//! leaves no socket and no master.

mod common;

use common::{
    assert_equals_an_uninterrupted_clone_and_streams, debian_lab, kill_group, processes_naming,
    spawn, ssh_sockets, stderr_of, tree_digest, wait_for_progress, wait_until_stopped, Bench,
};
use lab::clone_check;
use pgreplica::transfer::rsync::RESUME_PARTIAL_MIN_BYTES;
use std::path::Path;

/// rsync's temporary files under `dir`: the trace of a file killed mid-copy.
fn temp_files(dir: &Path) -> Vec<String> {
    clone_check::rsync_temp_files(&tree_digest(dir))
}

/// Whether a run's log says it tidied what an interrupted transfer left: partial files removed,
/// or kept to be continued where they stopped.
fn tidied_partials(log: &str) -> bool {
    log.contains("partial file(s) left by an interrupted transfer") || continued_partials(log)
}

fn continued_partials(log: &str) -> bool {
    log.contains("partially copied file(s) where they stopped")
}

#[test]
fn killed_three_times_during_transfer_resume_matches_an_uninterrupted_clone() {
    let bench = Bench::start(debian_lab());
    let data_dir = bench.lab.new_dir("resumed");
    let conf = bench.repmgr_conf("node2", &data_dir, "");
    // Throttled so that the kills land inside the transfer, mid-file for the big table.
    let args = bench.start_args(&conf, &["--jobs", "2", "--bwlimit", "3000"]);
    let mut child = spawn(&bench, &args);
    let mut kills = Vec::new();
    let mut mid_file_kills = 0;
    // Kills that left at least a MiB of a file: the next run must continue it, not restart it.
    let mut big_partial_kills = 0;
    let mut pinned = None;
    let mut resume_logs = String::new();
    for (round, fraction) in [0.15, 0.45, 0.75].into_iter().enumerate() {
        wait_for_progress(&bench, &data_dir, &mut child, fraction);
        kill_group(&mut child);
        if round > 0 {
            resume_logs.push_str(&stderr_of(&mut child));
        }
        let status = wait_until_stopped(&bench, &data_dir);
        assert_eq!(status["phase"], "transfer", "{status}");
        assert_eq!(status["running"], false);
        let backup_id = status["backup_id"].as_str().unwrap().to_string();
        assert_eq!(*pinned.get_or_insert(backup_id.clone()), backup_id);
        let done = status["progress"]["bytes_done"].as_u64().unwrap();
        let temps = temp_files(&data_dir);
        if !temps.is_empty() {
            mid_file_kills += 1;
        }
        let big_temp = |t: &String| {
            std::fs::metadata(data_dir.join(t)).is_ok_and(|m| m.len() >= RESUME_PARTIAL_MIN_BYTES)
        };
        if temps.iter().any(big_temp) {
            big_partial_kills += 1;
        }
        kills.push(done);
        // The first run shared one ssh connection, whose socket the kill left in the clone's
        // directory; its master is killed too, so the socket is a dead one, which the resume
        // must survive (it removes it, and its rsyncs, which only use a master, connect on
        // their own).
        let sockets = ssh_sockets(&bench);
        assert!(sockets.len() <= 1, "{sockets:?}");
        if round == 0 {
            assert_eq!(sockets.len(), 1, "the first run shared no connection");
            let masters = processes_naming(&sockets[0]);
            assert!(!masters.is_empty(), "no ssh master for {sockets:?}");
            for pid in masters {
                // SAFETY: kill(2) of the ssh master this test's clone started.
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
            assert!(sockets[0].exists(), "the dead master's socket stays behind");
        }
        if round == 0 {
            // A newer backup appears: the resumed clone must still restore the pinned one.
            let newer = bench.lab.take_backup().unwrap();
            assert_ne!(Some(&newer), pinned.as_ref());
        }
        // The last resume says at DEBUG how it closes its shared connection.
        let mut resume = ["clone", "resume", &data_dir.display().to_string()]
            .map(String::from)
            .to_vec();
        if round == 2 {
            resume.push("-v".to_string());
        }
        child = spawn(&bench, &resume);
    }
    assert!(
        mid_file_kills >= 1,
        "no kill landed mid-file (done bytes at the kills: {kills:?})"
    );
    let done_before_last_resume = *kills.last().unwrap();
    let status = child.wait().unwrap();
    let stderr = stderr_of(&mut child);
    assert!(status.success(), "final resume failed: {stderr}");
    // Every file checked once: during one of the copies, or at the end when its check was lost.
    common::assert_verified_once(&stderr, &data_dir);
    resume_logs.push_str(&stderr);
    // What the mid-file kill left behind was tidied by the run after it.
    assert!(tidied_partials(&resume_logs), "{resume_logs}");
    assert!(
        big_partial_kills == 0 || continued_partials(&resume_logs),
        "{big_partial_kills} kill(s) left big partial files that no resume continued: {resume_logs}"
    );

    let status = bench.status(&data_dir);
    assert_eq!(status["phase"], "done");
    assert_eq!(status["backup_id"].as_str(), pinned.as_deref());
    let transfer = &status["facts"]["transfer"];
    let total = transfer["bytes_total"].as_u64().unwrap();
    let sent = transfer["bytes_sent"].as_u64().unwrap();
    let kept = transfer["bytes_kept"].as_u64().unwrap();
    // Only what was not done at the last kill is sent again, less what of the files in flight
    // was kept (plus rsync's protocol overhead: file lists and checksums, a few bytes per file).
    let not_done = total - done_before_last_resume;
    assert!(
        sent + kept <= not_done + 64 * 1024,
        "re-sent {sent} bytes and kept {kept}, but only {not_done} were not done"
    );
    let crashed = status["history"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|t| t["outcome"] == "crashed")
        .count();
    assert_eq!(crashed, 3, "{}", status["history"]);
    assert!(temp_files(&data_dir).is_empty());
    // The run that finished closed its shared connection — asked its master over the socket,
    // in ssh's own protocol — : no socket, no master left.
    assert!(
        stderr.contains("DEBUG: the shared ssh connection's master was asked to exit"),
        "{stderr}"
    );
    let sockets = ssh_sockets(&bench);
    assert!(sockets.is_empty(), "{sockets:?}");
    let clone_dirs = bench.lab.state_dir().join("clones");
    assert!(
        processes_naming(&clone_dirs).is_empty(),
        "an ssh master outlived the run"
    );

    // The same backup cloned without interruption gives the same directory, file for file.
    assert_equals_an_uninterrupted_clone_and_streams(&bench, &data_dir, pinned.as_deref().unwrap());
}

#[test]
fn sigterm_and_a_killed_rsync_stop_the_clone_resumably() {
    let bench = Bench::start(debian_lab());
    let data_dir = bench.lab.new_dir("standby");
    let conf = bench.repmgr_conf("node2", &data_dir, "");
    let args = bench.start_args(&conf, &["--bwlimit", "3000", "--retries", "0"]);

    // SIGTERM stops at a safe point with the "interrupted, resumable" code.
    let mut child = spawn(&bench, &args);
    wait_for_progress(&bench, &data_dir, &mut child, 0.1);
    // pgreplica itself, not runuser (which would die of the signal instead of passing on
    // pgreplica's exit code), as systemd or an operator's `kill` would do.
    let pgreplica = std::process::Command::new("pgrep")
        .args(["-P", &child.id().to_string()])
        .output()
        .unwrap();
    let pid: i32 = String::from_utf8_lossy(&pgreplica.stdout)
        .trim()
        .parse()
        .expect("pgreplica's pid under runuser");
    // SAFETY: kill(2) on our own grandchild.
    unsafe { libc::kill(pid, libc::SIGTERM) };
    let status = child.wait().unwrap();
    let stderr = stderr_of(&mut child);
    let record = wait_until_stopped(&bench, &data_dir);
    assert_eq!(status.code(), Some(40), "{stderr}");
    assert!(stderr.contains("HINT: continue it with"), "{stderr}");
    assert_eq!(record["phase"], "transfer");
    let last = record["history"]
        .as_array()
        .unwrap()
        .last()
        .unwrap()
        .clone();
    assert_eq!(last["outcome"], "interrupted", "{last}");
    // Whatever rsync had in flight is cleaned up by the next run.
    let left_behind = temp_files(&data_dir);

    // Killing the rsync processes only (a dropped link, an operator) fails the step: exit 2.
    let mut child = spawn(
        &bench,
        &[
            "clone",
            "resume",
            "--retries",
            "0",
            &data_dir.display().to_string(),
        ]
        .map(String::from),
    );
    wait_for_progress(&bench, &data_dir, &mut child, 0.5);
    let killed = std::process::Command::new("pkill")
        .args([
            "-KILL",
            "-f",
            &format!("^rsync .* {}/$", data_dir.display()),
        ])
        .status()
        .unwrap();
    assert!(killed.success(), "no rsync process found to kill");
    let status = child.wait().unwrap();
    let stderr = stderr_of(&mut child);
    assert_eq!(status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("ERROR: rsync"), "{stderr}");
    assert!(
        left_behind.is_empty() || tidied_partials(&stderr),
        "{left_behind:?} not cleaned: {stderr}"
    );
    let record = wait_until_stopped(&bench, &data_dir);
    assert_eq!(record["phase"], "transfer");
    assert_eq!(record["last_error"]["exit_code"], 2);

    let output = bench.run(&["clone", "resume", &data_dir.display().to_string()]);
    assert!(output.status.success());
    let standby = bench.start_streaming_standby(&data_dir);
    bench.assert_replicates(&standby);
}
