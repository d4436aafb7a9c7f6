use std::sync::atomic::{AtomicUsize, Ordering};

use artifact::store::fs::FsStore;

use super::*;

/// A directory store whose requests each take `delay`, counting how many are in flight at
/// once (the most seen), and whose presigned URLs are numbered by signing.
#[derive(Debug)]
struct Probe {
    fs: FsStore,
    delay: Duration,
    now: AtomicUsize,
    most: AtomicUsize,
    signings: Mutex<Vec<(String, Duration)>>,
    presigns: bool,
}

impl Probe {
    fn new(dir: &std::path::Path, delay: Duration, presigns: bool) -> Arc<Self> {
        Arc::new(Probe {
            fs: FsStore::open(dir).unwrap(),
            delay,
            now: AtomicUsize::new(0),
            most: AtomicUsize::new(0),
            signings: Mutex::new(Vec::new()),
            presigns,
        })
    }
    fn busy<T>(&self, f: impl FnOnce() -> T) -> T {
        let n = self.now.fetch_add(1, Ordering::SeqCst) + 1;
        self.most.fetch_max(n, Ordering::SeqCst);
        std::thread::sleep(self.delay);
        let r = f();
        self.now.fetch_sub(1, Ordering::SeqCst);
        r
    }
}

impl Store for Probe {
    fn location(&self) -> String {
        self.fs.location()
    }
    fn put_if_absent(
        &self,
        key: &str,
        body: PutBody,
        sha256: Option<&Digest>,
    ) -> Result<PutOutcome, StoreError> {
        self.busy(|| self.fs.put_if_absent(key, body, sha256))
    }
    fn put_cas(&self, key: &str, data: &[u8], expected: Option<&ETag>) -> Result<ETag, StoreError> {
        self.busy(|| self.fs.put_cas(key, data, expected))
    }
    fn get(&self, key: &str) -> Result<GetResult, StoreError> {
        self.busy(|| self.fs.get(key))
    }
    fn head(&self, key: &str) -> Result<Option<ObjectMeta>, StoreError> {
        self.busy(|| self.fs.head(key))
    }
    fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>, StoreError> {
        self.busy(|| self.fs.list(prefix))
    }
    fn delete(&self, key: &str) -> Result<(), StoreError> {
        self.busy(|| self.fs.delete(key))
    }
    fn delete_if(&self, key: &str, expected: &ETag) -> Result<(), StoreError> {
        self.busy(|| self.fs.delete_if(key, expected))
    }
    fn presign_get(&self, key: &str, expires: Duration) -> Result<Option<String>, StoreError> {
        self.busy(|| {
            if !self.presigns {
                return Ok(None);
            }
            let mut s = lock(&self.signings);
            s.push((key.to_string(), expires));
            Ok(Some(format!("http://store/{key}?sig={}", s.len())))
        })
    }
}

#[test]
fn requests_in_flight_never_exceed_the_cap_and_do_reach_it() {
    let dir = tempfile::tempdir().unwrap();
    let probe = Probe::new(dir.path(), Duration::from_millis(15), true);
    probe.put_cas("envs/e/state.json", b"{}", None).unwrap();
    for cap in [1, 3] {
        probe.most.store(0, Ordering::SeqCst);
        let m = MeteredStore::new(probe.clone(), cap);
        std::thread::scope(|s| {
            for i in 0..12 {
                let m = &m;
                s.spawn(move || {
                    for _ in 0..3 {
                        m.get_bytes("envs/e/state.json").unwrap();
                        m.presign_get(&format!("blobs/b{i}"), Duration::from_secs(60))
                            .unwrap();
                    }
                });
            }
        });
        assert_eq!(probe.most.load(Ordering::SeqCst), cap, "cap {cap}");
        assert_eq!(m.requests().of("get state"), 36);
        assert_eq!(m.requests().of("presign blob"), 12, "one URL per blob");
    }
}

