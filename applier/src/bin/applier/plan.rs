//! The text form of `applier plan` (the JSON form is the library's `Preview` as it is).

use std::fmt::Write;

use applier::engine::Preview;

use crate::render::short;

/// At most this many host names per batch line; the JSON form has them all.
const NAMES: usize = 8;

fn duration(s: f64) -> String {
    if s < 60.0 {
        format!("{s:.1}s")
    } else {
        let s = s.round() as u64;
        match (s / 3600, s % 3600 / 60, s % 60) {
            (0, m, s) => format!("{m}m {s:02}s"),
            (h, m, _) => format!("{h}h {m:02}m"),
        }
    }
}

fn names(hosts: &[String]) -> String {
    let mut s = hosts
        .iter()
        .take(NAMES)
        .map(String::as_str)
        .collect::<Vec<_>>()
        .join(", ");
    if hosts.len() > NAMES {
        let _ = write!(s, ", ... (+{} more)", hosts.len() - NAMES);
    }
    s
}

/// `1 host`, `2 hosts`.
fn count(n: usize, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

pub fn text(p: &Preview) -> String {
    let mut o = String::new();
    let _ = writeln!(
        o,
        "plan: {} {}{} to {} ({} change)",
        p.kind.as_str(),
        p.commit.as_deref().map(short).unwrap_or("-"),
        p.artifact.map(|a| format!(" ({a})")).unwrap_or_default(),
        p.env,
        p.deploy_type
            .map(|t| format!("{t:?}").to_lowercase())
            .unwrap_or_else(|| "code".into())
    );
    for line in p.storage_guard.iter().flatten() {
        let _ = writeln!(o, "storage guard: {line}");
    }
    let c = &p.capacity;
    let _ = writeln!(
        o,
        "hosts: {} in {}; capacity: at most {} out of the pool at once ({}); out of the pool now: {}",
        p.hosts,
        count(p.batches.len(), "batch", "batches"),
        c.max_out,
        c.limited_by,
        if c.out_of_pool.is_empty() {
            "none".to_string()
        } else {
            c.out_of_pool.join(", ")
        }
    );
    for (i, b) in p.batches.iter().enumerate() {
        let _ = write!(
            o,
            "  {:>3}. {:<12} {}: {}",
            i + 1,
            b.name,
            count(b.hosts.len(), "host", "hosts"),
            names(&b.hosts)
        );
        if let Some(c) = &b.capacity {
            let _ = write!(o, "; {c}");
        }
        o.push('\n');
    }
    let e = &p.eta;
    match e.total_s {
        None => {
            let _ = writeln!(o, "ETA: no history (no succeeded run in {} yet)", p.env);
        }
        Some(total) => {
            let _ = writeln!(
                o,
                "ETA: {} = {} x {} per host + {} x {} preflight and prefetch + {}s bake (medians of {} in the last {}: {})",
                duration(total),
                count(e.waves, "wave", "waves"),
                duration(e.per_host_s.unwrap_or(0.0)),
                count(p.hosts, "host", "hosts"),
                duration(e.prefetch_per_host_s.unwrap_or(0.0)),
                e.bake_s,
                count(e.host_samples, "host path", "host paths"),
                count(e.from_deploys.len(), "succeeded run", "succeeded runs"),
                e.from_deploys.join(", ")
            );
        }
    }
    o
}
