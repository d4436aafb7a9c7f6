//! Tests of the inventory's types: defaults, parsing and what is refused.

use super::*;

const FILE: &str = r#"
store: /srv/a
envs:
  staging:
    group_size: 2
    groups:
      - {name: canary, hosts: [a]}
      - {name: rest, hosts: [b, c, d]}
    capacity: {max_out_percent: 50}
    hosts:
      a: {root: /r/a, port: 1}
      b: {root: /r/b}
      c: {root: /r/c}
      d: {root: /r/d}
"#;

fn file() -> (tempfile::TempDir, PathBuf) {
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("deploy.yaml");
    std::fs::write(&p, FILE).unwrap();
    (d, p)
}

#[test]
fn precedence_and_origins() {
    let (_d, p) = file();
    let layers = Layers {
        files: vec![p.clone()],
        env: vec![
            ("APPLIER_STORE".into(), "/srv/env".into()),
            ("APPLIER__ENVS__STAGING__FAILURE_LIMIT".into(), "1".into()),
            ("HOME".into(), "/x".into()),
        ],
        store_flag: Some("/srv/flag".into()),
        sets: vec!["envs.staging.canary_bake=5s".into()],
    };
    let r = layers.resolve().unwrap();
    assert_eq!(r.config.store, "/srv/flag");
    assert_eq!(r.origin("store"), Source::Flag("--store".into()));
    let env = r.env("staging").unwrap();
    assert_eq!(env.failure_limit, 1);
    assert_eq!(
        r.origin("envs.staging.failure_limit"),
        Source::Env("APPLIER__ENVS__STAGING__FAILURE_LIMIT".into())
    );
    assert_eq!(env.canary_bake, Dur(Duration::from_secs(5)));
    assert_eq!(r.origin("envs.staging.hosts.a.port"), Source::File(p));
    assert_eq!(r.origin("lease_ttl"), Source::Default);
    let shown = r.show();
    assert!(
        shown.contains("store = \"/srv/flag\"  # flag --store"),
        "{shown}"
    );
    assert!(
        shown.contains("envs.staging.keep_releases = 3  # default"),
        "{shown}"
    );
    // Without the flag, the env var wins over the file.
    let r = Layers {
        store_flag: None,
        ..layers
    }
    .resolve()
    .unwrap();
    assert_eq!(r.config.store, "/srv/env");
}

#[test]
fn batches_and_capacity() {
    let (_d, p) = file();
    let r = Layers {
        files: vec![p],
        ..Default::default()
    }
    .resolve()
    .unwrap();
    let env = r.env("staging").unwrap();
    let b = env.batches();
    assert_eq!(b.len(), 3);
    assert_eq!(b[0], ("canary".to_string(), vec!["a".to_string()]));
    assert_eq!(b[1].1, vec!["b".to_string(), "c".to_string()]);
    assert_eq!(b[2], ("rest#2".to_string(), vec!["d".to_string()]));
    assert_eq!(env.max_out(), 2);
    assert!(matches!(r.env("prod"), Err(ConfigError::UnknownEnv { .. })));
}

#[test]
fn invalid_inventory_is_refused() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("deploy.yaml");
    std::fs::write(
        &p,
        "envs:\n  x:\n    groups: [{name: g, hosts: [nope]}]\n    hosts: {}\n",
    )
    .unwrap();
    let e = Layers {
        files: vec![p.clone()],
        ..Default::default()
    }
    .resolve()
    .unwrap_err();
    assert!(e.to_string().contains("nope"), "{e}");
    std::fs::write(&p, "bogus_key: 1\n").unwrap();
    assert!(
        Layers {
            files: vec![p],
            ..Default::default()
        }
        .resolve()
        .is_err()
    );
}

#[test]
fn promotion_requires_must_name_other_envs() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("deploy.yaml");
    let env = |promotion: &str| {
        format!(
            "envs:\n  prod:\n    promotion: {promotion}\n    groups: [{{name: g, hosts: [a]}}]\n    hosts: {{a: {{root: /r}}}}\n"
        )
    };
    let resolve = |text: String| {
        std::fs::write(&p, text).unwrap();
        Layers {
            files: vec![p.clone()],
            ..Default::default()
        }
        .resolve()
    };
    let r = resolve(env("{requires: [staging]}")).unwrap();
    assert_eq!(
        r.env("prod").unwrap().promotion.as_ref().unwrap().requires,
        ["staging"]
    );
    let e = resolve(env("{requires: [prod]}")).unwrap_err();
    assert!(e.to_string().contains("itself"), "{e}");
    let e = resolve(env("{requires: []}")).unwrap_err();
    assert!(e.to_string().contains("empty"), "{e}");
}

#[test]
fn example_inventories_parse() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures/inventory");
    for name in ["local.yaml", "staging.yaml"] {
        let r = Layers {
            files: vec![dir.join(name)],
            ..Default::default()
        }
        .resolve();
        assert!(r.is_ok(), "{name}: {:?}", r.err());
    }
}

#[test]
fn set_value_path_indexes_lists() {
    let mut v: Value = serde_json::json!({"services": [{"conf": {"port": 1}}]});
    set_value_path(&mut v, "services.0.conf.port", 8080.into()).unwrap();
    set_value_path(&mut v, "services.0.conf.storage.path", "/x".into()).unwrap();
    assert_eq!(
        v,
        serde_json::json!({"services": [{"conf": {"port": 8080, "storage": {"path": "/x"}}}]})
    );
    assert!(set_value_path(&mut v, "services.0.conf.port.x", 1.into()).is_err());
}
