//! The software step of a pass (DESIGN.md, step 4): stage the bundle's
//! release any time (fetch the package into the content store, unpack it
//! checked), switch only inside the maintenance window (unless the release
//! is `urgent`) and while nobody holds the update lock; then health check,
//! commit or roll back ([`crate::release`]). Also the manual `rollback` and
//! `retry-release` commands.

use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;

use jiff::Timestamp;
use touchline_schemas::bundle::DesiredRelease;
use touchline_schemas::report::{Phase, RollbackReport, Severity, SoftwareStatus};
use touchline_schemas::{Bundle, ReleaseVersion};

use super::Agent;
use crate::fetch::{Limits, Wanted};
use crate::fsx;
use crate::release::{
    self, Layout, ReleaseState, Rollback, SwitchResult, Switcher, load_state, try_lock, window_open,
};
use crate::unpack;

/// The agent's view of its releases.
#[derive(Debug)]
pub struct Releases {
    /// `software_root`.
    pub layout: Layout,
    /// `state_dir/release.json`.
    pub state_path: PathBuf,
    /// Its content, reloaded at the start of every pass (the `rollback`
    /// and `retry-release` commands change it from another process).
    pub state: ReleaseState,
    /// Since when the update lock is seen held.
    lock_since: Option<Timestamp>,
    /// Leftovers of an interrupted unpack were removed.
    prepared: bool,
    /// Why the staged release waits (last pass).
    waiting: Option<String>,
}

impl Releases {
    /// For `software_root`.
    pub fn new(root: PathBuf, state_path: PathBuf) -> Self {
        Self {
            layout: Layout { root },
            state_path,
            state: ReleaseState::default(),
            lock_since: None,
            prepared: false,
            waiting: None,
        }
    }
}

/// What a [`Switcher`] is asked to do.
enum Op {
    /// Finish or undo an interrupted switch.
    Recover,
    /// Switch to a staged release.
    Switch {
        /// The release.
        to: String,
        /// The serial that asks for it (`None`: by hand).
        serial: Option<u64>,
    },
}

/// How a manual command ended.
#[derive(Debug)]
pub enum Manual {
    /// Done; what to print.
    Done(String),
    /// Failed; why.
    Failed(String),
}

