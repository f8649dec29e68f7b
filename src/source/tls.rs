//! TLS to the source node with libpq's semantics, over rustls (tokio-postgres-rustls):
//! `sslmode` — disable, allow, prefer (the default), require, verify-ca, verify-full — with
//! `sslrootcert` (default `~/.postgresql/root.crt`; `system` for the system's CAs), `sslcert` and
//! `sslkey` (default `~/.postgresql/postgresql.{crt,key}`), `sslcrl`/`sslcrldir`, `sslsni`,
//! `sslcertmode` and the protocol bounds.
//!
//! tokio-postgres knows disable, prefer and require only; the rest is done here, as libpq does
//! it: `allow` tries without TLS first and with TLS when the server refuses; `prefer` tries TLS
//! first and without it when that fails; whenever a root certificate file exists the server's
//! certificate chain is verified (so `require` with a root.crt behaves as verify-ca); only
//! verify-full checks the host name. A certificate problem is final and names the setting that
//! fixes it ([`handshake_error`]).

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{
    CertificateDer, CertificateRevocationListDer, PrivateKeyDer, ServerName, UnixTime,
};
use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme,
};
use tokio_postgres::config::SslMode as WireMode;
use tokio_postgres_rustls::MakeRustlsConnect;

use super::target::{home_dir, Target};
use crate::error::{Error, ErrorKind, Result};
use crate::tls_errors::client_certificate_refused;

/// Where Debian (OpenSSL's default) keeps the system's CA bundle, for `sslrootcert=system`.
const SYSTEM_CA_FILE: &str = "/etc/ssl/certs/ca-certificates.crt";

/// libpq's `sslmode`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SslMode {
    /// Never TLS.
    Disable,
    /// Without TLS; with TLS if the server refuses that.
    Allow,
    /// With TLS; without it if TLS fails or the server refuses the TLS session (the default).
    Prefer,
    /// TLS only; the certificate is verified only when a root certificate file exists.
    Require,
    /// TLS, certificate chain verified against the root certificate.
    VerifyCa,
    /// TLS, certificate chain and host name verified.
    VerifyFull,
}

impl SslMode {
    /// The mode of `target` (validated there), `prefer` when not given.
    pub fn of(target: &Target) -> SslMode {
        match target.setting("sslmode") {
            Some("disable") => SslMode::Disable,
            Some("allow") => SslMode::Allow,
            Some("require") => SslMode::Require,
            Some("verify-ca") => SslMode::VerifyCa,
            Some("verify-full") => SslMode::VerifyFull,
            _ => SslMode::Prefer,
        }
    }

    /// Whether the mode insists on verifying the server's certificate.
    fn verifies(self) -> bool {
        matches!(self, SslMode::VerifyCa | SslMode::VerifyFull)
    }

    /// The attempts libpq makes, in order: tokio-postgres's mode for each.
    pub(super) fn attempts(self) -> &'static [WireMode] {
        match self {
            SslMode::Disable => &[WireMode::Disable],
            SslMode::Allow => &[WireMode::Disable, WireMode::Require],
            SslMode::Prefer => &[WireMode::Prefer, WireMode::Disable],
            SslMode::Require | SslMode::VerifyCa | SslMode::VerifyFull => &[WireMode::Require],
        }
    }
}

/// The TLS side of a connection to `target`: its mode and the connector that does libpq's
/// verification.
pub(super) struct Tls {
    /// `sslmode`.
    pub(super) mode: SslMode,
    /// The root certificate file the chain is verified against, when it is.
    pub(super) rootcert: Option<PathBuf>,
    /// The client certificate presented, if any.
    pub(super) client_cert: Option<PathBuf>,
    /// The connector tokio-postgres uses when it negotiates TLS.
    pub(super) connector: MakeRustlsConnect,
}

