//! The typed description of the multi-host test bed (`ci/testbed`, docs/testbed.md): what
//! `testbed up` writes to `<bed>/testbed.json` and what tests read back, with the small
//! clients a test needs to use its parts (ssh to a target, HAProxy's admin socket, Graphite's
//! plaintext port and render API, confctl over etcd).

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::require::Missing;

/// Version of the `testbed.json` layout.
pub const FORMAT: u32 = 2;

/// The whole bed, as `testbed up` started it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Bed {
    pub format: u32,
    /// The bed's state directory (`<state dir>/testbed`).
    pub dir: PathBuf,
    pub ssh: SshClient,
    /// The targets t1..tN, in order.
    pub hosts: Vec<Target>,
    pub haproxy: Haproxy,
    pub prometheus: Prometheus,
    pub graphite: Graphite,
    pub etcd: Etcd,
    pub conftool: Conftool,
    /// The S3 store; `None` when the bed was brought up without one (`TESTBED_S3=0`).
    pub s3: Option<S3>,
}

/// What an ssh client needs to reach the targets.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SshClient {
    /// `ssh -F <config> tN` works for every target.
    pub config: PathBuf,
    pub key: PathBuf,
    pub known_hosts: PathBuf,
    pub user: String,
}

/// One target host: its own sshd on loopback, deploy root and reserved service port.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Target {
    /// `t1`..`tN`: the ssh_config alias, HAProxy server name, Prometheus `host` label and
    /// conftool node name.
    pub name: String,
    pub address: String,
    pub ssh_port: u16,
    pub root: PathBuf,
    /// Where a service on this host should listen (HAProxy and Prometheus point at it).
    pub service_port: u16,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Haproxy {
    pub port: u16,
    pub url: String,
    /// The admin socket (`level admin`).
    pub socket: PathBuf,
    /// The backend whose servers are the targets, named like them.
    pub backend: String,
    pub config: PathBuf,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Prometheus {
    pub port: u16,
    pub url: String,
    /// The scrape job of the targets' service ports (each target labelled `host="tN"`).
    pub job: String,
}

/// Debian's carbon-cache and graphite-web on loopback.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Graphite {
    pub carbon_host: String,
    /// carbon's plaintext line receiver (`<path> <value> <unix time>\n`).
    pub carbon_port: u16,
    pub pickle_port: u16,
    /// carbon's cache query port (graphite-web reads not yet written points through it).
    pub cache_query_port: u16,
    pub web_port: u16,
    /// graphite-web's base URL: the Graphite URL a `metrics` check is given.
    pub url: String,
    /// `<url>/render`.
    pub render_url: String,
    pub whisper_dir: PathBuf,
    /// The finest retention, in seconds (one point per this many seconds).
    pub resolution_s: u32,
}

/// Debian's etcd-server on loopback, v2 API enabled (conftool's driver speaks v2).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Etcd {
    pub client_port: u16,
    pub peer_port: u16,
    /// `http://127.0.0.1:<client_port>`.
    pub url: String,
    pub data_dir: PathBuf,
}

/// Wikimedia's conftool (PyPI, pinned, in a venv) configured for the bed's etcd, with one
/// pool: a node per target under `<dc>/<cluster>/<service>`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Conftool {
    pub version: String,
    /// The `confctl` of the venv.
    pub confctl: PathBuf,
    /// `--config` (driver etcd, hosts, namespace, cache path, etcd config file).
    pub config: PathBuf,
    /// `--schema` (object types beyond the built-in `node`).
    pub schema: PathBuf,
    pub namespace: String,
    pub dc: String,
    pub cluster: String,
    pub service: String,
}

/// The S3-compatible store (`ci/s3-server`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct S3 {
    pub endpoint: String,
    pub bucket: String,
    pub access_key_id: String,
    pub secret_access_key: String,
    pub region: String,
    /// Every variable `ci/s3-server` exports (`AWS_*`, `TEST_S3_*`), for child processes.
    pub env: BTreeMap<String, String>,
}

