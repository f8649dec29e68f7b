//! The streaming copy engine (`PGREPLICA_COPY_ENGINE=stream`) in Barman mode, with real
//! processes: a clone SIGKILLed mid-file several times, the kept bytes of a file in flight
//! corrupted between two runs, resumes to a data directory identical to an uninterrupted rsync
//! clone's that streams; an ssh stream killed under a running clone fails the step with ssh's
//! exit code, and a resume finishes the clone; a `--force` into that directory is rsync's.

mod common;

use common::{
    assert_equals_an_uninterrupted_clone_and_streams, debian_lab, kill_group, stderr_of,
    tree_digest, wait_for_progress, wait_until_stopped, Bench,
};
use lab::clone_check;
use pgreplica::transfer::rsync::RESUME_PARTIAL_MIN_BYTES;
use pgreplica::transfer::stream::COPY_ENGINE_ENV;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::Path;
use std::process::Child;

/// Spawns `pgreplica ARGS` with the streaming engine, as postgres, in its own process group.
fn spawn_stream(bench: &Bench, args: &[&str]) -> Child {
    let mut command = bench.command(args);
    command.env(COPY_ENGINE_ENV, "stream");
    clone_check::spawn_in_group(&mut command).expect("spawn pgreplica")
}

/// The engine's temporary files under `dir` (named as rsync names its own), with their sizes.
fn temp_files(dir: &Path) -> Vec<(String, u64)> {
    clone_check::rsync_temp_files(&tree_digest(dir))
        .into_iter()
        .map(|t| {
            let len = std::fs::metadata(dir.join(&t)).map_or(0, |m| m.len());
            (t, len)
        })
        .collect()
}

/// Flips one byte in the middle of `file`.
fn corrupt(file: &Path) {
    let mut f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(file)
        .unwrap();
    let middle = f.metadata().unwrap().len() / 2;
    let mut byte = [0_u8];
    f.seek(SeekFrom::Start(middle)).unwrap();
    f.read_exact(&mut byte).unwrap();
    f.seek(SeekFrom::Start(middle)).unwrap();
    f.write_all(&[!byte[0]]).unwrap();
}

