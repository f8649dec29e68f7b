//! Transfer in pg_basebackup mode (`--without-barman`): stream a plain-format copy of the source
//! node into the data directory with `pg_basebackup -X stream --checkpoint=fast --progress`.
//!
//! pg_basebackup cannot resume, so this step restarts cleanly instead: before it runs, whatever
//! an earlier attempt left in the data directory, the WAL directory and the mapped tablespace
//! targets is removed, and the restart is counted from the record's history. A running
//! postmaster is never wiped. The child runs under a guardian, on a thread of its own
//! ([`GuardedThreads`]), so it dies with pgreplica, even when pgreplica is SIGKILLed, and a
//! dropped step (SIGINT) stops it.
//!
//! It owns the pg_basebackup command line: the operator's `pg_basebackup_options` are honoured,
//! never duplicated, and refused where they would contradict what the clone needs (another
//! target, tar format, a recovery configuration of pg_basebackup's own). It must not touch the
//! store or the replication configuration.

use super::guardian::{thread_refused, GuardedThreads};
use super::layout::empty_dir;
use crate::child_output;
use crate::durable::io_error;
use crate::error::{Error, ErrorKind, Result};
use crate::pg_tools::pg_program;
use crate::runner::StepContext;
use crate::source::Target;
use states::{CloneRequest, PreparedDirs, SourceParams, TransferSummary};
use std::io::{self, Read};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Instant;
use tokio::sync::mpsc;

/// Runs the transfer into the prepared `dirs`; `restarts` earlier attempts left partial copies.
pub async fn run(
    ctx: &mut StepContext<'_>,
    params: &SourceParams,
    dirs: &PreparedDirs,
    restarts: u32,
) -> Result<TransferSummary> {
    let request = ctx.request().clone();
    let options = BaseBackupOptions::parse(&request.pg_basebackup_options)?;
    let removed = clear_partial_copy(&request, dirs)?;
    if restarts > 0 {
        crate::notice!(
            "pg_basebackup cannot resume: restarting the transfer from the beginning (restart {restarts}, {removed} entries of the earlier attempt removed)"
        );
    } else if removed > 0 {
        crate::notice!(
            "removed {removed} existing entries from \"{}\" before pg_basebackup",
            request.data_dir
        );
    }
    let program = pg_program(
        request.pg_bindir.as_deref(),
        params.server_version_num,
        "pg_basebackup",
    );
    let target = Target::resolve(&request.source)?;
    let args = command_args(&request, &target, &options);
    crate::notice!(
        "starting backup (using pg_basebackup) from {}...",
        target.describe()
    );
    crate::debug!("{} {}", program.display(), args.join(" "));
    let mut command = Command::new(&program);
    command
        .args(&args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .env("PGAPPNAME", "pgreplica");
    if let Some(passfile) = &request.replication.passfile {
        command.env("PGPASSFILE", passfile);
    }
    // Through the environment, never the command line (visible to every user in ps): the
    // password pgreplica itself would use, e.g. one given inside -d for this run only.
    if let Some(password) =
        crate::source::password_for(&target, request.replication.passfile.as_deref())
    {
        command.env("PGPASSWORD", password);
    }
    ctx.progress.set_totals(params.installation_size, 0, 0, 0);
    let started = Instant::now();
    let exit = watch(command, &program, |done, total| {
        if total > 0 {
            // pg_basebackup's own estimate is better than the database sizes; it grows as
            // pg_basebackup goes, and is updated in place (same bar, same rate).
            ctx.progress.set_bytes_total(total);
        }
        ctx.progress.set_bytes_done(done, 0);
    })
    .await?;
    exit.check(&program)?;
    let (files, bytes) = tree_size(Path::new(&request.data_dir))?;
    ctx.progress.set_bytes_total(bytes);
    ctx.progress.set_bytes_done(bytes, 0);
    Ok(TransferSummary {
        files,
        bytes_total: bytes,
        bytes_sent: bytes,
        files_reused: 0,
        bytes_kept: 0,
        duration_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
        restarts,
        checkpoint_ms: 0,
    })
}

/// Empties the data directory, the WAL directory and the mapped tablespace targets (keeping the
/// directories themselves, which PrepareDirs made with the right owner and mode). pg_basebackup
/// refuses non-empty targets, and creates the `pg_wal` link to `--waldir` itself, so PrepareDirs'
/// link goes too. Returns how many entries were removed.
fn clear_partial_copy(request: &CloneRequest, dirs: &PreparedDirs) -> Result<usize> {
    let data_dir = Path::new(&dirs.data_dir);
    // Never wipe a live cluster, whatever the history says.
    crate::datadir::check_postmaster(data_dir)?;
    if let Some(waldir) = &dirs.waldir {
        // PrepareDirs' own link is not a leftover: removed without counting.
        for name in ["pg_wal", "pg_xlog"] {
            let link = data_dir.join(name);
            if std::fs::read_link(&link).is_ok_and(|t| t == Path::new(waldir)) {
                std::fs::remove_file(&link).map_err(|e| io_error("remove", &link, e))?;
            }
        }
    }
    let mut removed = empty_dir(data_dir)?;
    if let Some(waldir) = &dirs.waldir {
        removed += empty_dir(Path::new(waldir))?;
    }
    for (_, new) in &request.tablespace_mapping {
        removed += empty_dir(Path::new(new))?;
    }
    Ok(removed)
}

/// Files and bytes under `dir`, following the `pg_wal` and tablespace links once.
fn tree_size(dir: &Path) -> Result<(u64, u64)> {
    let mut files = 0;
    let mut bytes = 0;
    let mut pending = vec![dir.to_path_buf()];
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(&dir).map_err(|e| io_error("read directory", &dir, e))? {
            let path = entry
                .map_err(|e| io_error("read directory", &dir, e))?
                .path();
            // metadata() follows links: pg_wal → waldir, pg_tblspc/<oid> → the target.
            let Ok(meta) = std::fs::metadata(&path) else {
                continue;
            };
            if meta.is_dir() {
                pending.push(path);
            } else {
                files += 1;
                bytes += meta.len();
            }
        }
    }
    Ok((files, bytes))
}

