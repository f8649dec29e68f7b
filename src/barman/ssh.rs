//! The ssh client's options that keep a dead Barman host from hanging a clone, the cipher
//! pgreplica prefers, and what the operator's `ssh_options` make ssh run.
//!
//! Without `ConnectTimeout`, a host that drops packets holds each connection attempt for the
//! kernel's TCP timeout (minutes), and without keep-alives a network that goes quiet in the
//! middle of a transfer holds ssh (and the rsync over it) forever. pgreplica therefore adds
//! [`DEFAULTS`] to every ssh it starts — unless `ssh_options` sets the option itself, which
//! always wins — so a dead peer is noticed within about a minute.
//!
//! On 2 cores ssh's encryption at both ends is what limits a copy, and OpenSSH offers
//! chacha20-poly1305 first: where this host's CPU has AES instructions, pgreplica offers AES-GCM
//! first instead ([`AES_GCM_FIRST`]) — both are modern AEAD ciphers, AES-GCM is the faster one
//! with AES instructions — unless `ssh_options` or the ssh configuration choose the ciphers
//! themselves ([`CipherChoice`], decided once per host and options and shown by `--dry-run`).
//!
//! `ssh_options` is trusted like `~/.ssh/config`: options such as `ProxyCommand` or
//! `LocalCommand` run commands on this host whenever ssh connects, `--dry-run` included.
//! [`Barman::local_commands`] says which (from `ssh -G`, so `~/.ssh/config` and `-F` files count
//! too), for the dry run to report.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use super::Barman;
use crate::error::{Error, ErrorKind, Result};

/// ssh options pgreplica sets unless `ssh_options` does: give up on a host that does not
/// answer within 10 s, and on a connection that stays silent for 3 keep-alives 15 s apart (45
/// to 60 s).
pub const DEFAULTS: [(&str, &str); 3] = [
    ("ConnectTimeout", "10"),
    ("ServerAliveInterval", "15"),
    ("ServerAliveCountMax", "3"),
];

/// Whether a remote shell command (rsync's `-e`, e.g. repmgr's default `--rsh=ssh` in
/// `rsync_options`) runs the ssh client, as pgreplica's own rsyncs do.
pub fn runs_ssh(command: &str) -> bool {
    let program = command.split_whitespace().next().unwrap_or("");
    program.rsplit('/').next() == Some("ssh")
}

/// The ssh settings (as `ssh -G` names them, lower case) that make ssh run a command on this
/// host, with what makes each one run.
const COMMANDS: [(&str, &str); 4] = [
    ("proxycommand", "ProxyCommand"),
    ("proxyjump", "ProxyJump (another ssh)"),
    ("localcommand", "LocalCommand"),
    ("knownhostscommand", "KnownHostsCommand"),
];

/// How long `ssh -G` may take (it reads configuration files only).
const CONFIG_TIMEOUT: Duration = Duration::from_secs(10);

/// The ciphers pgreplica offers, in this order, where the CPU has AES instructions: AES-GCM
/// first, then OpenSSH's own defaults, so a server that has no AES-GCM still agrees on one.
/// Every one of them exists since OpenSSH 6.5.
pub const AES_GCM_FIRST: &str = "aes128-gcm@openssh.com,aes256-gcm@openssh.com,\
chacha20-poly1305@openssh.com,aes128-ctr,aes192-ctr,aes256-ctr";

/// Which ciphers ssh offers the Barman host, and who chose them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CipherChoice {
    /// pgreplica adds `-o Ciphers=`[`AES_GCM_FIRST`]: the CPU has AES instructions and nothing
    /// else chose.
    AesGcmFirst,
    /// `ssh_options` choose (`-c …` or `-o Ciphers=…`).
    SshOptions,
    /// The ssh configuration (`~/.ssh/config`, `/etc/ssh/ssh_config`, a `-F` file) chooses:
    /// its list, as `ssh -G` tells it.
    SshConfig(String),
    /// This CPU has no AES instructions: ssh's own order (chacha20-poly1305 first) is faster.
    NoAes,
    /// `ssh -G` could not say what the configuration chooses (the reason): ssh's own choice,
    /// untouched.
    Unknown(String),
}