impl Tls {
    /// Reads the files `target`'s settings name and builds the connector. With
    /// `sslmode=disable` no file is read. Missing or unreadable files that the mode needs are
    /// final errors naming the setting.
    pub(super) fn for_target(target: &Target) -> Result<Tls> {
        let mode = SslMode::of(target);
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let unverified = |provider: &Arc<CryptoProvider>| LibpqVerifier {
            provider: provider.clone(),
            chain: None,
            check_name: false,
        };
        if mode == SslMode::Disable {
            return Ok(Tls {
                mode,
                rootcert: None,
                client_cert: None,
                connector: connector(
                    target,
                    config_builder(&provider, target, Arc::new(unverified(&provider)))?,
                    None,
                )?,
            });
        }
        let rootcert = root_certificate(target, mode)?;
        let verifier = match &rootcert {
            Some(path) => LibpqVerifier {
                chain: Some(chain_verifier(target, path, &provider)?),
                check_name: mode == SslMode::VerifyFull,
                ..unverified(&provider)
            },
            None => unverified(&provider),
        };
        let client = client_identity(target)?;
        let client_cert = client.as_ref().map(|(path, _, _)| path.clone());
        Ok(Tls {
            mode,
            rootcert,
            client_cert,
            connector: connector(
                target,
                config_builder(&provider, target, Arc::new(verifier))?,
                client.map(|(_, chain, key)| (chain, key)),
            )?,
        })
    }
}

/// A config builder with the protocol bounds of `target` and `verifier` for the server's
/// certificate.
fn config_builder(
    provider: &Arc<CryptoProvider>,
    target: &Target,
    verifier: Arc<dyn ServerCertVerifier>,
) -> Result<rustls::ConfigBuilder<ClientConfig, rustls::client::WantsClientCert>> {
    let versions = protocol_versions(target)?;
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&versions)
        .map_err(|e| {
            Error::new(
                ErrorKind::Config,
                format!("ssl_min_protocol_version/ssl_max_protocol_version: {e}"),
            )
            .hint("set them to TLSv1.2 or TLSv1.3, the versions pgreplica speaks")
        })?;
    Ok(builder
        .dangerous()
        .with_custom_certificate_verifier(verifier))
}

/// The connector for `builder`, with the client certificate chain and key when given, and
/// `target`'s `sslsni`.
fn connector(
    target: &Target,
    builder: rustls::ConfigBuilder<ClientConfig, rustls::client::WantsClientCert>,
    client: Option<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)>,
) -> Result<MakeRustlsConnect> {
    let mut config = match client {
        Some((chain, key)) => builder.with_client_auth_cert(chain, key).map_err(|e| {
            Error::new(
                ErrorKind::DbConnection,
                format!("the client certificate (sslcert) and key (sslkey) do not match: {e}"),
            )
            .hint("sslkey must be the private key of the certificate in sslcert")
        })?,
        None => builder.with_no_client_auth(),
    };
    // libpq's sslsni=0: no server name in the handshake (rustls sends none for an address).
    config.enable_sni = target.setting("sslsni") != Some("0");
    Ok(MakeRustlsConnect::new(config))
}

/// TLS 1.2 and 1.3, bounded by `ssl_min_protocol_version` (libpq's default: TLSv1.2) and
/// `ssl_max_protocol_version`.
fn protocol_versions(target: &Target) -> Result<Vec<&'static rustls::SupportedProtocolVersion>> {
    let min13 = target.setting("ssl_min_protocol_version") == Some("TLSv1.3");
    let max12 = target.setting("ssl_max_protocol_version") == Some("TLSv1.2");
    let mut versions = Vec::new();
    if !min13 {
        versions.push(&rustls::version::TLS12);
    }
    if !max12 {
        versions.push(&rustls::version::TLS13);
    }
    if versions.is_empty() {
        return Err(Error::new(
            ErrorKind::Config,
            "ssl_min_protocol_version TLSv1.3 is above ssl_max_protocol_version TLSv1.2",
        )
        .hint("give a minimum protocol version at or below the maximum"));
    }
    Ok(versions)
}

