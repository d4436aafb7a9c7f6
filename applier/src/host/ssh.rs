//! The ssh transport: a request travels as JSON on the stdin of one
//! `applier host --root <root> <op>` run on the target through the system `ssh`; the answer
//! comes back as JSON on its stdout.
//!
//! - One invocation per request, its stdin two lines: a [`Hello`] (the target refuses another
//!   protocol version; this side refuses another applier version) and the request. Nothing
//!   of the request is in the command line, so nothing needs quoting; `<op>` (a fixed word)
//!   names it in the target's process list. One process per request keeps the target
//!   stateless between requests: a dropped connection or a timeout kills one request, never
//!   a session, and a started service is never the child of a process tied to the ssh session.
//!   The shared connection makes a request cost one ssh channel, not a handshake; a `batch`
//!   (render, switch and start of a host's path) is one request, so one channel.
//! - The system `ssh` is used (so ssh_config, agent, known_hosts and jump hosts apply), with
//!   `BatchMode=yes` and `ConnectTimeout` ([`SshCommand`], which the HAProxy-over-ssh hop uses
//!   too). One shared connection per host: the first request opens a master
//!   (`ControlMaster=yes`, `ControlPersist`) with its output detached, every request then
//!   rides it (`ControlMaster=no`, so a dead master means a plain connection, never a second
//!   hidden master). The master is closed when the host is dropped. Each inventory host has
//!   its own control socket (`<dir>/<host>-%C`), so hosts that share a destination each open
//!   and close their own master and none is left running.
//! - The remote command removes every `AWS_*` variable from its environment before it runs
//!   (and the local `ssh` gets none either): targets never hold store credentials.
//! - Fetch hands the target presigned GET URLs of the layers ([`Store::presign_get`], short
//!   expiry) with the manifest; the target verifies the manifest's digest and every layer as
//!   the local fetch does ([`crate::target::UrlStore`]). A store without presigned URLs (a
//!   directory) is named by its path and opened by the target directly, which only works when
//!   that path is visible on the target.
//! - `exec` travels as the ssh command itself: `env -i` with the target's minimal environment
//!   ([`crate::target::service_env`]) and the command's values as variables, then `sh -c`
//!   with the command as one quoted word; never through `sudo` (the logs check's `command`).
//! - A connection that fails or drops mid-request (ssh exit 255, no JSON answer) is a
//!   [`HostError::Transport`] for that host; what really happened on the host is in its
//!   `state.json` (`step` in progress).

use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use artifact::store::Store;

use super::{Host, fetch_source};
use crate::config::{HostConfig, SshConfig};
use crate::protocol::{ExecOutput, Hello, HostError, HostRequest, HostResponse};

pub use crate::shell::shell_quote;

/// Removes every `AWS_*` variable, then runs its arguments.
const STRIP_AWS: &str = r#"for v in $(env | sed -n 's/^\(AWS_[A-Za-z0-9_]*\)=.*/\1/p'); do unset "$v"; done; exec "$@""#;

/// The system `ssh` as every hop of this tool runs it: batch mode (never a prompt), a connect
/// timeout, keep-alives, an optional config file, login user and shared-connection socket,
/// extra `-o` options, and no `AWS_*` variable in its environment.
#[derive(Clone, Debug)]
pub struct SshCommand {
    /// The `ssh` binary.
    pub ssh: String,
    /// `-F`.
    pub config_file: Option<PathBuf>,
    /// `-l`.
    pub user: Option<String>,
    pub connect_timeout: Duration,
    /// `ControlPath` of the shared connection.
    pub control_path: Option<String>,
    /// Extra `-o` options.
    pub options: Vec<String>,
}

impl SshCommand {
    /// `ssh` with the defaults and nothing else.
    pub fn plain(config_file: Option<PathBuf>, connect_timeout: Duration) -> Self {
        SshCommand {
            ssh: "ssh".into(),
            config_file,
            user: None,
            connect_timeout,
            control_path: None,
            options: Vec::new(),
        }
    }

