//! repmgr.conf reading: every rule of the format, every key pgreplica reads, every validation,
//! and a production-sized file, through the public `Config::load`.
//!
//! Static include trees and the production file live in tests/fixtures/config/; one-off
//! files are written into a temporary directory. No test needs anything outside this crate.

use pgreplica::config::{split_args, Config, Location, Warning, MAX_INCLUDE_DEPTH};
use pgreplica::error::{Error, ErrorKind};
use pgreplica::log::Level;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tempfile::TempDir;

fn fixture(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/config")
        .join(rel)
}

/// A temporary directory holding one repmgr.conf (and whatever else a test writes there).
struct Dir {
    dir: TempDir,
}

impl Dir {
    fn new() -> Dir {
        Dir {
            dir: tempfile::tempdir().expect("cannot create a temporary directory"),
        }
    }

    fn write(&self, rel: &str, text: &str) -> PathBuf {
        let path = self.dir.path().join(rel);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, text).unwrap();
        path
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }
}

/// `text` with a `node_id` line appended when it sets none: repmgr (and pgreplica) require one,
/// and the tests of other rules are not about it. Appended, so no line number moves.
fn with_node_id(text: &str) -> String {
    if text.contains("node_id") {
        text.to_string()
    } else {
        format!("{text}\nnode_id=9\n")
    }
}

/// Loads `text` as a repmgr.conf that must be valid.
fn load_ok(text: &str) -> (Config, Vec<Warning>) {
    let dir = Dir::new();
    let path = dir.write("repmgr.conf", &with_node_id(text));
    match Config::load(&path) {
        Ok(loaded) => loaded,
        Err(e) => panic!(
            "expected a valid file, got: {}\n{:?}\n{:?}",
            e.message, e.detail, e.hint
        ),
    }
}

/// Loads `text` as a repmgr.conf that must be rejected; returns the error and the file path.
fn load_err(text: &str) -> (Error, PathBuf) {
    let dir = Dir::new();
    let path = dir.write("repmgr.conf", &with_node_id(text));
    match Config::load(&path) {
        Ok(_) => panic!("expected the file to be rejected:\n{text}"),
        Err(e) => {
            assert_eq!(e.kind, ErrorKind::Config);
            assert_eq!(e.exit_code(), 1);
            (e, path)
        }
    }
}

/// Every problem line of a config error: the message when there is one problem, the detail
/// lines when there are several.
fn problem_lines(e: &Error) -> Vec<String> {
    if e.message == "following errors were found in the configuration file:" {
        e.detail
            .as_deref()
            .unwrap()
            .lines()
            .map(String::from)
            .collect()
    } else {
        vec![e.message.clone()]
    }
}

fn at(path: &Path, line: u32) -> String {
    format!("{}:{line}", path.display())
}

// ---------------------------------------------------------------- format: lines and values

#[test]
fn equals_is_optional_and_whitespace_and_comments_are_ignored() {
    let (c, w) = load_ok(
        "# a comment line\n\
         \n\
         node_id=1\n\
         \tnode_name   'n1'   # comment after a value\n\
         conninfo = 'host=a dbname=repmgr'#comment right after the quote\n\
         replication_user repl\r\n",
    );
    assert!(w.is_empty(), "{w:?}");
    assert_eq!(c.node_id, Some(1));
    assert_eq!(c.node_name.as_deref(), Some("n1"));
    assert_eq!(c.conninfo.as_deref(), Some("host=a dbname=repmgr"));
    assert_eq!(c.replication_user.as_deref(), Some("repl"));
}

#[test]
fn unquoted_values_are_names_numbers_with_units_and_simple_strings() {
    let (c, _) = load_ok(
        "node_name = db1.dc1.example.com\n\
         barman_host = backup-01.example.com:22\n\
         barman_server = pg_main\n\
         recovery_min_apply_delay = 30s\n\
         pg_backupapi_stall_timeout = 90min\n\
         replication_user = _repl\n",
    );
    assert_eq!(c.node_name.as_deref(), Some("db1.dc1.example.com"));
    assert_eq!(c.barman_host.as_deref(), Some("backup-01.example.com:22"));
    assert_eq!(c.barman_server.as_deref(), Some("pg_main"));
    assert_eq!(c.recovery_min_apply_delay.as_deref(), Some("30s"));
    assert_eq!(c.pg_backupapi_stall_timeout, Duration::from_secs(90 * 60));
    assert_eq!(c.replication_user.as_deref(), Some("_repl"));
}

#[test]
fn an_unquoted_path_is_a_syntax_error_as_in_repmgr() {
    let (e, path) = load_err("node_id = 1\npg_bindir=/usr/bin\n");
    assert_eq!(
        e.message,
        format!(
            "{}: syntax error near \"/\": the value of \"pg_bindir\" must be single-quoted",
            at(&path, 2)
        )
    );
    assert!(e.hint.unwrap().contains("pg_bindir='/usr/bin'"));
}

#[test]
fn other_unquoted_values_that_need_quotes_are_syntax_errors() {
    for (text, near) in [
        ("barman_host=barman@backup1\n", "@"),
        ("ssh_options=-q\n", "-"),
        ("restore_command = cp %f %p\n", "%"),
        ("node_name = 'a' 'b'\n", "'…'"),
    ] {
        let (e, path) = load_err(text);
        assert!(
            e.message
                .starts_with(&format!("{}: syntax error near \"{near}\"", at(&path, 1))),
            "{text}: {}",
            e.message
        );
    }
}

#[test]
fn broken_lines_are_syntax_errors_with_their_line() {
    let (e, path) = load_err("node_name = 'open\n");
    assert_eq!(
        e.message,
        format!(
            "{}: unterminated quoted string in the value of \"node_name\"",
            at(&path, 1)
        )
    );
    let (e, path) = load_err("\n\nnode_name =\n");
    assert_eq!(
        e.message,
        format!(
            "{}: syntax error near end of line: \"node_name\" has no value",
            at(&path, 3)
        )
    );
    let (e, _) = load_err("'node_name' = x\n");
    assert!(
        e.message.contains("expected a parameter name"),
        "{}",
        e.message
    );
}

