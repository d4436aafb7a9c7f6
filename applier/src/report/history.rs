//! `applier history`: one row per deploy that answers who, why, what type, how it ended, how
//! long it took and which hosts it changed, with the filters `--since`, `--status` and
//! `--host`.

use std::time::{Duration, SystemTime};

use serde::Serialize;

use super::model::{self, parse_ms};
use crate::records::{Journal, JournalStatus};

/// One deploy of the history: the journal as it is, plus what the history adds.
#[derive(Clone, Debug, Serialize)]
pub struct HistoryRow<'a> {
    #[serde(flatten)]
    pub journal: &'a Journal,
    pub duration_ms: Option<u64>,
    pub hosts_touched: Vec<String>,
    pub hosts_changed: Vec<String>,
}

impl<'a> HistoryRow<'a> {
    /// `now` gives a running deploy its duration so far.
    pub fn of(journal: &'a Journal, now: SystemTime) -> Self {
        HistoryRow {
            journal,
            duration_ms: model::duration_ms(journal, Some(now)),
            hosts_touched: model::touched(journal),
            hosts_changed: model::changed(journal),
        }
    }
}

/// Which deploys to show.
#[derive(Clone, Debug, Default)]
pub struct Filter {
    /// Started at or after this time.
    pub since: Option<SystemTime>,
    /// With one of these outcomes (any when empty).
    pub status: Vec<JournalStatus>,
    /// That touched this host (or planned it, for a deploy refused before touching any).
    pub host: Option<String>,
}

impl Filter {
    pub fn accepts(&self, j: &Journal) -> bool {
        if let Some(since) = self.since {
            let cutoff = since
                .duration_since(SystemTime::UNIX_EPOCH)
                .map(|d| d.as_millis() as u64)
                .unwrap_or(0);
            // A journal whose start does not read is kept: hiding it would hide a record.
            if parse_ms(&j.started_at).is_some_and(|t| t < cutoff) {
                return false;
            }
        }
        if !self.status.is_empty() && !self.status.contains(&j.status) {
            return false;
        }
        if let Some(h) = &self.host {
            let Some(e) = j.hosts.get(h) else {
                return false;
            };
            let touched_any = j.hosts.values().any(|e| e.touched.is_some());
            if touched_any && e.touched.is_none() {
                return false;
            }
        }
        true
    }
}

/// `--status` values: a journal status as the journal spells it (`rolled_back`), or `failed`
/// for every failed outcome (rolled back, needs a human).
pub fn parse_status(s: &str) -> Result<Vec<JournalStatus>, String> {
    let mut out = Vec::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let one = match part.replace('-', "_").as_str() {
            "running" => vec![JournalStatus::Running],
            "succeeded" | "ok" => vec![JournalStatus::Succeeded],
            "rolled_back" => vec![JournalStatus::RolledBack],
            "needs_human" => vec![JournalStatus::NeedsHuman],
            "refused" => vec![JournalStatus::Refused],
            "failed" => vec![JournalStatus::RolledBack, JournalStatus::NeedsHuman],
            _ => {
                return Err(format!(
                    "unknown status {part:?}: one of running, succeeded, rolled_back, needs_human, refused, failed"
                ));
            }
        };
        out.extend(one);
    }
    Ok(out)
}

/// `--since`: an RFC 3339 time (`2026-12-01T10:00:00Z`), a date (`2026-12-01`, midnight UTC),
/// or a span back from `now` (`2h`, `7d`, `1week`).
pub fn parse_since(s: &str, now: SystemTime) -> Result<SystemTime, String> {
    let s = s.trim();
    if let Ok(t) = humantime::parse_rfc3339_weak(s) {
        return Ok(t);
    }
    if s.len() == 10
        && let Ok(t) = humantime::parse_rfc3339(&format!("{s}T00:00:00Z"))
    {
        return Ok(t);
    }
    let ago: Duration = humantime::parse_duration(s).map_err(|e| {
        format!("bad --since {s:?} ({e}): give a time (2026-12-01T10:00:00Z), a date (2026-12-01) or a span back from now (2h, 7d)")
    })?;
    now.checked_sub(ago)
        .ok_or_else(|| format!("--since {s:?} reaches before 1970"))
}

/// The history as text, one deploy a line: id, kind, type, outcome, duration, hosts changed,
/// who, why.
pub fn render_text(rows: &[HistoryRow<'_>]) -> String {
    let mut o = String::new();
    o.push_str(&format!(
        "{:<24} {:<8} {:<6} {:<11} {:>9}  {:<12} {:<18} {:<20} why\n",
        "id", "kind", "type", "outcome", "took", "commit", "hosts changed", "who"
    ));
    for r in rows {
        let j = r.journal;
        let changed = if r.hosts_changed.is_empty() {
            format!("0/{}", j.hosts.len())
        } else {
            format!(
                "{}/{} {}",
                r.hosts_changed.len(),
                j.hosts.len(),
                r.hosts_changed.join(",")
            )
        };
        let why = match (&j.reason, &j.abort_reason) {
            (w, Some(a)) if !w.is_empty() => format!("{w} (stopped: {a})"),
            (_, Some(a)) => format!("- (stopped: {a})"),
            (w, None) if !w.is_empty() => w.clone(),
            _ => "-".into(),
        };
        o.push_str(&format!(
            "{:<24} {:<8} {:<6} {:<11} {:>9}  {:<12} {:<18} {:<20} {}\n",
            j.id,
            j.kind.as_str(),
            j.deploy_type
                .and_then(|t| serde_json::to_value(t).ok())
                .and_then(|v| v.as_str().map(str::to_string))
                .unwrap_or_else(|| "-".into()),
            j.status.as_str(),
            r.duration_ms
                .map(model::fmt_ms)
                .unwrap_or_else(|| "-".into()),
            j.commit.as_deref().map(model::short).unwrap_or("-"),
            changed,
            j.who,
            why
        ));
        // Segments of the journal that did not verify (what verified is shown).
        for d in &j.damaged {
            o.push_str(&format!("    damaged journal: {d}\n"));
        }
    }
    super::text::terminal_safe(&o)
}
