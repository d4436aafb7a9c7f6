//! The readiness wait on the target: the port accepts connections while the process is still
//! ours, then every probe of the service's `ready:` section passes (an HTTP answer, a line in
//! this start's log, a command exiting 0), all before the deadline; then the instance stays
//! alive, and its HTTP probe passing, for `min_healthy`. Nothing here sleeps for a fixed
//! time: each step polls what it waits for and returns as soon as it is seen.

use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::HostRoot;
use super::process::tail;
use crate::protocol::{HostError, ReadyReport, ReadyRequest, RunInfo, io_err};
use model::service::{ReadyHttp, ReadySpec};

const POLL: Duration = Duration::from_millis(100);

struct Wait<'a> {
    root: &'a HostRoot,
    info: RunInfo,
    t0: Instant,
    deadline: Instant,
    secs: u64,
}

impl Wait<'_> {
    /// `Err` when the process is gone.
    fn alive(&self, what: &str) -> Result<(), HostError> {
        if self.root.is_ours(self.info.pid) {
            Ok(())
        } else {
            Err(HostError::Died(format!("{what}: {}", tail(&self.info.log))))
        }
    }

    fn ms(&self) -> u64 {
        self.t0.elapsed().as_millis() as u64
    }

    /// Polls `probe` until it passes (`Ok(None)`), the process dies, or the deadline passes;
    /// `probe` answers `Err(why not yet)`.
    fn until(
        &self,
        name: &str,
        mut probe: impl FnMut(Duration) -> Result<(), String>,
    ) -> Result<u64, HostError> {
        let mut last = String::from("not tried");
        loop {
            self.alive(&format!("exited while waiting for {name}"))?;
            let left = self.deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(HostError::NotReady(format!(
                    "{name} did not pass within {}s (last: {last}); {}",
                    self.secs,
                    tail(&self.info.log)
                )));
            }
            match probe(left) {
                Ok(()) => return Ok(self.ms()),
                Err(e) => last = e,
            }
            std::thread::sleep(POLL.min(self.deadline.saturating_duration_since(Instant::now())));
        }
    }
}

fn http_probe(addr: &SocketAddr, h: &ReadyHttp, left: Duration) -> Result<(), String> {
    let agent = crate::checks::agent(left.min(Duration::from_secs(2)));
    let url = format!("http://{addr}{}", h.path);
    let mut r = agent.get(&url).call().map_err(|e| e.to_string())?;
    let status = r.status().as_u16();
    let body = r
        .body_mut()
        .with_config()
        .limit(1 << 20)
        .read_to_string()
        .unwrap_or_default();
    if status != h.status {
        return Err(format!("GET {} answered {status}", h.path));
    }
    if let Some(needle) = &h.body_contains
        && !body.contains(needle.as_str())
    {
        return Err(format!("GET {}: body lacks {needle:?}", h.path));
    }
    Ok(())
}

fn log_probe(log: &str, needle: &str) -> Result<(), String> {
    let text = std::fs::read(log).map_err(|e| format!("reading {log}: {e}"))?;
    if String::from_utf8_lossy(&text)
        .lines()
        .any(|l| l.contains(needle))
    {
        Ok(())
    } else {
        Err(format!("no line with {needle:?} yet"))
    }
}

fn command_probe(argv: &[String], dir: &std::path::Path, left: Duration) -> Result<(), String> {
    let mut child = Command::new(&argv[0])
        .args(&argv[1..])
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("cannot run {}: {e}", argv[0]))?;
    let t0 = Instant::now();
    let limit = left.min(Duration::from_secs(10));
    loop {
        match child.try_wait() {
            Ok(Some(st)) if st.success() => return Ok(()),
            Ok(Some(st)) => return Err(format!("exited {}", st.code().unwrap_or(-1))),
            Ok(None) if t0.elapsed() >= limit => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("still running after {}s (killed)", limit.as_secs()));
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(20)),
            Err(e) => return Err(e.to_string()),
        }
    }
}

