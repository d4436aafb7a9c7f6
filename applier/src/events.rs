//! What a deploy reports as it goes: a stream of typed [`Event`]s to an [`EventSink`]. The
//! binary renders them as a live view, plain lines, or JSON lines (`--format json`, where it
//! stamps each with `ts` and adds the exit code to `finished`); `ci/bench` parses that stream.
//! Steps, kinds and statuses are the journal's own types, so both spell them the same way.

use artifact::Digest;
use serde::Serialize;

use crate::checks::CheckResult;
use crate::guard::DeployType;
use crate::records::{DeployKind, JournalStatus, Step};

#[derive(Clone, Debug, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    /// `applier promote`: what the source environment runs, before the deploy's own plan.
    Promote {
        from: String,
        to: String,
        commit: String,
        artifact: Digest,
        from_deploy: String,
        from_hosts: Vec<String>,
        dry_run: bool,
    },
    Plan {
        deploy_id: String,
        env: String,
        kind: DeployKind,
        artifact: Option<Digest>,
        commit: Option<String>,
        deploy_type: Option<DeployType>,
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
        step: Step,
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
    /// A canary analysis: the group against its baseline, every metric with its numbers.
    Analysis {
        report: crate::analysis::AnalysisReport,
    },
    /// The fleet-wide watch tripped (or a shadow alarm would have).
    Watch {
        alarm: String,
        value: Option<f64>,
        threshold: f64,
        tripped: bool,
        detail: String,
    },
    /// A decision of the run's policies: a quorum suspicion, the fast rollback path.
    Note {
        step: Step,
        host: Option<String>,
        detail: String,
    },
    Rollback {
        host: String,
        to: Option<String>,
        ok: bool,
        detail: Option<String>,
    },
    /// A host pruned (beside the rest of the run): the releases and unpacked layers removed,
    /// and how long it took.
    Prune {
        host: String,
        ok: bool,
        removed: Vec<String>,
        layers_removed: Vec<Digest>,
        layers_kept: usize,
        /// A fetch held the host's layer store: no layer was removed.
        layers_busy: bool,
        seconds: f64,
        detail: Option<String>,
    },
    Finished {
        deploy_id: String,
        status: JournalStatus,
        message: String,
        /// The store requests of the deploy, by kind.
        #[serde(skip_serializing_if = "Option::is_none")]
        store_requests: Option<crate::store_meter::StoreRequests>,
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

/// Keeps every event (for tests and for callers that render afterwards).
#[derive(Debug, Default)]
pub struct VecSink(pub std::sync::Mutex<Vec<Event>>);

impl VecSink {
    pub fn events(&self) -> Vec<Event> {
        self.0.lock().unwrap().clone()
    }
}

impl EventSink for VecSink {
    fn emit(&self, event: &Event) {
        self.0.lock().unwrap().push(event.clone());
    }
}
