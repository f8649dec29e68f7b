//! The pg-backup-api sub-protocol: one operation per clone at a time, decided from the record,
//! the server's list and the operator's recorded word, whatever the server answered and
//! whatever crashed in between; and following an operation to its end or to one of its two
//! timeouts.

use states::api::*;
use states::*;

const BEFORE: &str = "20261125T062405";

fn op(id: &str, kind: &str) -> ListedOperation {
    ListedOperation {
        id: id.into(),
        kind: kind.into(),
    }
}

fn recovery(id: &str) -> ListedOperation {
    op(id, "recovery")
}

fn request(mode: Mode) -> CloneRequest {
    CloneRequest {
        mode,
        data_dir: "/srv/standby".into(),
        backup_api: (mode == Mode::BackupApi).then(|| ApiTarget {
            host: "backup:7480".into(),
            node_name: "pg".into(),
            ..ApiTarget::default()
        }),
        barman: (mode == Mode::BarmanRsync).then(BarmanTarget::default),
        ..CloneRequest::default()
    }
}

fn record() -> CloneRecord {
    CloneRecord::new(
        CloneId::for_data_dir("/srv/standby"),
        request(Mode::BackupApi),
        1,
    )
}

/// An attempt begun when the server listed `listed`.
fn attempt(listed: &[ListedOperation]) -> ApiOperation {
    let mut rec = record();
    rec.api_attempt_begun(100, listed);
    rec.api_operation().unwrap().clone()
}