/// The root certificate file to verify against, as libpq finds it: `sslrootcert` (or
/// `system`), else `~/.postgresql/root.crt`; None when it does not exist and the mode does not
/// insist on verification.
fn root_certificate(target: &Target, mode: SslMode) -> Result<Option<PathBuf>> {
    let setting = target.setting("sslrootcert");
    if setting == Some("system") {
        if mode != SslMode::VerifyFull {
            return Err(Error::new(
                ErrorKind::Config,
                format!(
                    "weak sslmode \"{}\" may not be used with sslrootcert=system (use \"verify-full\")",
                    target.setting("sslmode").unwrap_or("prefer")
                ),
            )
            .hint("set sslmode=verify-full with sslrootcert=system"));
        }
        let file = std::env::var_os("SSL_CERT_FILE")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(SYSTEM_CA_FILE));
        return Ok(Some(file));
    }
    let path = match setting {
        Some(path) => Some(PathBuf::from(path)),
        None => home_dir().map(|home| home.join(".postgresql/root.crt")),
    };
    match path {
        Some(path) if path.exists() => Ok(Some(path)),
        path if mode.verifies() => Err(Error::new(
            ErrorKind::DbConnection,
            match path {
                Some(path) => format!(
                    "root certificate file \"{}\" does not exist (sslrootcert)",
                    path.display()
                ),
                None => "could not get home directory to locate root certificate file (sslrootcert)"
                    .to_string(),
            },
        )
        .hint(format!(
            "provide the CA certificate that signed the server's certificate with sslrootcert in -d (or PGSSLROOTCERT), or, not to verify the server's certificate, sslmode=require instead of {}",
            target.sslmode_shown()
        ))),
        _ => Ok(None),
    }
}

/// A verifier of the server's chain against `rootcert` (with the CRLs of `sslcrl` and
/// `sslcrldir`), and of the host name, which [`LibpqVerifier`] ignores but in verify-full.
fn chain_verifier(
    target: &Target,
    rootcert: &Path,
    provider: &Arc<CryptoProvider>,
) -> Result<Arc<WebPkiServerVerifier>> {
    let setting = target.setting_origin("sslrootcert");
    let unusable = |why: String| {
        Error::new(
            ErrorKind::DbConnection,
            format!("root certificate file \"{}\" {why} ({setting})", rootcert.display()),
        )
        .hint("sslrootcert must name a readable PEM file holding the CA certificate(s) that signed the server's certificate")
    };
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(rootcert)
        .map_err(|e| unusable(format!("cannot be read: {e}")))?
        .collect::<std::result::Result<_, _>>()
        .map_err(|e| unusable(format!("is not PEM: {e}")))?;
    let mut roots = RootCertStore::empty();
    let (added, _) = roots.add_parsable_certificates(certs);
    if added == 0 {
        return Err(unusable("holds no usable certificate".to_string()));
    }
    let crls = revocation_lists(target)?;
    WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .with_crls(crls)
        .build()
        .map_err(|e| unusable(format!("cannot be used: {e}")))
}

/// The certificate revocation lists of `sslcrl` (a PEM file) and `sslcrldir` (every file in
/// the directory); a file that does not exist is passed over, as libpq does.
fn revocation_lists(target: &Target) -> Result<Vec<CertificateRevocationListDer<'static>>> {
    let mut files = Vec::new();
    if let Some(file) = target.setting("sslcrl") {
        files.push(("sslcrl", PathBuf::from(file)));
    }
    if let Some(dir) = target.setting("sslcrldir") {
        if let Ok(entries) = std::fs::read_dir(dir) {
            let mut paths: Vec<PathBuf> = entries.flatten().map(|e| e.path()).collect();
            paths.sort();
            files.extend(paths.into_iter().map(|p| ("sslcrldir", p)));
        }
    }
    let mut crls = Vec::new();
    for (setting, path) in files.into_iter().filter(|(_, p)| p.is_file()) {
        let bad = |why: String| {
            Error::new(
                ErrorKind::DbConnection,
                format!("certificate revocation list \"{}\" {why} ({})", path.display(), target.setting_origin(setting)),
            )
            .hint(format!("{setting} must name PEM certificate revocation lists (openssl ca -gencrl writes them)"))
        };
        let found: Vec<_> = CertificateRevocationListDer::pem_file_iter(&path)
            .map_err(|e| bad(format!("cannot be read: {e}")))?
            .collect::<std::result::Result<_, _>>()
            .map_err(|e| bad(format!("is not PEM: {e}")))?;
        if found.is_empty() {
            return Err(bad("holds no CRL".to_string()));
        }
        crls.extend(found);
    }
    Ok(crls)
}

