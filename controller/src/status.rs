//! What operators see: each site's status derived from its latest report and
//! its published bundle, the fleet summary, commit convergence. Derived on
//! request from the store and the published bundles; nothing here is desired
//! state.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Arc;

use jiff::Timestamp;
use serde::Serialize;
use serde_json::{Value, json};
use touchline_schemas::report::Metrics;
use touchline_schemas::{Bundle, SiteId};

use crate::fleet::{Fleet, SyncOutcome};
use crate::point::HistoryPoint;
use crate::render::{BundleMeta, CatalogIndex};
use crate::store::{CommitRecord, CommitState, Published, Pulse, SiteState, StoreError};
use crate::validate::Checked;

pub use crate::liveness::Health;

/// One row of `/api/sites`.
#[derive(Debug, Clone, Serialize)]
pub struct SiteView {
    /// Site id.
    pub id: SiteId,
    /// Installation name.
    pub name: String,
    /// Club.
    pub club: String,
    /// Labels.
    pub labels: BTreeMap<String, String>,
    /// City, region, coordinates (`None`: not in the manifests).
    pub location: Option<touchline_schemas::manifest::Location>,
    /// Groups, in layering order.
    pub groups: Vec<String>,
    /// Online, degraded, overdue, offline or stale.
    pub status: Health,
    /// Whether the phase, conditions and metrics are current: `false` when
    /// the site is overdue, offline or stale (they are its last known
    /// state, as of `last_seen`).
    pub current: bool,
    /// Last report or bundle poll received.
    pub last_seen: Option<Timestamp>,
    /// What the published bundle says.
    pub desired: DesiredState,
    /// What the box last reported as applied.
    pub applied: AppliedState,
    /// The agent's phase.
    pub phase: Option<String>,
    /// Active condition messages.
    pub conditions: Vec<String>,
    /// Applied serial equals the published serial.
    pub converged: bool,
    /// Running release (reported, else desired).
    pub version: Option<String>,
    /// Latest metrics, if any.
    pub metrics: Option<Metrics>,
    /// Software releases on the box, as reported.
    pub software: Option<touchline_schemas::report::SoftwareStatus>,
    /// The agent version the box last reported.
    pub agent_version: Option<String>,
    /// Where the box's agent releases stand, as reported.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub agent_release: Option<touchline_schemas::report::AgentReleaseStatus>,
    /// Its alert thresholds (fleet, then groups), for the stats and the
    /// page's colours.
    #[serde(skip)]
    pub thresholds: crate::alerts::Effective,
}

/// What a site's published bundle asks for.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct DesiredState {
    /// The bundle's serial.
    pub serial: Option<u64>,
    /// The release it pins.
    pub release: Option<String>,
    /// The agent release it pins.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub agent_release: Option<String>,
    /// Its ETag.
    pub etag: Option<String>,
    /// When it expires.
    pub expires_at: Option<Timestamp>,
}

/// What a box last reported as applied.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct AppliedState {
    /// The serial on disk.
    pub serial: Option<u64>,
    /// The release running.
    pub release: Option<String>,
}

/// A filter of the sites (`/api/sites` and the sites page): each field,
/// when set and not empty, must match; `q` searches the name, the club and
/// the id.
#[derive(Debug, Clone, Default, serde::Deserialize)]
pub struct SiteFilter {
    /// Label `sport`.
    pub sport: Option<String>,
    /// Label `region`.
    pub region: Option<String>,
    /// A group the site is a member of.
    pub group: Option<String>,
    /// `online`, `degraded`, `overdue`, `offline` or `stale`.
    pub status: Option<String>,
    /// The running release.
    pub version: Option<String>,
    /// Text in the name, the club or the id (case-insensitive).
    pub q: Option<String>,
}

impl SiteFilter {
    /// A field's value, when it filters.
    fn set(v: &Option<String>) -> Option<&str> {
        v.as_deref().filter(|s| !s.is_empty())
    }

    /// Whether `v` passes.
    pub fn matches(&self, v: &SiteView) -> bool {
        let label = |k: &str| v.labels.get(k).map(String::as_str);
        let needle = Self::set(&self.q).map(str::to_lowercase);
        Self::set(&self.sport).is_none_or(|s| label("sport") == Some(s))
            && Self::set(&self.region).is_none_or(|s| label("region") == Some(s))
            && Self::set(&self.group).is_none_or(|g| v.groups.iter().any(|x| x == g))
            && Self::set(&self.status).is_none_or(|s| v.status.as_str() == s)
            && Self::set(&self.version).is_none_or(|x| v.version.as_deref() == Some(x))
            && needle.is_none_or(|n| {
                v.name.to_lowercase().contains(&n)
                    || v.club.to_lowercase().contains(&n)
                    || v.id.as_str().contains(&n)
            })
    }
}

fn disk_percent(m: &Metrics) -> Option<f64> {
    match (m.disk_used_bytes, m.disk_total_bytes) {
        (Some(u), Some(t)) if t > 0 => Some(u as f64 * 100.0 / t as f64),
        _ => None,
    }
}

