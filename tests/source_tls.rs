//! TLS to the source node, against a real PostgreSQL with `ssl = on`, a CA made in the test
//! (`lab::tls::Pki`, `openssl ca`) and `hostssl`-only rules for the clone's roles: libpq's
//! `sslmode` semantics, the certificate settings (`sslrootcert`, `sslcert`/`sslkey`, `sslcrl`),
//! the `PGSSL*` environment, the server's own words when it refuses, and standbys that stream
//! over TLS because `primary_conninfo` carries the settings.
//!
//! One lab for the whole file (its start is most of the time); the scenarios run in order.

mod common;

use common::{debian_lab, Bench};
use lab::tls::Pki;
use serde_json::Value;
use std::path::Path;
use std::process::Output;

/// A role that may connect over TLS only (trust), replication included.
const TLS_ROLE: &str = "tls_clone";
/// A role that may connect over TLS only, with a client certificate (`cert`).
const CERT_ROLE: &str = "tls_cert";

#[test]
fn tls_to_the_source_node_with_libpq_semantics() {
    let bench = Bench::start(debian_lab());
    let lab = &bench.lab;
    let pki = Pki::generate(&lab.dir().join("pki")).expect("make the CA");
    lab.psql(
        lab.primary_port(),
        &format!(
            "CREATE ROLE {TLS_ROLE} SUPERUSER LOGIN REPLICATION; \
             CREATE ROLE {CERT_ROLE} SUPERUSER LOGIN REPLICATION;"
        ),
    )
    .unwrap();
    lab.enable_ssl(&pki).expect("ssl = on");
    lab.require_tls(&[TLS_ROLE], &[CERT_ROLE])
        .expect("hostssl-only rules");
    let port = lab.primary_port();
    let source = |extra: &str| format!("host=127.0.0.1 port={port} dbname=postgres {extra}");

    // sslmode=disable: the server refuses, in its own words, at once (not retried).
    let dir = lab.new_dir("tls-disable");
    let conf = bench.repmgr_conf("tls_disable", &dir, "");
    let out = start(
        &bench,
        &conf,
        &source(&format!("user={TLS_ROLE} sslmode=disable")),
        &[],
    );
    let stderr = failed_once(&bench, &out, &dir, 6);
    assert!(
        stderr.contains(&format!(
            "ERROR: connection to the source node refused: FATAL: pg_hba.conf rejects connection for host \"127.0.0.1\", user \"{TLS_ROLE}\", database \"postgres\", no encryption"
        )),
        "{stderr}"
    );
    assert!(stderr.contains("DETAIL: SQLSTATE 28000;"), "{stderr}");
    assert!(
        stderr
            .contains("HINT: the source node accepts this user only over TLS: set sslmode=require"),
        "{stderr}"
    );

    // verify-full against a CA that did not sign the server's certificate.
    let dir = lab.new_dir("tls-wrong-ca");
    let conf = bench.repmgr_conf("tls_wrong_ca", &dir, "");
    let wrong_ca = format!(
        "user={TLS_ROLE} sslmode=verify-full sslrootcert={}",
        pki.other_ca.display()
    );
    let out = start(&bench, &conf, &source(&wrong_ca), &[]);
    let stderr = failed_once(&bench, &out, &dir, 6);
    let error = format!(
        "ERROR: TLS with the source node failed: the server's certificate is not signed by a CA in sslrootcert \"{}\"",
        pki.other_ca.display()
    );
    assert_error_and_hint(
        &stderr,
        &error,
        "HINT: set sslrootcert to the CA certificate",
    );

    // verify-full with a host name the certificate does not list (it names IP:127.0.0.1).
    let dir = lab.new_dir("tls-wrong-name");
    let conf = bench.repmgr_conf("tls_wrong_name", &dir, "");
    let wrong_name = format!(
        "host=localhost hostaddr=127.0.0.1 port={port} dbname=postgres user={TLS_ROLE} \
         sslmode=verify-full sslrootcert={}",
        pki.ca.display()
    );
    let out = start(&bench, &conf, &wrong_name, &[]);
    let stderr = failed_once(&bench, &out, &dir, 6);
    assert_error_and_hint(
        &stderr,
        "ERROR: TLS with the source node failed: the server's certificate does not name the host \"localhost\"",
        "HINT: connect with a host name the certificate lists",
    );

    // sslmode=require (URI form) from Barman, with a replication slot created over TLS: the
    // standby streams over TLS with the settings in primary_conninfo.
    let dir = lab.new_dir("tls-require");
    let conf = bench.repmgr_conf("tls_require", &dir, "use_replication_slots=on\n");
    let uri = format!("postgresql://{TLS_ROLE}@127.0.0.1:{port}/postgres?sslmode=require");
    let out = start(&bench, &conf, &uri, &[]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let conninfo = primary_conninfo(&dir);
    assert_eq!(
        conninfo,
        format!("host=127.0.0.1 port={port} user={TLS_ROLE} sslmode=require application_name=tls_require")
    );
    let standby = bench.start_streaming_standby(&dir);
    assert_streams_over_tls(&bench, "tls_require");
    standby.stop().unwrap();

    // verify-full from the PGSSL* environment, with pg_basebackup (libpq itself) as the copy.
    let dir = lab.new_dir("tls-verify-full");
    let conf = bench.repmgr_conf("tls_verify_full", &dir, "");
    let out = bench.run_with_env(
        &[
            "clone",
            "start",
            "-f",
            &conf.display().to_string(),
            "--without-barman",
            "-d",
            &source(&format!("user={TLS_ROLE}")),
        ],
        &[
            ("PGSSLMODE", "verify-full"),
            ("PGSSLROOTCERT", &pki.ca.display().to_string()),
        ],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(
        primary_conninfo(&dir),
        format!(
            "host=127.0.0.1 port={port} user={TLS_ROLE} sslmode=verify-full sslrootcert={} application_name=tls_verify_full",
            pki.ca.display()
        )
    );
    let standby = bench.start_streaming_standby(&dir);
    assert_streams_over_tls(&bench, "tls_verify_full");
    standby.stop().unwrap();

    // A client certificate (cert authentication): without one the server refuses in its own
    // words; a key open to others is refused as libpq refuses it; with both the checks pass.
    let (cert, key) = pki.client_certificate(CERT_ROLE, "postgres").unwrap();
    let dir = lab.new_dir("tls-cert");
    let conf = bench.repmgr_conf("tls_cert", &dir, "");
    let with_cert = |extra: &str| {
        source(&format!(
            "user={CERT_ROLE} sslmode=verify-full sslrootcert={} {extra}",
            pki.ca.display()
        ))
    };
    let out = start(&bench, &conf, &with_cert(""), &["--dry-run"]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(6), "{stderr}");
    assert!(
        stderr.contains("connection requires a valid client certificate"),
        "{stderr}"
    );
    let loose_key = lab.dir().join("pki/loose.key");
    std::fs::copy(&key, &loose_key).unwrap();
    chown_postgres(&loose_key, 0o644);
    let out = start(
        &bench,
        &conf,
        &with_cert(&format!(
            "sslcert={} sslkey={}",
            cert.display(),
            loose_key.display()
        )),
        &["--dry-run"],
    );
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(6), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "private key file \"{}\" (sslkey) has group or world access",
            loose_key.display()
        )),
        "{stderr}"
    );
    assert!(
        stderr.contains(&format!("HINT: chmod 0600 \"{}\"", loose_key.display())),
        "{stderr}"
    );
    let out = start(
        &bench,
        &conf,
        &with_cert(&format!(
            "sslcert={} sslkey={}",
            cert.display(),
            key.display()
        )),
        &["--dry-run"],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("ok       source node: reachable"),
        "{}",
        text(&out.stdout)
    );

    // The server's certificate revoked: verify-ca with the CA's revocation list refuses it.
    pki.revoke_server_certificate().unwrap();
    let dir = lab.new_dir("tls-revoked");
    let conf = bench.repmgr_conf("tls_revoked", &dir, "");
    let revoked = format!(
        "user={TLS_ROLE} sslmode=verify-ca sslrootcert={} sslcrl={}",
        pki.ca.display(),
        pki.crl.display()
    );
    let out = start(&bench, &conf, &source(&revoked), &[]);
    let stderr = failed_once(&bench, &out, &dir, 6);
    assert_error_and_hint(
        &stderr,
        "ERROR: TLS with the source node failed: the server's certificate is revoked",
        "HINT: the server needs a new certificate; sslcrl",
    );
}

