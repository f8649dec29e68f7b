//! Errors and their exit codes: the one place where a failure becomes a number.
//!
//! Exit codes follow repmgr's `errcode.h` where repmgr has one, so scripts written for
//! `repmgr standby clone` keep working; pgreplica adds codes 40–42 for what repmgr cannot do.
//! docs/exit-codes.md lists them all; a test keeps the two in sync.
//!
//! Decision: one operator-facing error type for the whole binary, not one per layer. Every
//! failure ends as repmgr-shaped lines (ERROR, DETAIL, HINT) and an exit code, and a step's
//! failure is recorded on the clone as exactly those; a type per layer would only be converted
//! into this one at each boundary. What a layer knows goes into the [`ErrorKind`] (the exit
//! code), the message, the HINT and, for the library error underneath (an I/O error, reqwest's
//! transport error), the cause chain ([`Error::caused_by`]), which is rendered after the
//! message instead of being flattened into strings where the error is made.

use std::fmt;
use std::sync::Arc;

/// What kind of thing went wrong; decides the exit code.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorKind {
    /// repmgr.conf or the command line is wrong (1).
    Config,
    /// rsync failed (2).
    Rsync,
    /// A local command (pg_verifybackup, pg_ctl …) failed (5).
    LocalCommand,
    /// Cannot connect to the source or upstream node (6).
    DbConnection,
    /// A query on the source or upstream node failed (7).
    DbQuery,
    /// ssh to the Barman host failed (12).
    Ssh,
    /// The operating system refused something: permissions, disk, a directory in use (13).
    System,
    /// The copy is wrong or pg_basebackup failed (14).
    BaseBackup,
    /// A bug in pgreplica (15).
    Internal,
    /// Barman said no: no such backup, not restorable (19).
    Barman,
    /// pg-backup-api failed or stalled (28).
    BackupApi,
    /// Stopped by SIGINT/SIGTERM at a safe point; `clone resume` continues (40).
    Interrupted,
    /// The state store is unreadable, from a newer pgreplica, or the clone is locked (41).
    Store,
    /// The clone's state forbids the command: an unfinished clone exists, or none does (42).
    CloneState,
}

impl ErrorKind {
    /// Every kind, for docs and tests.
    pub const ALL: [ErrorKind; 14] = [
        ErrorKind::Config,
        ErrorKind::Rsync,
        ErrorKind::LocalCommand,
        ErrorKind::DbConnection,
        ErrorKind::DbQuery,
        ErrorKind::Ssh,
        ErrorKind::System,
        ErrorKind::BaseBackup,
        ErrorKind::Internal,
        ErrorKind::Barman,
        ErrorKind::BackupApi,
        ErrorKind::Interrupted,
        ErrorKind::Store,
        ErrorKind::CloneState,
    ];

    /// The process exit code for this kind.
    pub fn exit_code(self) -> u8 {
        match self {
            ErrorKind::Config => 1,
            ErrorKind::Rsync => 2,
            ErrorKind::LocalCommand => 5,
            ErrorKind::DbConnection => 6,
            ErrorKind::DbQuery => 7,
            ErrorKind::Ssh => 12,
            ErrorKind::System => 13,
            ErrorKind::BaseBackup => 14,
            ErrorKind::Internal => 15,
            ErrorKind::Barman => 19,
            ErrorKind::BackupApi => 28,
            ErrorKind::Interrupted => 40,
            ErrorKind::Store => 41,
            ErrorKind::CloneState => 42,
        }
    }

