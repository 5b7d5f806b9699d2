//! The only code of a pass that reads the box: what stands at each path
//! the bundle lists (hashed once, then vouched for by the stat index),
//! `configuration.json`, the content store, free space, the releases and
//! the update lock. It returns plain data ([`Observed`]) for
//! [`crate::plan::plan`]; the index of hashes it keeps up to date is a
//! cache, not a decision.

use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::path::Path;

use serde_json::Value;
use touchline_schemas::Bundle;

use crate::error::PassError;
use crate::fetch::{self, Wanted};
use crate::fsx;
use crate::host::Host;
use crate::plan::{ConfigFile, Found, Free, Lock, Observed, ReleasesSeen, Stored};
use crate::release::{Layout, ReleaseName, ReleaseState, try_lock};
use crate::state::{Index, Stamp};

/// Where the box keeps what a pass looks at.
#[derive(Debug, Clone, Copy)]
pub struct BoxPaths<'a> {
    /// `videos_dir`.
    pub videos_dir: &'a Path,
    /// `configuration.json`.
    pub config_path: &'a Path,
    /// The content store.
    pub store: &'a fetch::Store,
    /// Free space.
    pub host: &'a dyn Host,
}

/// The releases as the agent knows them (`software_root` set).
#[derive(Debug, Clone, Copy)]
pub struct ReleasePaths<'a> {
    /// The releases directory.
    pub layout: &'a Layout,
    /// `release.json`, as loaded at the start of the pass.
    pub state: &'a ReleaseState,
    /// The update lock file.
    pub update_lock: &'a Path,
    /// Since when the lock is seen held.
    pub lock_since: Option<jiff::Timestamp>,
}

/// Looks at everything `bundle` concerns.
pub fn observe(
    bundle: &Bundle,
    at: BoxPaths<'_>,
    releases: Option<ReleasePaths<'_>>,
    index: &mut Index,
) -> Result<Observed, PassError> {
    let mut targets = BTreeMap::new();
    for f in &bundle.files {
        let target = at.videos_dir.join(f.path.as_str());
        targets.insert(f.path.clone(), found(&target, index)?);
    }
    let mut blobs = BTreeMap::new();
    for f in &bundle.files {
        let w = Wanted {
            sha256: f.sha256,
            size: f.size,
        };
        blobs
            .entry(f.sha256)
            .or_insert_with(|| stored(at.store, &w, index));
    }
    let cas = at.store.root();
    let downloads = free(at.host, &cas);
    let copies = (!fsx::same_filesystem(&cas, at.videos_dir)).then(|| free(at.host, at.videos_dir));
    let releases = releases.map(|r| releases_seen(bundle, at, r, &downloads));
    Ok(Observed {
        targets,
        config: config_file(at.config_path)?,
        blobs,
        downloads,
        copies,
        releases,
    })
}

/// What stands at `target` (not following a symlink at it).
fn found(target: &Path, index: &mut Index) -> Result<Found, PassError> {
    let meta = match fs::symlink_metadata(target) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Found::Missing),
        Err(source) => {
            return Err(PassError::Io {
                action: "reading",
                path: target.to_path_buf(),
                source,
            });
        }
    };
    if !meta.is_file() {
        return Ok(Found::NotAFile);
    }
    if let Some(h) = index.known(target) {
        return Ok(Found::File(h));
    }
    // Unknown stat: hash it once.
    let h = fetch::hash_file(target).map_err(|source| PassError::Io {
        action: "hashing",
        path: target.to_path_buf(),
        source,
    })?;
    if let Ok(stamp) = Stamp::of(target) {
        index.files.insert(target.to_path_buf(), (stamp, h));
    }
    Ok(Found::File(h))
}

/// The store's copy of `w`: a copy whose stat changed (a hard-linked
/// video edited in place) is hashed again.
fn stored(store: &fetch::Store, w: &Wanted, index: &mut Index) -> Stored {
    if !store.has(w) {
        return Stored::Missing {
            partial: store.partial_bytes(w),
        };
    }
    let blob = store.blob(&w.sha256);
    if index.vouches(&blob, &w.sha256) {
        return Stored::Complete;
    }
    match fetch::hash_file(&blob) {
        Ok(h) if h == w.sha256 => {
            if let Ok(stamp) = Stamp::of(&blob) {
                index.files.insert(blob, (stamp, h));
            }
            Stored::Complete
        }
        _ => {
            tracing::warn!(sha256 = %w.sha256.to_hex(), "store copy is corrupt; evicting");
            index.files.remove(&blob);
            Stored::Corrupt
        }
    }
}

fn free(host: &dyn Host, path: &Path) -> Free {
    let probe = fsx::existing_ancestor(path);
    Free {
        probe: probe.to_path_buf(),
        available: host.free_space(probe).unwrap_or(u64::MAX),
    }
}

fn config_file(path: &Path) -> Result<ConfigFile, PassError> {
    match fs::read(path) {
        Ok(bytes) => Ok(match serde_json::from_slice::<Value>(&bytes) {
            Ok(Value::Object(m)) => ConfigFile::Object(m),
            _ => ConfigFile::Unreadable,
        }),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(ConfigFile::Missing),
        Err(source) => Err(PassError::Io {
            action: "reading",
            path: path.to_path_buf(),
            source,
        }),
    }
}

fn releases_seen(
    bundle: &Bundle,
    at: BoxPaths<'_>,
    r: ReleasePaths<'_>,
    downloads: &Free,
) -> ReleasesSeen {
    let current = r.layout.current();
    let want = bundle.software.as_ref();
    let version = want.map(|w| ReleaseName::from(&w.version));
    let (staged, package_stored) = match (want, &version) {
        (Some(w), Some(name)) => (
            r.layout.staged(name),
            at.store.has(&Wanted {
                sha256: w.sha256,
                size: w.size,
            }),
        ),
        _ => (false, false),
    };
    // The lock is probed only when a switch may follow: the local app
    // takes it during a match, and we hold it only for an instant here.
    let may_switch = version.is_some() && current != version;
    let lock = if may_switch {
        match try_lock(r.update_lock) {
            Ok(Some(_guard)) => Lock::Free,
            Ok(None) => Lock::Held,
            Err(e) => Lock::Unreadable {
                path: r.update_lock.to_path_buf(),
                error: e.to_string(),
            },
        }
    } else {
        Lock::Free
    };
    ReleasesSeen {
        current_exists: fs::symlink_metadata(r.layout.current_link()).is_ok(),
        current,
        staged,
        package_stored,
        state: r.state.clone(),
        lock,
        lock_since: r.lock_since,
        // Packages download into the same store as the files.
        package_space: downloads.clone(),
    }
}
