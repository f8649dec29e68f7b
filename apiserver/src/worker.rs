//! The worker: one per operation, detached from the server (own session), runs `barman recover`
//! and records the outcome in the output file. Like the real API's worker, it is the only
//! writer of the output file, and it writes nothing else.

use crate::system::{iso_now, write_atomic};
use serde_json::Value;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

/// A worker gives up waiting on its gate after this long (a test that forgot to open it).
const GATE_LIMIT: Duration = Duration::from_secs(600);

/// The worker's arguments.
#[derive(Debug, Default)]
pub struct WorkerOptions {
    /// The job file.
    pub job: PathBuf,
    /// Where the output file goes.
    pub output: PathBuf,
    /// The Barman server.
    pub server: String,
    /// The barman program.
    pub barman: PathBuf,
    /// `barman -c`.
    pub barman_config: Option<PathBuf>,
    /// Wait while this file exists.
    pub gate: Option<PathBuf>,
    /// Die at once without an output file.
    pub dies: bool,
    /// Report success without running barman.
    pub no_restore: bool,
}

/// Parses `worker` arguments.
pub fn parse(args: &[String]) -> Result<WorkerOptions, String> {
    let mut options = WorkerOptions::default();
    let mut it = args.iter();
    while let Some(flag) = it.next() {
        let mut value = || {
            it.next()
                .cloned()
                .ok_or_else(|| format!("{flag} needs a value"))
        };
        match flag.as_str() {
            "--job" => options.job = PathBuf::from(value()?),
            "--output" => options.output = PathBuf::from(value()?),
            "--server" => options.server = value()?,
            "--barman" => options.barman = PathBuf::from(value()?),
            "--barman-config" => options.barman_config = Some(PathBuf::from(value()?)),
            "--gate" => options.gate = Some(PathBuf::from(value()?)),
            "--dies" => options.dies = true,
            "--no-restore" => options.no_restore = true,
            other => return Err(format!("worker: unknown option {other}")),
        }
    }
    Ok(options)
}

/// The barman arguments for a job: `[-c CONFIG] recover SERVER BACKUP DIR --remote-ssh-command CMD`.
pub fn barman_args(options: &WorkerOptions, job: &Value) -> Result<Vec<String>, String> {
    let field = |name: &str| {
        job.get(name)
            .and_then(Value::as_str)
            .map(str::to_string)
            .ok_or_else(|| format!("job file lacks {name}"))
    };
    let mut args = Vec::new();
    if let Some(config) = &options.barman_config {
        args.extend(["-c".to_string(), config.display().to_string()]);
    }
    args.extend([
        "recover".to_string(),
        options.server.clone(),
        field("backup_id")?,
        field("destination_directory")?,
        "--remote-ssh-command".to_string(),
        field("remote_ssh_command")?,
    ]);
    Ok(args)
}

/// Runs the job and writes the output file.
pub fn run(options: &WorkerOptions) -> Result<(), String> {
    if options.dies {
        // The test switch: gone without a trace, the operation stays IN_PROGRESS forever.
        return Ok(());
    }
    if let Some(gate) = &options.gate {
        let began = Instant::now();
        // Waiting on a file is the switch's contract: the test holds the gate while it kills
        // and restarts things, then removes it.
        while gate.exists() && began.elapsed() < GATE_LIMIT {
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    let text = std::fs::read_to_string(&options.job)
        .map_err(|e| format!("cannot read {}: {e}", options.job.display()))?;
    let mut job: Value = serde_json::from_str(&text).map_err(|e| format!("bad job file: {e}"))?;
    let (success, output) = match barman_args(options, &job) {
        // The test switch: an API that says DONE having restored nothing.
        Ok(_) if options.no_restore => (true, String::new()),
        Ok(args) => match Command::new(&options.barman).args(&args).output() {
            Ok(out) => (
                out.status.success(),
                format!(
                    "{}{}",
                    String::from_utf8_lossy(&out.stdout),
                    String::from_utf8_lossy(&out.stderr)
                ),
            ),
            Err(e) => (
                false,
                format!("cannot run {}: {e}", options.barman.display()),
            ),
        },
        Err(e) => (false, e),
    };
    if let Some(map) = job.as_object_mut() {
        map.insert("success".into(), Value::Bool(success));
        map.insert("end_time".into(), Value::String(iso_now()));
        map.insert("output".into(), Value::String(output));
    }
    write_atomic(&options.output, &job.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn barman_is_called_as_the_api_calls_it() {
        let options = WorkerOptions {
            server: "pg".into(),
            barman_config: Some("/lab/barman.conf".into()),
            ..WorkerOptions::default()
        };
        let job = serde_json::json!({
            "type": "recovery",
            "backup_id": "20261125T061436",
            "destination_directory": "/data/standby",
            "remote_ssh_command": "ssh -p 2222 postgres@127.0.0.1",
        });
        assert_eq!(
            barman_args(&options, &job).unwrap(),
            [
                "-c",
                "/lab/barman.conf",
                "recover",
                "pg",
                "20261125T061436",
                "/data/standby",
                "--remote-ssh-command",
                "ssh -p 2222 postgres@127.0.0.1"
            ]
        );
        assert!(barman_args(&options, &serde_json::json!({})).is_err());
    }
}
