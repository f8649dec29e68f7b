//! What the lab needs from the machine: the programs (by absolute path), the `postgres` and
//! `barman` users, and `install()` to get them on Debian 12. Only this module and `install`
//! change anything outside a lab's own directory (packages, the venv, locked passwords).

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use crate::exec::{self, as_user, GETENT, RUNUSER};
use crate::LabError;

/// PostgreSQL 15's binaries (Debian keeps them off PATH).
pub const PG_BIN: &str = "/usr/lib/postgresql/15/bin";
/// The venv holding Barman 3.19.x from PyPI.
pub const BARMAN_VENV: &str = "/opt/pgreplica-lab/barman-venv";
/// Debian's Barman.
pub const DEBIAN_BARMAN: &str = "/usr/bin/barman";
/// Debian's repmgr 5.3.3 (`postgresql-15-repmgr`): only `cargo xtask bench` runs it, as the
/// peer pgreplica is measured against; tests and the lab itself never need it.
pub const REPMGR: &str = "/usr/lib/postgresql/15/bin/repmgr";
const REPMGR_PACKAGE: &str = "postgresql-15-repmgr";
pub(crate) const SSHD: &str = "/usr/sbin/sshd";
/// The ssh client, by absolute path (a wrapper named `ssh` on PATH must not find itself).
pub const SSH: &str = "/usr/bin/ssh";
pub(crate) const SSH_KEYGEN: &str = "/usr/bin/ssh-keygen";
const USERMOD: &str = "/usr/sbin/usermod";
/// stunnel: the TLS-terminating proxy that checks client certificates in front of the
/// pg-backup-api test server (the production shape of that API).
pub const STUNNEL: &str = "/usr/bin/stunnel4";
/// openssl: makes the throwaway CA and certificates of the TLS tests.
pub const OPENSSL: &str = "/usr/bin/openssl";

/// The Debian packages the lab uses. gcc is not in the brief's list but pip needs it to build
/// psycopg2 from source, which the PyPI Barman pulls in even beside psycopg2-binary. stunnel4
/// and openssl serve the pg-backup-api TLS tests. repmgr is installed for the benchmark but is
/// not a prerequisite of the lab: [`prerequisites`] does not check it, [`bench_prerequisites`]
/// does.
const PACKAGES: &[&str] = &[
    "postgresql-15",
    "barman",
    "barman-cli",
    "rsync",
    "openssh-server",
    "openssh-client",
    "python3-venv",
    "python3-dev",
    "libpq-dev",
    "gcc",
    "stunnel4",
    "openssl",
    REPMGR_PACKAGE,
];

/// Barman from PyPI: pinned to the 3.19 series, the second compatibility target.
const PIP_PACKAGES: &[&str] = &["barman>=3.19,<3.20", "psycopg2-binary"];

const INSTALL_HINT: &str = "run `cargo xtask install` as root (or `sudo cargo xtask install`)";

/// Every program the lab runs, by absolute path, with the package that provides it.
fn programs() -> Vec<(String, &'static str)> {
    let mut all: Vec<(String, &'static str)> = [
        "initdb",
        "pg_ctl",
        "postgres",
        "psql",
        "pgbench",
        "pg_basebackup",
        "pg_receivewal",
        "pg_verifybackup",
    ]
    .iter()
    .map(|p| (format!("{PG_BIN}/{p}"), "postgresql-15"))
    .collect();
    all.extend([
        (DEBIAN_BARMAN.to_string(), "barman"),
        ("/usr/bin/barman-wal-restore".to_string(), "barman-cli"),
        ("/usr/bin/rsync".to_string(), "rsync"),
        (SSHD.to_string(), "openssh-server"),
        (SSH.to_string(), "openssh-client"),
        (SSH_KEYGEN.to_string(), "openssh-client"),
        (RUNUSER.to_string(), "util-linux"),
        (USERMOD.to_string(), "passwd"),
        (GETENT.to_string(), "libc-bin"),
        (STUNNEL.to_string(), "stunnel4"),
        (OPENSSL.to_string(), "openssl"),
        (format!("{BARMAN_VENV}/bin/barman"), "the PyPI Barman venv"),
    ]);
    all
}

/// Checks that every program and user the lab needs is present. The error lists everything
/// missing at once and says how to install it.
pub fn prerequisites() -> Result<(), LabError> {
    let mut missing: Vec<String> = programs()
        .into_iter()
        .filter(|(path, _)| !is_executable(Path::new(path)))
        .map(|(path, from)| format!("{path} (from {from})"))
        .collect();
    for user in ["postgres", "barman"] {
        if exec::user_ids(user).is_err() {
            missing.push(format!("user {user}"));
        }
    }
    missing_report(&missing)
}

/// Checks what `cargo xtask bench` needs beyond the lab: repmgr, the peer it is measured
/// against. The error says how to install it.
pub fn bench_prerequisites() -> Result<(), LabError> {
    if is_executable(Path::new(REPMGR)) {
        return Ok(());
    }
    Err(LabError::new(
        "prerequisites",
        format!("the benchmark compares with repmgr, but {REPMGR} is missing"),
    )
    .hint(format!(
        "run `cargo xtask install` as root, or `apt-get install -y {REPMGR_PACKAGE}`"
    )))
}

