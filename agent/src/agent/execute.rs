//! A pass's reconcile: [`observe`](crate::observe::observe) the box,
//! [`plan`](crate::plan::plan) (pure), then carry the plan out here: evict
//! corrupt blobs, fetch, place and remove files, write
//! `configuration.json`, reload, collect the store's garbage, then the
//! release step (stage, wait or switch). Each failure sets its condition
//! and returns a typed [`PassError`]; nothing here decides what to do.

use std::path::Path;
use std::sync::atomic::Ordering;

use touchline_schemas::Bundle;
use touchline_schemas::bundle::DesiredRelease;
use touchline_schemas::report::Severity;

use super::Agent;
use super::software::Op;
use crate::apply;
use crate::condition::Item;
use crate::error::{PassError, ReleaseError, UnpackFailure};
use crate::fetch::{Limits, Wanted};
use crate::fsx;
use crate::host::HostCommand;
use crate::observe::{self, BoxPaths, ReleasePaths};
use crate::phase::Event;
use crate::plan::{self, Blocked, Desired, PassPlan, ReleaseAction, ReleaseStep, Stage, Then};
use crate::release::{self, Layout, ReleaseName, SwitchResult, try_lock};
use crate::unpack;

/// What the update lock allows a pass that changes files.
enum MatchSafe {
    /// Apply now; run the reload command or not.
    Apply {
        /// The reload command runs.
        reload: bool,
    },
    /// Wait for the lock: why.
    Wait(String),
}

/// How long the reload command may run.
const RELOAD_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(120);

impl Agent {
    /// Brings the box to `bundle`. `Ok(Some(why))`: everything applied but
    /// a staged release, which waits (why).
    pub(crate) async fn reconcile(
        &mut self,
        bundle: &Bundle,
        dir: Option<&Path>,
    ) -> Result<Option<String>, PassError> {
        let old_index = self.index.clone();
        let observed = {
            let host = self.host.clone();
            let at = BoxPaths {
                videos_dir: &self.cfg.videos_dir,
                config_path: &self.cfg.config_path,
                store: &self.store,
                host: host.as_ref(),
            };
            let releases = self.releases.as_ref().map(|r| ReleasePaths {
                layout: &r.layout,
                state: &r.state,
                update_lock: &self.cfg.update_lock,
                lock_since: r.lock_since,
            });
            observe::observe(bundle, at, releases, &mut self.index)
        };
        let observed = observed.inspect_err(|e| self.fail(e))?;
        let desired = Desired {
            bundle,
            max_download_bytes: self.cfg.max_download_bytes,
            space_reserve_bytes: self.cfg.space_reserve_bytes,
        };
        let plan = plan::plan(&desired, &observed, &self.state, self.now().now);
        tracing::debug!(
            place = plan.place().count(),
            adopt = plan.adopt().count(),
            remove = plan.remove.len(),
            fetch = plan.fetch.len(),
            "planned"
        );
        let files_wait = self
            .execute_files(bundle, &plan, &observed, dir, &old_index)
            .await?;
        let waiting = self.execute_release(bundle, &plan.release, dir).await;
        if let Some(r) = self.releases.as_mut() {
            r.waiting = waiting.as_ref().ok().and_then(Clone::clone);
        }
        let files_wait = match (files_wait, self.execute_agent_release(bundle, dir).await) {
            (Some(files), Some(agent)) => Some(format!("{files}; {agent}")),
            (files, agent) => files.or(agent),
        };
        match (files_wait, waiting) {
            (Some(files), Ok(Some(release))) => Ok(Some(format!("{files}; {release}"))),
            (Some(files), Ok(None)) => Ok(Some(files)),
            (None, w) => w,
            (Some(_), Err(e)) => Err(e),
        }
    }

