//! One conformance suite for every `Store` backend: the directory store (in a temp dir) and the
//! S3 store against a real S3-compatible server.
//!
//! The S3 half needs a server: `eval "$(ci/s3-server start)"` provides one and exports
//! `TEST_S3_ENDPOINT` (or `AWS_ENDPOINT_URL`), `TEST_S3_BUCKET` and credentials. Without them the
//! S3 tests print why they skip, except under `CI=true`, where they fail. Each S3 test works
//! under its own prefix (`<run>/<hash of the test name>/`), so runs never see each other's objects.
//!
//! The failure tests (server down, server killed mid-upload) start and kill their own `s3s-fs`
//! process on a free port, with the same credentials.

use std::io::Read;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Barrier, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use artifact::Digest;
use artifact::store::fs::FsStore;
use artifact::store::s3::S3Store;
use artifact::store::{ETag, PutBody, PutOutcome, Store, StoreError, StoreOptions};

/// Multipart settings for tests: S3 needs parts of at least 5 MiB (but the last).
const PART: u64 = 5 << 20;
const THRESHOLD: u64 = 6 << 20;

/// Deterministic pseudo-random bytes (xorshift), so large objects are not trivially compressible.
fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}

fn read_all(s: &dyn Store, key: &str) -> Vec<u8> {
    s.get_bytes(key)
        .unwrap_or_else(|e| panic!("get {key}: {e}"))
        .0
}

fn keys(s: &dyn Store, prefix: &str) -> Vec<String> {
    s.list(prefix).unwrap().into_iter().map(|m| m.key).collect()
}

/// The suite: each function checks one part of the contract on any backend.
mod suite {
    use super::*;

    pub fn put_if_absent_creates_once(s: &dyn Store) {
        let first = b"first version".to_vec();
        let d = Digest::of(&first);
        assert_eq!(
            s.put_if_absent("obj/a", PutBody::Bytes(first.clone()), Some(&d))
                .unwrap(),
            PutOutcome::Created
        );
        // A second create never overwrites, whatever its content.
        let second = b"second version".to_vec();
        let d2 = Digest::of(&second);
        assert_eq!(
            s.put_if_absent("obj/a", PutBody::Bytes(second), Some(&d2))
                .unwrap(),
            PutOutcome::AlreadyExists
        );
        assert_eq!(read_all(s, "obj/a"), first);
        // Without a digest, and from a file.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("body");
        std::fs::write(&path, b"from a file").unwrap();
        assert_eq!(
            s.put_if_absent("obj/b", PutBody::File(path.clone()), None)
                .unwrap(),
            PutOutcome::Created
        );
        assert_eq!(
            s.put_if_absent("obj/b", PutBody::File(path), None).unwrap(),
            PutOutcome::AlreadyExists
        );
        assert_eq!(read_all(s, "obj/b"), b"from a file");
    }

    pub fn checksum_mismatch_is_refused_and_invisible(s: &dyn Store) {
        let wrong = Digest::of(b"something else");
        match s.put_if_absent(
            "sum/small",
            PutBody::Bytes(b"payload".to_vec()),
            Some(&wrong),
        ) {
            Err(StoreError::Checksum { key, .. }) => assert_eq!(key, "sum/small"),
            other => panic!("expected a checksum error, got {other:?}"),
        }
        // Large enough for a multipart upload on S3: refused before completion.
        let big = noise((THRESHOLD + PART) as usize, 7);
        match s.put_if_absent("sum/big", PutBody::Bytes(big), Some(&wrong)) {
            Err(StoreError::Checksum { .. }) => {}
            other => panic!("expected a checksum error, got {other:?}"),
        }
        assert!(s.head("sum/small").unwrap().is_none());
        assert!(s.head("sum/big").unwrap().is_none());
        assert!(
            keys(s, "sum/").is_empty(),
            "nothing visible after refused puts: {:?}",
            keys(s, "sum/")
        );
        // The key is still free for the right content.
        let d = Digest::of(b"payload");
        assert_eq!(
            s.put_if_absent("sum/small", PutBody::Bytes(b"payload".to_vec()), Some(&d))
                .unwrap(),
            PutOutcome::Created
        );
    }

