//! The rules a resolved configuration must meet beyond its types: names and addresses that
//! become store keys, paths and command-line words ([`model::names`]), durations and limits
//! with sane minimums, absolute roots, and a store location of a known form. Each broken rule
//! is an [`ConfigError::Invalid`] naming the value's path and the rule (exit 64).

use std::path::Path;
use std::time::Duration;

use model::names::{Address, Name};

use super::layers::ConfigError;
use super::{Config, EnvConfig, HostConfig, PoolConfig, TransportConfig};

/// The shortest `lease_ttl` accepted: renewals happen every third of it, and a store round
/// trip or a pause of the deployer must fit well inside it.
pub const MIN_LEASE_TTL: Duration = Duration::from_secs(10);

/// The most store requests in flight at once that may be set.
pub const MAX_CONCURRENT_REQUESTS: usize = 1024;

/// The longest `presign_expiry`: a URL is signed for twice it ([`crate::store_meter`]), and
/// S3 signs for at most 7 days.
pub const MAX_PRESIGN_EXPIRY: Duration = Duration::from_secs(7 * 24 * 3600 / 2);

fn bad(path: &str, rule: impl std::fmt::Display) -> ConfigError {
    ConfigError::Invalid(format!("{path}: {rule}"))
}

fn name(path: &str, s: &str) -> Result<(), ConfigError> {
    Name::parse(s).map(|_| ()).map_err(|e| bad(path, e))
}

fn positive(path: &str, d: Duration) -> Result<(), ConfigError> {
    if d.is_zero() {
        return Err(bad(path, "must be more than 0s"));
    }
    Ok(())
}

/// A store location: a path, `file:///path` or `s3://bucket[/prefix]`, spelt exactly so.
fn store(s: &str) -> Result<(), ConfigError> {
    let forms = "accepted: a directory path, file:///path or s3://bucket[/prefix]";
    if s.is_empty() {
        return Err(bad("store", format!("empty; {forms}")));
    }
    if let Some((scheme, _)) = s.split_once("://")
        && !scheme.contains('/')
        && !matches!(scheme, "s3" | "file")
    {
        return Err(bad(
            "store",
            format!("{s:?} has the scheme {scheme:?}, which is not one this tool reads ({forms})"),
        ));
    }
    Ok(())
}

/// An environment variable's name: `[A-Za-z_][A-Za-z0-9_]*`.
fn env_var(path: &str, k: &str) -> Result<(), ConfigError> {
    let ok = k
        .bytes()
        .next()
        .is_some_and(|b| b.is_ascii_alphabetic() || b == b'_')
        && k.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
    if !ok {
        return Err(bad(
            path,
            format!("{k:?} is not a variable name ([A-Za-z_][A-Za-z0-9_]*)"),
        ));
    }
    Ok(())
}

fn absolute(path: &str, p: &Path) -> Result<(), ConfigError> {
    if !p.is_absolute()
        || p.components()
            .any(|c| matches!(c, std::path::Component::ParentDir))
    {
        return Err(bad(
            path,
            format!("{} must be an absolute path without `..`", p.display()),
        ));
    }
    Ok(())
}

fn host(at: &str, h: &HostConfig) -> Result<(), ConfigError> {
    absolute(&format!("{at}.root"), &h.root)?;
    let addr = Address::parse(&h.address).map_err(|e| bad(&format!("{at}.address"), e))?;
    if addr.contains('@') {
        return Err(bad(
            &format!("{at}.address"),
            "an address is a host, without a user (the ssh login goes in `ssh`)",
        ));
    }
    if h.port == Some(0) {
        return Err(bad(&format!("{at}.port"), "0 is not a port (1-65535)"));
    }
    if let Some(d) = &h.ssh {
        Address::parse(d).map_err(|e| bad(&format!("{at}.ssh"), e))?;
    }
    for k in h.env.keys() {
        env_var(&format!("{at}.env"), k)?;
    }
    Ok(())
}

