//! When a started instance counts as ready, as `deploy/service.yaml` says in `ready:`.
//!
//! Readiness is observed, never slept for: the port is bound, then every probe given here
//! passes (an HTTP answer, a line in this start's log, a command exiting 0), all within
//! `timeout`; then the instance must stay healthy (alive, and the HTTP probe still passing)
//! for `min_healthy` before it counts as ready.
//!
//! ```yaml
//! ready:
//!   timeout: 60s                     # from the start; default: the env's ready_timeout, else 30s
//!   http: {path: /healthz, status: 200, body_contains: ok}
//!   log: "listening on"              # a substring of a line of this start's log
//!   command: [./bin/ready-check, "{port}"]   # argv, run in the release directory; exit 0
//!   min_healthy: 5s
//! ```

use serde::{Deserialize, Deserializer, Serialize};

use crate::Dur;

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReadySpec {
    /// Deadline for the port and every probe, counted from the start.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<Dur>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http: Option<ReadyHttp>,
    /// A substring of a line of this start's log (RESTBase logs `listening on <host>:<port>`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log: Option<String>,
    /// A command (argv, or a string split on whitespace; `{port}` and `{release}`
    /// substituted per word, never through a shell) run in the release directory until it
    /// exits 0.
    #[serde(
        default,
        deserialize_with = "de_argv",
        skip_serializing_if = "Option::is_none"
    )]
    pub command: Option<Vec<String>>,
    /// After every probe passed: how long the instance must stay alive (and its HTTP probe
    /// passing) before it counts as ready.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_healthy: Option<Dur>,
}

/// `GET http://<address>:<port><path>` answering `status` (and containing `body_contains`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReadyHttp {
    pub path: String,
    #[serde(default = "default_status")]
    pub status: u16,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body_contains: Option<String>,
}

fn default_status() -> u16 {
    200
}

fn de_argv<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<String>>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Cmd {
        Line(String),
        Argv(Vec<String>),
    }
    Ok(Option::<Cmd>::deserialize(d)?.map(|c| match c {
        Cmd::Line(s) => s.split_whitespace().map(str::to_string).collect(),
        Cmd::Argv(v) => v,
    }))
}

impl ReadySpec {
    /// Problems a well-formed file can still have (an empty command, a path without `/`).
    pub fn problems(&self) -> Vec<String> {
        let mut out = Vec::new();
        if let Some(h) = &self.http
            && !h.path.starts_with('/')
        {
            out.push(format!("ready.http.path {:?} must start with /", h.path));
        }
        if self.command.as_ref().is_some_and(|c| c.is_empty()) {
            out.push("ready.command is empty".into());
        }
        if self.log.as_ref().is_some_and(|l| l.is_empty()) {
            out.push("ready.log is empty".into());
        }
        out
    }

    /// The probes, named for reports: `port`, then `http GET <path>`, `log <text>`, `command`.
    pub fn describe(&self) -> String {
        let mut parts = vec!["port".to_string()];
        if let Some(h) = &self.http {
            parts.push(format!("GET {} {}", h.path, h.status));
        }
        if let Some(l) = &self.log {
            parts.push(format!("log {l:?}"));
        }
        if let Some(c) = &self.command {
            parts.push(format!("command {}", c.join(" ")));
        }
        if let Some(m) = self.min_healthy {
            parts.push(format!("healthy {}s", m.0.as_secs_f64()));
        }
        parts.join(", ")
    }
}
