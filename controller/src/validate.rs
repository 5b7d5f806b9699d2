//! Semantic validation: everything a schema cannot see. Every problem is
//! reported (not just the first) with the file and line to fix.
//!
//! The controller runs the same code on every new commit before rendering
//! it, so a commit that passes `touchline validate` in CI is one the
//! controller accepts.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use touchline_schemas::bundle::MAX_FILE_SIZE;
use touchline_schemas::manifest::{AgentRelease, Layer, Release};
use touchline_schemas::{GroupId, HumanDuration, ReleaseVersion, SiteId, TargetPath, VideoId};

use crate::diag::Diagnostics;
use crate::model::{Doc, Manifests};
use crate::render::{LIBRARY_KEY, Memberships, memberships};
use crate::source::SourceSet;
use crate::yaml::{Pos, Seg};

/// Longest `poll_interval`: the controller holds a long-poll at most this long.
pub const MAX_POLL_SECS: u64 = 300;

/// Parsed and checked manifests.
#[derive(Debug)]
pub struct Checked {
    /// What parsed.
    pub manifests: Manifests,
    /// Site → groups, in layering order.
    pub members: Memberships,
    /// Every problem, sorted by file and line.
    pub diags: Diagnostics,
}

/// Parses and validates a set of manifest files.
pub fn check(set: &SourceSet) -> Checked {
    check_with(set, None)
}

/// [`check`], knowing the controller's own `offline_after` (what a site
/// whose manifests set none is judged against): the controller checks each
/// commit with it, `touchline validate` cannot.
pub fn check_with(set: &SourceSet, controller_offline_after: Option<HumanDuration>) -> Checked {
    let (m, mut diags) = crate::model::parse(set);
    let members = memberships(&m);
    semantic(&m, &members, controller_offline_after, &mut diags);
    Checked {
        manifests: m,
        members,
        diags: diags.sorted(),
    }
}

fn semantic(
    m: &Manifests,
    members: &Memberships,
    controller_offline_after: Option<HumanDuration>,
    d: &mut Diagnostics,
) {
    let releases: Vec<String> = m.releases.keys().map(ToString::to_string).collect();
    let agent_releases: Vec<String> = m.agent_releases.keys().map(ToString::to_string).collect();
    let videos = check_catalog(m, d);
    let ctx = LayerCtx {
        m,
        videos: &videos,
        releases: &releases,
        agent_releases: &agent_releases,
    };

    if let Some(f) = &m.fleet {
        check_timezone(d, f, &f.value.timezone, &["timezone".into()]);
        check_alerts(d, f, &f.value.alerts);
        ctx.check_layer(d, f, &f.value.defaults, "defaults");
        if let Some(p) = &f.value.rollout {
            check_rollout(m, d, f, p);
        }
    }
    for r in m.releases.values() {
        if let Some(p) = &r.value.rollout {
            check_rollout(m, d, r, p);
            check_content_in_fleet_only(d, r, p);
        }
    }
    for r in m.agent_releases.values() {
        if let Some(p) = &r.value.rollout {
            check_rollout(m, d, r, p);
            check_content_in_fleet_only(d, r, p);
        }
    }

    for s in m.sites.values() {
        let loc = &s.value.location;
        if !(-90.0..=90.0).contains(&loc.latitude) {
            d.error(
                &s.file,
                s.at(&["location".into(), "latitude".into()]),
                format!("latitude {} is out of range (-90 to 90)", loc.latitude),
            );
        }
        if !(-180.0..=180.0).contains(&loc.longitude) {
            d.error(
                &s.file,
                s.at(&["location".into(), "longitude".into()]),
                format!("longitude {} is out of range (-180 to 180)", loc.longitude),
            );
        }
        if loc.latitude == 0.0 && loc.longitude == 0.0 {
            d.warning(
                &s.file,
                s.at(&["location".into(), "latitude".into()]),
                "latitude and longitude are 0, 0 (the Gulf of Guinea): set the site's coordinates, the status page's map uses them",
            );
        }
        for (key, v) in [("city", &loc.city), ("region", &loc.region)] {
            if v.trim().is_empty() {
                d.warning(
                    &s.file,
                    s.at(&["location".into(), key.into()]),
                    format!("location.{key} is empty"),
                );
            }
        }
        if let Some(tz) = &s.value.timezone {
            check_timezone(d, s, tz, &["timezone".into()]);
        }
        check_refs(
            d,
            s,
            "groups",
            &s.value.groups,
            |g| m.groups.contains_key(g),
            m.broken.groups,
            "group",
        );
        ctx.check_layer(d, s, &s.value.overrides, "overrides");
    }

    check_liveness(m, members, controller_offline_after, d);

    for (gid, g) in &m.groups {
        check_refs(
            d,
            g,
            "sites",
            &g.value.sites,
            |s| m.sites.contains_key(s),
            m.broken.sites,
            "site",
        );
        let has_members = members
            .values()
            .any(|ms| ms.iter().any(|mem| &mem.group == gid));
        if !has_members && !m.broken.sites {
            let (path, how): (&[Seg], &str) = if g.value.selector.is_some() {
                (
                    &["selector".into()],
                    "its selector matches no site's labels",
                )
            } else {
                (
                    &["id".into()],
                    "it has no selector, lists no site, and no site lists it in `groups:`",
                )
            };
            d.warning(
                &g.file,
                g.at(path),
                format!("group `{gid}` matches no site: {how}"),
            );
        }
        ctx.check_layer(d, g, &g.value.desired, "desired");
        check_alerts(d, g, &g.value.alerts);
    }

    for r in m.releases.values() {
        check_release(d, r);
    }
    for r in m.agent_releases.values() {
        check_agent_release(d, r);
    }

    check_version_conflicts(m, members, d);
    check_downgrades(m, members, d);
}

