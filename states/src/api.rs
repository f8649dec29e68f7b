//! The pg-backup-api sub-protocol of the Transfer step: at most one recovery operation per
//! clone at a time, whatever the server answers and whatever crashes in between, and a bounded
//! wait for an operation whose worker never starts.
//!
//! The argument, in the order the I/O layer follows it:
//! * before the POST, the server's operation list is read and its greatest id and number of
//!   recoveries are recorded with the attempt ([`CloneRecord::api_attempt_begun`], checkpointed
//!   before the POST);
//! * the id a 202 answers is recorded at once ([`CloneRecord::api_operation_created`]); from
//!   then on every run follows it ([`ApiStart::Follow`]);
//! * any other answer that does not prove nothing was created — a 5xx (pg-backup-api 2.2
//!   writes the job file *before* it starts the worker and answers HTML 500 when starting it
//!   fails), a garbled reply, no reply, or a crash before the answer was recorded — is an
//!   unknown outcome: the list is read again ([`after_unknown_post`]); a single recovery
//!   created since the attempt began is this clone's and is recorded at once; none means
//!   nothing was created and the POST may be sent again; several, or a list the ids do not
//!   explain, stop the clone for the operator. Ids are the server's local time, so the
//!   comparison is between the server's own ids, never with pgreplica's clock.
//! * following an operation ([`Follow`]) ends with its status, or stops when nothing arrives in
//!   the data directory within the start timeout (the worker never started: pg-backup-api
//!   could not spawn it) or stops arriving for the stall timeout (the worker died);
//! * a new operation replaces a recorded one only on the operator's explicit word
//!   ([`CloneRecord::api_operator_choice`], from `clone resume --api-operation`), recorded on
//!   the clone until the step acts on it; the replaced id is kept in
//!   [`CloneRecord::api_abandoned`].

use crate::machine::{Mode, Phase, Step};
use crate::record::{ApiOperation, CloneRecord, Millis};
use serde::{Deserialize, Serialize};
use std::fmt;

/// POSTs sent within one attempt at the step (refused ones and those whose outcome was unknown
/// and proved to have created nothing) are bounded by this.
pub const MAX_POSTS: u32 = 10;

/// Longest operation id pgreplica accepts from the API or the operator (the API's ids are 15
/// characters, `%Y%m%dT%H%M%S`).
pub const MAX_ID_LEN: usize = 64;

/// One entry of the API's operation list, as the decisions need it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListedOperation {
    /// The operation id (server local time, `%Y%m%dT%H%M%S`: string order is time order).
    pub id: String,
    /// Its type: `recovery`, `config_switch`, …
    pub kind: String,
}

/// An operation's status, as `GET /servers/{server}/operations/{id}` reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OperationStatus {
    /// Only the job file exists: the worker runs, never started, or died without writing its
    /// output.
    InProgress,
    /// The output file says the command succeeded.
    Done,
    /// The output file says the command failed.
    Failed,
}

/// Whether `id` can be an operation id: 1 to [`MAX_ID_LEN`] printable ASCII characters, no
/// space and no `/`. Ids go into URLs, the record and log lines, so anything else an API
/// sends (a terminal escape sequence, a path) is a malformed reply, never an id.
pub fn is_operation_id(id: &str) -> bool {
    (1..=MAX_ID_LEN).contains(&id.len()) && id.bytes().all(|b| b.is_ascii_graphic() && b != b'/')
}

/// What the Transfer step does first, decided from what the record holds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ApiStart {
    /// No attempt recorded, or the operator asked for a new operation: list, record the
    /// attempt, POST.
    Post,
    /// The clone's operation is recorded: follow it to its end.
    Follow(String),
    /// The operator named the clone's operation: check that it exists, record it, follow it.
    AdoptChosen(String),
    /// An attempt was recorded without an id (a crash between the POST and recording its
    /// answer): list the operations and decide as after an unknown outcome
    /// ([`after_unknown_post`]).
    FindLost(ApiOperation),
}

/// The operator's word on which operation is the clone's (`clone resume --api-operation`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum OperatorChoice {
    /// This operation is the clone's (it must exist on the server).
    Adopt(String),
    /// None is: POST a new recovery (a recorded one is abandoned).
    PostNew,
}

impl OperatorChoice {
    /// Parses the operator's word: `new`, or an operation id ([`is_operation_id`]).
    pub fn parse(text: &str) -> Result<OperatorChoice, String> {
        match text.trim() {
            "new" => Ok(OperatorChoice::PostNew),
            id if is_operation_id(id) => Ok(OperatorChoice::Adopt(id.to_string())),
            _ => Err(format!(
                "expected \"new\" or an operation id such as 20261125T062405 (at most {MAX_ID_LEN} printable characters, no space or /)"
            )),
        }
    }
}

impl fmt::Display for OperatorChoice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            OperatorChoice::Adopt(id) => f.write_str(id),
            OperatorChoice::PostNew => f.write_str("new"),
        }
    }
}

/// Why the operator's word cannot be recorded on this clone.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChoiceRefused {
    /// The clone does not restore through pg-backup-api.
    NotApiMode,
    /// Its Transfer step has succeeded: no operation is left to choose.
    TransferDone,
}

