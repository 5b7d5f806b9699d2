//! The running controller's state: the published bundles, site tokens, the
//! last good manifests, and the pipeline that turns a fetched commit into
//! signed bundles (fetch → fast-forward check → signature policy → validate
//! → render → sign → persist → publish).
//!
//! A commit that fails any step is recorded as refused with its reason, and
//! the bundles of the last good commit keep being served.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex, RwLock};

use jiff::{SignedDuration, Timestamp};
use tokio::sync::watch;
use touchline_schemas::{Bundle, HumanDuration, Sha256, SigningKey, SiteId};

use crate::config::Config;
use crate::content::ContentStore;
use crate::follow::ManifestSource;
use crate::render::BundleMeta;
use crate::store::{CommitRecord, CommitState, Published, Pulse, Store, StoreError};
use crate::tokens::TokenHash;
use crate::validate::{self, Checked};

mod waves;
pub use waves::ResumeError;

/// What a sync did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SyncOutcome {
    /// The branch tip was already processed.
    Unchanged,
    /// A new commit was published; the sites whose bundle changed.
    Published {
        /// Commit id.
        commit: String,
        /// Changed sites.
        changed: Vec<SiteId>,
    },
    /// A new commit was refused.
    Refused {
        /// Commit id.
        commit: String,
        /// Why.
        reason: String,
    },
}

/// A failure of the sync itself (not of the commit).
#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    /// Following the manifests failed (git fetch, read).
    #[error("failed to sync the manifests repository")]
    Follow(#[from] crate::follow::FollowError),
    /// The store failed.
    #[error("failed to persist the sync")]
    Store(#[from] StoreError),
    /// Rendering failed after validation passed (a bug).
    #[error("failed to render bundles")]
    Render(#[source] anyhow::Error),
}

/// Site tokens, by site and by hash. A presented token is hashed (sha256)
/// and looked up by its hash: the lookup's timing depends on the hash, which
/// an attacker cannot steer towards a stored one.
#[derive(Debug, Default)]
struct Tokens {
    by_site: HashMap<SiteId, TokenHash>,
    by_hash: HashMap<[u8; 32], SiteId>,
}

impl Tokens {
    fn insert(&mut self, site: SiteId, hash: TokenHash) {
        if let Some(old) = self.by_site.insert(site.clone(), hash) {
            self.by_hash.remove(&old.0);
        }
        self.by_hash.insert(hash.0, site);
    }
}

/// The controller.
pub struct Fleet {
    /// Durable state.
    pub store: Arc<dyn Store>,
    /// Content by sha256.
    pub content: ContentStore,
    /// Configuration.
    pub config: Config,
    key: SigningKey,
    follower: Mutex<Box<dyn ManifestSource>>,
    bundles: RwLock<HashMap<SiteId, Arc<Published>>>,
    /// The content each site's token may read: what its current and
    /// previous bundles name (memory only: after a restart, the current).
    scopes: RwLock<HashMap<SiteId, Scope>>,
    /// Each reporting site's latest [`Pulse`] (read from the store at
    /// start, then kept by [`Fleet::note_report`]).
    pulses: RwLock<HashMap<SiteId, Pulse>>,
    generation: watch::Sender<u64>,
    stopping: std::sync::atomic::AtomicBool,
    /// When each site last polled its bundle (memory only: after a restart
    /// a box counts as seen again at its next poll or report).
    polls: RwLock<std::collections::HashMap<SiteId, Timestamp>>,
    tokens: RwLock<Tokens>,
    manifests: RwLock<Option<Arc<Checked>>>,
    last_sync_error: RwLock<Option<(Timestamp, String)>>,
    sync_lock: Mutex<()>,
    /// One enrollment redeemed at a time (a code works once).
    enroll_lock: Mutex<()>,
    /// Wakes the alert loop (a report arrived).
    pub alerts_wake: tokio::sync::Notify,
    /// Remote actions waiting for their boxes.
    pub actions: crate::actions::Queue,
    /// The current rollout and the one before it.
    rollouts: RwLock<waves::Rollouts>,
    /// Whether the opened waves' bundles were checked since the start.
    rollout_reconciled: std::sync::atomic::AtomicBool,
    /// Wakes the rollout loop (a report arrived, a commit was published).
    pub rollout_wake: tokio::sync::Notify,
    /// When this controller started: silence counts from here at the
    /// earliest (its own downtime is not the boxes').
    pub started_at: Timestamp,
}

impl std::fmt::Debug for Fleet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Fleet").finish_non_exhaustive()
    }
}