impl CipherChoice {
    /// The choice for `ssh_options`, the ciphers the ssh configuration sets (`None` when it
    /// keeps ssh's built-in list; `Err` when `ssh -G` could not tell) and whether this CPU has
    /// AES instructions.
    pub fn decide(
        ssh_options: &[String],
        configured: std::result::Result<Option<String>, String>,
        cpu_has_aes: bool,
    ) -> CipherChoice {
        if sets_ciphers(ssh_options) {
            return CipherChoice::SshOptions;
        }
        match configured {
            Err(reason) => CipherChoice::Unknown(reason),
            Ok(Some(list)) => CipherChoice::SshConfig(list),
            Ok(None) if cpu_has_aes => CipherChoice::AesGcmFirst,
            Ok(None) => CipherChoice::NoAes,
        }
    }

    /// The ssh arguments the choice adds: `-o Ciphers=…` for [`CipherChoice::AesGcmFirst`],
    /// nothing otherwise.
    pub fn args(&self) -> Vec<String> {
        match self {
            CipherChoice::AesGcmFirst => vec!["-o".to_string(), format!("Ciphers={AES_GCM_FIRST}")],
            _ => Vec::new(),
        }
    }

    /// What `--dry-run` says of the choice.
    pub fn describe(&self) -> String {
        match self {
            CipherChoice::AesGcmFirst => {
                "AES-GCM offered first (aes128-gcm@openssh.com): this CPU has AES instructions and neither ssh_options nor the ssh configuration choose ciphers".to_string()
            }
            CipherChoice::SshOptions => "as ssh_options choose".to_string(),
            CipherChoice::SshConfig(list) => {
                format!("as the ssh configuration chooses ({list})")
            }
            CipherChoice::NoAes => {
                "ssh's default (chacha20-poly1305 first): this CPU has no AES instructions"
                    .to_string()
            }
            CipherChoice::Unknown(reason) => format!("ssh's default ({reason})"),
        }
    }
}

/// Whether `ssh_options` choose the ciphers: `-c LIST`, `-cLIST` or `-o Ciphers=…`.
fn sets_ciphers(ssh_options: &[String]) -> bool {
    ssh_options.iter().any(|word| word.starts_with("-c"))
        || option_names(ssh_options)
            .iter()
            .any(|name| name == "ciphers")
}

/// Whether this host's CPU has AES instructions (AES-NI and carry-less multiplication on x86,
/// the AES extension on ARM): what makes AES-GCM faster than chacha20-poly1305.
pub fn cpu_has_aes() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("aes")
            && std::arch::is_x86_feature_detected!("pclmulqdq")
    }
    #[cfg(target_arch = "aarch64")]
    {
        std::arch::is_aarch64_feature_detected!("aes")
    }
    #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
    {
        false
    }
}

/// `ssh <args> -G -- <host>`, started: its `ciphers` line comes from [`CiphersProbe::ciphers`].
struct CiphersProbe {
    pid: u32,
    output: std::sync::mpsc::Receiver<std::io::Result<std::process::Output>>,
}

impl CiphersProbe {
    fn start(args: &[&str], host: &str) -> std::result::Result<CiphersProbe, String> {
        let child = Command::new("ssh")
            .args(args)
            .args(["-G", "--", host])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("cannot run ssh -G: {e}"))?;
        // `Match exec` lines run commands: bound the wait as for every other ssh. The waiting
        // thread hands the output over; past the bound the child is killed, which ends it.
        let pid = child.id();
        let (sender, output) = std::sync::mpsc::channel();
        std::thread::spawn(move || sender.send(child.wait_with_output()));
        Ok(CiphersProbe { pid, output })
    }

    /// The `ciphers` line ssh printed.
    fn ciphers(self) -> std::result::Result<String, String> {
        let output = match self.output.recv_timeout(CONFIG_TIMEOUT) {
            Ok(output) => output.map_err(|e| e.to_string())?,
            Err(_) => {
                // SAFETY: kill(2) on the pid of our own child, which the waiting thread has not
                // reaped after 10 s of waiting (unless it exited at this very instant).
                unsafe { libc::kill(self.pid as libc::pid_t, libc::SIGKILL) };
                return Err("ssh -G did not answer".to_string());
            }
        };
        if !output.status.success() {
            return Err("ssh -G refused the options".to_string());
        }
        String::from_utf8_lossy(&output.stdout)
            .lines()
            .find_map(|line| line.strip_prefix("ciphers ").map(str::to_string))
            .ok_or_else(|| "ssh -G printed no ciphers".to_string())
    }
}

