//! Rendering the event stream: on a terminal, a live table redrawn in place (host, group,
//! step, elapsed, last check; the canary bake's countdown; a final summary); plain lines on
//! stderr when stderr is not a terminal; or JSON lines on stdout (`--format json`: each event
//! as the library serialises it, stamped with `ts`; `finished` also carries the exit code).
//! Data goes to stdout, progress to stderr.
//!
//! The live view's board is in `live`; this module decides which view an event goes to and
//! holds the one plain spelling of every event, which the live view also prints above its
//! table for what the table does not show (groups, aborts, rollbacks).

use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

/// Set once stdout is closed (`applier history | head`): data output stops, quietly.
static STDOUT_CLOSED: AtomicBool = AtomicBool::new(false);

/// Writes one line of data to stdout. A closed stdout ends the data, never the command (a
/// deploy whose output is cut off goes on): nothing more is written and nothing panics.
pub fn out_line(s: &str) {
    out_text(&format!("{s}\n"));
}

/// Writes data to stdout as it is (a text that ends its own lines), like [`out_line`].
pub fn out_text(s: &str) {
    if STDOUT_CLOSED.load(Ordering::Relaxed) {
        return;
    }
    let mut so = std::io::stdout().lock();
    if so
        .write_all(s.as_bytes())
        .and_then(|()| so.flush())
        .is_err()
    {
        STDOUT_CLOSED.store(true, Ordering::Relaxed);
    }
}

/// `println!` for data: through [`out_line`].
macro_rules! out {
    ($($t:tt)*) => {
        $crate::render::out_line(&format!($($t)*))
    };
}
pub(crate) use out;

use applier::events::{Event, EventSink};

use crate::exit::Exit;
use crate::live::Board;

#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Render {
    Live,
    Plain,
    Json,
}

pub struct Sink {
    pub render: Render,
    live: Option<Arc<Live>>,
    out: Mutex<()>,
}

/// The live view: its board and the thread that redraws it (elapsed times, the countdown).
struct Live {
    board: Mutex<Board>,
    ticker: Mutex<Option<std::thread::JoinHandle<()>>>,
    stop: std::sync::atomic::AtomicBool,
}

impl Live {
    fn draw(&self) {
        let mut b = self.board.lock().unwrap();
        let frame = b.redraw(std::time::Instant::now(), crate::live::terminal_width());
        let mut e = std::io::stderr().lock();
        let _ = e.write_all(frame.as_bytes());
        let _ = e.flush();
    }
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

fn ok(b: bool) -> &'static str {
    if b { "ok" } else { "FAILED" }
}

/// The plain spelling of an event: the lines it prints (on stderr), if any.
pub fn plain_lines(e: &Event) -> Vec<String> {
    match e {
        Event::Promote { .. } => vec![],
        Event::Finished { store_requests, .. } => store_requests
            .iter()
            .map(|r| format!("store requests: {}", r.summary()))
            .collect(),
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
            let mut v = vec![format!(
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
            )];
            for g in groups {
                v.push(format!("  group {}", g.name));
                for h in &g.hosts {
                    v.push(format!(
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
            v
        }
        Event::Preflight {
            host,
            ok: o,
            detail,
        } => vec![format!("[{host}] preflight {}: {detail}", ok(*o))],
        Event::Fetch {
            host,
            ok: o,
            detail,
        } => vec![format!("[{host}] fetch {}: {detail}", ok(*o))],
        Event::Group { group, hosts } => vec![format!("== group {group}: {}", hosts.join(", "))],
        Event::Step {
            host,
            step,
            ok: o,
            detail,
        } => vec![format!("[{host}] {step} {}{}", ok(*o), colon(detail))],
        Event::Check { host, result } => vec![format!(
            "[{host}] check {} {:?}: {}",
            result.name, result.outcome, result.detail
        )],
        Event::HostDone {
            host,
            release,
            ok: o,
            detail,
        } => vec![format!(
            "[{host}] done {} {}{}",
            short(release),
            ok(*o),
            colon(detail)
        )],
        Event::Bake { group, seconds } => vec![format!("baking {group} for {seconds}s")],
        Event::Abort { reason } => vec![format!("ABORT: {reason}")],
        Event::Analysis { report } => vec![report.summary()],
        Event::Watch {
            alarm,
            tripped,
            detail,
            ..
        } => vec![format!(
            "watch {alarm}{}: {detail}",
            if *tripped { " TRIPPED" } else { "" }
        )],
        Event::Note { step, host, detail } => vec![match host {
            Some(h) => format!("[{h}] {step}: {detail}"),
            None => format!("{step}: {detail}"),
        }],
        Event::Prune {
            host,
            ok: o,
            removed,
            layers_removed,
            seconds,
            detail,
            ..
        } => vec![match detail {
            Some(d) => format!("[{host}] prune {}: {d}", ok(*o)),
            None => format!(
                "[{host}] prune {}: removed {} release(s), {} layer(s) in {seconds:.1}s",
                ok(*o),
                removed.len(),
                layers_removed.len()
            ),
        }],
        Event::Rollback {
            host,
            to,
            ok: o,
            detail,
        } => vec![format!(
            "[{host}] rollback to {} {}{}",
            to.as_deref().map(short).unwrap_or("nothing"),
            ok(*o),
            colon(detail)
        )],
    }
}

impl Sink {
    pub fn new(render: Render) -> Self {
        let live = (render == Render::Live).then(|| {
            let l = Arc::new(Live {
                board: Mutex::new(Board::new(std::time::Instant::now())),
                ticker: Mutex::new(None),
                stop: Default::default(),
            });
            let t = l.clone();
            let handle = std::thread::spawn(move || {
                use std::sync::atomic::Ordering;
                while !t.stop.load(Ordering::SeqCst) {
                    std::thread::sleep(std::time::Duration::from_millis(250));
                    if t.board.lock().unwrap().is_ticking() {
                        t.draw();
                    }
                }
            });
            *l.ticker.lock().unwrap() = Some(handle);
            l
        });
        Sink {
            render,
            live,
            out: Mutex::new(()),
        }
    }

    /// Stops the live view after its last frame (the final summary when the run finished).
    pub fn done(&self) {
        if let Some(l) = &self.live {
            l.stop.store(true, std::sync::atomic::Ordering::SeqCst);
            if let Some(h) = l.ticker.lock().unwrap().take() {
                let _ = h.join();
            }
            l.board.lock().unwrap().freeze();
            l.draw();
        }
    }

    /// One JSON line on stdout.
    pub fn json(&self, v: &serde_json::Value) {
        let _g = self.out.lock().unwrap();
        out_line(&v.to_string());
    }

    /// A warning on stderr (in every format: stdout stays data).
    pub fn warn(&self, msg: &str) {
        let _g = self.out.lock().unwrap();
        eprintln!("warning: {}", applier::report::text::terminal_safe(msg));
        if let Some(l) = &self.live {
            l.draw();
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
        if let Event::Promote {
            from,
            to,
            commit,
            artifact,
            from_deploy,
            ..
        } = e
        {
            // Data: which artifact is promoted.
            let _g = self.out.lock().unwrap();
            out!(
                "promote {} ({artifact}) from {from} (deploy {from_deploy}) to {to}",
                short(commit)
            );
            return;
        }
        match &self.live {
            Some(l) => {
                l.board
                    .lock()
                    .unwrap()
                    .apply(e, std::time::Instant::now(), plain_lines);
                l.draw();
            }
            None => {
                let _g = self.out.lock().unwrap();
                for line in plain_lines(e) {
                    eprintln!("{}", applier::report::text::terminal_safe(&line));
                }
            }
        }
    }
}
