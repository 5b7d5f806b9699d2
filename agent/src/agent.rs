//! The reconcile pass and the daemon loop.
//!
//! A pass: pull (or read a bundle directory) → verify (DESIGN.md order) →
//! fetch what the store lacks (free space checked first) → apply (only when
//! everything is fetched) → reload hook → garbage-collect the store →
//! report. Any failure leaves the box on what it has; the reason becomes a
//! condition and `last_error`.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use jiff::{SignedDuration, Timestamp};
use touchline_schemas::report::{Condition, Phase, Report, Severity, Status};
use touchline_schemas::{Bundle, BundleError, Expectations, Sha256, verify_bundle};

use crate::apply;
use crate::clock::{Clock, TrustedNow, trusted_now};
use crate::config::Config;
use crate::fetch::{self, Limits, Source, Wanted};
use crate::fsx;
use crate::metrics::{self, CpuSample};
use crate::phase;
use crate::pull::{Backoff, Controller, PullError, Pulled};
use crate::queue::Queue;
use crate::state::{Index, Paths, State};

mod software;
pub use software::{Manual, Releases};

/// Report sequence numbers reserved per write of `state.json`.
const SEQ_BLOCK: u64 = 1000;
/// Reports per batch when the queue drains.
const BATCH: usize = 200;

/// A fatal start-up problem.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// State files.
    #[error(transparent)]
    State(#[from] crate::state::StateError),
    /// HTTP client.
    #[error("cannot build the HTTP client: {0}")]
    Client(String),
}

/// Where a bundle comes from in this pass.
#[derive(Debug, Clone)]
pub enum Origin {
    /// The controller.
    Controller {
        /// Long-poll duration.
        wait: Option<Duration>,
    },
    /// A directory (USB stick): `bundle.json` (or `<site>.json`), its
    /// `.sig`, and `content/<sha256>`.
    Dir(PathBuf),
}

/// The result of a pass.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The accepted bundle is applied (with the controller's current one
    /// when the controller was asked).
    Converged,
    /// Not converged, and why.
    NotConverged(String),
    /// Everything applied but a staged release, which waits for the
    /// maintenance window or the update lock (why).
    Waiting(String),
}

/// The agent.
pub struct Agent {
    /// Configuration.
    pub cfg: Config,
    /// State paths.
    pub paths: Paths,
    pub(crate) store: fetch::Store,
    pub(crate) controller: Option<Controller>,
    pub(crate) client: reqwest::Client,
    pub(crate) clock: Box<dyn Clock>,
    /// The state (written to `state.json` by `save`).
    pub state: State,
    /// What `state.json` holds.
    disk: State,
    index: Index,
    queue: Queue,
    seq: u64,
    cpu: Option<CpuSample>,
    server_offset: Option<SignedDuration>,
    pub(crate) phase: Phase,
    last_reported_phase: Option<Phase>,
    backoff: Backoff,
    /// Monotonic seconds of the last sign of progress (loop turn,
    /// downloaded bytes): the systemd watchdog is pinged only while it moves.
    pub liveness: Arc<AtomicU64>,
    pub(crate) started: std::time::Instant,
    /// The controller's last `Retry-After`.
    retry_after: Option<Duration>,
    /// What the last report said (to skip unchanged heartbeats).
    last_sent: Option<String>,
    /// Software releases, when `software_root` is set.
    pub(crate) releases: Option<software::Releases>,
}

impl std::fmt::Debug for Agent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Agent")
            .field("site", &self.cfg.site_id)
            .field("phase", &self.phase)
            .finish_non_exhaustive()
    }
}

/// The HTTP client for downloads, with the configured connect and read
/// timeouts (rustls + ring).
pub fn http_client(cfg: &Config) -> Result<reqwest::Client, AgentError> {
    client_builder(cfg)
        .read_timeout(cfg.read_timeout.to_std())
        .build()
        .map_err(|e| AgentError::Client(fetch::error_text(&e)))
}

/// The client for the controller's API: no read timeout (a long-poll is
/// silent for minutes); each request carries its own total timeout.
fn api_client(cfg: &Config) -> Result<reqwest::Client, AgentError> {
    client_builder(cfg)
        .build()
        .map_err(|e| AgentError::Client(fetch::error_text(&e)))
}

