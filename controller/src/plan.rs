//! `touchline plan`: what a change of the manifests does to each box,
//! rendered from two revisions of the repository — per site the release
//! and agent release changes (downgrades flagged), the videos added and
//! removed with the bytes the box must download (what its base bundle does
//! not already hold), the `configuration.json` leaves and agent settings
//! that change, each with the manifest line that caused it; then totals
//! and warnings. Markdown for a pull-request comment, or JSON.

use std::collections::{BTreeMap, HashSet};
use std::fmt::Write as _;

use jiff::Timestamp;
use serde::Serialize;
use serde_json::Value;
use touchline_schemas::{Bundle, Sha256, SiteId};

use crate::render::{self, BundleMeta, CatalogIndex, LIBRARY_KEY, Rendered};
use crate::validate::Checked;

/// A site that downloads more than this gets a warning.
pub const LARGE_DOWNLOAD: u64 = 1_000_000_000;
/// Above this many changed sites, Markdown folds the details per group.
pub const FOLD_ABOVE: usize = 20;
/// The most characters of site details the Markdown holds: with the
/// summary, warnings, waves and table it still fits a pull-request comment
/// (65,536 characters on GitHub); the sites beyond are counted per group.
pub const DETAILS_BUDGET: usize = 56_000;

/// One revision: its manifests, validated.
pub struct Side {
    /// The revision as given.
    pub rev: String,
    /// Its manifests (without errors).
    pub checked: Checked,
}

impl std::fmt::Debug for Side {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Side")
            .field("rev", &self.rev)
            .field("sites", &self.checked.manifests.sites.len())
            .finish_non_exhaustive()
    }
}

/// Why a plan could not be made.
#[derive(Debug, thiserror::Error)]
pub enum SideError {
    /// The manifests have errors (the diagnostics are in `checked`).
    #[error("the manifests at {rev} have {errors} error(s)")]
    Invalid {
        /// The revision.
        rev: String,
        /// How many.
        errors: usize,
    },
    /// Rendering failed (validation should have said why).
    #[error("rendering {rev}: {source}")]
    Render {
        /// The revision.
        rev: String,
        /// Why.
        source: render::RenderError,
    },
}

impl Side {
    /// `checked` at `rev`, refused when it has errors.
    pub fn new(rev: &str, checked: Checked) -> Result<Self, SideError> {
        if checked.diags.has_errors() {
            return Err(SideError::Invalid {
                rev: rev.to_owned(),
                errors: checked.diags.errors(),
            });
        }
        Ok(Self {
            rev: rev.to_owned(),
            checked,
        })
    }

    fn render(&self, cat: &CatalogIndex<'_>, id: &SiteId) -> Result<Option<Rendered>, SideError> {
        if !self.checked.manifests.sites.contains_key(id) {
            return Ok(None);
        }
        let meta = BundleMeta {
            serial: 0,
            commit: None,
            issued_at: Timestamp::UNIX_EPOCH,
            expires_at: Timestamp::UNIX_EPOCH,
        };
        render::render_site(
            &self.checked.manifests,
            &self.checked.members,
            cat,
            id,
            &meta,
        )
        .map(Some)
        .map_err(|source| SideError::Render {
            rev: self.rev.clone(),
            source,
        })
    }
}

/// A version that changes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct VersionChange {
    /// Before (`None`: none pinned).
    pub from: Option<String>,
    /// After (`None`: no longer pinned).
    pub to: Option<String>,
    /// `to` is older than `from`.
    pub downgrade: bool,
    /// The line that pins `to` (or pinned `from`, when unpinned).
    pub at: Option<String>,
}

/// A video the box gains (or whose content changes).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct VideoAdded {
    /// Catalog id.
    pub id: String,
    /// Where on the box.
    pub path: String,
    /// Its size.
    pub size: u64,
    /// Bytes to download for it (0: the box holds the content already, or
    /// another file of this plan has the same content).
    pub download: u64,
    /// The box holds this content already (its base bundle names it).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub on_box: bool,
    /// Same id, other content.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub replaced: bool,
    /// The line that adds it.
    pub at: Option<String>,
}

/// A video the box loses.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct VideoRemoved {
    /// Catalog id.
    pub id: String,
    /// Where it was.
    pub path: String,
    /// The line that removes it, or `was <line>` for the line that added it.
    pub at: Option<String>,
}

/// A `configuration.json` leaf that changes.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LeafChange {
    /// JSON pointer.
    pub path: String,
    /// Before (`None`: absent).
    pub old: Option<Value>,
    /// After (`None`: absent).
    pub new: Option<Value>,
    /// The line behind the new value (or the deletion).
    pub at: Option<String>,
}

/// An agent setting that changes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SettingChange {
    /// Its name.
    pub key: String,
    /// Before.
    pub old: String,
    /// After.
    pub new: String,
    /// The line that sets it.
    pub at: Option<String>,
}

