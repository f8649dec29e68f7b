//! The clone record and the facts each step records on success.
//!
//! Everything here is plain data that the store serialises. Nothing here may hold a secret:
//! conninfo strings are kept without `password=` (the I/O layer strips it before building a
//! request), because the store and `clone status` are readable by whoever can read the state
//! directory.

use crate::api::OperatorChoice;
use crate::kind::{BackupKind, StagedProgress};
use crate::machine::{Mode, Phase, Step, StepFailure};
use crate::CloneId;
use serde::{Deserialize, Serialize};

/// Version of the serialised record layout. A store written by a newer pgreplica carries a
/// larger number and is refused with a clear error instead of being misread; one written by an
/// older pgreplica is migrated when it is read (see [`crate::schema3`]).
///
/// 4: `CloneRequest::upstream_conninfo` (`--upstream-conninfo`).
pub const SCHEMA_VERSION: u16 = 4;

/// Milliseconds since the Unix epoch. Time always comes in as an argument: the machine never
/// reads the clock.
pub type Millis = u64;

/// One clone: what was asked, where it stands, what is known, what happened.
///
/// Its fields are private: the machine's methods are their only writer, and the getters in
/// `machine` their readers.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CloneRecord {
    /// Stable name of the clone in the store (derived from the data directory).
    pub(crate) id: CloneId,
    /// The request as resolved at `clone start`. `clone resume` uses it as recorded and never
    /// re-reads repmgr.conf or re-resolves `latest`, so a resumed clone finishes the clone that
    /// was started.
    pub(crate) request: CloneRequest,
    /// When `clone start` created the record.
    pub(crate) created_at: Millis,
    pub(crate) phase: Phase,
    /// The step that began and has not reported an outcome yet. Checkpointed before the step
    /// runs, so a record loaded with this set proves the previous run died inside that step.
    pub(crate) in_flight: Option<InFlight>,
    /// Attempts made at the current step, across runs (reset when a step succeeds).
    pub(crate) attempts: u32,
    /// The last failure of the current step, shown by `clone status` and cleared on success.
    pub(crate) last_error: Option<StepFailure>,
    /// What each finished step established.
    pub(crate) facts: Facts,
    /// Every attempt at every step, in order.
    pub(crate) history: Vec<Transition>,
    /// pg-backup-api mode: the recovery operation this clone owns (see [`ApiOperation`] and
    /// the `api` module's protocol).
    pub(crate) api_operation: Option<ApiOperation>,
    /// Staged kinds (tar, incremental, encrypted): how far UnpackBackup and CombineChain got
    /// inside their steps (see the `kind` module).
    pub(crate) staged: StagedProgress,
    /// pg-backup-api mode: the operator's word given to `clone resume --api-operation`, kept
    /// (and shown by `clone status`) until the Transfer step acts on it, so that a crash of the
    /// resumed run before then does not lose it.
    pub(crate) api_choice: Option<OperatorChoice>,
    /// pg-backup-api mode: operations this clone owned before the operator replaced them
    /// (`--api-operation new` or another id), oldest first. They may still exist on the API
    /// host (it cannot delete them); the clone no longer follows them.
    pub(crate) api_abandoned: Vec<String>,
}

/// A step that has begun and not yet reported.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct InFlight {
    pub(crate) step: Step,
    pub(crate) started_at: Millis,
}