/// The operator's `pg_basebackup_options`, read for what pgreplica must know about them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BaseBackupOptions {
    /// The options as configured, passed on unchanged.
    pub args: Vec<String>,
    /// Long names (without `--`) of the options present, short ones mapped to their long name.
    present: Vec<String>,
    /// `-T`/`--tablespace-mapping` values given.
    mappings: Vec<String>,
}

/// pg_basebackup's options that take a value: (short letter, long name).
const WITH_VALUE: [(char, &str); 17] = [
    ('D', "pgdata"),
    ('F', "format"),
    ('r', "max-rate"),
    ('t', "target"),
    ('T', "tablespace-mapping"),
    ('X', "wal-method"),
    ('Z', "compress"),
    ('c', "checkpoint"),
    ('l', "label"),
    ('S', "slot"),
    ('d', "dbname"),
    ('h', "host"),
    ('p', "port"),
    ('s', "status-interval"),
    ('U', "username"),
    ('i', "incremental"),
    ('\0', "waldir"),
];

/// Long-only options with a value, beyond [`WITH_VALUE`].
const LONG_WITH_VALUE: [&str; 3] = ["xlogdir", "manifest-checksums", "sync-method"];

/// Flags (no value): (short letter, long name).
const FLAGS: [(char, &str); 9] = [
    ('z', "gzip"),
    ('C', "create-slot"),
    ('n', "no-clean"),
    ('N', "no-sync"),
    ('P', "progress"),
    ('v', "verbose"),
    ('w', "no-password"),
    ('W', "password"),
    ('R', "write-recovery-conf"),
];

impl BaseBackupOptions {
    /// Reads `args` and refuses what a clone cannot work with (exit 1, naming the option).
    pub fn parse(args: &[String]) -> Result<BaseBackupOptions> {
        let mut options = BaseBackupOptions {
            args: args.to_vec(),
            ..BaseBackupOptions::default()
        };
        let mut values: Vec<(String, Option<String>)> = Vec::new();
        let mut iter = args.iter();
        while let Some(arg) = iter.next() {
            if let Some(long) = arg.strip_prefix("--") {
                let (name, inline) = match long.split_once('=') {
                    Some((name, value)) => (name.to_string(), Some(value.to_string())),
                    None => (long.to_string(), None),
                };
                let takes_value = WITH_VALUE.iter().any(|(_, l)| *l == name)
                    || LONG_WITH_VALUE.contains(&name.as_str());
                let value = match (takes_value, inline) {
                    (true, None) => iter.next().cloned(),
                    (_, inline) => inline,
                };
                values.push((name, value));
            } else if let Some(shorts) = arg.strip_prefix('-').filter(|s| !s.is_empty()) {
                for (i, letter) in shorts.char_indices() {
                    if let Some((_, long)) = WITH_VALUE.iter().find(|(s, _)| *s == letter) {
                        let rest = &shorts[i + letter.len_utf8()..];
                        let value = if rest.is_empty() {
                            iter.next().cloned()
                        } else {
                            Some(rest.to_string())
                        };
                        values.push((long.to_string(), value));
                        break;
                    }
                    let name = FLAGS
                        .iter()
                        .find(|(s, _)| *s == letter)
                        .map_or_else(|| letter.to_string(), |(_, l)| l.to_string());
                    values.push((name, None));
                }
            }
        }
        for (name, value) in &values {
            refuse_conflict(name, value.as_deref())?;
            if name == "tablespace-mapping" {
                options.mappings.extend(value.clone());
            }
        }
        options.present = values.into_iter().map(|(name, _)| name).collect();
        Ok(options)
    }

