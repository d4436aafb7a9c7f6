//! Operator configuration: the inventory and deploy settings on the deployment host.
//!
//! This module holds the configuration's types (what `deploy.yaml` may say, with
//! `deny_unknown_fields` everywhere); [`layers`] resolves them from their layers (defaults,
//! files, environment variables the binary passes in, flags) with the origin of every value;
//! [`validate`] holds the rules the result must meet (names, addresses, minimums, roots).

pub mod analysis;
pub mod layers;
pub mod policy;
pub mod validate;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;

pub use model::Dur;

fn secs(n: u64) -> Dur {
    Dur(Duration::from_secs(n))
}

/// The whole operator configuration.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Store location: a directory or `s3://bucket/prefix`.
    #[serde(default = "default_store")]
    pub store: String,
    #[serde(default)]
    pub store_options: StoreSettings,
    /// How long a deploy's lease on an environment lasts between renewals.
    #[serde(default = "default_lease_ttl")]
    pub lease_ttl: Dur,
    #[serde(default)]
    pub envs: BTreeMap<String, EnvConfig>,
}

fn default_store() -> String {
    "./.artifacts".into()
}
fn default_lease_ttl() -> Dur {
    secs(120)
}

impl Default for Config {
    fn default() -> Self {
        Config {
            store: default_store(),
            store_options: StoreSettings::default(),
            lease_ttl: default_lease_ttl(),
            envs: BTreeMap::new(),
        }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoreSettings {
    #[serde(default)]
    pub s3_endpoint: Option<String>,
    #[serde(default)]
    pub s3_region: Option<String>,
    #[serde(default)]
    pub s3_force_path_style: bool,
    /// Store requests the applier has in flight at once, across every host of a deploy
    /// (prefetch, state, journal, lease), so a big fleet cannot flood the store.
    #[serde(default = "default_max_concurrent_requests")]
    pub max_concurrent_requests: usize,
}

fn default_max_concurrent_requests() -> usize {
    crate::store_meter::DEFAULT_MAX_CONCURRENT
}

impl Default for StoreSettings {
    fn default() -> Self {
        StoreSettings {
            s3_endpoint: None,
            s3_region: None,
            s3_force_path_style: false,
            max_concurrent_requests: default_max_concurrent_requests(),
        }
    }
}

/// One environment: its hosts and how to roll over them.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnvConfig {
    /// Which `deploy/env/<name>.yaml` of the release to render (default: this env's name).
    #[serde(default)]
    pub service_env: Option<String>,
    #[serde(default)]
    pub transport: TransportConfig,
    #[serde(default)]
    pub pool: PoolConfig,
    /// Groups in rollout order; the first is the canary group.
    pub groups: Vec<GroupConfig>,
    /// Non-canary groups larger than this are split into batches of this size.
    #[serde(default = "default_group_size")]
    pub group_size: usize,
    /// Failed hosts tolerated before the deploy aborts (0: the first failure aborts).
    #[serde(default)]
    pub failure_limit: usize,
    #[serde(default)]
    pub capacity: CapacityConfig,
    /// After the canary group passes: wait this long, then check the canaries again.
    #[serde(default)]
    pub canary_bake: Dur,
    #[serde(default)]
    pub checks: CheckSettings,
    /// Hosts prefetched at once.
    #[serde(default = "default_prefetch_parallelism")]
    pub prefetch_parallelism: usize,
    /// Preflight: free bytes a host's root needs beyond the artifact's size.
    #[serde(default = "default_min_free_bytes")]
    pub min_free_bytes: u64,
    /// Releases kept per host by pruning (current and last known good are always kept).
    #[serde(default = "default_keep_releases")]
    pub keep_releases: usize,
    /// The node binary on the hosts (preflight ABI check; empty: skip the check).
    #[serde(default = "default_node")]
    pub node: String,
    /// How long the service gets to bind its port after start.
    #[serde(default)]
    pub ready_timeout: Option<Dur>,
    /// Deploy (and roll back to) only artifacts signed by one of these keys; `None`: signatures
    /// are not required.
    #[serde(default)]
    pub require_signature: Option<SignaturePolicy>,
    /// Deploy here only artifacts that a succeeded deploy already put on each of these
    /// environments; `None`: no such gate.
    #[serde(default)]
    pub promotion: Option<PromotionPolicy>,
    /// Operator values for every host, below each host's own `values` (see
    /// [`crate::envconfig`] for the layers and keys).
    #[serde(default)]
    pub values: BTreeMap<String, Value>,
    /// The hosts' ops file, `{service}` substituted, relative paths under each host's root;
    /// default `/etc/{service}/ops.yaml` (which may then be absent). A host's own `ops_file`
    /// wins. A configured file must exist.
    #[serde(default)]
    pub ops_file: Option<String>,
    /// What blocking storage changes need: `require_ack` (default) or `acknowledge`.
    #[serde(default)]
    pub schema_policy: policy::SchemaPolicy,
    /// Refuse deploys, promotions and rollbacks without `-m/--message`.
    #[serde(default)]
    pub require_message: bool,
    /// Windows in which deploys are refused (see [`policy::FreezeWindow`]).
    #[serde(default)]
    pub freeze: Vec<policy::FreezeWindow>,
    /// Where start, finish, abort, rollback and needs-human events go.
    #[serde(default)]
    pub notify: Vec<policy::NotifySink>,
    /// `applier cd`: the branch this env follows.
    #[serde(default)]
    pub cd: Option<policy::CdPolicy>,
    /// Where every deploy, rollback and resume of this env writes its HTML report
    /// (`<env>-<deploy id>.html`) when it ends; `None`: no report is written.
    #[serde(default)]
    pub report_dir: Option<PathBuf>,
    pub hosts: BTreeMap<String, HostConfig>,
}

/// `promotion`: the environments an artifact must have passed before it may come here.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PromotionPolicy {
    /// Environment names (their records are read from the store, so they need not be
    /// configured in the same file).
    pub requires: Vec<String>,
}

