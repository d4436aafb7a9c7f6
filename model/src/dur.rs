//! A duration as people write it in YAML: `30s`, `5m`, `1h 30m`, or a number of seconds.

use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::Value;

/// A duration written as `30s`, `5m`, `1h 30m` or a number of seconds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct Dur(pub Duration);

impl Dur {
    pub fn secs(n: u64) -> Dur {
        Dur(Duration::from_secs(n))
    }
}

impl Serialize for Dur {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&humantime::format_duration(self.0))
    }
}

impl<'de> Deserialize<'de> for Dur {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let v = Value::deserialize(d)?;
        match v {
            Value::Number(n) => {
                let secs = n
                    .as_f64()
                    .ok_or_else(|| serde::de::Error::custom("bad duration"))?;
                if !secs.is_finite() || secs < 0.0 {
                    return Err(serde::de::Error::custom("negative duration"));
                }
                Ok(Dur(Duration::from_secs_f64(secs)))
            }
            Value::String(s) => humantime::parse_duration(s.trim())
                .map(Dur)
                .map_err(|e| serde::de::Error::custom(format!("bad duration {s:?}: {e}"))),
            other => Err(serde::de::Error::custom(format!("bad duration {other}"))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_both_forms() {
        let d: Dur = serde_json::from_str("\"1m 30s\"").unwrap();
        assert_eq!(d.0.as_secs(), 90);
        let d: Dur = serde_json::from_str("2.5").unwrap();
        assert_eq!(d.0.as_millis(), 2500);
        assert!(serde_json::from_str::<Dur>("-1").is_err());
        assert!(serde_json::from_str::<Dur>("\"soon\"").is_err());
    }
}
