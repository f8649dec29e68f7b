//! The command handlers behind `pgreplica clone start|ensure|resume|status|list|forget`: they
//! find the clone, take its locks (the record's, and the directories' it writes), act on what
//! the machine decides about a record they find, and hand the clone to the runner. Nothing here
//! copies data or talks to a server.

mod inspect;
pub mod result;

use crate::cli::{Cli, CloneCommand, Command, ResumeArgs, RetryArgs, StartArgs};
use crate::config::Config;
use crate::dirlock::{DirLocks, Holder};
use crate::error::{Error, ErrorKind, Result};
use crate::event::{Ending, Notifier};
use crate::progress::{human_bytes, Progress};
use crate::records::describe_phase;
use crate::runner::{self, Executor, Signals, StepContext};
use crate::store::{CloneStore, Found, StateDir};
use clap::Parser;
use result::Summary;
use states::api::{ChoiceRefused, OperatorChoice};
use states::{
    CloneId, CloneRecord, CloneRequest, Existing, Mode, Phase, Refusal, Replaced, ResumeCheck,
    RetryPolicy, StartDecision, StepResult, Task,
};
use std::cell::RefCell;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// Parses the command line, runs the command and maps its outcome to an exit code.
pub fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(err) => return usage_error(&err),
    };
    crate::log::configure(cli.log_level, cli.quiet, cli.verbose, cli.terse);
    crate::progress::set_line_interval(cli.progress_interval);
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            crate::log::error(&err);
            ExitCode::from(err.exit_code())
        }
    }
}

/// What clap refused, the way every other error is said: one `ERROR:` line and a HINT, exit 1
/// (docs/exit-codes.md: a wrong command line is 1, as in repmgr; clap's own 2 is rsync's).
/// Help and version requested are printed as clap prints them, exit 0.
fn usage_error(err: &clap::Error) -> ExitCode {
    use clap::error::ErrorKind as Clap;
    if matches!(err.kind(), Clap::DisplayHelp | Clap::DisplayVersion) {
        let _ = err.print();
        return ExitCode::SUCCESS;
    }
    crate::log::error(&crate::cli::usage_error(err));
    ExitCode::from(ErrorKind::Config.exit_code())
}

fn run(cli: Cli) -> Result<()> {
    if cli.version_number {
        println!("{}", env!("CARGO_PKG_VERSION"));
        return Ok(());
    }
    let command = match cli.command {
        Some(Command::Generate { what, dir }) => {
            if dir.is_some() && !matches!(what, crate::cli::Generated::Man) {
                return Err(Error::new(
                    ErrorKind::Config,
                    "only the man pages are written into a directory",
                )
                .hint("write a completion script to stdout: pgreplica generate bash > FILE"));
            }
            return crate::cli::generate(what, dir.as_deref(), &mut std::io::stdout().lock())
                .map_err(Error::output);
        }
        Some(Command::Clone(command)) => command,
        None => {
            return Err(
                Error::new(ErrorKind::Config, "no command given").hint(format!(
                    "run \"{}\" for the commands",
                    crate::paste::pgreplica(&["--help"])
                )),
            )
        }
    };
    // The commands with a `--json` result write it however they end.
    let json = match &command {
        CloneCommand::Start(args) if args.json => Some("start"),
        CloneCommand::Ensure(args) if args.json => Some("ensure"),
        CloneCommand::Resume(args) if args.json => Some("resume"),
        _ => None,
    };
    let mut summary = Summary::default();
    let result = run_clone(cli.state_dir.as_deref(), command, &mut summary);
    if let Some(name) = json {
        result::write(name, &summary, &result, &mut std::io::stdout().lock())
            .map_err(Error::output)?;
    }
    result
}

