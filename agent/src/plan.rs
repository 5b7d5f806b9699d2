//! The pass's decision, as a pure function: [`plan`] takes what the
//! bundle wants ([`Desired`]), what the `observe` module saw on the box
//! ([`Observed`]), the agent's state and the time, and returns a
//! [`PassPlan`]: which blobs to fetch, which files to place, adopt, leave
//! (and why) or remove, the `configuration.json` to write, what blocks the
//! pass (space, size), and the release step (up to date, held back, stage,
//! wait for the window or the lock, switch). No I/O, no clock, no mutation:
//! every branch is a unit test below, and the executor
//! (`agent/execute.rs`) only carries the plan out.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use jiff::Timestamp;
use serde_json::{Map, Value};
use touchline_schemas::bundle::DesiredRelease;
use touchline_schemas::{Bundle, ReleaseVersion, Sha256, TargetPath};

use crate::beneath::Kind;
use crate::fsx::human_bytes;
use crate::release::{ReleaseName, ReleaseState, rollback_message, window_open};
use crate::state::State;

/// What the pass must bring about: the accepted bundle and the box's
/// limits from its configuration.
#[derive(Debug, Clone, Copy)]
pub struct Desired<'a> {
    /// The accepted bundle.
    pub bundle: &'a Bundle,
    /// Largest file the box downloads (`max_download_bytes`).
    pub max_download_bytes: u64,
    /// Space kept free on each filesystem (`space_reserve_bytes`).
    pub space_reserve_bytes: u64,
}

/// What stands at a path the bundle lists.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Found {
    /// Nothing.
    Missing,
    /// A regular file with this content.
    File(Sha256),
    /// A directory, a symlink, a fifo…: never followed.
    NotAFile,
    /// A directory above the path is something else (a symlink, a file,
    /// a fifo): never followed, so a conflict even where the agent placed
    /// the file before.
    Occupied {
        /// The component in the way.
        at: PathBuf,
        /// What stands there.
        what: Kind,
    },
}

/// `configuration.json` as found.
#[derive(Debug, Clone, PartialEq)]
pub enum ConfigFile {
    /// Absent.
    Missing,
    /// A JSON object.
    Object(Map<String, Value>),
    /// Present but not a JSON object (rewritten).
    Unreadable,
    /// A symlink, directory or fifo: not read, never written through, a
    /// conflict.
    NotAFile(Kind),
}

/// A blob of the content store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stored {
    /// Complete and vouched for (hashed, or stat unchanged since).
    Complete,
    /// Present with the right size but the wrong content (a hard-linked
    /// video edited in place): evicted, then fetched again.
    Corrupt,
    /// Absent; `partial` bytes of a resumable download are there.
    Missing {
        /// Bytes already downloaded.
        partial: u64,
    },
}

/// Free space on one filesystem.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Free {
    /// The path whose filesystem was asked (the nearest existing ancestor).
    pub probe: PathBuf,
    /// Bytes available (`u64::MAX` when unknown).
    pub available: u64,
}

/// The update lock, as probed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lock {
    /// Nobody holds it (or there is no lock file).
    Free,
    /// The local app holds it (a match is on).
    Held,
    /// It could not be checked.
    Unreadable {
        /// The lock file.
        path: PathBuf,
        /// Why.
        error: String,
    },
}

/// The releases on the box (when `software_root` is set).
#[derive(Debug, Clone, PartialEq)]
pub struct ReleasesSeen {
    /// The release `current` points at.
    pub current: Option<ReleaseName>,
    /// Something stands at `current` (a symlink, or a plain directory to
    /// adopt): a switch is not a first install.
    pub current_exists: bool,
    /// The bundle's release is unpacked under `releases/`.
    pub staged: bool,
    /// Its package is in the content store.
    pub package_stored: bool,
    /// `release.json`.
    pub state: ReleaseState,
    /// The update lock.
    pub lock: Lock,
    /// Since when the lock has been seen held (the agent's memory).
    pub lock_since: Option<Timestamp>,
    /// Free space where packages are downloaded.
    pub package_space: Free,
}

