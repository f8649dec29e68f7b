//! Aiming and delivering the kills of a round: where the clone is ([`Position`]), the moment and
//! the way the next kill lands ([`Target`], drawn from the round's [`Rng`]), and watching the
//! running clone until that moment comes to deliver it ([`Action`]: SIGKILL to the group,
//! SIGTERM, killing its rsyncs, restarting the pg-backup-api server).

use std::fmt;
use std::path::Path;
use std::process::{Child, ExitStatus};
use std::time::{Duration, Instant};

use serde_json::Value;
use states::{Phase, Step};

use super::options::{ChaosMode, ChaosOptions};
use super::report::Kill;
use super::rng::Rng;
use super::Campaign;
use crate::clone_check::{kill_group, kill_rsyncs, terminate_pgreplica};
use crate::status;

/// Pause between two looks at a running clone (`clone status` itself takes longer).
const POLL: Duration = Duration::from_millis(10);
/// The longest API outage a restart of the API server makes (it is down this long at most).
const API_OUTAGE_MS: u32 = 1500;

/// The latest moment, after a step other than Transfer was first seen, at which its kill
/// fires, by step: about as long as the step lasts in a lab (status is read every ~20 ms), so
/// the kill lands anywhere inside it. The quick ones are killed when first seen.
fn step_delay_ms(step: Step) -> u32 {
    match step {
        // show-server and show-backup at once, then the probe: about 0.8 s.
        Step::VerifyBackup => 700,
        Step::Transfer | Step::StageBackup => 40,
        // Unpacking and combining a lab's backup take a few hundred milliseconds.
        Step::UnpackBackup | Step::CombineChain => 300,
        _ => 0,
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
    /// Fault: the network to the Barman host goes silent for a while (its relay holds every
    /// byte both ways).
    SilentNetwork,
    /// Fault: the Barman host's sshd dies with its sessions, and is started again after a
    /// while.
    SshdDown,
    /// Fault: the Barman host's sshd drops the clone's sessions (its rsyncs die) and refuses
    /// more than one waiting to log in (`MaxStartups 1`) for a while.
    SshRefused,
    /// Fault: the source node is unreachable (its port refuses) for a while.
    SourceDown,
    /// Fault: the source node accepts the clone's role over TLS only for a while (libpq's
    /// default, prefer, goes on over TLS).
    TlsOnly,
}

impl Action {
    /// Whether this is a fault of the world rather than a kill of pgreplica.
    pub fn is_fault(self) -> bool {
        matches!(
            self,
            Action::SilentNetwork
                | Action::SshdDown
                | Action::SshRefused
                | Action::SourceDown
                | Action::TlsOnly
        )
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Action::KillGroup => "SIGKILL",
            Action::Terminate => "SIGTERM",
            Action::KillRsync => "rsync-KILL",
            Action::RestartApi => "API-restart",
            Action::SilentNetwork => "net-silent",
            Action::SshdDown => "sshd-down",
            Action::SshRefused => "ssh-refused",
            Action::SourceDown => "source-down",
            Action::TlsOnly => "TLS-only",
        })
    }
}

/// Where the clone was last seen.
pub(super) struct Position {
    /// The campaign's steps.
    steps: &'static [Step],
    /// The copy step's index in them (Transfer, or StageBackup for a staged kind).
    transfer: usize,
    /// Index in `steps`; None once Done.
    pub(super) step: Option<usize>,
    /// Transfer's bytes done / total, as last seen.
    fraction: f64,
    /// The fraction comes from a running Transfer's live progress.
    live_transfer: bool,
}

impl Position {
    /// Where a new clone of the campaign starts: at the first step.
    pub(super) fn at_start(options: &ChaosOptions) -> Position {
        Position {
            steps: options.steps(),
            transfer: options.copy(),
            step: Some(0),
            fraction: 0.0,
            live_transfer: false,
        }
    }