/// When the site was last heard from: its latest report or its latest
/// bundle poll (a box's long-poll is its liveness signal between reports).
fn last_seen(pulse: Option<&Pulse>, last_poll: Option<Timestamp>) -> Option<Timestamp> {
    pulse
        .map(|p| p.received_at)
        .into_iter()
        .chain(last_poll)
        .max()
}

/// A site's state at `now` (see [`crate::liveness`]).
fn health(
    pulse: Option<&Pulse>,
    last_poll: Option<Timestamp>,
    clocks: &crate::liveness::Clocks,
    now: Timestamp,
) -> Health {
    let said = crate::liveness::Said {
        stale: pulse.is_some_and(|p| p.stale),
        troubled: pulse.is_some_and(|p| p.troubled),
    };
    crate::liveness::judge(last_seen(pulse, last_poll), said, clocks, now)
}

/// Every site the fleet knows, sorted: published, reporting (`reported`)
/// or in the manifests.
fn known_sites<'a>(
    bundles: &BTreeMap<SiteId, Arc<Published>>,
    reported: impl Iterator<Item = &'a SiteId>,
    manifests: Option<&Checked>,
) -> Vec<SiteId> {
    let mut ids: Vec<SiteId> = bundles.keys().cloned().collect();
    ids.extend(reported.cloned());
    if let Some(m) = manifests {
        ids.extend(m.manifests.sites.keys().cloned());
    }
    ids.sort();
    ids.dedup();
    ids
}

/// Each site's health and release, for `/metrics`: from memory (the
/// fleet's pulses, polls and bundles), no report read.
pub fn site_health(fleet: &Fleet, now: Timestamp) -> Vec<(Health, Option<String>)> {
    let pulses = fleet.pulses();
    let ids = known_sites(
        &fleet.bundles(),
        pulses.keys(),
        fleet.manifests().as_deref(),
    );
    let manifests = fleet.manifests();
    ids.into_iter()
        .map(|id| {
            let pulse = pulses.get(&id);
            let limit = fleet.thresholds(manifests.as_deref(), &id).offline_after;
            let health = health(pulse, fleet.last_poll(&id), &fleet.clocks(&id, limit), now);
            let release = pulse
                .and_then(|p| p.release.clone())
                .or_else(|| fleet.desired_release(&id));
            (health, release)
        })
        .collect()
}

fn latest_by_site(fleet: &Fleet) -> Result<BTreeMap<SiteId, SiteState>, StoreError> {
    Ok(fleet
        .store
        .latest_all()?
        .into_iter()
        .map(|s| (s.site.clone(), s))
        .collect())
}

/// Every site of the last good manifests (and any that reported or has a
/// bundle), with its derived status.
pub fn site_views(fleet: &Fleet, now: Timestamp) -> Result<Vec<SiteView>, StoreError> {
    let latest = latest_by_site(fleet)?;
    let bundles = fleet.bundles();
    let manifests = fleet.manifests();
    let ids = known_sites(&bundles, latest.keys(), manifests.as_deref());
    Ok(ids
        .into_iter()
        .map(|id| {
            let state = latest.get(&id);
            let published = bundles.get(&id).map(|p| &**p);
            let polled = fleet.last_poll(&id);
            let thresholds = fleet.thresholds(manifests.as_deref(), &id);
            let clocks = fleet.clocks(&id, thresholds.offline_after);
            let facts = Facts {
                manifests: manifests.as_deref(),
                state,
                last_poll: polled,
                published,
            };
            view_of(id, &facts, thresholds, &clocks, now)
        })
        .collect())
}

/// What a site's row is made of.
struct Facts<'a> {
    manifests: Option<&'a Checked>,
    state: Option<&'a SiteState>,
    last_poll: Option<Timestamp>,
    published: Option<&'a Published>,
}

