//! Fast engine tests: the deploy engine driven through the library's in-memory hosts and
//! pool (`bed`) and a directory store in a tempdir, with no node, npm, git or network. They
//! cover the capacity guard, the failure limit, abort order, per-host restore, resume after a
//! crash at every step, lease loss and the canary bake, and pin the event stream in a JSON
//! golden file.

mod bed;
mod deciding;
mod failclosed;
mod journal;
mod plan;
mod store;
mod tap;

use std::time::Duration;

use applier::engine::{self, DeployOptions, EnvContext, Outcome};
use applier::events::{Event, EventSink, NullSink, VecSink};
use applier::protocol::{ErrorKind, ReleaseRef};
use applier::records::{self, HostPhase, Journal, JournalStatus};
use serde_json::{Value, json};

use bed::Bed;
use tap::TapStore;

const A: &str = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
const B: &str = "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";
const C: &str = "cccccccccccccccccccccccccccccccccccccccc";
const D: &str = "dddddddddddddddddddddddddddddddddddddddd";
const BAD_LOG: &str = "{\"level\":50,\"msg\":\"storage exploded\"}\n";

/// A bed with `hosts`, releases A, B, D (good) and C (logs an error), and A on every host.
fn bed(hosts: &[&str]) -> (Bed, [ReleaseRef; 4]) {
    let bed = Bed::new(hosts);
    let rels = [
        bed.artifact(A, "{\"level\":30,\"msg\":\"up\"}\n"),
        bed.artifact(B, ""),
        bed.artifact(C, BAD_LOG),
        bed.artifact(D, ""),
    ];
    for h in hosts {
        bed.host(h).install(&rels[0]);
    }
    (bed, rels)
}

/// Groups `canary: [first]`, `rest: [the others]`, batches of `group_size`.
fn groups(hosts: &[&str], group_size: usize) -> Value {
    json!({
        "groups": [
            {"name": "canary", "hosts": [hosts[0]]},
            {"name": "rest", "hosts": &hosts[1..]},
        ],
        "group_size": group_size,
    })
}

fn with(mut base: Value, extra: Value) -> Value {
    for (k, v) in extra.as_object().unwrap() {
        base[k] = v.clone();
    }
    base
}

fn deploy(ctx: &EnvContext, sink: &dyn EventSink, to: &ReleaseRef) -> Outcome {
    engine::deploy(
        ctx,
        sink,
        &to.manifest.to_string(),
        &DeployOptions::default(),
    )
    .unwrap()
}

fn journal(ctx: &EnvContext, id: &str) -> Journal {
    records::history(ctx.store.as_ref(), &ctx.name)
        .unwrap()
        .into_iter()
        .find(|j| j.id == id)
        .expect("journal")
}

fn rollbacks(events: &[Event]) -> Vec<String> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::Rollback { host, .. } => Some(host.clone()),
            _ => None,
        })
        .collect()
}

#[test]
fn capacity_limit_keeps_at_most_max_out_hosts_out_of_the_pool() {
    let hs = ["h1", "h2", "h3", "h4", "h5"];
    let (bed, r) = bed(&hs);
    for h in bed.hosts.values() {
        h.set_latency(Some("start"), Duration::from_millis(30));
    }
    let ctx = bed.ctx(
        "cap",
        with(groups(&hs, 4), json!({"capacity": {"max_out": 2}})),
    );
    let o = deploy(&ctx, &NullSink, &r[1]);
    assert_eq!(o.status, JournalStatus::Succeeded, "{}", o.message);
    for h in hs {
        bed.assert_serves(h, B);
    }
    // The batch of four went two at a time: two were out together, never more.
    assert_eq!(bed.pool.max_out_seen(), 2);
}

#[test]
fn capacity_guard_counts_hosts_someone_else_took_out() {
    let hs = ["h1", "h2", "h3", "h4"];
    let (bed, r) = bed(&hs);
    bed.pool.set_out("h4", true);
    let ctx = bed.ctx(
        "capx",
        with(groups(&hs, 3), json!({"capacity": {"max_out": 1}})),
    );
    let o = deploy(&ctx, &NullSink, &r[1]);
    let j = journal(&ctx, &o.deploy_id);
    assert!(
        j.abort_reason
            .as_deref()
            .unwrap()
            .contains("capacity guard: already out of the pool: h4"),
        "{j:#?}"
    );
    assert!(j.hosts.values().all(|e| e.touched.is_none()), "{j:#?}");
    for h in ["h1", "h2", "h3"] {
        bed.assert_serves(h, A);
    }
    assert!(bed.pool.is_out("h4"), "h4 stays out");
}

