//! The command handlers behind `pgreplica clone start|resume|status`: they find the clone, take
//! its lock, and hand it to the runner. Nothing here copies data or talks to a server.

use crate::cli::{Cli, CloneCommand, Command, ResumeArgs, RetryArgs, StartArgs, StatusArgs};
use crate::config::Config;
use crate::error::{Error, ErrorKind, Result};
use crate::progress::{human_bytes, Progress};
use crate::runner::{self, Signals};
use crate::store::StateDir;
use clap::Parser;
use states::api::{ChoiceRefused, OperatorChoice};
use states::{CloneId, CloneRecord, Mode, Phase, RetryPolicy};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// Parses the command line, runs the command and maps its outcome to an exit code.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    crate::log::set_level(cli.log_level);
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            crate::log::error(&err);
            ExitCode::from(err.exit_code())
        }
    }
}

fn run(cli: Cli) -> Result<()> {
    let command = match cli.command {
        Command::Generate { what } => {
            return crate::cli::generate(what, &mut std::io::stdout().lock())
                .map_err(|e| Error::new(ErrorKind::System, format!("cannot write output: {e}")));
        }
        Command::Clone(command) => command,
    };
    refuse_root()?;
    let state_dir = StateDir::resolve(cli.state_dir.as_deref())?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| Error::new(ErrorKind::System, format!("cannot start the runtime: {e}")))?;
    match command {
        CloneCommand::Start(args) => runtime.block_on(start(&state_dir, args)),
        CloneCommand::Resume(args) => runtime.block_on(resume(&state_dir, args)),
        CloneCommand::Status(args) => status(&state_dir, args),
    }
}

/// PostgreSQL refuses to run as root, and so does pgreplica: a data directory restored by root
/// would belong to root and never start.
fn refuse_root() -> Result<()> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        return Err(
            Error::new(ErrorKind::Config, "pgreplica must not be run as root").hint(
                "run it as the PostgreSQL system user, e.g. \"sudo -u postgres pgreplica …\"",
            ),
        );
    }
    Ok(())
}

/// Loads repmgr.conf (`-f`, else `./repmgr.conf` or `/etc/repmgr.conf` when present, as repmgr
/// looks for it) and logs its warnings.
fn load_config(explicit: Option<&Path>) -> Result<(Config, Option<PathBuf>)> {
    let path = explicit
        .map(Path::to_path_buf)
        .or_else(Config::find_default);
    let Some(path) = path else {
        return Ok((Config::default(), None));
    };
    if explicit.is_none() {
        crate::info!("using configuration file \"{}\"", path.display());
    }
    let (config, warnings) = Config::load(&path)?;
    for warning in &warnings {
        warning.log();
    }
    Ok((config, Some(path)))
}

async fn start(state_dir: &Path, args: StartArgs) -> Result<()> {
    let (config, config_path) = load_config(args.config_file.as_deref())?;
    let request = crate::request::build(&args, &config, config_path.as_deref())?;
    crate::notice!("destination directory \"{}\" provided", request.data_dir);
    if args.dry_run {
        return crate::dry_run::run(&request).await;
    }
    let id = CloneId::for_data_dir(&request.data_dir);
    let dir = StateDir::open(state_dir)?;
    let (mut store, existing) = match dir.open_clone(&id).and_then(|s| Ok((s.load()?, s))) {
        Ok((existing, store)) => (store, existing),
        // A damaged record: --force discards it (discard_clone takes the lock, so a clone that
        // another process runs is still refused).
        Err(e) if args.force && e.kind == ErrorKind::Store => {
            crate::warning!(
                "discarding the unreadable clone record {id}: {}",
                e.full_message()
            );
            dir.discard_clone(&id)?;
            (dir.open_clone(&id)?, None)
        }
        Err(e) => return Err(e),
    };
    if let Some(existing) = existing {
        if existing.phase() != Phase::Done && !args.force {
            return Err(Error::new(
                ErrorKind::CloneState,
                format!(
                    "an unfinished clone of \"{}\" exists (clone {id}, at {})",
                    request.data_dir,
                    describe_phase(&existing)
                ),
            )
            .hint(format!(
                "continue it with \"pgreplica clone resume {id}\", or discard it with \"pgreplica clone start --force\""
            )));
        }
        crate::notice!("discarding the earlier clone record {id}");
        if existing.phase() != Phase::Done {
            drop_abandoned_slot(&existing).await;
        }
        store.discard()?;
        store = dir.open_clone(&id)?;
    }
    let mut record = CloneRecord::new(id, request, runner::now_millis());
    store.save(&record)?;
    crate::info!(
        "clone {} created ({} mode)",
        record.id(),
        record.request().mode.label()
    );
    drive(&store, &mut record, &args.retries).await
}