/// Checks the catalog; returns the video ids it defines.
fn check_catalog(m: &Manifests, d: &mut Diagnostics) -> BTreeSet<VideoId> {
    let mut ids: HashMap<&VideoId, Pos> = HashMap::new();
    let mut paths: HashMap<TargetPath, (&VideoId, Pos)> = HashMap::new();
    let Some(c) = &m.catalog else {
        return BTreeSet::new();
    };
    for (i, v) in c.value.videos.iter().enumerate() {
        let at = |k: &str| c.at(&["videos".into(), i.into(), k.into()]);
        if let Some(first) = ids.get(&v.id) {
            d.error(
                &c.file,
                at("id"),
                format!(
                    "duplicate video id `{}` (first defined at line {})",
                    v.id, first.line
                ),
            );
            continue;
        }
        ids.insert(&v.id, at("id"));
        let mut parts_ok = true;
        for (key, value) in [
            ("category", &v.category),
            ("subcategory", &v.subcategory),
            ("file", &v.file),
        ] {
            let problem = if value.contains('/') {
                Some(format!(
                    "unsafe {key} `{}`: it must be a single name, without `/`",
                    value.escape_debug()
                ))
            } else {
                TargetPath::new(value).err().map(|e| format!("{key}: {e}"))
            };
            if let Some(p) = problem {
                d.error(&c.file, at(key), p);
                parts_ok = false;
            }
        }
        if parts_ok {
            match crate::render::target_path(v) {
                Ok(p) => {
                    if let Some((other, pos)) = paths.get(&p) {
                        d.error(&c.file, at("file"), format!(
                            "videos `{other}` (line {}) and `{}` both render to `{p}` on the box; rename one file or move it to another category",
                            pos.line, v.id
                        ));
                    } else {
                        paths.insert(p, (&v.id, at("id")));
                    }
                }
                Err(e) => d.error(&c.file, at("file"), e.to_string()),
            }
        }
        check_pinned(d, &c.file, "size", v.size, at("size"), &v.urls, |j| {
            c.at(&["videos".into(), i.into(), "urls".into(), j.into()])
        });
    }
    ids.into_keys().cloned().collect()
}

struct LayerCtx<'a> {
    m: &'a Manifests,
    videos: &'a BTreeSet<VideoId>,
    releases: &'a [String],
    agent_releases: &'a [String],
}

