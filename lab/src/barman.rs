//! The lab's Barman: which one (Debian's 3.4.0 or PyPI's 3.19.x), its private configuration
//! file, and running it as `barman`. It must not read or write /etc/barman.conf or any home
//! directory: every invocation names the lab's config with `-c`.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use crate::exec::{self, as_user};
use crate::system::{BARMAN_VENV, DEBIAN_BARMAN, PG_BIN};
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

/// The lab's configuration file for Barman: its own barman_home and one server, `pg`, that backs
/// the primary up with pg_basebackup and archives WAL by streaming through a slot.
pub(crate) fn config_text(home: &Path, log_file: &Path, primary_port: u16) -> String {
    format!(
        "[barman]\n\
         barman_home = {home}\n\
         barman_user = barman\n\
         log_file = {log}\n\
         log_level = INFO\n\
         \n\
         [{SERVER}]\n\
         description = \"pgreplica lab primary\"\n\
         conninfo = host=127.0.0.1 port={primary_port} user=barman dbname=postgres\n\
         streaming_conninfo = host=127.0.0.1 port={primary_port} user=streaming_barman dbname=postgres\n\
         backup_method = postgres\n\
         streaming_archiver = on\n\
         slot_name = {SLOT}\n\
         create_slot = auto\n\
         path_prefix = {PG_BIN}\n",
        home = home.display(),
        log = log_file.display(),
    )
}

/// Runs the lab's Barman as `barman`.
#[derive(Debug, Clone)]
pub(crate) struct Barman {
    pub(crate) flavor: BarmanFlavor,
    pub(crate) config: PathBuf,
    pub(crate) log_file: PathBuf,
}

impl Barman {
    /// `barman -c <lab config> ARGS` as barman, PATH set so that Barman's own subprocesses
    /// (`barman cron` starts `barman receive-wal`) stay in the same flavour.
    pub(crate) fn command<I, S>(&self, args: I) -> Command
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let mut cmd = as_user("barman", self.flavor.program());
        cmd.arg("-c")
            .arg(&self.config)
            .args(args)
            .env("PATH", self.flavor.path_env());
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
            23456,
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
