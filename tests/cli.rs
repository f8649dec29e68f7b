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
    // The README's install commands: one page per command into a directory, each readable by
    // man(1) as a page.
    let dir = tempfile::tempdir().unwrap();
    let output = Command::new(BINARY)
        .args(["generate", "man"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", stderr(&output));
    let page = std::fs::read_to_string(dir.path().join("pgreplica-clone-start.1")).unwrap();
    assert!(page.contains("\n.TH pgreplica-clone-start 1"), "{page}");
    assert!(page.contains(".SH \"EXIT STATUS\""), "{page}");
    let output = Command::new(BINARY)
        .args(["generate", "bash"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1), "{}", stderr(&output));
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
    let closed = closed_port();
    let data = scratch.path("data");
    let data = data.to_str().unwrap();
    let output = scratch.run_as_postgres(&unanswered(
        "start",
        data,
        &closed,
        "0",
        &["--without-barman"],
    ));
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
        value["clones"][0]["backup_api"]["operator_choice"],
        serde_json::Value::Null
    );
}

/// A refused command line is said as every error is (`ERROR:` and a HINT whose command works)
/// and exits 1, as docs/exit-codes.md says; never clap's `error:` and exit 2.
#[test]
fn a_usage_error_exits_1_in_repmgrs_shape() {
    for (args, message, hint) in [
        (
            &["clone", "start", "--foo"][..],
            "ERROR: unexpected argument '--foo' found\n",
            "HINT: \"pgreplica clone start --help\" lists the options\n",
        ),
        (
            &["clone", "start", "--job", "3"],
            "ERROR: unexpected argument '--job' found\n",
            "HINT: a similar argument exists: '--jobs'; \"pgreplica clone start --help\" lists the options\n",
        ),
        (
            &["clone", "start", "--jobs", "0"],
            "ERROR: invalid value '0' for '--jobs <N>': 0 is not in 1..=64\n",
            "HINT: \"pgreplica clone start --help\" lists the options\n",
        ),
        (
            &["clone"],
            "ERROR: no command given\n",
            "HINT: \"pgreplica clone --help\" lists the options\n",
        ),
        (
            &[],
            "ERROR: no command given\n",
            "HINT: run \"pgreplica --help\" for the commands\n",
        ),
    ] {
        let output = Command::new(BINARY).args(args).output().unwrap();
        let text = stderr(&output);
        assert_eq!(output.status.code(), Some(1), "{args:?}: {text}");
        assert_eq!(text, format!("{message}{hint}"), "{args:?}");
        assert!(output.stdout.is_empty(), "{args:?}");
    }
    // The HINT's command works when pasted.
    let output = Command::new(BINARY)
        .args(["clone", "start", "--help"])
        .output()
        .unwrap();
    assert!(output.status.success());
}

