//! Segmented journals: what is written reads back as one journal; torn and corrupt segments
//! are reported and what verifies is kept; single-file journals still read.

use std::sync::Arc;

use artifact::store::fs::FsStore;

use super::*;
use crate::protocol::ReleaseRef;
use crate::records::{DeployKind, HostPhase, Step};

fn store() -> (tempfile::TempDir, Arc<dyn Store>) {
    let d = tempfile::tempdir().unwrap();
    let s: Arc<dyn Store> = Arc::new(FsStore::open(d.path()).unwrap());
    (d, s)
}

fn release(c: char) -> ReleaseRef {
    ReleaseRef {
        commit: model::names::CommitId::parse(&c.to_string().repeat(40)).unwrap(),
        manifest: Digest::of(c.to_string().as_bytes()),
    }
}

fn journal(hosts: &[&str]) -> Journal {
    Journal {
        id: "20260101T000000Z-abcdef".into(),
        env: "seg".into(),
        kind: DeployKind::Deploy,
        artifact: None,
        commit: Some("b".repeat(40)),
        who: "t@h".into(),
        reason: String::new(),
        started_at: "2026-01-01T00:00:00.000Z".into(),
        finished_at: None,
        status: JournalStatus::Running,
        deploy_type: None,
        groups: vec![("all".into(), hosts.iter().map(|h| h.to_string()).collect())],
        hosts: hosts
            .iter()
            .map(|h| {
                let e = HostEntry {
                    group: "all".into(),
                    from: Some(release('a')),
                    to: release('b'),
                    phase: HostPhase::Pending,
                    touched: None,
                    detail: None,
                    checks: vec![],
                };
                (h.to_string(), e)
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
    }
}

/// Writes a base, then one segment per host (phase done and a step each); returns the
/// journal as the writer had it.
fn written(store: &Arc<dyn Store>, hosts: &[&str]) -> Journal {
    let mut j = journal(hosts);
    let mut w = JournalWriter::create(store.clone(), j.clone());
    w.write_base(&j).unwrap();
    for h in hosts {
        let from = j.steps.len();
        j.hosts.get_mut(*h).unwrap().phase = HostPhase::Done;
        j.step(Some(h), Step::Repool, true, None);
        let names = [h.to_string()];
        w.write_segment(&Delta::of(&j, from, &names)).unwrap();
    }
    j
}

fn seg_path(dir: &tempfile::TempDir, j: &Journal, seq: u64) -> std::path::PathBuf {
    dir.path().join(keys::journal_segment(&j.env, &j.id, seq))
}

#[test]
fn a_base_and_its_segments_read_back_as_one_journal() {
    let (_d, s) = store();
    let j = written(&s, &["h1", "h2", "h3"]);
    let got = load(s.as_ref(), &j.env, &j.id).unwrap();
    assert_eq!(got.journal, j);
    assert_eq!(got.last_seq, 3);
    // The base alone still says what the deploy started as.
    let (b, _) = s.get_bytes(&keys::deploy_journal(&j.env, &j.id)).unwrap();
    let base: Journal = serde_json::from_slice(&b).unwrap();
    assert!(base.steps.is_empty() && base.segments == 0);
}

#[test]
fn a_torn_last_segment_is_reported_and_the_rest_is_used() {
    let (d, s) = store();
    let j = written(&s, &["h1", "h2", "h3"]);
    let p = seg_path(&d, &j, 3);
    let bytes = std::fs::read(&p).unwrap();
    std::fs::write(&p, &bytes[..bytes.len() / 2]).unwrap();
    let got = crate::records::read_journal(s.as_ref(), &j.env, &j.id).unwrap();
    assert_eq!(got.steps.len(), 2, "{got:#?}");
    assert_eq!(got.hosts["h2"].phase, HostPhase::Done);
    assert_eq!(got.hosts["h3"].phase, HostPhase::Pending);
    assert_eq!(got.damaged.len(), 1, "{:?}", got.damaged);
    assert!(
        got.damaged[0].contains("0000000003.seg"),
        "{:?}",
        got.damaged
    );
    assert!(got.damaged[0].contains("torn"), "{:?}", got.damaged);
}

#[test]
fn a_corrupt_segment_stops_the_fold_there_and_says_what_was_left_out() {
    let (d, s) = store();
    let j = written(&s, &["h1", "h2", "h3"]);
    // Valid JSON, one phase changed: only the checksum tells.
    let p = seg_path(&d, &j, 2);
    let text = std::fs::read_to_string(&p).unwrap();
    std::fs::write(&p, text.replacen("\"done\"", "\"failed\"", 1)).unwrap();
    let got = crate::records::read_journal(s.as_ref(), &j.env, &j.id).unwrap();
    assert_eq!(got.hosts["h1"].phase, HostPhase::Done);
    assert_eq!(
        got.hosts["h2"].phase,
        HostPhase::Pending,
        "not the tampered value"
    );
    assert_eq!(
        got.hosts["h3"].phase,
        HostPhase::Pending,
        "nothing after it"
    );
    let d = &got.damaged[0];
    assert!(
        d.contains("checksum mismatch") && d.contains("1 later segments not applied"),
        "{d}"
    );
}

#[test]
fn a_segment_of_another_deploy_or_host_or_after_a_gap_does_not_verify() {
    let (d, s) = store();
    let j = written(&s, &["h1", "h2"]);
    // Segment 2 moved to 4: stored as 4, says 2.
    std::fs::rename(seg_path(&d, &j, 2), seg_path(&d, &j, 4)).unwrap();
    let got = crate::records::read_journal(s.as_ref(), &j.env, &j.id).unwrap();
    assert!(
        got.damaged[0].contains("stored as deploy"),
        "{:?}",
        got.damaged
    );
    std::fs::remove_file(seg_path(&d, &j, 4)).unwrap();

    // A segment that skips steps (one before it lost) or names a stranger.
    let mut w = JournalWriter::open(s.clone(), &j.env, &j.id).unwrap();
    w.write_base(&w.journal.clone()).unwrap();
    let mut gap = Delta::of(&j, 0, &[]);
    gap.steps_from = 5;
    w.write_segment(&gap).unwrap();
    let got = crate::records::read_journal(s.as_ref(), &j.env, &j.id).unwrap();
    assert!(got.damaged[0].contains("missing"), "{:?}", got.damaged);
    let mut jj = journal(&["h1", "zz"]);
    jj.id = j.id.clone();
    let (_d2, s2) = store();
    let mut w = JournalWriter::create(s2.clone(), journal(&["h1"]));
    w.write_base(&w.journal.clone()).unwrap();
    w.write_segment(&Delta::of(&jj, 0, &["zz".to_string()]))
        .unwrap();
    let got = crate::records::read_journal(s2.as_ref(), &j.env, &j.id).unwrap();
    assert!(
        got.damaged[0].contains("names host zz"),
        "{:?}",
        got.damaged
    );
}

#[test]
fn compaction_folds_everything_into_the_base_and_removes_the_segments() {
    let (_d, s) = store();
    let mut j = written(&s, &["h1", "h2"]);
    let mut w = JournalWriter::open(s.clone(), &j.env, &j.id).unwrap();
    assert!(w.needs_base(), "a reopened journal is rebased first");
    j.status = JournalStatus::Succeeded;
    assert_eq!(w.compact(&j).unwrap(), 0);
    assert!(
        s.list(&keys::journal_segments(&j.env, &j.id))
            .unwrap()
            .is_empty()
    );
    let got = crate::records::read_journal(s.as_ref(), &j.env, &j.id).unwrap();
    assert_eq!(got.status, JournalStatus::Succeeded);
    assert_eq!(got.steps, j.steps);
    assert_eq!(got.segments, 2);
}

#[test]
fn segments_the_base_already_holds_are_not_applied_again() {
    let (_d, s) = store();
    let j = written(&s, &["h1", "h2"]);
    // A crash between the compacted base and the segments' deletion: a finished base is read
    // alone; a running one (a resume's rebase) skips what it holds.
    let mut w = JournalWriter::open(s.clone(), &j.env, &j.id).unwrap();
    let mut rebased = w.journal.clone();
    rebased.hosts.get_mut("h1").unwrap().phase = HostPhase::InProgress;
    w.write_base(&rebased).unwrap();
    let got = crate::records::read_journal(s.as_ref(), &j.env, &j.id).unwrap();
    assert_eq!(got.hosts["h1"].phase, HostPhase::InProgress, "{got:#?}");
    assert!(got.damaged.is_empty());
    let mut done = rebased.clone();
    done.status = JournalStatus::Succeeded;
    w.write_base(&done).unwrap();
    let got = crate::records::read_journal(s.as_ref(), &j.env, &j.id).unwrap();
    assert_eq!(got.status, JournalStatus::Succeeded);
}

#[test]
fn a_single_file_journal_from_before_segments_still_reads_and_reopens() {
    let (_d, s) = store();
    let j = journal(&["h1"]);
    // As the applier wrote it before segments: pretty, no `segments`, old step spellings.
    let mut v = serde_json::to_value(&j).unwrap();
    v.as_object_mut().unwrap().remove("segments");
    v["steps"] = serde_json::json!([
        {"at": "2026-01-01T00:00:01.000Z", "host": "h1", "step": "mark-good", "ok": true, "detail": null}
    ]);
    let key = keys::deploy_journal(&j.env, &j.id);
    s.put_cas(&key, &serde_json::to_vec_pretty(&v).unwrap(), None)
        .unwrap();
    let all = crate::records::history(s.as_ref(), &j.env).unwrap();
    assert_eq!(all.len(), 1);
    assert_eq!(all[0].steps[0].step, Step::MarkGood);
    assert!(all[0].damaged.is_empty());
    // Resumable: the writer rebases it, then appends segments.
    let mut w = JournalWriter::open(s.clone(), &j.env, &j.id).unwrap();
    let mut k = w.journal.clone();
    w.write_base(&k).unwrap();
    k.step(None, Step::Resume, true, None);
    w.write_segment(&Delta::of(&k, 1, &[])).unwrap();
    let got = crate::records::read_journal(s.as_ref(), &j.env, &j.id).unwrap();
    assert_eq!(got.steps.len(), 2);
}
