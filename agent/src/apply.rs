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

/// Places one file: hard link (or copy) from the store to a hidden temp
/// name, then rename over the target.
fn place(blob: &Path, target: &Path) -> Result<(), ApplyError> {
    let dir = target.parent().unwrap_or(Path::new("/"));
    // An unpredictable name, created by the link or the exclusive create
    // itself: nothing planted there beforehand is ever written through.
    let tmp = fsx::temp_path(target).map_err(io_err("naming a temp file for", target))?;
    if fs::hard_link(blob, &tmp).is_err() {
        // Another filesystem (or links not allowed): copy + fsync into a
        // file created exclusively. A failed copy (disk full) leaves no
        // temp file behind.
        let copied = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&tmp)
            .and_then(|mut out| {
                io::copy(&mut fs::File::open(blob)?, &mut out)?;
                Ok(out)
            })
            .map_err(io_err("copying to", &tmp))
            .and_then(|out| out.sync_all().map_err(io_err("syncing", &tmp)));
        if let Err(e) = copied {
            let _ = fs::remove_file(&tmp);
            return Err(e);
        }
    }
    fs::rename(&tmp, target).map_err(|e| {
        let _ = fs::remove_file(&tmp);
        io_err("renaming into", target)(e)
    })?;
    fsx::sync_dir(dir).map_err(io_err("syncing", dir))
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
    fsx::create_dirs(videos_dir).map_err(io_err("creating", videos_dir))?;
    for (path, sha) in plan.adopt() {
        state.placed.insert(path.clone(), *sha);
    }
    for (path, sha) in plan.place() {
        let target = videos_dir.join(path.as_str());
        let created: Vec<TargetPath> = parents(path)
            .into_iter()
            .filter(|d| !videos_dir.join(d.as_str()).exists())
            .collect();
        if let Some(parent) = target.parent() {
            fsx::create_dirs(parent).map_err(io_err("creating", parent))?;
        }
        for dir in created {
            record_dir(state, dir);
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
        let target = videos_dir.join(path.as_str());
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
    let mut dirs: Vec<TargetPath> = state.created_dirs.clone();
    dirs.sort_by_key(|d| std::cmp::Reverse(d.as_str().len()));
    let still_used: BTreeSet<TargetPath> = state.placed.keys().flat_map(parents).collect();
    for d in dirs {
        if still_used.contains(&d) {
            continue;
        }
        let full = videos_dir.join(d.as_str());
        if fs::remove_dir(&full).is_ok() || !full.exists() {
            state.created_dirs.retain(|x| x != &d);
        }
    }
    if let Some(doc) = &plan.config.write {
        if let Some(parent) = config_path.parent() {
            fsx::create_dirs(parent).map_err(io_err("creating", parent))?;
        }
        let mut bytes = serde_json::to_vec_pretty(&Value::Object(doc.clone()))
            .map_err(|e| io_err("encoding", config_path)(io::Error::other(e)))?;
        bytes.push(b'\n');
        fsx::write_atomic(config_path, &bytes).map_err(io_err("writing", config_path))?;
        done.config_written = true;
    }
    state.managed_config = plan.config.managed.clone();
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
            if !TargetPath::new(&rel).is_ok_and(|p| state.placed.contains_key(&p)) {
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
    // Ours next to the configuration: `.configuration.json.*.touchline-tmp`
    // (removing a name never follows a symlink).
    if let (Some(dir), Some(name)) = (config_path.parent(), config_path.file_name()) {
        let prefix = format!(".{}.", name.to_string_lossy());
        if let Ok(rd) = fs::read_dir(dir) {
            for e in rd.flatten() {
                let n = e.file_name().to_string_lossy().into_owned();
                if n.starts_with(&prefix) && fsx::is_temp_name(&n) {
                    let _ = fs::remove_file(e.path());
                }
            }
        }
    }
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