/// What changes on one site.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SitePlan {
    /// The site.
    pub site: String,
    /// `added`, `removed` or `changed`.
    pub change: &'static str,
    /// Its groups (head, or base when removed), in layering order.
    pub groups: Vec<String>,
    /// The software release.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub release: Option<VersionChange>,
    /// The agent release.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub agent_release: Option<VersionChange>,
    /// Videos gained.
    pub videos_added: Vec<VideoAdded>,
    /// Videos lost.
    pub videos_removed: Vec<VideoRemoved>,
    /// `configuration.json` leaves (the video library, which follows the
    /// videos, is left out).
    pub config: Vec<LeafChange>,
    /// Agent settings.
    pub agent: Vec<SettingChange>,
    /// Bytes the box must download (videos, release package, the largest
    /// agent executable), content it holds already not counted.
    pub download_bytes: u64,
    /// At the site's cap, else at the assumed rate.
    pub download_seconds: u64,
    /// The site's download cap from its manifests
    /// (`agent.max_download_rate`), bytes per second.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rate_cap: Option<u64>,
}

/// Totals.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Totals {
    /// Sites in the head revision.
    pub sites: usize,
    /// Sites that change.
    pub sites_affected: usize,
    /// Bytes in all.
    pub download_bytes: u64,
    /// The site that downloads the most.
    pub largest: Option<Largest>,
    /// The rate assumed for the time estimates, bytes per second.
    pub rate: u64,
}

/// The site that downloads the most.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Largest {
    /// The site.
    pub site: String,
    /// Bytes.
    pub bytes: u64,
    /// At its cap, else at the assumed rate.
    pub seconds: u64,
    /// Its download cap, bytes per second.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rate_cap: Option<u64>,
}

/// The plan.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Plan {
    /// The base revision.
    pub base: String,
    /// The head revision.
    pub head: String,
    /// The sites that change, by id.
    pub sites: Vec<SitePlan>,
    /// Totals.
    pub totals: Totals,
    /// What a reviewer must look at.
    pub warnings: Vec<String>,
    /// The waves the release changes go through, under the head's policy.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rollout: Option<RolloutPlan>,
}

/// The waves of a plan.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RolloutPlan {
    /// Where the policy comes from.
    pub policy_file: String,
    /// Success share of a wave's reachable boxes.
    pub success: String,
    /// Bake time between waves.
    pub bake: String,
    /// Videos, configuration and agent settings go through the waves too
    /// (`rollout.content: waves`).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub content_in_waves: bool,
    /// The waves, in order.
    pub waves: Vec<WavePlan>,
}

/// One wave of a plan.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct WavePlan {
    /// Its name.
    pub name: String,
    /// Its sites, by id.
    pub sites: Vec<String>,
}

/// Whether the head's `fleet.yaml` sends every change through the waves.
fn content_in_waves(head: &Side) -> bool {
    head.checked
        .manifests
        .fleet
        .as_ref()
        .and_then(|f| f.value.rollout.as_ref())
        .is_some_and(touchline_schemas::rollout::RolloutPolicy::content_in_waves)
}

/// The waves the sites whose release changes go through (with content in
/// waves: every site that changes). Sites added have nothing to protect
/// and are left out, as the controller does.
fn rollout_plan(head: &Side, sites: &[SitePlan]) -> Option<RolloutPlan> {
    let content = content_in_waves(head);
    let changing: Vec<crate::rollout::Changing> = sites
        .iter()
        .filter(|s| {
            s.change == "changed" && (content || s.release.is_some() || s.agent_release.is_some())
        })
        .filter_map(|s| {
            let site = SiteId::new(&s.site).ok()?;
            let version = |c: &Option<VersionChange>| {
                c.as_ref()
                    .and_then(|c| c.to.as_deref())
                    .and_then(|v| touchline_schemas::ReleaseVersion::new(v).ok())
            };
            let m = &head.checked.manifests;
            let target = crate::rollout::Target {
                software: version(&s.release)
                    .and_then(|v| m.releases.get(&v))
                    .map(|d| touchline_schemas::bundle::DesiredRelease::from_manifest(&d.value)),
                agent: version(&s.agent_release).and_then(|v| {
                    m.agent_releases
                        .get(&v)
                        .map(|d| touchline_schemas::bundle::DesiredAgent {
                            binaries: d.value.binaries.clone(),
                            urgent: d.value.urgent,
                            version: v,
                        })
                }),
                serial: None,
            };
            Some(crate::rollout::Changing { site, target })
        })
        .collect();
    if changing.is_empty() {
        return None;
    }
    let (policy, file) = crate::rollout::policy_for(&head.checked, &changing)?;
    let (_, waves) = crate::rollout::assign(&policy, &changing, |w, s| {
        crate::rollout::selects(&head.checked, w, s)
    });
    Some(RolloutPlan {
        policy_file: file,
        success: policy.success().to_string(),
        bake: policy.bake().to_string(),
        content_in_waves: content,
        waves: waves
            .into_iter()
            .map(|w| WavePlan {
                name: w.name,
                sites: w.sites.into_keys().map(|s| s.to_string()).collect(),
            })
            .collect(),
    })
}

/// Whether a site's change reaches it as soon as the commit lands: new
/// sites always do; videos, configuration and agent settings do unless
/// the content goes through the waves too; a release change does unless a
/// rollout holds the site back for a later wave.
fn at_once(s: &SitePlan, rollout: Option<&RolloutPlan>, content_in_waves: bool) -> bool {
    if s.change == "removed" {
        return false;
    }
    if s.change == "added" {
        return true;
    }
    let content = !s.videos_added.is_empty()
        || !s.videos_removed.is_empty()
        || !s.config.is_empty()
        || !s.agent.is_empty();
    let held = rollout.is_some_and(|r| r.waves.iter().skip(1).any(|w| w.sites.contains(&s.site)));
    (content && !content_in_waves) || !held
}