/// Runs a `clone` command, noting on `summary` what its `--json` result says.
fn run_clone(state_dir: Option<&Path>, command: CloneCommand, summary: &mut Summary) -> Result<()> {
    refuse_root()?;
    let state_dir = crate::request::absolute(&StateDir::resolve(state_dir)?)?;
    let default_state_dir = StateDir::resolve(None).ok();
    let argv0 = std::env::args_os()
        .next()
        .unwrap_or_else(|| "pgreplica".into());
    crate::paste::set_invocation(&argv0, &state_dir, default_state_dir.as_deref());
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| {
            Error::new(ErrorKind::System, format!("cannot start the runtime: {e}"))
                .hint("the system refused threads to pgreplica: check the user's process limit (ulimit -u)")
        })?;
    match command {
        CloneCommand::Start(args) => runtime.block_on(start(&state_dir, args, summary)),
        CloneCommand::Ensure(args) => runtime.block_on(ensure(&state_dir, args, summary)),
        CloneCommand::Resume(args) => runtime.block_on(resume(&state_dir, args, summary)),
        CloneCommand::Status(args) => inspect::status(&state_dir, args),
        CloneCommand::List => inspect::list(&state_dir),
        CloneCommand::Forget(args) => inspect::forget(&state_dir, args),
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
/// looks for it), applies its `log_level` and `log_file`, and logs its warnings. Which file
/// (or none) was chosen, and why, is a NOTICE: a forgotten `-f` must not go unseen.
fn load_config(explicit: Option<&Path>) -> Result<(Config, Option<PathBuf>)> {
    let path = explicit
        .map(Path::to_path_buf)
        .or_else(Config::find_default);
    let Some(path) = path else {
        crate::notice!(
            "no configuration file: -f was not given and neither ./repmgr.conf nor /etc/repmgr.conf exists"
        );
        return Ok((Config::default(), None));
    };
    if explicit.is_none() {
        crate::notice!(
            "using configuration file \"{}\" (found without -f, as repmgr looks for it)",
            path.display()
        );
    }
    let (config, warnings) = Config::load(&path)?;
    crate::log::configure_from_file(config.log_level, config.log_file.as_deref());
    for warning in &warnings {
        warning.log();
    }
    Ok((config, Some(path)))
}

/// A clone about to run: its record, its store and the locks on what it writes.
struct Session {
    store: CloneStore,
    record: CloneRecord,
    locks: DirLocks,
}

async fn start(state_dir: &Path, args: StartArgs, summary: &mut Summary) -> Result<()> {
    let (request, notifier) = request_of(&args)?;
    summary.request(&request);
    if args.dry_run {
        return crate::dry_run::run(&request, Some(state_dir), args.json.then_some(summary)).await;
    }
    let (dir, locks, found) = open_for(state_dir, &request)?;
    let session = new_clone(&dir, found, request, locks, &notifier).await?;
    drive(session, &args.retries, None, &notifier, summary).await
}

/// The request of `clone start` or `clone ensure` (repmgr.conf and the flags combined), and
/// what repmgr.conf says about event notifications.
fn request_of(args: &StartArgs) -> Result<(CloneRequest, Notifier)> {
    if let Some((option, why, hint)) = args.repmgr.refusal() {
        return Err(Error::new(
            ErrorKind::Config,
            format!("repmgr's {option} is not supported by pgreplica: {why}"),
        )
        .hint(hint));
    }
    let (config, config_path) = load_config(args.config_file.as_deref())?;
    let request = crate::request::build(args, &config, config_path.as_deref())?;
    crate::notice!(
        "cloning in {} mode: {}",
        request.mode.label(),
        crate::request::mode_reason(args, &config, request.mode)
    );
    if args.repmgr.verify_backup {
        crate::info!(
            "--verify-backup: the copy is verified against the backup's backup_manifest, as always"
        );
    }
    crate::notice!("destination directory \"{}\" provided", request.data_dir);
    Ok((request, Notifier::of(&config)))
}

/// `clone ensure`: the one command an automation runs again and again. It starts the clone of
/// the data directory when there is none (or the last one never copied anything), resumes the
/// unfinished one, and does nothing (exit 0) when the clone is done and the directory still
/// holds it.
async fn ensure(state_dir: &Path, args: StartArgs, summary: &mut Summary) -> Result<()> {
    let (request, notifier) = request_of(&args)?;
    summary.request(&request);
    if args.dry_run {
        return ensure_dry_run(state_dir, &request, args.json, summary).await;
    }
    let (dir, locks, found) = open_for(state_dir, &request)?;
    let found = match found {
        Found::Record(store, record) if record.phase() == Phase::Done => {
            if directory_holds(&record).await? {
                summary.record(&record);
                summary.outcome("nothing_to_do");
                crate::notice!(
                    "clone {} of \"{}\" is complete and the directory still holds it: nothing to do",
                    record.id(),
                    request.data_dir
                );
                return Ok(());
            }
            crate::notice!(
                "\"{}\" no longer holds the finished clone {}: cloning it again",
                request.data_dir,
                record.id()
            );
            Found::Record(store, record)
        }
        Found::Record(store, record) if record.began_writing() => {
            crate::notice!(
                "resuming the unfinished clone {} of \"{}\" at {}",
                record.id(),
                request.data_dir,
                describe_phase(&record)
            );
            let session = resume_session(store, record, locks)?;
            return drive(session, &args.retries, Some(request), &notifier, summary).await;
        }
        other => other,
    };
    let session = new_clone(&dir, found, request, locks, &notifier).await?;
    drive(session, &args.retries, None, &notifier, summary).await
}

/// Locks the directories `request` writes, opens the state directory and finds the record of
/// the data directory — in that order, so a run refused for its locks leaves nothing behind.
fn open_for(state_dir: &Path, request: &CloneRequest) -> Result<(StateDir, DirLocks, Found)> {
    let id = CloneId::for_data_dir(&request.data_dir);
    crate::paste::set_clone(&id);
    // Locked (and the state directory checked apart from them) before the state directory is
    // created: a state directory inside the data directory is refused with nothing written.
    let mut locks = DirLocks::new(Holder {
        pid: std::process::id(),
        state_dir: state_dir.to_path_buf(),
        clone: id.clone(),
    })?;
    locks.lock_record(&CloneRecord::new(
        id.clone(),
        request.clone(),
        runner::now_millis(),
    ))?;
    let dir = StateDir::open(state_dir)?;
    let found = dir.find_clone(&id)?;
    Ok((dir, locks, found))
}

/// `clone ensure --dry-run`: what the real run would do, changing nothing — nothing (the clone
/// is done and the directory holds it), resume the unfinished clone, or start (the dry run of
/// `clone start`).
async fn ensure_dry_run(
    state_dir: &Path,
    request: &CloneRequest,
    json: bool,
    summary: &mut Summary,
) -> Result<()> {
    let id = CloneId::for_data_dir(&request.data_dir);
    let recorded = match StateDir::existing(state_dir)? {
        Some(dir) if dir.clone_ids()?.contains(&id) => dir.read_status(&id).ok(),
        _ => None,
    };
    match recorded.map(|view| view.record) {
        Some(record) if record.phase() == Phase::Done && directory_holds(&record).await? => {
            summary.record(&record);
            summary.outcome("nothing_to_do");
            crate::notice!(
                "dry run: clone {id} is complete and \"{}\" still holds it: nothing to do",
                request.data_dir
            );
            Ok(())
        }
        Some(record) if record.phase() != Phase::Done && record.began_writing() => {
            summary.record(&record);
            summary.outcome("would_resume");
            crate::notice!(
                "dry run: the unfinished clone {id} would be resumed at {}",
                describe_phase(&record)
            );
            Ok(())
        }
        _ => crate::dry_run::run(request, Some(state_dir), json.then_some(summary)).await,
    }
}

/// The new record of `request`, after deciding with the machine what to do with the record
/// `found` for its directory. A replaced record is kept until the new clone has passed its
/// checks (the dry run's, which are the steps' own), so a refused start loses no history and
/// leaves no record of its own; that refusal ends the clone, and `notifier` hears of it.
async fn new_clone(
    dir: &StateDir,
    found: Found,
    request: CloneRequest,
    locks: DirLocks,
    notifier: &Notifier,
) -> Result<Session> {
    let shown = request.clone();
    let created = create_clone(dir, found, request, locks).await;
    if let Err(error) = &created {
        notifier.notify(&shown, Ending::Failed(error));
    }
    created
}

/// [`new_clone`] before its notification.
async fn create_clone(
    dir: &StateDir,
    found: Found,
    request: CloneRequest,
    locks: DirLocks,
) -> Result<Session> {
    let id = CloneId::for_data_dir(&request.data_dir);
    let (store, existing, damage) = match found {
        Found::New(store) => (Some(store), None, None),
        Found::Record(store, record) => (Some(store), Some(record), None),
        Found::Damaged(error) => (None, None, Some(error)),
    };
    let seen = match (&existing, &damage) {
        (Some(record), _) => Existing::Record(record),
        (None, Some(_)) => Existing::Damaged,
        (None, None) => Existing::None,
    };
    let store = match StartDecision::of(seen, request.force) {
        StartDecision::Create => match store {
            Some(store) => store,
            None => dir.open_clone(&id)?,
        },
        StartDecision::Refuse(Refusal::Unfinished) => {
            let record = existing.expect("an unfinished refusal is about a record");
            return Err(crate::records::unfinished(&record));
        }
        StartDecision::Refuse(Refusal::Damaged) => {
            let error = damage.expect("a damaged refusal is about a damaged record");
            return Err(crate::records::damaged(error, &id));
        }
        StartDecision::Replace(reason) => {
            crate::info!("checking the new clone before it replaces the earlier record");
            crate::dry_run::check_silently(&request).await?;
            crate::notice!("{}", crate::records::replacing(existing.as_ref(), reason));
            if let (Replaced::Forced, Some(record)) = (reason, &existing) {
                drop_abandoned_slot(record).await;
            }
            match store {
                Some(store) => store.discard()?,
                None => dir.discard_clone(&id)?,
            }
            dir.open_clone(&id)?
        }
    };
    let record = CloneRecord::new(id, request, runner::now_millis());
    store.save(&record)?;
    crate::info!(
        "clone {} created ({} mode)",
        record.id(),
        record.request().mode.label()
    );
    Ok(Session {
        store,
        record,
        locks,
    })
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

async fn resume(state_dir: &Path, args: ResumeArgs, summary: &mut Summary) -> Result<()> {
    let (id, config) = match (&args.clone, &args.config_file) {
        (Some(text), _) => (clone_id_from_arg(text)?, None),
        (None, explicit) => {
            let (config, path) = load_config(explicit.as_deref())?;
            let data_dir = config.data_directory.clone().ok_or_else(|| {
                Error::new(
                    ErrorKind::Config,
                    "no clone named and no data_directory configured",
                )
                .hint(format!(
                    "name the clone (\"{}\" lists them) or pass -f repmgr.conf",
                    crate::paste::pgreplica(&["clone", "list"])
                ))
            })?;
            let id =
                CloneId::for_data_dir(&crate::request::absolute(&data_dir)?.display().to_string());
            (id, Some((config, path)))
        }
    };
    crate::paste::set_clone(&id);
    let dir = StateDir::open(state_dir)?;
    let no_clone = || {
        Error::new(
            ErrorKind::CloneState,
            format!("there is no clone {id} to resume"),
        )
        .hint(format!(
            "start one with clone start; \"{}\" lists the clones of this state directory",
            crate::paste::pgreplica(&["clone", "list"])
        ))
    };
    if !dir.clone_ids()?.contains(&id) {
        return Err(no_clone());
    }
    let store = dir.open_clone(&id)?;
    let mut record = store.load()?.ok_or_else(no_clone)?;
    if let Some(choice) = args.api_operation {
        record_api_choice(&store, &mut record, choice)?;
    }
    summary.record(&record);
    if record.phase() == Phase::Done {
        summary.outcome("nothing_to_do");
        crate::notice!("clone {id} is already complete");
        return Ok(());
    }
    if args.jobs.is_some() || args.bwlimit.is_some() {
        change_pace(&store, &mut record, args.jobs, args.bwlimit)?;
    }
    // What a start would record today, from the repmgr.conf named (or the one recorded).
    let (current, notifier) = match config {
        Some((config, path)) => (
            Some(crate::request::current(
                record.request(),
                &config,
                path.as_deref(),
            )?),
            Notifier::of(&config),
        ),
        None => current_from_recorded_config(record.request()),
    };
    let mut locks = DirLocks::new(Holder {
        pid: std::process::id(),
        state_dir: state_dir.to_path_buf(),
        clone: id.clone(),
    })?;
    locks.lock_record(&record)?;
    crate::notice!(
        "resuming clone {id} of \"{}\" at {}",
        record.request().data_dir,
        describe_phase(&record)
    );
    let session = resume_session(store, record, locks)?;
    drive(session, &args.retries, current, &notifier, summary).await
}

/// `clone resume --jobs/--bwlimit`: the new values go into the record (the machine records the
/// change in the history) and are checkpointed before anything runs, so every later run keeps
/// them. A crash of the last run is recorded first, so that the history stays in order.
fn change_pace(
    store: &CloneStore,
    record: &mut CloneRecord,
    jobs: Option<u32>,
    bwlimit: Option<u32>,
) -> Result<()> {
    if let Some(step) = record.recover_crash(runner::now_millis()) {
        crate::warning!("an earlier run stopped inside step {step}; running it again");
    }
    if let Some(change) = record.change_pace(runner::now_millis(), jobs, bwlimit) {
        store.save(record)?;
        crate::notice!("clone {} continues with {change} (recorded)", record.id());
    }
    Ok(())
}

/// `clone resume --api-operation`: the operator's word goes into the record (a machine input)
/// and is checkpointed before anything runs, so that it shows in `clone status` and survives a
/// crash of this run until the Transfer step acts on it.
fn record_api_choice(
    store: &CloneStore,
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
        .hint(format!(
            "run \"{}\" without --api-operation",
            crate::paste::pgreplica(&["clone", "resume", id.as_str()])
        ))
    })?;
    store.save(record)?;
    crate::notice!("recorded the operator's choice of pg-backup-api operation: {shown}");
    Ok(())
}

