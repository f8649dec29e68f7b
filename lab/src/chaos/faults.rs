//! The campaign's fault actions ([`ChaosOptions::faults`](super::ChaosOptions::faults)): the
//! world failing around a running clone, for a while, then recovering — the network to the
//! Barman host going silent, the Barman host's sshd dying with its sessions, sshd dropping the
//! clone's sessions and refusing more than one at a time (`MaxStartups 1`), the source node
//! unreachable, the source accepting the clone's role over TLS only. pgreplica must ride the
//! fault out within its retries, or stop with the fault's exit code and finish on `clone
//! resume` once it is gone.
//!
//! For them, every clone of the campaign (the reference included) reaches the Barman host and
//! the source node through relays ([`Relay`]), with short ssh time limits so a silent network
//! is noticed in seconds, and uses a replication slot (so WriteReplicationConf connects to the
//! source), which the end of each round drops again so that it holds no WAL between rounds.

use std::time::Duration;

use states::Step;

use super::kill::Action;
use super::options::ChaosMode;
use super::Campaign;
use crate::clone_check::kill_rsyncs;
use crate::relay::Relay;
use crate::tls::Pki;
use crate::Lab;

/// The shortest and longest outage of a fault, in milliseconds: from a blip pgreplica's
/// retries (2 s, then 4 s) ride out, to one that outlasts them.
pub(super) const OUTAGE_MS: (u32, u32) = (1_000, 10_000);

/// ssh time limits of a campaign with faults: a silent peer is given up in about 4 s.
const QUICK_SSH: &str = "-o ServerAliveInterval=1 -o ServerAliveCountMax=3 -o ConnectTimeout=3";

/// The role every clone connects as (the lab's superuser).
const ROLE: &str = "barman";

/// The slot the campaign's clones use (node 2).
const SLOT: &str = "repmgr_slot_2";

/// sshd's `MaxStartups` during an [`Action::SshRefused`] fault.
const REFUSING_STARTUPS: u32 = 1;

/// What a campaign with faults runs its clones through.
pub(super) struct FaultGear {
    /// In front of the lab's sshd.
    ssh: Relay,
    /// In front of the primary.
    source: Relay,
    /// The primary serves TLS, so the TLS-only fault can be put up (not on a PostgreSQL built
    /// without OpenSSL: the lab's PostgreSQL 18).
    tls: bool,
}

impl FaultGear {
    /// Starts the relays and, where the primary can serve TLS, turns it on (with a CA of the
    /// lab's own), so that a TLS-only rule can be put up during a round.
    pub(super) fn prepare(lab: &Lab, mode: ChaosMode) -> Result<FaultGear, String> {
        let tls = lab.major().has_tls();
        if tls {
            let dir = lab.dir().join(format!("chaos-pki-{}", mode.name()));
            let pki = Pki::generate(&dir).map_err(|e| e.to_string())?;
            lab.enable_ssl(&pki).map_err(|e| e.to_string())?;
        }
        Ok(FaultGear {
            ssh: Relay::start(lab.ssh_port()).map_err(|e| e.to_string())?,
            source: Relay::start(lab.primary_port()).map_err(|e| e.to_string())?,
            tls,
        })
    }

    /// The faults this gear can inflict on a clone of `mode`: the mode's, but TLS-only where
    /// the primary has no TLS.
    pub(super) fn inflictable(&self, mode: ChaosMode) -> Vec<Action> {
        mode.actions()
            .iter()
            .copied()
            .filter(|a| a.is_fault() && (self.tls || *a != Action::TlsOnly))
            .collect()
    }

    /// The lines a clone's repmgr.conf gets: ssh through the relay with short time limits
    /// (later lines win), and a replication slot.
    pub(super) fn conf_lines(&self, lab: &Lab) -> String {
        format!(
            "ssh_options='{} {QUICK_SSH}'\nuse_replication_slots=on\n",
            lab.ssh_args_to(self.ssh.port()).join(" ")
        )
    }

    /// The source node's port as the clones see it.
    pub(super) fn source_port(&self) -> u16 {
        self.source.port()
    }
}

impl ChaosMode {
    /// The faults a campaign may aim at `step` of this mode: where the clone uses what
    /// fails. A fault of the source is aimed at the step before the one that connects (its
    /// outage covers the connection): VerifyBackup before FetchParams, PrepareDirs before
    /// pg_basebackup's Transfer, VerifyCopy before WriteReplicationConf's slot. A staged kind's
    /// StageBackup uses ssh as Transfer does; UnpackBackup and CombineChain use neither.
    pub(super) fn faults_at(self, step: Step) -> &'static [Action] {
        const SSH: &[Action] = &[Action::SilentNetwork, Action::SshdDown, Action::SshRefused];
        const SOURCE: &[Action] = &[Action::SourceDown, Action::TlsOnly];
        const ALL: &[Action] = &[
            Action::SilentNetwork,
            Action::SshdDown,
            Action::SshRefused,
            Action::SourceDown,
            Action::TlsOnly,
        ];
        match (self, step) {
            (ChaosMode::Barman, Step::VerifyBackup) => ALL,
            (ChaosMode::Barman, Step::Transfer | Step::StageBackup) => SSH,
            (ChaosMode::Api, Step::VerifyBackup) => SOURCE,
            (ChaosMode::BaseBackup, Step::FetchParams | Step::PrepareDirs | Step::Transfer) => {
                SOURCE
            }
            (_, Step::VerifyCopy) => SOURCE,
            _ => &[],
        }
    }
}