impl Plan {
    /// Anything changes.
    pub fn changes(&self) -> bool {
        !self.sites.is_empty()
    }
}

fn origin(o: Option<&crate::yaml::Origin>) -> Option<String> {
    o.map(ToString::to_string)
}

fn version_change(
    from: Option<&touchline_schemas::ReleaseVersion>,
    to: Option<&touchline_schemas::ReleaseVersion>,
    at: Option<String>,
) -> Option<VersionChange> {
    if from == to {
        return None;
    }
    Some(VersionChange {
        from: from.map(ToString::to_string),
        to: to.map(ToString::to_string),
        downgrade: matches!((from, to), (Some(f), Some(t)) if t < f),
        at,
    })
}

/// The content a bundle makes the box hold.
fn held(b: &Bundle) -> HashSet<Sha256> {
    b.files
        .iter()
        .map(|f| f.sha256)
        .chain(b.software.iter().map(|s| s.sha256))
        .chain(
            b.agent_release
                .iter()
                .flat_map(|a| a.binaries.values().map(|x| x.sha256)),
        )
        .collect()
}

/// `configuration.json` as JSON pointer → leaf (arrays are leaves).
fn leaves(obj: &serde_json::Map<String, Value>) -> BTreeMap<String, &Value> {
    fn walk<'a>(prefix: &str, v: &'a Value, out: &mut BTreeMap<String, &'a Value>) {
        match v {
            Value::Object(m) if !m.is_empty() => {
                for (k, v) in m {
                    let key = k.replace('~', "~0").replace('/', "~1");
                    walk(&format!("{prefix}/{key}"), v, out);
                }
            }
            _ => {
                out.insert(prefix.to_owned(), v);
            }
        }
    }
    let mut out = BTreeMap::new();
    for (k, v) in obj {
        if k == LIBRARY_KEY {
            continue;
        }
        let key = k.replace('~', "~0").replace('/', "~1");
        walk(&format!("/{key}"), v, &mut out);
    }
    out
}

/// The line behind a config pointer: the last touch of it or of the
/// nearest ancestor that has one.
fn config_origin(r: &Rendered, pointer: &str) -> Option<String> {
    let mut p = pointer;
    loop {
        if let Some(t) = r.explain.config.touches.get(p).and_then(|t| t.last()) {
            return Some(t.origin.to_string());
        }
        let i = p.rfind('/')?;
        if i == 0 {
            return None;
        }
        p = &p[..i];
    }
}