#[test]
fn quoted_strings_decode_doubled_quotes_and_backslash_escapes() {
    let (c, _) = load_ok(concat!(
        "restore_command = 'it''s \\'quoted\\''\n",
        "pg_backupapi_remote_ssh_command = 'a\\nb\\tc\\\\d\\be\\ff\\rg'\n",
        "passfile = '\\101\\102\\103 \\60\\7'\n",
        "node_name = '# not a comment'\n",
        "conninfo = '\\q\\\"'\n",
    ));
    assert_eq!(c.restore_command.as_deref(), Some("it's 'quoted'"));
    assert_eq!(
        c.pg_backupapi_remote_ssh_command.as_deref(),
        Some("a\nb\tc\\d\u{8}e\u{c}f\rg")
    );
    assert_eq!(c.passfile.as_deref(), Some("ABC 0\u{7}"));
    assert_eq!(c.node_name.as_deref(), Some("# not a comment"));
    assert_eq!(c.conninfo.as_deref(), Some("q\""));
}

#[test]
fn a_nul_byte_or_a_line_break_is_refused_where_the_standby_would_read_it() {
    for (key, escape, what) in [
        ("restore_command", "\\000", "a NUL byte"),
        ("archive_cleanup_command", "\\n", "a line break"),
        ("node_name", "\\0", "a NUL byte"),
        ("replication_user", "\\r", "a line break"),
        ("passfile", "\\00", "a NUL byte"),
    ] {
        let (e, path) = load_err(&format!(
            "node_id = 2\n{key} = 'barman-wal-restore{escape} secret'\n"
        ));
        assert_eq!(
            e.message,
            format!(
                "{}: \"{key}\" contains {what}, which PostgreSQL cannot read back from the standby's configuration",
                at(&path, 2)
            )
        );
        assert!(!e.message.contains("secret"), "{}", e.message);
        assert!(e.hint.unwrap().contains("escape"));
    }
    // Elsewhere an escape is just a byte of the value.
    let (c, _) = load_ok("conninfo = 'a\\nb'\n");
    assert_eq!(c.conninfo.as_deref(), Some("a\nb"));
}

#[test]
fn node_id_is_required_when_a_file_is_given_as_repmgr_requires() {
    let dir = Dir::new();
    let path = dir.write(
        "repmgr.conf",
        "node_name = 'n2'\ndata_directory = '/srv/pg'\n",
    );
    let e = Config::load(&path).unwrap_err();
    assert_eq!(e.kind, ErrorKind::Config);
    assert_eq!(
        e.message,
        format!(
            "{}: \"node_id\": required parameter was not found",
            path.display()
        )
    );
    assert!(e.hint.unwrap().contains("node_id"));
    // Among other problems, it is listed with them.
    let path = dir.write("other.conf", "node_name = 'n2'\nbarman_host = 'b'\n");
    let e = Config::load(&path).unwrap_err();
    assert_eq!(
        problem_lines(&e),
        [
            format!(
                "{}: \"node_id\": required parameter was not found",
                path.display()
            ),
            format!(
                "{}: \"barman_host\" is set but \"barman_server\" is not",
                at(&path, 2)
            ),
        ]
    );
    // Without a file, the command line alone still works: nothing requires it.
    assert_eq!(Config::default().node_id, None);
}

#[test]
fn an_escape_that_is_not_utf8_is_an_error() {
    let (e, path) = load_err("node_name = '\\377'\n");
    assert!(
        e.message.starts_with(&format!("{}: ", at(&path, 1))) && e.message.contains("UTF-8"),
        "{}",
        e.message
    );
}

#[test]
fn later_values_override_earlier_ones() {
    let dir = Dir::new();
    let path = dir.write(
        "repmgr.conf",
        "node_name = 'first'\nuse_replication_slots = on\nnode_name = 'second'\nuse_replication_slots = off\nnode_id = 2\n",
    );
    let (c, _) = Config::load(&path).unwrap();
    assert_eq!(c.node_name.as_deref(), Some("second"));
    assert!(!c.use_replication_slots);
    assert_eq!(
        c.location("node_name"),
        Some(&Location {
            file: path.clone(),
            line: 3
        })
    );
    assert_eq!(c.location("use_replication_slots").unwrap().line, 4);
    assert_eq!(c.location("barman_host"), None);
}

#[test]
fn an_empty_value_means_not_set() {
    let (c, _) = load_ok("node_name = 'x'\nnode_name = ''\nrecovery_min_apply_delay = ''\n");
    assert_eq!(c.node_name, None);
    assert_eq!(c.recovery_min_apply_delay, None);
}

#[test]
fn booleans_accept_every_repmgr_spelling_in_any_case() {
    for (word, want) in [
        ("1", true),
        ("true", true),
        ("TRUE", true),
        ("on", true),
        ("On", true),
        ("yes", true),
        ("'YES'", true),
        ("0", false),
        ("false", false),
        ("False", false),
        ("off", false),
        ("OFF", false),
        ("no", false),
        ("'No'", false),
    ] {
        let (c, _) = load_ok(&format!(
            "use_replication_slots = {word}\nuse_primary_conninfo_password = {word}\n"
        ));
        assert_eq!(c.use_replication_slots, want, "{word}");
        assert_eq!(c.use_primary_conninfo_password, want, "{word}");
    }
}

#[test]
fn a_value_that_is_not_a_boolean_is_an_error() {
    let (e, path) = load_err("use_replication_slots = maybe\n");
    assert_eq!(
        e.message,
        format!(
            "{}: \"use_replication_slots\" must be a boolean (true/false, on/off, yes/no, 1/0), not \"maybe\"",
            at(&path, 1)
        )
    );
    let (e, path) = load_err("\nuse_primary_conninfo_password = 2\n");
    assert!(e.message.starts_with(&at(&path, 2)), "{}", e.message);
}

// ---------------------------------------------------------------- format: includes

