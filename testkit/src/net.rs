//! Loopback networking for tests: free ports, waiting for a port, a minimal HTTP GET.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::{Duration, Instant};

/// Where [`free_port`] chooses: below the kernel's ephemeral range (32768-60999 by default)
/// and above the test bed's ports (17200-17399).
const PORTS: std::ops::Range<u32> = 20000..32000;

/// A TCP port nothing listens on at 127.0.0.1 right now, for a service a test starts later
/// (a later bind may still race with another test's choice).
///
/// Not a port from `bind(0)`: that one is ephemeral, and any outgoing connection on the
/// machine (S3 requests, ssh, health checks of the tests running beside) may take it as its
/// local port before the service binds it, so the service's start fails with the port in use.
/// Each process walks [`PORTS`] from its own starting point.
pub fn free_port() -> u16 {
    use std::sync::OnceLock;
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    static START: OnceLock<u32> = OnceLock::new();
    let span = PORTS.end - PORTS.start;
    let start = *START.get_or_init(|| {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        std::process::id().wrapping_mul(2_654_435_761) ^ nanos
    });
    for _ in 0..span {
        // 101 is prime to the span, so the walk visits every port before it repeats.
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let port = PORTS.start + start.wrapping_add(n.wrapping_mul(101)) % span;
        let port = u16::try_from(port).expect("PORTS is within u16");
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port in 127.0.0.1:{PORTS:?}")
}

/// True if something accepts TCP connections on 127.0.0.1:`port`.
pub fn port_open(port: u16) -> bool {
    TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), Duration::from_millis(500)).is_ok()
}

/// Polls every 50 ms until `f` is true or `timeout` passed; returns the last answer.
pub fn wait_until(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + timeout;
    loop {
        if f() {
            return true;
        }
        if Instant::now() >= end {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Waits until 127.0.0.1:`port` accepts connections; false after `timeout`.
pub fn wait_port(port: u16, timeout: Duration) -> bool {
    wait_until(timeout, || port_open(port))
}

/// `GET http://127.0.0.1:<port><path>` over HTTP/1.0: (status, body), or None when nothing
/// answers or the answer is not HTTP.
pub fn http_get_status(port: u16, path: &str) -> Option<(u16, String)> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").ok()?;
    let mut buf = String::new();
    s.read_to_string(&mut buf).ok()?;
    let (head, body) = buf.split_once("\r\n\r\n")?;
    let status = head.split_whitespace().nth(1)?.parse().ok()?;
    Some((status, body.to_string()))
}

/// The body of a 200 answer to `GET http://127.0.0.1:<port><path>`, else None.
pub fn http_get(port: u16, path: &str) -> Option<String> {
    http_get_status(port, path).and_then(|(st, body)| (st == 200).then_some(body))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn free_ports_are_outside_the_ephemeral_range_distinct_and_bindable() {
        let ports: Vec<u16> = (0..50).map(|_| free_port()).collect();
        let distinct: std::collections::BTreeSet<u16> = ports.iter().copied().collect();
        assert_eq!(distinct.len(), ports.len(), "{ports:?}");
        for p in ports {
            assert!(PORTS.contains(&u32::from(p)), "{p}");
            TcpListener::bind(("127.0.0.1", p)).unwrap();
        }
    }
}
