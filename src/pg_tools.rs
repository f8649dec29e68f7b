//! PostgreSQL's own programs (pg_verifybackup, pg_controldata, pg_basebackup): where they live
//! and how a step runs one to completion.

use crate::error::{Error, ErrorKind, Result};
use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::Output;

/// Where a PostgreSQL program lives: `pg_bindir` if configured, else Debian's layout for the
/// server's major version, else the PATH.
pub fn pg_program(pg_bindir: Option<&str>, server_version_num: u32, name: &str) -> PathBuf {
    if let Some(dir) = pg_bindir {
        return Path::new(dir).join(name);
    }
    let debian = PathBuf::from(format!(
        "/usr/lib/postgresql/{}/bin/{name}",
        server_version_num / 10_000
    ));
    if debian.exists() {
        debian
    } else {
        PathBuf::from(name)
    }
}

/// Runs `program ARGS` in the C locale (its output is parsed), killed if the step is dropped.
/// A program that cannot be started is a LocalCommand error (exit 5) pointing at pg_bindir; its
/// exit status is the caller's to judge.
pub async fn run<I, S>(program: &Path, args: I) -> Result<Output>
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    tokio::process::Command::new(program)
        .args(args)
        .env("LC_ALL", "C")
        .kill_on_drop(true)
        .output()
        .await
        .map_err(|e| {
            Error::new(
                ErrorKind::LocalCommand,
                format!("cannot run \"{}\": {e}", program.display()),
            )
            .hint("set pg_bindir in repmgr.conf to the directory of the PostgreSQL programs")
        })
}
