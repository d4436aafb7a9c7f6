//! After a build: records which tags and branches point at the built commit
//! ([`artifact::refs`]), so `applier deploy v1.4.2` and `applier cd` can name them without a
//! repository. The refs come from the repository (`--record-refs`: every local branch and tag
//! whose tip is the commit) and from the caller (`--branch`, `--tag`: what a CI system's
//! variables say, for a detached checkout). A tag already recorded for another commit is
//! refused; a branch only moves forward (see [`artifact::refs::record_branch`]).

use std::path::Path;

use artifact::Digest;
use artifact::refs::{self, BranchUpdate, RefError, RefKind};
use artifact::store::{PutOutcome, Store};
use git2::{Oid, Repository};
use model::names::{CommitId, RefName};
use serde::Serialize;

use crate::Error;

/// Which refs to record.
#[derive(Clone, Debug, Default)]
pub struct RefOptions {
    /// Every local branch and tag whose tip is the commit.
    pub scan: bool,
    pub branches: Vec<RefName>,
    pub tags: Vec<RefName>,
}

impl RefOptions {
    pub fn is_empty(&self) -> bool {
        !self.scan && self.branches.is_empty() && self.tags.is_empty()
    }
}

/// What recording one ref did.
#[derive(Clone, Debug, Serialize)]
pub struct RefReport {
    pub kind: RefKind,
    pub name: RefName,
    /// `created`, `unchanged`, `advanced from <sha>`, `left at newer <sha>`, `rewound from <sha>`.
    pub outcome: String,
}

/// Records the refs of `opts` for `commit` (built to `manifest`) at time `at`.
pub fn record(
    store: &dyn Store,
    repo: &Path,
    commit: &str,
    manifest: &Digest,
    opts: &RefOptions,
    at: &str,
) -> Result<Vec<RefReport>, Error> {
    let commit = CommitId::parse(commit).map_err(|e| Error::Config(e.to_string()))?;
    let git = Repository::open(repo).map_err(|e| Error::git("opening the repository", e))?;
    let (mut branches, mut tags) = (opts.branches.clone(), opts.tags.clone());
    if opts.scan {
        let (b, t) = refs_at(&git, &commit)?;
        branches.extend(b);
        tags.extend(t);
    }
    branches.sort();
    branches.dedup();
    tags.sort();
    tags.dedup();
    let is_ancestor = |a: &CommitId, b: &CommitId| -> Option<bool> {
        let (a, b) = (Oid::from_str(a).ok()?, Oid::from_str(b).ok()?);
        git.graph_descendant_of(b, a).ok()
    };
    let mut out = Vec::new();
    for name in tags {
        let outcome =
            match refs::record_tag(store, &name, &commit, manifest, at).map_err(ref_err)? {
                PutOutcome::Created => "created".to_string(),
                PutOutcome::AlreadyExists => "unchanged".to_string(),
            };
        out.push(RefReport {
            kind: RefKind::Tag,
            name,
            outcome,
        });
    }
    for name in branches {
        let u = refs::record_branch(store, &name, &commit, manifest, at, &is_ancestor)
            .map_err(ref_err)?;
        let outcome = match u {
            BranchUpdate::Created => "created".to_string(),
            BranchUpdate::Unchanged => "unchanged".to_string(),
            BranchUpdate::Advanced { from } => format!("advanced from {}", from.short()),
            BranchUpdate::Stale { newer } => format!("left at newer {}", newer.short()),
            BranchUpdate::Rewound { from } => {
                format!("rewound from {} (history rewritten)", from.short())
            }
        };
        out.push(RefReport {
            kind: RefKind::Branch,
            name,
            outcome,
        });
    }
    Ok(out)
}

fn ref_err(e: RefError) -> Error {
    match e {
        RefError::Store(s) => Error::Store(s),
        RefError::TagMoved { .. } => Error::Config(e.to_string()),
        RefError::Corrupt { key, detail } => Error::Corrupt { key, detail },
        RefError::Contended { .. } => Error::Config(e.to_string()),
    }
}

/// Local branches and tags (annotated ones peeled) whose tip is `commit`.
fn refs_at(git: &Repository, commit: &CommitId) -> Result<(Vec<RefName>, Vec<RefName>), Error> {
    let want = Oid::from_str(commit).map_err(|e| Error::git("commit id", e))?;
    let (mut branches, mut tags) = (Vec::new(), Vec::new());
    for r in git
        .references()
        .map_err(|e| Error::git("listing refs", e))?
    {
        let r = r.map_err(|e| Error::git("reading a ref", e))?;
        let Some(full) = r.name() else { continue };
        let (list, short) = if let Some(s) = full.strip_prefix("refs/heads/") {
            (&mut branches, s)
        } else if let Some(s) = full.strip_prefix("refs/tags/") {
            (&mut tags, s)
        } else {
            continue;
        };
        if r.peel_to_commit().map(|c| c.id()).ok() != Some(want) {
            continue;
        }
        // A name outside the narrowed ref-name rules is left out rather than guessed at.
        if let Ok(n) = RefName::parse(short) {
            list.push(n);
        }
    }
    Ok((branches, tags))
}