/// What the operator asked for, resolved from repmgr.conf and the command line at start.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct CloneRequest {
    /// Which copy method, hence which plan of steps.
    pub mode: Mode,
    /// Absolute path of the standby's data directory.
    pub data_dir: String,
    /// The repmgr.conf the request was read from, for messages.
    pub config_file: Option<String>,
    /// repmgr's `node_id` of the standby being cloned.
    pub node_id: Option<i32>,
    /// repmgr's `node_name`; becomes `application_name` in primary_conninfo.
    pub node_name: Option<String>,
    /// The source node given with -h/-p/-U/-d (no password).
    pub source: SourceConn,
    /// `--upstream-node-id`: the node the standby will follow, if not the source node.
    pub upstream_node_id: Option<i32>,
    /// `--upstream-conninfo`, as repmgr reads it (without `password`, `application_name`,
    /// `passfile` and `servicefile`): written as primary_conninfo over the source's connection
    /// settings, instead of the conninfo of the upstream pgreplica connects to. The slot is
    /// still made on that upstream (the source node or the `--upstream-node-id` node's record).
    pub upstream_conninfo: Option<String>,
    /// `--backup-id` as typed: `latest`, `oldest`, an id or a backup name. VerifyBackup pins it
    /// to a concrete id in [`BackupFacts::backup_id`].
    pub backup_selector: String,
    /// `--jobs`: parallel transfer streams.
    pub jobs: u32,
    /// `--force`: reuse a non-empty data directory.
    pub force: bool,
    /// `--bwlimit`: cap of each transfer stream in KiB/s (rsync's `--bwlimit`), to spare the
    /// network of a production Barman host.
    pub bwlimit_kbps: Option<u32>,
    /// `--waldir` from pg_basebackup_options: pg_wal lives there, symlinked from the data dir.
    pub waldir: Option<String>,
    /// `tablespace_mapping` pairs (old location → new location), in config order.
    pub tablespace_mapping: Vec<(String, String)>,
    /// Barman mode: where the catalogue is.
    pub barman: Option<BarmanTarget>,
    /// pg-backup-api mode: where the API is and what to restore.
    pub backup_api: Option<ApiTarget>,
    /// repmgr's `ssh_options`, split into arguments, applied to every ssh call.
    pub ssh_options: Vec<String>,
    /// repmgr's `pg_bindir`: where pg_basebackup, pg_verifybackup, pg_ctl live.
    pub pg_bindir: Option<String>,
    /// `pg_basebackup_options` as configured (pg_basebackup mode passes them on).
    pub pg_basebackup_options: Vec<String>,
    /// pgreplica's `pgreplica_staging_dir`: the directory in which the clone's staging
    /// directory is made for tar, incremental and encrypted backups (see
    /// [`CloneRequest::staging_dir`]); `None` for beside the data directory.
    pub staging_parent: Option<String>,
    /// How the standby will replicate.
    pub replication: ReplicationSettings,
}

/// Connection parameters of the source node, as given on the command line.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourceConn {
    /// -h
    pub host: Option<String>,
    /// -p
    pub port: Option<u16>,
    /// -U
    pub user: Option<String>,
    /// -d (a database name or a conninfo string, without password)
    pub dbname: Option<String>,
}

/// repmgr's `barman_host`, `barman_server`, `barman_config`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BarmanTarget {
    /// ssh destination of the Barman server, e.g. `barman@barmansrv`.
    pub host: String,
    /// Server section in Barman's configuration, e.g. `pg`.
    pub server: String,
    /// Non-default Barman configuration file on the Barman host (`barman -c`).
    pub config: Option<String>,
}

/// repmgr's `pg_backupapi_*` keys plus pgreplica's TLS and timeout keys.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiTarget {
    /// Host, host:port or full URL of the API, without any `user:password@`: credentials are
    /// never recorded (see `credentials_file`).
    pub host: String,
    /// The repmgr.conf whose `pg_backupapi_host` carries `user:password@` for a proxy in front
    /// of the API (https only), when it does: each run reads them from there again, so they
    /// never reach the store, the status or a log line.
    pub credentials_file: Option<String>,
    /// Barman server name the API restores from.
    pub node_name: String,
    /// ssh command Barman uses to reach this standby.
    pub remote_ssh_command: String,
    /// Backup to restore (an id or a shortcut the API accepts).
    pub backup_id: String,
    /// PEM CA bundle that signs the API's TLS certificate.
    pub ca_file: Option<String>,
    /// PEM client certificate for a TLS proxy that checks them.
    pub cert_file: Option<String>,
    /// PEM key of the client certificate.
    pub key_file: Option<String>,
    /// Give up when the operation stays IN_PROGRESS and no bytes arrive for this long.
    pub stall_timeout_secs: u64,
    /// Give up when the operation stays IN_PROGRESS and nothing at all arrives for this long
    /// after pgreplica begins following it: its worker never started.
    pub start_timeout_secs: u64,
    /// Time between status polls, in milliseconds.
    pub poll_interval_ms: u64,
}

/// How the standby will replicate: the repmgr keys that shape the replication configuration.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplicationSettings {
    /// repmgr's `replication_user`; defaults to the source connection's user.
    pub replication_user: Option<String>,
    /// Create and use `repmgr_slot_<node_id>` on the upstream.
    pub use_replication_slots: bool,
    /// Written as `restore_command`.
    pub restore_command: Option<String>,
    /// Written as `archive_cleanup_command`.
    pub archive_cleanup_command: Option<String>,
    /// Written as `recovery_min_apply_delay`.
    pub recovery_min_apply_delay: Option<String>,
    /// Put the password in primary_conninfo (from the environment at write time, never stored).
    pub use_primary_conninfo_password: bool,
    /// Added to primary_conninfo as `passfile=`.
    pub passfile: Option<String>,
}

