//! Validated identifiers, parsed once at the edge.
//!
//! Site, group and video ids become file names and URL path segments, so they
//! are restricted to a small, unambiguous alphabet. A release version is a
//! semantic version. A sha256 is 64 lowercase hex digits.

use std::borrow::Cow;
use std::fmt;
use std::str::FromStr;

use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Why a string was refused as an identifier.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {kind} `{value}`: {rule}")]
pub struct IdError {
    /// What was being parsed ("site id", "sha256", ...).
    pub kind: &'static str,
    /// The refused value (truncated to 80 characters).
    pub value: String,
    /// The rule it broke.
    pub rule: &'static str,
}

impl IdError {
    fn new(kind: &'static str, value: &str, rule: &'static str) -> Self {
        let value: String = value.chars().take(80).collect();
        Self { kind, value, rule }
    }
}

/// Checks the id alphabet: `[a-z0-9]` first, then `[a-z0-9-]` (and `extra`).
fn check_slug(s: &str, max: usize, extra: &[char]) -> bool {
    let mut chars = s.chars();
    let Some(first) = chars.next() else {
        return false;
    };
    s.len() <= max
        && (first.is_ascii_lowercase() || first.is_ascii_digit())
        && chars
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || extra.contains(&c))
}

macro_rules! slug_id {
    ($(#[$doc:meta])* $name:ident, $kind:literal, $max:literal, $extra:expr, $pattern:literal, $rule:literal) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub struct $name(String);

        impl $name {
            /// Parses and validates.
            pub fn new(s: &str) -> Result<Self, IdError> {
                if check_slug(s, $max, $extra) {
                    Ok(Self(s.to_owned()))
                } else {
                    Err(IdError::new($kind, s, $rule))
                }
            }

            /// The id as a string slice.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl FromStr for $name {
            type Err = IdError;
            fn from_str(s: &str) -> Result<Self, IdError> {
                Self::new(s)
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(&self.0)
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = Cow::<str>::deserialize(d)?;
                Self::new(&s).map_err(serde::de::Error::custom)
            }
        }

        impl JsonSchema for $name {
            fn schema_name() -> Cow<'static, str> {
                stringify!($name).into()
            }
            fn json_schema(_: &mut SchemaGenerator) -> Schema {
                json_schema!({
                    "type": "string",
                    "pattern": $pattern,
                    "description": $rule,
                })
            }
        }
    };
}

slug_id!(
    /// A site (one box) id, e.g. `cesson-handball`. Also the site file's name.
    SiteId,
    "site id",
    63,
    &[],
    "^[a-z0-9][a-z0-9-]{0,62}$",
    "lowercase letters, digits and '-', starting with a letter or digit, at most 63 characters"
);
slug_id!(
    /// A group id, e.g. `football` or `beta-testers`. Also the group file's name.
    GroupId,
    "group id",
    63,
    &[],
    "^[a-z0-9][a-z0-9-]{0,62}$",
    "lowercase letters, digits and '-', starting with a letter or digit, at most 63 characters"
);
slug_id!(
    /// A video id in the catalog, e.g. `sponsor-credit-agricole-30s`.
    VideoId,
    "video id",
    100,
    &['.', '_'],
    "^[a-z0-9][a-z0-9._-]{0,99}$",
    "lowercase letters, digits, '-', '_' and '.', starting with a letter or digit, at most 100 characters"
);
slug_id!(
    /// A label key on a site, e.g. `sport` or `region`.
    LabelKey,
    "label key",
    63,
    &['_', '.'],
    "^[a-z0-9][a-z0-9._-]{0,62}$",
    "lowercase letters, digits, '-', '_' and '.', starting with a letter or digit, at most 63 characters"
);

/// A software release version: a semantic version such as `2.1.3`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ReleaseVersion(semver::Version);

impl ReleaseVersion {
    /// Parses and validates.
    pub fn new(s: &str) -> Result<Self, IdError> {
        if s.len() > 64 || s.contains('+') {
            return Err(IdError::new("release version", s, VERSION_RULE));
        }
        semver::Version::parse(s)
            .map(Self)
            .map_err(|_| IdError::new("release version", s, VERSION_RULE))
    }
}

