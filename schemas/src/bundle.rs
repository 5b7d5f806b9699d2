//! The rendered bundle: everything one box should hold, as canonical JSON,
//! signed by the controller (see [`crate::sign`]).
//!
//! The agent reads bundles leniently (unknown fields are ignored, so a newer
//! controller does not strand older boxes) but checks every limit.

use jiff::Timestamp;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::manifest::{
    self, AgentBinary, Arch, JsonObject, MaintenanceWindow, PackageFormat, RemoteAction,
};
use crate::sign::{SignatureError, TrustedKeys};
use crate::{HumanDuration, ReleaseVersion, Sha256, SiteId, TargetPath};

/// Format version of [`Bundle`]; bumped on incompatible changes.
pub const BUNDLE_FORMAT: u32 = 1;
/// Largest bundle body accepted, checked before parsing.
pub const MAX_BUNDLE_BYTES: usize = 4 * 1024 * 1024;
/// Most files one bundle may list.
pub const MAX_FILES: usize = 20_000;
/// Largest single file (video or package) a bundle may name.
pub const MAX_FILE_SIZE: u64 = 64 * 1024 * 1024 * 1024;
/// Largest sum of all file sizes in one bundle.
pub const MAX_TOTAL_SIZE: u64 = 512 * 1024 * 1024 * 1024;
/// Most source URLs per file.
pub const MAX_URLS: usize = 16;
/// Largest agent executable a bundle may name.
pub const MAX_AGENT_BYTES: u64 = 256 * 1024 * 1024;

/// One site's desired state, as signed and served.
///
/// Fields of this struct and of every struct inside it are declared in
/// alphabetical order: serializing them as declared then gives canonical
/// JSON directly (see [`Bundle::to_canonical_json`]); a test compares the
/// result with the general canonicalizer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Bundle {
    /// Agent settings.
    pub agent: AgentSettings,
    /// The agent release to run, if any layer pins one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_release: Option<DesiredAgent>,
    /// The manifests commit that produced it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub commit: Option<String>,
    /// The box's `configuration.json`.
    pub config: JsonObject,
    /// After this, the agent refuses to apply it (the box keeps what it has).
    pub expires_at: Timestamp,
    /// Files below the videos directory, sorted by path.
    pub files: Vec<BundleFile>,
    /// [`BUNDLE_FORMAT`].
    pub format: u32,
    /// When it was signed.
    pub issued_at: Timestamp,
    /// Only grows: the first-parent commit count of the manifests commit.
    pub serial: u64,
    /// The site this bundle is for.
    pub site: SiteId,
    /// The software release to run, if any layer sets one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub software: Option<DesiredRelease>,
    /// Orders the bundles of one serial: when a rollout wave opens, the
    /// controller gives the wave's sites the release their bundle held
    /// back, under the same serial and a higher step (absent: 0).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub step: u32,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

/// The desired software release with everything needed to install it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct DesiredRelease {
    /// Package archive format.
    #[serde(default)]
    pub format: PackageFormat,
    /// Health check after a switch.
    pub health_check: BundleHealthCheck,
    /// Package sha256.
    pub sha256: Sha256,
    /// Package size in bytes.
    pub size: u64,
    /// Skip the maintenance window.
    #[serde(default)]
    pub urgent: bool,
    /// Extra download URLs.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub urls: Vec<String>,
    /// Version.
    pub version: ReleaseVersion,
}

/// The desired agent release: an executable per architecture.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct DesiredAgent {
    /// Executables by Debian architecture.
    pub binaries: std::collections::BTreeMap<Arch, AgentBinary>,
    /// Skip the maintenance window.
    #[serde(default)]
    pub urgent: bool,
    /// Version.
    pub version: ReleaseVersion,
}

impl DesiredAgent {
    /// From an agent release manifest.
    pub fn from_manifest(r: &manifest::AgentRelease) -> Self {
        Self {
            binaries: r.binaries.clone(),
            urgent: r.urgent,
            version: r.version.clone(),
        }
    }
}

/// The health check as carried in a bundle.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct BundleHealthCheck {
    /// Command that must exit 0.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<Vec<String>>,
    /// URL that must answer 2xx.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http: Option<String>,
    /// Retry budget.
    pub timeout: HumanDuration,
}

