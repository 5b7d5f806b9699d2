//! Rendering a site: layering fleet defaults, then each matching group by
//! (priority, id), then the site's own overrides, into one [`Bundle`] — and
//! remembering which file and line set every value ([`Explanation`]).
//!
//! Pure: works on parsed [`Manifests`] in memory. Rules:
//! - `software.version`: the last layer that sets it wins.
//! - `videos`: union of the layers' ids minus ids a later layer removes (a
//!   later layer may add an id back).
//! - `config`: JSON Merge Patch (RFC 7386) layer by layer, then the video
//!   library is written under [`LIBRARY_KEY`].
//! - `agent`: each field, last layer wins; time zone from the site, else the
//!   fleet.

use std::collections::BTreeMap;
use std::sync::Arc;

use jiff::Timestamp;
use serde_json::Value;
use touchline_schemas::bundle::{AgentSettings, BUNDLE_FORMAT, DesiredAgent, DesiredRelease};
use touchline_schemas::manifest::{JsonObject, Layer, Video};
use touchline_schemas::{Bundle, BundleFile, GroupId, ReleaseVersion, SiteId, TargetPath, VideoId};

use crate::merge::{self, ConfigTrace};
use crate::model::{Doc, Manifests};
pub use crate::yaml::Origin;
use crate::yaml::{Positions, Seg};

/// The `configuration.json` key under which the local app finds its video
/// library (categories → subcategories → videos). Layers may not set it.
pub const LIBRARY_KEY: &str = "categories";

/// The identity of a bundle that does not come from the manifests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BundleMeta {
    /// First-parent commit count.
    pub serial: u64,
    /// Source commit id.
    pub commit: Option<String>,
    /// Signing time.
    pub issued_at: Timestamp,
    /// Expiry.
    pub expires_at: Timestamp,
}

/// Why a site is in a group.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "by", content = "at", rename_all = "snake_case")]
pub enum Why {
    /// The group's selector matches the site's labels.
    Selector(Origin),
    /// The group lists the site in `sites:`.
    Listed(Origin),
    /// The site lists the group in `groups:`.
    Joined(Origin),
}

/// A group a site belongs to.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Member {
    /// The group.
    pub group: GroupId,
    /// Its priority.
    pub priority: i32,
    /// Every reason it applies.
    pub why: Vec<Why>,
}

/// For each site, its groups in layering order (priority, then id).
pub type Memberships = BTreeMap<SiteId, Vec<Member>>;

/// Computes which groups each site belongs to.
pub fn memberships(m: &Manifests) -> Memberships {
    let mut out: Memberships = m.sites.keys().map(|s| (s.clone(), Vec::new())).collect();
    for (gid, g) in &m.groups {
        let mut add = |site: &SiteId, why: Why| {
            if let Some(list) = out.get_mut(site) {
                join(list, gid, g.value.priority, why);
            }
        };
        if let Some(sel) = &g.value.selector {
            let at = Origin {
                file: g.file.clone(),
                pos: g.at(&["selector".into()]),
            };
            for (sid, s) in &m.sites {
                if sel.matches(&s.value.labels) {
                    add(sid, Why::Selector(at.clone()));
                }
            }
        }
        for (i, sid) in g.value.sites.iter().enumerate() {
            let at = Origin {
                file: g.file.clone(),
                pos: g.at(&["sites".into(), i.into()]),
            };
            add(sid, Why::Listed(at));
        }
    }
    for (sid, s) in &m.sites {
        for (i, gid) in s.value.groups.iter().enumerate() {
            let Some(g) = m.groups.get(gid) else { continue };
            let at = Origin {
                file: s.file.clone(),
                pos: s.at(&["groups".into(), i.into()]),
            };
            if let Some(list) = out.get_mut(sid) {
                join(list, gid, g.value.priority, Why::Joined(at));
            }
        }
    }
    for list in out.values_mut() {
        list.sort_by(|a, b| (a.priority, &a.group).cmp(&(b.priority, &b.group)));
    }
    out
}

/// Adds a reason for a site to be in `group`, joining it if needed.
fn join(list: &mut Vec<Member>, group: &GroupId, priority: i32, why: Why) {
    match list.iter_mut().find(|mem| &mem.group == group) {
        Some(mem) => mem.why.push(why),
        None => list.push(Member {
            group: group.clone(),
            priority,
            why: vec![why],
        }),
    }
}

