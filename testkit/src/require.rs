//! The one way a test meets a missing real part (a tool, the S3 server, the test bed): with
//! `CI=true` the test fails, naming the part; anywhere else it prints `SKIPPED <test>: <why>`
//! and returns. Tests use [`require!`](crate::require) around a check returning
//! `Result<T, Missing>`, so no test can pass silently on what it did not run.

use std::fmt;
use std::process::{Command, Stdio};

/// A real part a test needs and could not find, with what to do about it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Missing {
    /// What is missing and, where it helps, how to get it (`run ci/testbed up`).
    pub reason: String,
}

impl Missing {
    pub fn new(reason: impl Into<String>) -> Missing {
        Missing {
            reason: reason.into(),
        }
    }
}

impl fmt::Display for Missing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.reason)
    }
}

/// True when the tests run in CI (`CI=true`), where a missing part is a failure.
pub fn in_ci() -> bool {
    std::env::var("CI").as_deref() == Ok("true")
}

/// The running test's name (the test harness names each test's thread after it).
pub fn test_name() -> String {
    std::thread::current()
        .name()
        .unwrap_or("<test>")
        .to_string()
}

/// Reports a missing part for the running test: panics under `CI=true`, else prints
/// `SKIPPED <test>: <reason>` on stderr. The caller returns right after.
pub fn missing(m: &Missing) {
    let test = test_name();
    if in_ci() {
        panic!("{test}: {m} (CI=true: a test whose real part is missing fails)");
    }
    eprintln!("SKIPPED {test}: {m}");
}

/// Unwraps `Result<T, Missing>`, or reports the missing part ([`missing`]) and returns from
/// the calling test.
#[macro_export]
macro_rules! require {
    ($e:expr) => {
        match $e {
            Ok(v) => v,
            Err(m) => {
                $crate::require::missing(&m);
                return;
            }
        }
    };
}

/// True if `tool --version` runs and exits 0.
pub fn have(tool: &str) -> bool {
    Command::new(tool)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Every one of `names` answers `--version`, else the missing ones.
pub fn tools(names: &[&str]) -> Result<(), Missing> {
    let missing: Vec<&str> = names.iter().copied().filter(|t| !have(t)).collect();
    if missing.is_empty() {
        Ok(())
    } else {
        Err(Missing::new(format!(
            "{} not found (ci/install-deps installs them)",
            missing.join(", ")
        )))
    }
}

/// node, npm and git: what building or running the fixture service needs.
pub fn node_tools() -> Result<(), Missing> {
    tools(&["node", "npm", "git"])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tool_that_does_not_exist_is_missing_and_named() {
        let e = tools(&["sh-does-not-exist-4711"]).unwrap_err();
        assert!(e.reason.contains("sh-does-not-exist-4711"), "{e}");
    }

    #[test]
    fn the_test_name_is_the_harness_thread_name() {
        assert!(test_name().ends_with("the_test_name_is_the_harness_thread_name"));
    }
}
