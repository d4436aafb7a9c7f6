//! `applier history`: who deployed what, why, and how long it took. JSON: each journal as
//! stored, with `duration_s` added.

use applier::records::Journal;

use crate::render::{Render, short};

/// Seconds from start to finish, if it finished.
fn duration_s(j: &Journal) -> Option<f64> {
    let start = humantime::parse_rfc3339_weak(&j.started_at).ok()?;
    let end = humantime::parse_rfc3339_weak(j.finished_at.as_deref()?).ok()?;
    end.duration_since(start).ok().map(|d| d.as_secs_f64())
}

pub fn print(shown: &[Journal], render: Render) {
    if render != Render::Json {
        println!(
            "{:<26} {:<8} {:<11} {:<20} {:<20} {:>7}  {:<24} message",
            "deploy", "kind", "status", "what", "started", "took", "who"
        );
    }
    for j in shown {
        let took = duration_s(j);
        if render == Render::Json {
            let mut v = serde_json::to_value(j).expect("serialises");
            v["duration_s"] = took.into();
            println!("{v}");
            continue;
        }
        let what = match (&j.source_ref, &j.commit) {
            (Some(r), _) => format!("{} {}", r.name, short(&r.commit)),
            (None, Some(c)) => short(c).to_string(),
            (None, None) => "-".into(),
        };
        let mut why = j.reason.clone();
        if !j.overrides.is_empty() {
            why.push_str(&format!(" [overrides: {}]", j.overrides.join("; ")));
        }
        if let Some(a) = &j.abort_reason {
            why.push_str(&format!(" [aborted: {a}]"));
        }
        println!(
            "{:<26} {:<8} {:<11} {:<20} {:<20} {:>7}  {:<24} {}",
            j.id,
            j.kind.as_str(),
            j.status.as_str(),
            what,
            j.started_at.get(..19).unwrap_or(&j.started_at),
            took.map(|t| format!("{t:.1}s"))
                .unwrap_or_else(|| "-".into()),
            j.who,
            if why.is_empty() { "-".into() } else { why }
        );
    }
}
