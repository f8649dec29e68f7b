//! What each step reads: the machine hands a step its inputs when the step begins ([`Task`]),
//! built from the request and the facts of the steps before it.
//!
//! This is where the plans' knowledge lives: which fact each step of each mode needs, and which
//! earlier step of the plan provides it. A step's code never looks a fact up in the record, so
//! it cannot meet a fact its plan does not guarantee; the exhaustive tests drive every plan and
//! check that every step begins with its inputs.

use crate::machine::{Mode, Step};
use crate::record::{
    ApiTarget, BackupFacts, BarmanTarget, CloneRecord, CloneRequest, OutcomeKind, PreparedDirs,
    SourceParams, Tablespace,
};
use crate::CloneId;

/// A step to run now and what it reads.
#[derive(Clone, Debug, PartialEq)]
pub struct Task {
    /// The step.
    pub step: Step,
    /// Its inputs.
    pub input: StepInput,
}

/// The inputs of each step.
#[derive(Clone, Debug, PartialEq)]
#[allow(
    clippy::large_enum_variant,
    reason = "one Task exists per step attempt: boxing saves nothing"
)]
pub enum StepInput {
    /// VerifyBackup asks the backup server of the mode.
    VerifyBackup(BackupServer),
    /// FetchParams compares the source with the verified backup, when there is one.
    FetchParams {
        /// VerifyBackup's facts (Barman and pg-backup-api modes).
        backup: Option<BackupFacts>,
    },
    /// PrepareDirs readies the directories for this server version and these tablespaces.
    PrepareDirs {
        /// `server_version_num` the directories are prepared for: the backup's, or the
        /// source's when the backup's is unknown (pg-backup-api, pg_basebackup).
        pg_version: u32,
        /// The backup's tablespaces (none when no backup was verified).
        tablespaces: Vec<Tablespace>,
    },
    /// Transfer copies by the mode's method.
    Transfer(TransferInput),
    /// StageBackup copies a staged kind's files into the staging directory.
    StageBackup(StageInput),
    /// UnpackBackup unpacks the staged tar files.
    UnpackBackup(UnpackInput),
    /// CombineChain combines the staged chain into the data directory.
    CombineChain(CombineInput),
    /// VerifyCopy checks the copy against its manifest, or, for a pg-backup-api restore
    /// without one, against what the restore must hold.
    VerifyCopy {
        /// Whether a `backup_manifest` must be there.
        manifest: ManifestExpectation,
        /// `server_version_num` of the copy (whose `pg_verifybackup` to run).
        pg_version: u32,
        /// pg-backup-api mode: the restore the API reported DONE, checked rather than trusted
        /// (`None` in the other modes).
        api_restore: Option<ExpectedRestore>,
    },
    /// WriteReplicationConf writes what the source parameters say.
    WriteReplicationConf {
        /// FetchParams' facts.
        params: SourceParams,
    },
}

/// The backup server VerifyBackup asks.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BackupServer {
    /// Barman over ssh.
    Barman(BarmanTarget),
    /// pg-backup-api over HTTP.
    Api(ApiTarget),
}

/// What the Transfer step reads.
#[derive(Clone, Debug, PartialEq)]
pub struct TransferInput {
    /// The upstream conninfo (without password) on which the replication slot must exist
    /// before the copy starts, so that the upstream keeps the WAL written meanwhile; `None`
    /// when the clone uses no slot.
    pub slot_upstream: Option<String>,
    /// The copy method and its inputs.
    pub method: TransferMethod,
}

