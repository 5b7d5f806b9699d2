//! The fleet's rollouts (see the `rollout` module for the state machine):
//! at each commit, which sites change release and whether that continues
//! the current rollout or starts a new one; the bundles derived from it (a
//! site in a wave not opened keeps its previous release); opening waves as
//! boxes report; an operator's resume. The state is one store record,
//! written before the bundles it implies, so a restart converges.

use std::collections::BTreeMap;
use std::sync::Arc;

use jiff::{SignedDuration, Timestamp};
use touchline_schemas::{Bundle, SiteId};

use super::{Fleet, SyncError};
use crate::bundles::{Signed, desired_digest};
use crate::rollout::{self, Changing, Outcome, Rollout, Step, Target};
use crate::store::{AuditEntry, Published, StoreError};
use crate::validate::Checked;

/// The current rollout and the one before it.
#[derive(Debug, Default, Clone)]
pub(super) struct Rollouts {
    pub(super) current: Option<Rollout>,
    pub(super) previous: Option<Rollout>,
}

/// Why a resume was refused.
#[derive(Debug, thiserror::Error)]
pub enum ResumeError {
    /// Nothing is halted.
    #[error("no rollout is halted")]
    NotHalted,
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Re-deriving bundles failed.
    #[error(transparent)]
    Sync(#[from] SyncError),
}

fn target_of(b: &Bundle) -> Target {
    Target {
        software: b.software.clone(),
        agent: b.agent_release.clone(),
    }
}

fn render_error(site: &SiteId, e: impl std::fmt::Display) -> SyncError {
    SyncError::Render(anyhow::anyhow!("bundle of `{site}` does not parse: {e}"))
}

impl Rollouts {
    pub(super) fn load(store: &dyn crate::store::Store) -> Result<Self, StoreError> {
        let [current, previous] = store.rollout_records()?;
        let decode = |(key, v): (&str, Option<String>)| -> Result<Option<Rollout>, StoreError> {
            v.map(|text| serde_json::from_str(&text).map_err(|e| crate::store::corrupt(key, &e)))
                .transpose()
        };
        Ok(Self {
            current: decode(current)?,
            previous: decode(previous)?,
        })
    }
}

impl Fleet {
    /// The current rollout (finished, superseded or moving), if any.
    pub fn rollout(&self) -> Option<Rollout> {
        self.rollouts.read().ok()?.current.clone()
    }

    /// The rollout before it.
    pub fn previous_rollout(&self) -> Option<Rollout> {
        self.rollouts.read().ok()?.previous.clone()
    }

    /// Whether the box was heard from within its offline limit (counted
    /// from the controller's start at the earliest).
    pub fn reachable(&self, site: &SiteId, now: Timestamp) -> bool {
        let (seen, limit) = self.contact(site);
        crate::liveness::reachable(seen, self.started_at, limit, now)
    }

    /// A site's last contact (report or poll) and its offline limit.
    fn contact(&self, site: &SiteId) -> (Option<Timestamp>, SignedDuration) {
        let limit = self
            .thresholds(self.manifests().as_deref(), site)
            .offline_after;
        let limit = SignedDuration::from_secs(i64::try_from(limit.as_secs()).unwrap_or(i64::MAX));
        let report = self
            .pulses
            .read()
            .ok()
            .and_then(|p| p.get(site).map(|p| p.received_at));
        (report.into_iter().chain(self.last_poll(site)).max(), limit)
    }

    /// When the next box of the current rollout wave (opened, not passed)
    /// stops counting as reachable if it stays silent: the wave may pass
    /// then, so the rollout looks again at that moment.
    pub fn next_unreachable(&self, now: Timestamp) -> Option<Timestamp> {
        let r = self.rollout()?;
        if !r.active() || r.halted.is_some() {
            return None;
        }
        let k = r.current_wave()?;
        if r.waves[k].passed_at.is_some() {
            return None;
        }
        r.waves[k]
            .sites
            .keys()
            .filter_map(|site| {
                let (seen, limit) = self.contact(site);
                let at = seen?.max(self.started_at).saturating_add(limit).ok()?;
                (at > now).then_some(at)
            })
            .min()
    }