/// What the finished steps established, one slot per step.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Facts {
    /// From VerifyBackup.
    pub backup: Option<BackupFacts>,
    /// From FetchParams.
    pub params: Option<SourceParams>,
    /// From PrepareDirs.
    pub dirs: Option<PreparedDirs>,
    /// From Transfer.
    pub transfer: Option<TransferSummary>,
    /// From StageBackup.
    pub staging: Option<TransferSummary>,
    /// From UnpackBackup.
    pub unpacked: Option<UnpackSummary>,
    /// From CombineChain.
    pub combined: Option<CombineSummary>,
    /// From VerifyCopy.
    pub verification: Option<Verification>,
    /// From WriteReplicationConf.
    pub replication_conf: Option<WrittenConf>,
}

/// The backup being restored, pinned to a concrete id.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackupFacts {
    /// Concrete Barman backup id (`20261125T061436`), never a shortcut.
    pub backup_id: String,
    /// The backup's name, if it was given one.
    pub backup_name: Option<String>,
    /// Barman server name.
    pub server: String,
    /// PostgreSQL version number of the backup (`150018`).
    pub pg_version: u32,
    /// Bytes of the backup (data and tablespaces).
    pub size_bytes: u64,
    /// Timeline the backup was taken on.
    pub timeline: u32,
    /// First WAL segment the backup needs.
    pub begin_wal: String,
    /// Last WAL segment the backup needs.
    pub end_wal: String,
    /// PostgreSQL system identifier of the backed-up cluster, when Barman recorded it.
    pub system_id: Option<String>,
    /// Tablespaces in the backup.
    pub tablespaces: Vec<Tablespace>,
    /// Directory of the backup on the Barman host (`<basebackups_directory>/<id>`).
    pub backup_dir: String,
    /// Barman's `wals_directory` for the server, from the same `show-server` reply as
    /// `backup_dir` (Barman mode; empty otherwise).
    pub wals_directory: String,
    /// Sub-directory holding PGDATA inside `backup_dir`: `data`, or `pgdata` for old layouts.
    pub data_subdir: String,
    /// Whether the backup carries pg_basebackup's `backup_manifest`.
    pub has_manifest: bool,
    /// Its kind (plain, tar, incremental chain, encrypted): decides the plan in Barman mode.
    pub kind: BackupKind,
    /// backup.info's `cluster_size` (Barman ≥ 3.11): the size of the backed-up cluster, which
    /// the restored directory holds; tar and incremental backups store less than that.
    pub cluster_bytes: Option<u64>,
}

/// A tablespace as recorded in the backup.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tablespace {
    /// Tablespace name.
    pub name: String,
    /// Its OID: the directory name under the backup and under `pg_tblspc`.
    pub oid: u32,
    /// Its location on the backed-up server.
    pub location: String,
}

/// What FetchParams learned from Barman and the source node.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourceParams {
    /// `server_version_num` of the source node.
    pub server_version_num: u32,
    /// System identifier of the source node.
    pub system_identifier: String,
    /// `sum(pg_database_size)` on the source node.
    pub installation_size: u64,
    /// repmgr node id of the upstream, when `repmgr.nodes` knows it.
    pub upstream_node_id: Option<i32>,
    /// The conninfo the standby will stream from (without password).
    pub upstream_conninfo: String,
    /// Problems that do not stop the clone but that the operator should know.
    pub warnings: Vec<String>,
}

/// The directories PrepareDirs made ready.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PreparedDirs {
    /// The data directory.
    pub data_dir: String,
    /// The WAL directory `pg_wal` links to, if any.
    pub waldir: Option<String>,
    /// Where each tablespace goes.
    pub tablespaces: Vec<TablespaceTarget>,
    /// Whether existing files were kept for reuse (`--force`).
    pub reused_existing: bool,
    /// Which directory each prepared path was when the step left it (the data directory first,
    /// then the WAL directory and the tablespace targets): a resume compares them with what the
    /// paths name now, and a directory deleted or replaced since is prepared again.
    pub identities: Vec<DirIdentity>,
}

