//! Environments as operators run them, against the real fixture service on three local hosts
//! with artifacts built by the real builder: the ops layer on the host (a secret that never
//! leaves it), config-only and storage-touching config deploys and their rollbacks, tags and
//! branches, continuous deployment, the failure lock, promotion as staging did it, messages,
//! identity and notifications, freeze windows, and `applier diff`.

mod common;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex, OnceLock};

use common::{Env, HOSTS, build_variants, builder_bin, events};
use serde_json::Value;
use testkit::run_ok;

/// `deploy/env/test.yaml` variants: (name, text replaced, replacement).
const BASE: &str =
    "marker: test\n      domains:\n        - en.wikipedia.org\n        - localhost\n";
const VARIANTS: &[(&str, &str, &str)] = &[
    ("base", "marker: test", "marker: test"),
    ("cfg2", "marker: test", "marker: test-2"),
    ("cfg3", "marker: test", "marker: test-3"),
    (
        "domain",
        BASE,
        "marker: test\n      domains:\n        - en.wikipedia.org\n        - localhost\n        - de.wikipedia.org\n",
    ),
    (
        "domain_b",
        BASE,
        "marker: test-b\n      domains:\n        - en.wikipedia.org\n        - localhost\n        - de.wikipedia.org\n",
    ),
    (
        "group",
        "          - name: group.local\n",
        "          - name: group.extra\n            domains:\n              - extra.example.org\n          - name: group.local\n",
    ),
    ("crash", "crash_at_start: false", "crash_at_start: true"),
];

struct Fx {
    dir: PathBuf,
    store: PathBuf,
    builds: BTreeMap<String, (String, String)>,
}

impl Fx {
    fn commit(&self, v: &str) -> &str {
        &self.builds[v].0
    }
    fn digest(&self, v: &str) -> &str {
        &self.builds[v].1
    }
    fn repo(&self) -> PathBuf {
        self.dir.join("repo")
    }
    /// `builder build` of an already built variant with extra flags (`--tag`, `--branch`).
    fn builder(&self, v: &str, extra: &[&str]) -> std::process::Output {
        Command::new(builder_bin())
            .args(["build", "--repo"])
            .arg(self.repo())
            .args(["--rev", self.commit(v), "--store"])
            .arg(&self.store)
            .args(extra)
            .output()
            .unwrap()
    }
    fn record(&self, v: &str, extra: &[&str]) {
        let out = self.builder(v, extra);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

fn fx() -> Option<&'static Fx> {
    static F: OnceLock<Option<Fx>> = OnceLock::new();
    F.get_or_init(|| {
        common::fixture_tools_present().then(|| {
            let dir = tempfile::Builder::new()
                .prefix("applier-envs-")
                .tempdir_in(env!("CARGO_TARGET_TMPDIR"))
                .unwrap()
                .keep();
            let store = dir.join("store");
            let builds = build_variants(&dir, VARIANTS, |c| {
                c.arg("--store").arg(&store);
            });
            Fx { dir, store, builds }
        })
    })
    .as_ref()
}

macro_rules! fx {
    () => {
        match fx() {
            Some(f) => f,
            None => return,
        }
    };
}

fn env(fx: &Fx, name: &str, extra: &str) -> Env {
    Env::with_store(&fx.store, name, extra)
}

/// The journals of `name`, oldest first.
fn journals(env: &Env, name: &str) -> Vec<Value> {
    let (code, evs, err) = env.run(&["history", "--env", name]);
    assert_eq!(code, 0, "{err}\n{}", testkit::why(&evs));
    evs
}

fn last_journal(env: &Env) -> Value {
    journals(env, &env.name).pop().expect("a journal")
}

fn marker(env: &Env, h: &str) -> Option<String> {
    env.info(h)
        .and_then(|v| v["marker"].as_str().map(str::to_string))
}

fn pids(env: &Env) -> Vec<Option<i32>> {
    HOSTS.iter().map(|h| env.pid(h)).collect()
}

/// Every file under `dir`, as bytes.
fn all_files(dir: &Path, out: &mut Vec<(PathBuf, Vec<u8>)>) {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return;
    };
    for e in rd.flatten() {
        let p = e.path();
        let ft = e.file_type().unwrap();
        if ft.is_dir() {
            all_files(&p, out);
        } else if ft.is_file() {
            out.push((p.clone(), std::fs::read(&p).unwrap_or_default()));
        }
    }
}