fn client_builder(cfg: &Config) -> reqwest::ClientBuilder {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
        .connect_timeout(cfg.connect_timeout.to_std())
        .tls_certs_merge(cfg.extra_roots.iter().cloned())
        .user_agent(concat!("touchline-agent/", env!("CARGO_PKG_VERSION")))
}

impl Agent {
    /// Opens the state, cleans what a crash left behind.
    pub fn open(cfg: Config, clock: Box<dyn Clock>) -> Result<Self, AgentError> {
        let paths = Paths {
            root: cfg.state_dir.clone(),
        };
        let paths_root = paths.root.clone();
        paths.create()?;
        let mut state = paths.load_state()?;
        let index = paths.load_index();
        let client = http_client(&cfg)?;
        let controller = match (&cfg.controller_url, &cfg.token) {
            (Some(base), Some(token)) => Some(Controller {
                client: api_client(&cfg)?,
                base: base.clone(),
                site: cfg.site_id.clone(),
                token: token.clone(),
            }),
            _ => None,
        };
        apply::clean_temps(&cfg.videos_dir, &cfg.config_path);
        // Reserve a block of report sequence numbers.
        let old = state.clone();
        let seq = state.next_seq.max(1);
        state.next_seq = seq + SEQ_BLOCK;
        paths.save_state(&old, &state)?;
        let queue = Queue::new(paths.queue(), cfg.report_queue_max);
        let disk = state.clone();
        Ok(Self {
            store: fetch::Store::new(paths.clone()),
            paths,
            controller,
            client,
            clock,
            state,
            index,
            queue,
            seq,
            cpu: metrics::cpu_sample(),
            disk,
            server_offset: None,
            phase: Phase::Starting,
            last_reported_phase: None,
            backoff: Backoff::default(),
            liveness: Arc::default(),
            started: std::time::Instant::now(),
            retry_after: None,
            last_sent: None,
            releases: cfg
                .software_root
                .clone()
                .map(|root| software::Releases::new(root, paths_root.join("release.json"))),
            cfg,
        })
    }

    /// The time the agent believes.
    pub fn now(&self) -> TrustedNow {
        let accepted = self.accepted().map(|b| b.issued_at);
        let floor = self
            .state
            .time_floor
            .into_iter()
            .chain(accepted)
            .max()
            .unwrap_or(Timestamp::UNIX_EPOCH);
        trusted_now(self.clock.now(), floor, self.server_offset)
    }

    /// The accepted bundle on disk, re-verified (signature only: an expired
    /// bundle keeps running).
    pub fn accepted(&self) -> Option<Bundle> {
        let (body, sig) = self.paths.load_accepted()?;
        self.cfg.trusted_keys.verify(&body, &sig).ok()?;
        let b = Bundle::from_slice(&body).ok()?;
        (b.site == self.cfg.site_id).then_some(b)
    }

    fn accepted_etag(&self) -> Option<String> {
        let (body, _) = self.paths.load_accepted()?;
        Some(format!("\"{}\"", Sha256::digest(&body).to_hex()))
    }

    /// Records progress for the watchdog.
    pub fn alive(&self) {
        self.liveness
            .store(self.started.elapsed().as_secs(), Ordering::Relaxed);
    }

    /// Seconds since start of the last progress, and since start now.
    pub fn liveness_probe(&self) -> (Arc<AtomicU64>, std::time::Instant) {
        (self.liveness.clone(), self.started)
    }

    /// The current phase.
    pub fn phase(&self) -> Phase {
        self.phase
    }

    /// Writes `state.json` when something that matters changed. The
    /// contact time and the time floor alone are written at most hourly, so
    /// that a no-op cycle does not write to the SD card.
    pub(crate) fn save(&mut self) {
        let hourly = |a: Option<Timestamp>, b: Option<Timestamp>| match (a, b) {
            (Some(a), Some(b)) => b.duration_since(a).abs() < SignedDuration::from_hours(1),
            (None, None) => true,
            _ => false,
        };
        let mut cmp = self.state.clone();
        if hourly(self.disk.last_contact, cmp.last_contact) {
            cmp.last_contact = self.disk.last_contact;
        }
        if hourly(self.disk.time_floor, cmp.time_floor) {
            cmp.time_floor = self.disk.time_floor;
        }
        if cmp == self.disk {
            return;
        }
        match self.paths.save_state(&self.disk, &self.state) {
            Ok(()) => self.disk = self.state.clone(),
            Err(e) => tracing::error!(error = %e, "cannot save state"),
        }
    }

