//! Steps, plans per mode, outcomes and the transition function.

use crate::inputs::{MissingInput, Task};
use crate::kind::{BackupKind, StagedProgress};
use crate::record::{
    BackupFacts, CloneRecord, CloneRequest, CombineSummary, Facts, InFlight, Millis, OutcomeKind,
    PreparedDirs, SourceParams, TransferSummary, Transition, UnpackSummary, Verification,
    WrittenConf,
};
use crate::retry::RetryBudget;
use crate::CloneId;
use serde::{Deserialize, Serialize};
use std::fmt;

/// How the standby is copied; decides which steps run.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Mode {
    /// ssh + rsync from the Barman catalogue (`barman_host`).
    #[default]
    BarmanRsync,
    /// Barman's HTTP API restores into the data directory (`pg_backupapi_host`).
    BackupApi,
    /// pg_basebackup from the source node (`--without-barman`).
    BaseBackup,
    /// Only configure replication on an already restored data directory.
    ReplicationConfOnly,
}

impl Mode {
    /// Every mode, for exhaustive tests and documentation.
    pub const ALL: [Mode; 4] = [
        Mode::BarmanRsync,
        Mode::BackupApi,
        Mode::BaseBackup,
        Mode::ReplicationConfOnly,
    ];

    /// The steps this mode runs for a plain backup (and before VerifyBackup has recorded the
    /// backup's kind, whose plans all begin alike), in order. See [`Mode::plan_for`].
    pub fn plan(self) -> &'static [Step] {
        self.plan_for(&BackupKind::Plain)
    }

    /// The steps this mode runs for a backup of `kind`, in order. Only Barman mode copies the
    /// backup's files itself, so only its plan depends on the kind: a plain backup is copied
    /// by Transfer; every other kind is staged on this host (StageBackup), its tar files
    /// unpacked (UnpackBackup) and an incremental chain combined (CombineChain). pg-backup-api
    /// delegates every kind to `barman restore`. Every plan of a mode begins with the same
    /// steps up to Transfer or StageBackup, so a plan chosen after VerifyBackup never
    /// contradicts the steps already done.
    pub fn plan_for(self, kind: &BackupKind) -> &'static [Step] {
        use Step::*;
        match self {
            Mode::BarmanRsync if kind.is_staged() => match (kind.has_tar(), kind.is_chain()) {
                (true, false) => &[
                    VerifyBackup,
                    FetchParams,
                    PrepareDirs,
                    StageBackup,
                    UnpackBackup,
                    VerifyCopy,
                    WriteReplicationConf,
                ],
                (false, _) => &[
                    VerifyBackup,
                    FetchParams,
                    PrepareDirs,
                    StageBackup,
                    CombineChain,
                    VerifyCopy,
                    WriteReplicationConf,
                ],
                (true, true) => &[
                    VerifyBackup,
                    FetchParams,
                    PrepareDirs,
                    StageBackup,
                    UnpackBackup,
                    CombineChain,
                    VerifyCopy,
                    WriteReplicationConf,
                ],
            },
            Mode::BarmanRsync | Mode::BackupApi => &[
                VerifyBackup,
                FetchParams,
                PrepareDirs,
                Transfer,
                VerifyCopy,
                WriteReplicationConf,
            ],
            // No Barman to verify against: the source node is the backup.
            Mode::BaseBackup => &[
                FetchParams,
                PrepareDirs,
                Transfer,
                VerifyCopy,
                WriteReplicationConf,
            ],
            Mode::ReplicationConfOnly => &[FetchParams, WriteReplicationConf],
        }
    }

    /// Human label, as shown in logs and status.
    pub fn label(self) -> &'static str {
        match self {
            Mode::BarmanRsync => "Barman (rsync)",
            Mode::BackupApi => "pg-backup-api",
            Mode::BaseBackup => "pg_basebackup",
            Mode::ReplicationConfOnly => "replication configuration only",
        }
    }
}

/// One state of the clone machine.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Step {
    /// Resolve and check the backup.
    VerifyBackup,
    /// Read Barman's directories and the source node's parameters.
    FetchParams,
    /// Make the data directory, WAL directory and tablespace targets ready.
    PrepareDirs,
    /// Copy the data (the mode's method).
    Transfer,
    /// Copy a staged kind's files, as the catalogue stores them, into the staging directory
    /// (decrypted on the Barman host when encrypted).
    StageBackup,
    /// Unpack the staged tar files, member by member, into the data directory (or, for a
    /// chain, into staging).
    UnpackBackup,
    /// Combine an incremental chain into the data directory with `pg_combinebackup`.
    CombineChain,
    /// Check the copy against the backup manifest.
    VerifyCopy,
    /// Write primary_conninfo and friends, create the slot.
    WriteReplicationConf,
}