#[test]
fn killed_mid_file_with_its_kept_bytes_corrupted_the_stream_resume_equals_an_rsync_clone() {
    let bench = Bench::start(debian_lab());
    let data_dir = bench.lab.new_dir("resumed");
    let conf = bench.repmgr_conf("node2", &data_dir, "");
    let dir_arg = data_dir.display().to_string();
    // Throttled so that the kills land inside the transfer, mid-file for the big table.
    let args = bench.start_args(&conf, &["--jobs", "2", "--bwlimit", "3000"]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut child = spawn_stream(&bench, &args);
    let mut logs = String::new();
    let mut corrupted = None;
    let mut mid_file_kills = 0;
    let mut not_done_at_last_kill = 0;
    for fraction in [0.2, 0.45, 0.7] {
        wait_for_progress(&bench, &data_dir, &mut child, fraction);
        kill_group(&mut child);
        logs.push_str(&stderr_of(&mut child));
        let status = wait_until_stopped(&bench, &data_dir);
        assert_eq!(status["phase"], "transfer", "{status}");
        let files = &status["progress"];
        not_done_at_last_kill =
            files["bytes_total"].as_u64().unwrap() - files["bytes_done"].as_u64().unwrap();
        let temps = temp_files(&data_dir);
        if !temps.is_empty() {
            mid_file_kills += 1;
        }
        // The first big part a kill leaves gets a bad byte: the resume must not trust it.
        if corrupted.is_none() {
            if let Some((temp, _)) = temps
                .iter()
                .filter(|(_, len)| *len >= RESUME_PARTIAL_MIN_BYTES)
                .max_by_key(|(_, len)| *len)
            {
                corrupt(&data_dir.join(temp));
                corrupted = Some(temp.clone());
            }
        }
        child = spawn_stream(&bench, &["clone", "resume", &dir_arg]);
    }
    assert!(mid_file_kills >= 1, "no kill landed mid-file");
    let status = child.wait().unwrap();
    let stderr = stderr_of(&mut child);
    logs.push_str(&stderr);
    assert!(status.success(), "final resume failed: {stderr}");
    assert!(logs.contains("tar stream(s)"), "{logs}");
    let corrupted = corrupted.expect("no kill left a part of a big file to corrupt");
    assert!(
        logs.contains("partially copied file(s) where they stopped"),
        "the kept part of {corrupted} was not taken up: {logs}"
    );
    assert!(
        logs.contains("do not match backup_manifest's checksum: it is copied again whole"),
        "the corrupt part of {corrupted} went unnoticed: {logs}"
    );

    let status = bench.status(&data_dir);
    assert_eq!(status["phase"], "done");
    let transfer = &status["facts"]["transfer"];
    let sent = transfer["bytes_sent"].as_u64().unwrap();
    let kept = transfer["bytes_kept"].as_u64().unwrap();
    // The last run sent what was not done at the last kill (less what it kept), plus, at worst,
    // a file whose kept part was bad sent again whole.
    assert!(
        sent + kept <= not_done_at_last_kill + 2 * transfer["bytes_total"].as_u64().unwrap() / 3,
        "re-sent {sent} bytes and kept {kept}, but only {not_done_at_last_kill} were not done"
    );
    assert!(temp_files(&data_dir).is_empty());
    let verified = &status["facts"]["verification"];
    assert!(
        verified["method"] == "manifest",
        "VerifyCopy did not verify against backup_manifest: {verified}"
    );
    common::assert_verified_once(&logs, &data_dir);

    assert_equals_an_uninterrupted_clone_and_streams(
        &bench,
        &data_dir,
        status["backup_id"].as_str().unwrap(),
    );
}

/// Pids of the `ssh` processes below `ancestor` that carry the engine's tar stream.
fn tar_streams_below(ancestor: u32) -> Vec<i32> {
    let mut parent_of = std::collections::HashMap::new();
    let mut args_of = std::collections::HashMap::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        // pid (comm) state ppid …: comm may hold spaces, so read after its closing parenthesis.
        let Some(ppid) = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().nth(1))
            .and_then(|p| p.parse::<i32>().ok())
        else {
            continue;
        };
        parent_of.insert(pid, ppid);
        let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
        args_of.insert(pid, String::from_utf8_lossy(&cmdline).replace('\0', " "));
    }
    let below = |mut pid: i32| loop {
        match parent_of.get(&pid) {
            Some(&p) if p == ancestor as i32 => return true,
            Some(&p) if p > 1 => pid = p,
            _ => return false,
        }
    };
    args_of
        .iter()
        .filter(|(pid, args)| {
            args.starts_with("ssh ") && args.contains("tar --create") && below(**pid)
        })
        .map(|(pid, _)| *pid)
        .collect()
}

#[test]
fn a_killed_ssh_stream_fails_the_step_with_ssh_s_code_and_a_resume_finishes() {
    let bench = Bench::start(debian_lab());
    let data_dir = bench.lab.new_dir("standby");
    let conf = bench.repmgr_conf("node2", &data_dir, "");
    let args = bench.start_args(&conf, &["--bwlimit", "3000", "--retries", "0"]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut child = spawn_stream(&bench, &args);
    wait_for_progress(&bench, &data_dir, &mut child, 0.3);
    let streams = tar_streams_below(child.id());
    assert!(!streams.is_empty(), "no ssh carrying a tar stream found");
    for pid in streams {
        // SAFETY: kill(2) on a descendant of our own child.
        unsafe { libc::kill(pid, libc::SIGKILL) };
    }
    let status = child.wait().unwrap();
    let stderr = stderr_of(&mut child);
    assert_eq!(status.code(), Some(12), "{stderr}");
    assert!(
        stderr.contains("ERROR: the ssh session copying from")
            || stderr.contains("ERROR: the copy stream from"),
        "{stderr}"
    );
    let record = wait_until_stopped(&bench, &data_dir);
    assert_eq!(record["phase"], "transfer");
    assert_eq!(record["last_error"]["exit_code"], 12);

    let output = {
        let mut command = bench.command(&["clone", "resume", &data_dir.display().to_string()]);
        command.env(COPY_ENGINE_ENV, "stream");
        command.output().unwrap()
    };
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let status = bench.status(&data_dir);
    assert_eq!(status["phase"], "done");

    // Into a used directory (--force) rsync copies, whatever the setting: its delta wins.
    let mut again = args.clone();
    again.push("--force");
    let output = {
        let mut command = bench.command(&again);
        command.env(COPY_ENGINE_ENV, "stream");
        command.output().unwrap()
    };
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    let streams = format!("({} rsync stream(s))", pgreplica::request::default_jobs());
    assert!(stderr.contains(&streams), "{stderr}");
    let standby = bench.start_streaming_standby(&data_dir);
    bench.assert_replicates(&standby);
}
