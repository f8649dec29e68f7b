//! `cargo xtask test`: the one CI gate — lab prerequisites, formatting, clippy, the whole test
//! suite — with a timing summary. It runs every step even after a failure, so one run reports
//! everything; it must not skip a step silently.

use std::time::{Duration, Instant};

use crate::{cargo, run_visible, Failure};

/// The machine has 2 cores: two tests at a time (each lab test runs PostgreSQL and Barman).
const TEST_THREADS: &str = "2";
const LONG: Duration = Duration::from_secs(3600);

/// Runs the gate; fails when any step failed.
pub(crate) fn run() -> Result<(), Failure> {
    let mut steps: Vec<(String, Duration, Result<(), Failure>)> = Vec::new();
    let mut step = |name: &str, f: &mut dyn FnMut() -> Result<(), Failure>| {
        eprintln!("== {name}");
        let began = Instant::now();
        let result = f();
        if let Err(failure) = &result {
            eprintln!("{failure}");
        }
        steps.push((name.to_string(), began.elapsed(), result));
    };

    step("prerequisites", &mut prerequisites);
    step("fmt", &mut || {
        run_visible("fmt", cargo().args(["fmt", "--all", "--", "--check"]), LONG)
    });
    step("clippy", &mut || {
        run_visible(
            "clippy",
            cargo().args([
                "clippy",
                "--workspace",
                "--all-targets",
                "--",
                "-D",
                "warnings",
            ]),
            LONG,
        )
    });
    if nextest_available() {
        step("tests (nextest)", &mut || {
            run_visible(
                "tests",
                cargo()
                    .args(["nextest", "run", "--workspace", "--no-fail-fast"])
                    .args(["--test-threads", TEST_THREADS]),
                LONG,
            )
        });
        // nextest does not run doctests.
        step("doctests", &mut || {
            run_visible(
                "doctests",
                cargo().args(["test", "--workspace", "--doc"]),
                LONG,
            )
        });
    } else {
        step("tests (cargo test)", &mut || {
            run_visible(
                "tests",
                cargo()
                    .args(["test", "--workspace", "--no-fail-fast", "--"])
                    .args(["--test-threads", TEST_THREADS]),
                LONG,
            )
        });
    }

    eprintln!("\n== summary");
    let mut failed = Vec::new();
    for (name, took, result) in &steps {
        let verdict = if result.is_ok() { "ok" } else { "FAILED" };
        eprintln!("   {verdict:<7} {:>8.1}s  {name}", took.as_secs_f64());
        if result.is_err() {
            failed.push(name.as_str());
        }
    }
    let total: Duration = steps.iter().map(|(_, took, _)| *took).sum();
    eprintln!("   total   {:>8.1}s", total.as_secs_f64());
    if failed.is_empty() {
        Ok(())
    } else {
        Err(Failure::new(
            "test",
            format!("failed: {}", failed.join(", ")),
        ))
    }
}

/// As root: install what is missing. Otherwise: check, and say what is missing and how to fix
/// it; the lab tests will then fail with the same reason.
fn prerequisites() -> Result<(), Failure> {
    if lab::is_root() {
        return lab::install().map_err(|e| Failure::new("prerequisites", e));
    }
    lab::prerequisites().map_err(|e| {
        Failure::new(
            "prerequisites",
            format!("{e}\nnot running as root, so not installing them: the lab tests will fail"),
        )
    })
}

fn nextest_available() -> bool {
    cargo()
        .args(["nextest", "--version"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}
