//! The storage traps other than the schema bump, each committed on a branch of its own in the
//! shared RESTBase repository, built, and taken through the applier on three RESTBase hosts.

use super::*;

/// Commits `edits` (file, from, to; each must apply) on a branch of its own from `base` in the
/// shared repository, and builds it; returns the commit and the artifact id.
fn trap_build(
    rb: &Restbase,
    name: &str,
    base: &str,
    edits: &[(&str, &str, &str)],
) -> (String, String) {
    git(&rb.repo, &["checkout", "-q", "-B", name, base]);
    for (file, from, to) in edits {
        let path = rb.repo.join(file);
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.contains(from), "{name}: {file} has no {from:?}");
        std::fs::write(&path, text.replacen(from, to, 1)).unwrap();
    }
    git(&rb.repo, &["commit", "-q", "-am", name]);
    let commit = git(&rb.repo, &["rev-parse", "HEAD"]);
    let built = build(&rb.repo, &rb.store, &rb.npm_cache, &commit);
    (commit, built["id"].as_str().unwrap().to_string())
}

/// The storage traps other than the schema bump, each through the applier on three RESTBase
/// hosts: a key_value bucket changed in a module, a new domain, a new storage group, and a
/// bucket declared inline in the env config, then changed there.
#[test]
fn restbase_bucket_domain_group_and_env_config_bucket_traps_through_the_applier() {
    let rb = rb!();
    let _heavy = heavy();
    let env = "rb-traps";
    let hosts = Hosts::new(rb, env);
    let base = &rb.second;
    let (code, evs, err) = hosts.applier(&["deploy", base.1["id"].as_str().unwrap(), "--env", env]);
    assert_eq!(code, 0, "{err}\n{evs:#?}");

    // A key_value bucket changed in a module: refused (SG002) with the exact ack, nothing touched.
    let (_, id) = trap_build(
        rb,
        "trap-module-bucket",
        &base.0,
        &[(
            "sys/parsoid.js",
            "                body: {\n                    valueType: 'blob'\n                }",
            "                body: {\n                    valueType: 'json',\n                    version: 1\n                }",
        )],
    );
    refused(
        &hosts,
        &id,
        env,
        "--ack 'SG002 parsoidphp 5000->5001 <reason>'",
        &base.0,
    );

    // A new domain and a new storage group: not refused (a rollback leaves them unused), but a
    // schema deploy, never a plain one; the plan names the rule and changes nothing.
    let cases = [
        (
            "trap-domain",
            "SG021",
            "wiki.local",
            vec![
                (
                    "deploy/env/test.yaml",
                    "          /{domain:localhost}/{api:sys}:",
                    "          /{domain:localhost}/{api:sys}: &sys",
                ),
                (
                    "deploy/env/test.yaml",
                    "\ninfo:",
                    "\n          /{domain:wiki.local}/{api:sys}: *sys\ninfo:",
                ),
            ],
        ),
        (
            "trap-group",
            "SG022",
            "archive",
            vec![(
                "deploy/env/test.yaml",
                "                                  domains: /./",
                "                                  domains: /./\n                                - name: archive\n                                  domains: archive.local",
            )],
        ),
    ];
    for (name, rule, subject, edits) in cases {
        let (_, id) = trap_build(rb, name, &base.0, &edits);
        let (code, evs, err) = hosts.applier(&["plan", &id, "--env", env]);
        assert_eq!(code, 0, "{name}: {err}\n{evs:#?}");
        // `plan --format json` prints one object: the preview.
        let plan = &evs[0];
        assert_eq!(plan["deploy_type"], "schema", "{name}: {plan:#}");
        let guard = plan["storage_guard"].to_string();
        assert!(
            guard.contains(rule) && guard.contains(subject),
            "{name}: the plan does not name {rule} {subject}: {plan:#}"
        );
        hosts.assert_serving(&base.0);
    }

    // A key_value bucket declared inline in the env config: added, it is a new table (SG010, a
    // schema deploy that goes out); then changed there, it is refused like a module's (SG002).
    let (inline, id) = trap_build(
        rb,
        "trap-inline-bucket",
        &base.0,
        &[("deploy/env/test.yaml", SYS_PATHS, INLINE_BUCKET)],
    );
    let (code, evs, err) = hosts.applier(&["deploy", &id, "--env", env]);
    assert_eq!(code, 0, "{err}\n{evs:#?}");
    let plan = &events(&evs, "plan")[0].1;
    assert_eq!(plan["deploy_type"], "schema", "{plan:#}");
    hosts.assert_serving(&inline);
    let (_, id) = trap_build(
        rb,
        "trap-inline-bucket-change",
        &inline,
        &[(
            "deploy/env/test.yaml",
            "valueType: json\n                    /legacy",
            "valueType: blob\n                                version: 2\n                    /legacy",
        )],
    );
    refused(
        &hosts,
        &id,
        env,
        "--ack 'SG002 inline_kv 5000->5002 <reason>'",
        &inline,
    );
}

/// `applier deploy <id>` is refused (exit 3) with `ack`, the exact line to type; no host is
/// touched and every host still serves `serving`.
fn refused(hosts: &Hosts, id: &str, env: &str, ack: &str, serving: &str) {
    let (code, evs, err) = hosts.applier(&["deploy", id, "--env", env]);
    assert_eq!(code, 3, "{err}\n{evs:#?}");
    assert!(
        err.contains(ack),
        "the refusal does not name the bucket and its ack {ack}: {err}"
    );
    assert!(
        events(&evs, "host_done").is_empty(),
        "a host was touched: {evs:#?}"
    );
    hosts.assert_serving(serving);
}

/// Where RESTBase's env config lists the sys API's paths, and the same with a key_value bucket
/// declared inline before them (its setup handler creates it).
const SYS_PATHS: &str = "                    /legacy/key_value:";
const INLINE_BUCKET: &str = "                    /inline_kv:
                      get:
                        x-setup-handler:
                          - init_inline:
                              uri: /{domain}/sys/key_value/inline_kv
                              body:
                                valueType: json
                    /legacy/key_value:";
