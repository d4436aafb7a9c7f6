//! The ssh transport: every [`Host`] operation runs `applier host --root <root> <op>` on the
//! target through the system `ssh`, and reads its JSON answer from stdout.
//!
//! - The system `ssh` is used (so ssh_config, agent, known_hosts and jump hosts apply), with
//!   `BatchMode=yes` and `ConnectTimeout`. One shared connection per host: the first operation
//!   opens a master (`ControlMaster=yes`, `ControlPersist`) with its output detached, every
//!   operation then rides it (`ControlMaster=no`, so a dead master means a plain connection,
//!   never a second hidden master). The master is closed when the host is dropped.
//! - Preflight asks the target's `applier host version` first: a missing binary or another
//!   version is refused with an explanation, before anything changes.
//! - The remote command removes every `AWS_*` variable from its environment before it runs
//!   (and the local `ssh` gets none either): targets never hold store credentials.
//! - Fetch hands the target presigned GET URLs of the layers ([`Store::presign_get`], short
//!   expiry), sent with the manifest on stdin (`fetch-urls --request -`); the target verifies
//!   the manifest's digest and every layer as the local fetch does ([`UrlStore`]). A store
//!   without presigned URLs (a directory) is named by its path and opened by the target
//!   directly, which only works when that path is visible on the target.
//! - A connection that fails or drops mid-operation (ssh exit 255, no JSON answer) is a
//!   [`HostError::Transport`] for that host; what really happened on the host is in its
//!   `state.json` (`step` in progress).

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use artifact::manifest::Manifest;
use artifact::store::{ETag, GetResult, ObjectMeta, PutBody, PutOutcome, Store, StoreError};
use artifact::{Digest, keys};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::config::{HostConfig, SshConfig};
use crate::hostops::{
    ExecOutput, FetchReport, HostError, HostState, HostStatus, PreflightReport, PreflightRequest,
    PruneReport, ReadyReport, ReadyRequest, ReleaseRef, RenderReport, RenderRequest, RunInfo,
    StartRequest, StopReport, SwitchReport,
};
use crate::service::ServiceSpec;
use crate::transport::Host;

/// The answer of `applier host version`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct VersionReport {
    pub version: String,
}

/// `applier host fetch-urls --request -`: what a target needs to fetch without credentials.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct FetchUrlsRequest {
    pub digest: Digest,
    /// The manifest's bytes (the target checks they hash to `digest`).
    pub manifest: String,
    /// Store key of each layer blob -> presigned GET URL.
    #[serde(default)]
    pub urls: BTreeMap<String, String>,
    /// A directory store to read directly instead (stores without presigned URLs).
    #[serde(default)]
    pub store: Option<String>,
}

impl FetchUrlsRequest {
    /// The manifest, verified against the digest.
    pub fn verified_manifest(&self) -> Result<Manifest, HostError> {
        let got = Digest::of(self.manifest.as_bytes());
        if got != self.digest {
            return Err(HostError::Preflight(format!(
                "the manifest sent hashes to {got}, not {}",
                self.digest
            )));
        }
        Manifest::from_json(self.manifest.as_bytes())
            .map_err(|e| HostError::Preflight(format!("manifest {}: {e}", self.digest)))
    }
}

/// A read-only store of presigned URLs: `get` of a key is a plain HTTP GET of its URL.
#[derive(Debug)]
pub struct UrlStore {
    urls: BTreeMap<String, String>,
    agent: ureq::Agent,
}

impl UrlStore {
    pub fn new(urls: BTreeMap<String, String>) -> Self {
        let config = ureq::Agent::config_builder()
            .timeout_connect(Some(Duration::from_secs(10)))
            .timeout_recv_response(Some(Duration::from_secs(60)))
            .http_status_as_error(false)
            .build();
        UrlStore {
            urls,
            agent: ureq::Agent::new_with_config(config),
        }
    }

    fn read_only(&self, key: &str) -> StoreError {
        StoreError::Other {
            store: self.location(),
            detail: format!("{key}: presigned URLs are read-only"),
        }
    }
}

/// The URL without its query (which carries the signature), for messages.
fn redact(url: &str) -> &str {
    url.split('?').next().unwrap_or(url)
}

