//! What the commands may do with a clone record they find: whether `clone start` creates a
//! record, replaces the one it found or refuses; what a resume re-checks on disk before the
//! next step runs; how a clone whose directories were deleted or replaced goes back to
//! PrepareDirs; which recorded values a resume may change (`--jobs`, `--bwlimit`); and which
//! recorded request values differ from the current configuration.
//!
//! These are decisions about a clone, so they live in the machine, tested exhaustively; the
//! I/O layer reads the disk and the configuration and acts on the answers.

use crate::kind::StagedProgress;
use crate::machine::{Mode, Phase, Step};
use crate::record::{CloneRecord, CloneRequest, Millis, OutcomeKind, PreparedDirs, Transition};

/// What `clone start` found in the state directory for its data directory.
#[derive(Clone, Copy, Debug)]
pub enum Existing<'a> {
    /// No record.
    None,
    /// A record that cannot be read (damaged, or written by another pgreplica version).
    Damaged,
    /// A readable record.
    Record(&'a CloneRecord),
}

/// What `clone start` does with what it found.
///
/// A replaced record is kept until the new clone has passed its checks (the dry run's checks,
/// which are the steps' own): a start that is refused leaves the earlier record as it was and
/// no record of its own.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StartDecision {
    /// Nothing to replace: create the record.
    Create,
    /// Replace the record, for this reason.
    Replace(Replaced),
    /// Keep the record and refuse the start.
    Refuse(Refusal),
}

/// Why a record may be replaced by a new `clone start`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Replaced {
    /// The clone finished: a new clone of its directory replaces it.
    Finished,
    /// The clone never reached a step that writes into the data directory (a wrong setting
    /// stopped it before the copy): a start with the setting corrected replaces it.
    NeverCopied,
    /// An unfinished clone that had begun writing, discarded with `--force`.
    Forced,
    /// A record that cannot be read, discarded with `--force`.
    Damaged,
}

/// Why a `clone start` is refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// An unfinished clone has begun writing into the directory: resume it, or discard it
    /// with `--force`.
    Unfinished,
    /// The record cannot be read: move it aside (`clone forget`), or discard it with
    /// `--force`.
    Damaged,
}

impl StartDecision {
    /// The decision for a `clone start` (with `--force` or not) that found `existing`.
    pub fn of(existing: Existing<'_>, force: bool) -> StartDecision {
        match existing {
            Existing::None => StartDecision::Create,
            Existing::Damaged if force => StartDecision::Replace(Replaced::Damaged),
            Existing::Damaged => StartDecision::Refuse(Refusal::Damaged),
            Existing::Record(record) if record.phase() == Phase::Done => {
                StartDecision::Replace(Replaced::Finished)
            }
            Existing::Record(record) if !record.began_writing() => {
                StartDecision::Replace(Replaced::NeverCopied)
            }
            Existing::Record(_) if force => StartDecision::Replace(Replaced::Forced),
            Existing::Record(_) => StartDecision::Refuse(Refusal::Unfinished),
        }
    }
}

/// What a resume must check on disk before it lets the next step run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ResumeCheck {
    /// Nothing of the clone is on disk yet, or the clone is done: the next step checks what
    /// it needs itself.
    Nothing,
    /// PrepareDirs is done (the clone is at any later step: Transfer, or StageBackup,
    /// UnpackBackup and CombineChain for the staged kinds, VerifyCopy, WriteReplicationConf):
    /// everything it checked must still hold (no running postmaster in or above any
    /// directory, owner and permissions), and each directory must still be the one it
    /// prepared ([`PreparedDirs::identities`]).
    PreparedDirs(PreparedDirs),
    /// `--replication-conf-only` past FetchParams: the restored directory must still not be
    /// inside a running cluster, nor run one itself unless `--force`.
    RestoredDir,
}

/// A recorded request value that differs from the one the current configuration gives.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Difference {
    /// The repmgr.conf key or command-line flag, as the operator writes it.
    pub setting: &'static str,
    /// The recorded and the current value, rendered for a message; `None` for values that may
    /// hold a secret (commands, option strings, conninfo), which are only named.
    pub values: Option<(String, String)>,
}

