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

/// Where the S3-compatible test server is (`eval "$(ci/s3-server start)"` exports it).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct S3Env {
    pub endpoint: String,
    pub bucket: String,
    pub access_key_id: String,
    pub secret_access_key: String,
    pub region: String,
}

/// The S3 test server from the environment (`TEST_S3_ENDPOINT` or `AWS_ENDPOINT_URL`,
/// `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`; `TEST_S3_BUCKET` defaults to
/// `restbase-deploy-test`, `AWS_REGION` to `us-east-1`), or what is missing.
pub fn s3_env() -> Result<S3Env, Missing> {
    s3_env_from(|k| std::env::var(k).ok())
}

fn s3_env_from(var: impl Fn(&str) -> Option<String>) -> Result<S3Env, Missing> {
    let var = |k: &str| var(k).filter(|v| !v.is_empty());
    let need = |k: &str| {
        var(k).ok_or_else(|| {
            Missing::new(format!(
                "no S3 test server ({k} unset); run `eval \"$(ci/s3-server start)\"` first"
            ))
        })
    };
    Ok(S3Env {
        endpoint: var("TEST_S3_ENDPOINT")
            .map(Ok)
            .unwrap_or_else(|| need("AWS_ENDPOINT_URL"))?,
        access_key_id: need("AWS_ACCESS_KEY_ID")?,
        secret_access_key: need("AWS_SECRET_ACCESS_KEY")?,
        bucket: var("TEST_S3_BUCKET").unwrap_or_else(|| "restbase-deploy-test".into()),
        region: var("AWS_REGION").unwrap_or_else(|| "us-east-1".into()),
    })
}

#[cfg(test)]
mod s3_tests {
    use super::*;

    #[test]
    fn s3_env_names_the_first_missing_variable_and_defaults_the_rest() {
        let e = s3_env_from(|_| None).unwrap_err();
        assert!(e.reason.contains("AWS_ENDPOINT_URL"), "{e}");
        let vars = |k: &str| match k {
            "AWS_ENDPOINT_URL" => Some("http://127.0.0.1:9".to_string()),
            "AWS_ACCESS_KEY_ID" | "AWS_SECRET_ACCESS_KEY" => Some("k".to_string()),
            _ => None,
        };
        let s = s3_env_from(vars).unwrap();
        assert_eq!(s.endpoint, "http://127.0.0.1:9");
        assert_eq!(
            (s.bucket.as_str(), s.region.as_str()),
            ("restbase-deploy-test", "us-east-1")
        );
    }
}