/// A value with the layer that set it and the ones it overrode.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Traced<T> {
    /// The value.
    pub value: T,
    /// Who set it; `None` for a built-in default.
    pub set_by: Option<Origin>,
    /// Earlier layers that set it, with their values, oldest first.
    pub overridden: Vec<(Origin, T)>,
}

impl<T: Clone> Traced<T> {
    fn default_value(value: T) -> Self {
        Self {
            value,
            set_by: None,
            overridden: Vec::new(),
        }
    }

    fn set(&mut self, value: T, origin: Origin) {
        if let Some(prev) = self.set_by.take() {
            self.overridden.push((prev, self.value.clone()));
        }
        self.value = value;
        self.set_by = Some(origin);
    }
}

/// Why a video is (or is not) on a box.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct VideoTrace {
    /// Every layer that added it, in order.
    pub added_by: Vec<Origin>,
    /// The layer that removed it, if it is not on the box.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub removed_by: Option<Origin>,
}

/// Where every rendered value came from.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Explanation {
    /// The site.
    pub site: SiteId,
    /// Groups in layering order.
    pub groups: Vec<Member>,
    /// The release.
    pub software: Option<Traced<ReleaseVersion>>,
    /// The agent release.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub agent_release: Option<Traced<ReleaseVersion>>,
    /// Videos on the box and videos removed by a layer.
    pub videos: BTreeMap<VideoId, VideoTrace>,
    /// Config pointers and their touches.
    #[serde(skip)]
    pub config: ConfigTrace,
    /// Agent settings by name, as text.
    pub agent: BTreeMap<&'static str, Traced<String>>,
}

/// A rendered site.
#[derive(Debug, Clone)]
pub struct Rendered {
    /// The bundle body.
    pub bundle: Bundle,
    /// The provenance of each value.
    pub explain: Explanation,
}

/// Rendering failed: the manifests are inconsistent (validation reports the
/// same with file:line; this is the backstop).
#[derive(Debug, thiserror::Error)]
pub enum RenderError {
    /// No such site.
    #[error("no site `{0}` in the manifests (sites/{0}.yaml)")]
    UnknownSite(String),
    /// fleet.yaml is missing or did not parse.
    #[error("fleet.yaml is missing or invalid")]
    NoFleet,
    /// A reference does not resolve.
    #[error("{0}")]
    Dangling(String),
}

struct LayerRef<'a> {
    layer: &'a Layer,
    file: &'a Arc<str>,
    pos: &'a Positions,
    base: &'static str,
}

impl LayerRef<'_> {
    fn origin(&self, rest: &[Seg]) -> Origin {
        let mut path = Vec::with_capacity(rest.len() + 1);
        path.push(Seg::Key(self.base.to_owned()));
        path.extend_from_slice(rest);
        Origin {
            file: self.file.clone(),
            pos: self.pos.find(&path),
        }
    }
}

fn layer_of<'a, T>(doc: &'a Doc<T>, layer: &'a Layer, base: &'static str) -> LayerRef<'a> {
    LayerRef {
        layer,
        file: &doc.file,
        pos: &doc.pos,
        base,
    }
}

/// The layers of `site`, in order.
fn layers<'a>(
    m: &'a Manifests,
    site: &'a Doc<touchline_schemas::manifest::Site>,
    members: &[Member],
) -> Result<Vec<LayerRef<'a>>, RenderError> {
    let fleet = m.fleet.as_ref().ok_or(RenderError::NoFleet)?;
    let mut out = vec![layer_of(fleet, &fleet.value.defaults, "defaults")];
    for mem in members {
        let g = m
            .groups
            .get(&mem.group)
            .ok_or_else(|| RenderError::Dangling(format!("unknown group `{}`", mem.group)))?;
        out.push(layer_of(g, &g.value.desired, "desired"));
    }
    out.push(layer_of(site, &site.value.overrides, "overrides"));
    Ok(out)
}

/// The catalog as a map, in catalog order.
#[derive(Debug)]
pub struct CatalogIndex<'a> {
    by_id: BTreeMap<&'a VideoId, (usize, &'a Video)>,
}

