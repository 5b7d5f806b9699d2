//! Rollouts in waves: a commit that gives sites a new software or agent
//! release, under a `rollout:` policy (`fleet.yaml`, or the release's own),
//! starts a rollout. Its sites are split into the policy's waves; the
//! first wave opens at once, and a site in a wave not yet opened keeps the
//! release its bundle had (its files and configuration go out at once,
//! unless the fleet's policy says `content: waves`: then any change of a
//! site's bundle starts or joins a rollout, and a site held back keeps its
//! whole previous bundle). A
//! wave passes when the success share of its **reachable** boxes runs the
//! release; after the bake time the next wave opens. Boxes that roll the
//! release back or fail to apply it halt the rollout; an operator resumes
//! it (audited), or the next commit decides.
//!
//! This module is pure: the rollout's state, how sites are split, what a
//! box's latest report says about its target, and one step of the state
//! machine. `Fleet` persists the state (one record in the store, so it
//! survives restarts) and derives the bundles from it: the state is
//! derived from the manifests and the reports, never desired state of its
//! own.

use std::collections::{BTreeMap, BTreeSet};

use jiff::{SignedDuration, Timestamp};
use serde::{Deserialize, Serialize};
use touchline_schemas::bundle::{DesiredAgent, DesiredRelease};
use touchline_schemas::report::Severity;
use touchline_schemas::rollout::{RolloutPolicy, Wave};
use touchline_schemas::{Sha256, SiteId};

use crate::store::SiteState;
use crate::validate::Checked;

/// The releases a rollout moves a site to (or a site's bundle held before).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Target {
    /// The software release.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub software: Option<DesiredRelease>,
    /// The agent release.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent: Option<DesiredAgent>,
    /// With content in waves: the serial of the commit whose files and
    /// configuration the site must have in place (a box that runs the
    /// releases but has not applied a bundle of this serial yet is on its
    /// way).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub serial: Option<u64>,
}

impl Target {
    /// The versions, which decide whether two targets differ (a release
    /// whose URLs changed is the same release).
    pub fn versions(&self) -> (Option<String>, Option<String>) {
        (
            self.software.as_ref().map(|s| s.version.to_string()),
            self.agent.as_ref().map(|a| a.version.to_string()),
        )
    }

    /// `release 2.0.0 · agent 1.3.0` (`· serial 7` with content in
    /// waves).
    pub fn describe(&self) -> String {
        let (sw, agent) = self.versions();
        let mut parts = Vec::new();
        if let Some(v) = sw {
            parts.push(format!("release {v}"));
        }
        if let Some(v) = agent {
            parts.push(format!("agent {v}"));
        }
        if let Some(n) = self.serial {
            parts.push(format!("serial {n}"));
        }
        if parts.is_empty() {
            "no release".into()
        } else {
            parts.join(" · ")
        }
    }
}

/// One wave of a rollout.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WaveState {
    /// Its name in the policy (`rest` for the sites no wave selected).
    pub name: String,
    /// Its sites and the index of each one's target in
    /// [`Rollout::targets`].
    pub sites: BTreeMap<SiteId, usize>,
    /// When it opened.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub opened_at: Option<Timestamp>,
    /// When it reached its success share.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub passed_at: Option<Timestamp>,
}

/// Why a rollout halted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Halt {
    /// When.
    pub at: Timestamp,
    /// In words.
    pub reason: String,
    /// The boxes behind it, with what they said.
    pub sites: Vec<Trouble>,
}

/// A box that rolled the release back or failed to apply it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Trouble {
    /// The site.
    pub site: SiteId,
    /// `rolled_back` or `failed`.
    pub kind: String,
    /// The health check's output or the error.
    pub output: String,
}

/// An operator's resume of a halted rollout.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Resume {
    /// When.
    pub at: Timestamp,
    /// Who.
    pub by: String,
    /// The halt it ended.
    pub halt: String,
}