    /// Each site's outcome in `r`, by wave, from the latest reports.
    pub fn rollout_outcomes(
        &self,
        r: &Rollout,
        now: Timestamp,
    ) -> Result<Vec<Vec<(SiteId, Outcome)>>, StoreError> {
        let mut states = BTreeMap::new();
        for w in r.waves.iter().filter(|w| w.opened_at.is_some()) {
            for site in w.sites.keys() {
                if let Some(s) = self.store.latest(site)? {
                    states.insert(site.clone(), s);
                }
            }
        }
        Ok(rollout::outcomes(r, &|s| states.get(s).cloned(), &|s| {
            self.reachable(s, now)
        }))
    }

    /// At a commit: decides the rollout from the sites whose release
    /// changes, and gives the sites it holds back their previous release
    /// in `rendered`. Returns the records to write before publishing
    /// (`None`: no rollout is involved).
    pub(super) fn derive_rollout(
        &self,
        checked: &Checked,
        rendered: &mut [Signed],
        current: &BTreeMap<SiteId, Arc<Published>>,
        commit: &str,
        serial: u64,
        now: Timestamp,
    ) -> Result<Option<Rollouts>, SyncError> {
        let before = self.rollouts.read().map(|r| r.clone()).unwrap_or_default();
        let fleet_policy = checked
            .manifests
            .fleet
            .as_ref()
            .is_some_and(|f| f.value.rollout.is_some());
        let any_policy = fleet_policy
            || checked
                .manifests
                .releases
                .values()
                .any(|d| d.value.rollout.is_some())
            || checked
                .manifests
                .agent_releases
                .values()
                .any(|d| d.value.rollout.is_some());
        let moving = before.current.as_ref().is_some_and(Rollout::active);
        if !any_policy && !moving {
            return Ok(None);
        }
        // Which sites change release, and what they had.
        let mut changing = Vec::new();
        let mut new_bundles: BTreeMap<SiteId, Bundle> = BTreeMap::new();
        let mut baselines: BTreeMap<SiteId, Target> = BTreeMap::new();
        for r in rendered.iter() {
            let Some(old) = current.get(&r.site) else {
                continue;
            };
            let nb = Bundle::from_slice(&r.body).map_err(|e| render_error(&r.site, e))?;
            let ob = Bundle::from_slice(&old.body).map_err(|e| render_error(&r.site, e))?;
            let (target, baseline) = (target_of(&nb), target_of(&ob));
            if target.versions() != baseline.versions() {
                changing.push(Changing {
                    site: r.site.clone(),
                    target,
                });
                new_bundles.insert(r.site.clone(), nb);
                baselines.insert(r.site.clone(), baseline);
            }
        }
        let policy = rollout::policy_for(checked, &changing);
        let mut after = before.clone();
        match (policy, before.current.filter(Rollout::active)) {
            (None, None) => return Ok(None),
            (None, Some(mut r)) => {
                // The policy is gone: everything goes out at once.
                r.superseded_by = Some(commit.to_owned());
                after.current = Some(r);
            }
            (Some((policy, file)), Some(mut r))
                if changing.iter().all(|c| {
                    r.wave_of(&c.site)
                        .is_some_and(|(_, t)| t.versions() == c.target.versions())
                }) =>
            {
                // Same releases: the rollout goes on with this commit.
                for w in &mut r.waves {
                    if w.opened_at.is_none() {
                        w.sites.retain(|s, _| baselines.contains_key(s));
                    }
                }
                for c in &changing {
                    if let Some(&i) = r.waves.iter().find_map(|w| w.sites.get(&c.site)) {
                        r.targets[i] = c.target.clone();
                    }
                }
                r.waves
                    .retain(|w| !w.sites.is_empty() || w.opened_at.is_some());
                r.policy = policy;
                r.policy_file = file;
                r.latest_commit = commit.to_owned();
                r.latest_serial = serial;
                after.current = Some(r);
            }
            // Nothing changes release and no rollout moves.
            (Some(_), None) if changing.is_empty() => return Ok(None),
            (Some((policy, file)), old) => {
                let (targets, mut waves) =
                    rollout::assign(&policy, &changing, |w, s| rollout::selects(checked, w, s));
                if let Some(first) = waves.first_mut() {
                    first.opened_at = Some(now);
                }
                if let Some(mut o) = old {
                    o.superseded_by = Some(commit.to_owned());
                    after.previous = Some(o);
                } else if let Some(done) = after.current.take() {
                    after.previous = Some(done);
                }
                after.current = Some(Rollout {
                    commit: commit.to_owned(),
                    serial,
                    latest_commit: commit.to_owned(),
                    latest_serial: serial,
                    started_at: now,
                    policy,
                    policy_file: file,
                    targets,
                    waves,
                    halted: None,
                    acknowledged: Default::default(),
                    resumes: Vec::new(),
                    finished_at: None,
                    superseded_by: None,
                });
                tracing::info!(commit, sites = changing.len(), "rollout started");
            }
        }
        if let Some(r) = &after.current {
            for s in rendered.iter_mut() {
                if !r.holds_back(&s.site) {
                    continue;
                }
                let (Some(mut b), Some(base)) =
                    (new_bundles.remove(&s.site), baselines.get(&s.site))
                else {
                    continue;
                };
                b.software.clone_from(&base.software);
                b.agent_release.clone_from(&base.agent);
                s.body = b.to_canonical_json();
                s.desired = Some(desired_digest(&b));
            }
        }
        Ok(Some(after))
    }

