//! What an operator sees when a connection fails, against the real lab: PostgreSQL's own words
//! (message, SQLSTATE) for a missing role or database and a refused login, which are final,
//! not retried; the cause of a refused connection, which is retried; libpq's rule for a
//! password file open to others; a `-d` keyword pgreplica cannot honour, refused before
//! anything is recorded; a Barman host that accepts TCP and never answers, given up within the
//! documented time (ssh's ConnectTimeout) with exit 12; and a dry run that names the commands
//! `ssh_options` make ssh run (and runs them, as it connects).
//!
//! One lab for the whole file; the scenarios run in order.

mod common;

use common::{debian_lab, Bench};
use lab::relay::Relay;
use serde_json::Value;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Output;
use std::time::{Duration, Instant};

/// A role that logs in with a password (scram-sha-256 on 127.0.0.1).
const PASSWORD_ROLE: &str = "pw_clone";

#[test]
fn connection_failures_in_the_servers_own_words() {
    let bench = Bench::start(debian_lab());
    let lab = &bench.lab;
    let port = lab.primary_port();

    // A missing role and a missing database: the server's words, final (one attempt).
    let dir = lab.new_dir("no-role");
    let conf = bench.repmgr_conf("no_role", &dir, "");
    let out = start(
        &bench,
        &conf,
        &format!("host=127.0.0.1 port={port} user=nobody dbname=postgres"),
    );
    let stderr = failed(&bench, &out, &dir, 6, 1);
    assert!(
        stderr.contains(
            "ERROR: connection to the source node refused: FATAL: role \"nobody\" does not exist"
        ),
        "{stderr}"
    );
    assert!(stderr.contains("DETAIL: SQLSTATE 28000;"), "{stderr}");
    assert!(
        stderr.contains("HINT: role \"nobody\" does not exist on the source node"),
        "{stderr}"
    );

    let dir = lab.new_dir("no-database");
    let conf = bench.repmgr_conf("no_database", &dir, "");
    let out = start(
        &bench,
        &conf,
        &format!("host=127.0.0.1 port={port} user=barman dbname=nodb"),
    );
    let stderr = failed(&bench, &out, &dir, 6, 1);
    assert!(
        stderr.contains(
            "ERROR: connection to the source node refused: FATAL: database \"nodb\" does not exist"
        ),
        "{stderr}"
    );
    assert!(stderr.contains("DETAIL: SQLSTATE 3D000;"), "{stderr}");

    // Nothing listens: retried in the run, then the cause of the transport error.
    let closed = lab::free_port();
    let dir = lab.new_dir("refused");
    let conf = bench.repmgr_conf("refused", &dir, "");
    let out = start(
        &bench,
        &conf,
        &format!("host=127.0.0.1 port={closed} user=barman dbname=postgres"),
    );
    let stderr = failed(&bench, &out, &dir, 6, 3);
    assert!(
        stderr.contains(&format!(
            "ERROR: connection to the source node failed (host=127.0.0.1 port={closed} user=barman dbname=postgres): error connecting to server: Connection refused (os error 111)"
        )),
        "{stderr}"
    );
    assert!(
        stderr.contains("HINT: check -h/-p of the source node"),
        "{stderr}"
    );

    // A password login: a password file readable by others is ignored with libpq's warning,
    // so there is no password (final); 0600 and it is used; a wrong one is the server's 28P01.
    lab.psql(
        port,
        &format!("CREATE ROLE {PASSWORD_ROLE} SUPERUSER LOGIN PASSWORD 'right'"),
    )
    .unwrap();
    lab.set_hba_rules(&format!(
        "host all {PASSWORD_ROLE} 127.0.0.1/32 scram-sha-256\n"
    ))
    .unwrap();
    let passfile = lab.dir().join("pgpass");
    lab.write_file_as_postgres(
        &passfile,
        &format!("127.0.0.1:{port}:*:{PASSWORD_ROLE}:right\n"),
    )
    .unwrap();
    std::fs::set_permissions(&passfile, std::fs::Permissions::from_mode(0o644)).unwrap();
    let dir = lab.new_dir("password");
    let conf = bench.repmgr_conf("password", &dir, "");
    let source = format!("host=127.0.0.1 port={port} user={PASSWORD_ROLE} dbname=postgres");
    let passfile_env = [("PGPASSFILE", passfile.to_str().unwrap())];
    let out = dry_run(&bench, &conf, &source, &passfile_env);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(6), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "WARNING: password file \"{}\" has group or world access; permissions should be u=rw (0600) or less",
            passfile.display()
        )),
        "{stderr}"
    );
    assert!(
        stderr.contains("the server asks for a password and none was found"),
        "{stderr}"
    );
    std::fs::set_permissions(&passfile, std::fs::Permissions::from_mode(0o600)).unwrap();
    let out = dry_run(&bench, &conf, &source, &passfile_env);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let out = dry_run(&bench, &conf, &source, &[("PGPASSWORD", "wrong")]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(6), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "FATAL: password authentication failed for user \"{PASSWORD_ROLE}\""
        )),
        "{stderr}"
    );
    assert!(stderr.contains("DETAIL: SQLSTATE 28P01;"), "{stderr}");
    lab.set_hba_rules("").unwrap();

    // A keyword pgreplica cannot honour, and a misspelt one: refused at once, nothing recorded.
    for (keyword, says) in [
        (
            "sslpassword=x",
            "connection option \"sslpassword\" is not supported",
        ),
        ("sslmod=require", "invalid connection option \"sslmod\""),
    ] {
        let dir = lab.new_dir("refused-keyword");
        let conf = bench.repmgr_conf("refused_keyword", &dir, "");
        let out = start(
            &bench,
            &conf,
            &format!("host=127.0.0.1 port={port} user=barman {keyword}"),
        );
        let stderr = text(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{stderr}");
        assert!(stderr.contains(&format!("ERROR: {says}")), "{stderr}");
        assert!(
            bench.try_status(&dir).is_err(),
            "a clone was recorded: {stderr}"
        );
    }

    // The Barman host accepts TCP and never answers: ssh's ConnectTimeout (10 s unless
    // ssh_options sets it) gives up on each attempt; three attempts and exit 12 with a HINT,
    // within the documented bound (docs/troubleshooting.md: about 40 s), never a hang.
    let silent = Relay::start(lab.ssh_port()).unwrap();
    silent.go_silent();
    let dir = lab.new_dir("silent-barman");
    let conf = bench.repmgr_conf(
        "silent_barman",
        &dir,
        &format!("ssh_options='{}'", lab.ssh_args_to(silent.port()).join(" ")),
    );
    let began = Instant::now();
    let out = start(&bench, &conf, "host=127.0.0.1 user=barman dbname=postgres");
    let took = began.elapsed();
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(12), "{stderr}");
    assert!(
        stderr.contains("ERROR: ssh to the Barman host \"barman@127.0.0.1\" failed: Connection timed out during banner exchange"),
        "{stderr}"
    );
    assert!(
        stderr.contains("HINT: check barman_host and ssh_options"),
        "{stderr}"
    );
    assert_eq!(
        stderr.matches("INFO: Retrying step VerifyBackup").count(),
        2,
        "{stderr}"
    );
    assert!(
        silent.connections() >= 3,
        "{} connections",
        silent.connections()
    );
    assert!(
        took < Duration::from_secs(60),
        "a silent Barman host held the clone for {took:?}, beyond the documented bound"
    );
    drop(silent);

    // ssh_options that make ssh run a command here: the dry run names it, and ran it.
    // A path postgres (who runs pgreplica, hence ssh) may create.
    let marker = lab.new_dir("local-command-ran");
    let dir = lab.new_dir("local-command");
    let conf = bench.repmgr_conf(
        "local_command",
        &dir,
        &format!(
            "ssh_options='{} -o PermitLocalCommand=yes -o \"LocalCommand=touch {}\"'",
            lab.ssh_options(),
            marker.display()
        ),
    );
    let out = dry_run(
        &bench,
        &conf,
        &format!("host=127.0.0.1 port={port} user=barman dbname=postgres"),
        &[],
    );
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(
        stdout.contains(&format!(
            "warning  ssh to the Barman host runs these commands on this host (ssh_options, ~/.ssh/config), and this dry run did too: LocalCommand touch {}",
            marker.display()
        )),
        "{stdout}"
    );
    assert!(marker.exists(), "LocalCommand did not run");
}

