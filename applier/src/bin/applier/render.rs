//! Rendering the event stream: a live view (indicatif) on a terminal, plain lines on stderr,
//! or JSON lines on stdout (each event stamped with `ts`; `finished` also carries the exit
//! code). Data goes to stdout, progress to stderr.

use std::io::Write;
use std::sync::Mutex;

use applier::events::{Event, EventSink};

use crate::exit::Exit;

#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Render {
    Live,
    Plain,
    Json,
}

pub struct Sink {
    pub render: Render,
    live: Option<Live>,
    out: Mutex<()>,
}

struct Live {
    multi: indicatif::MultiProgress,
    bars: Mutex<std::collections::BTreeMap<String, indicatif::ProgressBar>>,
}

pub fn short(s: &str) -> &str {
    &s[..s.len().min(12)]
}

/// `: detail`, or nothing.
fn colon(detail: &Option<String>) -> String {
    detail
        .as_deref()
        .map(|d| format!(": {d}"))
        .unwrap_or_default()
}

impl Sink {
    pub fn new(render: Render) -> Self {
        let live = (render == Render::Live).then(|| Live {
            multi: indicatif::MultiProgress::new(),
            bars: Mutex::new(Default::default()),
        });
        Sink {
            render,
            live,
            out: Mutex::new(()),
        }
    }

    pub fn done(&self) {
        if let Some(l) = &self.live {
            for b in l.bars.lock().unwrap().values() {
                b.finish();
            }
        }
    }

    /// One JSON line on stdout.
    pub fn json(&self, v: &serde_json::Value) {
        let _g = self.out.lock().unwrap();
        let mut so = std::io::stdout().lock();
        let _ = writeln!(so, "{v}");
        let _ = so.flush();
    }

    fn bar(&self, host: &str) -> Option<indicatif::ProgressBar> {
        let l = self.live.as_ref()?;
        let mut bars = l.bars.lock().unwrap();
        Some(
            bars.entry(host.to_string())
                .or_insert_with(|| {
                    let b = l.multi.add(indicatif::ProgressBar::new_spinner());
                    b.set_style(
                        indicatif::ProgressStyle::with_template(
                            "{spinner} {prefix:<14} {wide_msg}",
                        )
                        .expect("template"),
                    );
                    b.set_prefix(host.to_string());
                    b.enable_steady_tick(std::time::Duration::from_millis(120));
                    b
                })
                .clone(),
        )
    }

    fn line(&self, s: String) {
        match &self.live {
            Some(l) => {
                let _ = l.multi.println(s);
            }
            None => {
                let _g = self.out.lock().unwrap();
                eprintln!("{s}");
            }
        }
    }

    /// A host's line: its bar's message in the live view, else a `[host]` line.
    fn host_line(&self, host: &str, msg: String, prefix: &str) {
        match self.bar(host) {
            Some(b) => b.set_message(msg),
            None => self.line(format!("[{host}] {prefix}{msg}")),
        }
    }
}

impl EventSink for Sink {
    fn emit(&self, e: &Event) {
        if self.render == Render::Json {
            let mut v = serde_json::to_value(e).expect("event serialises");
            v["ts"] = applier::target::now_rfc3339().into();
            if let Event::Finished { status, .. } = e {
                v["exit_code"] = Exit::of_status(*status).code().into();
            }
            self.json(&v);
            return;
        }
        let ok = |b: bool| if b { "ok" } else { "FAILED" };
        match e {
            Event::Promote {
                from,
                to,
                commit,
                artifact,
                from_deploy,
                ..
            } => {
                // Data: which artifact is promoted.
                let _g = self.out.lock().unwrap();
                println!(
                    "promote {} ({artifact}) from {from} (deploy {from_deploy}) to {to}",
                    short(commit)
                );
            }
            Event::Plan {
                deploy_id,
                env,
                kind,
                commit,
                groups,
                dry_run,
                deploy_type,
                ..
            } => {
                self.line(format!(
                    "{}{} {deploy_id} to {env}{} ({})",
                    if *dry_run { "plan: " } else { "" },
                    kind.as_str(),
                    commit
                        .as_deref()
                        .map(|c| format!(": {}", short(c)))
                        .unwrap_or_default(),
                    deploy_type
                        .map(|t| format!("{t:?}").to_lowercase())
                        .unwrap_or_else(|| "code".into())
                ));
                for g in groups {
                    self.line(format!("  group {}", g.name));
                    for h in &g.hosts {
                        self.line(format!(
                            "    {:<14} {} -> {}  checks: {}",
                            h.host,
                            h.from.as_deref().map(short).unwrap_or("-"),
                            short(&h.to),
                            if h.checks.is_empty() {
                                "-".into()
                            } else {
                                h.checks.join(", ")
                            }
                        ));
                    }
                }
            }
            Event::Preflight {
                host,
                ok: o,
                detail,
            } => self.line(format!("[{host}] preflight {}: {detail}", ok(*o))),
            Event::Fetch {
                host,
                ok: o,
                detail,
            } => self.line(format!("[{host}] fetch {}: {detail}", ok(*o))),
            Event::Group { group, hosts } => {
                self.line(format!("== group {group}: {}", hosts.join(", ")))
            }
            Event::Step {
                host,
                step,
                ok: o,
                detail,
            } => self.host_line(host, format!("{step} {}{}", ok(*o), colon(detail)), ""),
            Event::Check { host, result } => self.host_line(
                host,
                format!(
                    "check {} {:?}: {}",
                    result.name, result.outcome, result.detail
                ),
                "",
            ),
            Event::HostDone {
                host,
                release,
                ok: o,
                detail,
            } => {
                let msg = format!("{} {}{}", short(release), ok(*o), colon(detail));
                match self.bar(host) {
                    Some(b) => b.finish_with_message(msg),
                    None => self.line(format!("[{host}] done {msg}")),
                }
            }
            Event::Bake { group, seconds } => self.line(format!("baking {group} for {seconds}s")),
            Event::Abort { reason } => self.line(format!("ABORT: {reason}")),
            Event::Analysis { report } => self.line(report.summary()),
            Event::Watch {
                alarm,
                tripped,
                detail,
                ..
            } => self.line(format!(
                "watch {alarm}{}: {detail}",
                if *tripped { " TRIPPED" } else { "" }
            )),
            Event::Note { step, host, detail } => match host {
                Some(h) => self.host_line(h, format!("{step}: {detail}"), ""),
                None => self.line(format!("{step}: {detail}")),
            },
            Event::Rollback {
                host,
                to,
                ok: o,
                detail,
            } => self.line(format!(
                "[{host}] rollback to {} {}{}",
                to.as_deref().map(short).unwrap_or("nothing"),
                ok(*o),
                colon(detail)
            )),
            Event::Finished { .. } => {}
        }
    }
}
