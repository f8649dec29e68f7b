//! repmgr.conf: the reader for the operator's existing repmgr configuration and the typed
//! settings pgreplica takes from it.
//!
//! [`Config::load`] reads a file with repmgr's full format (see `reader` and `lexer`), turns
//! every key pgreplica uses into a typed field of [`Config`], accepts silently the many keys
//! only repmgr uses (`keys`), warns about names nobody knows, and reports *all* problems at
//! once with the file and line of each, as repmgr does. docs/configuration.md is the reference
//! for operators.
//!
//! This module must not decide the clone mode, touch the network, run commands or check that
//! files it names exist: it reads and validates text. It must never put a value that may hold
//! a secret (conninfo, commands) into a message.

mod keys;
mod lexer;
mod reader;
mod shell;
mod values;

pub use reader::MAX_DEPTH as MAX_INCLUDE_DEPTH;
pub use shell::{split_args, SplitError};
pub use values::{ApiCredentials, RsyncOptions};

use crate::error::{Error, ErrorKind};
use crate::log::Level;
use reader::{Item, Setting};
use states::{ApiTarget, BarmanTarget, ReplicationSettings};
use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Where repmgr looks for its configuration when none is given, in order (its package path
/// aside): the current directory, then /etc.
pub const DEFAULT_PATHS: [&str; 2] = ["repmgr.conf", "/etc/repmgr.conf"];

/// Default of `pg_backupapi_stall_timeout`: an hour without progress.
pub const DEFAULT_STALL_TIMEOUT: Duration = Duration::from_secs(3600);

/// Default of `pg_backupapi_start_timeout`: five minutes for a worker to show any sign of
/// life (a restore's first bytes come within seconds of a worker starting).
pub const DEFAULT_START_TIMEOUT: Duration = Duration::from_secs(300);

/// Default of `pg_backupapi_poll_interval`: repmgr's fixed 3 seconds.
pub const DEFAULT_POLL_INTERVAL: Duration = Duration::from_secs(3);

/// Checks a `recovery_min_apply_delay` given on the command line (`what` names the flag) as
/// repmgr.conf's is checked.
pub fn check_time_units(what: &str, value: &str) -> Result<(), Error> {
    values::time_units(what, value).map_err(|message| {
        Error::new(ErrorKind::Config, message).hint("write e.g. 30s, 5min or 2h")
    })
}

/// A line of a configuration file, for messages: `/etc/repmgr.conf:12`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Location {
    /// The file, as resolved when it was read (absolute).
    pub file: PathBuf,
    /// Line number, from 1; 0 for the whole file (a key it lacks), shown without a line.
    pub line: u32,
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.line {
            0 => write!(f, "{}", self.file.display()),
            line => write!(f, "{}:{line}", self.file.display()),
        }
    }
}

/// Keys whose values pgreplica writes into the standby's configuration (postgresql.auto.conf
/// or recovery.conf), directly or inside `primary_conninfo`: PostgreSQL's lexer cannot read a
/// line break in them, and would read a value cut at a NUL byte, so both are refused here,
/// before anything is copied.
const WRITTEN_TO_STANDBY: [&str; 5] = [
    "restore_command",
    "archive_cleanup_command",
    "node_name",
    "replication_user",
    "passfile",
];

/// Something worth telling the operator that does not stop pgreplica: an unknown or
/// deprecated key (WARNING), a missing `include_if_exists` file (NOTICE).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Warning {
    /// The level to log it at.
    pub level: Level,
    /// The line it is about.
    pub location: Location,
    /// What it is, without the location.
    pub message: String,
}

impl Warning {
    /// Logs the warning at its level, as `FILE:LINE: message`.
    pub fn log(&self) {
        crate::log::emit(self.level, &self.to_string(), None, None);
    }
}

impl fmt::Display for Warning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.location, self.message)
    }
}

/// One configuration error, collected so that all of them are reported together.
#[derive(Clone, Debug)]
pub(crate) struct Problem {
    location: Location,
    message: String,
    hint: Option<String>,
}

