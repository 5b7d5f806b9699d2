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
//! Planning ([`plan`]) is separate from doing ([`execute`]) so that a pass
//! that would change nothing writes nothing.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use serde_json::{Map, Value};
use touchline_schemas::{Bundle, Sha256};

use crate::fsx;
use crate::state::{Index, Stamp, State};

/// What the bundle asks for that is not on disk yet.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Plan {
    /// Paths to (re)place, with their content.
    pub place: Vec<(String, Sha256)>,
    /// Paths the agent placed that are no longer wanted.
    pub remove: Vec<String>,
    /// Listed paths where a file the agent did not place stands, with
    /// other content: left alone, reported.
    pub conflicts: Vec<String>,
    /// Listed paths where a file the agent did not place stands with the
    /// right content: adopted without copying.
    pub adopt: Vec<(String, Sha256)>,
    /// The new `configuration.json`, when it must be written.
    pub config: Option<Vec<u8>>,
    /// Managed keys changed on the box since the agent wrote them.
    pub config_drift: Vec<String>,
    /// The managed keys and values after this pass.
    pub managed_config: Map<String, Value>,
}

impl Plan {
    /// Nothing to write.
    pub fn is_empty(&self) -> bool {
        self.place.is_empty()
            && self.remove.is_empty()
            && self.adopt.is_empty()
            && self.config.is_none()
    }
}

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
}

impl ApplyError {
    /// The filesystem is full (or over quota).
    pub fn is_disk_full(&self) -> bool {
        let Self::Io { source, .. } = self;
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

/// Computes what must change. Hashes a file only when the index cannot
/// vouch for it (new, or its size / mtime / inode changed).
pub fn plan(
    bundle: &Bundle,
    state: &State,
    index: &mut Index,
    videos_dir: &Path,
    config_path: &Path,
) -> Result<Plan, ApplyError> {
    let mut p = Plan::default();
    let wanted: BTreeMap<&str, &Sha256> = bundle
        .files
        .iter()
        .map(|f| (f.path.as_str(), &f.sha256))
        .collect();
    for (path, sha) in &wanted {
        let target = videos_dir.join(path);
        let ours = state.placed.get(*path);
        match fs::symlink_metadata(&target) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                p.place.push(((*path).to_owned(), **sha));
            }
            Err(e) => return Err(io_err("reading", &target)(e)),
            Ok(m) if !m.is_file() => {
                if ours.is_some() {
                    p.place.push(((*path).to_owned(), **sha));
                } else {
                    p.conflicts.push((*path).to_owned());
                }
            }
            Ok(_) => {
                if index.vouches(&target, sha) {
                    if ours.is_none() {
                        p.adopt.push(((*path).to_owned(), **sha));
                    }
                    continue;
                }
                // Unknown stat: hash it once.
                let h = crate::fetch::hash_file(&target).map_err(io_err("hashing", &target))?;
                if let Ok(stamp) = Stamp::of(&target) {
                    index.files.insert(target.clone(), (stamp, h));
                }
                if h == **sha {
                    if ours.is_none() {
                        p.adopt.push(((*path).to_owned(), **sha));
                    }
                } else if ours.is_some() {
                    // Ours, changed locally (or the bundle changed): replace.
                    p.place.push(((*path).to_owned(), **sha));
                } else {
                    p.conflicts.push((*path).to_owned());
                }
            }
        }
    }
    for path in state.placed.keys() {
        if !wanted.contains_key(path.as_str()) {
            p.remove.push(path.clone());
        }
    }
    plan_config(bundle, state, config_path, &mut p)?;
    Ok(p)
}