#[test]
fn one_url_per_blob_for_every_host_signed_for_twice_the_lifetime_asked() {
    let dir = tempfile::tempdir().unwrap();
    let probe = Probe::new(dir.path(), Duration::ZERO, true);
    let m = MeteredStore::new(probe.clone(), 4);
    let t = Duration::from_secs(900);
    let urls: Vec<(String, String)> = std::thread::scope(|s| {
        let hs: Vec<_> = (0..20)
            .map(|_| {
                s.spawn(|| {
                    (
                        m.presign_get("blobs/a", t).unwrap().unwrap(),
                        m.presign_get("blobs/b", t).unwrap().unwrap(),
                    )
                })
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert!(urls.iter().all(|u| u == &urls[0]), "{urls:?}");
    assert_ne!(urls[0].0, urls[0].1);
    let signings = lock(&probe.signings).clone();
    assert_eq!(signings.len(), 2, "{signings:?}");
    assert!(signings.iter().all(|(_, d)| *d == 2 * t));
    assert_eq!(m.requests().of("presign blob"), 2);
}

#[test]
fn a_url_with_less_than_the_lifetime_asked_left_is_signed_again() {
    let dir = tempfile::tempdir().unwrap();
    let probe = Probe::new(dir.path(), Duration::ZERO, true);
    let m = MeteredStore::new(probe.clone(), 4);
    let t = Duration::from_millis(40);
    let first = m.presign_get("blobs/a", t).unwrap().unwrap();
    assert_eq!(m.presign_get("blobs/a", t).unwrap().unwrap(), first);
    std::thread::sleep(Duration::from_millis(60));
    let second = m.presign_get("blobs/a", t).unwrap().unwrap();
    assert_ne!(second, first, "signed {t:?} x 2 ago: less than {t:?} left");
    assert_eq!(lock(&probe.signings).len(), 2);
}

#[test]
fn a_store_without_presigned_urls_is_asked_once() {
    let dir = tempfile::tempdir().unwrap();
    let probe = Probe::new(dir.path(), Duration::ZERO, false);
    let m = MeteredStore::new(probe, 4);
    for _ in 0..5 {
        assert_eq!(
            m.presign_get("blobs/a", Duration::from_secs(1)).unwrap(),
            None
        );
    }
    assert_eq!(m.requests().of("presign blob"), 1);
}

#[test]
fn requests_are_counted_by_kind_and_since_an_earlier_reading() {
    let dir = tempfile::tempdir().unwrap();
    let m = MeteredStore::new(Probe::new(dir.path(), Duration::ZERO, true), 2);
    m.put_cas("envs/e/state.json", b"{}", None).unwrap();
    let before = m.requests();
    m.put_cas("envs/e/deploys/d1.json", b"{}", None).unwrap();
    m.put_cas("envs/e/segments/d1/0000000001.seg", b"{}", None)
        .unwrap();
    m.get_bytes("envs/e/state.json").unwrap();
    assert!(m.get_bytes("blobs/sha256/00").is_err());
    m.list("envs/e/deploys/").unwrap();
    m.put_cas("envs/e/lock", b"{}", None).unwrap();
    let d = m.requests().since(&before);
    assert_eq!(
        d.by_kind,
        BTreeMap::from(
            [
                ("put journal", 2),
                ("get state", 1),
                ("get blob", 1),
                ("list journal", 1),
                ("put lease", 1)
            ]
            .map(|(k, n)| (k.to_string(), n))
        )
    );
    assert_eq!(d.total, 6);
    assert_eq!(m.requests().total, 7);
    assert_eq!(
        d.summary(),
        "6 (get blob 1, get state 1, list journal 1, put journal 2, put lease 1)"
    );
}

#[test]
fn every_host_fetching_is_handed_the_same_url_per_blob_and_the_manifest_is_not_read_again() {
    let dir = tempfile::tempdir().unwrap();
    let probe = Probe::new(dir.path(), Duration::ZERO, true);
    let m = MeteredStore::new(probe.clone(), 4);
    let (d, manifest) = crate::host::memory::tests::manifest('a');
    let layer = artifact::keys::blob(&manifest.layers[0].digest);
    let reqs: Vec<_> = (0..10)
        .map(|_| {
            let req = crate::protocol::FetchUrlsRequest::new(&d, &manifest);
            crate::host::fetch_source(req, m.as_ref(), Some(Duration::from_secs(900))).unwrap()
        })
        .collect();
    for r in &reqs {
        assert_eq!(r.urls.keys().collect::<Vec<_>>(), [&layer]);
        assert_eq!(r.urls, reqs[0].urls, "one URL per blob for every host");
        // What the target checks is unchanged: the manifest's bytes hash to its digest.
        assert_eq!(r.verified_manifest().unwrap(), manifest);
    }
    assert_eq!(
        m.requests().by_kind,
        BTreeMap::from([("presign blob".to_string(), 1)])
    );
}
