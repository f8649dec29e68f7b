//! `cargo xtask chaos`: the kill-anywhere campaign — pgreplica killed for real inside every
//! step and mid-file, resumed, and checked: compared with an uninterrupted clone of the same
//! backup (Barman and pg-backup-api modes), or verified against its manifest (pg_basebackup).
//! Option parsing, the build, the lab and the printing live here; the campaign itself is
//! `lab::chaos`, which `tests/chaos.rs` runs too. It must not soften a failure: any failed round
//! makes the command fail, with the round's directory kept and the command that replays it.

use std::time::{SystemTime, UNIX_EPOCH};

use lab::chaos::{summary, Campaign, ChaosMode, ChaosOptions};
use lab::{BackupKind, BarmanFlavor, Lab, LabOptions, PgMajor, TarCompression, KEEP_ENV};

use crate::args::{Args, LabArgs};
use crate::{stage, Failure};

/// What `cargo xtask chaos` was asked to do.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct ChaosArgs {
    lab: LabOptions,
    mode: ChaosMode,
    rounds: u32,
    /// None: a seed from the clock, printed so the campaign can be replayed.
    seed: Option<u64>,
    /// Replay this one round only.
    round: Option<u32>,
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

/// Parses `--mode barman|api|basebackup`, `--kind gzip|lz4|zstd|none|incremental|encrypted`,
/// `--rounds N`, `--seed S`, `--round R`, `--barman debian|pypi`, `--scale N`. A kind needs
/// Barman mode; its lab runs the PyPI Barman (and PostgreSQL 18 for `incremental`).
pub(crate) fn parse(args: &[String]) -> Result<ChaosArgs, String> {
    let mut lab = LabArgs::default();
    let (mut mode, mut rounds, mut seed, mut round) = (ChaosMode::Barman, 20, None, None);
    let mut kind = None;
    let mut args = Args::new(args);
    while let Some(option) = args.next_option() {
        if lab.take(option, &mut args)? {
            continue;
        }
        match option {
            "--mode" => {
                let value = args.value(option)?;
                mode = ChaosMode::parse(value)
                    .ok_or_else(|| format!("--mode {value}: expected barman, api or basebackup"))?;
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
            "--seed" => seed = Some(args.number(option)?),
            "--round" => round = Some(args.number(option)?),
            other => return Err(format!("unknown option {other}")),
        }
    }
    if round.is_some() && seed.is_none() {
        return Err("--round replays a round of a campaign: give its --seed".into());
    }
    if kind.is_some() && mode != ChaosMode::Barman {
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
        mode,
        rounds,
        seed,
        round,
        kind,
    })
}

/// Runs `cargo xtask chaos`.
pub(crate) fn run(args: ChaosArgs) -> Result<(), Failure> {
    let seed = args.seed.unwrap_or_else(|| {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(1, |d| d.as_secs())
    });
    let rounds: Vec<u32> = match args.round {
        Some(round) => vec![round],
        None => (1..=args.rounds).collect(),
    };
    println!(
        "chaos: {} mode{}, seed {seed}, {} round(s), Barman {:?}, pgbench scale {}",
        args.mode.label(),
        kind_option(args.kind),
        rounds.len(),
        args.lab.barman,
        args.lab.scale
    );
    let built = crate::build_pgreplica_release()?;
    let apiserver = match args.mode {
        ChaosMode::Api => Some(crate::build_release(
            "pgreplica-apiserver",
            "pgreplica-apiserver",
        )?),
        ChaosMode::Barman | ChaosMode::BaseBackup => None,
    };

    let lab = stage("start lab", || Lab::start(args.lab.clone()))?;
    eprintln!("   lab in {}", lab.dir().display());
    let pgreplica = lab.install_binary(&built);
    let options = ChaosOptions {
        mode: args.mode,
        seed,
        apiserver,
        // pg_basebackup's --max-rate (kB/s): a scale-1 copy of a few seconds.
        bwlimit_kbps: match args.mode {
            ChaosMode::BaseBackup => (4000, 16000),
            ChaosMode::Barman | ChaosMode::Api => ChaosOptions::default().bwlimit_kbps,
        },
        // Each pg_basebackup round's result must start as a standby and stream.
        start_standby: args.mode == ChaosMode::BaseBackup,
        kind: args.kind,
        ..ChaosOptions::default()
    };
    let prepare = match args.mode {
        ChaosMode::Barman | ChaosMode::Api => "reference clone (uninterrupted)",
        ChaosMode::BaseBackup => "campaign (no reference: each pg_basebackup is a new backup)",
    };
    let campaign = stage(prepare, || Campaign::prepare(&lab, &pgreplica, options))?;
    match args.mode {
        ChaosMode::Barman | ChaosMode::Api => {
            println!("chaos: every round clones backup {}", campaign.backup_id());
        }
        ChaosMode::BaseBackup => println!("chaos: every round runs pg_basebackup from the primary"),
    }

    let mut reports = Vec::new();
    for round in rounds {
        let report = campaign.run_round(round);
        println!("{report}");
        reports.push(report);
    }
    print!("{}", summary(&reports));
    let failed: Vec<_> = reports.iter().filter(|r| r.outcome.is_err()).collect();
    if failed.is_empty() {
        println!("chaos: OK");
        return Ok(());
    }
    let barman = match args.lab.barman {
        BarmanFlavor::Debian => "",
        BarmanFlavor::PyPI => " --barman pypi",
    };
    let replays: Vec<String> = failed
        .iter()
        .map(|r| {
            format!(
                "  round {}: cargo xtask chaos --mode {}{} --seed {seed} --round {}{barman} --scale {}   (kept {})",
                r.round,
                args.mode.name(),
                kind_option(args.kind),
                r.round,
                args.lab.scale,
                r.data_dir.display()
            )
        })
        .collect();
    // The failing rounds' directories live in the lab's: keep it (its daemons still stop).
    std::env::set_var(KEEP_ENV, "1");
    drop(campaign);
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
        assert_eq!(parse(&[]).map(|p| p.mode).ok(), Some(ChaosMode::Barman));
        for (name, mode) in [
            ("barman", ChaosMode::Barman),
            ("api", ChaosMode::Api),
            ("basebackup", ChaosMode::BaseBackup),
        ] {
            let parsed = parse(&words(&["--mode", name])).unwrap_or_else(|f| panic!("{f}"));
            assert_eq!(parsed.mode, mode);
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
                "--mode tar: expected barman, api or basebackup",
            ),
        ] {
            assert_eq!(parse(&words(bad)).err().as_deref(), Some(why), "{bad:?}");
        }
    }
}
