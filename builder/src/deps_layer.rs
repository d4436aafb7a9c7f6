//! The dependency-layer step of a build: reuse the layer recorded under `deps/<key>`, or run
//! npm in the fixed build directory ([`crate::npm_dir`]), pack `node_modules` and, when a
//! layer is already recorded for the key, prove the new one identical to it.
//!
//! Reuse checks the recorded blobs first: the layer blob must exist with its recorded size and
//! the lockfile blob must hash to its digest. A missing blob is re-created by running npm again
//! (create-if-absent, nothing is deleted); a blob with the wrong size or content fails the build
//! ([`Error::BadBlob`]) before anything is written, since replacing a stored object is left
//! to `--rebuild` and `verify --repair`. With `rebuild`, npm always runs; a layer whose content
//! (`diff_id`) differs from the recorded one fails with [`Error::LayerDiffers`], naming the first
//! differing file, before anything is uploaded.

use std::path::{Path, PathBuf};

use artifact::pack::{self, PackKind, PackOptions};
use artifact::store::{PutBody, Store};
use artifact::{Digest, keys};

use crate::blobs::{self, get_json};
use crate::deps::{self, DEPS_RECORD_FORMAT, DepsFiles, DepsRecord, KeyInputs, NodeFacts};
use crate::npm_dir::NpmDir;
use crate::progress::{Progress, Step};
use crate::{Error, compare};

/// A blob the build has made and will store.
#[derive(Debug)]
pub(crate) struct Pending {
    pub digest: Digest,
    pub size: u64,
    pub body: PutBody,
    /// Index of the layer in the report, for its `uploaded` flag.
    pub layer: Option<usize>,
}

/// What the step settled on.
#[derive(Debug)]
pub(crate) struct DepsLayer {
    pub record: DepsRecord,
    /// npm ran and this build made the record (it is not stored yet).
    pub new_record: bool,
    /// npm did not run: the recorded layer was reused.
    pub reused: bool,
    /// npm ran for a key that was already recorded, and produced the same layer.
    pub reproduced: bool,
    pub blobs: Vec<Pending>,
}

/// Inputs of the step.
pub(crate) struct DepsStep<'a> {
    pub store: &'a dyn Store,
    pub files: &'a DepsFiles,
    pub user_args: &'a [String],
    pub recorded_args: &'a [String],
    pub node: &'a NodeFacts,
    pub npm: &'a deps::NpmOptions,
    pub work_dir: &'a Path,
    /// Where the packed layer goes (the build's temp directory).
    pub out_dir: &'a Path,
    pub pack: &'a PackOptions,
    pub rebuild: bool,
    pub progress: &'a dyn Progress,
}

/// Why a recorded layer cannot be reused as it is.
enum Reuse {
    Ok,
    /// A blob is missing: npm runs to re-create it.
    Missing(String),
}

fn check_recorded(store: &dyn Store, rec: &DepsRecord) -> Result<Reuse, Error> {
    let layer_key = keys::blob(&rec.layer.digest);
    if store.head(&layer_key)?.is_none() {
        return Ok(Reuse::Missing(layer_key));
    }
    blobs::check_size(store, "dependency layer", &rec.layer.digest, rec.layer.size)?;
    if blobs::get_verified(store, "lockfile", &rec.lockfile_blob)?.is_none() {
        return Ok(Reuse::Missing(keys::blob(&rec.lockfile_blob)));
    }
    Ok(Reuse::Ok)
}