/// The client certificate to present, as libpq finds it: `sslcert` (default
/// `~/.postgresql/postgresql.crt`) when it exists and `sslcertmode` is not `disable`, with
/// `sslkey` (default `~/.postgresql/postgresql.key`), which must not be readable by group or
/// others (libpq's rule).
#[allow(clippy::type_complexity)]
fn client_identity(
    target: &Target,
) -> Result<
    Option<(
        PathBuf,
        Vec<CertificateDer<'static>>,
        PrivateKeyDer<'static>,
    )>,
> {
    if target.setting("sslcertmode") == Some("disable") {
        return Ok(None);
    }
    let home = home_dir();
    let cert = target
        .setting("sslcert")
        .map(PathBuf::from)
        .or_else(|| home.as_ref().map(|h| h.join(".postgresql/postgresql.crt")));
    let Some(cert) = cert.filter(|c| c.exists()) else {
        if let Some(named) = target.setting("sslcert") {
            crate::warning!(
                "client certificate file \"{named}\" ({}) does not exist: connecting without a client certificate",
                target.setting_origin("sslcert")
            );
        }
        return Ok(None);
    };
    let key = target
        .setting("sslkey")
        .map(PathBuf::from)
        .or_else(|| home.as_ref().map(|h| h.join(".postgresql/postgresql.key")))
        .unwrap_or_default();
    let key_setting = target.setting_origin("sslkey");
    let cert_setting = target.setting_origin("sslcert");
    check_key_permissions(&key, &key_setting)?;
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&cert)
        .and_then(|certs| certs.collect::<std::result::Result<_, _>>())
        .map_err(|e| {
            Error::new(
                ErrorKind::DbConnection,
                format!(
                    "could not read certificate file \"{}\" ({cert_setting}): {e}",
                    cert.display()
                ),
            )
            .hint("sslcert must name a readable PEM certificate")
        })?;
    if chain.is_empty() {
        return Err(Error::new(
            ErrorKind::DbConnection,
            format!(
                "certificate file \"{}\" ({cert_setting}) holds no certificate",
                cert.display()
            ),
        )
        .hint("sslcert must name a readable PEM certificate"));
    }
    let key_der = PrivateKeyDer::from_pem_file(&key).map_err(|e| {
        Error::new(
            ErrorKind::DbConnection,
            format!(
                "could not load private key file \"{}\" ({key_setting}): {e}",
                key.display()
            ),
        )
        .hint("sslkey must name the unencrypted PEM private key of the certificate in sslcert")
    })?;
    Ok(Some((cert, chain, key_der)))
}