    /// Writes rollout records (before the bundles they imply).
    pub(super) fn persist_rollouts(&self, r: &Rollouts) -> Result<(), SyncError> {
        let Some(current) = &r.current else {
            return Ok(());
        };
        let enc = |r: &Rollout| {
            serde_json::to_string(r).map_err(|e| crate::store::corrupt("rollout/current", &e))
        };
        let previous = r.previous.as_ref().map(enc).transpose()?;
        self.store
            .write_rollout(&enc(current)?, previous.as_deref())?;
        Ok(())
    }

    pub(super) fn set_rollouts(&self, r: Rollouts) {
        if let Ok(mut g) = self.rollouts.write() {
            *g = r;
        }
    }

    /// One step of the current rollout from the latest reports: halts,
    /// passes and opens waves, and gives the sites of opened waves their
    /// release (also what a restart between the record and the bundles
    /// left undone). Blocking.
    pub fn advance_rollout(&self, at: Timestamp) -> Result<Vec<Step>, SyncError> {
        // The record keeps whole seconds; reachability is judged at the
        // exact time, as the status page does (judged at the whole second,
        // a box silent for 5.3 s of a 5 s limit counted as reachable for
        // up to a second more, and its wave waited for the 10 s timer).
        let now = Timestamp::from_second(at.as_second()).unwrap_or(at);
        let _one_at_a_time = self
            .sync_lock
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let Some(mut r) = self.rollout() else {
            return Ok(Vec::new());
        };
        if !r.active() {
            return Ok(Vec::new());
        }
        let outcomes = self.rollout_outcomes(&r, at)?;
        if tracing::enabled!(tracing::Level::DEBUG) {
            tracing::debug!(summary = %rollout::summary(&r, &outcomes), "rollout before the step");
        }
        let steps = rollout::advance(&mut r, &outcomes, now);
        if !steps.is_empty() {
            let mut all = self.rollouts.read().map(|g| g.clone()).unwrap_or_default();
            all.current = Some(r.clone());
            self.persist_rollouts(&all)?;
            self.set_rollouts(all);
            for s in &steps {
                match s {
                    Step::Opened(k) => tracing::info!(
                        wave = %r.waves[*k].name,
                        sites = r.waves[*k].sites.len(),
                        "rollout wave opened"
                    ),
                    Step::Passed(k) => {
                        tracing::info!(wave = %r.waves[*k].name, "rollout wave passed");
                    }
                    Step::Halted => tracing::warn!(
                        reason = %r.halted.as_ref().map(|h| h.reason.as_str()).unwrap_or(""),
                        "rollout halted"
                    ),
                    Step::Finished => tracing::info!(commit = %r.commit, "rollout complete"),
                }
            }
        }
        let first = !self
            .rollout_reconciled
            .swap(true, std::sync::atomic::Ordering::SeqCst);
        if first || steps.iter().any(|s| matches!(s, Step::Opened(_))) {
            self.release_opened_waves(&r, now)?;
        }
        Ok(steps)
    }

