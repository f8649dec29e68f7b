//! From repmgr.conf and the command line to a [`CloneRequest`]: mode selection as repmgr does
//! it, the data directory, and every setting a resumed clone must reuse unchanged.
//!
//! This is the only place that knows how configuration keys and flags combine; the steps read the
//! request, never the configuration file.

use crate::cli::StartArgs;
use crate::config::{split_args, Config};
use crate::error::{Error, ErrorKind, Result};
use states::{ApiTarget, BarmanTarget, CloneRequest, Mode, ReplicationSettings, SourceConn};
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
pub fn build(args: &StartArgs, config: &Config, config_file: Option<&Path>) -> Result<CloneRequest> {
    let data_dir = match (&args.data_dir, &config.data_directory) {
        (Some(dir), _) => dir.clone(),
        (None, Some(dir)) => PathBuf::from(dir),
        (None, None) => {
            return Err(Error::new(ErrorKind::Config, "no data directory given")
                .hint("use -D/--pgdata, or set data_directory in repmgr.conf"));
        }
    };
    let data_dir = absolute(&data_dir)?;
    let mode = select_mode(args, config);
    let ssh_options = match &config.ssh_options {
        Some(text) => split_args(text).map_err(|e| {
            Error::new(ErrorKind::Config, format!("ssh_options cannot be split into arguments: {e}"))
        })?,
        None => Vec::new(),
    };
    let pg_basebackup_options = match &config.pg_basebackup_options {
        Some(text) => split_args(text).map_err(|e| {
            Error::new(
                ErrorKind::Config,
                format!("pg_basebackup_options cannot be split into arguments: {e}"),
            )
        })?,
        None => Vec::new(),
    };
    let barman = match (&config.barman_host, &config.barman_server) {
        (Some(host), Some(server)) if mode == Mode::BarmanRsync => Some(BarmanTarget {
            host: host.clone(),
            server: server.clone(),
            config: config.barman_config.clone(),
        }),
        _ => None,
    };
    let backup_api = match &config.pg_backupapi_host {
        Some(host) if mode == Mode::BackupApi => Some(ApiTarget {
            host: host.clone(),
            node_name: config.pg_backupapi_node_name.clone().unwrap_or_default(),
            remote_ssh_command: config.pg_backupapi_remote_ssh_command.clone().unwrap_or_default(),
            backup_id: config.pg_backupapi_backup_id.clone().unwrap_or_default(),
            ca_file: config.pg_backupapi_ca_file.clone(),
            cert_file: config.pg_backupapi_cert_file.clone(),
            key_file: config.pg_backupapi_key_file.clone(),
            stall_timeout_secs: config.pg_backupapi_stall_timeout,
        }),
        _ => None,
    };
    Ok(CloneRequest {
        mode,
        data_dir: data_dir.display().to_string(),
        config_file: config_file.map(|p| p.display().to_string()),
        node_id: config.node_id,
        node_name: config.node_name.clone(),
        source: SourceConn {
            host: args.host.clone(),
            port: args.port,
            user: args.user.clone(),
            dbname: args.dbname.clone(),
        },
        upstream_node_id: args.upstream_node_id,
        backup_selector: args.backup_id.clone(),
        jobs: args.jobs,
        force: args.force,
        bwlimit_kbps: args.bwlimit,
        waldir: config.waldir(),
        tablespace_mapping: config.tablespace_mapping.clone(),
        barman,
        backup_api,
        ssh_options,
        pg_bindir: config.pg_bindir.clone(),
        pg_basebackup_options,
        replication: ReplicationSettings {
            replication_user: config.replication_user.clone(),
            use_replication_slots: config.use_replication_slots,
            restore_command: config.restore_command.clone(),
            archive_cleanup_command: config.archive_cleanup_command.clone(),
            recovery_min_apply_delay: config.recovery_min_apply_delay.clone(),
            use_primary_conninfo_password: config.use_primary_conninfo_password,
            passfile: config.passfile.clone(),
        },
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
                Error::new(ErrorKind::System, format!("cannot read the current directory: {e}"))
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
        assert_eq!(absolute(Path::new("/srv/./pg/../data/")).unwrap(), PathBuf::from("/srv/data"));
        assert!(absolute(Path::new("rel")).unwrap().is_absolute());
    }
}
