//! The command line: every flag defined once, with its documentation.
//!
//! The same clap definitions feed parsing, `--help`, the man page and shell completions
//! (`pgreplica generate man|bash|zsh|fish`), so they cannot drift apart. Option names and short
//! flags follow `repmgr standby clone`.

use crate::log::Level;
use clap::{Args, Parser, Subcommand, ValueEnum};
use std::path::PathBuf;

/// Clone a PostgreSQL standby from a Barman backup server, resumably, and configure it to
/// replicate.
///
/// Help is `-?` or `--help` on every command, as in repmgr: `-h` is the source node's host.
#[derive(Debug, Parser)]
#[command(
    name = "pgreplica",
    version,
    propagate_version = true,
    disable_help_flag = true
)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Option<Command>,

    /// Print help (-? as in repmgr; -h is the source node's host).
    #[arg(short = '?', long, global = true, action = clap::ArgAction::Help)]
    help: Option<bool>,

    /// Print the version number alone (e.g. 0.1.0), as repmgr's --version-number does.
    #[arg(long, exclusive = true)]
    pub version_number: bool,

    /// Where clone records are kept (never inside a data directory).
    /// Default: $XDG_STATE_HOME/pgreplica or ~/.local/state/pgreplica.
    #[arg(long, global = true, env = "PGREPLICA_STATE_DIR", value_name = "DIR")]
    pub state_dir: Option<PathBuf>,

    /// Least severe log level printed (default: log_level from repmgr.conf, else INFO); wins
    /// over -q, -v and log_level.
    #[arg(short = 'L', long, global = true, value_enum, ignore_case = true)]
    pub log_level: Option<Level>,

    /// Print only errors (and a dry run's report), as repmgr's -q.
    #[arg(short = 'q', long, global = true, conflicts_with = "verbose")]
    pub quiet: bool,

    /// Print DEBUG lines too: every command run, as repmgr's -v.
    #[arg(short = 'v', long, global = true)]
    pub verbose: bool,

    /// Leave out DETAIL and HINT lines, as repmgr's -t.
    #[arg(short = 't', long, global = true)]
    pub terse: bool,

    /// Seconds between the progress lines (INFO) printed when stderr is not a terminal
    /// (systemd, cron, a pipe): bytes, percent, files, rate and ETA; 0 prints none. On a
    /// terminal a progress bar shows the same figures.
    #[arg(
        long,
        global = true,
        value_name = "SECONDS",
        default_value_t = crate::progress::DEFAULT_LINE_INTERVAL_SECS
    )]
    pub progress_interval: u64,
}

/// Top-level commands.
#[derive(Debug, Subcommand)]
#[allow(
    clippy::large_enum_variant,
    reason = "parsed once per process: boxing saves nothing"
)]
pub enum Command {
    /// Clone a standby and follow its progress.
    #[command(subcommand)]
    Clone(CloneCommand),
    /// Print the man page or a shell completion script on stdout; `man DIR` writes one page per
    /// command into DIR instead (pgreplica.1, pgreplica-clone.1, pgreplica-clone-start.1, …).
    #[command(hide = true)]
    Generate {
        /// What to generate.
        #[arg(value_enum)]
        what: Generated,
        /// With `man`: the directory to write one page per command into.
        #[arg(value_name = "DIR")]
        dir: Option<PathBuf>,
    },
}

/// Artefacts generated from these definitions.
#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum Generated {
    /// roff man page.
    Man,
    /// bash completion.
    Bash,
    /// zsh completion.
    Zsh,
    /// fish completion.
    Fish,
}

/// `pgreplica clone …`
#[derive(Debug, Subcommand)]
pub enum CloneCommand {
    /// Start a new clone.
    #[command(after_help = START_EXAMPLES)]
    Start(StartArgs),
    /// Make sure the data directory holds a finished clone, for automation (Ansible, systemd,
    /// Patroni): start one, resume the unfinished one, or do nothing (exit 0) when it is done.
    /// Takes the options of `clone start`.
    #[command(after_help = ENSURE_EXAMPLES)]
    Ensure(StartArgs),
    /// Continue an interrupted or failed clone from the step where it stopped.
    #[command(after_help = RESUME_EXAMPLES)]
    Resume(ResumeArgs),
    /// Show one clone, or every clone in the store.
    #[command(after_help = STATUS_EXAMPLES)]
    Status(StatusArgs),
    /// List the clones of the state directory, one line each.
    #[command(after_help = LIST_EXAMPLES)]
    List,
    /// Remove a clone's record from the state directory (never its data directory); a clone
    /// that a process runs is refused.
    #[command(after_help = FORGET_EXAMPLES)]
    Forget(ForgetArgs),
}

