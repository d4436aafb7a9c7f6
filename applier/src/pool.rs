//! Pool control: taking a host out of the load balancer before touching it and back after it
//! passed its checks.
//!
//! Drivers: `none` (no load balancer) and `command` (shell commands such as
//! `confctl select name={host} set/pooled=no`, with optional confirmation and state commands).
//! A command's `{host}`, `{address}`, `{port}` and `{env}` become shell-quoted words, and the
//! same values are in its environment as `APPLIER_HOST`, `APPLIER_ADDRESS`, `APPLIER_PORT` and
//! `APPLIER_ENV` (the operator's own environment otherwise: pool commands run on the deploy
//! host as the operator).
//! `haproxy` (the runtime API on its admin socket) is in [`crate::haproxy`], `conftool`
//! (`confctl` over etcd) in [`crate::conftool`].

use std::time::Duration;

use crate::config::PoolConfig;
use crate::host::Host;
use crate::shell::fill;
use crate::target::{CommandEnv, exec};

#[derive(Debug, thiserror::Error)]
#[error("pool {action} of {host}: {detail}")]
pub struct PoolError {
    pub action: &'static str,
    pub host: String,
    pub detail: String,
}

/// A load balancer the applier can take hosts out of.
pub trait Pool: Send + Sync + std::fmt::Debug {
    /// Takes the host out of the pool and confirms it is out.
    fn depool(&self, host: &dyn Host, port: Option<u16>) -> Result<(), PoolError>;
    /// Puts the host back.
    fn repool(&self, host: &dyn Host, port: Option<u16>) -> Result<(), PoolError>;
    /// Which of `hosts` the load balancer has out of the pool now, whoever took them out
    /// (drivers that cannot tell report none).
    fn out_of_pool(&self, hosts: &[String]) -> Result<Vec<String>, PoolError> {
        let _ = hosts;
        Ok(Vec::new())
    }
}

/// No load balancer.
#[derive(Debug)]
pub struct NoPool;

impl Pool for NoPool {
    fn depool(&self, _: &dyn Host, _: Option<u16>) -> Result<(), PoolError> {
        Ok(())
    }
    fn repool(&self, _: &dyn Host, _: Option<u16>) -> Result<(), PoolError> {
        Ok(())
    }
}

/// Shell commands run on the deploy host.
#[derive(Debug)]
pub struct CommandPool {
    pub env: String,
    pub depool: String,
    pub repool: String,
    pub confirm_depooled: Option<String>,
    pub is_depooled: Option<String>,
    pub timeout: Duration,
}

impl CommandPool {
    /// Runs `template` for a host; returns its exit status.
    fn status(
        &self,
        action: &'static str,
        template: &str,
        (name, address): (&str, &str),
        port: Option<u16>,
    ) -> Result<(i32, String), PoolError> {
        let filled = fill(
            template,
            &[
                ("host", name.to_string()),
                ("address", address.to_string()),
                ("port", port.map(|p| p.to_string()).unwrap_or_default()),
                ("env", self.env.clone()),
            ],
        );
        let out =
            exec(&filled.cmd, self.timeout, CommandEnv::Inherit(&filled.env)).map_err(|e| {
                PoolError {
                    action,
                    host: name.to_string(),
                    detail: e.to_string(),
                }
            })?;
        Ok((
            out.status,
            format!("{:?}: {}", filled.cmd, out.stderr.trim()),
        ))
    }

    fn run(
        &self,
        action: &'static str,
        template: &str,
        host: &dyn Host,
        port: Option<u16>,
    ) -> Result<(), PoolError> {
        let (status, detail) =
            self.status(action, template, (host.name(), host.address()), port)?;
        if status != 0 {
            return Err(PoolError {
                action,
                host: host.name().to_string(),
                detail: format!("exited {status}: {detail}"),
            });
        }
        Ok(())
    }
}

