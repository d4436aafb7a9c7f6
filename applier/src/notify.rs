//! Deploy notifications: start, finish, abort, rollback and needs-human events sent to the
//! env's sinks (`notify:` in the inventory), beside the event stream.
//!
//! [`Notifier`] wraps the caller's [`EventSink`]: every event goes on to it unchanged, and the
//! ones that matter become a [`Notice`] delivered in the background, so a slow or dead sink
//! never holds the deploy up. [`Notifier::finish`] waits for outstanding deliveries at most
//! the given bound and reports each.
//!
//! - `command`: run with the notice as `APPLIER_*` environment variables (`APPLIER_EVENT`,
//!   `APPLIER_ENV`, `APPLIER_DEPLOY_ID`, `APPLIER_KIND`, `APPLIER_STATUS`, `APPLIER_COMMIT`,
//!   `APPLIER_ARTIFACT`, `APPLIER_DEPLOY_TYPE`, `APPLIER_WHO`, `APPLIER_MESSAGE`,
//!   `APPLIER_DETAIL`, `APPLIER_DURATION_S`, and the whole notice as `APPLIER_JSON`) and
//!   nothing else of the deployer's environment (`PATH` is `/usr/local/bin:/usr/bin:/bin`).
//!   No value is ever put into its command line. Killed at its timeout.
//! - `webhook`: the notice as a JSON `POST`; a non-2xx answer or a transport error is retried
//!   `retries` times (0.5 s, 1 s, 2 s ... apart), each attempt bounded by `timeout`.

use std::io::Read;
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::sync::mpsc::{Receiver, Sender, channel};
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::config::policy::{CommandLine, NotifyEvent, NotifySink};
use crate::events::{Event, EventSink};
use crate::records::{DeployKind, JournalStatus};

/// What a sink is told.
#[derive(Clone, Debug, Serialize)]
pub struct Notice {
    pub event: NotifyEvent,
    pub env: String,
    pub deploy_id: Option<String>,
    pub kind: Option<DeployKind>,
    pub status: Option<JournalStatus>,
    pub commit: Option<String>,
    pub artifact: Option<String>,
    pub deploy_type: Option<String>,
    pub who: String,
    pub message: String,
    /// The abort reason or the outcome message.
    pub detail: Option<String>,
    /// Seconds since the start, on the events after it.
    pub duration_s: Option<f64>,
    pub at: String,
}

/// How one delivery went.
#[derive(Clone, Debug, Serialize)]
pub struct Delivery {
    pub sink: String,
    pub event: NotifyEvent,
    pub ok: bool,
    pub attempts: u32,
    pub detail: String,
}

/// What the notices have in common: the env, who and why.
#[derive(Clone, Debug)]
pub struct NoticeBase {
    pub env: String,
    pub who: String,
    pub message: String,
}

#[derive(Default)]
struct Current {
    started: Option<Instant>,
    deploy_id: Option<String>,
    kind: Option<DeployKind>,
    commit: Option<String>,
    artifact: Option<String>,
    deploy_type: Option<String>,
}

/// An [`EventSink`] that also sends notices to the env's sinks.
pub struct Notifier<'a> {
    inner: &'a dyn EventSink,
    sinks: Vec<NotifySink>,
    base: NoticeBase,
    current: Mutex<Current>,
    tx: Mutex<Sender<Delivery>>,
    rx: Mutex<Receiver<Delivery>>,
    sent: Mutex<usize>,
}

impl<'a> Notifier<'a> {
    pub fn new(inner: &'a dyn EventSink, sinks: &[NotifySink], base: NoticeBase) -> Self {
        let (tx, rx) = channel();
        Notifier {
            inner,
            sinks: sinks.to_vec(),
            base,
            current: Mutex::new(Current::default()),
            tx: Mutex::new(tx),
            rx: Mutex::new(rx),
            sent: Mutex::new(0),
        }
    }

