//! Naming what to deploy: a manifest digest, a git commit (or a unique prefix of either), a
//! tag or a branch.
//!
//! Tags and branches are looked up in the ref records the builder writes when it builds
//! ([`artifact::refs`]: `refs/tags/<name>`, `refs/branches/<name>`) and, when a repository is
//! at hand (`--repo`), through git. `tag:<name>` and `branch:<name>` name one kind only. A
//! name that means two different commits (a tag and a branch, or a ref and a hash prefix) is
//! refused with every candidate; so is a name that means nothing, with the recorded refs that
//! look like it. A tag that git and the store's record place on different commits has moved
//! and is refused. The commit a ref names is then resolved to its artifact through
//! `commits/<sha>`, like any commit.

use std::path::Path;
use std::process::Command;

use artifact::refs::{self as records, RefError, RefKind};
use artifact::resolve::{self, ResolveError};
use artifact::store::Store;
use artifact::{Digest, keys};
use model::names::{CommitId, RefName};

use crate::records::SourceRef;

/// What a target resolved to.
#[derive(Clone, Debug, PartialEq)]
pub struct Target {
    pub digest: Digest,
    /// Set when the target was a tag or a branch.
    pub source_ref: Option<SourceRef>,
}

#[derive(Debug, thiserror::Error)]
pub enum TargetError {
    /// A digest or commit problem, as the hash resolver reports it.
    #[error(transparent)]
    Resolve(#[from] ResolveError),
    #[error(transparent)]
    Refs(#[from] RefError),
    #[error("{name:?} names nothing: no artifact, tag or branch by that name{}", candidates_line(.candidates))]
    Unknown {
        name: String,
        candidates: Vec<String>,
    },
    #[error("{name:?} is ambiguous: it names {}", .candidates.join("; "))]
    Ambiguous {
        name: String,
        candidates: Vec<String>,
    },
    #[error(
        "tag {name} has moved: the store's record (built) names {recorded}, the repository names {repo}; refusing (a tag must name one commit)"
    )]
    TagMoved {
        name: String,
        recorded: String,
        repo: String,
    },
    #[error("git in {repo}: {detail}")]
    Git { repo: String, detail: String },
}

fn candidates_line(c: &[String]) -> String {
    if c.is_empty() {
        String::new()
    } else {
        format!("; similar: {}", c.join(", "))
    }
}

impl TargetError {
    /// The store records the decision was made on.
    pub fn record(&self, target: &str) -> String {
        match RefName::parse(strip_kind(target).1) {
            Ok(n) => format!("{}, {}", keys::tag(&n), keys::branch(&n)),
            Err(_) => keys::COMMITS_PREFIX.to_string(),
        }
    }
}

fn strip_kind(target: &str) -> (Option<RefKind>, &str) {
    if let Some(n) = target.strip_prefix("tag:") {
        (Some(RefKind::Tag), n)
    } else if let Some(n) = target.strip_prefix("branch:") {
        (Some(RefKind::Branch), n)
    } else {
        (None, target)
    }
}

/// One meaning a name has.
struct Candidate {
    commit: String,
    what: String,
    source_ref: Option<SourceRef>,
}