    pub fn get_head_list_delete(s: &dyn Store) {
        let objs: &[(&str, &[u8])] = &[
            ("list/x1", b"1"),
            ("list/x2/y", b"22"),
            ("list/x10", b"333"),
            ("list/z", b"4444"),
            ("other/q", b"5"),
        ];
        // Created in a shuffled order; listings come back sorted.
        for i in [3, 0, 4, 2, 1] {
            let (k, v) = objs[i];
            assert_eq!(
                s.put_if_absent(k, PutBody::Bytes(v.to_vec()), None)
                    .unwrap(),
                PutOutcome::Created
            );
        }
        assert_eq!(
            keys(s, "list/"),
            vec!["list/x1", "list/x10", "list/x2/y", "list/z"]
        );
        // A prefix is a string prefix, not only a directory.
        assert_eq!(keys(s, "list/x1"), vec!["list/x1", "list/x10"]);
        assert_eq!(keys(s, "list/x"), vec!["list/x1", "list/x10", "list/x2/y"]);
        assert!(keys(s, "nothing/").is_empty());
        assert!(keys(s, "list/q").is_empty());
        let all = keys(s, "");
        assert_eq!(
            all,
            vec!["list/x1", "list/x10", "list/x2/y", "list/z", "other/q"]
        );

        let listed = s.list("list/").unwrap();
        for m in &listed {
            let head = s.head(&m.key).unwrap().expect("listed object has metadata");
            assert_eq!(&head, m, "head and list agree");
            let mut g = s.get(&m.key).unwrap();
            assert_eq!(g.meta, head, "get and head agree");
            let mut body = Vec::new();
            g.reader.read_to_end(&mut body).unwrap();
            let want = objs.iter().find(|(k, _)| *k == m.key).unwrap().1;
            assert_eq!(body, want);
            assert_eq!(m.size, want.len() as u64);
            assert!(!m.etag.0.is_empty());
        }
        s.delete("list/x10").unwrap();
        assert!(s.head("list/x10").unwrap().is_none());
        s.delete("list/x10").unwrap(); // absent: not an error
        assert_eq!(keys(s, "list/x1"), vec!["list/x1"]);
    }

    pub fn put_cas_sequence_and_conflicts(s: &dyn Store) {
        let k = "cas/state.json";
        let e1 = s.put_cas(k, b"v1", None).unwrap();
        assert_eq!(s.head(k).unwrap().unwrap().etag, e1);
        assert!(matches!(
            s.put_cas(k, b"v2", None),
            Err(StoreError::Conflict { .. })
        ));
        let e2 = s.put_cas(k, b"v2", Some(&e1)).unwrap();
        assert_ne!(e1, e2);
        assert!(matches!(
            s.put_cas(k, b"v3", Some(&e1)),
            Err(StoreError::Conflict { .. })
        ));
        assert_eq!(read_all(s, k), b"v2");
        assert_eq!(s.head(k).unwrap().unwrap().etag, e2);
        // Expecting a version of an absent key.
        assert!(matches!(
            s.put_cas("cas/absent", b"x", Some(&e1)),
            Err(StoreError::Conflict { .. })
        ));
        assert!(s.head("cas/absent").unwrap().is_none());
        // put_if_absent and put_cas agree on what "exists" means.
        assert_eq!(
            s.put_if_absent(k, PutBody::Bytes(b"v9".to_vec()), None)
                .unwrap(),
            PutOutcome::AlreadyExists
        );
        // Conditional delete.
        assert!(matches!(
            s.delete_if(k, &e1),
            Err(StoreError::Conflict { .. })
        ));
        assert_eq!(read_all(s, k), b"v2");
        s.delete_if(k, &e2).unwrap();
        assert!(s.head(k).unwrap().is_none());
        assert!(matches!(
            s.delete_if(k, &e2),
            Err(StoreError::Conflict { .. })
        ));
        // And it can be created again.
        s.put_cas(k, b"v1", None).unwrap();
    }

