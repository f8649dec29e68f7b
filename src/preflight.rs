//! Read-only checks that the steps run and `--dry-run` runs ahead of them: the source node can
//! feed a standby ([`inspect_source`]), a directory restored by other means belongs to it
//! ([`check_restored`]), pg-backup-api answers for the server ([`verify_with_api`]).
//!
//! Nothing here changes anything on disk or on a server, so a dry run can call every function
//! and report every problem; the steps call the same functions so that a dry run predicts what
//! the real run meets.

use crate::error::{Error, ErrorKind, Result};
use crate::pg_tools::pg_program;
use crate::progress::human_bytes;
use crate::source::{SourceNode, Target};
use states::{ApiTarget, BackupFacts, CloneRequest, SourceParams};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// How long `barman-wal-restore --test` may take.
const RESTORE_TEST_TIMEOUT: Duration = Duration::from_secs(60);

/// `--replication-conf-only`: the data directory must hold a copy of the source's cluster (same
/// major version in `PG_VERSION`, same system identifier in `pg_control`) and must not be
/// running — unless `--force`, since writing the configuration of a running server only takes
/// effect at its next start. Changes nothing; `--dry-run` calls it too.
pub async fn check_restored(request: &CloneRequest, params: &SourceParams) -> Result<()> {
    check_restored_not_running(request)?;
    let data_dir = Path::new(&request.data_dir);
    let not_restored = |what: String| {
        Error::new(
            ErrorKind::System,
            format!("\"{}\" is not a restored PostgreSQL data directory: {what}", data_dir.display()),
        )
        .hint("restore the data directory first (e.g. \"barman restore\"), or clone it without --replication-conf-only")
    };
    let version_file = data_dir.join("PG_VERSION");
    let version = std::fs::read_to_string(&version_file)
        .map_err(|e| not_restored(format!("cannot read \"{}\": {e}", version_file.display())))?;
    let major = params.server_version_num / 10_000;
    if version.trim() != major.to_string() {
        return Err(Error::new(
            ErrorKind::Config,
            format!(
                "data directory \"{}\" is of PostgreSQL {} but the source node runs {major}",
                data_dir.display(),
                version.trim()
            ),
        )
        .hint("a standby must run the same major version as its upstream"));
    }
    let system_id = control_system_identifier(request, params.server_version_num).await?;
    if system_id != params.system_identifier {
        return Err(Error::new(
            ErrorKind::Config,
            format!(
                "data directory \"{}\" belongs to another cluster (system identifier {system_id}, source node {})",
                data_dir.display(),
                params.system_identifier
            ),
        )
        .hint("restore a backup of the source node's cluster, or check -h/-p of the source node"));
    }
    crate::info!(
        "data directory \"{}\" holds a copy of the source's cluster (PostgreSQL {major}, system identifier {system_id})",
        data_dir.display()
    );
    Ok(())
}

/// `--replication-conf-only`: the restored directory must not lie inside a running cluster's
/// data directory (never), nor run a cluster itself unless `--force` (its configuration then
/// takes effect at its next start). FetchParams checks it, and every resume again before
/// WriteReplicationConf.
pub fn check_restored_not_running(request: &CloneRequest) -> Result<()> {
    let data_dir = Path::new(&request.data_dir);
    crate::running::check_not_nested(data_dir, "data directory")?;
    let Some(postmaster) = crate::running::postmaster_of(data_dir)? else {
        return Ok(());
    };
    let running = format!(
        "PostgreSQL is running in data directory \"{}\" (pid {})",
        data_dir.display(),
        postmaster.pid
    );
    if !request.force {
        return Err(Error::new(ErrorKind::System, running).hint(format!(
            "stop it first ({}), or run clone start with -F/--force to write the configuration anyway; it takes effect at the next start",
            postmaster.stop_command()
        )));
    }
    crate::warning!(
        "{running}; -F/--force provided: writing the replication configuration anyway, it takes effect at the next start"
    );
    Ok(())
}