/// Whether `step` writes into the data directory (or its WAL and tablespace directories), or
/// into the staging directory whose contents are on their way there — every step after
/// PrepareDirs; they (or the first of them, for the staged kinds) also create the replication
/// slot. A step added later counts as writing, the safe side.
fn writes_into_the_directories(step: Step) -> bool {
    !matches!(
        step,
        Step::VerifyBackup | Step::FetchParams | Step::PrepareDirs
    )
}

impl CloneRecord {
    /// Whether any attempt (finished, failed, crashed or in flight) reached a step that writes
    /// into the data directory or stages what goes there (StageBackup's staged files are the
    /// clone's, and only its record says where they are). PrepareDirs creates directories but
    /// writes no file into them.
    pub fn began_writing(&self) -> bool {
        self.history
            .iter()
            .map(|t| t.step)
            .chain(self.in_flight())
            .any(writes_into_the_directories)
    }

    /// What a resume must check before the next step runs.
    pub fn resume_check(&self) -> ResumeCheck {
        if self.phase == Phase::Done {
            return ResumeCheck::Nothing;
        }
        if let Some(dirs) = &self.facts.dirs {
            return ResumeCheck::PreparedDirs(dirs.clone());
        }
        if self.request.mode == Mode::ReplicationConfOnly && self.is_step_done(Step::FetchParams) {
            return ResumeCheck::RestoredDir;
        }
        ResumeCheck::Nothing
    }

    /// Input: a resume found a directory that PrepareDirs prepared deleted or replaced
    /// (`what` says which, for the history). Whatever later steps established about the
    /// directories' content is void, so the clone goes back to PrepareDirs: the facts of
    /// PrepareDirs and of every later step are dropped and the history records the rewind at
    /// the current step. The transfer's file list stays: the copy re-derives what is done by
    /// comparing the directory with it (for a staged kind, StageBackup compares the staging
    /// directory, which lies outside the replaced ones). The staged kinds' unpack checkpoints
    /// and pg_combinebackup's completion are void too: they describe files in the replaced
    /// directories (or staged files UnpackBackup removed once unpacked, which StageBackup
    /// then stages again), so UnpackBackup and CombineChain start over.
    ///
    /// Returns false, changing nothing, when there is nothing to rewind: the clone is done,
    /// a step is in flight (recover the crash first), or PrepareDirs is not done.
    pub fn dirs_replaced(&mut self, now: Millis, what: String) -> bool {
        let Phase::At(current) = self.phase else {
            return false;
        };
        if self.in_flight.is_some() || self.facts.dirs.is_none() {
            return false;
        }
        self.history.push(Transition {
            step: current,
            started_at: now,
            ended_at: now,
            outcome: OutcomeKind::DirsReplaced,
            message: Some(what),
        });
        self.phase = Phase::At(Step::PrepareDirs);
        self.attempts = 0;
        self.last_error = None;
        self.facts.dirs = None;
        self.facts.transfer = None;
        self.facts.staging = None;
        self.facts.unpacked = None;
        self.facts.combined = None;
        self.staged = StagedProgress::default();
        self.facts.verification = None;
        self.facts.replication_conf = None;
        true
    }
}

/// Most streams the `--jobs` default picks: each stream is one ssh connection, whose
/// encryption takes a core at both ends, and on 2 cores 4 streams lost to 2 (benchmarks.md).
pub const DEFAULT_JOBS_MAX: u32 = 4;

impl CloneRequest {
    /// The `--jobs` of a clone whose operator names none: one stream per core of this host,
    /// at least 1, at most [`DEFAULT_JOBS_MAX`]. `cores` is what the host reports (0 when it
    /// cannot tell). The Barman host's cores are not known before the request is recorded,
    /// which happens before the first ssh call.
    pub fn default_jobs(cores: usize) -> u32 {
        u32::try_from(cores)
            .unwrap_or(u32::MAX)
            .clamp(1, DEFAULT_JOBS_MAX)
    }
}

