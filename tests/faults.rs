//! The world's faults, each against the real lab: the network to the Barman host going silent
//! in the middle of the transfer (a relay that stops forwarding), the Barman host's sshd killed
//! in the middle of the transfer and started again, sshd refusing sessions (`MaxStartups`)
//! under `--jobs 4` (where the run's streams share no ssh connection; sharing one, they pass), the source node down during FetchParams and during WriteReplicationConf
//! (the replication slot), and the source reachable only over TLS. Each must end in its
//! documented exit code with one ERROR, a DETAIL and a HINT, leave a record that `clone resume`
//! finishes once the fault is gone, and give a data directory identical to an uninterrupted
//! clone's.
//!
//! Every clone reaches the Barman host and the source through relays on 127.0.0.1 (so the
//! reference and the faulted clones write the same primary_conninfo), with short ssh time
//! limits in `ssh_options` so a silent network is noticed in seconds (pgreplica's defaults,
//! tested in tests/connections.rs, take about a minute). One lab for the whole file.

mod common;

use common::{debian_lab, spawn, stderr_of, tree_digest, wait_for_progress, Bench};
use lab::clone_check::{differing_paths, TreeDigest};
use lab::relay::Relay;
use lab::tls::Pki;
use std::path::{Path, PathBuf};
use std::process::Child;

/// The role the clones connect as: TLS-only for the TLS fault, plain otherwise.
const ROLE: &str = "faults_clone";
/// ssh time limits for the tests: a silent peer is given up in about 4 s.
const QUICK_SSH: &str = "-o ServerAliveInterval=1 -o ServerAliveCountMax=3 -o ConnectTimeout=3";

/// The lab, its two relays, and the uninterrupted reference clone.
struct Faults {
    bench: Bench,
    /// In front of the lab's sshd: the network to the Barman host.
    ssh: Relay,
    /// In front of the primary: the source node as the clones see it.
    source: Relay,
    reference: TreeDigest,
}

impl Faults {
    /// The repmgr.conf of a clone into `dir`: one node name, the relays, slots on.
    fn conf(&self, dir: &Path, ssh_extra: &str) -> PathBuf {
        let lab = &self.bench.lab;
        let path = dir.with_extension("conf");
        let text = format!(
            "{}ssh_options='{} {QUICK_SSH} {ssh_extra}'\nuse_replication_slots=on\n",
            lab.repmgr_conf(2, "node2", dir, lab.primary_port()),
            lab.ssh_args_to(self.ssh.port()).join(" "),
        );
        lab.write_file_as_postgres(&path, &text).unwrap();
        path
    }

    /// `clone start` of a clone into a new directory `name`, with `extra` arguments,
    /// `keywords` added to the source's conninfo and `ssh_extra` to ssh_options: the directory
    /// and the arguments.
    fn args(
        &self,
        name: &str,
        keywords: &str,
        ssh_extra: &str,
        extra: &[&str],
    ) -> (PathBuf, Vec<String>) {
        let dir = self.bench.lab.new_dir(name);
        let conf = self.conf(&dir, ssh_extra);
        let mut args: Vec<String> = [
            "clone",
            "start",
            "-f",
            &conf.display().to_string(),
            "-d",
            &format!(
                "host=127.0.0.1 port={} user={ROLE} dbname=postgres {keywords}",
                self.source.port()
            ),
        ]
        .map(String::from)
        .to_vec();
        args.extend(extra.iter().map(|a| a.to_string()));
        (dir, args)
    }

    /// Starts the clone of [`Faults::args`] in the background.
    fn start(&self, name: &str, keywords: &str, extra: &[&str]) -> (PathBuf, Child) {
        self.start_with_ssh(name, keywords, "", extra)
    }

    /// [`Faults::start`] with `ssh_extra` added to ssh_options.
    fn start_with_ssh(
        &self,
        name: &str,
        keywords: &str,
        ssh_extra: &str,
        extra: &[&str],
    ) -> (PathBuf, Child) {
        let (dir, args) = self.args(name, keywords, ssh_extra, extra);
        (dir, spawn(&self.bench, &args))
    }