impl LayerCtx<'_> {
    /// Whether the catalog defines `v`; reports it when not (unless the
    /// catalog itself failed to parse).
    fn known_video(&self, d: &mut Diagnostics, file: &Arc<str>, pos: Pos, v: &VideoId) -> bool {
        if self.videos.contains(v) {
            return true;
        }
        if !self.m.broken.catalog {
            d.error(
                file,
                pos,
                format!("unknown video `{v}`: it is not in videos/catalog.yaml"),
            );
        }
        false
    }

    fn check_layer<T>(&self, d: &mut Diagnostics, doc: &Doc<T>, layer: &Layer, base: &str) {
        let at = |rest: &[Seg]| {
            let mut p: Vec<Seg> = vec![base.into()];
            p.extend_from_slice(rest);
            doc.at(&p)
        };
        if let Some(sw) = &layer.software
            && !self.m.releases.contains_key(&sw.version)
            && !self.m.broken.releases
        {
            let known = if self.releases.is_empty() {
                "none defined yet".to_owned()
            } else {
                self.releases.join(", ")
            };
            d.error(&doc.file, at(&["software".into(), "version".into()]), format!(
                "release `{}` is not defined: add releases/{}.yaml or pin a defined release ({known})",
                sw.version, sw.version
            ));
        }
        if let Some(a) = &layer.agent_release
            && !self.m.agent_releases.contains_key(&a.version)
            && !self.m.broken.agent_releases
        {
            let known = if self.agent_releases.is_empty() {
                "none defined yet".to_owned()
            } else {
                self.agent_releases.join(", ")
            };
            d.error(&doc.file, at(&["agent_release".into(), "version".into()]), format!(
                "agent release `{}` is not defined: add agent-releases/{}.yaml or pin a defined agent release ({known})",
                a.version, a.version
            ));
        }
        let mut added = BTreeSet::new();
        for (i, v) in layer.videos.iter().enumerate() {
            let pos = at(&["videos".into(), i.into()]);
            if self.known_video(d, &doc.file, pos, v) && !added.insert(v) {
                d.warning(&doc.file, pos, format!("video `{v}` is listed twice"));
            }
        }
        for (i, v) in layer.remove_videos.iter().enumerate() {
            let pos = at(&["remove_videos".into(), i.into()]);
            if self.known_video(d, &doc.file, pos, v) && added.contains(v) {
                d.error(
                    &doc.file,
                    pos,
                    format!("video `{v}` is both added and removed in this layer; keep one"),
                );
            }
        }
        if let Some(cfg) = &layer.config
            && cfg.contains_key(LIBRARY_KEY)
        {
            d.error(&doc.file, at(&["config".into(), LIBRARY_KEY.into()]), format!(
                "config key `{LIBRARY_KEY}` is generated from the videos; list videos instead of setting it"
            ));
        }
        for (path, pos) in &doc.pos.non_finite {
            if path.first() == Some(&Seg::Key(base.to_owned()))
                && path.get(1) == Some(&Seg::Key("config".to_owned()))
            {
                d.error(
                    &doc.file,
                    *pos,
                    "`.nan` and `.inf` have no JSON form and cannot go into configuration.json",
                );
            }
        }
        if let Some(a) = &layer.agent {
            for (key, value) in [
                ("poll_interval", a.poll_interval),
                ("heartbeat_interval", a.heartbeat_interval),
                ("metrics_interval", a.metrics_interval),
            ] {
                let Some(v) = value else { continue };
                let pos = at(&["agent".into(), key.into()]);
                if v.as_secs() == 0 {
                    d.error(&doc.file, pos, format!("{key} must be at least 1s"));
                } else if key == "poll_interval" && v.as_secs() > MAX_POLL_SECS {
                    d.error(&doc.file, pos, format!("poll_interval {v} is over 5m, the longest the controller holds a long-poll"));
                }
            }
        }
    }
}

/// A list of references (`groups:` of a site, `sites:` of a group): each
/// must exist, unless a file of that kind failed to parse (its own error
/// says what to fix), and appear once.
fn check_refs<T, R: Ord + std::fmt::Display>(
    d: &mut Diagnostics,
    doc: &Doc<T>,
    key: &str,
    items: &[R],
    exists: impl Fn(&R) -> bool,
    kind_broken: bool,
    kind: &str,
) {
    let mut seen = BTreeSet::new();
    for (i, item) in items.iter().enumerate() {
        let at = doc.at(&[key.into(), i.into()]);
        if !exists(item) {
            if !kind_broken {
                d.error(
                    &doc.file,
                    at,
                    format!("unknown {kind} `{item}`: there is no {key}/{item}.yaml"),
                );
            }
        } else if !seen.insert(item) {
            d.warning(&doc.file, at, format!("{kind} `{item}` is listed twice"));
        }
    }
}