/// The ciphers the ssh configuration sets for `host` with `ssh_options`: `None` when they are
/// ssh's built-in list. Where no configuration file ssh reads names `Ciphers`
/// ([`config_names_ciphers`]), that is known without running ssh; otherwise
/// [`ciphers_by_ssh`] asks ssh itself.
fn configured_ciphers(
    host: &str,
    ssh_options: &[String],
) -> std::result::Result<Option<String>, String> {
    let homes = user_config_dirs();
    let user_files: Vec<PathBuf> = homes.iter().map(|d| d.join("config")).collect();
    match config_names_ciphers(ssh_options, &user_files, Path::new(SYSTEM_CONFIG)) {
        Some(false) => Ok(None),
        _ => ciphers_by_ssh(host, ssh_options),
    }
}

/// The ciphers `ssh -G` resolves for `host` with `ssh_options` (`~/.ssh/config`,
/// `/etc/ssh/ssh_config` and any `-F` file read), against ssh's built-in list
/// (`ssh -F /dev/null -G`, which reads no configuration at all): `None` when they are the same.
/// Both run at once.
fn ciphers_by_ssh(
    host: &str,
    ssh_options: &[String],
) -> std::result::Result<Option<String>, String> {
    let options: Vec<&str> = ssh_options.iter().map(String::as_str).collect();
    let configured = CiphersProbe::start(&options, host)?;
    let built_in = CiphersProbe::start(&["-F", "/dev/null"], host)?;
    let (configured, built_in) = (configured.ciphers()?, built_in.ciphers()?);
    Ok((configured != built_in).then_some(configured))
}

/// The system-wide ssh client configuration (OpenSSH's compiled-in path on Debian).
const SYSTEM_CONFIG: &str = "/etc/ssh/ssh_config";

/// How deep `Include` may nest, as in ssh (`READCONF_MAX_DEPTH`).
const INCLUDE_DEPTH: usize = 16;

/// The directories whose `config` ssh may read as the user's own: `~/.ssh` of `$HOME` and of
/// the user database's home (ssh uses the latter; both are read here, to be safe).
fn user_config_dirs() -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::env::var_os("HOME")
        .filter(|h| !h.is_empty())
        .map(PathBuf::from)
        .into_iter()
        .chain(crate::source::user_entry().map(|(_, home)| home))
        .map(|home| home.join(".ssh"))
        .collect();
    dirs.dedup();
    dirs
}

/// Whether any configuration file ssh reads names the `Ciphers` keyword, in any block:
/// `Some(false)` when none does, so ssh offers its built-in list; `None` when this reading
/// cannot tell (`ssh_options` name another file with `-F` or include one with `-o Include`, a
/// file cannot be read, an `Include` it does not follow), and ssh must be asked. The user's
/// files (`user_files`, their `Include`s relative to their directory) and the system file
/// (`system`, relative to `/etc/ssh`) are read as ssh reads them: a keyword is the first word
/// of a line, before blanks or `=`, in any case; `#` starts a comment line.
fn config_names_ciphers(
    ssh_options: &[String],
    user_files: &[PathBuf],
    system: &Path,
) -> Option<bool> {
    if ssh_options.iter().any(|w| w.starts_with("-F"))
        || option_names(ssh_options).iter().any(|n| n == "include")
    {
        return None;
    }
    let mut files: Vec<(PathBuf, PathBuf, usize)> = user_files
        .iter()
        .chain(std::iter::once(&system.to_path_buf()))
        .map(|f| {
            let base = f.parent().unwrap_or(Path::new("/")).to_path_buf();
            (f.clone(), base, 0)
        })
        .collect();
    while let Some((file, base, depth)) = files.pop() {
        let text = match std::fs::read_to_string(&file) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(_) => return None,
        };
        for line in text.lines() {
            let line = line.trim_start();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let mut words = line.splitn(2, |c: char| c == '=' || c.is_whitespace());
            let keyword = words.next().unwrap_or("").to_ascii_lowercase();
            let rest = words.next().unwrap_or("");
            match keyword.as_str() {
                "ciphers" => return Some(true),
                "include" if depth < INCLUDE_DEPTH => {
                    for pattern in rest.trim_start_matches(['=', ' ', '\t']).split_whitespace() {
                        for included in expand_include(pattern, &base)? {
                            files.push((included, base.clone(), depth + 1));
                        }
                    }
                }
                "include" => return None,
                _ => {}
            }
        }
    }
    Some(false)
}

