//! Software releases on the box: `software_root/releases/<version>/` holds
//! unpacked releases, `software_root/current` is a symlink to the active
//! one (the local services run from it).
//!
//! A switch is a small state machine persisted in `state_dir/release.json`
//! (the journal) before each step, so that a power cut anywhere ends, on
//! the next start, in one of two places: the new release running and
//! healthy, or the old one back:
//!
//! ```text
//! (none) ──begin──▶ stopping ──current→new──▶ switched ──healthy──▶ (none, committed)
//!                                               └──unhealthy──▶ rolling-back ──current→old──▶ (none, rolled back)
//! ```
//!
//! `current` is only ever replaced by an atomic rename of a new symlink
//! (plus a directory fsync), and only ever points at a complete release
//! directory: packages are unpacked into `releases/<version>.partial/` and
//! renamed when whole.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use jiff::Timestamp;
use serde::{Deserialize, Serialize};
use touchline_schemas::ReleaseVersion;
use touchline_schemas::bundle::BundleHealthCheck;
use touchline_schemas::manifest::MaintenanceWindow;

use crate::beneath::{Dir, Entry, Kind};
use crate::fsx;
use crate::host::{Host, HostCommand};

/// Bytes of health-check output kept in a rollback report.
pub const OUTPUT_TAIL: usize = 2048;
/// Pause between two health-check attempts.
const HEALTH_RETRY: Duration = Duration::from_secs(1);
/// Longest a stop or start command may run.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(120);

/// The name of a release directory under `releases/`: a version (`2.1.3`)
/// or the name an adopted plain `current` directory got
/// (`adopted-20261201031500`). One path component, checked wherever it is
/// read (`release.json`, the `current` link, the directory listing): never
/// empty, `.` or `..`, never a `/` or a NUL, not ending in `.partial`; so
/// `releases/<name>` stays below the root whatever a file says.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct ReleaseName(String);

/// A string that cannot name a release directory.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{0}` cannot name a release directory")]
pub struct BadReleaseName(pub String);

impl ReleaseName {
    /// Checks `s`.
    pub fn new(s: &str) -> Result<Self, BadReleaseName> {
        let bad = s.is_empty()
            || s == "."
            || s == ".."
            || s.contains(['/', '\0'])
            || s.ends_with(".partial")
            || s.len() > 255;
        if bad {
            Err(BadReleaseName(s.to_owned()))
        } else {
            Ok(Self(s.to_owned()))
        }
    }

    /// As a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The version it names, when it is one.
    pub fn version(&self) -> Option<ReleaseVersion> {
        ReleaseVersion::new(&self.0).ok()
    }
}

impl From<&ReleaseVersion> for ReleaseName {
    fn from(v: &ReleaseVersion) -> Self {
        Self(v.to_string())
    }
}

impl TryFrom<String> for ReleaseName {
    type Error = BadReleaseName;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        Self::new(&s)
    }
}

impl From<ReleaseName> for String {
    fn from(n: ReleaseName) -> Self {
        n.0
    }
}

impl std::fmt::Display for ReleaseName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl PartialEq<&str> for ReleaseName {
    fn eq(&self, s: &&str) -> bool {
        self.0 == *s
    }
}

impl PartialEq<ReleaseVersion> for ReleaseName {
    fn eq(&self, v: &ReleaseVersion) -> bool {
        self.0 == v.to_string()
    }
}

/// Where a switch stands (persisted before each step).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Step {
    /// Services are being stopped; `current` still points at `from`.
    Stopping,
    /// `current` points at `to`; services started, health being checked.
    Switched,
    /// `to` failed; `current` goes back to `from`.
    RollingBack,
}

/// The journal of a switch in progress.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Journal {
    /// The release `current` pointed at before (none on a fresh box).
    pub from: Option<ReleaseName>,
    /// The release being switched to.
    pub to: ReleaseName,
    /// The bundle serial that asked for it (`None`: a manual rollback).
    pub serial: Option<u64>,
    /// The step reached.
    pub step: Step,
    /// When the switch began.
    pub started: Timestamp,
    /// Why the switch is being rolled back.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// A rollback, kept for `status` and reports.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rollback {
    /// The release that failed.
    pub from: ReleaseName,
    /// The release running again.
    pub to: Option<ReleaseName>,
    /// The serial that asked for `from`.
    pub serial: Option<u64>,
    /// When.
    pub at: Timestamp,
    /// Why: the health check's output (last 2 KB).
    pub output: String,
}

/// `release.json`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReleaseState {
    /// A switch in progress.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub journal: Option<Journal>,
    /// Releases switched to, oldest first (for retention).
    #[serde(default)]
    pub history: Vec<ReleaseName>,
    /// The health check of each installed release (a rollback checks the
    /// old release with its own).
    #[serde(default)]
    pub health: BTreeMap<ReleaseName, BundleHealthCheck>,
    /// The last rollback.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_rollback: Option<Rollback>,
    /// A version not to try again for this serial (no update loop).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub blocked: Option<(ReleaseName, u64)>,
}

