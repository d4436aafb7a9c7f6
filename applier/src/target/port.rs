//! Who holds a TCP port and which processes are left in a process group, read from `/proc`:
//! what `stop` waits on (a service is stopped when its whole group is gone and its port is free)
//! and what the "port in use" refusal names (the holder's pid and command).
//!
//! Linux only, like the rest of the target: `/proc/net/tcp` and `/proc/net/tcp6` give the
//! inode of each listening socket, `/proc/<pid>/fd` links name the sockets a process holds,
//! `/proc/<pid>/stat` gives a process's group and state. Whatever cannot be read (another
//! user's process) is skipped: the answers are "as far as this user can see".

use std::fs;
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

/// A process holding a port.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Holder {
    pub pid: i32,
    /// Its command line, arguments joined by spaces (at most 200 bytes).
    pub command: String,
}

impl std::fmt::Display for Holder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "pid {} ({})", self.pid, self.command)
    }
}

/// True if something accepts connections on `127.0.0.1:port`.
pub fn answers(port: u16) -> bool {
    TcpStream::connect_timeout(
        &SocketAddr::from(([127, 0, 0, 1], port)),
        Duration::from_millis(250),
    )
    .is_ok()
}

/// True if a socket listens on `port` (any address, IPv4 or IPv6), as the kernel lists them.
pub fn listening(port: u16) -> bool {
    !listen_inodes(port).is_empty()
}

/// The processes that hold a listening socket on `port`.
pub fn holders(port: u16) -> Vec<Holder> {
    let inodes = listen_inodes(port);
    if inodes.is_empty() {
        return vec![];
    }
    let mut out = Vec::new();
    for pid in pids() {
        let Ok(fds) = fs::read_dir(format!("/proc/{pid}/fd")) else {
            continue;
        };
        let holds = fds.flatten().any(|fd| {
            fs::read_link(fd.path()).is_ok_and(|l| {
                let l = l.to_string_lossy();
                l.strip_prefix("socket:[")
                    .and_then(|r| r.strip_suffix(']'))
                    .is_some_and(|i| inodes.iter().any(|n| n == i))
            })
        });
        if holds {
            out.push(Holder {
                pid,
                command: command(pid),
            });
        }
    }
    out
}

/// The live (not zombie) processes whose process group is `pgid`.
pub fn group_members(pgid: i32) -> Vec<i32> {
    pids()
        .into_iter()
        .filter(|pid| {
            fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
                // `pid (comm) state ppid pgrp ...`; comm may hold spaces and parentheses.
                let Some((_, rest)) = s.rsplit_once(')') else {
                    return false;
                };
                let mut f = rest.split_whitespace();
                let state = f.next().unwrap_or("");
                let pgrp = f.nth(1).and_then(|g| g.parse::<i32>().ok());
                pgrp == Some(pgid) && state != "Z" && state != "X"
            })
        })
        .collect()
}

/// `pid`'s command line for a message.
pub fn command(pid: i32) -> String {
    let raw = fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    let mut s: String = String::from_utf8_lossy(&raw)
        .split('\0')
        .filter(|a| !a.is_empty())
        .collect::<Vec<_>>()
        .join(" ");
    if s.is_empty() {
        return "?".into();
    }
    if s.len() > 200 {
        let mut end = 200;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
        s.push_str("...");
    }
    s
}

fn pids() -> Vec<i32> {
    fs::read_dir("/proc")
        .map(|rd| {
            rd.flatten()
                .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
                .collect()
        })
        .unwrap_or_default()
}

/// Inodes of the sockets in state LISTEN (`0A`) on local port `port`.
fn listen_inodes(port: u16) -> Vec<String> {
    let want = format!("{port:04X}");
    let mut out = Vec::new();
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let Ok(text) = fs::read_to_string(table) else {
            continue;
        };
        for line in text.lines().skip(1) {
            let f: Vec<&str> = line.split_whitespace().collect();
            // sl local_address rem_address st tx_queue:rx_queue tr:tm->when retrnsmt uid timeout inode
            if f.len() < 10 || f[3] != "0A" {
                continue;
            }
            if f[1].rsplit_once(':').is_some_and(|(_, p)| p == want) {
                out.push(f[9].to_string());
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_this_process_as_the_holder_of_its_listening_port() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        assert!(listening(port) && answers(port));
        let me = std::process::id() as i32;
        let h = holders(port);
        assert!(h.iter().any(|h| h.pid == me), "{h:?}");
        drop(l);
        // Once closed, this process is not named. (Whether the port is free is not asserted:
        // any process on the machine may bind it the moment it is closed.)
        let h = holders(port);
        assert!(!h.iter().any(|h| h.pid == me), "{h:?}");
        if h.is_empty() {
            assert!(!listening(port));
        }
    }

    #[test]
    fn a_group_lists_its_live_members() {
        use std::os::unix::process::CommandExt;
        let mut c = std::process::Command::new("sleep")
            .arg("30")
            .process_group(0)
            .spawn()
            .unwrap();
        let pid = c.id() as i32;
        assert_eq!(group_members(pid), [pid]);
        c.kill().unwrap();
        c.wait().unwrap();
        assert!(group_members(pid).is_empty());
    }
}
