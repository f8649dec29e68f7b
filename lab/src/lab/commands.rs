//! How clients reach a lab: the ssh options of the postgres user (and barman's, for Barman
//! pushing a restore), running programs as postgres in the lab, the repmgr.conf of a standby,
//! and the command lines of `pgreplica clone start` against the lab's primary.

use std::ffi::OsStr;
use std::path::Path;
use std::process::Command;

use super::Lab;
use crate::exec::{self, as_user, shell_quote};
use crate::sshd;
use crate::system::{BARMAN_WAL_RESTORE, SSH};
use crate::LabError;

impl Lab {
    /// repmgr.conf's `ssh_options` for the postgres user: the lab sshd's port and postgres's
    /// key, no host-key prompts. With it, postgres reaches `barman@127.0.0.1`.
    pub fn ssh_options(&self) -> String {
        self.ssh_args().join(" ")
    }

    /// [`Lab::ssh_options`] as separate arguments, for `Command::args`.
    pub fn ssh_args(&self) -> Vec<String> {
        self.ssh_args_to(self.ssh_port)
    }

    /// [`Lab::ssh_args`] for another port on 127.0.0.1: a relay in front of the sshd, or a
    /// listener that never answers.
    pub fn ssh_args_to(&self, port: u16) -> Vec<String> {
        sshd::client_options(port, &self.key("postgres"))
    }

    /// What Barman passes as `--remote-ssh-command` to reach `postgres@127.0.0.1` on the lab
    /// sshd with barman's key (pg-backup-api mode: Barman pushes to the standby).
    pub fn barman_remote_ssh_command(&self) -> String {
        let mut words = vec![SSH.to_string()];
        words.extend(sshd::client_options(self.ssh_port, &self.key("barman")));
        words.push("postgres@127.0.0.1".to_string());
        words.join(" ")
    }

    /// A `restore_command` that fetches the WAL of Barman server `server` with
    /// barman-wal-restore as postgres, through the lab's sshd. barman-wal-restore takes no ssh
    /// options and the lab writes into no home directory, so the command is a
    /// `barman-wal-restore` of the lab's own (in `<lab>/wal-restore/`, written here) that runs
    /// the system's with an `ssh` first on PATH that adds postgres's client options, and names
    /// the lab's Barman configuration on the Barman host. Its
    /// `--test` passes, as pgreplica's check before the copy requires, and a standby started
    /// with it fetches WAL from Barman (decrypted there, for an encrypted server).
    pub fn wal_restore_command(&self, server: &str) -> Result<String, LabError> {
        let dir = self.dir.join("wal-restore");
        std::fs::create_dir_all(&dir)
            .map_err(|e| LabError::io("wal-restore", format!("create {}", dir.display()), e))?;
        let quoted = |words: &[String]| {
            words
                .iter()
                .map(|w| shell_quote(w))
                .collect::<Vec<_>>()
                .join(" ")
        };
        let ssh = format!(
            "#!/bin/sh
exec {SSH} {} \"$@\"\n",
            quoted(&self.ssh_args())
        );
        exec::write_file(&dir.join("ssh"), &ssh, None, 0o755)?;
        let wrapper = format!(
            "#!/bin/sh\nPATH={}:\"$PATH\" exec {BARMAN_WAL_RESTORE} \"$@\"\n",
            shell_quote(&dir.display().to_string())
        );
        exec::write_file(&dir.join("barman-wal-restore"), &wrapper, None, 0o755)?;
        // -c: the lab's Barman reads its own configuration, not /etc/barman.conf.
        Ok(format!(
            "{} -U barman -c {} 127.0.0.1 {server} %f %p",
            dir.join("barman-wal-restore").display(),
            self.barman_config().display()
        ))
    }

    /// `runuser -u postgres -- PROGRAM`, from the lab directory, with `PGREPLICA_STATE_DIR` set
    /// to [`Lab::state_dir`] and the primary's PostgreSQL binaries ([`Lab::pg_bin`]) first on
    /// PATH. Add arguments and run.
    pub fn command_as_postgres(&self, program: impl AsRef<OsStr>) -> Command {
        let mut cmd = as_user("postgres", program);
        cmd.current_dir(&self.dir)
            .env("PGREPLICA_STATE_DIR", self.state_dir())
            .env(
                "PATH",
                format!("{}:/usr/local/bin:/usr/bin:/bin", self.pg_bin().display()),
            );
        cmd
    }

    /// The source-node options of `pgreplica clone start` for this lab's primary:
    /// `-h 127.0.0.1 -p PORT -U barman -d postgres`.
    pub fn source_args(&self) -> Vec<String> {
        self.source_args_to(self.primary_port())
    }

    /// [`Lab::source_args`] with another port on 127.0.0.1 (a relay in front of the primary).
    pub fn source_args_to(&self, port: u16) -> Vec<String> {
        [
            "-h",
            "127.0.0.1",
            "-p",
            &port.to_string(),
            "-U",
            "barman",
            "-d",
            "postgres",
        ]
        .map(String::from)
        .to_vec()
    }

    /// `clone start -f CONF` plus [`Lab::source_args`]: a clone of this lab's primary.
    pub fn clone_start_args(&self, conf: &Path) -> Vec<String> {
        self.clone_start_args_to(conf, self.primary_port())
    }

    /// [`Lab::clone_start_args`] reaching the primary at another port on 127.0.0.1.
    pub fn clone_start_args_to(&self, conf: &Path, port: u16) -> Vec<String> {
        let mut args = vec![
            "clone".to_string(),
            "start".to_string(),
            "-f".to_string(),
            conf.display().to_string(),
        ];
        args.extend(self.source_args_to(port));
        args
    }

    /// The node part of a repmgr.conf for a standby of this lab: node_id, node_name, conninfo
    /// (`host=127.0.0.1 port=PORT user=barman dbname=postgres`: the node's own address, where
    /// it will listen), data_directory and pg_bindir (the primary's major's binaries). Add the
    /// keys of a mode to it.
    pub fn node_conf(&self, node_id: u32, node_name: &str, data_dir: &Path, port: u16) -> String {
        format!(
            "node_id={node_id}\n\
             node_name='{node_name}'\n\
             conninfo='host=127.0.0.1 port={port} user=barman dbname=postgres connect_timeout=5'\n\
             data_directory='{data}'\n\
             pg_bindir='{bin}'\n",
            data = data_dir.display(),
            bin = self.pg_bin().display(),
        )
    }

    /// A repmgr.conf for a standby of this lab cloned from Barman: [`Lab::node_conf`] plus
    /// barman_host, barman_server, barman_config and ssh_options.
    pub fn repmgr_conf(&self, node_id: u32, node_name: &str, data_dir: &Path, port: u16) -> String {
        format!(
            "{node}barman_host='{host}'\n\
             barman_server='{server}'\n\
             barman_config='{config}'\n\
             ssh_options='{ssh}'\n",
            node = self.node_conf(node_id, node_name, data_dir, port),
            host = self.barman_ssh_host(),
            server = self.barman_server(),
            config = self.barman_config().display(),
            ssh = self.ssh_options(),
        )
    }
}
