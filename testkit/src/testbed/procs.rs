//! Processes of the bed: daemons started in their own session (so they outlive the command
//! that started them and ignore its terminal), found again by pid file and command line (a
//! recycled pid is not mistaken for a daemon), stopped with TERM then KILL; and the bed's
//! lock, which serialises commands on one state dir.

use std::fs::File;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use rustix::process::{Pid, Signal};

use super::Error;

/// The pid in `pidfile` if that process is alive (not a zombie) and its command line
/// contains `needle`.
pub fn pid_of(pidfile: &Path, needle: &str) -> Option<i32> {
    let text = std::fs::read_to_string(pidfile).ok()?;
    let pid: i32 = text.lines().next()?.trim().parse().ok()?;
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
    (alive(pid) && cmdline.contains(needle)).then_some(pid)
}

/// True while `pid` exists and is not a zombie.
pub fn alive(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state follows the parenthesised command name.
        Ok(stat) => stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_some_and(|st| st != "Z" && st != "X"),
        Err(_) => false,
    }
}

fn signal(pid: i32, sig: Signal) {
    if let Some(p) = Pid::from_raw(pid) {
        let _ = rustix::process::kill_process(p, sig);
    }
}

/// Stops `pids`: TERM, up to 5 s, then KILL. Returns what is still alive after that.
pub fn stop_pids(pids: &[i32]) -> Vec<i32> {
    for &p in pids {
        signal(p, Signal::TERM);
    }
    let wait = |secs: u64| {
        let end = Instant::now() + Duration::from_secs(secs);
        loop {
            let left: Vec<i32> = pids.iter().copied().filter(|&p| alive(p)).collect();
            if left.is_empty() || Instant::now() >= end {
                return left;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    };
    let left = wait(5);
    if left.is_empty() {
        return left;
    }
    for &p in &left {
        signal(p, Signal::KILL);
    }
    wait(2)
}

/// Starts `program args` as a daemon in its own session (`setsid`), stdin from /dev/null,
/// stdout and stderr appended to `log`, with `env` added to the environment. Returns its
/// pid (`setsid` execs in place: it is the daemon's pid).
pub fn spawn_daemon(
    program: &str,
    args: &[String],
    env: &[(&str, String)],
    log: &Path,
) -> Result<i32, Error> {
    let out = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .map_err(|e| Error::Failed(format!("{}: {e}", log.display())))?;
    let err = out.try_clone().map_err(|e| Error::Failed(e.to_string()))?;
    let child = Command::new("setsid")
        .arg(program)
        .args(args)
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .spawn()
        .map_err(|e| Error::Failed(format!("starting {program}: {e}")))?;
    Ok(child.id() as i32)
}

/// Writes `pid` to `pidfile`.
pub fn write_pid(pidfile: &Path, pid: i32) -> Result<(), Error> {
    std::fs::write(pidfile, format!("{pid}\n"))
        .map_err(|e| Error::Failed(format!("{}: {e}", pidfile.display())))
}

/// Processes started through the bed: whose environment holds `TESTBED_TARGET_BED=<bed>` (its
/// ssh sessions) or that run from under its directory (services the targets started), except
/// this process and its ancestors.
pub fn bed_processes(bed: &Path) -> Vec<i32> {
    let mut keep = vec![std::process::id() as i32];
    let mut p = keep[0];
    while p > 1 {
        p = std::fs::read_to_string(format!("/proc/{p}/status"))
            .ok()
            .and_then(|s| {
                s.lines()
                    .find_map(|l| l.strip_prefix("PPid:"))
                    .and_then(|v| v.trim().parse().ok())
            })
            .unwrap_or(0);
        keep.push(p);
    }
    let want = format!("TESTBED_TARGET_BED={}", bed.display());
    let root = std::fs::canonicalize(bed).ok();
    let Ok(rd) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    rd.flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| !keep.contains(pid))
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/environ"))
                .is_ok_and(|env| env.split(|&b| b == 0).any(|kv| kv == want.as_bytes()))
                // A service a target started gets a clean environment (no bed marker): it is
                // found by running from under the bed's directory.
                || std::fs::read_link(format!("/proc/{pid}/cwd"))
                    .is_ok_and(|cwd| root.as_ref().is_some_and(|r| cwd.starts_with(r)))
        })
        .filter(|&pid| alive(pid))
        .collect()
}

/// An exclusive `flock` on a file, released when dropped.
#[derive(Debug)]
pub struct Lock {
    _file: File,
}

/// Takes the lock on `path` (created if missing), waiting up to `timeout`.
pub fn lock(path: &Path, timeout: Duration) -> Result<Lock, Error> {
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .map_err(|e| Error::Failed(format!("{}: {e}", path.display())))?;
    let end = Instant::now() + timeout;
    loop {
        match rustix::fs::flock(&file, rustix::fs::FlockOperation::NonBlockingLockExclusive) {
            Ok(()) => {
                return Ok(Lock { _file: file });
            }
            Err(_) if Instant::now() < end => std::thread::sleep(Duration::from_millis(100)),
            Err(e) => {
                return Err(Error::Failed(format!(
                    "another ci/testbed command holds {} ({e})",
                    path.display()
                )));
            }
        }
    }
}

/// True if `cmd` runs and exits 0 (output discarded).
pub fn succeeds(cmd: &mut Command) -> bool {
    cmd.stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Runs `cmd`; its stdout, or an error with its stderr.
pub fn output(cmd: &mut Command, what: &str) -> Result<String, Error> {
    output_with_input(cmd, what, b"")
}

/// Like [`output`], with `input` on the command's stdin.
pub fn output_with_input(cmd: &mut Command, what: &str, input: &[u8]) -> Result<String, Error> {
    use std::io::Write;
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| Error::Failed(format!("{what}: {e}")))?;
    if let Some(mut stdin) = child.stdin.take() {
        let _ = stdin.write_all(input);
    }
    let out = child
        .wait_with_output()
        .map_err(|e| Error::Failed(format!("{what}: {e}")))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        let err = String::from_utf8_lossy(&out.stderr);
        let tail: Vec<&str> = err.lines().rev().take(8).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        Err(Error::Failed(format!(
            "{what} failed ({}): {}",
            out.status,
            tail.join("\n")
        )))
    }
}

/// The last `n` lines of a log file, for an error message.
pub fn tail(path: &Path, n: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}
