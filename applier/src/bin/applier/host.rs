//! `applier host --root <root> <op>`: the target side of a remote transport. Each operation
//! runs one [`HostRoot`] function and prints `{"ok": true, "result": ...}` or
//! `{"ok": false, "error": ...}` on stdout. Everything of the `host` subcommand is here.

use anyhow::Context;
use applier::hostops::{
    HostRoot, PreflightRequest, ReadyRequest, ReleaseRef, RenderRequest, StartRequest,
};
use clap::Subcommand;

use crate::cli::Cli;
use crate::context::{open_store, resolve_config};
use crate::exit::{Exit, Failure};

#[derive(Subcommand)]
pub enum HostOp {
    Preflight {
        #[arg(long, default_value_t = 0)]
        min_free_bytes: u64,
        #[arg(long)]
        node: Option<String>,
    },
    /// Fetch and unpack an artifact from the store (`--store`).
    Fetch {
        manifest: String,
    },
    Render {
        #[arg(long)]
        request: String,
    },
    Switch {
        commit: String,
    },
    Start {
        #[arg(long)]
        request: String,
    },
    WaitReady {
        #[arg(long)]
        request: String,
    },
    Stop,
    Status,
    MarkGood {
        #[arg(long)]
        request: String,
    },
    Prune {
        #[arg(long, default_value_t = 3)]
        keep: usize,
    },
    /// This applier's version (the ssh transport compares it with its own).
    Version,
    /// Fetch from presigned URLs (or a directory store) given in the request; no credentials.
    FetchUrls {
        #[arg(long)]
        request: String,
    },
    /// A file under the root, as text.
    ReadFile {
        path: String,
    },
}

/// `--request -`: the request is on stdin.
fn req<T: serde::de::DeserializeOwned>(s: &str) -> Result<T, Failure> {
    let mut buf = String::new();
    let s = if s == "-" {
        std::io::Read::read_to_string(&mut std::io::stdin(), &mut buf)
            .context("reading the request from stdin")
            .map_err(Failure::usage)?;
        buf.as_str()
    } else {
        s
    };
    serde_json::from_str(s)
        .context("parsing --request")
        .map_err(Failure::usage)
}

pub fn run(cli: &Cli, root: &std::path::Path, op: &HostOp) -> Result<Exit, Failure> {
    let h = HostRoot::new(root);
    let out: Result<serde_json::Value, applier::hostops::HostError> = match op {
        HostOp::Preflight {
            min_free_bytes,
            node,
        } => h
            .preflight(&PreflightRequest {
                min_free_bytes: *min_free_bytes,
                node: node.clone(),
            })
            .map(|r| serde_json::to_value(r).unwrap()),
        HostOp::Fetch { manifest } => {
            let r = resolve_config(cli)?;
            let store = open_store(&r)?;
            let d: artifact::Digest = manifest.parse().map_err(Failure::usage)?;
            let m =
                artifact::resolve::load_verified(store.as_ref(), &d).map_err(Failure::refused)?;
            h.fetch(store.as_ref(), &d, &m, Default::default())
                .map(|r| serde_json::to_value(r).unwrap())
        }
        HostOp::Render { request } => h
            .render(&req::<RenderRequest>(request)?)
            .map(|r| serde_json::to_value(r).unwrap()),
        HostOp::Switch { commit } => h.switch(commit).map(|r| serde_json::to_value(r).unwrap()),
        HostOp::Start { request } => {
            h.start(&req::<StartRequest>(request)?)
                .map(|(child, info)| {
                    // Leave the service running after this process exits.
                    std::mem::forget(child);
                    serde_json::to_value(info).unwrap()
                })
        }
        HostOp::WaitReady { request } => h
            .wait_ready(&req::<ReadyRequest>(request)?)
            .map(|r| serde_json::to_value(r).unwrap()),
        HostOp::Stop => h.stop().map(|r| serde_json::to_value(r).unwrap()),
        HostOp::Status => h.status().map(|r| serde_json::to_value(r).unwrap()),
        HostOp::MarkGood { request } => h
            .mark_good(&req::<ReleaseRef>(request)?)
            .map(|r| serde_json::to_value(r).unwrap()),
        HostOp::Prune { keep } => h.prune(*keep).map(|r| serde_json::to_value(r).unwrap()),
        HostOp::Version => Ok(serde_json::to_value(applier::ssh::VersionReport {
            version: applier::VERSION.to_string(),
        })
        .unwrap()),
        HostOp::FetchUrls { request } => {
            let r: applier::ssh::FetchUrlsRequest = req(request)?;
            (|| {
                let m = r.verified_manifest()?;
                let store: std::sync::Arc<dyn artifact::Store> = match &r.store {
                    Some(loc) => artifact::store::open(loc, &Default::default())?,
                    None => std::sync::Arc::new(applier::ssh::UrlStore::new(r.urls.clone())),
                };
                h.fetch(store.as_ref(), &r.digest, &m, Default::default())
            })()
            .map(|r| serde_json::to_value(r).unwrap())
        }
        HostOp::ReadFile { path } => h
            .read_file(path)
            .map(|b| String::from_utf8_lossy(&b).into_owned().into()),
    };
    match out {
        Ok(v) => {
            println!("{}", serde_json::json!({"ok": true, "result": v}));
            Ok(Exit::Ok)
        }
        Err(e) => {
            println!(
                "{}",
                serde_json::json!({"ok": false, "error": e.to_string()})
            );
            Ok(Exit::Failed)
        }
    }
}
