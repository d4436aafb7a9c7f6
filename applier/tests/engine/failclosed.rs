//! Fail-closed cases: a gate that cannot read what it decides on refuses, a deployer that lost
//! its lease changes nothing more, and a record cannot make the engine switch to a release no
//! policy was applied to.

use std::sync::mpsc;

use applier::engine::lease;
use applier::records::{DeployKind, HostEntry};
use artifact::sign::{SecretKey, sign_artifact};
use schema_guard::StorageManifest;

use super::*;
use bed::PausableStore;
use std::collections::BTreeMap;
use std::sync::Arc;

/// A one-table storage manifest (`pages` at `version` with `attrs`) for every env.
pub(crate) fn storage(version: i64, attrs: Value) -> Value {
    let mut m = StorageManifest::new("manual");
    m.domains = vec!["en.wikipedia.org".into()];
    m.add_table(
        "en.wikipedia.org",
        &json!({
            "table": "pages",
            "version": version,
            "attributes": attrs,
            "index": [{"attribute": "title", "type": "hash"}]
        }),
        None,
    );
    m.finish();
    m.to_value()
}

/// Host ops (other than the read-only `status`) each host recorded since `from` ([`calls`]),
/// as `<host> <op>`.
fn changes_since(bed: &Bed, from: &BTreeMap<String, usize>) -> Vec<String> {
    let mut out = Vec::new();
    for (n, h) in &bed.hosts {
        for c in &h.calls()[from[n]..] {
            if c != "status" {
                out.push(format!("{n} {c}"));
            }
        }
    }
    out
}

/// How many calls each host has recorded so far.
fn calls(bed: &Bed) -> BTreeMap<String, usize> {
    bed.hosts
        .iter()
        .map(|(n, h)| (n.clone(), h.calls().len()))
        .collect()
}

/// Why, case 1: the env's current artifact cannot be loaded. The guard used to go on as if the
/// schema were unchanged (a schema bump went out as a `code` deploy); now it refuses, names the
/// record, and touches nothing.
#[test]
fn guard_refuses_when_the_current_manifest_cannot_be_read() {
    let hs = ["h1", "h2", "h3"];
    let bed = Bed::new(&hs);
    let old = bed.artifact_with(A, "", Some(storage(1, json!({"title": "string"}))));
    let new = bed.artifact_with(
        B,
        "",
        Some(storage(2, json!({"title": "string", "body": "blob"}))),
    );
    let ctx = bed.ctx("guard", groups(&hs, 1));
    assert_eq!(
        deploy(&ctx, &NullSink, &old).status,
        JournalStatus::Succeeded
    );
    // The env's current manifest goes bad in the store.
    let blob = bed
        .dir()
        .unwrap()
        .join("blobs/sha256")
        .join(old.manifest.hex());
    std::fs::remove_file(&blob).unwrap();
    std::fs::write(&blob, b"{\"not\": \"a manifest\"}").unwrap();
    let n = calls(&bed);
    let e = engine::deploy(
        &ctx,
        &NullSink,
        &new.manifest.to_string(),
        &DeployOptions::default(),
    )
    .expect_err("a guard that cannot read the current manifest must refuse");
    assert_eq!(e.kind(), engine::ErrorKind::Refused, "{e}");
    let record = e.record().unwrap_or_default().to_string();
    assert!(record.contains(&old.manifest.hex()), "{record}: {e}");
    assert!(
        e.way_out()
            .unwrap_or_default()
            .contains("--schema-baseline"),
        "{e}"
    );
    assert_eq!(changes_since(&bed, &n), Vec::<String>::new());
    assert!(
        lease::current(ctx.store.as_ref(), "guard")
            .unwrap()
            .is_none()
    );
    for h in hs {
        bed.assert_serves(h, A);
    }
}

