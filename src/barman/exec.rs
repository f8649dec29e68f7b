//! Running one command on the Barman host and turning its failures into pgreplica errors.
//!
//! Every run is bounded by a timeout and its child is killed when the run is dropped (timeout,
//! SIGINT, a cancelled step), so no ssh outlives the step that started it.
//!
//! Must not: decide what a command's output means — that is the caller's job; here only the
//! transport (ssh) and "command not found" are classified.

use crate::child_output;
use crate::error::{Error, ErrorKind, Result};
use std::process::Stdio;
use std::time::Duration;

/// What a remote command printed and how it ended.
#[derive(Debug, Clone)]
pub struct RemoteOutput {
    /// Exit status of the remote command (ssh passes it through).
    pub status: i32,
    /// Raw standard output (bytes: file listings may hold any byte).
    pub stdout: Vec<u8>,
    /// Standard error, lossily decoded, for messages.
    pub stderr: String,
}

impl RemoteOutput {
    /// Standard output as text (lossy: only used for Barman's own UTF-8 output).
    pub fn stdout_text(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }
}

/// What the failure classifier needs to know about where a command ran.
pub(crate) struct Target<'a> {
    /// The ssh destination, for messages.
    pub host: &'a str,
    /// A command line the operator can paste to test the connection by hand.
    pub probe_hint: String,
}

/// ssh messages that mean the link, not the login, failed: worth retrying unchanged.
const TRANSIENT: &[&str] = &[
    "Connection refused",
    "timed out",
    "not responding",
    "Connection reset",
    "Connection closed",
    "closed by remote host",
    "No route to host",
    "Network is unreachable",
    "kex_exchange_identification",
    "Broken pipe",
    "Temporary failure in name resolution",
];

/// ssh's own messages (printed with rc 255, but recognised whatever the code, because some
/// wrappers remap it).
const SSH_MARKERS: &[&str] = &[
    "Permission denied (",
    "Could not resolve hostname",
    "ssh: connect to host",
    "Host key verification failed",
    "Connection refused",
    "kex_exchange_identification",
    "during banner exchange",
    "Timeout, server",
    "Connection closed by",
    "Connection reset by",
    "closed by remote host",
];

/// The last line of `stderr` (a program's whose link to the Barman host is ssh, such as rsync)
/// that is ssh's own complaint about the connection, and whether retrying may help: what
/// turns a failed rsync into an ssh failure.
pub fn ssh_failure(stderr: &str) -> Option<(&str, bool)> {
    let line = stderr
        .lines()
        .rev()
        .find(|line| SSH_MARKERS.iter().any(|m| line.contains(m)))?;
    Some((line.trim(), TRANSIENT.iter().any(|m| line.contains(m))))
}

/// Runs `argv` (ssh or a local launcher plus the rendered remote command) with `timeout`.
///
/// Returns the output for any exit status of the remote command except the ones that say the
/// command never ran: the transport failed (ssh rc 255 or its messages), the process could not
/// start, was killed by a signal or timed out (all [`ErrorKind::Ssh`]), or the remote shell did
/// not find the program (rc 127, [`ErrorKind::Barman`]).
pub(crate) async fn run(
    argv: &[String],
    timeout: Duration,
    target: &Target<'_>,
) -> Result<RemoteOutput> {
    let (program, args) = argv
        .split_first()
        .ok_or_else(|| Error::bug("empty command for the Barman host"))?;
    // The remote command line as the remote shell receives it (the last argument).
    crate::debug!(
        "on the Barman host \"{}\": {}",
        target.host,
        args.last().map_or("", String::as_str)
    );
    let child = tokio::process::Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| {
            Error::new(ErrorKind::Ssh, format!("cannot run \"{program}\" to reach the Barman host \"{}\": {e}", target.host))
                .hint("install the OpenSSH client (package openssh-client) and make sure \"ssh\" is on PATH")
        })?;
    let output = match tokio::time::timeout(timeout, child.wait_with_output()).await {
        Ok(Ok(output)) => output,
        Ok(Err(e)) => {
            return Err(Error::new(
                ErrorKind::Ssh,
                format!(
                    "lost the command on the Barman host \"{}\": {e}",
                    target.host
                ),
            )
            .hint(format!(
                "check that the Barman host is up and this works: {}",
                target.probe_hint
            ))
            .retryable())
        }
        // Dropping the future drops the child, and kill_on_drop kills it.
        Err(_) => {
            return Err(Error::new(
                ErrorKind::Ssh,
                format!(
                    "no answer from the Barman host \"{}\" within {}",
                    target.host,
                    seconds(timeout)
                ),
            )
            .hint(format!(
                "check that the Barman host is up and answers quickly: {}",
                target.probe_hint
            ))
            .retryable())
        }
    };
    let stderr = String::from_utf8_lossy(&output.stderr)
        .trim_end()
        .to_string();
    let Some(status) = output.status.code() else {
        return Err(Error::new(
            ErrorKind::Ssh,
            format!(
                "the command on the Barman host \"{}\" was killed by a signal",
                target.host
            ),
        )
        .detail(output_detail(&stderr))
        .hint(format!(
            "ssh was stopped by a signal: check that the Barman host is up and that this works: {}",
            target.probe_hint
        ))
        .retryable());
    };
    classify(status, output.stdout, stderr, target)
}

