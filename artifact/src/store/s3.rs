//! The S3 store: AWS S3 or any S3-compatible server (MinIO, Ceph RGW, s3s-fs).
//!
//! Create-if-absent is `PutObject` with `If-None-Match: *` (multipart for large bodies, the
//! condition on `CompleteMultipartUpload`, the upload aborted on any failure); compare-and-swap
//! is `If-Match: <etag>`; every upload carries `x-amz-checksum-sha256` (per part for multipart).
//! A body whose content does not match the digest the caller gave is refused before the object
//! becomes visible: single uploads are hashed before they are sent, multipart uploads before
//! they are completed; the server's own check covers the transport.
//!
//! The trait is synchronous: the store owns a small tokio runtime and blocks on it, from any
//! number of threads at once (from inside another tokio runtime too, via a helper thread).
//! Streaming gets bridge the SDK body into a `Read`, one chunk at a time. Connections time out
//! after 3 s and the SDK retries at most 3 attempts, so a server that is down fails in seconds.
//!
//! Known gaps of the test server, s3s-fs 0.14.1 (AWS S3 and MinIO do not have them): it checks
//! `If-Match` / `If-None-Match` before writing, without a lock, so racing conditional writers can
//! all succeed (the lease is only as safe as the server's conditional writes); it verifies
//! `x-amz-checksum-sha256` only after the object is in place (the client-side check above keeps a
//! wrong digest from getting there); it lists without ETags (this store then asks per object);
//! and it names files after base64 of bucket and key, so keys past ~150 bytes fail there.

use std::future::Future;
use std::io::{self, Read};
use std::sync::Arc;
use std::time::Duration;

use aws_config::meta::region::RegionProviderChain;
use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_config::{BehaviorVersion, Region};
use aws_sdk_s3::Client;
use aws_sdk_s3::config::{RequestChecksumCalculation, ResponseChecksumValidation};
use aws_sdk_s3::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_s3::presigning::PresigningConfig;
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{ChecksumAlgorithm, CompletedMultipartUpload, CompletedPart};
use bytes::Bytes;

use super::{
    ETag, GetResult, ObjectMeta, PutBody, PutOutcome, Store, StoreError, StoreOptions, validate_key,
};
use crate::Digest;
use crate::digest::Hasher;

const DEFAULT_MULTIPART_THRESHOLD: u64 = 64 << 20;
const DEFAULT_PART_SIZE: u64 = 16 << 20;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// From sending a request to the first byte of its response (uploads included).
const READ_TIMEOUT: Duration = Duration::from_secs(300);
const MAX_ATTEMPTS: u32 = 3;
/// Bodies above this are checked with a `HEAD` first, so an existing object is not re-sent.
const HEAD_FIRST_ABOVE: u64 = 1 << 20;

pub struct S3Store {
    bucket: String,
    prefix: String,
    /// Where requests go, for messages.
    endpoint: String,
    client: Client,
    rt: Arc<Rt>,
    multipart_threshold: u64,
    part_size: u64,
}

impl std::fmt::Debug for S3Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3Store")
            .field("bucket", &self.bucket)
            .field("prefix", &self.prefix)
            .field("endpoint", &self.endpoint)
            .field("multipart_threshold", &self.multipart_threshold)
            .field("part_size", &self.part_size)
            .finish_non_exhaustive()
    }
}

/// The store's runtime. Dropping it never blocks (a plain `Runtime` drop panics inside another
/// runtime's context), so a store or a body reader may be dropped anywhere.
struct Rt(Option<tokio::runtime::Runtime>);

impl std::ops::Deref for Rt {
    type Target = tokio::runtime::Runtime;
    fn deref(&self) -> &Self::Target {
        self.0.as_ref().expect("runtime present until drop")
    }
}

impl Drop for Rt {
    fn drop(&mut self) {
        if let Some(rt) = self.0.take() {
            rt.shutdown_background();
        }
    }
}

