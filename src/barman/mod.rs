//! The Barman client: every command pgreplica runs on the Barman host is built here, from
//! argument vectors, quoted for the remote shell, and run over the system `ssh` (so the
//! operator's `~/.ssh/config` applies) with a bounded timeout.
//!
//! * [`Barman`] — the host, server and options from repmgr.conf, and the operations:
//!   [`Barman::version`], [`Barman::check_reachable`], [`Barman::show_server`],
//!   [`Barman::list_backups`], [`Barman::resolve_backup`], [`Barman::list_files`].
//! * [`quote`] — POSIX shell and rsync `-e` quoting.
//! * [`catalogue`], [`info`], [`files`] — readers of Barman's outputs, backup.info and the
//!   `find` listing, tested on real outputs of Barman 3.4.0 and 3.19.1.
//!
//! Must not: copy files (that is `transfer`), touch the local data directory, or paste any
//! value into a shell string unquoted. Works with Debian's Barman 3.4.0 and PyPI's 3.19.x: both
//! answer `-f json` for `show-server`, `show-backup` and `list-backups`.

pub mod catalogue;
mod exec;
pub mod files;
pub mod info;
pub mod quote;

pub use catalogue::{BackupSummary, ServerDirs, ShowBackup};
pub use exec::RemoteOutput;

use crate::error::{Error, ErrorKind, Result};
use catalogue::ShowServerError;
use info::BackupInfo;
use serde_json::Value;
use states::{BackupFacts, BarmanTarget, ManifestEntry};
use std::time::Duration;

/// Default bound on one command on the Barman host.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(120);

/// How commands reach the Barman host.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Transport {
    /// `ssh -o BatchMode=yes <ssh_options> -- <host> <command>` (the normal case).
    Ssh,
    /// `<launcher…> <command>`: the rendered remote command line is appended as one argument to
    /// a local launcher that hands it to a shell, e.g. `["sh", "-c"]` or
    /// `["runuser", "-u", "barman", "--", "sh", "-c"]` — for a Barman on this machine, and for
    /// tests that prove the quoting on a real shell and a real Barman without an sshd.
    Local(Vec<String>),
}

/// A Barman server reached over ssh: repmgr's `barman_host`, `barman_server`, `barman_config`
/// and `ssh_options`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Barman {
    /// ssh destination of the Barman host (`barman@barmansrv`); `~/.ssh/config` applies.
    pub host: String,
    /// Server section in Barman's configuration (`pg`).
    pub server: String,
    /// Barman configuration file on the Barman host, passed as `--config=…` when set.
    pub config: Option<String>,
    /// repmgr's `ssh_options`, already split into arguments, for every ssh (and rsync's `-e`).
    pub ssh_options: Vec<String>,
    /// Bound on each remote command; the child is killed when it expires.
    pub timeout: Duration,
    /// How commands reach the host.
    pub transport: Transport,
}

/// The backup probe run on the Barman host: `$1` basebackups_directory, `$2` backup_directory,
/// `$3` backup id. It prints one word per fact (`dir data`, `dir pgdata`, `manifest`, `tar`,
/// `gpg`), then `info` followed by the backup.info text, or `noinfo`. The values arrive as
/// positional parameters, never spliced into the script. backup.info is looked up where Barman
/// ≥ 3.13.2 writes it (`meta/<id>-backup.info`) first, then where older releases left it.
const PROBE_SCRIPT: &str = r#"b="$1/$3"
for d in data pgdata; do if [ -d "$b/$d" ]; then echo "dir $d"; fi; done
if [ -f "$b/data/backup_manifest" ]; then echo manifest; fi
for f in "$b"/data/base.tar*; do if [ -e "$f" ]; then echo tar; fi; break; done
if [ -n "$(find "$b" -maxdepth 2 -name '*.gpg' -print -quit 2>/dev/null)" ]; then echo gpg; fi
for f in "$2/meta/$3-backup.info" "$b/backup.info"; do
  if [ -f "$f" ]; then echo info; exec cat -- "$f"; fi
done
echo noinfo"#;

/// Barman's reply to one command, with its JSON when it printed some.
struct Reply {
    status: i32,
    json: Option<Value>,
    text: String,
    stderr: String,
}

impl Reply {
    /// Barman's error messages: `_ERROR` in JSON, `ERROR:` lines on stderr otherwise.
    fn errors(&self) -> Vec<String> {
        let mut errors = self
            .json
            .as_ref()
            .map(|j| catalogue::json_messages(j, "_ERROR"))
            .unwrap_or_default();
        if errors.is_empty() {
            errors = self
                .stderr
                .lines()
                .filter_map(|l| l.trim().strip_prefix("ERROR:"))
                .map(|l| l.trim().to_string())
                .collect();
        }
        errors
    }

    /// Whether Barman reported a failure.
    fn failed(&self) -> bool {
        self.status != 0 || !self.errors().is_empty()
    }
}

impl Barman {
    /// A client with the default timeout, over ssh.
    pub fn new(
        host: impl Into<String>,
        server: impl Into<String>,
        config: Option<String>,
        ssh_options: Vec<String>,
    ) -> Barman {
        Barman {
            host: host.into(),
            server: server.into(),
            config,
            ssh_options,
            timeout: DEFAULT_TIMEOUT,
            transport: Transport::Ssh,
        }
    }

