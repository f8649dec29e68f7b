//! What a running lab can be made to suffer, and recover from, for the fault tests and the
//! chaos campaign's fault actions: the Barman host's sshd killed with its sessions and started
//! again, sshd refusing sessions (`MaxStartups`), and the primary serving TLS — for some roles
//! only over TLS, as a `hostssl` rule makes it. Network faults are a [`Relay`](crate::relay)'s.

use std::time::Duration;

use super::Lab;
use crate::exec;
use crate::postgres::PG_HBA;
use crate::sshd::{self, Sshd};
use crate::tls::Pki;
use crate::LabError;

/// How long a configuration reload of the primary may take to reach new sessions.
const RELOAD_TIMEOUT: Duration = Duration::from_secs(30);

impl Lab {
    /// Kills the Barman host's sshd and every session it serves (remote rsyncs included), as
    /// when the host's sshd dies: transfers over it break, new connections are refused.
    pub fn kill_sshd(&self) -> Result<(), LabError> {
        match &self.sshd {
            Some(sshd) => sshd.kill_with_sessions(),
            None => Ok(()),
        }
    }

    /// Starts the sshd again on its port after [`Lab::kill_sshd`].
    pub fn restart_sshd(&self) -> Result<(), LabError> {
        Sshd::start(&self.dir.join("ssh"), self.ssh_port).map(drop)
    }

    /// Sets the sshd's `MaxStartups` (connections waiting to log in; more are refused) and
    /// makes it read its configuration again. [`SSHD_MAX_STARTUPS`](crate::SSHD_MAX_STARTUPS) is the lab's own.
    pub fn set_sshd_max_startups(&self, max_startups: u32) -> Result<(), LabError> {
        let dir = self.dir.join("ssh");
        exec::write_file(
            &dir.join("sshd_config"),
            &sshd::config_text(
                &dir,
                self.ssh_port,
                &self.barman.flavor.path_env(),
                &self.barman.gnupg_home,
                max_startups,
            ),
            None,
            0o644,
        )?;
        match &self.sshd {
            Some(sshd) => sshd.reload(),
            None => Err(LabError::new("sshd", "the lab's sshd was not started")),
        }
    }

    /// Turns TLS on at the primary with `pki`'s server certificate and key; client
    /// certificates are checked against `pki`'s CA. Connections already open are not touched;
    /// `hostssl` rules come with [`Lab::require_tls`].
    pub fn enable_ssl(&self, pki: &Pki) -> Result<(), LabError> {
        let data = self.primary_data_dir();
        for (from, to, mode) in [
            (&pki.server_cert, "server.crt", 0o644),
            (&pki.server_key, "server.key", 0o600),
            (&pki.ca, "root.crt", 0o644),
        ] {
            let text = std::fs::read_to_string(from)
                .map_err(|e| LabError::io("enable ssl", format!("read {}", from.display()), e))?;
            exec::write_file(&data.join(to), &text, Some("postgres"), mode)?;
        }
        self.psql(
            self.primary_port,
            "ALTER SYSTEM SET ssl_cert_file = 'server.crt'",
        )?;
        self.psql(
            self.primary_port,
            "ALTER SYSTEM SET ssl_key_file = 'server.key'",
        )?;
        self.psql(
            self.primary_port,
            "ALTER SYSTEM SET ssl_ca_file = 'root.crt'",
        )?;
        self.psql(self.primary_port, "ALTER SYSTEM SET ssl = on")?;
        self.reload_primary()?;
        let ssl = self.psql(self.primary_port, "SHOW ssl")?;
        if ssl.trim() != "on" {
            return Err(
                LabError::new("enable ssl", format!("ssl is {ssl:?} after the reload"))
                    .detail(exec::file_tail(&self.log_dir().join("primary.log"), 20)),
            );
        }
        Ok(())
    }

    /// Makes the primary accept `trusted` roles (trust) and `by_certificate` roles (`cert`
    /// authentication: a client certificate whose common name is the role) over TLS only, on
    /// 127.0.0.1, replication included: `hostssl` rules, and `reject` for the same roles
    /// without TLS. Empty lists restore the lab's rules.
    pub fn require_tls(&self, trusted: &[&str], by_certificate: &[&str]) -> Result<(), LabError> {
        let mut rules = String::new();
        for (roles, method) in [(trusted, "trust"), (by_certificate, "cert")] {
            for role in roles {
                for database in ["all", "replication"] {
                    rules.push_str(&format!(
                        "hostssl {database} {role} 127.0.0.1/32 {method}\n"
                    ));
                }
            }
        }
        for role in trusted.iter().chain(by_certificate) {
            for database in ["all", "replication"] {
                rules.push_str(&format!("host {database} {role} 127.0.0.1/32 reject\n"));
            }
        }
        self.set_hba_rules(&rules)
    }

    /// Puts `rules` (pg_hba.conf lines) before the lab's own and reloads the primary; an empty
    /// text restores the lab's rules.
    pub fn set_hba_rules(&self, rules: &str) -> Result<(), LabError> {
        exec::write_file(
            &self.primary_data_dir().join("pg_hba.conf"),
            &format!("{rules}{PG_HBA}"),
            Some("postgres"),
            0o600,
        )?;
        self.reload_primary()
    }

    /// Reloads the primary's configuration and waits until new sessions see it (their
    /// `pg_conf_load_time` moved past the one before): `pg_reload_conf()` only signals.
    fn reload_primary(&self) -> Result<(), LabError> {
        let before = self.psql(self.primary_port, "SELECT pg_conf_load_time()")?;
        self.psql(self.primary_port, "SELECT pg_reload_conf()")?;
        exec::wait_for("reload primary", RELOAD_TIMEOUT, || {
            let now = self.psql(self.primary_port, "SELECT pg_conf_load_time()")?;
            Ok(now != before)
        })
        .map_err(|e| e.detail(exec::file_tail(&self.log_dir().join("primary.log"), 20)))
    }
}
