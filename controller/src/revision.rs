//! The identity of a rendered bundle that the manifests themselves do not
//! hold: serial, source commit, issue and expiry times.
//!
//! For `touchline render <dir>`, in order of precedence:
//! - explicit `--serial`, `--commit`, `--issued-at`;
//! - the issue time from `SOURCE_DATE_EPOCH` when it is set;
//! - when `<dir>` is the root of a git work tree: the first-parent commit
//!   count of HEAD (the serial), HEAD's id, and HEAD's commit time;
//! - otherwise serial 0, no commit, and as issue time the newest
//!   modification time among the manifest files.
//!
//! So rendering the same files twice gives byte-identical bundles.

use std::path::Path;

use jiff::{SignedDuration, Timestamp};

use crate::render::BundleMeta;
use crate::source::SourceSet;

/// What the operator fixed on the command line.
#[derive(Debug, Default, Clone)]
pub struct Overrides {
    /// `--serial`.
    pub serial: Option<u64>,
    /// `--commit`.
    pub commit: Option<String>,
    /// `--issued-at`.
    pub issued_at: Option<Timestamp>,
}

/// What git says about HEAD.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Head {
    /// First-parent commit count.
    pub serial: u64,
    /// Commit id.
    pub commit: String,
    /// Commit time.
    pub time: Timestamp,
}

/// HEAD of the repository whose work tree root is `dir`, if it is one.
pub fn head_of(dir: &Path) -> Result<Option<Head>, git2::Error> {
    let repo = match git2::Repository::open(dir) {
        Ok(r) => r,
        Err(e) if e.code() == git2::ErrorCode::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let head = match repo.head() {
        Ok(h) => h.peel_to_commit()?,
        // A repository with no commit yet.
        Err(e) if e.code() == git2::ErrorCode::UnbornBranch => return Ok(None),
        Err(e) => return Err(e),
    };
    Ok(Some(Head {
        serial: first_parent_count(&repo, head.id())?,
        commit: head.id().to_string(),
        time: Timestamp::from_second(head.time().seconds()).unwrap_or(Timestamp::UNIX_EPOCH),
    }))
}

/// The number of commits on the first-parent chain ending at `id`.
pub fn first_parent_count(repo: &git2::Repository, id: git2::Oid) -> Result<u64, git2::Error> {
    let mut walk = repo.revwalk()?;
    walk.push(id)?;
    walk.simplify_first_parent()?;
    let mut n = 0u64;
    for oid in walk {
        oid?;
        n += 1;
    }
    Ok(n)
}

/// Newest mtime among the files read (whole seconds).
fn newest_mtime(root: &Path, set: &SourceSet) -> Option<Timestamp> {
    set.files
        .iter()
        .filter_map(|f| std::fs::metadata(root.join(&*f.path)).ok()?.modified().ok())
        .max()
        .and_then(|t| Timestamp::try_from(t).ok())
        .and_then(|t| Timestamp::from_second(t.as_second()).ok())
}

/// Why the bundle identity could not be worked out.
#[derive(Debug, thiserror::Error)]
pub enum RevisionError {
    /// git2 failed.
    #[error("failed to read the git history of `{0}`")]
    Git(String, #[source] git2::Error),
    /// `SOURCE_DATE_EPOCH` is not a number.
    #[error("SOURCE_DATE_EPOCH `{0}` is not a number of seconds since 1970")]
    SourceDate(String),
}

/// Works out the bundle identity for rendering `root`.
pub fn meta_for_dir(
    root: &Path,
    set: &SourceSet,
    expiry: std::time::Duration,
    o: &Overrides,
) -> Result<BundleMeta, RevisionError> {
    let head = head_of(root).map_err(|e| RevisionError::Git(root.display().to_string(), e))?;
    let source_date = match std::env::var("SOURCE_DATE_EPOCH") {
        Ok(s) => Some(
            s.trim()
                .parse::<i64>()
                .ok()
                .and_then(|n| Timestamp::from_second(n).ok())
                .ok_or(RevisionError::SourceDate(s))?,
        ),
        Err(_) => None,
    };
    let issued_at = o
        .issued_at
        .or(source_date)
        .or(head.as_ref().map(|h| h.time))
        .or_else(|| newest_mtime(root, set))
        .unwrap_or(Timestamp::UNIX_EPOCH);
    let expiry = SignedDuration::try_from(expiry).unwrap_or(SignedDuration::from_hours(24 * 7));
    Ok(BundleMeta {
        serial: o.serial.or(head.as_ref().map(|h| h.serial)).unwrap_or(0),
        commit: o.commit.clone().or(head.map(|h| h.commit)),
        issued_at,
        expires_at: issued_at.saturating_add(expiry).unwrap_or(issued_at),
    })
}
