//! `cargo xtask chaos`: the kill-anywhere campaign — pgreplica killed for real inside every
//! step and mid-file, resumed, and checked: compared with an uninterrupted clone of the same
//! backup (Barman and pg-backup-api modes), or verified against its manifest (pg_basebackup).
//! Option parsing, the build, the lab and the printing live here; the campaign itself is
//! `lab::chaos`, which `tests/chaos.rs` runs too. It must not soften a failure: any failed round
//! makes the command fail, with the round's directory kept and the command that replays it.

use std::time::{Instant, SystemTime, UNIX_EPOCH};

use lab::chaos::{summary, Campaign, ChaosMode, ChaosOptions, RoundReport};
use lab::{BackupKind, BarmanFlavor, Lab, LabOptions, PgMajor, TarCompression, KEEP_ENV};

use crate::args::{Args, LabArgs};
use crate::{stage, Failure};

/// The three copying modes, in the order `--mode all` runs them.
const ALL_MODES: [ChaosMode; 3] = [ChaosMode::Barman, ChaosMode::Api, ChaosMode::BaseBackup];

/// What `cargo xtask chaos` was asked to do.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct ChaosArgs {
    lab: LabOptions,
    /// The modes to run: one, or all three one after the other (`--mode all`).
    modes: Vec<ChaosMode>,
    rounds: u32,
    /// Run rounds until at least this many kills and faults landed, over all modes.
    kills: Option<u32>,
    /// None: a seed from the clock, printed so the campaign can be replayed.
    seed: Option<u64>,
    /// Replay this one round only.
    round: Option<u32>,
    /// Inflict faults besides the kills (`--no-faults`: kills only).
    faults: bool,
    /// `--kind`: the kind of backup every round clones (Barman mode), else the lab's plain one.
    kind: Option<BackupKind>,
}

/// The `--kind` names: each tar compression, `incremental`, `encrypted`.
const KINDS: [(&str, BackupKind); 6] = [
    ("gzip", BackupKind::Tar(TarCompression::Gzip)),
    ("lz4", BackupKind::Tar(TarCompression::Lz4)),
    ("zstd", BackupKind::Tar(TarCompression::Zstd)),
    ("none", BackupKind::Tar(TarCompression::None)),
    ("incremental", BackupKind::Incremental),
    ("encrypted", BackupKind::Encrypted),
];

/// Parses `--mode barman|api|basebackup|all`, `--kind gzip|lz4|zstd|none|incremental|encrypted`,
/// `--rounds N`, `--kills N`, `--seed S`, `--round R`, `--no-faults`, `--barman debian|pypi`,
/// `--scale N`. A kind needs Barman mode alone; its lab runs the PyPI Barman (and PostgreSQL
/// 18 for `incremental`).
pub(crate) fn parse(args: &[String]) -> Result<ChaosArgs, String> {
    let mut lab = LabArgs::default();
    let (mut modes, mut rounds, mut seed, mut round) = (vec![ChaosMode::Barman], 20, None, None);
    let (mut kills, mut faults, mut kind) = (None, true, None);
    let mut args = Args::new(args);
    while let Some(option) = args.next_option() {
        if lab.take(option, &mut args)? {
            continue;
        }
        match option {
            "--mode" => {
                let value = args.value(option)?;
                modes = match value {
                    "all" => ALL_MODES.to_vec(),
                    one => vec![ChaosMode::parse(one).ok_or_else(|| {
                        format!("--mode {value}: expected barman, api, basebackup or all")
                    })?],
                };
            }
            "--kind" => {
                let value = args.value(option)?;
                kind = Some(
                    KINDS
                        .iter()
                        .find(|(name, _)| *name == value)
                        .map(|(_, kind)| *kind)
                        .ok_or_else(|| {
                            format!("--kind {value}: expected gzip, lz4, zstd, none, incremental or encrypted")
                        })?,
                );
            }
            "--rounds" => rounds = args.positive(option)?,
            "--kills" => kills = Some(args.positive(option)?),
            "--seed" => seed = Some(args.number(option)?),
            "--round" => round = Some(args.number(option)?),
            "--no-faults" => faults = false,
            other => return Err(format!("unknown option {other}")),
        }
    }
    if round.is_some() && seed.is_none() {
        return Err("--round replays a round of a campaign: give its --seed".into());
    }
    if round.is_some() && modes.len() > 1 {
        return Err("--round replays a round of one mode: give its --mode".into());
    }
    if kind.is_some() && modes != [ChaosMode::Barman] {
        return Err(
            "--kind needs --mode barman (pg-backup-api and pg_basebackup restore every kind alike)"
                .into(),
        );
    }
    let mut lab = lab.options(LabOptions::default().scale);
    if let Some(kind) = kind {
        lab.barman = BarmanFlavor::PyPI;
        if kind == BackupKind::Incremental {
            lab.postgres = PgMajor::V18;
        }
    }
    Ok(ChaosArgs {
        lab,
        modes,
        rounds,
        kills,
        seed,
        round,
        faults,
        kind,
    })
}