    /// `threads` writers race `rounds` times; returns the number of winners of each round of
    /// compare-and-swap and of create-if-absent.
    pub fn race(s: &dyn Store, threads: usize, rounds: usize) -> (Vec<usize>, Vec<usize>) {
        let k = "race/state";
        s.put_cas(k, b"round 0", None).unwrap();
        let mut cas_winners = Vec::new();
        let mut create_winners = Vec::new();
        for round in 0..rounds {
            let etag = s.head(k).unwrap().unwrap().etag;
            let barrier = Arc::new(Barrier::new(threads));
            let outcomes: Vec<(bool, bool)> = std::thread::scope(|sc| {
                let hs: Vec<_> = (0..threads)
                    .map(|t| {
                        let (etag, barrier) = (etag.clone(), barrier.clone());
                        sc.spawn(move || {
                            let body = format!("round {} by {t}", round + 1);
                            barrier.wait();
                            let cas = match s.put_cas(k, body.as_bytes(), Some(&etag)) {
                                Ok(_) => true,
                                Err(StoreError::Conflict { .. }) => false,
                                Err(e) => panic!("put_cas: {e}"),
                            };
                            let create_key = format!("race/create-{round}");
                            let created = match s.put_if_absent(
                                &create_key,
                                PutBody::Bytes(body.into_bytes()),
                                None,
                            ) {
                                Ok(PutOutcome::Created) => true,
                                Ok(PutOutcome::AlreadyExists) => false,
                                Err(e) => panic!("put_if_absent: {e}"),
                            };
                            (cas, created)
                        })
                    })
                    .collect();
                hs.into_iter().map(|h| h.join().unwrap()).collect()
            });
            cas_winners.push(outcomes.iter().filter(|o| o.0).count());
            create_winners.push(outcomes.iter().filter(|o| o.1).count());
        }
        (cas_winners, create_winners)
    }

    pub fn concurrent_writers_exactly_one_wins(s: &dyn Store) {
        let (cas, create) = race(s, 8, 10);
        assert!(
            cas.iter().all(|&n| n == 1),
            "compare-and-swap winners per round: {cas:?} (want exactly 1)"
        );
        assert!(
            create.iter().all(|&n| n == 1),
            "create-if-absent winners per round: {create:?} (want exactly 1)"
        );
    }

    pub fn large_object_round_trip(s: &dyn Store) {
        let data = noise((2 * PART + THRESHOLD / 3 + 123) as usize, 42);
        let digest = Digest::of(&data);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("layer.tar.gz");
        std::fs::write(&path, &data).unwrap();
        let key = format!("blobs/sha256/{}", digest.hex());
        assert_eq!(
            s.put_if_absent(&key, PutBody::File(path.clone()), Some(&digest))
                .unwrap(),
            PutOutcome::Created
        );
        assert_eq!(
            s.put_if_absent(&key, PutBody::File(path), Some(&digest))
                .unwrap(),
            PutOutcome::AlreadyExists
        );
        let g = s.get(&key).unwrap();
        assert_eq!(g.meta.size, data.len() as u64);
        let mut r = artifact::digest::HashingReader::new(g.reader);
        std::io::copy(&mut r, &mut std::io::sink()).unwrap();
        assert_eq!(
            r.finish(),
            (digest, data.len() as u64),
            "streamed content matches its digest"
        );
        assert_eq!(s.head(&key).unwrap().unwrap().size, data.len() as u64);
    }

    pub fn invalid_keys_are_refused(s: &dyn Store) {
        let bad = [
            "", "/abs", "a//b", "a/../b", "../a", "./a", "a/.", "a/", "a\\b", "nul\0x",
        ];
        let e = ETag("x".into());
        for k in bad {
            let inv = |r: Result<(), StoreError>| {
                assert!(matches!(r, Err(StoreError::InvalidKey(_))), "{k:?}: {r:?}")
            };
            inv(s
                .put_if_absent(k, PutBody::Bytes(b"x".to_vec()), None)
                .map(drop));
            inv(s.put_cas(k, b"x", None).map(drop));
            inv(s.put_cas(k, b"x", Some(&e)).map(drop));
            inv(s.get(k).map(drop));
            inv(s.head(k).map(drop));
            inv(s.delete(k));
            inv(s.delete_if(k, &e));
            inv(s.presign_get(k, Duration::from_secs(60)).map(drop));
        }
        assert!(
            keys(s, "").is_empty(),
            "no object was created: {:?}",
            keys(s, "")
        );
    }

    pub fn missing_objects(s: &dyn Store) {
        match s.get("missing/key") {
            Err(e @ StoreError::NotFound { .. }) => {
                assert!(e.is_not_found());
                assert!(e.to_string().contains("missing/key"), "{e}");
            }
            other => panic!("expected NotFound, got {other:?}"),
        }
        assert!(matches!(
            s.get_bytes("missing/key"),
            Err(StoreError::NotFound { .. })
        ));
        assert_eq!(s.head("missing/key").unwrap(), None);
        s.delete("missing/key").unwrap();
        assert!(matches!(
            s.delete_if("missing/key", &ETag("x".into())),
            Err(StoreError::Conflict { .. })
        ));
    }