fn check_timezone<T>(d: &mut Diagnostics, doc: &Doc<T>, tz: &str, path: &[Seg]) {
    if jiff::tz::db().get(tz).is_err() {
        d.error(
            &doc.file,
            doc.at(path),
            format!("unknown time zone `{tz}`: use an IANA name such as Europe/Paris"),
        );
    }
}

fn check_release(d: &mut Diagnostics, r: &Doc<Release>) {
    let hc = &r.value.health_check;
    let at = |k: &str| r.at(&["health_check".into(), k.into()]);
    match (&hc.http, &hc.command) {
        (Some(_), Some(_)) | (None, None) => d.error(
            &r.file,
            r.at(&["health_check".into()]),
            "health_check needs exactly one of `http` (a URL that must answer 2xx) or `command` (argv that must exit 0)",
        ),
        (Some(url), None) if !is_http_url(url) => {
            d.error(&r.file, at("http"), format!("health_check.http `{url}` is not an http:// or https:// URL"));
        }
        (None, Some(cmd)) if cmd.first().is_none_or(|c| c.trim().is_empty()) => {
            d.error(&r.file, at("command"), "health_check.command is empty: give the program and its arguments as a list");
        }
        _ => {}
    }
    if hc.timeout.as_secs() == 0 {
        d.error(
            &r.file,
            at("timeout"),
            "health_check.timeout must be at least 1s",
        );
    }
    let p = &r.value.package;
    check_pinned(
        d,
        &r.file,
        "package size",
        p.size,
        r.at(&["package".into(), "size".into()]),
        &p.urls,
        |j| r.at(&["package".into(), "urls".into(), j.into()]),
    );
}

fn check_agent_release(d: &mut Diagnostics, r: &Doc<AgentRelease>) {
    if r.value.binaries.is_empty() {
        d.error(
            &r.file,
            r.at(&["binaries".into()]),
            "binaries is empty: give the executable of at least one architecture (arm64, armhf, amd64)",
        );
    }
    for (arch, b) in &r.value.binaries {
        let at = |rest: &[Seg]| {
            let mut p: Vec<Seg> = vec!["binaries".into(), arch.as_str().into()];
            p.extend_from_slice(rest);
            r.at(&p)
        };
        if b.size > touchline_schemas::bundle::MAX_AGENT_BYTES {
            d.error(
                &r.file,
                at(&["size".into()]),
                format!(
                    "the {arch} executable is {} bytes, over the {}-byte limit for an agent",
                    b.size,
                    touchline_schemas::bundle::MAX_AGENT_BYTES
                ),
            );
        }
        check_pinned(
            d,
            &r.file,
            &format!("{arch} executable size"),
            b.size,
            at(&["size".into()]),
            &b.urls,
            |j| at(&["urls".into(), j.into()]),
        );
    }
}

/// A file pinned by sha256 and size (a video, a release package): not
/// empty, within the limit, extra sources over http(s) only.
fn check_pinned(
    d: &mut Diagnostics,
    file: &Arc<str>,
    what: &str,
    size: u64,
    size_at: Pos,
    urls: &[String],
    url_at: impl Fn(usize) -> Pos,
) {
    if size == 0 {
        d.error(file, size_at, format!("{what} is 0: a file cannot be empty; run `touchline content add --catalog-entry <file>` to get the real size"));
    } else if size > MAX_FILE_SIZE {
        d.error(
            file,
            size_at,
            format!("{what} {size} bytes is over the {MAX_FILE_SIZE}-byte limit for one file"),
        );
    }
    for (j, u) in urls.iter().enumerate() {
        if !is_http_url(u) {
            d.error(
                file,
                url_at(j),
                format!("`{u}` is not an http:// or https:// URL"),
            );
        }
    }
}