/// How a switch ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SwitchResult {
    /// The new release is healthy and current.
    Committed,
    /// It failed its health check; the old release is current again.
    RolledBack(Rollback),
}

/// The releases directory and its `current` symlink. Everything below
/// `software_root` is reached by directory handle, one component at a time
/// without following a symlink ([`Dir`]): a release directory, a `VERSION`
/// file or `releases/` itself that is a symlink is not used, and removal
/// unlinks a symlink instead of following it.
#[derive(Debug, Clone)]
pub struct Layout {
    /// `software_root`.
    pub root: PathBuf,
}

impl Layout {
    /// `releases/`.
    pub fn releases(&self) -> PathBuf {
        self.root.join("releases")
    }
    /// `releases/<name>`.
    pub fn dir(&self, name: &ReleaseName) -> PathBuf {
        self.releases().join(name.as_str())
    }
    /// `releases/<name>.partial`.
    pub fn partial(&self, name: &ReleaseName) -> PathBuf {
        self.releases().join(Self::partial_name(name))
    }
    /// The name of `releases/<name>.partial`.
    pub fn partial_name(name: &ReleaseName) -> String {
        format!("{name}.partial")
    }
    /// `current`.
    pub fn current_link(&self) -> PathBuf {
        self.root.join("current")
    }

    /// `software_root`, opened (it may itself be a symlink: it is the
    /// configured root).
    pub fn root_dir(&self) -> io::Result<Dir> {
        Dir::open_root(&self.root)
    }

    /// `releases/` by handle (`None`: not there, or not a real directory).
    pub fn releases_dir(&self) -> Option<Dir> {
        self.root_dir().ok()?.subdir("releases").ok()?
    }

    /// `releases/` by handle, created when missing.
    pub fn create_releases_dir(&self) -> io::Result<Dir> {
        Ok(Dir::create_root(&self.root)?.walk_creating(["releases"])?.0)
    }

    /// The release `current` points at, when it is a symlink to
    /// `releases/<name>` and that is a real directory.
    pub fn current(&self) -> Option<ReleaseName> {
        let target = self.root_dir().ok()?.read_link("current").ok()??;
        let name = ReleaseName::new(target.file_name()?.to_str()?).ok()?;
        self.staged(&name).then_some(name)
    }

    /// Whether `name` is unpacked and complete (a real directory, not a
    /// symlink).
    pub fn staged(&self, name: &ReleaseName) -> bool {
        self.releases_dir()
            .and_then(|d| d.entry(name.as_str()).ok())
            .is_some_and(|e| e == Entry::Is(Kind::Directory))
    }

    /// Complete release directories (real directories, not symlinks).
    pub fn installed(&self) -> Vec<ReleaseName> {
        let mut out: Vec<ReleaseName> = self
            .releases_dir()
            .and_then(|d| d.list().ok())
            .unwrap_or_default()
            .into_iter()
            .filter(|(_, e)| *e == Entry::Is(Kind::Directory))
            .filter_map(|(n, _)| ReleaseName::new(&n).ok())
            .collect();
        out.sort();
        out
    }

    /// Creates `releases/`; removes `.partial` directories a crash left.
    pub fn prepare(&self) -> io::Result<()> {
        let releases = self.create_releases_dir()?;
        for (name, _) in releases.list()? {
            if name.ends_with(".partial") {
                releases.remove_tree(&name)?;
            }
        }
        Ok(())
    }