    pub fn presigned_get(s: &dyn Store) {
        s.put_if_absent("pre/obj", PutBody::Bytes(b"public bytes".to_vec()), None)
            .unwrap();
        let Some(url) = s.presign_get("pre/obj", Duration::from_secs(300)).unwrap() else {
            assert!(
                !s.location().starts_with("s3://"),
                "an S3 store must presign"
            );
            return;
        };
        // A plain HTTP client without credentials.
        let body = ureq::get(&url)
            .call()
            .unwrap()
            .body_mut()
            .read_to_vec()
            .unwrap();
        assert_eq!(body, b"public bytes");
        // A URL for a missing key fails; an expired URL is refused.
        let missing = s
            .presign_get("pre/missing", Duration::from_secs(300))
            .unwrap()
            .unwrap();
        assert!(ureq::get(&missing).call().is_err());
        let short = s
            .presign_get("pre/obj", Duration::from_secs(1))
            .unwrap()
            .unwrap();
        std::thread::sleep(Duration::from_secs(2));
        match ureq::get(&short).call() {
            Err(ureq::Error::StatusCode(code)) => {
                assert!((400..500).contains(&code), "status {code}")
            }
            other => panic!("an expired URL must be refused, got {other:?}"),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Backends.

fn fs_store() -> (tempfile::TempDir, FsStore) {
    let dir = tempfile::tempdir().unwrap();
    let s = FsStore::open(dir.path().join("store")).unwrap();
    (dir, s)
}

/// Where the shared test server is, from the environment `ci/s3-server start` prints.
#[derive(Clone, Debug)]
struct S3Env {
    endpoint: String,
    bucket: String,
}

fn s3_env(test: &str) -> Option<S3Env> {
    let var = |n: &str| std::env::var(n).ok().filter(|v| !v.is_empty());
    let endpoint = var("TEST_S3_ENDPOINT").or_else(|| var("AWS_ENDPOINT_URL"));
    let missing = match (
        &endpoint,
        var("AWS_ACCESS_KEY_ID"),
        var("AWS_SECRET_ACCESS_KEY"),
    ) {
        (None, _, _) => Some("TEST_S3_ENDPOINT / AWS_ENDPOINT_URL"),
        (_, None, _) => Some("AWS_ACCESS_KEY_ID"),
        (_, _, None) => Some("AWS_SECRET_ACCESS_KEY"),
        _ => None,
    };
    if let Some(m) = missing {
        let msg = format!(
            "{test}: no S3 test server ({m} unset); run `eval \"$(ci/s3-server start)\"` first"
        );
        if std::env::var("CI").as_deref() == Ok("true") {
            panic!("{msg}");
        }
        eprintln!("skipping: {msg}");
        return None;
    }
    Some(S3Env {
        endpoint: endpoint.unwrap(),
        bucket: var("TEST_S3_BUCKET").unwrap_or_else(|| "restbase-deploy-test".into()),
    })
}

/// A tag unique to this test process, so runs sharing a bucket never collide.
fn run_id() -> &'static str {
    static ID: OnceLock<String> = OnceLock::new();
    ID.get_or_init(|| {
        // Short: s3s-fs keeps per-object files named after base64(bucket + key), and file
        // names end at 255 bytes, so long prefixes break long keys there.
        let ns = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_nanos() as u64;
        format!(
            "t{:x}",
            (ns ^ (u64::from(std::process::id()) << 40)) & 0xff_ffff_ffff
        )
    })
}

fn s3_options(endpoint: &str) -> StoreOptions {
    StoreOptions {
        s3_endpoint: Some(endpoint.to_string()),
        s3_multipart_threshold: Some(THRESHOLD),
        s3_part_size: Some(PART),
        ..Default::default()
    }
}

fn s3_store(test: &str) -> Option<S3Store> {
    let env = s3_env(test)?;
    // The test's own prefix: a short hash of its name (see `run_id`).
    let tag = test.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    });
    let url = format!("{}/{}/{:08x}", env.bucket, run_id(), tag as u32);
    eprintln!("{test}: s3://{url}");
    Some(S3Store::from_url(&url, &s3_options(&env.endpoint)).unwrap())
}