/// `clone start -f CONF -d SOURCE` (Barman mode).
fn start(bench: &Bench, conf: &Path, source: &str) -> Output {
    bench.run(&[
        "clone",
        "start",
        "-f",
        &conf.display().to_string(),
        "-d",
        source,
    ])
}

/// `clone start -f CONF -d SOURCE --dry-run` with `env`.
fn dry_run(bench: &Bench, conf: &Path, source: &str, env: &[(&str, &str)]) -> Output {
    let conf = conf.display().to_string();
    bench.run_with_env(
        &["clone", "start", "-f", &conf, "-d", source, "--dry-run"],
        env,
    )
}

/// Asserts the clone failed with `code` and one ERROR after `attempts` attempts of its last
/// step, and returns its stderr.
fn failed(bench: &Bench, out: &Output, dir: &Path, code: i32, attempts: usize) -> String {
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(code), "{stderr}");
    assert_eq!(stderr.matches("ERROR:").count(), 1, "{stderr}");
    assert!(stderr.contains("\nDETAIL: "), "{stderr}");
    let status = bench.status(dir);
    let step = status["phase"].clone();
    let tried: Vec<&Value> = status["history"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|t| t["step"] == step)
        .collect();
    assert_eq!(tried.len(), attempts, "{status}");
    stderr
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}
