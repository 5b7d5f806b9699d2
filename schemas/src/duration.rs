//! Human durations as operators write them: `30s`, `5m`, `1h`, `7d`.

use std::borrow::Cow;
use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A whole number of seconds, written with one unit: `s`, `m`, `h` or `d`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct HumanDuration(u64);

/// Why a duration was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "invalid duration `{0}`: write a whole number followed by s, m, h or d (e.g. 30s, 5m, 1h, 7d)"
)]
pub struct DurationError(String);

/// Longest accepted duration: ten years.
const MAX_SECS: u64 = 10 * 366 * 86_400;

impl HumanDuration {
    /// From seconds.
    pub const fn from_secs(secs: u64) -> Self {
        Self(secs)
    }

    /// Parses `30s`, `5m`, `1h`, `7d`.
    pub fn parse(s: &str) -> Result<Self, DurationError> {
        let err = || DurationError(s.chars().take(40).collect());
        let last = s.chars().last().ok_or_else(err)?;
        let (num, unit) = s.split_at(s.len() - last.len_utf8());
        if num.is_empty() || !num.bytes().all(|b| b.is_ascii_digit()) {
            return Err(err());
        }
        let n: u64 = num.parse().map_err(|_| err())?;
        let mult = match unit {
            "s" => 1,
            "m" => 60,
            "h" => 3600,
            "d" => 86_400,
            _ => return Err(err()),
        };
        let secs = n
            .checked_mul(mult)
            .filter(|s| *s <= MAX_SECS)
            .ok_or_else(err)?;
        Ok(Self(secs))
    }

    /// Seconds.
    pub fn as_secs(&self) -> u64 {
        self.0
    }

    /// As a std duration.
    pub fn to_std(&self) -> Duration {
        Duration::from_secs(self.0)
    }
}

impl fmt::Display for HumanDuration {
    /// The largest unit that divides the value exactly.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = self.0;
        if s != 0 && s.is_multiple_of(86_400) {
            write!(f, "{}d", s / 86_400)
        } else if s != 0 && s.is_multiple_of(3600) {
            write!(f, "{}h", s / 3600)
        } else if s != 0 && s.is_multiple_of(60) {
            write!(f, "{}m", s / 60)
        } else {
            write!(f, "{s}s")
        }
    }
}

impl FromStr for HumanDuration {
    type Err = DurationError;
    fn from_str(s: &str) -> Result<Self, DurationError> {
        Self::parse(s)
    }
}

impl Serialize for HumanDuration {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for HumanDuration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = Cow::<str>::deserialize(d)?;
        Self::parse(&s).map_err(serde::de::Error::custom)
    }
}

impl JsonSchema for HumanDuration {
    fn schema_name() -> Cow<'static, str> {
        "Duration".into()
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "type": "string",
            "pattern": "^[0-9]+[smhd]$",
            "description": "a whole number followed by s, m, h or d, e.g. 30s, 5m, 1h, 7d",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_prints() {
        for (s, secs, back) in [
            ("30s", 30, "30s"),
            ("5m", 300, "5m"),
            ("90m", 5400, "90m"),
            ("120m", 7200, "2h"),
            ("7d", 604_800, "7d"),
            ("0s", 0, "0s"),
        ] {
            let d = HumanDuration::parse(s).unwrap();
            assert_eq!(d.as_secs(), secs);
            assert_eq!(d.to_string(), back);
        }
    }

    #[test]
    fn refuses_what_is_ambiguous() {
        for bad in [
            "",
            "s",
            "30",
            "1.5h",
            "-1s",
            "1w",
            "30 s",
            "99999999999999d",
            "１s",
            "s１",
        ] {
            let err = HumanDuration::parse(bad).unwrap_err().to_string();
            assert!(err.starts_with("invalid duration"), "{bad}: {err}");
        }
    }
}
