//! The pg-backup-api test server for the integration tests: `lab::api_server` (shared with the
//! chaos campaign), started with the pgreplica-apiserver cargo built next to pgreplica, and
//! panicking with the reason where the lab returns an error.

use super::Bench;
use lab::api_server;
pub use lab::api_server::ApiServer;
use std::path::{Path, PathBuf};

/// pgreplica-apiserver as cargo built it, beside the pgreplica under test.
pub fn built_server() -> PathBuf {
    Path::new(env!("CARGO_BIN_EXE_pgreplica")).with_file_name("pgreplica-apiserver")
}

/// Starts the test server against the bench's lab with the fault switches `extra`.
pub fn start(bench: &Bench, extra: &[&str]) -> ApiServer {
    ApiServer::start(&bench.lab, &built_server(), extra)
        .unwrap_or_else(|e| panic!("cannot start the API server: {e}"))
}

/// Restarts a killed server with the fault switches `extra`.
pub fn respawn(server: &mut ApiServer, extra: &[&str]) {
    server
        .spawn(extra)
        .unwrap_or_else(|e| panic!("cannot restart the API server: {e}"));
}

/// A repmgr.conf for API mode (see [`api_server::api_conf`]).
pub fn api_conf(bench: &Bench, host: &str, data_dir: &Path, extra: &str) -> PathBuf {
    api_server::api_conf(&bench.lab, host, data_dir, extra)
        .unwrap_or_else(|e| panic!("write repmgr.conf: {e}"))
}