    /// Gives every site of an opened wave whose bundle still holds its
    /// previous release the rollout's target, under the same serial and a
    /// higher step.
    fn release_opened_waves(&self, r: &Rollout, now: Timestamp) -> Result<usize, SyncError> {
        let expiry = self
            .manifests()
            .map_or(SignedDuration::from_hours(24 * 7), |c| self.expiry(&c));
        let mut fresh = Vec::new();
        for w in r.waves.iter().filter(|w| w.opened_at.is_some()) {
            for (site, &t) in &w.sites {
                let (Some(p), Some(target)) = (self.bundle(site), r.targets.get(t)) else {
                    continue;
                };
                let mut b = Bundle::from_slice(&p.body).map_err(|e| render_error(site, e))?;
                if target_of(&b).versions() == target.versions() {
                    continue;
                }
                b.software.clone_from(&target.software);
                b.agent_release.clone_from(&target.agent);
                // The rollout's latest commit; under the serial the box
                // already holds, one step up.
                if r.latest_serial > b.serial {
                    b.serial = r.latest_serial;
                    b.step = 0;
                } else {
                    b.step = b.step.saturating_add(1);
                }
                b.commit = Some(r.latest_commit.clone());
                let desired = Some(desired_digest(&b).to_hex());
                fresh.push(self.sign_anew(&mut b, now, expiry, desired)?);
            }
        }
        let n = fresh.len();
        if n > 0 {
            self.store.publish(&fresh, None)?;
            self.swap_in(fresh);
        }
        Ok(n)
    }

    /// Resumes a halted rollout: the boxes behind the halt no longer count
    /// (neither way), the resume is recorded in the rollout and the audit
    /// log, and the rollout goes on at once.
    pub fn resume_rollout(
        &self,
        by: &str,
        source: Option<String>,
        now: Timestamp,
    ) -> Result<Rollout, ResumeError> {
        {
            let _one_at_a_time = self
                .sync_lock
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            let mut all = self.rollouts.read().map(|g| g.clone()).unwrap_or_default();
            let Some(r) = all.current.as_mut().filter(|r| r.active()) else {
                return Err(ResumeError::NotHalted);
            };
            let Some(halt) = r.halted.take() else {
                return Err(ResumeError::NotHalted);
            };
            r.acknowledged
                .extend(halt.sites.iter().map(|t| t.site.clone()));
            r.resumes.push(rollout::Resume {
                at: now,
                by: by.to_owned(),
                halt: halt.reason.clone(),
            });
            let commit = r.commit.clone();
            self.persist_rollouts(&all)?;
            self.set_rollouts(all);
            self.store.audit(&AuditEntry {
                at: now,
                actor: by.to_owned(),
                action: "resume rollout".into(),
                target: commit,
                source,
                result: Some(format!("ok (halted: {})", halt.reason)),
            })?;
        }
        self.advance_rollout(now)?;
        self.rollout().ok_or(ResumeError::NotHalted)
    }
}
