//! The service's own deploy description, `deploy/service.yaml`, shipped inside the artifact.
//!
//! It says how to start and stop the service, its default port, where the port goes in the
//! rendered config, and which checks prove a started instance healthy. Because it travels
//! with the code, a change to it deploys (and rolls back) like code.
//!
//! ```yaml
//! name: fixture
//! port: 7231
//! start: node server.js -c {config}      # or a list; {config}, {port}, {release} substituted
//! stop: {signal: TERM, timeout: 10s}
//! ready_timeout: 30s
//! config:
//!   port_path: services.0.conf.port      # where the host's port goes in the rendered config
//! checks:
//!   - {type: http, path: /_info, status: 200}
//!   - {type: logs, level: error}
//! ```
//!
//! Unknown keys are ignored: the file is shared with the builder (build options).

use std::path::Path;

use serde::{Deserialize, Deserializer, Serialize};

use crate::checks::CheckSpec;
use crate::config::Dur;

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ServiceSpec {
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub port: Option<u16>,
    #[serde(default = "default_start", deserialize_with = "de_command")]
    pub start: Vec<String>,
    #[serde(default)]
    pub stop: StopSpec,
    /// Flat spellings of `stop.signal` / `stop.timeout`.
    #[serde(default, skip_serializing)]
    pub stop_signal: Option<String>,
    #[serde(default, skip_serializing)]
    pub stop_timeout: Option<Dur>,
    #[serde(default)]
    pub ready_timeout: Option<Dur>,
    #[serde(default)]
    pub config: ConfigSpec,
    #[serde(default)]
    pub checks: Vec<CheckSpec>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct StopSpec {
    #[serde(default = "default_signal")]
    pub signal: String,
    #[serde(default = "default_stop_timeout")]
    pub timeout: Dur,
}

impl Default for StopSpec {
    fn default() -> Self {
        StopSpec {
            signal: default_signal(),
            timeout: default_stop_timeout(),
        }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ConfigSpec {
    /// Dotted path of the port in the rendered config.
    #[serde(default = "default_port_path")]
    pub port_path: String,
    /// The env config file inside the release, `{env}` substituted.
    #[serde(default = "default_env_file")]
    pub env_file: String,
}

impl Default for ConfigSpec {
    fn default() -> Self {
        ConfigSpec {
            port_path: default_port_path(),
            env_file: default_env_file(),
        }
    }
}

fn default_start() -> Vec<String> {
    ["node", "server.js", "-c", "{config}"]
        .iter()
        .map(|s| s.to_string())
        .collect()
}
fn default_signal() -> String {
    "TERM".into()
}
fn default_stop_timeout() -> Dur {
    Dur(std::time::Duration::from_secs(10))
}
fn default_port_path() -> String {
    "services.0.conf.port".into()
}
fn default_env_file() -> String {
    "deploy/env/{env}.yaml".into()
}

fn de_command<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Cmd {
        Line(String),
        Argv(Vec<String>),
    }
    Ok(match Cmd::deserialize(d)? {
        Cmd::Line(s) => s.split_whitespace().map(str::to_string).collect(),
        Cmd::Argv(v) => v,
    })
}

#[derive(Debug, thiserror::Error)]
pub enum ServiceSpecError {
    #[error("reading {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} is invalid: {source}")]
    Parse {
        path: String,
        #[source]
        source: serde_yaml::Error,
    },
    #[error("{0}")]
    Invalid(String),
}

impl Default for ServiceSpec {
    fn default() -> Self {
        serde_yaml::from_str("{}").expect("defaults parse")
    }
}

impl ServiceSpec {
    /// Reads `deploy/service.yaml` from a release directory; defaults if the file is absent.
    pub fn load(release: &Path) -> Result<ServiceSpec, ServiceSpecError> {
        let path = release.join("deploy/service.yaml");
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(ServiceSpec::default()),
            Err(source) => {
                return Err(ServiceSpecError::Read {
                    path: path.display().to_string(),
                    source,
                });
            }
        };
        Self::parse(&text).map_err(|e| match e {
            ServiceSpecError::Parse { source, .. } => ServiceSpecError::Parse {
                path: path.display().to_string(),
                source,
            },
            other => other,
        })
    }

    pub fn parse(text: &str) -> Result<ServiceSpec, ServiceSpecError> {
        let mut spec: ServiceSpec =
            serde_yaml::from_str(text).map_err(|source| ServiceSpecError::Parse {
                path: "deploy/service.yaml".into(),
                source,
            })?;
        if let Some(s) = spec.stop_signal.take() {
            spec.stop.signal = s;
        }
        if let Some(t) = spec.stop_timeout.take() {
            spec.stop.timeout = t;
        }
        if spec.start.is_empty() {
            return Err(ServiceSpecError::Invalid(
                "deploy/service.yaml: empty start command".into(),
            ));
        }
        signal_number(&spec.stop.signal).ok_or_else(|| {
            ServiceSpecError::Invalid(format!(
                "deploy/service.yaml: unknown stop signal {:?}",
                spec.stop.signal
            ))
        })?;
        Ok(spec)
    }
}

/// Signal number for a name like `TERM`, `SIGINT`, `15`.
pub fn signal_number(name: &str) -> Option<i32> {
    let n = name.trim().trim_start_matches("SIG");
    Some(match n {
        "TERM" => 15,
        "INT" => 2,
        "HUP" => 1,
        "QUIT" => 3,
        "KILL" => 9,
        "USR1" => 10,
        "USR2" => 12,
        other => return other.parse().ok().filter(|n| (1..=64).contains(n)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_both_command_forms_and_defaults() {
        let s = ServiceSpec::parse("start: node server.js -c {config}\nbuild: {x: 1}\n").unwrap();
        assert_eq!(s.start, vec!["node", "server.js", "-c", "{config}"]);
        assert_eq!(s.stop.signal, "TERM");
        assert_eq!(s.config.port_path, "services.0.conf.port");
        let s = ServiceSpec::parse(
            "start: [node, a b.js]\nstop: {signal: SIGINT, timeout: 3s}\nchecks:\n  - {type: http, path: /healthz}\n",
        )
        .unwrap();
        assert_eq!(s.start, vec!["node", "a b.js"]);
        assert_eq!(s.stop.timeout.0, std::time::Duration::from_secs(3));
        assert_eq!(s.checks.len(), 1);
        assert!(ServiceSpec::parse("stop: {signal: NOPE}").is_err());
        let s = ServiceSpec::parse("stop_signal: INT\nstop_timeout: 4s\n").unwrap();
        assert_eq!(
            (s.stop.signal.as_str(), s.stop.timeout.0.as_secs()),
            ("INT", 4)
        );
    }
}

#[cfg(test)]
mod fixture_tests {
    use super::*;

    /// The fixture service's own file parses with the applier's reader.
    #[test]
    fn fixture_service_yaml_parses() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures/service");
        let s = ServiceSpec::load(&dir).unwrap();
        assert_eq!(s.port, Some(7231));
        assert_eq!(s.start[0], "node");
        assert!(s.checks.len() >= 3, "{:?}", s.checks);
    }
}