#[test]
fn failure_within_the_limit_restores_that_host_and_the_roll_goes_on() {
    let hs = ["h1", "h2", "h3"];
    let (bed, r) = bed(&hs);
    bed.host("h2")
        .fail_next("start", ErrorKind::Transport, "no such file");
    let ctx = bed.ctx("flim", with(groups(&hs, 1), json!({"failure_limit": 1})));
    let o = deploy(&ctx, &NullSink, &r[1]);
    assert_eq!(o.status, JournalStatus::Succeeded, "{}", o.message);
    assert_eq!(o.failed, ["h2"]);
    bed.assert_serves("h1", B);
    bed.assert_serves("h3", B);
    let (cur, _, pooled, step) = bed.on("h2");
    assert_eq!((cur.as_deref(), pooled, step), (Some(A), true, None));
    assert_eq!(
        journal(&ctx, &o.deploy_id).hosts["h2"].phase,
        HostPhase::RolledBack
    );
}

#[test]
fn failure_past_the_limit_aborts_in_reverse_touch_order_to_each_hosts_own_release() {
    let hs = ["h1", "h2", "h3"];
    let (bed, r) = bed(&hs);
    // h2's own last good release is D, the others' A.
    bed.host("h2").install(&r[3]);
    bed.host("h3")
        .fail_next("wait-ready", ErrorKind::Transport, "did not bind");
    let ctx = bed.ctx("abort", groups(&hs, 1));
    let sink = VecSink::default();
    let o = deploy(&ctx, &sink, &r[1]);
    assert_eq!(o.status, JournalStatus::RolledBack, "{}", o.message);
    assert_eq!(rollbacks(&sink.events()), ["h3", "h2", "h1"]);
    bed.assert_serves("h1", A);
    bed.assert_serves("h2", D);
    bed.assert_serves("h3", A);
    let j = journal(&ctx, &o.deploy_id);
    assert_eq!(j.status, JournalStatus::RolledBack);
    assert!(
        j.hosts.values().all(|e| e.phase == HostPhase::RolledBack),
        "{j:#?}"
    );
}

#[test]
fn a_host_with_nothing_to_go_back_to_is_taken_out_through_the_journal() {
    let hs = ["h1", "h2"];
    let bed = Bed::new(&hs);
    let c = bed.artifact(C, BAD_LOG);
    let ctx = bed.ctx("fresh", groups(&hs, 1));
    let o = deploy(&ctx, &NullSink, &c);
    assert_eq!(o.status, JournalStatus::RolledBack, "{}", o.message);
    assert!(
        o.message.contains(
            "; no touched host had a release to go back to: h1 stopped and left out of the pool;"
        ),
        "the summary does not claim a restore that did not happen: {}",
        o.message
    );
    let (_, running, pooled, _) = bed.on("h1");
    assert_eq!((running, pooled), (None, false), "stopped and left out");
    let j = journal(&ctx, &o.deploy_id);
    let after_abort: Vec<_> = j
        .steps
        .iter()
        .skip_while(|s| s.step != records::Step::Abort)
        .map(|s| (s.host.as_deref(), s.step, s.ok))
        .collect();
    assert_eq!(
        after_abort[1..],
        [
            (Some("h1"), records::Step::Depool, true),
            (Some("h1"), records::Step::Stop, true)
        ],
        "{j:#?}"
    );
    assert!(bed.on("h2").0.is_none(), "h2 was never touched");
}

/// Every host op (by its wire name) and pool op a deploy makes, in path order.
const CRASH_POINTS: &[&str] = &[
    "preflight",
    "fetch-urls",
    "service-spec",
    "depool",
    "stop",
    "render",
    "switch",
    "start",
    "wait-ready",
    "read-file",
    "mark-good",
    "repool",
];

