//! What operators write in the manifests repository.
//!
//! Every type here refuses unknown fields: a typo such as `sotfware:` is an
//! error, never silently ignored.
//!
//! | file | type |
//! | --- | --- |
//! | `fleet.yaml` | [`Fleet`] |
//! | `sites/<id>.yaml` | [`Site`] |
//! | `groups/<id>.yaml` | [`Group`] |
//! | `videos/catalog.yaml` | [`Catalog`] |
//! | `releases/<version>.yaml` | [`Release`] |
//! | `agent-releases/<version>.yaml` | [`AgentRelease`] |

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt;

use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::{GroupId, HumanDuration, LabelKey, ReleaseVersion, Sha256, SiteId, VideoId};

/// A JSON object: the `configuration.json` patches.
pub type JsonObject = serde_json::Map<String, serde_json::Value>;

/// One layer of desired state. `fleet.yaml` has one (`defaults`), each group
/// has one (`desired`), each site has one (`overrides`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Layer {
    /// The software release to run. The last layer that sets it wins.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub software: Option<SoftwarePin>,
    /// The agent release to run (`agent-releases/<version>.yaml`). The last
    /// layer that sets it wins; without one, boxes keep the agent they run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_release: Option<AgentPin>,
    /// Video ids to add to the box (union over layers).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub videos: Vec<VideoId>,
    /// Video ids that earlier layers added and this layer takes away.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub remove_videos: Vec<VideoId>,
    /// A JSON Merge Patch (RFC 7386) applied to the box's `configuration.json`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config: Option<JsonObject>,
    /// Agent settings; each key set here overrides earlier layers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent: Option<AgentPatch>,
}

/// `software:` in a layer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SoftwarePin {
    /// A version defined in `releases/<version>.yaml`.
    pub version: ReleaseVersion,
}

/// `agent_release:` in a layer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AgentPin {
    /// A version defined in `agent-releases/<version>.yaml`.
    pub version: ReleaseVersion,
}

/// `agent:` in a layer: every field optional, later layers override.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AgentPatch {
    /// How long a long-poll for a new bundle waits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub poll_interval: Option<HumanDuration>,
    /// How often the box reports its status.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub heartbeat_interval: Option<HumanDuration>,
    /// How often the box sends full metrics.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metrics_interval: Option<HumanDuration>,
    /// When software may be switched, in the box's local time, e.g.
    /// `03:00-05:00`. Empty: any time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub maintenance_window: Option<MaintenanceWindow>,
    /// Remote actions an operator may request on this box.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allowed_actions: Option<Vec<RemoteAction>>,
    /// The most the box downloads, bytes per second (what the club's line
    /// can spare); `0`: no cap. The box keeps to the lower of this and
    /// the `max_download_rate` of its own `agent.toml`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_download_rate: Option<u64>,
}

/// A remote action an operator can request.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum RemoteAction {
    /// Reboot the box.
    Reboot,
    /// Restart one of the configured services.
    RestartService,
    /// Fetch the agent's recent logs.
    GetLogs,
    /// Report hardware and OS details.
    SystemInfo,
    /// Re-hash every managed file, then a normal pass.
    Resync,
    /// Send a full report now.
    ReportNow,
}

impl RemoteAction {
    /// Every action, in the order pages list them.
    pub const ALL: [RemoteAction; 6] = [
        RemoteAction::SystemInfo,
        RemoteAction::ReportNow,
        RemoteAction::GetLogs,
        RemoteAction::RestartService,
        RemoteAction::Resync,
        RemoteAction::Reboot,
    ];

    /// The name in manifests (`restart_service`).
    pub fn as_str(self) -> &'static str {
        match self {
            RemoteAction::Reboot => "reboot",
            RemoteAction::RestartService => "restart_service",
            RemoteAction::GetLogs => "get_logs",
            RemoteAction::SystemInfo => "system_info",
            RemoteAction::Resync => "resync",
            RemoteAction::ReportNow => "report_now",
        }
    }

    /// The name operators type (`restart-service`, `logs`).
    pub fn command_name(self) -> &'static str {
        match self {
            RemoteAction::Reboot => "reboot",
            RemoteAction::RestartService => "restart-service",
            RemoteAction::GetLogs => "logs",
            RemoteAction::SystemInfo => "system-info",
            RemoteAction::Resync => "resync",
            RemoteAction::ReportNow => "report-now",
        }
    }

    /// Either name (`restart-service` or `restart_service`; `logs` or
    /// `get_logs`).
    pub fn parse(name: &str) -> Option<RemoteAction> {
        RemoteAction::ALL.into_iter().find(|a| {
            a.as_str() == name || a.command_name() == name || a.as_str().replace('_', "-") == name
        })
    }

    /// Whether it changes what the box plays, and so waits for the update
    /// lock (a match) unless forced: everything but reading logs, system
    /// information and sending a report.
    pub fn waits_for_lock(self) -> bool {
        matches!(
            self,
            RemoteAction::Reboot | RemoteAction::RestartService | RemoteAction::Resync
        )
    }
}

