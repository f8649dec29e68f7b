//! `cargo xtask bench`: pgreplica side by side with the tools it replaces, on one lab, with the
//! ratios against a baseline measured in the same run — absolute seconds mean little on a shared
//! machine, ratios do. Contenders: plain `rsync -a` over ssh (the baseline: the floor for any
//! ssh+rsync tool), repmgr 5.3.3 `standby clone` from Barman, `barman recover --jobs 1|2` (what
//! pg-backup-api runs), pgreplica `--jobs 1|2|4`, and pgreplica's resume after a kill at 50 %.
//!
//! It measures and checks that each copy is whole; it must not tune a contender (each runs as a
//! user would run it) nor run inside the test suite.

use std::fmt::Write as _;
use std::fs::File;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use lab::{BarmanFlavor, Lab, LabOptions, PG_BIN, REPMGR};
use serde_json::{json, Value};

use crate::{build_pgreplica_release, stage, Failure};

/// Usage of `cargo xtask bench`, part of the xtask usage text.
pub(crate) const USAGE: &str = "\
bench options:
  --scale N                    pgbench scale of the lab's data (default 20, about 320 MB)
  --repeat R                   timed runs per contender (default 3): median and min are reported
  --barman debian|pypi         Barman 3.4.0 from Debian (default) or 3.19.x from PyPI
  --quick                      a smoke run: scale 5, one run each (explicit options win)
  --json                       print the results as JSON instead of the table
";

const DEFAULT_SCALE: u32 = 20;
const DEFAULT_REPEAT: u32 = 3;
const QUICK_SCALE: u32 = 5;
const QUICK_REPEAT: u32 = 1;
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
    /// JSON on stdout instead of the table.
    pub json: bool,
}

/// Parses the options of `cargo xtask bench` (see [`USAGE`]).
pub(crate) fn parse(args: &[String]) -> Result<BenchOptions, String> {
    let (mut scale, mut repeat, mut quick, mut json) = (None, None, false, false);
    let mut barman = BarmanFlavor::Debian;
    let mut args = args.iter();
    let positive = |flag: &str, value: Option<&String>| -> Result<u32, String> {
        let value = value.ok_or_else(|| format!("{flag} needs a value"))?;
        value
            .parse()
            .ok()
            .filter(|&n| n > 0)
            .ok_or_else(|| format!("{flag} {value}: expected a positive integer"))
    };
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--scale" => scale = Some(positive("--scale", args.next())?),
            "--repeat" => repeat = Some(positive("--repeat", args.next())?),
            "--barman" => {
                let value = args.next().ok_or("--barman needs a value")?;
                barman = BarmanFlavor::parse(value)
                    .ok_or_else(|| format!("--barman {value}: expected debian or pypi"))?;
            }
            "--quick" => quick = true,
            "--json" => json = true,
            other => return Err(format!("unknown bench option {other}")),
        }
    }
    let (default_scale, default_repeat) = if quick {
        (QUICK_SCALE, QUICK_REPEAT)
    } else {
        (DEFAULT_SCALE, DEFAULT_REPEAT)
    };
    Ok(BenchOptions {
        lab: LabOptions {
            barman,
            tablespace: false,
            scale: scale.unwrap_or(default_scale),
        },
        repeat: repeat.unwrap_or(default_repeat),
        json,
    })
}

/// One way of cloning the backup into a fresh directory.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Contender {
    /// `rsync -a` over ssh of the backup's data directory: the baseline.
    Rsync,
    /// `repmgr standby clone` in Barman mode.
    Repmgr,
    /// `barman recover --remote-ssh-command … --jobs N`, pushing to the standby host.
    BarmanRecover { jobs: u32 },
    /// `pgreplica clone start --jobs N`.
    Pgreplica { jobs: u32 },
    /// `pgreplica clone start --jobs N`, SIGKILLed at [`KILL_AT`], then `clone resume`: only
    /// the resume is timed.
    Resume { jobs: u32 },
}

