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

// The layer store: releases share each layer's tree by hard links.

use std::os::unix::fs::{MetadataExt, PermissionsExt};

use artifact::manifest::{Layer, LayerKind, Manifest, SourceInfo};
use artifact::store::fs::FsStore;
use artifact::store::{PutBody, Store};
use artifact::unpack::UnpackLimits;

/// One entry of a test layer: a file (path, body) or a symlink (path, `-> target`).
type Entry<'a> = (&'a str, &'a str);

/// A gzip layer of `entries` (a body starting `-> ` makes a symlink), stored in `store`.
fn layer(store: &FsStore, kind: LayerKind, entries: &[Entry]) -> Layer {
    let mut tar = tar::Builder::new(Vec::new());
    for (path, body) in entries {
        let mut h = tar::Header::new_gnu();
        h.set_mode(0o644);
        if let Some(target) = body.strip_prefix("-> ") {
            h.set_entry_type(tar::EntryType::Symlink);
            h.set_size(0);
            tar.append_link(&mut h, path, target).unwrap();
        } else {
            h.set_size(body.len() as u64);
            h.set_cksum();
            tar.append_data(&mut h, path, body.as_bytes()).unwrap();
        }
    }
    let plain = tar.into_inner().unwrap();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    std::io::Write::write_all(&mut gz, &plain).unwrap();
    let blob = gz.finish().unwrap();
    let digest = Digest::of(&blob);
    store
        .put_if_absent(
            &artifact::keys::blob(&digest),
            PutBody::Bytes(blob.clone()),
            None,
        )
        .unwrap();
    Layer {
        kind,
        media_type: "application/vnd.restbase-deploy.layer.v1.tar+gzip".into(),
        digest,
        size: blob.len() as u64,
        diff_id: Digest::of(&plain),
        entries: entries.len() as u64,
    }
}

/// The manifest of commit `c...c` with these layers, and its digest.
fn manifest(c: char, layers: Vec<Layer>) -> (Digest, Manifest) {
    let m = Manifest {
        format: artifact::manifest::MANIFEST_FORMAT,
        service: "svc".into(),
        source: SourceInfo {
            commit: c.to_string().repeat(40),
            tree: "0".repeat(40),
            commit_time: 0,
            author: "a <a@example.org>".into(),
            subject: "s".into(),
        },
        layers,
        platform: None,
        deps: None,
        storage: None,
        labels: Default::default(),
    };
    (Digest::of(&m.to_canonical_json()), m)
}

const DEPS: &[Entry] = &[
    ("node_modules/dep/package.json", "{\"name\":\"dep\"}"),
    ("node_modules/dep/index.js", "module.exports = 1;\n"),
    ("node_modules/.bin/dep", "-> ../dep/index.js"),
];

fn source(rev: &str) -> Vec<(String, String)> {
    vec![
        ("deploy/service.yaml".into(), "name: svc\n".into()),
        ("REVISION".into(), rev.into()),
    ]
}

fn src_layer(store: &FsStore, rev: &str) -> Layer {
    let s = source(rev);
    let e: Vec<Entry> = s.iter().map(|(p, b)| (p.as_str(), b.as_str())).collect();
    layer(store, LayerKind::Source, &e)
}

struct Bed {
    _dir: tempfile::TempDir,
    store: FsStore,
    root: HostRoot,
}

fn layer_bed() -> Bed {
    let dir = tempfile::tempdir().unwrap();
    let store = FsStore::open(dir.path().join("store")).unwrap();
    let root = HostRoot::new(dir.path().join("host"));
    Bed {
        _dir: dir,
        store,
        root,
    }
}

impl Bed {
    fn fetch(&self, m: &(Digest, Manifest)) -> Result<crate::protocol::FetchReport, HostError> {
        self.root
            .fetch(&self.store, &m.0, &m.1, UnpackLimits::default())
    }

    fn release(&self, m: &(Digest, Manifest)) -> ReleaseRef {
        ReleaseRef {
            commit: CommitId::parse(&m.1.source.commit).unwrap(),
            manifest: m.0,
        }
    }

    fn tree(&self, l: &Layer) -> std::path::PathBuf {
        self.root.root().join("layers").join(l.digest.hex())
    }

