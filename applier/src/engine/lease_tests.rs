//! Tests of the lease: acquire, renew, release, takeovers and their races, the fencing
//! generation, break and unlock.

use std::sync::{Arc, Barrier};

use super::*;
use artifact::store::fs::FsStore;

const TTL: Duration = Duration::from_secs(600);

fn store() -> (tempfile::TempDir, Arc<FsStore>) {
    let dir = tempfile::tempdir().unwrap();
    let s = Arc::new(FsStore::open(dir.path()).unwrap());
    (dir, s)
}

#[test]
fn acquire_held_renew_release() {
    let (_d, s) = store();
    let now = SystemTime::now();
    let mut lease = acquire(&*s, "prod", "a@h1", "deploy", "d1", TTL, now).unwrap();
    assert_eq!(lease.info.holder, "a@h1");
    match acquire(&*s, "prod", "b@h2", "deploy", "d2", TTL, now) {
        Err(LeaseError::Held { info, .. }) => assert_eq!(info.deploy_id, "d1"),
        other => panic!("expected Held, got {other:?}"),
    }
    let before = lease.info.expires_at.clone();
    renew(&*s, &mut lease, TTL * 2, now + Duration::from_secs(60)).unwrap();
    assert_ne!(lease.info.expires_at, before);
    let (cur, etag) = current(&*s, "prod").unwrap().unwrap();
    assert_eq!(cur, lease.info);
    assert_eq!(etag, lease.etag);
    release(&*s, &lease).unwrap();
    assert!(current(&*s, "prod").unwrap().is_none());
    // Another env is independent, and the lock is free again.
    acquire(&*s, "prod", "b@h2", "deploy", "d2", TTL, now).unwrap();
    acquire(&*s, "staging", "b@h2", "deploy", "d3", TTL, now).unwrap();
}

#[test]
fn expired_lease_is_taken_over_and_old_holder_loses_it() {
    let (_d, s) = store();
    let t0 = SystemTime::now();
    let mut old = acquire(&*s, "prod", "a@h1", "r", "d1", Duration::from_secs(10), t0).unwrap();
    let later = t0 + Duration::from_secs(11);
    let new = acquire(&*s, "prod", "b@h2", "r", "d2", TTL, later).unwrap();
    assert_eq!(current(&*s, "prod").unwrap().unwrap().0.deploy_id, "d2");
    assert!(matches!(
        renew(&*s, &mut old, TTL, later),
        Err(LeaseError::Lost { .. })
    ));
    assert!(matches!(release(&*s, &old), Err(LeaseError::Lost { .. })));
    // The new holder still holds it.
    assert_eq!(current(&*s, "prod").unwrap().unwrap().1, new.etag);
}

#[test]
fn corrupt_record_is_reported() {
    let (_d, s) = store();
    s.put_cas(&keys::env_lock("prod"), b"not json", None)
        .unwrap();
    assert!(matches!(
        acquire(&*s, "prod", "a", "r", "d", TTL, SystemTime::now()),
        Err(LeaseError::Corrupt { .. })
    ));
}

/// Runs `n` threads that call `acquire` at the same moment; returns the winners' deploy ids.
fn race(s: &Arc<FsStore>, n: usize, now: SystemTime) -> Vec<String> {
    let barrier = Arc::new(Barrier::new(n));
    let handles: Vec<_> = (0..n)
        .map(|i| {
            let (s, barrier) = (s.clone(), barrier.clone());
            std::thread::spawn(move || {
                barrier.wait();
                match acquire(
                    &*s,
                    "prod",
                    &format!("u{i}@h"),
                    "race",
                    &format!("d{i}"),
                    TTL,
                    now,
                ) {
                    Ok(l) => Some(l.info.deploy_id),
                    Err(LeaseError::Held { .. }) => None,
                    Err(e) => panic!("unexpected error: {e}"),
                }
            })
        })
        .collect();
    handles
        .into_iter()
        .filter_map(|h| h.join().unwrap())
        .collect()
}

#[test]
fn racing_acquires_have_exactly_one_winner() {
    for _ in 0..20 {
        let (_d, s) = store();
        let winners = race(&s, 8, SystemTime::now());
        assert_eq!(winners.len(), 1, "winners: {winners:?}");
        assert_eq!(
            current(&*s, "prod").unwrap().unwrap().0.deploy_id,
            winners[0]
        );
    }
}

#[test]
fn racing_takeovers_of_an_expired_lease_have_exactly_one_winner() {
    for _ in 0..20 {
        let (_d, s) = store();
        let t0 = SystemTime::now();
        acquire(&*s, "prod", "old@h", "r", "old", Duration::from_secs(1), t0).unwrap();
        let winners = race(&s, 8, t0 + Duration::from_secs(5));
        assert_eq!(winners.len(), 1, "winners: {winners:?}");
        assert_eq!(
            current(&*s, "prod").unwrap().unwrap().0.deploy_id,
            winners[0]
        );
    }
}