/// One site's row, from its manifest, latest report and published bundle.
fn view_of(
    id: SiteId,
    facts: &Facts<'_>,
    thresholds: crate::alerts::Effective,
    clocks: &crate::liveness::Clocks,
    now: Timestamp,
) -> SiteView {
    let Facts {
        manifests,
        state,
        last_poll,
        published,
    } = *facts;
    let doc = manifests.and_then(|m| m.manifests.sites.get(&id));
    let pulse = state.map(SiteState::pulse);
    // Only the release of the bundle (parsing whole bundles for every site
    // is most of a 2,000-site page).
    #[derive(serde::Deserialize)]
    struct Sw {
        version: String,
    }
    #[derive(serde::Deserialize)]
    struct Desired {
        software: Option<Sw>,
        agent_release: Option<Sw>,
    }
    let desired = published.and_then(|p| serde_json::from_slice::<Desired>(&p.body).ok());
    let (desired_release, desired_agent) = match desired {
        Some(d) => (
            d.software.map(|s| s.version),
            d.agent_release.map(|s| s.version),
        ),
        None => (None, None),
    };
    let applied_serial = state.and_then(|s| s.report.status.applied_serial);
    let applied_release =
        state.and_then(|s| s.report.status.release.as_ref().map(ToString::to_string));
    let status = health(pulse.as_ref(), last_poll, clocks, now);
    let groups = manifests
        .and_then(|m| m.members.get(&id))
        .map(|ms| ms.iter().map(|m| m.group.to_string()).collect())
        .unwrap_or_default();
    SiteView {
        name: doc.map(|d| d.value.name.clone()).unwrap_or_default(),
        club: doc.map(|d| d.value.club.clone()).unwrap_or_default(),
        labels: doc
            .map(|d| {
                d.value
                    .labels
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.clone()))
                    .collect()
            })
            .unwrap_or_default(),
        location: doc.map(|d| d.value.location.clone()),
        groups,
        status,
        // An offline site's state is never current, even when its
        // offline_after is shorter than two poll intervals.
        current: status != Health::Offline
            && crate::liveness::fresh(last_seen(pulse.as_ref(), last_poll), clocks, now),
        last_seen: last_seen(pulse.as_ref(), last_poll),
        desired: DesiredState {
            serial: published.map(|p| p.serial),
            release: desired_release.clone(),
            agent_release: desired_agent,
            etag: published.map(|p| p.etag.clone()),
            expires_at: published.map(|p| p.expires_at),
        },
        applied: AppliedState {
            serial: applied_serial,
            release: applied_release.clone(),
        },
        phase: state.map(|s| crate::store::phase_name(s.report.status.phase)),
        conditions: state
            .map(|s| {
                s.report
                    .status
                    .conditions
                    .iter()
                    .map(|c| format!("{}: {}", c.item, c.message))
                    .collect()
            })
            .unwrap_or_default(),
        converged: published.is_some_and(|p| applied_serial == Some(p.serial)),
        version: applied_release.or(desired_release),
        metrics: state.and_then(|s| s.metrics.clone()),
        software: state.and_then(|s| s.report.status.software.clone()),
        agent_version: state.and_then(|s| s.report.status.agent_version.clone()),
        agent_release: state.and_then(|s| s.report.status.agent_release.clone()),
        thresholds,
        id,
    }
}

/// What a site's row and detail are made of, read once: its row, latest
/// state, published bundle and the manifests (`None`: an unknown site).
type Parts = (
    SiteView,
    Option<SiteState>,
    Option<std::sync::Arc<crate::store::Published>>,
    Option<std::sync::Arc<crate::validate::Checked>>,
);

fn site_parts(fleet: &Fleet, site: &SiteId, now: Timestamp) -> Result<Option<Parts>, StoreError> {
    let state = fleet.store.latest(site)?;
    let published = fleet.bundle(site);
    let manifests = fleet.manifests();
    let known = manifests
        .as_ref()
        .is_some_and(|m| m.manifests.sites.contains_key(site));
    if state.is_none() && published.is_none() && !known {
        return Ok(None);
    }
    let thresholds = fleet.thresholds(manifests.as_deref(), site);
    let clocks = fleet.clocks(site, thresholds.offline_after);
    let facts = Facts {
        manifests: manifests.as_deref(),
        state: state.as_ref(),
        last_poll: fleet.last_poll(site),
        published: published.as_deref(),
    };
    let view = view_of(site.clone(), &facts, thresholds, &clocks, now);
    Ok(Some((view, state, published, manifests)))
}

/// One site's row (what [`site_views`] gives for it, without the others).
pub fn site_view(
    fleet: &Fleet,
    site: &SiteId,
    now: Timestamp,
) -> Result<Option<SiteView>, StoreError> {
    Ok(site_parts(fleet, site, now)?.map(|p| p.0))
}

/// `/api/sites/{id}`.
#[derive(Debug, Clone, Serialize)]
pub struct SiteDetail {
    /// The row.
    pub site: SiteView,
    /// The published bundle.
    pub bundle: Option<Bundle>,
    /// The manifest line behind each desired value (`explain --json`).
    pub origins: Option<Value>,
    /// The latest report.
    pub report: Option<touchline_schemas::report::Report>,
    /// When the latest metrics were received.
    pub metrics_at: Option<Timestamp>,
    /// The last 20 events, newest first.
    pub events: Vec<crate::store::Event>,
}

/// `/api/sites/{id}`: the row plus the desired state with the manifest line
/// behind each value, the latest metrics and the last 20 events.
pub fn site_detail(
    fleet: &Fleet,
    site: &SiteId,
    now: Timestamp,
) -> Result<Option<SiteDetail>, StoreError> {
    let Some((view, state, published, manifests)) = site_parts(fleet, site, now)? else {
        return Ok(None);
    };
    let bundle = published
        .as_ref()
        .and_then(|p| Bundle::from_slice(&p.body).ok());
    let origins = match (manifests, &bundle) {
        (Some(m), Some(b)) if m.manifests.sites.contains_key(site) => {
            let meta = BundleMeta {
                serial: b.serial,
                commit: b.commit.clone(),
                issued_at: b.issued_at,
                expires_at: b.expires_at,
            };
            let catalog = CatalogIndex::new(&m.manifests);
            crate::render::render_site(&m.manifests, &m.members, &catalog, site, &meta)
                .ok()
                .map(|r| crate::explain::json(&r))
        }
        _ => None,
    };
    Ok(Some(SiteDetail {
        site: view,
        bundle,
        origins,
        report: state.as_ref().map(|s| s.report.clone()),
        metrics_at: state.as_ref().and_then(|s| s.metrics_at),
        events: fleet.store.events(site, 20)?,
    }))
}

