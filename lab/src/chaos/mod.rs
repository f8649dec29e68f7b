//! The kill-anywhere campaign's core, shared by `cargo xtask chaos` and `tests/chaos.rs`: rounds
//! that clone while killing real processes — pgreplica's whole process group with SIGKILL,
//! pgreplica alone with SIGTERM, only its rsyncs, or the pg-backup-api server — inside every
//! step and mid-file, resuming after each, then checking the result. One campaign runs one
//! copying mode ([`ChaosMode`]):
//! * Barman (rsync) and pg-backup-api: every round restores one pinned backup, and its data
//!   directory must equal an uninterrupted reference clone of it, file for file; in API mode the
//!   server must also hold exactly one recovery operation for the round's directory.
//! * pg_basebackup: each run of pg_basebackup is a new backup, so there is no reference; the
//!   round's copy must pass `pg_verifybackup`, hold nothing its `backup_manifest` does not list,
//!   and record every restart of its Transfer (optionally: start and stream as a standby).
//!
//! It must not work around pgreplica: a round that does not end Done, identical and clean is a
//! failure, reported with what happened; the round's directory is kept for a post-mortem.
//! Every wait is bounded (a round has a deadline; kills and resumes are counted). Randomness
//! comes from the seed and the round number only, so a round can be replayed on its own.

use std::cell::RefCell;
use std::collections::BTreeSet;
use std::fmt;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ExitStatus};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::api_server::{api_conf, ApiServer};
use crate::clone_check::{
    clone_status, differing_paths, kill_group, kill_rsyncs, pgreplica, rsync_temp_files,
    spawn_in_group, stderr_of, terminate_pgreplica, tree_digest, wait_until_stopped, TreeDigest,
};
use crate::{exec, free_port, Lab, PG_BIN};

/// The steps of a Barman-mode clone, in plan order (pgreplica's `Mode::BarmanRsync` plan; the
/// `Mode::BackupApi` plan is the same).
pub const BARMAN_STEPS: [&str; 6] = [
    "VerifyBackup",
    "FetchParams",
    "PrepareDirs",
    "Transfer",
    "VerifyCopy",
    "WriteReplicationConf",
];

/// The steps of a pg_basebackup-mode clone (`Mode::BaseBackup`): no Barman to verify against.
pub const BASEBACKUP_STEPS: [&str; 5] = [
    "FetchParams",
    "PrepareDirs",
    "Transfer",
    "VerifyCopy",
    "WriteReplicationConf",
];

/// rsync's protocol overhead a resumed transfer may send beyond the bytes not yet done: file
/// lists and checksums, a few bytes per file.
pub const PROTOCOL_OVERHEAD: u64 = 64 * 1024;

/// Files `barman recover` writes anew into every restore of one backup (pg-backup-api mode),
/// with the same content but the mtime of the restore: `postgresql.conf`, which it reads,
/// checks for options to disable and writes back even when it changes nothing, and the
/// `pg_wal/archive_status/*.done` markers it creates for the WAL it copies (so that the standby
/// does not archive them again). Measured by comparing uninterrupted API clones of one backup
/// (Barman 3.4): everything else, `.barman-recover.info` included, is identical, mtimes too.
/// Only these mtimes may differ; content, size and mode are still compared.
pub fn rewritten_by_barman_recover(path: &str) -> bool {
    path == "postgresql.conf"
        || path
            .strip_prefix("pg_wal/archive_status/")
            .is_some_and(|name| name.ends_with(".done") && !name.contains('/'))
}

/// How long a killed clone may take to free its lock.
const STOP_TIMEOUT: Duration = Duration::from_secs(30);
/// Pause between two looks at a running clone (`clone status` itself takes longer).
const POLL: Duration = Duration::from_millis(10);
/// The longest API outage a restart of the API server makes (it is down this long at most).
const API_OUTAGE_MS: u32 = 1500;
/// How long a basebackup round's standby may take to stream.
const STREAM_TIMEOUT: Duration = Duration::from_secs(60);

/// The latest moment, after a step other than Transfer was first seen, at which its kill
/// fires, by step: about as long as the step lasts in a lab (status is read every ~20 ms), so
/// the kill lands anywhere inside it. The quick ones are killed when first seen.
fn step_delay_ms(step: &str) -> u32 {
    match step {
        // show-server and show-backup at once, then the probe: about 0.8 s.
        "VerifyBackup" => 700,
        "Transfer" => 40,
        _ => 0,
    }
}

/// Which copying mode a campaign kills.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ChaosMode {
    /// Barman over ssh + rsync (`barman_host`): the default.
    #[default]
    Barman,
    /// pg-backup-api (`pg_backupapi_host`) against the test server, which runs `barman recover`.
    Api,
    /// pg_basebackup from the primary (`--without-barman`).
    BaseBackup,
}

impl ChaosMode {
    /// Parses `barman`, `api` or `basebackup` (the `--mode` of `cargo xtask chaos`).
    pub fn parse(name: &str) -> Option<ChaosMode> {
        match name {
            "barman" => Some(ChaosMode::Barman),
            "api" => Some(ChaosMode::Api),
            "basebackup" => Some(ChaosMode::BaseBackup),
            _ => None,
        }
    }

    /// The name `--mode` takes.
    pub fn name(self) -> &'static str {
        match self {
            ChaosMode::Barman => "barman",
            ChaosMode::Api => "api",
            ChaosMode::BaseBackup => "basebackup",
        }
    }

    /// The mode as pgreplica names it.
    pub fn label(self) -> &'static str {
        match self {
            ChaosMode::Barman => "Barman (rsync)",
            ChaosMode::Api => "pg-backup-api",
            ChaosMode::BaseBackup => "pg_basebackup",
        }
    }

    /// The steps of the mode's plan, in order.
    pub fn steps(self) -> &'static [&'static str] {
        match self {
            ChaosMode::Barman | ChaosMode::Api => &BARMAN_STEPS,
            ChaosMode::BaseBackup => &BASEBACKUP_STEPS,
        }
    }

    /// How kills are delivered in this mode.
    pub fn actions(self) -> &'static [Action] {
        match self {
            ChaosMode::Barman => &[Action::KillGroup, Action::Terminate, Action::KillRsync],
            ChaosMode::Api => &[Action::KillGroup, Action::Terminate, Action::RestartApi],
            ChaosMode::BaseBackup => &[Action::KillGroup, Action::Terminate],
        }
    }

    fn transfer(self) -> usize {
        self.steps()
            .iter()
            .position(|s| *s == "Transfer")
            .unwrap_or(usize::MAX)
    }
}

