//! The fleet-wide watch, and the signals the deciding checks stop a run with.
//!
//! [`Run::watch`] runs beside a deploy for its whole rollout (`checks.watch`): every
//! `interval` it reads each alarm query (the service-wide 5xx rate, any alarm) and the
//! error-log rate across the hosts in the pool, and when one trips it stops the run at once
//! ([`Signals::trip`]): waits in checks of hosts in flight end, and the batch loop aborts
//! whatever group is rolling. A shadow alarm is read and recorded, never tripping. The
//! summary names what never had data and what a shadow check or alarm would have stopped
//! ([`Signals::summary_notes`]).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime};

use super::run::Run;
use crate::checks::logs::{count_by_time, level_number, read_log};
use crate::checks::metrics::{backend, read_value};
use crate::checks::{CheckMode, InconclusivePolicy};
use crate::config::analysis::{WatchAlarm, WatchConfig, WatchLogs};
use crate::events::Event;
use crate::records::{HostPhase, Step};

/// What stops a run from the side: the watch, a quorum; and what the summary must name.
#[derive(Debug, Default)]
pub(super) struct Signals {
    /// Set once the run must stop; checks in flight see it ([`crate::checks::CheckContext`]).
    pub stop: AtomicBool,
    reason: Mutex<Option<String>>,
    /// check name -> hosts with a lone failure of it (`checks.quorum`).
    pub suspects: Mutex<BTreeMap<String, BTreeSet<String>>>,
    /// Things that never got data, for the summary.
    no_data: Mutex<BTreeSet<String>>,
    /// Shadow checks and alarms that did not pass (they never gate), for the summary.
    shadow: Mutex<BTreeSet<String>>,
}

impl Signals {
    /// Stops the run for `reason` (the first reason wins).
    pub fn trip(&self, reason: String) {
        self.reason.lock().unwrap().get_or_insert(reason);
        self.stop.store(true, Ordering::SeqCst);
    }

    pub fn reason(&self) -> Option<String> {
        self.reason.lock().unwrap().clone()
    }

    pub fn no_data(&self, what: String) {
        self.no_data.lock().unwrap().insert(what);
    }

    /// `what` had data after all (the watch names an alarm as soon as a reading had none, so
    /// that a summary written while the watch still runs has it).
    fn got_data(&self, what: &str) {
        self.no_data.lock().unwrap().remove(what);
    }

    /// A shadow check or alarm that would have stopped the host or the run.
    pub fn shadow_failed(&self, what: String) {
        self.shadow.lock().unwrap().insert(what);
    }

    /// What the summary adds: `; never got data (...): a, b` and `; shadow checks that
    /// failed (not gating): c`, or nothing.
    pub fn summary_notes(&self) -> String {
        let list = |label: &str, set: &Mutex<BTreeSet<String>>| {
            let n = set.lock().unwrap();
            if n.is_empty() {
                String::new()
            } else {
                format!(
                    "; {label}: {}",
                    n.iter().cloned().collect::<Vec<_>>().join(", ")
                )
            }
        };
        list("never got data (not counted as passes)", &self.no_data)
            + &list("shadow checks that failed (not gating)", &self.shadow)
    }
}

/// One alarm's history over the watch.
#[derive(Default)]
struct Seen {
    readings: u32,
    with_data: u32,
    last_data: Option<Instant>,
}

