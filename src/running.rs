//! Running PostgreSQL clusters near a directory pgreplica is about to write: a live
//! `postmaster.pid` in the directory itself or in any directory above it, the running
//! postmaster's own `pg_ctl`, and whether a running cluster is the source node itself.
//!
//! pgreplica never writes into a running cluster's directory, nor into a directory nested in
//! one: both are refused before anything is touched, in every mode. Only a standby that runs
//! in the very data directory of `--replication-conf-only` may be configured anyway under
//! `--force` (its configuration takes effect at its next start) — never the source node's own
//! data directory, which would turn the primary into a standby of itself. Read-only: this
//! module opens, reads and signals nothing.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use crate::error::{Error, ErrorKind, Result};

/// A live postmaster, as its `postmaster.pid` describes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Postmaster {
    /// Its pid (first line).
    pub pid: libc::pid_t,
    /// The data directory whose `postmaster.pid` this is.
    pub data_dir: PathBuf,
    /// When it started, seconds since the epoch (third line).
    pub started: Option<i64>,
    /// Its port (fourth line).
    pub port: Option<u16>,
}

impl Postmaster {
    /// `pg_ctl -D DIR stop` with the running server's own `pg_ctl`, quoted for pasting.
    pub fn stop_command(&self) -> String {
        crate::paste::command(
            &self.pg_ctl(),
            &["-D", &self.data_dir.display().to_string(), "stop"],
        )
    }

    /// The `pg_ctl` beside the running `postgres` binary (`/proc/PID/exe`), else the one of
    /// Debian's layout for the directory's major version, else `pg_ctl` from PATH.
    fn pg_ctl(&self) -> PathBuf {
        let beside = fs::read_link(format!("/proc/{}/exe", self.pid))
            .ok()
            .and_then(|exe| exe.parent().map(|dir| dir.join("pg_ctl")))
            .filter(|pg_ctl| pg_ctl.exists());
        beside.unwrap_or_else(|| {
            let major = fs::read_to_string(self.data_dir.join("PG_VERSION"))
                .ok()
                .and_then(|v| v.trim().parse::<u32>().ok())
                .unwrap_or(0);
            crate::pg_tools::pg_program(None, major * 10_000, "pg_ctl")
        })
    }
}

/// The live postmaster of `dir`, from its `postmaster.pid`: `None` when there is no such file
/// or its process is gone (a stale file).
///
/// `kill(pid, 0)` succeeding, or failing with EPERM (the process exists but belongs to someone
/// else), means it runs. An unreadable pid is refused, as PostgreSQL itself does: the server
/// may be starting and not have written it yet.
pub fn postmaster_of(dir: &Path) -> Result<Option<Postmaster>> {
    let pid_file = dir.join("postmaster.pid");
    let text = match fs::read_to_string(&pid_file) {
        Ok(text) => text,
        Err(e)
            if matches!(
                e.kind(),
                io::ErrorKind::NotFound | io::ErrorKind::NotADirectory
            ) =>
        {
            return Ok(None)
        }
        Err(e) => return Err(crate::durable::io_error("read", &pid_file, e)),
    };
    let mut lines = text.lines();
    let pid = lines
        .next()
        .and_then(|l| l.trim().parse::<libc::pid_t>().ok())
        .filter(|pid| *pid > 0)
        .ok_or_else(|| {
            Error::new(
                ErrorKind::System,
                format!("could not read a pid from \"{}\"", pid_file.display()),
            )
            .hint(format!(
                "a PostgreSQL server may be starting in \"{}\"; if none is, remove \"{}\"",
                dir.display(),
                pid_file.display()
            ))
        })?;
    // SAFETY: signal 0 only checks that the process exists and may be signalled.
    let alive = unsafe { libc::kill(pid, 0) } == 0
        || io::Error::last_os_error().raw_os_error() == Some(libc::EPERM);
    if !alive {
        crate::info!(
            "ignoring stale \"{}\": no process has pid {pid}",
            pid_file.display()
        );
        return Ok(None);
    }
    let _data_dir_line = lines.next();
    let started = lines.next().and_then(|l| l.trim().parse().ok());
    let port = lines.next().and_then(|l| l.trim().parse().ok());
    Ok(Some(Postmaster {
        pid,
        data_dir: dir.to_path_buf(),
        started,
        port,
    }))
}

