//! `applier plan`: the batches, the capacity guard's waves and the ETA, through the library
//! on in-memory hosts and through the binary's text and JSON output on local hosts.

use super::*;
use applier::engine::preview;
use applier::records::{DeployKind, HostEntry, StepRecord};

fn names(n: usize) -> Vec<String> {
    (1..=n).map(|i| format!("h{i}")).collect()
}

fn waves(p: &applier::engine::Preview) -> Vec<Vec<Vec<String>>> {
    p.batches.iter().map(|b| b.waves.clone()).collect()
}

fn w(hs: &[&[&str]]) -> Vec<Vec<String>> {
    hs.iter()
        .map(|w| w.iter().map(|h| h.to_string()).collect())
        .collect()
}

#[test]
fn plan_cuts_batches_into_the_waves_the_capacity_guard_allows_and_changes_nothing() {
    let hs = names(7);
    let hs: Vec<&str> = hs.iter().map(String::as_str).collect();
    let (bed, r) = bed(&hs);
    let store = TapStore::new(bed.store.clone());
    let ctx = bed.ctx_on(
        store.clone(),
        "plan",
        with(groups(&hs, 3), json!({"capacity": {"max_out": 2}})),
    );
    let target = r[1].manifest.to_string();
    let opts = DeployOptions::default();
    let p = preview(&ctx, &target, &opts).unwrap();
    assert_eq!(
        p.batches
            .iter()
            .map(|b| b.name.as_str())
            .collect::<Vec<_>>(),
        ["canary", "rest#1", "rest#2"]
    );
    assert_eq!(
        waves(&p),
        [
            w(&[&["h1"]]),
            w(&[&["h2", "h3"], &["h4"]]),
            w(&[&["h5", "h6"], &["h7"]])
        ]
    );
    assert_eq!(
        p.batches[1].capacity.as_deref(),
        Some("2 waves (2+1): max_out 2")
    );
    assert_eq!(p.capacity.limited_by, "capacity.max_out 2");
    assert!(p.eta.total_s.is_none() && p.eta.from_deploys.is_empty());

    // Someone else took h7 out: one at a time until h7's own wave.
    bed.pool.set_out("h7", true);
    let p = preview(&ctx, &target, &opts).unwrap();
    assert_eq!(p.capacity.out_of_pool, ["h7"]);
    assert_eq!(
        waves(&p),
        [
            w(&[&["h1"]]),
            w(&[&["h2"], &["h3"], &["h4"]]),
            w(&[&["h5"], &["h6", "h7"]])
        ]
    );
    assert!(
        p.batches[1]
            .capacity
            .as_deref()
            .unwrap()
            .contains("less h7 out of the pool already"),
        "{:?}",
        p.batches[1]
    );
    // With max_out 1, nothing may go: the deploy would abort at the canary, as the run does.
    let tight = bed.ctx_on(
        store.clone(),
        "plan",
        with(groups(&hs, 3), json!({"capacity": {"max_out": 1}})),
    );
    let p = preview(&tight, &target, &opts).unwrap();
    let held = p.batches[0].capacity.as_deref().unwrap();
    assert!(
        held.contains("capacity guard: already out of the pool: h7") && held.contains("aborts"),
        "{held}"
    );
    assert!(p.batches.iter().all(|b| b.waves.is_empty()));
    assert_eq!(p.batches[2].capacity.as_deref(), Some("not reached"));
    let o = deploy(&tight, &NullSink, &r[1]);
    assert!(
        o.message.contains("already out of the pool: h7"),
        "{}",
        o.message
    );

    // The previews wrote nothing to the store (the deploy above did: lease and journal).
    let c = store.counts();
    let before_deploy: u64 = c
        .requests
        .iter()
        .filter(|(k, _)| k.starts_with("put") || k.starts_with("delete"))
        .map(|(_, n)| n)
        .sum();
    assert!(before_deploy > 0, "the deploy writes");
    store.kill();
    let _ = store;
    let fresh = TapStore::new(bed.store.clone());
    let ctx = bed.ctx_on(fresh.clone(), "plan2", groups(&hs, 3));
    preview(&ctx, &target, &opts).unwrap();
    let writes: Vec<_> = fresh
        .counts()
        .requests
        .into_iter()
        .filter(|(k, _)| k.starts_with("put") || k.starts_with("delete"))
        .collect();
    assert!(writes.is_empty(), "{writes:?}");
}