#[test]
fn includes_of_every_kind_resolve_relative_to_the_including_file() {
    let main = fixture("include/main.conf");
    let (c, warnings) = Config::load(&main).unwrap();

    // include 'sub/node.conf' (relative to main.conf), which includes 'deeper/barman.conf'
    // relative to sub/.
    assert_eq!(c.node_name.as_deref(), Some("from-sub"));
    assert_eq!(c.barman_host.as_deref(), Some("barman@backup1"));
    assert_eq!(c.barman_server.as_deref(), Some("pg"));
    assert_eq!(
        c.location("barman_server"),
        Some(&Location {
            file: fixture("include/sub/deeper/barman.conf"),
            line: 2
        })
    );

    // include_dir: only *.conf, no hidden files, no directories, in name order.
    assert!(c.use_replication_slots);
    assert_eq!(c.node_id, Some(1), ".hidden.conf must not be read");
    assert_eq!(c.recovery_min_apply_delay.as_deref(), Some("2min"));
    assert_eq!(
        c.tablespace_mapping,
        vec![
            ("/ts/one".to_string(), "/new/one".to_string()),
            ("/ts/two".to_string(), "/new/two".to_string()),
        ]
    );
    // A line after the include_dir wins over the directory's files.
    assert_eq!(c.data_directory.as_deref(), Some(Path::new("/srv/pg/main")));

    // include_if_exists of a missing file: a NOTICE naming the directive's line, nothing else.
    assert_eq!(
        warnings,
        vec![Warning {
            level: Level::Notice,
            location: Location {
                file: main.clone(),
                line: 5
            },
            message: format!(
                "skipping missing configuration file \"{}\"",
                fixture("include/absent.conf").display()
            ),
        }]
    );
}

#[test]
fn include_if_exists_reads_a_file_that_exists() {
    let dir = Dir::new();
    dir.write("extra.conf", "node_name = 'extra'\nnode_id = 2\n");
    let main = dir.write("repmgr.conf", "include_if_exists 'extra.conf'\n");
    let (c, warnings) = Config::load(&main).unwrap();
    assert_eq!(c.node_name.as_deref(), Some("extra"));
    assert!(warnings.is_empty());
}

#[test]
fn an_absolute_include_path_is_used_as_is() {
    let dir = Dir::new();
    let extra = dir.write("elsewhere/extra.conf", "node_name = 'abs'\nnode_id = 2\n");
    let main = dir.write(
        "etc/repmgr.conf",
        &format!("include '{}'\n", extra.display()),
    );
    assert_eq!(
        Config::load(&main).unwrap().0.node_name.as_deref(),
        Some("abs")
    );
}

#[test]
fn a_missing_include_or_include_dir_is_an_error_at_the_directive() {
    let (e, path) = load_err("node_id = 1\ninclude 'nope.conf'\n");
    assert_eq!(
        e.message,
        format!(
            "{}: could not read configuration file \"{}\": No such file or directory",
            at(&path, 2),
            path.parent().unwrap().join("nope.conf").display()
        )
    );
    let (e, path) = load_err("include_dir 'nope.d'\n");
    assert_eq!(
        e.message,
        format!(
            "{}: could not open configuration directory \"{}\": No such file or directory",
            at(&path, 1),
            path.parent().unwrap().join("nope.d").display()
        )
    );
    let (e, _) = load_err("include ''\n");
    assert!(e.message.contains("include needs a file"), "{}", e.message);
}

#[test]
fn errors_inside_an_included_file_name_that_file() {
    let dir = Dir::new();
    let inner = dir.write("inner.conf", "\n\npg_bindir=/usr/bin\n");
    let main = dir.write("repmgr.conf", "include 'inner.conf'\nnode_id = 2\n");
    let e = Config::load(&main).unwrap_err();
    assert!(
        e.message
            .starts_with(&format!("{}: syntax error", at(&inner, 3))),
        "{}",
        e.message
    );
}

/// Writes level0.conf … level{n}.conf, each including the next; returns level0.
fn include_chain(dir: &Dir, levels: usize) -> PathBuf {
    for i in 0..levels {
        // The main file sets node_id (after the include, so line 2 stays the include).
        let node_id = if i == 0 { "node_id = 2\n" } else { "" };
        dir.write(
            &format!("level{i}.conf"),
            &format!("# level {i}\ninclude 'level{}.conf'\n{node_id}", i + 1),
        );
    }
    dir.write(&format!("level{levels}.conf"), "node_name = 'bottom'\n");
    dir.path("level0.conf")
}

#[test]
fn includes_nest_up_to_ten_levels() {
    assert_eq!(MAX_INCLUDE_DEPTH, 10);
    let dir = Dir::new();
    let main = include_chain(&dir, MAX_INCLUDE_DEPTH);
    let (c, _) = Config::load(&main).unwrap();
    assert_eq!(c.node_name.as_deref(), Some("bottom"));
}

#[test]
fn an_eleventh_level_is_an_error_naming_the_whole_chain() {
    let dir = Dir::new();
    let main = include_chain(&dir, MAX_INCLUDE_DEPTH + 1);
    let e = Config::load(&main).unwrap_err();
    let chain: Vec<String> = (0..=MAX_INCLUDE_DEPTH)
        .map(|i| at(&dir.path(&format!("level{i}.conf")), 2))
        .collect();
    assert_eq!(
        e.message,
        format!(
            "{}: cannot include \"{}\": includes nest deeper than 10 levels ({})",
            at(&dir.path("level10.conf"), 2),
            dir.path("level11.conf").display(),
            chain.join(" → ")
        )
    );
    assert_eq!(e.hint.as_deref(), Some("flatten the includes"));
}

#[test]
fn an_include_cycle_is_stopped_by_the_depth_limit() {
    let a = fixture("cycle/a.conf");
    let e = Config::load(&a).unwrap_err();
    assert!(
        e.message.contains("includes nest deeper than 10 levels"),
        "{}",
        e.message
    );
    assert!(e.message.contains(&at(&a, 2)), "{}", e.message);
    assert!(
        e.message.contains(&at(&fixture("cycle/b.conf"), 1)),
        "{}",
        e.message
    );
    assert!(e.hint.unwrap().contains("cycle"));
}

// ---------------------------------------------------------------- tablespace_mapping

