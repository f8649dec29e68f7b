//! Running the lab's external programs: with a deadline, output captured, as another user, plus
//! the small file-ownership helpers that go with running things as `postgres` and `barman`.
//! It must not interpret what programs print: callers decide what an exit status means.

use std::ffi::OsStr;
use std::fs::File;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::LabError;

/// Where `runuser` lives on Debian (usr-merged); an absolute path so PATH cannot change it.
pub(crate) const RUNUSER: &str = "/usr/sbin/runuser";
/// `getent`, used to look users up the way the system does (NSS), not by parsing /etc/passwd.
pub(crate) const GETENT: &str = "/usr/bin/getent";

/// Builds `runuser -u USER -- PROGRAM`, run from `/` so a cwd the user cannot enter (root's
/// home, a target directory) never breaks it.
pub(crate) fn as_user(user: &str, program: impl AsRef<OsStr>) -> Command {
    let mut cmd = Command::new(RUNUSER);
    cmd.args(["-u", user, "--"]).arg(program).current_dir("/");
    cmd
}

/// Runs `cmd` to completion (stdin from /dev/null), killing it after `timeout`. Returns its
/// output whatever the exit status; Err only when it cannot be started or overran `timeout`.
///
/// Output goes to files, not pipes: programs that leave daemons behind (`pg_ctl start`,
/// `barman cron`, `sshd`) would otherwise hold a pipe open and hang the reader.
pub(crate) fn output(cmd: &mut Command, what: &str, timeout: Duration) -> Result<Output, LabError> {
    let (out_path, out) = capture_file("out", what)?;
    let (err_path, err) = capture_file("err", what)?;
    let spawned = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::from(out))
        .stderr(Stdio::from(err))
        .spawn();
    let result = spawned
        .map_err(|e| {
            LabError::new(what, format!("cannot run {}: {e}", describe(cmd)))
                .hint("run `cargo xtask install` as root to install the lab's programs")
        })
        .and_then(|mut child| wait_with_deadline(&mut child, timeout, what, cmd));
    let stdout = std::fs::read(&out_path).unwrap_or_default();
    let stderr = std::fs::read(&err_path).unwrap_or_default();
    // Best effort: a leftover capture file in /tmp is harmless.
    let _ = std::fs::remove_file(&out_path);
    let _ = std::fs::remove_file(&err_path);
    let status = result.map_err(|e| e.detail(tail(&String::from_utf8_lossy(&stderr), 20)))?;
    Ok(Output {
        status,
        stdout,
        stderr,
    })
}

/// Like [`output`], but a non-zero exit status is an error carrying the tail of the output.
pub(crate) fn checked(
    cmd: &mut Command,
    what: &str,
    timeout: Duration,
) -> Result<Output, LabError> {
    let out = output(cmd, what, timeout)?;
    if out.status.success() {
        Ok(out)
    } else {
        Err(failed(what, cmd, &out))
    }
}

/// The error for a command that ran and failed: its status and the tail of what it printed.
pub(crate) fn failed(what: &str, cmd: &Command, out: &Output) -> LabError {
    LabError::new(what, format!("{} failed ({})", describe(cmd), out.status))
        .detail(tail(&String::from_utf8_lossy(&out.stderr), 30))
        .detail(tail(&String::from_utf8_lossy(&out.stdout), 15))
}

/// A short, readable rendering of a command for messages: its program and arguments, each
/// quoted for a shell where needed ([`shell_quote`]).
pub fn describe(cmd: &Command) -> String {
    std::iter::once(cmd.get_program())
        .chain(cmd.get_args())
        .map(|a| shell_quote(&a.to_string_lossy()))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Quotes `word` for a POSIX shell: unchanged when it is plainly safe, else single-quoted.
pub fn shell_quote(word: &str) -> String {
    let safe = !word.is_empty()
        && word
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"@%+=:,./_-".contains(&b));
    if safe {
        word.to_string()
    } else {
        format!("'{}'", word.replace('\'', r"'\''"))
    }
}

/// The last `lines` lines of `text`.
pub fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// The last `lines` lines of the file at `path`, prefixed by its name; empty when unreadable.
pub(crate) fn file_tail(path: &Path, lines: usize) -> String {
    match std::fs::read(path) {
        Ok(bytes) if !bytes.is_empty() => format!(
            "{}:\n{}",
            path.display(),
            tail(&String::from_utf8_lossy(&bytes), lines)
        ),
        _ => String::new(),
    }
}

