//! The pg-backup-api client: the four calls pgreplica needs (`GET /status`, list a server's
//! operations, `POST` a recovery, an operation's status), the URL forms repmgr.conf may give,
//! TLS with a CA file and a client certificate, and bounded retries of what may pass.
//!
//! Every failure is an [`ErrorKind::BackupApi`] error (exit 28) with a HINT. Transport errors,
//! 5xx replies and replies that are not the JSON the contract promises (HTML from a proxy, a
//! truncated body) are retried with exponential backoff and jitter, each retry announced with an
//! `INFO: Retrying...` line; a 404 is final and names what is missing. A failed TLS handshake
//! (an untrusted server certificate, a proxy refusing the client certificate) is final too: it
//! is configuration, not weather, so it fails at once and names the `pg_backupapi_*` key to fix,
//! while connection refused or reset stays retryable.
//!
//! It must not decide anything about the clone: whether a POST may be repeated is the Transfer
//! step's call ([`crate::transfer::backup_api`]), so [`BackupApi::create_recovery`] never
//! retries a request the server may have acted on.

use crate::error::{Error, ErrorKind, Result};
use crate::retry::{with_retry, GaveUp};
use serde_json::Value;
use states::api::ListedOperation;
use states::{ApiTarget, RetryPolicy};
use std::fmt;
use std::future::Future;
use std::time::Duration;

/// repmgr's fixed port of pg-backup-api, used when `pg_backupapi_host` names only a host.
pub const DEFAULT_PORT: u16 = 7480;

/// How long one call keeps retrying transient failures before it gives up (retryably).
const RETRY_FOR: Duration = Duration::from_secs(120);
/// First retry delay, in milliseconds; doubles (with ±50% jitter) up to [`RETRY_MAX_DELAY_MS`].
const RETRY_FIRST_DELAY_MS: u64 = 500;
const RETRY_MAX_DELAY_MS: u64 = 10_000;
/// Connecting must be quick: a dead API is retried rather than waited on.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Whole-request bound: the API answers every call at once (the work runs in a worker).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

/// Status of a recovery operation, as `GET /servers/{server}/operations/{id}` reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OperationStatus {
    /// Only the job file exists: the worker runs (or died without writing its output).
    InProgress,
    /// The output file says the command succeeded.
    Done,
    /// The output file says the command failed.
    Failed,
}

/// The body of a recovery request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecoveryRequest {
    /// Backup id or shortcut (`latest`, …).
    pub backup_id: String,
    /// Where Barman restores to, on the standby.
    pub destination_directory: String,
    /// How Barman reaches the standby.
    pub remote_ssh_command: String,
}

/// What came of a POST: the id, or why the server certainly did not create an operation, or
/// that it may have.
#[derive(Debug)]
pub enum PostOutcome {
    /// 202 with an operation id.
    Created(String),
    /// The request was refused before anything was created (connection refused, the API's 500
    /// for a duplicate id, 503): posting again is safe.
    NotCreated(Error),
    /// The server may have created an operation and the reply was lost or garbled: the caller
    /// must look in the operation list before posting again.
    Unknown(Error),
}

/// A client of one pg-backup-api for one Barman server.
#[derive(Clone, Debug)]
pub struct BackupApi {
    base: String,
    server: String,
    http: reqwest::Client,
    retry_for: Duration,
    /// `pg_backupapi_ca_file`, named in the HINT of an untrusted server certificate.
    ca_file: Option<String>,
    /// `pg_backupapi_cert_file`: whether a refused handshake means "none sent" or "this one
    /// refused".
    cert_file: Option<String>,
}

/// One attempt's failure: worth retrying, or final.
enum Attempt {
    Transient(String),
    Final(Error),
}

impl fmt::Display for Attempt {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Attempt::Transient(reason) => f.write_str(reason),
            Attempt::Final(error) => f.write_str(&error.message),
        }
    }
}