/// The content hashes a site's current and previous bundles name.
#[derive(Debug, Default)]
struct Scope {
    /// The current bundle's desired-state digest (a re-signed bundle keeps
    /// it; a new desired state rotates current into previous).
    desired: Option<String>,
    current: Arc<HashSet<Sha256>>,
    previous: Arc<HashSet<Sha256>>,
    /// The current bundle's `agent.poll_interval`.
    poll_interval: Option<SignedDuration>,
    /// The current bundle's serial and releases (of every bundle served,
    /// a re-signed one too).
    head: Arc<crate::rollout::BundleHead>,
}

/// What [`named_content`] reads of a bundle.
#[derive(Debug, Default)]
struct Named {
    hashes: HashSet<Sha256>,
    poll_interval: Option<SignedDuration>,
}

/// The hashes a bundle names (its files, its software package and its
/// agent executables) and its poll interval.
fn named_content(body: &[u8]) -> Named {
    Bundle::from_slice(body)
        .map(|b| {
            let poll_interval = Some(SignedDuration::from_secs(
                i64::try_from(b.agent.poll_interval.as_secs()).unwrap_or(i64::MAX),
            ));
            let hashes = b
                .files
                .iter()
                .map(|f| f.sha256)
                .chain(b.software.map(|s| s.sha256))
                .chain(
                    b.agent_release
                        .iter()
                        .flat_map(|a| a.binaries.values().map(|x| x.sha256)),
                )
                .collect();
            Named {
                hashes,
                poll_interval,
            }
        })
        .unwrap_or_default()
}

fn etag_of(body: &[u8]) -> String {
    format!("\"{}\"", touchline_schemas::Sha256::digest(body).to_hex())
}

impl Fleet {
    /// Loads the persisted state; does not fetch.
    pub fn open(
        store: Arc<dyn Store>,
        content: ContentStore,
        config: Config,
        key: SigningKey,
        follower: Box<dyn ManifestSource>,
    ) -> Result<Self, SyncError> {
        let bundles: HashMap<SiteId, Arc<Published>> = store
            .published()?
            .into_iter()
            .map(|p| (p.site.clone(), Arc::new(p)))
            .collect();
        let scopes = bundles
            .iter()
            .map(|(site, p)| {
                let named = named_content(&p.body);
                let scope = Scope {
                    desired: p.desired.clone(),
                    current: Arc::new(named.hashes),
                    previous: Arc::default(),
                    poll_interval: named.poll_interval,
                    head: Arc::new(crate::rollout::BundleHead::of(&p.body).unwrap_or_default()),
                };
                (site.clone(), scope)
            })
            .collect();
        let pulses = store
            .latest_all()?
            .iter()
            .map(|s| (s.site.clone(), s.pulse()))
            .collect();
        let actions = crate::actions::Queue::load(&*store, Timestamp::now())?;
        let rollouts = waves::Rollouts::load(&*store)?;
        let mut tokens = Tokens::default();
        for (site, hash) in store.site_tokens()? {
            tokens.insert(site, hash);
        }
        let fleet = Self {
            store,
            content,
            config,
            key,
            follower: Mutex::new(follower),
            bundles: RwLock::new(bundles),
            scopes: RwLock::new(scopes),
            pulses: RwLock::new(pulses),
            generation: watch::Sender::new(0),
            stopping: std::sync::atomic::AtomicBool::new(false),
            polls: RwLock::default(),
            tokens: RwLock::new(tokens),
            manifests: RwLock::new(None),
            last_sync_error: RwLock::new(None),
            sync_lock: Mutex::new(()),
            enroll_lock: Mutex::new(()),
            alerts_wake: tokio::sync::Notify::new(),
            actions,
            rollouts: RwLock::new(rollouts),
            rollout_reconciled: std::sync::atomic::AtomicBool::new(false),
            rollout_wake: tokio::sync::Notify::new(),
            started_at: Timestamp::now(),
        };
        fleet.reload_manifests()?;
        Ok(fleet)
    }

