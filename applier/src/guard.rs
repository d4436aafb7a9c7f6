//! The storage-schema guard seam: decides what kind of deploy this is and whether it may go
//! ahead, from the storage manifests of the environment's current artifact and the new one.
//!
//! This is where `schema_guard::diff` plugs in. Until it does, [`check`] classifies by plain
//! equality: identical (or absent) storage manifests make a `code` deploy; any difference makes
//! a `schema` deploy, which is allowed but never rolled back automatically (the storage would
//! refuse the old schema).

use serde::{Deserialize, Serialize};
use serde_json::Value;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DeployType {
    Code,
    Config,
    Schema,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct GuardOutcome {
    pub deploy_type: DeployType,
    /// False: the deploy is refused (exit 3) for the reasons in `findings`.
    pub allowed: bool,
    pub findings: Vec<String>,
}

/// Compares the storage manifest of what the environment runs (`current`) with the new one.
pub fn check(current: Option<&Value>, new: Option<&Value>) -> GuardOutcome {
    match (current, new) {
        (Some(a), Some(b)) if a != b => GuardOutcome {
            deploy_type: DeployType::Schema,
            allowed: true,
            findings: vec!["storage manifest differs from the environment's current one".into()],
        },
        _ => GuardOutcome {
            deploy_type: DeployType::Code,
            allowed: true,
            findings: Vec::new(),
        },
    }
}