/// Why, case 2: a deploy paused past its lease TTL, a second deploy took over and finished;
/// when the first resumed, it stopped the instance the second had verified. Now its next step
/// is refused (the host has seen a newer fencing token) and the host stays as the second left
/// it.
#[test]
fn a_deployer_paused_past_its_lease_cannot_change_a_host_the_next_deploy_finished() {
    let hs = ["h1", "h2", "h3"];
    let (bed, r) = bed(&hs);
    let paused = PausableStore::new(bed.store.clone());
    let mut first = bed.ctx("fence", groups(&hs, 1));
    first.store = paused.clone();
    first.lease_ttl = Duration::from_millis(800);
    // The first deploy "stops" (SIGSTOP) at h2's stop: its thread waits, its store calls block.
    let (stopped_tx, stopped_rx) = mpsc::channel::<()>();
    let (cont_tx, cont_rx) = mpsc::channel::<()>();
    let p2 = paused.clone();
    bed.host("h2").on_call("stop", move || {
        p2.set_paused(true);
        stopped_tx.send(()).unwrap();
        cont_rx.recv().unwrap();
    });
    let to = r[1].manifest.to_string();
    let t = std::thread::spawn(move || {
        engine::deploy(&first, &NullSink, &to, &DeployOptions::default()).unwrap()
    });
    stopped_rx.recv().unwrap();
    std::thread::sleep(Duration::from_millis(1200));
    // The second deploy takes the expired lease over and finishes.
    let second = bed.ctx("fence", groups(&hs, 1));
    let o2 = deploy(&second, &NullSink, &r[3]);
    assert_eq!(o2.status, JournalStatus::Succeeded, "{}", o2.message);
    for h in hs {
        bed.assert_serves(h, D);
    }
    // SIGCONT.
    let n = calls(&bed);
    paused.set_paused(false);
    cont_tx.send(()).unwrap();
    let o1 = t.join().unwrap();
    assert_eq!(o1.status, JournalStatus::NeedsHuman, "{}", o1.message);
    assert!(o1.message.contains("lease"), "{}", o1.message);
    for h in hs {
        bed.assert_serves(h, D);
    }
    // Nothing it sent after it resumed was carried out: its stop reached h2 with the older
    // token and was refused, and nothing else was sent.
    let after = changes_since(&bed, &n);
    assert!(
        after.iter().all(|c| c == "h2 stop"),
        "the first deploy changed hosts after it lost its lease: {after:?}"
    );
    let fences = bed.host("h2").fences();
    let (first_gen, second_gen) = (fences[0], *fences.iter().max().unwrap());
    assert!(second_gen > first_gen, "{fences:?}");
    assert_eq!(fences.last(), Some(&first_gen), "{fences:?}");
    assert!(o1.message.contains("stopped at once"), "{}", o1.message);
    let j = journal(&bed.ctx("fence", groups(&hs, 1)), &o1.deploy_id);
    assert!(
        j.steps.iter().any(|s| s.step == records::Step::Stop
            && !s.ok
            && s.detail.as_deref().unwrap_or("").contains("fencing token")),
        "{j:#?}"
    );
}