/// Runs `fut` to completion on `rt` from synchronous code. Inside another runtime's context
/// (where `block_on` would panic) it blocks a scoped helper thread instead.
fn block_on<F>(rt: &tokio::runtime::Runtime, fut: F) -> F::Output
where
    F: Future + Send,
    F::Output: Send,
{
    if tokio::runtime::Handle::try_current().is_ok() {
        std::thread::scope(|s| {
            s.spawn(|| rt.block_on(fut))
                .join()
                .unwrap_or_else(|p| std::panic::resume_unwind(p))
        })
    } else {
        rt.block_on(fut)
    }
}

/// An error and its sources, `outer: inner: innermost`, without debug dumps.
fn chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut out = err.to_string();
    let mut cur = err.source();
    while let Some(e) = cur {
        let s = e.to_string();
        if !out.ends_with(&s) {
            out.push_str(": ");
            out.push_str(&s);
        }
        cur = e.source();
    }
    out
}

/// What a failed request means for the store.
enum Failure {
    /// 412: a condition (`If-Match`, `If-None-Match`) did not hold.
    Precondition,
    Error(StoreError),
}

impl S3Store {
    /// `rest` is `bucket[/prefix]` (the part after `s3://`).
    pub fn from_url(rest: &str, opts: &StoreOptions) -> Result<Self, StoreError> {
        let location = format!("s3://{rest}");
        let bad = |detail: &str| StoreError::BadLocation {
            location: location.clone(),
            detail: detail.to_string(),
        };
        let (bucket, prefix) = match rest.split_once('/') {
            Some((b, p)) => (b, p.trim_end_matches('/')),
            None => (rest, ""),
        };
        if bucket.is_empty() {
            return Err(bad("no bucket name"));
        }
        if !prefix.is_empty() && validate_key(prefix).is_err() {
            return Err(bad(
                "the prefix must be a relative path without empty, `.` or `..` segments",
            ));
        }
        let part_size = opts.s3_part_size.unwrap_or(DEFAULT_PART_SIZE).max(1);
        let multipart_threshold = opts
            .s3_multipart_threshold
            .unwrap_or(DEFAULT_MULTIPART_THRESHOLD);

        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("s3-store")
            .enable_all()
            .build()
            .map_err(|e| StoreError::Io {
                context: "starting the S3 client runtime".into(),
                source: e,
            })?;

        let region = RegionProviderChain::first_try(opts.s3_region.clone().map(Region::new))
            .or_default_provider()
            .or_else(Region::new("us-east-1"));
        let mut loader = aws_config::defaults(BehaviorVersion::latest())
            .region(region)
            .timeout_config(
                TimeoutConfig::builder()
                    .connect_timeout(CONNECT_TIMEOUT)
                    .read_timeout(READ_TIMEOUT)
                    .build(),
            )
            .retry_config(RetryConfig::standard().with_max_attempts(MAX_ATTEMPTS));
        if let Some(ep) = &opts.s3_endpoint {
            loader = loader.endpoint_url(ep);
        }
        let sdk = block_on(&rt, loader.load());
        let endpoint = sdk.endpoint_url().map(str::to_string);
        let conf = aws_sdk_s3::config::Builder::from(&sdk)
            .force_path_style(opts.s3_force_path_style || endpoint.is_some())
            // We send x-amz-checksum-sha256 ourselves; no extra CRC trailers (not every
            // S3-compatible server reads aws-chunked bodies).
            .request_checksum_calculation(RequestChecksumCalculation::WhenRequired)
            .response_checksum_validation(ResponseChecksumValidation::WhenRequired)
            .build();
        Ok(S3Store {
            bucket: bucket.to_string(),
            prefix: prefix.to_string(),
            endpoint: endpoint.unwrap_or_else(|| "AWS S3".to_string()),
            client: Client::from_conf(conf),
            rt: Arc::new(Rt(Some(rt))),
            multipart_threshold,
            part_size,
        })
    }

    fn run<F>(&self, fut: F) -> F::Output
    where
        F: Future + Send,
        F::Output: Send,
    {
        block_on(&self.rt, fut)
    }

    fn full_key(&self, key: &str) -> Result<String, StoreError> {
        validate_key(key)?;
        Ok(self.with_prefix(key))
    }

    fn with_prefix(&self, s: &str) -> String {
        if self.prefix.is_empty() {
            s.to_string()
        } else {
            format!("{}/{s}", self.prefix)
        }
    }

