//! The binary's front door, without a lab: root refusal, help with examples, generated man page
//! and completions, configuration errors with file:line and exit 1, clone-state errors.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const BINARY: &str = env!("CARGO_BIN_EXE_pgreplica");

/// A directory `postgres` can read, holding a copy of the binary it can execute.
struct Scratch {
    dir: tempfile::TempDir,
}

impl Scratch {
    fn new() -> Scratch {
        let dir = tempfile::Builder::new()
            .prefix("pgreplica-cli-")
            .tempdir_in("/tmp")
            .unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
        std::fs::copy(BINARY, dir.path().join("pgreplica")).unwrap();
        Scratch { dir }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn write(&self, name: &str, text: &str) -> PathBuf {
        let path = self.path(name);
        std::fs::write(&path, text).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        path
    }

    /// Runs the binary as postgres (it refuses root), with a private state directory.
    fn run_as_postgres(&self, args: &[&str]) -> Output {
        Command::new("runuser")
            .args(["-u", "postgres", "--"])
            .arg(self.path("pgreplica"))
            .args(args)
            .env("PGREPLICA_STATE_DIR", self.path("state"))
            .current_dir(self.dir.path())
            .output()
            .expect("runuser (the tests run as root, as CI does)")
    }
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[test]
fn refuses_to_run_as_root_with_exit_1() {
    // SAFETY: geteuid has no preconditions.
    assert_eq!(
        unsafe { libc::geteuid() },
        0,
        "this test must run as root, as CI does"
    );
    let output = Command::new(BINARY)
        .args(["clone", "status"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    let text = stderr(&output);
    assert!(
        text.starts_with("ERROR: pgreplica must not be run as root"),
        "{text}"
    );
    assert!(
        text.contains("HINT: run it as the PostgreSQL system user"),
        "{text}"
    );
}

#[test]
fn every_clone_command_has_help_with_an_example() {
    for command in ["start", "ensure", "resume", "status", "list", "forget"] {
        let output = Command::new(BINARY)
            .args(["clone", command, "--help"])
            .output()
            .unwrap();
        assert!(output.status.success());
        let text = String::from_utf8_lossy(&output.stdout);
        assert!(text.contains("Examples:"), "{command}: {text}");
        assert!(text.contains("pgreplica clone"), "{command}: {text}");
    }
    let output = Command::new(BINARY)
        .args(["generate", "man"])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&output.stdout).contains(".TH pgreplica"));
}

#[test]
fn a_config_error_names_file_and_line_and_exits_1_without_touching_the_store() {
    let scratch = Scratch::new();
    let conf = scratch.write(
        "repmgr.conf",
        "node_id=2\nnode_name='n2'\nbarman_host='barman@backup'\npg_bindir=/usr/bin\n",
    );
    let output = scratch.run_as_postgres(&[
        "clone",
        "start",
        "-f",
        conf.to_str().unwrap(),
        "-D",
        scratch.path("data").to_str().unwrap(),
    ]);
    assert_eq!(output.status.code(), Some(1), "{}", stderr(&output));
    let text = stderr(&output);
    let location = format!("{}:", conf.display());
    assert!(text.contains(&format!("{location}3")), "{text}");
    assert!(text.contains(&format!("{location}4")), "{text}");
    assert!(text.contains("HINT:"), "{text}");
    assert!(
        !scratch.path("state").join("clones").exists()
            || is_empty(&scratch.path("state").join("clones"))
    );
    assert!(!scratch.path("data").exists());
}

#[test]
fn resume_and_status_of_an_unknown_clone_exit_42() {
    let scratch = Scratch::new();
    let output = scratch.run_as_postgres(&["clone", "resume", "main-00000000"]);
    assert_eq!(output.status.code(), Some(42), "{}", stderr(&output));
    assert!(stderr(&output).contains("there is no clone main-00000000 to resume"));
    let output = scratch.run_as_postgres(&["clone", "status", "main-00000000"]);
    assert_eq!(output.status.code(), Some(42), "{}", stderr(&output));
    let output = scratch.run_as_postgres(&["clone", "status", "--json"]);
    assert!(output.status.success(), "{}", stderr(&output));
    let value: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(value["clones"], serde_json::json!([]));
    // Without clones, the text says which state directory it looked in.
    let output = scratch.run_as_postgres(&["clone", "status"]);
    assert!(output.status.success(), "{}", stderr(&output));
    let text = String::from_utf8_lossy(&output.stdout);
    let state = scratch.path("state");
    assert!(
        text.contains(&format!(
            "no clones in the state directory \"{}\"",
            state.display()
        )),
        "{text}"
    );
}

fn is_empty(dir: &Path) -> bool {
    std::fs::read_dir(dir).map_or(true, |mut d| d.next().is_none())
}

#[test]
fn the_operators_word_on_the_api_operation_is_a_documented_flag_of_resume() {
    let output = Command::new(BINARY)
        .args(["clone", "resume", "--help"])
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&output.stdout);
    assert!(help.contains("--api-operation <ID|new>"), "{help}");
    assert!(help.contains("--api-operation new"), "the example: {help}");
    let output = Command::new(BINARY)
        .args(["generate", "man"])
        .output()
        .unwrap();
    let man = String::from_utf8_lossy(&output.stdout);
    assert!(man.contains("api\\-operation"), "{man}");

    // Not an id: refused by the parser, naming what is expected.
    let scratch = Scratch::new();
    let output =
        scratch.run_as_postgres(&["clone", "resume", "main-00000000", "--api-operation", "a/b"]);
    assert!(!output.status.success());
    assert!(
        stderr(&output).contains("expected \"new\" or an operation id"),
        "{}",
        stderr(&output)
    );

    // A clone that does not restore through pg-backup-api has no operation to choose: exit 42,
    // and the record is left as it was. (pg_basebackup mode, stopped at FetchParams: its
    // source node does not answer.)
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
        .to_string();
    let data = scratch.path("data");
    let data = data.to_str().unwrap();
    let output = scratch.run_as_postgres(&[
        "clone",
        "start",
        "--without-barman",
        "-D",
        data,
        "-h",
        "127.0.0.1",
        "-p",
        &closed,
        "-U",
        "postgres",
        "--retries",
        "0",
    ]);
    assert_eq!(output.status.code(), Some(6), "{}", stderr(&output));
    let output = scratch.run_as_postgres(&["clone", "resume", data, "--api-operation", "new"]);
    assert_eq!(output.status.code(), Some(42), "{}", stderr(&output));
    let text = stderr(&output);
    assert!(
        text.starts_with("ERROR: --api-operation new cannot be used: clone data-"),
        "{text}"
    );
    assert!(
        text.contains("restores in pg_basebackup mode, not through pg-backup-api"),
        "{text}"
    );
    let output = scratch.run_as_postgres(&["clone", "status", "--json", data]);
    let value: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(
        value["clones"][0]["record"]["api_choice"],
        serde_json::Value::Null
    );
}