/// The settings pgreplica takes from repmgr.conf.
///
/// Empty values (`key=''`) count as not set, as in repmgr. Paths that pgreplica itself opens
/// or creates on this host are `PathBuf`s and must be absolute; values that are passed on to
/// PostgreSQL, Barman or ssh stay `String`s.
#[derive(Clone, PartialEq)]
pub struct Config {
    /// The main file the settings were read from (absolute); None for [`Config::default`].
    path: Option<PathBuf>,
    /// repmgr's `node_id` (≥ 1): names the replication slot `repmgr_slot_<node_id>`.
    pub node_id: Option<i32>,
    /// repmgr's `node_name`: becomes `application_name` in primary_conninfo.
    pub node_name: Option<String>,
    /// repmgr's `conninfo` of this node. May hold a password: never log it.
    pub conninfo: Option<String>,
    /// repmgr's `data_directory`: where the standby is cloned unless `-D` says otherwise.
    pub data_directory: Option<PathBuf>,
    /// repmgr's `pg_bindir`: where pg_basebackup, pg_verifybackup and friends live.
    pub pg_bindir: Option<PathBuf>,
    /// repmgr's `use_replication_slots`: create and use `repmgr_slot_<node_id>` upstream.
    pub use_replication_slots: bool,
    /// repmgr's `replication_user`: the user in primary_conninfo (default: conninfo's user).
    pub replication_user: Option<String>,
    /// repmgr's `pg_basebackup_options`, as written. See [`Config::pg_basebackup_args`].
    pub pg_basebackup_options: Option<String>,
    /// repmgr's `restore_command`, written into the standby's configuration.
    pub restore_command: Option<String>,
    /// repmgr's `archive_cleanup_command`, written into the standby's configuration.
    pub archive_cleanup_command: Option<String>,
    /// repmgr's `recovery_min_apply_delay` (a number with an optional ms/s/min/h/d unit),
    /// written into the standby's configuration as given.
    pub recovery_min_apply_delay: Option<String>,
    /// repmgr's `tablespace_mapping` lines, (old location, new location), in file order.
    pub tablespace_mapping: Vec<(String, String)>,
    /// repmgr's `rsync_options`, as far as pgreplica applies them (`--bwlimit`).
    pub rsync_options: RsyncOptions,
    /// repmgr's `passfile`: added to primary_conninfo as `passfile=`.
    pub passfile: Option<String>,
    /// repmgr's `use_primary_conninfo_password`: put PGPASSWORD into primary_conninfo.
    pub use_primary_conninfo_password: bool,
    /// repmgr's `ssh_options`, as written. See [`Config::ssh_args`].
    pub ssh_options: Option<String>,
    /// repmgr's `barman_host`: ssh destination of the Barman server (`barman@backup1`).
    pub barman_host: Option<String>,
    /// repmgr's `barman_server`: the server's section in Barman's configuration.
    pub barman_server: Option<String>,
    /// repmgr's `barman_config`: a non-default Barman configuration file on the Barman host.
    pub barman_config: Option<String>,
    /// repmgr's `pg_backupapi_host`: host, host:port or URL of pg-backup-api, without the
    /// `user:password@` it may carry (see [`Config::pg_backupapi_credentials`]).
    pub pg_backupapi_host: Option<String>,
    /// The `user:password@` of an https `pg_backupapi_host`, for a proxy that checks them.
    pg_backupapi_credentials: Option<ApiCredentials>,
    /// repmgr's `pg_backupapi_node_name`: the Barman server the API restores from.
    pub pg_backupapi_node_name: Option<String>,
    /// repmgr's `pg_backupapi_remote_ssh_command`: how Barman reaches this standby.
    pub pg_backupapi_remote_ssh_command: Option<String>,
    /// repmgr's `pg_backupapi_backup_id`: the backup the API restores.
    pub pg_backupapi_backup_id: Option<String>,
    /// pgreplica's `pgreplica_staging_dir`: where the staging directories of tar, incremental
    /// and encrypted Barman backups are made (default: beside the data directory).
    pub staging_dir: Option<PathBuf>,
    /// pgreplica's `pg_backupapi_ca_file`: PEM bundle that signs the API's TLS certificate.
    pub pg_backupapi_ca_file: Option<PathBuf>,
    /// pgreplica's `pg_backupapi_cert_file`: PEM client certificate for a TLS proxy in front
    /// of the API that checks client certificates.
    pub pg_backupapi_cert_file: Option<PathBuf>,
    /// pgreplica's `pg_backupapi_key_file`: the client certificate's PEM key.
    pub pg_backupapi_key_file: Option<PathBuf>,
    /// pgreplica's `pg_backupapi_stall_timeout`: give up when an operation makes no progress
    /// this long (default [`DEFAULT_STALL_TIMEOUT`]).
    pub pg_backupapi_stall_timeout: Duration,
    /// pgreplica's `pg_backupapi_start_timeout`: give up when nothing at all arrives this long
    /// after pgreplica begins following an operation (default [`DEFAULT_START_TIMEOUT`]).
    pub pg_backupapi_start_timeout: Duration,
    /// pgreplica's `pg_backupapi_poll_interval`: time between status polls (default
    /// [`DEFAULT_POLL_INTERVAL`]).
    pub pg_backupapi_poll_interval: Duration,
    /// repmgr's `log_level`: the least severe level logged unless -L, -q or -v says otherwise.
    pub log_level: Option<Level>,
    /// repmgr's `log_file`: every log line is also appended there, timestamped as repmgr
    /// writes it.
    pub log_file: Option<PathBuf>,
    /// repmgr's `event_notification_command`: run at the end of each clone with repmgr's
    /// placeholders (see `crate::event`). May hold anything: never log it.
    pub event_notification_command: Option<String>,
    /// repmgr's `event_notifications`: the comma-separated events the command is run for
    /// (all when unset).
    pub event_notifications: Option<String>,
    /// Where each key pgreplica knows was last set.
    locations: HashMap<String, Location>,
    /// `ssh_options` split into arguments.
    ssh_args: Vec<String>,
    /// `pg_basebackup_options` split into arguments.
    pg_basebackup_args: Vec<String>,
    /// The `--waldir`/`--xlogdir` found in `pg_basebackup_args`.
    waldir: Option<PathBuf>,
}

