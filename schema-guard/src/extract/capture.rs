//! Capture extractor: runs the revision's own code with `node` and a recording table module
//! substituted for every storage backend, in a sandbox that cannot reach storage.
//!
//! - The revision's files are in a directory (a git revision is written to a temp dir); a
//!   `node_modules` given by the caller is bind-mounted into it inside the sandbox's own mount
//!   namespace, so module paths (and service-runner's realpath-based base path) resolve to the
//!   revision's tree, not next to the modules.
//! - Backends: every `restbase-mod-table-*` module (RESTBase's `sys/table.js` loads
//!   `restbase-mod-table-${backend}`), the names in `capture.backend_modules`, and the
//!   fixture's `storage.backend` config key resolve to the embedded recorder
//!   (`recorder.js`, speaking the hyperswitch table-module interface and the fixture's). A
//!   storage driver (`sqlite3`, `cassandra-driver`, ...) being required stops the run at once:
//!   [`Error::CaptureUnsafe`]. A config whose backend cannot be named is refused before running.
//! - Sandbox: `unshare --net --mount` (a fresh network namespace: no interface is up, every
//!   connection fails), an empty environment but PATH/HOME/TMPDIR/LANG, a temp directory,
//!   `prlimit` memory and CPU limits, a wall-clock timeout, its own process group killed at the
//!   end. Without `unshare` the capture refuses to run.
//! - The service binding its port means every schema was applied (hyperswitch and the fixture
//!   bind only after): the hook records it and the process exits.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::{Layout, ServiceConfig, StaticOptions, Tree};
use crate::config::{CaptureConfig, RepoConfig};
use crate::manifest::{Location, StorageManifest};
use crate::{Error, Result};

const RECORDER_JS: &str = include_str!("recorder.js");
const HOOK_JS: &str = include_str!("require-hook.js");

/// Storage drivers that must never load in a capture run.
pub const FORBIDDEN_DRIVERS: &[&str] = &[
    "sqlite3",
    "better-sqlite3",
    "cassandra-driver",
    "pg",
    "mysql",
    "mysql2",
    "mongodb",
    "redis",
    "ioredis",
];

/// The port the service is told to bind inside the sandbox (nothing is reachable there).
const SANDBOX_PORT: u16 = 17231;

/// How to run a capture.
#[derive(Clone, Debug)]
pub struct CaptureOptions {
    /// The `node` binary.
    pub node: PathBuf,
    /// The revision's dependency layer (`node_modules`), used when the code directory has none.
    pub node_modules: Option<PathBuf>,
    /// Service config and env selection (as for the static extractor).
    pub config: StaticOptions,
    /// Overrides `.schema-guard.yaml`'s `capture` section when set.
    pub capture: Option<CaptureConfig>,
    /// Entry point relative to the code directory.
    pub entry: String,
    /// Copy the service's output (stdout and stderr) here.
    pub log_file: Option<PathBuf>,
}

