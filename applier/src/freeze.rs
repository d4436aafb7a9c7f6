//! Freeze windows: when an environment takes no deploys.
//!
//! A window is either five cron fields (`minute hour day-of-month month day-of-week`, UTC,
//! open during every matching minute) or a `from`/`until` interval (RFC 3339 times or
//! `YYYY-MM-DD` dates at UTC midnight; `until` exclusive). Cron fields take `*`, numbers,
//! ranges `a-b`, steps `*/n` and `a-b/n`, and comma lists; day-of-week is 0-7 with Sunday 0
//! or 7; when both day fields are restricted, either matching is enough (as cron does).
//! [`check`] says which window is open at a moment, and until when.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::config::policy::FreezeWindow;

/// A parsed window.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Window {
    pub name: String,
    pub reason: Option<String>,
    spec: Spec,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Spec {
    Cron(Box<Cron>),
    /// Unix seconds, `[from, until)`.
    Dates {
        from: i64,
        until: i64,
    },
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct Cron {
    minute: [bool; 60],
    hour: [bool; 24],
    dom: [bool; 32],
    month: [bool; 13],
    dow: [bool; 7],
    dom_any: bool,
    dow_any: bool,
}

/// An open window at a moment: which, why, and when it closes (if it does within a week).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Frozen {
    pub window: String,
    pub reason: Option<String>,
    pub until: Option<SystemTime>,
}

impl std::fmt::Display for Frozen {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "freeze window {}", self.window)?;
        if let Some(r) = &self.reason {
            write!(f, " ({r})")?;
        }
        match self.until {
            Some(u) => write!(f, " is open until {}", humantime::format_rfc3339_seconds(u)),
            None => write!(f, " is open"),
        }
    }
}

/// Parses one configured window.
pub fn parse(w: &FreezeWindow, index: usize) -> Result<Window, String> {
    let name = w.name.clone().unwrap_or_else(|| format!("#{}", index + 1));
    let spec = match (&w.cron, &w.from, &w.until) {
        (Some(c), None, None) => Spec::Cron(Box::new(
            parse_cron(c).map_err(|e| format!("freeze window {name}: cron {c:?}: {e}"))?,
        )),
        (None, Some(f), Some(u)) => {
            let bad = |e: String| format!("freeze window {name}: {e}");
            let (from, until) = (parse_time(f).map_err(bad)?, parse_time(u).map_err(bad)?);
            if until <= from {
                return Err(format!("freeze window {name}: `until` is not after `from`"));
            }
            Spec::Dates { from, until }
        }
        _ => {
            return Err(format!(
                "freeze window {name}: give either `cron` or both `from` and `until`"
            ));
        }
    };
    Ok(Window {
        name,
        reason: w.reason.clone(),
        spec,
    })
}

/// The first window open at `now`, if any. A window that does not parse is an error (the
/// caller refuses: a freeze it cannot read is not a pass).
pub fn check(windows: &[FreezeWindow], now: SystemTime) -> Result<Option<Frozen>, String> {
    let t = unix(now);
    for (i, w) in windows.iter().enumerate() {
        let w = parse(w, i)?;
        if w.is_open(t) {
            return Ok(Some(Frozen {
                until: w
                    .closes_after(t)
                    .map(|s| UNIX_EPOCH + Duration::from_secs(s as u64)),
                window: w.name,
                reason: w.reason,
            }));
        }
    }
    Ok(None)
}

fn unix(t: SystemTime) -> i64 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => d.as_secs() as i64,
        Err(e) => -(e.duration().as_secs() as i64),
    }
}

impl Window {
    fn is_open(&self, t: i64) -> bool {
        match &self.spec {
            Spec::Dates { from, until } => *from <= t && t < *until,
            Spec::Cron(c) => c.matches(t),
        }
    }

