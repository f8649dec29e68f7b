//! `cargo xtask bench`: pgreplica side by side with the tools it replaces, on one lab, with the
//! ratios against a baseline measured in the same run — absolute seconds mean little on a shared
//! machine, ratios do. Contenders: a local `cp -a` (no network), plain `rsync -a` over ssh (the
//! baseline: the floor for any ssh+rsync tool; and with AES-GCM, pgreplica's transport), repmgr
//! 5.3.3 `standby clone` from Barman, `barman recover --jobs 1|2` (what pg-backup-api runs),
//! pgreplica `--jobs 1|2|4` with each copy engine, pgreplica's resume after a kill at 50 %, and
//! the slow-link pair (20 MB/s, with and without compression in transit); each with its wall
//! time, CPU time at both ends and peak memory. Then `clone status` on a clone of 100 000
//! files, and the staged kinds (a gzip tar backup, an incremental chain), on a PostgreSQL 18 lab
//! of their own: pgreplica against `barman restore` of the same backup.
//!
//! It measures and checks that each copy is whole; it must not tune a contender (each runs as a
//! user would run it) nor run inside the test suite.
//!
//! # Layout
//! - this module — the options, the lab and its backup ([`Bench`]), and the run: every
//!   contender in turn, round after round.
//! - `contenders` — [`Contender`]: how each tool is run, timed and checked.
//! - `process` — running a contender's programs: logged, bounded, timed, with their CPU time
//!   and peak memory; sizes on disk.
//! - `status` — `clone status` on a clone of many files.
//! - `report` — the medians, ratios, per-step times and the targets, as a table or
//!   JSON.
//! - `kinds` — the staged kinds' cases, their lab and their table.

mod contenders;
mod kinds;
mod process;
mod report;
mod status;

use std::path::{Path, PathBuf};
use std::time::Duration;

use lab::{Lab, LabOptions, REPMGR};

use self::contenders::{ssh_wrapper, write_executable, Contender, Sample};
use self::process::{run_to_end, tree_size};
use self::report::Report;
use crate::args::{Args, LabArgs};
use crate::{build_pgreplica_release, stage, Failure};

/// Usage of `cargo xtask bench`, part of the xtask usage text.
pub(crate) const USAGE: &str = "\
bench options:
  --scale N                    pgbench scale of the lab's data (default 100, about 1.5 GB)
  --repeat R                   timed runs per contender (default 3): median and min are reported
  --barman debian|pypi         Barman 3.4.0 from Debian (default) or 3.19.x from PyPI
  --status-files N             extra files in the backup `clone status` is timed on
                               (default 100000)
  --no-kinds                   leave out the staged kinds (a gzip tar backup and an incremental
                               chain, against barman restore on a PostgreSQL 18 lab)
  --quick                      a smoke run: scale 5, one run each, 10000 status files
                               (explicit options win)
  --json                       print the results as JSON instead of the table
";

const DEFAULT_SCALE: u32 = 100;
const DEFAULT_REPEAT: u32 = 3;
const DEFAULT_STATUS_FILES: u32 = 100_000;
const QUICK_SCALE: u32 = 5;
const QUICK_REPEAT: u32 = 1;
const QUICK_STATUS_FILES: u32 = 10_000;
/// Where the resume contender is killed: this share of the backup's bytes on disk.
const KILL_AT: f64 = 0.5;
/// No single run of any contender should come near this on a lab of a few GB.
const RUN_LIMIT: Duration = Duration::from_secs(1800);
const ONE_MB: f64 = 1e6;

/// What `cargo xtask bench` was asked for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct BenchOptions {
    /// The lab: Barman flavour and pgbench scale.
    pub lab: LabOptions,
    /// Timed runs per contender.
    pub repeat: u32,
    /// Extra files in the backup whose clone `clone status` is timed on.
    pub status_files: u32,
    /// Whether the staged kinds run (on a lab of their own).
    pub kinds: bool,
    /// JSON on stdout instead of the table.
    pub json: bool,
}

