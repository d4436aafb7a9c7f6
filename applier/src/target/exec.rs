//! What the checks read on a host: files under its root (logs) and the output of shell
//! commands, with a timeout after which the command's whole process group is killed.

use std::fs;
use std::io::{self, Read};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::{CommandEnv, HostRoot};
use crate::protocol::{ExecOutput, HostError, io_err};

impl HostRoot {
    /// Reads a file under this root (logs).
    pub fn read_file(&self, path: &str) -> Result<Vec<u8>, HostError> {
        let p = Path::new(path);
        let root = fs::canonicalize(&self.root).map_err(io_err("resolving root"))?;
        let real = fs::canonicalize(p).map_err(io_err(format!("resolving {path}")))?;
        if !real.starts_with(&root) {
            return Err(HostError::Transport(format!(
                "{path} is outside the host root"
            )));
        }
        fs::read(&real).map_err(io_err(format!("reading {path}")))
    }
}

/// Runs `sh -c cmd` in `env` with a timeout, capturing output.
pub fn exec(cmd: &str, timeout: Duration, env: CommandEnv<'_>) -> Result<ExecOutput, HostError> {
    let mut command = Command::new("sh");
    env.apply(&mut command);
    let mut child = command
        .args(["-c", cmd])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .spawn()
        .map_err(io_err(format!("running {cmd:?}")))?;
    match wait_output(&mut child, timeout, true).map_err(io_err(format!("waiting for {cmd:?}")))? {
        Some(out) => Ok(out),
        None => Err(HostError::Transport(format!(
            "{cmd:?} timed out after {}s",
            timeout.as_secs()
        ))),
    }
}

/// Reads a spawned child's stdout and stderr (both piped) to the end while waiting for it, up
/// to `timeout`. On timeout the child (with `kill_group`: its whole process group) is killed
/// and `Ok(None)` returned.
pub fn wait_output(
    child: &mut std::process::Child,
    timeout: Duration,
    kill_group: bool,
) -> io::Result<Option<ExecOutput>> {
    let drain = |r: Option<Box<dyn Read + Send>>| {
        std::thread::spawn(move || {
            let mut s = Vec::new();
            if let Some(mut r) = r {
                let _ = r.read_to_end(&mut s);
            }
            s
        })
    };
    let t1 = drain(
        child
            .stdout
            .take()
            .map(|r| Box::new(r) as Box<dyn Read + Send>),
    );
    let t2 = drain(
        child
            .stderr
            .take()
            .map(|r| Box::new(r) as Box<dyn Read + Send>),
    );
    let deadline = Instant::now() + timeout;
    let status = loop {
        match child.try_wait()? {
            Some(s) => break s,
            None if Instant::now() >= deadline => {
                if kill_group && let Some(p) = rustix::process::Pid::from_raw(child.id() as i32) {
                    let _ = rustix::process::kill_process_group(p, rustix::process::Signal::KILL);
                }
                let _ = child.kill();
                let _ = child.wait();
                return Ok(None);
            }
            None => std::thread::sleep(Duration::from_millis(10)),
        }
    };
    Ok(Some(ExecOutput {
        status: status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&t1.join().unwrap_or_default()).into_owned(),
        stderr: String::from_utf8_lossy(&t2.join().unwrap_or_default()).into_owned(),
    }))
}