/// Refuses when a postmaster is running in `data_dir` itself.
pub fn check_postmaster(data_dir: &Path) -> Result<()> {
    let Some(postmaster) = postmaster_of(data_dir)? else {
        return Ok(());
    };
    Err(Error::new(
        ErrorKind::System,
        format!(
            "PostgreSQL is running in data directory \"{}\" (pid {})",
            data_dir.display(),
            postmaster.pid
        ),
    )
    .hint(format!(
        "stop it first, for example: {}; -F/--force does not override this",
        postmaster.stop_command()
    )))
}

/// Refuses `path` (a data, WAL or tablespace directory to be written) when it lies inside the
/// data directory of a running cluster: a live `postmaster.pid` in any directory above it, as
/// spelled and as its links resolve. No option overrides this.
pub fn check_not_nested(path: &Path, what: &str) -> Result<()> {
    let mut spellings = vec![crate::request::absolute(path)?];
    let canonical = crate::dirlock::canonical(path)?;
    if canonical != spellings[0] {
        spellings.push(canonical);
    }
    for spelling in &spellings {
        for ancestor in spelling.ancestors().skip(1) {
            if let Some(postmaster) = postmaster_of(ancestor)? {
                return Err(Error::new(
                    ErrorKind::System,
                    format!(
                        "{what} \"{}\" lies inside the data directory \"{}\" of a running PostgreSQL (pid {})",
                        path.display(),
                        ancestor.display(),
                        postmaster.pid
                    ),
                )
                .hint(
                    "pgreplica never writes inside a cluster's data directory: choose a \
                     directory outside it",
                ));
            }
        }
    }
    Ok(())
}

/// What the source node says about its own server, to recognise it on this host.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SourceServer {
    /// Its `port` setting.
    pub port: u16,
    /// `pg_postmaster_start_time()`, seconds since the epoch.
    pub started: i64,
    /// The pid of the backend serving pgreplica's connection.
    pub backend_pid: i32,
}

/// Refuses `data_dir` when the cluster running in it is the source node itself: the command
/// was run on the source's host with `-D` naming its own data directory. It is recognised by
/// the backend serving pgreplica's connection being a child of that postmaster, or by the same
/// port and start time (within the second or two between the two clocks PostgreSQL reads at
/// start). No option overrides this.
pub fn refuse_source_dir(data_dir: &Path, source: &SourceServer) -> Result<()> {
    let Some(postmaster) = postmaster_of(data_dir)? else {
        return Ok(());
    };
    let parent = parent_pid(source.backend_pid);
    let same_start = postmaster.port == Some(source.port)
        && postmaster
            .started
            .is_some_and(|started| (started - source.started).abs() <= 2);
    if parent != Some(postmaster.pid) && !same_start {
        return Ok(());
    }
    Err(Error::new(
        ErrorKind::System,
        format!(
            "\"{}\" is the data directory of the source node itself (PostgreSQL pid {}, port {})",
            data_dir.display(),
            postmaster.pid,
            source.port
        ),
    )
    .hint(
        "-D (or data_directory) names the new standby's data directory, on the standby's host; \
         the source node's own directory is never written",
    ))
}