    /// Classifies a failed request on `key`.
    fn failure<E>(&self, key: &str, err: SdkError<E>) -> Failure
    where
        E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    {
        let store = self.location();
        let unavailable = |what: &str| {
            Failure::Error(StoreError::Unavailable {
                store: store.clone(),
                detail: format!(
                    "{what} talking to {} after {MAX_ATTEMPTS} attempts: {} (is the S3 server running and reachable?)",
                    self.endpoint,
                    chain(&err)
                ),
            })
        };
        let status = match &err {
            SdkError::DispatchFailure(d) if d.is_timeout() => return unavailable("timed out"),
            SdkError::DispatchFailure(d) if d.is_io() => return unavailable("connection failed"),
            SdkError::DispatchFailure(_) => return unavailable("request failed"),
            SdkError::TimeoutError(_) => return unavailable("timed out"),
            SdkError::ServiceError(e) => e.raw().status().as_u16(),
            SdkError::ResponseError(e) => e.raw().status().as_u16(),
            _ => 0,
        };
        let code = err.code().unwrap_or_default().to_string();
        let detail = match (err.code(), err.message()) {
            (Some(c), Some(m)) => format!("{c}: {m} (HTTP {status})"),
            (Some(c), None) => format!("{c} (HTTP {status})"),
            _ => format!("{} (HTTP {status})", chain(&err)),
        };
        let key = key.to_string();
        Failure::Error(match (status, code.as_str()) {
            (412, _) => return Failure::Precondition,
            (404, _) | (_, "NoSuchKey") | (_, "NotFound") => StoreError::NotFound { store, key },
            (_, "NoSuchBucket") => StoreError::BadLocation {
                location: store,
                detail,
            },
            (403, _) | (_, "AccessDenied") => StoreError::Denied { store, detail },
            (
                _,
                "BadDigest" | "InvalidDigest" | "XAmzContentSHA256Mismatch" | "InvalidChecksum",
            ) => StoreError::Checksum { key, detail },
            // 409 ConditionalRequestConflict: a concurrent conditional write; retrying helps.
            (409, _) | (500.., _) => StoreError::Unavailable { store, detail },
            _ => StoreError::Other { store, detail },
        })
    }

    fn error<E>(&self, key: &str, err: SdkError<E>) -> StoreError
    where
        E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    {
        match self.failure(key, err) {
            Failure::Precondition => StoreError::Conflict {
                key: key.to_string(),
            },
            Failure::Error(e) => e,
        }
    }

    fn put_single(
        &self,
        key: &str,
        full: &str,
        data: Vec<u8>,
        sha256: &Digest,
    ) -> Result<PutOutcome, StoreError> {
        let req = self
            .client
            .put_object()
            .bucket(&self.bucket)
            .key(full)
            .if_none_match("*")
            .checksum_sha256(sha256.base64())
            .body(ByteStream::from(data));
        match self.run(req.send()) {
            Ok(_) => Ok(PutOutcome::Created),
            Err(e) => match self.failure(key, e) {
                Failure::Precondition => Ok(PutOutcome::AlreadyExists),
                Failure::Error(e) => Err(e),
            },
        }
    }

    fn put_multipart(
        &self,
        key: &str,
        full: &str,
        body: &mut dyn Read,
        size: u64,
        sha256: Option<&Digest>,
    ) -> Result<PutOutcome, StoreError> {
        let created = self
            .run(
                self.client
                    .create_multipart_upload()
                    .bucket(&self.bucket)
                    .key(full)
                    .checksum_algorithm(ChecksumAlgorithm::Sha256)
                    .send(),
            )
            .map_err(|e| self.error(key, e))?;
        let Some(upload_id) = created.upload_id().map(str::to_string) else {
            return Err(StoreError::Other {
                store: self.location(),
                detail: format!("{key}: CreateMultipartUpload returned no upload id"),
            });
        };
        let result = self.upload_parts(key, full, &upload_id, body, size, sha256);
        if !matches!(result, Ok(PutOutcome::Created)) {
            // Best effort: parts of an aborted upload are never visible, and a bucket lifecycle
            // rule reaps uploads whose abort could not be sent.
            let abort = self
                .client
                .abort_multipart_upload()
                .bucket(&self.bucket)
                .key(full)
                .upload_id(&upload_id)
                .send();
            if let Err(e) = self.run(abort) {
                tracing::warn!(key, upload_id, error = %DisplayErrorContext(&e), "could not abort multipart upload");
            }
        }
        result
    }

