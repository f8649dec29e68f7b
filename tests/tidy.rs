//! Tidy checks that keep the code base a place a newcomer can live in, run by `cargo test` so
//! the test suite is the only gate: every Rust file opens with a `//!` header saying what it is,
//! no line ends in white space, no work-in-progress markers are left behind, and every module
//! of the library is on ARCHITECTURE.md's code map.

use std::path::{Path, PathBuf};

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

/// The workspace's own source trees (not target/, not fixtures).
const TREES: [&str; 8] = [
    "src",
    "states/src",
    "states/tests",
    "lab/src",
    "lab/tests",
    "xtask/src",
    "apiserver/src",
    "tests",
];

fn files_with_extension(dir: &Path, extension: &str, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            if path.file_name().is_some_and(|n| n != "fixtures") {
                files_with_extension(&path, extension, out);
            }
        } else if path.extension().is_some_and(|e| e == extension) {
            out.push(path);
        }
    }
}

fn rust_files() -> Vec<PathBuf> {
    let mut files = Vec::new();
    for tree in TREES {
        files_with_extension(&Path::new(ROOT).join(tree), "rs", &mut files);
    }
    assert!(files.len() > 50, "found only {} Rust files", files.len());
    files
}

#[test]
fn every_rust_file_opens_with_a_module_header() {
    let missing: Vec<_> = rust_files()
        .into_iter()
        .filter(|path| {
            let text = std::fs::read_to_string(path).unwrap();
            !text.starts_with("//!")
        })
        .collect();
    assert!(
        missing.is_empty(),
        "files without a `//!` header: {missing:?}"
    );
}

