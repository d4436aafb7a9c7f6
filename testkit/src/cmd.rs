//! Running commands from tests: exit code and output, or a panic naming the command.

use std::process::{Command, Output};

/// Runs `cmd`, returning (exit code, stdout, stderr); -1 when killed by a signal.
pub fn run(cmd: &mut Command) -> (i32, String, String) {
    let out: Output = cmd
        .output()
        .unwrap_or_else(|e| panic!("running {cmd:?}: {e}"));
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Runs a command that must succeed; returns its trimmed stdout.
pub fn run_ok(cmd: &mut Command) -> String {
    let shown = format!("{cmd:?}");
    let (code, out, err) = run(cmd);
    assert_eq!(code, 0, "{shown} failed:\n{out}\n{err}");
    out.trim().to_string()
}

/// JSON values of the lines of `text` that parse as JSON (event streams).
pub fn json_lines(text: &str) -> Vec<serde_json::Value> {
    text.lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

/// Ends (SIGKILL, by pid) every process whose working directory is under `dir`: the services
/// a test started on its local hosts, whatever state the test ended in.
pub fn kill_processes_under(dir: &std::path::Path) {
    let Ok(dir) = dir.canonicalize() else { return };
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return;
    };
    for p in procs.flatten() {
        let Some(pid) = p.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else {
            continue;
        };
        if pid == std::process::id() {
            continue;
        }
        if std::fs::read_link(p.path().join("cwd")).is_ok_and(|cwd| cwd.starts_with(&dir)) {
            let _ = Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .stderr(std::process::Stdio::null())
                .status();
        }
    }
}
