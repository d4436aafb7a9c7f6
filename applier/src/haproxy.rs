//! The `haproxy` pool driver: HAProxy's runtime API on its admin socket.
//!
//! Depool: `set server <backend>/<server> state drain` (no new requests), wait until the
//! server's current sessions (`show stat`, `scur`) reach zero or the drain timeout passes,
//! then `state maint`, and confirm by reading `show servers state` back. Repool:
//! `state ready`, confirmed the same way, then wait until the health checks see the server up
//! (so the next host is not taken out while this one is not serving yet). The capacity guard
//! asks [`Pool::out_of_pool`]: servers in maintenance or drain, whoever put them there.
//!
//! The runtime API is reached one command per connection (as HAProxy's non-interactive mode
//! does), either on a UNIX socket on the deploy host, or, where HAProxy runs on its own
//! load-balancer host, through the system `ssh` to that host (`via_ssh`, the same
//! [`SshCommand`] the ssh transport uses), which runs `socat stdio UNIX-CONNECT:<socket>`
//! there: the socket never leaves the LB host.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use crate::host::Host;
use crate::host::ssh::{SshCommand, shell_quote};
use crate::pool::{Pool, PoolError};

/// `srv_admin_state` bits: forced maintenance, inherited maintenance, forced drain, inherited
/// drain, maintenance because of an address resolution failure.
const ADMIN_MAINT: u32 = 0x01 | 0x02 | 0x20;
const ADMIN_DRAIN: u32 = 0x08 | 0x10;
/// `srv_op_state` of a running server.
const OP_RUNNING: u32 = 2;

/// One server's line of `show servers state`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServerState {
    pub name: String,
    pub op_state: u32,
    pub admin_state: u32,
}

impl ServerState {
    /// In maintenance or drain (taken out by someone).
    pub fn out(&self) -> bool {
        self.admin_state & (ADMIN_MAINT | ADMIN_DRAIN) != 0
    }
    pub fn maint(&self) -> bool {
        self.admin_state & ADMIN_MAINT != 0
    }
    pub fn up(&self) -> bool {
        self.op_state == OP_RUNNING && !self.out()
    }
}

/// How to reach an admin socket on another host: the system `ssh` (so ssh_config, agent and
/// known_hosts apply) in batch mode.
#[derive(Clone, Debug, Default)]
pub struct SshHop {
    /// `[user@]host` or an ssh_config alias.
    pub destination: String,
    /// `ssh -F <file>`.
    pub config_file: Option<PathBuf>,
}

#[derive(Debug)]
pub struct HaproxyPool {
    pub socket: PathBuf,
    /// Reach `socket` on another host through ssh.
    pub via_ssh: Option<SshHop>,
    pub backend: String,
    pub servers: BTreeMap<String, String>,
    pub drain_timeout: Duration,
    pub timeout: Duration,
}

/// Parses `show servers state [<backend>]` (format version 1) for one backend.
pub fn parse_servers_state(text: &str, backend: &str) -> Result<Vec<ServerState>, String> {
    let mut cols: Option<Vec<&str>> = None;
    let mut out = Vec::new();
    for line in text.lines() {
        if let Some(h) = line.strip_prefix("# ") {
            cols = Some(h.split_whitespace().collect());
            continue;
        }
        let line = line.trim();
        if line.is_empty() || line == "1" || line.starts_with('#') {
            continue;
        }
        let Some(c) = &cols else { continue };
        let idx = |n: &str| c.iter().position(|x| *x == n);
        let (Some(b), Some(s), Some(o), Some(a)) = (
            idx("be_name"),
            idx("srv_name"),
            idx("srv_op_state"),
            idx("srv_admin_state"),
        ) else {
            return Err(format!("unexpected `show servers state` header: {c:?}"));
        };
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() <= b.max(s).max(o).max(a) || f[b] != backend {
            continue;
        }
        out.push(ServerState {
            name: f[s].to_string(),
            op_state: f[o]
                .parse()
                .map_err(|_| format!("bad op state in {line:?}"))?,
            admin_state: f[a]
                .parse()
                .map_err(|_| format!("bad admin state in {line:?}"))?,
        });
    }
    if cols.is_none() {
        return Err(format!(
            "unexpected `show servers state` answer: {}",
            text.trim()
        ));
    }
    Ok(out)
}