    /// Waits up to `bound` for the deliveries still under way; reports every one that ended
    /// and one line per delivery that did not end in time.
    pub fn finish(&self, bound: Duration) -> Vec<Delivery> {
        let deadline = Instant::now() + bound;
        let expected = *self.sent.lock().unwrap();
        let rx = self.rx.lock().unwrap();
        let mut out = Vec::new();
        while out.len() < expected {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(d) => out.push(d),
                Err(_) => break,
            }
        }
        for _ in out.len()..expected {
            out.push(Delivery {
                sink: "-".into(),
                event: NotifyEvent::Finish,
                ok: false,
                attempts: 0,
                detail: format!("still under way after {}s; not waited for", bound.as_secs()),
            });
        }
        out
    }

    fn notice(
        &self,
        event: NotifyEvent,
        status: Option<JournalStatus>,
        detail: Option<String>,
    ) -> Notice {
        let c = self.current.lock().unwrap();
        Notice {
            event,
            env: self.base.env.clone(),
            deploy_id: c.deploy_id.clone(),
            kind: c.kind,
            status,
            commit: c.commit.clone(),
            artifact: c.artifact.clone(),
            deploy_type: c.deploy_type.clone(),
            who: self.base.who.clone(),
            message: self.base.message.clone(),
            detail,
            duration_s: (event != NotifyEvent::Start)
                .then(|| c.started.map(|t| t.elapsed().as_secs_f64()))
                .flatten(),
            at: crate::target::now_rfc3339(),
        }
    }

    fn send(&self, n: Notice) {
        for sink in self.sinks.iter().filter(|s| s.events().contains(&n.event)) {
            *self.sent.lock().unwrap() += 1;
            let tx = self.tx.lock().unwrap().clone();
            let (sink, n) = (sink.clone(), n.clone());
            std::thread::spawn(move || {
                let _ = tx.send(deliver(&sink, &n));
            });
        }
    }
}

impl EventSink for Notifier<'_> {
    fn emit(&self, e: &Event) {
        self.inner.emit(e);
        match e {
            Event::Plan {
                deploy_id,
                kind,
                artifact,
                commit,
                deploy_type,
                dry_run: false,
                ..
            } => {
                // Start is sent with the first event after the plan: by then the lease is
                // held (a deploy refused at the lease never started).
                let mut c = self.current.lock().unwrap();
                *c = Current {
                    started: None,
                    deploy_id: Some(deploy_id.clone()),
                    kind: Some(*kind),
                    commit: commit.clone(),
                    artifact: artifact.map(|a| a.to_string()),
                    deploy_type: deploy_type.map(|t| format!("{t:?}").to_lowercase()),
                };
            }
            Event::Plan { .. } | Event::Promote { .. } => {}
            _ => {
                let first = {
                    let mut c = self.current.lock().unwrap();
                    let first = c.started.is_none() && c.deploy_id.is_some();
                    if first {
                        c.started = Some(Instant::now());
                    }
                    first
                };
                if first {
                    self.send(self.notice(NotifyEvent::Start, None, None));
                }
                self.after_start(e);
            }
        }
    }
}

impl Notifier<'_> {
    fn after_start(&self, e: &Event) {
        match e {
            Event::Abort { reason } => {
                self.send(self.notice(NotifyEvent::Abort, None, Some(reason.clone())))
            }
            Event::Finished {
                deploy_id,
                status,
                message,
                ..
            } => {
                {
                    let mut c = self.current.lock().unwrap();
                    c.deploy_id.get_or_insert_with(|| deploy_id.clone());
                }
                let event = match status {
                    JournalStatus::RolledBack => NotifyEvent::Rollback,
                    JournalStatus::NeedsHuman => NotifyEvent::NeedsHuman,
                    _ => NotifyEvent::Finish,
                };
                self.send(self.notice(event, Some(*status), Some(message.clone())));
            }
            _ => {}
        }
    }
}

fn sink_name(s: &NotifySink) -> String {
    match s {
        NotifySink::Command {
            command: CommandLine::Argv(a),
            ..
        } => format!("command {}", a.first().cloned().unwrap_or_default()),
        NotifySink::Command {
            command: CommandLine::Shell(_),
            ..
        } => "command (sh -c)".into(),
        NotifySink::Webhook { url, .. } => format!("webhook {url}"),
    }
}

/// Delivers one notice to one sink (blocking, bounded by the sink's timeouts).
pub fn deliver(sink: &NotifySink, n: &Notice) -> Delivery {
    let body = serde_json::to_value(n).expect("notice serialises");
    let (ok, attempts, detail) = match sink {
        NotifySink::Command {
            command, timeout, ..
        } => {
            let r = run_command(command, n, &body, timeout.0);
            (r.is_ok(), 1, r.unwrap_or_else(|e| e))
        }
        NotifySink::Webhook {
            url,
            timeout,
            retries,
            ..
        } => post(url, &body, timeout.0, *retries),
    };
    Delivery {
        sink: sink_name(sink),
        event: n.event,
        ok,
        attempts,
        detail,
    }
}