/// An unfinished clone abandoned with `--force` may have created its replication slot (Transfer
/// creates it before copying): drop it, or it holds WAL on the upstream forever. A failure is
/// a warning with the command to run by hand, never a reason to refuse the new clone.
async fn drop_abandoned_slot(existing: &CloneRecord) {
    let request = existing.request();
    let Some(upstream) = existing.abandoned_slot_upstream() else {
        return;
    };
    let Ok(name) = crate::slots::slot_name(request) else {
        return;
    };
    match crate::slots::drop_abandoned_slot(request, upstream).await {
        Ok(true) => crate::notice!(
            "dropped replication slot \"{name}\" of the discarded clone on the upstream node"
        ),
        Ok(false) => {}
        Err(e) => {
            crate::warning!(
                "cannot drop replication slot \"{name}\" of the discarded clone: {}",
                e.full_message()
            );
            crate::log::hint(&format!(
                "drop it on the upstream node: SELECT pg_drop_replication_slot('{name}')"
            ));
        }
    }
}

async fn resume(state_dir: &Path, args: ResumeArgs) -> Result<()> {
    let id = match (&args.clone, &args.config_file) {
        (Some(text), _) => clone_id_from_arg(text)?,
        (None, explicit) => {
            let (config, _) = load_config(explicit.as_deref())?;
            let data_dir = config.data_directory.ok_or_else(|| {
                Error::new(
                    ErrorKind::Config,
                    "no clone named and no data_directory configured",
                )
                .hint("name the clone (see \"pgreplica clone status\") or pass -f repmgr.conf")
            })?;
            CloneId::for_data_dir(&crate::request::absolute(&data_dir)?.display().to_string())
        }
    };
    let dir = StateDir::open(state_dir)?;
    let no_clone = || {
        Error::new(
            ErrorKind::CloneState,
            format!("there is no clone {id} to resume"),
        )
        .hint("start one with \"pgreplica clone start\"; \"pgreplica clone status\" lists clones")
    };
    if !dir.clone_ids()?.contains(&id) {
        return Err(no_clone());
    }
    let store = dir.open_clone(&id)?;
    let mut record = store.load()?.ok_or_else(no_clone)?;
    if let Some(choice) = args.api_operation {
        record_api_choice(&store, &mut record, choice)?;
    }
    if record.phase() == Phase::Done {
        crate::notice!("clone {id} is already complete");
        return Ok(());
    }
    crate::notice!(
        "resuming clone {id} of \"{}\" at {}",
        record.request().data_dir,
        describe_phase(&record)
    );
    drive(&store, &mut record, &args.retries).await
}

/// `clone resume --api-operation`: the operator's word goes into the record (a machine input)
/// and is checkpointed before anything runs, so that it shows in `clone status` and survives a
/// crash of this run until the Transfer step acts on it.
fn record_api_choice(
    store: &crate::store::CloneStore,
    record: &mut CloneRecord,
    choice: OperatorChoice,
) -> Result<()> {
    let id = record.id().clone();
    let shown = choice.to_string();
    record.api_operator_choice(choice).map_err(|refused| {
        let why = match refused {
            ChoiceRefused::NotApiMode => format!(
                "clone {id} restores in {} mode, not through pg-backup-api",
                record.request().mode.label()
            ),
            ChoiceRefused::TransferDone => format!(
                "clone {id} has finished its pg-backup-api restore: there is no operation left to choose"
            ),
        };
        Error::new(
            ErrorKind::CloneState,
            format!("--api-operation {shown} cannot be used: {why}"),
        )
        .hint(format!("run \"pgreplica clone resume {id}\" without --api-operation"))
    })?;
    store.save(record)?;
    crate::notice!("recorded the operator's choice of pg-backup-api operation: {shown}");
    Ok(())
}

