//! Resumes that must not be fooled, against the real lab (issue 9, items 5 and 6): a data
//! directory deleted or replaced between a kill and `clone resume`, or files removed from it,
//! are noticed and what is missing is copied again; free space is checked on each target's file
//! system before the first byte, and `restore_command` is tested; a disk that fills up during
//! the copy stops it with exit 13 naming the device, and `clone resume` finishes once space is
//! freed; a full state directory is a clear error that leaves the store intact. Every clone
//! that finishes here equals an uninterrupted clone of the same backup, file for file.
//!
//! Full disks are real: small tmpfs file systems, mounted and unmounted by the test (it runs as
//! root), each a few dozen MiB. One lab for all of it.

mod common;

use common::{
    debian_lab, kill_group, spawn, stderr_of, stderr_text, tree_digest, wait_for_copy,
    wait_for_progress, wait_until_stopped, Bench,
};
use lab::clone_check;
use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;

#[test]
fn resumes_are_not_fooled_and_disks_fill_up_cleanly() {
    let bench = Bench::start(debian_lab());
    let reference = Reference::clone(&bench);
    item_5_a_replaced_directory_is_noticed_and_refilled(&bench, &reference);
    item_6_space_and_restore_command_are_checked_before_the_first_byte(&bench, &reference);
}

/// An uninterrupted clone of the lab's backup, to compare the others with.
struct Reference {
    dir: PathBuf,
    backup_id: String,
    bytes: u64,
}

impl Reference {
    fn clone(bench: &Bench) -> Reference {
        let dir = bench.lab.new_dir("reference");
        let conf = conf(bench, "reference", &dir, "");
        let output = run(bench, &bench.start_args(&conf, &[]));
        assert!(output.status.success(), "{}", stderr_text(&output));
        let status = bench.status(&dir);
        Reference {
            backup_id: status["backup_id"].as_str().unwrap().to_string(),
            bytes: status["facts"]["transfer"]["bytes_total"].as_u64().unwrap(),
            dir,
        }
    }

    /// Asserts that `dir` holds exactly what the reference holds.
    fn assert_equal(&self, dir: &Path) {
        let differing = clone_check::differing_paths(&tree_digest(dir), &tree_digest(&self.dir));
        assert!(
            differing.is_empty(),
            "{} differs from the uninterrupted clone in {differing:?}",
            dir.display()
        );
    }
}

/// repmgr.conf `NAME.conf` for node 2 named `node2` whatever the file (the standby's
/// application_name lands in postgresql.auto.conf, which must equal the reference's).
fn conf(bench: &Bench, name: &str, data_dir: &Path, extra: &str) -> PathBuf {
    let path = bench.repmgr_conf(name, data_dir, extra);
    let text = std::fs::read_to_string(&path)
        .unwrap()
        .replace(&format!("node_name='{name}'"), "node_name='node2'");
    bench.lab.write_file_as_postgres(&path, &text).unwrap();
    path
}

fn run(bench: &Bench, args: &[String]) -> std::process::Output {
    bench.run(&args.iter().map(String::as_str).collect::<Vec<_>>())
}

fn resume(bench: &Bench, data_dir: &Path) -> std::process::Output {
    bench.run(&["clone", "resume", &data_dir.display().to_string()])
}

/// Starts a throttled clone of the pinned backup into `data_dir` and SIGKILLs it once
/// `fraction` of its bytes are copied.
fn start_and_kill(
    bench: &Bench,
    reference: &Reference,
    data_dir: &Path,
    conf: &Path,
    fraction: f64,
) {
    let args = bench.start_args(
        conf,
        &["--bwlimit", "3000", "--backup-id", &reference.backup_id],
    );
    let mut child = spawn(bench, &args);
    wait_for_progress(bench, data_dir, &mut child, fraction);
    kill_group(&mut child);
    let status = wait_until_stopped(bench, data_dir);
    assert_eq!(status["phase"], "transfer", "{status}");
}