    /// A client for the Barman target recorded on a clone.
    pub fn from_target(target: &BarmanTarget, ssh_options: &[String]) -> Barman {
        Barman::new(
            target.host.clone(),
            target.server.clone(),
            target.config.clone(),
            ssh_options.to_vec(),
        )
    }

    /// The client of a Barman-mode request (`barman_host`, `barman_server`, `barman_config`,
    /// `ssh_options`); its absence is a bug in how the request was built.
    pub fn for_request(request: &states::CloneRequest) -> crate::error::Result<Barman> {
        let target = request.barman.as_ref().ok_or_else(|| {
            crate::error::Error::new(
                crate::error::ErrorKind::Internal,
                "Barman mode without barman_host in the request",
            )
        })?;
        Ok(Barman::from_target(target, &request.ssh_options))
    }

    /// Sets the bound on each remote command.
    pub fn with_timeout(mut self, timeout: Duration) -> Barman {
        self.timeout = timeout;
        self
    }

    /// Sets how commands reach the host.
    pub fn with_transport(mut self, transport: Transport) -> Barman {
        self.transport = transport;
        self
    }

    /// `ssh -o BatchMode=yes <ssh_options…> -- <host>`: the prefix of every remote command.
    /// BatchMode makes a missing key fail at once instead of waiting at a password prompt; `--`
    /// keeps the host from ever being read as an option.
    pub fn ssh_argv(&self) -> Vec<String> {
        let mut argv = self.ssh_command();
        argv.push("--".to_string());
        argv.push(self.host.clone());
        argv
    }

    /// The ssh command for `rsync -e`, rendered for rsync's own argument splitting: the same
    /// program and options as [`Barman::ssh_argv`], without the host (rsync appends it).
    pub fn rsync_rsh(&self) -> String {
        quote::rsync_join(&self.ssh_command())
    }

    fn ssh_command(&self) -> Vec<String> {
        let mut argv = vec![
            "ssh".to_string(),
            "-o".to_string(),
            "BatchMode=yes".to_string(),
        ];
        argv.extend(self.ssh_options.iter().cloned());
        argv
    }

    /// `barman [--config=<config>] <args…>` as an argument vector.
    pub fn barman_argv<S: AsRef<str>>(&self, args: &[S]) -> Vec<String> {
        let mut argv = vec!["barman".to_string()];
        if let Some(config) = &self.config {
            argv.push(format!("--config={config}"));
        }
        argv.extend(args.iter().map(|a| a.as_ref().to_string()));
        argv
    }

    /// The local argument vector that runs `remote` (an argument vector) on the Barman host:
    /// the transport's prefix plus `remote` rendered as one POSIX shell command line.
    pub fn command_argv<S: AsRef<str>>(&self, remote: &[S]) -> Vec<String> {
        let mut argv = match &self.transport {
            Transport::Ssh => self.ssh_argv(),
            Transport::Local(launcher) => launcher.clone(),
        };
        argv.push(quote::shell_join(remote));
        argv
    }

    /// A command line the operator can paste to run `args` of barman by hand, for hints.
    fn manual_command(&self, args: &[&str]) -> String {
        quote::shell_join(&self.command_argv(&self.barman_argv(args)))
    }

    /// Refuses values that a remote program would read as options.
    fn validate(&self) -> Result<()> {
        if self.host.is_empty() || self.host.starts_with('-') {
            return Err(Error::new(ErrorKind::Config, format!("barman_host \"{}\" is not an ssh destination", self.host))
                .hint("set barman_host in repmgr.conf to the Barman host, e.g. barman_host='barman@barmansrv'"));
        }
        if self.server.is_empty()
            || self.server.starts_with('-')
            || self.server.chars().any(char::is_whitespace)
        {
            return Err(Error::new(ErrorKind::Config, format!("barman_server \"{}\" is not a Barman server name", self.server))
                .hint("set barman_server in repmgr.conf to the server's section name in Barman's configuration, e.g. barman_server='pg'"));
        }
        Ok(())
    }

    /// Runs `remote` on the Barman host. Transport failures and a missing program are errors
    /// (see [`RemoteOutput`] for the rest); any other exit status comes back to the caller.
    pub async fn run<S: AsRef<str>>(&self, remote: &[S]) -> Result<RemoteOutput> {
        self.validate()?;
        let target = exec::Target {
            host: &self.host,
            probe_hint: quote::shell_join(&self.command_argv(&["barman", "--version"])),
        };
        exec::run(&self.command_argv(remote), self.timeout, &target).await
    }

    /// Runs barman with `-f json` prepended to `args` and reads its reply.
    async fn barman_json(&self, args: &[&str]) -> Result<Reply> {
        let mut full = vec!["-f", "json"];
        full.extend_from_slice(args);
        let out = self.run(&self.barman_argv(&full)).await?;
        let text = out.stdout_text();
        let json = catalogue::parse_json_reply(&text);
        if let Some(json) = &json {
            for w in catalogue::json_messages(json, "_WARNING") {
                crate::warning!("Barman: {w}");
            }
        }
        Ok(Reply {
            status: out.status,
            json,
            text,
            stderr: out.stderr,
        })
    }