#[test]
fn break_held_removes_only_the_named_deploys_lease() {
    let (_d, s) = store();
    let now = SystemTime::now();
    acquire(&*s, "prod", "a@h1", "r", "d1", TTL, now).unwrap();
    assert!(matches!(
        break_held(&*s, "prod", "d2"),
        Err(LeaseError::Held { info, .. }) if info.deploy_id == "d1"
    ));
    assert!(current(&*s, "prod").unwrap().is_some());
    assert!(break_held(&*s, "prod", "d1").unwrap());
    assert!(current(&*s, "prod").unwrap().is_none());
    assert!(!break_held(&*s, "prod", "d1").unwrap());
}

#[test]
fn every_acquire_and_takeover_gets_a_higher_generation_that_survives_release() {
    let (_d, s) = store();
    let t0 = SystemTime::now();
    let a = acquire(&*s, "prod", "a@h", "r", "d1", Duration::from_secs(10), t0).unwrap();
    assert_eq!(a.info.generation, 1);
    assert_eq!(current(&*s, "prod").unwrap().unwrap().0.generation, 1);
    // Takeover of the expired lease.
    let b = acquire(
        &*s,
        "prod",
        "b@h",
        "r",
        "d2",
        TTL,
        t0 + Duration::from_secs(11),
    )
    .unwrap();
    assert_eq!(b.info.generation, 2);
    release(&*s, &b).unwrap();
    // Released, the lock is gone but the counter is not.
    assert!(current(&*s, "prod").unwrap().is_none());
    let c = acquire(&*s, "prod", "c@h", "r", "d3", TTL, t0).unwrap();
    assert_eq!(c.info.generation, 3);
    // break_held (resume --force) keeps the counter too.
    assert!(break_held(&*s, "prod", "d3").unwrap());
    let d = acquire(&*s, "prod", "d@h", "r", "d4", TTL, t0).unwrap();
    assert_eq!(d.info.generation, 4);
    // Another env has its own counter.
    let e = acquire(&*s, "staging", "e@h", "r", "d5", TTL, t0).unwrap();
    assert_eq!(e.info.generation, 1);
}

#[test]
fn a_corrupt_fence_counter_refuses_acquire_and_unlock_repairs_it_past_the_floor() {
    let (_d, s) = store();
    s.put_cas(&keys::env_fence("prod"), b"{oops", None).unwrap();
    let e = acquire(&*s, "prod", "a", "r", "d1", TTL, SystemTime::now()).unwrap_err();
    assert!(matches!(e, LeaseError::CorruptFence { .. }), "{e}");
    assert!(e.to_string().contains("envs/prod/fence"), "{e}");
    // The lock taken before the counter was read is given back.
    assert!(current(&*s, "prod").unwrap().is_none());
    let u = unlock(&*s, "prod", "u1", 41).unwrap();
    assert_eq!(u.generation, 42);
    let l = acquire(&*s, "prod", "a", "r", "d2", TTL, SystemTime::now()).unwrap();
    assert_eq!(l.info.generation, 43);
}

#[test]
fn unlock_breaks_a_held_or_corrupt_lock() {
    let (_d, s) = store();
    let now = SystemTime::now();
    acquire(&*s, "prod", "a@h1", "stuck", "d1", TTL, now).unwrap();
    let u = unlock(&*s, "prod", "u1", 0).unwrap();
    assert_eq!(u.removed.unwrap().unwrap().deploy_id, "d1");
    assert_eq!(u.generation, 2);
    assert!(current(&*s, "prod").unwrap().is_none());
    s.put_cas(&keys::env_lock("prod"), b"garbage", None)
        .unwrap();
    assert!(matches!(
        acquire(&*s, "prod", "a", "r", "d2", TTL, now),
        Err(LeaseError::Corrupt { .. })
    ));
    let u = unlock(&*s, "prod", "u2", 0).unwrap();
    assert!(u.removed.unwrap().is_err());
    acquire(&*s, "prod", "a", "r", "d3", TTL, now).unwrap();
    // Nothing held: nothing removed, the counter still moves on.
    let (_d2, s2) = store();
    let u = unlock(&*s2, "prod", "u3", 0).unwrap();
    assert!(u.removed.is_none());
    assert_eq!(u.generation, 1);
}

#[test]
fn confirm_renews_a_stale_confirmation_and_finds_a_takeover() {
    let (_d, s) = store();
    let ttl = Duration::from_millis(400);
    let l = acquire(&*s, "prod", "a@h", "r", "d1", ttl, SystemTime::now()).unwrap();
    let k = LeaseKeeper::new(l, ttl).unwrap();
    assert_eq!(k.fence().token, 1);
    k.confirm(&*s).unwrap();
    // "Stopped" past the ttl; nobody took over: the confirmation renews it.
    std::thread::sleep(Duration::from_millis(450));
    k.confirm(&*s).unwrap();
    // Stopped again, and this time another deploy takes the lease over.
    std::thread::sleep(Duration::from_millis(450));
    let other = acquire(&*s, "prod", "b@h", "r", "d2", TTL, SystemTime::now()).unwrap();
    let e = k.confirm(&*s).unwrap_err();
    assert!(e.contains("d2") && e.contains("stopped at once"), "{e}");
    assert!(k.is_lost());
    // Lost stays lost, and the new holder keeps its lease.
    assert!(k.confirm(&*s).is_err());
    k.release(&*s);
    assert_eq!(current(&*s, "prod").unwrap().unwrap().1, other.etag);
}
