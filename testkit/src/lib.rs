//! Test support shared by the workspace's tests, and the test bed.
//!
//! - [`require`]: the one way a test meets a missing real part (fails under `CI=true`,
//!   skips with a printed reason elsewhere), with [`require!`].
//! - [`paths`], [`cmd`]: the workspace, built binaries, running commands.
//! - [`repo`]: git repositories made from `fixtures/service`, variants built with `builder`.
//! - [`store`]: directory stores, blob paths, corrupting a blob.
//! - [`net`]: free ports, waiting for a port, a minimal HTTP GET.
//! - [`browser`]: headless Chromium through ChromeDriver (WebDriver), screenshots, a strict
//!   well-formedness check, and `target/ci-artifacts/` where CI keeps what tests leave.
//! - [`events`]: the applier's event streams in a failed assertion, the failures first.
//! - [`config`]: config files written by serialising the real config types.
//! - [`bed`]: the typed description of the test bed (`testbed.json`) and clients for its
//!   parts; [`testbed`]: the bed itself (the `testbed` binary, `ci/testbed`, is its front).
//!
//! Unlike the product's libraries, this crate reads the environment (`CI`, `TESTBED_DIR`,
//! `CI_STATE_DIR`) and prints skip notices: that is its job.

pub mod bed;
pub mod browser;
pub mod cmd;
pub mod config;
pub mod events;
pub mod net;
pub mod paths;
pub mod repo;
pub mod require;
pub mod store;
pub mod testbed;

pub use bed::Bed;
pub use cmd::{json_lines, run, run_ok};
pub use events::why;
pub use net::{free_port, http_get, port_open, wait_port, wait_until};
pub use paths::{bin, workspace};
pub use repo::{FixtureRepo, build_variants};
pub use require::{Missing, S3Env, missing, node_tools, s3_env, tools};