    /// A box that ran its software from a plain `current` directory:
    /// moves it to `releases/<name>` and points `current` at it. Returns
    /// the name it was adopted as. Safe to run again after a crash.
    pub fn adopt_plain_current(&self, now: Timestamp) -> io::Result<Option<ReleaseName>> {
        let root = match self.root_dir() {
            Ok(r) => r,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        if root.entry("current")? != Entry::Is(Kind::Directory) {
            return Ok(None);
        }
        // A VERSION file names it when there is one (a symlink there is
        // not read).
        let named = root
            .subdir("current")
            .ok()
            .flatten()
            .and_then(|d| d.open_file("VERSION").ok().flatten())
            .and_then(|f| {
                let mut text = String::new();
                io::Read::read_to_string(&mut io::Read::take(f, 256), &mut text).ok()?;
                ReleaseVersion::new(text.trim()).ok()
            })
            .map(|v| ReleaseName::from(&v));
        let name = named
            .unwrap_or_else(|| ReleaseName(format!("adopted-{}", now.strftime("%Y%m%d%H%M%S"))));
        let releases = self.create_releases_dir()?;
        if releases.entry(name.as_str())? != Entry::Missing {
            return Err(io::Error::other(format!(
                "`{}` is a directory and `{}` exists already: move one away",
                self.current_link().display(),
                self.dir(&name).display()
            )));
        }
        root.move_to("current", &releases, name.as_str())?;
        root.sync()?;
        releases.sync()?;
        self.point_current_at(&name)?;
        Ok(Some(name))
    }

    /// Atomically points `current` at `releases/<version>`: a new symlink
    /// under an unpredictable temp name renamed over `current`, then a
    /// directory fsync.
    pub fn point_current_at(&self, name: &ReleaseName) -> io::Result<()> {
        let root = self.root_dir()?;
        root.symlink(&Path::new("releases").join(name.as_str()), "current")?;
        Ok(root.sync()?)
    }

    /// Deletes release directories beyond the `keep` most recently used;
    /// never one in `protect`.
    pub fn prune(
        &self,
        history: &[ReleaseName],
        keep: usize,
        protect: &[&ReleaseName],
    ) -> Vec<ReleaseName> {
        let mut recent: Vec<&ReleaseName> = Vec::new();
        for v in history.iter().rev() {
            if !recent.contains(&v) {
                recent.push(v);
            }
        }
        recent.truncate(keep);
        let mut removed = Vec::new();
        for v in self.installed() {
            if recent.contains(&&v) || protect.contains(&&v) {
                continue;
            }
            if let Some(releases) = self.releases_dir()
                && releases.remove_tree(v.as_str()).is_ok()
            {
                let _ = releases.sync();
                removed.push(v);
            }
        }
        removed
    }
}

/// Loads `release.json` (absent: empty).
pub fn load_state(path: &Path) -> Result<ReleaseState, SwitchError> {
    match fs::read(path) {
        Ok(b) => serde_json::from_slice(&b).map_err(|source| SwitchError::Invalid {
            path: path.to_path_buf(),
            source,
        }),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(ReleaseState::default()),
        Err(source) => Err(SwitchError::Read {
            path: path.to_path_buf(),
            source,
        }),
    }
}

/// Why a switch (or reading its journal) failed.
#[derive(Debug, thiserror::Error)]
pub enum SwitchError {
    /// `release.json` cannot be read.
    #[error("cannot read `{}`: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// `release.json` is not valid.
    #[error("`{}` is not valid: {source}", path.display())]
    Invalid {
        /// The file.
        path: PathBuf,
        /// Why.
        source: serde_json::Error,
    },
    /// `release.json` cannot be written.
    #[error("cannot write `{}`: {source}", path.display())]
    Save {
        /// The file.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// The releases directory cannot be prepared.
    #[error("cannot prepare `{}`: {source}", path.display())]
    Prepare {
        /// The directory.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// The release to switch to is not unpacked.
    #[error("release {0} is not staged")]
    NotStaged(ReleaseName),
    /// `current` cannot be pointed at the new release.
    #[error("cannot switch `current` to {to}: {source}")]
    Point {
        /// The release.
        to: ReleaseName,
        /// Why.
        source: io::Error,
    },
    /// `current` cannot be pointed back at the old release.
    #[error("cannot switch `current` back to {to}: {source}")]
    PointBack {
        /// The release.
        to: ReleaseName,
        /// Why.
        source: io::Error,
    },
    /// Finishing a switch that is not in the journal.
    #[error("no switch in progress")]
    NoJournal,
    /// Releases are not managed on this box.
    #[error("software_root is not set in the configuration")]
    NoSoftwareRoot,
}

/// A maintenance window that cannot be evaluated.
#[derive(Debug, thiserror::Error)]
#[error("time zone `{zone}`: {source}")]
pub struct WindowError {
    /// The zone.
    pub zone: String,
    /// Why.
    pub source: jiff::Error,
}

/// Saves `release.json` atomically (fsync + rename + directory fsync).
pub fn save_state(path: &Path, state: &ReleaseState) -> io::Result<()> {
    let bytes = serde_json::to_vec_pretty(state).map_err(io::Error::other)?;
    fsx::write_atomic(path, &bytes)
}

/// Whether the maintenance window is open at `now` in `timezone`. Local
/// wall-clock time: on the day clocks go forward a window inside the
/// skipped hour does not open; on the day they go back it can open twice.
pub fn window_open(
    window: &MaintenanceWindow,
    timezone: &str,
    now: Timestamp,
) -> Result<bool, WindowError> {
    if window.range.is_none() {
        return Ok(true);
    }
    let tz = jiff::tz::TimeZone::get(timezone).map_err(|source| WindowError {
        zone: timezone.to_owned(),
        source,
    })?;
    let local = now.to_zoned(tz);
    let minute =
        u16::try_from(i32::from(local.hour()) * 60 + i32::from(local.minute())).unwrap_or(0);
    Ok(window.contains(minute))
}

/// The update lock: held by the local app (`flock`) while a match is
/// played. `Ok(Some(file))` means it was free and is now held by us until
/// the file is dropped; `Ok(None)` means someone holds it.
pub fn try_lock(path: &Path) -> io::Result<Option<Option<File>>> {
    let file = match fs::OpenOptions::new().read(true).open(path) {
        Ok(f) => f,
        // No lock file: nobody holds it.
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Some(None)),
        Err(e) => return Err(e),
    };
    match rustix::fs::flock(&file, rustix::fs::FlockOperation::NonBlockingLockExclusive) {
        Ok(()) => Ok(Some(Some(file))),
        Err(e) if e == rustix::io::Errno::WOULDBLOCK => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// `rolled back from <v> to <w>: <output>`.
pub fn rollback_message(rb: &Rollback) -> String {
    format!(
        "rolled back from {} to {}: {}",
        rb.from,
        rb.to.as_ref().map_or("(none)", ReleaseName::as_str),
        rb.output.trim()
    )
}

/// The last `n` bytes of `s`, on a character boundary.
pub fn tail(s: &str, n: usize) -> String {
    if s.len() <= n {
        return s.to_owned();
    }
    let mut start = s.len() - n;
    while !s.is_char_boundary(start) {
        start += 1;
    }
    s[start..].to_owned()
}

/// Runs an argv on the host with `TOUCHLINE_SOFTWARE_ROOT` and
/// `TOUCHLINE_RELEASE` in its environment, in the release's directory;
/// returns whether it succeeded and its output.
pub async fn run_command(
    host: &dyn Host,
    argv: &[String],
    root: &Path,
    release: Option<&str>,
    timeout: Duration,
) -> (bool, String) {
    let mut cmd = HostCommand::new(argv, timeout);
    cmd.env.push((
        "TOUCHLINE_SOFTWARE_ROOT".into(),
        root.as_os_str().to_owned(),
    ));
    if let Some(r) = release {
        cmd.env.push(("TOUCHLINE_RELEASE".into(), r.into()));
        let dir = root.join("releases").join(r);
        if dir.is_dir() {
            cmd.cwd = Some(dir);
        }
    }
    let out = host.run(cmd).await;
    (out.ok, out.output)
}

/// Runs a release's health check until it passes or its timeout runs
/// out; returns whether it passed and the last attempt's output.
pub async fn health_check(
    host: &dyn Host,
    check: &BundleHealthCheck,
    client: &reqwest::Client,
    root: &Path,
    release: &str,
) -> (bool, String) {
    if check.http.is_none() && check.command.is_none() {
        return (true, "no health check defined".into());
    }
    let budget = check.timeout.to_std();
    let deadline = tokio::time::Instant::now() + budget;
    let mut attempts = 0u32;
    loop {
        attempts += 1;
        let (ok, out) = health_once(host, check, client, root, release, deadline).await;
        if ok {
            return (true, out);
        }
        if tokio::time::Instant::now() + HEALTH_RETRY >= deadline {
            return (
                false,
                format!(
                    "health check failed for {}s ({attempts} attempts); last: {}",
                    budget.as_secs(),
                    out.trim()
                ),
            );
        }
        tokio::time::sleep(HEALTH_RETRY).await;
    }
}

async fn health_once(
    host: &dyn Host,
    check: &BundleHealthCheck,
    client: &reqwest::Client,
    root: &Path,
    release: &str,
    deadline: tokio::time::Instant,
) -> (bool, String) {
    let left = deadline
        .saturating_duration_since(tokio::time::Instant::now())
        .max(Duration::from_secs(1));
    if let Some(url) = &check.http {
        let r = client
            .get(url)
            .timeout(left.min(Duration::from_secs(10)))
            .send()
            .await;
        match r {
            Ok(resp) => {
                let status = resp.status();
                let body = resp.text().await.unwrap_or_default();
                if !status.is_success() {
                    return (
                        false,
                        format!("GET {url}: HTTP {status}: {}", tail(body.trim(), 512)),
                    );
                }
            }
            Err(e) => {
                return (
                    false,
                    format!("GET {url}: {}", crate::fetch::error_text(&e)),
                );
            }
        }
    }
    if let Some(argv) = &check.command {
        let (ok, out) = run_command(host, argv, root, Some(release), left).await;
        if !ok {
            return (false, out);
        }
    }
    (true, "healthy".into())
}

/// Performs and recovers switches; owns nothing but borrows everything.
#[allow(missing_debug_implementations)]
pub struct Switcher<'a> {
    /// The releases directory.
    pub layout: &'a Layout,
    /// `release.json`.
    pub state_path: &'a Path,
    /// Its content.
    pub state: &'a mut ReleaseState,
    /// Stops the services (argv; empty: nothing).
    pub stop: &'a [String],
    /// Starts them.
    pub start: &'a [String],
    /// For HTTP health checks.
    pub client: &'a reqwest::Client,
    /// Runs the commands.
    pub host: &'a dyn Host,
    /// Called while waiting (the systemd watchdog).
    pub tick: &'a (dyn Fn() + Send + Sync),
}

impl Switcher<'_> {
    fn save(&self) -> Result<(), SwitchError> {
        save_state(self.state_path, self.state).map_err(|source| SwitchError::Save {
            path: self.state_path.to_path_buf(),
            source,
        })
    }

    async fn command(&self, argv: &[String], release: Option<&ReleaseName>) -> (bool, String) {
        (self.tick)();
        let release = release.map(ReleaseName::as_str);
        let r = run_command(self.host, argv, &self.layout.root, release, COMMAND_TIMEOUT).await;
        (self.tick)();
        r
    }

    async fn check(&self, release: &ReleaseName) -> (bool, String) {
        let Some(check) = self.state.health.get(release).cloned() else {
            return (true, format!("no health check known for {release}"));
        };
        let ticking = async {
            loop {
                tokio::time::sleep(Duration::from_secs(5)).await;
                (self.tick)();
            }
        };
        tokio::select! {
            r = health_check(self.host, &check, self.client, &self.layout.root, release.as_str()) => r,
            () = ticking => unreachable!("the ticker never ends"),
        }
    }

    /// Switches `current` to `to` (staged), then health-checks it and
    /// commits or rolls back. Call with the update lock held.
    pub async fn switch(
        &mut self,
        to: &ReleaseName,
        serial: Option<u64>,
        now: Timestamp,
    ) -> Result<SwitchResult, SwitchError> {
        if !self.layout.staged(to) {
            return Err(SwitchError::NotStaged(to.clone()));
        }
        self.state.journal = Some(Journal {
            from: self.layout.current(),
            to: to.clone(),
            serial,
            step: Step::Stopping,
            started: now,
            reason: None,
        });
        self.save()?;
        fsx::crash_point("release-journal");
        let from = self.state.journal.as_ref().and_then(|j| j.from.clone());
        let (ok, out) = self.command(self.stop, from.as_ref()).await;
        if !ok {
            tracing::warn!(output = %out.trim(), "stop_command failed; switching anyway");
        }
        if let Err(e) = self.layout.point_current_at(to) {
            // Nothing switched: the old release starts again.
            let _ = self.command(self.start, from.as_ref()).await;
            self.state.journal = None;
            self.save()?;
            return Err(SwitchError::Point {
                to: to.clone(),
                source: e,
            });
        }
        fsx::crash_point("release-switched");
        self.set_step(Step::Switched)?;
        fsx::crash_point("release-started");
        self.finish(now).await
    }

    fn set_step(&mut self, step: Step) -> Result<(), SwitchError> {
        if let Some(j) = &mut self.state.journal {
            j.step = step;
        }
        self.save()
    }

    /// `current` points at the new release: start, check, commit or roll
    /// back.
    async fn finish(&mut self, now: Timestamp) -> Result<SwitchResult, SwitchError> {
        let Some(j) = self.state.journal.clone() else {
            return Err(SwitchError::NoJournal);
        };
        let (started, start_out) = self.command(self.start, Some(&j.to)).await;
        fsx::crash_point("release-checking");
        let (healthy, out) = if started {
            self.check(&j.to).await
        } else {
            (false, start_out)
        };
        if healthy {
            self.state.journal = None;
            // The release switched from (an adopted one is not in the
            // history yet) stays the previous one: never pruned.
            if let Some(from) = &j.from
                && !self.state.history.contains(from)
            {
                self.state.history.push(from.clone());
            }
            self.state.history.retain(|v| v != &j.to);
            self.state.history.push(j.to.clone());
            let excess = self.state.history.len().saturating_sub(32);
            self.state.history.drain(..excess);
            self.save()?;
            tracing::info!(release = %j.to, "release applied");
            return Ok(SwitchResult::Committed);
        }
        tracing::warn!(release = %j.to, output = %out.trim(), "release unhealthy; rolling back");
        if let Some(j) = &mut self.state.journal {
            j.reason = Some(tail(out.trim(), OUTPUT_TAIL));
        }
        self.set_step(Step::RollingBack)?;
        fsx::crash_point("release-rolling-back");
        self.roll_back(now).await
    }

    /// `to` failed: back to `from`, started and checked.
    async fn roll_back(&mut self, now: Timestamp) -> Result<SwitchResult, SwitchError> {
        let Some(j) = self.state.journal.clone() else {
            return Err(SwitchError::NoJournal);
        };
        let mut output = j.reason.clone().unwrap_or_default();
        if let Some(from) = &j.from {
            let _ = self.command(self.stop, Some(&j.to)).await;
            self.layout
                .point_current_at(from)
                .map_err(|source| SwitchError::PointBack {
                    to: from.clone(),
                    source,
                })?;
            fsx::crash_point("release-switched-back");
            let (started, start_out) = self.command(self.start, Some(from)).await;
            let (healthy, out) = if started {
                self.check(from).await
            } else {
                (false, start_out)
            };
            if !healthy {
                output.push_str(&format!(
                    "\nthe previous release {from} is not healthy either: {}",
                    out.trim()
                ));
            }
        } else {
            output.push_str("\nno previous release to go back to: it keeps running");
        }
        let rb = Rollback {
            from: j.to.clone(),
            to: j.from.clone(),
            serial: j.serial,
            at: now,
            output: tail(&output, OUTPUT_TAIL),
        };
        self.state.last_rollback = Some(rb.clone());
        if let Some(s) = j.serial {
            self.state.blocked = Some((j.to.clone(), s));
        }
        self.state.journal = None;
        self.save()?;
        Ok(SwitchResult::RolledBack(rb))
    }

    /// After a restart (power cut, kill): finishes or undoes the switch the
    /// journal describes. `None` when there was nothing to recover or the
    /// switch had not happened yet (it will be tried again).
    pub async fn recover(&mut self, now: Timestamp) -> Result<Option<SwitchResult>, SwitchError> {
        let Some(j) = self.state.journal.clone() else {
            return Ok(None);
        };
        tracing::warn!(release = %j.to, step = ?j.step, "finishing an interrupted release switch");
        match j.step {
            Step::Stopping if self.layout.current().as_ref() == Some(&j.to) => {
                // Cut between the rename and the journal update.
                self.set_step(Step::Switched)?;
                self.finish(now).await.map(Some)
            }
            Step::Stopping => {
                let _ = self.command(self.start, j.from.as_ref()).await;
                self.state.journal = None;
                self.save()?;
                Ok(None)
            }
            Step::Switched => self.finish(now).await.map(Some),
            Step::RollingBack => self.roll_back(now).await.map(Some),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(s: &str) -> ReleaseName {
        ReleaseName::new(s).unwrap()
    }

    fn name(o: Option<ReleaseName>) -> Option<String> {
        o.map(String::from)
    }

    fn at(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    #[test]
    fn the_window_is_local_time_in_the_fleet_zone() {
        let w = MaintenanceWindow::parse("03:00-05:00").unwrap();
        // Winter: Paris is UTC+1.
        assert!(!window_open(&w, "Europe/Paris", at("2026-01-10T01:59:00Z")).unwrap());
        assert!(window_open(&w, "Europe/Paris", at("2026-01-10T02:00:00Z")).unwrap());
        assert!(window_open(&w, "Europe/Paris", at("2026-01-10T03:59:00Z")).unwrap());
        assert!(!window_open(&w, "Europe/Paris", at("2026-01-10T04:00:00Z")).unwrap());
        // Summer: UTC+2.
        assert!(window_open(&w, "Europe/Paris", at("2026-07-10T01:00:00Z")).unwrap());
        assert!(!window_open(&w, "Europe/Paris", at("2026-07-10T03:00:00Z")).unwrap());
        assert!(
            window_open(
                &MaintenanceWindow::ANY_TIME,
                "Nowhere/Atlantis",
                at("2026-07-10T03:00:00Z")
            )
            .unwrap()
        );
        assert!(
            window_open(&w, "Nowhere/Atlantis", at("2026-07-10T03:00:00Z"))
                .unwrap_err()
                .to_string()
                .starts_with("time zone `Nowhere/Atlantis`")
        );
    }

    /// Every minute of a day, in UTC, for which the window is open.
    fn open_minutes(w: &str, day: &str) -> Vec<Timestamp> {
        let w = MaintenanceWindow::parse(w).unwrap();
        let start = at(&format!("{day}T00:00:00Z")) - jiff::SignedDuration::from_hours(2);
        (0..24 * 60)
            .map(|m| start + jiff::SignedDuration::from_mins(m))
            .filter(|t| window_open(&w, "Europe/Paris", *t).unwrap())
            .collect()
    }

    #[test]
    fn dst_changeover_days() {
        // 2026-03-29: 02:00 local jumps to 03:00. A 03:00-05:00 window is
        // two real hours, starting at 01:00Z (03:00 CEST).
        let spring = open_minutes("03:00-05:00", "2026-03-29");
        assert_eq!(spring.len(), 120);
        assert_eq!(spring[0], at("2026-03-29T01:00:00Z"));
        // A window inside the skipped hour does not open that night.
        let skipped = open_minutes("02:00-02:30", "2026-03-29");
        assert!(
            skipped
                .iter()
                .all(|t| *t < at("2026-03-29T00:00:00Z") || *t >= at("2026-03-30T00:00:00Z")),
            "{skipped:?}"
        );
        // 2026-10-25: 03:00 local falls back to 02:00. 02:00-03:00 local
        // happens twice: two real hours.
        let autumn: Vec<_> = open_minutes("02:00-03:00", "2026-10-25")
            .into_iter()
            .filter(|t| *t >= at("2026-10-24T22:00:00Z"))
            .collect();
        assert_eq!(autumn.len(), 120);
        assert_eq!(autumn[0], at("2026-10-25T00:00:00Z"));
        // 03:00-05:00 that day: 03:00 CET = 02:00Z, two real hours.
        let after: Vec<_> = open_minutes("03:00-05:00", "2026-10-25")
            .into_iter()
            .filter(|t| *t >= at("2026-10-24T22:00:00Z"))
            .collect();
        assert_eq!(after.len(), 120);
        assert_eq!(after[0], at("2026-10-25T02:00:00Z"));
    }

    #[test]
    fn current_switches_atomically_and_prunes_keep_the_protected() {
        let tmp = tempfile::tempdir().unwrap();
        let l = Layout {
            root: tmp.path().to_path_buf(),
        };
        l.prepare().unwrap();
        for v in ["1.0.0", "1.1.0", "1.2.0", "1.3.0"] {
            fs::create_dir_all(l.dir(&n(v))).unwrap();
        }
        fs::create_dir_all(l.partial(&n("1.4.0"))).unwrap();
        l.prepare().unwrap();
        assert!(
            !l.partial(&n("1.4.0")).exists(),
            "a crash leftover is removed"
        );
        assert_eq!(l.current(), None);
        l.point_current_at(&n("1.0.0")).unwrap();
        assert_eq!(name(l.current()).as_deref(), Some("1.0.0"));
        l.point_current_at(&n("1.3.0")).unwrap();
        assert_eq!(name(l.current()).as_deref(), Some("1.3.0"));
        assert_eq!(
            fs::read_link(l.current_link()).unwrap(),
            Path::new("releases/1.3.0"),
            "relative, so the tree can move"
        );
        let history: Vec<ReleaseName> = ["1.0.0", "1.1.0", "1.2.0", "1.3.0"].map(n).into();
        let removed = l.prune(&history, 2, &[&n("1.3.0"), &n("1.0.0")]);
        assert_eq!(removed, vec!["1.1.0"]);
        assert_eq!(l.installed(), vec!["1.0.0", "1.2.0", "1.3.0"]);
    }

    #[test]
    fn a_plain_current_directory_is_adopted() {
        let tmp = tempfile::tempdir().unwrap();
        let l = Layout {
            root: tmp.path().to_path_buf(),
        };
        fs::create_dir_all(l.current_link().join("www")).unwrap();
        fs::write(l.current_link().join("VERSION"), "2.0.9\n").unwrap();
        fs::write(l.current_link().join("www/index.html"), "hi").unwrap();
        let adopted = l.adopt_plain_current(at("2026-01-01T00:00:00Z")).unwrap();
        assert_eq!(name(adopted).as_deref(), Some("2.0.9"));
        assert_eq!(name(l.current()).as_deref(), Some("2.0.9"));
        assert_eq!(
            fs::read_to_string(l.current_link().join("www/index.html")).unwrap(),
            "hi"
        );
        // Again: nothing to do.
        assert_eq!(
            l.adopt_plain_current(at("2026-01-01T00:00:00Z")).unwrap(),
            None
        );
        // Without a VERSION file: a dated name.
        let tmp = tempfile::tempdir().unwrap();
        let l = Layout {
            root: tmp.path().to_path_buf(),
        };
        fs::create_dir_all(l.current_link()).unwrap();
        let adopted = l.adopt_plain_current(at("2026-01-02T03:04:05Z")).unwrap();
        assert_eq!(name(adopted).as_deref(), Some("adopted-20260102030405"));
    }

    /// A checksum of every path, kind and content under `dir`.
    fn canary(dir: &Path) -> Vec<(String, String)> {
        let mut out = Vec::new();
        let mut stack = vec![dir.to_path_buf()];
        while let Some(d) = stack.pop() {
            for e in fs::read_dir(&d).unwrap().flatten() {
                let p = e.path();
                let m = fs::symlink_metadata(&p).unwrap();
                let what = if m.is_dir() {
                    stack.push(p.clone());
                    "dir".to_owned()
                } else if m.file_type().is_symlink() {
                    format!("link {}", fs::read_link(&p).unwrap().display())
                } else {
                    touchline_schemas::Sha256::digest(&fs::read(&p).unwrap()).to_hex()
                };
                out.push((p.display().to_string(), what));
            }
        }
        out.sort();
        out
    }

    #[test]
    fn symlinks_below_software_root_are_never_followed() {
        let tmp = tempfile::tempdir().unwrap();
        let outside = tmp.path().join("outside");
        fs::create_dir_all(outside.join("app")).unwrap();
        fs::write(outside.join("app/VERSION"), "6.6.6\n").unwrap();
        fs::write(outside.join("secret"), "9.9.9\n").unwrap();
        let before = canary(&outside);
        let l = Layout {
            root: tmp.path().join("software"),
        };
        l.prepare().unwrap();
        fs::create_dir_all(l.dir(&n("1.0.0"))).unwrap();
        // A release directory that is a symlink to another tree: not
        // staged, not installed, not current, and pruning leaves the tree.
        std::os::unix::fs::symlink(outside.join("app"), l.dir(&n("6.6.6"))).unwrap();
        assert!(!l.staged(&n("6.6.6")));
        assert_eq!(l.installed(), vec!["1.0.0"]);
        std::os::unix::fs::symlink("releases/6.6.6", l.current_link()).unwrap();
        assert_eq!(l.current(), None);
        let _ = l.prune(&[n("1.0.0")], 1, &[]);
        // A crash leftover that is a symlink is unlinked, not emptied.
        std::os::unix::fs::symlink(&outside, l.partial(&n("2.0.0"))).unwrap();
        l.prepare().unwrap();
        assert!(fs::symlink_metadata(l.partial(&n("2.0.0"))).is_err());
        // A plain `current` whose VERSION is a symlink: the link is not
        // read (the release gets a dated name).
        fs::remove_file(l.current_link()).unwrap();
        fs::create_dir_all(l.current_link()).unwrap();
        std::os::unix::fs::symlink(outside.join("secret"), l.current_link().join("VERSION"))
            .unwrap();
        let adopted = l.adopt_plain_current(at("2026-01-02T03:04:05Z")).unwrap();
        assert_eq!(name(adopted).as_deref(), Some("adopted-20260102030405"));
        // `releases/` itself swapped for a symlink: nothing is listed
        // through it, and `prepare` refuses it with its name.
        fs::rename(l.releases(), tmp.path().join("moved")).unwrap();
        std::os::unix::fs::symlink(&outside, l.releases()).unwrap();
        assert_eq!(l.installed(), Vec::<ReleaseName>::new());
        let e = l.prepare().unwrap_err().to_string();
        assert!(e.contains("is a symlink: not followed"), "{e}");
        assert_eq!(
            canary(&outside),
            before,
            "nothing outside software_root changed"
        );
    }

    #[test]
    fn a_release_name_is_one_path_component() {
        for bad in ["", ".", "..", "../etc", "a/b", "2.0.0.partial", "a\0b"] {
            assert!(ReleaseName::new(bad).is_err(), "{bad:?}");
        }
        assert_eq!(n("2.1.3").version(), ReleaseVersion::new("2.1.3").ok());
        assert_eq!(n("adopted-20260102030405").version(), None);
        // A release.json naming a path outside `releases/` does not load.
        let bad = r#"{"history": ["../../etc"]}"#;
        assert!(serde_json::from_str::<ReleaseState>(bad).is_err());
        let good = r#"{"history": ["1.0.0"], "blocked": ["1.1.0", 7]}"#;
        let st: ReleaseState = serde_json::from_str(good).unwrap();
        assert_eq!(st.blocked, Some((n("1.1.0"), 7)));
    }

    #[test]
    fn the_update_lock_is_seen_when_another_process_holds_it() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("update.lock");
        assert!(
            matches!(try_lock(&path).unwrap(), Some(None)),
            "no file: free"
        );
        fs::write(&path, "").unwrap();
        // -o: the lock stays with flock itself, not with `sleep`.
        let mut holder = std::process::Command::new("flock")
            .arg("-o")
            .arg(&path)
            .args(["sleep", "30"])
            .spawn()
            .unwrap();
        let t0 = std::time::Instant::now();
        while try_lock(&path).unwrap().is_some() {
            assert!(
                t0.elapsed() < Duration::from_secs(10),
                "flock never took the lock"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        holder.kill().unwrap();
        holder.wait().unwrap();
        // flock(1)'s child closes its copy of the lock before it runs
        // `sleep`; killed in between, the child holds it a moment longer.
        let t0 = std::time::Instant::now();
        let held = loop {
            match try_lock(&path).unwrap() {
                Some(guard) => break guard,
                None => {
                    assert!(t0.elapsed() < Duration::from_secs(10), "never freed");
                    std::thread::sleep(Duration::from_millis(20));
                }
            }
        };
        assert!(held.is_some(), "free again, and held by us");
    }

    #[test]
    fn tail_keeps_the_end_on_a_char_boundary() {
        assert_eq!(tail("abc", 10), "abc");
        assert_eq!(tail("température", 8), "érature");
        assert_eq!(tail("température", 7), "rature");
    }
}