impl HostRoot {
    /// Waits until the instance is ready: its port, then its probes, then `min_healthy`;
    /// fails early if the process dies.
    pub fn wait_ready(&self, req: &ReadyRequest) -> Result<ReadyReport, HostError> {
        let t0 = Instant::now();
        let timeout = Duration::from_millis(req.timeout_ms);
        let Some(info) = self.running()? else {
            return Err(HostError::Died(self.last_log_tail()));
        };
        let addr = (req.address.as_str(), req.port)
            .to_socket_addrs()
            .map_err(io_err(format!("resolving {}", req.address)))?
            .next()
            .ok_or_else(|| HostError::Transport(format!("no address for {}", req.address)))?;
        let w = Wait {
            root: self,
            info,
            t0,
            deadline: t0 + timeout,
            secs: timeout.as_secs(),
        };
        // 1. The port.
        loop {
            if TcpStream::connect_timeout(&addr, Duration::from_millis(250)).is_ok() {
                w.alive(&format!("port {} answers but the service exited", req.port))?;
                break;
            }
            w.alive("the service exited")?;
            if Instant::now() >= w.deadline {
                return Err(HostError::Timeout {
                    port: req.port,
                    secs: w.secs,
                    detail: tail(&w.info.log),
                });
            }
            std::thread::sleep(POLL);
        }
        let port_ms = w.ms();
        let Some(spec) = &req.probe else {
            return Ok(ReadyReport {
                after_ms: port_ms,
                detail: None,
            });
        };
        let mut marks = vec![format!("port {} after {port_ms} ms", req.port)];
        // 2. Every probe, in turn, before the same deadline.
        marks.extend(self.probes(&w, &addr, spec)?);
        // 3. Healthy for min_healthy: alive, and the HTTP probe still passing.
        if let Some(m) = spec.min_healthy {
            let until = Instant::now() + m.0;
            while Instant::now() < until {
                w.alive(&format!("exited within min_healthy {}s", m.0.as_secs_f64()))?;
                if let Some(h) = &spec.http {
                    http_probe(&addr, h, Duration::from_secs(2)).map_err(|e| {
                        HostError::NotReady(format!(
                            "not healthy for min_healthy {}s: {e}",
                            m.0.as_secs_f64()
                        ))
                    })?;
                }
                std::thread::sleep(
                    Duration::from_millis(250).min(until.saturating_duration_since(Instant::now())),
                );
            }
            marks.push(format!("healthy for {}s", m.0.as_secs_f64()));
        }
        Ok(ReadyReport {
            after_ms: w.ms(),
            detail: Some(marks.join("; ")),
        })
    }

    fn probes(
        &self,
        w: &Wait<'_>,
        addr: &SocketAddr,
        spec: &ReadySpec,
    ) -> Result<Vec<String>, HostError> {
        let mut marks = Vec::new();
        if let Some(h) = &spec.http {
            let ms = w.until(&format!("GET {}", h.path), |left| http_probe(addr, h, left))?;
            marks.push(format!("GET {} {} after {ms} ms", h.path, h.status));
        }
        if let Some(needle) = &spec.log {
            let log = w.info.log.clone();
            let ms = w.until(&format!("log line {needle:?}"), |_| log_probe(&log, needle))?;
            marks.push(format!("log {needle:?} after {ms} ms"));
        }
        if let Some(argv) = &spec.command {
            let port = addr.port().to_string();
            let argv: Vec<String> = argv
                .iter()
                .map(|a| {
                    a.replace("{port}", &port)
                        .replace("{release}", &w.info.release)
                })
                .collect();
            if argv.is_empty() {
                return Err(HostError::NotReady("ready.command is empty".into()));
            }
            let dir = self.release_dir(&w.info.release);
            let ms = w.until(&format!("command {}", argv.join(" ")), |left| {
                command_probe(&argv, &dir, left)
            })?;
            marks.push(format!("command after {ms} ms"));
        }
        Ok(marks)
    }
}
