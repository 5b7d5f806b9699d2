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
use crate::condition::{self, Item};
use crate::config::Config;
use crate::error::PassError;
use crate::fetch::{self, Source};
use crate::host::{Host, SystemHost};
use crate::metrics::{self, CpuSample};
use crate::phase::{self, Event};
use crate::pull::{Answer, Backoff, Controller, PullError, Pulled};
use crate::queue::Queue;
use crate::selfupdate;
use crate::state::{Index, Paths, State};
use crate::transport::{ContentTransport, Transport};

mod actions;
mod execute;
mod software;
mod upgrade;
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
    /// The system's random source.
    #[error("cannot read random bytes for the report epoch: {0}")]
    Random(String),
}

/// A new report epoch: 128 random bits, hex.
fn new_epoch() -> Result<String, AgentError> {
    let mut r = [0u8; 16];
    getrandom::fill(&mut r).map_err(|e| AgentError::Random(e.to_string()))?;
    Ok(r.iter().map(|b| format!("{b:02x}")).collect())
}

/// A report the controller did not take.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    /// Kept in the queue for later.
    #[error("{0}")]
    Queued(#[source] PullError),
    /// Not sent, and the queue could not keep it either.
    #[error("{send}; and the report could not be queued: {queue}")]
    Lost {
        /// Why it was not sent.
        send: PullError,
        /// Why it was not queued.
        queue: std::io::Error,
    },
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
#[derive(Debug)]
pub enum Outcome {
    /// The accepted bundle is applied (with the controller's current one
    /// when the controller was asked).
    Converged,
    /// Not converged, and why.
    NotConverged(PassError),
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
    /// The machine: commands, services, free space.
    pub(crate) host: Arc<dyn Host>,
    /// Where content bytes come from.
    pub(crate) transport: Arc<dyn Transport>,
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
    /// Seconds between looks at the bundle during a long pass: the
    /// accepted bundle's poll interval (see [`keep_alive`]).
    poll_secs: Arc<AtomicU64>,
    pub(crate) started: std::time::Instant,
    /// The controller's last `Retry-After`.
    retry_after: Option<Duration>,
    /// What the last report said (to skip unchanged heartbeats).
    last_sent: Option<String>,
    /// Software releases, when `software_root` is set.
    pub(crate) releases: Option<software::Releases>,
    /// Remote actions the last poll said wait for the box.
    actions_pending: usize,
    /// The remote actions this box took (`actions.json`).
    journal: actions::Journal,
    /// The agent's own releases.
    pub(crate) upgrade: upgrade::SelfUpdate,
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
        Self::open_on(cfg, clock, Arc::new(SystemHost))
    }

    /// [`Agent::open`] on another host (a fake in tests).
    pub fn open_on(
        cfg: Config,
        clock: Box<dyn Clock>,
        host: Arc<dyn Host>,
    ) -> Result<Self, AgentError> {
        let paths = Paths {
            root: cfg.state_dir.clone(),
        };
        let paths_root = paths.root.clone();
        paths.create()?;
        let mut state = paths.load_state()?;
        let index = paths.load_index();
        let client = http_client(&cfg)?;
        let queue = Queue::new(paths.queue(), cfg.report_queue_max);
        let old = state.clone();
        // A new state is a new report epoch (the controller then restarts
        // this box's sequence instead of dropping its reports as seen).
        if state.report_epoch.is_none() {
            state.report_epoch = Some(new_epoch()?);
        }
        let controller = match (&cfg.controller_url, &cfg.token) {
            (Some(base), Some(token)) => Some(Controller {
                client: api_client(&cfg)?,
                base: base.clone(),
                site: cfg.site_id.clone(),
                token: token.clone(),
                epoch: state.report_epoch.clone(),
                timeout: cfg.connect_timeout.to_std() + cfg.read_timeout.to_std(),
            }),
            _ => None,
        };
        apply::clean_temps(&cfg.videos_dir, &cfg.config_path);
        // Reserve a block of report sequence numbers, above any report
        // still queued (a lost state file must not reuse their numbers).
        let seq = state.next_seq.max(queue.last_seq().map_or(1, |q| q + 1));
        state.next_seq = seq + SEQ_BLOCK;
        paths.save_state(&old, &state)?;
        let disk = state.clone();
        Ok(Self {
            store: fetch::Store::new(paths.clone()),
            paths,
            controller,
            transport: Arc::new(ContentTransport::new(client.clone())),
            client,
            clock,
            host,
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
            poll_secs: Arc::new(AtomicU64::new(cfg.poll_interval.as_secs())),
            started: std::time::Instant::now(),
            retry_after: None,
            last_sent: None,
            actions_pending: 0,
            journal: actions::Journal::load(paths_root.join("actions.json")),
            upgrade: upgrade::SelfUpdate::new(&paths_root),
            releases: cfg
                .software_root
                .clone()
                .map(|root| software::Releases::new(root, paths_root.join("release.json"))),
            cfg,
        })
    }

    /// The same agent fetching content through `transport` (a fake in
    /// tests).
    pub fn with_transport(mut self, transport: Arc<dyn Transport>) -> Self {
        self.transport = transport;
        self
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
        Some(etag_of(&body))
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

    pub(crate) fn set_condition(&mut self, item: &Item, severity: Severity, message: String) {
        let now = self.now().now;
        condition::set(&mut self.state.conditions, item, severity, message, now);
    }

    pub(crate) fn clear_condition(&mut self, item: &Item) {
        condition::clear(&mut self.state.conditions, item);
    }

    /// The phase after `event` (the only place the phase changes).
    pub(crate) fn enter(&mut self, event: Event) {
        self.phase = phase::next(self.phase, event);
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
                self.poll_secs
                    .store(b.agent.poll_interval.as_secs(), Ordering::Relaxed);
                self.state.last_rejected = None;
                self.clear_condition(&Item::Bundle);
                self.save();
                Ok(b)
            }
            Err(e) => {
                let reason = fetch::error_text(&e);
                tracing::warn!(reason = %reason, "bundle rejected");
                self.state.last_rejected = Some(reason.clone());
                self.set_condition(
                    &Item::Bundle,
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
                    return self.settle(Err(PassError::NoController), None).await;
                };
                let etag = self.accepted_etag();
                let r = c.pull(etag.as_deref(), *wait, self.clock.now()).await;
                let candidate = self.absorb_pull(r);
                let outcome = self.settle(candidate, None).await;
                // After the pass: its bundle is the allow-list.
                self.action_turn().await;
                outcome
            }
        }
    }

    /// Takes a poll's answer: contact bookkeeping, clock offset.
    fn absorb_pull(
        &mut self,
        r: Result<Answer, PullError>,
    ) -> Result<Option<SignedPair>, PassError> {
        match r {
            Ok(Answer {
                pulled,
                offset,
                actions,
            }) => {
                self.server_offset = offset.or(self.server_offset);
                self.actions_pending = actions;
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
                Err(PassError::Pull(e))
            }
        }
    }

    /// The rest of a pass once the candidate is known: verify, reconcile,
    /// phase, state. One `pass` span per pass, with the site, and the
    /// serial and commit of the bundle it works on.
    #[tracing::instrument(
        name = "pass",
        skip_all,
        fields(site = %self.cfg.site_id, serial = tracing::field::Empty, commit = tracing::field::Empty)
    )]
    async fn settle(
        &mut self,
        candidate: Result<Option<SignedPair>, PassError>,
        dir: Option<&Path>,
    ) -> Outcome {
        let mut blocking: Option<PassError> = None;
        match candidate {
            Ok(Some((body, sig))) => {
                if let Err(e) = self.accept(&body, &sig) {
                    blocking = Some(PassError::Rejected(e));
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
            blocking.get_or_insert(PassError::Release(e));
        }
        let accepted = self.accepted();
        if let Some(b) = &accepted {
            let span = tracing::Span::current();
            span.record("serial", b.serial);
            if let Some(c) = &b.commit {
                span.record("commit", c.as_str());
            }
        }
        // A controller out of reach is no failed pass: the box keeps its
        // accepted bundle, applied (or waiting) as far as it can tell, and
        // says the controller is unreachable in a condition. `Some(waits)`:
        // only the pull failed that way.
        let mut unreachable_only: Option<bool> = None;
        let outcome = match accepted {
            None => Outcome::NotConverged(blocking.unwrap_or(PassError::NoBundle)),
            Some(b) => match (self.reconcile(&b, dir).await, blocking) {
                (Err(e), _) => Outcome::NotConverged(e),
                (Ok(waits), Some(e)) => {
                    if matches!(e, PassError::Pull(PullError::Unreachable { .. })) {
                        unreachable_only = Some(waits.is_some());
                    }
                    Outcome::NotConverged(e)
                }
                (Ok(Some(w)), None) => Outcome::Waiting(w),
                (Ok(None), None) => Outcome::Converged,
            },
        };
        self.state.last_error = match &outcome {
            Outcome::Converged | Outcome::Waiting(_) => None,
            Outcome::NotConverged(_) if unreachable_only.is_some() => None,
            Outcome::NotConverged(e) => Some(e.to_string()),
        };
        let stale = self
            .accepted()
            .is_some_and(|b| b.expires_at <= self.now().now);
        let applied = self.state.applied_serial.is_some();
        self.enter(Event::Passed(phase::Facts {
            converged: matches!(outcome, Outcome::Converged) || unreachable_only == Some(false),
            waiting: matches!(outcome, Outcome::Waiting(_)) || unreachable_only == Some(true),
            has_bundle: applied,
            stale,
            failed: matches!(outcome, Outcome::NotConverged(_))
                && applied
                && unreachable_only.is_none(),
        }));
        self.state.phase = Some(self.phase);
        match &outcome {
            Outcome::Converged => tracing::debug!(phase = ?self.phase, "pass converged"),
            Outcome::Waiting(why) => tracing::info!(phase = ?self.phase, %why, "pass waiting"),
            Outcome::NotConverged(e) => {
                tracing::debug!(phase = ?self.phase, error = %e, "pass not converged");
            }
        }
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
            self.clear_condition(&Item::Controller);
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
                        .filter(|f| self.state.placed.contains_key(&f.path))
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
                item: Item::Controller.key(),
                severity: Severity::Warning,
                message: format!("controller unreachable since {since}"),
                since,
            });
        }
        let now = self.now();
        if let Some(skew) = now.corrected_by {
            conditions.push(Condition {
                item: Item::Clock.key(),
                severity: Severity::Warning,
                message: format!(
                    "the box's clock is off by {}s; using the controller's time",
                    skew.as_secs()
                ),
                since: now.now,
            });
        }
        let agent_release = self.agent_release_status(accepted.as_ref());
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
                agent_version: Some(agent_release.as_ref().map_or_else(
                    || selfupdate::own_version().to_owned(),
                    |a| a.running.clone(),
                )),
                agent_release,
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
            "{:?} {:?} {:?} {:?} {:?} {:?} {:?}",
            self.phase,
            self.running_release(),
            self.state.applied_serial,
            self.state.highest_serial,
            self.state.last_error,
            self.state.offline_since.is_some(),
            conditions
        )
    }

    /// Sends a report; queues it (and what is queued) when the controller
    /// does not take it.
    pub async fn report(&mut self, with_metrics: bool) -> Result<(), ReportError> {
        let r = self.build_report(with_metrics).await;
        // The copy that reaches the controller cannot say it is out of
        // reach; the copy queued when it does not get through does.
        let mut live = r.clone();
        live.status
            .conditions
            .retain(|c| c.item != Item::Controller.key());
        self.last_sent = Some(self.status_fingerprint());
        let transition = self.last_reported_phase != Some(self.phase);
        self.last_reported_phase = Some(self.phase);
        let Some(c) = self.controller.clone() else {
            return Ok(());
        };
        // Drain the queue first, in order. The last batch carries the live
        // report too: the controller stores one request in one write, so
        // the reports queued while it was out of reach (which say so) are
        // never the box's latest state, not even between two requests.
        loop {
            let batch = self.queue.peek(BATCH, 512 * 1024);
            let last = batch.len() >= self.queue.len();
            let mut reports: Vec<Report> = batch.iter().map(|b| b.0.clone()).collect();
            if last {
                reports.push(live.clone());
            }
            match c.send_reports(&reports).await {
                Ok(()) => {
                    let paths: Vec<PathBuf> = batch.into_iter().map(|b| b.1).collect();
                    self.queue.remove(&paths);
                    if last {
                        self.contact(true);
                        // Back online is a state change `status` must show.
                        self.save();
                        return Ok(());
                    }
                }
                Err(send) => {
                    if matches!(send, PullError::Unreachable { .. }) {
                        self.contact(false);
                    }
                    if let Err(queue) = self.queue.push(&r, transition) {
                        return Err(ReportError::Lost { send, queue });
                    }
                    return Err(ReportError::Queued(send));
                }
            }
        }
    }

    /// Reports waiting in the queue.
    pub fn queued(&self) -> usize {
        self.queue.len()
    }

    /// The daemon loop: long-poll, reconcile, heartbeat, metrics. Each
    /// turn (and each downloaded chunk) records liveness for the watchdog.
    pub async fn run(&mut self, stop: &mut tokio::sync::watch::Receiver<bool>) -> RunEnd {
        let mut heartbeat = tokio::time::interval(self.cfg.heartbeat_interval.to_std());
        heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let metrics_every = self.cfg.metrics_interval.to_std();
        let mut last_metrics: Option<std::time::Instant> = None;
        let mut delay = Duration::ZERO;
        let Some(c) = self.controller.clone() else {
            tracing::error!("run needs controller_url (a box fed by USB uses apply-dir)");
            return RunEnd::Stopped;
        };
        let mut on_trial = self.on_agent_trial();
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
            self.poll_secs.store(wait.as_secs(), Ordering::Relaxed);
            let box_now = self.clock.now();
            let pause = delay;
            // A release on trial asks at once: its first pass confirms it.
            let wait = (!on_trial).then_some(wait);
            let pull = async {
                tokio::time::sleep(pause).await;
                c.pull(etag.as_deref(), wait, box_now).await
            };
            tokio::pin!(pull);
            let answer = loop {
                tokio::select! {
                    r = &mut pull => break Some(r),
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
                        let was_offline = self.state.offline_since.is_some();
                        if full || changed {
                            match self.report(full).await {
                                // Back in touch while backing off: pull now,
                                // not after the rest of the pause.
                                Ok(()) if was_offline => break None,
                                Ok(()) => {}
                                Err(e) => tracing::debug!(error = %e, "report queued"),
                            }
                        }
                    }
                    _ = stop.changed() => return RunEnd::Stopped,
                }
            };
            let Some(answer) = answer else {
                delay = Duration::ZERO;
                continue;
            };
            let reached = answer.is_ok();
            let candidate = self.absorb_pull(answer);
            // Actions first, so a system-info does not wait for a download;
            // after the pass when a new bundle came (its allow-list counts).
            let fresh = matches!(candidate, Ok(Some(_)));
            if !fresh {
                self.action_turn().await;
            }
            // A pass can download for longer than the controller waits
            // before it calls a box offline: meanwhile an empty look at
            // the bundle every poll interval says the box is alive.
            let outcome = {
                let etag = match &candidate {
                    Ok(Some((body, _))) => Some(etag_of(body)),
                    _ => self.accepted_etag(),
                };
                let keepalive = keep_alive(&c, etag, self.poll_secs.clone(), box_now);
                let settle = self.settle(candidate, None);
                tokio::select! {
                    o = settle => o,
                    never = keepalive => match never {},
                }
            };
            if fresh {
                self.action_turn().await;
            }
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
            if on_trial && reached {
                // A release on trial passes with a completed pass and a
                // delivered report; the next report says so.
                if self.report(false).await.is_ok() && self.confirm_agent_trial() {
                    on_trial = false;
                    let _ = self.report(false).await;
                }
            } else if self.last_reported_phase != Some(self.phase)
                || self.last_sent.as_deref() != Some(self.status_fingerprint().as_str())
            {
                // A new phase, or what the box runs changed within one
                // (a release switched under the same serial): say so now,
                // not at the next heartbeat.
                let _ = self.report(false).await;
            }
            if self.agent_restart_wanted() {
                let _ = self.report(false).await;
                return RunEnd::Restart;
            }
        }
    }
}