impl Step {
    /// Every step, in machine order.
    pub const ALL: [Step; 9] = [
        Step::VerifyBackup,
        Step::FetchParams,
        Step::PrepareDirs,
        Step::Transfer,
        Step::StageBackup,
        Step::UnpackBackup,
        Step::CombineChain,
        Step::VerifyCopy,
        Step::WriteReplicationConf,
    ];

    /// The name used in logs, status and docs.
    pub fn name(self) -> &'static str {
        match self {
            Step::VerifyBackup => "VerifyBackup",
            Step::FetchParams => "FetchParams",
            Step::PrepareDirs => "PrepareDirs",
            Step::Transfer => "Transfer",
            Step::StageBackup => "StageBackup",
            Step::UnpackBackup => "UnpackBackup",
            Step::CombineChain => "CombineChain",
            Step::VerifyCopy => "VerifyCopy",
            Step::WriteReplicationConf => "WriteReplicationConf",
        }
    }

    /// The name in the `--json` documents (docs/json.md): snake_case.
    pub fn json_name(self) -> &'static str {
        match self {
            Step::VerifyBackup => "verify_backup",
            Step::FetchParams => "fetch_params",
            Step::PrepareDirs => "prepare_dirs",
            Step::Transfer => "transfer",
            Step::StageBackup => "stage_backup",
            Step::UnpackBackup => "unpack_backup",
            Step::CombineChain => "combine_chain",
            Step::VerifyCopy => "verify_copy",
            Step::WriteReplicationConf => "write_replication_conf",
        }
    }
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Where a clone stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Phase {
    /// This step is the current one: it runs next (again, if it failed).
    At(Step),
    /// Every step of the plan succeeded.
    Done,
}

/// What a step established, handed to [`CloneRecord::finish`] on success.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[allow(
    clippy::large_enum_variant,
    reason = "one StepResult exists per step attempt and is consumed at once: boxing saves nothing"
)]
pub enum StepResult {
    /// VerifyBackup's result.
    VerifyBackup(BackupFacts),
    /// FetchParams' result.
    FetchParams(SourceParams),
    /// PrepareDirs' result.
    PrepareDirs(PreparedDirs),
    /// Transfer's result.
    Transfer(TransferSummary),
    /// StageBackup's result: the staging copy, counted as a transfer.
    StageBackup(TransferSummary),
    /// UnpackBackup's result.
    UnpackBackup(UnpackSummary),
    /// CombineChain's result.
    CombineChain(CombineSummary),
    /// VerifyCopy's result.
    VerifyCopy(Verification),
    /// WriteReplicationConf's result.
    WriteReplicationConf(WrittenConf),
}

impl StepResult {
    /// The step this result belongs to.
    pub fn step(&self) -> Step {
        match self {
            StepResult::VerifyBackup(_) => Step::VerifyBackup,
            StepResult::FetchParams(_) => Step::FetchParams,
            StepResult::PrepareDirs(_) => Step::PrepareDirs,
            StepResult::Transfer(_) => Step::Transfer,
            StepResult::StageBackup(_) => Step::StageBackup,
            StepResult::UnpackBackup(_) => Step::UnpackBackup,
            StepResult::CombineChain(_) => Step::CombineChain,
            StepResult::VerifyCopy(_) => Step::VerifyCopy,
            StepResult::WriteReplicationConf(_) => Step::WriteReplicationConf,
        }
    }
}

/// Whether a failure is worth retrying without the operator.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum FailureKind {
    /// Transient (network, a killed child): the runner may retry after a delay.
    Retryable,
    /// Needs a change by the operator (bad backup, wrong settings): stop now.
    Fatal,
}

/// A step's failure as recorded on the clone.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StepFailure {
    /// Retryable or fatal.
    pub kind: FailureKind,
    /// One line: what went wrong and where.
    pub message: String,
    /// How to fix it, if known.
    pub hint: Option<String>,
    /// The process exit code this failure maps to (repmgr's numbering).
    pub exit_code: u8,
}

