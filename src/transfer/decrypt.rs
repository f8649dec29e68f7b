//! The decrypt engine: streams the clear bytes of one file of a GPG-encrypted backup from the
//! Barman host (where [`Barman::decrypt_argv`] decrypts it: the key never leaves that host)
//! into a staged file here, under a guardian so that the ssh dies with pgreplica.
//!
//! Resumable mid-file: a staged file left short by a kill is continued from its length (the
//! script skips what is already here, so the network carries only the missing bytes; gpg
//! still decrypts from the start on the Barman host, as a stream cannot be entered in the
//! middle). The bytes are checked when they are unpacked: every compression's own checksum
//! (gzip's CRC, zstd's and lz4's content checksums) covers the whole stream.
//!
//! Must not: touch the store; StageBackup marks a file done when this returns.

use std::path::Path;
use std::process::{Command, Stdio};

use super::guardian::run_to_end;
use crate::barman::decrypt::{NO_PASSPHRASE_COMMAND, PASSPHRASE_COMMAND_FAILED};
use crate::barman::Barman;
use crate::durable::io_error;
use crate::error::{Error, ErrorKind, Result};

/// Appends the clear bytes of `remote_file` that `local` lacks; returns how many it appended.
pub async fn decrypt_into(barman: &Barman, remote_file: &str, local: &Path) -> Result<u64> {
    use std::os::unix::fs::OpenOptionsExt;
    let file = std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o600)
        .open(local)
        .map_err(|e| io_error("open", local, e))?;
    let offset = file
        .metadata()
        .map_err(|e| io_error("read", local, e))?
        .len();
    if offset > 0 {
        crate::notice!(
            "continuing the decryption of \"{remote_file}\" after its first {} bytes",
            offset
        );
    }
    let argv = barman.decrypt_argv(remote_file, offset);
    let mut command = Command::new(&argv[0]);
    command.args(&argv[1..]).stdin(Stdio::null()).stdout(file);
    crate::debug!("decrypting \"{remote_file}\" on the Barman host");
    let (status, stderr) = run_to_end(command, "pgreplica-decrypt")
        .await
        .map_err(|e| {
            Error::new(ErrorKind::Ssh, format!("cannot run ssh to decrypt \"{remote_file}\": {e}"))
                .hint("install the OpenSSH client (package openssh-client) and make sure \"ssh\" is on PATH")
        })?;
    let appended = std::fs::metadata(local)
        .map_err(|e| io_error("read", local, e))?
        .len()
        - offset;
    let stderr = String::from_utf8_lossy(&stderr).trim().to_string();
    let failed = |message: String, hint: String| {
        let error = Error::new(ErrorKind::Barman, message).hint(hint);
        if stderr.is_empty() {
            error
        } else {
            error.detail(crate::child_output::detail(&stderr))
        }
    };
    match status.code() {
        Some(0) => Ok(appended),
        Some(NO_PASSPHRASE_COMMAND) | Some(PASSPHRASE_COMMAND_FAILED) => Err(failed(format!(
            "cannot decrypt \"{remote_file}\" on the Barman host \"{}\": Barman's encryption_passphrase_command of server \"{}\" is missing or fails",
            barman.host, barman.server
        ), format!("set encryption_passphrase_command in the server's section of Barman's configuration (as \"barman restore\" of an encrypted backup needs it), then run \"{}\"", crate::paste::resume()))),
        // ssh's own failures, or a signal: the link, not the backup.
        Some(255) | None => Err(failed(format!(
            "the ssh session decrypting \"{remote_file}\" on \"{}\" failed",
            barman.host
        ), format!("run \"{}\": the file is continued where it stopped", crate::paste::resume()))
        .retryable()),
        Some(code) => Err(failed(format!(
            "gpg could not decrypt \"{remote_file}\" on the Barman host \"{}\" (exit code {code})",
            barman.host
        ), "check that the Barman host's gpg holds the backup's private key and that encryption_passphrase_command prints its passphrase, as \"barman restore\" needs".to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::barman::Transport;
    use std::os::unix::fs::PermissionsExt;
    use std::process::Command;

    /// A real gpg key, file and decryption through the real script (with a stand-in `barman`
    /// that prints the passphrase command, as `show-server` does): a file cut short by a kill is
    /// continued to the exact clear bytes, a complete one gets nothing more, and a missing
    /// passphrase command is a clear error.
    #[tokio::test]
    async fn a_staged_file_cut_short_is_continued_to_the_exact_clear_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let home = dir.path().join("gnupg");
        std::fs::create_dir(&home).unwrap();
        std::fs::set_permissions(&home, std::fs::Permissions::from_mode(0o700)).unwrap();
        /// The gpg-agent the key's making starts is stopped with the test, even a failed one.
        struct Agent<'a>(&'a std::path::Path);
        impl Drop for Agent<'_> {
            fn drop(&mut self) {
                let _ = Command::new("gpgconf")
                    .env("GNUPGHOME", self.0)
                    .args(["--kill", "all"])
                    .status();
            }
        }
        let _agent = Agent(&home);
        let gpg = |args: &[&str]| {
            let out = Command::new("gpg")
                .env("GNUPGHOME", &home)
                .args([
                    "--batch",
                    "--pinentry-mode",
                    "loopback",
                    "--passphrase",
                    "s3cret",
                ])
                .args(args)
                .output()
                .expect("gpg is installed (the lab's installer adds gnupg)");
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
        };
        gpg(&[
            "--quick-gen-key",
            "pgreplica-test",
            "default",
            "default",
            "never",
        ]);
        let clear: Vec<u8> = (0..300_000_u32).map(|i| (i * 7 % 251) as u8).collect();
        let plain = dir.path().join("base.tar.gz");
        std::fs::write(&plain, &clear).unwrap();
        let encrypted = dir.path().join("base.tar.gz.gpg");
        gpg(&[
            "--compress-level",
            "0",
            "--recipient",
            "pgreplica-test",
            "--output",
            encrypted.to_str().unwrap(),
            "--encrypt",
            plain.to_str().unwrap(),
        ]);
        let passphrase = dir.path().join("passphrase");
        std::fs::write(&passphrase, "s3cret\n").unwrap();
        let bin = dir.path().join("bin");
        std::fs::create_dir(&bin).unwrap();
        let barman = bin.join("barman");
        std::fs::write(
            &barman,
            format!(
                "#!/bin/sh\n[ \"$2\" = enc ] && printf 'Server enc:\\n\\tencryption_passphrase_command: cat {}\\n'\n",
                passphrase.display()
            ),
        )
        .unwrap();
        std::fs::set_permissions(&barman, std::fs::Permissions::from_mode(0o755)).unwrap();
        let launcher = |server: &str| {
            Barman::new("local", server, None, vec![]).with_transport(Transport::Local(vec![
                "env".into(),
                format!("PATH={}:/usr/bin:/bin", bin.display()),
                format!("GNUPGHOME={}", home.display()),
                "sh".into(),
                "-c".into(),
            ]))
        };
        let remote = encrypted.to_str().unwrap();
        let staged = dir.path().join("staged.tar.gz");
        std::fs::write(&staged, &clear[..123_457]).unwrap();
        let appended = decrypt_into(&launcher("enc"), remote, &staged)
            .await
            .unwrap();
        assert_eq!(appended, (clear.len() - 123_457) as u64);
        assert!(
            std::fs::read(&staged).unwrap() == clear,
            "continued to the exact clear bytes"
        );
        assert_eq!(
            decrypt_into(&launcher("enc"), remote, &staged)
                .await
                .unwrap(),
            0
        );

        let error = decrypt_into(&launcher("other"), remote, &dir.path().join("x"))
            .await
            .unwrap_err();
        assert_eq!(error.kind, ErrorKind::Barman);
        assert!(
            error.message.contains("encryption_passphrase_command"),
            "{}",
            error.message
        );
        assert!(!error.retryable);
    }
}