/// The request today's version of the repmgr.conf recorded at start gives, for a resume named
/// by its clone id, and its logging and event settings (applied, returned); `None` (with a
/// note) when the clone was started without one or it is gone.
fn current_from_recorded_config(recorded: &CloneRequest) -> (Option<CloneRequest>, Notifier) {
    let Some(path) = recorded.config_file.as_ref().map(PathBuf::from) else {
        return (None, Notifier::default());
    };
    let loaded = Config::load(&path).and_then(|(config, _)| {
        crate::log::configure_from_file(config.log_level, config.log_file.as_deref());
        let current = crate::request::current(recorded, &config, Some(&path))?;
        Ok((current, Notifier::of(&config)))
    });
    match loaded {
        Ok((current, notifier)) => (Some(current), notifier),
        Err(e) => {
            crate::notice!(
                "cannot compare the clone with \"{}\" as it is now: {}",
                path.display(),
                e.message
            );
            (None, Notifier::default())
        }
    }
}

/// Readies a recorded, unfinished clone to continue: everything PrepareDirs checked is checked
/// again (the machine says what), and a prepared directory deleted or replaced since sends the
/// clone back to PrepareDirs, whose transfer then copies what is missing.
fn resume_session(store: CloneStore, mut record: CloneRecord, locks: DirLocks) -> Result<Session> {
    match record.resume_check() {
        ResumeCheck::Nothing => {}
        ResumeCheck::RestoredDir => crate::preflight::check_restored_not_running(record.request())?,
        ResumeCheck::PreparedDirs(dirs) => {
            if let Some(what) = crate::datadir::recheck_prepared(&dirs)? {
                crate::warning!("{what}");
                crate::notice!(
                    "preparing the directories again: whatever is missing is copied again"
                );
                let now = runner::now_millis();
                if let Some(step) = record.recover_crash(now) {
                    crate::warning!("an earlier run stopped inside step {step}");
                }
                record.dirs_replaced(now, what);
                store.save(&record)?;
            }
        }
    }
    Ok(Session {
        store,
        record,
        locks,
    })
}