/// The files an `Include` pattern names: relative to `base`; `*` and `?` in its last component
/// only. None for what this reading does not follow (quotes, `~`, `%` tokens, `${}`, wildcards
/// in a directory, `[` classes).
fn expand_include(pattern: &str, base: &Path) -> Option<Vec<PathBuf>> {
    if pattern.contains(['"', '\'', '~', '%', '$', '[', '\\']) {
        return None;
    }
    let path = base.join(pattern);
    let dir = path.parent()?;
    let name = path.file_name()?.to_str()?;
    if dir.to_str()?.contains(['*', '?']) {
        return None;
    }
    if !name.contains(['*', '?']) {
        return Some(vec![path]);
    }
    let listing = match std::fs::read_dir(dir) {
        Ok(listing) => listing,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Some(Vec::new()),
        Err(_) => return None,
    };
    let mut matched = Vec::new();
    for item in listing {
        let item = item.ok()?;
        let file = item.file_name();
        if file.to_str().is_some_and(|f| wildcard_match(name, f)) {
            matched.push(item.path());
        }
    }
    Some(matched)
}

/// Whether `text` matches `pattern` with `*` (any run) and `?` (any one character), as
/// glob(3) matches a file name (a leading `.` only by a leading `.`).
fn wildcard_match(pattern: &str, text: &str) -> bool {
    if text.starts_with('.') && !pattern.starts_with('.') {
        return false;
    }
    let (p, t): (Vec<char>, Vec<char>) = (pattern.chars().collect(), text.chars().collect());
    let (mut pi, mut ti, mut star, mut mark) = (0, 0, None, 0);
    while ti < t.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == t[ti]) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some(pi);
            mark = ti;
            pi += 1;
        } else if let Some(s) = star {
            pi = s + 1;
            mark += 1;
            ti = mark;
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == '*')
}

/// The cipher choice for `host` with `ssh_options`, decided once per process: every ssh of a
/// run offers the same ciphers, and `ssh -G` runs twice per run, not per connection.
pub(super) fn cipher_choice(host: &str, ssh_options: &[String]) -> CipherChoice {
    type Choices = Mutex<HashMap<(String, Vec<String>), CipherChoice>>;
    static CHOICES: OnceLock<Choices> = OnceLock::new();
    let key = (host.to_string(), ssh_options.to_vec());
    let choices = CHOICES.get_or_init(Default::default);
    if let Some(choice) = choices.lock().ok().and_then(|c| c.get(&key).cloned()) {
        return choice;
    }
    let choice = if sets_ciphers(ssh_options) {
        CipherChoice::SshOptions
    } else {
        CipherChoice::decide(
            ssh_options,
            configured_ciphers(host, ssh_options),
            cpu_has_aes(),
        )
    };
    if let Ok(mut choices) = choices.lock() {
        choices.insert(key, choice.clone());
    }
    choice
}

