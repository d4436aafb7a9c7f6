//! The dependency layer: its key, the npm run that resolves it, and its `deps/<key>` record.
//!
//! Key: sha256 over the canonical JSON of [`KeyInputs`]: the layer format version, which file
//! drove resolution (`package-lock.json`, or `package.json` when there is no lockfile) and the
//! sha256 of its bytes, the sha256 of the tree's `.npmrc` (if any), the npm arguments, and the
//! node version, native ABI (`process.versions.modules`), os, arch and libc. A build whose key
//! already has a `deps/<key>` record (and whose layer blob is present) reuses that layer and does
//! not run npm at all.
//!
//! Dependencies on paths inside the tree (`file:vendor/x.tgz`, `file:lib/x`, workspace members)
//! are found in `package.json` and the lockfile ([`local_dependency_paths`]); those files are
//! materialised beside `package.json` for npm, and their digest joins the key
//! (`local_files_digest`, left out of the key's JSON when there are none, so keys of trees
//! without such dependencies are unchanged).
//!
//! The layer packs `node_modules` with mtime 0 for every entry: the layer is shared by every
//! commit with the same key, so its bytes must not depend on which commit built it first.

use std::collections::BTreeSet;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Command;

use artifact::Digest;
use artifact::manifest::Platform;
use artifact::pack::{LayerInfo, PackEntry};
use model::canonical_json;
use serde::{Deserialize, Serialize};

use crate::Error;
use crate::npm_dir::NpmDir;

/// Version of the `deps/<key>` record and of the key derivation.
pub const DEPS_RECORD_FORMAT: u32 = 1;

/// mtime of every entry in a dependency layer.
pub const DEPS_MTIME: u64 = 0;

/// What the local node says about itself; read once per build with `node -p`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeFacts {
    /// `process.versions.node`, e.g. `20.20.2`.
    pub version: String,
    /// `process.versions.modules`, the native module ABI.
    pub abi: String,
    /// `process.platform`.
    pub os: String,
    /// `process.arch`.
    pub arch: String,
    /// `glibc`, `musl` or `unknown`.
    pub libc: String,
}

impl NodeFacts {
    pub fn platform(&self) -> Platform {
        Platform {
            os: self.os.clone(),
            arch: self.arch.clone(),
            libc: self.libc.clone(),
            node_abi: self.abi.clone(),
        }
    }
}

const NODE_FACTS_JS: &str = "(() => { \
  let libc = 'unknown'; \
  if (process.platform === 'linux') { \
    const h = process.report && process.report.getReport().header; \
    libc = h && h.glibcVersionRuntime ? 'glibc' : 'musl'; \
  } \
  return JSON.stringify({ version: process.versions.node, abi: process.versions.modules, \
    os: process.platform, arch: process.arch, libc }); \
})()";