fn site_plan(
    id: &SiteId,
    base: Option<&Rendered>,
    head: Option<&Rendered>,
    head_cat: &CatalogIndex<'_>,
    base_cat: &CatalogIndex<'_>,
    rate: u64,
) -> Option<SitePlan> {
    let groups = |r: &Rendered| {
        r.explain
            .groups
            .iter()
            .map(|m| m.group.to_string())
            .collect()
    };
    let (change, r) = match (base, head) {
        (None, Some(h)) => ("added", h),
        (Some(b), None) => {
            return Some(SitePlan {
                site: id.to_string(),
                change: "removed",
                groups: groups(b),
                release: None,
                agent_release: None,
                videos_added: Vec::new(),
                videos_removed: Vec::new(),
                config: Vec::new(),
                agent: Vec::new(),
                download_bytes: 0,
                download_seconds: 0,
                rate_cap: None,
            });
        }
        (Some(_), Some(h)) => ("changed", h),
        (None, None) => return None,
    };
    let hb = &r.bundle;
    let bb = base.map(|b| &b.bundle);
    let rate_cap = hb.agent.max_download_rate.filter(|&v| v > 0);
    let have = bb.map(held).unwrap_or_default();
    let mut counted: HashSet<Sha256> = HashSet::new();
    let mut download = 0u64;
    let mut fetch = |sha: Sha256, size: u64| -> u64 {
        if have.contains(&sha) || !counted.insert(sha) {
            return 0;
        }
        download += size;
        size
    };
    // Release and agent release.
    let release = version_change(
        bb.and_then(|b| b.software.as_ref()).map(|s| &s.version),
        hb.software.as_ref().map(|s| &s.version),
        origin(
            r.explain
                .software
                .as_ref()
                .and_then(|t| t.set_by.as_ref())
                .or_else(|| {
                    base.and_then(|b| b.explain.software.as_ref())
                        .and_then(|t| t.set_by.as_ref())
                }),
        ),
    );
    if release.is_some()
        && let Some(sw) = &hb.software
    {
        fetch(sw.sha256, sw.size);
    }
    let agent_release = version_change(
        bb.and_then(|b| b.agent_release.as_ref())
            .map(|a| &a.version),
        hb.agent_release.as_ref().map(|a| &a.version),
        origin(
            r.explain
                .agent_release
                .as_ref()
                .and_then(|t| t.set_by.as_ref())
                .or_else(|| {
                    base.and_then(|b| b.explain.agent_release.as_ref())
                        .and_then(|t| t.set_by.as_ref())
                }),
        ),
    );
    if agent_release.is_some()
        && let Some(a) = &hb.agent_release
        && let Some(x) = a.binaries.values().max_by_key(|x| x.size)
    {
        fetch(x.sha256, x.size);
    }
    // Videos, by catalog id.
    let present = |s: &Rendered| -> BTreeMap<String, Option<String>> {
        s.explain
            .videos
            .iter()
            .filter(|(_, t)| t.removed_by.is_none())
            .map(|(id, t)| (id.to_string(), origin(t.added_by.last())))
            .collect()
    };
    let head_videos = present(r);
    let base_videos = base.map(present).unwrap_or_default();
    let mut videos_added = Vec::new();
    for (vid, at) in &head_videos {
        let Ok(key) = touchline_schemas::VideoId::new(vid) else {
            continue;
        };
        let Some((_, v)) = head_cat.get(&key) else {
            continue;
        };
        let before = base_videos
            .contains_key(vid)
            .then(|| base_cat.get(&key))
            .flatten();
        let replaced = match before {
            Some((_, old)) if old.sha256 == v.sha256 && old.size == v.size => continue,
            Some(_) => true,
            None => false,
        };
        let path = render::target_path(v)
            .map(|p| p.to_string())
            .unwrap_or_default();
        let on_box = have.contains(&v.sha256);
        let dl = fetch(v.sha256, v.size);
        videos_added.push(VideoAdded {
            id: vid.clone(),
            path,
            size: v.size,
            download: dl,
            on_box,
            replaced,
            at: at.clone(),
        });
    }
    let mut videos_removed = Vec::new();
    for (vid, was) in &base_videos {
        if head_videos.contains_key(vid) {
            continue;
        }
        let key = touchline_schemas::VideoId::new(vid).ok();
        let path = key
            .as_ref()
            .and_then(|k| base_cat.get(k))
            .and_then(|(_, v)| render::target_path(v).ok())
            .map(|p| p.to_string())
            .unwrap_or_default();
        let removed_by = key
            .as_ref()
            .and_then(|k| r.explain.videos.get(k))
            .and_then(|t| t.removed_by.as_ref())
            .map(ToString::to_string);
        videos_removed.push(VideoRemoved {
            id: vid.clone(),
            path,
            at: removed_by.or_else(|| was.as_ref().map(|w| format!("was {w}"))),
        });
    }
    // configuration.json leaves.
    let empty = serde_json::Map::new();
    let old_leaves = leaves(bb.map_or(&empty, |b| &b.config));
    let new_leaves = leaves(&hb.config);
    let mut config = Vec::new();
    let keys: std::collections::BTreeSet<&String> =
        old_leaves.keys().chain(new_leaves.keys()).collect();
    for k in keys {
        let (o, n) = (old_leaves.get(k), new_leaves.get(k));
        if o == n {
            continue;
        }
        let at = if n.is_some() {
            config_origin(r, k)
        } else {
            config_origin(r, k).or_else(|| {
                base.and_then(|b| config_origin(b, k))
                    .map(|w| format!("was {w}"))
            })
        };
        config.push(LeafChange {
            path: k.clone(),
            old: o.map(|v| (*v).clone()),
            new: n.map(|v| (*v).clone()),
            at,
        });
    }
    // Agent settings.
    let mut agent = Vec::new();
    if let Some(b) = base {
        for (key, t) in &r.explain.agent {
            let old = b
                .explain
                .agent
                .get(key)
                .map(|o| o.value.clone())
                .unwrap_or_default();
            if old != t.value {
                agent.push(SettingChange {
                    key: (*key).to_owned(),
                    old,
                    new: t.value.clone(),
                    at: origin(t.set_by.as_ref()),
                });
            }
        }
    }
    let any = change == "added"
        || release.is_some()
        || agent_release.is_some()
        || !videos_added.is_empty()
        || !videos_removed.is_empty()
        || !config.is_empty()
        || !agent.is_empty();
    if !any {
        return None;
    }
    Some(SitePlan {
        site: id.to_string(),
        change,
        groups: groups(r),
        release,
        agent_release,
        videos_added,
        videos_removed,
        config,
        agent,
        download_bytes: download,
        download_seconds: download.div_ceil(rate_cap.unwrap_or(rate).max(1)),
        rate_cap,
    })
}

