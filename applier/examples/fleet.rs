//! The fleet benchmark's driver (`ci/bench fleet`): runs one rolling deploy with the real
//! engine and prints, as one JSON object on stdout, its wall time against the floor, the
//! process's peak memory and the store requests it made.
//!
//! Two kinds of fleet:
//! - `--hosts N`: N in-memory hosts (the library's `MemoryHost` and `MemoryPool`) with a
//!   latency per operation (`--latency op=ms`, defaults below), A running everywhere, B deployed
//!   over it; the store is a fresh directory or `--store s3://bucket/prefix`.
//! - `--config deploy.yaml --env E --target DIGEST`: the hosts of a real inventory (the local
//!   transport: directories and real service processes on this machine), as `applier deploy`
//!   would reach them.
//!
//! Every host and the pool are wrapped to time their operations, and the store is wrapped to
//! count requests (`tests/engine/tap.rs`). The floor of a batch is its slowest host's own time:
//! depool + stop + start + wait-ready + checks + repool, as measured; the floor of the roll is
//! their sum over batches. The engine's bookkeeping (journal, env state, the capacity guard,
//! spec, render, switch, mark-good) is what the roll takes beyond it.
//!
//! An example rather than a hidden `applier` subcommand: it needs the in-memory fleet and the
//! counting store, which have no place in the tool operators install.

#[allow(dead_code)]
#[path = "../tests/engine/bed.rs"]
mod bed;
#[allow(dead_code)]
#[path = "../tests/engine/tap.rs"]
mod tap;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use applier::config::HostConfig;
use applier::engine::{self, DeployOptions, EnvContext};
use applier::events::{Event, EventSink};
use applier::host::Host;
use applier::pool::{Pool, PoolError};
use applier::protocol::{HostError, HostRequest, HostResponse};
use artifact::store::{Store, StoreOptions};
use clap::Parser;
use serde_json::json;

const A: &str = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
const B: &str = "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";

/// Per-operation latencies of the in-memory hosts (ms), from the local and ssh benchmarks:
/// node's stop and start+ready, one check, a pool change, a fetch of a cached-size layer, and
/// a round trip for the rest.
const LATENCIES: &[(&str, u64)] = &[
    ("stop", 30),
    ("start", 50),
    ("wait-ready", 330),
    ("read-file", 15),
    ("depool", 10),
    ("repool", 10),
    ("fetch-urls", 20),
    ("preflight", 5),
];
const OTHER_OP_MS: u64 = 2;

#[derive(Parser)]
struct Args {
    /// In-memory hosts.
    #[arg(long)]
    hosts: Option<usize>,
    #[arg(long, default_value_t = 50)]
    group_size: usize,
    #[arg(long, default_value_t = 4)]
    prefetch_parallelism: usize,
    /// Store: a directory (default: a fresh one) or s3://bucket/prefix.
    #[arg(long)]
    store: Option<String>,
    #[arg(long)]
    s3_endpoint: Option<String>,
    /// `op=ms` over the defaults (repeatable); `other=ms` for every op not listed.
    #[arg(long = "latency")]
    latencies: Vec<String>,
    /// A real inventory instead of in-memory hosts.
    #[arg(long)]
    config: Option<PathBuf>,
    #[arg(long, default_value = "bench")]
    env: String,
    #[arg(long)]
    target: Option<String>,
}

/// A host whose every request is timed, by operation.
#[derive(Debug)]
struct Timed {
    inner: Arc<dyn Host>,
    spent: Mutex<BTreeMap<String, Duration>>,
}

impl Host for Timed {
    fn name(&self) -> &str {
        self.inner.name()
    }
    fn config(&self) -> &HostConfig {
        self.inner.config()
    }
    fn call(&self, req: HostRequest) -> Result<HostResponse, HostError> {
        // A batch request by request, as a target runs it, so that its start is timed as the
        // service's own (the floor) and its render and switch as the tool's.
        if let HostRequest::Batch(b) = req {
            return Ok(HostResponse::Batch(b.run(|r| {
                self.call(r)
                    .unwrap_or_else(|e| HostResponse::Error(e.to_remote()))
            })?));
        }
        let op = req.op();
        let t0 = Instant::now();
        let r = self.inner.call(req);
        *self.spent.lock().unwrap().entry(op).or_default() += t0.elapsed();
        r
    }
}

