//! Where the store is: flags > environment > defaults, each value with the place it came from.
//!
//! The caller passes the environment in as a lookup function, so this module (like the rest of
//! the library) never reads the process environment itself.

use std::fmt;
use std::sync::Arc;

use artifact::store::{self, Store, StoreOptions};

use crate::Error;

/// The store location used when neither a flag nor the environment names one.
pub const DEFAULT_STORE: &str = "./.artifacts";

/// Environment variables naming the store, in order of precedence.
pub const STORE_ENV: [&str; 2] = ["BUILDER_STORE", "DEPLOY_STORE"];

/// Where a resolved value came from.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase", tag = "kind", content = "name")]
pub enum Origin {
    /// A command-line flag (its name).
    Flag(String),
    /// An environment variable (its name).
    Env(String),
    Default,
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::Flag(n) => write!(f, "flag {n}"),
            Origin::Env(n) => write!(f, "env {n}"),
            Origin::Default => write!(f, "default"),
        }
    }
}

/// One resolved setting.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Resolved<T> {
    pub value: T,
    pub origin: Origin,
}

/// Store settings given on the command line.
#[derive(Clone, Debug, Default)]
pub struct StoreFlags {
    pub store: Option<String>,
    pub s3_endpoint: Option<String>,
    pub s3_region: Option<String>,
    pub s3_force_path_style: Option<bool>,
}

/// The resolved store settings.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct StoreConfig {
    pub location: Resolved<String>,
    pub s3_endpoint: Resolved<Option<String>>,
    pub s3_region: Resolved<Option<String>>,
    pub s3_force_path_style: Resolved<bool>,
}

fn pick<T>(
    flag: Option<T>,
    flag_name: &str,
    env_names: &[&str],
    env: &dyn Fn(&str) -> Option<String>,
    parse: impl Fn(&str, String) -> Result<T, Error>,
    default: T,
) -> Result<Resolved<T>, Error> {
    if let Some(v) = flag {
        return Ok(Resolved {
            value: v,
            origin: Origin::Flag(flag_name.to_string()),
        });
    }
    for name in env_names {
        if let Some(v) = env(name).filter(|v| !v.is_empty()) {
            return Ok(Resolved {
                value: parse(name, v)?,
                origin: Origin::Env(name.to_string()),
            });
        }
    }
    Ok(Resolved {
        value: default,
        origin: Origin::Default,
    })
}

/// Parses a boolean setting (`true/false`, `1/0`, `yes/no`, `on/off`).
pub fn parse_bool(name: &str, v: &str) -> Result<bool, Error> {
    match v.trim().to_ascii_lowercase().as_str() {
        "1" | "true" | "yes" | "on" => Ok(true),
        "0" | "false" | "no" | "off" => Ok(false),
        _ => Err(Error::Config(format!(
            "{name}={v:?} is not a boolean (true/false)"
        ))),
    }
}

/// Resolves the store settings: `flags`, then `env`, then defaults.
pub fn resolve_store(
    flags: &StoreFlags,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<StoreConfig, Error> {
    let location = pick(
        flags.store.clone(),
        "--store",
        &STORE_ENV,
        env,
        |_, v| Ok(v),
        DEFAULT_STORE.to_string(),
    )?;
    let s3_endpoint = pick(
        flags.s3_endpoint.clone().map(Some),
        "--s3-endpoint",
        &["AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL"],
        env,
        |_, v| Ok(Some(v)),
        None,
    )?;
    let s3_region = pick(
        flags.s3_region.clone().map(Some),
        "--s3-region",
        &["AWS_REGION", "AWS_DEFAULT_REGION"],
        env,
        |_, v| Ok(Some(v)),
        None,
    )?;
    let s3_force_path_style = pick(
        flags.s3_force_path_style,
        "--s3-force-path-style",
        &["AWS_S3_FORCE_PATH_STYLE"],
        env,
        |name, v| parse_bool(name, &v),
        false,
    )?;
    Ok(StoreConfig {
        location,
        s3_endpoint,
        s3_region,
        s3_force_path_style,
    })
}

impl StoreConfig {
    /// The options to open the store with.
    pub fn options(&self) -> StoreOptions {
        StoreOptions {
            s3_endpoint: self.s3_endpoint.value.clone(),
            s3_region: self.s3_region.value.clone(),
            s3_force_path_style: self.s3_force_path_style.value,
            ..StoreOptions::default()
        }
    }

    /// Opens the store.
    pub fn open(&self) -> Result<Arc<dyn Store>, Error> {
        Ok(store::open(&self.location.value, &self.options())?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env_of(pairs: &'static [(&'static str, &'static str)]) -> impl Fn(&str) -> Option<String> {
        move |k| {
            pairs
                .iter()
                .find(|(n, _)| *n == k)
                .map(|(_, v)| v.to_string())
        }
    }

    #[test]
    fn flags_beat_env_beat_defaults() {
        let env = env_of(&[
            ("DEPLOY_STORE", "/from/deploy"),
            ("BUILDER_STORE", "s3://b/p"),
            ("AWS_REGION", "eu-west-1"),
            ("AWS_S3_FORCE_PATH_STYLE", "true"),
        ]);
        let c = resolve_store(&StoreFlags::default(), &env).unwrap();
        assert_eq!(c.location.value, "s3://b/p");
        assert_eq!(c.location.origin, Origin::Env("BUILDER_STORE".into()));
        assert_eq!(c.s3_region.value.as_deref(), Some("eu-west-1"));
        assert!(c.s3_force_path_style.value);
        assert_eq!(c.s3_endpoint.origin, Origin::Default);

        let flags = StoreFlags {
            store: Some("/flag".into()),
            s3_force_path_style: Some(false),
            ..Default::default()
        };
        let c = resolve_store(&flags, &env).unwrap();
        assert_eq!(c.location.value, "/flag");
        assert_eq!(c.location.origin, Origin::Flag("--store".into()));
        assert!(!c.s3_force_path_style.value);

        let c = resolve_store(&StoreFlags::default(), &env_of(&[])).unwrap();
        assert_eq!(c.location.value, DEFAULT_STORE);
        assert_eq!(c.location.origin, Origin::Default);
    }

    #[test]
    fn bad_boolean_is_a_config_error() {
        let env = env_of(&[("AWS_S3_FORCE_PATH_STYLE", "maybe")]);
        let e = resolve_store(&StoreFlags::default(), &env).unwrap_err();
        assert_eq!(e.kind(), crate::ErrorKind::Usage);
    }
}