#[test]
fn tablespace_mapping_repeats_and_accumulates_with_escaped_equals() {
    // In a quoted value \\ is one backslash, so \\= reaches the mapping as \= (as in repmgr).
    let (c, _) = load_ok(concat!(
        "tablespace_mapping = '/srv/ts/a=/data/ts/a'\n",
        "tablespace_mapping = '/srv/ts/x\\\\=y=/data/ts/x\\\\=y'\n",
        "tablespace_mapping '/srv/ts/c=/data/ts/c'\n",
    ));
    assert_eq!(
        c.tablespace_mapping,
        vec![
            ("/srv/ts/a".to_string(), "/data/ts/a".to_string()),
            ("/srv/ts/x=y".to_string(), "/data/ts/x=y".to_string()),
            ("/srv/ts/c".to_string(), "/data/ts/c".to_string()),
        ]
    );
    assert_eq!(c.location("tablespace_mapping").unwrap().line, 3);
}

#[test]
fn tablespace_mapping_must_be_two_absolute_paths() {
    for (value, problem) in [
        ("/old", " is not OLDDIR=NEWDIR"),
        ("=/new", " is not OLDDIR=NEWDIR"),
        ("/a=/b=/c", " has more than one \"=\""),
        (
            "old=/new",
            ": the old directory \"old\" is not an absolute path",
        ),
        (
            "/old=new",
            ": the new directory \"new\" is not an absolute path",
        ),
    ] {
        let (e, path) = load_err(&format!("tablespace_mapping = '{value}'\n"));
        assert_eq!(
            e.message,
            format!("{}: tablespace_mapping \"{value}\"{problem}", at(&path, 1)),
            "{value}"
        );
    }
}

// ---------------------------------------------------------------- keys

#[test]
fn an_unknown_key_is_a_warning_naming_its_line_but_not_its_value() {
    let dir = Dir::new();
    let path = dir.write(
        "repmgr.conf",
        "node_id = 1\nconinfo = 'host=db1 password=hunter2'\nNode_Name = 'x'\n",
    );
    let (c, warnings) = Config::load(&path).unwrap();
    assert_eq!(c.conninfo, None);
    assert_eq!(c.node_name, None, "keys are case-sensitive, as in repmgr");
    assert_eq!(
        warnings,
        vec![
            Warning {
                level: Level::Warning,
                location: Location {
                    file: path.clone(),
                    line: 2
                },
                message: "unknown parameter \"coninfo\"; ignoring".into(),
            },
            Warning {
                level: Level::Warning,
                location: Location {
                    file: path.clone(),
                    line: 3
                },
                message: "unknown parameter \"Node_Name\"; ignoring".into(),
            },
        ]
    );
    assert_eq!(
        warnings[0].to_string(),
        format!("{}: unknown parameter \"coninfo\"; ignoring", at(&path, 2))
    );
}

#[test]
fn a_deprecated_repmgr_key_warns_with_repmgrs_advice() {
    let (_, warnings) = load_ok("node = 3\nloglevel = DEBUG\n");
    let messages: Vec<&str> = warnings.iter().map(|w| w.message.as_str()).collect();
    assert_eq!(
        messages,
        [
            "parameter \"node\" has been renamed to \"node_id\"; ignoring",
            "parameter \"loglevel\" has been renamed to \"log_level\"; ignoring",
        ]
    );
    assert!(warnings.iter().all(|w| w.level == Level::Warning));
}

#[test]
fn every_key_repmgr_knows_is_accepted_silently() {
    // repmgr 4.x–5.5's settings table (configdata.c), minus the keys pgreplica reads.
    let repmgr_keys = [
        "config_directory",
        "repmgr_bindir",
        "replication_type",
        "location",
        "priority",
        "log_facility",
        "log_status_interval",
        "pg_ctl_options",
        "promote_check_timeout",
        "promote_check_interval",
        "primary_follow_timeout",
        "standby_follow_timeout",
        "standby_follow_restart",
        "shutdown_check_timeout",
        "standby_reconnect_timeout",
        "wal_receive_check_timeout",
        "node_rejoin_timeout",
        "archive_ready_warning",
        "archive_ready_critical",
        "replication_lag_warning",
        "replication_lag_critical",
        "witness_sync_interval",
        "failover",
        "promote_command",
        "follow_command",
        "monitor_interval_secs",
        "reconnect_attempts",
        "reconnect_interval",
        "monitoring_history",
        "degraded_monitoring_timeout",
        "async_query_timeout",
        "primary_notification_timeout",
        "repmgrd_standby_startup_timeout",
        "repmgrd_pid_file",
        "standby_disconnect_on_failover",
        "sibling_nodes_disconnect_timeout",
        "connection_check_type",
        "connection_check_query",
        "primary_visibility_consensus",
        "always_promote",
        "failover_validation_command",
        "election_rerun_interval",
        "child_nodes_check_interval",
        "child_nodes_disconnect_min_count",
        "child_nodes_connected_min_count",
        "child_nodes_connected_include_witness",
        "child_nodes_disconnect_timeout",
        "child_nodes_disconnect_command",
        "reconnect_loop_sync",
        "promote_delay",
        "failover_delay",
        "service_start_command",
        "service_stop_command",
        "service_restart_command",
        "service_reload_command",
        "service_promote_command",
        "repmgrd_service_start_command",
        "repmgrd_service_stop_command",
        "event_notification_command",
        "event_notifications",
        "bdr_local_monitoring_only",
        "bdr_recovery_timeout",
    ];
    let text: String = repmgr_keys
        .iter()
        .map(|k| format!("{k} = 'anything at all'\n"))
        .collect();
    let (c, warnings) = load_ok(&text);
    assert!(warnings.is_empty(), "{warnings:?}");
    // None of them is read as a key pgreplica uses (node_id is the one load_ok appends).
    assert_eq!(c.node_id, Some(9));
}