    fn upload_parts(
        &self,
        key: &str,
        full: &str,
        upload_id: &str,
        body: &mut dyn Read,
        size: u64,
        sha256: Option<&Digest>,
    ) -> Result<PutOutcome, StoreError> {
        let mut whole = Hasher::new();
        let mut parts = Vec::new();
        let mut part_number = 0i32;
        loop {
            let mut buf = Vec::with_capacity(self.part_size.min(size) as usize);
            Read::take(&mut *body, self.part_size)
                .read_to_end(&mut buf)
                .map_err(|e| StoreError::Io {
                    context: format!("reading the body of {key}"),
                    source: e,
                })?;
            if buf.is_empty() && part_number > 0 {
                break;
            }
            part_number += 1;
            whole.update(&buf);
            let part_sha = Digest::of(&buf).base64();
            let last = (buf.len() as u64) < self.part_size;
            let out = self
                .run(
                    self.client
                        .upload_part()
                        .bucket(&self.bucket)
                        .key(full)
                        .upload_id(upload_id)
                        .part_number(part_number)
                        .checksum_sha256(&part_sha)
                        .body(ByteStream::from(buf))
                        .send(),
                )
                .map_err(|e| self.error(key, e))?;
            parts.push(
                CompletedPart::builder()
                    .part_number(part_number)
                    .set_e_tag(out.e_tag().map(str::to_string))
                    .checksum_sha256(out.checksum_sha256().unwrap_or(&part_sha))
                    .build(),
            );
            if last {
                break;
            }
        }
        let (digest, _) = whole.finish();
        if let Some(want) = sha256
            && *want != digest
        {
            return Err(StoreError::Checksum {
                key: key.to_string(),
                detail: format!("expected {want}, got {digest}"),
            });
        }
        let complete = self
            .client
            .complete_multipart_upload()
            .bucket(&self.bucket)
            .key(full)
            .upload_id(upload_id)
            .if_none_match("*")
            .multipart_upload(
                CompletedMultipartUpload::builder()
                    .set_parts(Some(parts))
                    .build(),
            );
        match self.run(complete.send()) {
            Ok(_) => Ok(PutOutcome::Created),
            Err(e) => match self.failure(key, e) {
                Failure::Precondition => Ok(PutOutcome::AlreadyExists),
                Failure::Error(e) => Err(e),
            },
        }
    }
}

/// The body of a get, read one SDK chunk at a time.
struct BodyReader {
    rt: Arc<Rt>,
    body: ByteStream,
    chunk: Bytes,
}

impl Read for BodyReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.chunk.is_empty() {
            match block_on(&self.rt, self.body.next()) {
                None => return Ok(0),
                Some(Ok(b)) => self.chunk = b,
                Some(Err(e)) => return Err(io::Error::other(e)),
            }
        }
        let n = buf.len().min(self.chunk.len());
        buf[..n].copy_from_slice(&self.chunk[..n]);
        let _ = self.chunk.split_to(n);
        Ok(n)
    }
}

fn meta(key: &str, size: Option<i64>, etag: Option<&str>) -> ObjectMeta {
    ObjectMeta {
        key: key.to_string(),
        size: size.unwrap_or(0).max(0) as u64,
        etag: ETag(etag.unwrap_or_default().to_string()),
    }
}

impl Store for S3Store {
    fn location(&self) -> String {
        if self.prefix.is_empty() {
            format!("s3://{}", self.bucket)
        } else {
            format!("s3://{}/{}", self.bucket, self.prefix)
        }
    }