/// Compares two renderings. `rate`: bytes per second assumed for the
/// download time estimates.
///
/// Sites are rendered and compared one at a time (on every core), so a
/// 10,000-site fleet never holds 20,000 renderings at once.
pub fn plan(base: &Side, head: &Side, rate: u64) -> Result<Plan, SideError> {
    let ids: Vec<&SiteId> = base
        .checked
        .manifests
        .sites
        .keys()
        .chain(head.checked.manifests.sites.keys())
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    let head_cat = CatalogIndex::new(&head.checked.manifests);
    let base_cat = CatalogIndex::new(&base.checked.manifests);
    let threads = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
    let chunk = ids.len().div_ceil(threads).max(1);
    let parts: Vec<Result<Vec<SitePlan>, SideError>> = std::thread::scope(|scope| {
        let handles: Vec<_> = ids
            .chunks(chunk)
            .map(|part| {
                let (head_cat, base_cat) = (&head_cat, &base_cat);
                scope.spawn(move || {
                    let mut out = Vec::new();
                    for id in part {
                        let b = base.render(base_cat, id)?;
                        let h = head.render(head_cat, id)?;
                        if let Some(p) =
                            site_plan(id, b.as_ref(), h.as_ref(), head_cat, base_cat, rate)
                        {
                            out.push(p);
                        }
                    }
                    Ok(out)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| match h.join() {
                Ok(r) => r,
                Err(p) => std::panic::resume_unwind(p),
            })
            .collect()
    });
    let mut sites = Vec::new();
    for p in parts {
        sites.extend(p?);
    }
    let download_bytes = sites.iter().map(|s| s.download_bytes).sum();
    let largest = sites
        .iter()
        .filter(|s| s.download_bytes > 0)
        .max_by_key(|s| s.download_bytes)
        .map(|s| Largest {
            site: s.site.clone(),
            bytes: s.download_bytes,
            seconds: s.download_seconds,
            rate_cap: s.rate_cap,
        });
    let mut warnings = Vec::new();
    for s in &sites {
        for (what, c) in [("release", &s.release), ("agent release", &s.agent_release)] {
            if let Some(c) = c
                && c.downgrade
            {
                warnings.push(format!(
                    "downgrade: {} {what} {} → {} ({})",
                    s.site,
                    c.from.as_deref().unwrap_or("none"),
                    c.to.as_deref().unwrap_or("none"),
                    c.at.as_deref().unwrap_or("?")
                ));
            }
        }
        if s.download_bytes > LARGE_DOWNLOAD {
            warnings.push(format!(
                "{} would download {} (over 1 GB), about {} {}",
                s.site,
                human_bytes(s.download_bytes),
                human_duration(s.download_seconds),
                at_rate(s.rate_cap, rate)
            ));
        }
    }
    let total = head.checked.manifests.sites.len();
    let rollout = rollout_plan(head, &sites);
    let content_in_waves = content_in_waves(head);
    let at_once = sites
        .iter()
        .filter(|s| at_once(s, rollout.as_ref(), content_in_waves))
        .count();
    if total > 1 && at_once == total {
        warnings.push(format!(
            "every site changes at once ({total} sites): consider a group first"
        ));
    }
    Ok(Plan {
        rollout,
        base: base.rev.clone(),
        head: head.rev.clone(),
        totals: Totals {
            sites: total,
            sites_affected: sites.len(),
            download_bytes,
            largest,
            rate,
        },
        sites,
        warnings,
    })
}

/// `1.2 MB`, decimal units.
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "kB", "MB", "GB", "TB"];
    let mut v = n as f64;
    let mut i = 0;
    while v >= 1000.0 && i + 1 < UNITS.len() {
        v /= 1000.0;
        i += 1;
    }
    if i == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[i])
    }
}

/// `3 h 20 min`, `45 s`.
pub fn human_duration(secs: u64) -> String {
    match secs {
        0..60 => format!("{secs} s"),
        60..3600 => format!("{} min", secs.div_ceil(60)),
        _ => format!("{} h {} min", secs / 3600, (secs % 3600) / 60),
    }
}

fn json_text(v: Option<&Value>) -> String {
    v.map_or_else(|| "(absent)".to_owned(), |v| format!("`{v}`"))
}

fn site_details(out: &mut String, s: &SitePlan) {
    let at = |a: &Option<String>| a.as_deref().map(|a| format!(" ({a})")).unwrap_or_default();
    let _ = writeln!(out, "#### `{}` ({})\n", s.site, s.change);
    if s.change == "removed" {
        let _ = writeln!(
            out,
            "- no longer in the manifests: the box keeps what it has\n"
        );
        return;
    }
    for (what, c) in [("release", &s.release), ("agent release", &s.agent_release)] {
        if let Some(c) = c {
            let _ = writeln!(
                out,
                "- {what} {} → {}{}{}",
                c.from.as_deref().unwrap_or("none"),
                c.to.as_deref().unwrap_or("none"),
                if c.downgrade { " **(downgrade)**" } else { "" },
                at(&c.at)
            );
        }
    }
    for v in &s.videos_added {
        let _ = writeln!(
            out,
            "- video {} `{}` → `{}`, {}{}{}",
            if v.replaced { "replaced" } else { "added" },
            v.id,
            v.path,
            human_bytes(v.size),
            match (v.on_box, v.download) {
                (true, _) => ", already on the box",
                (false, 0) => ", same content as another download above",
                _ => "",
            },
            at(&v.at)
        );
    }
    for v in &s.videos_removed {
        let _ = writeln!(
            out,
            "- video removed `{}` (`{}`){}",
            v.id,
            v.path,
            at(&v.at)
        );
    }
    for c in &s.config {
        let _ = writeln!(
            out,
            "- `configuration.json` `{}`: {} → {}{}",
            c.path,
            json_text(c.old.as_ref()),
            json_text(c.new.as_ref()),
            at(&c.at)
        );
    }
    for c in &s.agent {
        let _ = writeln!(
            out,
            "- agent `{}`: {} → {}{}",
            c.key,
            c.old,
            c.new,
            at(&c.at)
        );
    }
    let _ = writeln!(
        out,
        "- download: {}{}\n",
        human_bytes(s.download_bytes),
        if s.download_bytes == 0 {
            String::new()
        } else {
            format!(
                ", about {}{}",
                human_duration(s.download_seconds),
                s.rate_cap
                    .map(|c| format!(" {}", its_cap(c)))
                    .unwrap_or_default()
            )
        }
    );
}

