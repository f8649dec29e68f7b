//! Standing a lab up ([`Lab::start`]): the private directory under /tmp, the sshd and the ssh
//! keys, the primary with its pgbench data (and tablespace), Barman with WAL streaming, and the
//! first backup — each a timed stage; a failure drops the half-built lab, which stops whatever
//! was started.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use super::{fixtures, Lab, LabOptions, Tablespace, BARMAN_QUICK};
use crate::barman::{self, Barman, BarmanFlavor, ServerConf};
use crate::exec::{self, as_user};
use crate::postgres::{self, PgMajor};
use crate::sshd::{self, Sshd};
use crate::system::{self, SSH};
use crate::{free_port, LabError};

impl Lab {
    /// Stands a lab up: checks prerequisites, makes the private directory, starts the primary
    /// (with pgbench data and, if asked, a tablespace), the sshd, and Barman, and takes a first
    /// backup. On failure everything started so far is stopped again (see
    /// [`KEEP_ENV`](super::KEEP_ENV)).
    pub fn start(options: LabOptions) -> Result<Lab, LabError> {
        let began = Instant::now();
        system::prerequisites()?;
        if !exec::is_root() {
            return Err(LabError::new("start", "the lab must be started as root")
                .hint("it runs PostgreSQL and Barman through runuser; run the tests as root"));
        }
        if options.postgres != PgMajor::V15 && options.barman == BarmanFlavor::Debian {
            return Err(LabError::new(
                "start",
                format!(
                    "Debian's Barman 3.4 cannot back PostgreSQL {} up",
                    options.postgres.number()
                ),
            )
            .hint("start the lab with the PyPI Barman: LabOptions::barman = BarmanFlavor::PyPI"));
        }
        system::unlock_for_ssh(&["postgres", "barman"])?;
        let dir = make_lab_dir()?;
        let barman_dir = dir.join("barman");
        let mut lab = Lab {
            barman: Barman {
                flavor: options.barman,
                config: barman_dir.join("barman.conf"),
                log_file: barman_dir.join("barman.log"),
                gnupg_home: barman_dir.join("gnupg"),
            },
            options,
            dir,
            primary_port: free_port(),
            ssh_port: free_port(),
            tablespace: None,
            primary_started: false,
            barman_started: false,
            servers: Mutex::new(Vec::new()),
            fixtures: Mutex::new(fixtures::Made::default()),
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
            &sshd::config_text(
                &ssh_dir,
                self.ssh_port,
                &self.barman.flavor.path_env(),
                &self.barman.gnupg_home,
                sshd::MAX_STARTUPS,
            ),
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
        postgres::initdb(self.major(), &data)?;
        let conf = data.join("postgresql.conf");
        let mut text = std::fs::read_to_string(&conf)
            .map_err(|e| LabError::io("primary", format!("read {}", conf.display()), e))?;
        text.push_str(&postgres::primary_settings(
            self.major(),
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
            postgres::pg_command(self.major(), "pgbench")
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
        self.barman_started = true;
        self.add_barman_server(ServerConf::primary(self.primary_port, self.major()))
    }

    /// Adds `server` to the lab's barman.conf (or replaces the section of that name) and, for a
    /// new server, starts its WAL streaming and proves WAL arrives. On a loaded machine
    /// receive-wal can take a while to connect (or lose a race creating its slot): wait until
    /// the primary sees it streaming, and give the switch a second chance.
    pub(super) fn add_barman_server(&self, server: ServerConf) -> Result<(), LabError> {
        let new = {
            let mut servers = self.servers.lock().unwrap_or_else(|e| e.into_inner());
            let new = match servers.iter_mut().find(|s| s.name == server.name) {
                Some(known) => {
                    *known = server.clone();
                    false
                }
                None => {
                    servers.push(server.clone());
                    true
                }
            };
            self.write_barman_config(&servers)?;
            new
        };
        if !new {
            return Ok(());
        }
        match self
            .wait_for_receive_wal(&server)
            .and_then(|()| self.switch_wal(&server.name))
        {
            Ok(()) => Ok(()),
            Err(first) => {
                eprintln!("lab: {first}; starting receive-wal again");
                self.wait_for_receive_wal(&server)
                    .and_then(|()| self.switch_wal(&server.name))
            }
        }
    }

    /// Writes barman.conf with `servers`, atomically: a Barman running meanwhile reads the old
    /// file or the new one, never half of one.
    fn write_barman_config(&self, servers: &[ServerConf]) -> Result<(), LabError> {
        let temp = self.barman.config.with_extension("conf.new");
        exec::write_file(
            &temp,
            &barman::config_text(&self.barman_home(), &self.barman.log_file, servers),
            Some("barman"),
            0o644,
        )?;
        std::fs::rename(&temp, &self.barman.config).map_err(|e| {
            LabError::io(
                "barman config",
                format!("rename {}", self.barman.config.display()),
                e,
            )
        })
    }

    /// Runs `barman cron` until the primary shows `server`'s WAL receiver streaming (cron starts
    /// receive-wal when it is not running).
    fn wait_for_receive_wal(&self, server: &ServerConf) -> Result<(), LabError> {
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
                &format!(
                    "SELECT count(*) FROM pg_stat_replication \
                     WHERE application_name = '{}' AND state = 'streaming'",
                    server.archiver_name
                ),
            )?;
            Ok(streaming.trim() != "0")
        })
        .map_err(|e| e.detail(exec::file_tail(&self.barman.log_file, 20)))
    }

    /// `barman switch-wal --force --archive SERVER`, nudging the primary meanwhile (see
    /// [`Lab::while_nudging`]).
    fn switch_wal(&self, server: &str) -> Result<(), LabError> {
        let mut switch = self.barman.command([
            "switch-wal",
            "--force",
            "--archive",
            "--archive-timeout",
            "60",
            server,
        ]);
        self.while_nudging(&mut switch, "barman switch-wal", Duration::from_secs(120))
            .map_err(|e| e.detail(exec::file_tail(&self.barman.log_file, 20)))
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