/// Runs `cargo xtask chaos`.
pub(crate) fn run(args: ChaosArgs) -> Result<(), Failure> {
    let began = Instant::now();
    let seed = args.seed.unwrap_or_else(|| {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(1, |d| d.as_secs())
    });
    let names: Vec<&str> = args.modes.iter().map(|m| m.label()).collect();
    let extent = match (args.round, args.kills) {
        (Some(round), _) => format!("round {round}"),
        (None, Some(kills)) => {
            format!("rounds until {kills} kills and faults, shared by the modes")
        }
        (None, None) => format!("{} round(s) per mode", args.rounds),
    };
    println!(
        "chaos: {} mode(s){}, seed {seed}, {extent}, {}, Barman {:?}, pgbench scale {}",
        names.join(", "),
        kind_option(args.kind),
        if args.faults {
            "kills and faults"
        } else {
            "kills only"
        },
        args.lab.barman,
        args.lab.scale
    );
    let built = crate::build_pgreplica_release()?;
    let apiserver = match args.modes.contains(&ChaosMode::Api) {
        true => Some(crate::build_release(
            "pgreplica-apiserver",
            "pgreplica-apiserver",
        )?),
        false => None,
    };

    let lab = stage("start lab", || Lab::start(args.lab.clone()))?;
    eprintln!("   lab in {}", lab.dir().display());
    let pgreplica = lab.install_binary(&built);
    // One mode after the other, each with its own reference made just before its rounds: a
    // pg_basebackup round completes WAL segments that Barman archives, and `barman recover`
    // (pg-backup-api mode) restores every archived segment, so the modes must not interleave.
    let share = args
        .kills
        .map(|k| k.div_ceil(args.modes.len() as u32) as usize);
    let mut reports: Vec<RoundReport> = Vec::new();
    for &mode in &args.modes {
        let options = ChaosOptions {
            mode,
            seed,
            apiserver: apiserver.clone(),
            // pg_basebackup's --max-rate (kB/s): a scale-1 copy of a few seconds.
            bwlimit_kbps: match mode {
                ChaosMode::BaseBackup => (4000, 16000),
                ChaosMode::Barman | ChaosMode::Api => ChaosOptions::default().bwlimit_kbps,
            },
            // Each pg_basebackup round's result must start as a standby and stream.
            start_standby: mode == ChaosMode::BaseBackup,
            faults: args.faults,
            kind: args.kind,
            ..ChaosOptions::default()
        };
        let prepare = match mode {
            ChaosMode::Barman | ChaosMode::Api => {
                format!("{} reference clone (uninterrupted)", mode.label())
            }
            ChaosMode::BaseBackup => {
                "pg_basebackup campaign (no reference: each pg_basebackup is a new backup)"
                    .to_string()
            }
        };
        let campaign = stage(&prepare, || Campaign::prepare(&lab, &pgreplica, options))?;
        match mode {
            ChaosMode::Barman | ChaosMode::Api => println!(
                "chaos: every {} round clones backup {}",
                mode.label(),
                campaign.backup_id()
            ),
            ChaosMode::BaseBackup => {
                println!("chaos: every pg_basebackup round runs pg_basebackup from the primary")
            }
        }
        let mut round = args.round.unwrap_or(1);
        let mut landed = 0;
        loop {
            let report = campaign.run_round(round);
            println!("{report}");
            landed += report.kills.len();
            reports.push(report);
            let done = match (args.round, share) {
                (Some(_), _) => true,
                (None, Some(share)) => landed >= share,
                (None, None) => round >= args.rounds,
            };
            if done {
                break;
            }
            round += 1;
        }
    }
    for mode in &args.modes {
        let of_mode: Vec<RoundReport> = reports
            .iter()
            .filter(|r| r.mode == *mode)
            .map(RoundReport::clone)
            .collect();
        print!("{}", summary(&of_mode));
    }
    println!("{}", totals(&reports, seed, began.elapsed()));
    let failed: Vec<_> = reports.iter().filter(|r| r.outcome.is_err()).collect();
    if failed.is_empty() {
        println!("chaos: OK");
        return Ok(());
    }
    let barman = match args.lab.barman {
        BarmanFlavor::Debian => "",
        BarmanFlavor::PyPI => " --barman pypi",
    };
    let faults = if args.faults { "" } else { " --no-faults" };
    let replays: Vec<String> = failed
        .iter()
        .map(|r| {
            format!(
                "  round {}: cargo xtask chaos --mode {}{} --seed {seed} --round {}{barman}{faults} --scale {}   (kept {})",
                r.round,
                r.mode.name(),
                kind_option(args.kind),
                r.round,
                args.lab.scale,
                r.data_dir.display()
            )
        })
        .collect();
    // The failing rounds' directories live in the lab's: keep it (its daemons still stop).
    std::env::set_var(KEEP_ENV, "1");
    drop(lab);
    Err(Failure::new(
        "chaos",
        format!(
            "{} round(s) failed; replay with:\n{}",
            failed.len(),
            replays.join("\n")
        ),
    ))
}

