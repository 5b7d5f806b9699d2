//! Where the controller follows the manifests from, behind a trait:
//! [`ManifestSource`] gives the tip, the history between two revisions,
//! commit signatures and the manifest files of a revision. The git mirror
//! (`crate::git::Follower`) is the production one; [`DirSource`] follows a
//! plain directory, so that a `Fleet` and its router can be built in
//! memory for tests (and a directory can be served without git).

use std::path::PathBuf;
use std::sync::Mutex;

use touchline_schemas::{Sha256, TrustedKeys};

use git2::Oid;

use crate::git::{Follower, GitError, SignatureError};
use crate::source::{self, SourceError, SourceSet};

/// A revision of the manifests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Revision {
    /// Its id (a commit id, or a digest of a directory's files).
    pub id: String,
    /// The serial its bundles carry (first-parent count for git).
    pub serial: u64,
    /// First line of its message.
    pub summary: String,
}

/// Why following failed.
#[derive(Debug, thiserror::Error)]
pub enum FollowError {
    /// The git mirror.
    #[error(transparent)]
    Git(#[from] GitError),
    /// The directory.
    #[error(transparent)]
    Dir(#[from] SourceError),
    /// A revision this source does not have.
    #[error("unknown revision {0}")]
    Unknown(String),
}

/// The manifests, revision by revision.
pub trait ManifestSource: Send + std::fmt::Debug {
    /// Brings the source up to date; its tip.
    fn fetch(&self) -> Result<Revision, FollowError>;
    /// Whether `new` descends from `old` (no force-push).
    fn descends(&self, old: &str, new: &str) -> Result<bool, FollowError>;
    /// The revisions after `from` up to `to`, oldest first.
    fn between(&self, from: Option<&str>, to: &str) -> Result<Vec<String>, FollowError>;
    /// Checks the signature of revision `id` against `trusted`.
    fn check_signature(&self, id: &str, trusted: &TrustedKeys) -> Result<(), SignatureError>;
    /// The manifest files of revision `id`.
    fn files(&self, id: &str) -> Result<SourceSet, FollowError>;
}

/// A directory of manifests. Each change of its files is a new revision
/// (id: the digest of the files; serial: one more than the last).
#[derive(Debug)]
pub struct DirSource {
    root: PathBuf,
    seen: Mutex<Vec<(String, SourceSet)>>,
}

impl DirSource {
    /// Follows `root`.
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self {
            root: root.into(),
            seen: Mutex::new(Vec::new()),
        }
    }

    fn digest(set: &SourceSet) -> String {
        let mut all = Vec::new();
        for f in &set.files {
            all.extend_from_slice(f.path.as_bytes());
            all.push(0);
            match &f.content {
                Ok(bytes) => all.extend_from_slice(bytes),
                Err(size) => all.extend_from_slice(&size.to_le_bytes()),
            }
            all.push(0);
        }
        Sha256::digest(&all).to_hex()
    }
}

impl ManifestSource for DirSource {
    fn fetch(&self) -> Result<Revision, FollowError> {
        let set = source::read_dir(&self.root)?;
        let id = Self::digest(&set);
        let mut seen = self
            .seen
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if seen.last().is_none_or(|(last, _)| *last != id) {
            seen.push((id.clone(), set));
        }
        Ok(Revision {
            serial: u64::try_from(seen.len()).unwrap_or(u64::MAX),
            summary: format!("the manifests in {}", self.root.display()),
            id,
        })
    }

    fn descends(&self, _old: &str, _new: &str) -> Result<bool, FollowError> {
        Ok(true)
    }

    fn between(&self, _from: Option<&str>, to: &str) -> Result<Vec<String>, FollowError> {
        Ok(vec![to.to_owned()])
    }

    fn check_signature(&self, id: &str, _trusted: &TrustedKeys) -> Result<(), SignatureError> {
        Err(SignatureError::NotSigned(id.to_owned()))
    }

    fn files(&self, id: &str) -> Result<SourceSet, FollowError> {
        let seen = self
            .seen
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        seen.iter()
            .rev()
            .find(|(i, _)| i == id)
            .map(|(_, set)| set.clone())
            .ok_or_else(|| FollowError::Unknown(id.to_owned()))
    }
}

fn oid(id: &str) -> Result<Oid, FollowError> {
    Oid::from_str(id).map_err(|_| FollowError::Unknown(id.to_owned()))
}

impl ManifestSource for Follower {
    fn fetch(&self) -> Result<Revision, FollowError> {
        let tip = Follower::fetch(self)?;
        let info = self.info(tip)?;
        Ok(Revision {
            id: tip.to_string(),
            serial: info.serial,
            summary: info.summary,
        })
    }

    fn descends(&self, old: &str, new: &str) -> Result<bool, FollowError> {
        Ok(self.fast_forward(oid(old)?, oid(new)?)?)
    }

    fn between(&self, from: Option<&str>, to: &str) -> Result<Vec<String>, FollowError> {
        let from = from.map(oid).transpose()?;
        Ok(self
            .range(from, oid(to)?)?
            .into_iter()
            .map(|o| o.to_string())
            .collect())
    }

    fn check_signature(&self, id: &str, trusted: &TrustedKeys) -> Result<(), SignatureError> {
        let id = Oid::from_str(id).map_err(|_| SignatureError::Unknown(id.to_owned()))?;
        Follower::check_signature(self, id, trusted)
    }

    fn files(&self, id: &str) -> Result<SourceSet, FollowError> {
        match self.source_set(oid(id)?) {
            // A mirror without the commit (a fresh one, after a restore
            // from backup): the next fetch brings it.
            Err(GitError::Read { source, .. }) if source.code() == git2::ErrorCode::NotFound => {
                Err(FollowError::Unknown(id.to_owned()))
            }
            other => Ok(other?),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_directory_is_a_new_revision_each_time_its_files_change() {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::write(tmp.path().join("fleet.yaml"), "name: test\n").unwrap();
        let s = DirSource::new(tmp.path());
        let a = s.fetch().unwrap();
        assert_eq!(a.serial, 1);
        assert_eq!(s.fetch().unwrap(), a, "unchanged: the same revision");
        std::fs::write(tmp.path().join("fleet.yaml"), "name: other\n").unwrap();
        let b = s.fetch().unwrap();
        assert_eq!(b.serial, 2);
        assert_ne!(b.id, a.id);
        assert_eq!(s.files(&a.id).unwrap().files.len(), 1);
        assert!(matches!(s.files("nope"), Err(FollowError::Unknown(_))));
        let keys =
            TrustedKeys::parse(&touchline_schemas::SigningKey::generate().public_key_openssh())
                .unwrap();
        assert!(s.check_signature(&b.id, &keys).is_err());
    }
}
