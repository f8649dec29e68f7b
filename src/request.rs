//! From repmgr.conf and the command line to a [`CloneRequest`]: mode selection as repmgr does
//! it, the data directory, and every setting a resumed clone must reuse unchanged.
//!
//! This is the only place that knows how configuration keys and flags combine; the steps read the
//! request, never the configuration file.

use crate::cli::StartArgs;
use crate::config::Config;
use crate::error::{Error, ErrorKind, Result};
use states::{CloneRequest, Mode, SourceConn};
use std::path::{Component, Path, PathBuf};

/// Mode selection, as `repmgr standby clone` does it (reference/repmgr.md):
/// `--replication-conf-only` wins; then Barman unless `--without-barman`; then pg-backup-api;
/// else pg_basebackup.
pub fn select_mode(args: &StartArgs, config: &Config) -> Mode {
    if args.replication_conf_only {
        Mode::ReplicationConfOnly
    } else if config.barman_host.is_some() && !args.without_barman {
        Mode::BarmanRsync
    } else if config.pg_backupapi_host.is_some() && !args.without_barman {
        Mode::BackupApi
    } else {
        Mode::BaseBackup
    }
}

/// Builds the request; errors are configuration errors (exit 1).
pub fn build(
    args: &StartArgs,
    config: &Config,
    config_file: Option<&Path>,
) -> Result<CloneRequest> {
    let data_dir = match (&args.data_dir, &config.data_directory) {
        (Some(dir), _) => dir.clone(),
        (None, Some(dir)) => dir.clone(),
        (None, None) => {
            return Err(Error::new(ErrorKind::Config, "no data directory given")
                .hint("use -D/--pgdata, or set data_directory in repmgr.conf"));
        }
    };
    let data_dir = absolute(&data_dir)?;
    let mode = select_mode(args, config);
    let (dbname, password_taken) = crate::source::take_password_from_dbname(args.dbname.as_deref());
    if password_taken {
        crate::warning!(
            "the password given with -d is used for this run only and is not stored with the clone"
        );
        crate::log::hint(
            "for \"clone resume\", provide it with PGPASSWORD or a password file (passfile)",
        );
    }
    let source = SourceConn {
        host: args.host.clone(),
        port: args.port,
        user: args.user.clone(),
        dbname: dbname
            .map(|d| crate::source::with_absolute_paths(&d))
            .transpose()?,
    };
    // Every keyword and PG* variable is checked now, before anything is recorded: a refused
    // or misspelt one is a configuration error at once, not a failed step later.
    crate::source::Target::resolve(&source)?;
    Ok(CloneRequest {
        mode,
        data_dir: data_dir.display().to_string(),
        config_file: config_file.map(|p| p.display().to_string()),
        node_id: config.node_id,
        node_name: config.node_name.clone(),
        source,
        upstream_node_id: args.upstream_node_id,
        backup_selector: args.backup_id.clone(),
        jobs: args.jobs,
        force: args.force,
        bwlimit_kbps: args.bwlimit,
        waldir: config.waldir().map(|p| p.display().to_string()),
        tablespace_mapping: config.tablespace_mapping.clone(),
        barman: config.barman_target().filter(|_| mode == Mode::BarmanRsync),
        backup_api: config.api_target().filter(|_| mode == Mode::BackupApi),
        ssh_options: config.ssh_args().to_vec(),
        pg_bindir: config.pg_bindir.as_ref().map(|p| p.display().to_string()),
        pg_basebackup_options: config.pg_basebackup_args().to_vec(),
        replication: config.replication_settings(),
    })
}

/// Makes `path` absolute against the current directory and removes `.`/`..` lexically, so that
/// one data directory always gives one clone id.
pub fn absolute(path: &Path) -> Result<PathBuf> {
    let joined = if path.is_absolute() {
        path.to_path_buf()
    } else {
        std::env::current_dir()
            .map_err(|e| {
                Error::new(
                    ErrorKind::System,
                    format!("cannot read the current directory: {e}"),
                )
            })?
            .join(path)
    };
    let mut normal = PathBuf::new();
    for component in joined.components() {
        match component {
            Component::ParentDir => {
                normal.pop();
            }
            Component::CurDir => {}
            other => normal.push(other),
        }
    }
    Ok(normal)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_normalised() {
        assert_eq!(
            absolute(Path::new("/srv/./pg/../data/")).unwrap(),
            PathBuf::from("/srv/data")
        );
        assert!(absolute(Path::new("rel")).unwrap().is_absolute());
    }
}