    /// The first moment after `t` the window is closed (cron: searched a week ahead).
    fn closes_after(&self, t: i64) -> Option<i64> {
        match &self.spec {
            Spec::Dates { until, .. } => Some(*until),
            Spec::Cron(c) => {
                let start = t - t.rem_euclid(60);
                (1..=7 * 24 * 60)
                    .map(|m| start + m * 60)
                    .find(|&m| !c.matches(m))
            }
        }
    }
}

impl Cron {
    fn matches(&self, t: i64) -> bool {
        let days = t.div_euclid(86_400);
        let secs = t.rem_euclid(86_400);
        let (_, month, day) = civil_from_days(days);
        let dow = (days + 4).rem_euclid(7) as usize;
        let day_ok = match (self.dom_any, self.dow_any) {
            (true, true) => true,
            (false, true) => self.dom[day as usize],
            (true, false) => self.dow[dow],
            (false, false) => self.dom[day as usize] || self.dow[dow],
        };
        self.minute[(secs / 60 % 60) as usize]
            && self.hour[(secs / 3600) as usize]
            && self.month[month as usize]
            && day_ok
    }
}

fn parse_cron(s: &str) -> Result<Cron, String> {
    let f: Vec<&str> = s.split_whitespace().collect();
    if f.len() != 5 {
        return Err(format!("expected 5 fields, found {}", f.len()));
    }
    let mut c = Cron {
        minute: [false; 60],
        hour: [false; 24],
        dom: [false; 32],
        month: [false; 13],
        dow: [false; 7],
        dom_any: f[2] == "*",
        dow_any: f[4] == "*",
    };
    field(f[0], 0, 59, &mut |v| c.minute[v] = true).map_err(|e| format!("minute: {e}"))?;
    field(f[1], 0, 23, &mut |v| c.hour[v] = true).map_err(|e| format!("hour: {e}"))?;
    field(f[2], 1, 31, &mut |v| c.dom[v] = true).map_err(|e| format!("day of month: {e}"))?;
    field(f[3], 1, 12, &mut |v| c.month[v] = true).map_err(|e| format!("month: {e}"))?;
    field(f[4], 0, 7, &mut |v| c.dow[v % 7] = true).map_err(|e| format!("day of week: {e}"))?;
    Ok(c)
}

/// Calls `set` for every value a cron field selects.
fn field(s: &str, lo: usize, hi: usize, set: &mut dyn FnMut(usize)) -> Result<(), String> {
    for part in s.split(',') {
        let (range, step) = match part.split_once('/') {
            Some((r, st)) => (
                r,
                st.parse::<usize>()
                    .ok()
                    .filter(|n| *n > 0)
                    .ok_or_else(|| format!("bad step in {part:?}"))?,
            ),
            None => (part, 1),
        };
        let num = |x: &str| {
            x.parse::<usize>()
                .ok()
                .filter(|n| (lo..=hi).contains(n))
                .ok_or_else(|| format!("{x:?} is not a number in {lo}-{hi}"))
        };
        let (a, b) = match range {
            "*" => (lo, hi),
            r => match r.split_once('-') {
                Some((a, b)) => (num(a)?, num(b)?),
                None if step > 1 => (num(r)?, hi),
                None => (num(r)?, num(r)?),
            },
        };
        if a > b {
            return Err(format!("empty range {range:?}"));
        }
        (a..=b).step_by(step).for_each(&mut *set);
    }
    Ok(())
}

/// `YYYY-MM-DD` (UTC midnight) or an RFC 3339 time, as unix seconds.
fn parse_time(s: &str) -> Result<i64, String> {
    let s = s.trim();
    if s.len() == 10 {
        let p: Vec<&str> = s.split('-').collect();
        if let [y, m, d] = p[..]
            && let (Ok(y), Ok(m), Ok(d)) = (y.parse::<i64>(), m.parse::<u32>(), d.parse::<u32>())
            && (1..=12).contains(&m)
            && (1..=31).contains(&d)
        {
            return Ok(days_from_civil(y, m, d) * 86_400);
        }
        return Err(format!("{s:?} is not a YYYY-MM-DD date"));
    }
    humantime::parse_rfc3339_weak(s)
        .map(unix)
        .map_err(|e| format!("{s:?} is not an RFC 3339 time: {e}"))
}