/// Runs a deploy of B whose applier "dies" at (`host`, `op`): the calling thread is parked
/// there for good and the store cut off from that applier, as from a process that is gone.
/// Returns the bed, the deploy id and the releases.
fn crash(host: &str, op: &str) -> (Bed, String, [ReleaseRef; 4]) {
    let hs = ["h1", "h2", "h3"];
    let (bed, r) = bed(&hs);
    let parked = match op {
        "depool" | "repool" => bed.pool.park_on_call(op, host),
        _ => bed.host(host).park_on_call(op),
    };
    let tap = TapStore::new(bed.store.clone());
    let ctx = bed.ctx_on(tap.clone(), "crash", groups(&hs, 1));
    let to = r[1].manifest.to_string();
    // This thread never returns: it is the applier that died.
    std::thread::spawn(move || engine::deploy(&ctx, &NullSink, &to, &DeployOptions::default()));
    assert!(
        parked.wait(Duration::from_secs(10)),
        "the crash point {host} {op} was never reached"
    );
    tap.kill();
    let id = records::history(bed.store.as_ref(), "crash").unwrap()[0]
        .id
        .clone();
    (bed, id, r)
}

#[test]
fn resume_after_a_crash_at_every_step_finishes_without_half_switched_hosts() {
    for host in ["h1", "h2"] {
        for op in CRASH_POINTS {
            let (bed, id, _) = crash(host, op);
            let ctx = bed.ctx("crash", groups(&["h1", "h2", "h3"], 1));
            let o = engine::resume(&ctx, &NullSink, &id, false, true).unwrap();
            assert_eq!(
                o.status,
                JournalStatus::Succeeded,
                "crash at {host} {op}: {}",
                o.message
            );
            for h in ["h1", "h2", "h3"] {
                bed.assert_serves(h, B);
            }
            let j = journal(&ctx, &id);
            assert!(
                j.hosts.values().all(|e| e.phase == HostPhase::Done),
                "{j:#?}"
            );
            assert!(
                j.steps.iter().any(|s| s.step == records::Step::Resume),
                "{j:#?}"
            );
        }
    }
}

#[test]
fn resume_rollback_after_a_crash_restores_every_touched_host() {
    for op in ["switch", "wait-ready", "repool"] {
        let (bed, id, _) = crash("h2", op);
        let ctx = bed.ctx("crash", groups(&["h1", "h2", "h3"], 1));
        let sink = VecSink::default();
        let o = engine::resume(&ctx, &sink, &id, true, true).unwrap();
        assert_eq!(o.status, JournalStatus::RolledBack, "{op}: {}", o.message);
        assert_eq!(rollbacks(&sink.events()), ["h2", "h1"], "{op}");
        for h in ["h1", "h2", "h3"] {
            bed.assert_serves(h, A);
        }
        // The lease was given back.
        assert!(
            applier::engine::lease::current(ctx.store.as_ref(), "crash")
                .unwrap()
                .is_none()
        );
    }
}

#[test]
fn resume_without_force_is_refused_while_the_dead_deploy_holds_the_lease() {
    let (bed, id, _) = crash("h2", "start");
    let ctx = bed.ctx("crash", groups(&["h1", "h2", "h3"], 1));
    let e = engine::resume(&ctx, &NullSink, &id, false, false).unwrap_err();
    assert!(e.to_string().contains("locked by"), "{e}");
    assert!(e.way_out().unwrap().contains("--force"), "{e}");
}

#[test]
fn lease_loss_stops_the_run_and_leaves_its_hosts_to_a_human() {
    let hs = ["h1", "h2", "h3"];
    let (bed, r) = bed(&hs);
    let mut ctx = bed.ctx("lost", groups(&hs, 1));
    ctx.lease_ttl = Duration::from_millis(600);
    let store = ctx.store.clone();
    bed.host("h1").on_call("mark-good", move || {
        // Another applier takes the lease over.
        let (mut info, etag) = applier::engine::lease::current(store.as_ref(), "lost")
            .unwrap()
            .unwrap();
        info.holder = "thief@elsewhere".into();
        store
            .put_cas(
                &applier::keys::env_lock("lost"),
                &serde_json::to_vec(&info).unwrap(),
                Some(&etag),
            )
            .unwrap();
        std::thread::sleep(Duration::from_millis(500));
    });
    let o = deploy(&ctx, &NullSink, &r[1]);
    assert_eq!(o.status, JournalStatus::NeedsHuman, "{}", o.message);
    assert!(
        o.message.contains("lease on lost was lost"),
        "{}",
        o.message
    );
    assert!(o.message.contains("thief@elsewhere"), "{}", o.message);
    // Stopped at once: h1 is not even repooled (the pool driver is only called with a lease
    // confirmed in the store), nothing is rolled back, and no further host is touched.
    assert_eq!(bed.on("h1"), (Some(B.into()), Some(B.into()), false, None));
    bed.assert_serves("h2", A);
    bed.assert_serves("h3", A);
    let (info, _) = applier::engine::lease::current(ctx.store.as_ref(), "lost")
        .unwrap()
        .unwrap();
    assert_eq!(info.holder, "thief@elsewhere", "the new holder keeps it");
}