/// A rollout and where it stands.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Rollout {
    /// The commit that started it.
    pub commit: String,
    /// Its serial.
    pub serial: u64,
    /// The latest commit it goes on with (a later commit that changes
    /// videos or configuration, not the releases, keeps the rollout).
    pub latest_commit: String,
    /// Its serial.
    pub latest_serial: u64,
    /// When it started.
    pub started_at: Timestamp,
    /// The policy.
    pub policy: RolloutPolicy,
    /// The file the policy comes from.
    pub policy_file: String,
    /// The targets its sites move to.
    pub targets: Vec<Target>,
    /// Its waves, in order (empty ones left out).
    pub waves: Vec<WaveState>,
    /// Set while halted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub halted: Option<Halt>,
    /// Sites whose trouble an operator accepted by resuming: they do not
    /// halt the rollout again.
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    pub acknowledged: BTreeSet<SiteId>,
    /// Every resume.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub resumes: Vec<Resume>,
    /// When its last wave passed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<Timestamp>,
    /// The commit that replaced it with a rollout of other releases.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub superseded_by: Option<String>,
    /// Its policy sends every change of a bundle through the waves (not
    /// only releases): a site held back keeps its whole previous bundle.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub content_waves: bool,
}

/// What a box's latest report says about its target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// It runs all of it.
    Applied,
    /// Its wave is not open: its bundle holds the previous release.
    NotOpened,
    /// It rolled the release back (the health check's output).
    RolledBack(String),
    /// It failed to apply it (the error).
    Failed(String),
    /// It is staged and waits (the window, the update lock…).
    Waiting(String),
    /// Not heard from within the offline limit (or never).
    Unreachable,
    /// On its way (downloading, switching, not reported yet).
    InProgress(String),
}

impl Outcome {
    /// A short key: `applied`, `not_opened`, `rolled_back`, `failed`,
    /// `waiting`, `unreachable`, `in_progress`.
    pub fn key(&self) -> &'static str {
        match self {
            Outcome::Applied => "applied",
            Outcome::NotOpened => "not_opened",
            Outcome::RolledBack(_) => "rolled_back",
            Outcome::Failed(_) => "failed",
            Outcome::Waiting(_) => "waiting",
            Outcome::Unreachable => "unreachable",
            Outcome::InProgress(_) => "in_progress",
        }
    }

    /// The reason, if it has one.
    pub fn reason(&self) -> Option<&str> {
        match self {
            Outcome::RolledBack(s)
            | Outcome::Failed(s)
            | Outcome::Waiting(s)
            | Outcome::InProgress(s) => Some(s),
            _ => None,
        }
    }
}

/// Reason of a site that never reported.
pub const NEVER_REPORTED: &str = "never reported";
/// Reason of a reachable site that has not reported since its bundle.
pub const NO_REPORT_YET: &str = "no report yet";
/// Reason of a silent site with no word of its own.
pub const OFFLINE: &str = "offline";

/// Reason of a site its rollout holds back.
pub fn wave_not_opened(wave: &str) -> String {
    format!("its rollout wave `{wave}` has not opened")
}

