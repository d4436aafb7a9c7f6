//! The build pipeline: commit -> source layer + dependency layer + manifest -> store.
//!
//! Order of writes, each create-if-absent, so a crash or a concurrent build never leaves a
//! record pointing at something missing: layer blobs and the lockfile blob, then `deps/<key>`,
//! then the manifest blob, then `commits/<sha>` last. Blobs are checked with `head` first and
//! only missing ones are uploaded, each with its sha256 for the store to verify.
//!
//! A commit that already has a `commits/<sha>` record is not rebuilt unless
//! [`BuildOptions::rebuild`] is set (its recorded blobs are still checked: the manifest against
//! its digest, each layer for its size). A rebuild (or a build racing another build of the same
//! commit) that produces a different manifest digest fails with [`Error::NotReproducible`]. A
//! rebuild also re-runs npm ([`crate::deps_layer`]), re-hashes every blob the store already has
//! and replaces one whose bytes do not match its digest with the freshly built bytes.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::time::{Instant, SystemTime};

use artifact::manifest::{BuildRecord, DepsInfo, Layer, LayerKind, Manifest};
use artifact::pack::{self, LayerCompression, LayerInfo, PackEntry, PackOptions};
use artifact::store::{PutBody, PutOutcome, Store};
use artifact::{Digest, keys};

use crate::blobs::{self, get_json};
pub use crate::blobs::{commit_record, load_manifest};
pub use crate::content::{LABEL_CODE_DIGEST, LABEL_CONFIG_DIGEST, content_digests};
use crate::deps::{self, DepsFiles, DepsRecord, NpmOptions};
use crate::deps_layer::{DepsStep, Pending};
use crate::progress::{CountingWriter, Progress, Step};
use crate::report::report_from_manifest;
pub use crate::report::{BuildReport, DepsReport, LayerReport, Outcome, Timing, human_bytes};
use crate::service::{self, SERVICE_YAML};
use crate::source;
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
    /// npm's cache directory to share between builds; `None` for a fresh one per build.
    pub npm_cache: Option<PathBuf>,
    /// Where temp files and npm's build directory go (an absolute path). npm runs in
    /// `<work_dir>/builder-npm-<key prefix>/project`, a path that native modules record, so
    /// builders that should produce identical layers use the same one.
    pub work_dir: PathBuf,
    /// Build even when `commits/<sha>` exists and re-run npm even when `deps/<key>` exists,
    /// check that the result is identical, re-hash the blobs the store has and replace any
    /// whose bytes do not match their digest.
    pub rebuild: bool,
    /// Compression threads (the bytes do not depend on it).
    pub pack_threads: usize,
    /// Layer compression (zstd by default); part of the dependency key.
    pub compression: LayerCompression,
}

