//! Materializes a verified bundle on disk, once every file is in the
//! content store:
//!
//! - each listed video at `videos_dir/<path>`: a hard link to the store's
//!   copy (a 32 GB card cannot hold every video twice), or a copy + fsync
//!   when the store is on another filesystem; always through a hidden temp
//!   name and a rename, so the local app sees the old file or the new one;
//! - `configuration.json`: the bundle's top-level keys replace the club's
//!   values for those keys (drift is reported), the club's own keys are kept;
//!   written atomically, only when it changes;
//! - files the agent placed that the bundle no longer lists are removed;
//!   files it did not place are never touched (reported as local content);
//! - a managed video changed or deleted locally is put back (the stat index
//!   notices; with a hard link the store's copy changed too, so it is
//!   re-hashed and re-fetched when needed).
//!
//! What to do is decided by [`crate::plan::plan`]; this module carries out
//! the files and configuration part of a [`PassPlan`].

use std::collections::BTreeSet;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use serde_json::Value;
use touchline_schemas::{Sha256, TargetPath};

use crate::beneath::{BeneathError, Dir, Entry, Kind};
use crate::fsx;
use crate::plan::PassPlan;
use crate::state::{Index, Stamp, State};

/// An apply failure.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    /// I/O on a path.
    #[error("{action} `{path}`: {source}")]
    Io {
        /// What was being done.
        action: &'static str,
        /// Where.
        path: String,
        /// The error.
        source: io::Error,
    },
    /// Beneath the videos directory or the configuration's: a component
    /// became a symlink (or a file) since the pass looked, or I/O failed.
    #[error(transparent)]
    Beneath(#[from] BeneathError),
}

impl ApplyError {
    /// The filesystem is full (or over quota).
    pub fn is_disk_full(&self) -> bool {
        let source = match self {
            Self::Io { source, .. } => source,
            Self::Beneath(b) => match b.io() {
                Some(s) => s,
                None => return false,
            },
        };
        matches!(
            source.kind(),
            io::ErrorKind::StorageFull | io::ErrorKind::QuotaExceeded
        )
    }
}

fn io_err<'a>(action: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> ApplyError + 'a {
    move |source| ApplyError::Io {
        action,
        path: path.display().to_string(),
        source,
    }
}

/// Places one file as `name` in `dir` (a handle, reached without following
/// any link): hard link (or copy) from the store to a fresh exclusive temp
/// name, then rename over the target.
fn place(blob: &Path, dir: &Dir, name: &str) -> Result<(), ApplyError> {
    // A managed file that is a directory now (someone made one): only
    // replace it when it is empty.
    if dir.entry(name).map_err(io_err("reading", dir.path()))? == Entry::Is(Kind::Directory) {
        dir.remove_dir(name)?;
    }
    // An unpredictable name, created by the link or the exclusive create
    // itself: nothing planted there beforehand is ever written through.
    let tmp = match dir.link_temp(blob, name) {
        Ok(tmp) => tmp,
        Err(_) => {
            // Another filesystem (or links not allowed): copy + fsync into
            // a file created exclusively. A failed copy (disk full) leaves
            // no temp file behind.
            let (tmp, mut out) = dir.create_temp(name)?;
            let target = dir.path().join(&tmp);
            let copied = fs::File::open(blob)
                .and_then(|mut src| io::copy(&mut src, &mut out))
                .map_err(io_err("copying to", &target))
                .and_then(|_| out.sync_all().map_err(io_err("syncing", &target)));
            if let Err(e) = copied {
                let _ = dir.remove_file(&tmp);
                return Err(e);
            }
            tmp
        }
    };
    if let Err(e) = dir.rename(&tmp, name) {
        let _ = dir.remove_file(&tmp);
        return Err(e.into());
    }
    Ok(dir.sync()?)
}

/// The directory holding `path` and its file name, walked down from `root`
/// without following links (`None`: a directory above it is missing).
fn parent_of<'a>(root: &Dir, path: &'a TargetPath) -> Result<Option<(Dir, &'a str)>, BeneathError> {
    let parts: Vec<&str> = path.components().collect();
    let Some((name, dirs)) = parts.split_last() else {
        return Ok(None);
    };
    Ok(root.walk(dirs.iter().copied())?.map(|d| (d, *name)))
}