const START_EXAMPLES: &str = "\
Examples:
  Clone from Barman (barman_host and barman_server set in repmgr.conf):
    pgreplica clone start -f /etc/repmgr.conf -h node1 -U repmgr -d repmgr
  Check everything first, change nothing:
    pgreplica clone start -f /etc/repmgr.conf -h node1 -U repmgr -d repmgr --dry-run
  Restore an older backup with four rsync streams:
    pgreplica clone start -f /etc/repmgr.conf -h node1 -U repmgr --backup-id 20261124T010000 --jobs 4";

const ENSURE_EXAMPLES: &str = "\
Examples:
  Run again and again (exit 0 once the standby's data directory holds the finished clone):
    pgreplica clone ensure -f /etc/repmgr.conf -h node1 -U repmgr -d repmgr";

const RESUME_EXAMPLES: &str = "\
Examples:
  pgreplica clone resume -f /etc/repmgr.conf
  pgreplica clone resume main-1a2b3c4d
  After its pg-backup-api operation never started and the API service was fixed:
    pgreplica clone resume main-1a2b3c4d --api-operation new";

const LIST_EXAMPLES: &str = "\
Examples:
  pgreplica clone list
  pgreplica --state-dir /srv/pgreplica clone list";

const FORGET_EXAMPLES: &str = "\
Examples:
  pgreplica clone forget main-1a2b3c4d
  pgreplica clone forget /var/lib/postgresql/15/main";

const STATUS_EXAMPLES: &str = "\
Examples:
  pgreplica clone status
  pgreplica clone status main-1a2b3c4d --json";

/// Options of `clone start`, named as in `repmgr standby clone`.
#[derive(Debug, Args)]
pub struct StartArgs {
    /// repmgr.conf to read (node, Barman and replication settings).
    #[arg(short = 'f', long = "config-file", value_name = "PATH")]
    pub config_file: Option<PathBuf>,

    /// Source node host (the upstream the standby will stream from).
    #[arg(short = 'h', long = "host", value_name = "HOST")]
    pub host: Option<String>,

    /// Source node port.
    #[arg(short = 'p', long = "port", value_name = "PORT")]
    pub port: Option<u16>,

    /// Database user on the source node.
    #[arg(short = 'U', long = "username", value_name = "USER")]
    pub user: Option<String>,

    /// Database name or conninfo string for the source node.
    #[arg(short = 'd', long = "dbname", value_name = "DBNAME")]
    pub dbname: Option<String>,

    /// Data directory of the new standby (default: data_directory from repmgr.conf).
    #[arg(short = 'D', long = "pgdata", value_name = "DIR")]
    pub data_dir: Option<PathBuf>,

    /// Backup to restore: latest (default), oldest, a backup id or a backup name. In
    /// pg-backup-api mode pg_backupapi_backup_id names the backup; a different --backup-id is
    /// refused.
    #[arg(long, value_name = "ID")]
    pub backup_id: Option<String>,

    /// Parallel rsync streams for the transfer (default: this host's cores, at most 4).
    #[arg(short = 'j', long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=64))]
    pub jobs: Option<u32>,

    /// Cap each transfer stream at this many KiB/s (rsync's --bwlimit), to spare the network.
    #[arg(long, value_name = "KBPS")]
    pub bwlimit: Option<u32>,

    #[command(flatten)]
    pub retries: RetryArgs,

    /// Clone with pg_basebackup from the source node even if Barman is configured.
    #[arg(long, conflicts_with = "replication_conf_only")]
    pub without_barman: bool,

    /// Only write the replication configuration into an already restored data directory
    /// (repmgr 4's --recovery-conf-only is the same).
    #[arg(long, alias = "recovery-conf-only")]
    pub replication_conf_only: bool,

    /// Check everything a real run needs and report every problem; change nothing anywhere.
    #[arg(long)]
    pub dry_run: bool,

    /// Reuse a non-empty data directory, or discard an unfinished clone of it that has begun
    /// copying (one that never did is replaced without it).
    #[arg(short = 'F', long)]
    pub force: bool,

    /// repmgr node id of the upstream to follow, if not the source node.
    #[arg(long, value_name = "ID")]
    pub upstream_node_id: Option<i32>,

    /// Print the command's result as one JSON document on stdout (docs/json.md); with
    /// --dry-run, the report as data.
    #[arg(long)]
    pub json: bool,

    #[command(flatten)]
    pub repmgr: RepmgrArgs,
}

/// The other options of `repmgr standby clone` that operators' scripts pass: those with a
/// meaning here do what repmgr does; the others are accepted by the parser only to be refused
/// with the reason ([`RepmgrArgs::refusal`]), never with a guess at a similar option.
#[derive(Debug, Args)]
pub struct RepmgrArgs {
    /// Ask the source for an immediate checkpoint (pg_basebackup --checkpoint=fast). Only
    /// pg_basebackup mode takes a new backup; elsewhere it has no effect, as in repmgr.
    #[arg(short = 'c', long)]
    pub fast_checkpoint: bool,

    /// recovery_min_apply_delay to write into the replication configuration (e.g. 5min);
    /// overrides the one in repmgr.conf.
    #[arg(long, value_name = "DELAY")]
    pub recovery_min_apply_delay: Option<String>,

    /// repmgr's pg_verifybackup check: pgreplica always verifies the copy against the backup's
    /// backup_manifest (VerifyCopy), so this changes nothing.
    #[arg(long)]
    pub verify_backup: bool,

    /// The connection settings the standby streams with (primary_conninfo), when it must
    /// reach its upstream otherwise than pgreplica does (a VIP, a pooler, another address):
    /// key=value or a URI, without password. repmgr's keywords are added as for the upstream's
    /// own conninfo (application_name = node_name, user = replication_user, passfile); the
    /// replication slot is still made on the upstream pgreplica connects to.
    #[arg(long, value_name = "CONNINFO")]
    pub upstream_conninfo: Option<String>,

    #[arg(short = 'S', long, hide = true, value_name = "USER")]
    superuser: Option<String>,

    #[arg(long, hide = true, num_args = 0..=1, require_equals = true, value_name = "WHERE")]
    copy_external_config_files: Option<Option<String>>,

    #[arg(long, hide = true)]
    no_upstream_connection: bool,

    #[arg(short = 'R', long, hide = true, value_name = "USER")]
    remote_user: Option<String>,

    #[arg(long, hide = true, value_name = "USER")]
    replication_user: Option<String>,
}

impl RepmgrArgs {
    /// The refusal of a repmgr option given that means nothing here: which option, and why.
    pub fn refusal(&self) -> Option<(&'static str, &'static str, &'static str)> {
        // (given, option, why it means nothing here, what to do instead)
        let refused = [
            (
                self.superuser.is_some(),
                "-S/--superuser",
                "pgreplica opens one connection to the source, as the -U user; what it reads and the replication slot it creates need no superuser (REPLICATION suffices for the slot)",
                "drop -S/--superuser",
            ),
            (
                self.copy_external_config_files.is_some(),
                "--copy-external-config-files",
                "pgreplica copies the data directory only (from Barman or the source), and never reaches into the source host for files outside it",
                "install the configuration files outside the data directory as you installed the primary's (configuration management, or a copy by hand)",
            ),
            (
                self.no_upstream_connection,
                "--no-upstream-connection",
                "pgreplica always connects to the source node: it checks its settings and system identifier before copying anything",
                "drop --no-upstream-connection and make the source node reachable with -h/-p/-U/-d",
            ),
            (
                self.remote_user.is_some(),
                "-R/--remote-user",
                "pgreplica runs no ssh command on the source node; ssh goes to barman_host, whose user is part of it",
                "set the user in barman_host (e.g. barman_host='barman@backup1')",
            ),
            (
                self.replication_user.is_some(),
                "--replication-user",
                "the replication user is recorded from repmgr.conf, so that a resumed clone writes the same primary_conninfo",
                "set replication_user in repmgr.conf",
            ),
        ];
        refused
            .into_iter()
            .find(|(given, ..)| *given)
            .map(|(_, option, why, hint)| (option, why, hint))
    }
}

/// In-run retries, shared by `clone start` and `clone resume`.
#[derive(Debug, Args)]
pub struct RetryArgs {
    /// Retries of a transient failure (dropped connection, killed rsync) within this run before
    /// pgreplica stops and leaves the clone to `clone resume`; 0 stops at the first failure.
    #[arg(long, value_name = "N", default_value_t = 2)]
    pub retries: u32,
}

/// Options of `clone resume`.
#[derive(Debug, Args)]
pub struct ResumeArgs {
    #[command(flatten)]
    pub retries: RetryArgs,

    /// repmgr.conf whose data_directory names the clone (only used to find it).
    #[arg(
        short = 'f',
        long = "config-file",
        value_name = "PATH",
        conflicts_with = "clone"
    )]
    pub config_file: Option<PathBuf>,

    /// Clone id as shown by `clone status`, or its data directory.
    #[arg(value_name = "CLONE")]
    pub clone: Option<String>,

    /// pg-backup-api mode: the operation this clone owns — an operation id to re-attach to, or
    /// `new` to post a new recovery (the operation recorded so far is abandoned: it must not be
    /// restoring into the data directory any more). Recorded on the clone until its Transfer
    /// step acts on it.
    #[arg(long, value_name = "ID|new", value_parser = states::api::OperatorChoice::parse)]
    pub api_operation: Option<states::api::OperatorChoice>,

    /// Change the number of parallel rsync streams from the recorded one, for this run and
    /// the runs after it (recorded in the clone's history).
    #[arg(short = 'j', long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=64))]
    pub jobs: Option<u32>,

    /// Change the cap of each transfer stream (KiB/s, rsync's --bwlimit) from the recorded
    /// one, e.g. to spare the network in business hours; 0 lifts it. Recorded in the clone's
    /// history.
    #[arg(long, value_name = "KBPS")]
    pub bwlimit: Option<u32>,

    /// Print the command's result as one JSON document on stdout (docs/json.md).
    #[arg(long)]
    pub json: bool,
}

