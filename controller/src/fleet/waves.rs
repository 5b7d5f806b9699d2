//! The fleet's rollouts (see the `rollout` module for the state machine):
//! at each commit, which sites change release (with content in waves: any
//! part of their bundle) and whether that continues the current rollout or
//! starts a new one; the bundles derived from it (a site in a wave not
//! opened keeps its previous release, or its whole previous bundle);
//! opening waves as boxes report; an operator's resume. The state is one
//! store record, written before the bundles it implies, so a restart
//! converges.

use std::collections::BTreeMap;
use std::sync::Arc;

use jiff::{SignedDuration, Timestamp};
use touchline_schemas::{Bundle, SiteId};

use super::{Fleet, SyncError};
use crate::bundles::{Signed, desired_digest};
use crate::rollout::{self, BundleHead, Changing, Outcome, Rollout, Step, Target};
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
        serial: None,
    }
}

/// Whether a commit goes on with the rollout `r` rather than starting a
/// new one. Releases in waves: every site that changes release is in `r`
/// and moves to the same releases. Content in waves: every site that
/// changes is held back by `r` (its wave will bring it this commit's
/// bundle) or moves to what `r` gives it (the same commit, processed
/// again after a restart). After a change of the policy's `content`, a
/// commit goes on with `r` only when nothing changes under the new one
/// (then `r` keeps holding back what it held, under its own policy).
fn goes_on(r: &Rollout, changing: &[Changing], content_waves: bool) -> bool {
    if r.content_waves != content_waves {
        return changing.is_empty();
    }
    changing.iter().all(|c| {
        r.wave_of(&c.site).is_some_and(|(_, t)| {
            if content_waves {
                r.holds_back(&c.site) || t.serial == c.target.serial
            } else {
                t.versions() == c.target.versions()
            }
        })
    })
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
        rendered: &mut Vec<Signed>,
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
            .and_then(|f| f.value.rollout.as_ref());
        let content_waves = fleet_policy.is_some_and(|p| p.content_in_waves());
        let fleet_policy = fleet_policy.is_some();
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
        // Which sites change release (with content in waves: anything of
        // their bundle), and what they had. Only the heads are read (the
        // published bundles' are kept); the whole bundle only of a site
        // whose release changes.
        let mut changing = Vec::new();
        let mut new_bundles: BTreeMap<SiteId, Bundle> = BTreeMap::new();
        let mut baselines: BTreeMap<SiteId, Target> = BTreeMap::new();
        let head = |site: &SiteId, body: &[u8]| {
            BundleHead::of(body).ok_or_else(|| render_error(site, "no serial or releases"))
        };
        let kept = self.bundle_heads();
        for r in rendered.iter() {
            let Some(old) = current.get(&r.site) else {
                continue;
            };
            let target = head(&r.site, &r.body)?.target;
            let baseline = match kept.get(&r.site) {
                Some(h) => h.target.clone(),
                None => head(&r.site, &old.body)?.target,
            };
            if content_waves {
                let same = old.desired.is_some() && old.desired == r.desired.map(|d| d.to_hex());
                if !same {
                    changing.push(Changing {
                        site: r.site.clone(),
                        target: Target {
                            serial: Some(serial),
                            ..target
                        },
                    });
                    baselines.insert(r.site.clone(), baseline);
                }
            } else if target.versions() != baseline.versions() {
                changing.push(Changing {
                    site: r.site.clone(),
                    target,
                });
                let nb = Bundle::from_slice(&r.body).map_err(|e| render_error(&r.site, e))?;
                new_bundles.insert(r.site.clone(), nb);
                baselines.insert(r.site.clone(), baseline);
            }
        }
        // A release's own policy is for the sites moving to it; with
        // content in waves, a site that only changes videos or
        // configuration is under the fleet's.
        let policy = if content_waves {
            let moving_release: Vec<Changing> = changing
                .iter()
                .filter(|c| {
                    baselines
                        .get(&c.site)
                        .is_some_and(|b| b.versions() != c.target.versions())
                })
                .cloned()
                .collect();
            rollout::policy_for(checked, &moving_release)
        } else {
            rollout::policy_for(checked, &changing)
        };
        let mut after = before.clone();
        match (policy, before.current.filter(Rollout::active)) {
            (None, None) => return Ok(None),
            (None, Some(mut r)) => {
                // The policy is gone: everything goes out at once.
                r.superseded_by = Some(commit.to_owned());
                after.current = Some(r);
            }
            (Some((policy, file)), Some(mut r)) if goes_on(&r, &changing, content_waves) => {
                // Same releases (or, with content in waves, sites still
                // held back): the rollout goes on with this commit.
                for w in &mut r.waves {
                    if w.opened_at.is_none() {
                        w.sites.retain(|s, _| baselines.contains_key(s));
                    }
                }
                for c in &changing {
                    if r.content_waves {
                        r.retarget(&c.site, &c.target);
                    } else if let Some(&i) = r.waves.iter().find_map(|w| w.sites.get(&c.site)) {
                        r.targets[i] = c.target.clone();
                    }
                }
                r.drop_unused_targets();
                r.waves
                    .retain(|w| !w.sites.is_empty() || w.opened_at.is_some());
                if r.content_waves == content_waves {
                    r.policy = policy;
                    r.policy_file = file;
                }
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
                    content_waves,
                });
                tracing::info!(commit, sites = changing.len(), "rollout started");
            }
        }
        if let Some(r) = after.current.as_ref().filter(|r| r.content_waves) {
            // Held back: its whole previous bundle stays as published.
            rendered.retain(|s| !r.holds_back(&s.site));
        } else if let Some(r) = &after.current {
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
    /// higher step. With content in waves, a site whose bundle is older
    /// than its target's serial gets its bundle of the rollout's latest
    /// commit, rendered anew.
    fn release_opened_waves(&self, r: &Rollout, now: Timestamp) -> Result<usize, SyncError> {
        let expiry = self
            .manifests()
            .map_or(SignedDuration::from_hours(24 * 7), |c| self.expiry(&c));
        let mut fresh = Vec::new();
        let mut to_render = Vec::new();
        for w in r.waves.iter().filter(|w| w.opened_at.is_some()) {
            for (site, &t) in &w.sites {
                let (Some(p), Some(target)) = (self.bundle(site), r.targets.get(t)) else {
                    continue;
                };
                if r.content_waves {
                    if target.serial.is_some_and(|n| p.serial < n) {
                        to_render.push(site);
                    }
                    continue;
                }
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
        if !to_render.is_empty() {
            fresh.extend(self.render_latest(r, &to_render, now, expiry)?);
        }
        let n = fresh.len();
        if n > 0 {
            self.store.publish(&fresh, None)?;
            self.swap_in(fresh);
        }
        Ok(n)
    }

    /// The bundles of `sites` at the rollout's latest commit, signed. None
    /// while the manifests in memory are another commit's (a restart
    /// between the rollout's record and the commit's bundles: the commit is
    /// processed again, and its bundles follow).
    fn render_latest(
        &self,
        r: &Rollout,
        sites: &[&SiteId],
        now: Timestamp,
        expiry: SignedDuration,
    ) -> Result<Vec<Published>, SyncError> {
        let checked = match self.manifests() {
            Some(c) if self.store.last_good_commit()?.as_deref() == Some(&r.latest_commit) => c,
            _ => return Ok(Vec::new()),
        };
        let meta = crate::render::BundleMeta {
            serial: r.latest_serial,
            commit: Some(r.latest_commit.clone()),
            issued_at: now,
            expires_at: now.saturating_add(expiry).unwrap_or(now),
        };
        // On every core: a wave may open for thousands of sites.
        let signed = crate::bundles::render_sites(&checked, sites, &meta, Some(&self.key), true)
            .map_err(SyncError::Render)?;
        let out = signed
            .into_iter()
            .map(|s| Published {
                etag: super::etag_of(&s.body),
                site: s.site,
                serial: meta.serial,
                commit: meta.commit.clone(),
                body: s.body,
                signature: s.signature.unwrap_or_default(),
                issued_at: meta.issued_at,
                expires_at: meta.expires_at,
                desired: s.desired.map(|d| d.to_hex()),
            })
            .collect();
        Ok(out)
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