impl Default for Config {
    /// Every key unset, with repmgr's and pgreplica's defaults: for a clone given entirely
    /// on the command line.
    fn default() -> Config {
        Config {
            path: None,
            node_id: None,
            node_name: None,
            conninfo: None,
            data_directory: None,
            pg_bindir: None,
            use_replication_slots: false,
            replication_user: None,
            pg_basebackup_options: None,
            restore_command: None,
            archive_cleanup_command: None,
            recovery_min_apply_delay: None,
            tablespace_mapping: Vec::new(),
            rsync_options: RsyncOptions::default(),
            passfile: None,
            use_primary_conninfo_password: false,
            ssh_options: None,
            barman_host: None,
            barman_server: None,
            barman_config: None,
            pg_backupapi_host: None,
            pg_backupapi_credentials: None,
            pg_backupapi_node_name: None,
            pg_backupapi_remote_ssh_command: None,
            pg_backupapi_backup_id: None,
            staging_dir: None,
            pg_backupapi_ca_file: None,
            pg_backupapi_cert_file: None,
            pg_backupapi_key_file: None,
            pg_backupapi_stall_timeout: DEFAULT_STALL_TIMEOUT,
            pg_backupapi_start_timeout: DEFAULT_START_TIMEOUT,
            pg_backupapi_poll_interval: DEFAULT_POLL_INTERVAL,
            log_level: None,
            log_file: None,
            event_notification_command: None,
            event_notifications: None,
            locations: HashMap::new(),
            ssh_args: Vec::new(),
            pg_basebackup_args: Vec::new(),
            waldir: None,
        }
    }
}

impl Config {
    /// Reads and validates the repmgr.conf at `path` (relative paths are taken from the
    /// current directory) and everything it includes.
    ///
    /// Returns the settings and the warnings and notices found on the way (unknown keys,
    /// deprecated keys, missing `include_if_exists` files) for the caller to log, e.g. with
    /// [`Warning::log`]. Fails with [`ErrorKind::Config`] (exit 1) when the file cannot be
    /// read, or with every problem found — syntax, values, keys that need each other — each
    /// as `FILE:LINE: problem`: one problem is the message itself; several are listed in the
    /// error's detail under repmgr's header "following errors were found in the
    /// configuration file:".
    pub fn load(path: &Path) -> Result<(Config, Vec<Warning>), Error> {
        let path = std::path::absolute(path).map_err(|e| {
            Error::new(
                ErrorKind::Config,
                format!(
                    "invalid configuration file path \"{}\": {e}",
                    path.display()
                ),
            )
            .hint("give -f an absolute path to repmgr.conf")
        })?;
        let mut builder = Builder {
            config: Config {
                path: Some(path.clone()),
                ..Config::default()
            },
            problems: Vec::new(),
            warnings: Vec::new(),
        };
        for item in reader::read(&path)? {
            match item {
                Item::Setting(setting) => builder.apply(setting),
                Item::Problem(problem) => builder.problems.push(problem),
                Item::Note(warning) => builder.warnings.push(warning),
            }
        }
        builder.validate();
        if builder.problems.is_empty() {
            Ok((builder.config, builder.warnings))
        } else {
            Err(config_error(builder.problems, &builder.warnings))
        }
    }

