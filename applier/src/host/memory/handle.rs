//! How the in-memory host answers each request: the real target's rules over a few maps.

use std::io;
use std::time::SystemTime;

use super::{Instance, Mem, Release, Startup};
use crate::protocol::{
    Fence, FetchReport, FileText, HealthReport, HostError, HostRequest, HostResponse, HostStatus,
    PreflightReport, PreviewReport, PruneReport, ReadyReport, ReleaseRef, RenderReport, RunInfo,
    StopReport, SwitchReport,
};
use crate::service::ServiceSpec;
use crate::target::{node_arch, node_os, now_rfc3339};

impl Mem {
    pub(super) fn spec(&self, commit: &str) -> ServiceSpec {
        self.specs.get(commit).unwrap_or(&self.default_spec).clone()
    }

    /// The release, if it is on the host as that very build (the target's `.release.json`).
    pub(super) fn verified(&self, release: &ReleaseRef) -> Result<&Release, HostError> {
        match self.releases.get(release.commit.as_str()) {
            Some(r) if r.manifest == release.manifest => Ok(r),
            Some(r) => Err(HostError::NotFetched(format!(
                "{} as the build {} (the host holds {})",
                release.commit, release.manifest, r.manifest
            ))),
            None => Err(HostError::NotFetched(release.commit.to_string())),
        }
    }

    /// The target's fence check: a token older than the newest seen for its env is refused;
    /// an admitted one becomes the newest.
    pub(super) fn admit_fence(&mut self, f: &Fence) -> Result<(), HostError> {
        self.fences_seen.push(f.token);
        if let Some(seen) = self.state.fences.get(f.env.as_str())
            && seen != f
            && f.token <= seen.token
        {
            return Err(HostError::Fenced {
                got: f.clone(),
                seen: seen.clone(),
            });
        }
        self.state.fences.insert(f.env.to_string(), f.clone());
        Ok(())
    }

    pub(super) fn running(&self) -> Option<RunInfo> {
        self.instance
            .as_ref()
            .filter(|i| i.alive)
            .map(|i| i.info.clone())
    }

    pub(super) fn status(&self) -> HostStatus {
        HostStatus {
            current: self.current.clone(),
            state: self.state.clone(),
            running: self.running(),
            releases: self.releases.keys().cloned().collect(),
        }
    }

    pub(super) fn touch(&mut self) {
        self.state.updated_at = now_rfc3339();
    }