/// What to do after a POST whose outcome is unknown (any 5xx, a garbled reply, no reply, a
/// crash before the answer was recorded), given a list read afterwards.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AfterUnknownPost {
    /// The operation the POST created, found in the list: record it at once.
    Adopt(String),
    /// Nothing was created since the attempt began: posting again is safe.
    PostAgain,
    /// Nothing was created, but [`MAX_POSTS`] POSTs were sent: stop with the last error.
    GiveUp,
    /// Several candidates, or a list the ids do not explain: stop and ask the operator. The
    /// ids are the recoveries listed after the attempt's greatest id.
    Ask(Vec<String>),
}

/// What to do after a POST the server certainly did not act on (connection refused, a failed
/// TLS handshake, a 4xx).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AfterRefusedPost {
    /// Try again (a transient refusal, within [`MAX_POSTS`]).
    PostAgain,
    /// Stop with the refusal's error.
    Stop,
}

impl CloneRecord {
    /// The pg-backup-api operation this clone owns, if an attempt was recorded.
    pub fn api_operation(&self) -> Option<&ApiOperation> {
        self.api_operation.as_ref()
    }

    /// The operator's word recorded by `clone resume --api-operation`, until the Transfer step
    /// acts on it.
    pub fn api_choice(&self) -> Option<&OperatorChoice> {
        self.api_choice.as_ref()
    }

    /// Operations this clone owned before the operator replaced them, oldest first.
    pub fn api_abandoned(&self) -> &[String] {
        &self.api_abandoned
    }

    /// Input: the operator's word (`clone resume --api-operation`). Recorded until the
    /// Transfer step acts on it; refused outside pg-backup-api mode and once the Transfer step
    /// has succeeded. The driver checkpoints the record before it runs anything.
    pub fn api_operator_choice(&mut self, choice: OperatorChoice) -> Result<(), ChoiceRefused> {
        if self.request.mode != Mode::BackupApi {
            return Err(ChoiceRefused::NotApiMode);
        }
        if self.phase == Phase::Done || self.is_step_done(Step::Transfer) {
            return Err(ChoiceRefused::TransferDone);
        }
        self.api_choice = Some(choice);
        Ok(())
    }

    /// Decides how the Transfer step starts. The operator's word, when recorded, wins over
    /// what the record holds: it is the only way to replace a recorded operation.
    pub fn api_start(&self) -> ApiStart {
        match (&self.api_choice, &self.api_operation) {
            (Some(OperatorChoice::PostNew), _) | (None, None) => ApiStart::Post,
            (Some(OperatorChoice::Adopt(id)), _) => ApiStart::AdoptChosen(id.clone()),
            (
                None,
                Some(ApiOperation {
                    operation_id: Some(id),
                    ..
                }),
            ) => ApiStart::Follow(id.clone()),
            (None, Some(attempt)) => ApiStart::FindLost(attempt.clone()),
        }
    }

    /// Input: a POST is about to be sent; `listed` is the server's operation list now. Consumes
    /// the operator's word; an operation recorded until now (only the operator's `new` leads
    /// here with one) is abandoned. The driver checkpoints the record before the POST.
    pub fn api_attempt_begun(&mut self, now: Millis, listed: &[ListedOperation]) {
        if let Some(previous) = self.api_operation.take().and_then(|op| op.operation_id) {
            self.abandon(previous);
        }
        self.api_choice = None;
        self.api_operation = Some(ApiOperation {
            attempt_started_at: now,
            operation_id: None,
            latest_id_before: latest_id(listed),
            recoveries_before: recoveries(listed).count().try_into().unwrap_or(u32::MAX),
        });
    }

    /// Input: the clone's operation is known (a POST's reply, one found in the list after an
    /// unknown outcome, or the operator's choice). Consumes the operator's word; a different
    /// operation recorded until now is abandoned. The driver checkpoints the record at once.
    pub fn api_operation_created(&mut self, now: Millis, id: &str) {
        let attempt = self.api_operation.get_or_insert_with(|| ApiOperation {
            attempt_started_at: now,
            ..ApiOperation::default()
        });
        let previous = attempt.operation_id.replace(id.to_string());
        if let Some(previous) = previous.filter(|p| p != id) {
            self.abandon(previous);
        }
        self.api_choice = None;
    }

    /// Input: the server refused the POST in a way that proves nothing was created, and the
    /// step stops: a resume must not hunt for an operation.
    pub fn api_attempt_withdrawn(&mut self) {
        self.api_operation = None;
    }

    fn abandon(&mut self, id: String) {
        if !self.api_abandoned.contains(&id) {
            self.api_abandoned.push(id);
        }
    }
}

fn recoveries(operations: &[ListedOperation]) -> impl Iterator<Item = &ListedOperation> {
    operations.iter().filter(|op| op.kind == "recovery")
}

