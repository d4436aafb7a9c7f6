//! Graphite from Debian's packages: `carbon-cache` (plaintext, pickle and cache-query ports)
//! writing whisper files under the bed, and `graphite-web` (its render API) served by
//! Django's own server (`graphite-manage runserver`), both on loopback, all state in
//! `<bed>/graphite/`. They run under Debian's `/usr/bin/python3` (the scripts' shebang).

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use super::layout::State;
use super::procs;
use super::render::render;
use super::{Ctx, Error, http_ok};

/// Seconds per point of the finest retention (ci/testbed.d/storage-schemas.conf).
pub const RESOLUTION_S: u32 = 1;
const SETTINGS_MODULE: &str = "testbed_graphite_settings";

impl Ctx {
    fn graphite_dir(&self) -> PathBuf {
        self.layout.path("graphite")
    }

    pub(super) fn whisper_dir(&self) -> PathBuf {
        self.graphite_dir().join("whisper")
    }

    pub(super) fn carbon_pid(&self) -> Option<i32> {
        let d = self.graphite_dir();
        procs::pid_of(
            &d.join("carbon.pid"),
            &d.join("carbon.conf").display().to_string(),
        )
    }

    pub(super) fn graphite_web_pid(&self, st: &State) -> Option<i32> {
        procs::pid_of(
            &self.graphite_dir().join("graphite-web.pid"),
            &format!("runserver 127.0.0.1:{}", st.ports.graphite_web),
        )
    }

    fn write_graphite_config(&self, st: &State) -> Result<(), Error> {
        let d = self.graphite_dir();
        for sub in ["whisper", "lists", "log/webapp"] {
            std::fs::create_dir_all(d.join(sub)).map_err(|e| Error::Failed(e.to_string()))?;
        }
        let p = |x: PathBuf| x.display().to_string();
        let vars = [
            ("DIR", p(d.clone())),
            ("WHISPER_DIR", p(self.whisper_dir())),
            ("CARBON_PORT", st.ports.carbon.to_string()),
            ("PICKLE_PORT", st.ports.carbon_pickle.to_string()),
            ("QUERY_PORT", st.ports.carbon_query.to_string()),
        ];
        let t = &self.settings.templates;
        render(t, "carbon.conf.tmpl", &d.join("carbon.conf"), &vars)?;
        render(
            t,
            "storage-schemas.conf",
            &d.join("storage-schemas.conf"),
            &[],
        )?;
        render(
            t,
            "storage-aggregation.conf",
            &d.join("storage-aggregation.conf"),
            &[],
        )?;
        render(
            t,
            "graphite_settings.py.tmpl",
            &d.join(format!("{SETTINGS_MODULE}.py")),
            &vars,
        )
    }

    /// carbon-cache, then graphite-web; returns when the render API answers.
    pub(super) fn start_graphite(&self, st: &State) -> Result<(), Error> {
        self.write_graphite_config(st)?;
        let d = self.graphite_dir();
        if self.carbon_pid().is_none() {
            for (what, port) in [
                ("carbon", st.ports.carbon),
                ("carbon pickle", st.ports.carbon_pickle),
                ("carbon cache query", st.ports.carbon_query),
            ] {
                self.port_free(what, port)?;
            }
            let _ = std::fs::remove_file(d.join("carbon.pid"));
            let args = vec![
                format!("--config={}", d.join("carbon.conf").display()),
                format!("--pidfile={}", d.join("carbon.pid").display()),
                "--nodaemon".into(),
                "start".into(),
            ];
            // carbon writes its own pid file (and refuses to start over one).
            procs::spawn_daemon("carbon-cache", &args, &[], &d.join("carbon.out"))?;
        }
        let ports = [st.ports.carbon, st.ports.carbon_query];
        if !super::poll(Duration::from_secs(30), || {
            self.carbon_pid().is_some() && ports.iter().all(|&p| super::ports::in_use(p))
        }) {
            return Err(Error::Failed(format!(
                "carbon-cache did not open its ports\n{}",
                procs::tail(&d.join("carbon.out"), 15)
            )));
        }
        self.log(&format!(
            "carbon-cache plaintext on 127.0.0.1:{} (pid {})",
            st.ports.carbon,
            self.carbon_pid().unwrap_or(0)
        ));

        let env = [
            ("PYTHONPATH", d.display().to_string()),
            ("GRAPHITE_SETTINGS_MODULE", SETTINGS_MODULE.to_string()),
            ("DJANGO_SETTINGS_MODULE", "graphite.settings".to_string()),
        ];
        // graphite-web's own tables (sessions, users): once per bed, a few seconds. A marker
        // written after a successful migrate tells a complete database from one a killed or
        // out-of-space `up` left half-made, which is removed and made again.
        let migrated = d.join("graphite.db.migrated");
        if !migrated.exists() {
            let _ = std::fs::remove_file(d.join("graphite.db"));
            let mut c = Command::new("graphite-manage");
            c.args(["migrate", "--run-syncdb", "-v0"]);
            for (k, v) in &env {
                c.env(k, v);
            }
            procs::output(&mut c, "graphite-manage migrate")?;
            std::fs::write(&migrated, b"")
                .map_err(|e| Error::Failed(format!("{}: {e}", migrated.display())))?;
        }
        if self.graphite_web_pid(st).is_none() {
            self.port_free("graphite-web", st.ports.graphite_web)?;
            let args = vec![
                "runserver".into(),
                format!("127.0.0.1:{}", st.ports.graphite_web),
                "--noreload".into(),
            ];
            let pid =
                procs::spawn_daemon("graphite-manage", &args, &env, &d.join("graphite-web.log"))?;
            procs::write_pid(&d.join("graphite-web.pid"), pid)?;
        }
        let url = format!(
            "http://127.0.0.1:{}/metrics/find?query=*",
            st.ports.graphite_web
        );
        if !super::poll(Duration::from_secs(60), || http_ok(&url)) {
            return Err(Error::Failed(format!(
                "graphite-web not answering on 127.0.0.1:{}\n{}",
                st.ports.graphite_web,
                procs::tail(&d.join("graphite-web.log"), 15)
            )));
        }
        self.log(&format!(
            "graphite-web on http://127.0.0.1:{} (pid {})",
            st.ports.graphite_web,
            self.graphite_web_pid(st).unwrap_or(0)
        ));
        Ok(())
    }
}