impl DesiredRelease {
    /// From a release manifest.
    pub fn from_manifest(r: &manifest::Release) -> Self {
        Self {
            version: r.version.clone(),
            sha256: r.package.sha256,
            size: r.package.size,
            format: r.package.format,
            urls: r.package.urls.clone(),
            health_check: BundleHealthCheck {
                http: r.health_check.http.clone(),
                command: r.health_check.command.clone(),
                timeout: r.health_check.timeout,
            },
            urgent: r.urgent,
        }
    }
}

/// A file the agent must place.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct BundleFile {
    /// Where, relative to the videos directory.
    pub path: TargetPath,
    /// Content hash; also its name in the content store.
    pub sha256: Sha256,
    /// Exact size in bytes.
    pub size: u64,
    /// Extra download URLs (the controller's store is always a source).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub urls: Vec<String>,
}

/// Agent settings once all layers are applied.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct AgentSettings {
    /// Remote actions allowed on this box.
    pub allowed_actions: Vec<RemoteAction>,
    /// Status report interval.
    pub heartbeat_interval: HumanDuration,
    /// When software may be switched (local time).
    pub maintenance_window: MaintenanceWindow,
    /// Full metrics interval.
    pub metrics_interval: HumanDuration,
    /// Long-poll duration.
    pub poll_interval: HumanDuration,
    /// IANA time zone of the box.
    pub timezone: String,
    /// Download cap from the manifests, bytes per second (`0` or absent:
    /// none); the box keeps to the lower of this and its own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_download_rate: Option<u64>,
}

impl Default for AgentSettings {
    fn default() -> Self {
        Self {
            poll_interval: HumanDuration::from_secs(60),
            heartbeat_interval: HumanDuration::from_secs(30),
            metrics_interval: HumanDuration::from_secs(300),
            maintenance_window: MaintenanceWindow::ANY_TIME,
            timezone: "UTC".into(),
            allowed_actions: Vec::new(),
            max_download_rate: None,
        }
    }
}

/// Why a bundle was refused. Each names what an operator should look at.
#[derive(Debug, thiserror::Error)]
pub enum BundleError {
    /// Over [`MAX_BUNDLE_BYTES`]; not parsed.
    #[error("bundle is {size} bytes, over the {MAX_BUNDLE_BYTES}-byte limit")]
    TooLarge {
        /// Its size.
        size: usize,
    },
    /// The signature does not hold.
    #[error("bundle signature rejected")]
    Signature(#[from] SignatureError),
    /// Not a bundle.
    #[error("bundle is not valid")]
    Parse(#[from] serde_json::Error),
    /// A format this agent does not know.
    #[error("bundle format {found} is not supported (this agent reads format {BUNDLE_FORMAT})")]
    Format {
        /// What it says.
        found: u32,
    },
    /// For another box.
    #[error("bundle is for site `{found}`, this box is `{expected}`")]
    WrongSite {
        /// This box.
        expected: SiteId,
        /// The bundle's site.
        found: SiteId,
    },
    /// Older than what was already accepted (a replay).
    #[error("bundle serial {found} is older than serial {highest} already accepted")]
    OldSerial {
        /// The bundle's serial.
        found: u64,
        /// The highest accepted.
        highest: u64,
    },
    /// Same serial as the accepted one but different content.
    #[error(
        "bundle serial {serial} was already accepted with different content; a new desired state needs a new serial"
    )]
    SerialReused {
        /// The serial.
        serial: u64,
    },
    /// An older step of the serial last accepted (a replay).
    #[error("bundle serial {serial} step {found} is older than step {highest}, already accepted")]
    OldStep {
        /// The serial.
        serial: u64,
        /// Its step.
        found: u32,
        /// The step accepted.
        highest: u32,
    },
    /// Past its expiry.
    #[error("bundle expired at {expires_at} (now is at least {now})")]
    Expired {
        /// Expiry.
        expires_at: Timestamp,
        /// The agent's notion of now.
        now: Timestamp,
    },
    /// A limit in the body is exceeded.
    #[error("bundle exceeds a limit: {0}")]
    Limit(String),
}