impl fmt::Display for ChaosMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.label())
    }
}

/// How a campaign runs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChaosOptions {
    /// The copying mode the campaign kills.
    pub mode: ChaosMode,
    /// The campaign's seed: with the round number, it decides everything random in a round.
    pub seed: u64,
    /// Kills per round: between 1 and this many.
    pub max_kills: u32,
    /// `--jobs` of a round (Barman mode): between 1 and this many.
    pub max_jobs: u32,
    /// Copy rate limit of a round, within this range, so kills land mid-file: rsync's
    /// `--bwlimit` (KiB/s per rsync) in Barman mode, pg_basebackup's `--max-rate` (kB/s) in
    /// pg_basebackup mode. pg-backup-api mode has none (Barman copies as fast as it can).
    pub bwlimit_kbps: (u32, u32),
    /// A round that takes longer is killed and fails.
    pub round_timeout: Duration,
    /// pgreplica-apiserver as built: [`ChaosMode::Api`] needs it.
    pub apiserver: Option<PathBuf>,
    /// pg_basebackup mode: also start each round's result as a standby and wait until it
    /// streams from the primary.
    pub start_standby: bool,
}

impl Default for ChaosOptions {
    /// Barman mode, seed 1, 1–4 kills, 1–3 jobs, 2–8 MiB/s per rsync, 5 minutes per round.
    fn default() -> Self {
        ChaosOptions {
            mode: ChaosMode::Barman,
            seed: 1,
            max_kills: 4,
            max_jobs: 3,
            bwlimit_kbps: (2000, 8000),
            round_timeout: Duration::from_secs(300),
            apiserver: None,
            start_standby: false,
        }
    }
}

/// How a kill is delivered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// SIGKILL to pgreplica's whole process group: a power cut, the OOM killer.
    KillGroup,
    /// SIGTERM to pgreplica alone: systemd stopping it, an operator's `kill`.
    Terminate,
    /// SIGKILL to its rsync processes only: a dropped link, an operator's `pkill rsync`.
    KillRsync,
    /// SIGKILL to the pg-backup-api server, restarted after a short outage while pgreplica
    /// polls (its recovery worker runs on, as the real API's does).
    RestartApi,
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Action::KillGroup => "SIGKILL",
            Action::Terminate => "SIGTERM",
            Action::KillRsync => "rsync-KILL",
            Action::RestartApi => "API-restart",
        })
    }
}

/// One kill of a round, as it happened.
#[derive(Clone, Debug, PartialEq)]
pub struct Kill {
    /// How it was delivered.
    pub action: Action,
    /// The step it aimed at.
    pub aimed: &'static str,
    /// The step the clone was in when the kill landed (its phase after the kill, for SIGKILL).
    pub landed: String,
    /// The Transfer's progress (bytes done / total) when it landed in Transfer.
    pub fraction: Option<f64>,
    /// The kill caught the copy in the middle: rsync temporary files were left (Barman mode),
    /// the recovery operation was still running (pg-backup-api mode), or the copy was partial
    /// (pg_basebackup mode).
    pub mid_file: bool,
}

impl fmt::Display for Kill {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}", self.action, self.landed)?;
        if let Some(fraction) = self.fraction {
            write!(f, " {:.0}%", fraction * 100.0)?;
        }
        if self.mid_file {
            f.write_str(" mid-file")?;
        }
        if self.landed != self.aimed {
            write!(f, " (aimed {})", self.aimed)?;
        }
        Ok(())
    }
}

/// What one round did and how it ended.
#[derive(Debug)]
pub struct RoundReport {
    /// The copying mode.
    pub mode: ChaosMode,
    /// The round's number (with the campaign's seed, it replays the round).
    pub round: u32,
    /// The campaign's seed.
    pub seed: u64,
    /// The clone's `--jobs` (Barman mode).
    pub jobs: u32,
    /// The copy's rate limit in KiB/s (see [`ChaosOptions::bwlimit_kbps`]).
    pub bwlimit_kbps: u32,
    /// The kills, in order.
    pub kills: Vec<Kill>,
    /// `clone resume` runs the round needed.
    pub resumes: u32,
    /// Resumes that needed the operator's choice of operation (pg-backup-api mode: killed
    /// between checkpointing the attempt and recording the POST's id).
    pub operator_choices: u32,
    /// Ok, or why the round failed.
    pub outcome: Result<(), String>,
    /// How long the round took.
    pub duration: Duration,
    /// The round's data directory (removed after a round that passed).
    pub data_dir: PathBuf,
}

impl fmt::Display for RoundReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kills: Vec<String> = self.kills.iter().map(Kill::to_string).collect();
        let settings = match self.mode {
            ChaosMode::Barman => {
                format!("jobs {} bwlimit {:>4} KiB/s", self.jobs, self.bwlimit_kbps)
            }
            ChaosMode::Api => "API".to_string(),
            ChaosMode::BaseBackup => format!("max-rate {:>5} kB/s", self.bwlimit_kbps),
        };
        write!(
            f,
            "round {:>3} (seed {}, {}): {settings} | {} kill(s): {} | {} resume(s){} | {} in {:.1} s",
            self.round,
            self.seed,
            self.mode.name(),
            self.kills.len(),
            if kills.is_empty() { "-".to_string() } else { kills.join(", ") },
            self.resumes,
            if self.operator_choices > 0 {
                format!(", {} operator choice(s)", self.operator_choices)
            } else {
                String::new()
            },
            if self.outcome.is_ok() { "OK" } else { "FAILED" },
            self.duration.as_secs_f64()
        )?;
        if let Err(why) = &self.outcome {
            write!(f, "\n    {why}\n    kept {}", self.data_dir.display())?;
        }
        Ok(())
    }
}