fn plan_config(
    bundle: &Bundle,
    state: &State,
    config_path: &Path,
    p: &mut Plan,
) -> Result<(), ApplyError> {
    let current: Option<Map<String, Value>> = match fs::read(config_path) {
        Ok(bytes) => serde_json::from_slice::<Value>(&bytes)
            .ok()
            .and_then(|v| match v {
                Value::Object(m) => Some(m),
                _ => None,
            }),
        Err(e) if e.kind() == io::ErrorKind::NotFound => None,
        Err(e) => return Err(io_err("reading", config_path)(e)),
    };
    let unreadable = current.is_none() && config_path.exists();
    let mut doc = current.clone().unwrap_or_default();
    for (k, v) in &state.managed_config {
        if !bundle.config.contains_key(k) {
            doc.remove(k);
        } else if doc.get(k) != Some(v) {
            p.config_drift.push(k.clone());
        }
    }
    for (k, v) in &bundle.config {
        doc.insert(k.clone(), v.clone());
    }
    p.managed_config = bundle.config.clone();
    if current.as_ref() != Some(&doc) || unreadable {
        let mut bytes = serde_json::to_vec_pretty(&Value::Object(doc))
            .map_err(|e| io_err("encoding", config_path)(io::Error::other(e)))?;
        bytes.push(b'\n');
        p.config = Some(bytes);
    }
    Ok(())
}

/// Places one file: hard link (or copy) from the store to a hidden temp
/// name, then rename over the target.
fn place(blob: &Path, target: &Path) -> Result<(), ApplyError> {
    let dir = target.parent().unwrap_or(Path::new("/"));
    let tmp = fsx::temp_path(target);
    let _ = fs::remove_file(&tmp);
    match fs::hard_link(blob, &tmp) {
        Ok(()) => {}
        Err(_) => {
            // Another filesystem (or links not allowed): copy + fsync.
            // A failed copy (disk full) leaves no temp file behind.
            let copied = fs::copy(blob, &tmp)
                .map_err(io_err("copying to", &tmp))
                .and_then(|_| {
                    fs::File::open(&tmp)
                        .and_then(|f| f.sync_all())
                        .map_err(io_err("syncing", &tmp))
                });
            if let Err(e) = copied {
                let _ = fs::remove_file(&tmp);
                return Err(e);
            }
        }
    }
    fs::rename(&tmp, target).map_err(|e| {
        let _ = fs::remove_file(&tmp);
        io_err("renaming into", target)(e)
    })?;
    fsx::sync_dir(dir).map_err(io_err("syncing", dir))
}