fn outcomes(status: &serde_json::Value) -> Vec<String> {
    status["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["outcome"].as_str().unwrap().to_string())
        .collect()
}

fn item_5_a_replaced_directory_is_noticed_and_refilled(bench: &Bench, reference: &Reference) {
    // Deleted after the kill: the resume says so, prepares it again and copies everything.
    let deleted = bench.lab.new_dir("item5-deleted");
    let conf_deleted = conf(bench, "item5-deleted", &deleted, "");
    start_and_kill(bench, reference, &deleted, &conf_deleted, 0.4);
    std::fs::remove_dir_all(&deleted).unwrap();
    let output = resume(bench, &deleted);
    let stderr = stderr_text(&output);
    assert!(output.status.success(), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "WARNING: \"{}\" no longer exists (it was removed after PrepareDirs prepared it)",
            deleted.display()
        )),
        "{stderr}"
    );
    assert!(
        stderr.contains("NOTICE: preparing the directories again"),
        "{stderr}"
    );
    let status = bench.status(&deleted);
    assert!(
        outcomes(&status).contains(&"dirs_replaced".to_string()),
        "{status}"
    );
    reference.assert_equal(&deleted);

    // Replaced by another directory (mode 0755, as mkdir makes it): noticed, made 0700, refilled.
    let replaced = bench.lab.new_dir("item5-replaced");
    let conf_replaced = conf(bench, "item5-replaced", &replaced, "");
    start_and_kill(bench, reference, &replaced, &conf_replaced, 0.4);
    let old = replaced.with_file_name("item5-replaced.old");
    std::fs::rename(&replaced, &old).unwrap();
    let made = bench
        .lab
        .command_as_postgres("mkdir")
        .arg(&replaced)
        .status()
        .unwrap();
    assert!(made.success());
    let output = resume(bench, &replaced);
    let stderr = stderr_text(&output);
    assert!(output.status.success(), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "WARNING: \"{}\" is not the directory PrepareDirs prepared (it was removed or replaced since)",
            replaced.display()
        )),
        "{stderr}"
    );
    assert_eq!(std::fs::metadata(&replaced).unwrap().mode() & 0o777, 0o700);
    reference.assert_equal(&replaced);
    // The old directory was left alone.
    assert!(old.join("PG_VERSION").exists() || old.join("base").exists());

    // Files removed by hand from a directory that stayed: the store's done marks are not
    // trusted over the directory; what is missing is sent again.
    let pruned = bench.lab.new_dir("item5-pruned");
    let conf_pruned = conf(bench, "item5-pruned", &pruned, "");
    start_and_kill(bench, reference, &pruned, &conf_pruned, 0.6);
    let killed = wait_until_stopped(bench, &pruned);
    assert!(
        killed["progress"]["files_done"].as_u64().unwrap() > 0,
        "{killed}"
    );
    // Every file copied so far goes; the directories (and the record's marks) stay.
    remove_files(&pruned);
    let output = resume(bench, &pruned);
    let stderr = stderr_text(&output);
    assert!(output.status.success(), "{stderr}");
    assert!(
        stderr.contains("file(s) recorded as copied are missing from the target or differ from the backup: they are copied again"),
        "{stderr}"
    );
    reference.assert_equal(&pruned);
}

/// Removes every regular file under `dir`, keeping the directories.
fn remove_files(dir: &Path) {
    let mut pending = vec![dir.to_path_buf()];
    while let Some(next) = pending.pop() {
        for entry in std::fs::read_dir(next).unwrap().flatten() {
            let meta = entry.metadata().unwrap();
            if meta.is_dir() {
                pending.push(entry.path());
            } else {
                std::fs::remove_file(entry.path()).unwrap();
            }
        }
    }
}

/// A tmpfs of `bytes` mounted on `dir` for postgres (mode 0700), unmounted when dropped.
struct Tmpfs {
    dir: PathBuf,
}

impl Tmpfs {
    fn mount(bench: &Bench, name: &str, bytes: u64) -> Tmpfs {
        let dir = bench.lab.new_dir(name);
        std::fs::create_dir(&dir).unwrap();
        let owner = std::fs::metadata(bench.lab.state_dir()).unwrap();
        let mounted = Command::new("mount")
            .args(["-t", "tmpfs", "-o"])
            .arg(format!(
                "size={bytes},uid={},gid={},mode=0700",
                owner.uid(),
                owner.gid()
            ))
            .arg("tmpfs")
            .arg(&dir)
            .status()
            .expect("mount (the tests run as root)");
        assert!(
            mounted.success(),
            "cannot mount a tmpfs on {}",
            dir.display()
        );
        Tmpfs { dir }
    }

    /// Fills the file system with `filler` (as root) until it is full: bounded by its size.
    fn fill(&self) -> PathBuf {
        let filler = self.dir.join("filler");
        let mut file = std::fs::File::create(&filler).unwrap();
        let chunk = vec![0_u8; 1 << 20];
        loop {
            match file.write(&chunk) {
                Ok(0) => break,
                Ok(_) => {}
                Err(e) if e.raw_os_error() == Some(libc::ENOSPC) => break,
                Err(e) => panic!("filling {}: {e}", filler.display()),
            }
        }
        filler
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let unmounted = Command::new("umount").arg(&self.dir).status();
        if !unmounted.is_ok_and(|s| s.success()) {
            let _ = Command::new("umount").arg("-l").arg(&self.dir).status();
        }
    }
}

