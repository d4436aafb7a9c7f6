//! The build pipeline: commit -> source layer + dependency layer + manifest -> store.
//!
//! Order of writes, each create-if-absent, so a crash or a concurrent build never leaves a
//! record pointing at something missing: layer blobs and the lockfile blob, then `deps/<key>`,
//! then the manifest blob, then `commits/<sha>` last. Blobs are checked with `head` first and
//! only missing ones are uploaded, each with its sha256 for the store to verify.
//!
//! A commit that already has a `commits/<sha>` record is not rebuilt unless
//! [`BuildOptions::rebuild`] is set; a rebuild (or a build racing another build of the same
//! commit) that produces a different manifest digest fails with [`Error::NotReproducible`].

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::time::{Instant, SystemTime};

use artifact::manifest::{BuildRecord, DepsInfo, Layer, LayerKind, Manifest};
use artifact::pack::{self, LayerCompression, LayerInfo, PackEntry, PackKind, PackOptions};
use artifact::store::{PutBody, PutOutcome, Store};
use artifact::{Digest, keys};
use serde::Serialize;

use crate::deps::{self, DepsFiles, DepsRecord, KeyInputs, NpmOptions};
use crate::progress::{CountingWriter, Progress, Step};
use crate::service::{self, SERVICE_YAML};
use crate::source::{self, SourceTree};
use crate::{Error, VERSION};

/// What to build and how.
#[derive(Clone, Debug)]
pub struct BuildOptions {
    /// The git repository (any directory git can open: worktree or bare).
    pub repo: PathBuf,
    /// The revision to build (`HEAD`, a sha, a branch, a tag).
    pub rev: String,
    /// Build only this subdirectory of the commit's tree (a service inside a larger repo).
    pub service_dir: Option<String>,
    /// npm arguments; `None` takes `build.npm_args` from `deploy/service.yaml`.
    pub npm_args: Option<Vec<String>>,
    /// The node program.
    pub node: PathBuf,
    /// The npm program.
    pub npm: PathBuf,
    /// npm's cache directory; `None` uses a fresh one inside the build's temp directory.
    pub npm_cache: Option<PathBuf>,
    /// Where temp directories go; `None` for the system temp directory.
    pub work_dir: Option<PathBuf>,
    /// Build even when `commits/<sha>` exists, and check the result is identical.
    pub rebuild: bool,
    /// Compression threads (the bytes do not depend on it).
    pub pack_threads: usize,
    /// Layer compression (zstd by default); part of the dependency key.
    pub compression: LayerCompression,
}

impl BuildOptions {
    pub fn new(repo: impl Into<PathBuf>, rev: impl Into<String>) -> Self {
        BuildOptions {
            repo: repo.into(),
            rev: rev.into(),
            service_dir: None,
            npm_args: None,
            node: "node".into(),
            npm: "npm".into(),
            npm_cache: None,
            work_dir: None,
            rebuild: false,
            pack_threads: PackOptions::default().threads,
            compression: LayerCompression::default(),
        }
    }
}

/// How the build ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// This build created `commits/<sha>`.
    Built,
    /// `commits/<sha>` already existed (from an earlier or a concurrent build) and this build
    /// produced the same manifest.
    Identical,
    /// `commits/<sha>` already existed; nothing was built.
    AlreadyBuilt,
}

#[derive(Clone, Debug, Serialize)]
pub struct LayerReport {
    pub kind: LayerKind,
    pub media_type: String,
    pub digest: Digest,
    pub size: u64,
    pub diff_id: Digest,
    pub entries: u64,
    /// True if this build uploaded the blob; false if the store had it.
    pub uploaded: bool,
}

#[derive(Clone, Debug, Serialize)]
pub struct DepsReport {
    pub key: String,
    /// True if the layer came from an earlier build (`deps/<key>`) and npm did not run.
    pub reused: bool,
    pub native: bool,
    pub lockfile_generated: bool,
    pub npm_args: Vec<String>,
}

#[derive(Clone, Debug, Serialize)]
pub struct Timing {
    pub step: &'static str,
    pub seconds: f64,
}

/// What a build did.
#[derive(Clone, Debug, Serialize)]
pub struct BuildReport {
    /// The artifact id: the manifest digest.
    pub id: Digest,
    pub commit: String,
    pub service: String,
    pub store: String,
    pub outcome: Outcome,
    pub layers: Vec<LayerReport>,
    pub deps: Option<DepsReport>,
    pub manifest_uploaded: bool,
    pub skipped_submodules: Vec<String>,
    pub timings: Vec<Timing>,
}