fn contains(hay: &[u8], needle: &str) -> bool {
    hay.windows(needle.len()).any(|w| w == needle.as_bytes())
}

fn write_ops(env: &Env, h: &str, values: &str) {
    std::fs::create_dir_all(env.root(h)).unwrap();
    std::fs::write(env.root(h).join("ops.yaml"), format!("values:\n{values}")).unwrap();
}

/// The secret in a host's ops file reaches that host's rendered config, and appears in no
/// store object, no journal, nothing the applier printed and no service log; `applier diff`
/// shows it masked. An ops key the release owns, and a missing configured ops file, are
/// refused before any host is touched.
#[test]
fn an_ops_secret_reaches_the_rendered_config_and_never_leaves_the_host() {
    let fx = fx!();
    let env = env(fx, "ops", "    ops_file: ops.yaml\n");
    for h in HOSTS {
        write_ops(
            &env,
            h,
            &format!(
                "  /services/0/conf/secrets/api_key: s3cr3t-{h}-9f2c\n  services.0.conf.startup.exit_delay_ms: 500\n"
            ),
        );
    }
    let out = env
        .cmd(&["deploy", fx.digest("base"), "--env", "ops"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    env.assert_all_serve(&HOSTS, fx.commit("base"));
    let mut printed = out.stdout.clone();
    printed.extend(&out.stderr);
    for h in HOSTS {
        let cfg = env
            .root(h)
            .join("releases")
            .join(fx.commit("base"))
            .join("config.yaml");
        let text = std::fs::read_to_string(&cfg).unwrap();
        assert!(text.contains(&format!("s3cr3t-{h}-9f2c")), "{h}: {text}");
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(&cfg).unwrap().permissions().mode() & 0o777,
            0o600
        );
    }

    // applier diff renders on each host and masks what came from its ops file.
    let out = env
        .cmd(&["diff", fx.digest("cfg2"), "--env", "ops"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["deploy_type"], "config", "{report:#}");
    for c in report["config"].as_array().unwrap() {
        let d = c["diff"].as_str().unwrap();
        let line = |sign: char, text: &str| {
            d.lines()
                .any(|l| l.starts_with(sign) && l[1..].trim() == text)
        };
        assert!(
            line('-', "marker: test") && line('+', "marker: test-2"),
            "{d}"
        );
        assert!(
            c["ops_keys"]
                .as_array()
                .unwrap()
                .iter()
                .any(|k| k == "/services/0/conf/secrets/api_key")
        );
        assert!(
            c["rendered"]
                .as_str()
                .unwrap()
                .contains("exit_delay_ms: <masked>"),
            "{c:#}"
        );
    }
    printed.extend(&out.stdout);
    printed.extend(&out.stderr);

    // Nothing of the secrets outside the hosts' releases.
    let mut files = Vec::new();
    all_files(&fx.store, &mut files);
    for h in HOSTS {
        all_files(&env.root(h).join("logs"), &mut files);
        all_files(&env.root(h).join("run"), &mut files);
        files.push((
            env.root(h).join("state.json"),
            std::fs::read(env.root(h).join("state.json")).unwrap(),
        ));
    }
    assert!(files.len() > 10, "{}", files.len());
    for (p, b) in &files {
        assert!(!contains(b, "s3cr3t-"), "a secret in {}", p.display());
    }
    assert!(
        !contains(&printed, "s3cr3t-"),
        "the applier printed a secret"
    );
    assert!(
        contains(&printed, "<masked>"),
        "the diff shows the key masked"
    );

    // An ops key the release owns (marker is not declared ops_owned): refused, nothing touched.
    let before = pids(&env);
    write_ops(&env, "h2", "  /services/0/conf/marker: ops-wins\n");
    let (code, evs, err) = env.deploy(fx.digest("cfg2"));
    assert_eq!(code, 3, "{err}\n{}", testkit::why(&evs));
    let text = format!("{evs:?}{err}");
    assert!(
        text.contains("/services/0/conf/marker") && text.contains("ops_owned"),
        "{text}"
    );
    assert!(
        events(&evs, "step").is_empty(),
        "a host was touched: {}",
        testkit::why(&evs)
    );
    assert_eq!(pids(&env), before);
    // A configured ops file that is missing: refused too.
    std::fs::remove_file(env.root("h2").join("ops.yaml")).unwrap();
    let (code, evs, err) = env.deploy(fx.digest("cfg2"));
    assert_eq!(code, 3, "{err}");
    assert!(
        format!("{evs:?}").contains("does not exist"),
        "{}",
        testkit::why(&evs)
    );
    assert_eq!(pids(&env), before);
    env.assert_all_serve(&HOSTS, fx.commit("base"));
}

/// The `downloaded` bytes of each `fetch` event.
fn fetched_bytes(evs: &[Value]) -> Vec<u64> {
    events(evs, "fetch")
        .iter()
        .map(|e| {
            let d = e["detail"].as_str().unwrap();
            if d.contains("already on the host") {
                return 0;
            }
            d.split('(')
                .nth(1)
                .unwrap()
                .split_whitespace()
                .next()
                .unwrap()
                .parse()
                .unwrap()
        })
        .collect()
}

fn layer_size(fx: &Fx, v: &str, kind: artifact::manifest::LayerKind) -> u64 {
    let store = artifact::store::open(fx.store.to_str().unwrap(), &Default::default()).unwrap();
    let m =
        artifact::resolve::load_verified(store.as_ref(), &fx.digest(v).parse().unwrap()).unwrap();
    m.layer(kind).unwrap().size
}

/// A commit that changes only `deploy/` rolls through the same path on 3 hosts, moving only
/// its source layer (the dependency layer is already on every host); its rollback brings
/// back the earlier code and config together.
#[test]
fn a_config_only_deploy_moves_only_what_changed_and_rolls_back_with_its_code() {
    let fx = fx!();
    let env = env(fx, "cfgonly", "");
    let (code, evs, err) = env.deploy(fx.digest("base"));
    assert_eq!(code, 0, "{err}\n{}", testkit::why(&evs));
    let deps = layer_size(fx, "base", artifact::manifest::LayerKind::Deps);
    assert!(
        fetched_bytes(&evs).iter().all(|b| *b > deps),
        "the first fetch moves both layers"
    );

    let (code, evs, err) = env.deploy(fx.digest("cfg2"));
    assert_eq!(code, 0, "{err}\n{}", testkit::why(&evs));
    let src = layer_size(fx, "cfg2", artifact::manifest::LayerKind::Source);
    assert_eq!(
        fetched_bytes(&evs),
        vec![src; 3],
        "only the source layer moves"
    );
    assert_eq!(events(&evs, "plan")[0]["deploy_type"], "config");
    env.assert_all_serve(&HOSTS, fx.commit("cfg2"));
    for h in HOSTS {
        assert_eq!(marker(&env, h).as_deref(), Some("test-2"));
    }
    assert_eq!(last_journal(&env)["deploy_type"], "config");

    let (code, evs, err) = env.run(&["rollback", "--env", "cfgonly", "-m", "back"]);
    assert_eq!(code, 0, "{err}\n{}", testkit::why(&evs));
    env.assert_all_serve(&HOSTS, fx.commit("base"));
    for h in HOSTS {
        assert_eq!(
            marker(&env, h).as_deref(),
            Some("test"),
            "{h}: config back with the code"
        );
    }
}

/// A config change that adds a domain, or a storage group, is a schema deploy (the storage
/// guard's record says why, and that it is rollback-safe); its rollback is allowed and
/// restores code and config together.
#[test]
fn a_config_change_touching_storage_is_a_schema_deploy_that_rolls_back() {
    let fx = fx!();
    for (variant, rule) in [("domain", "SG021"), ("group", "SG022")] {
        let env = env(fx, &format!("sto-{variant}"), "");
        let (code, evs, err) = env.deploy(fx.digest("base"));
        assert_eq!(code, 0, "{err}\n{}", testkit::why(&evs));
        let (code, evs, err) = env.deploy(fx.digest(variant));
        assert_eq!(code, 0, "{variant}: {err}\n{}", testkit::why(&evs));
        assert_eq!(
            events(&evs, "plan")[0]["deploy_type"],
            "schema",
            "{variant}"
        );
        let j = last_journal(&env);
        assert_eq!(j["deploy_type"], "schema");
        assert_eq!(j["guard"]["rollback_safe"], true, "{:#}", j["guard"]);
        assert!(
            j["guard"]["changes"]
                .as_array()
                .unwrap()
                .iter()
                .any(|c| c["rule"] == rule),
            "{variant}: {:#}",
            j["guard"]
        );
        env.assert_all_serve(&HOSTS, fx.commit(variant));
        let (code, evs, err) = env.run(&["rollback", "--env", &env.name]);
        assert_eq!(code, 0, "{variant}: {err}\n{}", testkit::why(&evs));
        env.assert_all_serve(&HOSTS, fx.commit("base"));
    }
}

/// Tags and branches from the builder's records: a tag deploys (the journal records the ref
/// and its commit), a moved tag is refused by the builder and by a deploy that sees it in
/// git, an ambiguous or unknown name is refused with the candidates, a tag only git knows
/// resolves with `--repo`, and `rollback --to <tag>` goes back to it.
#[test]
fn tags_and_branches_resolve_from_builder_records_or_git() {
    let fx = fx!();
    let env = env(fx, "refs", "");
    fx.record("base", &["--tag", "v1.0.0"]);
    let (code, evs, err) = env.run(&["deploy", "v1.0.0", "--env", "refs", "-m", "first release"]);
    assert_eq!(code, 0, "{err}\n{}", testkit::why(&evs));
    env.assert_all_serve(&HOSTS, fx.commit("base"));
    let j = last_journal(&env);
    assert_eq!(j["source_ref"]["kind"], "tag");
    assert_eq!(j["source_ref"]["name"], "v1.0.0");
    assert_eq!(j["source_ref"]["commit"], fx.commit("base"));
    assert_eq!(j["commit"], fx.commit("base"));

    // A tag is write-once in the store.
    let out = fx.builder("cfg2", &["--tag", "v1.0.0"]);
    assert_eq!(out.status.code(), Some(64), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("refusing to move it"),
        "{out:?}"
    );

    // A name that is a tag and a branch on different commits.
    fx.record("base", &["--tag", "same"]);
    fx.record("cfg2", &["--branch", "same"]);
    let (code, _, err) = env.run(&["deploy", "same", "--env", "refs"]);
    assert_eq!(code, 3, "{err}");
    assert!(
        err.contains("ambiguous") && err.contains("tag:same") && err.contains("branch:same"),
        "{err}"
    );
    let (code, evs, err) = env.run(&["deploy", "branch:same", "--env", "refs"]);
    assert_eq!(code, 0, "{err}\n{}", testkit::why(&evs));
    env.assert_all_serve(&HOSTS, fx.commit("cfg2"));

    // Unknown: refused with similar names.
    let (code, _, err) = env.run(&["deploy", "v1.0.1", "--env", "refs"]);
    assert_eq!(code, 64, "{err}");
    assert!(
        err.contains("names nothing") && err.contains("tag:v1.0.0"),
        "{err}"
    );

    // Rollback to a tag.
    let (code, evs, err) = env.run(&["rollback", "--env", "refs", "--to", "v1.0.0"]);
    assert_eq!(code, 0, "{err}\n{}", testkit::why(&evs));
    env.assert_all_serve(&HOSTS, fx.commit("base"));
    let j = last_journal(&env);
    assert_eq!(
        (j["kind"].as_str(), j["source_ref"]["name"].as_str()),
        (Some("rollback"), Some("v1.0.0"))
    );

    // Through git: a tag the store never recorded, and a tag git has moved.
    let git = |args: &[&str]| run_ok(Command::new("git").arg("-C").arg(fx.repo()).args(args));
    git(&["tag", "-f", "v1.1.0", fx.commit("cfg3")]);
    let repo = fx.repo();
    let repo = repo.to_str().unwrap();
    let (code, evs, err) = env.run(&["deploy", "v1.1.0", "--env", "refs", "--repo", repo]);
    assert_eq!(code, 0, "{err}\n{}", testkit::why(&evs));
    env.assert_all_serve(&HOSTS, fx.commit("cfg3"));
    assert_eq!(last_journal(&env)["source_ref"]["via"], "git");
    git(&["tag", "-f", "v1.0.0", fx.commit("cfg2")]);
    let (code, _, err) = env.run(&["deploy", "v1.0.0", "--env", "refs", "--repo", repo]);
    git(&["tag", "-d", "v1.0.0"]);
    assert_eq!(code, 3, "{err}");
    assert!(err.contains("has moved"), "{err}");
    env.assert_all_serve(&HOSTS, fx.commit("cfg3"));
}

/// Beta follows the branch: `applier cd` deploys the newest built commit, reports the
/// superseded ones it skipped, and does nothing when the env is already there. A failed
/// deploy locks the env: cd is refused, a person deploys only with `--ignore-failure-lock`
/// (recorded), and `applier unlock` clears it.
#[test]
fn cd_deploys_the_newest_built_commit_and_a_failure_locks_it_until_unlock() {
    let fx = fx!();
    let env = env(
        fx,
        "beta-cd",
        "    schema_policy: acknowledge\n    cd: {branch: cd-main}\n",
    );
    fx.record("base", &["--branch", "cd-main"]);
    let (code, evs, err) = env.run(&["cd", "--env", "beta-cd"]);
    assert_eq!(code, 0, "{err}\n{}", testkit::why(&evs));
    env.assert_all_serve(&HOSTS, fx.commit("base"));
    let j = last_journal(&env);
    assert_eq!(j["source_ref"]["name"], "cd-main");
    assert_eq!(j["reason"], "continuous deployment of cd-main");

    // Two builds land before the next cd run: the older is skipped.
    fx.record("cfg2", &["--branch", "cd-main"]);
    fx.record("cfg3", &["--branch", "cd-main"]);
    let (code, evs, err) = env.run(&["cd", "--env", "beta-cd"]);
    assert_eq!(code, 0, "{err}\n{}", testkit::why(&evs));
    env.assert_all_serve(&HOSTS, fx.commit("cfg3"));
    let cd = events(&evs, "cd")[0];
    assert_eq!(
        cd["skipped"],
        serde_json::json!([fx.commit("cfg2")]),
        "{cd:#}"
    );
    assert_eq!(
        journals(&env, "beta-cd").len(),
        2,
        "cfg2 was never deployed"
    );
    // A late build of an older commit does not move the branch back; cd has nothing to do.
    let out = fx.builder("cfg2", &["--branch", "cd-main"]);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("left at newer"),
        "{out:?}"
    );
    let (code, evs, _) = env.run(&["cd", "--env", "beta-cd"]);
    assert_eq!(code, 0);
    assert_eq!(
        events(&evs, "cd")[0]["up_to_date"],
        true,
        "{}",
        testkit::why(&evs)
    );

    // A crashing commit: rolled back, and the env is locked.
    fx.record("crash", &["--branch", "cd-main"]);
    let (code, evs, err) = env.run(&["cd", "--env", "beta-cd"]);
    assert_eq!(code, 1, "{err}\n{}", testkit::why(&evs));
    env.assert_all_serve(&HOSTS, fx.commit("cfg3"));
    let before = pids(&env);
    let (code, _, err) = env.run(&["cd", "--env", "beta-cd"]);
    assert_eq!(code, 3, "{err}");
    assert!(
        err.contains("locked since deploy") && err.contains("applier unlock"),
        "{err}"
    );
    let (code, _, err) = env.deploy(fx.digest("cfg2"));
    assert_eq!(code, 3, "{err}");
    assert!(err.contains("--ignore-failure-lock"), "{err}");
    assert_eq!(pids(&env), before, "a refused deploy touched a host");
    let (code, _, err) = env.run(&[
        "deploy",
        fx.digest("cfg2"),
        "--env",
        "beta-cd",
        "--ignore-failure-lock",
        "checked the crash, cfg2 is fine",
    ]);
    assert_eq!(code, 0, "{err}");
    let j = last_journal(&env);
    assert_eq!(
        j["overrides"],
        serde_json::json!(["ignore-failure-lock: checked the crash, cfg2 is fine"])
    );
    assert!(
        j["steps"]
            .as_array()
            .unwrap()
            .iter()
            .any(|s| s["step"] == "failure_lock")
    );
    let (code, evs, err) = env.run(&["unlock", "--env", "beta-cd", "--reason", "crash understood"]);
    assert_eq!(code, 0, "{err}\n{}", testkit::why(&evs));
    assert_eq!(
        evs[0]["result"]["Cleared"]["status"],
        "rolled_back",
        "{}",
        testkit::why(&evs)
    );
    // Unlocked: cd goes again (and deploys the branch's newest, the crash, which fails again).
    fx.record("cfg3", &["--branch", "cd-fixed"]);
    let (code, evs, err) = env.run(&["cd", "--env", "beta-cd", "--branch", "cd-fixed"]);
    assert_eq!(code, 0, "{err}\n{}", testkit::why(&evs));
    env.assert_all_serve(&HOSTS, fx.commit("cfg3"));
}

/// `promote` repeats staging's deploy: its deploy type, storage diff and acknowledgements;
/// when production's storage diff differs (it drifted by a hotfix), it is refused naming the
/// difference.
#[test]
fn promote_reuses_what_staging_recorded_and_refuses_a_drifted_production() {
    let fx = fx!();
    let stg = env(fx, "pr-stg", "");
    let prd = env(
        fx,
        "pr-prd",
        "    promotion: {requires: [pr-stg]}\n    require_message: true\n",
    );
    let promote = [
        "promote", "--from", "pr-stg", "--to", "pr-prd", "-m", "promote",
    ];
    for (e, n) in [(&stg, "pr-stg"), (&prd, "pr-prd")] {
        let (code, evs, err) = e.run(&[
            "deploy",
            fx.digest("base"),
            "--env",
            n,
            "-m",
            "base",
            "--skip-promotion-check",
        ]);
        assert_eq!(code, 0, "{err}\n{}", testkit::why(&evs));
    }
    let (code, evs, err) = stg.deploy(fx.digest("domain"));
    assert_eq!(code, 0, "{err}\n{}", testkit::why(&evs));
    let stg_id = last_journal(&stg)["id"].as_str().unwrap().to_string();
    // Without a message: refused (production requires one).
    let (code, _, err) = prd.run(&promote[..5]);
    assert_eq!(code, 64, "{err}");
    assert!(err.contains("requires a deploy message"), "{err}");
    let (code, evs, err) = prd.run(&promote);
    assert_eq!(code, 0, "{err}\n{}", testkit::why(&evs));
    prd.assert_all_serve(&HOSTS, fx.commit("domain"));
    let j = last_journal(&prd);
    assert_eq!(j["deploy_type"], "schema");
    assert!(
        j["steps"]
            .as_array()
            .unwrap()
            .iter()
            .any(|s| s["step"] == "promotion_check"
                && s["detail"]
                    .as_str()
                    .unwrap()
                    .starts_with(&format!("as pr-stg deploy {stg_id}: deploy type schema"))),
        "{j:#}"
    );

    // Production drifted: a hotfix already added the domain there.
    let (code, _, err) = prd.run(&[
        "deploy",
        fx.digest("base"),
        "--env",
        "pr-prd",
        "-m",
        "undo",
        "--skip-promotion-check",
    ]);
    assert_eq!(code, 0, "{err}");
    let (code, _, err) = prd.run(&[
        "deploy",
        fx.digest("domain_b"),
        "--env",
        "pr-prd",
        "-m",
        "hotfix",
        "--skip-promotion-check",
    ]);
    assert_eq!(code, 0, "{err}");
    let before = pids(&prd);
    let (code, _, err) = prd.run(&promote);
    assert_eq!(code, 3, "{err}");
    assert!(
        err.contains("drifted") && err.contains(&format!("pr-stg deploy {stg_id} saw SG021")),
        "{err}"
    );
    assert_eq!(pids(&prd), before);
    prd.assert_all_serve(&HOSTS, fx.commit("domain_b"));
}

/// A tiny HTTP receiver: records each request body; answers 500 to the first `fail_first`
/// requests, 200 after; with `hang`, never answers.
fn receiver(fail_first: usize, hang: bool) -> (String, Arc<Mutex<Vec<Value>>>) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/hook", l.local_addr().unwrap());
    let got = Arc::new(Mutex::new(Vec::new()));
    let got2 = got.clone();
    std::thread::spawn(move || {
        let mut n = 0;
        for s in l.incoming() {
            let Ok(mut s) = s else { continue };
            if hang {
                std::thread::spawn(move || {
                    std::thread::sleep(std::time::Duration::from_secs(60));
                    drop(s);
                });
                continue;
            }
            let mut r = BufReader::new(s.try_clone().unwrap());
            let mut len = 0;
            let mut line = String::new();
            loop {
                line.clear();
                if r.read_line(&mut line).unwrap_or(0) == 0 || line.trim().is_empty() {
                    break;
                }
                if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                    len = v.trim().parse().unwrap_or(0);
                }
            }
            let mut body = vec![0; len];
            let _ = r.read_exact(&mut body);
            n += 1;
            let status = if n <= fail_first {
                "500 Oops"
            } else {
                "200 OK"
            };
            if n > fail_first {
                got2.lock()
                    .unwrap()
                    .push(serde_json::from_slice(&body).unwrap_or(Value::Null));
            }
            let _ = write!(
                s,
                "HTTP/1.1 {status}\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
            );
        }
    });
    (url, got)
}

