//! From repmgr.conf and the command line to a [`CloneRequest`]: mode selection as repmgr does
//! it, the data directory, and every setting a resumed clone must reuse unchanged.
//!
//! This is the only place that knows how configuration keys and flags combine; the steps read the
//! request, never the configuration file.

use crate::cli::StartArgs;
use crate::config::Config;
use crate::error::{Error, ErrorKind, Result};
use states::{ApiTarget, CloneRequest, Mode, SourceConn};
use std::path::{Component, Path, PathBuf};

/// The flags of `clone start` that shape a request: from the command line, or as a recorded
/// request remembers them (to compare it with today's repmgr.conf).
struct Flags<'a> {
    data_dir: Option<PathBuf>,
    replication_conf_only: bool,
    without_barman: bool,
    host: Option<String>,
    port: Option<u16>,
    user: Option<String>,
    dbname: Option<&'a str>,
    upstream_node_id: Option<i32>,
    /// `--upstream-conninfo`: primary_conninfo's connection settings, given.
    upstream_conninfo: Option<&'a str>,
    /// `--backup-id` when given (pg-backup-api mode restores `pg_backupapi_backup_id`).
    backup_id: Option<String>,
    jobs: u32,
    force: bool,
    bwlimit: Option<u32>,
    /// `-c/--fast-checkpoint`: `--checkpoint=fast` for pg_basebackup.
    fast_checkpoint: bool,
    /// `--recovery-min-apply-delay`, which overrides repmgr.conf's.
    recovery_min_apply_delay: Option<String>,
}

