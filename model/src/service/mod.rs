//! The service's own deploy description, `deploy/service.yaml`, shipped inside the artifact.
//!
//! It says how to start and stop the service, its default port, where the port goes in the
//! rendered config, which checks prove a started instance healthy, and how the builder
//! resolves its dependencies. Because it travels with the code, a change to it deploys (and
//! rolls back) like code. The builder parses it at build time, so a typo (`chekcs:`) fails the
//! build with the key and the file instead of being ignored on every host.
//!
//! ```yaml
//! name: fixture
//! port: 7231
//! start: node server.js -c {config}      # or a list; {config}, {port}, {release} substituted
//! stop: {signal: TERM, timeout: 10s}
//! ready:                                # port, then probes, then min_healthy; never a sleep
//!   timeout: 30s
//!   log: "listening on"
//!   http: {path: /healthz, status: 200}
//!   min_healthy: 2s
//! config:
//!   port_path: services.0.conf.port      # where the host's port goes in the rendered config
//!   ops_owned: [/services/0/conf/storage/path]   # keys the operators' values may replace
//! checks:
//!   - {type: http, path: /_info, status: 200}
//!   - {type: logs, level: error}
//! build:
//!   npm_args: [ci, --omit=dev]
//! ```

pub mod checks;
pub mod ready;

use std::path::Path;

use serde::{Deserialize, Deserializer, Serialize};

pub use checks::{
    CheckMode, CheckSpec, HttpCheck, InconclusivePolicy, JsonMatch, LogsCheck, MetricsCheck,
    MetricsSource,
};
pub use ready::{ReadyHttp, ReadySpec};

use crate::Dur;

/// Path of the service description inside the source tree (and so inside every release).
pub const SERVICE_YAML: &str = "deploy/service.yaml";

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
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
    /// When a started instance is ready: the port, then probes, then `min_healthy`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ready: Option<ReadySpec>,
    #[serde(default)]
    pub config: ConfigSpec,
    #[serde(default)]
    pub checks: Vec<CheckSpec>,
    #[serde(default)]
    pub build: BuildSpec,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
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

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigSpec {
    /// Dotted path of the port in the rendered config.
    #[serde(default = "default_port_path")]
    pub port_path: String,
    /// The env config file inside the release, `{env}` substituted.
    #[serde(default = "default_env_file")]
    pub env_file: String,
    /// Keys of the env config that the operators' values (the host's ops file, the
    /// inventory's `values`) may replace, with everything below them: JSON pointers
    /// (`/services/0/conf/storage/path`) or dotted paths. An operator value for any other key
    /// the env config sets is refused at render, so the service's code and schema config
    /// cannot be overridden from a host by accident.
    #[serde(default)]
    pub ops_owned: Vec<String>,
}

impl Default for ConfigSpec {
    fn default() -> Self {
        ConfigSpec {
            port_path: default_port_path(),
            env_file: default_env_file(),
            ops_owned: Vec::new(),
        }
    }
}

/// What the builder needs: how npm resolves `node_modules`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BuildSpec {
    /// Arguments for npm (`[ci, --omit=dev]`); a string is split on whitespace.
    #[serde(default, deserialize_with = "de_opt_command")]
    pub npm_args: Option<Vec<String>>,
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
    Dur::secs(10)
}
fn default_port_path() -> String {
    "services.0.conf.port".into()
}
fn default_env_file() -> String {
    "deploy/env/{env}.yaml".into()
}

#[derive(Deserialize)]
#[serde(untagged)]
enum Cmd {
    Line(String),
    Argv(Vec<String>),
}

impl Cmd {
    fn words(self) -> Vec<String> {
        match self {
            Cmd::Line(s) => s.split_whitespace().map(str::to_string).collect(),
            Cmd::Argv(v) => v,
        }
    }
}

fn de_command<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    Ok(Cmd::deserialize(d)?.words())
}

fn de_opt_command<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<String>>, D::Error> {
    Ok(Option::<Cmd>::deserialize(d)?.map(Cmd::words))
}

#[derive(Debug, thiserror::Error)]
pub enum ServiceSpecError {
    #[error("reading {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} is invalid: {message}")]
    Parse { path: String, message: String },
    #[error("{path}: {message}")]
    Invalid { path: String, message: String },
}

impl Default for ServiceSpec {
    fn default() -> Self {
        serde_norway::from_str("{}").expect("defaults parse")
    }
}

impl ServiceSpec {
    /// Reads `deploy/service.yaml` from a release directory; defaults if the file is absent.
    pub fn load(release: &Path) -> Result<ServiceSpec, ServiceSpecError> {
        let path = release.join(SERVICE_YAML);
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
        Self::parse_at(&text, &path.display().to_string())
    }