/// repmgr's options that scripts pass: help with -?, the bare version number, -c and
/// --recovery-min-apply-delay with repmgr's meaning (recorded on the clone), and the options
/// with no meaning here refused with the reason — never with clap's guess at a similar one.
#[test]
fn repmgrs_options_are_honoured_or_refused_with_the_reason() {
    for args in [&["-?"][..], &["clone", "-?"], &["clone", "start", "-?"]] {
        let output = Command::new(BINARY).args(args).output().unwrap();
        assert!(output.status.success(), "{args:?}");
        let help = String::from_utf8_lossy(&output.stdout);
        assert!(help.contains("-?, --help"), "{args:?}: {help}");
        // -L says its true default (repmgr's help says NOTICE, its code INFO).
        let words = help.split_whitespace().collect::<Vec<_>>().join(" ");
        assert!(
            words.contains("(default: log_level from repmgr.conf, else INFO)"),
            "{args:?}: {help}"
        );
    }
    let output = Command::new(BINARY)
        .arg("--version-number")
        .output()
        .unwrap();
    assert!(output.status.success());
    assert_eq!(
        String::from_utf8_lossy(&output.stdout),
        format!("{}\n", env!("CARGO_PKG_VERSION"))
    );

    let scratch = Scratch::new();
    let data = scratch.path("data");
    let data = data.to_str().unwrap();
    for (args, option, why) in [
        (
            &["-S", "postgres"][..],
            "-S/--superuser",
            "need no superuser",
        ),
        (
            &["--copy-external-config-files"],
            "--copy-external-config-files",
            "copies the data directory only",
        ),
        (
            &["--copy-external-config-files=pgdata"],
            "--copy-external-config-files",
            "copies the data directory only",
        ),
        (
            &["--no-upstream-connection"],
            "--no-upstream-connection",
            "always connects to the source node",
        ),
        (
            &["-R", "postgres"],
            "-R/--remote-user",
            "runs no ssh command on the source node",
        ),
    ] {
        let mut full = vec!["clone", "start", "--without-barman", "-D", data];
        full.extend_from_slice(args);
        let output = scratch.run_as_postgres(&full);
        let text = stderr(&output);
        assert_eq!(output.status.code(), Some(1), "{args:?}: {text}");
        assert!(
            text.starts_with(&format!(
                "ERROR: repmgr's {option} is not supported by pgreplica: "
            )),
            "{text}"
        );
        assert!(text.contains(why), "{text}");
        assert!(text.contains("\nHINT: "), "{text}");
        assert!(!text.contains("similar"), "{text}");
        assert!(!scratch.path("data").exists());
    }
    // A delay repmgr would refuse is refused here too.
    let output = scratch.run_as_postgres(&[
        "clone",
        "start",
        "--without-barman",
        "-D",
        data,
        "--recovery-min-apply-delay",
        "5 min",
    ]);
    assert_eq!(output.status.code(), Some(1), "{}", stderr(&output));
    assert!(
        stderr(&output).contains("\nERROR: \"--recovery-min-apply-delay\" must be a whole number"),
        "{}",
        stderr(&output)
    );

    // -c and --recovery-min-apply-delay are recorded (pg_basebackup mode, stopped at
    // FetchParams: its source node does not answer).
    let closed = closed_port();
    // A start with `extra` that stops at FetchParams: its stderr and the recorded request.
    let start_recorded = |extra: &[&str]| {
        let mut args = vec!["--without-barman"];
        args.extend_from_slice(extra);
        let output = scratch.run_as_postgres(&unanswered("start", data, &closed, "0", &args));
        assert_eq!(output.status.code(), Some(6), "{}", stderr(&output));
        let status = scratch.run_as_postgres(&["clone", "status", "--json", data]);
        let value: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
        (stderr(&output), value["clones"][0]["request"].clone())
    };
    let (text, request) = start_recorded(&[
        "-c",
        "--recovery-min-apply-delay",
        "5min",
        "--verify-backup",
        "--upstream-conninfo",
        "host=127.0.0.1 port=5433 application_name=other",
    ]);
    // repmgr ignores an application_name there: the standby's is its node_name.
    assert!(
        text.contains("NOTICE: \"application_name\" in --upstream-conninfo is ignored"),
        "{text}"
    );
    assert_eq!(
        request["pg_basebackup_options"],
        serde_json::json!(["--checkpoint=fast"])
    );
    assert_eq!(request["replication"]["recovery_min_apply_delay"], "5min");
    assert_eq!(request["upstream_conninfo"], "host=127.0.0.1 port=5433");

    // A clone that copied nothing yet is replaced by a corrected start, once the new one passed
    // its checks: this source never answers, so the recorded value stays. (One that began
    // copying names the difference: states' lifecycle tests.)
    let (_, request) = start_recorded(&["--upstream-conninfo", "postgresql://127.0.0.1:5434"]);
    assert_eq!(request["upstream_conninfo"], "host=127.0.0.1 port=5433");

    // A password there is refused before anything is recorded, and never echoed.
    let fresh = scratch.path("fresh");
    let output = scratch.run_as_postgres(&[
        "clone",
        "start",
        "--without-barman",
        "-D",
        fresh.to_str().unwrap(),
        "--upstream-conninfo",
        "host=127.0.0.1 password=s3cret",
    ]);
    let text = stderr(&output);
    assert_eq!(output.status.code(), Some(1), "{text}");
    assert!(
        text.contains(
            "\nERROR: --upstream-conninfo holds a password, which pgreplica never records\nHINT: "
        ),
        "{text}"
    );
    assert!(!text.contains("s3cret"), "{text}");
    let output = scratch.run_as_postgres(&["clone", "status", "--json", fresh.to_str().unwrap()]);
    assert_ne!(output.status.code(), Some(0), "{}", stderr(&output));
}

