//! The campaign on a lab ([`Campaign`]): preparing it — the pinned backup, the pg-backup-api
//! server, the uninterrupted reference clone — and what its rounds use to run pgreplica: the
//! repmgr.conf and arguments of a clone in the campaign's mode, starting pgreplica, reading its
//! status.

use std::cell::RefCell;
use std::path::{Path, PathBuf};
use std::process::Child;
use std::time::Duration;

use serde_json::Value;
use states::Step;

use super::faults::FaultGear;
use super::options::{ChaosMode, ChaosOptions};
use crate::api_server::{api_conf, ApiJob, ApiServer};
use crate::clone_check::{
    clone_status, manifest_listing, pgreplica, spawn_in_group, tree_digest, wait_until_stopped,
    TreeDigest,
};
use crate::kinds::{BackupFixture, BackupKind};
use crate::{exec, status, Lab};

/// How long a killed clone may take to free its lock.
const STOP_TIMEOUT: Duration = Duration::from_secs(30);

/// `pg_backupapi_start_timeout` of the campaign's API clones: short, so that a round with the
/// spawn-failure fault stops soon, yet long enough for a live worker's first bytes to arrive
/// in a busy lab (`barman recover` checks the destination over ssh before it copies).
pub const API_START_TIMEOUT_SECS: u32 = 10;

/// A campaign on a lab: the mode, the pinned backup and the reference clone's digest (Barman
/// and pg-backup-api modes), the API server (pg-backup-api mode).
pub struct Campaign<'a> {
    pub(super) lab: &'a Lab,
    binary: PathBuf,
    pub(super) options: ChaosOptions,
    pub(super) backup_id: String,
    /// The Barman server of the pinned backup: the lab's own (`pg`), or the fixture's of the
    /// campaign's kind.
    server: String,
    pub(super) reference: TreeDigest,
    /// How long the reference clone's Transfer took: the window API-mode kills aim into.
    pub(super) reference_transfer: Duration,
    /// The API server (pg-backup-api mode); a round restarts it, hence the cell.
    api: Option<RefCell<ApiServer>>,
    /// The relays the clones go through, with faults ([`ChaosOptions::faults`]).
    pub(super) faults: Option<FaultGear>,
}