/// Everything [`plan`] needs to know about the box.
#[derive(Debug, Clone, PartialEq)]
pub struct Observed {
    /// Each path the bundle lists.
    pub targets: BTreeMap<TargetPath, Found>,
    /// `configuration.json`.
    pub config: ConfigFile,
    /// Each blob the bundle's files need.
    pub blobs: BTreeMap<Sha256, Stored>,
    /// Where downloads go.
    pub downloads: Free,
    /// The videos directory, when it is on another filesystem than the
    /// store (placing then copies instead of hard-linking).
    pub copies: Option<Free>,
    /// The releases (`None`: `software_root` is not set).
    pub releases: Option<ReleasesSeen>,
}

/// Why a file is placed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PlaceReason {
    /// Nothing there yet.
    Missing,
    /// Ours, with other content (changed on the box, or by the bundle).
    Changed,
    /// Ours, replaced by something that is not a file.
    NotAFile,
}

/// Why a listed file is left as it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LeaveReason {
    /// Ours, with the right content.
    UpToDate,
    /// The club's file, with other content: a conflict, reported.
    ClubFile,
    /// The club's directory (or link, fifo…) at the path: a conflict.
    ClubNotAFile,
    /// A directory above the path is not a directory (a symlink, a
    /// file…): a conflict, never followed.
    Occupied,
}

/// What happens to one listed path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileAction {
    /// Link or copy the store's blob there.
    Place(PlaceReason),
    /// The club's file has the right content: it becomes ours as it is.
    Adopt,
    /// Nothing.
    Leave(LeaveReason),
}

/// One listed path and its fate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileStep {
    /// The path under `videos_dir`.
    pub path: TargetPath,
    /// The content the bundle wants there.
    pub sha256: Sha256,
    /// What happens.
    pub action: FileAction,
}

/// A blob to download.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fetch {
    /// Its hash.
    pub sha256: Sha256,
    /// Its signed size.
    pub size: u64,
    /// Extra URLs from the bundle (the controller and a bundle directory
    /// come first).
    pub urls: Vec<String>,
}

/// The `configuration.json` change.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ConfigPlan {
    /// The document to write (`None`: it is right as it is).
    pub write: Option<Map<String, Value>>,
    /// Managed keys changed on the box since the agent wrote them.
    pub drift: Vec<String>,
    /// The managed keys and values after this pass.
    pub managed: Map<String, Value>,
    /// `configuration.json` is not a regular file (a symlink…): nothing
    /// is read or written, a conflict.
    pub occupied: Option<Kind>,
}

/// What stops the pass before anything is written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Blocked {
    /// A filesystem lacks space.
    NoSpace {
        /// Bytes needed, the reserve included.
        need: u64,
        /// Bytes available.
        have: u64,
        /// What needs them.
        what: &'static str,
        /// On the filesystem of this path.
        probe: PathBuf,
    },
    /// A file is larger than the box downloads.
    TooLarge {
        /// The blob.
        sha256: Sha256,
        /// Its size.
        size: u64,
        /// `max_download_bytes`.
        max: u64,
    },
}

/// How the package of a release gets unpacked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Stage {
    /// Already unpacked.
    Staged,
    /// In the store: unpack it.
    Unpack,
    /// Download it, then unpack it.
    Fetch,
}

/// After staging: switch now, or why not.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Then {
    /// Take the update lock and switch (`first_install`: nothing ran
    /// before, so no window applies).
    Switch {
        /// Nothing ran before.
        first_install: bool,
    },
    /// The maintenance window is closed.
    WaitWindow,
    /// The window cannot be evaluated (unknown time zone).
    WindowError(String),
    /// The update lock is held (since when).
    WaitLock {
        /// Since when it is seen held.
        since: Timestamp,
    },
    /// The lock cannot be checked.
    LockError {
        /// The lock file.
        path: PathBuf,
        /// Why.
        error: String,
    },
}