/// The directories above `path` (`A`, `A/B` for `A/B/c.mp4`).
fn parents(path: &TargetPath) -> Vec<TargetPath> {
    let parts: Vec<&str> = path.components().collect();
    (1..parts.len())
        .filter_map(|i| TargetPath::from_components(parts[..i].iter().copied()).ok())
        .collect()
}

/// Records `dir` as created by the agent.
fn record_dir(state: &mut State, dir: TargetPath) {
    if !state.created_dirs.contains(&dir) {
        state.created_dirs.push(dir);
    }
}

/// Marks what a plan will create as the agent's, before [`execute`] runs:
/// the files it places (and adopts) and the directories it will create.
/// The caller persists the state before executing.
pub fn claim(plan: &PassPlan, state: &mut State, videos_dir: &Path) {
    for (path, sha) in plan.place().chain(plan.adopt()) {
        state.placed.insert(path.clone(), *sha);
        for dir in parents(path) {
            if !videos_dir.join(dir.as_str()).exists() {
                record_dir(state, dir);
            }
        }
    }
}

/// What [`execute`] did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Applied {
    /// Files placed.
    pub placed: usize,
    /// Files removed.
    pub removed: usize,
    /// `configuration.json` rewritten.
    pub config_written: bool,
}

/// Carries out a plan; `blob` maps a hash to its file in the store. The
/// state is updated as steps land so that a crash leaves it truthful.
pub fn execute(
    plan: &PassPlan,
    blob: impl Fn(&Sha256) -> PathBuf,
    state: &mut State,
    index: &mut Index,
    videos_dir: &Path,
    config_path: &Path,
) -> Result<Applied, ApplyError> {
    let mut done = Applied::default();
    let root = Dir::create_root(videos_dir).map_err(io_err("creating", videos_dir))?;
    for (path, sha) in plan.adopt() {
        state.placed.insert(path.clone(), *sha);
    }
    for (path, sha) in plan.place() {
        let target = videos_dir.join(path.as_str());
        let dirs = parents(path);
        let components: Vec<&str> = path.components().collect();
        let Some((name, above)) = components.split_last() else {
            continue;
        };
        // A component swapped for a symlink since the pass looked is
        // refused here (the pass fails, naming it; the next one reports
        // the conflict).
        let (dir, created) = root.walk_creating(above.iter().copied())?;
        for d in &dirs[dirs.len() - created..] {
            record_dir(state, d.clone());
        }
        place(&blob(sha), &dir, name)?;
        fsx::crash_point("place");
        state.placed.insert(path.clone(), *sha);
        if let Ok(Some(f)) = dir.open_file(name)
            && let Ok(meta) = f.metadata()
        {
            index
                .files
                .insert(target, (Stamp::of_metadata(&meta), *sha));
        }
        done.placed += 1;
    }
    for path in &plan.remove {
        let target = videos_dir.join(path.as_str());
        match parent_of(&root, path) {
            Ok(Some((dir, name))) => match dir.remove_file(name) {
                Ok(true) => {
                    done.removed += 1;
                    dir.sync()?;
                }
                Ok(false) => {}
                // The club put a directory there: it is theirs now.
                Err(BeneathError::Occupied { path, what }) => {
                    tracing::warn!(path = %path.display(), %what, "not removed: no longer ours");
                }
                Err(e) => return Err(e.into()),
            },
            Ok(None) => {}
            // A directory above became a symlink or a file: what is
            // behind it is not ours, nothing is removed through it.
            Err(BeneathError::Occupied { path, what }) => {
                tracing::warn!(path = %path.display(), %what, "not removed through: not followed");
            }
            Err(e) => return Err(e.into()),
        }
        index.files.remove(&target);
        state.placed.remove(path);
    }
    // Directories the agent created and that are empty now.
    let mut dirs: Vec<TargetPath> = state.created_dirs.clone();
    dirs.sort_by_key(|d| std::cmp::Reverse(d.as_str().len()));
    let still_used: BTreeSet<TargetPath> = state.placed.keys().flat_map(parents).collect();
    for d in dirs {
        if still_used.contains(&d) {
            continue;
        }
        let gone = match parent_of(&root, &d) {
            Ok(Some((dir, name))) => match dir.entry(name) {
                Ok(Entry::Is(Kind::Directory)) => dir.remove_dir(name).is_ok(),
                Ok(Entry::Missing) => true,
                // Something else stands there now: not ours any more.
                Ok(Entry::Is(_)) => true,
                Err(_) => false,
            },
            Ok(None) | Err(BeneathError::Occupied { .. }) => true,
            Err(BeneathError::Io { .. }) => false,
        };
        if gone {
            state.created_dirs.retain(|x| x != &d);
        }
    }
    if let Some(doc) = &plan.config.write {
        let (Some(parent), Some(name)) = (config_path.parent(), config_path.file_name()) else {
            return Err(io_err("writing", config_path)(
                io::ErrorKind::InvalidInput.into(),
            ));
        };
        let dir = Dir::create_root(parent).map_err(io_err("creating", parent))?;
        let mut bytes = serde_json::to_vec_pretty(&Value::Object(doc.clone()))
            .map_err(|e| io_err("encoding", config_path)(io::Error::other(e)))?;
        bytes.push(b'\n');
        // Renaming over the name replaces whatever is there (a symlink
        // planted since the pass looked included), never writes through it.
        dir.write_atomic(&name.to_string_lossy(), &bytes)?;
        done.config_written = true;
    }
    state.managed_config = plan.config.managed.clone();
    Ok(done)
}