/// The steps, with the directory locks renewed before each: a directory PrepareDirs has just
/// created is locked by its inode too before anything is copied into it, and the tablespace
/// targets once the backup names them.
struct LockedSteps {
    locks: RefCell<DirLocks>,
}

impl Executor for LockedSteps {
    async fn execute(&self, task: Task, ctx: &mut StepContext<'_>) -> Result<StepResult> {
        self.locks.borrow_mut().lock_record(ctx.record)?;
        crate::steps::Steps.execute(task, ctx).await
    }
}

/// Runs the clone to its end and tells `notifier` how it ended (complete, or stopped by a
/// failure; an interruption asked for by the operator is no end). `current` is what a start
/// would record today, for a resume: the recorded values that differ from it are named, with
/// the way to take them.
async fn drive(
    session: Session,
    retries: &RetryArgs,
    current: Option<CloneRequest>,
    notifier: &Notifier,
    summary: &mut Summary,
) -> Result<()> {
    let Session {
        store,
        mut record,
        locks,
    } = session;
    let take_hint = current.as_ref().and_then(|current| {
        let differences = record.request().differences(current);
        if differences.is_empty() {
            return None;
        }
        for line in crate::records::difference_lines(&differences) {
            crate::warning!("{line}");
        }
        let hint = crate::records::how_to_take(&record, current);
        crate::log::hint(&hint);
        Some(hint)
    });
    let progress = Progress::new();
    let policy = RetryPolicy::STEP.with_attempts(retries.retries.saturating_add(1));
    let mut stop = Signals::install()?;
    let steps = LockedSteps {
        locks: RefCell::new(locks),
    };
    // One ssh connection to the Barman host for the whole run, closed when it ends.
    let shared_ssh = crate::barman::Barman::for_request(record.request())
        .ok()
        .and_then(|barman| crate::barman::mux::SharedConnection::start(&barman, store.dir()));
    let outcome = runner::run(&store, &mut record, &steps, &progress, policy, &mut stop).await;
    drop(shared_ssh);
    // The next `clone status` of the idle clone then reads sled's snapshot instead of replaying
    // this run's log; a failure here changes nothing the run did.
    if let Err(e) = store.close() {
        crate::warning!("{}", e.message);
    }
    summary.record(&record);
    if let Err(error) = outcome {
        if error.kind != ErrorKind::Interrupted {
            notifier.notify(record.request(), Ending::Failed(&error));
        }
        // The recorded values may be why it failed again: say once more how to take the new.
        return Err(match take_hint {
            Some(hint) => error.hint(hint),
            None => error,
        });
    }
    report_done(&record);
    notifier.notify(record.request(), Ending::Done);
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
    let version = record
        .facts()
        .params
        .as_ref()
        .map_or(0, |p| p.server_version_num);
    let pg_ctl =
        crate::pg_tools::pg_program(record.request().pg_bindir.as_deref(), version, "pg_ctl");
    crate::log::hint(&format!(
        "for example: {}",
        crate::paste::command(&pg_ctl, &["-D", data_dir, "start"])
    ));
    crate::log::hint(
        "after starting the server, you need to register this standby with \"repmgr standby register\"",
    );
}

/// Whether the data directory of a finished clone still holds it: PostgreSQL's major version
/// in `PG_VERSION` and the system identifier in `global/pg_control` are the source's.
async fn directory_holds(record: &CloneRecord) -> Result<bool> {
    let Some(params) = &record.facts().params else {
        return Ok(false);
    };
    crate::preflight::holds_cluster(record.request(), params).await
}

/// A clone id as typed, or a data directory path naming one.
pub(crate) fn clone_id_from_arg(text: &str) -> Result<CloneId> {
    if text.starts_with('/') || text.starts_with('.') {
        let path = crate::request::absolute(Path::new(text))?;
        return Ok(CloneId::for_data_dir(&path.display().to_string()));
    }
    CloneId::parse(text).ok_or_else(|| {
        Error::new(
            ErrorKind::Config,
            format!("\"{text}\" is not a clone id or a data directory"),
        )
        .hint(format!(
            "\"{}\" lists the clones",
            crate::paste::pgreplica(&["clone", "list"])
        ))
    })
}