/// The release step of the pass.
#[derive(Debug, Clone, PartialEq)]
pub enum ReleaseAction {
    /// The bundle pins no release.
    None,
    /// It pins one but `software_root` is not set.
    Unmanaged(ReleaseVersion),
    /// It pins one and the box manages releases.
    Managed {
        /// The release.
        want: DesiredRelease,
        /// Its health check differs from the one recorded: record it.
        record_health: bool,
        /// What to do.
        step: ReleaseStep,
    },
}

/// What to do about a managed release.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReleaseStep {
    /// It runs already.
    UpToDate,
    /// It was rolled back (or held back) for this serial.
    HeldBack {
        /// Why, and how to retry.
        message: String,
    },
    /// Its package cannot be staged.
    Refused {
        /// Why.
        message: String,
    },
    /// Stage it, then switch or wait.
    Install {
        /// How it gets unpacked.
        stage: Stage,
        /// Then.
        then: Then,
    },
}

/// Everything a pass will do.
#[derive(Debug, Clone, PartialEq)]
pub struct PassPlan {
    /// Each listed path, in the bundle's order.
    pub files: Vec<FileStep>,
    /// Paths the agent placed that the bundle no longer lists.
    pub remove: Vec<TargetPath>,
    /// `configuration.json`.
    pub config: ConfigPlan,
    /// Blobs evicted from the store before fetching (corrupt).
    pub evict: Vec<Sha256>,
    /// Blobs to download, in the bundle's order.
    pub fetch: Vec<Fetch>,
    /// What stops the files part of the pass.
    pub blocked: Option<Blocked>,
    /// The release step.
    pub release: ReleaseAction,
}

impl PassPlan {
    /// Paths to place, with their content.
    pub fn place(&self) -> impl Iterator<Item = (&TargetPath, &Sha256)> {
        self.files
            .iter()
            .filter(|f| matches!(f.action, FileAction::Place(_)))
            .map(|f| (&f.path, &f.sha256))
    }

    /// Paths to adopt.
    pub fn adopt(&self) -> impl Iterator<Item = (&TargetPath, &Sha256)> {
        self.files
            .iter()
            .filter(|f| f.action == FileAction::Adopt)
            .map(|f| (&f.path, &f.sha256))
    }

    /// Listed paths held by the club's files.
    pub fn conflicts(&self) -> impl Iterator<Item = &TargetPath> {
        self.files
            .iter()
            .filter(|f| {
                matches!(
                    f.action,
                    FileAction::Leave(
                        LeaveReason::ClubFile | LeaveReason::ClubNotAFile | LeaveReason::Occupied
                    )
                )
            })
            .map(|f| &f.path)
    }

    /// Nothing to write to the videos directory or the configuration.
    pub fn writes_nothing(&self) -> bool {
        self.place().next().is_none()
            && self.adopt().next().is_none()
            && self.remove.is_empty()
            && self.config.write.is_none()
    }
}