/// Files under `videos_dir` the agent did not place (the club's own), and
/// their bytes. Our temp names are not counted; the walk goes by handle
/// and never through a symlink.
pub fn local_content(videos_dir: &Path, state: &State) -> (u64, u64) {
    let mut count = 0;
    let mut bytes = 0;
    let Ok(root) = Dir::open_root(videos_dir) else {
        return (0, 0);
    };
    walk_files(root, String::new(), &mut |dir, rel, name| {
        if fsx::is_temp_name(name) {
            return;
        }
        if !TargetPath::new(rel).is_ok_and(|p| state.placed.contains_key(&p)) {
            count += 1;
            bytes += dir.size(name).unwrap_or(0);
        }
    });
    (count, bytes)
}

/// Calls `f(dir, relative path, name)` for every non-directory under
/// `root`, walking subdirectories by handle (symlinks are listed, never
/// followed).
fn walk_files(root: Dir, prefix: String, f: &mut dyn FnMut(&Dir, &str, &str)) {
    let mut stack = vec![(root, prefix)];
    while let Some((dir, prefix)) = stack.pop() {
        let Ok(entries) = dir.list() else { continue };
        for (name, what) in entries {
            let rel = if prefix.is_empty() {
                name.clone()
            } else {
                format!("{prefix}/{name}")
            };
            match what {
                Entry::Is(Kind::Directory) => {
                    if let Ok(Some(sub)) = dir.subdir(&name) {
                        stack.push((sub, rel));
                    }
                }
                Entry::Missing => {}
                Entry::Is(_) => f(&dir, &rel, &name),
            }
        }
    }
}

/// Removes temp files a crash left under `videos_dir` and next to the
/// configuration file (by name in a directory handle: never through a
/// symlink).
pub fn clean_temps(videos_dir: &Path, config_path: &Path) {
    // Ours next to the configuration: `.configuration.json.*.touchline-tmp`.
    if let (Some(dir), Some(name)) = (config_path.parent(), config_path.file_name()) {
        let prefix = format!(".{}.", name.to_string_lossy());
        if let Ok(dir) = Dir::open_root(dir)
            && let Ok(entries) = dir.list()
        {
            for (n, _) in entries {
                if n.starts_with(&prefix) && fsx::is_temp_name(&n) {
                    let _ = dir.remove_file(&n);
                }
            }
        }
    }
    if let Ok(root) = Dir::open_root(videos_dir) {
        walk_files(root, String::new(), &mut |dir, _, name| {
            if fsx::is_temp_name(name) {
                let _ = dir.remove_file(name);
            }
        });
    }
}
