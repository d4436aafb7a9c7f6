//! The multi-host test bed (docs/testbed.md), as a library the `testbed` binary is a thin
//! front of and tests call directly: `up` starts what is not running (an sshd per target,
//! HAProxy, Prometheus, carbon-cache and graphite-web, etcd with conftool, the S3 server),
//! `down` stops it all, `status` reports each part. Progress goes through [`Ctx::log`];
//! failures are [`Error`]s.

mod etcd;
mod graphite;
mod layout;
mod lb;
mod ports;
mod procs;
mod render;
mod s3;
mod sshd;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::bed::{self, Bed};
pub use layout::{Layout, Ports, State};
pub use ports::Bases;

/// Why a bed command failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The command was asked for something it cannot do (exit 2).
    #[error("{0}")]
    Usage(String),
    /// A part could not be started, stopped or reached (exit 1).
    #[error("{0}")]
    Failed(String),
}

/// What a bed command needs from its surroundings (read from the environment by
/// [`Settings::from_env`]).
#[derive(Clone, Debug)]
pub struct Settings {
    pub state_root: PathBuf,
    /// `ci/` of the checkout (s3-server) and its templates (`ci/testbed.d`).
    pub ci_dir: PathBuf,
    pub templates: PathBuf,
    /// Where downloaded tools are kept between beds (`ci/.cache`).
    pub cache_dir: PathBuf,
    pub claims_dir: PathBuf,
    pub bases: Bases,
    /// `TESTBED_S3` is not `0`.
    pub s3: bool,
    /// `CI=true`: a missing optional part is a failure.
    pub ci: bool,
    /// `PATH` handed to the targets' ssh sessions.
    pub path_env: String,
    /// The Python that makes conftool's venv.
    pub python: String,
}

impl Settings {
    pub fn from_env() -> Result<Settings, Error> {
        let var = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
        let ci_dir = crate::paths::workspace().join("ci");
        let tmp = var("TMPDIR").unwrap_or_else(|| "/tmp".into());
        Ok(Settings {
            state_root: bed::state_root(),
            templates: ci_dir.join("testbed.d"),
            cache_dir: ci_dir.join(".cache"),
            claims_dir: var("TESTBED_PORT_CLAIMS_DIR")
                .map(PathBuf::from)
                .unwrap_or_else(|| Path::new(&tmp).join("restbase-deploy-ci-port-claims")),
            bases: Bases::from_vars(var)?,
            s3: var("TESTBED_S3").as_deref() != Some("0"),
            ci: var("CI").as_deref() == Some("true"),
            path_env: var("PATH").unwrap_or_else(|| "/usr/bin:/bin".into()),
            python: var("TESTBED_PYTHON").unwrap_or_else(|| "python3".into()),
            ci_dir,
        })
    }
}

/// One bed and how to report progress.
#[derive(Clone, Debug)]
pub struct Ctx {
    pub layout: Layout,
    pub settings: Settings,
    pub log: fn(&str),
}

/// One line of `status`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Component {
    pub line: String,
    pub ok: bool,
}

/// Hosts a bed may have.
pub const MAX_HOSTS: usize = 50;

/// The bed in `dir` (settings from the environment, progress to stderr).
pub fn for_bed(dir: &Path) -> Result<Ctx, Error> {
    let mut settings = Settings::from_env()?;
    let layout = Layout::of_bed(dir);
    settings.state_root = layout.state_root.clone();
    Ok(Ctx {
        layout,
        settings,
        log: |m| eprintln!("{m}"),
    })
}

/// `status` of the bed in `dir`.
pub fn status(dir: &Path) -> Result<Vec<Component>, Error> {
    for_bed(dir)?.status()
}

impl Ctx {
    pub fn new(settings: Settings, log: fn(&str)) -> Ctx {
        Ctx {
            layout: Layout::new(&settings.state_root),
            settings,
            log,
        }
    }

    fn log(&self, msg: &str) {
        (self.log)(&format!("testbed: {msg}"))
    }

    fn port_free(&self, what: &str, port: u16) -> Result<(), Error> {
        if ports::in_use(port) {
            return Err(Error::Failed(format!(
                "{what} port {port} is taken by another process"
            )));
        }
        Ok(())
    }

    fn lock(&self) -> Result<procs::Lock, Error> {
        procs::lock(&self.layout.path(".lock"), Duration::from_secs(120))
    }

    fn anything_running(&self, st: Option<&State>) -> bool {
        let hosts = st.map(|s| s.host_names()).unwrap_or_default();
        hosts.iter().any(|h| self.sshd_pid(h).is_some())
            || self.haproxy_pid().is_some()
            || self.prometheus_pid().is_some()
            || self.carbon_pid().is_some()
            || self.etcd_pid().is_some()
            || st.is_some_and(|s| self.graphite_web_pid(s).is_some())
    }

