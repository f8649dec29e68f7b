//! What a campaign is asked to do: the copying mode it kills ([`ChaosMode`]: the mode's steps
//! and how kills are delivered in it) and the campaign's settings ([`ChaosOptions`]).

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use states::{BackupFormat, ChainMember, Compression, Mode, Step};

use super::kill::Action;
use crate::kinds::{BackupKind, TarCompression};

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

    /// pgreplica's mode that this one kills.
    pub fn mode(self) -> Mode {
        match self {
            ChaosMode::Barman => Mode::BarmanRsync,
            ChaosMode::Api => Mode::BackupApi,
            ChaosMode::BaseBackup => Mode::BaseBackup,
        }
    }

    /// The mode as pgreplica names it ([`Mode::label`]).
    pub fn label(self) -> &'static str {
        self.mode().label()
    }

    /// The steps of the mode's plan for a plain backup, in order ([`Mode::plan`]); see
    /// [`ChaosOptions::steps`] for a campaign's.
    pub fn steps(self) -> &'static [Step] {
        self.mode().plan()
    }

    /// How kills are delivered in this mode, then the faults that apply to it (see
    /// [`ChaosOptions::faults`]).
    pub fn actions(self) -> &'static [Action] {
        match self {
            ChaosMode::Barman => &[
                Action::KillGroup,
                Action::Terminate,
                Action::KillRsync,
                Action::SilentNetwork,
                Action::SshdDown,
                Action::SshRefused,
                Action::SourceDown,
                Action::TlsOnly,
            ],
            ChaosMode::Api => &[
                Action::KillGroup,
                Action::Terminate,
                Action::RestartApi,
                Action::SourceDown,
                Action::TlsOnly,
            ],
            ChaosMode::BaseBackup => &[
                Action::KillGroup,
                Action::Terminate,
                Action::SourceDown,
                Action::TlsOnly,
            ],
        }
    }
}

/// The machine's kind of a lab backup of `kind`, as far as its plan goes ([`Mode::plan_for`]):
/// the lab's chains are of plain members, its encrypted backups gzip tars.
pub fn plan_kind(kind: Option<BackupKind>) -> states::BackupKind {
    let compression = |c: TarCompression| match c {
        TarCompression::Gzip => Compression::Gzip,
        TarCompression::Lz4 => Compression::Lz4,
        TarCompression::Zstd => Compression::Zstd,
        TarCompression::None => Compression::None,
    };
    match kind {
        None => states::BackupKind::Plain,
        Some(BackupKind::Tar(c)) => states::BackupKind::Tar {
            compression: compression(c),
            encrypted: false,
        },
        Some(BackupKind::Encrypted) => states::BackupKind::Tar {
            compression: Compression::Gzip,
            encrypted: true,
        },
        Some(BackupKind::Incremental) => states::BackupKind::Incremental {
            chain: vec![
                ChainMember {
                    format: BackupFormat::Plain,
                    ..ChainMember::default()
                };
                3
            ],
        },
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
    /// Barman mode: the kind of backup every round clones (a fixture the campaign takes on its
    /// lab: a tar backup, an incremental chain of two increments, an encrypted backup); None
    /// for the lab's plain backup.
    pub kind: Option<BackupKind>,
    /// Besides the kills, inflict faults of the world (`chaos::faults`): half the aims at a
    /// step where one applies become a fault of the network, the Barman host's sshd or the
    /// source node, for an outage of 1 to 10 s.
    pub faults: bool,
}

impl ChaosOptions {
    /// The steps of the campaign's plan, in order: its mode's for its kind of backup.
    pub fn steps(&self) -> &'static [Step] {
        self.mode.mode().plan_for(&plan_kind(self.kind))
    }

    /// The step that copies the backup's files (Transfer, or StageBackup for a staged kind):
    /// where the time and the files are, and where rsyncs run.
    pub fn copy_step(&self) -> Step {
        match self.steps().contains(&Step::StageBackup) {
            true => Step::StageBackup,
            false => Step::Transfer,
        }
    }

    /// The copy step's index in [`ChaosOptions::steps`].
    pub(super) fn copy(&self) -> usize {
        let copy = self.copy_step();
        self.steps()
            .iter()
            .position(|s| *s == copy)
            .unwrap_or(usize::MAX)
    }

    /// The index in [`ChaosOptions::steps`] of the last step `fault` can break: the ssh
    /// faults reach as far as the copy step (Transfer, or StageBackup, whose rsyncs and
    /// decryptions run over ssh), the source's as far as WriteReplicationConf (the last step).
    pub(super) fn fault_reach(&self, fault: Action) -> usize {
        match fault {
            Action::SilentNetwork | Action::SshdDown | Action::SshRefused => self.copy(),
            _ => self.steps().len() - 1,
        }
    }
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
            kind: None,
            faults: false,
        }
    }
}