fn run_command(
    c: &CommandLine,
    n: &Notice,
    body: &serde_json::Value,
    timeout: Duration,
) -> Result<String, String> {
    let mut cmd = match c {
        CommandLine::Argv(a) => {
            let mut cmd = Command::new(&a[0]);
            cmd.args(&a[1..]);
            cmd
        }
        CommandLine::Shell(s) => {
            let mut cmd = Command::new("sh");
            cmd.arg("-c").arg(s);
            cmd
        }
    };
    let opt = |v: &Option<String>| v.clone().unwrap_or_default();
    let status = n.status.map(|s| s.as_str().to_string()).unwrap_or_default();
    let event = serde_json::to_value(n.event)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default();
    cmd.env_clear()
        .env("PATH", "/usr/local/bin:/usr/bin:/bin")
        .env("APPLIER_EVENT", event)
        .env("APPLIER_ENV", &n.env)
        .env("APPLIER_DEPLOY_ID", opt(&n.deploy_id))
        .env("APPLIER_KIND", n.kind.map(|k| k.as_str()).unwrap_or(""))
        .env("APPLIER_STATUS", status)
        .env("APPLIER_COMMIT", opt(&n.commit))
        .env("APPLIER_ARTIFACT", opt(&n.artifact))
        .env("APPLIER_DEPLOY_TYPE", opt(&n.deploy_type))
        .env("APPLIER_WHO", &n.who)
        .env("APPLIER_MESSAGE", &n.message)
        .env("APPLIER_DETAIL", opt(&n.detail))
        .env(
            "APPLIER_DURATION_S",
            n.duration_s.map(|d| format!("{d:.1}")).unwrap_or_default(),
        )
        .env("APPLIER_JSON", body.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().map_err(|e| format!("starting it: {e}"))?;
    let t0 = Instant::now();
    loop {
        match child.try_wait() {
            Ok(Some(st)) => {
                let mut err = String::new();
                if let Some(mut e) = child.stderr.take() {
                    let _ = e.by_ref().take(2048).read_to_string(&mut err);
                }
                return if st.success() {
                    Ok("exit 0".into())
                } else {
                    Err(format!("{st}: {}", err.trim()))
                };
            }
            Ok(None) if t0.elapsed() >= timeout => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("killed after {}s", timeout.as_secs()));
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(20)),
            Err(e) => return Err(format!("waiting for it: {e}")),
        }
    }
}

fn post(
    url: &str,
    body: &serde_json::Value,
    timeout: Duration,
    retries: u32,
) -> (bool, u32, String) {
    let agent = ureq::Agent::new_with_config(
        ureq::Agent::config_builder()
            .timeout_global(Some(timeout))
            .http_status_as_error(false)
            .build(),
    );
    let mut last = String::new();
    for attempt in 0..=retries {
        if attempt > 0 {
            std::thread::sleep(Duration::from_millis(500 << (attempt - 1).min(5)));
        }
        match agent.post(url).send_json(body) {
            Ok(r) if r.status().is_success() => {
                return (true, attempt + 1, format!("HTTP {}", r.status().as_u16()));
            }
            Ok(r) => last = format!("HTTP {}", r.status().as_u16()),
            Err(e) => last = e.to_string(),
        }
    }
    (false, retries + 1, last)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_command_gets_the_notice_as_variables_and_nothing_spliced() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("out");
        // The message holds shell syntax: it must arrive as data.
        let sink = NotifySink::Command {
            command: CommandLine::Shell(format!(
                "printf '%s|%s|%s|%s' \"$APPLIER_EVENT\" \"$APPLIER_MESSAGE\" \"$APPLIER_WHO\" \"${{HOME:-nohome}}\" > {}",
                out.display()
            )),
            events: vec![NotifyEvent::Start],
            timeout: model::Dur::secs(5),
        };
        let n = Notice {
            event: NotifyEvent::Start,
            env: "beta".into(),
            deploy_id: Some("d1".into()),
            kind: Some(DeployKind::Deploy),
            status: None,
            commit: None,
            artifact: None,
            deploy_type: None,
            who: "alice@h".into(),
            message: "fix $(touch pwned); `id`".into(),
            detail: None,
            duration_s: None,
            at: "t".into(),
        };
        let d = deliver(&sink, &n);
        assert!(d.ok, "{d:?}");
        let got = std::fs::read_to_string(&out).unwrap();
        assert_eq!(got, "start|fix $(touch pwned); `id`|alice@h|nohome");
        assert!(!dir.path().join("pwned").exists() && !std::path::Path::new("pwned").exists());
        let slow = NotifySink::Command {
            command: CommandLine::Argv(vec!["sleep".into(), "5".into()]),
            events: vec![NotifyEvent::Start],
            timeout: model::Dur(Duration::from_millis(200)),
        };
        let t0 = Instant::now();
        let d = deliver(&slow, &n);
        assert!(!d.ok && d.detail.contains("killed"), "{d:?}");
        assert!(t0.elapsed() < Duration::from_secs(3));
    }
}