/// Runs `node -p` once to learn the version, ABI and platform.
pub fn node_facts(node: &Path) -> Result<NodeFacts, Error> {
    let out = Command::new(node)
        .arg("-p")
        .arg(NODE_FACTS_JS)
        .output()
        .map_err(|e| Error::Node(format!("running {}: {e}", node.display())))?;
    if !out.status.success() {
        return Err(Error::Node(format!(
            "{} -p failed ({}): {}",
            node.display(),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    serde_json::from_slice(&out.stdout)
        .map_err(|e| Error::Node(format!("unexpected output from {} -p: {e}", node.display())))
}

/// Everything the dependency key is computed over.
#[derive(Clone, Debug, Serialize)]
pub struct KeyInputs {
    pub key_format: u32,
    pub layer_format: u32,
    /// `package-lock.json` or `package.json`.
    pub resolved_from: &'static str,
    /// sha256 of that file's bytes.
    pub resolved_from_digest: Digest,
    /// sha256 of the tree's `.npmrc`, if it has one.
    pub npmrc_digest: Option<Digest>,
    /// Digest of the files of `file:` dependencies and workspace members (path, kind and
    /// content of each), if the tree has any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub local_files_digest: Option<Digest>,
    pub npm_args: Vec<String>,
    pub node_version: String,
    pub node_abi: String,
    pub os: String,
    pub arch: String,
    pub libc: String,
}

/// The files from the source tree that npm needs.
#[derive(Clone, Debug)]
pub struct DepsFiles {
    pub package_json: Vec<u8>,
    pub lockfile: Option<Vec<u8>>,
    pub npmrc: Option<Vec<u8>>,
    /// Entries of the tree that `file:` dependencies and workspace members name
    /// ([`local_dependency_paths`]), materialised beside `package.json` for npm.
    pub local: Vec<PackEntry>,
}

impl KeyInputs {
    pub fn new(files: &DepsFiles, npm_args: &[String], node: &NodeFacts) -> Self {
        let (resolved_from, bytes) = match &files.lockfile {
            Some(l) => ("package-lock.json", &l[..]),
            None => ("package.json", &files.package_json[..]),
        };
        KeyInputs {
            key_format: DEPS_RECORD_FORMAT,
            layer_format: artifact::pack::FORMAT_VERSION,
            resolved_from,
            resolved_from_digest: Digest::of(bytes),
            npmrc_digest: files.npmrc.as_deref().map(Digest::of),
            local_files_digest: local_digest(&files.local),
            npm_args: npm_args.to_vec(),
            node_version: node.version.clone(),
            node_abi: node.abi.clone(),
            os: node.os.clone(),
            arch: node.arch.clone(),
            libc: node.libc.clone(),
        }
    }

    /// The dependency key: 64 hex digits.
    pub fn key(&self) -> String {
        let v = serde_json::to_value(self).expect("key inputs serialise");
        Digest::of(&canonical_json(&v)).hex()
    }
}

/// Digest over the sorted (path, kind, content) of `entries`; `None` when there are none.
fn local_digest(entries: &[PackEntry]) -> Option<Digest> {
    if entries.is_empty() {
        return None;
    }
    let mut sorted: Vec<&PackEntry> = entries.iter().collect();
    sorted.sort_by(|a, b| a.path.cmp(&b.path));
    let mut h = artifact::digest::Hasher::new();
    for e in sorted {
        crate::content::hash_entry(&mut h, e);
    }
    Some(h.finish().0)
}

/// The paths inside the tree that npm reads besides `package.json`: every `file:` spec in
/// the dependency fields of `package.json`, and from the lockfile every `file:` `resolved`
/// and every package that is not under `node_modules/` (linked directories, workspace
/// members). Paths are relative to the tree's root, normalised (no `./`); a path that leaves
/// the tree, or an absolute one, is refused.
pub fn local_dependency_paths(
    package_json: &[u8],
    lockfile: Option<&[u8]>,
) -> Result<BTreeSet<String>, Error> {
    let mut out = BTreeSet::new();
    let pj: serde_json::Value = serde_json::from_slice(package_json)
        .map_err(|e| Error::Config(format!("package.json: {e}")))?;
    for field in [
        "dependencies",
        "devDependencies",
        "optionalDependencies",
        "peerDependencies",
    ] {
        let Some(deps) = pj.get(field).and_then(|d| d.as_object()) else {
            continue;
        };
        for (name, spec) in deps {
            if let Some(p) = spec.as_str().and_then(|s| s.strip_prefix("file:")) {
                out.insert(normalise_local(p, &format!("package.json {field}.{name}"))?);
            }
        }
    }
    if let Some(lock) = lockfile {
        let lj: serde_json::Value = serde_json::from_slice(lock)
            .map_err(|e| Error::Config(format!("package-lock.json: {e}")))?;
        if let Some(pkgs) = lj.get("packages").and_then(|p| p.as_object()) {
            for (key, pkg) in pkgs {
                let resolved = pkg.get("resolved").and_then(|r| r.as_str());
                if let Some(p) = resolved.and_then(|r| r.strip_prefix("file:")) {
                    out.insert(normalise_local(p, &format!("package-lock.json {key:?}"))?);
                }
                let linked = pkg.get("link").and_then(|l| l.as_bool()) == Some(true);
                if linked && let Some(r) = resolved.filter(|r| !r.starts_with("file:")) {
                    out.insert(normalise_local(r, &format!("package-lock.json {key:?}"))?);
                }
                if !key.is_empty() && !key.split('/').any(|s| s == "node_modules") {
                    out.insert(normalise_local(key, &format!("package-lock.json {key:?}"))?);
                }
            }
        }
    }
    Ok(out)
}

fn normalise_local(p: &str, what: &str) -> Result<String, Error> {
    let mut segs: Vec<&str> = Vec::new();
    if p.starts_with('/') || p.starts_with('~') {
        return Err(Error::Config(format!(
            "{what}: file:{p} is outside the service's tree; only paths inside it can be built"
        )));
    }
    for s in p.split('/') {
        match s {
            "" | "." => {}
            ".." => {
                if segs.pop().is_none() {
                    return Err(Error::Config(format!(
                        "{what}: file:{p} is outside the service's tree; only paths inside it can be built"
                    )));
                }
            }
            s => segs.push(s),
        }
    }
    if segs.is_empty() {
        return Err(Error::Config(format!(
            "{what}: file:{p} names the tree itself"
        )));
    }
    Ok(segs.join("/"))
}

/// The entries of `tree` at or below each of `paths`. A path with no entry is an error.
pub fn select_local(tree: &[PackEntry], paths: &BTreeSet<String>) -> Result<Vec<PackEntry>, Error> {
    let mut out = Vec::new();
    for p in paths {
        let below = format!("{p}/");
        let before = out.len();
        out.extend(
            tree.iter()
                .filter(|e| e.path == *p || e.path.starts_with(&below))
                .cloned(),
        );
        if out.len() == before {
            return Err(Error::Config(format!(
                "the dependencies name file:{p}, which is not in the commit's tree"
            )));
        }
    }
    Ok(out)
}

/// The `deps/<key>` record.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DepsRecord {
    pub format: u32,
    pub key: String,
    pub media_type: String,
    pub layer: LayerInfo,
    /// Blob holding the lockfile the layer was resolved from.
    pub lockfile_blob: Digest,
    pub lockfile_generated: bool,
    pub node_version: String,
    pub npm_version: String,
    pub npm_args: Vec<String>,
    pub native: bool,
    pub platform: Platform,
}

/// How to run npm.
#[derive(Clone, Debug)]
pub struct NpmOptions {
    /// The npm program (`npm`).
    pub program: PathBuf,
    /// A cache directory shared between builds (`--npm-cache`); `None` for a fresh one.
    pub shared_cache: Option<PathBuf>,
}

/// The arguments recorded in the manifest and hashed into the key: the `npm ci` command line
/// without the cache location (which varies between machines and does not change the result).
pub fn recorded_npm_args(user_args: &[String]) -> Vec<String> {
    let mut v: Vec<String> = ["ci", "--no-audit", "--no-fund"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    v.extend(user_args.iter().cloned());
    v
}

/// Normalises user-given npm arguments (`build.npm_args`, `--npm-arg`): a leading `ci` (the
/// command the builder always runs) is dropped; any other leading command word is refused,
/// since `npm install` against a lockfile could rewrite it and the build would not be
/// reproducible.
pub fn user_npm_args(args: &[String]) -> Result<Vec<String>, Error> {
    match args.first().map(String::as_str) {
        Some("ci") => Ok(args[1..].to_vec()),
        Some(cmd) if !cmd.starts_with('-') => Err(Error::Config(format!(
            "npm arguments start with the command {cmd:?}; the builder always runs `npm ci` \
             (after `npm install --package-lock-only` when there is no lockfile): give only options"
        ))),
        _ => Ok(args.to_vec()),
    }
}

/// What an npm run produced.
#[derive(Debug)]
pub struct Installed {
    /// The `node_modules` directory (created empty if npm made none).
    pub node_modules: PathBuf,
    /// The lockfile used: the tree's own, or the one npm generated.
    pub lockfile: Vec<u8>,
    pub lockfile_generated: bool,
    pub npm_version: String,
}

/// Lines of npm's output kept in an error: enough for npm's own error block.
const NPM_ERROR_LINES: usize = 40;

fn run_npm(npm: &NpmOptions, dir: &NpmDir, step: &str, args: &[OsString]) -> Result<String, Error> {
    let out = Command::new(&npm.program)
        .args(args)
        .current_dir(dir.project())
        .env("npm_config_update_notifier", "false")
        .env("npm_config_progress", "false")
        .stdin(std::process::Stdio::null())
        .output()
        .map_err(|e| Error::Npm {
            step: step.to_string(),
            status: format!("could not run {}: {e}", npm.program.display()),
            output: String::new(),
            log: None,
        })?;
    if out.status.success() {
        return Ok(String::from_utf8_lossy(&out.stdout).trim().to_string());
    }
    // npm names its log under --logs-dir, which goes with the build directory: keep a copy.
    let log = newest_file(&dir.logs()).and_then(|src| {
        std::fs::copy(&src, dir.failed_log())
            .ok()
            .map(|_| (src, dir.failed_log().to_path_buf()))
    });
    let mut text = String::from_utf8_lossy(&out.stderr).into_owned();
    text.push_str(&String::from_utf8_lossy(&out.stdout));
    if let Some((src, kept)) = &log {
        text = text.replace(&*src.to_string_lossy(), &kept.to_string_lossy());
    }
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    Err(Error::Npm {
        step: step.to_string(),
        status: out.status.to_string(),
        output: lines[lines.len().saturating_sub(NPM_ERROR_LINES)..].join("\n"),
        log: log.map(|(_, kept)| kept),
    })
}

fn newest_file(dir: &Path) -> Option<PathBuf> {
    std::fs::read_dir(dir)
        .ok()?
        .filter_map(|e| e.ok())
        .filter_map(|e| Some((e.metadata().ok()?.modified().ok()?, e.path())))
        .max()
        .map(|(_, p)| p)
}

/// Materialises `files` into the project directory of `dir` and runs npm there: `npm ci`
/// with a lockfile; without one, `npm install --package-lock-only` first to produce the
/// lockfile, then `npm ci`.
pub fn install(
    dir: &NpmDir,
    files: &DepsFiles,
    user_args: &[String],
    npm: &NpmOptions,
) -> Result<Installed, Error> {
    let project = dir.project();
    let write = |name: &str, data: &[u8]| {
        std::fs::write(project.join(name), data)
            .map_err(|e| Error::io(format!("writing {name} into {}", project.display()), e))
    };
    dir.write_entries(&files.local)?;
    write("package.json", &files.package_json)?;
    if let Some(l) = &files.lockfile {
        write("package-lock.json", l)?;
    }
    if let Some(n) = &files.npmrc {
        write(".npmrc", n)?;
    }
    dir.set_cache(npm.shared_cache.as_deref())?;
    let npm_version = run_npm(npm, dir, "--version", &["--version".into()])?;
    let common: Vec<OsString> = vec![
        "--no-audit".into(),
        "--no-fund".into(),
        "--cache".into(),
        dir.cache().into_os_string(),
        "--logs-dir".into(),
        dir.logs().into_os_string(),
    ];
    let user: Vec<OsString> = user_args.iter().map(OsString::from).collect();

    let generated = files.lockfile.is_none();
    if generated {
        let mut args: Vec<OsString> = vec!["install".into(), "--package-lock-only".into()];
        args.extend(common.iter().cloned());
        args.extend(user.iter().cloned());
        run_npm(npm, dir, "install --package-lock-only", &args)?;
    }
    let mut args: Vec<OsString> = vec!["ci".into()];
    args.extend(common);
    args.extend(user);
    run_npm(npm, dir, "ci", &args)?;

    let lockfile = std::fs::read(project.join("package-lock.json"))
        .map_err(|e| Error::io("reading the lockfile npm used", e))?;
    let node_modules = project.join("node_modules");
    if !node_modules.exists() {
        std::fs::create_dir(&node_modules)
            .map_err(|e| Error::io("creating an empty node_modules", e))?;
    }
    Ok(Installed {
        node_modules,
        lockfile,
        lockfile_generated: generated,
        npm_version,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use artifact::pack::{PackData, PackKind};

    fn facts() -> NodeFacts {
        NodeFacts {
            version: "20.0.0".into(),
            abi: "115".into(),
            os: "linux".into(),
            arch: "x64".into(),
            libc: "glibc".into(),
        }
    }

    #[test]
    fn npm_args_normalised() {
        let v = |a: &[&str]| a.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            user_npm_args(&v(&["ci", "--omit=dev"])).unwrap(),
            v(&["--omit=dev"])
        );
        assert_eq!(
            user_npm_args(&v(&["--omit=dev"])).unwrap(),
            v(&["--omit=dev"])
        );
        assert!(user_npm_args(&v(&["install"])).is_err());
        assert_eq!(
            recorded_npm_args(&v(&["--omit=dev"])),
            v(&["ci", "--no-audit", "--no-fund", "--omit=dev"])
        );
    }

    #[test]
    fn key_changes_with_each_input() {
        let files = DepsFiles {
            package_json: b"{}".to_vec(),
            lockfile: Some(b"lock".to_vec()),
            npmrc: None,
            local: Vec::new(),
        };
        let args = recorded_npm_args(&[]);
        let base = KeyInputs::new(&files, &args, &facts()).key();
        assert_eq!(base.len(), 64);
        assert_eq!(base, KeyInputs::new(&files, &args, &facts()).key());

        // package.json does not matter when there is a lockfile
        let mut f2 = files.clone();
        f2.package_json = b"{\"x\":1}".to_vec();
        assert_eq!(base, KeyInputs::new(&f2, &args, &facts()).key());

        let mut f3 = files.clone();
        f3.lockfile = Some(b"lock2".to_vec());
        assert_ne!(base, KeyInputs::new(&f3, &args, &facts()).key());
        let mut f4 = files.clone();
        f4.npmrc = Some(b"registry=x".to_vec());
        assert_ne!(base, KeyInputs::new(&f4, &args, &facts()).key());
        assert_ne!(
            base,
            KeyInputs::new(&files, &recorded_npm_args(&["--omit=dev".into()]), &facts()).key()
        );
        let mut n = facts();
        n.abi = "127".into();
        assert_ne!(base, KeyInputs::new(&files, &args, &n).key());
        let mut n = facts();
        n.libc = "musl".into();
        assert_ne!(base, KeyInputs::new(&files, &args, &n).key());
    }

    #[test]
    fn local_dependencies_are_found_normalised_and_kept_inside_the_tree() {
        let pj = br#"{"dependencies":{"a":"file:vendor/a-1.0.0.tgz","b":"^1","c":"file:./lib/c"},
            "devDependencies":{"d":"file:lib/../tools/d"}}"#;
        let lock = br#"{"packages":{"":{},"node_modules/b":{"resolved":"https://r/b.tgz"},
            "node_modules/a":{"resolved":"file:vendor/a-1.0.0.tgz"},
            "node_modules/c":{"resolved":"lib/c","link":true},"lib/c":{"version":"1.0.0"},
            "packages/w":{"version":"1.0.0"}}}"#;
        let got: Vec<String> = local_dependency_paths(pj, Some(lock))
            .unwrap()
            .into_iter()
            .collect();
        assert_eq!(
            got,
            ["lib/c", "packages/w", "tools/d", "vendor/a-1.0.0.tgz"]
        );
        for bad in [
            br#"{"dependencies":{"a":"file:../outside"}}"#.as_slice(),
            br#"{"dependencies":{"a":"file:/abs/x.tgz"}}"#,
            br#"{"dependencies":{"a":"file:~/x"}}"#,
            br#"{"dependencies":{"a":"file:."}}"#,
        ] {
            let e = local_dependency_paths(bad, None).unwrap_err().to_string();
            assert!(e.contains("file:"), "{e}");
        }
        let tree = vec![
            PackEntry {
                path: "vendor/a-1.0.0.tgz".into(),
                kind: PackKind::File {
                    data: PackData::Bytes(b"tgz".to_vec()),
                    executable: false,
                },
            },
            PackEntry {
                path: "vendor/other".into(),
                kind: PackKind::File {
                    data: PackData::Bytes(b"x".to_vec()),
                    executable: false,
                },
            },
        ];
        let one: BTreeSet<String> = ["vendor/a-1.0.0.tgz".to_string()].into();
        let sel = select_local(&tree, &one).unwrap();
        assert_eq!(sel.len(), 1);
        let missing: BTreeSet<String> = ["vendor/gone.tgz".to_string()].into();
        let e = select_local(&tree, &missing).unwrap_err().to_string();
        assert!(
            e.contains("file:vendor/gone.tgz") && e.contains("not in the commit's tree"),
            "{e}"
        );

        // The key covers the local files, and trees without any keep their key format.
        let files = DepsFiles {
            package_json: b"{}".to_vec(),
            lockfile: Some(b"lock".to_vec()),
            npmrc: None,
            local: Vec::new(),
        };
        let args = recorded_npm_args(&[]);
        let plain = KeyInputs::new(&files, &args, &facts());
        let v = serde_json::to_value(&plain).unwrap();
        assert!(v.get("local_files_digest").is_none(), "{v}");
        let mut with = files.clone();
        with.local = sel.clone();
        let k1 = KeyInputs::new(&with, &args, &facts()).key();
        assert_ne!(k1, plain.key());
        with.local[0].kind = PackKind::File {
            data: PackData::Bytes(b"tgz2".to_vec()),
            executable: false,
        };
        assert_ne!(k1, KeyInputs::new(&with, &args, &facts()).key());
    }
}
