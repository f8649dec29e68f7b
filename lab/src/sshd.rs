//! The lab's private sshd on 127.0.0.1 and its keys: one sshd process per lab, with its own host
//! key, config and authorized_keys files inside the lab directory. It must not touch the
//! system's sshd, /etc/ssh or any ~/.ssh.

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::exec;
use crate::system::{SSHD, SSH_KEYGEN};
use crate::LabError;

/// Client options that reach the lab's sshd with `key` and never prompt or remember host keys.
pub(crate) fn client_options(port: u16, key: &Path) -> Vec<String> {
    let mut options = vec!["-p".to_string(), port.to_string(), "-i".to_string()];
    options.push(key.display().to_string());
    for option in [
        "StrictHostKeyChecking=no",
        "UserKnownHostsFile=/dev/null",
        "BatchMode=yes",
        "LogLevel=ERROR",
    ] {
        options.push("-o".to_string());
        options.push(option.to_string());
    }
    options
}

/// sshd's `MaxStartups` in a lab: parallel transfers open many sessions at once.
pub const MAX_STARTUPS: u32 = 200;

/// The sshd_config of a lab: loopback only, keys only, authorized_keys per user inside the lab,
/// `path` as PATH for every session (so `barman` resolves to the lab's flavour), `gnupg_home`
/// as GNUPGHOME (so `barman` and `gpg` run over ssh find the keyring of the lab's encrypted
/// backups, as they would find ~barman/.gnupg on a real Barman host), and at most
/// `max_startups` connections waiting to log in (more are refused).
pub(crate) fn config_text(
    dir: &Path,
    port: u16,
    path: &str,
    gnupg_home: &Path,
    max_startups: u32,
) -> String {
    format!(
        "Port {port}\n\
         ListenAddress 127.0.0.1\n\
         HostKey {dir}/ssh_host_ed25519_key\n\
         PidFile {dir}/sshd.pid\n\
         AuthorizedKeysFile {dir}/authorized_keys/%u\n\
         AllowUsers postgres barman\n\
         PubkeyAuthentication yes\n\
         PasswordAuthentication no\n\
         KbdInteractiveAuthentication no\n\
         UsePAM no\n\
         StrictModes no\n\
         PermitRootLogin no\n\
         PrintMotd no\n\
         MaxStartups {max_startups}\n\
         MaxSessions 200\n\
         SetEnv PATH={path} GNUPGHOME={gnupg}\n\
         LogLevel INFO\n",
        dir = dir.display(),
        gnupg = gnupg_home.display(),
    )
}

/// Makes an ed25519 key pair at `path` (+ `.pub`), the private half owned by `owner`, 0600.
/// Returns the public key line.
pub(crate) fn keygen(path: &Path, owner: &str) -> Result<String, LabError> {
    exec::checked(
        Command::new(SSH_KEYGEN)
            .args(["-q", "-t", "ed25519", "-N", ""])
            .args(["-C", &format!("pgreplica-lab-{owner}"), "-f"])
            .arg(path),
        "ssh keys",
        Duration::from_secs(30),
    )?;
    exec::own(path, owner, 0o600)?;
    let public = path.with_extension("pub");
    std::fs::read_to_string(&public)
        .map_err(|e| LabError::io("ssh keys", format!("read {}", public.display()), e))
}

/// A running lab sshd.
#[derive(Debug)]
pub(crate) struct Sshd {
    dir: PathBuf,
    port: u16,
}

