//! What rsync's exit codes mean, which of them are worth retrying unchanged, and the error an
//! rsync that did not exit 0 becomes.
//!
//! Must not: retry (the runner decides, from the error's retryable flag) or read rsync's
//! output (the caller passes the stderr tail).

use std::os::unix::process::ExitStatusExt;
use std::process::ExitStatus;

use crate::barman::ssh_failure;
use crate::error::{Error, ErrorKind};

/// What an rsync exit code means (rsync(1), EXIT VALUES; 255 comes from ssh).
pub fn exit_code_meaning(code: i32) -> &'static str {
    match code {
        1 => "syntax or usage error",
        2 => "protocol incompatibility",
        3 => "errors selecting input/output files, dirs",
        4 => "requested action not supported",
        5 => "error starting client-server protocol",
        10 => "error in socket I/O",
        11 => "error in file I/O",
        12 => "error in rsync protocol data stream, often ssh dying",
        13 => "errors with program diagnostics",
        14 => "error in IPC code",
        20 => "received SIGUSR1 or SIGINT",
        21 => "some error returned by waitpid()",
        22 => "error allocating core memory buffers",
        23 => "partial transfer due to error",
        24 => "partial transfer due to vanished source files",
        25 => "the --max-delete limit stopped deletions",
        30 => "timeout in data send/receive",
        35 => "timeout waiting for daemon connection",
        255 => "ssh failed to connect or died",
        _ => "unknown exit code",
    }
}

/// Whether running rsync again unchanged may succeed after it exited with `code`.
pub fn exit_code_is_retryable(code: i32) -> bool {
    matches!(code, 10 | 12 | 20 | 30 | 35 | 255)
}

/// The error for an rsync that ended with `status` while `what` ("copying … (stream n)"), with
/// rsync's stderr `tail` as DETAIL: retryable for the codes [`exit_code_is_retryable`] names,
/// a signal, or a missing status. When ssh's own complaint ends the tail (the Barman host
/// refused or dropped the connection, or stopped answering), the failure is ssh's: exit code
/// 12, as for any other ssh to the Barman host.
pub(super) fn exit_error(what: &str, status: ExitStatus, tail: &str) -> Error {
    // rsync's 255 is ssh's own exit: it died, even when it said nothing (LogLevel=ERROR).
    let ssh = match (status.code(), ssh_failure(tail)) {
        (Some(code), Some((line, transient))) => Some((code, line, transient)),
        (Some(255), None) => Some((255, "ssh died", true)),
        _ => None,
    };
    if let Some((code, line, transient)) = ssh {
        let hint = if transient {
            format!("the Barman host or the network to it stopped answering (ssh's ServerAliveInterval and ConnectTimeout noticed); files already copied are kept: once it answers again, \"{}\" re-sends only the rest", crate::paste::resume())
        } else {
            format!(
                "check barman_host and ssh_options in repmgr.conf (see DETAIL), then run \"{}\"",
                crate::paste::resume()
            )
        };
        let error = Error::new(
            ErrorKind::Ssh,
            format!("rsync lost its ssh connection to the Barman host {what}: {line}"),
        )
        .detail(format!(
            "rsync exit code {code} ({}): {tail}",
            exit_code_meaning(code)
        ))
        .hint(hint);
        return if transient { error.retryable() } else { error };
    }
    let (message, retryable) = match (status.code(), status.signal()) {
        (Some(code), _) => (
            format!(
                "rsync failed with exit code {code} ({}) {what}",
                exit_code_meaning(code)
            ),
            exit_code_is_retryable(code),
        ),
        (None, Some(signal)) => (format!("rsync was killed by signal {signal} {what}"), true),
        (None, None) => (format!("rsync ended without an exit status {what}"), true),
    };
    let detail = if tail.is_empty() {
        "rsync printed nothing on stderr".to_string()
    } else {
        tail.to_string()
    };
    let hint = if retryable {
        format!(
            "files already copied are kept; \"{}\" re-sends only the rest",
            crate::paste::resume()
        )
    } else {
        format!(
            "fix the cause shown in DETAIL, then run \"{}\"",
            crate::paste::resume()
        )
    };
    let error = Error::new(ErrorKind::Rsync, message)
        .detail(detail)
        .hint(hint);
    if retryable {
        error.retryable()
    } else {
        error
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_codes_are_classified() {
        for code in [10, 12, 20, 30, 35, 255] {
            assert!(exit_code_is_retryable(code), "{code}");
        }
        for code in [1, 2, 3, 11, 23, 24] {
            assert!(!exit_code_is_retryable(code), "{code}");
        }
        assert_eq!(exit_code_meaning(23), "partial transfer due to error");
        assert_eq!(exit_code_meaning(255), "ssh failed to connect or died");
        assert_eq!(exit_code_meaning(99), "unknown exit code");
    }

    #[test]
    fn a_failed_rsync_becomes_an_error_that_says_how_it_ended() {
        let what = "copying \"h:/b/\" to \"/d\" (stream 1)";
        let exited = |code: i32| ExitStatus::from_raw(code << 8);

        let refused = exit_error(what, exited(23), "rsync: link_stat \"/b/x\" failed");
        assert_eq!(refused.kind, ErrorKind::Rsync);
        assert_eq!(
            refused.message,
            "rsync failed with exit code 23 (partial transfer due to error) copying \"h:/b/\" to \"/d\" (stream 1)"
        );
        assert!(!refused.retryable);
        refused.assert_says("exit code 23", "fix the cause shown in DETAIL");
        assert_eq!(
            refused.detail.as_deref(),
            Some("rsync: link_stat \"/b/x\" failed")
        );

        let dropped = exit_error(what, exited(30), "");
        assert!(dropped.retryable);
        assert_eq!(
            dropped.detail.as_deref(),
            Some("rsync printed nothing on stderr")
        );
        dropped.assert_says("", "re-sends only the rest");
        let ssh_died = exit_error(what, exited(255), "rsync: connection unexpectedly closed");
        assert_eq!((ssh_died.kind, ssh_died.retryable), (ErrorKind::Ssh, true));
        ssh_died.assert_says(
            ": ssh died",
            "\"pgreplica clone resume\" re-sends only the rest",
        );

        let silent = exit_error(
            what,
            exited(255),
            "Timeout, server 127.0.0.1 not responding.\nrsync: connection unexpectedly closed (8 bytes received so far) [receiver]",
        );
        assert_eq!(silent.kind, ErrorKind::Ssh);
        assert_eq!(silent.exit_code(), 12);
        assert!(silent.retryable);
        silent.assert_says(
            "rsync lost its ssh connection to the Barman host copying \"h:/b/\" to \"/d\" (stream 1): Timeout, server 127.0.0.1 not responding.",
            "stopped answering",
        );
        let refused = exit_error(
            what,
            exited(12),
            "kex_exchange_identification: read: Connection reset by peer\nrsync error: error in rsync protocol data stream (code 12)",
        );
        assert_eq!((refused.kind, refused.retryable), (ErrorKind::Ssh, true));
        let denied = exit_error(
            what,
            exited(255),
            "barman@h: Permission denied (publickey).",
        );
        assert_eq!((denied.kind, denied.retryable), (ErrorKind::Ssh, false));

        let killed = exit_error(what, ExitStatus::from_raw(libc::SIGKILL), "");
        assert!(killed.retryable);
        assert_eq!(
            killed.message,
            "rsync was killed by signal 9 copying \"h:/b/\" to \"/d\" (stream 1)"
        );
    }
}