impl Agent {
    /// Waits for the state directory's pass lock (`state_dir/agent.lock`):
    /// one pass at a time, across processes.
    pub(crate) async fn pass_lock(&self) -> Option<std::fs::File> {
        let path = self.paths.root.join("agent.lock");
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .ok()?;
        let mut said = false;
        loop {
            match rustix::fs::flock(&file, rustix::fs::FlockOperation::NonBlockingLockExclusive) {
                Ok(()) => return Some(file),
                Err(e) if e == rustix::io::Errno::WOULDBLOCK => {
                    if !said {
                        tracing::info!("another touchline-agent is in a pass; waiting for it");
                        said = true;
                    }
                    self.alive();
                    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "cannot lock {}", path.display());
                    return None;
                }
            }
        }
    }

    /// The software part of a report.
    pub(crate) fn software_status(&self, accepted: Option<&Bundle>) -> Option<SoftwareStatus> {
        let r = self.releases.as_ref()?;
        Some(SoftwareStatus {
            current: r.layout.current(),
            desired: accepted
                .and_then(|b| b.software.as_ref())
                .map(|s| s.version.clone()),
            installed: r.layout.installed(),
            waiting: r.waiting.clone(),
            held_back: r.state.blocked.as_ref().map(|(v, _)| v.clone()),
            last_rollback: r.state.last_rollback.as_ref().map(|rb| RollbackReport {
                from: rb.from.clone(),
                to: rb.to.clone(),
                at: rb.at,
                output: rb.output.clone(),
            }),
        })
    }

    /// The release `current` points at, as a version.
    pub(crate) fn running_release(&self) -> Option<ReleaseVersion> {
        let r = self.releases.as_ref()?;
        ReleaseVersion::new(&r.layout.current()?).ok()
    }

    /// Reloads `release.json`, removes `.partial` leftovers (first pass),
    /// and finishes or undoes a switch a power cut interrupted.
    pub(crate) async fn recover_release(&mut self) -> Result<(), String> {
        let Some(r) = self.releases.as_mut() else {
            return Ok(());
        };
        r.state = load_state(&r.state_path)?;
        if !r.prepared {
            r.layout
                .prepare()
                .map_err(|e| format!("cannot prepare `{}`: {e}", r.layout.releases().display()))?;
            r.prepared = true;
        }
        if r.state.journal.is_none() {
            return Ok(());
        }
        self.phase = Phase::Updating;
        let now = self.now().now;
        let result = self.switcher_run(Op::Recover, now).await;
        match result {
            Ok(Some(SwitchResult::RolledBack(rb))) => {
                let msg = rollback_message(&rb);
                self.set_condition("release", Severity::Error, msg.clone());
                Err(msg)
            }
            Ok(_) => Ok(()),
            Err(e) => {
                self.set_condition("release", Severity::Error, e.clone());
                Err(e)
            }
        }
    }

    /// Runs one [`Op`] with a [`Switcher`] over this agent's releases.
    async fn switcher_run(
        &mut self,
        op: Op,
        now: Timestamp,
    ) -> Result<Option<SwitchResult>, String> {
        let Some(r) = self.releases.as_mut() else {
            return Err("software_root is not set in the configuration".into());
        };
        let (live, started) = (self.liveness.clone(), self.started);
        let tick = move || live.store(started.elapsed().as_secs(), Ordering::Relaxed);
        let mut switcher = Switcher {
            layout: &r.layout,
            state_path: &r.state_path,
            state: &mut r.state,
            stop: &self.cfg.stop_command,
            start: &self.cfg.start_command,
            client: &self.client,
            tick: &tick,
        };
        match op {
            Op::Recover => switcher.recover(now).await,
            Op::Switch { to, serial } => switcher.switch(&to, serial, now).await.map(Some),
        }
    }

    /// The software step. `Ok(Some(why))`: staged, waiting; `Ok(None)`:
    /// nothing to do or switched; `Err`: refused, failed or rolled back.
    pub(crate) async fn software(
        &mut self,
        bundle: &Bundle,
        dir: Option<&Path>,
    ) -> Result<Option<String>, String> {
        let r = self.software_step(bundle, dir).await;
        if let Some(rel) = self.releases.as_mut() {
            rel.waiting = r.as_ref().ok().and_then(Clone::clone);
        }
        r
    }

    async fn software_step(
        &mut self,
        bundle: &Bundle,
        dir: Option<&Path>,
    ) -> Result<Option<String>, String> {
        let Some(want) = bundle.software.clone() else {
            self.clear_condition("release");
            return Ok(None);
        };
        let v = want.version.to_string();
        let Some(r) = self.releases.as_mut() else {
            self.set_condition(
                "release",
                Severity::Warning,
                format!(
                    "the bundle asks for release {v} but software_root is not set: releases are not installed on this box"
                ),
            );
            return Ok(None);
        };
        // Remember each release's health check (a rollback checks the old
        // release with its own).
        if r.state.health.get(&v) != Some(&want.health_check) {
            r.state.health.insert(v.clone(), want.health_check.clone());
            release::save_state(&r.state_path, &r.state)
                .map_err(|e| format!("cannot write `{}`: {e}", r.state_path.display()))?;
        }
        if r.layout.current().as_deref() == Some(v.as_str()) {
            self.clear_condition("release");
            return Ok(None);
        }
        if r.state.blocked.as_ref() == Some(&(v.clone(), bundle.serial)) {
            let msg = match &r.state.last_rollback {
                Some(rb) if rb.from == v => format!(
                    "{}; not retried for serial {} (a new commit, or `touchline-agent retry-release`, tries again)",
                    rollback_message(rb),
                    bundle.serial
                ),
                _ => format!(
                    "release {v} is held back for serial {} (`touchline-agent retry-release` tries again)",
                    bundle.serial
                ),
            };
            self.set_condition("release", Severity::Error, msg.clone());
            return Err(msg);
        }
        if !r.layout.staged(&v) {
            self.stage(&want, dir).await?;
        }
        // The maintenance window, in the box's local time (time floor
        // clock), unless the release is urgent or nothing runs yet (a first
        // install interrupts no screen).
        let now = self.now().now;
        let first_install = self.releases.as_ref().is_some_and(|r| {
            r.layout.current().is_none()
                && std::fs::symlink_metadata(r.layout.current_link()).is_err()
        });
        if !want.urgent && !first_install {
            let open = window_open(
                &bundle.agent.maintenance_window,
                &bundle.agent.timezone,
                now,
            )
            .map_err(|e| {
                let msg = format!("release {v}: cannot evaluate the maintenance window: {e}");
                self.set_condition("release", Severity::Error, msg.clone());
                msg
            })?;
            if !open {
                let msg = format!(
                    "release {v} staged, waiting for the maintenance window {} ({})",
                    bundle.agent.maintenance_window, bundle.agent.timezone
                );
                self.set_condition("release", Severity::Info, msg.clone());
                return Ok(Some(msg));
            }
        }
        // The update lock, held by the local app during a match; ours for
        // the length of the switch.
        let lock = match try_lock(&self.cfg.update_lock) {
            Ok(Some(guard)) => guard,
            Ok(None) => {
                let since = match self.releases.as_mut() {
                    Some(r) => *r.lock_since.get_or_insert(now),
                    None => now,
                };
                let msg = format!(
                    "release {v} staged, waiting: update lock held since {}",
                    since.strftime("%Y-%m-%d %H:%M:%S UTC")
                );
                self.set_condition("release", Severity::Info, msg.clone());
                return Ok(Some(msg));
            }
            Err(e) => {
                let msg = format!(
                    "release {v}: cannot check the update lock `{}`: {e}",
                    self.cfg.update_lock.display()
                );
                self.set_condition("release", Severity::Error, msg.clone());
                return Err(msg);
            }
        };
        if let Some(r) = self.releases.as_mut() {
            r.lock_since = None;
        }
        self.phase = Phase::Updating;
        // A box whose software ran from a plain `current` directory.
        if let Some(r) = self.releases.as_mut() {
            match r.layout.adopt_plain_current(now) {
                Ok(Some(name)) => {
                    tracing::info!(release = %name, "adopted the plain `current` directory");
                }
                Ok(None) => {}
                Err(e) => {
                    let msg = format!("release {v}: cannot adopt the existing `current`: {e}");
                    self.set_condition("release", Severity::Error, msg.clone());
                    return Err(msg);
                }
            }
        }
        let serial = bundle.serial;
        let result = self
            .switcher_run(
                Op::Switch {
                    to: v.clone(),
                    serial: Some(serial),
                },
                now,
            )
            .await;
        drop(lock);
        match result {
            Ok(None | Some(SwitchResult::Committed)) => {
                self.prune_releases(Some(&v));
                self.clear_condition("release");
                Ok(None)
            }
            Ok(Some(SwitchResult::RolledBack(rb))) => {
                let msg = rollback_message(&rb);
                self.set_condition("release", Severity::Error, msg.clone());
                Err(msg)
            }
            Err(e) => {
                self.set_condition("release", Severity::Error, e.clone());
                Err(e)
            }
        }
    }

    /// Keeps the `keep_releases` most recent; never the current one, the
    /// previous one, or `also`.
    fn prune_releases(&mut self, also: Option<&str>) {
        let keep = self.cfg.keep_releases;
        let Some(r) = self.releases.as_mut() else {
            return;
        };
        let current = r.layout.current();
        let previous = r
            .state
            .history
            .iter()
            .rev()
            .find(|h| Some(h.as_str()) != current.as_deref())
            .cloned();
        let protect: Vec<&str> = [current.as_deref(), previous.as_deref(), also]
            .into_iter()
            .flatten()
            .collect();
        let removed = r.layout.prune(&r.state.history, keep, &protect);
        if !removed.is_empty() {
            tracing::info!(removed = ?removed, "old releases removed");
        }
    }

    /// Fetches the package into the content store and unpacks it into
    /// `releases/<version>.partial`, renamed when whole.
    async fn stage(&mut self, want: &DesiredRelease, dir: Option<&Path>) -> Result<(), String> {
        let v = want.version.to_string();
        let fail = |agent: &mut Self, msg: String| {
            agent.set_condition("release", Severity::Error, msg.clone());
            msg
        };
        let w = Wanted {
            sha256: want.sha256,
            size: want.size,
        };
        if !self.store.has(&w) {
            if w.size > self.cfg.max_download_bytes {
                return Err(fail(
                    self,
                    format!(
                        "release {v}: the package is {} bytes, over max_download_bytes ({})",
                        w.size, self.cfg.max_download_bytes
                    ),
                ));
            }
            let have = fsx::available_space(&self.paths.cas()).unwrap_or(u64::MAX);
            let need = w.size.saturating_add(self.cfg.space_reserve_bytes);
            if need > have {
                return Err(fail(
                    self,
                    format!(
                        "not enough space: need {}, have {} (release {v} package)",
                        fsx::human_bytes(need),
                        fsx::human_bytes(have)
                    ),
                ));
            }
            self.phase = Phase::Fetching;
            let sources = self.sources(&want.sha256, &want.urls, dir);
            let limits = Limits {
                max_rate: self.cfg.max_download_rate,
                min_rate: self.cfg.min_download_rate,
                window: self.cfg.download_watchdog.to_std(),
            };
            let store = self.store.clone();
            let (live, started) = (self.liveness.clone(), self.started);
            let mut progress = |_: u64| {
                live.store(started.elapsed().as_secs(), Ordering::Relaxed);
            };
            if let Err(e) = store
                .fetch(&self.client, w, &sources, limits, &mut progress)
                .await
            {
                return Err(fail(
                    self,
                    format!("release {v}: download of the package failed: {e}"),
                ));
            }
        }
        let Some(r) = self.releases.as_ref() else {
            return Ok(());
        };
        let partial = r.layout.partial(&v);
        let dest = r.layout.dir(&v);
        let releases_dir = r.layout.releases();
        let _ = std::fs::remove_dir_all(&partial);
        let blob = self.store.blob(&want.sha256);
        let limits = unpack::Limits {
            max_bytes: self.cfg.max_unpacked_bytes,
            max_entries: self.cfg.max_package_entries,
        };
        let format = want.format;
        self.alive();
        let unpacked = tokio::task::spawn_blocking(move || -> Result<(), String> {
            unpack::unpack(&blob, format, &partial, limits).map_err(|e| e.to_string())?;
            fsx::crash_point("release-unpacked");
            std::fs::rename(&partial, &dest).map_err(|e| {
                let _ = std::fs::remove_dir_all(&partial);
                format!("cannot rename into `{}`: {e}", dest.display())
            })?;
            fsx::sync_dir(&releases_dir).map_err(|e| e.to_string())
        })
        .await
        .unwrap_or_else(|e| Err(format!("unpacking stopped: {e}")));
        self.alive();
        unpacked.map_err(|e| fail(self, format!("release {v}: package refused: {e}")))?;
        tracing::info!(release = %v, "release staged");
        Ok(())
    }

    /// `touchline-agent rollback`: back to the previous release, health
    /// checked. The release rolled back from is held back for the current
    /// serial, so the next pass does not switch to it again.
    pub async fn manual_rollback(&mut self) -> Manual {
        let _pass = self.pass_lock().await;
        if let Err(e) = self.recover_release().await {
            return Manual::Failed(e);
        }
        let Some(r) = self.releases.as_ref() else {
            return Manual::Failed("software_root is not set in the configuration".into());
        };
        let Some(current) = r.layout.current() else {
            return Manual::Failed(format!(
                "`{}` does not point at a release: nothing to roll back",
                r.layout.current_link().display()
            ));
        };
        let previous = r
            .state
            .history
            .iter()
            .rev()
            .find(|h| **h != current && r.layout.staged(h))
            .cloned()
            .or_else(|| {
                r.layout
                    .installed()
                    .into_iter()
                    .filter(|h| *h != current)
                    .max_by(
                        |a, b| match (ReleaseVersion::new(a), ReleaseVersion::new(b)) {
                            (Ok(a), Ok(b)) => a.cmp(&b),
                            _ => a.cmp(b),
                        },
                    )
            });
        let Some(previous) = previous else {
            return Manual::Failed(format!(
                "no release other than {current} is installed: nothing to roll back to"
            ));
        };
        let now = self.now().now;
        let serial = self.accepted().map(|b| b.serial);
        let result = self
            .switcher_run(
                Op::Switch {
                    to: previous.clone(),
                    serial: None,
                },
                now,
            )
            .await;
        let outcome = match result {
            Ok(None | Some(SwitchResult::Committed)) => {
                if let Some(r) = self.releases.as_mut() {
                    if let Some(s) = serial {
                        r.state.blocked = Some((current.clone(), s));
                    }
                    r.state.last_rollback = Some(Rollback {
                        from: current.clone(),
                        to: Some(previous.clone()),
                        serial,
                        at: now,
                        output: "manual rollback (touchline-agent rollback)".into(),
                    });
                    if let Err(e) = release::save_state(&r.state_path, &r.state) {
                        return Manual::Failed(format!("cannot write release.json: {e}"));
                    }
                }
                let msg = format!("rolled back by hand from {current} to {previous}");
                self.set_condition("release", Severity::Warning, msg.clone());
                Manual::Done(format!(
                    "{msg}; {current} stays held back until a new commit or `touchline-agent retry-release`"
                ))
            }
            Ok(Some(SwitchResult::RolledBack(rb))) => Manual::Failed(format!(
                "{previous} failed its health check; back on {current}: {}",
                rb.output
            )),
            Err(e) => Manual::Failed(e),
        };
        self.save();
        outcome
    }

    /// `touchline-agent retry-release`: lifts the hold on a release that
    /// was rolled back, so the next pass tries it again.
    pub async fn retry_release(&mut self) -> Manual {
        let _pass = self.pass_lock().await;
        if let Err(e) = self.recover_release().await {
            return Manual::Failed(e);
        }
        let Some(r) = self.releases.as_mut() else {
            return Manual::Failed("software_root is not set in the configuration".into());
        };
        let Some((v, serial)) = r.state.blocked.take() else {
            return Manual::Done("no release is held back".into());
        };
        if let Err(e) = release::save_state(&r.state_path, &r.state) {
            return Manual::Failed(format!("cannot write release.json: {e}"));
        }
        self.clear_condition("release");
        self.save();
        Manual::Done(format!(
            "release {v} (serial {serial}) will be tried again at the next pass (`touchline-agent once` runs one now)"
        ))
    }
}

/// `rolled back from <v>: <output>`.
fn rollback_message(rb: &Rollback) -> String {
    format!(
        "rolled back from {} to {}: {}",
        rb.from,
        rb.to.as_deref().unwrap_or("(none)"),
        rb.output.trim()
    )
}