/// Marks what a plan will create as the agent's, before [`execute`] runs:
/// the files it places (and adopts) and the directories it will create.
/// The caller persists the state before executing.
pub fn claim(plan: &Plan, state: &mut State, videos_dir: &Path) {
    for (path, sha) in plan.place.iter().chain(&plan.adopt) {
        state.placed.insert(path.clone(), *sha);
        let mut dir = videos_dir.join(path);
        while let Some(parent) = dir.parent() {
            if parent == videos_dir || !parent.starts_with(videos_dir) || parent.exists() {
                break;
            }
            if let Ok(rel) = parent.strip_prefix(videos_dir) {
                let rel = rel.to_string_lossy().into_owned();
                if !state.created_dirs.contains(&rel) {
                    state.created_dirs.push(rel);
                }
            }
            dir = parent.to_path_buf();
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
    plan: &Plan,
    blob: impl Fn(&Sha256) -> PathBuf,
    state: &mut State,
    index: &mut Index,
    videos_dir: &Path,
    config_path: &Path,
) -> Result<Applied, ApplyError> {
    let mut done = Applied::default();
    fsx::create_dirs(videos_dir).map_err(io_err("creating", videos_dir))?;
    for (path, sha) in &plan.adopt {
        state.placed.insert(path.clone(), *sha);
    }
    for (path, sha) in &plan.place {
        let target = videos_dir.join(path);
        if let Some(parent) = target.parent() {
            let mut created = Vec::new();
            let mut d = parent.to_path_buf();
            while !d.exists() && d.starts_with(videos_dir) && d != videos_dir {
                created.push(d.clone());
                match d.parent() {
                    Some(p) => d = p.to_path_buf(),
                    None => break,
                }
            }
            fsx::create_dirs(parent).map_err(io_err("creating", parent))?;
            for c in created {
                if let Ok(rel) = c.strip_prefix(videos_dir) {
                    let rel = rel.to_string_lossy().into_owned();
                    if !state.created_dirs.contains(&rel) {
                        state.created_dirs.push(rel);
                    }
                }
            }
        }
        // A managed file that is a directory now (someone made one): only
        // replace it when it is empty.
        if fs::symlink_metadata(&target).is_ok_and(|m| m.is_dir()) {
            fs::remove_dir(&target).map_err(io_err("replacing directory", &target))?;
        }
        place(&blob(sha), &target)?;
        fsx::crash_point("place");
        state.placed.insert(path.clone(), *sha);
        if let Ok(stamp) = Stamp::of(&target) {
            index.files.insert(target, (stamp, *sha));
        }
        done.placed += 1;
    }
    for path in &plan.remove {
        let target = videos_dir.join(path);
        match fs::remove_file(&target) {
            Ok(()) => done.removed += 1,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_err("removing", &target)(e)),
        }
        index.files.remove(&target);
        state.placed.remove(path);
        if let Some(parent) = target.parent() {
            let _ = fsx::sync_dir(parent);
        }
    }
    // Directories the agent created and that are empty now.
    let mut dirs: Vec<String> = state.created_dirs.clone();
    dirs.sort_by_key(|d| std::cmp::Reverse(d.len()));
    let still_used: BTreeSet<&str> = state
        .placed
        .keys()
        .flat_map(|p| p.match_indices('/').map(move |(i, _)| &p[..i]))
        .collect();
    for d in dirs {
        if still_used.contains(d.as_str()) {
            continue;
        }
        let full = videos_dir.join(&d);
        if fs::remove_dir(&full).is_ok() || !full.exists() {
            state.created_dirs.retain(|x| x != &d);
        }
    }
    if let Some(bytes) = &plan.config {
        if let Some(parent) = config_path.parent() {
            fsx::create_dirs(parent).map_err(io_err("creating", parent))?;
        }
        fsx::write_atomic(config_path, bytes).map_err(io_err("writing", config_path))?;
        done.config_written = true;
    }
    state.managed_config = plan.managed_config.clone();
    Ok(done)
}

/// Files under `videos_dir` the agent did not place (the club's own), and
/// their bytes. Our temp names are not counted.
pub fn local_content(videos_dir: &Path, state: &State) -> (u64, u64) {
    let mut count = 0;
    let mut bytes = 0;
    let mut stack = vec![videos_dir.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let Ok(rd) = fs::read_dir(&dir) else { continue };
        for e in rd.flatten() {
            let path = e.path();
            let Ok(m) = e.metadata() else { continue };
            if m.is_dir() {
                stack.push(path);
                continue;
            }
            let name = e.file_name().to_string_lossy().into_owned();
            if fsx::is_temp_name(&name) {
                continue;
            }
            let rel = path
                .strip_prefix(videos_dir)
                .map(|r| r.to_string_lossy().into_owned())
                .unwrap_or_default();
            if !state.placed.contains_key(&rel) {
                count += 1;
                bytes += m.len();
            }
        }
    }
    (count, bytes)
}

/// Removes temp files a crash left under `videos_dir` and next to the
/// configuration file.
pub fn clean_temps(videos_dir: &Path, config_path: &Path) {
    let _ = fs::remove_file(fsx::temp_path(config_path));
    let mut stack = vec![videos_dir.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let Ok(rd) = fs::read_dir(&dir) else { continue };
        for e in rd.flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                stack.push(e.path());
            } else if fsx::is_temp_name(&e.file_name().to_string_lossy()) {
                let _ = fs::remove_file(e.path());
            }
        }
    }
}