impl<'a> CatalogIndex<'a> {
    /// Indexes the catalog (first entry wins on duplicates).
    pub fn new(m: &'a Manifests) -> Self {
        let mut by_id = BTreeMap::new();
        if let Some(c) = &m.catalog {
            for (i, v) in c.value.videos.iter().enumerate() {
                by_id.entry(&v.id).or_insert((i, v));
            }
        }
        Self { by_id }
    }

    /// Looks up a video.
    pub fn get(&self, id: &VideoId) -> Option<(usize, &'a Video)> {
        self.by_id.get(id).copied()
    }
}

/// Where a catalog video lands on a box, relative to the videos directory.
pub fn target_path(v: &Video) -> Result<TargetPath, touchline_schemas::PathError> {
    TargetPath::from_components([v.category.as_str(), v.subcategory.as_str(), v.file.as_str()])
}

/// Renders one site.
pub fn render_site(
    m: &Manifests,
    members: &Memberships,
    catalog: &CatalogIndex<'_>,
    site_id: &SiteId,
    meta: &BundleMeta,
) -> Result<Rendered, RenderError> {
    let site = m
        .sites
        .get(site_id)
        .ok_or_else(|| RenderError::UnknownSite(site_id.to_string()))?;
    let fleet = m.fleet.as_ref().ok_or(RenderError::NoFleet)?;
    let no_members = Vec::new();
    let groups = members.get(site_id).unwrap_or(&no_members);
    let layers = layers(m, site, groups)?;

    // Software: last layer wins.
    let mut software: Option<Traced<ReleaseVersion>> = None;
    let mut agent_release: Option<Traced<ReleaseVersion>> = None;
    // Videos: ordered set with provenance.
    let mut videos: BTreeMap<VideoId, VideoTrace> = BTreeMap::new();
    // Config: merge patch.
    let mut config = JsonObject::new();
    let mut trace = ConfigTrace::default();
    // Agent settings.
    let defaults = AgentSettings::default();
    let tz = site
        .value
        .timezone
        .clone()
        .unwrap_or_else(|| fleet.value.timezone.clone());
    let tz_origin = Origin {
        file: if site.value.timezone.is_some() {
            site.file.clone()
        } else {
            fleet.file.clone()
        },
        pos: if site.value.timezone.is_some() {
            site.at(&["timezone".into()])
        } else {
            fleet.at(&["timezone".into()])
        },
    };
    let mut agent = AgentTrace::new(&defaults);
    agent.timezone.set(tz, tz_origin);

    for l in &layers {
        if let Some(sw) = &l.layer.software {
            let origin = l.origin(&["software".into(), "version".into()]);
            match &mut software {
                Some(t) => t.set(sw.version.clone(), origin),
                None => {
                    software = Some(Traced {
                        value: sw.version.clone(),
                        set_by: Some(origin),
                        overridden: Vec::new(),
                    })
                }
            }
        }
        if let Some(a) = &l.layer.agent_release {
            let origin = l.origin(&["agent_release".into(), "version".into()]);
            match &mut agent_release {
                Some(t) => t.set(a.version.clone(), origin),
                None => {
                    agent_release = Some(Traced {
                        value: a.version.clone(),
                        set_by: Some(origin),
                        overridden: Vec::new(),
                    })
                }
            }
        }
        for (i, v) in l.layer.videos.iter().enumerate() {
            let origin = l.origin(&["videos".into(), i.into()]);
            let entry = videos.entry(v.clone()).or_insert_with(|| VideoTrace {
                added_by: Vec::new(),
                removed_by: None,
            });
            entry.removed_by = None;
            entry.added_by.push(origin);
        }
        for (i, v) in l.layer.remove_videos.iter().enumerate() {
            if let Some(entry) = videos.get_mut(v) {
                entry.removed_by = Some(l.origin(&["remove_videos".into(), i.into()]));
            }
        }
        if let Some(patch) = &l.layer.config {
            let origin_of = |keys: &[&str]| {
                let mut path: Vec<Seg> = vec!["config".into()];
                path.extend(keys.iter().map(|k| Seg::from(*k)));
                l.origin(&path)
            };
            merge::apply(&mut config, patch, &mut trace, &origin_of);
        }
        if let Some(a) = &l.layer.agent {
            let at = |k: &str| l.origin(&["agent".into(), k.into()]);
            if let Some(v) = a.poll_interval {
                agent.poll_interval.set(v, at("poll_interval"));
            }
            if let Some(v) = a.heartbeat_interval {
                agent.heartbeat_interval.set(v, at("heartbeat_interval"));
            }
            if let Some(v) = a.metrics_interval {
                agent.metrics_interval.set(v, at("metrics_interval"));
            }
            if let Some(v) = a.maintenance_window {
                agent.maintenance_window.set(v, at("maintenance_window"));
            }
            if let Some(v) = &a.allowed_actions {
                let mut v = v.clone();
                v.sort();
                v.dedup();
                agent.allowed_actions.set(v, at("allowed_actions"));
            }
            if let Some(v) = a.max_download_rate {
                agent
                    .max_download_rate
                    .set(Some(v), at("max_download_rate"));
            }
        }
    }

    // Files and the library, in catalog order.
    let mut present: Vec<(usize, &Video)> = Vec::new();
    for (id, t) in &videos {
        if t.removed_by.is_some() {
            continue;
        }
        let (i, v) = catalog.get(id).ok_or_else(|| {
            RenderError::Dangling(format!("video `{id}` is not in videos/catalog.yaml"))
        })?;
        present.push((i, v));
    }
    present.sort_by_key(|(i, _)| *i);
    let mut files = Vec::with_capacity(present.len());
    // category → [(subcategory, [video entries])], in catalog order.
    type Subcategories = Vec<(String, Vec<Value>)>;
    let mut library: Vec<(String, Subcategories)> = Vec::new();
    for (_, v) in &present {
        let path =
            target_path(v).map_err(|e| RenderError::Dangling(format!("video `{}`: {e}", v.id)))?;
        // Built by hand: `json!` would serialize (deep-copy) every
        // interpolated value, which dominated rendering time.
        let entry = object([
            ("duration", v.duration.map_or(Value::Null, Value::from)),
            ("id", Value::from(v.id.as_str())),
            ("path", Value::from(path.as_str())),
            ("size", Value::from(v.size)),
            ("title", Value::from(v.title.as_str())),
        ]);
        let cat = match library.iter_mut().position(|(c, _)| c == &v.category) {
            Some(i) => &mut library[i],
            None => {
                library.push((v.category.clone(), Vec::new()));
                library
                    .last_mut()
                    .ok_or_else(|| RenderError::Dangling(String::new()))?
            }
        };
        match cat.1.iter_mut().find(|(s, _)| s == &v.subcategory) {
            Some((_, list)) => list.push(entry),
            None => cat.1.push((v.subcategory.clone(), vec![entry])),
        }
        files.push(BundleFile {
            path,
            sha256: v.sha256,
            size: v.size,
            urls: v.urls.clone(),
        });
    }
    files.sort_by(|a, b| a.path.cmp(&b.path));
    let library: Vec<Value> = library
        .into_iter()
        .map(|(name, subs)| {
            let subs = subs
                .into_iter()
                .map(|(name, videos)| {
                    object([
                        ("name", Value::String(name)),
                        ("videos", Value::Array(videos)),
                    ])
                })
                .collect();
            object([
                ("name", Value::String(name)),
                ("subcategories", Value::Array(subs)),
            ])
        })
        .collect();
    config.insert(LIBRARY_KEY.to_owned(), Value::Array(library));

    let release = match &software {
        Some(t) => {
            let r = m.releases.get(&t.value).ok_or_else(|| {
                RenderError::Dangling(format!(
                    "release {} has no releases/{}.yaml",
                    t.value, t.value
                ))
            })?;
            Some(DesiredRelease::from_manifest(&r.value))
        }
        None => None,
    };

    let desired_agent = match &agent_release {
        Some(t) => {
            let r = m.agent_releases.get(&t.value).ok_or_else(|| {
                RenderError::Dangling(format!(
                    "agent release {} has no agent-releases/{}.yaml",
                    t.value, t.value
                ))
            })?;
            Some(DesiredAgent::from_manifest(&r.value))
        }
        None => None,
    };

    let bundle = Bundle {
        agent_release: desired_agent,
        format: BUNDLE_FORMAT,
        step: 0,
        site: site_id.clone(),
        serial: meta.serial,
        commit: meta.commit.clone(),
        issued_at: meta.issued_at,
        expires_at: meta.expires_at,
        software: release,
        files,
        config,
        agent: AgentSettings {
            poll_interval: agent.poll_interval.value,
            heartbeat_interval: agent.heartbeat_interval.value,
            metrics_interval: agent.metrics_interval.value,
            maintenance_window: agent.maintenance_window.value,
            timezone: agent.timezone.value.clone(),
            allowed_actions: agent.allowed_actions.value.clone(),
            max_download_rate: agent.max_download_rate.value,
        },
    };
    let explain = Explanation {
        site: site_id.clone(),
        groups: groups.clone(),
        software,
        agent_release,
        videos,
        config: trace,
        agent: agent.into_text(),
    };
    Ok(Rendered { bundle, explain })
}