/// Recoveries listed after `latest_before` (all of them when the server had none before), in
/// id order.
pub fn created_since(
    operations: &[ListedOperation],
    latest_before: Option<&str>,
) -> Vec<ListedOperation> {
    let mut created: Vec<ListedOperation> = recoveries(operations)
        .filter(|op| latest_before.is_none_or(|before| op.id.as_str() > before))
        .cloned()
        .collect();
    created.sort_by(|a, b| a.id.cmp(&b.id));
    created
}

/// The greatest id listed (ids are fixed-width times, so string order is time order).
pub fn latest_id(operations: &[ListedOperation]) -> Option<String> {
    operations.iter().map(|op| op.id.clone()).max()
}

/// A POST's outcome is unknown (or a crash lost it); `listed` was read afterwards and `posts`
/// POSTs were sent in this attempt at the step (0 when a resume finds a lost attempt).
///
/// The attempt created an operation if and only if one more recovery is listed than before it
/// began, and it sorts after the greatest id listed then: exactly one such → it is the clone's;
/// none, and no more recoveries than before → nothing was created. Anything else (several new
/// recoveries: another client posted too; or a count the ids do not explain) is for the
/// operator: the API does not say which directory an operation restores into.
pub fn after_unknown_post(
    listed: &[ListedOperation],
    attempt: &ApiOperation,
    posts: u32,
) -> AfterUnknownPost {
    let created = created_since(listed, attempt.latest_id_before.as_deref());
    let now = u64::try_from(recoveries(listed).count()).unwrap_or(u64::MAX);
    let explained = u64::from(attempt.recoveries_before) + created.len() as u64 == now;
    match created.as_slice() {
        [one] if explained => AfterUnknownPost::Adopt(one.id.clone()),
        [] if explained && posts < MAX_POSTS => AfterUnknownPost::PostAgain,
        [] if explained => AfterUnknownPost::GiveUp,
        several => AfterUnknownPost::Ask(several.iter().map(|op| op.id.clone()).collect()),
    }
}

/// A POST was refused before anything was created; `posts` POSTs were sent in this attempt.
pub fn after_refused_post(transient: bool, posts: u32) -> AfterRefusedPost {
    if transient && posts < MAX_POSTS {
        AfterRefusedPost::PostAgain
    } else {
        AfterRefusedPost::Stop
    }
}

/// The two waits of following an operation, in milliseconds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FollowTimeouts {
    /// The data directory stays empty this long after following began
    /// (`pg_backupapi_start_timeout`).
    pub start_ms: Millis,
    /// Bytes arrived, then nothing new for this long (`pg_backupapi_stall_timeout`).
    pub stall_ms: Millis,
}

/// What following an operation does after a poll.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FollowNext {
    /// Poll again after the poll interval.
    Wait,
    /// The operation is done: the step succeeds (VerifyCopy checks what it restored).
    Done,
    /// The operation failed: stop (its output file says why).
    Failed,
    /// The data directory held nothing and nothing arrived within the start timeout, the
    /// status never leaving IN_PROGRESS: the worker never started (pg-backup-api could not spawn it), or the
    /// operation restores elsewhere. Stop; a resume checks the operation again.
    NeverStarted {
        /// How long this run followed it.
        waited_ms: Millis,
    },
    /// Bytes arrived, then none for the stall timeout: the worker died. Stop.
    Stalled {
        /// How long nothing new arrived.
        idle_ms: Millis,
    },
}

/// Following one operation within one run: what the data directory held, when it last
/// changed, whether anything arrived at all. Time and sizes come in as arguments.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Follow {
    began_at: Millis,
    last_bytes: u64,
    last_change_at: Millis,
    arrived: bool,
}

impl Follow {
    /// Following begins at `now` with `bytes` in the data directory. Bytes already there (a
    /// restore an earlier run saw begin) show that the worker started once: only the stall
    /// timeout applies then. The start timeout is for a directory that holds nothing.
    pub fn new(now: Millis, bytes: u64) -> Follow {
        Follow {
            began_at: now,
            last_bytes: bytes,
            last_change_at: now,
            arrived: bytes > 0,
        }
    }

    /// Input: a poll answered `status` at `now`, with `bytes` in the data directory.
    pub fn poll(
        &mut self,
        now: Millis,
        status: OperationStatus,
        bytes: u64,
        timeouts: FollowTimeouts,
    ) -> FollowNext {
        match status {
            OperationStatus::Done => return FollowNext::Done,
            OperationStatus::Failed => return FollowNext::Failed,
            OperationStatus::InProgress => {}
        }
        if bytes != self.last_bytes {
            self.last_bytes = bytes;
            self.last_change_at = now;
            self.arrived = true;
        }
        let waited_ms = now.saturating_sub(self.began_at);
        let idle_ms = now.saturating_sub(self.last_change_at);
        if !self.arrived && waited_ms >= timeouts.start_ms {
            FollowNext::NeverStarted { waited_ms }
        } else if self.arrived && idle_ms >= timeouts.stall_ms {
            FollowNext::Stalled { idle_ms }
        } else {
            FollowNext::Wait
        }
    }

    /// Whether the data directory held anything since following began.
    pub fn arrived(&self) -> bool {
        self.arrived
    }
}
