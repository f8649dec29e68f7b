//! The ssh client's options that keep a dead Barman host from hanging a clone, and what the
//! operator's `ssh_options` make ssh run.
//!
//! Without `ConnectTimeout`, a host that drops packets holds each connection attempt for the
//! kernel's TCP timeout (minutes), and without keep-alives a network that goes quiet in the
//! middle of a transfer holds ssh (and the rsync over it) forever. pgreplica therefore adds
//! [`DEFAULTS`] to every ssh it starts — unless `ssh_options` sets the option itself, which
//! always wins — so a dead peer is noticed within about a minute.
//!
//! `ssh_options` is trusted like `~/.ssh/config`: options such as `ProxyCommand` or
//! `LocalCommand` run commands on this host whenever ssh connects, `--dry-run` included.
//! [`Barman::local_commands`] says which (from `ssh -G`, so `~/.ssh/config` and `-F` files count
//! too), for the dry run to report.

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
        .map_err(|_| Error::new(ErrorKind::Ssh, "ssh -G did not answer"))?
        .map_err(|e| Error::new(ErrorKind::Ssh, format!("cannot run ssh -G: {e}")))?;
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
