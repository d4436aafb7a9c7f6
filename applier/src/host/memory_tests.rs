//! The in-memory host: the real target's rules, and each injectable failure.

use std::sync::Arc;
use std::time::Instant;

use artifact::manifest::{Layer, LayerKind, Manifest, SourceInfo};

use super::*;
use crate::protocol::{Fence, PreflightRequest, ReadyRequest, StartRequest};

fn cfg() -> HostConfig {
    serde_norway::from_str("{root: /srv/mem/h1, port: 7300}").unwrap()
}

fn host() -> MemoryHost {
    MemoryHost::new("h1", &cfg())
}

/// A valid manifest of commit `c` repeated (`'a'` -> `aaaa...`).
pub(crate) fn manifest(c: char) -> (Digest, Manifest) {
    let m = Manifest {
        format: artifact::manifest::MANIFEST_FORMAT,
        service: "svc".into(),
        source: SourceInfo {
            commit: c.to_string().repeat(40),
            tree: "t".repeat(40),
            commit_time: 0,
            author: "a <a@example.org>".into(),
            subject: "s".into(),
        },
        layers: vec![Layer {
            kind: LayerKind::Source,
            media_type: "application/vnd.restbase-deploy.layer.v1.tar+gzip".into(),
            digest: Digest::of(c.to_string().as_bytes()),
            size: 100,
            diff_id: Digest::of(b"diff"),
            entries: 7,
        }],
        platform: None,
        deps: None,
        storage: None,
        labels: Default::default(),
    };
    (m.digest(), m)
}

/// The fence of deploy `d-<token>`.
fn fence(token: u64) -> Fence {
    Fence {
        env: model::names::Name::parse("e").unwrap(),
        token,
        deploy_id: model::names::DeployId::parse(&format!("d-{token}")).unwrap(),
    }
}

fn f1() -> Fence {
    fence(1)
}

fn rel(c: char) -> ReleaseRef {
    let (d, m) = manifest(c);
    ReleaseRef::of(d, &m).unwrap()
}

fn ready(port: u16) -> ReadyRequest {
    ReadyRequest {
        address: "127.0.0.1".into(),
        port,
        timeout_ms: 30_000,
        probe: None,
    }
}

fn start(port: u16) -> StartRequest {
    StartRequest {
        port: Some(port),
        env: Default::default(),
        fence: Some(f1()),
    }
}

/// fetch -> render -> switch -> start -> ready -> mark good, as the engine runs it.
fn deploy(h: &MemoryHost, c: char) -> Result<RunInfo, HostError> {
    let (d, m) = manifest(c);
    let r = ReleaseRef::of(d, &m).unwrap();
    h.fetch(&f1(), &d, &m)?;
    h.service_spec(&r)?;
    h.stop(&f1())?;
    h.render(&RenderRequest {
        release: r.clone(),
        env: model::names::Name::parse("test").unwrap(),
        port: Some(7300),
        values: Default::default(),
        ops: None,
        fence: Some(f1()),
    })?;
    h.switch(&f1(), &r)?;
    let run = h.start(&start(7300))?;
    h.wait_ready(&ready(7300))?;
    h.mark_good(&f1(), &r)?;
    Ok(run)
}

#[test]
fn is_send_and_sync_and_a_host() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<MemoryHost>();
    let h: Arc<dyn Host> = Arc::new(host());
    assert_eq!((h.name(), h.address()), ("h1", "127.0.0.1"));
}