impl Store for UrlStore {
    fn location(&self) -> String {
        "presigned URLs".into()
    }
    fn put_if_absent(
        &self,
        key: &str,
        _: PutBody,
        _: Option<&Digest>,
    ) -> Result<PutOutcome, StoreError> {
        Err(self.read_only(key))
    }
    fn put_cas(&self, key: &str, _: &[u8], _: Option<&ETag>) -> Result<ETag, StoreError> {
        Err(self.read_only(key))
    }
    fn get(&self, key: &str) -> Result<GetResult, StoreError> {
        let url = self.urls.get(key).ok_or_else(|| StoreError::NotFound {
            store: self.location(),
            key: key.to_string(),
        })?;
        let resp = self
            .agent
            .get(url)
            .call()
            .map_err(|e| StoreError::Unavailable {
                store: redact(url).to_string(),
                detail: e.to_string(),
            })?;
        let status = resp.status().as_u16();
        if status != 200 {
            let mut body = String::new();
            let _ = resp
                .into_body()
                .into_reader()
                .take(512)
                .read_to_string(&mut body);
            let detail = format!("HTTP {status}: {}", body.trim());
            return Err(match status {
                403 => StoreError::Denied {
                    store: redact(url).to_string(),
                    detail: format!("presigned URL refused (expired?): {detail}"),
                },
                404 => StoreError::NotFound {
                    store: redact(url).to_string(),
                    key: key.to_string(),
                },
                _ => StoreError::Other {
                    store: redact(url).to_string(),
                    detail,
                },
            });
        }
        let size = resp
            .headers()
            .get("content-length")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        Ok(GetResult {
            meta: ObjectMeta {
                key: key.to_string(),
                size,
                etag: ETag(String::new()),
            },
            reader: Box::new(resp.into_body().into_reader()),
        })
    }
    fn head(&self, key: &str) -> Result<Option<ObjectMeta>, StoreError> {
        Err(self.read_only(key))
    }
    fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>, StoreError> {
        Err(self.read_only(prefix))
    }
    fn delete(&self, key: &str) -> Result<(), StoreError> {
        Err(self.read_only(key))
    }
    fn delete_if(&self, key: &str, _: &ETag) -> Result<(), StoreError> {
        Err(self.read_only(key))
    }
    fn presign_get(&self, _: &str, _: Duration) -> Result<Option<String>, StoreError> {
        Ok(None)
    }
}

/// Quotes a word for a POSIX shell.
pub fn shell_quote(s: &str) -> String {
    if !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_./:=@%+,".contains(&b))
    {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', "'\\''"))
    }
}

/// Removes every `AWS_*` variable, then runs its arguments.
const STRIP_AWS: &str = r#"for v in $(env | sed -n 's/^\(AWS_[A-Za-z0-9_]*\)=.*/\1/p'); do unset "$v"; done; exec "$@""#;

/// One target reached over ssh.
#[derive(Debug)]
pub struct SshHost {
    name: String,
    cfg: HostConfig,
    ssh: SshConfig,
    store: Arc<dyn Store>,
    control_dir: PathBuf,
    /// `None`: no master tried yet; `Some(Ok)`: open; `Some(Err)`: it could not be opened.
    master: Mutex<Option<Result<(), String>>>,
    version_checked: Mutex<bool>,
}

impl SshHost {
    pub fn new(name: &str, cfg: &HostConfig, ssh: &SshConfig, store: Arc<dyn Store>) -> Self {
        SshHost {
            name: name.to_string(),
            cfg: cfg.clone(),
            ssh: ssh.clone(),
            store,
            control_dir: ssh
                .control_dir
                .join(format!("applier-ssh-{}", std::process::id())),
            master: Mutex::new(None),
            version_checked: Mutex::new(false),
        }
    }

    /// The directory of this process's shared-connection sockets
    /// (`<control_dir>/applier-ssh-<pid>`).
    pub fn control_dir(&self) -> &std::path::Path {
        &self.control_dir
    }

    fn destination(&self) -> &str {
        self.cfg.ssh.as_deref().unwrap_or(&self.name)
    }

    fn ssh_command(&self) -> Command {
        let mut c = Command::new(&self.ssh.ssh);
        if let Some(f) = &self.ssh.config_file {
            c.arg("-F").arg(f);
        }
        if let Some(u) = &self.ssh.user {
            c.args(["-l", u]);
        }
        c.args(["-o", "BatchMode=yes"])
            .arg("-o")
            .arg(format!(
                "ConnectTimeout={}",
                self.ssh.connect_timeout.0.as_secs().max(1)
            ))
            .args(["-o", "ServerAliveInterval=5", "-o", "ServerAliveCountMax=3"])
            .arg("-o")
            .arg(format!("ControlPath={}/%C", self.control_dir.display()));
        for o in &self.ssh.options {
            c.arg("-o").arg(o);
        }
        // The deploy host's store credentials stay here, whatever SendEnv says.
        for (k, _) in std::env::vars_os() {
            if k.to_string_lossy().starts_with("AWS_") {
                c.env_remove(k);
            }
        }
        c
    }