fn item_6_space_and_restore_command_are_checked_before_the_first_byte(
    bench: &Bench,
    reference: &Reference,
) {
    // Too small from the start: refused before the first byte, naming the device.
    let small = Tmpfs::mount(bench, "item6-small", 8 << 20);
    let data_dir = small.dir.join("data");
    let conf_small = conf(bench, "item6-small", &data_dir, "");
    let output = run(bench, &bench.start_args(&conf_small, &[]));
    let stderr = stderr_text(&output);
    assert_eq!(output.status.code(), Some(13), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "ERROR: not enough free disk for \"{}\" on device tmpfs mounted on {}: ",
            data_dir.display(),
            small.dir.display()
        )),
        "{stderr}"
    );
    assert_eq!(
        std::fs::read_dir(&data_dir).unwrap().count(),
        0,
        "bytes were copied"
    );
    drop(small);

    // A restore_command that fails its test: refused before anything is prepared.
    let data_dir = bench.lab.new_dir("item6-restore");
    let conf_restore = conf(
        bench,
        "item6-restore",
        &data_dir,
        "restore_command='barman-wal-restore -U barman --port 1 127.0.0.1 pg %f %p'",
    );
    let output = run(bench, &bench.start_args(&conf_restore, &[]));
    let stderr = stderr_text(&output);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("ERROR: restore_command \"barman-wal-restore -U barman --port 1 127.0.0.1 pg %f %p\" fails its test"),
        "{stderr}"
    );
    assert!(!data_dir.exists());

    // Room at the start, filled up during the copy: exit 13 naming the device; the resume
    // finishes once space is freed.
    let room = reference.bytes + (24 << 20);
    let disk = Tmpfs::mount(bench, "item6-disk", room);
    let data_dir = disk.dir.join("data");
    let conf_disk = conf(bench, "item6-disk", &data_dir, "");
    let args = bench.start_args(
        &conf_disk,
        &["--bwlimit", "3000", "--backup-id", &reference.backup_id],
    );
    let mut child = spawn(bench, &args);
    wait_for_progress(bench, &data_dir, &mut child, 0.3);
    let filler = disk.fill();
    let status = child.wait().unwrap();
    let stderr = stderr_of(&mut child);
    assert_eq!(status.code(), Some(13), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "ERROR: the file system of \"{}\" is full (device tmpfs mounted on {})",
            data_dir.display(),
            disk.dir.display()
        )),
        "{stderr}"
    );
    assert!(
        stderr.contains("HINT: free space on it, then continue with \""),
        "{stderr}"
    );
    let stopped = wait_until_stopped(bench, &data_dir);
    assert_eq!(stopped["phase"], "transfer");
    assert_eq!(stopped["last_error"]["exit_code"], 13);
    std::fs::remove_file(&filler).unwrap();
    let output = resume(bench, &data_dir);
    assert!(output.status.success(), "{}", stderr_text(&output));
    reference.assert_equal(&data_dir);
    drop(disk);

    // The state directory's file system full: a clear error, the store intact.
    let state = Tmpfs::mount(bench, "item6-state", 32 << 20);
    let data_dir = bench.lab.new_dir("item6-state-data");
    let conf_state = conf(bench, "item6-state-data", &data_dir, "");
    let mut args = vec!["--state-dir".to_string(), state.dir.display().to_string()];
    args.extend(bench.start_args(
        &conf_state,
        &["--bwlimit", "3000", "--backup-id", &reference.backup_id],
    ));
    let mut command = bench.command(&args.iter().map(String::as_str).collect::<Vec<_>>());
    let mut child = clone_check::spawn_in_group(&mut command).unwrap();
    let status_args = [
        "--state-dir",
        &state.dir.display().to_string(),
        "clone",
        "status",
        "--json",
        &data_dir.display().to_string(),
    ];
    wait_for_copy(bench, &status_args, &mut child);
    let filler = state.fill();
    let status = child.wait().unwrap();
    let stderr = stderr_of(&mut child);
    assert_eq!(status.code(), Some(41), "{stderr}");
    assert!(stderr.contains("No space left on device"), "{stderr}");
    assert!(
        stderr.contains("HINT: free space on the state directory's file system, then run the command again: the last checkpoint is intact"),
        "{stderr}"
    );
    std::fs::remove_file(&filler).unwrap();
    // Intact: readable, at Transfer, and the resume finishes the clone.
    let output = bench.run(&status_args);
    assert!(output.status.success(), "{}", stderr_text(&output));
    let value: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(value["clones"][0]["damaged"], false, "{value}");
    assert_eq!(value["clones"][0]["phase"], "transfer", "{value}");
    let output = bench.run(&[
        "--state-dir",
        &state.dir.display().to_string(),
        "clone",
        "resume",
        &data_dir.display().to_string(),
    ]);
    assert!(output.status.success(), "{}", stderr_text(&output));
    reference.assert_equal(&data_dir);
}