    /// The error for a Barman command that failed for a reason without a better message.
    fn barman_failed(&self, what: &str, reply: &Reply) -> Error {
        let errors = reply.errors();
        let reason = errors
            .first()
            .cloned()
            .unwrap_or_else(|| format!("exit status {}", reply.status));
        let mut err = Error::new(
            ErrorKind::Barman,
            format!("Barman on \"{}\" failed to {what}: {reason}", self.host),
        );
        let detail = [errors.join("\n"), reply.stderr.trim().to_string()]
            .into_iter()
            .filter(|s| !s.is_empty())
            .collect::<Vec<_>>()
            .join("\n");
        if !detail.is_empty() {
            err = err.detail(exec::output_detail(&detail));
        }
        if reason.starts_with("Unknown server") {
            err.hint(format!(
                "set barman_server in repmgr.conf to a server Barman knows (and barman_config if it uses a non-default configuration); see: {}",
                self.manual_command(&["list-servers"])
            ))
        } else {
            err.hint(format!(
                "run it by hand to see Barman's full output: {}",
                self.manual_command(&["check", &self.server])
            ))
        }
    }

    /// Barman's version on the host (`3.4.0`), from `barman --version`.
    pub async fn version(&self) -> Result<String> {
        let out = self.run(&self.barman_argv(&["--version"])).await?;
        let text = format!("{}\n{}", out.stdout_text(), out.stderr);
        match catalogue::parse_version(&text) {
            Some(version) if out.status == 0 => Ok(version),
            _ => Err(Error::new(
                ErrorKind::Barman,
                format!(
                    "\"barman --version\" failed on the Barman host \"{}\"",
                    self.host
                ),
            )
            .detail(exec::output_detail(text.trim()))
            .hint(format!(
                "check that Barman is installed and works for the ssh user: {}",
                self.manual_command(&["--version"])
            ))),
        }
    }

    /// Checks that ssh reaches the host and Barman runs there; returns Barman's version.
    /// Barman releases older than 3.4 (Debian bookworm's) are accepted with a warning: their
    /// output formats are untested.
    pub async fn check_reachable(&self) -> Result<String> {
        let version = self.version().await?;
        let mut parts = version.split('.').map(|p| p.parse::<u32>().unwrap_or(0));
        let (major, minor) = (parts.next().unwrap_or(0), parts.next().unwrap_or(0));
        if (major, minor) < (3, 4) {
            crate::warning!("Barman {version} on \"{}\" is older than 3.4, the oldest release pgreplica is tested with", self.host);
        }
        crate::debug!("Barman {version} answers on \"{}\"", self.host);
        Ok(version)
    }

    /// The server's catalogue directories, from `show-server`. A catalogue in object storage is
    /// refused: it cannot be copied with rsync.
    pub async fn show_server(&self) -> Result<ServerDirs> {
        let reply = self.barman_json(&["show-server", &self.server]).await?;
        if reply.failed() {
            return Err(self.barman_failed(&format!("show server \"{}\"", self.server), &reply));
        }
        catalogue::parse_show_server(&self.server, &reply.text).map_err(|e| match e {
            ShowServerError::Cloud(url) => Error::new(
                ErrorKind::Barman,
                format!("the backups of Barman server \"{}\" are stored in the cloud ({url}) and cannot be restored with rsync", self.server),
            )
            .hint("restore with \"barman restore\" on the Barman host (or pg-backup-api), then run \"pgreplica clone start --replication-conf-only\""),
            ShowServerError::Unreadable(why) => Error::new(
                ErrorKind::Barman,
                format!("cannot read Barman's \"show-server {}\" output from \"{}\": {why}", self.server, self.host),
            )
            .hint(format!("check the output by hand: {}", self.manual_command(&["show-server", &self.server]))),
        })
    }

    /// The server's backups, newest first, all statuses.
    pub async fn list_backups(&self) -> Result<Vec<BackupSummary>> {
        let reply = self.barman_json(&["list-backups", &self.server]).await?;
        if reply.failed() {
            return Err(
                self.barman_failed(&format!("list the backups of \"{}\"", self.server), &reply)
            );
        }
        let json = reply
            .json
            .as_ref()
            .ok_or_else(|| self.unreadable("list-backups", &reply.text))?;
        catalogue::parse_list_backups(&self.server, json)
            .map_err(|why| self.unreadable("list-backups", &why))
    }

    fn unreadable(&self, command: &str, why: &str) -> Error {
        Error::new(ErrorKind::Barman, format!("cannot read Barman's \"{command}\" reply from \"{}\"", self.host))
            .detail(exec::output_detail(why))
            .hint("pgreplica reads Barman's JSON output (barman -f json), available in Barman 3.4 and newer")
    }

