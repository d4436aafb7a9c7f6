//! The targets: one `sshd -D` per host on 127.0.0.1 with its own host key, config and
//! deploy root; and the client side (key pair, `known_hosts`, `ssh_config`).

use std::io::{BufRead, BufReader};
use std::net::TcpStream;
use std::process::Command;
use std::time::Duration;

use super::layout::{State, write_atomic};
use super::procs;
use super::render::render;
use super::{Ctx, Error};

impl Ctx {
    pub(super) fn sshd_pid(&self, name: &str) -> Option<i32> {
        let dir = self.layout.host_dir(name);
        procs::pid_of(
            &dir.join("sshd.pid"),
            &dir.join("sshd_config").display().to_string(),
        )
    }

    fn keygen(&self, file: &std::path::Path, comment: &str) -> Result<(), Error> {
        if file.exists() {
            return Ok(());
        }
        procs::output(
            Command::new("ssh-keygen")
                .args(["-q", "-t", "ed25519", "-N", "", "-C", comment, "-f"])
                .arg(file),
            "ssh-keygen",
        )
        .map(drop)
    }

    /// Host key, deploy root and sshd config of host `i` (0-based).
    pub(super) fn write_host(&self, st: &State, i: usize) -> Result<(), Error> {
        let name = format!("t{}", i + 1);
        let dir = self.layout.host_dir(&name);
        // The session's home: an empty directory, as a deploy account's is, so that the bed
        // user's own shell start-up files (its ~/.bashrc, which bash reads for every ssh
        // command) do not add their cost to every request.
        for sub in ["root", "home"] {
            std::fs::create_dir_all(dir.join(sub))
                .map_err(|e| Error::Failed(format!("{}: {e}", dir.display())))?;
        }
        self.keygen(
            &dir.join("ssh_host_ed25519_key"),
            &format!("testbed-{name}"),
        )?;
        let permit = if rustix::process::getuid().is_root() {
            "prohibit-password"
        } else {
            "no"
        };
        let d = |p: &std::path::Path| p.display().to_string();
        render(
            &self.settings.templates,
            "sshd_config.tmpl",
            &dir.join("sshd_config"),
            &[
                ("NAME", name.clone()),
                ("SSH_PORT", st.ports.ssh[i].to_string()),
                ("SERVICE_PORT", st.ports.service[i].to_string()),
                ("HOST_DIR", d(&dir)),
                ("ROOT", d(&dir.join("root"))),
                ("HOME", d(&dir.join("home"))),
                ("BED", d(&self.layout.dir)),
                ("USER", st.user.clone()),
                ("PERMIT_ROOT_LOGIN", permit.into()),
                ("PATH", self.settings.path_env.clone()),
            ],
        )?;
        procs::output(
            Command::new(SSHD)
                .arg("-t")
                .arg("-f")
                .arg(dir.join("sshd_config")),
            &format!("{name}: sshd -t"),
        )
        .map(drop)
    }

    /// The client key pair, `authorized_keys`, `known_hosts` and `ssh_config`.
    pub(super) fn write_ssh_client(&self, st: &State) -> Result<(), Error> {
        let key = self.layout.path("id_ed25519");
        self.keygen(&key, "testbed-client")?;
        let auth = self.layout.path("authorized_keys");
        std::fs::copy(key.with_extension("pub"), &auth)
            .map_err(|e| Error::Failed(format!("{}: {e}", auth.display())))?;
        use std::os::unix::fs::PermissionsExt;
        let _ = std::fs::set_permissions(&auth, std::fs::Permissions::from_mode(0o600));
        let mut known = String::new();
        let mut config = String::new();
        let part = self.layout.path("ssh_host.part");
        for (i, name) in st.host_names().iter().enumerate() {
            let pubkey = self.layout.host_dir(name).join("ssh_host_ed25519_key.pub");
            let text = std::fs::read_to_string(&pubkey)
                .map_err(|e| Error::Failed(format!("{}: {e}", pubkey.display())))?;
            let hostkey: Vec<&str> = text.split_whitespace().take(2).collect();
            // Both the alias and the address form, so tools that do not read ssh_config match.
            known.push_str(&format!(
                "{name},[127.0.0.1]:{} {}\n",
                st.ports.ssh[i],
                hostkey.join(" ")
            ));
            render(
                &self.settings.templates,
                "ssh_host.tmpl",
                &part,
                &[
                    ("NAME", name.clone()),
                    ("SSH_PORT", st.ports.ssh[i].to_string()),
                    ("USER", st.user.clone()),
                    ("BED", self.layout.dir.display().to_string()),
                ],
            )?;
            config.push_str(&std::fs::read_to_string(&part).unwrap_or_default());
        }
        let _ = std::fs::remove_file(&part);
        write_atomic(&self.layout.path("known_hosts"), known.as_bytes())?;
        write_atomic(&self.layout.path("ssh_config"), config.as_bytes())
    }

    /// Starts host `i`'s sshd unless it runs; waits for its banner and pid file.
    pub(super) fn start_sshd(&self, st: &State, i: usize) -> Result<(), Error> {
        let name = format!("t{}", i + 1);
        if self.sshd_pid(&name).is_some() {
            return Ok(());
        }
        let port = st.ports.ssh[i];
        if super::ports::in_use(port) {
            return Err(Error::Failed(format!(
                "{name}: ssh port {port} is taken by another process"
            )));
        }
        let dir = self.layout.host_dir(&name);
        let _ = std::fs::remove_file(dir.join("sshd.pid"));
        let args = vec![
            "-D".to_string(),
            "-f".into(),
            dir.join("sshd_config").display().to_string(),
            "-E".into(),
            dir.join("sshd.log").display().to_string(),
        ];
        procs::spawn_daemon(SSHD, &args, &[], &dir.join("sshd.out"))?;
        let up = super::poll(Duration::from_secs(10), || ssh_banner(port));
        if !up {
            return Err(Error::Failed(format!(
                "{name}: sshd did not answer on 127.0.0.1:{port}\n{}",
                procs::tail(&dir.join("sshd.log"), 20)
            )));
        }
        if !super::poll(Duration::from_secs(5), || self.sshd_pid(&name).is_some()) {
            return Err(Error::Failed(format!("{name}: sshd wrote no pid file")));
        }
        self.log(&format!(
            "{name}: sshd on 127.0.0.1:{port} (pid {})",
            self.sshd_pid(&name).unwrap_or(0)
        ));
        Ok(())
    }

    pub(super) fn stop_sshd(&self, name: &str) {
        if let Some(pid) = self.sshd_pid(name) {
            procs::stop_pids(&[pid]);
            self.log(&format!("{name}: sshd stopped"));
        }
        let _ = std::fs::remove_file(self.layout.host_dir(name).join("sshd.pid"));
    }
}

const SSHD: &str = "/usr/sbin/sshd";

/// The port answers with an SSH banner.
fn ssh_banner(port: u16) -> bool {
    let Ok(s) = TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), Duration::from_secs(1))
    else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    let mut line = String::new();
    BufReader::new(s).read_line(&mut line).is_ok() && line.starts_with("SSH-")
}