/// `at 250.0 kB/s, its cap` (the site's own) or `at 1.0 MB/s` (assumed).
fn at_rate(cap: Option<u64>, assumed: u64) -> String {
    cap.map_or_else(|| format!("at {}/s", human_bytes(assumed)), its_cap)
}

/// `at 250.0 kB/s, its cap`.
fn its_cap(cap: u64) -> String {
    format!("at {}/s, its cap", human_bytes(cap))
}

/// The plan as a pull-request comment: a summary line, warnings, then the
/// sites (folded per group above [`FOLD_ABOVE`] sites).
pub fn markdown(p: &Plan) -> String {
    let mut out = String::new();
    let t = &p.totals;
    if !p.changes() {
        let _ = writeln!(
            out,
            "**touchline plan** `{}` → `{}`: no box changes ({} sites).",
            p.base, p.head, t.sites
        );
        return out;
    }
    let largest = t
        .largest
        .as_ref()
        .map(|l| {
            format!(
                "; largest `{}` {} (about {} {})",
                l.site,
                human_bytes(l.bytes),
                human_duration(l.seconds),
                at_rate(l.rate_cap, t.rate)
            )
        })
        .unwrap_or_default();
    let _ = writeln!(
        out,
        "**touchline plan** `{}` → `{}`: {} of {} sites change, {} to download{largest}.\n",
        p.base,
        p.head,
        t.sites_affected,
        t.sites,
        human_bytes(t.download_bytes)
    );
    for w in &p.warnings {
        let _ = writeln!(out, "> ⚠️ {w}");
    }
    if !p.warnings.is_empty() {
        out.push('\n');
    }
    if let Some(r) = &p.rollout {
        let _ = writeln!(
            out,
            "**Rollout** ({}): success {} of each wave's reachable boxes, bake {} between waves{}.\n",
            r.policy_file,
            r.success,
            r.bake,
            if r.content_in_waves {
                "; videos, configuration and agent settings go through the waves too"
            } else {
                ""
            }
        );
        for (i, w) in r.waves.iter().enumerate() {
            let shown: Vec<String> = w.sites.iter().take(5).map(|s| format!("`{s}`")).collect();
            let more = if w.sites.len() > 5 {
                format!(" and {} more", w.sites.len() - 5)
            } else {
                String::new()
            };
            let _ = writeln!(
                out,
                "{}. **{}**: {} ({}{more}){}",
                i + 1,
                w.name,
                if w.sites.len() == 1 {
                    "1 site".to_owned()
                } else {
                    format!("{} sites", w.sites.len())
                },
                shown.join(", "),
                if i == 0 { ", opens at once" } else { "" }
            );
        }
        out.push('\n');
    }
    let _ = writeln!(
        out,
        "| site | change | release | videos | config | download |"
    );
    let _ = writeln!(out, "| --- | --- | --- | --- | --- | --- |");
    let shown = if p.sites.len() > FOLD_ABOVE {
        &p.sites[..FOLD_ABOVE]
    } else {
        &p.sites[..]
    };
    for s in shown {
        let change = |c: &VersionChange| {
            format!(
                "{} → {}{}",
                c.from.as_deref().unwrap_or("none"),
                c.to.as_deref().unwrap_or("none"),
                if c.downgrade { " ⚠️" } else { "" }
            )
        };
        let release = [
            s.release.as_ref().map(change),
            s.agent_release
                .as_ref()
                .map(|c| format!("agent {}", change(c))),
        ]
        .into_iter()
        .flatten()
        .collect::<Vec<_>>()
        .join(", ");
        let _ = writeln!(
            out,
            "| `{}` | {} | {release} | +{} −{} | {} | {} |",
            s.site,
            s.change,
            s.videos_added.len(),
            s.videos_removed.len(),
            s.config.len(),
            human_bytes(s.download_bytes)
        );
    }
    if p.sites.len() > FOLD_ABOVE {
        let _ = writeln!(
            out,
            "\n…and {} more sites, below.",
            p.sites.len() - FOLD_ABOVE
        );
    }
    out.push('\n');
    if p.sites.len() > FOLD_ABOVE {
        let mut by_group: BTreeMap<String, Vec<&SitePlan>> = BTreeMap::new();
        for s in &p.sites {
            let g = s
                .groups
                .last()
                .cloned()
                .unwrap_or_else(|| "(no group)".into());
            by_group.entry(g).or_default().push(s);
        }
        let mut budget = DETAILS_BUDGET;
        let mut left_out = 0;
        for (g, list) in by_group {
            let _ = writeln!(
                out,
                "<details><summary>group <code>{g}</code>: {} sites</summary>\n",
                list.len()
            );
            let mut skipped = 0;
            for s in &list {
                let mut one = String::new();
                site_details(&mut one, s);
                if one.len() <= budget {
                    budget -= one.len();
                    out.push_str(&one);
                } else {
                    budget = 0;
                    skipped += 1;
                }
            }
            if skipped > 0 {
                let _ = writeln!(
                    out,
                    "…the details of {skipped} more site{} of this group are left out to fit a comment.\n",
                    if skipped == 1 { "" } else { "s" }
                );
                left_out += skipped;
            }
            let _ = writeln!(out, "</details>\n");
        }
        if left_out > 0 {
            let _ = writeln!(
                out,
                "The details of {left_out} sites are left out to fit a comment: `touchline plan --format json` lists every site."
            );
        }
    } else {
        for s in &p.sites {
            site_details(&mut out, s);
        }
    }
    out
}

