//! Reading a commit straight from git objects: no checkout, no filters.
//!
//! The commit's tree (or one subdirectory of it, for a service that lives inside a larger
//! repository) is walked and every blob read from the object database, so `.gitattributes`
//! filters, the working tree and the index never affect the artifact. Git modes map to layer
//! entries: `100644` -> file, `100755` -> executable file, `120000` -> symlink whose target is
//! the blob's content, tree -> directory. Submodules (`160000`, commit entries) are skipped with
//! a warning: their content is not in this repository's objects.

use artifact::manifest::SourceInfo;
use artifact::pack::{PackData, PackEntry, PackKind};
use git2::{ObjectType, Repository, TreeWalkMode, TreeWalkResult};
use std::path::Path;

use crate::Error;

/// A commit's tree as layer entries, with what the manifest records about it.
#[derive(Debug)]
pub struct SourceTree {
    pub info: SourceInfo,
    /// Every entry, in git's tree order (the packer sorts).
    pub entries: Vec<PackEntry>,
    /// Paths of submodules that were skipped.
    pub skipped_submodules: Vec<String>,
    /// Total bytes of file content.
    pub bytes: u64,
}

impl SourceTree {
    /// The content of the regular file at `path` (relative to the packed root), if any.
    pub fn file(&self, path: &str) -> Option<&[u8]> {
        self.entries.iter().find_map(|e| match &e.kind {
            PackKind::File {
                data: PackData::Bytes(b),
                ..
            } if e.path == path => Some(&b[..]),
            _ => None,
        })
    }
}

/// Resolves `rev` in the repository at `repo` to a full commit id.
pub fn resolve_rev(repo: &Path, rev: &str) -> Result<String, Error> {
    let r = open(repo)?;
    let commit = peel(&r, rev)?;
    Ok(commit.id().to_string())
}

fn open(repo: &Path) -> Result<Repository, Error> {
    Repository::open(repo).map_err(|e| Error::git(format!("opening {}", repo.display()), e))
}

fn peel<'r>(r: &'r Repository, rev: &str) -> Result<git2::Commit<'r>, Error> {
    r.revparse_single(rev)
        .and_then(|o| o.peel_to_commit())
        .map_err(|e| Error::git(format!("resolving {rev:?} to a commit"), e))
}

/// Reads the commit `rev` of the repository at `repo`. With `subdir`, only that directory of
/// the commit's tree is read, and it becomes the root of the entries.
pub fn read_commit(repo: &Path, rev: &str, subdir: Option<&str>) -> Result<SourceTree, Error> {
    let r = open(repo)?;
    let commit = peel(&r, rev)?;
    let commit_id = commit.id().to_string();
    let root = commit
        .tree()
        .map_err(|e| Error::git(format!("reading the tree of {commit_id}"), e))?;
    let tree = match subdir
        .map(|s| s.trim_matches('/'))
        .filter(|s| !s.is_empty())
    {
        None => root,
        Some(dir) => {
            let entry = root.get_path(Path::new(dir)).map_err(|e| {
                Error::git(
                    format!("finding directory {dir:?} in commit {commit_id}"),
                    e,
                )
            })?;
            if entry.kind() != Some(ObjectType::Tree) {
                return Err(Error::Source(format!(
                    "{dir:?} is not a directory in commit {commit_id}"
                )));
            }
            r.find_tree(entry.id())
                .map_err(|e| Error::git(format!("reading tree {dir:?}"), e))?
        }
    };

    let mut entries = Vec::new();
    let mut skipped = Vec::new();
    let mut bytes = 0u64;
    let mut failure: Option<Error> = None;
    tree.walk(TreeWalkMode::PreOrder, |parent, entry| {
        let name = match entry.name() {
            Some(n) => n,
            None => {
                failure = Some(Error::Source(format!(
                    "path {parent}{} is not UTF-8",
                    String::from_utf8_lossy(entry.name_bytes())
                )));
                return TreeWalkResult::Abort;
            }
        };
        let path = format!("{parent}{name}");
        let mode = entry.filemode();
        let kind = match entry.kind() {
            Some(ObjectType::Tree) => PackKind::Dir,
            Some(ObjectType::Commit) => {
                skipped.push(path);
                return TreeWalkResult::Skip;
            }
            Some(ObjectType::Blob) => {
                let blob = match r.find_blob(entry.id()) {
                    Ok(b) => b,
                    Err(e) => {
                        failure = Some(Error::git(format!("reading blob {path}"), e));
                        return TreeWalkResult::Abort;
                    }
                };
                if mode == 0o120000 {
                    match std::str::from_utf8(blob.content()) {
                        Ok(t) => PackKind::Symlink {
                            target: t.to_string(),
                        },
                        Err(_) => {
                            failure = Some(Error::Source(format!(
                                "symlink {path} has a non-UTF-8 target"
                            )));
                            return TreeWalkResult::Abort;
                        }
                    }
                } else {
                    bytes += blob.size() as u64;
                    PackKind::File {
                        data: PackData::Bytes(blob.content().to_vec()),
                        executable: mode & 0o111 != 0,
                    }
                }
            }
            other => {
                failure = Some(Error::Source(format!(
                    "unexpected object {other:?} at {path}"
                )));
                return TreeWalkResult::Abort;
            }
        };
        entries.push(PackEntry { path, kind });
        TreeWalkResult::Ok
    })
    .or_else(|e| if failure.is_some() { Ok(()) } else { Err(e) })
    .map_err(|e| Error::git(format!("walking the tree of {commit_id}"), e))?;
    if let Some(f) = failure {
        return Err(f);
    }

    let author = commit.author();
    let info = SourceInfo {
        commit: commit_id,
        tree: tree.id().to_string(),
        commit_time: commit.committer().when().seconds(),
        author: format!(
            "{} <{}>",
            String::from_utf8_lossy(author.name_bytes()),
            String::from_utf8_lossy(author.email_bytes())
        ),
        subject: commit.summary().map(str::to_string).unwrap_or_default(),
    };
    Ok(SourceTree {
        info,
        entries,
        skipped_submodules: skipped,
        bytes,
    })
}
