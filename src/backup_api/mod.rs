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
//! Replies are hostile until proven otherwise: bodies are read up to [`MAX_BODY`] and no
//! further, text from the API is printed with its control characters escaped, and operation
//! ids must look like ids ([`states::api::is_operation_id`]). Credentials for a proxy
//! (`https://user:password@…` in `pg_backupapi_host`) are read from repmgr.conf by each run
//! (`credentials`), sent as HTTP basic authentication, and never appear in a URL, a message or
//! the record.
//!
//! It must not decide anything about the clone: whether a POST may be repeated is the Transfer
//! step's call ([`crate::transfer::backup_api`]), so [`BackupApi::create_recovery`] never
//! retries a request the server may have acted on.

use crate::config::ApiCredentials;
use crate::error::{Error, ErrorKind, Result};
use crate::retry::{with_retry, GaveUp};
use wire::{error_message, parse_operations, parse_status, segment, summary};

use serde_json::Value;
pub use states::api::OperationStatus;
use states::api::{is_operation_id, ListedOperation};
use states::{ApiTarget, RetryPolicy};
use std::fmt;
use std::future::Future;
use std::time::Duration;
pub use wire::base_url;

mod credentials;
mod tls;
mod wire;

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
/// Largest reply body read. The API's replies are a few dozen bytes, but for the operation
/// list, which never shrinks (about 45 bytes an operation: 4 MiB hold 90 000); what is larger
/// is not pg-backup-api, and reading on would let it fill pgreplica's memory.
pub const MAX_BODY: usize = 4 << 20;

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
    /// The request was refused before anything was created: not connected, a failed TLS
    /// handshake (the proxy forwards nothing before it completes), a 4xx (the API validates
    /// the body before it writes the job file). Retryable when posting again may help.
    NotCreated(Error),
    /// The server may have created an operation: any 5xx (pg-backup-api 2.2 answers HTML 500
    /// both for a duplicate id, having created nothing, and when it cannot start the worker of
    /// an operation it has just created), a garbled or oversized reply, a reply lost on the
    /// way. The caller must look in the operation list before posting again.
    Unknown(Error),
}

