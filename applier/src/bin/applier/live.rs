//! The live view's board: one row per host (host, group, step, elapsed, last check), the
//! canary bake's countdown and, once the run finished, its summary. [`Board::apply`] takes
//! the events; [`Board::redraw`] returns the bytes that print what happened since the last
//! frame above the table and redraw the table in place (cursor up, clear, the new frame),
//! every line cut to the terminal's width so the cursor arithmetic holds.

use std::time::{Duration, Instant};

use applier::events::Event;
use applier::report::model::{fmt_dur, short};
use applier::report::text::terminal_safe;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    Pending,
    Fetched,
    Active,
    Done,
    Failed,
    RollingBack,
    RolledBack,
    NeedsHuman,
}

struct Row {
    host: String,
    group: String,
    state: State,
    step: String,
    since: Option<Instant>,
    until: Option<Instant>,
    check: String,
}

/// Width of the step column: fits "rolled back to <12 hex digits>" and "NOT restored: needs a
/// human".
const STEP_W: usize = 28;

struct Bake {
    group: String,
    until: Instant,
}

pub struct Board {
    t0: Instant,
    title: Option<String>,
    rows: Vec<Row>,
    /// Lines to print above the table at the next redraw.
    log: Vec<String>,
    bake: Option<Bake>,
    /// Lines of the frame last drawn (to move back over).
    drawn: usize,
    summary: Option<String>,
    finished_at: Option<Instant>,
    frozen: bool,
}

/// Columns of the terminal on stderr (100 when it does not say).
pub fn terminal_width() -> usize {
    rustix::termios::tcgetwinsize(std::io::stderr())
        .ok()
        .map(|w| w.ws_col as usize)
        .filter(|w| *w >= 20)
        .unwrap_or(100)
}

/// `s` cut to `w` characters.
fn cut(s: &str, w: usize) -> String {
    if s.chars().count() <= w {
        return s.to_string();
    }
    let mut t: String = s.chars().take(w.saturating_sub(1)).collect();
    t.push('\u{2026}');
    t
}

/// `s` in lines of at most `w` characters.
fn wrap(s: &str, w: usize) -> Vec<String> {
    let chars: Vec<char> = s.chars().collect();
    chars.chunks(w.max(1)).map(|c| c.iter().collect()).collect()
}

impl Board {
    pub fn new(t0: Instant) -> Self {
        Board {
            t0,
            title: None,
            rows: Vec::new(),
            log: Vec::new(),
            bake: None,
            drawn: 0,
            summary: None,
            finished_at: None,
            frozen: false,
        }
    }

    /// Whether the clock shown moves (a run is going on).
    pub fn is_ticking(&self) -> bool {
        !self.frozen && self.title.is_some() && self.summary.is_none()
    }

    /// No more redraws after the next one.
    pub fn freeze(&mut self) {
        self.frozen = true;
    }

    fn row(&mut self, host: &str) -> &mut Row {
        if let Some(i) = self.rows.iter().position(|r| r.host == host) {
            return &mut self.rows[i];
        }
        self.rows.push(Row {
            host: host.to_string(),
            group: "-".into(),
            state: State::Pending,
            step: "pending".into(),
            since: None,
            until: None,
            check: "-".into(),
        });
        self.rows.last_mut().unwrap()
    }