/// The copy method of the mode, with what it reads.
#[derive(Clone, Debug, PartialEq)]
#[allow(
    clippy::large_enum_variant,
    reason = "one exists per Transfer attempt and is consumed at once: boxing saves nothing"
)]
pub enum TransferMethod {
    /// rsync from the Barman catalogue.
    BarmanRsync {
        /// The Barman server.
        barman: BarmanTarget,
        /// The pinned backup.
        backup: BackupFacts,
        /// Where it goes.
        dirs: PreparedDirs,
    },
    /// A pg-backup-api recovery operation.
    BackupApi {
        /// The API.
        target: ApiTarget,
        /// What the restore is expected to weigh (the backup's size when known, else the
        /// source's), for progress; 0 when unknown.
        expected_bytes: u64,
    },
    /// pg_basebackup from the source node.
    BaseBackup {
        /// The source's parameters.
        params: SourceParams,
        /// Where it goes.
        dirs: PreparedDirs,
        /// Earlier attempts at Transfer that did not succeed: each left a partial copy that
        /// this attempt starts over from (pg_basebackup cannot resume).
        restarts: u32,
    },
}

/// What StageBackup reads.
#[derive(Clone, Debug, PartialEq)]
pub struct StageInput {
    /// As for Transfer: the upstream on which the replication slot must exist before the
    /// first byte is copied (`None` without slots).
    pub slot_upstream: Option<String>,
    /// The Barman server.
    pub barman: BarmanTarget,
    /// The pinned backup, with its kind (the members to stage).
    pub backup: BackupFacts,
    /// The prepared directories (the data directory's file system is checked for space too).
    pub dirs: PreparedDirs,
    /// The clone's staging directory ([`CloneRequest::staging_dir`]).
    pub staging_dir: String,
}

/// Where UnpackBackup writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UnpackTarget {
    /// The data directory and the tablespace targets: the backup is a single tar backup.
    DataDir,
    /// A directory per member inside staging, for CombineChain to read.
    Staging,
}

/// What UnpackBackup reads.
#[derive(Clone, Debug, PartialEq)]
pub struct UnpackInput {
    /// The pinned backup, with its kind (the members and their formats).
    pub backup: BackupFacts,
    /// The prepared directories.
    pub dirs: PreparedDirs,
    /// The clone's staging directory, where StageBackup left the tar files.
    pub staging_dir: String,
    /// Where the files go.
    pub target: UnpackTarget,
}

/// What CombineChain reads.
#[derive(Clone, Debug, PartialEq)]
pub struct CombineInput {
    /// The pinned backup, with its chain.
    pub backup: BackupFacts,
    /// The prepared directories: the output and the tablespace targets.
    pub dirs: PreparedDirs,
    /// The clone's staging directory, holding every member's tree.
    pub staging_dir: String,
    /// `server_version_num` of the backup: whose `pg_combinebackup` to run.
    pub pg_version: u32,
}

/// Whether VerifyCopy must find a `backup_manifest`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ManifestExpectation {
    /// The backup's catalogue said whether it has one (Barman mode): a missing file is then
    /// an incomplete copy.
    Known(bool),
    /// Only the copy can tell (pg-backup-api, pg_basebackup): verify when one is there.
    FromCopy,
}

/// What a pg-backup-api restore must hold: the API reports only DONE, so VerifyCopy checks the
/// directory (with `pg_verifybackup` where a `backup_manifest` arrived, else these facts).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExpectedRestore {
    /// The operation that restored it (named in every failure).
    pub operation_id: String,
    /// The system identifier `global/pg_control` must hold: the backup's when known, else the
    /// source node's (a standby must be a copy of its upstream's cluster).
    pub system_identifier: String,
    /// The major version `PG_VERSION` must hold (the source's: the backup's is unknown).
    pub pg_major: u32,
    /// What the restore is known to weigh: the backup's size when known, else the source
    /// node's databases; 0 when unknown.
    pub known_bytes: u64,
}

impl ExpectedRestore {
    /// Whether `restored` bytes are a plausible restore of `known_bytes`: at least a tenth of
    /// them. The bound is loose on purpose: the backup may be much older and smaller than the
    /// source node it is compared with; it catches an empty or gutted restore, not a table
    /// missing (which `pg_verifybackup` catches where the backup has a manifest).
    pub fn size_suffices(&self, restored: u64) -> bool {
        restored.saturating_mul(10) >= self.known_bytes
    }
}

/// Why a step cannot begin: its plan does not provide what it reads. Always a bug (a plan or a
/// request built wrong), never the operator's doing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MissingInput {
    /// The step that could not begin.
    pub step: Step,
    /// What it lacked.
    pub what: &'static str,
}

