//! The controller's content-addressed store: `<data>/content/sha256/ab/abcd…`.
//! Files enter by streaming copy into a temporary in the same directory while
//! hashing, then an fsync and a rename to their hash; a reader never sees a
//! partial file, and a file's name is always its sha256.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256 as Hasher};
use touchline_schemas::Sha256;

/// The store.
#[derive(Debug, Clone)]
pub struct ContentStore {
    root: PathBuf,
}

/// A content store failure.
#[derive(Debug, thiserror::Error)]
pub enum ContentError {
    /// I/O on a named path.
    #[error("failed to {action} `{path}`")]
    Io {
        /// What was being done.
        action: &'static str,
        /// Where.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
}

fn io(action: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> ContentError + use<> {
    let path = path.to_path_buf();
    move |source| ContentError::Io {
        action,
        path,
        source,
    }
}

impl ContentStore {
    /// Opens (creating) the store under `data`.
    pub fn open(data: &Path) -> Result<Self, ContentError> {
        let root = data.join("content").join("sha256");
        std::fs::create_dir_all(&root).map_err(io("create", &root))?;
        Ok(Self { root })
    }

    /// Where `hash` lives (whether or not it is there).
    pub fn path_of(&self, hash: &Sha256) -> PathBuf {
        let hex = hash.to_hex();
        self.root.join(&hex[..2]).join(hex)
    }

    /// Whether the store holds `hash`.
    pub fn contains(&self, hash: &Sha256) -> bool {
        self.path_of(hash).is_file()
    }

    /// Copies `src` into the store; returns its sha256 and size.
    pub fn add_file(&self, src: &Path) -> Result<(Sha256, u64), ContentError> {
        let f = std::fs::File::open(src).map_err(io("open", src))?;
        self.add_reader(f, src)
    }

    /// Streams `r` into the store (`what` names it in errors).
    pub fn add_reader(&self, mut r: impl Read, what: &Path) -> Result<(Sha256, u64), ContentError> {
        let mut tmp = tempfile::Builder::new()
            .prefix(".incoming-")
            .tempfile_in(&self.root)
            .map_err(io("create a temporary file in", &self.root))?;
        let mut hasher = Hasher::new();
        let mut buf = vec![0u8; 256 * 1024];
        let mut size = 0u64;
        loop {
            let n = match r.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(io("read", what)(e)),
            };
            hasher.update(&buf[..n]);
            tmp.write_all(&buf[..n]).map_err(io("write", tmp.path()))?;
            size += n as u64;
        }
        let hash = Sha256::from_bytes(hasher.finalize().into());
        let dest = self.path_of(&hash);
        if dest.is_file() {
            return Ok((hash, size));
        }
        let dir = dest.parent().unwrap_or(&self.root).to_path_buf();
        std::fs::create_dir_all(&dir).map_err(io("create", &dir))?;
        tmp.as_file().sync_all().map_err(io("sync", &dest))?;
        tmp.persist(&dest)
            .map_err(|e| io("store", &dest)(e.error))?;
        std::fs::File::open(&dir)
            .and_then(|d| d.sync_all())
            .map_err(io("sync", &dir))?;
        Ok((hash, size))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn add_is_content_addressed_and_idempotent() {
        let tmp = tempfile::tempdir().unwrap();
        let store = ContentStore::open(tmp.path()).unwrap();
        let src = tmp.path().join("v.mp4");
        std::fs::write(&src, b"video bytes").unwrap();
        let (h, n) = store.add_file(&src).unwrap();
        assert_eq!((h, n), (Sha256::digest(b"video bytes"), 11));
        assert_eq!(std::fs::read(store.path_of(&h)).unwrap(), b"video bytes");
        assert_eq!(store.add_file(&src).unwrap(), (h, n));
        // No temporary is left behind.
        let leftovers: Vec<_> = std::fs::read_dir(tmp.path().join("content/sha256"))
            .unwrap()
            .filter_map(Result::ok)
            .filter(|e| e.file_name().to_string_lossy().starts_with(".incoming"))
            .collect();
        assert!(leftovers.is_empty());
        let err = store
            .add_file(&tmp.path().join("missing"))
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("failed to open `"), "{err}");
    }
}