/// A daily window `HH:MM-HH:MM` in local time; it may wrap past midnight
/// (`23:00-02:00`). The empty string means "any time".
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct MaintenanceWindow {
    /// Minutes after midnight when the window opens; `None` = always open.
    pub range: Option<(u16, u16)>,
}

/// Why a maintenance window was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "invalid maintenance window `{0}`: write HH:MM-HH:MM in local time (e.g. 03:00-05:00), or \"\" for any time"
)]
pub struct WindowError(String);

impl MaintenanceWindow {
    /// Always open.
    pub const ANY_TIME: Self = Self { range: None };

    /// Parses `HH:MM-HH:MM` or the empty string.
    pub fn parse(s: &str) -> Result<Self, WindowError> {
        let err = || WindowError(s.chars().take(40).collect());
        if s.is_empty() {
            return Ok(Self::ANY_TIME);
        }
        let hm = |t: &str| -> Option<u16> {
            let (h, m) = t.split_once(':')?;
            if h.len() != 2 || m.len() != 2 {
                return None;
            }
            let (h, m): (u16, u16) = (h.parse().ok()?, m.parse().ok()?);
            (h < 24 && m < 60).then_some(h * 60 + m)
        };
        let (a, b) = s.split_once('-').ok_or_else(err)?;
        let (a, b) = (hm(a).ok_or_else(err)?, hm(b).ok_or_else(err)?);
        if a == b {
            return Err(err());
        }
        Ok(Self {
            range: Some((a, b)),
        })
    }

    /// Whether `minute_of_day` (0..1440) is inside the window.
    pub fn contains(&self, minute_of_day: u16) -> bool {
        match self.range {
            None => true,
            Some((a, b)) if a < b => (a..b).contains(&minute_of_day),
            Some((a, b)) => minute_of_day >= a || minute_of_day < b,
        }
    }
}

impl fmt::Display for MaintenanceWindow {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.range {
            None => Ok(()),
            Some((a, b)) => write!(f, "{:02}:{:02}-{:02}:{:02}", a / 60, a % 60, b / 60, b % 60),
        }
    }
}

impl Serialize for MaintenanceWindow {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for MaintenanceWindow {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = Cow::<str>::deserialize(d)?;
        Self::parse(&s).map_err(serde::de::Error::custom)
    }
}

impl JsonSchema for MaintenanceWindow {
    fn schema_name() -> Cow<'static, str> {
        "MaintenanceWindow".into()
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "type": "string",
            "pattern": "^(|([01][0-9]|2[0-3]):[0-5][0-9]-([01][0-9]|2[0-3]):[0-5][0-9])$",
            "description": "HH:MM-HH:MM in the box's local time, or empty for any time",
        })
    }
}

/// Language for notifications and the status page default.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Language {
    /// Français.
    #[default]
    Fr,
    /// English.
    En,
}

/// `fleet.yaml`: fleet-wide defaults.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Fleet {
    /// The fleet's name, shown on the status page.
    pub name: String,
    /// IANA time zone of the fleet (e.g. `Europe/Paris`); sites may override.
    pub timezone: String,
    /// Language of notifications.
    #[serde(default)]
    pub language: Language,
    /// Bundle signing settings.
    #[serde(default)]
    pub bundles: BundleSettings,
    /// The first layer, applied to every site.
    #[serde(default)]
    pub defaults: Layer,
    /// Alert thresholds for the whole fleet (groups may override some).
    #[serde(default)]
    pub alerts: AlertRules,
    /// How new software and agent releases reach the fleet, wave by wave
    /// (absent: every box at once).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollout: Option<crate::rollout::RolloutPolicy>,
}

/// Alert thresholds and timing. Every key is optional: the fleet's values
/// replace the built-in defaults (NEOPRO's monitoring), a group's replace
/// the fleet's for its members (groups in layering order).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AlertRules {
    /// SoC temperature for a warning, °C (default 75).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub temperature_warning: Option<f64>,
    /// SoC temperature for a critical alert, °C (default 80).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub temperature_critical: Option<f64>,
    /// Videos disk use for a warning, % (default 90).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disk_warning_percent: Option<f64>,
    /// Videos disk use for a critical alert, % (default 95).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disk_critical_percent: Option<f64>,
    /// Free space below which a warning fires, bytes (default 2 GB).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disk_free_warning_bytes: Option<u64>,
    /// Memory use for a warning, % (default 90).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_warning_percent: Option<f64>,
    /// Silence after which a site is offline (critical; default 5m).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub offline_after: Option<HumanDuration>,
    /// Releases behind the fleet's latest for a warning (default 2).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub releases_behind_warning: Option<u32>,
    /// A condition must hold this long before its alert fires, and be gone
    /// this long before it resolves (flap damping; default 2m).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hold: Option<HumanDuration>,
    /// At most one notification per alert within this time (default 1h).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cooldown: Option<HumanDuration>,
}

