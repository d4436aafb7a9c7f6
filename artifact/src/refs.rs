//! Ref records: the tags and branches that pointed at a commit when the builder built it, so
//! a deploy can name `v1.4.2` or `main` without a git repository at hand.
//!
//! ```text
//! refs/tags/<name>       write-once: a tag names one commit forever; a moved tag is refused
//! refs/branches/<name>   compare-and-swap: the newest built commit, with the earlier ones
//! ```
//!
//! `/` in a name is stored as `~` ([`RefName::key_segment`]). A branch record only moves
//! forward: a late build of a commit the branch already passed leaves it where it is
//! ([`BranchUpdate::Stale`]); a history rewrite (neither commit descends from the other)
//! moves it and says so ([`BranchUpdate::Rewound`]). Every record read back is checked
//! against its key and its fields parsed into validated types.

use model::names::{CommitId, RefName};
use serde::{Deserialize, Serialize};

use crate::Digest;
use crate::keys;
use crate::store::{PutBody, PutOutcome, Store, StoreError};

/// Version of the ref record document.
pub const REF_FORMAT: u32 = 1;
/// Earlier commits a branch record keeps.
pub const HISTORY: usize = 50;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RefKind {
    Tag,
    Branch,
}

impl RefKind {
    pub fn as_str(self) -> &'static str {
        match self {
            RefKind::Tag => "tag",
            RefKind::Branch => "branch",
        }
    }
}

/// One commit a ref pointed at, and its artifact.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RefEntry {
    pub commit: CommitId,
    pub manifest: Digest,
    /// When the builder recorded it (RFC 3339).
    pub at: String,
}

/// `refs/tags/<name>` or `refs/branches/<name>`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RefRecord {
    pub format: u32,
    pub kind: RefKind,
    pub name: RefName,
    /// The commit it names now.
    pub head: RefEntry,
    /// Branches: the commits it pointed at before, newest first (at most [`HISTORY`]).
    #[serde(default)]
    pub history: Vec<RefEntry>,
}

#[derive(Debug, thiserror::Error)]
pub enum RefError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("{key}: not a valid ref record: {detail}")]
    Corrupt { key: String, detail: String },
    #[error(
        "tag {name} was recorded for commit {recorded}; refusing to move it to {new} (tags are write-once: make a new tag)"
    )]
    TagMoved {
        name: RefName,
        recorded: CommitId,
        new: CommitId,
    },
    #[error("{key} kept changing concurrently; gave up")]
    Contended { key: String },
}

/// What recording a branch did.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "update", rename_all = "snake_case")]
pub enum BranchUpdate {
    Created,
    /// Already at this commit.
    Unchanged,
    /// Moved forward from `from`.
    Advanced {
        from: CommitId,
    },
    /// Left at `newer`, a descendant of the commit built (a late build of an older commit).
    Stale {
        newer: CommitId,
    },
    /// Moved from `from`, which is not an ancestor (history was rewritten).
    Rewound {
        from: CommitId,
    },
}

pub fn key(kind: RefKind, name: &RefName) -> String {
    match kind {
        RefKind::Tag => keys::tag(name),
        RefKind::Branch => keys::branch(name),
    }
}

fn entry(commit: &CommitId, manifest: &Digest, at: &str) -> RefEntry {
    RefEntry {
        commit: commit.clone(),
        manifest: *manifest,
        at: at.to_string(),
    }
}

/// Records a tag, once: the same commit again is `AlreadyExists`, another commit is
/// [`RefError::TagMoved`].
pub fn record_tag(
    store: &dyn Store,
    name: &RefName,
    commit: &CommitId,
    manifest: &Digest,
    at: &str,
) -> Result<PutOutcome, RefError> {
    let rec = RefRecord {
        format: REF_FORMAT,
        kind: RefKind::Tag,
        name: name.clone(),
        head: entry(commit, manifest, at),
        history: vec![],
    };
    let k = key(RefKind::Tag, name);
    match store.put_if_absent(&k, PutBody::Bytes(encode(&rec)), None)? {
        PutOutcome::Created => Ok(PutOutcome::Created),
        PutOutcome::AlreadyExists => {
            let (old, _) = read_at(store, RefKind::Tag, name)?
                .ok_or_else(|| RefError::Contended { key: k.clone() })?;
            if old.head.commit == *commit {
                Ok(PutOutcome::AlreadyExists)
            } else {
                Err(RefError::TagMoved {
                    name: name.clone(),
                    recorded: old.head.commit,
                    new: commit.clone(),
                })
            }
        }
    }
}

/// Records that branch `name` is at `commit`, by compare-and-swap. `is_ancestor(a, b)` says
/// whether `a` is an ancestor of `b` (`None`: unknown, e.g. a commit not in the repository).
pub fn record_branch(
    store: &dyn Store,
    name: &RefName,
    commit: &CommitId,
    manifest: &Digest,
    at: &str,
    is_ancestor: &dyn Fn(&CommitId, &CommitId) -> Option<bool>,
) -> Result<BranchUpdate, RefError> {
    let k = key(RefKind::Branch, name);
    for _ in 0..10 {
        let current = read_at(store, RefKind::Branch, name)?;
        let (rec, update, etag) = match current {
            None => (
                RefRecord {
                    format: REF_FORMAT,
                    kind: RefKind::Branch,
                    name: name.clone(),
                    head: entry(commit, manifest, at),
                    history: vec![],
                },
                BranchUpdate::Created,
                None,
            ),
            Some((old, _)) if old.head.commit == *commit => return Ok(BranchUpdate::Unchanged),
            Some((old, etag)) => {
                let from = old.head.commit.clone();
                let update = match is_ancestor(&from, commit) {
                    Some(true) => BranchUpdate::Advanced { from },
                    _ if is_ancestor(commit, &from) == Some(true) => {
                        return Ok(BranchUpdate::Stale { newer: from });
                    }
                    _ => BranchUpdate::Rewound { from },
                };
                let mut history = vec![old.head];
                history.extend(old.history);
                history.truncate(HISTORY);
                (
                    RefRecord {
                        format: REF_FORMAT,
                        kind: RefKind::Branch,
                        name: name.clone(),
                        head: entry(commit, manifest, at),
                        history,
                    },
                    update,
                    Some(etag),
                )
            }
        };
        match store.put_cas(&k, &encode(&rec), etag.as_ref()) {
            Ok(_) => return Ok(update),
            Err(StoreError::Conflict { .. }) => continue,
            Err(e) => return Err(e.into()),
        }
    }
    Err(RefError::Contended { key: k })
}