/// A client of one pg-backup-api for one Barman server.
#[derive(Clone, Debug)]
pub struct BackupApi {
    base: String,
    server: String,
    http: reqwest::Client,
    /// For a proxy that checks them (from repmgr.conf, never from the record).
    credentials: Option<ApiCredentials>,
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

impl Attempt {
    /// A retryable error is worth another try; any other is final.
    fn of(error: Error) -> Attempt {
        if error.retryable {
            Attempt::Transient(error.full_message())
        } else {
            Attempt::Final(error)
        }
    }
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
    /// The client for a recorded target (reads the TLS files named in it, and the credentials
    /// from the repmgr.conf it names).
    pub fn from_target(target: &ApiTarget) -> Result<BackupApi> {
        let base = base_url(&target.host)?;
        let credentials = credentials::read(target)?;
        let mut builder = reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .timeout(REQUEST_TIMEOUT)
            .user_agent(concat!("pgreplica/", env!("CARGO_PKG_VERSION")));
        builder = tls::configure(builder, target)?;
        let http = builder.build().map_err(|e| {
            Error::new(
                ErrorKind::BackupApi,
                format!("cannot set up the HTTP client for pg-backup-api: {e}"),
            )
            .hint("check pg_backupapi_ca_file, pg_backupapi_cert_file and pg_backupapi_key_file")
        })?;
        Ok(BackupApi {
            base,
            server: target.node_name.clone(),
            http,
            credentials,
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
        let body = serde_json::json!({
            "type": "recovery",
            "backup_id": request.backup_id,
            "destination_directory": request.destination_directory,
            "remote_ssh_command": request.remote_ssh_command,
        });
        let response = match self
            .request(reqwest::Method::POST, &path)
            .json(&body)
            .send()
            .await
        {
            Ok(response) => response,
            Err(e) => {
                let connect = e.is_connect();
                let error = self.transport_error(e);
                // Not connected, or the TLS handshake failed: the request never reached the API.
                return if connect || !error.retryable {
                    PostOutcome::NotCreated(error)
                } else {
                    PostOutcome::Unknown(error)
                };
            }
        };
        let status = response.status();
        let text = match self.read_body(response, "POST", &path).await {
            Ok(text) => text,
            Err(error) => return PostOutcome::Unknown(error),
        };
        match status.as_u16() {
            200..=202 => match serde_json::from_str::<Value>(&text)
                .ok()
                .and_then(|v| v.get("operation_id").and_then(Value::as_str).map(str::to_string))
            {
                Some(id) if is_operation_id(&id) => PostOutcome::Created(id),
                _ => PostOutcome::Unknown(self.malformed_text(&path, &text)),
            },
            404 => PostOutcome::NotCreated(self.post_404(&text, request)),
            500..=599 => PostOutcome::Unknown(
                Error::new(
                    ErrorKind::BackupApi,
                    format!(
                        "pg-backup-api at {} answered HTTP {status} to the recovery request: {}",
                        self.base,
                        summary(&text)
                    ),
                )
                .hint("pg-backup-api answers HTTP 500 both when it created nothing and when it created the operation but could not start its worker; its log on the Barman host says which")
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
                .hint(self.refusal_hint(status)),
            ),
        }
    }

    /// A request to `path` with the credentials, if any.
    fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        let builder = self.http.request(method, format!("{}{path}", self.base));
        match &self.credentials {
            Some(c) => builder.basic_auth(&c.user, c.password.as_ref()),
            None => builder,
        }
    }

    /// The body of `response` to `method path`, at most [`MAX_BODY`] bytes of it: a larger
    /// one is an error (final: it is not pg-backup-api answering), read no further.
    async fn read_body(
        &self,
        mut response: reqwest::Response,
        method: &str,
        path: &str,
    ) -> Result<String> {
        let too_large = || {
            Error::new(
                ErrorKind::BackupApi,
                format!(
                    "pg-backup-api at {} sent a reply larger than {} MiB to {method} {path}; pgreplica reads no further",
                    self.base,
                    MAX_BODY >> 20
                ),
            )
            .hint("pg_backupapi_host must point at pg-backup-api itself, or a proxy that forwards to it")
        };
        if response
            .content_length()
            .is_some_and(|length| length > MAX_BODY as u64)
        {
            return Err(too_large());
        }
        let mut body = Vec::new();
        while let Some(chunk) = response
            .chunk()
            .await
            .map_err(|e| self.transport_error(e))?
        {
            if body.len() + chunk.len() > MAX_BODY {
                return Err(too_large());
            }
            body.extend_from_slice(&chunk);
        }
        Ok(String::from_utf8_lossy(&body).into_owned())
    }

    /// What to do about a refusal with `status` (other than 404).
    fn refusal_hint(&self, status: reqwest::StatusCode) -> String {
        match (status.as_u16(), &self.credentials) {
            (401 | 407, None) => "a proxy in front of the API wants credentials: give them in pg_backupapi_host as https://USER:PASSWORD@host:port".to_string(),
            (401 | 407, Some(_)) => "the proxy in front of the API refused the credentials in pg_backupapi_host".to_string(),
            (403, _) => "a proxy in front of the API refused this client: it may want a client certificate (pg_backupapi_cert_file and pg_backupapi_key_file) or other credentials".to_string(),
            _ => "check the pg_backupapi_* settings; the API expects a JSON body with backup_id, destination_directory and remote_ssh_command".to_string(),
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
            .hint(format!("check that pg-backup-api runs on the Barman host and that pgreplica can reach it; \"{}\" continues the clone", crate::paste::resume()))
            .retryable()),
        }
    }

