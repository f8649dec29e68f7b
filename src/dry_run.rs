//! `clone start --dry-run`: every check a real run makes before it changes anything — Barman
//! reachable and the backup restorable, the source node reachable with the right settings, the
//! data directory, WAL directory and tablespace targets usable, free disk for the copy, the
//! restore_command runnable, the replication slot usable — collected into a [`Report`] that
//! lists every check and every problem, not only the first.
//!
//! It changes nothing anywhere: no files, no slots, no API operations, no store records (the
//! caller returns before opening the store). It calls the same read-only checks as the steps
//! (`preflight`, `datadir`, `slots`, the Barman client), so a dry run cannot drift from what a
//! run checks.

use crate::barman::Barman;
use crate::datadir;
use crate::error::{Error, ErrorKind, Result};
use crate::pg_tools::pg_program;
use crate::preflight::{check_restored, inspect_source, verify_with_api};
use crate::progress::human_bytes;
use crate::slots::{check_slot, slot_name};
use crate::transfer::basebackup::BaseBackupOptions;
use states::{CloneRequest, Mode, SourceParams, TablespaceTarget};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// How long `barman-wal-restore --test` may take.
const RESTORE_TEST_TIMEOUT: Duration = Duration::from_secs(60);
/// How long each pg-backup-api call retries transient failures in a dry run: long enough to
/// ride out a blip, short enough that a dead API is reported in seconds, not minutes.
const API_RETRY_FOR: Duration = Duration::from_secs(5);

/// One check of a dry run.
#[derive(Debug)]
pub struct Check {
    /// What was checked, e.g. `data directory`.
    pub name: &'static str,
    /// What was found when it passed, or the problem.
    pub result: Result<String>,
}

/// Everything a dry run found.
#[derive(Debug)]
pub struct Report {
    /// The clone's mode.
    pub mode: Mode,
    /// Every check, in the order a real run would meet them.
    pub checks: Vec<Check>,
    /// Things that would not stop a real run but that the operator should know.
    pub warnings: Vec<String>,
}

impl Report {
    /// The problems found, in order.
    pub fn problems(&self) -> Vec<&Error> {
        self.checks
            .iter()
            .filter_map(|c| c.result.as_ref().err())
            .collect()
    }

    fn record(&mut self, name: &'static str, result: Result<String>) {
        self.checks.push(Check { name, result });
    }

    /// Writes the report for the operator: one line per check, then the warnings and a total.
    pub fn write(&self, out: &mut impl Write) -> std::io::Result<()> {
        writeln!(out, "dry run ({} mode):", self.mode.label())?;
        for check in &self.checks {
            match &check.result {
                Ok(found) => writeln!(out, "  ok       {}: {found}", check.name)?,
                Err(e) => writeln!(out, "  PROBLEM  {}: {}", check.name, e.full_message())?,
            }
        }
        for warning in &self.warnings {
            writeln!(out, "  warning  {warning}")?;
        }
        writeln!(out, "{} problem(s) found", self.problems().len())
    }
}

/// Runs the checks, prints the report on stdout and the problems on stderr; `Ok` when a real
/// run would start cleanly, else the first problem (so the exit code is the first problem's).
pub async fn run(request: &CloneRequest) -> Result<()> {
    crate::notice!("dry run: checking, changing nothing");
    let report = check(request).await;
    report
        .write(&mut std::io::stdout().lock())
        .map_err(|e| Error::new(ErrorKind::System, format!("cannot write output: {e}")))?;
    let problems = report.problems();
    let Some(first) = problems.first() else {
        crate::notice!("dry run complete: no problems found");
        return Ok(());
    };
    for problem in problems.iter().skip(1) {
        crate::log::error(problem);
    }
    crate::notice!("dry run found {} problem(s)", problems.len());
    Err((*first).clone())
}