/// What a campaign found over its rounds: the mode, kills per step and action, failures.
pub fn summary(reports: &[RoundReport]) -> String {
    let mode = reports.first().map_or(ChaosMode::Barman, |r| r.mode);
    let actions = mode.actions();
    let mut per_step: Vec<(String, Vec<u32>)> = mode
        .steps()
        .iter()
        .map(|s| s.to_string())
        .chain(std::iter::once("Done".to_string()))
        .map(|s| (s, vec![0; actions.len()]))
        .collect();
    let mut mid_file = 0;
    for kill in reports.iter().flat_map(|r| &r.kills) {
        let column = actions.iter().position(|a| *a == kill.action).unwrap_or(0);
        match per_step.iter_mut().find(|(step, _)| *step == kill.landed) {
            Some((_, counts)) => counts[column] += 1,
            None => {
                let mut counts = vec![0; actions.len()];
                counts[column] = 1;
                per_step.push((kill.landed.clone(), counts));
            }
        }
        mid_file += u32::from(kill.mid_file);
    }
    let failed: Vec<u32> = reports
        .iter()
        .filter(|r| r.outcome.is_err())
        .map(|r| r.round)
        .collect();
    let kills: usize = reports.iter().map(|r| r.kills.len()).sum();
    let seconds: f64 = reports.iter().map(|r| r.duration.as_secs_f64()).sum();
    let mut out = format!(
        "{} mode: {} round(s), {} failed{}; {kills} kill(s), {mid_file} of them mid-file; {seconds:.0} s of rounds\n\
         kills by the step they landed in: ",
        mode.label(),
        reports.len(),
        failed.len(),
        if failed.is_empty() {
            String::new()
        } else {
            format!(" (rounds {failed:?})")
        },
    );
    for action in actions {
        out.push_str(&format!(" {:>11}", action.to_string()));
    }
    out.push('\n');
    for (step, counts) in per_step {
        out.push_str(&format!("  {step:<32}"));
        for count in counts {
            out.push_str(&format!(" {count:>11}"));
        }
        out.push('\n');
    }
    out
}

