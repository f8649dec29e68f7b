//! Backups of every kind on demand ([`Lab::take_tar_backup`], [`Lab::take_incremental_chain`],
//! [`Lab::take_encrypted_backup`]): each kind on its own Barman server, added to the running
//! lab's barman.conf (with its own slot and WAL receiver) the first time it is asked for. They
//! need the PyPI Barman 3.19 (Debian's 3.4 makes none of them). Before the first one the
//! primary gets incompressible data, so that every backup holds
//! a file of several MB even compressed (mid-file kills need one); between the backups of an
//! incremental chain it gets writes, so that each increment carries changed blocks.
//! One fixture is made at a time (a lock), so a test may share its lab between threads.

use std::sync::MutexGuard;

use super::Lab;
use crate::exec;
use crate::gpg;
use crate::kinds::{self, BackupFixture, BackupKind, Encryption, TarCompression};
use crate::{BarmanFlavor, LabError};

/// Megabytes of incompressible data loaded before the first fixture (random bytes, stored
/// uncompressed): one TOAST file of about this size, which no compression shrinks.
pub const NOISE_MB: u32 = 6;

/// The table of incompressible data.
pub const NOISE_TABLE: &str = "kinds_noise";

/// The table each round of writes between backups adds a row to (`round int`, `at
/// timestamptz`): `SELECT max(round)` says which round a copy of the primary has seen.
pub const WRITES_TABLE: &str = "kinds_writes";

/// What the fixtures made so far in a lab.
#[derive(Debug, Default)]
pub(super) struct Made {
    /// The incompressible data and the writes table are on the primary.
    data_loaded: bool,
    /// A keyring was started in the lab's GNUPGHOME: tear-down stops its gpg-agent.
    pub(super) keyring: bool,
    /// The throwaway key, once made.
    encryption: Option<Encryption>,
    /// How many rounds of writes between backups so far (each round changes other rows).
    writes: u32,
}

impl Lab {
    /// Takes a tar-format backup compressed with `compression` on Barman server
    /// [`kinds::TAR_SERVER`] (`backup_compression_format = tar`; the server's
    /// `backup_compression` is set to `compression` first), with the lab's tablespace if it has
    /// one. lz4 and zstd need the lab's PostgreSQL 15: the wheel's 18 has gzip only.
    pub fn take_tar_backup(&self, compression: TarCompression) -> Result<BackupFixture, LabError> {
        let kind = BackupKind::Tar(compression);
        let _made = self.begin_fixture(kind)?;
        self.add_barman_server(self.kind_server(kind, None))?;
        let id = self.backup_on(kind.server(), &[])?;
        Ok(self.fixture(kind, vec![id]))
    }

    /// Takes a full backup and then `increments` block-level incremental backups, each the child
    /// of the one before (`barman backup --incremental <parent>`), on Barman server
    /// [`kinds::INCREMENTAL_SERVER`], with a round of writes before each increment (rows of
    /// `pgbench_accounts`, of the tablespace's table, and a row of [`WRITES_TABLE`]). Needs a
    /// PostgreSQL 18 lab. The fixture's chain is the full backup then each increment.
    pub fn take_incremental_chain(&self, increments: usize) -> Result<BackupFixture, LabError> {
        let kind = BackupKind::Incremental;
        let mut made = self.begin_fixture(kind)?;
        self.add_barman_server(self.kind_server(kind, None))?;
        let mut chain = vec![self.backup_on(kind.server(), &[])?];
        for _ in 0..increments {
            self.write_a_round(&mut made)?;
            let parent = chain.last().cloned().unwrap_or_default();
            chain.push(self.backup_on(kind.server(), &["--incremental", &parent])?);
        }
        Ok(self.fixture(kind, chain))
    }

    /// Takes a GPG-encrypted backup (a gzip tar, `encryption = gpg`) on Barman server
    /// [`kinds::ENCRYPTED_SERVER`], with the lab's tablespace if it has one. The first call
    /// makes the lab's throwaway key in its own GNUPGHOME (`<lab>/barman/gnupg`, which the
    /// lab's barman commands and ssh sessions get as `GNUPGHOME`) and the passphrase file that
    /// `encryption_passphrase_command` prints.
    pub fn take_encrypted_backup(&self) -> Result<BackupFixture, LabError> {
        let kind = BackupKind::Encrypted;
        let mut made = self.begin_fixture(kind)?;
        if made.encryption.is_none() {
            made.keyring = true;
            made.encryption = Some(gpg::make_key(
                &self.barman.gnupg_home,
                &self.dir.join("barman/passphrase"),
            )?);
        }
        self.add_barman_server(self.kind_server(kind, made.encryption.as_ref()))?;
        let id = self.backup_on(kind.server(), &[])?;
        Ok(self.fixture(kind, vec![id]))
    }

