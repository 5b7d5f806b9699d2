//! The agent's persisted state under `state_dir`, each file replaced
//! atomically:
//!
//! - `state.json`: highest accepted serial, time floor, what was applied
//!   (files placed, configuration keys managed), the report sequence, the
//!   last error;
//! - `accepted.json`: the last accepted bundle and its signature, exactly as
//!   verified, in one file so that they are replaced together (re-verified
//!   on every read);
//! - `index.json`: size + mtime + inode of files known to be good, so that a
//!   no-op cycle hashes nothing.

use std::collections::BTreeMap;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use jiff::Timestamp;
use serde::{Deserialize, Serialize};
use touchline_schemas::report::Condition;
use touchline_schemas::{Sha256, TargetPath};

use crate::fsx;

/// `state.json`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct State {
    /// Highest serial ever accepted (never goes down).
    #[serde(default)]
    pub highest_serial: u64,
    /// Since when changes to what plays wait for the update lock (kept
    /// across restarts: `lock_max_wait` counts from the first wait).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub apply_wait_since: Option<Timestamp>,
    /// Time floor (see `clock`).
    #[serde(default)]
    pub time_floor: Option<Timestamp>,
    /// Serial whose files and configuration are on disk.
    #[serde(default)]
    pub applied_serial: Option<u64>,
    /// Digest of the applied bundle.
    #[serde(default)]
    pub applied_digest: Option<Sha256>,
    /// Files the agent placed under `videos_dir` (path → sha256).
    #[serde(default)]
    pub placed: BTreeMap<TargetPath, Sha256>,
    /// Directories the agent created under `videos_dir`.
    #[serde(default)]
    pub created_dirs: Vec<TargetPath>,
    /// Top-level `configuration.json` keys the agent manages, with the value
    /// it last wrote (to tell drift from a bundle change).
    #[serde(default)]
    pub managed_config: serde_json::Map<String, serde_json::Value>,
    /// Next report sequence number.
    #[serde(default)]
    pub next_seq: u64,
    /// The report epoch: a random id made with this state. A wiped state
    /// (reflash, new SD card) makes a new one, which tells the controller
    /// that `seq` restarted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub report_epoch: Option<String>,
    /// Last error, for `status`.
    #[serde(default)]
    pub last_error: Option<String>,
    /// Phase at the end of the last pass, for `status`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<touchline_schemas::report::Phase>,
    /// Conditions of the last pass, for `status`.
    #[serde(default)]
    pub conditions: Vec<Condition>,
    /// Last time the controller answered.
    #[serde(default)]
    pub last_contact: Option<Timestamp>,
    /// Since when the controller has not answered.
    #[serde(default)]
    pub offline_since: Option<Timestamp>,
    /// The last bundle refused, with the reason.
    #[serde(default)]
    pub last_rejected: Option<String>,
}

/// One entry of the stat index.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stamp {
    /// Size.
    pub size: u64,
    /// mtime, nanoseconds.
    pub mtime_ns: i128,
    /// Inode.
    pub ino: u64,
    /// ctime, nanoseconds (a chmod or link count change moves it; a
    /// same-size rewrite with a restored mtime does too).
    pub ctime_ns: i128,
}

impl Stamp {
    /// The stamp of a file (not following symlinks).
    pub fn of(path: &Path) -> io::Result<Self> {
        let m = std::fs::symlink_metadata(path)?;
        if !m.is_file() {
            return Err(io::Error::other("not a regular file"));
        }
        Ok(Self::of_metadata(&m))
    }

    /// The stamp of an open file's metadata.
    pub fn of_metadata(m: &std::fs::Metadata) -> Self {
        Self {
            size: m.len(),
            mtime_ns: i128::from(m.mtime()) * 1_000_000_000 + i128::from(m.mtime_nsec()),
            ino: m.ino(),
            ctime_ns: i128::from(m.ctime()) * 1_000_000_000 + i128::from(m.ctime_nsec()),
        }
    }

    /// Same file content as far as the stat says, ignoring ctime (a hard
    /// link added or removed changes ctime, not content).
    pub fn same_content(&self, other: &Self) -> bool {
        self.size == other.size && self.mtime_ns == other.mtime_ns && self.ino == other.ino
    }
}

/// `index.json`: absolute path → (stamp, hash) of files verified by hashing.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Index {
    /// Entries.
    pub files: BTreeMap<PathBuf, (Stamp, Sha256)>,
}

impl Index {
    /// The hash of `path` when its stat is unchanged since it was hashed.
    pub fn known(&self, path: &Path) -> Option<Sha256> {
        match (self.files.get(path), Stamp::of(path)) {
            (Some((stamp, h)), Ok(now)) if stamp.same_content(&now) => Some(*h),
            _ => None,
        }
    }

