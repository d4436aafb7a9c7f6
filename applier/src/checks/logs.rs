//! The `logs` check (the log of this start, or a command's output: no bunyan line at or above
//! a level, no line containing a pattern), and the counting of such lines over time that the
//! canary analysis and the watch use.

use std::time::SystemTime;

use serde_json::Value;

use super::{CheckContext, LogsCheck, Outcome, snippet};
use crate::host::Host;

/// Bunyan level number for a name or number.
pub fn level_number(s: &str) -> Option<u64> {
    Some(match s.trim().to_ascii_lowercase().as_str() {
        "trace" => 10,
        "debug" => 20,
        "info" => 30,
        "warn" => 40,
        "error" => 50,
        "fatal" => 60,
        "none" => u64::MAX,
        other => return other.parse().ok(),
    })
}

/// Whether one line offends: a bunyan entry at or above `min_level`, or a line containing one
/// of `patterns`; the reason.
fn offends(line: &str, min_level: u64, patterns: &[String]) -> Option<String> {
    if let Some(p) = patterns.iter().find(|p| line.contains(p.as_str())) {
        return Some(format!("matches {p:?}: {}", snippet(line)));
    }
    if min_level == u64::MAX {
        return None;
    }
    if let Ok(Value::Object(o)) = serde_json::from_str::<Value>(line)
        && let Some(level) = o.get("level").and_then(Value::as_u64)
        && level >= min_level
    {
        return Some(format!("level {level}: {}", snippet(line)));
    }
    None
}

/// Finds the first offending line of a log.
pub fn scan_log(text: &str, min_level: u64, patterns: &[String]) -> Option<String> {
    text.lines().find_map(|l| offends(l, min_level, patterns))
}

/// Offending lines per `step` over `[from, to)`, by their bunyan `time`; lines without a
/// readable time are not counted. One bucket per step, zeros included.
pub fn count_by_time(
    text: &str,
    min_level: u64,
    patterns: &[String],
    from: SystemTime,
    to: SystemTime,
    step: std::time::Duration,
) -> Vec<f64> {
    let span = to.duration_since(from).unwrap_or_default();
    let n = (span.as_millis() / step.as_millis().max(1)) as usize;
    let mut buckets = vec![0.0; n];
    for line in text.lines() {
        if offends(line, min_level, patterns).is_none() {
            continue;
        }
        let Some(t) = line_time(line) else { continue };
        let Ok(off) = t.duration_since(from) else {
            continue;
        };
        let i = (off.as_millis() / step.as_millis().max(1)) as usize;
        if i < n {
            buckets[i] += 1.0;
        }
    }
    buckets
}

/// The `time` of a bunyan line.
pub fn line_time(line: &str) -> Option<SystemTime> {
    let v: Value = serde_json::from_str(line).ok()?;
    humantime::parse_rfc3339(v.get("time")?.as_str()?).ok()
}

/// The text of a log file on a host.
pub fn read_log(host: &dyn Host, file: &str) -> Result<String, String> {
    host.read_file(file)
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .map_err(|e| format!("reading {file}: {e}"))
}

pub(super) fn logs(c: &LogsCheck, ctx: &CheckContext<'_>) -> (Outcome, String) {
    let Some(min_level) = level_number(&c.level) else {
        return (Outcome::Fail, format!("unknown log level {:?}", c.level));
    };
    if let Some(w) = c.wait
        && let Err(e) = ctx.wait_until(ctx.started_at + w.0)
    {
        return (Outcome::Fail, e);
    }
    let text = if let Some(cmd) = &c.command {
        // Values reach the shell quoted, and as variables ($APPLIER_HOST, $APPLIER_SINCE, ...).
        let filled = crate::shell::fill(cmd, &ctx.values());
        let (cmd, env) = (filled.cmd, filled.env);
        let timeout = c.timeout.unwrap_or(ctx.settings.timeout).0;
        match ctx.host.exec(&cmd, &env, timeout) {
            Ok(out) if out.status == 0 => out.stdout,
            Ok(out) => {
                return (
                    Outcome::Inconclusive,
                    format!("{cmd:?} exited {}: {}", out.status, snippet(&out.stderr)),
                );
            }
            Err(e) => return (Outcome::Inconclusive, format!("{cmd:?}: {e}")),
        }
    } else {
        let Some(file) = &ctx.log_file else {
            return (
                Outcome::Inconclusive,
                "no log file for this start and no log command".into(),
            );
        };
        match read_log(ctx.host, file) {
            Ok(t) => t,
            Err(e) => return (Outcome::Inconclusive, e),
        }
    };
    match scan_log(&text, min_level, &c.patterns) {
        Some(bad) => (Outcome::Fail, bad),
        None => (
            Outcome::Pass,
            format!("{} log lines clean", text.lines().count()),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn log_scan_levels_and_patterns() {
        let log = "{\"level\":30,\"msg\":\"ok\"}\nplain text\n{\"level\":50,\"msg\":\"bad\"}\n";
        assert!(scan_log(log, 60, &[]).is_none());
        assert!(scan_log(log, 50, &[]).unwrap().contains("bad"));
        assert!(
            scan_log(log, u64::MAX, &["plain".into()])
                .unwrap()
                .contains("plain")
        );
        assert_eq!(level_number("warn"), Some(40));
        assert_eq!(level_number("55"), Some(55));
        assert_eq!(level_number("loud"), None);
    }

    #[test]
    fn counts_offending_lines_per_step() {
        let from = humantime::parse_rfc3339("2024-05-01T12:00:00Z").unwrap();
        let line = |s: &str, level: u32| {
            format!("{{\"level\":{level},\"msg\":\"x\",\"time\":\"2024-05-01T12:00:{s}Z\"}}\n")
        };
        let text = [
            line("00.500", 50),
            line("01.000", 50),
            line("01.999", 60),
            line("01.500", 30),
            line("05.000", 50),
            "no time at all, level 50\n".to_string(),
        ]
        .concat();
        let b = count_by_time(
            &text,
            50,
            &[],
            from,
            from + Duration::from_secs(4),
            Duration::from_secs(1),
        );
        assert_eq!(b, vec![1.0, 2.0, 0.0, 0.0]);
    }
}