    pub(super) fn handle(
        &mut self,
        root: &str,
        req: HostRequest,
    ) -> Result<HostResponse, HostError> {
        Ok(match req {
            HostRequest::Hello(h) => HostResponse::Hello(h.answer()?),
            HostRequest::Preflight(r) => {
                if self.free_bytes < r.min_free_bytes {
                    return Err(HostError::Preflight(format!(
                        "{root} has {} MiB free, needs {} MiB",
                        self.free_bytes >> 20,
                        r.min_free_bytes >> 20
                    )));
                }
                HostResponse::Preflight(PreflightReport {
                    root: root.to_string(),
                    free_bytes: self.free_bytes,
                    node_abi: r.node.map(|_| self.node_abi.clone()),
                    os: node_os().into(),
                    arch: node_arch().into(),
                    current: self.current.clone(),
                })
            }
            HostRequest::FetchUrls(r) => {
                let m = r.verified_manifest()?;
                let commit = ReleaseRef::of(r.digest, &m)
                    .map_err(|e| HostError::Preflight(e.to_string()))?
                    .commit
                    .to_string();
                let report = |cached: bool| FetchReport {
                    release: commit.clone(),
                    cached,
                    downloaded: if cached {
                        0
                    } else {
                        m.layers.iter().map(|l| l.size).sum()
                    },
                    entries: if cached {
                        0
                    } else {
                        m.layers.iter().map(|l| l.entries).sum()
                    },
                };
                match self.releases.get(&commit) {
                    Some(rel) if rel.manifest == r.digest => HostResponse::FetchUrls(report(true)),
                    Some(_) if self.current.as_deref() == Some(commit.as_str()) => {
                        return Err(HostError::Preflight(format!(
                            "release {commit} is current but holds a different build; refusing to replace it"
                        )));
                    }
                    _ => {
                        self.seq += 1;
                        let rel = Release {
                            manifest: r.digest,
                            seq: self.seq,
                            rendered: None,
                        };
                        self.releases.insert(commit.clone(), rel);
                        HostResponse::FetchUrls(report(false))
                    }
                }
            }
            HostRequest::ServiceSpec(r) => {
                self.verified(&r.release)?;
                HostResponse::ServiceSpec(self.spec(r.release.commit.as_str()))
            }
            HostRequest::Render(r) => {
                self.verified(&r.release)?;
                let commit = r.release.commit.to_string();
                let port = r.port.or(self.spec(&commit).port);
                let config = format!("{root}/releases/{commit}/config.yaml");
                if let Some(rel) = self.releases.get_mut(&commit) {
                    rel.rendered = Some(r);
                }
                HostResponse::Render(RenderReport { config, port })
            }
            // No env files here: the preview is the inventory's values alone.
            HostRequest::RenderPreview(r) => {
                if r.inline.is_none() {
                    self.verified(&r.render.release)?;
                }
                HostResponse::RenderPreview(PreviewReport {
                    text: serde_norway::to_string(&r.render.values).unwrap_or_default(),
                    ops_keys: vec![],
                    ops_file: None,
                })
            }
            HostRequest::Switch(r) => {
                self.verified(&r.release)?;
                let commit = r.release.commit.to_string();
                let from = self.current.replace(commit.clone());
                self.state.current = Some(r.release);
                self.touch();
                HostResponse::Switch(SwitchReport { from, to: commit })
            }
            HostRequest::Start(r) => {
                let commit = self
                    .current
                    .clone()
                    .ok_or_else(|| HostError::NotFetched("(no current release)".into()))?;
                if let Some(run) = self.running() {
                    return Err(HostError::Preflight(format!(
                        "the service is already running (pid {})",
                        run.pid
                    )));
                }
                let startup = self
                    .startups
                    .get(&commit)
                    .or_else(|| self.startups.get(""))
                    .copied()
                    .unwrap_or_default();
                let now = SystemTime::now();
                let ms = now
                    .duration_since(SystemTime::UNIX_EPOCH)
                    .map(|d| d.as_millis() as u64)
                    .unwrap_or(0);
                let log = format!("{root}/logs/{commit}-{ms}.log");
                let text = self.logs.get(&commit).cloned().unwrap_or_default();
                self.files.insert(log.clone(), text);
                self.next_pid += 1;
                let info = RunInfo {
                    pid: self.next_pid,
                    release: commit,
                    port: r.port,
                    log,
                    started_at: humantime::format_rfc3339_millis(now).to_string(),
                    started_unix_ms: ms,
                };
                self.instance = Some(Instance {
                    info: info.clone(),
                    alive: startup != Startup::CrashAfterStart,
                    ready: startup == Startup::Ready,
                });
                HostResponse::Start(info)
            }
            HostRequest::WaitReady(r) => {
                let secs = r.timeout_ms / 1000;
                match &self.instance {
                    Some(i) if !i.alive => {
                        return Err(HostError::Died(format!(
                            "log {}: (memory host: the instance exited)",
                            i.info.log
                        )));
                    }
                    None => return Err(HostError::Died("(no log)".into())),
                    Some(i) if i.info.port != Some(r.port) || !i.ready => {
                        return Err(HostError::Timeout {
                            port: r.port,
                            secs,
                            detail: format!(
                                "(memory host: the instance on port {:?} never became ready on {})",
                                i.info.port, r.port
                            ),
                        });
                    }
                    Some(_) => HostResponse::WaitReady(ReadyReport {
                        after_ms: 0,
                        detail: None,
                    }),
                }
            }
            HostRequest::Stop(_) => {
                let stopped = self.running().map(|i| i.pid);
                self.instance = None;
                HostResponse::Stop(StopReport {
                    stopped,
                    killed: false,
                })
            }
            HostRequest::Status => HostResponse::Status(self.status()),
            HostRequest::MarkGood(r) => {
                self.verified(&r.release)?;
                let release = r.release;
                if self.state.last_good.as_ref() != Some(&release) {
                    self.state.previous_good = self.state.last_good.take();
                    self.state.last_good = Some(release);
                }
                self.touch();
                HostResponse::MarkGood(self.state.clone())
            }
            HostRequest::Prune(r) => HostResponse::Prune(self.prune(r.keep)),
            HostRequest::ReadFile(r) => match self.files.get(&r.path) {
                Some(text) => HostResponse::ReadFile(FileText { text: text.clone() }),
                None => {
                    return Err(HostError::Io {
                        context: format!("resolving {}", r.path),
                        source: io::ErrorKind::NotFound.into(),
                    });
                }
            },
            HostRequest::Exec(_) => HostResponse::Exec(self.exec_output.clone()),
            HostRequest::Health => {
                let run = self.running();
                let port = run.as_ref().and_then(|r| r.port);
                let ready = self.instance.as_ref().is_some_and(|i| i.alive && i.ready);
                HostResponse::Health(HealthReport {
                    current: self.current.clone(),
                    pid: run.map(|r| r.pid),
                    port,
                    port_bound: port.map(|_| ready),
                    free_bytes: self.free_bytes,
                })
            }
            // `MemoryHost::call` runs a batch's requests one by one, through their own calls.
            HostRequest::Batch(_) => {
                return Err(HostError::Protocol("a batch inside a batch".into()));
            }
        })
    }

    pub(super) fn prune(&mut self, keep: usize) -> PruneReport {
        let mut protect: Vec<String> = self.current.iter().cloned().collect();
        for r in [
            &self.state.current,
            &self.state.last_good,
            &self.state.previous_good,
        ]
        .into_iter()
        .flatten()
        {
            protect.push(r.commit.to_string());
        }
        protect.extend(self.running().map(|r| r.release));
        let mut all: Vec<(u64, String)> = self
            .releases
            .iter()
            .map(|(c, r)| (r.seq, c.clone()))
            .collect();
        all.sort_by(|a, b| b.cmp(a));
        let (mut kept, mut removed) = (Vec::new(), Vec::new());
        for (i, (_, name)) in all.into_iter().enumerate() {
            if i < keep || protect.contains(&name) {
                kept.push(name);
            } else {
                self.releases.remove(&name);
                removed.push(name);
            }
        }
        PruneReport {
            removed,
            kept,
            ..Default::default()
        }
    }
}
