//! Watching and checking a pgreplica clone from the outside, the way the integration tests and
//! the chaos campaign both need to: run pgreplica as postgres in its own process group, read
//! `clone status --json`, kill it as a crash would (the whole group with SIGKILL, SIGTERM to
//! pgreplica alone, or only its rsync processes), wait until the killed clone's lock is free,
//! and compare data directories by content digest.
//!
//! It must not decide what a test asserts: it reports what it sees (a status, a digest, the
//! paths that differ) and the caller judges. Everything is bounded by a deadline.

use std::collections::BTreeMap;
use std::io;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::Lab;

/// Files pgreplica writes into a data directory itself after the copy: two clones of one backup
/// hold the same content in them, but each with its own mtime.
pub const WRITTEN_BY_PGREPLICA: [&str; 2] = ["postgresql.auto.conf", "standby.signal"];

/// A data directory's digest: relative path → `file SIZE MODE HASH mtime T`, `dir MODE` or
/// `link -> TARGET`.
pub type TreeDigest = BTreeMap<String, String>;

/// `pgreplica ARGS` as postgres in `lab` (its state directory, PostgreSQL on PATH).
pub fn pgreplica(lab: &Lab, binary: &Path, args: &[&str]) -> Command {
    let mut command = lab.command_as_postgres(binary);
    command.args(args);
    command
}

/// Spawns `command` in a process group of its own (so [`kill_group`] reaches pgreplica and
/// everything it forked, and nothing else), stdout discarded, stderr piped for [`stderr_of`].
pub fn spawn_in_group(command: &mut Command) -> io::Result<Child> {
    command
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .process_group(0)
        .spawn()
}

