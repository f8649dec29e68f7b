//! The endpoints of pg-backup-api 2.2 that pgreplica uses, with the real API's status codes and
//! bodies, plus the fault switches. State lives in the job and output files only, so a restarted
//! server sees the operations of the previous one.

use crate::http::{basic_authorization, read_request, write_reply, Reply, Request};
use crate::system::{iso_now, operation_id_now, run_as};
use crate::ServeOptions;
use serde_json::{json, Value};
use std::net::TcpListener;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};

/// The backup shortcuts the API accepts besides ids.
const SHORTCUTS: [&str; 5] = ["latest", "last", "oldest", "first", "last-failed"];

const INTERNAL_ERROR: &str = "The server encountered an internal error and was unable to complete your request. Either the server is overloaded or there is an error in the application.";

/// Faulty replies for the first requests (test switches).
#[derive(Clone, Debug, Default)]
pub struct Faults {
    /// Any request: Flask's HTML 500, unprocessed.
    pub html500: u32,
    /// Any request: a 200 with truncated JSON, unprocessed.
    pub malformed: u32,
    /// Recovery POSTs: the API's duplicate-id 500 (as if another operation took this second).
    pub post500: u32,
}

impl Faults {
    /// Adds `KIND:N` from the command line.
    pub fn add(&mut self, spec: &str) -> Result<(), String> {
        let (kind, count) = spec
            .split_once(':')
            .ok_or_else(|| format!("--fault {spec}: expected KIND:N"))?;
        let count: u32 = count.parse().map_err(|e| format!("--fault {spec}: {e}"))?;
        match kind {
            "html500" => self.html500 += count,
            "malformed" => self.malformed += count,
            "post500" => self.post500 += count,
            _ => return Err(format!("--fault {spec}: unknown kind {kind}")),
        }
        Ok(())
    }

    /// The fault for this request, consuming it.
    fn take(&mut self, request: &Request) -> Option<Reply> {
        if self.html500 > 0 {
            self.html500 -= 1;
            return Some(Reply::html_error(500, INTERNAL_ERROR));
        }
        if self.malformed > 0 {
            self.malformed -= 1;
            return Some(Reply {
                status: 200,
                content_type: "application/json",
                body: "{\"operation_id\":\"2026".to_string(),
            });
        }
        if self.post500 > 0 && request.method == "POST" {
            self.post500 -= 1;
            return Some(Reply::html_error(500, INTERNAL_ERROR));
        }
        None
    }
}

struct Server {
    options: ServeOptions,
    faults: Mutex<Faults>,
    /// Serialises operation creation, as the real API's single worker thread per request does
    /// not: a second POST in the same second finds the job file and fails with 500.
    create: Mutex<()>,
}

/// Serves until killed.
pub fn serve(options: &ServeOptions) -> Result<(), String> {
    let listener = TcpListener::bind(("127.0.0.1", options.port))
        .map_err(|e| format!("cannot listen on 127.0.0.1:{}: {e}", options.port))?;
    if let Some(user) = &options.run_as {
        run_as(user)?;
    }
    let server = Arc::new(Server {
        options: options.clone(),
        faults: Mutex::new(options.faults.clone()),
        create: Mutex::new(()),
    });
    eprintln!(
        "pgreplica-apiserver: listening on 127.0.0.1:{}",
        options.port
    );
    for stream in listener.incoming() {
        let Ok(stream) = stream else { continue };
        let server = Arc::clone(&server);
        std::thread::spawn(move || {
            if let Some(request) = read_request(&stream) {
                let reply = server.handle(&request);
                write_reply(&stream, &reply);
            }
        });
    }
    Ok(())
}

impl Server {
    fn handle(&self, request: &Request) -> Reply {
        if let Some(credentials) = &self.options.require_auth {
            if request.authorization.as_deref() != Some(basic_authorization(credentials).as_str()) {
                return Reply::html_error(401, "The server could not verify that you are authorized to access the URL requested.");
            }
        }
        let fault = self
            .faults
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take(request);
        if let Some(reply) = fault {
            return reply;
        }
        let parts: Vec<&str> = request.path.trim_matches('/').split('/').collect();
        match (request.method.as_str(), parts.as_slice()) {
            ("GET", ["status"]) => Reply::json(200, &json!("OK")),
            ("GET", ["servers", server, "operations"]) => self.list(server),
            ("POST", ["servers", server, "operations"]) => self.create(server, request),
            ("GET", ["servers", server, "operations", id]) => self.status(server, id),
            (_, ["status"] | ["servers", _, "operations"] | ["servers", _, "operations", _]) => {
                Reply::html_error(405, "The method is not allowed for the requested URL.")
            }
            _ => Reply::html_error(404, "The requested URL was not found on the server. If you entered the URL manually please check your spelling and try again."),
        }
    }

