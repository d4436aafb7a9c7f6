//! Pool control: taking a host out of the load balancer before touching it and back after it
//! passed its checks.
//!
//! Drivers: `none` (no load balancer) and `command` (shell commands such as
//! `confctl select name={host} set/pooled=no`, with optional confirmation and state commands).
//! `haproxy` (the runtime API on its admin socket) is in [`crate::haproxy`], `conftool`
//! (`confctl` over etcd) in [`crate::conftool`].

use std::time::Duration;

use crate::config::PoolConfig;
use crate::host::Host;
use crate::target::exec;

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
        let cmd = template
            .replace("{host}", name)
            .replace("{address}", address)
            .replace("{port}", &port.map(|p| p.to_string()).unwrap_or_default())
            .replace("{env}", &self.env);
        let out = exec(&cmd, self.timeout).map_err(|e| PoolError {
            action,
            host: name.to_string(),
            detail: e.to_string(),
        })?;
        Ok((out.status, format!("{cmd:?}: {}", out.stderr.trim())))
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
