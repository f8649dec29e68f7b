//! repmgr's `event_notification_command`, run as repmgr runs it for `standby_clone`: once at
//! the end of each run of a clone — success or failure —, through `/bin/sh -c`, with repmgr's
//! placeholders filled in, unless `event_notifications` lists events without `standby_clone`.
//!
//! Shops hook alerting and inventory into this command, so its contract is repmgr's: `%n` node
//! id, `%e` event (`standby_clone`), `%s` 1 or 0, `%t` timestamp, `%d` details, `%%` a percent
//! sign; `%p`, `%c` and `%a` (a primary's id, conninfo and name) repmgr leaves empty for this
//! event and so does pgreplica. Unlike repmgr, the values are made safe for the shell: the
//! characters that would end a quoted word or start an expansion (`'"\`$\`) are left out of
//! them, since `%d` carries error text.

use crate::config::Config;
use states::{CloneRequest, Mode};
use std::os::fd::AsFd;
use std::process::{Command, Stdio};

/// The event pgreplica reports: repmgr's name for a clone.
pub const EVENT: &str = "standby_clone";

/// What repmgr.conf says about event notifications.
#[derive(Clone, Debug, Default)]
pub struct Notifier {
    /// `event_notification_command`, as written.
    command: Option<String>,
    /// `event_notifications`, split at commas; empty for every event.
    events: Vec<String>,
}

/// How a run of a clone ended, for `%s` and `%d`.
pub enum Ending<'a> {
    /// The clone is complete.
    Done,
    /// The run stopped with this error.
    Failed(&'a crate::error::Error),
}

impl Notifier {
    /// The settings of `config`.
    pub fn of(config: &Config) -> Notifier {
        Notifier {
            command: config.event_notification_command.clone(),
            events: config
                .event_notifications
                .iter()
                .flat_map(|list| list.split(','))
                .map(|event| event.trim().to_string())
                .filter(|event| !event.is_empty())
                .collect(),
        }
    }

    /// The command line for this ending of the clone of `request`, when one is to run.
    pub fn command_line(&self, request: &CloneRequest, ending: &Ending<'_>) -> Option<String> {
        let command = self.command.as_deref()?;
        if !self.events.is_empty() && !self.events.iter().any(|e| e == EVENT) {
            return None;
        }
        let success = matches!(ending, Ending::Done);
        Some(fill(
            command,
            &[
                (
                    'n',
                    request.node_id.map(|n| n.to_string()).unwrap_or_default(),
                ),
                ('e', EVENT.to_string()),
                ('s', if success { "1" } else { "0" }.to_string()),
                ('t', event_timestamp()),
                ('d', details(request, ending)),
                ('p', String::new()),
                ('c', String::new()),
                ('a', String::new()),
            ],
        ))
    }

    /// Runs the command for this ending, waiting for it (as repmgr does): its output goes to
    /// stderr (stdout may carry a `--json` result), and a failure is a WARNING — the clone's
    /// outcome does not depend on it.
    pub fn notify(&self, request: &CloneRequest, ending: Ending<'_>) {
        let Some(line) = self.command_line(request, &ending) else {
            return;
        };
        crate::info!("executing notification command for event \"{EVENT}\"");
        crate::debug!("event notification command: {line}");
        let stdout = std::io::stderr()
            .as_fd()
            .try_clone_to_owned()
            .map_or_else(|_| Stdio::null(), Stdio::from);
        let status = Command::new("/bin/sh")
            .args(["-c", &line])
            .stdin(Stdio::null())
            .stdout(stdout)
            .status();
        match status {
            Ok(status) if status.success() => {}
            Ok(status) => crate::log::emit(
                crate::log::Level::Warning,
                &format!("event notification command failed ({status})"),
                None,
                Some("check event_notification_command in repmgr.conf"),
            ),
            Err(e) => crate::log::emit(
                crate::log::Level::Warning,
                &format!("cannot run the event notification command: {e}"),
                None,
                Some("check event_notification_command in repmgr.conf"),
            ),
        }
    }
}

/// `%d`: repmgr's words for a clone ("cloned from host 'node1', port 5432; backup method:
/// pg_basebackup; --force: N"), and for a failure the error that ended the run.
fn details(request: &CloneRequest, ending: &Ending<'_>) -> String {
    let method = match request.mode {
        Mode::BarmanRsync => "barman",
        Mode::BackupApi => "pg-backup-api",
        Mode::BaseBackup => "pg_basebackup",
        Mode::ReplicationConfOnly => "replication configuration only",
    };
    let host = request.source.host.as_deref().unwrap_or("");
    let port = request
        .source
        .port
        .map(|p| p.to_string())
        .unwrap_or_default();
    let force = if request.force { "Y" } else { "N" };
    let cloned = format!(
        "cloned from host '{host}', port {port}; backup method: {method}; --force: {force}"
    );
    match ending {
        Ending::Done => cloned,
        Ending::Failed(error) => format!(
            "{cloned}; failed (exit code {}): {}",
            error.exit_code(),
            error.full_message()
        ),
    }
}

/// `%t`: local time as repmgr writes it when it has no database timestamp
/// (`%Y-%m-%d %H:%M:%S%z`).
fn event_timestamp() -> String {
    crate::log::local_time("%Y-%m-%d %H:%M:%S%z")
}

/// `command` with each `%x` of `values` replaced by its value made shell-safe, `%%` by `%`;
/// any other `%` is kept as written, as repmgr keeps it.
fn fill(command: &str, values: &[(char, String)]) -> String {
    let mut out = String::new();
    let mut chars = command.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        match chars.peek().copied() {
            Some('%') => {
                chars.next();
                out.push('%');
            }
            Some(key) => match values.iter().find(|(k, _)| *k == key) {
                Some((_, value)) => {
                    chars.next();
                    out.extend(value.chars().filter(|c| !"'\"`$\\".contains(*c)));
                }
                None => out.push('%'),
            },
            None => out.push('%'),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_are_filled_as_repmgr_fills_them_and_made_shell_safe() {
        let values = [
            ('n', "2".to_string()),
            ('e', EVENT.to_string()),
            ('d', "it's \"$(rm -rf /)\" `x` \\".to_string()),
            ('p', String::new()),
        ];
        assert_eq!(
            fill("/bin/notify %n %e '%d' [%p] %% %x %", &values),
            "/bin/notify 2 standby_clone 'its (rm -rf /) x ' [] % %x %"
        );
    }
}
