//! PostgreSQL's own programs (pg_verifybackup, pg_controldata, pg_basebackup,
//! pg_combinebackup): where those of a given major version live, and how a step runs one to
//! completion.

use crate::error::{Error, ErrorKind, Result};
use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::Output;

/// Where PostgreSQL packages put the programs of major version `{}`: Debian's and the PGDG RPMs'
/// layouts, in that order.
const LAYOUTS: [&str; 2] = ["/usr/lib/postgresql/{}/bin", "/usr/pgsql-{}/bin"];

/// Where a PostgreSQL program lives: `pg_bindir` if configured, else the known package layout
/// for the server's major version ([`LAYOUTS`]) that has it, else the PATH.
pub fn pg_program(pg_bindir: Option<&str>, server_version_num: u32, name: &str) -> PathBuf {
    if let Some(dir) = pg_bindir {
        return Path::new(dir).join(name);
    }
    let major = (server_version_num / 10_000).to_string();
    LAYOUTS
        .iter()
        .map(|layout| PathBuf::from(layout.replace("{}", &major)).join(name))
        .find(|path| path.exists())
        .unwrap_or_else(|| PathBuf::from(name))
}

/// The program `name` of the major version of `server_version_num` ([`pg_program`]), checked
/// with `--version`: a program of another major version is refused (exit 5), since
/// pg_combinebackup and pg_verifybackup read their own version's backups only. Logs which one
/// is used.
pub async fn program_of_version(
    pg_bindir: Option<&str>,
    server_version_num: u32,
    name: &str,
) -> Result<PathBuf> {
    let program = pg_program(pg_bindir, server_version_num, name);
    let output = run(&program, ["--version"]).await?;
    let text = String::from_utf8_lossy(&output.stdout);
    let found = text
        .split_whitespace()
        .last()
        .and_then(|v| v.split('.').next())
        .and_then(|major| major.parse::<u32>().ok());
    let wanted = server_version_num / 10_000;
    if !output.status.success() || found != Some(wanted) {
        return Err(Error::new(
            ErrorKind::LocalCommand,
            format!(
                "\"{}\" is not the {name} of PostgreSQL {wanted}: it says \"{}\"",
                program.display(),
                text.trim()
            ),
        )
        .hint(format!(
            "install PostgreSQL {wanted}'s client programs, or set pg_bindir in repmgr.conf to their directory"
        )));
    }
    crate::info!("using \"{}\" ({})", program.display(), text.trim());
    Ok(program)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_programs_of_the_backups_major_version_are_found_and_checked() {
        assert_eq!(
            pg_program(Some("/opt/pg18/bin"), 180_006, "pg_combinebackup"),
            Path::new("/opt/pg18/bin/pg_combinebackup")
        );
        // No PostgreSQL 99 anywhere: the PATH's program is tried.
        assert_eq!(
            pg_program(None, 990_000, "pg_verifybackup"),
            Path::new("pg_verifybackup")
        );
        // A program that prints another major version is refused.
        let dir = tempfile::tempdir().unwrap();
        let fake = dir.path().join("pg_verifybackup");
        std::fs::write(
            &fake,
            "#!/bin/sh\necho 'pg_verifybackup (PostgreSQL) 15.14'\n",
        )
        .unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755)).unwrap();
        let bindir = dir.path().to_str().unwrap();
        let error = program_of_version(Some(bindir), 180_006, "pg_verifybackup")
            .await
            .unwrap_err();
        assert_eq!(error.exit_code(), 5);
        assert!(
            error.message.ends_with("is not the pg_verifybackup of PostgreSQL 18: it says \"pg_verifybackup (PostgreSQL) 15.14\""),
            "{}",
            error.message
        );
        assert!(error.hint.unwrap().contains("pg_bindir"));
        assert_eq!(
            program_of_version(Some(bindir), 150_014, "pg_verifybackup")
                .await
                .unwrap(),
            fake
        );
    }
}