    /// Moves to where `status` (`clone status --json`) shows the clone.
    pub(super) fn update(&mut self, status: &Value) {
        self.step = match status::phase(status) {
            Some(Phase::Done) => None,
            Some(Phase::At(step)) => self.steps.iter().position(|s| *s == step).or(self.step),
            None => self.step,
        };
        let copy = self.steps[self.transfer.min(self.steps.len() - 1)];
        let live = status::progress(status, Some(copy));
        let (progress, live_transfer) = if live.is_null() {
            (status::progress(status, None), false)
        } else {
            (live, true)
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
    /// `faults` are those the campaign inflicts (none: kills only).
    pub(super) fn aim(&self, mode: ChaosMode, faults: &[Action], rng: &mut Rng) -> Target {
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
        // Drawn now, whether or not they are used, so that what a round draws never depends on
        // timing and `--seed S --round R` replays every aim of the round.
        let delay_ms = rng.between(0, step_delay_ms(self.steps[step]));
        let mut outage_ms = rng.between(0, API_OUTAGE_MS);
        // With faults, half the aims at a step where one applies become one of them (drawn
        // only then, so that a campaign without faults replays as before).
        let mut action = action;
        if !faults.is_empty() {
            let eligible: Vec<Action> = (mode.faults_at(self.steps[step]).iter())
                .copied()
                .filter(|f| faults.contains(f))
                .collect();
            let (fault, pick) = (rng.below(2) == 0, rng.below(eligible.len().max(1) as u64));
            let fault_ms = rng.between(super::faults::OUTAGE_MS.0, super::faults::OUTAGE_MS.1);
            if fault && !eligible.is_empty() {
                action = eligible[pick as usize];
                outage_ms = fault_ms;
            }
        }
        Target {
            step,
            fraction,
            action,
            delay_ms,
            outage_ms,
        }
    }
}

/// When and how the next kill lands.
#[derive(Clone, Copy, Debug)]
pub(super) struct Target {
    step: usize,
    fraction: f64,
    action: Action,
    /// Inside a step other than Transfer: how long after the step is first seen.
    delay_ms: u32,
    /// For [`Action::RestartApi`] and the faults: how long the outage lasts.
    outage_ms: u32,
}

/// How watching a run of pgreplica ended.
pub(super) enum Watched {
    /// It exited (the kill was a SIGTERM, a killed rsync, or it had nothing left to do).
    Exited(ExitStatus),
    /// The kill was delivered.
    Fired(Kill),
}

impl Campaign<'_> {
    /// Watches the running clone until it exits or `target`'s moment comes and the kill is
    /// delivered. Without a target, only waits for the exit.
    pub(super) fn watch(
        &self,
        child: &mut Child,
        target: Option<Target>,
        data_dir: &Path,
        deadline: Instant,
        position: &mut Position,
    ) -> Result<Watched, String> {
        let mode = self.options.mode;
        let transfer = self.options.copy();
        let steps = self.options.steps();
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
            if !self.is_due(index, target, position, &mut fire_at) {
                std::thread::sleep(POLL);
                continue;
            }
            // rsyncs run and the API is polled only inside Transfer: past it, a planned rsync
            // kill or API restart kills the group. A fault that comes after the last step it
            // can break (ssh's: Transfer) would miss: it becomes a SIGKILL too.
            let action = match target.action {
                Action::KillRsync | Action::RestartApi if index > transfer => Action::KillGroup,
                fault if fault.is_fault() && index > self.options.fault_reach(fault) => {
                    Action::KillGroup
                }
                action => action,
            };
            if self.deliver(action, target.outage_ms, child, data_dir)? {
                return Ok(Watched::Fired(Kill {
                    action,
                    aimed: steps[target.step],
                    landed: Some(Phase::At(steps[index])),
                    fraction: (index == transfer && mode != ChaosMode::Api)
                        .then_some(position.fraction),
                    mid_file: false,
                }));
            }
            // The rsyncs between two files, pgreplica between fork and exec: try again.
            std::thread::sleep(POLL);
        }
    }