impl Pool for CommandPool {
    fn depool(&self, host: &dyn Host, port: Option<u16>) -> Result<(), PoolError> {
        self.run("depool", &self.depool, host, port)?;
        if let Some(c) = &self.confirm_depooled {
            self.run("depool confirmation", c, host, port)?;
        }
        Ok(())
    }
    fn repool(&self, host: &dyn Host, port: Option<u16>) -> Result<(), PoolError> {
        self.run("repool", &self.repool, host, port)
    }
    /// With `is_depooled` configured: every host whose command exits 0 (`{host}` and `{env}`
    /// are substituted; `{address}` is the host name here). Without it: none.
    fn out_of_pool(&self, hosts: &[String]) -> Result<Vec<String>, PoolError> {
        let Some(template) = &self.is_depooled else {
            return Ok(Vec::new());
        };
        let mut out = Vec::new();
        for h in hosts {
            if self.status("pool state", template, (h, h), None)?.0 == 0 {
                out.push(h.clone());
            }
        }
        Ok(out)
    }
}

/// The pool driver an environment is configured with.
pub fn from_config(env: &str, cfg: &PoolConfig) -> Box<dyn Pool> {
    match cfg {
        PoolConfig::None => Box::new(NoPool),
        PoolConfig::Command {
            depool,
            repool,
            confirm_depooled,
            is_depooled,
            timeout,
        } => Box::new(CommandPool {
            env: env.to_string(),
            depool: depool.clone(),
            repool: repool.clone(),
            confirm_depooled: confirm_depooled.clone(),
            is_depooled: is_depooled.clone(),
            timeout: timeout.0,
        }),
        PoolConfig::Conftool {
            confctl,
            config,
            schema,
            selector,
            nodes,
            timeout,
        } => Box::new(crate::conftool::ConftoolPool {
            confctl: confctl.clone(),
            config: config.clone(),
            schema: schema.clone(),
            selector: selector.clone(),
            nodes: nodes.clone(),
            timeout: timeout.0,
        }),
        PoolConfig::Haproxy {
            socket,
            via_ssh,
            ssh_config,
            backend,
            servers,
            drain_timeout,
            timeout,
        } => Box::new(crate::haproxy::HaproxyPool {
            socket: socket.clone(),
            via_ssh: via_ssh.as_ref().map(|d| crate::haproxy::SshHop {
                destination: d.clone(),
                config_file: ssh_config.clone(),
            }),
            backend: backend.clone(),
            servers: servers.clone(),
            drain_timeout: drain_timeout.0,
            timeout: timeout.0,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host::memory::MemoryHost;

    /// Host names and addresses a config could never hold reach the pool command as quoted
    /// words and as `$APPLIER_*`: each command runs once, as written, and runs nothing else.
    #[test]
    fn hostile_names_in_pool_commands_run_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let marker = dir.path().join("MARKER");
        let log = dir.path().join("log");
        let m = marker.display().to_string();
        let hostile = [
            format!("a;touch {m}"),
            format!("$(touch {m})"),
            format!("`touch {m}`"),
            format!("a\ntouch {m}"),
            format!("a' ; touch {m}; echo '"),
            format!("a\" ; touch {m}; echo \""),
            format!("-rf || touch {m}"),
            format!("a&&touch {m}"),
            format!("a|touch {m}"),
            format!("$IFS;touch${{IFS}}{m}"),
        ];
        let l = log.display();
        let pool = CommandPool {
            env: "staging".into(),
            depool: format!("printf '%s|%s\\n' {{host}} \"$APPLIER_ADDRESS\" >> {l}"),
            repool: format!("printf '%s|%s\\n' {{address}} \"$APPLIER_HOST\" >> {l}"),
            confirm_depooled: None,
            is_depooled: Some(format!("test {{host}} = {{env}} && touch {m}; exit 1")),
            timeout: Duration::from_secs(5),
        };
        for h in &hostile {
            let cfg: crate::config::HostConfig =
                serde_json::from_value(serde_json::json!({"root": "/x", "address": h})).unwrap();
            let host = MemoryHost::new(h, &cfg);
            pool.depool(&host, Some(1)).unwrap();
            pool.repool(&host, Some(1)).unwrap();
            assert!(
                pool.out_of_pool(std::slice::from_ref(h))
                    .unwrap()
                    .is_empty()
            );
        }
        assert!(!marker.exists(), "a hostile name ran a command");
        let text = std::fs::read_to_string(&log).unwrap();
        let mut want = String::new();
        for h in &hostile {
            want.push_str(&format!("{h}|{h}\n{h}|{h}\n"));
        }
        assert_eq!(text, want, "each value reached the command whole, as data");
    }
}
