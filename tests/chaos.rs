//! The kill-anywhere campaign, bounded for the test suite: three rounds of `lab::chaos` with a
//! fixed seed — pgreplica killed for real (SIGKILL of its group, SIGTERM, its rsyncs) inside
//! steps and mid-file, resumed, and each clone compared with an uninterrupted one. The long
//! campaign is `cargo xtask chaos` (docs/chaos.md).

mod common;

use common::{debian_lab, Bench};
use lab::chaos::{summary, Campaign, ChaosOptions};
use std::time::Duration;

/// Rounds 3–5 of seed 1 aim at VerifyBackup, PrepareDirs, Transfer (mid-file) and VerifyCopy,
/// with SIGKILL and SIGTERM; where each lands depends on timing, and every landing must pass.
const SEED: u64 = 1;
const ROUNDS: std::ops::RangeInclusive<u32> = 3..=5;

#[test]
fn killed_anywhere_resume_matches_an_uninterrupted_clone() {
    let bench = Bench::start(debian_lab());
    let options = ChaosOptions {
        seed: SEED,
        max_kills: 3,
        // Faster than the campaign's default: kills still land mid-file, rounds stay short.
        bwlimit_kbps: (10000, 16000),
        round_timeout: Duration::from_secs(120),
        ..ChaosOptions::default()
    };
    let campaign = Campaign::prepare(&bench.lab, &bench.binary, options)
        .unwrap_or_else(|e| panic!("reference clone: {e}"));
    let reports: Vec<_> = ROUNDS
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
                "{r}\nreplay: cargo xtask chaos --seed {SEED} --round {}",
                r.round
            )
        })
        .collect();
    assert!(failed.is_empty(), "{}", failed.join("\n"));
    let kills: usize = reports.iter().map(|r| r.kills.len()).sum();
    assert!(kills > 0, "no kill landed in {} rounds", reports.len());
}