    /// Everything under the host root but logs, as sorted relative paths.
    fn listing(&self) -> Vec<String> {
        let mut out = Vec::new();
        let base = self.root.root();
        let mut stack = vec![base.to_path_buf()];
        while let Some(d) = stack.pop() {
            for e in fs::read_dir(&d).into_iter().flatten().flatten() {
                let p = e.path();
                let rel = p.strip_prefix(base).unwrap().display().to_string();
                if rel == "state.json" || rel.starts_with("run/") {
                    continue;
                }
                if e.file_type().unwrap().is_dir() {
                    stack.push(p);
                }
                out.push(rel);
            }
        }
        out.sort();
        out
    }
}

fn ino(p: &Path) -> u64 {
    fs::metadata(p).unwrap().ino()
}

#[test]
fn two_releases_share_the_dependency_tree_by_hard_links_and_a_source_change_downloads_only_its_source()
 {
    let b = layer_bed();
    let deps = layer(&b.store, LayerKind::Deps, DEPS);
    let a = manifest('a', vec![src_layer(&b.store, "a"), deps.clone()]);
    let c = manifest('c', vec![src_layer(&b.store, "c"), deps.clone()]);
    let ra = b.fetch(&a).unwrap();
    assert_eq!(ra.downloaded, a.1.layers[0].size + deps.size, "{ra:?}");
    let rc = b.fetch(&c).unwrap();
    // Only the source layer moved; the dependency tree was already on the host.
    assert_eq!(rc.downloaded, c.1.layers[0].size, "{rc:?}");
    assert_eq!(rc.entries, ra.entries, "{rc:?} {ra:?}");
    let f = "node_modules/dep/index.js";
    let (pa, pc) = (
        b.root.release_dir(&a.1.source.commit).join(f),
        b.root.release_dir(&c.1.source.commit).join(f),
    );
    assert_eq!(ino(&pa), ino(&pc), "not the same inode");
    assert_eq!(ino(&pa), ino(&b.tree(&deps).join(f)));
    assert_eq!(fs::metadata(&pa).unwrap().nlink(), 3, "tree + two releases");
    // Shared files are read-only; each release's own directories are its own.
    assert_eq!(
        fs::metadata(&pa).unwrap().permissions().mode() & 0o777,
        0o444
    );
    assert_ne!(ino(pa.parent().unwrap()), ino(pc.parent().unwrap()));
    // The source differs; the symlink is recreated in each release.
    let rev = |m: &(Digest, Manifest)| {
        fs::read_to_string(b.root.release_dir(&m.1.source.commit).join("REVISION")).unwrap()
    };
    assert_eq!((rev(&a), rev(&c)), ("a".to_string(), "c".to_string()));
    let link = b
        .root
        .release_dir(&c.1.source.commit)
        .join("node_modules/.bin/dep");
    assert_eq!(fs::read_link(&link).unwrap(), Path::new("../dep/index.js"));
    assert_eq!(fs::read_to_string(&link).unwrap(), "module.exports = 1;\n");
    // The release records the layers it links.
    let meta = b.root.release_meta(&c.1.source.commit).unwrap();
    assert_eq!(meta.layers, vec![c.1.layers[0].digest, deps.digest]);
    // Fetching again is a no-op.
    assert!(b.fetch(&c).unwrap().cached);
}