    /// Whether `target`'s moment has come, the clone being in step `index` at `position`. Inside
    /// a step other than Transfer (and inside Transfer in pg-backup-api mode), the first look
    /// sets the moment, in `fire_at`.
    fn is_due(
        &self,
        index: usize,
        target: Target,
        position: &Position,
        fire_at: &mut Option<Instant>,
    ) -> bool {
        let mode = self.options.mode;
        let transfer = self.options.copy();
        let now = Instant::now();
        match index.cmp(&target.step) {
            std::cmp::Ordering::Less => false,
            std::cmp::Ordering::Greater => true,
            // pg-backup-api: the bytes arriving are measured against an estimate, so the
            // kill aims at a moment of the reference's Transfer instead.
            std::cmp::Ordering::Equal if index == transfer && mode == ChaosMode::Api => {
                *fire_at
                    .get_or_insert_with(|| now + self.reference_transfer.mul_f64(target.fraction))
                    <= now
            }
            std::cmp::Ordering::Equal if index == transfer => {
                position.live_transfer && position.fraction >= target.fraction
            }
            std::cmp::Ordering::Equal => {
                *fire_at.get_or_insert_with(|| now + Duration::from_millis(target.delay_ms.into()))
                    <= now
            }
        }
    }

    /// Delivers a kill to the running clone `child`. False when there was nothing to kill yet
    /// (the rsyncs between two files, pgreplica between fork and exec).
    fn deliver(
        &self,
        action: Action,
        outage_ms: u32,
        child: &mut Child,
        data_dir: &Path,
    ) -> Result<bool, String> {
        Ok(match action {
            Action::KillGroup => kill_group(child)
                .map(|()| true)
                .map_err(|e| format!("kill pgreplica's group: {e}"))?,
            Action::Terminate => terminate_pgreplica(child),
            Action::KillRsync => kill_rsyncs(data_dir).map_err(|e| format!("pkill rsync: {e}"))?,
            Action::RestartApi => self.restart_api(outage_ms).map(|()| true)?,
            fault => self.inflict(fault, outage_ms, data_dir).map(|()| true)?,
        })
    }

    /// SIGKILLs the API server and starts it again after an outage of `outage_ms` (up to
    /// [`API_OUTAGE_MS`]), during which pgreplica's requests are refused.
    fn restart_api(&self, outage_ms: u32) -> Result<(), String> {
        let server = self.api_server()?;
        server.borrow_mut().kill();
        // The outage is the point: pgreplica must ride out refused connections.
        std::thread::sleep(Duration::from_millis(outage_ms.into()));
        // With the round's fault switches: a restart is not a repair.
        server
            .borrow_mut()
            .spawn_again()
            .map_err(|e| format!("restart the API server: {e}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aims_only_at_moments_still_ahead() {
        let mut rng = Rng::for_round(5, 0);
        let kinds = [
            (ChaosMode::Barman, None),
            (ChaosMode::Api, None),
            (ChaosMode::BaseBackup, None),
            (
                ChaosMode::Barman,
                Some(crate::kinds::BackupKind::Incremental),
            ),
        ];
        for (mode, kind) in kinds {
            let options = ChaosOptions {
                mode,
                kind,
                ..ChaosOptions::default()
            };
            let transfer = options.copy();
            let position = Position {
                steps: options.steps(),
                transfer,
                step: Some(transfer),
                fraction: 0.6,
                live_transfer: true,
            };
            // None, every fault of the mode, and all but TLS-only (a primary without TLS).
            let every: Vec<Action> = (mode.actions().iter().copied())
                .filter(|a| a.is_fault())
                .collect();
            let without_tls: Vec<Action> = (every.iter().copied())
                .filter(|a| *a != Action::TlsOnly)
                .collect();
            for faults in [&[][..], &every, &without_tls] {
                for _ in 0..200 {
                    let target = position.aim(mode, faults, &mut rng);
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
                    assert!(
                        !target.action.is_fault() || faults.contains(&target.action),
                        "{target:?}"
                    );
                    if target.action.is_fault() {
                        assert!(mode
                            .faults_at(options.steps()[target.step])
                            .contains(&target.action));
                    }
                }
            }
        }
    }
}
