//! The remote command that decrypts one file of a GPG-encrypted backup on the Barman host and
//! streams the clear bytes to this host: the key and its passphrase never leave the Barman
//! host, and pgreplica never sees the passphrase command either.
//!
//! The script asks Barman itself for the server's `encryption_passphrase_command`
//! (`show-server`), runs it, and feeds its output to `gpg --decrypt` as Barman does
//! (`--batch --pinentry-mode loopback --passphrase-fd 0`); the clear stream is cut by `tail -c`
//! so that a resumed copy carries only the bytes it lacks. gpg's own exit status is the
//! script's (through fd 4, since POSIX sh has no `pipefail`).
//!
//! Must not: run anything (the transfer's decrypt engine does) or paste a value into the
//! script: every value arrives as a positional parameter.

use super::Barman;

/// Exit status of the script when the server has no `encryption_passphrase_command`.
pub const NO_PASSPHRASE_COMMAND: i32 = 96;
/// Exit status of the script when the passphrase command fails or prints nothing.
pub const PASSPHRASE_COMMAND_FAILED: i32 = 97;

/// `$1` the file, `$2` the first byte to print (1-based, as `tail -c +N`), `$3` the server,
/// then the barman command (`barman [--config=…]`).
const SCRIPT: &str = r#"f="$1"; from="$2"; srv="$3"; shift 3
cmd=$("$@" show-server "$srv" | sed -n 's/^[[:space:]]*encryption_passphrase_command: //p')
if [ -z "$cmd" ] || [ "$cmd" = None ]; then
  echo "Barman server $srv has no encryption_passphrase_command" >&2; exit 96
fi
p=$(sh -c "$cmd") || { echo "encryption_passphrase_command failed" >&2; exit 97; }
[ -n "$p" ] || { echo "encryption_passphrase_command printed nothing" >&2; exit 97; }
exec 3>&1
s=$( { { printf '%s\n' "$p" | gpg --batch --yes --pinentry-mode loopback --passphrase-fd 0 --decrypt -- "$f"; echo $? >&4; } | tail -c +"$from" >&3; } 4>&1 )
exit "$s""#;

impl Barman {
    /// The local argument vector that prints the decrypted bytes of `remote_file` (a `*.gpg`
    /// file of a backup of this server) from byte `offset` on.
    pub fn decrypt_argv(&self, remote_file: &str, offset: u64) -> Vec<String> {
        let from = (offset + 1).to_string();
        let mut remote = vec![
            "sh".to_string(),
            "-c".to_string(),
            SCRIPT.to_string(),
            "pgreplica-decrypt".to_string(),
            remote_file.to_string(),
            from,
            self.server.clone(),
        ];
        remote.extend(self.barman_argv::<&str>(&[]));
        self.command_argv(&remote)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::barman::Transport;
    use std::os::unix::fs::PermissionsExt;
    use std::process::Command;

    /// The real script through `sh`, with a fake `barman` and `gpg` on PATH: the clear bytes
    /// from the offset, gpg's failure as the exit status, a missing passphrase command refused.
    #[test]
    fn the_script_prints_the_clear_bytes_from_the_offset_and_passes_gpg_failures_on() {
        let dir = tempfile::tempdir().unwrap();
        let bin = dir.path().join("bin");
        std::fs::create_dir(&bin).unwrap();
        let script = |name: &str, body: &str| {
            let path = bin.join(name);
            std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        };
        // barman prints the console show-server; gpg checks the passphrase and "decrypts"
        // (prints the file reversed… as-is, here) unless the file is named bad.
        script(
            "barman",
            "if [ \"$1\" = --config=/c ] && [ \"$3\" = enc ]; then printf 'Server enc:\\n\\tencryption_passphrase_command: echo s3cret\\n'; else echo 'Server other:'; fi",
        );
        script(
            "gpg",
            "read p; [ \"$p\" = s3cret ] || exit 2; for f; do :; done; case \"$f\" in *bad*) echo broken; exit 2;; esac; cat \"$f\"",
        );
        let file = dir.path().join("base.tar.gz.gpg");
        std::fs::write(&file, b"0123456789").unwrap();
        let barman = Barman::new("local", "enc", Some("/c".into()), vec![])
            .with_transport(Transport::Local(vec!["sh".into(), "-c".into()]));
        let run = |barman: &Barman, file: &std::path::Path, offset| {
            let argv = barman.decrypt_argv(file.to_str().unwrap(), offset);
            Command::new(&argv[0])
                .args(&argv[1..])
                .env("PATH", format!("{}:/usr/bin:/bin", bin.display()))
                .output()
                .unwrap()
        };
        let out = run(&barman, &file, 0);
        assert_eq!(
            (out.status.code(), &out.stdout[..]),
            (Some(0), &b"0123456789"[..])
        );
        let out = run(&barman, &file, 4);
        assert_eq!(
            (out.status.code(), &out.stdout[..]),
            (Some(0), &b"456789"[..])
        );
        let bad = dir.path().join("bad.gpg");
        std::fs::write(&bad, b"x").unwrap();
        assert_eq!(run(&barman, &bad, 0).status.code(), Some(2));
        let mut other = barman.clone();
        other.server = "plain".into();
        let out = run(&other, &file, 0);
        assert_eq!(out.status.code(), Some(NO_PASSPHRASE_COMMAND));
        assert!(String::from_utf8_lossy(&out.stderr).contains("no encryption_passphrase_command"));
    }
}
