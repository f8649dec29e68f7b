//! One round of a campaign ([`Campaign::run_round`]): start a clone with the round's settings
//! (in pg-backup-api mode, perhaps with the API unable to start workers), kill it as aimed,
//! resume it until Done — answering pgreplica as an operator would when it stops for one
//! (the API fixed and `--api-operation new` after an operation that never started; which
//! operation is the clone's when it cannot tell) — then the end-of-round checks. A failed exit
//! of pgreplica is a failure of the round unless the last kill or the round's fault explains
//! it.

use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{Child, ExitStatus};
use std::time::{Duration, Instant};

use serde_json::Value;
use states::{Phase, Step};

use super::kill::{Action, Position, Watched};
use super::ledger::Ledger;
use super::options::ChaosMode;
use super::report::{Kill, RoundReport};
use super::rng::Rng;
use super::Campaign;
use crate::clone_check::{kill_group, rsync_temp_files, stderr_of, tree_digest};
use crate::{exec, status};

impl Campaign<'_> {
    /// Runs round `round`: a clone killed 1–`max_kills` times and resumed until Done, then
    /// checked (against the reference, in Barman and pg-backup-api modes).
    pub fn run_round(&self, round: u32) -> RoundReport {
        let began = Instant::now();
        let mut rng = Rng::for_round(self.options.seed, round);
        let mut report = RoundReport {
            mode: self.options.mode,
            steps: self.options.steps(),
            round,
            seed: self.options.seed,
            jobs: rng.between(1, self.options.max_jobs.max(1)),
            bwlimit_kbps: rng.between(self.options.bwlimit_kbps.0, self.options.bwlimit_kbps.1),
            kills: Vec::new(),
            resumes: 0,
            operator_choices: 0,
            // Drawn in pg-backup-api mode only, so that the other modes' rounds replay as before.
            spawn_failure: self.options.mode == ChaosMode::Api && rng.below(3) == 0,
            outcome: Ok(()),
            duration: Duration::ZERO,
            data_dir: self.lab.new_dir(&format!("chaos-round-{round}")),
        };
        let planned = rng.between(1, self.options.max_kills.max(1));
        report.outcome = self.drive(&mut rng, &mut report, planned);
        if self.options.mode == ChaosMode::Api {
            // Whatever happened, the next round begins with a working API.
            if let Err(e) = self.set_api_switches(&[]) {
                report.outcome = report.outcome.clone().and(Err(e));
            }
        }
        if self.faults.is_some() {
            if let Err(e) = self.drop_round_slot() {
                report.outcome = report.outcome.clone().and(Err(e));
            }
        }
        report.duration = began.elapsed();
        if report.outcome.is_ok() {
            // Best effort: a passed round's copy and log only take room.
            let _ = std::fs::remove_dir_all(&report.data_dir);
            let _ = std::fs::remove_file(report.data_dir.with_extension("log"));
        }
        report
    }

    /// The round proper: kill, resume, repeat; then the checks. Kills the clone on any error.
    fn drive(&self, rng: &mut Rng, report: &mut RoundReport, planned: u32) -> Result<(), String> {
        let deadline = Instant::now() + self.options.round_timeout;
        let data_dir = report.data_dir.clone();
        if report.spawn_failure {
            self.set_api_switches(&[SPAWN_FAILS])?;
        }
        let mut child = self.start_round(report)?;
        let mut ledger = Ledger::default();
        let result = self.kill_and_resume(rng, report, planned, deadline, &mut child, &mut ledger);
        if result.is_err() {
            // Nothing of the round may outlive it; the directory stays for a post-mortem.
            let _ = kill_group(&mut child);
            return result;
        }
        self.check(&data_dir, &ledger)
    }

    /// Starts the round's clone with its settings: its repmgr.conf (pg_basebackup's rate
    /// limit), and in Barman mode its `--jobs` and `--bwlimit`.
    fn start_round(&self, report: &RoundReport) -> Result<Child, String> {
        let conf = self.write_conf(
            &format!("chaos-round-{}", report.round),
            &report.data_dir,
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
        self.spawn(&self.start_args(&conf, &extra))
    }

    /// Kills the running clone `child` `planned` times, each kill aimed afresh from where the
    /// clone is, and resumes it after each stop until it is Done; notes every stop in `ledger`.
    fn kill_and_resume(
        &self,
        rng: &mut Rng,
        report: &mut RoundReport,
        planned: u32,
        deadline: Instant,
        child: &mut Child,
        ledger: &mut Ledger,
    ) -> Result<(), String> {
        let data_dir = report.data_dir.clone();
        // A new clone starts at the first step.
        let mut position = Position::at_start(&self.options);
        // The faults the campaign inflicts (none: kills only).
        let inflictable = (self.faults.as_ref())
            .map(|gear| gear.inflictable(self.options.mode))
            .unwrap_or_default();
        // The kill this run of pgreplica has seen, which explains a failed exit.
        let mut last_action = None;
        // The clone as the last stop left it.
        let mut last_stop = Value::Null;
        // The operator's choice of operation for the next resume (pg-backup-api mode).
        let mut choice: Option<String> = None;
        // Each kill costs at most one resume, plus one for in-run retries running out and one
        // for an operator's choice; the spawn-failure fault, one for its choice and one for a
        // choice a kill took before it was recorded.
        let max_resumes = planned + 3 + 2 * u32::from(report.spawn_failure);
        loop {
            // After a SIGTERM nothing else is aimed at the exiting pgreplica: its exit code (40)
            // and the "Interrupted" it records are what is checked.
            let aiming =
                report.kills.len() < planned as usize && last_action != Some(Action::Terminate);
            let target = aiming.then(|| position.aim(self.options.mode, &inflictable, rng));
            match self.watch(child, target, &data_dir, deadline, &mut position)? {
                Watched::Exited(status) => {
                    let stderr = stderr_of(child);
                    keep_log(&data_dir, &format!("exited: {status}"), &stderr);
                    if status.success() {
                        return Ok(());
                    }
                    let code = status.code();
                    match self.explain_exit(
                        status,
                        &stderr,
                        last_action,
                        &last_stop,
                        &data_dir,
                        ledger,
                    )? {
                        None => {}
                        Some(chosen) => {
                            report.operator_choices += 1;
                            choice = Some(chosen);
                        }
                    }
                    last_stop = self.settle(&data_dir, code == Some(40), &mut position, ledger)?;
                }
                Watched::Fired(mut kill) => {
                    last_action = Some(kill.action);
                    // SIGTERM, a killed rsync, a restarted API: the same pgreplica goes on or
                    // exits.
                    let stopped = kill.action == Action::KillGroup;
                    if stopped {
                        // The killed run's output is all in its pipe by now.
                        keep_log(&data_dir, &format!("killed: {kill}"), &stderr_of(child));
                        last_stop = self.settle(&data_dir, false, &mut position, ledger)?;
                        kill.landed = status::phase(&last_stop);
                    }
                    kill.mid_file = self.caught_mid_file(&kill, &data_dir)?;
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
            *child = self.resume(&data_dir, choice.take())?;
        }
    }

    /// Why pgreplica exited with `status` when the round expects it: Ok(None) when the last
    /// kill explains it — SIGTERM: exit 40, or death by the signal (through runuser: 143) if
    /// it came before pgreplica's handler; a killed rsync: exit 2 once the in-run retries ran
    /// out; a fault: the exit code of what failed — or when the operator's answer is a plain
    /// resume, Ok(Some(choice)) for an operator's choice (pg-backup-api mode:
    /// [`Campaign::operator_answer`]); otherwise the failure, with the tail of `stderr`. What the
    /// answer promises the record will show goes into `ledger`.
    fn explain_exit(
        &self,
        status: ExitStatus,
        stderr: &str,
        last_action: Option<Action>,
        last_stop: &Value,
        data_dir: &Path,
        ledger: &mut Ledger,
    ) -> Result<Option<String>, String> {
        let code = status.code();
        let ours = match last_action {
            // Exit 40; or death by the signal when it came before pgreplica's handler, which
            // runuser (pgreplica's parent here) reports as 128 + 15.
            Some(Action::Terminate) => {
                code == Some(40)
                    || code == Some(128 + libc::SIGTERM)
                    || status.signal() == Some(libc::SIGTERM)
            }
            Some(Action::KillRsync) => code == Some(2),
            // The fault outlasted the in-run retries: the documented exit code of what failed
            // (ssh 12, or rsync 2 for its own timeout; the source 6, or pg_basebackup's 14).
            Some(Action::SilentNetwork | Action::SshdDown | Action::SshRefused) => {
                matches!(code, Some(12 | 2))
            }
            Some(Action::SourceDown) => matches!(code, Some(6 | 14)),
            _ => false,
        };
        if ours {
            return Ok(None);
        }
        match self.operator_answer(code, stderr, last_stop, data_dir, ledger)? {
            Some(OperatorAnswer::Resume) => return Ok(None),
            Some(OperatorAnswer::Choose(chosen)) => return Ok(Some(chosen)),
            None => {}
        }
        Err(format!(
            "pgreplica exited with {status} (last kill: {}):\n{}",
            last_action.map_or("none".to_string(), |a: Action| a.to_string()),
            exec::tail(stderr, 15)
        ))
    }

    /// Waits until the stopped clone frees its lock, notes the stop in `ledger` (`interrupted`:
    /// pgreplica exited 40) and moves `position` to where it stopped. Returns its status.
    fn settle(
        &self,
        data_dir: &Path,
        interrupted: bool,
        position: &mut Position,
        ledger: &mut Ledger,
    ) -> Result<Value, String> {
        let stopped = self.stopped(data_dir)?;
        ledger.note_stop(
            self.options.steps(),
            self.options.copy_step(),
            &stopped,
            interrupted,
        );
        position.update(&stopped);
        Ok(stopped)
    }

    /// Whether `kill` caught the copy in the middle (see [`Kill::mid_file`]).
    fn caught_mid_file(&self, kill: &Kill, data_dir: &Path) -> Result<bool, String> {
        Ok(match self.options.mode {
            // rsync's temporary files, in the data directory or (a staged kind) in staging.
            ChaosMode::Barman => {
                let staging = states::CloneRequest {
                    data_dir: data_dir.display().to_string(),
                    ..states::CloneRequest::default()
                }
                .staging_dir();
                [data_dir, Path::new(&staging)]
                    .iter()
                    .any(|dir| tree_digest(dir).is_ok_and(|d| !rsync_temp_files(&d).is_empty()))
            }
            // The recovery was still running (its worker goes on without pgreplica).
            ChaosMode::Api => {
                kill.landed == Some(Phase::At(Step::Transfer))
                    && self.api_server()?.borrow().jobs().is_ok_and(|jobs| {
                        jobs.iter()
                            .any(|j| Path::new(&j.destination) == data_dir && j.success.is_none())
                    })
            }
            // A partial copy: something arrived, pg_control (sent last) not yet.
            ChaosMode::BaseBackup => {
                kill.landed == Some(Phase::At(Step::Transfer))
                    && !data_dir.join("global/pg_control").exists()
                    && std::fs::read_dir(data_dir).is_ok_and(|mut d| d.next().is_some())
            }
        })
    }

    /// `clone resume` of the round's clone; `choice` is the operator's choice of operation
    /// (pg-backup-api mode), when pgreplica asked for one.
    fn resume(&self, data_dir: &Path, choice: Option<String>) -> Result<Child, String> {
        let mut args = vec![
            "clone".to_string(),
            "resume".to_string(),
            data_dir.display().to_string(),
        ];
        if let Some(choice) = choice {
            args.extend(["--api-operation".to_string(), choice]);
        }
        self.spawn(&args)
    }

    /// pg-backup-api mode: pgreplica stopped with exit 28 for the operator, and the campaign
    /// answers as docs/backup-api.md tells the operator to; None when the exit is not one of
    /// these.
    /// * "its worker never started": an operation created while the API could not start
    ///   workers (noted in the ledger as one the record must show abandoned; the API must hold
    ///   no other into the directory) → the API
    ///   is fixed (restarted without the fault) and the clone resumed with `--api-operation
    ///   new`; any other → a plain resume, which checks it again (a live worker whose first
    ///   bytes came later than the start timeout).
    /// * "cannot tell which pg-backup-api operation" (an attempt without id, and the list
    ///   does not say which is the clone's) → the job file whose destination_directory is the
    ///   data directory: its id, or `new` when there is none.
    fn operator_answer(
        &self,
        code: Option<i32>,
        stderr: &str,
        last_stop: &Value,
        data_dir: &Path,
        ledger: &mut Ledger,
    ) -> Result<Option<OperatorAnswer>, String> {
        if self.options.mode != ChaosMode::Api || code != Some(28) {
            return Ok(None);
        }
        if stderr.contains("its worker never started") {
            return self
                .answer_never_started(data_dir, &mut ledger.abandoned)
                .map(Some);
        }
        let attempt = status::backup_api(last_stop);
        let lost_id = !attempt["attempt_started_at"].is_null() && attempt["operation_id"].is_null();
        if !lost_id || !stderr.contains("cannot tell which pg-backup-api operation") {
            return Ok(None);
        }
        let jobs = self.api_jobs_into(data_dir)?;
        Ok(Some(OperatorAnswer::Choose(match jobs.as_slice() {
            [] => "new".to_string(),
            [one] => one.id.clone(),
            several => {
                return Err(format!(
                    "the API holds {} operations for {}: {several:?}",
                    several.len(),
                    data_dir.display()
                ))
            }
        })))
    }

    /// The answer to "its worker never started" (see [`Campaign::operator_answer`]).
    fn answer_never_started(
        &self,
        data_dir: &Path,
        dead: &mut Vec<String>,
    ) -> Result<OperatorAnswer, String> {
        let stopped = self.stopped(data_dir)?;
        let followed = status::backup_api(&stopped)["operation_id"]
            .as_str()
            .map(str::to_string);
        let faulty = self
            .api_server()?
            .borrow()
            .switches()
            .iter()
            .any(|s| s == SPAWN_FAILS);
        if faulty {
            // Exactly one operation exists however often the clone was stopped meanwhile.
            let jobs = self.api_jobs_into(data_dir)?;
            match jobs.as_slice() {
                [one] if one.success.is_none() && followed.as_deref() == Some(&one.id) => {
                    if !dead.contains(&one.id) {
                        dead.push(one.id.clone());
                    }
                }
                jobs => {
                    return Err(format!(
                        "with workers failing to start, the API holds {} operation(s) into {} ({jobs:?}), the clone follows {followed:?}: not exactly the one it follows",
                        jobs.len(),
                        data_dir.display()
                    ))
                }
            }
            self.set_api_switches(&[])?;
        }
        Ok(match followed {
            Some(id) if dead.contains(&id) => OperatorAnswer::Choose("new".to_string()),
            _ => OperatorAnswer::Resume,
        })
    }
}

/// The apiserver switch of the spawn-failure fault.
const SPAWN_FAILS: &str = "--spawn-fails";

/// What the campaign, as the operator, does about a documented stop of pgreplica.
enum OperatorAnswer {
    /// `clone resume`, as the HINT says (it checks the operation again).
    Resume,
    /// `clone resume --api-operation CHOICE`.
    Choose(String),
}

/// Appends one run's stderr to `<data dir>.log`, kept beside the round's data directory: what a
/// failed round is diagnosed from (pgreplica runs at DEBUG in a campaign, so the log names every
/// file its clean-up removed and every command it ran). Best effort: a campaign does not fail
/// for its own log.
fn keep_log(data_dir: &Path, how: &str, stderr: &str) {
    use std::io::Write;
    let path = data_dir.with_extension("log");
    if let Ok(mut file) = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
    {
        let _ = writeln!(file, "=== pgreplica run ({how})\n{stderr}");
    }
}
