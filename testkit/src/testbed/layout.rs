//! Where the bed keeps things (`<state dir>/testbed/...`) and the ports it chose at its first
//! `up` (`state.json`), so later commands find the same daemons on the same ports.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::Error;

/// Paths of one bed.
#[derive(Clone, Debug)]
pub struct Layout {
    /// The `ci/` state dir the bed lives in (shared with `ci/s3-server`).
    pub state_root: PathBuf,
    /// `<state_root>/testbed`.
    pub dir: PathBuf,
}

impl Layout {
    pub fn new(state_root: &Path) -> Layout {
        Layout {
            state_root: state_root.to_path_buf(),
            dir: state_root.join("testbed"),
        }
    }

    /// The layout of the bed in `dir` (a `.../testbed` directory).
    pub fn of_bed(dir: &Path) -> Layout {
        Layout {
            state_root: dir.parent().unwrap_or(Path::new("/")).to_path_buf(),
            dir: dir.to_path_buf(),
        }
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.join(rel)
    }

    pub fn host_dir(&self, name: &str) -> PathBuf {
        self.dir.join("hosts").join(name)
    }

    pub fn state_file(&self) -> PathBuf {
        self.path("state.json")
    }

    /// The state written by the first `up`, if any.
    pub fn load_state(&self) -> Result<Option<State>, Error> {
        let f = self.state_file();
        match std::fs::read(&f) {
            Ok(b) => serde_json::from_slice(&b).map(Some).map_err(|e| {
                Error::Failed(format!("{}: {e} (ci/testbed down --purge)", f.display()))
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Error::Failed(format!("{}: {e}", f.display()))),
        }
    }

    pub fn save_state(&self, s: &State) -> Result<(), Error> {
        write_atomic(&self.state_file(), &serde_json::to_vec_pretty(s).unwrap())
    }
}

/// What the first `up` chose: host count, login user, ports.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct State {
    pub hosts: usize,
    pub user: String,
    pub ports: Ports,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Ports {
    /// Per host, t1 first.
    pub ssh: Vec<u16>,
    pub service: Vec<u16>,
    pub haproxy: u16,
    pub prometheus: u16,
    pub carbon: u16,
    pub carbon_pickle: u16,
    pub carbon_query: u16,
    pub graphite_web: u16,
    pub etcd_client: u16,
    pub etcd_peer: u16,
}

impl Ports {
    /// Every port, for claims and checks.
    pub fn all(&self) -> Vec<u16> {
        let mut v: Vec<u16> = self.ssh.iter().chain(&self.service).copied().collect();
        v.extend([
            self.haproxy,
            self.prometheus,
            self.carbon,
            self.carbon_pickle,
            self.carbon_query,
            self.graphite_web,
            self.etcd_client,
            self.etcd_peer,
        ]);
        v
    }
}

impl State {
    pub fn host_names(&self) -> Vec<String> {
        (1..=self.hosts).map(|i| format!("t{i}")).collect()
    }

    /// `tN` -> N-1, checked against the bed's host count.
    pub fn host_index(&self, name: &str) -> Result<usize, Error> {
        let i: usize = name
            .strip_prefix('t')
            .and_then(|n| n.parse().ok())
            .filter(|i| (1..=self.hosts).contains(i))
            .ok_or_else(|| {
                Error::Usage(format!(
                    "unknown host '{name}' (the bed has t1..t{})",
                    self.hosts
                ))
            })?;
        Ok(i - 1)
    }
}

/// Writes `path` through a temp file and a rename.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), Error> {
    let tmp = path.with_extension("tmp~");
    std::fs::write(&tmp, bytes)
        .and_then(|()| std::fs::rename(&tmp, path))
        .map_err(|e| Error::Failed(format!("writing {}: {e}", path.display())))
}

/// Writes `path` (atomically) unless it already holds `bytes`; true if it changed.
pub fn write_if_changed(path: &Path, bytes: &[u8]) -> Result<bool, Error> {
    if std::fs::read(path).is_ok_and(|have| have == bytes) {
        return Ok(false);
    }
    write_atomic(path, bytes).map(|()| true)
}
