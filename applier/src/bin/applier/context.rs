//! What every command needs before it acts: the layered configuration (files, `APPLIER_*`
//! variables, flags), the store, and the environment's context. The binary is the one place
//! that reads the process environment; the library takes what it read as data.

use std::sync::Arc;

use applier::config::{Layers, Resolved};
use applier::engine::EnvContext;
use artifact::store::StoreOptions;

use crate::cli::Cli;
use crate::exit::Failure;

pub fn resolve_config(cli: &Cli) -> Result<Resolved, Failure> {
    let mut files = cli.config.clone();
    if files.is_empty()
        && let Some(f) = std::env::current_dir()
            .ok()
            .and_then(|d| applier::config::default_file(&d))
    {
        files.push(f);
    }
    let env: Vec<(String, String)> = std::env::vars()
        .filter(|(k, _)| k.starts_with("APPLIER_"))
        .collect();
    Layers {
        files,
        env,
        store_flag: cli.store.clone(),
        sets: cli.sets.clone(),
    }
    .resolve()
    .map_err(Failure::config)
}

/// Who runs this and how we know ([`applier::identity`]): `--who`, else the process
/// environment, read here and nowhere else.
pub fn identity(cli: &Cli) -> applier::identity::Identity {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "localhost".into());
    applier::identity::resolve(cli.who.as_deref(), &|k| std::env::var(k).ok(), &host)
}

pub fn open_store(r: &Resolved) -> Result<Arc<dyn artifact::Store>, Failure> {
    let so = &r.config.store_options;
    let opts = StoreOptions {
        s3_endpoint: so.s3_endpoint.clone(),
        s3_region: so.s3_region.clone(),
        s3_force_path_style: so.s3_force_path_style,
        ..Default::default()
    };
    artifact::store::open(&r.config.store, &opts).map_err(|e| {
        Failure::refused(anyhow::Error::new(e).context("opening the store")).hint(
            "check `store` (`--show-config` says where it was set) and the store's credentials",
        )
    })
}

pub fn env_ctx(r: &Resolved, env: &str, who: &str) -> Result<EnvContext, Failure> {
    let cfg = r.env(env).map_err(Failure::config)?;
    let store = open_store(r)?;
    Ok(EnvContext::new(
        env,
        cfg,
        store,
        r.config.lease_ttl.0,
        who,
        r.config.store_options.max_concurrent_requests,
    ))
}