/// Runs every check of the request's mode without changing anything, and reports them all.
pub async fn check(request: &CloneRequest) -> Report {
    let mut report = Report {
        mode: request.mode,
        checks: Vec::new(),
        warnings: Vec::new(),
    };
    let mut backup = None;
    match request.mode {
        Mode::BarmanRsync => match Barman::for_request(request) {
            Ok(barman) => {
                // ssh_options is trusted like ~/.ssh/config: say what it makes ssh run here,
                // since even this dry run connects to the Barman host with it.
                match barman.local_commands().await {
                    Ok(commands) if commands.is_empty() => {}
                    Ok(commands) => report.warnings.push(format!(
                        "ssh to the Barman host runs these commands on this host (ssh_options, ~/.ssh/config), and this dry run did too: {}",
                        commands.join("; ")
                    )),
                    Err(e) => report.record("ssh_options", Err(e)),
                }
                report.record(
                    "Barman server",
                    barman
                        .show_server()
                        .await
                        .map(|dirs| format!("reachable over ssh ({})", dirs.basebackups_directory)),
                );
                let resolved = barman.resolve_backup(&request.backup_selector).await;
                report.record(
                    "backup",
                    resolved.as_ref().map_err(Clone::clone).map(|facts| {
                        format!(
                            "{} of server \"{}\" can be restored ({}, PostgreSQL {})",
                            facts.backup_id,
                            facts.server,
                            human_bytes(facts.size_bytes),
                            facts.pg_version
                        )
                    }),
                );
                backup = resolved.ok();
            }
            Err(e) => report.record("Barman server", Err(e)),
        },
        Mode::BackupApi => {
            // Read-only calls only: /status and the operation list; never a POST.
            let verified = match &request.backup_api {
                Some(target) => verify_with_api(target, Some(API_RETRY_FOR)).await,
                None => Err(Error::new(
                    ErrorKind::Internal,
                    "pg-backup-api mode without pg_backupapi_host in the request",
                )),
            };
            report.record(
                "pg-backup-api",
                verified.map(|facts| {
                    format!("reachable; backup \"{}\" will be restored", facts.backup_id)
                }),
            );
        }
        Mode::BaseBackup => {
            report.record("pg_basebackup_options", options_check(request));
        }
        Mode::ReplicationConfOnly => {}
    }
    let params = match inspect_source(request, backup.as_ref()).await {
        Ok((params, warnings)) => {
            report.record(
                "source node",
                Ok(format!(
                    "reachable, PostgreSQL {}, {}",
                    params.server_version_num,
                    human_bytes(params.installation_size)
                )),
            );
            report.warnings.extend(warnings);
            Some(params)
        }
        Err(e) => {
            report.record("source node", Err(e));
            None
        }
    };
    let version = backup
        .as_ref()
        .map(|b| b.pg_version)
        .or(params.as_ref().map(|p| p.server_version_num));
    if request.mode == Mode::BaseBackup {
        if let Some(version) = version {
            report.record("pg_basebackup", program_check(request, version).await);
        }
    }
    if request.mode == Mode::ReplicationConfOnly {
        if let Some(params) = &params {
            report.record(
                "data directory",
                check_restored(request, params)
                    .await
                    .map(|()| "a stopped copy of the source's cluster".to_string()),
            );
        }
    } else {
        check_dirs(request, version, backup.as_ref(), &mut report);
        let needed = match (&backup, &params) {
            (Some(backup), _) => Some(backup.size_bytes),
            (None, Some(params)) if request.mode == Mode::BaseBackup => {
                Some(params.installation_size)
            }
            _ => None,
        };
        if let Some(needed) = needed {
            report.record(
                "free disk",
                free_disk_check(Path::new(&request.data_dir), needed),
            );
        }
    }
    if let Some(command) = &request.replication.restore_command {
        report.record("restore_command", restore_command_check(command).await);
    }
    if request.replication.use_replication_slots {
        report.record(
            "replication slot",
            slot_check(request, params.as_ref()).await,
        );
    }
    report
}

fn options_check(request: &CloneRequest) -> Result<String> {
    BaseBackupOptions::parse(&request.pg_basebackup_options).map(|_| {
        if request.pg_basebackup_options.is_empty() {
            "none given".to_string()
        } else {
            format!("usable: {}", request.pg_basebackup_options.join(" "))
        }
    })
}

async fn program_check(request: &CloneRequest, version: u32) -> Result<String> {
    let program = pg_program(request.pg_bindir.as_deref(), version, "pg_basebackup");
    let output = crate::pg_tools::run(&program, ["--version"]).await?;
    match output {
        output if output.status.success() => {
            Ok(String::from_utf8_lossy(&output.stdout).trim().to_string())
        }
        output => Err(Error::new(
            ErrorKind::LocalCommand,
            format!("\"{} --version\" failed", program.display()),
        )
        .detail(crate::child_output::detail_of(&output.stderr))),
    }
}

