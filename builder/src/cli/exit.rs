//! The one place where failures become exit codes and `hint:` lines (docs/builder.md,
//! "Exit codes", lists the same table).
//!
//! | code | meaning |
//! |---|---|
//! | 0 | success (also when stdout was closed early, as by `builder ls \| head`) |
//! | 1 | the build failed: git, node, npm, packing, local I/O |
//! | 3 | the store failed or is unreachable, or holds a record that does not parse |
//! | 4 | a blob is missing or does not match its digest or size (`verify`, `show`, or a build that would reuse it); `verify --trusted-key` found no valid signature |
//! | 5 | not reproducible: a different manifest for a built commit, a different dependency layer for a recorded key, or a blob that cannot be re-created |
//! | 64 | usage or configuration: bad flags, bad `deploy/service.yaml`, bad store location, unknown hash |

use std::process::ExitCode;

use builder::{Error, ErrorKind};

pub const BUILD: u8 = 1;
pub const STORE: u8 = 3;
pub const INTEGRITY: u8 = 4;
pub const NOT_REPRODUCIBLE: u8 = 5;
pub const USAGE: u8 = 64;

/// The exit code of a failure.
pub fn code(err: &anyhow::Error) -> u8 {
    match err.downcast_ref::<Error>().map(Error::kind) {
        Some(ErrorKind::Usage) => USAGE,
        Some(ErrorKind::Store) => STORE,
        Some(ErrorKind::Integrity) => INTEGRITY,
        Some(ErrorKind::NotReproducible) => NOT_REPRODUCIBLE,
        Some(ErrorKind::Build) | None => BUILD,
    }
}

/// True if the failure is stdout having been closed by its reader.
pub fn is_broken_pipe(err: &anyhow::Error) -> bool {
    err.chain().any(|e| {
        e.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

/// What a user can do about an error, when there is something.
pub fn hints(err: &anyhow::Error) -> Vec<String> {
    let Some(e) = err.downcast_ref::<Error>() else {
        return Vec::new();
    };
    let mut h = Vec::new();
    match e {
        Error::BadBlob { .. } => h.push(
            "`builder verify --repair <artifact> --repo <repository>` (or `builder build --rebuild` of \
             its commit) rebuilds the commit and replaces the bad blob; nothing else is changed"
                .to_string(),
        ),
        Error::LayerDiffers { .. } => h.push(
            "native modules record where they were built: use the --work-dir of the recorded build \
             (default /tmp); other differences come from the build machine (node, npm, compiler, \
             python, ~/.npmrc), which `builder show` records in part"
                .to_string(),
        ),
        Error::NotReproducible { .. } => h.push(
            "`builder show <commit>` prints what the earlier build recorded; rebuild with the same \
             node, npm and --work-dir"
                .to_string(),
        ),
        Error::CannotRepair { .. } => h.push(
            "repair with the builder version that made the artifact, or build a new commit".into(),
        ),
        Error::Npm { output, log, .. } => {
            if output.contains("gyp") && (output.contains("getaddrinfo") || output.contains("nodejs.org") || output.contains("ENOTFOUND")) {
                h.push(
                    "node-gyp could not get node's headers: point npm at them with `nodedir=/usr` \
                     in ~/.npmrc (or npm_config_nodedir); the nodejs package installs them in \
                     /usr/include/node"
                        .into(),
                );
            }
            if let Some(log) = log {
                h.push(format!("npm's full log of this run: {}", log.display()));
            }
        }
        Error::Git { context, .. } if context.starts_with("resolving") || context.starts_with("opening") => h.push(
            "--repo must be a git repository (worktree or bare) that has the revision".into(),
        ),
        Error::NotFound(_) | Error::BadQuery(_) => {
            h.push("`builder ls` lists the built commits and their artifacts".into())
        }
        Error::Ambiguous { .. } => h.push("give more hex digits".into()),
        Error::Store(artifact::StoreError::Unavailable { .. }) => h.push(
            "check --s3-endpoint (AWS_ENDPOINT_URL) and that the server is reachable".into(),
        ),
        Error::Store(artifact::StoreError::Denied { .. }) => h.push(
            "check the S3 credentials (AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, AWS_PROFILE)".into(),
        ),
        _ => {}
    }
    h
}

/// Prints a failure and its hints on stderr and returns its exit code; a closed stdout ends
/// the program quietly with 0 (the reader has all it wanted).
pub fn fail(err: anyhow::Error) -> ExitCode {
    if is_broken_pipe(&err) {
        return ExitCode::SUCCESS;
    }
    eprintln!("error: {err:#}");
    for h in hints(&err) {
        eprintln!("hint: {h}");
    }
    ExitCode::from(code(&err))
}

/// Clap's own errors: `--help` and `--version` print and exit 0, anything else is usage (64).
pub fn clap(err: clap::Error) -> ExitCode {
    let _ = err.print();
    if err.use_stderr() {
        ExitCode::from(USAGE)
    } else {
        ExitCode::SUCCESS
    }
}
