//! Why a pass did not converge: one variant per failed operation, carrying
//! the path, hash or version it failed on. The message is what `once`
//! prints, what `status` shows as the last error and what the report
//! carries: lowercase, it names the thing and says what happened.

use std::io;
use std::path::PathBuf;

use touchline_schemas::{BundleError, ReleaseVersion, Sha256};

use crate::apply::ApplyError;
use crate::condition::Item;
use crate::fetch::{FetchError, error_text};
use crate::fsx::human_bytes;
use crate::plan::Blocked;
use crate::pull::PullError;
use crate::release::{Rollback, SwitchError};
use crate::state::StateError;

/// A pass that did not converge.
#[derive(Debug, thiserror::Error)]
pub enum PassError {
    /// `run`/`once` without a controller.
    #[error("no controller_url configured")]
    NoController,
    /// The controller could not be asked.
    #[error(transparent)]
    Pull(#[from] PullError),
    /// The bundle received was refused.
    #[error("bundle rejected: {}", error_text(.0))]
    Rejected(#[source] BundleError),
    /// A bundle directory holds no bundle.
    #[error("`{}` holds neither bundle.json nor {site}.json", dir.display())]
    NoDirBundle {
        /// The directory.
        dir: PathBuf,
        /// The site.
        site: String,
    },
    /// A file of a bundle directory cannot be read.
    #[error("cannot read `{}`: {source}", path.display())]
    ReadDirBundle {
        /// The file.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// A file of a bundle directory is over its cap.
    #[error("`{}` is {len} bytes, over the {cap}-byte limit", path.display())]
    DirBundleTooLarge {
        /// The file.
        path: PathBuf,
        /// Its size.
        len: u64,
        /// The cap.
        cap: usize,
    },
    /// Nothing was ever accepted.
    #[error("no bundle accepted yet")]
    NoBundle,
    /// Reading or hashing a file of the box failed.
    #[error("{action} `{}`: {source}", path.display())]
    Io {
        /// `reading`, `hashing`…
        action: &'static str,
        /// The file.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// A filesystem lacks space for what the pass must write.
    #[error(
        "not enough space: need {}, have {} ({what}, on the filesystem of {})",
        human_bytes(*need),
        human_bytes(*have),
        probe.display()
    )]
    NoSpace {
        /// Bytes needed, the reserve included.
        need: u64,
        /// Bytes available.
        have: u64,
        /// What needs them.
        what: &'static str,
        /// A path on that filesystem.
        probe: PathBuf,
    },
    /// A file is larger than the box downloads.
    #[error("file {} is {size} bytes, over max_download_bytes ({max})", sha256.to_hex())]
    TooLarge {
        /// The blob.
        sha256: Sha256,
        /// Its size.
        size: u64,
        /// The cap.
        max: u64,
    },
    /// The disk filled up during a download.
    #[error(
        "not enough space: download of {} stopped: {source}; the partial file was removed",
        sha256.to_hex()
    )]
    DownloadDiskFull {
        /// The blob.
        sha256: Sha256,
        /// What the store said.
        source: FetchError,
    },
    /// Every source of a blob failed.
    #[error("download of {} failed: {source}", sha256.to_hex())]
    Download {
        /// The blob.
        sha256: Sha256,
        /// What each source said.
        source: FetchError,
    },
    /// The write-ahead record of an apply could not be saved.
    #[error("cannot record the apply in state.json: {0}")]
    Record(#[source] StateError),
    /// The disk filled up while placing files.
    #[error("not enough space: {0}")]
    ApplyDiskFull(#[source] ApplyError),
    /// Placing files failed.
    #[error(transparent)]
    Apply(ApplyError),
    /// Listed paths are held by the club's files.
    #[error("{count} listed file(s) are held by files the agent did not place")]
    Conflicts {
        /// How many.
        count: usize,
    },
    /// The release step failed.
    #[error(transparent)]
    Release(#[from] ReleaseError),
}

impl From<Blocked> for PassError {
    fn from(b: Blocked) -> Self {
        match b {
            Blocked::NoSpace {
                need,
                have,
                what,
                probe,
            } => Self::NoSpace {
                need,
                have,
                what,
                probe,
            },
            Blocked::TooLarge { sha256, size, max } => Self::TooLarge { sha256, size, max },
        }
    }
}

impl PassError {
    /// The condition this failure sets, when it sets one.
    pub fn item(&self) -> Option<Item> {
        match self {
            Self::NoSpace { .. } | Self::DownloadDiskFull { .. } | Self::ApplyDiskFull(_) => {
                Some(Item::Disk)
            }
            Self::TooLarge { .. } | Self::Download { .. } => Some(Item::Fetch),
            Self::Record(_) | Self::Apply(_) | Self::Io { .. } => Some(Item::Apply),
            Self::Rejected(_) => Some(Item::Bundle),
            Self::Release(e) => e.item(),
            _ => None,
        }
    }
}

/// Why the release step failed.
#[derive(Debug, thiserror::Error)]
pub enum ReleaseError {
    /// Rolled back (or held back by hand) for this serial.
    #[error("{message}")]
    HeldBack {
        /// Why, and how to retry.
        message: String,
    },
    /// The package cannot be staged (size, space).
    #[error("{message}")]
    Refused {
        /// Why.
        message: String,
    },
    /// The maintenance window cannot be evaluated.
    #[error("release {version}: cannot evaluate the maintenance window: {error}")]
    Window {
        /// The release.
        version: ReleaseVersion,
        /// Why.
        error: String,
    },
    /// The update lock cannot be checked.
    #[error("release {version}: cannot check the update lock `{}`: {error}", path.display())]
    Lock {
        /// The release.
        version: ReleaseVersion,
        /// The lock file.
        path: PathBuf,
        /// Why.
        error: String,
    },
    /// A plain `current` directory cannot be moved under `releases/`.
    #[error("release {version}: cannot adopt the existing `current`: {source}")]
    Adopt {
        /// The release.
        version: ReleaseVersion,
        /// Why.
        source: io::Error,
    },
    /// The new release failed its health check; the old one runs again.
    #[error("{}", crate::release::rollback_message(.0))]
    RolledBack(Rollback),
    /// `release.json` cannot be written.
    #[error("cannot write `{}`: {source}", path.display())]
    SaveState {
        /// The file.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// The package download failed.
    #[error("release {version}: download of the package failed: {source}")]
    Download {
        /// The release.
        version: ReleaseVersion,
        /// What the sources said.
        source: FetchError,
    },
    /// The package was refused while unpacking.
    #[error("release {version}: package refused: {source}")]
    Unpack {
        /// The release.
        version: ReleaseVersion,
        /// Why.
        source: UnpackFailure,
    },
    /// The switch (or its recovery), or reading its journal, failed.
    #[error(transparent)]
    Switch(#[from] SwitchError),
}

/// Why staging a package failed.
#[derive(Debug, thiserror::Error)]
pub enum UnpackFailure {
    /// The archive breaks a rule or cannot be read.
    #[error(transparent)]
    Unpack(#[from] crate::unpack::UnpackError),
    /// The unpacked tree cannot be renamed into place.
    #[error("cannot rename into `{}`: {source}", dest.display())]
    Rename {
        /// `releases/<version>`.
        dest: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// The releases directory cannot be synced.
    #[error("{0}")]
    Sync(io::Error),
    /// The unpacking task stopped.
    #[error("unpacking stopped: {0}")]
    Stopped(tokio::task::JoinError),
}

impl ReleaseError {
    /// The condition it sets.
    pub fn item(&self) -> Option<Item> {
        match self {
            Self::SaveState { .. }
            | Self::Switch(
                SwitchError::Read { .. }
                | SwitchError::Invalid { .. }
                | SwitchError::Prepare { .. },
            ) => None,
            _ => Some(Item::Release),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_name_what_failed() {
        let e = PassError::NoSpace {
            need: 2 * 1024 * 1024,
            have: 1024,
            what: "downloads",
            probe: PathBuf::from("/var/lib/touchline"),
        };
        assert_eq!(
            e.to_string(),
            format!(
                "not enough space: need {}, have {} (downloads, on the filesystem of /var/lib/touchline)",
                human_bytes(2 * 1024 * 1024),
                human_bytes(1024)
            )
        );
        assert_eq!(e.item(), Some(Item::Disk));
        let e = PassError::TooLarge {
            sha256: Sha256::digest(b"x"),
            size: 10,
            max: 5,
        };
        assert!(
            e.to_string()
                .ends_with(" is 10 bytes, over max_download_bytes (5)")
        );
        assert_eq!(e.item(), Some(Item::Fetch));
        assert_eq!(
            PassError::Conflicts { count: 2 }.to_string(),
            "2 listed file(s) are held by files the agent did not place"
        );
    }
}
