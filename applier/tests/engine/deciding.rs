//! The run's deciding policies on in-memory hosts: the k-of-n rule for host-level failures,
//! shadow checks, the no-data policy and its summary, and the rollback fast path. (The
//! canary analysis, the watch and the metrics these read run against the real test bed:
//! `tests/deciding.rs`.)

use serde_json::json;

use super::*;

/// Release C logs an error line on every host, so its `logs` check fails everywhere.
fn quorum_ctx(bed: &Bed, name: &str, hosts: &[&str], quorum: Value) -> EnvContext {
    bed.ctx(
        name,
        with(groups(hosts, 1), json!({"checks": {"quorum": quorum}})),
    )
}

#[test]
fn a_lone_failure_is_a_suspicion_until_k_hosts_agree() {
    let hs = ["h1", "h2", "h3"];
    let (bed, r) = bed(&hs);
    // k = 2: the canary's failure alone goes on; the second host's agreement aborts.
    let ctx = quorum_ctx(&bed, "q2", &hs, json!({"k": 2, "checks": ["logs"]}));
    let sink = VecSink::default();
    let o = deploy(&ctx, &sink, &r[2]);
    assert_eq!(o.status, JournalStatus::RolledBack, "{}", o.message);
    assert!(
        o.message
            .contains("2 of 2 hosts agree that check logs >= error fails: h1, h2"),
        "{}",
        o.message
    );
    let j = journal(&ctx, &o.deploy_id);
    let quorum: Vec<&str> = j
        .steps
        .iter()
        .filter(|s| s.step == records::Step::Quorum)
        .filter_map(|s| s.detail.as_deref())
        .collect();
    assert!(quorum[0].contains("failed alone on h1"), "{quorum:?}");
    assert_eq!(j.hosts["h3"].touched, None, "h3 was never touched");
    for h in hs {
        bed.assert_serves(h, A);
    }
    // The canary's result says it was a suspicion, not a pass.
    let first = sink
        .events()
        .into_iter()
        .find_map(|e| match e {
            Event::Check { host, result } if host == "h1" => Some(result),
            _ => None,
        })
        .unwrap();
    assert!(first.suspect && first.passed, "{first:?}");
    assert_eq!(first.outcome, applier::checks::Outcome::Fail);

    // k = 3 on a two-host env: both suspicions are recorded, nobody agrees enough.
    let (bed, r) = bed_pair();
    let ctx = quorum_ctx(
        &bed,
        "q3",
        &["h1", "h2"],
        json!({"k": 3, "checks": ["logs"]}),
    );
    let o = deploy(&ctx, &NullSink, &r[2]);
    assert_eq!(o.status, JournalStatus::Succeeded, "{}", o.message);
    let j = journal(&ctx, &o.deploy_id);
    assert!(
        j.hosts["h2"].checks[0].suspect,
        "{:?}",
        j.hosts["h2"].checks
    );
}

fn bed_pair() -> (Bed, [ReleaseRef; 4]) {
    bed(&["h1", "h2"])
}

#[test]
fn a_failure_that_repeats_on_its_retry_aborts_at_once() {
    let hs = ["h1", "h2", "h3"];
    let (bed, r) = bed(&hs);
    let ctx = quorum_ctx(
        &bed,
        "qr",
        &hs,
        json!({"k": 3, "retries": 1, "checks": ["logs"]}),
    );
    let sink = VecSink::default();
    let o = deploy(&ctx, &sink, &r[2]);
    assert_eq!(o.status, JournalStatus::RolledBack, "{}", o.message);
    assert!(
        o.message.contains("failed again on h1 (retry 1 of 1)"),
        "{}",
        o.message
    );
    // The canary's forward check (the journal keeps its restore's): evaluated twice.
    let first = sink
        .events()
        .into_iter()
        .find_map(|e| match e {
            Event::Check { host, result } if host == "h1" => Some(result),
            _ => None,
        })
        .unwrap();
    assert_eq!(first.attempts, 2, "{first:?}");
    assert!(!first.passed && !first.suspect);
    let j = journal(&ctx, &o.deploy_id);
    assert_eq!(j.hosts["h2"].touched, None);
}