    /// What the exit code says, one line, for the man pages (docs/exit-codes.md says more).
    pub fn meaning(self) -> &'static str {
        match self {
            ErrorKind::Config => "repmgr.conf or the command line is wrong",
            ErrorKind::Rsync => "rsync failed",
            ErrorKind::LocalCommand => "a local command failed",
            ErrorKind::DbConnection => "cannot connect to the source or upstream node",
            ErrorKind::DbQuery => "a query on the source or upstream node failed",
            ErrorKind::Ssh => "ssh to the Barman host failed",
            ErrorKind::System => {
                "the operating system refused: permissions, disk space, a directory in use"
            }
            ErrorKind::BaseBackup => "pg_basebackup failed or the copy does not match the backup",
            ErrorKind::Internal => "a bug in pgreplica",
            ErrorKind::Barman => "Barman has no such backup, or it cannot be restored",
            ErrorKind::BackupApi => "pg-backup-api failed or stalled",
            ErrorKind::Interrupted => {
                "stopped by SIGINT/SIGTERM at a safe point: clone resume continues"
            }
            ErrorKind::Store => "the state store is unreadable or locked",
            ErrorKind::CloneState => "the clone's state forbids the command",
        }
    }

    /// The kind for an exit code recorded in the store.
    pub fn from_exit_code(code: u8) -> Option<ErrorKind> {
        ErrorKind::ALL.into_iter().find(|k| k.exit_code() == code)
    }
}

/// A failure on its way to the operator: one line, optional detail and hint, a kind.
#[derive(Debug, Clone)]
pub struct Error {
    /// Decides the exit code.
    pub kind: ErrorKind,
    /// One line: what is wrong and where.
    pub message: String,
    /// Supporting facts (command output, the offending value).
    pub detail: Option<String>,
    /// What the operator can do about it.
    pub hint: Option<String>,
    /// Whether retrying the same step unchanged may succeed (network, killed child).
    pub retryable: bool,
    /// The library error underneath, if any; its chain is shown after the message.
    pub cause: Option<Arc<dyn std::error::Error + Send + Sync>>,
}