impl<'a> Campaign<'a> {
    /// Pins the lab's newest backup and, in Barman and pg-backup-api modes, clones it once
    /// without interruption (the reference); pg-backup-api mode first starts the API server.
    /// `binary` is pgreplica as installed in the lab ([`Lab::install_binary`]).
    pub fn prepare(
        lab: &'a Lab,
        binary: &Path,
        options: ChaosOptions,
    ) -> Result<Campaign<'a>, String> {
        let (backup_id, server) = match options.kind {
            None => (newest_backup(lab)?, lab.barman_server().to_string()),
            Some(kind) => {
                let fixture = take_fixture(lab, kind)?;
                (fixture.backup_id, fixture.server)
            }
        };
        let api = start_api_server(lab, &options)?;
        let faults = match options.faults {
            true => Some(FaultGear::prepare(lab, options.mode)?),
            false => None,
        };
        let mut campaign = Campaign {
            lab,
            binary: binary.to_path_buf(),
            options,
            backup_id,
            server,
            reference: TreeDigest::new(),
            reference_transfer: Duration::ZERO,
            api,
            faults,
        };
        if campaign.options.mode == ChaosMode::BaseBackup {
            // Every pg_basebackup is a new backup: there is nothing to compare with.
            return Ok(campaign);
        }
        campaign.clone_reference()?;
        Ok(campaign)
    }

    /// The backup every clone of the campaign restores (pg_basebackup mode: the lab's newest
    /// backup, which the rounds do not use).
    pub fn backup_id(&self) -> &str {
        &self.backup_id
    }

    /// The campaign's mode.
    pub fn mode(&self) -> ChaosMode {
        self.options.mode
    }

    /// Clones the pinned backup once without interruption: the reference's digest, and how long
    /// its Transfer took; in pg-backup-api mode, the one operation it made must be in order.
    fn clone_reference(&mut self) -> Result<(), String> {
        let dir = self.lab.new_dir("chaos-reference");
        let conf = self.write_conf("chaos-reference", &dir, 0)?;
        let args = self.start_args(&conf, &[]);
        let mut command = pgreplica(
            self.lab,
            &self.binary,
            &args.iter().map(String::as_str).collect::<Vec<_>>(),
        );
        exec::checked(&mut command, "reference clone", self.options.round_timeout)
            .map_err(|e| e.to_string())?;
        self.reference = comparable_digest(&dir, self.options.kind)?;
        let status = self.status(&dir)?;
        self.reference_transfer = status::history(&status)
            .iter()
            .find(|t| status::is_step(&t["step"], Step::Transfer))
            .and_then(|t| t["duration_ms"].as_u64())
            .map_or(Duration::from_secs(5), Duration::from_millis);
        if self.options.mode == ChaosMode::Api {
            self.check_api_jobs(&dir, &status, &[])?;
        }
        Ok(())
    }

    /// The repmgr.conf of a clone into `data_dir`; `rate` is the round's copy rate limit
    /// (pg_basebackup mode).
    pub(super) fn write_conf(
        &self,
        name: &str,
        data_dir: &Path,
        rate: u32,
    ) -> Result<PathBuf, String> {
        // One node name for every clone: it is part of the primary_conninfo pgreplica writes.
        let fault_lines = self
            .faults
            .as_ref()
            .map(|gear| gear.conf_lines(self.lab))
            .unwrap_or_default();
        match self.options.mode {
            ChaosMode::Api => {
                let host = self.api_server()?.borrow().host();
                let extra = format!(
                    "pg_backupapi_backup_id='{}'\npg_backupapi_start_timeout={API_START_TIMEOUT_SECS}\n{fault_lines}",
                    self.backup_id
                );
                api_conf(self.lab, &host, data_dir, &extra).map_err(|e| e.to_string())
            }
            mode => {
                let path = self.lab.dir().join(format!("{name}.conf"));
                let mut text = self
                    .lab
                    .repmgr_conf(2, "node2", data_dir, self.lab.primary_port());
                // Later lines win: the pinned backup's server.
                text.push_str(&format!("barman_server='{}'\n", self.server));
                if mode == ChaosMode::BaseBackup && rate > 0 {
                    text.push_str(&format!("pg_basebackup_options='--max-rate={rate}'\n"));
                }
                text.push_str(&fault_lines);
                self.lab
                    .write_file_as_postgres(&path, &text)
                    .map_err(|e| e.to_string())?;
                Ok(path)
            }
        }
    }

    /// `clone start` of a clone configured by `conf`, in the campaign's mode, with `extra`
    /// arguments at the end.
    pub(super) fn start_args(&self, conf: &Path, extra: &[String]) -> Vec<String> {
        let port = self
            .faults
            .as_ref()
            .map_or(self.lab.primary_port(), FaultGear::source_port);
        let mut args = self.lab.clone_start_args_to(conf, port);
        match self.options.mode {
            ChaosMode::Barman => {
                args.extend(["--backup-id".to_string(), self.backup_id.clone()]);
            }
            // The backup is pinned in repmgr.conf (pg_backupapi_backup_id).
            ChaosMode::Api => {}
            ChaosMode::BaseBackup => args.push("--without-barman".to_string()),
        }
        args.extend(extra.iter().cloned());
        args
    }

    /// The API server (pg-backup-api mode).
    pub(super) fn api_server(&self) -> Result<&RefCell<ApiServer>, String> {
        self.api
            .as_ref()
            .ok_or_else(|| "no API server in this campaign".to_string())
    }

    /// The API server's recovery operations into `data_dir`.
    pub(super) fn api_jobs_into(&self, data_dir: &Path) -> Result<Vec<ApiJob>, String> {
        let jobs = self
            .api_server()?
            .borrow()
            .jobs()
            .map_err(|e| e.to_string())?;
        Ok(jobs
            .into_iter()
            .filter(|j| Path::new(&j.destination) == data_dir)
            .collect())
    }

    /// Starts pgreplica with `args` in a process group of its own.
    pub(super) fn spawn(&self, args: &[String]) -> Result<Child, String> {
        // At DEBUG, so that a failed round's log (kept beside its data directory) says what
        // each run removed and ran.
        let args: Vec<&str> = ["-L", "DEBUG"]
            .into_iter()
            .chain(args.iter().map(String::as_str))
            .collect();
        let mut command = pgreplica(self.lab, &self.binary, &args);
        spawn_in_group(&mut command)
            .map_err(|e| format!("cannot start pgreplica {}: {e}", args.join(" ")))
    }

    /// Restarts the API server with the fault switches `switches` (none: a working API),
    /// unless it already runs with them.
    pub(super) fn set_api_switches(&self, switches: &[&str]) -> Result<(), String> {
        let mut server = self.api_server()?.borrow_mut();
        if server
            .switches()
            .iter()
            .map(String::as_str)
            .eq(switches.iter().copied())
        {
            return Ok(());
        }
        server.kill();
        server
            .spawn(switches)
            .map_err(|e| format!("restart the API server with {switches:?}: {e}"))
    }

    /// The clone's `clone status --json`.
    pub(super) fn status(&self, data_dir: &Path) -> Result<Value, String> {
        clone_status(self.lab, &self.binary, data_dir)
    }

    /// The clone's status once its lock is free (within [`STOP_TIMEOUT`]).
    pub(super) fn stopped(&self, data_dir: &Path) -> Result<Value, String> {
        wait_until_stopped(self.lab, &self.binary, data_dir, STOP_TIMEOUT)
    }
}