/// Maps transport failures and "command not found" to errors; passes everything else back.
pub(crate) fn classify(
    status: i32,
    stdout: Vec<u8>,
    stderr: String,
    target: &Target<'_>,
) -> Result<RemoteOutput> {
    if status == 255 || (status != 0 && SSH_MARKERS.iter().any(|m| stderr.contains(m))) {
        let reason =
            child_output::last_line(&stderr).unwrap_or("ssh exited with status 255 and no message");
        // ssh often says one line, which the message already shows.
        let detail = if stderr.trim() == reason {
            format!("ssh exited with status {status} and said nothing more")
        } else {
            output_detail(&stderr)
        };
        let err = Error::new(ErrorKind::Ssh, format!("ssh to the Barman host \"{}\" failed: {reason}", target.host))
            .detail(detail)
            .hint(format!(
                "check barman_host and ssh_options in repmgr.conf, and that this works without a password prompt: {}",
                target.probe_hint
            ));
        return Err(if TRANSIENT.iter().any(|m| stderr.contains(m)) {
            err.retryable()
        } else {
            err
        });
    }
    if status == 127 {
        return Err(Error::new(
            ErrorKind::Barman,
            format!("a command was not found on the Barman host \"{}\"", target.host),
        )
        .detail(output_detail(&stderr))
        .hint(format!(
            "make sure Barman (and GNU findutils) are installed on the Barman host and on the PATH of non-interactive ssh sessions: {}",
            target.probe_hint
        )));
    }
    Ok(RemoteOutput {
        status,
        stdout,
        stderr,
    })
}

/// A duration as operators write it: `120 s`, `0.5 s`.
fn seconds(d: Duration) -> String {
    if d.subsec_millis() == 0 {
        format!("{} s", d.as_secs())
    } else {
        format!("{:.1} s", d.as_secs_f64())
    }
}

/// The output of a failed command as a DETAIL: passwords masked, then kept as every program's
/// output is ([`child_output::detail`]), or a placeholder when it said nothing. Barman may echo
/// a conninfo in its messages, and DETAIL lines end up in logs and in the clone's recorded
/// error.
pub(crate) fn output_detail(text: &str) -> String {
    let text = text.trim();
    if text.is_empty() {
        return "the command printed nothing".to_string();
    }
    child_output::detail(&redact(text))
}

/// Byte range of the first URL password (`scheme://user:PASSWORD@host`) in `text`.
fn url_password(text: &str) -> Option<(usize, usize)> {
    text.match_indices("://").find_map(|(i, _)| {
        let auth_start = i + 3;
        let auth_len =
            text[auth_start..].find(|c: char| c == '@' || c == '/' || c.is_whitespace())?;
        let auth_end = auth_start + auth_len;
        let colon = text[auth_start..auth_end].find(':')?;
        text[auth_end..]
            .starts_with('@')
            .then_some((auth_start + colon + 1, auth_end))
    })
}