/// The parent of process `pid`, from `/proc/PID/stat` (the field after the command name).
fn parent_pid(pid: i32) -> Option<libc::pid_t> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit_once(')')?
        .1
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// Writes a `postmaster.pid` into `dir` whose first line is `first_line` (a pid, or garbage),
/// started at 1700000000 on port 5432: for the tests of this module and of `datadir`.
#[cfg(test)]
pub(crate) fn write_pid_file(dir: &Path, first_line: &str) {
    fs::write(
        dir.join("postmaster.pid"),
        format!("{first_line}\n{}\n1700000000\n5432\n", dir.display()),
    )
    .expect("write postmaster.pid");
}

#[cfg(test)]
mod tests {
    use super::write_pid_file as write_pid;
    use super::*;

    #[test]
    fn a_live_postmaster_is_read_with_its_port_and_start() {
        let root = tempfile::tempdir().unwrap();
        write_pid(root.path(), &std::process::id().to_string());
        let found = postmaster_of(root.path()).unwrap().unwrap();
        assert_eq!(found.pid, std::process::id() as libc::pid_t);
        assert_eq!(found.port, Some(5432));
        assert_eq!(found.started, Some(1_700_000_000));
        // Linux pids never exceed pid_max (at most 2^22), so this one is stale.
        write_pid(root.path(), &i32::MAX.to_string());
        assert_eq!(postmaster_of(root.path()).unwrap(), None);
        for garbage in ["", "not-a-pid", "-5", "0"] {
            write_pid(root.path(), garbage);
            let err = postmaster_of(root.path()).unwrap_err();
            assert!(err.message.contains("could not read a pid"), "{err:?}");
        }
    }

    #[test]
    fn a_directory_inside_a_running_cluster_is_refused_however_it_is_spelled() {
        let root = tempfile::tempdir().unwrap();
        let cluster = root.path().join("cluster");
        fs::create_dir_all(cluster.join("base")).unwrap();
        write_pid(&cluster, &std::process::id().to_string());
        for inside in [cluster.join("sub/data"), cluster.join("base")] {
            let err = check_not_nested(&inside, "data directory").unwrap_err();
            assert_eq!(err.kind, ErrorKind::System);
            assert!(
                err.message.contains("lies inside the data directory"),
                "{err:?}"
            );
            assert!(!err.hint.unwrap().contains("force"));
        }
        let link = root.path().join("link");
        std::os::unix::fs::symlink(cluster.join("base"), &link).unwrap();
        assert!(check_not_nested(&link.join("x"), "WAL directory").is_err());
        // The cluster's own directory is not nested in itself; beside it is fine.
        check_not_nested(&cluster, "data directory").unwrap();
        check_not_nested(&root.path().join("other"), "data directory").unwrap();
    }

    #[test]
    fn the_source_is_recognised_by_its_backend_or_its_port_and_start() {
        let root = tempfile::tempdir().unwrap();
        // This test process plays the postmaster; a child of it plays the backend.
        write_pid(root.path(), &std::process::id().to_string());
        let mut child = std::process::Command::new("sleep")
            .arg("5")
            .spawn()
            .unwrap();
        let backend = SourceServer {
            port: 6000,
            started: 1,
            backend_pid: child.id() as i32,
        };
        let err = refuse_source_dir(root.path(), &backend).unwrap_err();
        assert!(err.message.contains("of the source node itself"), "{err:?}");
        assert!(!err.hint.as_deref().unwrap().contains("force"), "{err:?}");
        child.kill().unwrap();
        child.wait().unwrap();
        let same_start = SourceServer {
            port: 5432,
            started: 1_700_000_001,
            backend_pid: 1,
        };
        assert!(refuse_source_dir(root.path(), &same_start).is_err());
        // Another server: other port, or started at another time.
        for other in [
            SourceServer {
                port: 5433,
                started: 1_700_000_000,
                backend_pid: 1,
            },
            SourceServer {
                port: 5432,
                started: 1_700_000_100,
                backend_pid: 1,
            },
        ] {
            refuse_source_dir(root.path(), &other).unwrap();
        }
        // Nothing running there: nothing to refuse.
        refuse_source_dir(&root.path().join("none"), &same_start).unwrap();
    }
}