#[test]
fn the_eta_comes_from_the_hosts_of_past_succeeded_deploys() {
    let hs = ["h1", "h2", "h3", "h4"];
    let (bed, r) = bed(&hs);
    for h in bed.hosts.values() {
        h.set_latency(Some("start"), Duration::from_millis(60));
    }
    let ctx = bed.ctx("eta", groups(&hs, 2));
    let o = deploy(&ctx, &NullSink, &r[1]);
    assert_eq!(o.status, JournalStatus::Succeeded, "{}", o.message);
    // A failed run is not history to go by.
    let bad = deploy(&ctx, &NullSink, &r[2]);
    assert_eq!(bad.status, JournalStatus::RolledBack);
    // The failed run locked the env (applier unlock); a person plans past it, as they deploy.
    let opts = DeployOptions {
        ignore_failure_lock: Some("planning after the failed run".into()),
        ..Default::default()
    };
    let p = preview(&ctx, &r[3].manifest.to_string(), &opts).unwrap();
    let e = &p.eta;
    assert_eq!(e.from_deploys, std::slice::from_ref(&o.deploy_id));
    assert_eq!(e.host_samples, 4);
    let per = e.per_host_s.unwrap();
    assert!((0.06..2.0).contains(&per), "{e:?}");
    assert_eq!(e.waves, 3);
    let total = e.total_s.unwrap();
    let want = per * 3.0 + e.prefetch_per_host_s.unwrap() * 4.0;
    assert!((total - want).abs() < 1e-9, "{e:?}");
}

/// A succeeded journal of `hosts`: preflight and fetch over `prefetch_s`, then each host's
/// path from `spec` to `repool` taking `host_s` (the first host `slow_s`).
fn past_journal(env: &str, hosts: &[String], prefetch_s: u64, host_s: u64, slow_s: u64) -> Journal {
    let at = |s: u64| format!("2026-01-01T00:{:02}:{:02}.000Z", s / 60, s % 60);
    let rel = ReleaseRef {
        commit: model::names::CommitId::parse(A).unwrap(),
        manifest: artifact::Digest::of(b"a"),
    };
    let step = |s: u64, h: &str, step| StepRecord {
        at: at(s),
        host: Some(h.to_string()),
        step,
        ok: true,
        detail: None,
    };
    let mut steps = vec![step(0, &hosts[0], records::Step::Preflight)];
    steps.push(step(prefetch_s, &hosts[0], records::Step::Fetch));
    let mut t = 10;
    for (i, h) in hosts.iter().enumerate() {
        let d = if i == 0 { slow_s } else { host_s };
        steps.push(step(t, h, records::Step::Spec));
        steps.push(step(t + d, h, records::Step::Repool));
        t += d + 1;
    }
    Journal {
        id: "20260101T000000Z-000001".into(),
        env: env.into(),
        kind: DeployKind::Deploy,
        artifact: Some(rel.manifest),
        commit: Some(A.into()),
        who: "t@h".into(),
        reason: String::new(),
        started_at: at(0),
        finished_at: Some(at(t)),
        status: JournalStatus::Succeeded,
        deploy_type: None,
        groups: vec![("all".into(), hosts.to_vec())],
        hosts: hosts
            .iter()
            .map(|h| {
                let e = HostEntry {
                    group: "all".into(),
                    from: None,
                    to: rel.clone(),
                    phase: HostPhase::Done,
                    touched: Some(1),
                    detail: None,
                    checks: vec![],
                };
                (h.clone(), e)
            })
            .collect(),
        steps,
        abort_reason: None,
        needs_human: vec![],
        analysis: vec![],
        segments: 0,
        damaged: vec![],
        who_source: None,
        source_ref: None,
        guard: None,
        overrides: vec![],
    }
}

