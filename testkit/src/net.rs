//! Loopback networking for tests: free ports, waiting for a port, a minimal HTTP GET.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::{Duration, Instant};

/// A TCP port nothing listens on at 127.0.0.1 right now (a later bind may still race).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("binding 127.0.0.1:0")
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