/// A campaign on a lab: the mode, the pinned backup and the reference clone's digest (Barman
/// and pg-backup-api modes), the API server (pg-backup-api mode).
pub struct Campaign<'a> {
    lab: &'a Lab,
    binary: PathBuf,
    options: ChaosOptions,
    backup_id: String,
    reference: TreeDigest,
    /// How long the reference clone's Transfer took: the window API-mode kills aim into.
    reference_transfer: Duration,
    /// The API server (pg-backup-api mode); a round restarts it, hence the cell.
    api: Option<RefCell<ApiServer>>,
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
        let listed = lab
            .barman(["list-backups", "--minimal", crate::BARMAN_SERVER])
            .map_err(|e| e.to_string())?;
        let backup_id = String::from_utf8_lossy(&listed.stdout)
            .lines()
            .map(str::trim)
            .find(|l| !l.is_empty())
            .map(String::from)
            .ok_or("the lab's Barman lists no backup to pin")?;
        let api = match (options.mode, &options.apiserver) {
            (ChaosMode::Api, Some(built)) => Some(RefCell::new(
                ApiServer::start(lab, built, &[]).map_err(|e| e.to_string())?,
            )),
            (ChaosMode::Api, None) => {
                return Err(
                    "pg-backup-api mode needs pgreplica-apiserver (ChaosOptions::apiserver)".into(),
                )
            }
            _ => None,
        };
        let mut campaign = Campaign {
            lab,
            binary: binary.to_path_buf(),
            options,
            backup_id,
            reference: TreeDigest::new(),
            reference_transfer: Duration::ZERO,
            api,
        };
        if campaign.options.mode == ChaosMode::BaseBackup {
            // Every pg_basebackup is a new backup: there is nothing to compare with.
            return Ok(campaign);
        }
        let dir = lab.new_dir("chaos-reference");
        let conf = campaign.write_conf("chaos-reference", &dir, 0)?;
        let args = campaign.start_args(&conf, &[]);
        let mut command = pgreplica(
            lab,
            binary,
            &args.iter().map(String::as_str).collect::<Vec<_>>(),
        );
        exec::checked(
            &mut command,
            "reference clone",
            campaign.options.round_timeout,
        )
        .map_err(|e| e.to_string())?;
        campaign.reference =
            tree_digest(&dir).map_err(|e| format!("digest of {}: {e}", dir.display()))?;
        let status = campaign.status(&dir)?;
        campaign.reference_transfer = status["history"]
            .as_array()
            .and_then(|h| h.iter().find(|t| t["step"] == "Transfer"))
            .and_then(|t| t["duration_ms"].as_u64())
            .map_or(Duration::from_secs(5), Duration::from_millis);
        if campaign.options.mode == ChaosMode::Api {
            campaign.check_api_jobs(&dir, &status)?;
        }
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

    /// Runs round `round`: a clone killed 1–`max_kills` times and resumed until Done, then
    /// checked (against the reference, in Barman and pg-backup-api modes).
    pub fn run_round(&self, round: u32) -> RoundReport {
        let began = Instant::now();
        let mut rng = Rng::for_round(self.options.seed, round);
        let mut report = RoundReport {
            mode: self.options.mode,
            round,
            seed: self.options.seed,
            jobs: rng.between(1, self.options.max_jobs.max(1)),
            bwlimit_kbps: rng.between(self.options.bwlimit_kbps.0, self.options.bwlimit_kbps.1),
            kills: Vec::new(),
            resumes: 0,
            operator_choices: 0,
            outcome: Ok(()),
            duration: Duration::ZERO,
            data_dir: self.lab.new_dir(&format!("chaos-round-{round}")),
        };
        let planned = rng.between(1, self.options.max_kills.max(1));
        report.outcome = self.drive(&mut rng, &mut report, planned);
        report.duration = began.elapsed();
        if report.outcome.is_ok() {
            // Best effort: a passed round's copy only takes room.
            let _ = std::fs::remove_dir_all(&report.data_dir);
        }
        report
    }

    /// The repmgr.conf of a clone into `data_dir`; `rate` is the round's copy rate limit
    /// (pg_basebackup mode).
    fn write_conf(&self, name: &str, data_dir: &Path, rate: u32) -> Result<PathBuf, String> {
        // One node name for every clone: it is part of the primary_conninfo pgreplica writes.
        match self.options.mode {
            ChaosMode::Api => {
                let host = self.api_server()?.borrow().host();
                let pinned = format!("pg_backupapi_backup_id='{}'", self.backup_id);
                api_conf(self.lab, &host, data_dir, &pinned).map_err(|e| e.to_string())
            }
            mode => {
                let path = self.lab.dir().join(format!("{name}.conf"));
                let mut text = self
                    .lab
                    .repmgr_conf(2, "node2", data_dir, self.lab.primary_port());
                if mode == ChaosMode::BaseBackup && rate > 0 {
                    text.push_str(&format!("pg_basebackup_options='--max-rate={rate}'\n"));
                }
                self.lab
                    .write_file_as_postgres(&path, &text)
                    .map_err(|e| e.to_string())?;
                Ok(path)
            }
        }
    }

    fn start_args(&self, conf: &Path, extra: &[String]) -> Vec<String> {
        let mut args = self.lab.clone_start_args(conf);
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

    fn api_server(&self) -> Result<&RefCell<ApiServer>, String> {
        self.api
            .as_ref()
            .ok_or_else(|| "no API server in this campaign".to_string())
    }

    fn spawn(&self, args: &[String], env: Option<(&str, &str)>) -> Result<Child, String> {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let mut command = pgreplica(self.lab, &self.binary, &args);
        if let Some((key, value)) = env {
            command.env(key, value);
        }
        spawn_in_group(&mut command)
            .map_err(|e| format!("cannot start pgreplica {}: {e}", args.join(" ")))
    }

    fn status(&self, data_dir: &Path) -> Result<Value, String> {
        clone_status(self.lab, &self.binary, data_dir)
    }

    fn stopped(&self, data_dir: &Path) -> Result<Value, String> {
        wait_until_stopped(self.lab, &self.binary, data_dir, STOP_TIMEOUT)
    }

    /// The round proper: kill, resume, repeat; then the checks. Kills the clone on any error.
    fn drive(&self, rng: &mut Rng, report: &mut RoundReport, planned: u32) -> Result<(), String> {
        let deadline = Instant::now() + self.options.round_timeout;
        let data_dir = report.data_dir.clone();
        let conf = self.write_conf(
            &format!("chaos-round-{}", report.round),
            &data_dir,
            report.bwlimit_kbps,
        )?;
        let extra = match self.options.mode {
            ChaosMode::Barman => vec![
                "--jobs".to_string(),
                report.jobs.to_string(),
                "--bwlimit".to_string(),
                report.bwlimit_kbps.to_string(),
            ],
            ChaosMode::Api | ChaosMode::BaseBackup => Vec::new(),
        };
        let mut child = self.spawn(&self.start_args(&conf, &extra), None)?;
        let mut ledger = Ledger::default();
        let result = self.kill_and_resume(rng, report, planned, deadline, &mut child, &mut ledger);
        if result.is_err() {
            // Nothing of the round may outlive it; the directory stays for a post-mortem.
            let _ = kill_group(&mut child);
            return result;
        }
        self.check(&data_dir, &ledger)
    }

    fn kill_and_resume(
        &self,
        rng: &mut Rng,
        report: &mut RoundReport,
        planned: u32,
        deadline: Instant,
        child: &mut Child,
        ledger: &mut Ledger,
    ) -> Result<(), String> {
        let steps = self.options.mode.steps();
        let data_dir = report.data_dir.clone();
        // A new clone starts at the first step.
        let mut position = Position {
            steps,
            transfer: self.options.mode.transfer(),
            step: Some(0),
            fraction: 0.0,
            live_transfer: false,
        };
        // The kill this run of pgreplica has seen, which explains a failed exit.
        let mut last_action = None;
        // The clone as the last stop left it.
        let mut last_stop = Value::Null;
        // The operator's choice of operation for the next resume (pg-backup-api mode).
        let mut choice: Option<String> = None;
        // Each kill costs at most one resume, plus one for in-run retries running out and one
        // for an operator's choice.
        let max_resumes = planned + 3;
        loop {
            // After a SIGTERM nothing else is aimed at the exiting pgreplica: its exit code (40)
            // and the "Interrupted" it records are what is checked.
            let aiming =
                report.kills.len() < planned as usize && last_action != Some(Action::Terminate);
            let target = aiming.then(|| position.aim(self.options.mode, rng));
            match self.watch(child, target, &data_dir, deadline, &mut position, rng)? {
                Watched::Exited(status) => {
                    let stderr = stderr_of(child);
                    if status.success() {
                        return Ok(());
                    }
                    let code = status.code();
                    // SIGTERM: exit 40, or death by the signal if it came before pgreplica's
                    // handler. A killed rsync: exit 2 once the in-run retries ran out.
                    let ours = match last_action {
                        Some(Action::Terminate) => {
                            code == Some(40) || status.signal() == Some(libc::SIGTERM)
                        }
                        Some(Action::KillRsync) => code == Some(2),
                        _ => false,
                    };
                    if ours {
                        ledger.interrupted += u32::from(code == Some(40));
                    } else if let Some(chosen) =
                        self.operator_choice(code, &stderr, &last_stop, &data_dir)?
                    {
                        // Killed between checkpointing the attempt and recording the id: the
                        // documented stop (exit 28); the campaign answers as the operator would.
                        report.operator_choices += 1;
                        choice = Some(chosen);
                    } else {
                        return Err(format!(
                            "pgreplica exited with {status} (last kill: {}):\n{}",
                            last_action.map_or("none".to_string(), |a: Action| a.to_string()),
                            exec::tail(&stderr, 15)
                        ));
                    }
                    let stopped = self.stopped(&data_dir)?;
                    ledger.note_stop(steps, &stopped, code == Some(40));
                    position.update(&stopped);
                    last_stop = stopped;
                }
                Watched::Fired(mut kill) => {
                    last_action = Some(kill.action);
                    let stopped = if kill.action == Action::KillGroup {
                        let stopped = self.stopped(&data_dir)?;
                        kill.landed = phase_of(&stopped);
                        ledger.note_stop(steps, &stopped, false);
                        position.update(&stopped);
                        last_stop = stopped;
                        true
                    } else {
                        // SIGTERM, a killed rsync, a restarted API: the same pgreplica goes on
                        // or exits.
                        false
                    };
                    kill.mid_file = match self.options.mode {
                        ChaosMode::Barman => tree_digest(&data_dir)
                            .map(|d| !rsync_temp_files(&d).is_empty())
                            .unwrap_or(false),
                        // The recovery was still running (its worker goes on without pgreplica).
                        ChaosMode::Api => {
                            kill.landed == "Transfer"
                                && self.api_server()?.borrow().jobs().is_ok_and(|jobs| {
                                    jobs.iter().any(|j| {
                                        Path::new(&j.destination) == data_dir && j.success.is_none()
                                    })
                                })
                        }
                        // A partial copy: something arrived, pg_control (sent last) not yet.
                        ChaosMode::BaseBackup => {
                            kill.landed == "Transfer"
                                && !data_dir.join("global/pg_control").exists()
                                && std::fs::read_dir(&data_dir)
                                    .is_ok_and(|mut d| d.next().is_some())
                        }
                    };
                    report.kills.push(kill);
                    if !stopped {
                        continue;
                    }
                }
            }
            if position.step.is_none() {
                // Killed after its last checkpoint: the clone is Done, there is nothing to resume.
                return Ok(());
            }
            report.resumes += 1;
            if report.resumes > max_resumes {
                return Err(format!("still not Done after {max_resumes} resumes"));
            }
            last_action = None;
            let env = choice.take().map(|c| ("PGREPLICA_BACKUP_API_OPERATION", c));
            *child = self.spawn(
                &[
                    "clone".to_string(),
                    "resume".to_string(),
                    data_dir.display().to_string(),
                ],
                env.as_ref().map(|(k, v)| (*k, v.as_str())),
            )?;
        }
    }

    /// pg-backup-api mode: pgreplica stopped with exit 28 because it cannot tell which operation
    /// an earlier run created (killed between checkpointing the attempt and recording the POST's
    /// id). docs/backup-api.md tells the operator to look for the job file whose
    /// destination_directory is the data directory: the campaign does that, and returns the
    /// choice (`<id>` or `new`). None when the exit is not that one.
    fn operator_choice(
        &self,
        code: Option<i32>,
        stderr: &str,
        last_stop: &Value,
        data_dir: &Path,
    ) -> Result<Option<String>, String> {
        let attempt = &last_stop["record"]["api_operation"];
        let lost_id = attempt.is_object() && attempt["operation_id"].is_null();
        if self.options.mode != ChaosMode::Api
            || code != Some(28)
            || !lost_id
            || !stderr.contains("cannot tell which pg-backup-api operation")
        {
            return Ok(None);
        }
        let jobs = self.jobs_for(data_dir)?;
        Ok(Some(match jobs.as_slice() {
            [] => "new".to_string(),
            [one] => one.clone(),
            several => {
                return Err(format!(
                    "the API holds {} operations for {}: {several:?}",
                    several.len(),
                    data_dir.display()
                ))
            }
        }))
    }

    /// The ids of the API server's recovery operations into `data_dir`.
    fn jobs_for(&self, data_dir: &Path) -> Result<Vec<String>, String> {
        let jobs = self
            .api_server()?
            .borrow()
            .jobs()
            .map_err(|e| e.to_string())?;
        Ok(jobs
            .into_iter()
            .filter(|j| Path::new(&j.destination) == data_dir)
            .map(|j| j.id)
            .collect())
    }

    /// SIGKILLs the API server and starts it again after an outage of up to
    /// [`API_OUTAGE_MS`], during which pgreplica's requests are refused.
    fn restart_api(&self, rng: &mut Rng) -> Result<(), String> {
        let server = self.api_server()?;
        server.borrow_mut().kill();
        // The outage is the point: pgreplica must ride out refused connections.
        std::thread::sleep(Duration::from_millis(rng.between(0, API_OUTAGE_MS).into()));
        server
            .borrow_mut()
            .spawn(&[])
            .map_err(|e| format!("restart the API server: {e}"))
    }

    /// Watches the running clone until it exits or `target`'s moment comes and the kill is
    /// delivered. Without a target, only waits for the exit.
    fn watch(
        &self,
        child: &mut Child,
        target: Option<Target>,
        data_dir: &Path,
        deadline: Instant,
        position: &mut Position,
        rng: &mut Rng,
    ) -> Result<Watched, String> {
        let mode = self.options.mode;
        let transfer = mode.transfer();
        let mut fire_at: Option<Instant> = None;
        loop {
            if let Some(status) = child
                .try_wait()
                .map_err(|e| format!("wait for pgreplica: {e}"))?
            {
                return Ok(Watched::Exited(status));
            }
            if Instant::now() >= deadline {
                return Err(format!(
                    "the round did not finish within {:?}",
                    self.options.round_timeout
                ));
            }
            let Some(target) = target else {
                std::thread::sleep(Duration::from_millis(50));
                continue;
            };
            // Before the runner takes its lock and publishes, status has nothing to say.
            let status = match self.status(data_dir) {
                Ok(status) if status["running"] == true => status,
                _ => {
                    std::thread::sleep(POLL);
                    continue;
                }
            };
            position.update(&status);
            let Some(index) = position.step else {
                // Done: nothing left to kill; the exit follows.
                std::thread::sleep(POLL);
                continue;
            };
            let now = Instant::now();
            let due = match index.cmp(&target.step) {
                std::cmp::Ordering::Less => false,
                std::cmp::Ordering::Greater => true,
                // pg-backup-api: the bytes arriving are measured against an estimate, so the
                // kill aims at a moment of the reference's Transfer instead.
                std::cmp::Ordering::Equal if index == transfer && mode == ChaosMode::Api => {
                    *fire_at.get_or_insert_with(|| {
                        now + self.reference_transfer.mul_f64(target.fraction)
                    }) <= now
                }
                std::cmp::Ordering::Equal if index == transfer => {
                    position.live_transfer && position.fraction >= target.fraction
                }
                std::cmp::Ordering::Equal => {
                    *fire_at.get_or_insert_with(|| {
                        let delay = rng.between(0, step_delay_ms(mode.steps()[index]));
                        now + Duration::from_millis(delay.into())
                    }) <= now
                }
            };
            if !due {
                std::thread::sleep(POLL);
                continue;
            }
            // rsyncs run and the API is polled only inside Transfer: past it, a planned rsync
            // kill or API restart kills the group.
            let action = match target.action {
                Action::KillRsync | Action::RestartApi if index > transfer => Action::KillGroup,
                action => action,
            };
            let delivered = match action {
                Action::KillGroup => kill_group(child)
                    .map(|()| true)
                    .map_err(|e| format!("kill pgreplica's group: {e}"))?,
                Action::Terminate => terminate_pgreplica(child),
                Action::KillRsync => {
                    kill_rsyncs(data_dir).map_err(|e| format!("pkill rsync: {e}"))?
                }
                Action::RestartApi => self.restart_api(rng).map(|()| true)?,
            };
            if delivered {
                return Ok(Watched::Fired(Kill {
                    action,
                    aimed: mode.steps()[target.step],
                    landed: mode.steps()[index].to_string(),
                    fraction: (index == transfer && mode != ChaosMode::Api)
                        .then_some(position.fraction),
                    mid_file: false,
                }));
            }
            // The rsyncs between two files, pgreplica between fork and exec: try again.
            std::thread::sleep(POLL);
        }
    }

    /// The end of a round: Done, with its history accounted for, and the mode's own checks.
    fn check(&self, data_dir: &Path, ledger: &Ledger) -> Result<(), String> {
        let status = self.status(data_dir)?;
        let mut problems = Vec::new();
        if status["phase"] != "Done" || status["running"] != false {
            problems.push(format!(
                "the clone is {} (running: {}), not Done",
                status["phase"], status["running"]
            ));
        }
        let history = status["history"].as_array().cloned().unwrap_or_default();
        let count = |outcome: &str| history.iter().filter(|t| t["outcome"] == outcome).count();
        if count("Crashed") != ledger.in_flight.len() {
            problems.push(format!(
                "history shows {} crash(es), the kills left {} step(s) in flight",
                count("Crashed"),
                ledger.in_flight.len()
            ));
        }
        if count("Interrupted") != ledger.interrupted as usize {
            problems.push(format!(
                "history shows {} interruption(s), SIGTERM stopped {}",
                count("Interrupted"),
                ledger.interrupted
            ));
        }
        let outcome = match self.options.mode {
            ChaosMode::Barman => self.check_barman(data_dir, &status, ledger),
            ChaosMode::Api => self.check_api(data_dir, &status),
            ChaosMode::BaseBackup => self.check_basebackup(data_dir, &status, &history, ledger),
        };
        if let Err(more) = outcome {
            problems.push(more);
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(problems.join("; "))
        }
    }

    /// Barman mode: the pinned backup, identical to the reference, no rsync temporaries, and no
    /// more bytes re-sent than were not done.
    fn check_barman(&self, data_dir: &Path, status: &Value, ledger: &Ledger) -> Result<(), String> {
        let mut problems = self.check_against_reference(data_dir, status)?;
        let transfer = &status["record"]["facts"]["transfer"];
        match (
            transfer["bytes_sent"].as_u64(),
            transfer["bytes_total"].as_u64(),
        ) {
            (Some(sent), Some(total)) => {
                let not_done = total.saturating_sub(ledger.done_before_transfer_succeeded);
                if sent > not_done + PROTOCOL_OVERHEAD {
                    problems.push(format!(
                        "the last transfer sent {sent} bytes, but only {not_done} were not done"
                    ));
                }
            }
            _ => problems.push(format!("no transfer summary in the record: {transfer}")),
        }
        joined(problems)
    }

    /// pg-backup-api mode: the pinned backup, identical to the reference, and exactly one
    /// operation, done and successful, into the data directory: the one the record holds.
    fn check_api(&self, data_dir: &Path, status: &Value) -> Result<(), String> {
        let mut problems = self.check_against_reference(data_dir, status)?;
        if let Err(e) = self.check_api_jobs(data_dir, status) {
            problems.push(e);
        }
        joined(problems)
    }

    /// Exactly one recovery operation into `data_dir`, finished successfully, and it is the one
    /// the clone's record holds.
    fn check_api_jobs(&self, data_dir: &Path, status: &Value) -> Result<(), String> {
        let jobs: Vec<_> = self
            .api_server()?
            .borrow()
            .jobs()
            .map_err(|e| e.to_string())?
            .into_iter()
            .filter(|j| Path::new(&j.destination) == data_dir)
            .collect();
        let recorded = status["record"]["api_operation"]["operation_id"].as_str();
        match jobs.as_slice() {
            [one] if one.success == Some(true) && recorded == Some(one.id.as_str()) => Ok(()),
            [one] => Err(format!(
                "the API's one operation into {} is {} (success {:?}), the record holds {:?}",
                data_dir.display(),
                one.id,
                one.success,
                recorded
            )),
            jobs => Err(format!(
                "the API holds {} recovery operations into {}, not one: {jobs:?}",
                jobs.len(),
                data_dir.display()
            )),
        }
    }

    /// What Barman and pg-backup-api rounds share: the pinned backup, a data directory equal to
    /// the reference's, no rsync temporaries. Returns the problems found.
    fn check_against_reference(
        &self,
        data_dir: &Path,
        status: &Value,
    ) -> Result<Vec<String>, String> {
        let mut problems = Vec::new();
        if status["backup_id"] != self.backup_id.as_str() {
            problems.push(format!(
                "it restored backup {}, not the pinned {}",
                status["backup_id"], self.backup_id
            ));
        }
        let digest =
            tree_digest(data_dir).map_err(|e| format!("digest of {}: {e}", data_dir.display()))?;
        let temps = rsync_temp_files(&digest);
        if !temps.is_empty() {
            problems.push(format!("rsync temporary files remain: {temps:?}"));
        }
        let differing = match self.options.mode {
            ChaosMode::Api => differing_paths(
                &without_recover_variance(&digest),
                &without_recover_variance(&self.reference),
            ),
            _ => differing_paths(&digest, &self.reference),
        };
        if !differing.is_empty() {
            problems.push(format!(
                "{} path(s) differ from the uninterrupted clone: {:?}",
                differing.len(),
                &differing[..differing.len().min(10)]
            ));
        }
        Ok(problems)
    }

    /// pg_basebackup mode: every restart recorded, `pg_verifybackup` passes, nothing on disk
    /// that the manifest does not list, and (optionally) the standby streams.
    fn check_basebackup(
        &self,
        data_dir: &Path,
        status: &Value,
        history: &[Value],
        ledger: &Ledger,
    ) -> Result<(), String> {
        let mut problems = Vec::new();
        let restarts = status["record"]["facts"]["transfer"]["restarts"].as_u64();
        let earlier = history
            .iter()
            .filter(|t| t["step"] == "Transfer" && t["outcome"] != "Succeeded")
            .count() as u64;
        let stopped = ledger.transfer_stops.len() as u64 + u64::from(ledger.transfer_interrupted);
        if restarts != Some(earlier) || earlier != stopped {
            problems.push(format!(
                "the transfer records {restarts:?} restart(s), its history {earlier} earlier attempt(s), the kills stopped it {stopped} time(s)"
            ));
        }
        if let Err(e) = verify_backup(self.lab, data_dir) {
            problems.push(e);
        }
        match files_not_in_manifest(data_dir) {
            Ok(extra) if extra.is_empty() => {}
            Ok(extra) => problems.push(format!(
                "{} file(s) the backup_manifest does not list (leftovers?): {:?}",
                extra.len(),
                &extra[..extra.len().min(10)]
            )),
            Err(e) => problems.push(e),
        }
        if problems.is_empty() && self.options.start_standby {
            if let Err(e) = self.streams(data_dir) {
                problems.push(e);
            }
        }
        joined(problems)
    }

    /// Starts `data_dir` as a standby, waits until it streams, stops it.
    fn streams(&self, data_dir: &Path) -> Result<(), String> {
        let standby = self
            .lab
            .start_standby(data_dir, free_port())
            .map_err(|e| format!("the standby does not start: {e}"))?;
        let streaming = standby
            .wait_streaming(STREAM_TIMEOUT)
            .map_err(|e| format!("the standby does not stream: {e}"));
        let stopped = standby
            .stop()
            .map_err(|e| format!("the standby does not stop: {e}"));
        streaming.and(stopped)
    }
}