impl Contender {
    /// Every contender, in the order of the table.
    const ALL: [Contender; 8] = [
        Contender::Rsync,
        Contender::Repmgr,
        Contender::BarmanRecover { jobs: 1 },
        Contender::BarmanRecover { jobs: 2 },
        Contender::Pgreplica { jobs: 1 },
        Contender::Pgreplica { jobs: 2 },
        Contender::Pgreplica { jobs: 4 },
        Contender::Resume { jobs: 1 },
    ];

    fn label(self) -> String {
        match self {
            Contender::Rsync => "rsync -a over ssh (baseline)".to_string(),
            Contender::Repmgr => "repmgr standby clone".to_string(),
            Contender::BarmanRecover { jobs } => format!("barman recover --jobs {jobs}"),
            Contender::Pgreplica { jobs } => format!("pgreplica --jobs {jobs}"),
            Contender::Resume { jobs } => format!("pgreplica resume at 50% (-j{jobs})"),
        }
    }

    /// A short name for directories, logs and JSON.
    fn key(self) -> String {
        match self {
            Contender::Rsync => "rsync".to_string(),
            Contender::Repmgr => "repmgr".to_string(),
            Contender::BarmanRecover { jobs } => format!("barman-recover-j{jobs}"),
            Contender::Pgreplica { jobs } => format!("pgreplica-j{jobs}"),
            Contender::Resume { jobs } => format!("pgreplica-resume-j{jobs}"),
        }
    }
}

/// One timed run.
#[derive(Clone, Debug)]
struct Sample {
    seconds: f64,
    /// Resume only: bytes the resume sent again and kept, and bytes on disk at the kill.
    resume: Option<ResumeFacts>,
    /// pgreplica only: seconds per step, from the clone's own history, in order.
    steps: Vec<(String, f64)>,
}

#[derive(Clone, Copy, Debug)]
struct ResumeFacts {
    resent: u64,
    /// Bytes of the files in flight at the kill that the resume kept and completed.
    kept: u64,
    on_disk_at_kill: u64,
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

    let mut samples: Vec<Vec<Sample>> = vec![Vec::new(); Contender::ALL.len()];
    // Round-robin rather than one contender after another: a noisy neighbour slows every
    // contender a little instead of one a lot.
    for round in 1..=options.repeat {
        for (contender, taken) in Contender::ALL.iter().zip(samples.iter_mut()) {
            let name = format!("{} (round {round}/{})", contender.label(), options.repeat);
            let sample = stage(&name, || bench.timed(*contender, &round.to_string()))?;
            eprintln!("   timed: {:.2} s", sample.seconds);
            taken.push(sample);
        }
    }

