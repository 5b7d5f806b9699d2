//! Downloads into the content store (`state_dir/cas/sha256/<hex>`).
//!
//! Each file goes to `cas/partial/<hex>` while it is hashed (streaming
//! sha256), capped at the size the signed bundle gives, and is renamed into
//! the store only when size and hash match. Every [`CHECKPOINT`] bytes (or 30 s on a slow line) the
//! partial file is fsynced and the hash state saved next to it
//! (`<hex>.resume`), so an interrupted download resumes with `Range` +
//! `If-Range` from the checkpoint without re-reading what it already has.
//! A wrong hash deletes the partial file and the next source is tried.
//!
//! Slow or hostile servers: connect and read timeouts on the client, a
//! minimum-throughput watchdog (average below `min_download_rate` over
//! `download_watchdog` aborts), and an optional rate cap.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use sha2::Digest;
use sha2::digest::common::hazmat::{SerializableState, SerializedState};
use touchline_schemas::Sha256;

use crate::fsx;
use crate::state::Paths;
use crate::transport::Transport;
pub use crate::transport::{Source, error_text};

/// Bytes between two durable checkpoints of a download.
pub const CHECKPOINT: u64 = 256 * 1024 * 1024;
const BUFFER: usize = 1024 * 1024;

/// Why one source failed.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    /// Transport failure or timeout.
    #[error("{source_name}: {message}")]
    Transport {
        /// The source.
        source_name: String,
        /// What happened.
        message: String,
    },
    /// The bytes are not the signed ones.
    #[error("{source_name}: sha256 mismatch: got {got}, the bundle says {want}")]
    HashMismatch {
        /// The source.
        source_name: String,
        /// Hash of what arrived.
        got: String,
        /// Signed hash.
        want: String,
    },
    /// More bytes than signed.
    #[error("{source_name}: more than the {size} bytes the bundle says")]
    TooLong {
        /// The source.
        source_name: String,
        /// Signed size.
        size: u64,
    },
    /// Fewer bytes than signed (the partial file is kept for a resume).
    #[error("{source_name}: ended after {got} of {size} bytes")]
    TooShort {
        /// The source.
        source_name: String,
        /// Bytes received.
        got: u64,
        /// Signed size.
        size: u64,
    },
    /// The watchdog fired.
    #[error("{source_name}: too slow: {rate} B/s over {window} s (minimum {min} B/s)")]
    TooSlow {
        /// The source.
        source_name: String,
        /// Measured rate.
        rate: u64,
        /// Window, seconds.
        window: u64,
        /// Configured minimum.
        min: u64,
    },
    /// Local I/O (disk full…).
    #[error("writing `{path}`: {source}")]
    Local {
        /// The file.
        path: String,
        /// The error.
        source: io::Error,
    },
    /// Every source failed.
    #[error("{0}")]
    AllFailed(String),
}

impl FetchError {
    /// The local filesystem is full (or over quota).
    pub fn is_disk_full(&self) -> bool {
        matches!(self, Self::Local { source, .. }
            if matches!(source.kind(), io::ErrorKind::StorageFull | io::ErrorKind::QuotaExceeded))
    }
}

/// What to fetch.
#[derive(Debug, Clone, Copy)]
pub struct Wanted {
    /// Hash.
    pub sha256: Sha256,
    /// Size.
    pub size: u64,
}

/// Download limits.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Cap, bytes/s (0 = none).
    pub max_rate: u64,
    /// Watchdog minimum, bytes/s (0 = none).
    pub min_rate: u64,
    /// Watchdog window.
    pub window: Duration,
}

/// The lower of two caps in bytes per second, where 0 is none.
pub fn lower_cap(a: u64, b: u64) -> u64 {
    match (a, b) {
        (0, x) | (x, 0) => x,
        (a, b) => a.min(b),
    }
}

/// Saved between runs next to a partial file.
#[derive(Debug, Serialize, Deserialize)]
struct Resume {
    offset: u64,
    hash_state: String,
    validator: Option<String>,
    url: String,
}