fn joined(problems: Vec<String>) -> Result<(), String> {
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems.join("; "))
    }
}

/// A digest without the mtimes [`rewritten_by_barman_recover`] lets differ between restores.
fn without_recover_variance(digest: &TreeDigest) -> TreeDigest {
    digest
        .iter()
        .map(|(path, value)| {
            let value = if rewritten_by_barman_recover(path) {
                value.split(" mtime").next().unwrap_or(value)
            } else {
                value
            };
            (path.clone(), value.to_string())
        })
        .collect()
}

/// `pg_verifybackup DATA_DIR` as postgres, WAL parsing included: every file the manifest lists
/// is there with its size and checksum, nothing else is (but the files it ignores by design:
/// postgresql.auto.conf, standby.signal, recovery.signal, pg_wal/), and the WAL needed to reach
/// consistency is in pg_wal.
pub fn verify_backup(lab: &Lab, data_dir: &Path) -> Result<(), String> {
    let mut command = lab.command_as_postgres(format!("{PG_BIN}/pg_verifybackup"));
    command.arg(data_dir);
    exec::checked(&mut command, "pg_verifybackup", Duration::from_secs(120))
        .map(drop)
        .map_err(|e| e.to_string())
}

/// Files (and symlinks) under `data_dir` that its `backup_manifest` does not list: what a killed
/// attempt may have left. Outside the manifest by design: the manifest itself, pg_wal/ (the WAL
/// streamed with the backup, checked by `pg_verifybackup`'s WAL parsing), and what pgreplica
/// writes after the copy (standby.signal; postgresql.auto.conf is listed, with the content
/// pg_basebackup wrote).
pub fn files_not_in_manifest(data_dir: &Path) -> Result<Vec<String>, String> {
    let manifest_path = data_dir.join("backup_manifest");
    let text = std::fs::read_to_string(&manifest_path)
        .map_err(|e| format!("read {}: {e}", manifest_path.display()))?;
    let manifest: Value = serde_json::from_str(&text)
        .map_err(|e| format!("{} is not JSON: {e}", manifest_path.display()))?;
    let listed: BTreeSet<&str> = manifest["Files"]
        .as_array()
        .map(|files| files.iter().filter_map(|f| f["Path"].as_str()).collect())
        .unwrap_or_default();
    if listed.is_empty() {
        return Err(format!("{} lists no file", manifest_path.display()));
    }
    let digest =
        tree_digest(data_dir).map_err(|e| format!("digest of {}: {e}", data_dir.display()))?;
    Ok(digest
        .iter()
        // Directories are not listed; tablespace links are the backup's tablespace map.
        .filter(|(path, value)| {
            let tablespace_link = value.starts_with("link ") && path.starts_with("pg_tblspc/");
            !value.starts_with("dir ") && !tablespace_link
        })
        .map(|(path, _)| path)
        .filter(|path| !listed.contains(path.as_str()))
        .filter(|path| {
            !matches!(
                path.as_str(),
                "backup_manifest" | "standby.signal" | "pg_wal"
            ) && !path.starts_with("pg_wal/")
        })
        .cloned()
        .collect())
}
/// What the round's stops promise the final record will show.
#[derive(Default)]
struct Ledger {
    /// The step attempts stops left in flight (SIGKILL inside a step): each is one "Crashed" in
    /// the history once resumed, however often it is killed before a run records it.
    in_flight: BTreeSet<String>,
    /// SIGTERMs that stopped pgreplica with exit 40: each is an "Interrupted".
    interrupted: u32,
    /// Bytes the transfer had done at the last stop before it succeeded.
    done_before_transfer_succeeded: u64,
    /// The Transfer attempts among [`Ledger::in_flight`]: each is a restart in pg_basebackup
    /// mode.
    transfer_stops: BTreeSet<String>,
    /// SIGTERMs that interrupted a Transfer: each is a restart too.
    transfer_interrupted: u32,
}