    fn has(&self, long: &str) -> bool {
        self.present.iter().any(|p| p == long)
    }
}

/// Options that contradict the clone: pgreplica chooses the target, the format, the connection
/// and writes the replication configuration itself.
fn refuse_conflict(name: &str, value: Option<&str>) -> Result<()> {
    let refuse = |why: &str, hint: &str| {
        Err(Error::new(
            ErrorKind::Config,
            format!("pg_basebackup_options: \"--{name}\" cannot be used: {why}"),
        )
        .hint(hint.to_string()))
    };
    match name {
        "pgdata" => refuse(
            "pgreplica copies into the data directory",
            "remove it; set the target with -D/--pgdata or data_directory",
        ),
        "format" if !matches!(value, Some("p" | "plain")) => refuse(
            "a standby needs a plain-format copy",
            "remove --format from pg_basebackup_options",
        ),
        "target" | "gzip" | "compress" => refuse(
            "it applies to tar-format or server-side backups only",
            "remove it from pg_basebackup_options",
        ),
        "write-recovery-conf" => refuse(
            "pgreplica writes the replication configuration itself",
            "remove it; primary_conninfo comes from the upstream's repmgr record",
        ),
        "create-slot" => refuse(
            "pgreplica creates the replication slot when use_replication_slots is set",
            "remove it and set use_replication_slots=true in repmgr.conf",
        ),
        "wal-method" if matches!(value, Some("n" | "none")) => refuse(
            "the copy would lack the WAL needed to reach consistency",
            "remove --wal-method (pgreplica streams WAL) or use --wal-method=fetch",
        ),
        "host" | "port" | "username" | "dbname" => refuse(
            "the source node is given on the command line",
            "remove it and use -h/-p/-U/-d of \"pgreplica clone start\"",
        ),
        "password" => refuse(
            "pgreplica never prompts",
            "provide the password with PGPASSWORD or a password file (passfile)",
        ),
        "incremental" => refuse(
            "an incremental copy cannot start as a standby",
            "remove it from pg_basebackup_options",
        ),
        _ => Ok(()),
    }
}

/// pg_basebackup's arguments: the source, the target, what a standby needs (unless the
/// operator chose otherwise), the tablespace mapping, then the operator's options.
pub fn command_args(
    request: &CloneRequest,
    target: &Target,
    options: &BaseBackupOptions,
) -> Vec<String> {
    let mut args: Vec<String> = vec![
        "-h".into(),
        target.host.clone(),
        "-p".into(),
        target.port.to_string(),
        "-U".into(),
        target.user.clone(),
        "-D".into(),
        request.data_dir.clone(),
    ];
    // Every other connection keyword in force (TLS, timeouts, options …), for libpq to
    // honour: pg_basebackup reads its connection from -d, less the database name.
    let more = target.libpq_options();
    if !more.is_empty() {
        args.extend(["-d".to_string(), more.render()]);
    }
    let defaults: [(&str, &str); 5] = [
        ("format", "--format=plain"),
        ("wal-method", "--wal-method=stream"),
        ("checkpoint", "--checkpoint=fast"),
        ("progress", "--progress"),
        ("no-password", "--no-password"),
    ];
    for (name, arg) in defaults {
        if !options.has(name) {
            args.push(arg.to_string());
        }
    }
    for (old, new) in &request.tablespace_mapping {
        let mapping = format!("{}={}", escape_mapping(old), escape_mapping(new));
        if !options.mappings.contains(&mapping) {
            args.push(format!("--tablespace-mapping={mapping}"));
        }
    }
    args.extend(options.args.iter().cloned());
    args
}

/// `=` in a tablespace path is written `\=` in pg_basebackup's `-T OLD=NEW`.
fn escape_mapping(path: &str) -> String {
    path.replace('=', "\\=")
}