    /// The first of [`DEFAULT_PATHS`] that exists, for when no `-f` is given.
    pub fn find_default() -> Option<PathBuf> {
        DEFAULT_PATHS
            .iter()
            .map(PathBuf::from)
            .find(|p| p.is_file())
    }

    /// The main file the settings came from; None for [`Config::default`].
    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    /// Where `key` was last set (for tablespace_mapping: its last line), for messages
    /// about a value, e.g. "barman_host (/etc/repmgr.conf:12) cannot be reached".
    pub fn location(&self, key: &str) -> Option<&Location> {
        self.locations.get(key)
    }

    /// The WAL directory from `--waldir`/`--xlogdir` in pg_basebackup_options (absolute);
    /// pg_wal is created there and symlinked from the data directory.
    pub fn waldir(&self) -> Option<&Path> {
        self.waldir.as_deref()
    }

    /// `ssh_options` as arguments for ssh (empty when unset).
    pub fn ssh_args(&self) -> &[String] {
        &self.ssh_args
    }

    /// `pg_basebackup_options` as arguments for pg_basebackup (empty when unset).
    pub fn pg_basebackup_args(&self) -> &[String] {
        &self.pg_basebackup_args
    }

    /// The Barman server when `barman_host` is set (`load` guarantees `barman_server` then).
    pub fn barman_target(&self) -> Option<BarmanTarget> {
        Some(BarmanTarget {
            host: self.barman_host.clone()?,
            server: self.barman_server.clone()?,
            config: self.barman_config.clone(),
        })
    }

    /// The credentials in `pg_backupapi_host` (`https://user:password@…`), if any.
    pub fn pg_backupapi_credentials(&self) -> Option<&ApiCredentials> {
        self.pg_backupapi_credentials.as_ref()
    }

    /// The pg-backup-api target when `pg_backupapi_host` is set (`load` guarantees the other
    /// three repmgr keys then). Credentials stay out of it: it names this file instead, for
    /// each run to read them again.
    pub fn api_target(&self) -> Option<ApiTarget> {
        let path_string = |p: &Option<PathBuf>| p.as_ref().map(|p| p.display().to_string());
        Some(ApiTarget {
            host: self.pg_backupapi_host.clone()?,
            credentials_file: self
                .pg_backupapi_credentials
                .as_ref()
                .and(path_string(&self.path)),
            node_name: self.pg_backupapi_node_name.clone()?,
            remote_ssh_command: self.pg_backupapi_remote_ssh_command.clone()?,
            backup_id: self.pg_backupapi_backup_id.clone()?,
            ca_file: path_string(&self.pg_backupapi_ca_file),
            cert_file: path_string(&self.pg_backupapi_cert_file),
            key_file: path_string(&self.pg_backupapi_key_file),
            stall_timeout_secs: self.pg_backupapi_stall_timeout.as_secs(),
            start_timeout_secs: self.pg_backupapi_start_timeout.as_secs(),
            poll_interval_ms: u64::try_from(self.pg_backupapi_poll_interval.as_millis())
                .unwrap_or(u64::MAX),
        })
    }

    /// The keys that shape the standby's replication configuration.
    pub fn replication_settings(&self) -> ReplicationSettings {
        ReplicationSettings {
            replication_user: self.replication_user.clone(),
            use_replication_slots: self.use_replication_slots,
            restore_command: self.restore_command.clone(),
            archive_cleanup_command: self.archive_cleanup_command.clone(),
            recovery_min_apply_delay: self.recovery_min_apply_delay.clone(),
            use_primary_conninfo_password: self.use_primary_conninfo_password,
            passfile: self.passfile.clone(),
        }
    }
}

