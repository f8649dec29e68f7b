//! The pg-backup-api test server (`pgreplica-apiserver`) run against a lab, and repmgr.conf
//! files for API mode: shared by the plain-http and the TLS tests.

use super::Bench;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// The test server, started as root and dropping to barman (as the real API runs).
pub struct ApiServer {
    binary: PathBuf,
    port: u16,
    home: PathBuf,
    config: PathBuf,
    flavor: lab::BarmanFlavor,
    log: PathBuf,
    child: Option<Child>,
}

impl ApiServer {
    pub fn start(bench: &Bench, extra: &[&str]) -> ApiServer {
        let built =
            Path::new(env!("CARGO_BIN_EXE_pgreplica")).with_file_name("pgreplica-apiserver");
        assert!(
            built.is_file(),
            "{} is missing: build it with \"cargo build -p pgreplica-apiserver\" (cargo test --workspace does)",
            built.display()
        );
        let mut server = ApiServer {
            binary: bench.lab.install_binary(&built),
            port: lab::free_port(),
            home: bench.lab.barman_home(),
            config: bench.lab.barman_config().to_path_buf(),
            flavor: bench.lab.barman_flavor(),
            log: bench.lab.log_dir().join("apiserver.log"),
            child: None,
        };
        server.spawn(extra);
        server
    }

    /// Starts the server process with the fault switches `extra` and waits until it listens.
    pub fn spawn(&mut self, extra: &[&str]) {
        assert!(self.child.is_none(), "the API server already runs");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("apiserver log");
        let child = Command::new(&self.binary)
            .args(["serve", "--port", &self.port.to_string(), "--server", "pg"])
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
            .expect("spawn pgreplica-apiserver");
        self.child = Some(child);
        let port = self.port;
        lab::wait_for("API server listens", Duration::from_secs(20), || {
            Ok(TcpStream::connect(("127.0.0.1", port)).is_ok())
        })
        .expect("the API server does not listen");
    }

    /// SIGKILLs the server (its workers run on, as the real API's do).
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
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

    /// Operations the server holds for server pg (job files).
    pub fn job_files(&self) -> Vec<String> {
        let mut ids: Vec<String> = std::fs::read_dir(self.home.join("pg/jobs"))
            .map(|entries| {
                entries
                    .flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .filter(|name| name.ends_with(".json"))
                    .collect()
            })
            .unwrap_or_default();
        ids.sort();
        ids
    }
}

impl Drop for ApiServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A repmgr.conf for API mode (no barman_host: that would select Barman mode).
pub fn api_conf(bench: &Bench, host: &str, data_dir: &Path, extra: &str) -> PathBuf {
    let path = bench.lab.dir().join(format!(
        "api-{}.conf",
        data_dir.file_name().unwrap().to_string_lossy()
    ));
    let text = format!(
        "{node}pg_backupapi_host='{host}'\n\
         pg_backupapi_node_name='pg'\n\
         pg_backupapi_remote_ssh_command='{ssh}'\n\
         pg_backupapi_backup_id='latest'\n\
         pg_backupapi_poll_interval=1\n\
         {extra}\n",
        node = bench
            .lab
            .node_conf(2, "node2", data_dir, bench.lab.primary_port()),
        ssh = bench.lab.barman_remote_ssh_command(),
    );
    bench
        .lab
        .write_file_as_postgres(&path, &text)
        .expect("write repmgr.conf");
    path
}
