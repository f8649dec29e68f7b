//! Quoting of argument vectors for the two parsers they pass through: the POSIX shell that runs a
//! command on the Barman host (ssh joins its arguments into one string for the remote login
//! shell), and rsync's own splitting of its `-e` option.
//!
//! Must not: build a command from a format string. Every value goes through one of these
//! functions, so a path with spaces, quotes, `$` or `;` reaches its program unchanged.

/// Characters that need no quoting in a POSIX shell word (the same rule as the commands
/// printed for the operator, [`crate::paste`]). Anything else is single-quoted, so the DEBUG line
/// showing a command stays readable while odd values stay intact.
fn is_shell_safe(s: &str) -> bool {
    crate::paste::is_plain_word(s)
}

/// One argument as a POSIX shell word: unchanged when it only holds safe characters, otherwise
/// in single quotes, with each `'` written as `'\''` (see [`crate::paste::word`]).
pub fn shell_quote(arg: &str) -> String {
    crate::paste::word(arg)
}

/// An argument vector as one POSIX shell command line: each argument quoted, joined by spaces.
pub fn shell_join<S: AsRef<str>>(args: &[S]) -> String {
    args.iter()
        .map(|a| shell_quote(a.as_ref()))
        .collect::<Vec<_>>()
        .join(" ")
}

/// An argument vector as rsync's `-e` value. rsync splits that string itself (no shell): on
/// spaces, with `'…'` or `"…"` protecting spaces and a doubled quote inside quotes standing for
/// one quote; backslashes are literal. So the POSIX `'\''` form would be wrong here.
pub fn rsync_join<S: AsRef<str>>(args: &[S]) -> String {
    args.iter()
        .map(|a| {
            let a = a.as_ref();
            if is_shell_safe(a) {
                a.to_string()
            } else {
                format!("'{}'", a.replace('\'', "''"))
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    /// Values that break naive quoting: spaces, both quotes, `$`, `;`, backslashes, globs,
    /// newlines, a leading dash, an empty string, non-ASCII.
    const NASTY: &[&str] = &[
        "plain",
        "with space",
        "it's",
        "''",
        "\"double\"",
        "$HOME and ${x} and $(id) and `id`",
        "a;b && c | d > e",
        "back\\slash\\",
        "*.conf ?",
        "line1\nline2",
        "-n",
        "",
        "tab\there",
        "ünïcødé",
        "!bang #hash ~tilde",
    ];

    /// Runs `printf '%s\0' <args>` through a real `sh -c` and returns what arrived.
    fn through_sh(args: &[&str]) -> Vec<String> {
        let mut argv = vec!["printf", "%s\\0"];
        argv.extend_from_slice(args);
        let line = shell_join(&argv);
        let out = Command::new("sh")
            .arg("-c")
            .arg(&line)
            .output()
            .expect("sh must be runnable for the quoting test");
        assert!(out.status.success(), "sh failed on {line:?}: {out:?}");
        let text = String::from_utf8(out.stdout).expect("printf output is UTF-8");
        let mut parts: Vec<String> = text.split('\0').map(str::to_string).collect();
        assert_eq!(parts.pop().as_deref(), Some(""), "output ends with NUL");
        parts
    }

    #[test]
    fn every_value_survives_a_real_shell() {
        assert_eq!(through_sh(NASTY), NASTY);
    }

    #[test]
    fn nested_shell_survives_two_rounds() {
        // `sh -c <script> name args…` rendered once, then run by an outer shell: what a remote
        // probe script goes through over ssh.
        let inner = [
            "sh",
            "-c",
            "printf '%s\\0' \"$@\"",
            "probe",
            "it's $x; dir",
            "",
        ];
        let out = Command::new("sh")
            .arg("-c")
            .arg(shell_join(&inner))
            .output()
            .expect("sh runs");
        assert_eq!(out.stdout, b"it's $x; dir\0\0");
    }

    #[test]
    fn safe_words_stay_readable() {
        assert_eq!(
            shell_join(&["barman", "-c", "/etc/barman.conf", "-f", "json"]),
            "barman -c /etc/barman.conf -f json"
        );
        assert_eq!(shell_quote("it's"), "'it'\\''s'");
        assert_eq!(shell_quote(""), "''");
    }

    #[test]
    fn rsync_rsh_splitting_is_rsync_s_own() {
        assert_eq!(
            rsync_join(&["ssh", "-o", "BatchMode=yes", "-i", "/k/it's key"]),
            "ssh -o BatchMode=yes -i '/k/it''s key'"
        );
        assert_eq!(rsync_join(&["a b", ""]), "'a b' ''");
    }

    /// Hands a rendered `-e` value to a real rsync with a fake "ssh" that records its arguments,
    /// proving rsync splits it back into the original vector.
    #[test]
    fn rsync_splits_the_rendered_rsh_back() {
        let dir = tempfile::tempdir().expect("tempdir");
        let record = dir.path().join("args");
        let fake = dir.path().join("fake ssh");
        std::fs::write(
            &fake,
            format!(
                "#!/bin/sh\nprintf '%s\\0' \"$@\" > {}\nexit 1\n",
                shell_quote(record.to_str().expect("utf-8 temp path"))
            ),
        )
        .expect("write fake ssh");
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        let options = [
            "-o",
            "BatchMode=yes",
            "-i",
            "/k/it's key",
            "$HOME;x",
            "tab\there",
        ];
        let mut argv = vec![fake.to_str().expect("utf-8 temp path")];
        argv.extend_from_slice(&options);
        let status = Command::new("rsync")
            .arg("-e")
            .arg(rsync_join(&argv))
            .arg("somehost:/src/")
            .arg(dir.path().join("dst"))
            .stderr(std::process::Stdio::null())
            .status()
            .expect("rsync must be installed for this test");
        assert!(!status.success(), "the fake ssh fails on purpose");
        let got = std::fs::read(&record).expect("the fake ssh ran and recorded its arguments");
        let got: Vec<&[u8]> = got.split(|b| *b == 0).collect();
        for (i, want) in options.iter().enumerate() {
            assert_eq!(got[i], want.as_bytes(), "argument {i}");
        }
        assert_eq!(got[options.len()], b"somehost", "rsync appends the host");
    }
}