/// Two groups of the same priority that set different versions for one
/// site make the result depend on group names: refused.
fn check_version_conflicts(m: &Manifests, members: &Memberships, d: &mut Diagnostics) {
    type Pair = (GroupId, GroupId);
    let mut conflicts: BTreeMap<Pair, Vec<&SiteId>> = BTreeMap::new();
    for (sid, groups) in members {
        let mut by_prio: BTreeMap<i32, Vec<(&GroupId, &ReleaseVersion)>> = BTreeMap::new();
        for mem in groups {
            if let Some(g) = m.groups.get(&mem.group)
                && let Some(sw) = &g.value.desired.software
            {
                by_prio
                    .entry(mem.priority)
                    .or_default()
                    .push((&mem.group, &sw.version));
            }
        }
        for setters in by_prio.values() {
            for (i, (ga, va)) in setters.iter().enumerate() {
                for (gb, vb) in &setters[i + 1..] {
                    if va != vb {
                        conflicts
                            .entry(((*ga).clone(), (*gb).clone()))
                            .or_default()
                            .push(sid);
                    }
                }
            }
        }
    }
    for ((ga, gb), sites) in conflicts {
        let (Some(a), Some(b)) = (m.groups.get(&ga), m.groups.get(&gb)) else {
            continue;
        };
        let (Some(va), Some(vb)) = (&a.value.desired.software, &b.value.desired.software) else {
            continue;
        };
        let path: &[Seg] = &["desired".into(), "software".into(), "version".into()];
        let shown: Vec<&str> = sites.iter().take(5).map(|s| s.as_str()).collect();
        let more = if sites.len() > 5 {
            format!(" and {} more", sites.len() - 5)
        } else {
            String::new()
        };
        d.error(&b.file, b.at(path), format!(
            "ambiguous software version: groups `{ga}` ({}, {}:{}) and `{gb}` ({}) both have priority {} and both apply to {}{more}; give one group a higher priority or pin the same version",
            va.version, a.file, a.at(path).line, vb.version, b.value.priority, shown.join(", ")
        ));
    }
}

/// A rollout policy: at least one wave and at most `MAX_WAVES`, names
/// unique and not `rest`, groups defined, a limit that selects someone.
fn check_rollout<T>(
    m: &Manifests,
    d: &mut Diagnostics,
    doc: &crate::model::Doc<T>,
    p: &touchline_schemas::rollout::RolloutPolicy,
) {
    use touchline_schemas::rollout::{MAX_WAVES, Share};
    let at = |path: &[Seg]| {
        let mut full: Vec<Seg> = vec!["rollout".into()];
        full.extend_from_slice(path);
        doc.at(&full)
    };
    if p.waves.is_empty() {
        d.error(
            &doc.file,
            at(&["waves".into()]),
            "rollout.waves is empty: list at least one wave (e.g. `- name: all`)",
        );
    }
    if p.waves.len() > MAX_WAVES {
        d.error(
            &doc.file,
            at(&["waves".into()]),
            format!(
                "rollout.waves has {} waves, at most {MAX_WAVES}",
                p.waves.len()
            ),
        );
    }
    let mut names = std::collections::BTreeSet::new();
    for (i, w) in p.waves.iter().enumerate() {
        let wave = |k: &str| at(&["waves".into(), Seg::Index(i), k.into()]);
        let name = w.name.trim();
        if name.is_empty() || name == "rest" || name.len() > 64 {
            d.error(
                &doc.file,
                wave("name"),
                format!(
                    "wave name `{}` is not allowed: use 1 to 64 characters, not `rest` (the wave of the sites no wave selects)",
                    w.name.chars().take(64).collect::<String>()
                ),
            );
        } else if !names.insert(name) {
            d.error(
                &doc.file,
                wave("name"),
                format!("wave `{name}` is listed twice"),
            );
        }
        if let Some(g) = &w.group
            && !m.groups.contains_key(g)
            && !m.broken.groups
        {
            d.error(
                &doc.file,
                wave("group"),
                format!("wave `{name}`: group `{g}` is not defined (add groups/{g}.yaml)"),
            );
        }
        if matches!(w.max, Some(Share::Count(0)) | Some(Share::Percent(0.0))) {
            d.error(
                &doc.file,
                wave("max"),
                format!("wave `{name}`: max 0 selects no site; remove the wave instead"),
            );
        }
    }
    if matches!(p.success, Some(Share::Count(_))) {
        d.error(
            &doc.file,
            at(&["success".into()]),
            "rollout.success must be a percentage of a wave's reachable boxes (e.g. 90%)",
        );
    }
}

/// `rollout.content` says whether videos and configuration go through the
/// waves: the fleet's choice, not a release's (a release carries neither).
fn check_content_in_fleet_only<T>(
    d: &mut Diagnostics,
    doc: &crate::model::Doc<T>,
    p: &touchline_schemas::rollout::RolloutPolicy,
) {
    if p.content.is_some() {
        d.error(
            &doc.file,
            doc.at(&["rollout".into(), "content".into()]),
            "rollout.content is read from fleet.yaml only: whether videos and configuration go through the waves is the fleet's choice, not a release's (remove it here)",
        );
    }
}

