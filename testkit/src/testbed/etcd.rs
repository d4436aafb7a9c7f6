//! etcd (Debian's etcd-server, v2 API on: conftool's driver speaks v2) on loopback with its
//! data under the bed, and Wikimedia's conftool from PyPI (pinned in
//! ci/testbed.d/conftool-requirements.txt, in a venv under ci/.cache) configured with a
//! schema and one pool holding a node per target, all pooled at the first `up`.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use super::layout::{State, write_atomic, write_if_changed};
use super::procs;
use super::render::render;
use super::{Ctx, Error, http_ok};

pub const VERSION: &str = "6.1.0";
pub const NAMESPACE: &str = "/conftool";
pub const DC: &str = "bed";
pub const CLUSTER: &str = "fixture";
pub const SERVICE: &str = "fixture-service";

impl Ctx {
    pub(super) fn etcd_data(&self) -> PathBuf {
        self.layout.path("etcd-data")
    }

    pub(super) fn etcd_pid(&self) -> Option<i32> {
        procs::pid_of(
            &self.layout.path("etcd.pid"),
            &format!("--data-dir={}", self.etcd_data().display()),
        )
    }

    pub(super) fn conftool_dir(&self) -> PathBuf {
        self.layout.path("conftool")
    }

    /// The venv holding conftool (shared by every bed of this checkout).
    pub(super) fn conftool_venv(&self) -> PathBuf {
        self.settings.cache_dir.join(format!("conftool-{VERSION}"))
    }

    pub(super) fn confctl(&self) -> PathBuf {
        self.conftool_venv().join("bin/confctl")
    }

    pub(super) fn start_etcd(&self, st: &State) -> Result<(), Error> {
        if self.etcd_pid().is_none() {
            self.port_free("etcd client", st.ports.etcd_client)?;
            self.port_free("etcd peer", st.ports.etcd_peer)?;
            let client = format!("http://127.0.0.1:{}", st.ports.etcd_client);
            let peer = format!("http://127.0.0.1:{}", st.ports.etcd_peer);
            let args = vec![
                "--name=testbed".to_string(),
                format!("--data-dir={}", self.etcd_data().display()),
                format!("--listen-client-urls={client}"),
                format!("--advertise-client-urls={client}"),
                format!("--listen-peer-urls={peer}"),
                format!("--initial-advertise-peer-urls={peer}"),
                format!("--initial-cluster=testbed={peer}"),
                "--enable-v2=true".into(),
                "--logger=zap".into(),
                "--log-level=warn".into(),
            ];
            let pid = procs::spawn_daemon("etcd", &args, &[], &self.layout.path("etcd.log"))?;
            procs::write_pid(&self.layout.path("etcd.pid"), pid)?;
        }
        let url = format!("http://127.0.0.1:{}/health", st.ports.etcd_client);
        if !super::poll(Duration::from_secs(30), || http_ok(&url)) {
            return Err(Error::Failed(format!(
                "etcd not healthy on 127.0.0.1:{}\n{}",
                st.ports.etcd_client,
                procs::tail(&self.layout.path("etcd.log"), 15)
            )));
        }
        self.log(&format!(
            "etcd on http://127.0.0.1:{} (pid {})",
            st.ports.etcd_client,
            self.etcd_pid().unwrap_or(0)
        ));
        Ok(())
    }