    fn put_if_absent(
        &self,
        key: &str,
        body: PutBody,
        sha256: Option<&Digest>,
    ) -> Result<PutOutcome, StoreError> {
        let full = self.full_key(key)?;
        let size = match &body {
            PutBody::Bytes(b) => b.len() as u64,
            PutBody::File(p) => std::fs::metadata(p)
                .map_err(|e| StoreError::Io {
                    context: format!("reading {}", p.display()),
                    source: e,
                })?
                .len(),
        };
        if size > HEAD_FIRST_ABOVE && self.head(key)?.is_some() {
            return Ok(PutOutcome::AlreadyExists);
        }
        if size > self.multipart_threshold {
            return match body {
                PutBody::Bytes(b) => {
                    self.put_multipart(key, &full, &mut b.as_slice(), size, sha256)
                }
                PutBody::File(p) => {
                    let f = std::fs::File::open(&p).map_err(|e| StoreError::Io {
                        context: format!("opening {}", p.display()),
                        source: e,
                    })?;
                    self.put_multipart(key, &full, &mut io::BufReader::new(f), size, sha256)
                }
            };
        }
        let data = match body {
            PutBody::Bytes(b) => b,
            PutBody::File(p) => std::fs::read(&p).map_err(|e| StoreError::Io {
                context: format!("reading {}", p.display()),
                source: e,
            })?,
        };
        let digest = Digest::of(&data);
        if let Some(want) = sha256
            && *want != digest
        {
            return Err(StoreError::Checksum {
                key: key.to_string(),
                detail: format!("expected {want}, got {digest}"),
            });
        }
        self.put_single(key, &full, data, &digest)
    }

    fn put_cas(&self, key: &str, data: &[u8], expected: Option<&ETag>) -> Result<ETag, StoreError> {
        let full = self.full_key(key)?;
        let mut req = self
            .client
            .put_object()
            .bucket(&self.bucket)
            .key(&full)
            .checksum_sha256(Digest::of(data).base64())
            .body(ByteStream::from(data.to_vec()));
        req = match expected {
            Some(etag) => req.if_match(&etag.0),
            None => req.if_none_match("*"),
        };
        match self.run(req.send()) {
            Ok(out) => match out.e_tag() {
                Some(e) => Ok(ETag(e.to_string())),
                None => Err(StoreError::Other {
                    store: self.location(),
                    detail: format!("{key}: PutObject returned no ETag"),
                }),
            },
            Err(e) => match self.failure(key, e) {
                // Some servers answer If-Match on a missing key with 404.
                Failure::Precondition | Failure::Error(StoreError::NotFound { .. }) => {
                    Err(StoreError::Conflict {
                        key: key.to_string(),
                    })
                }
                Failure::Error(e) => Err(e),
            },
        }
    }

    fn get(&self, key: &str) -> Result<GetResult, StoreError> {
        let full = self.full_key(key)?;
        let out = self
            .run(
                self.client
                    .get_object()
                    .bucket(&self.bucket)
                    .key(&full)
                    .send(),
            )
            .map_err(|e| self.error(key, e))?;
        let meta = meta(key, out.content_length(), out.e_tag());
        let reader = BodyReader {
            rt: self.rt.clone(),
            body: out.body,
            chunk: Bytes::new(),
        };
        Ok(GetResult {
            meta,
            reader: Box::new(reader),
        })
    }

    fn head(&self, key: &str) -> Result<Option<ObjectMeta>, StoreError> {
        let full = self.full_key(key)?;
        match self.run(
            self.client
                .head_object()
                .bucket(&self.bucket)
                .key(&full)
                .send(),
        ) {
            Ok(out) => Ok(Some(meta(key, out.content_length(), out.e_tag()))),
            Err(e) => match self.error(key, e) {
                StoreError::NotFound { .. } => Ok(None),
                e => Err(e),
            },
        }
    }

    fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>, StoreError> {
        if prefix.contains('\0') || prefix.contains('\\') || prefix.starts_with('/') {
            return Err(StoreError::InvalidKey(prefix.to_string()));
        }
        let strip = if self.prefix.is_empty() {
            String::new()
        } else {
            format!("{}/", self.prefix)
        };
        let full_prefix = format!("{strip}{prefix}");
        let mut out = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let req = self
                .client
                .list_objects_v2()
                .bucket(&self.bucket)
                .prefix(&full_prefix)
                .set_continuation_token(token.take());
            let page = self.run(req.send()).map_err(|e| self.error(prefix, e))?;
            for obj in page.contents() {
                let Some(k) = obj.key().and_then(|k| k.strip_prefix(&strip)) else {
                    continue;
                };
                // Only keys this store could have written (skips directory markers `a/`).
                if validate_key(k).is_err() {
                    continue;
                }
                match obj.e_tag() {
                    Some(e) if !e.is_empty() => out.push(meta(k, obj.size(), Some(e))),
                    // Some S3-compatible servers (s3s-fs) list without ETags: ask for each.
                    _ => {
                        if let Some(m) = self.head(k)? {
                            out.push(m);
                        }
                    }
                }
            }
            match page.next_continuation_token() {
                Some(t) if page.is_truncated() == Some(true) => token = Some(t.to_string()),
                _ => break,
            }
        }
        out.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(out)
    }

    fn delete(&self, key: &str) -> Result<(), StoreError> {
        let full = self.full_key(key)?;
        match self.run(
            self.client
                .delete_object()
                .bucket(&self.bucket)
                .key(&full)
                .send(),
        ) {
            Ok(_) => Ok(()),
            Err(e) => match self.error(key, e) {
                StoreError::NotFound { .. } => Ok(()),
                e => Err(e),
            },
        }
    }

    fn delete_if(&self, key: &str, expected: &ETag) -> Result<(), StoreError> {
        let full = self.full_key(key)?;
        // Re-check first: not every S3-compatible server honours If-Match on DELETE.
        match self.head(key)? {
            Some(m) if &m.etag == expected => {}
            _ => {
                return Err(StoreError::Conflict {
                    key: key.to_string(),
                });
            }
        }
        let req = self
            .client
            .delete_object()
            .bucket(&self.bucket)
            .key(&full)
            .if_match(&expected.0);
        match self.run(req.send()) {
            Ok(_) => Ok(()),
            Err(e) => match self.failure(key, e) {
                Failure::Precondition | Failure::Error(StoreError::NotFound { .. }) => {
                    Err(StoreError::Conflict {
                        key: key.to_string(),
                    })
                }
                Failure::Error(e) => Err(e),
            },
        }
    }

    fn presign_get(&self, key: &str, expires: Duration) -> Result<Option<String>, StoreError> {
        let full = self.full_key(key)?;
        let conf = PresigningConfig::expires_in(expires).map_err(|e| StoreError::Other {
            store: self.location(),
            detail: format!("presigning {key}: {e}"),
        })?;
        let req = self.run(
            self.client
                .get_object()
                .bucket(&self.bucket)
                .key(&full)
                .presigned(conf),
        );
        let req = req.map_err(|e| self.error(key, e))?;
        Ok(Some(req.uri().to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usable_and_droppable_inside_another_runtime() {
        let outer = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        outer.block_on(async {
            let opts = StoreOptions {
                s3_endpoint: Some("http://127.0.0.1:1".into()),
                ..Default::default()
            };
            let s = S3Store::from_url("bucket", &opts).unwrap();
            let err = s.head("k").unwrap_err();
            assert!(matches!(err, StoreError::Unavailable { .. }), "{err:?}");
            drop(s);
        });
    }

    #[test]
    fn location_parsing() {
        let opts = StoreOptions {
            s3_endpoint: Some("http://127.0.0.1:1".into()),
            ..Default::default()
        };
        let s = S3Store::from_url("bucket/some/prefix/", &opts).unwrap();
        assert_eq!(s.location(), "s3://bucket/some/prefix");
        assert_eq!(s.full_key("a/b").unwrap(), "some/prefix/a/b");
        let s = S3Store::from_url("bucket", &opts).unwrap();
        assert_eq!(s.location(), "s3://bucket");
        assert!(matches!(
            S3Store::from_url("", &opts),
            Err(StoreError::BadLocation { .. })
        ));
        assert!(matches!(
            S3Store::from_url("b/../x", &opts),
            Err(StoreError::BadLocation { .. })
        ));
        assert!(matches!(s.full_key("../x"), Err(StoreError::InvalidKey(_))));
    }
}