#[test]
fn the_production_file_loads_with_every_value_and_no_warnings() {
    let path = fixture("production.conf");
    let (c, warnings) = Config::load(&path).unwrap();
    // One NOTICE: the rsync options that pgreplica's copy does itself.
    assert_eq!(
        warnings
            .iter()
            .map(|w| (w.level, w.location.line, w.message.as_str()))
            .collect::<Vec<_>>(),
        [(
            Level::Notice,
            41,
            "rsync_options: --archive --checksum --compress --progress --rsh=\"ssh -o StrictHostKeyChecking=no\" left out, pgreplica's copy does what they ask for itself"
        )]
    );
    assert_eq!(c.rsync_options.bwlimit_kbps, None);

    assert_eq!(c.path(), Some(path.as_path()));
    assert_eq!(c.node_id, Some(2));
    assert_eq!(c.node_name.as_deref(), Some("pg-prod-db02"));
    assert_eq!(
        c.conninfo.as_deref(),
        Some("host=pg-prod-db02.dc1.example.net port=5432 user=repmgr dbname=repmgr connect_timeout=2 sslmode=verify-full")
    );
    // Trailing slashes go, as repmgr canonicalises its paths.
    assert_eq!(
        c.data_directory.as_deref(),
        Some(Path::new("/var/lib/postgresql/15/main"))
    );
    assert_eq!(
        c.pg_bindir.as_deref(),
        Some(Path::new("/usr/lib/postgresql/15/bin"))
    );
    assert!(c.use_replication_slots);
    assert_eq!(c.replication_user.as_deref(), Some("repl"));
    assert_eq!(
        c.pg_basebackup_args(),
        [
            "--checkpoint=fast",
            "--waldir=/srv/pg_wal/15/main",
            "--label=repmgr clone"
        ]
    );
    assert_eq!(c.waldir(), Some(Path::new("/srv/pg_wal/15/main")));
    assert_eq!(
        c.restore_command.as_deref(),
        Some(
            "/usr/bin/barman-wal-restore --user barman pg-backup-01.dc1.example.net pg-prod %f %p"
        )
    );
    assert_eq!(
        c.archive_cleanup_command.as_deref(),
        Some("/usr/lib/postgresql/15/bin/pg_archivecleanup /srv/wal_archive %r")
    );
    assert_eq!(c.recovery_min_apply_delay.as_deref(), Some("5min"));
    assert_eq!(
        c.tablespace_mapping,
        vec![
            (
                "/srv/tblspc/fast".to_string(),
                "/srv/tblspc/fast".to_string()
            ),
            (
                "/srv/tblspc/archive".to_string(),
                "/mnt/slow/tblspc/archive".to_string()
            ),
        ]
    );
    assert!(!c.use_primary_conninfo_password);
    assert_eq!(c.passfile.as_deref(), Some("/var/lib/postgresql/.pgpass"));
    assert_eq!(
        c.ssh_args(),
        [
            "-q",
            "-o",
            "ConnectTimeout=10",
            "-o",
            "StrictHostKeyChecking accept-new",
            "-o",
            "ServerAliveInterval=15"
        ]
    );
    assert_eq!(
        c.barman_host.as_deref(),
        Some("barman@pg-backup-01.dc1.example.net")
    );
    assert_eq!(c.barman_server.as_deref(), Some("pg-prod"));
    assert_eq!(
        c.barman_config.as_deref(),
        Some("/etc/barman.d/pg-prod.conf")
    );
    assert_eq!(
        c.pg_backupapi_host.as_deref(),
        Some("https://pg-backup-01.dc1.example.net:7443")
    );
    assert_eq!(c.pg_backupapi_node_name.as_deref(), Some("pg-prod"));
    assert_eq!(
        c.pg_backupapi_remote_ssh_command.as_deref(),
        Some("ssh -p 22 postgres@pg-prod-db02.dc1.example.net")
    );
    assert_eq!(c.pg_backupapi_backup_id.as_deref(), Some("latest"));
    assert_eq!(
        c.pg_backupapi_ca_file.as_deref(),
        Some(Path::new("/etc/ssl/certs/dc1-internal-ca.pem"))
    );
    assert_eq!(
        c.pg_backupapi_cert_file.as_deref(),
        Some(Path::new("/etc/pgreplica/tls/pg-prod-db02.crt"))
    );
    assert_eq!(
        c.pg_backupapi_key_file.as_deref(),
        Some(Path::new("/etc/pgreplica/tls/pg-prod-db02.key"))
    );
    assert_eq!(c.pg_backupapi_stall_timeout, Duration::from_secs(7200));
    assert_eq!(c.pg_backupapi_poll_interval, Duration::from_secs(5));

    assert_eq!(
        c.location("barman_host"),
        Some(&Location {
            file: path.clone(),
            line: 58
        })
    );

    // The views other modules build requests from.
    let barman = c.barman_target().unwrap();
    assert_eq!(
        (
            barman.host.as_str(),
            barman.server.as_str(),
            barman.config.as_deref()
        ),
        (
            "barman@pg-backup-01.dc1.example.net",
            "pg-prod",
            Some("/etc/barman.d/pg-prod.conf")
        )
    );
    let api = c.api_target().unwrap();
    assert_eq!(api.stall_timeout_secs, 7200);
    assert_eq!(
        api.key_file.as_deref(),
        Some("/etc/pgreplica/tls/pg-prod-db02.key")
    );
    let repl = c.replication_settings();
    assert!(repl.use_replication_slots);
    assert_eq!(repl.recovery_min_apply_delay.as_deref(), Some("5min"));
    assert_eq!(
        repl.passfile.as_deref(),
        Some("/var/lib/postgresql/.pgpass")
    );
}

#[test]
fn defaults_when_keys_are_absent() {
    let (c, _) = load_ok("node_id = 1\n");
    assert_eq!(c.pg_backupapi_stall_timeout, Duration::from_secs(3600));
    assert_eq!(c.pg_backupapi_start_timeout, Duration::from_secs(300));
    assert_eq!(c.pg_backupapi_poll_interval, Duration::from_secs(3));
    assert!(!c.use_replication_slots);
    assert!(!c.use_primary_conninfo_password);
    assert!(c.ssh_args().is_empty());
    assert!(c.pg_basebackup_args().is_empty());
    assert_eq!(c.waldir(), None);
    assert!(c.tablespace_mapping.is_empty());
    assert!(c.barman_target().is_none());
    assert!(c.api_target().is_none());

    let d = Config::default();
    assert_eq!(d.path(), None);
    assert_eq!(d.pg_backupapi_stall_timeout, Duration::from_secs(3600));
    assert_eq!(d.pg_backupapi_poll_interval, Duration::from_secs(3));
}

