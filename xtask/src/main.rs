//! `cargo xtask …`: pgreplica's build and lab orchestration, in Rust rather than shell.
//! `install` (lab prerequisites), `test` (the CI gate), `lab` (a lab to play with), `demo`
//! (a clone from Barman, end to end), `bench` (pgreplica against rsync, repmgr and Barman),
//! `chaos` (the kill-anywhere campaign). It must stay std + the `lab` crate (+ serde_json for
//! the bench), and must not hold logic the tests need: that belongs in `lab`.

mod args;
mod bench;
mod chaos;
mod demo;
mod gate;
mod interactive;

use std::fmt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::time::{Duration, Instant};

use lab::{Lab, LabOptions};

use crate::args::{Args, LabArgs};

const USAGE_COMMANDS: &str = "\
usage: cargo xtask <command>

commands:
  install                      install the lab's prerequisites (Debian 12, as root)
  test                         prerequisites (when root), cargo fmt --check, clippy -D warnings,
                               then the whole test suite (nextest when installed)
  lab [LAB OPTIONS]            stand a loopback lab up and keep it until Ctrl-C
  demo [LAB OPTIONS]           clone a standby from the lab's Barman with pgreplica, end to end
  bench [BENCH OPTIONS]        time pgreplica against rsync over ssh, repmgr and barman recover
                               on one lab; prints ratios against the run's own baseline
  chaos [CHAOS OPTIONS]        kill pgreplica anywhere (every step, mid-file), resume, and check
                               each clone (identical to an uninterrupted one in the Barman and
                               API modes; verified against its manifest with pg_basebackup)
                               (docs/chaos.md)

lab options:
  --barman debian|pypi         Barman 3.4.0 from Debian (default) or 3.19.x from PyPI
  --tablespace                 create a tablespace with a table on the primary before the backup
  --scale N                    pgbench scale of the primary's data (default 1)

chaos options:
  --mode barman|api|basebackup the copying mode to kill: Barman over rsync (default),
                               pg-backup-api (against pgreplica-apiserver), or pg_basebackup
  --rounds N                   rounds of kills and resumes (default 20)
  --seed S                     the campaign's seed (default: from the clock; always printed)
  --round R                    replay round R of the campaign with --seed S alone
  --barman debian|pypi         as for lab
  --scale N                    as for lab
";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let outcome = match args.first().map(String::as_str) {
        Some("install") if args.len() == 1 => {
            lab::install().map_err(|e| Failure::new("install", e))
        }
        Some("test") if args.len() == 1 => gate::run(),
        Some("lab") => lab_options(&args[1..])
            .map_err(refused)
            .and_then(interactive::run),
        Some("demo") => lab_options(&args[1..]).map_err(refused).and_then(demo::run),
        Some("bench") => bench::parse(&args[1..])
            .map_err(refused)
            .and_then(bench::run),
        Some("chaos") => chaos::parse(&args[1..])
            .map_err(refused)
            .and_then(chaos::run),
        Some("help" | "-h" | "--help") => {
            print!("{}", usage());
            return ExitCode::SUCCESS;
        }
        _ => Err(refused(format!("unknown command line {args:?}"))),
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) => {
            eprintln!("{failure}");
            ExitCode::FAILURE
        }
    }
}

/// Why an xtask command failed: the stage and the error.
pub(crate) struct Failure {
    stage: String,
    message: String,
}

impl Failure {
    pub(crate) fn new(stage: &str, message: impl fmt::Display) -> Failure {
        Failure {
            stage: stage.to_string(),
            message: message.to_string(),
        }
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "xtask: FAILED at stage \"{}\":\n{}",
            self.stage, self.message
        )
    }
}

/// A command line refused: why, then the usage text.
fn refused(why: String) -> Failure {
    Failure::new("arguments", format!("{why}\n{}", usage()))
}

/// Parses the options of `lab` and `demo`: `--barman debian|pypi`, `--tablespace`, `--scale N`.
fn lab_options(args: &[String]) -> Result<LabOptions, String> {
    let mut args = Args::new(args);
    let mut lab = LabArgs::default();
    let mut tablespace = false;
    while let Some(option) = args.next_option() {
        if lab.take(option, &mut args)? {
            continue;
        }
        match option {
            "--tablespace" => tablespace = true,
            other => return Err(format!("unknown option {other}")),
        }
    }
    Ok(LabOptions {
        tablespace,
        ..lab.options(LabOptions::default().scale)
    })
}

/// The standby `lab` and `demo` offer to clone: a fresh data directory, a free port, and its
/// repmgr.conf (node 2, cloned from the lab's Barman) in the lab directory.
pub(crate) struct StandbyConf {
    /// Where the standby's data directory goes (not created).
    pub(crate) data_dir: PathBuf,
    /// The port it will listen on.
    pub(crate) port: u16,
    /// Its repmgr.conf.
    pub(crate) path: PathBuf,
    /// What the repmgr.conf says.
    pub(crate) text: String,
}