/// Polls `ready` until it returns true or `timeout` passes. An `Err` from `ready` counts as
/// "not yet" (a server still starting refuses connections) and is reported if time runs out.
pub fn wait_for(
    what: &str,
    timeout: Duration,
    mut ready: impl FnMut() -> Result<bool, LabError>,
) -> Result<(), LabError> {
    let deadline = Instant::now() + timeout;
    let mut pause = Duration::from_millis(5);
    loop {
        let last = match ready() {
            Ok(true) => return Ok(()),
            Ok(false) => None,
            Err(e) => Some(e),
        };
        if Instant::now() >= deadline {
            let err = LabError::new(what, format!("still not done after {timeout:?}"));
            return Err(match last {
                Some(e) => err.detail(format!("last error: {e}")),
                None => err,
            });
        }
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(200));
    }
}

/// The uid and gid of a local user.
pub(crate) fn user_ids(user: &str) -> Result<(u32, u32), LabError> {
    let out = Command::new(GETENT)
        .args(["passwd", user])
        .output()
        .map_err(|e| LabError::io("users", format!("cannot run {GETENT}"), e))?;
    let line = String::from_utf8_lossy(&out.stdout);
    let fields: Vec<&str> = line.trim().split(':').collect();
    match (out.status.success(), fields.get(2), fields.get(3)) {
        (true, Some(uid), Some(gid)) => match (uid.parse(), gid.parse()) {
            (Ok(uid), Ok(gid)) => Ok((uid, gid)),
            _ => Err(LabError::new(
                "users",
                format!("getent passwd {user}: bad entry {line:?}"),
            )),
        },
        _ => Err(
            LabError::new("users", format!("user {user} does not exist")).hint(
                "run `cargo xtask install` as root (the postgresql and barman packages create it)",
            ),
        ),
    }
}

/// Gives `path` to `user` (and the user's group) with `mode`.
pub(crate) fn own(path: &Path, user: &str, mode: u32) -> Result<(), LabError> {
    let (uid, gid) = user_ids(user)?;
    std::os::unix::fs::chown(path, Some(uid), Some(gid))
        .map_err(|e| LabError::io("files", format!("chown {user} {}", path.display()), e))?;
    set_mode(path, mode)
}

/// Sets the permission bits of `path`.
pub(crate) fn set_mode(path: &Path, mode: u32) -> Result<(), LabError> {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .map_err(|e| LabError::io("files", format!("chmod {mode:o} {}", path.display()), e))
}

/// Creates directory `path` owned by `user` (root when None) with `mode`.
pub(crate) fn make_dir(path: &Path, user: Option<&str>, mode: u32) -> Result<(), LabError> {
    std::fs::create_dir_all(path)
        .map_err(|e| LabError::io("files", format!("mkdir {}", path.display()), e))?;
    match user {
        Some(user) => own(path, user, mode),
        None => set_mode(path, mode),
    }
}

/// Writes `text` to `path`, owned by `user` (root when None) with `mode`.
pub(crate) fn write_file(
    path: &Path,
    text: &str,
    user: Option<&str>,
    mode: u32,
) -> Result<(), LabError> {
    std::fs::write(path, text)
        .map_err(|e| LabError::io("files", format!("write {}", path.display()), e))?;
    match user {
        Some(user) => own(path, user, mode),
        None => set_mode(path, mode),
    }
}

/// Sends `signal` to process `pid`; false when there is no such process.
pub(crate) fn signal(pid: u32, signal: i32) -> bool {
    let Ok(pid) = libc::pid_t::try_from(pid) else {
        return false;
    };
    // SAFETY: kill(2) has no memory-safety preconditions; pid is a process the lab started.
    unsafe { libc::kill(pid, signal) == 0 }
}

/// Every process and its parent, from /proc.
fn parents() -> Vec<(u32, u32)> {
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let child: u32 = entry.file_name().to_str()?.parse().ok()?;
            let stat = std::fs::read_to_string(entry.path().join("stat")).ok()?;
            // Field 4, after the command name, which may hold spaces and parentheses.
            let parent = stat
                .rsplit_once(')')?
                .1
                .split_whitespace()
                .nth(1)?
                .parse()
                .ok()?;
            Some((child, parent))
        })
        .collect()
}

/// The processes whose parent is `pid`.
pub(crate) fn children(pid: u32) -> Vec<u32> {
    parents()
        .into_iter()
        .filter(|&(_, parent)| parent == pid)
        .map(|(child, _)| child)
        .collect()
}