/// A clone id as typed, or a data directory path naming one.
fn clone_id_from_arg(text: &str) -> Result<CloneId> {
    if text.starts_with('/') || text.starts_with('.') {
        let path = crate::request::absolute(Path::new(text))?;
        return Ok(CloneId::for_data_dir(&path.display().to_string()));
    }
    CloneId::parse(text).ok_or_else(|| {
        Error::new(
            ErrorKind::Config,
            format!("\"{text}\" is not a clone id or a data directory"),
        )
        .hint("\"pgreplica clone status\" lists clones")
    })
}

async fn drive(
    store: &crate::store::CloneStore,
    record: &mut CloneRecord,
    retries: &RetryArgs,
) -> Result<()> {
    let progress = Progress::new();
    let policy = RetryPolicy::STEP.with_attempts(retries.retries.saturating_add(1));
    let mut stop = Signals::install()?;
    runner::run(
        store,
        record,
        &crate::steps::Steps,
        &progress,
        policy,
        &mut stop,
    )
    .await?;
    report_done(record);
    Ok(())
}

fn report_done(record: &CloneRecord) {
    let data_dir = &record.request().data_dir;
    if let Some(transfer) = &record.facts().transfer {
        let kept = if transfer.bytes_kept > 0 {
            format!(
                ", and {} of files copied in part kept",
                human_bytes(transfer.bytes_kept)
            )
        } else {
            String::new()
        };
        crate::notice!(
            "copied {} in {} files in {:.1} s ({} files already present from an earlier run{kept})",
            human_bytes(transfer.bytes_sent),
            transfer.files,
            transfer.duration_ms as f64 / 1000.0,
            transfer.files_reused
        );
    }
    match record.request().mode {
        Mode::BarmanRsync => crate::notice!("standby clone (from Barman) complete"),
        Mode::BackupApi => crate::notice!("standby clone (from pg-backup-api) complete"),
        Mode::BaseBackup => crate::notice!("standby clone (using pg_basebackup) complete"),
        Mode::ReplicationConfOnly => {
            crate::notice!("replication configuration written in \"{data_dir}\"");
        }
    }
    crate::notice!("you can now start your PostgreSQL server");
    crate::log::hint(&format!("for example: pg_ctl -D {data_dir} start"));
    crate::log::hint(
        "after starting the server, you need to register this standby with \"repmgr standby register\"",
    );
}

fn describe_phase(record: &CloneRecord) -> String {
    match record.phase() {
        Phase::At(step) => format!("step {step}"),
        Phase::Done => "done".to_string(),
    }
}

fn status(state_dir: &Path, args: StatusArgs) -> Result<()> {
    let dir = StateDir::open(state_dir)?;
    let ids = match &args.clone {
        Some(text) => vec![clone_id_from_arg(text)?],
        None => dir.clone_ids()?,
    };
    let mut views = Vec::new();
    for id in &ids {
        if args.clone.is_some() && !dir.clone_ids()?.contains(id) {
            return Err(
                Error::new(ErrorKind::CloneState, format!("there is no clone {id}"))
                    .hint("\"pgreplica clone status\" lists clones"),
            );
        }
        views.push(dir.read_status(id)?);
    }
    let mut out = std::io::stdout().lock();
    let written = if args.json {
        crate::status::write_json(&views, &mut out)
    } else {
        crate::status::write_text(&views, state_dir, &mut out)
    };
    written.map_err(|e| Error::new(ErrorKind::System, format!("cannot write output: {e}")))
}