/// The state directory of the `ci/` scripts: `$CI_STATE_DIR`, else
/// `${TMPDIR:-/tmp}/restbase-deploy-ci`.
pub fn state_root() -> PathBuf {
    if let Some(d) = std::env::var_os("CI_STATE_DIR").filter(|d| !d.is_empty()) {
        return PathBuf::from(d);
    }
    let tmp = std::env::var_os("TMPDIR")
        .filter(|d| !d.is_empty())
        .unwrap_or_else(|| "/tmp".into());
    PathBuf::from(tmp).join("restbase-deploy-ci")
}

/// Where the running bed is: `$TESTBED_DIR`, else `<state root>/testbed`.
pub fn bed_dir() -> PathBuf {
    std::env::var_os("TESTBED_DIR")
        .filter(|d| !d.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| state_root().join("testbed"))
}

impl Bed {
    /// Reads `<dir>/testbed.json`.
    pub fn load(dir: &Path) -> Result<Bed, String> {
        let file = dir.join("testbed.json");
        let bytes = std::fs::read(&file).map_err(|e| format!("{}: {e}", file.display()))?;
        let bed: Bed =
            serde_json::from_slice(&bytes).map_err(|e| format!("{}: {e}", file.display()))?;
        if bed.format != FORMAT {
            return Err(format!(
                "{}: format {} (this code reads {FORMAT}; run `ci/testbed down && ci/testbed up`)",
                file.display(),
                bed.format
            ));
        }
        Ok(bed)
    }

    /// The running bed ([`bed_dir`]), every component up, or what is missing.
    pub fn running() -> Result<Bed, Missing> {
        let dir = bed_dir();
        let bed = Bed::load(&dir).map_err(|e| {
            Missing::new(format!("the test bed is not up ({e}); run `ci/testbed up`"))
        })?;
        let report = crate::testbed::status(&dir)
            .map_err(|e| Missing::new(format!("the test bed is not up ({e})")))?;
        let down: Vec<&str> = report
            .iter()
            .filter(|c| !c.ok)
            .map(|c| c.line.as_str())
            .collect();
        if !down.is_empty() {
            return Err(Missing::new(format!(
                "part of the test bed is down ({}); run `ci/testbed up`",
                down.join("; ")
            )));
        }
        Ok(bed)
    }

    /// The S3 store, or why there is none.
    pub fn s3(&self) -> Result<&S3, Missing> {
        self.s3
            .as_ref()
            .ok_or_else(|| Missing::new("the test bed has no S3 store (TESTBED_S3=0?)"))
    }

    /// Target `name`; panics on a name the bed does not have.
    pub fn host(&self, name: &str) -> &Target {
        self.hosts
            .iter()
            .find(|h| h.name == name)
            .unwrap_or_else(|| panic!("the bed has no host {name}"))
    }

    /// `ssh -F <config> <host>`, ready for the remote command's arguments.
    pub fn ssh(&self, host: &str) -> Command {
        let mut c = Command::new("ssh");
        c.arg("-F").arg(&self.ssh.config).arg(host);
        c
    }

    /// Stops target `name`'s sshd (`ci/testbed stop-host`): ssh to it is refused while what
    /// runs on it keeps running.
    pub fn stop_host(&self, name: &str) -> Result<(), String> {
        crate::testbed::for_bed(&self.dir)
            .and_then(|c| c.stop_host(name))
            .map_err(|e| e.to_string())
    }

    /// Starts target `name`'s sshd again (`ci/testbed start-host`), same port and host key.
    pub fn start_host(&self, name: &str) -> Result<(), String> {
        crate::testbed::for_bed(&self.dir)
            .and_then(|c| c.start_host(name))
            .map_err(|e| e.to_string())
    }

    /// Sends one command to HAProxy's admin socket; returns the answer.
    pub fn haproxy_cmd(&self, cmd: &str) -> Result<String, String> {
        haproxy_cmd(&self.haproxy.socket, cmd)
    }

    /// The `export NAME=value` lines of `ci/testbed env` (values shell-quoted).
    pub fn env_lines(&self) -> Vec<String> {
        self.env()
            .into_iter()
            .map(|(k, v)| format!("export {k}={}", shell_word(&v)))
            .collect()
    }