/// A release as the manifests declare it.
#[derive(Debug, Clone, Serialize)]
pub struct ReleaseManifest {
    /// The file that declares it.
    pub file: String,
    /// Its changelog.
    pub changelog: String,
    /// Switched outside the maintenance window.
    pub urgent: bool,
    /// Its package.
    pub package: PackageRef,
    /// Its health check.
    pub health_check: touchline_schemas::manifest::HealthCheck,
}

/// A package, by hash and size.
#[derive(Debug, Clone, Serialize)]
pub struct PackageRef {
    /// sha256.
    pub sha256: touchline_schemas::Sha256,
    /// Bytes.
    pub size: u64,
}

/// A site waiting to switch to a release, and why.
#[derive(Debug, Clone, Serialize)]
pub struct WaitingSite {
    /// The site.
    pub site: String,
    /// Why it waits (window, update lock).
    pub reason: String,
}

/// A site that rolled a release back.
#[derive(Debug, Clone, Serialize)]
pub struct RolledBackSite {
    /// The site.
    pub site: String,
    /// The release it went back to.
    pub to: Option<String>,
    /// When.
    pub at: Timestamp,
    /// The health check's output.
    pub output: String,
}

/// One release and its adoption across the fleet.
#[derive(Debug, Clone, Serialize)]
pub struct ReleaseAdoption {
    /// The version.
    pub version: String,
    /// Declared in the manifests.
    pub in_manifests: bool,
    /// Its declaration.
    pub manifest: Option<ReleaseManifest>,
    /// Sites that should run it.
    pub desired: usize,
    /// Sites that run it.
    pub running: usize,
    /// Which sites should run it.
    pub sites_desired: Vec<String>,
    /// Which sites run it.
    pub sites_running: Vec<String>,
    /// Sites that have it unpacked, not running.
    pub staged: Vec<String>,
    /// Sites waiting to switch to it.
    pub waiting: Vec<WaitingSite>,
    /// Sites that rolled it back.
    pub rolled_back: Vec<RolledBackSite>,
    /// Sites that hold it back.
    pub held_back: Vec<String>,
}

/// `/api/releases`.
#[derive(Debug, Clone, Serialize)]
pub struct Releases {
    /// The newest release of the manifests.
    pub latest: Option<String>,
    /// Newest first.
    pub releases: Vec<ReleaseAdoption>,
    /// The agent versions the boxes report, newest first (`unknown`: a
    /// site that has not reported yet).
    pub agents: Vec<AgentAdoption>,
}

/// One agent version: its declaration, the sites that should run it,
/// run it, wait to switch to it, and rolled it back.
#[derive(Debug, Clone, Serialize)]
pub struct AgentAdoption {
    /// The version (`unknown` for sites with no report).
    pub version: String,
    /// Declared in `agent-releases/`.
    pub in_manifests: bool,
    /// Its file, when declared.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub file: Option<String>,
    /// The architectures it has an executable for.
    pub architectures: Vec<String>,
    /// How many sites run it.
    pub running: usize,
    /// Which.
    pub sites: Vec<String>,
    /// How many sites should run it.
    pub desired: usize,
    /// Which.
    pub sites_desired: Vec<String>,
    /// Sites running it on trial.
    pub on_trial: Vec<String>,
    /// Sites waiting to switch to it.
    pub waiting: Vec<WaitingSite>,
    /// Sites that rolled it back.
    pub rolled_back: Vec<RolledBackSite>,
    /// Sites that hold it back.
    pub held_back: Vec<String>,
}

fn agent_row<'a>(rows: &'a mut BTreeMap<String, AgentAdoption>, v: &str) -> &'a mut AgentAdoption {
    rows.entry(v.to_owned()).or_insert_with(|| AgentAdoption {
        version: v.to_owned(),
        in_manifests: false,
        file: None,
        architectures: Vec::new(),
        running: 0,
        sites: Vec::new(),
        desired: 0,
        sites_desired: Vec::new(),
        on_trial: Vec::new(),
        waiting: Vec::new(),
        rolled_back: Vec::new(),
        held_back: Vec::new(),
    })
}

