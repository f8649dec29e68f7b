//! The pure clone machine of pgreplica.
//!
//! A clone is a [`CloneRecord`]: what the operator asked for ([`CloneRequest`]), where the clone
//! stands ([`Phase`]), what each finished step established ([`Facts`]) and the history of every
//! attempt ([`Transition`]). The record is driven by four families of methods, in the manner of
//! quinn-proto:
//!
//! * getters — [`CloneRecord::phase`], [`CloneRecord::next`], [`CloneRecord::plan`],
//!   [`CloneRecord::facts`], [`CloneRecord::history`], …;
//! * inputs — [`CloneRecord::recover_crash`] (a run vanished), [`CloneRecord::finish`] (a step's
//!   [`Outcome`]), and the pg-backup-api protocol's inputs ([`api`]);
//! * commands — [`CloneRecord::begin`] (a step is about to run);
//! * outputs — the [`Task`] that `begin` returns (the step and what it reads) and the [`Next`]
//!   value each input returns.
//!
//! Every decision about a clone is made here: which step runs next and with which inputs
//! ([`inputs`]), whether a failed step is tried again within the run and after how long
//! ([`RetryPolicy`], [`RetryBudget`]), how a pg-backup-api clone keeps to one operation
//! ([`api`]), how many times pg_basebackup restarted, whether an abandoned clone may hold a
//! replication slot, what `clone start` does with a record it finds and what a resume
//! re-checks ([`lifecycle`]). The record's fields are private; the machine is their only writer.
//!
//! **Invariant:** this crate performs no I/O. It never reads the clock (time comes in as
//! [`Millis`] arguments), never touches disk or network, and has no async runtime. That is what
//! lets its tests feed every state × outcome combination in milliseconds.

pub mod api;
mod id;
pub mod inputs;
mod kind;
pub mod lifecycle;
mod machine;
mod record;
mod retry;
pub mod schema3;

pub use id::CloneId;
pub use inputs::{
    BackupServer, CombineInput, ExpectedRestore, ManifestExpectation, MissingInput, StageInput,
    StepInput, Task, TransferInput, TransferMethod, UnpackInput, UnpackTarget,
};
pub use kind::{
    ArchiveProgress, BackupFormat, BackupKind, ChainMember, Compression, StagedProgress,
    UnpackStart, WalSource,
};
pub use lifecycle::{
    Difference, Existing, Refusal, Replaced, ResumeCheck, StartDecision, DEFAULT_JOBS_MAX,
};
pub use machine::{
    FailureKind, MachineError, Mode, Next, Outcome, Phase, Step, StepFailure, StepResult,
};
pub use record::{
    ApiOperation, ApiTarget, BackupFacts, BarmanTarget, CloneRecord, CloneRequest, CombineSummary,
    DirIdentity, EntryKind, Facts, ManifestEntry, Millis, OutcomeKind, PreparedDirs,
    ReplicationSettings, SourceConn, SourceParams, Tablespace, TablespaceTarget, TransferSummary,
    Transition, UnpackSummary, Verification, WrittenConf, SCHEMA_VERSION,
};
pub use retry::{RetryBudget, RetryPolicy};