/// The storage manifests of the source tree, for [`Manifest::storage`]: schema-guard's static
/// extraction (no node needed) once per environment config shipped in `deploy/env/<env>.yaml`,
/// as `{"format": 1, "envs": {"<env>": <storage manifest>}}` (env `default` when the tree has no
/// env configs). The applier compares the one of the environment it deploys to.
///
/// An extraction failure does not fail the build: it is returned as a warning and the
/// artifact carries no storage manifest for that environment (the deploy guard then says so).
pub fn storage_manifest(source: &SourceTree) -> (Option<serde_json::Value>, Vec<String>) {
    struct Mem<'a>(&'a SourceTree, Vec<String>);
    impl schema_guard::extract::Tree for Mem<'_> {
        fn paths(&self) -> Vec<String> {
            self.1.clone()
        }
        fn read(&self, path: &str) -> Option<Vec<u8>> {
            self.0.file(path).map(<[u8]>::to_vec)
        }
    }
    let mut paths: Vec<String> = source
        .entries
        .iter()
        .filter(|e| matches!(e.kind, PackKind::File { .. }))
        .filter(|e| {
            !e.path.split('/').any(|seg| {
                seg == "node_modules" || seg.starts_with('.') || seg == "test" || seg == "tests"
            }) || e.path == ".schema-guard.yaml"
        })
        .map(|e| e.path.clone())
        .collect();
    paths.sort();
    let mut envs: Vec<String> = paths
        .iter()
        .filter_map(|p| p.strip_prefix("deploy/env/")?.strip_suffix(".yaml"))
        .filter(|e| !e.contains('/'))
        .map(str::to_string)
        .collect();
    let tree = Mem(source, paths);
    let mut out = serde_json::Map::new();
    let mut warnings = Vec::new();
    if envs.is_empty() {
        envs.push(String::new());
    }
    for env in envs {
        let opts = schema_guard::extract::StaticOptions {
            env: (!env.is_empty()).then(|| env.clone()),
            ..Default::default()
        };
        let name = if env.is_empty() {
            "default".to_string()
        } else {
            env
        };
        match schema_guard::extract::static_manifest_tree(&tree, &opts) {
            Ok(mut m) => {
                m.commit = Some(source.info.commit.clone());
                out.insert(name, m.to_value());
            }
            Err(e) => warnings.push(format!("storage manifest of env {name}: {e}")),
        }
    }
    if out.is_empty() {
        return (None, warnings);
    }
    (
        Some(serde_json::json!({"format": 1, "envs": serde_json::Value::Object(out)})),
        warnings,
    )
}

/// Manifest label: digest of the source tree outside `deploy/` (the code).
pub const LABEL_CODE_DIGEST: &str = "content.code";
/// Manifest label: digest of `deploy/` (service definition and per-environment config).
pub const LABEL_CONFIG_DIGEST: &str = "content.config";

/// Digests of the code and of the deploy config in the source tree, so the applier can tell a
/// config-only deploy from a code deploy without reading layers. Each digest covers the sorted
/// (path, kind, content) of its files.
pub fn content_digests(source: &SourceTree) -> (Digest, Digest) {
    let mut entries: Vec<&PackEntry> = source.entries.iter().collect();
    entries.sort_by(|a, b| a.path.cmp(&b.path));
    let (mut code, mut config) = (
        artifact::digest::Hasher::new(),
        artifact::digest::Hasher::new(),
    );
    for e in entries {
        let h = if e.path == "deploy" || e.path.starts_with("deploy/") {
            &mut config
        } else {
            &mut code
        };
        let (kind, body): (&[u8], &[u8]) = match &e.kind {
            PackKind::Dir => (b"d", b""),
            PackKind::File {
                data: pack::PackData::Bytes(b),
                executable,
            } => (if *executable { b"x" } else { b"f" }, b),
            // The source layer is read from git objects, so files are always in memory.
            PackKind::File { .. } => (b"f", b""),
            PackKind::Symlink { target } => (b"l", target.as_bytes()),
        };
        for part in [e.path.as_bytes(), kind, body] {
            h.update(&(part.len() as u64).to_le_bytes());
            h.update(part);
        }
    }
    (code.finish().0, config.finish().0)
}

