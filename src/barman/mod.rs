//! The Barman client: every command pgreplica runs on the Barman host is built here, from
//! argument vectors, quoted for the remote shell, and run over the system `ssh` (so the
//! operator's `~/.ssh/config` applies) with a bounded timeout.
//!
//! * `client` — [`Barman`], the host, server and options from repmgr.conf, and the catalogue
//!   calls: [`Barman::show_server`], [`Barman::list_backups`], [`Barman::resolve_backup`],
//!   [`Barman::list_files`].
//! * `direct`, `conf` — the catalogue read without Barman's Python: one script prints
//!   Barman's configuration and every backup.info; `conf` computes the server's directories as
//!   Barman does, `direct` pins a selector as `show-backup` would, or says why it cannot be
//!   trusted (then Barman is asked).
//! * `probe` — what is on the host: [`Barman::version`], [`Barman::check_reachable`], and what
//!   a backup's directory holds.
//! * `restorability` — whether a plain rsync can restore a backup, and its facts
//!   ([`BackupFacts`](states::BackupFacts)); where its trees lie ([`data_dir`],
//!   [`tablespace_dir`]).
//! * [`decrypt`] — the command that decrypts one file of an encrypted backup there and streams
//!   the clear bytes here (the key stays on the Barman host).
//! * [`stream`] — the commands of the streaming copy engine: a `tar` of listed files, the tail
//!   of one file from an offset.
//! * `exec` — running one command there, with a timeout, and classifying transport failures
//!   ([`ssh_failure`], for rsync's ssh too).
//! * [`ssh`] — the time limits every ssh gets unless `ssh_options` sets them, and the commands
//!   `ssh_options` make ssh run ([`Barman::local_commands`]).
//! * [`mux`] — one multiplexed ssh connection per run (ControlMaster), closed at its end.
//! * [`quote`] — POSIX shell and rsync `-e` quoting.
//! * [`catalogue`], [`info`], [`files`] — readers of Barman's outputs, backup.info and the
//!   `find` listing, tested on real outputs of Barman 3.4.0 and 3.19.1.
//!
//! Must not: copy files (that is `transfer`), touch the local data directory, or paste any
//! value into a shell string unquoted. Works with Debian's Barman 3.4.0 and PyPI's 3.19.x: both
//! answer `-f json` for `show-server`, `show-backup` and `list-backups`.

pub mod catalogue;
mod client;
mod conf;
pub mod decrypt;
mod direct;
mod exec;
pub mod files;
pub mod info;
pub mod mux;
mod probe;
pub mod quote;
mod restorability;
pub mod ssh;
pub mod stream;

pub use catalogue::{BackupSummary, ServerDirs, ShowBackup};
pub use client::{Barman, Transport, DEFAULT_TIMEOUT};
pub use exec::{ssh_failure, RemoteOutput};
pub use restorability::{data_dir, tablespace_dir};

/// The tablespace of the captured fixtures (tests/fixtures/barman/*), shared by the parsers'
/// tests.
#[cfg(test)]
fn fixture_tbs1() -> states::Tablespace {
    states::Tablespace {
        name: "tbs1".into(),
        oid: 16386,
        location: "/tmp/bmcap/tbs1".into(),
    }
}

/// A client whose options all need quoting, shared by the client's and the refusals' tests.
#[cfg(test)]
fn fixture_client() -> Barman {
    Barman::new(
        "barman@barmansrv",
        "pg",
        Some("/etc/barman it's.conf".into()),
        vec![
            "-p".into(),
            "2222".into(),
            "-i".into(),
            "/keys/my key".into(),
        ],
    )
}