/// A directory by what it is rather than how it is spelled: its device and inode, as `stat`
/// reports them for the path that named it, and its birth time where the file system keeps
/// one (a directory removed and created again often gets the same inode number back).
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct DirIdentity {
    /// The path as the request names it.
    pub path: String,
    /// `st_dev`.
    pub dev: u64,
    /// `st_ino`.
    pub ino: u64,
    /// `statx`'s birth time in nanoseconds since the epoch; `None` where the file system
    /// records none.
    pub born: Option<u64>,
}

impl DirIdentity {
    /// Whether `other` (the same path, looked at again) is the same directory: the same device
    /// and inode, born at the same time where both birth times are known.
    pub fn same_directory(&self, other: &DirIdentity) -> bool {
        let born_agrees = match (self.born, other.born) {
            (Some(a), Some(b)) => a == b,
            _ => true,
        };
        self.dev == other.dev && self.ino == other.ino && born_agrees
    }
}

/// Where one tablespace is restored to.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TablespaceTarget {
    /// Tablespace OID.
    pub oid: u32,
    /// Local directory it is restored into (after tablespace_mapping).
    pub path: String,
}

/// How the transfer went.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TransferSummary {
    /// Files in the backup.
    pub files: u64,
    /// Bytes in the backup.
    pub bytes_total: u64,
    /// Bytes actually sent in the run that finished the transfer (less after a resume).
    pub bytes_sent: u64,
    /// Files that an earlier, interrupted run had already completed.
    pub files_reused: u64,
    /// Bytes of files an interrupted run had copied in part, kept and completed by the
    /// finishing run instead of sent again (Barman mode; 0 in the other modes).
    pub bytes_kept: u64,
    /// Wall time of the finishing run.
    pub duration_ms: u64,
    /// Times the transfer had to start over (pg_basebackup cannot resume).
    pub restarts: u32,
    /// Wall time the finishing run's copy spent in the store, marking files done and their
    /// checks and flushing them: the checkpoints' own cost (0 where the copy keeps no file
    /// list: pg_basebackup, pg-backup-api).
    pub checkpoint_ms: u64,
}

/// How UnpackBackup went.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct UnpackSummary {
    /// Tar files unpacked.
    pub archives: u64,
    /// Entries (files, directories, links) written by the run that finished the step.
    pub entries: u64,
    /// Entries an interrupted run had already written, skipped by the finishing run.
    pub entries_reused: u64,
    /// Bytes of file data written by the finishing run.
    pub bytes_written: u64,
    /// Wall time of the finishing run.
    pub duration_ms: u64,
}

/// How CombineChain went.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CombineSummary {
    /// Backups combined (the full one and its increments).
    pub members: u64,
    /// The `pg_combinebackup` that ran.
    pub program: String,
    /// Its copy method: `--link`, `--copy-file-range` or `--copy`.
    pub method: String,
    /// Wall time of the finishing run.
    pub duration_ms: u64,
}

/// The result of VerifyCopy.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Verification {
    /// Every file in the backup manifest matched, checked by pg_verifybackup after the copy.
    Verified {
        /// Files checked.
        files: u64,
    },
    /// No manifest, but a pg-backup-api restore was checked for what it must hold:
    /// `PG_VERSION`, the system identifier in `global/pg_control`, a plausible size.
    Checked {
        /// The major version `PG_VERSION` holds.
        pg_major: u32,
        /// The system identifier `pg_controldata` read.
        system_identifier: String,
        /// Bytes of files in the data directory.
        bytes: u64,
    },
    /// No manifest to check against.
    Skipped {
        /// Why it was skipped.
        reason: String,
    },
    /// Every file in the backup manifest matched, most checksums checked as the files were
    /// copied: VerifyCopy checked every file's presence and size, and the checksums of the
    /// others. (Last, so that records written before it keep their encoding.)
    VerifiedDuringCopy {
        /// Files in the manifest.
        files: u64,
        /// Files whose checksum was checked as they were copied.
        during_copy: u64,
        /// Files whose checksum VerifyCopy checked (the manifest's other files have none).
        at_end: u64,
    },
}

/// What WriteReplicationConf wrote.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WrittenConf {
    /// Files written, absolute.
    pub files: Vec<String>,
    /// Replication slot created or reused on the upstream.
    pub slot: Option<String>,
}