/// A pending site's reason read back for a page in the reader's
/// language: the controller's own words (made here) as what they are, the
/// box's words as it said them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason<'a> {
    /// Never reported, or not since its bundle.
    NoReport,
    /// Silent.
    Offline,
    /// Held back: the wave has not opened.
    WaveNotOpened(&'a str),
    /// On its way, in this phase.
    Phase(&'a str),
    /// What the box said (its error or what it waits for).
    Box(&'a str),
}

impl<'a> Reason<'a> {
    /// Reads a reason made by this module or by [`report_reason`].
    pub fn read(r: &'a str) -> Self {
        if r == NEVER_REPORTED || r == NO_REPORT_YET {
            return Reason::NoReport;
        }
        if r == OFFLINE {
            return Reason::Offline;
        }
        if let Some(w) = r
            .strip_prefix("its rollout wave `")
            .and_then(|x| x.strip_suffix("` has not opened"))
        {
            return Reason::WaveNotOpened(w);
        }
        if let Some(p) = r.strip_prefix("phase ")
            && !p.is_empty()
            && p.bytes()
                .all(|b| b.is_ascii_lowercase() || b == b'_' || b == b'-')
        {
            return Reason::Phase(p);
        }
        Reason::Box(r)
    }
}

/// What a box's latest report says about `target`; `reachable`: heard from
/// within the offline limit.
pub fn outcome(target: &Target, state: Option<&SiteState>, reachable: bool) -> Outcome {
    outcome_with_files(target, target.serial, state, reachable)
}

/// [`outcome`], and applied only once the files of `serial` (when given)
/// are in place.
fn outcome_with_files(
    target: &Target,
    serial: Option<u64>,
    state: Option<&SiteState>,
    reachable: bool,
) -> Outcome {
    let Some(state) = state else {
        return if reachable {
            Outcome::InProgress(NO_REPORT_YET.into())
        } else {
            Outcome::Unreachable
        };
    };
    let st = &state.report.status;
    // What the box says of `item`, at `at_least` or worse.
    let said = |item: &str, at_least: Severity| {
        st.conditions
            .iter()
            .find(|c| c.item == item && c.severity >= at_least)
            .map(|c| c.message.clone())
    };
    let error_on = |item: &str| said(item, Severity::Error);
    // One entry per release not running yet: why it waits, if it says.
    let mut pending: Vec<Option<String>> = Vec::new();
    if let Some(want) = &target.software {
        let v = want.version.to_string();
        if st.release.as_ref().map(ToString::to_string) != Some(v.clone()) {
            let sw = st.software.as_ref();
            if let Some(rb) = sw
                .and_then(|s| s.last_rollback.as_ref())
                .filter(|rb| rb.from == v)
            {
                return Outcome::RolledBack(rb.output.clone());
            }
            if sw.and_then(|s| s.held_back.as_deref()) == Some(v.as_str()) {
                return Outcome::RolledBack(format!("release {v} is held back on the box"));
            }
            if let Some(e) = error_on("release") {
                return Outcome::Failed(e);
            }
            pending.push(
                sw.and_then(|s| s.waiting.clone())
                    .map(|w| format!("release {v}: {w}")),
            );
        }
    }
    if let Some(want) = &target.agent {
        let v = want.version.to_string();
        let ar = st.agent_release.as_ref();
        let running = ar
            .map(|a| a.running.clone())
            .or_else(|| st.agent_version.clone());
        if running.as_deref() != Some(v.as_str()) {
            if let Some(rb) = ar
                .and_then(|a| a.last_rollback.as_ref())
                .filter(|rb| rb.from == v)
            {
                return Outcome::RolledBack(rb.output.clone());
            }
            if let Some(h) = ar.and_then(|a| a.held_back.as_deref()).filter(|h| *h == v) {
                return Outcome::RolledBack(format!("agent release {h} is held back on the box"));
            }
            if let Some(e) = error_on("agent") {
                return Outcome::Failed(e);
            }
            pending.push(
                ar.and_then(|a| a.waiting.clone())
                    .map(|w| format!("agent {v}: {w}")),
            );
        }
    }
    let files = serial.is_none_or(|n| st.applied_serial.is_some_and(|s| s >= n));
    if pending.is_empty() && files {
        // The files are in place; the app runs them only if it reloaded.
        let reload = serial.and_then(|_| said("reload", Severity::Warning));
        return reload.map_or(Outcome::Applied, Outcome::Failed);
    }
    if !reachable {
        return Outcome::Unreachable;
    }
    if pending.is_empty() {
        // The releases run; the files of its serial are not in place yet.
        // A box that has that serial and cannot write it (its own error,
        // not the line's: a fetch error is retried) failed to apply it, as
        // a release fails; an error from before it saw the serial is not
        // about this change.
        let trying = serial.is_some_and(|n| st.desired_serial.is_some_and(|d| d >= n));
        if trying && let Some(e) = error_on("apply").or_else(|| error_on("disk")) {
            return Outcome::Failed(e);
        }
        return Outcome::InProgress(report_reason(state));
    }
    let waits: Vec<String> = pending.into_iter().flatten().collect();
    if waits.is_empty() {
        Outcome::InProgress(
            error_on("apply")
                .or_else(|| error_on("fetch"))
                .unwrap_or_else(|| crate::store::phase_name(st.phase)),
        )
    } else {
        Outcome::Waiting(waits.join("; "))
    }
}

/// What a published bundle asks of its box, as progress counts it: its
/// serial and its releases. Read from the body once, when it is published
/// ([`BundleHead::of`]), not at each count.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BundleHead {
    /// Its serial.
    pub serial: u64,
    /// The releases it asks for.
    pub target: Target,
}

impl BundleHead {
    /// Reads the head of a bundle's body (the rest is skipped, not built).
    pub fn of(body: &[u8]) -> Option<Self> {
        #[derive(Deserialize)]
        struct Head {
            serial: u64,
            #[serde(default)]
            software: Option<DesiredRelease>,
            #[serde(default)]
            agent_release: Option<DesiredAgent>,
        }
        let h: Head = serde_json::from_slice(body).ok()?;
        Some(BundleHead {
            serial: h.serial,
            target: Target {
                software: h.software,
                agent: h.agent_release,
                serial: None,
            },
        })
    }
}

/// What a box's latest report says about its bundle `b`: applied only
/// when the files of its serial are in place and its releases run.
pub fn bundle_outcome(b: &BundleHead, state: Option<&SiteState>, reachable: bool) -> Outcome {
    outcome_with_files(&b.target, Some(b.serial), state, reachable)
}

/// What a box on its way says: its last error, else its phase.
pub fn report_reason(s: &SiteState) -> String {
    s.report
        .status
        .last_error
        .clone()
        .unwrap_or_else(|| format!("phase {}", crate::store::phase_name(s.report.status.phase)))
}

/// A site that changes release with a commit.
#[derive(Debug, Clone)]
pub struct Changing {
    /// The site.
    pub site: SiteId,
    /// What its new bundle asks for.
    pub target: Target,
}

/// The index of `target` in `targets`, added at the end when not there
/// (sites with equal targets share one).
fn index_of(targets: &mut Vec<Target>, target: &Target) -> usize {
    targets.iter().position(|t| t == target).unwrap_or_else(|| {
        targets.push(target.clone());
        targets.len() - 1
    })
}

/// Splits `changing` into the policy's waves. Within a wave's selection,
/// sites are taken in the order of the sha256 of their id (stable from one
/// commit to the next, and not by name), up to its `max`; sites no wave
/// selects go into a last wave `rest`. Empty waves are left out.
pub fn assign(
    policy: &RolloutPolicy,
    changing: &[Changing],
    selects: impl Fn(&Wave, &SiteId) -> bool,
) -> (Vec<Target>, Vec<WaveState>) {
    let mut targets: Vec<Target> = Vec::new();
    let mut index: Vec<(SiteId, usize)> = Vec::with_capacity(changing.len());
    for c in changing {
        index.push((c.site.clone(), index_of(&mut targets, &c.target)));
    }
    index.sort_by_cached_key(|(s, _)| Sha256::digest(s.as_str().as_bytes()).to_hex());
    let mut left: Vec<Option<(SiteId, usize)>> = index.into_iter().map(Some).collect();
    let mut waves = Vec::new();
    for w in &policy.waves {
        let candidates: Vec<usize> = left
            .iter()
            .enumerate()
            .filter_map(|(i, s)| s.as_ref().filter(|(id, _)| selects(w, id)).map(|_| i))
            .collect();
        let take = w
            .max
            .map_or(candidates.len(), |m| m.of(candidates.len()))
            .min(candidates.len());
        let sites: BTreeMap<SiteId, usize> = candidates[..take]
            .iter()
            .filter_map(|&i| left[i].take())
            .collect();
        waves.push(WaveState {
            name: w.name.clone(),
            sites,
            opened_at: None,
            passed_at: None,
        });
    }
    let rest: BTreeMap<SiteId, usize> = left.into_iter().flatten().collect();
    waves.push(WaveState {
        name: "rest".into(),
        sites: rest,
        opened_at: None,
        passed_at: None,
    });
    waves.retain(|w| !w.sites.is_empty());
    (targets, waves)
}

impl Rollout {
    /// Whether it still moves (not finished, superseded or halted).
    pub fn active(&self) -> bool {
        self.finished_at.is_none() && self.superseded_by.is_none()
    }

    /// The wave a site is in, and its target.
    pub fn wave_of(&self, site: &SiteId) -> Option<(usize, &Target)> {
        self.waves.iter().enumerate().find_map(|(i, w)| {
            w.sites
                .get(site)
                .and_then(|t| self.targets.get(*t))
                .map(|t| (i, t))
        })
    }

    /// Whether a site's bundle holds its previous release: its wave has
    /// not opened, in a rollout that still moves or halted.
    pub fn holds_back(&self, site: &SiteId) -> bool {
        self.superseded_by.is_none()
            && self
                .wave_of(site)
                .is_some_and(|(i, _)| self.waves[i].opened_at.is_none())
    }

    /// The last opened wave.
    pub fn current_wave(&self) -> Option<usize> {
        self.waves.iter().rposition(|w| w.opened_at.is_some())
    }

    /// Moves `site` to `target` (shared with the sites that have the same
    /// one), leaving the others' targets as they are.
    pub fn retarget(&mut self, site: &SiteId, target: &Target) {
        let i = index_of(&mut self.targets, target);
        for w in &mut self.waves {
            if let Some(t) = w.sites.get_mut(site) {
                *t = i;
            }
        }
    }

    /// Drops the targets no site names any more (after [`Rollout::retarget`]).
    pub fn drop_unused_targets(&mut self) {
        let used: Vec<usize> = self
            .waves
            .iter()
            .flat_map(|w| w.sites.values().copied())
            .collect::<BTreeSet<usize>>()
            .into_iter()
            .collect();
        if used.len() == self.targets.len() {
            return;
        }
        self.targets = used
            .iter()
            .filter_map(|&k| self.targets.get(k).cloned())
            .collect();
        for w in &mut self.waves {
            for t in w.sites.values_mut() {
                *t = used.binary_search(t).unwrap_or(0);
            }
        }
    }

    /// Every site in it.
    pub fn site_count(&self) -> usize {
        self.waves.iter().map(|w| w.sites.len()).sum()
    }
}

/// What one step of [`advance`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Wave `i` reached its success share.
    Passed(usize),
    /// Wave `i` opened: its sites need their bundles with the release.
    Opened(usize),
    /// The rollout halted.
    Halted,
    /// The last wave passed.
    Finished,
}

