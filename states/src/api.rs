//! The pg-backup-api sub-protocol of the Transfer step: exactly one recovery operation per
//! clone, whatever crashes in between.
//!
//! The argument, in the order the I/O layer follows it:
//! * before the POST, the server's operation list is read and its greatest id is recorded with
//!   the attempt ([`CloneRecord::api_attempt_begun`], checkpointed before the POST);
//! * the id the POST answers is recorded at once ([`CloneRecord::api_operation_created`]); from
//!   then on every run follows it ([`ApiStart::Follow`]);
//! * a run that finds an attempt without an id (a crash, or a reply lost between the POST and
//!   the checkpoint) lists the operations again: ids are the server's local time, so the
//!   operation this clone created is among the recoveries listed after the recorded greatest
//!   id ([`created_since`]). Exactly one → adopt it; otherwise the operator chooses
//!   ([`OperatorChoice`]). The machine never allows a blind second POST: a second recovery into
//!   the same directory would race the first.
//!
//! The comparison is between the server's own ids, never with pgreplica's clock: the id is the
//! API host's local time in a zone pgreplica does not know.

use crate::record::{ApiOperation, CloneRecord, Millis};
use serde::{Deserialize, Serialize};

/// Recovery POSTs that certainly created nothing (the duplicate-id 500, connection refused)
/// are repeated at most this many times within one attempt at the step.
pub const MAX_POSTS: u32 = 10;

/// One entry of the API's operation list, as the decisions need it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListedOperation {
    /// The operation id (server local time, `%Y%m%dT%H%M%S`: string order is time order).
    pub id: String,
    /// Its type: `recovery`, `config_switch`, …
    pub kind: String,
}

/// What the Transfer step does first, decided from what the record holds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ApiStart {
    /// No attempt recorded: list, record the attempt, POST.
    Post,
    /// The clone's operation is recorded: follow it to its end.
    Follow(String),
    /// The operator named the clone's operation: check that it exists, record it, follow it.
    AdoptChosen(String),
    /// An attempt was recorded without an id: find the operation it may have created among
    /// the recoveries listed after `latest_id_before`.
    FindLost {
        /// The greatest id the server listed before that attempt's POST.
        latest_id_before: Option<String>,
    },
}

/// The operator's word when pgreplica cannot tell which operation is the clone's.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum OperatorChoice {
    /// This operation is the clone's (it must exist on the server).
    Adopt(String),
    /// None is: POST a new recovery.
    PostNew,
}

/// Which operation, if any, a lost attempt created.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LostAttempt {
    /// Exactly one recovery appeared after the attempt began: it is the clone's.
    Adopt(String),
    /// None appeared (only after a reply that proves nothing was created may the step POST
    /// again; see [`after_unknown_post`]).
    NoneCreated,
    /// Several appeared: another client posted too, and the API does not say which directory
    /// each restores into.
    Ambiguous(Vec<String>),
}

/// What to do after a POST whose outcome is unknown (reply lost or garbled) and a fresh list.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AfterUnknownPost {
    /// The operation the POST created, found in the list.
    Adopt(String),
    /// Nothing was created since the attempt began: posting again is safe.
    PostAgain,
    /// Several candidates: stop and ask the operator.
    Ask(Vec<String>),
}

/// What to do after a POST the server certainly did not act on.
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

    /// Decides how the Transfer step starts, given the operator's word if any. An operator's
    /// choice only matters when the record cannot tell (an attempt without an id).
    pub fn api_start(&self, choice: Option<&OperatorChoice>) -> ApiStart {
        match (&self.api_operation, choice) {
            (None, _) => ApiStart::Post,
            (
                Some(ApiOperation {
                    operation_id: Some(id),
                    ..
                }),
                _,
            ) => ApiStart::Follow(id.clone()),
            (Some(_), Some(OperatorChoice::PostNew)) => ApiStart::Post,
            (Some(_), Some(OperatorChoice::Adopt(id))) => ApiStart::AdoptChosen(id.clone()),
            (Some(attempt), None) => ApiStart::FindLost {
                latest_id_before: attempt.latest_id_before.clone(),
            },
        }
    }

    /// Input: a POST is about to be sent; `latest_id_before` is the greatest id the server
    /// lists now. The driver checkpoints the record before the POST.
    pub fn api_attempt_begun(&mut self, now: Millis, latest_id_before: Option<String>) {
        self.api_operation = Some(ApiOperation {
            attempt_started_at: now,
            operation_id: None,
            latest_id_before,
        });
    }

    /// Input: the clone's operation is known (the POST's reply, a lost one found in the list,
    /// or the operator's choice). The driver checkpoints the record at once.
    pub fn api_operation_created(&mut self, id: &str) {
        let attempt = self.api_operation.get_or_insert_with(ApiOperation::default);
        attempt.operation_id = Some(id.to_string());
    }

    /// Input: the server refused the POST in a way that proves nothing was created, and the
    /// step stops: a resume must not hunt for an operation.
    pub fn api_attempt_withdrawn(&mut self) {
        self.api_operation = None;
    }
}

/// Recoveries listed after `latest_before` (all of them when the server had none before), in
/// id order.
pub fn created_since(
    operations: &[ListedOperation],
    latest_before: Option<&str>,
) -> Vec<ListedOperation> {
    let mut created: Vec<ListedOperation> = operations
        .iter()
        .filter(|op| op.kind == "recovery")
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

/// A resume found an attempt without an id: which operation did it create?
pub fn find_lost(operations: &[ListedOperation], latest_before: Option<&str>) -> LostAttempt {
    let created = created_since(operations, latest_before);
    match created.as_slice() {
        [] => LostAttempt::NoneCreated,
        [one] => LostAttempt::Adopt(one.id.clone()),
        several => LostAttempt::Ambiguous(several.iter().map(|op| op.id.clone()).collect()),
    }
}

/// A POST's reply was lost or garbled; the list was read again afterwards.
pub fn after_unknown_post(
    operations: &[ListedOperation],
    latest_before: Option<&str>,
) -> AfterUnknownPost {
    match find_lost(operations, latest_before) {
        LostAttempt::Adopt(id) => AfterUnknownPost::Adopt(id),
        LostAttempt::NoneCreated => AfterUnknownPost::PostAgain,
        LostAttempt::Ambiguous(ids) => AfterUnknownPost::Ask(ids),
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