/// A pool whose depools and repools are timed, per host.
#[derive(Debug)]
struct TimedPool {
    inner: Box<dyn Pool>,
    spent: Mutex<BTreeMap<String, Duration>>,
}

impl TimedPool {
    fn timed(
        &self,
        host: &str,
        f: impl FnOnce() -> Result<(), PoolError>,
    ) -> Result<(), PoolError> {
        let t0 = Instant::now();
        let r = f();
        *self
            .spent
            .lock()
            .unwrap()
            .entry(host.to_string())
            .or_default() += t0.elapsed();
        r
    }
}

impl Pool for TimedPool {
    fn depool(&self, host: &dyn Host, port: Option<u16>) -> Result<(), PoolError> {
        self.timed(host.name(), || self.inner.depool(host, port))
    }
    fn repool(&self, host: &dyn Host, port: Option<u16>) -> Result<(), PoolError> {
        self.timed(host.name(), || self.inner.repool(host, port))
    }
    fn out_of_pool(&self, hosts: &[String]) -> Result<Vec<String>, PoolError> {
        self.inner.out_of_pool(hosts)
    }
}

/// What the benchmark takes from the event stream: the batches, each host's checks time,
/// when the roll began and ended, and failures.
#[derive(Default)]
struct Watch {
    t: Mutex<WatchState>,
}

#[derive(Default)]
struct WatchState {
    batches: Vec<Vec<String>>,
    batch_start: Vec<Instant>,
    host_done: BTreeMap<String, Instant>,
    checks_ms: BTreeMap<String, u64>,
    first_preflight: Option<Instant>,
    first_group: Option<Instant>,
    last_host_done: Option<Instant>,
    failed: Vec<String>,
    events: u64,
}

impl EventSink for Watch {
    fn emit(&self, e: &Event) {
        let now = Instant::now();
        let mut t = self.t.lock().unwrap();
        t.events += 1;
        match e {
            Event::Preflight { .. } => {
                t.first_preflight.get_or_insert(now);
            }
            Event::Group { hosts, .. } => {
                t.first_group.get_or_insert(now);
                t.batches.push(hosts.clone());
                t.batch_start.push(now);
            }
            Event::Check { host, result } => {
                *t.checks_ms.entry(host.clone()).or_default() += result.elapsed_ms;
            }
            Event::HostDone { host, ok, .. } => {
                t.last_host_done = Some(now);
                t.host_done.insert(host.clone(), now);
                if !ok {
                    t.failed.push(host.clone());
                }
            }
            _ => {}
        }
    }
}

/// VmHWM (peak resident set) or VmRSS of this process, in MB.
fn proc_mb(field: &str) -> f64 {
    let s = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    s.lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map(|kb| kb / 1024.0)
        .unwrap_or(f64::NAN)
}

fn latencies(args: &[String]) -> (BTreeMap<String, Duration>, Duration) {
    let mut m: BTreeMap<String, Duration> = LATENCIES
        .iter()
        .map(|(op, ms)| (op.to_string(), Duration::from_millis(*ms)))
        .collect();
    let mut other = Duration::from_millis(OTHER_OP_MS);
    for a in args {
        let (op, ms) = a.split_once('=').expect("--latency op=ms");
        let d = Duration::from_millis(ms.parse().expect("--latency op=ms"));
        if op == "other" {
            other = d;
        } else {
            m.insert(op.to_string(), d);
        }
    }
    (m, other)
}

fn open_store(args: &Args) -> (Arc<dyn Store>, Option<tempfile::TempDir>, String) {
    match &args.store {
        Some(loc) => {
            let opts = StoreOptions {
                s3_endpoint: args.s3_endpoint.clone(),
                s3_region: Some("us-east-1".into()),
                s3_force_path_style: true,
                ..Default::default()
            };
            let kind = if loc.starts_with("s3://") {
                "s3"
            } else {
                "dir"
            };
            (
                artifact::store::open(loc, &opts).expect("opening the store"),
                None,
                kind.into(),
            )
        }
        None => {
            let d = tempfile::tempdir().unwrap();
            let s = artifact::store::open(&d.path().display().to_string(), &Default::default())
                .unwrap();
            (s, Some(d), "dir".into())
        }
    }
}