    /// Installs the Debian packages the bed runs, where missing (apt-get, sudo when not root).
    pub fn ensure_packages(&self) -> Result<(), Error> {
        let want: &[(&str, &str)] = &[
            ("/usr/sbin/sshd", "openssh-server"),
            ("ssh", "openssh-client"),
            ("ssh-keygen", "openssh-client"),
            ("haproxy", "haproxy"),
            ("prometheus", "prometheus"),
            ("setsid", "util-linux"),
            // socat: the applier's HAProxy driver over ssh; curl: the self-test.
            ("socat", "socat"),
            ("curl", "curl"),
            ("carbon-cache", "graphite-carbon"),
            ("graphite-manage", "graphite-web"),
            ("etcd", "etcd-server"),
        ];
        let mut need: Vec<&str> = want
            .iter()
            .filter(|(bin, _)| !have_program(bin))
            .map(|(_, pkg)| *pkg)
            .collect();
        if need.contains(&"haproxy") && Path::new("/usr/sbin/haproxy").exists() {
            need.retain(|p| *p != "haproxy");
        }
        need.sort();
        need.dedup();
        if need.is_empty() {
            return Ok(());
        }
        self.log(&format!("installing {} (apt-get)", need.join(" ")));
        let sudo = !rustix::process::getuid().is_root();
        let apt = |args: &[&str]| {
            let mut c = Command::new(if sudo { "sudo" } else { "apt-get" });
            if sudo {
                c.arg("apt-get");
            }
            c.args(args).env("DEBIAN_FRONTEND", "noninteractive");
            c
        };
        procs::output(&mut apt(&["update", "-qq"]), "apt-get update")?;
        let mut install = apt(&["install", "-y", "-qq", "--no-install-recommends"]);
        install.args(&need);
        procs::output(&mut install, "apt-get install").map(drop)
    }

