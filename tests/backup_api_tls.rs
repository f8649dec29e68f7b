//! pg-backup-api mode through TLS, with real parts: a throwaway CA and certificates made by
//! `openssl`, and stunnel terminating TLS in front of `pgreplica-apiserver` (plain http on
//! 127.0.0.1) and refusing clients without a certificate its CA signed — the shape production
//! has. A clone with `pg_backupapi_ca_file`, `pg_backupapi_cert_file` and `pg_backupapi_key_file`
//! gives a streaming standby — with credentials for the proxy in `pg_backupapi_host`
//! (`https://user:password@…`), which reach the server and nothing else: not a log line, not the
//! store, not `clone status --json`; a missing client certificate and a CA that did not sign
//! the proxy's certificate stop the clone at once with exit code 28 and say which key to fix:
//! certificate problems are not retried.
//!
//! The server binary is built by `cargo test --workspace` (and `cargo xtask test`); run alone,
//! `cargo build -p pgreplica-apiserver` first — the tests fail loudly when it is missing.

mod common;

use common::api::{self, api_conf, ApiServer};
use common::{debian_lab, Bench};
use std::net::TcpStream;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// The throwaway PKI in `<lab>/tls/`.
struct Pki {
    /// The CA that signs the proxy's and the client's certificates.
    ca: PathBuf,
    /// A CA that signed nothing the proxy presents.
    other_ca: PathBuf,
    server_cert: PathBuf,
    server_key: PathBuf,
    client_cert: PathBuf,
    /// Owned by postgres (pgreplica runs as postgres), mode 0600.
    client_key: PathBuf,
}

impl Pki {
    fn generate(bench: &Bench) -> Pki {
        let dir = bench.lab.dir().join("tls");
        std::fs::create_dir_all(&dir).unwrap();
        let file = |name: &str| dir.join(name);
        let ca = self_signed_ca(&dir, "ca");
        let other_ca = self_signed_ca(&dir, "other-ca");
        let server_cert = signed(
            &dir,
            "server",
            "127.0.0.1",
            "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n",
        );
        let client_cert = signed(&dir, "client", "pgreplica", "extendedKeyUsage=clientAuth\n");
        let client_key = file("client.key");
        let text = std::fs::read_to_string(&client_key).unwrap();
        bench
            .lab
            .write_file_as_postgres(&client_key, &text)
            .unwrap();
        std::fs::set_permissions(&client_key, std::fs::Permissions::from_mode(0o600)).unwrap();
        Pki {
            ca,
            other_ca,
            server_cert,
            server_key: file("server.key"),
            client_cert,
            client_key,
        }
    }
}