/// Parses the options of `cargo xtask bench` (see [`USAGE`]).
pub(crate) fn parse(args: &[String]) -> Result<BenchOptions, String> {
    let (mut repeat, mut status_files, mut quick, mut json) = (None, None, false, false);
    let mut kinds = true;
    let mut lab = LabArgs::default();
    let mut args = Args::new(args);
    while let Some(option) = args.next_option() {
        if lab.take(option, &mut args)? {
            continue;
        }
        match option {
            "--repeat" => repeat = Some(args.positive(option)?),
            "--status-files" => status_files = Some(args.positive(option)?),
            "--no-kinds" => kinds = false,
            "--quick" => quick = true,
            "--json" => json = true,
            other => return Err(format!("unknown bench option {other}")),
        }
    }
    let (default_scale, default_repeat, default_files) = if quick {
        (QUICK_SCALE, QUICK_REPEAT, QUICK_STATUS_FILES)
    } else {
        (DEFAULT_SCALE, DEFAULT_REPEAT, DEFAULT_STATUS_FILES)
    };
    Ok(BenchOptions {
        lab: lab.options(default_scale),
        repeat: repeat.unwrap_or(default_repeat),
        status_files: status_files.unwrap_or(default_files),
        kinds,
        json,
    })
}

/// The backup every contender copies.
struct Backup {
    id: String,
    /// `<barman_home>/pg/base/<id>/data` on the Barman host (this machine).
    data_dir: PathBuf,
    bytes: u64,
    files: u64,
}

/// Everything a run needs: the lab, the backup, the installed pgreplica, the repmgr wrapper.
struct Bench {
    lab: Lab,
    backup: Backup,
    pgreplica: PathBuf,
    /// A directory holding only `ssh`: the wrapper that gives repmgr the lab's ssh options.
    wrapper_bin: PathBuf,
    /// `<lab>/bench`: repmgr.conf files and run logs.
    work: PathBuf,
}

/// Runs `cargo xtask bench`.
pub(crate) fn run(options: BenchOptions) -> Result<(), Failure> {
    stage("check prerequisites", lab::bench_prerequisites)?;
    let built = build_pgreplica_release()?;
    let lab = stage("start lab", || Lab::start(options.lab.clone()))?;
    let bench = stage("prepare the bench", || Bench::new(lab, &built))?;
    eprintln!(
        "   backup {} of {:.0} MB in {} files",
        bench.backup.id,
        bench.backup.bytes as f64 / ONE_MB,
        bench.backup.files
    );
    // The first copy reads the backup from disk, the later ones from the page cache: warm it
    // so that no contender pays for it alone.
    stage("warm the page cache (untimed rsync)", || {
        bench.timed(Contender::Rsync, "warm-up")
    })?;

    let contenders = Contender::all();
    let mut samples: Vec<Vec<Sample>> = vec![Vec::new(); contenders.len()];
    // Round-robin rather than one contender after another: a noisy neighbour slows every
    // contender a little instead of one a lot.
    for round in 1..=options.repeat {
        for (contender, taken) in contenders.iter().zip(samples.iter_mut()) {
            let name = format!("{} (round {round}/{})", contender.label(), options.repeat);
            let sample = stage(&name, || bench.timed(*contender, &round.to_string()))?;
            eprintln!("   timed: {:.2} s", sample.cost.seconds);
            taken.push(sample);
        }
    }
    let status = stage(
        &format!(
            "clone status on a clone of {} more files",
            options.status_files
        ),
        || bench.status_at_scale(&options),
    )?;

    let report = Report::new(&bench, &options, &contenders, &samples, status)?;
    stage("stop lab", || bench.lab.stop())?;
    let kinds = if options.kinds {
        Some(kinds::run(&options, &built)?)
    } else {
        None
    };
    if options.json {
        let mut json = report.json();
        if let Some(kinds) = &kinds {
            json["staged_kinds"] = kinds.json();
        }
        println!(
            "{}",
            serde_json::to_string_pretty(&json).unwrap_or_default()
        );
    } else {
        print!("{}", report.table());
        if let Some(kinds) = &kinds {
            print!("{}", kinds.table());
        }
    }
    Ok(())
}

impl Bench {
    fn new(lab: Lab, built: &Path) -> Result<Bench, String> {
        let pgreplica = lab.install_binary(built);
        let work = lab.dir().join("bench");
        let wrapper_bin = work.join("ssh-wrapper");
        std::fs::create_dir_all(&wrapper_bin)
            .map_err(|e| format!("mkdir {}: {e}", wrapper_bin.display()))?;
        write_executable(&wrapper_bin.join("ssh"), &ssh_wrapper(&lab.ssh_args()))?;
        let bench = Bench {
            backup: latest_backup(&lab)?,
            lab,
            pgreplica,
            wrapper_bin,
            work,
        };
        // Registered after the backup: repmgr reads its metadata from the running primary, and
        // a second backup would cost the bench an idle primary's WAL switch (~20 s).
        bench.register_primary()?;
        Ok(bench)
    }