fn object<const N: usize>(entries: [(&str, Value); N]) -> Value {
    Value::Object(
        entries
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v))
            .collect(),
    )
}

struct AgentTrace {
    poll_interval: Traced<touchline_schemas::HumanDuration>,
    heartbeat_interval: Traced<touchline_schemas::HumanDuration>,
    metrics_interval: Traced<touchline_schemas::HumanDuration>,
    maintenance_window: Traced<touchline_schemas::manifest::MaintenanceWindow>,
    timezone: Traced<String>,
    allowed_actions: Traced<Vec<touchline_schemas::manifest::RemoteAction>>,
    max_download_rate: Traced<Option<u64>>,
}

impl AgentTrace {
    fn new(d: &AgentSettings) -> Self {
        Self {
            poll_interval: Traced::default_value(d.poll_interval),
            heartbeat_interval: Traced::default_value(d.heartbeat_interval),
            metrics_interval: Traced::default_value(d.metrics_interval),
            maintenance_window: Traced::default_value(d.maintenance_window),
            timezone: Traced::default_value(d.timezone.clone()),
            allowed_actions: Traced::default_value(d.allowed_actions.clone()),
            max_download_rate: Traced::default_value(d.max_download_rate),
        }
    }

    fn into_text(self) -> BTreeMap<&'static str, Traced<String>> {
        fn text<T: Clone>(t: Traced<T>, f: impl Fn(&T) -> String) -> Traced<String> {
            Traced {
                value: f(&t.value),
                set_by: t.set_by,
                overridden: t
                    .overridden
                    .iter()
                    .map(|(o, v)| (o.clone(), f(v)))
                    .collect(),
            }
        }
        let actions = |v: &Vec<touchline_schemas::manifest::RemoteAction>| {
            serde_json::to_string(v).unwrap_or_default()
        };
        BTreeMap::from([
            (
                "poll_interval",
                text(self.poll_interval, ToString::to_string),
            ),
            (
                "heartbeat_interval",
                text(self.heartbeat_interval, ToString::to_string),
            ),
            (
                "metrics_interval",
                text(self.metrics_interval, ToString::to_string),
            ),
            (
                "maintenance_window",
                text(self.maintenance_window, |w| {
                    let s = w.to_string();
                    if s.is_empty() { "any time".into() } else { s }
                }),
            ),
            ("timezone", self.timezone),
            ("allowed_actions", text(self.allowed_actions, actions)),
            (
                "max_download_rate",
                text(self.max_download_rate, |r| match r {
                    Some(v) if *v > 0 => format!("{v} B/s"),
                    _ => "none".into(),
                }),
            ),
        ])
    }
}