/// Plans a pass. Pure: the same inputs give the same plan.
pub fn plan(desired: &Desired<'_>, observed: &Observed, state: &State, now: Timestamp) -> PassPlan {
    let bundle = desired.bundle;
    let files: Vec<FileStep> = bundle
        .files
        .iter()
        .map(|f| FileStep {
            path: f.path.clone(),
            sha256: f.sha256,
            action: file_action(
                observed.targets.get(&f.path).unwrap_or(&Found::Missing),
                &f.sha256,
                state.placed.contains_key(&f.path),
            ),
        })
        .collect();
    let listed: BTreeSet<&TargetPath> = bundle.files.iter().map(|f| &f.path).collect();
    let remove = state
        .placed
        .keys()
        .filter(|p| !listed.contains(p))
        .cloned()
        .collect();
    let placed_shas: BTreeSet<&Sha256> = files
        .iter()
        .filter(|f| matches!(f.action, FileAction::Place(_)))
        .map(|f| &f.sha256)
        .collect();
    let evict = observed
        .blobs
        .iter()
        .filter(|(_, s)| **s == Stored::Corrupt)
        .map(|(sha, _)| *sha)
        .collect();
    let mut fetch: Vec<Fetch> = Vec::new();
    for f in &bundle.files {
        let stored = observed
            .blobs
            .get(&f.sha256)
            .copied()
            .unwrap_or(Stored::Missing { partial: 0 });
        if placed_shas.contains(&f.sha256)
            && stored != Stored::Complete
            && !fetch.iter().any(|m| m.sha256 == f.sha256)
        {
            fetch.push(Fetch {
                sha256: f.sha256,
                size: f.size,
                urls: f.urls.clone(),
            });
        }
    }
    let mut p = PassPlan {
        files,
        remove,
        config: plan_config(bundle, &observed.config, state),
        evict,
        fetch,
        blocked: None,
        release: ReleaseAction::None,
    };
    let download = download_bytes(observed, &p.fetch);
    p.blocked = blocked(desired, observed, &p, download);
    p.release = plan_release(desired, observed, download, now);
    p
}

/// What the planned downloads still have to bring (a resumable partial
/// download counts for what it holds).
fn download_bytes(observed: &Observed, fetch: &[Fetch]) -> u64 {
    fetch
        .iter()
        .map(|f| match observed.blobs.get(&f.sha256) {
            Some(Stored::Missing { partial }) => f.size.saturating_sub(*partial),
            _ => f.size,
        })
        .sum()
}

fn file_action(found: &Found, want: &Sha256, ours: bool) -> FileAction {
    match found {
        Found::Missing => FileAction::Place(PlaceReason::Missing),
        Found::NotAFile if ours => FileAction::Place(PlaceReason::NotAFile),
        Found::NotAFile => FileAction::Leave(LeaveReason::ClubNotAFile),
        Found::Occupied { .. } => FileAction::Leave(LeaveReason::Occupied),
        Found::File(h) if h == want && ours => FileAction::Leave(LeaveReason::UpToDate),
        Found::File(h) if h == want => FileAction::Adopt,
        Found::File(_) if ours => FileAction::Place(PlaceReason::Changed),
        Found::File(_) => FileAction::Leave(LeaveReason::ClubFile),
    }
}

/// The bundle's top-level keys replace the club's values for those keys;
/// keys the agent managed and the bundle dropped are removed; the club's
/// own keys stay.
fn plan_config(bundle: &Bundle, found: &ConfigFile, state: &State) -> ConfigPlan {
    let current = match found {
        ConfigFile::Object(m) => Some(m),
        ConfigFile::Missing | ConfigFile::Unreadable => None,
        ConfigFile::NotAFile(what) => {
            return ConfigPlan {
                write: None,
                drift: Vec::new(),
                managed: state.managed_config.clone(),
                occupied: Some(*what),
            };
        }
    };
    let mut doc = current.cloned().unwrap_or_default();
    let mut drift = Vec::new();
    for (k, v) in &state.managed_config {
        if !bundle.config.contains_key(k) {
            doc.remove(k);
        } else if doc.get(k) != Some(v) {
            drift.push(k.clone());
        }
    }
    for (k, v) in &bundle.config {
        doc.insert(k.clone(), v.clone());
    }
    let rewrite = current != Some(&doc) || *found == ConfigFile::Unreadable;
    ConfigPlan {
        write: rewrite.then_some(doc),
        drift,
        managed: bundle.config.clone(),
        occupied: None,
    }
}

