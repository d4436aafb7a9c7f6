//! The `http` check: one GET of `http://<address>:<port><path>`, its status, then an optional
//! body substring and JSON pointer match.

use serde_json::Value;

use super::{CheckContext, HttpCheck, Outcome, agent, get_text, snippet};

pub(super) fn http(c: &HttpCheck, ctx: &CheckContext<'_>) -> (Outcome, String) {
    let timeout = c.timeout.unwrap_or(ctx.settings.timeout).0;
    let url = format!("http://{}:{}{}", ctx.address, ctx.port, c.path);
    let (status, body) = match get_text(&agent(timeout), &url, &[]) {
        Ok(x) => x,
        Err(e) => return (Outcome::Fail, e),
    };
    if status != c.status {
        return (
            Outcome::Fail,
            format!(
                "GET {} returned {status}, expected {}: {}",
                c.path,
                c.status,
                snippet(&body)
            ),
        );
    }
    if let Some(needle) = &c.body_contains {
        let needle = ctx.subst(needle);
        if !body.contains(&needle) {
            return (
                Outcome::Fail,
                format!(
                    "GET {}: body does not contain {needle:?}: {}",
                    c.path,
                    snippet(&body)
                ),
            );
        }
    }
    if let Some(m) = &c.json {
        let v: Value = match serde_json::from_str(&body) {
            Ok(v) => v,
            Err(e) => {
                return (
                    Outcome::Fail,
                    format!("GET {}: body is not JSON ({e}): {}", c.path, snippet(&body)),
                );
            }
        };
        let Some(found) = v.pointer(&m.pointer) else {
            return (
                Outcome::Fail,
                format!("GET {}: no {} in {}", c.path, m.pointer, snippet(&body)),
            );
        };
        if let Some(expected) = &m.equals {
            let expected = match expected {
                Value::String(s) => Value::String(ctx.subst(s)),
                other => other.clone(),
            };
            if found != &expected {
                return (
                    Outcome::Fail,
                    format!(
                        "GET {}: {} is {found}, expected {expected}",
                        c.path, m.pointer
                    ),
                );
            }
        }
    }
    (Outcome::Pass, format!("GET {} -> {status}", c.path))
}
