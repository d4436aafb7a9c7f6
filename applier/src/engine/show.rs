//! What a plan shows before anything runs: the plan event, with each host's from, to and the
//! checks its release gets in this env, read from the artifact's own `deploy/service.yaml`.

use std::collections::BTreeMap;

use artifact::manifest::{LayerKind, Manifest};
use artifact::store::Store;
use artifact::{Digest, keys};

use super::EnvContext;
use super::plan::Plan;
use crate::checks::CheckSpec;
use crate::events::{Event, EventSink, PlanGroup, PlanHost};
use crate::service::ServiceSpec;

/// Emits the plan: every batch with each host's from, to and checks.
pub(super) fn emit_plan(ctx: &EnvContext, sink: &dyn EventSink, plan: &Plan, dry_run: bool) {
    let j = plan.journal();
    let mut checks: BTreeMap<Digest, Vec<String>> = BTreeMap::new();
    for (d, m) in &plan.manifests {
        if j.hosts.values().any(|e| e.to.manifest == *d) {
            // A spec the store cannot give is not shown as "no checks": the plan says it does
            // not know (each host reads its own copy, and a host that cannot refuses).
            let names = match service_spec_from_store(ctx.store.as_ref(), m) {
                Some(spec) => check_list(ctx, &spec).iter().map(CheckSpec::name).collect(),
                None => vec![
                    "(unknown: deploy/service.yaml could not be read from the store)".to_string(),
                ],
            };
            checks.insert(*d, names);
        }
    }
    let groups = j
        .groups
        .iter()
        .map(|(g, hs)| PlanGroup {
            name: g.clone(),
            hosts: hs
                .iter()
                .map(|h| {
                    let e = &j.hosts[h];
                    PlanHost {
                        host: h.clone(),
                        from: e.from.as_ref().map(|r| r.commit.to_string()),
                        to: e.to.commit.to_string(),
                        checks: checks.get(&e.to.manifest).cloned().unwrap_or_default(),
                    }
                })
                .collect(),
        })
        .collect();
    sink.emit(&Event::Plan {
        deploy_id: j.id.clone(),
        env: ctx.name.clone(),
        kind: j.kind,
        artifact: j.artifact,
        commit: j.commit.clone(),
        deploy_type: j.deploy_type,
        dry_run,
        groups,
    });
}

/// The checks a release gets in this env: the service's own (unless skipped), the env's
/// extra ones, less the disabled kinds and names.
pub(super) fn check_list(ctx: &EnvContext, spec: &crate::service::ServiceSpec) -> Vec<CheckSpec> {
    let mut v = Vec::new();
    if !ctx.cfg.checks.skip_service_checks {
        v.extend(spec.checks.iter().cloned());
    }
    v.extend(ctx.cfg.checks.extra.iter().cloned());
    let off = &ctx.cfg.checks.disable;
    v.retain(|c| {
        let kind = match c {
            CheckSpec::Http(_) => "http",
            CheckSpec::Logs(_) => "logs",
            CheckSpec::Metrics(_) => "metrics",
        };
        !off.iter().any(|d| d == kind || *d == c.name())
    });
    v
}

/// Reads `deploy/service.yaml` straight out of the source layer in the store, to show each
/// host's checks in the plan, verifying the layer's digests (gzip or zstd layers).
pub fn service_spec_from_store(store: &dyn Store, manifest: &Manifest) -> Option<ServiceSpec> {
    let layer = manifest.layer(LayerKind::Source)?;
    let got = store.get(&keys::blob(&layer.digest)).ok()?;
    let expected = artifact::unpack::Expected {
        digest: Some(layer.digest),
        size: Some(layer.size),
        diff_id: Some(layer.diff_id),
    };
    let file = artifact::unpack::read_layer_file(
        got.reader,
        &expected,
        model::service::SERVICE_YAML,
        1 << 20,
    )
    .ok()?;
    match file {
        Some(b) => ServiceSpec::parse(std::str::from_utf8(&b).ok()?).ok(),
        None => Some(ServiceSpec::default()),
    }
}
