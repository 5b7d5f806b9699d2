//! The software step of a pass (DESIGN.md, step 4): stage the bundle's
//! release any time (fetch the package into the content store, unpack it
//! checked), switch only inside the maintenance window (unless the release
//! is `urgent`) and while nobody holds the update lock; then health check,
//! commit or roll back ([`crate::release`]). Also the manual `rollback` and
//! `retry-release` commands.

use std::path::PathBuf;
use std::sync::atomic::Ordering;

use jiff::Timestamp;
use touchline_schemas::report::{RollbackReport, Severity, SoftwareStatus};
use touchline_schemas::{Bundle, ReleaseVersion};

use super::Agent;
use crate::condition::Item;
use crate::error::ReleaseError;
use crate::phase::Event;
use crate::release::{
    self, Layout, ReleaseName, ReleaseState, Rollback, SwitchError, SwitchResult, Switcher,
    load_state,
};

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
    pub(crate) lock_since: Option<Timestamp>,
    /// Leftovers of an interrupted unpack were removed.
    prepared: bool,
    /// Why the staged release waits (last pass).
    pub(crate) waiting: Option<String>,
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
pub(crate) enum Op {
    /// Finish or undo an interrupted switch.
    Recover,
    /// Switch to a staged release.
    Switch {
        /// The release.
        to: ReleaseName,
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
            current: r.layout.current().map(String::from),
            desired: accepted
                .and_then(|b| b.software.as_ref())
                .map(|s| s.version.clone()),
            installed: r.layout.installed().into_iter().map(String::from).collect(),
            waiting: r.waiting.clone(),
            held_back: r.state.blocked.as_ref().map(|(v, _)| v.to_string()),
            last_rollback: r.state.last_rollback.as_ref().map(|rb| RollbackReport {
                from: rb.from.to_string(),
                to: rb.to.as_ref().map(ToString::to_string),
                at: rb.at,
                output: rb.output.clone(),
            }),
        })
    }

    /// The release `current` points at, as a version.
    pub(crate) fn running_release(&self) -> Option<ReleaseVersion> {
        let r = self.releases.as_ref()?;
        r.layout.current()?.version()
    }

    /// Reloads `release.json`, removes `.partial` leftovers (first pass),
    /// and finishes or undoes a switch a power cut interrupted.
    pub(crate) async fn recover_release(&mut self) -> Result<(), ReleaseError> {
        let Some(r) = self.releases.as_mut() else {
            return Ok(());
        };
        r.state = load_state(&r.state_path)?;
        if !r.prepared {
            r.layout.prepare().map_err(|source| SwitchError::Prepare {
                path: r.layout.releases(),
                source,
            })?;
            r.prepared = true;
        }
        if r.state.journal.is_none() {
            return Ok(());
        }
        self.enter(Event::Switch);
        let now = self.now().now;
        let result = match self.switcher_run(Op::Recover, now).await {
            Ok(Some(SwitchResult::RolledBack(rb))) => Err(ReleaseError::RolledBack(rb)),
            Ok(_) => Ok(()),
            Err(e) => Err(ReleaseError::Switch(e)),
        };
        if let Err(e) = &result {
            self.set_condition(&Item::Release, Severity::Error, e.to_string());
        }
        result
    }

    /// Runs one [`Op`] with a [`Switcher`] over this agent's releases.
    pub(crate) async fn switcher_run(
        &mut self,
        op: Op,
        now: Timestamp,
    ) -> Result<Option<SwitchResult>, SwitchError> {
        let Some(r) = self.releases.as_mut() else {
            return Err(SwitchError::NoSoftwareRoot);
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
            host: self.host.as_ref(),
            tick: &tick,
        };
        match op {
            Op::Recover => switcher.recover(now).await,
            Op::Switch { to, serial } => switcher.switch(&to, serial, now).await.map(Some),
        }
    }

    /// Keeps the `keep_releases` most recent; never the current one, the
    /// previous one, or `also`.
    pub(crate) fn prune_releases(&mut self, also: Option<&ReleaseName>) {
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
            .find(|h| Some(*h) != current.as_ref())
            .cloned();
        let protect: Vec<&ReleaseName> = [current.as_ref(), previous.as_ref(), also]
            .into_iter()
            .flatten()
            .collect();
        let removed = r.layout.prune(&r.state.history, keep, &protect);
        if !removed.is_empty() {
            tracing::info!(removed = ?removed, "old releases removed");
        }
    }

    /// `touchline-agent rollback`: back to the previous release, health
    /// checked. The release rolled back from is held back for the current
    /// serial, so the next pass does not switch to it again.
    pub async fn manual_rollback(&mut self) -> Manual {
        let _pass = self.pass_lock().await;
        if let Err(e) = self.recover_release().await {
            return Manual::Failed(e.to_string());
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
                    .max_by(|a, b| match (a.version(), b.version()) {
                        (Some(a), Some(b)) => a.cmp(&b),
                        _ => a.cmp(b),
                    })
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
                self.set_condition(&Item::Release, Severity::Warning, msg.clone());
                Manual::Done(format!(
                    "{msg}; {current} stays held back until a new commit or `touchline-agent retry-release`"
                ))
            }
            Ok(Some(SwitchResult::RolledBack(rb))) => Manual::Failed(format!(
                "{previous} failed its health check; back on {current}: {}",
                rb.output
            )),
            Err(e) => Manual::Failed(e.to_string()),
        };
        self.save();
        outcome
    }

    /// `touchline-agent retry-release`: lifts the hold on a release that
    /// was rolled back, so the next pass tries it again.
    pub async fn retry_release(&mut self) -> Manual {
        let _pass = self.pass_lock().await;
        if let Err(e) = self.recover_release().await {
            return Manual::Failed(e.to_string());
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
        self.clear_condition(&Item::Release);
        self.save();
        Manual::Done(format!(
            "release {v} (serial {serial}) will be tried again at the next pass (`touchline-agent once` runs one now)"
        ))
    }
}