    /// The bed's environment variables, in output order (docs/testbed.md lists them).
    pub fn env(&self) -> Vec<(String, String)> {
        let mut e: Vec<(String, String)> = Vec::new();
        let mut put = |k: &str, v: String| e.push((k.to_string(), v));
        let p = |p: &Path| p.display().to_string();
        put("TESTBED_DIR", p(&self.dir));
        put("TESTBED_JSON", p(&self.dir.join("testbed.json")));
        put("TESTBED_SSH_CONFIG", p(&self.ssh.config));
        put("TESTBED_SSH_KEY", p(&self.ssh.key));
        put("TESTBED_SSH_KNOWN_HOSTS", p(&self.ssh.known_hosts));
        put("TESTBED_SSH_USER", self.ssh.user.clone());
        let names: Vec<&str> = self.hosts.iter().map(|h| h.name.as_str()).collect();
        put("TESTBED_HOSTS", names.join(" "));
        for (i, h) in self.hosts.iter().enumerate() {
            let n = i + 1;
            put(
                &format!("TESTBED_HOST_{n}_SSH_PORT"),
                h.ssh_port.to_string(),
            );
            put(&format!("TESTBED_HOST_{n}_ROOT"), p(&h.root));
            put(
                &format!("TESTBED_HOST_{n}_SERVICE_PORT"),
                h.service_port.to_string(),
            );
        }
        put("TESTBED_HAPROXY_PORT", self.haproxy.port.to_string());
        put("TESTBED_HAPROXY_URL", self.haproxy.url.clone());
        put("TESTBED_HAPROXY_SOCKET", p(&self.haproxy.socket));
        put("TESTBED_HAPROXY_BACKEND", self.haproxy.backend.clone());
        put("TESTBED_PROMETHEUS_URL", self.prometheus.url.clone());
        put("TESTBED_PROMETHEUS_JOB", self.prometheus.job.clone());
        put("TESTBED_GRAPHITE_URL", self.graphite.url.clone());
        put(
            "TESTBED_GRAPHITE_RENDER_URL",
            self.graphite.render_url.clone(),
        );
        put("TESTBED_CARBON_HOST", self.graphite.carbon_host.clone());
        put("TESTBED_CARBON_PORT", self.graphite.carbon_port.to_string());
        put("TESTBED_ETCD_URL", self.etcd.url.clone());
        put("TESTBED_CONFCTL", p(&self.conftool.confctl));
        put("TESTBED_CONFTOOL_CONFIG", p(&self.conftool.config));
        put("TESTBED_CONFTOOL_SCHEMA", p(&self.conftool.schema));
        put(
            "TESTBED_CONFTOOL_POOL",
            format!(
                "dc={},cluster={},service={}",
                self.conftool.dc, self.conftool.cluster, self.conftool.service
            ),
        );
        if let Some(s3) = &self.s3 {
            for (k, v) in &s3.env {
                put(k, v.clone());
            }
        }
        e
    }
}

impl Graphite {
    /// Writes `(path, value, unix time)` points to carbon's plaintext port.
    pub fn send(&self, points: &[(&str, f64, u64)]) -> Result<(), String> {
        let mut s = std::net::TcpStream::connect((self.carbon_host.as_str(), self.carbon_port))
            .map_err(|e| format!("carbon {}:{}: {e}", self.carbon_host, self.carbon_port))?;
        let text: String = points
            .iter()
            .map(|(p, v, t)| format!("{p} {v} {t}\n"))
            .collect();
        s.write_all(text.as_bytes()).map_err(|e| e.to_string())
    }

    /// `GET <render_url>?target=<target>&from=<from>&format=json`: each series' name and its
    /// points `(value, unix time)`, `None` where Graphite has no value.
    pub fn render(&self, target: &str, from: &str) -> Result<Vec<RenderSeries>, String> {
        let mut r = ureq::get(&self.render_url)
            .query("target", target)
            .query("from", from)
            .query("format", "json")
            .call()
            .map_err(|e| format!("graphite render {target}: {e}"))?;
        r.body_mut()
            .read_json()
            .map_err(|e| format!("graphite render {target}: {e}"))
    }
}

/// One series of a render answer.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RenderSeries {
    pub target: String,
    pub datapoints: Vec<(Option<f64>, i64)>,
}

impl RenderSeries {
    /// The non-null values.
    pub fn values(&self) -> Vec<f64> {
        self.datapoints.iter().filter_map(|(v, _)| *v).collect()
    }
}