/// `clone COMMAND` of `data` from a source node on `port` that never answers (a clone stops at
/// FetchParams, exit 6) with `--retries RETRIES`, then `extra`.
fn unanswered<'a>(
    command: &'a str,
    data: &'a str,
    port: &'a str,
    retries: &'a str,
    extra: &[&'a str],
) -> Vec<&'a str> {
    let mut args = vec![
        "clone",
        command,
        "-D",
        data,
        "-h",
        "127.0.0.1",
        "-p",
        port,
        "-U",
        "postgres",
        "--retries",
        retries,
    ];
    args.extend_from_slice(extra);
    args
}

/// A port on 127.0.0.1 that nothing listens on.
fn closed_port() -> String {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
        .to_string()
}

/// repmgr.conf's log_level and log_file are honoured (the file gets every line, stamped as
/// repmgr stamps its log), -L wins over log_level, -q leaves errors only, -t leaves out DETAIL
/// and HINT; and a clone without repmgr.conf says at NOTICE which file (none) and which mode
/// were chosen, and why.
#[test]
fn logging_follows_repmgr_conf_and_the_flags_and_says_what_was_chosen() {
    let scratch = Scratch::new();
    let data = scratch.path("data");
    let data = data.to_str().unwrap();
    let closed = closed_port();
    let start = |extra: &[&str]| {
        let mut args = unanswered("start", data, &closed, "0", &["--force"]);
        args.extend_from_slice(extra);
        let output = scratch.run_as_postgres(&args);
        assert_eq!(output.status.code(), Some(6), "{}", stderr(&output));
        stderr(&output)
    };

    // No -f and no repmgr.conf to be found: said, with the mode and why.
    let text = start(&[]);
    assert!(
        text.starts_with("NOTICE: no configuration file: -f was not given and neither ./repmgr.conf nor /etc/repmgr.conf exists\n"),
        "{text}"
    );
    assert!(
        text.contains("NOTICE: cloning in pg_basebackup mode: neither barman_host nor pg_backupapi_host is configured: copying from the source node\n"),
        "{text}"
    );
    assert!(text.contains("INFO: "), "{text}");
    // -q: the error only; -t: no HINT.
    let text = start(&["-q"]);
    assert!(text.starts_with("ERROR: "), "{text}");
    assert!(
        !text.contains("NOTICE: ") && text.contains("\nHINT: "),
        "{text}"
    );
    let text = start(&["-q", "-t"]);
    assert_eq!(text.lines().count(), 1, "{text}");

    // log_level=WARNING and a log_file: NOTICE and INFO stay out, everything else is in both.
    let log = scratch.path("pgreplica.log");
    let conf = scratch.write(
        "repmgr.conf",
        &format!(
            "node_id=2\nnode_name='n2'\nlog_level=WARNING\nlog_file='{}'\n",
            log.display()
        ),
    );
    std::fs::set_permissions(scratch.dir.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    let text = start(&["-f", conf.to_str().unwrap()]);
    assert!(text.starts_with("ERROR: "), "{text}");
    let logged = std::fs::read_to_string(&log).unwrap();
    let lines: Vec<&str> = logged.lines().collect();
    assert!(!lines.is_empty());
    for (line, shown) in lines.iter().zip(text.lines()) {
        // [2026-11-30 13:43:31] [ERROR] …, the same text as on stderr.
        let (stamp, rest) = line.split_at(22);
        assert!(
            stamp.starts_with('[') && stamp.ends_with("] ") && stamp.len() == 22,
            "{line}"
        );
        let (level, message) = shown.split_once(": ").unwrap();
        assert_eq!(rest, format!("[{level}] {message}"), "{line}");
    }
    assert_eq!(lines.len(), text.lines().count(), "{logged}\n{text}");
    // -L wins over log_level.
    let text = start(&[
        "-f",
        conf.to_str().unwrap(),
        "-L",
        "notice",
        "--without-barman",
    ]);
    assert!(
        text.contains("NOTICE: cloning in pg_basebackup mode: --without-barman was given\n"),
        "{text}"
    );
}

/// event_notification_command runs once when a clone run ends, failed here (the success is
/// tests/conf_only.rs's), with repmgr's placeholders filled; `event_notifications` without
/// standby_clone keeps it from running.
#[test]
fn the_event_command_runs_once_per_clone_end_with_the_placeholders_filled() {
    let scratch = Scratch::new();
    let data = scratch.path("data");
    let data = data.to_str().unwrap();
    let events = scratch.path("events");
    let closed = closed_port();
    let conf = |filter: &str| {
        scratch.write(
            "repmgr.conf",
            &format!(
                "node_id=7\nnode_name='n7'\n\
                 event_notification_command='printf \"%%s|\" %n %e %s \"%t\" \"%d\" \"%p\" >> {}; echo >> {}'\n{filter}",
                events.display(),
                events.display()
            ),
        )
    };
    let start = |conf: &Path| {
        let output = scratch.run_as_postgres(&unanswered(
            "start",
            data,
            &closed,
            "1",
            &["-f", conf.to_str().unwrap(), "--without-barman", "--force"],
        ));
        assert_eq!(output.status.code(), Some(6), "{}", stderr(&output));
        stderr(&output)
    };
    std::fs::set_permissions(scratch.dir.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    let text = start(&conf(""));
    // The first attempt, retried, is a WARNING; only the final failure is an ERROR, with its
    // HINT.
    assert_eq!(
        text.matches("WARNING: connection to the source node failed")
            .count(),
        1,
        "{text}"
    );
    assert_eq!(text.matches("ERROR: ").count(), 1, "{text}");
    assert!(
        text.contains("\nHINT: check -h/-p of the source node"),
        "{text}"
    );
    let written = std::fs::read_to_string(&events).unwrap();
    // Once, although the step was tried twice.
    assert_eq!(written.lines().count(), 1, "{written}");
    let fields: Vec<&str> = written.trim_end().split('|').collect();
    assert_eq!(&fields[..3], ["7", "standby_clone", "0"], "{written}");
    // %t: 2026-11-30 13:43:31+0000
    let stamp = fields[3];
    assert_eq!(stamp.len(), 24, "{stamp}");
    assert_eq!(&stamp[4..5], "-");
    assert_eq!(&stamp[10..11], " ");
    assert_eq!(
        fields[4],
        format!(
            "cloned from host 127.0.0.1, port {closed}; backup method: pg_basebackup; --force: Y; failed (exit code 6): connection to the source node failed (host=127.0.0.1 port={closed} user=postgres dbname=postgres): error connecting to server: Connection refused (os error 111)"
        )
    );
    assert_eq!(fields[5], "", "%p is empty for standby_clone");

    std::fs::remove_file(&events).unwrap();
    start(&conf(
        "event_notifications='standby_register, standby_follow'\n",
    ));
    assert!(!events.exists());
    start(&conf(
        "event_notifications='standby_register,standby_clone'\n",
    ));
    assert_eq!(std::fs::read_to_string(&events).unwrap().lines().count(), 1);
}

/// Validates `document` against docs/result.schema.json, the versioned schema of the `--json`
/// results that docs/json.md documents.
fn assert_valid_result(document: &serde_json::Value) {
    if let Some(e) = result_schema_error(document) {
        panic!("{document:#}\ndoes not follow docs/result.schema.json: {e}");
    }
}

/// Why `document` does not follow docs/result.schema.json; None when it does.
fn result_schema_error(document: &serde_json::Value) -> Option<String> {
    schema_error(document, "")
}

/// Why `document` does not follow `$defs/status` of docs/result.schema.json, the schema of
/// `clone status --json`; None when it does.
fn status_schema_error(document: &serde_json::Value) -> Option<String> {
    schema_error(document, "#/$defs/status")
}

/// Why `document` does not follow the part `fragment` of docs/result.schema.json.
fn schema_error(document: &serde_json::Value, fragment: &str) -> Option<String> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/docs/result.schema.json");
    let schema: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let mut schemas = boon::Schemas::new();
    let mut compiler = boon::Compiler::new();
    compiler
        .add_resource("file:///result.schema.json", schema)
        .unwrap();
    let index = compiler
        .compile(
            &format!("file:///result.schema.json{fragment}"),
            &mut schemas,
        )
        .unwrap_or_else(|e| panic!("the schema does not compile: {e:#}"));
    schemas
        .validate(document, index)
        .err()
        .map(|e| format!("{e:#}"))
}

/// The `--json` results of start, resume, ensure and the dry run follow the documented schema,
/// and say what the exit code says; stdout carries the one document and nothing else.
#[test]
fn json_results_of_start_resume_ensure_and_dry_run_follow_the_schema() {
    let scratch = Scratch::new();
    let data = scratch.path("data");
    let data = data.to_str().unwrap();
    let closed = closed_port();
    let json_of = |args: &[&str], code: i32| {
        let output = scratch.run_as_postgres(args);
        assert_eq!(output.status.code(), Some(code), "{}", stderr(&output));
        let value: serde_json::Value = serde_json::from_slice(&output.stdout)
            .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&output.stdout)));
        assert_valid_result(&value);
        assert_eq!(value["exit_code"], code);
        value
    };
    let with = |command, extra: &[&'static str]| {
        let mut extra = extra.to_vec();
        extra.extend(["--json", "--without-barman"]);
        unanswered(command, data, &closed, "0", &extra)
    };

    let dry = json_of(&with("start", &["--dry-run"]), 6);
    assert_eq!(dry["outcome"], "dry_run");
    assert_eq!(dry["mode"], "base_backup");
    assert_eq!(dry["data_dir"], data);
    assert!(dry["dry_run"]["problems"].as_u64().unwrap() >= 1, "{dry:#}");
    let source_check = dry["dry_run"]["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "source node")
        .unwrap_or_else(|| panic!("{dry:#}"));
    assert_eq!(source_check["ok"], false);
    assert_eq!(source_check["error"]["exit_code"], 6);

    let start = json_of(&with("start", &[]), 6);
    assert_eq!(start["command"], "start");
    assert_eq!(start["outcome"], "failed");
    assert_eq!(start["phase"], "fetch_params");
    assert_eq!(start["error"]["exit_code"], 6);
    // The schema holds: Rust's enum spellings and epoch numbers are not in it.
    for (key, wrong) in [
        ("mode", serde_json::json!("BaseBackup")),
        ("phase", serde_json::json!("FetchParams")),
        ("finished_at", serde_json::json!(1_795_000_000_000u64)),
    ] {
        let mut bad = start.clone();
        bad[key] = wrong;
        assert!(result_schema_error(&bad).is_some(), "{key}");
    }
    let id = start["clone_id"].as_str().unwrap().to_string();
    assert!(id.starts_with("data-"), "{start:#}");

    let resume = json_of(&["clone", "resume", "--json", &id], 6);
    assert_eq!(resume["command"], "resume");
    assert_eq!(resume["outcome"], "failed");
    assert_eq!(resume["clone_id"], id.as_str());
    assert_eq!(resume["phase"], "fetch_params");

    let ensure = json_of(&with("ensure", &[]), 6);
    assert_eq!(ensure["command"], "ensure");
    assert_eq!(ensure["outcome"], "failed");

    // Refused before any clone is named: the document says so with nulls.
    let refused = json_of(&with("start", &["-S", "postgres"]), 1);
    assert_eq!(refused["clone_id"], serde_json::Value::Null);
    assert_eq!(refused["mode"], serde_json::Value::Null);
    assert!(refused["error"]["hint"].is_string(), "{refused:#}");
    let unknown = json_of(&["clone", "resume", "--json", "main-00000000"], 42);
    assert_eq!(unknown["outcome"], "failed");

    // `clone status --json` of the clone these commands left follows the schema too.
    let output = scratch.run_as_postgres(&["clone", "status", "--json", &id]);
    assert!(output.status.success(), "{}", stderr(&output));
    let status: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    if let Some(e) = status_schema_error(&status) {
        panic!("{status:#}\ndoes not follow $defs/status of docs/result.schema.json: {e}");
    }
    assert_eq!(status["schema_version"], 1);
    let clone = &status["clones"][0];
    assert_eq!(clone["clone_id"], id.as_str());
    assert_eq!(clone["mode"], "base_backup");
    assert_eq!(clone["phase"], "fetch_params");
    assert_eq!(clone["running"], false);
    assert_eq!(clone["last_error"]["exit_code"], 6);
    // start, resume and ensure each tried FetchParams (and its retries): one history of them.
    let history = clone["history"].as_array().unwrap();
    assert!(history.len() >= 3, "{clone:#}");
    assert!(
        history
            .iter()
            .all(|t| t["step"] == "fetch_params" && t["outcome"] != "succeeded"),
        "{clone:#}"
    );
    assert!(!status.to_string().contains("\"record\":"), "{status:#}");
    for (key, wrong) in [
        ("phase", serde_json::json!({"At": "FetchParams"})),
        ("created_at", serde_json::json!(1_795_000_000_000u64)),
    ] {
        let mut bad = status.clone();
        bad["clones"][0][key] = wrong;
        assert!(status_schema_error(&bad).is_some(), "{key}");
    }
}

