//! The S3-compatible store of the bed: `ci/s3-server`, shared with the other tests. One
//! already running in the same state dir is reused (and left running by `down`); one the bed
//! started is stopped by `down`.

use std::collections::BTreeMap;
use std::process::Command;

use super::layout::write_atomic;
use super::procs;
use super::{Ctx, Error};
use crate::bed::S3;

impl Ctx {
    fn s3_script(&self) -> std::path::PathBuf {
        self.settings.ci_dir.join("s3-server")
    }

    fn s3_cmd(&self, verb: &str) -> Command {
        let mut c = Command::new(self.s3_script());
        c.arg(verb).env("CI_STATE_DIR", &self.layout.state_root);
        c
    }

    /// Starts or reuses the server; records its `export` lines in `<bed>/s3.env`.
    pub(super) fn start_s3(&self) -> Result<(), Error> {
        let envf = self.layout.path("s3.env");
        if !self.settings.s3 {
            return write_atomic(&envf, b"");
        }
        if !self.s3_script().exists() {
            if self.settings.ci {
                return Err(Error::Failed("ci/s3-server is missing".into()));
            }
            self.log("warning: ci/s3-server is missing; the bed has no S3 store");
            return write_atomic(&envf, b"");
        }
        let started = self.layout.path("s3.started");
        let out = if !started.exists() && procs::succeeds(&mut self.s3_cmd("env")) {
            self.log("s3: reusing the running ci/s3-server");
            procs::output(&mut self.s3_cmd("env"), "ci/s3-server env")?
        } else {
            let out = procs::output(&mut self.s3_cmd("start"), "ci/s3-server start")?;
            write_atomic(&started, b"")?;
            out
        };
        let lines: String = out
            .lines()
            .filter(|l| l.starts_with("export "))
            .map(|l| format!("{l}\n"))
            .collect();
        if lines.is_empty() {
            return Err(Error::Failed("ci/s3-server printed no export lines".into()));
        }
        write_atomic(&envf, lines.as_bytes())
    }

    pub(super) fn stop_s3(&self) {
        let started = self.layout.path("s3.started");
        if started.exists()
            && self.s3_script().exists()
            && !procs::succeeds(&mut self.s3_cmd("stop"))
        {
            self.log("warning: ci/s3-server stop failed");
        }
        let _ = std::fs::remove_file(started);
    }

    /// (line, ok) for `status`; None when the bed has no S3.
    pub(super) fn s3_status(&self) -> Option<(String, bool)> {
        let vars = self.s3_vars();
        if vars.is_empty() {
            return None;
        }
        let owner = if self.layout.path("s3.started").exists() {
            "started by the bed"
        } else {
            "shared"
        };
        let ok = self.s3_script().exists() && procs::succeeds(&mut self.s3_cmd("env"));
        let word = if ok { "running" } else { "stopped" };
        Some((format!("s3 {word} ({owner})"), ok))
    }

    /// The variables of `<bed>/s3.env`.
    pub(super) fn s3_vars(&self) -> BTreeMap<String, String> {
        let text = std::fs::read_to_string(self.layout.path("s3.env")).unwrap_or_default();
        text.lines()
            .filter_map(|l| l.strip_prefix("export "))
            .filter_map(|kv| kv.split_once('='))
            .map(|(k, v)| (k.to_string(), unquote(v)))
            .collect()
    }

    pub(super) fn s3_description(&self) -> Option<S3> {
        let env = self.s3_vars();
        let get = |k: &str| env.get(k).cloned().unwrap_or_default();
        if env.is_empty() {
            return None;
        }
        Some(S3 {
            endpoint: env
                .get("TEST_S3_ENDPOINT")
                .or(env.get("AWS_ENDPOINT_URL"))
                .cloned()
                .unwrap_or_default(),
            bucket: get("TEST_S3_BUCKET"),
            access_key_id: get("AWS_ACCESS_KEY_ID"),
            secret_access_key: get("AWS_SECRET_ACCESS_KEY"),
            region: get("AWS_REGION"),
            env,
        })
    }
}

/// A shell word as `ci/s3-server` writes it: bare, or single- or double-quoted.
fn unquote(v: &str) -> String {
    let v = v.trim();
    for q in ['\'', '"'] {
        if v.len() >= 2 && v.starts_with(q) && v.ends_with(q) {
            return v[1..v.len() - 1].to_string();
        }
    }
    v.to_string()
}