impl DepsStep<'_> {
    /// The key of this step's inputs.
    pub fn key(&self) -> String {
        let mut inputs = KeyInputs::new(self.files, self.recorded_args, self.node);
        inputs.layer_format = self.pack.compression.format_version();
        inputs.key()
    }

    fn reuse(rec: DepsRecord) -> DepsLayer {
        DepsLayer {
            record: rec,
            new_record: false,
            reused: true,
            reproduced: false,
            blobs: Vec::new(),
        }
    }

    pub fn run(&self, timer: &mut dyn FnMut(&'static str, f64)) -> Result<DepsLayer, Error> {
        let key = self.key();
        let dkey = keys::deps(&key);
        let mut existing: Option<DepsRecord> = get_json(self.store, &dkey)?;
        if let Some(rec) = &existing
            && !self.rebuild
        {
            match check_recorded(self.store, rec)? {
                Reuse::Ok => {
                    self.progress.end(
                        Step::Npm,
                        &format!(
                            "reused dependency layer {} (key {})",
                            rec.layer.digest.short(12),
                            &key[..12]
                        ),
                    );
                    return Ok(Self::reuse(rec.clone()));
                }
                Reuse::Missing(blob) => self.progress.warn(&format!(
                    "{dkey} is recorded but {blob} is missing; running npm to re-create it"
                )),
            }
        }

        let waited = std::cell::Cell::new(false);
        let dir = NpmDir::acquire(self.work_dir, &key, &|lock| {
            waited.set(true);
            self.progress.warn(&format!(
                "another build of dependency key {} is running ({}); waiting for it",
                &key[..12],
                lock.display()
            ));
        })?;
        if waited.get() && !self.rebuild && existing.is_none() {
            // The build we waited for has most likely recorded the layer.
            existing = get_json(self.store, &dkey)?;
            if let Some(rec) = &existing
                && let Reuse::Ok = check_recorded(self.store, rec)?
            {
                return Ok(Self::reuse(rec.clone()));
            }
        }

        self.progress.begin(Step::Npm, None);
        let t = std::time::Instant::now();
        let installed = deps::install(&dir, self.files, self.user_args, self.npm)?;
        timer("npm", t.elapsed().as_secs_f64());
        self.progress.end(
            Step::Npm,
            &format!(
                "npm {} {}{}",
                installed.npm_version,
                self.recorded_args.join(" "),
                if installed.lockfile_generated {
                    " (lockfile generated)"
                } else {
                    ""
                }
            ),
        );
        let t = std::time::Instant::now();
        let entries =
            pack::walk_dir(&installed.node_modules, "node_modules").map_err(|source| {
                Error::Pack {
                    what: "dependency",
                    source,
                }
            })?;
        timer("walk node_modules", t.elapsed().as_secs_f64());
        let native = entries
            .iter()
            .any(|e| matches!(e.kind, PackKind::File { .. }) && e.path.ends_with(".node"));
        let deps_opts = PackOptions {
            mtime: deps::DEPS_MTIME,
            ..self.pack.clone()
        };
        let deps_path = self.out_dir.join("deps.tar.gz");
        let t = std::time::Instant::now();
        let info = crate::build::pack_to_file(
            entries,
            &deps_opts,
            &deps_path,
            "dependency",
            Step::PackDeps,
            self.progress,
        )?;
        timer("pack node_modules", t.elapsed().as_secs_f64());
        drop(dir);
        let lock_digest = Digest::of(&installed.lockfile);
        let lock_size = installed.lockfile.len() as u64;

        let Some(rec) = existing else {
            let record = DepsRecord {
                format: DEPS_RECORD_FORMAT,
                key: key.clone(),
                media_type: self.pack.compression.media_type().to_string(),
                layer: info.clone(),
                lockfile_blob: lock_digest,
                lockfile_generated: installed.lockfile_generated,
                node_version: self.node.version.clone(),
                npm_version: installed.npm_version,
                npm_args: self.recorded_args.to_vec(),
                native,
                platform: self.node.platform(),
            };
            return Ok(DepsLayer {
                record,
                new_record: true,
                reused: false,
                reproduced: false,
                blobs: vec![
                    Pending {
                        digest: info.digest,
                        size: info.size,
                        body: PutBody::File(deps_path),
                        layer: Some(1),
                    },
                    Pending {
                        digest: lock_digest,
                        size: lock_size,
                        body: PutBody::Bytes(installed.lockfile),
                        layer: None,
                    },
                ],
            });
        };

        // A layer is recorded for this key: the new one must be the same.
        if info.diff_id != rec.layer.diff_id {
            return Err(Error::LayerDiffers {
                key: dkey,
                recorded: rec.layer.diff_id.to_string(),
                produced: info.diff_id.to_string(),
                first_difference: self.first_difference(&rec, &deps_path),
            });
        }
        if lock_digest != rec.lockfile_blob {
            return Err(Error::LayerDiffers {
                key: dkey,
                recorded: rec.layer.diff_id.to_string(),
                produced: info.diff_id.to_string(),
                first_difference: format!(
                    "the layer is the same, but the lockfile npm used hashes to {lock_digest}, \
                     {} is recorded",
                    rec.lockfile_blob
                ),
            });
        }
        let mut blobs = vec![Pending {
            digest: lock_digest,
            size: lock_size,
            body: PutBody::Bytes(installed.lockfile),
            layer: None,
        }];
        if info.digest == rec.layer.digest {
            blobs.insert(
                0,
                Pending {
                    digest: info.digest,
                    size: info.size,
                    body: PutBody::File(deps_path),
                    layer: Some(1),
                },
            );
        } else {
            // Same content, other compressed bytes (another compressor): the recorded blob
            // stays; it can be checked but not re-created from these bytes.
            let key = keys::blob(&rec.layer.digest);
            match blobs::stored_digest(self.store, &key)? {
                Some((d, _)) if d == rec.layer.digest => {}
                other => {
                    return Err(Error::CannotRepair {
                        key,
                        detail: format!(
                            "the stored blob {}; this builder compresses the same content to {}, \
                             not to the recorded bytes",
                            if other.is_some() {
                                "does not match its digest"
                            } else {
                                "is missing"
                            },
                            info.digest
                        ),
                    });
                }
            }
        }
        Ok(DepsLayer {
            record: rec,
            new_record: false,
            reused: false,
            reproduced: true,
            blobs,
        })
    }

    /// The first differing file between the recorded layer and the new one at `path`.
    fn first_difference(&self, rec: &DepsRecord, path: &PathBuf) -> String {
        let key = keys::blob(&rec.layer.digest);
        let recorded = match self.store.get(&key) {
            Ok(g) => g.reader,
            Err(e) => return format!("the recorded layer {key} cannot be read ({e})"),
        };
        let produced = match std::fs::File::open(path) {
            Ok(f) => std::io::BufReader::new(f),
            Err(e) => return format!("the new layer cannot be read ({e})"),
        };
        match compare::first_difference(self.pack.compression, recorded, produced) {
            Ok(Some(d)) => d,
            Ok(None) => "no file differs (the tar headers do)".into(),
            Err(e) => format!("the layers cannot be compared ({e})"),
        }
    }
}
