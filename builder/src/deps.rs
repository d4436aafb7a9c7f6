//! The dependency layer: its key, the npm run that resolves it, and its `deps/<key>` record.
//!
//! Key: sha256 over the canonical JSON of [`KeyInputs`]: the layer format version, which file
//! drove resolution (`package-lock.json`, or `package.json` when there is no lockfile) and the
//! sha256 of its bytes, the sha256 of the tree's `.npmrc` (if any), the npm arguments, and the
//! node version, native ABI (`process.versions.modules`), os, arch and libc. A build whose key
//! already has a `deps/<key>` record (and whose layer blob is present) reuses that layer and does
//! not run npm at all.
//!
//! The layer packs `node_modules` with mtime 0 for every entry: the layer is shared by every
//! commit with the same key, so its bytes must not depend on which commit built it first.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Command;

use artifact::Digest;
use artifact::manifest::Platform;
use artifact::pack::LayerInfo;
use model::canonical_json;
use serde::{Deserialize, Serialize};

use crate::Error;

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
    /// npm's cache directory (`--cache`), isolated from the user's.
    pub cache: PathBuf,
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

fn run_npm(npm: &NpmOptions, dir: &Path, step: &str, args: &[OsString]) -> Result<String, Error> {
    let out = Command::new(&npm.program)
        .args(args)
        .current_dir(dir)
        .env("npm_config_update_notifier", "false")
        .env("npm_config_progress", "false")
        .stdin(std::process::Stdio::null())
        .output()
        .map_err(|e| Error::Npm {
            step: step.to_string(),
            status: format!("could not run {}: {e}", npm.program.display()),
            output: String::new(),
        })?;
    if !out.status.success() {
        let mut text = String::from_utf8_lossy(&out.stderr).into_owned();
        text.push_str(&String::from_utf8_lossy(&out.stdout));
        let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
        let tail = lines[lines.len().saturating_sub(30)..].join("\n");
        return Err(Error::Npm {
            step: step.to_string(),
            status: out.status.to_string(),
            output: tail,
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// Materialises `files` into `dir` and runs npm there: `npm ci` with a lockfile; without one,
/// `npm install --package-lock-only` first to produce the lockfile, then `npm ci`.
pub fn install(
    dir: &Path,
    files: &DepsFiles,
    user_args: &[String],
    npm: &NpmOptions,
) -> Result<Installed, Error> {
    let write = |name: &str, data: &[u8]| {
        std::fs::write(dir.join(name), data)
            .map_err(|e| Error::io(format!("writing {name} into {}", dir.display()), e))
    };
    write("package.json", &files.package_json)?;
    if let Some(l) = &files.lockfile {
        write("package-lock.json", l)?;
    }
    if let Some(n) = &files.npmrc {
        write(".npmrc", n)?;
    }
    let npm_version = run_npm(npm, dir, "--version", &["--version".into()])?;
    let cache: Vec<OsString> = vec!["--cache".into(), npm.cache.clone().into_os_string()];
    let quiet: Vec<OsString> = vec!["--no-audit".into(), "--no-fund".into()];
    let user: Vec<OsString> = user_args.iter().map(OsString::from).collect();

    let generated = files.lockfile.is_none();
    if generated {
        let mut args: Vec<OsString> = vec!["install".into(), "--package-lock-only".into()];
        args.extend(quiet.iter().cloned());
        args.extend(cache.iter().cloned());
        args.extend(user.iter().cloned());
        run_npm(npm, dir, "install --package-lock-only", &args)?;
    }
    let mut args: Vec<OsString> = vec!["ci".into()];
    args.extend(quiet);
    args.extend(cache);
    args.extend(user);
    run_npm(npm, dir, "ci", &args)?;

    let lockfile = std::fs::read(dir.join("package-lock.json"))
        .map_err(|e| Error::io("reading the lockfile npm used", e))?;
    let node_modules = dir.join("node_modules");
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
}