fn applier(config: &std::path::Path, args: &[&str]) -> (i32, String, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_applier"))
        .arg("--config")
        .arg(config)
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn applier_plan_prints_batches_waves_and_eta_as_text_and_json() {
    let bed = Bed::new(&[]);
    let b = bed.artifact(B, "");
    let roots = tempfile::tempdir().unwrap();
    let hs = names(5);
    let hosts: String = hs
        .iter()
        .map(|h| format!("      {h}: {{root: {}/{h}}}\n", roots.path().display()))
        .collect();
    let env = |name: &str| {
        format!(
            "  {name}:\n    transport: {{type: local}}\n    node: \"\"\n    groups:\n      - {{name: canary, hosts: [h1]}}\n      - {{name: rest, hosts: [h2, h3, h4, h5]}}\n    group_size: 2\n    capacity: {{max_out: 2}}\n    pool: {{driver: command, depool: \"true\", repool: \"true\", is_depooled: \"test {{host}} = h5\"}}\n    hosts:\n{hosts}"
        )
    };
    let config = roots.path().join("deploy.yaml");
    let text = format!(
        "store: {}\nenvs:\n{}{}",
        bed.dir().unwrap().display(),
        env("prod"),
        env("fresh")
    );
    std::fs::write(&config, text).unwrap();
    let past = past_journal("prod", &hs, 2, 10, 30);
    bed.store
        .put_cas(
            &applier::keys::deploy_journal("prod", &past.id),
            &serde_json::to_vec(&past).unwrap(),
            None,
        )
        .unwrap();
    let digest = b.manifest.to_string();

    let (code, out, err) = applier(&config, &["plan", &digest, "--env", "prod"]);
    assert_eq!(code, 0, "{err}");
    let want = format!(
        "plan: deploy bbbbbbbbbbbb ({digest}) to prod (code change)
storage guard: code deploy; first deploy: no running release to compare with
storage guard: no storage manifest to compare; schema guard skipped
hosts: 5 in 3 batches; capacity: at most 2 out of the pool at once (capacity.max_out 2); out of the pool now: h5
    1. canary       1 host: h1; at once: max_out 2 less h5 out of the pool already
    2. rest#1       2 hosts: h2, h3; 2 waves (1+1): max_out 2 less h5 out of the pool already
    3. rest#2       2 hosts: h4, h5
ETA: 42.0s = 4 waves x 10.0s per host + 5 hosts x 0.4s preflight and prefetch + 0s bake (medians of 5 host paths in the last 1 succeeded run: {})
",
        past.id
    );
    assert_eq!(out, want);

    let (code, out, err) = applier(
        &config,
        &["--format", "json", "plan", &digest, "--env", "prod"],
    );
    assert_eq!(code, 0, "{err}");
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["batches"][1]["waves"], json!([["h2"], ["h3"]]));
    assert_eq!(v["batches"][2]["waves"], json!([["h4", "h5"]]));
    assert_eq!(v["capacity"]["out_of_pool"], json!(["h5"]));
    assert_eq!(v["eta"]["total_s"], json!(42.0));
    assert_eq!(v["eta"]["per_host_s"], json!(10.0));
    assert_eq!(v["eta"]["from_deploys"], json!([past.id]));
    assert_eq!(
        v["storage_guard"],
        json!([
            "code deploy; first deploy: no running release to compare with",
            "no storage manifest to compare; schema guard skipped"
        ]),
        "the plan says what the storage guard could and could not compare"
    );

    let (code, out, _) = applier(&config, &["plan", &digest, "--env", "fresh"]);
    assert_eq!(code, 0);
    assert!(
        out.ends_with("ETA: no history (no succeeded run in fresh yet)\n"),
        "{out}"
    );
    let (_, out, _) = applier(
        &config,
        &["--format", "json", "plan", &digest, "--env", "fresh"],
    );
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["eta"]["total_s"], Value::Null);
    // Nothing was deployed or recorded.
    assert_eq!(
        records::history(bed.store.as_ref(), "fresh").unwrap().len(),
        0
    );
    assert!(!roots.path().join("h1").join("current").exists());

    // An artifact that is not in the store is refused, as by deploy.
    let (code, _, err) = applier(&config, &["plan", "ffff", "--env", "prod"]);
    assert_eq!(code, 3, "{err}");
}
