//! Validated names and ids.
//!
//! Everything that becomes part of a store key, a path on a host, a command line or an HTML
//! page is one of these types, parsed once where it enters (a config file, a store record, a
//! host's answer, a flag) and trusted afterwards. The rules are deliberately narrow:
//!
//! | type | pattern |
//! |---|---|
//! | [`Name`] (env, host, group, service names) | `[A-Za-z0-9][A-Za-z0-9._-]{0,127}` |
//! | [`CommitId`] | 40 or 64 lowercase hex digits (a git sha-1 or sha-256 object id) |
//! | [`DeployId`] | `[0-9A-Za-z][0-9A-Za-z-]{0,63}` |
//! | [`RefName`] (a git tag or branch) | segments of `[A-Za-z0-9._+-]`, joined by `/`, at most 200 |
//! | [`Address`] (a host's address, an ssh destination) | `[user@]host`: `[A-Za-z0-9_][A-Za-z0-9._-]{0,31}@` then `[A-Za-z0-9:\[][A-Za-z0-9.:%\[\]-]{0,252}` |
//!
//! None of them can hold whitespace, a shell metacharacter, or be `.`/`..`; none can start with
//! `-` (so none is ever read as an option by `ssh` or a shell command). Only a [`RefName`] holds
//! `/` (between segments, none of which starts with `.`), and no name holds `~`, so a ref name
//! becomes one store key segment with `/` written as `~` ([`RefName::key_segment`]).

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Why a string is not a valid name or id.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid {what} {value:?}: {rule}")]
pub struct NameError {
    pub what: &'static str,
    pub value: String,
    pub rule: &'static str,
}

fn shown(s: &str) -> String {
    s.chars().take(80).collect()
}

macro_rules! validated {
    ($(#[$doc:meta])* $ty:ident, $what:literal, $check:path) => {
        $(#[$doc])*
        #[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub struct $ty(String);

        impl $ty {
            /// Parses `s`, or says which rule it breaks.
            pub fn parse(s: &str) -> Result<Self, NameError> {
                match $check(s) {
                    Ok(()) => Ok($ty(s.to_string())),
                    Err(rule) => Err(NameError { what: $what, value: shown(s), rule }),
                }
            }
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl AsRef<str> for $ty {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl std::ops::Deref for $ty {
            type Target = str;
            fn deref(&self) -> &str {
                &self.0
            }
        }

        impl std::borrow::Borrow<str> for $ty {
            fn borrow(&self) -> &str {
                &self.0
            }
        }

        impl FromStr for $ty {
            type Err = NameError;
            fn from_str(s: &str) -> Result<Self, NameError> {
                $ty::parse(s)
            }
        }

        impl PartialEq<str> for $ty {
            fn eq(&self, other: &str) -> bool {
                self.0 == other
            }
        }

        impl PartialEq<&str> for $ty {
            fn eq(&self, other: &&str) -> bool {
                self.0 == *other
            }
        }

        impl Serialize for $ty {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(&self.0)
            }
        }

        impl<'de> Deserialize<'de> for $ty {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = String::deserialize(d)?;
                $ty::parse(&s).map_err(serde::de::Error::custom)
            }
        }
    };
}

fn check_name(s: &str) -> Result<(), &'static str> {
    let b = s.as_bytes();
    if b.is_empty() || b.len() > 128 {
        return Err("1 to 128 characters");
    }
    if !b[0].is_ascii_alphanumeric() {
        return Err("must start with a letter or digit");
    }
    if !b
        .iter()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'.' | b'_' | b'-'))
    {
        return Err("only letters, digits, '.', '_' and '-'");
    }
    Ok(())
}

fn check_commit(s: &str) -> Result<(), &'static str> {
    if !matches!(s.len(), 40 | 64) {
        return Err("40 or 64 hex digits");
    }
    if !s.bytes().all(|c| matches!(c, b'0'..=b'9' | b'a'..=b'f')) {
        return Err("lowercase hex digits only");
    }
    Ok(())
}

fn check_deploy_id(s: &str) -> Result<(), &'static str> {
    let b = s.as_bytes();
    if b.is_empty() || b.len() > 64 {
        return Err("1 to 64 characters");
    }
    if !b[0].is_ascii_alphanumeric() {
        return Err("must start with a letter or digit");
    }
    if !b.iter().all(|c| c.is_ascii_alphanumeric() || *c == b'-') {
        return Err("only letters, digits and '-'");
    }
    Ok(())
}

/// Git's rules for a ref's short name, narrowed: segments of `[A-Za-z0-9._+-]` joined by
/// single `/`, no segment starting with `.` or ending in `.lock`, no `..`, at most 200 bytes.
fn check_ref(s: &str) -> Result<(), &'static str> {
    if s.is_empty() || s.len() > 200 {
        return Err("1 to 200 characters");
    }
    if s.contains("..") {
        return Err("no `..`");
    }
    for seg in s.split('/') {
        if seg.is_empty() {
            return Err("no empty segment (leading, trailing or double `/`)");
        }
        if seg.starts_with('.') || seg.ends_with(".lock") {
            return Err("no segment starting with `.` or ending in `.lock`");
        }
        if !seg
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'.' | b'_' | b'-' | b'+'))
        {
            return Err("only letters, digits, '.', '_', '-', '+' and '/' between segments");
        }
    }
    if s.starts_with('-') {
        return Err("must not start with '-'");
    }
    Ok(())
}