struct Timer(Vec<Timing>);
impl Timer {
    fn time<T>(
        &mut self,
        step: &'static str,
        f: impl FnOnce() -> Result<T, Error>,
    ) -> Result<T, Error> {
        let t = Instant::now();
        let r = f();
        self.0.push(Timing {
            step,
            seconds: t.elapsed().as_secs_f64(),
        });
        r
    }
}

/// Packs `entries` into `path`, reporting compressed bytes as progress of `step`.
fn pack_to_file(
    entries: Vec<PackEntry>,
    opts: &PackOptions,
    path: &Path,
    what: &'static str,
    step: Step,
    progress: &dyn Progress,
) -> Result<LayerInfo, Error> {
    let file =
        File::create(path).map_err(|e| Error::io(format!("creating {}", path.display()), e))?;
    progress.begin(step, None);
    let mut w = CountingWriter {
        inner: BufWriter::with_capacity(1 << 20, file),
        step,
        progress,
    };
    let info =
        pack::pack_entries(entries, opts, &mut w).map_err(|source| Error::Pack { what, source })?;
    w.flush()
        .map_err(|e| Error::io(format!("writing {}", path.display()), e))?;
    progress.end(
        step,
        &format!(
            "{} entries, {} compressed ({} tar)",
            info.entries,
            human_bytes(info.size),
            human_bytes(info.tar_size)
        ),
    );
    Ok(info)
}

/// Uploads a blob unless the store has it. Returns whether this call created it.
fn upload_blob(store: &dyn Store, digest: &Digest, body: PutBody) -> Result<bool, Error> {
    let key = keys::blob(digest);
    if store.head(&key)?.is_some() {
        return Ok(false);
    }
    Ok(store.put_if_absent(&key, body, Some(digest))? == PutOutcome::Created)
}

