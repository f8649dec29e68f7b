//! What the lab's own test files share: reading a command's output, asserting it succeeded,
//! reaching the lab's Barman over ssh as pgreplica does, and stopping a lab while checking that
//! nothing of it is left behind.

#![allow(dead_code)] // each test binary uses its own subset

use std::net::TcpStream;
use std::process::Output;

use lab::Lab;

/// A command's stdout as text.
pub fn text(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Asserts that `out` is a success, printing both streams when it is not.
#[track_caller]
pub fn assert_ok(what: &str, out: &Output) {
    assert!(
        out.status.success(),
        "{what} failed ({}):\nstdout:\n{}\nstderr:\n{}",
        out.status,
        text(out),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// As postgres, over the lab sshd with `ssh_options()`: `ssh barman@127.0.0.1 ARGS`.
pub fn ssh_to_barman(lab: &Lab, remote: &[&str]) -> Output {
    lab.command_as_postgres("ssh")
        .args(lab.ssh_args())
        .arg(lab.barman_ssh_host())
        .args(remote.iter().map(|word| lab::shell_quote(word)))
        .output()
        .expect("run ssh as postgres")
}

/// Stops the lab explicitly and checks that nothing of it is left: the directory is gone, its
/// servers no longer listen, and no process was left to kill (`stop` reports those).
pub fn stop_and_check_gone(lab: Lab) {
    let dir = lab.dir().to_path_buf();
    let ports = [lab.primary_port(), lab.ssh_port()];
    lab.stop().expect("an orderly stop");
    assert!(!dir.exists(), "{} still exists", dir.display());
    for port in ports {
        assert!(
            TcpStream::connect(("127.0.0.1", port)).is_err(),
            "port {port} still open"
        );
    }
}