    pub(crate) fn set_condition(&mut self, item: &str, severity: Severity, message: String) {
        let now = self.now().now;
        match self.state.conditions.iter_mut().find(|c| c.item == item) {
            Some(c) if c.message == message && c.severity == severity => {}
            Some(c) => {
                c.message = message;
                c.severity = severity;
                c.since = now;
            }
            None => self.state.conditions.push(Condition {
                item: item.to_owned(),
                severity,
                message,
                since: now,
            }),
        }
    }

    pub(crate) fn clear_condition(&mut self, item: &str) {
        self.state.conditions.retain(|c| c.item != item);
    }

    fn clear_conditions_with_prefix(&mut self, prefix: &str) {
        self.state
            .conditions
            .retain(|c| !c.item.starts_with(prefix));
    }

    /// Verifies a candidate bundle and, when accepted, persists it (bundle,
    /// signature, highest serial, time floor) before anything else.
    fn accept(&mut self, body: &[u8], signature: &[u8]) -> Result<Bundle, BundleError> {
        let last = self.accepted();
        let now = self.now().now;
        let verdict = verify_bundle(
            body,
            signature,
            &self.cfg.trusted_keys,
            Expectations {
                site: &self.cfg.site_id,
                last_accepted: last.as_ref(),
                now,
            },
        )
        .and_then(|b| {
            if b.serial < self.state.highest_serial {
                Err(BundleError::OldSerial {
                    found: b.serial,
                    highest: self.state.highest_serial,
                })
            } else {
                Ok(b)
            }
        });
        match verdict {
            Ok(b) => {
                // Body and signature in one file, replaced atomically: a
                // crash leaves the old pair or the new one.
                if let Err(e) = self.paths.save_accepted(body, signature) {
                    tracing::error!(error = %e, "cannot store the accepted bundle");
                }
                self.state.highest_serial = self.state.highest_serial.max(b.serial);
                self.state.time_floor = Some(now.max(b.issued_at));
                self.state.last_rejected = None;
                self.clear_condition("bundle");
                self.save();
                Ok(b)
            }
            Err(e) => {
                let reason = fetch::error_text(&e);
                tracing::warn!(reason = %reason, "bundle rejected");
                self.state.last_rejected = Some(reason.clone());
                self.set_condition(
                    "bundle",
                    Severity::Error,
                    format!("bundle rejected: {reason}"),
                );
                self.save();
                Err(e)
            }
        }
    }

    pub(crate) fn sources(&self, sha: &Sha256, urls: &[String], dir: Option<&Path>) -> Vec<Source> {
        let mut out = Vec::new();
        if let Some(d) = dir {
            out.push(Source::File(d.join("content").join(sha.to_hex())));
        }
        if let Some(c) = &self.controller {
            out.push(Source::Http {
                url: c.content_url(&sha.to_hex()),
                token: Some(c.token.clone()),
            });
        }
        for u in urls {
            out.push(Source::Http {
                url: u.clone(),
                token: None,
            });
        }
        out
    }

    /// Checks the store's copy of every wanted blob: a blob whose stat
    /// changed (a hard-linked video edited in place) is re-hashed, and
    /// evicted when wrong.
    fn check_store(&mut self, wanted: &[Wanted]) {
        for w in wanted {
            let blob = self.store.blob(&w.sha256);
            if !self.store.has(w) {
                continue;
            }
            if self.index.vouches(&blob, &w.sha256) {
                continue;
            }
            match fetch::hash_file(&blob) {
                Ok(h) if h == w.sha256 => {
                    if let Ok(stamp) = crate::state::Stamp::of(&blob) {
                        self.index.files.insert(blob, (stamp, h));
                    }
                }
                _ => {
                    tracing::warn!(sha256 = %w.sha256.to_hex(), "store copy is corrupt; evicting");
                    self.store.evict(&w.sha256);
                    self.index.files.remove(&blob);
                }
            }
        }
    }

