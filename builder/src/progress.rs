//! Progress reporting: the pipeline announces steps and byte counts through [`Progress`];
//! the binary draws bars on a terminal or writes log lines otherwise.

use std::io::{self, Write};

/// A step of the build that may take a while.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Step {
    /// Reading the commit's tree from git objects.
    ReadSource,
    /// Running npm to resolve `node_modules`.
    Npm,
    /// Packing the source layer.
    PackSource,
    /// Packing `node_modules`.
    PackDeps,
    /// Uploading missing blobs and records.
    Upload,
    /// Extracting each env's storage manifest (a capture runs the commit's code).
    Storage,
}

impl Step {
    pub fn label(self) -> &'static str {
        match self {
            Step::ReadSource => "read source",
            Step::Npm => "npm",
            Step::PackSource => "pack source",
            Step::PackDeps => "pack node_modules",
            Step::Upload => "upload",
            Step::Storage => "storage manifests",
        }
    }
}

/// Receives progress events. Every method has a no-op default.
pub trait Progress: Sync {
    /// A step starts; `total` is the amount of work in bytes when known.
    fn begin(&self, step: Step, total: Option<u64>) {
        let _ = (step, total);
    }
    /// `n` more bytes of the step are done.
    fn advance(&self, step: Step, n: u64) {
        let _ = (step, n);
    }
    /// A step ended, with a one-line summary.
    fn end(&self, step: Step, summary: &str) {
        let _ = (step, summary);
    }
    /// Something the user should know that does not stop the build.
    fn warn(&self, message: &str) {
        let _ = message;
    }
}

/// Ignores every event.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoProgress;
impl Progress for NoProgress {}

/// A writer that reports the bytes written through it as progress of `step`.
pub(crate) struct CountingWriter<'a, W> {
    pub inner: W,
    pub step: Step,
    pub progress: &'a dyn Progress,
}

impl<W: Write> Write for CountingWriter<'_, W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.progress.advance(self.step, n as u64);
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}
