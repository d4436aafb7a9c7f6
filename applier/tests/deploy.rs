//! Rolling deploys against the real fixture service on local hosts (directories under a
//! tempdir, each serving on its own loopback port), with artifacts built by the real builder.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};

use common::{Env, HOSTS, events, fixture, read_until};
use serde_json::Value;

macro_rules! fx {
    () => {
        match fixture() {
            Some(f) => f,
            None => return,
        }
    };
}

fn host_done_order(evs: &[Value]) -> Vec<String> {
    events(evs, "host_done")
        .iter()
        .map(|e| e["host"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn good_release_rolls_over_hosts_in_group_order_then_rolls_back_on_demand() {
    let fx = fx!();
    let env = Env::new(fx, "good", "");

    // Dry run: the plan, and nothing changes.
    let (code, evs, err) = env.run(&[
        "deploy",
        &fx.commit("good")[..10],
        "--env",
        "good",
        "--dry-run",
    ]);
    assert_eq!(code, 0, "{err}");
    let plan = &events(&evs, "plan")[0];
    assert_eq!(plan["groups"][0]["name"], "canary");
    assert_eq!(plan["groups"][0]["hosts"][0]["to"], fx.commit("good"));
    assert!(
        plan["groups"][0]["hosts"][0]["checks"]
            .as_array()
            .unwrap()
            .len()
            >= 2,
        "{plan}"
    );
    assert!(
        !env.root("h1").join("current").exists(),
        "dry run changed a host"
    );

    let (code, evs, err) = env.deploy(fx.digest("good"));
    assert_eq!(code, 0, "{err}\n{}", testkit::why(&evs));
    assert_eq!(host_done_order(&evs), ["h1", "h2", "h3"]);
    env.assert_all_serve(&HOSTS, fx.commit("good"));
    assert!(
        events(&evs, "check")
            .iter()
            .all(|c| c["result"]["passed"] == true)
    );

    // By commit prefix this time.
    let (code, evs, err) = env.deploy(&fx.commit("good2")[..12]);
    assert_eq!(code, 0, "{err}\n{}", testkit::why(&evs));
    env.assert_all_serve(&HOSTS, fx.commit("good2"));

    let (code, evs, err) = env.run(&["status", "--env", "good"]);
    assert_eq!(code, 0, "{err}\n{}", testkit::why(&evs));
    let hosts = evs[0].as_array().unwrap();
    assert!(
        hosts.iter().all(
            |h| h["current"] == fx.commit("good2") && h["drift"].as_array().unwrap().is_empty()
        )
    );

    let (code, evs, err) = env.run(&["rollback", "--env", "good"]);
    assert_eq!(code, 0, "{err}\n{}", testkit::why(&evs));
    env.assert_all_serve(&HOSTS, fx.commit("good"));

    let (code, evs, _) = env.run(&["history", "--env", "good"]);
    assert_eq!(code, 0);
    let kinds: Vec<(String, String)> = evs
        .iter()
        .map(|j| {
            (
                j["kind"].as_str().unwrap().into(),
                j["status"].as_str().unwrap().into(),
            )
        })
        .collect();
    assert_eq!(
        kinds,
        [
            ("deploy".into(), "succeeded".into()),
            ("deploy".into(), "succeeded".into()),
            ("rollback".into(), "succeeded".into())
        ]
    );
    // good -> good2 changes only deploy/env/test.yaml: recorded as a config deploy; the first
    // deploy onto empty hosts has nothing to compare and is a code deploy.
    assert_eq!(evs[0]["deploy_type"], "code", "{:#?}", evs[0]);
    assert_eq!(evs[1]["deploy_type"], "config", "{:#?}", evs[1]);
}

/// A release that fails on the canary is rolled back there; other hosts are never touched.
fn canary_failure(variant: &str, env_name: &str) {
    let fx = fx!();
    let env = Env::new(fx, env_name, "");
    let (code, evs, err) = env.deploy(fx.digest("good"));
    assert_eq!(code, 0, "{err}\n{}", testkit::why(&evs));
    let pids: Vec<_> = ["h2", "h3"].iter().map(|h| env.pid(h).unwrap()).collect();

    let (code, evs, err) = env.deploy(fx.digest(variant));
    assert_eq!(code, 1, "{variant}: {err}\n{}", testkit::why(&evs));
    assert_eq!(host_done_order(&evs), ["h1"], "only the canary is touched");
    let rb = events(&evs, "rollback");
    assert_eq!(rb.len(), 1);
    assert_eq!(rb[0]["host"], "h1");
    assert_eq!(rb[0]["ok"], true);
    env.assert_all_serve(&HOSTS, fx.commit("good"));
    let after: Vec<_> = ["h2", "h3"].iter().map(|h| env.pid(h).unwrap()).collect();
    assert_eq!(pids, after, "h2/h3 were restarted");
    for h in ["h2", "h3"] {
        let st = applier::target::HostRoot::new(env.root(h)).state().unwrap();
        assert_eq!(st.last_good.unwrap().commit, fx.commit("good"));
    }
    let fin = &events(&evs, "finished")[0];
    assert_eq!(fin["status"], "rolled_back");
}

#[test]
fn canary_serving_5xx_is_rolled_back() {
    canary_failure("bad_5xx", "c5xx");
}

#[test]
fn canary_logging_storage_errors_is_rolled_back() {
    canary_failure("bad_logs", "clogs");
}

#[test]
fn canary_crashing_at_start_is_rolled_back() {
    canary_failure("bad_crash", "ccrash");
}

#[test]
fn canary_never_binding_is_rolled_back() {
    canary_failure("bad_bind", "cbind");
}

/// A tiny Prometheus stand-in: answers `/api/v1/query` with a ratio of 0.5 for a query that
/// names an instance in the returned list (each entry used once), 0 otherwise.
fn fake_prometheus() -> (String, Arc<Mutex<Vec<String>>>) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", l.local_addr().unwrap());
    let bad = Arc::new(Mutex::new(Vec::<String>::new()));
    let bad2 = bad.clone();
    std::thread::spawn(move || {
        for s in l.incoming() {
            let Ok(mut s) = s else { continue };
            let mut r = BufReader::new(s.try_clone().unwrap());
            let mut line = String::new();
            let _ = r.read_line(&mut line);
            loop {
                let mut h = String::new();
                if r.read_line(&mut h).unwrap_or(0) == 0 || h.trim().is_empty() {
                    break;
                }
            }
            let target = line.split_whitespace().nth(1).unwrap_or("");
            let q = decode(target.split_once("query=").map(|x| x.1).unwrap_or(""));
            let mut bad = bad2.lock().unwrap();
            let v = match bad.iter().position(|i| q.contains(i.as_str())) {
                Some(i) => {
                    bad.remove(i);
                    "0.5"
                }
                None => "0",
            };
            let body = format!(
                r#"{{"status":"success","data":{{"resultType":"vector","result":[{{"metric":{{}},"value":[1,"{v}"]}}]}}}}"#
            );
            let _ = write!(
                s,
                "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    (url, bad)
}

/// Percent-decoding of a query-string value.
fn decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%'
            && i + 2 < b.len()
            && let Ok(v) =
                u8::from_str_radix(std::str::from_utf8(&b[i + 1..i + 3]).unwrap_or("zz"), 16)
        {
            out.push(v);
            i += 3;
            continue;
        }
        out.push(if b[i] == b'+' { b' ' } else { b[i] });
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[test]
fn later_group_failure_restores_every_touched_host_to_its_own_release() {
    let fx = fx!();
    let (prom, bad) = fake_prometheus();
    let extra = format!(
        "    checks:\n      prometheus: {prom}\n      disable: ['metrics fixture_http_requests_total']\n      extra:\n        - {{type: metrics, source: prometheus, query: 'ratio{{instance=\"{{instance}}\"}}', window: 1s, threshold: 0.1}}\n"
    );
    let env = Env::new(fx, "late", &extra);
    let (code, evs, err) = env.deploy(fx.digest("good"));
    assert_eq!(code, 0, "{err}\n{}", testkit::why(&evs));
    // h3 alone moves to good2: the hosts are on different releases before the deploy.
    let (code, evs, err) = env.run(&["deploy", fx.digest("good2"), "--env", "late-solo"]);
    assert_eq!(code, 0, "{err}\n{}", testkit::why(&evs));
    assert_eq!(env.release("h3").as_deref(), Some(fx.commit("good2")));
    env.assert_all_serve(&["h1", "h2"], fx.commit("good"));

    // The new release passes on h1 and h2; h3 reports a 5xx ratio over the threshold once.
    bad.lock()
        .unwrap()
        .push(format!("127.0.0.1:{}", env.ports["h3"]));
    let (code, evs, err) = env.deploy(fx.digest("good3"));
    assert_eq!(code, 1, "{err}\n{}", testkit::why(&evs));
    assert_eq!(host_done_order(&evs), ["h1", "h2", "h3"]);
    let failed: Vec<&Value> = events(&evs, "check")
        .into_iter()
        .filter(|c| c["result"]["passed"] == false)
        .collect();
    assert_eq!(failed.len(), 1, "{failed:#?}");
    assert_eq!(failed[0]["host"], "h3");
    let rb: Vec<String> = events(&evs, "rollback")
        .iter()
        .map(|e| e["host"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(rb, ["h3", "h2", "h1"], "rollback in reverse order");
    assert!(events(&evs, "rollback").iter().all(|e| e["ok"] == true));
    env.assert_all_serve(&["h1", "h2"], fx.commit("good"));
    env.assert_all_serve(&["h3"], fx.commit("good2"));
}

#[test]
fn second_concurrent_deploy_is_refused() {
    let fx = fx!();
    let env = Env::new(fx, "conc", "    canary_bake: 4s\n");
    let (mut child, mut out) = env.spawn(&["deploy", fx.digest("good"), "--env", "conc"]);
    read_until(&mut out, |e| e["event"] == "bake");
    let (code, evs, err) = env.deploy(fx.digest("good2"));
    assert_eq!(code, 3, "{err}\n{}", testkit::why(&evs));
    assert!(err.contains("locked by"), "{err}");
    let rest: Vec<Value> = out
        .lines()
        .map_while(Result::ok)
        .filter_map(|l| serde_json::from_str(&l).ok())
        .collect();
    assert!(child.wait().unwrap().success(), "{rest:#?}");
    env.assert_all_serve(&HOSTS, fx.commit("good"));
}

fn kill_mid_deploy(env: &Env, target: &str) -> String {
    let (mut child, mut out) = env.spawn(&["deploy", target, "--env", &env.name]);
    let seen = read_until(&mut out, |e| {
        e["event"] == "step" && e["host"] == "h2" && e["step"] == "switch"
    });
    child.kill().unwrap();
    child.wait().unwrap();
    events(&seen, "plan")[0]["deploy_id"]
        .as_str()
        .unwrap()
        .to_string()
}

#[test]
fn killed_applier_is_resumed_without_half_switched_hosts() {
    let fx = fx!();
    let env = Env::new(fx, "resume", "");
    let (code, evs, err) = env.deploy(fx.digest("good"));
    assert_eq!(code, 0, "{err}\n{}", testkit::why(&evs));
    let id = kill_mid_deploy(&env, fx.digest("good2"));

    let (code, evs, _) = env.run(&["status", "--env", "resume"]);
    assert_eq!(
        code,
        1,
        "status should report drift: {}",
        testkit::why(&evs)
    );

    // The dead deploy still holds the lease: refused without --force.
    let (code, _, err) = env.run(&["resume", &id]);
    assert_eq!(code, 3, "{err}");
    let (code, evs, err) = env.run(&["resume", &id, "--force"]);
    assert_eq!(code, 0, "{err}\n{}", testkit::why(&evs));
    env.assert_all_serve(&HOSTS, fx.commit("good2"));
    let (code, evs, _) = env.run(&["history", "--env", "resume"]);
    assert_eq!(code, 0);
    assert_eq!(evs.last().unwrap()["status"], "succeeded");
}

#[test]
fn killed_applier_is_rolled_back_on_resume() {
    let fx = fx!();
    let env = Env::new(fx, "resumerb", "");
    let (code, evs, err) = env.deploy(fx.digest("good"));
    assert_eq!(code, 0, "{err}\n{}", testkit::why(&evs));
    let h3_pid = env.pid("h3").unwrap();
    let id = kill_mid_deploy(&env, fx.digest("good2"));
    let (code, evs, err) = env.run(&["resume", &id, "--rollback", "--force"]);
    assert_eq!(code, 1, "{err}\n{}", testkit::why(&evs));
    let rb: Vec<String> = events(&evs, "rollback")
        .iter()
        .map(|e| e["host"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(rb, ["h2", "h1"]);
    env.assert_all_serve(&HOSTS, fx.commit("good"));
    assert_eq!(env.pid("h3"), Some(h3_pid), "h3 was never touched");
}

#[test]
fn corrupt_blob_fails_prefetch_and_changes_nothing() {
    let fx = fx!();
    let env = Env::new(fx, "corrupt", "");
    let (code, evs, err) = env.deploy(fx.digest("good"));
    assert_eq!(code, 0, "{err}\n{}", testkit::why(&evs));
    let pids: Vec<_> = HOSTS.iter().map(|h| env.pid(h).unwrap()).collect();

    // Flip one byte of the corrupt variant's source layer (its own blob; the dependency
    // layer is shared with the other variants).
    let d: artifact::Digest = fx.digest("corrupt").parse().unwrap();
    let store = artifact::store::open(fx.store.to_str().unwrap(), &Default::default()).unwrap();
    let m = artifact::resolve::load_verified(store.as_ref(), &d).unwrap();
    let src = m.layer(artifact::manifest::LayerKind::Source).unwrap();
    let path = fx.store.join(artifact::keys::blob(&src.digest));
    let mut perm = std::fs::metadata(&path).unwrap().permissions();
    #[allow(clippy::permissions_set_readonly_false)]
    perm.set_readonly(false);
    std::fs::set_permissions(&path, perm).unwrap();
    let mut bytes = std::fs::read(&path).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    std::fs::write(&path, bytes).unwrap();

    let (code, evs, err) = env.deploy(fx.digest("corrupt"));
    assert_eq!(code, 3, "{err}\n{}", testkit::why(&evs));
    assert!(
        events(&evs, "fetch").iter().all(|e| e["ok"] == false),
        "{}",
        testkit::why(&evs)
    );
    assert!(
        events(&evs, "step").is_empty(),
        "a host was touched: {}",
        testkit::why(&evs)
    );
    env.assert_all_serve(&HOSTS, fx.commit("good"));
    let after: Vec<_> = HOSTS.iter().map(|h| env.pid(h).unwrap()).collect();
    assert_eq!(pids, after);
    for h in HOSTS {
        let rel = env.root(h).join("releases");
        let names: Vec<String> = std::fs::read_dir(&rel)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(
            names,
            [fx.commit("good").to_string()],
            "{h}: partial release left behind"
        );
    }
}

/// A foreign process holding a host's port is not mistaken for the new service: the start is
/// refused, the canary is restored, and the other hosts are never touched.
#[test]
fn foreign_process_on_the_port_fails_the_start_instead_of_passing_checks() {
    let fx = fx!();
    let env = Env::new(fx, "foreign", "");
    let (code, evs, err) = env.deploy(fx.digest("good"));
    assert_eq!(code, 0, "{err}\n{}", testkit::why(&evs));
    let pids: Vec<_> = ["h2", "h3"].iter().map(|h| env.pid(h).unwrap()).collect();
    // Stop h1's service behind the applier's back and squat on its port.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_applier"))
        .args(["host", "--root"])
        .arg(env.root("h1"))
        .arg("stop")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let squatter = TcpListener::bind(("127.0.0.1", env.ports["h1"])).unwrap();
    let (code, evs, err) = env.deploy(fx.digest("good2"));
    drop(squatter);
    assert_ne!(code, 0, "deploy must fail: {err}");
    let fails: Vec<String> = evs
        .iter()
        .filter(|e| e.to_string().contains("already in use"))
        .map(|e| e.to_string())
        .collect();
    assert!(
        !fails.is_empty(),
        "no port-in-use failure in {}\n{err}",
        testkit::why(&evs)
    );
    assert_eq!(host_done_order(&evs), ["h1"], "only the canary is touched");
    let after: Vec<_> = ["h2", "h3"].iter().map(|h| env.pid(h).unwrap()).collect();
    assert_eq!(pids, after, "h2/h3 were restarted");
}

/// The capacity guard counts a host someone else took out of the pool: with `max_out: 1` the
/// deploy waits (`capacity.wait`) until that host is back, then proceeds; without a wait it
/// aborts before touching anything.
#[test]
fn capacity_guard_waits_for_a_host_someone_else_depooled() {
    let fx = fx!();
    let env = Env::new(fx, "capacity", "    capacity: {max_out: 1, wait: 20s}\n");
    let (code, evs, err) = env.deploy(fx.digest("good"));
    assert_eq!(code, 0, "{err}\n{}", testkit::why(&evs));
    let pool = env.dir.path().join("pool");
    // An operator depools h3 by hand.
    std::fs::write(pool.join("h3"), "out\n").unwrap();
    let pool2 = pool.clone();
    let operator = std::thread::spawn(move || {
        std::thread::sleep(std::time::Duration::from_secs(3));
        std::fs::write(pool2.join("h3"), "in\n").unwrap();
    });
    let t0 = std::time::Instant::now();
    let (code, evs, err) = env.deploy(fx.digest("good2"));
    operator.join().unwrap();
    assert_eq!(code, 0, "{err}\n{}", testkit::why(&evs));
    assert!(
        t0.elapsed() >= std::time::Duration::from_secs(3),
        "the deploy did not wait for h3"
    );
    env.assert_all_serve(&HOSTS, fx.commit("good2"));

    // No wait configured: refused before any host is touched.
    let env0 = Env::new(fx, "capacity0", "    capacity: {max_out: 1}\n");
    let (code, evs, err) = env0.deploy(fx.digest("good"));
    assert_eq!(code, 0, "{err}\n{}", testkit::why(&evs));
    std::fs::write(env0.dir.path().join("pool/h2"), "out\n").unwrap();
    let pids: Vec<_> = HOSTS.iter().map(|h| env0.pid(h).unwrap()).collect();
    let (code, evs, err) = env0.deploy(fx.digest("good2"));
    assert_ne!(code, 0, "must not proceed past the capacity guard: {err}");
    assert!(
        format!("{evs:?}{err}").contains("capacity guard"),
        "{err}\n{}",
        testkit::why(&evs)
    );
    let after: Vec<_> = HOSTS.iter().map(|h| env0.pid(h).unwrap()).collect();
    assert_eq!(pids, after, "a host was restarted");
}

/// `require_signature`: an unsigned artifact is refused before any host is touched, the same
/// artifact deploys once `builder sign` signed it with a trusted key, and a rollback to an
/// unsigned release is refused too.
#[test]
fn required_signature_refuses_unsigned_artifacts_and_accepts_signed_ones() {
    let fx = fx!();
    let keys = tempfile::tempdir().unwrap();
    let builder = common::builder_bin();
    for name in ["trusted", "other"] {
        let out = std::process::Command::new(&builder)
            .arg("keygen")
            .arg("--out")
            .arg(keys.path().join(name))
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
    }
    let trusted_pub = keys.path().join("trusted.pub");
    let trusted_id = artifact::sign::PublicKey::load(&trusted_pub)
        .unwrap()
        .key_id();
    let env = Env::new(
        fx,
        "signed",
        &format!(
            "    require_signature:\n      trusted_keys: [{}]\n",
            trusted_pub.display()
        ),
    );
    let sign = |variant: &str, key: &str| {
        let out = std::process::Command::new(&builder)
            .args(["sign", fx.digest(variant), "--store"])
            .arg(&fx.store)
            .arg("--sign-key")
            .arg(keys.path().join(format!("{key}.key")))
            .env_remove("BUILDER_SIGN_KEY")
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
    };

    // Unsigned, and signed by an untrusted key: refused (exit 3), no host touched.
    sign("good3", "other");
    let (code, evs, err) = env.deploy(fx.digest("good3"));
    assert_eq!(code, 3, "{err}\n{}", testkit::why(&evs));
    assert!(
        err.contains(fx.digest("good3")) && err.contains(&trusted_id),
        "{err}"
    );
    assert!(err.contains("not by a trusted key"), "{err}");
    assert!(events(&evs, "step").is_empty(), "{}", testkit::why(&evs));
    for h in HOSTS {
        assert!(!env.root(h).join("current").exists(), "{h} was touched");
    }

    // With the policy lifted, the unsigned `good` deploys (the rollback target below).
    let (code, _, err) = env.run(&[
        "deploy",
        fx.digest("good"),
        "--env",
        "signed",
        "--set",
        "envs.signed.require_signature=null",
    ]);
    assert_eq!(code, 0, "{err}");
    env.assert_all_serve(&HOSTS, fx.commit("good"));

    // Signed by the trusted key: deploys.
    sign("good3", "trusted");
    let (code, evs, err) = env.deploy(fx.digest("good3"));
    assert_eq!(code, 0, "{err}\n{}", testkit::why(&evs));
    env.assert_all_serve(&HOSTS, fx.commit("good3"));

    // Rolling back to the unsigned `good` is refused and changes nothing.
    let pids: Vec<_> = HOSTS.iter().map(|h| env.pid(h).unwrap()).collect();
    let (code, evs, err) = env.run(&["rollback", "--env", "signed"]);
    assert_eq!(code, 3, "{err}\n{}", testkit::why(&evs));
    assert!(
        err.contains(fx.digest("good")) && err.contains("no signatures at all"),
        "{err}"
    );
    env.assert_all_serve(&HOSTS, fx.commit("good3"));
    let after: Vec<_> = HOSTS.iter().map(|h| env.pid(h).unwrap()).collect();
    assert_eq!(pids, after);
}

/// The journals of an environment (`history`, JSON).
fn journals(env: &Env, name: &str) -> Vec<Value> {
    let (code, evs, err) = env.run(&["history", "--env", name]);
    assert_eq!(code, 0, "{err}\n{}", testkit::why(&evs));
    evs
}

fn nothing_touched(env: &Env) {
    for h in HOSTS {
        assert!(
            !env.root(h).join("current").exists(),
            "{h} of {} was touched",
            env.name
        );
        assert_eq!(env.pool_state(h), "", "{h} of {} was depooled", env.name);
    }
}

/// `promotion: {requires: [staging]}`: production takes only what a succeeded deploy put on
/// staging; `--skip-promotion-check` overrides once and is journaled; rollbacks are not gated.
#[test]
fn promotion_gate_requires_a_succeeded_staging_deploy() {
    let fx = fx!();
    // Separate tempdirs: separate host roots, ports and pool files.
    let staging = Env::new(fx, "pg-stg", "");
    let prod = Env::new(fx, "pg-prd", "    promotion: {requires: [pg-stg]}\n");

    let (code, evs, err) = prod.deploy(fx.digest("good"));
    assert_eq!(code, 3, "{err}\n{}", testkit::why(&evs));
    assert!(
        err.contains(fx.digest("good"))
            && err.contains("pg-stg")
            && err.contains("applier promote"),
        "{err}"
    );
    assert!(events(&evs, "plan").is_empty(), "refused before the plan");
    nothing_touched(&prod);
    assert!(journals(&prod, "pg-prd").is_empty());

    // The emergency override: deployed, and the journal says it skipped the check.
    let (code, _, err) = prod.run(&[
        "deploy",
        fx.digest("good2"),
        "--env",
        "pg-prd",
        "--skip-promotion-check",
        "--reason",
        "hotfix",
    ]);
    assert_eq!(code, 0, "{err}");
    prod.assert_all_serve(&HOSTS, fx.commit("good2"));
    let j = &journals(&prod, "pg-prd")[0];
    assert!(
        j["reason"]
            .as_str()
            .unwrap()
            .starts_with("hotfix [promotion check skipped"),
        "{j:#}"
    );
    assert!(
        j["steps"]
            .as_array()
            .unwrap()
            .iter()
            .any(|s| s["step"] == "promotion_check"
                && s["detail"]
                    .as_str()
                    .unwrap()
                    .contains("--skip-promotion-check; not passed: pg-stg")),
        "{j:#}"
    );

    // Once staging ran it, production takes it.
    let (code, evs, err) = staging.deploy(fx.digest("good"));
    assert_eq!(code, 0, "{err}\n{}", testkit::why(&evs));
    let stg_id = journals(&staging, "pg-stg")[0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let (code, evs, err) = prod.deploy(fx.digest("good"));
    assert_eq!(code, 0, "{err}\n{}", testkit::why(&evs));
    prod.assert_all_serve(&HOSTS, fx.commit("good"));
    let j = &journals(&prod, "pg-prd")[1];
    assert!(
        j["steps"]
            .as_array()
            .unwrap()
            .iter()
            .any(|s| s["step"] == "promotion_check"
                && s["detail"] == format!("passed pg-stg (deploy {stg_id})")),
        "{j:#}"
    );

    // Rolling back to good2, which never passed staging, is allowed.
    let (code, evs, err) = prod.run(&["rollback", "--env", "pg-prd"]);
    assert_eq!(code, 0, "{err}\n{}", testkit::why(&evs));
    prod.assert_all_serve(&HOSTS, fx.commit("good2"));
}

/// `promote --from staging --to production` deploys what every staging host runs, and refuses
/// when staging's hosts differ.
#[test]
fn promote_deploys_what_staging_runs_and_refuses_when_its_hosts_differ() {
    let fx = fx!();
    let staging = Env::new(fx, "pp-stg", "");
    let prod = Env::new(fx, "pp-prd", "    promotion: {requires: [pp-stg]}\n");
    let promote = ["promote", "--from", "pp-stg", "--to", "pp-prd"];

    // Nothing on staging yet.
    let (code, _, err) = prod.run(&promote);
    assert_eq!(code, 3, "{err}");
    assert!(err.contains("no host has a recorded release"), "{err}");
    nothing_touched(&prod);

    let (code, evs, err) = staging.deploy(fx.digest("good3"));
    assert_eq!(code, 0, "{err}\n{}", testkit::why(&evs));
    let (code, evs, err) = prod.run(&promote);
    assert_eq!(code, 0, "{err}\n{}", testkit::why(&evs));
    assert_eq!(evs[0]["event"], "promote", "{}", testkit::why(&evs));
    assert_eq!(evs[0]["commit"], fx.commit("good3"));
    assert_eq!(evs[0]["artifact"], fx.digest("good3"));
    assert_eq!(evs[0]["from_deploy"], journals(&staging, "pp-stg")[0]["id"]);
    prod.assert_all_serve(&HOSTS, fx.commit("good3"));

    // Put staging's h3 alone on good2 (a config limited to h3 for this one run).
    let h3 = format!(
        "envs.pp-stg.hosts={{h3: {{root: {}, port: {}, values: {{services.0.conf.host: 127.0.0.1}}}}}}",
        staging.root("h3").display(),
        staging.ports["h3"]
    );
    let (code, _, err) = staging.run(&[
        "deploy",
        fx.digest("good2"),
        "--env",
        "pp-stg",
        "--set",
        "envs.pp-stg.groups=[{name: canary, hosts: [h3]}]",
        "--set",
        &h3,
    ]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(staging.release("h3").as_deref(), Some(fx.commit("good2")));

    let pids: Vec<_> = HOSTS.iter().map(|h| prod.pid(h).unwrap()).collect();
    let (code, evs, err) = prod.run(&promote);
    assert_eq!(code, 3, "{err}\n{}", testkit::why(&evs));
    assert!(
        err.contains("hosts differ")
            && err.contains(&format!("h1, h2 on {}", &fx.commit("good3")[..12]))
            && err.contains(&format!("h3 on {}", &fx.commit("good2")[..12])),
        "{err}"
    );
    assert_eq!(evs[0]["event"], "error", "{}", testkit::why(&evs));
    let after: Vec<_> = HOSTS.iter().map(|h| prod.pid(h).unwrap()).collect();
    assert_eq!(pids, after, "production was touched");
    prod.assert_all_serve(&HOSTS, fx.commit("good3"));
}