/// The three states of the record's operation: none, an attempt without id, an id.
fn records() -> [(&'static str, CloneRecord); 3] {
    let none = record();
    let mut lost = record();
    lost.api_attempt_begun(100, &[recovery(BEFORE)]);
    let mut known = lost.clone();
    known.api_operation_created(101, "20261125T062411");
    [("nothing", none), ("attempt", lost), ("id", known)]
}

#[test]
fn the_start_follows_the_record_unless_the_operator_spoke() {
    let adopt = OperatorChoice::Adopt("20261125T062410".into());
    for (what, rec) in records() {
        // Without the operator's word, the record decides.
        let expected = match what {
            "nothing" => ApiStart::Post,
            "attempt" => ApiStart::FindLost(rec.api_operation().unwrap().clone()),
            _ => ApiStart::Follow("20261125T062411".into()),
        };
        assert_eq!(rec.api_start(), expected, "{what}");
        // The operator's word wins over whatever is recorded.
        for (choice, expected) in [
            (
                adopt.clone(),
                ApiStart::AdoptChosen("20261125T062410".into()),
            ),
            (OperatorChoice::PostNew, ApiStart::Post),
        ] {
            let mut chosen = rec.clone();
            chosen.api_operator_choice(choice.clone()).unwrap();
            assert_eq!(chosen.api_choice(), Some(&choice), "{what}");
            assert_eq!(chosen.api_start(), expected, "{what} {choice}");
            // The word survives a crash of the run until the step acts on it.
            let mut budget = RetryBudget::new(RetryPolicy::STEP);
            chosen.begin(5).unwrap();
            chosen.finish(Outcome::Interrupted, 6, &mut budget).unwrap();
            chosen.begin(7).unwrap();
            assert_eq!(chosen.recover_crash(8), Some(Step::VerifyBackup));
            assert_eq!(
                chosen.api_start(),
                expected,
                "{what} {choice} after a crash"
            );
        }
    }
}

#[test]
fn the_operators_word_is_consumed_by_the_step_and_a_replaced_operation_is_abandoned() {
    for (what, rec) in records() {
        let had = rec.api_operation().and_then(|op| op.operation_id.clone());
        // `new`: the attempt begins afresh; a recorded id is abandoned.
        let mut fresh = rec.clone();
        fresh.api_operator_choice(OperatorChoice::PostNew).unwrap();
        fresh.api_attempt_begun(200, &[recovery(BEFORE), recovery("20261125T062411")]);
        assert_eq!(fresh.api_choice(), None, "{what}");
        assert_eq!(fresh.api_abandoned(), had.as_slice(), "{what}");
        let attempt = fresh.api_operation().unwrap();
        assert_eq!(attempt.operation_id, None);
        assert_eq!(attempt.attempt_started_at, 200);
        assert_eq!(attempt.latest_id_before.as_deref(), Some("20261125T062411"));
        assert_eq!(attempt.recoveries_before, 2);
        assert!(matches!(fresh.api_start(), ApiStart::FindLost(_)));

        // An id: adopted; a different recorded one is abandoned, the same one is not.
        for chosen in ["20261125T062500", "20261125T062411"] {
            let mut adopted = rec.clone();
            adopted
                .api_operator_choice(OperatorChoice::Adopt(chosen.into()))
                .unwrap();
            adopted.api_operation_created(300, chosen);
            assert_eq!(adopted.api_choice(), None);
            assert_eq!(adopted.api_start(), ApiStart::Follow(chosen.into()));
            let abandoned: Vec<String> = had.iter().filter(|h| *h != chosen).cloned().collect();
            assert_eq!(
                adopted.api_abandoned(),
                abandoned.as_slice(),
                "{what} {chosen}"
            );
        }
    }
    // Replacing twice keeps both, once each, oldest first.
    let mut rec = record();
    for id in ["20261125T000001", "20261125T000002", "20261125T000001"] {
        rec.api_operator_choice(OperatorChoice::Adopt(id.into()))
            .unwrap();
        rec.api_operation_created(1, id);
    }
    assert_eq!(rec.api_abandoned(), ["20261125T000001", "20261125T000002"]);
    // A refusal that proves nothing was created withdraws the attempt, not the abandoned ids.
    rec.api_attempt_withdrawn();
    assert_eq!(rec.api_operation(), None);
    assert_eq!(rec.api_start(), ApiStart::Post);
    assert_eq!(rec.api_abandoned().len(), 2);
}

#[test]
fn the_operators_word_is_refused_outside_api_mode_and_once_the_transfer_is_done() {
    for mode in [
        Mode::BarmanRsync,
        Mode::BaseBackup,
        Mode::ReplicationConfOnly,
    ] {
        let mut rec = CloneRecord::new(CloneId::for_data_dir("/srv/standby"), request(mode), 1);
        assert_eq!(
            rec.api_operator_choice(OperatorChoice::PostNew),
            Err(ChoiceRefused::NotApiMode),
            "{mode:?}"
        );
    }
    let mut rec = record();
    let mut budget = RetryBudget::new(RetryPolicy::STEP);
    let results = [
        StepResult::VerifyBackup(BackupFacts::default()),
        StepResult::FetchParams(SourceParams::default()),
        StepResult::PrepareDirs(PreparedDirs::default()),
        StepResult::Transfer(TransferSummary::default()),
        StepResult::VerifyCopy(Verification::Skipped { reason: "-".into() }),
        StepResult::WriteReplicationConf(WrittenConf::default()),
    ];
    for result in results {
        let step = result.step();
        // Up to and while at Transfer the word is taken; after it, there is nothing to choose.
        let expected = if step <= Step::Transfer {
            Ok(())
        } else {
            Err(ChoiceRefused::TransferDone)
        };
        assert_eq!(
            rec.api_operator_choice(OperatorChoice::PostNew),
            expected,
            "at {step}"
        );
        if step == Step::Transfer {
            rec.api_attempt_begun(10, &[]);
            rec.api_operation_created(11, "20261125T062411");
        }
        rec.begin(20).unwrap();
        rec.finish(Outcome::Succeeded(result), 21, &mut budget)
            .unwrap();
    }
    assert_eq!(rec.phase(), Phase::Done);
    assert_eq!(
        rec.api_operator_choice(OperatorChoice::Adopt("20261125T062411".into())),
        Err(ChoiceRefused::TransferDone)
    );
}

#[test]
fn only_recoveries_listed_after_the_recorded_id_are_candidates() {
    let ops = [
        recovery(BEFORE),
        recovery("20261125T062410"),
        op("20261125T062411", "config_switch"),
        recovery("20261125T062300"),
    ];
    let before = latest_id(&ops[..1]);
    assert_eq!(before.as_deref(), Some(BEFORE));
    assert_eq!(
        created_since(&ops, before.as_deref()),
        vec![recovery("20261125T062410")]
    );
    // A server without operations before the POST: every recovery is a candidate, in order.
    let all = created_since(&ops, None);
    let ids: Vec<&str> = all.iter().map(|o| o.id.as_str()).collect();
    assert_eq!(ids, ["20261125T062300", BEFORE, "20261125T062410"]);
    assert_eq!(latest_id(&[]), None);
    assert_eq!(latest_id(&ops).as_deref(), Some("20261125T062411"));
}

#[test]
fn an_unknown_outcome_adopts_the_one_new_recovery_posts_again_when_none_and_asks_otherwise() {
    let before = [recovery(BEFORE), op("20261125T062406", "config_switch")];
    let attempt = attempt(&before);
    assert_eq!(attempt.recoveries_before, 1);
    let with = |extra: &[ListedOperation]| [before.as_slice(), extra].concat();
    // The spawn-failure 500: the operation exists; it is the clone's.
    assert_eq!(
        after_unknown_post(&with(&[recovery("20261125T062410")]), &attempt, 1),
        AfterUnknownPost::Adopt("20261125T062410".into())
    );
    // Other operation types are not candidates.
    assert_eq!(
        after_unknown_post(
            &with(&[op("20261125T062410", "config_switch")]),
            &attempt,
            1
        ),
        AfterUnknownPost::PostAgain
    );
    // The duplicate-id 500, a lost request: nothing created, post again within the bound.
    for posts in 0..MAX_POSTS {
        assert_eq!(
            after_unknown_post(&before, &attempt, posts),
            AfterUnknownPost::PostAgain
        );
    }
    assert_eq!(
        after_unknown_post(&before, &attempt, MAX_POSTS),
        AfterUnknownPost::GiveUp
    );
    // Another client posted too: the API does not say which restores into this directory.
    assert_eq!(
        after_unknown_post(
            &with(&[recovery("20261125T062412"), recovery("20261125T062410")]),
            &attempt,
            1
        ),
        AfterUnknownPost::Ask(vec!["20261125T062410".into(), "20261125T062412".into()])
    );
    // A new recovery that sorts lower (an hour repeated when daylight saving time ends): the
    // count shows it, the ids cannot place it.
    assert_eq!(
        after_unknown_post(&with(&[recovery("20261125T012000")]), &attempt, 1),
        AfterUnknownPost::Ask(Vec::new())
    );
    assert_eq!(
        after_unknown_post(
            &with(&[recovery("20261125T012000"), recovery("20261125T062410")]),
            &attempt,
            1
        ),
        AfterUnknownPost::Ask(vec!["20261125T062410".into()])
    );
    // A job file removed meanwhile: the count no longer adds up either.
    assert_eq!(
        after_unknown_post(&[recovery("20261125T062410")], &attempt, 1),
        AfterUnknownPost::Ask(vec!["20261125T062410".into()])
    );
    // A server that listed nothing before.
    let empty = attempt_on_empty();
    assert_eq!(
        after_unknown_post(&[recovery(BEFORE)], &empty, 0),
        AfterUnknownPost::Adopt(BEFORE.into())
    );
    assert_eq!(
        after_unknown_post(&[], &empty, 0),
        AfterUnknownPost::PostAgain
    );
}

fn attempt_on_empty() -> ApiOperation {
    let attempt = attempt(&[]);
    assert_eq!(attempt.latest_id_before, None);
    assert_eq!(attempt.recoveries_before, 0);
    attempt
}

#[test]
fn refused_posts_are_repeated_only_when_transient_and_within_the_bound() {
    for posts in 1..MAX_POSTS {
        assert_eq!(after_refused_post(true, posts), AfterRefusedPost::PostAgain);
        assert_eq!(after_refused_post(false, posts), AfterRefusedPost::Stop);
    }
    assert_eq!(after_refused_post(true, MAX_POSTS), AfterRefusedPost::Stop);
}

const TIMEOUTS: FollowTimeouts = FollowTimeouts {
    start_ms: 3_000,
    stall_ms: 10_000,
};

/// Feeds `follow` the polls `(now, status, bytes)` and checks what each says.
fn polls(follow: &mut Follow, expected: &[(Millis, OperationStatus, u64, FollowNext)]) {
    for &(now, status, bytes, next) in expected {
        assert_eq!(
            follow.poll(now, status, bytes, TIMEOUTS),
            next,
            "at {now} ms, {status:?} with {bytes} bytes"
        );
    }
}

#[test]
fn an_operation_whose_worker_never_starts_stops_at_the_start_timeout() {
    use FollowNext::{NeverStarted, Stalled, Wait};
    use OperationStatus::InProgress;
    // Nothing arrives: waiting until the start timeout, then stop.
    let mut follow = Follow::new(1_000, 0);
    polls(
        &mut follow,
        &[
            (1_000, InProgress, 0, Wait),
            (3_999, InProgress, 0, Wait),
            (4_000, InProgress, 0, NeverStarted { waited_ms: 3_000 }),
        ],
    );
    assert!(!follow.arrived());
    // What an earlier run saw arrive shows the worker started once: only the stall timeout
    // applies, from when following began.
    let mut follow = Follow::new(0, 5_000);
    assert!(follow.arrived());
    polls(
        &mut follow,
        &[
            (9_999, InProgress, 5_000, Wait),
            (10_000, InProgress, 5_000, Stalled { idle_ms: 10_000 }),
        ],
    );
    // The status ends following whatever the clock says: an output file appeared.
    for (status, next) in [
        (OperationStatus::Done, FollowNext::Done),
        (OperationStatus::Failed, FollowNext::Failed),
    ] {
        polls(
            &mut Follow::new(0, 0),
            &[(1, status, 0, next), (60_000, status, 0, next)],
        );
    }
}

#[test]
fn once_bytes_arrive_only_the_stall_timeout_applies() {
    use FollowNext::{Stalled, Wait};
    use OperationStatus::InProgress;
    let mut follow = Follow::new(0, 0);
    polls(&mut follow, &[(2_000, InProgress, 10, Wait)]);
    assert!(follow.arrived());
    polls(
        &mut follow,
        &[
            // Far past the start timeout: no longer relevant.
            (11_999, InProgress, 10, Wait),
            // More bytes: the stall clock starts again.
            (11_999, InProgress, 20, Wait),
            (21_998, InProgress, 20, Wait),
            (21_999, InProgress, 20, Stalled { idle_ms: 10_000 }),
        ],
    );
    // A shrinking directory (rsync renaming over a file) is change too.
    polls(
        &mut Follow::new(0, 100),
        &[
            (3_500, InProgress, 90, Wait),
            (9_000, OperationStatus::Done, 90, FollowNext::Done),
        ],
    );
}

#[test]
fn ids_and_the_operators_word_are_printable_and_bounded() {
    assert!(is_operation_id("20261125T062405"));
    for bad in [
        "",
        "2026 1125",
        "../x",
        "\u{1b}[31m",
        &"9".repeat(MAX_ID_LEN + 1),
        "é",
    ] {
        assert!(!is_operation_id(bad), "{bad:?}");
    }
    assert_eq!(OperatorChoice::parse("new"), Ok(OperatorChoice::PostNew));
    assert_eq!(
        OperatorChoice::parse(" 20261125T062405 "),
        Ok(OperatorChoice::Adopt("20261125T062405".into()))
    );
    assert!(OperatorChoice::parse("a/b")
        .unwrap_err()
        .starts_with("expected \"new\" or an operation id"));
    assert_eq!(OperatorChoice::PostNew.to_string(), "new");
    assert_eq!(
        OperatorChoice::Adopt("20261125T062405".into()).to_string(),
        "20261125T062405"
    );
}

#[test]
fn the_operation_survives_a_reload_and_is_never_lost_by_other_inputs() {
    let mut rec = record();
    rec.api_attempt_begun(5, &[]);
    rec.api_operation_created(6, "20261125T062411");
    // Steps succeeding and failing around it do not touch the operation.
    let mut budget = RetryBudget::new(RetryPolicy::STEP);
    rec.begin(6).unwrap();
    rec.finish(Outcome::Interrupted, 7, &mut budget).unwrap();
    let reloaded = rec.clone();
    assert_eq!(
        reloaded.api_operation().unwrap().operation_id.as_deref(),
        Some("20261125T062411")
    );
}