fn encode(r: &RefRecord) -> Vec<u8> {
    serde_json::to_vec_pretty(r).expect("ref record serialises")
}

/// Reads and checks a ref record.
pub fn read(
    store: &dyn Store,
    kind: RefKind,
    name: &RefName,
) -> Result<Option<RefRecord>, RefError> {
    Ok(read_at(store, kind, name)?.map(|(r, _)| r))
}

fn read_at(
    store: &dyn Store,
    kind: RefKind,
    name: &RefName,
) -> Result<Option<(RefRecord, crate::store::ETag)>, RefError> {
    let k = key(kind, name);
    let (bytes, meta) = match store.get_bytes(&k) {
        Ok(x) => x,
        Err(e) if e.is_not_found() => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    let corrupt = |detail: String| RefError::Corrupt {
        key: k.clone(),
        detail,
    };
    let r: RefRecord = serde_json::from_slice(&bytes).map_err(|e| corrupt(e.to_string()))?;
    if r.format != REF_FORMAT {
        return Err(corrupt(format!(
            "format {} (this tool reads {REF_FORMAT})",
            r.format
        )));
    }
    if r.kind != kind || r.name != *name {
        return Err(corrupt(format!("it says {} {}", r.kind.as_str(), r.name)));
    }
    Ok(Some((r, meta.etag)))
}

/// The names of every recorded ref of a kind, sorted.
pub fn list(store: &dyn Store, kind: RefKind) -> Result<Vec<RefName>, RefError> {
    let prefix = match kind {
        RefKind::Tag => keys::TAGS_PREFIX,
        RefKind::Branch => keys::BRANCHES_PREFIX,
    };
    let mut out = Vec::new();
    for m in store.list(prefix)? {
        let seg = &m.key[prefix.len()..];
        let name = RefName::from_key_segment(seg).map_err(|e| RefError::Corrupt {
            key: m.key.clone(),
            detail: e.to_string(),
        })?;
        out.push(name);
    }
    out.sort();
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::fs::FsStore;

    fn c(ch: char) -> CommitId {
        CommitId::parse(&ch.to_string().repeat(40)).unwrap()
    }

    #[test]
    fn tags_are_write_once_and_branches_move_forward_only() {
        let d = tempfile::tempdir().unwrap();
        let s = FsStore::open(d.path()).unwrap();
        let m = Digest::of(b"m");
        let v = RefName::parse("release/v1").unwrap();
        assert_eq!(
            record_tag(&s, &v, &c('a'), &m, "t").unwrap(),
            PutOutcome::Created
        );
        assert_eq!(
            record_tag(&s, &v, &c('a'), &m, "t").unwrap(),
            PutOutcome::AlreadyExists
        );
        let e = record_tag(&s, &v, &c('b'), &m, "t").unwrap_err();
        assert!(matches!(e, RefError::TagMoved { .. }), "{e}");
        assert_eq!(
            read(&s, RefKind::Tag, &v).unwrap().unwrap().head.commit,
            c('a')
        );

        // a < b < c in history; e is unrelated.
        let order = "abc";
        let anc = |x: &CommitId, y: &CommitId| {
            let (i, j) = (order.find(&x[..1]), order.find(&y[..1]));
            match (i, j) {
                (Some(i), Some(j)) => Some(i < j),
                _ => Some(false),
            }
        };
        let main = RefName::parse("main").unwrap();
        let up = |ch| record_branch(&s, &main, &c(ch), &m, "t", &anc).unwrap();
        assert_eq!(up('a'), BranchUpdate::Created);
        assert_eq!(up('c'), BranchUpdate::Advanced { from: c('a') });
        assert_eq!(up('b'), BranchUpdate::Stale { newer: c('c') });
        assert_eq!(up('c'), BranchUpdate::Unchanged);
        assert_eq!(up('e'), BranchUpdate::Rewound { from: c('c') });
        let r = read(&s, RefKind::Branch, &main).unwrap().unwrap();
        assert_eq!(r.head.commit, c('e'));
        let hist: Vec<_> = r.history.iter().map(|e| e.commit.clone()).collect();
        assert_eq!(hist, [c('c'), c('a')]);
        assert_eq!(list(&s, RefKind::Tag).unwrap(), std::slice::from_ref(&v));
        assert_eq!(
            list(&s, RefKind::Branch).unwrap(),
            std::slice::from_ref(&main)
        );

        // A record under the wrong key is refused.
        let other = RefName::parse("other").unwrap();
        let bytes = s.get_bytes(&key(RefKind::Branch, &main)).unwrap().0;
        s.put_cas(&key(RefKind::Branch, &other), &bytes, None)
            .unwrap();
        assert!(matches!(
            read(&s, RefKind::Branch, &other),
            Err(RefError::Corrupt { .. })
        ));
    }
}