/// How pg_basebackup ended.
struct Exit {
    status: io::Result<std::process::ExitStatus>,
    stderr_tail: String,
}

impl Exit {
    fn check(self, program: &Path) -> Result<()> {
        use std::os::unix::process::ExitStatusExt;
        let status = self.status.map_err(|e| {
            Error::new(
                ErrorKind::BaseBackup,
                format!("cannot wait for \"{}\": {e}", program.display()),
            )
            .hint(format!(
                "the transfer restarts from the beginning with \"{}\"",
                crate::paste::resume()
            ))
        })?;
        if status.success() {
            return Ok(());
        }
        let how = match (status.code(), status.signal()) {
            (Some(code), _) => format!("exit code {code}"),
            (None, Some(signal)) => format!("signal {signal}"),
            (None, None) => "unknown status".to_string(),
        };
        // A dropped connection or a killed child may succeed next time; a refusal will not.
        let transient = status.signal().is_some()
            || [
                "could not connect",
                "connection to server",
                "unexpected termination",
                "server closed the connection",
            ]
            .iter()
            .any(|s| self.stderr_tail.contains(s));
        let hint = if transient {
            format!(
                "the transfer restarts from the beginning with \"{}\"",
                crate::paste::resume()
            )
        } else {
            format!(
                "fix the cause shown in DETAIL, then run \"{}\" (the transfer restarts from the beginning)",
                crate::paste::resume()
            )
        };
        let error = Error::new(
            ErrorKind::BaseBackup,
            format!("pg_basebackup failed ({how})"),
        )
        .detail(self.stderr_tail.clone())
        .hint(hint);
        Err(if transient { error.retryable() } else { error })
    }
}

/// What the watching thread reports.
enum Event {
    Progress { done: u64, total: u64 },
    Exit(Exit),
}

/// Runs `command` under a guardian on a thread of its own, calling `on_progress(done, total)`
/// (bytes) as pg_basebackup reports them. Dropping the returned future kills pg_basebackup and
/// waits until it is reaped.
async fn watch(
    mut command: Command,
    program: &Path,
    mut on_progress: impl FnMut(u64, u64),
) -> Result<Exit> {
    let (tx, mut rx) = mpsc::unbounded_channel();
    let (spawned_tx, spawned_rx) = tokio::sync::oneshot::channel();
    let mut threads = GuardedThreads::default();
    threads
        .spawn("pg_basebackup", move |spawner| {
            let mut child = match spawner.spawn(&mut command) {
                Ok(Some(child)) => child,
                // Stopped before it started: the step is gone, nobody waits for a status.
                Ok(None) => return,
                Err(e) => {
                    let _ = spawned_tx.send(Err(e));
                    return;
                }
            };
            let _ = spawned_tx.send(Ok(()));
            let stderr_tail = match child.take_stderr() {
                Some(stderr) => read_stderr(stderr, &tx),
                None => String::new(),
            };
            let status = child.wait();
            let _ = tx.send(Event::Exit(Exit {
                status,
                stderr_tail,
            }));
        })
        .map_err(|e| thread_refused("pg_basebackup", e))?;
    match spawned_rx.await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => {
            return Err(Error::new(
                ErrorKind::BaseBackup,
                format!("cannot run \"{}\": {e}", program.display()),
            )
            .hint("set pg_bindir in repmgr.conf to the directory of the PostgreSQL programs"))
        }
        Err(_) => {
            return Err(Error::bug(
                "the pg_basebackup thread ended before starting it",
            ))
        }
    }
    while let Some(event) = rx.recv().await {
        match event {
            Event::Progress { done, total } => on_progress(done, total),
            Event::Exit(exit) => {
                threads.join();
                return Ok(exit);
            }
        }
    }
    Err(Error::bug(
        "the pg_basebackup thread ended without a status",
    ))
}

/// Reads pg_basebackup's stderr to EOF: progress lines become events (they end in `\r` on a
/// terminal, `\n` otherwise), the rest is kept for the error's DETAIL.
fn read_stderr(stderr: impl Read, tx: &mpsc::UnboundedSender<Event>) -> String {
    let mut tail = child_output::Tail::default();
    let rest = child_output::for_each_line(stderr, |line| {
        let text = String::from_utf8_lossy(line);
        match parse_progress(&text) {
            Some((done, total)) => {
                let _ = tx.send(Event::Progress { done, total });
            }
            None if !text.trim().is_empty() => {
                crate::debug!("pg_basebackup: {text}");
                tail.push(&text);
            }
            None => {}
        }
    });
    // Its last words, even without a newline: a message, never progress.
    tail.push(&String::from_utf8_lossy(&rest));
    tail.into_detail()
}