impl BackupApi {
    /// The client for a recorded target (reads the TLS files named in it).
    pub fn from_target(target: &ApiTarget) -> Result<BackupApi> {
        let base = base_url(&target.host)?;
        let mut builder = reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .timeout(REQUEST_TIMEOUT)
            .user_agent(concat!("pgreplica/", env!("CARGO_PKG_VERSION")));
        if let Some(ca_file) = &target.ca_file {
            let pem = read_tls_file(ca_file, "pg_backupapi_ca_file")?;
            let certs = reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| {
                tls_error(
                    ca_file,
                    "pg_backupapi_ca_file",
                    &format!("not a PEM CA bundle: {e}"),
                )
            })?;
            if certs.is_empty() {
                return Err(tls_error(
                    ca_file,
                    "pg_backupapi_ca_file",
                    "holds no certificate",
                ));
            }
            for cert in certs {
                builder = builder.add_root_certificate(cert);
            }
        }
        match (&target.cert_file, &target.key_file) {
            (Some(cert_file), Some(key_file)) => {
                let mut pem = read_tls_file(cert_file, "pg_backupapi_cert_file")?;
                pem.push(b'\n');
                pem.extend(read_tls_file(key_file, "pg_backupapi_key_file")?);
                let identity = reqwest::Identity::from_pem(&pem).map_err(|e| {
                    tls_error(
                        cert_file,
                        "pg_backupapi_cert_file",
                        &format!("certificate and key do not form a client identity: {e}"),
                    )
                })?;
                builder = builder.identity(identity);
            }
            (None, None) => {}
            _ => {
                return Err(
                    Error::new(ErrorKind::Config, "a client certificate needs its key")
                        .hint("set both pg_backupapi_cert_file and pg_backupapi_key_file"),
                )
            }
        }
        let http = builder.build().map_err(|e| {
            Error::new(
                ErrorKind::BackupApi,
                format!("cannot set up the HTTP client for pg-backup-api: {e}"),
            )
        })?;
        Ok(BackupApi {
            base,
            server: target.node_name.clone(),
            http,
            retry_for: RETRY_FOR,
            ca_file: target.ca_file.clone(),
            cert_file: target.cert_file.clone(),
        })
    }

    /// Bounds the retries of one call (tests shorten it).
    pub fn with_retry_for(mut self, retry_for: Duration) -> BackupApi {
        self.retry_for = retry_for;
        self
    }

    /// The API's base URL, e.g. `http://backup1:7480`.
    pub fn base(&self) -> &str {
        &self.base
    }

    /// The Barman server name.
    pub fn server(&self) -> &str {
        &self.server
    }

    /// `GET /status` must answer `"OK"`.
    pub async fn check_status(&self) -> Result<()> {
        let reply = self
            .get_json("/status", &|_| self.unreachable_404("/status"))
            .await?;
        match reply.as_str() {
            Some("OK") => Ok(()),
            _ => Err(Error::new(
                ErrorKind::BackupApi,
                format!("pg-backup-api at {} is not healthy: /status answered {reply}", self.base),
            )
            .hint("check the API's log on the Barman host (\"barman diagnose\" shows Barman's own state)")),
        }
    }

    /// The server's operations (`GET /servers/{server}/operations`); a 404 means Barman has no
    /// such server.
    pub async fn list_operations(&self) -> Result<Vec<ListedOperation>> {
        let path = format!("/servers/{}/operations", segment(&self.server));
        let reply = self
            .get_json(&path, &|message| {
                Error::new(
                    ErrorKind::BackupApi,
                    format!(
                        "Barman server \"{}\" is unknown to pg-backup-api at {} ({message})",
                        self.server, self.base
                    ),
                )
                .hint("check pg_backupapi_node_name: it must name a server of Barman's configuration on the API's host (\"barman list-servers\")")
            })
            .await?;
        parse_operations(&reply).ok_or_else(|| self.malformed(&path, &reply))
    }

    /// An operation's status; a 404 means the API knows no such operation.
    pub async fn operation_status(&self, id: &str) -> Result<OperationStatus> {
        let path = format!(
            "/servers/{}/operations/{}",
            segment(&self.server),
            segment(id)
        );
        let on_404 = |message: &str| {
            Error::new(
                ErrorKind::BackupApi,
                format!(
                    "operation {id} of Barman server \"{}\" is unknown to pg-backup-api at {} ({message})",
                    self.server, self.base
                ),
            )
            .hint(format!(
                "its job file <barman_home>/{}/jobs/{id}.json on the Barman host is gone, or pg_backupapi_host now points at another API; the data directory holds an unfinished restore: remove it and start the clone again",
                self.server
            ))
        };
        self.retrying(|| async {
            let reply = self.get_once(&path, &on_404).await?;
            // repmgr's words for a reply without a status; the next attempt asks again.
            parse_status(&reply).ok_or_else(|| {
                Attempt::Transient(format!(
                    "Incorrect reply received for that operation ID: {reply}"
                ))
            })
        })
        .await
    }

    /// POSTs a recovery, once. It is never repeated here: see [`PostOutcome`].
    pub async fn create_recovery(&self, request: &RecoveryRequest) -> PostOutcome {
        let path = format!("/servers/{}/operations", segment(&self.server));
        let url = format!("{}{path}", self.base);
        let body = serde_json::json!({
            "type": "recovery",
            "backup_id": request.backup_id,
            "destination_directory": request.destination_directory,
            "remote_ssh_command": request.remote_ssh_command,
        });
        let response = match self.http.post(&url).json(&body).send().await {
            Ok(response) => response,
            Err(e) => {
                let error = self.transport_error(&e);
                // Not connected, or the TLS handshake failed (the proxy forwards nothing
                // before it completes): the request never reached the API.
                return if e.is_connect() || !error.retryable {
                    PostOutcome::NotCreated(error)
                } else {
                    PostOutcome::Unknown(error)
                };
            }
        };
        let status = response.status();
        let text = match response.text().await {
            Ok(text) => text,
            Err(e) => return PostOutcome::Unknown(self.transport_error(&e)),
        };
        match status.as_u16() {
            200..=202 => match serde_json::from_str::<Value>(&text)
                .ok()
                .and_then(|v| v.get("operation_id").and_then(Value::as_str).map(str::to_string))
            {
                Some(id) if !id.is_empty() => PostOutcome::Created(id),
                _ => PostOutcome::Unknown(self.malformed_text(&path, &text)),
            },
            404 => PostOutcome::NotCreated(self.post_404(&text, request)),
            // Flask's 500 for this API is raised before the job file is written (duplicate id
            // in the same second, unknown type); a 503 never reached it.
            500 | 503 => PostOutcome::NotCreated(
                Error::new(
                    ErrorKind::BackupApi,
                    format!("pg-backup-api at {} answered HTTP {status} to the recovery request: {}", self.base, summary(&text)),
                )
                .retryable(),
            ),
            // A gateway may have forwarded the request before giving up.
            502 | 504 => PostOutcome::Unknown(
                Error::new(
                    ErrorKind::BackupApi,
                    format!("the gateway in front of pg-backup-api at {} answered HTTP {status} to the recovery request", self.base),
                )
                .retryable(),
            ),
            _ => PostOutcome::NotCreated(
                Error::new(
                    ErrorKind::BackupApi,
                    format!(
                        "pg-backup-api at {} refused the recovery request: HTTP {status}: {}",
                        self.base,
                        summary(&text)
                    ),
                )
                .hint("check the pg_backupapi_* settings; the API expects a JSON body with backup_id, destination_directory and remote_ssh_command"),
            ),
        }
    }

    fn post_404(&self, text: &str, request: &RecoveryRequest) -> Error {
        let message = error_message(text);
        let hint = if message.contains("Backup") {
            format!(
                "check pg_backupapi_backup_id (\"{}\"): \"barman list-backups {}\" on the Barman host shows the backups",
                request.backup_id, self.server
            )
        } else {
            "check pg_backupapi_node_name: it must name a server of Barman's configuration on the API's host".to_string()
        };
        Error::new(
            ErrorKind::BackupApi,
            format!("pg-backup-api at {} cannot restore: {message}", self.base),
        )
        .hint(hint)
    }

    /// GETs `path` and parses JSON, retrying transient failures within the call's budget.
    async fn get_json(&self, path: &str, on_404: &dyn Fn(&str) -> Error) -> Result<Value> {
        self.retrying(|| self.get_once(path, on_404)).await
    }

    /// Runs `attempt` until it succeeds, fails finally, or the call's budget is spent.
    async fn retrying<T, Fut>(&self, attempt: impl FnMut() -> Fut) -> Result<T>
    where
        Fut: Future<Output = Result<T, Attempt>>,
    {
        let policy = RetryPolicy {
            max_attempts: u32::MAX,
            first_delay_ms: RETRY_FIRST_DELAY_MS,
            max_delay_ms: RETRY_MAX_DELAY_MS,
            give_up_after_ms: Some(u64::try_from(self.retry_for.as_millis()).unwrap_or(u64::MAX)),
            jitter_percent: 50,
        };
        let transient = |attempt: &Attempt| matches!(attempt, Attempt::Transient(_));
        match with_retry(&policy, transient, attempt).await {
            Ok(value) => Ok(value),
            Err(GaveUp::Final(Attempt::Final(error))) => Err(error),
            Err(gave_up) => Err(Error::new(
                ErrorKind::BackupApi,
                format!(
                    "pg-backup-api at {} still fails after {} s of retries: {}",
                    self.base,
                    self.retry_for.as_secs(),
                    gave_up.into_inner()
                ),
            )
            .hint("check that pg-backup-api runs on the Barman host and that pgreplica can reach it; \"pgreplica clone resume\" continues the clone")
            .retryable()),
        }
    }

    async fn get_once(&self, path: &str, on_404: &dyn Fn(&str) -> Error) -> Result<Value, Attempt> {
        let url = format!("{}{path}", self.base);
        let response = self
            .http
            .get(&url)
            .send()
            .await
            .map_err(|e| self.failed_attempt(&e))?;
        let status = response.status();
        let text = response.text().await.map_err(|e| self.failed_attempt(&e))?;
        if status.as_u16() == 404 {
            return Err(Attempt::Final(on_404(&error_message(&text))));
        }
        if status.is_server_error() {
            return Err(Attempt::Transient(format!(
                "pg-backup-api at {} answered HTTP {status} to GET {path}: {}",
                self.base,
                summary(&text)
            )));
        }
        if !status.is_success() {
            return Err(Attempt::Final(
                Error::new(
                    ErrorKind::BackupApi,
                    format!(
                        "pg-backup-api at {} refused GET {path}: HTTP {status}: {}",
                        self.base,
                        summary(&text)
                    ),
                )
                .hint("a proxy in front of the API may want a client certificate: set pg_backupapi_cert_file and pg_backupapi_key_file"),
            ));
        }
        serde_json::from_str(&text)
            .map_err(|_| Attempt::Transient(self.malformed_text(path, &text).message))
    }

    /// A request that failed below HTTP: final when TLS failed, else worth another try.
    fn failed_attempt(&self, e: &reqwest::Error) -> Attempt {
        let error = self.transport_error(e);
        if error.retryable {
            Attempt::Transient(error.message)
        } else {
            Attempt::Final(error)
        }
    }

    /// The error for a request that failed below HTTP: a TLS failure is final and says which
    /// key to fix; anything else (refused, reset, timed out) is retryable.
    fn transport_error(&self, e: &reqwest::Error) -> Error {
        if let Some(tls) = tls_failure(e) {
            return self.tls_handshake_error(tls);
        }
        // reqwest's Display hides the cause (connection refused, reset…).
        let mut cause = e.to_string();
        let mut source = std::error::Error::source(e);
        while let Some(inner) = source {
            cause = format!("{cause}: {inner}");
            source = inner.source();
        }
        Error::new(
            ErrorKind::BackupApi,
            format!("cannot reach pg-backup-api at {}: {cause}", self.base),
        )
        .hint("check pg_backupapi_host and that pg-backup-api runs (\"pg-backup-api status\" on the Barman host)")
        .retryable()
    }

    /// Why the TLS handshake failed, in the operator's terms, with the key that fixes it.
    fn tls_handshake_error(&self, tls: &rustls::Error) -> Error {
        use rustls::{AlertDescription as Alert, CertificateError as Cert};
        let (why, hint) = match tls {
            rustls::Error::InvalidCertificate(
                Cert::NotValidForName | Cert::NotValidForNameContext { .. },
            ) => (
                format!("the server's certificate does not name this host: {tls}"),
                "pg_backupapi_host must use a name or IP address listed in the subjectAltName of the proxy's certificate".to_string(),
            ),
            rustls::Error::InvalidCertificate(
                Cert::Expired
                | Cert::ExpiredContext { .. }
                | Cert::NotValidYet
                | Cert::NotValidYetContext { .. },
            ) => (
                format!("the server's certificate is outside its validity period: {tls}"),
                "renew the proxy's certificate, or check the clocks of this host and the proxy's".to_string(),
            ),
            rustls::Error::InvalidCertificate(_) => (
                format!("certificate verification of the server failed: {tls}"),
                match &self.ca_file {
                    Some(ca_file) => format!(
                        "pg_backupapi_ca_file \"{ca_file}\" must hold the CA that signed the proxy's certificate (\"openssl s_client -connect HOST:PORT -showcerts\" shows who signed it)"
                    ),
                    None => "set pg_backupapi_ca_file to the PEM file of the CA that signed the proxy's certificate (the system's CAs did not)".to_string(),
                },
            ),
            rustls::Error::AlertReceived(
                Alert::CertificateRequired
                | Alert::HandshakeFailure
                | Alert::BadCertificate
                | Alert::UnsupportedCertificate
                | Alert::CertificateRevoked
                | Alert::CertificateExpired
                | Alert::CertificateUnknown
                | Alert::UnknownCA
                | Alert::AccessDenied,
            ) => match &self.cert_file {
                None => (
                    format!("the server requires a client certificate and none is configured ({tls})"),
                    "set pg_backupapi_cert_file and pg_backupapi_key_file to a client certificate signed by a CA the proxy trusts, and its key".to_string(),
                ),
                Some(cert_file) => (
                    format!("the server refused the client certificate ({tls})"),
                    format!("pg_backupapi_cert_file \"{cert_file}\" must be current and signed by a CA the proxy trusts; the proxy's log says why it refused it"),
                ),
            },
            _ => (
                tls.to_string(),
                "check that pg_backupapi_host's port speaks TLS (an https:// URL needs a TLS proxy there) and that the proxy offers TLS 1.2 or 1.3".to_string(),
            ),
        };
        Error::new(
            ErrorKind::BackupApi,
            format!(
                "TLS handshake with pg-backup-api at {} failed: {why}",
                self.base
            ),
        )
        .hint(hint)
    }

    fn malformed(&self, path: &str, reply: &Value) -> Error {
        self.malformed_text(path, &reply.to_string())
    }

    fn malformed_text(&self, path: &str, text: &str) -> Error {
        Error::new(
            ErrorKind::BackupApi,
            format!(
                "pg-backup-api at {} sent a malformed reply to {path}: {}",
                self.base,
                summary(text)
            ),
        )
        .hint("a proxy may be answering instead of the API, or the API is not pg-backup-api 2.x")
        .retryable()
    }

    fn unreachable_404(&self, path: &str) -> Error {
        Error::new(
            ErrorKind::BackupApi,
            format!(
                "{}{path} does not exist: this is not pg-backup-api",
                self.base
            ),
        )
        .hint("pg_backupapi_host must point at pg-backup-api (default port 7480)")
    }
}