    async fn get_once(&self, path: &str, on_404: &dyn Fn(&str) -> Error) -> Result<Value, Attempt> {
        let response = self
            .request(reqwest::Method::GET, path)
            .send()
            .await
            .map_err(|e| self.failed_attempt(e))?;
        let status = response.status();
        let text = self
            .read_body(response, "GET", path)
            .await
            .map_err(Attempt::of)?;
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
                .hint(self.refusal_hint(status)),
            ));
        }
        serde_json::from_str(&text)
            .map_err(|_| Attempt::Transient(self.malformed_text(path, &text).message))
    }

    /// A request that failed below HTTP: final when TLS failed, else worth another try.
    fn failed_attempt(&self, e: reqwest::Error) -> Attempt {
        Attempt::of(self.transport_error(e))
    }

    /// The error for a request that failed below HTTP: a TLS failure is final and says which
    /// key to fix; anything else (refused, reset, timed out) is retryable.
    fn transport_error(&self, e: reqwest::Error) -> Error {
        if let Some(tls) = tls::tls_failure(&e) {
            return self.tls_handshake_error(tls);
        }
        // reqwest's Display hides the cause (connection refused, reset…): the chain shows it.
        Error::new(
            ErrorKind::BackupApi,
            format!("cannot reach pg-backup-api at {}", self.base),
        )
        .caused_by(e)
        .hint("check pg_backupapi_host and that pg-backup-api runs (\"pg-backup-api status\" on the Barman host)")
        .retryable()
    }

    /// Why the TLS handshake failed, with the key that fixes it.
    fn tls_handshake_error(&self, failure: &rustls::Error) -> Error {
        tls::handshake_error(
            &self.base,
            failure,
            self.ca_file.as_deref(),
            self.cert_file.as_deref(),
        )
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

#[cfg(test)]
mod tests {
    use super::*;

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

    /// A server on 127.0.0.1 that answers every request with `reply` (`{port}` in it is
    /// replaced by its port) and hands each request's head to the returned channel.
    fn serve(
        reply: impl Fn() -> Vec<u8> + Send + 'static,
    ) -> (u16, std::sync::mpsc::Receiver<String>) {
        use std::io::{BufRead, Write};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let (heads, received) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for stream in listener.incoming().map_while(std::result::Result::ok) {
                let mut reader = std::io::BufReader::new(&stream);
                let mut head = String::new();
                while reader.read_line(&mut head).is_ok_and(|n| n > 2) {}
                let _ = heads.send(head);
                let _ = (&stream).write_all(&reply());
            }
        });
        (port, received)
    }

    fn http_reply(status: &str, body: &str) -> Vec<u8> {
        format!(
            "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )
        .into_bytes()
    }

    fn recovery() -> RecoveryRequest {
        RecoveryRequest {
            backup_id: "latest".into(),
            destination_directory: "/srv/standby".into(),
            remote_ssh_command: "ssh postgres@standby".into(),
        }
    }

    #[tokio::test]
    async fn a_reply_larger_than_the_bound_is_read_no_further() {
        // Announced as 1.5 GB, or chunked without a length: either way at most MAX_BODY is
        // read, and the error says so.
        let huge = "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 1500000000\r\n\r\n";
        let mut chunked = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
        let chunk = vec![b' '; 1 << 20];
        for _ in 0..6 {
            chunked.extend(format!("{:x}\r\n", chunk.len()).bytes());
            chunked.extend(&chunk);
            chunked.extend(b"\r\n");
        }
        chunked.extend(b"0\r\n\r\n");
        for reply in [huge.as_bytes().to_vec(), chunked] {
            let (port, _) = serve(move || reply.clone());
            let api = client(&format!("127.0.0.1:{port}"));
            let error = api.check_status().await.unwrap_err();
            assert!(!error.retryable, "{}", error.message);
            assert_eq!(
                error.message,
                format!("pg-backup-api at http://127.0.0.1:{port} sent a reply larger than 4 MiB to GET /status; pgreplica reads no further")
            );
            // A POST with such a reply may have created an operation: its outcome is unknown.
            match api.create_recovery(&recovery()).await {
                PostOutcome::Unknown(error) => assert!(error.message.contains("larger than 4 MiB")),
                other => panic!("{other:?}"),
            }
        }
    }

    #[tokio::test]
    async fn text_and_ids_from_the_api_cannot_reach_the_terminal_raw() {
        let (port, _) = serve(|| {
            http_reply(
                "404 NOT FOUND",
                r#"{"error":"404 Not Found: Backup '\u001b]0;owned\u0007\u001b[2J' does not exist"}"#,
            )
        });
        let api = client(&format!("127.0.0.1:{port}"));
        let PostOutcome::NotCreated(error) = api.create_recovery(&recovery()).await else {
            panic!("a 404 creates nothing");
        };
        assert_eq!(
            error.message,
            format!("pg-backup-api at http://127.0.0.1:{port} cannot restore: Backup '\\u{{1b}}]0;owned\\u{{7}}\\u{{1b}}[2J' does not exist")
        );
        // An id that is no id is a garbled answer, not an operation.
        let (port, _) = serve(|| http_reply("202 ACCEPTED", r#"{"operation_id":"\u001b[31m"}"#));
        let api = client(&format!("127.0.0.1:{port}"));
        match api.create_recovery(&recovery()).await {
            PostOutcome::Unknown(error) => {
                assert!(
                    error.message.contains("malformed reply"),
                    "{}",
                    error.message
                );
                assert!(
                    !error.message.chars().any(char::is_control),
                    "{}",
                    error.message
                );
            }
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test]
    async fn a_post_answered_by_any_5xx_has_an_unknown_outcome() {
        for status in [
            "500 INTERNAL SERVER ERROR",
            "502 Bad Gateway",
            "503 Service Unavailable",
        ] {
            let (port, _) = serve(move || http_reply(status, "<title>oops</title>"));
            let api = client(&format!("127.0.0.1:{port}"));
            match api.create_recovery(&recovery()).await {
                PostOutcome::Unknown(error) => assert!(error.retryable),
                other => panic!("{status}: {other:?}"),
            }
        }
        let (port, _) =
            serve(|| http_reply("202 ACCEPTED", r#"{"operation_id":"20261125T062405"}"#));
        match client(&format!("127.0.0.1:{port}"))
            .create_recovery(&recovery())
            .await
        {
            PostOutcome::Created(id) => assert_eq!(id, "20261125T062405"),
            other => panic!("{other:?}"),
        }
        // Refused connections and 4xx prove nothing was created.
        let closed = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        match client(&format!("127.0.0.1:{closed}"))
            .create_recovery(&recovery())
            .await
        {
            PostOutcome::NotCreated(error) => assert!(error.retryable),
            other => panic!("{other:?}"),
        }
        let (port, _) = serve(|| http_reply("401 UNAUTHORIZED", ""));
        match client(&format!("127.0.0.1:{port}"))
            .create_recovery(&recovery())
            .await
        {
            PostOutcome::NotCreated(error) => {
                assert!(!error.retryable);
                assert!(error
                    .hint
                    .unwrap()
                    .contains("https://USER:PASSWORD@host:port"));
            }
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test]
    async fn credentials_travel_as_basic_authentication_and_nowhere_else() {
        let (port, heads) = serve(|| http_reply("401 UNAUTHORIZED", ""));
        let mut api =
            client(&format!("127.0.0.1:{port}")).with_retry_for(Duration::from_millis(100));
        api.credentials = Some(ApiCredentials {
            user: "pgreplica".into(),
            password: Some("s3cret".into()),
        });
        let error = api.check_status().await.unwrap_err();
        let head = heads.recv().unwrap();
        // base64("pgreplica:s3cret")
        assert!(
            head.contains("authorization: Basic cGdyZXBsaWNhOnMzY3JldA=="),
            "{head}"
        );
        assert!(head.starts_with("GET /status HTTP/1.1"), "{head}");
        for shown in [
            error.full_message(),
            error.hint.clone().unwrap(),
            format!("{api:?}"),
        ] {
            assert!(!shown.contains("s3cret"), "{shown}");
        }
        assert!(error.hint.unwrap().contains("refused the credentials"));
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
}
