//! The kill-anywhere campaign's core, shared by `cargo xtask chaos` and `tests/chaos.rs`: one
//! reference clone of a pinned Barman backup, then rounds that clone the same backup while
//! killing real processes — pgreplica's whole process group with SIGKILL, pgreplica alone with
//! SIGTERM, or only its rsyncs — inside every step and mid-file, resuming after each, and
//! checking that the result is identical to the reference.
//!
//! It must not work around pgreplica: a round that does not end Done, identical and clean is a
//! failure, reported with what happened; the round's directory is kept for a post-mortem.
//! Every wait is bounded (a round has a deadline; kills and resumes are counted). Randomness
//! comes from the seed and the round number only, so a round can be replayed on its own.

use std::collections::BTreeSet;
use std::fmt;
use std::path::{Path, PathBuf};
use std::process::{Child, ExitStatus};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::clone_check::{
    clone_status, differing_paths, kill_group, kill_rsyncs, pgreplica, rsync_temp_files,
    spawn_in_group, stderr_of, terminate_pgreplica, tree_digest, wait_until_stopped, TreeDigest,
};
use crate::{exec, Lab};

/// The steps of a Barman-mode clone, in plan order (pgreplica's `Mode::BarmanRsync` plan).
pub const BARMAN_STEPS: [&str; 6] = [
    "VerifyBackup",
    "FetchParams",
    "PrepareDirs",
    "Transfer",
    "VerifyCopy",
    "WriteReplicationConf",
];
const TRANSFER: usize = 3;

/// rsync's protocol overhead a resumed transfer may send beyond the bytes not yet done: file
/// lists and checksums, a few bytes per file.
pub const PROTOCOL_OVERHEAD: u64 = 64 * 1024;

/// How long a killed clone may take to free its lock.
const STOP_TIMEOUT: Duration = Duration::from_secs(30);
/// Pause between two looks at a running clone (`clone status` itself takes longer).
const POLL: Duration = Duration::from_millis(10);
/// The latest moment, after a step other than Transfer was first seen, at which its kill
/// fires, by step: about as long as the step lasts in a lab (status is read every ~20 ms), so
/// the kill lands anywhere inside it. The quick ones are killed when first seen.
const STEP_DELAY_MS: [u32; 6] = [800, 400, 0, 40, 0, 0];

/// How a campaign runs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChaosOptions {
    /// The campaign's seed: with the round number, it decides everything random in a round.
    pub seed: u64,
    /// Kills per round: between 1 and this many.
    pub max_kills: u32,
    /// `--jobs` of a round: between 1 and this many.
    pub max_jobs: u32,
    /// `--bwlimit` (KiB/s per rsync) of a round: within this range, so kills land mid-file.
    pub bwlimit_kbps: (u32, u32),
    /// A round that takes longer is killed and fails.
    pub round_timeout: Duration,
}

impl Default for ChaosOptions {
    /// Seed 1, 1–4 kills, 1–3 jobs, 2–8 MiB/s per rsync, 5 minutes per round.
    fn default() -> Self {
        ChaosOptions {
            seed: 1,
            max_kills: 4,
            max_jobs: 3,
            bwlimit_kbps: (2000, 8000),
            round_timeout: Duration::from_secs(300),
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
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Action::KillGroup => "SIGKILL",
            Action::Terminate => "SIGTERM",
            Action::KillRsync => "rsync-KILL",
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
    /// rsync temporary files were left: the kill caught a file mid-copy.
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
    /// The round's number (with the campaign's seed, it replays the round).
    pub round: u32,
    /// The campaign's seed.
    pub seed: u64,
    /// The clone's `--jobs`.
    pub jobs: u32,
    /// The clone's `--bwlimit` in KiB/s.
    pub bwlimit_kbps: u32,
    /// The kills, in order.
    pub kills: Vec<Kill>,
    /// `clone resume` runs the round needed.
    pub resumes: u32,
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
        write!(
            f,
            "round {:>3} (seed {}): jobs {} bwlimit {:>4} KiB/s | {} kill(s): {} | {} resume(s) | {} in {:.1} s",
            self.round,
            self.seed,
            self.jobs,
            self.bwlimit_kbps,
            self.kills.len(),
            if kills.is_empty() { "-".to_string() } else { kills.join(", ") },
            self.resumes,
            if self.outcome.is_ok() { "OK" } else { "FAILED" },
            self.duration.as_secs_f64()
        )?;
        if let Err(why) = &self.outcome {
            write!(f, "\n    {why}\n    kept {}", self.data_dir.display())?;
        }
        Ok(())
    }
}

/// What a campaign found over its rounds: kills per step and action, failures.
pub fn summary(reports: &[RoundReport]) -> String {
    let mut per_step: Vec<(String, [u32; 3])> = BARMAN_STEPS
        .iter()
        .map(|s| (s.to_string(), [0; 3]))
        .chain(std::iter::once(("Done".to_string(), [0; 3])))
        .collect();
    let mut mid_file = 0;
    for kill in reports.iter().flat_map(|r| &r.kills) {
        let column = match kill.action {
            Action::KillGroup => 0,
            Action::Terminate => 1,
            Action::KillRsync => 2,
        };
        match per_step.iter_mut().find(|(step, _)| *step == kill.landed) {
            Some((_, counts)) => counts[column] += 1,
            None => per_step.push((kill.landed.clone(), [0; 3])),
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
        "{} round(s), {} failed{}; {kills} kill(s), {mid_file} of them mid-file; {seconds:.0} s of rounds\n\
         kills by the step they landed in:   SIGKILL  SIGTERM  rsync-KILL\n",
        reports.len(),
        failed.len(),
        if failed.is_empty() {
            String::new()
        } else {
            format!(" (rounds {failed:?})")
        },
    );
    for (step, [group, term, rsync]) in per_step {
        out.push_str(&format!("  {step:<22} {group:>17} {term:>8} {rsync:>11}\n"));
    }
    out
}

/// A campaign on a lab: the pinned backup and the reference clone's digest.
pub struct Campaign<'a> {
    lab: &'a Lab,
    binary: PathBuf,
    options: ChaosOptions,
    backup_id: String,
    reference: TreeDigest,
}

impl<'a> Campaign<'a> {
    /// Pins the lab's newest backup and clones it once without interruption (the reference).
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
        let mut campaign = Campaign {
            lab,
            binary: binary.to_path_buf(),
            options,
            backup_id,
            reference: TreeDigest::new(),
        };
        let dir = lab.new_dir("chaos-reference");
        let conf = campaign.write_conf("chaos-reference", &dir)?;
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
        Ok(campaign)
    }