#[test]
fn waldir_comes_from_every_form_of_the_option() {
    for (options, want) in [
        ("--waldir=/w1", "/w1"),
        ("--waldir /w2", "/w2"),
        ("--xlogdir=/x1", "/x1"),
        ("-c fast --xlogdir \"/x 2\"", "/x 2"),
        ("--waldir=/first --waldir=/last", "/last"),
    ] {
        let (c, _) = load_ok(&format!("pg_basebackup_options = '{options}'\n"));
        assert_eq!(c.waldir(), Some(Path::new(want)), "{options}");
    }
}

#[test]
fn durations_of_the_new_keys() {
    let (c, _) = load_ok(
        "pg_backupapi_stall_timeout = 1d\npg_backupapi_poll_interval = '10s'\npg_backupapi_start_timeout = 2min\n",
    );
    assert_eq!(c.pg_backupapi_stall_timeout, Duration::from_secs(86_400));
    assert_eq!(c.pg_backupapi_start_timeout, Duration::from_secs(120));
    assert_eq!(c.pg_backupapi_poll_interval, Duration::from_secs(10));
    let (e, path) = load_err("pg_backupapi_poll_interval = 0\n");
    assert!(
        e.message.starts_with(&format!(
            "{}: \"pg_backupapi_poll_interval\" must be a whole number of seconds",
            at(&path, 1)
        )),
        "{}",
        e.message
    );
    let (e, _) = load_err("pg_backupapi_stall_timeout = 5ms\n");
    assert!(
        e.message.contains("pg_backupapi_stall_timeout"),
        "{}",
        e.message
    );
}

#[test]
fn recovery_min_apply_delay_takes_postgresql_time_units_as_repmgr_checks_them() {
    for ok in ["0", "250ms", "30s", "5min", "2h", "1d"] {
        let (c, _) = load_ok(&format!("recovery_min_apply_delay = '{ok}'\n"));
        assert_eq!(c.recovery_min_apply_delay.as_deref(), Some(ok));
    }
    let (e, path) = load_err("recovery_min_apply_delay = 5m\n");
    assert_eq!(
        e.message,
        format!(
            "{}: \"recovery_min_apply_delay\" must be a whole number with an optional unit ms, s, min, h or d, not \"5m\"",
            at(&path, 1)
        )
    );
}

// ---------------------------------------------------------------- validation

#[test]
fn node_id_must_be_a_positive_integer() {
    assert_eq!(load_ok("node_id = 2147483647\n").0.node_id, Some(i32::MAX));
    for bad in ["0", "-3", "abc", "1.5", "2147483648", "'7 '"] {
        let (e, path) = load_err(&format!("node_id = {bad}\n"));
        assert!(
            e.message.starts_with(&format!(
                "{}: \"node_id\" must be a positive integer",
                at(&path, 1)
            )),
            "{bad}: {}",
            e.message
        );
    }
}

#[test]
fn barman_host_and_barman_server_go_together() {
    let (e, path) = load_err("node_id = 1\nbarman_host = 'barman@b1'\n");
    assert_eq!(
        e.message,
        format!(
            "{}: \"barman_host\" is set but \"barman_server\" is not",
            at(&path, 2)
        )
    );
    assert!(e.hint.unwrap().contains("barman_server='pg'"));

    let (e, path) = load_err("barman_server = pg\n");
    assert_eq!(
        e.message,
        format!(
            "{}: \"barman_server\" is set but \"barman_host\" is not",
            at(&path, 1)
        )
    );

    // An empty value does not count as set.
    let (e, path) = load_err("barman_server = pg\nbarman_host = ''\n");
    assert_eq!(
        e.message,
        format!(
            "{}: \"barman_server\" is set but \"barman_host\" is not",
            at(&path, 1)
        )
    );
}

#[test]
fn pg_backupapi_host_requires_each_of_the_other_three_keys() {
    let (e, path) = load_err("\npg_backupapi_host = 'backup1:7480'\n");
    assert_eq!(
        problem_lines(&e),
        [
            "pg_backupapi_node_name",
            "pg_backupapi_remote_ssh_command",
            "pg_backupapi_backup_id"
        ]
        .map(|k| format!(
            "{}: \"pg_backupapi_host\" is set but \"{k}\" is not",
            at(&path, 2)
        ))
    );

    let (e, path) = load_err(
        "pg_backupapi_host = 'backup1:7480'\npg_backupapi_node_name = pg\npg_backupapi_backup_id = latest\n",
    );
    assert_eq!(
        e.message,
        format!(
            "{}: \"pg_backupapi_host\" is set but \"pg_backupapi_remote_ssh_command\" is not",
            at(&path, 1)
        )
    );

    let (c, _) = load_ok(
        "pg_backupapi_host = 'backup1:7480'\npg_backupapi_node_name = pg\npg_backupapi_backup_id = latest\npg_backupapi_remote_ssh_command = 'ssh postgres@standby1'\n",
    );
    let api = c.api_target().unwrap();
    assert_eq!(api.host, "backup1:7480");
    assert_eq!(api.remote_ssh_command, "ssh postgres@standby1");
    assert_eq!(api.stall_timeout_secs, 3600);
}

#[test]
fn client_certificate_and_key_go_together() {
    let (e, path) = load_err("pg_backupapi_cert_file = '/etc/tls/c.crt'\n");
    assert_eq!(
        e.message,
        format!(
            "{}: \"pg_backupapi_cert_file\" is set but \"pg_backupapi_key_file\" is not",
            at(&path, 1)
        )
    );
    let (e, path) = load_err("\npg_backupapi_key_file = '/etc/tls/c.key'\n");
    assert_eq!(
        e.message,
        format!(
            "{}: \"pg_backupapi_key_file\" is set but \"pg_backupapi_cert_file\" is not",
            at(&path, 2)
        )
    );
    let (c, _) = load_ok(
        "pg_backupapi_cert_file = '/etc/tls/c.crt'\npg_backupapi_key_file = '/etc/tls/c.key'\npg_backupapi_ca_file = '/etc/tls/ca.pem'\n",
    );
    assert_eq!(
        c.pg_backupapi_ca_file.as_deref(),
        Some(Path::new("/etc/tls/ca.pem"))
    );
}