    /// Takes the fixtures' lock and checks that this lab can make `kind`; the first time, it
    /// makes Barman's staging directory and loads the incompressible data.
    fn begin_fixture(&self, kind: BackupKind) -> Result<MutexGuard<'_, Made>, LabError> {
        let stage = "backup fixture";
        if self.barman.flavor != BarmanFlavor::PyPI {
            return Err(LabError::new(
                stage,
                format!("{kind:?} backups need the PyPI Barman 3.19; this lab runs Debian's 3.4"),
            )
            .hint("start the lab with LabOptions::barman = BarmanFlavor::PyPI"));
        }
        if let Some(why) = kind.unsupported_on(self.major()) {
            return Err(LabError::new(
                stage,
                format!("cannot make {kind:?} backups: {why}"),
            ));
        }
        let mut made = self.fixtures.lock().unwrap_or_else(|e| e.into_inner());
        if !made.data_loaded {
            exec::make_dir(&self.staging_dir(), Some("barman"), 0o700)?;
            self.psql(
                self.primary_port,
                &format!(
                    "CREATE TABLE {NOISE_TABLE} (id int PRIMARY KEY, payload bytea); \
                     ALTER TABLE {NOISE_TABLE} ALTER COLUMN payload SET STORAGE EXTERNAL; \
                     INSERT INTO {NOISE_TABLE} SELECT r, (SELECT decode(string_agg( \
                       md5(random()::text || r || g), ''), 'hex') \
                       FROM generate_series(1, 65536) g) FROM generate_series(1, {NOISE_MB}) r; \
                     CREATE TABLE {WRITES_TABLE} (round int PRIMARY KEY, \
                       at timestamptz NOT NULL DEFAULT now());"
                ),
            )?;
            made.data_loaded = true;
        }
        Ok(made)
    }

    /// One round of writes on the primary: a thousand rows of `pgbench_accounts` (a different
    /// range each round), a tenth of the tablespace's table, and a row of [`WRITES_TABLE`].
    fn write_a_round(&self, made: &mut Made) -> Result<(), LabError> {
        made.writes += 1;
        let round = made.writes;
        let mut sql = format!(
            "UPDATE pgbench_accounts SET abalance = abalance + 1 \
             WHERE aid BETWEEN {low} AND {high}; \
             INSERT INTO {WRITES_TABLE} (round) VALUES ({round});",
            low = u64::from(round) * 1000 + 1,
            high = u64::from(round) * 1000 + 1000,
        );
        if let Some(tablespace) = &self.tablespace {
            sql.push_str(&format!(
                " UPDATE {table} SET note = note || ' r{round}' WHERE id % 10 = {rest};",
                table = tablespace.table,
                rest = round % 10,
            ));
        }
        self.psql(self.primary_port, &sql).map(drop)
    }

    /// Barman's server section for `kind` in this lab.
    fn kind_server(
        &self,
        kind: BackupKind,
        encryption: Option<&Encryption>,
    ) -> crate::barman::ServerConf {
        kinds::server_conf(
            kind,
            self.primary_port,
            self.major(),
            &self.staging_dir(),
            encryption,
        )
    }

    /// Where Barman stages a restore on its host (decrypting, decompressing, combining).
    fn staging_dir(&self) -> std::path::PathBuf {
        self.dir.join("barman/staging")
    }

    fn fixture(&self, kind: BackupKind, chain: Vec<String>) -> BackupFixture {
        BackupFixture {
            kind,
            server: kind.server().to_string(),
            config: self.barman.config.clone(),
            backup_id: chain.last().cloned().unwrap_or_default(),
            chain,
            major: self.major(),
            primary_port: self.primary_port,
            primary_conninfo: self.primary_conninfo(),
            tablespace: self.tablespace.clone(),
        }
    }
}