/// What the receiving box expects of a bundle.
#[derive(Debug, Clone, Copy)]
pub struct Expectations<'a> {
    /// This box's id.
    pub site: &'a SiteId,
    /// The last bundle accepted, if any.
    pub last_accepted: Option<&'a Bundle>,
    /// `max(clock, time floor)`.
    pub now: Timestamp,
}

impl Bundle {
    /// Canonical bytes: what is signed and served.
    pub fn to_canonical_json(&self) -> Vec<u8> {
        // Fields are declared in sorted order and serde_json's `Map` is a
        // sorted map, so direct serialization is already canonical (and 3x
        // faster than going through `serde_json::Value`). Tests compare with
        // `canonical::to_canonical_vec`. Serializing these plain types cannot
        // fail: every map has string keys and no float is non-finite.
        let mut out = Vec::with_capacity(8 * 1024);
        match serde_json::to_writer(&mut out, self) {
            Ok(()) => out,
            Err(_) => crate::canonical::to_canonical_vec(self).unwrap_or_default(),
        }
    }

    /// sha256 of the canonical bytes.
    pub fn digest(&self) -> Sha256 {
        Sha256::digest(&self.to_canonical_json())
    }

    /// Parses bytes, checking the size cap first and every limit after.
    pub fn from_slice(bytes: &[u8]) -> Result<Self, BundleError> {
        if bytes.len() > MAX_BUNDLE_BYTES {
            return Err(BundleError::TooLarge { size: bytes.len() });
        }
        let bundle: Bundle = serde_json::from_slice(bytes)?;
        if bundle.format != BUNDLE_FORMAT {
            return Err(BundleError::Format {
                found: bundle.format,
            });
        }
        bundle.check_limits()?;
        Ok(bundle)
    }

    /// Equal but for the issue and expiry times (a re-signed bundle).
    pub fn same_content_as(&self, other: &Bundle) -> bool {
        let strip = |b: &Bundle| Bundle {
            issued_at: Timestamp::UNIX_EPOCH,
            expires_at: Timestamp::UNIX_EPOCH,
            ..b.clone()
        };
        strip(self) == strip(other)
    }

    /// Checks counts, sizes and uniqueness of paths.
    pub fn check_limits(&self) -> Result<(), BundleError> {
        let limit = |m: String| Err(BundleError::Limit(m));
        if self.files.len() > MAX_FILES {
            return limit(format!("{} files, at most {MAX_FILES}", self.files.len()));
        }
        let mut total: u64 = 0;
        let mut seen = std::collections::BTreeSet::new();
        for f in &self.files {
            if f.size > MAX_FILE_SIZE {
                return limit(format!(
                    "file `{}` is {} bytes, at most {MAX_FILE_SIZE}",
                    f.path, f.size
                ));
            }
            if f.urls.len() > MAX_URLS {
                return limit(format!("file `{}` lists more than {MAX_URLS} URLs", f.path));
            }
            if !seen.insert(f.path.as_str()) {
                return limit(format!("file `{}` is listed twice", f.path));
            }
            // A file and a directory of the same name cannot both exist.
            for prefix in ancestors(f.path.as_str()) {
                if seen.contains(prefix) {
                    return limit(format!(
                        "file `{}` is below `{prefix}`, which is a file",
                        f.path
                    ));
                }
            }
            total = total.saturating_add(f.size);
        }
        for f in &self.files {
            let dir = format!("{}/", f.path);
            if seen
                .range(dir.as_str()..)
                .next()
                .is_some_and(|p| p.starts_with(&dir))
            {
                return limit(format!("`{}` is both a file and a directory", f.path));
            }
        }
        if let Some(sw) = &self.software {
            if sw.size > MAX_FILE_SIZE {
                return limit(format!(
                    "release package is {} bytes, at most {MAX_FILE_SIZE}",
                    sw.size
                ));
            }
            total = total.saturating_add(sw.size);
        }
        if let Some(a) = &self.agent_release {
            for (arch, b) in &a.binaries {
                if b.size > MAX_AGENT_BYTES {
                    return limit(format!(
                        "agent release {} for {arch} is {} bytes, at most {MAX_AGENT_BYTES}",
                        a.version, b.size
                    ));
                }
                if b.urls.len() > MAX_URLS {
                    return limit(format!(
                        "agent release {} for {arch} lists more than {MAX_URLS} URLs",
                        a.version
                    ));
                }
            }
        }
        if total > MAX_TOTAL_SIZE {
            return limit(format!("{total} bytes in all, at most {MAX_TOTAL_SIZE}"));
        }
        Ok(())
    }

