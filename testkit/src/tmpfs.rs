//! A small tmpfs to fill up (disk-full tests). Mounting needs root: outside
//! CI a test without it skips with the reason; in CI it must mount.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

/// A mounted tmpfs, unmounted (lazily) when dropped.
#[derive(Debug)]
pub struct Tmpfs(pub PathBuf);

impl Tmpfs {
    /// Mounts a tmpfs of `size` (`16m`) at `dir`, or says why it cannot.
    pub fn mount(dir: &Path, size: &str) -> Result<Self, String> {
        std::fs::create_dir_all(dir).unwrap();
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir)
            .output()
            .map_err(|e| format!("cannot run mount: {e}"))?;
        if out.status.success() {
            Ok(Self(dir.to_path_buf()))
        } else {
            Err(String::from_utf8_lossy(&out.stderr).trim().to_owned())
        }
    }

    /// [`Tmpfs::mount`]; outside CI `None` with the reason printed, in CI a
    /// failure panics.
    pub fn mount_or_skip(dir: &Path, size: &str) -> Option<Self> {
        match Self::mount(dir, size) {
            Ok(m) => Some(m),
            Err(why) if crate::in_ci() => panic!("cannot mount a tmpfs in CI: {why}"),
            Err(why) => {
                println!("SKIPPED: cannot mount a tmpfs here ({why})");
                None
            }
        }
    }

    /// Its mount point.
    pub fn path(&self) -> &Path {
        &self.0
    }

    /// Writes a file at `path` until the filesystem is full.
    pub fn fill(&self, path: &Path) {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        let mut f = std::fs::File::create(path).unwrap();
        let block = vec![7u8; 64 * 1024];
        loop {
            if let Err(e) = f.write_all(&block) {
                assert_eq!(e.kind(), std::io::ErrorKind::StorageFull, "{e}");
                break;
            }
        }
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}