/// Why, case 3: a journal pairing a signed manifest digest with an unsigned release's commit
/// made `rollback` switch to the unsigned release. Now the commit comes from the verified
/// manifest, never from the record: the rollback is refused, naming the journal.
#[test]
fn a_journal_cannot_pair_a_signed_digest_with_an_unsigned_commit() {
    let hs = ["h1", "h2"];
    let bed = Bed::new(&hs);
    let signed = bed.artifact(A, "");
    let unsigned = bed.artifact(B, "");
    let key = SecretKey::generate();
    sign_artifact(bed.store.as_ref(), &signed.manifest, &key).unwrap();
    for h in hs {
        bed.host(h).install(&unsigned);
        bed.host(h).install(&signed);
    }
    let ctx = bed.ctx(
        "sig",
        with(
            groups(&hs, 1),
            json!({"require_signature": {"trusted_keys": [key.public().to_text().trim()]}}),
        ),
    );
    let forged = ReleaseRef {
        commit: unsigned.commit.clone(),
        manifest: signed.manifest,
    };
    let j = Journal {
        id: "20260101T000000Z-000001".into(),
        env: "sig".into(),
        kind: DeployKind::Deploy,
        artifact: Some(signed.manifest),
        commit: Some(signed.commit.to_string()),
        who: "mallory@store".into(),
        reason: String::new(),
        started_at: "2026-01-01T00:00:00Z".into(),
        finished_at: Some("2026-01-01T00:01:00Z".into()),
        status: JournalStatus::Succeeded,
        deploy_type: None,
        groups: vec![
            ("canary".into(), vec!["h1".into()]),
            ("rest".into(), vec!["h2".into()]),
        ],
        hosts: hs
            .iter()
            .map(|h| {
                (
                    h.to_string(),
                    HostEntry {
                        group: if *h == "h1" { "canary" } else { "rest" }.into(),
                        from: Some(forged.clone()),
                        to: signed.clone(),
                        phase: HostPhase::Done,
                        touched: Some(1),
                        detail: None,
                        checks: vec![],
                    },
                )
            })
            .collect(),
        steps: vec![],
        abort_reason: None,
        needs_human: vec![],
        analysis: vec![],
        segments: 0,
        damaged: vec![],
        who_source: None,
        source_ref: None,
        guard: None,
        overrides: vec![],
    };
    let key = applier::keys::deploy_journal("sig", &j.id);
    bed.store
        .put_cas(&key, &serde_json::to_vec(&j).unwrap(), None)
        .unwrap();
    let r = engine::rollback(&ctx, &NullSink, &DeployOptions::default());
    for h in hs {
        bed.assert_serves(h, A);
    }
    let e = r.expect_err("a rollback onto a release no policy was applied to must be refused");
    assert!(e.record().unwrap_or_default().contains(&j.id), "{e}");
}

/// Corrupts a store record in place (the directory store's file).
fn corrupt(bed: &Bed, key: &str, bytes: &[u8]) {
    let p = bed.dir().unwrap().join(key);
    let _ = std::fs::remove_file(&p);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(&p, bytes).unwrap();
}

fn bump_bed() -> (Bed, ReleaseRef, ReleaseRef) {
    let hs = ["h1", "h2", "h3"];
    let bed = Bed::new(&hs);
    let old = bed.artifact_with(A, "", Some(storage(1, json!({"title": "string"}))));
    let new = bed.artifact_with(
        B,
        "",
        Some(storage(2, json!({"title": "string", "body": "blob"}))),
    );
    (bed, old, new)
}

#[test]
fn the_guard_prints_the_exact_ack_and_records_every_ack_and_baseline() {
    let (bed, old, new) = bump_bed();
    let hs = ["h1", "h2", "h3"];
    let ctx = bed.ctx("acks", groups(&hs, 1));
    deploy(&ctx, &NullSink, &old);
    let to = new.manifest.to_string();
    let e = engine::deploy(&ctx, &NullSink, &to, &DeployOptions::default()).unwrap_err();
    let way = e.way_out().unwrap();
    assert!(way.contains("--ack 'SG002 pages 1->2 <reason>'"), "{way}");
    assert!(
        !way.contains("trailer"),
        "the applier reads no trailers: {way}"
    );
    // A malformed ack, or one without a reason, is a usage error before anything is read.
    for bad in [
        "SG002 pages",
        "SG002 pages 1->2",
        "SG002 pages 1->2 <reason>",
        "x\nSG002 pages 1->2 r",
    ] {
        let opts = DeployOptions {
            guard: applier::guard::GuardOptions {
                acks: vec![bad.into()],
                ..Default::default()
            },
            ..Default::default()
        };
        let e = engine::deploy(&ctx, &NullSink, &to, &opts).unwrap_err();
        assert_eq!(e.kind(), engine::ErrorKind::Usage, "{bad:?}: {e}");
    }
    let opts = DeployOptions {
        guard: applier::guard::GuardOptions {
            acks: vec!["SG002 pages 1->2 adds body, reviewed".into()],
            ..Default::default()
        },
        ..Default::default()
    };
    let o = engine::deploy(&ctx, &NullSink, &to, &opts).unwrap();
    assert_eq!(o.status, JournalStatus::Succeeded, "{}", o.message);
    let j = journal(&ctx, &o.deploy_id);
    assert_eq!(j.deploy_type, Some(applier::guard::DeployType::Schema));
    let details: Vec<String> = j
        .steps
        .iter()
        .filter(|s| s.step == records::Step::Override)
        .filter_map(|s| s.detail.clone())
        .collect();
    assert_eq!(details, ["--ack 'SG002 pages 1->2 adds body, reviewed'"]);
    assert!(j.steps.iter().any(|s| {
        s.step == records::Step::StorageGuard
            && s.detail
                .as_deref()
                .unwrap()
                .starts_with("schema deploy; compared with")
    }));
}