    /// Pins `selector` (`latest`/`last`, `oldest`/`first`, a backup id or a backup name) to one
    /// backup, checks that rsync can restore it, and returns its facts.
    ///
    /// Refused with [`ErrorKind::Barman`]: unknown backup, status other than DONE, a catalogue
    /// in the cloud, tar-format (compressed) backups, encrypted backups, incremental backups,
    /// snapshot backups, a backup directory without data.
    pub async fn resolve_backup(&self, selector: &str) -> Result<BackupFacts> {
        if selector.is_empty() || selector.starts_with('-') {
            return Err(Error::new(ErrorKind::Config, format!("\"{selector}\" is not a backup id, name or shortcut"))
                .hint("use --backup-id latest, oldest, a backup id such as 20261125T061436, or a backup name"));
        }
        // Each is a Barman process (Python) starting on the host: ask both at once.
        let (dirs, shown) = tokio::join!(self.show_server(), self.show_backup(selector));
        let (dirs, shown) = (dirs?, shown?);
        if shown.status != "DONE" {
            return Err(Error::new(
                ErrorKind::Barman,
                format!("backup {} of Barman server \"{}\" has status {}; only a DONE backup can be restored", shown.backup_id, self.server, shown.status),
            )
            .hint(self.choose_another_hint()));
        }
        let probe = self.probe(&dirs, &shown.backup_id).await?;
        facts_from(&self.server, &dirs, &shown, &probe).map_err(|refusal| refusal.into_error(self))
    }

    /// `show-backup` of `selector`, with "unknown backup" turned into a clear error.
    async fn show_backup(&self, selector: &str) -> Result<ShowBackup> {
        let reply = self
            .barman_json(&["show-backup", &self.server, selector])
            .await?;
        if reply.failed() {
            if reply
                .errors()
                .iter()
                .any(|e| e.starts_with("Unknown backup"))
            {
                return Err(Error::new(
                    ErrorKind::Barman,
                    format!("no backup \"{selector}\" for server \"{}\" in the Barman catalogue", self.server),
                )
                .detail(exec::output_detail(&reply.errors().join("\n")))
                .hint(format!(
                    "choose a backup with --backup-id (latest, oldest, an id or a name); list them with: {}",
                    self.manual_command(&["list-backups", &self.server])
                )));
            }
            return Err(self.barman_failed(&format!("show backup \"{selector}\""), &reply));
        }
        let json = reply
            .json
            .as_ref()
            .ok_or_else(|| self.unreadable("show-backup", &reply.text))?;
        catalogue::parse_show_backup(&self.server, json)
            .map_err(|why| self.unreadable("show-backup", &why))
    }

    fn choose_another_hint(&self) -> String {
        format!(
            "choose another backup with --backup-id; list them with: {}",
            self.manual_command(&["list-backups", &self.server])
        )
    }

    /// Runs [`PROBE_SCRIPT`] for one backup and reads its answer.
    async fn probe(&self, dirs: &ServerDirs, backup_id: &str) -> Result<Probe> {
        let remote = [
            "sh",
            "-c",
            PROBE_SCRIPT,
            "pgreplica-probe",
            &dirs.basebackups_directory,
            &dirs.backup_directory,
            backup_id,
        ];
        let out = self.run(&remote).await?;
        let text = out.stdout_text();
        if out.status != 0 {
            return Err(Error::new(ErrorKind::Barman, format!("cannot inspect backup {backup_id} on the Barman host \"{}\"", self.host))
                .detail(exec::output_detail(&out.stderr))
                .hint("check that the ssh user can read Barman's catalogue (usually: log in as the barman user)"));
        }
        Probe::parse(&text).map_err(|why| {
            Error::new(ErrorKind::Barman, format!("cannot read backup.info of backup {backup_id} on \"{}\": {why}", self.host))
                .hint(format!(
                    "look for {}/meta/{backup_id}-backup.info or {}/{backup_id}/backup.info on the Barman host",
                    dirs.backup_directory, dirs.basebackups_directory
                ))
        })
    }

    /// The files of one tree of a backup — the data directory (`root` 0) or a tablespace
    /// (`root` = its OID) at `remote_dir` on the Barman host — with sizes and mtimes, in one
    /// ssh round trip (see [`files`] for why `find -printf`). Entries a restore must not carry
    /// are left out of the data directory ([`files::excluded_from_data`]).
    pub async fn list_files(
        &self,
        facts: &BackupFacts,
        root: u32,
        remote_dir: &str,
    ) -> Result<Vec<ManifestEntry>> {
        let out = self.run(&files::find_command(remote_dir)).await?;
        let where_ = if root == 0 {
            "data directory".to_string()
        } else {
            format!("tablespace {root}")
        };
        if out.status != 0 {
            return Err(Error::new(
                ErrorKind::Barman,
                format!("cannot list the {where_} of backup {} at {remote_dir} on the Barman host \"{}\"", facts.backup_id, self.host),
            )
            .detail(exec::output_detail(&out.stderr))
            .hint(format!(
                "check that the backup still exists (a retention policy may have deleted it) and that GNU find is installed there: {}",
                self.manual_command(&["list-backups", &self.server])
            )));
        }
        let entries =
            files::parse_find_output(&out.stdout, root, &facts.tablespaces).map_err(|why| {
                Error::new(
                    ErrorKind::Barman,
                    format!(
                        "cannot read the file list of {remote_dir} on \"{}\": {why}",
                        self.host
                    ),
                )
            })?;
        if root == 0 && !entries.iter().any(|e| e.path == "global/pg_control") {
            return Err(Error::new(
                ErrorKind::Barman,
                format!("{remote_dir} on the Barman host \"{}\" is not a PostgreSQL data directory (no global/pg_control)", self.host),
            )
            .hint(self.choose_another_hint()));
        }
        Ok(entries)
    }
}