/// Output format of `plan`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum PlanFormat {
    /// A pull-request comment.
    Markdown,
    /// For programs.
    Json,
}

/// Why a revision could not be read.
#[derive(Debug, thiserror::Error)]
pub enum RevError {
    /// Not inside a git checkout.
    #[error("`{dir}` is not in a git checkout: {source}")]
    NoRepo {
        /// The directory.
        dir: String,
        /// Why.
        source: git2::Error,
    },
    /// The revision does not name a commit.
    #[error("cannot resolve revision `{rev}`: {source}")]
    BadRev {
        /// As given.
        rev: String,
        /// Why.
        source: git2::Error,
    },
    /// The directory is not in the commit.
    #[error("`{path}` is not in revision `{rev}`")]
    NotInRev {
        /// The manifests directory, relative to the checkout.
        path: String,
        /// As given.
        rev: String,
    },
    /// Reading failed.
    #[error("reading revision `{rev}`: {source}")]
    Read {
        /// As given.
        rev: String,
        /// Why.
        source: anyhow::Error,
    },
}

/// The manifest files of `rev` for the manifests directory `dir` (the
/// root of a checkout or a folder in one), and the commit id.
pub fn source_set_at(
    dir: &std::path::Path,
    rev: &str,
) -> Result<(crate::source::SourceSet, String), RevError> {
    let repo = git2::Repository::discover(dir).map_err(|source| RevError::NoRepo {
        dir: dir.display().to_string(),
        source,
    })?;
    let read = |e: anyhow::Error| RevError::Read {
        rev: rev.to_owned(),
        source: e,
    };
    let prefix = match (repo.workdir(), dir.canonicalize()) {
        (Some(w), Ok(d)) => {
            let w = w.canonicalize().map_err(|e| read(e.into()))?;
            d.strip_prefix(&w)
                .map(std::path::Path::to_path_buf)
                .unwrap_or_default()
        }
        _ => std::path::PathBuf::new(),
    };
    let commit = repo
        .revparse_single(rev)
        .and_then(|o| o.peel_to_commit())
        .map_err(|source| RevError::BadRev {
            rev: rev.to_owned(),
            source,
        })?;
    let tree = commit.tree().map_err(|e| read(e.into()))?;
    let tree = if prefix.as_os_str().is_empty() {
        tree
    } else {
        let entry = tree.get_path(&prefix).map_err(|_| RevError::NotInRev {
            path: prefix.display().to_string(),
            rev: rev.to_owned(),
        })?;
        repo.find_tree(entry.id()).map_err(|_| RevError::NotInRev {
            path: prefix.display().to_string(),
            rev: rev.to_owned(),
        })?
    };
    let set = crate::git::tree_source_set(&repo, &tree).map_err(|e| read(e.into()))?;
    Ok((set, commit.id().to_string()))
}

/// One side, read and rendered: the diagnostics when it does not validate.
fn side(dir: &std::path::Path, rev: &str) -> Result<Side, SideFailure> {
    let (set, _commit) = source_set_at(dir, rev).map_err(SideFailure::Rev)?;
    let checked = crate::validate::check(&set);
    if checked.diags.has_errors() {
        return Err(SideFailure::Invalid(rev.to_owned(), Box::new(checked)));
    }
    Side::new(rev, checked).map_err(SideFailure::Render)
}

enum SideFailure {
    Rev(RevError),
    Invalid(String, Box<Checked>),
    Render(SideError),
}