/// An in-memory fleet of `n` hosts running A, and the env over it; returns the context, the
/// digest to deploy, and the bed (which must outlive the run).
fn memory_fleet(args: &Args, n: usize, tap: Arc<tap::TapStore>) -> (EnvContext, String, bed::Bed) {
    let names: Vec<String> = (1..=n).map(|i| format!("h{i:04}")).collect();
    let bed = bed::Bed::on_store(tap.clone(), None, names.clone());
    let a = bed.artifact(A, "");
    let b = bed.artifact(B, "");
    let (lat, other) = latencies(&args.latencies);
    for h in bed.hosts.values() {
        h.install(&a);
        h.set_latency(None, other);
        for (op, d) in &lat {
            h.set_latency(Some(op), *d);
        }
    }
    for op in ["depool", "repool"] {
        bed.pool
            .set_latency(op, lat.get(op).copied().unwrap_or(other));
    }
    let cfg = json!({
        "groups": [
            {"name": "canary", "hosts": [names[0]]},
            {"name": "rest", "hosts": &names[1..]},
        ],
        "group_size": args.group_size,
        "capacity": {"max_out": args.group_size},
        "prefetch_parallelism": args.prefetch_parallelism,
    });
    let mut ctx = bed.ctx_on(tap, "fleet", cfg);
    ctx.lease_ttl = Duration::from_secs(120);
    (ctx, b.manifest.to_string(), bed)
}

/// The env of a real inventory, reaching its store through `wrap`.
fn real_fleet(args: &Args, wrap: impl FnOnce(Arc<dyn Store>) -> Arc<dyn Store>) -> EnvContext {
    let r = applier::config::Layers {
        files: vec![args.config.clone().unwrap()],
        env: vec![],
        store_flag: args.store.clone(),
        sets: vec![],
    }
    .resolve()
    .expect("the config");
    let so = &r.config.store_options;
    let opts = StoreOptions {
        s3_endpoint: so.s3_endpoint.clone(),
        s3_region: so.s3_region.clone(),
        s3_force_path_style: so.s3_force_path_style,
        ..Default::default()
    };
    let store = artifact::store::open(&r.config.store, &opts).expect("opening the store");
    let cfg = r.env(&args.env).expect("the env");
    EnvContext::new(
        &args.env,
        cfg,
        wrap(store),
        r.config.lease_ttl.0,
        "bench@fleet",
        r.config.store_options.max_concurrent_requests,
    )
}

/// The env to deploy to and what must live as long as the run.
struct Fleet {
    ctx: EnvContext,
    target: String,
    store_kind: String,
    tap: Arc<tap::TapStore>,
    _dir: Option<tempfile::TempDir>,
    _bed: Option<bed::Bed>,
}

fn fleet(args: &Args) -> Fleet {
    if let Some(n) = args.hosts {
        let (store, dir, store_kind) = open_store(args);
        let tap = tap::TapStore::new(store);
        let (ctx, target, bed) = memory_fleet(args, n, tap.clone());
        return Fleet {
            ctx,
            target,
            store_kind,
            tap,
            _dir: dir,
            _bed: Some(bed),
        };
    }
    let mut tap = None;
    let ctx = real_fleet(args, |s| {
        let t = tap::TapStore::new(s);
        tap = Some(t.clone());
        t
    });
    let store_kind = if ctx.store.location().starts_with("s3://") {
        "s3"
    } else {
        "dir"
    };
    Fleet {
        ctx,
        target: args.target.clone().expect("--target with --config"),
        store_kind: store_kind.into(),
        tap: tap.expect("the store"),
        _dir: None,
        _bed: None,
    }
}