/// A layer that pins an older release than a layer under it (a box held
/// back, a rollback by commit): allowed, and flagged so that a reviewer
/// sees it. One warning per pinning line, naming the sites.
fn check_downgrades(m: &Manifests, members: &Memberships, d: &mut Diagnostics) {
    type Setter<'a> = (&'a Arc<str>, Pos, &'a ReleaseVersion);
    let Some(fleet) = &m.fleet else {
        return;
    };
    let sw: &[Seg] = &["software".into(), "version".into()];
    let under = |base: &str| -> Vec<Seg> {
        std::iter::once(Seg::from(base))
            .chain(sw.iter().cloned())
            .collect()
    };
    // (file, line, col) → (pinned, newer, where the newer one is set, sites)
    type Found<'a> = (
        &'a Arc<str>,
        Pos,
        &'a ReleaseVersion,
        &'a ReleaseVersion,
        String,
        Vec<&'a SiteId>,
    );
    let mut found: BTreeMap<(String, u32, u32), Found<'_>> = BTreeMap::new();
    for (sid, site) in &m.sites {
        let mut setters: Vec<Setter<'_>> = Vec::new();
        if let Some(s) = &fleet.value.defaults.software {
            setters.push((&fleet.file, fleet.at(&under("defaults")), &s.version));
        }
        for mem in members.get(sid).map(Vec::as_slice).unwrap_or_default() {
            if let Some(g) = m.groups.get(&mem.group)
                && let Some(s) = &g.value.desired.software
            {
                setters.push((&g.file, g.at(&under("desired")), &s.version));
            }
        }
        if let Some(s) = &site.value.overrides.software {
            setters.push((&site.file, site.at(&under("overrides")), &s.version));
        }
        let Some((last, below)) = setters.split_last() else {
            continue;
        };
        let Some(newer) = below.iter().filter(|s| s.2 > last.2).max_by_key(|s| s.2) else {
            continue;
        };
        found
            .entry((last.0.to_string(), last.1.line, last.1.col))
            .or_insert_with(|| {
                (
                    last.0,
                    last.1,
                    last.2,
                    newer.2,
                    format!("{}:{}", newer.0, newer.1.line),
                    Vec::new(),
                )
            })
            .5
            .push(sid);
    }
    for (file, pos, pinned, newer, at, sites) in found.into_values() {
        let shown: Vec<&str> = sites.iter().take(5).map(|s| s.as_str()).collect();
        let more = if sites.len() > 5 {
            format!(" and {} more", sites.len() - 5)
        } else {
            String::new()
        };
        d.warning(
            file,
            pos,
            format!(
                "downgrade: release {pinned} pinned here is older than {newer} set by {at}, for {}{more}; allowed (boxes switch back in their maintenance window), check that it is meant",
                shown.join(", ")
            ),
        );
    }
}

/// Where a layered value was set: file and position.
type SetAt = Option<(Arc<str>, Pos)>;

