//! Tests of the rule engine as a whole: merging, acknowledgements, the schema delta.

use super::testutil::*;
use super::*;

/// A schema whose keys are `title` (hash) and the range keys given as (attribute, order).
fn keyed(ranges: &[(&str, Option<&str>)]) -> Value {
    let mut index = vec![serde_json::json!({"attribute": "title", "type": "hash"})];
    for (a, o) in ranges {
        let mut e = serde_json::json!({"attribute": a, "type": "range"});
        if let Some(o) = o {
            e["order"] = Value::from(*o);
        }
        index.push(e);
    }
    crate::manifest::normalise_schema(&serde_json::json!({
        "table": "t",
        "attributes": {"title": "string", "rev": "int", "tid": "timeuuid"},
        "index": index,
    }))
    .schema
}

#[test]
fn a_key_direction_is_part_of_the_key_and_a_move_is_not_applied() {
    // As both backends match index entries (attribute, type, order), wherever they stand.
    let base = keyed(&[("rev", Some("desc")), ("tid", Some("desc"))]);
    for head in [
        keyed(&[("rev", Some("asc")), ("tid", Some("desc"))]),
        keyed(&[("rev", None), ("tid", Some("desc"))]),
    ] {
        let d = schema_delta(&base, &head);
        assert!(d.key_index_changed && d.refused_even_with_bump(), "{d:?}");
        assert!(!d.range_reordered, "{d:?}");
    }
    let d = schema_delta(
        &base,
        &keyed(&[("tid", Some("desc")), ("rev", Some("desc"))]),
    );
    assert!(!d.key_index_changed && d.range_reordered, "{d:?}");
    assert!(d.silently_ignored() && !d.refused_even_with_bump(), "{d:?}");
}

#[test]
fn unchanged_case_is_clean() {
    let r = run("unchanged", Backend::Cassandra, true);
    assert!(r.findings.is_empty(), "{:?}", r.findings);
    assert!(!r.changes_schema());
    assert!(!r.is_blocking());
}

#[test]
fn findings_merge_across_domains() {
    let r = run("sg002-content-bump", Backend::Cassandra, false);
    let f = rule(&r, "SG002");
    assert_eq!(f.len(), 1, "{f:?}");
    assert!(f[0].domains.len() >= 2, "{:?}", f[0].domains);
    assert!(r.changes_schema());
    assert!(!r.rollback_safe());
}

#[test]
fn acks_are_exact_and_go_stale() {
    let base = load("sg002-content-bump");
    let ack = |to: &str, hash: Option<String>| Ack {
        rule: "SG002".into(),
        subject: "pages".into(),
        from: "2".into(),
        to: to.into(),
        reason: "planned".into(),
        source: crate::report::AckSource::Caller,
        content_hash: hash,
    };
    let opts = Options {
        acks: vec![ack("3", None)],
        ..Options::default()
    };
    let r = diff(&base.0, &base.1, &opts);
    assert!(!r.is_blocking(), "{:?}", r.findings);
    assert!(rule(&r, "SG002")[0].acknowledged.is_some());
    // Wrong target version: stale.
    let opts = Options {
        acks: vec![ack("4", None)],
        ..Options::default()
    };
    assert!(diff(&base.0, &base.1, &opts).is_blocking());
    // Content hash of an earlier edit: stale.
    let opts = Options {
        acks: vec![ack("3", Some("sha256:00".into()))],
        ..Options::default()
    };
    assert!(diff(&base.0, &base.1, &opts).is_blocking());
}

#[test]
fn non_acknowledgeable_rules_cannot_be_acked() {
    let (b, h) = load("sg001-no-bump");
    let acks = vec![Ack {
        rule: "SG001".into(),
        subject: "pages".into(),
        from: "2".into(),
        to: "2".into(),
        reason: "x".into(),
        source: crate::report::AckSource::Caller,
        content_hash: None,
    }];
    let r = diff(
        &b,
        &h,
        &Options {
            acks,
            ..Options::default()
        },
    );
    assert!(r.is_blocking());
    assert!(rule(&r, "SG001")[0].acknowledged.is_none());
}

fn load(case: &str) -> (StorageManifest, StorageManifest) {
    let l = |s: &str| {
        StorageManifest::from_json(
            &std::fs::read(case_dir(case).join(s).join("storage.json")).unwrap(),
        )
        .unwrap()
    };
    (l("base"), l("head"))
}