#[test]
fn schema_baseline_is_the_way_past_an_unreadable_current_manifest_and_is_recorded() {
    let (bed, old, new) = bump_bed();
    let hs = ["h1", "h2", "h3"];
    let ctx = bed.ctx("base", groups(&hs, 1));
    deploy(&ctx, &NullSink, &old);
    corrupt(&bed, &artifact::keys::blob(&old.manifest), b"garbage");
    let to = new.manifest.to_string();
    // With an explicit baseline the guard compares with it: the bump is seen (not a `code`
    // deploy) and still needs its ack.
    let base = |acks: Vec<String>| DeployOptions {
        schema_baseline: Some(new.manifest.to_string()),
        guard: applier::guard::GuardOptions {
            acks,
            ..Default::default()
        },
        ..Default::default()
    };
    let o = engine::deploy(&ctx, &NullSink, &to, &base(vec![])).unwrap();
    assert_eq!(o.status, JournalStatus::Succeeded, "{}", o.message);
    let j = journal(&ctx, &o.deploy_id);
    assert!(
        j.steps.iter().any(|s| s.step == records::Step::Override
            && s.detail
                .as_deref()
                .unwrap()
                .starts_with("--schema-baseline sha256:")),
        "{j:#?}"
    );
    // A baseline that cannot be verified is a refusal too.
    let bad = DeployOptions {
        schema_baseline: Some(old.manifest.to_string()),
        ..Default::default()
    };
    let e = engine::deploy(&ctx, &NullSink, &to, &bad).unwrap_err();
    assert!(e.record().unwrap().contains("--schema-baseline"), "{e}");
}