    /// Total bytes of files (not the release package).
    pub fn files_bytes(&self) -> u64 {
        self.files.iter().map(|f| f.size).sum()
    }
}

fn ancestors(path: &str) -> impl Iterator<Item = &str> {
    path.match_indices('/').map(move |(i, _)| &path[..i])
}

/// Verifies a served bundle in the order the design fixes: size cap before
/// parsing, signature against the trusted keys, site, serial, expiry, limits.
/// Nothing here touches the disk; the caller persists acceptance.
pub fn verify_bundle(
    bytes: &[u8],
    signature: &[u8],
    trusted: &TrustedKeys,
    expect: Expectations<'_>,
) -> Result<Bundle, BundleError> {
    if bytes.len() > MAX_BUNDLE_BYTES {
        return Err(BundleError::TooLarge { size: bytes.len() });
    }
    trusted.verify(bytes, signature)?;
    let bundle = Bundle::from_slice(bytes)?;
    if &bundle.site != expect.site {
        return Err(BundleError::WrongSite {
            expected: expect.site.clone(),
            found: bundle.site,
        });
    }
    if let Some(last) = expect.last_accepted {
        if bundle.serial < last.serial {
            return Err(BundleError::OldSerial {
                found: bundle.serial,
                highest: last.serial,
            });
        }
        if bundle.serial == last.serial && bundle.step < last.step {
            return Err(BundleError::OldStep {
                serial: bundle.serial,
                found: bundle.step,
                highest: last.step,
            });
        }
        if bundle.serial == last.serial && bundle.step == last.step && !bundle.same_content_as(last)
        {
            return Err(BundleError::SerialReused {
                serial: bundle.serial,
            });
        }
    }
    if bundle.expires_at <= expect.now {
        return Err(BundleError::Expired {
            expires_at: bundle.expires_at,
            now: expect.now,
        });
    }
    Ok(bundle)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sign::SigningKey;

    pub(crate) fn sample() -> Bundle {
        Bundle {
            agent_release: None,
            format: BUNDLE_FORMAT,
            step: 0,
            site: SiteId::new("cesson-handball").unwrap(),
            serial: 7,
            commit: Some("0123abcd".into()),
            issued_at: "2026-11-20T10:00:00Z".parse().unwrap(),
            expires_at: "2026-11-27T10:00:00Z".parse().unwrap(),
            software: None,
            files: vec![BundleFile {
                path: TargetPath::new("Sponsors/Club/a.mp4").unwrap(),
                sha256: Sha256::digest(b"a"),
                size: 1,
                urls: vec![],
            }],
            config: serde_json::json!({"version": "1.0", "club": {"name": "Cesson"}})
                .as_object()
                .unwrap()
                .clone(),
            agent: AgentSettings::default(),
        }
    }

    #[test]
    fn canonical_bytes_round_trip() {
        let b = sample();
        let bytes = b.to_canonical_json();
        assert!(!bytes.contains(&b' ') && !bytes.contains(&b'\n'));
        let back = Bundle::from_slice(&bytes).unwrap();
        assert_eq!(back, b);
        assert_eq!(back.to_canonical_json(), bytes);
        assert_eq!(back.digest(), b.digest());
    }

    /// Every optional field set, so that a field declared out of order shows.
    fn full() -> Bundle {
        let mut b = sample();
        b.software = Some(DesiredRelease {
            version: ReleaseVersion::new("2.1.3").unwrap(),
            sha256: Sha256::digest(b"pkg"),
            size: 10,
            format: PackageFormat::TarGz,
            urls: vec!["https://cdn.example.org/p.tar.gz".into()],
            health_check: BundleHealthCheck {
                http: Some("http://127.0.0.1:8080/health".into()),
                command: Some(vec!["/bin/true".into()]),
                timeout: HumanDuration::from_secs(120),
            },
            urgent: true,
        });
        b.files[0].urls = vec!["https://cdn.example.org/a.mp4".into()];
        b.agent.allowed_actions = vec![RemoteAction::Reboot, RemoteAction::GetLogs];
        b.agent.maintenance_window = MaintenanceWindow::parse("03:00-05:00").unwrap();
        b.agent_release = Some(DesiredAgent {
            binaries: [Arch::Armhf, Arch::Amd64, Arch::Arm64]
                .into_iter()
                .map(|a| {
                    let bin = AgentBinary {
                        sha256: Sha256::digest(a.as_str().as_bytes()),
                        size: 9_000_000,
                        urls: vec![format!("https://cdn.example/agent-{a}")],
                    };
                    (a, bin)
                })
                .collect(),
            urgent: true,
            version: ReleaseVersion::new("0.2.0").unwrap(),
        });
        b
    }

    #[test]
    fn an_agent_executable_over_the_limit_is_refused() {
        let mut b = full();
        if let Some(a) = b.agent_release.as_mut()
            && let Some(x) = a.binaries.get_mut(&Arch::Arm64)
        {
            x.size = MAX_AGENT_BYTES + 1;
        }
        let e = b.check_limits().unwrap_err().to_string();
        assert!(
            e.contains("agent release 0.2.0 for arm64 is 268435457 bytes"),
            "{e}"
        );
    }

    #[test]
    fn direct_serialization_is_canonical() {
        for b in [sample(), full()] {
            assert_eq!(
                b.to_canonical_json(),
                crate::canonical::to_canonical_vec(&b).unwrap()
            );
        }
        // serde_json's map must be the sorted one (its `preserve_order`
        // feature would make it keep insertion order).
        let mut m = serde_json::Map::new();
        m.insert("b".into(), 1.into());
        m.insert("a".into(), 2.into());
        assert_eq!(m.keys().next().map(String::as_str), Some("a"));
    }

    proptest::proptest! {
        #[test]
        fn canonical_whatever_the_config(
            keys in proptest::collection::btree_map("[a-zA-Z_é~/]{1,6}", proptest::prelude::any::<i64>(), 0..8),
            nested in proptest::collection::vec("[a-z]{1,4}", 0..4),
        ) {
            let mut b = full();
            for (k, v) in keys {
                b.config.insert(k, serde_json::json!({"v": v, "list": nested.clone()}));
            }
            proptest::prop_assert_eq!(b.to_canonical_json(), crate::canonical::to_canonical_vec(&b).unwrap());
        }
    }

    #[test]
    fn unknown_fields_are_tolerated() {
        let mut v: serde_json::Value =
            serde_json::from_slice(&sample().to_canonical_json()).unwrap();
        v["added_by_a_newer_controller"] = serde_json::json!(1);
        assert!(Bundle::from_slice(&serde_json::to_vec(&v).unwrap()).is_ok());
    }

    #[test]
    fn oversize_is_refused_before_parsing() {
        let junk = vec![b'{'; MAX_BUNDLE_BYTES + 1];
        let err = Bundle::from_slice(&junk).unwrap_err();
        assert!(matches!(err, BundleError::TooLarge { .. }), "{err}");
    }

    #[test]
    fn traversal_in_a_path_is_refused_at_parse() {
        let json = String::from_utf8(sample().to_canonical_json())
            .unwrap()
            .replace("Sponsors/Club/a.mp4", "../../etc/passwd");
        let err = Bundle::from_slice(json.as_bytes()).unwrap_err();
        let BundleError::Parse(inner) = err else {
            panic!("{err}")
        };
        let inner = inner.to_string();
        assert!(
            inner.contains("unsafe path `../../etc/passwd`: `..` is not allowed"),
            "{inner}"
        );
    }

    #[test]
    fn limits() {
        let mut b = sample();
        b.files.push(b.files[0].clone());
        assert!(
            b.check_limits()
                .unwrap_err()
                .to_string()
                .contains("listed twice")
        );
        let mut b = sample();
        let mut f = b.files[0].clone();
        f.path = TargetPath::new("Sponsors/Club/a.mp4/inner").unwrap();
        b.files.push(f);
        assert!(b.check_limits().is_err());
        let mut b = sample();
        b.files[0].size = MAX_FILE_SIZE + 1;
        assert!(
            b.check_limits()
                .unwrap_err()
                .to_string()
                .contains("at most")
        );
    }

    #[test]
    fn verification_order_and_rules() {
        let key = SigningKey::generate();
        let trusted = TrustedKeys::parse(&key.public_key_openssh()).unwrap();
        let b = sample();
        let bytes = b.to_canonical_json();
        let sig = key.sign(&bytes).unwrap();
        let me = SiteId::new("cesson-handball").unwrap();
        let now: Timestamp = "2026-11-21T00:00:00Z".parse().unwrap();
        let expect = Expectations {
            site: &me,
            last_accepted: None,
            now,
        };
        assert_eq!(
            verify_bundle(&bytes, sig.as_bytes(), &trusted, expect).unwrap(),
            b
        );

        // Another site.
        let other = SiteId::new("other").unwrap();
        let err = verify_bundle(
            &bytes,
            sig.as_bytes(),
            &trusted,
            Expectations {
                site: &other,
                ..expect
            },
        );
        assert!(matches!(err, Err(BundleError::WrongSite { .. })));

        // Older serial than accepted.
        let mut newer = b.clone();
        newer.serial = 8;
        let err = verify_bundle(
            &bytes,
            sig.as_bytes(),
            &trusted,
            Expectations {
                last_accepted: Some(&newer),
                ..expect
            },
        );
        assert_eq!(
            err.unwrap_err().to_string(),
            "bundle serial 7 is older than serial 8 already accepted"
        );

        // Same serial: fine when only times differ, refused otherwise.
        let mut resigned = b.clone();
        resigned.expires_at = "2026-11-22T00:00:00Z".parse().unwrap();
        assert!(
            verify_bundle(
                &bytes,
                sig.as_bytes(),
                &trusted,
                Expectations {
                    last_accepted: Some(&resigned),
                    ..expect
                }
            )
            .is_ok()
        );
        let mut changed = b.clone();
        changed.files.clear();
        let err = verify_bundle(
            &bytes,
            sig.as_bytes(),
            &trusted,
            Expectations {
                last_accepted: Some(&changed),
                ..expect
            },
        );
        assert!(matches!(err, Err(BundleError::SerialReused { serial: 7 })));

        // Same serial, a higher step (a rollout wave opened): accepted with
        // other content; a lower step is a replay.
        let mut stepped = b.clone();
        stepped.step = 1;
        stepped.files.clear();
        let stepped_bytes = stepped.to_canonical_json();
        let stepped_sig = key.sign(&stepped_bytes).unwrap();
        assert!(
            verify_bundle(
                &stepped_bytes,
                stepped_sig.as_bytes(),
                &trusted,
                Expectations {
                    last_accepted: Some(&b),
                    ..expect
                }
            )
            .is_ok()
        );
        let err = verify_bundle(
            &bytes,
            sig.as_bytes(),
            &trusted,
            Expectations {
                last_accepted: Some(&stepped),
                ..expect
            },
        );
        assert_eq!(
            err.unwrap_err().to_string(),
            "bundle serial 7 step 0 is older than step 1, already accepted"
        );

        // Expired.
        let late = Expectations {
            now: "2026-12-01T00:00:00Z".parse().unwrap(),
            ..expect
        };
        let err = verify_bundle(&bytes, sig.as_bytes(), &trusted, late)
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("bundle expired at 2026-11-27T10:00:00Z"),
            "{err}"
        );

        // Signature checked before anything is parsed: garbage signed by an
        // untrusted key is a signature error, not a parse error.
        let stranger = SigningKey::generate();
        let sig2 = stranger.sign(b"not json").unwrap();
        let err = verify_bundle(b"not json", sig2.as_bytes(), &trusted, expect).unwrap_err();
        assert!(matches!(err, BundleError::Signature(_)), "{err}");
    }
}
