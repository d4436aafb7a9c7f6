//! Golden tests of the wire format: each request and answer as the JSON line it travels as.
//! A change here is a protocol change: bump `PROTOCOL_VERSION` with it.

use super::*;
use crate::target::{HostRoot, ServeSummary, serve};
use model::names::{CommitId, DeployId, Name};

fn digest() -> Digest {
    Digest::of(b"m")
}

const D: &str = "sha256:62c66a7a5dd70c3146618063c344e531e6d4b59e379808443ce962b3abd63c5a";

fn release() -> ReleaseRef {
    ReleaseRef {
        commit: CommitId::parse(&"c".repeat(40)).unwrap(),
        manifest: digest(),
    }
}

fn fence() -> Fence {
    Fence {
        env: Name::parse("staging").unwrap(),
        token: 7,
        deploy_id: DeployId::parse("20260101T000000Z-0a1b2c").unwrap(),
    }
}

const F: &str = r#""fence":{"env":"staging","token":7,"deploy_id":"20260101T000000Z-0a1b2c"}"#;

/// `value` serialises to `json` exactly, and `json` parses back to `value`.
fn golden<T>(value: &T, json: &str)
where
    T: Serialize + serde::de::DeserializeOwned + PartialEq + std::fmt::Debug,
{
    assert_eq!(serde_json::to_string(value).unwrap(), json);
    assert_eq!(&serde_json::from_str::<T>(json).unwrap(), value, "{json}");
}

#[test]
fn digest_of_the_golden_manifest() {
    assert_eq!(digest().to_string(), D);
}