/// `scur` of one server from `show stat` (CSV).
pub fn parse_scur(csv: &str, backend: &str, server: &str) -> Result<u64, String> {
    let mut lines = csv.lines();
    let header = lines.next().ok_or("empty `show stat` answer")?;
    let cols: Vec<&str> = header.trim_start_matches("# ").split(',').collect();
    let scur = cols
        .iter()
        .position(|c| *c == "scur")
        .ok_or("no scur column in `show stat`")?;
    for l in lines {
        let f: Vec<&str> = l.split(',').collect();
        if f.len() > scur && f[0] == backend && f[1] == server {
            return f[scur].parse().map_err(|_| format!("bad scur in {l:?}"));
        }
    }
    Err(format!("no server {backend}/{server} in `show stat`"))
}

impl HaproxyPool {
    fn server<'a>(&'a self, host: &'a str) -> &'a str {
        self.servers.get(host).map(String::as_str).unwrap_or(host)
    }

    /// Sends one command, returns the answer.
    pub fn command(&self, cmd: &str) -> Result<String, String> {
        if let Some(hop) = &self.via_ssh {
            return self.command_via_ssh(hop, cmd);
        }
        let mut s = UnixStream::connect(&self.socket)
            .map_err(|e| format!("connecting to {}: {e}", self.socket.display()))?;
        let t = Some(Duration::from_secs(10));
        let _ = s.set_read_timeout(t);
        let _ = s.set_write_timeout(t);
        s.write_all(format!("{cmd}\n").as_bytes())
            .map_err(|e| format!("sending {cmd:?}: {e}"))?;
        let mut out = String::new();
        s.read_to_string(&mut out)
            .map_err(|e| format!("reading the answer to {cmd:?}: {e}"))?;
        Ok(out)
    }

