//! The environment of what a target starts: the service and the commands run for its checks.
//!
//! Nothing of the process that starts them is passed on (not the deployer's store credentials,
//! not a signing key, not `SSH_AUTH_SOCK`): they get a fixed minimal base, then the variables
//! the request names (the inventory's `env` for a service, the `APPLIER_*` values for a
//! command), which may override the base.
//!
//! | variable | value |
//! |---|---|
//! | `PATH` | [`BASE_PATH`] |
//! | `HOME` | the host's root directory |
//! | `LANG` | `C.UTF-8` |

use std::collections::BTreeMap;
use std::path::Path;

/// `PATH` of the base environment (the inventory's `env` can set another).
pub const BASE_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// The environment of a service or command started under `root`: the base, then `extra`.
pub fn service_env(root: &Path, extra: &BTreeMap<String, String>) -> BTreeMap<String, String> {
    let mut env = BTreeMap::from([
        ("PATH".to_string(), BASE_PATH.to_string()),
        ("HOME".to_string(), root.display().to_string()),
        ("LANG".to_string(), "C.UTF-8".to_string()),
    ]);
    env.extend(extra.iter().map(|(k, v)| (k.clone(), v.clone())));
    env
}

/// How a command's environment is made.
#[derive(Clone, Copy, Debug)]
pub enum CommandEnv<'a> {
    /// Exactly these variables (a service's or a check command's, from [`service_env`]).
    Clean(&'a BTreeMap<String, String>),
    /// The starting process's own environment plus these (the operator's pool commands on the
    /// deploy host, which may need the operator's credentials).
    Inherit(&'a BTreeMap<String, String>),
}

impl CommandEnv<'_> {
    /// Applies the environment to `cmd`.
    pub fn apply(&self, cmd: &mut std::process::Command) {
        match self {
            CommandEnv::Clean(vars) => {
                cmd.env_clear().envs(vars.iter());
            }
            CommandEnv::Inherit(vars) => {
                cmd.envs(vars.iter());
            }
        }
    }
}
