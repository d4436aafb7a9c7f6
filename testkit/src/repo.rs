//! Git repositories made from the fixture service (`fixtures/service`, without its
//! `node_modules`), committed with a fixed identity, and variants of it built with the real
//! `builder` (one commit per variant, each an edit of `deploy/env/test.yaml`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::cmd::run_ok;
use crate::paths::{bin, fixture_service};

/// A git repository holding a copy of `fixtures/service`.
#[derive(Debug)]
pub struct FixtureRepo {
    pub path: PathBuf,
}

impl FixtureRepo {
    /// Copies the fixture to `<dir>/service` and runs `git init` there (branch `main`).
    pub fn new(dir: &Path) -> FixtureRepo {
        FixtureRepo::at(dir.join("service"))
    }

    /// Like [`FixtureRepo::new`], at exactly `path`.
    pub fn at(path: PathBuf) -> FixtureRepo {
        copy_tree(&fixture_service(), &path);
        let r = FixtureRepo { path };
        r.git(&["init", "-q", "-b", "main"]);
        r
    }

    /// Runs git in the repository (fixed identity, no signing); returns trimmed stdout.
    pub fn git(&self, args: &[&str]) -> String {
        run_ok(
            Command::new("git")
                .args([
                    "-c",
                    "user.name=Test",
                    "-c",
                    "user.email=test@example.invalid",
                ])
                .args(["-c", "commit.gpgsign=false"])
                .args(args)
                .current_dir(&self.path),
        )
    }

    /// Replaces the first `from` with `to` in `file` (which must contain it).
    pub fn edit(&self, file: &str, from: &str, to: &str) {
        let p = self.path.join(file);
        let text = std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{file}: {e}"));
        assert!(text.contains(from), "{file} has no {from:?}");
        std::fs::write(&p, text.replacen(from, to, 1)).unwrap();
    }

    /// Commits everything; returns the commit id.
    pub fn commit(&self, message: &str) -> String {
        self.git(&["add", "-A"]);
        self.git(&["commit", "-q", "--allow-empty", "-m", message]);
        self.git(&["rev-parse", "HEAD"])
    }
}

/// Copies a directory tree (regular files and directories; `node_modules` left out).
pub fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap_or_else(|e| panic!("{}: {e}", from.display())) {
        let e = e.unwrap();
        if e.file_name() == "node_modules" {
            continue;
        }
        let ft = e.file_type().unwrap();
        let dst = to.join(e.file_name());
        if ft.is_dir() {
            copy_tree(&e.path(), &dst);
        } else if ft.is_file() {
            std::fs::copy(e.path(), &dst).unwrap();
        }
    }
}

/// One variant of the fixture: `name`, and the edit of `deploy/env/test.yaml` that makes it
/// (the first `from` replaced by `to`, on the unedited file).
pub type Variant<'a> = (&'a str, &'a str, &'a str);

/// Git commit and manifest digest of each built variant.
pub type Builds = BTreeMap<String, (String, String)>;

/// Makes a fixture repository under `dir`, commits one variant after the other and builds
/// each with the real `builder` (`--npm-cache <dir>/npm-cache`); `store_args` adds the store
/// arguments and environment. Returns variant -> (commit, manifest digest).
pub fn build_variants(
    dir: &Path,
    variants: &[Variant<'_>],
    store_args: impl Fn(&mut Command),
) -> Builds {
    let repo = FixtureRepo::at(dir.join("repo"));
    let env_file = "deploy/env/test.yaml";
    let base = std::fs::read_to_string(repo.path.join(env_file)).unwrap();
    let npm_cache = dir.join("npm-cache");
    let builder = bin("builder");
    let mut builds = Builds::new();
    for (name, from, to) in variants {
        assert!(base.contains(from), "{env_file} has no {from:?}");
        std::fs::write(repo.path.join(env_file), base.replacen(from, to, 1)).unwrap();
        let sha = repo.commit(name);
        let mut cmd = Command::new(&builder);
        cmd.args(["build", "--repo"])
            .arg(&repo.path)
            .args(["--rev", &sha, "--npm-cache"])
            .arg(&npm_cache);
        store_args(&mut cmd);
        let out = run_ok(&mut cmd);
        let digest = out.lines().last().unwrap_or_default().trim().to_string();
        assert!(digest.starts_with("sha256:"), "builder printed {out:?}");
        builds.insert(name.to_string(), (sha, digest));
    }
    builds
}

/// Runs git in `dir` with a fixed author, committer and date and no system or user config
/// (commits made this way are byte-identical on every run); returns trimmed stdout.
pub fn git_fixed(dir: &Path, args: &[&str]) -> String {
    run_ok(
        Command::new("git")
            .args(args)
            .current_dir(dir)
            .env("GIT_AUTHOR_NAME", "Test Author")
            .env("GIT_AUTHOR_EMAIL", "author@example.org")
            .env("GIT_COMMITTER_NAME", "Test Committer")
            .env("GIT_COMMITTER_EMAIL", "committer@example.org")
            .env("GIT_AUTHOR_DATE", "2024-05-01T12:00:00Z")
            .env("GIT_COMMITTER_DATE", "2024-05-01T12:00:00Z")
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env("HOME", dir),
    )
}