/// `bundles:` in `fleet.yaml`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct BundleSettings {
    /// How long a signed bundle stays valid (default 7d). The controller
    /// re-signs well before.
    #[serde(default = "BundleSettings::default_expiry")]
    pub expiry: HumanDuration,
}

impl BundleSettings {
    fn default_expiry() -> HumanDuration {
        HumanDuration::from_secs(7 * 86_400)
    }
}

impl Default for BundleSettings {
    fn default() -> Self {
        Self {
            expiry: Self::default_expiry(),
        }
    }
}

/// `sites/<id>.yaml`: one box.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Site {
    /// Must equal the file name without `.yaml`.
    pub id: SiteId,
    /// Human name of the installation (e.g. "Cesson — salle Glaz Arena").
    pub name: String,
    /// The club.
    pub club: String,
    /// Where the box is.
    pub location: Location,
    /// IANA time zone, when it differs from the fleet's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timezone: Option<String>,
    /// Labels that group selectors match (by convention `sport`, `region`).
    #[serde(default)]
    pub labels: BTreeMap<LabelKey, String>,
    /// Groups this site joins explicitly, whatever their selectors say.
    #[serde(default)]
    pub groups: Vec<GroupId>,
    /// Hardware model, informative.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hardware: Option<String>,
    /// The last layer: this site's own overrides.
    #[serde(default)]
    pub overrides: Layer,
}

/// A site's location.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Location {
    /// City.
    pub city: String,
    /// Region (e.g. Bretagne).
    pub region: String,
    /// Country.
    #[serde(default = "Location::default_country")]
    pub country: String,
    /// WGS84 latitude in degrees.
    pub latitude: f64,
    /// WGS84 longitude in degrees.
    pub longitude: f64,
}

impl Location {
    fn default_country() -> String {
        "France".into()
    }
}

/// `groups/<id>.yaml`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Group {
    /// Must equal the file name without `.yaml`.
    pub id: GroupId,
    /// What the group is for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Layering order: lower first, so higher priority wins; ties by id.
    #[serde(default)]
    pub priority: i32,
    /// Sites whose labels match join the group.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<Selector>,
    /// Sites that join the group by name.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sites: Vec<SiteId>,
    /// What the group sets for its members.
    #[serde(default)]
    pub desired: Layer,
    /// Alert thresholds for its members, over the fleet's.
    #[serde(default)]
    pub alerts: AlertRules,
}

/// A label selector. Every listed label must match; an empty
/// `match_labels: {}` matches every site.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Selector {
    /// Label → required value.
    pub match_labels: BTreeMap<LabelKey, String>,
}

impl Selector {
    /// Whether a site with `labels` matches.
    pub fn matches(&self, labels: &BTreeMap<LabelKey, String>) -> bool {
        self.match_labels
            .iter()
            .all(|(k, v)| labels.get(k) == Some(v))
    }
}

/// `videos/catalog.yaml`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Catalog {
    /// Every video a box may be asked to hold.
    pub videos: Vec<Video>,
}

/// A catalog entry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Video {
    /// Unique id, referenced by layers.
    pub id: VideoId,
    /// Title shown by the local app.
    pub title: String,
    /// File name on the box (one path component).
    pub file: String,
    /// Top-level folder on the box (e.g. `Sponsors`).
    pub category: String,
    /// Second-level folder (e.g. `Partenaires`).
    pub subcategory: String,
    /// sha256 of the file's bytes.
    pub sha256: Sha256,
    /// Size in bytes.
    pub size: u64,
    /// Duration in seconds, informative.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration: Option<u32>,
    /// Extra places to download it from (a CDN, a mirror); the controller's
    /// content store is always tried too.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub urls: Vec<String>,
}

/// `releases/<version>.yaml`: a software release of the box's app.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Release {
    /// Must equal the file name without `.yaml`.
    pub version: ReleaseVersion,
    /// The package to install.
    pub package: Package,
    /// What changed, for operators.
    #[serde(default)]
    pub changelog: String,
    /// How the agent decides the release works after a switch.
    pub health_check: HealthCheck,
    /// Skip the maintenance window (security fixes).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub urgent: bool,
    /// This release's own rollout policy, over the fleet's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollout: Option<crate::rollout::RolloutPolicy>,
}

