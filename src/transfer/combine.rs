//! `pg_combinebackup`: combines the staged members of an incremental chain (oldest first) into
//! the data directory and the tablespace targets, under a guardian so that it dies with
//! pgreplica.
//!
//! Restartable, never resumed: `pg_combinebackup` refuses a non-empty output, so a run empties
//! its output (the data directory and the tablespace targets) first; the inputs in staging are
//! only read. What a run needs in each input is put there first (idempotently): a tar
//! member's `backup_manifest`, and `pg_tblspc/<oid>` links to where each member's tablespaces
//! were staged or unpacked.
//!
//! Must not: decide whether the chain was combined already (the machine records it), or touch
//! anything but the inputs' links and manifests and the output.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use states::{BackupFormat, ChainMember, PreparedDirs};

use super::guardian::run_to_end;
use super::layout::{empty_dir, link_tablespaces};
use super::staging::Staging;
use crate::durable::io_error;
use crate::error::{Error, ErrorKind, Result};

/// How `pg_combinebackup` puts files into the output.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CopyMethod {
    /// `--link` (PostgreSQL 18+, staging on the data directory's file system): hard links, no
    /// copy at all; the staged inputs are removed afterwards, so nothing else shares them.
    Link,
    /// The default copy.
    Copy,
}

impl CopyMethod {
    /// The fastest method for a chain of `pg_version` staged in `staging` for `data_dir`.
    pub fn choose(pg_version: u32, staging: &Path, data_dir: &Path) -> CopyMethod {
        let device = |p: &Path| std::fs::metadata(p).map(|m| m.dev()).ok();
        let shared = device(staging).is_some() && device(staging) == device(data_dir);
        if pg_version >= 180_000 && shared {
            CopyMethod::Link
        } else {
            CopyMethod::Copy
        }
    }

    /// The option, as recorded and logged.
    pub fn flag(self) -> &'static str {
        match self {
            CopyMethod::Link => "--link",
            CopyMethod::Copy => "--copy",
        }
    }
}

/// Readies each member's input directory in `staging`: a tar member's `backup_manifest` next to
/// its unpacked files, and every member's `pg_tblspc/<oid>` links to its tablespace trees.
/// Returns the input directories, oldest first.
pub fn prepare_inputs(staging: &Staging, chain: &[ChainMember]) -> Result<Vec<PathBuf>> {
    let mut inputs = Vec::new();
    for member in chain {
        let (input, tablespaces) = staging.combine_input(member);
        if matches!(member.format, BackupFormat::Tar { .. }) {
            let staged = staging.data(member).join("backup_manifest");
            let target = input.join("backup_manifest");
            if !target.exists() {
                std::fs::copy(&staged, &target).map_err(|e| io_error("copy", &staged, e))?;
            }
        }
        let links = PreparedDirs {
            tablespaces: tablespaces
                .iter()
                .map(|(oid, dir)| states::TablespaceTarget {
                    oid: *oid,
                    path: dir.display().to_string(),
                })
                .collect(),
            ..PreparedDirs::default()
        };
        std::fs::create_dir_all(input.join("pg_tblspc"))
            .map_err(|e| io_error("create", &input.join("pg_tblspc"), e))?;
        link_tablespaces(&input, &links)?;
        inputs.push(input);
    }
    Ok(inputs)
}

/// Empties the output of an earlier, interrupted run: the data directory (its `pg_wal` link to
/// `--waldir` included, which `pg_combinebackup` would refuse; it is made again afterwards) and
/// the tablespace targets. Returns the entries removed.
pub fn empty_output(dirs: &PreparedDirs) -> Result<usize> {
    let data_dir = Path::new(&dirs.data_dir);
    crate::datadir::check_postmaster(data_dir)?;
    let mut removed = empty_dir(data_dir)?;
    for target in &dirs.tablespaces {
        removed += empty_dir(Path::new(&target.path))?;
    }
    Ok(removed)
}

/// Runs `program` (a `pg_combinebackup`) over `inputs` into `dirs`; `leaf_tablespaces` are the
/// last input's tablespace trees, which `-T` relocates to their targets.
pub async fn run(
    program: &Path,
    inputs: &[PathBuf],
    leaf_tablespaces: &[(u32, PathBuf)],
    dirs: &PreparedDirs,
    method: CopyMethod,
) -> Result<()> {
    let mut command = Command::new(program);
    command.arg("-o").arg(&dirs.data_dir);
    for (oid, staged) in leaf_tablespaces {
        let Some(target) = dirs.tablespaces.iter().find(|t| t.oid == *oid) else {
            return Err(Error::bug(format!(
                "tablespace {oid} of the chain has no prepared target"
            )));
        };
        command.arg(format!("-T{}={}", staged.display(), target.path));
    }
    if method == CopyMethod::Link {
        command.arg("--link");
    }
    command
        .args(inputs)
        .env("LC_ALL", "C")
        .stdin(Stdio::null())
        .stdout(Stdio::null());
    crate::debug!("running {command:?}");
    let (status, stderr) = run_to_end(command, "pg_combinebackup").await.map_err(|e| {
        Error::new(
            ErrorKind::LocalCommand,
            format!("cannot run \"{}\": {e}", program.display()),
        )
        .hint("set pg_bindir in repmgr.conf to the directory of the PostgreSQL programs")
    })?;
    if status.success() {
        return Ok(());
    }
    use std::os::unix::process::ExitStatusExt;
    // Killed: running it again (it starts over) may well succeed.
    let killed = status.signal().is_some();
    let hint = if killed {
        format!(
            "run \"{}\": the chain is combined again from the start",
            crate::paste::resume()
        )
    } else {
        format!(
            "fix the cause shown in DETAIL, then run \"{}\"",
            crate::paste::resume()
        )
    };
    let error = Error::new(
        ErrorKind::BaseBackup,
        format!(
            "pg_combinebackup failed ({})",
            match (status.code(), status.signal()) {
                (Some(code), _) => format!("exit code {code}"),
                (_, Some(signal)) => format!("signal {signal}"),
                _ => "unknown status".to_string(),
            }
        ),
    )
    .detail(crate::child_output::detail_of(&stderr))
    .hint(hint);
    Err(if killed { error.retryable() } else { error })
}
