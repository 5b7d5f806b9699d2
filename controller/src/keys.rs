//! Signing keys on disk: written 0600 (the secret) and 0644 (`.pub`), read
//! with a clear error when missing, unreadable, encrypted or of the wrong type.

use std::io::Write;
use std::path::{Path, PathBuf};

use touchline_schemas::SigningKey;
use touchline_schemas::sign::KeyError;

/// Key file problems.
#[derive(Debug, thiserror::Error)]
pub enum KeyFileError {
    /// Refusing to overwrite.
    #[error(
        "`{0}` already exists; pass --force to replace it (boxes trusting the old key will refuse new bundles until they trust the new one)"
    )]
    Exists(PathBuf),
    /// I/O.
    #[error("failed to access key file `{path}`")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// Content.
    #[error("failed to load key file `{path}`")]
    Key {
        /// The file.
        path: PathBuf,
        /// Why.
        source: KeyError,
    },
}

/// Generates a key, writes `out` (0600) and `out.pub`; returns the key.
pub fn keygen(out: &Path, comment: &str, force: bool) -> Result<SigningKey, KeyFileError> {
    let pub_path = pub_path(out);
    if !force && (out.exists() || pub_path.exists()) {
        return Err(KeyFileError::Exists(out.to_path_buf()));
    }
    let mut key = SigningKey::generate();
    key.set_comment(comment);
    let secret = key.to_openssh().map_err(|source| KeyFileError::Key {
        path: out.into(),
        source,
    })?;
    write_file(out, secret.as_bytes(), 0o600)?;
    write_file(
        &pub_path,
        format!("{}\n", key.public_key_openssh()).as_bytes(),
        0o644,
    )?;
    Ok(key)
}

/// `<key>.pub`.
pub fn pub_path(key: &Path) -> PathBuf {
    let mut s = key.as_os_str().to_owned();
    s.push(".pub");
    PathBuf::from(s)
}

/// Reads a private key.
pub fn load(path: &Path) -> Result<SigningKey, KeyFileError> {
    let bytes = std::fs::read(path).map_err(|source| KeyFileError::Io {
        path: path.into(),
        source,
    })?;
    SigningKey::from_openssh(&bytes).map_err(|source| KeyFileError::Key {
        path: path.into(),
        source,
    })
}

/// Writes `bytes` to `path` with `mode` through a temporary in the same
/// directory, fsync and rename (then fsyncs the directory), so a crash never
/// leaves half a file and a secret is never readable by others on the way
/// (the temporary is created 0600).
pub(crate) fn write_atomic(path: &Path, bytes: &[u8], mode: u32) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let mut tmp = tempfile::NamedTempFile::new_in(dir)?;
    tmp.write_all(bytes)?;
    tmp.as_file().sync_all()?;
    tmp.as_file()
        .set_permissions(std::fs::Permissions::from_mode(mode))?;
    tmp.persist(path).map_err(|e| e.error)?;
    std::fs::File::open(dir)?.sync_all()
}

fn write_file(path: &Path, bytes: &[u8], mode: u32) -> Result<(), KeyFileError> {
    write_atomic(path, bytes, mode).map_err(|source| KeyFileError::Io {
        path: path.into(),
        source,
    })
}