#[test]
fn the_wal_directory_in_pg_basebackup_options_must_be_absolute() {
    for options in [
        "--waldir=pg_wal",
        "--waldir pg_wal",
        "--xlogdir=./x",
        "--xlogdir",
    ] {
        let (e, path) = load_err(&format!("pg_basebackup_options = '{options}'\n"));
        assert!(
            e.message.starts_with(&at(&path, 1))
                && (e.message.contains("absolute path") || e.message.contains("has no value")),
            "{options}: {}",
            e.message
        );
    }
}

#[test]
fn local_paths_must_be_absolute() {
    for key in [
        "data_directory",
        "pg_bindir",
        "pg_backupapi_ca_file",
        "pg_backupapi_cert_file",
        "pg_backupapi_key_file",
    ] {
        let (e, path) = load_err(&format!("{key} = 'relative/dir'\n"));
        assert_eq!(
            e.message,
            format!(
                "{}: \"{key}\" must be an absolute path, not \"relative/dir\"",
                at(&path, 1)
            )
        );
    }
}

#[test]
fn option_strings_that_cannot_be_split_are_errors() {
    let (e, path) = load_err("ssh_options = '-o \"ProxyCommand=ssh bastion'\n");
    assert_eq!(
        e.message,
        format!(
            "{}: \"ssh_options\" cannot be split into arguments: unterminated double quote",
            at(&path, 1)
        )
    );
    let (e, _) = load_err("pg_basebackup_options = '--label=$(hostname)'\n");
    assert!(e.message.contains("pg_basebackup_options"), "{}", e.message);
}

#[test]
fn all_problems_are_reported_together_each_with_file_and_line() {
    let path = fixture("errors.conf");
    let e = Config::load(&path).unwrap_err();
    assert_eq!(e.kind, ErrorKind::Config);
    assert_eq!(e.exit_code(), 1);
    assert_eq!(
        e.message,
        "following errors were found in the configuration file:"
    );
    let lines = problem_lines(&e);
    let expected = [
        (2, "\"node_id\" must be a positive integer, not \"0\""),
        (
            3,
            "\"use_replication_slots\" must be a boolean (true/false, on/off, yes/no, 1/0), not \"maybe\"",
        ),
        (
            4,
            "syntax error near \"/\": the value of \"pg_bindir\" must be single-quoted",
        ),
        (
            6,
            "the WAL directory in pg_basebackup_options must be an absolute path, not \"pg_wal\"",
        ),
        (5, "\"barman_host\" is set but \"barman_server\" is not"),
    ]
    .map(|(line, problem)| format!("{}: {problem}", at(&path, line)));
    assert_eq!(lines, expected);
    assert!(e.hint.unwrap().contains("fix each line listed"));
}

#[test]
fn warnings_ride_along_when_the_file_is_rejected() {
    let (e, path) = load_err("barman_hots = 'barman@b1'\nbarman_server = pg\n");
    assert_eq!(
        e.message,
        format!(
            "{}: \"barman_server\" is set but \"barman_host\" is not",
            at(&path, 2)
        )
    );
    assert_eq!(
        e.detail.as_deref(),
        Some(
            format!(
                "{}: unknown parameter \"barman_hots\"; ignoring (warning)",
                at(&path, 1)
            )
            .as_str()
        )
    );
}

#[test]
fn secrets_never_appear_in_errors_or_warnings() {
    let dir = Dir::new();
    let path = dir.write(
        "repmgr.conf",
        "conninfo 'host=a password=hunter2' extra\nconninfo_typo = 'password=hunter2'\nnode_id = 0\n",
    );
    let e = Config::load(&path).unwrap_err();
    let everything = format!("{} {:?} {:?}", e.message, e.detail, e.hint);
    assert!(!everything.contains("hunter2"), "{everything}");
}

#[test]
fn debug_output_hides_the_conninfo() {
    let (c, _) = load_ok("conninfo = 'host=db1 password=hunter2'\n");
    let shown = format!("{c:?}");
    assert!(!shown.contains("hunter2"), "{shown}");
    assert!(shown.contains("conninfo: Some(\"<redacted>\")"), "{shown}");
}

#[test]
fn a_file_full_of_garbage_stops_after_a_hundred_syntax_errors() {
    let text = "this is not : a repmgr.conf\n".repeat(150);
    let (e, path) = load_err(&text);
    let lines = problem_lines(&e);
    // The hundred syntax errors, where reading stopped, and the node_id it never reached.
    assert_eq!(lines.len(), 102);
    assert_eq!(
        lines[100],
        format!(
            "{}: too many syntax errors; the rest of \"{}\" was not read",
            at(&path, 100),
            path.display()
        )
    );
}

#[test]
fn a_missing_or_unreadable_main_file_is_a_clear_error() {
    let dir = Dir::new();
    let missing = dir.path("nope/repmgr.conf");
    let e = Config::load(&missing).unwrap_err();
    assert_eq!(e.kind, ErrorKind::Config);
    assert_eq!(e.exit_code(), 1);
    assert_eq!(
        e.message,
        format!("configuration file \"{}\" not found", missing.display())
    );
    assert!(e.hint.unwrap().contains("--config-file"));

    // A directory cannot be read as a file.
    let e = Config::load(dir.dir.path()).unwrap_err();
    assert_eq!(
        e.message,
        format!(
            "could not read configuration file \"{}\": Is a directory",
            dir.dir.path().display()
        )
    );
}

// ---------------------------------------------------------------- split_args

