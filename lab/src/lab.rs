//! [`Lab`]: one loopback lab — a PostgreSQL 15 primary, a Barman with a first backup, a private
//! sshd and ssh keys — in a private directory under /tmp, torn down on drop. It must not write
//! into any home directory or global configuration: clients reach it through explicit options
//! (ssh options, `barman -c`, ports).

use std::collections::BTreeSet;
use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::barman::{self, Barman, BarmanFlavor};
use crate::exec::{self, as_user};
use crate::postgres::{self, Standby};
use crate::sshd::{self, Sshd};
use crate::system::{self, PG_BIN, SSH};
use crate::{free_port, LabError};

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
}

impl Default for LabOptions {
    /// Debian's Barman, no tablespace, pgbench scale 1: the quickest lab.
    fn default() -> Self {
        LabOptions {
            barman: BarmanFlavor::Debian,
            tablespace: false,
            scale: 1,
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
    /// Stands a lab up: checks prerequisites, makes the private directory, starts the primary
    /// (with pgbench data and, if asked, a tablespace), the sshd, and Barman, and takes a first
    /// backup. On failure everything started so far is stopped again (see [`KEEP_ENV`]).
    pub fn start(options: LabOptions) -> Result<Lab, LabError> {
        let began = Instant::now();
        system::prerequisites()?;
        if !exec::is_root() {
            return Err(LabError::new("start", "the lab must be started as root")
                .hint("it runs PostgreSQL and Barman through runuser; run the tests as root"));
        }
        system::unlock_for_ssh(&["postgres", "barman"])?;
        let dir = make_lab_dir()?;
        let barman_dir = dir.join("barman");
        let mut lab = Lab {
            barman: Barman {
                flavor: options.barman,
                config: barman_dir.join("barman.conf"),
                log_file: barman_dir.join("barman.log"),
            },
            options,
            dir,
            primary_port: free_port(),
            ssh_port: free_port(),
            tablespace: None,
            primary_started: false,
            barman_started: false,
            sshd: None,
            standbys: Mutex::new(Vec::new()),
            handed_out: Mutex::new(BTreeSet::new()),
            last_backup: Mutex::new(None),
            stages: Vec::new(),
            startup_time: Duration::ZERO,
            torn_down: false,
        };
        // From here on a failure drops `lab`, which stops whatever was started.
        lab.stage("directories", Lab::make_layout)?;
        lab.stage("sshd", Lab::start_sshd)?;
        lab.stage("primary", Lab::start_primary)?;
        lab.stage("data", Lab::load_data)?;
        lab.stage("barman", Lab::start_barman)?;
        lab.stage("first backup", |lab| lab.take_backup().map(drop))?;
        lab.startup_time = began.elapsed();
        Ok(lab)
    }

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

    /// Which Barman the lab runs.
    pub fn barman_flavor(&self) -> BarmanFlavor {
        self.barman.flavor
    }

    /// repmgr.conf's `ssh_options` for the postgres user: the lab sshd's port and postgres's
    /// key, no host-key prompts. With it, postgres reaches `barman@127.0.0.1`.
    pub fn ssh_options(&self) -> String {
        self.ssh_args().join(" ")
    }

    /// [`Lab::ssh_options`] as separate arguments, for `Command::args`.
    pub fn ssh_args(&self) -> Vec<String> {
        sshd::client_options(self.ssh_port, &self.key("postgres"))
    }

    /// What Barman passes as `--remote-ssh-command` to reach `postgres@127.0.0.1` on the lab
    /// sshd with barman's key (pg-backup-api mode: Barman pushes to the standby).
    pub fn barman_remote_ssh_command(&self) -> String {
        let mut words = vec![SSH.to_string()];
        words.extend(sshd::client_options(self.ssh_port, &self.key("barman")));
        words.push("postgres@127.0.0.1".to_string());
        words.join(" ")
    }

    /// Takes a backup with Barman (`barman backup --wait pg`) and returns its id.
    pub fn take_backup(&self) -> Result<String, LabError> {
        let stage = "take backup";
        // Barman names backups by the second: two in one second would collide.
        let previous = *self.last_backup.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(previous) = previous {
            exec::wait_for(stage, Duration::from_secs(3), || {
                Ok(previous.elapsed() > Duration::from_millis(1100))
            })?;
        }
        let before = self.backup_ids()?;
        // cron restarts receive-wal should it have stopped; the backup waits on its WAL.
        self.barman.checked(stage, &["cron"], BARMAN_QUICK)?;
        *self.last_backup.lock().unwrap_or_else(|e| e.into_inner()) = Some(Instant::now());
        self.barman
            .checked(stage, &["backup", "--wait", barman::SERVER], BARMAN_BACKUP)?;
        let after = self.backup_ids()?;
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
        postgres::psql(port, sql)
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

    /// `runuser -u postgres -- PROGRAM`, from the lab directory, with `PGREPLICA_STATE_DIR` set
    /// to [`Lab::state_dir`] and PostgreSQL 15's binaries first on PATH. Add arguments and run.
    pub fn command_as_postgres(&self, program: impl AsRef<OsStr>) -> Command {
        let mut cmd = as_user("postgres", program);
        cmd.current_dir(&self.dir)
            .env("PGREPLICA_STATE_DIR", self.state_dir())
            .env("PATH", format!("{PG_BIN}:/usr/local/bin:/usr/bin:/bin"));
        cmd
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

    /// The source-node options of `pgreplica clone start` for this lab's primary:
    /// `-h 127.0.0.1 -p PORT -U barman -d postgres`.
    pub fn source_args(&self) -> Vec<String> {
        [
            "-h",
            "127.0.0.1",
            "-p",
            &self.primary_port().to_string(),
            "-U",
            "barman",
            "-d",
            "postgres",
        ]
        .map(String::from)
        .to_vec()
    }

    /// `clone start -f CONF` plus [`Lab::source_args`]: a clone of this lab's primary.
    pub fn clone_start_args(&self, conf: &Path) -> Vec<String> {
        let mut args = vec![
            "clone".to_string(),
            "start".to_string(),
            "-f".to_string(),
            conf.display().to_string(),
        ];
        args.extend(self.source_args());
        args
    }

    /// The node part of a repmgr.conf for a standby of this lab: node_id, node_name, conninfo
    /// (`host=127.0.0.1 port=PORT user=barman dbname=postgres`: the node's own address, where
    /// it will listen), data_directory and pg_bindir. Add the keys of a mode to it.
    pub fn node_conf(&self, node_id: u32, node_name: &str, data_dir: &Path, port: u16) -> String {
        format!(
            "node_id={node_id}\n\
             node_name='{node_name}'\n\
             conninfo='host=127.0.0.1 port={port} user=barman dbname=postgres connect_timeout=5'\n\
             data_directory='{data}'\n\
             pg_bindir='{PG_BIN}'\n",
            data = data_dir.display(),
        )
    }

    /// A repmgr.conf for a standby of this lab cloned from Barman: [`Lab::node_conf`] plus
    /// barman_host, barman_server, barman_config and ssh_options.
    pub fn repmgr_conf(&self, node_id: u32, node_name: &str, data_dir: &Path, port: u16) -> String {
        format!(
            "{node}barman_host='{host}'\n\
             barman_server='{server}'\n\
             barman_config='{config}'\n\
             ssh_options='{ssh}'\n",
            node = self.node_conf(node_id, node_name, data_dir, port),
            host = self.barman_ssh_host(),
            server = self.barman_server(),
            config = self.barman_config().display(),
            ssh = self.ssh_options(),
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

    fn stage(
        &mut self,
        name: &'static str,
        step: impl FnOnce(&mut Lab) -> Result<(), LabError>,
    ) -> Result<(), LabError> {
        let began = Instant::now();
        step(self)?;
        self.stages.push((name, began.elapsed()));
        Ok(())
    }

    fn make_layout(&mut self) -> Result<(), LabError> {
        let d = &self.dir;
        // The sticky, world-writable logs directory lets each user create its own log files.
        exec::make_dir(&d.join("logs"), None, 0o1777)?;
        exec::make_dir(&d.join("bin"), None, 0o755)?;
        for (sub, mode) in [
            ("run", 0o755),
            ("pg", 0o755),
            ("data", 0o755),
            ("tablespaces", 0o755),
            ("state", 0o700),
        ] {
            exec::make_dir(&d.join(sub), Some("postgres"), mode)?;
        }
        exec::make_dir(&d.join("barman"), Some("barman"), 0o755)?;
        exec::make_dir(&self.barman_home(), Some("barman"), 0o755)?;
        exec::make_dir(&d.join("ssh/keys"), None, 0o755)?;
        exec::make_dir(&d.join("ssh/authorized_keys"), None, 0o755)
    }

    fn start_sshd(&mut self) -> Result<(), LabError> {
        let ssh_dir = self.dir.join("ssh");
        sshd::keygen(&ssh_dir.join("ssh_host_ed25519_key"), "root")?;
        // postgres's key opens barman@ (repmgr-style clone); barman's opens postgres@ (Barman
        // pushing a restore to the standby host).
        for (user, authorized_for) in [("postgres", "barman"), ("barman", "postgres")] {
            let public = sshd::keygen(&self.key(user), user)?;
            exec::write_file(
                &ssh_dir.join("authorized_keys").join(authorized_for),
                &public,
                Some(authorized_for),
                0o600,
            )?;
        }
        exec::write_file(
            &ssh_dir.join("sshd_config"),
            &sshd::config_text(&ssh_dir, self.ssh_port, &self.barman.flavor.path_env()),
            None,
            0o644,
        )?;
        self.sshd = Some(Sshd::start(&ssh_dir, self.ssh_port)?);
        // Prove that postgres reaches barman@ and that `barman` there is this lab's flavour.
        let out = exec::checked(
            as_user("postgres", SSH).args(self.ssh_args()).args([
                self.barman_ssh_host().as_str(),
                "barman",
                "--version",
            ]),
            "sshd",
            Duration::from_secs(30),
        )
        .map_err(|e| e.detail(self.sshd_log_tail()))?;
        let version = String::from_utf8_lossy(&out.stdout);
        let expected = self.barman.flavor.version_prefix();
        if !version.starts_with(expected) {
            return Err(LabError::new(
                "sshd",
                format!(
                    "`barman --version` over ssh says {:?}, expected {expected}…",
                    version.trim()
                ),
            )
            .hint("the lab sshd's SetEnv PATH must put the flavour's barman first"));
        }
        Ok(())
    }

    fn sshd_log_tail(&self) -> String {
        self.sshd
            .as_ref()
            .map(|s| exec::file_tail(&s.log_file(), 20))
            .unwrap_or_default()
    }

    fn start_primary(&mut self) -> Result<(), LabError> {
        let data = self.primary_data_dir();
        postgres::initdb(&data)?;
        let conf = data.join("postgresql.conf");
        let mut text = std::fs::read_to_string(&conf)
            .map_err(|e| LabError::io("primary", format!("read {}", conf.display()), e))?;
        text.push_str(&postgres::primary_settings(
            self.primary_port,
            &self.dir.join("run"),
        ));
        exec::write_file(&conf, &text, Some("postgres"), 0o600)?;
        exec::write_file(
            &data.join("pg_hba.conf"),
            postgres::PG_HBA,
            Some("postgres"),
            0o600,
        )?;
        self.primary_started = true;
        postgres::start(
            &data,
            self.primary_port,
            &self.log_dir().join("primary.log"),
            "start primary",
        )?;
        self.psql(
            self.primary_port,
            "CREATE ROLE barman SUPERUSER LOGIN; CREATE ROLE streaming_barman REPLICATION LOGIN;",
        )
        .map(drop)
    }

    fn load_data(&mut self) -> Result<(), LabError> {
        exec::checked(
            postgres::pg_command("pgbench")
                .args([
                    "-i",
                    "-q",
                    "-s",
                    &self.options.scale.to_string(),
                    "-h",
                    "127.0.0.1",
                ])
                .args([
                    "-p",
                    &self.primary_port.to_string(),
                    "-U",
                    "postgres",
                    "postgres",
                ]),
            "pgbench -i",
            Duration::from_secs(1800),
        )?;
        if !self.options.tablespace {
            return Ok(());
        }
        let location = self.dir.join("tablespaces/tbs1");
        exec::make_dir(&location, Some("postgres"), 0o700)?;
        let tablespace = Tablespace {
            name: "tbs1".to_string(),
            location,
            table: "tbs_data".to_string(),
            rows: 1000,
        };
        // One statement per call: CREATE TABLESPACE cannot run inside a transaction block.
        self.psql(
            self.primary_port,
            &format!(
                "CREATE TABLESPACE {} LOCATION '{}'",
                tablespace.name,
                tablespace.location.display()
            ),
        )?;
        self.psql(
            self.primary_port,
            &format!(
                "CREATE TABLE {table} (id int PRIMARY KEY, note text) TABLESPACE {name}; \
                 INSERT INTO {table} SELECT g, 'row ' || g FROM generate_series(1, {rows}) g;",
                table = tablespace.table,
                name = tablespace.name,
                rows = tablespace.rows
            ),
        )?;
        self.tablespace = Some(tablespace);
        Ok(())
    }

    fn start_barman(&mut self) -> Result<(), LabError> {
        exec::write_file(
            &self.barman.config,
            &barman::config_text(
                &self.barman_home(),
                &self.barman.log_file,
                self.primary_port,
            ),
            Some("barman"),
            0o644,
        )?;
        self.barman_started = true;
        // cron creates the slot and starts receive-wal; switch-wal proves WAL arrives. On a
        // loaded machine receive-wal can take a while to connect (or lose a race creating its
        // slot): wait until the primary sees it streaming, and give the switch a second chance.
        match self.wait_for_receive_wal().and_then(|()| self.switch_wal()) {
            Ok(()) => Ok(()),
            Err(first) => {
                eprintln!("lab: {first}; starting receive-wal again");
                self.wait_for_receive_wal().and_then(|()| self.switch_wal())
            }
        }
    }

    /// Runs `barman cron` until the primary shows Barman's WAL receiver streaming (cron starts
    /// receive-wal when it is not running).
    fn wait_for_receive_wal(&self) -> Result<(), LabError> {
        let stage = "barman receive-wal";
        let mut last_cron = None::<Instant>;
        exec::wait_for(stage, Duration::from_secs(90), || {
            if last_cron.is_none_or(|at| at.elapsed() > Duration::from_secs(5)) {
                self.barman
                    .checked("barman cron", &["cron"], BARMAN_QUICK)?;
                last_cron = Some(Instant::now());
            }
            let streaming = self.psql(
                self.primary_port,
                "SELECT count(*) FROM pg_stat_replication \
                 WHERE application_name = 'barman_receive_wal' AND state = 'streaming'",
            )?;
            Ok(streaming.trim() != "0")
        })
        .map_err(|e| e.detail(exec::file_tail(&self.barman.log_file, 20)))
    }

    /// `barman switch-wal --force --archive`, nudging the primary meanwhile. Barman archives a
    /// streamed segment only once the next one has begun (pg_receivewal must keep one file), and
    /// an idle primary writes nothing for ~15 s after a switch; a committed transaction now and
    /// then starts the next segment, and the switch completes at once.
    fn switch_wal(&self) -> Result<(), LabError> {
        let stage = "barman switch-wal";
        let mut switch = self.barman.command([
            "switch-wal",
            "--force",
            "--archive",
            "--archive-timeout",
            "60",
            barman::SERVER,
        ]);
        std::thread::scope(|scope| {
            let switching =
                scope.spawn(|| exec::checked(&mut switch, stage, Duration::from_secs(120)));
            let nudged = exec::wait_for(stage, Duration::from_secs(130), || {
                if switching.is_finished() {
                    return Ok(true);
                }
                self.psql(self.primary_port, "SELECT txid_current()")?;
                Ok(false)
            });
            let switched = switching
                .join()
                .unwrap_or_else(|_| Err(LabError::new(stage, "the switch-wal thread panicked")));
            switched.and(nudged)
        })
        .map(drop)
        .map_err(|e| e.detail(exec::file_tail(&self.barman.log_file, 20)))
    }

    fn backup_ids(&self) -> Result<Vec<String>, LabError> {
        let out = self.barman.checked(
            "list backups",
            &["list-backups", "--minimal", barman::SERVER],
            BARMAN_QUICK,
        )?;
        Ok(String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .map(String::from)
            .collect())
    }

    /// Stops the lab and removes its directory (kept with [`KEEP_ENV`]`=1`), like drop, but
    /// reports problems: a step that failed, or processes that were still running inside the
    /// lab afterwards and had to be killed (a leak by the lab or by the test).
    pub fn stop(mut self) -> Result<(), LabError> {
        let mut errors = self.tear_down().into_iter();
        match errors.next() {
            None => Ok(()),
            Some(first) => Err(errors.fold(first, |all, e| all.detail(e.to_string()))),
        }
    }

    fn tear_down(&mut self) -> Vec<LabError> {
        if std::mem::replace(&mut self.torn_down, true) {
            return Vec::new();
        }
        let mut errors = self.shut_down();
        if std::env::var(KEEP_ENV).is_ok_and(|v| v == "1") {
            eprintln!("lab: kept {} ({KEEP_ENV}=1)", self.dir.display());
        } else if let Err(e) = remove_tree(&self.dir) {
            errors.push(LabError::io(
                "stop",
                format!("remove {}", self.dir.display()),
                e,
            ));
        }
        errors
    }

    /// Stops everything the lab started, newest first; returns what went wrong.
    fn shut_down(&mut self) -> Vec<LabError> {
        let mut errors = Vec::new();
        let standbys =
            std::mem::take(&mut *self.standbys.lock().unwrap_or_else(|e| e.into_inner()));
        for data_dir in standbys {
            errors.extend(postgres::stop(&data_dir, "stop standby").err());
        }
        if self.barman_started {
            errors.extend(
                self.barman
                    .checked(
                        "stop receive-wal",
                        &["receive-wal", "--stop", barman::SERVER],
                        BARMAN_QUICK,
                    )
                    .err(),
            );
        }
        if self.primary_started {
            errors.extend(postgres::stop(&self.primary_data_dir(), "stop primary").err());
        }
        if let Some(sshd) = self.sshd.take() {
            errors.extend(sshd.stop().err());
        }
        errors.extend(reap_leftovers(&self.dir).err());
        errors
    }
}

impl Drop for Lab {
    /// Stops everything (see [`Lab::stop`]), printing what went wrong instead of returning it.
    fn drop(&mut self) {
        for error in self.tear_down() {
            eprintln!("{error}");
        }
    }
}

/// Removes the lab directory. A process killed by `reap_leftovers` (pg_receivewal, say) may
/// still be closing a file in it for a moment, which makes `remove_dir_all` find a directory
/// refilled behind it: try again a few times before calling it a failure.
fn remove_tree(dir: &Path) -> std::io::Result<()> {
    let mut attempts = 0;
    loop {
        match std::fs::remove_dir_all(dir) {
            Err(e) if e.kind() == std::io::ErrorKind::DirectoryNotEmpty && attempts < 20 => {
                attempts += 1;
                std::thread::sleep(Duration::from_millis(100));
            }
            result => return result,
        }
    }
}

/// Makes `/tmp/pgreplica-lab-<pid>-<n>-<nanos>`, 0755 so postgres and barman can traverse it.
fn make_lab_dir() -> Result<PathBuf, LabError> {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    loop {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let dir = PathBuf::from(format!(
            "/tmp/pgreplica-lab-{}-{}-{nanos:x}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        match std::fs::create_dir(&dir) {
            Ok(()) => {
                exec::set_mode(&dir, 0o755)?;
                return Ok(dir);
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => {
                return Err(LabError::io(
                    "directories",
                    format!("mkdir {}", dir.display()),
                    e,
                ))
            }
        }
    }
}

/// Stops any process still running from inside the lab (its command line names a path in the
/// lab directory: a pg_receivewal, a postgres, an ssh a test left behind). They are all
/// descendants of what the lab or its test started; each is signalled by pid.
fn reap_leftovers(dir: &Path) -> Result<(), LabError> {
    let needle = format!("{}/", dir.display()).into_bytes();
    let me = std::process::id();
    let leftovers = || -> Vec<u32> {
        let Ok(entries) = std::fs::read_dir("/proc") else {
            return Vec::new();
        };
        entries
            .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
            .filter(|&pid| pid != me)
            .filter(|pid| {
                std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|cmdline| {
                    cmdline
                        .windows(needle.len())
                        .any(|w| w == needle.as_slice())
                })
            })
            .collect()
    };
    // An ssh session or pg_receivewal may still be on its way out: give them a moment first.
    if exec::wait_for("processes exit", Duration::from_secs(3), || {
        Ok(leftovers().is_empty())
    })
    .is_ok()
    {
        return Ok(());
    }
    let first = leftovers();
    let described: Vec<String> = first
        .iter()
        .map(|pid| {
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            format!(
                "{pid}: {}",
                String::from_utf8_lossy(&cmdline)
                    .replace('\0', " ")
                    .trim_end()
            )
        })
        .collect();
    for &pid in &first {
        exec::signal(pid, libc::SIGTERM);
    }
    let stopped = exec::wait_for("stop leftover processes", Duration::from_secs(10), || {
        Ok(leftovers().is_empty())
    });
    if stopped.is_err() {
        for pid in leftovers() {
            exec::signal(pid, libc::SIGKILL);
        }
    }
    Err(LabError::new(
        "stop",
        format!(
            "{} process(es) were still running in {}; stopped them",
            first.len(),
            dir.display()
        ),
    )
    .detail(described.join("\n")))
}