/// Whether the data directory still holds the cluster `params` describe: `PG_VERSION` of its
/// major version and its system identifier in `global/pg_control`. For `clone ensure` on a
/// finished clone: a directory deleted, emptied or replaced since is cloned again.
pub async fn holds_cluster(request: &CloneRequest, params: &SourceParams) -> Result<bool> {
    let data_dir = Path::new(&request.data_dir);
    let version = std::fs::read_to_string(data_dir.join("PG_VERSION")).unwrap_or_default();
    if version.trim() != (params.server_version_num / 10_000).to_string() {
        return Ok(false);
    }
    match control_system_identifier(request, params.server_version_num).await {
        Ok(system_id) => Ok(system_id == params.system_identifier),
        // No readable pg_control: the copy is not (or no longer) complete.
        Err(e) if e.kind == ErrorKind::System => Ok(false),
        Err(e) => Err(e),
    }
}

/// The system identifier in the data directory's `global/pg_control`, from `pg_controldata`
/// (VerifyCopy checks a pg-backup-api restore with it too).
pub async fn control_system_identifier(request: &CloneRequest, version: u32) -> Result<String> {
    let program = pg_program(request.pg_bindir.as_deref(), version, "pg_controldata");
    let output = crate::pg_tools::run(&program, [&request.data_dir]).await?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    let found = stdout.lines().find_map(|line| {
        line.strip_prefix("Database system identifier:")
            .map(|id| id.trim().to_string())
    });
    match found {
        Some(id) if output.status.success() => Ok(id),
        _ => Err(Error::new(
            ErrorKind::System,
            format!(
                "cannot read the system identifier of \"{}\" with pg_controldata",
                request.data_dir
            ),
        )
        .detail(crate::child_output::detail_of(&output.stderr))
        .hint("the data directory must hold a complete copy, global/pg_control included")),
    }
}

/// Connects to the source node and checks that a standby can replicate from it. Returns the
/// parameters and the warnings (problems that do not stop the clone). Used by `--dry-run` too.
pub async fn inspect_source(
    request: &CloneRequest,
    backup: Option<&BackupFacts>,
) -> Result<(SourceParams, Vec<String>)> {
    let target = Target::resolve(&request.source)?;
    crate::info!("connecting to source node");
    let node = SourceNode::connect(&target, request.replication.passfile.as_deref()).await?;
    let facts = node.facts().await?;
    // Run on the source's own host with -D naming its own data directory, the clone would
    // turn the primary into a standby of itself: refused in every mode, whatever the options.
    crate::running::refuse_source_dir(Path::new(&request.data_dir), &node.server().await?)?;
    crate::info!(
        "current installation size is {}",
        human_bytes(facts.installation_size)
    );
    let mut warnings = Vec::new();
    if !matches!(
        facts.wal_level.as_str(),
        "replica" | "logical" | "hot_standby" | "archive"
    ) {
        return Err(Error::new(
            ErrorKind::Config,
            format!(
                "parameter \"wal_level\" on the source node is \"{}\"; a standby needs \"replica\"",
                facts.wal_level
            ),
        )
        .hint("set wal_level = replica on the source node and restart it"));
    }
    if facts.max_wal_senders < 1 {
        return Err(Error::new(
            ErrorKind::Config,
            "parameter \"max_wal_senders\" on the source node is 0; a standby cannot stream",
        )
        .hint("set max_wal_senders (e.g. 10) on the source node and restart it"));
    }
    if !facts.hot_standby {
        warnings.push(
            "hot_standby is off on the source node: the standby will not accept read-only queries"
                .to_string(),
        );
    }
    // pg-backup-api mode knows neither the backup's version nor its WAL (pg_version 0).
    if let Some(backup) = backup.filter(|b| b.pg_version != 0) {
        check_backup_matches(backup, &facts)?;
        if request.replication.restore_command.is_none()
            && node.holds_wal_segment(&backup.begin_wal).await == Some(false)
        {
            warnings.push(format!(
                "the source node no longer holds WAL segment {} that backup {} starts from, and no restore_command is configured: the standby cannot reach consistency by streaming alone; set restore_command (e.g. barman-wal-restore)",
                backup.begin_wal, backup.backup_id
            ));
        }
    }
    let upstream = node.repmgr_node(request.upstream_node_id).await?;
    let (upstream_node_id, upstream_conninfo) = match (upstream, request.upstream_node_id) {
        (Some(node), _) => (
            Some(node.node_id),
            // repmgr's record, as repmgr uses it; the TLS settings that reached the source fill
            // in what it lacks, so the slot's connection and the standby reach the upstream as
            // securely (a record registered without sslmode would otherwise send the
            // walreceiver in clear text, or be refused by a TLS-only upstream).
            crate::conninfo::Conninfo::parse(&node.conninfo)
                .map(|c| {
                    let mut upstream = c.without_password();
                    upstream.merge_defaults(&target.tls_conninfo());
                    upstream.render()
                })
                .unwrap_or_else(|_| target.conninfo()),
        ),
        (None, Some(id)) => {
            return Err(Error::new(
                ErrorKind::Config,
                format!("upstream node {id} is not in repmgr.nodes on the source node"),
            )
            .hint("check --upstream-node-id with \"repmgr cluster show\""));
        }
        (None, None) => (None, target.conninfo()),
    };
    Ok((
        SourceParams {
            server_version_num: facts.server_version_num,
            system_identifier: facts.system_identifier,
            installation_size: facts.installation_size,
            upstream_node_id,
            upstream_conninfo,
            ..SourceParams::default()
        },
        warnings,
    ))
}

