//! The kill-anywhere campaign's core, shared by `cargo xtask chaos` and `tests/chaos.rs`: rounds
//! that clone while killing real processes — pgreplica's whole process group with SIGKILL,
//! pgreplica alone with SIGTERM, only its rsyncs, or the pg-backup-api server — inside every
//! step and mid-file, resuming after each, then checking the result. One campaign runs one
//! copying mode ([`ChaosMode`]):
//! * Barman (rsync) and pg-backup-api: every round restores one pinned backup, and its data
//!   directory must equal an uninterrupted reference clone of it, file for file; in API mode the
//!   server must also hold exactly one recovery operation for the round's directory.
//! * pg_basebackup: each run of pg_basebackup is a new backup, so there is no reference; the
//!   round's copy must pass `pg_verifybackup`, hold nothing its `backup_manifest` does not list,
//!   and record every restart of its Transfer (optionally: start and stream as a standby).
//!
//! It must not work around pgreplica: a round that does not end Done, identical and clean is a
//! failure, reported with what happened; the round's directory is kept for a post-mortem.
//! Every wait is bounded (a round has a deadline; kills and resumes are counted). Randomness
//! comes from the seed and the round number only, so a round can be replayed on its own.
//!
//! # Layout
//! - `options` — [`ChaosMode`] (pgreplica's mode it kills, hence its steps, and its kill actions)
//!   and [`ChaosOptions`].
//! - `campaign` — [`Campaign`]: preparing it (pinned backup, API server, reference clone) and
//!   running pgreplica for it.
//! - `round` — [`Campaign::run_round`]: start, kill, resume until Done, check.
//! - `kill` — aiming and delivering kills: where the clone is, the next target, [`Action`].
//! - `faults` — the fault actions: the relays and TLS they need, which apply where, and
//!   inflicting each for an outage.
//! - `rng` — the seeded generator every random choice of a round is drawn from.
//! - `ledger` — what a round's stops promise the final record will show.
//! - `checks` — the end-of-round checks per mode, [`verify_backup`], [`files_not_in_manifest`].
//! - `report` — [`Kill`], [`RoundReport`] and the campaign's [`summary`].

mod campaign;
mod checks;
mod faults;
mod kill;
mod ledger;
mod options;
mod report;
mod rng;
mod round;

pub use campaign::Campaign;
pub use checks::{
    files_not_in_manifest, rewritten_by_barman_recover, verify_backup, PROTOCOL_OVERHEAD,
    PROTOCOL_OVERHEAD_PER_FILE,
};
pub use kill::Action;
pub use options::{ChaosMode, ChaosOptions};
pub use report::{summary, Kill, RoundReport};
