//! File-system steps that must survive a power cut: atomic replacement
//! (temp file in the same directory + fsync + rename + directory fsync),
//! directory fsync, and free space.

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

/// A fresh temp name next to `path` while it is being replaced:
/// `.<name>.<16 random hex>.touchline-tmp`. Hidden (leading dot) and
/// suffixed so that nobody mistakes it for content and a crash leftover is
/// recognized and removed; unpredictable, so that nobody who can write in
/// the directory (a club member in `videos_dir`) can plant a symlink at it
/// beforehand. Fails only without an OS random source.
pub fn temp_path(path: &Path) -> io::Result<PathBuf> {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    Ok(path.with_file_name(temp_name(&name)?))
}

/// The temp name of [`temp_path`] for the file name `name`.
pub fn temp_name(name: &str) -> io::Result<String> {
    let mut r = [0u8; 8];
    getrandom::fill(&mut r).map_err(io::Error::other)?;
    let hex: String = r.iter().map(|b| format!("{b:02x}")).collect();
    Ok(format!(".{name}.{hex}.touchline-tmp"))
}

/// Creates a temp file for `path` exclusively (`O_CREAT | O_EXCL`: an
/// existing entry, a symlink included, is never opened or followed).
pub fn create_temp(path: &Path) -> io::Result<(PathBuf, File)> {
    let tmp = temp_path(path)?;
    let f = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&tmp)?;
    Ok((tmp, f))
}

/// Whether a file name is one of our temp names.
pub fn is_temp_name(name: &str) -> bool {
    name.starts_with('.') && name.ends_with(".touchline-tmp")
}

/// fsyncs a directory so that a rename or unlink in it is durable.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Replaces `path` with `bytes`: readers see the old content or the new
/// one, never a mix, and after return the new content survives a power cut.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let (tmp, mut f) = create_temp(path)?;
    let result = (|| {
        f.write_all(bytes)?;
        f.sync_all()?;
        drop(f);
        fs::rename(&tmp, path)?;
        sync_dir(path.parent().unwrap_or(Path::new(".")))
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// Bytes available to an unprivileged writer on the filesystem of `path`.
pub fn available_space(path: &Path) -> io::Result<u64> {
    let st = rustix::fs::statvfs(path).map_err(io::Error::from)?;
    Ok(st.f_bavail.saturating_mul(st.f_frsize))
}

/// Fault injection for the crash tests: with
/// `TOUCHLINE_TEST_CRASH_AT=<step>:<n>` in the environment the process
/// aborts (like a power cut) right after the n-th time it passes `step`.
pub fn crash_point(step: &str) {
    static PASSED: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let Ok(spec) = std::env::var("TOUCHLINE_TEST_CRASH_AT") else {
        return;
    };
    let Some((at, n)) = spec.split_once(':') else {
        return;
    };
    if at == step {
        let seen = PASSED.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
        if n.parse::<u64>().is_ok_and(|n| n == seen) {
            std::process::abort();
        }
    }
}

/// The nearest existing ancestor of `path` (itself when it exists): what
/// to ask about a filesystem before the first apply created the directory.
pub fn existing_ancestor(path: &Path) -> &Path {
    path.ancestors()
        .find(|p| p.exists())
        .unwrap_or(Path::new("/"))
}

/// Whether two paths (or their nearest existing ancestors) are on the same
/// filesystem, where a hard link between them works.
pub fn same_filesystem(a: &Path, b: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (
        fs::metadata(existing_ancestor(a)),
        fs::metadata(existing_ancestor(b)),
    ) {
        (Ok(x), Ok(y)) => x.dev() == y.dev(),
        _ => true,
    }
}

/// Creates `dir` and its parents, fsyncing each directory it created and
/// the parent of the topmost one.
pub fn create_dirs(dir: &Path) -> io::Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    if let Some(parent) = dir.parent() {
        create_dirs(parent)?;
    }
    match fs::create_dir(dir) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists && dir.is_dir() => return Ok(()),
        Err(e) => return Err(e),
    }
    sync_dir(dir.parent().unwrap_or(Path::new("/")))
}

/// Human-readable bytes (`1.5 GB`), decimal units as `df -H` prints them.
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KB", "MB", "GB", "TB"];
    #[allow(clippy::cast_precision_loss)]
    let mut v = n as f64;
    let mut unit = 0;
    while v >= 1000.0 && unit < UNITS.len() - 1 {
        v /= 1000.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[unit])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn atomic_write_replaces_and_leaves_no_temp() {
        let tmp = tempfile::tempdir().unwrap();
        let p = tmp.path().join("configuration.json");
        write_atomic(&p, b"one").unwrap();
        write_atomic(&p, b"two").unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"two");
        assert_eq!(fs::read_dir(tmp.path()).unwrap().count(), 1);
        let (a, b) = (temp_path(&p).unwrap(), temp_path(&p).unwrap());
        assert_ne!(a, b, "unpredictable");
        assert!(is_temp_name(&a.file_name().unwrap().to_string_lossy()));
        // A directory in the way: the error is returned, the temp is gone.
        let d = tmp.path().join("dir");
        fs::create_dir_all(d.join("x")).unwrap();
        assert!(write_atomic(&d, b"x").is_err());
        assert_eq!(fs::read_dir(tmp.path()).unwrap().count(), 2, "no temp left");
    }

    /// Regression: the temp name was predictable
    /// (`.configuration.json.touchline-tmp`) and created with
    /// `File::create`, so a symlink planted there by anyone who can write
    /// in the directory made the agent (root) overwrite the link's target.
    #[test]
    fn a_symlink_planted_at_the_old_temp_name_is_not_followed() {
        let tmp = tempfile::tempdir().unwrap();
        let canary = tmp.path().join("canary");
        fs::write(&canary, b"root-only").unwrap();
        let dir = tmp.path().join("app");
        fs::create_dir_all(&dir).unwrap();
        let p = dir.join("configuration.json");
        std::os::unix::fs::symlink(&canary, dir.join(".configuration.json.touchline-tmp")).unwrap();
        write_atomic(&p, b"{}").unwrap();
        assert_eq!(fs::read(&canary).unwrap(), b"root-only");
        assert_eq!(fs::read(&p).unwrap(), b"{}");
    }

    #[test]
    fn sizes_read_like_df() {
        assert_eq!(human_bytes(999), "999 B");
        assert_eq!(human_bytes(1_500_000_000), "1.5 GB");
        assert!(available_space(Path::new("/")).unwrap() > 0);
    }
}