/// The clone of `data_dir` as `clone status --json DATA_DIR` shows it (its first clone), or what
/// went wrong (status's stderr, or an unparsable answer).
pub fn clone_status(lab: &Lab, binary: &Path, data_dir: &Path) -> Result<Value, String> {
    let dir = data_dir.display().to_string();
    let output = pgreplica(lab, binary, &["clone", "status", "--json", &dir])
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run pgreplica clone status: {e}"))?;
    if !output.status.success() {
        return Err(format!(
            "pgreplica clone status {dir} failed ({}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        ));
    }
    let value: Value = serde_json::from_slice(&output.stdout)
        .map_err(|e| format!("clone status --json printed no JSON: {e}"))?;
    match &value["clones"][0] {
        Value::Null => Err(format!("clone status knows no clone of {dir}")),
        clone => Ok(clone.clone()),
    }
}

/// Polls [`clone_status`] until no process holds the clone (`running: false`) and returns that
/// status. A SIGKILLed pgreplica is reaped by whoever inherits it, and its rsync guardians exit
/// only once their rsyncs are gone: both take a moment after the kill.
pub fn wait_until_stopped(
    lab: &Lab,
    binary: &Path,
    data_dir: &Path,
    timeout: Duration,
) -> Result<Value, String> {
    let deadline = Instant::now() + timeout;
    loop {
        let last = match clone_status(lab, binary, data_dir) {
            Ok(status) if status["running"] == false => return Ok(status),
            Ok(status) => format!("still running as pid {}", status["pid"]),
            Err(e) => e,
        };
        if Instant::now() >= deadline {
            return Err(format!(
                "the clone of {} still holds its lock after {timeout:?} ({last})",
                data_dir.display()
            ));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// SIGKILLs `child`'s whole process group — pgreplica and whatever it forked, as a power cut
/// or the OOM killer would — and reaps `child`. `child` must lead its group ([`spawn_in_group`]).
pub fn kill_group(child: &mut Child) -> io::Result<()> {
    let pid = libc::pid_t::try_from(child.id())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "pid out of range"))?;
    // SAFETY: kill(2) on the process group our own child leads.
    if unsafe { libc::kill(-pid, libc::SIGKILL) } != 0 {
        let error = io::Error::last_os_error();
        // ESRCH: the group is already gone (the clone ended by itself); reaping is all there is.
        if error.raw_os_error() != Some(libc::ESRCH) {
            return Err(error);
        }
    }
    child.wait().map(drop)
}

/// Sends SIGTERM to pgreplica itself — the child of `runuser` that `child` is — as systemd or
/// an operator's `kill` would. Signalling runuser instead would make runuser die of it rather
/// than pass pgreplica's exit code on. False when pgreplica is not (or no longer) there.
pub fn terminate_pgreplica(child: &Child) -> bool {
    let Some(pid) = pgreplica_pid(child) else {
        return false;
    };
    crate::exec::signal(pid, libc::SIGTERM)
}

/// The pid of pgreplica itself under the `runuser` that `child` is (the pid pgreplica names in
/// its messages and status); None when it is not (or no longer) there.
pub fn pgreplica_pid(child: &Child) -> Option<u32> {
    crate::exec::children(child.id()).into_iter().next()
}

/// SIGKILLs only the rsync processes copying into `data_dir` (a dropped link, an operator's
/// `pkill`): `pkill -KILL -f '^rsync .* DATA_DIR/$'`. True when some were found.
pub fn kill_rsyncs(data_dir: &Path) -> io::Result<bool> {
    let status = Command::new("pkill")
        .args([
            "-KILL",
            "-f",
            &format!("^rsync .* {}/$", data_dir.display()),
        ])
        .status()?;
    Ok(status.success())
}

/// Collects a child's stderr after it ended.
pub fn stderr_of(child: &mut Child) -> String {
    use std::io::Read;
    let mut text = String::new();
    if let Some(mut stderr) = child.stderr.take() {
        let _ = stderr.read_to_string(&mut text);
    }
    text
}

/// Content digest of every file of a data directory (and of the trees its symlinks point to),
/// by relative path, with size, mode, a hash of the content and the mtime; symlinks by target.
/// Files PostgreSQL itself rewrites at start are not excluded: compare standbys not started.
pub fn tree_digest(root: &Path) -> io::Result<TreeDigest> {
    let mut out = BTreeMap::new();
    walk(root, root, &mut out)?;
    Ok(out)
}

fn walk(root: &Path, dir: &Path, out: &mut TreeDigest) -> io::Result<()> {
    let mut entries = std::fs::read_dir(dir)?
        .map(|e| e.map(|e| e.path()))
        .collect::<io::Result<Vec<_>>>()?;
    entries.sort();
    for path in entries {
        let relative = path
            .strip_prefix(root)
            .unwrap_or(&path)
            .display()
            .to_string();
        let meta = std::fs::symlink_metadata(&path)?;
        if meta.file_type().is_symlink() {
            let target = std::fs::read_link(&path)?;
            out.insert(relative, format!("link -> {}", target.display()));
        } else if meta.is_dir() {
            out.insert(
                relative,
                format!("dir {:o}", meta.permissions().mode() & 0o7777),
            );
            walk(root, &path, out)?;
        } else {
            let bytes = std::fs::read(&path)?;
            out.insert(
                relative,
                format!(
                    "file {} {:o} {:016x} mtime {}",
                    bytes.len(),
                    meta.permissions().mode() & 0o7777,
                    fnv1a64(&bytes),
                    meta.mtime()
                ),
            );
        }
    }
    Ok(())
}

fn fnv1a64(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, byte| {
        (hash ^ u64::from(*byte)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// The paths whose digest differs between `a` and `b` (present in one only, or with another
/// value), ignoring the mtimes of [`WRITTEN_BY_PGREPLICA`]: what makes two clones of one backup
/// not identical.
pub fn differing_paths(a: &TreeDigest, b: &TreeDigest) -> Vec<String> {
    let comparable = |path: &str, value: &str| -> String {
        if WRITTEN_BY_PGREPLICA.contains(&path) {
            value.split(" mtime").next().unwrap_or(value).to_string()
        } else {
            value.to_string()
        }
    };
    let mut differing: Vec<String> = a
        .iter()
        .filter(|(path, value)| {
            b.get(*path)
                .is_none_or(|other| comparable(path, other) != comparable(path, value))
        })
        .map(|(path, _)| path.clone())
        .chain(b.keys().filter(|path| !a.contains_key(*path)).cloned())
        .collect();
    differing.sort();
    differing
}

/// The files a `backup_manifest` lists, with their sizes and checksums (not their times), and
/// its WAL ranges, as one string: what two clones of one incremental chain share, whose
/// manifests (written by pg_combinebackup) differ in the times of the files it reconstructed.
pub fn manifest_listing(data_dir: &Path) -> Result<String, String> {
    let path = data_dir.join("backup_manifest");
    let text =
        std::fs::read_to_string(&path).map_err(|e| format!("read {}: {e}", path.display()))?;
    let manifest: Value =
        serde_json::from_str(&text).map_err(|e| format!("{} is not JSON: {e}", path.display()))?;
    let mut files: Vec<String> = manifest["Files"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|f| format!("{} {} {}", f["Path"], f["Size"], f["Checksum"]))
        .collect();
    files.sort();
    Ok(format!("{} {}", files.join(","), manifest["WAL-Ranges"]))
}

/// rsync's temporary files (`.name.XXXXXX`) in a digest: the trace of a file killed mid-copy.
pub fn rsync_temp_files(digest: &TreeDigest) -> Vec<String> {
    digest
        .keys()
        .filter(|path| {
            let name = path.rsplit('/').next().unwrap_or(path);
            name.starts_with('.') && name.len() > 8 && name.as_bytes()[name.len() - 7] == b'.'
        })
        .cloned()
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn digest(entries: &[(&str, &str)]) -> TreeDigest {
        entries
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn differences_ignore_only_the_mtimes_pgreplica_writes() {
        let a = digest(&[
            ("base/1", "file 8 600 01 mtime 5"),
            ("standby.signal", "file 0 600 00 mtime 7"),
            ("only-a", "dir 700"),
        ]);
        let b = digest(&[
            ("base/1", "file 8 600 01 mtime 6"),
            ("standby.signal", "file 0 600 00 mtime 9"),
            ("only-b", "dir 700"),
        ]);
        assert_eq!(differing_paths(&a, &b), ["base/1", "only-a", "only-b"]);
        assert!(differing_paths(&a, &a).is_empty());
    }

    #[test]
    fn rsync_temporaries_are_recognised_by_name() {
        let d = digest(&[
            ("base/1/.16384.AbC123", "file"),
            ("base/1/16384", "file"),
            (".hidden", "file"),
        ]);
        assert_eq!(rsync_temp_files(&d), ["base/1/.16384.AbC123"]);
    }
}
