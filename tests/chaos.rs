//! The kill-anywhere campaign, bounded for the test suite: a few rounds of `lab::chaos` per
//! copying mode with a fixed seed — pgreplica killed for real (SIGKILL of its group, SIGTERM,
//! its rsyncs, the pg-backup-api server restarted) inside steps and mid-file, resumed, and each
//! clone checked: equal to an uninterrupted one (Barman, pg-backup-api), or verified against its
//! manifest with every restart recorded (pg_basebackup). The long campaign is `cargo xtask
//! chaos` (docs/chaos.md).

mod common;

use common::{debian_lab, Bench};
use lab::chaos::{summary, Campaign, ChaosMode, ChaosOptions, RoundReport};
use std::ops::RangeInclusive;
use std::time::Duration;

/// Runs `rounds` of a campaign and fails with every failed round and its replay command.
fn run_campaign(bench: &Bench, options: ChaosOptions, rounds: RangeInclusive<u32>) {
    let seed = options.seed;
    let mode = options.mode;
    let campaign = Campaign::prepare(&bench.lab, &bench.binary, options)
        .unwrap_or_else(|e| panic!("{mode} campaign: {e}"));
    let reports: Vec<RoundReport> = rounds
        .map(|round| {
            let report = campaign.run_round(round);
            eprintln!("{report}");
            report
        })
        .collect();
    eprint!("{}", summary(&reports));
    let failed: Vec<String> = reports
        .iter()
        .filter(|r| r.outcome.is_err())
        .map(|r| {
            format!(
                "{r}\nreplay: cargo xtask chaos --mode {} --seed {seed} --round {}",
                mode.name(),
                r.round
            )
        })
        .collect();
    assert!(failed.is_empty(), "{}", failed.join("\n"));
    let kills: usize = reports.iter().map(|r| r.kills.len()).sum();
    assert!(kills > 0, "no kill landed in {} rounds", reports.len());
}

/// Rounds 3–5 of seed 1 aim at VerifyBackup, PrepareDirs, Transfer (mid-file) and VerifyCopy,
/// with SIGKILL and SIGTERM; where each lands depends on timing, and every landing must pass.
#[test]
fn killed_anywhere_resume_matches_an_uninterrupted_clone() {
    let bench = Bench::start(debian_lab());
    let options = ChaosOptions {
        seed: 1,
        max_kills: 3,
        // Faster than the campaign's default: kills still land mid-file, rounds stay short.
        bwlimit_kbps: (10000, 16000),
        round_timeout: Duration::from_secs(120),
        ..ChaosOptions::default()
    };
    run_campaign(&bench, options, 3..=5);
}

/// pg-backup-api mode: kills while the API restores (and the API server restarted under a
/// polling pgreplica); each round must end with one operation into its directory and a copy
/// equal to an uninterrupted API clone.
#[test]
fn killed_anywhere_in_api_mode_resume_reattaches_to_the_one_operation() {
    let bench = Bench::start(debian_lab());
    let options = ChaosOptions {
        mode: ChaosMode::Api,
        seed: 1,
        max_kills: 3,
        round_timeout: Duration::from_secs(120),
        apiserver: Some(common::api::built_server()),
        ..ChaosOptions::default()
    };
    run_campaign(&bench, options, 1..=3);
}

/// pg_basebackup mode: kills mid-copy restart the transfer; each round must pass
/// pg_verifybackup, hold nothing outside its manifest, record each restart, and stream.
#[test]
fn killed_anywhere_in_basebackup_mode_restarts_cleanly_and_streams() {
    let bench = Bench::start(debian_lab());
    let options = ChaosOptions {
        mode: ChaosMode::BaseBackup,
        seed: 1,
        max_kills: 3,
        // pg_basebackup's --max-rate in kB/s: a copy of a few seconds, killed inside it.
        bwlimit_kbps: (8000, 16000),
        round_timeout: Duration::from_secs(120),
        start_standby: true,
        ..ChaosOptions::default()
    };
    run_campaign(&bench, options, 1..=3);
}