impl StandbyConf {
    /// Picks the standby's directory and port and writes its repmgr.conf (a stage of its own).
    pub(crate) fn write(lab: &Lab) -> Result<StandbyConf, Failure> {
        let data_dir = lab.new_dir("standby");
        let port = lab::free_port();
        let path = lab.dir().join("repmgr.conf");
        let text = lab.repmgr_conf(2, "node2", &data_dir, port);
        stage("write repmgr.conf", || {
            lab.write_file_as_postgres(&path, &text)
        })?;
        Ok(StandbyConf {
            data_dir,
            port,
            path,
            text,
        })
    }
}

/// The whole usage text: commands, lab options, bench options.
pub(crate) fn usage() -> String {
    format!("{USAGE_COMMANDS}\n{}", bench::USAGE)
}

/// As root: install what the lab needs and is missing (packages, the PyPI Barman venv), as the
/// README promises for `cargo xtask test` and `cargo xtask demo` on a fresh machine. Otherwise:
/// check, and say what is missing and how to fix it.
pub(crate) fn prerequisites() -> Result<(), String> {
    if lab::is_root() {
        return lab::install().map_err(|e| e.to_string());
    }
    lab::prerequisites().map_err(|e| {
        format!("{e}\nnot running as root, so not installing them: run `sudo cargo xtask install`")
    })
}

/// Builds pgreplica in release mode and returns the binary's path. Done before any lab starts:
/// a compile error should not cost a lab start.
pub(crate) fn build_pgreplica_release() -> Result<PathBuf, Failure> {
    build_release("pgreplica", "pgreplica")
}

/// Builds binary `bin` of workspace package `package` in release mode and returns its path.
pub(crate) fn build_release(package: &str, bin: &str) -> Result<PathBuf, Failure> {
    stage(&format!("build {bin} (release)"), || {
        run_visible(
            cargo().args(["build", "--release", "--package", package, "--bin", bin]),
            Duration::from_secs(3600),
        )
    })?;
    let target_dir = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target"));
    Ok(target_dir.join("release").join(bin))
}

/// The workspace root (xtask lives in `<root>/xtask`). `cargo run` tells us where xtask's
/// manifest is at run time; the compile-time value is only a fallback, as a binary built from
/// another checkout sharing the target directory would point there.
pub(crate) fn workspace_root() -> PathBuf {
    let manifest = std::env::var_os("CARGO_MANIFEST_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")));
    manifest.parent().map(Path::to_path_buf).unwrap_or(manifest)
}

/// `cargo` (the one running us, when known), run from the workspace root.
pub(crate) fn cargo() -> Command {
    let mut cmd = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    cmd.current_dir(workspace_root());
    cmd
}

/// Runs `cmd` with the terminal as its stdout/stderr, printing it first; stops it after
/// `timeout`. Ok when it exits 0; else what went wrong, for the caller's stage to report.
pub(crate) fn run_visible(cmd: &mut Command, timeout: Duration) -> Result<(), String> {
    let shown = lab::describe(cmd);
    eprintln!("+ {shown}");
    let mut child = cmd
        .spawn()
        .map_err(|e| format!("cannot run {shown}: {e}"))?;
    let deadline = Instant::now() + timeout;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(50)),
            Ok(None) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("{shown} did not finish within {timeout:?}"));
            }
            Err(e) => return Err(format!("wait for {shown}: {e}")),
        }
    };
    if status.success() {
        Ok(())
    } else {
        Err(format!("{shown} failed ({status})"))
    }
}

/// Prints `== name` and how long the stage took; a failure names the stage.
pub(crate) fn stage<T, E: fmt::Display>(
    name: &str,
    step: impl FnOnce() -> Result<T, E>,
) -> Result<T, Failure> {
    eprintln!("== {name}");
    let began = Instant::now();
    let result = step().map_err(|e| Failure::new(name, e));
    if result.is_ok() {
        eprintln!("   {name}: done in {:.1?}", began.elapsed());
    }
    result
}

#[cfg(test)]
mod tests {
    use crate::args::words;
    use lab::BarmanFlavor;

    use super::*;

    #[test]
    fn lab_options_parse() {
        let options = lab_options(&words(&[
            "--barman",
            "pypi",
            "--tablespace",
            "--scale",
            "5",
        ]))
        .unwrap();
        assert_eq!(
            options,
            LabOptions {
                barman: BarmanFlavor::PyPI,
                tablespace: true,
                scale: 5,
                ..LabOptions::default()
            }
        );
        assert_eq!(lab_options(&[]).ok(), Some(LabOptions::default()));
        for (bad, why) in [
            (&["--barman"][..], "--barman needs a value"),
            (
                &["--barman", "conda"],
                "--barman conda: expected debian or pypi",
            ),
            (&["--scale", "0"], "--scale 0: expected a positive integer"),
            (&["--fast"], "unknown option --fast"),
        ] {
            assert_eq!(lab_options(&words(bad)), Err(why.to_string()), "{bad:?}");
        }
    }
}