    fn transport(&self, detail: impl std::fmt::Display) -> HostError {
        HostError::Transport(format!("ssh {}: {detail}", self.destination()))
    }

    /// Opens the shared connection (once); fails if the host cannot be reached.
    fn ensure_master(&self) -> Result<(), HostError> {
        let mut m = self.master.lock().unwrap();
        if let Some(r) = &*m {
            return r.clone().map_err(|e| self.transport(e));
        }
        let r = self.open_master();
        *m = Some(r.clone());
        r.map_err(|e| self.transport(e))
    }

    fn open_master(&self) -> Result<(), String> {
        match std::fs::create_dir(&self.control_dir) {
            Ok(()) => {
                use std::os::unix::fs::PermissionsExt;
                let _ = std::fs::set_permissions(
                    &self.control_dir,
                    std::fs::Permissions::from_mode(0o700),
                );
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(format!("creating {}: {e}", self.control_dir.display())),
        }
        // The master forks into the background with -f: give it no pipe it could hold open.
        let errf = tempfile::tempfile().map_err(|e| format!("temp file: {e}"))?;
        let mut child = self
            .ssh_command()
            .args(["-o", "ControlMaster=yes"])
            .arg("-o")
            .arg(format!(
                "ControlPersist={}",
                self.ssh.control_persist.0.as_secs().max(1)
            ))
            .args(["-f", "-N"])
            .arg(self.destination())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(errf.try_clone().map_err(|e| e.to_string())?)
            .spawn()
            .map_err(|e| format!("running {}: {e}", self.ssh.ssh))?;
        let deadline = Instant::now() + self.ssh.connect_timeout.0 + Duration::from_secs(10);
        let status = loop {
            match child.try_wait() {
                Ok(Some(s)) => break s,
                Ok(None) if Instant::now() >= deadline => {
                    let _ = child.kill();
                    let _ = child.wait();
                    return Err("connecting timed out".into());
                }
                Ok(None) => std::thread::sleep(Duration::from_millis(20)),
                Err(e) => return Err(e.to_string()),
            }
        };
        if status.success() {
            return Ok(());
        }
        let mut err = String::new();
        let mut f = errf;
        use std::io::Seek;
        let _ = f.seek(std::io::SeekFrom::Start(0));
        let _ = f.take(4096).read_to_string(&mut err);
        Err(format!("unreachable: {}", err.trim()))
    }

    /// Runs a remote shell command over the shared connection.
    fn run_remote(
        &self,
        remote: &str,
        stdin: Option<&[u8]>,
        timeout: Duration,
    ) -> Result<ExecOutput, HostError> {
        let _ = self.ensure_master();
        let mut child = self
            .ssh_command()
            .args(["-o", "ControlMaster=no", "-T"])
            .arg(self.destination())
            .arg("--")
            .arg(remote)
            .stdin(if stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| self.transport(format!("running {}: {e}", self.ssh.ssh)))?;
        if let (Some(data), Some(mut w)) = (stdin, child.stdin.take()) {
            let data = data.to_vec();
            std::thread::spawn(move || {
                let _ = w.write_all(&data);
            });
        }
        crate::hostops::wait_output(&mut child, timeout, false)
            .map_err(|e| self.transport(e))?
            .ok_or_else(|| {
                self.transport(format!(
                    "no answer within {}s (connection killed)",
                    timeout.as_secs()
                ))
            })
    }

    /// The remote shell command of one host operation: `AWS_*` stripped, optionally through
    /// `sudo -n [-u user]`, `applier host --root <root> <args> [--request -]`.
    fn op_command(&self, args: &[&str], with_request: bool) -> String {
        let mut words: Vec<String> = Vec::new();
        if self.ssh.sudo {
            words.extend(["sudo".into(), "-n".into()]);
            if let Some(u) = &self.ssh.sudo_user {
                words.extend(["-u".into(), u.clone()]);
            }
        }
        words.push(self.ssh.applier_path.clone());
        words.extend(["host".into(), "--root".into()]);
        words.push(self.cfg.root.display().to_string());
        words.extend(args.iter().map(|s| s.to_string()));
        if with_request {
            words.extend(["--request".into(), "-".into()]);
        }
        format!(
            "exec sh -c {} applier-host {}",
            shell_quote(STRIP_AWS),
            words
                .iter()
                .map(|w| shell_quote(w))
                .collect::<Vec<_>>()
                .join(" ")
        )
    }

    /// Runs `applier host --root <root> <args>` and returns its `result`.
    fn op(&self, args: &[&str], request: Option<&Value>) -> Result<Value, HostError> {
        let remote = self.op_command(args, request.is_some());
        let body = request.map(|r| serde_json::to_vec(r).expect("serialises"));
        let out = self.run_remote(&remote, body.as_deref(), self.ssh.op_timeout.0)?;
        let answer = out.stdout.lines().rev().find_map(|l| {
            serde_json::from_str::<Value>(l)
                .ok()
                .filter(|v| v.get("ok").is_some())
        });
        let op = args.first().copied().unwrap_or("?");
        match answer {
            Some(v) if v["ok"] == true => Ok(v["result"].clone()),
            Some(v) => Err(HostError::Remote(
                v["error"].as_str().unwrap_or("(no message)").to_string(),
            )),
            None => {
                let err = out.stderr.trim();
                Err(match out.status {
                    255 => self.transport(format!(
                        "connection failed or dropped during {op}: {err} (the host's state.json tells how far it got)"
                    )),
                    126 | 127 => self.transport(format!(
                        "cannot run {:?} on the host (set transport.applier_path): {err}",
                        self.ssh.applier_path
                    )),
                    s => self.transport(format!("{op} exited {s} without an answer: {err}")),
                })
            }
        }
    }

    fn op_as<T: serde::de::DeserializeOwned>(
        &self,
        args: &[&str],
        request: Option<&Value>,
    ) -> Result<T, HostError> {
        let v = self.op(args, request)?;
        serde_json::from_value(v)
            .map_err(|e| self.transport(format!("unexpected answer to {}: {e}", args[0])))
    }

    /// Compares the target's applier version with this one.
    pub fn check_version(&self) -> Result<(), HostError> {
        let mut done = self.version_checked.lock().unwrap();
        if *done {
            return Ok(());
        }
        let v: VersionReport = match self.op_as(&["version"], None) {
            Ok(v) => v,
            Err(HostError::Remote(e)) => {
                return Err(HostError::Preflight(format!(
                    "the applier on {} is too old to report its version ({e}); install {} there",
                    self.name,
                    crate::VERSION
                )));
            }
            Err(e) => return Err(e),
        };
        if v.version != crate::VERSION {
            return Err(HostError::Preflight(format!(
                "the applier on {} ({}) is version {}, this one is {}: install the same version on the targets",
                self.name,
                self.ssh.applier_path,
                v.version,
                crate::VERSION
            )));
        }
        *done = true;
        Ok(())
    }
}

impl Drop for SshHost {
    fn drop(&mut self) {
        if matches!(*self.master.lock().unwrap(), Some(Ok(()))) {
            let _ = self
                .ssh_command()
                .args(["-O", "exit"])
                .arg(self.destination())
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
        let _ = std::fs::remove_dir(&self.control_dir);
    }
}

fn to_value<T: Serialize>(t: &T) -> Value {
    serde_json::to_value(t).expect("serialises")
}

impl Host for SshHost {
    fn name(&self) -> &str {
        &self.name
    }
    fn address(&self) -> &str {
        &self.cfg.address
    }
    fn config(&self) -> &HostConfig {
        &self.cfg
    }
    fn preflight(&self, req: &PreflightRequest) -> Result<PreflightReport, HostError> {
        self.ensure_master()?;
        self.check_version()?;
        let free = req.min_free_bytes.to_string();
        let mut args = vec!["preflight", "--min-free-bytes", &free];
        if let Some(n) = &req.node {
            args.extend(["--node", n]);
        }
        self.op_as(&args, None)
    }
    fn fetch(&self, digest: &Digest, manifest: &Manifest) -> Result<FetchReport, HostError> {
        // The stored bytes, which hash to the digest (the target checks).
        let (bytes, _) = self.store.get_bytes(&keys::blob(digest))?;
        let mut req = FetchUrlsRequest {
            digest: *digest,
            manifest: String::from_utf8(bytes)
                .map_err(|e| HostError::Preflight(format!("manifest is not UTF-8: {e}")))?,
            urls: BTreeMap::new(),
            store: None,
        };
        for layer in &manifest.layers {
            let key = keys::blob(&layer.digest);
            match self.store.presign_get(&key, self.ssh.presign_expiry.0)? {
                Some(url) => {
                    req.urls.insert(key, url);
                }
                None => {
                    req.urls.clear();
                    req.store = Some(self.store.location());
                    break;
                }
            }
        }
        self.op_as(&["fetch-urls"], Some(&to_value(&req)))
    }
    fn service_spec(&self, commit: &str) -> Result<ServiceSpec, HostError> {
        let path = self
            .cfg
            .root
            .join("releases")
            .join(commit)
            .join("deploy/service.yaml");
        let text = match self.read_file(&path.display().to_string()) {
            Ok(b) => String::from_utf8_lossy(&b).into_owned(),
            Err(HostError::Remote(_)) => return Err(HostError::NotFetched(commit.to_string())),
            Err(e) => return Err(e),
        };
        Ok(ServiceSpec::parse(&text)?)
    }
    fn render(&self, req: &RenderRequest) -> Result<RenderReport, HostError> {
        self.op_as(&["render"], Some(&to_value(req)))
    }
    fn switch(&self, commit: &str) -> Result<SwitchReport, HostError> {
        self.op_as(&["switch", commit], None)
    }
    fn start(&self, req: &StartRequest) -> Result<RunInfo, HostError> {
        self.op_as(&["start"], Some(&to_value(req)))
    }
    fn wait_ready(&self, req: &ReadyRequest) -> Result<ReadyReport, HostError> {
        self.op_as(&["wait-ready"], Some(&to_value(req)))
    }
    fn stop(&self) -> Result<StopReport, HostError> {
        self.op_as(&["stop"], None)
    }
    fn status(&self) -> Result<HostStatus, HostError> {
        self.op_as(&["status"], None)
    }
    fn mark_good(&self, release: &ReleaseRef) -> Result<HostState, HostError> {
        self.op_as(&["mark-good"], Some(&to_value(release)))
    }
    fn prune(&self, keep: usize) -> Result<PruneReport, HostError> {
        self.op_as(&["prune", "--keep", &keep.to_string()], None)
    }
    fn read_file(&self, path: &str) -> Result<Vec<u8>, HostError> {
        let v = self.op(&["read-file", path], None)?;
        Ok(v.as_str().unwrap_or_default().as_bytes().to_vec())
    }
    fn exec(&self, cmd: &str, timeout: Duration) -> Result<ExecOutput, HostError> {
        self.run_remote(cmd, None, timeout)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_ops_run_through_sudo_as_the_configured_user() {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn Store> =
            Arc::new(artifact::store::fs::FsStore::open(dir.path()).unwrap());
        let host: HostConfig = serde_norway::from_str("root: /srv/deploy/svc").unwrap();
        let cmd = |yaml: &str| {
            let ssh: SshConfig = serde_norway::from_str(yaml).unwrap();
            SshHost::new("a", &host, &ssh, store.clone()).op_command(&["status"], true)
        };
        let plain = cmd("{}");
        assert!(!plain.contains("sudo"), "{plain}");
        assert!(
            plain.ends_with("applier-host applier host --root /srv/deploy/svc status --request -"),
            "{plain}"
        );
        let root = cmd("{sudo: true}");
        assert!(root.contains("applier-host sudo -n applier host"), "{root}");
        let user = cmd("{sudo: true, sudo_user: deploy-svc}");
        assert!(
            user.contains("applier-host sudo -n -u deploy-svc applier host"),
            "{user}"
        );
    }

    #[test]
    fn quoting() {
        assert_eq!(shell_quote("/srv/a-b_c"), "/srv/a-b_c");
        assert_eq!(shell_quote("a b"), "'a b'");
        assert_eq!(shell_quote("it's"), "'it'\\''s'");
        assert_eq!(shell_quote(""), "''");
    }

    #[test]
    fn strip_aws_removes_every_aws_variable() {
        let out = Command::new("sh")
            .args(["-c", STRIP_AWS, "x", "env"])
            .env("AWS_SECRET_ACCESS_KEY", "s")
            .env("AWS_WHATEVER", "w")
            .env("KEEP_ME", "k")
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(text.contains("KEEP_ME=k"));
        assert!(!text.contains("AWS_"), "{text}");
    }

    #[test]
    fn manifest_must_match_its_digest() {
        let req = FetchUrlsRequest {
            digest: Digest::of(b"other"),
            manifest: "{}".into(),
            urls: BTreeMap::new(),
            store: None,
        };
        assert!(req.verified_manifest().is_err());
    }
}
