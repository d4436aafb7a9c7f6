//! The canary analysis in a run: after the canary group (and, with `every_batch`, each batch)
//! is back in the pool, the same metrics are read for its hosts and for the hosts still on
//! the old release over the same window, and compared ([`crate::analysis`]). With no
//! baseline (every other host already new, a one-host env) each metric falls back to its
//! threshold, and the report says so. The report, with every number, goes to the journal
//! (`analysis`, and an `analysis` step) and the event stream; an analysis that fails (or is
//! inconclusive under `inconclusive: fail`) aborts the deploy.

use std::time::{Duration, SystemTime};

use super::run::Run;
use crate::analysis::{self, AnalysisReport, Comparison, Verdict};
use crate::checks::samples::{SampleHost, Window, read_side};
use crate::checks::{CheckMode, InconclusivePolicy};
use crate::config::analysis::CanaryConfig;
use crate::events::Event;
use crate::records::{HostPhase, Step};

/// What a host needs for its samples: address, port and the log of its running instance.
struct Seat {
    name: String,
    address: String,
    port: u16,
    log: Option<String>,
}

fn rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_millis(t).to_string()
}

impl Run<'_> {
    /// The hosts still on their old release and serving it: the baseline.
    fn baseline(&self) -> Vec<String> {
        self.journal.hosts(|hs| {
            hs.iter()
                .filter(|(_, e)| {
                    matches!(e.phase, HostPhase::Pending | HostPhase::Fetched)
                        && e.from.as_ref().is_some_and(|f| f.commit != e.to.commit)
                })
                .map(|(h, _)| h.clone())
                .collect()
        })
    }

    fn seat(&self, name: &str) -> Result<Seat, String> {
        let h = self.ctx.host(name);
        let st = h.status().map_err(|e| format!("{name}: {e}"))?;
        let run = st
            .running
            .ok_or_else(|| format!("{name}: the service is not running"))?;
        let port = run
            .port
            .or(h.config().port)
            .ok_or_else(|| format!("{name}: no port recorded"))?;
        Ok(Seat {
            name: name.to_string(),
            address: h.address().to_string(),
            port,
            log: Some(run.log),
        })
    }

    /// Analyses `group` (its `hosts` done) against the baseline, from `from` on. `Err` aborts.
    pub(super) fn analyse(
        &self,
        cfg: &CanaryConfig,
        group: &str,
        hosts: &[String],
        from: SystemTime,
    ) -> Result<(), String> {
        let canary: Vec<String> = hosts
            .iter()
            .filter(|h| self.journal.entry(h).phase == HostPhase::Done)
            .cloned()
            .collect();
        if canary.is_empty() {
            return Ok(());
        }
        let baseline = self.baseline();
        let deadline = from + cfg.deadline.map(|d| d.0).unwrap_or(cfg.window.0 * 3);
        let mut to = from + cfg.window.0;
        let mut note = baseline.is_empty().then(|| {
            "no baseline: no host still runs the old release; threshold checks instead".to_string()
        });
        let report = loop {
            self.wait_for(to)?;
            let metrics = self.compare_all(cfg, &canary, &baseline, from, to);
            let verdict = analysis::overall(&metrics);
            if verdict == Verdict::Inconclusive
                && cfg.inconclusive == InconclusivePolicy::Retry
                && to < deadline
            {
                to = (to + cfg.step.0).min(deadline);
                let n = format!("retrying over a longer window, until {}", rfc3339(deadline));
                note = Some(match note {
                    Some(x) if !x.contains("retrying") => format!("{x}; {n}"),
                    Some(x) => x,
                    None => n,
                });
                continue;
            }
            let passed = match verdict {
                Verdict::Pass => true,
                Verdict::Fail => false,
                Verdict::Inconclusive => cfg.inconclusive == InconclusivePolicy::Pass,
            };
            break AnalysisReport {
                group: group.to_string(),
                canary: canary.clone(),
                baseline: baseline.clone(),
                from: rfc3339(from),
                to: rfc3339(to),
                verdict,
                passed,
                note: note.clone(),
                metrics,
            };
        };
        if report.verdict == Verdict::Inconclusive {
            self.signals
                .no_data(format!("canary analysis of {group} (inconclusive)"));
        }
        for m in report
            .metrics
            .iter()
            .filter(|m| m.shadow && m.verdict == Verdict::Fail)
        {
            self.signals
                .shadow_failed(format!("canary analysis of {group} {}", m.metric));
        }
        let summary = report.summary();
        let passed = report.passed;
        self.sink.emit(&Event::Analysis {
            report: report.clone(),
        });
        self.journal.note(|j| {
            j.step(None, Step::Analysis, passed, Some(summary.clone()));
            j.add_analysis(report);
        });
        if passed { Ok(()) } else { Err(summary) }
    }

    /// Waits until `t`, staying healthy; `Err` when the run must stop.
    fn wait_for(&self, t: SystemTime) -> Result<(), String> {
        loop {
            self.healthy()?;
            if let Some(r) = self.signals.reason() {
                return Err(r);
            }
            match t.duration_since(SystemTime::now()) {
                Ok(d) if !d.is_zero() => std::thread::sleep(d.min(Duration::from_millis(100))),
                _ => return Ok(()),
            }
        }
    }

    fn compare_all(
        &self,
        cfg: &CanaryConfig,
        canary: &[String],
        baseline: &[String],
        from: SystemTime,
        to: SystemTime,
    ) -> Vec<Comparison> {
        let w = Window {
            from,
            to,
            step: cfg.step.0,
        };
        let seats = |hs: &[String]| -> Result<Vec<Seat>, String> {
            hs.iter().map(|h| self.seat(h)).collect()
        };
        let (cs, bs) = (seats(canary), seats(baseline));
        let settings = &self.ctx.cfg.checks;
        cfg.metrics
            .iter()
            .map(|m| {
                let rule = m.rule(cfg);
                let read = |seats: &Result<Vec<Seat>, String>| -> Result<Vec<f64>, String> {
                    let seats = seats.as_ref().map_err(Clone::clone)?;
                    let hs: Vec<SampleHost<'_>> = seats
                        .iter()
                        .map(|x| SampleHost {
                            host: self.ctx.host(&x.name),
                            address: &x.address,
                            port: x.port,
                            log: x.log.as_deref(),
                        })
                        .collect();
                    read_side(m, settings, &hs, &w)
                };
                let mut c = match read(&cs) {
                    Err(e) => unread(&m.name, "canary", e),
                    Ok(cv) if baseline.is_empty() => analysis::threshold(
                        &m.name,
                        &cv,
                        m.threshold,
                        &rule,
                        "no baseline (no host still on the old release)",
                    ),
                    Ok(cv) => match read(&bs) {
                        Err(e) => unread(&m.name, "baseline", e),
                        Ok(bv) => analysis::compare(&m.name, &cv, &bv, &rule),
                    },
                };
                c.shadow = m.mode == CheckMode::Shadow;
                c
            })
            .collect()
    }
}

/// A metric that could not be read: inconclusive, with why.
fn unread(metric: &str, side: &str, e: String) -> Comparison {
    let mut c = analysis::compare(
        metric,
        &[],
        &[],
        &analysis::Rule {
            min_samples: 1,
            p_value: 0.01,
            min_effect: 0.0,
            min_ratio: None,
            worse: analysis::Worse::Higher,
        },
    );
    c.reason = format!("could not read the {side}: {e}");
    c
}
