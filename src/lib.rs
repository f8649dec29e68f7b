//! pgreplica: clone a PostgreSQL standby from a Barman backup server, resumably.
//!
//! # Layout
//! * [`cli`] — clap definitions (parsing, help, man page, completions).
//! * [`app`] — the command handlers behind `clone start|resume|status`.
//! * [`config`] — repmgr.conf: the parser and the typed settings.
//! * [`store`] — the sled checkpoint store, the per-clone lock, the status snapshot.
//! * [`runner`] — drives a clone record through its steps and checkpoints every transition.
//! * [`steps`] — one module per state of the machine (leaves: nothing imports them).
//! * [`transfer`] — the copy methods: rsync from Barman, pg-backup-api, pg_basebackup.
//! * [`datadir`] — the standby's directories: checks, preparation, the post-copy skeleton.
//! * [`running`] — running clusters in or above a directory, and the source node's own.
//! * [`dirlock`] — the lock on the directories a run writes, and the state directory apart.
//! * [`diskspace`] — free space on the targets' file systems, and a disk that filled up.
//! * [`records`] — what the commands say about the clone records they find.
//! * [`slots`] — the replication slot on the upstream.
//! * [`preflight`] — read-only checks shared by the steps and `--dry-run`.
//! * [`durable`] — atomic, durable file writes.
//! * [`retry`] — the one retry helper of the I/O layer.
//! * [`backup_api`] — the pg-backup-api HTTP client (TLS, bounded retries).
//! * [`barman`] — every command run on the Barman host, built with correct quoting.
//! * [`source`] — the source/upstream node over tokio-postgres.
//! * [`replication_conf`] — primary_conninfo and the files that make a standby.
//! * [`progress`], [`log`] — what the operator sees; [`paste`] — the commands it prints.
//! * [`child_output`] — a program's output cut into lines, and the tail an error's DETAIL keeps.
//! * [`tls_errors`] — rustls's errors found in a library's chain and read for the operator.
//! * [`error`] — errors and the exit codes they map to.
//! * [`event`] — repmgr's `event_notification_command`, run at the end of each clone run.
//!
//! The decisions (which step runs next, what a failure means) live in the `states` crate,
//! which performs no I/O; this crate does the I/O.

pub mod app;
pub mod backup_api;
pub mod barman;
pub mod child_output;
pub mod cli;
pub mod config;
pub mod conninfo;
pub mod datadir;
pub mod dirlock;
pub mod diskspace;
pub mod dry_run;
pub mod durable;
pub mod error;
pub mod event;
pub mod log;
pub mod paste;
pub mod pg_tools;
pub mod preflight;
pub mod progress;
pub mod records;
pub mod replication_conf;
pub mod request;
pub mod retry;
pub mod runner;
pub mod running;
pub mod slots;
pub mod source;
pub mod status;
pub mod status_json;
pub mod steps;
pub mod store;
pub mod tls_errors;
pub mod transfer;