/// A sink that runs `on_bake` when the bake starts.
struct BakeSink<F: Fn() + Send + Sync>(VecSink, F);

impl<F: Fn() + Send + Sync> EventSink for BakeSink<F> {
    fn emit(&self, e: &Event) {
        if matches!(e, Event::Bake { .. }) {
            (self.1)();
        }
        self.0.emit(e);
    }
}

fn checks_of(events: &[Event], host: &str) -> usize {
    events
        .iter()
        .filter(|e| matches!(e, Event::Check { host: h, .. } if h == host))
        .count()
}

#[test]
fn bake_rechecks_the_canary_and_a_canary_that_dies_in_the_bake_is_rolled_back() {
    let hs = ["h1", "h2", "h3"];
    let baked = with(groups(&hs, 2), json!({"canary_bake": "200ms"}));

    let (bed, r) = bed(&hs);
    let ctx = bed.ctx("bake", baked.clone());
    let sink = BakeSink(VecSink::default(), || {});
    let o = deploy(&ctx, &sink, &r[1]);
    assert_eq!(o.status, JournalStatus::Succeeded, "{}", o.message);
    let evs = sink.0.events();
    assert!(evs.iter().any(|e| matches!(e, Event::Bake { .. })));
    assert_eq!(
        checks_of(&evs, "h1"),
        2,
        "checked, then rechecked after the bake"
    );
    assert_eq!(checks_of(&evs, "h2"), 1);

    let (bed, r) = bed_and_kill_on_bake(&hs, baked);
    let _ = r;
    for h in hs {
        bed.assert_serves(h, A);
    }
}

/// A group's hosts are pruned once the group passed (its bake included), beside the next
/// groups: the canary's prune falls after its bake and before the last host is done, and no
/// host is pruned before its own group passed.
#[test]
fn prunes_start_when_a_group_passed_not_after_the_last_host() {
    let hs = ["h1", "h2", "h3", "h4"];
    let (bed, r) = bed(&hs);
    for h in hs {
        // Each later host takes a while, so a prune held back to the end would show.
        bed.host(h)
            .set_latency(Some("start"), Duration::from_millis(200));
    }
    let ctx = bed.ctx(
        "prune-timing",
        with(groups(&hs, 1), json!({"canary_bake": "100ms"})),
    );
    let sink = VecSink::default();
    assert_eq!(deploy(&ctx, &sink, &r[1]).status, JournalStatus::Succeeded);
    let evs = sink.events();
    let at = |f: &dyn Fn(&Event) -> bool, what: &str| {
        evs.iter()
            .position(f)
            .unwrap_or_else(|| panic!("no {what} event: {evs:#?}"))
    };
    let pruned = |h: &str| at(&|e| matches!(e, Event::Prune { host, .. } if host == h), h);
    let done = |h: &str| {
        at(
            &|e| matches!(e, Event::HostDone { host, .. } if host == h),
            h,
        )
    };
    let bake = at(&|e| matches!(e, Event::Bake { .. }), "bake");
    assert!(
        pruned("h1") > bake,
        "the canary was pruned before its bake ended"
    );
    assert!(
        pruned("h1") < done("h4"),
        "the canary was pruned after the last host, not beside the roll: {evs:#?}"
    );
    for h in hs {
        assert!(pruned(h) > done(h), "{h} pruned before its group passed");
    }
}

fn bed_and_kill_on_bake(hs: &[&str], cfg: Value) -> (Bed, [ReleaseRef; 4]) {
    let (bed, r) = bed(hs);
    let ctx = bed.ctx("bake2", cfg);
    let h1 = bed.hosts["h1"].clone();
    let sink = BakeSink(VecSink::default(), move || h1.crash());
    let o = deploy(&ctx, &sink, &r[1]);
    assert_eq!(o.status, JournalStatus::RolledBack, "{}", o.message);
    assert!(
        o.message.contains("canary h1 failed after the bake"),
        "{}",
        o.message
    );
    assert_eq!(rollbacks(&sink.0.events()), ["h1"]);
    (bed, r)
}

