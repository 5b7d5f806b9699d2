//! Backups of a controller: one tar file holding
//! - `touchline-backup.json`: the format, when, and what is inside;
//! - `status.redb`: a consistent snapshot of the store (every table copied
//!   inside one read transaction, while the controller runs);
//! - `content/sha256/<xx>/<hash>`: the content store (files are immutable
//!   and named by hash: a copy while the controller runs is consistent);
//! - `key`, `key.pub`: the signing key (the backup is a secret: 0600);
//! - `controller.toml`: the config, when the controller has one.
//!
//! [`restore`] checks every entry before anything lands: only those names,
//! regular files only, each content file's hash equal to its name; it
//! extracts into a staging directory and moves into place at the end.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use jiff::Timestamp;
use serde::{Deserialize, Serialize};
use touchline_schemas::{Sha256, SigningKey};

use crate::store::{Store, StoreError};

/// The manifest's format line.
pub const FORMAT: &str = "touchline-backup 1";
const MANIFEST: &str = "touchline-backup.json";
const STORE: &str = "status.redb";
const KEY: &str = "key";
const KEY_PUB: &str = "key.pub";
const CONFIG: &str = "controller.toml";
const CONTENT: &str = "content/sha256/";
/// Largest manifest, key or config entry read.
const MAX_SMALL: u64 = 1024 * 1024;

/// What a backup holds.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// [`FORMAT`].
    pub format: String,
    /// When it was taken.
    pub created_at: Timestamp,
    /// The controller's version.
    pub version: String,
    /// Rows in the store snapshot.
    pub store_rows: u64,
    /// Content files.
    pub content_files: u64,
    /// Their bytes.
    pub content_bytes: u64,
    /// Whether a config is inside.
    pub has_config: bool,
}

/// Why a backup or a restore failed.
#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    /// The store.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// I/O on a named file.
    #[error("{what} `{path}`: {source}")]
    Io {
        /// What was done.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not a backup, or a damaged one.
    #[error("`{file}` is not a usable Touchline backup: {why}")]
    Bad {
        /// The backup.
        file: PathBuf,
        /// Why.
        why: String,
    },
    /// A restore into this data directory was cut short.
    #[error(
        "a restore into `{}` did not finish (from `{}`): its store, key and config may not match; run `touchline restore {} --data {} --key … --config … --force` again",
        data.display(), from.display(), from.display(), data.display()
    )]
    Unfinished {
        /// The data directory.
        data: PathBuf,
        /// The backup it was restoring.
        from: PathBuf,
    },
    /// Refused (something would be overwritten).
    #[error("{0}")]
    Refused(String),
}

fn io(what: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> BackupError + use<> {
    let path = path.to_path_buf();
    move |source| BackupError::Io { what, path, source }
}

/// What a backup reads from the controller.
#[derive(Clone, Copy)]
pub struct Sources<'a> {
    /// The store.
    pub store: &'a dyn Store,
    /// The data directory (content under `content/sha256/`; the snapshot
    /// is staged here).
    pub data: &'a Path,
    /// The signing key.
    pub key: &'a SigningKey,
    /// The config file, if any.
    pub config: Option<&'a Path>,
}

impl std::fmt::Debug for Sources<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sources")
            .field("data", &self.data)
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

/// Writes a backup to `out`; returns its manifest. Call from a blocking
/// thread.
pub fn write(src: &Sources<'_>, out: impl Write) -> Result<Manifest, BackupError> {
    let staged = tempfile::Builder::new()
        .prefix(".backup-")
        .suffix(".redb")
        .tempfile_in(src.data)
        .map_err(io("create a snapshot in", src.data))?;
    let snapshot = staged.path().to_path_buf();
    // redb creates its own file: the temp name is only reserved.
    std::fs::remove_file(&snapshot).map_err(io("prepare", &snapshot))?;
    let result = write_with(src, &snapshot, out);
    let _ = std::fs::remove_file(&snapshot);
    result
}

