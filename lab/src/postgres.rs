//! The lab's PostgreSQL servers: initdb and configuration of the primary, pg_ctl start/stop,
//! psql, and [`Standby`] handles for servers the tests clone. Everything runs as `postgres`;
//! this module must not know about Barman or ssh.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::exec::{self, as_user};
use crate::system::PG_BIN;
use crate::LabError;

const PG_CTL_TIMEOUT: Duration = Duration::from_secs(90);
const PSQL_TIMEOUT: Duration = Duration::from_secs(60);

/// A PostgreSQL program run as `postgres`.
pub(crate) fn pg_command(program: &str) -> Command {
    as_user("postgres", format!("{PG_BIN}/{program}"))
}

/// `initdb` of a new cluster owned by `postgres`, with local trust authentication.
pub(crate) fn initdb(data_dir: &Path) -> Result<(), LabError> {
    // --no-sync: a lab cluster need not survive a power cut, and fsyncing costs seconds.
    exec::checked(
        pg_command("initdb")
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

/// Settings of the lab's primary, appended to its postgresql.conf.
pub(crate) fn primary_settings(port: u16, socket_dir: &Path) -> String {
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
         log_line_prefix = '%m [%p] '\n",
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

/// `pg_ctl start -w` as postgres on `port`, logging to `log`.
pub(crate) fn start(data_dir: &Path, port: u16, log: &Path, stage: &str) -> Result<(), LabError> {
    exec::checked(
        pg_command("pg_ctl")
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

/// `pg_ctl stop -m fast -w` as postgres; Ok when the server is not running.
pub(crate) fn stop(data_dir: &Path, stage: &str) -> Result<(), LabError> {
    if !is_running(data_dir) {
        return Ok(());
    }
    exec::checked(
        pg_command("pg_ctl")
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

/// Runs `sql` with psql as postgres against 127.0.0.1:`port` (quiet, unaligned, tuples only,
/// stopping at the first error) and returns its output without the trailing newline: only rows,
/// no command tags ("CREATE TABLE", "INSERT 0 1").
pub(crate) fn psql(port: u16, sql: &str) -> Result<String, LabError> {
    let out = exec::checked(
        pg_command("psql")
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
}

impl Standby {
    pub(crate) fn start(
        data_dir: &Path,
        port: u16,
        log_file: PathBuf,
    ) -> Result<Standby, LabError> {
        start(data_dir, port, &log_file, "start standby")?;
        Ok(Standby {
            data_dir: data_dir.to_path_buf(),
            port,
            log_file,
        })
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
        psql(self.port, sql)
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
        let conf = primary_settings(21234, Path::new("/tmp/lab/run"));
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
    }
}
