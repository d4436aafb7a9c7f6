//! Port choice at the first `up`: the first free port at or above a base, skipping ports
//! another live bed claimed. Service ports have no listener until a test starts a service,
//! so every bed records its ports as claim files (content: the bed's dir) in a machine-wide
//! directory, under a lock.

use std::collections::BTreeSet;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::Error;
use super::procs;

/// First port tried for each kind; `TESTBED_<KIND>_PORT_BASE` overrides.
#[derive(Clone, Debug)]
pub struct Bases {
    pub ssh: u16,
    pub service: u16,
    pub haproxy: u16,
    pub prometheus: u16,
    pub graphite: u16,
    pub etcd: u16,
}

impl Bases {
    /// The defaults, each overridden by its variable when set (`vars` is the environment).
    pub fn from_vars(var: impl Fn(&str) -> Option<String>) -> Result<Bases, Error> {
        let get = |name: &str, default: u16| -> Result<u16, Error> {
            match var(name) {
                None => Ok(default),
                Some(v) => v
                    .parse()
                    .map_err(|_| Error::Usage(format!("{name}={v} is not a port"))),
            }
        };
        Ok(Bases {
            ssh: get("TESTBED_SSH_PORT_BASE", 17200)?,
            service: get("TESTBED_SERVICE_PORT_BASE", 17230)?,
            haproxy: get("TESTBED_HAPROXY_PORT_BASE", 17290)?,
            prometheus: get("TESTBED_PROMETHEUS_PORT_BASE", 17295)?,
            graphite: get("TESTBED_GRAPHITE_PORT_BASE", 17300)?,
            etcd: get("TESTBED_ETCD_PORT_BASE", 17320)?,
        })
    }
}

/// True if something listens on (or holds) 127.0.0.1:`port`.
pub fn in_use(port: u16) -> bool {
    TcpListener::bind(("127.0.0.1", port)).is_err()
}

/// Picks ports for one bed, holding the claims directory's lock while it lives.
#[derive(Debug)]
pub struct Picker {
    claims: PathBuf,
    bed: PathBuf,
    taken: BTreeSet<u16>,
    _lock: procs::Lock,
}

impl Picker {
    /// Locks `claims` (created world-writable when root, so every user's beds share it) and
    /// drops this bed's old claims.
    pub fn open(claims: &Path, bed: &Path) -> Result<Picker, Error> {
        std::fs::create_dir_all(claims)
            .map_err(|e| Error::Failed(format!("{}: {e}", claims.display())))?;
        if rustix::process::getuid().is_root() {
            use std::os::unix::fs::PermissionsExt;
            let _ = std::fs::set_permissions(claims, std::fs::Permissions::from_mode(0o1777));
        }
        let lock = procs::lock(&claims.join(".lock"), Duration::from_secs(60))?;
        if rustix::process::getuid().is_root() {
            use std::os::unix::fs::PermissionsExt;
            let _ = std::fs::set_permissions(
                claims.join(".lock"),
                std::fs::Permissions::from_mode(0o666),
            );
        }
        drop_claims(claims, bed);
        Ok(Picker {
            claims: claims.to_path_buf(),
            bed: bed.to_path_buf(),
            taken: BTreeSet::new(),
            _lock: lock,
        })
    }

    /// The first port >= `base` that is free, not claimed by another live bed and not yet
    /// handed out; claimed for this bed.
    pub fn pick(&mut self, base: u16) -> Result<u16, Error> {
        let mut p = base;
        loop {
            if !self.taken.contains(&p) && !in_use(p) && !self.claimed_by_other(p) && self.claim(p)
            {
                self.taken.insert(p);
                return Ok(p);
            }
            p = p
                .checked_add(1)
                .filter(|&p| p < 65535)
                .ok_or_else(|| Error::Failed(format!("no free port above {base}")))?;
        }
    }

    fn claimed_by_other(&self, port: u16) -> bool {
        let Ok(owner) = std::fs::read_to_string(self.claims.join(port.to_string())) else {
            return false;
        };
        let owner = PathBuf::from(owner.trim());
        owner != self.bed && owner.is_dir() && bed_live(&owner)
    }

    /// Writes the claim (a stale claim of another user cannot be overwritten: skipped).
    fn claim(&self, port: u16) -> bool {
        std::fs::write(
            self.claims.join(port.to_string()),
            format!("{}\n", self.bed.display()),
        )
        .is_ok()
    }
}

/// Removes the claims of `bed` from `claims`.
pub fn drop_claims(claims: &Path, bed: &Path) {
    let Ok(rd) = std::fs::read_dir(claims) else {
        return;
    };
    for e in rd.flatten() {
        let name = e.file_name();
        if !name.to_string_lossy().bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        if std::fs::read_to_string(e.path()).is_ok_and(|o| Path::new(o.trim()) == bed) {
            let _ = std::fs::remove_file(e.path());
        }
    }
}

/// True if some daemon of the bed in `dir` runs (a pid file naming a live process).
pub fn bed_live(dir: &Path) -> bool {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .collect();
    if let Ok(rd) = std::fs::read_dir(dir.join("hosts")) {
        for h in rd.flatten() {
            files.push(h.path().join("sshd.pid"));
        }
    }
    files
        .iter()
        .filter(|f| f.extension().is_some_and(|x| x == "pid"))
        .filter_map(|f| std::fs::read_to_string(f).ok())
        .filter_map(|t| t.trim().parse::<i32>().ok())
        .any(procs::alive)
}
