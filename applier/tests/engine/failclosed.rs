//! Fail-closed cases: a gate that cannot read what it decides on refuses, a deployer that lost
//! its lease changes nothing more, and a record cannot make the engine switch to a release no
//! policy was applied to.

use std::sync::mpsc;

use applier::engine::lease;
use applier::records::{DeployKind, HostEntry};
use artifact::sign::{SecretKey, sign_artifact};
use schema_guard::StorageManifest;

use super::*;
use mem::PausableStore;

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

/// Host ops (other than the read-only `status`) recorded since call number `from`.
fn changes_since(bed: &Bed, from: usize) -> Vec<String> {
    bed.fleet.calls.lock().unwrap()[from..]
        .iter()
        .filter(|c| !c.ends_with(" status"))
        .cloned()
        .collect()
}

fn calls(bed: &Bed) -> usize {
    bed.fleet.calls.lock().unwrap().len()
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
        ._dir
        .path()
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
    assert_eq!(changes_since(&bed, n), Vec::<String>::new());
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
    bed.fleet.hook("h2", "stop", move || {
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
    let after = changes_since(&bed, n);
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
