//! What a deploy reports as it goes: a stream of [`Event`]s to an [`EventSink`]. The binary
//! renders them as a live view, plain lines, or JSON lines (`--format json`).

use serde::Serialize;

use crate::checks::CheckResult;

#[derive(Clone, Debug, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    Plan {
        deploy_id: String,
        env: String,
        kind: String,
        artifact: Option<String>,
        commit: Option<String>,
        deploy_type: Option<String>,
        dry_run: bool,
        groups: Vec<PlanGroup>,
    },
    Preflight {
        host: String,
        ok: bool,
        detail: String,
    },
    Fetch {
        host: String,
        ok: bool,
        detail: String,
    },
    Group {
        group: String,
        hosts: Vec<String>,
    },
    Step {
        host: String,
        step: String,
        ok: bool,
        detail: Option<String>,
    },
    Check {
        host: String,
        result: CheckResult,
    },
    HostDone {
        host: String,
        release: String,
        ok: bool,
        detail: Option<String>,
    },
    Bake {
        group: String,
        seconds: u64,
    },
    Abort {
        reason: String,
    },
    Rollback {
        host: String,
        to: Option<String>,
        ok: bool,
        detail: Option<String>,
    },
    Finished {
        deploy_id: String,
        status: String,
        exit_code: i32,
        message: String,
    },
}

#[derive(Clone, Debug, Serialize)]
pub struct PlanGroup {
    pub name: String,
    pub hosts: Vec<PlanHost>,
}

#[derive(Clone, Debug, Serialize)]
pub struct PlanHost {
    pub host: String,
    pub from: Option<String>,
    pub to: String,
    pub checks: Vec<String>,
}

/// Receives events; must be callable from several threads.
pub trait EventSink: Send + Sync {
    fn emit(&self, event: &Event);
}

/// Discards events.
#[derive(Debug)]
pub struct NullSink;

impl EventSink for NullSink {
    fn emit(&self, _: &Event) {}
}
