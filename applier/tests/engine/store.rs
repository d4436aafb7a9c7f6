//! What a deploy costs. The store requests: counted through the context's meter, reported in the
//! outcome, the `finished` event and the journal, constant per host as the fleet grows, and
//! never more in flight at once than the cap. The host round trips: the spec asked once.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use applier::engine::EnvContext;
use applier::events::{Event, VecSink};
use applier::records::{JournalStatus, Step};
use applier::store_meter::{MeteredStore, StoreRequests};
use artifact::Digest;
use artifact::store::{ETag, GetResult, ObjectMeta, PutBody, PutOutcome, Store, StoreError};

use super::{bed, deploy, groups, journal};

/// `bed`'s context reaching its store through a meter of `cap`, over `store`.
fn metered(
    b: &super::Bed,
    store: Arc<dyn Store>,
    hs: &[&str],
    cap: usize,
) -> (EnvContext, Arc<MeteredStore>) {
    let meter = MeteredStore::new(store, cap);
    let mut ctx = b.ctx_on(meter.clone(), "count", groups(hs, 8));
    ctx.meter = Some(meter.clone());
    (ctx, meter)
}

/// Deploys B over A to `n` hosts; the requests it reports (checked against the event and the
/// journal).
fn counted(n: usize) -> StoreRequests {
    let names: Vec<String> = (1..=n).map(|i| format!("h{i:03}")).collect();
    let hs: Vec<&str> = names.iter().map(String::as_str).collect();
    let (b, r) = bed(&hs);
    let (ctx, _) = metered(&b, b.store.clone(), &hs, 32);
    let sink = VecSink::default();
    let o = deploy(&ctx, &sink, &r[1]);
    assert_eq!(o.status, JournalStatus::Succeeded, "{}", o.message);
    let got = o.store_requests.expect("counted");
    let finished = sink.events().into_iter().find_map(|e| match e {
        Event::Finished { store_requests, .. } => store_requests,
        _ => None,
    });
    assert_eq!(finished.as_ref(), Some(&got));
    let j = journal(&ctx, &o.deploy_id);
    let step = j.steps.iter().find(|s| s.step == Step::StoreRequests);
    assert_eq!(
        step.and_then(|s| s.detail.clone()),
        Some(got.summary()),
        "{:?}",
        j.steps
    );
    got
}

#[test]
fn store_requests_per_host_stay_constant_as_the_fleet_grows_and_are_reported() {
    let small = counted(8);
    let large = counted(64);
    let per_host = |r: &StoreRequests, n: f64| r.total as f64 / n;
    let (a, b) = (per_host(&small, 8.0), per_host(&large, 64.0));
    assert!(
        b <= a,
        "{a:.2} requests per host at 8 hosts, {b:.2} at 64: {small:?} / {large:?}"
    );
    // What does not depend on the hosts stays the same: the manifests and the lease.
    for kind in ["get blob", "put lease"] {
        assert_eq!(
            small.of(kind),
            large.of(kind),
            "{kind}: {small:?} / {large:?}"
        );
        assert!(small.of(kind) > 0, "{kind}: {small:?}");
    }
    // The env state: at most once per batch (8 hosts a batch), plus the outcome's.
    assert!(large.of("put state") <= 64 / 8 + 2, "{large:?}");
}

/// A store whose requests each take a moment, counting the most in flight at once.
#[derive(Debug)]
struct Slow {
    inner: Arc<dyn Store>,
    now: AtomicUsize,
    most: AtomicUsize,
}

impl Slow {
    fn busy<T>(&self, f: impl FnOnce() -> T) -> T {
        let n = self.now.fetch_add(1, Ordering::SeqCst) + 1;
        self.most.fetch_max(n, Ordering::SeqCst);
        std::thread::sleep(Duration::from_millis(3));
        let r = f();
        self.now.fetch_sub(1, Ordering::SeqCst);
        r
    }
}

impl Store for Slow {
    fn location(&self) -> String {
        self.inner.location()
    }
    fn put_if_absent(
        &self,
        key: &str,
        body: PutBody,
        sha256: Option<&Digest>,
    ) -> Result<PutOutcome, StoreError> {
        self.busy(|| self.inner.put_if_absent(key, body, sha256))
    }
    fn put_cas(&self, key: &str, data: &[u8], expected: Option<&ETag>) -> Result<ETag, StoreError> {
        self.busy(|| self.inner.put_cas(key, data, expected))
    }
    fn get(&self, key: &str) -> Result<GetResult, StoreError> {
        self.busy(|| self.inner.get(key))
    }
    fn head(&self, key: &str) -> Result<Option<ObjectMeta>, StoreError> {
        self.busy(|| self.inner.head(key))
    }
    fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>, StoreError> {
        self.busy(|| self.inner.list(prefix))
    }
    fn delete(&self, key: &str) -> Result<(), StoreError> {
        self.busy(|| self.inner.delete(key))
    }
    fn delete_if(&self, key: &str, expected: &ETag) -> Result<(), StoreError> {
        self.busy(|| self.inner.delete_if(key, expected))
    }
    fn presign_get(&self, key: &str, expires: Duration) -> Result<Option<String>, StoreError> {
        self.busy(|| self.inner.presign_get(key, expires))
    }
}

#[test]
fn a_deploy_never_has_more_store_requests_in_flight_than_the_cap() {
    let names: Vec<String> = (1..=24).map(|i| format!("h{i:03}")).collect();
    let hs: Vec<&str> = names.iter().map(String::as_str).collect();
    for cap in [1, 2, 64] {
        let (b, r) = bed(&hs);
        let slow = Arc::new(Slow {
            inner: b.store.clone(),
            now: AtomicUsize::new(0),
            most: AtomicUsize::new(0),
        });
        let (ctx, _) = metered(&b, slow.clone(), &hs, cap);
        let o = deploy(&ctx, &applier::events::NullSink, &r[1]);
        assert_eq!(o.status, JournalStatus::Succeeded, "{}", o.message);
        let most = slow.most.load(Ordering::SeqCst);
        if cap == 64 {
            // Uncapped, the deploy's requests do overlap: the bound below is not a given.
            assert!(most > 2, "{most} in flight with a cap of {cap}");
        } else {
            assert!(most <= cap, "{most} in flight with a cap of {cap}");
        }
        assert!(o.store_requests.unwrap().total > 0);
    }
}

/// Each host's path takes the spec it gave the render check: one `service-spec` round trip per
/// host and deploy, not two. A restore asks again (nothing was read for that release).
#[test]
fn a_host_is_asked_for_its_service_spec_once_per_deploy() {
    let hs = ["a", "b", "c"];
    let (b, r) = bed(&hs);
    let ctx = b.ctx("spec", groups(&hs, 2));
    let o = deploy(&ctx, &applier::events::NullSink, &r[1]);
    assert_eq!(o.status, JournalStatus::Succeeded, "{}", o.message);
    for h in hs {
        assert_eq!(
            b.host(h).count("service-spec"),
            1,
            "{h}: {:?}",
            b.host(h).calls()
        );
    }
}