/// Space first (downloads on the store's filesystem; copies on the videos
/// filesystem when it is another one), each with the reserve; then the
/// size cap of each download.
fn blocked(
    desired: &Desired<'_>,
    observed: &Observed,
    p: &PassPlan,
    download: u64,
) -> Option<Blocked> {
    let mut checks = vec![(&observed.downloads, download, "downloads")];
    if let Some(videos) = &observed.copies {
        let size_of = |sha: &Sha256| {
            desired
                .bundle
                .files
                .iter()
                .find(|f| f.sha256 == *sha)
                .map_or(0, |f| f.size)
        };
        let copies: u64 = p.place().map(|(_, sha)| size_of(sha)).sum();
        checks.push((videos, copies, "copies into the videos directory"));
    }
    for (free, need, what) in checks {
        if need == 0 {
            continue;
        }
        let want = need.saturating_add(desired.space_reserve_bytes);
        if want > free.available {
            return Some(Blocked::NoSpace {
                need: want,
                have: free.available,
                what,
                probe: free.probe.clone(),
            });
        }
    }
    p.fetch
        .iter()
        .find(|f| f.size > desired.max_download_bytes)
        .map(|f| Blocked::TooLarge {
            sha256: f.sha256,
            size: f.size,
            max: desired.max_download_bytes,
        })
}

fn plan_release(
    desired: &Desired<'_>,
    observed: &Observed,
    file_downloads: u64,
    now: Timestamp,
) -> ReleaseAction {
    let bundle = desired.bundle;
    let Some(want) = &bundle.software else {
        return ReleaseAction::None;
    };
    let Some(seen) = &observed.releases else {
        return ReleaseAction::Unmanaged(want.version.clone());
    };
    let v = ReleaseName::from(&want.version);
    let record_health = seen.state.health.get(&v) != Some(&want.health_check);
    let step = release_step(desired, want, seen, file_downloads, now);
    ReleaseAction::Managed {
        want: want.clone(),
        record_health,
        step,
    }
}

/// `file_downloads`: bytes the files part fetches first, on the same
/// filesystem as the package.
fn release_step(
    desired: &Desired<'_>,
    want: &DesiredRelease,
    seen: &ReleasesSeen,
    file_downloads: u64,
    now: Timestamp,
) -> ReleaseStep {
    let bundle = desired.bundle;
    let v = ReleaseName::from(&want.version);
    if seen.current.as_ref() == Some(&v) {
        return ReleaseStep::UpToDate;
    }
    if seen.state.blocked.as_ref() == Some(&(v.clone(), bundle.serial)) {
        let message = match &seen.state.last_rollback {
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
        return ReleaseStep::HeldBack { message };
    }
    let stage = if seen.staged {
        Stage::Staged
    } else if seen.package_stored {
        Stage::Unpack
    } else if want.size > desired.max_download_bytes {
        return ReleaseStep::Refused {
            message: format!(
                "release {v}: the package is {} bytes, over max_download_bytes ({})",
                want.size, desired.max_download_bytes
            ),
        };
    } else {
        let need = want.size.saturating_add(desired.space_reserve_bytes);
        let have = seen.package_space.available.saturating_sub(file_downloads);
        if need > have {
            return ReleaseStep::Refused {
                message: format!(
                    "not enough space: need {}, have {} (release {v} package)",
                    human_bytes(need),
                    human_bytes(have)
                ),
            };
        }
        Stage::Fetch
    };
    // The maintenance window, in the box's local time, unless the release
    // is urgent or nothing runs yet (a first install interrupts no screen).
    let first_install = seen.current.is_none() && !seen.current_exists;
    if !want.urgent && !first_install {
        match window_open(
            &bundle.agent.maintenance_window,
            &bundle.agent.timezone,
            now,
        ) {
            Err(e) => {
                return ReleaseStep::Install {
                    stage,
                    then: Then::WindowError(e.to_string()),
                };
            }
            Ok(false) => {
                return ReleaseStep::Install {
                    stage,
                    then: Then::WaitWindow,
                };
            }
            Ok(true) => {}
        }
    }
    let then = match &seen.lock {
        Lock::Free => Then::Switch { first_install },
        Lock::Held => Then::WaitLock {
            since: seen.lock_since.unwrap_or(now),
        },
        Lock::Unreadable { path, error } => Then::LockError {
            path: path.clone(),
            error: error.clone(),
        },
    };
    ReleaseStep::Install { stage, then }
}

#[cfg(test)]
mod tests;
