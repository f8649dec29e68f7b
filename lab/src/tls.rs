//! A throwaway certificate authority made with `openssl ca` for the TLS tests of the source
//! connection: a CA, a second CA that signed nothing the server shows, the server's
//! certificate for `IP:127.0.0.1`, client certificates whose common name is a role, and a
//! revocation list. [`Lab::enable_ssl`](crate::Lab::enable_ssl) puts the server's side on the
//! primary.
//!
//! It keeps an `openssl ca` database (index, serial, CRL number) in its directory, so that a
//! certificate can be revoked and the CRL issued again. Keys are P-256, certificates last two
//! days: nothing here outlives a test.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::exec;
use crate::system::OPENSSL;
use crate::LabError;

/// The openssl configuration of the CA: its database, and the extensions of each kind of
/// certificate. webpki (rustls) wants X.509 v3 with a subjectAltName on the server's and
/// keyCertSign/cRLSign on the CA's.
fn ca_config(dir: &Path) -> String {
    format!(
        "[ ca ]\n\
         default_ca = lab_ca\n\
         [ lab_ca ]\n\
         dir = {dir}\n\
         database = $dir/index.txt\n\
         new_certs_dir = $dir/issued\n\
         certificate = $dir/ca.pem\n\
         private_key = $dir/ca.key\n\
         serial = $dir/serial\n\
         crlnumber = $dir/crlnumber\n\
         default_md = sha256\n\
         default_days = 2\n\
         default_crl_days = 2\n\
         policy = any_name\n\
         unique_subject = no\n\
         [ any_name ]\n\
         commonName = supplied\n\
         [ req ]\n\
         distinguished_name = req_dn\n\
         [ req_dn ]\n\
         [ ca_cert ]\n\
         basicConstraints = critical, CA:TRUE\n\
         keyUsage = critical, keyCertSign, cRLSign\n\
         subjectKeyIdentifier = hash\n\
         [ server_cert ]\n\
         basicConstraints = CA:FALSE\n\
         keyUsage = critical, digitalSignature, keyEncipherment\n\
         extendedKeyUsage = serverAuth\n\
         subjectAltName = IP:127.0.0.1\n\
         [ client_cert ]\n\
         basicConstraints = CA:FALSE\n\
         keyUsage = critical, digitalSignature\n\
         extendedKeyUsage = clientAuth\n",
        dir = dir.display()
    )
}

/// The CA's files, in its own directory.
#[derive(Debug, Clone)]
pub struct Pki {
    dir: PathBuf,
    /// The CA certificate (`sslrootcert` for the clone, `ssl_ca_file` for the server).
    pub ca: PathBuf,
    /// A CA certificate that signed nothing the server presents: the wrong `sslrootcert`.
    pub other_ca: PathBuf,
    /// The server's certificate, for `IP:127.0.0.1` only.
    pub server_cert: PathBuf,
    /// Its key.
    pub server_key: PathBuf,
    /// The CA's revocation list (PEM), as last issued.
    pub crl: PathBuf,
}

impl Pki {
    /// Makes the CA, the other CA, the server's certificate and an empty revocation list in
    /// `dir` (created).
    pub fn generate(dir: &Path) -> Result<Pki, LabError> {
        exec::make_dir(dir, None, 0o755)?;
        exec::make_dir(&dir.join("issued"), None, 0o755)?;
        let file = |name: &str| dir.join(name);
        std::fs::write(file("openssl.cnf"), ca_config(dir))
            .and_then(|()| std::fs::write(file("index.txt"), ""))
            .and_then(|()| std::fs::write(file("serial"), "1000\n"))
            .and_then(|()| std::fs::write(file("crlnumber"), "1000\n"))
            .map_err(|e| LabError::io("pki", format!("write {}", dir.display()), e))?;
        let pki = Pki {
            dir: dir.to_path_buf(),
            ca: file("ca.pem"),
            other_ca: file("other-ca.pem"),
            server_cert: file("server.pem"),
            server_key: file("server.key"),
            crl: file("crl.pem"),
        };
        for name in ["ca", "other-ca"] {
            pki.openssl(&[
                "req",
                "-x509",
                "-new",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:prime256v1",
                "-nodes",
                "-days",
                "2",
                "-extensions",
                "ca_cert",
                "-keyout",
                &format!("{name}.key"),
                "-out",
                &format!("{name}.pem"),
                "-subj",
                &format!("/CN=pgreplica-lab-{name}"),
            ])?;
        }
        pki.issue("server", "127.0.0.1", "server_cert")?;
        pki.issue_crl()?;
        Ok(pki)
    }

    /// Issues a client certificate whose common name is `role` (what `cert` authentication
    /// checks): returns the certificate and its key (mode 0600, owned by `owner`).
    pub fn client_certificate(
        &self,
        role: &str,
        owner: &str,
    ) -> Result<(PathBuf, PathBuf), LabError> {
        let name = format!("client-{role}");
        self.issue(&name, role, "client_cert")?;
        let key = self.dir.join(format!("{name}.key"));
        exec::own(&key, owner, 0o600)?;
        Ok((self.dir.join(format!("{name}.pem")), key))
    }

    /// Revokes the server's certificate and issues the revocation list again.
    pub fn revoke_server_certificate(&self) -> Result<(), LabError> {
        let cert = self.server_cert.display().to_string();
        self.openssl(&["ca", "-batch", "-config", "openssl.cnf", "-revoke", &cert])?;
        self.issue_crl()
    }

    /// A key `NAME.key` and a certificate `NAME.pem` for `common_name`, signed by the CA with
    /// the `extensions` section of the configuration.
    fn issue(&self, name: &str, common_name: &str, extensions: &str) -> Result<(), LabError> {
        self.openssl(&[
            "req",
            "-new",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-keyout",
            &format!("{name}.key"),
            "-out",
            &format!("{name}.csr"),
            "-subj",
            &format!("/CN={common_name}"),
        ])?;
        self.openssl(&[
            "ca",
            "-batch",
            "-config",
            "openssl.cnf",
            "-extensions",
            extensions,
            "-notext",
            "-in",
            &format!("{name}.csr"),
            "-out",
            &format!("{name}.pem"),
        ])
    }

    fn issue_crl(&self) -> Result<(), LabError> {
        self.openssl(&[
            "ca",
            "-batch",
            "-config",
            "openssl.cnf",
            "-gencrl",
            "-out",
            "crl.pem",
        ])
    }

    /// `openssl ARGS` in the CA's directory (`OPENSSL_CONF` pointing at its configuration).
    fn openssl(&self, args: &[&str]) -> Result<(), LabError> {
        exec::checked(
            Command::new(OPENSSL)
                .args(args)
                .current_dir(&self.dir)
                .env("OPENSSL_CONF", self.dir.join("openssl.cnf")),
            &format!("openssl {}", args[0]),
            Duration::from_secs(30),
        )
        .map(drop)
    }
}