fn write_with(
    src: &Sources<'_>,
    snapshot: &Path,
    out: impl Write,
) -> Result<Manifest, BackupError> {
    let store_rows = src.store.snapshot_to(snapshot)?;
    let content_root = src.data.join(CONTENT);
    let mut content = Vec::new();
    if content_root.is_dir() {
        for shard in std::fs::read_dir(&content_root).map_err(io("read", &content_root))? {
            let shard = shard.map_err(io("read", &content_root))?;
            if !shard.file_type().is_ok_and(|t| t.is_dir()) {
                continue;
            }
            for f in std::fs::read_dir(shard.path()).map_err(io("read", &shard.path()))? {
                let f = f.map_err(io("read", &shard.path()))?;
                let name = f.file_name().to_string_lossy().into_owned();
                if f.file_type().is_ok_and(|t| t.is_file()) && Sha256::new(&name).is_ok() {
                    let len = f.metadata().map_err(io("stat", &f.path()))?.len();
                    content.push((format!("{CONTENT}{}/{name}", &name[..2]), f.path(), len));
                }
            }
        }
    }
    content.sort();
    let config = match src.config {
        Some(p) => Some(std::fs::read(p).map_err(io("read", p))?),
        None => None,
    };
    let manifest = Manifest {
        format: FORMAT.into(),
        created_at: Timestamp::now(),
        version: env!("CARGO_PKG_VERSION").into(),
        store_rows,
        content_files: content.len() as u64,
        content_bytes: content.iter().map(|c| c.2).sum(),
        has_config: config.is_some(),
    };
    let mut tar = tar::Builder::new(out);
    let out_err = |e: std::io::Error| BackupError::Io {
        what: "write the backup to",
        path: PathBuf::from("the output"),
        source: e,
    };
    let json = serde_json::to_vec_pretty(&manifest).unwrap_or_default();
    append_bytes(&mut tar, MANIFEST, &json, 0o644).map_err(out_err)?;
    let secret = src
        .key
        .to_openssh()
        .map_err(|e| BackupError::Refused(format!("the signing key cannot be written: {e}")))?;
    append_bytes(&mut tar, KEY, secret.as_bytes(), 0o600).map_err(out_err)?;
    let public = format!("{}\n", src.key.public_key_openssh());
    append_bytes(&mut tar, KEY_PUB, public.as_bytes(), 0o644).map_err(out_err)?;
    if let Some(c) = &config {
        append_bytes(&mut tar, CONFIG, c, 0o600).map_err(out_err)?;
    }
    let store_len = std::fs::metadata(snapshot)
        .map_err(io("stat", snapshot))?
        .len();
    let f = std::fs::File::open(snapshot).map_err(io("read", snapshot))?;
    append_reader(&mut tar, STORE, f, store_len, 0o600).map_err(out_err)?;
    for (name, path, len) in &content {
        let f = std::fs::File::open(path).map_err(io("read", path))?;
        append_reader(&mut tar, name, f, *len, 0o644).map_err(out_err)?;
    }
    tar.into_inner()
        .map_err(out_err)?
        .flush()
        .map_err(out_err)?;
    Ok(manifest)
}

fn append_bytes<W: Write>(
    tar: &mut tar::Builder<W>,
    name: &str,
    bytes: &[u8],
    mode: u32,
) -> std::io::Result<()> {
    append_reader(tar, name, bytes, bytes.len() as u64, mode)
}

/// Appends `len` bytes of `r` as a plain regular file (never a GNU sparse
/// entry, which is what `append_file` makes of redb's file with holes).
fn append_reader<W: Write>(
    tar: &mut tar::Builder<W>,
    name: &str,
    r: impl Read,
    len: u64,
    mode: u32,
) -> std::io::Result<()> {
    let mut h = tar::Header::new_gnu();
    h.set_size(len);
    h.set_mode(mode);
    h.set_mtime(u64::try_from(Timestamp::now().as_second()).unwrap_or(0));
    h.set_entry_type(tar::EntryType::Regular);
    tar.append_data(&mut h, name, r.take(len))
}