#[test]
fn a_deploy_then_another_keeps_the_state_a_target_keeps() {
    let h = host();
    let run = deploy(&h, 'a').unwrap();
    assert_eq!(run.port, Some(7300));
    let s = h.status().unwrap();
    let a = "a".repeat(40);
    assert_eq!(s.current.as_deref(), Some(a.as_str()));
    assert_eq!(s.running.as_ref().map(|r| r.pid), Some(run.pid));
    assert_eq!(
        s.state.last_good.as_ref().map(|r| r.commit.as_str()),
        Some(a.as_str())
    );
    assert!(h.rendered(&a).is_some());
    // A second fetch of the same artifact is a cache hit.
    let (d, m) = manifest('a');
    assert!(h.fetch(&f1(), &d, &m).unwrap().cached);
    let run2 = deploy(&h, 'b').unwrap();
    assert_ne!(run.pid, run2.pid);
    let s = h.status().unwrap();
    assert_eq!(s.releases.len(), 2);
    assert_eq!(
        s.state.previous_good.as_ref().map(|r| r.commit.as_str()),
        Some(a.as_str())
    );
    // Prune keeps current and both known-good releases.
    deploy(&h, 'c').unwrap();
    let p = h.prune(&f1(), 0).unwrap();
    assert_eq!(p.removed, vec![a.clone()], "{p:?}");
    assert_eq!(h.status().unwrap().releases.len(), 2);
    let calls = h.calls();
    assert_eq!(&calls[..3], ["fetch-urls", "service-spec", "stop"]);
    assert_eq!(h.count("switch"), 3);
}

#[test]
fn the_real_rules_refuse_what_a_target_refuses() {
    let h = host();
    let e = h.switch(&f1(), &rel('a')).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NotFetched);
    assert_eq!(
        h.start(&start(7300)).unwrap_err().kind(),
        ErrorKind::NotFetched
    );
    deploy(&h, 'a').unwrap();
    let e = h.start(&start(7300)).unwrap_err();
    assert!(e.to_string().contains("already running"), "{e}");
    // Readiness is waited for on the instance's own port.
    let e = h.wait_ready(&ready(7301)).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Timeout);
    // A manifest that does not hash to its digest is not fetched.
    let (_, m) = manifest('b');
    let e = h.fetch(&f1(), &Digest::of(b"x"), &m).unwrap_err();
    assert!(e.to_string().contains("hashes to"), "{e}");
    h.set_free_bytes(1 << 20);
    let e = h
        .preflight(&PreflightRequest {
            min_free_bytes: 1 << 30,
            node: None,
            fence: None,
        })
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Preflight);
    let e = h.read_file("/srv/mem/h1/nope").unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Io);
}

#[test]
fn an_operation_fails_on_its_nth_call_only() {
    let h = host();
    h.fail_on_call("switch", 2, ErrorKind::Io, "disk full");
    deploy(&h, 'a').unwrap();
    let e = deploy(&h, 'b').unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Io);
    assert_eq!(e.to_string(), "disk full");
    // Nothing of the failed switch happened; the third call goes through.
    assert_eq!(
        h.snapshot().current.as_deref(),
        Some("a".repeat(40).as_str())
    );
    h.switch(&f1(), &rel('b')).unwrap();
    h.fail_always("status", ErrorKind::Transport, "gone");
    assert!(h.status().is_err() && h.status().is_err());
    h.clear_faults();
    h.status().unwrap();
}

#[test]
fn a_start_that_never_becomes_ready_times_out_at_once() {
    let h = host();
    h.set_startup(Some(&"b".repeat(40)), Startup::NeverReady);
    deploy(&h, 'a').unwrap();
    let t0 = Instant::now();
    let e = deploy(&h, 'b').unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Timeout);
    assert!(t0.elapsed() < Duration::from_secs(5), "it slept");
    // The instance runs (and must be stopped), it only never binds.
    assert!(h.snapshot().running.is_some());
}

#[test]
fn a_crash_after_start_is_a_dead_service() {
    let h = host();
    h.set_startup(None, Startup::CrashAfterStart);
    let e = deploy(&h, 'a').unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Died);
    assert!(h.snapshot().running.is_none());
    // A crash later, of a healthy instance.
    h.set_startup(None, Startup::Ready);
    h.start(&start(7300)).unwrap();
    h.wait_ready(&ready(7300)).unwrap();
    h.crash();
    assert!(h.status().unwrap().running.is_none());
    assert_eq!(
        h.wait_ready(&ready(7300)).unwrap_err().kind(),
        ErrorKind::Died
    );
}