    /// The backup every clone of the campaign restores.
    pub fn backup_id(&self) -> &str {
        &self.backup_id
    }

    /// Runs round `round`: a clone of the pinned backup killed 1–`max_kills` times and resumed
    /// until Done, then checked against the reference.
    pub fn run_round(&self, round: u32) -> RoundReport {
        let began = Instant::now();
        let mut rng = Rng::for_round(self.options.seed, round);
        let mut report = RoundReport {
            round,
            seed: self.options.seed,
            jobs: rng.between(1, self.options.max_jobs.max(1)),
            bwlimit_kbps: rng.between(self.options.bwlimit_kbps.0, self.options.bwlimit_kbps.1),
            kills: Vec::new(),
            resumes: 0,
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

    fn write_conf(&self, name: &str, data_dir: &Path) -> Result<PathBuf, String> {
        let path = self.lab.dir().join(format!("{name}.conf"));
        // One node name for every clone: it is part of the primary_conninfo pgreplica writes.
        let text = self
            .lab
            .repmgr_conf(2, "node2", data_dir, self.lab.primary_port());
        self.lab
            .write_file_as_postgres(&path, &text)
            .map_err(|e| e.to_string())?;
        Ok(path)
    }

    fn start_args(&self, conf: &Path, extra: &[String]) -> Vec<String> {
        let mut args = self.lab.clone_start_args(conf);
        args.extend(["--backup-id".to_string(), self.backup_id.clone()]);
        args.extend(extra.iter().cloned());
        args
    }

    fn spawn(&self, args: &[String]) -> Result<Child, String> {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        spawn_in_group(&mut pgreplica(self.lab, &self.binary, &args))
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
        let conf = self.write_conf(&format!("chaos-round-{}", report.round), &data_dir)?;
        let extra = [
            "--jobs".to_string(),
            report.jobs.to_string(),
            "--bwlimit".to_string(),
            report.bwlimit_kbps.to_string(),
        ];
        let mut child = self.spawn(&self.start_args(&conf, &extra))?;
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
        let data_dir = report.data_dir.clone();
        // A new clone starts at the first step.
        let mut position = Position {
            step: Some(0),
            ..Position::default()
        };
        // The kill this run of pgreplica has seen, which explains a failed exit.
        let mut last_action = None;
        // Each kill costs at most one resume, plus one for in-run retries running out.
        let max_resumes = planned + 2;
        loop {
            // After a SIGTERM nothing else is aimed at the exiting pgreplica: its exit code (40)
            // and the "Interrupted" it records are what is checked.
            let aiming =
                report.kills.len() < planned as usize && last_action != Some(Action::Terminate);
            let target = aiming.then(|| position.aim(rng));
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
                        Some(Action::Terminate) => true,
                        Some(Action::KillRsync) => code == Some(2),
                        _ => false,
                    };
                    if !ours {
                        return Err(format!(
                            "pgreplica exited with {status} (last kill: {}):\n{}",
                            last_action.map_or("none".to_string(), |a: Action| a.to_string()),
                            exec::tail(&stderr, 15)
                        ));
                    }
                    ledger.interrupted += u32::from(code == Some(40));
                    let stopped = self.stopped(&data_dir)?;
                    ledger.note_stop(&stopped);
                    position.update(&stopped);
                }
                Watched::Fired(mut kill) => {
                    last_action = Some(kill.action);
                    let stopped = if kill.action == Action::KillGroup {
                        let stopped = self.stopped(&data_dir)?;
                        kill.landed = phase_of(&stopped);
                        ledger.note_stop(&stopped);
                        position.update(&stopped);
                        true
                    } else {
                        // SIGTERM and a killed rsync: the same pgreplica goes on or exits.
                        false
                    };
                    kill.mid_file = tree_digest(&data_dir)
                        .map(|d| !rsync_temp_files(&d).is_empty())
                        .unwrap_or(false);
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
            *child = self.spawn(&[
                "clone".to_string(),
                "resume".to_string(),
                data_dir.display().to_string(),
            ])?;
        }
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
                std::cmp::Ordering::Equal if index == TRANSFER => {
                    position.live_transfer && position.fraction >= target.fraction
                }
                std::cmp::Ordering::Equal => {
                    *fire_at.get_or_insert_with(|| {
                        let delay = rng.between(0, STEP_DELAY_MS[index]);
                        now + Duration::from_millis(delay.into())
                    }) <= now
                }
            };
            if !due {
                std::thread::sleep(POLL);
                continue;
            }
            // rsyncs run only inside Transfer: past it, a planned rsync kill kills the group.
            let action = match target.action {
                Action::KillRsync if index > TRANSFER => Action::KillGroup,
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
            };
            if delivered {
                return Ok(Watched::Fired(Kill {
                    action,
                    aimed: BARMAN_STEPS[target.step],
                    landed: BARMAN_STEPS[index].to_string(),
                    fraction: (index == TRANSFER).then_some(position.fraction),
                    mid_file: false,
                }));
            }
            // The rsyncs between two files, pgreplica between fork and exec: try again.
            std::thread::sleep(POLL);
        }
    }

    /// The end of a round: Done, identical to the reference, clean, with its history and the
    /// bytes the last transfer re-sent accounted for.
    fn check(&self, data_dir: &Path, ledger: &Ledger) -> Result<(), String> {
        let status = self.status(data_dir)?;
        let mut problems = Vec::new();
        if status["phase"] != "Done" || status["running"] != false {
            problems.push(format!(
                "the clone is {} (running: {}), not Done",
                status["phase"], status["running"]
            ));
        }
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
        let differing = differing_paths(&digest, &self.reference);
        if !differing.is_empty() {
            problems.push(format!(
                "{} path(s) differ from the uninterrupted clone: {:?}",
                differing.len(),
                &differing[..differing.len().min(10)]
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
        if problems.is_empty() {
            Ok(())
        } else {
            Err(problems.join("; "))
        }
    }
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
}

impl Ledger {
    fn note_stop(&mut self, stopped: &Value) {
        // Killed between a step's outcome and the next begin, nothing was in flight: the
        // resume has no crash to record.
        let in_flight = &stopped["record"]["in_flight"];
        if !in_flight.is_null() {
            self.in_flight.insert(in_flight.to_string());
        }
        let before_or_in_transfer = BARMAN_STEPS[..=TRANSFER]
            .iter()
            .any(|s| stopped["phase"] == *s);
        if before_or_in_transfer {
            self.done_before_transfer_succeeded =
                stopped["files"]["bytes_done"].as_u64().unwrap_or(0);
        }
    }
}

/// Where the clone was last seen.
#[derive(Default)]
struct Position {
    /// Index in [`BARMAN_STEPS`]; None once Done.
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
            BARMAN_STEPS.iter().position(|s| *s == phase).or(self.step)
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
    /// likely: it is where the time and the files are), at a byte fraction still to come.
    fn aim(&self, rng: &mut Rng) -> Target {
        let from = self.step.unwrap_or(BARMAN_STEPS.len() - 1);
        let choices: Vec<usize> = (from..BARMAN_STEPS.len())
            .chain((from <= TRANSFER).then_some(TRANSFER))
            .collect();
        let step = choices[rng.below(choices.len() as u64) as usize];
        let start = if step == TRANSFER && from == TRANSFER {
            self.fraction
        } else {
            0.0
        };
        let fraction = start + (0.95 - start).max(0.0) * rng.unit();
        let roll = rng.below(10);
        let action = match (step == TRANSFER, roll) {
            (true, 0..=1) => Action::KillRsync,
            (_, 2..=3) => Action::Terminate,
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
#[derive(Clone, Copy)]
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
        let position = Position {
            step: Some(TRANSFER),
            fraction: 0.6,
            live_transfer: true,
        };
        for _ in 0..200 {
            let target = position.aim(&mut rng);
            assert!(target.step >= TRANSFER);
            if target.step == TRANSFER {
                assert!(target.fraction >= 0.6);
            }
            assert!(target.action != Action::KillRsync || target.step == TRANSFER);
        }
    }
}
