//! HAProxy in front of the targets' service ports (admin socket for pool control) and
//! Prometheus scraping each target's `/metrics`.

use std::process::Command;
use std::time::Duration;

use super::layout::State;
use super::procs;
use super::render::render;
use super::{Ctx, Error, http_ok};

pub const BACKEND: &str = "fixture";

impl Ctx {
    pub(super) fn haproxy_pid(&self) -> Option<i32> {
        procs::pid_of(
            &self.layout.path("haproxy.pid"),
            &self.layout.path("haproxy.cfg").display().to_string(),
        )
    }

    pub(super) fn prometheus_pid(&self) -> Option<i32> {
        procs::pid_of(
            &self.layout.path("prometheus.pid"),
            &self.layout.path("prometheus.yml").display().to_string(),
        )
    }

    pub(super) fn start_haproxy(&self, st: &State) -> Result<(), Error> {
        let servers: Vec<String> = st
            .host_names()
            .iter()
            .zip(&st.ports.service)
            .map(|(n, p)| format!("    server {n} 127.0.0.1:{p} check"))
            .collect();
        let cfg = self.layout.path("haproxy.cfg");
        render(
            &self.settings.templates,
            "haproxy.cfg.tmpl",
            &cfg,
            &[
                ("BED", self.layout.dir.display().to_string()),
                ("HAPROXY_PORT", st.ports.haproxy.to_string()),
                ("SERVERS", servers.join("\n")),
            ],
        )?;
        procs::output(
            Command::new(haproxy_bin())
                .arg("-q")
                .arg("-c")
                .arg("-f")
                .arg(&cfg),
            "haproxy -c",
        )?;
        if self.haproxy_pid().is_some() {
            return Ok(());
        }
        self.port_free("haproxy", st.ports.haproxy)?;
        let sock = self.layout.path("haproxy.sock");
        let _ = std::fs::remove_file(self.layout.path("haproxy.pid"));
        let _ = std::fs::remove_file(&sock);
        // `-D`: HAProxy daemonises itself and writes its pid file; the launcher exits.
        let log = self.layout.path("haproxy.log");
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .map_err(|e| Error::Failed(e.to_string()))?;
        let st_ok = Command::new("setsid")
            .arg(haproxy_bin())
            .arg("-f")
            .arg(&cfg)
            .arg("-D")
            .arg("-p")
            .arg(self.layout.path("haproxy.pid"))
            .stdin(std::process::Stdio::null())
            .stdout(out.try_clone().map_err(|e| Error::Failed(e.to_string()))?)
            .stderr(out)
            .status()
            .is_ok_and(|s| s.success());
        if !st_ok {
            return Err(Error::Failed(format!(
                "haproxy failed to start\n{}",
                procs::tail(&log, 10)
            )));
        }
        if !super::poll(Duration::from_secs(10), || sock.exists()) {
            return Err(Error::Failed("haproxy made no admin socket".into()));
        }
        if !super::poll(Duration::from_secs(5), || self.haproxy_pid().is_some()) {
            return Err(Error::Failed("haproxy wrote no pid file".into()));
        }
        self.log(&format!(
            "haproxy on 127.0.0.1:{} (pid {}), admin socket {}",
            st.ports.haproxy,
            self.haproxy_pid().unwrap_or(0),
            sock.display()
        ));
        Ok(())
    }

    pub(super) fn start_prometheus(&self, st: &State) -> Result<(), Error> {
        let targets: Vec<String> = st
            .host_names()
            .iter()
            .zip(&st.ports.service)
            .map(|(n, p)| {
                format!("      - targets: ['127.0.0.1:{p}']\n        labels: {{host: {n}}}")
            })
            .collect();
        let yml = self.layout.path("prometheus.yml");
        render(
            &self.settings.templates,
            "prometheus.yml.tmpl",
            &yml,
            &[("TARGETS", targets.join("\n"))],
        )?;
        if procs::succeeds(Command::new("promtool").arg("--version")) {
            procs::output(
                Command::new("promtool").args(["check", "config"]).arg(&yml),
                "promtool check config",
            )?;
        }
        if self.prometheus_pid().is_none() {
            self.port_free("prometheus", st.ports.prometheus)?;
            let data = self.layout.path("prometheus-data");
            std::fs::create_dir_all(&data).map_err(|e| Error::Failed(e.to_string()))?;
            let args = vec![
                format!("--config.file={}", yml.display()),
                format!("--storage.tsdb.path={}", data.display()),
                "--storage.tsdb.retention.time=1d".into(),
                format!("--web.listen-address=127.0.0.1:{}", st.ports.prometheus),
                "--web.enable-lifecycle".into(),
                "--log.level=warn".into(),
            ];
            let pid = procs::spawn_daemon(
                "prometheus",
                &args,
                &[],
                &self.layout.path("prometheus.log"),
            )?;
            procs::write_pid(&self.layout.path("prometheus.pid"), pid)?;
        }
        let url = format!("http://127.0.0.1:{}/-/ready", st.ports.prometheus);
        if !super::poll(Duration::from_secs(30), || http_ok(&url)) {
            return Err(Error::Failed(format!(
                "prometheus not ready on 127.0.0.1:{}\n{}",
                st.ports.prometheus,
                procs::tail(&self.layout.path("prometheus.log"), 20)
            )));
        }
        self.log(&format!(
            "prometheus on http://127.0.0.1:{} (pid {})",
            st.ports.prometheus,
            self.prometheus_pid().unwrap_or(0)
        ));
        Ok(())
    }
}

pub fn haproxy_bin() -> String {
    if procs::succeeds(Command::new("haproxy").arg("-v")) {
        "haproxy".into()
    } else {
        "/usr/sbin/haproxy".into()
    }
}
