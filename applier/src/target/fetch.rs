//! Fetch: an artifact into `releases/<commit>`, verified as it streams.
//!
//! Each layer streams from the store through the digest check into
//! [`artifact::unpack::Unpacker`] (tee'd into the blob cache) in one pass; a mismatch or hostile
//! archive leaves no release directory and `current` untouched. A layer already in the blob
//! cache (and still matching its digest) is not downloaded again. The layers come from
//! presigned URLs ([`super::UrlStore`]: the target holds no store credentials), a store
//! location named in the request, or the store an in-process root was given.

use std::fs;
use std::io::{self, Read, Write};
use std::path::Path;
use std::sync::Arc;

use artifact::manifest::Manifest;
use artifact::store::Store;
use artifact::unpack::{Expected, UnpackLimits, Unpacker};
use artifact::{Digest, keys};
use serde::{Deserialize, Serialize};

use super::{HostRoot, UrlStore, now_rfc3339, write_atomic};
use crate::protocol::{FetchReport, FetchUrlsRequest, HostError, io_err};

/// What `.release.json` in a release directory records.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(super) struct ReleaseMeta {
    pub(super) commit: String,
    pub(super) manifest: Digest,
    fetched_at: String,
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
            let trash = self.root.join("releases").join(format!(
                ".trash-{}-{}",
                commit,
                rand::random::<u32>()
            ));
            fs::rename(&dest, &trash)
                .map_err(io_err(format!("moving aside {}", dest.display())))?;
            let _ = fs::remove_dir_all(&trash);
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
        let mut up = Unpacker::new(dest, limits)?;
        let mut downloaded = 0;
        for layer in &manifest.layers {
            let expected = Expected {
                digest: Some(layer.digest),
                size: Some(layer.size),
                diff_id: Some(layer.diff_id),
            };
            let cache = self
                .root
                .join("cache/blobs/sha256")
                .join(layer.digest.hex());
            let cached_ok = cache.is_file()
                && matches!(Digest::of_file(&cache), Ok((d, n)) if d == layer.digest && n == layer.size);
            if cached_ok {
                let f = fs::File::open(&cache)
                    .map_err(io_err(format!("opening {}", cache.display())))?;
                up.layer(io::BufReader::new(f), &expected)?;
                continue;
            }
            let _ = fs::remove_file(&cache);
            let got = store.get(&keys::blob(&layer.digest))?;
            let tmp = cache.with_extension(format!("tmp-{}", rand::random::<u32>()));
            let file =
                fs::File::create(&tmp).map_err(io_err(format!("creating {}", tmp.display())))?;
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
                    downloaded += layer.size;
                }
                (Ok(_), Some(_)) => {
                    // The release is fine; only the cache copy failed.
                    let _ = fs::remove_file(&tmp);
                    downloaded += layer.size;
                }
                (Err(e), _) => {
                    let _ = fs::remove_file(&tmp);
                    return Err(e.into());
                }
            }
        }
        let stats = up.finish()?;
        let meta = ReleaseMeta {
            commit: commit.clone(),
            manifest: *digest,
            fetched_at: now_rfc3339(),
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

    pub(super) fn release_meta(&self, commit: &str) -> Result<ReleaseMeta, HostError> {
        let p = self.release_dir(commit).join(".release.json");
        let b = fs::read(&p).map_err(|_| HostError::NotFetched(commit.to_string()))?;
        serde_json::from_slice(&b).map_err(|_| HostError::NotFetched(commit.to_string()))
    }
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