impl CloneRequest {
    /// The clone's staging directory: `pgreplica-staging-<clone id>` in `pgreplica_staging_dir`
    /// when set, else beside the data directory (on its file system, so that the unpacked
    /// files and the staged ones share one space check, and `pg_combinebackup --link` can
    /// link instead of copying). Never inside the data directory, whose contents must equal
    /// the backup's.
    pub fn staging_dir(&self) -> String {
        let data_dir = self.data_dir.trim_end_matches('/');
        let base = match &self.staging_parent {
            Some(dir) => dir.trim_end_matches('/'),
            None => data_dir.rsplit_once('/').map_or("", |(parent, _)| parent),
        };
        format!(
            "{base}/pgreplica-staging-{}",
            CloneId::for_data_dir(data_dir)
        )
    }
}

impl CloneRecord {
    /// The inputs of `step` from the request and the recorded facts.
    pub(crate) fn input_of(&self, step: Step) -> Result<StepInput, MissingInput> {
        let missing = |what| MissingInput { step, what };
        let request = &self.request;
        let facts = &self.facts;
        let backup = || facts.backup.clone().ok_or(missing("the verified backup"));
        let params = || facts.params.clone().ok_or(missing("the source parameters"));
        let dirs = || {
            facts
                .dirs
                .clone()
                .ok_or(missing("the prepared directories"))
        };
        let staged = |backup: BackupFacts| match backup.kind.is_staged() {
            true => Ok(backup),
            false => Err(missing("a backup that is staged")),
        };
        Ok(match step {
            Step::VerifyBackup => StepInput::VerifyBackup(match request.mode {
                Mode::BarmanRsync => {
                    BackupServer::Barman(request.barman.clone().ok_or(missing("barman_host"))?)
                }
                Mode::BackupApi => BackupServer::Api(
                    request
                        .backup_api
                        .clone()
                        .ok_or(missing("pg_backupapi_host"))?,
                ),
                Mode::BaseBackup | Mode::ReplicationConfOnly => {
                    return Err(missing("a backup server in this mode"))
                }
            }),
            Step::FetchParams => StepInput::FetchParams {
                backup: facts.backup.clone(),
            },
            Step::PrepareDirs => StepInput::PrepareDirs {
                pg_version: match &facts.backup {
                    // 0: unknown (pg-backup-api mode); the source's version is the standby's.
                    Some(backup) if backup.pg_version != 0 => backup.pg_version,
                    _ => params()?.server_version_num,
                },
                tablespaces: facts
                    .backup
                    .as_ref()
                    .map(|b| b.tablespaces.clone())
                    .unwrap_or_default(),
            },
            Step::Transfer => StepInput::Transfer(TransferInput {
                slot_upstream: match request.replication.use_replication_slots {
                    true => Some(params()?.upstream_conninfo),
                    false => None,
                },
                method: match request.mode {
                    Mode::BarmanRsync => TransferMethod::BarmanRsync {
                        barman: request.barman.clone().ok_or(missing("barman_host"))?,
                        backup: backup()?,
                        dirs: dirs()?,
                    },
                    Mode::BackupApi => TransferMethod::BackupApi {
                        target: request
                            .backup_api
                            .clone()
                            .ok_or(missing("pg_backupapi_host"))?,
                        expected_bytes: self.known_restore_bytes(),
                    },
                    Mode::BaseBackup => TransferMethod::BaseBackup {
                        params: params()?,
                        dirs: dirs()?,
                        restarts: self.unsuccessful_attempts(Step::Transfer),
                    },
                    Mode::ReplicationConfOnly => return Err(missing("a copy method in this mode")),
                },
            }),
            Step::StageBackup => StepInput::StageBackup(StageInput {
                slot_upstream: match request.replication.use_replication_slots {
                    true => Some(params()?.upstream_conninfo),
                    false => None,
                },
                barman: request.barman.clone().ok_or(missing("barman_host"))?,
                backup: staged(backup()?)?,
                dirs: dirs()?,
                staging_dir: self.request.staging_dir(),
            }),
            Step::UnpackBackup => {
                let backup = staged(backup()?)?;
                StepInput::UnpackBackup(UnpackInput {
                    target: match backup.kind.is_chain() {
                        true => UnpackTarget::Staging,
                        false => UnpackTarget::DataDir,
                    },
                    backup,
                    dirs: dirs()?,
                    staging_dir: self.request.staging_dir(),
                })
            }
            Step::CombineChain => {
                let backup = staged(backup()?)?;
                if !backup.kind.is_chain() {
                    return Err(missing("an incremental chain"));
                }
                StepInput::CombineChain(CombineInput {
                    pg_version: backup.pg_version,
                    backup,
                    dirs: dirs()?,
                    staging_dir: self.request.staging_dir(),
                })
            }
            Step::VerifyCopy => StepInput::VerifyCopy {
                manifest: match request.mode {
                    Mode::BarmanRsync => ManifestExpectation::Known(backup()?.has_manifest),
                    _ => ManifestExpectation::FromCopy,
                },
                // The copy is of the backup's version when known: its pg_verifybackup reads
                // the manifest (the source's may be a minor release apart).
                pg_version: match &facts.backup {
                    Some(backup) if backup.pg_version != 0 => backup.pg_version,
                    _ => params()?.server_version_num,
                },
                api_restore: match request.mode {
                    Mode::BackupApi => Some(self.expected_restore(step)?),
                    _ => None,
                },
            },
            Step::WriteReplicationConf => StepInput::WriteReplicationConf { params: params()? },
        })
    }