/// The data directory, the WAL directory and the tablespace targets, as PrepareDirs checks them.
fn check_dirs(
    request: &CloneRequest,
    version: Option<u32>,
    backup: Option<&states::BackupFacts>,
    report: &mut Report,
) {
    let data_dir = Path::new(&request.data_dir);
    report.record(
        "data directory",
        datadir::check_data_dir(data_dir, request.force).map(|state| format!("{state:?}")),
    );
    if let Some(waldir) = &request.waldir {
        let waldir = Path::new(waldir);
        let result = match version {
            Some(version) => datadir::check_waldir(data_dir, waldir, version, request.force)
                .map(|(state, _)| state),
            None => datadir::check_dir(waldir, request.force),
        };
        report.record(
            "WAL directory",
            result.map(|state| format!("{state:?}, writable")),
        );
    }
    let targets: Vec<TablespaceTarget> = match backup {
        Some(backup) => {
            datadir::tablespace_targets(&backup.tablespaces, &request.tablespace_mapping)
        }
        None => request
            .tablespace_mapping
            .iter()
            .map(|(_, new)| TablespaceTarget {
                oid: 0,
                path: new.clone(),
            })
            .collect(),
    };
    for target in targets {
        let path = PathBuf::from(&target.path);
        let result = if path.is_absolute() {
            datadir::check_dir(&path, request.force)
                .map(|state| format!("\"{}\": {state:?}, writable", path.display()))
        } else {
            Err(Error::new(
                ErrorKind::Config,
                format!("tablespace target \"{}\" is not absolute", path.display()),
            )
            .hint("give tablespace_mapping targets as absolute paths"))
        };
        report.record("tablespace target", result);
    }
}

/// Free space on the file system that will hold the data directory (its nearest existing
/// ancestor), against the size to copy.
fn free_disk_check(data_dir: &Path, needed: u64) -> Result<String> {
    let free = free_bytes(data_dir)?;
    if free < needed {
        return Err(Error::new(
            ErrorKind::System,
            format!(
                "not enough free disk for \"{}\": {} needed, {} free",
                data_dir.display(),
                human_bytes(needed),
                human_bytes(free)
            ),
        )
        .hint("free some space, or choose a data directory on a larger file system"));
    }
    Ok(format!(
        "{} free, {} needed",
        human_bytes(free),
        human_bytes(needed)
    ))
}

/// Bytes available to an unprivileged user on the file system of `path` or its nearest
/// existing ancestor.
pub fn free_bytes(path: &Path) -> Result<u64> {
    let existing = path
        .ancestors()
        .find(|p| p.exists())
        .unwrap_or(Path::new("/"));
    let c_path = std::ffi::CString::new(existing.as_os_str().as_encoded_bytes()).map_err(|_| {
        Error::new(
            ErrorKind::Config,
            format!("path \"{}\" contains a NUL byte", existing.display()),
        )
    })?;
    // SAFETY: statvfs fills the zeroed struct from a valid NUL-terminated path.
    let mut stat: libc::statvfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statvfs(c_path.as_ptr(), &mut stat) } != 0 {
        return Err(crate::durable::io_error(
            "read the free space of",
            existing,
            std::io::Error::last_os_error(),
        ));
    }
    Ok(stat.f_bavail.saturating_mul(stat.f_frsize))
}

/// `barman-wal-restore … --test` when restore_command is one (the connection to Barman and the
/// server's configuration are tested, nothing is fetched); otherwise only that its program
/// exists.
async fn restore_command_check(command: &str) -> Result<String> {
    let unusable = |why: String| {
        Error::new(
            ErrorKind::Config,
            format!("restore_command \"{command}\" {why}"),
        )
        .hint(
            "the standby could not fetch WAL from the archive: fix restore_command in repmgr.conf",
        )
    };
    let words = crate::config::split_args(command)
        .map_err(|e| unusable(format!("cannot be checked: {e}")))?;
    let Some(program) = words.first() else {
        return Err(unusable("is empty".to_string()));
    };
    let Some(resolved) = find_program(program) else {
        return Err(unusable(format!("runs \"{program}\", which is not found")));
    };
    if resolved
        .file_name()
        .is_none_or(|n| n != "barman-wal-restore")
    {
        return Ok(format!("\"{}\" exists", resolved.display()));
    }
    // %f, %p and %r are the file, the destination and the restart point; --test ignores them.
    let args: Vec<String> = words[1..]
        .iter()
        .map(|w| {
            w.replace("%f", "000000010000000000000001")
                .replace("%p", "/dev/null")
                .replace("%r", "000000010000000000000001")
                .replace("%%", "%")
        })
        .collect();
    let run = tokio::process::Command::new(&resolved)
        .arg("--test")
        .args(&args)
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(RESTORE_TEST_TIMEOUT, run)
        .await
        .map_err(|_| {
            unusable(format!(
                "--test did not answer within {} s",
                RESTORE_TEST_TIMEOUT.as_secs()
            ))
        })?
        .map_err(|e| unusable(format!("cannot run: {e}")))?;
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        return Err(unusable(format!(
            "fails its test (barman-wal-restore --test, exit code {})",
            output.status.code().unwrap_or(-1)
        ))
        .detail(crate::conninfo::redact(stderr.trim())));
    }
    Ok("barman-wal-restore --test passed".to_string())
}