/// `agent-releases/<version>.yaml`: a release of `touchline-agent` itself,
/// one executable per architecture.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AgentRelease {
    /// Must equal the file name without `.yaml`.
    pub version: ReleaseVersion,
    /// The executable for each Debian architecture the fleet runs
    /// (`arm64`, `armhf`, `amd64`). A box whose architecture is missing
    /// keeps its agent and says so.
    pub binaries: BTreeMap<Arch, AgentBinary>,
    /// What changed, for operators.
    #[serde(default)]
    pub changelog: String,
    /// Skip the maintenance window (security fixes).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub urgent: bool,
    /// This release's own rollout policy, over the fleet's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollout: Option<crate::rollout::RolloutPolicy>,
}

/// One agent executable. Fields in alphabetical order (it is carried in
/// bundles as it is).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AgentBinary {
    /// sha256 of the executable.
    pub sha256: Sha256,
    /// Size in bytes.
    pub size: u64,
    /// Extra download locations.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub urls: Vec<String>,
}

/// A Debian architecture a box can run. Declared in alphabetical order:
/// maps keyed by it serialize in canonical order.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Arch {
    /// x86-64 (a lab box, a NUC).
    Amd64,
    /// 64-bit ARM (Raspberry Pi 3, 4, 5 on 64-bit Raspberry Pi OS).
    Arm64,
    /// 32-bit ARM, hard float (Raspberry Pi OS 32-bit).
    Armhf,
}

impl Arch {
    /// The architecture this program was built for (`None`: one no
    /// agent release can name).
    pub fn this() -> Option<Arch> {
        match std::env::consts::ARCH {
            "x86_64" => Some(Arch::Amd64),
            "aarch64" => Some(Arch::Arm64),
            "arm" => Some(Arch::Armhf),
            _ => None,
        }
    }

    /// The Debian name.
    pub fn as_str(self) -> &'static str {
        match self {
            Arch::Amd64 => "amd64",
            Arch::Arm64 => "arm64",
            Arch::Armhf => "armhf",
        }
    }
}

impl fmt::Display for Arch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A release package.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Package {
    /// sha256 of the package file.
    pub sha256: Sha256,
    /// Size in bytes.
    pub size: u64,
    /// Archive format.
    #[serde(default)]
    pub format: PackageFormat,
    /// Extra download locations.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub urls: Vec<String>,
}

/// Archive format of a release package.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum PackageFormat {
    /// gzip-compressed tar.
    #[default]
    #[serde(rename = "tar.gz")]
    TarGz,
    /// zstd-compressed tar.
    #[serde(rename = "tar.zst")]
    TarZst,
}

/// A release's health check: exactly one of `http` or `command`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HealthCheck {
    /// A URL on the box that must answer 2xx (e.g. `http://127.0.0.1:8080/health`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http: Option<String>,
    /// A command (argv) that must exit 0.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<Vec<String>>,
    /// How long to keep retrying before rolling back (default 120s).
    #[serde(default = "HealthCheck::default_timeout")]
    pub timeout: HumanDuration,
}

impl HealthCheck {
    fn default_timeout() -> HumanDuration {
        HumanDuration::from_secs(120)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows() {
        let w = MaintenanceWindow::parse("03:00-05:00").unwrap();
        assert!(w.contains(180) && w.contains(299) && !w.contains(300) && !w.contains(179));
        let wrap = MaintenanceWindow::parse("23:30-01:00").unwrap();
        assert!(wrap.contains(23 * 60 + 45) && wrap.contains(30) && !wrap.contains(60));
        assert!(MaintenanceWindow::parse("").unwrap().contains(0));
        assert_eq!(wrap.to_string(), "23:30-01:00");
        for bad in [
            "3:00-5:00",
            "24:00-01:00",
            "03:00",
            "03:00-03:00",
            "03:60-04:00",
            "x",
        ] {
            assert!(MaintenanceWindow::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn selectors() {
        let labels: BTreeMap<LabelKey, String> =
            [(LabelKey::new("sport").unwrap(), "rugby".to_string())].into();
        let sel = |pairs: &[(&str, &str)]| Selector {
            match_labels: pairs
                .iter()
                .map(|(k, v)| (LabelKey::new(k).unwrap(), v.to_string()))
                .collect(),
        };
        assert!(sel(&[]).matches(&labels));
        assert!(sel(&[("sport", "rugby")]).matches(&labels));
        assert!(!sel(&[("sport", "football")]).matches(&labels));
        assert!(!sel(&[("sport", "rugby"), ("region", "bretagne")]).matches(&labels));
    }
}