impl Error {
    /// A fatal error of `kind`.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Error {
        Error {
            kind,
            message: message.into(),
            detail: None,
            hint: None,
            retryable: false,
            cause: None,
        }
    }

    /// A bug in pgreplica (exit 15): `message` says what was found, the HINT asks for a report.
    pub fn bug(message: impl Into<String>) -> Error {
        Error::new(ErrorKind::Internal, message).hint(
            "this is a bug in pgreplica: please report it with this output and that of \"pgreplica clone status --json\"",
        )
    }

    /// Writing pgreplica's own output (stdout) failed: a closed pipe or a full disk.
    pub fn output(cause: std::io::Error) -> Error {
        Error::new(ErrorKind::System, format!("cannot write output: {cause}"))
            .hint("stdout was closed or its file system is full: write it to a file with room, or read it whole")
    }

    /// Records the library error underneath; [`Error::full_message`] renders its chain.
    pub fn caused_by(mut self, cause: impl std::error::Error + Send + Sync + 'static) -> Error {
        self.cause = Some(Arc::new(cause));
        self
    }

    /// The message followed by every cause in the chain (`message: cause: inner cause`), as the
    /// ERROR line and the clone record show it. Libraries often repeat their source in their own
    /// text (reqwest does not; io errors have none): a cause already contained in the text so far
    /// is not repeated.
    pub fn full_message(&self) -> String {
        let mut text = self.message.clone();
        let mut next: Option<&(dyn std::error::Error + 'static)> = match &self.cause {
            Some(cause) => Some(cause.as_ref()),
            None => None,
        };
        while let Some(cause) = next {
            let part = cause.to_string();
            if !text.contains(&part) {
                text.push_str(": ");
                text.push_str(&part);
            }
            next = cause.source();
        }
        text
    }

    /// Adds a DETAIL line.
    pub fn detail(mut self, detail: impl Into<String>) -> Error {
        self.detail = Some(detail.into());
        self
    }

    /// Adds a HINT line.
    pub fn hint(mut self, hint: impl Into<String>) -> Error {
        self.hint = Some(hint.into());
        self
    }

    /// Marks the error as worth retrying.
    pub fn retryable(mut self) -> Error {
        self.retryable = true;
        self
    }

    /// The process exit code.
    pub fn exit_code(&self) -> u8 {
        self.kind.exit_code()
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.cause
            .as_deref()
            .map(|cause| cause as &(dyn std::error::Error + 'static))
    }
}

/// Shorthand for results in pgreplica.
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
impl Error {
    /// Unit-test check of what the operator reads: panics, showing the error, unless its
    /// message contains `message` and its HINT contains `hint`.
    pub(crate) fn assert_says(&self, message: &str, hint: &str) {
        assert!(self.message.contains(message), "message: {self:?}");
        assert!(
            self.hint.as_deref().is_some_and(|h| h.contains(hint)),
            "hint: {self:?}"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_codes_are_distinct_and_round_trip() {
        let mut seen = std::collections::HashSet::new();
        for kind in ErrorKind::ALL {
            assert!(seen.insert(kind.exit_code()), "{kind:?} reuses a code");
            assert_eq!(ErrorKind::from_exit_code(kind.exit_code()), Some(kind));
        }
    }

    #[derive(Debug)]
    struct Layer(&'static str, Option<Box<Layer>>);

    impl fmt::Display for Layer {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str(self.0)
        }
    }

    impl std::error::Error for Layer {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            self.1
                .as_deref()
                .map(|l| l as &(dyn std::error::Error + 'static))
        }
    }

    #[test]
    fn the_cause_chain_follows_the_message_without_repeats() {
        let plain = Error::new(ErrorKind::System, "could not read \"x\"");
        assert_eq!(plain.full_message(), "could not read \"x\"");
        let chained = Error::new(ErrorKind::BackupApi, "cannot reach pg-backup-api at h")
            .caused_by(Layer(
                "error sending request",
                Some(Box::new(Layer(
                    "client error (Connect)",
                    Some(Box::new(Layer("Connection refused (os error 111)", None))),
                ))),
            ));
        assert_eq!(
            chained.full_message(),
            "cannot reach pg-backup-api at h: error sending request: client error (Connect): Connection refused (os error 111)"
        );
        // The chain is reachable as std's source chain too.
        let source = std::error::Error::source(&chained).unwrap();
        assert_eq!(source.to_string(), "error sending request");
        // A library that repeats its source in its text is not printed twice.
        let repeats = Error::new(ErrorKind::System, "read failed")
            .caused_by(Layer("disk: EIO", Some(Box::new(Layer("EIO", None)))));
        assert_eq!(repeats.full_message(), "read failed: disk: EIO");
    }

    #[test]
    fn exit_codes_are_documented() {
        let doc = include_str!("../docs/exit-codes.md");
        for kind in ErrorKind::ALL {
            let row = format!("| {} |", kind.exit_code());
            assert!(
                doc.contains(&row),
                "docs/exit-codes.md lacks a row for {kind:?}"
            );
        }
    }

    /// The cases that raise each code, as the table names them: a new refusal must be found in
    /// its row, so the table says what the program does.
    #[test]
    fn the_exit_code_table_names_each_case() {
        let doc = include_str!("../docs/exit-codes.md");
        let row = |kind: ErrorKind| {
            doc.lines()
                .find(|l| l.starts_with(&format!("| {} |", kind.exit_code())))
                .unwrap_or_else(|| panic!("no row for {kind:?}"))
        };
        let cases: [(ErrorKind, &[&str]); 5] = [
            (
                ErrorKind::Config,
                &[
                    "without node_id",
                    "NUL byte",
                    "restore_command that fails its test",
                    "state directory inside a directory the clone writes",
                    "root",
                ],
            ),
            (
                ErrorKind::System,
                &[
                    "disk space",
                    "before the first byte",
                    "filled up during the copy",
                    "the device is named",
                    "running PostgreSQL in or above a directory to write",
                    "source node's own data directory",
                ],
            ),
            (
                ErrorKind::Store,
                &[
                    "unreadable",
                    "newer pgreplica",
                    "file system is full",
                    "not private",
                    "a directory it writes, is locked by another run",
                ],
            ),
            (
                ErrorKind::CloneState,
                &[
                    "has begun copying",
                    "one that never did is replaced",
                    "clone forget",
                ],
            ),
            (ErrorKind::Interrupted, &["clone resume"]),
        ];
        for (kind, phrases) in cases {
            for phrase in phrases {
                assert!(
                    row(kind).contains(phrase),
                    "the row of {kind:?} does not say \"{phrase}\": {}",
                    row(kind)
                );
            }
        }
        assert!(doc.contains("`clone ensure` also when the clone is done"));
    }
}