/// `require_signature`: which keys an artifact must be signed by (any one of them).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignaturePolicy {
    /// Each a public key file path, or an inline `ed25519-public <base64>`.
    pub trusted_keys: Vec<String>,
}

fn default_group_size() -> usize {
    1
}
fn default_prefetch_parallelism() -> usize {
    4
}
fn default_min_free_bytes() -> u64 {
    64 << 20
}
fn default_keep_releases() -> usize {
    3
}
fn default_node() -> String {
    "node".into()
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GroupConfig {
    pub name: String,
    pub hosts: Vec<String>,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CapacityConfig {
    /// At most this many hosts out of the pool at once.
    #[serde(default)]
    pub max_out: Option<usize>,
    /// At most this percentage of the env's hosts out of the pool at once (at least one).
    #[serde(default)]
    pub max_out_percent: Option<u32>,
    /// When hosts outside this deploy fill the allowance: wait up to this long for them to
    /// come back into the pool before aborting (0, the default: abort at once).
    #[serde(default)]
    pub wait: Dur,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase", deny_unknown_fields)]
pub enum TransportConfig {
    /// Hosts are directories on this machine.
    #[default]
    Local,
    /// The system `ssh` runs `applier host ...` on each target (see [`crate::host::ssh`]).
    Ssh(Box<SshConfig>),
}

/// How the ssh transport reaches the targets. The system `ssh` is used, so the user's
/// `ssh_config`, agent, `known_hosts` and jump hosts apply.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SshConfig {
    /// Login user (`-l`); default: whatever ssh_config says.
    #[serde(default)]
    pub user: Option<String>,
    /// An ssh config file (`-F`).
    #[serde(default)]
    pub config_file: Option<PathBuf>,
    /// The `ssh` binary.
    #[serde(default = "default_ssh")]
    pub ssh: String,
    /// The applier binary on the targets.
    #[serde(default = "default_applier_path")]
    pub applier_path: String,
    /// Run the host operations (which control the service) through `sudo -n`.
    #[serde(default)]
    pub sudo: bool,
    /// With `sudo`: the user to run them as (`sudo -n -u <user>`, e.g. the service's deploy
    /// user that owns the deploy root); root when unset.
    #[serde(default)]
    pub sudo_user: Option<String>,
    /// `ConnectTimeout`.
    #[serde(default = "default_connect_timeout")]
    pub connect_timeout: Dur,
    /// How long the shared connection outlives its last use (`ControlPersist`).
    #[serde(default = "default_control_persist")]
    pub control_persist: Dur,
    /// Where the shared connections' sockets live (a private directory is made inside).
    #[serde(default = "default_control_dir")]
    pub control_dir: PathBuf,
    /// Per-operation timeout (a host op that takes longer is killed and fails the host).
    #[serde(default = "default_op_timeout")]
    pub op_timeout: Dur,
    /// Expiry of the presigned layer URLs handed to the targets.
    #[serde(default = "default_presign_expiry")]
    pub presign_expiry: Dur,
    /// Extra `-o` options (`StrictHostKeyChecking=yes`, ...).
    #[serde(default)]
    pub options: Vec<String>,
}

fn default_ssh() -> String {
    "ssh".into()
}
fn default_applier_path() -> String {
    "applier".into()
}
fn default_connect_timeout() -> Dur {
    secs(10)
}
fn default_control_persist() -> Dur {
    secs(60)
}
fn default_control_dir() -> PathBuf {
    PathBuf::from("/tmp")
}
fn default_op_timeout() -> Dur {
    secs(600)
}
fn default_presign_expiry() -> Dur {
    secs(900)
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(tag = "driver", rename_all = "lowercase", deny_unknown_fields)]
pub enum PoolConfig {
    /// No load balancer: depool and repool do nothing.
    #[default]
    None,
    /// Shell commands (`sh -c`) with `{host}`, `{address}`, `{port}`, `{env}` substituted.
    Command {
        depool: String,
        repool: String,
        /// Optional: exits 0 when the host is depooled (run after depool to confirm).
        #[serde(default)]
        confirm_depooled: Option<String>,
        /// Optional: exits 0 when the host is out of the pool now, whoever took it out. Run
        /// for every host before each batch, so the capacity guard counts hosts an operator or
        /// another tool depooled.
        #[serde(default)]
        is_depooled: Option<String>,
        #[serde(default = "default_pool_timeout")]
        timeout: Dur,
    },
    /// Wikimedia's conftool: `confctl select <selector>,name=<host> set/pooled=no|yes` over
    /// etcd, the pooled state read back (see [`crate::conftool`]).
    Conftool {
        /// The `confctl` binary.
        #[serde(default = "default_confctl")]
        confctl: PathBuf,
        /// `confctl --config`.
        #[serde(default)]
        config: Option<PathBuf>,
        /// `confctl --schema`.
        #[serde(default)]
        schema: Option<PathBuf>,
        /// Tags before `name=<host>`, e.g. `dc=eqiad,cluster=restbase,service=restbase`.
        #[serde(default)]
        selector: Option<String>,
        /// Inventory host -> conftool node name (default: the same name).
        #[serde(default)]
        nodes: BTreeMap<String, String>,
        #[serde(default = "default_pool_timeout")]
        timeout: Dur,
    },
    /// HAProxy's runtime API on its admin socket (see [`crate::haproxy`]).
    Haproxy {
        /// The admin socket (a UNIX socket on this machine, or on `via_ssh`).
        socket: PathBuf,
        /// The load-balancer host whose `socket` this is, reached with the system ssh
        /// (`[user@]host` or an ssh_config alias); it needs `socat`.
        #[serde(default)]
        via_ssh: Option<String>,
        /// `ssh -F` for `via_ssh`.
        #[serde(default)]
        ssh_config: Option<PathBuf>,
        /// The backend holding the hosts' servers.
        backend: String,
        /// Inventory host -> HAProxy server name (default: the same name).
        #[serde(default)]
        servers: BTreeMap<String, String>,
        /// How long to wait for a drained server's sessions to end before maintenance.
        #[serde(default = "default_drain_timeout")]
        drain_timeout: Dur,
        /// How long to wait for a repooled server to be seen up by its health checks.
        #[serde(default = "default_pool_timeout")]
        timeout: Dur,
    },
}

fn default_confctl() -> PathBuf {
    PathBuf::from("confctl")
}

fn default_drain_timeout() -> Dur {
    secs(30)
}

fn default_pool_timeout() -> Dur {
    secs(30)
}

/// Ops-side check settings: endpoints and policies the service's own checks refer to.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CheckSettings {
    /// Whether an inconclusive check (e.g. no metrics yet) fails the host.
    #[serde(default)]
    pub inconclusive: InconclusivePolicy,
    /// Prometheus base URL for `metrics` checks with `source: prometheus`.
    #[serde(default)]
    pub prometheus: Option<String>,
    /// Graphite base URL for `metrics` checks with `source: graphite`.
    #[serde(default)]
    pub graphite: Option<String>,
    /// Default per-check timeout.
    #[serde(default = "default_check_timeout")]
    pub timeout: Dur,
    /// Extra checks run after the service's own.
    #[serde(default)]
    pub extra: Vec<crate::checks::CheckSpec>,
    /// Skip the service's own checks (only `extra` run).
    #[serde(default)]
    pub skip_service_checks: bool,
    /// Check types (`http`, `logs`, `metrics`) or names not to run here.
    #[serde(default)]
    pub disable: Vec<String>,
    /// Canary against baseline (see [`analysis::CanaryConfig`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub canary: Option<analysis::CanaryConfig>,
    /// k-of-n for host-level metric failures (see [`analysis::QuorumConfig`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quorum: Option<analysis::QuorumConfig>,
    /// The fleet-wide watch during the rollout (see [`analysis::WatchConfig`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub watch: Option<analysis::WatchConfig>,
}

impl Default for CheckSettings {
    fn default() -> Self {
        CheckSettings {
            inconclusive: InconclusivePolicy::default(),
            prometheus: None,
            graphite: None,
            timeout: default_check_timeout(),
            extra: Vec::new(),
            skip_service_checks: false,
            disable: Vec::new(),
            canary: None,
            quorum: None,
            watch: None,
        }
    }
}

fn default_check_timeout() -> Dur {
    secs(10)
}

pub use model::service::InconclusivePolicy;

/// One host: where it keeps releases and its host-local values.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HostConfig {
    /// The host's root directory (`releases/`, `current`, `state.json`, ...).
    pub root: PathBuf,
    /// Address checks connect to.
    #[serde(default = "default_address")]
    pub address: String,
    /// The service's port on this host (overrides the service's default).
    #[serde(default)]
    pub port: Option<u16>,
    /// Host-local values merged into the rendered config: JSON pointer or dotted path ->
    /// value (`/services/0/conf/storage/path: /srv/data/store.json`).
    #[serde(default)]
    pub values: BTreeMap<String, Value>,
    /// This host's ops file (as the env's `ops_file`).
    #[serde(default)]
    pub ops_file: Option<String>,
    /// Extra environment variables for the service process.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// ssh transport: the destination (`host`, `user@host`, an ssh_config alias); default:
    /// the inventory name.
    #[serde(default)]
    pub ssh: Option<String>,
}