impl Conftool {
    /// `confctl --quiet --config .. --schema ..`, ready for `select <selector> <action>`.
    pub fn confctl(&self) -> Command {
        let mut c = Command::new(&self.confctl);
        c.arg("--quiet")
            .arg("--config")
            .arg(&self.config)
            .arg("--schema")
            .arg(&self.schema);
        c
    }

    /// The selector of one target's node in the bed's pool.
    pub fn selector(&self, host: &str) -> String {
        format!(
            "dc={},cluster={},service={},name={host}",
            self.dc, self.cluster, self.service
        )
    }

    /// The etcd (v2) key of one target's node.
    pub fn key(&self, host: &str) -> String {
        format!(
            "{}/v1/pools/{}/{}/{}/{host}",
            self.namespace, self.dc, self.cluster, self.service
        )
    }

    /// `confctl select <selector> set/pooled=<yes|no|inactive>`.
    pub fn set_pooled(&self, host: &str, pooled: &str) -> Result<(), String> {
        let out = self
            .confctl()
            .args([
                "select",
                &self.selector(host),
                &format!("set/pooled={pooled}"),
            ])
            .output()
            .map_err(|e| format!("{}: {e}", self.confctl.display()))?;
        if out.status.success() {
            Ok(())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).into_owned())
        }
    }

    /// `pooled` of one target's node, read back with `confctl select <selector> get`.
    pub fn pooled(&self, host: &str) -> Result<String, String> {
        let out = self
            .confctl()
            .args(["select", &self.selector(host), "get"])
            .output()
            .map_err(|e| format!("{}: {e}", self.confctl.display()))?;
        if !out.status.success() {
            return Err(String::from_utf8_lossy(&out.stderr).into_owned());
        }
        let text = String::from_utf8_lossy(&out.stdout);
        let v: serde_json::Value = text
            .lines()
            .find_map(|l| serde_json::from_str(l).ok())
            .ok_or_else(|| format!("confctl get printed no JSON: {text}"))?;
        v[host]["pooled"]
            .as_str()
            .map(str::to_string)
            .ok_or_else(|| format!("no pooled state for {host} in {v}"))
    }
}

/// One command on HAProxy's admin socket at `socket`; returns the answer.
pub fn haproxy_cmd(socket: &Path, cmd: &str) -> Result<String, String> {
    let mut s = std::os::unix::net::UnixStream::connect(socket)
        .map_err(|e| format!("haproxy admin socket {}: {e}", socket.display()))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))
        .map_err(|e| e.to_string())?;
    s.write_all(format!("{cmd}\n").as_bytes())
        .map_err(|e| e.to_string())?;
    let mut out = String::new();
    s.read_to_string(&mut out).map_err(|e| e.to_string())?;
    Ok(out)
}

/// `v` as one shell word: bare when safe, else single-quoted.
pub fn shell_word(v: &str) -> String {
    let safe = !v.is_empty()
        && v.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_./:@%+=,-".contains(&b));
    if safe {
        v.to_string()
    } else {
        format!("'{}'", v.replace('\'', "'\\''"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shell_words_quote_what_a_shell_would_split_or_expand() {
        assert_eq!(shell_word("/tmp/a-b_c"), "/tmp/a-b_c");
        assert_eq!(shell_word("t1 t2"), "'t1 t2'");
        assert_eq!(shell_word("it's"), "'it'\\''s'");
        assert_eq!(shell_word(""), "''");
    }

    #[test]
    fn conftool_keys_and_selectors_name_the_pool() {
        let c = Conftool {
            version: "6.1.0".into(),
            confctl: "/x/confctl".into(),
            config: "/x/config.yaml".into(),
            schema: "/x/schema.yaml".into(),
            namespace: "/conftool".into(),
            dc: "bed".into(),
            cluster: "fixture".into(),
            service: "fixture-service".into(),
        };
        assert_eq!(
            c.key("t2"),
            "/conftool/v1/pools/bed/fixture/fixture-service/t2"
        );
        assert_eq!(
            c.selector("t2"),
            "dc=bed,cluster=fixture,service=fixture-service,name=t2"
        );
    }
}