#[test]
fn split_args_splits_like_a_posix_shell_without_expanding() {
    assert_eq!(
        split_args(r#"-o 'ProxyJump=bastion' -o "UserKnownHostsFile /etc/ssh/known hosts" -i\ /k"#)
            .unwrap(),
        [
            "-o",
            "ProxyJump=bastion",
            "-o",
            "UserKnownHostsFile /etc/ssh/known hosts",
            "-i /k"
        ]
    );
    assert_eq!(split_args(r#"'$HOME;x'"#).unwrap(), ["$HOME;x"]);
    assert!(split_args("-i $HOME/.ssh/id").is_err());
    assert!(split_args("a; rm -rf /").is_err());
    assert!(split_args("'unterminated").is_err());
}

/// A pg-backup-api conf with `host` as `pg_backupapi_host` on line 1.
fn api_conf(host: &str) -> String {
    format!(
        "node_id = 2\n\
         pg_backupapi_host = '{host}'\n\
         pg_backupapi_node_name = 'pg'\n\
         pg_backupapi_remote_ssh_command = 'ssh postgres@standby'\n\
         pg_backupapi_backup_id = 'latest'\n"
    )
}

#[test]
fn credentials_in_the_api_host_are_kept_out_of_the_target_and_refused_over_http() {
    let dir = Dir::new();
    let path = dir.write("repmgr.conf", &api_conf("https://pgreplica:s3cret@b1:7443"));
    let (c, _) = Config::load(&path).unwrap();
    // What is recorded names the file, never the credentials; Debug hides them.
    assert_eq!(c.pg_backupapi_host.as_deref(), Some("https://b1:7443"));
    let target = c.api_target().unwrap();
    assert_eq!(target.host, "https://b1:7443");
    assert_eq!(
        target.credentials_file.as_deref(),
        Some(path.display().to_string().as_str())
    );
    let credentials = c.pg_backupapi_credentials().unwrap();
    assert_eq!(credentials.user, "pgreplica");
    assert_eq!(credentials.password.as_deref(), Some("s3cret"));
    for shown in [format!("{c:?}"), format!("{target:?}")] {
        assert!(!shown.contains("s3cret"), "{shown}");
    }
    // Without credentials there is nothing to read again.
    let (c, _) = load_ok(&api_conf("https://b1:7443"));
    assert_eq!(c.api_target().unwrap().credentials_file, None);

    for clear in ["http://pgreplica:s3cret@b1:7480", "pgreplica:s3cret@b1"] {
        let (e, path) = load_err(&api_conf(clear));
        assert_eq!(e.kind, ErrorKind::Config);
        assert_eq!(
            e.message,
            format!(
                "{}: \"pg_backupapi_host\" carries credentials (user:password@) but is not an https:// URL: they would cross the network in clear",
                at(&path, 2)
            )
        );
        assert!(e.hint.unwrap().starts_with("give an https:// URL"));
    }
}

// ---------------------------------------------------------------- logging and events

#[test]
fn log_level_log_file_and_the_event_command_are_read_and_checked() {
    let (config, warnings) = load_ok(
        "log_level=notice\nlog_file='/var/log/repmgr/repmgr.log'\n\
         event_notification_command='/usr/local/bin/notify %n %e %s \"%t\" \"%d\"'\n\
         event_notifications='standby_clone,standby_register'\n",
    );
    assert!(warnings.is_empty(), "{warnings:?}");
    assert_eq!(config.log_level, Some(Level::Notice));
    assert_eq!(
        config.log_file.as_deref(),
        Some(Path::new("/var/log/repmgr/repmgr.log"))
    );
    assert_eq!(
        config.event_notification_command.as_deref(),
        Some("/usr/local/bin/notify %n %e %s \"%t\" \"%d\"")
    );
    assert_eq!(
        config.event_notifications.as_deref(),
        Some("standby_clone,standby_register")
    );
    // repmgr's syslog-like levels above ERROR print what ERROR prints.
    assert_eq!(load_ok("log_level=CRIT\n").0.log_level, Some(Level::Error));

    let (error, path) = load_err("log_level=LOUD\nlog_file='relative.log'\n");
    let lines = problem_lines(&error);
    assert_eq!(
        lines,
        [
            format!(
                "{}: invalid value for \"log_level\": \"LOUD\"",
                at(&path, 1)
            ),
            format!(
                "{}: \"log_file\" must be an absolute path, not \"relative.log\"",
                at(&path, 2)
            ),
        ]
    );
    assert!(error.hint.is_some());
}

// ---------------------------------------------------------------- rsync_options

#[test]
fn rsync_options_bwlimit_is_applied_what_rsync_implies_is_noted_and_the_rest_refused() {
    let (config, warnings) = load_ok("rsync_options='--archive --bwlimit=2500 --checksum'\n");
    assert_eq!(config.rsync_options.bwlimit_kbps, Some(2500));
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert_eq!(warnings[0].level, Level::Notice);
    assert_eq!(warnings[0].location.line, 1);
    assert_eq!(
        warnings[0].message,
        "rsync_options: --archive --checksum left out, pgreplica's copy does what they ask for itself"
    );
    let (config, warnings) = load_ok("rsync_options='--bwlimit 4M'\n");
    assert_eq!(config.rsync_options.bwlimit_kbps, Some(4096));
    assert!(warnings.is_empty(), "{warnings:?}");

    // An option pgreplica cannot honour: one ERROR at its line, a HINT naming what to use.
    let (error, path) = load_err("node_id=2\nrsync_options='-a --inplace'\n");
    assert_eq!(
        problem_lines(&error),
        [format!(
            "{}: rsync_options: \"--inplace\" is not supported",
            at(&path, 2)
        )]
    );
    assert_eq!(
        error.hint.as_deref(),
        Some("instead, remove it: pgreplica runs rsync with options of its own and reads its output; --bwlimit is the option it applies (or clone start --bwlimit)")
    );
    let (error, _) = load_err("rsync_options='--rsh=rsh'\n");
    assert!(
        error.hint.as_deref().unwrap().contains("ssh_options"),
        "{error:?}"
    );
    let (error, _) = load_err("rsync_options='--delete'\n");
    assert!(
        error
            .hint
            .as_deref()
            .unwrap()
            .contains("clone start --force"),
        "{error:?}"
    );
}