/// `openssl ARGS` in `dir` (arguments split at spaces: the lab's file names have none), which
/// must succeed.
fn openssl(dir: &Path, args: &str) {
    let output = Command::new(lab::OPENSSL)
        .args(args.split(' '))
        .current_dir(dir)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e} (cargo xtask install)", lab::OPENSSL));
    assert!(
        output.status.success(),
        "openssl {args}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// A P-256 key `NAME.key` and a self-signed CA certificate `NAME.pem`.
fn self_signed_ca(dir: &Path, name: &str) -> PathBuf {
    openssl(
        dir,
        &format!(
            "req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
             -keyout {name}.key -out {name}.pem -days 2 -subj /CN=pgreplica-test-{name} \
             -addext basicConstraints=critical,CA:TRUE \
             -addext keyUsage=critical,keyCertSign,cRLSign"
        ),
    );
    dir.join(format!("{name}.pem"))
}

/// A P-256 key `NAME.key` and a certificate `NAME.pem` for `common_name`, signed by `ca.pem`,
/// with the X.509v3 `extensions` (lines of an openssl extension file).
fn signed(dir: &Path, name: &str, common_name: &str, extensions: &str) -> PathBuf {
    std::fs::write(
        dir.join(format!("{name}.ext")),
        format!("basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\n{extensions}"),
    )
    .unwrap();
    openssl(
        dir,
        &format!(
            "req -new -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
             -keyout {name}.key -out {name}.csr -subj /CN={common_name}"
        ),
    );
    openssl(
        dir,
        &format!(
            "x509 -req -in {name}.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 2 \
             -extfile {name}.ext -out {name}.pem"
        ),
    );
    dir.join(format!("{name}.pem"))
}

/// stunnel in the foreground: TLS on `port`, plain http to the API server, client certificates
/// required and verified against the PKI's CA.
struct TlsProxy {
    child: Child,
    port: u16,
    log: PathBuf,
}

impl TlsProxy {
    fn start(bench: &Bench, pki: &Pki, backend_port: u16) -> TlsProxy {
        let port = lab::free_port();
        let config = bench.lab.dir().join("tls/stunnel.conf");
        let log = bench.lab.log_dir().join("stunnel.log");
        std::fs::write(
            &config,
            format!(
                "foreground = yes\n\
                 pid =\n\
                 debug = info\n\
                 [api]\n\
                 accept = 127.0.0.1:{port}\n\
                 connect = 127.0.0.1:{backend_port}\n\
                 cert = {cert}\n\
                 key = {key}\n\
                 CAfile = {ca}\n\
                 verifyChain = yes\n\
                 requireCert = yes\n",
                cert = pki.server_cert.display(),
                key = pki.server_key.display(),
                ca = pki.ca.display(),
            ),
        )
        .unwrap();
        let child = Command::new(lab::STUNNEL)
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {}: {e} (cargo xtask install)", lab::STUNNEL));
        let mut proxy = TlsProxy { child, port, log };
        lab::wait_for("stunnel listens", Duration::from_secs(20), || {
            if let Some(status) = proxy.child.try_wait().unwrap() {
                panic!("stunnel exited ({status}):\n{}", proxy.log_text());
            }
            Ok(TcpStream::connect(("127.0.0.1", port)).is_ok())
        })
        .unwrap_or_else(|e| panic!("{e}\n{}", proxy.log_text()));
        proxy
    }

    /// `pg_backupapi_host` for the API behind the proxy.
    fn host(&self) -> String {
        format!("https://127.0.0.1:{}", self.port)
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for TlsProxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The TLS keys of a repmgr.conf: the CA file, and the client certificate when `client` is set.
fn tls_keys(ca: &Path, client: Option<&Pki>) -> String {
    let mut keys = format!("pg_backupapi_ca_file='{}'\n", ca.display());
    if let Some(pki) = client {
        keys.push_str(&format!(
            "pg_backupapi_cert_file='{}'\npg_backupapi_key_file='{}'\n",
            pki.client_cert.display(),
            pki.client_key.display()
        ));
    }
    keys
}

/// A TLS-mode lab: the bench, the PKI, the API server with the switches `server`, and the
/// proxy in front of it.
fn tls_bench(server: &[&str]) -> (Bench, Pki, ApiServer, TlsProxy) {
    let bench = Bench::start(debian_lab());
    let pki = Pki::generate(&bench);
    let server = api::start(&bench, server);
    let proxy = TlsProxy::start(&bench, &pki, server.port());
    (bench, pki, server, proxy)
}

/// What one `clone start` came to.
struct Run {
    code: Option<i32>,
    stderr: String,
    data_dir: PathBuf,
}

/// Runs `clone start` through the proxy at `host` into a new data directory `name`, with the
/// TLS keys `keys` in its repmgr.conf.
fn clone_with(bench: &Bench, host: &str, name: &str, keys: &str) -> Run {
    let data_dir = bench.lab.new_dir(name);
    let conf = api_conf(bench, host, &data_dir, keys);
    let args = bench.start_args(&conf, &[]);
    let output = bench.run(&args.iter().map(String::as_str).collect::<Vec<_>>());
    Run {
        code: output.status.code(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        data_dir,
    }
}

/// The proxy's credentials: a password with a reserved character, %-escaped in the URL.
const USER: &str = "pgreplica";
const PASSWORD: &str = "s3cr:et";
const PASSWORD_IN_URL: &str = "s3cr%3Aet";

/// Every file under `dir` that holds `needle`, read as bytes.
fn files_holding(dir: &Path, needle: &str) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(&dir).unwrap().flatten() {
            let path = entry.path();
            if path.is_dir() {
                pending.push(path);
            } else if std::fs::read(&path)
                .unwrap()
                .windows(needle.len())
                .any(|w| w == needle.as_bytes())
            {
                found.push(path);
            }
        }
    }
    found
}

#[test]
fn clone_through_a_tls_proxy_that_checks_client_certificates_streams() {
    // The API server checks basic authentication, as a proxy in front of it may.
    let (bench, pki, server, proxy) = tls_bench(&["--require-auth", &format!("{USER}:{PASSWORD}")]);
    let host = format!("https://{USER}:{PASSWORD_IN_URL}@127.0.0.1:{}", proxy.port);
    let Run {
        code,
        stderr,
        data_dir,
        ..
    } = clone_with(&bench, &host, "standby", &tls_keys(&pki.ca, Some(&pki)));
    assert_eq!(code, Some(0), "{stderr}\nstunnel:\n{}", proxy.log_text());
    // The credentials reached the server (it refuses requests without them) and nothing else.
    for secret in [PASSWORD, PASSWORD_IN_URL] {
        assert!(!stderr.contains(secret), "{stderr}");
        let status = bench.status(&data_dir).to_string();
        assert!(!status.contains(secret), "{status}");
        let stored = files_holding(&bench.lab.state_dir(), secret);
        assert!(
            stored.is_empty(),
            "the store holds the password: {stored:?}"
        );
    }
    let target = &bench.status(&data_dir)["request"]["backup_api"];
    assert_eq!(target["host"], proxy.host());
    assert_eq!(
        target["credentials_file"],
        bench
            .lab
            .dir()
            .join("api-standby.conf")
            .display()
            .to_string()
    );
    assert!(
        stderr.contains(&format!("connecting to pg-backup-api at {}", proxy.host())),
        "{stderr}"
    );
    assert!(
        stderr.contains("NOTICE: standby clone (from pg-backup-api) complete"),
        "{stderr}"
    );
    assert_eq!(server.job_files().len(), 1, "{:?}", server.job_files());
    // The requests went through the proxy, which verified the client's certificate.
    let log = proxy.log_text();
    assert!(log.contains("Certificate accepted"), "{log}");
    let standby = bench.start_streaming_standby(&data_dir);
    bench.assert_replicates(&standby);
}

#[test]
fn certificate_problems_exit_28_at_once_naming_the_key_to_fix() {
    let (bench, pki, server, proxy) = tls_bench(&[]);

    // No client certificate: the proxy refuses the handshake.
    let Run { code, stderr, .. } = clone_with(
        &bench,
        &proxy.host(),
        "no-client-cert",
        &tls_keys(&pki.ca, None),
    );
    assert_eq!(code, Some(28), "{stderr}");
    let failed = format!(
        "ERROR: TLS handshake with pg-backup-api at {} failed:",
        proxy.host()
    );
    assert!(
        stderr.contains(&format!(
            "{failed} the server requires a client certificate and none is configured"
        )),
        "{stderr}"
    );
    assert!(
        stderr.contains("HINT: set pg_backupapi_cert_file and pg_backupapi_key_file"),
        "{stderr}"
    );
    // Under TLS 1.3 the proxy's alert comes after the client finished its handshake, so a
    // request may first see only the closed connection (retried once); the handshake's failure
    // then ends the clone: no further call retries and the step is not run again.
    assert!(stderr.matches("Retrying").count() <= 1, "{stderr}");
    assert!(!stderr.contains("Retrying step"), "{stderr}");

    // A CA that did not sign the proxy's certificate: pgreplica refuses the server.
    let Run { code, stderr, .. } = clone_with(
        &bench,
        &proxy.host(),
        "wrong-ca",
        &tls_keys(&pki.other_ca, Some(&pki)),
    );
    assert_eq!(code, Some(28), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "{failed} certificate verification of the server failed: invalid peer certificate: UnknownIssuer"
        )),
        "{stderr}"
    );
    assert!(
        stderr.contains(&format!(
            "HINT: pg_backupapi_ca_file \"{}\" must hold the CA that signed the proxy's certificate",
            pki.other_ca.display()
        )),
        "{stderr}"
    );
    assert!(!stderr.contains("Retrying"), "{stderr}");

    assert!(server.job_files().is_empty(), "{:?}", server.job_files());
}
