//! Free TCP ports on 127.0.0.1 for the lab's servers. It only probes; it never holds a port.

use std::collections::BTreeSet;
use std::net::TcpListener;
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

/// Ports are drawn from below Linux's ephemeral range (32768–60999), so an outgoing connection
/// cannot take one between the probe and the server binding it.
const FIRST: u16 = 20000;
const COUNT: u16 = 12000;

/// A TCP port on 127.0.0.1 that is free now and not handed out before by this process.
///
/// Random within 20000–31999, so concurrent test processes rarely collide; a port is probed by
/// binding it. A server that then fails to bind reports it in its own error.
///
/// # Panics
/// When no port can be bound on 127.0.0.1 at all (no loopback interface).
pub fn free_port() -> u16 {
    static HANDED_OUT: Mutex<BTreeSet<u16>> = Mutex::new(BTreeSet::new());
    let mut handed_out = HANDED_OUT.lock().unwrap_or_else(|e| e.into_inner());
    let mut state = seed();
    for _ in 0..1000 {
        // xorshift64: plenty for spreading ports, and no dependency.
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        let port = FIRST + (state % u64::from(COUNT)) as u16;
        if !handed_out.contains(&port) && TcpListener::bind(("127.0.0.1", port)).is_ok() {
            handed_out.insert(port);
            return port;
        }
    }
    let port = TcpListener::bind(("127.0.0.1", 0))
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("lab: cannot bind any TCP port on 127.0.0.1");
    handed_out.insert(port);
    port
}

fn seed() -> u64 {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    (nanos ^ (u64::from(std::process::id()) << 32)) | 1
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_are_distinct_bindable_and_in_range() {
        let ports: BTreeSet<u16> = (0..20).map(|_| free_port()).collect();
        assert_eq!(ports.len(), 20);
        for port in ports {
            assert!((FIRST..FIRST + COUNT).contains(&port), "{port}");
            TcpListener::bind(("127.0.0.1", port)).unwrap();
        }
    }
}
