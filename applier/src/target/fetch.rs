//! Fetch: an artifact into `releases/<commit>`, verified as it streams.
//!
//! Each layer the host does not hold yet streams from the store through the digest check into
//! an [`artifact::unpack::Unpacker`] of its own (tee'd into the blob cache) in one pass, making
//! its tree in the layer store ([`super::layers`]); a layer already there is neither
//! downloaded nor unpacked again. The release is then composed from the layers' trees by hard
//! links ([`Unpacker::link_tree`], the same checks across layers as an archive's), made
//! durable and renamed into place, and `.release.json` (naming its layers) is written last. A
//! mismatch or hostile archive leaves no tree and no release directory, and `current`
//! untouched. A blob in the cache (still matching its digest) is not downloaded again. The
//! layers come from presigned URLs ([`super::UrlStore`]: the target holds no store
//! credentials), a store location named in the request, or the store an in-process root was
//! given.

use std::fs;
use std::io::{self, Read, Write};
use std::path::Path;
use std::sync::Arc;

use artifact::manifest::{Layer, Manifest};
use artifact::store::Store;
use artifact::unpack::{Expected, UnpackLimits, UnpackStats, Unpacker};
use artifact::{Digest, keys};
use serde::{Deserialize, Serialize};

use super::layers::LayerRecord;
use super::{HostRoot, UrlStore, discard_dir, now_rfc3339, write_atomic};
use crate::protocol::{FetchReport, FetchUrlsRequest, HostError, io_err};

/// What `.release.json` in a release directory records.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(super) struct ReleaseMeta {
    pub(super) commit: String,
    pub(super) manifest: Digest,
    fetched_at: String,
    /// The layers whose trees it links (none: a release made before the layer store, which
    /// holds copies of its own).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub(super) layers: Vec<Digest>,
}

impl HostRoot {
    /// Fetches what a [`FetchUrlsRequest`] names: its manifest (checked against the digest)
    /// from its presigned URLs, its store location, or this root's own store.
    pub fn fetch_request(&self, req: &FetchUrlsRequest) -> Result<FetchReport, HostError> {
        let m = req.verified_manifest()?;
        let store: Arc<dyn Store> = match (&req.store, &self.store) {
            (Some(loc), _) => artifact::store::open(loc, &Default::default())?,
            (None, Some(own)) if req.urls.is_empty() => own.clone(),
            (None, _) => Arc::new(UrlStore::new(req.urls.clone())),
        };
        self.fetch(store.as_ref(), &req.digest, &m, self.limits.clone())
    }

    /// Fetches and unpacks an artifact into `releases/<commit>` (no-op if already there).
    pub fn fetch(
        &self,
        store: &dyn Store,
        digest: &Digest,
        manifest: &Manifest,
        limits: UnpackLimits,
    ) -> Result<FetchReport, HostError> {
        let commit = manifest.source.commit.clone();
        self.ensure_dirs()?;
        let dest = self.release_dir(&commit);
        if dest.exists() {
            let meta: Option<ReleaseMeta> = fs::read(dest.join(".release.json"))
                .ok()
                .and_then(|b| serde_json::from_slice(&b).ok());
            if meta.as_ref().map(|m| &m.manifest) == Some(digest) {
                return Ok(FetchReport {
                    release: commit,
                    cached: true,
                    downloaded: 0,
                    entries: 0,
                });
            }
            if self.current().as_deref() == Some(commit.as_str()) {
                return Err(HostError::Preflight(format!(
                    "release {commit} is current but holds a different build; refusing to replace it"
                )));
            }
            discard_dir(&dest)?;
        }
        self.begin("fetch", Some(&commit))?;
        let r = self.fetch_into(store, digest, manifest, &dest, limits);
        self.end()?;
        r
    }

