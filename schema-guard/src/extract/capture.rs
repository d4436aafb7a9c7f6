//! Capture extractor: runs the revision's own code with `node` and a recording table backend.
//!
//! The service is started as `node server.js -c <tmp config>` in the directory holding the
//! revision's files. The temporary config is the chosen env config with:
//! - the table backend replaced by a recorder (`capture.backend_key`, default
//!   `services.0.conf.storage.backend`, is set to the recorder's path; module names listed in
//!   `capture.backend_modules` are also redirected to it by a `--require` hook, for services
//!   that load their backend by package name),
//! - `services[0].conf.port` set to a free loopback port, `host` 127.0.0.1, `num_workers: 0`,
//!   `startup.exit_delay_ms` small, and the fixture failure switches (`fixture:`) removed.
//!
//! The recorder appends each `createTable(domain, schema)` and its options to a JSON-lines
//! file and accepts everything. The service binds its port only after every schema was
//! applied, so "port bound" means the record is complete; the process is then stopped with
//! SIGTERM. A process that exits first, or a timeout, is an error carrying the log tail.

use std::collections::BTreeMap;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::{ServiceConfig, StaticOptions, Tree};
use crate::config::{CaptureConfig, RepoConfig};
use crate::manifest::{Location, StorageGroup, StorageManifest};
use crate::{Error, Result};

const RECORDER_JS: &str = include_str!("recorder.js");
const HOOK_JS: &str = include_str!("require-hook.js");

/// How to run a capture.
#[derive(Clone, Debug)]
pub struct CaptureOptions {
    /// The `node` binary.
    pub node: PathBuf,
    /// A `node_modules` directory to use when the code directory has none (e.g. from a built
    /// artifact's dependency layer).
    pub node_modules: Option<PathBuf>,
    /// Service config and env selection (as for the static extractor).
    pub config: StaticOptions,
    /// Overrides `.schema-guard.yaml`'s `capture` section when set.
    pub capture: Option<CaptureConfig>,
    /// Entry point relative to the code directory.
    pub entry: String,
    /// Environment variables removed from the service's environment (default: the fixture
    /// service's failure switches).
    pub unset_env: Vec<String>,
}

/// The fixture service's failure-switch variables, unset for capture runs.
pub const FIXTURE_SWITCHES: &[&str] = &[
    "FIXTURE_CRASH_AT_START",
    "FIXTURE_SERVE_5XX",
    "FIXTURE_STORAGE_ERRORS",
    "FIXTURE_STORAGE_ERROR_INTERVAL_MS",
    "FIXTURE_START_DELAY_MS",
    "FIXTURE_NEVER_BIND",
];

impl Default for CaptureOptions {
    fn default() -> Self {
        CaptureOptions {
            node: PathBuf::from("node"),
            node_modules: None,
            config: StaticOptions::default(),
            capture: None,
            entry: "server.js".into(),
            unset_env: FIXTURE_SWITCHES.iter().map(|s| s.to_string()).collect(),
        }
    }
}

fn set_path(v: &mut Value, dotted: &str, new: Value) {
    let parts: Vec<&str> = dotted.split('.').collect();
    let mut cur = v;
    for (i, part) in parts.iter().enumerate() {
        let last = i + 1 == parts.len();
        let next = match part.parse::<usize>() {
            Ok(idx) => match cur.get_mut(idx) {
                Some(x) => x,
                None => return,
            },
            Err(_) => {
                if !cur.is_object() {
                    *cur = json!({});
                }
                let obj = cur.as_object_mut().expect("object");
                if last {
                    obj.insert(part.to_string(), new);
                    return;
                }
                obj.entry(part.to_string()).or_insert_with(|| json!({}))
            }
        };
        if last {
            *next = new;
            return;
        }
        cur = next;
    }
}

fn free_port() -> Result<u16> {
    let l = TcpListener::bind("127.0.0.1:0")
        .map_err(|e| Error::Capture(format!("no free port: {e}")))?;
    Ok(l.local_addr()
        .map_err(|e| Error::Capture(e.to_string()))?
        .port())
}