macro_rules! conformance {
    ($($name:ident),* $(,)?) => {
        mod fs {
            $(
                #[test]
                fn $name() {
                    let (_dir, s) = super::fs_store();
                    super::suite::$name(&s);
                }
            )*
        }
        mod s3 {
            $(
                #[test]
                fn $name() {
                    let Some(s) = super::s3_store(stringify!($name)) else { return };
                    super::suite::$name(&s);
                }
            )*
        }
    };
}

conformance!(
    put_if_absent_creates_once,
    checksum_mismatch_is_refused_and_invisible,
    get_head_list_delete,
    put_cas_sequence_and_conflicts,
    large_object_round_trip,
    invalid_keys_are_refused,
    missing_objects,
    presigned_get,
);

#[test]
fn fs_concurrent_writers_exactly_one_wins() {
    let (_dir, s) = fs_store();
    suite::concurrent_writers_exactly_one_wins(&s);
}

/// Run with `--ignored` against AWS S3 or MinIO. s3s-fs 0.14.1 checks `If-Match` and
/// `If-None-Match: *` before it writes the body and renames without a lock, so concurrent
/// conditional writers can all "win"; the test below measures that gap on every run.
#[test]
#[ignore = "backend gap: s3s-fs 0.14.1 evaluates If-Match/If-None-Match without atomicity; run against AWS S3 or MinIO"]
fn s3_concurrent_writers_exactly_one_wins() {
    let Some(s) = s3_store("s3_concurrent_writers_exactly_one_wins") else {
        return;
    };
    suite::concurrent_writers_exactly_one_wins(&s);
}

/// What the S3 test server does with racing conditional writers: never zero winners, and every
/// loser sees a clean conflict. Prints how often more than one writer won (the backend gap).
#[test]
fn s3_concurrent_writers_backend_gap_report() {
    let Some(s) = s3_store("s3_concurrent_writers_backend_gap_report") else {
        return;
    };
    let (cas, create) = suite::race(&s, 8, 10);
    assert!(
        cas.iter().all(|&n| n >= 1),
        "a round of compare-and-swap with no winner: {cas:?}"
    );
    assert!(
        create.iter().all(|&n| n >= 1),
        "a round of create-if-absent with no winner: {create:?}"
    );
    let multi = |v: &[usize]| v.iter().filter(|&&n| n > 1).count();
    eprintln!(
        "BACKEND GAP (s3 test server): rounds with more than one winner: compare-and-swap {}/{} {cas:?}, \
         create-if-absent {}/{} {create:?}",
        multi(&cas),
        cas.len(),
        multi(&create),
        create.len()
    );
}

// ---------------------------------------------------------------------------------------------
// Failure cases against an s3s-fs process of our own.