fn transport(at: &str, t: &TransportConfig) -> Result<(), ConfigError> {
    let TransportConfig::Ssh(s) = t else {
        return Ok(());
    };
    for (k, u) in [("user", &s.user), ("sudo_user", &s.sudo_user)] {
        if let Some(u) = u {
            name(&format!("{at}.{k}"), u)?;
        }
    }
    absolute(&format!("{at}.control_dir"), &s.control_dir)?;
    for (k, d) in [
        ("connect_timeout", s.connect_timeout.0),
        ("op_timeout", s.op_timeout.0),
        ("presign_expiry", s.presign_expiry.0),
        ("control_persist", s.control_persist.0),
    ] {
        positive(&format!("{at}.{k}"), d)?;
    }
    if s.presign_expiry.0 > MAX_PRESIGN_EXPIRY {
        return Err(bad(
            &format!("{at}.presign_expiry"),
            format!(
                "at most {}s (URLs are signed for twice it, and S3 signs for at most 7 days)",
                MAX_PRESIGN_EXPIRY.as_secs()
            ),
        ));
    }
    if let Some(o) = s
        .options
        .iter()
        .find(|o| !o.contains('=') || o.starts_with('-'))
    {
        return Err(bad(
            &format!("{at}.options"),
            format!("{o:?} is not an ssh option of the form Name=value"),
        ));
    }
    Ok(())
}

fn pool(at: &str, p: &PoolConfig) -> Result<(), ConfigError> {
    match p {
        PoolConfig::None => Ok(()),
        PoolConfig::Command { timeout, .. } | PoolConfig::Conftool { timeout, .. } => {
            positive(&format!("{at}.timeout"), timeout.0)
        }
        PoolConfig::Haproxy {
            via_ssh,
            backend,
            servers,
            drain_timeout,
            timeout,
            ..
        } => {
            // Backend and server names go into HAProxy runtime-API command lines.
            name(&format!("{at}.backend"), backend)?;
            for (h, s) in servers {
                name(&format!("{at}.servers.{h}"), s)?;
            }
            if let Some(d) = via_ssh {
                Address::parse(d).map_err(|e| bad(&format!("{at}.via_ssh"), e))?;
            }
            positive(&format!("{at}.drain_timeout"), drain_timeout.0)?;
            positive(&format!("{at}.timeout"), timeout.0)
        }
    }
}

fn env(env_name: &str, e: &EnvConfig) -> Result<(), ConfigError> {
    let at = format!("envs.{env_name}");
    name(&format!("envs: environment {env_name:?}"), env_name)?;
    if let Some(s) = &e.service_env {
        name(&format!("{at}.service_env"), s)?;
    }
    for g in &e.groups {
        name(&format!("{at}.groups"), &g.name)?;
    }
    for (h, hc) in &e.hosts {
        name(&format!("{at}.hosts"), h)?;
        host(&format!("{at}.hosts.{h}"), hc)?;
    }
    if let Some(t) = e.ready_timeout {
        positive(&format!("{at}.ready_timeout"), t.0)?;
    }
    positive(&format!("{at}.checks.timeout"), e.checks.timeout.0)?;
    if let Some(p) = &e.promotion {
        for r in &p.requires {
            name(&format!("{at}.promotion.requires"), r)?;
        }
    }
    transport(&format!("{at}.transport"), &e.transport)?;
    pool(&format!("{at}.pool"), &e.pool)
}

