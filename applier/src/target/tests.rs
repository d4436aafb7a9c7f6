//! The target's fail-closed rules on real files and processes: the fence, releases acted on
//! only as the build they were fetched as, an unreadable `state.json` failing preflight, the
//! minimal environment of commands, no leftovers (temp files, partial releases), and stop
//! meaning stopped (the whole process group gone and the port free; a holder named).

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;
use std::time::Duration;

use artifact::Digest;
use model::names::{CommitId, DeployId};

use super::*;
use crate::protocol::{
    ErrorKind, Fence, PreflightRequest, ReleaseRef, ReleaseRequest, StopRequest,
};

fn fence(token: u64) -> Fence {
    Fence {
        env: model::names::Name::parse("e").unwrap(),
        token,
        deploy_id: DeployId::parse(&format!("d-{token}")).unwrap(),
    }
}

fn preflight(f: Option<Fence>) -> HostRequest {
    HostRequest::Preflight(PreflightRequest {
        min_free_bytes: 0,
        node: None,
        fence: f,
    })
}

fn stop(f: Option<Fence>) -> HostRequest {
    HostRequest::Stop(StopRequest { fence: f })
}

/// A fetched-looking release `c...c` whose `.release.json` records `manifest`.
fn fake_release(root: &HostRoot, c: char, manifest: Digest) -> ReleaseRef {
    let commit = c.to_string().repeat(40);
    let dir = root.release_dir(&commit);
    fs::create_dir_all(dir.join("deploy")).unwrap();
    fs::write(dir.join("deploy/service.yaml"), "name: svc\n").unwrap();
    let meta = serde_json::json!({"commit": commit, "manifest": manifest, "fetched_at": "x"});
    fs::write(dir.join(".release.json"), meta.to_string()).unwrap();
    ReleaseRef {
        commit: CommitId::parse(&commit).unwrap(),
        manifest,
    }
}

#[test]
fn the_newest_fence_is_recorded_and_an_older_one_refused_before_anything_runs() {
    let dir = tempfile::tempdir().unwrap();
    let root = HostRoot::new(dir.path());
    root.execute(preflight(Some(fence(5)))).unwrap();
    assert_eq!(root.state().unwrap().fences.get("e"), Some(&fence(5)));
    let rel = fake_release(&root, 'a', Digest::of(b"a"));
    let before = fs::read(dir.path().join("state.json")).unwrap();
    for req in [
        stop(Some(fence(4))),
        preflight(Some(fence(4))),
        HostRequest::Switch(ReleaseRequest {
            release: rel.clone(),
            fence: Some(fence(4)),
        }),
        // The same token from another deploy.
        stop(Some(Fence {
            env: model::names::Name::parse("e").unwrap(),
            token: 5,
            deploy_id: DeployId::parse("someone-else").unwrap(),
        })),
    ] {
        let same_token =
            matches!(&req, HostRequest::Stop(s) if s.fence.as_ref().is_some_and(|f| f.token == 5));
        let e = root.execute(req).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Fenced, "{e}");
        assert!(e.to_string().contains("d-5"), "{e}");
        // An older token is older; the same token from another deploy is named as such.
        let said = if same_token {
            "two deploys hold one token"
        } else {
            "is older than 5 of e (deploy d-5)"
        };
        assert!(e.to_string().contains(said), "{e}");
    }
    assert_eq!(fs::read(dir.path().join("state.json")).unwrap(), before);
    assert!(root.current().is_none(), "a refused switch switched");
    // The holder's own token, a newer one, and an operator's unfenced stop go through.
    root.execute(stop(Some(fence(5)))).unwrap();
    root.execute(stop(Some(fence(6)))).unwrap();
    root.execute(stop(None)).unwrap();
    assert_eq!(root.state().unwrap().fences.get("e"), Some(&fence(6)));
    // Generations are counted per environment: another env's token is compared with its own.
    let mut other = fence(1);
    other.env = model::names::Name::parse("other").unwrap();
    root.execute(stop(Some(other.clone()))).unwrap();
    assert_eq!(root.state().unwrap().fences.len(), 2);
}