impl Default for CaptureOptions {
    fn default() -> Self {
        CaptureOptions {
            node: PathBuf::from("node"),
            node_modules: None,
            config: StaticOptions::default(),
            capture: None,
            entry: "server.js".into(),
            log_file: None,
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

fn kill_group(child: &mut Child) {
    let _ = Command::new("kill")
        .args(["-KILL", "--", &format!("-{}", child.id())])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
    let _ = child.kill();
    let _ = child.wait();
}

fn log_tail(text: &str) -> String {
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
        .map(|l| {
            if l.len() > 400 {
                format!("{}...", &l[..l.floor_char_boundary(400)])
            } else {
                l.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// The sandbox wrapper: `unshare` with a network and a mount namespace (and a user namespace
/// when not root). `None` when it cannot create one here.
fn sandbox_prefix() -> Option<Vec<String>> {
    let root = Command::new("id")
        .arg("-u")
        .output()
        .ok()
        .is_some_and(|o| o.stdout.starts_with(b"0\n"));
    let mut args: Vec<String> = vec!["unshare".into()];
    if !root {
        args.extend(["--user".into(), "--map-root-user".into()]);
    }
    args.extend([
        "--net".into(),
        "--mount".into(),
        "--propagation".into(),
        "private".into(),
        "--".into(),
    ]);
    let ok = Command::new(&args[0])
        .args(&args[1..])
        .arg("true")
        .env_clear()
        .env("PATH", "/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    ok.then_some(args)
}

/// The capture config with the backend replaced and the sandbox's port, plus the module names
/// the hook must replace. Refuses when the backend cannot be named.
fn prepare_config(
    original: &Value,
    cfg: &ServiceConfig,
    cap: &CaptureConfig,
    recorder: &Path,
) -> Result<(Value, Vec<String>)> {
    let mut v = original.clone();
    let mut replace = cap.backend_modules.clone();
    match cfg.layout {
        Layout::Restbase => {
            let backend = cfg
                .storage
                .get("backend")
                .and_then(Value::as_str)
                .unwrap_or("cassandra");
            if cfg.storage.is_null() {
                return Err(Error::CaptureUnsafe(
                    "no table storage module (mounted at /{domain}/sys/table) found in the config, so it cannot be substituted".into(),
                ));
            }
            replace.push(format!("restbase-mod-table-{backend}"));
        }
        Layout::Fixture => {
            let current = super::get_path(original, &cap.backend_key)
                .and_then(Value::as_str)
                .map(str::to_string);
            if let Some(name) = current.filter(|n| !n.starts_with('.') && !n.starts_with('/')) {
                replace.push(name);
            }
            set_path(
                &mut v,
                &cap.backend_key,
                Value::String(recorder.to_string_lossy().into_owned()),
            );
            if let Some(conf) = v
                .pointer_mut("/services/0/conf")
                .and_then(Value::as_object_mut)
            {
                conf.remove("fixture");
            }
            set_path(&mut v, "services.0.conf.startup.exit_delay_ms", json!(100));
        }
    }
    set_path(&mut v, "num_workers", json!(0));
    set_path(&mut v, "services.0.conf.port", json!(SANDBOX_PORT));
    set_path(&mut v, "services.0.conf.host", json!("127.0.0.1"));
    replace.sort();
    replace.dedup();
    Ok((v, replace))
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
    let service = ServiceConfig::read(&original, Some(config_path.clone()), &tree);

    let work = tempfile::tempdir().map_err(|e| Error::io(std::env::temp_dir(), e))?;
    let (recorder, hook, record) = (
        work.path().join("recorder.js"),
        work.path().join("hook.js"),
        work.path().join("record.jsonl"),
    );
    let (home, tmp) = (work.path().join("home"), work.path().join("tmp"));
    for d in [&home, &tmp] {
        std::fs::create_dir(d).map_err(|e| Error::io(d, e))?;
    }
    for (p, body) in [(&recorder, RECORDER_JS), (&hook, HOOK_JS), (&record, "")] {
        std::fs::write(p, body).map_err(|e| Error::io(p, e))?;
    }
    let (cfg, replace) = prepare_config(&original, &service, &cap, &recorder)?;
    let cfg_file = work.path().join("config.yaml");
    // JSON is YAML: the service's YAML loader reads it as is.
    std::fs::write(
        &cfg_file,
        serde_json::to_vec_pretty(&cfg).expect("serialises"),
    )
    .map_err(|e| Error::io(&cfg_file, e))?;

    let prefix = sandbox_prefix().ok_or_else(|| {
        Error::CaptureUnsafe(
            "cannot create a network namespace here (`unshare --net --mount` failed or is missing)"
                .into(),
        )
    })?;
    let mount = match (&opts.node_modules, code_dir.join("node_modules").exists()) {
        (Some(nm), false) => {
            let nm = std::fs::canonicalize(nm).map_err(|e| Error::io(nm, e))?;
            let dst = code_dir.join("node_modules");
            std::fs::create_dir(&dst).map_err(|e| Error::io(&dst, e))?;
            Some((nm, dst))
        }
        _ => None,
    };
    let node = which(&opts.node)
        .ok_or_else(|| Error::Capture(format!("node not found: {}", opts.node.display())))?;
    let mut cmd = Command::new(&prefix[0]);
    cmd.args(&prefix[1..]).arg("/bin/sh").arg("-c");
    // Values reach the script as arguments, never spliced into it.
    cmd.arg(r#"set -e; if [ -n "$1" ]; then mount --bind "$1" "$2"; fi; shift 2; exec "$@""#)
        .arg("sh");
    match &mount {
        Some((src, dst)) => cmd.arg(src).arg(dst),
        None => cmd.arg("").arg(""),
    };
    let mem = cap.memory_mb.max(64);
    cmd.arg("prlimit")
        .arg(format!("--data={}", mem * 1024 * 1024))
        .arg(format!("--cpu={}", cap.timeout_secs.max(1) * 2))
        .arg("--")
        .arg(&node)
        .arg(format!("--max-old-space-size={}", mem / 2))
        .arg("--require")
        .arg(&hook)
        .arg(&opts.entry)
        .arg("-c")
        .arg(&cfg_file);
    let path_env = format!(
        "{}:/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin",
        node.parent()
            .map(|p| p.display().to_string())
            .unwrap_or_default()
    );
    cmd.current_dir(code_dir)
        .env_clear()
        .env("PATH", path_env)
        .env("HOME", &home)
        .env("TMPDIR", &tmp)
        .env("LANG", "C.UTF-8")
        .env("SCHEMA_GUARD_RECORD", &record)
        .env("SCHEMA_GUARD_RECORDER", &recorder)
        .env("SCHEMA_GUARD_PORT", SANDBOX_PORT.to_string())
        .env(
            "SCHEMA_GUARD_REPLACE",
            serde_json::to_string(&replace).expect("serialises"),
        )
        .env(
            "SCHEMA_GUARD_FORBID",
            serde_json::to_string(FORBIDDEN_DRIVERS).expect("serialises"),
        )
        .stdin(Stdio::null());
    std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
    let log = work.path().join("service.log");
    let log_file = std::fs::File::create(&log).map_err(|e| Error::io(&log, e))?;
    let log_err = log_file.try_clone().map_err(|e| Error::io(&log, e))?;
    cmd.stdout(Stdio::from(log_file))
        .stderr(Stdio::from(log_err));
    let mut child = cmd
        .spawn()
        .map_err(|e| Error::Capture(format!("cannot start the sandbox: {e}")))?;
    let deadline = Instant::now() + Duration::from_secs(cap.timeout_secs.max(1));
    let status = loop {
        match child.try_wait() {
            Ok(Some(s)) => break Some(s),
            Ok(None) if Instant::now() > deadline => break None,
            Ok(None) => std::thread::sleep(Duration::from_millis(25)),
            Err(e) => {
                kill_group(&mut child);
                return Err(Error::Capture(e.to_string()));
            }
        }
    };
    kill_group(&mut child);
    let log_text = std::fs::read_to_string(&log).unwrap_or_default();
    if let Some(dest) = &opts.log_file {
        std::fs::write(dest, &log_text).map_err(|e| Error::io(dest, e))?;
    }
    if let Some((_, dst)) = &mount {
        let _ = std::fs::remove_dir(dst);
    }
    let records: Vec<Value> = std::fs::read_to_string(&record)
        .map_err(|e| Error::io(&record, e))?
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            serde_json::from_str(l)
                .map_err(|e| Error::Capture(format!("bad record line {l:?}: {e}")))
        })
        .collect::<Result<_>>()?;
    if let Some(f) = records.iter().find(|r| r["kind"] == "forbidden") {
        return Err(Error::CaptureUnsafe(format!(
            "the revision loaded the storage driver {} (from {}): a backend was not substituted, so the run was stopped",
            f["module"].as_str().unwrap_or("?"),
            f["from"].as_str().unwrap_or("?")
        )));
    }
    if !records.iter().any(|r| r["kind"] == "listen") {
        return Err(Error::Capture(match status {
            None => format!(
                "the service did not bind its port within {} s:\n{}",
                cap.timeout_secs,
                log_tail(&log_text)
            ),
            Some(s) => format!(
                "the service exited ({s}) before binding its port:\n{}",
                log_tail(&log_text)
            ),
        }));
    }
    let mut m = manifest_from_records(&records, &service, &tree, &opts.config)?;
    let names = repo.backend_modules.clone().unwrap_or_else(|| {
        super::DEFAULT_BACKEND_MODULES
            .iter()
            .map(|s| s.to_string())
            .collect()
    });
    m.backend_modules = super::backend_module_versions(&tree, &names);
    m.finish();
    Ok(m)
}

fn which(node: &Path) -> Option<PathBuf> {
    if node.components().count() > 1 {
        return std::fs::canonicalize(node).ok();
    }
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|d| d.join(node))
        .find(|p| p.is_file())
}

fn manifest_from_records(
    records: &[Value],
    service: &ServiceConfig,
    tree: &dyn Tree,
    opts: &StaticOptions,
) -> Result<StorageManifest> {
    let mut m = StorageManifest::new("capture");
    service.apply(&mut m);
    // Declaring locations from a static read of the same files.
    let statics = super::static_manifest_tree(tree, opts).ok();
    let locations: BTreeMap<String, Location> = statics
        .iter()
        .flat_map(|s| s.tables.iter())
        .filter_map(|t| Some((t.table.clone(), t.location.clone()?)))
        .collect();
    let mut inits = 0;
    for rec in records {
        match rec["kind"].as_str() {
            Some("init") => {
                inits += 1;
                if !rec["storage_groups"].is_null() {
                    m.storage_groups =
                        super::storage_groups(&json!({"storage_groups": rec["storage_groups"]}));
                }
                if let Some(v) = rec["options"].get("version").and_then(Value::as_i64) {
                    m.storage_version = Some(v);
                }
            }
            Some("table") => {
                let domain = rec["domain"].as_str().unwrap_or_default();
                let name = rec["table"].as_str().unwrap_or_default();
                m.add_table(domain, &rec["schema"], locations.get(name).cloned());
                if let Some(t) = m.tables.last_mut() {
                    t.storage_group = rec["group"].as_str().map(str::to_string);
                }
            }
            _ => {}
        }
    }
    if inits == 0 && service.layout == Layout::Restbase {
        return Err(Error::CaptureUnsafe(
            "the table module was never loaded through the recorder".into(),
        ));
    }
    Ok(m)
}

/// Captures the storage manifest of a git revision: its tree is written to a temporary
/// directory and [`capture`] runs there with [`CaptureOptions::node_modules`] (required).
pub fn capture_rev(repo_path: &Path, rev: &str, opts: &CaptureOptions) -> Result<StorageManifest> {
    let repo = git2::Repository::discover(repo_path)?;
    let tree = super::GitTree::open(&repo, rev)?;
    if opts.node_modules.is_none() {
        return Err(Error::Capture(
            "capture of a git revision needs its node_modules (--node-modules)".into(),
        ));
    }
    let dir = tempfile::tempdir().map_err(|e| Error::io(std::env::temp_dir(), e))?;
    super::materialise(&tree, dir.path())?;
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