    /// What the pg-backup-api restore checked by `step` must hold.
    fn expected_restore(&self, step: Step) -> Result<ExpectedRestore, MissingInput> {
        let missing = |what| MissingInput { step, what };
        let params = self
            .facts
            .params
            .as_ref()
            .ok_or(missing("the source parameters"))?;
        Ok(ExpectedRestore {
            operation_id: self
                .api_operation
                .as_ref()
                .and_then(|op| op.operation_id.clone())
                .ok_or(missing("the pg-backup-api operation"))?,
            system_identifier: (self.facts.backup.as_ref())
                .and_then(|b| b.system_id.clone())
                .unwrap_or_else(|| params.system_identifier.clone()),
            pg_major: params.server_version_num / 10_000,
            known_bytes: self.known_restore_bytes(),
        })
    }

    /// What a restore is known to weigh: the backup's restored size when known (the cluster's
    /// size where Barman recorded it: a compressed or incremental backup stores less); else
    /// the source node's databases (the API does not say how big a backup is); 0 when neither
    /// is known.
    fn known_restore_bytes(&self) -> u64 {
        let facts = &self.facts;
        facts
            .backup
            .as_ref()
            .map(|b| b.restored_bytes())
            .filter(|&size| size > 0)
            .or_else(|| facts.params.as_ref().map(|p| p.installation_size))
            .unwrap_or(0)
    }

    /// Attempts at `step` in the history that did not succeed (failures, interruptions,
    /// crashes).
    fn unsuccessful_attempts(&self, step: Step) -> u32 {
        let count = self
            .history
            .iter()
            .filter(|t| t.step == step && t.outcome != OutcomeKind::Succeeded)
            .count();
        u32::try_from(count).unwrap_or(u32::MAX)
    }

    /// The upstream on which an abandoned clone may have created its replication slot: set
    /// when the clone uses slots and an attempt reached Transfer or StageBackup (which create
    /// the slot before copying) or WriteReplicationConf. `clone start --force` drops that slot, or it would
    /// hold WAL on the upstream forever.
    pub fn abandoned_slot_upstream(&self) -> Option<&str> {
        let reached_slot = self.history.iter().any(|t| {
            matches!(
                t.step,
                Step::Transfer | Step::StageBackup | Step::WriteReplicationConf
            )
        });
        let params = self.facts.params.as_ref()?;
        (self.request.replication.use_replication_slots && reached_slot)
            .then_some(params.upstream_conninfo.as_str())
    }
}
