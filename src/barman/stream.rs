//! The remote commands of the streaming copy engine ([`crate::transfer::stream`]): a `tar` of
//! listed files of a backup on the Barman host, written to ssh's stdout, and the mode and tail
//! of one file from an offset, for a file whose first bytes a killed copy left here.
//!
//! The files to send arrive on the command's stdin, NUL-terminated absolute paths (`--null`:
//! names are taken verbatim, never as options, whatever bytes they hold), so a list of any
//! length never meets a command-line limit. `-P` keeps the absolute names in the archive, which
//! is how the engine maps each member back to its entry and its root. `--no-recursion`: a
//! listed directory is sent as itself, its files only when listed.
//!
//! Must not: run anything (the transfer's stream engine does) or paste a value into a command
//! line: every path is a separate, quoted argument or a line on stdin.

use super::Barman;

impl Barman {
    /// The local argument vector that writes a tar archive (GNU format) of the files whose
    /// absolute paths on the Barman host it reads from its stdin, NUL-terminated.
    pub fn tar_stream_argv(&self) -> Vec<String> {
        self.command_argv(&[
            "tar",
            "--create",
            "--file=-",
            "--format=gnu",
            "--no-recursion",
            "--absolute-names",
            "--null",
            "--files-from=-",
        ])
    }

    /// The local argument vector that prints `remote_file`'s permission bits (octal, on a line
    /// of their own: the tail does not carry them as tar's header does) and then its bytes
    /// from `offset` on.
    pub fn tail_argv(&self, remote_file: &str, offset: u64) -> Vec<String> {
        let from = format!("+{}", offset + 1);
        self.command_argv(&[
            "sh",
            "-c",
            r#"stat -c %a -- "$1" && exec tail -c "$2" -- "$1""#,
            "pgreplica-tail",
            remote_file,
            from.as_str(),
        ])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::barman::Transport;
    use std::io::{Read, Write};
    use std::os::unix::fs::PermissionsExt;
    use std::process::{Command, Stdio};

    fn local() -> Barman {
        Barman::new("local", "pg", None, vec![])
            .with_transport(Transport::Local(vec!["sh".into(), "-c".into()]))
    }

    /// The real tar through `sh`: the listed files (an odd name among them) and a directory
    /// without its contents, under their absolute names; the file's mode and its tail from an offset.
    #[test]
    fn the_stream_holds_exactly_the_listed_files_under_their_absolute_names() {
        let dir = tempfile::tempdir().unwrap();
        let odd = dir.path().join("-odd\nname 'x'");
        std::fs::write(&odd, b"odd bytes").unwrap();
        std::fs::create_dir(dir.path().join("sub")).unwrap();
        std::fs::write(dir.path().join("sub/unlisted"), b"no").unwrap();
        let plain = dir.path().join("plain");
        std::fs::write(&plain, b"0123456789").unwrap();
        let argv = local().tar_stream_argv();
        let mut child = Command::new(&argv[0])
            .args(&argv[1..])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut list = Vec::new();
        for path in [odd.clone(), dir.path().join("sub"), plain.clone()] {
            list.extend_from_slice(path.as_os_str().as_encoded_bytes());
            list.push(0);
        }
        child.stdin.take().unwrap().write_all(&list).unwrap();
        let mut archive = tar::Archive::new(child.stdout.take().unwrap());
        let mut seen = Vec::new();
        for member in archive.entries().unwrap() {
            let mut member = member.unwrap();
            let name = String::from_utf8(member.path_bytes().to_vec()).unwrap();
            let mut bytes = Vec::new();
            member.read_to_end(&mut bytes).unwrap();
            seen.push((name, bytes));
        }
        assert!(child.wait().unwrap().success());
        let name = |p: &std::path::Path| p.to_str().unwrap().to_string();
        assert_eq!(
            seen,
            vec![
                (name(&odd), b"odd bytes".to_vec()),
                (format!("{}/", name(&dir.path().join("sub"))), Vec::new()),
                (name(&plain), b"0123456789".to_vec()),
            ]
        );
        let argv = local().tail_argv(plain.to_str().unwrap(), 4);
        std::fs::set_permissions(&plain, std::fs::Permissions::from_mode(0o640)).unwrap();
        let out = Command::new(&argv[0]).args(&argv[1..]).output().unwrap();
        assert_eq!(
            (out.status.code(), &out.stdout[..]),
            (Some(0), &b"640\n456789"[..])
        );
    }
}