/// The names of the `-o` options in `args` (ssh's arguments), lower case: `-o Name=value`,
/// `-oName=value`, `-o "Name value"`.
pub(super) fn option_names(args: &[String]) -> Vec<String> {
    let mut names = Vec::new();
    let mut words = args.iter();
    while let Some(word) = words.next() {
        let option = match word.strip_prefix("-o") {
            Some("") => words.next().map(String::as_str),
            Some(inline) => Some(inline),
            None => None,
        };
        if let Some(option) = option {
            let name = option
                .split(|c: char| c == '=' || c.is_whitespace())
                .next()
                .unwrap_or("");
            names.push(name.to_ascii_lowercase());
        }
    }
    names
}

/// `-o Name=value` for each of [`DEFAULTS`] that `ssh_options` does not set.
pub(super) fn default_args(ssh_options: &[String]) -> Vec<String> {
    let given = option_names(ssh_options);
    DEFAULTS
        .iter()
        .filter(|(name, _)| !given.contains(&name.to_ascii_lowercase()))
        .flat_map(|(name, value)| ["-o".to_string(), format!("{name}={value}")])
        .collect()
}

impl Barman {
    /// Which ciphers this client's ssh offers the Barman host (see [`CipherChoice`]).
    pub fn cipher_choice(&self) -> CipherChoice {
        cipher_choice(&self.host, &self.ssh_options)
    }

    /// The commands ssh runs on this host when it connects to the Barman host with this
    /// client's options (`ssh -G`: `ssh_options`, `~/.ssh/config` and any `-F` file), e.g.
    /// `ProxyCommand nc %h %p`; empty when none. `LocalCommand` counts only when
    /// `PermitLocalCommand` is on, as in ssh.
    pub async fn local_commands(&self) -> Result<Vec<String>> {
        let mut argv = self.ssh_argv();
        argv.insert(1, "-G".to_string());
        let output = tokio::time::timeout(
            CONFIG_TIMEOUT,
            tokio::process::Command::new(&argv[0])
                .args(&argv[1..])
                .stdin(std::process::Stdio::null())
                .kill_on_drop(true)
                .output(),
        )
        .await
        .map_err(|_| {
            Error::new(ErrorKind::Ssh, "ssh -G did not answer").hint(format!(
                "ssh -G only reads ssh's configuration (ssh_options in repmgr.conf, ~/.ssh/config, /etc/ssh/ssh_config), where a Match exec may hang: run it by hand to see where it waits: {}",
                crate::paste::line(&argv)
            ))
        })?
        .map_err(|e| {
            Error::new(ErrorKind::Ssh, format!("cannot run ssh -G: {e}")).hint(
                "install the OpenSSH client (package openssh-client) and make sure \"ssh\" is on PATH",
            )
        })?;
        if !output.status.success() {
            return Err(
                Error::new(ErrorKind::Config, "ssh does not accept ssh_options")
                    .detail(crate::child_output::detail_of(&output.stderr))
                    .hint("correct ssh_options in repmgr.conf; see ssh(1) and ssh_config(5)"),
            );
        }
        Ok(commands_in(&String::from_utf8_lossy(&output.stdout)))
    }
}

