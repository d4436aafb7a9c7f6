//! An in-memory load balancer beside the in-memory hosts: who is out of the pool, the most
//! that were ever out at once, per-operation latency, injected failures and hooks.
//!
//! Clones share one state, so a test keeps a clone while the environment owns another
//! (`Box::new(pool.clone())`). Operations are `depool` and `repool`; `out_of_pool` answers from
//! the same set, so hosts taken out by "someone else" ([`MemoryPool::set_out`]) count for the
//! capacity guard as they would on a real load balancer.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::{Hooks, Parked};
use crate::host::Host;
use crate::pool::{Pool, PoolError};

#[derive(Debug, Default)]
struct State {
    out: BTreeSet<String>,
    max_out_seen: usize,
    latency: BTreeMap<String, Duration>,
    /// (op, host) -> the error of its next call.
    fail_next: BTreeMap<(String, String), String>,
    calls: Vec<(String, String)>,
}

#[derive(Debug, Default)]
struct Inner {
    state: Mutex<State>,
    /// Hooks by `<op> <host>` (`depool h1`).
    hooks: Hooks,
}

/// A load balancer held in memory.
#[derive(Clone, Debug, Default)]
pub struct MemoryPool(Arc<Inner>);

impl MemoryPool {
    pub fn new() -> Self {
        Self::default()
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.0.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Puts `host` out of the pool (or back) without a call, as another operator would.
    pub fn set_out(&self, host: &str, out: bool) {
        let mut s = self.state();
        if out {
            s.out.insert(host.to_string());
        } else {
            s.out.remove(host);
        }
    }

    pub fn is_out(&self, host: &str) -> bool {
        self.state().out.contains(host)
    }

    /// The most hosts that were out of the pool at once through depool calls.
    pub fn max_out_seen(&self) -> usize {
        self.state().max_out_seen
    }

    /// How long `op` (`depool`, `repool`) takes.
    pub fn set_latency(&self, op: &str, latency: Duration) {
        self.state().latency.insert(op.to_string(), latency);
    }

    /// The next `op` of `host` fails with `message`.
    pub fn fail_next(&self, op: &str, host: &str, message: &str) {
        self.state()
            .fail_next
            .insert((op.to_string(), host.to_string()), message.to_string());
    }

    /// Runs `f` once, at the next `op` of `host`, before it acts.
    pub fn on_call(&self, op: &str, host: &str, f: impl FnOnce() + Send + 'static) {
        self.0.hooks.add(&format!("{op} {host}"), Box::new(f));
    }

    /// The next caller of `op` for `host` is parked there for good.
    pub fn park_on_call(&self, op: &str, host: &str) -> Parked {
        self.0.hooks.park(&format!("{op} {host}"))
    }

    /// Every depool and repool so far: (op, host), in order.
    pub fn calls(&self) -> Vec<(String, String)> {
        self.state().calls.clone()
    }

    fn op(&self, action: &'static str, host: &str, out: bool) -> Result<(), PoolError> {
        let latency = {
            let mut s = self.state();
            s.calls.push((action.to_string(), host.to_string()));
            s.latency.get(action).copied().unwrap_or_default()
        };
        self.0.hooks.run(&format!("{action} {host}"));
        if !latency.is_zero() {
            std::thread::sleep(latency);
        }
        let mut s = self.state();
        if let Some(detail) = s.fail_next.remove(&(action.to_string(), host.to_string())) {
            return Err(PoolError {
                action,
                host: host.to_string(),
                detail,
            });
        }
        if out {
            s.out.insert(host.to_string());
            s.max_out_seen = s.max_out_seen.max(s.out.len());
        } else {
            s.out.remove(host);
        }
        Ok(())
    }
}

impl Pool for MemoryPool {
    fn depool(&self, host: &dyn Host, _: Option<u16>) -> Result<(), PoolError> {
        self.op("depool", host.name(), true)
    }
    fn repool(&self, host: &dyn Host, _: Option<u16>) -> Result<(), PoolError> {
        self.op("repool", host.name(), false)
    }
    fn out_of_pool(&self, hosts: &[String]) -> Result<Vec<String>, PoolError> {
        let s = self.state();
        Ok(hosts
            .iter()
            .filter(|h| s.out.contains(*h))
            .cloned()
            .collect())
    }
}