/// A bundle body's ETag, as the controller makes it.
fn etag_of(body: &[u8]) -> String {
    format!("\"{}\"", Sha256::digest(body).to_hex())
}

/// Looks at the bundle every poll interval (`poll_secs`: the accepted
/// bundle's, read at each turn, so a pass that accepts a new bundle uses
/// its interval), asking at once with the ETag of the bundle being
/// applied, so the answer is an empty 304, and drops the answer: the
/// controller counts the look as contact. Runs until dropped.
async fn keep_alive(
    c: &Controller,
    etag: Option<String>,
    poll_secs: Arc<AtomicU64>,
    box_now: Timestamp,
) -> std::convert::Infallible {
    let mut last = tokio::time::Instant::now();
    loop {
        // A second at a time: the interval can change under it.
        tokio::time::sleep(Duration::from_secs(1)).await;
        let every = Duration::from_secs(poll_secs.load(Ordering::Relaxed).clamp(1, 300));
        if last.elapsed() < every {
            continue;
        }
        last = tokio::time::Instant::now();
        if let Err(e) = c.pull(etag.as_deref(), None, box_now).await {
            tracing::debug!(error = %e, "keep-alive look at the bundle failed");
        }
    }
}

/// Why [`Agent::run`] returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunEnd {
    /// Asked to stop (SIGTERM, Ctrl-C), or cannot run.
    Stopped,
    /// The agent-release journal selects another agent: restart into it.
    Restart,
}

