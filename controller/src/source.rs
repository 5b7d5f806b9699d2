//! Where manifest files come from: a directory on disk (an operator's
//! checkout, CI) or, in the controller, a git commit. Either way the result
//! is the same list of [`SourceFile`]s, and everything after works on bytes
//! in memory.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Largest manifest file read; a larger one is refused without parsing.
pub const MAX_MANIFEST_BYTES: u64 = 1024 * 1024;

/// The manifest files, by kind.
pub const FLEET_FILE: &str = "fleet.yaml";
/// The video catalog.
pub const CATALOG_FILE: &str = "videos/catalog.yaml";
/// Directories holding one manifest per file.
pub const DIRS: [&str; 4] = ["sites", "groups", "releases", "agent-releases"];

/// One file's bytes, or why they were not read.
#[derive(Debug, Clone)]
pub struct SourceFile {
    /// Path relative to the manifests root, `/`-separated.
    pub path: Arc<str>,
    /// The bytes, or the file's size when it is over [`MAX_MANIFEST_BYTES`].
    pub content: Result<Vec<u8>, u64>,
}

/// Why a file that looks like a manifest is not read.
pub const SKIP_MISNAMED: &str = "ignored: manifest files must end in `.yaml`";
/// A symbolic link.
pub const SKIP_SYMLINK: &str = "ignored: symbolic links are not followed";
/// A directory or special file where a manifest was expected.
pub const SKIP_NOT_FILE: &str = "ignored: not a regular file";
/// A file or special file where a folder of manifests was expected.
pub const SKIP_NOT_DIR: &str = "ignored: not a folder";
/// A git submodule where a folder of manifests was expected.
pub const SKIP_SUBMODULE: &str = "ignored: a git submodule, not a folder of manifests";
/// A name no manifest has.
pub const SKIP_CONTROL: &str = "ignored: the name holds a control character";

/// Whether a file name holds a control character (a newline would forge a
/// diagnostic line).
pub fn has_control(name: &str) -> bool {
    name.chars().any(char::is_control)
}

/// `name` as a diagnostic shows it: control characters escaped (`\n`,
/// `\u{1b}`), the rest as it is.
pub fn shown(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_control() {
                c.escape_default().collect()
            } else {
                c.to_string()
            }
        })
        .collect()
}

/// A file the loader looked at and skipped, with the reason (reported as a
/// warning).
#[derive(Debug, Clone)]
pub struct Skipped {
    /// Relative path.
    pub path: Arc<str>,
    /// Why.
    pub reason: &'static str,
}

/// Everything read from a manifests root.
#[derive(Debug, Default, Clone)]
pub struct SourceSet {
    /// Manifest files, sorted by path.
    pub files: Vec<SourceFile>,
    /// Files that look like manifests but were not read.
    pub skipped: Vec<Skipped>,
}

/// Reading failed in a way that is not a problem of the manifests (exit 2).
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// The root is missing or not a directory.
    #[error(
        "`{0}` is not a directory; pass the root of a manifests repository (it holds fleet.yaml)"
    )]
    NotADirectory(PathBuf),
    /// I/O failed.
    #[error("failed to read `{path}`")]
    Io {
        /// What could not be read.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
}

/// Reads the manifests under `root`. Symbolic links are not followed (a
/// manifest that points elsewhere on the controller is refused).
pub fn read_dir(root: &Path) -> Result<SourceSet, SourceError> {
    let meta = std::fs::metadata(root).map_err(|_| SourceError::NotADirectory(root.into()))?;
    if !meta.is_dir() {
        return Err(SourceError::NotADirectory(root.into()));
    }
    let mut set = SourceSet::default();
    for rel in [FLEET_FILE, CATALOG_FILE] {
        let path = root.join(rel);
        match std::fs::symlink_metadata(&path) {
            Ok(_) => read_one(root, rel, &mut set)?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(source) => return Err(SourceError::Io { path, source }),
        }
    }
    for dir in DIRS {
        let path = root.join(dir);
        // The folder itself is not followed either.
        match std::fs::symlink_metadata(&path) {
            Ok(m) if m.file_type().is_symlink() => {
                set.skipped.push(Skipped {
                    path: dir.into(),
                    reason: SKIP_SYMLINK,
                });
                continue;
            }
            Ok(m) if !m.is_dir() => {
                set.skipped.push(Skipped {
                    path: dir.into(),
                    reason: SKIP_NOT_DIR,
                });
                continue;
            }
            _ => {}
        }
        let entries = match std::fs::read_dir(&path) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(source) => return Err(SourceError::Io { path, source }),
        };
        let mut names = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|source| SourceError::Io {
                path: path.clone(),
                source,
            })?;
            names.push(entry.file_name());
        }
        names.sort();
        for name in names {
            let name = name.to_string_lossy();
            if has_control(&name) {
                set.skipped.push(Skipped {
                    path: format!("{dir}/{}", shown(&name)).into(),
                    reason: SKIP_CONTROL,
                });
                continue;
            }
            let rel = format!("{dir}/{name}");
            match classify(&name) {
                Some(Kind::Manifest) => read_one(root, &rel, &mut set)?,
                Some(Kind::Misnamed) => set.skipped.push(Skipped {
                    path: rel.into(),
                    reason: SKIP_MISNAMED,
                }),
                None => {}
            }
        }
    }
    set.files.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(set)
}

pub(crate) enum Kind {
    Manifest,
    Misnamed,
}

/// `.yaml` files are manifests; `.yml` and `.json` look like intended ones;
/// READMEs and dotfiles are not ours.
pub(crate) fn classify(name: &str) -> Option<Kind> {
    if name.starts_with('.') {
        None
    } else if name.ends_with(".yaml") {
        Some(Kind::Manifest)
    } else if name.ends_with(".yml") || name.ends_with(".json") || name.ends_with(".YAML") {
        Some(Kind::Misnamed)
    } else {
        None
    }
}

fn read_one(root: &Path, rel: &str, set: &mut SourceSet) -> Result<(), SourceError> {
    let path = root.join(rel);
    let io = |source| SourceError::Io {
        path: path.clone(),
        source,
    };
    let meta = std::fs::symlink_metadata(&path).map_err(io)?;
    if meta.file_type().is_symlink() {
        set.skipped.push(Skipped {
            path: rel.into(),
            reason: SKIP_SYMLINK,
        });
        return Ok(());
    }
    if !meta.is_file() {
        set.skipped.push(Skipped {
            path: rel.into(),
            reason: SKIP_NOT_FILE,
        });
        return Ok(());
    }
    let content = if meta.len() > MAX_MANIFEST_BYTES {
        Err(meta.len())
    } else {
        let mut bytes = Vec::with_capacity(usize::try_from(meta.len()).unwrap_or(0));
        let file = std::fs::File::open(&path).map_err(io)?;
        // The file may grow between stat and read: cap the read too.
        file.take(MAX_MANIFEST_BYTES + 1)
            .read_to_end(&mut bytes)
            .map_err(io)?;
        if bytes.len() as u64 > MAX_MANIFEST_BYTES {
            Err(bytes.len() as u64)
        } else {
            Ok(bytes)
        }
    };
    set.files.push(SourceFile {
        path: rel.into(),
        content,
    });
    Ok(())
}
