//! The only code of a pass that reads the box: what stands at each path
//! the bundle lists (hashed once, then vouched for by the stat index),
//! `configuration.json`, the content store, free space, the releases and
//! the update lock. It returns plain data ([`Observed`]) for
//! [`crate::plan::plan`]; the index of hashes it keeps up to date is a
//! cache, not a decision.

use std::collections::BTreeMap;
use std::fs;
use std::io::{self, Read};
use std::path::Path;

use serde_json::Value;
use touchline_schemas::{Bundle, TargetPath};

use crate::beneath::{BeneathError, Dir};

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
    // The videos tree is the club's too: every path is walked down by
    // handle, never through a symlink (a symlinked root is allowed).
    let root = match Dir::open_root(at.videos_dir) {
        Ok(d) => Some(d),
        Err(e) if e.kind() == io::ErrorKind::NotFound => None,
        Err(source) => {
            return Err(PassError::Io {
                action: "opening",
                path: at.videos_dir.to_path_buf(),
                source,
            });
        }
    };
    for f in &bundle.files {
        let found = match &root {
            Some(root) => found(root, &f.path, index)?,
            None => Found::Missing,
        };
        targets.insert(f.path.clone(), found);
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

/// What stands at `path` beneath `root`: a symlink (or a file) where a
/// directory above it should be is [`Found::Occupied`]; at the path itself,
/// anything but a regular file is [`Found::NotAFile`]. Nothing is followed
/// and a fifo is never opened for reading.
fn found(root: &Dir, path: &TargetPath, index: &mut Index) -> Result<Found, PassError> {
    let target = root.path().join(path.as_str());
    let io = |action: &'static str| {
        let target = target.clone();
        move |source| PassError::Io {
            action,
            path: target,
            source,
        }
    };
    let parts: Vec<&str> = path.components().collect();
    let Some((name, dirs)) = parts.split_last() else {
        return Ok(Found::Missing);
    };
    let dir = match root.walk(dirs.iter().copied()) {
        Ok(Some(d)) => d,
        Ok(None) => return Ok(Found::Missing),
        Err(BeneathError::Occupied { path, what }) => {
            return Ok(Found::Occupied { at: path, what });
        }
        Err(BeneathError::Io { source, .. }) => return Err(io("reading")(source)),
    };
    let mut file = match dir.open_file(name) {
        Ok(Some(f)) => f,
        Ok(None) => return Ok(Found::Missing),
        Err(BeneathError::Occupied { .. }) => return Ok(Found::NotAFile),
        Err(BeneathError::Io { source, .. }) => return Err(io("reading")(source)),
    };
    let meta = file.metadata().map_err(io("reading"))?;
    let stamp = Stamp::of_metadata(&meta);
    if let Some(h) = index.known_stamp(&target, &stamp) {
        return Ok(Found::File(h));
    }
    // Unknown stat: hash it once, from the handle that was checked.
    let h = fetch::hash_reader(&mut file).map_err(io("hashing"))?;
    index.files.insert(target, (stamp, h));
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

/// `configuration.json`, opened by handle in its directory without
/// following a symlink: a symlink (or a fifo, a directory) there is a
/// conflict, never read through; a file larger than [`MAX_CONFIG_BYTES`]
/// is not read either (nobody's configuration is that big).
fn config_file(path: &Path) -> Result<ConfigFile, PassError> {
    let io = |source| PassError::Io {
        action: "reading",
        path: path.to_path_buf(),
        source,
    };
    let (Some(dir), Some(name)) = (path.parent(), path.file_name()) else {
        return Ok(ConfigFile::Missing);
    };
    let dir = match Dir::open_root(dir) {
        Ok(d) => d,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(ConfigFile::Missing),
        Err(e) => return Err(io(e)),
    };
    let file = match dir.open_file(&name.to_string_lossy()) {
        Ok(Some(f)) => f,
        Ok(None) => return Ok(ConfigFile::Missing),
        Err(BeneathError::Occupied { what, .. }) => return Ok(ConfigFile::NotAFile(what)),
        Err(BeneathError::Io { source, .. }) => return Err(io(source)),
    };
    let mut bytes = Vec::new();
    file.take(MAX_CONFIG_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(io)?;
    if bytes.len() as u64 > MAX_CONFIG_BYTES {
        return Ok(ConfigFile::Unreadable);
    }
    Ok(match serde_json::from_slice::<Value>(&bytes) {
        Ok(Value::Object(m)) => ConfigFile::Object(m),
        _ => ConfigFile::Unreadable,
    })
}

/// The largest `configuration.json` read (a bigger one is rewritten).
pub const MAX_CONFIG_BYTES: u64 = 16 * 1024 * 1024;

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