/// Renders every site with the same meta; stops at the first failure.
pub fn render_all(m: &Manifests, meta: &BundleMeta) -> Result<Vec<Rendered>, RenderError> {
    let members = memberships(m);
    let catalog = CatalogIndex::new(m);
    m.sites
        .keys()
        .map(|id| render_site(m, &members, &catalog, id, meta))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::{SourceFile, SourceSet};
    use crate::validate::{Checked, check};
    use proptest::prelude::*;
    use serde_json::json;

    fn set(files: &[(&str, String)]) -> SourceSet {
        SourceSet {
            files: files
                .iter()
                .map(|(p, t)| SourceFile {
                    path: Arc::from(*p),
                    content: Ok(t.clone().into_bytes()),
                })
                .collect(),
            skipped: Vec::new(),
        }
    }

    fn meta() -> BundleMeta {
        BundleMeta {
            serial: 3,
            commit: Some("abc".into()),
            issued_at: "2026-11-01T00:00:00Z".parse().unwrap(),
            expires_at: "2026-11-08T00:00:00Z".parse().unwrap(),
        }
    }

    fn catalog(ids: &[&str]) -> String {
        let mut s = String::from("videos:\n");
        for (i, id) in ids.iter().enumerate() {
            s += &format!(
                "  - id: {id}\n    title: {id}\n    file: {id}.mp4\n    category: C{}\n    subcategory: S\n    sha256: {}\n    size: {}\n",
                i % 2,
                touchline_schemas::Sha256::digest(id.as_bytes()),
                i + 1
            );
        }
        s
    }

    const FLEET: &str = "name: t\ntimezone: Europe/Paris\ndefaults:\n  software:\n    version: 1.0.0\n  videos: [v0]\n  config:\n    display:\n      volume: 80\n      clock: true\n";
    const SITE: &str = "id: s1\nname: n\nclub: c\nlocation: {city: x, region: y, latitude: 1, longitude: 2}\nlabels: {sport: rugby}\n";

    fn release(v: &str) -> String {
        format!(
            "version: {v}\npackage:\n  sha256: {}\n  size: 1\nhealth_check:\n  http: http://127.0.0.1/h\n",
            touchline_schemas::Sha256::digest(b"p")
        )
    }

    fn checked(extra: &[(&str, String)]) -> Checked {
        let mut files = vec![
            ("fleet.yaml", FLEET.to_owned()),
            ("videos/catalog.yaml", catalog(&["v0", "v1", "v2", "v3"])),
            ("releases/1.0.0.yaml", release("1.0.0")),
            ("releases/2.0.0.yaml", release("2.0.0")),
            ("sites/s1.yaml", SITE.to_owned()),
        ];
        for (p, t) in extra {
            files.retain(|(q, _)| q != p);
            files.push((p, t.clone()));
        }
        let c = check(&set(&files));
        assert!(!c.diags.has_errors(), "{:?}", c.diags);
        c
    }

    fn render(c: &Checked) -> Rendered {
        let cat = CatalogIndex::new(&c.manifests);
        render_site(
            &c.manifests,
            &c.members,
            &cat,
            &SiteId::new("s1").unwrap(),
            &meta(),
        )
        .unwrap()
    }

    #[test]
    fn later_layers_win_and_every_value_knows_its_line() {
        let c = checked(&[
            ("groups/rugby.yaml", "id: rugby\npriority: 10\nselector:\n  match_labels: {sport: rugby}\ndesired:\n  config:\n    display:\n      volume: 60\n".into()),
            ("groups/night.yaml", "id: night\npriority: 20\nselector:\n  match_labels: {}\ndesired:\n  config:\n    display:\n      volume: 40\n      clock: null\n".into()),
            ("sites/s1.yaml", format!("{SITE}overrides:\n  config:\n    club: {{name: Vannes}}\n")),
        ]);
        let r = render(&c);
        let cfg = Value::Object(r.bundle.config.clone());
        assert_eq!(cfg["display"], json!({"volume": 40}));
        assert_eq!(cfg["club"], json!({"name": "Vannes"}));
        let vol = &r.explain.config.touches["/display/volume"];
        let where_: Vec<String> = vol.iter().map(|t| t.origin.to_string()).collect();
        assert_eq!(
            where_,
            ["fleet.yaml:9", "groups/rugby.yaml:8", "groups/night.yaml:8"]
        );
        let clock = &r.explain.config.touches["/display/clock"];
        assert!(clock.last().unwrap().removed);
        assert_eq!(
            clock.last().unwrap().origin.to_string(),
            "groups/night.yaml:9"
        );
        assert_eq!(
            r.explain.config.touches["/club/name"][0].origin.to_string(),
            "sites/s1.yaml:8"
        );
        // Layering order: priority, then id.
        let order: Vec<&str> = r.explain.groups.iter().map(|m| m.group.as_str()).collect();
        assert_eq!(order, ["rugby", "night"]);
    }

    #[test]
    fn the_agent_release_last_layer_wins_and_carries_every_architecture() {
        let agent = |v: &str| {
            format!(
                "version: {v}\nurgent: true\nbinaries:\n  arm64:\n    sha256: {}\n    size: 7\n  armhf:\n    sha256: {}\n    size: 8\n",
                touchline_schemas::Sha256::digest(b"arm64"),
                touchline_schemas::Sha256::digest(b"armhf"),
            )
        };
        let c = checked(&[
            ("agent-releases/1.1.0.yaml", agent("1.1.0")),
            ("agent-releases/1.2.0.yaml", agent("1.2.0")),
            (
                "fleet.yaml",
                FLEET.replace(
                    "defaults:\n",
                    "defaults:\n  agent_release:\n    version: 1.1.0\n",
                ),
            ),
            (
                "sites/s1.yaml",
                format!("{SITE}overrides:\n  agent_release:\n    version: 1.2.0\n"),
            ),
        ]);
        let r = render(&c);
        let a = r.bundle.agent_release.as_ref().unwrap();
        assert_eq!(a.version.to_string(), "1.2.0");
        assert!(a.urgent);
        let arches: Vec<&str> = a.binaries.keys().map(|k| k.as_str()).collect();
        assert_eq!(arches, ["arm64", "armhf"]);
        assert_eq!(
            a.binaries[&touchline_schemas::manifest::Arch::Armhf].size,
            8
        );
        let t = r.explain.agent_release.as_ref().unwrap();
        assert_eq!(t.set_by.as_ref().unwrap().to_string(), "sites/s1.yaml:8");
        assert_eq!(t.overridden[0].1.to_string(), "1.1.0");
        // The canonical form is what is signed: the map keys are in order.
        let json = String::from_utf8(r.bundle.to_canonical_json()).unwrap();
        assert!(
            json.contains(r#""agent_release":{"binaries":{"arm64":"#),
            "{json}"
        );
        // Without a pin, no agent release: boxes keep their agent.
        assert!(render(&checked(&[])).bundle.agent_release.is_none());
    }

    #[test]
    fn software_last_layer_wins_and_site_beats_groups() {
        let beta = (
            "groups/beta.yaml",
            "id: beta\npriority: 100\nsites: [s1]\ndesired:\n  software:\n    version: 2.0.0\n"
                .to_owned(),
        );
        let r = render(&checked(std::slice::from_ref(&beta)));
        let sw = r.bundle.software.as_ref().unwrap();
        assert_eq!(sw.version.to_string(), "2.0.0");
        let t = r.explain.software.as_ref().unwrap();
        assert_eq!(t.set_by.as_ref().unwrap().to_string(), "groups/beta.yaml:6");
        assert_eq!(t.overridden[0].0.to_string(), "fleet.yaml:5");
        assert!(matches!(r.explain.groups[0].why[0], Why::Listed(_)));

        let pinned = (
            "sites/s1.yaml",
            format!("{SITE}overrides:\n  software:\n    version: 1.0.0\n"),
        );
        let r = render(&checked(&[beta, pinned]));
        assert_eq!(r.bundle.software.unwrap().version.to_string(), "1.0.0");
    }

    #[test]
    fn videos_are_a_set_with_removals_and_re_adds() {
        let g = ("groups/g.yaml", "id: g\npriority: 1\nselector: {match_labels: {}}\ndesired:\n  videos: [v1, v2]\n  remove_videos: [v0]\n".to_owned());
        let h = ("groups/h.yaml", "id: h\npriority: 2\nselector: {match_labels: {}}\ndesired:\n  videos: [v0]\n  remove_videos: [v2]\n".to_owned());
        let r = render(&checked(&[g, h]));
        let paths: Vec<&str> = r.bundle.files.iter().map(|f| f.path.as_str()).collect();
        assert_eq!(paths, ["C0/S/v0.mp4", "C1/S/v1.mp4"]);
        let v2 = &r.explain.videos[&VideoId::new("v2").unwrap()];
        assert_eq!(
            v2.removed_by.as_ref().unwrap().to_string(),
            "groups/h.yaml:6"
        );
        let v0 = &r.explain.videos[&VideoId::new("v0").unwrap()];
        assert!(v0.removed_by.is_none());
        assert_eq!(v0.added_by.len(), 2);
    }

    #[test]
    fn library_is_written_for_the_local_app() {
        let r = render(&checked(&[(
            "sites/s1.yaml",
            format!("{SITE}overrides:\n  videos: [v1, v2]\n"),
        )]));
        let lib = &r.bundle.config[LIBRARY_KEY];
        // Catalog order: v0 (C0), v1 (C1), v2 (C0): categories by first appearance.
        assert_eq!(lib[0]["name"], "C0");
        assert_eq!(
            lib[0]["subcategories"][0]["videos"][1]["path"],
            "C0/S/v2.mp4"
        );
        assert_eq!(lib[1]["subcategories"][0]["videos"][0]["id"], "v1");
        assert_eq!(r.bundle.agent.timezone, "Europe/Paris");
    }

    #[test]
    fn membership_reasons_are_all_kept() {
        let g = (
            "groups/g.yaml",
            "id: g\nselector: {match_labels: {sport: rugby}}\nsites: [s1]\n".to_owned(),
        );
        let s = ("sites/s1.yaml", format!("{SITE}groups: [g]\n"));
        let c = checked(&[g, s]);
        let why = &c.members[&SiteId::new("s1").unwrap()][0].why;
        assert!(
            matches!(why[..], [Why::Selector(_), Why::Listed(_), Why::Joined(_)]),
            "{why:?}"
        );
    }

    /// A random fleet: groups that all match the one site, with priorities
    /// that often tie, each setting config `k` and adding/removing videos.
    fn arb_groups() -> impl Strategy<Value = Vec<(i32, Vec<usize>, Vec<usize>)>> {
        prop::collection::vec(
            (
                0i32..3,
                prop::collection::btree_set(0usize..4, 0..3),
                prop::collection::btree_set(0usize..4, 0..3),
            )
                .prop_map(|(p, add, rm)| {
                    let rm: Vec<usize> = rm.difference(&add).copied().collect();
                    (p, add.into_iter().collect(), rm)
                }),
            1..6,
        )
    }

    fn group_files(groups: &[(i32, Vec<usize>, Vec<usize>)]) -> Vec<(String, String)> {
        groups
            .iter()
            .enumerate()
            .map(|(i, (p, add, rm))| {
                let list = |v: &[usize]| v.iter().map(|n| format!("v{n}")).collect::<Vec<_>>().join(", ");
                (
                    format!("groups/g{i}.yaml"),
                    format!("id: g{i}\npriority: {p}\nselector: {{match_labels: {{}}}}\ndesired:\n  videos: [{}]\n  remove_videos: [{}]\n  config: {{k: g{i}}}\n", list(add), list(rm)),
                )
            })
            .collect()
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        #[test]
        fn rendering_is_deterministic_and_follows_the_layer_order(groups in arb_groups()) {
            let files = group_files(&groups);
            let extra: Vec<(&str, String)> = files.iter().map(|(p, t)| (p.as_str(), t.clone())).collect();
            let a = render(&checked(&extra));
            let mut reversed = extra.clone();
            reversed.reverse();
            let b = render(&checked(&reversed));
            prop_assert_eq!(a.bundle.to_canonical_json(), b.bundle.to_canonical_json());

            // Layering order is (priority, id); the last layer sets `k`.
            let mut order: Vec<(i32, String, usize)> = groups.iter().enumerate().map(|(i, g)| (g.0, format!("g{i}"), i)).collect();
            order.sort();
            let last = &order.last().unwrap().1;
            prop_assert_eq!(&a.bundle.config["k"], &json!(last));

            // A video is present iff the last layer that names it adds it
            // (fleet defaults add v0 first).
            for v in 0..4usize {
                let mut present = v == 0;
                for (_, _, i) in &order {
                    let (_, add, rm) = &groups[*i];
                    if add.contains(&v) { present = true; }
                    if rm.contains(&v) { present = false; }
                }
                let on_box = a.bundle.files.iter().any(|f| f.path.as_str().ends_with(&format!("/v{v}.mp4")));
                prop_assert_eq!(on_box, present, "video v{}", v);
            }
        }
    }
}