    /// Runs the clone of [`Faults::args`], which must succeed.
    fn clone_ok(&self, name: &str, extra: &[&str]) -> PathBuf {
        let (dir, args) = self.args(name, "", "", extra);
        let out = self
            .bench
            .run(&args.iter().map(String::as_str).collect::<Vec<_>>());
        assert_eq!(
            out.status.code(),
            Some(0),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        dir
    }

    /// Waits for `child` to end; asserts it failed with `code`, one ERROR, a DETAIL and a HINT,
    /// in `step`; returns its stderr.
    fn failed(&self, child: &mut Child, dir: &Path, code: i32, step: &str) -> String {
        let status = child.wait().unwrap();
        let stderr = stderr_of(child);
        eprintln!("{stderr}");
        assert_eq!(status.code(), Some(code), "{stderr}");
        assert_eq!(stderr.matches("ERROR: ").count(), 1, "{stderr}");
        let after = stderr.split("ERROR: ").nth(1).unwrap();
        assert!(
            after.contains("\nDETAIL: ") && after.contains("\nHINT: "),
            "{stderr}"
        );
        let record = self.bench.status(dir);
        assert_eq!(record["phase"], step, "{record}");
        assert_eq!(record["running"], false, "{record}");
        stderr
    }

    /// `clone resume` finishes, and the result equals the reference (but for `allowed`).
    fn resume_to_reference(&self, dir: &Path, allowed: &[&str]) {
        let out = self
            .bench
            .run(&["clone", "resume", &dir.display().to_string()]);
        assert_eq!(
            out.status.code(),
            Some(0),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(self.bench.status(dir)["phase"], "done");
        let differing: Vec<String> = differing_paths(&tree_digest(dir), &self.reference)
            .into_iter()
            .filter(|p| !allowed.contains(&p.as_str()))
            .collect();
        assert!(
            differing.is_empty(),
            "{} differs from the uninterrupted clone: {differing:?}",
            dir.display()
        );
    }
}

/// Whether a run's log warns that an attempt's rsync lost its ssh connection: rsync exits 255
/// when its ssh dies, or 12 when it notices the broken stream first.
fn rsync_lost_its_connection(stderr: &str) -> bool {
    stderr.contains("WARNING: rsync lost its ssh connection to the Barman host")
        || stderr.contains(
            "WARNING: rsync failed with exit code 12 (error in rsync protocol data stream, often ssh dying)",
        )
}

#[test]
fn each_fault_ends_cleanly_and_resumes_to_an_identical_clone() {
    let bench = Bench::start(debian_lab());
    let lab = &bench.lab;
    lab.psql(
        lab.primary_port(),
        &format!("CREATE ROLE {ROLE} SUPERUSER LOGIN REPLICATION"),
    )
    .unwrap();
    let ssh = Relay::start(lab.ssh_port()).unwrap();
    let source = Relay::start(lab.primary_port()).unwrap();
    let mut faults = Faults {
        bench,
        ssh,
        source,
        reference: TreeDigest::new(),
    };
    faults.reference = tree_digest(&faults.clone_ok("reference", &[]));
    let throttled = ["--jobs", "2", "--bwlimit", "1500"];

    // The network to the Barman host goes silent mid-transfer: ssh's keep-alives notice, the
    // retries meet a host that never answers (ConnectTimeout), exit 12.
    let (dir, mut child) = faults.start("silent-network", "", &throttled);
    wait_for_progress(&faults.bench, &dir, &mut child, 0.2);
    faults.ssh.go_silent();
    let stderr = faults.failed(&mut child, &dir, 12, "transfer");
    // The first attempt loses its connection (rsync says so with 255 or 12, as the timing
    // falls); the retries cannot open one (the copy opens the shared connection before its
    // streams), and the last says so.
    assert!(rsync_lost_its_connection(&stderr), "{stderr}");
    assert!(
        stderr.contains("ERROR: ssh to the Barman host \"barman@127.0.0.1\" failed: Connection timed out during banner exchange"),
        "{stderr}"
    );
    assert!(
        stderr.contains("HINT: check barman_host and ssh_options"),
        "{stderr}"
    );
    faults.ssh.forward();
    faults.resume_to_reference(&dir, &[]);

    // The Barman host's sshd dies mid-transfer (its sessions with it) and is started again.
    let (dir, mut child) = faults.start("sshd-killed", "", &throttled);
    wait_for_progress(&faults.bench, &dir, &mut child, 0.2);
    faults.bench.lab.kill_sshd().unwrap();
    let stderr = faults.failed(&mut child, &dir, 12, "transfer");
    // Through the relay, the dead sshd closes each new connection: the retries cannot open
    // the shared connection, and the last says so.
    assert!(rsync_lost_its_connection(&stderr), "{stderr}");
    assert!(
        stderr.contains("ERROR: ssh to the Barman host")
            && stderr.contains("closed by remote host"),
        "{stderr}"
    );
    faults.bench.lab.restart_sshd().unwrap();
    faults.resume_to_reference(&dir, &[]);

    // sshd refuses sessions beyond 2 waiting to log in. The four rsync streams of one run
    // share its one ssh connection (ControlMaster): nothing is refused, the clone is whole.
    faults.bench.lab.set_sshd_max_startups(2).unwrap();
    let dir = faults.clone_ok("max-startups-shared", &["--jobs", "4"]);
    let differing = differing_paths(&tree_digest(&dir), &faults.reference);
    assert!(differing.is_empty(), "{differing:?}");
    // Without it (the operator's ssh_options say ControlMaster=no): VerifyBackup's connection
    // passes, four rsync streams starting at once do not.
    let (dir, mut child) =
        faults.start_with_ssh("max-startups", "", "-o ControlMaster=no", &["--jobs", "4"]);
    let stderr = faults.failed(&mut child, &dir, 12, "transfer");
    assert!(
        stderr.contains("ERROR: rsync lost its ssh connection to the Barman host"),
        "{stderr}"
    );
    faults
        .bench
        .lab
        .set_sshd_max_startups(lab::SSHD_MAX_STARTUPS)
        .unwrap();
    faults.resume_to_reference(&dir, &[]);

    // The source node is down when FetchParams connects: retried, then exit 6 with the cause.
    faults.source.refuse();
    let (dir, mut child) = faults.start("source-down-fetch", "", &[]);
    let stderr = faults.failed(&mut child, &dir, 6, "fetch_params");
    assert!(
        stderr.contains("error connecting to server: Connection refused (os error 111)"),
        "{stderr}"
    );
    faults.source.forward();
    faults.resume_to_reference(&dir, &[]);

    // The source node goes down just before WriteReplicationConf connects to create the slot:
    // FetchParams connects twice (parameters, slot check), Transfer once (slot before the copy).
    faults.source.refuse_after(3);
    let (dir, mut child) = faults.start("source-down-slot", "", &[]);
    let stderr = faults.failed(&mut child, &dir, 6, "write_replication_conf");
    assert!(stderr.contains("Connection refused"), "{stderr}");
    faults.source.forward();
    faults.resume_to_reference(&dir, &[]);

    // The source accepts the role over TLS only. libpq's default (prefer) goes on over TLS; a
    // clone that forbids TLS is refused in the server's words, final, and resumes once the
    // rule is lifted.
    let pki = Pki::generate(&faults.bench.lab.dir().join("pki")).unwrap();
    faults.bench.lab.enable_ssl(&pki).unwrap();
    faults.bench.lab.require_tls(&[ROLE], &[]).unwrap();
    let dir = faults.clone_ok("tls-only-prefer", &[]);
    let differing = differing_paths(&tree_digest(&dir), &faults.reference);
    assert!(differing.is_empty(), "{differing:?}");
    let (dir, mut child) = faults.start("tls-only-disable", "sslmode=disable", &[]);
    let stderr = faults.failed(&mut child, &dir, 6, "fetch_params");
    assert!(
        stderr.contains("pg_hba.conf rejects connection for host \"127.0.0.1\", user \"faults_clone\", database \"postgres\", no encryption"),
        "{stderr}"
    );
    assert!(!stderr.contains("Retrying step"), "{stderr}");
    faults.bench.lab.require_tls(&[], &[]).unwrap();
    // The clone asked for no TLS, so its primary_conninfo says so; all else is the reference.
    faults.resume_to_reference(&dir, &["postgresql.auto.conf"]);
    let auto_conf = std::fs::read_to_string(dir.join("postgresql.auto.conf")).unwrap();
    assert!(
        auto_conf.contains(&format!(
            "primary_conninfo = 'host=127.0.0.1 port={} user={ROLE} sslmode=disable application_name=node2'",
            faults.source.port()
        )),
        "{auto_conf}"
    );
}