/// Counts of a wave's outcomes.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Tally {
    /// Sites in it.
    pub sites: usize,
    /// Running the target.
    pub applied: usize,
    /// Staged, waiting for the window or the lock.
    pub waiting: usize,
    /// On their way.
    pub in_progress: usize,
    /// Rolled it back.
    pub rolled_back: usize,
    /// Failed to apply it.
    pub failed: usize,
    /// Not heard from.
    pub unreachable: usize,
    /// Its wave has not opened.
    pub not_opened: usize,
}

impl Tally {
    /// Adds one outcome.
    pub fn add(&mut self, o: &Outcome) {
        self.sites += 1;
        match o {
            Outcome::Applied => self.applied += 1,
            Outcome::NotOpened => self.not_opened += 1,
            Outcome::RolledBack(_) => self.rolled_back += 1,
            Outcome::Failed(_) => self.failed += 1,
            Outcome::Waiting(_) => self.waiting += 1,
            Outcome::Unreachable => self.unreachable += 1,
            Outcome::InProgress(_) => self.in_progress += 1,
        }
    }

    /// Boxes heard from.
    pub fn reachable(&self) -> usize {
        self.sites - self.unreachable - self.not_opened
    }

    /// `N/M applied`, then each count that is not zero in words; the
    /// words for waiting and unreachable boxes are the caller's.
    pub fn parts(&self, waiting: &str, unreachable: &str) -> Vec<String> {
        let mut parts = vec![format!("{}/{} applied", self.applied, self.sites)];
        for (n, what) in [
            (self.waiting, waiting),
            (self.in_progress, "in progress"),
            (self.not_opened, "in waves not opened"),
            (self.rolled_back, "rolled back"),
            (self.failed, "failed"),
            (self.unreachable, unreachable),
        ] {
            if n > 0 {
                parts.push(format!("{n} {what}"));
            }
        }
        parts
    }
}