/// Every process descended from `pid` (children, their children …).
pub(crate) fn descendants(pid: u32) -> Vec<u32> {
    let parents = parents();
    let mut found = Vec::new();
    let mut frontier = vec![pid];
    while let Some(parent) = frontier.pop() {
        for &(child, of) in &parents {
            if of == parent && !found.contains(&child) {
                found.push(child);
                frontier.push(child);
            }
        }
    }
    found
}

/// True when the current process runs as root.
pub fn is_root() -> bool {
    // SAFETY: geteuid(2) cannot fail and touches no memory.
    unsafe { libc::geteuid() == 0 }
}

fn capture_file(kind: &str, what: &str) -> Result<(PathBuf, File), LabError> {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let path = std::env::temp_dir().join(format!(
        "pgreplica-lab-{}-{}.{kind}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ));
    let file = File::options()
        .write(true)
        .create_new(true)
        .open(&path)
        .map_err(|e| LabError::io(what, format!("create {}", path.display()), e))?;
    Ok((path, file))
}

fn wait_with_deadline(
    child: &mut Child,
    timeout: Duration,
    what: &str,
    cmd: &Command,
) -> Result<ExitStatus, LabError> {
    let deadline = Instant::now() + timeout;
    let mut pause = Duration::from_millis(1);
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return Ok(status),
            Ok(None) => {}
            Err(e) => return Err(LabError::io(what, format!("wait for {}", describe(cmd)), e)),
        }
        if Instant::now() >= deadline {
            // SIGTERM first: runuser forwards it to the program, SIGKILL would orphan it.
            signal(child.id(), libc::SIGTERM);
            let grace = Instant::now() + Duration::from_secs(5);
            while Instant::now() < grace && matches!(child.try_wait(), Ok(None)) {
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
            return Err(LabError::new(
                what,
                format!(
                    "{} did not finish within {timeout:?}; stopped it",
                    describe(cmd)
                ),
            ));
        }
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(50));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shell_quote_leaves_plain_words_and_quotes_the_rest() {
        assert_eq!(
            shell_quote("/tmp/lab-1/barman.conf"),
            "/tmp/lab-1/barman.conf"
        );
        assert_eq!(shell_quote("barman@127.0.0.1"), "barman@127.0.0.1");
        assert_eq!(shell_quote(""), "''");
        assert_eq!(shell_quote("a b"), "'a b'");
        assert_eq!(shell_quote("it's"), r"'it'\''s'");
        assert_eq!(shell_quote("$(rm -rf /)"), "'$(rm -rf /)'");
    }

    #[test]
    fn tail_keeps_the_last_lines() {
        assert_eq!(tail("a\nb\nc\n", 2), "b\nc");
        assert_eq!(tail("a", 5), "a");
        assert_eq!(tail("", 5), "");
    }

    #[test]
    fn output_captures_both_streams_and_status() {
        let out = output(
            Command::new("/bin/sh").args(["-c", "echo out; echo err >&2; exit 3"]),
            "test",
            Duration::from_secs(10),
        )
        .unwrap();
        assert_eq!(out.status.code(), Some(3));
        assert_eq!(String::from_utf8_lossy(&out.stdout), "out\n");
        assert_eq!(String::from_utf8_lossy(&out.stderr), "err\n");
    }

    #[test]
    fn checked_reports_the_failure_with_output() {
        let err = checked(
            Command::new("/bin/sh").args(["-c", "echo boom >&2; exit 1"]),
            "stage x",
            Duration::from_secs(10),
        )
        .unwrap_err();
        assert_eq!(err.stage(), "stage x");
        assert!(err.to_string().contains("boom"), "{err}");
    }

    #[test]
    fn output_stops_a_command_that_overruns() {
        let started = Instant::now();
        let err = output(
            Command::new("/bin/sleep").arg("30"),
            "slow",
            Duration::from_millis(200),
        )
        .unwrap_err();
        assert!(err.message().contains("did not finish"), "{err}");
        assert!(started.elapsed() < Duration::from_secs(10));
    }

    #[test]
    fn wait_for_reports_the_last_error_on_timeout() {
        let mut calls = 0;
        let err = wait_for("probe", Duration::from_millis(50), || {
            calls += 1;
            Err(LabError::new("probe", "refused"))
        })
        .unwrap_err();
        assert!(calls >= 2);
        assert!(err.to_string().contains("refused"), "{err}");
        let mut n = 0;
        wait_for("count", Duration::from_secs(5), || {
            n += 1;
            Ok(n == 3)
        })
        .unwrap();
        assert_eq!(n, 3);
    }
}