fn main() {
    let args = Args::parse();
    let fleet = fleet(&args);
    let (mut ctx, tap) = (fleet.ctx, fleet.tap);
    // Time every host and the pool.
    let timed: BTreeMap<String, Arc<Timed>> = ctx
        .hosts
        .iter()
        .map(|(n, h)| {
            let t = Arc::new(Timed {
                inner: h.clone(),
                spent: Mutex::new(BTreeMap::new()),
            });
            (n.clone(), t)
        })
        .collect();
    ctx.hosts = timed
        .iter()
        .map(|(n, t)| (n.clone(), t.clone() as Arc<dyn Host>))
        .collect();
    let pool = Arc::new(TimedPool {
        inner: std::mem::replace(&mut ctx.pool, Box::new(applier::pool::NoPool)),
        spent: Mutex::new(BTreeMap::new()),
    });
    ctx.pool = Box::new(SharedPool(pool.clone()));
    let n = ctx.hosts.len();

    // Planning: `applier plan` as operators run it (hosts asked on the bounded pool), and the
    // naive way, one host after another, in the same run.
    let parallelism = ctx.cfg.prefetch_parallelism;
    let plan_s = time_plan(&mut ctx, &fleet.target, parallelism);
    let plan_serial_s = time_plan(&mut ctx, &fleet.target, 1);

    tap.reset();
    let rss_before = proc_mb("VmRSS:");
    let watch = Watch::default();
    let t0 = Instant::now();
    let outcome = engine::deploy(&ctx, &watch, &fleet.target, &DeployOptions::default())
        .unwrap_or_else(|e| panic!("deploy refused: {e}"));
    let wall = t0.elapsed();
    let peak = proc_mb("VmHWM:");
    let counts = tap.counts();

    let w = watch.t.lock().unwrap();
    let pool_spent = pool.spent.lock().unwrap();
    let own = |h: &str| -> f64 {
        let spent = timed[h].spent.lock().unwrap();
        let ops: Duration = ["stop", "start", "wait-ready"]
            .iter()
            .filter_map(|op| spent.get(*op))
            .sum();
        let pool = pool_spent.get(h).copied().unwrap_or_default();
        let checks = Duration::from_millis(w.checks_ms.get(h).copied().unwrap_or(0));
        (ops + pool + checks).as_secs_f64()
    };
    let secs = |a: Option<Instant>, b: Option<Instant>| match (a, b) {
        (Some(a), Some(b)) => b.saturating_duration_since(a).as_secs_f64(),
        _ => f64::NAN,
    };
    let batch_floor: Vec<f64> = w
        .batches
        .iter()
        .map(|b| b.iter().map(|h| own(h)).fold(0.0, f64::max))
        .collect();
    let floor: f64 = batch_floor.iter().sum();
    // Each batch's wall (its start to its last host done) less its floor, and the gaps from
    // one batch's last host to the next batch's start.
    let batch_end: Vec<Option<Instant>> = w
        .batches
        .iter()
        .map(|b| b.iter().filter_map(|h| w.host_done.get(h)).max().copied())
        .collect();
    let in_batches: f64 = (0..w.batches.len())
        .map(|i| secs(Some(w.batch_start[i]), batch_end[i]) - batch_floor[i])
        .sum();
    let between: f64 = (1..w.batches.len())
        .map(|i| secs(batch_end[i - 1], Some(w.batch_start[i])))
        .sum();
    let rolling = secs(w.first_group, w.last_host_done);
    let requests = counts.requests.values().sum::<u64>();
    let env_requests = counts.requests_in("envs");
    let journal = applier::records::read_journal(ctx.store.as_ref(), &ctx.name, &outcome.deploy_id)
        .expect("the journal");
    // The naive baseline of a whole deploy: one host after another (a loop over the hosts),
    // at least the sum of every host's own time.
    let serial_s: f64 = timed.keys().map(|h| own(h)).sum();
    let journal_writes = counts.requests["put_cas envs/segments"]
        + counts
            .requests
            .get("put_cas envs/deploys")
            .copied()
            .unwrap_or(0);
    let naive = naive_journal(ctx.store.as_ref(), &journal, journal_writes);
    let report = json!({
        "fleet": if args.hosts.is_some() { "memory" } else { "local processes" },
        "store": fleet.store_kind,
        "hosts": n,
        "group_size": ctx.cfg.group_size,
        "batches": w.batches.len(),
        "status": outcome.status.as_str(),
        "failed": w.failed,
        "wall_s": wall.as_secs_f64(),
        "before_roll_s": secs(Some(t0), w.first_group),
        "preflight_and_prefetch_s": secs(w.first_preflight, w.first_group),
        "rolling_s": rolling,
        "after_roll_s": w.last_host_done.map(|t| (t0 + wall).saturating_duration_since(t).as_secs_f64()),
        "floor_s": floor,
        "overhead_in_batches_s": in_batches,
        "overhead_between_batches_s": between,
        "rolling_over_floor": rolling / floor,
        "wall_over_floor": wall.as_secs_f64() / floor,
        "rss_before_mb": rss_before,
        "peak_rss_mb": peak,
        "store_requests": requests,
        "store_requests_per_host": requests as f64 / n as f64,
        "env_record_requests_per_host": env_requests as f64 / n as f64,
        "artifact_requests": requests - env_requests,
        "requests": counts.requests,
        "journal_bytes_written": counts.bytes_in("envs/deploys") + counts.bytes_in("envs/segments"),
        "journal_steps": journal.steps.len(),
        "env_state_bytes_written": counts.bytes_in("envs/state.json"),
        "journal_writes": journal_writes,
        "naive_journal_bytes_written": naive.0,
        "naive_journal_write_s": naive.1,
        "plan_s": plan_s,
        "plan_serial_s": plan_serial_s,
        "serial_s": serial_s,
        "wall_over_serial": wall.as_secs_f64() / serial_s,
        "events": w.events,
    });
    println!("{report}");
}

