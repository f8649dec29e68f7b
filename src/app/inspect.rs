//! `clone status`, `clone list` and `clone forget`: reading the records of a state directory
//! (a damaged one shown as damaged, never hiding the others) and removing one that no process
//! runs, never touching its data directory.

use super::clone_id_from_arg;
use crate::cli::{ForgetArgs, StatusArgs};
use crate::error::{Error, ErrorKind, Result};
use crate::records::describe_phase;
use crate::status::Shown;
use crate::store::StateDir;
use states::{CloneId, Phase};
use std::path::Path;

/// What `clone status` and `clone list` show of clone `id`: its view, or — for a record that
/// cannot be read — the damage, so one damaged record never hides the others.
fn shown(dir: &StateDir, id: &CloneId) -> Result<Shown> {
    match dir.read_status(id) {
        Ok(view) => Ok(Shown::Clone(view)),
        Err(error) if error.kind == ErrorKind::Store => Ok(Shown::Damaged {
            id: id.clone(),
            error,
        }),
        Err(error) => Err(error),
    }
}

pub(super) fn status(state_dir: &Path, args: StatusArgs) -> Result<()> {
    let dir = StateDir::open(state_dir)?;
    let ids = match &args.clone {
        Some(text) => vec![clone_id_from_arg(text)?],
        None => dir.clone_ids()?,
    };
    let mut shown_clones = Vec::new();
    for id in &ids {
        if args.clone.is_some() && !dir.clone_ids()?.contains(id) {
            return Err(
                Error::new(ErrorKind::CloneState, format!("there is no clone {id}")).hint(format!(
                    "\"{}\" lists the clones",
                    crate::paste::pgreplica(&["clone", "list"])
                )),
            );
        }
        shown_clones.push(shown(&dir, id)?);
    }
    let mut out = std::io::stdout().lock();
    let written = if args.json {
        crate::status_json::write(&shown_clones, &mut out)
    } else {
        crate::status::write_text(&shown_clones, state_dir, &mut out)
    };
    written.map_err(Error::output)?;
    // One clone asked for by name and damaged: the output shows it, the exit code says it.
    match (args.clone.is_some(), shown_clones.pop()) {
        (true, Some(Shown::Damaged { error, .. })) => Err(error),
        _ => Ok(()),
    }
}

pub(super) fn list(state_dir: &Path) -> Result<()> {
    let dir = StateDir::open(state_dir)?;
    let mut shown_clones = Vec::new();
    for id in dir.clone_ids()? {
        shown_clones.push(shown(&dir, &id)?);
    }
    crate::status::write_list(&shown_clones, state_dir, &mut std::io::stdout().lock())
        .map_err(Error::output)
}

/// `clone forget`: removes a clone's record from the state directory (refusing a clone that a
/// process runs); never touches the data directory.
pub(super) fn forget(state_dir: &Path, args: ForgetArgs) -> Result<()> {
    let id = clone_id_from_arg(&args.clone)?;
    let dir = StateDir::open(state_dir)?;
    if !dir.clone_ids()?.contains(&id) {
        return Err(Error::new(
            ErrorKind::CloneState,
            format!("there is no clone {id} in {}", state_dir.display()),
        )
        .hint(format!(
            "\"{}\" lists the clones of this state directory",
            crate::paste::pgreplica(&["clone", "list"])
        )));
    }
    // Read first (a running clone is refused by the lock below either way), for the notice.
    let record = match dir.read_status(&id) {
        Ok(view) if view.running => {
            return Err(crate::records::running(
                &id,
                view.pid,
                "wait for it to finish, or stop it (Ctrl-C or SIGTERM), then forget it",
            ));
        }
        Ok(view) => Some(view.record),
        Err(_) => None,
    };
    dir.discard_clone(&id)?;
    match &record {
        Some(record) => crate::notice!(
            "forgot clone {id} of \"{}\" (at {}); the data directory is untouched",
            record.request().data_dir,
            describe_phase(record)
        ),
        None => crate::notice!("forgot the unreadable clone {id}; no data directory was touched"),
    }
    // A slot the forgotten clone created keeps holding WAL on its upstream.
    let slot = record
        .as_ref()
        .filter(|r| r.phase() != Phase::Done)
        .filter(|r| r.abandoned_slot_upstream().is_some())
        .and_then(|r| crate::slots::slot_name(r.request()).ok());
    if let Some(name) = slot {
        crate::warning!(
            "replication slot \"{name}\" of the forgotten clone may still hold WAL on its upstream node"
        );
        crate::log::hint(&format!(
            "drop it there unless a standby uses it: SELECT pg_drop_replication_slot('{name}')"
        ));
    }
    Ok(())
}
