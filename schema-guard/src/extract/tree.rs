//! File trees the extractors read: a git revision's tree (read from git objects, no checkout)
//! or a directory on disk.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::{Error, Result};

/// Read-only view of a revision's files, by repository-relative `/`-separated path.
pub trait Tree {
    /// Every regular file path, sorted.
    fn paths(&self) -> Vec<String>;
    /// A file's bytes, if it exists.
    fn read(&self, path: &str) -> Option<Vec<u8>>;
    /// A file as UTF-8 text (lossy), if it exists.
    fn read_text(&self, path: &str) -> Option<String> {
        self.read(path)
            .map(|b| String::from_utf8_lossy(&b).into_owned())
    }
}

/// The tree of one git revision.
pub struct GitTree<'r> {
    repo: &'r git2::Repository,
    files: BTreeMap<String, git2::Oid>,
    /// The resolved commit id.
    pub commit: String,
}

impl std::fmt::Debug for GitTree<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GitTree")
            .field("commit", &self.commit)
            .finish()
    }
}

/// Resolves a revision (branch, tag, sha, `HEAD~1`...) to a commit.
pub fn resolve_commit<'r>(repo: &'r git2::Repository, rev: &str) -> Result<git2::Commit<'r>> {
    let obj = repo
        .revparse_single(rev)
        .map_err(|_| Error::RevNotFound(rev.to_string()))?;
    obj.peel_to_commit()
        .map_err(|_| Error::RevNotFound(rev.to_string()))
}

impl<'r> GitTree<'r> {
    /// Lists the files of `rev` (skipping `node_modules` and hidden directories).
    pub fn open(repo: &'r git2::Repository, rev: &str) -> Result<GitTree<'r>> {
        let commit = resolve_commit(repo, rev)?;
        let tree = commit.tree()?;
        let mut files = BTreeMap::new();
        tree.walk(git2::TreeWalkMode::PreOrder, |dir, entry| {
            let name = entry.name().unwrap_or_default();
            match entry.kind() {
                Some(git2::ObjectType::Tree) if name == "node_modules" || name == ".git" => {
                    git2::TreeWalkResult::Skip
                }
                Some(git2::ObjectType::Blob) => {
                    files.insert(format!("{dir}{name}"), entry.id());
                    git2::TreeWalkResult::Ok
                }
                _ => git2::TreeWalkResult::Ok,
            }
        })?;
        Ok(GitTree {
            repo,
            files,
            commit: commit.id().to_string(),
        })
    }
}

impl Tree for GitTree<'_> {
    fn paths(&self) -> Vec<String> {
        self.files.keys().cloned().collect()
    }
    fn read(&self, path: &str) -> Option<Vec<u8>> {
        let oid = self.files.get(path)?;
        self.repo.find_blob(*oid).ok().map(|b| b.content().to_vec())
    }
}

/// A directory on disk (a checkout, an unpacked release, a fixture tree).
#[derive(Debug)]
pub struct DirTree {
    root: PathBuf,
    files: Vec<String>,
}

impl DirTree {
    pub fn open(root: &Path) -> Result<DirTree> {
        let mut files = Vec::new();
        let mut stack = vec![(root.to_path_buf(), String::new())];
        while let Some((dir, prefix)) = stack.pop() {
            let rd = std::fs::read_dir(&dir).map_err(|e| Error::io(&dir, e))?;
            for entry in rd {
                let entry = entry.map_err(|e| Error::io(&dir, e))?;
                let name = entry.file_name().to_string_lossy().into_owned();
                let ft = entry.file_type().map_err(|e| Error::io(entry.path(), e))?;
                if ft.is_dir() {
                    if name != "node_modules" && name != ".git" {
                        stack.push((entry.path(), format!("{prefix}{name}/")));
                    }
                } else if ft.is_file() {
                    files.push(format!("{prefix}{name}"));
                }
            }
        }
        files.sort();
        Ok(DirTree {
            root: root.to_path_buf(),
            files,
        })
    }
}

impl Tree for DirTree {
    fn paths(&self) -> Vec<String> {
        self.files.clone()
    }
    fn read(&self, path: &str) -> Option<Vec<u8>> {
        std::fs::read(self.root.join(path)).ok()
    }
}

/// Writes every file of a tree under `dest` (for capture runs from a git revision).
pub fn materialise(tree: &dyn Tree, dest: &Path) -> Result<()> {
    for p in tree.paths() {
        let target = dest.join(&p);
        if let Some(parent) = target.parent() {
            std::fs::create_dir_all(parent).map_err(|e| Error::io(parent, e))?;
        }
        let bytes = tree.read(&p).unwrap_or_default();
        std::fs::write(&target, bytes).map_err(|e| Error::io(&target, e))?;
    }
    Ok(())
}
