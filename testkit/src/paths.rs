//! Where things are: the workspace root, the cargo target dir, and the workspace's built
//! binaries (built on first use when a test of another crate needs one).

use std::path::{Path, PathBuf};
use std::process::Command;

/// The workspace root (the directory holding `Cargo.lock`, `ci/`, `fixtures/`).
pub fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("testkit lives in the workspace")
        .to_path_buf()
}

/// The cargo target directory (`CARGO_TARGET_DIR` or `<workspace>/target`).
pub fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace().join("target"))
}

/// The fixture service's source (`fixtures/service`).
pub fn fixture_service() -> PathBuf {
    workspace().join("fixtures/service")
}

/// A workspace binary (`builder`, `applier`, `schema-guard`, `testbed`) of the debug
/// profile, built with `cargo build -p <package>` when it is not there yet. Tests of the
/// binary's own crate should prefer `env!("CARGO_BIN_EXE_<name>")`.
pub fn bin(name: &str) -> PathBuf {
    let path = target_dir().join("debug").join(name);
    if !path.exists() {
        let package = if name == "testbed" { "testkit" } else { name };
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let st = Command::new(cargo)
            .args(["build", "-q", "-p", package, "--bin", name])
            .current_dir(workspace())
            .status()
            .expect("running cargo build");
        assert!(st.success(), "cargo build -p {package} --bin {name} failed");
    }
    path
}

/// A scratch directory under the target dir that outlives the test process (for what a
/// `static` builds once per test binary).
pub fn kept_tempdir(prefix: &str) -> tempfile::TempDir {
    let base = target_dir().join("tmp");
    std::fs::create_dir_all(&base).expect("creating target/tmp");
    tempfile::Builder::new()
        .prefix(prefix)
        .tempdir_in(base)
        .expect("creating a temp dir")
}

/// Removes everything inside `dir`, keeping `dir` itself (a bed target's root between runs);
/// a `dir` that does not exist is left so. Best effort: what cannot be removed stays.
pub fn empty_dir(dir: &Path) {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return;
    };
    for e in rd.flatten() {
        let p = e.path();
        let _ = if p.is_dir() && !p.is_symlink() {
            std::fs::remove_dir_all(&p)
        } else {
            std::fs::remove_file(&p)
        };
    }
}