/// `<commit>-<start ms>.log` with the start time replaced by `<ms>`.
fn without_start_ms(s: &str) -> String {
    let mut out = String::new();
    let mut rest = s;
    while let Some(i) = rest.find(".log") {
        let (head, tail) = rest.split_at(i);
        let digits = head.len() - head.trim_end_matches(|c: char| c.is_ascii_digit()).len();
        if digits >= 10 && head[..head.len() - digits].ends_with('-') {
            out.push_str(&head[..head.len() - digits]);
            out.push_str("<ms>");
        } else {
            out.push_str(head);
        }
        out.push_str(".log");
        rest = &tail[4..];
    }
    out.push_str(rest);
    out
}

/// The event stream as JSON with what varies between runs (deploy ids, timings, start times
/// in log names) normalised.
fn normalised(events: &[Event]) -> Value {
    let mut v = serde_json::to_value(events).unwrap();
    fn walk(v: &mut Value) {
        match v {
            Value::Object(m) => {
                for (k, x) in m.iter_mut() {
                    match k.as_str() {
                        "deploy_id" => *x = "<deploy id>".into(),
                        "elapsed_ms" | "seconds" => *x = 0.into(),
                        _ => walk(x),
                    }
                }
            }
            Value::Array(a) => a.iter_mut().for_each(walk),
            Value::String(s) => *s = without_start_ms(s),
            _ => {}
        }
    }
    walk(&mut v);
    v
}

/// Pins the event stream of a good deploy and of a failed canary with its rollback
/// (`tests/engine/golden_events.json`; `UPDATE_GOLDEN=1` rewrites it after a deliberate change).
#[test]
fn event_stream_matches_the_golden_file() {
    let hs = ["h1", "h2", "h3"];
    let (bed, r) = bed(&hs);
    // One host at a time everywhere, so the stream's order is fixed.
    let ctx = bed.ctx(
        "golden",
        with(groups(&hs, 1), json!({"prefetch_parallelism": 1})),
    );
    let good = VecSink::default();
    assert_eq!(deploy(&ctx, &good, &r[1]).status, JournalStatus::Succeeded);
    let bad = VecSink::default();
    assert_eq!(deploy(&ctx, &bad, &r[2]).status, JournalStatus::RolledBack);
    // Hosts are pruned beside the roll, so where their events fall varies: pinned apart, by
    // host (one each, after its host is done; none on an abort).
    let split = |events: Vec<Event>| {
        let (mut prunes, rest): (Vec<Event>, Vec<Event>) = events
            .into_iter()
            .partition(|e| matches!(e, Event::Prune { .. }));
        let host = |e: &Event| match e {
            Event::Prune { host, .. } => host.clone(),
            _ => unreachable!(),
        };
        prunes.sort_by_key(host);
        (normalised(&rest), normalised(&prunes))
    };
    let (good_rest, good_prunes) = split(good.events());
    let (bad_rest, bad_prunes) = split(bad.events());
    let got = json!({
        "deploy": good_rest,
        "deploy_prunes": good_prunes,
        "failed_canary": bad_rest,
        "failed_canary_prunes": bad_prunes,
    });
    let path =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/engine/golden_events.json");
    let text = serde_json::to_string_pretty(&got).unwrap() + "\n";
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(&path, &text).unwrap();
    }
    let want = std::fs::read_to_string(&path).expect("golden file (UPDATE_GOLDEN=1 writes it)");
    assert_eq!(
        text, want,
        "the event stream changed; if on purpose, UPDATE_GOLDEN=1"
    );
}

/// `applier deploy abcd` takes the unique prefixes `builder show abcd` takes (one resolver).
#[test]
fn deploy_resolves_a_four_digit_commit_prefix() {
    let hs = ["h1", "h2"];
    let (bed, _) = bed(&hs);
    let ctx = bed.ctx("prefix", groups(&hs, 1));
    let o = engine::deploy(&ctx, &NullSink, &B[..4], &DeployOptions::default()).unwrap();
    assert_eq!(o.status, JournalStatus::Succeeded, "{}", o.message);
    bed.assert_serves("h2", B);
    let e = engine::deploy(&ctx, &NullSink, "bb", &DeployOptions::default()).unwrap_err();
    assert_eq!(e.kind(), engine::ErrorKind::Usage, "{e}");
}