/// Checks every rule; the first broken one is the error.
pub fn validate(c: &Config) -> Result<(), ConfigError> {
    store(&c.store)?;
    let n = c.store_options.max_concurrent_requests;
    if !(1..=MAX_CONCURRENT_REQUESTS).contains(&n) {
        return Err(bad(
            "store_options.max_concurrent_requests",
            format!("{n} is out of range: 1 to {MAX_CONCURRENT_REQUESTS}"),
        ));
    }
    if c.lease_ttl.0 < MIN_LEASE_TTL {
        return Err(bad(
            "lease_ttl",
            format!(
                "{}s is too short: at least {}s (a deploy renews it every third of it)",
                c.lease_ttl.0.as_secs_f64(),
                MIN_LEASE_TTL.as_secs()
            ),
        ));
    }
    for (n, e) in &c.envs {
        env(n, e)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::Layers;
    use super::*;

    fn resolve(yaml: &str) -> Result<super::super::Resolved, ConfigError> {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("deploy.yaml");
        std::fs::write(&p, yaml).unwrap();
        Layers {
            files: vec![p],
            ..Default::default()
        }
        .resolve()
    }

    /// An env `e` with one host `h`, `host` spliced into the host's settings and `extra` into
    /// the env's.
    fn one(host: &str, extra: &str) -> String {
        format!(
            "envs:\n  e:\n    groups: [{{name: g, hosts: [h]}}]\n    hosts:\n      h: {{root: /srv/h{host}}}\n{extra}"
        )
    }

    #[test]
    fn a_good_inventory_passes() {
        resolve(&one(
            ", port: 7231, address: 10.0.0.5, ssh: deploy@restbase1001",
            "",
        ))
        .unwrap();
        resolve("store: s3://bucket/prefix\n").unwrap();
        resolve("store: file:///srv/store\n").unwrap();
        resolve("lease_ttl: 10s\n").unwrap();
        let r = resolve("store_options: {max_concurrent_requests: 1024}\n").unwrap();
        assert_eq!(r.config.store_options.max_concurrent_requests, 1024);
        let r = resolve("").unwrap();
        assert_eq!(r.config.store_options.max_concurrent_requests, 32);
        resolve(&one(
            "",
            "    transport: {type: ssh, presign_expiry: 302400s}\n",
        ))
        .unwrap();
    }

    /// Every hostile or out-of-range value, with a word its error must contain. None of them
    /// resolves: the binary exits 64 with the path and the rule.
    pub(crate) const HOSTILE: &[(&str, &str, &str)] = &[
        ("lease_ttl: 0s\n", "", "lease_ttl"),
        ("lease_ttl: 9s\n", "", "at least 10s"),
        (
            "store_options: {max_concurrent_requests: 0}\n",
            "",
            "max_concurrent_requests: 0 is out of range",
        ),
        (
            "store_options: {max_concurrent_requests: 5000}\n",
            "",
            "1 to 1024",
        ),
        ("store: S3://bucket\n", "", "s3://bucket"),
        ("store: gs://bucket\n", "", "scheme"),
        ("store: ''\n", "", "empty"),
        ("", ", port: 0", "not a port"),
        ("", ", address: '$(touch /tmp/x)'", "address"),
        ("", ", address: 'a;b'", "address"),
        ("", ", address: 'u@h'", "without a user"),
        ("", ", ssh: '-oProxyCommand=touch /tmp/x'", "ssh"),
        ("", ", ssh: 'h; id'", "ssh"),
        ("", ", env: {'A B': x}", "variable name"),
        ("", ", env: {'X;Y': x}", "variable name"),
    ];

    #[test]
    fn hostile_and_out_of_range_values_are_refused_with_their_rule() {
        for (top, host, want) in HOSTILE {
            let yaml = if top.is_empty() {
                one(host, "")
            } else {
                top.to_string()
            };
            let e = resolve(&yaml).map(|_| ()).unwrap_err().to_string();
            assert!(e.contains(want), "{yaml:?}: {e}");
        }
        for (extra, want) in [
            ("    ready_timeout: 0s\n", "ready_timeout"),
            ("    checks: {timeout: 0s}\n", "checks.timeout"),
            ("    service_env: ../prod\n", "service_env"),
            ("    promotion: {requires: ['a/b']}\n", "promotion.requires"),
            (
                "    pool: {driver: haproxy, socket: /run/h.sock, backend: 'b;shutdown'}\n",
                "backend",
            ),
            (
                "    transport: {type: ssh, options: ['-oProxyCommand=x']}\n",
                "options",
            ),
            (
                "    transport: {type: ssh, control_dir: tmp}\n",
                "control_dir",
            ),
            ("    transport: {type: ssh, user: 'a b'}\n", "user"),
            (
                "    transport: {type: ssh, presign_expiry: 302401s}\n",
                "presign_expiry: at most 302400s",
            ),
        ] {
            let e = resolve(&one("", extra))
                .map(|_| ())
                .unwrap_err()
                .to_string();
            assert!(e.contains(want), "{extra:?}: {e}");
        }
        // A relative root, an env, host or group name that is a path or shell text.
        for yaml in [
            "envs:\n  e:\n    groups: [{name: g, hosts: [h]}]\n    hosts: {h: {root: srv/h}}\n",
            "envs:\n  e:\n    groups: [{name: g, hosts: [h]}]\n    hosts: {h: {root: /srv/../h}}\n",
            "envs:\n  ../prod:\n    groups: [{name: g, hosts: [h]}]\n    hosts: {h: {root: /srv/h}}\n",
            "envs:\n  'a;b':\n    groups: [{name: g, hosts: [h]}]\n    hosts: {h: {root: /srv/h}}\n",
            "envs:\n  e:\n    groups: [{name: g, hosts: ['h;id']}]\n    hosts: {'h;id': {root: /srv/h}}\n",
            "envs:\n  e:\n    groups: [{name: 'g/x', hosts: [h]}]\n    hosts: {h: {root: /srv/h}}\n",
            "envs:\n  e:\n    groups: [{name: g, hosts: ['$(id)']}]\n    hosts: {'$(id)': {root: /srv/h}}\n",
        ] {
            assert!(resolve(yaml).is_err(), "{yaml}");
        }
    }
}