    /// Free space for this pass, before anything is written: the downloads
    /// on the store's filesystem, and the copies on the videos filesystem
    /// when it is another one (no hard links across filesystems). Each
    /// needs its bytes plus `space_reserve_bytes`.
    fn check_space(
        &self,
        plan: &apply::Plan,
        wanted: &[Wanted],
        missing: &[(Wanted, Vec<String>)],
    ) -> Result<(), String> {
        let cas = self.paths.cas();
        let download: u64 = missing
            .iter()
            .map(|(w, _)| w.size.saturating_sub(self.store.partial_bytes(w)))
            .sum();
        let mut checks = vec![(cas.clone(), download, "downloads")];
        if !fsx::same_filesystem(&cas, &self.cfg.videos_dir) {
            let copies: u64 = plan
                .place
                .iter()
                .filter_map(|(_, sha)| wanted.iter().find(|w| w.sha256 == *sha))
                .map(|w| w.size)
                .sum();
            checks.push((
                self.cfg.videos_dir.clone(),
                copies,
                "copies into the videos directory",
            ));
        }
        for (path, need, what) in checks {
            if need == 0 {
                continue;
            }
            let probe = fsx::existing_ancestor(&path);
            let have = fsx::available_space(probe).unwrap_or(u64::MAX);
            let want = need.saturating_add(self.cfg.space_reserve_bytes);
            if want > have {
                return Err(format!(
                    "not enough space: need {}, have {} ({what}, on the filesystem of {})",
                    fsx::human_bytes(want),
                    fsx::human_bytes(have),
                    probe.display()
                ));
            }
        }
        Ok(())
    }