/// The data directory of a backup on the Barman host.
pub fn data_dir(facts: &BackupFacts) -> String {
    format!("{}/{}", facts.backup_dir, facts.data_subdir)
}

/// The directory of tablespace `oid` of a backup on the Barman host: `<backup_dir>/<oid>`, or
/// inside PGDATA (`pgdata/pg_tblspc/<oid>`) in the legacy layout, as Barman's
/// `get_data_directory` has it.
pub fn tablespace_dir(facts: &BackupFacts, oid: u32) -> String {
    if facts.data_subdir == "pgdata" {
        format!("{}/pgdata/pg_tblspc/{oid}", facts.backup_dir)
    } else {
        format!("{}/{oid}", facts.backup_dir)
    }
}

/// What the probe found in a backup's directory.
#[derive(Debug, Default, PartialEq, Eq)]
struct Probe {
    data_subdir: Option<String>,
    has_manifest: bool,
    tar: bool,
    gpg: bool,
    info: Option<BackupInfo>,
}

impl Probe {
    fn parse(text: &str) -> Result<Probe, String> {
        let mut probe = Probe::default();
        let mut lines = text.split_inclusive('\n');
        for line in lines.by_ref() {
            match line.trim_end() {
                // Barman reads `pgdata/` as the layout marker when it exists (backup_version 1).
                "dir data" if probe.data_subdir.is_none() => {
                    probe.data_subdir = Some("data".into())
                }
                "dir data" => {}
                "dir pgdata" => probe.data_subdir = Some("pgdata".into()),
                "manifest" => probe.has_manifest = true,
                "tar" => probe.tar = true,
                "gpg" => probe.gpg = true,
                "noinfo" => return Err("no backup.info found in either location".into()),
                "info" => {
                    let rest: String = lines.collect();
                    probe.info = Some(BackupInfo::parse(&rest)?);
                    return Ok(probe);
                }
                other => return Err(format!("unexpected probe line {other:?}")),
            }
        }
        Err("the probe stopped early".into())
    }
}

/// Why a backup cannot be restored with rsync (turned into an error with the client's hints).
#[derive(Debug, PartialEq, Eq)]
enum Refusal {
    /// Not restorable as a plain copy: the message and the hint's first words.
    Unrestorable {
        message: String,
        remedy: &'static str,
    },
    /// The catalogue looks wrong: a missing field or directory.
    Broken(String),
}

impl Refusal {
    fn into_error(self, barman: &Barman) -> Error {
        match self {
            Refusal::Unrestorable { message, remedy } => Error::new(ErrorKind::Barman, message)
                .hint(format!(
                    "{remedy}; or choose a plain full backup with --backup-id, listed by: {}",
                    barman.manual_command(&["list-backups", &barman.server])
                )),
            Refusal::Broken(message) => Error::new(ErrorKind::Barman, message).hint(format!(
                "check the backup with: {}",
                barman.manual_command(&["check-backup", &barman.server, "<backup-id>"])
            )),
        }
    }
}

/// Restore on the Barman host, then configure replication only: the remedy for every backup
/// rsync cannot copy.
const RESTORE_ON_BARMAN: &str = "restore it on the Barman host with \"barman restore\" (or through pg-backup-api), then run \"pgreplica clone start --replication-conf-only\"";