    /// Parses the text of `deploy/service.yaml`.
    pub fn parse(text: &str) -> Result<ServiceSpec, ServiceSpecError> {
        Self::parse_at(text, SERVICE_YAML)
    }

    /// Parses `text`, naming `path` in errors.
    pub fn parse_at(text: &str, path: &str) -> Result<ServiceSpec, ServiceSpecError> {
        let invalid = |message: String| ServiceSpecError::Invalid {
            path: path.to_string(),
            message,
        };
        // An empty file means "all defaults".
        let mut spec: ServiceSpec = if text.trim().is_empty() {
            ServiceSpec::default()
        } else {
            serde_norway::from_str(text).map_err(|e| ServiceSpecError::Parse {
                path: path.to_string(),
                message: e.to_string(),
            })?
        };
        if let Some(s) = spec.stop_signal.take() {
            spec.stop.signal = s;
        }
        if let Some(t) = spec.stop_timeout.take() {
            spec.stop.timeout = t;
        }
        if spec.start.is_empty() {
            return Err(invalid("empty start command".into()));
        }
        if let Some(n) = &spec.name
            && n.trim().is_empty()
        {
            return Err(invalid("`name` must be a non-empty string".into()));
        }
        signal_number(&spec.stop.signal)
            .ok_or_else(|| invalid(format!("unknown stop signal {:?}", spec.stop.signal)))?;
        if let Some(r) = &spec.ready
            && let Some(p) = r.problems().into_iter().next()
        {
            return Err(invalid(p));
        }
        for c in &spec.checks {
            if let Some(p) = c.problem() {
                return Err(invalid(p));
            }
        }
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
        let s = ServiceSpec::parse(
            "start: node server.js -c {config}\nbuild: {npm_args: ci --omit=dev}\n",
        )
        .unwrap();
        assert_eq!(s.start, vec!["node", "server.js", "-c", "{config}"]);
        assert_eq!(s.stop.signal, "TERM");
        assert_eq!(s.config.port_path, "services.0.conf.port");
        assert_eq!(
            s.build.npm_args,
            Some(vec!["ci".to_string(), "--omit=dev".to_string()])
        );
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
        assert_eq!(ServiceSpec::parse("").unwrap(), ServiceSpec::default());
    }

    #[test]
    fn unknown_keys_are_errors_with_the_key() {
        for (text, key) in [
            ("chekcs: []\n", "chekcs"),
            (
                "checks:\n  - {type: http, path: /, stauts: 200}\n",
                "stauts",
            ),
            ("build: {npm_arg: [ci]}\n", "npm_arg"),
            ("stop: {signl: TERM}\n", "signl"),
        ] {
            let e = ServiceSpec::parse(text).unwrap_err().to_string();
            assert!(e.contains(key) && e.contains(SERVICE_YAML), "{text}: {e}");
        }
        assert!(ServiceSpec::parse("build: {npm_args: [1]}\n").is_err());
        assert!(ServiceSpec::parse("- a\n").is_err());
        assert!(ServiceSpec::parse("name: ''\n").is_err());
    }

    #[test]
    fn ready_section_parses_and_refuses_unknown_keys() {
        let s = ServiceSpec::parse(
            "ready:\n  timeout: 20s\n  log: listening on\n  http: {path: /healthz}\n  command: ./check {port}\n  min_healthy: 2s\n",
        )
        .unwrap();
        let r = s.ready.unwrap();
        assert_eq!(r.timeout, Some(Dur::secs(20)));
        assert_eq!(r.http.as_ref().unwrap().status, 200);
        assert_eq!(
            r.command.as_deref(),
            Some(&["./check".to_string(), "{port}".to_string()][..])
        );
        assert_eq!(r.min_healthy, Some(Dur::secs(2)));
        assert!(
            r.describe().starts_with("port, GET /healthz 200"),
            "{}",
            r.describe()
        );
        for (text, what) in [
            ("ready: {sleep: 20s}\n", "sleep"),
            ("ready: {http: {path: healthz}}\n", "must start with /"),
            ("ready: {command: []}\n", "empty"),
        ] {
            let e = ServiceSpec::parse(text).unwrap_err().to_string();
            assert!(e.contains(what), "{text}: {e}");
        }
    }

    /// The fixture service's own file parses.
    #[test]
    fn fixture_service_yaml_parses() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures/service");
        let s = ServiceSpec::load(&dir).unwrap();
        assert_eq!(s.port, Some(7231));
        assert_eq!(s.start[0], "node");
        assert!(s.checks.len() >= 3, "{:?}", s.checks);
        assert!(s.build.npm_args.is_some());
        assert!(
            s.config
                .ops_owned
                .iter()
                .any(|p| p == "/services/0/conf/storage/path"),
            "{:?}",
            s.config
        );
    }
}