/// Masks `password=…` conninfo values and the password of `scheme://user:password@host` URLs.
pub(crate) fn redact(text: &str) -> String {
    const MASK: &str = "********";
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    loop {
        let lower = rest.to_ascii_lowercase();
        let key = lower.find("password=").map(|i| (i, i + "password=".len()));
        let url = url_password(rest);
        match (key, url) {
            (Some((start, value)), u) if u.is_none_or(|(us, _)| start < us) => {
                out.push_str(&rest[..value]);
                out.push_str(MASK);
                let tail = &rest[value..];
                let quoted = tail.starts_with('\'');
                let end = if quoted {
                    tail[1..].find('\'').map_or(tail.len(), |e| e + 2)
                } else {
                    tail.find(|c: char| c.is_whitespace() || c == '\'' || c == '"' || c == ',')
                        .unwrap_or(tail.len())
                };
                rest = &tail[end..];
            }
            (_, Some((start, end))) => {
                out.push_str(&rest[..start]);
                out.push_str(MASK);
                rest = &rest[end..];
            }
            _ => {
                out.push_str(rest);
                return out;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target() -> Target<'static> {
        Target {
            host: "barman@barmansrv",
            probe_hint: "ssh barman@barmansrv barman --version".into(),
        }
    }

    fn sh(script: &str) -> Vec<String> {
        vec!["sh".into(), "-c".into(), script.into()]
    }

    fn rt() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime")
    }

    #[test]
    fn ssh_failures_are_ssh_errors_and_transient_ones_retryable() {
        let refused = classify(
            255,
            vec![],
            "ssh: connect to host barmansrv port 22: Connection refused".into(),
            &target(),
        )
        .expect_err("255 is an ssh failure");
        assert_eq!(refused.kind, ErrorKind::Ssh);
        assert_eq!(refused.exit_code(), 12);
        assert!(refused.retryable);
        refused.assert_says(
            "Connection refused",
            "ssh barman@barmansrv barman --version",
        );

        let denied = classify(
            255,
            vec![],
            "barman@barmansrv: Permission denied (publickey).".into(),
            &target(),
        )
        .expect_err("denied");
        assert_eq!(denied.kind, ErrorKind::Ssh);
        assert!(!denied.retryable, "a refused key does not fix itself");

        let unresolved = classify(
            255,
            vec![],
            "ssh: Could not resolve hostname barmansrv: Name or service not known".into(),
            &target(),
        )
        .expect_err("unresolved");
        assert!(!unresolved.retryable);
    }

    #[test]
    fn missing_remote_program_is_a_barman_error() {
        let err = classify(
            127,
            vec![],
            "bash: line 1: barman: command not found".into(),
            &target(),
        )
        .expect_err("127 means not found");
        assert_eq!(err.kind, ErrorKind::Barman);
        assert_eq!(err.exit_code(), 19);
        assert!(err
            .detail
            .as_deref()
            .unwrap_or("")
            .contains("barman: command not found"));
    }

    #[test]
    fn details_never_carry_passwords() {
        assert_eq!(
            redact("conninfo: host=db password=s3cr3t user=barman"),
            "conninfo: host=db password=******** user=barman"
        );
        assert_eq!(redact("PASSWORD='it is' x"), "PASSWORD=******** x");
        assert_eq!(
            redact("postgresql://barman:pw@db:5432/postgres and s3://bucket/x"),
            "postgresql://barman:********@db:5432/postgres and s3://bucket/x"
        );
        assert_eq!(
            redact("password=a password=b"),
            "password=******** password=********"
        );
        assert_eq!(redact("nothing here"), "nothing here");
        assert_eq!(output_detail("  "), "the command printed nothing");
        let long = output_detail(&"x".repeat(5000));
        assert_eq!(long.chars().count(), child_output::DETAIL_CHARS + 1);
        assert!(long.ends_with('…'));
        // A traceback says why at its end: the DETAIL keeps the last lines, masked.
        let traceback: String = (0..30)
            .map(|n| format!("  frame {n}\n"))
            .collect::<String>()
            + "psycopg2.OperationalError: host=db password=s3cr3t failed\n";
        let detail = output_detail(&traceback);
        assert_eq!(detail.lines().count(), child_output::DETAIL_LINES);
        assert!(
            detail.ends_with("OperationalError: host=db password=******** failed"),
            "{detail}"
        );
        assert!(!detail.contains("frame 18\n"), "{detail}");
    }

    #[test]
    fn other_statuses_come_back_for_the_caller() {
        let out =
            classify(1, b"{}".to_vec(), "ERROR: x".into(), &target()).expect("rc 1 is barman's");
        assert_eq!(out.status, 1);
        assert_eq!(out.stdout, b"{}");
        assert_eq!(out.stderr, "ERROR: x");
        // An ssh message without rc 255 (a wrapper remapped it) is still ssh's failure.
        let remapped = classify(
            1,
            vec![],
            "ssh: connect to host barmansrv port 22: Connection refused\n".into(),
            &target(),
        )
        .expect_err("ssh's message wins over the code");
        assert_eq!(remapped.kind, ErrorKind::Ssh);
        assert_eq!(
            remapped.message,
            "ssh to the Barman host \"barman@barmansrv\" failed: ssh: connect to host barmansrv port 22: Connection refused"
        );
    }

    #[test]
    fn real_child_status_and_output_pass_through() {
        let out = rt()
            .block_on(run(
                &sh("printf 'a\\0b'; echo oops >&2; exit 3"),
                Duration::from_secs(10),
                &target(),
            ))
            .expect("ran");
        assert_eq!(out.status, 3);
        assert_eq!(out.stdout, b"a\0b");
        assert_eq!(out.stderr, "oops");
    }

    #[test]
    fn real_exit_127_is_command_not_found() {
        let err = rt()
            .block_on(run(
                &sh("no-such-program-pgreplica"),
                Duration::from_secs(10),
                &target(),
            ))
            .expect_err("not found");
        assert_eq!(err.kind, ErrorKind::Barman);
        err.assert_says("a command was not found", "make sure Barman");
        let detail = err.detail.unwrap_or_default();
        assert!(detail.contains("no-such-program-pgreplica"), "{detail}");
    }

    #[test]
    fn timeout_kills_the_child() {
        let dir = tempfile::tempdir().expect("tempdir");
        let pidfile = dir.path().join("pid");
        let script = format!(
            "echo $$ > {}; exec sleep 30",
            super::super::quote::shell_quote(pidfile.to_str().expect("utf-8"))
        );
        let started = std::time::Instant::now();
        let err = rt()
            .block_on(run(&sh(&script), Duration::from_millis(500), &target()))
            .expect_err("times out");
        assert!(started.elapsed() < Duration::from_secs(10));
        assert_eq!(err.kind, ErrorKind::Ssh);
        assert!(err.retryable);
        assert!(err.message.contains("within 0.5 s"), "{}", err.message);
        let pid: i32 = std::fs::read_to_string(&pidfile)
            .expect("child wrote its pid")
            .trim()
            .parse()
            .expect("pid");
        // kill_on_drop sends SIGKILL when the timed-out future is dropped; the runtime reaps the
        // child, so the pid is gone (or a zombie being reaped): poll kill(pid, 0) until it fails.
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        loop {
            let alive = unsafe { libc::kill(pid, 0) } == 0 && !is_zombie(pid);
            if !alive {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "child {pid} survived the timeout"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    fn is_zombie(pid: i32) -> bool {
        std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .map(|s| {
                s.rsplit(')')
                    .next()
                    .is_some_and(|rest| rest.trim_start().starts_with('Z'))
            })
            .unwrap_or(true)
    }

    #[test]
    fn missing_ssh_binary_is_an_ssh_error() {
        let err = rt()
            .block_on(run(
                &["/nonexistent/ssh".to_string()],
                Duration::from_secs(5),
                &target(),
            ))
            .expect_err("cannot spawn");
        assert_eq!(err.kind, ErrorKind::Ssh);
        err.assert_says(
            "cannot run \"/nonexistent/ssh\" to reach the Barman host \"barman@barmansrv\"",
            "install the OpenSSH client",
        );
        assert!(
            !err.retryable,
            "a missing program does not appear by itself"
        );
    }
}
