//! Real processes where the point is a real process: the environment a started service gets,
//! a deployer stopped (SIGSTOP) past its lease and resumed after another deploy took over, and
//! what a failed start says about its log. The fixture service, built by the real builder, on
//! local hosts.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::{Env, HOSTS, events, fixture, read_until};

macro_rules! fx {
    () => {
        match fixture() {
            Some(f) => f,
            None => return,
        }
    };
}

fn environ(pid: i32) -> BTreeMap<String, String> {
    let raw = std::fs::read(format!("/proc/{pid}/environ")).unwrap();
    raw.split(|b| *b == 0)
        .filter(|kv| !kv.is_empty())
        .filter_map(|kv| {
            let s = String::from_utf8_lossy(kv);
            s.split_once('=')
                .map(|(k, v)| (k.to_string(), v.to_string()))
        })
        .collect()
}

/// The deployer holds store credentials and a signing key in its environment; the service it
/// starts gets the documented base (PATH, HOME = the host root, LANG), the inventory's `env`,
/// and nothing else.
#[test]
fn a_started_service_gets_the_minimal_environment_not_the_deployers() {
    let fx = fx!();
    let env = Env::new(fx, "environ", "");
    let out = env
        .cmd(&[
            "deploy",
            fx.digest("good"),
            "--env",
            "environ",
            "--set",
            "envs.environ.hosts.h1.env.SERVICE_FLAG=on",
        ])
        .env("AWS_ACCESS_KEY_ID", "AKIADEPLOYER")
        .env("AWS_SECRET_ACCESS_KEY", "deployer-secret")
        .env("AWS_SESSION_TOKEN", "deployer-token")
        .env("BUILDER_SIGN_KEY", "/home/deployer/.signing/secret.key")
        .env("SIGNING_KEY_MATERIAL", "ed25519-secret AAAA")
        .env("FIXTURE_CRASH_AT_START", "true")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    env.assert_all_serve(&HOSTS, fx.commit("good"));
    for h in HOSTS {
        let pid = env.pid(h).expect("running");
        let vars = environ(pid);
        let root = env.root(h).display().to_string();
        let mut want: BTreeMap<String, String> = [
            ("PATH", applier::target::env::BASE_PATH),
            ("HOME", root.as_str()),
            ("LANG", "C.UTF-8"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        if h == "h1" {
            want.insert("SERVICE_FLAG".into(), "on".into());
        }
        assert_eq!(vars, want, "{h}: the service's environment");
    }
}

/// A deploy stopped (SIGSTOP) during its canary bake, past its lease TTL; a second deploy
/// takes the lease over and finishes; the first is resumed (SIGCONT). It stops at once, says
/// it lost its lease, and every host stays as the second deploy left it.
#[test]
fn a_deployer_stopped_past_its_lease_is_fenced_out_after_another_deploy_finished() {
    let fx = fx!();
    let env = Env::new(fx, "sigstop", "");
    let (code, evs, err) = env.deploy(fx.digest("good"));
    assert_eq!(code, 0, "{err}\n{}", testkit::why(&evs));
    let (mut first, mut out) = env.spawn(&[
        "deploy",
        fx.digest("good2"),
        "--env",
        "sigstop",
        "--set",
        "envs.sigstop.canary_bake=40s",
    ]);
    read_until(&mut out, |e| e["event"] == "bake");
    // Freeze it in the bake's wait, not inside the env-state write its writer thread may still
    // be making as the bake begins: a deployer frozen in a directory-store write holds that
    // key's lock, which another deployer waits on for a bound and then fails (artifact's
    // `a_key_lock_held_past_the_bound_fails_the_write_and_changes_nothing`). Fencing is what
    // this test is about.
    std::thread::sleep(Duration::from_secs(2));
    let pid = rustix::process::Pid::from_raw(first.id() as i32).unwrap();
    rustix::process::kill_process(pid, rustix::process::Signal::STOP).unwrap();
    // Past the 10 s lease.
    std::thread::sleep(Duration::from_secs(12));
    let (code, evs, err) = env.deploy(fx.digest("good"));
    assert_eq!(code, 0, "the second deploy: {err}\n{}", testkit::why(&evs));
    env.assert_all_serve(&HOSTS, fx.commit("good"));
    let pids: Vec<_> = HOSTS.iter().map(|h| env.pid(h)).collect();
    rustix::process::kill_process(pid, rustix::process::Signal::CONT).unwrap();
    let rest = read_until(&mut out, |e| {
        e["event"] == "finished" || e["event"] == "error"
    });
    let status = first.wait().unwrap();
    let fin = rest.last().unwrap();
    assert_eq!(status.code(), Some(2), "{rest:#?}");
    assert_eq!(fin["status"], "needs_human", "{fin}");
    let msg = fin["message"].as_str().unwrap();
    assert!(msg.contains("lease on sigstop was lost"), "{msg}");
    assert!(msg.contains("stopped at once"), "{msg}");
    // Nothing it did after it resumed reached a host.
    assert!(
        events(&rest, "step").iter().all(|s| s["ok"] == false),
        "{rest:#?}"
    );
    env.assert_all_serve(&HOSTS, fx.commit("good"));
    let after: Vec<_> = HOSTS.iter().map(|h| env.pid(h)).collect();
    assert_eq!(pids, after, "a host was restarted");
}

/// A service that dies at start-up: its fatal log line is quoted once (in the `ready` step),
/// with the log's path; the host summary, the abort reason and the outcome name the step, and
/// `history` does not repeat the line.
#[test]
fn a_failed_start_quotes_its_log_line_once_with_the_log_path() {
    let fx = fx!();
    let env = Env::new(fx, "quote", "");
    let (code, evs, err) = env.deploy(fx.digest("good"));
    assert_eq!(code, 0, "{err}\n{}", testkit::why(&evs));
    let out = env
        .cmd(&["deploy", fx.digest("bad_crash"), "--env", "quote"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // Once per quote of the fatal line (its message is in it twice: `msg` and `err.message`).
    let line = "fatal/startup";
    assert_eq!(all.matches(line).count(), 1, "{all}");
    let evs: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    let ready = events(&evs, "step")
        .into_iter()
        .find(|s| s["step"] == "ready" && s["ok"] == false)
        .unwrap();
    let detail = ready["detail"].as_str().unwrap();
    assert!(
        detail.contains("(log ") && detail.contains(".log)"),
        "{detail}"
    );
    assert!(detail.len() < 600, "{detail}");
    let (code, hist, _) = env.run(&["history", "--env", "quote"]);
    assert_eq!(code, 0);
    let text = serde_json::to_string(&hist).unwrap();
    assert_eq!(text.matches(line).count(), 1, "{text}");
}