impl Ledger {
    /// Notes a stop: `stopped` is the clone's status once its lock is free; `interrupted` when
    /// pgreplica exited 40.
    fn note_stop(&mut self, steps: &[&str], stopped: &Value, interrupted: bool) {
        // Killed between a step's outcome and the next begin, nothing was in flight: the
        // resume has no crash to record.
        let in_flight = &stopped["record"]["in_flight"];
        if !in_flight.is_null() {
            self.in_flight.insert(in_flight.to_string());
            if in_flight["step"] == "Transfer" {
                self.transfer_stops.insert(in_flight.to_string());
            }
        }
        if interrupted {
            let last = stopped["history"]
                .as_array()
                .and_then(|h| h.last())
                .cloned()
                .unwrap_or_default();
            if last["step"] == "Transfer" && last["outcome"] == "Interrupted" {
                self.transfer_interrupted += 1;
            }
        }
        let transfer = steps.iter().position(|s| *s == "Transfer").unwrap_or(0);
        let before_or_in_transfer = steps[..=transfer].iter().any(|s| stopped["phase"] == *s);
        if before_or_in_transfer {
            self.done_before_transfer_succeeded =
                stopped["files"]["bytes_done"].as_u64().unwrap_or(0);
        }
    }
}

/// Where the clone was last seen.
struct Position {
    /// The mode's steps.
    steps: &'static [&'static str],
    /// Transfer's index in them.
    transfer: usize,
    /// Index in `steps`; None once Done.
    step: Option<usize>,
    /// Transfer's bytes done / total, as last seen.
    fraction: f64,
    /// The fraction comes from a running Transfer's live progress.
    live_transfer: bool,
}