#[test]
fn no_trailing_white_space_and_no_work_in_progress_markers() {
    let mut files = rust_files();
    files_with_extension(Path::new(ROOT), "md", &mut files);
    files_with_extension(&Path::new(ROOT).join("docs"), "md", &mut files);
    let markers = [
        concat!("todo", "!("),
        concat!("unimplemented", "!("),
        concat!("#[", "ignore"),
        concat!("TODO", "-SKELETON"),
    ];
    let mut problems = Vec::new();
    for path in files {
        let text = std::fs::read_to_string(&path).unwrap();
        for (number, line) in text.lines().enumerate() {
            if line.ends_with(' ') || line.ends_with('\t') {
                problems.push(format!(
                    "{}:{}: trailing white space",
                    path.display(),
                    number + 1
                ));
            }
            for marker in markers {
                if line.contains(marker) {
                    problems.push(format!("{}:{}: {marker}", path.display(), number + 1));
                }
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn every_library_module_is_on_the_code_map() {
    let map = std::fs::read_to_string(Path::new(ROOT).join("ARCHITECTURE.md")).unwrap();
    let lib = std::fs::read_to_string(Path::new(ROOT).join("src/lib.rs")).unwrap();
    let missing: Vec<_> = lib
        .lines()
        .filter_map(|line| line.strip_prefix("pub mod "))
        .map(|name| name.trim_end_matches(';'))
        .filter(|name| !map.contains(&format!("`{name}`")) && !map.contains(&format!("src/{name}")))
        .collect();
    assert!(
        missing.is_empty(),
        "modules missing from ARCHITECTURE.md: {missing:?}"
    );
}

// ---------------------------------------------------------------------------------------------
// Architecture invariants (ARCHITECTURE.md's bold lines), checked on the source so that a change
// that breaks one fails here instead of living on in prose.

/// The code lines of the Rust files under `dir` (comments and doc comments left out, so that
/// prose may name what code must not use), as `(file, line number, line)`.
fn code_lines(dir: &str) -> Vec<(PathBuf, usize, String)> {
    let mut files = Vec::new();
    files_with_extension(&Path::new(ROOT).join(dir), "rs", &mut files);
    assert!(!files.is_empty(), "no Rust files under {dir}");
    let mut lines = Vec::new();
    for path in files {
        let text = std::fs::read_to_string(&path).unwrap();
        for (number, line) in text.lines().enumerate() {
            let code = line.trim_start();
            if !code.starts_with("//") {
                lines.push((path.clone(), number + 1, line.to_string()));
            }
        }
    }
    lines
}

/// Lines under `dir` containing any of `needles`, outside the files or directories `allowed`
/// (paths relative to the workspace root).
fn offending(dir: &str, needles: &[&str], allowed: &[&str]) -> Vec<String> {
    code_lines(dir)
        .into_iter()
        .filter(|(path, _, line)| {
            let relative = path
                .strip_prefix(ROOT)
                .unwrap()
                .to_string_lossy()
                .into_owned();
            !allowed.iter().any(|a| relative.starts_with(a))
                && needles.iter().any(|needle| line.contains(needle))
        })
        .map(|(path, number, line)| {
            format!(
                "{}:{number}: {}",
                path.strip_prefix(ROOT).unwrap().display(),
                line.trim()
            )
        })
        .collect()
}

fn assert_none(what: &str, found: Vec<String>) {
    assert!(found.is_empty(), "{what}:\n{}", found.join("\n"));
}

#[test]
fn states_performs_no_io_and_depends_on_serde_alone() {
    assert_none(
        "states must not touch disk, network, processes, the environment or the clock",
        offending(
            "states/src",
            &[
                "std::fs",
                "std::io",
                "std::net",
                "std::process",
                "std::env",
                "std::thread",
                "SystemTime",
                "Instant",
                "tokio",
            ],
            &[],
        ),
    );
    let manifest = std::fs::read_to_string(Path::new(ROOT).join("states/Cargo.toml")).unwrap();
    let dependencies: Vec<&str> = manifest
        .split("[dependencies]")
        .nth(1)
        .unwrap_or("")
        .lines()
        .take_while(|line| !line.starts_with('['))
        .filter(|line| line.contains('='))
        .collect();
    assert_eq!(
        dependencies,
        ["serde = { workspace = true }"],
        "states depends on serde alone"
    );
}

#[test]
fn only_store_knows_sled() {
    assert_none(
        "sled outside src/store",
        offending("src", &["sled::"], &["src/store/"]),
    );
}

#[test]
fn only_transfer_spawns_copy_processes() {
    assert_none(
        "copy processes (rsync, pg_basebackup, the guardian) spawned outside src/transfer",
        offending(
            "src",
            &[
                "Command::new(\"rsync\")",
                "GuardedThreads",
                "spawn_guarded",
                "\"pg_basebackup\")",
            ],
            // The dry run runs `pg_basebackup --version`, which copies nothing; the Barman
            // client's tests prove their quoting against a real rsync.
            &["src/transfer/", "src/dry_run.rs", "src/barman/quote.rs"],
        ),
    );
}

#[test]
fn only_barman_builds_remote_commands() {
    assert_none(
        "ssh command lines or remote quoting outside src/barman",
        offending(
            "src",
            &["\"ssh\"", "quote::", "shell_quote", "remote_command"],
            &["src/barman/"],
        ),
    );
}

#[test]
fn steps_are_leaves_and_the_copy_engines_import_no_step() {
    assert_none(
        "step modules imported outside their dispatcher (only app hands `steps::Steps` to the runner)",
        offending("src", &["crate::steps", "steps::"], &["src/steps/mod.rs", "src/lib.rs"])
            .into_iter()
            .filter(|line| !line.starts_with("src/app.rs") || !line.contains("steps::Steps"))
            .collect(),
    );
    assert_none(
        "the copy engines import command handlers",
        offending(
            "src/transfer",
            &["crate::app", "crate::dry_run", "crate::runner::run"],
            &[],
        ),
    );
}

#[test]
fn the_clone_record_has_no_public_field() {
    let record = std::fs::read_to_string(Path::new(ROOT).join("states/src/record.rs")).unwrap();
    let body = record
        .split("pub struct CloneRecord {")
        .nth(1)
        .and_then(|rest| rest.split("\n}").next())
        .expect("CloneRecord is defined in states/src/record.rs");
    let public: Vec<&str> = body
        .lines()
        .map(str::trim)
        .filter(|line| line.starts_with("pub ") && !line.starts_with("pub(crate)"))
        .collect();
    assert!(
        public.is_empty(),
        "CloneRecord fields must be private to the machine, their only writer: {public:?}"
    );
}

#[test]
fn one_retry_helper_and_one_policy_type() {
    let manifest = std::fs::read_to_string(Path::new(ROOT).join("Cargo.toml")).unwrap();
    assert!(
        !manifest.contains("backoff"),
        "retries go through src/retry.rs, not a second retry library"
    );
    assert_none(
        "waits outside the retry helper, the runner's step delay, pg-backup-api's protocol waits and the streaming engine's --bwlimit pace",
        offending(
            "src",
            &["thread::sleep(", "time::sleep("],
            &[
                "src/retry.rs",
                "src/runner.rs",
                "src/transfer/backup_api.rs",
                "src/transfer/stream.rs",
            ],
        )
        .into_iter()
        // Tests may wait for a process they killed to vanish.
        .filter(|line| !line.contains("Duration::from_millis(10)"))
        .collect(),
    );
    assert_none(
        "retry policies defined outside states::RetryPolicy",
        offending("src", &["struct RetryPolicy", "ExponentialBackoff"], &[]),
    );
}

#[test]
fn the_crash_hook_of_the_api_tests_is_compiled_into_debug_builds_only() {
    // docs/backup-api.md: a release build does not contain PGREPLICA_TEST_CRASH_AFTER_POST.
    // Each item that names the hook (its variable, its function, its call) is the item right
    // under `#[cfg(debug_assertions)]`, doc comments aside.
    let path = Path::new(ROOT).join("src/transfer/backup_api.rs");
    let text = std::fs::read_to_string(&path).unwrap();
    let lines: Vec<&str> = text.lines().map(str::trim).collect();
    let mut items = 0;
    for (index, line) in lines.iter().enumerate() {
        let names_hook = [
            "CRASH_AFTER_POST_ENV: &str",
            "fn crash_after_post",
            "crash_after_post();",
        ]
        .iter()
        .any(|item| line.contains(item));
        if !names_hook {
            continue;
        }
        items += 1;
        let attribute = lines[..index]
            .iter()
            .rev()
            .find(|l| !l.starts_with("///"))
            .copied();
        assert_eq!(
            attribute,
            Some("#[cfg(debug_assertions)]"),
            "{}:{}: {line} is not for debug builds only",
            path.display(),
            index + 1
        );
    }
    assert_eq!(items, 3, "the hook's variable, function and call");
    assert_eq!(
        text.matches("PGREPLICA_TEST_CRASH_AFTER_POST").count(),
        1,
        "the variable is named once, in the gated constant"
    );
}

// ---------------------------------------------------------------------------------------------
// Every ERROR has a HINT: each `Error::new(…)` in the library (its unit tests aside) carries
// `.hint(…)` in the chain that builds it (`Error::bug` and `Error::output` carry theirs). No file
// is exempt: an error whose HINT depends on the case chooses the HINT first and builds with it.

/// The `Error::new(` constructions of `text` (before its unit tests) whose method chain has no
/// `.hint(`, by line number.
fn hintless_constructions(text: &str) -> Vec<usize> {
    let code = text.split("#[cfg(test)]\nmod tests").next().unwrap_or(text);
    let bytes = code.as_bytes();
    // The index just past the parenthesis that closes the one open at `open`.
    let close = |open: usize| {
        let mut depth = 0usize;
        for (i, b) in bytes.iter().enumerate().skip(open) {
            match b {
                b'(' => depth += 1,
                b')' => {
                    depth -= 1;
                    if depth == 0 {
                        return i + 1;
                    }
                }
                _ => {}
            }
        }
        bytes.len()
    };
    let mut found = Vec::new();
    for (start, _) in code.match_indices("Error::new(") {
        // std's io::Error is not the operator's error.
        if code[..start].ends_with("io::") {
            continue;
        }
        let mut end = close(start + "Error::new".len());
        let mut hinted = false;
        // Follow the chain `.name(…)` by `.name(…)`.
        loop {
            let rest = &code[end..];
            let trimmed = rest.trim_start();
            let Some(call) = trimmed.strip_prefix('.') else {
                break;
            };
            let name: String = call
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect();
            let open = end + (rest.len() - trimmed.len()) + 1 + name.len();
            if bytes.get(open) != Some(&b'(') {
                break;
            }
            hinted |= name == "hint";
            end = close(open);
        }
        if !hinted {
            found.push(code[..start].lines().count());
        }
    }
    found
}

#[test]
fn every_error_constructed_carries_a_hint() {
    let mut files = Vec::new();
    files_with_extension(&Path::new(ROOT).join("src"), "rs", &mut files);
    let mut problems = Vec::new();
    for path in files {
        let relative = path
            .strip_prefix(ROOT)
            .unwrap()
            .to_string_lossy()
            .into_owned();
        let lines = hintless_constructions(&std::fs::read_to_string(&path).unwrap());
        if !lines.is_empty() {
            problems.push(format!(
                "{relative}: Error::new without .hint at lines {lines:?}"
            ));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    // The scan sees a hint-less construction, and a hinted one as hinted.
    assert_eq!(
        hintless_constructions("fn f() { Error::new(K, format!(\"{}\", g(1))).detail(x); }"),
        [1]
    );
    assert!(
        hintless_constructions("Error::new(K, \"m\")\n    .retryable()\n    .hint(h(\"x\"))")
            .is_empty()
    );
}