/// The default work directory: a fixed path, not `$TMPDIR`, so that builders agree on the
/// path npm builds in.
pub const DEFAULT_WORK_DIR: &str = "/tmp";

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
            work_dir: PathBuf::from(DEFAULT_WORK_DIR),
            rebuild: false,
            pack_threads: PackOptions::default().threads,
            compression: LayerCompression::default(),
        }
    }
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
pub(crate) fn pack_to_file(
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

/// Checks the blobs of an already built artifact before reporting it as built: the manifest
/// against its digest ([`load_manifest`]), each layer for its recorded size.
fn check_built(store: &dyn Store, id: &Digest) -> Result<Manifest, Error> {
    let m = load_manifest(store, id)?;
    for l in &m.layers {
        let what = match l.kind {
            LayerKind::Source => "source layer",
            LayerKind::Deps => "dependency layer",
        };
        blobs::check_size(store, what, &l.digest, l.size)?;
    }
    Ok(m)
}

/// The service name: `deploy/service.yaml`'s `name`, else package.json's.
fn service_name(svc: &service::ServiceSpec, package_json: Option<&[u8]>) -> Result<String, Error> {
    match (&svc.name, package_json) {
        (Some(n), _) => Ok(n.clone()),
        (None, Some(p)) => service::package_name(p)?.ok_or_else(|| {
            Error::Config(format!(
                "no service name: {SERVICE_YAML} has no `name` and package.json has no `name`"
            ))
        }),
        (None, None) => Err(Error::Config(format!(
            "no service name: the tree has neither {SERVICE_YAML} with a `name` nor a package.json"
        ))),
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
        let m = check_built(store, &rec.manifest)?;
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
    let service_name = service_name(&svc, package_json.as_deref())?;
    let local = match &package_json {
        Some(p) => deps::select_local(
            &src.entries,
            &deps::local_dependency_paths(p, lockfile.as_deref())?,
        )?,
        None => Vec::new(),
    };

    if !opts.work_dir.is_absolute() {
        return Err(Error::Config(format!(
            "the work directory must be an absolute path, not {}",
            opts.work_dir.display()
        )));
    }
    std::fs::create_dir_all(&opts.work_dir)
        .map_err(|e| Error::io(format!("creating {}", opts.work_dir.display()), e))?;
    let tmp = tempfile::Builder::new()
        .prefix("builder-")
        .tempdir_in(&opts.work_dir)
        .map_err(|e| Error::io("creating a temp directory", e))?;

    let source_opts = PackOptions {
        mtime: src.info.commit_time.max(0) as u64,
        threads: opts.pack_threads.max(1),
        ..PackOptions::with_compression(opts.compression)
    };
    let storage_source = crate::storage::StorageSource::new(&src);
    let (code_digest, config_digest) = content_digests(&src);
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
    let mut to_upload: Vec<Pending> = vec![Pending {
        digest: source_layer.digest,
        size: source_layer.size,
        body: PutBody::File(source_path.clone()),
        layer: Some(0),
    }];
    let mut deps_report = None;
    let mut deps_record: Option<(DepsRecord, bool)> = None; // (record, new: to be recorded)
    if let Some(package_json) = package_json {
        let files = DepsFiles {
            package_json,
            lockfile,
            npmrc,
            local,
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
        let npm = NpmOptions {
            program: opts.npm.clone(),
            shared_cache: opts.npm_cache.clone(),
        };
        let step = DepsStep {
            store,
            files: &files,
            user_args: &user_args,
            recorded_args: &recorded_args,
            node: &node,
            npm: &npm,
            work_dir: &opts.work_dir,
            out_dir: tmp.path(),
            pack: &source_opts,
            rebuild: opts.rebuild,
            progress,
        };
        let got = step.run(&mut |step, seconds| timer.0.push(Timing { step, seconds }))?;
        let rec = &got.record;
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
            key: rec.key.clone(),
            reused: got.reused,
            reproduced: got.reproduced,
            native: rec.native,
            lockfile_generated: rec.lockfile_generated,
            npm_args: rec.npm_args.clone(),
        });
        to_upload.extend(got.blobs);
        deps_record = Some((got.record, got.new_record));
    }

    // Store the blobs the store does not have (in a rebuild: or has with the wrong bytes).
    let total: u64 = to_upload.iter().map(|p| p.size).sum();
    progress.begin(Step::Upload, Some(total));
    let upload_start = Instant::now();
    let mut uploaded_bytes = 0;
    let mut repaired = Vec::new();
    for p in to_upload {
        let put = blobs::put_blob(store, &p.digest, p.body, opts.rebuild)?;
        if let Some(i) = p.layer {
            layers[i].uploaded = put.created;
        }
        if put.created {
            uploaded_bytes += p.size;
        }
        if put.repaired {
            progress.warn(&format!(
                "{} did not match its digest; replaced with the rebuilt bytes",
                keys::blob(&p.digest)
            ));
            repaired.push(keys::blob(&p.digest));
        }
        progress.advance(Step::Upload, p.size);
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
                blobs::check_size(
                    store,
                    "dependency layer",
                    &theirs.layer.digest,
                    theirs.layer.size,
                )?;
                layers[1].digest = theirs.layer.digest;
                layers[1].size = theirs.layer.size;
                layers[1].diff_id = theirs.layer.diff_id;
                layers[1].entries = theirs.layer.entries;
                layers[1].uploaded = false;
                deps_record = Some((theirs, false));
            }
        }
    }

    // Storage manifests: captured with the commit's dependency layer (unpacked from the store,
    // digests checked), else static. A step and a timing of its own, though it runs inside the
    // upload: the capture needs the layer stored, and the manifest it goes into comes after.
    let layer = deps_record.as_ref().map(|(rec, _)| &rec.layer);
    progress.begin(Step::Storage, None);
    let storage_start = Instant::now();
    let (storage, storage_warnings) =
        storage_source.manifests(&opts.node, None, layer, store, tmp.path());
    let storage_seconds = storage_start.elapsed().as_secs_f64();
    for w in &storage_warnings {
        progress.warn(w);
    }
    progress.end(Step::Storage, &crate::storage::summary(storage.as_ref()));
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
    let put = blobs::put_blob(store, &id, PutBody::Bytes(manifest_bytes), opts.rebuild)?;
    let manifest_uploaded = put.created;
    if manifest_uploaded {
        uploaded_bytes += manifest_size;
    }
    if put.repaired {
        progress.warn(&format!(
            "{} did not match its digest; replaced with the rebuilt bytes",
            keys::blob(&id)
        ));
        repaired.push(keys::blob(&id));
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
        seconds: (upload_start.elapsed().as_secs_f64() - storage_seconds).max(0.0),
    });
    timer.0.push(Timing {
        step: "storage manifests",
        seconds: storage_seconds,
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
        repaired,
        skipped_submodules,
        timings: timer.0,
    })
}