impl Position {
    fn update(&mut self, status: &Value) {
        let phase = phase_of(status);
        self.step = if phase == "Done" {
            None
        } else {
            self.steps.iter().position(|s| *s == phase).or(self.step)
        };
        let live = &status["live"];
        let (progress, live_transfer) = if live["step"] == "Transfer" {
            (live, true)
        } else {
            (&status["files"], false)
        };
        if let (Some(done), Some(total)) = (
            progress["bytes_done"].as_u64(),
            progress["bytes_total"].as_u64(),
        ) {
            if total > 0 {
                self.fraction = done as f64 / total as f64;
            }
        }
        self.live_transfer = live_transfer;
    }

    /// A kill for a moment still ahead: a step from the current one on (Transfer twice as
    /// likely: it is where the time and the files are), at a byte fraction still to come (in
    /// pg-backup-api mode, a fraction of the reference's Transfer time from when it is seen).
    fn aim(&self, mode: ChaosMode, rng: &mut Rng) -> Target {
        let transfer = self.transfer;
        let from = self.step.unwrap_or(self.steps.len() - 1);
        let choices: Vec<usize> = (from..self.steps.len())
            .chain((from <= transfer).then_some(transfer))
            .collect();
        let step = choices[rng.below(choices.len() as u64) as usize];
        let start = if step == transfer && from == transfer && mode != ChaosMode::Api {
            self.fraction
        } else {
            0.0
        };
        let fraction = start + (0.95 - start).max(0.0) * rng.unit();
        let roll = rng.below(10);
        let action = match (step == transfer, roll, mode) {
            (true, 0..=1, ChaosMode::Barman) => Action::KillRsync,
            (true, 0..=1, ChaosMode::Api) => Action::RestartApi,
            (_, 2..=3, _) => Action::Terminate,
            _ => Action::KillGroup,
        };
        Target {
            step,
            fraction,
            action,
        }
    }
}