    /// The command, ready for more options, the destination and the remote command.
    pub fn command(&self) -> Command {
        let mut c = Command::new(&self.ssh);
        if let Some(f) = &self.config_file {
            c.arg("-F").arg(f);
        }
        if let Some(u) = &self.user {
            c.args(["-l", u]);
        }
        c.args(["-o", "BatchMode=yes"])
            .arg("-o")
            .arg(format!(
                "ConnectTimeout={}",
                self.connect_timeout.as_secs().max(1)
            ))
            .args(["-o", "ServerAliveInterval=5", "-o", "ServerAliveCountMax=3"]);
        if let Some(p) = &self.control_path {
            c.arg("-o").arg(format!("ControlPath={p}"));
        }
        for o in &self.options {
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
}

/// One target reached over ssh.
#[derive(Debug)]
pub struct SshHost {
    name: String,
    cfg: HostConfig,
    ssh: SshConfig,
    store: Arc<dyn Store>,
    control_dir: PathBuf,
    /// This host's part of its control socket's name (hosts sharing a destination each get
    /// their own master).
    socket_prefix: String,
    /// `None`: no master tried yet; `Some(Ok)`: open; `Some(Err)`: it could not be opened.
    master: Mutex<Option<Result<(), String>>>,
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
            socket_prefix: artifact::Digest::of(name.as_bytes()).hex()[..8].to_string(),
            master: Mutex::new(None),
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
        SshCommand {
            ssh: self.ssh.ssh.clone(),
            config_file: self.ssh.config_file.clone(),
            user: self.ssh.user.clone(),
            connect_timeout: self.ssh.connect_timeout.0,
            control_path: Some(format!(
                "{}/{}-%C",
                self.control_dir.display(),
                self.socket_prefix
            )),
            options: self.ssh.options.clone(),
        }
        .command()
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
        crate::target::wait_output(&mut child, timeout, false)
            .map_err(|e| self.transport(e))?
            .ok_or_else(|| {
                self.transport(format!(
                    "no answer within {}s (connection killed)",
                    timeout.as_secs()
                ))
            })
    }

    /// The remote shell command of one request: `AWS_*` stripped, optionally through
    /// `sudo -n [-u user]`, `applier host --root <root> <op>`.
    fn op_command(&self, op: &str) -> String {
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
        words.push(op.to_string());
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

    /// The remote shell command of an `exec`: `env -i` with the minimal environment and the
    /// values, then `sh -c` with `cmd` as one quoted word.
    fn exec_command(&self, cmd: &str, vars: &std::collections::BTreeMap<String, String>) -> String {
        let mut words = vec!["exec".to_string(), "env".into(), "-i".into()];
        for (k, v) in crate::target::service_env(&self.cfg.root, vars) {
            words.push(shell_quote(&format!("{k}={v}")));
        }
        words.extend(["sh".into(), "-c".into(), shell_quote(cmd)]);
        words.join(" ")
    }

    fn too_old(&self, detail: &str) -> HostError {
        HostError::Preflight(format!(
            "the applier on {} does not speak host protocol {} ({detail}); install {} there",
            self.name,
            crate::protocol::PROTOCOL_VERSION,
            crate::VERSION
        ))
    }

    /// Runs one request in its own `applier host` on the target.
    fn request(&self, req: HostRequest) -> Result<HostResponse, HostError> {
        let op = req.op();
        let mut body = serde_json::to_vec(&HostRequest::Hello(Hello::ours())).expect("serialises");
        body.push(b'\n');
        body.extend(serde_json::to_vec(&req).expect("serialises"));
        body.push(b'\n');
        let out = self.run_remote(&self.op_command(&op), Some(&body), self.ssh.op_timeout.0)?;
        let mut answers = out
            .stdout
            .lines()
            .filter_map(|l| serde_json::from_str::<HostResponse>(l).ok());
        match answers.next() {
            Some(HostResponse::Hello(h)) if h.version != crate::VERSION => {
                Err(HostError::Preflight(format!(
                    "the applier on {} ({}) is version {}, this one is {}: install the same version on the targets",
                    self.name,
                    self.ssh.applier_path,
                    h.version,
                    crate::VERSION
                )))
            }
            Some(HostResponse::Hello(_)) => match answers.next() {
                Some(r) => r.into_result(),
                None => Err(self.no_answer(&op, &out)),
            },
            Some(HostResponse::Error(e)) => Err(e.into()),
            Some(other) => Err(self.transport(format!("answered `{}` to a hello", other.op()))),
            None if out.stdout.contains("\"ok\"") => {
                Err(self.too_old("it answered the old format"))
            }
            None if out.status == 2 => Err(self.too_old(out.stderr.trim())),
            None => Err(self.no_answer(&op, &out)),
        }
    }

    fn no_answer(&self, op: &str, out: &ExecOutput) -> HostError {
        let err = out.stderr.trim();
        match out.status {
            255 => self.transport(format!(
                "connection failed or dropped during {op}: {err} (the host's state.json tells how far it got)"
            )),
            126 | 127 => self.transport(format!(
                "cannot run {:?} on the host (set transport.applier_path): {err}",
                self.ssh.applier_path
            )),
            s => self.transport(format!("{op} exited {s} without an answer: {err}")),
        }
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

impl Host for SshHost {
    fn name(&self) -> &str {
        &self.name
    }
    fn config(&self) -> &HostConfig {
        &self.cfg
    }
    fn call(&self, req: HostRequest) -> Result<HostResponse, HostError> {
        match req {
            HostRequest::Exec(e) => self
                .run_remote(
                    &self.exec_command(&e.cmd, &e.env),
                    None,
                    Duration::from_millis(e.timeout_ms),
                )
                .map(HostResponse::Exec),
            HostRequest::FetchUrls(f) => {
                let f = fetch_source(f, self.store.as_ref(), Some(self.ssh.presign_expiry.0))?;
                self.request(HostRequest::FetchUrls(f))
            }
            // Preflight is where an unreachable host is found: no fallback connection.
            HostRequest::Preflight(_) => {
                self.ensure_master()?;
                self.request(req)
            }
            req => self.request(req),
        }
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
            SshHost::new("a", &host, &ssh, store.clone()).op_command("status")
        };
        let plain = cmd("{}");
        assert!(!plain.contains("sudo"), "{plain}");
        assert!(
            plain.ends_with("applier-host applier host --root /srv/deploy/svc status"),
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
    fn the_ssh_command_is_batch_mode_with_the_configured_options() {
        let c = SshCommand {
            options: vec!["StrictHostKeyChecking=yes".into()],
            user: Some("deploy".into()),
            control_path: Some("/run/x/%C".into()),
            ..SshCommand::plain(Some("/etc/ssh/fleet".into()), Duration::from_secs(3))
        }
        .command();
        let args: Vec<String> = c
            .get_args()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        let joined = args.join(" ");
        for want in [
            "-F /etc/ssh/fleet",
            "-l deploy",
            "-o BatchMode=yes",
            "-o ConnectTimeout=3",
            "-o ControlPath=/run/x/%C",
            "-o StrictHostKeyChecking=yes",
        ] {
            assert!(joined.contains(want), "{want} missing in {joined}");
        }
    }
}