/// Where a restore puts things.
#[derive(Debug)]
pub struct Targets {
    /// The data directory.
    pub data: PathBuf,
    /// Where the signing key goes (`.pub` beside it).
    pub key: PathBuf,
    /// Where the config goes.
    pub config: PathBuf,
    /// Replace what is there.
    pub force: bool,
}

/// Restores `file` into `to`; returns the backup's manifest. The
/// controller must not run on `to.data`.
pub fn restore(file: &Path, to: &Targets) -> Result<Manifest, BackupError> {
    let store_path = to.data.join(STORE);
    if !to.force {
        for p in [&store_path, &to.key, &to.config] {
            if p.symlink_metadata().is_ok() {
                return Err(BackupError::Refused(format!(
                    "`{}` exists: restore into an empty place, or pass --force to replace it (stop the controller first)",
                    p.display()
                )));
            }
        }
    }
    std::fs::create_dir_all(&to.data).map_err(io("create", &to.data))?;
    let staging = tempfile::Builder::new()
        .prefix(".restore-")
        .tempdir_in(&to.data)
        .map_err(io("create a staging directory in", &to.data))?;
    let manifest = extract(file, Some(staging.path()))?;
    // Everything checked. The store, the key and the config cannot be
    // replaced in one step: until the last one is in place, a marker says
    // the restore is unfinished, and the controller refuses to start on a
    // mix of old and new (running the restore again finishes it).
    let marker = incomplete_marker(&to.data);
    crate::keys::write_atomic(&marker, file.display().to_string().as_bytes(), 0o600)
        .map_err(io("write", &marker))?;
    let content_dst = to.data.join(CONTENT);
    let content_src = staging.path().join(CONTENT);
    if content_src.is_dir() {
        for shard in std::fs::read_dir(&content_src).map_err(io("read", &content_src))? {
            let shard = shard.map_err(io("read", &content_src))?;
            let dst_dir = content_dst.join(shard.file_name());
            std::fs::create_dir_all(&dst_dir).map_err(io("create", &dst_dir))?;
            for f in std::fs::read_dir(shard.path()).map_err(io("read", &shard.path()))? {
                let f = f.map_err(io("read", &shard.path()))?;
                let dst = dst_dir.join(f.file_name());
                std::fs::rename(f.path(), &dst).map_err(io("move into", &dst))?;
            }
        }
    }
    for (name, dst, mode) in [
        (KEY, to.key.clone(), 0o600),
        (KEY_PUB, crate::keys::pub_path(&to.key), 0o644),
        (CONFIG, to.config.clone(), 0o600),
    ] {
        let src = staging.path().join(name);
        if src.is_file() {
            let bytes = std::fs::read(&src).map_err(io("read", &src))?;
            if let Some(parent) = dst.parent().filter(|p| !p.as_os_str().is_empty()) {
                std::fs::create_dir_all(parent).map_err(io("create", parent))?;
            }
            crate::keys::write_atomic(&dst, &bytes, mode).map_err(io("write", &dst))?;
        }
    }
    std::fs::rename(staging.path().join(STORE), &store_path)
        .map_err(io("move into", &store_path))?;
    std::fs::File::open(&to.data)
        .and_then(|d| d.sync_all())
        .map_err(io("sync", &to.data))?;
    std::fs::remove_file(&marker).map_err(io("remove", &marker))?;
    std::fs::File::open(&to.data)
        .and_then(|d| d.sync_all())
        .map_err(io("sync", &to.data))?;
    Ok(manifest)
}

/// `<data>/restore-incomplete`: present while a restore moves files into
/// place (it names the backup).
pub fn incomplete_marker(data: &Path) -> PathBuf {
    data.join("restore-incomplete")
}

