//! The lab's throwaway GnuPG key for Barman's encrypted backups: a keyring in the lab's own
//! GNUPGHOME (never ~barman/.gnupg), a passphrase-protected key made there as `barman`, the
//! passphrase in a file only barman reads, and stopping the gpg-agent the keyring started.
//! It must not touch any other keyring.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use crate::exec::{self, as_user};
use crate::kinds::Encryption;
use crate::system::{GPG, GPGCONF};
use crate::LabError;

const STAGE: &str = "gpg key";
const GPG_TIMEOUT: Duration = Duration::from_secs(120);

/// `gpg`-family `program` as barman with `GNUPGHOME=home`.
fn as_barman(program: &str, home: &Path) -> Command {
    let mut cmd = as_user("barman", program);
    cmd.env("GNUPGHOME", home);
    cmd
}

/// Makes the keyring `home` (0700, barman's), a passphrase in `passphrase_file` (0600,
/// barman's) and a key protected by it that never expires, and returns what Barman's
/// configuration needs. The passphrase is drawn per lab: nothing about it is secret beyond the
/// lab, but no two labs share one.
///
/// The key is RSA, not ed25519/cv25519: Barman recognises an encrypted file by what `file
/// --brief` says of it ("PGP … encrypted"), and Debian 12's `file` names only RSA session keys
/// so; a file encrypted to a cv25519 key is just "data" to it.
pub(crate) fn make_key(home: &Path, passphrase_file: &Path) -> Result<Encryption, LabError> {
    exec::make_dir(home, Some("barman"), 0o700)?;
    let passphrase = format!(
        "pgreplica-lab-{}-{:x}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0)
    );
    exec::write_file(passphrase_file, &passphrase, Some("barman"), 0o600)?;
    exec::checked(
        as_barman(GPG, home)
            .args(["--batch", "--quiet", "--pinentry-mode", "loopback"])
            .arg("--passphrase-file")
            .arg(passphrase_file)
            .args([
                "--quick-generate-key",
                "pgreplica lab <lab@pgreplica.invalid>",
                "rsa2048",
                "sign,encr",
                "never",
            ]),
        STAGE,
        GPG_TIMEOUT,
    )?;
    let listed = exec::checked(
        as_barman(GPG, home).args(["--batch", "--with-colons", "--list-keys"]),
        STAGE,
        GPG_TIMEOUT,
    )?;
    let key_id = fingerprint(&String::from_utf8_lossy(&listed.stdout)).ok_or_else(|| {
        LabError::new(STAGE, "gpg made a key but lists no fingerprint for it")
            .detail(String::from_utf8_lossy(&listed.stdout).into_owned())
    })?;
    Ok(Encryption {
        key_id,
        passphrase_file: passphrase_file.to_path_buf(),
    })
}

/// Stops the gpg-agent (and any other GnuPG daemon) the keyring `home` started: it would
/// outlive the lab otherwise.
pub(crate) fn stop_agent(home: &Path) -> Result<(), LabError> {
    exec::checked(
        as_barman(GPGCONF, home).args(["--kill", "all"]),
        "stop gpg-agent",
        Duration::from_secs(30),
    )
    .map(drop)
}

/// The fingerprint of the first key in `gpg --with-colons --list-keys` output (the `fpr` line
/// after the `pub` line).
fn fingerprint(listing: &str) -> Option<String> {
    listing
        .lines()
        .skip_while(|line| !line.starts_with("pub:"))
        .find(|line| line.starts_with("fpr:"))
        .and_then(|line| line.split(':').nth(9))
        .filter(|f| !f.is_empty())
        .map(String::from)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_fingerprint_is_the_primary_keys() {
        let listing = "tru::1:1796037173:0:3:1:5\n\
            pub:u:255:22:21555B4AC3686C37:1796037173:::u:::scESC:::::ed25519:::0:\n\
            fpr:::::::::F04138C63CEE894E7443711F21555B4AC3686C37:\n\
            uid:u::::1796037173::A::pgreplica lab <lab@pgreplica.invalid>::::::::::0:\n\
            sub:u:255:18:C37B8487BDA37683:1796037173::::::e:::::cv25519::\n\
            fpr:::::::::FE9DC1860CDE5B9F3A7E3ADCC37B8487BDA37683:\n";
        assert_eq!(
            fingerprint(listing).as_deref(),
            Some("F04138C63CEE894E7443711F21555B4AC3686C37")
        );
        assert_eq!(fingerprint("tru::1\n"), None);
    }
}