/// Options of `clone status`.
#[derive(Debug, Args)]
pub struct StatusArgs {
    /// Clone id or data directory; all clones when omitted.
    #[arg(value_name = "CLONE")]
    pub clone: Option<String>,

    /// Machine-readable output.
    #[arg(long)]
    pub json: bool,
}

/// Options of `clone forget`.
#[derive(Debug, Args)]
pub struct ForgetArgs {
    /// Clone id as shown by `clone list`, or its data directory.
    #[arg(value_name = "CLONE")]
    pub clone: String,
}

/// A command line clap refused, as a configuration error (exit 1): clap's first line as the
/// message, and as the HINT clap's tip when it has one (a similar option), else the help of
/// the command that was being parsed.
pub fn usage_error(err: &clap::Error) -> crate::error::Error {
    let text = err.render().to_string();
    let mut lines = text.lines().map(str::trim).filter(|l| !l.is_empty());
    // Without its command, clap renders the whole help: its first line is no error message.
    let first = lines.next();
    let message = match err.kind() {
        clap::error::ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => "no command given",
        _ => first
            .map(|l| l.strip_prefix("error: ").unwrap_or(l))
            .unwrap_or("invalid command line"),
    }
    .to_string();
    let rest: Vec<&str> = lines.collect();
    // The command being parsed: the subcommands named on the command line, as far as they go.
    let mut command = Vec::new();
    let mut current = self::command();
    for word in std::env::args().skip(1) {
        let Some(sub) = current.find_subcommand(&word).cloned() else {
            if word.starts_with('-') {
                continue;
            }
            break;
        };
        command.push(word);
        current = sub;
    }
    let help = command
        .iter()
        .map(String::as_str)
        .chain(["--help"])
        .collect::<Vec<_>>();
    let similar = rest
        .iter()
        .filter_map(|l| l.strip_prefix("tip: "))
        .find(|tip| tip.contains("similar"));
    let hint = match similar {
        Some(tip) => format!(
            "{tip}; \"{}\" lists the options",
            crate::paste::pgreplica(&help)
        ),
        None => format!("\"{}\" lists the options", crate::paste::pgreplica(&help)),
    };
    crate::error::Error::new(crate::error::ErrorKind::Config, message).hint(hint)
}