    /// Takes one event; `plain` is how the event is spelt as lines (for the log above).
    pub fn apply(&mut self, e: &Event, now: Instant, plain: impl Fn(&Event) -> Vec<String>) {
        match e {
            Event::Plan { groups, .. } => {
                let lines = plain(e);
                self.title = lines.first().cloned();
                self.log.extend(lines);
                for g in groups {
                    for h in &g.hosts {
                        self.row(&h.host).group = g.name.clone();
                    }
                }
            }
            Event::Preflight { host, ok, .. } | Event::Fetch { host, ok, .. } => {
                let fetch = matches!(e, Event::Fetch { .. });
                let r = self.row(host);
                r.step = match (fetch, ok) {
                    (true, true) => "fetched".into(),
                    (false, true) => "preflight ok".into(),
                    (true, false) => "fetch FAILED".into(),
                    (false, false) => "preflight FAILED".into(),
                };
                if fetch && *ok {
                    r.state = State::Fetched;
                }
                if !ok {
                    self.log.extend(plain(e));
                }
            }
            Event::Step { host, step, ok, .. } => {
                let r = self.row(host);
                r.state = match r.state {
                    State::Pending | State::Fetched => State::Active,
                    State::Done | State::Failed => State::RollingBack,
                    s => s,
                };
                r.since.get_or_insert(now);
                r.until = None;
                r.step = if *ok {
                    step.to_string()
                } else {
                    format!("{step} FAILED")
                };
            }
            Event::Check { host, result } => {
                let r = self.row(host);
                r.check = if result.passed {
                    format!("{} {:?}", result.name, result.outcome).to_lowercase()
                } else {
                    format!("{} {:?}: {}", result.name, result.outcome, result.detail)
                };
            }
            Event::HostDone {
                host,
                release,
                ok,
                detail,
            } => {
                let r = self.row(host);
                r.until = Some(now);
                if *ok {
                    r.state = State::Done;
                    r.step = format!("done {}", short(release));
                } else {
                    r.state = State::Failed;
                    r.step = format!("FAILED {}", detail.as_deref().unwrap_or(""));
                }
            }
            Event::Bake { group, seconds } => {
                self.bake = Some(Bake {
                    group: group.clone(),
                    until: now + Duration::from_secs(*seconds),
                });
            }
            Event::Rollback { host, to, ok, .. } => {
                let r = self.row(host);
                r.until = Some(now);
                r.state = if *ok {
                    State::RolledBack
                } else {
                    State::NeedsHuman
                };
                r.step = match (ok, to) {
                    (true, Some(t)) => format!("rolled back to {}", short(t)),
                    (true, None) => "stopped, out of the pool".into(),
                    (false, _) => "NOT restored: needs a human".into(),
                };
                self.log.extend(plain(e));
            }
            Event::Finished {
                deploy_id,
                status,
                message,
                store_requests,
            } => {
                self.bake = None;
                self.finished_at = Some(now);
                let requests = store_requests
                    .as_ref()
                    .map(|r| format!("; store requests: {}", r.summary()))
                    .unwrap_or_default();
                self.summary = Some(format!(
                    "{deploy_id} {} in {}: {}; {message}{requests}",
                    status.as_str(),
                    fmt_dur(now - self.t0),
                    self.tally()
                ));
            }
            Event::Group { .. } | Event::Abort { .. } => {
                self.bake = None;
                self.log.extend(plain(e));
            }
            _ => self.log.extend(plain(e)),
        }
    }