    fn fetch_into(
        &self,
        store: &dyn Store,
        digest: &Digest,
        manifest: &Manifest,
        dest: &Path,
        limits: UnpackLimits,
    ) -> Result<FetchReport, HostError> {
        let commit = manifest.source.commit.clone();
        // Held until the release is complete: prune removes no tree while a fetch holds it.
        let _store = self.layers_shared()?;
        let mut downloaded = 0;
        let mut attempt = 0;
        let (trees, stats) = loop {
            let mut trees = Vec::new();
            for layer in &manifest.layers {
                let (tree, rec, n) = self.layer_tree(store, layer, limits.clone())?;
                downloaded += n;
                trees.push((layer.digest, tree, rec));
            }
            match compose(dest, &trees, &limits)? {
                Ok(stats) => break (trees, stats),
                // Changed on the host since it was made: never linked; unpacked afresh (from
                // the blob or the store), once.
                Err((d, _)) if attempt == 0 => {
                    self.discard_layer(&d)?;
                    attempt += 1;
                }
                Err((d, got)) => {
                    let rec = &trees.iter().find(|t| t.0 == d).expect("composed from").2;
                    self.discard_layer(&d)?;
                    return Err(HostError::Preflight(format!(
                        "the unpacked layer {d} changed on this host as it was linked ({} \
                         entries, {} bytes; it was made with {}, {}): removed it",
                        got.entries, got.bytes, rec.entries, rec.bytes
                    )));
                }
            }
        };
        let meta = ReleaseMeta {
            commit: commit.clone(),
            manifest: *digest,
            fetched_at: now_rfc3339(),
            layers: trees.iter().map(|(d, _, _)| *d).collect(),
        };
        write_atomic(
            &dest.join(".release.json"),
            &serde_json::to_vec_pretty(&meta).expect("serialises"),
        )?;
        Ok(FetchReport {
            release: commit,
            cached: false,
            downloaded,
            entries: stats.entries,
        })
    }

    /// Streams `layer` into `up`: from the blob cache when it holds the layer (still matching
    /// its digest), else from the store, tee'd into the cache. Returns the bytes downloaded.
    pub(super) fn stream_layer(
        &self,
        store: &dyn Store,
        layer: &Layer,
        up: &mut Unpacker,
    ) -> Result<u64, HostError> {
        let expected = Expected {
            digest: Some(layer.digest),
            size: Some(layer.size),
            diff_id: Some(layer.diff_id),
        };
        let cache = self.blob_path(&layer.digest);
        let cached_ok = cache.is_file()
            && matches!(Digest::of_file(&cache), Ok((d, n)) if d == layer.digest && n == layer.size);
        if cached_ok {
            let f =
                fs::File::open(&cache).map_err(io_err(format!("opening {}", cache.display())))?;
            up.layer(io::BufReader::new(f), &expected)?;
            return Ok(0);
        }
        let _ = fs::remove_file(&cache);
        let got = store.get(&keys::blob(&layer.digest))?;
        let tmp = cache.with_extension(format!("tmp-{}", rand::random::<u32>()));
        let file = fs::File::create(&tmp).map_err(io_err(format!("creating {}", tmp.display())))?;
        let mut tee = Tee {
            inner: got.reader,
            out: io::BufWriter::new(file),
            failed: None,
        };
        let res = up.layer(&mut tee, &expected);
        let Tee { out, failed, .. } = tee;
        match (res, failed) {
            (Ok(_), None) => {
                let f = out
                    .into_inner()
                    .map_err(|e| io_err("writing blob cache")(e.into_error()))?;
                f.sync_all().map_err(io_err("syncing blob cache"))?;
                fs::rename(&tmp, &cache)
                    .map_err(io_err(format!("renaming into {}", cache.display())))?;
            }
            (Ok(_), Some(_)) => {
                // The layer is fine; only the cache copy failed.
                let _ = fs::remove_file(&tmp);
            }
            (Err(e), _) => {
                let _ = fs::remove_file(&tmp);
                return Err(e.into());
            }
        }
        Ok(layer.size)
    }

    pub(super) fn release_meta(&self, commit: &str) -> Result<ReleaseMeta, HostError> {
        let p = self.release_dir(commit).join(".release.json");
        let b = fs::read(&p).map_err(|_| HostError::NotFetched(commit.to_string()))?;
        serde_json::from_slice(&b).map_err(|_| HostError::NotFetched(commit.to_string()))
    }
}

/// The release at `dest`, from the layers' trees by hard links, durable and renamed into
/// place; or the first layer whose tree is not what its record says (and what was linked).
type Composed = Result<UnpackStats, (Digest, UnpackStats)>;

fn compose(
    dest: &Path,
    trees: &[(Digest, std::path::PathBuf, LayerRecord)],
    limits: &UnpackLimits,
) -> Result<Composed, HostError> {
    let mut up = Unpacker::new(dest, limits.clone())?;
    for (d, tree, rec) in trees {
        let got = up.link_tree(tree)?;
        if got != rec.stats() {
            return Ok(Err((*d, got)));
        }
    }
    Ok(Ok(up.finish()?))
}

struct Tee<R, W: Write> {
    inner: R,
    out: W,
    failed: Option<io::Error>,
}

impl<R: Read, W: Write> Read for Tee<R, W> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        if self.failed.is_none()
            && let Err(e) = self.out.write_all(&buf[..n])
        {
            self.failed = Some(e);
        }
        Ok(n)
    }
}