#[test]
fn an_unreadable_journal_is_skipped_by_history_rollback_and_the_promotion_gate() {
    let hs = ["h1", "h2"];
    let (bed, r) = bed(&hs);
    let staging = bed.ctx("staging", groups(&hs, 1));
    let prod = bed.ctx(
        "prod",
        with(
            groups(&hs, 1),
            json!({"promotion": {"requires": ["staging"]}}),
        ),
    );
    assert_eq!(
        deploy(&staging, &NullSink, &r[1]).status,
        JournalStatus::Succeeded
    );
    // A truncated journal, one with a path for a commit, one filed under another env.
    let d = applier::keys::deploys_prefix("staging");
    corrupt(
        &bed,
        &format!("{d}20250101T000000Z-000001.json"),
        b"{\"id\": \"2025",
    );
    let mut j = journal(
        &staging,
        &records::history(bed.store.as_ref(), "staging").unwrap()[0].id,
    );
    let mut v = serde_json::to_value(&j).unwrap();
    v["id"] = "20250101T000000Z-000002".into();
    v["hosts"]["h1"]["from"] = json!({"commit": "../../../etc", "manifest": r[0].manifest});
    corrupt(
        &bed,
        &format!("{d}20250101T000000Z-000002.json"),
        v.to_string().as_bytes(),
    );
    j.id = "20250101T000000Z-000003".into();
    j.env = "prod".into();
    corrupt(
        &bed,
        &format!("{d}{}.json", j.id),
        &serde_json::to_vec(&j).unwrap(),
    );
    let h = records::read_history(bed.store.as_ref(), "staging").unwrap();
    assert_eq!(h.journals.len(), 1);
    assert_eq!(h.unreadable.len(), 3, "{:?}", h.unreadable);
    // The promotion gate counts the one verifiable deploy and says what it did not count.
    let o = deploy(&prod, &NullSink, &r[1]);
    assert_eq!(o.status, JournalStatus::Succeeded, "{}", o.message);
    let pj = journal(&prod, &o.deploy_id);
    let note = pj
        .steps
        .iter()
        .find(|s| s.step == records::Step::PromotionCheck)
        .unwrap();
    assert!(
        note.detail.as_deref().unwrap().contains("3 unreadable"),
        "{note:?}"
    );
    // Rollback in staging: back to A, the corrupt journals reported in its journal.
    let o = engine::rollback(&staging, &NullSink, &DeployOptions::default()).unwrap();
    assert_eq!(o.status, JournalStatus::Succeeded, "{}", o.message);
    for h in hs {
        bed.assert_serves(h, A);
    }
    let rj = journal(&staging, &o.deploy_id);
    assert_eq!(
        rj.steps
            .iter()
            .filter(|s| s.step == records::Step::Skipped)
            .count(),
        3,
        "{rj:#?}"
    );
}

/// A host-reported restore target that is not signed is not switched to when the deploy
/// fails: the host is taken out of the pool instead, and the journal says why.
#[test]
fn an_unsigned_restore_target_is_never_switched_to() {
    let hs = ["h1", "h2"];
    let bed = Bed::new(&hs);
    let unsigned = bed.artifact(A, "");
    let bad = bed.artifact(C, BAD_LOG);
    let key = SecretKey::generate();
    sign_artifact(bed.store.as_ref(), &bad.manifest, &key).unwrap();
    for h in hs {
        bed.host(h).install(&unsigned);
    }
    let ctx = bed.ctx(
        "sigrb",
        with(
            groups(&hs, 1),
            json!({"require_signature": {"trusted_keys": [key.public().to_text().trim()]}}),
        ),
    );
    let o = deploy(&ctx, &NullSink, &bad);
    assert_eq!(o.status, JournalStatus::RolledBack, "{}", o.message);
    let (cur, running, pooled, _) = bed.on("h1");
    assert_eq!(
        (running, pooled),
        (None, false),
        "h1 must be left out, not restored"
    );
    assert_ne!(
        cur.as_deref(),
        Some(A),
        "switched back to the unsigned release"
    );
    let j = journal(&ctx, &o.deploy_id);
    assert!(
        j.steps.iter().any(|s| s.step == records::Step::Skipped
            && s.detail.as_deref().unwrap().contains("h1: restore target")),
        "{j:#?}"
    );
    bed.assert_serves("h2", A);
}

#[test]
fn a_host_record_pairing_a_digest_with_another_commit_is_not_rolled_back_to() {
    let hs = ["h1"];
    let bed = Bed::new(&hs);
    let a = bed.artifact(A, "");
    let b = bed.artifact(B, "");
    bed.host("h1").install(&a);
    bed.host("h1").install(&b);
    // The host's own journal claims its previous good is A's manifest under B's... commit D.
    bed.host("h1").edit_state(|st| {
        st.previous_good = Some(ReleaseRef {
            commit: model::names::CommitId::parse(D).unwrap(),
            manifest: a.manifest,
        })
    });
    let ctx = bed.ctx(
        "hostrec",
        json!({"groups": [{"name": "g", "hosts": ["h1"]}]}),
    );
    let e = engine::rollback(&ctx, &NullSink, &DeployOptions::default()).unwrap_err();
    assert!(e.record().unwrap().contains("state.json of host h1"), "{e}");
    assert!(e.to_string().contains("inconsistent"), "{e}");
    bed.assert_serves("h1", B);
}