/// The agent rows of `/api/releases`, newest first.
fn agent_adoption(
    manifests: Option<&crate::validate::Checked>,
    views: &[SiteView],
) -> Vec<AgentAdoption> {
    let mut rows: BTreeMap<String, AgentAdoption> = BTreeMap::new();
    if let Some(m) = manifests {
        for (v, doc) in &m.manifests.agent_releases {
            let row = agent_row(&mut rows, &v.to_string());
            row.in_manifests = true;
            row.file = Some(doc.file.to_string());
            row.architectures = doc.value.binaries.keys().map(ToString::to_string).collect();
        }
    }
    for v in views {
        let site = v.id.to_string();
        let version = v.agent_version.clone().unwrap_or_else(|| "unknown".into());
        agent_row(&mut rows, &version).sites.push(site.clone());
        if let Some(d) = &v.desired.agent_release {
            agent_row(&mut rows, d).sites_desired.push(site.clone());
        }
        let Some(a) = &v.agent_release else {
            continue;
        };
        if a.trial {
            agent_row(&mut rows, &a.running).on_trial.push(site.clone());
        }
        if let (Some(w), Some(d)) = (&a.waiting, &a.desired) {
            agent_row(&mut rows, &d.to_string())
                .waiting
                .push(WaitingSite {
                    site: site.clone(),
                    reason: w.clone(),
                });
        }
        if let Some(rb) = &a.last_rollback {
            agent_row(&mut rows, &rb.from)
                .rolled_back
                .push(RolledBackSite::of(&site, rb));
        }
        if let Some(h) = &a.held_back {
            agent_row(&mut rows, h).held_back.push(site);
        }
    }
    let mut list: Vec<AgentAdoption> = rows
        .into_values()
        .map(|mut r| {
            r.running = r.sites.len();
            r.desired = r.sites_desired.len();
            r
        })
        .collect();
    newest_first(&mut list, |r| &r.version);
    list
}

impl RolledBackSite {
    /// `site`'s reported rollback.
    fn of(site: &str, rb: &touchline_schemas::report::RollbackReport) -> Self {
        Self {
            site: site.to_owned(),
            to: rb.to.clone(),
            at: rb.at,
            output: rb.output.clone(),
        }
    }
}

/// Sorts rows newest version first (a name that is not a version after
/// the versions, then by name).
fn newest_first<T>(list: &mut [T], version: impl Fn(&T) -> &str) {
    let key = |v: &str| touchline_schemas::ReleaseVersion::new(v).ok();
    list.sort_by(|a, b| {
        let (a, b) = (version(a), version(b));
        key(b).cmp(&key(a)).then_with(|| b.cmp(a))
    });
}

/// The row of release `v`, created empty.
fn adoption<'a>(
    rows: &'a mut BTreeMap<String, ReleaseAdoption>,
    v: &str,
) -> &'a mut ReleaseAdoption {
    rows.entry(v.to_owned()).or_insert_with(|| ReleaseAdoption {
        version: v.to_owned(),
        in_manifests: false,
        manifest: None,
        desired: 0,
        running: 0,
        sites_desired: Vec::new(),
        sites_running: Vec::new(),
        staged: Vec::new(),
        waiting: Vec::new(),
        rolled_back: Vec::new(),
        held_back: Vec::new(),
    })
}

/// `/api/releases`: every release in the manifests (and any other a box
/// reports running), newest first, with its adoption: sites that should
/// run it, run it, have it staged, wait for their window or update lock,
/// and rolled it back (with the health check's output).
pub fn releases(fleet: &Fleet, views: &[SiteView]) -> Releases {
    let manifests = fleet.manifests();
    let mut rows: BTreeMap<String, ReleaseAdoption> = BTreeMap::new();
    if let Some(m) = &manifests {
        for (v, doc) in &m.manifests.releases {
            let r = &doc.value;
            let entry = adoption(&mut rows, &v.to_string());
            entry.in_manifests = true;
            entry.manifest = Some(ReleaseManifest {
                file: doc.file.to_string(),
                changelog: r.changelog.clone(),
                urgent: r.urgent,
                package: PackageRef {
                    sha256: r.package.sha256,
                    size: r.package.size,
                },
                health_check: r.health_check.clone(),
            });
        }
    }
    for v in views {
        let site = v.id.to_string();
        if let Some(d) = &v.desired.release {
            adoption(&mut rows, d).sites_desired.push(site.clone());
        }
        let Some(sw) = &v.software else {
            if let Some(r) = &v.applied.release {
                adoption(&mut rows, r).sites_running.push(site);
            }
            continue;
        };
        if let Some(cur) = &sw.current {
            adoption(&mut rows, cur).sites_running.push(site.clone());
        }
        for i in &sw.installed {
            if Some(i) != sw.current.as_ref() {
                adoption(&mut rows, i).staged.push(site.clone());
            }
        }
        if let (Some(w), Some(d)) = (&sw.waiting, &sw.desired) {
            adoption(&mut rows, &d.to_string())
                .waiting
                .push(WaitingSite {
                    site: site.clone(),
                    reason: w.clone(),
                });
        }
        if let Some(rb) = &sw.last_rollback {
            adoption(&mut rows, &rb.from)
                .rolled_back
                .push(RolledBackSite::of(&site, rb));
        }
        if let Some(h) = &sw.held_back {
            adoption(&mut rows, h).held_back.push(site.clone());
        }
    }
    let latest = manifests
        .as_ref()
        .and_then(|m| m.manifests.releases.keys().max().map(ToString::to_string));
    let mut list: Vec<ReleaseAdoption> = rows
        .into_values()
        .map(|mut r| {
            r.desired = r.sites_desired.len();
            r.running = r.sites_running.len();
            r
        })
        .collect();
    newest_first(&mut list, |r| &r.version);
    let agents = agent_adoption(manifests.as_deref(), views);
    Releases {
        latest,
        releases: list,
        agents,
    }
}