/// Every field but `conninfo`, which may hold a password and shows only whether it is set.
impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Config")
            .field("path", &self.path)
            .field("node_id", &self.node_id)
            .field("node_name", &self.node_name)
            .field("conninfo", &self.conninfo.as_ref().map(|_| "<redacted>"))
            .field("data_directory", &self.data_directory)
            .field("pg_bindir", &self.pg_bindir)
            .field("pgreplica_staging_dir", &self.staging_dir)
            .field("use_replication_slots", &self.use_replication_slots)
            .field("replication_user", &self.replication_user)
            .field("pg_basebackup_options", &self.pg_basebackup_options)
            .field("restore_command", &self.restore_command)
            .field("archive_cleanup_command", &self.archive_cleanup_command)
            .field("recovery_min_apply_delay", &self.recovery_min_apply_delay)
            .field("tablespace_mapping", &self.tablespace_mapping)
            .field("rsync_options", &self.rsync_options)
            .field("passfile", &self.passfile)
            .field(
                "use_primary_conninfo_password",
                &self.use_primary_conninfo_password,
            )
            .field("ssh_options", &self.ssh_options)
            .field("barman_host", &self.barman_host)
            .field("barman_server", &self.barman_server)
            .field("barman_config", &self.barman_config)
            .field("pg_backupapi_host", &self.pg_backupapi_host)
            .field(
                "pg_backupapi_credentials",
                &self.pg_backupapi_credentials.as_ref().map(|_| "<redacted>"),
            )
            .field("pg_backupapi_node_name", &self.pg_backupapi_node_name)
            .field(
                "pg_backupapi_remote_ssh_command",
                &self.pg_backupapi_remote_ssh_command,
            )
            .field("pg_backupapi_backup_id", &self.pg_backupapi_backup_id)
            .field("pg_backupapi_ca_file", &self.pg_backupapi_ca_file)
            .field("pg_backupapi_cert_file", &self.pg_backupapi_cert_file)
            .field("pg_backupapi_key_file", &self.pg_backupapi_key_file)
            .field(
                "pg_backupapi_stall_timeout",
                &self.pg_backupapi_stall_timeout,
            )
            .field(
                "pg_backupapi_start_timeout",
                &self.pg_backupapi_start_timeout,
            )
            .field(
                "pg_backupapi_poll_interval",
                &self.pg_backupapi_poll_interval,
            )
            .field("waldir", &self.waldir)
            .finish_non_exhaustive()
    }
}

/// The fields behind keys whose value needs no more than its type.
impl Config {
    fn text_field(&mut self, key: &str) -> Option<&mut Option<String>> {
        Some(match key {
            "node_name" => &mut self.node_name,
            "conninfo" => &mut self.conninfo,
            "replication_user" => &mut self.replication_user,
            "restore_command" => &mut self.restore_command,
            "archive_cleanup_command" => &mut self.archive_cleanup_command,
            "passfile" => &mut self.passfile,
            "barman_host" => &mut self.barman_host,
            "barman_server" => &mut self.barman_server,
            "barman_config" => &mut self.barman_config,
            "pg_backupapi_node_name" => &mut self.pg_backupapi_node_name,
            "pg_backupapi_remote_ssh_command" => &mut self.pg_backupapi_remote_ssh_command,
            "pg_backupapi_backup_id" => &mut self.pg_backupapi_backup_id,
            "event_notification_command" => &mut self.event_notification_command,
            "event_notifications" => &mut self.event_notifications,
            _ => return None,
        })
    }

    fn path_field(&mut self, key: &str) -> Option<&mut Option<PathBuf>> {
        Some(match key {
            "data_directory" => &mut self.data_directory,
            "pg_bindir" => &mut self.pg_bindir,
            "pgreplica_staging_dir" => &mut self.staging_dir,
            "pg_backupapi_ca_file" => &mut self.pg_backupapi_ca_file,
            "pg_backupapi_cert_file" => &mut self.pg_backupapi_cert_file,
            "pg_backupapi_key_file" => &mut self.pg_backupapi_key_file,
            "log_file" => &mut self.log_file,
            _ => return None,
        })
    }

    fn bool_field(&mut self, key: &str) -> Option<&mut bool> {
        Some(match key {
            "use_replication_slots" => &mut self.use_replication_slots,
            "use_primary_conninfo_password" => &mut self.use_primary_conninfo_password,
            _ => return None,
        })
    }

