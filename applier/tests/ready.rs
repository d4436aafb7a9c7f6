//! Readiness against the real fixture service on local hosts: the applier waits for the
//! service's `ready:` probes (its `listening on` line and `/healthz` 200, then `min_healthy`),
//! not for the port. The fixture's `ready_delay_ms` binds the port at once and answers 503
//! until it is ready, so a deploy that only waited for the port would fail its first check.

mod common;

use common::{Env, events, fixture};
use serde_json::Value;

fn ready_steps(evs: &[Value]) -> Vec<(String, String)> {
    events(evs, "step")
        .into_iter()
        .filter(|e| e["step"] == "ready")
        .map(|e| {
            (
                e["host"].as_str().unwrap().to_string(),
                e["detail"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect()
}

/// `<what> after <n> ms` in a ready detail.
fn after_ms(detail: &str, what: &str) -> u64 {
    let i = detail
        .find(what)
        .unwrap_or_else(|| panic!("{what:?} not in {detail:?}"));
    let rest = &detail[i + what.len()..];
    let rest = rest.trim_start().strip_prefix("after ").unwrap();
    rest.split(' ').next().unwrap().parse().unwrap()
}

#[test]
fn the_applier_waits_for_ready_not_for_the_port() {
    let Some(fx) = fixture() else { return };
    const DELAY: u64 = 2500;
    let env = Env::new(fx, "ready", "");
    // Every host's service holds readiness back by DELAY after binding its port.
    let sets = |delay: u64| -> Vec<String> {
        ["h1", "h2", "h3"]
            .iter()
            .map(|h| format!("envs.ready.hosts.{h}.env.FIXTURE_READY_DELAY_MS='{delay}'"))
            .collect()
    };
    let run = |delay: u64, extra: &[&str], target: &str| {
        let sets = sets(delay);
        let mut args: Vec<&str> = Vec::new();
        for s in &sets {
            args.extend(["--set", s.as_str()]);
        }
        args.extend_from_slice(extra);
        args.extend(["deploy", target, "--env", "ready"]);
        env.run(&args)
    };
    let (code, evs, err) = run(DELAY, &[], fx.digest("good"));
    assert_eq!(code, 0, "{err}\n{}", testkit::why(&evs));
    let steps = ready_steps(&evs);
    assert_eq!(steps.len(), 3, "{steps:?}");
    for (h, d) in &steps {
        // The port was bound well before the service was ready; the applier waited for both
        // probes and then for min_healthy.
        let port = after_ms(d, &format!("port {}", env.ports[h]));
        let log = after_ms(d, "log \"listening on\"");
        let http = after_ms(d, "GET /healthz 200");
        assert!(
            log >= port + DELAY - 300 && http >= port + DELAY - 300,
            "{h}: ready less than {DELAY} ms after the port: {d}"
        );
        assert!(d.ends_with("healthy for 1s"), "{h}: {d}");
    }
    // Every check passed at the first try: the first GET came after readiness.
    for c in events(&evs, "check") {
        assert_eq!(c["result"]["outcome"], "pass", "{c}");
    }
    // The fixture's own log agrees: it bound its port first, and logged `listening on` later.
    let log = std::fs::read_dir(env.root("h1").join("logs"))
        .unwrap()
        .flatten()
        .map(|e| std::fs::read_to_string(e.path()).unwrap())
        .find(|t| t.contains("Port bound on"))
        .expect("a log with the bind line");
    let bound = log.find("Port bound on").unwrap();
    let listening = log.find("listening on").unwrap();
    assert!(bound < listening, "{log}");

    // A deadline the port makes but readiness does not (bound in about 2 s here, ready 8 s
    // after that) fails at the ready step: a port is not readiness. The canary's restore
    // needs the same readiness and fails the same way, so it is left out of the pool (exit 2).
    let (code, evs, err) = run(
        8000,
        &["--set", "envs.ready.ready_timeout=6s"],
        fx.digest("good2"),
    );
    assert_eq!(code, 2, "{err}\n{}", testkit::why(&evs));
    let failed = events(&evs, "step")
        .into_iter()
        .find(|e| e["step"] == "ready" && e["ok"] == false)
        .expect("a failed ready step");
    let d = failed["detail"].as_str().unwrap();
    assert!(
        d.contains("not ready") && d.contains("did not pass within 6s"),
        "{d}"
    );
    assert!(
        events(&evs, "check").is_empty(),
        "a check ran on a host that was not ready"
    );
}