    /// Whether the pass may change what plays now: the update lock (held
    /// by the app during a match) is free, or this pass only adds files
    /// nothing plays yet (then without a reload). Otherwise the changes
    /// wait (downloads are done already); past `lock_max_wait` the
    /// condition becomes a warning.
    fn match_safe(&mut self, plan: &PassPlan) -> MatchSafe {
        let held = match try_lock(&self.cfg.update_lock) {
            Ok(Some(_)) => false,
            Ok(None) => true,
            Err(e) => {
                tracing::warn!(path = %self.cfg.update_lock.display(), error = %e, "cannot check the update lock; applying");
                false
            }
        };
        if !held {
            self.state.apply_wait_since = None;
            return MatchSafe::Apply { reload: true };
        }
        let replaces = plan.files.iter().any(|f| {
            matches!(
                f.action,
                plan::FileAction::Place(plan::PlaceReason::Changed | plan::PlaceReason::NotAFile)
            )
        });
        if !replaces && plan.remove.is_empty() && plan.config.write.is_none() {
            // Only new files: nothing plays them until the configuration
            // names them. No reload while the match is on.
            return MatchSafe::Apply { reload: false };
        }
        let now = self.now().now;
        let since = *self.state.apply_wait_since.get_or_insert(now);
        let changes = plan.place().count() + plan.remove.len();
        let what = match (changes, plan.config.write.is_some()) {
            (0, true) => "configuration.json".to_owned(),
            (n, true) => format!("{n} file(s) and configuration.json"),
            (n, false) => format!("{n} file(s)"),
        };
        let max = self.cfg.lock_max_wait;
        let waited = now.duration_since(since).as_secs();
        let over = waited >= i64::try_from(max.as_secs()).unwrap_or(i64::MAX);
        let why = format!(
            "{what} wait for the update lock {} (a match is on) since {}{}",
            self.cfg.update_lock.display(),
            since.strftime("%Y-%m-%d %H:%M:%S UTC"),
            if over {
                format!(": held for more than {max} (lock_max_wait)")
            } else {
                String::new()
            }
        );
        let severity = if over {
            Severity::Warning
        } else {
            Severity::Info
        };
        self.set_condition(&Item::Apply, severity, why.clone());
        MatchSafe::Wait(why)
    }

    /// Sets the condition of a failure (when it has one).
    fn fail(&mut self, e: &PassError) {
        if let Some(item) = e.item() {
            self.set_condition(&item, Severity::Error, e.to_string());
        }
    }

