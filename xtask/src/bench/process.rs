//! Running a bench contender's programs: output to a log, bounded by the bench's run limit,
//! timed to within milliseconds of the exit, with the CPU time and peak memory of the whole
//! process tree ([`Cost`], from `wait4`'s resource usage); and the sizes on disk the bench
//! measures with.

use std::fs::File;
use std::os::unix::process::ExitStatusExt;
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

/// What one run cost.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub(super) struct Cost {
    /// Wall time from spawn to exit.
    pub(super) seconds: f64,
    /// User plus system CPU time of the process and of every descendant it reaped (ssh,
    /// rsync, cp, pgreplica's threads): this end's work. What runs under the lab's sshd (the
    /// far end of every ssh) is [`remote_cpu_seconds`]'s.
    pub(super) cpu_seconds: f64,
    /// Peak resident memory of the largest single process of the tree (`ru_maxrss`), bytes.
    pub(super) peak_rss_bytes: u64,
}

/// Runs `cmd` with its output in `log`; what it cost when it exits 0.
pub(super) fn run_to_end(cmd: &mut Command, log: &Path) -> Result<Cost, String> {
    let began = Instant::now();
    let mut child = spawn_logged(cmd, log)?;
    let (status, usage) = wait_limited(&mut child, cmd)?;
    let seconds = began.elapsed().as_secs_f64();
    if status.success() {
        Ok(Cost { seconds, ..usage })
    } else {
        Err(format!(
            "{} failed ({status}):\n{}",
            lab::describe(cmd),
            log_tail(log, 20)
        ))
    }
}

/// Waits for `child` with `wait4`, which also returns the resource usage of it and its reaped
/// descendants; polling keeps the measured time within a few milliseconds of its exit.
fn wait_limited(child: &mut Child, cmd: &Command) -> Result<(ExitStatus, Cost), String> {
    let deadline = Instant::now() + RUN_LIMIT;
    let pid = child.id() as libc::pid_t;
    loop {
        let mut status: libc::c_int = 0;
        // SAFETY: an all-zero rusage is a valid value for wait4 to overwrite.
        let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
        // SAFETY: wait4 on our own child with valid pointers; once it has reaped the child,
        // `child` is never waited for again.
        let reaped = unsafe { libc::wait4(pid, &mut status, libc::WNOHANG, &mut usage) };
        if reaped == pid {
            let time = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
            let cost = Cost {
                seconds: 0.0,
                cpu_seconds: time(usage.ru_utime) + time(usage.ru_stime),
                // Linux counts ru_maxrss in KiB.
                peak_rss_bytes: usage.ru_maxrss.max(0) as u64 * 1024,
            };
            return Ok((ExitStatus::from_raw(status), cost));
        }
        if reaped < 0 {
            return Err(format!("wait4: {}", std::io::Error::last_os_error()));
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

/// CPU seconds of the reaped children of process `pid` so far (`cutime + cstime` of
/// `/proc/<pid>/stat`): for the lab's sshd, every ssh session it served, the remote rsync,
/// tar or Barman included. Reads once no child is left, so that a session that just ended is
/// counted (bounded: a session still open after 10 s is left out).
pub(super) fn reaped_children_cpu(pid: u32) -> Result<f64, String> {
    let children = format!("/proc/{pid}/task/{pid}/children");
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::fs::read_to_string(&children).is_ok_and(|c| !c.trim().is_empty())
        && Instant::now() < deadline
    {
        std::thread::sleep(Duration::from_millis(5));
    }
    let stat_path = format!("/proc/{pid}/stat");
    let stat = std::fs::read_to_string(&stat_path).map_err(|e| format!("read {stat_path}: {e}"))?;
    cutime_cstime(&stat)
        .map(|ticks| {
            // SAFETY: sysconf has no preconditions.
            let per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1);
            ticks as f64 / per_second as f64
        })
        .ok_or_else(|| format!("{stat_path} has no cutime/cstime: {stat}"))
}

/// `cutime + cstime` (fields 16 and 17) of a `/proc/<pid>/stat` line, in clock ticks. The
/// command name (field 2) may hold spaces and parentheses: fields are counted after its last
/// `)`.
fn cutime_cstime(stat: &str) -> Option<u64> {
    let after_name = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    // after_name starts at field 3 (state): field N is fields[N - 3].
    let cutime: u64 = fields.get(13)?.parse().ok()?;
    let cstime: u64 = fields.get(14)?.parse().ok()?;
    Some(cutime + cstime)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn children_cpu_is_read_after_the_last_parenthesis() {
        let stat =
            "4242 (ss h) d) S 1 4242 4242 0 -1 4194560 300 9000 0 0 12 34 567 890 20 0 1 0 100 \
                    12345 678 18446744073709551615 1 1 0 0 0 0 0 4096 16384 0 0 0 17 1 0 0 0 0 0";
        assert_eq!(cutime_cstime(stat), Some(567 + 890));
        assert_eq!(cutime_cstime("1 (x) S 1 2"), None);
    }

    /// The real kernel: a child that burnt CPU and was reaped is counted in its parent's
    /// children time, and a run's cost comes from wait4.
    #[test]
    fn a_runs_cost_and_the_reaped_childrens_time_are_read_from_the_kernel() {
        let before = reaped_children_cpu(std::process::id()).expect("own stat");
        let dir = std::env::temp_dir().join(format!("xtask-cost-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("mkdir");
        let mut busy = Command::new("/bin/sh");
        busy.args(["-c", "i=0; while [ $i -lt 300000 ]; do i=$((i+1)); done"]);
        let cost = run_to_end(&mut busy, &dir.join("busy.log")).expect("busy loop");
        assert!(cost.cpu_seconds > 0.0, "{cost:?}");
        assert!(cost.peak_rss_bytes > 100 * 1024, "{cost:?}");
        let after = reaped_children_cpu(std::process::id()).expect("own stat");
        assert!(after > before, "{before} -> {after}");
        std::fs::remove_dir_all(&dir).expect("rm");
    }
}