/// `program` as PostgreSQL's shell would find it: a path, or the first match on PATH.
fn find_program(program: &str) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let executable = |p: &Path| {
        std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    };
    if program.contains('/') {
        let path = PathBuf::from(program);
        return executable(&path).then_some(path);
    }
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|dir| dir.join(program))
        .find(|p| executable(p))
}

async fn slot_check(request: &CloneRequest, params: Option<&SourceParams>) -> Result<String> {
    let name = slot_name(request)?;
    let Some(params) = params else {
        return Ok(format!("\"{name}\" (upstream not reachable: not checked)"));
    };
    let (name, state) = check_slot(request, &params.upstream_conninfo).await?;
    Ok(match state {
        crate::source::SlotState::Missing => format!("\"{name}\" would be created"),
        _ => format!("\"{name}\" exists, inactive: would be reused"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use states::SourceConn;

    #[tokio::test]
    async fn every_problem_is_reported_and_nothing_is_created() {
        let root = tempfile::tempdir().unwrap();
        let file = root.path().join("a-file");
        std::fs::write(&file, "x").unwrap();
        let data_dir = root.path().join("new/data");
        let request = CloneRequest {
            mode: Mode::BaseBackup,
            data_dir: data_dir.display().to_string(),
            source: SourceConn {
                host: Some("127.0.0.1".into()),
                // Nothing listens on port 1: the source node is unreachable.
                port: Some(1),
                user: Some("nobody".into()),
                dbname: Some("postgres".into()),
            },
            waldir: Some(file.join("wal").display().to_string()),
            // A relative target, a target below a file, and a sound one.
            tablespace_mapping: vec![
                ("/old/a".into(), "relative/ts".into()),
                ("/old/b".into(), file.join("ts").display().to_string()),
                (
                    "/old/c".into(),
                    root.path().join("new/ts").display().to_string(),
                ),
            ],
            pg_basebackup_options: vec!["-Ft".into()],
            replication: states::ReplicationSettings {
                use_replication_slots: true,
                restore_command: Some("/nonexistent/restore %f %p".into()),
                ..Default::default()
            },
            ..CloneRequest::default()
        };
        let report = check(&request).await;
        let failed: Vec<&str> = report
            .checks
            .iter()
            .filter(|c| c.result.is_err())
            .map(|c| c.name)
            .collect();
        assert_eq!(
            failed,
            [
                "pg_basebackup_options",
                "source node",
                "WAL directory",
                "tablespace target",
                "tablespace target",
                "restore_command",
                "replication slot"
            ],
            "{report:?}"
        );
        assert!(report
            .checks
            .iter()
            .any(|c| c.name == "tablespace target" && c.result.is_ok()));
        assert!(report
            .checks
            .iter()
            .any(|c| c.name == "data directory" && c.result.is_ok()));
        assert!(!data_dir.exists() && !root.path().join("new").exists());
        let mut text = Vec::new();
        report.write(&mut text).unwrap();
        let text = String::from_utf8(text).unwrap();
        assert!(text.ends_with("7 problem(s) found\n"), "{text}");
    }

    #[test]
    fn free_space_is_read_from_the_nearest_existing_ancestor() {
        let root = tempfile::tempdir().unwrap();
        assert!(free_bytes(&root.path().join("not/yet")).unwrap() > 0);
        let error = free_disk_check(root.path(), u64::MAX).unwrap_err();
        assert!(error.message.contains("not enough free disk"), "{error:?}");
    }
}