    /// Brings the bed up (`hosts`: None keeps the running bed's count, else 3); returns its
    /// description, also written to `<bed>/testbed.json` and `<bed>/env`.
    pub fn up(&self, hosts: Option<usize>) -> Result<Bed, Error> {
        if let Some(n) = hosts
            && !(1..=MAX_HOSTS).contains(&n)
        {
            return Err(Error::Usage(format!("--hosts must be 1..{MAX_HOSTS}")));
        }
        self.ensure_packages()?;
        std::fs::create_dir_all(&self.layout.dir)
            .map_err(|e| Error::Failed(format!("{}: {e}", self.layout.dir.display())))?;
        use std::os::unix::fs::PermissionsExt;
        let _ = std::fs::set_permissions(&self.layout.dir, std::fs::Permissions::from_mode(0o700));
        let _lock = self.lock()?;
        let old = self.layout.load_state()?;
        let st = match old {
            Some(st) if self.anything_running(Some(&st)) => {
                if let Some(n) = hosts.filter(|&n| n != st.hosts) {
                    return Err(Error::Failed(format!(
                        "the bed is up with {} hosts; run 'ci/testbed down' before asking for {n}",
                        st.hosts
                    )));
                }
                st
            }
            _ => self.fresh_state(hosts.unwrap_or(3))?,
        };
        if rustix::process::getuid().is_root() && !Path::new("/run/sshd").is_dir() {
            let _ = std::fs::create_dir_all("/run/sshd");
        }
        for i in 0..st.hosts {
            self.write_host(&st, i)?;
        }
        self.write_ssh_client(&st)?;
        std::thread::scope(|s| {
            let web = s.spawn(|| self.start_graphite(&st));
            let pool = s.spawn(|| self.start_etcd(&st).and_then(|()| self.start_conftool(&st)));
            let mine = (|| {
                for i in 0..st.hosts {
                    self.start_sshd(&st, i)?;
                }
                self.start_haproxy(&st)?;
                self.start_prometheus(&st)?;
                self.start_s3()
            })();
            let joined = |h: std::thread::ScopedJoinHandle<'_, Result<(), Error>>| {
                h.join()
                    .unwrap_or_else(|_| Err(Error::Failed("a start thread panicked".into())))
            };
            let (web, pool) = (joined(web), joined(pool));
            mine.and(web).and(pool)
        })?;
        let bed = self.describe(&st);
        let json = serde_json::to_vec_pretty(&bed).expect("serialising the bed");
        layout::write_atomic(&self.layout.path("testbed.json"), &json)?;
        let env: String = bed.env_lines().iter().map(|l| format!("{l}\n")).collect();
        layout::write_atomic(&self.layout.path("env"), env.as_bytes())?;
        Ok(bed)
    }

    /// Chooses ports for a bed that is not running, records them, and clears state that
    /// belongs to the old ports (etcd's member is bound to its peer URL).
    fn fresh_state(&self, hosts: usize) -> Result<State, Error> {
        let user = procs::output(Command::new("id").arg("-un"), "id -un")?
            .trim()
            .to_string();
        let b = &self.settings.bases;
        let mut pick = ports::Picker::open(&self.settings.claims_dir, &self.layout.dir)?;
        let mut ssh = Vec::new();
        let mut service = Vec::new();
        for i in 1..=hosts as u16 {
            ssh.push(pick.pick(b.ssh + i)?);
            service.push(pick.pick(b.service + i)?);
        }
        let st = State {
            hosts,
            user,
            ports: Ports {
                ssh,
                service,
                haproxy: pick.pick(b.haproxy)?,
                prometheus: pick.pick(b.prometheus)?,
                carbon: pick.pick(b.graphite)?,
                carbon_pickle: pick.pick(b.graphite + 1)?,
                carbon_query: pick.pick(b.graphite + 2)?,
                graphite_web: pick.pick(b.graphite + 3)?,
                etcd_client: pick.pick(b.etcd)?,
                etcd_peer: pick.pick(b.etcd + 1)?,
            },
        };
        let _ = std::fs::remove_dir_all(self.etcd_data());
        let _ = std::fs::remove_file(self.conftool_dir().join("seeded"));
        self.layout.save_state(&st)?;
        Ok(st)
    }

    /// The description of the bed with state `st`.
    pub fn describe(&self, st: &State) -> Bed {
        let d = &self.layout.dir;
        let p = &st.ports;
        let g = d.join("graphite");
        let c = d.join("conftool");
        Bed {
            format: bed::FORMAT,
            dir: d.clone(),
            ssh: bed::SshClient {
                config: d.join("ssh_config"),
                key: d.join("id_ed25519"),
                known_hosts: d.join("known_hosts"),
                user: st.user.clone(),
            },
            hosts: st
                .host_names()
                .into_iter()
                .enumerate()
                .map(|(i, name)| bed::Target {
                    root: self.layout.host_dir(&name).join("root"),
                    name,
                    address: "127.0.0.1".into(),
                    ssh_port: p.ssh[i],
                    service_port: p.service[i],
                })
                .collect(),
            haproxy: bed::Haproxy {
                port: p.haproxy,
                url: format!("http://127.0.0.1:{}", p.haproxy),
                socket: d.join("haproxy.sock"),
                backend: lb::BACKEND.into(),
                config: d.join("haproxy.cfg"),
            },
            prometheus: bed::Prometheus {
                port: p.prometheus,
                url: format!("http://127.0.0.1:{}", p.prometheus),
                job: lb::BACKEND.into(),
            },
            graphite: bed::Graphite {
                carbon_host: "127.0.0.1".into(),
                carbon_port: p.carbon,
                pickle_port: p.carbon_pickle,
                cache_query_port: p.carbon_query,
                web_port: p.graphite_web,
                url: format!("http://127.0.0.1:{}", p.graphite_web),
                render_url: format!("http://127.0.0.1:{}/render", p.graphite_web),
                whisper_dir: g.join("whisper"),
                resolution_s: graphite::RESOLUTION_S,
            },
            etcd: bed::Etcd {
                client_port: p.etcd_client,
                peer_port: p.etcd_peer,
                url: format!("http://127.0.0.1:{}", p.etcd_client),
                data_dir: self.etcd_data(),
            },
            conftool: bed::Conftool {
                version: etcd::VERSION.into(),
                confctl: self.confctl(),
                config: c.join("config.yaml"),
                schema: c.join("schema.yaml"),
                namespace: etcd::NAMESPACE.into(),
                dc: etcd::DC.into(),
                cluster: etcd::CLUSTER.into(),
                service: etcd::SERVICE.into(),
            },
            s3: self.s3_description(),
        }
    }

    /// The running bed's `export` lines (from `<bed>/env`).
    pub fn env(&self) -> Result<String, Error> {
        let st = self.layout.load_state()?;
        let envf = self.layout.path("env");
        if !envf.exists() || !self.anything_running(st.as_ref()) {
            return Err(Error::Failed("the bed is not up (ci/testbed up)".into()));
        }
        std::fs::read_to_string(&envf).map_err(|e| Error::Failed(e.to_string()))
    }

    /// One line per part; every `ok` only if the whole bed runs.
    pub fn status(&self) -> Result<Vec<Component>, Error> {
        let Some(st) = self.layout.load_state()? else {
            return Ok(vec![Component {
                line: format!("down (no state in {})", self.layout.dir.display()),
                ok: false,
            }]);
        };
        let mut out = Vec::new();
        let mut add = |line: String, ok: bool| out.push(Component { line, ok });
        let run = |pid: Option<i32>| match pid {
            Some(p) => (format!("running pid={p}"), true),
            None => ("stopped".to_string(), false),
        };
        for (i, name) in st.host_names().iter().enumerate() {
            let (w, ok) = run(self.sshd_pid(name));
            let (s, v) = (st.ports.ssh[i], st.ports.service[i]);
            add(format!("{name} sshd {w} ssh_port={s} service_port={v}"), ok);
        }
        let p = &st.ports;
        for (name, pid, port) in [
            ("haproxy", self.haproxy_pid(), p.haproxy),
            ("prometheus", self.prometheus_pid(), p.prometheus),
            ("carbon", self.carbon_pid(), p.carbon),
            ("graphite-web", self.graphite_web_pid(&st), p.graphite_web),
            ("etcd", self.etcd_pid(), p.etcd_client),
        ] {
            let (w, ok) = run(pid);
            add(format!("{name} {w} port={port}"), ok);
        }
        let confctl = self.confctl().exists() && self.conftool_dir().join("seeded").exists();
        add(
            format!(
                "conftool {} version={}",
                if confctl { "ready" } else { "missing" },
                etcd::VERSION
            ),
            confctl,
        );
        match self.s3_status() {
            Some((line, ok)) => add(line, ok),
            None => add("s3 none".into(), true),
        }
        Ok(out)
    }

    /// Stops everything the bed started (and what was started through its ssh sessions);
    /// `purge` also deletes the state dir.
    pub fn down(&self, purge: bool) -> Result<(), Error> {
        if !self.layout.dir.is_dir() {
            self.log("nothing to stop");
            return Ok(());
        }
        let lock = self.lock()?;
        let st = self.layout.load_state()?;
        if let Some(st) = &st {
            for h in st.host_names() {
                self.stop_sshd(&h);
            }
        }
        let pids = procs::bed_processes(&self.layout.dir);
        if !pids.is_empty() {
            self.log(&format!(
                "stopping {} process(es) started through the bed: {pids:?}",
                pids.len()
            ));
            procs::stop_pids(&pids);
        }
        let daemons = [
            ("haproxy", self.haproxy_pid()),
            ("prometheus", self.prometheus_pid()),
            (
                "graphite-web",
                st.as_ref().and_then(|s| self.graphite_web_pid(s)),
            ),
            ("carbon", self.carbon_pid()),
            ("etcd", self.etcd_pid()),
        ];
        for (name, pid) in daemons {
            if let Some(pid) = pid {
                let left = procs::stop_pids(&[pid]);
                if left.is_empty() {
                    self.log(&format!("{name} stopped"));
                } else {
                    self.log(&format!("{name}: could not stop pid {pid}"));
                }
            }
        }
        for f in [
            "haproxy.pid",
            "prometheus.pid",
            "etcd.pid",
            "graphite/carbon.pid",
            "graphite/graphite-web.pid",
            "haproxy.sock",
            "env",
        ] {
            let _ = std::fs::remove_file(self.layout.path(f));
        }
        self.stop_s3();
        ports::drop_claims(&self.settings.claims_dir, &self.layout.dir);
        drop(lock);
        if purge {
            std::fs::remove_dir_all(&self.layout.dir)
                .map_err(|e| Error::Failed(format!("{}: {e}", self.layout.dir.display())))?;
            self.log(&format!("removed {}", self.layout.dir.display()));
        }
        Ok(())
    }

    fn running_state(&self) -> Result<State, Error> {
        self.layout
            .load_state()?
            .ok_or_else(|| Error::Failed("the bed is not up".into()))
    }

    /// Stops target `name`'s sshd only (what runs on it keeps running).
    pub fn stop_host(&self, name: &str) -> Result<(), Error> {
        let st = self.running_state()?;
        st.host_index(name)?;
        self.stop_sshd(name);
        Ok(())
    }

    /// Starts target `name`'s sshd again (same port, same host key).
    pub fn start_host(&self, name: &str) -> Result<(), Error> {
        let st = self.running_state()?;
        let i = st.host_index(name)?;
        self.start_sshd(&st, i)
    }
}

/// Polls `f` every 100 ms until true or `timeout` passed.
fn poll(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + timeout;
    loop {
        if f() {
            return true;
        }
        if Instant::now() >= end {
            return false;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// `GET url` answers 2xx within 2 s.
fn http_ok(url: &str) -> bool {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(Duration::from_secs(2)))
        .build()
        .into();
    agent.get(url).call().is_ok()
}

/// `name` is an executable path, or found on `PATH`.
fn have_program(name: &str) -> bool {
    if name.contains('/') {
        return Path::new(name).exists();
    }
    std::env::var_os("PATH")
        .is_some_and(|path| std::env::split_paths(&path).any(|d| d.join(name).is_file()))
}