    fn seconds_field(&mut self, key: &str) -> Option<&mut Duration> {
        Some(match key {
            "pg_backupapi_stall_timeout" => &mut self.pg_backupapi_stall_timeout,
            "pg_backupapi_start_timeout" => &mut self.pg_backupapi_start_timeout,
            "pg_backupapi_poll_interval" => &mut self.pg_backupapi_poll_interval,
            _ => return None,
        })
    }
}

/// What in `value` PostgreSQL's configuration lexer cannot read back, if anything.
fn unreadable_by_postgres(value: &str) -> Option<&'static str> {
    if value.contains('\0') {
        Some("a NUL byte")
    } else if value.contains(['\n', '\r']) {
        Some("a line break")
    } else {
        None
    }
}

/// A value problem's message and optional hint.
type Invalid = (String, Option<String>);

fn invalid(message: String) -> Invalid {
    (message, None)
}

/// `key=''` is "not set", as in repmgr.
fn text(value: String) -> Option<String> {
    (!value.is_empty()).then_some(value)
}

/// An absolute path, with repeated and trailing slashes and `.` components removed (as
/// repmgr canonicalises its paths), so that `/data/` and `/data` name the same clone.
fn absolute_path(key: &str, value: String) -> Result<Option<PathBuf>, Invalid> {
    if value.is_empty() {
        return Ok(None);
    }
    if !value.starts_with('/') {
        return Err((
            format!("\"{key}\" must be an absolute path, not \"{value}\""),
            Some(
                "pgreplica does not resolve paths against the directory it is started from".into(),
            ),
        ));
    }
    Ok(Some(Path::new(&value).components().collect()))
}

fn arguments(key: &str, value: &str) -> Result<Vec<String>, Invalid> {
    split_args(value).map_err(|e| {
        (
            format!("\"{key}\" cannot be split into arguments: {e}"),
            Some("the options are split like a POSIX shell would, but no shell runs them".into()),
        )
    })
}

/// Collects settings into a [`Config`] and problems into a list.
struct Builder {
    config: Config,
    problems: Vec<Problem>,
    warnings: Vec<Warning>,
}

impl Builder {
    fn apply(&mut self, setting: Setting) {
        let Setting {
            key,
            value,
            location,
        } = setting;
        if WRITTEN_TO_STANDBY.contains(&key.as_str()) {
            if let Some(what) = unreadable_by_postgres(&value) {
                self.config.locations.insert(key.clone(), location.clone());
                self.problems.push(Problem {
                    location,
                    message: format!(
                        "\"{key}\" contains {what}, which PostgreSQL cannot read back from the standby's configuration"
                    ),
                    hint: Some(
                        "remove it (a \\000 or \\n escape in a quoted value writes one)".to_string(),
                    ),
                });
                return;
            }
        }
        match self.assign(&key, value) {
            Some(Ok(())) => {
                let implied = &self.config.rsync_options.implied;
                if key == "rsync_options" && !implied.is_empty() {
                    self.warnings.push(Warning {
                        level: Level::Notice,
                        location: location.clone(),
                        message: format!(
                            "rsync_options: {} left out, pgreplica's copy does what they ask for itself",
                            implied.join(" ")
                        ),
                    });
                }
                self.config.locations.insert(key, location);
            }
            Some(Err((message, hint))) => {
                self.config.locations.insert(key, location.clone());
                self.problems.push(Problem {
                    location,
                    message,
                    hint,
                });
            }
            None if keys::REPMGR_ONLY.contains(&key.as_str()) => {}
            None => {
                let message = match keys::deprecated(&key) {
                    Some(advice) => format!("{advice}; ignoring"),
                    // The value is not shown: a misspelt key may hold a password.
                    None => format!("unknown parameter \"{key}\"; ignoring"),
                };
                self.warnings.push(Warning {
                    level: Level::Warning,
                    location,
                    message,
                });
            }
        }
    }

