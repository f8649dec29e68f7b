//! The pg-backup-api sub-protocol: one operation per clone, decided from the record and the
//! server's list, whatever crashed in between.

use states::api::*;
use states::*;

fn op(id: &str, kind: &str) -> ListedOperation {
    ListedOperation {
        id: id.into(),
        kind: kind.into(),
    }
}

fn record() -> CloneRecord {
    let request = CloneRequest {
        mode: Mode::BackupApi,
        data_dir: "/srv/standby".into(),
        backup_api: Some(ApiTarget {
            host: "backup:7480".into(),
            node_name: "pg".into(),
            ..ApiTarget::default()
        }),
        ..CloneRequest::default()
    };
    CloneRecord::new(CloneId::for_data_dir("/srv/standby"), request, 1)
}

#[test]
fn the_start_follows_the_record_and_the_operator_only_where_the_record_cannot_tell() {
    let adopt = OperatorChoice::Adopt("20261125T062410".into());
    let post = OperatorChoice::PostNew;
    let mut rec = record();
    // Nothing recorded: post; the operator's word changes nothing.
    for choice in [None, Some(&adopt), Some(&post)] {
        assert_eq!(rec.api_start(choice), ApiStart::Post);
    }
    // An attempt without an id: find it, unless the operator decided.
    rec.api_attempt_begun(100, Some("20261125T062405".into()));
    assert_eq!(rec.api_operation().unwrap().attempt_started_at, 100);
    assert_eq!(
        rec.api_start(None),
        ApiStart::FindLost {
            latest_id_before: Some("20261125T062405".into())
        }
    );
    assert_eq!(
        rec.api_start(Some(&adopt)),
        ApiStart::AdoptChosen("20261125T062410".into())
    );
    assert_eq!(rec.api_start(Some(&post)), ApiStart::Post);
    // The id recorded: follow it, whatever the operator says.
    rec.api_operation_created("20261125T062411");
    for choice in [None, Some(&adopt), Some(&post)] {
        assert_eq!(
            rec.api_start(choice),
            ApiStart::Follow("20261125T062411".into())
        );
    }
    // A refusal that proves nothing was created withdraws the attempt.
    rec.api_attempt_withdrawn();
    assert_eq!(rec.api_operation(), None);
    assert_eq!(rec.api_start(None), ApiStart::Post);
}

#[test]
fn only_recoveries_listed_after_the_recorded_id_are_candidates() {
    let ops = [
        op("20261125T062405", "recovery"),
        op("20261125T062410", "recovery"),
        op("20261125T062411", "config_switch"),
        op("20261125T062300", "recovery"),
    ];
    let before = latest_id(&ops[..1]);
    assert_eq!(before.as_deref(), Some("20261125T062405"));
    assert_eq!(
        created_since(&ops, before.as_deref()),
        vec![op("20261125T062410", "recovery")]
    );
    // A server without operations before the POST: every recovery is a candidate, in order.
    let all = created_since(&ops, None);
    let ids: Vec<&str> = all.iter().map(|o| o.id.as_str()).collect();
    assert_eq!(
        ids,
        ["20261125T062300", "20261125T062405", "20261125T062410"]
    );
    assert_eq!(latest_id(&[]), None);
    assert_eq!(latest_id(&ops).as_deref(), Some("20261125T062411"));
}

#[test]
fn a_lost_attempt_is_adopted_only_when_exactly_one_recovery_appeared() {
    let before = Some("20261125T062405");
    let none = [op("20261125T062405", "recovery")];
    let one = [
        op("20261125T062405", "recovery"),
        op("20261125T062406", "config_switch"),
        op("20261125T062410", "recovery"),
    ];
    let two = [
        op("20261125T062410", "recovery"),
        op("20261125T062412", "recovery"),
    ];
    assert_eq!(find_lost(&none, before), LostAttempt::NoneCreated);
    assert_eq!(
        find_lost(&one, before),
        LostAttempt::Adopt("20261125T062410".into())
    );
    assert_eq!(
        find_lost(&two, before),
        LostAttempt::Ambiguous(vec!["20261125T062410".into(), "20261125T062412".into()])
    );
    // After a POST whose reply was lost: none created means posting again is safe.
    assert_eq!(
        after_unknown_post(&none, before),
        AfterUnknownPost::PostAgain
    );
    assert_eq!(
        after_unknown_post(&one, before),
        AfterUnknownPost::Adopt("20261125T062410".into())
    );
    assert!(matches!(
        after_unknown_post(&two, before),
        AfterUnknownPost::Ask(ids) if ids.len() == 2
    ));
}

#[test]
fn refused_posts_are_repeated_only_when_transient_and_within_the_bound() {
    for posts in 1..MAX_POSTS {
        assert_eq!(after_refused_post(true, posts), AfterRefusedPost::PostAgain);
        assert_eq!(after_refused_post(false, posts), AfterRefusedPost::Stop);
    }
    assert_eq!(after_refused_post(true, MAX_POSTS), AfterRefusedPost::Stop);
}

#[test]
fn the_operation_survives_a_reload_and_is_never_lost_by_other_inputs() {
    let mut rec = record();
    rec.api_attempt_begun(5, None);
    rec.api_operation_created("20261125T062411");
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