/// `clone start -f CONF -d SOURCE EXTRA…` (Barman mode unless EXTRA says otherwise).
fn start(bench: &Bench, conf: &Path, source: &str, extra: &[&str]) -> Output {
    let conf = conf.display().to_string();
    let mut args = vec!["clone", "start", "-f", &conf, "-d", source];
    args.extend_from_slice(extra);
    bench.run(&args)
}

/// Asserts the clone failed with `code` in FetchParams after a single attempt (a final error
/// is not retried), and returns its stderr.
fn failed_once(bench: &Bench, out: &Output, dir: &Path, code: i32) -> String {
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(code), "{stderr}");
    assert_eq!(stderr.matches("ERROR:").count(), 1, "{stderr}");
    assert!(!stderr.contains("Retrying step"), "retried: {stderr}");
    let status = bench.status(dir);
    assert_eq!(status["phase"], "fetch_params", "{status}");
    let attempts: Vec<&Value> = status["history"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|t| t["step"] == "fetch_params")
        .collect();
    assert_eq!(attempts.len(), 1, "{status}");
    stderr
}

/// The standby's `primary_conninfo`, unquoted.
fn primary_conninfo(dir: &Path) -> String {
    let auto_conf = std::fs::read_to_string(dir.join("postgresql.auto.conf")).unwrap();
    auto_conf
        .lines()
        .find_map(|l| l.strip_prefix("primary_conninfo = '"))
        .and_then(|v| v.strip_suffix('\''))
        .unwrap_or_else(|| panic!("no primary_conninfo in {auto_conf}"))
        .replace("''", "'")
}

/// The primary's walsender for `application_name` uses TLS (`pg_stat_ssl`).
fn assert_streams_over_tls(bench: &Bench, application_name: &str) {
    common::wait_for_primary(
        bench,
        &format!(
            "SELECT s.ssl FROM pg_stat_replication r JOIN pg_stat_ssl s USING (pid) \
             WHERE r.application_name = '{application_name}'"
        ),
        "t",
    );
}

fn chown_postgres(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    let owner = std::process::Command::new("chown")
        .arg("postgres")
        .arg(path)
        .status()
        .unwrap();
    assert!(owner.success());
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Asserts that the run's stderr holds this ERROR line and this HINT.
fn assert_error_and_hint(stderr: &str, error: &str, hint: &str) {
    assert!(stderr.contains(error), "{stderr}");
    assert!(stderr.contains(hint), "{stderr}");
}