/// Refuses a data directory whose restore did not finish.
pub fn check_no_unfinished_restore(data: &Path) -> Result<(), BackupError> {
    match std::fs::read_to_string(incomplete_marker(data)) {
        Ok(from) => Err(BackupError::Unfinished {
            data: data.to_path_buf(),
            from: from.trim().into(),
        }),
        Err(_) => Ok(()),
    }
}

/// Reads a backup through and checks every entry (as [`restore`] does,
/// writing nothing): its manifest.
pub fn verify(file: &Path) -> Result<Manifest, BackupError> {
    extract(file, None)
}

/// A file being extracted, or nothing when only verifying.
enum Out {
    File(PathBuf, std::fs::File),
    Sink,
}

impl Out {
    fn create(dir: Option<&Path>, rel: &str) -> Result<Self, BackupError> {
        let Some(dir) = dir else {
            return Ok(Self::Sink);
        };
        let p = dir.join(rel);
        if let Some(parent) = p.parent() {
            std::fs::create_dir_all(parent).map_err(io("create", parent))?;
        }
        let f = std::fs::File::create(&p).map_err(io("create", &p))?;
        Ok(Self::File(p, f))
    }

    fn write(&mut self, b: &[u8]) -> Result<(), BackupError> {
        match self {
            Self::File(p, f) => f.write_all(b).map_err(io("write", p)),
            Self::Sink => Ok(()),
        }
    }

    fn finish(self) -> Result<(), BackupError> {
        match self {
            Self::File(p, f) => f.sync_all().map_err(io("sync", &p)),
            Self::Sink => Ok(()),
        }
    }
}

/// Copies an entry into `out`, hashing it.
fn copy_hashed(
    entry: &mut impl Read,
    out: &mut Out,
    name: &str,
    bad: &dyn Fn(String) -> BackupError,
) -> Result<Sha256, BackupError> {
    let mut hasher = <sha2::Sha256 as sha2::Digest>::new();
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        let n = entry
            .read(&mut buf)
            .map_err(|e| bad(format!("`{name}` does not read ({e})")))?;
        if n == 0 {
            break;
        }
        sha2::Digest::update(&mut hasher, &buf[..n]);
        out.write(&buf[..n])?;
    }
    Ok(Sha256::from_bytes(sha2::Digest::finalize(hasher).into()))
}