/// `  12345/23456 kB (52%), 0/1 tablespace …` → (done, total) in bytes.
pub fn parse_progress(line: &str) -> Option<(u64, u64)> {
    let mut words = line.split_whitespace();
    let counts = words.next()?;
    if words.next()? != "kB" {
        return None;
    }
    let (done, total) = counts.split_once('/')?;
    Some((
        done.parse::<u64>().ok()? * 1024,
        total.parse::<u64>().ok()? * 1024,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(args: &[&str]) -> Vec<String> {
        args.iter().map(|s| s.to_string()).collect()
    }

    fn target() -> Target {
        Target::resolve(&states::SourceConn {
            host: Some("127.0.0.1".into()),
            port: Some(5433),
            user: Some("repmgr".into()),
            dbname: Some("repmgr".into()),
        })
        .unwrap()
    }

    #[test]
    fn progress_lines_are_parsed() {
        assert_eq!(
            parse_progress("  1024/20480 kB (5%), 0/1 tablespace"),
            Some((1024 * 1024, 20480 * 1024))
        );
        assert_eq!(
            parse_progress("20480/20480 kB (100%), 1/1 tablespace (…/base/1/1234)"),
            Some((20480 * 1024, 20480 * 1024))
        );
        assert_eq!(
            parse_progress("pg_basebackup: error: connection failed"),
            None
        );
        assert_eq!(parse_progress("waiting for checkpoint"), None);
    }

    #[test]
    fn defaults_are_added_unless_the_operator_chose() {
        let request = CloneRequest {
            data_dir: "/srv/pg".into(),
            tablespace_mapping: vec![("/old=x".into(), "/new".into())],
            ..CloneRequest::default()
        };
        let options = BaseBackupOptions::parse(&strings(&[
            "--waldir=/wal",
            "-c",
            "spread",
            "-r32k",
            "-Xfetch",
        ]))
        .unwrap();
        let args = command_args(&request, &target(), &options);
        assert_eq!(
            args,
            strings(&[
                "-h",
                "127.0.0.1",
                "-p",
                "5433",
                "-U",
                "repmgr",
                "-D",
                "/srv/pg",
                "--format=plain",
                "--progress",
                "--no-password",
                "--tablespace-mapping=/old\\=x=/new",
                "--waldir=/wal",
                "-c",
                "spread",
                "-r32k",
                "-Xfetch",
            ])
        );
        let plain = BaseBackupOptions::parse(&[]).unwrap();
        let args = command_args(&CloneRequest::default(), &target(), &plain);
        for wanted in ["--wal-method=stream", "--checkpoint=fast", "--progress"] {
            assert!(args.contains(&wanted.to_string()), "{args:?}");
        }
    }

    #[test]
    fn conflicting_options_are_refused_by_name() {
        for bad in [
            &["-D", "/x"][..],
            &["--pgdata=/x"],
            &["-Ft"],
            &["--format", "tar"],
            &["-R"],
            &["-vR"],
            &["--write-recovery-conf"],
            &["-z"],
            &["-X", "none"],
            &["-h", "other"],
            &["--create-slot"],
            &["-W"],
        ] {
            let error = BaseBackupOptions::parse(&strings(bad)).unwrap_err();
            assert_eq!(error.kind, ErrorKind::Config, "{bad:?}");
            assert!(error.message.contains("pg_basebackup_options"), "{bad:?}");
        }
        for good in [
            &["-Fp"][..],
            &["--format=plain", "-v", "-P"],
            &["--max-rate", "1M"],
        ] {
            BaseBackupOptions::parse(&strings(good)).unwrap();
        }
    }

    #[test]
    fn emptying_keeps_the_directory_and_does_not_follow_links() {
        let root = tempfile::tempdir().unwrap();
        let outside = root.path().join("outside");
        std::fs::create_dir(&outside).unwrap();
        std::fs::write(outside.join("keep"), "x").unwrap();
        let dir = root.path().join("data");
        std::fs::create_dir_all(dir.join("base/1")).unwrap();
        std::fs::write(dir.join("base/1/123"), "data").unwrap();
        std::os::unix::fs::symlink(&outside, dir.join("pg_wal")).unwrap();
        assert_eq!(empty_dir(&dir).unwrap(), 2);
        assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 0);
        assert!(outside.join("keep").exists());
        assert_eq!(empty_dir(&root.path().join("missing")).unwrap(), 0);
    }
}