/// `clone status --json` of a synthetic record with every part set follows `$defs/status`.
mod synthetic_status {
    use super::status_schema_error;
    use pgreplica::error::{Error, ErrorKind};
    use pgreplica::status::Shown;
    use pgreplica::store::{FileCounts, LiveProgress, StatusView};
    use serde_json::{json, Value};
    use states::api::OperatorChoice;
    use states::{
        ApiOperation, BackupFacts, BackupFormat, BackupKind, ChainMember, CloneId, CloneRecord,
        CloneRequest, Compression, Facts, FailureKind, Mode, OutcomeKind, Phase, SourceParams,
        Step, StepFailure, Tablespace, TransferSummary, Transition, Verification,
    };

    /// A pg-backup-api record with every part the document shows set: facts of each kind, an
    /// operation, abandoned ones, the operator's word, a step in flight, a failure, a history.
    /// Built through the stored form, as `clone status` reads it from sled.
    fn synthetic_record() -> CloneRecord {
        let request = CloneRequest {
            mode: Mode::BackupApi,
            data_dir: "/var/lib/postgresql/15/main".to_string(),
            tablespace_mapping: vec![("/a".to_string(), "/b".to_string())],
            ..CloneRequest::default()
        };
        let id = CloneId::for_data_dir(&request.data_dir);
        let mut stored =
            serde_json::to_value(CloneRecord::new(id, request, 1_795_000_000_250)).unwrap();
        let member = |backup_id: &str, format| ChainMember {
            backup_id: backup_id.to_string(),
            backup_dir: format!("/barman/pg/base/{backup_id}"),
            data_subdir: "data".to_string(),
            format,
            size_bytes: 100,
            tablespaces: Vec::new(),
        };
        let facts = Facts {
            backup: Some(BackupFacts {
                backup_id: "20261130T100000".to_string(),
                pg_version: 150_018,
                tablespaces: vec![Tablespace {
                    name: "tbs".to_string(),
                    oid: 16_385,
                    location: "/tbs".to_string(),
                }],
                kind: BackupKind::Incremental {
                    chain: vec![
                        member("20261129T100000", BackupFormat::Plain),
                        member(
                            "20261130T100000",
                            BackupFormat::Tar {
                                compression: Compression::Zstd,
                                encrypted: true,
                            },
                        ),
                    ],
                },
                ..BackupFacts::default()
            }),
            params: Some(SourceParams {
                server_version_num: 90_624,
                ..SourceParams::default()
            }),
            transfer: Some(TransferSummary {
                files: 3,
                bytes_total: 300,
                ..TransferSummary::default()
            }),
            verification: Some(Verification::Checked {
                pg_major: 15,
                system_identifier: "7312345678901234567".to_string(),
                bytes: 300,
            }),
            ..Facts::default()
        };
        stored["facts"] = serde_json::to_value(facts).unwrap();
        stored["phase"] = serde_json::to_value(Phase::At(Step::Transfer)).unwrap();
        stored["in_flight"] = json!({"step": Step::Transfer, "started_at": 1_795_000_009_000u64});
        stored["attempts"] = json!(2);
        stored["last_error"] = serde_json::to_value(StepFailure {
            kind: FailureKind::Retryable,
            message: "rsync failed".to_string(),
            hint: Some("resume it".to_string()),
            exit_code: 2,
        })
        .unwrap();
        stored["history"] = serde_json::to_value(
            [OutcomeKind::Succeeded, OutcomeKind::FailedRetryable].map(|outcome| Transition {
                step: Step::Transfer,
                started_at: 1_795_000_001_000,
                ended_at: 1_795_000_003_500,
                outcome,
                message: None,
            }),
        )
        .unwrap();
        stored["api_operation"] = serde_json::to_value(ApiOperation {
            attempt_started_at: 1_795_000_002_000,
            operation_id: Some("20261130T100500".to_string()),
            ..ApiOperation::default()
        })
        .unwrap();
        stored["api_choice"] = serde_json::to_value(OperatorChoice::PostNew).unwrap();
        stored["api_abandoned"] = json!(["20261130T100100"]);
        serde_json::from_value(stored).expect("the stored form of a record")
    }

