//! The rollout policy of `fleet.yaml` (`rollout:`), which a release manifest
//! may override: the ordered waves a new software or agent release goes
//! through (and, when `fleet.yaml` says so, every other change of a site's
//! bundle), the share of a wave's reachable boxes that must run it before
//! the next wave opens, the bake time between waves, and when to halt.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt;

use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::duration::HumanDuration;
use crate::id::{GroupId, LabelKey};

/// Most waves in one policy.
pub const MAX_WAVES: usize = 32;

/// `rollout:`: how a new release reaches the fleet.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RolloutPolicy {
    /// The waves, in order. A site goes into the first wave that selects
    /// it and has room; a site no wave selects goes into a last wave of
    /// its own (`rest`).
    pub waves: Vec<Wave>,
    /// Share of a wave's reachable boxes that must run the release before
    /// the next wave opens (default `90%`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub success: Option<Share>,
    /// Time between a wave reaching its success share and the next wave
    /// opening (default `0s`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bake: Option<HumanDuration>,
    /// When the rollout stops opening waves by itself.
    #[serde(default)]
    pub halt: HaltRules,
    /// What else goes through the waves: `at_once` (the default: videos,
    /// `configuration.json` and agent settings reach every box as soon as
    /// the commit lands) or `waves` (they go through the waves too: a box
    /// in a wave not opened keeps its whole previous bundle). Read from
    /// `fleet.yaml` only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content: Option<ContentRollout>,
}

/// How videos, configuration and agent settings reach the boxes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ContentRollout {
    /// As soon as the commit lands, on every box.
    AtOnce,
    /// Through the waves, as releases do.
    Waves,
}

/// One wave.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Wave {
    /// Its name, shown on the status page and in commit statuses.
    pub name: String,
    /// Only members of this group.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<GroupId>,
    /// Only sites whose labels match.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub match_labels: Option<BTreeMap<LabelKey, String>>,
    /// At most this many of the selected sites (`20`), or this share of
    /// them (`50%`); the others wait for a later wave.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max: Option<Share>,
}

/// When a rollout halts: boxes in its opened waves that rolled the release
/// back, or failed to apply it. Each limit is a number of boxes or a share
/// of the boxes in opened waves; the defaults are `1` rolled back and `10%`
/// failed.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HaltRules {
    /// Boxes that rolled the release back.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rolled_back: Option<Share>,
    /// Boxes that failed to apply it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failed: Option<Share>,
}

/// A number of boxes (`3`) or a share of them (`50%`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Share {
    /// This many.
    Count(u32),
    /// This percentage, 0–100.
    Percent(f64),
}

impl Share {
    /// How many of `n`: a share rounds up (50% of 3 is 2), so a non-zero
    /// share of a non-empty set is never 0.
    pub fn of(self, n: usize) -> usize {
        match self {
            Share::Count(c) => usize::try_from(c).unwrap_or(usize::MAX),
            Share::Percent(p) => {
                let exact = p * n as f64 / 100.0;
                // Shares are checked to 0..=100 and sets hold < 2^32 sites.
                #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
                let up = (exact - 1e-9).ceil().max(0.0) as usize;
                up.min(n)
            }
        }
    }

    /// Parses `3` or `50%`.
    pub fn parse(s: &str) -> Result<Self, ShareError> {
        let err = || ShareError(s.chars().take(40).collect());
        let s = s.trim();
        if let Some(num) = s.strip_suffix('%') {
            let p: f64 = num.trim().parse().map_err(|_| err())?;
            if !(0.0..=100.0).contains(&p) {
                return Err(err());
            }
            Ok(Share::Percent(p))
        } else {
            s.parse().map(Share::Count).map_err(|_| err())
        }
    }
}

/// Why a share was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "invalid share `{0}`: write a number of boxes (e.g. 3) or a percentage from 0% to 100% (e.g. 50%)"
)]
pub struct ShareError(String);

impl fmt::Display for Share {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Share::Count(c) => write!(f, "{c}"),
            Share::Percent(p) => write!(f, "{p}%"),
        }
    }
}

impl Serialize for Share {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Share::Count(c) => s.serialize_u32(*c),
            Share::Percent(_) => s.collect_str(self),
        }
    }
}

impl<'de> Deserialize<'de> for Share {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Repr<'a> {
            Count(u32),
            Text(Cow<'a, str>),
        }
        match Repr::deserialize(d)? {
            Repr::Count(c) => Ok(Share::Count(c)),
            Repr::Text(t) => Share::parse(&t).map_err(serde::de::Error::custom),
        }
    }
}

impl JsonSchema for Share {
    fn schema_name() -> Cow<'static, str> {
        "Share".into()
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "description": "a number of boxes (e.g. 3) or a percentage (e.g. 50%)",
            "anyOf": [
                {"type": "integer", "minimum": 0},
                {"type": "string", "pattern": "^[0-9]+(\\.[0-9]+)?%$"}
            ]
        })
    }
}

impl RolloutPolicy {
    /// The success share (default 90%).
    pub fn success(&self) -> Share {
        self.success.unwrap_or(Share::Percent(90.0))
    }

    /// The bake time (default none).
    pub fn bake(&self) -> HumanDuration {
        self.bake.unwrap_or(HumanDuration::from_secs(0))
    }

    /// The rolled-back limit (default 1 box).
    pub fn halt_rolled_back(&self) -> Share {
        self.halt.rolled_back.unwrap_or(Share::Count(1))
    }

    /// The failed-to-apply limit (default 10%).
    pub fn halt_failed(&self) -> Share {
        self.halt.failed.unwrap_or(Share::Percent(10.0))
    }

    /// Whether every change of a site's bundle goes through the waves, not
    /// only its releases.
    pub fn content_in_waves(&self) -> bool {
        self.content == Some(ContentRollout::Waves)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_parse_round_up_and_refuse_nonsense() {
        assert_eq!(Share::parse("3").unwrap(), Share::Count(3));
        assert_eq!(Share::parse("50%").unwrap(), Share::Percent(50.0));
        assert_eq!(Share::Percent(50.0).of(3), 2);
        assert_eq!(Share::Percent(90.0).of(10), 9);
        assert_eq!(Share::Percent(90.0).of(3), 3);
        assert_eq!(Share::Percent(10.0).of(3), 1);
        assert_eq!(Share::Percent(0.0).of(3), 0);
        assert_eq!(Share::Percent(100.0).of(0), 0);
        assert_eq!(Share::Count(5).of(3), 5);
        for bad in ["", "x", "-1", "101%", "%", "1.5", "ten%"] {
            let e = Share::parse(bad).unwrap_err().to_string();
            assert!(e.starts_with("invalid share"), "{bad}: {e}");
        }
        let p: RolloutPolicy = serde_json::from_value(serde_json::json!({
            "waves": [
                {"name": "beta", "group": "beta-testers"},
                {"name": "bretagne", "match_labels": {"region": "bretagne"}, "max": "50%"},
                {"name": "all"}
            ],
            "success": "95%", "bake": "2h", "halt": {"rolled_back": 2, "failed": "10%"},
            "content": "waves"
        }))
        .unwrap();
        assert!(p.content_in_waves());
        assert_eq!(p.waves.len(), 3);
        assert_eq!(p.waves[1].max, Some(Share::Percent(50.0)));
        assert_eq!(p.success(), Share::Percent(95.0));
        assert_eq!(p.halt_rolled_back(), Share::Count(2));
        assert_eq!(
            serde_json::to_value(&p.halt).unwrap(),
            serde_json::json!({"rolled_back": 2, "failed": "10%"})
        );
    }
}
