//! The render check: before the first host is touched, every host renders its target
//! release's config in memory ([`crate::protocol::HostRequest::RenderPreview`]), so an
//! operator value the release owns, a missing or malformed ops file, or a bad key refuses
//! the deploy with nothing changed instead of failing a host after it was stopped.
//!
//! Also the one place a host's render request is made, for the real render on the host path
//! and for `applier diff`.

use crate::envconfig;
use crate::events::Event;
use crate::protocol::{OpsFileRef, PreviewRequest, ReleaseRef, RenderRequest};
use crate::records::Step;

use super::EnvContext;
use super::path::port_of;
use super::run::Run;

impl EnvContext {
    /// The render request of `host` for release `commit` of service `service` on `port`:
    /// the env's values under the host's, and where the host's ops file is.
    pub fn render_request(
        &self,
        host: &str,
        service: &str,
        release: &ReleaseRef,
        port: Option<u16>,
    ) -> Result<RenderRequest, String> {
        let hc = self.host(host).config();
        let mut values = self.cfg.values.clone();
        values.extend(hc.values.clone());
        let configured = hc.ops_file.as_deref().or(self.cfg.ops_file.as_deref());
        let (path, required) = envconfig::ops_file_path(configured, service);
        let env = model::names::Name::parse(self.service_env()).map_err(|e| e.to_string())?;
        Ok(RenderRequest {
            release: release.clone(),
            env,
            port,
            values,
            ops: Some(OpsFileRef { path, required }),
            fence: None,
        })
    }
}

impl Run<'_> {
    /// Every host renders its target in memory; `Err` names those that cannot.
    pub(super) fn render_check(&self, hosts: &[String]) -> Result<(), String> {
        self.each_target(hosts, |h, host, e, m| {
            let r = host
                .service_spec(&e.to)
                .map_err(|err| err.to_string())
                .and_then(|spec| {
                    let service = spec.name.clone().unwrap_or_else(|| m.service.clone());
                    let port = port_of(host, Some(&spec));
                    let render = self.ctx.render_request(h, &service, &e.to, port)?;
                    host.render_preview(&PreviewRequest {
                        render,
                        inline: None,
                    })
                    .map_err(|err| err.to_string())?;
                    // The host's path takes its spec from here (one round trip less).
                    self.specs
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .insert(h.clone(), (e.to.clone(), spec));
                    Ok(())
                })
                .map(|_| ())
                .map_err(|err| format!("render {h}: {err}"));
            if let Err(detail) = &r {
                self.sink.emit(&Event::Preflight {
                    host: h.clone(),
                    ok: false,
                    detail: detail.clone(),
                });
                self.journal
                    .note(|j| j.step(Some(h), Step::Render, false, Some(detail.clone())));
            }
            r
        })
    }
}