/// What happened to the step that was begun.
#[derive(Clone, Debug, PartialEq)]
#[allow(
    clippy::large_enum_variant,
    reason = "one Outcome exists per step attempt and is consumed at once: boxing saves nothing"
)]
pub enum Outcome {
    /// It finished and established this.
    Succeeded(StepResult),
    /// It failed.
    Failed(StepFailure),
    /// SIGINT/SIGTERM stopped it at a safe point.
    Interrupted,
}

/// What the driver does next.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Next {
    /// Run this step (call [`CloneRecord::begin`] first).
    Run(Step),
    /// The step failed retryably and the run's [`RetryBudget`] allows another attempt: wait
    /// `delay_ms`, then run it again.
    Retry {
        /// The step to run again.
        step: Step,
        /// How long to wait first.
        delay_ms: u64,
    },
    /// Stop the run (a fatal failure, an interruption, or a retryable failure past the run's
    /// budget); the record is resumable from its current step.
    Stop,
    /// The clone is complete.
    Done,
}

/// Misuse of the machine by its driver: a bug, never an operational error.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MachineError {
    /// `begin` or `finish` on a finished clone.
    AlreadyDone,
    /// `begin` while a step is in flight, or `finish` with nothing in flight.
    NotInFlight,
    /// `begin` with a crash not yet recovered.
    CrashNotRecovered(Step),
    /// A result for a step other than the current one.
    WrongStep {
        /// The current step.
        expected: Step,
        /// The step the result belongs to.
        got: Step,
    },
    /// The current step cannot begin: its plan does not provide what it reads.
    MissingInput(MissingInput),
}

impl fmt::Display for MachineError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MachineError::AlreadyDone => write!(f, "the clone is already complete"),
            MachineError::NotInFlight => write!(f, "no step is in flight"),
            MachineError::CrashNotRecovered(step) => {
                write!(f, "step {step} is still marked in flight")
            }
            MachineError::WrongStep { expected, got } => {
                write!(
                    f,
                    "result for step {got} while the current step is {expected}"
                )
            }
            MachineError::MissingInput(MissingInput { step, what }) => {
                write!(f, "step {step} cannot begin without {what}")
            }
        }
    }
}

impl std::error::Error for MachineError {}

impl CloneRecord {
    /// A new clone at the first step of its mode's plan.
    pub fn new(id: CloneId, request: CloneRequest, now: Millis) -> CloneRecord {
        let first = request.mode.plan()[0];
        CloneRecord {
            id,
            request,
            created_at: now,
            phase: Phase::At(first),
            in_flight: None,
            attempts: 0,
            last_error: None,
            facts: Facts::default(),
            history: Vec::new(),
            api_operation: None,
            staged: StagedProgress::default(),
            api_choice: None,
            api_abandoned: Vec::new(),
        }
    }

    /// Where the clone stands.
    pub fn phase(&self) -> Phase {
        self.phase
    }

    /// The clone's name in the store.
    pub fn id(&self) -> &CloneId {
        &self.id
    }

    /// What the operator asked for, as resolved at `clone start`.
    pub fn request(&self) -> &CloneRequest {
        &self.request
    }

    /// When `clone start` created the record.
    pub fn created_at(&self) -> Millis {
        self.created_at
    }

    /// Attempts made at the current step, across runs.
    pub fn attempts(&self) -> u32 {
        self.attempts
    }

    /// The last failure of the current step.
    pub fn last_error(&self) -> Option<&StepFailure> {
        self.last_error.as_ref()
    }

    /// What the finished steps established.
    pub fn facts(&self) -> &Facts {
        &self.facts
    }

    /// Every attempt at every step, in order.
    pub fn history(&self) -> &[Transition] {
        &self.history
    }