/// The commands in `ssh -G`'s output (see [`Barman::local_commands`]).
fn commands_in(config: &str) -> Vec<String> {
    let value = |key: &str| {
        config.lines().find_map(|line| {
            let (k, v) = line.split_once(' ')?;
            (k == key && v != "none").then(|| v.to_string())
        })
    };
    let permit_local = value("permitlocalcommand").as_deref() == Some("yes");
    COMMANDS
        .iter()
        .filter(|(key, _)| *key != "localcommand" || permit_local)
        .filter_map(|(key, name)| value(key).map(|command| format!("{name} {command}")))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(text: &str) -> Vec<String> {
        text.split(' ').map(String::from).collect()
    }

    #[test]
    fn defaults_yield_to_the_operators_options_in_any_spelling() {
        assert_eq!(
            default_args(&[]).join(" "),
            "-o ConnectTimeout=10 -o ServerAliveInterval=15 -o ServerAliveCountMax=3"
        );
        let mut given = words("-p 2222 -oconnecttimeout=3 -o");
        given.push("ServerAliveInterval 5".to_string());
        assert_eq!(default_args(&given).join(" "), "-o ServerAliveCountMax=3");
        assert_eq!(
            option_names(&words("-o ServerAliveCountMax=1 -i key")),
            ["serveralivecountmax"]
        );
    }

    #[test]
    fn the_commands_ssh_would_run_are_read_from_its_configuration() {
        let config = "user barman\nproxycommand nc %h %p\nlocalcommand echo hi\n\
                      permitlocalcommand no\nknownhostscommand none\n";
        assert_eq!(commands_in(config), ["ProxyCommand nc %h %p"]);
        let config = "localcommand echo hi\npermitlocalcommand yes\nproxyjump bastion\n";
        assert_eq!(
            commands_in(config),
            ["ProxyJump (another ssh) bastion", "LocalCommand echo hi"]
        );
        assert!(commands_in("user barman\n").is_empty());
    }

    #[test]
    fn aes_gcm_first_only_when_nothing_else_chooses_and_the_cpu_has_aes() {
        let none: &[String] = &[];
        assert_eq!(
            CipherChoice::decide(none, Ok(None), true),
            CipherChoice::AesGcmFirst
        );
        assert_eq!(
            CipherChoice::decide(none, Ok(None), true).args(),
            ["-o", &format!("Ciphers={AES_GCM_FIRST}")]
        );
        assert_eq!(
            CipherChoice::decide(none, Ok(None), false),
            CipherChoice::NoAes
        );
        let config = CipherChoice::decide(none, Ok(Some("aes256-ctr".into())), true);
        assert_eq!(config, CipherChoice::SshConfig("aes256-ctr".into()));
        assert!(config.args().is_empty());
        assert!(config.describe().contains("aes256-ctr"));
        let unknown = CipherChoice::decide(none, Err("ssh -G did not answer".into()), true);
        assert!(unknown.args().is_empty());
        for options in [
            "-c aes256-ctr",
            "-caes256-ctr",
            "-o Ciphers=aes256-ctr",
            "-oCiphers=+aes256-cbc",
            "-p 22 -o ciphers=aes256-ctr",
        ] {
            let choice = CipherChoice::decide(&words(options), Ok(None), true);
            assert_eq!(choice, CipherChoice::SshOptions, "{options}");
            assert!(choice.args().is_empty(), "{options}");
        }
        assert!(!sets_ciphers(&words("-p 22 -o ConnectTimeout=3 -i key")));
    }

    /// The real ssh: a configuration file that sets Ciphers is seen, one that does not is not,
    /// and options that choose are never overridden.
    #[test]
    fn the_configurations_ciphers_from_the_real_ssh() {
        let dir = std::env::temp_dir().join(format!("pgreplica-ssh-cfg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("mkdir");
        let with = dir.join("with");
        std::fs::write(&with, "Host *\n  Ciphers aes256-ctr,aes128-ctr\n").expect("write");
        let without = dir.join("without");
        std::fs::write(&without, "Host *\n  Port 2222\n").expect("write");
        let opts = |file: &std::path::Path| vec!["-F".to_string(), file.display().to_string()];
        assert_eq!(
            configured_ciphers("barman@127.0.0.1", &opts(&with)),
            Ok(Some("aes256-ctr,aes128-ctr".to_string()))
        );
        assert_eq!(
            configured_ciphers("barman@127.0.0.1", &opts(&without)),
            Ok(None)
        );
        assert_eq!(
            cipher_choice("barman@127.0.0.1", &opts(&with)),
            CipherChoice::SshConfig("aes256-ctr,aes128-ctr".to_string())
        );
        let expected = if cpu_has_aes() {
            CipherChoice::AesGcmFirst
        } else {
            CipherChoice::NoAes
        };
        assert_eq!(cipher_choice("barman@127.0.0.1", &opts(&without)), expected);
        assert!(ciphers_by_ssh("barman@127.0.0.1", &words("-o NoSuchOption=1")).is_err());
        std::fs::remove_dir_all(&dir).expect("rm");
    }

    /// Without running ssh: a `Ciphers` keyword in any block of any file ssh reads (through
    /// `Include`s too) is seen; files that name none need no `ssh -G`; what the reading cannot
    /// follow is left to ssh.
    #[test]
    fn configuration_files_that_name_no_ciphers_need_no_ssh() {
        let dir = std::env::temp_dir().join(format!("pgreplica-ssh-read-{}", std::process::id()));
        let (user, system, confd) = (dir.join("user"), dir.join("etc"), dir.join("etc/conf.d"));
        std::fs::create_dir_all(&user).expect("mkdir");
        std::fs::create_dir_all(&confd).expect("mkdir");
        let (user_file, system_file) = (user.join("config"), system.join("ssh_config"));
        let write = |file: &Path, text: &str| std::fs::write(file, text).expect("write");
        let names = |options: &str| {
            config_names_ciphers(
                &words(options),
                std::slice::from_ref(&user_file),
                &system_file,
            )
        };
        // Nothing to read at all: ssh's built-in list.
        assert_eq!(names("-p 22"), Some(false));
        write(
            &user_file,
            "Host barman\n  Port 2222\n# Ciphers aes128-ctr\n",
        );
        write(
            &system_file,
            "Include conf.d/*.conf\nHost *\n    SendEnv LANG LC_*\n",
        );
        write(&confd.join("10-a.conf"), "ForwardAgent no\n");
        write(&confd.join("20-b.txt"), "Ciphers aes256-ctr\n");
        write(&confd.join(".30-hidden.conf"), "Ciphers aes256-ctr\n");
        assert_eq!(names("-p 22"), Some(false));
        // A keyword in any case, after `=`, in a Match block, or in an included file.
        for (file, text) in [
            (&user_file, "Match host barman\n\tCIPHERS=aes128-ctr\n"),
            (&confd.join("20-b.conf"), "Host *\n  ciphers +aes256-cbc\n"),
        ] {
            write(file, text);
            assert_eq!(names("-p 22"), Some(true), "{text}");
            std::fs::remove_file(file).expect("rm");
        }
        // Left to ssh: another file, an Include given in the options, an unfollowed pattern.
        assert_eq!(names("-F /tmp/other"), None);
        assert_eq!(names("-o Include=/tmp/x"), None);
        write(&user_file, "Include ~/.ssh/conf.d/*\n");
        assert_eq!(names("-p 22"), None);
        std::fs::remove_dir_all(&dir).expect("rm");
        assert!(wildcard_match("*.conf", "10-a.conf"));
        assert!(wildcard_match("a?c*", "abcdef"));
        assert!(!wildcard_match("*.conf", "20-b.txt"));
        assert!(!wildcard_match("*", ".hidden"));
    }

    /// On this machine, where no configuration file names ciphers, reading the files and
    /// asking ssh agree.
    #[test]
    fn reading_the_files_agrees_with_ssh_here() {
        let options = words("-p 22 -o ConnectTimeout=3");
        let user_files: Vec<PathBuf> = user_config_dirs()
            .iter()
            .map(|d| d.join("config"))
            .collect();
        let read = config_names_ciphers(&options, &user_files, Path::new(SYSTEM_CONFIG));
        let asked = ciphers_by_ssh("barman@127.0.0.1", &options).expect("ssh -G");
        match read {
            Some(false) => assert_eq!(asked, None),
            Some(true) => {}
            None => panic!("this machine's ssh configuration could not be read"),
        }
        assert_eq!(configured_ciphers("barman@127.0.0.1", &options), Ok(asked));
    }

    /// The real ssh: `-G` reads the options and names the commands, connecting nowhere.
    #[test]
    fn local_commands_from_the_real_ssh() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let barman = Barman::new(
            "barman@127.0.0.1",
            "pg",
            None,
            words("-F /dev/null -o ProxyCommand=false -o LocalCommand=true"),
        );
        let commands = rt.block_on(barman.local_commands()).expect("ssh -G");
        assert_eq!(commands, ["ProxyCommand false"]);
        let plain = Barman::new("barman@127.0.0.1", "pg", None, words("-F /dev/null"));
        assert!(rt
            .block_on(plain.local_commands())
            .expect("ssh -G")
            .is_empty());
    }
}