    async fn execute_files(
        &mut self,
        bundle: &Bundle,
        plan: &PassPlan,
        observed: &plan::Observed,
        dir: Option<&Path>,
        old_index: &crate::state::Index,
    ) -> Result<Option<String>, PassError> {
        for sha in &plan.evict {
            self.store.evict(sha);
        }
        if !matches!(plan.blocked, Some(Blocked::NoSpace { .. })) {
            self.clear_condition(&Item::Disk);
        }
        if let Some(blocked) = &plan.blocked {
            let e = PassError::from(blocked.clone());
            self.fail(&e);
            return Err(e);
        }
        if !plan.fetch.is_empty() {
            self.enter(Event::Fetch);
        }
        for f in &plan.fetch {
            let w = Wanted {
                sha256: f.sha256,
                size: f.size,
            };
            if let Err(source) = self.fetch_blob(w, &f.urls, dir).await {
                let e = if source.is_disk_full() {
                    PassError::DownloadDiskFull {
                        sha256: f.sha256,
                        source,
                    }
                } else {
                    PassError::Download {
                        sha256: f.sha256,
                        source,
                    }
                };
                self.fail(&e);
                return Err(e);
            }
            // Hashed while downloading: the index vouches for it now.
            let blob = self.store.blob(&f.sha256);
            if let Ok(stamp) = crate::state::Stamp::of(&blob) {
                self.index.files.insert(blob, (stamp, f.sha256));
            }
        }
        self.clear_condition(&Item::Fetch);
        // Conflicts: files the club put where the bundle wants ours.
        crate::condition::clear_files(&mut self.state.conditions);
        for c in plan.conflicts() {
            let message = match observed.targets.get(c) {
                Some(plan::Found::Occupied { at, what }) => format!(
                    "`{c}` not placed: `{}` is {what}, not a directory: not followed, left alone",
                    at.display()
                ),
                Some(plan::Found::NotAFile) => format!(
                    "`{c}` is not a regular file and was not placed by the agent: left alone"
                ),
                _ => format!("`{c}` exists and was not placed by the agent: left alone"),
            };
            self.set_condition(&Item::File(c.clone()), Severity::Warning, message);
        }
        self.clear_condition(&Item::Config);
        if let Some(what) = plan.config.occupied {
            self.set_condition(
                &Item::Config,
                Severity::Warning,
                format!(
                    "`{}` is {what}: not read or written through it, left alone",
                    self.cfg.config_path.display()
                ),
            );
        } else if !plan.config.drift.is_empty() {
            self.set_condition(
                &Item::Config,
                Severity::Warning,
                format!(
                    "configuration.json keys changed on the box and restored: {}",
                    plan.config.drift.join(", ")
                ),
            );
        }
        let changed = !plan.writes_nothing();
        // Downloads are done; what changes what plays waits for the match.
        let reload_now = if changed {
            match self.match_safe(plan) {
                MatchSafe::Apply { reload } => reload,
                MatchSafe::Wait(why) => return Ok(Some(why)),
            }
        } else {
            true
        };
        let serial_changes = self.state.applied_serial != Some(bundle.serial);
        if changed {
            self.enter(Event::Apply);
            // Write-ahead: record every path (and directory) this apply is
            // about to create as the agent's before touching the disk, so
            // that a kill between a rename and the end of the pass never
            // leaves one of our files looking like the club's.
            apply::claim(plan, &mut self.state, &self.cfg.videos_dir);
            if let Err(source) = self.paths.save_state(&self.disk, &self.state) {
                let e = PassError::Record(source);
                self.fail(&e);
                return Err(e);
            }
            self.disk = self.state.clone();
            self.host.before_apply();
            let store = self.store.clone();
            let result = apply::execute(
                plan,
                |s| store.blob(s),
                &mut self.state,
                &mut self.index,
                &self.cfg.videos_dir,
                &self.cfg.config_path,
            );
            if let Err(source) = result {
                let e = if source.is_disk_full() {
                    PassError::ApplyDiskFull(source)
                } else {
                    PassError::Apply(source)
                };
                self.fail(&e);
                self.save();
                return Err(e);
            }
        }
        self.clear_condition(&Item::Apply);
        self.state.applied_serial = Some(bundle.serial);
        self.state.applied_digest = Some(bundle.digest());
        self.save();
        if let Err(e) = self.paths.save_index(old_index, &self.index) {
            tracing::warn!(error = %e, "cannot save the stat index");
        }
        if (changed || serial_changes) && reload_now {
            self.run_reload().await;
        }
        if changed || serial_changes {
            // Keep what the bundle references (and the release package).
            let mut keep: Vec<_> = bundle.files.iter().map(|f| f.sha256).collect();
            if let Some(sw) = &bundle.software {
                keep.push(sw.sha256);
            }
            let freed = self.store.gc(&keep);
            self.store.clean_partials(&keep);
            if freed > 0 {
                tracing::info!(bytes = freed, "content store garbage-collected");
            }
            let mut idx = self.index.clone();
            idx.files.retain(|p, _| p.exists());
            if idx != self.index {
                let _ = self.paths.save_index(&self.index, &idx);
                self.index = idx;
            }
        }
        match plan.conflicts().count() + usize::from(plan.config.occupied.is_some()) {
            0 => Ok(None),
            count => Err(PassError::Conflicts { count }),
        }
    }

    /// Downloads one blob from the bundle directory, the controller, then
    /// the bundle's URLs; each downloaded chunk counts as progress for the
    /// watchdog.
    pub(crate) async fn fetch_blob(
        &mut self,
        w: Wanted,
        urls: &[String],
        dir: Option<&Path>,
    ) -> Result<(), crate::fetch::FetchError> {
        let limits = Limits {
            max_rate: self.download_cap(),
            min_rate: self.cfg.min_download_rate,
            window: self.cfg.download_watchdog.to_std(),
        };
        let sources = self.sources(&w.sha256, urls, dir);
        let (live, started) = (self.liveness.clone(), self.started);
        let mut progress = |_: u64| {
            live.store(started.elapsed().as_secs(), Ordering::Relaxed);
        };
        self.store
            .fetch(self.transport.as_ref(), w, &sources, limits, &mut progress)
            .await
    }