    fn server_dir(&self, server: &str) -> Option<PathBuf> {
        self.options
            .servers
            .iter()
            .any(|s| s == server)
            .then(|| self.options.barman_home.join(server))
    }

    fn list(&self, server: &str) -> Reply {
        let Some(dir) = self.server_dir(server) else {
            return not_found(&format!("No barman config found for '{server}'."));
        };
        let mut operations = Vec::new();
        if let Ok(entries) = std::fs::read_dir(dir.join("jobs")) {
            for entry in entries.flatten() {
                let path = entry.path();
                if path.extension().and_then(|e| e.to_str()) != Some("json") {
                    continue;
                }
                let Some(id) = path.file_stem().and_then(|s| s.to_str()) else {
                    continue;
                };
                let kind = read_json(&path)
                    .and_then(|job| {
                        job.get("operation_type")
                            .and_then(Value::as_str)
                            .map(str::to_string)
                    })
                    .unwrap_or_else(|| "recovery".to_string());
                operations.push(json!({"id": id, "type": kind}));
            }
        }
        Reply::json(200, &json!({ "operations": operations }))
    }

    fn status(&self, server: &str, id: &str) -> Reply {
        let Some(dir) = self.server_dir(server) else {
            return not_found(&format!("No barman config found for '{server}'."));
        };
        let job = dir.join("jobs").join(format!("{id}.json"));
        let output = dir.join("output").join(format!("{id}.json"));
        if !is_id(id) || !job.is_file() {
            return not_found("Resource not found");
        }
        let status = match read_json(&output) {
            Some(out) if out.get("success").and_then(Value::as_bool) == Some(true) => "DONE",
            Some(_) => "FAILED",
            None if output.exists() => return Reply::html_error(500, INTERNAL_ERROR),
            None => "IN_PROGRESS",
        };
        Reply::json(200, &json!({"operation_id": id, "status": status}))
    }