fn terminate(child: &mut Child) {
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
    let until = Instant::now() + Duration::from_secs(5);
    while Instant::now() < until {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
}

fn log_tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    let interesting: Vec<&str> = lines
        .iter()
        .copied()
        .filter(|l| l.contains("\"level\":60") || l.contains("\"level\":50") || l.contains("Error"))
        .collect();
    let pick = if interesting.is_empty() {
        &lines[lines.len().saturating_sub(10)..]
    } else {
        &interesting[..]
    };
    pick.iter()
        .rev()
        .take(10)
        .rev()
        .copied()
        .collect::<Vec<_>>()
        .join("\n")
}

/// Captures the storage manifest of the code in `code_dir` (the revision's files; its
/// `node_modules` or [`CaptureOptions::node_modules`]).
pub fn capture(code_dir: &Path, opts: &CaptureOptions) -> Result<StorageManifest> {
    let tree = super::DirTree::open(code_dir)?;
    let repo = RepoConfig::from_tree(&tree)?;
    let cap = opts.capture.clone().unwrap_or_else(|| repo.capture.clone());
    let config_path = super::config_path(&tree, &opts.config, &repo)?.ok_or_else(|| {
        Error::Config("no service config found (deploy/env/<env>.yaml or config.yaml)".into())
    })?;
    let text = tree.read_text(&config_path).unwrap_or_default();
    let original = super::yaml_to_json(&text, &config_path)?;

    let work = tempfile::tempdir().map_err(|e| Error::io(std::env::temp_dir(), e))?;
    let recorder = work.path().join("schema-guard-recorder.js");
    let hook = work.path().join("schema-guard-require-hook.js");
    let record = work.path().join("record.jsonl");
    let log = work.path().join("service.log");
    for (p, body) in [(&recorder, RECORDER_JS), (&hook, HOOK_JS)] {
        std::fs::write(p, body).map_err(|e| Error::io(p, e))?;
    }
    std::fs::write(&record, b"").map_err(|e| Error::io(&record, e))?;

    let port = free_port()?;
    let mut cfg = original.clone();
    set_path(
        &mut cfg,
        &cap.backend_key,
        Value::String(recorder.to_string_lossy().into_owned()),
    );
    set_path(&mut cfg, "num_workers", json!(0));
    set_path(&mut cfg, "services.0.conf.port", json!(port));
    set_path(&mut cfg, "services.0.conf.host", json!("127.0.0.1"));
    set_path(
        &mut cfg,
        "services.0.conf.startup.exit_delay_ms",
        json!(100),
    );
    if let Some(conf) = cfg
        .pointer_mut("/services/0/conf")
        .and_then(Value::as_object_mut)
    {
        conf.remove("fixture");
    }
    let cfg_file = work.path().join("config.yaml");
    // JSON is YAML: the service's YAML loader reads it as is.
    std::fs::write(
        &cfg_file,
        serde_json::to_vec_pretty(&cfg).expect("serialises"),
    )
    .map_err(|e| Error::io(&cfg_file, e))?;

    let log_file = std::fs::File::create(&log).map_err(|e| Error::io(&log, e))?;
    let log_err = log_file.try_clone().map_err(|e| Error::io(&log, e))?;
    let mut cmd = Command::new(&opts.node);
    if !cap.backend_modules.is_empty() {
        cmd.arg("--require").arg(&hook);
    }
    cmd.arg(&opts.entry)
        .arg("-c")
        .arg(&cfg_file)
        .current_dir(code_dir)
        .env("SCHEMA_GUARD_RECORD", &record)
        .env("SCHEMA_GUARD_RECORDER", &recorder)
        .env(
            "SCHEMA_GUARD_REPLACE",
            serde_json::to_string(&cap.backend_modules).expect("serialises"),
        )
        .stdin(Stdio::null())
        .stdout(Stdio::from(log_file))
        .stderr(Stdio::from(log_err));
    for k in &opts.unset_env {
        cmd.env_remove(k);
    }
    if let Some(nm) = &opts.node_modules
        && !code_dir.join("node_modules").exists()
    {
        cmd.env("NODE_PATH", nm);
    }
    let mut child = cmd
        .spawn()
        .map_err(|e| Error::Capture(format!("cannot run {}: {e}", opts.node.display())))?;
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    let deadline = Instant::now() + Duration::from_secs(cap.timeout_secs.max(1));
    let outcome = loop {
        if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
            break Ok(());
        }
        match child.try_wait() {
            Ok(Some(status)) => {
                break Err(Error::Capture(format!(
                    "the service exited ({status}) before binding its port:\n{}",
                    log_tail(&log)
                )));
            }
            Ok(None) => {}
            Err(e) => break Err(Error::Capture(e.to_string())),
        }
        if Instant::now() > deadline {
            break Err(Error::Capture(format!(
                "the service did not bind its port within {} s:\n{}",
                cap.timeout_secs,
                log_tail(&log)
            )));
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    terminate(&mut child);
    outcome?;

    let records = std::fs::read_to_string(&record).map_err(|e| Error::io(&record, e))?;
    let service = ServiceConfig::from_value(&original, Some(config_path.clone()));
    let mut m = StorageManifest::new("capture");
    service.apply(&mut m);
    // Declaring locations from a static read of the same files.
    let statics = super::static_manifest_tree(&tree, &opts.config).ok();
    let locations: BTreeMap<String, Location> = statics
        .iter()
        .flat_map(|s| s.tables.iter())
        .filter_map(|t| Some((t.table.clone(), t.location.clone()?)))
        .collect();
    for line in records.lines().filter(|l| !l.trim().is_empty()) {
        let rec: Value = serde_json::from_str(line)
            .map_err(|e| Error::Capture(format!("bad record line {line:?}: {e}")))?;
        match rec.get("kind").and_then(Value::as_str) {
            Some("init") => {
                let o = &rec["options"];
                if let Some(groups) = o.get("storage_groups").and_then(Value::as_array) {
                    m.storage_groups = Some(
                        groups
                            .iter()
                            .map(|g| StorageGroup {
                                name: g["name"].as_str().unwrap_or_default().to_string(),
                                domains: g["domains"]
                                    .as_array()
                                    .map(|a| {
                                        a.iter()
                                            .filter_map(Value::as_str)
                                            .map(str::to_string)
                                            .collect()
                                    })
                                    .unwrap_or_default(),
                            })
                            .collect(),
                    );
                }
                if let Some(v) = o.get("version").and_then(Value::as_i64) {
                    m.storage_version = Some(v);
                }
            }
            Some("table") => {
                let domain = rec["domain"].as_str().unwrap_or_default();
                let schema = &rec["schema"];
                let name = schema["table"]
                    .as_str()
                    .or(rec["name"].as_str())
                    .unwrap_or_default();
                m.add_table(domain, schema, locations.get(name).cloned());
            }
            _ => {}
        }
    }
    let names: Vec<String> = repo.backend_modules.clone().unwrap_or_else(|| {
        super::DEFAULT_BACKEND_MODULES
            .iter()
            .map(|s| s.to_string())
            .collect()
    });
    m.backend_modules = super::backend_module_versions(&tree, &names);
    m.finish();
    Ok(m)
}

/// Captures the storage manifest of a git revision: its tree is written to a temporary
/// directory, `node_modules` (required) is linked in, and [`capture`] runs there.
pub fn capture_rev(repo_path: &Path, rev: &str, opts: &CaptureOptions) -> Result<StorageManifest> {
    let repo = git2::Repository::discover(repo_path)?;
    let tree = super::GitTree::open(&repo, rev)?;
    let dir = tempfile::tempdir().map_err(|e| Error::io(std::env::temp_dir(), e))?;
    super::materialise(&tree, dir.path())?;
    let nm = opts.node_modules.as_ref().ok_or_else(|| {
        Error::Capture("capture needs a node_modules directory (--node-modules)".into())
    })?;
    let nm = std::fs::canonicalize(nm).map_err(|e| Error::io(nm, e))?;
    std::os::unix::fs::symlink(&nm, dir.path().join("node_modules"))
        .map_err(|e| Error::io(dir.path().join("node_modules"), e))?;
    let mut m = capture(dir.path(), opts)?;
    m.commit = Some(tree.commit.clone());
    Ok(m)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_path_creates_and_replaces() {
        let mut v = json!({"services": [{"conf": {"storage": {"backend": "x"}}}]});
        set_path(&mut v, "services.0.conf.storage.backend", json!("rec"));
        set_path(&mut v, "services.0.conf.startup.exit_delay_ms", json!(1));
        set_path(&mut v, "num_workers", json!(0));
        assert_eq!(
            v,
            json!({"num_workers": 0, "services": [{"conf": {"storage": {"backend": "rec"},
                "startup": {"exit_delay_ms": 1}}}]})
        );
    }
}