#[test]
fn shadow_checks_are_recorded_and_never_gate() {
    let hs = ["h1", "h2"];
    let (bed, r) = bed(&hs);
    let ctx = bed.ctx(
        "shadow",
        with(
            groups(&hs, 1),
            json!({"checks": {"skip_service_checks": true, "extra": [
                {"type": "logs", "level": "error", "name": "new-logs-rule", "mode": "shadow"}
            ]}}),
        ),
    );
    let o = deploy(&ctx, &NullSink, &r[2]);
    assert_eq!(o.status, JournalStatus::Succeeded, "{}", o.message);
    // The summary names what a shadow check would have stopped.
    assert!(
        o.message.ends_with(
            "; shadow checks that failed (not gating): h1 new-logs-rule, h2 new-logs-rule"
        ),
        "{}",
        o.message
    );
    let j = journal(&ctx, &o.deploy_id);
    for h in hs {
        let c = &j.hosts[h].checks[0];
        assert_eq!(c.outcome, applier::checks::Outcome::Fail, "{c:?}");
        assert!(c.shadow && c.passed, "{c:?}");
        assert!(c.detail.contains("[shadow: not gating]"), "{}", c.detail);
        bed.assert_serves(h, C);
    }
}

#[test]
fn a_check_without_data_is_named_in_the_summary_whatever_it_counts_as() {
    let hs = ["h1", "h2"];
    let (bed, r) = bed(&hs);
    // The log command is not there (exit 127): it never yields data.
    for h in hs {
        bed.host(h).set_exec_output(applier::protocol::ExecOutput {
            status: 127,
            stdout: String::new(),
            stderr: "journalctl: not found".into(),
        });
    }
    let nodata = |policy: &str| {
        json!({"checks": {"extra": [
            {"type": "logs", "name": "journal", "command": "journalctl -u svc", "inconclusive": policy}
        ]}})
    };
    let ctx = bed.ctx("nd", with(groups(&hs, 1), nodata("pass")));
    let o = deploy(&ctx, &NullSink, &r[1]);
    assert_eq!(o.status, JournalStatus::Succeeded, "{}", o.message);
    assert!(
        o.message
            .contains("never got data (not counted as passes): h1 journal, h2 journal"),
        "{}",
        o.message
    );
    let j = journal(&ctx, &o.deploy_id);
    let c = &j.hosts["h1"].checks[1];
    assert_eq!(c.outcome, applier::checks::Outcome::Inconclusive);
    assert_eq!(c.policy, Some(applier::checks::InconclusivePolicy::Pass));
    // `fail`: the canary fails on it and everything is rolled back. (A metrics check with no
    // backend: no data; the restore's fast path skips it, so the canary comes back.)
    let nodata = |policy: &str| {
        json!({"checks": {"extra": [
            {"type": "metrics", "name": "5xx", "query": "q", "threshold": 0.1, "window": "1s", "inconclusive": policy}
        ]}})
    };
    let ctx = bed.ctx("nd2", with(groups(&hs, 1), nodata("fail")));
    let o = deploy(&ctx, &NullSink, &r[3]);
    assert_eq!(o.status, JournalStatus::RolledBack, "{}", o.message);
    assert!(o.message.contains("never got data"), "{}", o.message);
    // `retry` until its deadline: evaluated again, then a failure.
    let mut retry = nodata("retry");
    retry["checks"]["extra"][0]["deadline"] = json!("2s");
    let ctx = bed.ctx("nd3", with(groups(&hs, 1), retry));
    let t0 = std::time::Instant::now();
    let o = deploy(&ctx, &NullSink, &r[3]);
    assert_eq!(o.status, JournalStatus::RolledBack, "{}", o.message);
    assert!(t0.elapsed() >= Duration::from_secs(2));
    let j = journal(&ctx, &o.deploy_id);
    let s = j
        .steps
        .iter()
        .find(|s| s.step == records::Step::Checks && !s.ok)
        .and_then(|s| s.detail.clone())
        .unwrap();
    assert!(s.contains("no data until its deadline"), "{s}");
}

