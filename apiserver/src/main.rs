//! `pgreplica-apiserver`: a test server that honours pg-backup-api 2.2's HTTP contract (see
//! docs/backup-api.md) and does the real work with `barman recover`, for pgreplica's
//! integration tests.
//!
//! * `serve` listens on 127.0.0.1 only, answers with the API's status codes and bodies (compact
//!   JSON with a trailing newline; Flask-style HTML error pages), writes job files
//!   `<barman_home>/<server>/jobs/<id>.json` and starts a detached worker per operation.
//! * `worker` (started by `serve`, in its own session so it survives a server restart, like the
//!   real API's worker process) runs `barman [-c CONFIG] recover SERVER BACKUP DIR
//!   --remote-ssh-command CMD` and writes `<barman_home>/<server>/output/<id>.json`.
//!
//! The status of an operation comes from the files alone, as in the real API. Fault switches
//! (`--fault`, `--worker-dies`, `--spawn-fails`, `--done-without-restoring`, `--gate`) and
//! `--require-auth` (what a proxy in front of the API would check) exist for tests only. It
//! must never listen beyond the loopback interface and has no authentication of its own
//! (neither has the real API).

mod http;
mod routes;
mod system;
mod worker;

use std::path::PathBuf;
use std::process::ExitCode;

/// What `serve` needs to know.
#[derive(Clone, Debug, Default)]
pub struct ServeOptions {
    /// TCP port on 127.0.0.1.
    pub port: u16,
    /// Barman's home (`barman_home`): `<home>/<server>/{jobs,output,base}`.
    pub barman_home: PathBuf,
    /// Barman servers the API knows (the real API reads them from Barman's configuration).
    pub servers: Vec<String>,
    /// The barman program.
    pub barman: PathBuf,
    /// `barman -c CONFIG` (the real API uses Barman's default configuration).
    pub barman_config: Option<PathBuf>,
    /// Drop root for this user (the real API runs as barman).
    pub run_as: Option<String>,
    /// Test switch: workers wait while this file exists before running barman.
    pub gate: Option<PathBuf>,
    /// Test switch: workers exit at once without an output file (IN_PROGRESS forever).
    pub worker_dies: bool,
    /// Test switch: the worker cannot be started, as with pg-backup-api 2.2 when the
    /// `pg-backup-api` program is not on the service's PATH: the job file is written, then
    /// Flask's HTML 500, and no worker ever runs (IN_PROGRESS forever, nothing restored).
    pub spawn_fails: bool,
    /// Test switch: workers report success without running barman (DONE, nothing restored).
    pub done_without_restoring: bool,
    /// Test switch: requests must carry HTTP basic authentication `USER:PASSWORD`, as a proxy
    /// in front of the API may demand; others get a 401.
    pub require_auth: Option<String>,
    /// Test switch: the first requests get faulty replies.
    pub faults: routes::Faults,
}

const USAGE: &str = "usage:
  pgreplica-apiserver serve --port N --barman-home DIR --server NAME [--server NAME…]
        [--barman PROGRAM] [--barman-config FILE] [--run-as USER]
        [--gate FILE] [--worker-dies] [--spawn-fails] [--done-without-restoring]
        [--require-auth USER:PASSWORD] [--fault html500:N|malformed:N|post500:N]…
  pgreplica-apiserver worker --job FILE --output FILE --server NAME --barman PROGRAM
        [--barman-config FILE] [--gate FILE] [--dies] [--no-restore]";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("serve") => parse_serve(&args[1..]).and_then(|options| routes::serve(&options)),
        Some("worker") => worker::parse(&args[1..]).and_then(|options| worker::run(&options)),
        _ => Err(USAGE.to_string()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("pgreplica-apiserver: {message}");
            ExitCode::FAILURE
        }
    }
}

fn parse_serve(args: &[String]) -> Result<ServeOptions, String> {
    let mut options = ServeOptions {
        barman: PathBuf::from("barman"),
        ..ServeOptions::default()
    };
    let mut it = args.iter();
    while let Some(flag) = it.next() {
        let mut value = || {
            it.next()
                .cloned()
                .ok_or_else(|| format!("{flag} needs a value\n{USAGE}"))
        };
        match flag.as_str() {
            "--port" => options.port = value()?.parse().map_err(|e| format!("--port: {e}"))?,
            "--barman-home" => options.barman_home = PathBuf::from(value()?),
            "--server" => options.servers.push(value()?),
            "--barman" => options.barman = PathBuf::from(value()?),
            "--barman-config" => options.barman_config = Some(PathBuf::from(value()?)),
            "--run-as" => options.run_as = Some(value()?),
            "--gate" => options.gate = Some(PathBuf::from(value()?)),
            "--worker-dies" => options.worker_dies = true,
            "--spawn-fails" => options.spawn_fails = true,
            "--done-without-restoring" => options.done_without_restoring = true,
            "--require-auth" => options.require_auth = Some(value()?),
            "--fault" => options.faults.add(&value()?)?,
            other => return Err(format!("unknown option {other}\n{USAGE}")),
        }
    }
    if options.port == 0 || options.barman_home.as_os_str().is_empty() || options.servers.is_empty()
    {
        return Err(format!(
            "--port, --barman-home and --server are required\n{USAGE}"
        ));
    }
    Ok(options)
}