    let report = Report::new(&bench, &options, &samples)?;
    if options.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&report.json()).unwrap_or_default()
        );
    } else {
        print!("{}", report.table());
    }
    stage("stop lab", || bench.lab.stop())?;
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

    /// One run of `contender` into a fresh directory: timed, checked, then removed.
    fn timed(&self, contender: Contender, round: &str) -> Result<Sample, String> {
        let dest = self.lab.new_dir(&contender.key());
        let log = self.work.join(format!("{}-{round}.log", contender.key()));
        // Writes of the previous run still in the page cache would be flushed during this one.
        sync()?;
        let sample = match contender {
            Contender::Rsync => self.run_rsync(&dest, &log),
            Contender::Repmgr => self.run_repmgr(&dest, &log),
            Contender::BarmanRecover { jobs } => self.run_barman_recover(&dest, &log, jobs),
            Contender::Pgreplica { jobs } => self.run_pgreplica(&dest, &log, jobs),
            Contender::Resume { jobs } => self.run_resume(&dest, &log, jobs),
        }
        .and_then(|sample| self.check_whole(&dest).map(|()| sample))
        .map_err(|e| format!("{e}\n(log: {})", log.display()))?;
        std::fs::remove_dir_all(&dest).map_err(|e| format!("rm -r {}: {e}", dest.display()))?;
        Ok(sample)
    }

    fn run_rsync(&self, dest: &Path, log: &Path) -> Result<Sample, String> {
        let rsh = std::iter::once(lab_ssh())
            .chain(self.lab.ssh_args())
            .map(|word| lab::shell_quote(&word))
            .collect::<Vec<_>>()
            .join(" ");
        let source = format!(
            "{}:{}/",
            self.lab.barman_ssh_host(),
            self.backup.data_dir.display()
        );
        let mut cmd = self.lab.command_as_postgres("/usr/bin/rsync");
        cmd.args(["-a", "-e", &rsh, &source])
            .arg(format!("{}/", dest.display()));
        run_to_end(&mut cmd, log).map(Sample::plain)
    }

    fn run_repmgr(&self, dest: &Path, log: &Path) -> Result<Sample, String> {
        let conf = self.repmgr_conf(dest)?;
        let mut cmd = self.lab.command_as_postgres(REPMGR);
        // repmgr applies no ssh options to its Barman calls nor to its rsync: it runs plain
        // `ssh`, so the wrapper first on PATH is how it reaches the lab's sshd.
        cmd.env(
            "PATH",
            format!(
                "{}:{PG_BIN}:/usr/local/bin:/usr/bin:/bin",
                self.wrapper_bin.display()
            ),
        )
        .arg("-f")
        .arg(&conf)
        .args(self.lab.source_args())
        .args(["standby", "clone"]);
        run_to_end(&mut cmd, log).map(Sample::plain)
    }

    fn run_barman_recover(&self, dest: &Path, log: &Path, jobs: u32) -> Result<Sample, String> {
        let mut cmd = self.lab.barman_command([
            "recover",
            "--remote-ssh-command",
            &self.lab.barman_remote_ssh_command(),
            "--jobs",
            &jobs.to_string(),
            self.lab.barman_server(),
            &self.backup.id,
        ]);
        cmd.arg(dest);
        run_to_end(&mut cmd, log).map(Sample::plain)
    }

    fn run_pgreplica(&self, dest: &Path, log: &Path, jobs: u32) -> Result<Sample, String> {
        let mut cmd = self.pgreplica_start(dest, jobs)?;
        let seconds = run_to_end(&mut cmd, log)?;
        let status = self.check_verified(dest)?;
        Ok(Sample {
            steps: step_times(&status),
            ..Sample::plain(seconds)
        })
    }

    /// Starts a clone, SIGKILLs its process group once half the backup is on disk, waits for
    /// every process of it to be gone, then times `clone resume`.
    fn run_resume(&self, dest: &Path, log: &Path, jobs: u32) -> Result<Sample, String> {
        let mut cmd = self.pgreplica_start(dest, jobs)?;
        // Its own process group, so the kill reaches runuser, pgreplica and the guardians alike.
        cmd.process_group(0);
        let mut child = spawn_logged(&mut cmd, log)?;
        let target = (self.backup.bytes as f64 * KILL_AT) as u64;
        let deadline = Instant::now() + RUN_LIMIT;
        let on_disk_at_kill = loop {
            if let Some(status) = child.try_wait().map_err(|e| format!("wait: {e}"))? {
                return Err(format!(
                    "pgreplica ended ({status}) before {:.0} % of the backup was copied; \
                     the kill point cannot be reached on so small a lab",
                    KILL_AT * 100.0
                ));
            }
            let on_disk = tree_size(dest).0;
            if on_disk >= target {
                break on_disk;
            }
            if Instant::now() > deadline {
                kill_group(&mut child);
                return Err(format!("no {KILL_AT} of the backup within {RUN_LIMIT:?}"));
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        kill_group(&mut child);
        self.wait_stopped(dest)?;

        let mut resume = self.lab.command_as_postgres(&self.pgreplica);
        resume.args(["clone", "resume"]).arg(dest);
        let seconds = run_to_end(&mut resume, &log.with_extension("resume.log"))?;
        let status = self.check_verified(dest)?;
        let transfer = |key: &str| {
            status["record"]["facts"]["transfer"][key]
                .as_u64()
                .ok_or_else(|| format!("no transfer.{key} in the clone's status: {status}"))
        };
        Ok(Sample {
            seconds,
            resume: Some(ResumeFacts {
                resent: transfer("bytes_sent")?,
                kept: transfer("bytes_kept")?,
                on_disk_at_kill,
            }),
            steps: Vec::new(),
        })
    }

    /// `pgreplica clone start -f CONF -h … --jobs N` as postgres, for a clone into `dest`.
    fn pgreplica_start(&self, dest: &Path, jobs: u32) -> Result<Command, String> {
        let conf = self.repmgr_conf(dest)?;
        let mut cmd = self.lab.command_as_postgres(&self.pgreplica);
        cmd.args(["clone", "start", "-f"])
            .arg(&conf)
            .args(self.lab.source_args())
            .args(["--jobs", &jobs.to_string()]);
        Ok(cmd)
    }

    /// A repmgr.conf for a standby in `dest`, beside the run's logs.
    fn repmgr_conf(&self, dest: &Path) -> Result<PathBuf, String> {
        let name = dest
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "standby".to_string());
        let path = self.work.join(format!("{name}.conf"));
        let text = self.lab.repmgr_conf(2, "node2", dest, lab::free_port());
        self.lab
            .write_file_as_postgres(&path, &text)
            .map_err(|e| e.to_string())?;
        Ok(path)
    }

    /// The clone's `clone status --json` entry.
    fn clone_status(&self, dest: &Path) -> Result<Value, String> {
        let out = self
            .lab
            .command_as_postgres(&self.pgreplica)
            .args(["clone", "status", "--json"])
            .arg(dest)
            .output()
            .map_err(|e| format!("pgreplica clone status: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "pgreplica clone status {} failed: {}",
                dest.display(),
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        let all: Value = serde_json::from_slice(&out.stdout)
            .map_err(|e| format!("clone status --json is not JSON: {e}"))?;
        Ok(all["clones"][0].clone())
    }

    /// The clone is Done and VerifyCopy checked every file against the backup manifest.
    fn check_verified(&self, dest: &Path) -> Result<Value, String> {
        let status = self.clone_status(dest)?;
        let files = status["record"]["facts"]["verification"]["Verified"]["files"].as_u64();
        match (status["phase"].as_str(), files) {
            (Some("Done"), Some(files)) if files > 0 => Ok(status),
            _ => Err(format!(
                "the clone in {} is not Done and verified: phase {}, verification {}",
                dest.display(),
                status["phase"],
                status["record"]["facts"]["verification"]
            )),
        }
    }

    /// Waits until no process of the killed clone holds it: guardians exit once their rsyncs
    /// are gone, a moment after the kill.
    fn wait_stopped(&self, dest: &Path) -> Result<(), String> {
        lab::wait_for("killed clone stops", Duration::from_secs(30), || {
            let status = self
                .clone_status(dest)
                .map_err(|e| lab::LabError::new("clone status", e))?;
            Ok(status["running"] == false)
        })
        .map_err(|e| e.to_string())
    }

    /// Whatever the tool, the copy must be whole: pg_control present and at least the backup's
    /// bytes on disk (repmgr ignores rsync's exit status, so its success proves nothing).
    fn check_whole(&self, dest: &Path) -> Result<(), String> {
        if !dest.join("global/pg_control").is_file() {
            return Err(format!("{} has no global/pg_control", dest.display()));
        }
        let (bytes, _) = tree_size(dest);
        // WAL and configuration differ between tools; the relation files must all be there.
        if (bytes as f64) < self.backup.bytes as f64 * 0.95 {
            return Err(format!(
                "{} holds {bytes} bytes, the backup {}: the copy is incomplete",
                dest.display(),
                self.backup.bytes
            ));
        }
        Ok(())
    }
}

impl Sample {
    fn plain(seconds: f64) -> Sample {
        Sample {
            seconds,
            resume: None,
            steps: Vec::new(),
        }
    }
}

/// Seconds per step of a clone, from the `history` of its `clone status --json` entry.
fn step_times(status: &Value) -> Vec<(String, f64)> {
    let mut steps: Vec<(String, f64)> = Vec::new();
    for transition in status["history"].as_array().into_iter().flatten() {
        let step = match &transition["step"] {
            Value::String(name) => name.clone(),
            other => other.to_string(),
        };
        let (Some(start), Some(end)) = (
            transition["started_at"].as_u64(),
            transition["ended_at"].as_u64(),
        ) else {
            continue;
        };
        let seconds = end.saturating_sub(start) as f64 / 1000.0;
        match steps.iter_mut().find(|(name, _)| *name == step) {
            Some((_, total)) => *total += seconds,
            None => steps.push((step, seconds)),
        }
    }
    steps
}

/// The id and data directory of the lab's (only) backup.
fn latest_backup(lab: &Lab) -> Result<Backup, String> {
    let out = lab
        .barman(["list-backups", "--minimal", lab.barman_server()])
        .map_err(|e| e.to_string())?;
    let ids = String::from_utf8_lossy(&out.stdout);
    let id = ids
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .ok_or_else(|| format!("barman list-backups shows no backup: {ids:?}"))?
        .to_string();
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

/// The lab's ssh client: the wrapper execs it by absolute path, so it cannot find itself.
fn lab_ssh() -> String {
    "/usr/bin/ssh".to_string()
}

/// The `ssh` wrapper for repmgr: the lab's options, then whatever repmgr or its rsync pass.
///
/// repmgr has no way to give ssh options to its Barman calls (`ssh <barman_host> barman …`) or
/// to the rsync it runs; its users put them in `~/.ssh/config`. The bench must not touch any
/// home directory, so this wrapper comes first on PATH in repmgr's environment only.
fn ssh_wrapper(ssh_args: &[String]) -> String {
    let words = std::iter::once(lab_ssh())
        .chain(ssh_args.iter().cloned())
        .map(|word| lab::shell_quote(&word))
        .collect::<Vec<_>>()
        .join(" ");
    format!(
        "#!/bin/sh\n\
         # Written by `cargo xtask bench`: repmgr takes no ssh options for Barman.\n\
         exec {words} \"$@\"\n"
    )
}

fn write_executable(path: &Path, text: &str) -> Result<(), String> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(path, text).map_err(|e| format!("write {}: {e}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755))
        .map_err(|e| format!("chmod {}: {e}", path.display()))
}

/// `sync`: flushes dirty pages so a run does not pay for the previous one's writes.
fn sync() -> Result<(), String> {
    let status = Command::new("/usr/bin/sync")
        .status()
        .map_err(|e| format!("sync: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("sync failed ({status})"))
    }
}

/// Bytes and number of the regular files under `dir` (symlinks not followed); 0 when missing.
fn tree_size(dir: &Path) -> (u64, u64) {
    let mut total = (0, 0);
    let Ok(entries) = std::fs::read_dir(dir) else {
        return total;
    };
    for entry in entries.flatten() {
        // A file renamed or removed under our feet (rsync's temporaries) is simply skipped.
        let Ok(meta) = entry.path().symlink_metadata() else {
            continue;
        };
        if meta.is_dir() {
            let (bytes, files) = tree_size(&entry.path());
            total = (total.0 + bytes, total.1 + files);
        } else if meta.is_file() {
            total = (total.0 + meta.len(), total.1 + 1);
        }
    }
    total
}

fn spawn_logged(cmd: &mut Command, log: &Path) -> Result<Child, String> {
    let out = File::create(log).map_err(|e| format!("create {}: {e}", log.display()))?;
    let err = out
        .try_clone()
        .map_err(|e| format!("dup {}: {e}", log.display()))?;
    cmd.stdin(Stdio::null())
        .stdout(Stdio::from(out))
        .stderr(Stdio::from(err))
        .spawn()
        .map_err(|e| format!("cannot run {}: {e}", shown(cmd)))
}

/// Runs `cmd` with its output in `log`; its wall time in seconds when it exits 0.
fn run_to_end(cmd: &mut Command, log: &Path) -> Result<f64, String> {
    let began = Instant::now();
    let mut child = spawn_logged(cmd, log)?;
    let status = wait_limited(&mut child, cmd)?;
    let seconds = began.elapsed().as_secs_f64();
    if status.success() {
        Ok(seconds)
    } else {
        Err(format!(
            "{} failed ({status}):\n{}",
            shown(cmd),
            log_tail(log, 20)
        ))
    }
}

/// Waits for `child`; polling keeps the measured time within a few milliseconds of its exit.
fn wait_limited(child: &mut Child, cmd: &Command) -> Result<ExitStatus, String> {
    let deadline = Instant::now() + RUN_LIMIT;
    loop {
        if let Some(status) = child.try_wait().map_err(|e| format!("wait: {e}"))? {
            return Ok(status);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Err(format!(
                "{} did not finish within {RUN_LIMIT:?}",
                shown(cmd)
            ));
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// SIGKILLs the child's process group (it was started with `process_group(0)`) and reaps it.
fn kill_group(child: &mut Child) {
    if let Ok(pid) = libc::pid_t::try_from(child.id()) {
        // SAFETY: kill(2) on the process group of a child we started; no memory involved.
        unsafe { libc::kill(-pid, libc::SIGKILL) };
    }
    let _ = child.wait();
}

fn shown(cmd: &Command) -> String {
    std::iter::once(cmd.get_program())
        .chain(cmd.get_args())
        .map(|a| lab::shell_quote(&a.to_string_lossy()))
        .collect::<Vec<_>>()
        .join(" ")
}

fn log_tail(log: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// A program's `--version` line, or what went wrong.
fn version_of(cmd: &mut Command) -> String {
    match cmd.output() {
        Ok(out) => String::from_utf8_lossy(&out.stdout)
            .lines()
            .next()
            .unwrap_or_default()
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" "),
        Err(e) => format!("unknown ({e})"),
    }
}

/// Median and minimum of a contender's times.
#[derive(Clone, Copy, Debug, PartialEq)]
struct Summary {
    median: f64,
    min: f64,
}

impl Summary {
    fn of(seconds: &[f64]) -> Summary {
        let mut sorted = seconds.to_vec();
        sorted.sort_by(f64::total_cmp);
        let n = sorted.len();
        let median = match n {
            0 => f64::NAN,
            _ if n % 2 == 1 => sorted[n / 2],
            _ => (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0,
        };
        Summary {
            median,
            min: sorted.first().copied().unwrap_or(f64::NAN),
        }
    }
}

/// The results of a run, with the facts of the machine and lab they were measured on.
struct Report {
    facts: Value,
    backup_bytes: u64,
    rows: Vec<(Contender, Summary, Vec<Sample>)>,
}

impl Report {
    fn new(
        bench: &Bench,
        options: &BenchOptions,
        samples: &[Vec<Sample>],
    ) -> Result<Report, Failure> {
        let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
        let date = version_of(Command::new("/usr/bin/date").args(["-u", "+%Y-%m-%dT%H:%M:%SZ"]));
        let barman_version = bench
            .lab
            .barman(["--version"])
            .map(|out| String::from_utf8_lossy(&out.stdout).trim().to_string())
            .map_err(|e| Failure::new("report", e))?;
        let facts = json!({
            "date": date,
            "cores": cores,
            "scale": options.lab.scale,
            "repeat": options.repeat,
            "backup_bytes": bench.backup.bytes,
            "backup_files": bench.backup.files,
            "barman": barman_version,
            "repmgr": version_of(Command::new(REPMGR).arg("--version")),
            "rsync": version_of(Command::new("/usr/bin/rsync").arg("--version")),
            "pgreplica": version_of(Command::new(&bench.pgreplica).arg("--version")),
        });
        let rows = Contender::ALL
            .iter()
            .zip(samples)
            .map(|(c, s)| {
                let times: Vec<f64> = s.iter().map(|s| s.seconds).collect();
                (*c, Summary::of(&times), s.clone())
            })
            .collect();
        Ok(Report {
            facts,
            backup_bytes: bench.backup.bytes,
            rows,
        })
    }

    /// A pgreplica row's median seconds per step, in the steps' order, then the median time
    /// outside the steps (process start, store, exit) as `outside steps`.
    fn step_medians(samples: &[Sample]) -> Vec<(String, f64)> {
        let Some(first) = samples.iter().find(|s| !s.steps.is_empty()) else {
            return Vec::new();
        };
        let mut medians: Vec<(String, f64)> = first
            .steps
            .iter()
            .map(|(step, _)| {
                let times: Vec<f64> = samples
                    .iter()
                    .filter_map(|s| s.steps.iter().find(|(n, _)| n == step).map(|(_, t)| *t))
                    .collect();
                (step.clone(), Summary::of(&times).median)
            })
            .collect();
        let outside: Vec<f64> = samples
            .iter()
            .map(|s| s.seconds - s.steps.iter().map(|(_, t)| t).sum::<f64>())
            .collect();
        medians.push(("outside steps".to_string(), Summary::of(&outside).median));
        medians
    }

    fn median_of(&self, wanted: Contender) -> f64 {
        self.rows
            .iter()
            .find(|(c, _, _)| *c == wanted)
            .map_or(f64::NAN, |(_, s, _)| s.median)
    }

    /// Medians over the resumes: bytes re-sent, bytes kept, bytes on disk at the kill.
    fn resume_facts(&self) -> Option<(u64, u64, u64)> {
        let facts: Vec<ResumeFacts> = self
            .rows
            .iter()
            .flat_map(|(_, _, samples)| samples.iter().filter_map(|s| s.resume))
            .collect();
        if facts.is_empty() {
            return None;
        }
        let median = |mut v: Vec<u64>| {
            v.sort_unstable();
            v[v.len() / 2]
        };
        Some((
            median(facts.iter().map(|f| f.resent).collect()),
            median(facts.iter().map(|f| f.kept).collect()),
            median(facts.iter().map(|f| f.on_disk_at_kill).collect()),
        ))
    }

    fn table(&self) -> String {
        let baseline = self.median_of(Contender::Rsync);
        let repmgr = self.median_of(Contender::Repmgr);
        let f = &self.facts;
        let mut out = String::new();
        let _ = writeln!(
            out,
            "\npgreplica bench {} — {} cores, backup {:.0} MB in {} files (pgbench scale {}), \
             {} run(s) each\n{}; {}; {}\n",
            f["date"].as_str().unwrap_or_default(),
            f["cores"],
            self.backup_bytes as f64 / ONE_MB,
            f["backup_files"],
            f["scale"],
            f["repeat"],
            f["barman"].as_str().unwrap_or_default(),
            f["repmgr"].as_str().unwrap_or_default(),
            f["rsync"].as_str().unwrap_or_default(),
        );
        let _ = writeln!(
            out,
            "{:<34} {:>8} {:>8} {:>8} {:>9} {:>10}",
            "contender", "median s", "min s", "MB/s", "vs rsync", "vs repmgr"
        );
        for (contender, summary, _) in &self.rows {
            let _ = writeln!(
                out,
                "{:<34} {:>8.2} {:>8.2} {:>8.1} {:>9.2} {:>10.2}",
                contender.label(),
                summary.median,
                summary.min,
                self.backup_bytes as f64 / ONE_MB / summary.median,
                summary.median / baseline,
                summary.median / repmgr,
            );
        }
        let _ = writeln!(
            out,
            "\nratios are median times over the baseline's (rsync -a over ssh) and repmgr's: \
             below 1 is faster.\nMB/s is the backup's size over the median time (for the \
             resume: over the time to finish)."
        );
        for (contender, _, samples) in &self.rows {
            let steps = Report::step_medians(samples);
            if steps.is_empty() {
                continue;
            }
            let shown: Vec<String> = steps
                .iter()
                .map(|(step, t)| format!("{step} {t:.2}"))
                .collect();
            let _ = writeln!(
                out,
                "{} steps (s, median): {}",
                contender.label(),
                shown.join(", ")
            );
        }
        if let Some((resent, kept, at_kill)) = self.resume_facts() {
            let full = self.median_of(Contender::Pgreplica { jobs: 1 });
            let resume = self.median_of(Contender::Resume { jobs: 1 });
            let _ = writeln!(
                out,
                "after a SIGKILL with {:.0} % of the backup on disk: pgreplica finishes in {resume:.2} s \
                 ({:.0} % of its full clone), re-sending {:.0} MB ({:.0} % of the backup) and keeping \
                 {:.0} MB of the file(s) in flight;\n\
                 repmgr cannot resume: it starts over, {repmgr:.2} s (a full clone).",
                at_kill as f64 * 100.0 / self.backup_bytes as f64,
                resume * 100.0 / full,
                resent as f64 / ONE_MB,
                resent as f64 * 100.0 / self.backup_bytes as f64,
                kept as f64 / ONE_MB,
            );
        }
        out
    }

    fn json(&self) -> Value {
        let baseline = self.median_of(Contender::Rsync);
        let repmgr = self.median_of(Contender::Repmgr);
        let contenders: Vec<Value> = self
            .rows
            .iter()
            .map(|(contender, summary, samples)| {
                let mut row = json!({
                    "key": contender.key(),
                    "label": contender.label(),
                    "median_s": summary.median,
                    "min_s": summary.min,
                    "mb_per_s": self.backup_bytes as f64 / ONE_MB / summary.median,
                    "vs_baseline": summary.median / baseline,
                    "vs_repmgr": summary.median / repmgr,
                    "runs_s": samples.iter().map(|s| s.seconds).collect::<Vec<_>>(),
                });
                let resumes: Vec<Value> = samples
                    .iter()
                    .filter_map(|s| s.resume)
                    .map(|r| json!({"resent_bytes": r.resent, "kept_bytes": r.kept, "on_disk_at_kill_bytes": r.on_disk_at_kill}))
                    .collect();
                if !resumes.is_empty() {
                    row["resumes"] = Value::Array(resumes);
                }
                let steps = Report::step_medians(samples);
                if !steps.is_empty() {
                    row["steps_median_s"] = steps
                        .into_iter()
                        .map(|(step, t)| (step, json!(t)))
                        .collect::<serde_json::Map<_, _>>()
                        .into();
                }
                row
            })
            .collect();
        json!({
            "machine": self.facts,
            "baseline": Contender::Rsync.key(),
            "contenders": contenders,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(args: &[&str]) -> Vec<String> {
        args.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn defaults_quick_and_explicit_options() {
        let default = parse(&[]).unwrap();
        assert_eq!(default.lab.scale, DEFAULT_SCALE);
        assert_eq!(default.repeat, DEFAULT_REPEAT);
        assert_eq!(default.lab.barman, BarmanFlavor::Debian);
        assert!(!default.json);

        let quick = parse(&strings(&["--quick"])).unwrap();
        assert_eq!((quick.lab.scale, quick.repeat), (QUICK_SCALE, QUICK_REPEAT));

        // Explicit values win over --quick, whatever their order.
        let mixed = parse(&strings(&[
            "--repeat", "2", "--quick", "--barman", "pypi", "--json",
        ]))
        .unwrap();
        assert_eq!((mixed.lab.scale, mixed.repeat), (QUICK_SCALE, 2));
        assert_eq!(mixed.lab.barman, BarmanFlavor::PyPI);
        assert!(mixed.json);
        assert_eq!(parse(&strings(&["--scale", "7"])).unwrap().lab.scale, 7);
    }

    #[test]
    fn bad_options_are_refused_with_the_reason() {
        for (args, reason) in [
            (&["--scale"][..], "--scale needs a value"),
            (&["--scale", "0"], "expected a positive integer"),
            (&["--repeat", "x"], "expected a positive integer"),
            (&["--barman", "conda"], "expected debian or pypi"),
            (&["--tablespace"], "unknown bench option --tablespace"),
        ] {
            let err = parse(&strings(args)).unwrap_err();
            assert!(err.contains(reason), "{args:?}: {err}");
        }
    }

    #[test]
    fn median_and_min() {
        assert_eq!(
            Summary::of(&[3.0, 1.0, 2.0]),
            Summary {
                median: 2.0,
                min: 1.0
            }
        );
        assert_eq!(Summary::of(&[4.0, 1.0, 2.0, 3.0]).median, 2.5);
    }

    #[test]
    fn ssh_wrapper_passes_the_lab_options_then_the_callers_arguments() {
        let text = ssh_wrapper(&strings(&[
            "-p",
            "2222",
            "-o",
            "BatchMode=yes",
            "-i",
            "/tmp/a b",
        ]));
        assert!(
            text.ends_with("exec /usr/bin/ssh -p 2222 -o BatchMode=yes -i '/tmp/a b' \"$@\"\n"),
            "{text}"
        );
        assert!(text.starts_with("#!/bin/sh\n"));
    }
}