/// The recovery operation a pg-backup-api clone owns.
///
/// `attempt_started_at` is checkpointed **before** the POST and `operation_id` right after it, so
/// a resume can tell "never posted" from "posted, id lost in a crash" and re-attach instead of
/// starting a second recovery into the same directory.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiOperation {
    /// When the attempt began, by pgreplica's clock: shown to the operator, never compared with
    /// the server's ids (they are the API host's local time).
    pub attempt_started_at: Millis,
    /// The id the API answered with, once known.
    pub operation_id: Option<String>,
    /// The greatest operation id the server listed just before the POST (ids sort by time):
    /// if the reply is lost, the operation this clone created is among those listed after it.
    /// `None` when the server had no operation yet.
    pub latest_id_before: Option<String>,
    /// How many recoveries the server listed just before the POST: one more afterwards, and
    /// listed after `latest_id_before`, is the test for "this attempt created it" (a
    /// recovery that sorts lower, as an hour repeated by daylight saving time can make it,
    /// makes the count disagree, and the operator is asked instead).
    pub recoveries_before: u32,
}

/// One attempt at one step.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Transition {
    /// The step attempted.
    pub step: Step,
    /// When it began.
    pub started_at: Millis,
    /// When its outcome was known (for a crash: when the crash was discovered).
    pub ended_at: Millis,
    /// How it ended.
    pub outcome: OutcomeKind,
    /// The error message, for failures.
    pub message: Option<String>,
}

/// How an attempt ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum OutcomeKind {
    /// The step finished; the clone moved on.
    Succeeded,
    /// The step failed in a way worth retrying.
    FailedRetryable,
    /// The step failed and needs the operator.
    FailedFatal,
    /// SIGINT/SIGTERM stopped the run at a safe point.
    Interrupted,
    /// The process died inside the step (found at the next load).
    Crashed,
    /// A resume found a prepared directory deleted or replaced: the clone went back to
    /// PrepareDirs (see [`CloneRecord::dirs_replaced`]).
    DirsReplaced,
    /// `clone resume --jobs/--bwlimit` changed how hard the copy pulls (see
    /// [`CloneRecord::change_pace`]); the message says from what to what.
    PaceChanged,
}

impl OutcomeKind {
    /// Every outcome, for exhaustive tests and for readers of the JSON names.
    pub const ALL: [OutcomeKind; 7] = [
        OutcomeKind::Succeeded,
        OutcomeKind::FailedRetryable,
        OutcomeKind::FailedFatal,
        OutcomeKind::Interrupted,
        OutcomeKind::Crashed,
        OutcomeKind::DirsReplaced,
        OutcomeKind::PaceChanged,
    ];

    /// Lower-case label for status output.
    pub fn label(self) -> &'static str {
        match self {
            OutcomeKind::Succeeded => "succeeded",
            OutcomeKind::FailedRetryable => "failed (retryable)",
            OutcomeKind::FailedFatal => "failed",
            OutcomeKind::Interrupted => "interrupted",
            OutcomeKind::Crashed => "crashed",
            OutcomeKind::DirsReplaced => "directory replaced",
            OutcomeKind::PaceChanged => "pace changed",
        }
    }

    /// The name in the `--json` documents (docs/json.md): snake_case.
    pub fn json_name(self) -> &'static str {
        match self {
            OutcomeKind::Succeeded => "succeeded",
            OutcomeKind::FailedRetryable => "failed_retryable",
            OutcomeKind::FailedFatal => "failed_fatal",
            OutcomeKind::Interrupted => "interrupted",
            OutcomeKind::Crashed => "crashed",
            OutcomeKind::DirsReplaced => "dirs_replaced",
            OutcomeKind::PaceChanged => "pace_changed",
        }
    }
}

/// One entry of a backup's file list, as the Transfer step checkpoints it.
///
/// The list is stored once per clone and each entry's `done` flag is set when rsync reports the
/// file complete (its `%b` line comes only after the file was renamed into place), so a resume
/// re-sends exactly the entries that are not done.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManifestEntry {
    /// Which tree the path is in: `0` for the data directory, else the tablespace OID.
    pub root: u32,
    /// Path relative to that root, `/`-separated, as rsync prints it.
    pub path: String,
    /// What the entry is.
    pub kind: EntryKind,
    /// Size in bytes (0 for directories).
    pub size: u64,
    /// Modification time, seconds since the epoch.
    pub mtime: i64,
    /// Whether the entry is complete at its final name in the target.
    pub done: bool,
}

/// Kind of a [`ManifestEntry`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum EntryKind {
    /// A regular file.
    File,
    /// A directory (listed so that empty ones are created).
    Dir,
    /// A symbolic link.
    Symlink,
}
