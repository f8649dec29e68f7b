//! The pure clone machine of pgreplica.
//!
//! A clone is a [`CloneRecord`]: what the operator asked for ([`CloneRequest`]), where the clone
//! stands ([`Phase`]), what each finished step established ([`Facts`]) and the history of every
//! attempt ([`Transition`]). The record is driven by four families of methods, in the manner of
//! quinn-proto:
//!
//! * getters — [`CloneRecord::phase`], [`CloneRecord::next`], [`CloneRecord::plan`];
//! * inputs — [`CloneRecord::recover_crash`] (a run vanished), [`CloneRecord::finish`] (a step's
//!   [`Outcome`]);
//! * commands — [`CloneRecord::begin`] (a step is about to run);
//! * outputs — the [`Next`] value each input returns.
//!
//! **Invariant:** this crate performs no I/O. It never reads the clock (time comes in as
//! [`Millis`] arguments), never touches disk or network, and has no async runtime. That is what
//! lets its tests feed every state × outcome combination in milliseconds.

mod id;
mod machine;
mod record;

pub use id::CloneId;
pub use machine::{
    FailureKind, MachineError, Mode, Next, Outcome, Phase, Step, StepFailure, StepResult,
};
pub use record::{
    ApiOperation, ApiTarget, BackupFacts, BarmanTarget, CloneRecord, CloneRequest, EntryKind,
    Facts, ManifestEntry, Millis, OutcomeKind, PreparedDirs, ReplicationSettings, SourceConn,
    SourceParams, Tablespace, TablespaceTarget, TransferSummary, Transition, Verification,
    WrittenConf, SCHEMA_VERSION,
};