/// `/api/stats`, in the shape of NEOPRO's monitoring API, plus the version
/// distribution and the late and stale counts. Each site is judged against
/// its own alert thresholds (built-in: temperature > 75 °C warning, > 80 °C
/// critical; disk > 90 % warning, > 95 % critical; memory > 90 % warning;
/// then the fleet's and its groups' `alerts:`); a degraded or stale site is
/// critical. A silent site's last metrics count in no average.
pub fn stats(views: &[SiteView]) -> Stats {
    let mut warnings = 0;
    let mut critical = 0;
    let mut alerts = 0;
    let (mut temp, mut cpu, mut mem, mut disk) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let mut versions: BTreeMap<String, usize> = BTreeMap::new();
    for v in views {
        if let Some(ver) = &v.version {
            *versions.entry(ver.clone()).or_default() += 1;
        }
        if !v.current {
            // Overdue: late, not yet an alert; its metrics are old.
            alerts += usize::from(v.status != Health::Overdue);
            continue;
        }
        let e = &v.thresholds;
        let m = v.metrics.clone().unwrap_or_default();
        let d = disk_percent(&m);
        let crit = [
            m.temperature_c.is_some_and(|t| t > e.temperature_critical),
            d.is_some_and(|d| d > e.disk_critical_percent),
            matches!(v.status, Health::Degraded | Health::Stale),
        ];
        let warn = [
            m.temperature_c
                .is_some_and(|t| t > e.temperature_warning && t <= e.temperature_critical),
            d.is_some_and(|d| d > e.disk_warning_percent && d <= e.disk_critical_percent),
            m.memory_percent
                .is_some_and(|x| x > e.memory_warning_percent),
        ];
        let nc = crit.iter().filter(|x| **x).count();
        let nw = warn.iter().filter(|x| **x).count();
        alerts += nc + nw;
        if nc > 0 {
            critical += 1;
        } else if nw > 0 {
            warnings += 1;
        }
        temp.extend(m.temperature_c);
        cpu.extend(m.cpu_percent);
        mem.extend(m.memory_percent);
        disk.extend(d);
    }
    let avg = |v: &[f64]| -> Option<f64> {
        (!v.is_empty()).then(|| (v.iter().sum::<f64>() / v.len() as f64 * 10.0).round() / 10.0)
    };
    let count = |h: Health| views.iter().filter(|v| v.status == h).count();
    Stats {
        total_sites: views.len(),
        active_sites: count(Health::Online) + count(Health::Degraded) + count(Health::Overdue),
        online_sites: count(Health::Online),
        degraded_sites: count(Health::Degraded),
        overdue_sites: count(Health::Overdue),
        stale_sites: count(Health::Stale),
        warnings_sites: warnings,
        critical_sites: critical,
        offline_sites: count(Health::Offline) + count(Health::Stale),
        total_alerts: alerts,
        average_metrics: AverageMetrics {
            temperature: avg(&temp),
            cpu: avg(&cpu),
            memory: avg(&mem),
            disk: avg(&disk),
        },
        versions,
    }
}

/// `/api/stats` (the field names of NEOPRO's monitoring API).
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Stats {
    /// Every site.
    pub total_sites: usize,
    /// Online, degraded or overdue (heard from within `offline_after`).
    pub active_sites: usize,
    /// Online.
    pub online_sites: usize,
    /// Degraded.
    pub degraded_sites: usize,
    /// Late by more than two poll intervals.
    pub overdue_sites: usize,
    /// Offline with an expired bundle, or saying their bundle expired
    /// (the silent ones are also in `offline_sites`).
    pub stale_sites: usize,
    /// With a warning (and no critical) threshold crossed.
    pub warnings_sites: usize,
    /// With a critical threshold crossed.
    pub critical_sites: usize,
    /// Offline (stale silent sites included).
    pub offline_sites: usize,
    /// Thresholds crossed, offline and stale sites included.
    pub total_alerts: usize,
    /// Means over the reporting sites.
    pub average_metrics: AverageMetrics,
    /// Sites per running release.
    pub versions: BTreeMap<String, usize>,
}

/// Means of the latest metrics, one decimal (`null` without data).
#[derive(Debug, Clone, Serialize)]
pub struct AverageMetrics {
    /// °C.
    pub temperature: Option<f64>,
    /// %.
    pub cpu: Option<f64>,
    /// %.
    pub memory: Option<f64>,
    /// % of the videos filesystem.
    pub disk: Option<f64>,
}

/// A commit as `/api/commits` and the overview show it: the stored record
/// and, for an accepted commit, how many of the sites it changed have
/// applied it and why the others have not.
#[derive(Debug, Clone, Serialize)]
pub struct CommitView {
    /// The stored record (`id`, `serial`, `summary`, `state`,
    /// `processed_at`…).
    #[serde(flatten)]
    pub record: CommitRecord,
    /// Sites it changed that run its serial or a later one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub converged: Option<usize>,
    /// Sites it changed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub total: Option<usize>,
    /// Sites it changed that have not applied it, and why.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pending: Option<Vec<PendingSite>>,
}