/// Each site's outcome in the rollout, by wave.
pub fn outcomes(
    r: &Rollout,
    state: &dyn Fn(&SiteId) -> Option<SiteState>,
    reachable: &dyn Fn(&SiteId) -> bool,
) -> Vec<Vec<(SiteId, Outcome)>> {
    r.waves
        .iter()
        .map(|w| {
            w.sites
                .iter()
                .map(|(site, t)| {
                    let o = if w.opened_at.is_none() {
                        Outcome::NotOpened
                    } else {
                        let target = r.targets.get(*t).cloned().unwrap_or_default();
                        outcome(&target, state(site).as_ref(), reachable(site))
                    };
                    (site.clone(), o)
                })
                .collect()
        })
        .collect()
}

/// One step of the state machine: halts on trouble, passes the current
/// wave, opens the next one after the bake time, finishes. Returns what
/// changed, in order (empty: nothing).
pub fn advance(r: &mut Rollout, outcomes: &[Vec<(SiteId, Outcome)>], now: Timestamp) -> Vec<Step> {
    let mut steps = Vec::new();
    if !r.active() || r.halted.is_some() {
        return steps;
    }
    // Trouble over every opened wave, less what a resume accepted.
    let opened: Vec<&(SiteId, Outcome)> = r
        .waves
        .iter()
        .zip(outcomes)
        .filter(|(w, _)| w.opened_at.is_some())
        .flat_map(|(_, o)| o.iter())
        .collect();
    let troubles: Vec<Trouble> = opened
        .iter()
        .filter(|(s, _)| !r.acknowledged.contains(s))
        .filter_map(|(s, o)| match o {
            Outcome::RolledBack(out) => Some(("rolled_back", s, out)),
            Outcome::Failed(out) => Some(("failed", s, out)),
            _ => None,
        })
        .map(|(kind, site, output)| Trouble {
            site: site.clone(),
            kind: kind.into(),
            output: output.chars().take(2048).collect(),
        })
        .collect();
    let rolled_back = troubles.iter().filter(|t| t.kind == "rolled_back").count();
    let failed = troubles.len() - rolled_back;
    let rb_limit = r.policy.halt_rolled_back().of(opened.len()).max(1);
    let failed_limit = r.policy.halt_failed().of(opened.len()).max(1);
    let mut why = Vec::new();
    if rolled_back >= rb_limit {
        why.push(format!(
            "{rolled_back} of {} boxes in opened waves rolled the release back (limit {})",
            opened.len(),
            r.policy.halt_rolled_back()
        ));
    }
    if failed >= failed_limit {
        why.push(format!(
            "{failed} of {} boxes in opened waves failed to apply it (limit {})",
            opened.len(),
            r.policy.halt_failed()
        ));
    }
    if !why.is_empty() {
        r.halted = Some(Halt {
            at: now,
            reason: why.join("; "),
            sites: troubles,
        });
        steps.push(Step::Halted);
        return steps;
    }
    let Some(k) = r.current_wave() else {
        return steps;
    };
    if r.waves[k].passed_at.is_none() {
        let mut t = Tally::default();
        // What a resume accepted counts neither way.
        for (_, o) in outcomes[k]
            .iter()
            .filter(|(s, _)| !r.acknowledged.contains(s))
        {
            t.add(o);
        }
        let need = r.policy.success().of(t.reachable()).max(1);
        if t.reachable() > 0 && t.applied >= need {
            r.waves[k].passed_at = Some(now);
            steps.push(Step::Passed(k));
        }
    }
    let Some(passed) = r.waves[k].passed_at else {
        return steps;
    };
    if k + 1 == r.waves.len() {
        r.finished_at = Some(now);
        steps.push(Step::Finished);
        return steps;
    }
    let bake = SignedDuration::from_secs(i64::try_from(r.policy.bake().as_secs()).unwrap_or(0));
    if passed.saturating_add(bake).unwrap_or(passed) <= now {
        r.waves[k + 1].opened_at = Some(now);
        steps.push(Step::Opened(k + 1));
    }
    steps
}

