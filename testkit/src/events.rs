//! The applier's event streams in a failed assertion: what went wrong first (the run's end,
//! its abort, every failed step, check, fetch and rollback), then every event on one line.
//! A CI log keeps the head and the tail of a long failure; the cause must be in the head.

use serde_json::Value;
use std::fmt::{self, Display, Write as _};

/// `evs` for an assertion message: [`Display`] prints what went wrong, then every event.
pub fn why(evs: &[Value]) -> Why<'_> {
    Why(evs)
}

/// See [`why`].
pub struct Why<'a>(&'a [Value]);

/// One line for an event that says something went wrong; `None` for the rest.
fn wrong(e: &Value) -> Option<String> {
    let s = |k: &str| e[k].as_str().unwrap_or("-").to_string();
    let failed = e["ok"] == false;
    match e["event"].as_str()? {
        "finished" => Some(format!("finished {}: {}", s("status"), s("message"))),
        "abort" => Some(format!("abort: {}", s("reason"))),
        "step" | "fetch" | "preflight" | "host_done" | "rollback" | "prune" if failed => {
            let what = e["step"].as_str().unwrap_or(e["event"].as_str()?);
            Some(format!("{} {what} failed: {}", s("host"), s("detail")))
        }
        "check" if e["result"]["passed"] == false || e["result"]["suspect"] == true => {
            let r = &e["result"];
            Some(format!(
                "{} check {} {}: {}",
                s("host"),
                r["name"].as_str().unwrap_or("-"),
                r["outcome"].as_str().unwrap_or("-"),
                r["detail"].as_str().unwrap_or("-"),
            ))
        }
        "watch" if e["tripped"] == true => Some(format!("watch tripped: {}", s("detail"))),
        _ => None,
    }
}

impl Display for Why<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut head = String::new();
        for line in self.0.iter().filter_map(wrong) {
            let _ = writeln!(head, "  {line}");
        }
        if head.is_empty() {
            head = "  (no failed step, check or end among them)\n".into();
        }
        writeln!(f, "what went wrong, by the {} events:", self.0.len())?;
        f.write_str(&head)?;
        writeln!(f, "every event:")?;
        for e in self.0 {
            writeln!(f, "  {e}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_failures_come_first_and_every_event_follows_on_one_line() {
        let evs = [
            json!({"event": "step", "host": "t1", "step": "spec", "ok": true, "detail": null}),
            json!({"event": "check", "host": "t2", "result":
                   {"name": "host-5xx", "outcome": "inconclusive", "passed": false, "detail": "no data"}}),
            json!({"event": "step", "host": "t2", "step": "start", "ok": false, "detail": "port in use"}),
            json!({"event": "finished", "status": "rolled_back", "message": "aborted"}),
        ];
        let text = why(&evs).to_string();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines[..5],
            [
                "what went wrong, by the 4 events:",
                "  t2 check host-5xx inconclusive: no data",
                "  t2 start failed: port in use",
                "  finished rolled_back: aborted",
                "every event:",
            ]
        );
        assert_eq!(lines.len(), 9, "{text}");
        assert!(lines[5].contains("\"step\":\"spec\""), "{text}");
        let quiet = why(&evs[..1]).to_string();
        assert!(
            quiet.contains("(no failed step, check or end among them)"),
            "{quiet}"
        );
    }
}