/// The clap command, for the man page and completions.
pub fn command() -> clap::Command {
    <Cli as clap::CommandFactory>::command()
}

/// Writes the requested artefact to `out`, or with `dir` (man pages only) one page per command
/// into `dir`.
pub fn generate(
    what: Generated,
    dir: Option<&std::path::Path>,
    out: &mut dyn std::io::Write,
) -> std::io::Result<()> {
    let mut cmd = command();
    match (what, dir) {
        (Generated::Man, Some(dir)) => man_pages(cmd, dir),
        (_, Some(_)) => Err(std::io::Error::other(
            "only the man pages are written into a directory",
        )),
        (Generated::Man, None) => man_page(cmd, out),
        (Generated::Bash, None) => {
            clap_complete::generate(clap_complete::Shell::Bash, &mut cmd, "pgreplica", out);
            Ok(())
        }
        (Generated::Zsh, None) => {
            clap_complete::generate(clap_complete::Shell::Zsh, &mut cmd, "pgreplica", out);
            Ok(())
        }
        (Generated::Fish, None) => {
            clap_complete::generate(clap_complete::Shell::Fish, &mut cmd, "pgreplica", out);
            Ok(())
        }
    }
}

/// The man page. clap_mangen renders the top command only, so the page goes on with the
/// synopsis and the options of each `clone` command: every flag is in the one page.
fn man_page(mut cmd: clap::Command, out: &mut dyn std::io::Write) -> std::io::Result<()> {
    cmd.build();
    clap_mangen::Man::new(cmd.clone()).render(out)?;
    // clap's own `help` commands have no options worth a section.
    let shown = |c: &&clap::Command| !c.is_hide_set() && c.get_name() != "help";
    let commands = cmd
        .get_subcommands()
        .filter(shown)
        .flat_map(|c| c.get_subcommands().filter(shown));
    for command in commands {
        let name = command
            .get_bin_name()
            .unwrap_or(command.get_name())
            .to_uppercase();
        let man = clap_mangen::Man::new(command.clone());
        let mut synopsis = Vec::new();
        man.render_synopsis_section(&mut synopsis)?;
        let mut options = Vec::new();
        man.render_options_section(&mut options)?;
        for (text, heading) in [(synopsis, "SYNOPSIS"), (options, "OPTIONS")] {
            let text = String::from_utf8_lossy(&text).replacen(
                &format!(".SH {heading}"),
                &format!(".SH \"{name}: {heading}\""),
                1,
            );
            out.write_all(text.as_bytes())?;
        }
    }
    out.write_all(common_sections().as_bytes())
}