    /// The same, as started at `at` (a clock given by a test).
    #[must_use]
    pub fn started(mut self, at: Timestamp) -> Self {
        self.started_at = at;
        self
    }

    /// Re-reads the last good commit's manifests (for the API's desired
    /// state and site list) after a restart.
    fn reload_manifests(&self) -> Result<(), SyncError> {
        let Some(good) = self.store.last_good_commit()? else {
            return Ok(());
        };
        let set = match self.follower().files(&good) {
            Ok(set) => set,
            // A directory source starts without history: the next sync
            // reads the manifests again.
            Err(crate::follow::FollowError::Unknown(_)) => return Ok(()),
            Err(e) => return Err(e.into()),
        };
        let checked = validate::check_with(&set, Some(self.config.offline_after));
        if let Ok(mut m) = self.manifests.write() {
            *m = Some(Arc::new(checked));
        }
        Ok(())
    }

    fn follower(&self) -> std::sync::MutexGuard<'_, Box<dyn ManifestSource>> {
        match self.follower.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        }
    }

    /// The action queue and its store.
    pub fn action_ctx(&self) -> crate::actions::Ctx<'_> {
        crate::actions::Ctx {
            store: &*self.store,
            queue: &self.actions,
        }
    }

    /// Queues a remote action (checked against the site's published
    /// allow-list, signed, audited).
    pub fn request_action(
        &self,
        new: crate::actions::NewAction,
        now: Timestamp,
    ) -> Result<crate::actions::ActionRecord, crate::actions::RequestError> {
        let facts = crate::actions::SiteFacts {
            known: self.knows_site(&new.site),
            allowed: self
                .bundle(&new.site)
                .and_then(|p| crate::actions::allowed_actions(&p.body)),
        };
        crate::actions::request(self.action_ctx(), &self.key, facts, new, now)
    }

    /// The published bundle of a site.
    pub fn bundle(&self, site: &SiteId) -> Option<Arc<Published>> {
        self.bundles.read().ok()?.get(site).cloned()
    }

    /// Every site's current bundle head (serial and releases), for
    /// counting progress without parsing bundles.
    pub fn bundle_heads(&self) -> HashMap<SiteId, Arc<crate::rollout::BundleHead>> {
        self.scopes
            .read()
            .map(|s| s.iter().map(|(k, v)| (k.clone(), v.head.clone())).collect())
            .unwrap_or_default()
    }

    /// Every published bundle, by site.
    pub fn bundles(&self) -> BTreeMap<SiteId, Arc<Published>> {
        self.bundles
            .read()
            .map(|b| b.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
            .unwrap_or_default()
    }

    /// Marks the controller as stopping: long-polls answer at once (so a
    /// graceful shutdown does not wait for minutes-long polls).
    pub fn begin_shutdown(&self) {
        self.stopping
            .store(true, std::sync::atomic::Ordering::SeqCst);
        self.generation.send_modify(|g| *g += 1);
    }

    /// Records that a site polled its bundle (its liveness signal).
    pub fn note_poll(&self, site: &SiteId) {
        if let Ok(mut p) = self.polls.write() {
            p.insert(site.clone(), Timestamp::now());
        }
    }

    /// When a site last polled.
    pub fn last_poll(&self, site: &SiteId) -> Option<Timestamp> {
        self.polls.read().ok()?.get(site).copied()
    }

    /// Whether [`Fleet::begin_shutdown`] was called.
    pub fn is_stopping(&self) -> bool {
        self.stopping.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// A receiver that changes whenever bundles are published.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.generation.subscribe()
    }

    /// The last good manifests.
    pub fn manifests(&self) -> Option<Arc<Checked>> {
        self.manifests.read().ok()?.clone()
    }

    /// The last sync failure (fetch errors), if the last sync failed.
    pub fn last_sync_error(&self) -> Option<(Timestamp, String)> {
        self.last_sync_error.read().ok()?.clone()
    }

    /// The site a token belongs to, if any.
    pub fn site_of_token(&self, hash: &TokenHash) -> Option<SiteId> {
        let tokens = self.tokens.read().ok()?;
        let site = tokens.by_hash.get(&hash.0)?;
        // Confirm in constant time (the map lookup compared the hashes too).
        tokens
            .by_site
            .get(site)
            .filter(|h| h.matches(hash))
            .map(|_| site.clone())
    }

    /// Whether the site has a token.
    pub fn has_token(&self, site: &SiteId) -> bool {
        self.tokens
            .read()
            .is_ok_and(|t| t.by_site.contains_key(site))
    }

    /// Whether the site exists (in the manifests or with a bundle).
    pub fn knows_site(&self, site: &SiteId) -> bool {
        self.bundle(site).is_some()
            || self
                .manifests()
                .is_some_and(|m| m.manifests.sites.contains_key(site))
    }

    /// The fleet's time zone (`timezone` in `fleet.yaml`; UTC before the
    /// first valid commit).
    pub fn time_zone(&self) -> jiff::tz::TimeZone {
        self.manifests()
            .and_then(|m| {
                m.manifests
                    .fleet
                    .as_ref()
                    .and_then(|f| jiff::tz::TimeZone::get(&f.value.timezone).ok())
            })
            .unwrap_or(jiff::tz::TimeZone::UTC)
    }

    /// Every site the controller knows (in the manifests or with a
    /// published bundle), in order.
    pub fn site_ids(&self) -> Vec<SiteId> {
        let mut ids: std::collections::BTreeSet<SiteId> = self.bundles().into_keys().collect();
        if let Some(m) = self.manifests() {
            ids.extend(m.manifests.sites.keys().cloned());
        }
        ids.into_iter().collect()
    }

    /// Marks an enrollment code used and gives its site a new token hash,
    /// in one durable write; uses the token at once.
    pub fn redeem_enrollment(
        &self,
        lookup: &str,
        e: &crate::store::Enrollment,
        hash: TokenHash,
    ) -> Result<(), StoreError> {
        self.store.redeem_enrollment(lookup, e, &hash)?;
        if let Ok(mut t) = self.tokens.write() {
            t.insert(e.site.clone(), hash);
        }
        Ok(())
    }

    /// Held while an enrollment code is redeemed.
    pub fn enrollment_lock(&self) -> std::sync::MutexGuard<'_, ()> {
        self.enroll_lock
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The signing key (for backups).
    pub fn signing_key(&self) -> &SigningKey {
        &self.key
    }

    /// The signing key's public half, an `authorized_keys` line.
    pub fn public_key_openssh(&self) -> String {
        self.key.public_key_openssh()
    }

    /// Stores a new token hash for a site (durable) and uses it at once.
    pub fn set_token(&self, site: &SiteId, hash: TokenHash) -> Result<(), StoreError> {
        self.store.set_site_token(site, &hash)?;
        if let Ok(mut t) = self.tokens.write() {
            t.insert(site.clone(), hash);
        }
        Ok(())
    }

    /// Fetches and processes the branch tip. Blocking (git, rendering,
    /// signing): call from a blocking thread. One `sync` span per call,
    /// with the commit and serial of the tip.
    #[tracing::instrument(
        name = "sync",
        skip_all,
        fields(commit = tracing::field::Empty, serial = tracing::field::Empty)
    )]
    pub fn sync(&self, now: Timestamp) -> Result<SyncOutcome, SyncError> {
        // Whole seconds: bundle times read better and compare simply.
        let now = Timestamp::from_second(now.as_second()).unwrap_or(now);
        let _one_at_a_time = match self.sync_lock.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        let result = self.sync_inner(now);
        if let Ok(mut e) = self.last_sync_error.write() {
            *e = match &result {
                Err(err) => Some((now, error_chain(err))),
                Ok(_) => None,
            };
        }
        if let Ok(SyncOutcome::Unchanged) = &result {
            self.resign_due(now)?;
        }
        result
    }

    fn sync_inner(&self, now: Timestamp) -> Result<SyncOutcome, SyncError> {
        let started = std::time::Instant::now();
        let follower = self.follower();
        let info = follower.fetch()?;
        let fetched = started.elapsed();
        let span = tracing::Span::current();
        span.record("commit", info.id.as_str());
        span.record("serial", info.serial);
        let tip_s = info.id.clone();
        let tip = tip_s.as_str();
        if self.store.last_seen_commit()?.as_deref() == Some(tip) {
            return Ok(SyncOutcome::Unchanged);
        }
        let last_good = self.store.last_good_commit()?;
        let refuse = |reason: String, diagnostics: Vec<String>| -> Result<SyncOutcome, SyncError> {
            tracing::warn!(commit = %tip_s, %reason, "refused a manifests commit");
            self.store.record_commit(&CommitRecord {
                id: tip_s.clone(),
                serial: info.serial,
                summary: info.summary.clone(),
                state: CommitState::Refused,
                reason: Some(reason.clone()),
                diagnostics,
                processed_at: now,
                sites_changed: Vec::new(),
            })?;
            // The commit status says so soon.
            self.rollout_wake.notify_one();
            Ok(SyncOutcome::Refused {
                commit: tip_s.clone(),
                reason,
            })
        };
        if let Some(good) = &last_good
            && !follower.descends(good, tip)?
        {
            return refuse(
                format!(
                    "not a fast-forward: the branch now points at {tip}, which does not descend from the last rendered commit {good} (force-push?); boxes stay on {good}"
                ),
                Vec::new(),
            );
        }
        if self.config.require_signed_commits {
            let Some(signers) = self.config.commit_signers() else {
                return refuse(
                    "require_signed_commits is set but no signer is configured".into(),
                    Vec::new(),
                );
            };
            for id in follower.between(last_good.as_deref(), tip)? {
                if let Err(reason) = follower.check_signature(&id, &signers) {
                    return refuse(
                        format!("unsigned or badly signed commit: {reason}"),
                        Vec::new(),
                    );
                }
            }
        }
        let set = follower.files(tip)?;
        drop(follower);
        let checked = validate::check_with(&set, Some(self.config.offline_after));
        let validated = started.elapsed();
        if checked.diags.has_errors() {
            let diags: Vec<String> = checked.diags.0.iter().map(ToString::to_string).collect();
            return refuse(
                format!(
                    "the manifests are invalid ({} errors)",
                    checked.diags.errors()
                ),
                diags,
            );
        }
        let expiry = self.expiry(&checked);
        let meta = BundleMeta {
            serial: info.serial,
            commit: Some(tip_s.clone()),
            issued_at: now,
            expires_at: now.saturating_add(expiry).unwrap_or(now),
        };
        let mut rendered =
            crate::bundles::render_all(&checked, &meta, None, true).map_err(SyncError::Render)?;
        let current = self.bundles();
        // Sites in a rollout wave not opened yet keep their release.
        let rollouts =
            self.derive_rollout(&checked, &mut rendered, &current, &tip_s, info.serial, now)?;
        let rendered_at = started.elapsed();
        // A site whose desired state did not change keeps its bundle (same
        // bytes, same ETag): only changed sites are signed and published.
        let mut fresh: Vec<crate::bundles::Signed> = rendered
            .into_iter()
            .filter(|r| {
                let old = current.get(&r.site).and_then(|p| p.desired.clone());
                old.is_none() || old != r.desired.map(|d| d.to_hex())
            })
            .collect();
        crate::bundles::sign_all(&self.key, &mut fresh).map_err(SyncError::Render)?;
        let signed = started.elapsed();
        let changed: Vec<Published> = fresh
            .into_iter()
            .map(|r| Published {
                etag: etag_of(&r.body),
                site: r.site,
                serial: meta.serial,
                commit: meta.commit.clone(),
                body: r.body,
                signature: r.signature.unwrap_or_default(),
                issued_at: meta.issued_at,
                expires_at: meta.expires_at,
                desired: r.desired.map(|d| d.to_hex()),
            })
            .collect();
        let record = CommitRecord {
            id: tip_s.clone(),
            serial: info.serial,
            summary: info.summary,
            state: CommitState::Accepted,
            reason: None,
            diagnostics: checked.diags.0.iter().map(ToString::to_string).collect(),
            processed_at: now,
            sites_changed: changed.iter().map(|p| p.site.clone()).collect(),
        };
        // The rollout's record first: a restart before the bundles are
        // published processes this commit again and finds it.
        if let Some(r) = &rollouts {
            self.persist_rollouts(r)?;
        }
        self.store.publish(&changed, Some(&record))?;
        let sites: Vec<SiteId> = record.sites_changed.clone();
        if let Some(r) = rollouts {
            self.set_rollouts(r);
        }
        self.swap_in(changed);
        self.rollout_wake.notify_one();
        if let Ok(mut m) = self.manifests.write() {
            *m = Some(Arc::new(checked));
        }
        let ms = |d: std::time::Duration| d.as_millis();
        tracing::info!(
            commit = %tip_s,
            serial = info.serial,
            changed = sites.len(),
            fetch_ms = ms(fetched),
            validate_ms = ms(validated - fetched),
            render_ms = ms(rendered_at - validated),
            sign_ms = ms(signed - rendered_at),
            persist_ms = ms(started.elapsed() - signed),
            "published"
        );
        Ok(SyncOutcome::Published {
            commit: tip_s,
            changed: sites,
        })
    }

    fn expiry(&self, checked: &Checked) -> SignedDuration {
        let secs = checked
            .manifests
            .fleet
            .as_ref()
            .map_or(7 * 86_400, |f| f.value.bundles.expiry.as_secs());
        SignedDuration::from_secs(i64::try_from(secs).unwrap_or(i64::MAX))
    }

    /// The release the site's current bundle names.
    pub fn desired_release(&self, site: &SiteId) -> Option<String> {
        let scopes = self.scopes.read().ok()?;
        let software = scopes.get(site)?.head.target.software.as_ref()?;
        Some(software.version.to_string())
    }

    /// The alert thresholds of a site: the built-in defaults (silence
    /// before offline: the controller's `offline_after`), then the fleet's
    /// `alerts:`, then its groups' in layering order.
    pub fn thresholds(&self, checked: Option<&Checked>, site: &SiteId) -> crate::alerts::Effective {
        let base = crate::alerts::Effective {
            offline_after: self.config.offline_after,
            ..crate::alerts::Effective::default()
        };
        let Some(c) = checked else {
            return base;
        };
        let m = &c.manifests;
        let fleet = m.fleet.iter().map(|f| &f.value.alerts);
        let groups = c
            .members
            .get(site)
            .into_iter()
            .flatten()
            .filter_map(|mem| m.groups.get(&mem.group))
            .map(|g| &g.value.alerts);
        base.layered(fleet.chain(groups))
    }

    /// What a site's silence is judged against (see [`crate::liveness`]).
    pub fn clocks(&self, site: &SiteId, offline_after: HumanDuration) -> crate::liveness::Clocks {
        let secs = |d: HumanDuration| {
            SignedDuration::from_secs(i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        };
        let poll_interval = self
            .scopes
            .read()
            .ok()
            .and_then(|s| s.get(site).and_then(|s| s.poll_interval))
            .unwrap_or(SignedDuration::from_secs(60));
        let bundle_validity = self
            .bundle(site)
            .map_or(SignedDuration::from_hours(7 * 24), |p| {
                p.expires_at.duration_since(p.issued_at)
            });
        crate::liveness::Clocks {
            listening_since: self.started_at,
            offline_after: secs(offline_after),
            poll_interval,
            bundle_validity,
        }
    }

    /// Every site's [`Pulse`] (those that reported).
    pub fn pulses(&self) -> HashMap<SiteId, Pulse> {
        self.pulses.read().map(|p| p.clone()).unwrap_or_default()
    }

    /// Keeps the pulse of a site's newly stored latest report.
    pub fn note_report(&self, site: &SiteId, pulse: Pulse) {
        if let Ok(mut p) = self.pulses.write() {
            p.insert(site.clone(), pulse);
        }
    }

    /// Whether `site`'s token may read content `hash`: its current or its
    /// previous bundle names it (a box may still be fetching the one it
    /// verified before the last commit).
    pub fn site_may_read(&self, site: &SiteId, hash: &Sha256) -> bool {
        self.scopes.read().is_ok_and(|s| {
            s.get(site)
                .is_some_and(|sc| sc.current.contains(hash) || sc.previous.contains(hash))
        })
    }

    fn swap_in(&self, published: Vec<Published>) {
        if published.is_empty() {
            return;
        }
        if let Ok(mut scopes) = self.scopes.write() {
            for p in &published {
                let scope = scopes.entry(p.site.clone()).or_default();
                // A re-signed bundle is the same desired state: the
                // previous set stays what it was.
                if scope.desired.is_none() || scope.desired != p.desired {
                    let named = named_content(&p.body);
                    scope.previous = std::mem::replace(&mut scope.current, Arc::new(named.hashes));
                    scope.desired.clone_from(&p.desired);
                    scope.poll_interval = named.poll_interval;
                }
                scope.head = Arc::new(crate::rollout::BundleHead::of(&p.body).unwrap_or_default());
            }
        }
        if let Ok(mut b) = self.bundles.write() {
            for p in published {
                b.insert(p.site.clone(), Arc::new(p));
            }
        }
        self.generation.send_modify(|g| *g += 1);
    }

    /// `b` issued at `now` and valid for `expiry`, signed, as served (its
    /// serial and commit are the bundle's; `desired` its desired-state
    /// digest).
    fn sign_anew(
        &self,
        b: &mut Bundle,
        now: Timestamp,
        expiry: SignedDuration,
        desired: Option<String>,
    ) -> Result<Published, SyncError> {
        b.issued_at = now;
        b.expires_at = now.saturating_add(expiry).unwrap_or(now);
        let body = b.to_canonical_json();
        let signature = self
            .key
            .sign(&body)
            .map_err(|e| SyncError::Render(e.into()))?;
        Ok(Published {
            site: b.site.clone(),
            serial: b.serial,
            commit: b.commit.clone(),
            etag: etag_of(&body),
            body,
            signature,
            issued_at: b.issued_at,
            expires_at: b.expires_at,
            desired,
        })
    }

    /// Re-signs bundles signed more than `resign_after` ago, with new issue
    /// and expiry times and the same serial and content.
    pub fn resign_due(&self, now: Timestamp) -> Result<usize, SyncError> {
        let now = Timestamp::from_second(now.as_second()).unwrap_or(now);
        let after = SignedDuration::from_secs(
            i64::try_from(self.config.resign_after.as_secs()).unwrap_or(i64::MAX),
        );
        let expiry = self
            .manifests()
            .map(|c| self.expiry(&c))
            .unwrap_or(SignedDuration::from_hours(24 * 7));
        let mut fresh = Vec::new();
        for p in self.bundles().values() {
            if p.issued_at.saturating_add(after).unwrap_or(now) > now {
                continue;
            }
            let Ok(mut b) = Bundle::from_slice(&p.body) else {
                continue;
            };
            fresh.push(self.sign_anew(&mut b, now, expiry, p.desired.clone())?);
        }
        let n = fresh.len();
        if n > 0 {
            self.store.publish(&fresh, None)?;
            self.swap_in(fresh);
            tracing::info!(bundles = n, "re-signed bundles before expiry");
        }
        Ok(n)
    }
}

/// An error and its sources, `: `-separated (as `{:#}` prints them).
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut chain = vec![e.to_string()];
    let mut src = e.source();
    while let Some(s) = src {
        chain.push(s.to_string());
        src = s.source();
    }
    chain.join(": ")
}
