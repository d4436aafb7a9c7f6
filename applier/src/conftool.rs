//! The `conftool` pool driver: Wikimedia's `confctl` over etcd, as the Wikimedia fleet
//! depools and repools.
//!
//! Depool: `confctl [--config C] [--schema S] --quiet select <selector>,name=<node>
//! set/pooled=no`, then the node is read back (`select ... get`) and the depool fails unless
//! it says `pooled: no`; repool the same with `yes`. The capacity guard reads every node's
//! state (`select <selector> get`, or one `get` per host without a selector): a node that is
//! not `pooled: yes` (`no`, or `inactive`) is out of the pool, whoever set it.
//!
//! `confctl` is run directly with its arguments as separate words, never through a shell, so
//! a host or node name can never become part of a command. Names are also checked to hold no
//! `,` or `=` (which would widen the selector) before they are used.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::host::Host;
use crate::pool::{Pool, PoolError};

#[derive(Debug, Clone)]
pub struct ConftoolPool {
    pub confctl: PathBuf,
    pub config: Option<PathBuf>,
    pub schema: Option<PathBuf>,
    /// Tags before `name=`, e.g. `dc=eqiad,cluster=restbase,service=restbase`.
    pub selector: Option<String>,
    pub nodes: BTreeMap<String, String>,
    pub timeout: Duration,
}

fn err(action: &'static str, host: &str, detail: impl Into<String>) -> PoolError {
    PoolError {
        action,
        host: host.to_string(),
        detail: detail.into(),
    }
}

impl ConftoolPool {
    /// The conftool node of an inventory host, refused when it could widen the selector.
    fn node<'a>(&'a self, host: &'a str) -> Result<&'a str, String> {
        let n = self.nodes.get(host).map(String::as_str).unwrap_or(host);
        if n.is_empty() || n.contains([',', '=', ' ', '\n']) {
            return Err(format!(
                "conftool node name {n:?} is not a plain name (no ',', '=' or spaces)"
            ));
        }
        Ok(n)
    }

    fn selector(&self, node: Option<&str>) -> String {
        let name = node.map(|n| format!("name={n}"));
        match (&self.selector, name) {
            (Some(s), Some(n)) => format!("{s},{n}"),
            (Some(s), None) => s.clone(),
            (None, Some(n)) => n,
            (None, None) => "name=.*".into(),
        }
    }

    /// Runs `confctl <globals> select <selector> <action>`; stdout on exit 0.
    pub fn confctl(&self, selector: &str, action: &str) -> Result<String, String> {
        let mut cmd = Command::new(&self.confctl);
        if let Some(c) = &self.config {
            cmd.arg("--config").arg(c);
        }
        if let Some(s) = &self.schema {
            cmd.arg("--schema").arg(s);
        }
        cmd.args(["--quiet", "select", selector, action])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let shown = format!("confctl select {selector} {action}");
        let mut child = cmd
            .spawn()
            .map_err(|e| format!("{shown}: cannot run {}: {e}", self.confctl.display()))?;
        let mut out = child.stdout.take().expect("piped");
        let mut errp = child.stderr.take().expect("piped");
        let reader = std::thread::spawn(move || {
            let mut s = String::new();
            let _ = out.read_to_string(&mut s);
            s
        });
        let ereader = std::thread::spawn(move || {
            let mut s = String::new();
            let _ = errp.read_to_string(&mut s);
            s
        });
        let t0 = Instant::now();
        let status = loop {
            match child.try_wait() {
                Ok(Some(st)) => break st,
                Ok(None) if t0.elapsed() >= self.timeout => {
                    let _ = child.kill();
                    let _ = child.wait();
                    return Err(format!("{shown}: timed out after {:?}", self.timeout));
                }
                Ok(None) => std::thread::sleep(Duration::from_millis(20)),
                Err(e) => return Err(format!("{shown}: {e}")),
            }
        };
        let stdout = reader.join().unwrap_or_default();
        let stderr = ereader.join().unwrap_or_default();
        if !status.success() {
            return Err(format!(
                "{shown} exited {}: {}",
                status.code().unwrap_or(-1),
                stderr.trim()
            ));
        }
        Ok(stdout)
    }