/// Resolves `target` to an artifact, with the ref it named if it was one.
pub fn resolve_target(
    store: &dyn Store,
    target: &str,
    repo: Option<&Path>,
) -> Result<Target, TargetError> {
    let (only, name) = strip_kind(target);
    if let Some(r) = repo {
        git_check(r)?;
    }
    let mut found: Vec<Candidate> = Vec::new();
    let mut hash: Option<Digest> = None;
    // Hex that names no artifact: said as such, unless a ref by that name exists.
    let mut not_found: Option<ResolveError> = None;
    if only.is_none() {
        match resolve::resolve(store, name) {
            Ok(d) => hash = Some(d),
            Err(e @ ResolveError::NotFound(_)) => not_found = Some(e),
            Err(ResolveError::BadInput(_)) => {}
            Err(e) => return Err(e.into()),
        }
    }
    let ref_name = RefName::parse(name).ok();
    if let Some(n) = &ref_name {
        for kind in [RefKind::Tag, RefKind::Branch] {
            if only.is_some_and(|k| k != kind) {
                continue;
            }
            let recorded = records::read(store, kind, n)?;
            let in_git = match repo {
                Some(r) => git_ref(r, kind, n)?,
                None => None,
            };
            let (commit, via) = match (&recorded, &in_git) {
                (Some(rec), Some(g)) if kind == RefKind::Tag && rec.head.commit.as_str() != g => {
                    return Err(TargetError::TagMoved {
                        name: n.to_string(),
                        recorded: rec.head.commit.to_string(),
                        repo: g.clone(),
                    });
                }
                // A branch in the repository may be ahead of what was built: git says where it is.
                (_, Some(g)) => (g.clone(), "git".to_string()),
                (Some(rec), None) => (rec.head.commit.to_string(), records::key(kind, n)),
                (None, None) => continue,
            };
            found.push(Candidate {
                what: format!("{} {n} (commit {})", kind.as_str(), short(&commit)),
                source_ref: Some(SourceRef {
                    kind: kind.as_str().into(),
                    name: n.to_string(),
                    commit: commit.clone(),
                    via,
                }),
                commit,
            });
        }
    }
    if let Some(d) = hash {
        let m = resolve::load_verified(store, &d)?;
        found.push(Candidate {
            what: format!("artifact {d} (commit {})", short(&m.source.commit)),
            commit: m.source.commit.clone(),
            source_ref: None,
        });
        // The hash itself, unless a ref names another commit.
        if found.iter().all(|c| c.commit == m.source.commit) {
            let source_ref = found.iter().find_map(|c| c.source_ref.clone());
            return Ok(Target {
                digest: d,
                source_ref,
            });
        }
    }
    let mut commits: Vec<&str> = found.iter().map(|c| c.commit.as_str()).collect();
    commits.sort();
    commits.dedup();
    match commits.len() {
        0 if not_found.is_some() => Err(not_found.expect("checked").into()),
        0 => Err(TargetError::Unknown {
            name: target.to_string(),
            candidates: similar(store, name)?,
        }),
        1 => {
            let c = &found[0];
            CommitId::parse(&c.commit).map_err(|e| TargetError::Git {
                repo: repo.map(|r| r.display().to_string()).unwrap_or_default(),
                detail: e.to_string(),
            })?;
            let digest = resolve::resolve(store, &c.commit)?;
            Ok(Target {
                digest,
                source_ref: c.source_ref.clone(),
            })
        }
        _ => Err(TargetError::Ambiguous {
            name: target.to_string(),
            candidates: found
                .iter()
                .map(|c| {
                    let how = match &c.source_ref {
                        Some(r) => format!("`{}:{}`", r.kind, r.name),
                        None => format!("`{}`", c.commit),
                    };
                    format!("{} (give {how})", c.what)
                })
                .collect(),
        }),
    }
}

/// Recorded refs whose names contain `name` or share its first characters (at most 10).
fn similar(store: &dyn Store, name: &str) -> Result<Vec<String>, TargetError> {
    let needle = name.to_ascii_lowercase();
    let head: String = needle.chars().take(2).collect();
    let mut out = Vec::new();
    for kind in [RefKind::Tag, RefKind::Branch] {
        for n in records::list(store, kind)? {
            let l = n.as_str().to_ascii_lowercase();
            if !needle.is_empty()
                && (l.contains(&needle) || needle.contains(&l) || l.starts_with(&head))
            {
                out.push(format!("{}:{n}", kind.as_str()));
            }
        }
    }
    out.truncate(10);
    Ok(out)
}

fn git_check(repo: &Path) -> Result<(), TargetError> {
    let ok = Command::new("git")
        .arg("-C")
        .arg(repo)
        .args(["rev-parse", "--git-dir"])
        .output()
        .map(|o| o.status.success());
    match ok {
        Ok(true) => Ok(()),
        Ok(false) => Err(TargetError::Git {
            repo: repo.display().to_string(),
            detail: "not a git repository".into(),
        }),
        Err(e) => Err(TargetError::Git {
            repo: repo.display().to_string(),
            detail: format!("running git: {e}"),
        }),
    }
}

/// The commit git says `refs/tags/<n>` (peeled) or `refs/heads/<n>` (else
/// `refs/remotes/origin/<n>`) names in `repo`, if it has it.
fn git_ref(repo: &Path, kind: RefKind, n: &RefName) -> Result<Option<String>, TargetError> {
    let fulls: Vec<String> = match kind {
        RefKind::Tag => vec![format!("refs/tags/{n}")],
        RefKind::Branch => vec![
            format!("refs/heads/{n}"),
            format!("refs/remotes/origin/{n}"),
        ],
    };
    for full in fulls {
        let out = Command::new("git")
            .arg("-C")
            .arg(repo)
            .args(["rev-parse", "--verify", "--quiet"])
            .arg(format!("{full}^{{commit}}"))
            .output()
            .map_err(|e| TargetError::Git {
                repo: repo.display().to_string(),
                detail: format!("running git: {e}"),
            })?;
        if out.status.success() {
            let sha = String::from_utf8_lossy(&out.stdout).trim().to_string();
            CommitId::parse(&sha).map_err(|e| TargetError::Git {
                repo: repo.display().to_string(),
                detail: e.to_string(),
            })?;
            return Ok(Some(sha));
        }
    }
    Ok(None)
}

fn short(s: &str) -> &str {
    &s[..s.len().min(12)]
}