/// The base URL for `pg_backupapi_host`: a bare host means `http://host:7480` (as repmgr), a
/// `host:port` means http on that port, a URL is used as given (without a trailing `/`).
pub fn base_url(host: &str) -> Result<String> {
    let host = host.trim();
    let invalid = |why: &str| {
        Error::new(
            ErrorKind::Config,
            format!("pg_backupapi_host \"{host}\" is not usable: {why}"),
        )
        .hint("give a host (http, port 7480), host:port, or a URL such as https://backup1:7443")
    };
    if host.is_empty() {
        return Err(invalid("it is empty"));
    }
    let url = if host.starts_with("http://") || host.starts_with("https://") {
        host.trim_end_matches('/').to_string()
    } else if host.contains("://") {
        return Err(invalid("only http:// and https:// are supported"));
    } else if has_port(host) {
        format!("http://{host}")
    } else if host.contains(':') && !host.starts_with('[') {
        // A bare IPv6 address.
        format!("http://[{host}]:{DEFAULT_PORT}")
    } else {
        format!("http://{host}:{DEFAULT_PORT}")
    };
    reqwest::Url::parse(&url).map_err(|e| invalid(&e.to_string()))?;
    Ok(url)
}

/// `host:port` or `[v6]:port`, not a bare IPv6 address.
fn has_port(host: &str) -> bool {
    let tail = if let Some(end) = host.rfind(']') {
        &host[end + 1..]
    } else if host.matches(':').count() == 1 {
        &host[host.find(':').unwrap_or(0)..]
    } else {
        return false;
    };
    tail.strip_prefix(':')
        .is_some_and(|port| !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit()))
}

