//! `applier plan`: what a deploy would do, without doing it. The one planner ([`super::plan`])
//! with its gates, then: the batches in order with their hosts, what the capacity guard does to
//! each (the waves it splits a batch into, given the hosts the pool driver reports out of the
//! pool now), and an ETA from the environment's recent history.
//!
//! The ETA: per-host path time (a host's `spec` step to its `repool` step) and preflight plus
//! prefetch time per host, each the median over the hosts of the last [`ETA_DEPLOYS`]
//! succeeded runs; then waves x per-host median + hosts x prefetch per host + the canary bake.
//! Hosts of a wave run at once, so a wave takes about one host's time. No succeeded run: no
//! ETA, and the preview says so.

use std::time::SystemTime;

use artifact::Digest;
use serde::Serialize;

use super::plan::{self, Intent};
use super::{DeployError, DeployOptions, EnvContext};
use crate::guard::DeployType;
use crate::records::{self, DeployKind, HostPhase, Journal, JournalStatus, Step};

/// How many of the most recent succeeded runs the ETA is taken from.
pub const ETA_DEPLOYS: usize = 5;

/// A deploy's plan, as `applier plan` shows it.
#[derive(Clone, Debug, Serialize)]
pub struct Preview {
    pub env: String,
    pub kind: DeployKind,
    pub commit: Option<String>,
    pub artifact: Option<Digest>,
    pub deploy_type: Option<DeployType>,
    /// What the storage guard found, one line each (why this is a `schema` deploy), as the
    /// deploy would journal it; `None` when it did not compare.
    pub storage_guard: Option<Vec<String>>,
    pub hosts: usize,
    pub capacity: Capacity,
    pub batches: Vec<Batch>,
    pub eta: Eta,
}

/// The capacity guard's settings and what it sees now.
#[derive(Clone, Debug, Serialize)]
pub struct Capacity {
    /// At most this many hosts out of the pool at once.
    pub max_out: usize,
    /// Where `max_out` comes from (`capacity.max_out`, `capacity.max_out_percent`, or none).
    pub limited_by: String,
    /// Hosts the pool driver reports out of the pool now.
    pub out_of_pool: Vec<String>,
    /// How long the run waits for hosts outside it to come back before aborting (seconds).
    pub wait_s: u64,
}

/// One batch: its hosts, and the waves the capacity guard lets out of the pool together.
#[derive(Clone, Debug, Serialize)]
pub struct Batch {
    pub name: String,
    pub hosts: Vec<String>,
    /// Empty when the batch would not be reached (an earlier one is held up).
    pub waves: Vec<Vec<String>>,
    /// What the guard does to this batch, when it does anything.
    pub capacity: Option<String>,
}

/// The estimate and what it rests on.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Eta {
    /// The runs it is taken from (deploy ids, newest last); empty: no history.
    pub from_deploys: Vec<String>,
    /// Host paths measured in them.
    pub host_samples: usize,
    pub per_host_s: Option<f64>,
    pub prefetch_per_host_s: Option<f64>,
    pub waves: usize,
    pub bake_s: u64,
    pub total_s: Option<f64>,
}

/// Plans a deploy of `target` to `ctx`'s environment (gates included) and previews it.
pub fn preview(
    ctx: &EnvContext,
    target: &str,
    opts: &DeployOptions,
) -> Result<Preview, DeployError> {
    let p = plan::plan(ctx, Intent::Deploy { target }, opts)?;
    let j = p.journal();
    let cfg = &ctx.cfg;
    let max_out = cfg.max_out();
    let all: Vec<String> = ctx.hosts.keys().cloned().collect();
    let out = ctx.pool.out_of_pool(&all).map_err(|e| {
        DeployError::Refused(super::gates::Refusal {
            record: "the pool driver".into(),
            reason: format!("capacity guard: {e}"),
            way_out: None,
        })
    })?;
    let limited_by = match (cfg.capacity.max_out, cfg.capacity.max_out_percent) {
        (Some(n), _) if n == max_out => format!("capacity.max_out {n}"),
        (_, Some(p)) => format!("capacity.max_out_percent {p}% of {} hosts", all.len()),
        _ => format!("none (all {} hosts)", all.len()),
    };
    let wait_s = cfg.capacity.wait.0.as_secs();
    let mut held = false;
    let mut batches = Vec::new();
    for (name, hosts) in &j.groups {
        let (waves, capacity) = if held {
            (vec![], Some("not reached".to_string()))
        } else {
            match waves(hosts, max_out, &out) {
                Ok((w, note)) => (w, note),
                Err(reason) => {
                    held = true;
                    let wait = if wait_s > 0 {
                        format!("waits up to {wait_s}s for them, then aborts")
                    } else {
                        "aborts".to_string()
                    };
                    (vec![], Some(format!("{reason}: the deploy {wait}")))
                }
            }
        };
        batches.push(Batch {
            name: name.clone(),
            hosts: hosts.clone(),
            waves,
            capacity,
        });
    }
    let history = records::history(ctx.store.as_ref(), &ctx.name)?;
    let wave_count = batches.iter().map(|b| b.waves.len()).sum();
    let bake = cfg.canary_bake.0.as_secs();
    let bake_s = if j.groups.len() > 1 { bake } else { 0 };
    Ok(Preview {
        env: ctx.name.clone(),
        kind: j.kind,
        commit: j.commit.clone(),
        artifact: j.artifact,
        deploy_type: j.deploy_type,
        storage_guard: j
            .steps
            .iter()
            .find(|s| s.step == Step::StorageGuard)
            .and_then(|s| s.detail.as_ref())
            .map(|d| d.lines().map(str::to_string).collect()),
        hosts: j.hosts.len(),
        capacity: Capacity {
            max_out,
            limited_by,
            out_of_pool: out,
            wait_s,
        },
        batches,
        eta: eta(&history, j.hosts.len(), wave_count, bake_s),
    })
}