    /// The download cap: the lower of the box's own (`agent.toml`) and
    /// the one its manifests set (in the accepted bundle); 0 for none.
    fn download_cap(&self) -> u64 {
        let set = self
            .accepted()
            .and_then(|b| b.agent.max_download_rate)
            .unwrap_or(0);
        crate::fetch::lower_cap(self.cfg.max_download_rate, set)
    }

    async fn run_reload(&mut self) {
        if self.cfg.reload_command.is_empty() {
            return;
        }
        let out = self
            .host
            .run(HostCommand::new(&self.cfg.reload_command, RELOAD_TIMEOUT))
            .await;
        if out.ok {
            self.clear_condition(&Item::Reload);
        } else {
            self.set_condition(
                &Item::Reload,
                Severity::Warning,
                format!(
                    "reload_command failed: {}",
                    release::tail(out.output.trim(), 500)
                ),
            );
        }
    }

    /// The release step. `Ok(Some(why))`: staged, waiting; `Ok(None)`:
    /// nothing to do or switched.
    async fn execute_release(
        &mut self,
        bundle: &Bundle,
        action: &ReleaseAction,
        dir: Option<&Path>,
    ) -> Result<Option<String>, PassError> {
        let (want, record_health, step) = match action {
            ReleaseAction::None => {
                self.clear_condition(&Item::Release);
                return Ok(None);
            }
            ReleaseAction::Unmanaged(v) => {
                self.set_condition(
                    &Item::Release,
                    Severity::Warning,
                    format!(
                        "the bundle asks for release {v} but software_root is not set: releases are not installed on this box"
                    ),
                );
                return Ok(None);
            }
            ReleaseAction::Managed {
                want,
                record_health,
                step,
            } => (want, *record_health, step),
        };
        // Remember each release's health check (a rollback checks the old
        // release with its own).
        if record_health && let Some(r) = self.releases.as_mut() {
            r.state
                .health
                .insert(ReleaseName::from(&want.version), want.health_check.clone());
            release::save_state(&r.state_path, &r.state).map_err(|source| {
                ReleaseError::SaveState {
                    path: r.state_path.clone(),
                    source,
                }
            })?;
        }
        let r = self.release_step(bundle, want, step, dir).await;
        match &r {
            Ok(Some(waiting)) => {
                self.set_condition(&Item::Release, Severity::Info, waiting.clone());
            }
            Ok(None) => self.clear_condition(&Item::Release),
            Err(e) => {
                if let Some(item) = e.item() {
                    self.set_condition(&item, Severity::Error, e.to_string());
                }
            }
        }
        r.map_err(PassError::from)
    }