/// libpq's rule for the client key: a regular file, with no access for group or others when
/// owned by the user (0600 or less), or group read at most when owned by root (0640 or less).
pub(super) fn check_key_permissions(key: &Path, setting: &str) -> Result<()> {
    let meta = std::fs::metadata(key).map_err(|e| {
        Error::new(
            ErrorKind::DbConnection,
            format!(
                "certificate present, but not private key file \"{}\" ({setting}): {e}",
                key.display()
            ),
        )
        .hint("name the certificate's private key with sslkey in -d (or PGSSLKEY)")
    })?;
    if !meta.is_file() {
        return Err(Error::new(
            ErrorKind::DbConnection,
            format!(
                "private key file \"{}\" ({setting}) is not a regular file",
                key.display()
            ),
        )
        .hint("sslkey must name a file"));
    }
    let mode = meta.mode() & 0o777;
    let too_open = if meta.uid() == 0 {
        mode & 0o037 != 0
    } else {
        mode & 0o077 != 0
    };
    if too_open {
        return Err(Error::new(
            ErrorKind::DbConnection,
            format!(
                "private key file \"{}\" ({setting}) has group or world access; file must have permissions u=rw (0600) or less if owned by the current user, or permissions u=rw,g=r (0640) or less if owned by root",
                key.display()
            ),
        )
        .hint(format!("chmod 0600 \"{}\"", key.display())));
    }
    Ok(())
}

/// The error for a failed TLS handshake (`tls`, rustls's error) with `target`, in the
/// operator's terms, naming the setting that fixes it. Final: certificates do not fix
/// themselves.
pub(super) fn handshake_error(target: &Target, tls: &Tls, error: &rustls::Error) -> Error {
    let mode = target.sslmode_shown();
    let rootcert = || {
        tls.rootcert
            .as_ref()
            .map_or("sslrootcert".to_string(), |p| {
                format!(
                    "{} \"{}\"",
                    target.setting_origin("sslrootcert"),
                    p.display()
                )
            })
    };
    let (why, hint) = match error {
        rustls::Error::InvalidCertificate(
            CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
        ) => (
            format!("the server's certificate does not name the host \"{}\"", target.host),
            format!(
                "connect with a host name the certificate lists (its subjectAltName) in host= or -h (hostaddr= may give the address), or use sslmode=verify-ca instead of {mode} to check only who signed it"
            ),
        ),
        rustls::Error::InvalidCertificate(
            CertificateError::Revoked,
        ) => (
            "the server's certificate is revoked".to_string(),
            format!(
                "the server needs a new certificate; {} lists it as revoked",
                target.setting_origin("sslcrl")
            ),
        ),
        rustls::Error::InvalidCertificate(
            CertificateError::UnknownRevocationStatus,
        ) => (
            "no revocation list of the CA that signed the server's certificate".to_string(),
            format!(
                "{} and sslcrldir must hold the CRL of the CA that signed the server's certificate, or leave them out",
                target.setting_origin("sslcrl")
            ),
        ),
        rustls::Error::InvalidCertificate(
            CertificateError::Expired
            | CertificateError::ExpiredContext { .. }
            | CertificateError::NotValidYet
            | CertificateError::NotValidYetContext { .. },
        ) => (
            "the server's certificate is outside its validity period".to_string(),
            "renew the server's certificate, or check the clocks of this host and the server's".to_string(),
        ),
        rustls::Error::InvalidCertificate(_) => (
            format!("the server's certificate is not signed by a CA in {}", rootcert()),
            format!(
                "set sslrootcert to the CA certificate that signed the server's certificate, or, instead of {mode}, sslmode=require without a root certificate file (which encrypts without verifying)"
            ),
        ),
        refused if client_certificate_refused(refused) => match &tls.client_cert {
            None => (
                "the server requires a client certificate and none was presented".to_string(),
                "name a client certificate and its key with sslcert and sslkey in -d (or PGSSLCERT, PGSSLKEY)".to_string(),
            ),
            Some(path) => (
                format!("the server refused the client certificate \"{}\"", path.display()),
                format!(
                    "{} must be current and signed by a CA the server trusts (its ssl_ca_file)",
                    target.setting_origin("sslcert")
                ),
            ),
        },
        _ => (
            "TLS failed".to_string(),
            format!("check that the server has ssl = on and offers TLS 1.2 or 1.3, or change {mode}"),
        ),
    };
    Error::new(
        ErrorKind::DbConnection,
        format!("TLS with the source node failed: {why}: {error}"),
    )
    .detail(target.describe())
    .hint(hint)
}