/// A site is overdue once silent for two poll intervals, offline after
/// `alerts.offline_after`: when the second is not longer than the first,
/// a late box goes from online straight to offline (and back at its next
/// poll). One warning per pair of lines that set the two, at the poll
/// interval (or at offline_after when the poll interval is the default).
/// A site whose manifests set no offline_after is judged against the
/// controller's (`controller_offline_after`), when known.
fn check_liveness(
    m: &Manifests,
    members: &Memberships,
    controller_offline_after: Option<HumanDuration>,
    d: &mut Diagnostics,
) {
    type Found = (HumanDuration, HumanDuration, Vec<SiteId>);
    let mut found: BTreeMap<(SetAt, SetAt), Found> = BTreeMap::new();
    let poll_at: [Seg; 3] = ["".into(), "agent".into(), "poll_interval".into()];
    let offline_at: [Seg; 2] = ["alerts".into(), "offline_after".into()];
    for (id, s) in &m.sites {
        let mut poll: (HumanDuration, SetAt) = (HumanDuration::from_secs(60), None);
        let mut offline: Option<(HumanDuration, SetAt)> =
            controller_offline_after.map(|v| (v, None));
        let mut take_poll = |layer: &Layer, file: &Arc<str>, at: Pos| {
            if let Some(v) = layer.agent.as_ref().and_then(|a| a.poll_interval) {
                poll = (v, Some((file.clone(), at)));
            }
        };
        let under = |key: &str| {
            let mut p = poll_at.clone();
            p[0] = key.into();
            p
        };
        if let Some(f) = &m.fleet {
            take_poll(&f.value.defaults, &f.file, f.at(&under("defaults")));
            if let Some(v) = f.value.alerts.offline_after {
                offline = Some((v, Some((f.file.clone(), f.at(&offline_at)))));
            }
        }
        for g in members
            .get(id)
            .into_iter()
            .flatten()
            .filter_map(|mem| m.groups.get(&mem.group))
        {
            take_poll(&g.value.desired, &g.file, g.at(&under("desired")));
            if let Some(v) = g.value.alerts.offline_after {
                offline = Some((v, Some((g.file.clone(), g.at(&offline_at)))));
            }
        }
        take_poll(&s.value.overrides, &s.file, s.at(&under("overrides")));
        let Some((off, off_at)) = offline else {
            continue;
        };
        let (p, p_at) = poll;
        if p.as_secs().saturating_mul(2) >= off.as_secs() {
            found
                .entry((p_at, off_at))
                .or_insert_with(|| (p, off, Vec::new()))
                .2
                .push(id.clone());
        }
    }
    for ((p_at, off_at), (p, off, sites)) in found {
        let Some((file, pos)) = p_at.clone().or_else(|| off_at.clone()) else {
            continue;
        };
        let line = |a: &SetAt, unset: &str| {
            a.as_ref()
                .map_or(unset.to_owned(), |(f, p)| format!("{f}:{}", p.line))
        };
        let shown: Vec<String> = sites.iter().take(3).map(|s| format!("`{s}`")).collect();
        let more = if sites.len() > 3 {
            format!(" and {} more", sites.len() - 3)
        } else {
            String::new()
        };
        d.warning(
            &file,
            pos,
            format!(
                "poll_interval {p} ({}) and offline_after {off} ({}): a box is overdue only when silent for two poll intervals ({}), not before offline_after, so a late box goes straight from online to offline and back at its next poll; make offline_after longer than twice the poll interval (site{} {}{more})",
                line(&p_at, "the default"),
                line(&off_at, "the controller's config"),
                HumanDuration::from_secs(p.as_secs().saturating_mul(2)),
                if sites.len() == 1 { "" } else { "s" },
                shown.join(", "),
            ),
        );
    }
}

/// Alert thresholds that cannot be meant: a percentage outside 0–100, a
/// warning above its critical level.
fn check_alerts<T>(d: &mut Diagnostics, doc: &Doc<T>, a: &touchline_schemas::manifest::AlertRules) {
    let at = |k: &str| doc.at(&["alerts".into(), k.into()]);
    for (k, v) in [
        ("disk_warning_percent", a.disk_warning_percent),
        ("disk_critical_percent", a.disk_critical_percent),
        ("memory_warning_percent", a.memory_warning_percent),
    ] {
        if let Some(v) = v
            && !(0.0..=100.0).contains(&v)
        {
            d.error(
                &doc.file,
                at(k),
                format!("alerts.{k} {v} is not a percentage (0 to 100)"),
            );
        }
    }
    for (w, c, wk, ck) in [
        (
            a.temperature_warning,
            a.temperature_critical,
            "temperature_warning",
            "temperature_critical",
        ),
        (
            a.disk_warning_percent,
            a.disk_critical_percent,
            "disk_warning_percent",
            "disk_critical_percent",
        ),
    ] {
        if let (Some(w), Some(c)) = (w, c)
            && w > c
        {
            d.error(
                &doc.file,
                at(wk),
                format!(
                    "alerts.{wk} ({w}) is above alerts.{ck} ({c}): the warning would never show"
                ),
            );
        }
    }
}

fn is_http_url(u: &str) -> bool {
    let rest = u
        .strip_prefix("https://")
        .or_else(|| u.strip_prefix("http://"));
    rest.is_some_and(|r| {
        !r.is_empty() && !r.starts_with('/') && !u.chars().any(char::is_whitespace)
    })
}

/// Reads and checks a directory.
pub fn check_dir(root: &std::path::Path) -> Result<Checked, crate::source::SourceError> {
    let set: SourceSet = crate::source::read_dir(root)?;
    Ok(check(&set))
}