fn s3s_fs_bin() -> Option<PathBuf> {
    if let Ok(p) = std::env::var("TEST_S3S_FS_BIN") {
        return Some(PathBuf::from(p));
    }
    let home = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo")));
    let candidates = std::env::var_os("PATH")
        .map(|p| {
            std::env::split_paths(&p)
                .map(|d| d.join("s3s-fs"))
                .collect::<Vec<_>>()
        })
        .unwrap_or_default()
        .into_iter()
        .chain(home.map(|h| h.join("bin/s3s-fs")));
    candidates.into_iter().find(|p| p.is_file())
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// An s3s-fs process this test owns; killed on drop.
struct OwnServer {
    child: Child,
}

impl OwnServer {
    fn start(bin: &Path, data: &Path, port: u16) -> OwnServer {
        let ak = std::env::var("AWS_ACCESS_KEY_ID").unwrap();
        let sk = std::env::var("AWS_SECRET_ACCESS_KEY").unwrap();
        let child = Command::new(bin)
            .args([
                "--host",
                "127.0.0.1",
                "--port",
                &port.to_string(),
                "--access-key",
                &ak,
                "--secret-key",
                &sk,
            ])
            .arg(data)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("starting {}: {e}", bin.display()));
        let mut server = OwnServer { child };
        let deadline = Instant::now() + Duration::from_secs(15);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if let Ok(Some(status)) = server.child.try_wait() {
                panic!("s3s-fs exited at start: {status}");
            }
            assert!(Instant::now() < deadline, "s3s-fs did not listen on {port}");
            std::thread::sleep(Duration::from_millis(50));
        }
        server
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for OwnServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The binary and credentials, or `None` (skip) outside CI.
fn own_server_prereqs(test: &str) -> Option<PathBuf> {
    s3_env(test)?;
    match s3s_fs_bin() {
        Some(b) => Some(b),
        None => {
            let msg = format!(
                "{test}: s3s-fs not found (PATH, ~/.cargo/bin, TEST_S3S_FS_BIN); run ci/s3-server start"
            );
            if std::env::var("CI").as_deref() == Ok("true") {
                panic!("{msg}");
            }
            eprintln!("skipping: {msg}");
            None
        }
    }
}

#[test]
fn s3_server_down_is_unavailable_quickly() {
    if own_server_prereqs("s3_server_down_is_unavailable_quickly").is_none() {
        return;
    }
    // Nothing listens on this port.
    let endpoint = format!("http://127.0.0.1:{}", free_port());
    let s = S3Store::from_url("bucket/prefix", &s3_options(&endpoint)).unwrap();
    let started = Instant::now();
    let err = s.put_cas("k", b"x", None).unwrap_err();
    let took = started.elapsed();
    assert!(matches!(err, StoreError::Unavailable { .. }), "{err:?}");
    assert!(err.is_transient());
    let msg = err.to_string();
    assert!(
        msg.contains(&endpoint),
        "the message names the endpoint: {msg}"
    );
    assert!(msg.contains("unreachable"), "{msg}");
    assert!(took < Duration::from_secs(10), "took {took:?}");
    eprintln!("server down: failed after {took:?}: {msg}");
    for r in [
        s.head("k").map(drop),
        s.get("k").map(drop),
        s.list("").map(drop),
    ] {
        assert!(matches!(r, Err(StoreError::Unavailable { .. })), "{r:?}");
    }
}

#[test]
fn s3_server_killed_mid_upload_leaves_nothing_and_retry_succeeds() {
    let Some(bin) =
        own_server_prereqs("s3_server_killed_mid_upload_leaves_nothing_and_retry_succeeds")
    else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir_all(data.join("bucket")).unwrap();
    let port = free_port();
    let mut server = OwnServer::start(&bin, &data, port);
    let endpoint = format!("http://127.0.0.1:{port}");
    let s = Arc::new(S3Store::from_url("bucket/p", &s3_options(&endpoint)).unwrap());

    let body = noise((12 * PART) as usize, 9);
    let digest = Digest::of(&body);
    let file = dir.path().join("big");
    std::fs::write(&file, &body).unwrap();
    let key = format!("blobs/sha256/{}", digest.hex());

    let upload = {
        let (s, file, key) = (s.clone(), file.clone(), key.clone());
        std::thread::spawn(move || {
            let t = Instant::now();
            (
                s.put_if_absent(&key, PutBody::File(file), Some(&digest)),
                t.elapsed(),
            )
        })
    };
    // Kill the server once the first part has landed, i.e. in the middle of the upload.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let part_landed = std::fs::read_dir(&data)
            .unwrap()
            .flatten()
            .any(|e| e.file_name().to_string_lossy().starts_with(".upload_id-"));
        if part_landed {
            break;
        }
        assert!(
            !upload.is_finished(),
            "the upload finished before the server could be killed"
        );
        assert!(Instant::now() < deadline, "no part was uploaded in 30 s");
        std::thread::sleep(Duration::from_millis(5));
    }
    server.kill();
    let (result, took) = upload.join().unwrap();
    match &result {
        Err(StoreError::Unavailable { .. }) => {}
        other => panic!("an upload whose server died must fail as unavailable, got {other:?}"),
    }
    assert!(took < Duration::from_secs(30), "took {took:?}");
    eprintln!(
        "killed mid-upload: failed after {took:?}: {}",
        result.unwrap_err()
    );

    let _server = OwnServer::start(&bin, &data, port);
    assert!(
        s.head(&key).unwrap().is_none(),
        "no object after a failed upload"
    );
    assert!(
        s.list("").unwrap().is_empty(),
        "nothing listed after a failed upload"
    );
    assert_eq!(
        s.put_if_absent(&key, PutBody::File(file), Some(&digest))
            .unwrap(),
        PutOutcome::Created
    );
    let (got, meta) = s.get_bytes(&key).unwrap();
    assert_eq!(meta.size, body.len() as u64);
    assert_eq!(Digest::of(&got), digest);
}