const VERSION_RULE: &str =
    "a semantic version MAJOR.MINOR.PATCH with an optional -prerelease, e.g. 2.1.3 or 2.2.0-rc.1";

impl PartialOrd for ReleaseVersion {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for ReleaseVersion {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.0.cmp(&other.0)
    }
}

impl fmt::Display for ReleaseVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl FromStr for ReleaseVersion {
    type Err = IdError;
    fn from_str(s: &str) -> Result<Self, IdError> {
        Self::new(s)
    }
}

impl Serialize for ReleaseVersion {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for ReleaseVersion {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        // YAML reads `2.1` as a float: accept only strings, and say so.
        let s = Cow::<str>::deserialize(d)?;
        Self::new(&s).map_err(serde::de::Error::custom)
    }
}

impl JsonSchema for ReleaseVersion {
    fn schema_name() -> Cow<'static, str> {
        "ReleaseVersion".into()
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "type": "string",
            "pattern": r"^(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)(-[0-9A-Za-z.-]+)?$",
            "description": VERSION_RULE,
        })
    }
}

/// A sha256 digest as 64 lowercase hex digits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Sha256([u8; 32]);

const SHA256_RULE: &str = "64 lowercase hexadecimal digits";

impl Sha256 {
    /// Parses 64 lowercase hex digits.
    pub fn new(s: &str) -> Result<Self, IdError> {
        let ok = s.len() == 64 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
        let mut out = [0u8; 32];
        if !ok || hex::decode_to_slice(s, &mut out).is_err() {
            return Err(IdError::new("sha256", s, SHA256_RULE));
        }
        Ok(Self(out))
    }

    /// Wraps raw digest bytes.
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    /// The sha256 of `data`.
    pub fn digest(data: &[u8]) -> Self {
        use sha2::Digest as _;
        Self(sha2::Sha256::digest(data).into())
    }

    /// The raw digest bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// Lowercase hex.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }
}

impl fmt::Display for Sha256 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl FromStr for Sha256 {
    type Err = IdError;
    fn from_str(s: &str) -> Result<Self, IdError> {
        Self::new(s)
    }
}

impl Serialize for Sha256 {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_hex())
    }
}

impl<'de> Deserialize<'de> for Sha256 {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = Cow::<str>::deserialize(d)?;
        Self::new(&s).map_err(serde::de::Error::custom)
    }
}

impl JsonSchema for Sha256 {
    fn schema_name() -> Cow<'static, str> {
        "Sha256".into()
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "type": "string",
            "pattern": "^[0-9a-f]{64}$",
            "description": SHA256_RULE,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn site_ids() {
        for ok in ["a", "cesson-handball", "club-42", "0abc"] {
            assert!(SiteId::new(ok).is_ok(), "{ok}");
        }
        for bad in ["", "-a", "A", "a_b", "a.b", "a/b", "é", &"a".repeat(64)] {
            let err = SiteId::new(bad).unwrap_err();
            assert_eq!(err.kind, "site id");
        }
        assert_eq!(
            SiteId::new("Rennes FC").unwrap_err().to_string(),
            "invalid site id `Rennes FC`: lowercase letters, digits and '-', starting with a letter or digit, at most 63 characters"
        );
    }

    #[test]
    fn video_ids_allow_dots_and_underscores() {
        assert!(VideoId::new("warmup_v2.1").is_ok());
        assert!(VideoId::new(".hidden").is_err());
    }

    #[test]
    fn versions_order_semantically() {
        let v = |s| ReleaseVersion::new(s).unwrap();
        assert!(v("2.1.10") > v("2.1.3"));
        assert!(v("2.2.0-rc.1") < v("2.2.0"));
        assert!(ReleaseVersion::new("2.1").is_err());
        assert!(ReleaseVersion::new("v2.1.3").is_err());
        assert!(ReleaseVersion::new("2.1.3+build").is_err());
    }

    #[test]
    fn sha256_is_strict_lowercase_hex() {
        let h = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
        assert_eq!(Sha256::new(h).unwrap(), Sha256::digest(b""));
        assert!(Sha256::new(&h.to_uppercase()).is_err());
        assert!(Sha256::new(&h[1..]).is_err());
        assert!(Sha256::new(&format!("{}g", &h[1..])).is_err());
    }
}