    async fn release_step(
        &mut self,
        bundle: &Bundle,
        want: &DesiredRelease,
        step: &ReleaseStep,
        dir: Option<&Path>,
    ) -> Result<Option<String>, ReleaseError> {
        let version = want.version.clone();
        let (stage, then) = match step {
            ReleaseStep::UpToDate => return Ok(None),
            ReleaseStep::HeldBack { message } => {
                return Err(ReleaseError::HeldBack {
                    message: message.clone(),
                });
            }
            ReleaseStep::Refused { message } => {
                return Err(ReleaseError::Refused {
                    message: message.clone(),
                });
            }
            ReleaseStep::Install { stage, then } => (stage, then),
        };
        match stage {
            Stage::Staged => {}
            Stage::Unpack => self.unpack(want).await?,
            Stage::Fetch => {
                self.enter(Event::Fetch);
                let w = Wanted {
                    sha256: want.sha256,
                    size: want.size,
                };
                self.fetch_blob(w, &want.urls, dir)
                    .await
                    .map_err(|source| ReleaseError::Download {
                        version: version.clone(),
                        source,
                    })?;
                self.unpack(want).await?;
            }
        }
        let now = self.now().now;
        let first_install = match then {
            Then::WaitWindow => {
                return Ok(Some(format!(
                    "release {version} staged, waiting for the maintenance window {} ({})",
                    bundle.agent.maintenance_window, bundle.agent.timezone
                )));
            }
            Then::WindowError(error) => {
                return Err(ReleaseError::Window {
                    version,
                    error: error.clone(),
                });
            }
            Then::WaitLock { since } => return Ok(Some(self.lock_held(&version, *since))),
            Then::LockError { path, error } => {
                return Err(ReleaseError::Lock {
                    version,
                    path: path.clone(),
                    error: error.clone(),
                });
            }
            Then::Switch { first_install } => *first_install,
        };
        // The update lock, held by the local app during a match; ours for
        // the length of the switch (it may have been taken since it was
        // seen free).
        let lock = match try_lock(&self.cfg.update_lock) {
            Ok(Some(guard)) => guard,
            Ok(None) => return Ok(Some(self.lock_held(&version, now))),
            Err(e) => {
                return Err(ReleaseError::Lock {
                    version,
                    path: self.cfg.update_lock.clone(),
                    error: e.to_string(),
                });
            }
        };
        if let Some(r) = self.releases.as_mut() {
            r.lock_since = None;
        }
        tracing::info!(release = %version, first_install, "switching");
        self.enter(Event::Switch);
        // A box whose software ran from a plain `current` directory.
        if let Some(r) = self.releases.as_mut() {
            match r.layout.adopt_plain_current(now) {
                Ok(Some(name)) => {
                    tracing::info!(release = %name, "adopted the plain `current` directory");
                }
                Ok(None) => {}
                Err(source) => return Err(ReleaseError::Adopt { version, source }),
            }
        }
        let v = ReleaseName::from(&version);
        let result = self
            .switcher_run(
                Op::Switch {
                    to: v.clone(),
                    serial: Some(bundle.serial),
                },
                now,
            )
            .await;
        drop(lock);
        match result {
            Ok(None | Some(SwitchResult::Committed)) => {
                self.prune_releases(Some(&v));
                Ok(None)
            }
            Ok(Some(SwitchResult::RolledBack(rb))) => Err(ReleaseError::RolledBack(rb)),
            Err(e) => Err(ReleaseError::Switch(e)),
        }
    }

    /// Remembers since when the lock is held; the waiting message.
    fn lock_held(
        &mut self,
        version: &touchline_schemas::ReleaseVersion,
        now: jiff::Timestamp,
    ) -> String {
        let since = match self.releases.as_mut() {
            Some(r) => *r.lock_since.get_or_insert(now),
            None => now,
        };
        format!(
            "release {version} staged, waiting: update lock held since {}",
            since.strftime("%Y-%m-%d %H:%M:%S UTC")
        )
    }

    /// Unpacks the package (in the store) into `releases/<v>.partial`,
    /// renamed when whole.
    async fn unpack(&mut self, want: &DesiredRelease) -> Result<(), ReleaseError> {
        let version = want.version.clone();
        let Some(r) = self.releases.as_ref() else {
            return Ok(());
        };
        let v = ReleaseName::from(&version);
        let dest = r.layout.dir(&v);
        let layout = r.layout.clone();
        let (staging, name) = (Layout::partial_name(&v), v.as_str().to_owned());
        let blob = self.store.blob(&want.sha256);
        let limits = unpack::Limits {
            max_bytes: self.cfg.max_unpacked_bytes,
            max_entries: self.cfg.max_package_entries,
        };
        let format = want.format;
        self.alive();
        let unpacked = tokio::task::spawn_blocking(move || -> Result<(), UnpackFailure> {
            // By handle: a leftover (or a symlink) at the staging name is
            // removed, never followed.
            let releases = layout.create_releases_dir().map_err(UnpackFailure::Sync)?;
            releases
                .remove_tree(&staging)
                .map_err(|e| UnpackFailure::Sync(e.into()))?;
            unpack::unpack_into(&blob, format, &releases, &staging, limits)?;
            fsx::crash_point("release-unpacked");
            releases.rename(&staging, &name).map_err(|source| {
                let _ = releases.remove_tree(&staging);
                UnpackFailure::Rename {
                    dest,
                    source: source.into(),
                }
            })?;
            releases.sync().map_err(|e| UnpackFailure::Sync(e.into()))
        })
        .await
        .unwrap_or_else(|e| Err(UnpackFailure::Stopped(e)));
        self.alive();
        unpacked.map_err(|source| ReleaseError::Unpack { version, source })?;
        tracing::info!(release = %v, "release staged");
        Ok(())
    }
}