/// ` --kind NAME` for a campaign of that kind, else nothing.
fn kind_option(kind: Option<BackupKind>) -> String {
    KINDS
        .iter()
        .find(|(_, k)| Some(*k) == kind)
        .map(|(name, _)| format!(" --kind {name}"))
        .unwrap_or_default()
}

/// The campaign's last line: rounds, kills and faults over all modes, what failed — data
/// directories that differ from the uninterrupted clone, extra pg-backup-api operations —,
/// the seed and how long it took.
fn totals(reports: &[RoundReport], seed: u64, took: std::time::Duration) -> String {
    let all = || reports.iter().flat_map(|r| &r.kills);
    let faults = all().filter(|k| k.action.is_fault()).count();
    let kills = all().count() - faults;
    let failed: Vec<&str> = reports
        .iter()
        .filter_map(|r| r.outcome.as_ref().err().map(String::as_str))
        .collect();
    let differing = failed
        .iter()
        .filter(|why| why.contains("differ from the uninterrupted clone"))
        .count();
    let extra_operations = failed
        .iter()
        .filter(|why| why.contains("recovery operations into"))
        .count();
    format!(
        "all modes: {} round(s), {} failed; {kills} kill(s) and {faults} fault(s); {differing} data directories differ from an uninterrupted clone; {extra_operations} round(s) with extra pg-backup-api operations; seed {seed}; {:.0} s",
        reports.len(),
        failed.len(),
        took.as_secs_f64()
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::args::words;

    #[test]
    fn options_parse() {
        let parsed = parse(&words(&[
            "--rounds", "5", "--seed", "42", "--barman", "pypi", "--scale", "2",
        ]))
        .unwrap_or_else(|f| panic!("{f}"));
        assert_eq!(parsed.rounds, 5);
        assert_eq!(parsed.seed, Some(42));
        assert_eq!(parsed.lab.barman, BarmanFlavor::PyPI);
        assert_eq!(parsed.lab.scale, 2);
        let replay =
            parse(&words(&["--seed", "42", "--round", "7"])).unwrap_or_else(|f| panic!("{f}"));
        assert_eq!(replay.round, Some(7));
        assert_eq!(parse(&[]).map(|p| p.rounds).ok(), Some(20));
        assert_eq!(
            parse(&[]).map(|p| p.modes).ok(),
            Some(vec![ChaosMode::Barman])
        );
        assert!(parse(&[]).is_ok_and(|p| p.faults && p.kills.is_none()));
        let long = parse(&words(&["--mode", "all", "--kills", "1000", "--no-faults"]))
            .unwrap_or_else(|f| panic!("{f}"));
        assert_eq!(long.modes, ALL_MODES);
        assert_eq!((long.kills, long.faults), (Some(1000), false));
        for (name, mode) in [
            ("barman", ChaosMode::Barman),
            ("api", ChaosMode::Api),
            ("basebackup", ChaosMode::BaseBackup),
        ] {
            let parsed = parse(&words(&["--mode", name])).unwrap_or_else(|f| panic!("{f}"));
            assert_eq!(parsed.modes, [mode]);
        }
        for (name, kind) in KINDS {
            let parsed = parse(&words(&["--kind", name])).unwrap_or_else(|f| panic!("{f}"));
            assert_eq!(parsed.kind, Some(kind));
            assert_eq!(parsed.lab.barman, BarmanFlavor::PyPI);
            assert_eq!(kind_option(parsed.kind), format!(" --kind {name}"));
        }
        assert_eq!(
            parse(&words(&["--kind", "incremental"]))
                .map(|p| p.lab.postgres)
                .ok(),
            Some(PgMajor::V18)
        );
        for (bad, why) in [
            (
                &["--kind", "bzip2"][..],
                "--kind bzip2: expected gzip, lz4, zstd, none, incremental or encrypted",
            ),
            (
                &["--kind", "gzip", "--mode", "api"],
                "--kind needs --mode barman (pg-backup-api and pg_basebackup restore every kind alike)",
            ),
            (
                &["--mode", "all", "--kind", "lz4"],
                "--kind needs --mode barman (pg-backup-api and pg_basebackup restore every kind alike)",
            ),
            (
                &["--rounds", "0"][..],
                "--rounds 0: expected a positive integer",
            ),
            (
                &["--round", "3"],
                "--round replays a round of a campaign: give its --seed",
            ),
            (&["--seed", "x"], "--seed x: expected a number"),
            (&["--seed"], "--seed needs a value"),
            (&["--scale", "0"], "--scale 0: expected a positive integer"),
            (&["--tablespace"], "unknown option --tablespace"),
            (
                &["--mode", "tar"],
                "--mode tar: expected barman, api, basebackup or all",
            ),
            (
                &["--mode", "all", "--seed", "1", "--round", "2"],
                "--round replays a round of one mode: give its --mode",
            ),
            (&["--kills", "0"], "--kills 0: expected a positive integer"),
        ] {
            assert_eq!(parse(&words(bad)).err().as_deref(), Some(why), "{bad:?}");
        }
    }
}