#[test]
fn pruning_a_release_keeps_the_tree_another_uses_and_pruning_its_last_user_removes_it() {
    let b = layer_bed();
    let deps = layer(&b.store, LayerKind::Deps, DEPS);
    let deps2 = layer(
        &b.store,
        LayerKind::Deps,
        &[("node_modules/dep/index.js", "module.exports = 2;\n")],
    );
    let a = manifest('a', vec![src_layer(&b.store, "a"), deps.clone()]);
    let c = manifest('c', vec![src_layer(&b.store, "c"), deps.clone()]);
    let e = manifest('e', vec![src_layer(&b.store, "e"), deps2.clone()]);
    b.fetch(&a).unwrap();
    b.fetch(&c).unwrap();
    b.root.switch(&b.release(&c)).unwrap();
    let r = b.root.prune(0).unwrap();
    assert_eq!(r.removed, vec![a.1.source.commit.clone()], "{r:?}");
    assert_eq!(r.layers_removed, vec![a.1.layers[0].digest], "{r:?}");
    assert_eq!(r.layers_kept, 2, "{r:?}");
    assert!(!b.root.release_dir(&a.1.source.commit).exists());
    // The release still using the tree works: its files and the tree are intact.
    let f = b
        .root
        .release_dir(&c.1.source.commit)
        .join("node_modules/dep/index.js");
    assert_eq!(fs::read_to_string(&f).unwrap(), "module.exports = 1;\n");
    assert!(b.tree(&deps).join("node_modules/dep/index.js").is_file());
    assert_eq!(fs::metadata(&f).unwrap().nlink(), 2);
    // A third release with other dependencies; once it is current, c's trees have no user.
    b.fetch(&e).unwrap();
    b.root.switch(&b.release(&e)).unwrap();
    let r = b.root.prune(0).unwrap();
    assert_eq!(r.removed, vec![c.1.source.commit.clone()], "{r:?}");
    let mut gone = r.layers_removed.clone();
    gone.sort();
    let mut want = vec![c.1.layers[0].digest, deps.digest];
    want.sort();
    assert_eq!(gone, want, "{r:?}");
    for l in [&deps, &c.1.layers[0]] {
        assert!(!b.tree(l).exists(), "{} left", l.digest);
        assert!(
            !b.root
                .root()
                .join("cache/blobs/sha256")
                .join(l.digest.hex())
                .exists()
        );
    }
    assert_eq!(
        fs::read_to_string(
            b.root
                .release_dir(&e.1.source.commit)
                .join("node_modules/dep/index.js")
        )
        .unwrap(),
        "module.exports = 2;\n"
    );
    // Nothing left but what e uses.
    let l = b.listing();
    assert!(
        l.iter()
            .filter(|p| p.starts_with("layers/") && !p[7..].contains('/') && *p != "layers/.lock")
            .all(|p| p.contains(&deps2.digest.hex()) || p.contains(&e.1.layers[0].digest.hex())),
        "{l:#?}"
    );
}

#[test]
fn a_fetch_killed_mid_layer_leaves_nothing_a_later_fetch_trusts() {
    let b = layer_bed();
    let deps = layer(&b.store, LayerKind::Deps, DEPS);
    let a = manifest('a', vec![src_layer(&b.store, "a"), deps.clone()]);
    // The store's blob cut half way (a connection that died): refused, nothing kept.
    let key = artifact::keys::blob(&deps.digest);
    let blob_path = b.root.root().parent().unwrap().join("store").join(&key);
    let whole = fs::read(&blob_path).unwrap();
    fs::write(&blob_path, &whole[..whole.len() / 2]).unwrap();
    let e = b.fetch(&a).unwrap_err();
    assert!(matches!(e, HostError::Unpack(_)), "{e}");
    assert!(!b.tree(&deps).exists());
    assert!(!b.root.release_dir(&a.1.source.commit).exists());
    let l = b.listing();
    assert!(
        l.iter().all(|p| !p.contains(".partial-")),
        "staging left: {l:#?}"
    );
    fs::write(&blob_path, &whole).unwrap();
    // What a killed process leaves (no destructor ran): a staging directory, and a tree
    // renamed into place whose record was never written, holding a file of another build.
    let layers = b.root.root().join("layers");
    let staging = layers.join(format!(".{}.partial-0123456789abcdef", deps.digest.hex()));
    fs::create_dir_all(staging.join("node_modules")).unwrap();
    fs::create_dir_all(b.tree(&deps).join("node_modules/dep")).unwrap();
    fs::write(b.tree(&deps).join("node_modules/dep/index.js"), "half").unwrap();
    fs::write(b.tree(&deps).join("node_modules/stale.js"), "stale").unwrap();
    b.fetch(&a).unwrap();
    let rel = b.root.release_dir(&a.1.source.commit);
    assert_eq!(
        fs::read_to_string(rel.join("node_modules/dep/index.js")).unwrap(),
        "module.exports = 1;\n"
    );
    assert!(!rel.join("node_modules/stale.js").exists());
    assert!(
        !staging.exists(),
        "the killed fetch's staging was not swept"
    );
    // A recorded tree that changed on the host (a file removed) is not linked as it is: the
    // fetch notices the count, unpacks it afresh and the release is whole.
    fs::remove_file(b.tree(&deps).join("node_modules/dep/package.json")).unwrap();
    let c = manifest('c', vec![src_layer(&b.store, "c"), deps.clone()]);
    b.fetch(&c).unwrap();
    let rc = b.root.release_dir(&c.1.source.commit);
    assert!(rc.join("node_modules/dep/package.json").is_file());
    // A staging directory of a killed release composition, and of a layer, are swept by
    // prune when no fetch holds the store.
    let stale_release = b
        .root
        .root()
        .join("releases")
        .join(format!(".{}.partial-0123456789abcdef", "f".repeat(40)));
    fs::create_dir_all(&stale_release).unwrap();
    fs::create_dir_all(&staging).unwrap();
    b.root.prune(5).unwrap();
    assert!(!stale_release.exists() && !staging.exists());
    // While a fetch holds the store, prune removes no layer.
    let held = b.root.layers_shared().unwrap();
    b.root.switch(&b.release(&c)).unwrap();
    let r = b.root.prune(0).unwrap();
    assert!(r.layers_busy && r.layers_removed.is_empty(), "{r:?}");
    drop(held);
    let r = b.root.prune(0).unwrap();
    assert_eq!(r.layers_removed, vec![a.1.layers[0].digest], "{r:?}");
}