/// Seconds `applier plan` takes (the library's preview, gates included) with the hosts asked
/// `parallelism` at a time.
fn time_plan(ctx: &mut EnvContext, target: &str, parallelism: usize) -> f64 {
    let was = std::mem::replace(&mut ctx.cfg.prefetch_parallelism, parallelism);
    let t0 = Instant::now();
    engine::preview(ctx, target, &DeployOptions::default())
        .unwrap_or_else(|e| panic!("plan refused: {e}"));
    let s = t0.elapsed().as_secs_f64();
    ctx.cfg.prefetch_parallelism = was;
    s
}

/// The journal as a writer that rewrites it whole would have written it, measured on the same
/// store: `writes` compare-and-swap writes of the journal as it grew (the final journal's first
/// steps, in proportion), to a scratch key deleted after. Bytes written and seconds taken.
fn naive_journal(store: &dyn Store, j: &applier::records::Journal, writes: u64) -> (u64, f64) {
    let key = format!("bench/naive-journal-{}.json", j.id);
    let mut partial = j.clone();
    let (mut bytes, mut etag) = (0u64, None);
    let t0 = Instant::now();
    for k in 1..=writes.max(1) {
        partial.steps = j.steps[..j.steps.len() * k as usize / writes.max(1) as usize].to_vec();
        let body = serde_json::to_vec(&partial).expect("serialises");
        bytes += body.len() as u64;
        etag = Some(
            store
                .put_cas(&key, &body, etag.as_ref())
                .expect("writing the naive journal"),
        );
    }
    let s = t0.elapsed().as_secs_f64();
    store.delete(&key).expect("deleting the naive journal");
    (bytes, s)
}

/// The timed pool, owned by the context and read by the report.
#[derive(Debug)]
struct SharedPool(Arc<TimedPool>);

impl Pool for SharedPool {
    fn depool(&self, host: &dyn Host, port: Option<u16>) -> Result<(), PoolError> {
        self.0.depool(host, port)
    }
    fn repool(&self, host: &dyn Host, port: Option<u16>) -> Result<(), PoolError> {
        self.0.repool(host, port)
    }
    fn out_of_pool(&self, hosts: &[String]) -> Result<Vec<String>, PoolError> {
        self.0.out_of_pool(hosts)
    }
}
