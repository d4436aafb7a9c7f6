//! The per-host steps: preflight and prefetch before the roll, then the one path every host
//! goes through, to a new release or back to its own last known good one.
//!
//! The path ([`Run::converge`]) is: spec -> port -> [`Run::take_out`] (depool -> stop) ->
//! render -> switch -> start -> ready -> checks in order -> mark good -> repool, stopping at
//! the first step that fails (the host stays out of the pool). Ready is observed, never slept
//! for: the port, then the service's `ready:` probes and `min_healthy`, on the target
//! ([`crate::target::ready`]). A restore is the same path with the host's `from` release as
//! the target; a host with nothing to go back to only goes through `take_out`. Every step is
//! an event and a journal step as it completes. The checks step is in [`super::verify`].
//!
//! Every step that changes the host or the pool is fenced ([`Run::fenced`]): the lease is
//! confirmed first, and the request carries the run's fencing token; a host that refuses the
//! token marks the lease lost, which stops the run.

use std::time::{Duration, SystemTime};

use artifact::manifest::Manifest;

use super::run::Run;
use crate::events::Event;
use crate::host::Host;
use crate::protocol::{
    ErrorKind, Fence, HostError, PreflightRequest, ReadyRequest, ReleaseRef, StartRequest,
};
use crate::records::{HostEntry, HostPhase, Step};
use crate::service::ServiceSpec;

/// Why a host's path stopped: the step, the check that failed (for [`Step::Checks`]), and
/// what went wrong.
#[derive(Debug)]
pub(super) struct StepFail {
    pub step: Step,
    pub check: Option<String>,
    pub detail: String,
}

impl std::fmt::Display for StepFail {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.check {
            Some(c) => write!(f, "check {c}: {}", self.detail),
            None => write!(f, "{}: {}", self.step, self.detail),
        }
    }
}

impl StepFail {
    /// The step (and check) that failed, without its detail: what the host's summary, the
    /// abort reason and the outcome say (the detail, with any quoted log line, is in the step's
    /// own event and journal record, once).
    pub fn short(&self) -> String {
        match &self.check {
            Some(c) => format!("check {c}"),
            None => self.step.to_string(),
        }
    }
}

pub(super) fn fail(step: Step, detail: String) -> StepFail {
    StepFail {
        step,
        check: None,
        detail,
    }
}

/// The port a release listens on: the host's own, else the service's default.
pub(super) fn port_of(h: &dyn Host, spec: Option<&ServiceSpec>) -> Option<u16> {
    h.config().port.or(spec.and_then(|s| s.port))
}