/// Reads and checks every entry, extracting into `dir` when given.
fn extract(file: &Path, dir: Option<&Path>) -> Result<Manifest, BackupError> {
    let bad = |why: String| BackupError::Bad {
        file: file.to_path_buf(),
        why,
    };
    let f = std::fs::File::open(file).map_err(io("open", file))?;
    let mut archive = tar::Archive::new(f);
    let mut manifest: Option<Manifest> = None;
    let mut files = 0u64;
    let mut has_store = false;
    let mut has_key = false;
    for entry in archive
        .entries()
        .map_err(|e| bad(format!("not a tar file ({e})")))?
    {
        let mut entry = entry.map_err(|e| bad(format!("a damaged entry ({e})")))?;
        let name = entry
            .path()
            .map_err(|e| bad(format!("an entry name does not read ({e})")))?
            .to_string_lossy()
            .into_owned();
        if entry.header().entry_type() != tar::EntryType::Regular {
            return Err(bad(format!("`{name}` is not a regular file")));
        }
        if manifest.is_none() && name != MANIFEST {
            return Err(bad(format!(
                "it starts with `{name}`, not {MANIFEST} (not made by `touchline backup`)"
            )));
        }
        let small = |entry: &mut tar::Entry<'_, std::fs::File>| -> Result<Vec<u8>, BackupError> {
            let mut v = Vec::new();
            entry
                .take(MAX_SMALL + 1)
                .read_to_end(&mut v)
                .map_err(|e| bad(format!("`{name}` does not read ({e})")))?;
            if v.len() as u64 > MAX_SMALL {
                return Err(bad(format!("`{name}` is over {MAX_SMALL} bytes")));
            }
            Ok(v)
        };
        match name.as_str() {
            MANIFEST => {
                let v = small(&mut entry)?;
                let m: Manifest = serde_json::from_slice(&v)
                    .map_err(|e| bad(format!("{MANIFEST} does not read ({e})")))?;
                if m.format != FORMAT {
                    return Err(bad(format!(
                        "format `{}`; this controller reads `{FORMAT}`",
                        m.format
                    )));
                }
                manifest = Some(m);
            }
            KEY | KEY_PUB | CONFIG => {
                let v = small(&mut entry)?;
                if name == KEY {
                    SigningKey::from_openssh(&v)
                        .map_err(|e| bad(format!("the signing key does not load ({e})")))?;
                    has_key = true;
                }
                if let Some(dir) = dir {
                    let p = dir.join(&name);
                    crate::keys::write_atomic(&p, &v, 0o600).map_err(io("write", &p))?;
                }
            }
            STORE => {
                let mut out = Out::create(dir, STORE)?;
                copy_hashed(&mut entry, &mut out, STORE, &bad)?;
                out.finish()?;
                has_store = true;
            }
            other => {
                let Some(hex) = content_name(other) else {
                    return Err(bad(format!("unexpected entry `{other}`")));
                };
                let want = Sha256::new(hex).map_err(|e| bad(e.to_string()))?;
                let mut out = Out::create(dir, other)?;
                let got = copy_hashed(&mut entry, &mut out, other, &bad)?;
                out.finish()?;
                if got != want {
                    return Err(bad(format!(
                        "content `{hex}` does not hash to its name (the backup is damaged)"
                    )));
                }
                files += 1;
            }
        }
    }
    let manifest = manifest.ok_or_else(|| bad("it is empty".into()))?;
    if !has_store || !has_key {
        return Err(bad(format!(
            "it holds no {}",
            if has_store { "signing key" } else { "store" }
        )));
    }
    if files != manifest.content_files {
        return Err(bad(format!(
            "{files} content files, its manifest says {} (cut short?)",
            manifest.content_files
        )));
    }
    Ok(manifest)
}

/// The hash of `content/sha256/<xx>/<hash>`, checked.
fn content_name(name: &str) -> Option<&str> {
    let rest = name.strip_prefix(CONTENT)?;
    let (shard, hex) = rest.split_once('/')?;
    (hex.len() == 64
        && shard.len() == 2
        && hex.starts_with(shard)
        && hex
            .bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()))
    .then_some(hex)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_backup_is_plain_regular_entries_that_read_back() {
        // redb's file has holes: `append_file` made a GNU sparse entry of
        // it, which the restore (rightly) refused.
        let tmp = tempfile::tempdir().unwrap();
        let store = crate::redb_store::RedbStore::open(tmp.path()).unwrap();
        store.set_meta("k", "v").unwrap();
        let key = SigningKey::generate();
        let src = Sources {
            store: &store,
            data: tmp.path(),
            key: &key,
            config: None,
        };
        let file = tmp.path().join("b.tar");
        let m = write(&src, std::fs::File::create(&file).unwrap()).unwrap();
        assert!(m.store_rows >= 1);
        let mut a = tar::Archive::new(std::fs::File::open(&file).unwrap());
        for e in a.entries().unwrap() {
            let e = e.unwrap();
            assert_eq!(e.header().entry_type(), tar::EntryType::Regular);
        }
        assert_eq!(verify(&file).unwrap().store_rows, m.store_rows);
    }

    #[test]
    fn only_content_names_that_are_hashes_in_their_shard_are_accepted() {
        let h = "ab".to_owned() + &"0".repeat(62);
        assert_eq!(
            content_name(&format!("content/sha256/ab/{h}")),
            Some(h.as_str())
        );
        for bad in [
            format!("content/sha256/cd/{h}"),
            format!("content/sha256/ab/../{h}"),
            format!("content/sha256/ab/{}", h.to_uppercase()),
            "content/sha256/ab/short".to_owned(),
            format!("/content/sha256/ab/{h}"),
        ] {
            assert_eq!(content_name(&bad), None, "{bad}");
        }
    }
}