impl Run<'_> {
    /// Reads the watch's alarms every interval until `done` or the run stops.
    pub(super) fn watch(&self, cfg: &WatchConfig, done: &AtomicBool) {
        let started = Instant::now();
        let mut seen: BTreeMap<String, Seen> = BTreeMap::new();
        let mut next = Instant::now();
        while !done.load(Ordering::SeqCst) && !self.signals.stop.load(Ordering::SeqCst) {
            if Instant::now() < next {
                std::thread::sleep(Duration::from_millis(50));
                continue;
            }
            next = Instant::now() + cfg.interval.0;
            for a in &cfg.alarms {
                let s = seen.entry(a.name.clone()).or_default();
                self.read_alarm(cfg, a, s, started);
            }
            if let Some(l) = &cfg.error_logs {
                let s = seen.entry("error_logs".into()).or_default();
                self.read_error_logs(cfg, l, s, started);
            }
        }
        let mut parts = Vec::new();
        for (name, s) in &seen {
            if s.with_data == 0 {
                self.signals.no_data(format!("watch {name}"));
            }
            parts.push(format!(
                "{name}: {} readings, {} with data",
                s.readings, s.with_data
            ));
        }
        let tripped = self.signals.reason().filter(|r| r.starts_with("watch"));
        let detail = format!(
            "watch ended{}: {}",
            tripped
                .as_deref()
                .map(|r| format!(" ({r})"))
                .unwrap_or_default(),
            parts.join("; ")
        );
        self.journal
            .note(|j| j.step(None, Step::Watch, tripped.is_none(), Some(detail)));
    }

    fn alarm(
        &self,
        name: &str,
        value: Option<f64>,
        threshold: f64,
        mode: CheckMode,
        detail: String,
    ) {
        let shadow = mode == CheckMode::Shadow;
        self.sink.emit(&Event::Watch {
            alarm: name.to_string(),
            value,
            threshold,
            tripped: !shadow,
            detail: detail.clone(),
        });
        let reason = format!("watch {name}: {detail}");
        if shadow {
            self.signals.shadow_failed(format!("watch {name}"));
            self.journal.note(|j| {
                j.step(
                    None,
                    Step::Watch,
                    true,
                    Some(format!("{reason} [shadow: not gating]")),
                )
            });
        } else {
            self.journal
                .note(|j| j.step(None, Step::Watch, false, Some(reason.clone())));
            self.signals.trip(reason);
        }
    }

    fn read_alarm(&self, cfg: &WatchConfig, a: &WatchAlarm, s: &mut Seen, started: Instant) {
        s.readings += 1;
        let secs = cfg.window.0.as_secs().max(1);
        let query = a.query.replace("{window}", &format!("{secs}s"));
        let value =
            backend(a.source, a.url.as_deref(), &self.ctx.cfg.checks).and_then(|(source, base)| {
                read_value(source, &base, &query, secs, self.ctx.cfg.checks.timeout.0)
            });
        match value {
            Ok(Some(v)) => {
                s.with_data += 1;
                s.last_data = Some(Instant::now());
                self.signals.got_data(&format!("watch {}", a.name));
                if v > a.threshold {
                    self.alarm(
                        &a.name,
                        Some(v),
                        a.threshold,
                        a.mode,
                        format!("{query:?} = {v} over {}", a.threshold),
                    );
                }
            }
            Ok(None) | Err(_) => {
                let why = match value {
                    Err(e) => e,
                    _ => format!("no data for {query:?}"),
                };
                self.no_reading(
                    cfg,
                    &a.name,
                    a.threshold,
                    a.mode,
                    (a.inconclusive, a.deadline),
                    s,
                    started,
                    why,
                );
            }
        }
    }

    /// A reading without data (or that failed): trips under the no-data policy (`retry`
    /// once no reading had data for the deadline, `fail` at once, never for an explicit
    /// `pass`).
    #[allow(clippy::too_many_arguments)]
    fn no_reading(
        &self,
        cfg: &WatchConfig,
        name: &str,
        threshold: f64,
        mode: CheckMode,
        (policy, deadline): (InconclusivePolicy, Option<model::Dur>),
        s: &Seen,
        started: Instant,
        why: String,
    ) {
        if s.with_data == 0 {
            self.signals.no_data(format!("watch {name}"));
        }
        let deadline = deadline.map(|d| d.0).unwrap_or(cfg.interval.0 * 3);
        let since = s.last_data.unwrap_or(started);
        let trip = match policy {
            InconclusivePolicy::Pass => false,
            InconclusivePolicy::Fail => true,
            InconclusivePolicy::Retry => since.elapsed() >= deadline,
        };
        if trip {
            let policy = match policy {
                InconclusivePolicy::Retry => "no-data policy retry: none for the deadline",
                _ => "no-data policy fail",
            };
            self.alarm(name, None, threshold, mode, format!("{why} ({policy})"));
        }
    }

    /// Offending lines per second over the window, across the hosts serving now.
    fn read_error_logs(&self, cfg: &WatchConfig, l: &WatchLogs, s: &mut Seen, started: Instant) {
        s.readings += 1;
        let policy = (l.inconclusive, l.deadline);
        let Some(min) = level_number(&l.level) else {
            let why = format!("unknown log level {:?}", l.level);
            return self.no_reading(
                cfg,
                "error_logs",
                l.max_per_second,
                l.mode,
                policy,
                s,
                started,
                why,
            );
        };
        let serving: Vec<String> = self.journal.hosts(|hs| {
            hs.iter()
                .filter(|(_, e)| {
                    matches!(
                        e.phase,
                        HostPhase::Pending | HostPhase::Fetched | HostPhase::Done
                    )
                })
                .map(|(h, _)| h.clone())
                .collect()
        });
        let to = SystemTime::now();
        let from = to - cfg.window.0;
        let mut lines = 0.0;
        let mut read = 0;
        let mut unread = Vec::new();
        for h in &serving {
            let host = self.ctx.host(h);
            // No instance running (nothing deployed there yet): nothing is served from it.
            let text = match host.status() {
                Ok(st) => match st.running {
                    Some(run) => read_log(host, &run.log),
                    None => continue,
                },
                Err(e) => Err(e.to_string()),
            };
            match text {
                Ok(text) => {
                    read += 1;
                    lines += count_by_time(&text, min, &l.patterns, from, to, cfg.window.0)
                        .iter()
                        .sum::<f64>();
                }
                Err(e) => unread.push(format!("{h}: {e}")),
            }
        }
        // A serving host whose log cannot be read is not a host without errors.
        if !unread.is_empty() || read == 0 {
            let why = if unread.is_empty() {
                "no serving host's log to read".to_string()
            } else {
                format!("logs not readable: {}", unread.join("; "))
            };
            return self.no_reading(
                cfg,
                "error_logs",
                l.max_per_second,
                l.mode,
                policy,
                s,
                started,
                why,
            );
        }
        s.last_data = Some(Instant::now());
        s.with_data += 1;
        self.signals.got_data("watch error_logs");
        let rate = lines / cfg.window.0.as_secs_f64().max(1.0);
        if rate > l.max_per_second {
            self.alarm(
                "error_logs",
                Some(rate),
                l.max_per_second,
                l.mode,
                format!(
                    "{lines} log lines at or above {} in {}s on {read} pooled hosts: {rate:.3}/s over {}/s",
                    l.level,
                    cfg.window.0.as_secs(),
                    l.max_per_second
                ),
            );
        }
    }
}
