//! A loopback lab for pgreplica: a PostgreSQL 15 or 18 primary, Barman (Debian's 3.4.0 or
//! PyPI's 3.19.x) with a first backup, backups of every other kind on demand (tar with each
//! compression, incremental chains, encrypted), and a private sshd on 127.0.0.1 — what
//! pgreplica's integration tests, demo, benchmark and chaos campaign run against.
//!
//! It must not write into any home directory or global configuration (no ~/.ssh/config, no
//! /etc/barman.conf): a lab lives in its own directory under /tmp and clients reach it through
//! explicit options ([`Lab::ssh_options`], [`Lab::barman_config`], ports). The only changes
//! outside it are [`install`] (packages, the PyPI venv), `/run/sshd`, and unlocking the password
//! field of `postgres` and `barman` (a sshd without PAM refuses locked users even for keys).
//!
//! # Layout
//! - `lab` — [`Lab`], [`LabOptions`]: using a lab; `lab::startup` stands it up, `lab::commands`
//!   says how clients reach it (ssh options, repmgr.conf, pgreplica's command lines),
//!   `lab::fixtures` takes backups of every kind, `lab::restore` restores them with Barman and
//!   starts standbys from them, `lab::teardown` stops it.
//! - [`kinds`] — the kinds of backup ([`BackupKind`], [`TarCompression`]), their Barman
//!   servers, [`BackupFixture`], [`Restored`], [`BackupInfo`].
//! - [`api_server`] — the pg-backup-api test server on a lab, repmgr.conf for API mode.
//! - [`clone_check`] — watching a clone from outside: status, kills, digests.
//! - [`status`] — the machine's steps, phases and outcomes as `clone status --json` spells them
//!   (docs/json.md), read back into the `states` types; its progress, facts and API parts.
//! - [`chaos`] — the kill-anywhere campaign's core (`cargo xtask chaos`, `tests/chaos.rs`).
//! - `postgres` — [`PgMajor`] (15 or 18), initdb, pg_ctl, psql, [`Standby`].
//! - `barman` — [`BarmanFlavor`], the lab's barman.conf (one section per server), running
//!   barman as `barman`.
//! - `gpg` — the throwaway key of the encrypted backups, in the lab's own GNUPGHOME.
//! - `sshd` — the private sshd and the ssh keys.
//! - `system` — [`prerequisites`], [`bench_prerequisites`], [`install`] and
//!   [`install_report`]: programs, users, packages, the PyPI Barman and PostgreSQL 18.
//! - `exec` — running programs with a deadline and captured output, as another user.
//! - [`relay`] — [`Relay`](relay::Relay): a TCP relay on 127.0.0.1 that can go silent or
//!   refuse, for the network and host faults.
//! - `ports` — [`free_port`].
//! - `signals` — [`wait_for_interrupt`] for `cargo xtask lab`.
//! - [`tls`] — [`Pki`](tls::Pki): a throwaway CA (`openssl ca`) for the TLS tests.
//! - `error` — [`LabError`].
//! - `test_support` — what the unit tests share (configuration texts checked line by line).
//!
//! # Directory of a lab
//! ```text
//! /tmp/pgreplica-lab-<pid>-<n>-<x>/   0755 root
//!   pg/primary/          the primary's PGDATA          (postgres)
//!   tablespaces/tbs1/    the optional tablespace       (postgres)
//!   data/                new_dir() paths               (postgres)
//!   state/               PGREPLICA_STATE_DIR           (postgres)
//!   run/                 unix sockets                  (postgres)
//!   bin/                 install_binary() copies
//!   logs/                primary.log, standby-PORT.log (sticky, world-writable)
//!   barman/              barman.conf, barman.log, home/ (the catalogue: home/pg/, and
//!                        home/tar/, home/incremental/, home/encrypted/ for fixtures),
//!                        staging/ (restores), gnupg/ + passphrase (encrypted)  (barman)
//!   ssh/                 sshd_config, host key, sshd.log, keys/{postgres,barman}, authorized_keys/
//! ```

pub mod api_server;
mod barman;
pub mod chaos;
pub mod clone_check;
mod error;
mod exec;
mod gpg;
pub mod kinds;
mod lab;
mod ports;
mod postgres;
pub mod relay;
mod signals;
mod sshd;
pub mod status;
mod system;
#[cfg(test)]
mod test_support;
pub mod tls;

pub use barman::{BarmanFlavor, SERVER as BARMAN_SERVER, SLOT as BARMAN_SLOT};
pub use error::LabError;
pub use exec::{describe, is_root, shell_quote, tail, wait_for};
pub use kinds::{BackupFixture, BackupInfo, BackupKind, Restored, TarCompression};
pub use lab::{Lab, LabOptions, Tablespace, KEEP_ENV, NOISE_MB, NOISE_TABLE, WRITES_TABLE};
pub use ports::free_port;
pub use postgres::{PgMajor, Standby};
pub use signals::wait_for_interrupt;
pub use sshd::MAX_STARTUPS as SSHD_MAX_STARTUPS;
pub use system::{
    bench_prerequisites, install, install_report, prerequisites, Installed, BARMAN_VENV, GPG,
    OPENSSL, PG18_BIN, PG18_HOME, PG_BIN, REPMGR, SSH, STUNNEL,
};