#[test]
fn a_hostile_layer_is_refused_before_anything_is_linked() {
    let b = layer_bed();
    let deps = layer(&b.store, LayerKind::Deps, DEPS);
    let a = manifest('a', vec![src_layer(&b.store, "a"), deps.clone()]);
    b.fetch(&a).unwrap();
    b.root.switch(&b.release(&a)).unwrap();
    let before = b.listing();
    let cases: Vec<(char, Vec<Layer>, &str)> = vec![
        // A symlink out of the release, in one layer.
        (
            'b',
            vec![
                src_layer(&b.store, "b"),
                layer(
                    &b.store,
                    LayerKind::Deps,
                    &[("node_modules/x", "-> ../../etc")],
                ),
            ],
            "leaves the destination",
        ),
        // Each layer alone is fine; together `e -> d/..` climbs out through `d -> .`.
        (
            'c',
            vec![
                layer(&b.store, LayerKind::Source, &[("d", "-> .")]),
                layer(&b.store, LayerKind::Deps, &[("e", "-> d/..")]),
            ],
            "leaves the destination",
        ),
        // A file of the dependency layer already in the source layer.
        (
            'e',
            vec![
                layer(
                    &b.store,
                    LayerKind::Source,
                    &[("node_modules/dep/index.js", "shadow")],
                ),
                deps.clone(),
            ],
            "already exists",
        ),
    ];
    for (c, layers, why) in cases {
        let m = manifest(c, layers);
        let e = b.fetch(&m).unwrap_err();
        assert!(e.to_string().contains(why), "{c}: {e}");
        assert!(!b.root.release_dir(&m.1.source.commit).exists(), "{c}");
        assert_eq!(
            b.root.current().as_deref(),
            Some(a.1.source.commit.as_str())
        );
        // The shared tree is as it was.
        assert_eq!(
            fs::read_to_string(b.tree(&deps).join("node_modules/dep/index.js")).unwrap(),
            "module.exports = 1;\n"
        );
    }
    // No release, no staging; the one-layer hostile tree was never made. (Trees of the
    // layers that were fine alone stay until prune.)
    let after = b.listing();
    assert!(
        after
            .iter()
            .all(|p| !p.starts_with("releases/") || before.contains(p)),
        "{after:#?}"
    );
    assert!(after.iter().all(|p| !p.contains(".partial-")), "{after:#?}");
    b.root.prune(5).unwrap();
    assert_eq!(
        b.listing()
            .iter()
            .filter(|p| p.starts_with("layers/"))
            .count(),
        before.iter().filter(|p| p.starts_with("layers/")).count()
    );
}