/// A site that has not applied a commit yet.
#[derive(Debug, Clone, Serialize)]
pub struct PendingSite {
    /// The site.
    pub site: SiteId,
    /// The serial it runs.
    pub applied_serial: Option<u64>,
    /// `waiting`, `in_progress`, `rolled_back`, `failed`, `unreachable`,
    /// `not_opened` (its rollout wave).
    pub state: &'static str,
    /// What it waits for, its last error, its phase, or `never reported`.
    pub reason: String,
}

/// The last failed sync of the manifests repository.
#[derive(Debug, Clone, Serialize)]
pub struct SyncError {
    /// When.
    pub at: Timestamp,
    /// Why.
    pub error: String,
}

/// `/api/commits`.
#[derive(Debug, Clone, Serialize)]
pub struct Commits {
    /// Most recent first.
    pub commits: Vec<CommitView>,
    /// The last commit that was accepted.
    pub last_good: Option<String>,
    /// The last failed sync, while it is the latest outcome.
    pub last_sync_error: Option<SyncError>,
}

/// `/api/commits`: recent commits, accepted or refused (and why), with how
/// many of the sites each commit changed have applied it.
pub fn commits(fleet: &Fleet, limit: usize) -> Result<Commits, StoreError> {
    let records = fleet.store.commits(limit)?;
    let latest = latest_by_site(fleet)?;
    let bundles = fleet.bundles();
    let heads = fleet.bundle_heads();
    let now = Timestamp::now();
    let commits = records
        .into_iter()
        .map(|record| {
            if record.state != CommitState::Accepted {
                return CommitView {
                    record,
                    converged: None,
                    total: None,
                    pending: None,
                };
            }
            let mut converged = 0;
            let mut pending = Vec::new();
            let rollout = fleet.rollout().filter(|r| {
                r.superseded_by.is_none() && (r.latest_commit == record.id || r.commit == record.id)
            });
            for site in &record.sites_changed {
                let st = latest.get(site);
                let applied = st.and_then(|s| s.report.status.applied_serial);
                // Against the site's bundle of this commit (a later
                // commit's bundle: its serial is enough): the files in
                // place and the releases switched.
                let outcome = match (bundles.get(site), &rollout) {
                    (_, Some(r)) if r.holds_back(site) => {
                        let wave = r
                            .wave_of(site)
                            .map(|(i, _)| r.waves[i].name.clone())
                            .unwrap_or_default();
                        crate::rollout::Outcome::Waiting(crate::rollout::wave_not_opened(&wave))
                    }
                    (Some(p), _) if p.commit.as_deref() == Some(record.id.as_str()) => {
                        match heads.get(site) {
                            Some(b) => {
                                crate::rollout::bundle_outcome(b, st, fleet.reachable(site, now))
                            }
                            None => crate::rollout::Outcome::InProgress("no bundle".into()),
                        }
                    }
                    _ if applied.is_some_and(|a| a >= record.serial) => {
                        crate::rollout::Outcome::Applied
                    }
                    _ => crate::rollout::Outcome::InProgress(st.map_or_else(
                        || crate::rollout::NEVER_REPORTED.to_owned(),
                        crate::rollout::report_reason,
                    )),
                };
                if outcome == crate::rollout::Outcome::Applied {
                    converged += 1;
                } else {
                    let state = outcome.key();
                    let reason = outcome.reason().map_or_else(
                        || match st {
                            None => crate::rollout::NEVER_REPORTED.to_owned(),
                            Some(_) => crate::rollout::OFFLINE.to_owned(),
                        },
                        str::to_owned,
                    );
                    pending.push(PendingSite {
                        site: site.clone(),
                        applied_serial: applied,
                        state,
                        reason,
                    });
                }
            }
            CommitView {
                total: Some(record.sites_changed.len()),
                converged: Some(converged),
                pending: Some(pending),
                record,
            }
        })
        .collect();
    Ok(Commits {
        commits,
        last_good: fleet.store.last_good_commit()?,
        last_sync_error: fleet
            .last_sync_error()
            .map(|(at, error)| SyncError { at, error }),
    })
}

/// An export format of the metrics history.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Export {
    /// Comma-separated values with a header line.
    Csv,
    /// One JSON object per point, with its `site`.
    Jsonl,
}

