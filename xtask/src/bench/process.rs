//! Running a bench contender's programs: output to a log, bounded by the bench's run limit,
//! timed to within milliseconds of the exit; and the sizes on disk the bench measures with.

use std::fs::File;
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use super::RUN_LIMIT;

/// `sync`: flushes dirty pages so a run does not pay for the previous one's writes.
pub(super) fn sync() -> Result<(), String> {
    let status = Command::new("/usr/bin/sync")
        .status()
        .map_err(|e| format!("sync: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("sync failed ({status})"))
    }
}

/// Bytes and number of the regular files under `dir` (symlinks not followed); 0 when missing.
pub(super) fn tree_size(dir: &Path) -> (u64, u64) {
    let mut total = (0, 0);
    let Ok(entries) = std::fs::read_dir(dir) else {
        return total;
    };
    for entry in entries.flatten() {
        // A file renamed or removed under our feet (rsync's temporaries) is simply skipped.
        let Ok(meta) = entry.path().symlink_metadata() else {
            continue;
        };
        if meta.is_dir() {
            let (bytes, files) = tree_size(&entry.path());
            total = (total.0 + bytes, total.1 + files);
        } else if meta.is_file() {
            total = (total.0 + meta.len(), total.1 + 1);
        }
    }
    total
}

pub(super) fn spawn_logged(cmd: &mut Command, log: &Path) -> Result<Child, String> {
    let out = File::create(log).map_err(|e| format!("create {}: {e}", log.display()))?;
    let err = out
        .try_clone()
        .map_err(|e| format!("dup {}: {e}", log.display()))?;
    cmd.stdin(Stdio::null())
        .stdout(Stdio::from(out))
        .stderr(Stdio::from(err))
        .spawn()
        .map_err(|e| format!("cannot run {}: {e}", lab::describe(cmd)))
}

/// Runs `cmd` with its output in `log`; its wall time in seconds when it exits 0.
pub(super) fn run_to_end(cmd: &mut Command, log: &Path) -> Result<f64, String> {
    let began = Instant::now();
    let mut child = spawn_logged(cmd, log)?;
    let status = wait_limited(&mut child, cmd)?;
    let seconds = began.elapsed().as_secs_f64();
    if status.success() {
        Ok(seconds)
    } else {
        Err(format!(
            "{} failed ({status}):\n{}",
            lab::describe(cmd),
            log_tail(log, 20)
        ))
    }
}

/// Waits for `child`; polling keeps the measured time within a few milliseconds of its exit.
fn wait_limited(child: &mut Child, cmd: &Command) -> Result<ExitStatus, String> {
    let deadline = Instant::now() + RUN_LIMIT;
    loop {
        if let Some(status) = child.try_wait().map_err(|e| format!("wait: {e}"))? {
            return Ok(status);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Err(format!(
                "{} did not finish within {RUN_LIMIT:?}",
                lab::describe(cmd)
            ));
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// The last `lines` lines of the log at `log` (empty when unreadable).
fn log_tail(log: &Path, lines: usize) -> String {
    lab::tail(&std::fs::read_to_string(log).unwrap_or_default(), lines)
}

/// A program's `--version` line, or what went wrong.
pub(super) fn version_of(cmd: &mut Command) -> String {
    match cmd.output() {
        Ok(out) => String::from_utf8_lossy(&out.stdout)
            .lines()
            .next()
            .unwrap_or_default()
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" "),
        Err(e) => format!("unknown ({e})"),
    }
}