/// Days since 1970-01-01 of a proleptic Gregorian date.
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    // Years start in March, so the leap day ends the year.
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m as i64 + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d as i64 - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The date of a day count since 1970-01-01: (year, month, day).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> SystemTime {
        humantime::parse_rfc3339(s).unwrap()
    }

    fn cron(c: &str) -> FreezeWindow {
        FreezeWindow {
            name: Some("w".into()),
            cron: Some(c.into()),
            from: None,
            until: None,
            reason: Some("r".into()),
        }
    }

    #[test]
    fn civil_dates_round_trip() {
        for (y, m, d) in [
            (1970, 1, 1),
            (2000, 2, 29),
            (2026, 12, 31),
            (1969, 12, 31),
            (2400, 3, 1),
        ] {
            assert_eq!(civil_from_days(days_from_civil(y, m, d)), (y, m, d));
        }
        assert_eq!(days_from_civil(1970, 1, 2), 1);
        assert_eq!(
            parse_time("2026-01-02").unwrap(),
            unix(at("2026-01-02T00:00:00Z"))
        );
    }

    #[test]
    fn cron_windows_match_their_minutes_in_utc() {
        // 2026-01-02 is a Friday.
        let fri_afternoon = [cron("* 14-23 * * 5")];
        let f = check(&fri_afternoon, at("2026-01-02T15:30:00Z"))
            .unwrap()
            .unwrap();
        assert_eq!(f.until, Some(at("2026-01-03T00:00:00Z")));
        assert!(
            f.to_string()
                .contains("w (r) is open until 2026-01-03T00:00:00Z"),
            "{f}"
        );
        assert_eq!(
            check(&fri_afternoon, at("2026-01-02T13:59:00Z")).unwrap(),
            None
        );
        assert_eq!(
            check(&fri_afternoon, at("2026-01-03T15:00:00Z")).unwrap(),
            None
        );
        // Sunday as 7, steps, lists; both day fields restricted: either matches.
        let w = [cron("*/15 0,12 1 * 7")];
        assert!(
            check(&w, at("2026-01-04T12:30:00Z")).unwrap().is_some(),
            "a Sunday"
        );
        assert!(
            check(&w, at("2026-02-01T00:00:00Z")).unwrap().is_some(),
            "the 1st"
        );
        assert!(
            check(&w, at("2026-02-01T00:01:00Z")).unwrap().is_none(),
            "minute 1"
        );
        assert!(
            check(&w, at("2026-01-05T12:00:00Z")).unwrap().is_none(),
            "a Monday the 5th"
        );
        for bad in [
            "* * * *",
            "60 * * * *",
            "* * 0 * *",
            "5-1 * * * *",
            "*/0 * * * *",
            "x * * * *",
        ] {
            assert!(check(&[cron(bad)], SystemTime::now()).is_err(), "{bad}");
        }
    }

    #[test]
    fn date_windows_are_half_open() {
        let w = [FreezeWindow {
            name: None,
            cron: None,
            from: Some("2026-12-20".into()),
            until: Some("2027-01-04T06:00:00Z".into()),
            reason: None,
        }];
        assert!(check(&w, at("2026-12-19T23:59:59Z")).unwrap().is_none());
        let f = check(&w, at("2026-12-20T00:00:00Z")).unwrap().unwrap();
        assert_eq!(
            (f.window.as_str(), f.until),
            ("#1", Some(at("2027-01-04T06:00:00Z")))
        );
        assert!(check(&w, at("2027-01-04T06:00:00Z")).unwrap().is_none());
        let mut only_from = w[0].clone();
        only_from.until = None;
        assert!(check(&[only_from], SystemTime::now()).is_err());
    }
}
