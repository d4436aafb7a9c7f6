//! What the builder reads from the service's own files: `deploy/service.yaml` (the shared
//! [`ServiceSpec`]: service name, `build.npm_args`; validated whole at build time) and
//! `package.json` (`name`, when the YAML has none).

use crate::Error;

pub use model::service::{SERVICE_YAML, ServiceSpec};

/// Parses `deploy/service.yaml` with the same reader the applier uses: an unknown key (a
/// typo like `chekcs:`) fails the build, naming the key and the file.
pub fn parse_service_yaml(bytes: &[u8]) -> Result<ServiceSpec, Error> {
    let text = std::str::from_utf8(bytes)
        .map_err(|_| Error::Config(format!("{SERVICE_YAML}: not UTF-8")))?;
    ServiceSpec::parse(text).map_err(|e| Error::Config(e.to_string()))
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
            c.build.npm_args,
            Some(vec![
                "--omit=dev".to_string(),
                "--ignore-scripts".to_string()
            ])
        );
        assert_eq!(parse_service_yaml(b"").unwrap(), ServiceSpec::default());
        let e = parse_service_yaml(b"chekcs: []\n").unwrap_err().to_string();
        assert!(e.contains("chekcs") && e.contains(SERVICE_YAML), "{e}");
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