fn default_address() -> String {
    "127.0.0.1".into()
}

pub use layers::{ConfigError, Layers, Resolved, Source, set_value_path};

/// The default config file: `./deploy.yaml` if it exists.
pub fn default_file(cwd: &Path) -> Option<PathBuf> {
    let p = cwd.join("deploy.yaml");
    p.is_file().then_some(p)
}

impl EnvConfig {
    /// Hosts in rollout order, in batches: the canary group whole, then the other groups split
    /// into batches of `group_size`.
    pub fn batches(&self) -> Vec<(String, Vec<String>)> {
        let mut out = Vec::new();
        for (i, g) in self.groups.iter().enumerate() {
            if i == 0 {
                out.push((g.name.clone(), g.hosts.clone()));
                continue;
            }
            let chunks: Vec<_> = g.hosts.chunks(self.group_size).collect();
            let n = chunks.len();
            for (j, c) in chunks.into_iter().enumerate() {
                let name = if n == 1 {
                    g.name.clone()
                } else {
                    format!("{}#{}", g.name, j + 1)
                };
                out.push((name, c.to_vec()));
            }
        }
        out
    }

    /// How many hosts may be out of the pool at once.
    pub fn max_out(&self) -> usize {
        let total = self.hosts.len().max(1);
        let mut m = total;
        if let Some(n) = self.capacity.max_out {
            m = m.min(n);
        }
        if let Some(p) = self.capacity.max_out_percent {
            m = m.min(((total * p as usize) / 100).max(1));
        }
        m.max(1)
    }
}

#[cfg(test)]
mod tests;