    /// Brings the box to `bundle`: fetch, then apply.
    async fn converge(&mut self, bundle: &Bundle, dir: Option<&Path>) -> Result<(), String> {
        let wanted: Vec<(Wanted, Vec<String>)> = bundle
            .files
            .iter()
            .map(|f| {
                (
                    Wanted {
                        sha256: f.sha256,
                        size: f.size,
                    },
                    f.urls.clone(),
                )
            })
            .collect();
        let ws: Vec<Wanted> = wanted.iter().map(|w| w.0).collect();
        let old_index = self.index.clone();
        // A managed video edited in place (hard link): the index notices.
        self.check_store(&ws);
        // The plan depends on the targets, the state and the config file,
        // not on the store: fetching below does not change it.
        let plan = apply::plan(
            bundle,
            &self.state,
            &mut self.index,
            &self.cfg.videos_dir,
            &self.cfg.config_path,
        )
        .map_err(|e| e.to_string())?;
        // Blobs that a placement needs and the store lacks (a file the box
        // already holds with the right content is adopted, not fetched
        // again: an SD card cannot hold every video twice).
        let mut missing: Vec<(Wanted, Vec<String>)> = Vec::new();
        for (w, urls) in &wanted {
            let placed_from_store = plan.place.iter().any(|(_, s)| s == &w.sha256);
            if placed_from_store
                && !self.store.has(w)
                && !missing.iter().any(|m| m.0.sha256 == w.sha256)
            {
                missing.push((*w, urls.clone()));
            }
        }
        if let Err(msg) = self.check_space(&plan, &ws, &missing) {
            self.set_condition("disk", Severity::Error, msg.clone());
            return Err(msg);
        }
        self.clear_condition("disk");
        if !missing.is_empty() {
            self.phase = Phase::Fetching;
            let limits = Limits {
                max_rate: self.cfg.max_download_rate,
                min_rate: self.cfg.min_download_rate,
                window: self.cfg.download_watchdog.to_std(),
            };
            for (w, urls) in &missing {
                if w.size > self.cfg.max_download_bytes {
                    let msg = format!(
                        "file {} is {} bytes, over max_download_bytes ({})",
                        w.sha256.to_hex(),
                        w.size,
                        self.cfg.max_download_bytes
                    );
                    self.set_condition("fetch", Severity::Error, msg.clone());
                    return Err(msg);
                }
                let sources = self.sources(&w.sha256, urls, dir);
                let store = self.store.clone();
                let (live, started) = (self.liveness.clone(), self.started);
                let mut progress = |_: u64| {
                    live.store(started.elapsed().as_secs(), Ordering::Relaxed);
                };
                let r = store
                    .fetch(&self.client, *w, &sources, limits, &mut progress)
                    .await;
                if let Err(e) = r {
                    if e.is_disk_full() {
                        let msg = format!(
                            "not enough space: download of {} stopped: {e}; the partial file was removed",
                            w.sha256.to_hex()
                        );
                        self.set_condition("disk", Severity::Error, msg.clone());
                        return Err(msg);
                    }
                    let msg = format!("download of {} failed: {e}", w.sha256.to_hex());
                    self.set_condition("fetch", Severity::Error, msg.clone());
                    return Err(msg);
                }
                // Hashed while downloading: the index vouches for it now.
                let blob = self.store.blob(&w.sha256);
                if let Ok(stamp) = crate::state::Stamp::of(&blob) {
                    self.index.files.insert(blob, (stamp, w.sha256));
                }
            }
            self.clear_condition("fetch");
        }
        // Conflicts: files the club put where the bundle wants ours.
        self.clear_conditions_with_prefix("file:");
        for c in &plan.conflicts {
            self.set_condition(
                &format!("file:{c}"),
                Severity::Warning,
                format!("`{c}` exists and was not placed by the agent: left alone"),
            );
        }
        self.clear_condition("config");
        if !plan.config_drift.is_empty() {
            self.set_condition(
                "config",
                Severity::Warning,
                format!(
                    "configuration.json keys changed on the box and restored: {}",
                    plan.config_drift.join(", ")
                ),
            );
        }
        let changed = !plan.is_empty();
        let serial_changes = self.state.applied_serial != Some(bundle.serial);
        if changed {
            self.phase = Phase::Applying;
            // Write-ahead: record every path (and directory) this apply is
            // about to create as the agent's before touching the disk, so
            // that a kill between a rename and the end of the pass never
            // leaves one of our files looking like the club's.
            apply::claim(&plan, &mut self.state, &self.cfg.videos_dir);
            if let Err(e) = self.paths.save_state(&self.disk, &self.state) {
                let msg = format!("cannot record the apply in state.json: {e}");
                self.set_condition("apply", Severity::Error, msg.clone());
                return Err(msg);
            }
            self.disk = self.state.clone();
            let store = self.store.clone();
            let result = apply::execute(
                &plan,
                |s| store.blob(s),
                &mut self.state,
                &mut self.index,
                &self.cfg.videos_dir,
                &self.cfg.config_path,
            );
            if let Err(e) = result {
                let (item, msg) = if e.is_disk_full() {
                    ("disk", format!("not enough space: {e}"))
                } else {
                    ("apply", e.to_string())
                };
                self.set_condition(item, Severity::Error, msg.clone());
                self.save();
                return Err(msg);
            }
        }
        self.clear_condition("apply");
        self.state.applied_serial = Some(bundle.serial);
        self.state.applied_digest = Some(bundle.digest());
        self.save();
        if let Err(e) = self.paths.save_index(&old_index, &self.index) {
            tracing::warn!(error = %e, "cannot save the stat index");
        }
        if changed || serial_changes {
            self.run_reload().await;
            // Keep what the bundle references (and the release package).
            let mut keep: Vec<Sha256> = bundle.files.iter().map(|f| f.sha256).collect();
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
        if !plan.conflicts.is_empty() {
            return Err(format!(
                "{} listed file(s) are held by files the agent did not place",
                plan.conflicts.len()
            ));
        }
        Ok(())
    }

    async fn run_reload(&mut self) {
        let Some((prog, args)) = self.cfg.reload_command.split_first() else {
            return;
        };
        let out = tokio::process::Command::new(prog)
            .args(args)
            .stdin(std::process::Stdio::null())
            .output()
            .await;
        match out {
            Ok(o) if o.status.success() => self.clear_condition("reload"),
            Ok(o) => {
                let tail = crate::release::tail(&String::from_utf8_lossy(&o.stderr), 500);
                self.set_condition(
                    "reload",
                    Severity::Warning,
                    format!("reload_command exited with {}: {}", o.status, tail.trim()),
                );
            }
            Err(e) => self.set_condition(
                "reload",
                Severity::Warning,
                format!("reload_command could not start: {e}"),
            ),
        }
    }

    /// One pass. Never touches local files unless a verified bundle is
    /// fully fetched.
    pub async fn pass(&mut self, origin: &Origin) -> Outcome {
        match origin {
            Origin::Dir(dir) => {
                let candidate = read_dir_bundle(dir, self.cfg.site_id.as_str()).map(Some);
                self.settle(candidate, Some(dir)).await
            }
            Origin::Controller { wait } => {
                let Some(c) = self.controller.clone() else {
                    return self
                        .settle(Err("no controller_url configured".into()), None)
                        .await;
                };
                let etag = self.accepted_etag();
                let r = c.pull(etag.as_deref(), *wait, self.clock.now()).await;
                let candidate = self.absorb_pull(r);
                self.settle(candidate, None).await
            }
        }
    }

    /// Takes a poll's answer: contact bookkeeping, clock offset.
    fn absorb_pull(
        &mut self,
        r: Result<(Pulled, Option<SignedDuration>), PullError>,
    ) -> Result<Option<SignedPair>, String> {
        match r {
            Ok((pulled, offset)) => {
                self.server_offset = offset.or(self.server_offset);
                self.contact(true);
                match pulled {
                    Pulled::NotModified => Ok(None),
                    Pulled::New { body, signature } => Ok(Some((body, signature))),
                }
            }
            Err(e) => {
                if let PullError::Unreachable { retry_after, .. } = &e {
                    self.retry_after = *retry_after;
                    self.contact(false);
                }
                Err(e.to_string())
            }
        }
    }

    /// The rest of a pass once the candidate is known: verify, converge,
    /// phase, state.
    async fn settle(
        &mut self,
        candidate: Result<Option<SignedPair>, String>,
        dir: Option<&Path>,
    ) -> Outcome {
        let mut blocking: Option<String> = None;
        match candidate {
            Ok(Some((body, sig))) => {
                if let Err(e) = self.accept(&body, &sig) {
                    blocking = Some(format!("bundle rejected: {}", fetch::error_text(&e)));
                }
            }
            Ok(None) => {}
            Err(e) => blocking = Some(e),
        }
        // One pass at a time on this state directory (the daemon, `once`,
        // `rollback`…), and a switch a power cut interrupted is finished
        // before anything else.
        let _pass = self.pass_lock().await;
        if let Err(e) = self.recover_release().await {
            blocking.get_or_insert(e);
        }
        let outcome = match self.accepted() {
            None => Outcome::NotConverged(
                blocking
                    .clone()
                    .unwrap_or_else(|| "no bundle accepted yet".into()),
            ),
            Some(b) => match self.converge(&b, dir).await {
                Ok(()) => match self.software(&b, dir).await {
                    Err(e) => Outcome::NotConverged(e),
                    Ok(waiting) => match (&blocking, waiting) {
                        (Some(e), _) => Outcome::NotConverged(e.clone()),
                        (None, Some(w)) => Outcome::Waiting(w),
                        (None, None) => Outcome::Converged,
                    },
                },
                Err(e) => Outcome::NotConverged(e),
            },
        };
        self.state.last_error = match &outcome {
            Outcome::Converged | Outcome::Waiting(_) => None,
            Outcome::NotConverged(e) => Some(e.clone()),
        };
        let stale = self
            .accepted()
            .is_some_and(|b| b.expires_at <= self.now().now);
        self.phase = phase::after_pass(
            self.phase,
            &phase::Facts {
                converged: outcome == Outcome::Converged,
                waiting: matches!(outcome, Outcome::Waiting(_)),
                has_bundle: self.state.applied_serial.is_some(),
                stale,
                failed: matches!(outcome, Outcome::NotConverged(_))
                    && self.state.applied_serial.is_some(),
            },
        );
        self.state.phase = Some(self.phase);
        let now = self.now().now;
        self.state.time_floor = Some(self.state.time_floor.map_or(now, |f| f.max(now)));
        self.save();
        outcome
    }

    fn contact(&mut self, ok: bool) {
        let now = self.now().now;
        if ok {
            self.backoff.reset();
            self.state.offline_since = None;
            // Persisted with the next state change, not on every poll.
            self.state.last_contact = Some(now);
            self.clear_condition("controller");
        } else if self.state.offline_since.is_none() {
            self.state.offline_since = Some(now);
        }
    }

    fn next_seq(&mut self) -> u64 {
        let s = self.seq;
        self.seq += 1;
        if self.seq >= self.state.next_seq {
            self.state.next_seq = self.seq + SEQ_BLOCK;
            self.save();
        }
        s
    }

    /// Builds a report of the current status (with metrics when asked).
    pub async fn build_report(&mut self, with_metrics: bool) -> Report {
        let accepted = self.accepted();
        let metrics = if with_metrics {
            let videos = (
                self.state.placed.len() as u64,
                accepted.as_ref().map_or(0, |b| {
                    b.files
                        .iter()
                        .filter(|f| self.state.placed.contains_key(f.path.as_str()))
                        .map(|f| f.size)
                        .sum()
                }),
            );
            let (local, _) = apply::local_content(&self.cfg.videos_dir, &self.state);
            Some(
                metrics::collect(
                    &mut self.cpu,
                    &self.cfg.videos_dir,
                    &self.cfg.services,
                    videos,
                    local,
                )
                .await,
            )
        } else {
            None
        };
        let mut conditions = self.state.conditions.clone();
        if let Some(since) = self.state.offline_since {
            conditions.push(Condition {
                item: "controller".into(),
                severity: Severity::Warning,
                message: format!("controller unreachable since {since}"),
                since,
            });
        }
        let now = self.now();
        if let Some(skew) = now.corrected_by {
            conditions.push(Condition {
                item: "clock".into(),
                severity: Severity::Warning,
                message: format!(
                    "the box's clock is off by {}s; using the controller's time",
                    skew.as_secs()
                ),
                since: now.now,
            });
        }
        Report {
            seq: self.next_seq(),
            at: now.now,
            status: Status {
                phase: self.phase,
                desired_serial: accepted.as_ref().map(|b| b.serial),
                applied_serial: self.state.applied_serial,
                release: self.running_release(),
                software: self.software_status(accepted.as_ref()),
                conditions,
                last_error: self.state.last_error.clone(),
                agent_version: Some(env!("CARGO_PKG_VERSION").to_owned()),
            },
            metrics,
        }
    }

    /// What a status report would say, without times and counters.
    fn status_fingerprint(&self) -> String {
        let conditions: Vec<(&str, &str)> = self
            .state
            .conditions
            .iter()
            .map(|c| (c.item.as_str(), c.message.as_str()))
            .collect();
        format!(
            "{:?} {:?} {:?} {:?} {:?} {:?}",
            self.phase,
            self.state.applied_serial,
            self.state.highest_serial,
            self.state.last_error,
            self.state.offline_since.is_some(),
            conditions
        )
    }

    /// Sends a report; queues it (and what is queued) when the controller
    /// does not take it.
    pub async fn report(&mut self, with_metrics: bool) -> Result<(), String> {
        let r = self.build_report(with_metrics).await;
        self.last_sent = Some(self.status_fingerprint());
        let transition = self.last_reported_phase != Some(self.phase);
        self.last_reported_phase = Some(self.phase);
        let Some(c) = self.controller.clone() else {
            return Ok(());
        };
        // Drain the queue first, in order.
        loop {
            let batch = self.queue.peek(BATCH, 512 * 1024);
            if batch.is_empty() {
                break;
            }
            let reports: Vec<Report> = batch.iter().map(|b| b.0.clone()).collect();
            match c.send_reports(&reports).await {
                Ok(()) => {
                    let paths: Vec<PathBuf> = batch.into_iter().map(|b| b.1).collect();
                    self.queue.remove(&paths);
                }
                Err(e) => {
                    self.queue
                        .push(&r, transition)
                        .map_err(|q| format!("{e}; and the report could not be queued: {q}"))?;
                    return Err(e.to_string());
                }
            }
        }
        match c.send_reports(std::slice::from_ref(&r)).await {
            Ok(()) => {
                self.contact(true);
                // Back online is a state change `status` must show.
                self.save();
                Ok(())
            }
            Err(e) => {
                if matches!(e, PullError::Unreachable { .. }) {
                    self.contact(false);
                }
                self.queue
                    .push(&r, transition)
                    .map_err(|q| format!("{e}; and the report could not be queued: {q}"))?;
                Err(e.to_string())
            }
        }
    }

    /// Reports waiting in the queue.
    pub fn queued(&self) -> usize {
        self.queue.len()
    }

    /// The daemon loop: long-poll, reconcile, heartbeat, metrics. Each
    /// turn (and each downloaded chunk) records liveness for the watchdog.
    pub async fn run(&mut self, stop: &mut tokio::sync::watch::Receiver<bool>) {
        let mut heartbeat = tokio::time::interval(self.cfg.heartbeat_interval.to_std());
        heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let metrics_every = self.cfg.metrics_interval.to_std();
        let mut last_metrics: Option<std::time::Instant> = None;
        let mut delay = Duration::ZERO;
        let Some(c) = self.controller.clone() else {
            tracing::error!("run needs controller_url (a box fed by USB uses apply-dir)");
            return;
        };
        loop {
            self.alive();
            let wait = self
                .accepted()
                .map_or(self.cfg.poll_interval, |b| b.agent.poll_interval)
                .to_std()
                .min(Duration::from_secs(300));
            // The backoff sleep and the long-poll race the heartbeat timer;
            // fetch and apply (in `settle`) are never interrupted.
            let etag = self.accepted_etag();
            let box_now = self.clock.now();
            let pause = delay;
            let pull = async {
                tokio::time::sleep(pause).await;
                c.pull(etag.as_deref(), Some(wait), box_now).await
            };
            tokio::pin!(pull);
            let answer = loop {
                tokio::select! {
                    r = &mut pull => break r,
                    _ = heartbeat.tick() => {
                        self.alive();
                        // The long-poll itself tells the controller the box
                        // is alive; a status report goes out when the status
                        // changed, with full metrics every metrics_interval.
                        let full = last_metrics.is_none_or(|t| t.elapsed() >= metrics_every);
                        let changed = self.last_sent.as_deref() != Some(self.status_fingerprint().as_str());
                        if full {
                            last_metrics = Some(std::time::Instant::now());
                        }
                        if (full || changed)
                            && let Err(e) = self.report(full).await
                        {
                            tracing::debug!(error = %e, "report queued");
                        }
                    }
                    _ = stop.changed() => return,
                }
            };
            let candidate = self.absorb_pull(answer);
            let outcome = self.settle(candidate, None).await;
            delay = match &outcome {
                // Waiting for the window or the lock: the long-poll paces
                // the next look.
                Outcome::Converged | Outcome::Waiting(_) => {
                    self.backoff.reset();
                    Duration::ZERO
                }
                Outcome::NotConverged(reason) => {
                    tracing::warn!(reason = %reason, "not converged");
                    self.backoff.next(self.retry_after.take())
                }
            };
            if self.last_reported_phase != Some(self.phase) {
                let _ = self.report(false).await;
            }
        }
    }
}

/// Bundle bytes and their signature.
type SignedPair = (Vec<u8>, Vec<u8>);

/// Reads `bundle.json` (or `<site>.json`) and its `.sig` from a directory.
fn read_dir_bundle(dir: &Path, site: &str) -> Result<SignedPair, String> {
    let candidates = [dir.join("bundle.json"), dir.join(format!("{site}.json"))];
    let body_path = candidates.iter().find(|p| p.is_file()).ok_or_else(|| {
        format!(
            "`{}` holds neither bundle.json nor {site}.json",
            dir.display()
        )
    })?;
    let sig_path = PathBuf::from(format!("{}.sig", body_path.display()));
    let read_capped = |p: &Path, cap: usize| -> Result<Vec<u8>, String> {
        let len = std::fs::metadata(p)
            .map_err(|e| format!("cannot read `{}`: {e}", p.display()))?
            .len();
        if len > cap as u64 {
            return Err(format!(
                "`{}` is {len} bytes, over the {cap}-byte limit",
                p.display()
            ));
        }
        std::fs::read(p).map_err(|e| format!("cannot read `{}`: {e}", p.display()))
    };
    Ok((
        read_capped(body_path, touchline_schemas::bundle::MAX_BUNDLE_BYTES)?,
        read_capped(&sig_path, touchline_schemas::sign::MAX_SIGNATURE_BYTES)?,
    ))
}
