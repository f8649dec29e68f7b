//! `cargo xtask test`: the one CI gate — lab prerequisites, formatting, clippy, the whole test
//! suite — with a timing summary. It runs every step even after a failure, so one run reports
//! everything; it must not skip a step silently.

use std::process::Stdio;
use std::time::{Duration, Instant};

use crate::{cargo, run_visible, Failure};

/// The machine has 2 cores: two tests at a time (each lab test runs PostgreSQL and Barman).
const TEST_THREADS: &str = "2";
const LONG: Duration = Duration::from_secs(3600);

/// One step of the gate and how it went.
struct Step {
    name: &'static str,
    took: Duration,
    error: Option<String>,
}

/// Runs the gate; fails when any step failed.
pub(crate) fn run() -> Result<(), Failure> {
    let mut steps = Vec::new();
    let mut step = |name: &'static str, run: &mut dyn FnMut() -> Result<(), String>| {
        eprintln!("== {name}");
        let began = Instant::now();
        let error = run().err();
        if let Some(error) = &error {
            eprintln!("{}", Failure::new(name, error));
        }
        steps.push(Step {
            name,
            took: began.elapsed(),
            error,
        });
    };

    step("prerequisites", &mut crate::prerequisites);
    step("fmt", &mut || {
        run_visible(cargo().args(["fmt", "--all", "--", "--check"]), LONG)
    });
    step("clippy", &mut || {
        let clippy = [
            "clippy",
            "--workspace",
            "--all-targets",
            "--",
            "-D",
            "warnings",
        ];
        run_visible(cargo().args(clippy), LONG)
    });
    // Tests run binaries of other packages (the pg-backup-api test server): `cargo test` and
    // nextest build only the binaries of the package under test, so build them all first.
    step("build binaries", &mut || {
        run_visible(cargo().args(["build", "--workspace", "--bins"]), LONG)
    });
    if nextest_available() {
        step("tests (nextest)", &mut || {
            let nextest = ["nextest", "run", "--workspace", "--no-fail-fast"];
            run_visible(
                cargo().args(nextest).args(["--test-threads", TEST_THREADS]),
                LONG,
            )
        });
        // nextest does not run doctests.
        step("doctests", &mut || {
            run_visible(cargo().args(["test", "--workspace", "--doc"]), LONG)
        });
    } else {
        step("tests (cargo test)", &mut || {
            let test = ["test", "--workspace", "--no-fail-fast", "--"];
            run_visible(
                cargo().args(test).args(["--test-threads", TEST_THREADS]),
                LONG,
            )
        });
    }

    eprintln!("\n== summary");
    for s in &steps {
        let verdict = if s.error.is_none() { "ok" } else { "FAILED" };
        eprintln!("   {verdict:<7} {:>7.1}s  {}", s.took.as_secs_f64(), s.name);
    }
    let total: Duration = steps.iter().map(|s| s.took).sum();
    eprintln!("   total   {:>7.1}s", total.as_secs_f64());
    let failed: Vec<&str> = steps
        .iter()
        .filter(|s| s.error.is_some())
        .map(|s| s.name)
        .collect();
    if failed.is_empty() {
        Ok(())
    } else {
        Err(Failure::new(
            "test",
            format!("failed: {}", failed.join(", ")),
        ))
    }
}

fn nextest_available() -> bool {
    cargo()
        .args(["nextest", "--version"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}