#[test]
fn requests_on_the_wire() {
    let c = "c".repeat(40);
    let cases: Vec<(HostRequest, String)> = vec![
        (
            HostRequest::Hello(Hello {
                protocol: 1,
                version: "0.1.0".into(),
            }),
            r#"{"op":"hello","protocol":1,"version":"0.1.0"}"#.into(),
        ),
        (
            HostRequest::Preflight(PreflightRequest {
                min_free_bytes: 1024,
                node: Some("node".into()),
                fence: Some(fence()),
            }),
            format!(r#"{{"op":"preflight","min_free_bytes":1024,"node":"node",{F}}}"#),
        ),
        (
            HostRequest::FetchUrls(FetchUrlsRequest {
                digest: digest(),
                manifest: "m".into(),
                urls: [(
                    "blobs/sha256/ab".to_string(),
                    "https://s3/x?sig".to_string(),
                )]
                .into(),
                store: None,
                fence: Some(fence()),
            }),
            format!(
                r#"{{"op":"fetch-urls","digest":"{D}","manifest":"m","urls":{{"blobs/sha256/ab":"https://s3/x?sig"}},"store":null,{F}}}"#
            ),
        ),
        (
            HostRequest::ServiceSpec(ReleaseRequest {
                release: release(),
                fence: None,
            }),
            format!(r#"{{"op":"service-spec","release":{{"commit":"{c}","manifest":"{D}"}}}}"#),
        ),
        (
            HostRequest::Render(RenderRequest {
                release: release(),
                env: Name::parse("staging").unwrap(),
                port: Some(7231),
                values: [("services.0.conf.host".to_string(), "127.0.0.1".into())].into(),
                ops: None,
                fence: Some(fence()),
            }),
            format!(
                r#"{{"op":"render","release":{{"commit":"{c}","manifest":"{D}"}},"env":"staging","port":7231,"values":{{"services.0.conf.host":"127.0.0.1"}},{F}}}"#
            ),
        ),
        (
            HostRequest::Switch(ReleaseRequest {
                release: release(),
                fence: Some(fence()),
            }),
            format!(
                r#"{{"op":"switch","release":{{"commit":"{c}","manifest":"{D}"}},{F}}}"#
            ),
        ),
        (
            HostRequest::Start(StartRequest {
                port: Some(7231),
                env: [("NODE_ENV".to_string(), "production".to_string())].into(),
                fence: Some(fence()),
            }),
            format!(r#"{{"op":"start","port":7231,"env":{{"NODE_ENV":"production"}},{F}}}"#),
        ),
        (
            HostRequest::WaitReady(ReadyRequest {
                address: "127.0.0.1".into(),
                port: 7231,
                timeout_ms: 30000,
                probe: None,
            }),
            r#"{"op":"wait-ready","address":"127.0.0.1","port":7231,"timeout_ms":30000}"#.into(),
        ),
        (
            HostRequest::WaitReady(ReadyRequest {
                address: "127.0.0.1".into(),
                port: 7231,
                timeout_ms: 30000,
                probe: Some(model::service::ReadySpec {
                    log: Some("listening on".into()),
                    min_healthy: Some(model::Dur::secs(2)),
                    ..Default::default()
                }),
            }),
            r#"{"op":"wait-ready","address":"127.0.0.1","port":7231,"timeout_ms":30000,"probe":{"log":"listening on","min_healthy":"2s"}}"#.into(),
        ),
        (
            HostRequest::Stop(StopRequest {
                fence: Some(fence()),
            }),
            format!(r#"{{"op":"stop",{F}}}"#),
        ),
        (
            HostRequest::Stop(StopRequest::default()),
            r#"{"op":"stop"}"#.into(),
        ),
        (HostRequest::Status, r#"{"op":"status"}"#.into()),
        (HostRequest::Health, r#"{"op":"health"}"#.into()),
        (
            HostRequest::MarkGood(ReleaseRequest {
                release: release(),
                fence: Some(fence()),
            }),
            format!(
                r#"{{"op":"mark-good","release":{{"commit":"{c}","manifest":"{D}"}},{F}}}"#
            ),
        ),
        (
            HostRequest::Prune(PruneRequest {
                keep: 3,
                fence: Some(fence()),
            }),
            format!(r#"{{"op":"prune","keep":3,{F}}}"#),
        ),
        (
            HostRequest::ReadFile(ReadFileRequest {
                path: "/srv/x/logs/a.log".into(),
            }),
            r#"{"op":"read-file","path":"/srv/x/logs/a.log"}"#.into(),
        ),
        (
            HostRequest::Exec(ExecRequest {
                cmd: "journalctl -u x --since @\"$APPLIER_SINCE\"".into(),
                timeout_ms: 5000,
                env: [("APPLIER_SINCE".to_string(), "1700000000".to_string())].into(),
            }),
            r#"{"op":"exec","cmd":"journalctl -u x --since @\"$APPLIER_SINCE\"","timeout_ms":5000,"env":{"APPLIER_SINCE":"1700000000"}}"#.into(),
        ),
    ];
    for (req, json) in &cases {
        golden(req, json);
    }
}

#[test]
fn answers_on_the_wire() {
    let c = "c".repeat(40);
    let run = RunInfo {
        pid: 42,
        release: c.clone(),
        port: Some(7231),
        log: "/srv/x/logs/c-1.log".into(),
        started_at: "2024-01-01T00:00:00.000Z".into(),
        started_unix_ms: 1704067200000,
    };
    let state = HostState {
        current: Some(release()),
        last_good: None,
        previous_good: None,
        step: Some(StepInProgress {
            op: "switch".into(),
            release: Some(c.clone()),
            started_at: "2024-01-01T00:00:00.000Z".into(),
        }),
        fences: [("staging".to_string(), fence())].into(),
        updated_at: "2024-01-01T00:00:01.000Z".into(),
    };
    let state_json = format!(
        r#"{{"current":{{"commit":"{c}","manifest":"{D}"}},"last_good":null,"previous_good":null,"step":{{"op":"switch","release":"{c}","started_at":"2024-01-01T00:00:00.000Z"}},"fences":{{"staging":{{"env":"staging","token":7,"deploy_id":"20260101T000000Z-0a1b2c"}}}},"updated_at":"2024-01-01T00:00:01.000Z"}}"#
    );
    let run_json = format!(
        r#""pid":42,"release":"{c}","port":7231,"log":"/srv/x/logs/c-1.log","started_at":"2024-01-01T00:00:00.000Z","started_unix_ms":1704067200000"#
    );
    let cases: Vec<(HostResponse, String)> = vec![
        (
            HostResponse::Hello(HelloReport {
                protocol: 1,
                version: "0.1.0".into(),
            }),
            r#"{"op":"hello","protocol":1,"version":"0.1.0"}"#.into(),
        ),
        (
            HostResponse::Preflight(PreflightReport {
                root: "/srv/x".into(),
                free_bytes: 5,
                node_abi: Some("115".into()),
                os: "linux".into(),
                arch: "x64".into(),
                current: None,
            }),
            r#"{"op":"preflight","root":"/srv/x","free_bytes":5,"node_abi":"115","os":"linux","arch":"x64","current":null}"#.into(),
        ),
        (
            HostResponse::FetchUrls(FetchReport {
                release: c.clone(),
                cached: false,
                downloaded: 10,
                entries: 3,
            }),
            format!(
                r#"{{"op":"fetch-urls","release":"{c}","cached":false,"downloaded":10,"entries":3}}"#
            ),
        ),
        (
            HostResponse::Render(RenderReport {
                config: "/srv/x/config.yaml".into(),
                port: None,
            }),
            r#"{"op":"render","config":"/srv/x/config.yaml","port":null}"#.into(),
        ),
        (
            HostResponse::RenderPreview(PreviewReport {
                text: "a: <masked>\n".into(),
                ops_keys: vec!["/a".into()],
                ops_file: Some("/etc/svc/ops.yaml".into()),
            }),
            r#"{"op":"render-preview","text":"a: <masked>\n","ops_keys":["/a"],"ops_file":"/etc/svc/ops.yaml"}"#.into(),
        ),
        (
            HostResponse::Switch(SwitchReport {
                from: None,
                to: c.clone(),
            }),
            format!(r#"{{"op":"switch","from":null,"to":"{c}"}}"#),
        ),
        (
            HostResponse::Start(run.clone()),
            format!(r#"{{"op":"start",{run_json}}}"#),
        ),
        (
            HostResponse::WaitReady(ReadyReport {
                after_ms: 12,
                detail: None,
            }),
            r#"{"op":"wait-ready","after_ms":12}"#.into(),
        ),
        (
            HostResponse::Stop(StopReport {
                stopped: Some(42),
                killed: true,
            }),
            r#"{"op":"stop","stopped":42,"killed":true}"#.into(),
        ),
        (
            HostResponse::Status(HostStatus {
                current: Some(c.clone()),
                state: state.clone(),
                running: Some(run),
                releases: vec![c.clone()],
            }),
            format!(
                r#"{{"op":"status","current":"{c}","state":{state_json},"running":{{{run_json}}},"releases":["{c}"]}}"#
            ),
        ),
        (
            HostResponse::MarkGood(state),
            format!(r#"{{"op":"mark-good",{}"#, &state_json[1..]),
        ),
        (
            HostResponse::Prune(PruneReport {
                removed: vec!["a".into()],
                kept: vec![],
                ..Default::default()
            }),
            r#"{"op":"prune","removed":["a"],"kept":[]}"#.into(),
        ),
        (
            HostResponse::ReadFile(FileText { text: "x\n".into() }),
            r#"{"op":"read-file","text":"x\n"}"#.into(),
        ),
        (
            HostResponse::Exec(ExecOutput {
                status: 0,
                stdout: "o".into(),
                stderr: "".into(),
            }),
            r#"{"op":"exec","status":0,"stdout":"o","stderr":""}"#.into(),
        ),
        (
            HostResponse::Health(HealthReport {
                current: Some(c.clone()),
                pid: Some(42),
                port: Some(7231),
                port_bound: Some(true),
                free_bytes: 5,
            }),
            format!(
                r#"{{"op":"health","current":"{c}","pid":42,"port":7231,"port_bound":true,"free_bytes":5}}"#
            ),
        ),
        (
            HostResponse::Error(RemoteError {
                kind: ErrorKind::NotFetched,
                message: "release x is not on this host (fetch it first)".into(),
            }),
            r#"{"op":"error","kind":"not-fetched","message":"release x is not on this host (fetch it first)"}"#.into(),
        ),
    ];
    for (resp, json) in &cases {
        golden(resp, json);
    }
}

/// The service spec answer carries the parsed `deploy/service.yaml` (the fixture's, with
/// every kind of check) and parses back equal.
#[test]
fn service_spec_answer_round_trips() {
    let text = include_str!("../../fixtures/service/deploy/service.yaml");
    let spec = crate::service::ServiceSpec::parse(text).unwrap();
    assert_eq!(spec.checks.len(), 4);
    let resp = HostResponse::ServiceSpec(spec);
    let line = serde_json::to_string(&resp).unwrap();
    assert!(
        line.starts_with(r#"{"op":"service-spec","name":"fixture-service","port":7231,"#),
        "{line}"
    );
    assert_eq!(serde_json::from_str::<HostResponse>(&line).unwrap(), resp);
}

#[test]
fn an_error_keeps_its_kind_across_the_wire() {
    let e = HostError::Timeout {
        port: 1,
        secs: 2,
        detail: "d".into(),
    };
    let line = serde_json::to_string(&HostResponse::Error(e.to_remote())).unwrap();
    let back: HostResponse = serde_json::from_str(&line).unwrap();
    let err = back.into_result().unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Timeout);
    assert_eq!(err.to_string(), e.to_string());
}

#[test]
fn unknown_fields_in_a_request_are_refused() {
    let e = crate::target::serve::parse_request(r#"{"op":"prune","keep":1,"kep":2}"#).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Protocol);
    assert!(e.to_string().contains("kep"), "{e}");
}

#[test]
fn manifest_must_match_its_digest() {
    let req = FetchUrlsRequest {
        digest: Digest::of(b"other"),
        manifest: "{}".into(),
        urls: BTreeMap::new(),
        store: None,
        fence: None,
    };
    let e = req.verified_manifest().unwrap_err();
    assert!(e.to_string().contains("hashes to"), "{e}");
}

/// Runs one session of `lines` against an empty root.
fn session(lines: &[&str], label: Option<&str>) -> (ServeSummary, Vec<HostResponse>) {
    let dir = tempfile::tempdir().unwrap();
    let root = HostRoot::new(dir.path());
    let input = lines.join("\n");
    let mut out = Vec::new();
    let sum = serve(&root, input.as_bytes(), &mut out, label).unwrap();
    let answers = String::from_utf8(out)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    (sum, answers)
}

fn hello(protocol: u32) -> String {
    serde_json::to_string(&HostRequest::Hello(Hello {
        protocol,
        version: "x".into(),
    }))
    .unwrap()
}

fn error_of(r: &HostResponse) -> &RemoteError {
    match r {
        HostResponse::Error(e) => e,
        other => panic!("expected an error answer, got {other:?}"),
    }
}

#[test]
fn a_session_answers_each_request_after_the_hello() {
    let h = hello(PROTOCOL_VERSION);
    let (sum, answers) = session(
        &[&h, r#"{"op":"status"}"#, r#"{"op":"prune","keep":1}"#],
        None,
    );
    assert_eq!((sum.answered, sum.failed, sum.refused), (3, 0, false));
    assert!(
        matches!(&answers[0], HostResponse::Hello(r) if r.protocol == PROTOCOL_VERSION && r.version == crate::VERSION)
    );
    assert!(matches!(&answers[1], HostResponse::Status(s) if s.current.is_none()));
    assert!(matches!(&answers[2], HostResponse::Prune(_)));
}

#[test]
fn another_protocol_version_is_refused_before_anything_runs() {
    let h = hello(PROTOCOL_VERSION + 1);
    let (sum, answers) = session(&[&h, r#"{"op":"status"}"#], None);
    assert!(sum.refused);
    assert_eq!(
        answers.len(),
        1,
        "nothing after the refused hello: {answers:?}"
    );
    let e = error_of(&answers[0]);
    assert_eq!(e.kind, ErrorKind::Version);
    assert!(
        e.message.contains(&format!(
            "version {} is not this applier's ({PROTOCOL_VERSION})",
            PROTOCOL_VERSION + 1
        )),
        "{e:?}"
    );
}

#[test]
fn a_request_before_the_hello_is_refused() {
    let (sum, answers) = session(&[r#"{"op":"stop"}"#], None);
    assert!(sum.refused);
    let e = error_of(&answers[0]);
    assert_eq!(e.kind, ErrorKind::Protocol);
    assert!(e.message.contains("must open with a hello"), "{e:?}");
}

#[test]
fn an_unknown_request_is_refused_and_ends_the_session() {
    let h = hello(PROTOCOL_VERSION);
    let (sum, answers) = session(&[&h, r#"{"op":"frobnicate"}"#, r#"{"op":"status"}"#], None);
    assert!(sum.refused);
    assert_eq!(answers.len(), 2, "{answers:?}");
    let e = error_of(&answers[1]);
    assert_eq!(e.kind, ErrorKind::Protocol);
    assert!(e.message.contains("unknown request `frobnicate`"), "{e:?}");
    for bad in ["not json", r#"{"no_op":1}"#, r#"["status"]"#] {
        let (sum, answers) = session(&[&h, bad], None);
        assert!(sum.refused, "{bad}");
        assert_eq!(error_of(&answers[1]).kind, ErrorKind::Protocol, "{bad}");
    }
}

#[test]
fn a_failed_operation_is_an_error_answer_with_its_kind_and_the_session_goes_on() {
    let h = hello(PROTOCOL_VERSION);
    let c = "c".repeat(40);
    let switch = format!(r#"{{"op":"switch","release":{{"commit":"{c}","manifest":"{D}"}}}}"#);
    let (sum, answers) = session(&[&h, &switch, r#"{"op":"status"}"#], None);
    assert_eq!((sum.answered, sum.failed, sum.refused), (3, 1, false));
    assert_eq!(error_of(&answers[1]).kind, ErrorKind::NotFetched);
    assert!(matches!(&answers[2], HostResponse::Status(_)));
}

#[test]
fn a_batch_runs_its_requests_in_order_and_stops_at_the_first_that_fails() {
    let h = hello(PROTOCOL_VERSION);
    let c = "c".repeat(40);
    let switch = format!(r#"{{"op":"switch","release":{{"commit":"{c}","manifest":"{D}"}}}}"#);
    let batch =
        format!(r#"{{"op":"batch","requests":[{{"op":"status"}},{switch},{{"op":"stop"}}]}}"#);
    let (sum, answers) = session(&[&h, &batch], Some("batch"));
    assert_eq!((sum.answered, sum.failed, sum.refused), (2, 0, false));
    let HostResponse::Batch(b) = &answers[1] else {
        panic!("not a batch answer: {answers:?}");
    };
    assert_eq!(
        b.answers.len(),
        2,
        "the stop after the failed switch ran: {b:?}"
    );
    assert!(matches!(&b.answers[0], HostResponse::Status(_)));
    assert_eq!(error_of(&b.answers[1]).kind, ErrorKind::NotFetched);
    // A batch holds no batch and no hello: refused whole, nothing run.
    for inner in [batch.as_str(), h.as_str()] {
        let nested = format!(r#"{{"op":"batch","requests":[{{"op":"stop"}},{inner}]}}"#);
        let (_, answers) = session(&[&h, &nested], None);
        assert_eq!(error_of(&answers[1]).kind, ErrorKind::Protocol, "{nested}");
    }
}

#[test]
fn a_label_names_the_one_request_a_session_may_run() {
    let h = hello(PROTOCOL_VERSION);
    let (sum, answers) = session(&[&h, r#"{"op":"status"}"#], Some("stop"));
    assert!(sum.refused);
    assert!(error_of(&answers[1]).message.contains("labelled `stop`"));
    // Alone, with no input: a request without fields runs, one with fields is refused.
    let (sum, answers) = session(&[], Some("stop"));
    assert_eq!((sum.answered, sum.failed, sum.refused), (1, 0, false));
    assert!(matches!(&answers[0], HostResponse::Stop(s) if s.stopped.is_none()));
    let (sum, answers) = session(&[], Some("switch"));
    assert!(sum.refused);
    assert!(error_of(&answers[0]).message.contains("needs no fields"));
    let (sum, _) = session(&[], Some("hello"));
    assert!(sum.refused, "a hello is not a request to run alone");
}

/// Records from a host's peer are untrusted: a release whose commit is a path, an env that is
/// a path, a fence with a hostile deploy id, are protocol errors; nothing is run or written.
#[test]
fn hostile_names_in_requests_are_protocol_errors_and_write_nothing() {
    let h = hello(PROTOCOL_VERSION);
    let c = "c".repeat(40);
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    let cases = [
        format!(r#"{{"op":"switch","release":{{"commit":"../../escape","manifest":"{D}"}}}}"#),
        format!(
            r#"{{"op":"switch","release":{{"commit":"{}","manifest":"{D}"}}}}"#,
            "C".repeat(40)
        ),
        format!(
            r#"{{"op":"render","release":{{"commit":"{c}","manifest":"{D}"}},"env":"../prod","port":1}}"#
        ),
        format!(
            r#"{{"op":"render","release":{{"commit":"{c}","manifest":"{D}"}},"env":"a;b","port":1}}"#
        ),
        format!(r#"{{"op":"service-spec","release":{{"commit":"{c}/..","manifest":"{D}"}}}}"#),
        r#"{"op":"stop","fence":{"env":"e","token":1,"deploy_id":"$(touch x)"}}"#.to_string(),
        format!(r#"{{"op":"mark-good","release":{{"commit":"{c}","manifest":"sha256:../../x"}}}}"#),
    ];
    for bad in &cases {
        let r = HostRoot::new(&root);
        let input = [h.as_str(), bad.as_str()].join("\n");
        let mut out = Vec::new();
        let sum = serve(&r, input.as_bytes(), &mut out, None).unwrap();
        assert!(sum.refused, "{bad}");
        let answers: Vec<HostResponse> = String::from_utf8(out)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(error_of(&answers[1]).kind, ErrorKind::Protocol, "{bad}");
        assert!(!root.exists(), "{bad} wrote under the root");
    }
    assert_eq!(
        std::fs::read_dir(dir.path()).unwrap().count(),
        0,
        "something was written beside the root"
    );
}