impl Export {
    /// `csv` or `jsonl`.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "csv" => Some(Self::Csv),
            "jsonl" => Some(Self::Jsonl),
            _ => None,
        }
    }

    /// The `Content-Type`.
    pub fn content_type(self) -> &'static str {
        match self {
            Self::Csv => "text/csv; charset=utf-8",
            Self::Jsonl => "application/jsonl; charset=utf-8",
        }
    }

    /// The file extension.
    pub fn extension(self) -> &'static str {
        match self {
            Self::Csv => "csv",
            Self::Jsonl => "jsonl",
        }
    }

    /// The headers of a download of `<stem>.<extension>`.
    pub fn headers(self, stem: &str) -> [(axum::http::HeaderName, String); 2] {
        [
            (
                axum::http::header::CONTENT_TYPE,
                self.content_type().to_owned(),
            ),
            (
                axum::http::header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"{stem}.{}\"", self.extension()),
            ),
        ]
    }

    /// One site's points in this format.
    pub fn render(self, site: &SiteId, points: &[HistoryPoint]) -> String {
        match self {
            Self::Csv => history_csv(points),
            Self::Jsonl => history_jsonl(site, points),
        }
    }
}

const CSV_COLUMNS: &str = "at,cpu_percent,memory_percent,temperature_c,temperature_max_c,load1,disk_used_bytes,disk_total_bytes,uptime_secs,samples";

/// Metrics history as JSON Lines: one object per point, with the site, so
/// that exports of several sites can be concatenated.
pub fn history_jsonl(site: &SiteId, points: &[HistoryPoint]) -> String {
    let mut out = String::new();
    for p in points {
        let mut v = serde_json::to_value(p).unwrap_or(Value::Null);
        v["site"] = json!(site);
        out.push_str(&v.to_string());
        out.push('\n');
    }
    out
}

/// Metrics history as CSV (one line per point; `samples` > 1 for a
/// downsampled point).
pub fn history_csv(points: &[HistoryPoint]) -> String {
    let mut out = format!("{CSV_COLUMNS}\n");
    csv_rows(&mut out, None, points);
    out
}

/// CSV lines of `points`, each starting with `site,` when given.
fn csv_rows(out: &mut String, site: Option<&SiteId>, points: &[HistoryPoint]) {
    let f = |v: Option<f32>| v.map(|x| x.to_string()).unwrap_or_default();
    let u = |v: Option<u64>| v.map(|x| x.to_string()).unwrap_or_default();
    for p in points {
        if let Some(site) = site {
            out.push_str(site.as_str());
            out.push(',');
        }
        let _ = writeln!(
            out,
            "{},{},{},{},{},{},{},{},{},{}",
            p.at,
            f(p.cpu_percent),
            f(p.memory_percent),
            f(p.temperature_c),
            f(p.temperature_max_c),
            f(p.load1),
            u(p.disk_used_bytes),
            u(p.disk_total_bytes),
            u(p.uptime_secs),
            p.samples
        );
    }
}

/// The fleet's metrics history in `[from, to)` as a streamed body: a
/// blocking task reads one site at a time (in site order) and hands its
/// rows to the response, so a year of the whole fleet never sits in memory
/// and a slow client only holds one site's rows. CSV has a `site` column
/// first. A store error mid-way aborts the body (the client sees a
/// truncated transfer, not a short file that looks complete).
pub fn fleet_history_body(
    store: std::sync::Arc<dyn crate::store::Store>,
    sites: Vec<SiteId>,
    from: Timestamp,
    to: Timestamp,
    format: Export,
) -> axum::body::Body {
    type Chunk = Result<axum::body::Bytes, std::io::Error>;
    let (tx, rx) = tokio::sync::mpsc::channel::<Chunk>(2);
    tokio::task::spawn_blocking(move || {
        if format == Export::Csv
            && tx
                .blocking_send(Ok(format!("site,{CSV_COLUMNS}\n").into()))
                .is_err()
        {
            return;
        }
        for site in sites {
            let chunk = match store.history(&site, from, to) {
                Ok(points) if points.is_empty() => continue,
                Ok(points) => match format {
                    Export::Csv => {
                        let mut out = String::with_capacity(points.len() * 80);
                        csv_rows(&mut out, Some(&site), &points);
                        Ok(out.into())
                    }
                    Export::Jsonl => Ok(history_jsonl(&site, &points).into()),
                },
                Err(e) => Err(std::io::Error::other(format!(
                    "reading the history of {site}: {e}"
                ))),
            };
            let failed = chunk.is_err();
            if tx.blocking_send(chunk).is_err() || failed {
                return;
            }
        }
    });
    axum::body::Body::from_stream(futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|chunk| (chunk, rx))
    }))
}

/// The answer of `POST /api/sync`.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "result", rename_all = "lowercase")]
pub enum SyncAnswer {
    /// The tip was seen before.
    Unchanged,
    /// New bundles were published.
    Published {
        /// The commit.
        commit: String,
        /// The sites whose bundle changed.
        sites_changed: Vec<SiteId>,
    },
    /// The tip was refused.
    Refused {
        /// The commit.
        commit: String,
        /// Why.
        reason: String,
    },
}

impl From<SyncOutcome> for SyncAnswer {
    fn from(o: SyncOutcome) -> Self {
        match o {
            SyncOutcome::Unchanged => Self::Unchanged,
            SyncOutcome::Published { commit, changed } => Self::Published {
                commit,
                sites_changed: changed,
            },
            SyncOutcome::Refused { commit, reason } => Self::Refused { commit, reason },
        }
    }
}