    /// Installs conftool into its venv when missing or when the pinned requirements changed.
    pub fn ensure_conftool(&self) -> Result<(), Error> {
        let venv = self.conftool_venv();
        let reqs = self.settings.templates.join("conftool-requirements.txt");
        let want = std::fs::read_to_string(&reqs)
            .map_err(|e| Error::Failed(format!("{}: {e}", reqs.display())))?;
        let marker = venv.join(".installed");
        if std::fs::read_to_string(&marker).is_ok_and(|have| have == want)
            && self.confctl().exists()
        {
            return Ok(());
        }
        std::fs::create_dir_all(&self.settings.cache_dir)
            .map_err(|e| Error::Failed(e.to_string()))?;
        let _lock = procs::lock(
            &self.settings.cache_dir.join("conftool.lock"),
            Duration::from_secs(300),
        )?;
        if std::fs::read_to_string(&marker).is_ok_and(|have| have == want) {
            return Ok(());
        }
        self.log(&format!(
            "installing conftool {VERSION} into {} (pip)",
            venv.display()
        ));
        let _ = std::fs::remove_dir_all(&venv);
        procs::output(
            Command::new(&self.settings.python)
                .args(["-m", "venv"])
                .arg(&venv),
            &format!("{} -m venv", self.settings.python),
        )?;
        procs::output(
            Command::new(venv.join("bin/pip"))
                .args([
                    "install",
                    "-q",
                    "--disable-pip-version-check",
                    "--no-deps",
                    "-r",
                ])
                .arg(&reqs),
            "pip install (conftool)",
        )?;
        write_atomic(&marker, want.as_bytes())
    }

    /// conftool's config, schema and pool data for the bed; synced into etcd; every node
    /// pooled (weight 1) the first time.
    pub(super) fn start_conftool(&self, st: &State) -> Result<(), Error> {
        self.ensure_conftool()?;
        let d = self.conftool_dir();
        for sub in ["cache", "data/node", "data/service"] {
            std::fs::create_dir_all(d.join(sub)).map_err(|e| Error::Failed(e.to_string()))?;
        }
        let p = |x: &Path| x.display().to_string();
        let vars = [
            ("ETCD_PORT", st.ports.etcd_client.to_string()),
            ("NAMESPACE", NAMESPACE.to_string()),
            ("CACHE", p(&d.join("cache"))),
            ("ETCDRC", p(&d.join("etcdrc"))),
        ];
        let t = &self.settings.templates;
        render(
            t,
            "conftool-config.yaml.tmpl",
            &d.join("config.yaml"),
            &vars,
        )?;
        render(t, "conftool-etcdrc.tmpl", &d.join("etcdrc"), &vars)?;
        render(t, "conftool-schema.yaml", &d.join("schema.yaml"), &[])?;
        let nodes: String = st
            .host_names()
            .iter()
            .map(|h| format!("    {h}: [{SERVICE}]\n"))
            .collect();
        let mut changed = write_if_changed(
            &d.join("data/node/bed.yaml"),
            format!("# The bed's pool, generated by ci/testbed up.\n{DC}:\n  {CLUSTER}:\n{nodes}")
                .as_bytes(),
        )?;
        changed |= write_if_changed(
            &d.join("data/service/bed.yaml"),
            format!("{CLUSTER}:\n  {SERVICE}: {{}}\n").as_bytes(),
        )?;
        let seeded = d.join("seeded");
        if changed || !seeded.exists() {
            self.conftool_sync()?;
        }
        if !seeded.exists() {
            // Selecting several nodes makes confctl ask for a confirmation: answer it.
            procs::output_with_input(
                Command::new(self.confctl())
                    .arg("--quiet")
                    .arg("--config")
                    .arg(d.join("config.yaml"))
                    .arg("--schema")
                    .arg(d.join("schema.yaml"))
                    .args([
                        "select",
                        &format!("dc={DC},cluster={CLUSTER},service={SERVICE}"),
                        "set/pooled=yes:weight=1",
                    ]),
                "confctl set/pooled=yes",
                b"y\n",
            )?;
            write_atomic(&seeded, b"")?;
        }
        self.log(&format!(
            "conftool {VERSION}: pool {DC}/{CLUSTER}/{SERVICE} with {} nodes ({})",
            st.hosts,
            self.confctl().display()
        ));
        Ok(())
    }

    fn conftool_sync(&self) -> Result<(), Error> {
        let d = self.conftool_dir();
        procs::output(
            Command::new(self.conftool_venv().join("bin/conftool-sync"))
                .arg("--config")
                .arg(d.join("config.yaml"))
                .arg("--schema")
                .arg(d.join("schema.yaml"))
                .arg("--directory")
                .arg(d.join("data")),
            "conftool-sync",
        )
        .map(drop)
    }
}