#[test]
fn unlock_breaks_a_corrupt_lock_fences_out_its_holder_and_is_in_the_history() {
    let hs = ["h1", "h2"];
    let (bed, r) = bed(&hs);
    let ctx = bed.ctx("unl", groups(&hs, 1));
    assert_eq!(
        deploy(&ctx, &NullSink, &r[1]).status,
        JournalStatus::Succeeded
    );
    corrupt(
        &bed,
        &applier::keys::env_lock("unl"),
        b"\x00\x01 not a lease",
    );
    let e = engine::deploy(
        &ctx,
        &NullSink,
        &r[3].manifest.to_string(),
        &DeployOptions::default(),
    )
    .unwrap_err();
    assert!(
        e.way_out().unwrap().contains("applier unlock --env unl"),
        "{e}"
    );
    assert!(engine::unlock(&ctx, "  ").is_err(), "a reason is required");
    let u = engine::unlock(&ctx, "the lock file was truncated by a full disk").unwrap();
    assert!(
        u.removed.as_deref().unwrap().contains("unreadable"),
        "{u:?}"
    );
    let hist = records::history(bed.store.as_ref(), "unl").unwrap();
    let uj = hist
        .iter()
        .find(|j| j.kind == records::DeployKind::Unlock)
        .unwrap();
    assert_eq!(uj.reason, "the lock file was truncated by a full disk");
    // The next deploy's generation is past everything the hosts have seen.
    let seen = bed.host("h1").fences().into_iter().max().unwrap();
    assert!(u.generation > seen);
    assert_eq!(
        deploy(&ctx, &NullSink, &r[3]).status,
        JournalStatus::Succeeded
    );
    for h in hs {
        bed.assert_serves(h, D);
    }
    // Rollback still finds the last deploy (the unlock journal is not one).
    let o = engine::rollback(&ctx, &NullSink, &DeployOptions::default()).unwrap();
    assert_eq!(o.status, JournalStatus::Succeeded, "{}", o.message);
    bed.assert_serves("h1", B);
}

/// Real targets (directories): one host's `state.json` is corrupt. The deploy is refused at
/// preflight, before any host is depooled, fetched to or changed.
#[test]
fn a_corrupt_host_state_fails_preflight_before_any_host_is_depooled() {
    let hs = ["h1", "h2", "h3"];
    let (bed, r) = bed(&hs);
    let mut ctx = bed.ctx("local", groups(&hs, 1));
    let roots = tempfile::tempdir().unwrap();
    ctx.hosts = hs
        .iter()
        .map(|h| {
            let cfg: applier::config::HostConfig =
                serde_json::from_value(json!({"root": roots.path().join(h)})).unwrap();
            let host: Arc<dyn applier::host::Host> =
                Arc::new(applier::host::LocalHost::new(h, &cfg, bed.store.clone()));
            (h.to_string(), host)
        })
        .collect();
    // The release is already on every host (a fetch finds it cached and reads no state).
    let m = artifact::resolve::load_verified(bed.store.as_ref(), &r[1].manifest).unwrap();
    for h in hs {
        applier::target::HostRoot::new(roots.path().join(h))
            .fetch(bed.store.as_ref(), &r[1].manifest, &m, Default::default())
            .unwrap();
    }
    std::fs::write(roots.path().join("h2/state.json"), b"{\"current\": {\"comm").unwrap();
    let o = deploy(&ctx, &NullSink, &r[1]);
    assert_eq!(o.status, JournalStatus::Refused, "{}", o.message);
    assert!(o.message.contains("preflight h2"), "{}", o.message);
    assert!(o.message.contains("state.json"), "{}", o.message);
    assert_eq!(bed.pool.max_out_seen(), 0, "a host was depooled");
    for h in hs {
        assert!(
            !roots.path().join(h).join("current").exists(),
            "{h} was switched"
        );
    }
}
