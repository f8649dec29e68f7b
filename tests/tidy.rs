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