impl Campaign<'_> {
    /// Inflicts `fault` for `outage_ms`, then lifts it: returns when the world is whole again.
    pub(super) fn inflict(
        &self,
        fault: Action,
        outage_ms: u32,
        data_dir: &std::path::Path,
    ) -> Result<(), String> {
        let gear = self.fault_gear()?;
        let lab = self.lab;
        let outage = Duration::from_millis(outage_ms.into());
        let fail = |e: crate::LabError| format!("{fault}: {e}");
        // The outage is the point: pgreplica must ride it out or stop cleanly.
        match fault {
            Action::SilentNetwork => {
                gear.ssh.go_silent();
                std::thread::sleep(outage);
                gear.ssh.forward();
            }
            Action::SshdDown => {
                lab.kill_sshd().map_err(fail)?;
                std::thread::sleep(outage);
                lab.restart_sshd().map_err(fail)?;
            }
            Action::SshRefused => {
                lab.set_sshd_max_startups(REFUSING_STARTUPS).map_err(fail)?;
                // The host drops the sessions it has; the clone must open new ones.
                kill_rsyncs(data_dir).map_err(|e| format!("{fault}: pkill rsync: {e}"))?;
                std::thread::sleep(outage);
                lab.set_sshd_max_startups(crate::sshd::MAX_STARTUPS)
                    .map_err(fail)?;
            }
            Action::SourceDown => {
                gear.source.refuse();
                std::thread::sleep(outage);
                gear.source.forward();
            }
            Action::TlsOnly => {
                lab.require_tls(&[ROLE], &[]).map_err(fail)?;
                std::thread::sleep(outage);
                lab.require_tls(&[], &[]).map_err(fail)?;
            }
            other => return Err(format!("{other} is not a fault")),
        }
        Ok(())
    }

    /// The end of a round with faults: the slot its clone made is dropped (inactive: nothing
    /// streams from a round's copy but a basebackup round's standby, stopped by then).
    pub(super) fn drop_round_slot(&self) -> Result<(), String> {
        self.lab
            .psql(
                self.lab.primary_port(),
                &format!(
                    "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots \
                     WHERE slot_name = '{SLOT}' AND NOT active"
                ),
            )
            .map(drop)
            .map_err(|e| format!("drop the round's slot: {e}"))
    }

    fn fault_gear(&self) -> Result<&FaultGear, String> {
        self.faults
            .as_ref()
            .ok_or_else(|| "this campaign runs without faults".to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::super::options::ChaosOptions;
    use super::*;

    #[test]
    fn faults_are_aimed_where_the_clone_uses_what_fails() {
        for mode in [ChaosMode::Barman, ChaosMode::Api, ChaosMode::BaseBackup] {
            for step in mode.steps() {
                for fault in mode.faults_at(*step) {
                    assert!(fault.is_fault(), "{fault}");
                    assert!(mode.actions().contains(fault), "{mode:?} lacks {fault}");
                }
            }
        }
        assert!(ChaosMode::Api.faults_at(Step::Transfer).is_empty());
        let ssh = [Action::SilentNetwork, Action::SshdDown, Action::SshRefused];
        assert_eq!(ChaosMode::Barman.faults_at(Step::Transfer), ssh);
        // A staged kind copies over ssh in StageBackup; unpacking and combining use neither.
        assert_eq!(ChaosMode::Barman.faults_at(Step::StageBackup), ssh);
        assert!(ChaosMode::Barman.faults_at(Step::UnpackBackup).is_empty());
        assert!(ChaosMode::Barman.faults_at(Step::CombineChain).is_empty());
    }

    #[test]
    fn an_ssh_fault_reaches_as_far_as_the_campaigns_copy_step() {
        use crate::kinds::{BackupKind, TarCompression};
        for kind in [None, Some(BackupKind::Tar(TarCompression::Gzip))] {
            let options = ChaosOptions {
                kind,
                ..ChaosOptions::default()
            };
            let copy = options.copy();
            assert_eq!(options.steps()[copy], options.copy_step());
            assert_eq!(options.fault_reach(Action::SshdDown), copy);
            assert_eq!(
                options.fault_reach(Action::SourceDown),
                options.steps().len() - 1
            );
        }
    }
}
