//! TLS to pg-backup-api: the CA bundle and client certificate named in repmgr.conf
//! (`pg_backupapi_ca_file`, `pg_backupapi_cert_file`, `pg_backupapi_key_file`), and a failed
//! handshake explained in the operator's terms with the key that fixes it.
//!
//! rustls is named here only to recognise its errors inside reqwest's; the TLS itself is
//! reqwest's.

use crate::error::{Error, ErrorKind, Result};
use states::ApiTarget;

/// Adds the target's CA bundle and client identity to `builder`.
pub(super) fn configure(
    mut builder: reqwest::ClientBuilder,
    target: &ApiTarget,
) -> Result<reqwest::ClientBuilder> {
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
    Ok(builder)
}

/// Why the TLS handshake with the API at `base` failed, in the operator's terms, with the
/// `pg_backupapi_*` key that fixes it. Final: certificates do not fix themselves.
pub(super) fn handshake_error(
    base: &str,
    tls: &rustls::Error,
    ca_file: Option<&str>,
    cert_file: Option<&str>,
) -> Error {
    use rustls::CertificateError as Cert;
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
            match ca_file {
                Some(ca_file) => format!(
                    "pg_backupapi_ca_file \"{ca_file}\" must hold the CA that signed the proxy's certificate (\"openssl s_client -connect HOST:PORT -showcerts\" shows who signed it)"
                ),
                None => "set pg_backupapi_ca_file to the PEM file of the CA that signed the proxy's certificate (the system's CAs did not)".to_string(),
            },
        ),
        refused if crate::tls_errors::client_certificate_refused(refused) => match cert_file {
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
        format!("TLS handshake with pg-backup-api at {} failed: {why}", base),
    )
    .hint(hint)
}

/// The TLS error inside a request's failure, if TLS is what failed.
pub(super) fn tls_failure(e: &reqwest::Error) -> Option<&rustls::Error> {
    crate::tls_errors::rustls_error(e)
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
    use super::super::BackupApi;
    use super::*;

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