impl Run<'_> {
    /// A host's error as a step's detail; a refused fencing token marks the lease lost.
    pub(super) fn he(&self, e: HostError) -> String {
        if e.kind() == ErrorKind::Fenced {
            self.lease.mark_lost(format!(
                "the lease on {} was lost: {e}; this deploy stopped at once and changes nothing more",
                self.ctx.name
            ));
        }
        e.to_string()
    }

    /// Before a step that changes `host` or the pool: the lease confirmed now, and the fence
    /// the request carries. `Err` (journalled as the step's failure) stops the path.
    fn fenced(&self, host: &str, step: Step) -> Result<Fence, StepFail> {
        match self.lease.confirm(self.ctx.store.as_ref()) {
            Ok(()) => Ok(self.lease.fence().clone()),
            Err(why) => self.step(host, step, Err(why), |_: &Fence| None),
        }
    }

    pub(super) fn set_phase(&self, host: &str, phase: HostPhase, detail: Option<String>) {
        self.journal.note(|j| {
            let e = j.host(host);
            e.phase = phase;
            e.detail = detail;
        });
    }

    /// Checks every host can take the release (space, platform, node ABI); `Err` lists those
    /// that cannot.
    pub(super) fn preflight(&self, hosts: &[String]) -> Result<(), String> {
        let cfg = &self.ctx.cfg;
        self.each_target(hosts, |h, host, _, m| {
            let size: u64 = m.layers.iter().map(|l| l.size).sum();
            let node = (!cfg.node.is_empty() && m.platform.is_some()).then(|| cfg.node.clone());
            let r = host.preflight(&PreflightRequest {
                min_free_bytes: cfg.min_free_bytes + size * 4,
                node,
                fence: Some(self.lease.fence().clone()),
            });
            let r = r.map_err(|e| self.he(e)).and_then(|rep| {
                if let Some(p) = &m.platform {
                    if p.os != rep.os || p.arch != rep.arch {
                        return Err(format!(
                            "artifact is for {}/{}, host is {}/{}",
                            p.os, p.arch, rep.os, rep.arch
                        ));
                    }
                    if let Some(abi) = &rep.node_abi
                        && abi != &p.node_abi
                    {
                        return Err(format!(
                            "node ABI {abi} on the host, the artifact needs {}",
                            p.node_abi
                        ));
                    }
                }
                Ok(format!("{} MiB free", rep.free_bytes >> 20))
            });
            let detail = r.clone().unwrap_or_else(|e| e);
            self.sink.emit(&Event::Preflight {
                host: h.clone(),
                ok: r.is_ok(),
                detail: detail.clone(),
            });
            self.journal
                .record(|j| j.step(Some(h), Step::Preflight, r.is_ok(), Some(detail)));
            r.map(|_| ()).map_err(|e| format!("preflight {h}: {e}"))
        })
    }

    /// Runs `f` for every host with its entry and target manifest, on the bounded pool;
    /// `Err` joins every host's error.
    pub(super) fn each_target(
        &self,
        hosts: &[String],
        f: impl Fn(&String, &dyn Host, &HostEntry, &Manifest) -> Result<(), String> + Sync,
    ) -> Result<(), String> {
        let results = self.bounded(hosts, |h| {
            let e = self.journal.entry(h);
            let m = self
                .manifests
                .get(&e.to.manifest)
                .ok_or_else(|| format!("{h}: manifest {} unavailable", e.to.manifest))?;
            f(h, self.ctx.host(h), &e, m)
        });
        let errs: Vec<String> = results.into_iter().filter_map(Result::err).collect();
        if errs.is_empty() {
            Ok(())
        } else {
            Err(errs.join("; "))
        }
    }

    /// Fetches every host's target release (and, best effort, its restore target).
    pub(super) fn prefetch(&self, hosts: &[String]) -> Result<(), String> {
        self.each_target(hosts, |h, host, e, m| {
            let fence = self.lease.fence();
            let r = self.lease.confirm(self.ctx.store.as_ref()).and_then(|()| {
                host.fetch(fence, &e.to.manifest, m)
                    .map_err(|err| self.he(err))
            });
            let detail = match &r {
                Ok(rep) if rep.cached => format!("{} already on the host", rep.release),
                Ok(rep) => format!("{} fetched ({} bytes)", rep.release, rep.downloaded),
                Err(err) => err.clone(),
            };
            self.sink.emit(&Event::Fetch {
                host: h.clone(),
                ok: r.is_ok(),
                detail: detail.clone(),
            });
            self.journal.record(|j| {
                j.step(Some(h), Step::Fetch, r.is_ok(), Some(detail));
                if r.is_ok() && j.hosts[h].phase == HostPhase::Pending {
                    j.host(h).phase = HostPhase::Fetched;
                }
            });
            r.map_err(|err| format!("fetch {h}: {err}"))?;
            // Keep the restore target at hand too (best effort: it is usually there).
            if let Some(from) = &e.from
                && let Some(fm) = self.manifests.get(&from.manifest)
            {
                let _ = host.fetch(fence, &from.manifest, fm);
            }
            Ok(())
        })
    }

    /// Takes one host (already recorded in progress, [`Run::take_in_hand`]) through the path
    /// to its target. Its outcome (done or failed) is recorded, and written with the run's
    /// next durable write (before the next batch touches a host) or by the flusher.
    pub(super) fn deploy_host(&self, host: &str) -> Result<(), StepFail> {
        let e = self.journal.entry(host);
        // This pass's checks only (a retry or a resume runs them again): cleared, durably, by
        // `take_in_hand` with the whole batch, not by a write of each host's own.
        let r = self.converge(host, &e.to, false);
        let detail = r.as_ref().err().map(|f| format!("{} failed", f.short()));
        let phase = if r.is_ok() {
            HostPhase::Done
        } else {
            HostPhase::Failed
        };
        self.journal.record(|j| {
            let e = j.host(host);
            e.phase = phase;
            e.detail = detail.clone();
        });
        self.sink.emit(&Event::HostDone {
            host: host.into(),
            release: e.to.commit.to_string(),
            ok: r.is_ok(),
            detail,
        });
        r
    }

    /// Records `hosts` in progress, in this order of touch, durably: before any is touched.
    pub(super) fn take_in_hand(&self, hosts: &[String]) {
        let n = hosts.len() as u32;
        let first = self.touch.fetch_add(n, std::sync::atomic::Ordering::SeqCst) + 1;
        self.journal.note(|j| {
            for (i, h) in hosts.iter().enumerate() {
                let e = j.host(h);
                e.phase = HostPhase::InProgress;
                e.touched.get_or_insert(first + i as u32);
                e.checks.clear();
            }
        });
    }

    /// Reports and journals one step's result; its `Err` stops the path.
    fn step<T>(
        &self,
        host: &str,
        step: Step,
        r: Result<T, String>,
        detail: impl Fn(&T) -> Option<String>,
    ) -> Result<T, StepFail> {
        let d = match &r {
            Ok(v) => detail(v),
            Err(e) => Some(e.clone()),
        };
        self.sink.emit(&Event::Step {
            host: host.into(),
            step,
            ok: r.is_ok(),
            detail: d.clone(),
        });
        self.journal
            .record(|j| j.step(Some(host), step, r.is_ok(), d));
        r.map_err(|detail| fail(step, detail))
    }

    /// The first steps of every path: out of the pool, then the service stopped.
    fn take_out(&self, host: &str, port: Option<u16>) -> Result<(), StepFail> {
        let h = self.ctx.host(host);
        self.fenced(host, Step::Depool)?;
        let depooled = self.ctx.pool.depool(h, port).map_err(|e| e.to_string());
        self.step(host, Step::Depool, depooled, |_| None)?;
        let fence = self.fenced(host, Step::Stop)?;
        self.step(
            host,
            Step::Stop,
            h.stop(&fence).map_err(|e| self.he(e)),
            |r| {
                r.stopped
                    .map(|p| format!("pid {p}{}", if r.killed { " (killed)" } else { "" }))
            },
        )?;
        Ok(())
    }

    /// The one path every host goes through, to a new release or back to an old one
    /// (`restoring`: the fast path of a rollback, see [`super::verify`]).
    pub(super) fn converge(
        &self,
        host: &str,
        to: &ReleaseRef,
        restoring: bool,
    ) -> Result<(), StepFail> {
        let h = self.ctx.host(host);
        self.healthy().map_err(|reason| fail(Step::Start, reason))?;
        // Going forward, the spec this host gave the render check for the same release.
        let known = (!restoring)
            .then(|| {
                let specs = self.specs.lock().unwrap_or_else(|p| p.into_inner());
                specs
                    .get(host)
                    .filter(|(r, _)| r == to)
                    .map(|(_, s)| s.clone())
            })
            .flatten();
        let spec = self.step(
            host,
            Step::Spec,
            match known {
                Some(s) => Ok(s),
                None => h.service_spec(to).map_err(|e| self.he(e)),
            },
            |_| None,
        )?;
        let port = self.step(
            host,
            Step::Port,
            port_of(h, Some(&spec)).ok_or_else(|| {
                "no port: set hosts.<name>.port or port in deploy/service.yaml".to_string()
            }),
            |_| None,
        )?;
        self.take_out(host, Some(port))?;
        let service = match (&spec.name, self.manifests.get(&to.manifest)) {
            (Some(n), _) => n.clone(),
            (None, Some(m)) => m.service.clone(),
            (None, None) => String::new(),
        };
        let mut req = self
            .ctx
            .render_request(host, &service, to, Some(port))
            .map_err(|e| fail(Step::Render, e))?;
        req.fence = Some(self.fenced(host, Step::Render)?);
        let switch = self.fenced(host, Step::Switch)?;
        let start = StartRequest {
            port: Some(port),
            env: h.config().env.clone(),
            fence: Some(self.fenced(host, Step::Start)?),
        };
        // One round trip for the three (each still its own step, fenced and journalled); a
        // step after a failed one was not run.
        let rss = h.render_switch_start(&req, &switch, to, &start);
        self.step(
            host,
            Step::Render,
            rss.render.map_err(|e| self.he(e)),
            |r| Some(r.config.clone()),
        )?;
        let not_run = || "not run (the request before it failed)".to_string();
        self.step(
            host,
            Step::Switch,
            rss.switch
                .ok_or_else(not_run)
                .and_then(|r| r.map_err(|e| self.he(e))),
            |r| Some(format!("{} -> {}", r.from.as_deref().unwrap_or("-"), r.to)),
        )?;
        let run = self.step(
            host,
            Step::Start,
            rss.start
                .ok_or_else(not_run)
                .and_then(|r| r.map_err(|e| self.he(e))),
            |r| Some(format!("pid {}, log {}", r.pid, r.log)),
        )?;
        let timeout = self
            .ctx
            .cfg
            .ready_timeout
            .or(spec.ready.as_ref().and_then(|r| r.timeout))
            .or(spec.ready_timeout)
            .map(|d| d.0)
            .unwrap_or(Duration::from_secs(30));
        let ready = ReadyRequest {
            address: h.address().to_string(),
            port,
            timeout_ms: timeout.as_millis() as u64,
            probe: spec.ready.clone(),
        };
        self.step(
            host,
            Step::Ready,
            h.wait_ready(&ready).map_err(|e| self.he(e)),
            |r| {
                Some(
                    r.detail
                        .clone()
                        .unwrap_or_else(|| format!("port {port} after {} ms", r.after_ms)),
                )
            },
        )?;
        let started = SystemTime::UNIX_EPOCH + Duration::from_millis(run.started_unix_ms);
        self.run_checks(
            host,
            &spec,
            to,
            (port, started, Some(run.log.clone())),
            restoring,
        )?;
        let fence = self.fenced(host, Step::MarkGood)?;
        self.step(
            host,
            Step::MarkGood,
            h.mark_good(&fence, to).map_err(|e| self.he(e)),
            |_| None,
        )?;
        self.fenced(host, Step::Repool)?;
        let repooled = self
            .ctx
            .pool
            .repool(h, Some(port))
            .map_err(|e| e.to_string());
        self.step(host, Step::Repool, repooled, |_| None)?;
        Ok(())
    }

    /// After the bake: the checks again, on the instance already running.
    pub(super) fn recheck(&self, host: &str) -> Result<(), StepFail> {
        let h = self.ctx.host(host);
        let e = self.journal.entry(host);
        let fail = |d: String| fail(Step::Recheck, d);
        let spec = h.service_spec(&e.to).map_err(|x| fail(self.he(x)))?;
        let status = h.status().map_err(|x| fail(self.he(x)))?;
        let run = status
            .running
            .ok_or_else(|| fail("the service is no longer running".into()))?;
        let port = run
            .port
            .or(port_of(h, Some(&spec)))
            .ok_or_else(|| fail("no port: the running instance recorded none".into()))?;
        let started = SystemTime::UNIX_EPOCH + Duration::from_millis(run.started_unix_ms);
        self.run_checks(host, &spec, &e.to, (port, started, Some(run.log)), false)
    }

    /// Returns one host to its own last known good release through the same path; a host
    /// with nothing to go back to is taken out (depooled and stopped). A host that cannot be
    /// restored stays depooled and is marked as needing a human.
    pub(super) fn restore(&self, host: &str) -> bool {
        let e = self.journal.entry(host);
        self.set_phase(host, HostPhase::RollingBack, e.detail.clone());
        let from = e
            .from
            .as_ref()
            .filter(|_| !self.no_restore.contains_key(host));
        let r = match from {
            Some(from) => self.converge(host, from, true).map(|()| None),
            None if e.from.is_some() => {
                let h = self.ctx.host(host);
                let spec = h.service_spec(&e.to).ok();
                let why = self.no_restore.get(host).cloned().unwrap_or_default();
                self.take_out(host, port_of(h, spec.as_ref())).map(|()| {
                    Some(format!(
                        "not switched back to {}: {why}; stopped and left out of the pool",
                        e.from.as_ref().expect("checked")
                    ))
                })
            }
            None => {
                let h = self.ctx.host(host);
                let spec = h.service_spec(&e.to).ok();
                self.take_out(host, port_of(h, spec.as_ref())).map(|()| {
                    Some("had no earlier release: stopped and left out of the pool".to_string())
                })
            }
        };
        let ok = r.is_ok();
        let detail = match r {
            Ok(d) => d,
            Err(f) => Some(format!("{} failed", f.short())),
        };
        let keep = e
            .detail
            .clone()
            .map(|d| format!("{d}; "))
            .unwrap_or_default();
        self.set_phase(
            host,
            if ok {
                HostPhase::RolledBack
            } else {
                HostPhase::NeedsHuman
            },
            Some(format!(
                "{keep}rollback: {}",
                detail.clone().unwrap_or_else(|| "restored".into())
            )),
        );
        self.sink.emit(&Event::Rollback {
            host: host.into(),
            to: from.map(|r| r.commit.to_string()),
            ok,
            detail,
        });
        ok
    }
}