fn get_json<T: serde::de::DeserializeOwned>(
    store: &dyn Store,
    key: &str,
) -> Result<Option<T>, Error> {
    match store.get_bytes(key) {
        Ok((bytes, _)) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| Error::Corrupt {
                key: key.to_string(),
                detail: e.to_string(),
            }),
        Err(e) if e.is_not_found() => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// Reads the `commits/<sha>` record, if any.
pub fn commit_record(store: &dyn Store, commit: &str) -> Result<Option<BuildRecord>, Error> {
    get_json(store, &keys::commit(commit))
}

/// Reads and parses the manifest blob `digest` (without re-hashing it; see `inspect::verify`).
pub fn load_manifest(store: &dyn Store, digest: &Digest) -> Result<Manifest, Error> {
    let key = keys::blob(digest);
    let (bytes, _) = store.get_bytes(&key)?;
    Manifest::from_json(&bytes).map_err(|e| Error::Corrupt {
        key,
        detail: e.to_string(),
    })
}

fn report_from_manifest(
    id: Digest,
    m: &Manifest,
    store: &dyn Store,
    outcome: Outcome,
) -> BuildReport {
    BuildReport {
        id,
        commit: m.source.commit.clone(),
        service: m.service.clone(),
        store: store.location(),
        outcome,
        layers: m
            .layers
            .iter()
            .map(|l| LayerReport {
                kind: l.kind,
                media_type: l.media_type.clone(),
                digest: l.digest,
                size: l.size,
                diff_id: l.diff_id,
                entries: l.entries,
                uploaded: false,
            })
            .collect(),
        deps: m.deps.as_ref().map(|d| DepsReport {
            key: d.key.clone(),
            reused: true,
            native: d.native,
            lockfile_generated: d.lockfile_generated,
            npm_args: d.npm_args.clone(),
        }),
        manifest_uploaded: false,
        skipped_submodules: Vec::new(),
        timings: Vec::new(),
    }
}

/// Builds `opts.rev` into `store`.
pub fn build(
    store: &dyn Store,
    opts: &BuildOptions,
    progress: &dyn Progress,
) -> Result<BuildReport, Error> {
    let mut timer = Timer(Vec::new());
    let commit_id = source::resolve_rev(&opts.repo, &opts.rev)?;

    if !opts.rebuild
        && let Some(rec) = commit_record(store, &commit_id)?
    {
        let m = load_manifest(store, &rec.manifest)?;
        return Ok(report_from_manifest(
            rec.manifest,
            &m,
            store,
            Outcome::AlreadyBuilt,
        ));
    }

    progress.begin(Step::ReadSource, None);
    let src = timer.time("read source", || {
        source::read_commit(&opts.repo, &commit_id, opts.service_dir.as_deref())
    })?;
    progress.end(
        Step::ReadSource,
        &format!("{} entries, {}", src.entries.len(), human_bytes(src.bytes)),
    );
    for s in &src.skipped_submodules {
        progress.warn(&format!(
            "skipping submodule {s}: its content is not in this repository"
        ));
    }

    let svc = match src.file(SERVICE_YAML) {
        Some(b) => service::parse_service_yaml(b)?,
        None => Default::default(),
    };
    let package_json = src.file("package.json").map(<[u8]>::to_vec);
    let lockfile = src.file("package-lock.json").map(<[u8]>::to_vec);
    let npmrc = src.file(".npmrc").map(<[u8]>::to_vec);
    let service_name = match (&svc.name, &package_json) {
        (Some(n), _) => n.clone(),
        (None, Some(p)) => service::package_name(p)?.ok_or_else(|| {
            Error::Config(format!(
                "no service name: {SERVICE_YAML} has no `name` and package.json has no `name`"
            ))
        })?,
        (None, None) => {
            return Err(Error::Config(format!(
                "no service name: the tree has neither {SERVICE_YAML} with a `name` nor a package.json"
            )));
        }
    };

    let mut tmp_builder = tempfile::Builder::new();
    tmp_builder.prefix("builder-");
    let tmp = match &opts.work_dir {
        Some(d) => tmp_builder.tempdir_in(d),
        None => tmp_builder.tempdir(),
    }
    .map_err(|e| Error::io("creating a temp directory", e))?;

    let source_opts = PackOptions {
        mtime: src.info.commit_time.max(0) as u64,
        threads: opts.pack_threads.max(1),
        ..PackOptions::with_compression(opts.compression)
    };
    let (storage, storage_warnings) = storage_manifest(&src);
    let (code_digest, config_digest) = content_digests(&src);
    for w in &storage_warnings {
        progress.warn(w);
    }
    let source_path = tmp.path().join("source.tar.gz");
    let source_info = src.info.clone();
    let skipped_submodules = src.skipped_submodules.clone();
    let source_layer = timer.time("pack source", || {
        pack_to_file(
            src.entries,
            &source_opts,
            &source_path,
            "source",
            Step::PackSource,
            progress,
        )
    })?;

    // Dependency layer.
    let mut layers = vec![LayerReport {
        kind: LayerKind::Source,
        media_type: opts.compression.media_type().to_string(),
        digest: source_layer.digest,
        size: source_layer.size,
        diff_id: source_layer.diff_id,
        entries: source_layer.entries,
        uploaded: false,
    }];
    let mut to_upload: Vec<(Digest, u64, PutBody, Option<usize>)> = vec![(
        source_layer.digest,
        source_layer.size,
        PutBody::File(source_path.clone()),
        Some(0),
    )];
    let mut deps_report = None;
    let mut deps_record: Option<(DepsRecord, bool)> = None; // (record, built by us)
    if let Some(package_json) = package_json {
        let files = DepsFiles {
            package_json,
            lockfile,
            npmrc,
        };
        let node = timer.time("node facts", || deps::node_facts(&opts.node))?;
        let user_args = deps::user_npm_args(
            &opts
                .npm_args
                .clone()
                .or(svc.build.npm_args.clone())
                .unwrap_or_default(),
        )?;
        let recorded_args = deps::recorded_npm_args(&user_args);
        let mut key_inputs = KeyInputs::new(&files, &recorded_args, &node);
        key_inputs.layer_format = opts.compression.format_version();
        let key = key_inputs.key();
        let dkey = keys::deps(&key);

        let existing: Option<DepsRecord> = get_json(store, &dkey)?;
        let reusable = match existing {
            Some(rec) => {
                let layer_ok = store.head(&keys::blob(&rec.layer.digest))?.is_some();
                let lock_ok = store.head(&keys::blob(&rec.lockfile_blob))?.is_some();
                if layer_ok && lock_ok {
                    Some(rec)
                } else {
                    progress.warn(&format!(
                        "{dkey} exists but its blobs are missing; rebuilding the layer"
                    ));
                    None
                }
            }
            None => None,
        };
        match reusable {
            Some(rec) => {
                progress.end(
                    Step::Npm,
                    &format!(
                        "reused dependency layer {} (key {})",
                        rec.layer.digest.short(12),
                        &key[..12]
                    ),
                );
                deps_record = Some((rec, false));
            }
            None => {
                let npm_dir = tmp.path().join("npm");
                std::fs::create_dir(&npm_dir)
                    .map_err(|e| Error::io("creating the npm directory", e))?;
                let npm = NpmOptions {
                    program: opts.npm.clone(),
                    cache: opts
                        .npm_cache
                        .clone()
                        .unwrap_or_else(|| tmp.path().join("npm-cache")),
                };
                progress.begin(Step::Npm, None);
                let installed =
                    timer.time("npm", || deps::install(&npm_dir, &files, &user_args, &npm))?;
                progress.end(
                    Step::Npm,
                    &format!(
                        "npm {} {}{}",
                        installed.npm_version,
                        recorded_args.join(" "),
                        if installed.lockfile_generated {
                            " (lockfile generated)"
                        } else {
                            ""
                        }
                    ),
                );
                let entries = timer.time("walk node_modules", || {
                    pack::walk_dir(&installed.node_modules, "node_modules").map_err(|source| {
                        Error::Pack {
                            what: "dependency",
                            source,
                        }
                    })
                })?;
                let native = entries
                    .iter()
                    .any(|e| matches!(e.kind, PackKind::File { .. }) && e.path.ends_with(".node"));
                let deps_opts = PackOptions {
                    mtime: deps::DEPS_MTIME,
                    ..source_opts.clone()
                };
                let deps_path = tmp.path().join("deps.tar.gz");
                let info = timer.time("pack node_modules", || {
                    pack_to_file(
                        entries,
                        &deps_opts,
                        &deps_path,
                        "dependency",
                        Step::PackDeps,
                        progress,
                    )
                })?;
                let lock_digest = Digest::of(&installed.lockfile);
                to_upload.push((info.digest, info.size, PutBody::File(deps_path), Some(1)));
                to_upload.push((
                    lock_digest,
                    installed.lockfile.len() as u64,
                    PutBody::Bytes(installed.lockfile),
                    None,
                ));
                deps_record = Some((
                    DepsRecord {
                        format: deps::DEPS_RECORD_FORMAT,
                        key: key.clone(),
                        media_type: opts.compression.media_type().to_string(),
                        layer: info,
                        lockfile_blob: lock_digest,
                        lockfile_generated: installed.lockfile_generated,
                        node_version: node.version.clone(),
                        npm_version: installed.npm_version,
                        npm_args: recorded_args.clone(),
                        native,
                        platform: node.platform(),
                    },
                    true,
                ));
            }
        }
        let (rec, built) = deps_record.as_ref().expect("set above");
        layers.push(LayerReport {
            kind: LayerKind::Deps,
            media_type: rec.media_type.clone(),
            digest: rec.layer.digest,
            size: rec.layer.size,
            diff_id: rec.layer.diff_id,
            entries: rec.layer.entries,
            uploaded: false,
        });
        deps_report = Some(DepsReport {
            key: key.clone(),
            reused: !built,
            native: rec.native,
            lockfile_generated: rec.lockfile_generated,
            npm_args: rec.npm_args.clone(),
        });
    }

    // Upload layers (and the lockfile) that the store does not have.
    let total: u64 = to_upload.iter().map(|(_, s, _, _)| s).sum();
    progress.begin(Step::Upload, Some(total));
    let upload_start = Instant::now();
    let mut uploaded_bytes = 0;
    for (digest, size, body, layer_index) in to_upload {
        let up = upload_blob(store, &digest, body)?;
        if let Some(i) = layer_index {
            layers[i].uploaded = up;
        }
        if up {
            uploaded_bytes += size;
        }
        progress.advance(Step::Upload, size);
    }

    // Record the dependency layer; a concurrent build may have recorded it first.
    if let Some((rec, true)) = &deps_record {
        let dkey = keys::deps(&rec.key);
        let body = serde_json::to_vec_pretty(rec).expect("record serialises");
        if store.put_if_absent(&dkey, PutBody::Bytes(body), None)? == PutOutcome::AlreadyExists {
            let theirs: DepsRecord = get_json(store, &dkey)?.ok_or_else(|| Error::Corrupt {
                key: dkey.clone(),
                detail: "vanished after existing".into(),
            })?;
            if theirs.layer != rec.layer {
                progress.warn(&format!(
                    "{dkey} was recorded concurrently with layer {}; using it instead of {}",
                    theirs.layer.digest, rec.layer.digest
                ));
                layers[1].digest = theirs.layer.digest;
                layers[1].size = theirs.layer.size;
                layers[1].diff_id = theirs.layer.diff_id;
                layers[1].entries = theirs.layer.entries;
                layers[1].uploaded = false;
                deps_record = Some((theirs, false));
            }
        }
    }

    let (platform, deps_info) = match &deps_record {
        Some((rec, _)) => (
            rec.native.then(|| rec.platform.clone()),
            Some(DepsInfo {
                key: rec.key.clone(),
                node_version: rec.node_version.clone(),
                npm_version: rec.npm_version.clone(),
                npm_args: rec.npm_args.clone(),
                lockfile_digest: rec.lockfile_blob,
                lockfile_generated: rec.lockfile_generated,
                lockfile_blob: rec.lockfile_blob,
                native: rec.native,
            }),
        ),
        None => (None, None),
    };
    let mut labels = std::collections::BTreeMap::new();
    labels.insert(LABEL_CODE_DIGEST.to_string(), code_digest.to_string());
    labels.insert(LABEL_CONFIG_DIGEST.to_string(), config_digest.to_string());
    if let Some(dir) = opts
        .service_dir
        .as_deref()
        .map(|d| d.trim_matches('/'))
        .filter(|d| !d.is_empty())
    {
        labels.insert("source.dir".to_string(), dir.to_string());
    }
    let manifest_layers: Vec<Layer> = layers
        .iter()
        .map(|l| Layer {
            kind: l.kind,
            media_type: l.media_type.clone(),
            digest: l.digest,
            size: l.size,
            diff_id: l.diff_id,
            entries: l.entries,
        })
        .collect();
    let manifest = Manifest {
        format: Manifest::format_for(&manifest_layers),
        service: service_name,
        source: source_info,
        layers: manifest_layers,
        platform,
        deps: deps_info,
        storage,
        labels,
    };
    manifest
        .validate()
        .map_err(|e| Error::Config(format!("built an invalid manifest: {e}")))?;
    let manifest_bytes = manifest.to_canonical_json();
    let id = Digest::of(&manifest_bytes);
    let manifest_size = manifest_bytes.len() as u64;
    let manifest_uploaded = upload_blob(store, &id, PutBody::Bytes(manifest_bytes))?;
    if manifest_uploaded {
        uploaded_bytes += manifest_size;
    }

    let record = BuildRecord {
        commit: commit_id.clone(),
        manifest: id,
        built_at: humantime::format_rfc3339_seconds(SystemTime::now()).to_string(),
        builder_version: VERSION.to_string(),
    };
    let ckey = keys::commit(&commit_id);
    let body = serde_json::to_vec_pretty(&record).expect("record serialises");
    let outcome = match store.put_if_absent(&ckey, PutBody::Bytes(body), None)? {
        PutOutcome::Created => Outcome::Built,
        PutOutcome::AlreadyExists => {
            let theirs = commit_record(store, &commit_id)?.ok_or_else(|| Error::Corrupt {
                key: ckey.clone(),
                detail: "vanished after existing".into(),
            })?;
            if theirs.manifest != id {
                return Err(Error::NotReproducible {
                    commit: commit_id,
                    existing: theirs.manifest.to_string(),
                    produced: id.to_string(),
                });
            }
            Outcome::Identical
        }
    };
    timer.0.push(Timing {
        step: "upload",
        seconds: upload_start.elapsed().as_secs_f64(),
    });
    progress.end(
        Step::Upload,
        &format!("{} uploaded", human_bytes(uploaded_bytes)),
    );

    Ok(BuildReport {
        id,
        commit: commit_id,
        service: manifest.service.clone(),
        store: store.location(),
        outcome,
        layers,
        deps: deps_report,
        manifest_uploaded,
        skipped_submodules,
        timings: timer.0,
    })
}

/// `1.2 MB`-style sizes for humans (decimal units).
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "kB", "MB", "GB", "TB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1000.0 && u < UNITS.len() - 1 {
        v /= 1000.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}