/// Progress callback: bytes of this file so far.
pub type Progress<'a> = &'a mut dyn FnMut(u64);

/// The content store.
#[derive(Debug, Clone)]
pub struct Store {
    paths: Paths,
}

impl Store {
    /// On `paths`.
    pub fn new(paths: Paths) -> Self {
        Self { paths }
    }

    /// The store's directory of complete blobs.
    pub fn root(&self) -> PathBuf {
        self.paths.cas()
    }

    /// The file of a blob.
    pub fn blob(&self, sha: &Sha256) -> PathBuf {
        self.paths.blob(sha)
    }

    /// Whether the store has a blob of that size (not re-hashed).
    pub fn has(&self, w: &Wanted) -> bool {
        fs::symlink_metadata(self.blob(&w.sha256)).is_ok_and(|m| m.is_file() && m.len() == w.size)
    }

    /// Bytes already downloaded for `w` (a resumable partial file).
    pub fn partial_bytes(&self, w: &Wanted) -> u64 {
        self.load_resume(w).map_or(0, |r| r.offset)
    }

    fn partial(&self, sha: &Sha256) -> PathBuf {
        self.paths.partial().join(sha.to_hex())
    }

    fn resume_file(&self, sha: &Sha256) -> PathBuf {
        self.paths
            .partial()
            .join(format!("{}.resume", sha.to_hex()))
    }

    fn load_resume(&self, w: &Wanted) -> Option<Resume> {
        let bytes = fs::read(self.resume_file(&w.sha256)).ok()?;
        let r: Resume = serde_json::from_slice(&bytes).ok()?;
        let len = fs::metadata(self.partial(&w.sha256)).ok()?.len();
        (r.offset <= w.size && r.offset <= len).then_some(r)
    }

    fn discard_partial(&self, sha: &Sha256) {
        let _ = fs::remove_file(self.resume_file(sha));
        let _ = fs::remove_file(self.partial(sha));
    }