/// `-m`, `--who`, and the notification sinks: a command gets the values as variables, a
/// webhook gets JSON (retried after a 500), a hanging webhook does not hold the deploy past
/// its bound; `history` shows who, why and how long.
#[test]
fn messages_identity_notifications_and_history() {
    let fx = fx!();
    let (url, got) = receiver(1, false);
    let (hang_url, _) = receiver(0, true);
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("notices");
    let extra = format!(
        "    require_message: true\n    notify:\n      - {{type: command, command: \"printf '%s %s %s|%s\\\\n' \\\"$APPLIER_EVENT\\\" \\\"$APPLIER_STATUS\\\" \\\"$APPLIER_WHO\\\" \\\"$APPLIER_MESSAGE\\\" >> {}\"}}\n      - {{type: webhook, url: '{url}', retries: 2}}\n      - {{type: webhook, url: '{hang_url}', timeout: 1s, retries: 1, events: [finish]}}\n",
        log.display()
    );
    let env = env(fx, "notify", &extra);
    let (code, _, err) = env.deploy(fx.digest("base"));
    assert_eq!(code, 64, "{err}");
    assert!(journals(&env, "notify").is_empty());
    let t0 = std::time::Instant::now();
    let (code, evs, err) = env.run(&[
        "deploy",
        fx.digest("base"),
        "--env",
        "notify",
        "-m",
        "ship it; $(rm -rf /) `id`",
        "--who",
        "alice",
    ]);
    assert_eq!(code, 0, "{err}\n{}", testkit::why(&evs));
    assert!(t0.elapsed() < std::time::Duration::from_secs(60));
    assert!(
        err.contains("warning: notification Finish to webhook") && err.contains(&hang_url),
        "{err}"
    );
    let lines = std::fs::read_to_string(&log).unwrap();
    assert_eq!(
        lines,
        "start  alice|ship it; $(rm -rf /) `id`\nfinish succeeded alice|ship it; $(rm -rf /) `id`\n",
        "{lines}"
    );
    let bodies = got.lock().unwrap().clone();
    assert_eq!(
        bodies.len(),
        2,
        "start (after one 500 and a retry) and finish: {bodies:#?}"
    );
    assert_eq!(bodies[0]["event"], "start");
    assert_eq!(bodies[1]["event"], "finish");
    assert_eq!(bodies[1]["status"], "succeeded");
    assert_eq!(bodies[1]["who"], "alice");
    assert_eq!(bodies[1]["commit"], fx.commit("base"));
    assert!(bodies[1]["duration_s"].as_f64().unwrap() > 0.0);
    let j = last_journal(&env);
    assert_eq!(
        (j["who"].as_str(), j["who_source"].as_str()),
        (Some("alice"), Some("--who"))
    );
    assert_eq!(j["reason"], "ship it; $(rm -rf /) `id`");
    assert!(j["duration_ms"].as_u64().unwrap() > 0, "{j:#}");
    // SUDO_USER is the person behind sudo.
    let out = env
        .cmd(&[
            "deploy",
            fx.digest("cfg2"),
            "--env",
            "notify",
            "-m",
            "again",
        ])
        .env("SUDO_USER", "bob")
        .output()
        .unwrap();
    assert!(out.status.success());
    let j = last_journal(&env);
    assert!(j["who"].as_str().unwrap().starts_with("bob@"), "{j:#}");
    assert_eq!(j["who_source"], "SUDO_USER");
    // Plain history: who, why, how long.
    let out = Command::new(env!("CARGO_BIN_EXE_applier"))
        .arg("--config")
        .arg(&env.config)
        .args(["history", "--env", "notify", "--format", "plain"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("alice")
            && text.contains("ship it")
            && text.contains("bob@")
            && text.contains('s'),
        "{text}"
    );
}

/// A freeze window refuses deploys (before anything is touched); `--override-freeze` with a
/// reason deploys and is recorded; rollbacks are not frozen.
#[test]
fn a_freeze_window_refuses_deploys_and_an_override_is_recorded() {
    let fx = fx!();
    let env = env(fx, "frozen", "");
    let (code, evs, err) = env.deploy(fx.digest("base"));
    assert_eq!(code, 0, "{err}\n{}", testkit::why(&evs));
    let (code, evs, err) = env.deploy(fx.digest("cfg2"));
    assert_eq!(code, 0, "{err}\n{}", testkit::why(&evs));
    let freeze = "envs.frozen.freeze=[{name: all-week, cron: '* * * * *', reason: release week}]";
    let before = pids(&env);
    let (code, evs, err) = env.run(&[
        "deploy",
        fx.digest("cfg3"),
        "--env",
        "frozen",
        "--set",
        freeze,
    ]);
    assert_eq!(code, 3, "{err}");
    assert!(
        err.contains("freeze window all-week (release week) is open"),
        "{err}"
    );
    assert!(events(&evs, "plan").is_empty());
    assert_eq!(pids(&env), before);
    let dates = "envs.frozen.freeze=[{from: '2000-01-01', until: '2999-01-01'}]";
    let (code, _, err) = env.run(&[
        "deploy",
        fx.digest("cfg3"),
        "--env",
        "frozen",
        "--set",
        dates,
        "--override-freeze",
        "security fix",
    ]);
    assert_eq!(code, 0, "{err}");
    env.assert_all_serve(&HOSTS, fx.commit("cfg3"));
    let j = last_journal(&env);
    assert_eq!(
        j["overrides"],
        serde_json::json!(["override-freeze: security fix"])
    );
    assert!(
        j["steps"]
            .as_array()
            .unwrap()
            .iter()
            .any(|s| s["step"] == "freeze")
    );
    let (code, evs, err) = env.run(&["rollback", "--env", "frozen", "--set", freeze]);
    assert_eq!(code, 0, "{err}\n{}", testkit::why(&evs));
    env.assert_all_serve(&HOSTS, fx.commit("cfg2"));
}