/// One man page per command (the hidden `generate` and clap's `help` left out) into `dir`,
/// each named after its command (`pgreplica-clone-start.1`) and ending with the sections every
/// page shares: EXIT STATUS, ENVIRONMENT, FILES, SEE ALSO.
fn man_pages(cmd: clap::Command, dir: &std::path::Path) -> std::io::Result<()> {
    fn write(cmd: clap::Command, dir: &std::path::Path) -> std::io::Result<()> {
        for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
            write(sub.clone(), dir)?;
        }
        let man = clap_mangen::Man::new(cmd);
        let mut page = Vec::new();
        man.render(&mut page)?;
        page.extend_from_slice(common_sections().as_bytes());
        std::fs::write(dir.join(man.get_filename()), page)
    }
    std::fs::create_dir_all(dir)?;
    let mut cmd = cmd.disable_help_subcommand(true);
    cmd.build();
    write(cmd, dir)
}

/// The roff sections every man page ends with: the exit codes (from `ErrorKind`, the one place
/// that maps failures to codes), the environment and the files pgreplica reads and writes.
fn common_sections() -> String {
    use crate::error::ErrorKind;
    let mut text = String::from(".SH \"EXIT STATUS\"\n.TP\n0\nsuccess\n");
    for kind in ErrorKind::ALL {
        text.push_str(&format!(".TP\n{}\n{}\n", kind.exit_code(), kind.meaning()));
    }
    text.push_str(
        ".SH ENVIRONMENT\n\
         .TP\nPGREPLICA_STATE_DIR\nthe state directory (as \\-\\-state\\-dir)\n\
         .TP\nXDG_STATE_HOME, HOME\nthe default state directory: $XDG_STATE_HOME/pgreplica or ~/.local/state/pgreplica\n\
         .TP\nPGREPLICA_RSYNC_TIMEOUT\nseconds without data after which rsync gives up (default 60, 0 none)\n\
         .TP\nPGREPLICA_RSYNC_COMPRESS\nzstd, lz4, zlib or none: compress in transit in Barman mode, for slow links\n\
         .TP\nPGREPLICA_COPY_ENGINE\nrsync (default) or stream: the copy engine of Barman mode's plain backups\n\
         .TP\nPGHOST, PGPORT, PGUSER, PGDATABASE, PGPASSWORD, PGPASSFILE, PGSSLMODE and libpq's other variables\nthe source node's connection, as libpq reads them, after \\-h \\-p \\-U \\-d\n\
         .SH FILES\n\
         .TP\n\\&./repmgr.conf, /etc/repmgr.conf\nread when \\-f is not given, in that order\n\
         .TP\n$STATE_DIR/clones/ID/\neach clone's record (db/), lock and status snapshot (status.json)\n\
         .TP\n/run/lock/pgreplica\\-UID/\nthe locks of the directories a run writes\n\
         .TP\nlog_file\nevery log line, timestamped, when repmgr.conf sets log_file\n\
         .SH \"SEE ALSO\"\n\
         pgreplica(1), pgreplica\\-clone(1), pgreplica\\-clone\\-start(1), pgreplica\\-clone\\-resume(1), \
         pgreplica\\-clone\\-status(1), repmgr(1)\n",
    );
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[test]
    fn definitions_are_consistent() {
        command().debug_assert();
    }

    #[test]
    fn repmgr_style_flags_parse() {
        let cli = Cli::try_parse_from([
            "pgreplica",
            "clone",
            "start",
            "-f",
            "/etc/repmgr.conf",
            "-h",
            "node1",
            "-p",
            "5433",
            "-U",
            "repmgr",
            "-d",
            "repmgr",
            "-D",
            "/srv/pg",
            "-F",
            "--jobs",
            "4",
            "--backup-id",
            "oldest",
            "--upstream-node-id",
            "2",
        ])
        .unwrap();
        let Some(Command::Clone(CloneCommand::Start(args))) = cli.command else {
            panic!("not a start");
        };
        assert_eq!(args.host.as_deref(), Some("node1"));
        assert_eq!(args.port, Some(5433));
        assert_eq!(args.jobs, Some(4));
        assert!(args.force);
        assert_eq!(args.backup_id.as_deref(), Some("oldest"));
        assert_eq!(args.upstream_node_id, Some(2));
    }

    #[test]
    fn resume_takes_jobs_and_bwlimit_and_every_command_a_progress_interval() {
        let cli = Cli::try_parse_from([
            "pgreplica",
            "clone",
            "resume",
            "main-1a2b3c4d",
            "--jobs",
            "4",
            "--bwlimit",
            "0",
            "--progress-interval",
            "30",
        ])
        .unwrap();
        assert_eq!(cli.progress_interval, 30);
        let Some(Command::Clone(CloneCommand::Resume(args))) = cli.command else {
            panic!("not a resume");
        };
        assert_eq!((args.jobs, args.bwlimit), (Some(4), Some(0)));
        let cli = Cli::try_parse_from(["pgreplica", "clone", "status"]).unwrap();
        assert_eq!(
            cli.progress_interval,
            crate::progress::DEFAULT_LINE_INTERVAL_SECS
        );
        assert!(Cli::try_parse_from(["pgreplica", "clone", "resume", "--jobs", "0"]).is_err());
    }

    #[test]
    fn conflicting_modes_are_refused() {
        let err = Cli::try_parse_from([
            "pgreplica",
            "clone",
            "start",
            "--without-barman",
            "--replication-conf-only",
        ])
        .unwrap_err();
        assert_eq!(err.kind(), clap::error::ErrorKind::ArgumentConflict);
        assert!(Cli::try_parse_from(["pgreplica", "clone", "start", "--jobs", "0"]).is_err());
    }

    #[test]
    fn one_man_page_per_command_with_exit_status_environment_and_files() {
        let dir = tempfile::tempdir().unwrap();
        generate(Generated::Man, Some(dir.path()), &mut Vec::new()).unwrap();
        let mut pages: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        pages.sort();
        assert_eq!(
            pages,
            [
                "pgreplica-clone-ensure.1",
                "pgreplica-clone-forget.1",
                "pgreplica-clone-list.1",
                "pgreplica-clone-resume.1",
                "pgreplica-clone-start.1",
                "pgreplica-clone-status.1",
                "pgreplica-clone.1",
                "pgreplica.1",
            ]
        );
        for page in &pages {
            let text = std::fs::read_to_string(dir.path().join(page)).unwrap();
            for section in [".SH \"EXIT STATUS\"", ".SH ENVIRONMENT", ".SH FILES"] {
                assert!(text.contains(section), "{page} lacks {section}");
            }
            for kind in crate::error::ErrorKind::ALL {
                assert!(
                    text.contains(&format!(".TP\n{}\n", kind.exit_code())),
                    "{page} lacks exit code {}",
                    kind.exit_code()
                );
            }
            assert!(text.contains("\\&./repmgr.conf"), "{page}");
            // Every page a page points to exists.
            let references = text
                .split(|c: char| c.is_whitespace() || c == ',')
                .filter(|word| word.starts_with("pgreplica") && word.ends_with("(1)"));
            for reference in references {
                let file = format!(
                    "{}.1",
                    reference.trim_end_matches("(1)").replace("\\-", "-")
                );
                assert!(pages.contains(&file), "{page} points to {file}");
            }
        }
        let start = std::fs::read_to_string(dir.path().join("pgreplica-clone-start.1")).unwrap();
        assert!(start.contains("backup\\-id"), "{start}");
    }

    #[test]
    fn completions_offer_every_command_and_flag_and_the_man_page_names_the_commands() {
        let cmd = command();
        let clone = cmd.find_subcommand("clone").expect("the clone command");
        let commands: Vec<&str> = clone.get_subcommands().map(|c| c.get_name()).collect();
        assert!(commands.len() >= 3, "{commands:?}");
        // Every long flag of every clone subcommand, from the one definition clap keeps.
        let flags: Vec<String> = clone
            .get_subcommands()
            .flat_map(|c| c.get_arguments())
            .filter(|a| !a.is_hide_set())
            .filter_map(|a| a.get_long())
            .map(|l| format!("--{l}"))
            .collect();
        assert!(flags.contains(&"--backup-id".to_string()), "{flags:?}");
        for shell in [Generated::Bash, Generated::Zsh, Generated::Fish] {
            let mut out = Vec::new();
            generate(shell, None, &mut out).unwrap();
            let text = String::from_utf8(out).unwrap();
            for name in commands.iter().copied().chain(["clone"]) {
                assert!(text.contains(name), "{shell:?} completion lacks {name}");
            }
            for flag in &flags {
                // fish lists long flags without their dashes (`-l backup-id`).
                let bare = flag.trim_start_matches('-');
                assert!(
                    text.contains(flag.as_str()) || text.contains(&format!("-l {bare}")),
                    "{shell:?} completion lacks {flag}"
                );
            }
        }
        let mut out = Vec::new();
        generate(Generated::Man, None, &mut out).unwrap();
        let man = String::from_utf8(out).unwrap();
        assert!(man.contains(".TH pgreplica"), "{man}");
        assert!(
            man.contains("clone"),
            "the man page names the clone command"
        );
        // Each clone command's options are in the page, under a heading naming the command.
        for (command, flag) in [
            ("START", "backup\\-id"),
            ("RESUME", "api\\-operation"),
            ("STATUS", "json"),
        ] {
            let heading = format!(".SH \"PGREPLICA CLONE {command}: OPTIONS\"");
            let section = man.split(&heading).nth(1).expect(&heading);
            let section = section.split(".SH ").next().unwrap();
            assert!(section.contains(flag), "{command}: {section}");
        }
    }
}