impl CloneRecord {
    /// `clone resume --jobs N --bwlimit KBPS`: the operator changes how hard the copy pulls
    /// (fewer streams or a lower rate in business hours, more at night). Only these two
    /// recorded values may change on a resume — they decide how fast, never what, is copied,
    /// and a copy resumes under any of them. `bwlimit_kbps` `Some(0)` removes the limit. The
    /// change is recorded in the history at the current step, with the old and new values.
    ///
    /// Returns what changed (`--jobs 1 → 4`), or None, changing nothing, when the values are
    /// those recorded already, the clone is done, or a step is in flight (recover the crash
    /// first, so the history stays in order).
    pub fn change_pace(
        &mut self,
        now: Millis,
        jobs: Option<u32>,
        bwlimit_kbps: Option<u32>,
    ) -> Option<String> {
        let Phase::At(current) = self.phase else {
            return None;
        };
        if self.in_flight.is_some() {
            return None;
        }
        let rate = |limit: Option<u32>| limit.map_or("none".to_string(), |k| k.to_string());
        let mut changes = Vec::new();
        if let Some(jobs) = jobs.filter(|&j| j != self.request.jobs) {
            changes.push(format!("--jobs {} → {jobs}", self.request.jobs));
            self.request.jobs = jobs;
        }
        if let Some(limit) = bwlimit_kbps.map(|k| (k > 0).then_some(k)) {
            if limit != self.request.bwlimit_kbps {
                changes.push(format!(
                    "--bwlimit {} → {}",
                    rate(self.request.bwlimit_kbps),
                    rate(limit)
                ));
                self.request.bwlimit_kbps = limit;
            }
        }
        if changes.is_empty() {
            return None;
        }
        let what = changes.join(", ");
        self.history.push(Transition {
            step: current,
            started_at: now,
            ended_at: now,
            outcome: OutcomeKind::PaceChanged,
            message: Some(what.clone()),
        });
        Some(what)
    }
}

