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

use std::time::{Duration, SystemTime};

use artifact::manifest::Manifest;

use super::run::Run;
use crate::events::Event;
use crate::host::Host;
use crate::protocol::{
    HostError, PreflightRequest, ReadyRequest, ReleaseRef, RenderRequest, StartRequest,
};
use crate::records::{self, HostEntry, HostPhase, Step};
use crate::service::ServiceSpec;
use crate::target::now_rfc3339;

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

pub(super) fn fail(step: Step, detail: String) -> StepFail {
    StepFail {
        step,
        check: None,
        detail,
    }
}

/// The port a release listens on: the host's own, else the service's default.
fn port_of(h: &dyn Host, spec: Option<&ServiceSpec>) -> Option<u16> {
    h.config().port.or(spec.and_then(|s| s.port))
}

fn he(e: HostError) -> String {
    e.to_string()
}

impl Run<'_> {
    pub(super) fn set_phase(&self, host: &str, phase: HostPhase, detail: Option<String>) {
        self.journal.note(|j| {
            let e = j.hosts.get_mut(host).expect("host in journal");
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
            });
            let r = r.map_err(he).and_then(|rep| {
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
                .note(|j| j.step(Some(h), Step::Preflight, r.is_ok(), Some(detail)));
            r.map(|_| ()).map_err(|e| format!("preflight {h}: {e}"))
        })
    }

    /// Runs `f` for every host with its entry and target manifest, on the bounded pool;
    /// `Err` joins every host's error.
    fn each_target(
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
            let r = host.fetch(&e.to.manifest, m);
            let detail = match &r {
                Ok(rep) if rep.cached => format!("{} already on the host", rep.release),
                Ok(rep) => format!("{} fetched ({} bytes)", rep.release, rep.downloaded),
                Err(err) => err.to_string(),
            };
            self.sink.emit(&Event::Fetch {
                host: h.clone(),
                ok: r.is_ok(),
                detail: detail.clone(),
            });
            self.journal.note(|j| {
                j.step(Some(h), Step::Fetch, r.is_ok(), Some(detail));
                if r.is_ok() && j.hosts[h].phase == HostPhase::Pending {
                    j.hosts.get_mut(h).unwrap().phase = HostPhase::Fetched;
                }
            });
            r.map_err(|err| format!("fetch {h}: {err}"))?;
            // Keep the restore target at hand too (best effort: it is usually there).
            if let Some(from) = &e.from
                && let Some(fm) = self.manifests.get(&from.manifest)
            {
                let _ = host.fetch(&from.manifest, fm);
            }
            Ok(())
        })
    }

    /// Takes one host through the path to its target, recording its touch order and outcome.
    pub(super) fn deploy_host(&self, host: &str) -> Result<(), StepFail> {
        let n = self.touch.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
        let e = self.journal.entry(host);
        self.journal.note(|j| {
            let e = j.hosts.get_mut(host).unwrap();
            e.phase = HostPhase::InProgress;
            e.touched.get_or_insert(n);
            e.checks.clear();
        });
        let r = self.converge(host, &e.to, false);
        let detail = r.as_ref().err().map(|f| f.to_string());
        match &r {
            Ok(()) => {
                self.set_phase(host, HostPhase::Done, None);
                self.record_env(host, &e.to);
            }
            Err(_) => self.set_phase(host, HostPhase::Failed, detail.clone()),
        }
        self.sink.emit(&Event::HostDone {
            host: host.into(),
            release: e.to.commit.clone(),
            ok: r.is_ok(),
            detail,
        });
        r
    }

    /// Records in the env state that `host` runs `release`, which passed its checks.
    fn record_env(&self, host: &str, release: &ReleaseRef) {
        let (id, dt) = self.journal.read(|j| (j.id.clone(), j.deploy_type));
        let r = records::update_state(self.ctx.store.as_ref(), &self.ctx.name, |st| {
            let rec = st.hosts.entry(host.to_string()).or_default();
            rec.current = Some(release.clone());
            rec.last_good = Some(release.clone());
            rec.deploy_id = Some(id.clone());
            rec.updated_at = now_rfc3339();
            st.last_deploy = Some(id.clone());
            if dt.is_some() {
                st.deploy_type = dt;
            }
        });
        if let Err(e) = r {
            self.journal
                .note(|j| j.step(Some(host), Step::Record, false, Some(e.to_string())));
        }
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
            .note(|j| j.step(Some(host), step, r.is_ok(), d));
        r.map_err(|detail| fail(step, detail))
    }

    /// The first steps of every path: out of the pool, then the service stopped.
    fn take_out(&self, host: &str, port: Option<u16>) -> Result<(), StepFail> {
        let h = self.ctx.host(host);
        let depooled = self.ctx.pool.depool(h, port).map_err(|e| e.to_string());
        self.step(host, Step::Depool, depooled, |_| None)?;
        self.step(host, Step::Stop, h.stop().map_err(he), |r| {
            r.stopped
                .map(|p| format!("pid {p}{}", if r.killed { " (killed)" } else { "" }))
        })?;
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
        let spec = self.step(
            host,
            Step::Spec,
            h.service_spec(&to.commit).map_err(he),
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
        let req = RenderRequest {
            commit: to.commit.clone(),
            env: self.ctx.service_env().to_string(),
            port: Some(port),
            values: h.config().values.clone(),
        };
        self.step(host, Step::Render, h.render(&req).map_err(he), |r| {
            Some(r.config.clone())
        })?;
        self.step(host, Step::Switch, h.switch(&to.commit).map_err(he), |r| {
            Some(format!("{} -> {}", r.from.as_deref().unwrap_or("-"), r.to))
        })?;
        let start = StartRequest {
            port: Some(port),
            env: h.config().env.clone(),
        };
        let run = self.step(host, Step::Start, h.start(&start).map_err(he), |r| {
            Some(format!("pid {}, log {}", r.pid, r.log))
        })?;
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
        self.step(host, Step::Ready, h.wait_ready(&ready).map_err(he), |r| {
            Some(
                r.detail
                    .clone()
                    .unwrap_or_else(|| format!("port {port} after {} ms", r.after_ms)),
            )
        })?;
        let started = SystemTime::UNIX_EPOCH + Duration::from_millis(run.started_unix_ms);
        self.run_checks(
            host,
            &spec,
            to,
            (port, started, Some(run.log.clone())),
            restoring,
        )?;
        self.step(host, Step::MarkGood, h.mark_good(to).map_err(he), |_| None)?;
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
        let spec = h.service_spec(&e.to.commit).map_err(|x| fail(he(x)))?;
        let status = h.status().map_err(|x| fail(he(x)))?;
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
        let r = match &e.from {
            Some(from) => self.converge(host, from, true).map(|()| {
                self.record_env(host, from);
                None
            }),
            None => {
                let h = self.ctx.host(host);
                let spec = h.service_spec(&e.to.commit).ok();
                self.take_out(host, port_of(h, spec.as_ref())).map(|()| {
                    Some("had no earlier release: stopped and left out of the pool".to_string())
                })
            }
        };
        let ok = r.is_ok();
        let detail = match r {
            Ok(d) => d,
            Err(f) => Some(f.to_string()),
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
            to: e.from.as_ref().map(|r| r.commit.clone()),
            ok,
            detail,
        });
        ok
    }
}