    /// Stores a key pgreplica reads; None when pgreplica does not read `key`.
    fn assign(&mut self, key: &str, value: String) -> Option<Result<(), Invalid>> {
        let c = &mut self.config;
        if let Some(field) = c.text_field(key) {
            *field = text(value);
            return Some(Ok(()));
        }
        if let Some(field) = c.path_field(key) {
            return Some(absolute_path(key, value).map(|path| *field = path));
        }
        if let Some(field) = c.bool_field(key) {
            return Some(
                values::boolean(key, &value)
                    .map(|b| *field = b)
                    .map_err(invalid),
            );
        }
        if let Some(field) = c.seconds_field(key) {
            return Some(
                values::seconds(key, &value)
                    .map(|d| *field = d)
                    .map_err(invalid),
            );
        }
        Some(match key {
            "pg_backupapi_host" if value.is_empty() => {
                c.pg_backupapi_host = None;
                c.pg_backupapi_credentials = None;
                Ok(())
            }
            "pg_backupapi_host" => values::api_host(&value)
                .map(|(host, credentials)| {
                    c.pg_backupapi_host = Some(host);
                    c.pg_backupapi_credentials = credentials;
                })
                .map_err(|message| {
                    let hint = "give an https:// URL of a TLS proxy that checks them, or remove them: pg-backup-api itself has no authentication";
                    (message, Some(hint.to_string()))
                }),
            "node_id" => values::node_id(&value)
                .map(|id| c.node_id = Some(id))
                .map_err(invalid),
            "log_level" => Level::of_repmgr(&value)
                .map(|level| c.log_level = Some(level))
                .ok_or_else(|| {
                    (
                        format!("invalid value for \"log_level\": \"{value}\""),
                        Some("use DEBUG, INFO, NOTICE, WARNING or ERROR".to_string()),
                    )
                }),
            "recovery_min_apply_delay" if value.is_empty() => {
                c.recovery_min_apply_delay = None;
                Ok(())
            }
            "recovery_min_apply_delay" => values::time_units(key, &value)
                .map(|()| c.recovery_min_apply_delay = Some(value))
                .map_err(invalid),
            "tablespace_mapping" => values::tablespace_mapping(&value)
                .map(|pair| c.tablespace_mapping.push(pair))
                .map_err(|(message, hint)| (message, Some(hint))),
            "ssh_options" => arguments(key, &value).map(|args| {
                c.ssh_args = args;
                c.ssh_options = text(value);
            }),
            "rsync_options" => arguments(key, &value).and_then(|args| {
                let options =
                    values::rsync_options(&args).map_err(|(message, hint)| (message, Some(hint)))?;
                c.rsync_options = options;
                Ok(())
            }),
            "pg_basebackup_options" => arguments(key, &value).and_then(|args| {
                let waldir = values::waldir(&args).map_err(|m| {
                    let hint =
                        "write e.g. pg_basebackup_options='--waldir=/var/lib/postgresql/wal'";
                    (m, Some(hint.to_string()))
                })?;
                c.waldir = waldir.map(PathBuf::from);
                c.pg_basebackup_args = args;
                c.pg_basebackup_options = text(value);
                Ok(())
            }),
            _ => return None,
        })
    }

    /// Reports `present` set without `missing`, at the line that set `present`.
    fn require(&mut self, present: &str, missing: &str, hint: &str) {
        if let Some(location) = self.config.location(present).cloned() {
            self.problems.push(Problem {
                location,
                message: format!("\"{present}\" is set but \"{missing}\" is not"),
                hint: Some(hint.to_string()),
            });
        }
    }