    /// Removes partial downloads that nothing wants any more.
    pub fn clean_partials(&self, keep: &[Sha256]) {
        let keep: std::collections::BTreeSet<String> = keep.iter().map(Sha256::to_hex).collect();
        if let Ok(rd) = fs::read_dir(self.paths.partial()) {
            for e in rd.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                let hex = name.trim_end_matches(".resume");
                if !keep.contains(hex) {
                    let _ = fs::remove_file(e.path());
                }
            }
        }
    }

    /// Removes blobs not in `keep`; returns bytes freed.
    pub fn gc(&self, keep: &[Sha256]) -> u64 {
        let keep: std::collections::BTreeSet<String> = keep.iter().map(Sha256::to_hex).collect();
        let mut freed = 0;
        if let Ok(rd) = fs::read_dir(self.paths.cas()) {
            for e in rd.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                if !keep.contains(&name) {
                    let size = e.metadata().map_or(0, |m| m.len());
                    if fs::remove_file(e.path()).is_ok() {
                        freed += size;
                    }
                }
            }
        }
        freed
    }

    /// Deletes a blob found corrupt.
    pub fn evict(&self, sha: &Sha256) {
        let _ = fs::remove_file(self.blob(sha));
    }

    /// Hashes a blob in the store (a file that changed under us).
    pub fn rehash(&self, sha: &Sha256) -> io::Result<Sha256> {
        hash_file(&self.blob(sha))
    }

    /// Fetches `w` from the first source that delivers the signed bytes.
    pub async fn fetch(
        &self,
        transport: &dyn Transport,
        w: Wanted,
        sources: &[Source],
        limits: Limits,
        progress: Progress<'_>,
    ) -> Result<(), FetchError> {
        if self.has(&w) {
            return Ok(());
        }
        let mut errors = Vec::new();
        for s in sources {
            match self.download(transport, s, w, limits, progress).await {
                Ok(()) => return Ok(()),
                Err(e @ FetchError::Local { .. }) => {
                    // A full disk: free what this download took, so the
                    // club's own app can still write (nothing to resume
                    // into until space is freed anyway).
                    if e.is_disk_full() {
                        self.discard_partial(&w.sha256);
                    }
                    return Err(e);
                }
                Err(e) => {
                    tracing::warn!(error = %e, "download failed");
                    errors.push(e.to_string());
                }
            }
        }
        Err(FetchError::AllFailed(if errors.is_empty() {
            format!("no source for {}", w.sha256.to_hex())
        } else {
            errors.join("; ")
        }))
    }

    fn local(path: &Path) -> impl FnOnce(io::Error) -> FetchError + '_ {
        move |source| FetchError::Local {
            path: path.display().to_string(),
            source,
        }
    }

    fn save_checkpoint(
        &self,
        w: &Wanted,
        file: &File,
        hasher: &sha2::Sha256,
        offset: u64,
        validator: Option<&str>,
        url: &str,
    ) -> Result<(), FetchError> {
        let part = self.partial(&w.sha256);
        file.sync_data().map_err(Self::local(&part))?;
        let r = Resume {
            offset,
            hash_state: hex_encode(hasher.serialize().as_slice()),
            validator: validator.map(str::to_owned),
            url: url.to_owned(),
        };
        let path = self.resume_file(&w.sha256);
        let bytes = serde_json::to_vec(&r).unwrap_or_default();
        fsx::write_atomic(&path, &bytes).map_err(Self::local(&path))
    }

    /// Moves a complete, verified partial file into the store.
    fn commit(&self, w: &Wanted, file: File) -> Result<(), FetchError> {
        let part = self.partial(&w.sha256);
        file.sync_all().map_err(Self::local(&part))?;
        drop(file);
        let dest = self.blob(&w.sha256);
        fs::rename(&part, &dest).map_err(Self::local(&dest))?;
        fsx::sync_dir(&self.paths.cas()).map_err(Self::local(&dest))?;
        let _ = fs::remove_file(self.resume_file(&w.sha256));
        Ok(())
    }

    fn finish(
        &self,
        w: &Wanted,
        file: File,
        hasher: sha2::Sha256,
        got: u64,
        name: &str,
    ) -> Result<(), FetchError> {
        if got < w.size {
            return Err(FetchError::TooShort {
                source_name: name.to_owned(),
                got,
                size: w.size,
            });
        }
        let digest = Sha256::from_bytes(hasher.finalize().into());
        if digest != w.sha256 {
            drop(file);
            self.discard_partial(&w.sha256);
            return Err(FetchError::HashMismatch {
                source_name: name.to_owned(),
                got: digest.to_hex(),
                want: w.sha256.to_hex(),
            });
        }
        self.commit(w, file)
    }

    /// One source: resume from the last checkpoint taken from it when the
    /// source still has the same bytes, else from the start; stream into
    /// the partial file while hashing; commit when size and hash match.
    async fn download(
        &self,
        transport: &dyn Transport,
        source: &Source,
        w: Wanted,
        limits: Limits,
        progress: Progress<'_>,
    ) -> Result<(), FetchError> {
        let name = source.name();
        let url = name.as_str();
        let transport_err = |message: String| FetchError::Transport {
            source_name: url.to_owned(),
            message,
        };
        let part = self.partial(&w.sha256);
        // Resume from the last checkpoint, when it was taken from this source.
        let resume = self.load_resume(&w).filter(|r| r.url == url);
        let (mut hasher, mut offset, validator) = match &resume {
            Some(r) => match decode_state(&r.hash_state) {
                Some(h) => (h, r.offset, r.validator.clone()),
                None => (sha2::Sha256::new(), 0, None),
            },
            None => (sha2::Sha256::new(), 0, None),
        };
        if offset > 0 && validator.is_none() {
            offset = 0;
            hasher = sha2::Sha256::new();
        }
        let opened = transport
            .open(source, offset, validator.as_deref())
            .await
            .map_err(|e| transport_err(e.to_string()))?;
        let mut body = opened.body;
        if opened.start != offset {
            offset = 0;
            hasher = sha2::Sha256::new();
        }
        if let Some(len) = opened.length
            && offset + len != w.size
        {
            return Err(transport_err(format!(
                "Content-Length says {} bytes, the bundle says {}",
                offset + len,
                w.size
            )));
        }
        let validator = opened.validator;
        let limits = if opened.remote {
            limits
        } else {
            Limits {
                max_rate: 0,
                min_rate: 0,
                window: limits.window,
            }
        };
        let mut file = OpenOptions::new()
            .create(true)
            .write(true)
            .truncate(false)
            .open(&part)
            .map_err(Self::local(&part))?;
        file.set_len(offset).map_err(Self::local(&part))?;
        file.seek(SeekFrom::Start(offset))
            .map_err(Self::local(&part))?;
        // Receiving runs here; hashing and writing run on a worker thread
        // (two cores: the copy out of the socket overlaps the hashing).
        let (tx, rx) = std::sync::mpsc::sync_channel::<Piece>(64);
        let worker = {
            let store = self.clone();
            let validator = validator.clone();
            let url = url.to_owned();
            let part = part.clone();
            std::thread::spawn(move || -> Result<(File, sha2::Sha256, u64), FetchError> {
                let mut buf: Vec<u8> = Vec::with_capacity(BUFFER);
                let mut got = offset;
                for piece in rx {
                    match piece {
                        Piece::Data(chunk) => {
                            hasher.update(&chunk);
                            buf.extend_from_slice(&chunk);
                            got += chunk.len() as u64;
                            if buf.len() >= BUFFER {
                                flush(&mut file, &mut buf, &part)?;
                            }
                        }
                        Piece::Checkpoint => {
                            flush(&mut file, &mut buf, &part)?;
                            if validator.is_some() && got > offset {
                                store.save_checkpoint(
                                    &w,
                                    &file,
                                    &hasher,
                                    got,
                                    validator.as_deref(),
                                    &url,
                                )?;
                            }
                        }
                    }
                }
                flush(&mut file, &mut buf, &part)?;
                Ok((file, hasher, got))
            })
        };
        let join =
            |worker: std::thread::JoinHandle<Result<(File, sha2::Sha256, u64), FetchError>>| {
                worker.join().unwrap_or_else(|_| {
                    Err(FetchError::Local {
                        path: part.display().to_string(),
                        source: io::Error::other("download writer panicked"),
                    })
                })
            };
        let mut got = offset;
        let mut next_checkpoint = offset + CHECKPOINT;
        let mut last_checkpoint = Instant::now();
        let started = Instant::now();
        let mut window_start = Instant::now();
        let mut window_bytes = 0u64;
        let mut session_bytes = 0u64;
        let mut last_progress = 0u64;
        progress(got);
        let failure: Option<FetchError> = loop {
            let chunk = match body.chunk().await {
                Ok(Some(c)) => c,
                Ok(None) => break None,
                Err(e) => {
                    let _ = tx.send(Piece::Checkpoint);
                    break Some(transport_err(e.to_string()));
                }
            };
            if got + chunk.len() as u64 > w.size {
                drop(tx);
                let _ = join(worker);
                self.discard_partial(&w.sha256);
                return Err(FetchError::TooLong {
                    source_name: url.to_owned(),
                    size: w.size,
                });
            }
            let n = chunk.len() as u64;
            if tx.send(Piece::Data(chunk)).is_err() {
                // The writer stopped: its error says why.
                break None;
            }
            got += n;
            session_bytes += n;
            window_bytes += n;
            if got - last_progress >= BUFFER as u64 {
                last_progress = got;
                progress(got);
            }
            // Durable checkpoints every CHECKPOINT bytes or 30 s.
            if got >= next_checkpoint || last_checkpoint.elapsed() >= Duration::from_secs(30) {
                let _ = tx.send(Piece::Checkpoint);
                next_checkpoint = got + CHECKPOINT;
                last_checkpoint = Instant::now();
            }
            if limits.max_rate > 0 {
                #[allow(clippy::cast_precision_loss)]
                let due = Duration::from_secs_f64(session_bytes as f64 / limits.max_rate as f64);
                let elapsed = started.elapsed();
                if due > elapsed {
                    tokio::time::sleep(due - elapsed).await;
                }
            }
            let w_elapsed = window_start.elapsed();
            if w_elapsed >= limits.window {
                let rate = window_bytes / w_elapsed.as_secs().max(1);
                if limits.min_rate > 0 && rate < limits.min_rate {
                    let _ = tx.send(Piece::Checkpoint);
                    break Some(FetchError::TooSlow {
                        source_name: url.to_owned(),
                        rate,
                        window: w_elapsed.as_secs(),
                        min: limits.min_rate,
                    });
                }
                window_start = Instant::now();
                window_bytes = 0;
            }
        };
        drop(tx);
        let written = join(worker);
        if let Some(e) = failure {
            return Err(e);
        }
        let (file, hasher, got) = written?;
        progress(got);
        self.finish(&w, file, hasher, got, url)
    }
}

