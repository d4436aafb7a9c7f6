//! A read-only [`Store`] of presigned URLs: `get` of a key is a plain HTTP GET of its URL, so
//! a target fetches layers without store credentials. URLs are redacted (query, which
//! carries the signature, removed) in every message.

use std::collections::BTreeMap;
use std::io::Read;
use std::time::Duration;

use artifact::Digest;
use artifact::store::{ETag, GetResult, ObjectMeta, PutBody, PutOutcome, Store, StoreError};

/// A read-only store of presigned URLs: `get` of a key is a plain HTTP GET of its URL.
#[derive(Debug)]
pub struct UrlStore {
    urls: BTreeMap<String, String>,
    agent: ureq::Agent,
}

impl UrlStore {
    pub fn new(urls: BTreeMap<String, String>) -> Self {
        let config = ureq::Agent::config_builder()
            .timeout_connect(Some(Duration::from_secs(10)))
            .timeout_recv_response(Some(Duration::from_secs(60)))
            .http_status_as_error(false)
            .build();
        UrlStore {
            urls,
            agent: ureq::Agent::new_with_config(config),
        }
    }

    fn read_only(&self, key: &str) -> StoreError {
        StoreError::Other {
            store: self.location(),
            detail: format!("{key}: presigned URLs are read-only"),
        }
    }
}

/// The URL without its query (which carries the signature), for messages.
fn redact(url: &str) -> &str {
    url.split('?').next().unwrap_or(url)
}

impl Store for UrlStore {
    fn location(&self) -> String {
        "presigned URLs".into()
    }
    fn put_if_absent(
        &self,
        key: &str,
        _: PutBody,
        _: Option<&Digest>,
    ) -> Result<PutOutcome, StoreError> {
        Err(self.read_only(key))
    }
    fn put_cas(&self, key: &str, _: &[u8], _: Option<&ETag>) -> Result<ETag, StoreError> {
        Err(self.read_only(key))
    }
    fn get(&self, key: &str) -> Result<GetResult, StoreError> {
        let url = self.urls.get(key).ok_or_else(|| StoreError::NotFound {
            store: self.location(),
            key: key.to_string(),
        })?;
        let resp = self
            .agent
            .get(url)
            .call()
            .map_err(|e| StoreError::Unavailable {
                store: redact(url).to_string(),
                detail: e.to_string(),
            })?;
        let status = resp.status().as_u16();
        if status != 200 {
            let mut body = String::new();
            let _ = resp
                .into_body()
                .into_reader()
                .take(512)
                .read_to_string(&mut body);
            let detail = format!("HTTP {status}: {}", body.trim());
            return Err(match status {
                403 => StoreError::Denied {
                    store: redact(url).to_string(),
                    detail: format!("presigned URL refused (expired?): {detail}"),
                },
                404 => StoreError::NotFound {
                    store: redact(url).to_string(),
                    key: key.to_string(),
                },
                _ => StoreError::Other {
                    store: redact(url).to_string(),
                    detail,
                },
            });
        }
        let size = resp
            .headers()
            .get("content-length")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        Ok(GetResult {
            meta: ObjectMeta {
                key: key.to_string(),
                size,
                etag: ETag(String::new()),
            },
            reader: Box::new(resp.into_body().into_reader()),
        })
    }
    fn head(&self, key: &str) -> Result<Option<ObjectMeta>, StoreError> {
        Err(self.read_only(key))
    }
    fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>, StoreError> {
        Err(self.read_only(prefix))
    }
    fn delete(&self, key: &str) -> Result<(), StoreError> {
        Err(self.read_only(key))
    }
    fn delete_if(&self, key: &str, _: &ETag) -> Result<(), StoreError> {
        Err(self.read_only(key))
    }
    fn presign_get(&self, _: &str, _: Duration) -> Result<Option<String>, StoreError> {
        Ok(None)
    }
}