/// Decides whether the backup can be restored with rsync, and collects its facts: backup.info
/// first, `show-backup` where backup.info lacks a field.
fn facts_from(
    server: &str,
    dirs: &ServerDirs,
    shown: &ShowBackup,
    probe: &Probe,
) -> Result<BackupFacts, Refusal> {
    let id = &shown.backup_id;
    let info = probe.info.clone().unwrap_or_default();
    let what = format!("backup {id} of Barman server \"{server}\"");
    let compression = info
        .get("compression")
        .map(str::to_string)
        .or_else(|| shown.compression.clone());
    if compression.is_some() || probe.tar {
        return Err(Refusal::Unrestorable {
            message: format!(
                "{what} is a tar-format backup (compression {}) and cannot be copied with rsync",
                compression.as_deref().unwrap_or("none")
            ),
            remedy: RESTORE_ON_BARMAN,
        });
    }
    if info.get("encryption").is_some() || shown.encryption.is_some() || probe.gpg {
        return Err(Refusal::Unrestorable {
            message: format!("{what} is encrypted and cannot be copied with rsync"),
            remedy: RESTORE_ON_BARMAN,
        });
    }
    if let Some(parent) = info
        .get("parent_backup_id")
        .or((shown.backup_type.as_deref() == Some("incremental")).then_some("?"))
    {
        return Err(Refusal::Unrestorable {
            message: format!("{what} is an incremental backup (parent {parent}) and needs pg_combinebackup over its chain"),
            remedy: RESTORE_ON_BARMAN,
        });
    }
    let mode = info.get("mode").unwrap_or("");
    if mode.starts_with("snapshot") || shown.backup_type.as_deref() == Some("snapshot") {
        return Err(Refusal::Unrestorable {
            message: format!("{what} is a snapshot backup: its data lives in cloud disk snapshots, not on the Barman host"),
            remedy: "restore it with \"barman restore\" onto disks cloned from the snapshots",
        });
    }
    let backup_dir = format!("{}/{id}", dirs.basebackups_directory);
    let wals_directory = dirs.wals_directory.clone();
    let data_subdir = probe
        .data_subdir
        .clone()
        .ok_or_else(|| Refusal::Broken(format!("{what} has no data directory in {backup_dir}")))?;
    let broken = |why: String| Refusal::Broken(format!("backup.info of {what}: {why}"));
    let missing = |key: &str| {
        Refusal::Broken(format!(
            "neither backup.info nor show-backup of {what} gives {key}"
        ))
    };
    let tablespaces = match info.get("tablespaces") {
        Some(_) => info.tablespaces().map_err(broken)?,
        None => shown.tablespaces.clone(),
    };
    Ok(BackupFacts {
        backup_id: id.clone(),
        backup_name: info
            .get("backup_name")
            .map(str::to_string)
            .or_else(|| shown.backup_name.clone()),
        server: server.to_string(),
        pg_version: info
            .number("version")
            .map_err(broken)?
            .or(shown.pg_version)
            .ok_or_else(|| missing("version"))?,
        size_bytes: info
            .number("size")
            .map_err(broken)?
            .or(shown.size_bytes)
            .ok_or_else(|| missing("size"))?,
        timeline: info
            .number("timeline")
            .map_err(broken)?
            .or(shown.timeline)
            .ok_or_else(|| missing("timeline"))?,
        begin_wal: info
            .get("begin_wal")
            .map(str::to_string)
            .or_else(|| shown.begin_wal.clone())
            .ok_or_else(|| missing("begin_wal"))?,
        end_wal: info
            .get("end_wal")
            .map(str::to_string)
            .or_else(|| shown.end_wal.clone())
            .ok_or_else(|| missing("end_wal"))?,
        system_id: info
            .get("systemid")
            .map(str::to_string)
            .or_else(|| shown.system_id.clone()),
        tablespaces,
        backup_dir,
        wals_directory,
        data_subdir,
        has_manifest: probe.has_manifest,
    })
}

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

#[cfg(test)]
mod tests {
    use super::*;

    macro_rules! fixture {
        ($path:literal) => {
            include_str!(concat!("../../tests/fixtures/barman/", $path))
        };
    }

    fn client() -> Barman {
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

    fn shown(server: &str, text: &str) -> ShowBackup {
        catalogue::parse_show_backup(server, &serde_json::from_str(text).expect("JSON"))
            .expect("parses")
    }

    fn dirs(home: &str) -> ServerDirs {
        ServerDirs {
            backup_directory: format!("{home}/pg"),
            basebackups_directory: format!("{home}/pg/base"),
            wals_directory: format!("{home}/pg/wals"),
            backup_method: Some("postgres".into()),
            backup_compression: None,
        }
    }

    fn probe(info: &str) -> Probe {
        Probe::parse(&format!("dir data\nmanifest\ninfo\n{info}")).expect("probe output parses")
    }

    #[test]
    fn argv_shapes() {
        let b = client();
        assert_eq!(
            b.ssh_argv(),
            [
                "ssh",
                "-o",
                "BatchMode=yes",
                "-p",
                "2222",
                "-i",
                "/keys/my key",
                "--",
                "barman@barmansrv"
            ]
        );
        assert_eq!(
            b.rsync_rsh(),
            "ssh -o BatchMode=yes -p 2222 -i '/keys/my key'"
        );
        assert_eq!(
            b.barman_argv(&["show-backup", "pg", "latest"]),
            [
                "barman",
                "--config=/etc/barman it's.conf",
                "show-backup",
                "pg",
                "latest"
            ]
        );
        let argv = b.command_argv(&b.barman_argv(&["--version"]));
        assert_eq!(
            argv.last().map(String::as_str),
            Some("barman '--config=/etc/barman it'\\''s.conf' --version")
        );
        let local = b
            .clone()
            .with_transport(Transport::Local(vec!["sh".into(), "-c".into()]));
        assert_eq!(
            local.command_argv(&["echo", "a b"]),
            ["sh", "-c", "echo 'a b'"]
        );
        let plain = Barman::new("h", "pg", None, vec![]).with_timeout(Duration::from_secs(5));
        assert_eq!(
            plain.barman_argv(&["list-backups", "pg"]),
            ["barman", "list-backups", "pg"]
        );
        assert_eq!(plain.timeout, Duration::from_secs(5));
        let target = BarmanTarget {
            host: "b@h".into(),
            server: "pg".into(),
            config: None,
        };
        assert_eq!(
            Barman::from_target(&target, &[]).ssh_argv(),
            ["ssh", "-o", "BatchMode=yes", "--", "b@h"]
        );
    }

    #[test]
    fn option_like_values_are_refused() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let mut b = client();
        b.host = "-oProxyCommand=evil".into();
        let err = rt.block_on(b.version()).expect_err("refused");
        assert_eq!(err.kind, ErrorKind::Config);
        let mut b = client();
        b.server = "--help".into();
        assert_eq!(
            rt.block_on(b.show_server()).expect_err("refused").kind,
            ErrorKind::Config
        );
        let err = rt
            .block_on(client().resolve_backup("-x"))
            .expect_err("refused");
        assert_eq!(err.kind, ErrorKind::Config);
    }