#[test]
fn a_release_is_switched_to_only_as_the_build_it_was_fetched_as() {
    let dir = tempfile::tempdir().unwrap();
    let root = HostRoot::new(dir.path());
    let rel = fake_release(&root, 'a', Digest::of(b"signed"));
    let forged = ReleaseRef {
        commit: rel.commit.clone(),
        manifest: Digest::of(b"unsigned"),
    };
    for req in [
        HostRequest::Switch(ReleaseRequest {
            release: forged.clone(),
            fence: None,
        }),
        HostRequest::MarkGood(ReleaseRequest {
            release: forged.clone(),
            fence: None,
        }),
        HostRequest::ServiceSpec(ReleaseRequest {
            release: forged.clone(),
            fence: None,
        }),
    ] {
        let e = root.execute(req).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::NotFetched, "{e}");
    }
    assert!(root.current().is_none());
    assert_eq!(root.state().unwrap().last_good, None);
    root.execute(HostRequest::Switch(ReleaseRequest {
        release: rel.clone(),
        fence: None,
    }))
    .unwrap();
    assert_eq!(root.current().as_deref(), Some(rel.commit.as_str()));
}

#[test]
fn an_env_file_outside_the_release_is_not_rendered() {
    let dir = tempfile::tempdir().unwrap();
    let root = HostRoot::new(dir.path().join("root"));
    let rel = fake_release(&root, 'a', Digest::of(b"a"));
    let spec = root.release_dir(&rel.commit).join("deploy/service.yaml");
    fs::write(
        &spec,
        "name: svc\nconfig: {env_file: '../../../{env}.yaml'}\n",
    )
    .unwrap();
    fs::write(dir.path().join("prod.yaml"), "secret: 1\n").unwrap();
    let e = root
        .render(&crate::protocol::RenderRequest {
            release: rel.clone(),
            env: model::names::Name::parse("prod").unwrap(),
            port: None,
            values: BTreeMap::new(),
            ops: None,
            fence: None,
        })
        .unwrap_err();
    assert!(e.to_string().contains("inside the release"), "{e}");
    assert!(!root.release_dir(&rel.commit).join("config.yaml").exists());
}

