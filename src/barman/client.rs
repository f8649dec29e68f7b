//! The Barman client: [`Barman`] (the host, server and options from repmgr.conf), how its
//! commands reach the host ([`Transport`]), and the catalogue calls — `show-server`,
//! `list-backups`, `show-backup`, [`Barman::resolve_backup`] and [`Barman::list_files`].
//!
//! Every remote command is an argument vector rendered by [`quote`](super::quote) and run by
//! [`exec`](super::exec) with the client's timeout; Barman's JSON replies are read by
//! [`catalogue`](super::catalogue).
//!
//! Must not: decide whether a backup can be restored with rsync (that is
//! `restorability`), or paste any value into a shell string unquoted.

use std::time::Duration;

use serde_json::Value;
use states::{BackupFacts, BarmanTarget, ManifestEntry, Tablespace};

use super::catalogue::{self, BackupSummary, ServerDirs, ShowBackup, ShowServerError};
use super::direct::{self, DirectCatalogue, Reading};
use super::mux::{Multiplexing, Role};
use super::restorability::{facts_from, member_from, parent_of};
use super::{exec, files, quote, RemoteOutput};
use crate::error::{Error, ErrorKind, Result};

/// The longest incremental chain pgreplica follows: far beyond what anyone takes between two
/// full backups, short enough that a cycle in a damaged catalogue ends quickly.
const MAX_CHAIN: usize = 100;

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
    pub fn for_request(request: &states::CloneRequest) -> Result<Barman> {
        let target = request
            .barman
            .as_ref()
            .ok_or_else(|| Error::bug("Barman mode without barman_host in the request"))?;
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

    /// `ssh -o BatchMode=yes <time limits> <ssh_options…> -- <host>`: the prefix of every remote
    /// command. BatchMode makes a missing key fail at once instead of waiting at a password
    /// prompt; the time limits keep a dead host from hanging it; `--` keeps the host from ever
    /// being read as an option. In a run it uses the shared connection but never starts it
    /// ([`Role::Client`]): the commands built from it run under a guardian, which would wait for
    /// a master it forked.
    pub fn ssh_argv(&self) -> Vec<String> {
        self.ssh_argv_as(Role::Client)
    }

    fn ssh_argv_as(&self, role: Role) -> Vec<String> {
        let mut argv = self.ssh_command(role);
        argv.push("--".to_string());
        argv.push(self.host.clone());
        argv
    }

    /// The ssh command for `rsync -e`, rendered for rsync's own argument splitting: the same
    /// program and options as [`Barman::ssh_argv`], without the host (rsync appends it).
    pub fn rsync_rsh(&self) -> String {
        quote::rsync_join(&self.ssh_command(Role::Client))
    }

    /// `ssh -o BatchMode=yes`, the time limits of [`ssh::DEFAULTS`](super::ssh::DEFAULTS) that
    /// `ssh_options` does not set, the ciphers pgreplica prefers when nothing else chooses
    /// ([`Barman::cipher_choice`]), `ssh_options`, then the run's shared connection
    /// ([`Barman::multiplexing`]) in `role`.
    fn ssh_command(&self, role: Role) -> Vec<String> {
        let mut argv = vec![
            "ssh".to_string(),
            "-o".to_string(),
            "BatchMode=yes".to_string(),
        ];
        argv.extend(super::ssh::default_args(&self.ssh_options));
        argv.extend(self.cipher_choice().args());
        argv.extend(self.ssh_options.iter().cloned());
        // After ssh_options: for an option given twice ssh takes the first.
        argv.extend(self.multiplexing().args(role));
        argv
    }

    /// Whether this client's ssh shares the run's connection (see [`mux`](super::mux)).
    pub fn multiplexing(&self) -> Multiplexing {
        Multiplexing::decide(
            &self.host,
            &self.ssh_options,
            super::mux::control_dir().as_deref(),
        )
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
        self.command_argv_as(remote, Role::Client)
    }

    fn command_argv_as<S: AsRef<str>>(&self, remote: &[S], role: Role) -> Vec<String> {
        let mut argv = match &self.transport {
            Transport::Ssh => self.ssh_argv_as(role),
            Transport::Local(launcher) => launcher.clone(),
        };
        argv.push(quote::shell_join(remote));
        argv
    }

    /// A command line the operator can paste to run `args` of barman by hand, for hints.
    pub(crate) fn manual_command(&self, args: &[&str]) -> String {
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
        // pgreplica waits for this ssh itself: it may start the run's shared connection.
        exec::run(
            &self.command_argv_as(remote, Role::Master),
            self.timeout,
            &target,
        )
        .await
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
        let hint = if reason.starts_with("Unknown server") {
            format!(
                "set barman_server in repmgr.conf to a server Barman knows (and barman_config if it uses a non-default configuration); see: {}",
                self.manual_command(&["list-servers"])
            )
        } else {
            format!(
                "run it by hand to see Barman's full output: {}",
                self.manual_command(&["check", &self.server])
            )
        };
        let err = Error::new(
            ErrorKind::Barman,
            format!("Barman on \"{}\" failed to {what}: {reason}", self.host),
        )
        .hint(hint);
        let detail = [errors.join("\n"), reply.stderr.trim().to_string()]
            .into_iter()
            .filter(|s| !s.is_empty())
            .collect::<Vec<_>>()
            .join("\n");
        if detail.is_empty() {
            err
        } else {
            err.detail(exec::output_detail(&detail))
        }
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
    /// backup, classifies its kind (plain, tar, encrypted, an incremental chain, followed to its
    /// full backup) and returns its facts.
    ///
    /// The catalogue is read directly first ([`direct`]: one ssh round trip, no Barman
    /// process); where that read cannot be trusted, Barman is asked (`show-server` and
    /// `show-backup`, each a Python process on the host, then one probe per backup), and its
    /// answers and refusals stand.
    ///
    /// Refused with [`ErrorKind::Barman`]: unknown backup, status other than DONE (the chain's
    /// members included), a catalogue in the cloud, snapshot backups, an unknown compression or
    /// encryption, a backup directory without data, a chain without its full backup.
    pub async fn resolve_backup(&self, selector: &str) -> Result<BackupFacts> {
        if selector.is_empty() || selector.starts_with('-') {
            return Err(Error::new(ErrorKind::Config, format!("\"{selector}\" is not a backup id, name or shortcut"))
                .hint("use --backup-id latest, oldest, a backup id such as 20261125T061436, or a backup name"));
        }
        match self.resolve_backup_directly(selector).await? {
            Ok(facts) => Ok(facts),
            Err(why) => {
                crate::info!("asking Barman on \"{}\" for backup \"{selector}\" (its catalogue could not be read directly: {why})", self.host);
                self.resolve_backup_with_barman(selector).await
            }
        }
    }

    /// [`Barman::resolve_backup`] from the catalogue read directly, and only so: `Ok(Err(why))`
    /// when that read cannot be trusted (the selector is not checked here).
    pub async fn resolve_backup_directly(
        &self,
        selector: &str,
    ) -> Result<std::result::Result<BackupFacts, String>> {
        let pinned = self
            .read_catalogue()
            .await?
            .and_then(|catalogue| Ok((catalogue.pin(selector, MAX_CHAIN)?, catalogue)));
        let (shown, catalogue) = match pinned {
            Ok(pinned) => pinned,
            Err(why) => return Ok(Err(why)),
        };
        crate::debug!(
            "read Barman's catalogue of \"{}\" directly on \"{}\": backup {}",
            self.server,
            self.host,
            shown.backup_id
        );
        self.classify(&catalogue.dirs, &shown, Some(&catalogue))
            .await
            .map(Ok)
    }

    /// [`Barman::resolve_backup`] through Barman's own commands, as before the direct read:
    /// `show-server` and `show-backup` (each a Python process on the host), then one probe per
    /// backup of the chain.
    pub async fn resolve_backup_with_barman(&self, selector: &str) -> Result<BackupFacts> {
        // Each is a Barman process (Python) starting on the host: ask both at once.
        let (dirs, shown) = tokio::join!(self.show_server(), self.show_backup(selector));
        self.classify(&dirs?, &shown?, None).await
    }

    /// Reads the server's catalogue with [`direct::CATALOGUE_SCRIPT`]: once where Barman's
    /// defaults put it, once more where the configuration does if that differs. The outer
    /// error is the transport's (ssh failed: asking Barman would fail too); the inner one says
    /// why the direct read cannot be trusted.
    pub(super) async fn read_catalogue(&self) -> Result<Result<DirectCatalogue, String>> {
        let mut dirs = [String::new(), String::new(), String::new()];
        for _ in 0..2 {
            let config = self.config.as_deref().unwrap_or("");
            let mut remote = vec![
                "sh",
                "-c",
                direct::CATALOGUE_SCRIPT,
                "pgreplica-catalogue",
                config,
                &self.server,
            ];
            remote.extend(dirs.iter().map(String::as_str));
            let out = self.run(&remote).await?;
            if out.status != 0 {
                return Ok(Err(format!(
                    "the catalogue script exited with status {}: {}",
                    out.status,
                    out.stderr.trim()
                )));
            }
            let reading = direct::ScriptOutput::parse(&out.stdout_text())
                .and_then(|output| direct::judge(output, &self.server));
            match reading {
                Ok(Reading::Ready(catalogue)) => return Ok(Ok(catalogue)),
                Ok(Reading::Again(elsewhere)) if dirs[0].is_empty() => dirs = elsewhere,
                Ok(Reading::Again(_)) => break,
                Err(why) => return Ok(Err(why)),
            }
        }
        Ok(Err("the configuration moved while it was read".into()))
    }

    /// The rest of [`Barman::resolve_backup`] once the backup is pinned: its status, its
    /// chain (members probed on the host, or found in `catalogue` when it was read directly)
    /// and its facts.
    async fn classify(
        &self,
        dirs: &ServerDirs,
        shown: &ShowBackup,
        catalogue: Option<&DirectCatalogue>,
    ) -> Result<BackupFacts> {
        if shown.status != "DONE" {
            return Err(Error::new(
                ErrorKind::Barman,
                format!("backup {} of Barman server \"{}\" has status {}; only a DONE backup can be restored", shown.backup_id, self.server, shown.status),
            )
            .hint(self.choose_another_hint()));
        }
        let probe_of = |id: String| async move {
            match catalogue {
                Some(catalogue) => catalogue.probe(&id).cloned().ok_or_else(|| {
                    Error::bug(format!("backup {id} vanished from the catalogue read"))
                }),
                None => self.probe(dirs, &id).await,
            }
        };
        let probe = probe_of(shown.backup_id.clone()).await?;
        // An incremental backup: follow parent_backup_id to the full backup, one probe per
        // member (a chain is a handful of backups; a cycle would be a broken catalogue).
        let mut parents = Vec::new();
        let mut parent = parent_of(&probe);
        while let Some(id) = parent {
            if parents.len() >= MAX_CHAIN || id == shown.backup_id {
                return Err(Error::new(
                    ErrorKind::Barman,
                    format!("the incremental chain of backup {} does not end in a full backup within {MAX_CHAIN} backups", shown.backup_id),
                )
                .hint(self.choose_another_hint()));
            }
            let member_probe = probe_of(id.clone()).await?;
            parent = parent_of(&member_probe);
            parents.push(
                member_from(&self.server, dirs, &id, &member_probe)
                    .map_err(|refusal| refusal.into_error(self))?,
            );
        }
        parents.reverse();
        facts_from(&self.server, dirs, shown, &probe, parents)
            .map_err(|refusal| refusal.into_error(self))
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
        let data_dir = (root == 0).then_some(&facts.tablespaces[..]);
        self.list_tree(&facts.backup_id, root, remote_dir, data_dir)
            .await
    }

    /// The files of the tree at `remote_dir` of backup `backup_id`, as entries of `root`. A
    /// data directory (`data_dir` names its backup's tablespaces) leaves out what a restore
    /// must not carry and must hold `global/pg_control`; any other tree is taken whole.
    pub async fn list_tree(
        &self,
        backup_id: &str,
        root: u32,
        remote_dir: &str,
        data_dir: Option<&[Tablespace]>,
    ) -> Result<Vec<ManifestEntry>> {
        let out = self.run(&files::find_command(remote_dir)).await?;
        if out.status != 0 {
            return Err(Error::new(
                ErrorKind::Barman,
                format!("cannot list {remote_dir} of backup {backup_id} on the Barman host \"{}\"", self.host),
            )
            .detail(exec::output_detail(&out.stderr))
            .hint(format!(
                "check that the backup still exists (a retention policy may have deleted it) and that GNU find is installed there: {}",
                self.manual_command(&["list-backups", &self.server])
            )));
        }
        let entries = files::parse_find_output(&out.stdout, root, data_dir).map_err(|why| {
            Error::new(
                ErrorKind::Barman,
                format!(
                    "cannot read the file list of {remote_dir} on \"{}\": {why}",
                    self.host
                ),
            )
            .hint(format!(
                "the list needs GNU find on the Barman host and UTF-8 file names: check the first with \"{}\"; for the second, {}",
                quote::shell_join(&self.command_argv(&["find", "--version"])),
                self.choose_another_hint()
            ))
        })?;
        if data_dir.is_some() && !entries.iter().any(|e| e.path == "global/pg_control") {
            return Err(Error::new(
                ErrorKind::Barman,
                format!("{remote_dir} on the Barman host \"{}\" is not a PostgreSQL data directory (no global/pg_control)", self.host),
            )
            .hint(self.choose_another_hint()));
        }
        Ok(entries)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::barman::fixture_client as client;

    #[test]
    fn argv_shapes() {
        let b = client();
        // The cipher choice depends on this machine's CPU and ssh configuration: tested in
        // `ssh`; here, where its arguments go (after the time limits, before ssh_options).
        let ciphers = b.cipher_choice().args();
        let mut expected: Vec<String> = [
            "ssh",
            "-o",
            "BatchMode=yes",
            "-o",
            "ConnectTimeout=10",
            "-o",
            "ServerAliveInterval=15",
            "-o",
            "ServerAliveCountMax=3",
        ]
        .map(String::from)
        .to_vec();
        expected.extend(ciphers.iter().cloned());
        expected.extend(["-p", "2222", "-i", "/keys/my key"].map(String::from));
        assert_eq!(b.rsync_rsh(), quote::rsync_join(&expected));
        expected.extend(["--", "barman@barmansrv"].map(String::from));
        assert_eq!(b.ssh_argv(), expected);
        assert!(b.rsync_rsh().starts_with(
            "ssh -o BatchMode=yes -o ConnectTimeout=10 -o ServerAliveInterval=15 \
             -o ServerAliveCountMax=3"
        ));
        assert!(b.rsync_rsh().ends_with(" -p 2222 -i '/keys/my key'"));
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
        let own_limits: Vec<String> = [
            "-o",
            "ConnectTimeout=3",
            "-o",
            "ServerAliveInterval=1",
            "-o",
            "ServerAliveCountMax=2",
        ]
        .map(String::from)
        .to_vec();
        let own = Barman::from_target(&target, &own_limits);
        let ciphers = own.cipher_choice().args();
        let ciphers = ciphers.iter().map(|a| format!(" {a}")).collect::<String>();
        assert_eq!(
            own.ssh_argv().join(" "),
            format!(
                "ssh -o BatchMode=yes{ciphers} -o ConnectTimeout=3 -o ServerAliveInterval=1 \
                 -o ServerAliveCountMax=2 -- b@h"
            )
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
        err.assert_says(
            "barman_host \"-oProxyCommand=evil\" is not an ssh destination",
            "barman_host='barman@barmansrv'",
        );
        let mut b = client();
        b.server = "--help".into();
        let err = rt.block_on(b.show_server()).expect_err("refused");
        assert_eq!(err.kind, ErrorKind::Config);
        err.assert_says(
            "barman_server \"--help\" is not a Barman server name",
            "barman_server='pg'",
        );
        let mut b = client();
        b.server = "pg main".into();
        let err = rt.block_on(b.list_backups()).expect_err("refused");
        assert!(err.message.contains("\"pg main\""), "{}", err.message);
        let err = rt
            .block_on(client().resolve_backup("-x"))
            .expect_err("refused");
        assert_eq!(err.kind, ErrorKind::Config);
        err.assert_says(
            "\"-x\" is not a backup id, name or shortcut",
            "--backup-id latest",
        );
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
        let ciphers = b.cipher_choice().args();
        let ciphers = ciphers.iter().map(|a| format!(" {a}")).collect::<String>();
        assert!(
            hint.contains(&format!(
                "ssh -o BatchMode=yes -o ConnectTimeout=10 -o ServerAliveInterval=15 -o ServerAliveCountMax=3{ciphers} -F /dev/null -p 1 -- barman@127.0.0.1 'barman --version'"
            )),
            "{hint}"
        );
    }
}