/// When the current wave's bake ends, if it passed and a wave is left.
pub fn next_opening(r: &Rollout) -> Option<Timestamp> {
    if !r.active() || r.halted.is_some() {
        return None;
    }
    let k = r.current_wave()?;
    let passed = r.waves[k].passed_at?;
    (k + 1 < r.waves.len()).then(|| {
        let bake = SignedDuration::from_secs(i64::try_from(r.policy.bake().as_secs()).unwrap_or(0));
        passed.saturating_add(bake).unwrap_or(passed)
    })
}

/// One line: `wave 2/3 bretagne · 12/15 applied · 2 waiting · 1 unreachable`.
pub fn summary(r: &Rollout, outcomes: &[Vec<(SiteId, Outcome)>]) -> String {
    let mut all = Tally::default();
    for w in outcomes {
        for (_, o) in w {
            all.add(o);
        }
    }
    let state = if r.superseded_by.is_some() {
        "superseded".to_owned()
    } else if r.finished_at.is_some() {
        "complete".to_owned()
    } else if r.halted.is_some() {
        "halted".to_owned()
    } else {
        match r.current_wave() {
            Some(k) => format!("wave {}/{} {}", k + 1, r.waves.len(), r.waves[k].name),
            None => "not started".to_owned(),
        }
    };
    let mut parts = vec![state];
    parts.extend(all.parts("waiting", "unreachable"));
    parts.join(" · ")
}

