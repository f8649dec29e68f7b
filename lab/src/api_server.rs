//! The pg-backup-api test server (`pgreplica-apiserver`, see docs/backup-api.md) run against a
//! lab's Barman, and repmgr.conf files for pg-backup-api mode: what the API integration tests and
//! the chaos campaign's API mode share.
//!
//! It only starts, stops and inspects the server (its job and output files); what a test
//! asserts about them is the caller's business. The server runs as root and drops to barman, as
//! the real API runs as Barman's user; its workers outlive it, as the real API's do.

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::Value;

use crate::{free_port, wait_for, BarmanFlavor, Lab, LabError};

/// How long a (re)started server may take to listen.
const LISTEN_TIMEOUT: Duration = Duration::from_secs(20);

/// A running (or stopped, between [`ApiServer::kill`] and [`ApiServer::spawn`]) test server on
/// 127.0.0.1, serving the lab's Barman server `pg` over plain http.
pub struct ApiServer {
    binary: PathBuf,
    port: u16,
    home: PathBuf,
    config: PathBuf,
    flavor: BarmanFlavor,
    log: PathBuf,
    child: Option<Child>,
    /// The fault switches of the last start, for [`ApiServer::spawn_again`].
    switches: Vec<String>,
}

/// One recovery operation the server holds: its job file, and its output file once the worker
/// ended.
#[derive(Clone, Debug, PartialEq)]
pub struct ApiJob {
    /// The operation id (`%Y%m%dT%H%M%S`, the job file's name).
    pub id: String,
    /// The job's `destination_directory`.
    pub destination: String,
    /// None while IN_PROGRESS (no output file); then whether `barman recover` succeeded.
    pub success: Option<bool>,
}

impl ApiServer {
    /// Installs `built` (pgreplica-apiserver as cargo built it) into the lab, starts it on a free
    /// port with the fault switches `extra` (`--gate FILE`, `--fault …`) and waits until it
    /// listens. It fails loudly when the binary is missing: build it with `cargo build
    /// --workspace --bins`.
    pub fn start(lab: &Lab, built: &Path, extra: &[&str]) -> Result<ApiServer, LabError> {
        if !built.is_file() {
            return Err(
                LabError::new("start API server", format!("{} is missing", built.display()))
                    .hint("build it with \"cargo build --workspace --bins\" (or \"cargo build -p pgreplica-apiserver\")"),
            );
        }
        let mut server = ApiServer {
            binary: lab.install_binary(built),
            port: free_port(),
            home: lab.barman_home(),
            config: lab.barman_config().to_path_buf(),
            flavor: lab.barman_flavor(),
            log: lab.log_dir().join("apiserver.log"),
            child: None,
            switches: Vec::new(),
        };
        server.spawn(extra)?;
        Ok(server)
    }

    /// Starts the server process (again, after [`ApiServer::kill`]) on the same port with the
    /// fault switches `extra`, and waits until it listens.
    pub fn spawn(&mut self, extra: &[&str]) -> Result<(), LabError> {
        let stage = "start API server";
        if self.child.is_some() {
            return Err(LabError::new(stage, "the API server already runs"));
        }
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .map_err(|e| LabError::io(stage, format!("open {}", self.log.display()), e))?;
        let child = Command::new(&self.binary)
            .args(["serve", "--port", &self.port.to_string(), "--server"])
            .arg(crate::BARMAN_SERVER)
            .arg("--barman-home")
            .arg(&self.home)
            .arg("--barman")
            .arg(self.flavor.program())
            .arg("--barman-config")
            .arg(&self.config)
            .args(["--run-as", "barman"])
            .args(extra)
            .env("PATH", self.flavor.path_env())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .map_err(|e| LabError::io(stage, format!("spawn {}", self.binary.display()), e))?;
        self.child = Some(child);
        self.switches = extra.iter().map(|s| s.to_string()).collect();
        let port = self.port;
        wait_for("API server listens", LISTEN_TIMEOUT, || {
            Ok(TcpStream::connect(("127.0.0.1", port)).is_ok())
        })
        .map_err(|e| e.detail(crate::exec::file_tail(&self.log, 10)))
    }

    /// Starts the server process again (after [`ApiServer::kill`]) with the fault switches it
    /// had: a restart that changes nothing but the process.
    pub fn spawn_again(&mut self) -> Result<(), LabError> {
        let switches = self.switches.clone();
        self.spawn(&switches.iter().map(String::as_str).collect::<Vec<_>>())
    }

    /// The fault switches it runs with.
    pub fn switches(&self) -> &[String] {
        &self.switches
    }

    /// SIGKILLs the server and reaps it (its workers run on, as the real API's do).
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            // Best effort: it may have died already; either way it is reaped below.
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// The port it listens on (127.0.0.1, plain http).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `pg_backupapi_host` for this server.
    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// The server's log (appended to by every start).
    pub fn log(&self) -> &Path {
        &self.log
    }

    /// The job files of the operations it holds for server pg, by name (`<id>.json`), sorted.
    pub fn job_files(&self) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(self.jobs_dir())
            .map(|entries| {
                entries
                    .flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .filter(|name| name.ends_with(".json"))
                    .collect()
            })
            .unwrap_or_default();
        names.sort();
        names
    }

    /// Every recovery operation it holds for server pg, read from the job and output files
    /// (the API's own truth: it has no other), sorted by id.
    pub fn jobs(&self) -> Result<Vec<ApiJob>, LabError> {
        let stage = "read API jobs";
        let read = |path: PathBuf| -> Result<Option<Value>, LabError> {
            match std::fs::read_to_string(&path) {
                Ok(text) => serde_json::from_str(&text).map(Some).map_err(|e| {
                    LabError::new(stage, format!("{} is not JSON: {e}", path.display()))
                }),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
                Err(e) => Err(LabError::io(stage, format!("read {}", path.display()), e)),
            }
        };
        let output_dir = self.home.join(crate::BARMAN_SERVER).join("output");
        let mut jobs = Vec::new();
        for name in self.job_files() {
            let Some(job) = read(self.jobs_dir().join(&name))? else {
                continue;
            };
            let output = read(output_dir.join(&name))?;
            jobs.push(ApiJob {
                id: name.trim_end_matches(".json").to_string(),
                destination: job["destination_directory"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
                success: output.map(|o| o["success"] == true),
            });
        }
        Ok(jobs)
    }

    fn jobs_dir(&self) -> PathBuf {
        self.home.join(crate::BARMAN_SERVER).join("jobs")
    }
}

impl Drop for ApiServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Writes `<lab>/api-<data dir's name>.conf`, a repmgr.conf for pg-backup-api mode cloning into
/// `data_dir` through the API at `host` (no barman_host: that would select Barman mode), backup
/// `latest`, polled every second, plus the lines `extra` (later lines win); returns its path.
pub fn api_conf(lab: &Lab, host: &str, data_dir: &Path, extra: &str) -> Result<PathBuf, LabError> {
    let name = data_dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let path = lab.dir().join(format!("api-{name}.conf"));
    let text = format!(
        "{node}pg_backupapi_host='{host}'\n\
         pg_backupapi_node_name='{server}'\n\
         pg_backupapi_remote_ssh_command='{ssh}'\n\
         pg_backupapi_backup_id='latest'\n\
         pg_backupapi_poll_interval=1\n\
         {extra}\n",
        node = lab.node_conf(2, "node2", data_dir, lab.primary_port()),
        server = crate::BARMAN_SERVER,
        ssh = lab.barman_remote_ssh_command(),
    );
    lab.write_file_as_postgres(&path, &text)?;
    Ok(path)
}