#[test]
fn a_host_becomes_unreachable() {
    let h = host();
    h.unreachable_after(2);
    h.status().unwrap();
    h.status().unwrap();
    let e = h.status().unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Transport);
    assert!(e.to_string().contains("unreachable"), "{e}");
    h.set_reachable(true);
    h.status().unwrap();
    h.set_reachable(false);
    assert!(h.stop(&f1()).is_err());
}

#[test]
fn latency_is_applied_per_operation() {
    let h = host();
    h.set_latency(Some("status"), Duration::from_millis(30));
    let t0 = Instant::now();
    h.status().unwrap();
    assert!(t0.elapsed() >= Duration::from_millis(30));
    h.set_latency(None, Duration::from_millis(20));
    let t0 = Instant::now();
    h.stop(&f1()).unwrap();
    assert!(t0.elapsed() >= Duration::from_millis(20));
}

#[test]
fn logs_and_exec_answer_what_was_set() {
    let h = host();
    h.set_log(&"a".repeat(40), "{\"level\":50}\n");
    let run = deploy(&h, 'a').unwrap();
    assert_eq!(h.read_file(&run.log).unwrap(), b"{\"level\":50}\n");
    h.set_exec_output(ExecOutput {
        status: 3,
        stdout: "o".into(),
        stderr: "e".into(),
    });
    assert_eq!(
        h.exec("true", &Default::default(), Duration::from_secs(1))
            .unwrap()
            .status,
        3
    );
}

#[test]
fn it_speaks_the_protocol_hello() {
    let h = host();
    let r = h
        .call(HostRequest::Hello(crate::protocol::Hello::ours()))
        .unwrap();
    assert!(matches!(r, HostResponse::Hello(_)));
    let e = h
        .call(HostRequest::Hello(crate::protocol::Hello {
            protocol: crate::protocol::PROTOCOL_VERSION + 1,
            version: "x".into(),
        }))
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Version);
}

#[test]
fn health_follows_the_instance() {
    let h = host();
    let r = h.health().unwrap();
    assert_eq!((r.current, r.pid, r.port_bound), (None, None, None));
    let run = deploy(&h, 'a').unwrap();
    let r = h.health().unwrap();
    assert_eq!(r.current.as_deref(), Some("a".repeat(40).as_str()));
    assert_eq!(
        (r.pid, r.port, r.port_bound),
        (Some(run.pid), Some(7300), Some(true))
    );
    h.crash();
    assert_eq!(h.health().unwrap().pid, None);
}

#[test]
fn an_older_fence_is_refused_and_changes_nothing() {
    let h = host();
    deploy(&h, 'a').unwrap();
    // A newer deploy reaches the host.
    h.stop(&fence(2)).unwrap();
    let before = h.snapshot();
    let (d, m) = manifest('b');
    for e in [
        h.fetch(&f1(), &d, &m).map(|_| ()),
        h.stop(&f1()).map(|_| ()),
        h.switch(&f1(), &rel('a')).map(|_| ()),
        h.start(&start(7300)).map(|_| ()),
        h.mark_good(&f1(), &rel('a')).map(|_| ()),
        h.prune(&f1(), 0).map(|_| ()),
    ] {
        assert_eq!(e.unwrap_err().kind(), ErrorKind::Fenced);
    }
    assert_eq!(h.snapshot(), before, "a refused request changed the host");
    assert_eq!(h.snapshot().state.fences.get("e"), Some(&fence(2)));
    // The same token from another deploy is refused too; a newer one is taken.
    let mut other = fence(2);
    other.deploy_id = model::names::DeployId::parse("someone-else").unwrap();
    assert_eq!(h.stop(&other).unwrap_err().kind(), ErrorKind::Fenced);
    h.stop(&fence(3)).unwrap();
}