#[test]
fn a_rollback_takes_the_fast_path_and_says_so() {
    let hs = ["h1", "h2"];
    let (bed, r) = bed(&hs);
    let ctx = bed.ctx("fast", groups(&hs, 1));
    assert_eq!(
        deploy(&ctx, &NullSink, &r[1]).status,
        JournalStatus::Succeeded
    );
    // A windowed metrics check with no backend would fail every host (no data, policy fail);
    // the rollback skips it, keeps the logs check, and names what it skipped.
    let ctx = bed.ctx(
        "fast",
        with(
            groups(&hs, 1),
            json!({"canary_bake": "30s", "checks": {"extra": [
                {"type": "metrics", "name": "5xx", "query": "x", "threshold": 0.1, "window": "60s"}
            ]}}),
        ),
    );
    let t0 = std::time::Instant::now();
    let o = engine::rollback(&ctx, &NullSink, &DeployOptions::default()).unwrap();
    assert_eq!(o.status, JournalStatus::Succeeded, "{}", o.message);
    assert!(
        t0.elapsed() < Duration::from_secs(20),
        "no bake, no metrics window"
    );
    let j = journal(&ctx, &o.deploy_id);
    let notes: Vec<&str> = j
        .steps
        .iter()
        .filter(|s| s.step == records::Step::FastRollback)
        .filter_map(|s| s.detail.as_deref())
        .collect();
    assert!(notes[0].contains("bake, canary analysis and windowed metrics checks skipped"));
    assert!(notes.iter().any(|n| n.ends_with(": 5xx")), "{notes:?}");
    for h in hs {
        let names: Vec<&str> = j.hosts[h].checks.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, ["logs >= error"], "{h}");
        bed.assert_serves(h, A);
    }
}

#[test]
fn a_watch_alarm_that_cannot_be_read_fails_closed_unless_its_policy_says_pass() {
    let hs = ["h1", "h2"];
    let (bed, r) = bed(&hs);
    // Nothing listens on port 1: every reading of the alarm fails.
    let watch = |policy: Option<&str>| {
        let mut a = json!({"name": "svc-5xx", "source": "prometheus", "url": "http://127.0.0.1:1",
                           "query": "sum(rate(x[{window}]))", "threshold": 0.1});
        if let Some(p) = policy {
            a["inconclusive"] = json!(p);
        }
        with(
            groups(&hs, 1),
            json!({"canary_bake": "3s", "checks": {"watch": {"interval": "200ms", "window": "1s", "alarms": [a]}}}),
        )
    };
    // The default (`retry`, 3 intervals without data): the run stops during the bake.
    let ctx = bed.ctx("wnd", watch(None));
    let o = deploy(&ctx, &NullSink, &r[1]);
    assert_eq!(o.status, JournalStatus::RolledBack, "{}", o.message);
    assert!(o.message.contains("watch svc-5xx"), "{}", o.message);
    assert!(o.message.contains("no-data policy retry"), "{}", o.message);
    bed.assert_serves("h2", A);
    // `fail`: the same, at the first reading.
    let ctx = bed.ctx("wnd2", watch(Some("fail")));
    let o = deploy(&ctx, &NullSink, &r[1]);
    assert_eq!(o.status, JournalStatus::RolledBack, "{}", o.message);
    assert!(o.message.contains("no-data policy fail"), "{}", o.message);
    // An explicit `pass`: the deploy goes on, and the summary says the alarm never had data.
    let ctx = bed.ctx("wnd3", watch(Some("pass")));
    let o = deploy(&ctx, &NullSink, &r[1]);
    assert_eq!(o.status, JournalStatus::Succeeded, "{}", o.message);
    assert!(
        o.message
            .contains("never got data (not counted as passes): watch svc-5xx"),
        "{}",
        o.message
    );
}