/// `touchline plan`. Exit 0: no box changes; 1: changes; 2: could not run
/// (a bad revision, invalid manifests — then their diagnostics, as
/// `validate` prints them).
pub fn cmd_plan(
    dir: &std::path::Path,
    base: &str,
    head: &str,
    format: PlanFormat,
    rate: u64,
) -> Result<std::process::ExitCode, crate::cli::Failure> {
    use std::io::Write;
    let (b, h) = std::thread::scope(|s| {
        let b = s.spawn(|| side(dir, base));
        let h = side(dir, head);
        (b.join(), h)
    });
    let b =
        b.map_err(|_| crate::cli::cannot_run(anyhow::anyhow!("rendering the base panicked")))?;
    let mut out = std::io::stdout().lock();
    let mut fail = |f: SideFailure| -> Result<std::process::ExitCode, crate::cli::Failure> {
        match f {
            SideFailure::Rev(e) => Err(crate::cli::cannot_run(e)),
            SideFailure::Render(e) => Err(crate::cli::cannot_run(e)),
            SideFailure::Invalid(rev, checked) => {
                let as_validate = match format {
                    PlanFormat::Markdown => crate::cli::Format::Text,
                    PlanFormat::Json => crate::cli::Format::Json,
                };
                crate::cli::print_diagnostics(
                    &mut out,
                    &checked.diags,
                    checked.manifests.files_read,
                    as_validate,
                )
                .map_err(crate::cli::cannot_run)?;
                Err(crate::cli::cannot_run(anyhow::anyhow!(
                    "the manifests at `{rev}` do not validate: no plan"
                )))
            }
        }
    };
    let b = match b {
        Ok(s) => s,
        Err(f) => return fail(f),
    };
    let h = match h {
        Ok(s) => s,
        Err(f) => return fail(f),
    };
    let p = plan(&b, &h, rate).map_err(crate::cli::cannot_run)?;
    let text = match format {
        PlanFormat::Markdown => markdown(&p),
        PlanFormat::Json => {
            let mut s = serde_json::to_string_pretty(&p).map_err(crate::cli::cannot_run)?;
            s.push('\n');
            s
        }
    };
    out.write_all(text.as_bytes())
        .map_err(crate::cli::cannot_run)?;
    let changes = p.changes();
    // The process ends here: freeing two parsed 10,000-site fleets one
    // allocation at a time costs a tenth of a second the exit does not.
    std::mem::forget((b, h));
    Ok(if changes {
        std::process::ExitCode::from(1)
    } else {
        std::process::ExitCode::SUCCESS
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn site(i: usize, group: &str) -> SitePlan {
        SitePlan {
            site: format!("s{i:02}"),
            change: "changed",
            groups: vec!["all".into(), group.into()],
            release: None,
            agent_release: None,
            videos_added: Vec::new(),
            videos_removed: Vec::new(),
            config: vec![LeafChange {
                path: "/display/volume".into(),
                old: Some(Value::from(80)),
                new: Some(Value::from(60)),
                at: Some("fleet.yaml:9".into()),
            }],
            agent: Vec::new(),
            download_bytes: 0,
            download_seconds: 0,
            rate_cap: None,
        }
    }

    /// A plan from `main` to `HEAD` of a fleet of `total` sites in which
    /// `sites` change, downloading nothing.
    fn plan_of(sites: Vec<SitePlan>, total: usize) -> Plan {
        Plan {
            base: "main".into(),
            head: "HEAD".into(),
            totals: Totals {
                sites: total,
                sites_affected: sites.len(),
                download_bytes: 0,
                largest: None,
                rate: 1_000_000,
            },
            sites,
            warnings: Vec::new(),
            rollout: None,
        }
    }

    #[test]
    fn above_twenty_sites_the_details_fold_per_group_after_a_table_of_twenty() {
        let sites: Vec<SitePlan> = (0..25)
            .map(|i| site(i, if i % 2 == 0 { "bretagne" } else { "paris" }))
            .collect();
        let md = markdown(&plan_of(sites, 30));
        assert!(
            md.starts_with(
                "**touchline plan** `main` → `HEAD`: 25 of 30 sites change, 0 B to download.\n"
            ),
            "{md}"
        );
        assert_eq!(md.matches("| `s").count(), 20, "{md}");
        assert!(md.contains("…and 5 more sites, below."), "{md}");
        assert!(
            md.contains("<details><summary>group <code>bretagne</code>: 13 sites</summary>"),
            "{md}"
        );
        assert!(
            md.contains("<details><summary>group <code>paris</code>: 12 sites</summary>"),
            "{md}"
        );
        assert_eq!(md.matches("#### `s").count(), 25, "{md}");
        assert!(!md.contains("left out"), "{md}");
    }

    /// 10,000 sites changing: the comment still fits GitHub's 65,536
    /// characters, every group says how many of its sites change, and the
    /// sites whose details did not fit are counted, not silently cut.
    #[test]
    fn a_plan_of_ten_thousand_sites_fits_a_comment_and_counts_what_it_leaves_out() {
        let groups = ["bretagne", "paris", "lyon", "nantes"];
        let sites: Vec<SitePlan> = (0..10_000).map(|i| site(i, groups[i % 4])).collect();
        let md = markdown(&plan_of(sites, 10_000));
        assert!(md.chars().count() < 65_000, "{} characters", md.len());
        for g in groups {
            assert!(
                md.contains(&format!(
                    "<details><summary>group <code>{g}</code>: 2500 sites</summary>"
                )),
                "{g}"
            );
        }
        let shown = md.matches("#### `s").count();
        assert!(shown > 100, "{shown} sites' details shown");
        let left: usize = md
            .lines()
            .filter_map(|l| l.strip_prefix("…the details of "))
            .map(|l| l.split(' ').next().unwrap().parse::<usize>().unwrap())
            .sum();
        assert_eq!(shown + left, 10_000, "each site is shown or counted");
        assert!(md.ends_with(&format!(
            "The details of {left} sites are left out to fit a comment: `touchline plan --format json` lists every site.\n"
        )));
    }

    #[test]
    fn sizes_and_durations_read_like_people_write_them() {
        assert_eq!(human_bytes(999), "999 B");
        assert_eq!(human_bytes(2_500_000_000), "2.5 GB");
        assert_eq!(human_duration(45), "45 s");
        assert_eq!(human_duration(61), "2 min");
        assert_eq!(human_duration(2 * 3600 + 30 * 60), "2 h 30 min");
    }
}