/// A path segment, percent-encoded (server names and ids are plain, but never trust config).
fn segment(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~".contains(&byte) {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

/// `{"operations":[{"id":…,"type":…},…]}` (2.x) or a list of bare ids (before 2.0).
fn parse_operations(reply: &Value) -> Option<Vec<ListedOperation>> {
    reply
        .get("operations")?
        .as_array()?
        .iter()
        .map(|entry| match entry {
            Value::String(id) => Some(ListedOperation {
                id: id.clone(),
                kind: "recovery".to_string(),
            }),
            Value::Object(map) => Some(ListedOperation {
                id: map.get("id")?.as_str()?.to_string(),
                kind: map
                    .get("type")
                    .and_then(Value::as_str)
                    .unwrap_or("recovery")
                    .to_string(),
            }),
            _ => None,
        })
        .collect()
}

fn parse_status(reply: &Value) -> Option<OperationStatus> {
    match reply.get("status")?.as_str()? {
        "IN_PROGRESS" => Some(OperationStatus::InProgress),
        "DONE" => Some(OperationStatus::Done),
        "FAILED" => Some(OperationStatus::Failed),
        _ => None,
    }
}

/// The message of a 404 (`{"error":"404 Not Found: …"}`), or a summary of the body.
fn error_message(text: &str) -> String {
    serde_json::from_str::<Value>(text)
        .ok()
        .and_then(|v| v.get("error").and_then(Value::as_str).map(str::to_string))
        .map(|m| m.trim_start_matches("404 Not Found: ").to_string())
        .unwrap_or_else(|| summary(text))
}

/// A one-line summary of a body: an HTML page's title, or the text's start.
fn summary(text: &str) -> String {
    let text = text.trim();
    if let (Some(start), Some(end)) = (text.find("<title>"), text.find("</title>")) {
        if start + 7 <= end {
            return format!("HTML page \"{}\"", &text[start + 7..end]);
        }
    }
    let line: String = text.chars().take(120).collect();
    if line.is_empty() {
        "(empty body)".to_string()
    } else {
        line.replace('\n', " ")
    }
}

/// The TLS error inside a request's failure, if TLS is what failed. rustls's error travels
/// inside `io::Error`s, whose `source()` skips the error they wrap (their Display shows it), so
/// an `io::Error` link is descended into rather than past.
fn tls_failure(e: &reqwest::Error) -> Option<&rustls::Error> {
    let mut link: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(error) = link {
        if let Some(tls) = error.downcast_ref::<rustls::Error>() {
            return Some(tls);
        }
        link = match error
            .downcast_ref::<std::io::Error>()
            .and_then(std::io::Error::get_ref)
        {
            Some(inner) => Some(inner as &(dyn std::error::Error + 'static)),
            None => error.source(),
        };
    }
    None
}

fn read_tls_file(path: &str, key: &str) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(|e| tls_error(path, key, &format!("cannot be read: {e}")))
}

fn tls_error(path: &str, key: &str, why: &str) -> Error {
    Error::new(ErrorKind::BackupApi, format!("{key} \"{path}\" {why}"))
        .hint(format!("{key} must name a readable PEM file"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_forms_become_base_urls() {
        assert_eq!(base_url("backup1").unwrap(), "http://backup1:7480");
        assert_eq!(base_url("backup1:8080").unwrap(), "http://backup1:8080");
        assert_eq!(base_url("https://b1:7443/").unwrap(), "https://b1:7443");
        assert_eq!(base_url("http://10.0.0.1").unwrap(), "http://10.0.0.1");
        assert_eq!(base_url("::1").unwrap(), "http://[::1]:7480");
        assert_eq!(base_url("[::1]:9000").unwrap(), "http://[::1]:9000");
        assert_eq!(base_url("[::1]").unwrap(), "http://[::1]:7480");
        assert!(base_url("ftp://b1").is_err());
        assert!(base_url("").is_err());
    }

    #[test]
    fn operation_lists_of_both_generations_parse() {
        let v2: Value = serde_json::from_str(
            r#"{"operations":[{"id":"20261125T062405","type":"recovery"},{"id":"20261125T062410","type":"config_switch"}]}"#,
        )
        .unwrap();
        let ops = parse_operations(&v2).unwrap();
        assert_eq!(ops.len(), 2);
        assert_eq!(ops[1].kind, "config_switch");
        let v1: Value = serde_json::from_str(r#"{"operations":["20261125T062405"]}"#).unwrap();
        assert_eq!(parse_operations(&v1).unwrap()[0].kind, "recovery");
        assert!(parse_operations(&serde_json::json!({"ops": []})).is_none());
    }

    #[test]
    fn statuses_and_error_bodies_parse() {
        let done = serde_json::json!({"operation_id": "x", "status": "DONE"});
        assert_eq!(parse_status(&done), Some(OperationStatus::Done));
        assert_eq!(
            parse_status(&serde_json::json!({"operation_id": "x"})),
            None
        );
        assert_eq!(
            error_message(r#"{"error":"404 Not Found: Backup 'x' does not exist"}"#),
            "Backup 'x' does not exist"
        );
        assert_eq!(
            summary("<!doctype html>\n<html lang=en>\n<title>500 Internal Server Error</title>\n<h1>x</h1>"),
            "HTML page \"500 Internal Server Error\""
        );
        assert_eq!(segment("pg main/1"), "pg%20main%2F1");
    }

    fn client(host: &str) -> BackupApi {
        BackupApi::from_target(&ApiTarget {
            host: host.to_string(),
            node_name: "pg".to_string(),
            ..ApiTarget::default()
        })
        .unwrap()
    }

    #[test]
    fn tls_failures_name_the_key_to_fix_and_are_final() {
        let mut api = client("https://b1:7443");
        let required = rustls::Error::AlertReceived(rustls::AlertDescription::CertificateRequired);
        let error = api.tls_handshake_error(&required);
        assert!(!error.retryable);
        assert_eq!(error.kind, ErrorKind::BackupApi);
        assert!(
            error.message.starts_with("TLS handshake with pg-backup-api at https://b1:7443 failed: the server requires a client certificate and none is configured"),
            "{}",
            error.message
        );
        assert!(error.hint.unwrap().contains("pg_backupapi_cert_file"));

        api.cert_file = Some("/etc/pgreplica/client.pem".to_string());
        let error = api.tls_handshake_error(&rustls::Error::AlertReceived(
            rustls::AlertDescription::UnknownCA,
        ));
        error.assert_says(
            "refused the client certificate",
            "\"/etc/pgreplica/client.pem\"",
        );

        let unknown = rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer);
        let error = api.tls_handshake_error(&unknown);
        assert!(error.message.contains("certificate verification of the server failed: invalid peer certificate: UnknownIssuer"), "{}", error.message);
        assert!(error.hint.unwrap().starts_with("set pg_backupapi_ca_file"));
        api.ca_file = Some("/etc/pgreplica/ca.pem".to_string());
        let error = api.tls_handshake_error(&unknown);
        assert!(error
            .hint
            .unwrap()
            .starts_with("pg_backupapi_ca_file \"/etc/pgreplica/ca.pem\""));

        let name = rustls::Error::InvalidCertificate(rustls::CertificateError::NotValidForName);
        assert!(api
            .tls_handshake_error(&name)
            .hint
            .unwrap()
            .contains("subjectAltName"));
    }

    #[tokio::test]
    async fn a_failed_handshake_is_not_retried_and_a_refused_connection_is() {
        // Plain http where https is expected: rustls cannot parse the reply, a TLS failure
        // found inside reqwest's error chain.
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        std::thread::spawn(move || {
            for mut stream in listener.incoming().map_while(std::result::Result::ok) {
                use std::io::Write;
                let _ = stream.write_all(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n");
            }
        });
        let api =
            client(&format!("https://127.0.0.1:{port}")).with_retry_for(Duration::from_secs(60));
        let started = std::time::Instant::now();
        let error = api.check_status().await.unwrap_err();
        assert!(!error.retryable, "{}", error.message);
        assert!(error.message.contains("TLS handshake"), "{}", error.message);
        assert!(error.hint.unwrap().contains("speaks TLS"));
        assert!(started.elapsed() < Duration::from_secs(10));

        let closed = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let api = client(&format!("https://127.0.0.1:{closed}"))
            .with_retry_for(Duration::from_millis(200));
        let error = api.check_status().await.unwrap_err();
        assert!(error.retryable, "{}", error.message);
        assert!(
            error.message.contains("Connection refused"),
            "{}",
            error.message
        );
    }

    #[test]
    fn tls_files_are_checked() {
        let target = ApiTarget {
            host: "https://b1:7443".to_string(),
            ca_file: Some("/nonexistent/ca.pem".to_string()),
            ..ApiTarget::default()
        };
        let error = BackupApi::from_target(&target).unwrap_err();
        assert_eq!(error.kind, ErrorKind::BackupApi);
        assert!(
            error.message.contains("pg_backupapi_ca_file"),
            "{}",
            error.message
        );
        let dir = tempfile::tempdir().unwrap();
        let ca = dir.path().join("ca.pem");
        std::fs::write(&ca, "not pem").unwrap();
        let target = ApiTarget {
            ca_file: Some(ca.display().to_string()),
            ..target
        };
        assert!(BackupApi::from_target(&target).is_err());
    }
}