    /// `repmgr primary register` on the lab's primary: repmgr refuses to clone from a node
    /// where its extension is available but not installed, and a repmgr cluster has its
    /// primary registered anyway. pgreplica reads the same metadata.
    fn register_primary(&self) -> Result<(), String> {
        let conf = self.work.join("primary.conf");
        let text = self.lab.node_conf(
            1,
            "node1",
            &self.lab.primary_data_dir(),
            self.lab.primary_port(),
        );
        self.lab
            .write_file_as_postgres(&conf, &text)
            .map_err(|e| e.to_string())?;
        let mut cmd = self.lab.command_as_postgres(REPMGR);
        cmd.arg("-f").arg(&conf).args(["primary", "register"]);
        run_to_end(&mut cmd, &self.work.join("primary-register.log")).map(drop)
    }
}

/// The id and data directory of the lab's (only) backup.
fn latest_backup(lab: &Lab) -> Result<Backup, String> {
    let id = lab
        .backup_ids()
        .map_err(|e| e.to_string())?
        .into_iter()
        .next()
        .ok_or("barman list-backups shows no backup")?;
    let data_dir = lab
        .barman_home()
        .join(lab.barman_server())
        .join("base")
        .join(&id)
        .join("data");
    let (bytes, files) = tree_size(&data_dir);
    if files == 0 {
        return Err(format!(
            "the backup's data directory {} is empty",
            data_dir.display()
        ));
    }
    Ok(Backup {
        id,
        data_dir,
        bytes,
        files,
    })
}

#[cfg(test)]
mod tests {
    use crate::args::words;
    use lab::BarmanFlavor;

    use super::*;

    #[test]
    fn defaults_quick_and_explicit_options() {
        let default = parse(&[]).unwrap();
        assert_eq!(default.lab.scale, DEFAULT_SCALE);
        assert_eq!(default.repeat, DEFAULT_REPEAT);
        assert_eq!(default.lab.barman, BarmanFlavor::Debian);
        assert_eq!(default.status_files, 100_000);
        assert!(default.kinds);
        assert!(!default.json);
        // The default backup is at least 1.5 GB: pgbench scale 100 (1 ≈ 16 MB).
        assert!(default.lab.scale >= 100);

        let quick = parse(&words(&["--quick"])).unwrap();
        assert_eq!((quick.lab.scale, quick.repeat), (QUICK_SCALE, QUICK_REPEAT));
        assert_eq!(quick.status_files, QUICK_STATUS_FILES);
        assert!(quick.kinds);

        // Explicit values win over --quick, whatever their order.
        let mixed = parse(&words(&[
            "--repeat",
            "2",
            "--quick",
            "--barman",
            "pypi",
            "--json",
            "--status-files",
            "7",
            "--no-kinds",
        ]))
        .unwrap();
        assert_eq!((mixed.lab.scale, mixed.repeat), (QUICK_SCALE, 2));
        assert_eq!(mixed.status_files, 7);
        assert!(!mixed.kinds);
        assert_eq!(mixed.lab.barman, BarmanFlavor::PyPI);
        assert!(mixed.json);
        assert_eq!(parse(&words(&["--scale", "7"])).unwrap().lab.scale, 7);
    }

    #[test]
    fn bad_options_are_refused_with_the_reason() {
        for (args, reason) in [
            (&["--scale"][..], "--scale needs a value"),
            (&["--scale", "0"], "expected a positive integer"),
            (&["--repeat", "x"], "expected a positive integer"),
            (&["--status-files", "0"], "expected a positive integer"),
            (&["--no-kinds", "yes"], "unknown bench option yes"),
            (&["--barman", "conda"], "expected debian or pypi"),
            (&["--tablespace"], "unknown bench option --tablespace"),
        ] {
            let err = parse(&words(args)).unwrap_err();
            assert!(err.contains(reason), "{args:?}: {err}");
        }
    }
}