fn check_address(s: &str) -> Result<(), &'static str> {
    let (user, host) = match s.split_once('@') {
        Some((u, h)) => (Some(u), h),
        None => (None, s),
    };
    if let Some(u) = user {
        let b = u.as_bytes();
        if b.is_empty() || b.len() > 32 {
            return Err("a user name of 1 to 32 characters before '@'");
        }
        if !(b[0].is_ascii_alphanumeric() || b[0] == b'_')
            || !b
                .iter()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'.' | b'_' | b'-'))
        {
            return Err("the user name: letters, digits, '.', '_' and '-', not starting with '-'");
        }
    }
    let b = host.as_bytes();
    if b.is_empty() || b.len() > 253 {
        return Err("a host of 1 to 253 characters");
    }
    if !(b[0].is_ascii_alphanumeric() || matches!(b[0], b':' | b'[')) {
        return Err("the host must start with a letter, a digit, ':' or '['");
    }
    if !b
        .iter()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'.' | b'-' | b':' | b'%' | b'[' | b']'))
    {
        return Err("the host: letters, digits, '.', '-', ':', '%', '[' and ']' only");
    }
    Ok(())
}

validated!(
    /// A git tag or branch name (`v1.4.2`, `main`, `release/2026-01`).
    RefName,
    "ref name",
    check_ref
);

impl RefName {
    /// The name as one store key segment: `/` written as `~` (which no ref name holds).
    pub fn key_segment(&self) -> String {
        self.0.replace('/', "~")
    }

    /// The inverse of [`RefName::key_segment`].
    pub fn from_key_segment(seg: &str) -> Result<Self, NameError> {
        RefName::parse(&seg.replace('~', "/"))
    }
}

validated!(
    /// An environment, host, group or service name: `[A-Za-z0-9][A-Za-z0-9._-]{0,127}`.
    Name,
    "name",
    check_name
);
validated!(
    /// A git commit id: 40 (sha-1) or 64 (sha-256) lowercase hex digits.
    CommitId,
    "commit id",
    check_commit
);
validated!(
    /// A deploy id: `[0-9A-Za-z][0-9A-Za-z-]{0,63}` (the applier makes them from the time).
    DeployId,
    "deploy id",
    check_deploy_id
);

validated!(
    /// A host address or ssh destination: `[user@]host`, where host is a DNS name, an IPv4 or
    /// an IPv6 address (`::1`, `[::1]`, `fe80::1%eth0`).
    Address,
    "address",
    check_address
);

impl CommitId {
    /// The first 12 hex digits, for people.
    pub fn short(&self) -> &str {
        &self.0[..12]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_refuse_paths_and_shell() {
        for ok in ["staging", "t1", "restbase1001.eqiad.wmnet", "group_a-2"] {
            assert!(Name::parse(ok).is_ok(), "{ok}");
        }
        for bad in [
            "", ".", "..", "../x", "a/b", "-rf", "a b", "$(id)", "a;b", "é", "a\nb", ".hidden",
        ] {
            assert!(Name::parse(bad).is_err(), "{bad:?}");
        }
        assert!(Name::parse(&"a".repeat(129)).is_err());
    }

    #[test]
    fn commit_ids_are_hex_of_the_right_length() {
        let c = CommitId::parse(&"ab".repeat(20)).unwrap();
        assert_eq!(c.short(), "abababababab");
        assert!(CommitId::parse(&"a".repeat(64)).is_ok());
        for bad in [
            "../../etc",
            "ABABABABABABABABABABABABABABABABABABABAB",
            "abc",
            "",
        ] {
            assert!(CommitId::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn ref_names_follow_git_and_map_to_one_key_segment() {
        for ok in ["v1.4.2", "main", "release/2026-01", "feature/a_b+c"] {
            let r = RefName::parse(ok).unwrap();
            assert_eq!(RefName::from_key_segment(&r.key_segment()).unwrap(), r);
            assert!(!r.key_segment().contains('/'));
        }
        for bad in [
            "", "/main", "main/", "a//b", "a..b", ".hidden", "x/.y", "a.lock", "a b", "a~b", "a:b",
            "-x", "$(id)", "a\\b",
        ] {
            assert!(RefName::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn addresses_are_hosts_with_an_optional_user() {
        for ok in [
            "127.0.0.1",
            "::1",
            "[::1]",
            "fe80::1%eth0",
            "restbase1001.eqiad.wmnet",
            "deploy@10.0.0.5",
            "_svc@host-a",
        ] {
            assert!(Address::parse(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "-oProxyCommand=x",
            "a;b",
            "$(touch /tmp/x)",
            "a b",
            "a/b",
            "x@",
            "@x",
            "-u@x",
            "a`id`",
            "host\nx",
            "a'b",
        ] {
            assert!(Address::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn deploy_ids_and_serde() {
        assert!(DeployId::parse("20261201T100722Z-0a1b2c").is_ok());
        assert!(DeployId::parse("x/../y").is_err());
        let n: Name = serde_json::from_str("\"beta\"").unwrap();
        assert_eq!(n, "beta");
        let e = serde_json::from_str::<Name>("\"be ta\"").unwrap_err();
        assert!(e.to_string().contains("invalid name"), "{e}");
    }
}