    /// Checks the keys that only make sense together, and that `node_id` is there: repmgr
    /// rejects a file without it, and `repmgr standby register` after the clone would fail.
    fn validate(&mut self) {
        if self.config.node_id.is_none() && self.config.location("node_id").is_none() {
            if let Some(file) = self.config.path.clone() {
                self.problems.push(Problem {
                    location: Location { file, line: 0 },
                    message: "\"node_id\": required parameter was not found".to_string(),
                    hint: Some(
                        "set node_id (this node's id in the repmgr cluster, an integer of 1 or \
                         more), as repmgr requires"
                            .to_string(),
                    ),
                });
            }
        }
        let c = &self.config;
        let barman = (c.barman_host.is_some(), c.barman_server.is_some());
        let api_host = c.pg_backupapi_host.is_some();
        let api_missing: Vec<&str> = [
            ("pg_backupapi_node_name", c.pg_backupapi_node_name.is_some()),
            (
                "pg_backupapi_remote_ssh_command",
                c.pg_backupapi_remote_ssh_command.is_some(),
            ),
            ("pg_backupapi_backup_id", c.pg_backupapi_backup_id.is_some()),
        ]
        .into_iter()
        .filter_map(|(key, set)| (!set).then_some(key))
        .collect();
        let tls = (
            c.pg_backupapi_cert_file.is_some(),
            c.pg_backupapi_key_file.is_some(),
        );

        match barman {
            (true, false) => self.require(
                "barman_host",
                "barman_server",
                "barman_server names the server's [section] in Barman's configuration, e.g. barman_server='pg'",
            ),
            (false, true) => self.require(
                "barman_server",
                "barman_host",
                "barman_host is the ssh destination of the Barman server, e.g. barman_host='barman@backup1'",
            ),
            _ => {}
        }
        if api_host {
            for missing in api_missing {
                self.require(
                    "pg_backupapi_host",
                    missing,
                    "pg-backup-api mode needs pg_backupapi_node_name, pg_backupapi_remote_ssh_command and pg_backupapi_backup_id",
                );
            }
        }
        let tls_hint = "a client certificate needs its key: set both pg_backupapi_cert_file and pg_backupapi_key_file";
        match tls {
            (true, false) => {
                self.require("pg_backupapi_cert_file", "pg_backupapi_key_file", tls_hint)
            }
            (false, true) => {
                self.require("pg_backupapi_key_file", "pg_backupapi_cert_file", tls_hint)
            }
            _ => {}
        }
    }
}

const DOCS_HINT: &str = "docs/configuration.md describes the format and every key pgreplica reads";

/// One error for all problems, as repmgr reports them; warnings ride along in the detail,
/// because a misspelt key is often the cause of an error about a missing one.
fn config_error(problems: Vec<Problem>, warnings: &[Warning]) -> Error {
    let warning_lines: Vec<String> = warnings
        .iter()
        .filter(|w| w.level == Level::Warning)
        .map(|w| format!("{w} (warning)"))
        .collect();
    if let [problem] = problems.as_slice() {
        let error = Error::new(
            ErrorKind::Config,
            format!("{}: {}", problem.location, problem.message),
        )
        .hint(problem.hint.as_deref().unwrap_or(DOCS_HINT));
        return if warning_lines.is_empty() {
            error
        } else {
            error.detail(warning_lines.join("\n"))
        };
    }
    let mut lines: Vec<String> = problems
        .iter()
        .map(|p| format!("{}: {}", p.location, p.message))
        .collect();
    lines.extend(warning_lines);
    Error::new(
        ErrorKind::Config,
        "following errors were found in the configuration file:",
    )
    .detail(lines.join("\n"))
    .hint(format!("fix each line listed; {DOCS_HINT}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    const DOC: &str = include_str!("../../docs/configuration.md");

    fn builder() -> Builder {
        Builder {
            config: Config::default(),
            problems: Vec::new(),
            warnings: Vec::new(),
        }
    }

    /// The first cell of every table row that names one key: `| \`key\` …|`.
    fn documented_keys() -> Vec<&'static str> {
        // The connection keywords of -d have a section (and a test) of their own.
        let keys = DOC.split("## The source node").next().unwrap_or(DOC);
        keys.lines()
            .filter_map(|line| line.strip_prefix("| `"))
            .filter_map(|rest| rest.split('`').next())
            .filter(|key| !key.contains(' '))
            .collect()
    }

    #[test]
    fn every_key_pgreplica_reads_is_parsed_and_documented() {
        for key in keys::PGREPLICA {
            assert!(
                builder().assign(key, String::new()).is_some(),
                "{key} is listed but not parsed"
            );
            assert!(
                DOC.contains(&format!("| `{key}` |")) || DOC.contains(&format!("| `{key}` **")),
                "docs/configuration.md has no row for {key}"
            );
        }
        for key in documented_keys() {
            assert!(
                keys::PGREPLICA.contains(&key),
                "docs/configuration.md documents {key}, which pgreplica does not read"
            );
        }
    }

    #[test]
    fn every_silently_accepted_key_is_documented_and_not_parsed() {
        for key in keys::REPMGR_ONLY {
            assert!(
                builder().assign(key, String::new()).is_none(),
                "{key} is both read and ignored"
            );
            assert!(
                DOC.contains(&format!("`{key}`")),
                "docs/configuration.md does not list {key}"
            );
        }
    }
}