    /// The steps of this clone's plan: its mode's, for the backup's kind once VerifyBackup
    /// has recorded it.
    pub fn plan(&self) -> &'static [Step] {
        let kind = self.facts.backup.as_ref().map(|b| &b.kind);
        self.request
            .mode
            .plan_for(kind.unwrap_or(&BackupKind::Plain))
    }

    /// The step in flight, if a run is (or was, before a crash) inside one.
    pub fn in_flight(&self) -> Option<Step> {
        self.in_flight.as_ref().map(|f| f.step)
    }

    /// When the step in flight began.
    pub fn in_flight_since(&self) -> Option<Millis> {
        self.in_flight.as_ref().map(|f| f.started_at)
    }

    /// What to do now: run the current step, or nothing.
    pub fn next(&self) -> Next {
        match self.phase {
            Phase::At(step) => Next::Run(step),
            Phase::Done => Next::Done,
        }
    }

    /// Whether `step` was checkpointed as done (it will never run again).
    pub fn is_step_done(&self, step: Step) -> bool {
        let plan = self.plan();
        let Some(position) = plan.iter().position(|s| *s == step) else {
            return false;
        };
        match self.phase {
            Phase::Done => true,
            Phase::At(current) => plan
                .iter()
                .position(|s| *s == current)
                .is_some_and(|now| position < now),
        }
    }

    /// Input: the record was loaded with a step in flight, so the run that began it died.
    /// Records the crash in the history and returns the step, which stays current.
    pub fn recover_crash(&mut self, now: Millis) -> Option<Step> {
        let in_flight = self.in_flight.take()?;
        self.history.push(Transition {
            step: in_flight.step,
            started_at: in_flight.started_at,
            ended_at: now,
            outcome: OutcomeKind::Crashed,
            message: Some("the process stopped inside this step".to_string()),
        });
        Some(in_flight.step)
    }

    /// Command: the current step is about to run. Returns it with its inputs. The driver
    /// checkpoints the record after this call and before running the step.
    pub fn begin(&mut self, now: Millis) -> Result<Task, MachineError> {
        let Phase::At(step) = self.phase else {
            return Err(MachineError::AlreadyDone);
        };
        if let Some(in_flight) = &self.in_flight {
            return Err(MachineError::CrashNotRecovered(in_flight.step));
        }
        let input = self.input_of(step).map_err(MachineError::MissingInput)?;
        self.in_flight = Some(InFlight {
            step,
            started_at: now,
        });
        self.attempts += 1;
        Ok(Task { step, input })
    }

    /// Input: the outcome of the step in flight. Returns what to do next; a retryable failure
    /// spends the run's `budget`, and past it the run stops.
    pub fn finish(
        &mut self,
        outcome: Outcome,
        now: Millis,
        budget: &mut RetryBudget,
    ) -> Result<Next, MachineError> {
        let Phase::At(current) = self.phase else {
            return Err(MachineError::AlreadyDone);
        };
        let Some(in_flight) = self.in_flight.clone() else {
            return Err(MachineError::NotInFlight);
        };
        if let Outcome::Succeeded(result) = &outcome {
            if result.step() != current {
                return Err(MachineError::WrongStep {
                    expected: current,
                    got: result.step(),
                });
            }
        }
        self.in_flight = None;
        let (kind, message, next) = match outcome {
            Outcome::Succeeded(result) => {
                self.record_result(result);
                self.attempts = 0;
                self.last_error = None;
                self.phase = self.step_after(current);
                budget.reset();
                (OutcomeKind::Succeeded, None, self.next())
            }
            Outcome::Failed(failure) => {
                let (kind, next) = match failure.kind {
                    FailureKind::Retryable => (
                        OutcomeKind::FailedRetryable,
                        budget.spend().map_or(Next::Stop, |delay_ms| Next::Retry {
                            step: current,
                            delay_ms,
                        }),
                    ),
                    FailureKind::Fatal => (OutcomeKind::FailedFatal, Next::Stop),
                };
                let message = Some(failure.message.clone());
                self.last_error = Some(failure);
                (kind, message, next)
            }
            Outcome::Interrupted => (OutcomeKind::Interrupted, None, Next::Stop),
        };
        self.history.push(Transition {
            step: current,
            started_at: in_flight.started_at,
            ended_at: now,
            outcome: kind,
            message,
        });
        Ok(next)
    }

    fn step_after(&self, step: Step) -> Phase {
        let plan = self.plan();
        let position = plan
            .iter()
            .position(|s| *s == step)
            .expect("the current step is always in the plan");
        plan.get(position + 1)
            .map_or(Phase::Done, |next| Phase::At(*next))
    }

    fn record_result(&mut self, result: StepResult) {
        let facts = &mut self.facts;
        match result {
            StepResult::VerifyBackup(f) => facts.backup = Some(f),
            StepResult::FetchParams(f) => facts.params = Some(f),
            StepResult::PrepareDirs(f) => facts.dirs = Some(f),
            StepResult::Transfer(f) => facts.transfer = Some(f),
            StepResult::StageBackup(f) => facts.staging = Some(f),
            StepResult::UnpackBackup(f) => facts.unpacked = Some(f),
            StepResult::CombineChain(f) => facts.combined = Some(f),
            StepResult::VerifyCopy(f) => facts.verification = Some(f),
            StepResult::WriteReplicationConf(f) => facts.replication_conf = Some(f),
        }
    }
}