impl<'a> Flags<'a> {
    fn of(args: &'a StartArgs) -> Flags<'a> {
        Flags {
            data_dir: args.data_dir.clone(),
            replication_conf_only: args.replication_conf_only,
            without_barman: args.without_barman,
            host: args.host.clone(),
            port: args.port,
            user: args.user.clone(),
            dbname: args.dbname.as_deref(),
            upstream_node_id: args.upstream_node_id,
            upstream_conninfo: args.repmgr.upstream_conninfo.as_deref(),
            backup_id: args.backup_id.clone(),
            jobs: args.jobs.unwrap_or_else(default_jobs),
            force: args.force,
            bwlimit: args.bwlimit,
            fast_checkpoint: args.repmgr.fast_checkpoint,
            recovery_min_apply_delay: args.repmgr.recovery_min_apply_delay.clone(),
        }
    }

    /// The flags a recorded request was started with (as far as the request tells them:
    /// pg_basebackup mode counts as `--without-barman`; in pg-backup-api mode the backup came
    /// from `pg_backupapi_backup_id`, not from `--backup-id`).
    fn recorded(request: &'a CloneRequest) -> Flags<'a> {
        Flags {
            data_dir: Some(PathBuf::from(&request.data_dir)),
            replication_conf_only: request.mode == Mode::ReplicationConfOnly,
            without_barman: request.mode == Mode::BaseBackup,
            host: request.source.host.clone(),
            port: request.source.port,
            user: request.source.user.clone(),
            dbname: request.source.dbname.as_deref(),
            upstream_node_id: request.upstream_node_id,
            upstream_conninfo: request.upstream_conninfo.as_deref(),
            backup_id: (request.mode != Mode::BackupApi).then(|| request.backup_selector.clone()),
            jobs: request.jobs,
            force: request.force,
            bwlimit: request.bwlimit_kbps,
            fast_checkpoint: request
                .pg_basebackup_options
                .iter()
                .any(|o| o == FAST_CHECKPOINT),
            // Recorded whether it came from the flag or from repmgr.conf: taken as the flag,
            // so a resume never reports the flag's value as a change of repmgr.conf.
            recovery_min_apply_delay: request.replication.recovery_min_apply_delay.clone(),
        }
    }
}

/// What `-c/--fast-checkpoint` adds to pg_basebackup's options.
const FAST_CHECKPOINT: &str = "--checkpoint=fast";

/// Mode selection, as `repmgr standby clone` does it (reference/repmgr.md):
/// `--replication-conf-only` wins; then Barman unless `--without-barman`; then pg-backup-api;
/// else pg_basebackup.
pub fn select_mode(args: &StartArgs, config: &Config) -> Mode {
    mode_of(&Flags::of(args), config)
}

fn mode_of(flags: &Flags<'_>, config: &Config) -> Mode {
    if flags.replication_conf_only {
        Mode::ReplicationConfOnly
    } else if config.barman_host.is_some() && !flags.without_barman {
        Mode::BarmanRsync
    } else if config.pg_backupapi_host.is_some() && !flags.without_barman {
        Mode::BackupApi
    } else {
        Mode::BaseBackup
    }
}

/// Why [`select_mode`] chose `mode`, for the operator: the flag or the key (with its file and
/// line) that decided it.
pub fn mode_reason(args: &StartArgs, config: &Config, mode: Mode) -> String {
    let key = |key: &str| match config.location(key) {
        Some(location) => format!("{key} is set ({location})"),
        None => format!("{key} is set"),
    };
    match mode {
        Mode::ReplicationConfOnly => "--replication-conf-only was given".to_string(),
        Mode::BarmanRsync => key("barman_host"),
        Mode::BackupApi => key("pg_backupapi_host"),
        Mode::BaseBackup if args.without_barman => "--without-barman was given".to_string(),
        Mode::BaseBackup => {
            "neither barman_host nor pg_backupapi_host is configured: copying from the source node"
                .to_string()
        }
    }
}

/// `--jobs` when the operator names none: [`CloneRequest::default_jobs`] of this host's cores
/// (0, hence 1 stream, when the host cannot tell).
pub fn default_jobs() -> u32 {
    CloneRequest::default_jobs(std::thread::available_parallelism().map_or(0, usize::from))
}

/// Builds the request; errors are configuration errors (exit 1).
pub fn build(
    args: &StartArgs,
    config: &Config,
    config_file: Option<&Path>,
) -> Result<CloneRequest> {
    build_from(&Flags::of(args), config, config_file, true)
}

/// The request `recorded`'s flags give with today's `config`: what a start would record now,
/// for [`CloneRequest::differences`].
pub fn current(
    recorded: &CloneRequest,
    config: &Config,
    config_file: Option<&Path>,
) -> Result<CloneRequest> {
    build_from(&Flags::recorded(recorded), config, config_file, false)
}

/// `pgreplica clone start …` that starts the clone of `request` again with the configuration
/// file `config_file` (and `--force` when asked), quoted for pasting.
pub fn start_command(request: &CloneRequest, config_file: Option<&str>, force: bool) -> String {
    let mut args: Vec<String> = vec!["clone".into(), "start".into()];
    let mut push = |flag: &str, value: Option<String>| {
        if let Some(value) = value {
            args.push(flag.to_string());
            args.push(value);
        }
    };
    push("-f", config_file.map(str::to_string));
    push("-h", request.source.host.clone());
    push("-p", request.source.port.map(|p| p.to_string()));
    push("-U", request.source.user.clone());
    push("-d", request.source.dbname.clone());
    push("-D", Some(request.data_dir.clone()));
    push(
        "--backup-id",
        (request.mode != Mode::BackupApi && request.backup_selector != "latest")
            .then(|| request.backup_selector.clone()),
    );
    push(
        "--jobs",
        (request.jobs != default_jobs()).then(|| request.jobs.to_string()),
    );
    push("--bwlimit", request.bwlimit_kbps.map(|k| k.to_string()));
    push(
        "--upstream-node-id",
        request.upstream_node_id.map(|n| n.to_string()),
    );
    push("--upstream-conninfo", request.upstream_conninfo.clone());
    match request.mode {
        Mode::ReplicationConfOnly => args.push("--replication-conf-only".into()),
        Mode::BaseBackup => args.push("--without-barman".into()),
        Mode::BarmanRsync | Mode::BackupApi => {}
    }
    if force {
        args.push("--force".into());
    }
    crate::paste::pgreplica(&args)
}

fn build_from(
    flags: &Flags<'_>,
    config: &Config,
    config_file: Option<&Path>,
    announce: bool,
) -> Result<CloneRequest> {
    let data_dir = match (&flags.data_dir, &config.data_directory) {
        (Some(dir), _) => dir.clone(),
        (None, Some(dir)) => dir.clone(),
        (None, None) => {
            return Err(Error::new(ErrorKind::Config, "no data directory given")
                .hint("use -D/--pgdata, or set data_directory in repmgr.conf"));
        }
    };
    let data_dir = absolute(&data_dir)?;
    let mode = mode_of(flags, config);
    let (dbname, password_taken) = crate::source::take_password_from_dbname(flags.dbname);
    if password_taken && announce {
        crate::warning!(
            "the password given with -d is used for this run only and is not stored with the clone"
        );
        crate::log::hint(
            "for \"clone resume\", provide it with PGPASSWORD or a password file (passfile)",
        );
    }
    let backup_api = config.api_target().filter(|_| mode == Mode::BackupApi);
    let backup_selector = backup_selector_of(flags, config, backup_api.as_ref())?;
    let source = SourceConn {
        host: flags.host.clone(),
        port: flags.port,
        user: flags.user.clone(),
        dbname: dbname
            .map(|d| crate::source::with_absolute_paths(&d))
            .transpose()?,
    };
    let mut pg_basebackup_options = config.pg_basebackup_args().to_vec();
    if flags.fast_checkpoint && !pg_basebackup_options.iter().any(|o| o == FAST_CHECKPOINT) {
        if mode == Mode::BaseBackup {
            pg_basebackup_options.push(FAST_CHECKPOINT.to_string());
        } else if announce {
            crate::notice!(
                "-c/--fast-checkpoint has no effect in {} mode: the backup is already taken",
                mode.label()
            );
        }
    }
    let mut replication = config.replication_settings();
    if let Some(delay) = &flags.recovery_min_apply_delay {
        crate::config::check_time_units("--recovery-min-apply-delay", delay)?;
        replication.recovery_min_apply_delay = Some(delay.clone());
    }
    // Every keyword and PG* variable is checked now, before anything is recorded: a refused
    // or misspelt one is a configuration error at once, not a failed step later.
    crate::source::Target::resolve(&source)?;
    let upstream_conninfo = flags
        .upstream_conninfo
        .map(|given| upstream_conninfo_of(given, announce))
        .transpose()?;
    Ok(CloneRequest {
        mode,
        data_dir: data_dir.display().to_string(),
        config_file: config_file.map(|p| p.display().to_string()),
        node_id: config.node_id,
        node_name: config.node_name.clone(),
        source,
        upstream_node_id: flags.upstream_node_id,
        upstream_conninfo,
        backup_selector,
        jobs: flags.jobs,
        force: flags.force,
        // The command line wins over repmgr.conf's rsync_options.
        bwlimit_kbps: flags.bwlimit.or(config.rsync_options.bwlimit_kbps),
        waldir: config.waldir().map(|p| p.display().to_string()),
        tablespace_mapping: config.tablespace_mapping.clone(),
        barman: config.barman_target().filter(|_| mode == Mode::BarmanRsync),
        backup_api,
        ssh_options: config.ssh_args().to_vec(),
        pg_bindir: config.pg_bindir.as_ref().map(|p| p.display().to_string()),
        pg_basebackup_options,
        staging_parent: config.staging_dir.as_ref().map(|p| p.display().to_string()),
        replication,
    })
}

/// `--upstream-conninfo` as repmgr reads it, ready to record: parsed and checked keyword by
/// keyword as `-d` is (key=value or URI); without `application_name`, `passfile` and
/// `servicefile`, which repmgr ignores there (the standby's application_name is its node_name,
/// the password file repmgr.conf's `passfile`). A password is refused: the record never holds
/// one, and a password for this run only would be gone when a resumed run writes
/// primary_conninfo.
fn upstream_conninfo_of(given: &str, announce: bool) -> Result<String> {
    let in_flag = |mut e: Error| {
        e.message = format!("--upstream-conninfo: {}", e.message);
        e
    };
    let mut conninfo = crate::conninfo::Conninfo::parse(given).map_err(in_flag)?;
    if conninfo.get("password").is_some() {
        return Err(Error::new(
            ErrorKind::Config,
            "--upstream-conninfo holds a password, which pgreplica never records",
        )
        .hint("leave password out of --upstream-conninfo and put it in the postgres user's password file (passfile in repmgr.conf, or ~/.pgpass), which primary_conninfo names"));
    }
    for ignored in ["application_name", "passfile", "servicefile"] {
        if conninfo.remove(ignored).is_some() && announce {
            crate::notice!(
                "\"{ignored}\" in --upstream-conninfo is ignored, as repmgr ignores it: primary_conninfo gets {}",
                match ignored {
                    "application_name" => "node_name as application_name",
                    "passfile" => "repmgr.conf's passfile",
                    _ => "no servicefile",
                }
            );
        }
    }
    let rendered = conninfo.render();
    crate::source::Target::resolve(&SourceConn {
        dbname: Some(rendered.clone()),
        ..SourceConn::default()
    })
    .map_err(in_flag)?;
    Ok(rendered)
}

/// The backup to restore: `--backup-id`, else `latest`. In pg-backup-api mode
/// `pg_backupapi_backup_id` names it (the API restores what the POST says); `--backup-id` may
/// repeat it but never silently differ from it.
fn backup_selector_of(
    flags: &Flags<'_>,
    config: &Config,
    api: Option<&ApiTarget>,
) -> Result<String> {
    match (api, flags.backup_id.as_deref()) {
        (Some(api), Some(given)) if given != api.backup_id => {
            let key = match config.location("pg_backupapi_backup_id") {
                Some(location) => {
                    format!("pg_backupapi_backup_id (\"{}\", {location})", api.backup_id)
                }
                None => format!("pg_backupapi_backup_id (\"{}\")", api.backup_id),
            };
            Err(Error::new(
                ErrorKind::Config,
                format!("--backup-id \"{given}\" differs from {key}: in pg-backup-api mode the API restores pg_backupapi_backup_id"),
            )
            .hint(format!(
                "drop --backup-id, or set pg_backupapi_backup_id='{given}' in repmgr.conf"
            )))
        }
        (Some(api), _) => Ok(api.backup_id.clone()),
        (None, given) => Ok(given.unwrap_or("latest").to_string()),
    }
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
                .hint("it was removed or is not readable: cd to an existing directory, or give absolute paths")
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
    use clap::Parser;

    /// `clone start` parsed from `args`.
    fn start_args(args: &[&str]) -> StartArgs {
        let cli = crate::cli::Cli::try_parse_from(
            ["pgreplica", "clone", "start", "-D", "/srv/standby"]
                .iter()
                .chain(args),
        )
        .unwrap();
        match cli.command {
            Some(crate::cli::Command::Clone(crate::cli::CloneCommand::Start(args))) => args,
            other => panic!("not a start: {other:?}"),
        }
    }

    #[test]
    fn backup_id_is_honoured_or_refused_in_api_mode_never_ignored() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("repmgr.conf");
        std::fs::write(
            &path,
            "node_id=2\npg_backupapi_host='b1'\npg_backupapi_node_name='pg'\n\
             pg_backupapi_remote_ssh_command='ssh postgres@standby'\n\
             pg_backupapi_backup_id='20261125T061436'\n",
        )
        .unwrap();
        let (config, _) = Config::load(&path).unwrap();
        let build = |args: &[&str]| build(&start_args(args), &config, Some(&path));
        // Absent or equal: pg_backupapi_backup_id is what is restored, and recorded as such.
        for args in [&[][..], &["--backup-id", "20261125T061436"]] {
            let request = build(args).unwrap();
            assert_eq!(request.mode, Mode::BackupApi);
            assert_eq!(request.backup_selector, "20261125T061436");
            assert_eq!(request.backup_api.unwrap().backup_id, "20261125T061436");
        }
        // Different, even `latest`: refused, naming both and where the key is.
        let error = build(&["--backup-id", "latest"]).unwrap_err();
        assert_eq!(error.kind, ErrorKind::Config);
        assert_eq!(
            error.message,
            format!(
                "--backup-id \"latest\" differs from pg_backupapi_backup_id (\"20261125T061436\", {}:5): in pg-backup-api mode the API restores pg_backupapi_backup_id",
                path.display()
            )
        );
        assert_eq!(
            error.hint.as_deref(),
            Some("drop --backup-id, or set pg_backupapi_backup_id='latest' in repmgr.conf")
        );
        // Other modes: --backup-id, else latest.
        let barman = Config::default();
        let request = super::build(&start_args(&["--without-barman"]), &barman, None).unwrap();
        assert_eq!(request.backup_selector, "latest");
        let request = super::build(&start_args(&["--backup-id", "oldest"]), &barman, None).unwrap();
        assert_eq!(request.backup_selector, "oldest");
    }

    /// `--upstream-conninfo` is parsed as `-d` is (key=value or URI) and recorded as repmgr
    /// reads it: application_name, passfile and servicefile left out; a password or an
    /// unknown keyword refused before anything is recorded.
    #[test]
    fn upstream_conninfo_is_recorded_as_repmgr_reads_it_and_never_with_a_password() {
        let config = Config::default();
        let build = |given: &str| {
            super::build(
                &start_args(&["--without-barman", "--upstream-conninfo", given]),
                &config,
                None,
            )
        };
        let request =
            build("host=127.0.0.1 port=5433 application_name=other passfile=/p sslmode=disable")
                .unwrap();
        assert_eq!(
            request.upstream_conninfo.as_deref(),
            Some("host=127.0.0.1 port=5433 sslmode=disable")
        );
        let request =
            build("postgresql://repl@127.0.0.1:5434/postgres?application_name=x").unwrap();
        assert_eq!(
            request.upstream_conninfo.as_deref(),
            Some("user=repl host=127.0.0.1 port=5434 dbname=postgres")
        );
        assert_eq!(
            super::build(&start_args(&["--without-barman"]), &config, None)
                .unwrap()
                .upstream_conninfo,
            None
        );
        for (given, message) in [
            (
                "host=127.0.0.1 password=s3cret",
                "--upstream-conninfo holds a password, which pgreplica never records",
            ),
            (
                "postgresql://repl:s3cret@127.0.0.1/postgres",
                "--upstream-conninfo holds a password, which pgreplica never records",
            ),
            (
                "host=127.0.0.1 colour=blue",
                "--upstream-conninfo: invalid connection option \"colour\"",
            ),
        ] {
            let error = build(given).unwrap_err();
            assert_eq!(error.kind, ErrorKind::Config, "{given}");
            assert_eq!(error.message, message, "{given}");
            assert!(error.hint.is_some(), "{given}");
            assert!(!format!("{error:?}").contains("s3cret"), "{given}");
        }
        // What a resume compares with today's repmgr.conf keeps the recorded value: no
        // difference to report, and the same primary_conninfo is written.
        let recorded = build("host=127.0.0.1 port=5433 application_name=other").unwrap();
        let current = current(&recorded, &config, None).unwrap();
        assert_eq!(current.upstream_conninfo, recorded.upstream_conninfo);
        assert!(recorded.differences(&current).is_empty());
        // The pasted start command carries it, so the HINT's start starts the same clone.
        let request = build("host=127.0.0.1 port=5433").unwrap();
        assert!(
            start_command(&request, None, false)
                .contains("--upstream-conninfo 'host=127.0.0.1 port=5433'"),
            "{}",
            start_command(&request, None, false)
        );
    }

    #[test]
    fn paths_are_normalised() {
        assert_eq!(
            absolute(Path::new("/srv/./pg/../data/")).unwrap(),
            PathBuf::from("/srv/data")
        );
        assert!(absolute(Path::new("rel")).unwrap().is_absolute());
    }
}
