//! The journal in segments, through the engine: a crash between segments then resume, a torn
//! last segment, what a deploy writes as the fleet grows, and the env state at most once per
//! batch.

use super::*;
use applier::keys;
use applier::records::Step;

const HS: [&str; 3] = ["h1", "h2", "h3"];

fn segment_keys(bed: &Bed, id: &str) -> Vec<String> {
    bed.store
        .list(&keys::journal_segments("crash", id))
        .unwrap()
        .into_iter()
        .map(|m| m.key)
        .collect()
}

#[test]
fn a_crash_between_segments_keeps_every_phase_and_resume_compacts_the_journal() {
    let (bed, id, _) = crash("h2", "start");
    // What the dead applier left: the base (still `running`) and its segments.
    assert!(!segment_keys(&bed, &id).is_empty());
    let (b, _) = bed
        .store
        .get_bytes(&keys::deploy_journal("crash", &id))
        .unwrap();
    let base: Journal = serde_json::from_slice(&b).unwrap();
    assert_eq!(base.status, JournalStatus::Running);
    assert!(
        base.hosts.values().all(|e| e.touched.is_none()),
        "{base:#?}"
    );
    // Read as one journal: h1 done, h2 in progress (touched second), h3 not touched.
    let j = records::read_journal(bed.store.as_ref(), "crash", &id).unwrap();
    assert!(j.damaged.is_empty(), "{:?}", j.damaged);
    assert_eq!(j.hosts["h1"].phase, HostPhase::Done);
    assert_eq!(
        (j.hosts["h2"].phase, j.hosts["h2"].touched),
        (HostPhase::InProgress, Some(2))
    );
    assert_eq!(j.hosts["h3"].touched, None);

    let ctx = bed.ctx("crash", groups(&HS, 1));
    let o = engine::resume(&ctx, &NullSink, &id, false, true).unwrap();
    assert_eq!(o.status, JournalStatus::Succeeded, "{}", o.message);
    assert!(segment_keys(&bed, &id).is_empty(), "compacted");
    let j = records::read_journal(bed.store.as_ref(), "crash", &id).unwrap();
    assert_eq!(j.status, JournalStatus::Succeeded);
    assert!(j.hosts.values().all(|e| e.phase == HostPhase::Done));
    // Folding the segments in again repeated nothing.
    let repools = |h: &str| {
        j.steps
            .iter()
            .filter(|s| s.host.as_deref() == Some(h) && s.step == Step::Repool)
            .count()
    };
    assert_eq!((repools("h1"), repools("h2"), repools("h3")), (1, 1, 1));
}

#[test]
fn a_torn_last_segment_is_reported_and_resume_goes_on_from_what_verifies() {
    let (bed, id, _) = crash("h2", "render");
    let last = segment_keys(&bed, &id).pop().expect("a segment");
    let path = bed.dir().unwrap().join(&last);
    let bytes = std::fs::read(&path).unwrap();
    std::fs::write(&path, &bytes[..bytes.len() - 10]).unwrap();
    let all = records::history(bed.store.as_ref(), "crash").unwrap();
    assert_eq!(all[0].damaged.len(), 1, "{:?}", all[0].damaged);
    assert!(all[0].damaged[0].contains(&last), "{:?}", all[0].damaged);

    let ctx = bed.ctx("crash", groups(&HS, 1));
    let o = engine::resume(&ctx, &NullSink, &id, false, true).unwrap();
    assert_eq!(o.status, JournalStatus::Succeeded, "{}", o.message);
    for h in HS {
        bed.assert_serves(h, B);
    }
    let j = journal(&ctx, &id);
    assert!(j.hosts.values().all(|e| e.phase == HostPhase::Done));
    assert!(j.damaged[0].contains(&last), "the record keeps the report");
}

/// Deploys B over A to `n` hosts in batches of 4; returns the store's counts and the journal.
/// Every host is recorded on B in the env state.
fn counted_deploy(n: usize) -> (tap::Counts, Journal) {
    let names: Vec<String> = (1..=n).map(|i| format!("h{i:03}")).collect();
    let hs: Vec<&str> = names.iter().map(String::as_str).collect();
    let (bed, r) = bed(&hs);
    let store = TapStore::new(bed.store.clone());
    let ctx = bed.ctx_on(store.clone(), "grow", groups(&hs, 4));
    let o = deploy(&ctx, &NullSink, &r[1]);
    assert_eq!(o.status, JournalStatus::Succeeded, "{}", o.message);
    let counts = store.counts();
    let (st, _) = records::load_state(bed.store.as_ref(), "grow").unwrap();
    assert_eq!(st.hosts.len(), n);
    assert!(
        st.hosts.values().all(
            |h| h.current.as_ref() == Some(&r[1]) && h.deploy_id.as_ref() == Some(&o.deploy_id)
        ),
        "{st:#?}"
    );
    (counts, journal(&ctx, &o.deploy_id))
}

#[test]
fn what_a_deploy_writes_grows_linearly_and_the_env_state_is_written_at_most_once_per_batch() {
    let (small, js) = counted_deploy(8);
    let (large, jl) = counted_deploy(48);
    let per_step = |c: &tap::Counts, j: &Journal| {
        (c.bytes_in("envs/deploys") + c.bytes_in("envs/segments")) as f64 / j.steps.len() as f64
    };
    let (a, b) = (per_step(&small, &js), per_step(&large, &jl));
    // Rewriting the whole journal on every write made this grow with the fleet (6x here).
    assert!(
        b < 1.5 * a,
        "journal bytes per step: {a:.0} at 8 hosts, {b:.0} at 48"
    );
    let writes_per_host = |c: &tap::Counts, n: f64| c.requests_in("envs/segments") as f64 / n;
    let (a, b) = (writes_per_host(&small, 8.0), writes_per_host(&large, 48.0));
    assert!(
        b <= 1.5 * a,
        "segment writes per host: {a:.1} at 8, {b:.1} at 48"
    );
    // The env state: one write per batch at most (writes queued while one is under way go
    // together), not one per host; every host recorded all the same (checked above).
    for (c, j) in [(&small, &js), (&large, &jl)] {
        let writes = c.requests["put_cas envs/state.json"];
        assert!(
            (1..=j.groups.len() as u64).contains(&writes),
            "{writes} env state writes for {} batches: {c:?}",
            j.groups.len()
        );
    }
}
