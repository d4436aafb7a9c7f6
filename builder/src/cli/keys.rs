//! `builder keygen` and `builder sign`: key files and signatures.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context as _;
use artifact::Digest;
use artifact::sign::{self, SecretKey};
use artifact::store::{PutOutcome, Store};
use builder::{Error, inspect};

use super::{outln, print_json, write_file};

/// What signing an artifact did, for the JSON output.
#[derive(serde::Serialize)]
pub struct SignReport {
    pub key_id: String,
    pub key: String,
    /// False if the store already held this signature.
    pub created: bool,
}

pub fn sign_and_report(
    store: &dyn Store,
    id: &Digest,
    key: &SecretKey,
) -> anyhow::Result<SignReport> {
    let (record, outcome) = sign::sign_artifact(store, id, key).map_err(Error::from)?;
    let created = outcome == PutOutcome::Created;
    eprintln!(
        "  signed by key {}{}",
        record.key_id,
        if created {
            ""
        } else {
            " (signature already stored)"
        }
    );
    Ok(SignReport {
        key: artifact::keys::signature(id, &record.key_id),
        key_id: record.key_id,
        created,
    })
}

pub fn cmd_sign(
    store: &dyn Store,
    hash: &str,
    key_file: &Path,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let key = SecretKey::load(key_file).map_err(Error::from)?;
    let (id, _) = inspect::show(store, hash)?;
    eprintln!("{id}:");
    let s = sign_and_report(store, &id, &key)?;
    if json {
        print_json(&serde_json::json!({ "id": id, "signature": s }))?;
    } else {
        outln!("{}", s.key_id);
    }
    Ok(ExitCode::SUCCESS)
}

/// Writes PREFIX.key (0600) and PREFIX.pub. Refuses, before writing anything, if either
/// exists; if the second write fails, the first file is removed again.
pub fn cmd_keygen(prefix: &Path, json: bool) -> anyhow::Result<ExitCode> {
    let with_ext = |ext: &str| {
        let mut p = prefix.as_os_str().to_owned();
        p.push(ext);
        PathBuf::from(p)
    };
    let (secret_path, public_path) = (with_ext(".key"), with_ext(".pub"));
    for p in [&secret_path, &public_path] {
        if p.symlink_metadata().is_ok() {
            return Err(Error::Config(format!(
                "{} exists (keygen never overwrites a key)",
                p.display()
            ))
            .into());
        }
    }
    let key = SecretKey::generate();
    let public = key.public();
    let new_file = |path: &Path, mode: u32, text: &str| {
        write_file(path, mode, true, |f| f.write_all(text.as_bytes()))
            .with_context(|| format!("writing {}", path.display()))
    };
    new_file(&secret_path, 0o600, &key.to_text())?;
    if let Err(e) = new_file(&public_path, 0o644, &public.to_text()) {
        let _ = std::fs::remove_file(&secret_path);
        return Err(e);
    }
    eprintln!(
        "wrote {} (secret, keep it private) and {}",
        secret_path.display(),
        public_path.display()
    );
    if json {
        print_json(&serde_json::json!({
            "key_id": public.key_id(),
            "secret_key_file": secret_path,
            "public_key_file": public_path,
        }))?;
    } else {
        outln!("{}", public.key_id());
    }
    Ok(ExitCode::SUCCESS)
}