    /// The pooled value of every node in a `get` answer (one JSON object per line,
    /// `{"<node>": {"pooled": "yes", ...}, "tags": "..."}`).
    pub fn parse_get(text: &str) -> Result<BTreeMap<String, String>, String> {
        let mut out = BTreeMap::new();
        for line in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
            let v: Value = serde_json::from_str(line).map_err(|e| {
                format!("confctl get answered a line that is not JSON ({e}): {line}")
            })?;
            let obj = v
                .as_object()
                .ok_or_else(|| format!("unexpected confctl answer: {line}"))?;
            for (k, val) in obj {
                if k == "tags" {
                    continue;
                }
                let pooled = val
                    .get("pooled")
                    .and_then(Value::as_str)
                    .ok_or_else(|| format!("node {k} has no pooled value: {line}"))?;
                out.insert(k.clone(), pooled.to_string());
            }
        }
        Ok(out)
    }

    /// The pooled value of one node.
    pub fn pooled(&self, host: &str) -> Result<String, String> {
        let node = self.node(host)?;
        let text = self.confctl(&self.selector(Some(node)), "get")?;
        let all = Self::parse_get(&text)?;
        all.get(node).cloned().ok_or_else(|| {
            format!(
                "conftool knows no node {node} under {}",
                self.selector(None)
            )
        })
    }

    fn set(&self, action: &'static str, host: &str, value: &str) -> Result<(), PoolError> {
        let node = self.node(host).map_err(|e| err(action, host, e))?;
        self.confctl(&self.selector(Some(node)), &format!("set/pooled={value}"))
            .map_err(|e| err(action, host, e))?;
        let now = self.pooled(host).map_err(|e| err(action, host, e))?;
        if now != value {
            return Err(err(
                action,
                host,
                format!("set pooled={value}, but conftool reads back pooled={now}"),
            ));
        }
        Ok(())
    }
}

impl Pool for ConftoolPool {
    fn depool(&self, host: &dyn Host, _: Option<u16>) -> Result<(), PoolError> {
        self.set("depool", host.name(), "no")
    }

    fn repool(&self, host: &dyn Host, _: Option<u16>) -> Result<(), PoolError> {
        self.set("repool", host.name(), "yes")
    }

    fn out_of_pool(&self, hosts: &[String]) -> Result<Vec<String>, PoolError> {
        let state = |h: &str| -> Result<String, PoolError> {
            self.pooled(h).map_err(|e| err("pool state", h, e))
        };
        let all = match &self.selector {
            Some(s) => Some(
                self.confctl(s, "get")
                    .and_then(|t| Self::parse_get(&t))
                    .map_err(|e| err("pool state", s, e))?,
            ),
            None => None,
        };
        let mut out = Vec::new();
        for h in hosts {
            let pooled = match &all {
                Some(all) => {
                    let node = self.node(h).map_err(|e| err("pool state", h, e))?;
                    all.get(node).cloned().ok_or_else(|| {
                        err("pool state", h, format!("conftool knows no node {node}"))
                    })?
                }
                None => state(h)?,
            };
            if pooled != "yes" {
                out.push(h.clone());
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pool() -> ConftoolPool {
        ConftoolPool {
            confctl: "confctl".into(),
            config: None,
            schema: None,
            selector: Some("dc=bed,cluster=fixture,service=fixture-service".into()),
            nodes: [("x".to_string(), "a,name=b".to_string())].into(),
            timeout: Duration::from_secs(1),
        }
    }

    #[test]
    fn selectors_and_names() {
        let p = pool();
        assert_eq!(
            p.selector(Some("t1")),
            "dc=bed,cluster=fixture,service=fixture-service,name=t1"
        );
        assert!(p.node("x").is_err(), "a name that widens the selector");
        assert_eq!(p.node("t2").unwrap(), "t2");
    }

    #[test]
    fn get_answers_parse() {
        let text = "{\"t1\": {\"weight\": 1, \"pooled\": \"yes\"}, \"tags\": \"dc=bed\"}\n{\"t2\": {\"weight\": 1, \"pooled\": \"no\"}, \"tags\": \"dc=bed\"}\n";
        let m = ConftoolPool::parse_get(text).unwrap();
        assert_eq!(m["t1"], "yes");
        assert_eq!(m["t2"], "no");
        assert!(ConftoolPool::parse_get("not json").is_err());
        assert!(ConftoolPool::parse_get("{\"t1\": {\"weight\": 1}}").is_err());
    }
}
