//! What the builder reads from the service's own files: `deploy/service.yaml` (service name,
//! `build.npm_args`) and `package.json` (`name`, when the YAML has none).

use crate::Error;

/// Path of the service description inside the source tree.
pub const SERVICE_YAML: &str = "deploy/service.yaml";

/// The build-relevant part of `deploy/service.yaml`; every other key is ignored here.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ServiceConfig {
    /// `name`.
    pub name: Option<String>,
    /// `build.npm_args`: extra arguments for `npm ci` / `npm install`.
    pub npm_args: Option<Vec<String>>,
}

/// Parses `deploy/service.yaml`.
pub fn parse_service_yaml(bytes: &[u8]) -> Result<ServiceConfig, Error> {
    let v: serde_yaml::Value =
        serde_yaml::from_slice(bytes).map_err(|e| Error::Config(format!("{SERVICE_YAML}: {e}")))?;
    if v.is_null() {
        return Ok(ServiceConfig::default());
    }
    let map = v.as_mapping().ok_or_else(|| {
        Error::Config(format!(
            "{SERVICE_YAML}: expected a mapping at the top level"
        ))
    })?;
    let name = match map.get("name") {
        None | Some(serde_yaml::Value::Null) => None,
        Some(serde_yaml::Value::String(s)) if !s.trim().is_empty() => Some(s.trim().to_string()),
        Some(other) => {
            return Err(Error::Config(format!(
                "{SERVICE_YAML}: `name` must be a non-empty string, got {other:?}"
            )));
        }
    };
    let npm_args = match map.get("build").and_then(|b| b.get("npm_args")) {
        None | Some(serde_yaml::Value::Null) => None,
        Some(serde_yaml::Value::Sequence(items)) => Some(
            items
                .iter()
                .map(|i| match i {
                    serde_yaml::Value::String(s) => Ok(s.clone()),
                    other => Err(Error::Config(format!(
                        "{SERVICE_YAML}: `build.npm_args` items must be strings, got {other:?}"
                    ))),
                })
                .collect::<Result<Vec<_>, _>>()?,
        ),
        Some(serde_yaml::Value::String(s)) => {
            Some(s.split_whitespace().map(str::to_string).collect())
        }
        Some(other) => {
            return Err(Error::Config(format!(
                "{SERVICE_YAML}: `build.npm_args` must be a list of strings, got {other:?}"
            )));
        }
    };
    Ok(ServiceConfig { name, npm_args })
}

/// The `name` of a `package.json`, if it has one.
pub fn package_name(bytes: &[u8]) -> Result<Option<String>, Error> {
    let v: serde_json::Value =
        serde_json::from_slice(bytes).map_err(|e| Error::Config(format!("package.json: {e}")))?;
    Ok(v.get("name")
        .and_then(|n| n.as_str())
        .map(str::to_string)
        .filter(|s| !s.is_empty()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_name_and_npm_args() {
        let c = parse_service_yaml(
            b"name: svc\nport: 7231\nbuild:\n  npm_args: [--omit=dev, --ignore-scripts]\n",
        )
        .unwrap();
        assert_eq!(c.name.as_deref(), Some("svc"));
        assert_eq!(
            c.npm_args,
            Some(vec![
                "--omit=dev".to_string(),
                "--ignore-scripts".to_string()
            ])
        );
        assert_eq!(parse_service_yaml(b"").unwrap(), ServiceConfig::default());
        assert!(parse_service_yaml(b"build:\n  npm_args: [1]\n").is_err());
        assert!(parse_service_yaml(b"- a\n").is_err());
    }

    #[test]
    fn package_json_name() {
        assert_eq!(
            package_name(br#"{"name":"x","version":"1.0.0"}"#)
                .unwrap()
                .as_deref(),
            Some("x")
        );
        assert_eq!(package_name(br#"{"version":"1.0.0"}"#).unwrap(), None);
        assert!(package_name(b"{").is_err());
    }
}