    /// The hash of `path` when `now` (its stamp, read from an open
    /// handle) is unchanged since it was hashed.
    pub fn known_stamp(&self, path: &Path, now: &Stamp) -> Option<Sha256> {
        match self.files.get(path) {
            Some((stamp, h)) if stamp.same_content(now) => Some(*h),
            _ => None,
        }
    }

    /// Whether `path` is known to hold `sha` (stat unchanged since hashed).
    pub fn vouches(&self, path: &Path, sha: &Sha256) -> bool {
        match (self.files.get(path), Stamp::of(path)) {
            (Some((stamp, h)), Ok(now)) => h == sha && stamp.same_content(&now),
            _ => false,
        }
    }
}

/// Paths of the state files.
#[derive(Debug, Clone)]
pub struct Paths {
    /// `state_dir`.
    pub root: PathBuf,
}

impl Paths {
    /// `state.json`.
    pub fn state(&self) -> PathBuf {
        self.root.join("state.json")
    }
    /// `accepted.json`.
    pub fn accepted(&self) -> PathBuf {
        self.root.join("accepted.json")
    }
    /// `index.json`.
    pub fn index(&self) -> PathBuf {
        self.root.join("index.json")
    }
    /// The content store.
    pub fn cas(&self) -> PathBuf {
        self.root.join("cas").join("sha256")
    }
    /// Partial downloads.
    pub fn partial(&self) -> PathBuf {
        self.root.join("cas").join("partial")
    }
    /// The report queue.
    pub fn queue(&self) -> PathBuf {
        self.root.join("queue")
    }
    /// A content file.
    pub fn blob(&self, sha: &Sha256) -> PathBuf {
        self.cas().join(sha.to_hex())
    }
}

/// `accepted.json`. A bundle is canonical JSON (UTF-8) and a signature is
/// ASCII armor, so both are kept as strings byte for byte.
#[derive(Debug, Serialize, Deserialize)]
struct Accepted {
    body: String,
    signature: String,
}

/// A state file that does not decode.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// I/O.
    #[error("cannot access `{0}`")]
    Io(String, #[source] io::Error),
    /// Corrupt.
    #[error("`{0}` is corrupt: {1}")]
    Corrupt(String, String),
}

fn read_json<T: for<'de> Deserialize<'de> + Default>(path: &Path) -> Result<T, StateError> {
    match std::fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map_err(|e| StateError::Corrupt(path.display().to_string(), e.to_string())),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(T::default()),
        Err(e) => Err(StateError::Io(path.display().to_string(), e)),
    }
}

fn write_json<T: Serialize>(path: &Path, v: &T) -> Result<(), StateError> {
    let bytes = serde_json::to_vec_pretty(v)
        .map_err(|e| StateError::Corrupt(path.display().to_string(), e.to_string()))?;
    fsx::write_atomic(path, &bytes).map_err(|e| StateError::Io(path.display().to_string(), e))
}

impl Paths {
    /// Creates the directories.
    pub fn create(&self) -> Result<(), StateError> {
        for d in [self.root.clone(), self.cas(), self.partial(), self.queue()] {
            fsx::create_dirs(&d).map_err(|e| StateError::Io(d.display().to_string(), e))?;
        }
        Ok(())
    }

    /// Reads `state.json` (default when absent).
    pub fn load_state(&self) -> Result<State, StateError> {
        read_json(&self.state())
    }

    /// Writes `state.json` atomically, only when it changed.
    pub fn save_state(&self, old: &State, new: &State) -> Result<(), StateError> {
        if old == new {
            return Ok(());
        }
        write_json(&self.state(), new)
    }

    /// Stores the accepted bundle and its signature together.
    pub fn save_accepted(&self, body: &[u8], signature: &[u8]) -> Result<(), StateError> {
        let pair = Accepted {
            body: String::from_utf8_lossy(body).into_owned(),
            signature: String::from_utf8_lossy(signature).into_owned(),
        };
        write_json(&self.accepted(), &pair)
    }

    /// The accepted bundle's bytes and signature (not verified here).
    pub fn load_accepted(&self) -> Option<(Vec<u8>, Vec<u8>)> {
        let bytes = std::fs::read(self.accepted()).ok()?;
        let pair: Accepted = serde_json::from_slice(&bytes).ok()?;
        Some((pair.body.into_bytes(), pair.signature.into_bytes()))
    }

    /// Reads `index.json`; a corrupt index is dropped (it is only a cache:
    /// everything gets re-hashed once).
    pub fn load_index(&self) -> Index {
        read_json(&self.index()).unwrap_or_default()
    }

    /// Writes `index.json` when it changed.
    pub fn save_index(&self, old: &Index, new: &Index) -> Result<(), StateError> {
        if old == new {
            return Ok(());
        }
        write_json(&self.index(), new)
    }
}