/// Ok when nothing is missing; else one error listing everything missing and the fix.
fn missing_report(missing: &[String]) -> Result<(), LabError> {
    if missing.is_empty() {
        return Ok(());
    }
    Err(LabError::new(
        "prerequisites",
        format!(
            "{} prerequisite(s) of the loopback lab missing",
            missing.len()
        ),
    )
    .detail(missing.join("\n"))
    .hint(INSTALL_HINT))
}

/// Installs what the lab needs on Debian 12, as root: the packages (`apt-get update` + `apt-get
/// install -y`, only when some are missing) and the PyPI Barman venv (only when missing).
/// Idempotent, and silent when everything is already there.
pub fn install() -> Result<(), LabError> {
    if !exec::is_root() {
        return Err(
            LabError::new("install", "installing the lab's prerequisites needs root")
                .hint("run `sudo cargo xtask install`"),
        );
    }
    let missing: Vec<&str> = PACKAGES
        .iter()
        .copied()
        .filter(|p| !package_installed(p))
        .collect();
    if !missing.is_empty() {
        eprintln!("lab: installing {}", missing.join(" "));
        apt(&["update", "-q"])?;
        let mut args = vec!["install", "-y", "-q"];
        args.extend(&missing);
        apt(&args)?;
    }
    let barman = format!("{BARMAN_VENV}/bin/barman");
    if !is_executable(Path::new(&barman)) {
        install_venv()?;
    }
    prerequisites()
}

/// Lets `postgres` and `barman` log in by key on a sshd without PAM: such a sshd refuses users
/// whose password field is locked (`!…`), so it becomes `*` (no password, not locked).
pub(crate) fn unlock_for_ssh(users: &[&str]) -> Result<(), LabError> {
    for &user in users {
        exec::wait_for(
            &format!("unlock {user} for ssh"),
            Duration::from_secs(20),
            || {
                let out = Command::new(GETENT)
                    .args(["shadow", user])
                    .output()
                    .map_err(|e| LabError::io("users", "getent shadow", e))?;
                let entry = String::from_utf8_lossy(&out.stdout);
                let locked = entry
                    .split(':')
                    .nth(1)
                    .is_some_and(|pw| pw.starts_with('!'));
                if !locked {
                    return Ok(true);
                }
                // Another test process may hold the shadow lock right now: then usermod fails and
                // the next poll retries.
                exec::checked(
                    Command::new(USERMOD).args(["-p", "*", user]),
                    "users",
                    Duration::from_secs(10),
                )?;
                Ok(false)
            },
        )?;
    }
    Ok(())
}

fn install_venv() -> Result<(), LabError> {
    eprintln!("lab: creating the PyPI Barman venv in {BARMAN_VENV}");
    let parent = Path::new(BARMAN_VENV).parent().unwrap_or(Path::new("/opt"));
    // The barman user runs this venv: every directory on the way must be traversable.
    exec::make_dir(parent, None, 0o755)?;
    let long = Duration::from_secs(900);
    exec::checked(
        Command::new("/usr/bin/python3").args(["-m", "venv", BARMAN_VENV]),
        "install venv",
        long,
    )?;
    exec::checked(
        Command::new(format!("{BARMAN_VENV}/bin/pip"))
            .args(["install", "--quiet", "--disable-pip-version-check"])
            .args(PIP_PACKAGES),
        "install venv",
        long,
    )?;
    let version = exec::checked(
        as_user("barman", format!("{BARMAN_VENV}/bin/barman")).arg("--version"),
        "install venv",
        Duration::from_secs(60),
    )?;
    let version = String::from_utf8_lossy(&version.stdout);
    if !version.starts_with("3.19.") {
        return Err(LabError::new(
            "install venv",
            format!(
                "the venv's barman reports {:?}, expected 3.19.x",
                version.trim()
            ),
        ));
    }
    Ok(())
}

fn apt(args: &[&str]) -> Result<(), LabError> {
    exec::checked(
        Command::new("/usr/bin/apt-get")
            .args(args)
            .env("DEBIAN_FRONTEND", "noninteractive"),
        &format!("apt-get {}", args[0]),
        Duration::from_secs(1200),
    )
    .map(drop)
}

fn package_installed(package: &str) -> bool {
    Command::new("/usr/bin/dpkg-query")
        .args(["-W", "-f=${Status}", package])
        .output()
        .is_ok_and(|out| String::from_utf8_lossy(&out.stdout).ends_with(" installed"))
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    path.metadata()
        .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_prerequisites_are_all_listed_with_the_fix() {
        assert!(missing_report(&[]).is_ok());
        let err = missing_report(&[
            "/usr/sbin/sshd (from openssh-server)".into(),
            "user barman".into(),
        ])
        .unwrap_err()
        .to_string();
        assert!(err.contains("2 prerequisite(s)"), "{err}");
        assert!(
            err.contains("/usr/sbin/sshd (from openssh-server)"),
            "{err}"
        );
        assert!(err.contains("user barman"), "{err}");
        assert!(err.contains("cargo xtask install"), "{err}");
    }

    #[test]
    fn every_program_is_an_absolute_path() {
        for (path, from) in programs() {
            assert!(path.starts_with('/'), "{path} from {from}");
        }
    }
}