/// Bundle bytes and their signature.
type SignedPair = (Vec<u8>, Vec<u8>);

/// Reads `bundle.json` (or `<site>.json`) and its `.sig` from a directory.
fn read_dir_bundle(dir: &Path, site: &str) -> Result<SignedPair, PassError> {
    let candidates = [dir.join("bundle.json"), dir.join(format!("{site}.json"))];
    let body_path =
        candidates
            .iter()
            .find(|p| p.is_file())
            .ok_or_else(|| PassError::NoDirBundle {
                dir: dir.to_path_buf(),
                site: site.to_owned(),
            })?;
    let sig_path = PathBuf::from(format!("{}.sig", body_path.display()));
    let read_capped = |p: &Path, cap: usize| -> Result<Vec<u8>, PassError> {
        let unreadable = |source| PassError::ReadDirBundle {
            path: p.to_path_buf(),
            source,
        };
        let len = std::fs::metadata(p).map_err(unreadable)?.len();
        if len > cap as u64 {
            return Err(PassError::DirBundleTooLarge {
                path: p.to_path_buf(),
                len,
                cap,
            });
        }
        std::fs::read(p).map_err(unreadable)
    };
    Ok((
        read_capped(body_path, touchline_schemas::bundle::MAX_BUNDLE_BYTES)?,
        read_capped(&sig_path, touchline_schemas::sign::MAX_SIGNATURE_BYTES)?,
    ))
}