/// A campaign's backup of `kind`, taken on `lab`: a tar backup, a chain of a full backup and
/// two increments (PostgreSQL 18), an encrypted backup.
fn take_fixture(lab: &Lab, kind: BackupKind) -> Result<BackupFixture, String> {
    match kind {
        BackupKind::Tar(compression) => lab.take_tar_backup(compression),
        BackupKind::Incremental => lab.take_incremental_chain(2),
        BackupKind::Encrypted => lab.take_encrypted_backup(),
    }
    .map_err(|e| e.to_string())
}

/// The digest of a clone of a backup of `kind`, as two clones of it are compared: a chain's
/// combined files and manifest carry the time pg_combinebackup ran, so there every mtime is
/// left out and `backup_manifest` stands for the files it lists ([`manifest_listing`]).
pub(super) fn comparable_digest(
    data_dir: &Path,
    kind: Option<BackupKind>,
) -> Result<TreeDigest, String> {
    let digest =
        tree_digest(data_dir).map_err(|e| format!("digest of {}: {e}", data_dir.display()))?;
    if kind != Some(BackupKind::Incremental) {
        return Ok(digest);
    }
    let mut digest: TreeDigest = digest
        .into_iter()
        .map(|(path, value)| {
            let value = value.split(" mtime").next().unwrap_or(&value).to_string();
            (path, value)
        })
        .collect();
    digest.insert("backup_manifest".into(), manifest_listing(data_dir)?);
    Ok(digest)
}

/// The newest backup the lab's Barman lists: the one a campaign pins.
fn newest_backup(lab: &Lab) -> Result<String, String> {
    lab.backup_ids()
        .map_err(|e| e.to_string())?
        .into_iter()
        .next()
        .ok_or_else(|| "the lab's Barman lists no backup to pin".to_string())
}

/// The pg-backup-api server of a campaign in pg-backup-api mode, started; None in the others.
fn start_api_server(
    lab: &Lab,
    options: &ChaosOptions,
) -> Result<Option<RefCell<ApiServer>>, String> {
    match (options.mode, &options.apiserver) {
        (ChaosMode::Api, Some(built)) => Ok(Some(RefCell::new(
            ApiServer::start(lab, built, &[]).map_err(|e| e.to_string())?,
        ))),
        (ChaosMode::Api, None) => {
            Err("pg-backup-api mode needs pgreplica-apiserver (ChaosOptions::apiserver)".into())
        }
        _ => Ok(None),
    }
}
