//! The local transport: a host that is a directory on this machine. A request travels as a
//! function call to [`HostRoot::execute`] (errors stay typed); a fetch reads the layers from
//! the deploy host's own store.

use std::sync::Arc;

use artifact::store::Store;

use super::{Host, fetch_source};
use crate::config::HostConfig;
use crate::protocol::{HostError, HostRequest, HostResponse};
use crate::target::HostRoot;

/// A host that is a directory on this machine.
#[derive(Debug)]
pub struct LocalHost {
    name: String,
    cfg: HostConfig,
    root: HostRoot,
    store: Arc<dyn Store>,
}

impl LocalHost {
    pub fn new(name: &str, cfg: &HostConfig, store: Arc<dyn Store>) -> Self {
        LocalHost {
            name: name.to_string(),
            cfg: cfg.clone(),
            root: HostRoot::new(&cfg.root).with_store(store.clone()),
            store,
        }
    }
}

impl Host for LocalHost {
    fn name(&self) -> &str {
        &self.name
    }
    fn config(&self) -> &HostConfig {
        &self.cfg
    }
    fn call(&self, req: HostRequest) -> Result<HostResponse, HostError> {
        let req = match req {
            HostRequest::FetchUrls(f) => {
                HostRequest::FetchUrls(fetch_source(f, self.store.as_ref(), None)?)
            }
            r => r,
        };
        self.root.execute(req)
    }
}