impl CloneRequest {
    /// The values of this (recorded) request that differ from `current` (built from today's
    /// repmgr.conf and the recorded flags), named as the operator sets them. The data
    /// directory (the clone's name), `--force` and the configuration file's path are not
    /// compared: they are how the clone was found, not how it copies.
    pub fn differences(&self, current: &CloneRequest) -> Vec<Difference> {
        let mut out = Vec::new();
        let mut shown = |setting: &'static str, recorded: String, now: String| {
            if recorded != now {
                out.push(Difference {
                    setting,
                    values: Some((recorded, now)),
                });
            }
        };
        let both = |value: fn(&CloneRequest) -> String| (value(self), value(current));
        let fields: [(&'static str, Render); 31] = [
            ("mode", |r| r.mode.label().to_string()),
            ("node_id", |r| opt(r.node_id)),
            ("node_name", |r| opt(r.node_name.as_ref())),
            ("-h/--host", |r| opt(r.source.host.as_ref())),
            ("-p/--port", |r| opt(r.source.port)),
            ("-U/--username", |r| opt(r.source.user.as_ref())),
            ("--upstream-node-id", |r| opt(r.upstream_node_id)),
            ("--upstream-conninfo", |r| opt(r.upstream_conninfo.as_ref())),
            ("--backup-id", |r| quoted(&r.backup_selector)),
            ("--jobs", |r| r.jobs.to_string()),
            ("--bwlimit", |r| opt(r.bwlimit_kbps)),
            ("--waldir (pg_basebackup_options)", |r| {
                opt(r.waldir.as_ref())
            }),
            ("tablespace_mapping", |r| mapping(&r.tablespace_mapping)),
            ("barman_host", |r| opt(r.barman.as_ref().map(|b| &b.host))),
            ("barman_server", |r| {
                opt(r.barman.as_ref().map(|b| &b.server))
            }),
            ("barman_config", |r| {
                opt(r.barman.as_ref().and_then(|b| b.config.as_ref()))
            }),
            ("pg_backupapi_host", |r| {
                opt(r.backup_api.as_ref().map(|a| &a.host))
            }),
            ("pg_backupapi_node_name", |r| {
                opt(r.backup_api.as_ref().map(|a| &a.node_name))
            }),
            ("pg_backupapi_backup_id", |r| {
                opt(r.backup_api.as_ref().map(|a| &a.backup_id))
            }),
            ("pg_backupapi_ca_file", |r| {
                opt(r.backup_api.as_ref().and_then(|a| a.ca_file.as_ref()))
            }),
            ("pg_backupapi_cert_file", |r| {
                opt(r.backup_api.as_ref().and_then(|a| a.cert_file.as_ref()))
            }),
            ("pg_backupapi_key_file", |r| {
                opt(r.backup_api.as_ref().and_then(|a| a.key_file.as_ref()))
            }),
            ("pg_backupapi_stall_timeout", |r| {
                opt(r
                    .backup_api
                    .as_ref()
                    .map(|a| format!("{} s", a.stall_timeout_secs)))
            }),
            ("pg_backupapi_poll_interval", |r| {
                opt(r
                    .backup_api
                    .as_ref()
                    .map(|a| format!("{} ms", a.poll_interval_ms)))
            }),
            ("pg_bindir", |r| opt(r.pg_bindir.as_ref())),
            ("pgreplica_staging_dir", |r| opt(r.staging_parent.as_ref())),
            ("replication_user", |r| {
                opt(r.replication.replication_user.as_ref())
            }),
            ("use_replication_slots", |r| {
                flag(r.replication.use_replication_slots)
            }),
            ("recovery_min_apply_delay", |r| {
                opt(r.replication.recovery_min_apply_delay.as_ref())
            }),
            ("use_primary_conninfo_password", |r| {
                flag(r.replication.use_primary_conninfo_password)
            }),
            ("passfile", |r| opt(r.replication.passfile.as_ref())),
        ];
        for (setting, value) in fields {
            let (was, now) = both(value);
            shown(setting, was, now);
        }
        // Commands, option strings and conninfo may hold a secret: named, never shown.
        let api_command =
            |r: &CloneRequest| r.backup_api.as_ref().map(|a| a.remote_ssh_command.clone());
        let hidden: [(&'static str, bool); 6] = [
            ("-d/--dbname", self.source.dbname != current.source.dbname),
            ("ssh_options", self.ssh_options != current.ssh_options),
            (
                "pg_basebackup_options",
                self.pg_basebackup_options != current.pg_basebackup_options,
            ),
            (
                "pg_backupapi_remote_ssh_command",
                api_command(self) != api_command(current),
            ),
            (
                "restore_command",
                self.replication.restore_command != current.replication.restore_command,
            ),
            (
                "archive_cleanup_command",
                self.replication.archive_cleanup_command
                    != current.replication.archive_cleanup_command,
            ),
        ];
        out.extend(
            hidden
                .into_iter()
                .filter(|(_, differs)| *differs)
                .map(|(setting, _)| Difference {
                    setting,
                    values: None,
                }),
        );
        out
    }
}

/// How one compared value of a request is rendered for a message.
type Render = fn(&CloneRequest) -> String;

/// A value for a message: quoted, or "(not set)".
fn opt<T: std::fmt::Display>(value: Option<T>) -> String {
    value.map_or_else(|| "(not set)".to_string(), |v| quoted(&v.to_string()))
}

fn quoted(value: &str) -> String {
    format!("\"{value}\"")
}

fn flag(on: bool) -> String {
    if on { "on" } else { "off" }.to_string()
}

fn mapping(pairs: &[(String, String)]) -> String {
    if pairs.is_empty() {
        return "(not set)".to_string();
    }
    pairs
        .iter()
        .map(|(old, new)| quoted(&format!("{old}={new}")))
        .collect::<Vec<_>>()
        .join(", ")
}