    fn tally(&self) -> String {
        let names = |f: fn(State) -> bool| -> Vec<&str> {
            self.rows
                .iter()
                .filter(|r| f(r.state))
                .map(|r| r.host.as_str())
                .collect()
        };
        let parts = [
            ("done", names(|s| s == State::Done)),
            ("rolled back", names(|s| s == State::RolledBack)),
            (
                "need a human",
                names(|s| matches!(s, State::NeedsHuman | State::Failed | State::RollingBack)),
            ),
            (
                "untouched",
                names(|s| matches!(s, State::Pending | State::Fetched | State::Active)),
            ),
        ];
        parts
            .iter()
            .filter(|(_, v)| !v.is_empty())
            .map(|(k, v)| format!("{} {k} ({})", v.len(), v.join(", ")))
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// The table as lines of at most `width` characters.
    pub fn frame(&self, now: Instant, width: usize) -> Vec<String> {
        let w = width.saturating_sub(1).max(20);
        let mut out = Vec::new();
        let end = self.finished_at.unwrap_or(now);
        if let Some(t) = &self.title {
            out.push(cut(&format!("{t}  [{}]", fmt_dur(end - self.t0)), w));
        }
        if self.rows.is_empty() {
            return out;
        }
        let hw = self
            .rows
            .iter()
            .map(|r| r.host.chars().count())
            .max()
            .unwrap_or(4)
            .max(4);
        let gw = self
            .rows
            .iter()
            .map(|r| r.group.chars().count())
            .max()
            .unwrap_or(5)
            .max(5);
        let line = |h: &str, g: &str, s: &str, el: &str, c: &str| {
            cut(
                &format!("{h:<hw$}  {g:<gw$}  {s:<STEP_W$}  {el:>9}  {c}"),
                w,
            )
        };
        out.push(line("HOST", "GROUP", "STEP", "ELAPSED", "LAST CHECK"));
        for r in &self.rows {
            let el = match r.since {
                Some(s) => fmt_dur(r.until.unwrap_or(end) - s),
                None => "-".into(),
            };
            out.push(line(
                &r.host,
                &r.group,
                &cut(&r.step, STEP_W),
                &el,
                &r.check,
            ));
        }
        if let Some(b) = &self.bake {
            let left = b.until.saturating_duration_since(now);
            out.push(cut(
                &if left.is_zero() {
                    format!(
                        "canary bake of {}: over, checking the canaries again",
                        b.group
                    )
                } else {
                    format!(
                        "canary bake of {}: {} left",
                        b.group,
                        fmt_dur(Duration::from_secs(left.as_secs_f64().ceil() as u64))
                    )
                },
                w,
            ));
        }
        if let Some(s) = &self.summary {
            out.extend(wrap(s, w));
        }
        out
    }

    /// The bytes of the next frame: back over the last one, what was logged since, the table.
    pub fn redraw(&mut self, now: Instant, width: usize) -> String {
        let mut s = String::new();
        if self.drawn > 0 {
            s.push_str(&format!("\x1b[{}A\r\x1b[J", self.drawn));
        }
        for l in self.log.drain(..) {
            s.push_str(&terminal_safe(&l));
            s.push('\n');
        }
        let frame = self.frame(now, width);
        for l in &frame {
            s.push_str(&terminal_safe(l));
            s.push_str("\x1b[K\n");
        }
        self.drawn = frame.len();
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use applier::events::{PlanGroup, PlanHost};
    use applier::records::{DeployKind, JournalStatus, Step};

    fn plan() -> Event {
        let host = |h: &str| PlanHost {
            host: h.into(),
            from: None,
            to: "abc".into(),
            checks: vec![],
        };
        Event::Plan {
            deploy_id: "d1".into(),
            env: "stg".into(),
            kind: DeployKind::Deploy,
            artifact: None,
            commit: Some("abc".into()),
            deploy_type: None,
            dry_run: false,
            groups: vec![
                PlanGroup {
                    name: "canary".into(),
                    hosts: vec![host("h1")],
                },
                PlanGroup {
                    name: "rest".into(),
                    hosts: vec![host("h2")],
                },
            ],
        }
    }

    fn lines(e: &Event) -> Vec<String> {
        crate::render::plain_lines(e)
    }

    #[test]
    fn the_table_follows_the_hosts_counts_down_the_bake_and_ends_with_a_summary() {
        let t0 = Instant::now();
        let mut b = Board::new(t0);
        b.apply(&plan(), t0, lines);
        let step = |h: &str, s: Step, ok: bool| Event::Step {
            host: h.into(),
            step: s,
            ok,
            detail: None,
        };
        b.apply(&step("h1", Step::Depool, true), t0, lines);
        let first = b.redraw(t0, 80);
        assert!(first.contains("d1") && first.contains("depool"), "{first}");
        assert!(!first.contains("\x1b[") || first.contains("\x1b[K"));
        b.apply(
            &Event::HostDone {
                host: "h1".into(),
                release: "abcdef".into(),
                ok: true,
                detail: None,
            },
            t0 + Duration::from_secs(2),
            lines,
        );
        b.apply(
            &Event::Bake {
                group: "canary".into(),
                seconds: 10,
            },
            t0 + Duration::from_secs(2),
            lines,
        );
        let f = b.frame(t0 + Duration::from_secs(5), 80).join("\n");
        assert!(f.contains("canary bake of canary: 7.0 s left"), "{f}");
        assert!(f.contains("done abcdef"), "{f}");
        let again = b.redraw(t0 + Duration::from_secs(5), 80);
        let n = first.matches("\x1b[K\n").count();
        assert!(
            again.starts_with(&format!("\x1b[{n}A")),
            "moves back over the last frame"
        );
        b.apply(
            &Event::Rollback {
                host: "h1".into(),
                to: Some("0123456789abcdef".into()),
                ok: true,
                detail: None,
            },
            t0 + Duration::from_secs(6),
            lines,
        );
        b.apply(
            &Event::Finished {
                deploy_id: "d1".into(),
                status: JournalStatus::RolledBack,
                message: "m".into(),
                store_requests: None,
            },
            t0 + Duration::from_secs(7),
            lines,
        );
        let f = b.frame(t0 + Duration::from_secs(99), 80).join("\n");
        assert!(f.contains("rolled back to 0123456789ab"), "{f}");
        assert!(
            f.contains("d1 rolled_back in 7.0 s: 1 rolled back (h1), 1 untouched (h2); m"),
            "{f}"
        );
        assert!(!f.contains("bake"), "{f}");
        assert!(b.frame(t0, 30).iter().all(|l| l.chars().count() <= 29));
    }
}
