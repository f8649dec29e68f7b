//! `clone start --dry-run`: every check a real run makes before it changes anything — the
//! state directory apart from the directories to write and no other run writing them, what a
//! start would do with an earlier clone of the directory (an unfinished one stops it: exit 42),
//! Barman reachable and the backup restorable, the source node reachable with the right
//! settings and not running in the target, the data directory, WAL directory and tablespace
//! targets usable, free disk for the copy on each of their file systems, the restore_command
//! runnable, the replication slot usable — collected into a [`Report`] that lists every check
//! and every problem, not only the first.
//!
//! It changes nothing anywhere: no files, no slots, no API operations, no store records (the
//! state directory is only read, never created). It calls the same read-only checks as the
//! steps (`preflight`, `datadir`, `slots`, the Barman client, `diskspace`), so a dry run cannot
//! drift from what a run checks; a start that replaces an earlier record runs them too
//! ([`check_silently`]).

use crate::barman::Barman;
use crate::error::{Error, ErrorKind, Result};
use crate::pg_tools::pg_program;
use crate::preflight::{check_restore_command, check_restored, inspect_source, verify_with_api};
use crate::progress::human_bytes;
use crate::slots::{check_slot, slot_name};
use crate::store::StateDir;
use crate::transfer::barman_rsync;
use crate::transfer::basebackup::BaseBackupOptions;
use crate::{datadir, dirlock, diskspace};
use states::{
    CloneId, CloneRecord, CloneRequest, Existing, Mode, SourceParams, StartDecision,
    TablespaceTarget,
};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

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

    /// The report as data, for `--json` (docs/json.md): every check with what it found or its
    /// error, the warnings and the number of problems.
    pub fn to_json(&self) -> serde_json::Value {
        let checks: Vec<_> = self
            .checks
            .iter()
            .map(|check| match &check.result {
                Ok(found) => serde_json::json!({ "name": check.name, "ok": true, "found": found }),
                Err(e) => serde_json::json!({
                    "name": check.name,
                    "ok": false,
                    "error": crate::app::result::error_value(e),
                }),
            })
            .collect();
        serde_json::json!({
            "checks": checks,
            "warnings": self.warnings,
            "problems": self.problems().len(),
        })
    }

    /// Writes the report for the operator: one line per check, then the warnings and a total.
    /// A problem's words (message, DETAIL, HINT) are the ERROR lines on stderr, in the same
    /// order: the report points to them rather than print them a second time.
    pub fn write(&self, out: &mut impl Write) -> std::io::Result<()> {
        writeln!(out, "dry run ({} mode):", self.mode.label())?;
        let total = self.problems().len();
        let mut problem = 0;
        for check in &self.checks {
            match &check.result {
                Ok(found) => writeln!(out, "  ok       {}: {found}", check.name)?,
                Err(_) => {
                    problem += 1;
                    writeln!(
                        out,
                        "  PROBLEM  {}: ERROR {problem} of {total} on stderr",
                        check.name
                    )?
                }
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
/// With the `state_dir` the real run would use, the clone records and the directory locks are
/// checked first, as the real run meets them first.
///
/// With `json`, the report is not written but handed to `json` as data, for the command's
/// `--json` result.
pub async fn run(
    request: &CloneRequest,
    state_dir: Option<&Path>,
    json: Option<&mut crate::app::result::Summary>,
) -> Result<()> {
    crate::notice!("dry run: checking, changing nothing");
    let report = check(request, state_dir).await;
    match json {
        Some(summary) => summary.dry_run(report.to_json()),
        None => report
            .write(&mut std::io::stdout().lock())
            .map_err(Error::output)?,
    }
    let problems = report.problems();
    let Some(first) = problems.first() else {
        crate::notice!("dry run complete: no problems found");
        return Ok(());
    };
    // Each problem once, in order, with its DETAIL and HINT; the exit code is the first's.
    for problem in &problems {
        crate::log::error(problem);
    }
    Err(Error::new(
        first.kind,
        format!(
            "dry run found {} problem(s), each an ERROR above",
            problems.len()
        ),
    )
    .hint("fix them and run the dry run again: a real run would stop at the first"))
}

/// The checks a new clone must pass before it replaces an earlier record (see
/// `states::StartDecision`): every check of a dry run but the records' and the locks' (the
/// caller holds both). The first problem is the error, as a real run would meet it.
pub async fn check_silently(request: &CloneRequest) -> Result<()> {
    let report = check(request, None).await;
    match report.problems().first() {
        Some(first) => Err((*first).clone()),
        None => Ok(()),
    }
}

/// Runs every check of the request's mode without changing anything, and reports them all.
/// With `state_dir`, first what the real run meets first: the state directory apart from the
/// directories to write, no other run writing them, and what a start would do with the
/// record of this data directory.
pub async fn check(request: &CloneRequest, state_dir: Option<&Path>) -> Report {
    let mut report = Report {
        mode: request.mode,
        checks: Vec::new(),
        warnings: Vec::new(),
    };
    if let Some(state_dir) = state_dir {
        check_records(request, state_dir, &mut report);
    }
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
                report.record("ssh cipher", Ok(barman.cipher_choice().describe()));
                report.record(
                    "ssh connection",
                    Ok(crate::barman::mux::describe_for_run(&barman.ssh_options)),
                );
                report.record("copy streams", Ok(describe_jobs(request.jobs)));
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
                            "{} of server \"{}\" can be restored ({}, {}, PostgreSQL {})",
                            facts.backup_id,
                            facts.server,
                            facts.kind.label(),
                            human_bytes(facts.size_bytes),
                            crate::progress::pg_version(facts.pg_version)
                        )
                    }),
                );
                if let Ok(facts) = &resolved {
                    match crate::preflight::check_wal_source(facts, &barman, request) {
                        Ok(warning) => report.warnings.extend(warning),
                        Err(e) => report.record("restore_command", Err(e)),
                    }
                }
                backup = resolved.ok();
            }
            Err(e) => report.record("Barman server", Err(e)),
        },
        Mode::BackupApi => {
            // Read-only calls only: /status and the operation list; never a POST.
            let verified = match &request.backup_api {
                Some(target) => verify_with_api(target, Some(API_RETRY_FOR)).await,
                None => Err(Error::bug(
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
                    crate::progress::pg_version(params.server_version_num),
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
        if let Some(backup) = backup.as_ref().filter(|b| b.kind.is_staged()) {
            // A staged kind's space is the staging check's, the data directory's included.
            let needs = crate::transfer::staged_copy_needs(
                backup,
                Path::new(&request.data_dir),
                request.waldir.as_deref().map(Path::new),
                Path::new(&request.staging_dir()),
                0,
            );
            report.record(
                "staging space",
                diskspace::check(&needs).map_err(|e| crate::transfer::staging_space_hint(e, None)),
            );
        } else if let Some(needs) = space_needs(request, backup.as_ref(), params.as_ref()).await {
            report.record(
                "free disk",
                needs.and_then(|needs| diskspace::check(&needs)),
            );
        }
    }
    if let Some(command) = &request.replication.restore_command {
        report.record("restore_command", check_restore_command(command).await);
    }
    if let Some(params) = &params {
        // What the standby will stream with (no password shown: one from the password file or
        // PGPASSWORD joins it only in the written file, under use_primary_conninfo_password).
        report.record(
            "primary_conninfo",
            crate::slots::streaming_upstream(request, &params.upstream_conninfo).map(|upstream| {
                crate::replication_conf::primary_conninfo_for(request, &upstream, None)
            }),
        );
    }
    if request.replication.use_replication_slots {
        report.record(
            "replication slot",
            slot_check(request, params.as_ref()).await,
        );
    }
    report
}

/// The streams the copy will run, beside the default this host gives.
fn describe_jobs(jobs: u32) -> String {
    format!(
        "{jobs} (--jobs; the default here is {}: this host's cores, at most {})",
        crate::request::default_jobs(),
        states::DEFAULT_JOBS_MAX
    )
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
        .detail(crate::child_output::detail_of(&output.stderr))
        .hint("install the PostgreSQL client programs of the source's major version, or set pg_bindir in repmgr.conf")),
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

/// What the copy will need where, as the Transfer step counts it before its first byte: the
/// backup's files per target directory (Barman: from the backup's file list, less what the
/// directories already hold), the source's size (pg_basebackup, pg-backup-api). `None` when
/// the size is unknown (the backup or the source could not be reached: reported already).
async fn space_needs(
    request: &CloneRequest,
    backup: Option<&states::BackupFacts>,
    params: Option<&SourceParams>,
) -> Option<Result<Vec<diskspace::Need>>> {
    let data_dir = Path::new(&request.data_dir);
    match (request.mode, backup, params) {
        (Mode::BarmanRsync, Some(backup), _) => {
            let barman = match Barman::for_request(request) {
                Ok(barman) => barman,
                Err(e) => return Some(Err(e)),
            };
            let targets =
                datadir::tablespace_targets(&backup.tablespaces, &request.tablespace_mapping);
            let listed = barman_rsync::list_backup(&barman, backup, request).await;
            Some(listed.map(|entries| {
                barman_rsync::space_needs(
                    &entries,
                    data_dir,
                    request.waldir.as_deref().map(Path::new),
                    &targets,
                )
            }))
        }
        (Mode::BaseBackup | Mode::BackupApi, _, Some(params)) => {
            Some(Ok(crate::transfer::whole_copy_needs(
                data_dir,
                request.waldir.as_deref().map(Path::new),
                params.installation_size,
            )))
        }
        _ => None,
    }
}

/// The clone records and the directory locks, as a real start meets them before anything
/// else: the state directory must lie outside every directory to write, no other run may be
/// writing them, and an unfinished clone of this directory that has begun copying stops a
/// start without `--force` (exit 42).
fn check_records(request: &CloneRequest, state_dir: &Path, report: &mut Report) {
    let id = CloneId::for_data_dir(&request.data_dir);
    let provisional = CloneRecord::new(id.clone(), request.clone(), 0);
    let targets = dirlock::targets(&provisional);
    let apart = targets
        .iter()
        .try_for_each(|(path, role)| dirlock::check_apart(state_dir, path, *role));
    report.record(
        "state directory",
        apart.map(|()| {
            format!(
                "\"{}\", apart from the directories to write",
                state_dir.display()
            )
        }),
    );
    let mut locked = Ok("no other run writes the directories".to_string());
    for (path, role) in &targets {
        match dirlock::probe(path, *role) {
            Ok(None) => {}
            Ok(Some(held)) | Err(held) => {
                locked = Err(held);
                break;
            }
        }
    }
    report.record("directory lock", locked);
    report.record("clone record", record_check(request, state_dir, &id));
}

/// What a start would do with the record kept for this data directory, read without creating
/// or changing anything.
fn record_check(request: &CloneRequest, state_dir: &Path, id: &CloneId) -> Result<String> {
    let Some(state) = StateDir::existing(state_dir)? else {
        return Ok("none yet: a new clone would be recorded".to_string());
    };
    if !state.clone_ids()?.contains(id) {
        return Ok("none yet: a new clone would be recorded".to_string());
    }
    let view = match state.read_status(id) {
        Ok(view) => view,
        Err(e) if e.kind == ErrorKind::Store => {
            return match StartDecision::of(Existing::Damaged, request.force) {
                StartDecision::Refuse(_) => Err(crate::records::damaged(e, id)),
                _ => Ok(format!(
                    "clone {id} is unreadable and would be discarded (-F/--force)"
                )),
            };
        }
        Err(e) => return Err(e),
    };
    if view.running {
        return Err(crate::records::running(
            id,
            view.pid,
            "wait for it to finish",
        ));
    }
    match StartDecision::of(Existing::Record(&view.record), request.force) {
        StartDecision::Create => Ok("none yet: a new clone would be recorded".to_string()),
        StartDecision::Refuse(_) => Err(crate::records::unfinished(&view.record)),
        StartDecision::Replace(reason) => Ok(format!(
            "{} once these checks pass",
            crate::records::replacing(Some(&view.record), reason)
        )),
    }
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
        let report = check(&request, None).await;
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
}