    fn create(&self, server: &str, request: &Request) -> Reply {
        if request.content_type.as_deref() != Some("application/json") {
            return Reply::html_error(415, "Did not attempt to load JSON data because the request Content-Type was not 'application/json'.");
        }
        let body: Value =
            match serde_json::from_slice(&request.body) {
                Ok(Value::Object(map)) if !map.is_empty() => Value::Object(map),
                Ok(_) => {
                    return Reply::html_error(
                        400,
                        &format!("Minimum barman options not met for server '{server}'"),
                    )
                }
                Err(_) => return Reply::html_error(
                    400,
                    "The browser (or proxy) sent a request that this server could not understand.",
                ),
            };
        let Some(dir) = self.server_dir(server) else {
            return not_found(&format!("Server '{server}' does not exist"));
        };
        let Some(backup_id) = body.get("backup_id").and_then(Value::as_str) else {
            return Reply::html_error(400, "Request body is missing ``backup_id``");
        };
        if !backup_exists(&dir, backup_id) {
            return not_found(&format!("Backup '{backup_id}' does not exist"));
        }
        let kind = body
            .get("type")
            .and_then(Value::as_str)
            .unwrap_or("recovery")
            .to_string();
        if kind != "recovery" {
            return Reply::html_error(500, INTERNAL_ERROR);
        }
        let missing = ["destination_directory", "remote_ssh_command"]
            .iter()
            .any(|k| body.get(*k).and_then(Value::as_str).is_none());
        if missing {
            return Reply::html_error(400, "Make sure all options/arguments are met and try again");
        }
        let _serial = self.create.lock().unwrap_or_else(|e| e.into_inner());
        let id = operation_id_now();
        let jobs = dir.join("jobs");
        let outputs = dir.join("output");
        if std::fs::create_dir_all(&jobs)
            .and_then(|()| std::fs::create_dir_all(&outputs))
            .is_err()
        {
            return Reply::html_error(500, INTERNAL_ERROR);
        }
        let job_path = jobs.join(format!("{id}.json"));
        let mut job = body;
        if let Some(map) = job.as_object_mut() {
            map.insert("operation_type".into(), Value::String(kind));
            map.insert("start_time".into(), Value::String(iso_now()));
        }
        // create_new: an operation created in the same second already owns this id.
        let created = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&job_path)
            .and_then(|mut file| {
                use std::io::Write;
                file.write_all(job.to_string().as_bytes())?;
                file.sync_all()
            });
        if created.is_err() {
            return Reply::html_error(500, INTERNAL_ERROR);
        }
        // As pg-backup-api 2.2: the job file first, then the worker; when the worker cannot be
        // started the operation exists without one, and Flask answers its HTML 500.
        let spawned = if self.options.spawn_fails {
            Err(std::io::Error::new(
                std::io::ErrorKind::NotFound,
                "No such file or directory: 'pg-backup-api' (--spawn-fails)",
            ))
        } else {
            self.spawn_worker(server, &job_path, &outputs.join(format!("{id}.json")))
        };
        if let Err(e) = spawned {
            eprintln!("pgreplica-apiserver: cannot start the worker of {id}: {e}");
            return Reply::html_error(500, INTERNAL_ERROR);
        }
        Reply::json(202, &json!({ "operation_id": id }))
    }

    /// Starts the worker in its own session: killing the server leaves it running.
    fn spawn_worker(&self, server: &str, job: &Path, output: &Path) -> std::io::Result<()> {
        let o = &self.options;
        let mut command = Command::new(std::env::current_exe()?);
        command
            .arg("worker")
            .arg("--job")
            .arg(job)
            .arg("--output")
            .arg(output)
            .arg("--server")
            .arg(server)
            .arg("--barman")
            .arg(&o.barman)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        if let Some(config) = &o.barman_config {
            command.arg("--barman-config").arg(config);
        }
        if let Some(gate) = &o.gate {
            command.arg("--gate").arg(gate);
        }
        if o.worker_dies {
            command.arg("--dies");
        }
        if o.done_without_restoring {
            command.arg("--no-restore");
        }
        // SAFETY: setsid is async-signal-safe and touches nothing of the parent.
        unsafe {
            command.pre_exec(|| {
                libc::setsid();
                Ok(())
            });
        }
        // The child is reaped by a thread so that no zombie lingers while the server runs.
        let mut child = command.spawn()?;
        std::thread::spawn(move || child.wait());
        Ok(())
    }
}

fn not_found(message: &str) -> Reply {
    Reply::json(
        404,
        &json!({ "error": format!("404 Not Found: {message}") }),
    )
}

fn read_json(path: &Path) -> Option<Value> {
    serde_json::from_str(&std::fs::read_to_string(path).ok()?).ok()
}

/// `%Y%m%dT%H%M%S`.
fn is_id(id: &str) -> bool {
    id.len() == 15
        && id
            .char_indices()
            .all(|(i, c)| if i == 8 { c == 'T' } else { c.is_ascii_digit() })
}

/// A backup id with a directory in the catalogue, or a shortcut when there is any backup.
fn backup_exists(server_dir: &Path, backup_id: &str) -> bool {
    let base = server_dir.join("base");
    if SHORTCUTS.contains(&backup_id) {
        return std::fs::read_dir(&base)
            .map(|mut entries| entries.any(|e| e.is_ok_and(|e| e.path().is_dir())))
            .unwrap_or(false);
    }
    !backup_id.contains('/') && base.join(backup_id).is_dir()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_and_faults() {
        assert!(is_id("20261125T062405"));
        assert!(!is_id("../../etc/passw"));
        let mut faults = Faults::default();
        faults.add("html500:1").unwrap();
        faults.add("post500:1").unwrap();
        assert!(faults.add("boom:1").is_err());
        let get = Request {
            method: "GET".into(),
            path: "/status".into(),
            content_type: None,
            authorization: None,
            body: Vec::new(),
        };
        assert_eq!(faults.take(&get).map(|r| r.status), Some(500));
        assert!(faults.take(&get).is_none(), "post500 spares GETs");
        let post = Request {
            method: "POST".into(),
            ..get
        };
        assert_eq!(faults.take(&post).map(|r| r.status), Some(500));
        assert!(faults.take(&post).is_none());
    }
}