/// libpq's verification of the server's certificate: none without a root certificate (the
/// handshake's own signatures are still checked, so the session is encrypted to whoever holds
/// that key); the chain and its revocation against the root certificate otherwise; the host
/// name too in verify-full only. webpki checks the name last, so a name mismatch means the
/// rest passed.
#[derive(Debug)]
struct LibpqVerifier {
    provider: Arc<CryptoProvider>,
    /// The chain's verifier, when there is a root certificate.
    chain: Option<Arc<WebPkiServerVerifier>>,
    /// verify-full: the certificate must name the host.
    check_name: bool,
}

impl ServerCertVerifier for LibpqVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> std::result::Result<ServerCertVerified, rustls::Error> {
        let Some(chain) = &self.chain else {
            return Ok(ServerCertVerified::assertion());
        };
        match chain.verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now) {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) if !self.check_name => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        let algorithms = &self.provider.signature_verification_algorithms;
        verify_tls12_signature(message, cert, dss, algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        let algorithms = &self.provider.signature_verification_algorithms;
        verify_tls13_signature(message, cert, dss, algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use states::SourceConn;
    use std::os::unix::fs::PermissionsExt;

    fn target(text: &str) -> Target {
        Target::resolve(&SourceConn {
            dbname: Some(text.to_string()),
            ..SourceConn::default()
        })
        .unwrap()
    }

    #[test]
    fn each_mode_makes_libpqs_attempts() {
        for (mode, attempts) in [
            ("disable", &[WireMode::Disable][..]),
            ("allow", &[WireMode::Disable, WireMode::Require]),
            ("prefer", &[WireMode::Prefer, WireMode::Disable]),
            ("require", &[WireMode::Require]),
            ("verify-ca", &[WireMode::Require]),
            ("verify-full", &[WireMode::Require]),
        ] {
            let target = target(&format!("host=h sslmode={mode}"));
            assert_eq!(SslMode::of(&target).attempts(), attempts, "{mode}");
        }
        assert_eq!(SslMode::of(&target("host=h")), SslMode::Prefer);
    }

    #[test]
    fn verification_needs_a_root_certificate_and_names_the_setting() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("nope.pem");
        let error = Tls::for_target(&target(&format!(
            "host=h sslmode=verify-full sslrootcert={}",
            missing.display()
        )))
        .err()
        .expect("no root certificate");
        assert_eq!(error.kind, ErrorKind::DbConnection);
        assert!(!error.retryable);
        error.assert_says(
            &format!(
                "root certificate file \"{}\" does not exist (sslrootcert)",
                missing.display()
            ),
            "sslmode=require instead of sslmode=verify-full",
        );
        // require without a root certificate does not verify, as in libpq.
        let tls = Tls::for_target(&target(&format!(
            "host=h sslmode=require sslrootcert={}",
            missing.display()
        )))
        .unwrap();
        assert_eq!(tls.rootcert, None);
        let garbage = dir.path().join("garbage.pem");
        std::fs::write(&garbage, "not a certificate").unwrap();
        let error = Tls::for_target(&target(&format!(
            "host=h sslmode=verify-ca sslrootcert={}",
            garbage.display()
        )))
        .err()
        .expect("no certificate in it");
        error.assert_says(
            "holds no usable certificate (sslrootcert)",
            "sslrootcert must name",
        );
        let error = Tls::for_target(&target("host=h sslmode=require sslrootcert=system"))
            .err()
            .expect("system roots need verify-full");
        error.assert_says(
            "weak sslmode \"require\" may not be used with sslrootcert=system",
            "verify-full",
        );
    }

    #[test]
    fn a_client_key_readable_by_others_is_refused_as_libpq_refuses_it() {
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("client.key");
        std::fs::write(&key, "-----BEGIN PRIVATE KEY-----\n").unwrap();
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
        let error = check_key_permissions(&key, "sslkey").unwrap_err();
        error.assert_says("has group or world access", "chmod 0600");
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
        check_key_permissions(&key, "sslkey").unwrap();
    }
}