    fn document(shown: &[Shown]) -> Value {
        let mut out = Vec::new();
        pgreplica::status_json::write(shown, &mut out).unwrap();
        serde_json::from_slice(&out).unwrap()
    }

    #[test]
    fn a_synthetic_record_of_every_part_follows_the_schema() {
        let running = StatusView {
            record: synthetic_record(),
            running: true,
            pid: Some(4242),
            updated_at: Some(1_795_000_010_125),
            live: Some(LiveProgress {
                step: Step::Transfer,
                bytes_done: 10,
                bytes_total: 300,
                files_done: 1,
                files_total: 3,
                rate_bytes_per_sec: 5,
                eta_secs: Some(58),
            }),
            files: None,
        };
        let stopped = StatusView {
            running: false,
            pid: None,
            updated_at: None,
            live: None,
            files: Some(FileCounts {
                files_done: 1,
                bytes_done: 10,
                files_total: 3,
                bytes_total: 300,
            }),
            ..running.clone()
        };
        let damaged = Shown::Damaged {
            id: CloneId::for_data_dir("/srv/broken"),
            error: Error::new(ErrorKind::Store, "the record cannot be read").hint("forget it"),
        };
        let doc = document(&[Shown::Clone(running), Shown::Clone(stopped), damaged]);
        if let Some(e) = status_schema_error(&doc) {
            panic!("{doc:#}\ndoes not follow $defs/status: {e}");
        }
        let clone = &doc["clones"][0];
        assert_eq!(doc["schema_version"], 1);
        assert_eq!(clone["phase"], "transfer");
        assert_eq!(clone["mode"], "backup_api");
        assert_eq!(clone["request"]["mode"], "backup_api");
        assert_eq!(clone["created_at"], "2026-11-18T11:06:40.250Z");
        assert_eq!(clone["in_flight"]["step"], "transfer");
        assert_eq!(clone["history"][1]["outcome"], "failed_retryable");
        assert_eq!(clone["history"][1]["duration_ms"], 2500);
        assert_eq!(clone["progress"]["step"], "transfer");
        assert_eq!(clone["progress"]["eta_secs"], 58);
        assert_eq!(clone["facts"]["verification"]["method"], "checked");
        assert_eq!(clone["facts"]["backup"]["kind"], "incremental");
        assert_eq!(clone["facts"]["backup"]["chain"][1]["compression"], "zstd");
        // Versions as PostgreSQL gives them: the text `server_version`, the number beside it.
        assert_eq!(clone["facts"]["backup"]["server_version"], "15.18");
        assert_eq!(clone["facts"]["backup"]["server_version_num"], 150_018);
        assert_eq!(clone["facts"]["params"]["server_version"], "9.6.24");
        assert_eq!(clone["facts"]["params"]["server_version_num"], 90_624);
        assert_eq!(clone["backup_api"]["operator_choice"], "new");
        assert_eq!(clone["last_error"]["retryable"], true);
        assert_eq!(doc["clones"][1]["progress"]["step"], Value::Null);
        assert_eq!(doc["clones"][1]["progress"]["files_total"], 3);
        assert_eq!(doc["clones"][2]["damaged"], true);
        // One history, and no stored form: Rust's enum shapes appear nowhere.
        let text = doc.to_string();
        for shape in [
            "\"At\"",
            "Transfer",
            "FailedRetryable",
            "Incremental",
            "Checked",
            "\"record\":",
        ] {
            assert!(!text.contains(shape), "{shape} in {doc:#}");
        }
        // The schema holds: the shapes of the stored form are refused.
        for (key, wrong) in [
            ("phase", json!({"At": "Transfer"})),
            ("created_at", json!(1_795_000_000_250u64)),
            ("record", json!({})),
        ] {
            let mut bad = doc.clone();
            bad["clones"][0][key] = wrong;
            assert!(status_schema_error(&bad).is_some(), "{key}");
        }
        // ... and a version text given as the number, which the text output never prints.
        let mut bad = doc.clone();
        bad["clones"][0]["facts"]["backup"]["server_version"] = json!(150_018);
        assert!(status_schema_error(&bad).is_some());
        bad["clones"][0]["facts"]["backup"]["server_version"] = json!("150018");
        assert!(status_schema_error(&bad).is_some());
    }
}