/// The policy for a commit: the first release (software, then agent, in
/// version order) among the changing sites' targets that has its own, else
/// the fleet's.
pub fn policy_for(checked: &Checked, changing: &[Changing]) -> Option<(RolloutPolicy, String)> {
    let m = &checked.manifests;
    let mut software = std::collections::BTreeSet::new();
    let mut agents = std::collections::BTreeSet::new();
    for c in changing {
        if let Some(s) = &c.target.software {
            software.insert(s.version.clone());
        }
        if let Some(a) = &c.target.agent {
            agents.insert(a.version.clone());
        }
    }
    software
        .iter()
        .filter_map(|v| m.releases.get(v))
        .find_map(|d| d.value.rollout.clone().map(|p| (p, d.file.to_string())))
        .or_else(|| {
            agents
                .iter()
                .filter_map(|v| m.agent_releases.get(v))
                .find_map(|d| d.value.rollout.clone().map(|p| (p, d.file.to_string())))
        })
        .or_else(|| {
            m.fleet
                .as_ref()
                .and_then(|f| f.value.rollout.clone().map(|p| (p, f.file.to_string())))
        })
}

/// Whether a wave selects a site: its group and its labels, when set.
pub fn selects(checked: &Checked, wave: &Wave, site: &SiteId) -> bool {
    let in_group = wave.group.as_ref().is_none_or(|g| {
        checked
            .members
            .get(site)
            .is_some_and(|ms| ms.iter().any(|m| &m.group == g))
    });
    let labels = wave.match_labels.as_ref().is_none_or(|want| {
        checked
            .manifests
            .sites
            .get(site)
            .is_some_and(|d| want.iter().all(|(k, v)| d.value.labels.get(k) == Some(v)))
    });
    in_group && labels
}

#[cfg(test)]
mod tests;