#[test]
fn a_release_is_acted_on_only_as_the_build_it_was_fetched_as() {
    let h = host();
    deploy(&h, 'a').unwrap();
    // The same commit named with another manifest digest (a record pairing them).
    let forged = ReleaseRef {
        commit: rel('a').commit,
        manifest: Digest::of(b"another build"),
    };
    for e in [
        h.switch(&f1(), &forged).map(|_| ()),
        h.mark_good(&f1(), &forged).map(|_| ()),
        h.service_spec(&forged).map(|_| ()),
    ] {
        assert_eq!(e.unwrap_err().kind(), ErrorKind::NotFetched);
    }
}

#[test]
fn a_parked_caller_leaves_its_step_in_progress_recorded() {
    let h = Arc::new(host());
    deploy(&h, 'a').unwrap();
    let (d, m) = manifest('b');
    h.fetch(&f1(), &d, &m).unwrap();
    let ran = Arc::new(std::sync::atomic::AtomicU32::new(0));
    let r = ran.clone();
    h.on_call("status", move || {
        r.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    });
    h.status().unwrap();
    h.status().unwrap();
    assert_eq!(ran.load(std::sync::atomic::Ordering::SeqCst), 1, "once");
    let parked = h.park_on_call("switch");
    let h2 = h.clone();
    std::thread::spawn(move || h2.switch(&f1(), &rel('b')));
    assert!(parked.wait(Duration::from_secs(5)));
    let s = h.snapshot();
    let step = s.state.step.expect("step in progress");
    assert_eq!(step.op, "switch");
    assert_eq!(step.release.as_deref(), Some("b".repeat(40).as_str()));
    // The switch never happened.
    assert_eq!(s.current.as_deref(), Some("a".repeat(40).as_str()));
    // A completed mutating step clears its record.
    let h = host();
    deploy(&h, 'a').unwrap();
    assert!(h.snapshot().state.step.is_none());
}

#[test]
fn install_puts_a_running_known_good_release_on_the_host() {
    let h = host();
    let (d, m) = manifest('a');
    let r = ReleaseRef::of(d, &m).unwrap();
    h.install(&r);
    let s = h.status().unwrap();
    assert_eq!(s.current.as_deref(), Some(r.commit.as_str()));
    assert_eq!(s.state.last_good.as_ref(), Some(&r));
    let run = s.running.expect("running");
    assert_eq!(run.port, Some(7300));
    h.wait_ready(&ready(7300)).unwrap();
    assert!(h.fetch(&f1(), &d, &m).unwrap().cached);
}

#[test]
fn the_pool_counts_who_is_out_and_fails_on_request() {
    let p = MemoryPool::new();
    let (a, b) = (host(), MemoryHost::new("h2", &cfg()));
    crate::pool::Pool::depool(&p, &a, None).unwrap();
    crate::pool::Pool::depool(&p, &b, None).unwrap();
    crate::pool::Pool::repool(&p, &a, None).unwrap();
    assert_eq!(p.max_out_seen(), 2);
    assert!(p.is_out("h2") && !p.is_out("h1"));
    p.set_out("h3", true);
    let all = ["h1".to_string(), "h2".into(), "h3".into()];
    assert_eq!(
        crate::pool::Pool::out_of_pool(&p, &all).unwrap(),
        ["h2", "h3"]
    );
    p.fail_next("repool", "h2", "lb said no");
    let e = crate::pool::Pool::repool(&p, &b, None).unwrap_err();
    assert!(e.to_string().contains("lb said no"), "{e}");
    assert!(p.is_out("h2"), "a failed repool leaves it out");
    crate::pool::Pool::repool(&p, &b, None).unwrap();
    assert_eq!(p.calls().len(), 5);
}
