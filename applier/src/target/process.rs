//! The service process: start (detached, own process group, output into a per-start log) and
//! stop (its stop signal to the process group, SIGKILL after the stop timeout). The readiness
//! wait is in [`super::ready`].

use std::fs;
use std::io;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

use super::{CommandEnv, HostRoot, service_env, unix_ms, write_atomic};
use crate::protocol::{HostError, RunInfo, StartRequest, StopReport, io_err};
use crate::service::{ServiceSpec, signal_number};

impl HostRoot {
    /// Starts the current release as a detached process (own process group), stdout and
    /// stderr into `logs/<sha>-<start>.log`.
    pub fn start(&self, req: &StartRequest) -> Result<(StartedChild, RunInfo), HostError> {
        let commit = self
            .current()
            .ok_or_else(|| HostError::NotFetched("(no current release)".into()))?;
        if let Some(run) = self.running()? {
            return Err(HostError::Preflight(format!(
                "the service is already running (pid {})",
                run.pid
            )));
        }
        let spec = self.service_spec(&commit)?;
        // A port already bound by a process that is not our service would answer the readiness
        // wait and the checks in its place: refuse rather than test the wrong process.
        if let Some(port) = req.port.or(spec.port)
            && (super::port::listening(port) || super::port::answers(port))
        {
            let who = super::port::holders(port);
            let who = if who.is_empty() {
                "a process this user cannot see".to_string()
            } else {
                who.iter()
                    .map(|h| h.to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            return Err(HostError::Preflight(format!(
                "port {port} is already in use by {who}, not this service; refusing to start (its readiness and checks would test that process)"
            )));
        }
        self.begin("start", Some(&commit))?;
        let r = self.spawn_service(&commit, &spec, req);
        self.end()?;
        r
    }

    fn spawn_service(
        &self,
        commit: &str,
        spec: &ServiceSpec,
        req: &StartRequest,
    ) -> Result<(StartedChild, RunInfo), HostError> {
        let commit = commit.to_string();
        let dir =
            fs::canonicalize(self.release_dir(&commit)).map_err(io_err("resolving release dir"))?;
        let config = dir.join("config.yaml");
        let started = SystemTime::now();
        let ms = unix_ms(started);
        let log = self.root.join("logs").join(format!("{commit}-{ms}.log"));
        let logf = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .map_err(io_err(format!("opening {}", log.display())))?;
        let logf2 = logf.try_clone().map_err(io_err("duplicating log fd"))?;
        let port = req.port.map(|p| p.to_string()).unwrap_or_default();
        let argv: Vec<String> = spec
            .start
            .iter()
            .map(|a| {
                a.replace("{config}", &config.display().to_string())
                    .replace("{port}", &port)
                    .replace("{release}", &commit)
            })
            .collect();
        let mut cmd = Command::new(&argv[0]);
        // The documented minimal base and the inventory's `env`, nothing of this process.
        CommandEnv::Clean(&service_env(&self.root, &req.env)).apply(&mut cmd);
        cmd.args(&argv[1..])
            .current_dir(&dir)
            .stdin(Stdio::null())
            .stdout(Stdio::from(logf))
            .stderr(Stdio::from(logf2))
            .process_group(0);
        let child = cmd
            .spawn()
            .map_err(io_err(format!("starting {:?}", argv)))?;
        let info = RunInfo {
            pid: child.id() as i32,
            release: commit,
            port: req.port,
            log: log.display().to_string(),
            started_at: humantime::format_rfc3339_millis(started).to_string(),
            started_unix_ms: ms,
        };
        write_atomic(
            &self.run_path(),
            &serde_json::to_vec_pretty(&info).expect("serialises"),
        )?;
        Ok((StartedChild(Some(child)), info))
    }

    /// The running instance, if its process is alive (stale records are removed).
    pub fn running(&self) -> Result<Option<RunInfo>, HostError> {
        let b = match fs::read(self.run_path()) {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io_err("reading run/service.json")(e)),
        };
        let Ok(info) = serde_json::from_slice::<RunInfo>(&b) else {
            let _ = fs::remove_file(self.run_path());
            return Ok(None);
        };
        if self.is_ours(info.pid) {
            Ok(Some(info))
        } else {
            let _ = fs::remove_file(self.run_path());
            Ok(None)
        }
    }

    /// True if `pid` is alive (not a zombie) and runs from one of this root's releases.
    pub(super) fn is_ours(&self, pid: i32) -> bool {
        if !pid_alive(pid) {
            return false;
        }
        let Ok(cwd) = fs::read_link(format!("/proc/{pid}/cwd")) else {
            return false;
        };
        let Ok(releases) = fs::canonicalize(self.root.join("releases")) else {
            return false;
        };
        cwd.starts_with(releases)
    }

    /// SIGKILL to the live members of process group `pgid` that run from this root's
    /// releases (a dead leader's workers), waiting up to 5 s for them to go.
    fn kill_leftovers(&self, pgid: i32) {
        let left: Vec<i32> = super::port::group_members(pgid)
            .into_iter()
            .filter(|p| self.is_ours(*p))
            .collect();
        for p in &left {
            if let Some(pid) = rustix::process::Pid::from_raw(*p) {
                let _ = rustix::process::kill_process(pid, rustix::process::Signal::KILL);
            }
        }
        let t0 = Instant::now();
        while left.iter().any(|p| pid_alive(*p)) && t0.elapsed() < Duration::from_secs(5) {
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub(super) fn last_log_tail(&self) -> String {
        fs::read(self.run_path())
            .ok()
            .and_then(|b| serde_json::from_slice::<RunInfo>(&b).ok())
            .map(|i| tail(&i.log))
            .unwrap_or_else(|| "(no log)".into())
    }

    /// Stops the running instance: its stop signal to the process group, then waits until the
    /// whole group has exited and its port is free; SIGKILL to the group after the stop
    /// timeout (`killed` in the report), an error naming what is left if even that fails.
    pub fn stop(&self) -> Result<StopReport, HostError> {
        let recorded = fs::read(self.run_path())
            .ok()
            .and_then(|b| serde_json::from_slice::<RunInfo>(&b).ok());
        let Some(info) = self.running()? else {
            // The leader is gone; what is left of its group that runs from our releases (a
            // worker still holding the port) is killed, or the next start would refuse.
            if let Some(r) = recorded {
                self.kill_leftovers(r.pid);
            }
            let _ = fs::remove_file(self.run_path());
            return Ok(StopReport {
                stopped: None,
                killed: false,
            });
        };
        self.begin("stop", Some(&info.release))?;
        let spec = self.service_spec(&info.release).unwrap_or_default();
        let sig = signal_number(&spec.stop.signal).unwrap_or(15);
        let signal =
            rustix::process::Signal::from_named_raw(sig).unwrap_or(rustix::process::Signal::TERM);
        let pid =
            rustix::process::Pid::from_raw(info.pid).ok_or_else(|| HostError::StopFailed {
                pid: info.pid,
                detail: "bad pid".into(),
            })?;
        let _ = rustix::process::kill_process_group(pid, signal);
        let _ = rustix::process::kill_process(pid, signal);
        // Stopped means the whole process group has exited and the port is free: a worker
        // that outlives its leader, or a socket still held, is waited for like the leader.
        let port = info.port.or(spec.port);
        let gone = || {
            !pid_alive(info.pid)
                && super::port::group_members(info.pid).is_empty()
                && port.is_none_or(|p| !super::port::listening(p))
        };
        let deadline = Instant::now() + spec.stop.timeout.0;
        let mut killed = false;
        while !gone() {
            if Instant::now() >= deadline {
                let _ = rustix::process::kill_process_group(pid, rustix::process::Signal::KILL);
                let _ = rustix::process::kill_process(pid, rustix::process::Signal::KILL);
                killed = true;
                let hard = Instant::now() + Duration::from_secs(5);
                while !gone() {
                    if Instant::now() >= hard {
                        let left = super::port::group_members(info.pid);
                        let holders = port.map(super::port::holders).unwrap_or_default();
                        return Err(HostError::StopFailed {
                            pid: info.pid,
                            detail: format!(
                                "still there 5 s after SIGKILL: {}{}",
                                if left.is_empty() {
                                    "no process of its group".to_string()
                                } else {
                                    format!("processes {left:?} of its group")
                                },
                                if holders.is_empty() {
                                    String::new()
                                } else {
                                    format!(
                                        "; port {} held by {}",
                                        port.unwrap_or_default(),
                                        holders
                                            .iter()
                                            .map(|h| h.to_string())
                                            .collect::<Vec<_>>()
                                            .join(", ")
                                    )
                                }
                            ),
                        });
                    }
                    std::thread::sleep(Duration::from_millis(20));
                }
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = fs::remove_file(self.run_path());
        self.end()?;
        Ok(StopReport {
            stopped: Some(info.pid),
            killed,
        })
    }
}

/// The child of an in-process start. Dropping it reaps the process in the background, so a
/// dead service never lingers as a zombie that looks alive.
#[derive(Debug)]
pub struct StartedChild(Option<std::process::Child>);

impl Drop for StartedChild {
    fn drop(&mut self) {
        if let Some(mut c) = self.0.take() {
            std::thread::spawn(move || {
                let _ = c.wait();
            });
        }
    }
}

/// True if the process exists and is not a zombie.
pub fn pid_alive(pid: i32) -> bool {
    let Some(p) = rustix::process::Pid::from_raw(pid) else {
        return false;
    };
    if rustix::process::test_kill_process(p).is_err() {
        return false;
    }
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(s) => {
            let state = s
                .rsplit_once(')')
                .map(|(_, rest)| rest.trim_start().chars().next())
                .unwrap_or(None);
            !matches!(state, Some('Z') | Some('X'))
        }
        Err(_) => false,
    }
}

/// What a failed start says about its log: the one line that tells why (the last at level
/// error or above, else the last line), truncated, and the log's path.
pub(super) fn tail(path: &str) -> String {
    let text = fs::read(path)
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default();
    let level = |l: &str| {
        serde_json::from_str::<serde_json::Value>(l)
            .ok()
            .and_then(|v| v.get("level").and_then(serde_json::Value::as_u64))
    };
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    let line = lines
        .iter()
        .rev()
        .find(|l| level(l).is_some_and(|n| n >= 50))
        .or(lines.last());
    match line {
        None => format!("(log {path} is empty)"),
        Some(l) => format!("{} (log {path})", quote_line(l)),
    }
}

/// A log line quoted for a message: at most [`QUOTE_MAX`] bytes, cut on a character boundary.
pub fn quote_line(line: &str) -> String {
    let l = line.trim();
    if l.len() <= QUOTE_MAX {
        return format!("{l:?}");
    }
    let mut end = QUOTE_MAX;
    while !l.is_char_boundary(end) {
        end -= 1;
    }
    format!("{:?}... ({} more bytes)", &l[..end], l.len() - end)
}

/// The most of one log line a message quotes.
pub const QUOTE_MAX: usize = 240;