    /// The real ssh client against a closed port: the error the operator sees when the Barman
    /// host's sshd is down.
    #[test]
    fn real_ssh_to_a_closed_port_is_a_retryable_ssh_error() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        // Port 1 on loopback: nothing listens there, so the kernel refuses at once.
        let b = Barman::new(
            "barman@127.0.0.1",
            "pg",
            None,
            vec!["-F".into(), "/dev/null".into(), "-p".into(), "1".into()],
        );
        let err = rt
            .block_on(b.check_reachable())
            .expect_err("nothing listens on port 1");
        assert_eq!(err.kind, ErrorKind::Ssh, "{err:?}");
        assert_eq!(err.exit_code(), 12);
        assert!(err.retryable, "a refused connection may succeed later");
        assert!(
            err.message.contains("Connection refused"),
            "{}",
            err.message
        );
        let hint = err.hint.as_deref().unwrap_or("");
        assert!(
            hint.contains(
                "ssh -o BatchMode=yes -F /dev/null -p 1 -- barman@127.0.0.1 'barman --version'"
            ),
            "{hint}"
        );
    }

    #[test]
    fn facts_from_real_340_backup() {
        let shown = shown(
            "pg",
            fixture!("3.4.0/show-backup-20261125T150710.json.stdout"),
        );
        let facts = facts_from(
            "pg",
            &dirs("/tmp/bmcap/bh34"),
            &shown,
            &probe(fixture!("3.4.0/backup.info-20261125T150710")),
        )
        .expect("restorable");
        assert_eq!(
            facts,
            BackupFacts {
                backup_id: "20261125T150710".into(),
                backup_name: None,
                server: "pg".into(),
                pg_version: 150018,
                size_bytes: 23196062,
                timeline: 1,
                begin_wal: "000000010000000000000003".into(),
                end_wal: "000000010000000000000003".into(),
                system_id: Some("7712125799867076052".into()),
                tablespaces: vec![states::Tablespace {
                    name: "tbs1".into(),
                    oid: 16386,
                    location: "/tmp/bmcap/tbs1".into()
                }],
                backup_dir: "/tmp/bmcap/bh34/pg/base/20261125T150710".into(),
                wals_directory: "/tmp/bmcap/bh34/pg/wals".into(),
                data_subdir: "data".into(),
                has_manifest: true,
            }
        );
        assert_eq!(
            data_dir(&facts),
            "/tmp/bmcap/bh34/pg/base/20261125T150710/data"
        );
        assert_eq!(
            tablespace_dir(&facts, 16386),
            "/tmp/bmcap/bh34/pg/base/20261125T150710/16386"
        );
    }

    #[test]
    fn facts_from_real_3191_backup() {
        let shown = shown("pg", fixture!("3.19.1/show-backup-named.json.stdout"));
        let facts = facts_from(
            "pg",
            &dirs("/tmp/bmcap/bh319"),
            &shown,
            &probe(fixture!("3.19.1/20261125T150740-backup.info")),
        )
        .expect("restorable");
        assert_eq!(facts.backup_name.as_deref(), Some("named 319"));
        assert_eq!(facts.size_bytes, 23195442);
        assert_eq!(facts.begin_wal, "000000010000000000000007");
        assert_eq!(facts.tablespaces.len(), 1);
        let latest = shown_latest_3191();
        let facts = facts_from(
            "pg",
            &dirs("/tmp/bmcap/bh319"),
            &latest,
            &probe(fixture!("3.19.1/20261125T150747-backup.info")),
        )
        .expect("restorable");
        assert!(facts.tablespaces.is_empty());
        assert_eq!(facts.end_wal, "00000001000000000000000D");
    }

    fn shown_latest_3191() -> ShowBackup {
        shown("pg", fixture!("3.19.1/show-backup-latest.json.stdout"))
    }

    #[test]
    fn real_tar_backup_is_refused() {
        let shown = shown("pgtar", fixture!("3.19.1/show-backup-pgtar.json.stdout"));
        let probe = Probe::parse(&format!(
            "dir data\nmanifest\ntar\ninfo\n{}",
            fixture!("3.19.1/pgtar-20261125T150741-backup.info")
        ))
        .expect("parses");
        let refusal = facts_from("pgtar", &dirs("/b"), &shown, &probe).expect_err("tar refused");
        let err = refusal.into_error(&client());
        assert_eq!(err.kind, ErrorKind::Barman);
        assert_eq!(err.exit_code(), 19);
        err.assert_says(
            "tar-format backup (compression gzip)",
            "--replication-conf-only",
        );
        err.assert_says("", "list-backups");
    }

    #[test]
    fn encrypted_incremental_snapshot_and_broken_backups_are_refused() {
        let base = fixture!("3.19.1/20261125T150747-backup.info");
        let message = |r: Result<BackupFacts, Refusal>| match r.expect_err("refused") {
            Refusal::Unrestorable { message, .. } | Refusal::Broken(message) => message,
        };
        let gpg = Probe::parse(&format!("dir data\ngpg\ninfo\n{base}")).expect("parses");
        assert!(
            message(facts_from("pg", &dirs("/b"), &shown_latest_3191(), &gpg))
                .contains("encrypted")
        );
        let incremental = BackupInfo::parse(
            &base.replace("parent_backup_id=None", "parent_backup_id=20261125T150740"),
        )
        .expect("parses");
        let probe = Probe {
            data_subdir: Some("data".into()),
            info: Some(incremental),
            ..Probe::default()
        };
        let refused = facts_from("pg", &dirs("/b"), &shown_latest_3191(), &probe)
            .expect_err("incremental refused");
        assert!(
            matches!(&refused, Refusal::Unrestorable { message, .. } if message.contains("incremental backup (parent 20261125T150740)"))
        );
        let snapshot =
            BackupInfo::parse(&base.replace("mode=postgres", "mode=snapshot-gcp")).expect("parses");
        let probe = Probe {
            data_subdir: Some("data".into()),
            info: Some(snapshot),
            ..Probe::default()
        };
        assert!(
            message(facts_from("pg", &dirs("/b"), &shown_latest_3191(), &probe))
                .contains("snapshot")
        );
        let no_data = Probe {
            info: BackupInfo::parse(base).ok(),
            ..Probe::default()
        };
        let refused =
            facts_from("pg", &dirs("/b"), &shown_latest_3191(), &no_data).expect_err("no data dir");
        assert!(matches!(&refused, Refusal::Broken(m) if m.contains("no data directory")));
        assert_eq!(refused.into_error(&client()).kind, ErrorKind::Barman);
        let bad_version =
            BackupInfo::parse(&base.replace("version=150018", "version=fifteen")).expect("parses");
        let probe = Probe {
            data_subdir: Some("data".into()),
            info: Some(bad_version),
            ..Probe::default()
        };
        assert!(
            message(facts_from("pg", &dirs("/b"), &shown_latest_3191(), &probe))
                .contains("version=fifteen")
        );
    }

    #[test]
    fn probe_output_and_legacy_layout() {
        let p = Probe::parse("dir data\ndir pgdata\ninfo\nstatus=DONE\nmode=rsync-exclusive\n")
            .expect("parses");
        assert_eq!(p.data_subdir.as_deref(), Some("pgdata"));
        assert!(!p.has_manifest);
        assert!(Probe::parse("dir data\nnoinfo\n")
            .expect_err("no info")
            .contains("no backup.info"));
        assert!(Probe::parse("dir data\n").is_err());
        assert!(Probe::parse("surprise\n").is_err());
        let legacy = BackupFacts {
            backup_dir: "/b/base/X".into(),
            data_subdir: "pgdata".into(),
            ..BackupFacts::default()
        };
        assert_eq!(
            tablespace_dir(&legacy, 16400),
            "/b/base/X/pgdata/pg_tblspc/16400"
        );
        assert_eq!(data_dir(&legacy), "/b/base/X/pgdata");
    }

    /// Runs the real probe script through `sh` on a catalogue laid out on disk in both layouts,
    /// with a path that needs quoting.
    #[test]
    fn probe_script_on_real_directories() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let home = tmp.path().join("it's $HOME; a dir");
        let id = "20261125T150740";
        let bb = home.join("pg/base");
        std::fs::create_dir_all(bb.join(id).join("data")).expect("mkdir");
        std::fs::write(bb.join(id).join("data/backup_manifest"), "{}").expect("write");
        std::fs::write(bb.join(id).join("backup.info"), "status=DONE\nsize=1\n").expect("write");
        let b = Barman::new("local", "pg", None, vec![])
            .with_transport(Transport::Local(vec!["sh".into(), "-c".into()]));
        let d = ServerDirs {
            backup_directory: home.join("pg").to_str().expect("utf-8").into(),
            basebackups_directory: bb.to_str().expect("utf-8").into(),
            ..ServerDirs::default()
        };
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let legacy_place = rt.block_on(b.probe(&d, id)).expect("probe runs");
        assert_eq!(legacy_place.data_subdir.as_deref(), Some("data"));
        assert!(legacy_place.has_manifest && !legacy_place.tar && !legacy_place.gpg);
        assert_eq!(
            legacy_place.info.as_ref().and_then(|i| i.get("size")),
            Some("1")
        );
        // 3.13.2+ layout wins when both exist; tar and gpg files are noticed.
        std::fs::create_dir_all(home.join("pg/meta")).expect("mkdir");
        std::fs::write(
            home.join(format!("pg/meta/{id}-backup.info")),
            "status=DONE\nsize=2\n",
        )
        .expect("write");
        std::fs::write(bb.join(id).join("data/base.tar.gpg"), "").expect("write");
        let meta = rt.block_on(b.probe(&d, id)).expect("probe runs");
        assert_eq!(meta.info.as_ref().and_then(|i| i.get("size")), Some("2"));
        assert!(meta.tar && meta.gpg);
        let err = rt
            .block_on(b.probe(&d, "20000101T000000"))
            .expect_err("no such backup");
        assert_eq!(err.kind, ErrorKind::Barman);
        assert!(err.message.contains("backup.info"), "{}", err.message);
    }
}