    fn command_via_ssh(&self, hop: &SshHop, cmd: &str) -> Result<String, String> {
        use std::process::Stdio;
        let mut c = SshCommand::plain(hop.config_file.clone(), Duration::from_secs(5)).command();
        let remote = format!(
            "socat stdio UNIX-CONNECT:{}",
            shell_quote(&self.socket.to_string_lossy())
        );
        c.arg(&hop.destination)
            .arg(remote)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let where_ = format!("{} on {}", self.socket.display(), hop.destination);
        let mut child = c.spawn().map_err(|e| format!("running ssh: {e}"))?;
        child
            .stdin
            .take()
            .expect("piped stdin")
            .write_all(format!("{cmd}\n").as_bytes())
            .map_err(|e| format!("sending {cmd:?} to {where_}: {e}"))?;
        let out = child
            .wait_with_output()
            .map_err(|e| format!("reading the answer to {cmd:?} from {where_}: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "{cmd:?} via ssh to {where_} failed ({}): {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// A `set ...` command: HAProxy answers nothing on success, a message on failure.
    fn set(&self, cmd: &str) -> Result<(), String> {
        let a = self.command(cmd)?;
        if a.trim().is_empty() {
            Ok(())
        } else {
            Err(format!("{cmd:?}: {}", a.trim()))
        }
    }

    pub fn servers_state(&self) -> Result<Vec<ServerState>, String> {
        let a = self.command(&format!("show servers state {}", self.backend))?;
        parse_servers_state(&a, &self.backend)
    }

    fn state_of(&self, server: &str) -> Result<ServerState, String> {
        self.servers_state()?
            .into_iter()
            .find(|s| s.name == server)
            .ok_or_else(|| format!("no server {}/{server}", self.backend))
    }

    pub fn scur(&self, server: &str) -> Result<u64, String> {
        let a = self.command("show stat")?;
        parse_scur(&a, &self.backend, server)
    }

    fn wait(
        &self,
        timeout: Duration,
        mut f: impl FnMut() -> Result<bool, String>,
    ) -> Result<bool, String> {
        let t0 = Instant::now();
        loop {
            if f()? {
                return Ok(true);
            }
            if t0.elapsed() >= timeout {
                return Ok(false);
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Pool for HaproxyPool {
    fn depool(&self, host: &dyn Host, _: Option<u16>) -> Result<(), PoolError> {
        let srv = self.server(host.name());
        let err = |detail: String| PoolError {
            action: "depool",
            host: host.name().to_string(),
            detail,
        };
        let full = format!("{}/{srv}", self.backend);
        let st = self.state_of(srv).map_err(err)?;
        if !st.maint() {
            self.set(&format!("set server {full} state drain"))
                .map_err(err)?;
            // In-flight requests finish; keep-alive clients are sent elsewhere.
            let drained = self
                .wait(self.drain_timeout, || Ok(self.scur(srv)? == 0))
                .map_err(err)?;
            if !drained {
                tracing::warn!(
                    "{full}: sessions still open after {}s of drain",
                    self.drain_timeout.as_secs()
                );
            }
            self.set(&format!("set server {full} state maint"))
                .map_err(err)?;
        }
        let st = self.state_of(srv).map_err(err)?;
        if !st.maint() {
            return Err(err(format!(
                "{full} is not in maintenance after `state maint` (admin state {})",
                st.admin_state
            )));
        }
        Ok(())
    }

    fn repool(&self, host: &dyn Host, _: Option<u16>) -> Result<(), PoolError> {
        let srv = self.server(host.name());
        let err = |detail: String| PoolError {
            action: "repool",
            host: host.name().to_string(),
            detail,
        };
        let full = format!("{}/{srv}", self.backend);
        self.set(&format!("set server {full} state ready"))
            .map_err(err)?;
        let st = self.state_of(srv).map_err(err)?;
        if st.out() {
            return Err(err(format!(
                "{full} is still out after `state ready` (admin state {})",
                st.admin_state
            )));
        }
        let up = self
            .wait(self.timeout, || Ok(self.state_of(srv)?.up()))
            .map_err(err)?;
        if !up {
            return Err(err(format!(
                "{full} was not seen up by its health checks within {}s",
                self.timeout.as_secs()
            )));
        }
        Ok(())
    }

    fn out_of_pool(&self, hosts: &[String]) -> Result<Vec<String>, PoolError> {
        let states = self.servers_state().map_err(|detail| PoolError {
            action: "state",
            host: self.backend.clone(),
            detail,
        })?;
        Ok(hosts
            .iter()
            .filter(|h| states.iter().any(|s| s.name == self.server(h) && s.out()))
            .cloned()
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn servers_state_and_stat() {
        let text = "1\n# be_id be_name srv_id srv_name srv_addr srv_op_state srv_admin_state srv_uweight\n\
                    3 fixture 1 t1 127.0.0.1 2 0 1\n3 fixture 2 t2 127.0.0.1 0 1 1\n3 fixture 3 t3 127.0.0.1 2 8 1\n\
                    4 other 1 t1 127.0.0.1 0 1 1\n";
        let s = parse_servers_state(text, "fixture").unwrap();
        assert_eq!(s.len(), 3);
        assert!(s[0].up() && !s[0].out());
        assert!(s[1].maint() && s[1].out());
        assert!(!s[2].maint() && s[2].out() && !s[2].up());
        assert!(parse_servers_state("Unknown command\n", "fixture").is_err());
        let csv =
            "# pxname,svname,qcur,qmax,scur,smax\nfixture,t1,0,0,3,9\nfixture,BACKEND,0,0,3,9\n";
        assert_eq!(parse_scur(csv, "fixture", "t1").unwrap(), 3);
        assert!(parse_scur(csv, "fixture", "t9").is_err());
    }
}