#[test]
fn an_unreadable_state_json_fails_preflight() {
    let dir = tempfile::tempdir().unwrap();
    let root = HostRoot::new(dir.path());
    root.execute(preflight(None)).unwrap();
    fs::write(dir.path().join("state.json"), b"{\"current\": 42").unwrap();
    let e = root.execute(preflight(None)).unwrap_err();
    assert!(e.to_string().contains("state.json"), "{e}");
    // A state naming a release by a path, not a commit, is unreadable too.
    let d = Digest::of(b"x");
    fs::write(
        dir.path().join("state.json"),
        format!(r#"{{"current":{{"commit":"../../etc","manifest":"{d}"}},"last_good":null,"previous_good":null,"step":null}}"#),
    )
    .unwrap();
    assert!(root.execute(preflight(Some(fence(1)))).is_err());
}

#[test]
fn commands_get_the_minimal_environment_and_their_values_as_variables() {
    let dir = tempfile::tempdir().unwrap();
    let root = HostRoot::new(dir.path());
    let marker = dir.path().join("MARKER");
    let hostile = format!("x$(touch {m}); touch {m} `touch {m}`", m = marker.display());
    let filled = crate::shell::fill(
        "echo {host}; echo \"$APPLIER_HOST\"; env",
        &[("host", hostile.clone())],
    );
    let out = match root
        .execute(HostRequest::Exec(crate::protocol::ExecRequest {
            cmd: filled.cmd,
            timeout_ms: 5000,
            env: filled.env,
        }))
        .unwrap()
    {
        HostResponse::Exec(o) => o,
        other => panic!("{other:?}"),
    };
    assert_eq!(out.status, 0, "{out:?}");
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(&lines[..2], [hostile.as_str(), hostile.as_str()]);
    assert!(!marker.exists(), "a hostile value ran a command");
    let vars: BTreeMap<&str, &str> = lines[2..]
        .iter()
        .filter_map(|l| l.split_once('='))
        .collect();
    assert_eq!(vars.get("PATH"), Some(&env::BASE_PATH));
    assert_eq!(vars.get("LANG"), Some(&"C.UTF-8"));
    let home = dir.path().display().to_string();
    assert_eq!(vars.get("HOME"), Some(&home.as_str()));
    // Nothing of this (test) process: cargo sets CARGO_* for it.
    assert!(vars.keys().all(|k| !k.starts_with("CARGO")), "{vars:?}");
}

#[test]
fn prune_removes_partial_releases_of_a_killed_fetch() {
    let dir = tempfile::tempdir().unwrap();
    let root = HostRoot::new(dir.path());
    root.ensure_dirs().unwrap();
    let good = fake_release(&root, 'a', Digest::of(b"a"));
    // A fetch killed half way: files, but no `.release.json` (written last).
    let partial = root.release_dir(&"b".repeat(40));
    fs::create_dir_all(partial.join("node_modules/x")).unwrap();
    fs::write(partial.join("node_modules/x/index.js"), "x").unwrap();
    let r = root.prune(5).unwrap();
    assert_eq!(r.removed, vec!["b".repeat(40)], "{r:?}");
    assert!(!partial.exists());
    assert!(
        root.release_dir(&good.commit).exists(),
        "a complete release was pruned"
    );
    // A fetch in progress (its step recorded) is left alone.
    fs::create_dir_all(&partial).unwrap();
    root.begin("fetch", Some(&"b".repeat(40))).unwrap();
    assert!(root.prune(5).unwrap().removed.is_empty());
    assert!(partial.exists());
}

/// `write_atomic` in a child process whose file size limit is one block: the write fails
/// (EFBIG), and no temp file is left beside the target. Runs itself as that child.
#[test]
fn write_atomic_leaves_no_temp_file_when_the_write_fails() {
    const CHILD: &str = "APPLIER_TEST_WRITE_ATOMIC_DIR";
    if let Some(d) = std::env::var_os(CHILD) {
        let r = write_atomic(&Path::new(&d).join("state.json"), &vec![b'x'; 1 << 20]);
        std::process::exit(if r.is_err() { 0 } else { 1 });
    }
    let dir = tempfile::tempdir().unwrap();
    let exe = std::env::current_exe().unwrap();
    let out = std::process::Command::new("sh")
        .arg("-c")
        .arg(r#"trap '' XFSZ; ulimit -f 1; exec "$0" --exact "$1" --nocapture --test-threads=1"#)
        .arg(&exe)
        .arg("target::tests::write_atomic_leaves_no_temp_file_when_the_write_fails")
        .env(CHILD, dir.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "the write did not fail as expected: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let left: Vec<_> = fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert!(left.is_empty(), "left behind: {left:?}");
}

#[test]
fn a_request_waits_for_the_host_lock() {
    let dir = tempfile::tempdir().unwrap();
    let root = HostRoot::new(dir.path());
    let held = root.lock().unwrap();
    let r2 = root.clone();
    let t = std::thread::spawn(move || {
        let t0 = std::time::Instant::now();
        r2.execute(stop(None)).unwrap();
        t0.elapsed()
    });
    std::thread::sleep(Duration::from_millis(300));
    drop(held);
    assert!(t.join().unwrap() >= Duration::from_millis(250));
}

/// A switched-to release `c...c` whose service is `script` (run by `sh`, `{port}` given), with
/// a stop timeout of `stop_ms`.
fn scripted_release(root: &HostRoot, c: char, port: u16, stop_ms: u64, script: &str) {
    let rel = fake_release(root, c, Digest::of(&[c as u8]));
    let dir = root.release_dir(rel.commit.as_str());
    fs::write(dir.join("run.sh"), script).unwrap();
    fs::write(
        dir.join("deploy/service.yaml"),
        format!(
            "name: svc\nport: {port}\nstart: [sh, run.sh, \"{{port}}\"]\nstop: {{timeout: {stop_ms}ms}}\n"
        ),
    )
    .unwrap();
    root.execute(HostRequest::Switch(ReleaseRequest {
        release: rel,
        fence: None,
    }))
    .unwrap();
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Stop means stopped: the leader exits on SIGTERM, but a worker of its group ignores it and
/// keeps the service's socket. `stop` does not return when the leader is gone: it waits the
/// stop timeout for the group, kills it, and returns once the port is free (reported killed).
#[test]
fn stop_waits_for_the_whole_group_and_the_port_then_kills() {
    let dir = tempfile::tempdir().unwrap();
    let root = HostRoot::new(dir.path());
    let port = free_port();
    scripted_release(
        &root,
        'a',
        port,
        1500,
        "python3 -c 'import socket,signal,sys,time\n\
         signal.signal(signal.SIGTERM, signal.SIG_IGN)\n\
         s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n\
         s.bind((\"127.0.0.1\", int(sys.argv[1]))); s.listen(8)\n\
         time.sleep(600)' \"$1\" &\n\
         trap 'exit 0' TERM\n\
         while :; do sleep 0.1; done\n",
    );
    let (child, info) = root
        .start(&crate::protocol::StartRequest {
            port: Some(port),
            env: BTreeMap::new(),
            fence: None,
        })
        .unwrap();
    let t0 = std::time::Instant::now();
    while !super::port::listening(port) {
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "the worker never bound"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let worker = super::port::holders(port);
    assert!(
        worker.iter().all(|h| h.pid != info.pid) && !worker.is_empty(),
        "{worker:?}"
    );
    drop(child);
    let t0 = std::time::Instant::now();
    let r = root.stop().unwrap();
    let took = t0.elapsed();
    assert_eq!(r.stopped, Some(info.pid));
    assert!(r.killed, "the worker ignored SIGTERM: it had to be killed");
    assert!(
        took >= Duration::from_millis(1400),
        "stop returned when the leader exited, after {took:?}"
    );
    assert!(!super::port::listening(port), "the port is still held");
    assert!(super::port::group_members(info.pid).is_empty());
    assert!(root.running().unwrap().is_none());
}

/// A port held by another process: the refusal names its pid and command, and nothing starts.
#[test]
fn start_refuses_a_port_in_use_and_names_the_holder() {
    let dir = tempfile::tempdir().unwrap();
    let root = HostRoot::new(dir.path());
    let squatter = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = squatter.local_addr().unwrap().port();
    scripted_release(&root, 'a', port, 1000, "exec sleep 600\n");
    let e = root
        .start(&crate::protocol::StartRequest {
            port: Some(port),
            env: BTreeMap::new(),
            fence: None,
        })
        .unwrap_err();
    let msg = e.to_string();
    assert!(
        msg.contains(&format!("pid {}", std::process::id())),
        "the holder is not named: {msg}"
    );
    assert!(msg.contains(&format!("port {port}")), "{msg}");
    assert!(root.running().unwrap().is_none(), "something was started");
}

/// A leader that died and left a worker holding the port: `stop` finds the worker through the
/// run record's process group and kills it, so the next start is not refused.
#[test]
fn stop_after_the_leader_died_kills_the_workers_it_left() {
    let dir = tempfile::tempdir().unwrap();
    let root = HostRoot::new(dir.path());
    let port = free_port();
    scripted_release(
        &root,
        'a',
        port,
        1000,
        "python3 -c 'import socket,sys,time\n\
         s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n\
         s.bind((\"127.0.0.1\", int(sys.argv[1]))); s.listen(8)\n\
         time.sleep(600)' \"$1\" &\n\
         sleep 0.5; exit 3\n",
    );
    let (child, info) = root
        .start(&crate::protocol::StartRequest {
            port: Some(port),
            env: BTreeMap::new(),
            fence: None,
        })
        .unwrap();
    drop(child);
    let t0 = std::time::Instant::now();
    while pid_alive(info.pid) || !super::port::listening(port) {
        assert!(t0.elapsed() < Duration::from_secs(10), "never got there");
        std::thread::sleep(Duration::from_millis(20));
    }
    root.stop().unwrap();
    assert!(
        !super::port::listening(port),
        "the dead leader's worker still holds the port"
    );
    assert!(super::port::group_members(info.pid).is_empty());
}