impl Sshd {
    /// Starts sshd with the config in `dir` and waits until it accepts connections.
    pub(crate) fn start(dir: &Path, port: u16) -> Result<Sshd, LabError> {
        // sshd insists on its privilege-separation directory.
        exec::make_dir(Path::new("/run/sshd"), None, 0o755)?;
        let sshd = Sshd {
            dir: dir.to_path_buf(),
            port,
        };
        let log = sshd.log_file();
        exec::checked(
            Command::new(SSHD)
                .arg("-f")
                .arg(dir.join("sshd_config"))
                .arg("-E")
                .arg(&log),
            "start sshd",
            Duration::from_secs(30),
        )
        .map_err(|e| e.detail(exec::file_tail(&log, 20)))?;
        exec::wait_for("start sshd", Duration::from_secs(20), || {
            Ok(sshd.pid().is_some() && TcpStream::connect(("127.0.0.1", port)).is_ok())
        })
        .map_err(|e| e.detail(exec::file_tail(&log, 20)))?;
        Ok(sshd)
    }

    /// Its log file.
    pub(crate) fn log_file(&self) -> PathBuf {
        self.dir.join("sshd.log")
    }

    /// The running sshd's pid, from its pid file.
    pub(crate) fn pid(&self) -> Option<u32> {
        std::fs::read_to_string(self.dir.join("sshd.pid"))
            .ok()
            .and_then(|text| text.trim().parse().ok())
    }

    /// Makes the running sshd read its configuration again (SIGHUP: sshd re-executes itself
    /// on the same port; open sessions go on).
    pub(crate) fn reload(&self) -> Result<(), LabError> {
        let pid = self
            .pid()
            .ok_or_else(|| LabError::new("reload sshd", "sshd is not running"))?;
        exec::signal(pid, libc::SIGHUP);
        exec::wait_for("reload sshd", Duration::from_secs(20), || {
            Ok(TcpStream::connect(("127.0.0.1", self.port)).is_ok())
        })
    }

    /// Kills the sshd and every session it serves (their processes, the remote commands
    /// included): the Barman host's sshd died, or the host itself did.
    pub(crate) fn kill_with_sessions(&self) -> Result<(), LabError> {
        let Some(pid) = self.pid() else {
            return Ok(());
        };
        let sessions = exec::descendants(pid);
        exec::signal(pid, libc::SIGKILL);
        for session in sessions {
            exec::signal(session, libc::SIGKILL);
        }
        let _ = std::fs::remove_file(self.dir.join("sshd.pid"));
        exec::wait_for("kill sshd", Duration::from_secs(10), || {
            Ok(TcpStream::connect(("127.0.0.1", self.port)).is_err())
        })
    }

    /// Stops the listening sshd (sessions still open end with their clients).
    pub(crate) fn stop(&self) -> Result<(), LabError> {
        let Some(pid) = self.pid() else {
            return Ok(());
        };
        exec::signal(pid, libc::SIGTERM);
        exec::wait_for("stop sshd", Duration::from_secs(10), || {
            Ok(TcpStream::connect(("127.0.0.1", self.port)).is_err())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::assert_has_lines;

    #[test]
    fn config_keeps_everything_inside_the_lab() {
        let text = config_text(
            Path::new("/tmp/l/ssh"),
            24567,
            "/v/bin:/usr/bin:/bin",
            Path::new("/tmp/l/barman/gnupg"),
            7,
        );
        assert_has_lines(
            &text,
            &[
                "Port 24567",
                "ListenAddress 127.0.0.1",
                "HostKey /tmp/l/ssh/ssh_host_ed25519_key",
                "AuthorizedKeysFile /tmp/l/ssh/authorized_keys/%u",
                "UsePAM no",
                "StrictModes no",
                "PasswordAuthentication no",
                "SetEnv PATH=/v/bin:/usr/bin:/bin GNUPGHOME=/tmp/l/barman/gnupg",
                "MaxStartups 7",
            ],
        );
    }

    #[test]
    fn client_options_name_port_key_and_batch_mode() {
        let options = client_options(2222, Path::new("/tmp/l/ssh/keys/postgres"));
        assert_eq!(
            options.join(" "),
            "-p 2222 -i /tmp/l/ssh/keys/postgres -o StrictHostKeyChecking=no \
             -o UserKnownHostsFile=/dev/null -o BatchMode=yes -o LogLevel=ERROR"
        );
    }
}