/// A backup of another cluster, or of another major version, can never stream from this node.
fn check_backup_matches(backup: &BackupFacts, facts: &crate::source::NodeFacts) -> Result<()> {
    if let Some(system_id) = &backup.system_id {
        if *system_id != facts.system_identifier {
            return Err(Error::new(
                ErrorKind::Barman,
                format!(
                    "backup {} belongs to another cluster (system identifier {system_id}, source node {})",
                    backup.backup_id, facts.system_identifier
                ),
            )
            .hint("check barman_server in repmgr.conf and -h/-p of the source node"));
        }
    }
    if backup.pg_version / 10_000 != facts.server_version_num / 10_000 {
        return Err(Error::new(
            ErrorKind::Barman,
            format!(
                "backup {} is of PostgreSQL {} but the source node runs {}",
                backup.backup_id,
                crate::progress::pg_version(backup.pg_version),
                crate::progress::pg_version(facts.server_version_num)
            ),
        )
        .hint("a standby must run the same major version as its upstream"));
    }
    Ok(())
}

/// pg-backup-api mode: the API answers and knows the server. Whether the backup exists cannot
/// be checked without starting a restore (the API has no endpoint for it): the POST answers 404
/// if it does not, before anything is written. The facts hold what is known: the backup id as
/// configured (a shortcut stays a shortcut: Barman resolves it), no manifest, size and version
/// unknown (0).
///
/// Each call keeps retrying transient failures for `retry_for` when given, else for the
/// client's default (generous: a clone waits out an API restart; a dry run should not).
pub async fn verify_with_api(
    target: &ApiTarget,
    retry_for: Option<Duration>,
) -> Result<BackupFacts> {
    let mut api = crate::backup_api::BackupApi::from_target(target)?;
    if let Some(retry_for) = retry_for {
        api = api.with_retry_for(retry_for);
    }
    crate::info!(
        "connecting to pg-backup-api at {} to verify backup for \"{}\"",
        api.base(),
        api.server()
    );
    api.check_status().await?;
    let operations = api.list_operations().await?;
    crate::info!(
        "pg-backup-api knows Barman server \"{}\" ({} operation(s) so far)",
        api.server(),
        operations.len()
    );
    crate::notice!(
        "pg-backup-api cannot tell whether backup \"{}\" exists without starting the restore; a missing backup is reported when the restore is requested",
        target.backup_id
    );
    Ok(BackupFacts {
        backup_id: target.backup_id.clone(),
        server: target.node_name.clone(),
        data_subdir: "data".to_string(),
        has_manifest: false,
        ..BackupFacts::default()
    })
}