/// When and how the next kill lands.
#[derive(Clone, Copy, Debug)]
struct Target {
    step: usize,
    fraction: f64,
    action: Action,
}

enum Watched {
    Exited(ExitStatus),
    Fired(Kill),
}

fn phase_of(status: &Value) -> String {
    status["phase"].as_str().unwrap_or("unknown").to_string()
}

/// SplitMix64: a small, well-mixed generator, reproducible from a seed (std has none, and the
/// lab keeps its dependencies few).
struct Rng(u64);

impl Rng {
    /// The generator of round `round` of a campaign with `seed`: rounds are independent, so one
    /// can be replayed alone.
    fn for_round(seed: u64, round: u32) -> Rng {
        let mut rng = Rng(seed ^ u64::from(round).wrapping_mul(0xd1b5_4a32_d192_ed03));
        rng.next();
        rng
    }

    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (n > 0).
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }

    /// Uniform in `low..=high`.
    fn between(&mut self, low: u32, high: u32) -> u32 {
        let (low, high) = (low.min(high), low.max(high));
        low + self.below(u64::from(high - low) + 1) as u32
    }

    /// Uniform in `[0, 1)`.
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1_u64 << 53) as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_mtimes_barman_recover_rewrites_may_differ() {
        assert!(rewritten_by_barman_recover("postgresql.conf"));
        assert!(rewritten_by_barman_recover(
            "pg_wal/archive_status/000000010000000000000004.done"
        ));
        for strict in [
            "pg_wal/000000010000000000000004",
            "pg_wal/archive_status/000000010000000000000004.ready",
            "base/1/postgresql.conf",
            "postgresql.conf.origin",
        ] {
            assert!(!rewritten_by_barman_recover(strict), "{strict}");
        }
        let digest: TreeDigest = [
            ("postgresql.conf", "file 9 600 0a mtime 5"),
            ("PG_VERSION", "file 3 600 0b mtime 5"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let cleaned = without_recover_variance(&digest);
        assert_eq!(cleaned["postgresql.conf"], "file 9 600 0a");
        assert_eq!(cleaned["PG_VERSION"], "file 3 600 0b mtime 5");
    }

    #[test]
    fn rounds_are_reproducible_and_independent() {
        let draw = |seed, round| {
            let mut rng = Rng::for_round(seed, round);
            (0..8).map(|_| rng.between(1, 4)).collect::<Vec<_>>()
        };
        assert_eq!(draw(7, 3), draw(7, 3));
        assert_ne!(draw(7, 3), draw(7, 4));
        assert_ne!(draw(7, 3), draw(8, 3));
        let mut rng = Rng::for_round(1, 1);
        for _ in 0..1000 {
            assert!((1..=3).contains(&rng.between(1, 3)));
            assert!((0.0..1.0).contains(&rng.unit()));
        }
    }

    #[test]
    fn aims_only_at_moments_still_ahead() {
        let mut rng = Rng::for_round(5, 0);
        for mode in [ChaosMode::Barman, ChaosMode::Api, ChaosMode::BaseBackup] {
            let transfer = mode.transfer();
            let position = Position {
                steps: mode.steps(),
                transfer,
                step: Some(transfer),
                fraction: 0.6,
                live_transfer: true,
            };
            for _ in 0..200 {
                let target = position.aim(mode, &mut rng);
                assert!(target.step >= transfer);
                if target.step == transfer && mode != ChaosMode::Api {
                    assert!(target.fraction >= 0.6);
                }
                assert!(
                    mode.actions().contains(&target.action),
                    "{mode:?} {target:?}"
                );
                let special = matches!(target.action, Action::KillRsync | Action::RestartApi);
                assert!(!special || target.step == transfer);
            }
        }
    }
}