/// What the receiving loop hands the writer thread.
enum Piece {
    /// Bytes, in order.
    Data(bytes::Bytes),
    /// Flush, fsync and save the hash state now.
    Checkpoint,
}

fn flush(file: &mut File, buf: &mut Vec<u8>, path: &Path) -> Result<(), FetchError> {
    file.write_all(buf).map_err(|source| FetchError::Local {
        path: path.display().to_string(),
        source,
    })?;
    buf.clear();
    Ok(())
}

fn hex_encode(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    bytes.iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

fn decode_state(hex: &str) -> Option<sha2::Sha256> {
    if !hex.len().is_multiple_of(2) || !hex.is_ascii() {
        return None;
    }
    let bytes: Vec<u8> = (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).ok())
        .collect::<Option<_>>()?;
    let state = SerializedState::<sha2::Sha256>::try_from(bytes.as_slice()).ok()?;
    sha2::Sha256::deserialize(&state).ok()
}

/// Bytes of existing files hashed by this process (not downloads): a
/// no-op pass must leave it unchanged (benchmark and tests read it).
pub static BYTES_REHASHED: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// sha256 of a file.
pub fn hash_file(path: &Path) -> io::Result<Sha256> {
    hash_reader(&mut File::open(path)?)
}

/// The sha256 of everything `f` still has to read.
pub fn hash_reader(f: &mut impl Read) -> io::Result<Sha256> {
    let mut h = sha2::Sha256::new();
    let mut buf = vec![0u8; BUFFER];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
        BYTES_REHASHED.fetch_add(n as u64, std::sync::atomic::Ordering::Relaxed);
    }
    Ok(Sha256::from_bytes(h.finalize().into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_lower_cap_wins_and_zero_is_none() {
        assert_eq!(lower_cap(0, 0), 0);
        assert_eq!(lower_cap(250_000, 0), 250_000);
        assert_eq!(lower_cap(0, 150_000), 150_000);
        assert_eq!(lower_cap(250_000, 150_000), 150_000);
        assert_eq!(lower_cap(100_000, 150_000), 100_000);
    }

    #[test]
    fn the_hash_state_round_trips_through_the_resume_file() {
        let mut h = sha2::Sha256::new();
        h.update(b"first half, ");
        let saved = hex_encode(h.serialize().as_slice());
        let mut back = decode_state(&saved).unwrap();
        back.update(b"second half");
        assert_eq!(
            Sha256::from_bytes(back.finalize().into()),
            Sha256::digest(b"first half, second half")
        );
        assert!(decode_state("zz").is_none());
        assert!(decode_state("00").is_none());
    }
}