/// The waves a batch goes out in, as the run's capacity guard cuts them: at most `max_out`
/// at a time, less the hosts outside them that are out of the pool. `Err` when none may go.
fn waves(
    hosts: &[String],
    max_out: usize,
    out: &[String],
) -> Result<(Vec<Vec<String>>, Option<String>), String> {
    let mut rest = hosts;
    let mut waves = Vec::new();
    let mut outside: Vec<&String> = Vec::new();
    while !rest.is_empty() {
        let candidates = &rest[..max_out.min(rest.len())];
        let others: Vec<&String> = out.iter().filter(|h| !candidates.contains(h)).collect();
        let room = max_out.saturating_sub(others.len());
        if room == 0 {
            return Err(format!(
                "capacity guard: already out of the pool: {} (max_out {max_out})",
                join(&others)
            ));
        }
        for h in others {
            if !outside.contains(&h) {
                outside.push(h);
            }
        }
        let (now, tail) = rest.split_at(room.min(rest.len()));
        waves.push(now.to_vec());
        rest = tail;
    }
    let note = (waves.len() > 1 || !outside.is_empty()).then(|| {
        let sizes: Vec<String> = waves.iter().map(|w| w.len().to_string()).collect();
        let mut n = format!(
            "{} waves ({}): max_out {max_out}",
            waves.len(),
            sizes.join("+")
        );
        if waves.len() == 1 {
            n = format!("at once: max_out {max_out}");
        }
        if !outside.is_empty() {
            n.push_str(&format!(" less {} out of the pool already", join(&outside)));
        }
        n
    });
    Ok((waves, note))
}

fn join(hs: &[&String]) -> String {
    hs.iter().map(|h| h.as_str()).collect::<Vec<_>>().join(", ")
}

fn at(s: &str) -> Option<SystemTime> {
    humantime::parse_rfc3339_weak(s).ok()
}

fn seconds(from: SystemTime, to: SystemTime) -> Option<f64> {
    to.duration_since(from).ok().map(|d| d.as_secs_f64())
}

/// Per-host path times of one run: each done host's `spec` step to its last `repool` step.
fn host_times(j: &Journal) -> Vec<f64> {
    let mut spans: std::collections::BTreeMap<&str, (Option<SystemTime>, Option<SystemTime>)> =
        Default::default();
    for s in &j.steps {
        let Some(h) = s.host.as_deref() else { continue };
        let span = spans.entry(h).or_default();
        match s.step {
            Step::Spec if span.0.is_none() => span.0 = at(&s.at),
            Step::Repool if s.ok => span.1 = at(&s.at),
            _ => {}
        }
    }
    spans
        .into_iter()
        .filter(|(h, _)| j.hosts.get(*h).is_some_and(|e| e.phase == HostPhase::Done))
        .filter_map(|(_, (a, b))| seconds(a?, b?))
        .collect()
}

/// Preflight and prefetch time of one run, per host.
fn prefetch_per_host(j: &Journal) -> Option<f64> {
    let times: Vec<SystemTime> = j
        .steps
        .iter()
        .filter(|s| matches!(s.step, Step::Preflight | Step::Fetch))
        .filter_map(|s| at(&s.at))
        .collect();
    let (first, last) = (times.iter().min()?, times.iter().max()?);
    Some(seconds(*first, *last)? / j.hosts.len().max(1) as f64)
}

fn median(mut v: Vec<f64>) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    Some(if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    })
}

/// The ETA of `hosts` hosts in `waves` waves from the last succeeded runs in `history`.
fn eta(history: &[Journal], hosts: usize, waves: usize, bake_s: u64) -> Eta {
    let recent: Vec<&Journal> = history
        .iter()
        .filter(|j| j.status == JournalStatus::Succeeded)
        .rev()
        .take(ETA_DEPLOYS)
        .collect();
    let samples: Vec<f64> = recent.iter().flat_map(|j| host_times(j)).collect();
    let per_host = median(samples.clone());
    let prefetch = median(recent.iter().filter_map(|j| prefetch_per_host(j)).collect());
    Eta {
        from_deploys: recent.iter().rev().map(|j| j.id.clone()).collect(),
        host_samples: samples.len(),
        per_host_s: per_host,
        prefetch_per_host_s: prefetch,
        waves,
        bake_s,
        total_s: per_host
            .map(|p| p * waves as f64 + prefetch.unwrap_or(0.0) * hosts as f64 + bake_s as f64),
    }
}