/// For an encrypted backup, checks where the standby will get WAL (see
/// [`states::BackupKind::wal_source`]): a `restore_command` other than barman-wal-restore is
/// refused (exit 1), since the archive's WAL files are encrypted; none at all gives the warning
/// returned, for the caller to show.
pub fn check_wal_source(
    backup: &BackupFacts,
    barman: &crate::barman::Barman,
    request: &CloneRequest,
) -> Result<Option<String>> {
    let suggested = format!(
        "restore_command='barman-wal-restore -U {} {} {} %f %p'",
        barman
            .host
            .split_once('@')
            .map_or("barman", |(user, _)| user),
        barman
            .host
            .split_once('@')
            .map_or(barman.host.as_str(), |(_, host)| host),
        barman.server
    );
    match backup
        .kind
        .wal_source(request.replication.restore_command.as_deref())
    {
        states::WalSource::Fine => Ok(None),
        states::WalSource::StreamingOnly => Ok(Some(format!(
            "backup {} is encrypted and so is its WAL archive: without a restore_command the standby can only stream from its upstream; {suggested} fetches decrypted WAL from Barman",
            backup.backup_id
        ))),
        states::WalSource::Unusable(program) => Err(Error::new(
            ErrorKind::Config,
            format!(
                "restore_command runs \"{program}\", which cannot read the WAL archive of the encrypted backup {}",
                backup.backup_id
            ),
        )
        .detail("Barman encrypts the WAL files of an encrypted server; only \"barman get-wal\", which barman-wal-restore runs on the Barman host, decrypts them")
        .hint(format!("set {suggested} in repmgr.conf"))),
    }
}

/// `barman-wal-restore … --test` when restore_command is one (the connection to Barman and the
/// server's configuration are tested, nothing is fetched); otherwise only that its program
/// exists. FetchParams runs it before anything is copied, and `--dry-run` too.
pub async fn check_restore_command(command: &str) -> Result<String> {
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
        let error = unusable(format!(
            "fails its test (barman-wal-restore --test, exit code {})",
            output.status.code().unwrap_or(-1)
        ));
        // Barman's own complaint (an unknown server, say) comes back on stdout through ssh.
        let said = [&output.stderr, &output.stdout]
            .map(|bytes| crate::child_output::detail_of(bytes))
            .into_iter()
            .find(|text| !text.is_empty());
        return Err(match said {
            Some(text) => error.detail(text),
            None => error,
        });
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A stand-in `barman-wal-restore` in a directory of its own that prints `script`'s output.
    fn fake(dir: &Path, script: &str) -> String {
        use std::os::unix::fs::PermissionsExt;
        let path = dir.join("barman-wal-restore");
        std::fs::write(&path, format!("#!/bin/sh\n{script}\n")).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        format!("{} -U barman 127.0.0.1 pg %f %p", path.display())
    }

    #[tokio::test]
    async fn a_failed_test_says_what_barman_said_wherever_it_said_it() {
        let dir = tempfile::tempdir().unwrap();
        let on_stdout = fake(dir.path(), "echo \"ERROR: Unknown server 'pg'\"; exit 1");
        let error = check_restore_command(&on_stdout).await.unwrap_err();
        assert_eq!(error.exit_code(), 1);
        assert!(error
            .message
            .ends_with("fails its test (barman-wal-restore --test, exit code 1)"));
        assert_eq!(error.detail.as_deref(), Some("ERROR: Unknown server 'pg'"));
        let silent = fake(dir.path(), "exit 255");
        let error = check_restore_command(&silent).await.unwrap_err();
        assert_eq!(error.detail, None, "no DETAIL that says nothing");
        let ready = fake(dir.path(), "echo 'Ready to retrieve WAL files'");
        assert_eq!(
            check_restore_command(&ready).await.unwrap(),
            "barman-wal-restore --test passed"
        );
    }
}
